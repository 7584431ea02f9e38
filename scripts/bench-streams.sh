#!/usr/bin/env bash
# bench-streams.sh: what one held WatchQueueStatus stream costs concert-server in memory
# (issue 13). For every round and every variant (server flags and/or environment) it
# starts its own redis-server and concert-server on free 127.0.0.1 ports (never 6379),
# opens N streams with `concert-bench watch` (nobody admitted, nobody idles out, so
# every stream stays open), waits until the server's concert_watch_streams gauge says N,
# and reads the server's VmRSS and VmHWM from /proc. Variants run interleaved, round by
# round, so that machine noise hits all of them alike. Writes results.tsv and
# summary.md (RSS per stream and the ratio of each variant to the first). Stops what it
# started (by pid only) on exit, failure or Ctrl-C; every wait is bounded.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/bench-streams.sh [--streams N] [--rounds R] [--channels C]
                                [--variant 'NAME:WORDS']... [--massif]
                                [--out DIR] [--build-dir DIR] [--no-build] [--help]

Measures concert-server's memory per held WatchQueueStatus stream.

  --streams N      streams held at once (default 3000)
  --rounds R       rounds; each runs every variant once, in order (default 3)
  --channels C     concert-bench's gRPC channels = HTTP/2 connections (default 4)
  --variant 'NAME:WORDS'
                   a server configuration (repeatable; default: one variant
                   'default:' = the server as shipped). WORDS are split on blanks:
                   a word VAR=VALUE with an upper-case VAR is put in the server's
                   environment (MALLOC_ARENA_MAX=2), any other word is a
                   concert-server flag (--grpc-args grpc.minimal_stack=1); a word
                   bench:WORD goes to concert-bench instead, by the same rule
                   (bench:--channels=16); server-bin:PATH runs that concert-server
                   binary (another build) instead. The first variant is the
                   baseline of the ratios.
  --massif         run the server under valgrind --tool=massif instead (one round,
                   RSS figures are valgrind's and are not reported); writes
                   massif-<variant>.out (whole run) and massif-<variant>.held.out
                   (vgdb snapshot while the streams are held), each with its
                   ms_print text
  --out DIR        results here (default bench-out/streams-<timestamp>)
  --build-dir DIR  build directory (default build-bench, or $CONCERT_BENCH_BUILD_DIR)
  --no-build       use the binaries already in the build directory
  --help           this help

Per run: a fresh Redis and server (--admit-rate 0 --idle-timeout-ms 0 --rate-user 0
--rate-peer 0 --metrics on a free port), the server's idle RSS, then concert-bench
watch --users N; once concert_watch_streams = N (at most 120 s, 600 s with --massif)
the server's RSS is read 4 times 0.5 s apart (the last is reported) with VmHWM.
Per stream = (held RSS - idle RSS) / N.
Exit status: 0 every run held its N streams; 1 otherwise (the reason is printed);
2 usage error.
EOF
}

STREAMS=3000
ROUNDS=3
CHANNELS=4
VARIANTS=()
MASSIF=0
build=1
OUT=""
BUILD="${CONCERT_BENCH_BUILD_DIR:-build-bench}"
need() { [[ $# -ge 2 ]] || { echo "bench-streams.sh: $1 needs a value" >&2; exit 2; }; }
num() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || { echo "bench-streams.sh: $1 needs a positive number, got '$2'" >&2; exit 2; }; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --streams) need "$@"; num "$1" "$2"; STREAMS="$2"; shift ;;
    --rounds) need "$@"; num "$1" "$2"; ROUNDS="$2"; shift ;;
    --channels) need "$@"; num "$1" "$2"; CHANNELS="$2"; shift ;;
    --variant) need "$@"; [[ "$2" =~ ^[A-Za-z0-9_.-]+: ]] || { echo "bench-streams.sh: --variant needs NAME:WORDS, got '$2'" >&2; exit 2; }
      VARIANTS+=("$2"); shift ;;
    --massif) MASSIF=1 ;;
    --no-build) build=0 ;;
    --out) need "$@"; OUT="$2"; shift ;;
    --build-dir) need "$@"; BUILD="$2"; shift ;;
    *) echo "bench-streams.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
((${#VARIANTS[@]})) || VARIANTS=("default:")
((MASSIF)) && ROUNDS=1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[[ "$BUILD" == /* ]] || BUILD="$ROOT/$BUILD"
[[ -n "$OUT" ]] || OUT="$ROOT/bench-out/streams-$(date -u +%Y%m%dT%H%M%SZ)"
[[ "$OUT" == /* ]] || OUT="$ROOT/$OUT"
mkdir -p "$OUT"

# shellcheck source=lib/proc.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/proc.sh"

TMP=""
REDIS_PID=""
SERVER_PID=""
CHILD_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pids "$CHILD_PID" "$SERVER_PID" "$REDIS_PID"
  bench_finish bench-streams.sh "$rc"
}
trap cleanup EXIT
trap 'echo "bench-streams.sh: interrupted" >&2; exit 130' INT
trap 'exit 143' TERM
die() { echo "bench-streams.sh: $*" >&2; exit 1; }

for tool in cmake ninja redis-server redis-cli python3 curl; do
  command -v "$tool" >/dev/null || die "'$tool' not found; run scripts/install-deps.sh"
done
((MASSIF == 0)) || command -v valgrind >/dev/null || die "--massif needs valgrind (apt-get install valgrind)"
TMP="$(mktemp -d -t concert-streams.XXXXXX)"

BENCH="$BUILD/client/concert-bench"
SERVER_BIN="$BUILD/server/concert-server"
CTL="$BUILD/client/concertctl"
if ((build)); then
  echo "== build (RelWithDebInfo) in ${BUILD#"$ROOT"/}" >&2
  build_release "$BUILD" "$TMP/build.log" || die "build failed"
fi
for b in "$BENCH" "$SERVER_BIN" "$CTL"; do [[ -x "$b" ]] || die "$b is missing (build first or drop --no-build)"; done

kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
gauge() { curl -s --max-time 2 "http://$METRICS_ADDR/metrics" 2>/dev/null | awk '$1 == "concert_watch_streams" {print int($2)}'; }

ADMIN_KEY="streams-$$-$RANDOM"
N_RUN=0
# run_one NAME WORDS: one measurement; appends a row to results.tsv.
run_one() {
  local name="$1" words="$2" w i port mport
  local -a envs=() flags=() benv=() bflags=()
  local sbin="$SERVER_BIN"
  for w in $words; do
    if [[ "$w" == server-bin:* ]]; then
      sbin="${w#server-bin:}"
    elif [[ "$w" == bench:* ]]; then
      w="${w#bench:}"
      if [[ "$w" =~ ^[A-Z_][A-Z0-9_]*= ]]; then benv+=("$w"); else bflags+=("$w"); fi
    elif [[ "$w" =~ ^[A-Z_][A-Z0-9_]*= ]]; then envs+=("$w"); else flags+=("$w"); fi
  done
  N_RUN=$((N_RUN + 1))
  local log="$TMP/run-$N_RUN-$name"
  port="$(free_port)"; start_redis "$port" "$TMP" || die "redis-server did not start"
  local redis_url="redis://127.0.0.1:$port"
  port="$(free_port)"; mport="$(free_port)"
  SERVER_ADDR="127.0.0.1:$port"; METRICS_ADDR="127.0.0.1:$mport"
  local -a pre=()
  local limit=120
  if ((MASSIF)); then
    pre=(valgrind --tool=massif --threshold=0.5 --max-snapshots=60 "--massif-out-file=$OUT/massif-$name.out")
    limit=600
  fi
  env -u CONCERT_KAFKA -u CONCERT_METRICS -u CONCERT_ADMIN_KEY -u CONCERT_GRPC_ARGS "${envs[@]}" \
    "${pre[@]}" "$sbin" --listen "$SERVER_ADDR" --redis "$redis_url" --admin-key "$ADMIN_KEY" \
    --metrics "$METRICS_ADDR" --rate-user 0 --rate-peer 0 --admit-rate 0 --idle-timeout-ms 0 "${flags[@]}" \
    2>"$log.server.log" &
  SERVER_PID=$!
  for ((i = 0; ; i++)); do
    "$CTL" --server "$SERVER_ADDR" --timeout-ms 500 health >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 5 "$log.server.log" >&2; die "$name: concert-server exited at start"; }
    ((i < limit * 10)) || die "$name: concert-server was not SERVING within $limit s"
    sleep 0.1
  done
  "$CTL" --server "$SERVER_ADDR" --admin-key "$ADMIN_KEY" admin concert create --concert streams --name streams \
    >/dev/null || die "$name: could not create the concert"
  [[ -x "$sbin" ]] || die "$name: $sbin is not an executable"
  local idle; idle="$(kb "$SERVER_PID" VmRSS)"
  env "${benv[@]}" "$BENCH" --server "$SERVER_ADDR" --channels "$CHANNELS" --users "$STREAMS" --duration 3600 --quiet \
    --watch-pid "concert-server=$SERVER_PID" "${bflags[@]}" watch --concert streams >"$log.bench.md" 2>"$log.bench.log" &
  CHILD_PID=$!
  local t0=$SECONDS held=0
  while :; do
    held="$(gauge)"; held="${held:-0}"
    ((held >= STREAMS)) && break
    kill -0 "$CHILD_PID" 2>/dev/null || { tail -n 5 "$log.bench.log" >&2; die "$name: concert-bench ended with $held streams held"; }
    kill -0 "$SERVER_PID" 2>/dev/null || die "$name: concert-server died with $held streams held"
    ((SECONDS - t0 < limit)) || die "$name: only $held of $STREAMS streams open after $limit s"
    sleep 0.5
  done
  local open_s=$((SECONDS - t0)) rss=0 hwm
  for i in 1 2 3 4; do sleep 0.5; rss="$(kb "$SERVER_PID" VmRSS)"; done
  hwm="$(kb "$SERVER_PID" VmHWM)"
  if ((MASSIF)); then
    # The heap while the streams are held (massif's own peak may come at shutdown).
    timeout 120 vgdb --pid="$SERVER_PID" detailed_snapshot "$OUT/massif-$name.held.out" >/dev/null 2>&1 \
      || echo "bench-streams.sh: vgdb snapshot failed" >&2
  fi
  held="$(gauge)"; held="${held:-0}"
  stop_pid "$CHILD_PID"; CHILD_PID=""
  stop_pid "$SERVER_PID"; SERVER_PID=""
  stop_pid "$REDIS_PID"; REDIS_PID=""
  ((held >= STREAMS)) || die "$name: streams fell to $held while measuring"
  if ((MASSIF)); then
    for f in "$OUT/massif-$name.out" "$OUT/massif-$name.held.out"; do
      [[ -f "$f" ]] && ms_print --threshold=0.5 "$f" >"${f%.out}.txt" 2>/dev/null || true
    done
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$ROUND" "$name" "$STREAMS" "$idle" "$rss" "$hwm" "$open_s" "$words" \
    >>"$OUT/results.tsv"
  printf '  round %s %-16s idle %6s KiB  held %7s KiB  hwm %7s KiB  %6s B/stream  (open %ss)\n' "$ROUND" "$name" \
    "$idle" "$rss" "$hwm" "$(((rss - idle) * 1024 / STREAMS))" "$open_s" >&2
}

printf 'round\tvariant\tstreams\tidle_kib\trss_kib\thwm_kib\topen_s\twords\n' >"$OUT/results.tsv"
echo "== $STREAMS streams over $CHANNELS channels, $ROUNDS round(s), ${#VARIANTS[@]} variant(s)$( ((MASSIF)) && echo ', under massif')" >&2
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
  for v in "${VARIANTS[@]}"; do run_one "${v%%:*}" "${v#*:}"; done
done

((MASSIF)) && { echo "massif output in $OUT" >&2; exit 0; }
python3 - "$OUT/results.tsv" "$OUT/summary.md" "$STREAMS" "$CHANNELS" "$ROUNDS" <<'PY'
import csv, statistics, sys
src, dst, n, ch, rounds = sys.argv[1:]
rows = list(csv.DictReader(open(src), delimiter="\t"))
order = []
for r in rows:
    if r["variant"] not in order: order.append(r["variant"])
per = {v: [] for v in order}
for r in rows:
    per[r["variant"]].append(r)
med = lambda xs: statistics.median(xs)
base = None
out = [f"{n} WatchQueueStatus streams over {ch} channels, {rounds} round(s), variants interleaved; "
       "per stream = (held RSS - idle RSS) / streams, median of rounds.", "",
       "| variant | server flags / env | idle RSS MiB | held RSS MiB | VmHWM MiB | bytes per stream | ratio to first | each round (B/stream) |",
       "|---|---|---|---|---|---|---|---|"]
for v in order:
    rs = per[v]
    ps = [(int(r["rss_kib"]) - int(r["idle_kib"])) * 1024 / int(r["streams"]) for r in rs]
    p = med(ps)
    if base is None: base = p
    out.append(f"| {v} | `{rs[0]['words'] or '(none)'}` | {med([int(r['idle_kib']) for r in rs]) / 1024:.1f} | "
               f"{med([int(r['rss_kib']) for r in rs]) / 1024:.1f} | {med([int(r['hwm_kib']) for r in rs]) / 1024:.1f} | "
               f"{p:.0f} | {p / base:.2f} | {', '.join(f'{x:.0f}' for x in ps)} |")
open(dst, "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
