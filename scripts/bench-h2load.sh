#!/usr/bin/env bash
# bench-h2load.sh: the server's cost per call against a bare gRPC C core echo server
# (issue 13). Builds a release build, starts its own redis-server, concert-server(s) and
# concert-bench-echo on free 127.0.0.1 ports (state in a temp dir, stopped by pid on
# exit), seeds a concert and a token, and runs h2load (-c 8 -m 64, a fixed request
# count, gRPC framing) against echo (and a second echo binary, --echo-b), Health/Check,
# GetQueueStatus and IssueToken, interleaved over several rounds. Prints a Markdown
# table: req/s per target (median of the rounds), the ratio to echo, server CPU per
# call (by thread), Redis usec per call (INFO commandstats) and a check that every
# answer was a real gRPC OK (h2load's 2xx against the server's
# grpc_server_handled_total{grpc_code="OK"}).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/bench-h2load.sh [--rounds R] [--requests N] [--out DIR] [--build-dir DIR]
                               [--no-build] [--server-b BIN] [--processes LIST]
                               [--echo-b BIN] [--targets LIST] [--hold-streams N] [--quick] [--help]

Runs h2load -c 8 -m 64 -n N against each target in turn, R rounds, interleaved:
  echo     concert-bench-echo (bare single-thread gRPC C core: the ceiling)
  health   /grpc.health.v1.Health/Check on concert-server
  status   /concert.v1.QueueService/GetQueueStatus, one token of a waiting user
  issue    /concert.v1.QueueService/IssueToken, one user joining again (idempotent)
and writes DIR/summary.md (the table), DIR/rounds.tsv (every run), DIR/h2load/*.txt
(h2load's output), DIR/commandstats/*.txt and the services' logs.

Options:
  --rounds R       rounds (default 5; --quick 2)
  --requests N     requests per h2load run (default 200000; --quick 20000)
  --out DIR        output folder (default bench-out/h2load-<UTC timestamp>)
  --build-dir DIR  release build to use (default build-bench, or $CONCERT_BENCH_BUILD_DIR)
  --no-build       use the binaries already in the build directory
  --server-b BIN   also run this concert-server binary (e.g. an older build) on its own
                   port, same Redis: its targets are labelled [B] (A/B in one run)
  --echo-b BIN     also run this concert-bench-echo binary (e.g. main's) on its own port:
                   target echo[B] in the same interleaved rounds when echo is a target
                   (A/B of the reference itself); ratios stay against echo, the table
                   adds a "vs echo[B]" column
  --processes LIST concert-server process counts to compare, e.g. 1,2: N processes share
                   one port with --reuse-port; labelled [xN] when more than one count
  --targets LIST   subset of echo,health,status,issue (default all)
  --hold-streams N hold N idle WatchQueueStatus streams open on every concert-server
                   variant during the runs (BUILD/client/concert-bench watch, users of
                   a concert of their own; the servers get --watch-interval-ms 20000):
                   what held streams cost the unary calls
  --quick          small numbers (a smoke run)
  --help           this help

Server CPU per call is utime+stime of every thread of the server process(es) over the
run (/proc/PID/task/*/stat) divided by the requests; Redis usec per call is the sum of
INFO commandstats usec over the run divided by the requests. h2load, the servers and
Redis share the machine's cores: compare ratios from one run, not absolute figures.
Exit status: 0 ok, 1 a run failed or an answer was not a gRPC OK, 2 usage error.
EOF
}

ROUNDS=""
REQS=""
OUT=""
BUILD="${CONCERT_BENCH_BUILD_DIR:-build-bench}"
build=1
quick=0
SERVER_B=""
ECHO_B=""
PROCS="1"
TARGETS="echo,health,status,issue"
HOLD=0
HOLD_ARGS=()
HOLD_PIDS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --quick) quick=1 ;;
    --hold-streams) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || { echo "bench-h2load.sh: --hold-streams needs a number" >&2; exit 2; }; HOLD="$2"; shift ;;
    --no-build) build=0 ;;
    --rounds) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || { echo "bench-h2load.sh: --rounds needs a number" >&2; exit 2; }; ROUNDS="$2"; shift ;;
    --requests) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || { echo "bench-h2load.sh: --requests needs a number" >&2; exit 2; }; REQS="$2"; shift ;;
    --out) [[ $# -ge 2 ]] || { echo "bench-h2load.sh: --out needs a value" >&2; exit 2; }; OUT="$2"; shift ;;
    --build-dir) [[ $# -ge 2 ]] || { echo "bench-h2load.sh: --build-dir needs a value" >&2; exit 2; }; BUILD="$2"; shift ;;
    --server-b) [[ $# -ge 2 ]] || { echo "bench-h2load.sh: --server-b needs a binary" >&2; exit 2; }; SERVER_B="$2"; shift ;;
    --echo-b) [[ $# -ge 2 ]] || { echo "bench-h2load.sh: --echo-b needs a binary" >&2; exit 2; }; ECHO_B="$2"; shift ;;
    --processes) [[ $# -ge 2 && "$2" =~ ^[1-8](,[1-8])*$ ]] || { echo "bench-h2load.sh: --processes needs a list like 1,2 (1..8)" >&2; exit 2; }; PROCS="$2"; shift ;;
    --targets) [[ $# -ge 2 && "$2" =~ ^(echo|health|status|issue)(,(echo|health|status|issue))*$ ]] || { echo "bench-h2load.sh: --targets: a list of echo,health,status,issue" >&2; exit 2; }; TARGETS="$2"; shift ;;
    *) echo "bench-h2load.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if ((quick)); then ROUNDS="${ROUNDS:-2}"; REQS="${REQS:-20000}"; else ROUNDS="${ROUNDS:-5}"; REQS="${REQS:-200000}"; fi
((ROUNDS >= 1 && REQS >= 1000)) || { echo "bench-h2load.sh: --rounds >= 1 and --requests >= 1000" >&2; exit 2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[[ "$BUILD" == /* ]] || BUILD="$ROOT/$BUILD"
[[ -z "$OUT" ]] && OUT="$ROOT/bench-out/h2load-$(date -u +%Y%m%dT%H%M%SZ)"
[[ "$OUT" == /* ]] || OUT="$ROOT/$OUT"
mkdir -p "$OUT/h2load" "$OUT/commandstats"

# shellcheck source=lib/proc.sh
source "$ROOT/scripts/lib/proc.sh"

TMP=""
REDIS_PID=""
ECHO_PID=""
ECHO_B_PID=""
CHILD_PID=""
SERVER_PIDS=() # every concert-server we started

cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  stop_pid "$CHILD_PID"
  for p in "${HOLD_PIDS[@]}"; do stop_pid "$p"; done
  for p in "${SERVER_PIDS[@]}"; do stop_pid "$p"; done
  stop_pid "$ECHO_PID"
  stop_pid "$ECHO_B_PID"
  stop_pid "$REDIS_PID"
  bench_finish bench-h2load.sh "$rc"
}
trap cleanup EXIT
trap 'echo "bench-h2load.sh: interrupted" >&2; exit 130' INT
trap 'exit 143' TERM

die() { echo "bench-h2load.sh: $*" >&2; exit 1; }
say() { printf '== %s\n' "$*" >&2; }

H2LOAD="$(command -v h2load || true)"
[[ -n "$H2LOAD" ]] || die "h2load not found (apt-get install nghttp2-client; scripts/install-deps.sh installs it)"
for tool in cmake ninja redis-server redis-cli python3; do
  command -v "$tool" >/dev/null || die "'$tool' not found; run scripts/install-deps.sh"
done
GRPCURL="$(command -v grpcurl || true)"; [[ -z "$GRPCURL" && -x "$HOME/go/bin/grpcurl" ]] && GRPCURL="$HOME/go/bin/grpcurl"

TMP="$(mktemp -d -t concert-h2load.XXXXXX)"

SERVER_BIN="$BUILD/server/concert-server"
ECHO_BIN="$BUILD/client/concert-bench-echo"
CTL="$BUILD/client/concertctl"
if ((build)); then
  say "build (RelWithDebInfo) in ${BUILD#"$ROOT"/}"
  build_release "$BUILD" "$TMP/build.log" || die "build failed"
fi
((HOLD)) && HOLD_ARGS=(--watch-interval-ms 20000)
for b in "$SERVER_BIN" "$ECHO_BIN" "$CTL" ${SERVER_B:+"$SERVER_B"} ${ECHO_B:+"$ECHO_B"} \
    ${HOLD_ARGS[@]+"$BUILD/client/concert-bench"}; do
  [[ -x "$b" ]] || die "$b is missing (build first or drop --no-build)"
done

# ---- services ---------------------------------------------------------------------------
REDIS_PORT="$(free_port)"
start_redis "$REDIS_PORT" "$TMP" || die "redis-server did not start"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
RCLI=(redis-cli -h 127.0.0.1 -p "$REDIS_PORT")
ADMIN_KEY="h2load-$$-$RANDOM"

ECHO_PORT="$(free_port)"
"$ECHO_BIN" --listen "127.0.0.1:$ECHO_PORT" 2>"$TMP/echo.log" &
ECHO_PID=$!
ECHO_B_PORT=""
if [[ -n "$ECHO_B" ]]; then
  ECHO_B_PORT="$(free_port)"
  "$ECHO_B" --listen "127.0.0.1:$ECHO_B_PORT" 2>"$TMP/echo-b.log" &
  ECHO_B_PID=$!
fi

# Variants: label, binary, process count. Every variant gets its own port (shared by
# its processes through --reuse-port) and one metrics port per process.
declare -a V_LABEL V_BIN V_N V_PORT V_PIDS V_METRICS
nv=0
add_variant() { V_LABEL[nv]="$1"; V_BIN[nv]="$2"; V_N[nv]="$3"; nv=$((nv + 1)); }
IFS=, read -r -a PROC_LIST <<<"$PROCS"
for n in "${PROC_LIST[@]}"; do
  lab=""
  ((${#PROC_LIST[@]} > 1)) && lab="x$n"
  add_variant "$lab" "$SERVER_BIN" "$n"
  [[ -n "$SERVER_B" ]] && add_variant "B${lab:+,$lab}" "$SERVER_B" "$n"
done
if [[ -n "$SERVER_B" ]]; then
  for ((v = 0; v < nv; v++)); do [[ "${V_LABEL[v]}" == B* ]] || V_LABEL[v]="A${V_LABEL[v]:+,${V_LABEL[v]}}"; done
fi

nsrv=0
for ((v = 0; v < nv; v++)); do
  V_PORT[v]="$(free_port)"
  pids=""; mports=""
  extra=()
  ((V_N[v] > 1)) && extra=(--reuse-port)
  for ((k = 0; k < V_N[v]; k++)); do
    mp="$(free_port)"
    nsrv=$((nsrv + 1))
    env -u CONCERT_KAFKA -u CONCERT_METRICS -u CONCERT_ADMIN_KEY \
      "${V_BIN[v]}" --listen "127.0.0.1:${V_PORT[v]}" --redis "$REDIS_URL" --admin-key "$ADMIN_KEY" \
      --rate-user 0 --rate-peer 0 --admit-rate 0 --metrics "127.0.0.1:$mp" "${extra[@]}" ${HOLD_ARGS[@]+"${HOLD_ARGS[@]}"} \
      2>"$TMP/server-$nsrv.log" &
    SERVER_PIDS+=($!)
    pids="$pids${pids:+,}$!"; mports="$mports${mports:+,}$mp"
    # The next process of a --reuse-port group binds after the first one is up.
    for ((i = 0; ; i++)); do
      "$CTL" --server "127.0.0.1:${V_PORT[v]}" --timeout-ms 500 health >/dev/null 2>&1 && break
      kill -0 "$!" 2>/dev/null || { tail -n 5 "$TMP/server-$nsrv.log" >&2; die "concert-server exited at start"; }
      ((i < 100)) || die "concert-server was not SERVING within 10 s"
      sleep 0.1
    done
  done
  V_PIDS[v]="$pids"; V_METRICS[v]="$mports"
done
for ((i = 0; ; i++)); do
  grep -q 'event=listening' "$TMP/echo.log" 2>/dev/null && break
  kill -0 "$ECHO_PID" 2>/dev/null || { cat "$TMP/echo.log" >&2; die "concert-bench-echo exited at start"; }
  ((i < 100)) || die "concert-bench-echo did not listen within 10 s"
  sleep 0.1
done
for ((i = 0; ${#ECHO_B_PID} > 0; i++)); do
  grep -q 'event=listening' "$TMP/echo-b.log" 2>/dev/null && break
  kill -0 "$ECHO_B_PID" 2>/dev/null || { cat "$TMP/echo-b.log" >&2; die "--echo-b exited at start"; }
  ((i < 100)) || die "--echo-b did not listen within 10 s"
  sleep 0.1
done

# ---- requests -----------------------------------------------------------------------------
CONCERT="h2load-$$"
"$CTL" --server "127.0.0.1:${V_PORT[0]}" --admin-key "$ADMIN_KEY" admin concert create --concert "$CONCERT" \
  --name "h2load $CONCERT" >/dev/null || die "could not create concert $CONCERT"
TOKEN="$("$CTL" --server "127.0.0.1:${V_PORT[0]}" queue join --user h2load-poller --concert "$CONCERT" | awk '{print $2}')"
[[ "$TOKEN" == v[12].* ]] || die "could not issue a token (got '$TOKEN')"
# gRPC frames: flag 0, 4-byte big-endian length, then the protobuf message.
python3 - "$TMP" "$TOKEN" "$CONCERT" <<'PY'
import struct, sys
d, token, concert = sys.argv[1:]
def field(n, s):
    b = s.encode(); assert len(b) < 128
    return bytes([n << 3 | 2, len(b)]) + b
def frame(name, msg):
    open(f"{d}/{name}.bin", "wb").write(b"\0" + struct.pack(">I", len(msg)) + msg)
frame("health", b"")
frame("status", field(1, token))
frame("issue", field(1, "h2load-joiner") + field(2, concert))
PY
path_of() {
  case "$1" in
    health|echo) echo /grpc.health.v1.Health/Check ;;
    status) echo /concert.v1.QueueService/GetQueueStatus ;;
    issue) echo /concert.v1.QueueService/IssueToken ;;
  esac
}
method_of() { case "$1" in health|echo) echo Check ;; status) echo GetQueueStatus ;; issue) echo IssueToken ;; esac; }

# One grpcurl call per concert-server target: the bytes h2load sends are a real OK.
if [[ -n "$GRPCURL" ]]; then
  P=(-plaintext -import-path "$ROOT/proto" -proto grpc/health/v1/health.proto -proto concert/v1/queue.proto)
  for ((v = 0; v < nv; v++)); do
    a="127.0.0.1:${V_PORT[v]}"
    "$GRPCURL" "${P[@]}" -d '{}' "$a" grpc.health.v1.Health/Check | grep -q SERVING || die "grpcurl: Health/Check on $a not SERVING"
    "$GRPCURL" "${P[@]}" -d "{\"token\":\"$TOKEN\"}" "$a" concert.v1.QueueService/GetQueueStatus | grep -q WAITING \
      || die "grpcurl: GetQueueStatus on $a is not WAITING"
    "$GRPCURL" "${P[@]}" -d "{\"user_id\":\"h2load-joiner\",\"concert_id\":\"$CONCERT\"}" "$a" \
      concert.v1.QueueService/IssueToken | grep -q token || die "grpcurl: IssueToken on $a failed"
  done
  "$GRPCURL" "${P[@]}" -d '{}' "127.0.0.1:$ECHO_PORT" grpc.health.v1.Health/Check >/dev/null || die "grpcurl: echo failed"
  [[ -z "$ECHO_B_PORT" ]] || "$GRPCURL" "${P[@]}" -d '{}' "127.0.0.1:$ECHO_B_PORT" grpc.health.v1.Health/Check >/dev/null \
    || die "grpcurl: --echo-b failed"
fi

# --hold-streams: N idle streams on every variant, held until the end.
if ((HOLD)); then
  for ((v = 0; v < nv; v++)); do
    "$CTL" --server "127.0.0.1:${V_PORT[v]}" --admin-key "$ADMIN_KEY" admin concert create --concert "$CONCERT-hold$v" \
      --name "held streams" >/dev/null || die "could not create concert $CONCERT-hold$v"
    hold_streams "$BUILD/client/concert-bench" "127.0.0.1:${V_PORT[v]}" "$HOLD" "$CONCERT-hold$v" "$TMP/hold-$v.log" \
      || die "could not hold $HOLD streams on variant $v"
    HOLD_PIDS+=("$HOLD_PID")
    say "holding $HOLD WatchQueueStatus streams on ${V_LABEL[v]:-the server}"
  done
fi

# ---- the runs -------------------------------------------------------------------------------
# Target list: echo once (and echo[B]: T_V -2), then every (kind, variant).
declare -a T_NAME T_KIND T_V
nt=0
IFS=, read -r -a KINDS <<<"$TARGETS"
for k in "${KINDS[@]}"; do
  if [[ "$k" == echo ]]; then
    T_NAME[nt]=echo; T_KIND[nt]=echo; T_V[nt]=-1; nt=$((nt + 1))
    [[ -n "$ECHO_B" ]] && { T_NAME[nt]="echo[B]"; T_KIND[nt]=echo; T_V[nt]=-2; nt=$((nt + 1)); }
    continue
  fi
  for ((v = 0; v < nv; v++)); do
    T_NAME[nt]="$k${V_LABEL[v]:+[${V_LABEL[v]}]}"; T_KIND[nt]="$k"; T_V[nt]=$v; nt=$((nt + 1))
  done
done

# snapshot PIDS: "tid comm ticks" for every thread of these pids (comma-separated).
snapshot() {
  python3 - "$1" <<'PY'
import os, sys
for pid in sys.argv[1].split(","):
    try: tids = os.listdir(f"/proc/{pid}/task")
    except OSError: continue
    for t in tids:
        try: s = open(f"/proc/{pid}/task/{t}/stat").read()
        except OSError: continue
        comm = s[s.index("(") + 1:s.rindex(")")].replace(" ", "_")
        f = s[s.rindex(")") + 2:].split()
        print(pid, t, comm, int(f[11]) + int(f[12]))
PY
}
# ok_count VARIANT METHOD: grpc_server_handled_total{grpc_code="OK"} summed over its processes.
ok_count() {
  python3 - "${V_METRICS[$1]}" "$2" <<'PY'
import sys, urllib.request
total = 0
for p in sys.argv[1].split(","):
    for line in urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=5).read().decode().splitlines():
        if line.startswith("grpc_server_handled_total{") and f'grpc_method="{sys.argv[2]}"' in line and 'grpc_code="OK"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
print(total)
PY
}

h2() { # h2 URL BODY N OUTFILE
  "$H2LOAD" -n "$3" -c 8 -m 64 -d "$2" -H 'content-type: application/grpc' -H 'te: trailers' "$1" >"$4" 2>&1 &
  CHILD_PID=$!
  wait "$CHILD_PID" || die "h2load failed: $(tail -n 3 "$4")"
  CHILD_PID=""
}

ROWS="$OUT/rounds.tsv"
printf 'round\ttarget\tkind\trequests\treq_s\tsucceeded\tok_on_server\tserver_ticks\tthreads\tredis_usec\tredis_calls\tredis_ticks\n' >"$ROWS"
HZ="$(getconf CLK_TCK)"
say "warm-up: every target once with $((REQS / 10)) requests"
# target T: its URL and the pids whose CPU counts (T_V: -1 echo, -2 echo[B], else a variant).
target_of() {
  local t="$1"
  if ((T_V[t] == -2)); then pids="$ECHO_B_PID"; url="http://127.0.0.1:$ECHO_B_PORT$(path_of echo)"
  elif ((T_V[t] < 0)); then pids="$ECHO_PID"; url="http://127.0.0.1:$ECHO_PORT$(path_of echo)"
  else pids="${V_PIDS[T_V[t]]}"; url="http://127.0.0.1:${V_PORT[T_V[t]]}$(path_of "${T_KIND[t]}")"; fi
}
for ((t = 0; t < nt; t++)); do
  target_of "$t"
  h2 "$url" "$TMP/${T_KIND[t]/echo/health}.bin" $((REQS / 10)) "$TMP/warmup.txt"
done
for ((r = 1; r <= ROUNDS; r++)); do
  for ((j = 0; j < nt; j++)); do
    t=$(((j + r - 1) % nt)) # each round starts one target later: no target always runs first
    kind="${T_KIND[t]}"; name="${T_NAME[t]}"
    target_of "$t"
    ok0=0; ((T_V[t] >= 0)) && ok0="$(ok_count "${T_V[t]}" "$(method_of "$kind")")"
    "${RCLI[@]}" config resetstat >/dev/null
    snapshot "$pids" >"$TMP/s0"; r0="$(snapshot "$REDIS_PID" | awk '{s += $4} END {print s + 0}')"
    f="$OUT/h2load/r$r-${name//[^a-zA-Z0-9,x]/_}.txt"
    h2 "$url" "$TMP/${kind/echo/health}.bin" "$REQS" "$f"
    snapshot "$pids" >"$TMP/s1"; r1="$(snapshot "$REDIS_PID" | awk '{s += $4} END {print s + 0}')"
    "${RCLI[@]}" info commandstats >"$OUT/commandstats/r$r-${name//[^a-zA-Z0-9,x]/_}.txt"
    ok1=0; ((T_V[t] >= 0)) && ok1="$(ok_count "${T_V[t]}" "$(method_of "$kind")")"
    python3 - "$f" "$TMP/s0" "$TMP/s1" "$OUT/commandstats/r$r-${name//[^a-zA-Z0-9,x]/_}.txt" \
      "$r" "$name" "$kind" "$REQS" "$((ok1 - ok0))" "$((r1 - r0))" >>"$ROWS" <<'PY'
import re, sys
f, s0, s1, cs, rnd, name, kind, n, ok, rticks = sys.argv[1:]
txt = open(f).read()
rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", txt).group(1))
succ = int(re.search(r"(\d+) succeeded", txt).group(1))
def snap(p):
    d = {}
    for line in open(p):
        pid, tid, comm, ticks = line.split()
        d[tid] = (comm + ("" if tid == pid else ""), int(ticks), tid == pid)
    return d
a, b = snap(s0), snap(s1)
by = {}
for tid, (comm, ticks, main) in b.items():
    dt = ticks - a.get(tid, (comm, 0, main))[1]
    key = "loop" if main else comm
    by[key] = by.get(key, 0) + dt
total = sum(by.values())
usec = calls = 0
for line in open(cs):
    m = re.match(r"cmdstat_(\w+):calls=(\d+),usec=(\d+)", line)
    if m and m.group(1) not in ("config", "info"):
        calls += int(m.group(2)); usec += int(m.group(3))
threads = ";".join(f"{k}={v}" for k, v in sorted(by.items(), key=lambda kv: -kv[1]) if v)
print("\t".join(map(str, [rnd, name, kind, n, rps, succ, ok, total, threads or "-", usec, calls, rticks])))
PY
    tail -n 1 "$ROWS" | awk -F'\t' -v r="$r" '{printf "round %s  %-22s %10.0f req/s\n", r, $2, $5}' >&2
  done
done

# ---- summary -------------------------------------------------------------------------------
python3 - "$ROWS" "$HZ" "$REQS" "$ROUNDS" "$OUT/summary.md" <<'PY'
import statistics as st, sys
rows_f, hz, reqs, rounds, out = sys.argv[1:]
hz = float(hz)
rows = [l.rstrip("\n").split("\t") for l in open(rows_f)][1:]
names = []
for r in rows:
    if r[1] not in names: names.append(r[1])
med = lambda xs: st.median(xs) if xs else 0
res, bad = {}, []
for n in names:
    rs = [r for r in rows if r[1] == n]
    rps = [float(r[4]) for r in rs]
    req = sum(int(r[3]) for r in rs)
    succ = sum(int(r[5]) for r in rs)
    ok = sum(int(r[6]) for r in rs)
    cpu_us = [int(r[7]) / hz * 1e6 / int(r[3]) for r in rs]
    threads = {}
    for r in rs:
        for kv in r[8].split(";"):
            if "=" in kv:
                k, v = kv.split("="); threads[k] = threads.get(k, 0) + int(v)
    th = ", ".join(f"{k} {v / hz * 1e6 / req:.1f}" for k, v in sorted(threads.items(), key=lambda kv: -kv[1])[:4])
    rus = [int(r[9]) / int(r[3]) for r in rs]
    rcalls = [int(r[10]) / int(r[3]) for r in rs]
    rcpu = [int(r[11]) / hz * 1e6 / int(r[3]) for r in rs]
    kind = rs[0][2]
    verified = "-" if kind == "echo" else ("yes" if ok == succ == req else f"**NO** ({ok} OK of {req})")
    if succ != req or (kind != "echo" and ok != succ): bad.append(n)
    res[n] = dict(rps=med(rps), lo=min(rps), hi=max(rps), cpu=med(cpu_us), th=th, rus=med(rus), rc=med(rcalls),
                  rcpu=med(rcpu), verified=verified, succ=succ, req=req, kind=kind)
echo = res.get("echo", {}).get("rps")
echo_b = res.get("echo[B]", {}).get("rps") # --echo-b: the other reference, a column of its own
L = [f"h2load -c 8 -m 64 -n {reqs}, {rounds} rounds interleaved; medians of the rounds (min-max req/s).", "",
     "| target | req/s | vs echo |" + (" vs echo[B] |" if echo_b else "") + " server CPU us/call | by thread (us/call) | Redis cmds/call | Redis usec/call (commandstats) | Redis CPU us/call | every answer OK |",
     "|---|---:|---:|" + ("---:|" if echo_b else "") + "---:|---|---:|---:|---:|---|"]
for n in names:
    x = res[n]
    ratio = f"{x['rps'] / echo:.2f}x" if echo else "-"
    if echo_b: ratio += f" | {x['rps'] / echo_b:.2f}x"
    L.append(f"| {n} | {x['rps']:,.0f} ({x['lo']:,.0f}-{x['hi']:,.0f}) | {ratio} | {x['cpu']:.1f} | {x['th']} | "
             f"{x['rc']:.2f} | {x['rus']:.2f} | {x['rcpu']:.1f} | {x['verified']} |")
L.append("")
if echo:
    L.append("Ratios to echo, per round (the same round's echo run):")
    L.append("")
    L.append("| target | " + " | ".join(f"r{i}" for i in range(1, int(rounds) + 1)) + " |")
    L.append("|---|" + "---:|" * int(rounds))
    for n in names:
        if n == "echo": continue
        cells = []
        for i in range(1, int(rounds) + 1):
            e = [float(r[4]) for r in rows if r[1] == "echo" and int(r[0]) == i]
            t = [float(r[4]) for r in rows if r[1] == n and int(r[0]) == i]
            cells.append(f"{t[0] / e[0]:.2f}" if e and t else "-")
        L.append(f"| {n} | " + " | ".join(cells) + " |")
    L.append("")
open(out, "w").write("\n".join(L) + "\n")
print("\n".join(L))
if bad:
    print(f"bench-h2load.sh: not every answer was a gRPC OK: {', '.join(bad)}", file=sys.stderr)
    sys.exit(1)
PY
