#!/usr/bin/env python3
"""Independent check of the audit-chain parity vectors (Python 3 standard library only).

Recomputes, from test/vectors/audit_canonical_vectors.json and nothing else:

- the RFC 8785 (JCS) canonical bytes of every event, with a small JCS implementation written
  here (strict parse: duplicate member names, lone surrogates, NaN/Infinity and overflowing
  numbers are errors; members sorted by UTF-16 code units; JCS string escapes; numbers as
  ECMAScript Number.prototype.toString, from Python's shortest round-trip repr), first
  self-tested against the RFC 8785 published vectors in crates/audit/testdata/rfc8785/;
- every genesis hash and entry hash, the links between consecutive entries and the sequence
  numbers;
- every RFC 6962 Merkle root, inclusion proof and consistency proof (generated here and
  verified with the RFC 9162 algorithms);
- every checkpoint body, frontier and base64 root;
- the rejection of every payload listed as invalid.

The formulas are in docs/audit-chain.md. Exits 0 when everything matches, 1 otherwise, and
prints one line per failure plus a summary line "N passed, M failed".

Usage: python3 tools/verify_audit_vectors.py [VECTORS_FILE] [--rfc8785-dir DIR]
"""

import argparse
import base64
import hashlib
import json
import math
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VECTORS = ROOT / "test" / "vectors" / "audit_canonical_vectors.json"
DEFAULT_RFC8785 = ROOT / "crates" / "audit" / "testdata" / "rfc8785"

# The v1 constants, written out here rather than read from the file under test.
ENTRY_TAG = b"evalstream.audit.entry.v1\x00"
GENESIS_TAG = b"evalstream.audit.genesis.v1\x00"
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
CHECKPOINT_HEADER = "evalstream.audit.checkpoint.v1"
CHECKPOINT_ORIGIN = "audit.chain"
EVENT_FIELDS = ["event_id", "type", "actor", "subject", "occurred_at", "payload"]


# --------------------------------------------------------------------------------------------
# RFC 8785


class JcsError(ValueError):
    """The JSON text has no canonical form."""


def _no_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise JcsError(f"duplicate member name {key!r}")
        obj[key] = value
    return obj


def _no_constant(name):
    raise JcsError(f"{name} is not JSON")


def _float(text):
    x = float(text)
    if math.isinf(x):
        raise JcsError(f"number {text[:40]} overflows a double")
    return x


def _int(text):
    try:
        return float(int(text))  # correctly rounded, like JavaScript's JSON.parse
    except OverflowError:
        raise JcsError(f"number {text[:40]} overflows a double") from None


def _check_strings(value):
    """Python's json accepts lone surrogate escapes; I-JSON does not."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise JcsError("lone surrogate in a string") from None
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key)
            _check_strings(item)


def jcs_parse(text):
    """Strict JSON parse; numbers become floats (IEEE-754 doubles), as in JavaScript."""
    if text.startswith("\ufeff"):
        raise JcsError("byte order mark")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_float=_float,
            parse_int=_int,
        )
    except JcsError:
        raise
    except (ValueError, RecursionError) as e:
        raise JcsError(f"not JSON: {e}") from None
    _check_strings(value)
    return value


def es_number(x):
    """ECMAScript Number::toString(x): repr() gives the shortest round-trip digits (closest,
    ties to even), laid out here by ECMA-262's rules."""
    if math.isnan(x) or math.isinf(x):
        raise JcsError("non-finite number")
    if x == 0:
        return "0"
    if x < 0:
        return "-" + es_number(-x)
    mantissa, _, exp = repr(x).partition("e")
    exp = int(exp) if exp else 0
    int_part, _, frac_part = mantissa.partition(".")
    all_digits = int_part + frac_part
    stripped = all_digits.lstrip("0")
    leading_zeros = len(all_digits) - len(stripped)
    n = len(int_part) - leading_zeros + exp  # x = 0.DIGITS * 10^n
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    e = n - 1
    sign = "-" if e < 0 else "+"
    mant = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{mant}e{sign}{abs(e)}"


_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n",
                  "\f": "\\f", "\r": "\\r"}


def es_string(s):
    out = ['"']
    for ch in s:
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def jcs_serialize(value):
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return es_number(float(value))
    if isinstance(value, str):
        return es_string(value)
    if isinstance(value, list):
        return "[" + ",".join(jcs_serialize(v) for v in value) + "]"
    if isinstance(value, dict):
        # UTF-16 code unit order: big-endian UTF-16 bytes compare exactly like code units.
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(es_string(k) + ":" + jcs_serialize(value[k]) for k in keys) + "}"
    raise JcsError(f"not a JSON value: {type(value).__name__}")


def jcs(text):
    return jcs_serialize(jcs_parse(text)).encode("utf-8")


# --------------------------------------------------------------------------------------------
# Chain and Merkle tree


def sha256(data):
    return hashlib.sha256(data).digest()


def genesis_hash(partition):
    return sha256(GENESIS_TAG + struct.pack(">I", partition))


def entry_hash(prev_hash, seq, canonical):
    return sha256(ENTRY_TAG + prev_hash + struct.pack(">QQ", seq, len(canonical)) + canonical)


def event_canonical(event):
    """The canonical bytes of an audit event given in its record JSON form (payload a string)."""
    if sorted(event) != sorted(EVENT_FIELDS):
        raise JcsError(f"event members {sorted(event)} are not {sorted(EVENT_FIELDS)}")
    at = event["occurred_at"]
    if not isinstance(at, int) or abs(at) > 2**53 - 1:
        raise JcsError("occurred_at must be an integer within +-(2^53 - 1)")
    obj = {k: event[k] for k in EVENT_FIELDS if k != "payload"}
    obj["payload"] = jcs_parse(event["payload"])
    return jcs_serialize(obj).encode("utf-8")


def leaf_hash(entry):
    return sha256(LEAF_PREFIX + entry)


def node_hash(left, right):
    return sha256(NODE_PREFIX + left + right)


def split(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves):
    """RFC 6962 section 2.1 over leaf hashes."""
    if not leaves:
        return sha256(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = split(len(leaves))
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def path(m, leaves):
    """RFC 6962 section 2.1.1 PATH(m, D[n])."""
    if len(leaves) <= 1:
        return []
    k = split(len(leaves))
    if m < k:
        return path(m, leaves[:k]) + [mth(leaves[k:])]
    return path(m - k, leaves[k:]) + [mth(leaves[:k])]


def subproof(m, leaves, complete):
    """RFC 6962 section 2.1.2 SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if complete else [mth(leaves)]
    k = split(n)
    if m <= k:
        return subproof(m, leaves[:k], complete) + [mth(leaves[k:])]
    return subproof(m - k, leaves[k:], False) + [mth(leaves[:k])]


def verify_inclusion(leaf, index, size, proof, root):
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first, second, first_root, second_root, proof):
    """RFC 9162 section 2.1.4.2 (with 0 < first < second)."""
    if not 0 < first < second or not proof:
        return False
    if first & (first - 1) == 0:
        proof = [first_root] + proof
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


def frontier(entries):
    """Roots of the perfect subtrees given by the one bits of len(entries), largest first."""
    out, start, n = [], 0, len(entries)
    for bit in reversed(range(64)):
        size = 1 << bit
        if n & size:
            out.append(mth([leaf_hash(e) for e in entries[start:start + size]]))
            start += size
    return out


# --------------------------------------------------------------------------------------------
# Checks


class Checker:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL: {what}")

    def equal(self, got, want, what):
        self.check(got == want, f"{what}: got {got!r}, want {want!r}")


def check_rfc8785(c, directory):
    inputs = sorted((directory / "input").glob("*.json"))
    c.check(len(inputs) >= 6, f"RFC 8785 vectors found in {directory}")
    for inp in inputs:
        want = (directory / "output" / inp.name).read_bytes()
        hex_text = (directory / "outhex" / (inp.stem + ".txt")).read_text()
        c.equal(bytes.fromhex("".join(hex_text.split())), want, f"rfc8785 {inp.name} outhex")
        try:
            got = jcs(inp.read_text(encoding="utf-8"))
        except JcsError as e:
            got = f"error: {e}"
        c.equal(got, want, f"rfc8785 {inp.name}")


def check_vectors(c, v):
    k = v["constants"]
    c.equal(k["entry_tag_hex"], ENTRY_TAG.hex(), "entry tag")
    c.equal(k["genesis_tag_hex"], GENESIS_TAG.hex(), "genesis tag")
    c.equal(k["leaf_prefix_hex"], LEAF_PREFIX.hex(), "leaf prefix")
    c.equal(k["node_prefix_hex"], NODE_PREFIX.hex(), "node prefix")
    c.equal(k["empty_root"], sha256(b"").hex(), "empty root")
    c.equal(k["checkpoint_header"], CHECKPOINT_HEADER, "checkpoint header")
    c.equal(k["checkpoint_origin"], CHECKPOINT_ORIGIN, "checkpoint origin")
    for g in k["genesis"]:
        c.equal(g["hash"], genesis_hash(g["partition"]).hex(), f"genesis of {g['partition']}")

    # Chains: consecutive cases of one partition link.
    chains = {}
    cases = v["cases"]
    c.check(len(cases) >= 12, "at least 12 cases")
    for case in cases:
        p, seq = case["partition"], case["seq"]
        where = f"case partition {p} seq {seq}"
        chain = chains.setdefault(p, {"entries": [], "times": []})
        c.equal(seq, len(chain["entries"]), f"{where}: sequence continuity")
        prev = chain["entries"][-1] if chain["entries"] else genesis_hash(p)
        c.equal(case["prev_hash"], prev.hex(), f"{where}: prev_hash links")
        canonical = bytes.fromhex(case["canonical_hex"])
        c.equal(case["canonical_utf8"].encode("utf-8"), canonical, f"{where}: utf8 == hex")
        try:
            mine = event_canonical(case["event"])
        except JcsError as e:
            mine = f"error: {e}"
        c.equal(mine, canonical, f"{where}: canonical bytes (own JCS)")
        recomputed = entry_hash(bytes.fromhex(case["prev_hash"]), seq, canonical)
        c.equal(case["entry_hash"], recomputed.hex(), f"{where}: entry hash")
        chain["entries"].append(recomputed)
        chain["times"].append(case["event"]["occurred_at"])

    # Merkle roots and proofs over one chain's entry hashes.
    m = v["merkle"]
    entries = chains[m["partition"]]["entries"]
    leaves = [leaf_hash(e) for e in entries]
    c.equal(len(m["roots"]), len(entries) + 1, "a root for every tree size")
    for r in m["roots"]:
        n = r["tree_size"]
        c.equal(r["root"], mth(leaves[:n]).hex(), f"merkle root at size {n}")
    for pr in m["inclusion_proofs"]:
        i, n = pr["leaf_index"], pr["tree_size"]
        proof = [bytes.fromhex(h) for h in pr["proof"]]
        c.equal(pr["entry_hash"], entries[i].hex(), f"inclusion {i}/{n}: entry hash")
        c.equal(pr["root"], mth(leaves[:n]).hex(), f"inclusion {i}/{n}: root")
        c.equal(proof, path(i, leaves[:n]), f"inclusion {i}/{n}: PATH")
        c.check(verify_inclusion(leaves[i], i, n, proof, bytes.fromhex(pr["root"])),
                f"inclusion {i}/{n}: verifies")
        if proof:
            tampered = [bytes([proof[0][0] ^ 1]) + proof[0][1:]] + proof[1:]
            c.check(not verify_inclusion(leaves[i], i, n, tampered, bytes.fromhex(pr["root"])),
                    f"inclusion {i}/{n}: tampered proof fails")
    for cp in m["consistency_proofs"]:
        a, b = cp["old_size"], cp["new_size"]
        proof = [bytes.fromhex(h) for h in cp["proof"]]
        c.equal(cp["old_root"], mth(leaves[:a]).hex(), f"consistency {a}->{b}: old root")
        c.equal(cp["new_root"], mth(leaves[:b]).hex(), f"consistency {a}->{b}: new root")
        c.equal(proof, subproof(a, leaves[:b], True), f"consistency {a}->{b}: PROOF")
        c.check(verify_consistency(a, b, mth(leaves[:a]), mth(leaves[:b]), proof),
                f"consistency {a}->{b}: verifies")

    # Checkpoint bodies.
    for cp in v["checkpoints"]:
        p, n = cp["partition"], cp["tree_size"]
        where = f"checkpoint partition {p} size {n}"
        chain = chains[p]
        es = chain["entries"][:n]
        root = mth([leaf_hash(e) for e in es])
        head = es[-1] if es else genesis_hash(p)
        time_ms = chain["times"][n - 1] if n else 0
        c.equal(cp["origin"], CHECKPOINT_ORIGIN, f"{where}: origin")
        c.equal(cp["root"], root.hex(), f"{where}: root")
        c.equal(cp["root_base64"], base64.b64encode(root).decode(), f"{where}: base64 root")
        c.equal(cp["head_hash"], head.hex(), f"{where}: head hash")
        c.equal(cp["time_ms"], time_ms, f"{where}: time")
        c.equal(cp["frontier"], [h.hex() for h in frontier(es)], f"{where}: frontier")
        fr = [bytes.fromhex(h) for h in cp["frontier"]]
        folded = fr[-1] if fr else sha256(b"")
        for left in reversed(fr[:-1]):
            folded = node_hash(left, folded)
        c.equal(folded, root, f"{where}: frontier folds to the root")
        body = (f"{CHECKPOINT_HEADER}\n{cp['origin']}\n{p}\n{n}\n"
                f"{base64.b64encode(root).decode()}\n{head.hex()}\n{time_ms}\n").encode()
        c.equal(cp["body_utf8"].encode("utf-8"), body, f"{where}: body")
        c.equal(bytes.fromhex(cp["body_hex"]), body, f"{where}: body hex")

    for bad in v["invalid_payloads"]:
        try:
            jcs(bad["payload"])
            rejected = False
        except JcsError:
            rejected = True
        c.check(rejected, f"invalid payload rejected ({bad['reason']}): {bad['payload']!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("vectors", nargs="?", default=str(DEFAULT_VECTORS))
    ap.add_argument("--rfc8785-dir", default=str(DEFAULT_RFC8785))
    args = ap.parse_args()
    c = Checker()
    check_rfc8785(c, Path(args.rfc8785_dir))
    try:
        vectors = json.loads(Path(args.vectors).read_text(encoding="utf-8"))
        check_vectors(c, vectors)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        c.check(False, f"reading {args.vectors}: {type(e).__name__}: {e}")
    print(f"verify_audit_vectors: {c.passed} passed, {c.failed} failed")
    return 0 if c.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
