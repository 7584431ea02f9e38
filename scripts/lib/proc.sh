# scripts/lib/proc.sh: shell helpers shared by demo.sh and the bench scripts (sourced, not run).

# Stops one process we started: SIGTERM, up to 5 s, then SIGKILL. Only this pid.
stop_pid() {
  local pid="$1" i
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}

# stop_pids PID...: stop_pid on each (empty ones skipped), in the order given.
stop_pids() {
  local p
  for p in "$@"; do stop_pid "$p"; done
}

# bench_finish NAME RC: the common end of a benchmark's EXIT trap, after its processes are
# stopped: keeps $TMP's logs in $OUT/logs, removes $TMP, says FAILED and where the partial
# results are unless RC is 0, and exits RC.
bench_finish() {
  local name="$1" rc="$2"
  if [[ -n "${TMP:-}" && -d "$TMP" ]]; then
    mkdir -p "$OUT/logs" && cp -f "$TMP"/*.log "$OUT/logs/" 2>/dev/null || true
    rm -rf -- "$TMP"
  fi
  ((rc == 0)) || echo "$name: FAILED (exit $rc); partial results in $OUT" >&2
  exit "$rc"
}

# free_port: a TCP port free on 127.0.0.1 just now (never 6379, never 9092).
free_port() {
  local p i
  for ((i = 0; i < 50; i++)); do
    p="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    [[ "$p" != 6379 && "$p" != 9092 ]] && { echo "$p"; return 0; }
  done
  return 1
}

# start_redis PORT DIR: a private redis-server on 127.0.0.1:PORT, in memory only, its log
# in DIR/redis.log; sets REDIS_PID and waits (5 s at most) until it answers PING.
# Returns 1 with a reason on stderr if it does not.
start_redis() {
  local port="$1" dir="$2" i
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    --logfile "$dir/redis.log" --daemonize no &
  REDIS_PID=$!
  for ((i = 0; ; i++)); do
    [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null || true)" == PONG ]] && return 0
    kill -0 "$REDIS_PID" 2>/dev/null || { echo "redis-server exited at start (port $port taken?)" >&2; return 1; }
    ((i < 100)) || { echo "redis-server did not answer PING within 5 s" >&2; return 1; }
    sleep 0.05
  done
}

# build_release BUILD_DIR LOG: configures (tests off, RelWithDebInfo: -O2 -g, the
# project's release type) and builds the benchmark's binaries; on failure prints
# the log's tail and returns 1.
build_release() {
  local build="$1" log="$2"
  cmake -S . -B "$build" -G Ninja -DCONCERT_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$log" 2>&1 \
    || { tail -n 30 "$log" >&2; echo "cmake failed" >&2; return 1; }
  ninja -C "$build" concert-bench concert-bench-echo concert-server concertctl payment-consumer >>"$log" 2>&1 \
    || { tail -n 30 "$log" >&2; echo "build failed" >&2; return 1; }
}

# hold_streams BENCH ADDR N CONCERT LOG [LIMIT_S]: holds N idle WatchQueueStatus streams
# open on the server at ADDR: `concert-bench watch` in the background (HOLD_PID; stop it
# with stop_pid "$HOLD_PID") joins CONCERT (which must exist) with N new users and
# watches their tokens. The server should run with --admit-rate 0 (nobody is admitted,
# so no stream ends) and a slow --watch-interval-ms (the streams stay idle). Waits until
# concert-bench's progress line (LOG) counts N streams open (first status received);
# returns 1 with a reason on stderr if that takes more than LIMIT_S s (default 120).
hold_streams() {
  local bench="$1" addr="$2" n="$3" concert="$4" log="$5" limit="${6:-120}" t0=$SECONDS open
  "$bench" --server "$addr" --channels 4 --users "$n" --duration 86400 watch --concert "$concert" \
    >"$log.md" 2>"$log" &
  HOLD_PID=$!
  while :; do
    open="$(grep -o '[0-9]* streams open' "$log" 2>/dev/null | tail -n 1 | awk '{print $1}' || true)"
    ((${open:-0} >= n)) && return 0
    kill -0 "$HOLD_PID" 2>/dev/null || { tail -n 3 "$log" >&2; echo "concert-bench ended with ${open:-0} of $n streams open" >&2; return 1; }
    ((SECONDS - t0 < limit)) || { echo "only ${open:-0} of $n streams open after $limit s" >&2; return 1; }
    sleep 0.5
  done
}
