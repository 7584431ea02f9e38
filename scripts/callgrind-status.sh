#!/usr/bin/env bash
# callgrind-status.sh: instructions per GetQueueStatus (or Health/Check: --method health)
# in concert-server (issue 13), the
# noise-free figure of docs/PERFORMANCE.md "Server cost per call". Starts its own
# redis-server and one concert-server under `valgrind --tool=callgrind` on free
# 127.0.0.1 ports (state in a temp dir, stopped by pid on exit), creates a concert and
# one waiting user's token, warms up with h2load, zeroes the counters, runs a fixed
# h2load line of GetQueueStatus, dumps the counters and prints instructions per call
# (every thread of the server) and the top functions (inclusive, per call). --echo runs
# concert-bench-echo (the bare gRPC C core reference) the same way instead. --hold-streams N
# keeps N idle WatchQueueStatus streams open (concert-bench watch) while it measures.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/callgrind-status.sh [--server BIN] [--build-dir DIR] [--requests N]
                                   [--warmup N] [--method status|health] [--echo]
                                   [--server-args 'ARGS'] [--hold-streams N] [--out DIR]
                                   [--help]

Runs concert-server under valgrind --tool=callgrind, h2load -c 8 -m 64 -n WARMUP of
GetQueueStatus (one token of a waiting user), callgrind_control --zero, then
h2load -c 8 -m 64 -n N, callgrind_control --dump, and prints Ir / N.

Options:
  --server BIN     concert-server to measure (default BUILD/server/concert-server)
  --build-dir DIR  release build with concertctl (default build-bench); not built here
  --requests N     measured requests (default 20000)
  --warmup N       requests before the counters are zeroed (default 2000)
  --method M       status (default): GetQueueStatus of one waiting user's token;
                   health: Health/Check of the server ("" service, answered SERVING)
  --echo           measure concert-bench-echo (BUILD/client/concert-bench-echo, the
                   bare gRPC C core reference) under the same valgrind and h2load line
                   instead of concert-server (status: a made-up token of the same
                   length as a real one, echoed back; no Redis)
  --server-args A  extra concert-server flags, split on spaces (e.g.
                   '--keepalive-time-ms 0' or '--grpc-args grpc.minimal_stack=1'), to
                   measure what a setting costs per call
  --hold-streams N hold N idle WatchQueueStatus streams open while measuring: before the
                   warm-up, BUILD/client/concert-bench watch joins N users to a concert
                   of their own and watches them until the end (the server then runs
                   with --watch-interval-ms 20000, so the streams stay idle); what each
                   unary call pays for the held streams (gRPC core's walk of a queue's
                   outstanding tags). Not with --echo
  --out DIR        output folder (default bench-out/callgrind-<UTC timestamp>): the dump
                   (callgrind.run), callgrind_annotate's inclusive listing, the logs
  --help           this help

Every answer is checked: h2load's succeeded count must equal the requests.
Exit status: 0 ok, 1 a step failed, 2 usage error.
EOF
}

BUILD="build-bench"
SERVER=""
REQS=20000
WARM=2000
OUT=""
METHOD=status
ECHO=0
SERVER_ARGS=""
HOLD=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --server) [[ $# -ge 2 ]] || { echo "callgrind-status.sh: --server needs a binary" >&2; exit 2; }; SERVER="$2"; shift ;;
    --build-dir) [[ $# -ge 2 ]] || { echo "callgrind-status.sh: --build-dir needs a value" >&2; exit 2; }; BUILD="$2"; shift ;;
    --requests) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ && "$2" -ge 100 ]] || { echo "callgrind-status.sh: --requests needs a number >= 100" >&2; exit 2; }; REQS="$2"; shift ;;
    --warmup) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || { echo "callgrind-status.sh: --warmup needs a number" >&2; exit 2; }; WARM="$2"; shift ;;
    --method) [[ $# -ge 2 && "$2" =~ ^(status|health)$ ]] || { echo "callgrind-status.sh: --method is status or health" >&2; exit 2; }; METHOD="$2"; shift ;;
    --echo) ECHO=1 ;;
    --server-args) [[ $# -ge 2 ]] || { echo "callgrind-status.sh: --server-args needs a value" >&2; exit 2; }; SERVER_ARGS="$2"; shift ;;
    --hold-streams) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || { echo "callgrind-status.sh: --hold-streams needs a number" >&2; exit 2; }; HOLD="$2"; shift ;;
    --out) [[ $# -ge 2 ]] || { echo "callgrind-status.sh: --out needs a value" >&2; exit 2; }; OUT="$2"; shift ;;
    *) echo "callgrind-status.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

((ECHO && HOLD)) && { echo "callgrind-status.sh: --hold-streams needs concert-server, not --echo" >&2; exit 2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[[ "$BUILD" == /* ]] || BUILD="$ROOT/$BUILD"
SERVER="${SERVER:-$BUILD/server/concert-server}"
CTL="$BUILD/client/concertctl"
BENCH="$BUILD/client/concert-bench"
[[ -z "$OUT" ]] && OUT="$ROOT/bench-out/callgrind-$(date -u +%Y%m%dT%H%M%SZ)"
[[ "$OUT" == /* ]] || OUT="$ROOT/$OUT"
mkdir -p "$OUT"

# shellcheck source=lib/proc.sh
source "$ROOT/scripts/lib/proc.sh"

die() { echo "callgrind-status.sh: $*" >&2; exit 1; }
for tool in valgrind callgrind_control callgrind_annotate h2load redis-server redis-cli python3; do
  command -v "$tool" >/dev/null || die "'$tool' not found; run scripts/install-deps.sh"
done
ECHO_BIN="$BUILD/client/concert-bench-echo"
if ((ECHO)); then
  [[ -x "$ECHO_BIN" ]] || die "$ECHO_BIN is missing (build it first)"
else
  for b in "$SERVER" "$CTL"; do [[ -x "$b" ]] || die "$b is missing (build it first)"; done
  ((HOLD == 0)) || [[ -x "$BENCH" ]] || die "$BENCH is missing (build it first)"
fi

TMP=""
REDIS_PID=""
SERVER_PID=""
HOLD_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$HOLD_PID"
  stop_pid "$SERVER_PID"
  stop_pid "$REDIS_PID"
  if [[ -n "$TMP" && -d "$TMP" ]]; then
    cp -f "$TMP"/*.log "$OUT/" 2>/dev/null || true
    rm -rf -- "$TMP"
  fi
  ((rc == 0)) || echo "callgrind-status.sh: FAILED (exit $rc); partial results in $OUT" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
TMP="$(mktemp -d -t concert-callgrind.XXXXXX)"

PORT="$(free_port)"
CONCERT="cg-$$"
# shellcheck disable=SC2206 # split on spaces on purpose
EXTRA=($SERVER_ARGS)
((HOLD)) && EXTRA+=(--watch-interval-ms 20000)
if ((ECHO)); then
  valgrind --tool=callgrind --callgrind-out-file="$TMP/callgrind.%p" \
    "$ECHO_BIN" --listen "127.0.0.1:$PORT" 2>"$TMP/server.log" &
  SERVER_PID=$!
  for ((i = 0; ; i++)); do
    grep -q 'event=listening' "$TMP/server.log" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 5 "$TMP/server.log" >&2; die "concert-bench-echo exited at start"; }
    ((i < 120)) || die "concert-bench-echo did not listen within 60 s under valgrind"
    sleep 0.5
  done
  # A token of a real one's length (v2.<concert>.1.<32 hex>): the echo only sends it back.
  TOKEN="v2.$CONCERT.1.$(printf '%032d' 0)"
else
  REDIS_PORT="$(free_port)"
  start_redis "$REDIS_PORT" "$TMP" || die "redis-server did not start"
  ADMIN_KEY="cg-$$-$RANDOM"
  env -u CONCERT_KAFKA -u CONCERT_METRICS -u CONCERT_ADMIN_KEY \
    valgrind --tool=callgrind --callgrind-out-file="$TMP/callgrind.%p" \
    "$SERVER" --listen "127.0.0.1:$PORT" --redis "redis://127.0.0.1:$REDIS_PORT" --admin-key "$ADMIN_KEY" \
    --rate-user 0 --rate-peer 0 --admit-rate 0 ${EXTRA[@]+"${EXTRA[@]}"} 2>"$TMP/server.log" &
  SERVER_PID=$!
  for ((i = 0; ; i++)); do
    "$CTL" --server "127.0.0.1:$PORT" --timeout-ms 2000 health >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 5 "$TMP/server.log" >&2; die "concert-server exited at start"; }
    ((i < 120)) || die "concert-server was not SERVING within 60 s under valgrind"
    sleep 0.5
  done

  "$CTL" --server "127.0.0.1:$PORT" --timeout-ms 10000 --admin-key "$ADMIN_KEY" admin concert create \
    --concert "$CONCERT" --name "callgrind $CONCERT" >/dev/null || die "could not create concert $CONCERT"
  TOKEN="$("$CTL" --server "127.0.0.1:$PORT" --timeout-ms 10000 queue join --user cg-poller --concert "$CONCERT" \
    | awk '{print $2}')"
  [[ "$TOKEN" == v[12].* ]] || die "could not issue a token (got '$TOKEN')"
  if ((HOLD)); then
    "$CTL" --server "127.0.0.1:$PORT" --timeout-ms 10000 --admin-key "$ADMIN_KEY" admin concert create \
      --concert "$CONCERT-hold" --name "held streams" >/dev/null || die "could not create concert $CONCERT-hold"
    hold_streams "$BENCH" "127.0.0.1:$PORT" "$HOLD" "$CONCERT-hold" "$TMP/hold.log" 900 \
      || die "could not hold $HOLD streams"
    echo "holding $HOLD WatchQueueStatus streams" >&2
  fi
fi
python3 - "$TMP/status.bin" "$TOKEN" <<'PY'
import struct, sys
b = sys.argv[2].encode(); assert len(b) < 128
msg = bytes([1 << 3 | 2, len(b)]) + b
open(sys.argv[1], "wb").write(b"\0" + struct.pack(">I", len(msg)) + msg)
PY
BODY="$TMP/status.bin"
URL_PATH=/concert.v1.QueueService/GetQueueStatus
if [[ "$METHOD" == health ]]; then
  BODY="$TMP/health.bin"
  printf '\0\0\0\0\0' >"$BODY" # an empty HealthCheckRequest: the server as a whole
  URL_PATH=/grpc.health.v1.Health/Check
fi
h2() { # h2 N OUTFILE
  h2load -n "$1" -c 8 -m 64 -d "$BODY" -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$PORT$URL_PATH" >"$2" 2>&1 || die "h2load failed: $(tail -n 3 "$2")"
  grep -q "$1 succeeded" "$2" || die "not every request succeeded: $(grep succeeded "$2")"
}
# The fast path needs a fresh admission tick of the concert: wait for the first one.
((ECHO)) || sleep 3
[[ "$WARM" -gt 0 ]] && h2 "$WARM" "$OUT/h2load-warmup.txt"
callgrind_control --zero "$SERVER_PID" >/dev/null
h2 "$REQS" "$OUT/h2load-run.txt"
callgrind_control --dump=run "$SERVER_PID" >/dev/null
if ((HOLD)); then
  open="$(grep -o '[0-9]* streams open' "$TMP/hold.log" | tail -n 1 | awk '{print $1}')"
  ((${open:-0} >= HOLD)) || die "only ${open:-0} of $HOLD held streams still open after the run"
fi
for ((i = 0; i < 100; i++)); do
  f="$(ls "$TMP"/callgrind.*.[0-9]* 2>/dev/null | head -1 || true)"
  [[ -n "$f" ]] && break
  sleep 0.1
done
[[ -n "$f" ]] || die "no callgrind dump appeared"
sleep 1
cp "$f" "$OUT/callgrind.run"
callgrind_annotate --inclusive=yes --threshold=99.9 "$OUT/callgrind.run" >"$OUT/annotate-inclusive.txt" 2>/dev/null || true
callgrind_annotate --threshold=99.9 "$OUT/callgrind.run" >"$OUT/annotate-self.txt" 2>/dev/null || true
python3 - "$OUT/callgrind.run" "$REQS" "$OUT/annotate-inclusive.txt" "${URL_PATH##*/}" <<'PY'
import re, sys
f, n, ann = sys.argv[1], int(sys.argv[2]), sys.argv[3]
total = 0
for line in open(f):
    if line.startswith("summary:") or line.startswith("totals:"):
        total = int(line.split()[1]); break
print(f"instructions per {sys.argv[4]}: {total / n:,.0f} (Ir {total:,} over {n:,} calls)")
print("top inclusive (Ir per call):")
k = 0
for line in open(ann):
    m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S.*)", line)
    if not m: continue
    ir = int(m.group(1).replace(",", ""))
    if ir == total: continue
    print(f"  {ir / n:9,.0f}  {m.group(2)[:110]}")
    k += 1
    if k == 40: break
PY
