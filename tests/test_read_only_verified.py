"""Read-only is verified, not assumed (issue 12 item 3).

Two lines: the connection's own setters cannot switch a read-only identity's session out of
READ ONLY, and after every operation what the server reports (GUC_REPORT parameters, and the
transaction mode after BEGIN/SET) must still match what the identity requires; otherwise the
session is closed. The second line is tested with the analyzer bypassed on purpose: a policy
without the rules that would have denied the statement, and function bodies the analyzer
cannot see into. Effects are asserted from a raw superuser connection.
"""

from __future__ import annotations

import psycopg
import pytest

import governed_db
from governed_db import Identity, errors
from governed_db.policy import PolicyWarning, default_policy, parse_policy

AGENT = Identity("recs-bot", "ai_agent")
HUMAN = Identity("alice", "human")
VERIFY = "session.verify-server-state"

# Only the statement allow-list (extends = "none"): no function.deny, no
# session.disallow-security-settings, no statement.opaque, no function or SET allow-lists — so
# the server-state check is the only line left.
with pytest.warns(PolicyWarning, match='extends = "none"'):
    BYPASS = parse_policy("""
extends = "none"

[[rules]]
id = "statement.allowlist"
identity_kinds = ["ai_agent"]
allow = ["SELECT", "SHOW", "SET", "UPDATE", "BEGIN", "COMMIT", "ROLLBACK"]
""")

FUNCTIONS = """
CREATE FUNCTION rw_sql() RETURNS text LANGUAGE sql AS
  $$SELECT set_config('default_transaction_read_only', 'off', false)$$;
CREATE FUNCTION rw_dynamic() RETURNS int LANGUAGE plpgsql AS
  $$BEGIN EXECUTE 'SELECT set_config(''default_transaction_read_only'', ''off'', false)';
  RETURN 1; END$$;
CREATE FUNCTION rw_definer() RETURNS int LANGUAGE plpgsql SECURITY DEFINER AS
  $$BEGIN PERFORM set_config('default_transaction_read_only', 'off', false); RETURN 1; END$$;
CREATE FUNCTION sneaky_encoding() RETURNS int LANGUAGE plpgsql AS
  $$BEGIN EXECUTE 'SET client_encoding = ' || quote_literal('SJIS'); RETURN 1; END$$;
"""


@pytest.fixture
def ro_db(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(FUNCTIONS)
    return dsn


def _state(dsn: str) -> tuple:
    with psycopg.connect(dsn) as c:
        return (c.execute("SELECT a FROM t ORDER BY a").fetchall(),
                c.execute("SELECT id, name FROM users ORDER BY id").fetchall())


def _closed_records(audit) -> list[dict]:
    audit.flush()
    return [r for r in audit.records if r["type"] == "session_closed"]


# (statement, autocommit, identity, parameter the server reports changed)
TAMPER = {
    "set_config": ("SELECT set_config('default_transaction_read_only', 'off', false)", True,
                   AGENT, "default_transaction_read_only"),
    "set_config-in-tx": ("SELECT set_config('default_transaction_read_only', 'off', false)",
                         False, AGENT, "default_transaction_read_only"),
    "update-pg_settings": ("UPDATE pg_settings SET setting = 'off'"
                           " WHERE name = 'default_transaction_read_only'", True, AGENT,
                           "default_transaction_read_only"),
    "session-characteristics": ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", True,
                                AGENT, "default_transaction_read_only"),
    "set-default": ("SET default_transaction_read_only = off", False, AGENT,
                    "default_transaction_read_only"),
    "sql-function": ("SELECT rw_sql()", True, AGENT, "default_transaction_read_only"),
    "dynamic-plpgsql": ("SELECT rw_dynamic()", True, AGENT, "default_transaction_read_only"),
    "security-definer": ("SELECT rw_definer()", False, AGENT, "default_transaction_read_only"),
    "begin-read-write": ("BEGIN READ WRITE", True, AGENT, "transaction_read_only"),
    "start-transaction": ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE", True,
                          AGENT, "transaction_read_only"),
    "set-transaction": ("SET TRANSACTION READ WRITE", False, AGENT, "transaction_read_only"),
    "set-local": ("SET LOCAL transaction_read_only = off", False, AGENT,
                  "transaction_read_only"),
    # standard_conforming_strings off is governed, not closed: test_standard_conforming_strings
    "client-encoding": ("SELECT sneaky_encoding()", True, HUMAN, "client_encoding"),
    "session-authorization": ("SET SESSION AUTHORIZATION app_ro", True, HUMAN,
                              "session_authorization"),
}


@pytest.mark.parametrize("shape", sorted(TAMPER))
def test_tampered_server_state_closes_the_session(ro_db, audit, shape):
    sql, autocommit, ident, param = TAMPER[shape]
    before = _state(ro_db)
    conn = governed_db.connect(ro_db, identity=ident, policy=BYPASS, audit=audit,
                               autocommit=autocommit)
    try:
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute(sql)
        assert ei.value.rule_ids == (VERIFY,)
        assert param in str(ei.value) and "no longer usable" in str(ei.value)
        assert conn.closed
        with pytest.raises(psycopg.OperationalError):
            conn.execute("UPDATE t SET a = 99")  # nothing runs on that session any more
    finally:
        conn.close()
    assert _state(ro_db) == before
    recs = _closed_records(audit)
    assert [(r["reason"], r["parameter"], r["identity"]["kind"]) for r in recs] == [
        ("server-state-changed", param, ident.kind)]


@pytest.mark.parametrize("shape", ["set_config", "set-transaction", "dynamic-plpgsql"])
async def test_tampered_server_state_closes_the_session_async(ro_db, audit, shape):
    sql, autocommit, ident, param = TAMPER[shape]
    before = _state(ro_db)
    conn = await governed_db.AsyncConnection.connect(ro_db, identity=ident, policy=BYPASS,
                                                     audit=audit, autocommit=autocommit)
    try:
        with pytest.raises(errors.StatementDenied) as ei:
            await conn.execute(sql)
        assert ei.value.rule_ids == (VERIFY,)
        assert conn.closed
    finally:
        await conn.close()
    assert _state(ro_db) == before
    assert [r["parameter"] for r in _closed_records(audit)] == [param]


@pytest.mark.parametrize("sql,rule", [
    ("SELECT rw_sql()", "function.allowlist"),  # user functions: not on the agent's list
    ("SELECT rw_definer()", "function.allowlist"),
    ("SELECT rw_dynamic()", "statement.opaque"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
     "session.disallow-security-settings"),
    ("BEGIN READ WRITE", "session.disallow-security-settings"),
])
def test_default_profile_denies_before_it_runs(ro_db, audit, sql, rule):
    """Where the analyzer can see it (function bodies included), it denies first."""
    with governed_db.connect(ro_db, identity=AGENT, policy=default_policy(), audit=audit,
                             autocommit=True) as conn:
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute(sql)
        assert rule in ei.value.rule_ids
        assert not conn.closed
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)


def test_multi_statement_transaction_control_refused_for_read_only(ro_db, audit):
    """Between the statements of one string nothing can be verified: refused as a whole."""
    before = _state(ro_db)
    with governed_db.connect(ro_db, identity=AGENT, policy=BYPASS, audit=audit,
                             autocommit=True) as conn:
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; COMMIT;"
                         " UPDATE t SET a = 99")
        assert ei.value.rule_ids == (VERIFY,)
    assert _state(ro_db) == before


@pytest.mark.parametrize("how", ["property", "method"])
def test_read_only_setter_refused_for_read_only_identity(ro_db, audit, how):
    conn = governed_db.connect(ro_db, identity=AGENT, policy=default_policy(), audit=audit)
    with conn:
        with pytest.raises(errors.StatementDenied) as ei:
            if how == "property":
                conn.read_only = False
            else:
                conn.set_read_only(False)
        assert ei.value.rule_ids == ("session.read-only",)
        assert conn.read_only is None
        conn.read_only = True  # asking for more read-only is fine
        conn.read_only = None
        # autocommit, isolation and deferrable change how transactions start, not READ ONLY.
        conn.autocommit = True
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("on",)
        conn.autocommit = False
        conn.isolation_level = governed_db.IsolationLevel.SERIALIZABLE
        conn.deferrable = True
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("on",)
        conn.rollback()


async def test_async_setters_refused_for_read_only_identity(ro_db, audit):
    conn = await governed_db.AsyncConnection.connect(ro_db, identity=AGENT,
                                                     policy=default_policy(), audit=audit)
    async with conn:
        with pytest.raises(errors.StatementDenied) as ei:
            await conn.set_read_only(False)
        assert ei.value.rule_ids == ("session.read-only",)
        await conn.set_autocommit(True)
        await conn.set_isolation_level(governed_db.IsolationLevel.REPEATABLE_READ)
        await conn.set_deferrable(False)
        cur = await conn.execute("SHOW transaction_read_only")
        assert await cur.fetchone() == ("on",)


def test_read_write_setting_of_another_identity_does_not_carry_over(ro_db, audit):
    """read_only=False set while a human acted cannot start an agent's transaction."""
    before = _state(ro_db)
    conn = governed_db.connect(ro_db, identity=HUMAN, policy=default_policy(), audit=audit)
    with conn:
        conn.read_only = False  # fine for a human
        conn.execute("SELECT 1")
        conn.commit()
        with governed_db.acting_as(AGENT):
            with pytest.raises(errors.StatementDenied) as ei:
                conn.execute("UPDATE t SET a = 99 WHERE a = 1")
            assert ei.value.rule_ids == ("session.read-only",)
    assert _state(ro_db) == before


def test_transaction_mode_changes_refused_in_pipeline(ro_db, audit):
    """Between pipelined statements the transaction mode cannot be read back."""
    before = _state(ro_db)
    with governed_db.connect(ro_db, identity=AGENT, policy=BYPASS, audit=audit) as conn:
        with pytest.raises(errors.StatementDenied) as ei, conn.pipeline():
            conn.execute("SET TRANSACTION READ WRITE")
            conn.execute("UPDATE t SET a = 99")
        assert ei.value.rule_ids == (VERIFY,)
    assert _state(ro_db) == before
