#!/usr/bin/env bash
# The local broker, whichever profile is selected: one entry point for the demo, the tests, the
# benchmark and people.
#
#   BROKER=kafka deploy/local/broker.sh start|stop|restart|status|pid|wipe|install   (default)
#   BROKER=tansu deploy/local/broker.sh ...
#
# kafka: Apache Kafka 4.4 in KRaft mode (deploy/local/kafka.sh), what our users run and what the
#        tests are judged on. Needs Java 17 and Maven (the jars come from Maven Central).
# tansu: Tansu (deploy/local/tansu.sh), a Kafka-compatible broker in one Rust binary for machines
#        without Java. It shows aborted transactional records to read_committed readers; only a
#        reader that joins outputs against progress markers is exact there (docs/exactly-once.md).
#
# The port is KAFKA_PORT (default 9092) for either profile.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
case "${BROKER:-kafka}" in
    kafka) exec "$HERE/kafka.sh" "$@" ;;
    tansu) exec "$HERE/tansu.sh" "$@" ;;
    *) echo "broker.sh: unknown BROKER=${BROKER}; use kafka or tansu" >&2; exit 2 ;;
esac
