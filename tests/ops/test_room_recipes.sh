#!/usr/bin/env bash
# test_room_recipes: the waiting room's verification recipes, end to end with the real tools -
# redis-server and concert-server on free loopback ports, concertctl as the client:
#  - an admission receipt, fetched with `concertctl --json queue status`, verifies with
#    client/python/verify_receipt.py (the `cryptography` package) against the keys of
#    `concertctl --json receipt keys`; a receipt with one byte changed does not; and
#    `concertctl receipt verify` agrees (exit 0 / 1);
#  - a scheduled sale set with `concertctl admin policy set --prequeue-opens-at +2s
#    --sale-opens-at +5s`: pre-queued users, `concertctl sale proof` before and after
#    the opening, `concertctl admin sale export`, and client/python/verify_sale.py
#    (standard library only) recomputes the order from the export and the revealed
#    seed; a swapped export and a wrong seed fail it.
source "$(dirname "$0")/lib.sh"
need redis-server redis-cli jq python3
python3 -c 'import cryptography' 2>/dev/null || die "python3 cannot import cryptography (apt-get install python3-cryptography)"
CTL="$BUILD/client/concertctl"
PY="$OPS_ROOT/client/python"

start_redis
export CONCERT_ADMIN_KEY="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
start_server room --redis "$REDIS_URL" --admin-key "$CONCERT_ADMIN_KEY" --rate-user 0 --rate-peer 0 ||
  die "concert-server did not start"
export CONCERT_SERVER="$SERVER_ADDR"
ctl() { "$CTL" "$@"; }

# ---- admission receipts ----
check "create a concert" ctl admin concert create --concert rc --name "Receipts"
ctl --json queue join --user alice --concert rc >"$OPS_TMP/alice.json"
TOKEN="$(jq -r .token "$OPS_TMP/alice.json")"
check_grep "an empty concert admits alice straight through" '"state":"QUEUE_STATE_ACTIVE"' cat "$OPS_TMP/alice.json"
RECEIPT="$(ctl --json queue status --token "$TOKEN" | jq -r .admissionReceipt)"
check "the ACTIVE status carries a receipt" test -n "$RECEIPT" -a "$RECEIPT" != null
ctl --json receipt keys >"$OPS_TMP/keys.json"
check_grep "receipt keys lists the server's key" '"keyId":"[0-9a-f]{16}"' cat "$OPS_TMP/keys.json"
check "verify_receipt.py: the receipt verifies (cryptography, public key only)" \
  python3 "$PY/verify_receipt.py" --receipt "$RECEIPT" --keys "$OPS_TMP/keys.json" --token "$TOKEN" --user alice
flip() { python3 -c 'import base64,sys; b=bytearray(base64.b64decode(sys.argv[1])); b[int(sys.argv[2])]^=1; print(base64.b64encode(bytes(b)).decode())' "$@"; }
check_rc "verify_receipt.py: one byte of the signature changed, it does not" 1 \
  python3 "$PY/verify_receipt.py" --receipt "$(flip "$RECEIPT" -1)" --keys "$OPS_TMP/keys.json"
TAMPERED="$(flip "$RECEIPT" 30)" # inside the token id's hash: still a receipt, no longer signed
check_rc "verify_receipt.py: one byte of the statement changed, it does not" 1 \
  python3 "$PY/verify_receipt.py" --receipt "$TAMPERED" --keys "$OPS_TMP/keys.json"
cp "$OPS_TMP/last.out" "$OPS_TMP/o1"
check_grep "... bad signature" 'bad signature' cat "$OPS_TMP/o1"
check_rc "verify_receipt.py: another user's name, it does not" 1 \
  python3 "$PY/verify_receipt.py" --receipt "$RECEIPT" --keys "$OPS_TMP/keys.json" --user mallory
check "concertctl receipt verify --token: valid" ctl receipt verify --token "$TOKEN" --user alice
cp "$OPS_TMP/last.out" "$OPS_TMP/o2"
check_grep "... says so" 'receipt valid: concert rc' cat "$OPS_TMP/o2"
check_rc "concertctl receipt verify: a tampered receipt exits 1" 1 ctl receipt verify --receipt "$TAMPERED"

# ---- a scheduled sale ----
check "create the sale's concert" ctl admin concert create --concert sale --name "Sale"
check "schedule it: pre-queue in 2 s, sale in 5 s, admission paused to look" \
  ctl admin policy set --concert sale --prequeue-opens-at +2s --sale-opens-at +5s --admit-rate 0
check_grep "... the policy shows both times" 'prequeue-opens-at' ctl admin policy get --concert sale
check_rc "joining before the pre-queue opens: FAILED_PRECONDITION (exit 9)" 9 ctl queue join --user early --concert sale
cp "$OPS_TMP/last.out" "$OPS_TMP/o3"
check_grep "... naming the time" 'pre-queue of .sale. opens at' cat "$OPS_TMP/o3"
check_grep "sale proof before: not drawn yet" 'not drawn yet' ctl sale proof --concert sale
wait_until 10 bash -c "'$CTL' --json sale proof --concert sale | jq -e '.commitment != \"\"'" || die "the pre-queue did not open"
for i in $(seq 1 25); do ctl --json queue join --user "fan$i" --concert sale >>"$OPS_TMP/fans.jsonl" || die "join fan$i"; done
check_grep "pre-queued users have no place yet (position 0, no estimate)" '"position":"?0"?,"estimatedWaitSeconds":"?-1' head -n 1 "$OPS_TMP/fans.jsonl"
check_rc "no export before the opening: FAILED_PRECONDITION (exit 9)" 9 ctl admin sale export --concert sale
wait_until 10 bash -c "'$CTL' --json sale proof --concert sale | jq -e '.seed != \"\"'" || die "the sale did not open"
ctl --json sale proof --concert sale >"$OPS_TMP/proof.json"
check_grep "sale proof after: the seed matches the commitment" 'matches the commitment: yes' ctl sale proof --concert sale
check_grep "... 25 pre-queued" '"prequeued":"?25' cat "$OPS_TMP/proof.json"
ctl --json admin sale export --concert sale >"$OPS_TMP/order.jsonl"
FAN7="$(sed -n 7p "$OPS_TMP/fans.jsonl" | jq -r .token)"
check "verify_sale.py: the export is the committed draw" \
  python3 "$PY/verify_sale.py" --proof "$OPS_TMP/proof.json" --order "$OPS_TMP/order.jsonl" --token "$FAN7"
cp "$OPS_TMP/last.out" "$OPS_TMP/verify.out"
PLACE="$(sed -n 's/^token place: //p' "$OPS_TMP/verify.out")"
STATUS_POS="$(ctl --json queue status --token "$FAN7" | jq -r .position)"
check "... fan7's place in the export is its position in line ($PLACE = $STATUS_POS)" test "$PLACE" = "$STATUS_POS"
python3 - "$OPS_TMP/order.jsonl" "$OPS_TMP/swapped.jsonl" <<'PY'
import json, sys
chunks = [json.loads(l) for l in open(sys.argv[1])]
h = chunks[0]["tokenIdSha256"]
h[0], h[1] = h[1], h[0]
open(sys.argv[2], "w").write("".join(json.dumps(c) + "\n" for c in chunks))
PY
check_rc "verify_sale.py: two places swapped, it fails" 1 \
  python3 "$PY/verify_sale.py" --proof "$OPS_TMP/proof.json" --order "$OPS_TMP/swapped.jsonl"
jq -c '.seed = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="' "$OPS_TMP/proof.json" >"$OPS_TMP/badseed.json"
check_rc "verify_sale.py: another seed, it fails" 1 \
  python3 "$PY/verify_sale.py" --proof "$OPS_TMP/badseed.json" --order "$OPS_TMP/order.jsonl"
cp "$OPS_TMP/last.out" "$OPS_TMP/o4"
check_grep "... not the commitment" 'not the commitment' cat "$OPS_TMP/o4"
ctl --json queue join --user late --concert sale >"$OPS_TMP/late.json"
check_grep "a user joining after the opening queues behind all 25" '"position":"?26' cat "$OPS_TMP/late.json"
check "the server stops cleanly" stop_server
ops_done
