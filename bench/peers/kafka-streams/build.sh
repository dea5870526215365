#!/usr/bin/env bash
# Builds the Kafka Streams peer once and prints, on two lines, the java binary to run it with and
# its class path.
#
#   bench/peers/kafka-streams/build.sh
#
# `evalstream bench --peer kafka-streams` runs this itself; there is nothing to do by hand. What
# it does: resolves pom.xml's dependencies from Maven Central (`mvn dependency:build-classpath`,
# into the evalstream cache's Maven repository), compiles src/ with javac (release 17) into
# $EVALSTREAM_CACHE/peers/kafka-streams-<hash of pom.xml and sources>/, and prints the java
# binary (JAVA_HOME, PATH or /usr/lib/jvm, 17+) and `<classes dir>:<dependency class path>`. A
# second run with unchanged sources only prints.
# Needs mvn and a JDK 17+ (javac).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
LOG_PREFIX=kafka-streams-peer
# shellcheck source=deploy/local/common.sh
source "$HERE/../../../deploy/local/common.sh"

hash=$(cat "$HERE/pom.xml" $(find "$HERE/src" -name '*.java' | sort) | sha256sum | cut -c1-12)
OUT="$CACHE/peers/kafka-streams-$hash"
java=$(es_find_java 17)
if [[ ! -f "$OUT/.built" ]]; then
    rm -rf "$OUT"
    mkdir -p "$OUT"
    log "resolving kafka-streams and Avro from Maven Central (cached in $MAVEN_REPO)"
    es_mvn -f "$HERE/pom.xml" "$DEPENDENCY_PLUGIN:build-classpath" -Dmdep.outputFile="$OUT/classpath"
    javac="$(dirname "$java")/javac"
    [[ -x "$javac" ]] || die "no javac next to $java: install a JDK 17+ (Debian: openjdk-17-jdk-headless)"
    log "compiling the peer with $javac"
    "$javac" --release 17 -nowarn -d "$OUT/classes" -cp "$(cat "$OUT/classpath")" \
        $(find "$HERE/src" -name '*.java')
    touch "$OUT/.built"
fi
echo "$java"
echo "$OUT/classes:$(cat "$OUT/classpath")"
