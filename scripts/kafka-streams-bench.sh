#!/usr/bin/env bash
# Builds the Kafka Streams application that `weir bench kafka-streams`
# compares weir with (benches/kafka-streams), once, and prints its Java
# class path on stdout.
#
#   scripts/kafka-streams-bench.sh classpath
#
# Needs a JDK 17+ (javac) and Maven: Maven fetches kafka-streams, Jackson and
# their dependencies into the local repository; javac compiles the one class.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
app="$here/benches/kafka-streams"
out="$app/target"
source_file="$app/src/main/java/weir/bench/StreamsApp.java"

die() { echo "kafka-streams-bench.sh: $*" >&2; exit 1; }

[ "${1:-}" = "classpath" ] || die "usage: scripts/kafka-streams-bench.sh classpath"
command -v javac >/dev/null 2>&1 || die "javac not found: the Kafka Streams application needs a JDK 17 or newer"
command -v mvn >/dev/null 2>&1 || die "mvn not found: it fetches kafka-streams and Jackson (apt-get install maven)"

stamp="$out/.built"
if [ ! -f "$stamp" ] || [ "$app/pom.xml" -nt "$stamp" ] || [ "$source_file" -nt "$stamp" ]; then
  rm -rf "$out"
  mkdir -p "$out/classes"
  log="$out/mvn.log"
  if ! (cd "$app" && mvn -B -q -Dstyle.color=never dependency:copy-dependencies \
          -DincludeScope=runtime -DoutputDirectory="$out/dependency" >"$log" 2>&1); then
    tail -30 "$log" >&2
    die "fetching the Kafka Streams jars with mvn failed (log: $log)"
  fi
  javac -d "$out/classes" -cp "$out/dependency/*" "$source_file" >&2 \
    || die "compiling $source_file failed"
  touch "$stamp"
fi
echo "$out/classes:$out/dependency/*"
