"""client_encoding SQL_ASCII: governed instead of refused (issue 14).

Under SQL_ASCII the server converts nothing and psycopg returns text values as ``bytes``.
Statements are read in the server encoding (as the server lexes them); a masked column and a
detector-matched value come back masked, as ``bytes`` like the caller would get them, through
every fetch path (rows, row factories, iteration, server cursors, ``pgresult.get_value()``,
COPY, the server-side rewrite on a statement's second run), sync and async; raw superuser
checks show the stored values untouched and the attack texts harmless.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg.rows import dict_row

import governed_db
from governed_db import Identity, errors
from governed_db.policy import parse_policy

HUMAN = Identity("alice", "human")
AGENT = Identity("recs-bot", "ai_agent")
ASCII = " client_encoding=SQL_ASCII"
EMAIL = b"qem.alice@example.com"
# Free text is scanned for the kinds [masking] detect_in_text names (ai_agent by default).
SCAN = parse_policy('[masking]\ndetect_in_text = ["human", "ai_agent"]\n')
NOTE = b"ping qdt.bob@example.org now"  # free text with an e-mail in it (orders.note)


@pytest.fixture
def ascii_db(dsn):
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("UPDATE orders SET note = %s WHERE id = 1", [NOTE.decode()])
        raw.execute("UPDATE orders SET note = 'qnt caf\u00e9 rush' WHERE id = 2")
        raw.execute("INSERT INTO users VALUES (7, 'qz.caf\u00e9@example.com', 'x', 'Ren\u00e9', 1)")
    return dsn


def _raw(dsn: str) -> tuple:
    with psycopg.connect(dsn) as raw:
        return (raw.execute("SELECT id, email FROM users ORDER BY id").fetchall(),
                raw.execute("SELECT note FROM orders ORDER BY id").fetchall(),
                raw.execute("SELECT a FROM t ORDER BY a").fetchall())


# Each path: (sql, how to read) -> the rows as the caller gets them.
def _fetchall(conn, q):
    return conn.execute(q).fetchall()


def _fetchone(conn, q):
    return [conn.execute(q).fetchone()]


def _iterate(conn, q):
    return list(conn.execute(q))


def _dict(conn, q):
    return [tuple(r.values()) for r in conn.cursor(row_factory=dict_row).execute(q)]


def _server_cursor(conn, q):
    with conn.transaction(), conn.cursor(name="c1") as cur:
        cur.execute(q)
        return cur.fetchall()


def _get_value(conn, q):
    cur = conn.execute(q)
    res = cur.pgresult
    return [tuple(res.get_value(0, i) for i in range(res.nfields))]


def _second_run(conn, q):
    conn.execute(q).fetchall()  # learns the server-side rewrite
    return conn.execute(q).fetchall()


def _stream(conn, q):
    return list(conn.cursor().stream(q))


def _copy_rows(conn, q):
    with conn.cursor().copy(f"COPY ({q}) TO STDOUT") as cp:
        return [tuple(r) for r in cp.rows()]


def _copy_read(conn, q):
    with conn.cursor().copy(f"COPY ({q}) TO STDOUT") as cp:
        data = b"".join(bytes(b) for b in cp)
    return [tuple(f.encode() if isinstance(f, str) else f for f in line.split(b"\t"))
            for line in data.splitlines()]


PATHS = {f.__name__.lstrip("_"): f for f in (
    _fetchall, _fetchone, _iterate, _dict, _server_cursor, _get_value, _second_run, _stream,
    _copy_rows, _copy_read)}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_masked_column_and_detected_value_come_back_masked_as_bytes(ascii_db, audit, path):
    before = _raw(ascii_db)
    with governed_db.connect(ascii_db + ASCII, identity=HUMAN, audit=audit, policy=SCAN,
                             autocommit=True) as conn:
        assert conn.info.encoding == "ascii"
        rows = PATHS[path](conn, "SELECT email, name FROM users WHERE id = 1001")
        assert rows == [(b"****@example.com", b"****")]  # name: a PII column name too
        rows = PATHS[path](conn, "SELECT note FROM orders WHERE id = 1")
        assert rows == [(b"ping [email redacted] now",)]
        # non-ASCII server bytes stay exact where nothing is masked
        rows = PATHS[path](conn, "SELECT note, id FROM orders WHERE id = 2")
        assert rows == [("qnt caf\u00e9 rush".encode(), b"2" if path in ("copy_read", "copy_rows", "get_value") else 2)]
    assert _raw(ascii_db) == before
    audit.flush()
    assert all(b"qem.alice" not in repr(r).encode() and "qdt.bob" not in repr(r)
               for r in audit.records)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_async_and_sync_agree(ascii_db, audit, mode):
    q = "SELECT email, note FROM users JOIN orders ON orders.user_id = users.id ORDER BY orders.id"
    if mode == "sync":
        with governed_db.connect(ascii_db + ASCII, identity=AGENT, audit=audit) as conn:
            rows = conn.execute(q).fetchall()
    else:
        async with await governed_db.AsyncConnection.connect(
                ascii_db + ASCII, identity=AGENT, audit=audit) as conn:
            rows = await (await conn.execute(q)).fetchall()
    assert rows == [(b"****@example.com", b"ping [email redacted] now"),
                    (b"****@example.com", "qnt caf\u00e9 rush".encode())]


def test_catalog_and_rules_hold(ascii_db, audit):
    """The catalog snapshot is read (its names are bytes under SQL_ASCII): classification
    by column name, denials and lineage work as on UTF8."""
    with governed_db.connect(ascii_db + ASCII, identity=AGENT, audit=audit,
                             autocommit=True) as conn:
        assert conn.execute("SELECT lower(email) FROM users WHERE id = 1001").fetchall() == [
            (b"****",)]
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute("DELETE FROM t WHERE a = 1")
        assert ei.value.rule_ids == ("statement.allowlist",)
        with pytest.raises(errors.StatementDenied):
            conn.execute("SELECT 1; DELETE FROM t")
    assert _raw(ascii_db)[2] == [(1,), (2,)]


def test_error_text_redacted(ascii_db, audit):
    with governed_db.connect(ascii_db + ASCII, identity=HUMAN, audit=audit,
                             autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as ei:
            conn.execute("SELECT email::int FROM users WHERE id = 1001")
        assert "qem.alice" not in str(ei.value)
        assert "qem.alice" not in str(ei.value.diag.message_primary)


ALLOW_ENCODING = parse_policy("""
[[rules]]
id = "session.disallow-security-settings"
allow = ["client_encoding"]
[[rules]]
id = "session.settings-allowlist"
allow = ["client_encoding"]
""")


def test_switch_to_sql_ascii_allowed_and_governed(ascii_db, audit):
    with governed_db.connect(ascii_db, identity=HUMAN, audit=audit, autocommit=True,
                             policy=ALLOW_ENCODING) as conn:
        assert conn.execute("SELECT email FROM users WHERE id = 1001").fetchall() == [
            ("****@example.com",)]
        conn.execute("SET client_encoding TO SQL_ASCII")
        assert conn.execute("SELECT email FROM users WHERE id = 1001").fetchall() == [
            (b"****@example.com",)]
