#!/usr/bin/env bash
# A real PostgreSQL server with logical replication (wal_level=logical) for
# weir's Postgres change-feed connector tests. Runs Debian's postgresql server
# binaries (/usr/lib/postgresql/<major>/bin) on a throwaway cluster: no
# Docker, and nothing of Debian's own clusters or /var/run/postgresql is used.
# As root (as on CI), initdb, pg_ctl and the server run as the `postgres` OS
# user, which therefore needs to reach D: a dir under /tmp works.
#
#   scripts/pg-dev.sh install
#       Make sure the server binaries exist (apt-get install postgresql when
#       they are missing and we are root). Prints nothing on stdout.
#   scripts/pg-dev.sh bindir
#       Print the bin dir of the PostgreSQL in use (the newest installed).
#   scripts/pg-dev.sh start [--port P] [--dir D] [--set name=value]...
#       Create a cluster in D/data (unless D has one already; superuser
#       `postgres`, trust auth on 127.0.0.1 and the socket, replication
#       connections allowed), start it on 127.0.0.1 (a free port is picked
#       unless --port is given; the socket is in D), wait until it accepts
#       connections, and print on stdout only:
#         PG_URL=postgres://postgres@127.0.0.1:P/postgres
#         PG_PORT=P
#         PG_PID=...   (the postmaster)
#         PG_DIR=...
#       so that `eval "$(scripts/pg-dev.sh start)"` works. Progress goes to
#       stderr; the server's log is $PG_DIR/postgres.log. Starting again on a
#       kept D (with the same --port, or any) keeps its data. --set adds a
#       server setting for this start (e.g. --set wal_sender_timeout=5s).
#   scripts/pg-dev.sh stop --dir D [--keep] [--mode fast|immediate]
#       Stop the server of D (pg_ctl's fast mode by default: a clean shutdown;
#       immediate simulates a crash, and the next start does crash recovery),
#       then remove D (unless --keep).
#   scripts/pg-dev.sh psql --dir D [-- PSQL_ARGS...]
#       Run psql as superuser postgres against the server of D (through its
#       socket, with -X and ON_ERROR_STOP=1), e.g.
#       scripts/pg-dev.sh psql --dir D -- -Atc 'show wal_level'
#
# Environment: WEIR_PG_BINDIR (a PostgreSQL bin dir to use instead of the
# newest /usr/lib/postgresql/*/bin), WEIR_PG_START_TIMEOUT (seconds, default
# 60), WEIR_PG_STOP_TIMEOUT (seconds, default 30).
set -euo pipefail

START_TIMEOUT="${WEIR_PG_START_TIMEOUT:-60}"
STOP_TIMEOUT="${WEIR_PG_STOP_TIMEOUT:-30}"
PG_OS_USER="postgres"   # the OS user the server runs as when we are root
MARKER=".weir-pg-dir"   # marks a state dir this script made; stop only removes those
CONF_NAME="weir-dev.conf"  # in D/data, included by postgresql.conf, rewritten at each start

log() { printf 'pg-dev: %s\n' "$*" >&2; }
die() { printf 'pg-dev: error: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

is_root() { [ "$(id -u)" = 0 ]; }

# ---------------------------------------------------------------------- install

# The bin dir of the newest installed PostgreSQL with a server, or nothing.
find_bindir() {
  if [ -n "${WEIR_PG_BINDIR:-}" ]; then
    echo "$WEIR_PG_BINDIR"
    return 0
  fi
  local d
  for d in $(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V -r); do
    if [ -x "$d/postgres" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
      echo "$d"
      return 0
    fi
  done
}

bindir_ok() {  # dir
  local b
  [ -n "$1" ] || return 1
  for b in postgres initdb pg_ctl psql; do
    [ -x "$1/$b" ] || return 1
  done
}

do_install() {
  if bindir_ok "$(find_bindir)"; then
    return 0
  fi
  [ -z "${WEIR_PG_BINDIR:-}" ] \
    || die "WEIR_PG_BINDIR=$WEIR_PG_BINDIR lacks one of postgres, initdb, pg_ctl, psql"
  if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
    die "the PostgreSQL server binaries are missing (no /usr/lib/postgresql/*/bin/postgres); install them as root: apt-get install postgresql"
  fi
  log "installing postgresql with apt-get..."
  local apt_log
  apt_log="$(mktemp "${TMPDIR:-/tmp}/weir-pg-apt.XXXXXX")"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >"$apt_log" 2>&1; then
    log "apt-get install failed; updating the package lists and trying again"
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; } >"$apt_log" 2>&1; then
      tail -n 30 "$apt_log" >&2 || true
      rm -f "$apt_log"
      die "apt-get install postgresql failed (see the lines above)"
    fi
  fi
  rm -f "$apt_log"
  local bindir
  bindir="$(find_bindir)"
  bindir_ok "$bindir" || die "apt-get installed postgresql but no server binaries are in /usr/lib/postgresql/*/bin"
  log "installed $("$bindir/postgres" --version)"
}

BINDIR=""
need_bindir() {
  do_install
  BINDIR="$(find_bindir)"
}

# Run a command as the server's OS user: `postgres` when we are root (initdb
# and postgres refuse to run as root), else as ourselves. From the state dir,
# so that the cwd is one that user can enter.
as_pg() {  # dir cmd args...
  local dir="$1"; shift
  if is_root; then
    getent passwd "$PG_OS_USER" >/dev/null 2>&1 \
      || die "there is no '$PG_OS_USER' OS user to run the server as (it comes with Debian's postgresql packages)"
    command -v runuser >/dev/null 2>&1 || die "runuser (util-linux) is needed to run PostgreSQL as '$PG_OS_USER'"
    ( cd "$dir" && exec runuser -u "$PG_OS_USER" -- "$@" )
  else
    ( cd "$dir" && exec "$@" )
  fi
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

# The postmaster's pid from D/data/postmaster.pid, or nothing.
postmaster_pid() {  # dir
  local f="$1/data/postmaster.pid"
  [ -f "$f" ] || return 0
  head -n1 "$f" 2>/dev/null | tr -dc '0-9'
}

# The port from D/data/postmaster.pid (line 4), or nothing.
postmaster_port() {  # dir
  local f="$1/data/postmaster.pid"
  [ -f "$f" ] || return 0
  sed -n 4p "$f" 2>/dev/null | tr -dc '0-9'
}

server_running() {  # dir
  [ -f "$1/data/PG_VERSION" ] || return 1
  as_pg "$1" "$BINDIR/pg_ctl" status -D "$1/data" >/dev/null 2>&1
}

# Once the postmaster has exited it is a zombie until init reaps it (pg_ctl
# detached it); wait for that too, so that no postgres process is listed
# after a stop.
await_gone() {  # pid seconds
  local i
  [ -n "$1" ] || return 0
  for (( i = 0; i < $2 * 10; i++ )); do
    [ -d "/proc/$1" ] || return 0
    sleep 0.1
  done
  return 1
}

# Stop the server of D: pg_ctl stop in MODE, then immediate, then SIGKILL.
stop_server() {  # dir mode timeout
  local dir="$1" mode="$2" timeout="$3" pid
  pid="$(postmaster_pid "$dir")"
  if ! as_pg "$dir" "$BINDIR/pg_ctl" stop -D "$dir/data" -m "$mode" -w -t "$timeout" >&2; then
    if [ "$mode" != immediate ] && server_running "$dir"; then
      log "server did not stop ($mode) within ${timeout}s; stopping it in immediate mode"
      as_pg "$dir" "$BINDIR/pg_ctl" stop -D "$dir/data" -m immediate -w -t 10 >&2 || true
    fi
  fi
  if [ -n "$pid" ] && ! await_gone "$pid" 10; then
    log "postmaster pid $pid is still there; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    await_gone "$pid" 10 || die "postmaster pid $pid is still alive after SIGKILL"
  fi
}

# Write the settings of this start into D/data/weir-dev.conf.
write_conf() {  # dir port settings...
  local dir="$1" port="$2"; shift 2
  local f="$dir/data/$CONF_NAME" s
  {
    echo "# Written by weir's scripts/pg-dev.sh at each start; edits are lost."
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$dir'"
    echo "wal_level = logical"
    echo "max_replication_slots = 16"
    echo "max_wal_senders = 16"
    # fsync=off: for throwaway test clusters only. A process crash (stop
    # --mode immediate, SIGKILL) loses nothing with it, as the OS still has
    # the written pages; only a crash of the machine itself could corrupt
    # the cluster.
    echo "fsync = off"
    echo "shared_buffers = 32MB"
    echo "logging_collector = off"
    echo "log_line_prefix = '%m [%p] %q%u@%d '"
    for s in "$@"; do
      echo "${s%%=*} = '${s#*=}'"
    done
  } >"$f.tmp"
  if is_root; then chown "$PG_OS_USER:" "$f.tmp"; fi
  mv "$f.tmp" "$f"
}

init_cluster() {  # dir
  local dir="$1"
  log "creating a cluster in $dir/data ($("$BINDIR/postgres" --version))"
  # --no-sync: faster, and as safe as fsync=off for a throwaway cluster.
  if ! as_pg "$dir" "$BINDIR/initdb" -D "$dir/data" -U postgres --auth=trust \
        -E UTF8 --no-locale --no-sync >"$dir/initdb.log" 2>&1; then
    tail -n 30 "$dir/initdb.log" >&2 || true
    die "initdb failed (log: $dir/initdb.log)"
  fi
  # Our own pg_hba.conf: trust on the socket and 127.0.0.1, replication too.
  cat >"$dir/data/pg_hba.conf" <<'EOF'
# Written by weir's scripts/pg-dev.sh: a throwaway test cluster, trust only.
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 trust
host    all          all   127.0.0.1/32  trust
local   replication  all                 trust
host    replication  all   127.0.0.1/32  trust
EOF
  printf "\n# weir's scripts/pg-dev.sh: port, logical replication, etc.\ninclude_if_exists = '%s'\n" \
    "$CONF_NAME" >>"$dir/data/postgresql.conf"
  if is_root; then chown "$PG_OS_USER:" "$dir/data/pg_hba.conf"; fi
}

# State of the start in progress, for the cleanup trap.
START_DIR=""
START_DIR_CREATED=0
START_LAUNCHED=0
START_OK=0

start_cleanup() {
  local rc=$?
  if [ "$START_OK" != 1 ]; then
    if [ "$START_LAUNCHED" = 1 ] && [ -n "$START_DIR" ] && server_running "$START_DIR"; then
      stop_server "$START_DIR" immediate 10 || true
    fi
    if [ "$START_DIR_CREATED" = 1 ] && [ -n "$START_DIR" ] && [ -f "$START_DIR/$MARKER" ]; then
      rm -rf "$START_DIR"
    fi
    [ "$rc" = 0 ] && rc=1
  fi
  exit "$rc"
}

# Launch once; returns 0 when ready, 3 when the port was taken (retry), dies otherwise.
launch_and_wait() {  # dir port settings...
  local dir="$1" port="$2"; shift 2
  write_conf "$dir" "$port" "$@"
  local logf="$dir/postgres.log"
  if [ ! -f "$logf" ]; then
    touch "$logf"
    if is_root; then chown "$PG_OS_USER:" "$logf"; fi
  fi
  local from
  from="$(wc -l <"$logf")"
  log "starting the server on 127.0.0.1:$port (log: $logf)"
  START_LAUNCHED=1
  # pg_ctl detaches the postmaster (own session, stdin /dev/null, output to
  # the log), so nothing holds our stdout; pg_ctl's own chatter goes to stderr.
  local rc=0
  as_pg "$dir" "$BINDIR/pg_ctl" start -D "$dir/data" -l "$logf" -w -t "$START_TIMEOUT" \
    </dev/null >&2 || rc=$?
  if [ "$rc" = 0 ]; then
    return 0
  fi
  if server_running "$dir"; then
    log "not ready after ${START_TIMEOUT}s; last lines of $logf:"
    tail -n 30 "$logf" >&2 || true
    die "postgres did not become ready within ${START_TIMEOUT}s"
  fi
  START_LAUNCHED=0
  if tail -n "+$(( from + 1 ))" "$logf" | grep -qi "address already in use"; then
    return 3
  fi
  log "the server exited during startup; last lines of $logf:"
  tail -n 30 "$logf" >&2 || true
  die "postgres failed to start"
}

do_start() {
  local port="" dir="" settings=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --port) port="${2:?--port needs a value}"; shift 2 ;;
      --port=*) port="${1#*=}"; shift ;;
      --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
      --dir=*) dir="${1#*=}"; shift ;;
      --set) settings+=("${2:?--set needs name=value}"); shift 2 ;;
      --set=*) settings+=("${1#*=}"); shift ;;
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
  local s
  for s in ${settings[@]+"${settings[@]}"}; do
    [[ "$s" =~ ^[a-z_][a-z0-9_.]*=.*$ ]] || die "--set needs name=value, got '$s'"
    case "$s" in *"'"*|*$'\n'*) die "--set value must not contain quotes or newlines: '$s'" ;; esac
  done
  need_bindir

  trap start_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  if [ -n "$dir" ]; then
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd -P)"
    if [ -z "$(ls -A "$dir")" ]; then
      START_DIR_CREATED=1
    elif [ ! -f "$dir/$MARKER" ]; then
      die "$dir is not empty and was not made by pg-dev.sh start (no $MARKER); use an empty or new dir"
    fi
  else
    dir="$(mktemp -d "${TMPDIR:-/tmp}/weir-pg.XXXXXX")"
    dir="$(cd "$dir" && pwd -P)"
    START_DIR_CREATED=1
  fi
  START_DIR="$dir"
  touch "$dir/$MARKER"
  # The socket is D/.s.PGSQL.<port>: Unix socket paths are at most 107 bytes.
  if [ $(( ${#dir} + 17 )) -gt 107 ]; then
    die "$dir is too long a path for the server's Unix socket in it; use a shorter --dir (e.g. under /tmp)"
  fi
  if is_root; then
    chown "$PG_OS_USER:" "$dir"
    chmod 0700 "$dir"
    as_pg / test -w "$dir" -a -x "$dir" \
      || die "the '$PG_OS_USER' OS user cannot reach $dir (a parent dir is closed to it?); use a dir under /tmp"
  fi
  if server_running "$dir"; then
    START_DIR_CREATED=0  # not ours to clean up
    START_DIR=""
    die "the server of $dir is still running (pid $(postmaster_pid "$dir")); stop it first"
  fi
  if [ -f "$dir/data/PG_VERSION" ]; then
    local have want
    have="$(cat "$dir/data/PG_VERSION")"
    want="$("$BINDIR/pg_config" --version 2>/dev/null | sed -n 's/^PostgreSQL \([0-9][0-9]*\).*/\1/p')"
    if [ -n "$want" ] && [ "$have" != "$want" ]; then
      die "$dir/data is a PostgreSQL $have cluster but $BINDIR is PostgreSQL $want"
    fi
    log "reusing the cluster in $dir/data"
  else
    rm -rf "$dir/data"
    init_cluster "$dir"
  fi

  local attempt rc p
  for attempt in 1 2 3 4 5; do
    p="$port"
    [ -n "$p" ] || p="$(pick_port)"
    rc=0
    launch_and_wait "$dir" "$p" ${settings[@]+"${settings[@]}"} || rc=$?
    if [ "$rc" = 0 ]; then
      port="$p"
      break
    fi
    if [ -n "$port" ] || [ "$attempt" = 5 ]; then
      tail -n 5 "$dir/postgres.log" >&2 || true
      die "port $p on 127.0.0.1 is taken"
    fi
    log "port $p was taken meanwhile; retrying with another port"
  done

  local pid
  pid="$(postmaster_pid "$dir")"
  [ -n "$pid" ] || die "the server started but $dir/data/postmaster.pid names no pid"
  START_OK=1
  trap - EXIT INT TERM
  log "PostgreSQL ready at 127.0.0.1:$port (pid $pid, dir $dir)"
  printf 'PG_URL=postgres://postgres@127.0.0.1:%s/postgres\nPG_PORT=%s\nPG_PID=%s\nPG_DIR=%s\n' \
    "$port" "$port" "$pid" "$dir"
}

# ------------------------------------------------------------------------- stop

do_stop() {
  local dir="" keep=0 mode=fast
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
      --dir=*) dir="${1#*=}"; shift ;;
      --keep) keep=1; shift ;;
      --mode) mode="${2:?--mode needs fast or immediate}"; shift 2 ;;
      --mode=*) mode="${1#*=}"; shift ;;
      -h|--help) usage 0 ;;
      *) die "stop: unknown argument '$1' (see --help)" ;;
    esac
  done
  case "$mode" in fast|immediate) ;; *) die "--mode must be fast or immediate, got '$mode'" ;; esac
  [ -n "$dir" ] || die "stop needs --dir D (the PG_DIR that start printed)"
  if [ ! -d "$dir" ]; then
    log "$dir does not exist; nothing to stop"
    return 0
  fi
  dir="$(cd "$dir" && pwd -P)"
  [ -f "$dir/$MARKER" ] || die "$dir was not made by pg-dev.sh start (no $MARKER); refusing to touch it"
  need_bindir
  if server_running "$dir"; then
    log "stopping server pid $(postmaster_pid "$dir") ($mode)"
    stop_server "$dir" "$mode" "$STOP_TIMEOUT"
    if server_running "$dir"; then die "the server of $dir is still running"; fi
  else
    log "no running server in $dir"
  fi
  if [ "$keep" = 1 ]; then
    log "kept $dir"
  else
    rm -rf "$dir"
    log "removed $dir"
  fi
}

# ------------------------------------------------------------------------- psql

do_psql() {
  local dir=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
      --dir=*) dir="${1#*=}"; shift ;;
      --) shift; break ;;
      -h|--help) usage 0 ;;
      *) die "psql: unknown argument '$1' (psql's own arguments go after --)" ;;
    esac
  done
  [ -n "$dir" ] || die "psql needs --dir D (the PG_DIR that start printed)"
  [ -d "$dir" ] || die "$dir does not exist"
  dir="$(cd "$dir" && pwd -P)"
  need_bindir
  local port
  port="$(postmaster_port "$dir")"
  [ -n "$port" ] || die "no server is running in $dir (no $dir/data/postmaster.pid)"
  # Through the socket in D, as superuser postgres (trust auth: no password).
  exec "$BINDIR/psql" -X -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres "$@"
}

# ------------------------------------------------------------------------- main

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  install) do_install ;;
  bindir) need_bindir; echo "$BINDIR" ;;
  start) do_start "$@" ;;
  stop) do_stop "$@" ;;
  psql) do_psql "$@" ;;
  -h|--help|help) usage 0 ;;
  "") usage 2 ;;
  *) log "unknown command '$cmd'"; usage 2 ;;
esac
