#!/usr/bin/env bash
# The fleet benchmark (issue 13): one `run` polling CLINICS clinics x 3 resources on the sandbox
# (`sandbox --clinics N`, a few records each, nothing changing), every INTERVAL, for DURATION.
# Measures the notifier's peak RSS, its CPU share of one core, the API requests per second, the
# requests per resource per poll, and the spread of poll start times; exits 1 when a target is
# missed, printing every figure either way. Not part of `cargo test`.
#
#   bench/fleet.sh                                   # 1,000 clinics, 60 s interval, 10 minutes
#   CLINICS=50 DURATION=150 INTERVAL=30 bench/fleet.sh   # a quick run (seconds; `150s` works too)
#   RECORDS=5          records per resource in each organization
#   SAMPLE_EVERY=5     seconds between two samples of /proc/PID/{stat,status}
#   SLACK=5            seconds after the first interval before the steady part starts
#   STOP_WITHIN=30     seconds `run` may take to stop on SIGTERM before it is killed (a miss)
#   NO_BUILD=1 BIN=path/to/clinicea-notifier         # measure another binary, no build
#   KEEP=1             keep the work directory (configs, logs, the sampled figures)
#
# Targets: peak RSS (VmHWM) under RSS_MAX_MB (150); CPU over the steady part under CPU_MAX_PCT (5)
# of one core; exactly one request per resource per quiet poll in the steady part (the requests
# the sandbox counted over the polls the notifier counted, 1.00 at two decimals) and no failed
# poll; every whole interval of the steady part brings 3 x CLINICS requests (within 1 %: polls
# that stop coming, or come twice, show here); polls spread over the interval: the busiest second
# of the interval (arrivals folded over the steady intervals) holds under SPREAD_MAX (2) times the
# mean; and `run` stops on SIGTERM within STOP_WITHIN seconds.
#
# The steady part starts one interval (plus SLACK) after `run` listens: the first interval holds
# each clinic's silent baseline and first poll. Needs curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

secs() { local v=$1; v=${v%s}; echo "$v"; }
CLINICS=${CLINICS:-1000}
DURATION=$(secs "${DURATION:-600}")
INTERVAL=$(secs "${INTERVAL:-60}")
RECORDS=${RECORDS:-5}
SAMPLE_EVERY=$(secs "${SAMPLE_EVERY:-5}")
SLACK=$(secs "${SLACK:-5}")
STOP_WITHIN=$(secs "${STOP_WITHIN:-30}")
RSS_MAX_MB=${RSS_MAX_MB:-150}
CPU_MAX_PCT=${CPU_MAX_PCT:-5}
SPREAD_MAX=${SPREAD_MAX:-2}
BIN=${BIN:-target/release/clinicea-notifier}
if [ "$DURATION" -le $((INTERVAL + SLACK + SAMPLE_EVERY)) ]; then
  echo "DURATION ($DURATION s) must be longer than INTERVAL + SLACK + SAMPLE_EVERY" >&2
  exit 2
fi
if [ -z "${NO_BUILD:-}" ]; then cargo build --release --bin clinicea-notifier >&2; fi

work=$(mktemp -d)
cleanup() {
  if [ -n "${run_pid:-}" ]; then kill "$run_pid" 2>/dev/null || true; fi
  if [ -n "${sb_pid:-}" ]; then kill "$sb_pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "work directory kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# Waits up to $2 seconds for a line of file $1 matching the regex $3, and prints it.
wait_line() {
  local file=$1 timeout=$2 pattern=$3 line
  for _ in $(seq $((timeout * 10))); do
    line=$(grep -m1 -E "$pattern" "$file" 2>/dev/null || true)
    if [ -n "$line" ]; then echo "$line"; return 0; fi
    sleep 0.1
  done
  return 1
}

now_ms() { date +%s%3N; }
# utime + stime of process $1, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Field $2 (VmRSS, VmHWM) of process $1, in kB.
vm_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

echo "date: $(date -u +%FT%TZ)  nproc: $(nproc)  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "clinics: $CLINICS x 3 resources, $RECORDS records each, interval ${INTERVAL}s, duration ${DURATION}s, binary $BIN"

# The sandbox: one organization per clinic, nothing changing.
"$BIN" sandbox --listen 127.0.0.1:0 --clinics "$CLINICS" --leads "$RECORDS" --patients "$RECORDS" \
  --appointments "$RECORDS" --churn-every 0s >"$work/sandbox.out" 2>"$work/sandbox.err" &
sb_pid=$!
first=$(wait_line "$work/sandbox.out" 120 '^Clinicea sandbox on http://') || {
  echo "the sandbox did not start:" >&2; cat "$work/sandbox.err" >&2; exit 1; }
sandbox_url=$(echo "$first" | grep -oE 'http://127\.0\.0\.1:[0-9]+')

# The notifier: one clinic per organization, no rule matching anything that changes (nothing does).
{
  printf 'clinicea:\n  base_url: %s\n  poll_interval: %ss\n' "$sandbox_url" "$INTERVAL"
  printf 'clinics:\n'
  for i in $(seq "$CLINICS"); do
    if [ "$CLINICS" -eq 1 ]; then key=sandbox-api-key; else key="sandbox-api-key-$i"; fi
    printf '  c%04d: { api_key: %s }\n' "$i" "$key"
  done
  cat <<EOF
resources:
  leads: { path: /api/v1/leads }
  patients: { path: /api/v1/patients }
  appointments: { path: /api/v3/appointments/getChanges, since_param: lastSyncDTime, since_format: "%Y-%m-%dT%H:%M:%S", page_param: pageNo, first_page: 1, page_size_param: pageSize, status_field: DataStatusValue }
destinations:
  nowhere: { type: webhook, url: "http://127.0.0.1:9/never", secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }
rules:
  - name: never
    where: [{ field: ID, equals: "no record has this id" }]
    notify: [nowhere]
store:
  path: $work/data
listen: 127.0.0.1:0
EOF
} >"$work/config.yaml"
if ! "$BIN" --config "$work/config.yaml" check >"$work/check.out" 2>&1; then
  echo "check refused the config:" >&2; tail -40 "$work/check.out" >&2; exit 1
fi

"$BIN" --config "$work/config.yaml" run >"$work/run.out" 2>"$work/run.err" &
run_pid=$!
listening=$(wait_line "$work/run.out" 120 'listening on http://') || {
  echo "run did not start:" >&2; tail -40 "$work/run.err" >&2; exit 1; }
metrics_url="$(echo "$listening" | grep -oE 'http://[0-9.:]+')/metrics"
t0=$(now_ms)
cpu0=$(cpu_ticks "$run_pid")
sb_cpu0=$(cpu_ticks "$sb_pid")
steady_at=$((t0 + (INTERVAL + SLACK) * 1000))
end_at=$((t0 + DURATION * 1000))
echo "run (pid $run_pid) listening; steady part from +$((INTERVAL + SLACK)) s to +$DURATION s"

# How long one read of /metrics or /admin/fleet may take: a notifier that stopped answering is
# reported (its /metrics stays empty), not waited on.
HTTP_TIMEOUT=30
# Snapshot $1: the time, both processes' CPU, the notifier's poll counters, the sandbox's counts.
snapshot() {
  local tag=$1
  echo "$(now_ms) $(cpu_ticks "$run_pid") $(cpu_ticks "$sb_pid")" >"$work/$tag.times"
  curl -sf --max-time "$HTTP_TIMEOUT" "$metrics_url" >"$work/$tag.metrics" || : >"$work/$tag.metrics"
  curl -sf --max-time "$HTTP_TIMEOUT" "$sandbox_url/admin/fleet" >"$work/$tag.fleet.json"
}

printf 'ms rss_kb hwm_kb ticks\n' >"$work/samples.txt"
steady_taken=
while :; do
  if ! kill -0 "$run_pid" 2>/dev/null; then
    echo "run exited early:" >&2; tail -40 "$work/run.err" >&2; exit 1
  fi
  now=$(now_ms)
  echo "$now $(vm_kb "$run_pid" VmRSS) $(vm_kb "$run_pid" VmHWM) $(cpu_ticks "$run_pid")" >>"$work/samples.txt"
  if [ -z "$steady_taken" ] && [ "$now" -ge "$steady_at" ]; then snapshot steady; steady_taken=1; fi
  if [ "$now" -ge "$end_at" ]; then break; fi
  left=$(( (end_at - now) / 1000 ))
  sleep "$(( left < SAMPLE_EVERY ? (left > 0 ? left : 1) : SAMPLE_EVERY ))"
done
snapshot end
echo "$t0 $cpu0 $sb_cpu0" >"$work/start.times"
stop_from=$(now_ms)
kill -TERM "$run_pid" 2>/dev/null || true
stopped=killed
for _ in $(seq $((STOP_WITHIN * 10))); do
  if ! kill -0 "$run_pid" 2>/dev/null; then stopped=$(( $(now_ms) - stop_from )); break; fi
  sleep 0.1
done
if [ "$stopped" = killed ]; then
  echo "run did not stop within ${STOP_WITHIN}s of SIGTERM; killing it" >&2
  kill -KILL "$run_pid" 2>/dev/null || true
fi
wait "$run_pid" 2>/dev/null || true
run_pid=
problems=$(grep -cE '"level":"(WARN|ERROR)"| WARN | ERROR ' "$work/run.err" || true)

python3 - "$work" "$INTERVAL" "$(getconf CLK_TCK)" "$CLINICS" "$RSS_MAX_MB" "$CPU_MAX_PCT" "$SPREAD_MAX" "$problems" "$stopped" "$STOP_WITHIN" <<'PY'
import json, re, sys
from collections import defaultdict

work, interval, tck, clinics = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rss_max, cpu_max, spread_max, problems = float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7]), int(sys.argv[8])
stopped, stop_within = sys.argv[9], int(sys.argv[10])

def times(tag):
    ms, run, sb = open(f"{work}/{tag}.times").read().split()
    return int(ms), int(run), int(sb)

def polls(tag):
    """clinicea_notifier_polls_total and clinicea_notifier_poll_failures_total summed per resource."""
    out = defaultdict(float)
    for line in open(f"{work}/{tag}.metrics"):
        m = re.match(r'^(clinicea_notifier_polls_total|clinicea_notifier_poll_failures_total)\{([^}]*)\}\s+(\S+)', line)
        if m:
            res = re.search(r'resource="([^"]*)"', m.group(2))
            out[(m.group(1), res.group(1) if res else "?")] += float(m.group(3))
    return out

fleet = {t: json.load(open(f"{work}/{t}.fleet.json")) for t in ("steady", "end")}
t0, cpu0, sbcpu0 = times("start")
t1, cpu1, sbcpu1 = times("steady")
t2, cpu2, sbcpu2 = times("end")
p1, p2 = polls("steady"), polls("end")
answered = all(open(f"{work}/{t}.metrics").read().strip() for t in ("steady", "end"))
samples = [l.split() for l in open(f"{work}/samples.txt").read().splitlines()[1:]]
peak_rss = max(int(s[1]) for s in samples) / 1024
peak_hwm = max(int(s[2]) for s in samples) / 1024

cpu_steady = 100 * (cpu2 - cpu1) / tck / ((t2 - t1) / 1000)
cpu_whole = 100 * (cpu2 - cpu0) / tck / ((t2 - t0) / 1000)
sb_cpu_steady = 100 * (sbcpu2 - sbcpu1) / tck / ((t2 - t1) / 1000)
resources = ["leads", "patients", "appointments"]
req = lambda t, r: fleet[t]["requests"].get(r, 0)
steady_req = sum(req("end", r) - req("steady", r) for r in resources)
whole_req = sum(req("end", r) for r in resources)
rps_steady = steady_req / ((t2 - t1) / 1000)
rps_whole = whole_req / ((t2 - t0) / 1000)

per_poll, failures = {}, 0
for r in resources:
    dp = p2[("clinicea_notifier_polls_total", r)] - p1[("clinicea_notifier_polls_total", r)]
    failures += p2[("clinicea_notifier_poll_failures_total", r)] - p1[("clinicea_notifier_poll_failures_total", r)]
    per_poll[r] = (req("end", r) - req("steady", r)) / dp if dp else float("nan")
# Every organization polled in the steady part, and none more often than the interval allows.
orgs_polled = sum(
    1 for a, b in zip(fleet["steady"]["organizations"], fleet["end"]["organizations"])
    if all(b["requests"].get(r, 0) > a["requests"].get(r, 0) for r in resources))

# Arrivals: seconds since the sandbox started; the steady part's whole seconds only.
arr = fleet["end"]["arrivals"]
started = fleet["end"]["started_unix_ms"]
s_first = (t1 - started) // 1000 + 1
s_last = (t2 - started) // 1000 - 1
per_sec = {arr["first_second"] + i: n for i, n in enumerate(arr["per_second"])}
steady_secs = [per_sec.get(s, 0) for s in range(s_first, s_last + 1)]
whole = len(steady_secs) // interval
per_interval = [sum(steady_secs[k * interval:(k + 1) * interval]) for k in range(whole)]
folded = [0] * interval
for i, n in enumerate(steady_secs[: whole * interval]):
    folded[i % interval] += n
mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")

rows, missed = [], []
def row(name, figure, unit, target="", ok=None):
    rows.append((name, figure, unit, target, "" if ok is None else ("yes" if ok else "NO")))
    if ok is False:
        missed.append(name)

row("peak RSS (max VmHWM)", f"{peak_hwm:.1f}", "MB", f"< {rss_max:g} MB", peak_hwm < rss_max)
row("  max VmRSS sampled", f"{peak_rss:.1f}", "MB")
row("CPU, steady part", f"{cpu_steady:.2f}", "% of a core", f"< {cpu_max:g}%", cpu_steady < cpu_max)
row("CPU, whole run (with baselines)", f"{cpu_whole:.2f}", "% of a core")
row("API requests/s, steady part", f"{rps_steady:.1f}", "req/s", f"~{3 * clinics / interval:.1f} (3 x clinics / interval)")
row("API requests/s, whole run", f"{rps_whole:.1f}", "req/s")
for r in resources:
    v = per_poll[r]
    row(f"requests per poll, {r}", f"{v:.4f}", "req/poll", "1.00", f"{v:.2f}" == "1.00")
row("run answered /metrics at both snapshots", "yes" if answered else "no", "", "yes", answered)
row("failed polls, steady part", f"{failures:.0f}", "polls", "0", failures == 0)
row("organizations polled in the steady part", f"{orgs_polled}", f"of {clinics}", f"{clinics}", orgs_polled == clinics)
expected = 3 * clinics
if per_interval:
    ok = all(abs(n - expected) <= 0.01 * expected for n in per_interval)
    row(f"requests in each of {whole} steady intervals", f"{min(per_interval)}-{max(per_interval)}", "req", f"{expected} +- 1%", ok)
row("arrivals per second, steady: max", f"{max(steady_secs)}", "req")
row("arrivals per second, steady: mean", f"{mean(steady_secs):.1f}", "req")
row("arrivals per second, steady: min", f"{min(steady_secs)}", "req")
if whole:
    fmax, fmean, fmin = max(folded), mean(folded), min(folded)
    row(f"second of the interval, {whole} intervals folded: max", f"{fmax}", "req")
    row(f"second of the interval, {whole} intervals folded: mean", f"{fmean:.1f}", "req")
    row(f"second of the interval, {whole} intervals folded: min", f"{fmin}", "req")
    row("  busiest second / mean", f"{fmax / fmean:.2f}", "ratio", f"< {spread_max:g}", fmax / fmean < spread_max)
else:
    row("spread over the interval", "-", "", "needs one whole steady interval", False)
row("sandbox CPU, steady part", f"{sb_cpu_steady:.2f}", "% of a core")
row("unrouted sandbox requests (wrong key)", f"{fleet['end']['unrouted']}", "req", "0", fleet["end"]["unrouted"] == 0)
if stopped == "killed":
    row("stopped on SIGTERM", "no", "", f"< {stop_within} s", False)
else:
    row("stopped on SIGTERM", f"{int(stopped) / 1000:.1f}", "s", f"< {stop_within} s", True)
row("warnings/errors in run's log", f"{problems}", "lines", "0", problems == 0)

w = max(len(r[0]) for r in rows)
print(f"| {'measure':<{w}} | {'figure':>10} | {'unit':<12} | {'target':<30} | met |")
print(f"|{'-' * (w + 2)}|{'-' * 12}|{'-' * 14}|{'-' * 32}|-----|")
for name, figure, unit, target, ok in rows:
    print(f"| {name:<{w}} | {figure:>10} | {unit:<12} | {target:<30} | {ok:<3} |")
print(f"steady part: {(t2 - t1) / 1000:.0f} s, {steady_req} requests; whole run {(t2 - t0) / 1000:.0f} s, {whole_req} requests")
if folded and whole:
    print("requests per steady interval:", " ".join(map(str, per_interval)))
    print("arrivals per second of the interval (folded):", " ".join(map(str, folded)))
if missed:
    print("MISSED:", "; ".join(missed))
    sys.exit(1)
print("all targets met")
PY
