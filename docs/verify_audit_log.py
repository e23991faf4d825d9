#!/usr/bin/env python3
"""Reference verifier for governed_db audit logs, schema v2 and v3 (docs/audit-log-format.md).

Standard library only. Checks every chain of one JSONL log: strict I-JSON lines, sequence,
previous-hash links, each record's SHA-256 over its RFC 8785 (JCS) canonical form, signatures
where they are required, key ids, and that each chain ends with its close checkpoint.

The standard library has no Ed25519: signatures are checked when the `cryptography` package
happens to be importable and --public-key is given; otherwise only their presence and the key
id (SHA-256 of the raw public key, which the stdlib can compute) are checked, and it says so.

    python3 verify_audit_log.py audit.jsonl [--public-key audit-signing.pub] [--allow-open]

Exit status: 0 intact, 1 not intact (prints "record N: reason", N the 1-based line), 2 a
record this verifier does not read (schema v1: use `governed-db audit verify`). Schema v3
differs from v2 only in how statement parameters are digested, which is not checked here.
"""

import argparse
import base64
import hashlib
import json
import sys

SIGNED_TYPES = ("checkpoint", "rotated", "record_failed")  # always signed by the writer
ESC = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


class Bad(Exception):
    pass


def number(x):
    """ECMAScript Number::toString of a double (RFC 8785 section 3.2.2.3)."""
    x = float(x)
    if x - x != 0:
        raise ValueError("NaN and infinities have no JSON form")
    if x == 0:
        return "0"
    sign, (mant, _, exp) = ("-" if x < 0 else ""), repr(abs(x)).partition("e")
    whole, _, frac = mant.partition(".")
    digits, n = whole + frac, len(whole) + int(exp or 0)
    n -= len(digits) - len(digits.lstrip("0"))
    digits = digits.strip("0")
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    e = n - 1
    return sign + digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + "+-"[e < 0] + str(abs(e))


def string(s):
    return '"' + "".join(ESC.get(c) or (f"\\u{ord(c):04x}" if c < " " else c) for c in s) + '"'


def jcs(v):
    """RFC 8785 canonical JSON text of a parsed JSON value (every number is a double)."""
    if v is None or v is True or v is False:
        return {None: "null", True: "true", False: "false"}[v]
    if isinstance(v, str):
        return string(v)
    if isinstance(v, (int, float)):
        return number(v)
    if isinstance(v, list):
        return "[" + ",".join(jcs(x) for x in v) + "]"
    keys = sorted(v, key=lambda k: k.encode("utf-16-be"))
    return "{" + ",".join(string(k) + ":" + jcs(v[k]) for k in keys) + "}"


def strict_object(pairs):
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError("a member name appears twice")
    return dict(pairs)


def no_constant(name):
    raise ValueError(name + " is not JSON")


def key_of(pem_path):
    """(key id, Ed25519 verify function or None) of a PEM SubjectPublicKeyInfo file."""
    text = open(pem_path).read()
    der = base64.b64decode("".join(ln for ln in text.splitlines() if "-----" not in ln))
    raw = der[-32:]  # an Ed25519 SubjectPublicKeyInfo ends with the 32-byte key
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        print("note: no Ed25519 in the standard library; signatures not checked", file=sys.stderr)
        return hashlib.sha256(raw).hexdigest()[:16], None
    return hashlib.sha256(raw).hexdigest()[:16], Ed25519PublicKey.from_public_bytes(raw).verify


def verify(path, key=None, allow_open=False):
    key_id, check_sig = key or (None, None)
    chains, count = {}, 0
    with open(path, "rb") as fh:  # lines end at \n only (U+2028 may stand in a string)
        lines = [raw.decode("utf-8", "replace") for raw in fh]
    for n, line in enumerate(lines, 1):
        try:
            rec = json.loads(line, object_pairs_hook=strict_object, parse_constant=no_constant)
        except ValueError:
            if n == len(lines) and not line.endswith("\n") and allow_open:
                break  # torn final line: the writer was killed mid-write
            raise Bad(f"record {n}: not a strict I-JSON record") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("chain"), str):
            raise Bad(f"record {n}: no chain id")
        st = chains.setdefault(rec["chain"], {"seq": 0, "prev": "0" * 64, "closed": False})
        if st["closed"]:
            raise Bad(f"record {n}: after the close checkpoint of its chain")
        if rec.get("v") not in (2, 3):
            raise Bad(f"record {n}: schema version {rec.get('v')!r}, this verifier reads 2 and 3")
        if rec.get("seq") != st["seq"] + 1:
            raise Bad(f"record {n}: sequence {rec.get('seq')} follows {st['seq']}")
        if rec.get("prev") != st["prev"]:
            raise Bad(f"record {n}: previous-hash link broken")
        body = {k: v for k, v in rec.items() if k not in ("hash", "sig")}
        try:
            canonical = jcs(body).encode("utf-8")
        except ValueError:  # a lone surrogate, a number beyond the doubles
            raise Bad(f"record {n}: content has no canonical form") from None
        if hashlib.sha256(canonical).hexdigest() != rec.get("hash"):
            raise Bad(f"record {n}: content does not match its hash")
        if "sig" not in rec and rec.get("type") in SIGNED_TYPES:
            raise Bad(f"record {n}: a {rec.get('type')} record without its signature")
        if "sig" in rec and key_id is not None:
            if rec.get("key_id") != key_id:
                raise Bad(f"record {n}: signed with another key")
            try:
                if check_sig:
                    check_sig(bytes.fromhex(rec["sig"]), bytes.fromhex(rec["hash"]))
            except Exception:
                raise Bad(f"record {n}: signature invalid") from None
        st.update(seq=rec["seq"], prev=rec["hash"], last=n,
                  closed=rec.get("type") == "checkpoint" and bool(rec.get("close")))
        count += 1
    for chain, st in chains.items():
        if not st["closed"] and not allow_open:
            raise Bad(f"record {st['last']}: chain {chain[:8]} ends without its close checkpoint")
    return count, len(chains)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log")
    ap.add_argument("--public-key")
    ap.add_argument("--allow-open", action="store_true", help="accept chains still written")
    args = ap.parse_args(argv)
    try:
        count, chains = verify(args.log, args.public_key and key_of(args.public_key),
                               args.allow_open)
    except Bad as exc:
        print(exc)
        return 2 if "schema version 1," in str(exc) else 1
    print(f"OK: {count} records in {chains} chains")
    return 0


if __name__ == "__main__":
    sys.exit(main())
