#!/usr/bin/env bash
# bench.sh: reproduces every figure of docs/PERFORMANCE.md with one command. Builds a
# release concert-bench and concert-server (build-bench/), starts its own redis-server
# and concert-server on free 127.0.0.1 ports (never 6379) with all state in a temp dir,
# runs ping, queue, the ghz cross-check, watch, deep-queue and booking (with its own
# one-node Kafka and payment-consumer), and an h2load ceiling when h2load is
# installed, samples CPU/RSS of the server, Redis, consumer and Kafka, writes everything
# under bench-out/<timestamp>/ with a combined summary.md, checks every report, and
# stops what it started (by pid only) on exit, failure or Ctrl-C.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/bench.sh [--quick] [--out DIR] [--build-dir DIR] [--no-build]
                        [--concurrency N] [--duration S] [--help]

Runs the whole benchmark against private services and writes bench-out/<timestamp>/:
  ping/          concert-bench ping: grpc.health.v1.Health/Check, the ceiling
  queue/         concert-bench queue: IssueToken once per user, then GetQueueStatus
                 (server started with --admit-rate 0: everyone stays WAITING)
  queue-token/   concert-bench queue --token T: GetQueueStatus on ONE token only
  ghz/           ghz on the same method, same token, same concurrency, same 4
                 connections, same duration: the like-for-like cross-check
  watch/         concert-bench watch: 10,000 WatchQueueStatus streams held 30 s
  watch-many/    the same 10,000 tokens watched 100 per WatchQueueStatuses stream
                 (server admitting 100 users/s)
  deep-queue/    concert-bench deep-queue: 1,000,000 waiting users, then the queue
                 measurement on an empty and on the deep concert (server with
                 --admit-rate 0 --idle-timeout-ms 0), Redis memory per waiting user
  booking/       concert-bench booking: IssueToken -> ACTIVE -> Charge, then
                 ReserveSeats, Pay, WatchPayment until COMPLETED, through a one-node
                 Kafka (scripts/kafka.sh) and one payment-consumer; paid
                 reservations/s and Pay -> COMPLETED latency (the run at
                 --concurrency; booking-runs/ has every run of scripts/bench-booking.sh:
                 64 and 512 users, then the open-loop ramp 1,000..3,000 buyers/s,
                 with CPU per paid reservation of every process in its summary.md)
  h2load/        (if h2load is installed: apt-get install nghttp2-client)
                 scripts/bench-h2load.sh: h2load on a bare gRPC C core echo server,
                 Health/Check, GetQueueStatus and IssueToken, interleaved rounds,
                 ratios to echo, server CPU and Redis usec per call
  summary.md     every figure in one table, with ratios to ping and the targets
Each concert-bench folder has report.md, report.json, series-*.tsv, charts.gp and
PNG charts (when gnuplot is installed: apt-get install gnuplot-nox).

Options:
  --quick          ~45 s smoke run with small numbers (what the test suite calls)
  --out DIR        write here instead of bench-out/<timestamp>
  --build-dir DIR  build directory (default build-bench, or $CONCERT_BENCH_BUILD_DIR)
  --no-build       use the binaries already in the build directory
  --concurrency N  calls in flight for ping/queue/ghz (default 64)
  --duration S     measured seconds for ping/queue/ghz/deep-queue phases (default 10)
  --help           this help

The machine's CPUs are shared by the load generator, the server and Redis: the
reports say so and show each one's CPU, plus "others" (whatever else ran).
Exit status: 0 when every run finished and every report is well formed and non-empty;
1 otherwise (the reason is printed); 2 usage error.
EOF
}

quick=0
build=1
OUT=""
BUILD="${CONCERT_BENCH_BUILD_DIR:-build-bench}"
CONC=64
DUR=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --quick) quick=1 ;;
    --no-build) build=0 ;;
    --out) [[ $# -ge 2 ]] || { echo "bench.sh: --out needs a value" >&2; exit 2; }; OUT="$2"; shift ;;
    --out=*) OUT="${1#*=}" ;;
    --build-dir) [[ $# -ge 2 ]] || { echo "bench.sh: --build-dir needs a value" >&2; exit 2; }; BUILD="$2"; shift ;;
    --build-dir=*) BUILD="${1#*=}" ;;
    --concurrency) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || { echo "bench.sh: --concurrency needs a number" >&2; exit 2; }; CONC="$2"; shift ;;
    --duration) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || { echo "bench.sh: --duration needs a number" >&2; exit 2; }; DUR="$2"; shift ;;
    *) echo "bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[[ "$BUILD" == /* ]] || BUILD="$ROOT/$BUILD"

# ---- sizes: full run vs --quick ---------------------------------------------------
if ((quick)); then
  WARMUP=1; DUR="${DUR:-2}"; WATCH_USERS=300; WATCH_DUR=3; FILL=5000; FILL_CONC=256; BOOK_DUR=5
else
  WARMUP=2; DUR="${DUR:-10}"; WATCH_USERS=10000; WATCH_DUR=30; FILL=1000000; FILL_CONC=512; BOOK_DUR="$DUR"
fi

if [[ -z "$OUT" ]]; then OUT="$ROOT/bench-out/$(date -u +%Y%m%dT%H%M%SZ)"; fi
[[ "$OUT" == /* ]] || OUT="$ROOT/$OUT"
mkdir -p "$OUT"

# ---- cleanup: runs on every exit ----------------------------------------------------
TMP=""
REDIS_PID=""
SERVER_PID=""
CHILD_PID="" # a concert-bench, ghz or h2load run in progress

# stop_pid PID: SIGTERM, then SIGKILL after 5 s; only pids we started.
# shellcheck source=lib/proc.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/proc.sh"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pids "$CHILD_PID" "$SERVER_PID" "$REDIS_PID"
  bench_finish bench.sh "$rc"
}
trap cleanup EXIT
trap 'echo "bench.sh: interrupted" >&2; exit 130' INT
trap 'exit 143' TERM

die() { echo "bench.sh: $*" >&2; exit 1; }
say() { printf '\n== %s\n' "$*" >&2; }


for tool in cmake ninja redis-server redis-cli python3; do
  command -v "$tool" >/dev/null || die "'$tool' not found; run scripts/install-deps.sh"
done
GHZ="$(command -v ghz || true)"; [[ -z "$GHZ" && -x "$HOME/go/bin/ghz" ]] && GHZ="$HOME/go/bin/ghz"
H2LOAD="$(command -v h2load || true)"
GNUPLOT="$(command -v gnuplot || true)"

TMP="$(mktemp -d -t concert-bench.XXXXXX)"

# ---- build (RelWithDebInfo = -O2 -g: optimised, and perf can name every function) ----
BENCH="$BUILD/client/concert-bench"
SERVER_BIN="$BUILD/server/concert-server"
CTL="$BUILD/client/concertctl"
CONSUMER_BIN="$BUILD/consumers/payment-consumer"
if ((build)); then
  say "build (RelWithDebInfo: -O2 -g, the project's release type) in ${BUILD#"$ROOT"/}"
  build_release "$BUILD" "$TMP/build.log" || die "build failed"
fi
for b in "$BENCH" "$SERVER_BIN" "$CTL" "$CONSUMER_BIN"; do [[ -x "$b" ]] || die "$b is missing (build first or drop --no-build)"; done

# ---- services ----------------------------------------------------------------------
REDIS_PORT="$(free_port)"
say "redis-server on 127.0.0.1:$REDIS_PORT (in memory, temp dir)"
start_redis "$REDIS_PORT" "$TMP" || die "redis-server did not start"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
RCLI=(redis-cli -h 127.0.0.1 -p "$REDIS_PORT")

SERVER_ADDR=""
N_SERVER=0
# Every server gets an admin key (a queue exists only for a concert an admin created)
# and no rate limits: the benchmark measures capacity, from one address, and polls
# tokens far faster than a person would.
ADMIN_KEY="bench-$$-$RANDOM"
# start_server ARGS...: a fresh concert-server with these extra flags.
start_server() {
  stop_pid "$SERVER_PID"
  SERVER_PID=""
  local port i
  port="$(free_port)"
  SERVER_ADDR="127.0.0.1:$port"
  N_SERVER=$((N_SERVER + 1))
  # No Kafka, metrics or admin key whatever the caller's environment says.
  env -u CONCERT_KAFKA -u CONCERT_METRICS -u CONCERT_ADMIN_KEY \
    "$SERVER_BIN" --listen "$SERVER_ADDR" --redis "$REDIS_URL" --admin-key "$ADMIN_KEY" --rate-user 0 --rate-peer 0 \
    "$@" 2>"$TMP/server-$N_SERVER.log" &
  SERVER_PID=$!
  echo "concert-server $* (pid $SERVER_PID)" >"$TMP/server-$N_SERVER.args.log"
  for ((i = 0; ; i++)); do
    "$CTL" --server "$SERVER_ADDR" --timeout-ms 500 health >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 5 "$TMP/server-$N_SERVER.log" >&2; die "concert-server exited at start"; }
    ((i < 100)) || die "concert-server was not SERVING within 10 s"
    sleep 0.1
  done
}

# make_concert ID: creates the concert (AdminService) on the current server.
make_concert() {
  "$CTL" --server "$SERVER_ADDR" --admin-key "$ADMIN_KEY" admin concert create --concert "$1" --name "bench $1" \
    >/dev/null || die "could not create concert $1"
}

# bench NAME SCENARIO ARGS...: one concert-bench run into $OUT/NAME (pid tracked).
bench() {
  local name="$1"
  shift
  mkdir -p "$OUT/$name"
  say "$name: concert-bench $*"
  "$BENCH" --server "$SERVER_ADDR" --watch-pid "concert-server=$SERVER_PID" --watch-pid "redis-server=$REDIS_PID" \
    --out "$OUT/$name" "$@" >"$OUT/$name/stdout.md" 2>"$OUT/$name/progress.log" &
  CHILD_PID=$!
  local rc=0
  wait "$CHILD_PID" || rc=$?
  CHILD_PID=""
  tail -n 3 "$OUT/$name/progress.log" >&2 || true
  ((rc == 0)) || die "$name: concert-bench exited $rc (see $OUT/$name/progress.log)"
}

# utime+stime (clock ticks) of a pid; 0 if gone.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

T_START=$(date +%s)

# ---- 1. ping: the ceiling ---------------------------------------------------------------
start_server
bench ping ping --concurrency "$CONC" --warmup "$WARMUP" --duration "$DUR"

# ---- 2. queue: IssueToken + GetQueueStatus (nobody admitted) -----------------------------
start_server --admit-rate 0
make_concert "bench-queue-$$"
"${RCLI[@]}" config resetstat >/dev/null
bench queue queue --concert "bench-queue-$$" --concurrency "$CONC" --warmup "$WARMUP" --duration "$DUR"
"${RCLI[@]}" info commandstats >"$OUT/queue/redis-commandstats.txt"

# ---- 3. ghz cross-check: GetQueueStatus on one token, both tools alike ---------------------
make_concert "bench-ghz-$$"
TOKEN="$("$CTL" --server "$SERVER_ADDR" queue join --user bench-ghz --concert "bench-ghz-$$" | awk '{print $2}')"
[[ "$TOKEN" == v[12].* ]] || die "could not issue a token for the ghz cross-check (got '$TOKEN')"
echo "$TOKEN" >"$OUT/token.txt"
bench queue-token queue --concert "bench-ghz-$$" --token "$TOKEN" --concurrency "$CONC" --warmup "$WARMUP" --duration "$DUR"
if [[ -n "$GHZ" ]]; then
  mkdir -p "$OUT/ghz"
  say "ghz: GetQueueStatus, -c $CONC, 4 connections, ${WARMUP}s warmup + ${DUR}s"
  GHZ_ARGS=(--insecure --proto "$ROOT/proto/concert/v1/queue.proto" --import-paths "$ROOT/proto"
    --call concert.v1.QueueService/GetQueueStatus -d "{\"token\":\"$TOKEN\"}" -c "$CONC" --connections 4)
  # Warmup run (thrown away), as concert-bench does.
  "$GHZ" "${GHZ_ARGS[@]}" -z "${WARMUP}s" "$SERVER_ADDR" >/dev/null 2>&1 &
  CHILD_PID=$!; wait "$CHILD_PID" || true; CHILD_PID=""
  s0=$(cpu_ticks "$SERVER_PID"); r0=$(cpu_ticks "$REDIS_PID"); t0=$(date +%s.%N)
  "$GHZ" "${GHZ_ARGS[@]}" -z "${DUR}s" -O json "$SERVER_ADDR" >"$OUT/ghz/ghz.json" 2>"$OUT/ghz/ghz.err" &
  CHILD_PID=$!
  g_pid=$CHILD_PID; g_ticks=0
  # Sample ghz's own CPU while it runs (it exits by itself after -z).
  while kill -0 "$g_pid" 2>/dev/null; do
    t=$(cpu_ticks "$g_pid"); [[ "$t" -gt "$g_ticks" ]] && g_ticks=$t
    sleep 0.2
  done
  wait "$g_pid" || die "ghz failed: $(head -c 300 "$OUT/ghz/ghz.err")"
  CHILD_PID=""
  t1=$(date +%s.%N); s1=$(cpu_ticks "$SERVER_PID"); r1=$(cpu_ticks "$REDIS_PID")
  python3 - "$OUT/ghz/cpu.json" "$t0" "$t1" "$s0" "$s1" "$r0" "$r1" "$g_ticks" "$(getconf CLK_TCK)" <<'PY'
import json, sys
out, t0, t1, s0, s1, r0, r1, g, hz = sys.argv[1:]
dt = float(t1) - float(t0); hz = float(hz)
pct = lambda a, b: round(100.0 * (float(b) - float(a)) / hz / dt, 1)
json.dump({"wall_s": round(dt, 2), "concert_server_cpu_pct": pct(s0, s1), "redis_cpu_pct": pct(r0, r1),
           "ghz_cpu_pct_approx": round(100.0 * float(g) / hz / dt, 1)}, open(out, "w"))
PY
else
  echo "bench.sh: ghz not found (scripts/install-go-tools.sh installs it): cross-check skipped" >&2
fi

# ---- 4. watch: 10,000 streams held while the server admits ------------------------------
start_server --admit-rate 100 --max-active 1000000
make_concert "bench-watch-$$"
bench watch watch --concert "bench-watch-$$" --users "$WATCH_USERS" --duration "$WATCH_DUR"

# ---- 4b. watch-many: the same tokens, 100 per WatchQueueStatuses stream (a gateway) -----
start_server --admit-rate 100 --max-active 1000000
make_concert "bench-watchm-$$"
bench watch-many watch --concert "bench-watchm-$$" --users "$WATCH_USERS" --duration "$WATCH_DUR" --tokens-per-stream 100

# ---- 5. deep-queue: 1,000,000 waiting users --------------------------------------------
start_server --admit-rate 0 --idle-timeout-ms 0
make_concert "bench-deep-$$"
make_concert "bench-deep-$$-empty"
bench deep-queue deep-queue --concert "bench-deep-$$" --fill "$FILL" --fill-concurrency "$FILL_CONC" --redis "$REDIS_URL" \
  --concurrency "$CONC" --warmup "$WARMUP" --duration "$DUR"

# ---- 6. h2load: cost per call against a bare gRPC C core echo server (issue 13) -----------
# scripts/bench-h2load.sh owns it (its own Redis, servers and concert-bench-echo): echo,
# Health/Check, GetQueueStatus and IssueToken interleaved over rounds, ratios to echo.
stop_pid "$SERVER_PID"; SERVER_PID=""
if [[ -n "$H2LOAD" ]]; then
  if ((quick)); then H2_ARGS=(--quick); else H2_ARGS=(--rounds 5 --requests 200000); fi
  say "h2load: scripts/bench-h2load.sh ${H2_ARGS[*]}"
  "$ROOT/scripts/bench-h2load.sh" --no-build --build-dir "$BUILD" --out "$OUT/h2load" "${H2_ARGS[@]}" \
    >"$TMP/bench-h2load.log" 2>&1 &
  CHILD_PID=$!
  rc=0; wait "$CHILD_PID" || rc=$?; CHILD_PID=""
  ((rc == 0)) || { tail -n 15 "$TMP/bench-h2load.log" >&2; die "h2load: scripts/bench-h2load.sh exited $rc"; }
else
  echo "bench.sh: h2load not found (apt-get install nghttp2-client): the echo ratios are skipped" >&2
fi

# ---- 7. booking: reservation -> payment through Kafka and payment-consumer ---------------
# scripts/bench-booking.sh owns this one (its own Redis, one-node Kafka, a fresh server and
# consumer per run): closed loop at 64 (and 512) users, then (full run) the open-loop
# ramp. The summary's booking row is the run at --concurrency.
if ((quick)); then BOOK_ARGS=(--concurrency "$CONC" --warmup-run 3); else BOOK_ARGS=(--concurrency "$CONC,512" --rate 1000,1500,2000,2500,3000); fi
say "booking: scripts/bench-booking.sh ${BOOK_ARGS[*]}"
"$ROOT/scripts/bench-booking.sh" --no-build --build-dir "$BUILD" --out "$OUT/booking-runs" --warmup "$WARMUP" \
  --duration "$BOOK_DUR" "${BOOK_ARGS[@]}" >"$TMP/bench-booking.log" 2>&1 &
CHILD_PID=$!
rc=0; wait "$CHILD_PID" || rc=$?; CHILD_PID=""
((rc == 0)) || { tail -n 15 "$TMP/bench-booking.log" >&2; die "booking: scripts/bench-booking.sh exited $rc"; }
mkdir -p "$OUT/booking"
cp -f "$OUT/booking-runs/c$CONC-r1-A/"* "$OUT/booking/"

# ---- 8. machine facts, summary, validation ----------------------------------------------
{
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "ram: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel: $(uname -r)"
  echo "os: $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
  echo "grpc: $(dpkg-query -W -f='${Version}' libgrpc-dev 2>/dev/null || echo '?') (core library version $(pkg-config --modversion grpc 2>/dev/null || echo '?'))"
  echo "hiredis: $(pkg-config --modversion hiredis 2>/dev/null || echo '?')"
  echo "libuv: $(pkg-config --modversion libuv 2>/dev/null || echo '?')"
  echo "protobuf-c: $(pkg-config --modversion libprotobuf-c 2>/dev/null || echo '?')"
  echo "redis-server: $(redis-server --version | sed 's/^Redis server //')"
  echo "ghz: ${GHZ:+$("$GHZ" --version 2>&1 | head -1)}"
  echo "h2load: ${H2LOAD:+$("$H2LOAD" --version 2>&1 | head -1)}"
  echo "gnuplot: ${GNUPLOT:+$("$GNUPLOT" --version 2>&1 | head -1)}"
  echo "mode: $([[ $quick == 1 ]] && echo quick || echo full); concurrency $CONC; warmup ${WARMUP}s; duration ${DUR}s; watch $WATCH_USERS streams ${WATCH_DUR}s; fill $FILL; booking ${BOOK_DUR}s"
  echo "wall time: $(($(date +%s) - T_START)) s"
} >"$OUT/machine.txt"

python3 - "$OUT" "$quick" <<'PY'
"""Checks every report (exit 1 naming what is wrong) and writes summary.md."""
import json, os, re, sys

out, quick = sys.argv[1], sys.argv[2] == "1"
problems = []

def load(name):
    path = os.path.join(out, name, "report.json")
    md = os.path.join(out, name, "report.md")
    try:
        with open(path) as f:
            d = json.load(f)
    except Exception as e:  # missing or malformed
        problems.append(f"{name}: report.json unreadable: {e}")
        return None
    if not os.path.exists(md) or os.path.getsize(md) < 200 or "## Summary" not in open(md).read():
        problems.append(f"{name}: report.md missing, empty or without its summary table")
    secs = d.get("sections") or []
    if not secs:
        problems.append(f"{name}: no sections")
    for s in secs:
        t = s.get("total", {})
        if not t.get("calls") or not t.get("ok"):
            problems.append(f"{name}/{s.get('name')}: no successful call")
        if not s.get("series"):
            problems.append(f"{name}/{s.get('name')}: empty time series")
        if not s.get("processes"):
            problems.append(f"{name}/{s.get('name')}: no process samples")
        for m in s.get("methods", []):
            lat = m.get("latency_ms", {})
            if m.get("ok") and not m.get("stream") and not (lat.get("p50", 0) > 0 and lat.get("p99", 0) >= lat.get("p50", 0)):
                problems.append(f"{name}/{s.get('name')}/{m.get('name')}: implausible percentiles {lat}")
    return d

rep = {n: load(n) for n in ["ping", "queue", "queue-token", "watch", "watch-many", "deep-queue", "booking"]}
ghz = None
if os.path.exists(os.path.join(out, "ghz", "ghz.json")):
    try:
        ghz = json.load(open(os.path.join(out, "ghz", "ghz.json")))
        if not ghz.get("rps"):
            problems.append("ghz: no requests per second in ghz.json")
    except Exception as e:
        problems.append(f"ghz: ghz.json unreadable: {e}")
ghz_cpu = {}
try:
    ghz_cpu = json.load(open(os.path.join(out, "ghz", "cpu.json")))
except Exception:
    pass
h2 = None
try:
    h2 = open(os.path.join(out, "h2load", "summary.md")).read()
except FileNotFoundError:
    pass
def sec(d, i=0):
    return (d or {}).get("sections", [{}])[i] if d and len(d.get("sections", [])) > i else {}

def proc(s, name):
    for p in s.get("processes", []):
        if p["name"] == name:
            return p
    return {}

def fmt(v, nd=0):
    if v is None:
        return "n/a"
    return f"{v:,.{nd}f}"

ping = sec(rep["ping"])
ping_rps = ping.get("total", {}).get("rps") or 0
ratio = lambda v: f"{v / ping_rps:.2f}x" if ping_rps and v else "-"
rows = []

def row(fig, s, target="", verdict=""):
    t = s.get("total", {})
    lat = t.get("latency_ms", {})
    srv, red, oth, gen = proc(s, "concert-server"), proc(s, "redis-server"), proc(s, "others"), proc(s, "concert-bench")
    rows.append(f"| {fig} | {fmt(t.get('rps'))} | {ratio(t.get('rps'))} | {fmt(lat.get('mean'), 2)} | "
                f"{fmt(lat.get('p99'), 2)} | {100 * (t.get('success_rate') or 0):.3f} % | "
                f"{fmt(srv.get('cpu_mean_pct'))} % / {fmt((srv.get('rss_max_bytes') or 0) / 1048576, 1)} MiB | "
                f"{fmt(red.get('cpu_mean_pct'))} % | {fmt(gen.get('cpu_mean_pct'))} % | {fmt(oth.get('cpu_mean_pct'))} % | "
                f"{target} | {verdict} |")

row("ping (Health/Check)", ping, "ceiling", "")
q = sec(rep["queue"])
if q:
    qt = q.get("total", {})
    met = (qt.get("rps") or 0) >= 40000 and (qt.get("latency_ms", {}).get("p99") or 1e9) < 10 and qt.get("errors") == 0
    row("queue (IssueToken + GetQueueStatus)", q, ">= 40,000 req/s, p99 < 10 ms, 0 failed", "met" if met else "**missed**")
qk = sec(rep["queue-token"])
if qk:
    row("queue, GetQueueStatus on one token", qk, "", "")
# Issue 13: the concert-bench queue path against its own ping, same run.
queue_vs_ping = None
if q and ping_rps:
    queue_vs_ping = (q.get("total", {}).get("rps") or 0) / ping_rps
deep = rep["deep-queue"] or {}
for i, s in enumerate(deep.get("sections", [])):
    row(s["name"], s, "", "")
w = sec(rep["watch"])
if w:
    row("watch (IssueToken + streams)", w, "", "")
wm = sec(rep["watch-many"])
if wm:
    rss = (proc(wm, "concert-server").get("rss_max_bytes") or 0) / 1e6
    row("watch-many (IssueToken + 100 tokens per WatchQueueStatuses stream)", wm,
        "10,000 watched tokens < 64 MB server RSS", ("met" if rss < 64 else "**missed**") if not quick else "")
bk = sec(rep["booking"])
bk_line = ""
if bk:
    f = bk.get("findings", {})
    paid, p99 = f.get("paid reservations/s") or 0, f.get("Pay -> COMPLETED p99 ms")
    failed = f.get("payments FAILED (measured window)") or 0
    if not f.get("payments COMPLETED (measured window)"):
        problems.append("booking: no payment COMPLETED in the measured window")
    met = paid >= 5000 and p99 is not None and p99 < 100 and failed == 0
    row("booking, all calls (IssueToken, GetQueueStatus, Charge, ReserveSeats, Pay)", bk,
        ">= 5,000 paid reservations/s, p99 Pay->COMPLETED < 100 ms", "met" if met else "**missed**")
    ms = {m["name"]: m for m in bk.get("methods", [])}
    lat = lambda n, p: (ms.get(n, {}).get("latency_ms") or {}).get(p)
    bk_line = (f"**booking (Kafka reservation/payment)**: **{fmt(paid)} paid reservations/s**, Pay -> COMPLETED "
               f"p50 {fmt(f.get('Pay -> COMPLETED p50 ms'), 1)} ms / p99 {fmt(p99, 1)} ms, "
               f"{fmt(f.get('payments COMPLETED (measured window)'))} COMPLETED, {fmt(failed)} FAILED; "
               f"ReserveSeats p50/p99 {fmt(lat('ReserveSeats', 'p50'), 2)}/{fmt(lat('ReserveSeats', 'p99'), 2)} ms, "
               f"Pay p50/p99 {fmt(lat('Pay', 'p50'), 2)}/{fmt(lat('Pay', 'p99'), 2)} ms; each paid reservation also "
               f"costs a token renewal (IssueToken -> ACTIVE -> Charge, p50 "
               f"{fmt(f.get('token renewal (IssueToken -> ACTIVE -> Charge) p50 ms'), 1)} ms, not in Pay -> COMPLETED). "
               f"Target >= 5,000/s and p99 < 100 ms: {'met' if met else '**missed**'}.\n")

lines = []
lines.append("# concert benchmark summary\n")
try:
    lines.append("```\n" + open(os.path.join(out, "machine.txt")).read().strip() + "\n```\n")
except Exception:
    pass
lines.append("All processes share the machine's cores: load generator, server and Redis. `others` is "
             "CPU used by anything else on the machine during the run (noise). CPU in % of one core.\n")
lines.append("| run | OK req/s | vs ping | mean ms | p99 ms | success | server CPU / RSS max | Redis CPU | "
             "generator CPU | others CPU | target | verdict |")
lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
lines += rows
lines.append("")
if bk_line:
    lines.append(bk_line)

# ghz vs concert-bench on the identical request.
if ghz and qk:
    g_rps = ghz.get("rps") or 0
    b_rps = qk.get("total", {}).get("rps") or 0
    gl = {d["percentage"]: d["latency"] / 1e6 for d in (ghz.get("latencyDistribution") or [])}
    codes = ghz.get("statusCodeDistribution") or {}
    lines.append("## ghz cross-check: GetQueueStatus on one token\n")
    lines.append("Same server instance, same token (identical request bytes), same concurrency, 4 connections "
                 "each, same warmup then the same measured duration, one tool at a time.\n")
    lines.append("| tool | req/s | vs ping | mean ms | p50 ms | p99 ms | status codes | server CPU | generator CPU |")
    lines.append("|---|---:|---:|---:|---:|---:|---|---:|---:|")
    kl = qk.get("total", {}).get("latency_ms", {})
    lines.append(f"| concert-bench | {fmt(b_rps)} | {ratio(b_rps)} | {fmt(kl.get('mean'), 2)} | {fmt(kl.get('p50'), 2)} | "
                 f"{fmt(kl.get('p99'), 2)} | {qk.get('total', {}).get('codes')} | "
                 f"{fmt(proc(qk, 'concert-server').get('cpu_mean_pct'))} % | {fmt(proc(qk, 'concert-bench').get('cpu_mean_pct'))} % |")
    lines.append(f"| ghz | {fmt(g_rps)} | {ratio(g_rps)} | {fmt((ghz.get('average') or 0) / 1e6, 2)} | "
                 f"{fmt(gl.get(50), 2)} | {fmt(gl.get(99), 2)} | {codes} | "
                 f"{fmt(ghz_cpu.get('concert_server_cpu_pct'))} % | {fmt(ghz_cpu.get('ghz_cpu_pct_approx'))} % |")
    errs = ghz.get("errorDistribution") or {}
    if errs and all("use of closed network connection" in k for k in errs):
        lines.append(f"\nghz's {sum(errs.values())} non-OK calls are its own calls cut off when its `-z` time ran out "
                     "(ghz closes its connections with calls in flight: 'use of closed network connection' on the "
                     "client side), not server errors; concert-bench cancels those and does not count them.")
    if b_rps:
        lines.append(f"\nghz / concert-bench throughput: **{g_rps / b_rps:.2f}x**. Both clients run on the same cores "
                     "as the server, so the cheaper client leaves more CPU to the server: the generator CPU column "
                     "is the cost of each tool per call.\n")

if queue_vs_ping is not None:
    lines.append(f"**concert-bench queue path / its own ping (same run): {queue_vs_ping:.2f}x** "
                 f"(target >= 0.9x: {'met' if queue_vs_ping >= 0.9 else '**missed**'}).\n")
if h2:
    lines.append("## h2load: cost per call against a bare gRPC C core echo server (issue 13)\n")
    lines.append("scripts/bench-h2load.sh, servers of its own; targets: GetQueueStatus >= 0.8x and Health/Check "
                 ">= 0.9x of echo.\n")
    lines.append(h2)
# Scenario findings.
for name in ["queue", "watch", "watch-many", "deep-queue", "booking"]:
    d = rep[name]
    if not d:
        continue
    kv = dict(d.get("findings", {}))
    for s in d.get("sections", []):
        for k, v in s.get("findings", {}).items():
            kv[f"{s['name']}: {k}"] = v
    if kv:
        lines.append(f"## {name} findings\n")
        lines.append("| finding | value |\n|---|---|")
        for k, v in kv.items():
            lines.append(f"| {k} | {fmt(v, 3) if isinstance(v, float) and not float(v).is_integer() else (fmt(v) if isinstance(v, (int, float)) else v)} |")
        lines.append("")

lines.append("Per-run details (percentiles, codes, per-second series, charts): `*/report.md`, `*/report.json`, "
             "`*/*.png`.\n")
if problems:
    lines.append("## PROBLEMS\n")
    lines += [f"- {p}" for p in problems]
with open(os.path.join(out, "summary.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
if problems:
    for p in problems:
        print(f"bench.sh: malformed or empty report: {p}", file=sys.stderr)
    sys.exit(1)
PY

say "done in $(($(date +%s) - T_START)) s: $OUT/summary.md"
cat "$OUT/summary.md"
