#!/usr/bin/env bash
# Builds the release binary and the pipeline benchmark once, then runs the benchmark, which prints
# a table of each figure beside its ceiling and the ratio (see benches/pipeline.rs).
#   bench/run.sh                 # everything (about 3 minutes on 2 cores, after the build)
#   BENCH_ONLY=A,B bench/run.sh  # some parts
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin clinicea-notifier
cargo bench --bench pipeline --no-run
echo "date: $(date -u +%FT%TZ)  nproc: $(nproc)  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
exec cargo bench --bench pipeline
