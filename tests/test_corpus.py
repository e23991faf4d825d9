"""The public adversarial corpus: analyzer facts, and governance against a real server."""

from __future__ import annotations

import re

import psycopg
import pytest

import governed_db
from governed_db import errors
from governed_db.analysis import analyze

from .conftest import AGENT, HUMAN, MARKERS, corpus_statements

STATEMENTS = corpus_statements()
# Labels that depend on session state the string alone cannot show (resolved at run time by
# the session tracking, or denied as opaque), or on grammar differences PG15 vs PG17.
SESSION_OR_OPAQUE = {58, 74, 76, 84, 86}
SERVER_REJECTS = {54, 188}


def _sent(sql: str, params) -> str:
    if params is None:
        return sql
    n = 0

    def rep(_m):
        nonlocal n
        n += 1
        return f"${n}"

    return re.sub(r"%\(\w+\)s|%s", rep, sql)


def _names(items):
    return sorted(i[7:] if i.startswith("public.") else i for i in items)


@pytest.mark.parametrize("case", STATEMENTS, ids=[str(c["id"]) for c in STATEMENTS])
def test_analyzer_matches_labels(case):
    if case["id"] in SESSION_OR_OPAQUE | SERVER_REJECTS:
        pytest.skip("label depends on session state or server grammar version")
    a = analyze(_sent(case["sql"], case["params"]))
    if not case["kinds"]:
        assert a.error is not None or case["id"] in SERVER_REJECTS
        return
    assert a.error is None
    assert sorted(a.kinds) == sorted(case["kinds"])
    assert _names(a.writes) == sorted(case["writes"])
    assert _names(a.reads) == sorted(case["reads"])
    assert any(s.has_unbounded_write for s in a.statements) == case["has_unbounded_write"]
    dangerous = sorted(set().union(*(s.dangerous_functions for s in a.statements)))
    assert dangerous == sorted(case["dangerous_functions"])
    assert any(s.opaque for s in a.statements) == case["opaque"]


WRITE_KINDS = {"INSERT", "UPDATE", "DELETE", "MERGE", "DROP", "TRUNCATE", "CREATE", "ALTER",
               "COPY", "GRANT", "REVOKE", "COMMENT", "LOCK", "VACUUM", "CLUSTER", "REINDEX",
               "DO", "CALL", "LOAD", "CHECKPOINT", "NOTIFY", "LISTEN", "SET", "RESET"}


def _snapshot(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        return c.execute(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM t),"
            " (SELECT count(*) FROM orders), (SELECT count(*) FROM pg_class"
            "  WHERE relnamespace = 'public'::regnamespace),"
            " (SELECT string_agg(name || coalesce(email, ''), ',' ORDER BY id) FROM users),"
            " (SELECT count(*) FROM audit_ddl), (SELECT count(*) FROM audit_trunc)").fetchone()


# A policy file that only adds one masked column: it layers on the default profile, so every
# default guardrail still holds (the issue: such a file used to drop them all).
MASKING_ONLY = '''
[[masking.columns]]
columns = ["orders.note"]
strategy = "redact"
'''


@pytest.fixture(params=["default", "masking-only-file"])
def profile(request, tmp_path):
    """The default profile (no policy), or a policy *file* that only adds a masked column."""
    if request.param == "default":
        return None, ()
    path = tmp_path / "policy.toml"
    path.write_text(MASKING_ONLY)
    return str(path), ("qnt",)


def _run(case, dsn, audit, identity, policy=None):
    """Run one corpus case as ``identity``; return (state before, after, rows, outcome)."""
    before = _snapshot(dsn)
    if case["setup"]:
        with psycopg.connect(dsn, autocommit=True) as raw:
            raw.execute(case["setup"])
    conn = governed_db.connect(dsn, identity=identity, audit=audit, policy=policy,
                               autocommit=case["mode"] == "autocommit")
    rows = []
    outcome = "ok"
    try:
        cur = conn.cursor()
        cur.execute(case["sql"], case["params"])
        while True:
            if cur.description is not None:
                rows += cur.fetchall()
            if not cur.nextset():
                break
        if not conn.autocommit:
            conn.commit()
    except errors.StatementDenied:
        outcome = "denied"
    except psycopg.Error:
        outcome = "error"
    finally:
        conn.close()
    return before, _snapshot(dsn), rows, outcome


def _no_marker(rows, extra=()):
    text = repr(rows).lower()
    for marker in (*MARKERS, *extra):
        assert marker not in text, f"{marker} leaked in {rows!r}"


@pytest.mark.parametrize("case", STATEMENTS, ids=[str(c["id"]) for c in STATEMENTS])
def test_agent_under_default_profile(case, dsn, audit, profile):
    """As an ai_agent: nothing that writes takes effect; read-only app queries run; no marker leaks."""
    policy, extra = profile
    before, after, rows, outcome = _run(case, dsn, audit, AGENT, policy)
    assert after == before, f"state changed: {before} -> {after}"
    _no_marker(rows, extra)
    writes = set(case["kinds"]) & WRITE_KINDS or case["dangerous_functions"] or case["opaque"]
    if writes:
        assert outcome != "ok" or not case["writes"], "a writing statement ran"
    elif case["category"] == "app" and case["kinds"]:
        assert outcome == "ok", "a read-only application query was not allowed"


DDL = {"CREATE", "ALTER", "DROP", "TRUNCATE", "GRANT", "REVOKE", "COMMENT", "DO"}
DESTRUCTIVE = [c for c in STATEMENTS
               if set(c["kinds"]) & DDL or c["has_unbounded_write"] or c["dangerous_functions"]]


@pytest.mark.parametrize("case", DESTRUCTIVE, ids=[str(c["id"]) for c in DESTRUCTIVE])
def test_human_destructive_subset_under_default_profile(case, dsn, audit, profile):
    """As a human: DROP, TRUNCATE, unbounded UPDATE/DELETE, DO, dangerous functions and
    unapproved DDL take no effect either; reads stay masked."""
    policy, extra = profile
    before, after, rows, outcome = _run(case, dsn, audit, HUMAN, policy)
    assert after == before, f"state changed: {before} -> {after}"
    assert outcome != "ok" or not (set(case["kinds"]) & DDL or case["writes"]), \
        "a destructive statement ran"
    _no_marker(rows, extra)
