"""Drop-in behaviour: submodule imports, DB-API 2.0 surface, psycopg_pool, identity per checkout."""

from __future__ import annotations

import importlib
import subprocess
import sys

import psycopg
import psycopg_pool
import pytest

import governed_db
from governed_db import acting_as, errors

from .conftest import AGENT, HUMAN, MARKERS


def test_submodules_import_by_dotted_name_as_psycopgs_own():
    code = (
        "import governed_db, psycopg\n"
        "from governed_db.pq import ExecStatus\n"
        "from governed_db.rows import dict_row\n"
        "import governed_db.types.json as j\n"
        "import psycopg.types.json as pj\n"
        "assert j is pj and ExecStatus is psycopg.pq.ExecStatus and dict_row is psycopg.rows.dict_row\n"
        "assert pj.__spec__.name == 'psycopg.types.json', pj.__spec__.name\n"
        "import governed_db.errors as e\n"
        "assert e.__name__ == 'governed_db.errors' and e.StatementDenied\n"
        "try:\n"
        "    import governed_db.no_such_module\n"
        "except ModuleNotFoundError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('imported a module that does not exist')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_submodules_are_attributes_as_on_psycopg():
    """``import psycopg`` then ``psycopg.conninfo.make_conninfo(...)``: every public submodule of
    psycopg (its package directory, no leading underscore) is an attribute of governed_db, the
    same module object; ``errors`` stays governed_db's own."""
    from pathlib import Path

    from governed_db._aliases import ALIASED

    root = Path(psycopg.__file__).parent
    public = {p.stem for p in root.iterdir()
              if not p.name.startswith("_") and (p.suffix == ".py" or (p / "__init__.py").exists())}
    public.discard("errors")
    assert public <= ALIASED, public - ALIASED
    assert {"conninfo", "generators", "postgres", "waiting", "crdb", "raw_cursor"} <= public
    for name in sorted(public):
        assert getattr(governed_db, name) is importlib.import_module(f"psycopg.{name}"), name
    assert governed_db.errors.__name__ == "governed_db.errors"
    with pytest.raises(AttributeError, match="has no attribute 'no_such_module'"):
        governed_db.no_such_module  # noqa: B018
    assert not hasattr(governed_db, "_encodings")  # private modules are not the drop-in's


@pytest.mark.parametrize("kind", ["cursor", "client", "raw", "server", "copy", "connection",
                                  "custom"])
def test_repr_is_psycopg_style_with_a_governed_marker(human_conn, kind):
    conn = human_conn
    if kind == "connection":
        obj, path = conn, "psycopg.Connection"
    elif kind == "server":
        obj, path = conn.cursor("my-name"), "psycopg.ServerCursor"
        obj.close()
    elif kind == "custom":
        class MyCursor(psycopg.Cursor):
            pass

        conn.cursor_factory = MyCursor
        obj, path = conn.cursor(), f"{MyCursor.__module__}.{MyCursor.__qualname__}"
    elif kind == "copy":
        with conn.cursor().copy("COPY (SELECT 1) TO STDOUT") as copy:
            text = repr(copy)
        assert text.startswith("<psycopg.Copy (governed) ["), text
        return
    else:
        cls = {"cursor": governed_db.Cursor, "client": governed_db.ClientCursor,
               "raw": governed_db.RawCursor}[kind]
        obj, path = cls(conn), f"psycopg.{cls.__name__}"
    text = repr(obj)
    assert text.startswith(f"<{path} (governed) "), text
    assert str(obj) == text and "governed_db." not in text
    assert f"at 0x{id(obj):x}>" in text
    if kind == "server":
        assert "'my-name' [closed] [IDLE]" in text


async def test_async_repr_is_psycopg_style_with_a_governed_marker(async_agent_conn):
    conn = async_agent_conn
    for obj, path in [(conn, "psycopg.AsyncConnection"), (conn.cursor(), "psycopg.AsyncCursor"),
                      (governed_db.AsyncClientCursor(conn), "psycopg.AsyncClientCursor"),
                      (conn.cursor("n"), "psycopg.AsyncServerCursor")]:
        assert repr(obj).startswith(f"<{path} (governed) "), repr(obj)
        if path == "psycopg.AsyncServerCursor":
            await obj.close()


def test_dbapi_module_globals():
    assert (governed_db.apilevel, governed_db.threadsafety, governed_db.paramstyle) == \
        (psycopg.apilevel, psycopg.threadsafety, psycopg.paramstyle)
    assert governed_db.__version__ == psycopg.__version__
    assert importlib.metadata.version("governed-db") == governed_db.__governed_version__
    for exc in ("Warning", "Error", "InterfaceError", "DatabaseError", "DataError",
                "OperationalError", "IntegrityError", "InternalError", "ProgrammingError",
                "NotSupportedError"):
        assert getattr(governed_db, exc) is getattr(psycopg, exc)


def test_dbapi_cursor_protocol(human_conn):
    cur = human_conn.cursor()
    assert cur.description is None and cur.rowcount == -1
    cur.execute("SELECT id, email FROM users ORDER BY id")
    assert [d.name for d in cur.description] == ["id", "email"]
    assert cur.rowcount == 2
    assert cur.fetchone() == (1001, "****@example.com")
    assert cur.fetchmany(5) == [(1002, "****@example.com")]
    assert cur.fetchall() == []
    cur.arraysize = 3
    cur.executemany("INSERT INTO t VALUES (%s)", [(10,), (11,)])
    assert cur.rowcount == 2
    cur.setinputsizes([None])
    cur.setoutputsize(10)
    cur.close()
    assert cur.closed


GENERIC = ["Connection", "AsyncConnection", "Cursor", "ClientCursor", "RawCursor", "ServerCursor",
           "RawServerCursor", "AsyncCursor", "AsyncClientCursor", "AsyncRawCursor",
           "AsyncServerCursor", "AsyncRawServerCursor"]


@pytest.mark.parametrize("name", GENERIC)
def test_governed_classes_are_generic_like_psycopgs(name):
    from psycopg.rows import DictRow

    cls = getattr(governed_db, name)
    alias = cls[DictRow]
    assert alias.__origin__ is cls and alias.__args__ == (DictRow,)
    assert len(cls.__parameters__) == len(getattr(psycopg, name).__parameters__) == 1


def test_typed_pool_of_governed_connections(dsn, audit):
    """psycopg_pool's typed path: ``connection_class=Connection[DictRow]``."""
    from psycopg.rows import DictRow, dict_row

    pool: psycopg_pool.ConnectionPool[governed_db.Connection[DictRow]]
    with psycopg_pool.ConnectionPool(dsn, connection_class=governed_db.Connection[DictRow],
                                     min_size=1, max_size=1, open=True,
                                     kwargs={"identity": AGENT, "audit": audit,
                                             "row_factory": dict_row}) as pool:
        with pool.connection() as conn:
            assert isinstance(conn, governed_db.Connection)
            cur = governed_db.Cursor[DictRow](conn)
            cur.execute("SELECT id, email FROM users ORDER BY id LIMIT 1")
            assert cur.fetchone() == {"id": 1001, "email": "****@example.com"}


def test_pool_with_governed_connection_class(dsn, audit):
    with psycopg_pool.ConnectionPool(dsn, connection_class=governed_db.Connection, min_size=1,
                                     max_size=2, kwargs={"identity": HUMAN, "audit": audit},
                                     open=True) as pool:
        with pool.connection() as conn:
            assert isinstance(conn, governed_db.Connection)
            assert conn.execute("SELECT ssn FROM users WHERE id = 1001").fetchone()[0] \
                .endswith("3333")
        with pool.connection() as conn, acting_as(AGENT):
            row = conn.execute("SELECT email, current_setting('governed_db.identity')"
                               " FROM users WHERE id = 1001").fetchone()
            assert row == ("****@example.com", "ai_agent:recs-bot")
            with pytest.raises(errors.StatementDenied):
                conn.execute("DELETE FROM users WHERE id = 1001")
        with pool.connection() as conn:  # the next checkout is alice again, not the agent
            assert conn.execute("SELECT current_setting('governed_db.identity')").fetchone() \
                == ("human:alice",)
    audit.flush()
    ids = [r["identity"]["id"] for r in audit.records if r["type"] == "statement"]
    assert "recs-bot" in ids and ids[-1] == "alice"


async def test_async_pool_with_governed_connection_class(dsn, audit):
    async with psycopg_pool.AsyncConnectionPool(
            dsn, connection_class=governed_db.AsyncConnection, min_size=1, max_size=2,
            kwargs={"identity": AGENT, "audit": audit}, open=False) as pool:
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT email, ssn FROM users")
            rows = await cur.fetchall()
            assert rows and not any(m in repr(rows).lower() for m in MARKERS)
            with pytest.raises(errors.StatementDenied):
                await conn.execute("DROP TABLE users")


async def test_async_tasks_with_their_own_identities_on_a_shared_pool(dsn, audit):
    import asyncio

    people = [governed_db.Identity(f"web-user-{i}", "human") for i in range(20)]
    async with psycopg_pool.AsyncConnectionPool(
            dsn, connection_class=governed_db.AsyncConnection, min_size=2, max_size=4,
            kwargs={"identity": HUMAN, "audit": audit, "autocommit": True}) as pool:
        async def request(ident):
            with acting_as(ident):
                for _ in range(5):
                    async with pool.connection() as c:
                        cur = await c.execute("SELECT current_setting('governed_db.identity')")
                        assert (await cur.fetchone())[0] == ident.label
                        await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*(request(p) for p in people)), timeout=60)
    audit.flush()
    for p in people:
        assert sum(1 for r in audit.records if r["type"] == "statement"
                   and r["identity"]["id"] == p.id) == 5
