#!/usr/bin/env python3
"""Checks a govtune checkpoint note with nothing of govtune's: C2SP signed-note
Ed25519 signatures (type 0x01), C2SP tlog-cosignature/v1 cosignatures (type
0x04) and an RFC 6962 / RFC 9162 consistency proof, written from the specs
with Python's hashlib and the `cryptography` package.

    check-note.py NOTE --key VKEY [--key VKEY ...] --need Q
                  [--witness VKEY ... --witness-need K]
                  [--old-size N --old-root B64 --proof FILE]

NOTE is the note text (GET /v1/checkpoint?format=c2sp). Each --key is a
validator's verifier key `<name>+<hex key id>+<base64(0x01 || key)>`; at
least Q of them must have a valid signature line. Each --witness is a
witness's verifier key (type 0x04); at least K must have a valid
cosignature. With --old-size, --old-root (the earlier checkpoint's root,
base64) and --proof (one base64 hash per line), the note's tree must extend
the earlier one. Exit 0: all hold; 1: something does not; 2: bad input.
"""

import argparse
import base64
import hashlib
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

EM_DASH = "\u2014"


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def parse_vkey(text, kind):
    name, key_id, b64 = text.strip().split("+", 2)  # the base64 key may hold a +
    blob = base64.b64decode(b64, validate=True)
    if len(blob) != 33 or blob[0] != kind:
        raise ValueError(f"{text}: not an Ed25519 key of type {kind:#04x}")
    want = hashlib.sha256(name.encode() + b"\n" + blob).digest()[:4]
    if want.hex() != key_id:
        raise ValueError(f"{text}: key id does not match")
    return name, want, Ed25519PublicKey.from_public_bytes(blob[1:])


def parse_note(text):
    body, sep, sigs = text.partition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise ValueError("not a signed note")
    body += "\n"
    lines = []
    for line in sigs[:-1].split("\n"):
        if not line.startswith(EM_DASH + " "):
            raise ValueError(f"bad signature line {line!r}")
        name, b64 = line[2:].split(" ")
        lines.append((name, base64.b64decode(b64, validate=True)))
    return body, lines


def verifies(key, sig, message):
    try:
        key.verify(sig, message)
        return True
    except InvalidSignature:
        return False


def leaf_parent(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_consistency(n1, n2, proof, root1, root2):
    """RFC 9162, section 2.1.4.2."""
    if n1 > n2:
        return False
    if n1 == n2:
        return not proof and root1 == root2
    if n1 == 0:
        return not proof
    if not proof:
        return False
    if n1 & (n1 - 1) == 0:  # a power of two: the first tree is a subtree
        proof = [root1] + proof
    fn, sn = n1 - 1, n2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = leaf_parent(c, fr)
            sr = leaf_parent(c, sr)
            while fn != 0 and fn & 1 == 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = leaf_parent(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == root1 and sr == root2


def main():
    p = argparse.ArgumentParser()
    p.add_argument("note")
    p.add_argument("--key", action="append", default=[])
    p.add_argument("--need", type=int, required=True)
    p.add_argument("--witness", action="append", default=[])
    p.add_argument("--witness-need", type=int, default=0)
    p.add_argument("--old-size", type=int)
    p.add_argument("--old-root")
    p.add_argument("--proof")
    a = p.parse_args()
    try:
        body, lines = parse_note(open(a.note, encoding="utf-8").read())
        keys = [parse_vkey(k, 0x01) for k in a.key]
        witnesses = [parse_vkey(k, 0x04) for k in a.witness]
        origin, size, root_b64 = body.split("\n")[:3]
        size = int(size)
        root = base64.b64decode(root_b64, validate=True)
    except (ValueError, OSError) as e:
        print(f"error: {e}")
        sys.exit(2)

    seen = set()
    for line_name, blob in lines:
        if (line_name, blob[:4]) in seen:
            fail(f"two signature lines of one key ({line_name}+{blob[:4].hex()})")
        seen.add((line_name, blob[:4]))

    signed = 0
    for name, key_id, key in {(n, i): (n, i, k) for n, i, k in keys}.values():
        if name != origin:
            fail(f"key {name} is not named by the origin {origin}")
        for line_name, blob in lines:
            if line_name == name and blob[:4] == key_id:
                if not verifies(key, blob[4:], body.encode()):
                    fail(f"a signature by {name}+{key_id.hex()} does not verify")
                signed += 1
    if signed < a.need:
        fail(f"{signed} valid validator signatures, {a.need} needed")

    cosigned = 0
    for name, key_id, key in {(n, i): (n, i, k) for n, i, k in witnesses}.values():
        for line_name, blob in lines:
            if line_name == name and blob[:4] == key_id:
                if len(blob) != 4 + 8 + 64:
                    fail(f"cosignature by {name} has the wrong size")
                t = int.from_bytes(blob[4:12], "big")
                msg = f"cosignature/v1\ntime {t}\n".encode() + body.encode()
                if not verifies(key, blob[12:], msg):
                    fail(f"cosignature by {name} does not verify")
                cosigned += 1
    if cosigned < a.witness_need:
        fail(f"{cosigned} valid cosignatures, {a.witness_need} needed")

    if a.old_size is not None:
        try:
            old_root = base64.b64decode(a.old_root, validate=True)
            proof = [base64.b64decode(l, validate=True) for l in open(a.proof).read().split()]
        except (ValueError, OSError, TypeError) as e:
            print(f"error: {e}")
            sys.exit(2)
        if not verify_consistency(a.old_size, size, proof, old_root, root):
            fail(f"the tree of size {size} does not extend the one of size {a.old_size}")
    print(f"OK: {origin} size {size}: {signed} validator signatures, {cosigned} cosignatures"
          + ("" if a.old_size is None else f", extends size {a.old_size}"))


if __name__ == "__main__":
    main()
