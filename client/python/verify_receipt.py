#!/usr/bin/env python3
"""verify_receipt.py: checks a concert admission receipt offline (the recipe of README
"Admission receipts"), with nothing but the public keys and the `cryptography` package.

A receipt (QueueStatus.admission_receipt) is the bytes of a serialized
concert.v1.AdmissionReceipt followed by a 64-byte Ed25519 signature over exactly those
bytes. This script splits it, finds the key by the receipt's key_id among the keys
`concertctl --json receipt keys` printed (QueueService.GetSigningKeys), verifies the
signature, and checks expiry and, if given, the token and the user.

  concertctl --json receipt keys > keys.json
  concertctl --json queue status --token "$TOKEN" | jq -r .admissionReceipt > receipt.b64
  python3 verify_receipt.py --receipt "$(cat receipt.b64)" --keys keys.json --token "$TOKEN"

Exit status: 0 valid, 1 not valid (the reason on stderr), 2 bad usage.
"""
import argparse
import base64
import hashlib
import json
import sys
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def varint(b, i):
    v, shift = 0, 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        if c < 0x80:
            return v, i
        shift += 7


def parse_receipt(msg):
    """The AdmissionReceipt fields by number (protobuf wire format)."""
    f, i = {}, 0
    while i < len(msg):
        key, i = varint(msg, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            f[num], i = varint(msg, i)
        elif wire == 2:
            n, i = varint(msg, i)
            f[num], i = msg[i:i + n], i + n
        else:
            raise ValueError("unexpected wire type %d" % wire)
    return {
        "concert_id": f.get(1, b"").decode(),
        "key_id": f.get(2, b"").decode(),
        "token_id_sha256": f.get(3, b""),
        "user_id_sha256": f.get(4, b""),
        "admitted_at_unix_ms": f.get(5, 0),
        "expires_at_unix_ms": f.get(6, 0),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--receipt", required=True, help="the receipt, base64 (as concertctl --json prints it)")
    ap.add_argument("--keys", required=True, help="JSON of GetSigningKeys (concertctl --json receipt keys)")
    ap.add_argument("--token", help="also check the receipt is this token's")
    ap.add_argument("--user", help="also check the receipt is this user's")
    a = ap.parse_args()
    try:
        raw = base64.b64decode(a.receipt)
        keys = json.load(open(a.keys)).get("keys", [])
    except (ValueError, OSError) as e:
        print("verify_receipt: %s" % e, file=sys.stderr)
        return 2
    if len(raw) <= 64:
        print("verify_receipt: not a receipt (too short)", file=sys.stderr)
        return 1
    msg, sig = raw[:-64], raw[-64:]
    try:
        r = parse_receipt(msg)
    except (ValueError, IndexError, UnicodeDecodeError) as e:
        print("verify_receipt: not a receipt: %s" % e, file=sys.stderr)
        return 1
    pub = [base64.b64decode(k["publicKey"]) for k in keys if k.get("keyId") == r["key_id"]]
    if not pub:
        print("verify_receipt: no published key has key id %s" % r["key_id"], file=sys.stderr)
        return 1
    try:
        Ed25519PublicKey.from_public_bytes(pub[0]).verify(sig, msg)
    except InvalidSignature:
        print("verify_receipt: bad signature", file=sys.stderr)
        return 1
    if r["expires_at_unix_ms"] <= time.time() * 1000:
        print("verify_receipt: expired", file=sys.stderr)
        return 1
    if a.token and hashlib.sha256(bytes.fromhex(a.token[-32:])).digest() != r["token_id_sha256"]:
        print("verify_receipt: the receipt is for another token", file=sys.stderr)
        return 1
    if a.user and hashlib.sha256(a.user.encode()).digest() != r["user_id_sha256"]:
        print("verify_receipt: the receipt is for another user", file=sys.stderr)
        return 1
    print("receipt valid: concert %s, key %s, admitted %d, expires %d"
          % (r["concert_id"], r["key_id"], r["admitted_at_unix_ms"], r["expires_at_unix_ms"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
