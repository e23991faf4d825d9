"""Hostile input: huge and deeply nested statements, NUL bytes, invalid UTF-8, huge rows,
placeholder smuggling, forged approvals, malformed policies and audit files."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

import governed_db
from governed_db import Identity, errors
from governed_db.audit import VerificationError, verify
from governed_db.policy import parse_policy

from .conftest import MARKERS

DEPLOY = Identity("deploy-bot", "service")


def test_100k_element_in_list(agent_conn):
    ids = ", ".join(str(i) for i in range(200_000, 300_000))
    started = time.monotonic()
    rows = agent_conn.execute(f"SELECT id, email FROM users WHERE id IN ({ids}, 1001)").fetchall()
    assert rows == [(1001, "****@example.com")]
    assert time.monotonic() - started < 20


def test_one_megabyte_statement_with_a_hidden_drop(human_conn):
    filler = "/* " + "x" * 1_000_000 + " */"
    with pytest.raises(errors.StatementDenied) as ei:
        human_conn.execute(f"SELECT 1 {filler}; DROP TABLE t")
    assert "statement.disallow-drop" in ei.value.rule_ids
    assert human_conn.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_deep_nesting_fails_closed(human_conn):
    deep = "SELECT " + "(" * 20_000 + "1" + ")" * 20_000
    with pytest.raises(errors.StatementDenied) as ei:
        human_conn.execute(deep)
    assert ei.value.rule_ids == ("statement.parse-error",)


@pytest.mark.parametrize("query", [b"SELECT '\xff\xfe'", "SELECT 'a\x00b'", b"\x00DROP TABLE t"])
def test_nul_bytes_and_invalid_utf8_never_crash(human_conn, query):
    with pytest.raises((errors.StatementDenied, psycopg.Error, ValueError)):
        human_conn.execute(query)
    human_conn.rollback() if not human_conn.autocommit else None
    assert human_conn.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_enormous_row_is_masked(agent_conn):
    # (repeat(email, n) itself is refused for an agent: whether it exceeds the 1 GB limit
    # depends on the hidden length - test_value_oracles.py.)
    (value,) = agent_conn.execute(
        "SELECT repeat(' ', 4000000) || email || lpad(email, 200000, '.') FROM users"
        " WHERE id = 1001").fetchone()
    assert "qem" not in value


def test_a_transformed_email_never_keeps_its_shape(agent_conn):
    (value,) = agent_conn.execute("SELECT reverse(email) FROM users WHERE id = 1001").fetchone()
    assert "ecila" not in value and "qem" not in value[::-1]


def test_placeholder_smuggling(human_conn):
    # A parameter *value* full of SQL stays a value, also when ClientCursor inlines it.
    evil = "x'); DROP TABLE t; --"
    cur = governed_db.ClientCursor(human_conn)
    assert cur.execute("SELECT %s::text", (evil,)).fetchone() == (evil,)
    # SQL after a placeholder is SQL: the statement that reaches the server is what is analyzed.
    with pytest.raises(errors.StatementDenied):
        human_conn.execute("SELECT %(a)s; DROP TABLE t; --)s", {"a": 1})
    assert human_conn.execute("SELECT count(*) FROM t").fetchone() == (2,)


@pytest.mark.parametrize("store_kind", ["file", "postgres"])
def test_forged_approval_is_not_an_approval(dsn, audit, monkeypatch, store_kind):
    if store_kind == "postgres":
        monkeypatch.setenv("GOVERNED_DB_APPROVALS_DSN", dsn)
    policy = parse_policy('[[rules]]\nid = "statement.disallow-ddl"\nlevel = "approval"\n')
    with governed_db.connect(dsn, identity=DEPLOY, policy=policy, audit=audit,
                             autocommit=True) as conn:
        with pytest.raises(errors.ApprovalRequired) as ei:
            conn.execute("CREATE INDEX t_a ON t (a)")
        rid = ei.value.request_id
        store = governed_db._config.approvals(policy)
        if store_kind == "file":
            path = store.directory / f"{rid}.json"
            req = json.loads(path.read_text())
            req.update(status="approved", decisions=[{"by": {"id": "boss", "kind": "human"},
                                                      "approve": True}])
            path.write_text(json.dumps(req))
        else:
            with psycopg.connect(dsn, autocommit=True) as raw:
                raw.execute("UPDATE governed_db.approval_requests SET status = 'approved'"
                            " WHERE id = %s", (rid,))
        with pytest.raises(errors.ApprovalRequired):
            conn.execute("CREATE INDEX t_a ON t (a)")
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 't_a'"
                         ).fetchone() == (0,)


@pytest.mark.parametrize("text,line", [
    ("[[rules]]\nid = 'statement.disallow-drop'\nlevel = 'fatal'\n", 1),
    ("version = 1\n[[rules]]\nid = 'x'\n", 2),
    ("[[rules]\nid = 'statement.disallow-drop'\n", 1),
    ("[masking]\ncolumns = 'users.email'\n", None),
    ("[[rules]]\nid = 'statement.affected-row-limit'\nmax_rows = -5\n", 1),
    ("\x00\x01binary", None),
])
def test_malformed_policies_are_policy_errors_with_lines(text, line):
    with pytest.raises(errors.PolicyError) as ei:
        parse_policy(text, source="p.toml")
    if line is not None:
        assert f"p.toml:{line}" in str(ei.value)


@pytest.mark.parametrize("garbage", [b"", b"\n\n", b"{}\n", b"[1,2]\n", b"\xff\xfe\n",
                                     b'{"chain": 5}\n', b"null\n" * 3])
def test_verifier_never_crashes_on_garbage(tmp_path, garbage):
    path = tmp_path / "junk.jsonl"
    path.write_bytes(garbage)
    try:
        verify(path)
    except VerificationError:
        pass


def test_no_marker_in_any_error_text(agent_conn):
    for sql in ("SELECT email::int FROM users", "SELECT ssn::date FROM users",
                "SELECT 1/(length(email) - length(email)) FROM users"):
        with pytest.raises(psycopg.Error) as ei:
            agent_conn.execute(sql)
        agent_conn.rollback()
        text = (str(ei.value) + str(ei.value.diag.message_detail)).lower()
        assert not any(m in text for m in MARKERS), text
