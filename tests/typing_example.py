"""Typed user code against governed_db, checked by mypy --strict in tests/test_typing.py.

Never imported or run: mypy reads it. Each ``reveal_type(...)  # T: <type>`` line asserts the
type mypy reveals there, exactly (names as mypy prints them); any other mypy finding in this
file fails the test too. Connections are never opened, so the code needs no database.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, reveal_type

import psycopg_pool
from psycopg.rows import TupleRow, class_row, dict_row, namedtuple_row, tuple_row

import governed_db
from governed_db import AsyncConnection, AsyncCursor, Connection, Cursor, Identity


@dataclass
class Person:
    name: str
    email: str


def int_row(cursor: Cursor[Any] | AsyncCursor[Any]) -> Callable[[Sequence[Any]], int]:
    return lambda values: int(values[0])


AGENT = Identity("recs-bot", "ai_agent")


def sync_connections() -> None:
    reveal_type(governed_db.connect())  # T: governed_db.Connection[tuple[Any, ...]]
    reveal_type(governed_db.connect("", identity=AGENT, row_factory=dict_row))  # T: governed_db.Connection[dict[str, Any]]
    reveal_type(governed_db.connect(row_factory=tuple_row))  # T: governed_db.Connection[tuple[Any, ...]]
    reveal_type(governed_db.connect(row_factory=namedtuple_row))  # T: governed_db.Connection[typing.NamedTuple]
    reveal_type(governed_db.connect(row_factory=class_row(Person)))  # T: governed_db.Connection[tests.typing_example.Person]
    reveal_type(governed_db.connect(row_factory=int_row, policy="policy.toml", audit=False))  # T: governed_db.Connection[int]
    reveal_type(Connection.connect(identity="service:billing"))  # T: governed_db.Connection[tuple[Any, ...]]
    reveal_type(Connection.connect(identity_token="jwt", row_factory=dict_row))  # T: governed_db.Connection[dict[str, Any]]


def sync_cursors() -> None:
    conn = governed_db.connect(row_factory=dict_row)
    reveal_type(conn.cursor())  # T: governed_db.Cursor[dict[str, Any]]
    reveal_type(conn.cursor(row_factory=class_row(Person)))  # T: governed_db.Cursor[tests.typing_example.Person]
    reveal_type(conn.cursor("named"))  # T: governed_db.ServerCursor[dict[str, Any]]
    reveal_type(conn.cursor("named", row_factory=int_row))  # T: governed_db.ServerCursor[int]
    reveal_type(conn.execute("select 1"))  # T: governed_db.Cursor[dict[str, Any]]
    with conn.cursor() as cur:
        reveal_type(cur)  # T: governed_db.Cursor[dict[str, Any]]
        reveal_type(cur.execute("select 1"))  # T: governed_db.Cursor[dict[str, Any]]
        reveal_type(cur.fetchone())  # T: dict[str, Any] | None
        reveal_type(cur.fetchall())  # T: list[dict[str, Any]]
        reveal_type(cur.row_factory)  # T: psycopg.rows.RowFactory[dict[str, Any]]
        with cur.copy("copy t to stdout") as copy:
            reveal_type(copy)  # T: governed_db.Copy
    with conn.transaction() as tx:
        reveal_type(tx)  # T: psycopg.transaction.Transaction
    reveal_type(governed_db.Cursor(conn))  # T: governed_db.Cursor[dict[str, Any]]
    reveal_type(governed_db.ClientCursor(conn, row_factory=class_row(Person)))  # T: governed_db.ClientCursor[tests.typing_example.Person]
    reveal_type(governed_db.RawCursor(conn))  # T: governed_db.RawCursor[dict[str, Any]]
    reveal_type(governed_db.ServerCursor(conn, "s"))  # T: governed_db.ServerCursor[dict[str, Any]]
    person: Person | None = governed_db.connect(row_factory=class_row(Person)).execute("").fetchone()
    assert person is None or person.email
    with governed_db.connect().pipeline() as pipeline:
        reveal_type(pipeline)  # T: psycopg._pipeline.Pipeline


async def async_connections() -> None:
    reveal_type(await AsyncConnection.connect())  # T: governed_db.AsyncConnection[tuple[Any, ...]]
    conn = await AsyncConnection.connect(identity=AGENT, row_factory=dict_row)
    reveal_type(conn)  # T: governed_db.AsyncConnection[dict[str, Any]]
    reveal_type(conn.cursor())  # T: governed_db.AsyncCursor[dict[str, Any]]
    reveal_type(conn.cursor(row_factory=int_row))  # T: governed_db.AsyncCursor[int]
    reveal_type(conn.cursor("named"))  # T: governed_db.AsyncServerCursor[dict[str, Any]]
    reveal_type(await conn.execute("select 1"))  # T: governed_db.AsyncCursor[dict[str, Any]]
    async with conn.cursor() as cur:
        reveal_type(await cur.execute("select 1"))  # T: governed_db.AsyncCursor[dict[str, Any]]
        reveal_type(await cur.fetchone())  # T: dict[str, Any] | None
        reveal_type(await cur.fetchmany(2))  # T: list[dict[str, Any]]
        async with cur.copy("copy t to stdout") as copy:
            reveal_type(copy)  # T: governed_db.AsyncCopy
    reveal_type(governed_db.AsyncClientCursor(conn))  # T: governed_db.AsyncClientCursor[dict[str, Any]]
    reveal_type(governed_db.AsyncRawServerCursor(conn, "s"))  # T: governed_db.AsyncRawServerCursor[dict[str, Any]]


def pools() -> None:
    # A bare generic class is Connection[Any] to mypy (as psycopg's own); psycopg_pool's docs
    # parametrize it, as the second pool does.
    bare = psycopg_pool.ConnectionPool("", connection_class=governed_db.Connection, open=False)
    reveal_type(bare)  # T: psycopg_pool.pool.ConnectionPool[governed_db.Connection[Any]]
    pool = psycopg_pool.ConnectionPool(
        "", connection_class=governed_db.Connection[TupleRow], open=False)
    reveal_type(pool)  # T: psycopg_pool.pool.ConnectionPool[governed_db.Connection[tuple[Any, ...]]]
    with pool.connection() as conn:
        reveal_type(conn)  # T: governed_db.Connection[tuple[Any, ...]]
        reveal_type(conn.execute("select 1").fetchone())  # T: tuple[Any, ...] | None
    dpool = psycopg_pool.ConnectionPool(
        "", connection_class=governed_db.Connection[dict[str, Any]],
        kwargs={"row_factory": dict_row}, open=False)
    with dpool.connection() as dconn:
        reveal_type(dconn.cursor().fetchall())  # T: list[dict[str, Any]]


async def async_pools() -> None:
    pool = psycopg_pool.AsyncConnectionPool(
        "", connection_class=governed_db.AsyncConnection[TupleRow], open=False)
    reveal_type(pool)  # T: psycopg_pool.pool_async.AsyncConnectionPool[governed_db.AsyncConnection[tuple[Any, ...]]]
    async with pool.connection() as conn:
        reveal_type(conn)  # T: governed_db.AsyncConnection[tuple[Any, ...]]
