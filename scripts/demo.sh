#!/usr/bin/env bash
# demo.sh: a live, self-contained tour of the waiting room, booking and payment.
# Builds if needed, starts its own redis-server, one-node Kafka, concert-server and
# payment-consumer on free 127.0.0.1 ports with all state in a temp dir, runs a short
# scripted session with concertctl, and stops what it started (by pid only) and
# deletes the temp dir on exit, failure or Ctrl-C.
# It never touches a Redis on 6379 or any process it did not start.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/demo.sh [--help]

A short (about 25 s once built) live demonstration of waiting room, booking, payment:
  1. builds the project if needed (cmake + ninja, quietly)
  2. starts a throw-away redis-server on a free loopback port (never 6379),
     nothing saved to disk, and a one-node Kafka (scripts/kafka.sh) likewise
  3. starts concert-server on a free loopback port with a random admin key, and
     payment-consumer
  4. loads a demo catalogue (concertctl seed: 3 tours, 8 show dates, 1,200 seats
     each) and slows concert "aurora" down to 2 admissions per second
  5. eight fans join the queue of "aurora", one leaves, the last one (zoe)
     watches her position count down until she is admitted (ACTIVE)
  6. zoe lists the show dates, holds two seats (another fan then cannot get
     them), tops up her wallet and pays through Kafka: the seats are SOLD, her
     balance is debited once, her queue token is used up; the audit agrees
Everything it started is stopped and its temp dir deleted when it ends, also on
failure or Ctrl-C.

Needs: what scripts/install-deps.sh installs (it runs first): cmake, ninja,
redis-server, a JDK with the Kafka jars, python3.
Environment: CONCERT_BUILD_DIR  build directory (default: build)

Exit status: 0 when the demo ran to the end, non-zero otherwise.
EOF
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) echo "demo.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# Dependencies first (idempotent; quick when everything is there).
scripts/install-deps.sh >/dev/null
BUILD="${CONCERT_BUILD_DIR:-build}"
[[ "$BUILD" == /* ]] || BUILD="$ROOT/$BUILD"
CTL="$BUILD/client/concertctl"
SERVER_BIN="$BUILD/server/concert-server"

# ---- cleanup: runs on every exit ---------------------------------------------
TMP=""
REDIS_PID=""
SERVER_PID=""
CONSUMER_PID=""
KAFKA_DIR=""

# stop_pid PID: SIGTERM, then SIGKILL after 5 s; only pids we started.
# shellcheck source=lib/proc.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/proc.sh"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # On a failure (not Ctrl-C), show the log of what failed before it is deleted.
  if ((rc != 0 && rc != 130 && rc != 143)) && [[ -n "$TMP" ]]; then
    local f=server.log
    [[ -n "$SERVER_PID" ]] || f=redis.log
    if [[ -s "$TMP/$f" ]]; then
      echo "--- last lines of $f ---" >&2
      tail -n 8 "$TMP/$f" >&2
    fi
  fi
  stop_pid "$CONSUMER_PID"
  stop_pid "$SERVER_PID"
  # kafka.sh stops only the brokers whose pids it wrote into KAFKA_DIR.
  [[ -n "$KAFKA_DIR" && -d "$KAFKA_DIR" ]] && "$ROOT/scripts/kafka.sh" stop --dir "$KAFKA_DIR" >/dev/null 2>&1
  stop_pid "$REDIS_PID"
  [[ -n "$TMP" && -d "$TMP" ]] && rm -rf -- "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'echo; echo "demo.sh: interrupted" >&2; exit 130' INT
trap 'exit 143' TERM

# Bold headers and dim command lines on a terminal; plain text otherwise.
if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then B=$'\033[1m' D=$'\033[2m' N=$'\033[0m'; else B="" D="" N=""; fi
die() { echo "demo.sh: $*" >&2; exit 1; }
section() { printf '\n%s== %s ==%s\n' "$B" "$*" "$N"; }
note() { printf '   %s\n' "$*"; }
# Shows a concertctl command line as a reader would type it, then runs it.
shown() { printf '%s$ concertctl %s%s\n' "$D" "$*" "$N"; }
ctl() {
  shown "$@"
  "$CTL" "$@"
}


for tool in cmake ninja redis-server redis-cli python3; do
  command -v "$tool" >/dev/null || die "'$tool' not found; install the dependencies first (scripts/install-deps.sh)"
done

TMP="$(mktemp -d -t concert-demo.XXXXXX)"

# ---- 1. build -----------------------------------------------------------------
section "1. Build (cmake + ninja, only what changed)"
if [[ ! -f "$BUILD/build.ninja" ]]; then
  cmake -S . -B "$BUILD" -G Ninja -DCONCERT_TESTS=OFF >"$TMP/build.log" 2>&1 \
    || { tail -n 30 "$TMP/build.log" >&2; die "cmake failed"; }
fi
ninja -C "$BUILD" >>"$TMP/build.log" 2>&1 || { tail -n 30 "$TMP/build.log" >&2; die "build failed"; }
[[ -x "$CTL" && -x "$SERVER_BIN" ]] || die "build finished but $CTL or $SERVER_BIN is missing"
note "ok: ${SERVER_BIN#"$ROOT"/} and ${CTL#"$ROOT"/}"

# ---- 2. redis -----------------------------------------------------------------
REDIS_PORT="$(free_port)"
section "2. Start a private Redis on 127.0.0.1:$REDIS_PORT (in-memory only, deleted afterwards)"
start_redis "$REDIS_PORT" "$TMP" || die "redis-server did not start"
note "redis-cli -p $REDIS_PORT ping -> PONG"

# ---- Kafka (payments) ------------------------------------------------------------
section "2b. Start a private one-node Kafka (KRaft) on a free port (data in the temp dir)"
KAFKA_DIR="$TMP/kafka"
"$ROOT/scripts/kafka.sh" start --nodes 1 --dir "$KAFKA_DIR" >"$TMP/kafka-start.log" 2>&1 ||
  { tail -n 5 "$TMP/kafka-start.log" >&2; die "Kafka did not start"; }
KAFKA="$(cat "$KAFKA_DIR/bootstrap")"
note "broker ready at $KAFKA"
KAFKA_ARGS=(--kafka "$KAFKA")

# ---- 3. server ----------------------------------------------------------------
SERVER_PORT="$(free_port)"
while [[ "$SERVER_PORT" == "$REDIS_PORT" ]]; do SERVER_PORT="$(free_port)"; done
export CONCERT_SERVER="127.0.0.1:$SERVER_PORT"
# This demo uses its own Kafka and no metrics port, whatever the caller's environment says.
unset CONCERT_KAFKA CONCERT_METRICS CONCERT_REDIS CONCERT_GROUP
# A fresh random admin key each run; concertctl's admin commands read CONCERT_ADMIN_KEY.
ADMIN_KEY="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export CONCERT_ADMIN_KEY="$ADMIN_KEY"
unset CONCERT_TOKEN
section "3. Start concert-server on $CONCERT_SERVER (with a random admin key)"
"$SERVER_BIN" --listen "$CONCERT_SERVER" --redis "redis://127.0.0.1:$REDIS_PORT" --admit-rate 2 \
  --admin-key "$ADMIN_KEY" ${KAFKA_ARGS[@]+"${KAFKA_ARGS[@]}"} 2>"$TMP/server.log" &
SERVER_PID=$!
for ((i = 0; ; i++)); do
  "$CTL" --timeout-ms 500 health >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || die "concert-server exited at start"
  ((i < 100)) || die "concert-server was not SERVING within 10 s"
  sleep 0.1
done
note "concertctl finds it through CONCERT_SERVER=$CONCERT_SERVER, the admin key through CONCERT_ADMIN_KEY"
"$BUILD/consumers/payment-consumer" --redis "redis://127.0.0.1:$REDIS_PORT" --kafka "$KAFKA" \
  --create-topics 2>"$TMP/consumer.log" &
CONSUMER_PID=$!
note "payment-consumer started (consumer group payment-consumer): it settles payments from Kafka"
ctl health

# ---- 4. catalogue --------------------------------------------------------------
CONCERT=aurora
section "4. An operator loads the demo catalogue (AdminService, needs the admin key)"
ctl seed
note "slow \"$CONCERT\" down to 2 admissions per second, so the line visibly moves"
shown admin policy set --concert "$CONCERT" --admit-rate 2
"$CTL" admin policy set --concert "$CONCERT" --admit-rate 2 | grep -E 'policy|admit-rate'

# ---- 5. the waiting room ------------------------------------------------------
# Joins a user and prints "name  <concertctl's line>"; the token goes into TOKENS.
declare -A TOKENS
join() {
  local line
  line="$("$CTL" queue join --user "$1" --concert "$CONCERT")"
  printf '%-6s %s\n' "$1" "$line"
  line="${line#token }"
  TOKENS[$1]="${line%% *}"
}

section "5. Seven fans join the waiting room of concert \"$CONCERT\""
note "first come, first served; each gets an unguessable token and a place in line"
shown queue join --user NAME --concert "$CONCERT"
for user in ana ben cleo dev eli fay gus; do join "$user"; done
note "asking again is harmless: gus gets the same token and place back"
ctl queue join --user gus --concert "$CONCERT"

section "6. cleo changes her mind and leaves (everyone behind her moves up)"
ctl queue leave --token "${TOKENS[cleo]}"

section "7. zoe joins last and watches her place until she is admitted"
note "the server streams every change; 2 users are admitted per second"
join zoe
ctl queue watch --token "${TOKENS[zoe]}"

section "8. zoe is in: her status as text, and as JSON for scripts"
ctl queue status --token "${TOKENS[zoe]}"
ctl --json queue status --token "${TOKENS[zoe]}"

# ---- 9. booking ---------------------------------------------------------------
section "9. zoe picks a date and holds two VIP seats (booking needs her ACTIVE token)"
export CONCERT_TOKEN="${TOKENS[zoe]}"
note "export CONCERT_TOKEN=<zoe's token>   (sent as 'authorization: Bearer')"
ctl booking schedules --concert "$CONCERT"
ctl booking seats --schedule "$CONCERT-1" --available
shown booking reserve --schedule "$CONCERT-1" --seats 7,8
line="$("$CTL" booking reserve --schedule "$CONCERT-1" --seats 7,8)"
printf '%s\n' "$line"
line="${line#reservation }"
RESERVATION="${line%% *}"
[[ "$RESERVATION" == r1.* ]] || die "no reservation id in concertctl's answer"
note "all or nothing, and nobody gets a seat twice: ben (admitted earlier) tries seat 8"
shown booking reserve --schedule "$CONCERT-1" --seats 8,9 --token "<ben's token>"
if "$CTL" booking reserve --schedule "$CONCERT-1" --seats 8,9 --token "${TOKENS[ben]}"; then
  die "seat 8 was given out twice"
else
  note "-> refused with exit status $? (FAILED_PRECONDITION); seat 9 was not held either"
fi

section "10. zoe tops up her prepaid wallet"
note "no --key given: concertctl makes one up and prints it; retrying with it charges once"
ctl wallet charge --user zoe --amount 50000

section "11. Her reservation, held and waiting for payment"
ctl booking get --reservation "$RESERVATION"

section "12. zoe pays: Pay answers once the request is durable in Kafka, the consumer settles it"
ctl pay --reservation "$RESERVATION" --wait
note "the same idempotency key again would find this payment, never pay twice"

section "13. Afterwards: balance debited once, seats SOLD, zoe's queue token used up"
ctl wallet balance --user zoe
ctl queue status --token "${TOKENS[zoe]}"
ctl admin stats --concert "$CONCERT"
note "the audit proves the invariants (every sold seat paid exactly once, debits = payments)"
ctl audit --concert "$CONCERT"

section "Done"
note "Try it yourself: ${CTL#"$ROOT"/} --help"
note "Stopping payment-consumer, concert-server, Kafka and Redis and deleting $TMP."
