#!/usr/bin/env bash
# bench-cluster.sh: the Redis Cluster benchmark of issue 10. The same queue load
# (concert-bench queue over many concerts: IssueToken, then GetQueueStatus polls) against
# one redis-server and against a 3-primary Redis Cluster (scripts/redis-cluster.sh), on
# the same machine, in one sitting, runs interleaved single/cluster --rounds times. Each
# target gets its own concert-server (same flags). Reports throughput, latency, and CPU
# per call of the server and of Redis (every node, and in total), and the per-call cost
# ratio cluster / single. Everything runs on free 127.0.0.1 ports in a temp dir and is
# stopped by pid on exit.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/bench-cluster.sh [--concerts N] [--concurrency C] [--warmup S] [--duration S]
                                [--rounds N] [--primaries P] [--out DIR] [--build-dir DIR]
                                [--cluster-connections N] [--no-build] [--help]

  --concerts N     concerts the users spread over (default 60; they land on every primary)
  --concurrency C  calls in flight (default 64)
  --warmup S       seconds not measured (default 2)
  --duration S     measured seconds per run (default 10)
  --rounds N       single/cluster pairs (default 2)
  --primaries P    primaries of the cluster (default 3; no replicas: the same work as the
                   single node, so the ratio is the routing cost)
  --out DIR        results (default bench-out/cluster-<timestamp>)
  --build-dir DIR  the build to measure (default build-bench), RelWithDebInfo
  --cluster-connections N
                   Redis connections per primary of the cluster's server (default: the
                   server's default, as for the single node; 1 keeps the total near the
                   single node's)
  --no-build       use the binaries already there

Writes summary.md and summary.json; exit 0 when every run produced a report with
successful calls and no failed one, 1 otherwise, 2 on a usage error.
EOF
}

CONCERTS=60 CONC=64 WARMUP=2 DUR=10 ROUNDS=2 PRIMARIES=3 OUT="" BUILD="${CONCERT_BENCH_BUILD_DIR:-build-bench}" build=1 CL_CONNS=""
need() { [[ $# -ge 2 ]] || { echo "bench-cluster.sh: $1 needs a value" >&2; exit 2; }; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --concerts) need "$@"; CONCERTS="$2"; shift ;;
    --concurrency) need "$@"; CONC="$2"; shift ;;
    --warmup) need "$@"; WARMUP="$2"; shift ;;
    --duration) need "$@"; DUR="$2"; shift ;;
    --rounds) need "$@"; ROUNDS="$2"; shift ;;
    --primaries) need "$@"; PRIMARIES="$2"; shift ;;
    --out) need "$@"; OUT="$2"; shift ;;
    --build-dir) need "$@"; BUILD="$2"; shift ;;
    --cluster-connections) need "$@"; CL_CONNS="$2"; shift ;;
    --no-build) build=0 ;;
    *) echo "bench-cluster.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for v in "$CONCERTS" "$CONC" "$WARMUP" "$DUR" "$ROUNDS" "$PRIMARIES" ${CL_CONNS:+"$CL_CONNS"}; do
  [[ "$v" =~ ^[0-9]+$ ]] || { echo "bench-cluster.sh: options take numbers (see --help)" >&2; exit 2; }
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[[ "$BUILD" == /* ]] || BUILD="$ROOT/$BUILD"
[[ -n "$OUT" ]] || OUT="$ROOT/bench-out/cluster-$(date -u +%Y%m%dT%H%M%SZ)"
[[ "$OUT" == /* ]] || OUT="$ROOT/$OUT"
mkdir -p "$OUT"
# shellcheck source=lib/proc.sh
source "$ROOT/scripts/lib/proc.sh"

TMP="" REDIS_PID="" SERVER_PID="" CHILD_PID="" CL_DIR=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pids "$CHILD_PID" "$SERVER_PID" "$REDIS_PID"
  [[ -n "$CL_DIR" && -d "$CL_DIR" ]] && "$ROOT/scripts/redis-cluster.sh" stop --dir "$CL_DIR" >/dev/null 2>&1
  bench_finish bench-cluster.sh "$rc"
}
trap cleanup EXIT
trap 'echo "bench-cluster.sh: interrupted" >&2; exit 130' INT
trap 'exit 143' TERM
die() { echo "bench-cluster.sh: $*" >&2; exit 1; }
say() { printf '\n== %s\n' "$*" >&2; }

TMP="$(mktemp -d -t concert-bench-cluster.XXXXXX)"
if ((build)); then
  say "build (RelWithDebInfo) in ${BUILD#"$ROOT"/}"
  build_release "$BUILD" "$TMP/build.log" || die "build failed"
fi
for x in client/concert-bench server/concert-server client/concertctl; do
  [[ -x "$BUILD/$x" ]] || die "$BUILD/$x is missing (build it first)"
done
{
  echo "build: $BUILD"
  echo "nproc: $(nproc); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "concert-bench queue --concerts $CONCERTS --polls 10 --concurrency $CONC, warmup ${WARMUP}s, duration ${DUR}s, rounds $ROUNDS"
  echo "single: one redis-server; cluster: $PRIMARIES primaries, no replicas (scripts/redis-cluster.sh)${CL_CONNS:+, $CL_CONNS Redis connection(s) per primary}"
} >"$OUT/machine.txt"

# ---- the two Redis targets ----
REDIS_PORT="$(free_port)"
start_redis "$REDIS_PORT" "$TMP" || die "redis-server did not start"
CL_DIR="$TMP/cluster"
say "redis cluster: $PRIMARIES primaries"
SEEDS="$("$ROOT/scripts/redis-cluster.sh" start --dir "$CL_DIR" --primaries "$PRIMARIES" --replicas 0 2>"$TMP/cluster.log")" \
  || { cat "$TMP/cluster.log" >&2; die "redis-cluster.sh start failed"; }
declare -A URL PIDS PORTS
URL[single]="redis://127.0.0.1:$REDIS_PORT"
PIDS[single]="redis=$REDIS_PID"
PORTS[single]="$REDIS_PORT"
URL[cluster]="redis-cluster://$SEEDS"
PIDS[cluster]=""
PORTS[cluster]=""
for ((n = 1; n <= PRIMARIES; n++)); do
  PIDS[cluster]+=" redis$n=$(cat "$CL_DIR/node$n.pid")"
  PORTS[cluster]+=" $("$ROOT/scripts/redis-cluster.sh" port --dir "$CL_DIR" --node "$n")"
done

ADMIN="bench-$$-$RANDOM"
BASE="bc$RANDOM"
# run_one TARGET NAME: a fresh server on TARGET, the concerts, one concert-bench run.
run_one() {
  local target="$1" name="$2" i port p
  local dir="$OUT/$name-$target"
  mkdir -p "$dir"
  port="$(free_port)"
  local extra=()
  [[ "$target" == cluster && -n "$CL_CONNS" ]] && extra=(--redis-connections "$CL_CONNS")
  env -u CONCERT_KAFKA -u CONCERT_METRICS -u CONCERT_ADMIN_KEY "$BUILD/server/concert-server" \
    --listen "127.0.0.1:$port" --redis "${URL[$target]}" --admin-key "$ADMIN" --admit-rate 0 \
    --rate-user 0 --rate-peer 0 "${extra[@]}" 2>"$TMP/server-$name-$target.log" &
  SERVER_PID=$!
  for ((i = 0; ; i++)); do
    "$BUILD/client/concertctl" --server "127.0.0.1:$port" --timeout-ms 500 health >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 5 "$TMP/server-$name-$target.log" >&2; die "concert-server exited at start"; }
    ((i < 150)) || die "concert-server on $target was not SERVING within 15 s"
    sleep 0.1
  done
  for ((i = 0; i < CONCERTS; i++)); do
    "$BUILD/client/concertctl" --server "127.0.0.1:$port" --admin-key "$ADMIN" admin concert create \
      --concert "$BASE-$i" --name "bench $i" >/dev/null 2>&1 || true # exists after the first round
  done
  for p in ${PORTS[$target]}; do redis-cli -h 127.0.0.1 -p "$p" config resetstat >/dev/null; done
  local watch=(--watch-pid "concert-server=$SERVER_PID")
  for p in ${PIDS[$target]}; do watch+=(--watch-pid "$p"); done
  say "$name on $target: concert-bench queue --concerts $CONCERTS"
  "$BUILD/client/concert-bench" --server "127.0.0.1:$port" --concert "$BASE" "${watch[@]}" --out "$dir" \
    --concurrency "$CONC" --warmup "$WARMUP" --duration "$DUR" queue --concerts "$CONCERTS" --polls 10 \
    >"$dir/stdout.md" 2>"$dir/progress.log" &
  CHILD_PID=$!
  local rc=0
  wait "$CHILD_PID" || rc=$?
  CHILD_PID=""
  for p in ${PORTS[$target]}; do
    { echo "# 127.0.0.1:$p"; redis-cli -h 127.0.0.1 -p "$p" info commandstats; } >>"$dir/redis-commandstats.txt" 2>/dev/null
  done
  stop_pid "$SERVER_PID"; SERVER_PID=""
  cp -f "$TMP/server-$name-$target.log" "$dir/server.log" 2>/dev/null || true
  ((rc == 0)) || die "$name/$target: concert-bench exited $rc (see $dir/progress.log)"
}

for ((round = 1; round <= ROUNDS; round++)); do
  run_one single "r$round"
  run_one cluster "r$round"
done

python3 - "$OUT" <<'PY'
"""Checks every report and writes summary.md: per run, and the cluster/single ratio."""
import glob, json, os, re, sys

out = sys.argv[1]
rows, problems = [], []
for d in sorted(glob.glob(os.path.join(out, "r*-*")), key=os.path.getmtime):
    name = os.path.basename(d)
    target = name.split("-", 1)[1]
    try:
        s = json.load(open(os.path.join(d, "report.json")))["sections"][0]
    except Exception as e:
        problems.append(f"{name}: report.json unreadable: {e}")
        continue
    tot = s.get("total", {})
    rps = tot.get("ok_per_s") or tot.get("rps") or 0
    calls, ok = tot.get("calls", 0), tot.get("ok", 0)
    if not ok:
        problems.append(f"{name}: no successful call")
    if calls and calls != ok:
        problems.append(f"{name}: {calls - ok} failed calls")
    pr = {p["name"]: p.get("cpu_mean_pct") or 0.0 for p in s.get("processes", [])}
    redis = {k: v for k, v in pr.items() if k.startswith("redis")}
    us = lambda pct: 1e4 * pct / rps if rps else 0.0  # CPU microseconds per call
    lat = tot.get("latency_ms") or {}
    rows.append({"run": name, "target": target, "rps": rps, "p50": lat.get("p50"), "p99": lat.get("p99"),
                 "server_us": us(pr.get("concert-server", 0)), "redis_us": us(sum(redis.values())),
                 "redis_nodes_pct": redis, "others": pr.get("others", 0), "failed": calls - ok})
fmt = lambda v, nd=0: "n/a" if v is None else f"{v:,.{nd}f}"
lines = ["# Redis Cluster benchmark (scripts/bench-cluster.sh)\n", "```", open(os.path.join(out, "machine.txt")).read().strip(), "```\n",
         "CPU per call = process CPU / successful calls per second (microseconds); Redis = every node summed.\n",
         "| run | req/s | p50 / p99 ms | server us/call | Redis us/call | Redis CPU % per node | others % | failed |",
         "|---|---:|---|---:|---:|---|---:|---:|"]
for r in rows:
    nodes = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["redis_nodes_pct"].items()))
    lines.append(f"| {r['run']} | {fmt(r['rps'])} | {fmt(r['p50'], 2)} / {fmt(r['p99'], 2)} | {fmt(r['server_us'], 1)} | "
                 f"{fmt(r['redis_us'], 1)} | {nodes} | {fmt(r['others'])} | {r['failed']} |")
def mean(target, key):
    v = [r[key] for r in rows if r["target"] == target]
    return sum(v) / len(v) if v else 0.0
if any(r["target"] == "single" for r in rows) and any(r["target"] == "cluster" for r in rows):
    cs, cc = mean("single", "server_us") + mean("single", "redis_us"), mean("cluster", "server_us") + mean("cluster", "redis_us")
    lines += ["", f"Per-call cost (server + Redis CPU), mean over rounds: single {cs:.1f} us, cluster {cc:.1f} us: "
              f"**{cc / cs if cs else 0:.2f}x** (target <= 1.2x). Redis alone: {mean('single', 'redis_us'):.1f} vs "
              f"{mean('cluster', 'redis_us'):.1f} us; server alone: {mean('single', 'server_us'):.1f} vs "
              f"{mean('cluster', 'server_us'):.1f} us."]
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
json.dump(rows, open(os.path.join(out, "summary.json"), "w"), indent=1)
print("\n".join(lines))
if problems:
    print("\n".join("bench-cluster.sh: " + p for p in problems), file=sys.stderr)
    sys.exit(1)
PY
