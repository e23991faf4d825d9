"""A COPY TO that governance refuses after the server began it (binary format with columns to
mask) leaves the connection usable: the rest of the data is read and dropped, never handed
out, and the caller's transaction is as it was."""

from __future__ import annotations

import psycopg
import pytest

import governed_db
from governed_db import egress, errors

from .conftest import HUMAN

# 1 row, and ~3000 rows (many CopyData messages: the server is still sending when refused).
SMALL = "COPY (SELECT id, ssn FROM users ORDER BY id LIMIT 1) TO STDOUT (FORMAT binary)"
LARGE = ("COPY (SELECT u.id, u.ssn FROM users u, generate_series(1, 1000) g) TO STDOUT"
         " (FORMAT binary)")


XID = "SELECT pg_current_xact_id()::text"


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []

    def observe(self, where: str, value: object) -> None:
        self.seen.append((where, value))


async def _refused_then_next(dsn, audit, is_async, autocommit, query):
    """Run the refused COPY, then the next statements on the same connection: what the caller
    and the egress observers got, the backend pid and the transaction status after it."""
    got: list[bytes] = []
    with egress.observing(_Recorder()) as rec:
        if is_async:
            conn = await governed_db.AsyncConnection.connect(
                dsn, identity=HUMAN, audit=audit, autocommit=autocommit)
            try:
                xid = await (await conn.execute(XID)).fetchone()
                with pytest.raises(errors.StatementDenied) as info:
                    async with conn.cursor().copy(query) as cp:
                        got += [bytes(b) async for b in cp]
                status = conn.pgconn.transaction_status
                after = await (await conn.execute("SELECT 41 + 1")).fetchone()
                after += ((await (await conn.execute(XID)).fetchone()) == xid,)
                async with conn.cursor().copy("COPY (SELECT 7) TO STDOUT") as cp:
                    text = b"".join([bytes(b) async for b in cp])
                pid = conn.pgconn.backend_pid
            finally:
                await conn.close()
        else:
            conn = governed_db.connect(dsn, identity=HUMAN, audit=audit, autocommit=autocommit)
            try:
                xid = conn.execute(XID).fetchone()
                with pytest.raises(errors.StatementDenied) as info:
                    with conn.cursor().copy(query) as cp:
                        got += [bytes(b) for b in cp]
                status = conn.pgconn.transaction_status
                after = conn.execute("SELECT 41 + 1").fetchone()
                after += (conn.execute(XID).fetchone() == xid,)
                with conn.cursor().copy("COPY (SELECT 7) TO STDOUT") as cp:
                    text = b"".join(bytes(b) for b in cp)
                pid = conn.pgconn.backend_pid
            finally:
                conn.close()
    return info.value, got, rec.seen, status, after, text, pid


@pytest.mark.parametrize("query", [SMALL, LARGE], ids=["one-row", "many-rows"])
@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "transaction"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_refused_binary_copy_to_leaves_the_connection_usable(
        dsn, audit, is_async, autocommit, query):
    denial, got, seen, status, after, text, pid = await _refused_then_next(
        dsn, audit, is_async, autocommit, query)
    assert denial.rule_ids == ("column.mask",)
    assert got == []  # nothing handed out
    leaked = [(w, v) for w, v in seen if w in ("copy", "value", "row") and "qsn" in repr(v)]
    assert leaked == [] and not [w for w, _ in seen if w == "copy" and _ != "7\n"]
    # Out of COPY mode, the transaction as it was (open, not failed), then usable.
    idle = psycopg.pq.TransactionStatus.IDLE if autocommit else psycopg.pq.TransactionStatus.INTRANS
    assert status == idle
    # The same transaction still open (not failed, not restarted), or none in autocommit.
    assert after == (42, not autocommit)
    assert text == b"7\n"
    # From the server: that backend is gone (closed cleanly), none left in COPY.
    with psycopg.connect(dsn, autocommit=True) as su:
        assert su.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                          (pid,)).fetchone() == (0,)


@pytest.mark.parametrize("how", ["execute", "stream"])
def test_copy_through_execute_or_stream_hands_out_nothing(human_conn, how):
    """COPY through execute()/stream(): psycopg's ProgrammingError before any data. (As with
    psycopg itself, the connection is then left in COPY mode: use copy().)"""
    cur = human_conn.cursor()
    query = "COPY (SELECT id, ssn FROM users) TO STDOUT (FORMAT binary)"
    with pytest.raises(psycopg.ProgrammingError, match="use copy"):
        list(cur.stream(query)) if how == "stream" else cur.execute(query)
