"""Approved writes run (issue 19 item 1), following the README's approvals section.

"A rule at level `approval` raises `errors.ApprovalRequired` with `.request_id`. A person runs
`governed-db approvals list` and `governed-db approvals approve ID --as human:maria`; the
identical statement then runs **once** before the approval expires. Every request, decision
and use is in the audit trail."

For an ai_agent (a read-only kind) exactly the approved statement runs read-write at the
server; the session is READ ONLY again right after it. Both stores, sync and async.
"""

from __future__ import annotations

import re

import time

import psycopg
import pytest
from click.testing import CliRunner

import governed_db
from governed_db import Identity, errors
from governed_db.cli import main
from governed_db.policy import parse_policy

AGENT = Identity("recs-bot", "ai_agent", purpose="follow-ups")
INSERT = "INSERT INTO orders (id, user_id, amount) VALUES (%s, %s, %s)"


def _policy(ttl: int = 3600, approval: bool = True) -> governed_db.Policy:
    needs = ('[[rules]]\nid = "statement.require-approval"\nlevel = "approval"\n'
             'identity_kinds = ["ai_agent"]\nkinds = ["INSERT"]\n') if approval else ""
    return parse_policy(f"""
[session]
read_only_kinds = ["ai_agent"]

[[rules]]
id = "statement.allowlist"
identity_kinds = ["ai_agent"]
allow = ["SELECT", "SHOW", "INSERT", "BEGIN", "COMMIT", "ROLLBACK"]

{needs}
[approvals]
ttl_seconds = {ttl}
""")


@pytest.fixture(params=["file", "postgres"])
def store_kind(request, dsn, monkeypatch):
    if request.param == "postgres":
        monkeypatch.setenv("GOVERNED_DB_APPROVALS_DSN", dsn)
    return request.param


@pytest.fixture
def one_log(audit):
    """Decisions made through the CLI land in the same (configured) audit log."""
    governed_db.configure(audit=audit)
    return audit


def _orders(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT id FROM orders ORDER BY id").fetchall()


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _events(audit, kind: str) -> list[dict]:
    audit.flush()
    return [r for r in audit.records if r["type"] == kind]


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "new-transaction"])
def test_approved_insert_runs_once_read_write(dsn, one_log, store_kind, autocommit):
    policy = _policy()
    conn = governed_db.connect(dsn, identity=AGENT, policy=policy, audit=one_log,
                               autocommit=autocommit)
    with pytest.raises(errors.ApprovalRequired) as ei:
        conn.execute(INSERT, (10, 1001, 5))
    rid = ei.value.request_id
    assert ei.value.rule_ids == ("statement.require-approval",)
    if not autocommit:
        conn.rollback()
    assert rid in _cli("approvals", "list")
    assert f"{rid} approved by human:maria" in _cli("approvals", "approve", rid, "--as",
                                                     "human:maria", "--note", "ok for today")
    conn.execute(INSERT, (10, 1001, 5))  # the identical statement: runs read-write, once
    if not autocommit:
        # Back to READ ONLY at once, in the same transaction.
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("on",)
        conn.commit()
    assert conn.execute("SHOW transaction_read_only").fetchone() == ("on",)
    if not autocommit:
        conn.rollback()
    assert _orders(dsn) == [(1,), (2,), (10,)]
    # Used up: the identical statement asks again.
    with pytest.raises(errors.ApprovalRequired) as again:
        conn.execute(INSERT, (10, 1001, 5))
    assert again.value.request_id != rid
    conn.close()
    assert governed_db._config.approvals(policy).get(rid)["status"] == "used"
    requested = _events(one_log, "approval_requested")
    assert [r["request_id"] for r in requested] == [rid, again.value.request_id]
    decided = _events(one_log, "approval_decided")
    assert [(d["request_id"], d["decision"], d["reason"], d["identity"]["id"]) for d in decided
            ] == [(rid, "approved", "ok for today", "maria")]
    used = _events(one_log, "approval_used")
    assert [u["request_id"] for u in used] == [rid]
    ok = [r for r in one_log.records if r["type"] == "statement"
          and r["outcome"].get("outcome") == "ok" and r["decision"]["approval"] == rid]
    assert len(ok) == 1 and ok[0]["statement"]["kinds"] == ["INSERT"]
    # No values in approval records (as a token: a hex digest may hold the digits).
    assert not re.search(r"(?<![0-9a-f])1001(?![0-9a-f])", str(requested + decided + used))


async def test_approved_insert_runs_async(dsn, one_log, store_kind):
    policy = _policy()
    conn = await governed_db.AsyncConnection.connect(dsn, identity=AGENT, policy=policy,
                                                     audit=one_log, autocommit=True)
    async with conn:
        with pytest.raises(errors.ApprovalRequired) as ei:
            await conn.execute(INSERT, (11, 1001, 5))
        store = governed_db._config.approvals(policy)
        store.decide(ei.value.request_id, Identity("maria", "human"), approve=True)
        await conn.execute(INSERT, (11, 1001, 5))
        cur = await conn.execute("SHOW transaction_read_only")
        assert await cur.fetchone() == ("on",)
    assert _orders(dsn) == [(1,), (2,), (11,)]


def test_in_a_transaction_that_already_read_the_approval_is_kept(dsn, one_log, store_kind):
    policy = _policy()
    conn = governed_db.connect(dsn, identity=AGENT, policy=policy, audit=one_log)
    with pytest.raises(errors.ApprovalRequired) as ei:
        conn.execute(INSERT, (12, 1001, 5))
    rid = ei.value.request_id
    conn.rollback()
    _cli("approvals", "approve", rid, "--as", "human:maria")
    conn.execute("SELECT count(*) FROM orders")  # the transaction has read: stays READ ONLY
    with pytest.raises(errors.StatementDenied) as denied:
        conn.execute(INSERT, (12, 1001, 5))
    assert denied.value.rule_ids == ("session.read-only",)
    assert "new transaction" in str(denied.value) and "no approval was used" in str(denied.value)
    store = governed_db._config.approvals(policy)
    assert store.get(rid)["status"] == "approved"
    conn.rollback()
    conn.execute(INSERT, (12, 1001, 5))  # first statement of a new transaction: runs
    conn.commit()
    conn.close()
    assert store.get(rid)["status"] == "used"
    assert _orders(dsn) == [(1,), (2,), (12,)]


def test_failed_statement_gives_the_approval_back(dsn, one_log, store_kind):
    policy = _policy()
    with governed_db.connect(dsn, identity=AGENT, policy=policy, audit=one_log,
                             autocommit=True) as conn:
        with pytest.raises(errors.ApprovalRequired) as ei:
            conn.execute(INSERT, (1, 1001, 5))  # id 1 exists: will fail when it runs
        rid = ei.value.request_id
        _cli("approvals", "approve", rid, "--as", "human:maria")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(INSERT, (1, 1001, 5))
        assert governed_db._config.approvals(policy).get(rid)["status"] == "approved"
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("on",)
    assert [r["request_id"] for r in _events(one_log, "approval_returned")] == [rid]
    assert _orders(dsn) == [(1,), (2,)]


def test_denied_request_is_remembered(dsn, one_log, store_kind):
    policy = _policy()
    store = governed_db._config.approvals(policy)
    with governed_db.connect(dsn, identity=AGENT, policy=policy, audit=one_log,
                             autocommit=True) as conn:
        with pytest.raises(errors.ApprovalRequired) as ei:
            conn.execute(INSERT, (13, 1001, 5))
        rid = ei.value.request_id
        _cli("approvals", "deny", rid, "--as", "human:maria", "--note", "too broad")
        for _ in range(2):  # the identical retry, twice: told, never filed again
            with pytest.raises(errors.StatementDenied) as denied:
                conn.execute(INSERT, (13, 1001, 5))
            assert not isinstance(denied.value, errors.ApprovalRequired)
            assert denied.value.rule_ids == ("statement.require-approval",)
            msg = str(denied.value)
            assert f"approval request {rid}" in msg and "denied by human:maria at 20" in msg
            assert msg.split(" at ", 1)[1].split(": ", 1)[1].startswith("too broad")
        assert [r["id"] for r in store.list()] == [rid]
        # A different statement is a different request.
        with pytest.raises(errors.ApprovalRequired):
            conn.execute(INSERT, (14, 1001, 5))
    assert _orders(dsn) == [(1,), (2,)]
    assert [(d["decision"], d["reason"]) for d in _events(one_log, "approval_decided")] == [
        ("denied", "too broad")]


def test_expiry_is_recorded_and_a_new_request_filed(dsn, one_log, store_kind):
    policy = _policy(ttl=1)
    with governed_db.connect(dsn, identity=AGENT, policy=policy, audit=one_log,
                             autocommit=True) as conn:
        with pytest.raises(errors.ApprovalRequired) as ei:
            conn.execute(INSERT, (15, 1001, 5))
        rid = ei.value.request_id
        governed_db._config.approvals(policy).decide(rid, Identity("maria", "human"),
                                                     approve=True)
        time.sleep(1.3)
        with pytest.raises(errors.ApprovalRequired) as again:
            conn.execute(INSERT, (15, 1001, 5))
        assert again.value.request_id != rid
        with pytest.raises(errors.ApprovalRequired):
            conn.execute(INSERT, (15, 1001, 5))  # pending: same request, expiry not re-recorded
    assert [e["request_id"] for e in _events(one_log, "approval_expired")] == [rid]
    assert _orders(dsn) == [(1,), (2,)]


def test_allowed_write_runs_read_write_and_nothing_else_does(dsn, one_log):
    """A policy that allows INSERT for agents outright: each INSERT runs read-write on its own;
    what the allow-list does not allow still meets the server's READ ONLY."""
    policy = _policy(approval=False)
    with governed_db.connect(dsn, identity=AGENT, policy=policy, audit=one_log) as conn:
        conn.execute(INSERT, (16, 1001, 5))
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("on",)
        conn.commit()
        # A function whose body writes is judged by its body: DELETE is not allowed.
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute("SELECT purge_users()")
        assert "statement.allowlist" in ei.value.rule_ids
        conn.rollback()
    assert _orders(dsn) == [(1,), (2,), (16,)]
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT count(*) FROM users").fetchone() == (2,)


def test_transaction_block_first_statement_may_write(dsn, one_log):
    """`with conn.transaction()` starts with BEGIN, which takes no snapshot: an allowed write
    as its first statement runs; after a read it is refused and nothing is written."""
    policy = _policy(approval=False)
    with governed_db.connect(dsn, identity=AGENT, policy=policy, audit=one_log,
                             autocommit=True) as conn:
        with conn.transaction():
            conn.execute(INSERT, (17, 1001, 5))
            assert conn.execute("SHOW transaction_read_only").fetchone() == ("on",)
        with pytest.raises(errors.StatementDenied) as ei, conn.transaction():
            conn.execute("SELECT count(*) FROM orders")
            conn.execute(INSERT, (18, 1001, 5))
        assert ei.value.rule_ids == ("session.read-only",)
    assert _orders(dsn) == [(1,), (2,), (17,)]
