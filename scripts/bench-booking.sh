#!/usr/bin/env bash
# bench-booking.sh: the booking path benchmark (concert-bench booking: IssueToken ->
# ACTIVE -> Charge, ReserveSeats, Pay, WatchPayment until COMPLETED) against private
# services: one redis-server, one one-node Kafka (scripts/kafka.sh), and for every run
# a fresh payment-consumer and concert-server, all on free 127.0.0.1 ports, state in a
# temp dir, stopped by pid on exit. Closed loop at each --concurrency, then (if given)
# an open-loop ramp of arrival rates (--rate), and optionally A/B against a second build
# (--ab DIR: runs alternate A, B, A, B... in one sitting). Writes report.json per run
# and summary.md: paid reservations/s, Pay -> COMPLETED percentiles, and CPU per paid
# reservation of every process (server, consumer, Redis, Kafka, generator, others).
# scripts/bench.sh calls it for its booking phase.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/bench-booking.sh [--build-dir DIR] [--ab DIR] [--concurrency LIST]
                                [--rate LIST] [--warmup S] [--duration S] [--rounds N]
                                [--out DIR] [--no-build] [--consumer-args ARGS]
                                [--server-args ARGS] [--help]

  --build-dir DIR     build A (default build-bench, or $CONCERT_BENCH_BUILD_DIR); built
                      RelWithDebInfo unless --no-build
  --ab DIR            build B: a second build dir (already built, e.g. main's code built
                      in /tmp); every measurement runs A then B, --rounds times
  --concurrency LIST  closed-loop virtual users, comma separated (default 64,512)
  --rate LIST         open-loop ramp: paid-reservation arrivals per second, comma
                      separated, run in order (default: none). Needs a concert-bench
                      with `booking --arrival-rate` (skipped for a build without it)
  --warmup S          seconds not measured (default 2)
  --duration S        measured seconds per run (default 10)
  --rounds N          repeat every A/B pair N times (default 1)
  --warmup-run S      seconds of the unrecorded first run that warms the broker and
                      its JIT (default 8; 0: none)
  --out DIR           results here (default bench-out/booking-<timestamp>)
  --no-build          use the binaries already in --build-dir
  --same-generator    every run uses build A's concert-bench (so build B, say main's
                      code, can be driven by the open-loop ramp too); default: each
                      build its own
  --consumer-args A   extra flags for payment-consumer (both builds), one string
  --server-args A     extra flags for concert-server (both builds), one string
  --consumer-args-b A, --server-args-b A
                      flags for build B's runs instead (for A/B of settings: give the
                      same directory to --build-dir and --ab)
  --help              this help

Exit status: 0 when every run produced a well-formed report with COMPLETED payments,
1 otherwise (reason printed), 2 usage error.
EOF
}

BUILD="${CONCERT_BENCH_BUILD_DIR:-build-bench}"
AB=""
CONCS="64,512"
RATES=""
WARMUP=2
DUR=10
ROUNDS=1
WARMUP_RUN=8
OUT=""
build=1
CONSUMER_ARGS=""
SERVER_ARGS=""
SAME_GEN=0
CONSUMER_ARGS_B="__same__"
SERVER_ARGS_B="__same__"
need() { [[ $# -ge 2 ]] || { echo "bench-booking.sh: $1 needs a value" >&2; exit 2; }; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --build-dir) need "$@"; BUILD="$2"; shift ;;
    --ab) need "$@"; AB="$2"; shift ;;
    --concurrency) need "$@"; CONCS="$2"; shift ;;
    --rate) need "$@"; RATES="$2"; shift ;;
    --warmup) need "$@"; WARMUP="$2"; shift ;;
    --duration) need "$@"; DUR="$2"; shift ;;
    --rounds) need "$@"; ROUNDS="$2"; shift ;;
    --warmup-run) need "$@"; WARMUP_RUN="$2"; shift ;;
    --out) need "$@"; OUT="$2"; shift ;;
    --no-build) build=0 ;;
    --same-generator) SAME_GEN=1 ;;
    --consumer-args) need "$@"; CONSUMER_ARGS="$2"; shift ;;
    --server-args) need "$@"; SERVER_ARGS="$2"; shift ;;
    --consumer-args-b) need "$@"; CONSUMER_ARGS_B="$2"; shift ;;
    --server-args-b) need "$@"; SERVER_ARGS_B="$2"; shift ;;
    *) echo "bench-booking.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for v in "$WARMUP" "$DUR" "$ROUNDS" "$WARMUP_RUN"; do
  [[ "$v" =~ ^[0-9]+$ ]] || { echo "bench-booking.sh: --warmup/--duration/--rounds take numbers" >&2; exit 2; }
done
[[ "$CONCS$RATES" =~ ^[0-9,]*$ ]] || { echo "bench-booking.sh: --concurrency/--rate take comma-separated numbers" >&2; exit 2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[[ "$BUILD" == /* ]] || BUILD="$ROOT/$BUILD"
[[ -z "$AB" || "$AB" == /* ]] || AB="$ROOT/$AB"
[[ -n "$OUT" ]] || OUT="$ROOT/bench-out/booking-$(date -u +%Y%m%dT%H%M%SZ)"
[[ "$OUT" == /* ]] || OUT="$ROOT/$OUT"
mkdir -p "$OUT"

# shellcheck source=lib/proc.sh
source "$ROOT/scripts/lib/proc.sh"

TMP=""
REDIS_PID=""
SERVER_PID=""
CONSUMER_PID=""
CHILD_PID=""
KAFKA_DIR=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$CHILD_PID"
  stop_pid "$SERVER_PID"
  stop_pid "$CONSUMER_PID"
  if [[ -n "$KAFKA_DIR" && -d "$KAFKA_DIR" ]]; then
    "$ROOT/scripts/kafka.sh" stop --dir "$KAFKA_DIR" >/dev/null 2>&1 || true
    cp -f "$KAFKA_DIR"/node1/logs/server.log "$TMP/kafka-server.log" 2>/dev/null || true
  fi
  stop_pid "$REDIS_PID"
  bench_finish bench-booking.sh "$rc"
}
trap cleanup EXIT
trap 'echo "bench-booking.sh: interrupted" >&2; exit 130' INT
trap 'exit 143' TERM
die() { echo "bench-booking.sh: $*" >&2; exit 1; }
say() { printf '\n== %s\n' "$*" >&2; }


TMP="$(mktemp -d -t concert-bench-booking.XXXXXX)"

if ((build)); then
  say "build A (RelWithDebInfo) in ${BUILD#"$ROOT"/}"
  build_release "$BUILD" "$TMP/build.log" || die "build failed"
fi
BUILDS=("$BUILD")
LABELS=("A")
[[ -n "$AB" ]] && BUILDS+=("$AB") && LABELS+=("B")
for b in "${BUILDS[@]}"; do
  for x in client/concert-bench server/concert-server client/concertctl consumers/payment-consumer; do
    [[ -x "$b/$x" ]] || die "$b/$x is missing (build it first)"
  done
done
{
  echo "A: $BUILD"
  [[ -n "$AB" ]] && echo "B: $AB"
  echo "nproc: $(nproc); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "warmup ${WARMUP}s, duration ${DUR}s, rounds $ROUNDS, concurrency $CONCS, rates ${RATES:-none}"
  echo "consumer args: ${CONSUMER_ARGS:-none}; server args: ${SERVER_ARGS:-none}; B: consumer ${CONSUMER_ARGS_B/__same__/same} server ${SERVER_ARGS_B/__same__/same}; generator: $([[ $SAME_GEN == 1 ]] && echo "build A's for every run" || echo "each build's own")"
} >"$OUT/machine.txt"

# ---- shared services: Redis and Kafka ------------------------------------------------
REDIS_PORT="$(free_port)"
start_redis "$REDIS_PORT" "$TMP" || die "redis-server did not start"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
KAFKA_DIR="$TMP/kafka"
say "kafka: one node (scripts/kafka.sh, temp dir)"
"$ROOT/scripts/kafka.sh" start --nodes 1 --dir "$KAFKA_DIR" >"$TMP/kafka-start.log" 2>&1 \
  || { tail -n 10 "$TMP/kafka-start.log" >&2; die "scripts/kafka.sh start failed"; }
BROKERS="$(cat "$KAFKA_DIR/bootstrap")"
KAFKA_PID="$(cat "$KAFKA_DIR/node1.pid")"

N_RUN=0
# run_one BUILD LABEL NAME BENCH-ARGS...: fresh consumer + server of BUILD, one bench run.
run_one() {
  local b="$1" label="$2" name="$3" i port
  shift 3
  N_RUN=$((N_RUN + 1))
  local dir="$OUT/$name-$label"
  mkdir -p "$dir"
  local cargs="$CONSUMER_ARGS" sargs="$SERVER_ARGS"
  if [[ "$label" == B ]]; then
    [[ "$CONSUMER_ARGS_B" != __same__ ]] && cargs="$CONSUMER_ARGS_B"
    [[ "$SERVER_ARGS_B" != __same__ ]] && sargs="$SERVER_ARGS_B"
  fi
  # shellcheck disable=SC2086 # the extra args are one string of flags
  env -u CONCERT_KAFKA -u CONCERT_REDIS -u CONCERT_METRICS "$b/consumers/payment-consumer" --redis "$REDIS_URL" \
    --kafka "$BROKERS" --create-topics $cargs 2>"$TMP/consumer-$N_RUN.log" &
  CONSUMER_PID=$!
  port="$(free_port)"
  local admin="bench-$$-$RANDOM"
  # A load generator is one peer making thousands of calls: no abuse limits (builds
  # that have them).
  if "$b/server/concert-server" --help 2>&1 | grep -q -- '--rate-peer'; then sargs="--rate-user 0 --rate-peer 0 $sargs"; fi
  # shellcheck disable=SC2086
  env -u CONCERT_KAFKA -u CONCERT_METRICS -u CONCERT_ADMIN_KEY "$b/server/concert-server" --listen "127.0.0.1:$port" \
    --redis "$REDIS_URL" --kafka "$BROKERS" --admin-key "$admin" $sargs 2>"$TMP/server-$N_RUN.log" &
  SERVER_PID=$!
  for ((i = 0; ; i++)); do
    "$b/client/concertctl" --server "127.0.0.1:$port" --timeout-ms 500 health >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 5 "$TMP/server-$N_RUN.log" >&2; die "concert-server exited at start"; }
    ((i < 150)) || die "concert-server was not SERVING within 15 s"
    sleep 0.1
  done
  for ((i = 0; ; i++)); do
    grep -q 'event=partitions_assigned' "$TMP/consumer-$N_RUN.log" 2>/dev/null && break
    kill -0 "$CONSUMER_PID" 2>/dev/null || { tail -n 5 "$TMP/consumer-$N_RUN.log" >&2; die "payment-consumer exited at start"; }
    ((i < 300)) || die "payment-consumer got no partitions within 30 s"
    sleep 0.1
  done
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config resetstat >/dev/null
  say "$name ($label: ${b#"$ROOT"/}): concert-bench booking $*"
  echo "$label $b: booking $*; consumer $cargs; server $sargs" >"$dir/args.txt"
  local gen="$b"
  ((SAME_GEN)) && gen="$BUILD"
  "$gen/client/concert-bench" --server "127.0.0.1:$port" --watch-pid "concert-server=$SERVER_PID" \
    --watch-pid "payment-consumer=$CONSUMER_PID" --watch-pid "redis-server=$REDIS_PID" \
    --watch-pid "kafka=$KAFKA_PID" --out "$dir" booking --admin-key "$admin" "$@" \
    >"$dir/stdout.md" 2>"$dir/progress.log" &
  CHILD_PID=$!
  local rc=0
  wait "$CHILD_PID" || rc=$?
  CHILD_PID=""
  tail -n 2 "$dir/progress.log" >&2 || true
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info commandstats >"$dir/redis-commandstats.txt" 2>/dev/null || true
  stop_pid "$SERVER_PID"; SERVER_PID=""
  stop_pid "$CONSUMER_PID"; CONSUMER_PID=""
  cp -f "$TMP/server-$N_RUN.log" "$dir/server.log" 2>/dev/null || true
  cp -f "$TMP/consumer-$N_RUN.log" "$dir/consumer.log" 2>/dev/null || true
  ((rc == 0)) || die "$name/$label: concert-bench exited $rc (see $dir/progress.log)"
}

# A cold broker needs seconds before it grants the first idempotent producer id and
# loads the group coordinator, and its JIT needs load to compile the hot paths: one
# short run, not recorded, so that measured runs start warm.
if ((WARMUP_RUN > 0)); then
  run_one "$BUILD" A warmup --concurrency 64 --warmup 0 --duration "$WARMUP_RUN"
  rm -rf "$OUT/warmup-A"
fi

IFS=, read -r -a CLIST <<<"$CONCS"
IFS=, read -r -a RLIST <<<"$RATES"
for ((round = 1; round <= ROUNDS; round++)); do
  for c in "${CLIST[@]}"; do
    [[ -n "$c" ]] || continue
    for k in "${!BUILDS[@]}"; do
      run_one "${BUILDS[$k]}" "${LABELS[$k]}" "c$c-r$round" --concurrency "$c" --warmup "$WARMUP" --duration "$DUR"
    done
  done
  for r in "${RLIST[@]}"; do
    [[ -n "$r" ]] || continue
    for k in "${!BUILDS[@]}"; do
      gen="${BUILDS[$k]}"
      ((SAME_GEN)) && gen="$BUILD"
      if "$gen/client/concert-bench" booking --help 2>&1 | grep -q -- '--arrival-rate'; then
        run_one "${BUILDS[$k]}" "${LABELS[$k]}" "rate$r-r$round" --arrival-rate "$r" --concurrency 4096 \
          --warmup "$WARMUP" --duration "$DUR"
      else
        echo "bench-booking.sh: ${BUILDS[$k]} has no booking --arrival-rate: ramp step $r skipped" >&2
      fi
    done
  done
done

python3 - "$OUT" <<'PY'
"""Checks every report and writes summary.md (one row per run)."""
import glob, json, os, sys

out = sys.argv[1]
rows, problems = [], []
procs = ["concert-server", "payment-consumer", "redis-server", "kafka", "concert-bench"]
for d in sorted(glob.glob(os.path.join(out, "*-[AB]")), key=lambda p: os.path.getmtime(p)):
    name = os.path.basename(d)
    try:
        rep = json.load(open(os.path.join(d, "report.json")))
        s = rep["sections"][0]
    except Exception as e:
        problems.append(f"{name}: report.json unreadable: {e}")
        continue
    f = s.get("findings", {})
    paid = f.get("paid reservations/s") or 0
    if not f.get("payments COMPLETED (measured window)"):
        problems.append(f"{name}: no payment COMPLETED in the measured window")
    pr = {p["name"]: p for p in s.get("processes", [])}
    cpu = {n: (pr.get(n, {}).get("cpu_mean_pct") or 0.0) for n in procs + ["others", "machine"]}
    per = {n: (10.0 * cpu[n] / paid if paid else 0.0) for n in procs}  # ms of CPU per paid reservation
    total = sum(per.values())
    ms = {m["name"]: m for m in s.get("methods", [])}
    calls = sum(m.get("ok", 0) for m in s.get("methods", []))
    rows.append({
        "run": name, "paid": paid, "p50": f.get("Pay -> COMPLETED p50 ms"), "p90": f.get("Pay -> COMPLETED p90 ms"),
        "p99": f.get("Pay -> COMPLETED p99 ms"), "failed": f.get("payments FAILED (measured window)") or 0,
        "pay_p99": (ms.get("Pay", {}).get("latency_ms") or {}).get("p99"),
        "cpu": cpu, "per": per, "total": total,
        "calls_per_paid": (calls / (s.get("total", {}).get("elapsed_s") or 1)) / paid if paid else 0,
    })
fmt = lambda v, nd=0: "n/a" if v is None else f"{v:,.{nd}f}"
lines = ["# booking benchmark\n", "```", open(os.path.join(out, "machine.txt")).read().strip(), "```\n",
         "CPU in % of one core (mean over the measured window); `ms/paid` = CPU milliseconds per paid "
         "reservation (process CPU / paid reservations per second). `others` = the machine's busy time "
         "minus the watched processes (other work on the machine: noise).\n",
         "| run | paid/s | Pay->COMPLETED p50 / p90 / p99 ms | FAILED | CPU % server / consumer / Redis / Kafka / "
         "generator / others / machine | ms/paid server / consumer / Redis / Kafka / generator | ms/paid total |",
         "|---|---:|---|---:|---|---|---:|"]
for r in rows:
    c, p = r["cpu"], r["per"]
    lines.append(f"| {r['run']} | {fmt(r['paid'])} | {fmt(r['p50'], 1)} / {fmt(r['p90'], 1)} / {fmt(r['p99'], 1)} | "
                 f"{fmt(r['failed'])} | " + " / ".join(fmt(c[n]) for n in procs + ["others", "machine"]) + " | " +
                 " / ".join(fmt(p[n], 3) for n in procs) + f" | {fmt(r['total'], 3)} |")
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
json.dump(rows, open(os.path.join(out, "summary.json"), "w"), indent=1)
print("\n".join(lines))
if problems:
    print("\n".join("bench-booking.sh: " + p for p in problems), file=sys.stderr)
    sys.exit(1)
PY
