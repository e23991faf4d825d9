"""Approvals end to end, on both stores: binding, refusals, single use, expiry, wait mode."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from click.testing import CliRunner

import governed_db
from governed_db import Identity, errors
from governed_db.approvals import ApprovalStore, PostgresApprovalStore
from governed_db.cli import main
from governed_db.policy import parse_policy

DEPLOY = Identity("deploy-bot", "service")
ALICE = Identity("alice", "human")
AGENT = Identity("recs-bot", "ai_agent")
DDL = "CREATE INDEX t_a ON t (a)"


@pytest.fixture(params=["file", "postgres"])
def store_kind(request, dsn, monkeypatch):
    if request.param == "postgres":
        monkeypatch.setenv("GOVERNED_DB_APPROVALS_DSN", dsn)
    return request.param


def _policy(extra: str = "") -> governed_db.Policy:
    return parse_policy(f"""
[[rules]]
id = "statement.disallow-ddl"
level = "approval"
{extra}""")


def _has_index(dsn: str) -> bool:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 't_a'"
                         ).fetchone()[0] == 1


def test_flow_through_the_cli(dsn, audit, store_kind):
    policy = _policy()
    conn = governed_db.connect(dsn, identity=DEPLOY, policy=policy, audit=audit, autocommit=True)
    with pytest.raises(errors.ApprovalRequired) as ei:
        conn.execute(DDL)
    rid = ei.value.request_id
    store = governed_db._config.approvals(policy)
    assert isinstance(store, PostgresApprovalStore if store_kind == "postgres" else ApprovalStore)
    runner = CliRunner()
    listed = runner.invoke(main, ["approvals", "list"])
    assert rid in listed.output and "service:deploy-bot" in listed.output
    # Refusals: the requester itself, any ai_agent.
    self_try = runner.invoke(main, ["approvals", "approve", rid, "--as", "human:deploy-bot"])
    assert self_try.exit_code == 1 and "own request" in self_try.output
    agent_try = runner.invoke(main, ["approvals", "approve", rid, "--as", "ai_agent:judge"])
    assert agent_try.exit_code == 1 and "ai_agent" in agent_try.output
    ok = runner.invoke(main, ["approvals", "approve", rid, "--as", "alice", "--note", "ok"])
    assert ok.exit_code == 0, ok.output
    # A changed statement is not covered by the approval.
    with pytest.raises(errors.ApprovalRequired):
        conn.execute("CREATE INDEX t_b ON t (a)")
    conn.execute(DDL)  # runs once
    assert _has_index(dsn)
    assert store.get(rid)["status"] == "used"
    again = runner.invoke(main, ["approvals", "approve", rid, "--as", "alice"])
    assert again.exit_code == 1 and "not pending" in again.output
    conn.close()
    audit.flush()
    outcomes = [(r["decision"]["approval"], r["outcome"]["outcome"]) for r in audit.records
                if r["type"] == "statement" and r["decision"]["approval"] == rid]
    assert outcomes == [(rid, "approval_required"), (rid, "ok")]


def test_expired_approval_is_not_used(dsn, audit, store_kind):
    policy = _policy("[approvals]\nttl_seconds = 1\n")
    with governed_db.connect(dsn, identity=DEPLOY, policy=policy, audit=audit,
                             autocommit=True) as conn:
        with pytest.raises(errors.ApprovalRequired) as ei:
            conn.execute(DDL)
        store = governed_db._config.approvals(policy)
        store.decide(ei.value.request_id, ALICE, approve=True)
        time.sleep(1.2)
        assert store.get(ei.value.request_id)["status"] == "expired"
        with pytest.raises(errors.ApprovalRequired) as again:
            conn.execute(DDL)
        assert again.value.request_id != ei.value.request_id
    assert not _has_index(dsn)


@pytest.mark.parametrize("decision", ["approve", "deny", "timeout"])
def test_wait_mode_blocks_for_a_decision(dsn, audit, store_kind, decision):
    policy = _policy("[approvals]\nwait_seconds = 1.5\n" if decision == "timeout"
                     else "[approvals]\nwait_seconds = 20\n")
    store = governed_db._config.approvals(policy)

    def approver() -> None:
        for _ in range(100):
            pending = store.list("pending")
            if pending:
                store.decide(pending[0]["id"], ALICE, approve=decision == "approve")
                return
            time.sleep(0.05)

    conn = governed_db.connect(dsn, identity=DEPLOY, policy=policy, audit=audit, autocommit=True)
    helper = threading.Thread(target=approver) if decision != "timeout" else None
    if helper:
        helper.start()
    started = time.monotonic()
    try:
        if decision == "approve":
            conn.execute(DDL)
            assert _has_index(dsn)
        elif decision == "deny":
            with pytest.raises(errors.StatementDenied, match="was denied by human:alice at") as ei:
                conn.execute(DDL)
            assert not isinstance(ei.value, errors.ApprovalRequired)
        else:
            with pytest.raises(errors.ApprovalRequired):
                conn.execute(DDL)
            assert time.monotonic() - started >= 1.4
    finally:
        if helper:
            helper.join()
        conn.close()
    if decision != "approve":
        assert not _has_index(dsn)


def test_single_use_under_a_race(dsn, audit, store_kind):
    policy = _policy()
    conns = [governed_db.connect(dsn, identity=DEPLOY, policy=policy, audit=audit,
                                 autocommit=True) for _ in range(4)]
    with pytest.raises(errors.ApprovalRequired) as ei:
        conns[0].execute(DDL)
    governed_db._config.approvals(policy).decide(ei.value.request_id, ALICE, approve=True)
    results: list[str] = []

    def run(c) -> None:
        try:
            c.execute(DDL)
            results.append("ran")
        except errors.ApprovalRequired:
            results.append("approval")
        except psycopg.errors.DuplicateTable:
            results.append("ran-twice")

    threads = [threading.Thread(target=run, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    assert sorted(results) == ["approval", "approval", "approval", "ran"]


def test_approvals_policy_table_validated():
    with pytest.raises(errors.PolicyError, match="approvals.store"):
        parse_policy('[approvals]\nstore = "redis"\n')
    with pytest.raises(errors.PolicyError, match="wait_seconds"):
        parse_policy('[approvals]\nwait_seconds = -1\n')
    with pytest.raises(errors.PolicyError, match="unknown key"):
        parse_policy('[approvals]\nwait = 3\n')


@pytest.mark.parametrize("decision", ["approve", "deny"])
async def test_async_wait_mode_does_not_block_the_loop(dsn, audit, store_kind, decision):
    import asyncio

    policy = _policy("[approvals]\nwait_seconds = 20\n")
    store = governed_db._config.approvals(policy)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    async def approver():
        for _ in range(200):
            pending = await asyncio.to_thread(store.list, "pending")
            if pending:
                await asyncio.sleep(0.3)
                await asyncio.to_thread(store.decide, pending[0]["id"], ALICE,
                                        approve=decision == "approve")
                return
            await asyncio.sleep(0.05)

    conn = await governed_db.AsyncConnection.connect(dsn, identity=DEPLOY, policy=policy,
                                                     audit=audit, autocommit=True)
    async with conn:
        tick = asyncio.create_task(ticker())
        helper = asyncio.create_task(approver())
        try:
            if decision == "approve":
                await conn.execute(DDL)
            else:
                with pytest.raises(errors.StatementDenied, match="was denied by human:alice at"):
                    await conn.execute(DDL)
        finally:
            tick.cancel()
            await helper
    assert ticks >= 5  # the event loop kept running while the statement waited
    assert _has_index(dsn) == (decision == "approve")
