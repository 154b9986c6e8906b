#!/usr/bin/env bash
# Builds and runs the per-destination delivery benchmark (benches/destinations.rs): webhook, NATS
# JetStream and RabbitMQ, each beside its ceiling. The brokers come from the same variables as the
# tests; a broker whose variable is unset is skipped (said on stderr).
#   bench/destinations.sh
#   BENCH_DESTINATION_ENTRIES=20000 BENCH_CONCURRENCY=16 bench/destinations.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CLINICEA_TEST_NATS_URL="${CLINICEA_TEST_NATS_URL:-nats://127.0.0.1:4222}"
export CLINICEA_TEST_AMQP_URL="${CLINICEA_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
cargo bench --bench destinations --no-run
echo "date: $(date -u +%FT%TZ)  commit: $(git rev-parse --short HEAD)  nproc: $(nproc)  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
exec cargo bench --bench destinations
