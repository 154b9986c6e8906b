#!/usr/bin/env bash
# Peak RSS of `once` against page size: a sandbox serving every lead in ONE page (an endpoint that
# ignores the page parameter), about 20, 40 and 60 MB, measured with /usr/bin/time -v.
#
#   bench/page_memory.sh                       # builds the release binary, then measures it
#   NOTIFIER=path/to/old/clinicea-notifier bench/page_memory.sh   # another binary (e.g. before)
#   SANDBOX_BIN=... NO_BUILD=1                 # the sandbox binary (it needs --ignore-paging), no build
#   BASELINE=off bench/page_memory.sh          # without the silent baseline (writes
#                                              # `baseline: { enabled: false }`, which binaries older
#                                              # than the baseline refuse: measure those as they are)
#   PAGED=1 bench/page_memory.sh               # the same leads in pages of 100 (the sandbox's
#                                              # normal paging): what storing them costs anyway
#   CACHE_MB=16 bench/page_memory.sh           # store.cache_mb (default: the notifier's, 64)
#   LEADS="65000 130000 195000" (the default) sets the page sizes.
#
# The sandbox is the release binary's own `sandbox --ignore-paging` in its own process, so its
# memory is not counted. `start_from` is 2000-01-01: every lead is a change (journaled; no rules,
# so no deliveries). Not part of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${NO_BUILD:-}" ]; then cargo build --release --bin clinicea-notifier >&2; fi
SANDBOX_BIN=${SANDBOX_BIN:-target/release/clinicea-notifier}
NOTIFIER=${NOTIFIER:-target/release/clinicea-notifier}
LEADS=${LEADS:-65000 130000 195000}
BASELINE=${BASELINE:-on}
paging=--ignore-paging
if [ -n "${PAGED:-}" ]; then paging=; fi
work=$(mktemp -d)
trap 'kill "${sb_pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
echo "date: $(date -u +%FT%TZ)  nproc: $(nproc)  notifier: $NOTIFIER  baseline: $BASELINE  paging: ${paging:-pages of 100}  cache_mb: ${CACHE_MB:-default}"
printf '| %8s | %9s | %12s | %8s | %s\n' leads "page MB" "peak RSS MB" "wall s" "once says"
for leads in $LEADS; do
  port=$((20000 + RANDOM % 20000))
  "$SANDBOX_BIN" sandbox --listen "127.0.0.1:$port" --leads "$leads" --patients 0 \
    --appointments 0 --churn-every 0s $paging >"$work/sandbox.log" 2>&1 &
  sb_pid=$!
  url="http://127.0.0.1:$port/api/v1/leads?lastSyncTimestamp=2000-01-01T00:00:00+00:00&intPageNo=0"
  for _ in $(seq 600); do
    curl -sf -o /dev/null -H 'api: sandbox-api-key' "$url" && break
    sleep 0.2
  done
  bytes=$(curl -sf -H 'api: sandbox-api-key' "$url" | wc -c)
  rm -rf "$work/data"
  {
    printf 'clinicea:\n  base_url: http://127.0.0.1:%s\n  api_key: sandbox-api-key\n' "$port"
    printf '  start_from: 2000-01-01T00:00:00Z\n  timeout: 120s\n'
    if [ "$BASELINE" = off ]; then printf '  baseline: { enabled: false }\n'; fi
    printf 'resources:\n  leads:\n    path: /api/v1/leads\nstore:\n  path: %s/data\n' "$work"
    if [ -n "${CACHE_MB:-}" ]; then printf '  cache_mb: %s\n' "$CACHE_MB"; fi
  } >"$work/config.yaml"
  /usr/bin/time -v "$NOTIFIER" --config "$work/config.yaml" -q once \
    >"$work/once.out" 2>"$work/time.txt" || true
  rss_kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$work/time.txt")
  wall=$(awk '/Elapsed \(wall clock\)/ {print $NF}' "$work/time.txt")
  says=$(grep -m1 'leads:' "$work/once.out" | cut -c1-110 || true)
  printf '| %8s | %9.1f | %12.1f | %8s | %s\n' "$leads" "$(echo "$bytes / 1000000" | bc -l)" \
    "$(echo "$rss_kb / 1024" | bc -l)" "$wall" "$says"
  kill "$sb_pid" 2>/dev/null || true
  wait "$sb_pid" 2>/dev/null || true
done
