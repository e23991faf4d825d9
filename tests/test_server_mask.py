"""Masking done by the server: the same values as client-side masking on every fetch path,
and no raw value in psycopg's result buffer when the server masked it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

import governed_db
from governed_db import Identity, _server_mask
from governed_db.masking import ColumnMask, MaskPlan
from governed_db.policy import PolicyError, parse_policy

from .conftest import AGENT, CORPUS

HUMAN = Identity("dana", "human", purpose="support")
OFF = "[masking]\nserver_side = false\n"

# Values that stress every strategy: NULL, empty, short, exactly 8 / 9 characters,
# non-ASCII (2-, 3- and 4-byte UTF-8), combining marks, '@' first / last / twice / alone,
# newlines, longer than the 64-entry star table.
TEXTS = [None, "", "a", "abc", "abcd", "abcdefgh", "abcdefghi", "@@", "@@x", "x@@", "%_@\\", "héllo wörld", "日本語のテキストです",
         "😀😁😂🤣😃😄😅😆😉", "e\u0301e\u0301e\u0301e\u0301e\u0301", "@", "@example.com", "user@",
         "a@b", "a@b@c.example", "qem.alice@example.com", "ünï@çødé.example", "line\nbreak@x.y",
         "x" * 67, "y" * 68, "z" * 200, "123-45-6789", " padded  ", "tab\there@t"]
ALICE = TEXTS.index("qem.alice@example.com")  # the row id of an e-mail address in pii

PII_SCHEMA = """
CREATE TABLE pii (id int PRIMARY KEY, e text, p text, r text, nl text, v varchar, v20 varchar(20),
                  v3 varchar(3), h text, d date, n numeric(10,2), ts timestamp(3), flag bool,
                  u uuid, j jsonb, arr text[], ok text);
"""
PII_POLICY = """
[[masking.columns]]
columns = ["pii.e", "pii.v"]
strategy = "email"
[[masking.columns]]
columns = ["pii.p", "pii.v20", "pii.n"]
strategy = "partial"
[[masking.columns]]
columns = ["pii.r", "pii.v3", "pii.flag", "pii.j", "pii.arr", "pii.u"]
strategy = "redact"
[[masking.columns]]
columns = ["pii.nl", "pii.d", "pii.ts"]
strategy = "null"
[[masking.columns]]
columns = ["pii.h"]
strategy = "hash"
"""


def _raw(dsn: str, sql: str) -> list[Any]:
    with psycopg.connect(dsn) as raw:
        return raw.execute(sql).fetchall()


def _fill_pii(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute(PII_SCHEMA)
        for i, t in enumerate(TEXTS):
            short = None if t is None else t[:3]
            long20 = None if t is None else t[:20]
            raw.execute(
                "INSERT INTO pii VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " %s, %s, %s)",
                (i, t, t, t, t, t, long20, short, t,
                 None if t is None else f"2020-01-{i % 28 + 1:02d}",
                 None if t is None else i * 1.25,
                 None if t is None else f"2021-02-03 04:05:06.{i:03d}",
                 None if t is None else bool(i % 2),
                 None if t is None else f"00000000-0000-0000-0000-{i:012d}",
                 None if t is None else json.dumps({"k": t}),
                 None if t is None else [t, t],
                 t))


def _policy(on: bool, extra: str = ""):
    return parse_policy(extra + ("" if on else OFF))


# -- the SQL strategies are byte-identical to the client's ------------------------------------


@pytest.mark.parametrize("strategy", ["redact", "partial", "email", "email-before-14", "null"])
@pytest.mark.parametrize("typ,oid,fmod", [("text", 25, -1), ("varchar", 1043, -1),
                                          ("varchar(200)", 1043, 204)])
def test_sql_strategy_equals_client_strategy(dsn, strategy, typ, oid, fmod):
    from governed_db.masking import _Masker

    pg14 = strategy != "email-before-14"
    strategy = strategy.split("-")[0]
    masker = _Masker(ColumnMask(strategy=strategy, reason="declared"), b"k" * 32)
    expr = _server_mask.mask_expression(b"governed_db_m.c1", strategy, oid, fmod,
                                        split_part_last=pg14)
    if strategy == "email" and fmod != -1:
        assert expr is None  # may not fit varchar(n): stays client-side
        return
    assert expr is not None
    with psycopg.connect(dsn, autocommit=True) as raw:
        for value in TEXTS:
            # (% doubled: psycopg would take the LIKE pattern's % for placeholders)
            cur = raw.execute(b"SELECT " + expr.replace(b"%", b"%%") + b" FROM (SELECT %s::"
                              + typ.encode() + b") AS governed_db_m(c1)", (value,))
            (got,) = cur.fetchone()
            want = None if value is None else masker(value)
            assert got == want, (value, got, want)
            assert cur.description[0].type_code == oid
            assert cur.pgresult.fmod(0) == fmod


_ALPHABET = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
# Short strings around the 8/9 boundary and '@' placements, any code point (1-4 byte UTF-8).
_VALUES = st.lists(st.one_of(st.none(), st.text(alphabet=_ALPHABET, max_size=12),
                             st.text(alphabet=st.sampled_from("@a\u00e9\U0001f600"),
                                     max_size=12),
                             st.text(alphabet=_ALPHABET, min_size=60, max_size=80)),
                   min_size=1, max_size=40)


@pytest.mark.parametrize("strategy", ["redact", "partial", "email", "email-before-14", "null"])
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=_VALUES)
def test_sql_strategy_equals_client_strategy_for_any_text(dsn, strategy, values):
    """Property: for any text the server's expression returns what the client masker does
    (a rewrite of an expression must not differ on some input the fixed list misses)."""
    from governed_db.masking import _Masker

    pg14 = strategy != "email-before-14"
    strategy = strategy.split("-")[0]
    masker = _Masker(ColumnMask(strategy=strategy, reason="declared"), b"k" * 32)
    expr = _server_mask.mask_expression(b"governed_db_m.c1", strategy, 25, -1,
                                        split_part_last=pg14)
    assert expr is not None
    with psycopg.connect(dsn, autocommit=True) as raw:
        cur = raw.execute(b"SELECT " + expr.replace(b"%", b"%%") + b" FROM unnest(%s::text[])"
                          b" WITH ORDINALITY AS governed_db_m(c1, n) ORDER BY n", (values,))
        got = [r[0] for r in cur.fetchall()]
    assert got == [None if v is None else masker(v) for v in values]


@pytest.mark.parametrize("typ,value", [
    ("int4", "42"), ("int8", "42"), ("int2", "4"), ("numeric(10,2)", "12.5"), ("float8", "1.5"),
    ("date", "2020-01-02"), ("timestamptz", "2020-01-02 03:04:05+00"),
    ("timestamp(3)", "2020-01-02 03:04:05.123"), ("bool", "true"), ("bytea", "\\x0102"),
    ("uuid", "00000000-0000-0000-0000-000000000001"), ("inet", "10.0.0.1"),
    ("interval", "1 day"), ("oid", "7")])
@pytest.mark.parametrize("strategy", ["redact", "partial", "email", "null"])
def test_non_text_scalars_come_back_none_with_their_own_type(dsn, typ, value, strategy):
    from governed_db.masking import _Masker

    with psycopg.connect(dsn, autocommit=True) as raw:
        plain = raw.execute(f"SELECT %s::{typ}", (value,))
        loaded = plain.fetchone()[0]
        oid, fmod = plain.description[0].type_code, plain.pgresult.fmod(0)
        masker = _Masker(ColumnMask(strategy=strategy, reason="declared"), b"k" * 32)
        assert masker(loaded) is None  # what the client does
        expr = _server_mask.mask_expression(b"governed_db_m.c1", strategy, oid, fmod)
        assert expr is not None
        cur = raw.execute(b"SELECT " + expr + b" FROM (SELECT %s::" + typ.encode()
                          + b") AS governed_db_m(c1)", (value,))
        assert cur.fetchone() == (None,)
        assert (cur.description[0].type_code, cur.pgresult.fmod(0)) == (oid, fmod)


def test_types_it_cannot_mask_exactly_stay_client_side():
    for oid in (114, 3802, 1009, 1042, 19, 0, 790):  # json, jsonb, text[], bpchar, name, ...
        assert _server_mask.mask_expression(b"c", "redact", oid, -1) is None
    assert _server_mask.mask_expression(b"c", "hash", 25, -1) is None
    assert _server_mask.mask_expression(b"c", "detect", 25, -1) is None
    assert _server_mask.mask_expression(b"c", "redact", 1043, 7) is None  # varchar(3)


# -- every fetch path, server masking on and off ------------------------------------------------


def _lineage_statements() -> list[str]:
    if CORPUS is None:
        return []
    out = []
    for line in (CORPUS / "statements.jsonl").read_text().splitlines():
        case = json.loads(line)
        if case["category"] == "lineage" and not case["setup"] and not case["params"]:
            out.append(case["sql"])
    return out


OWN = [
    "SELECT id, email, ssn, name, created_at FROM users ORDER BY id",
    "SELECT email AS \"Odd \"\"name\"\"\", email, id AS email FROM users ORDER BY id DESC",
    "SELECT u.email, o.amount, u.created_at FROM users u JOIN orders o ON o.user_id = u.id"
    " ORDER BY o.amount DESC LIMIT 5",
    "SELECT email FROM users UNION ALL SELECT ssn FROM users ORDER BY 1",
    "SELECT ssn, count(*) FROM users GROUP BY ssn ORDER BY ssn",
    "WITH x AS (SELECT id, ssn FROM users) SELECT ssn, id FROM x ORDER BY id -- trailing",
    "/* lead */ SELECT email FROM users WHERE email LIKE '%@%' ORDER BY id;",
    "SELECT id, e, p, r, nl, v, v20, v3, h, d, n, ts, flag, u, j, arr, ok FROM pii ORDER BY id",
    "SELECT p, lower(p) AS lp, e || '' AS ee FROM pii ORDER BY id",
    "SELECT s.token, u.email FROM sessions s JOIN users u ON u.id = s.user_id ORDER BY s.id",
]
STATEMENTS = _lineage_statements() + OWN


def _paths(conn, sql):
    """Every way rows come out of a cursor: name -> rows."""
    out = {}
    out["fetchall"] = conn.execute(sql).fetchall()
    cur = conn.execute(sql)
    out["fetchone"] = list(iter(cur.fetchone, None))
    cur = conn.execute(sql)
    rows = []
    while chunk := cur.fetchmany(2):
        rows += chunk
    out["fetchmany"] = rows
    out["iteration"] = list(conn.execute(sql))
    cur = conn.cursor()
    out["stream"] = list(cur.stream(sql))
    cur = conn.execute(sql)
    if cur.fetchall():
        cur.scroll(0, mode="absolute")
    out["scroll"] = cur.fetchall()
    out["dict_row"] = [tuple(r.values()) for r in
                       conn.cursor(row_factory=dict_row).execute(sql).fetchall()]
    cur = conn.execute(sql)
    res = cur.pgresult
    # Raw libpq access to text columns. (A masked non-text column reads as the strategy
    # applied to its text form client-side, but as NULL from the server, which returns what
    # the row path loads: None.)
    text_cols = [j for j, d in enumerate(cur.description) if d.type_code in (25, 1043)]
    out["pgresult"] = [[res.get_value(i, j) for j in text_cols] for i in range(res.ntuples)]
    out["description"] = [(d.name, d.type_code, cur.pgresult.fmod(j))
                          for j, d in enumerate(cur.description)]
    with conn.cursor("gov_sc", scrollable=True) as sc:
        sc.execute(sql)
        first = sc.fetchmany(1)
        if first:
            sc.scroll(0, mode="absolute")
        out["server cursor"] = first + sc.fetchall()
    out["prepared"] = conn.execute(sql, prepare=True).fetchall()
    out["client cursor"] = governed_db.ClientCursor(conn).execute(sql).fetchall()
    return out


def _run_all(conn, sql):
    try:
        return _paths(conn, sql)
    except psycopg.Error as exc:
        conn.rollback()
        return type(exc).__name__
    finally:
        if not conn.closed:
            conn.rollback()


@pytest.mark.parametrize("ident", [AGENT, HUMAN], ids=["agent", "human"])
def test_every_fetch_path_returns_the_same_masked_values(dsn, ident):
    _fill_pii(dsn)
    with governed_db.connect(dsn, identity=ident, policy=_policy(True, PII_POLICY)) as on, \
            governed_db.connect(dsn, identity=ident, policy=_policy(False, PII_POLICY)) as off:
        for sql in STATEMENTS:
            want = _run_all(off, sql)
            first = _run_all(on, sql)  # learns
            again = _run_all(on, sql)  # rewritten where it applies
            assert first == want, sql
            assert again == want, sql
        masks = [v for v in on._governor.server_masks.values() if v is not None]
        assert not any(v is not None for v in off._governor.server_masks.values())
    # Most of the plain-column statements are masked by the server.
    assert len(masks) >= 10, masks


@pytest.mark.parametrize("ident", [AGENT, HUMAN], ids=["agent", "human"])
def test_async_paths_return_the_same_masked_values(dsn, ident):
    _fill_pii(dsn)

    async def paths(conn, sql):
        try:
            return await _apaths(conn, sql)
        except psycopg.Error as exc:
            await conn.rollback()
            return type(exc).__name__

    async def _apaths(conn, sql):
        out = {}
        cur = await conn.execute(sql)
        out["fetchall"] = await cur.fetchall()
        cur = await conn.execute(sql)
        out["fetchone"] = [r async for r in cur]
        cur = conn.cursor()
        out["stream"] = [r async for r in cur.stream(sql)]
        async with conn.cursor("gov_asc") as sc:
            await sc.execute(sql)
            out["server cursor"] = await sc.fetchall()
        await conn.rollback()
        return out

    async def main():
        on = await governed_db.AsyncConnection.connect(dsn, identity=ident,
                                                       policy=_policy(True, PII_POLICY))
        off = await governed_db.AsyncConnection.connect(dsn, identity=ident,
                                                        policy=_policy(False, PII_POLICY))
        try:
            for sql in OWN:
                want = await paths(off, sql)
                assert await paths(on, sql) == want, sql
                assert await paths(on, sql) == want, sql
            assert any(v is not None for v in on._governor.server_masks.values())
        finally:
            await on.close()
            await off.close()

    asyncio.run(main())


def _raw_secrets(dsn):
    with psycopg.connect(dsn) as raw:
        rows = raw.execute("SELECT email, ssn FROM users UNION ALL SELECT token, NULL"
                           " FROM sessions").fetchall()
    return {v.encode() for r in rows for v in r if v}


@pytest.mark.parametrize("sql,params", [
    ("SELECT id, email, ssn FROM users ORDER BY id", None),
    ("SELECT email, ssn FROM users WHERE id = %s", (1001,)),
    ("SELECT s.token, u.email FROM sessions s JOIN users u ON u.id = s.user_id", None),
    ("WITH x AS (SELECT ssn AS harmless FROM users) SELECT harmless FROM x", None),
])
def test_raw_value_never_reaches_the_result_buffer(dsn, audit, sql, params):
    secrets = _raw_secrets(dsn)
    with governed_db.connect(dsn, identity=AGENT, audit=audit) as conn:
        # The first execution too: its shape is described by the server before it runs.
        for prepare in (None, None, True):
            cur = conn.execute(sql, params, prepare=prepare)
            sm = cur._gov_ctx.server_mask
            assert sm is not None and sm.masked
            res = cur._gov_result  # the libpq result itself, not the governed view
            cells = [bytes(res.get_value(i, j) or b"") for i in range(res.ntuples)
                     for j in sm.masked]
            assert cells and not any(s in c for s in secrets for c in cells), cells
            assert cur.fetchall()
    audit.flush()
    recs = [r for r in audit.records if r["type"] == "statement"]
    # The audit binds to the caller's statement, never to the rewrite.
    assert not any("governed_db_m" in json.dumps(r) for r in recs)
    assert recs[-1]["masked"] == recs[0]["masked"] != {}
    assert recs[-1]["lineage"] == recs[0]["lineage"]


def test_hash_strategy_never_goes_to_the_server(dsn):
    _fill_pii(dsn)
    key = "a-very-secret-mask-key"
    import os

    os.environ["GOVERNED_DB_MASK_KEY"] = key
    try:
        with governed_db.connect(dsn, identity=HUMAN, policy=_policy(True, PII_POLICY)) as conn:
            sql = "SELECT h, e FROM pii WHERE id = " + str(ALICE)
            first = conn.execute(sql).fetchall()
            cur = conn.execute(sql)
            sm = cur._gov_ctx.server_mask
            assert sm is not None and sm.masked == (1,)  # e by the server, h by the client
            assert key.encode() not in sm.query
            assert cur.fetchall() == first
            assert first[0][0].startswith("tok_")
    finally:
        del os.environ["GOVERNED_DB_MASK_KEY"]


def test_parameters_keep_working(dsn):
    with governed_db.connect(dsn, identity=HUMAN) as conn:
        sql = "SELECT email, ssn FROM users WHERE id = %(id)s AND email LIKE %(pat)s"
        want = conn.execute(sql, {"id": 1002, "pat": "%@%"}).fetchall()
        for i in range(7):  # past psycopg's auto-prepare threshold
            got = conn.execute(sql, {"id": 1002, "pat": "%@%"}).fetchall()
            assert got == want == [("****@example.com", "***********6666")]
        assert conn.execute(sql, {"id": 1001, "pat": "%@%"}).fetchall() == \
            [("****@example.com", "***********3333")]


def test_switch_off_sends_the_callers_text(dsn):
    with governed_db.connect(dsn, identity=AGENT, policy=_policy(False)) as conn:
        for _ in range(3):
            cur = conn.execute("SELECT email FROM users")
            assert cur._gov_ctx.server_mask is None
            assert cur.fetchall() == [("****@example.com",)] * 2
        assert not any(conn._governor.server_masks.values())


def test_switch_must_be_a_boolean():
    with pytest.raises(PolicyError):
        parse_policy('[masking]\nserver_side = "yes"\n')
    assert parse_policy("").masking.server_side is True
    assert parse_policy(OFF).masking.server_side is False


@pytest.mark.parametrize("sql", [
    "SELECT email FROM users FOR UPDATE",
    "SELECT email, ssn INTO TEMP t2 FROM users",
    "COPY (SELECT email FROM users) TO STDOUT",
    "SELECT email FROM users; SELECT ssn FROM users",
    "UPDATE users SET name = name WHERE id = 1001 RETURNING email",
])
def test_statements_that_keep_client_side_masking(dsn, sql):
    with governed_db.connect(dsn, identity=HUMAN) as conn:
        for _ in range(2):
            try:
                if sql.startswith("COPY"):
                    cur = conn.cursor()
                    with cur.copy(sql) as copy:
                        data = b"".join(bytes(b) for b in copy)
                    assert b"qem." not in data and data.count(b"****@example.com") == 2
                else:
                    cur = conn.execute(sql)
            except psycopg.Error:
                conn.rollback()
                continue
            assert cur._gov_ctx.server_mask is None
            conn.rollback()
        assert not any(conn._governor.server_masks.values())


def test_custom_loader_keeps_client_side_masking(dsn):
    """A loader that turns int4 into str makes the client mask it as text: no rewrite."""
    from psycopg.types.string import TextLoader

    policy = parse_policy('[[masking.columns]]\ncolumns = ["users.org_id"]\nstrategy = "partial"\n')
    with governed_db.connect(dsn, identity=HUMAN, policy=policy) as conn:
        cur = conn.cursor()
        cur.adapters.register_loader("int4", TextLoader)
        for _ in range(2):
            rows = cur.execute("SELECT org_id FROM users ORDER BY id").fetchall()
            assert rows == [("****",), ("****",)]
            assert cur._gov_ctx.server_mask is None


def test_result_of_another_shape_is_masked_client_side(dsn, monkeypatch):
    """Fail closed: a rewritten result that does not match what was learned is planned from
    scratch (masked client-side), and the rewrite is forgotten."""
    with governed_db.connect(dsn, identity=AGENT) as conn:
        sql = "SELECT id, email FROM users ORDER BY id"
        want = conn.execute(sql).fetchall()
        gov = conn._governor
        (key, sm), = [(k, v) for k, v in gov.server_masks.items() if v is not None]
        sm.types = (sm.types[0], 1043)  # pretend the learned type was different
        # and pretend the server did not mask (the worst case: raw text in the result)
        sm.query = b"SELECT id, email FROM users ORDER BY id"
        rows = conn.execute(sql).fetchall()
        assert rows == want == [(1001, "****@example.com"), (1002, "****@example.com")]
        assert key not in gov.server_masks


def test_the_mask_plan_for_the_rest_is_kept(dsn):
    """Columns the server does not mask are still masked by the client in the same result."""
    _fill_pii(dsn)
    with governed_db.connect(dsn, identity=HUMAN, policy=_policy(True, PII_POLICY)) as conn:
        sql = "SELECT j, arr, v3, e FROM pii WHERE id = " + str(ALICE)
        first = conn.execute(sql).fetchall()
        cur = conn.execute(sql)
        sm = cur._gov_ctx.server_mask
        assert sm is not None and sm.masked == (3,)
        assert isinstance(sm.entry[0], MaskPlan)
        assert cur.fetchall() == first
        assert first[0][3] == "****@example.com" and first[0][2] == "****"


@pytest.mark.parametrize("on", [True, False], ids=["server", "client"])
def test_a_failing_statement_fails_the_same_way(dsn, on):
    """The describe step raises what the execution would: same class, transaction aborted."""
    with governed_db.connect(dsn, identity=HUMAN, policy=_policy(on)) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(psycopg.errors.UndefinedColumn):
            conn.execute("SELECT email, nosuch FROM users")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        conn.rollback()
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            conn.execute("SELECT email FROM users WHERE id = %s::int", ("x",))
        conn.rollback()
        assert conn.execute("SELECT email FROM users WHERE id = 1001").fetchone() == \
            ("****@example.com",)


def test_first_execution_is_masked_by_the_server_and_stream_learns(dsn):
    with governed_db.connect(dsn, identity=HUMAN) as conn:
        cur = conn.execute("SELECT ssn FROM users ORDER BY id")
        assert cur._gov_ctx.server_mask is not None  # described first: no raw value came
        assert cur.fetchall() == [("***********3333",), ("***********6666",)]
        sql = "SELECT ssn, id FROM users ORDER BY id"
        streamed = list(conn.cursor().stream(sql))  # no describe step: masked client-side
        cur = conn.cursor()
        assert list(cur.stream(sql)) == streamed == [("***********3333", 1001),
                                                     ("***********6666", 1002)]
        assert cur._gov_ctx.server_mask is not None  # learned from the first stream


# (type, USING expression, what the two masked values are then): a type change another
# session makes after the rewrite was learned, before this process's snapshot reloads.
RETYPED = [
    ("int", "length(ssn)", [(None,), (None,)]),  # a non-text scalar masked: None
    ("jsonb", "to_jsonb(ssn)", [("***********3333",), ("***********6666",)]),
    ("bytea", "convert_to(ssn, 'UTF8')", [(None,), (None,)]),  # bytes: withheld
    ("varchar(40)", "ssn", [("***********3333",), ("***********6666",)]),
]


@pytest.mark.parametrize("typ,using,want", RETYPED, ids=[r[0] for r in RETYPED])
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_column_type_changed_elsewhere_is_described_again(dsn, audit, kind, typ, using,
                                                                want):
    """The learned rewrite no longer applies to the new type (the masking expression does not
    analyse: no function for the type, no collation): in autocommit nothing of the statement
    ran, so it is sent again as the caller wrote it, masked client-side, and the caller sees
    what plain psycopg gives (rows, no error); the next run is described again. The failed
    attempt is recorded as such; no raw value is returned either way."""
    sql = "SELECT ssn FROM users ORDER BY id"
    secrets = [r[0] for r in _raw(dsn, "SELECT ssn FROM users")]
    if kind == "sync":
        conn: Any = governed_db.connect(dsn, identity=HUMAN, audit=audit, autocommit=True)
    else:
        conn = await governed_db.AsyncConnection.connect(dsn, identity=HUMAN, audit=audit,
                                                         autocommit=True)

    async def run() -> Any:
        if kind == "sync":
            return conn.execute(sql).fetchall()
        return await (await conn.execute(sql)).fetchall()

    try:
        for _ in range(3):
            assert await run() == [("***********3333",), ("***********6666",)]
        with psycopg.connect(dsn, autocommit=True) as raw:
            raw.execute(f"ALTER TABLE users ALTER COLUMN ssn TYPE {typ} USING {using}")
        for _ in range(3):
            rows = await run()
            assert rows == want, rows
            assert not any(str(s) in repr(rows) for s in secrets)
    finally:
        if kind == "sync":
            conn.close()
        else:
            await conn.close()
    audit.flush()
    outcomes = [r["outcome"]["outcome"] for r in audit.records if r["type"] == "statement"]
    assert outcomes.count("ok") == 6 and set(outcomes) <= {"ok", "error"}, outcomes


def test_column_type_changed_elsewhere_inside_a_transaction_fails_once(dsn, audit):
    """Inside a transaction the failed masking SELECT aborted it: nothing can be sent again
    (the residue, SECURITY.md); the caller gets the error, rolls back, and the next run is
    right. Never a raw value."""
    sql = "SELECT ssn FROM users ORDER BY id"
    with governed_db.connect(dsn, identity=HUMAN, audit=audit) as conn:
        assert conn.execute(sql).fetchall() == [("***********3333",), ("***********6666",)]
        conn.commit()
        with psycopg.connect(dsn, autocommit=True) as raw:
            raw.execute("ALTER TABLE users ALTER COLUMN ssn TYPE jsonb USING to_jsonb(ssn)")
        with pytest.raises(psycopg.Error):
            conn.execute(sql)
        conn.rollback()
        assert conn.execute(sql).fetchall() == [("***********3333",), ("***********6666",)]
