#!/usr/bin/env bash
# bench-room.sh: what a waiting user costs inside Redis, build A against build B in one
# sitting (runs interleaved A B A B ..., a fresh redis-server and concert-server each):
#   - memory: concert-bench deep-queue --fill N --redis (Redis used_memory before and
#     after N users joined, per waiting user), then the scenario's queue-path phases;
#   - time: INFO commandstats and Redis' own CPU (utime+stime from /proc) over a
#     GetQueueStatus run (concert-bench queue, 64 users polling at the back of the
#     deep queue), divided by the calls.
#   scripts/bench-room.sh --a BUILD_A --b BUILD_B [--fill N] [--duration S] [--runs K]
#                         [--idle-ms MS] [--out DIR]
# BUILD_*: build directories holding server/concert-server, client/concert-bench and
# client/concertctl (e.g. build-rel, and main's code built in build-main). Defaults:
# --fill 1000000, --duration 10, --runs 1, --idle-ms 0 (the server flag: 0 keeps the
# users waiting during a long fill, as scripts/bench.sh runs it; give e.g. 600000 to
# count the idle bitmaps too), --out bench-out/room-<time>. Prints a Markdown table
# and writes it to OUT/summary.md with every run's reports; stops what it started (by
# pid) on exit, failure or Ctrl-C. Needs redis-server, redis-cli, python3.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
A="" B="" FILL=1000000 DUR=10 RUNS=1 IDLE=0 OUT=""
usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --a) A="$2"; shift ;;
    --b) B="$2"; shift ;;
    --fill) FILL="$2"; shift ;;
    --duration) DUR="$2"; shift ;;
    --runs) RUNS="$2"; shift ;;
    --idle-ms) IDLE="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    *) echo "bench-room: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ -n "$A" && -n "$B" ]] || { echo "bench-room: give --a BUILD and --b BUILD (see --help)" >&2; exit 2; }
for d in "$A" "$B"; do
  for bin in server/concert-server client/concert-bench client/concertctl; do
    [[ -x "$d/$bin" ]] || { echo "bench-room: $d/$bin is missing (build it first)" >&2; exit 2; }
  done
done
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || { echo "bench-room: needs redis-server and redis-cli" >&2; exit 2; }
OUT="${OUT:-$ROOT/bench-out/room-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
# shellcheck source=lib/proc.sh
source "$ROOT/scripts/lib/proc.sh"

REDIS_PID="" SERVER_PID="" CHILD_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in "$CHILD_PID" "$SERVER_PID" "$REDIS_PID"; do stop_pid "$p"; done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
say() { printf 'bench-room: %s\n' "$*" >&2; }
die() { say "FATAL: $*"; exit 1; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# one_run LABEL BUILD RUN: a fresh Redis and server, the fill, then the timed run.
one_run() {
  local label="$1" build="$2" run="$3" dir="$OUT/$1-$3"
  mkdir -p "$dir"
  local rport sport key="room-$$-$RANDOM"
  rport="$(free_port)"
  redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --logfile "$dir/redis.log" &
  REDIS_PID=$!
  local i
  for ((i = 0; i < 100; i++)); do [[ "$(redis-cli -p "$rport" ping 2>/dev/null || true)" == PONG ]] && break; sleep 0.05; done
  local R=(redis-cli -p "$rport")
  sport="$(free_port)"
  env -u CONCERT_KAFKA -u CONCERT_METRICS -u CONCERT_ADMIN_KEY "$build/server/concert-server" \
    --listen "127.0.0.1:$sport" --redis "redis://127.0.0.1:$rport" --admin-key "$key" --rate-user 0 --rate-peer 0 \
    --admit-rate 0 --idle-timeout-ms "$IDLE" 2>"$dir/server.log" &
  SERVER_PID=$!
  local ctl=("$build/client/concertctl" --server "127.0.0.1:$sport")
  for ((i = 0; i < 100; i++)); do "${ctl[@]}" --timeout-ms 500 health >/dev/null 2>&1 && break; sleep 0.1; done
  "${ctl[@]}" --admin-key "$key" admin concert create --concert deep --name deep >/dev/null || die "$label: create concert"
  "${ctl[@]}" --admin-key "$key" admin concert create --concert deep-empty --name empty >/dev/null || die "$label: create concert"
  say "$label run $run: deep-queue --fill $FILL"
  "$build/client/concert-bench" --server "127.0.0.1:$sport" --watch-pid "concert-server=$SERVER_PID" \
    --watch-pid "redis-server=$REDIS_PID" --out "$dir/deep" deep-queue --concert deep --fill "$FILL" \
    --redis "redis://127.0.0.1:$rport" --duration "$DUR" >"$dir/deep.md" 2>"$dir/deep.log" &
  CHILD_PID=$!
  wait "$CHILD_PID" || die "$label: deep-queue failed (see $dir/deep.log)"
  CHILD_PID=""
  "${R[@]}" info memory >"$dir/memory.txt"
  "${R[@]}" memory usage "cc:{deep}:q:wait" >"$dir/zset-bytes.txt" || true
  say "$label run $run: GetQueueStatus at the back of the deep queue"
  "${R[@]}" config resetstat >/dev/null
  local t0
  t0="$(ticks "$REDIS_PID")"
  "$build/client/concert-bench" --server "127.0.0.1:$sport" --watch-pid "concert-server=$SERVER_PID" \
    --watch-pid "redis-server=$REDIS_PID" --out "$dir/status" --json queue --concert deep --duration "$DUR" \
    >"$dir/status.json" 2>"$dir/status.log" &
  CHILD_PID=$!
  wait "$CHILD_PID" || die "$label: queue run failed (see $dir/status.log)"
  CHILD_PID=""
  echo "$(( $(ticks "$REDIS_PID") - t0 ))" >"$dir/redis-ticks.txt"
  "${R[@]}" info commandstats >"$dir/commandstats.txt"
  stop_pid "$SERVER_PID"; SERVER_PID=""
  stop_pid "$REDIS_PID"; REDIS_PID=""
}

for ((k = 1; k <= RUNS; k++)); do
  one_run A "$A" "$k"
  one_run B "$B" "$k"
done

python3 - "$OUT" "$RUNS" "$(getconf CLK_TCK)" "$A" "$B" "$FILL" "$IDLE" <<'PY' | tee "$OUT/summary.md"
import json, os, re, sys
out, runs, hz, a, b, fill, idle = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]

def kv(path, key):
    txt = open(path).read()
    m = re.search(r'"%s"\s*:\s*\{[^}]*"value"\s*:\s*([0-9.e+-]+)' % re.escape(key), txt)
    return float(m.group(1)) if m else None

def calls(status):
    """GetQueueStatus calls of the whole run (warmup included, as the commandstats are)
    and the IssueToken calls (one per virtual user)."""
    sec = json.load(open(status))["sections"][0]
    seen = sec["findings"].get("GetQueueStatus states seen (whole run incl. warmup)", "")
    return sum(int(x) for x in re.findall(r"(\d+)", seen)), int(sec.get("users", 0))

def cstats(path):
    s = {}
    for line in open(path):
        m = re.match(r"cmdstat_(\w+):calls=(\d+),usec=(\d+)", line)
        if m: s[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return s

print("# bench-room: %s (A) vs %s (B), %s users, --idle-timeout-ms %s\n" % (a, b, fill, idle))
print("| run | Redis bytes per waiting user | GetQueueStatus calls | Redis usec per call (commandstats, all commands) | Redis CPU usec per call (/proc) | commands (calls, usec/call) |")
print("|---|---:|---:|---:|---:|---|")
for k in range(1, runs + 1):
    for label in ("A", "B"):
        d = os.path.join(out, "%s-%d" % (label, k))
        mem = None
        for line in open(os.path.join(d, "deep.md")):
            if "Redis memory per waiting user" in line:
                m = re.search(r"([0-9][0-9,.]*)\s*bytes", line)
                if m: mem = float(m.group(1).replace(",", ""))
        st = cstats(os.path.join(d, "commandstats.txt"))
        gq, joins = calls(os.path.join(d, "status.json"))
        total = gq + joins
        usec = sum(u for c, u in st.values())
        ticks = int(open(os.path.join(d, "redis-ticks.txt")).read())
        cmds = ", ".join("%s %d (%.2f)" % (c, v[0], v[1] / max(v[0], 1)) for c, v in sorted(st.items(), key=lambda x: -x[1][1])[:6])
        print("| %s%d | %s | %d | %.2f | %.2f | %s |" % (label, k, "%.1f" % mem if mem else "?", gq,
              usec / max(total, 1), ticks / hz * 1e6 / max(total, 1), cmds))
PY
