"""The audit log's canonical form (schema v2, RFC 8785 JCS), v1 logs still verifying, and the
reference verifier in docs/ agreeing with `governed-db audit verify`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import struct
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

import governed_db
from governed_db import Identity, errors
from governed_db.audit import (
    SCHEMA_VERSION,
    AuditLog,
    VerificationError,
    canonical,
    load_public_key,
    verify,
)
from governed_db.cli import main

from .conftest import scratch_database
from governed_db.audit._canonical import (
    canonical_bytes,
    es_number,
    jcs,
    to_ijson,
)

# RFC 8785 Appendix B: IEEE 754 bit patterns and their ECMAScript serialization.
RFC8785_NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),  # minus zero
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),  # round to even
]


def _double(bits: str) -> float:
    return struct.unpack(">d", bytes.fromhex(bits))[0]


@pytest.mark.parametrize(("bits", "expected"), RFC8785_NUMBERS)
def test_rfc8785_number_vectors(bits, expected):
    x = _double(bits)
    assert es_number(x) == expected
    assert jcs(x) == expected.encode()
    assert canonical_bytes([x]) == b"[" + expected.encode() + b"]"


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_rfc8785_non_finite_have_no_form_and_the_writer_records_them_as_text(bits):
    x = _double(bits)
    with pytest.raises(ValueError, match="no JSON form"):
        jcs(x)
    assert to_ijson(x) == {"7fffffffffffffff": "NaN", "7ff0000000000000": "Infinity",
                           "fff0000000000000": "-Infinity"}[bits]
    assert canonical_bytes({"x": x}) == b'{"x":"' + to_ijson(x).encode() + b'"}'


def test_rfc8785_example_3_2_2():
    # The input of RFC 8785 §3.2.2 as JSON text, parsed (numbers as doubles), canonicalized.
    text = ('{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
            ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
            ' "literals": [null, true, false]}')
    expected = ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,'
                '1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}').encode()
    value = json.loads(text)
    assert jcs(value) == expected
    assert canonical_bytes(value) == expected


def test_rfc8785_sorting_3_2_3():
    value = {"\u20ac": "Euro Sign", "\r": "Carriage Return",
             "\ufb33": "Hebrew Letter Dalet With Dagesh", "1": "One",
             "\U0001f600": "Emoji: Grinning Face", "\u0080": "Control",
             "\u00f6": "Latin Small Letter O With Diaeresis"}
    order = ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    expected = ("{" + ",".join(f'"{k}":"{value[k]}"' if k != "\r" else
                               f'"\\r":"{value[k]}"' for k in order) + "}").encode()
    assert jcs(value) == expected
    assert canonical_bytes(value) == expected
    # orjson alone sorts by code point (U+FB33 before U+1F600): the fast path must notice.
    assert orjson.dumps(value, option=orjson.OPT_SORT_KEYS) != expected
    assert canonical_bytes(value, floats=False) == expected


def test_string_escaping_is_jcs_minimal():
    s = "".join(map(chr, range(0x00, 0x20))) + '"\\/\x7f\u2028\u2029é😀'
    expected = ('"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r'
                '\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018'
                '\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\\"\\\\/\x7f\u2028\u2029é😀"')
    assert jcs(s) == expected.encode()
    assert canonical_bytes([s]) == b"[" + expected.encode() + b"]"
    with pytest.raises(UnicodeEncodeError):
        jcs("\ud800")  # a lone surrogate has no UTF-8 form


def test_large_integers_are_text_in_records_and_doubles_to_jcs():
    limit = 2**53 - 1
    assert canonical_bytes([limit, -limit]) == f"[{limit},{-limit}]".encode()
    assert canonical_bytes([limit + 1, -(limit + 2), 2**70]) == \
        f'["{limit + 1}","{-(limit + 2)}","{2**70}"]'.encode()
    # A parsed integer token is a double to JCS, as to any JavaScript verifier.
    assert jcs(2**53 + 1) == b"9007199254740992"
    assert jcs(10**21) == b"1e+21"


def _random_doubles(n: int) -> list[float]:
    rng = random.Random(8785)
    out = [_double(bits) for bits, _ in RFC8785_NUMBERS]
    while len(out) < n:
        x = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if math.isfinite(x):
            out.append(x)
    for e in range(-30, 30):
        for m in (1, 1.5, 2, 5, 9.999999999999998, 123456789):
            out += [m * 10.0**e, -m * 10.0**e]
    out += [float(i) for i in range(-300, 300)] + [round(rng.uniform(0, 100), 3)
                                                    for _ in range(2000)]
    return out


def test_orjson_writes_statement_durations_as_jcs_does():
    """The writer trusts orjson's bytes for a statement record's duration_ms (a float in
    [1e-5, 1e16) that is not whole, ``_record.duration_bytes``): pinned on random doubles."""
    rng = random.Random(13)
    xs = [x for x in _random_doubles(20_000) if 1e-5 <= abs(x) < 1e16 and not x.is_integer()]
    xs += [round(rng.uniform(0, 10**e), 3) for e in range(-2, 12) for _ in range(500)]
    xs = [x for x in xs if 1e-5 <= x < 1e16 and not x.is_integer()]
    assert len(xs) > 5_000
    assert [x for x in xs if orjson.dumps(x) != es_number(x).encode()] == []
    # ... and not outside it, where the writer takes the fragment path.
    for x in (100.0, -0.0, 1e16, 1.5e17, 1e-6, 9.5e-6):
        assert orjson.dumps(x) != es_number(x).encode()
        assert canonical_bytes([x]) == jcs([x])
        assert canonical_bytes({"duration_ms": x, "identity": {}}, floats=True) == \
            jcs({"duration_ms": x, "identity": {}})


@pytest.mark.skipif(not __import__("shutil").which("node"), reason="node is not installed")
def test_es_number_matches_javascript():
    import subprocess

    xs = _random_doubles(20_000)
    out = subprocess.run(["node", "-e", "const a=JSON.parse(require('fs').readFileSync(0,'utf8'));"
                          "process.stdout.write(JSON.stringify(a.map(String)))"],
                         input=json.dumps(xs), capture_output=True, text=True, check=True)
    assert [es_number(x) for x in xs] == json.loads(out.stdout)


_KEYS = st.text(st.characters(blacklist_categories=("Cs",)), max_size=4) | st.sampled_from(
    ["\ue000", "\uffff", "\U0001f600", "\U00010000", "a", "é"])
_SCALARS = (st.none() | st.booleans() | st.floats(allow_nan=True, allow_infinity=True)
            | st.integers(min_value=-(2**70), max_value=2**70)
            | st.text(st.characters(blacklist_categories=("Cs",)), max_size=8))
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(_KEYS, inner, max_size=5), max_leaves=20)


def _has_float(value) -> bool:
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return isinstance(value, float)


@settings(max_examples=400, deadline=None)
@given(_VALUES)
def test_writer_fast_path_is_jcs_of_ijson(value):
    ijson = to_ijson(value)
    assert canonical_bytes(ijson) == jcs(ijson)
    assert canonical_bytes(value) == jcs(ijson)
    if not _has_float(value):
        # No float: the writer may skip the walk, and the bytes are the same.
        assert canonical_bytes(value, floats=False) == jcs(ijson)
    # What the writer wrote parses back to a value with the same canonical form.
    assert jcs(json.loads(canonical_bytes(ijson))) == canonical_bytes(ijson)


# -- logs ------------------------------------------------------------------------------------

ODD = Identity("canon-svc", "service", attributes={
    "ratio": 0.1, "whole": 2.0, "tiny": 1e-6, "huge": 1e20, "big": 2**64 + 1, "neg": -0.0,
    "nan": float("nan"), "inf": float("-inf"), "name": "Zoë 😀", "\ue000": "private use"})


def _write(path, key, version, events=4):
    log = AuditLog(path, signing_key=key, schema_version=version)
    for i in range(events):
        log.event("canon_test", ODD, {"host": "h", "port": 5432}, n=i, floats=[1.5, 3.0, 1e16],
                  nested={"k": [{"d": 2**60, "ü": "ß"}, None, True]}, big=2**53 + i)
    log.close()
    return path


@pytest.mark.parametrize("version", [1, 2, 3])
def test_log_of_each_schema_version_verifies(tmp_path, version):
    key = Ed25519PrivateKey.generate()
    path = _write(tmp_path / "a.jsonl", key, version)
    report = verify(path, key.public_key())
    assert report.records == 5 and report.open_chains == ()
    lines = path.read_bytes().splitlines()
    recs = [json.loads(line) for line in lines]
    assert {r["v"] for r in recs} == {version}
    for line, rec in zip(lines, recs):
        body = canonical(rec)
        assert hashlib.sha256(body).hexdigest() == rec["hash"]
        tail = b',"hash":"' + rec["hash"].encode() + b'"'
        tail += b',"sig":"' + rec["sig"].encode() + b'"' if "sig" in rec else b""
        assert line == body[:-1] + tail + b"}"  # the line is the hashed bytes plus hash/sig
        if version >= 2:
            assert body == jcs({k: v for k, v in rec.items() if k not in ("hash", "sig")})


def test_v1_bytes_are_not_jcs_so_verify_dispatches_on_version(tmp_path):
    key = Ed25519PrivateKey.generate()
    line = _write(tmp_path / "a.jsonl", key, 1).read_bytes().splitlines()[0]
    assert b'"whole":2.0' in line and b'"nan":"NaN"' in line  # orjson's v1 form
    assert SCHEMA_VERSION == 3
    rec = json.loads(line)
    assert canonical(rec) != jcs({k: v for k, v in rec.items() if k not in ("hash", "sig")})


def test_v2_record_values(tmp_path):
    key = Ed25519PrivateKey.generate()
    rec = json.loads(_write(tmp_path / "a.jsonl", key, 2).read_bytes().splitlines()[0])
    assert rec["identity"]["attributes"] == {
        "ratio": 0.1, "whole": 2, "tiny": 0.000001, "huge": 100000000000000000000,
        "big": str(2**64 + 1), "neg": 0, "nan": "NaN", "inf": "-Infinity",
        "name": "Zoë 😀", "\ue000": "private use"}
    assert rec["big"] == str(2**53) and rec["nested"]["k"][0]["d"] == str(2**60)
    assert rec["floats"] == [1.5, 3, 10000000000000000]


def _rehash(rec: dict, hashed: dict | None = None) -> str:
    """``rec`` as JSON text with the hash of ``hashed`` (default: of itself)."""
    body = {k: v for k, v in rec.items() if k not in ("hash", "sig")}
    digest = hashlib.sha256(canonical({k: v for k, v in (hashed or rec).items()
                                       if k not in ("hash", "sig")})).hexdigest()
    return json.dumps(body)[:-1] + f', "hash": "{digest}"}}'


@pytest.mark.parametrize("edit", ["nan_token", "duplicate_member", "unknown_version"])
def test_v2_lines_that_are_not_ijson_are_refused_even_with_a_matching_hash(tmp_path, edit):
    """A line a lenient parser reads one way and a strict verifier refuses is an edit."""
    key = Ed25519PrivateKey.generate()
    path = _write(tmp_path / "a.jsonl", key, 2, events=1)
    lines = path.read_text().removesuffix("\n").split("\n")
    rec = json.loads(lines[0])
    if edit == "nan_token":
        # The hash a lenient verifier computes (orjson writes NaN as null).
        lenient = json.loads(lines[0])
        lenient["identity"]["attributes"]["nan"] = None
        rec["identity"]["attributes"]["nan"] = float("nan")
        text = _rehash(rec, lenient)
        assert "NaN" in text and '"NaN"' not in text
        reason = "not I-JSON"
    elif edit == "duplicate_member":
        text = _rehash(rec).replace('"type":', '"type": "connect", "type":', 1)
        reason = "not I-JSON"
    else:
        rec["v"] = 4
        text = _rehash(rec)
        reason = "schema version 4"
    lines[0] = text
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(VerificationError, match=reason) as info:
        verify(path, key.public_key())
    assert info.value.index == 1


# -- the reference verifier (docs/verify_audit_log.py) against real logs ------------------------

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "verify_audit_log.py"
WRITER = Identity("canon-writer", "service", purpose="vérifier 検証", attributes={
    "ratio": 0.1, "whole": 3.0, "tiny": 2e-6, "huge": 1.5e17, "big": 2**63 + 7,
    "nan": float("nan"), "name": "Zoë 😀 \u2028", "\ufb33": "x", "\U0001f600": "y"})
# No float: its records take the writer's fast path, whose name order must still be UTF-16's.
UNSORTED = Identity("canon-keys", "service", attributes={"\ufb33": "x", "\U0001f600": 2**60})
PLAIN = Identity("canon-plain", "service")


async def _async_statements(dsn: str, log: AuditLog) -> None:
    async with await governed_db.AsyncConnection.connect(dsn, identity=WRITER, audit=log) as c:
        cur = c.cursor()
        await cur.execute("SELECT id, name FROM users WHERE id = %s AND name <> %s",
                          (1001, "Zoë 😀"))
        await cur.fetchall()
        await cur.execute("SELECT %s::jsonb AS nested", (Jsonb({"a": [1.5, 2**60, {"ü": None}]}),))
        await cur.fetchall()


def _suite_log(dsn: str, tmp_path: Path) -> tuple[Path, Path]:
    """A log as the suite writes them: statements from sync and async connections, events,
    two writers' chains interleaved in one file, signed checkpoints."""
    key = Ed25519PrivateKey.generate()
    path, pub = tmp_path / "audit.jsonl", tmp_path / "audit-signing.pub"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    first = AuditLog(path, signing_key=key, settings={"checkpoint_every": 5})
    second = AuditLog(path, signing_key=key)
    with governed_db.connect(dsn, identity=WRITER, audit=first) as c:
        for i, params in enumerate([(1001,), (2**40,), (-1,)]):
            c.execute("SELECT email, ssn, name AS \"naïve 😀\" FROM users WHERE id = %s",
                      params).fetchall()
            c.execute("UPDATE orders SET note = %s WHERE id = %s", (f"ünïcode {i}", 1))
            c.commit()
        c.execute("SELECT %s::jsonb, %s::float8, %s::numeric",
                  (Jsonb({"k": [1e-7, 1e21, 2.0, "\u0001\u001f"]}), 1e-6, 2**70)).fetchall()
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("DELETE FROM orders")
        c.rollback()
        for who in (UNSORTED, PLAIN):
            with governed_db.connect(dsn, identity=who, audit=second) as other:
                other.execute("SELECT id FROM users WHERE id = %s", (1001,)).fetchall()
        second.event("canon_test", WRITER, {"host": "h"}, floats=[1e16, 0.000001, -0.0],
                      nested={"d": [{"big": 2**53}, True, None]})
        first.flush()
    asyncio.run(_async_statements(dsn, first))
    second.close()
    first.close()
    return path, pub


def _governed(path: Path, pub: Path) -> int | None:
    """The first bad line `governed-db audit verify` names (None: intact), its CLI agreeing."""
    result = CliRunner().invoke(main, ["audit", "verify", str(path), "--public-key", str(pub)])
    try:
        verify(path, load_public_key(pub))
    except VerificationError as exc:
        assert result.exit_code != 0, result.output
        return exc.index
    assert result.exit_code == 0, result.output
    return None


def _reference(path: Path, pub: Path, *, stdlib_only: bool = False) -> int | None:
    """The first bad line the reference verifier names (None: intact). ``stdlib_only`` runs
    it without site-packages (no `cryptography`), as an auditor's bare Python would."""
    cmd = [sys.executable, *(["-S"] if stdlib_only else []), str(REFERENCE), str(path),
           "--public-key", str(pub)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert ("signatures not checked" in proc.stderr) == stdlib_only, proc.stderr
    if proc.returncode == 0:
        assert proc.stdout.startswith("OK: "), proc.stdout
        return None
    assert proc.returncode == 1, proc.stdout + proc.stderr
    match = re.match(r"record (\d+): ", proc.stdout)
    assert match, proc.stdout
    return int(match.group(1))


def _records(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines]


def _with_hash(rec: dict) -> str:
    """``rec`` re-hashed as a forger would (the hash is no secret; the signature is)."""
    body = {k: v for k, v in rec.items() if k not in ("hash", "sig")}
    return json.dumps({**body, "hash": hashlib.sha256(canonical(body)).hexdigest(),
                       **({"sig": rec["sig"]} if "sig" in rec else {})}, ensure_ascii=False)


def _tamper(lines: list[str], how: str) -> tuple[list[str], bool]:
    """``lines`` changed as ``how`` says; and whether the stdlib-only mode can see it."""
    recs = _records(lines)
    stmts = [i for i, r in enumerate(recs) if r["type"] == "statement"]
    mid = stmts[len(stmts) // 2]
    chain = recs[mid]["chain"]
    same = [i for i, r in enumerate(recs) if r["chain"] == chain]
    out = list(lines)
    if how == "edited_field":
        out[mid] = lines[mid].replace('"outcome":"ok"', '"outcome":"denied"', 1)
        assert out[mid] != lines[mid]
    elif how == "edited_and_rehashed":
        rec = dict(recs[mid], duration_ms=0.001)
        out[mid] = _with_hash(rec)
    elif how == "edited_attribute_float":
        rec = recs[mid]
        rec["identity"]["attributes"]["ratio"] = 0.1000000000000001
        out[mid] = lines[mid].replace('"ratio":0.1,', '"ratio":0.1000000000000001,')
    elif how == "removed_record":
        del out[mid]
    elif how == "reordered_records":
        a, b = same[same.index(mid)], same[same.index(mid) + 1]
        out[a], out[b] = lines[b], lines[a]
    elif how == "truncated_tail":
        out = out[:same[-1]]  # the chain's close checkpoint and what follows it are gone
    elif how == "torn_tail":
        out = out[:-1] + [out[-1][: len(out[-1]) // 2]]
    elif how == "signature_removed":
        cp = next(i for i, r in enumerate(recs) if r["type"] == "checkpoint")
        rec = dict(recs[cp])
        del rec["sig"]
        out[cp] = _with_hash(rec)
    elif how == "signature_forged":
        cp = next(i for i, r in enumerate(recs) if r["type"] == "checkpoint")
        rec = dict(recs[cp], sig="00" * 64)
        out[cp] = _with_hash(rec)
        return out, False
    elif how == "nan_token":
        rec = recs[mid]
        rec["identity"]["attributes"]["nan"] = None
        text = _with_hash(rec)
        out[mid] = text.replace('"nan": null', '"nan": NaN')
        assert "NaN" in out[mid]
    elif how == "duplicate_member":
        out[mid] = lines[mid].replace('{"chain":', '{"type":"connect","chain":', 1)
    elif how == "big_integer_token":
        # A forger writes an integer token no double holds and hashes its exact digits (what a
        # verifier keeping integers exact would recompute); as a double it is 2**53. A record
        # orjson serializes alone (no float, ASCII), so the fast path meets the token.
        mid = next(i for i, r in enumerate(recs) if r["type"] == "statement"
                   and r["identity"]["id"] == "canon-plain")
        rec = recs[mid]
        body = {k: v for k, v in rec.items() if k not in ("hash", "sig")}
        body["outcome"]["rowcount"] = 2**53
        exact = jcs(body).replace(b'"rowcount":9007199254740992', b'"rowcount":9007199254740993')
        assert exact != jcs(body)
        out[mid] = exact.decode()[:-1] + f',"hash":"{hashlib.sha256(exact).hexdigest()}"}}'
    else:
        raise AssertionError(how)
    return out, True


TAMPERS = ["edited_field", "edited_and_rehashed", "edited_attribute_float", "removed_record",
           "reordered_records", "truncated_tail", "torn_tail", "signature_removed",
           "signature_forged", "nan_token", "duplicate_member", "big_integer_token"]


@pytest.fixture(scope="module")
def suite_log(server_dsn, template_db, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("canon")
    with scratch_database(server_dsn, template_db) as d:
        path, pub = _suite_log(d, tmp)
    return path, pub


def test_reference_verifier_agrees_on_a_suite_log(suite_log):
    path, pub = suite_log
    recs = _records(path.read_text().removesuffix("\n").split("\n"))
    assert {r["v"] for r in recs} == {3} and len({r["chain"] for r in recs}) == 2
    types = [r["type"] for r in recs]
    assert types.count("statement") >= 9 and "checkpoint" in types and "canon_test" in types
    text = path.read_text()
    for needle in ('"ratio":0.1,', '"whole":3,', '"tiny":0.000002,', '"huge":150000000000000000,',
                   f'"big":"{2**63 + 7}"', '"nan":"NaN"', "Zoë 😀 \u2028", "naïve 😀",
                   '"floats":[10000000000000000,0.000001,0]', '{"big":"9007199254740992"}',
                   f'"attributes":{{"\U0001f600":"{2**60}","\ufb33":"x"}}'):
        assert needle in text, needle
    assert _governed(path, pub) is None
    assert _reference(path, pub) is None
    assert _reference(path, pub, stdlib_only=True) is None


@pytest.mark.parametrize("how", TAMPERS)
def test_reference_verifier_agrees_on_tampered_logs(suite_log, tmp_path, how):
    path, pub = suite_log
    lines = path.read_text().removesuffix("\n").split("\n")
    tampered, stdlib_sees_it = _tamper(lines, how)
    bad = tmp_path / "tampered.jsonl"
    bad.write_text("\n".join(tampered) + ("" if how == "torn_tail" else "\n"))
    expected = _governed(bad, pub)
    assert expected is not None, f"{how} was not detected"
    assert _reference(bad, pub) == expected
    if stdlib_sees_it:
        assert _reference(bad, pub, stdlib_only=True) == expected
    else:
        assert _reference(bad, pub, stdlib_only=True) is None  # needs Ed25519: documented


def test_same_values_spelled_otherwise_verify_in_both(suite_log, tmp_path):
    """JCS covers values, not spellings: 3.0 for 3, 2e-6 for 0.000002, \u00e9 for é."""
    path, pub = suite_log
    text = path.read_text()
    respelled = text.replace('"whole":3,', '"whole":3.0,').replace(
        '"tiny":0.000002,', '"tiny":2e-6,').replace("Zoë", "Zo\\u00eb")
    assert respelled.count("3.0,") >= 1 and "Zo\\u00eb" in respelled and respelled != text
    out = tmp_path / "respelled.jsonl"
    out.write_text(respelled)
    assert _governed(out, pub) is None
    assert _reference(out, pub) is None


def test_reference_verifier_refuses_v1_with_its_own_status(tmp_path):
    key = Ed25519PrivateKey.generate()
    path = _write(tmp_path / "a.jsonl", key, 1)
    proc = subprocess.run([sys.executable, str(REFERENCE), str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "schema version 1," in proc.stdout
    assert verify(path, key.public_key()).records == 5


def test_reference_verifier_is_short_and_stdlib_only():
    text = REFERENCE.read_text()
    assert len(text.splitlines()) <= 170
    imports = set(re.findall(r"^\s*(?:import|from) (\w+)", text, re.M))
    assert imports <= {"argparse", "base64", "hashlib", "json", "sys", "cryptography"}
