"""standard_conforming_strings off: governed, without a parser differential (issue 14).

With the setting off the server reads a plain ``'...'`` string as an escape string, where
``\\'`` does not end it; libpg_query always lexes with it on. ``SELECT 'x\\', ' ; DELETE FROM
t; -- '`` is one SELECT of two constants to the analyzer and a SELECT plus a DELETE to such a
server. The rule: with the setting off (as the server reports it, however the session came to
it), a text runs only if its lexing cannot differ — no backslash inside a plain string
(``E'...'`` strings, comments, identifiers and dollar quotes lex the same either way); the
others are refused with ``session.standard-conforming-strings`` under every policy, observe
mode included. Every other check still applies. Effects are checked from a raw superuser
connection.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

import governed_db
from governed_db import Identity, errors
from governed_db.analysis import analyze
from governed_db.analysis._normalize import lexing_depends_on_scs
from governed_db.policy import parse_policy

RULE = "session.standard-conforming-strings"
HUMAN = Identity("alice", "human")
AGENT = Identity("recs-bot", "ai_agent")
OBSERVE = 'mode = "observe"\n'
# Enforcing, with SET standard_conforming_strings allowed (it is a protected setting).
ALLOW_SCS = """
[[rules]]
id = "session.disallow-security-settings"
allow = ["standard_conforming_strings"]
[[rules]]
id = "session.settings-allowlist"
allow = ["standard_conforming_strings"]
"""

# Each: one harmless-looking statement to a reader with the setting on; with it off, the
# first string swallows ``', '`` and what follows runs.
ATTACKS = {
    "hidden-delete": "SELECT 'x\\', ' ; DELETE FROM t; -- '",
    "hidden-cte-delete": ("SELECT 'x\\', ' ; WITH d AS (DELETE FROM t RETURNING a)"
                          " SELECT count(*) FROM d; -- '"),
    "hidden-masked-read": "SELECT 'x\\', ' || (SELECT email FROM users ORDER BY id LIMIT 1) -- '",
    "hidden-setting": "SELECT 'x\\', ' ; SET default_transaction_read_only = off; DELETE FROM t; -- '",
    "national-string": "SELECT N'x\\', ' ; DELETE FROM t; -- '",
    "after-e-string": "SELECT E'ok\\\\', 'x\\', ' ; DELETE FROM t; -- '",
}

# attack5 F2: a DO body is lexed by the server when it runs, under the session's setting: with
# it off, the string ends after the escaped quote and the DELETE the analyzer read as a comment
# runs (or a masked value is read into an error).
DO_ATTACKS = {
    "do-hidden-delete": "DO $do$BEGIN PERFORM 'x\\' -- '; DELETE FROM t --'\n; END$do$",
    "do-hidden-read": ("DO $do$BEGIN PERFORM 'x\\' -- ', (SELECT email::int FROM users"
                       " ORDER BY id LIMIT 1)\n; END$do$"),
    "nested-do": ("DO $do$BEGIN EXECUTE $x$DO $y$BEGIN PERFORM 'x\\' -- '; DELETE FROM t --'\n;"
                  " END$y$$x$; END$do$"),
}

# How the session comes to have the setting off.
WAYS = ["options", "allowed-set", "function"]


def _raw_state(dsn: str) -> tuple:
    with psycopg.connect(dsn) as raw:
        return (raw.execute("SELECT a FROM t ORDER BY a").fetchall(),
                raw.execute("SELECT id, email FROM users ORDER BY id").fetchall())


async def _connect(mode: str, conninfo: str, **kwargs):
    if mode == "sync":
        return governed_db.connect(conninfo, **kwargs)
    return await governed_db.AsyncConnection.connect(conninfo, **kwargs)


async def _execute(conn, query, params=None):
    if isinstance(conn, governed_db.AsyncConnection):
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.pgresult is not None and cur.pgresult.ntuples else []
    cur = conn.execute(query, params)
    return cur.fetchall() if cur.pgresult is not None and cur.pgresult.ntuples else []


async def _close(conn):
    if isinstance(conn, governed_db.AsyncConnection):
        await conn.close()
    else:
        conn.close()


async def _scs_off_session(mode: str, dsn: str, way: str, audit, policy=None):
    """A governed session whose server has standard_conforming_strings off, reached ``way``."""
    if way == "options":
        conn = await _connect(mode, dsn + " options='-c standard_conforming_strings=off'",
                              identity=HUMAN, audit=audit, autocommit=True, policy=policy)
    elif way == "allowed-set":
        # SET of it is a protected setting: denied unless the policy allows it.
        conn = await _connect(mode, dsn, identity=HUMAN, audit=audit, autocommit=True,
                              policy=parse_policy(ALLOW_SCS))
        await _execute(conn, "SET standard_conforming_strings = off")
    else:
        # Behind the analyzer's back: a function changes it; the server reports it back.
        with psycopg.connect(dsn, autocommit=True) as raw:
            raw.execute("CREATE OR REPLACE FUNCTION scs_off() RETURNS int LANGUAGE plpgsql AS"
                        " $$BEGIN PERFORM set_config('standard_conforming_strings', 'off',"
                        " false); RETURN 1; END$$")
        conn = await _connect(mode, dsn, identity=HUMAN, audit=audit, autocommit=True,
                              policy=policy or parse_policy(ALLOW_SCS))
        await _execute(conn, "SELECT scs_off()")
    assert conn.info.parameter_status("standard_conforming_strings") == "off"
    return conn


def test_the_attacks_are_real(dsn):
    """What the tests below defend against: the analyzer sees constants only, and a raw
    session with the setting off really runs what the strings hide."""
    for name, text in ATTACKS.items():
        seen = analyze(text)
        assert [s.kind for s in seen.statements] == ["SELECT"], name
        assert not seen.statements[0].writes and not seen.statements[0].reads, name
        assert lexing_depends_on_scs(text), name
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("SET standard_conforming_strings = off")
        raw.execute(ATTACKS["hidden-delete"])
        assert raw.execute("SELECT count(*) FROM t").fetchone() == (0,)
        got = raw.execute(ATTACKS["hidden-masked-read"]).fetchone()
        assert got == ("x', qem.alice@example.com",)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("attack", sorted(ATTACKS) + sorted(DO_ATTACKS))
async def test_text_that_lexes_differently_is_refused(dsn, audit, mode, way, attack):
    before = _raw_state(dsn)
    policy = parse_policy(OBSERVE) if way != "allowed-set" else None
    conn = await _scs_off_session(mode, dsn, way, audit, policy=policy)
    try:
        with pytest.raises(errors.StatementDenied) as ei:
            await _execute(conn, {**ATTACKS, **DO_ATTACKS}[attack])
        assert ei.value.rule_ids == (RULE,)
        assert "E'...'" in str(ei.value) and "qem." not in str(ei.value)
        assert not conn.closed  # refused, the session stays usable
        assert await _execute(conn, "SELECT 'still here'") == [("still here",)]
    finally:
        await _close(conn)
    assert _raw_state(dsn) == before
    audit.flush()
    denied = [r for r in audit.records if r["type"] == "statement"
              and r["outcome"]["outcome"] == "denied"]
    assert [r["outcome"]["rules"] for r in denied] == [[RULE]]
    assert all("qem." not in str(r) and "DELETE FROM t" not in str(r) for r in audit.records)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("way", WAYS)
async def test_text_that_lexes_the_same_runs_and_is_governed(dsn, audit, mode, way):
    """E'' strings, backslash-free plain strings, comments, identifiers and dollar quotes
    run; masking and the other rules still apply."""
    conn = await _scs_off_session(mode, dsn, way, audit)
    try:
        assert await _execute(conn, "SELECT E'a\\\\b', 'plain', $$c\\d$$ /* \\ */") == [
            ("a\\b", "plain", "c\\d")]
        quoted = sql.quote("it's a \\ backslash")  # psycopg writes E'' when it is off
        assert await _execute(conn, f"SELECT {quoted}") == [("it's a \\ backslash",)]
        assert await _execute(conn, "SELECT %s::text", ["x\\'y"]) == [("x\\'y",)]
        assert await _execute(conn, "SELECT email FROM users WHERE id = 1001") == [
            ("****@example.com",)]
        with pytest.raises(errors.StatementDenied) as ei:
            await _execute(conn, "DELETE FROM t")
        assert ei.value.rule_ids == ("statement.where.require.update-delete",)
    finally:
        await _close(conn)
    assert _raw_state(dsn)[0] == [(1,), (2,)]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_back_on_lifts_the_rule(dsn, audit, mode):
    """The rule follows what the server reports: once the setting is on again, the same
    text (harmless then) runs; turned off again, it is refused again."""
    policy = parse_policy(ALLOW_SCS)
    conn = await _scs_off_session(mode, dsn, "options", audit, policy=policy)
    text = "SELECT 'x\\', ' ; DELETE FROM t; -- '"
    try:
        with pytest.raises(errors.StatementDenied):
            await _execute(conn, text)
        await _execute(conn, "SET standard_conforming_strings = on")
        assert await _execute(conn, text) == [("x\\", " ; DELETE FROM t; -- ")]
        await _execute(conn, "SET standard_conforming_strings = off")
        with pytest.raises(errors.StatementDenied) as ei:
            await _execute(conn, text)
        assert ei.value.rule_ids == (RULE,)
    finally:
        await _close(conn)
    assert _raw_state(dsn)[0] == [(1,), (2,)]


def test_pipeline_set_off_then_attack_refused(dsn, audit):
    """In a pipeline the server reports the setting only at a sync: after a statement that
    may change it, texts whose lexing depends on it are refused until it is known again."""
    conn = governed_db.connect(dsn, identity=HUMAN, audit=audit, autocommit=True,
                               policy=parse_policy(OBSERVE))
    try:
        with pytest.raises(errors.StatementDenied) as ei:
            with conn.pipeline():
                conn.execute("SET standard_conforming_strings = off")
                conn.execute(ATTACKS["hidden-delete"])
        assert ei.value.rule_ids == (RULE,)
    finally:
        conn.close()
    assert _raw_state(dsn)[0] == [(1,), (2,)]


def test_governance_sync_literals_survive_scs_off(dsn, audit):
    """governed_db's own statements (identity push, settings) carry caller-chosen text: they
    are written so the server reads them the same either way."""
    ident = Identity("x\\', '); DELETE FROM t; --", "human", purpose="p\\'q")
    conn = governed_db.connect(dsn + " options='-c standard_conforming_strings=off'",
                               identity=ident, audit=audit, autocommit=True)
    try:
        assert conn.execute("SELECT 1").fetchall() == [(1,)]
        name = conn.execute("SHOW application_name").fetchone()[0]
        assert "x\\'" in name
    finally:
        conn.close()
    assert _raw_state(dsn)[0] == [(1,), (2,)]


HIDDEN_BODIES = {
    "sql": ("LANGUAGE sql SET standard_conforming_strings = off AS"
            " $f$SELECT '\\' AS a -- '; DELETE FROM t WHERE a = 1; SELECT 'b'::text AS b --\n$f$"),
    "plpgsql": ("LANGUAGE plpgsql SET standard_conforming_strings = off AS"
                " $f$BEGIN PERFORM '\\' AS a -- '; DELETE FROM t WHERE a = 1; PERFORM 1 --\n; RETURN 'b'; END$f$"),
}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("lang", list(HIDDEN_BODIES))
async def test_function_lexed_with_scs_off_is_not_trusted_by_its_body(dsn, audit, lang, mode):
    """attack3 A8: `CREATE FUNCTION ... SET standard_conforming_strings = off`: the server lexes
    the body with it off (a DELETE hides behind '\\' ... --), the analysis with it on. Such a
    body's effect is unknown: under a rule that needs approval for DELETE the call needs it too
    (a human, policy with statement.require-approval), and nothing is deleted."""
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("SET check_function_bodies = off")
        raw.execute(f"CREATE FUNCTION f_hidden() RETURNS text {HIDDEN_BODIES[lang]}")
    before = _raw_state(dsn)
    policy = parse_policy('version = 1\n[[rules]]\nid = "statement.require-approval"\n'
                          'kinds = ["DELETE"]\n')
    conn = await _connect(mode, dsn, identity=HUMAN, policy=policy, audit=audit,
                          autocommit=True)
    try:
        with pytest.raises((errors.StatementDenied, errors.ApprovalRequired)) as ei:
            await _execute(conn, "SELECT f_hidden()")
        assert ei.value.rule_ids == ("statement.require-approval",)
        assert "standard_conforming_strings off" in str(ei.value)
    finally:
        if mode == "sync":
            conn.close()
        else:
            await conn.close()
    assert _raw_state(dsn) == before  # nothing deleted


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("lang", list(HIDDEN_BODIES))
async def test_session_scs_off_distrusts_bodies_that_lex_on_it(dsn, audit, lang, mode):
    """attack4 F2: a function with no SET clause is lexed by the server with the session's
    standard_conforming_strings. With it off (here from the conninfo), calling a body whose
    lexing depends on it is refused like such a text: a DELETE hides in it otherwise."""
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("SET check_function_bodies = off")
        body = HIDDEN_BODIES[lang].replace(" SET standard_conforming_strings = off", "")
        raw.execute(f"CREATE FUNCTION f_hidden() RETURNS text {body}")
        raw.execute("CREATE FUNCTION f_plain() RETURNS int LANGUAGE sql AS $f$SELECT 1$f$")
    before = _raw_state(dsn)
    conn = await _connect(mode, dsn + " options='-c standard_conforming_strings=off'",
                          identity=HUMAN, audit=audit, autocommit=True)
    try:
        with pytest.raises(errors.StatementDenied) as ei:
            await _execute(conn, "SELECT f_hidden()")
        assert ei.value.rule_ids == (RULE,)
        assert "function body" in str(ei.value)
        # A body that lexes alike still runs (its result masked: a user function's output
        # has no known lineage).
        assert len(await _execute(conn, "SELECT f_plain()")) == 1
    finally:
        await _close(conn)
    assert _raw_state(dsn) == before


def test_the_do_attacks_are_real(dsn):
    for name, text in DO_ATTACKS.items():
        assert lexing_depends_on_scs(text), name
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("SET standard_conforming_strings = off")
        raw.execute(DO_ATTACKS["do-hidden-delete"])
        assert raw.execute("SELECT count(*) FROM t").fetchone() == (0,)
