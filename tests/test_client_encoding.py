"""client_encoding: only encodings the analyzer reads as the server does (issue 20 item 4,
issue 14's latin9 defect).

Both directions. An encoding in which a multi-byte character can contain an ASCII byte (SJIS,
BIG5, GBK, UHC, GB18030, JOHAB, SHIFT_JIS_2004) is refused at
connect however it was chosen, cannot be switched to by any identity under any policy, and a
function switching to one closes the session; the Shift-JIS bytes ``C2 81 5C`` that hide a
DELETE from a UTF-8 reader are shown to delete on a raw session and to delete nothing through
every governed path (checked from a raw superuser connection). A safe non-UTF-8 encoding
(latin9, WIN1252, EUC_JP, ...) works: non-ASCII statements are analyzed, values come back
masked exactly as on UTF-8, error and notice text keep their characters.
"""

from __future__ import annotations

import psycopg
import pytest

import governed_db
from governed_db import Identity, errors
from governed_db.analysis import analyze
from governed_db.policy import parse_policy

from .conftest import scratch_database

RULE = "session.client-encoding"
VERIFY = "session.verify-server-state"
HUMAN = Identity("alice", "human")
SERVICE = Identity("etl", "service")
AGENT = Identity("recs-bot", "ai_agent")
UNSAFE = ["SJIS", "SHIFT_JIS_2004", "BIG5", "GBK", "UHC", "GB18030", "JOHAB"]
# (SQL_ASCII is governed: tests/test_sql_ascii.py)

# In Shift-JIS, 81 5C is one character; UTF-8 reads C2 81 as one and 5C as a backslash that
# escapes the quote after it. A UTF-8 reader sees one SELECT of a string literal; a Shift-JIS
# server sees the string end there, then DELETE, then a comment hiding the last quote.
TRICK = b"SELECT E'\xc2\x81\\'; DELETE FROM t; -- '"

# Most permissive setups a policy can make: client_encoding allowed by the settings rules,
# and observe mode (nothing a policy rule finds is enforced).
ALLOW_SETTING = """
[[rules]]
id = "session.disallow-security-settings"
allow = ["client_encoding"]
[[rules]]
id = "session.settings-allowlist"
allow = ["client_encoding"]
"""
POLICIES = {"default": None, "allows-client_encoding": ALLOW_SETTING,
            "observe": 'mode = "observe"\n'}


def _policy(name: str):
    text = POLICIES[name]
    return None if text is None else parse_policy(text)


@pytest.fixture(scope="module")
def enc_db(server_dsn: str, template_db: str):
    """One database for the module: the denials below change nothing in it (that is what is
    checked), and the few writes use their own table."""
    with scratch_database(server_dsn, template_db, prefix="gdb_enc") as d:
        with psycopg.connect(d, autocommit=True) as raw:
            raw.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
            raw.execute("CREATE FUNCTION to_sjis() RETURNS int LANGUAGE plpgsql AS $$BEGIN"
                        " EXECUTE 'SET client_encoding = ' || quote_literal('SJIS'); RETURN 1;"
                        " END$$")
            raw.execute("CREATE FUNCTION to_latin1() RETURNS int LANGUAGE plpgsql AS $$BEGIN"
                        " EXECUTE 'SET client_encoding = ' || quote_literal('LATIN1'); RETURN 1;"
                        " END$$")
            raw.execute('CREATE TABLE "tåble€" (a int)')
        yield d


def _t_rows(dsn: str) -> list[tuple[int]]:
    with psycopg.connect(dsn) as raw:
        return raw.execute("SELECT a FROM t ORDER BY a").fetchall()


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


# -- the attack is real -----------------------------------------------------------------------

def test_the_sjis_bytes_hide_a_delete_from_a_utf8_reader(dsn):
    """What the tests below defend against: the analyzer reading UTF-8 sees one SELECT, and a
    raw (ungoverned) Shift-JIS session really deletes."""
    seen = analyze(TRICK, "utf-8")
    assert [s.kind for s in seen.statements] == ["SELECT"] and not seen.statements[0].writes
    for d in [dsn]:
        assert _t_rows(d) == [(1,), (2,)]
        with psycopg.connect(d + " client_encoding=SJIS", autocommit=True) as raw:
            raw.execute(TRICK)
        assert _t_rows(d) == []


# -- refused at connect, however the encoding was chosen ---------------------------------------

WAYS = {
    "conninfo": lambda enc, mp: ({"conninfo": f"client_encoding={enc}"}),
    "keyword": lambda enc, mp: ({"client_encoding": enc}),
    "PGCLIENTENCODING": lambda enc, mp: (mp.setenv("PGCLIENTENCODING", enc), {})[1],
    "options": lambda enc, mp: ({"options": f"-c client_encoding={enc}"}),
}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("way", sorted(WAYS))
@pytest.mark.parametrize("encoding", UNSAFE)
async def test_unsafe_encoding_refused_at_connect(enc_db, monkeypatch, mode, way, encoding):
    kwargs = WAYS[way](encoding, monkeypatch)
    conninfo = enc_db + " " + kwargs.pop("conninfo", "")
    with pytest.raises(errors.InterfaceError) as ei:
        await _connect(mode, conninfo, identity=HUMAN, **kwargs)
    text = str(ei.value)
    assert f"client_encoding {encoding} cannot be governed" in text
    assert "use UTF8" in text  # says what to do


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_unsafe_database_default_refused_at_connect(server_dsn, template_db, mode):
    """ALTER DATABASE ... SET client_encoding: chosen by the server, still verified."""
    with scratch_database(server_dsn, template_db, prefix="gdb_encdb") as d:
        name = d.split("dbname=")[1].split()[0]
        with psycopg.connect(server_dsn, autocommit=True) as raw:
            raw.execute(f"ALTER DATABASE {name} SET client_encoding = 'SJIS'")
        with pytest.raises(errors.InterfaceError, match="client_encoding SJIS cannot be governed"):
            await _connect(mode, d, identity=SERVICE)
        # An explicit safe choice overrides the database default: governed again.
        conn = await _connect(mode, d + " client_encoding=UTF8", identity=SERVICE)
        try:
            assert await _execute(conn, "SELECT count(*) FROM t") == [(2,)]
        finally:
            await _close(conn)


# -- cannot be switched to, by any identity, under any policy ----------------------------------

SWITCHES = {
    "set": ("SET client_encoding TO 'SJIS'", None),
    "set-identifier": ("SET client_encoding TO sjis", None),
    "set-session": ("SET SESSION client_encoding = 'BIG5'", None),
    "set-local": ("SET LOCAL client_encoding = 'GBK'", None),
    "set-names": ("SET NAMES 'UHC'", None),
    "set-names-alias": ("SET NAMES 'win949'", None),  # UHC by another name
    "alias-spelling": ("SET client_encoding = 'Shift-JIS'", None),
    "gb18030": ("SET client_encoding = 'gb18030'", None),
    "johab": ("SET client_encoding = 'JOHAB'", None),
    "shift_jis_2004": ("SET client_encoding = 'SHIFT_JIS_2004'", None),
    "default": ("SET client_encoding TO DEFAULT", None),
    "reset": ("RESET client_encoding", None),
    "set_config": ("SELECT set_config('client_encoding', 'SJIS', false)", None),
    "set_config-local": ("SELECT set_config('client_encoding', 'mskanji', true)", None),
    "set_config-param": ("SELECT set_config('client_encoding', %s, false)", ["SJIS"]),
    "set_config-dynamic-name": ("SELECT set_config(%s, 'SJIS', false)", ["client_encoding"]),
    "set_config-in-cte": ("WITH x AS (SELECT set_config('client_encoding', 'SJIS', false))"
                          " SELECT * FROM x", None),
    "set_config-in-where": ("SELECT 1 WHERE set_config('client_encoding', 'BIG5', false)"
                            " IS NOT NULL", None),
    "prepare": ("PREPARE enc AS SELECT set_config('client_encoding', 'SJIS', false)", None),
    "multi-statement": ("SELECT 1; SET client_encoding = 'SJIS'", None),
    "declare": ("DECLARE c CURSOR WITH HOLD FOR"
                " SELECT set_config('client_encoding', 'SJIS', false)", None),
    "explain-analyze": ("EXPLAIN ANALYZE SELECT set_config('client_encoding', 'SJIS', false)",
                        None),
    "copy-to": ("COPY (SELECT set_config('client_encoding', 'SJIS', false)) TO STDOUT", None),
    "from-clause": ("SELECT * FROM set_config('client_encoding', 'SJIS', false)", None),
    "qualified": ("SELECT pg_catalog.set_config('client_encoding', 'SJIS', false)", None),
    "quoted-function": ("SELECT \"set_config\"('client_encoding', 'SJIS', false)", None),
    "upper-case-name": ("SELECT set_config('CLIENT_ENCODING', 'SJIS', false)", None),
    "computed-value": ("SELECT set_config('client_encoding', 'SJ' || 'IS', false)", None),
    "name-from-a-column": ("SELECT set_config(x, 'SJIS', false)"
                           " FROM (VALUES ('client_encoding')) v(x)", None),
    "quoted-setting": ("SET \"client_encoding\" = 'SJIS'", None),
    "unicode-escape": ("SET client_encoding = U&'\\0053JIS'", None),
    "escape-string": ("SET client_encoding = E'SJ\\x49S'", None),
    "dollar-quoted": ("SET client_encoding = $$SJIS$$", None),
    "two-values": ("SET client_encoding = 'UTF8', 'SJIS'", None),
}


def _denied_then_trick_harmless(conn, dsn: str, query: str, params) -> None:
    with pytest.raises(errors.StatementDenied) as ei:
        conn.execute(query, params)
    assert ei.value.rule_ids[0] == RULE
    assert "do not retry with another spelling" in str(ei.value)
    assert conn.info.parameter_status("client_encoding") == "UTF8"
    # The session is still UTF-8: the bytes are one SELECT to the server too.
    assert conn.execute(TRICK).fetchall() == [("\x81'; DELETE FROM t; -- ",)]
    assert _t_rows(dsn) == [(1,), (2,)]


@pytest.mark.parametrize("shape", sorted(SWITCHES))
def test_switch_to_unsafe_encoding_denied(enc_db, audit, shape):
    """Every shape, under the most permissive policy: client_encoding allowed by the settings
    rules (a human: the agents' read-only profile would stop some shapes for other reasons)."""
    query, params = SWITCHES[shape]
    with governed_db.connect(enc_db, identity=HUMAN, policy=_policy("allows-client_encoding"),
                             audit=audit, autocommit=True) as conn:
        _denied_then_trick_harmless(conn, enc_db, query, params)
    audit.flush()
    denied = [r for r in audit.records if r["type"] == "statement"
              and r["outcome"]["outcome"] == "denied"]
    assert [r["decision"]["rules"][0] for r in denied] == [RULE]
    assert all(r["decision"]["action"] == "deny" and not r["decision"]["observe"] for r in denied)


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("ident", [HUMAN, SERVICE, AGENT], ids=lambda i: i.kind)
@pytest.mark.parametrize("shape", ["set", "set_config", "set-names"])
def test_switch_denied_for_every_identity_and_policy(enc_db, audit, ident, policy, shape):
    query, params = SWITCHES[shape]
    with governed_db.connect(enc_db, identity=ident, policy=_policy(policy), audit=audit,
                             autocommit=True) as conn:
        _denied_then_trick_harmless(conn, enc_db, query, params)


async def test_switch_denied_async(enc_db, audit):
    conn = await governed_db.AsyncConnection.connect(
        enc_db, identity=SERVICE, policy=_policy("observe"), audit=audit, autocommit=True)
    try:
        with pytest.raises(errors.StatementDenied) as ei:
            await conn.execute("SELECT set_config('client_encoding', 'SJIS', false)")
        assert ei.value.rule_ids[0] == RULE
        assert conn.info.parameter_status("client_encoding") == "UTF8"
        cur = await conn.execute(TRICK)
        assert await cur.fetchall() == [("\x81'; DELETE FROM t; -- ",)]
    finally:
        await conn.close()
    assert _t_rows(enc_db) == [(1,), (2,)]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql", [
    "SELECT to_sjis()",
    "UPDATE pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding'",
], ids=["dynamic-plpgsql", "update-pg_settings"])
async def test_function_switching_to_unsafe_encoding_closes_the_session(enc_db, audit, mode,
                                                                        sql):
    """A body the analyzer cannot see (dynamic EXECUTE), or pg_settings written in observe
    mode, switches to SJIS: the server reports it after the statement, and the session is
    closed before the trick can be sent on it."""
    conn = await _connect(mode, enc_db, identity=HUMAN, policy=_policy("observe"), audit=audit,
                          autocommit=True)
    try:
        with pytest.raises(errors.StatementDenied) as ei:
            await _execute(conn, sql)
        assert ei.value.rule_ids == (VERIFY,) and "client_encoding" in str(ei.value)
        assert conn.closed
        with pytest.raises(psycopg.OperationalError):
            await _execute(conn, TRICK)
    finally:
        await _close(conn)
    assert _t_rows(enc_db) == [(1,), (2,)]
    audit.flush()
    assert [(r["reason"], r["parameter"]) for r in audit.records
            if r["type"] == "session_closed"] == [("server-state-changed", "client_encoding")]


# -- a safe encoding works ------------------------------------------------------------------

# (encoding, text in its repertoire with characters beyond ASCII)
SAFE = [("UTF8", "café € カフェ"), ("LATIN1", "café ÿ"), ("LATIN9", "café €"),
        ("WIN1252", "café € „quote“"), ("EUC_JP", "カフェ 日本"), ("KOI8R", "кафе"),
        ("ISO_8859_7", "καφές"), ("WIN1250", "kávé ő")]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("encoding,text", SAFE, ids=[e for e, _ in SAFE])
async def test_safe_encoding_statements_analyzed_and_run(enc_db, audit, mode, encoding, text):
    """Non-ASCII literals in the statement text (not parameters): analyzed in the session's
    encoding, so a human's INSERT runs and an agent's WHERE on the same text finds the row."""
    row_id = 100 + [e for e, _ in SAFE].index(encoding) + (50 if mode == "async" else 0)
    lit = text.replace("'", "''")
    human = await _connect(mode, enc_db + f" client_encoding={encoding}", identity=HUMAN,
                           audit=audit, autocommit=True)
    agent = await _connect(mode, enc_db + f" client_encoding={encoding}", identity=AGENT,
                           audit=audit, autocommit=True)
    try:
        assert human.info.parameter_status("client_encoding") == encoding
        await _execute(human, f"INSERT INTO notes VALUES ({row_id}, '{lit}')")
        assert await _execute(agent, f"SELECT id, body FROM notes WHERE id = {row_id} AND body = '{lit}'") == [
            (row_id, text)]
        assert await _execute(agent, f"SELECT '{lit}' AS echo") == [(text,)]
        # Sensitive columns masked as on UTF-8, next to non-ASCII text.
        assert await _execute(agent, f"SELECT '{lit}', email FROM users ORDER BY id") == [
            (text, "****@example.com"), (text, "****@example.com")]
    finally:
        await _close(human)
        await _close(agent)
    with psycopg.connect(enc_db) as raw:  # stored as the characters sent, not as mojibake
        assert raw.execute("SELECT body FROM notes WHERE id = %s", [row_id]).fetchone() == (text,)


def test_switch_to_safe_encoding_when_the_policy_allows_it(enc_db, audit):
    with governed_db.connect(enc_db, identity=HUMAN, policy=_policy("allows-client_encoding"),
                             audit=audit, autocommit=True) as conn:
        conn.execute("SET client_encoding TO 'latin9'")
        assert conn.info.encoding == "iso8859-15"
        assert conn.execute("SELECT 'café €'").fetchone() == ("café €",)
        conn.execute("SELECT set_config('client_encoding', 'UTF8', false)")
        assert conn.execute("SELECT 'カフェ'").fetchone() == ("カフェ",)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("cursor", ["Cursor", "ClientCursor"])
async def test_switch_to_an_encoding_python_cannot_read_fails_where_psycopg_fails(
        enc_db, audit, mode, cursor):
    """EUC_TW is safe to lex but Python has no codec for it: the SET itself succeeds (as with
    psycopg) and the next statement raises psycopg's NotSupportedError before anything is
    sent (psycopg's test_set_encoding_unsupported)."""
    policy = _policy("allows-client_encoding")
    if mode == "sync":
        with governed_db.connect(enc_db, identity=HUMAN, policy=policy, audit=audit,
                                 autocommit=True) as conn:
            cur = conn.cursor() if cursor == "Cursor" else governed_db.ClientCursor(conn)
            cur.execute("SET client_encoding TO EUC_TW")
            with pytest.raises(psycopg.NotSupportedError, match="codec not available"):
                cur.execute("SELECT 'x'")
    else:
        aconn = await governed_db.AsyncConnection.connect(enc_db, identity=HUMAN, policy=policy,
                                                          audit=audit, autocommit=True)
        try:
            acur = aconn.cursor() if cursor == "Cursor" else governed_db.AsyncClientCursor(aconn)
            await acur.execute("SET client_encoding TO EUC_TW")
            with pytest.raises(psycopg.NotSupportedError, match="codec not available"):
                await acur.execute("SELECT 'x'")
        finally:
            await aconn.close()


def test_switch_to_safe_encoding_denied_by_default_policy(enc_db, audit):
    """Changing it stays a protected setting (policy's choice); only unsafe ones are beyond
    every policy."""
    with governed_db.connect(enc_db, identity=HUMAN, audit=audit, autocommit=True) as conn:
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute("SET client_encoding TO 'latin9'")
        assert ei.value.rule_ids == ("session.disallow-security-settings",)


def test_function_switching_to_safe_encoding_keeps_the_session(enc_db, audit):
    """Verified by effect: LATIN1 is on the allow-list, so the session stays open and the next
    statements are read in LATIN1."""
    with governed_db.connect(enc_db, identity=HUMAN, policy=_policy("observe"), audit=audit,
                             autocommit=True) as conn:
        conn.execute("SELECT to_latin1()")
        assert not conn.closed and conn.info.parameter_status("client_encoding") == "LATIN1"
        assert conn.execute("SELECT 'ÿé'").fetchone() == ("ÿé",)


@pytest.mark.parametrize("encoding", ["LATIN9", "UTF8"])
def test_values_masked_the_same_in_latin9(enc_db, audit, encoding):
    """Masking by provenance and by value detection gives what it gives on UTF-8, with
    non-ASCII values; with a non-UTF-8 client the rows are masked client-side (server masking
    rewrites UTF-8 text only)."""
    want = [(1001, "****@example.com", "****", "café €"),
            (1002, "****@example.com", "****", "café €")]
    with governed_db.connect(enc_db + f" client_encoding={encoding}", identity=AGENT,
                             audit=audit) as conn:
        q = ("SELECT id, email, 'zoé.' || email AS derived, 'café €' AS plain FROM users"
             " ORDER BY id")
        for _ in range(2):  # the second run: a server-masked shape, where one applies
            cur = conn.execute(q)
            assert cur.fetchall() == want
        if encoding != "UTF8":
            assert cur._gov_ctx.server_mask is None


@pytest.mark.parametrize("encoding", ["LATIN9", "UTF8"])
def test_error_text_keeps_its_characters(enc_db, audit, encoding):
    """The caller's own non-ASCII literal may come back in the error (it was analyzed in the
    session's encoding, so it is recognised as the caller's text)."""
    with governed_db.connect(enc_db + f" client_encoding={encoding}", identity=HUMAN,
                             audit=audit, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as ei:
            conn.execute("SELECT 'é€'::int")
        assert ei.value.diag.message_primary == 'invalid input syntax for type integer: "é€"'
    with psycopg.connect(enc_db + f" client_encoding={encoding}", autocommit=True) as raw:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as expected:
            raw.execute("SELECT 'é€'::int")
    # with libpq's LINE excerpt of the caller's own statement, as psycopg's
    assert str(ei.value) == str(expected.value)


@pytest.mark.parametrize("encoding", ["LATIN9", "UTF8"])
def test_notice_text_keeps_its_characters(enc_db, audit, encoding):
    notices: list[str] = []
    with governed_db.connect(enc_db + f" client_encoding={encoding}", identity=SERVICE,
                             policy=_policy("observe"), audit=audit, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute('CREATE TABLE IF NOT EXISTS "tåble€" (a int)')
    assert notices == ['relation "tåble€" already exists, skipping']


@pytest.mark.parametrize("encoding", ["LATIN9", "UTF8"])
def test_copy_to_and_raw_values_masked_in_the_session_encoding(enc_db, audit, encoding):
    """COPY TO STDOUT data and ``cursor.pgresult.get_value()`` are bytes in the session's
    encoding: masked and re-encoded in it (not as UTF-8 inside a latin9 stream)."""
    codec = {"LATIN9": "iso8859-15", "UTF8": "utf-8"}[encoding]
    q = "SELECT id, 'café €' AS plain, email FROM users ORDER BY id"
    with governed_db.connect(enc_db + f" client_encoding={encoding}", identity=HUMAN,
                             audit=audit, autocommit=True) as conn:
        cur = conn.cursor()
        with cur.copy(f"COPY ({q}) TO STDOUT") as copy:
            data = b"".join(bytes(b) for b in copy)
        assert data.decode(codec).splitlines() == [
            "1001\tcafé €\t****@example.com", "1002\tcafé €\t****@example.com"]
        res = conn.execute(q).pgresult
        assert [(res.get_value(i, 1), res.get_value(i, 2)) for i in range(2)] == [
            ("café €".encode(codec), b"****@example.com")] * 2


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_function_switching_encoding_cannot_run_in_a_pipeline(enc_db, audit, mode):
    """In pipeline mode a body that may switch the encoding is read back behind (the
    pipeline flushed: the server's ParameterStatus arrives with the read-back's result)
    before execute() returns: the switch closes the session before the next statement can
    be queued (observe mode, where it runs). Enforced, the default profile refuses the call
    first (its writes cannot be bounded in a pipeline)."""
    policy = parse_policy(f'version = 1\nmode = "{mode}"\n')
    conn = governed_db.connect(enc_db, identity=HUMAN, audit=audit, autocommit=True,
                               policy=policy)
    sent = []
    try:
        with pytest.raises(errors.StatementDenied) as ei, conn.pipeline():
            conn.execute("SELECT to_sjis()")
            sent.append(conn.execute(TRICK))
        closed = conn.closed
    finally:
        conn.close()
    if mode == "observe":
        assert ei.value.rule_ids == (VERIFY,)
        assert "client_encoding" in str(ei.value)
        assert closed
    else:
        assert ei.value.rule_ids == ("statement.affected-row-limit",)
    assert sent == []
    assert _t_rows(enc_db) == [(1,), (2,)]


@pytest.mark.parametrize("encoding", ["LATIN9", "UTF8"])
def test_audit_names_non_ascii_columns_exactly(enc_db, audit, encoding):
    """Result column names arrive in the session's encoding: the audit record names the
    masked column as the caller wrote it (was ``courri\ufffdl`` on latin9)."""
    with governed_db.connect(enc_db + f" client_encoding={encoding}", identity=AGENT,
                             audit=audit) as conn:
        assert conn.execute('SELECT email AS "courriél" FROM users ORDER BY id').fetchall() == [
            ("****@example.com",), ("****@example.com",)]
    audit.flush()
    rec = [r for r in audit.records if r["type"] == "statement"][-1]
    assert list(rec["masked"]) == ["courriél"]
