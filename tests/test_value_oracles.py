"""Value oracles: a value derived from a masked column may reach an output (masked there) or
pass through a total operation, nothing else. When it decides how many rows come back, whether
the statement errors or which branch runs, the statement is refused under
``column.disallow-predicate-on-masked`` (attack findings F01, F02). By class, several shapes
per class, sync and async, default profile, ai_agent; ordinary queries still run."""

from __future__ import annotations

import psycopg
import pytest

import governed_db
from governed_db import Identity, errors

from .conftest import MARKERS

AGENT = Identity("oracle-bot", "ai_agent")
RULE = "column.disallow-predicate-on-masked"

# Class 1: the hidden value decides HOW MANY rows a set-returning function yields (F01).
CARDINALITY = [
    "SELECT i, (SELECT count(*) FROM generate_series(1, ascii(substr(u.email, i, 1))))"
    " FROM users u, generate_series(1, 40) i WHERE u.id = 1001",
    "SELECT generate_series(1, ascii(ssn)) FROM users",
    "SELECT count(*) FROM users u, LATERAL generate_series(1, length(u.ssn)) g",
    "SELECT (SELECT count(*) FROM unnest(array_fill(0, ARRAY[ascii(email)]))) FROM users",
    "SELECT count(*) FROM users u, regexp_split_to_table(repeat('x,', ascii(u.ssn)), ',')",
    "SELECT (SELECT count(*) FROM (SELECT 1 FROM orders LIMIT ascii(u.ssn)) s) FROM users u",
    "SELECT count(*) FROM users u, unnest(string_to_array(u.ssn, '-')) p",
    "SELECT count(*) FROM (SELECT jsonb_array_elements(to_jsonb(string_to_array(email, '.')))"
    " FROM users) s",
    "SELECT count(*) FROM jsonb_each((SELECT jsonb_object_agg(substr(ssn, 5, 1), 1) FROM users))",
    "SELECT unnest(ARRAY(SELECT 1 FROM generate_series(1, ascii((SELECT min(ssn) FROM users)))))",
    "SELECT count(*) FROM users u, LATERAL xmltable('/a' PASSING xmlparse(content u.ssn)"
    " COLUMNS x text PATH '.') x",
    "SELECT count(*) FROM users u, orders TABLESAMPLE BERNOULLI (ascii(u.ssn))",
    # duplicate removal compares hidden values (with a guess, or by prefix)
    "SELECT ssn FROM users WHERE id = 1001 UNION SELECT 'qsn-111-22-3333'",
    "SELECT email FROM users INTERSECT SELECT 'qem.alice@example.com'",
    "SELECT count(*) FROM (SELECT DISTINCT substr(ssn, 1, 5) FROM users) s",
]

# Class 2: whether the statement ERRORS depends on the hidden value (F02).
ERRORS = [
    "SELECT CASE WHEN ascii(substr(ssn, 1, 1)) > 100 THEN 1/(id-id) ELSE 0 END FROM users"
    " WHERE id = 1001",
    "SELECT 1/(ascii(substr(ssn, 5, 1)) - 48) FROM users",
    "SELECT substr(ssn, 5, 1)::int FROM users",
    "SELECT make_date(2000, ascii(substr(ssn, 5, 1)) - 40, 1) FROM users",
    "SELECT repeat('x', ascii(ssn) * 10000000) FROM users",
    "SELECT to_date(substr(ssn, 5, 3), 'DDD') FROM users",
    "SELECT ('{' || substr(email, 1, 1) || '}')::int[] FROM users",
    "SELECT substr(email, ascii(ssn) - 100, 1) FROM users",
    "SELECT length(ssn) + 2147483600 FROM users",
    "WITH s AS (SELECT 1/(ascii(substr(ssn, 5, 1)) - 49) AS v FROM users) SELECT count(*)"
    " FROM s",
]

# Class 3: the hidden value decides WHICH BRANCH runs (control flow, filters on aggregates).
BRANCHES = [
    "SELECT id, CASE WHEN ssn LIKE 'qsn-1%' THEN 'yes' ELSE 'no' END FROM users",
    "SELECT CASE substr(ssn, 5, 1) WHEN '1' THEN 1 ELSE 0 END FROM users",
    "SELECT count(*) FILTER (WHERE ssn > 'qsn-2') FROM users",
    "SELECT greatest(ssn, 'qsn-2') FROM users",
    "SELECT nullif(substr(ssn, 5, 1), '1') FROM users",
    "SELECT (ssn > 'qsn-2' AND 1/(id-id) = 0) FROM users",
    "SELECT coalesce(NULL, substr(ssn, 5, 1), '1') FROM users",
    "SELECT ssn IN ('x', (1/(id - 1001))::text) FROM users",
    "SELECT ssn BETWEEN 'qsn-2' AND (1/(id - id))::text FROM users",
]

ORACLES = [pytest.param(s, "rows", id=f"rows-{i}") for i, s in enumerate(CARDINALITY)] + \
    [pytest.param(s, "error", id=f"error-{i}") for i, s in enumerate(ERRORS)] + \
    [pytest.param(s, "branch", id=f"branch-{i}") for i, s in enumerate(BRANCHES)]

# Ordinary agent queries (and outputs of total operations on masked columns) still run.
ORDINARY = [
    ("SELECT id, email, ssn FROM users ORDER BY id", 2),
    ("SELECT lower(email) || '/' || md5(ssn), length(ssn), ssn::text FROM users", 2),
    ("SELECT u.id, o.amount FROM users u JOIN orders o ON o.user_id = u.id ORDER BY o.id", 2),
    ("SELECT count(*), max(email), string_agg(ssn, ',') FROM users", 1),
    ("SELECT id FROM users WHERE ssn IS NOT NULL ORDER BY id", 2),
    ("SELECT g, id FROM users, generate_series(1, 2) g ORDER BY 1, 2", 4),
    ("SELECT coalesce(ssn, 'none'), to_jsonb(u), ARRAY[email], row(id, ssn) FROM users u", 2),
    ("SELECT CASE WHEN id > 1001 THEN ssn ELSE email END FROM users", 2),
    ("SELECT 100 / (id - 1000), (amount * 2)::int FROM orders ORDER BY id", 2),
    ("SELECT org_id, count(*) FROM users GROUP BY org_id ORDER BY 1", 2),
    ("SELECT DISTINCT email, org_id, id FROM users ORDER BY id", 2),
    ("SELECT ssn IN ('a', 'b'), email BETWEEN 'a' AND 'z' FROM users", 2),
    ("SELECT DISTINCT * FROM users ORDER BY id", 2),
    ("SELECT email FROM users UNION ALL SELECT 'x'", 3),
    # one-level expansion of a collection whose element count no value decides
    ("SELECT x FROM unnest((SELECT array_agg(ssn) FROM users)) AS x", 2),
    ("SELECT unnest(ARRAY[email, ssn]) FROM users", 4),
    ("SELECT k FROM users u, json_each(json_build_object('e', u.email, 's', u.ssn)) j(k, v)", 4),
]


def _conn(dsn: str, audit):
    return governed_db.connect(dsn, identity=AGENT, audit=audit)


async def _aconn(dsn: str, audit):
    return await governed_db.AsyncConnection.connect(dsn, identity=AGENT, audit=audit)


async def _run(mode: str, dsn: str, audit, sql: str) -> list:
    if mode == "sync":
        with _conn(dsn, audit) as conn:
            return conn.execute(sql).fetchall()
    conn = await _aconn(dsn, audit)
    try:
        return await (await conn.execute(sql)).fetchall()
    finally:
        await conn.close()


def _snapshot(dsn: str) -> list:
    with psycopg.connect(dsn) as raw:
        return raw.execute("SELECT o.id, o.amount, u.ssn FROM orders o, users u"
                           " ORDER BY 1, 3").fetchall()


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql,why", ORACLES)
async def test_value_oracle_is_denied(dsn, audit, mode, sql, why):
    before = _snapshot(dsn)
    with pytest.raises(errors.StatementDenied) as ei:
        await _run(mode, dsn, audit, sql)
    assert ei.value.rule_ids == (RULE,)
    message = str(ei.value)
    assert "users.ssn" in message or "users.email" in message, message
    assert not any(m in message.lower() for m in MARKERS), message
    audit.flush()
    record = [r for r in audit.records if r["type"] == "statement"][-1]
    assert record["outcome"]["outcome"] == "denied"
    assert record["decision"]["rules"] == [RULE]
    assert _snapshot(dsn) == before  # nothing ran (the UPDATE shape included)


@pytest.mark.parametrize("sql", [
    CARDINALITY[1], CARDINALITY[3], ERRORS[1], ERRORS[2], BRANCHES[1], BRANCHES[2]])
def test_message_says_how_the_value_decides(agent_conn, sql):
    with pytest.raises(errors.StatementDenied) as ei:
        agent_conn.execute(sql)
    message = str(ei.value)
    assert any(w in message for w in ("raise", "how many rows", "which branch",
                                      "FILTER")), message


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql,count", ORDINARY)
async def test_ordinary_queries_still_run(dsn, audit, mode, sql, count):
    rows = await _run(mode, dsn, audit, sql)
    assert len(rows) == count
    assert not any(m in repr(rows).lower() for m in MARKERS), rows


def test_the_same_shapes_run_for_a_human(human_conn):
    # The rule is about masked values: for an identity that sees the column unmasked (or a
    # column that is not masked) the same shapes are ordinary SQL.
    assert human_conn.execute("SELECT count(*) FROM orders o,"
                              " generate_series(1, o.id) g").fetchone() == (3,)


# -- Class: a qualifier means what PostgreSQL says it means (attack F3, F4) ----------------------
# A relation given an alias (``FROM orders o``) is reachable by its alias ONLY: ``orders.v``
# then names whatever an outer scope (or a later FROM item) calls ``orders``. Resolving it to
# the aliased table's real name gave a masked value the lineage of an unmasked table (returned
# raw) and made a guess list look like a "plain column" of a base table (an equality probe).
SHADOWED_OUTPUTS = [
    # scalar subquery: orders.v is the outer derived table's column, a masked value
    "SELECT (SELECT orders.v FROM orders o LIMIT 1) AS x"
    " FROM (SELECT ssn || '' AS v FROM users) AS orders",
    # LATERAL
    "SELECT l.x FROM (SELECT email || '' AS v FROM users) AS orders,"
    " LATERAL (SELECT orders.v AS x FROM orders o LIMIT 1) l",
    # whole-row reference to the outer alias
    "SELECT (SELECT orders FROM orders o LIMIT 1)::text AS x"
    " FROM (SELECT ssn || '' AS v FROM users) AS orders",
    # function notation on the outer alias
    "SELECT (SELECT note(orders) FROM orders o LIMIT 1) AS x"
    " FROM (SELECT name || '' AS note FROM users) AS orders",
]


def _raw_values(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as raw:
        return {v for row in raw.execute("SELECT email, ssn, name FROM users") for v in row}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql", SHADOWED_OUTPUTS)
async def test_an_aliased_tables_real_name_does_not_resolve_to_it(dsn, audit, mode, sql):
    rows = await _run(mode, dsn, audit, sql)
    raw = _raw_values(dsn)
    assert len(rows) == 2
    for (value,) in rows:
        assert value == "****", rows
        assert not any(v in str(value) for v in raw)


SHADOWED_PROBES = [
    "SELECT u.id FROM users u, orders o, (VALUES ('qsn-111-22-3333')) AS orders(note)"
    " WHERE u.ssn = orders.note",
    "SELECT u.id FROM users u JOIN orders o ON true JOIN (SELECT 'qem.alice@example.com'"
    " AS note) AS orders ON u.email = orders.note",
    "SELECT u.id FROM users u, orders o, unnest(ARRAY['qsn-111-22-3333']) AS orders(note)"
    " WHERE orders.note = u.ssn",
    "SELECT count(*) FROM (SELECT 'qsn-111-22-3333' AS note) AS orders"
    " WHERE EXISTS (SELECT 1 FROM users u, orders o WHERE u.ssn = orders.note)",
]

# -- Class: every statement body is walked (attack F5) -------------------------------------------
# EXPLAIN without options (and any statement whose body has one field) was read as a node of
# type "query" and never walked: plan estimates (rows=…) then answer predicates on masked
# values.
EXPLAINED = [
    "EXPLAIN SELECT 1 FROM users WHERE ssn = 'qsn-111-22-3333'",
    "EXPLAIN SELECT id FROM users WHERE email < 'qem.b'",
    "EXPLAIN SELECT * FROM (SELECT id FROM users WHERE ssn LIKE 'qsn-1%') s",
    "EXPLAIN SELECT id FROM users ORDER BY ssn LIMIT 1",
    "EXPLAIN (COSTS) SELECT 1 FROM users WHERE ssn > 'qsn-2'",
]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql", SHADOWED_PROBES + EXPLAINED)
async def test_probe_shapes_are_denied(dsn, audit, mode, sql):
    before = _snapshot(dsn)
    with pytest.raises(errors.StatementDenied) as ei:
        await _run(mode, dsn, audit, sql)
    assert ei.value.rule_ids == (RULE,)
    assert not any(m in str(ei.value).lower() for m in MARKERS), str(ei.value)
    audit.flush()
    record = [r for r in audit.records if r["type"] == "statement"][-1]
    assert record["outcome"]["outcome"] == "denied"
    assert _snapshot(dsn) == before


def test_explain_of_ordinary_queries_still_runs(agent_conn):
    plan = agent_conn.execute("EXPLAIN SELECT id, ssn FROM users WHERE id = 1001").fetchall()
    assert plan and not any(m in repr(plan).lower() for m in MARKERS)


# -- Class: NULL-ness, shape and errors of "total" operations (attack F1, F2) --------------------
# Total means: never raises for any value, never NULL for a non-NULL input, a shape no value
# decides. A lookup with a hidden key, a function that is NULL for some values, a JSON key
# (NULL raises, jsonb keeps one of equal keys), lpad/rpad's fill (a huge length is allocated
# only with a non-empty fill), a LIKE pattern read only as far as the subject matches: each
# answers a guess per output column. Denied under the same rule.
NULL_AND_SHAPE = [
    """SELECT '{"q":1}'::jsonb ->> substr(ssn, 1, 1) FROM users""",
    """SELECT '["a","b","c"]'::jsonb -> length(email) FROM users""",
    """SELECT ('{"q":1}'::jsonb)[substr(email, 1, 1)] FROM users""",
    """SELECT '{"q":{"s":1}}'::jsonb #> ARRAY[substr(ssn, 1, 1)] FROM users""",
    "SELECT substring(ssn from '^qsn-1') FROM users",
    "SELECT array_length(string_to_array(email, '@'), 1) FROM users",
    "SELECT jsonb_build_object(ssn, 1, 'qsn-111-22-3333', 2) FROM users",
    "SELECT jsonb_object_agg(substr(ssn, 1, 5), 1) FROM users",
    "SELECT array_agg(DISTINCT substr(ssn, 1, 5)) FROM users",
    "SELECT count(DISTINCT left(email, 4)) FROM users",
]
RAISING = [
    "SELECT lpad('x', 300000000, replace(substr(ssn, 1, 1), 'q', '')) FROM users",
    "SELECT rpad('x', 300000000, substr(email, 5, 1)) FROM users",
    "SELECT json_build_object(substr(ssn, 1, 1), 1) FROM users",
    "SELECT json_object_agg(email, 1) FROM users",
    "SELECT json_object(ARRAY[ssn], ARRAY['v']) FROM users",
    "SELECT ssn LIKE 'q\\' FROM users",
    "SELECT email ILIKE 'qem%\\' FROM users",
    "SELECT ssn LIKE 'q%' ESCAPE 'ab' FROM users",
]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql", NULL_AND_SHAPE + RAISING)
async def test_partial_operations_on_masked_values_are_denied(dsn, audit, mode, sql):
    before = _snapshot(dsn)
    with pytest.raises(errors.StatementDenied) as ei:
        await _run(mode, dsn, audit, sql)
    assert ei.value.rule_ids == (RULE,)
    assert not any(m in str(ei.value).lower() for m in MARKERS), str(ei.value)
    assert _snapshot(dsn) == before


# Derived outputs come back as a constant, NULL included, client- and server-side: NULL of a
# value computed from a masked column is '****' like any other of its values.
NULL_OUTPUTS = [
    ("SELECT CASE WHEN id = 1001 THEN lower(ssn) END AS x FROM users ORDER BY id", "****"),
    ("SELECT nullif(id, 1002)::text || email AS x FROM users ORDER BY id", "****"),
    ("SELECT ARRAY[CASE WHEN id = 1001 THEN ssn END] AS x FROM users ORDER BY id", ["****"]),
    ("SELECT json_build_array(CASE WHEN id = 1001 THEN email END) AS x FROM users ORDER BY id",
     ["****"]),
    ("SELECT (SELECT max(u2.ssn) FROM users u2 WHERE u2.id = u.id AND u.id = 1001) AS x"
     " FROM users u ORDER BY id", "****"),
]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql,masked", NULL_OUTPUTS)
async def test_null_of_a_derived_value_comes_back_as_the_constant(dsn, audit, mode, sql, masked):
    with psycopg.connect(dsn) as raw:
        truth = [r[0] for r in raw.execute(sql).fetchall()]
    assert truth[0] is not None and truth[1] in (None, [None])  # the shape is meaningful
    rows = await _run(mode, dsn, audit, sql)
    assert [r[0] for r in rows] == [masked, masked]


@pytest.mark.parametrize("server_side", ["true", "false"])
def test_null_of_a_derived_value_is_constant_through_pgresult(dsn, audit, server_side):
    from governed_db.policy import parse_policy

    policy = parse_policy(f"[masking]\nserver_side = {server_side}\n")
    with governed_db.connect(dsn, identity=AGENT, audit=audit, policy=policy) as conn:
        cur = conn.execute(NULL_OUTPUTS[0][0])
        assert [cur.pgresult.get_value(i, 0) for i in range(2)] == [b"****", b"****"]
        assert cur.fetchall() == [("****",), ("****",)]


def test_json_keys_written_by_the_statement_do_not_unmask_values(dsn, agent_conn):
    with psycopg.connect(dsn) as raw:
        hidden = {v for row in raw.execute("SELECT email, ssn FROM users") for v in row}
    for sql in ("SELECT json_build_object('id', ssn, 'k', id) FROM users",
                "SELECT json_build_object('ssn', email, 'email', ssn) FROM users",
                "SELECT jsonb_build_array(json_build_object('name', ssn)) FROM users"):
        rows = agent_conn.execute(sql).fetchall()
        text = repr(rows)
        assert not any(h in text for h in hidden), (sql, rows)
        assert "example.com" not in text and "3333" not in text, (sql, rows)


# -- Class: a SIZE or COST the content decides (attack G1) ---------------------------------------
# Total also means: the result's size and the work to compute it follow the value's length
# only. replace/translate/the trims/split_part/quote_* size their output by what the value
# contains, so with a huge second operand the server's 1 GB (text) / 256 MB (jsonb) limits or
# a statement_timeout answer "is this character c?". Refused before anything runs (the
# statements below would allocate up to 1 GB if they ran).
CONTENT_SIZED = [
    "SELECT length(replace(substr(ssn, 1, 1), 'q', repeat('x', 540000000))"
    " || repeat('y', 540000000)) FROM users WHERE id = 1001",
    "SELECT jsonb_typeof(jsonb_build_array(replace(substr(ssn, 1, 1), 'q',"
    " repeat('x', 200000000)), repeat('y', 100000000))) FROM users",
    "SELECT md5(replace(ssn, 'q', repeat('x', 60000000))) FROM users",
    "SELECT replace(repeat('q', 100000000), substr(email, 1, 1), '') FROM users",
    "SELECT octet_length(translate(email, 'q', 'xyz') || repeat('y', 1073741000)) FROM users",
    "SELECT octet_length(btrim(ssn, 'q') || repeat('y', 1073741000)) FROM users",
    "SELECT ltrim(substr(email, 1, 1), 'q') || repeat('y', 1073741000) FROM users",
    "SELECT trim(both 'q' from ssn) FROM users",
    "SELECT concat(split_part(email, 'q', 1), repeat('y', 1073741000)) FROM users",
    "SELECT md5(quote_literal(ssn) || repeat('y', 1073741000)) FROM users",
    "SELECT to_jsonb(quote_ident(email)) FROM users",
    # the WORK follows the content: the search stops where the hidden needle first matches
    "SELECT strpos(repeat('q', 200000000), substr(ssn, 1, 1)) FROM users",
]
# What follows lengths only still runs, masked as a whole.
LENGTH_SIZED = [
    "SELECT replace('a-b-c', '-', ssn) AS x FROM users ORDER BY id",
    "SELECT concat(lower(email), '/', substr(ssn, 1, 3), md5(ssn)) AS x FROM users ORDER BY id",
    "SELECT overlay(ssn placing 'x' from 2 for 1) || reverse(email) AS x FROM users ORDER BY id",
    "SELECT json_build_array(lpad(ssn, 20), starts_with(email, 'q')) AS x FROM users ORDER BY id",
]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql", CONTENT_SIZED)
async def test_content_sized_operations_on_masked_values_are_denied(dsn, audit, mode, sql):
    before = _snapshot(dsn)
    with pytest.raises(errors.StatementDenied) as ei:
        await _run(mode, dsn, audit, sql)
    assert ei.value.rule_ids == (RULE,)
    assert "users.ssn" in str(ei.value) or "users.email" in str(ei.value), str(ei.value)
    audit.flush()
    record = [r for r in audit.records if r["type"] == "statement"][-1]
    assert record["outcome"]["outcome"] == "denied"
    with psycopg.connect(dsn) as raw:
        # nothing of the statement ran: no backend is still at it, the data is unchanged
        assert raw.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE"
                           " '%repeat(''y''%' AND pid <> pg_backend_pid()").fetchone() == (0,)
    assert _snapshot(dsn) == before


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql", LENGTH_SIZED)
async def test_length_sized_operations_run_masked(dsn, audit, mode, sql):
    with psycopg.connect(dsn) as raw:
        truth = [r[0] for r in raw.execute(sql).fetchall()]
    assert all(t is not None for t in truth) and len(truth) == 2
    rows = await _run(mode, dsn, audit, sql)
    assert [r[0] for r in rows] in (["****", "****"], [["****", "****"], ["****", "****"]])


def test_an_agent_may_not_lower_its_statement_timeout(dsn, audit):
    # The policy's statement_timeout is a ceiling, and a lower one turns a cost the hidden
    # value decides into a cancellation (attack G1, a61): refused for agents, unless the
    # policy's session.settings-allowlist names it.
    from governed_db.policy import parse_policy

    with governed_db.connect(dsn, identity=AGENT, audit=audit) as conn:
        for sql in ("SET statement_timeout = '300ms'", "SET LOCAL statement_timeout = 1",
                    "SELECT set_config('statement_timeout', '1ms', false)"):
            with pytest.raises(errors.StatementDenied) as ei:
                conn.execute(sql)
            assert ei.value.rule_ids == ("session.settings-allowlist",), ei.value.rule_ids
            conn.rollback()
            assert conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
        pid = conn.info.backend_pid
        with psycopg.connect(dsn) as raw:
            raw.execute("SELECT 1")  # the server-side value, seen from outside
            assert conn.execute("SELECT current_setting('statement_timeout')"
                                ).fetchone() == ("30s",)
            assert raw.execute("SELECT state FROM pg_stat_activity WHERE pid = %s",
                               (pid,)).fetchone() is not None
    policy = parse_policy('[[rules]]\nid = "session.settings-allowlist"\n'
                          'allow = ["statement_timeout"]\n')
    with governed_db.connect(dsn, identity=AGENT, audit=audit, policy=policy) as conn:
        conn.execute("SET statement_timeout = '5s'")
        assert conn.execute("SHOW statement_timeout").fetchone() == ("5s",)
        with pytest.raises(errors.StatementDenied):
            conn.execute("SET statement_timeout = '1h'")  # still never above the ceiling


# -- Class: the constant of a derived value does not depend on the value's type (attack G2) -----
# A derived output is ONE constant: a JSON number, boolean, null or string built from a masked
# value all come back as it (before: a finite numeric's to_jsonb None, 'Infinity' '****').
_PAY = """
CREATE TABLE pay (id int PRIMARY KEY, salary numeric, doc jsonb);
INSERT INTO pay VALUES (1, 79000, '"text"'), (2, 'Infinity', '42'), (3, 'NaN', 'true'),
                       (4, NULL, 'null'), (5, -1.5, NULL), (6, 0, '[1, "a"]');
"""
_PAY_POLICY = '[[masking.columns]]\ncolumns = ["public.pay.salary", "public.pay.doc"]\n' \
    'strategy = "redact"\n'
TYPED_DERIVED = [
    "SELECT id, to_jsonb(salary) FROM pay ORDER BY id",
    "SELECT id, to_json(salary) FROM pay ORDER BY id",
    "SELECT id, to_jsonb(doc) FROM pay WHERE id < 6 ORDER BY id",
    "SELECT id, COALESCE(doc, '1') FROM pay WHERE id < 6 ORDER BY id",
    "SELECT id, lead(doc) OVER (ORDER BY id) FROM pay WHERE id < 6 ORDER BY id",
]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql", TYPED_DERIVED)
async def test_a_derived_jsons_constant_does_not_depend_on_its_type(dsn, audit, mode, sql):
    from governed_db.policy import parse_policy

    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute(_PAY)
        truth = [r[1] for r in raw.execute(sql).fetchall()]
    # the ground truth has several JSON types: a constant per type would tell them apart
    assert len({type(t) for t in truth}) >= 3, truth
    policy = parse_policy(_PAY_POLICY)
    if mode == "sync":
        with governed_db.connect(dsn, identity=AGENT, audit=audit, policy=policy) as conn:
            cur = conn.execute(sql)
            raw_values = {cur.pgresult.get_value(i, 1) for i in range(cur.pgresult.ntuples)}
            rows = cur.fetchall()
        assert raw_values == {b"****"}, raw_values  # cursor.pgresult agrees
    else:
        aconn = await governed_db.AsyncConnection.connect(dsn, identity=AGENT, audit=audit,
                                                          policy=policy)
        try:
            rows = await (await aconn.execute(sql)).fetchall()
        finally:
            await aconn.close()
    assert [r[1] for r in rows] == ["****"] * len(truth), rows
