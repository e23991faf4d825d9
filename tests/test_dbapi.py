"""A DB-API 2.0 (PEP 249) conformance suite run through governed connections, sync and async."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

import governed_db

EXCEPTIONS = ["Warning", "Error", "InterfaceError", "DatabaseError", "DataError",
              "OperationalError", "IntegrityError", "InternalError", "ProgrammingError",
              "NotSupportedError"]


def test_module_interface():
    assert governed_db.apilevel == "2.0"
    assert governed_db.threadsafety in (1, 2)
    assert governed_db.paramstyle == "pyformat"
    assert callable(governed_db.connect)


@pytest.mark.parametrize("name", EXCEPTIONS)
def test_exception_hierarchy_on_module_and_connection(name, human_conn):
    exc = getattr(governed_db, name)
    assert exc is getattr(psycopg, name)
    assert getattr(human_conn, name) is exc
    if name not in ("Warning", "Error"):
        assert issubclass(exc, governed_db.Error)
    if name in ("DataError", "OperationalError", "IntegrityError", "InternalError",
                "ProgrammingError", "NotSupportedError"):
        assert issubclass(exc, governed_db.DatabaseError)
    assert issubclass(governed_db.errors.StatementDenied, governed_db.ProgrammingError)


def test_type_objects_and_constructors(human_conn):
    assert governed_db.Date(2026, 11, 26) == dt.date(2026, 11, 26)
    assert governed_db.Time(12, 0, 1) == dt.time(12, 0, 1)
    assert governed_db.Timestamp(2026, 11, 26, 12, 0, 1) == dt.datetime(2026, 11, 26, 12, 0, 1)
    assert isinstance(governed_db.DateFromTicks(0), dt.date)
    assert isinstance(governed_db.TimeFromTicks(0), dt.time)
    assert isinstance(governed_db.TimestampFromTicks(0), dt.datetime)
    cur = human_conn.cursor()
    cur.execute("SELECT 'x'::text, 1::int, now(), %s::bytea, 'abc'::name",
                [governed_db.Binary(b"\x00\x01")])
    d = cur.description
    assert d[0].type_code == governed_db.STRING
    assert d[1].type_code == governed_db.NUMBER
    assert d[2].type_code == governed_db.DATETIME
    assert d[3].type_code == governed_db.BINARY
    assert cur.fetchone()[3] == b"\x00\x01"
    assert len(d[0]) == 7  # name, type_code, display_size, internal_size, precision, scale, null_ok


def test_cursor_attributes_and_fetch_protocol(human_conn):
    cur = human_conn.cursor()
    assert cur.description is None and cur.rowcount == -1 and cur.arraysize == 1
    cur.execute("SELECT a FROM t ORDER BY a")
    assert [c.name for c in cur.description] == ["a"]
    assert cur.rowcount == 2
    assert cur.fetchmany() == [(1,)]  # arraysize rows
    cur.arraysize = 5
    assert cur.fetchmany() == [(2,)]
    assert cur.fetchone() is None and cur.fetchall() == []
    # (Every row of t would be a full-table write, rolled back under the default profile.)
    cur.execute("UPDATE t SET a = a WHERE a > 1")
    assert cur.description is None and cur.rowcount == 1
    with pytest.raises(governed_db.ProgrammingError):
        cur.fetchone()  # no result set


def test_executemany_and_transactions(dsn, audit):
    conn = governed_db.connect(dsn, identity="human:alice", audit=audit)
    cur = conn.cursor()
    cur.executemany("INSERT INTO t VALUES (%s)", [(10,), (11,), (12,)])
    assert cur.rowcount == 3
    conn.rollback()
    assert cur.execute("SELECT count(*) FROM t").fetchone() == (2,)
    cur.executemany("INSERT INTO t VALUES (%s)", [(10,)])
    conn.commit()
    assert cur.execute("SELECT count(*) FROM t").fetchone() == (3,)
    conn.close()
    audit.flush()
    assert [r["type"] for r in audit.records if r["type"] in ("commit", "rollback")] == \
        ["rollback", "commit"]


def test_closed_objects_raise(dsn, audit):
    conn = governed_db.connect(dsn, identity="human:alice", audit=audit)
    cur = conn.cursor()
    cur.close()
    with pytest.raises(governed_db.InterfaceError):
        cur.execute("SELECT 1")
    conn.close()
    assert conn.closed
    with pytest.raises(governed_db.OperationalError):
        conn.cursor()
    with pytest.raises(governed_db.OperationalError):
        conn.execute("SELECT 1")
    conn.close()  # closing twice is fine


async def test_async_protocol(dsn, audit):
    conn = await governed_db.AsyncConnection.connect(dsn, identity="human:alice", audit=audit)
    async with conn:
        cur = conn.cursor()
        await cur.execute("SELECT a FROM t ORDER BY a")
        assert cur.rowcount == 2 and [c.name for c in cur.description] == ["a"]
        assert await cur.fetchmany(1) == [(1,)]
        await cur.executemany("INSERT INTO t VALUES (%s)", [(20,), (21,)])
        await conn.rollback()
        await cur.execute("SELECT count(*) FROM t")
        assert await cur.fetchone() == (2,)
    assert conn.closed
