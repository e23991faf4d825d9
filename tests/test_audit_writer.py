"""The lean audit writer (schema v3): a statement record's spliced bytes are its RFC 8785 form,
the queue holds plain data, parameters are digested with keyed BLAKE2b, v1 / v2 still written
and read."""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import hmac
import json
import types
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import governed_db
from governed_db import Identity
from governed_db.audit import AuditLog, StatementStatic, verify
from governed_db.audit._canonical import jcs, to_ijson
from governed_db.audit._record import Timestamps

AGENT = Identity("writer-agent", "ai_agent", purpose="tests", model="m")
QUERY = "SELECT a FROM t WHERE a = %s"

# -- the spliced bytes are the record's canonical form ----------------------------------------

_text = st.text(max_size=12)
_names = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6) | st.sampled_from(
    ["\ue000", "\U0001f600", "é", "a"])
_scalar = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | _text
           | st.floats(allow_nan=True, allow_infinity=True))
_value = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(_names, inner, max_size=3), max_leaves=8)
_cols = st.frozensets(st.text("abcdefgh.", min_size=1, max_size=8), max_size=4)


@st.composite
def _records(draw: Any) -> tuple[Any, ...]:
    ident = Identity(draw(st.text("abcxyz-", min_size=1, max_size=8)),
                     draw(st.sampled_from(["service", "ai_agent", "human"])),
                     purpose=draw(st.none() | _text), model=draw(st.none() | _text),
                     roles=draw(st.lists(st.text("abc", min_size=1, max_size=3), max_size=2)),
                     attributes=draw(st.dictionaries(_names, _value, max_size=4)))
    db = draw(st.dictionaries(st.sampled_from(["host", "port", "dbname", "user"]),
                              _text | st.integers(0, 70000)))
    n = draw(st.integers(0, 2))
    analysis = types.SimpleNamespace(
        fingerprint=draw(_text), normalized=draw(_text), summary=draw(_text),
        kinds=draw(st.frozensets(st.sampled_from(["SELECT", "INSERT", "UPDATE"]), max_size=2)),
        error=draw(st.none() | _text))
    stmts = tuple(types.SimpleNamespace(reads=draw(_cols), writes=draw(_cols)) for _ in range(n))
    decision = types.SimpleNamespace(
        action=draw(st.sampled_from(["allow", "deny", "approval"])),
        would=draw(st.sampled_from(["allow", "deny"])), observe=draw(st.booleans()),
        rule_ids=tuple(draw(st.lists(_text, max_size=3))))
    plans = {i: (None, draw(st.dictionaries(_text, _text, max_size=2)), draw(_cols))
             for i in range(draw(st.integers(0, 2)))}
    lineage = {i: tuple((draw(_text), tuple(draw(st.lists(_text, max_size=2))))
                        for _ in range(draw(st.integers(0, 2))))
               for i in range(draw(st.integers(0, 2)))}
    key = draw(st.binary(min_size=1, max_size=80))
    static = StatementStatic(ident, db, analysis, stmts, decision, plans, lineage, key)
    outcome = draw(st.fixed_dictionaries(
        {"outcome": st.sampled_from(["ok", "error"])},
        optional={"rowcount": st.integers(-1, 2**60), "status": st.none() | _text,
                  "sqlstate": _text, "warnings": st.none() | st.lists(_text, max_size=2)}))
    item = (static, draw(_text), draw(st.integers(0, 2**62)),
            draw(st.floats(0, 1e9) | st.integers(0, 10**6).map(float)),
            draw(st.none() | st.lists(st.binary(max_size=6) | st.none() | _text | st.integers(),
                                      max_size=3)),
            draw(st.none() | _text), outcome,
            draw(st.none() | st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 2**64 - 1))))
    return item


def _expected(item: tuple[Any, ...], chain: dict[str, Any]) -> dict[str, Any]:
    """The documented statement record, built here from the item (not by the writer)."""
    static, sid, ts_ns, dur, params, approval, outcome, trace = item
    ident = static.identity.to_record()
    masked: dict[str, str] = {}
    columns: set[str] = set()
    for _, m, cols in static.plans.values():
        masked.update(m)
        columns |= cols
    a, stmts, d = static.analysis, static.statements, static.decision
    key = static.param_key if len(static.param_key) <= 64 else \
        hashlib.blake2b(static.param_key).digest()

    def digest(p: Any) -> str:
        raw = bytes(p) if isinstance(p, bytes) else b"\x00NULL" if p is None else \
            str(p).encode("utf-8", "surrogatepass")
        return hashlib.blake2b(raw, key=key, digest_size=12).hexdigest()

    rec = {
        "type": "statement", "id": sid,
        "ts": _iso(ts_ns),
        "identity": ident, "db": static.db,
        "statement": {"fingerprint": a.fingerprint,
                      "normalized": a.normalized if a.error is None else None,
                      "summary": a.summary, "kinds": sorted(a.kinds) if stmts else [],
                      "reads": sorted({t for s in stmts for t in s.reads}),
                      "writes": sorted({t for s in stmts for t in s.writes}),
                      "params": [digest(p) for p in params or ()]},
        "decision": {"action": d.action, "would": d.would, "rules": list(d.rule_ids),
                     "observe": d.observe, "approval": approval},
        "columns": sorted(columns), "masked": masked,
        "outcome": {k: v for k, v in outcome.items() if v is not None},
        "duration_ms": round(dur, 3), **chain}
    lineage = [[name, list(srcs)] for i in sorted(static.lineage or {})
               for name, srcs in static.lineage[i]]
    if static.lineage:  # a result with no columns too: "lineage": []
        rec["lineage"] = lineage
    if trace is not None:
        rec["trace"] = {"trace_id": f"{trace[0]:032x}", "span_id": f"{trace[1]:016x}"}
    return to_ijson(rec)


def _iso(ts_ns: int) -> str:
    sec, us = divmod(ts_ns // 1000, 1_000_000)
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=sec, microseconds=us)
            ).isoformat(timespec="microseconds")


@settings(max_examples=300, deadline=None)
@given(item=_records())
def test_spliced_statement_line_is_the_jcs_form_of_the_documented_record(item):
    log = AuditLog.in_memory()
    # The same plan again with another outcome, then the first outcome again (the writer
    # remembers the last outcome's bytes per plan).
    failed = {"outcome": "error", "sqlstate": "42501", "error_class": "InsufficientPrivilege"}
    items = [item, item[:6] + (failed,) + item[7:], item]
    try:
        for seq, it in enumerate(items, 1):
            prev = log._prev
            _, line = log._statement_line(it)
            rec = json.loads(line)
            body = {k: v for k, v in rec.items() if k not in ("hash", "sig")}
            canonical = jcs(body)
            digest = hashlib.sha256(canonical).hexdigest()
            assert line == canonical[:-1] + b',"hash":"' + digest.encode() + b'"}\n'
            chain = {"v": 3, "chain": log.chain, "seq": seq, "prev": prev, "key_id": log.key_id}
            assert canonical == jcs(_expected(it, chain))
            assert log._prev == digest
    finally:
        log.close()


@given(ts_ns=st.integers(0, 2**63 - 1) | st.integers(1_700_000_000 * 10**9, 1_900_000_000 * 10**9))
@settings(max_examples=500, deadline=None)
def test_timestamp_prefix_cached_per_second_is_isoformat(ts_ns):
    cache = Timestamps()
    if ts_ns > 253402300799 * 10**9:  # beyond year 9999: not a record's time
        return
    for t in (ts_ns, ts_ns + 1, ts_ns + 999_999_999, ts_ns):
        assert cache.text(t).decode() == _iso(t)


# -- on real statements -------------------------------------------------------------------------


class _RecordingQueue:
    """The log's queue, keeping a copy of every item put on it (what the writer is given)."""

    def __init__(self, queue: Any, into: list[Any]) -> None:
        self._queue, self._into = queue, into

    def put(self, item: Any) -> None:
        self._into.append(item)
        self._queue.put(item)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


def _captured(log: AuditLog) -> list[Any]:
    items: list[Any] = []
    log._queue = _RecordingQueue(log._queue, items)  # type: ignore[assignment]
    return items


def _reachable(root: Any, limit: int = 20000) -> list[Any]:
    seen: dict[int, Any] = {}
    stack = [root]
    while stack and len(seen) < limit:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (type, types.ModuleType, types.FunctionType,
                                               types.BuiltinFunctionType)):
            continue
        seen[id(obj)] = obj
        stack.extend(gc.get_referents(obj))
    return list(seen.values())


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_queue_holds_plain_data_not_the_statement_or_connection(dsn, tmp_path, kind):
    from governed_db.engine import Governor, StatementContext

    log = AuditLog.open(tmp_path / "audit.jsonl")
    items = _captured(log)
    if kind == "sync":
        conn: Any = governed_db.connect(dsn, identity=AGENT, audit=log, autocommit=True)
        conn.execute(QUERY, (1,)).fetchall()
        conn.execute(QUERY, (2,)).fetchall()
    else:
        conn = await governed_db.AsyncConnection.connect(dsn, identity=AGENT, audit=log,
                                                         autocommit=True)
        await (await conn.execute(QUERY, (1,))).fetchall()
        await (await conn.execute(QUERY, (2,))).fetchall()
    stmts = [it for it in items if type(it) is tuple]
    assert len(stmts) == 2 and stmts[0][0] is stmts[1][0]  # one static part per plan
    forbidden = (StatementContext, Governor, governed_db.Connection, governed_db.Cursor,
                 governed_db.AsyncConnection, governed_db.AsyncCursor)
    for it in stmts:
        assert isinstance(it[0], StatementStatic)
        bad = [type(o).__name__ for o in _reachable(it) if isinstance(o, forbidden)]
        assert bad == []
    if kind == "sync":
        conn.close()
    else:
        await conn.close()
    log.close()


@pytest.mark.parametrize("version", [2, 3])
def test_parameter_digests_per_schema_version(dsn, tmp_path, version):
    """v3: keyed BLAKE2b-96 of the bytes sent; v2 (still written on request): HMAC-SHA-256."""
    log = AuditLog(tmp_path / "audit.jsonl", schema_version=version)
    items = _captured(log)
    with governed_db.connect(dsn, identity=AGENT, audit=log, autocommit=True) as conn:
        conn.execute("SELECT %s::text, %s::int, %s::text", ("ab", 7, None)).fetchall()
    log.close()
    recs = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    (rec,) = [r for r in recs if r["type"] == "statement"]
    assert {r["v"] for r in recs} == {version}
    (item,) = [it for it in items if type(it) is tuple]
    key, sent = item[0].param_key, item[4]
    assert len(sent) == 3 and sent[2] is None

    def raw(p: Any) -> bytes:
        return b"\x00NULL" if p is None else bytes(p)

    blake = [hashlib.blake2b(raw(p), key=key, digest_size=12).hexdigest() for p in sent]
    mac = [hmac.new(key, raw(p), hashlib.sha256).hexdigest()[:24] for p in sent]
    assert rec["statement"]["params"] == (blake if version == 3 else mac)
    assert blake != mac
    verify(tmp_path / "audit.jsonl", log.key.public_key())


def test_identity_attributes_changed_make_a_new_static_part(dsn, audit):
    with governed_db.connect(dsn, identity=AGENT, audit=audit, autocommit=True) as conn:
        conn.execute(QUERY, (1,))
        with governed_db.acting_as(AGENT.evolve(attributes={"run": "r2"})):
            conn.execute(QUERY, (1,))
        conn.execute(QUERY, (1,))
    audit.flush()
    got = [r["identity"].get("attributes") for r in audit.records if r["type"] == "statement"]
    assert got == [None, {"run": "r2"}, None]


def test_duration_text_is_es_number_of_the_rounded_duration():
    import random

    from governed_db.audit._canonical import es_number
    from governed_db.audit._record import duration_bytes

    rng = random.Random(7)
    xs = [rng.uniform(0, 10.0**e) for e in range(-4, 17) for _ in range(2000)]
    xs += [0.0, 0.0004, 0.0005, 0.001, 1.0, 2.5, 1e15, 1e15 + 0.5, 1e16, 3e17]
    assert [x for x in xs if duration_bytes(x) != es_number(round(x, 3)).encode()] == []


def test_event_records_are_made_on_the_writer_thread_and_fail_closed(tmp_path):
    from governed_db import errors
    from governed_db.audit import iter_records

    log = AuditLog.open(tmp_path / "audit.jsonl")
    log.event("custom", AGENT, {"dbname": "d"}, n=1, skipped=None)
    log.flush()
    log.event("custom", AGENT, {"dbname": "d"}, bad=object())  # queued: no error here
    with pytest.raises(errors.AuditUnavailable, match="record of a custom could not be built"):
        log.flush(timeout=5)
    log.close()
    recs = [rec for _, rec, _ in iter_records(log.path) if rec]
    first = recs[0]
    assert first["type"] == "custom" and first["n"] == 1 and "skipped" not in first
    assert first["identity"]["id"] == "writer-agent" and first["db"] == {"dbname": "d"}
    assert dt.datetime.fromisoformat(first["ts"]).tzinfo == dt.UTC
    failed = [r for r in recs if r["type"] == "record_failed"]
    assert [(r["record_type"], r["error"]) for r in failed] == [("custom", "TypeError")]
    verify(log.path, log.key.public_key())
