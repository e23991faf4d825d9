"""Audit tamper evidence, policy validation, identity propagation (real PostgreSQL)."""

from __future__ import annotations

import json

import psycopg
import pytest

import governed_db
from governed_db import Identity, acting_as, errors
from governed_db.audit import AuditLog, VerificationError, load_public_key, query, verify
from governed_db.policy import PolicyWarning, parse_policy

from .conftest import AGENT, HUMAN


@pytest.fixture
def logged(dsn, tmp_path):
    path = tmp_path / "audit.jsonl"
    conn = governed_db.connect(dsn, identity=AGENT, audit=str(path), autocommit=True)
    conn.execute("SELECT email FROM users").fetchall()
    with pytest.raises(errors.StatementDenied):
        conn.execute("DROP TABLE users")
    conn.close()
    governed_db.reset_defaults()  # closes the log with a signed close checkpoint
    pub = load_public_key(tmp_path / "state" / "audit-signing.pub")
    return path, pub


def test_verify_intact_and_query(logged):
    path, pub = logged
    report = verify(path, pub)
    assert report.records >= 5 and report.chains == 1
    recs = query(path, identity="recs-bot", table="users")
    assert [r["decision"]["action"] for r in recs] == ["allow", "deny"]
    assert recs[0]["masked"] == {"email": "email:name:email"}
    assert recs[1]["decision"]["rules"][0] == "statement.allowlist"
    assert recs[0]["identity"]["purpose"] == "weekly recommendations"
    assert "qem" not in path.read_text()


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder", "truncate", "forge"])
def test_verify_detects_tampering(logged, tamper):
    path, pub = logged
    lines = path.read_text().splitlines(keepends=True)
    if tamper == "edit":
        lines[2] = lines[2].replace("recs-bot", "recs-box")
    elif tamper == "delete":
        del lines[2]
    elif tamper == "reorder":
        lines[2], lines[3] = lines[3], lines[2]
    elif tamper == "truncate":
        lines = lines[:-1]
    elif tamper == "forge":
        rec = json.loads(lines[-1])
        other = AuditLog.in_memory()
        rec["sig"] = other.key.sign(bytes.fromhex(rec["hash"])).hex()
        other.close()
        lines[-1] = json.dumps(rec) + "\n"
    path.write_text("".join(lines))
    with pytest.raises(VerificationError) as info:
        verify(path, pub)
    assert info.value.index >= 1


def test_other_key_detected(logged, tmp_path):
    path, _ = logged
    other = AuditLog.in_memory()
    with pytest.raises(VerificationError, match="another key|signature invalid"):
        verify(path, other.key.public_key())
    other.close()


def test_cli_verify_exit_codes(logged):
    from click.testing import CliRunner

    from governed_db.cli import main

    path, _ = logged
    assert CliRunner().invoke(main, ["audit", "verify", str(path)]).exit_code == 0
    text = path.read_text().replace("recs-bot", "recs-bxt", 1)
    path.write_text(text)
    result = CliRunner().invoke(main, ["audit", "verify", str(path)])
    assert result.exit_code == 1 and "record" in result.output


def test_policy_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text('version = 1\n\n[[rules]]\nid = "statement.disallow-drop"\n\n'
                   '[[rules]]\nid = "no.such.rule"\n')
    with pytest.raises(errors.PolicyError) as info:
        governed_db.load_policy(bad)
    assert info.value.line == 6 and str(bad) in str(info.value)
    with pytest.raises(errors.PolicyError, match="x.toml: not valid TOML"):
        parse_policy("version = [", source="x.toml")
    with pytest.raises(errors.PolicyError, match="level"):
        parse_policy('[[rules]]\nid = "function.deny"\nlevel = "loud"\n')


def test_observe_mode_runs_and_records(dsn, audit):
    policy = parse_policy('mode = "observe"\n[[rules]]\nid = "statement.disallow-drop"\n')
    conn = governed_db.connect(dsn, identity=HUMAN, audit=audit, policy=policy, autocommit=True)
    conn.execute("DROP TABLE t")
    conn.close()
    audit.flush()
    rec = [r for r in audit.records if r.get("type") == "statement"][-1]
    # The file extends the default profile, whose DDL-approval rule matches too.
    assert rec["decision"] == {"action": "allow", "would": "deny",
                               "rules": ["statement.disallow-drop", "statement.disallow-ddl"],
                               "observe": True,
                               "approval": None}


def test_identity_pushed_to_server_and_switched_per_statement(dsn, audit):
    conn = governed_db.connect(dsn, identity=HUMAN, audit=audit, autocommit=True)
    assert conn.execute("SELECT current_setting('governed_db.identity')").fetchone()[0] == "human:alice"
    with acting_as(AGENT):
        row = conn.execute("SELECT current_setting('governed_db.identity'),"
                           " current_setting('default_transaction_read_only')").fetchone()
        assert row == ("ai_agent:recs-bot", "on")
        with pytest.raises(errors.StatementDenied):
            conn.execute("DELETE FROM t WHERE a = 1")
    assert conn.execute("SELECT current_setting('transaction_read_only')").fetchone()[0] == "off"
    conn.close()
    audit.flush()
    kinds = [r["identity"]["id"] for r in audit.records if r.get("type") == "statement"]
    assert kinds == ["alice", "recs-bot", "recs-bot", "alice"]


def test_read_only_server_side_stops_writing_function(agent_conn, dsn, audit):
    # A user-defined function is off the agent's function allow-list, and its body is
    # analyzed: the call is judged as the DELETE it runs.
    with pytest.raises(errors.StatementDenied) as ei:
        agent_conn.execute("SELECT purge_users()")
    assert "function.allowlist" in ei.value.rule_ids
    assert "statement.allowlist" in ei.value.rule_ids
    # A body the analyzer cannot see into, under a policy that lets it through: the
    # server-side READ ONLY still stops the write.
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("CREATE FUNCTION purge_dyn() RETURNS void LANGUAGE plpgsql AS"
                    " $$BEGIN EXECUTE 'DELETE FROM ' || 'users'; END$$")
    with pytest.warns(PolicyWarning):
        policy = parse_policy('extends = "none"\n[[rules]]\nid = "statement.allowlist"\n'
                              'allow = ["SELECT"]\n')
    with governed_db.connect(dsn, identity=agent_conn.identity, policy=policy,
                             audit=audit) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("SELECT purge_dyn()")
    with psycopg.connect(dsn) as raw:
        assert raw.execute("SELECT count(*) FROM users").fetchone() == (2,)


def test_env_identity(dsn, audit, monkeypatch):
    monkeypatch.setenv("GOVERNED_DB_IDENTITY", "ai_agent:env-bot")
    conn = governed_db.connect(dsn, audit=audit)
    assert conn.identity == Identity("env-bot", "ai_agent")
    with pytest.raises(errors.StatementDenied):
        conn.execute("UPDATE t SET a = 1 WHERE a = 2")
    conn.close()
    with pytest.raises(errors.PolicyError):
        Identity.parse("robot:x")


def test_approval_flow(dsn, audit):
    ops = governed_db.connect(dsn, identity=Identity("deploy", "service"), audit=audit,
                              autocommit=True)
    ddl = "CREATE INDEX t_a ON t (a)"
    with pytest.raises(errors.ApprovalRequired) as info:
        ops.execute(ddl)
    store = governed_db._config.approvals()
    with pytest.raises(errors.StatementDenied, match="own request"):
        store.decide(info.value.request_id, Identity("deploy", "human"), approve=True)
    with pytest.raises(errors.StatementDenied, match="ai_agent"):
        store.decide(info.value.request_id, AGENT, approve=True)
    with pytest.raises(errors.ApprovalRequired):  # a changed statement needs its own approval
        ops.execute("CREATE INDEX t_a2 ON t (a)")
    store.decide(info.value.request_id, HUMAN, approve=True)
    ops.execute(ddl)  # runs once
    with pytest.raises(errors.ApprovalRequired):  # single use
        ops.execute(ddl)
    ops.close()


def test_exports_pinned():
    assert governed_db.__all__ == sorted(governed_db.__all__)
    for name in psycopg.__all__:
        assert hasattr(governed_db, name), name
    for name in ("Error", "sql", "rows", "pq", "types", "adapt", "Notify", "Xid"):
        assert getattr(governed_db, name) is getattr(psycopg, name)
    assert issubclass(governed_db.errors.StatementDenied, psycopg.errors.InsufficientPrivilege)
    assert psycopg.errors.lookup("42501") is psycopg.errors.InsufficientPrivilege


def test_psycopg_internals_still_exist():
    """The two choke points rely on private psycopg 3.3 methods: fail loudly if they move."""
    from psycopg._cursor_base import BaseCursor

    for name in ("_convert_query", "_make_row_maker", "_execute_gen", "_stream_send_gen",
                 "_start_copy_gen", "_select_current_result", "_set_results"):
        assert hasattr(BaseCursor, name), name
    from psycopg._copy_base import BaseCopy

    assert hasattr(BaseCopy, "_read_gen")


def test_search_path_pinned_at_connect(dsn, audit):
    policy = parse_policy('[session]\nsearch_path = ["evil", "public"]\n'
                          '[[rules]]\nid = "session.disallow-security-settings"\n')
    with governed_db.connect(dsn, identity=AGENT, policy=policy, audit=audit) as conn:
        assert conn.execute("SHOW search_path").fetchone() == ('"evil", "public"',)
        # evil.users shadows public.users for this session, and the analyzer agrees
        assert conn.execute("SELECT email FROM users").fetchone() == ("****@example.com",)
        with pytest.raises(errors.StatementDenied):
            conn.execute("SET search_path = public")
        conn.rollback()
        assert conn.execute("SHOW search_path").fetchone() == ('"evil", "public"',)
    with pytest.raises(errors.PolicyError, match="search_path"):
        parse_policy('[session]\nsearch_path = []\n')


@pytest.mark.parametrize("durability", ["batched", "strict"])
def test_record_shows_identity_attributes_as_the_statement_ran(dsn, tmp_path, durability):
    """Attack G7: records are written on the writer thread, later; an identity's attributes
    are read-only and copied deep at creation, so nothing changed afterwards (the caller's dict,
    a nested list, the identity's own mapping) reaches an earlier statement's record."""
    src = {"tool_call_id": "call-1", "steps": ["plan", {"tool": "sql"}]}
    ident = Identity("attr-bot", "ai_agent", attributes=src)
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path), settings={"durability": durability})
    conn = governed_db.connect(dsn, identity=ident, audit=log, autocommit=True)
    conn.execute("SELECT 1").fetchall()
    src["tool_call_id"] = "call-2-mutated"
    src["steps"][1]["tool"] = "mutated"
    src["steps"].append("mutated")
    with pytest.raises(TypeError, match="read-only"):
        ident.attributes["tool_call_id"] = "call-3-mutated"  # type: ignore[index]
    with pytest.raises(TypeError, match="read-only"):
        ident.attributes["steps"][1]["tool"] = "mutated"
    conn.execute("SELECT 2").fetchall()
    with acting_as(ident.evolve(attributes={**ident.attributes, "tool_call_id": "call-4"})):
        conn.execute("SELECT 3").fetchall()
    conn.close()
    log.close()
    seen = [r["identity"].get("attributes") for r in map(json.loads, path.read_text().splitlines())
            if r.get("type") == "statement"]
    first = {"tool_call_id": "call-1", "steps": str(("plan", {"tool": "sql"}))}
    assert seen == [first, first, {**first, "tool_call_id": "call-4"}]


@pytest.mark.parametrize("allow_open", [False, True])
def test_cli_refuses_a_chain_nobody_signed(logged, allow_open):
    """Attack G5: a statement record under a new chain id, its hash recomputed and no
    signature, appended to the log. Against the public key nothing attributes it to the
    signer: UNSIGNED, exit 1 — with --allow-open too (that excuses a cut tail only)."""
    import hashlib

    from click.testing import CliRunner

    from governed_db.audit._canonical import canonical_of_line
    from governed_db.cli import main

    path, pub = logged
    key_file = path.parent / "state" / "audit-signing.pub"
    stmt = next(json.loads(line) for line in path.read_text().splitlines()
                if json.loads(line).get("type") == "statement")
    forged = {k: v for k, v in stmt.items() if k not in ("sig", "key_id")}
    forged.update(chain="f" * 32, seq=1, prev="0" * 64)
    forged["identity"] = {**forged["identity"], "id": "somebody-else"}
    line = json.dumps(forged)
    forged["hash"] = hashlib.sha256(canonical_of_line(line)).hexdigest()
    with path.open("a") as fh:
        fh.write(json.dumps(forged) + "\n")
    report = verify(path, pub, allow_open=True)
    assert report.unsigned_chains == {"f" * 32: 1}  # the hash chain itself is intact
    args = ["audit", "verify", str(path), "--public-key", str(key_file)]
    result = CliRunner().invoke(main, args + (["--allow-open"] if allow_open else []))
    assert result.exit_code == 1
    assert "UNSIGNED: chain ffffffff: none of its 1 record(s) is signed" in result.output
    # Without a key the verifier checks hashes only and says so.
    result = CliRunner().invoke(main, ["audit", "verify", str(path), "--allow-open"])
    assert result.exit_code == 0 and "hashes only" in result.output
