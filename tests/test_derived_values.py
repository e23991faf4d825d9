"""Derived values are masked as a whole; predicates on masked columns are refused by lineage;
pg_notify payloads computed from masked data are refused. Default profile, ai_agent unless
stated; every test checks that no value came back and that nothing changed on the server."""

from __future__ import annotations

import psycopg
import pytest

import governed_db
from governed_db import Identity, errors
from governed_db.masking import REDACTED

from .conftest import MARKERS

AGENT = Identity("derive-bot", "ai_agent")
HUMAN = Identity("derive-human", "human")


def _clean(obj: object) -> None:
    text = repr(obj).lower()
    assert not any(m in text for m in MARKERS), text
    assert "3333" not in text and "6666" not in text


def _last(audit) -> dict:
    audit.flush()
    return [r for r in audit.records if r["type"] == "statement"][-1]


# -- 1. derived values: masked as a whole -------------------------------------------------------

DERIVED = [
    "SELECT repeat('.', 8) || substr(ssn, 5, 4) AS x FROM users",
    "SELECT substr(ssn, 1, 12) AS x FROM users",
    "SELECT reverse(email) AS x FROM users",
    "SELECT lpad(ssn, 20, '*') AS x FROM users",
    "SELECT x FROM (SELECT 'prefix-' || ssn AS x FROM users) s",
    "WITH c AS (SELECT overlay(ssn placing '' from 1 for 4) AS x FROM users) SELECT x FROM c",
    "SELECT x FROM unnest((SELECT array_agg(ssn) FROM users)) AS x",
    "SELECT left(email, 3) || '@example.com' AS x FROM users",
    "SELECT replace('a-b', '-', ssn) AS x FROM users",
]


@pytest.mark.parametrize("sql", DERIVED)
def test_derived_value_is_redacted_whole(agent_conn, audit, sql):
    rows = agent_conn.execute(sql).fetchall()
    assert rows and all(r == (REDACTED,) for r in rows), rows
    assert _last(audit)["masked"]["x"].startswith("redact:lineage:")


def test_direct_reference_keeps_its_shape(agent_conn, audit):
    assert agent_conn.execute("SELECT ssn, email FROM users WHERE id = 1001").fetchone() == (
        "***********3333", "****@example.com")
    assert _last(audit)["masked"] == {"ssn": "partial:name:ssn", "email": "email:name:email"}


BOOLEAN_AND_CASE = [
    ("SELECT id, ssn LIKE 'qsn-1%' AS x FROM users ORDER BY id", None),
    # A masked value choosing a CASE branch is an oracle (branch results can raise): refused.
    ("SELECT id, CASE WHEN ssn LIKE 'qsn-1%' THEN 'yes' ELSE 'no' END AS x FROM users ORDER BY id",
     "deny"),
    ("SELECT id, starts_with(email, 'qem.a') AS x FROM users ORDER BY id", None),
    ("SELECT id, length(ssn) AS x FROM users ORDER BY id", None),
    ("SELECT id, (SELECT count(*) FROM users u2 WHERE u2.id = u.id AND u2.ssn > 'qsn-2') AS x"
     " FROM users u ORDER BY id", "deny"),
]


@pytest.mark.parametrize("sql,expected", BOOLEAN_AND_CASE)
def test_values_computed_from_masked_columns_reveal_nothing(agent_conn, sql, expected):
    if expected == "deny":
        with pytest.raises(errors.StatementDenied) as ei:
            agent_conn.execute(sql)
        assert ei.value.rule_ids == ("column.disallow-predicate-on-masked",)
        return
    rows = agent_conn.execute(sql).fetchall()
    assert [r[1] for r in rows] == [expected, expected]


JSON_KEYS = [
    "SELECT json_object_agg(email, 1) AS x FROM users",
    "SELECT jsonb_build_object(ssn, id) AS x FROM users",
    "SELECT json_object(array[email], array['v']) AS x FROM users",
    "SELECT jsonb_object_agg(k, 1) AS x FROM (SELECT ssn AS k FROM users) s",
    "SELECT json_build_object('outer', json_object_agg(email, id)) AS x FROM users",
]


@pytest.mark.parametrize("sql", JSON_KEYS)
def test_json_keys_built_from_sensitive_values_are_refused(agent_conn, audit, sql):
    # A JSON key is not a total position: a NULL key raises ("cannot be null"), and jsonb
    # keeps one of equal keys (the number of keys says whether two hidden values are equal).
    # These shapes used to run with the keys masked; the count of keys still leaked.
    with pytest.raises(errors.StatementDenied) as ei:
        agent_conn.execute(sql)
    assert ei.value.rule_ids == ("column.disallow-predicate-on-masked",)
    _clean(str(ei.value))
    assert _last(audit)["outcome"]["outcome"] == "denied"


def test_whole_row_json_keeps_column_names_as_keys(agent_conn):
    (value,) = agent_conn.execute("SELECT to_jsonb(u) FROM users u WHERE id = 1001").fetchone()
    assert set(value) == {"id", "email", "ssn", "name", "org_id", "created_at"}
    # The keys are the columns: each value keeps its column's own strategy.
    assert (value["email"], value["ssn"]) == ("****@example.com", "***********3333")


def test_json_values_built_from_sensitive_values_are_redacted(agent_conn):
    (value,) = agent_conn.execute("SELECT json_object_agg(id, email) FROM users").fetchone()
    assert isinstance(value, dict) and len(value) == 2
    assert set(value.values()) == {REDACTED}
    assert agent_conn.execute("SELECT json_object_agg(id, email)::text FROM users"
                              ).fetchone() == (REDACTED,)


# -- 2. predicates on masked columns: refused by lineage for ai_agent (default profile) --------

PROBES = [
    "SELECT id FROM users WHERE ssn LIKE 'qsn-1%'",
    "SELECT id FROM (SELECT id, ssn AS harmless FROM users) s WHERE harmless LIKE 'qsn-1%'",
    "WITH c AS (SELECT id, email AS e FROM users) SELECT id FROM c WHERE e > 'qem.b'",
    "SELECT id FROM users u WHERE u::text LIKE '%111%'",
    "SELECT id FROM users u WHERE to_jsonb(u)->>'ssn' LIKE 'qsn-1%'",
    "SELECT id FROM users u WHERE (u).ssn LIKE 'qsn-1%'",
    "SELECT id FROM users u WHERE ssn(u) LIKE 'qsn-1%'",
    "SELECT id FROM users u WHERE row_to_json(u)::text LIKE '%qsn-1%'",
    "SELECT id, ssn FROM users ORDER BY 2",
    "SELECT id, ssn AS s FROM users ORDER BY s",
    "SELECT id, email FROM users ORDER BY lower(email) DESC",
    "SELECT DISTINCT ON (substr(ssn, 5, 1)) id FROM users",
    "SELECT id, row_number() OVER (ORDER BY ssn) FROM users",
    "SELECT id, rank() OVER (PARTITION BY substr(email, 5, 1) ORDER BY id) FROM users",
    "SELECT substr(ssn, 5, 1), count(*) FROM users GROUP BY 1",
    "SELECT count(*) FROM users GROUP BY substr(ssn, 1, 5)",
    "SELECT left(email, 3) AS p, count(*) FROM users GROUP BY p",
    "SELECT id FROM users LIMIT (SELECT length(ssn) FROM users LIMIT 1)",
    "SELECT o.id FROM orders o WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = o.user_id"
    " AND u.ssn LIKE 'qsn-1%')",
    "SELECT id FROM v_users WHERE email > 'qem.b'",
    "SELECT u.id FROM users u JOIN (VALUES ('qem.alice@example.com')) v(x) ON u.email = v.x",
    "SELECT id FROM users WHERE (CASE WHEN ssn LIKE 'qsn-1%' THEN NULL ELSE 1 END) IS NULL",
    "SELECT id FROM users GROUP BY id HAVING min(ssn) > 'qsn-2'",
]


@pytest.mark.parametrize("sql", PROBES)
def test_probe_on_masked_column_is_denied(agent_conn, audit, sql):
    with pytest.raises(errors.StatementDenied) as ei:
        agent_conn.execute(sql)
    assert ei.value.rule_ids == ("column.disallow-predicate-on-masked",)
    _clean(str(ei.value))
    rec = _last(audit)
    assert rec["outcome"]["outcome"] == "denied"
    assert rec["decision"]["rules"] == ["column.disallow-predicate-on-masked"]


ALLOWED = [
    "SELECT id FROM users WHERE email IS NOT NULL ORDER BY id",
    "SELECT count(*) FROM users WHERE ssn IS NULL",
    "SELECT o.id FROM orders o JOIN users u ON o.user_id = u.id ORDER BY o.id",
    "SELECT o.id FROM orders o JOIN users u ON u.email = o.note ORDER BY o.id",
    "SELECT a.id FROM users a JOIN users b ON a.email = b.email ORDER BY a.id",
    "SELECT id, email FROM users WHERE id = 1001 ORDER BY name IS NULL, id",
    "SELECT org_id, count(*) FROM users GROUP BY org_id ORDER BY org_id",
    "SELECT id, email FROM users ORDER BY id LIMIT 5",
    "SELECT u.id, o.amount FROM users u JOIN orders o USING (id) ORDER BY 1",
    # grouping by a stored masked value: equality classes only, like a join on it, once an
    # ORDER BY that identifies each row fixes the order (PostgreSQL sorts on the grouped
    # value: without it rows come back in the hidden order, see test_order_oracles.py)
    "SELECT email, count(*) FROM users GROUP BY email ORDER BY min(id)",
    "SELECT org_id, email, rank() OVER (PARTITION BY email ORDER BY id) FROM users ORDER BY id",
]


@pytest.mark.parametrize("sql", ALLOWED)
def test_ordinary_analytics_still_run(agent_conn, sql):
    rows = agent_conn.execute(sql).fetchall()
    _clean(rows)


def test_human_may_filter_on_masked_columns(human_conn):
    assert human_conn.execute("SELECT id FROM users WHERE ssn LIKE 'qsn-1%'").fetchall() == [
        (1001,)]


# -- 3. pg_notify with payloads computed from masked data ----------------------------------------

NOTIFY_DENIED = [
    "SELECT pg_notify('leak', email) FROM users",
    "SELECT pg_notify('leak', (SELECT ssn FROM users LIMIT 1))",
    "SELECT pg_notify(email, 'x') FROM users",
    "SELECT 1 FROM users WHERE pg_notify('leak', u::text) IS NULL",
]


@pytest.mark.parametrize("ident", [HUMAN, Identity("svc", "service")], ids=["human", "service"])
@pytest.mark.parametrize("sql", NOTIFY_DENIED)
def test_notify_payload_from_masked_data_is_denied(dsn, audit, sql, ident):
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN leak")
        with governed_db.connect(dsn, identity=ident, audit=audit, autocommit=True) as conn:
            with pytest.raises(errors.StatementDenied) as ei:
                conn.execute(sql.replace(" u::text", " users::text"))
        assert "notify.disallow-sensitive-payload" in ei.value.rule_ids
        listener.execute("SELECT 1")
        assert list(listener.notifies(timeout=0.2)) == []  # nothing was sent


def test_notify_with_constant_or_unmasked_payload_runs(dsn, audit):
    with governed_db.connect(dsn, identity=HUMAN, audit=audit, autocommit=True) as conn:
        conn.execute("SELECT pg_notify('ok', 'done')")
        conn.execute("SELECT pg_notify('ok', %s)", ("from-app",))
        conn.execute("SELECT pg_notify('ok', id::text) FROM orders")
        conn.execute("NOTIFY ok, 'literal payload'")
