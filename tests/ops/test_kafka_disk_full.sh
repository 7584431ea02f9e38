#!/usr/bin/env bash
# test_kafka_disk_full: the seed's "Kafka disk full" scenario as a drill. The broker's
# log directory is a 64 MiB tmpfs this test mounts (root only); a filler file takes
# the rest of it while payments flow. Proves:
#  - payments accepted before (PENDING) all settle: nothing acknowledged is lost;
#  - while the disk is full, Pay answers UNAVAILABLE before the call's deadline and
#    nothing is debited;
#  - when space returns (filler deleted, broker restarted as its supervisor would),
#    the same idempotency keys pay exactly once, new payments flow, and the audit
#    (concertctl audit) is ok; balances are debited once per seat sold.
# Prints the figures the runbook quotes (lines starting with "# figure:").
source "$(dirname "$0")/lib.sh"
need redis-server redis-cli jq mount umount
[[ "$(id -u)" == 0 ]] || die "needs root to mount a tmpfs"
CTL="$BUILD/client/concertctl"

KDATA="$OPS_TMP/kdata"
mkdir -p "$KDATA"
mount -t tmpfs -o size=64m tmpfs "$KDATA" || die "cannot mount a tmpfs on $KDATA"
OPS_CLEANUPS+=("umount -l '$KDATA'")
start_redis
KAFKA_DIR="$OPS_TMP/kafka"
start_kafka --data-dir "$KDATA"
export CONCERT_ADMIN_KEY="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
start_server disk --redis "$REDIS_URL" --kafka "$KAFKA" --admin-key "$CONCERT_ADMIN_KEY" --hold-ttl-ms 300000 \
  --max-active 100 --kafka-timeout-ms 3000 || die "concert-server did not start"
start_consumer --redis "$REDIS_URL" --kafka "$KAFKA" --create-topics
export CONCERT_SERVER="$SERVER_ADDR"
log "kafka $KAFKA, data on tmpfs: $(df -h --output=size,used,avail "$KDATA" | tail -1)"

C=diskfull S=diskfull-1 N=12
"$CTL" admin concert create --concert $C --name "disk full drill" >/dev/null || die "create concert"
"$CTL" admin schedule create --concert $C --schedule $S --starts 1900000000000 --seats 1-$N:1000 >/dev/null || die "schedule"
declare -A TOK RES
for i in $(seq 1 $N); do
  u="fan$i"
  TOK[$u]="$("$CTL" --json queue join --user $u --concert $C | jq -r .token)"
  wait_until 20 bash -c "[[ \$('$CTL' --json --token '${TOK[$u]}' queue status | jq -r .state) == QUEUE_STATE_ACTIVE ]]" || die "$u not admitted"
  "$CTL" wallet charge --user $u --amount 5000 --key "top-$u" >/dev/null || die "charge $u"
  RES[$u]="$("$CTL" --json --token "${TOK[$u]}" booking reserve --schedule $S --seats $i | jq -r .reservationId)"
  [[ "${RES[$u]}" == r* ]] || die "reserve $u"
done
balance() { "$CTL" --json wallet balance --user "$1" | jq -r '.balance // 0'; }
pay() { "$CTL" --timeout-ms 4000 --token "${TOK[$1]}" pay --reservation "${RES[$1]}" --key "pay-$1"; }
# Pay, then follow it until COMPLETED (up to 60 s: after a broker restart the consumer
# group needs a few seconds to rejoin).
pay_wait() { "$CTL" --timeout-ms 60000 --token "${TOK[$1]}" pay --reservation "${RES[$1]}" --key "pay-$1" --wait; }

# ---- before: payments flow ----
for i in 1 2 3; do check "fan$i pays before the disk fills: COMPLETED" pay_wait fan$i; done

# ---- fill the disk ----
t_fill=$SECONDS
dd if=/dev/zero of="$KDATA/filler" bs=1M 2>/dev/null || true # until ENOSPC
log "disk full: $(df -h --output=avail "$KDATA" | tail -1)"
# The broker fails its only log directory on the next write and stops. Payments are
# what writes: keep paying until one is refused.
rc_unavail=0 t0_ms=0 t1_ms=0 first_unavail=""
for i in 4 5 6; do
  t0=$(date +%s%3N)
  pay fan$i >"$OPS_TMP/pay-fan$i.out" 2>&1; rc=$?
  t1=$(date +%s%3N)
  echo "# fan$i Pay with the disk full: exit $rc in $((t1 - t0)) ms: $(tail -1 "$OPS_TMP/pay-fan$i.out")"
  if [[ $rc == 14 ]]; then rc_unavail=$((rc_unavail + 1)); [[ -z $first_unavail ]] && first_unavail=$((t1 - t0)); fi
  [[ $rc == 0 ]] && echo "# fan$i was accepted before the broker noticed (it must settle later)"
  echo "fan$i $rc" >>"$OPS_TMP/disk-full-answers"
done
check "with the disk full, Pay answers UNAVAILABLE (14)" test $rc_unavail -ge 2
check "... before the call's 4 s deadline" test "${first_unavail:-99999}" -lt 4000
check_grep "the broker logged the full log directory" 'No space left on device|Shutdown broker because all log dirs|log dir.*(failed|offline)' \
  bash -c "cat '$KAFKA_DIR'/node1/logs/server.log* '$KAFKA_DIR'/node1/stdout.log 2>/dev/null"
for i in 4 5 6; do
  if grep -q "^fan$i 14" "$OPS_TMP/disk-full-answers"; then
    check "fan$i (UNAVAILABLE) was not debited" test "$(balance fan$i)" == 5000
  fi
done

# ---- space returns ----
rm -f "$KDATA/filler"
t_free=$SECONDS
if ! "$OPS_ROOT/scripts/kafka.sh" status --dir "$KAFKA_DIR" | grep -q 'pid [0-9]'; then
  log "the broker stopped; restarting it (as its supervisor/restart policy would)"
  check "the broker restarts with its data once space is back" \
    "$OPS_ROOT/scripts/kafka.sh" start-node --dir "$KAFKA_DIR" --node 1
fi
t_ok=""
for ((k = 0; k < 100; k++)); do
  if pay fan4 >/dev/null 2>&1; then t_ok=$SECONDS; break; fi
  sleep 0.3
done
check "Pay works again after space returns" test -n "$t_ok"
check "fan4 retries with the same key: COMPLETED" pay_wait fan4
t_settled=$SECONDS
for i in 5 6; do
  check "fan$i retries with the same key: COMPLETED" pay_wait fan$i
done
echo "# figure: disk full -> Pay UNAVAILABLE in ${first_unavail:-?} ms (call deadline 4000 ms); space freed -> first Pay accepted $(( ${t_ok:-$SECONDS} - t_free )) s (incl. broker restart), -> that payment COMPLETED $(( t_settled - t_free )) s"
for i in $(seq 7 $N); do check "fan$i pays after recovery: COMPLETED" pay_wait fan$i; done

# ---- nothing lost, nothing twice ----
for i in $(seq 1 $N); do
  check "fan$i debited exactly once (5000 - 1000)" test "$(balance fan$i)" == 4000
done
check "concertctl audit: ok" "$CTL" audit --concert $C
check_grep "... $N seats sold, $N payments completed" "\"seatsSold\": ?\"?$N\"?.*\"paymentsCompleted\": ?\"?$N\"?" \
  bash -c "'$CTL' --json audit --concert $C"
check "payment-consumer stops with exit 0" bash -c "kill -TERM $CONSUMER_PID; wait $CONSUMER_PID 2>/dev/null; s=\$?; [[ \$s == 0 || \$s == 127 ]]"
check "concert-server stops with exit 0" stop_server
echo "# figure: drill total $((SECONDS - t_fill)) s from disk full to audit"
ops_done
