"""Approval integrity: governance's own state is not data, and a sealed decision cannot be
replayed, rewritten or judged under another policy. Effects are checked from a raw
superuser connection."""

from __future__ import annotations

import psycopg
import pytest

import governed_db
from governed_db import Identity, errors
from governed_db.approvals import PostgresApprovalStore
from governed_db.policy import parse_policy

SERVICE = Identity("etl-job", "service", on_behalf_of="maria")
HUMAN = Identity("alice", "human")
AGENT = Identity("recs-bot", "ai_agent")
DDL = "CREATE INDEX ON t (a)"

# Governance state, reached by several shapes: direct, unqualified through search_path,
# through a view, a SQL function body and a PL/pgSQL function body, COPY, a CTE, DDL and
# GRANT on the schema itself, a function in the schema.
_FIXTURES = """
CREATE SCHEMA IF NOT EXISTS governed_db;
CREATE TABLE IF NOT EXISTS governed_db.audit_log (id bigserial PRIMARY KEY, line text);
CREATE VIEW public.reqs AS SELECT id, status FROM governed_db.approval_requests;
CREATE VIEW public.reqs2 AS SELECT * FROM public.reqs;
CREATE FUNCTION public.req_count() RETURNS bigint LANGUAGE sql
    AS $$ SELECT count(*) FROM governed_db.approval_requests $$;
CREATE FUNCTION public.reopen(rid text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN UPDATE governed_db.approval_requests SET status = 'approved' WHERE id = rid; END $$;
CREATE FUNCTION governed_db.helper() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
"""
SHAPES = [
    "SELECT id, status FROM governed_db.approval_requests",
    'SELECT * FROM "governed_db"."approval_requests" WHERE id = %(rid)s',
    "UPDATE governed_db.approval_requests SET status = 'approved', used_at = NULL"
    " WHERE id = %(rid)s",
    "DELETE FROM governed_db.approval_requests WHERE id = %(rid)s",
    "INSERT INTO governed_db.audit_log (line) VALUES ('forged')",
    "SELECT line FROM governed_db.audit_log",
    "WITH r AS (SELECT * FROM governed_db.approval_requests) SELECT count(*) FROM r",
    "SELECT * FROM public.reqs",
    "SELECT * FROM public.reqs2",
    "SELECT public.req_count()",
    "SELECT public.reopen(%(rid)s)",
    "COPY governed_db.approval_requests TO STDOUT",
    "TRUNCATE governed_db.approval_requests",
    "DROP SCHEMA governed_db CASCADE",
    "ALTER TABLE governed_db.approval_requests DISABLE TRIGGER ALL",
    "GRANT ALL ON SCHEMA governed_db TO PUBLIC",
    "SELECT governed_db.helper()",
    "CREATE FUNCTION governed_db.f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$",
]


def _raw(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True)


@pytest.fixture
def pg_store(dsn, monkeypatch):
    """The PostgreSQL approval store in the governed database itself (as deployments may)."""
    monkeypatch.setenv("GOVERNED_DB_APPROVALS_DSN", dsn)
    store = PostgresApprovalStore(dsn)
    store._connection()
    with _raw(dsn) as c:
        c.execute(_FIXTURES)
    yield store
    store.close()


def _request(dsn: str, policy: governed_db.Policy) -> str:
    with governed_db.connect(dsn, identity=SERVICE, policy=policy, autocommit=True) as c:
        with pytest.raises(errors.ApprovalRequired) as ei:
            c.execute(DDL)
    return ei.value.request_id


def _snapshot(dsn: str) -> list:
    with _raw(dsn) as c:
        return c.execute(
            "SELECT to_jsonb(r) FROM governed_db.approval_requests r ORDER BY id").fetchall() + \
            c.execute("SELECT count(*) FROM governed_db.audit_log").fetchall() + \
            c.execute("SELECT count(*) FROM pg_proc WHERE proname = 'f'").fetchall() + \
            c.execute("SELECT has_schema_privilege('public', 'governed_db', 'USAGE')"
                      ).fetchall()


_POLICIES = {
    "default": "",
    "observe": 'mode = "observe"\n',
    "permissive": "",  # DDL only warns
}


# Every shape under the most trusted identity in observe mode and under an agent; each kind
# and mode on a few shapes (a hard finding: no identity, policy or mode lets it through).
_CASES = [(s, SERVICE, "observe") for s in SHAPES] + [(s, AGENT, "default") for s in SHAPES] + [
    (s, i, m) for s in SHAPES[2:4] for i in (SERVICE, HUMAN) for m in ("default", "permissive")]


@pytest.mark.parametrize(("shape", "ident", "mode"), _CASES,
                         ids=[f"{i.kind}-{m}-{n}" for n, (_, i, m) in enumerate(_CASES)])
def test_governance_schema_is_not_data(dsn, pg_store, shape, ident, mode):
    level = "warning" if mode == "permissive" else "approval"
    policy = parse_policy(_POLICIES[mode] + '[[rules]]\nid = "statement.disallow-ddl"\n'
                          f'level = "{level}"\n')
    rid = _request(dsn, parse_policy('[[rules]]\nid = "statement.disallow-ddl"\nlevel = "approval"\n'))
    before = _snapshot(dsn)
    with governed_db.connect(dsn, identity=ident, policy=policy, autocommit=True) as c:
        with pytest.raises(errors.StatementDenied) as ei:
            c.execute(shape, {"rid": rid} if "%(rid)s" in shape else None)
    assert ei.value.rule_ids[0] == "governance.state", (shape, ei.value)
    assert "governed_db schema" in str(ei.value)
    assert _snapshot(dsn) == before


async def test_governance_schema_is_not_data_async(dsn, pg_store):
    policy = parse_policy('mode = "observe"\n')
    conn = await governed_db.AsyncConnection.connect(dsn, identity=SERVICE, policy=policy,
                                                    autocommit=True)
    try:
        for shape in ("SELECT * FROM governed_db.approval_requests", "SELECT public.reopen('x')"):
            with pytest.raises(errors.StatementDenied) as ei:
                await conn.execute(shape)
            assert ei.value.rule_ids == ("governance.state",)
    finally:
        await conn.close()


@pytest.mark.parametrize("sql", [
    "SELECT 'governed_db' AS s",  # a literal naming it is not a reference
    "SELECT a AS governed_db FROM t",
])
def test_governance_schema_named_in_text_only_still_runs(dsn, pg_store, sql):
    with governed_db.connect(dsn, identity=SERVICE, autocommit=True) as c:
        assert c.execute(sql).fetchall()


def test_search_path_unqualified_is_resolved(dsn, pg_store):
    policy = parse_policy('[[rules]]\nid = "session.disallow-security-settings"\n'
                          'allow = ["search_path"]\n')
    with governed_db.connect(dsn, identity=SERVICE, policy=policy, autocommit=True) as c:
        c.execute("SET search_path = governed_db, public")
        with pytest.raises(errors.StatementDenied) as ei:
            c.execute("SELECT * FROM approval_requests")
        assert ei.value.rule_ids == ("governance.state",)


async def test_mcp_does_not_show_governance_state(dsn, pg_store):
    pytest.importorskip("mcp")
    from governed_db.audit import AuditLog
    from governed_db.mcp._settings import McpSettings
    from governed_db.mcp._tools import CallInfo, GovernedTools

    rid = _request(dsn, parse_policy('[[rules]]\nid = "statement.disallow-ddl"\n'
                                     'level = "approval"\n'))
    log = AuditLog.in_memory()
    tools = GovernedTools(dsn, policy=parse_policy(""), settings=McpSettings(), audit=log)
    agent = Identity("unit-bot", "ai_agent")
    try:
        out = await tools.call("list_tables", {}, agent, CallInfo(request_id="1"))
        assert not out.is_error and "approval_requests" not in out.text \
            and "audit_log" not in out.text and "reqs" in out.text
        out = await tools.call("list_schemas", {}, agent, CallInfo(request_id="2"))
        assert not out.is_error and "governed_db" not in out.text and "public" in out.text
        for name in ("governed_db.approval_requests", "governed_db.audit_log"):
            out = await tools.call("describe_table", {"table": name}, agent,
                                   CallInfo(request_id="3"))
            assert out.is_error and out.outcome == "not_found" and "seal" not in out.text
        out = await tools.call("query", {"sql": "SELECT * FROM governed_db.approval_requests"},
                               agent, CallInfo(request_id="4"))
        assert out.is_error and "governance.state" in out.text and rid not in out.text
    finally:
        await tools.aclose()
        log.close()


# -- single use and the seal: replay by rollback, rewritten requests -------------------------------

import json  # noqa: E402

from click.testing import CliRunner  # noqa: E402

from governed_db.approvals import ApprovalStore  # noqa: E402
from governed_db.cli import main  # noqa: E402

_DDL_POLICY = '[[rules]]\nid = "statement.disallow-ddl"\nlevel = "approval"\n'


@pytest.fixture(params=["file", "postgres"])
def store_kind(request, dsn, monkeypatch):
    if request.param == "postgres":
        monkeypatch.setenv("GOVERNED_DB_APPROVALS_DSN", dsn)
    return request.param


def _indexes(dsn: str) -> int:
    with _raw(dsn) as c:
        return c.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 't'").fetchone()[0]


def _row(kind: str, dsn: str, rid: str) -> dict:
    if kind == "file":
        return json.loads(ApprovalStore.default()._path(rid).read_text())
    with _raw(dsn) as c:
        return c.execute("SELECT to_jsonb(r) FROM governed_db.approval_requests r WHERE id = %s",
                         (rid,)).fetchone()[0]


def _put(kind: str, dsn: str, rid: str, row: dict) -> None:
    """Write a request as someone with raw write access to the store would."""
    if kind == "file":
        ApprovalStore.default()._path(rid).write_text(json.dumps(row))
        return
    from psycopg.types.json import Jsonb

    with _raw(dsn) as c:
        c.execute("DELETE FROM governed_db.approval_requests WHERE id = %s", (rid,))
        c.execute("INSERT INTO governed_db.approval_requests SELECT * FROM"
                  " jsonb_populate_record(NULL::governed_db.approval_requests, %s)",
                  (Jsonb(row),))


def _run(conn, sql: str = DDL):
    try:
        conn.execute(sql)
        return "ran"
    except errors.ApprovalRequired as exc:
        return exc.request_id


def _approve(policy, rid: str) -> None:
    governed_db._config.approvals(policy).decide(rid, HUMAN, approve=True, policy=policy)


@pytest.mark.parametrize("rollback", ["whole-row", "status-only", "status-and-seal"])
def test_used_approval_cannot_be_replayed_by_rollback(dsn, store_kind, rollback):
    policy = parse_policy(_DDL_POLICY)
    with governed_db.connect(dsn, identity=SERVICE, policy=policy, autocommit=True) as c:
        rid = _run(c)
        _approve(policy, rid)
        approved = _row(store_kind, dsn, rid)
        assert _run(c) == "ran" and _indexes(dsn) == 1
        used = _row(store_kind, dsn, rid)
        assert used["status"] == "used"
        if rollback == "whole-row":  # the row exactly as it was, approved and sealed
            back = approved
        elif rollback == "status-only":
            back = {**used, "status": "approved", "used_at": None}
        else:  # the earlier seal on the later row
            back = {**used, "status": "approved", "used_at": None, "seal": approved["seal"]}
        _put(store_kind, dsn, rid, back)
        again = _run(c)
        assert again != "ran" and again != rid  # a new request, the old one is not an approval
    assert _indexes(dsn) == 1  # raw: ran exactly once


def test_given_back_approval_is_usable_once_more(dsn, store_kind):
    policy = parse_policy(_DDL_POLICY)
    store = governed_db._config.approvals(policy)
    with governed_db.connect(dsn, identity=SERVICE, policy=policy, autocommit=True) as c:
        rid = _run(c)
        _approve(policy, rid)
        assert _run(c) == "ran"
        store.release(rid)  # as the core does when the statement did not run
        assert store.get(rid)["status"] == "approved"
        with _raw(dsn) as r:
            r.execute("DROP INDEX t_a_idx")
        assert _run(c) == "ran"
        assert _run(c) not in ("ran", rid)
    assert _indexes(dsn) == 1


# What the approver is shown and the consumer relies on: each field rewritten by hand.
_EDITS = {
    "statement": "CREATE INDEX ON t (a) -- harmless",
    "summary": "create an index on t",
    "tables": ["public.t", "public.other"],
    "rule_ids": ["statement.harmless"],
    "reason": "routine",
    "requester": {"id": "alice", "kind": "human"},
    "policy": "0" * 64,
    "expires_at": 4102444800.0,
    "binding": "0" * 64,
    "affected_rows": 1,
}


@pytest.mark.parametrize("field", sorted(_EDITS))
def test_rewritten_pending_request_is_tampered(dsn, store_kind, field):
    policy = parse_policy(_DDL_POLICY)
    with governed_db.connect(dsn, identity=SERVICE, policy=policy, autocommit=True) as c:
        rid = _run(c)
        row = _row(store_kind, dsn, rid)
        value = _EDITS[field]
        if store_kind == "postgres" and field == "expires_at":
            value = "2100-01-01T00:00:00+00:00"
        _put(store_kind, dsn, rid, {**row, field: value})
        store = governed_db._config.approvals(policy)
        assert store.get(rid)["status"] == "TAMPERED"
        listed = CliRunner().invoke(main, ["approvals", "list"])
        assert "TAMPERED" in listed.output
        with pytest.raises(errors.StatementDenied) as ei:
            store.decide(rid, HUMAN, approve=True, policy=policy)
        assert ei.value.rule_ids == ("approval.tampered",)
        # the requester's next run files a new request, it never runs
        assert _run(c) not in ("ran", rid)
    assert _indexes(dsn) == 0


@pytest.mark.parametrize("field", ["statement", "summary", "requester", "expires_at"])
def test_rewritten_approved_request_is_never_consumed(dsn, store_kind, field):
    policy = parse_policy(_DDL_POLICY)
    with governed_db.connect(dsn, identity=SERVICE, policy=policy, autocommit=True) as c:
        rid = _run(c)
        _approve(policy, rid)
        row = _row(store_kind, dsn, rid)
        value = _EDITS[field]
        if store_kind == "postgres" and field == "expires_at":
            value = "2100-01-01T00:00:00+00:00"
        _put(store_kind, dsn, rid, {**row, field: value})
        assert _run(c) not in ("ran", rid)
    assert _indexes(dsn) == 0


# -- approver rules at use, under the policy the statement runs under (f01), agent tokens (f02) --

from governed_db.approvals import approver_from_token  # noqa: E402
from governed_db.policy import load_policy  # noqa: E402

from .fix_tokens import AUD, ISS, issuer  # noqa: E402,F401


def _oidc_policy(tmp_path, issuer, identity: str, oidc_extra: str = 'kind_claim = "gdb_kind"',
                 name: str = "p") -> governed_db.Policy:
    (tmp_path / f"{name}.jwks.json").write_text(json.dumps(issuer.jwks))
    path = tmp_path / f"{name}.toml"
    path.write_text(f"""{_DDL_POLICY}
[identity]
{identity}

[identity.oidc]
issuer = "{issuer.iss}"
audience = "{AUD}"
jwks = "{name}.jwks.json"
id_claim = "name"
roles_claim = "roles"
{oidc_extra}
""")
    return load_policy(path)


@pytest.mark.parametrize("shape", ["named-under-open-policy", "token-without-role",
                                   "token-of-another-issuer"])
def test_approver_rules_checked_at_use_under_the_running_policy(dsn, store_kind, tmp_path,
                                                                issuer, shape):
    real = _oidc_policy(tmp_path, issuer, 'approver_roles = ["dba"]', name="real")
    chosen = parse_policy(_DDL_POLICY)  # what the attacker runs `approvals approve` under
    lax = _oidc_policy(tmp_path, issuer, "", name="lax")  # same issuer, no roles required
    with governed_db.connect(dsn, identity=SERVICE, policy=real, autocommit=True) as c:
        rid = _run(c)
        store = governed_db._config.approvals(real)
        if shape == "named-under-open-policy":
            store.decide(rid, Identity("boss", "human"), approve=True, policy=chosen)
        elif shape == "token-without-role":
            tok = issuer.mint(sub="u-bob", name="bob", gdb_kind="human", roles=["dev"])
            store.decide(rid, approver_from_token(tok, lax), approve=True, policy=lax)
        else:  # an issuer the running policy does not trust, with every claim wanted
            from .fix_tokens import Issuer

            evil = Issuer(iss="https://evil.example")
            other = _oidc_policy(tmp_path, evil, 'approver_roles = ["dba"]', name="other")
            tok = evil.mint(sub="u-eve", name="eve", gdb_kind="human", roles=["dba"])
            store.decide(rid, approver_from_token(tok, other), approve=True, policy=other)
        assert store.get(rid)["status"] == "approved"
        assert _run(c) not in ("ran", rid)
    assert _indexes(dsn) == 0  # raw: the statement did not run


def test_qualified_verified_approver_is_used_once(dsn, store_kind, tmp_path, issuer):
    real = _oidc_policy(tmp_path, issuer, 'approver_roles = ["dba"]', name="real")
    with governed_db.connect(dsn, identity=SERVICE, policy=real, autocommit=True) as c:
        rid = _run(c)
        tok = issuer.mint(sub="u-dana", name="dana", gdb_kind="human", roles=["dba"])
        governed_db._config.approvals(real).decide(rid, approver_from_token(tok, real),
                                                   approve=True, policy=real)
        assert _run(c) == "ran"
        assert _run(c) not in ("ran", rid)
    assert _indexes(dsn) == 1


@pytest.mark.parametrize(("oidc_extra", "claims", "rule"), [
    ("", {"gdb_kind": "human"}, "approval.verified-approver"),  # the mapping does not say
    ("", {}, "approval.verified-approver"),
    ('kind_claim = "gdb_kind"', {"gdb_kind": "ai_agent"}, "approval.agent-approver"),
    ('kind_claim = "gdb_kind"', {"gdb_kind": "service"}, "approval.verified-approver"),
    ('kind = "ai_agent"', {}, "approval.agent-approver"),
])
def test_agent_or_unmapped_token_never_approves(dsn, tmp_path, issuer, oidc_extra, claims, rule):
    policy = _oidc_policy(tmp_path, issuer, 'require_verified = ["human"]', oidc_extra)
    tok = issuer.mint(sub="support-bot", name="support-bot", **claims)
    with pytest.raises(errors.StatementDenied) as ei:
        approver_from_token(tok, policy)
    assert ei.value.rule_ids == (rule,)


def test_prune_removes_the_use_ledger_entry(dsn, store_kind):
    import time

    from governed_db.approvals import prune

    policy = parse_policy(_DDL_POLICY)
    store = governed_db._config.approvals(policy)
    with governed_db.connect(dsn, identity=SERVICE, policy=policy, autocommit=True) as c:
        rid = _run(c)
        _approve(policy, rid)
        assert _run(c) == "ran"
    if store_kind == "file":
        assert store._ledger(rid) == 2
    time.sleep(1.1)
    assert prune(store, 1.0) == 1
    if store_kind == "file":
        assert store._ledger(rid) is None
    else:
        with _raw(dsn) as r:
            assert r.execute("SELECT count(*) FROM governed_db.approval_ledger WHERE id = %s",
                             (rid,)).fetchone()[0] == 0


# -- the person an identity acts for is not a second person (four eyes) --------------------

def test_the_person_acted_for_cannot_approve(dsn, store_kind, monkeypatch):
    """SERVICE acts on behalf of maria: maria approving it is approving her own request, named
    with --as or through the API (the verified path compares token subjects the same way)."""
    from click.testing import CliRunner

    from governed_db.cli import main as cli_main

    policy = parse_policy(_DDL_POLICY)
    store = governed_db._config.approvals(policy)
    with governed_db.connect(dsn, identity=SERVICE, policy=policy, autocommit=True) as c:
        rid = _run(c)
        with pytest.raises(errors.StatementDenied) as ei:
            store.decide(rid, Identity("maria", "human"), approve=True, policy=policy)
        assert ei.value.rule_ids == ("approval.self-approval",)
        assert "on its own behalf" in str(ei.value)
        out = CliRunner().invoke(cli_main, ["approvals", "approve", rid, "--as", "human:maria"])
        assert out.exit_code != 0 and "on its own behalf" in out.output, out.output
        assert store.get(rid)["status"] == "pending"
        # A decision written before this rule (forced past the decide-time check) is never
        # consumed: the at-use check applies the same rule.
        monkeypatch.setattr(governed_db.approvals, "check_decision", lambda *a, **k: None)
        store.decide(rid, Identity("maria", "human"), approve=True, policy=policy)
        assert store.get(rid)["status"] == "approved"
        assert _run(c) not in ("ran", rid)
    assert _indexes(dsn) == 0
