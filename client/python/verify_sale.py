#!/usr/bin/env python3
"""verify_sale.py: recomputes a scheduled sale's drawn order (the recipe of README
"Scheduled sales"), with nothing but the Python standard library.

The commitment SHA-256(seed) is published when the pre-queue opens; the 32-byte seed
when the sale opens. Every pre-queued token gets its place by HMAC-SHA256(key = seed,
message = SHA-256(token id)), smallest first, where the token id is the 16 bytes the
token's last 32 hex digits spell. This script checks that:
  - SHA-256(seed) is the commitment,
  - the export lists exactly `prequeued` hashes, places 1, 2, ... without a gap,
  - they are in increasing HMAC order (so nobody was moved),
  - and, with --token, prints that token's place (a user checks they are in it).

  concertctl --json sale proof --concert C > proof.json
  concertctl --json --admin-key K admin sale export --concert C > order.jsonl
  python3 verify_sale.py --proof proof.json --order order.jsonl [--token TOKEN]

Exit status: 0 the order is the committed draw, 1 it is not (the reason on stderr),
2 bad usage.
"""
import argparse
import base64
import hashlib
import hmac
import json
import sys


def fail(why):
    print("verify_sale: %s" % why, file=sys.stderr)
    return 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--proof", required=True, help="JSON of GetSaleProof (concertctl --json sale proof)")
    ap.add_argument("--order", required=True, help="JSON lines of ExportSaleOrder (concertctl --json admin sale export)")
    ap.add_argument("--token", help="a pre-queued token: print its place")
    a = ap.parse_args()
    try:
        proof = json.load(open(a.proof))
        chunks = [json.loads(line) for line in open(a.order) if line.strip()]
    except (ValueError, OSError) as e:
        print("verify_sale: %s" % e, file=sys.stderr)
        return 2
    commitment = base64.b64decode(proof.get("commitment", ""))
    seed = base64.b64decode(proof.get("seed", ""))
    if len(seed) != 32:
        return fail("no seed: the sale has not opened yet")
    if hashlib.sha256(seed).digest() != commitment:
        return fail("SHA-256(seed) is not the commitment")
    hashes = []
    for c in chunks:
        if base64.b64decode(c.get("seed", "")) != seed:
            return fail("an export chunk names another seed")
        if int(c.get("firstPlace", 0)) != len(hashes) + 1:
            return fail("places do not follow on (chunk starts at %s after %d)" % (c.get("firstPlace"), len(hashes)))
        hashes += [base64.b64decode(h) for h in c.get("tokenIdSha256", [])]
    if len(hashes) != int(proof.get("prequeued", -1)):
        return fail("%d hashes exported, %s pre-queued" % (len(hashes), proof.get("prequeued")))
    keys = [hmac.new(seed, h, hashlib.sha256).digest() for h in hashes]
    for i in range(1, len(keys)):
        if keys[i - 1] >= keys[i]:
            return fail("places %d and %d are not in HMAC order" % (i, i + 1))
    print("sale order verified: %d pre-queued users in the committed draw" % len(hashes))
    if a.token:
        mine = hashlib.sha256(bytes.fromhex(a.token[-32:])).digest()
        if mine not in hashes:
            return fail("the token is not in the drawn order")
        print("token place: %d" % (hashes.index(mine) + 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
