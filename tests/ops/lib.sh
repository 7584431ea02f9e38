# tests/ops/lib.sh: the harness of the shell tests in tests/ops/ (sourced, not run).
# Like tests/th.c for the Criterion tests: services on free 127.0.0.1 ports (never
# 6379/9092) with their state in one temp folder, waits for conditions instead of
# sleeping, stops only the pids it started (also on failure or a signal), and counts
# checks, ending with "N passed, N failed". Binaries come from $CONCERT_BUILD_DIR
# (ctest sets it), Go tools from ~/go/bin, Python packages from the project venv.
set -uo pipefail

OPS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${CONCERT_BUILD_DIR:-$OPS_ROOT/build}"
CONCERT_VENV="${CONCERT_VENV:-$HOME/.cache/concert/venv}"
export PATH="${GOBIN:-$HOME/go/bin}:$PATH"
# Nothing from the caller's environment may point a binary elsewhere.
unset CONCERT_SERVER CONCERT_REDIS CONCERT_KAFKA CONCERT_METRICS CONCERT_ADMIN_KEY CONCERT_TOKEN CONCERT_GROUP \
  CONCERT_TLS CONCERT_TLS_CA CONCERT_TLS_CERT CONCERT_TLS_KEY CONCERT_TLS_CLIENT_CA CONCERT_TLS_CLIENT_CERT \
  CONCERT_TLS_CLIENT_KEY CONCERT_TLS_SERVER_NAME
# shellcheck source=../../scripts/lib/proc.sh
source "$OPS_ROOT/scripts/lib/proc.sh"

OPS_NAME="$(basename "$0" .sh)"
OPS_TMP="$(mktemp -d -t "concert-$OPS_NAME.XXXXXX")"
OPS_PIDS=()            # stopped in reverse order by ops_cleanup
OPS_KAFKA_DIRS=()      # stopped with kafka.sh stop
OPS_CLEANUPS=()        # extra commands (eval'd) run first, e.g. umount
OPS_PASS=0 OPS_FAIL=0
OPS_KEEP="${OPS_KEEP:-0}" # 1: keep the temp folder

ops_cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  for ((i = ${#OPS_CLEANUPS[@]} - 1; i >= 0; i--)); do eval "${OPS_CLEANUPS[i]}" >/dev/null 2>&1 || true; done
  for ((i = ${#OPS_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${OPS_PIDS[i]}"; done
  for d in "${OPS_KAFKA_DIRS[@]}"; do "$OPS_ROOT/scripts/kafka.sh" stop --dir "$d" >/dev/null 2>&1 || true; done
  if [[ "$OPS_KEEP" == 1 || ( $rc -ne 0 && -n "${TH_KEEP_LOGS:-}" ) ]]; then
    echo "$OPS_NAME: kept $OPS_TMP" >&2
  else
    rm -rf -- "$OPS_TMP"
  fi
  exit "$rc"
}
trap ops_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf '%s: %s\n' "$OPS_NAME" "$*" >&2; }
die() { log "FATAL: $*"; OPS_FAIL=$((OPS_FAIL + 1)); ops_done; }

# check NAME CMD...: CMD must exit 0.
check() {
  local name="$1"; shift
  local rc=0
  "$@" >"$OPS_TMP/last.out" 2>&1 || rc=$?
  if [[ $rc -eq 0 ]]; then
    OPS_PASS=$((OPS_PASS + 1)); echo "ok - $name"
  else
    OPS_FAIL=$((OPS_FAIL + 1)); echo "not ok - $name (exit $rc)"; sed 's/^/    /' "$OPS_TMP/last.out" | tail -n 15
  fi
}
# check_rc NAME RC CMD...: CMD must exit with RC.
check_rc() {
  local name="$1" want="$2" got; shift 2
  "$@" >"$OPS_TMP/last.out" 2>&1; got=$?
  if [[ "$got" == "$want" ]]; then
    OPS_PASS=$((OPS_PASS + 1)); echo "ok - $name"
  else
    OPS_FAIL=$((OPS_FAIL + 1)); echo "not ok - $name (exit $got, want $want)"; sed 's/^/    /' "$OPS_TMP/last.out" | tail -n 15
  fi
}
# check_grep NAME PATTERN CMD...: CMD's output (stdout+stderr) must match PATTERN (grep -E).
check_grep() {
  local name="$1" pat="$2"; shift 2
  "$@" >"$OPS_TMP/last.out" 2>&1
  if grep -Eq -- "$pat" "$OPS_TMP/last.out"; then
    OPS_PASS=$((OPS_PASS + 1)); echo "ok - $name"
  else
    OPS_FAIL=$((OPS_FAIL + 1)); echo "not ok - $name (no /$pat/ in output)"; sed 's/^/    /' "$OPS_TMP/last.out" | tail -n 15
  fi
}
ops_done() {
  echo "$OPS_NAME: $OPS_PASS passed, $OPS_FAIL failed"
  echo "$OPS_PASS passed, $OPS_FAIL failed"
  [[ $OPS_FAIL -eq 0 && $OPS_PASS -gt 0 ]]
  exit $?
}

# wait_until LIMIT_S CMD...: polls CMD every 0.1 s until it succeeds; 1 on timeout.
wait_until() {
  local limit="$1" t0=$SECONDS; shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS - t0 < limit)) || return 1
    sleep 0.1
  done
}

free_port() {
  local p
  while :; do
    p="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    [[ "$p" != 6379 && "$p" != 9092 ]] && { echo "$p"; return; }
  done
}

# start_redis [extra redis-server args...]: sets REDIS_PORT, REDIS_URL, REDIS_PID.
start_redis() {
  REDIS_PORT="$(free_port)"
  mkdir -p "$OPS_TMP/redis-$REDIS_PORT"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$OPS_TMP/redis-$REDIS_PORT" \
    --logfile "$OPS_TMP/redis-$REDIS_PORT.log" "$@" &
  REDIS_PID=$!
  OPS_PIDS+=("$REDIS_PID")
  REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
  wait_until 10 bash -c "[[ \$(redis-cli -p $REDIS_PORT ping 2>/dev/null) == PONG ]]" || die "redis-server did not start"
}

# start_server NAME [concert-server args...]: starts concert-server on a free port
# (--listen 127.0.0.1:0 unless given), waits for its `listening` line; sets
# SERVER_PID, SERVER_PORT, SERVER_ADDR and SERVER_LOG. Returns 1 if it exited.
start_server() {
  local name="$1"; shift
  SERVER_LOG="$OPS_TMP/server-$name.log"
  local listen=(--listen 127.0.0.1:0)
  [[ " $* " == *" --listen "* ]] && listen=()
  "$BUILD/server/concert-server" "${listen[@]}" "$@" 2>"$SERVER_LOG" &
  SERVER_PID=$!
  OPS_PIDS+=("$SERVER_PID")
  local t0=$SECONDS
  until grep -qs 'event=listening' "$SERVER_LOG"; do
    kill -0 "$SERVER_PID" 2>/dev/null || { log "concert-server exited: $(tail -n 3 "$SERVER_LOG")"; return 1; }
    ((SECONDS - t0 < 20)) || { log "concert-server did not listen"; return 1; }
    sleep 0.05
  done
  SERVER_PORT="$(sed -n 's/.*event=listening.* port=\([0-9]*\).*/\1/p' "$SERVER_LOG" | head -1)"
  SERVER_ADDR="127.0.0.1:$SERVER_PORT"
}

# stop_server: SIGTERM the last started server; 0 if it exited 0.
stop_server() {
  kill -TERM "$SERVER_PID" 2>/dev/null
  local rc=0
  wait "$SERVER_PID" || rc=$?
  return $rc
}

# start_kafka: a one-node broker in $OPS_TMP/kafka (extra kafka.sh args allowed);
# sets KAFKA (bootstrap) and KAFKA_DIR.
start_kafka() {
  KAFKA_DIR="${KAFKA_DIR:-$OPS_TMP/kafka}"
  OPS_KAFKA_DIRS+=("$KAFKA_DIR")
  "$OPS_ROOT/scripts/kafka.sh" start --nodes 1 --dir "$KAFKA_DIR" "$@" >"$OPS_TMP/kafka-start.log" 2>&1 ||
    die "kafka did not start: $(tail -n 5 "$OPS_TMP/kafka-start.log")"
  KAFKA="$(cat "$KAFKA_DIR/bootstrap")"
}

# start_consumer ARGS...: payment-consumer, waits for event=started; sets CONSUMER_PID.
start_consumer() {
  CONSUMER_LOG="$OPS_TMP/consumer.log"
  "$BUILD/consumers/payment-consumer" "$@" 2>"$CONSUMER_LOG" &
  CONSUMER_PID=$!
  OPS_PIDS+=("$CONSUMER_PID")
  local t0=$SECONDS
  until grep -qs 'event=started' "$CONSUMER_LOG"; do
    kill -0 "$CONSUMER_PID" 2>/dev/null || die "payment-consumer exited: $(tail -n 3 "$CONSUMER_LOG")"
    ((SECONDS - t0 < 60)) || die "payment-consumer did not start"
    sleep 0.1
  done
}

need() { for t in "$@"; do command -v "$t" >/dev/null 2>&1 || die "'$t' not found (scripts/install-deps.sh installs it)"; done; }
