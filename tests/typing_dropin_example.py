"""Typed code written for psycopg with one change, ``import governed_db as psycopg``.

Checked by mypy --strict in tests/test_typing.py (never imported or run): it must type-check
as it does against psycopg itself, with no finding.
"""

from __future__ import annotations

from typing import Any

import governed_db as psycopg
from governed_db import rows, sql
from governed_db.conninfo import make_conninfo
from governed_db.pq import TransactionStatus
from governed_db.rows import DictRow, dict_row


def count(cur: psycopg.Cursor[Any], table: str) -> int:
    cur.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(table)))
    row = cur.fetchone()
    return 0 if row is None else int(row[0])


def names(conn: psycopg.Connection[dict[str, Any]]) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("select name from people where id = %s", (1,))
        return [str(r["name"]) for r in cur.fetchall()]


def by_module_path(dsn: str) -> None:
    with psycopg.connect(make_conninfo(dsn, connect_timeout=3), row_factory=dict_row) as conn:
        row: DictRow | None = conn.execute("select 1 as one").fetchone()
        assert row is None or row["one"] == 1
        assert conn.info.transaction_status in (TransactionStatus.IDLE, TransactionStatus.INTRANS)


def main(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        count(conn.cursor(), "people")
        with conn.transaction():
            conn.execute("select 1")
    with psycopg.connect(dsn, row_factory=rows.dict_row) as dconn:
        names(dconn)
        with dconn.cursor("stream", withhold=True) as scur:
            for rec in scur.execute("select * from people"):
                rec.get("name")
    try:
        psycopg.connect(dsn, connect_timeout=3)
    except psycopg.errors.UniqueViolation:
        pass
    except psycopg.OperationalError as exc:
        print(exc.diag.sqlstate)


async def amain(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur: psycopg.AsyncCursor[Any] = conn.cursor()
        await cur.execute("select 1")
        async with conn.cursor("s", row_factory=rows.namedtuple_row) as scur:
            await scur.execute("select 1 as x")
            async for rec in scur:
                print(rec)
