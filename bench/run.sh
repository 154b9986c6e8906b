#!/usr/bin/env bash
# Builds the release binary and the benchmarks once, then runs them; each prints a table of each
# figure beside its ceiling and the ratio (see benches/pipeline.rs and benches/versus_alertmanager.rs).
#   bench/run.sh                   # everything (about 5 minutes on 2 cores, after the build)
#   BENCH_ONLY=A,B bench/run.sh    # some parts: A, B, C, D, P (benches/pipeline.rs),
#                                  # V (benches/versus_alertmanager.rs: the same events through Alertmanager)
set -euo pipefail
cd "$(dirname "$0")/.."
only="${BENCH_ONLY:-A,B,C,D,P,V}"
has() { [[ ",${only^^}," == *",$1,"* ]]; }
pipeline=0
for p in A B C D P; do has "$p" && pipeline=1; done

cargo build --release --bin clinicea-notifier
if [[ $pipeline == 1 ]]; then cargo bench --bench pipeline --no-run; fi
if has V; then
  cargo bench --bench versus_alertmanager --no-run
  # Part V needs Alertmanager; Debian ships it as prometheus-alertmanager (/usr/bin/prometheus-alertmanager).
  # On a machine with systemd the package also starts its own service (on :9093/:9094); the
  # benchmark runs a separate instance on free loopback ports.
  if [[ -z "${BENCH_ALERTMANAGER:-}" ]] && ! command -v alertmanager >/dev/null && [[ ! -x /usr/bin/prometheus-alertmanager ]]; then
    sudo=""; [[ $(id -u) != 0 ]] && sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y prometheus-alertmanager \
      || echo "bench/run.sh: could not install prometheus-alertmanager; part V will say so and fail" >&2
  fi
fi
echo "date: $(date -u +%FT%TZ)  commit: $(git rev-parse --short HEAD)  nproc: $(nproc)  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
status=0
if [[ $pipeline == 1 ]]; then BENCH_ONLY="$only" cargo bench --bench pipeline || status=$?; fi
if has V; then cargo bench --bench versus_alertmanager || status=$?; fi
exit $status
