"""One cached plan per sent statement text (governed_db/engine/cached_plan.py): reused only
under the statement key it was made for — the text, the identity's scope, the policy and the
catalog snapshot — and never across an identity change, a policy change, a catalog refresh or
an approval.

Every test runs the same text again and again through the public API, asserts what reached the
caller (against raw values read over a separate superuser connection) and that the cache was
actually used where it may be (so a test cannot pass because nothing was cached).
"""

from __future__ import annotations

import psycopg
import pytest

import governed_db
from governed_db import Identity, errors
from governed_db.masking import Classifier
from governed_db.policy import parse_policy

from .test_fail_closed import MODES, Session, assert_no_secret, raw_secrets

SUPPORT_UNMASKS_SSN = parse_policy("""
[[masking.unmask]]
columns = ["users.ssn", "users.email"]
roles = ["support"]
""")
SUPPORT = Identity("s1", "human", roles=("support",))
QUERY = "SELECT id, email, ssn FROM users ORDER BY id"


def _plan(s: Session):
    """The cached plan the last statement was answered from (None: the full gate ran)."""
    return s.conn.governor.last_plan


def _raw(dsn: str, sql: str):
    with psycopg.connect(dsn) as raw:
        return raw.execute(sql).fetchall()


@pytest.mark.parametrize("mode", MODES)
async def test_cached_plan_never_serves_another_identity(dsn, audit, mode):
    """clear for the unmask role, masked without it, clear again: each from its own plan."""
    secrets = raw_secrets(dsn)
    clear_rows = _raw(dsn, QUERY)
    masked = SUPPORT.evolve(roles=())
    async with Session(mode, dsn, audit, SUPPORT, policy=SUPPORT_UNMASKS_SSN,
                       autocommit=True) as s:
        for _ in range(3):
            assert await s.run(QUERY) == clear_rows
        support_plan = _plan(s)
        assert support_plan is not None, "the repeated statement was not answered from a plan"
        for _ in range(3):
            with governed_db.acting_as(masked):
                rows = await s.run(QUERY)
            assert [r[0] for r in rows] == [r[0] for r in clear_rows]
            assert all(r[1].startswith("****@") for r in rows), rows
            assert_no_secret(rows, secrets)
            assert _plan(s) is not support_plan
        assert await s.run(QUERY) == clear_rows


@pytest.mark.parametrize("mode", MODES)
async def test_cached_allow_never_allows_another_identity(dsn, audit, mode):
    """A write allowed (and cached) for a service is denied for an agent, same text."""
    update = "UPDATE orgs SET plan = plan WHERE id = 1"
    agent = Identity("recs-bot", "ai_agent")
    async with Session(mode, dsn, audit, Identity("svc", "service"), autocommit=True) as s:
        for _ in range(3):
            await s.run(update)
        assert _plan(s) is not None
        with governed_db.acting_as(agent):
            with pytest.raises(errors.StatementDenied) as info:
                await s.run(update)
        assert "statement.allowlist" in info.value.rule_ids
        await s.run(update)  # the service's plan still stands


@pytest.mark.parametrize("mode", MODES)
async def test_policy_change_is_not_answered_from_the_old_plan(dsn, audit, mode):
    """The governor's policy replaced (a reload): the digest differs, the plan is not used."""
    secrets = raw_secrets(dsn)
    async with Session(mode, dsn, audit, SUPPORT, policy=SUPPORT_UNMASKS_SSN,
                       autocommit=True) as s:
        for _ in range(3):
            assert await s.run(QUERY) == _raw(dsn, QUERY)
        old = _plan(s)
        assert old is not None
        gov = s.conn.governor
        gov.policy = parse_policy("")  # the default masking: no unmask grant
        gov.classifier = Classifier(gov.policy)
        rows = await s.run(QUERY)
        assert all(r[1].startswith("****@") for r in rows), rows
        assert_no_secret(rows, secrets)
        assert _plan(s) is not old


@pytest.mark.parametrize("mode", MODES)
async def test_catalog_refresh_is_not_answered_from_the_old_plan(dsn, audit, mode):
    """A view redefined to read a sensitive column: DDL reloads the snapshot, a new plan."""
    secrets = raw_secrets(dsn)
    ddl_runs = parse_policy('[[rules]]\nid = "statement.disallow-ddl"\nlevel = "warning"\n')
    async with Session(mode, dsn, audit, Identity("svc", "service"), policy=ddl_runs,
                       autocommit=True) as s:
        await s.run("CREATE VIEW cache_probe AS SELECT id, plan AS v FROM orgs")
        for _ in range(3):
            rows = await s.run("SELECT v FROM cache_probe ORDER BY id")
        old = _plan(s)
        assert old is not None
        assert rows == _raw(dsn, "SELECT plan FROM orgs ORDER BY id")
        await s.run("CREATE OR REPLACE VIEW cache_probe AS SELECT id, ssn AS v FROM users")
        rows = await s.run("SELECT v FROM cache_probe ORDER BY id")
        assert rows and all(str(r[0]).startswith("*") for r in rows), rows
        assert_no_secret(rows, secrets)
        assert _plan(s) is not old


APPROVE_DDL = parse_policy('[[rules]]\nid = "statement.disallow-ddl"\nlevel = "approval"\n')
DDL = "CREATE INDEX cache_t_a ON t (a)"


def test_approved_statement_is_never_cached(dsn, audit):
    """An approval is used once: the statement it allowed is not answered from a plan after."""
    deploy = Identity("deploy-bot", "service")
    alice = Identity("alice", "human")
    with governed_db.connect(dsn, identity=deploy, policy=APPROVE_DDL, audit=audit,
                             autocommit=True) as conn:
        with pytest.raises(errors.ApprovalRequired) as ei:
            conn.execute(DDL)
        governed_db._config.approvals(APPROVE_DDL).decide(ei.value.request_id, alice,
                                                          approve=True)
        conn.execute(DDL)
        assert conn.governor.last_plan is None
        with psycopg.connect(dsn, autocommit=True) as raw:
            raw.execute("DROP INDEX cache_t_a")
        with pytest.raises(errors.ApprovalRequired):
            conn.execute(DDL)
        assert DDL.encode() not in conn.governor.cached_plans


def test_plan_checks_every_part_of_the_statement_key(dsn, audit):
    """Unit view of valid_for: the codec, the identity scope, the policy digest and the
    catalog version each make the plan unusable on their own."""
    from governed_db.engine.cached_plan import valid_for

    with governed_db.connect(dsn, identity=SUPPORT, policy=SUPPORT_UNMASKS_SSN, audit=audit,
                             autocommit=True) as conn:
        for _ in range(2):
            conn.execute(QUERY).fetchall()
        gov = conn.governor
        plan = gov.last_plan
        assert plan is not None and valid_for(gov, plan, SUPPORT, plan.codec)
        assert valid_for(gov, plan, SUPPORT.evolve(attributes={"tool_call_id": "t"}),
                         plan.codec)  # attributes are not part of the scope
        assert not valid_for(gov, plan, SUPPORT, "latin-1")
        for change in ({"roles": ()}, {"id": "s2"}, {"kind": "ai_agent"}, {"purpose": "x"},
                       {"on_behalf_of": "bob"}, {"model": "m"}):
            assert not valid_for(gov, plan, SUPPORT.evolve(**change), plan.codec), change
        assert valid_for(gov, plan, SUPPORT, plan.codec)
        digest = plan.policy_digest
        plan.policy_digest = "other"
        assert not valid_for(gov, plan, SUPPORT, plan.codec)
        plan.policy_digest = digest
        plan.catalog_version -= 1
        assert not valid_for(gov, plan, SUPPORT, plan.codec)


ENV_UNMASKS = parse_policy("""
[[masking.unmask]]
columns = ["users.ssn", "users.email"]
identity_ids = ["trusted"]
""")


@pytest.mark.parametrize("mode", MODES)
async def test_identity_from_the_environment_keeps_its_plan_and_follows_the_variable(
        dsn, audit, mode, monkeypatch):
    """GOVERNED_DB_IDENTITY (no identity on the connection): the same text of the variable is
    the same identity object statement after statement, so its plan is used as is (a new
    object per statement made the scope key again each time); a new value of the variable is
    another identity, never answered from the first one's plan, and the records say who."""
    secrets = raw_secrets(dsn)
    clear_rows = _raw(dsn, QUERY)
    monkeypatch.setenv("GOVERNED_DB_IDENTITY", "human:trusted")
    async with Session(mode, dsn, audit, None, policy=ENV_UNMASKS, autocommit=True) as s:
        for _ in range(3):
            assert await s.run(QUERY) == clear_rows
        trusted_plan = _plan(s)
        assert trusted_plan is not None
        seen = trusted_plan.ident
        assert await s.run(QUERY) == clear_rows
        assert _plan(s) is trusted_plan and trusted_plan.ident is seen, \
            "the environment's identity was parsed again for this statement"
        monkeypatch.setenv("GOVERNED_DB_IDENTITY", "human:other")
        for _ in range(2):
            rows = await s.run(QUERY)
            assert all(r[1].startswith("****@") for r in rows), rows
            assert_no_secret(rows, secrets)
            assert _plan(s) is not trusted_plan
        monkeypatch.setenv("GOVERNED_DB_IDENTITY", "human:trusted")
        assert await s.run(QUERY) == clear_rows
    audit.flush()
    who = [r["identity"]["id"] for r in audit.records
           if r.get("type") == "statement" and r["statement"]["normalized"].startswith("SELECT id")]
    assert who == ["trusted"] * 4 + ["other"] * 2 + ["trusted"]
