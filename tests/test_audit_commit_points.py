"""Work sent before the audit log failed commits nothing while the log cannot be written.

The statement choke point refuses every new statement on a failed or closed log
(test_audit_fail_closed). Work already sent reaches the server's commit without passing it
again: the end of a ``transaction()`` block (COMMIT or RELEASE), a pipeline's sync in
autocommit mode, the end of ``COPY ... FROM STDIN``; and rows of a server-side cursor are read
by FETCH after its DECLARE. Each shape below sends work, then the log closes (or its writer
fails), then the work reaches its commit point: ``AuditUnavailable`` is raised, and a separate
raw connection shows the server kept none of it; the connection is left with no transaction
open.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

import governed_db
from governed_db import Identity, errors
from governed_db.audit import AuditLog, iter_records, verify

from .test_audit_fail_closed import FlakySink

SVC = Identity("commit-points-svc", "service")
INSERT = "INSERT INTO t VALUES (%s)"


def _rows_in_t(dsn: str) -> set[int]:
    with psycopg.connect(dsn) as raw:  # ungoverned: what the server has
        return {r[0] for r in raw.execute("SELECT a FROM t").fetchall()}


# -- the shapes: (autocommit, sync body, async body); each body is given the connection, a
# function that makes the log unwritable, and the first value to insert -----------------------

def _tx_block(conn: Any, fail: Any, v: int) -> None:
    with conn.transaction():
        conn.execute(INSERT, (v,))
        fail()


async def _tx_block_a(conn: Any, fail: Any, v: int) -> None:
    async with conn.transaction():
        await conn.execute(INSERT, (v,))
        fail()


def _nested_savepoint(conn: Any, fail: Any, v: int) -> None:
    with conn.transaction():
        conn.execute(INSERT, (v,))
        with conn.transaction():
            conn.execute(INSERT, (v + 1,))
            fail()


async def _nested_savepoint_a(conn: Any, fail: Any, v: int) -> None:
    async with conn.transaction():
        await conn.execute(INSERT, (v,))
        async with conn.transaction():
            await conn.execute(INSERT, (v + 1,))
            fail()


def _savepoint_in_open_tx(conn: Any, fail: Any, v: int) -> None:
    conn.execute(INSERT, (v,))  # (not autocommit: this opens the transaction)
    try:
        with conn.transaction(savepoint_name="sp1"):
            conn.execute(INSERT, (v + 1,))
            fail()
    finally:
        with pytest.raises(errors.AuditUnavailable):
            conn.commit()
        conn.rollback()


async def _savepoint_in_open_tx_a(conn: Any, fail: Any, v: int) -> None:
    await conn.execute(INSERT, (v,))
    try:
        async with conn.transaction(savepoint_name="sp1"):
            await conn.execute(INSERT, (v + 1,))
            fail()
    finally:
        with pytest.raises(errors.AuditUnavailable):
            await conn.commit()
        await conn.rollback()


def _pipeline_end(conn: Any, fail: Any, v: int) -> None:
    with conn.pipeline():
        conn.execute(INSERT, (v,))
        conn.execute(INSERT, (v + 1,))
        fail()


async def _pipeline_end_a(conn: Any, fail: Any, v: int) -> None:
    async with conn.pipeline():
        await conn.execute(INSERT, (v,))
        await conn.execute(INSERT, (v + 1,))
        fail()


def _pipeline_sync(conn: Any, fail: Any, v: int) -> None:
    with conn.pipeline() as p:
        conn.execute(INSERT, (v,))
        fail()
        p.sync()


async def _pipeline_sync_a(conn: Any, fail: Any, v: int) -> None:
    async with conn.pipeline() as p:
        await conn.execute(INSERT, (v,))
        fail()
        await p.sync()


def _pipeline_tx(conn: Any, fail: Any, v: int) -> None:
    with conn.pipeline(), conn.transaction():
        conn.execute(INSERT, (v,))
        fail()


async def _pipeline_tx_a(conn: Any, fail: Any, v: int) -> None:
    async with conn.pipeline(), conn.transaction():
        await conn.execute(INSERT, (v,))
        fail()


def _pipeline_commit(conn: Any, fail: Any, v: int) -> None:
    try:
        with conn.pipeline():
            conn.execute(INSERT, (v,))
            fail()
            conn.commit()
    finally:
        conn.rollback()


async def _pipeline_commit_a(conn: Any, fail: Any, v: int) -> None:
    try:
        async with conn.pipeline():
            await conn.execute(INSERT, (v,))
            fail()
            await conn.commit()
    finally:
        await conn.rollback()


def _copy_end(conn: Any, fail: Any, v: int) -> None:
    with conn.cursor().copy("COPY t (a) FROM STDIN") as cp:
        cp.write_row((v,))
        fail()


async def _copy_end_a(conn: Any, fail: Any, v: int) -> None:
    async with conn.cursor().copy("COPY t (a) FROM STDIN") as cp:
        await cp.write_row((v,))
        fail()


def _copy_write(conn: Any, fail: Any, v: int) -> None:
    with conn.cursor().copy("COPY t (a) FROM STDIN") as cp:
        cp.write(f"{v}\n")
        fail()
        cp.write(f"{v + 1}\n")


async def _copy_write_a(conn: Any, fail: Any, v: int) -> None:
    async with conn.cursor().copy("COPY t (a) FROM STDIN") as cp:
        await cp.write(f"{v}\n")
        fail()
        await cp.write(f"{v + 1}\n")


def _copy_in_tx(conn: Any, fail: Any, v: int) -> None:
    with conn.transaction(), conn.cursor().copy("COPY t (a) FROM STDIN") as cp:
        cp.write_row((v,))
        fail()


async def _copy_in_tx_a(conn: Any, fail: Any, v: int) -> None:
    async with conn.transaction(), conn.cursor().copy("COPY t (a) FROM STDIN") as cp:
        await cp.write_row((v,))
        fail()


SHAPES = {
    "transaction-block": (True, _tx_block, _tx_block_a),
    "transaction-block-not-autocommit": (False, _tx_block, _tx_block_a),
    "nested-savepoint": (True, _nested_savepoint, _nested_savepoint_a),
    "savepoint-in-open-transaction": (False, _savepoint_in_open_tx, _savepoint_in_open_tx_a),
    "pipeline-end": (True, _pipeline_end, _pipeline_end_a),
    "pipeline-sync": (True, _pipeline_sync, _pipeline_sync_a),
    "pipeline-transaction": (True, _pipeline_tx, _pipeline_tx_a),
    "pipeline-commit-not-autocommit": (False, _pipeline_commit, _pipeline_commit_a),
    "copy-from-end": (True, _copy_end, _copy_end_a),
    "copy-from-write": (True, _copy_write, _copy_write_a),
    "copy-from-in-transaction": (True, _copy_in_tx, _copy_in_tx_a),
}


async def _connect(kind: str, dsn: str, log: AuditLog, autocommit: bool) -> Any:
    if kind == "sync":
        return governed_db.connect(dsn, identity=SVC, audit=log, autocommit=autocommit)
    return await governed_db.AsyncConnection.connect(dsn, identity=SVC, audit=log,
                                                     autocommit=autocommit)


async def _run_shape(kind: str, conn: Any, shape: str, fail: Any, value: int) -> None:
    _, body, body_async = SHAPES[shape]
    if kind == "sync":
        body(conn, fail, value)
    else:
        await body_async(conn, fail, value)


async def _close(kind: str, conn: Any) -> None:
    if kind == "sync":
        conn.close()
    else:
        await conn.close()


def _value(shape: str, kind: str) -> int:
    return 1000 + list(SHAPES).index(shape) * 10 + (5 if kind == "async" else 0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_log_closed_before_the_commit_point_commits_nothing(dsn, tmp_path, kind, shape):
    log = AuditLog.open(tmp_path / "audit.jsonl")
    value = _value(shape, kind)
    conn = await _connect(kind, dsn, log, SHAPES[shape][0])
    try:
        with pytest.raises(errors.AuditUnavailable, match="the audit log is closed"):
            await _run_shape(kind, conn, shape, log.close, value)
        assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
    finally:
        await _close(kind, conn)
    assert not {value, value + 1} & _rows_in_t(dsn)
    verify(log.path, log.key.public_key())


@pytest.mark.parametrize("shape", ["transaction-block", "nested-savepoint", "pipeline-end",
                                   "copy-from-end"])
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_writer_failure_before_the_commit_point_commits_nothing(dsn, tmp_path, kind,
                                                                        shape):
    """The log's writer fails (a sink down) rather than the log being closed: refused alike,
    and once the sink is back the same shape commits, recorded."""
    log = AuditLog.open(tmp_path / "audit.jsonl")
    sink = FlakySink()
    log.sinks.append(sink)
    value = _value(shape, kind) + 500

    def fail() -> None:
        sink.broken = True
        with pytest.raises(errors.AuditUnavailable):
            log.flush(timeout=5)  # the writer has failed: the log says so from now on

    conn = await _connect(kind, dsn, log, SHAPES[shape][0])
    try:
        with pytest.raises(errors.AuditUnavailable, match=r"cannot be written \(audit sink"):
            await _run_shape(kind, conn, shape, fail, value)
        assert not {value, value + 1} & _rows_in_t(dsn)
        sink.broken = False
        for _ in range(200):  # the writer retries its backlog: the log is writable again
            if log.error is None:
                break
            time.sleep(0.05)
        await _run_shape(kind, conn, shape, lambda: None, value + 2)
    finally:
        await _close(kind, conn)
    log.close()
    assert value + 2 in _rows_in_t(dsn)
    verify(log.path, log.key.public_key())


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_server_cursor_rows_are_not_read_on_a_closed_log(dsn, tmp_path, kind):
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("INSERT INTO t SELECT generate_series(1, 5)")
    log = AuditLog.open(tmp_path / "audit.jsonl")
    conn = await _connect(kind, dsn, log, False)
    try:
        if kind == "sync":
            cur = conn.cursor("sc")
            cur.execute("SELECT a FROM t ORDER BY a")
            assert cur.fetchone() == (1,)
            log.close()
            for read in (cur.fetchone, lambda: cur.fetchmany(2), cur.fetchall,
                         lambda: cur.scroll(1)):
                with pytest.raises(errors.AuditUnavailable, match="the audit log is closed"):
                    read()
            cur.close()  # (closing it is not refused)
        else:
            cur = conn.cursor("sc")
            await cur.execute("SELECT a FROM t ORDER BY a")
            assert await cur.fetchone() == (1,)
            log.close()
            for read in (cur.fetchone, lambda: cur.fetchmany(2), cur.fetchall,
                         lambda: cur.scroll(1)):
                with pytest.raises(errors.AuditUnavailable, match="the audit log is closed"):
                    await read()
            await cur.close()
    finally:
        await _close(kind, conn)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_commit_points_run_while_the_log_is_writable(dsn, tmp_path, kind):
    """The same shapes, nothing failing: everything commits (the gate costs no behaviour)."""
    log = AuditLog.open(tmp_path / "audit.jsonl")
    expected: set[int] = set()
    for shape, (autocommit, _, _) in SHAPES.items():
        if shape in ("savepoint-in-open-transaction", "pipeline-commit-not-autocommit"):
            continue  # (those roll back by design)
        conn = await _connect(kind, dsn, log, autocommit)
        try:
            value = _value(shape, kind) + 2000
            await _run_shape(kind, conn, shape, lambda: None, value)
            expected |= {value} | ({value + 1} if shape in (
                "nested-savepoint", "pipeline-end", "copy-from-write") else set())
            assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
        finally:
            await _close(kind, conn)
    log.close()
    assert expected <= _rows_in_t(dsn)


def test_transaction_and_pipeline_reprs_read_as_psycopg(dsn, tmp_path):
    with governed_db.connect(dsn, identity=SVC, audit=AuditLog.in_memory()) as conn:
        with conn.transaction() as tx:
            assert isinstance(tx, psycopg.Transaction)
            assert repr(tx).startswith("<psycopg.Transaction (governed) (active)")
        with conn.pipeline() as p:
            assert isinstance(p, psycopg.Pipeline)
            assert repr(p).startswith("<psycopg.Pipeline (governed) [")


# -- statements in flight when the log closes: recorded, whatever happens next ---------------

def _statement_records(path: Any) -> list[dict[str, Any]]:
    return [rec for _, rec, _ in iter_records(path) if rec and rec.get("type") == "statement"]


def _outcomes(path: Any, normalized: str) -> list[str]:
    return [rec["outcome"]["outcome"] for rec in _statement_records(path)
            if rec["statement"]["normalized"] == normalized]


def _hold_lock(dsn: str, seconds: float) -> Any:
    """A raw connection holds an exclusive lock on t for ``seconds``: a governed statement on
    t waits on the server meanwhile. Returns the thread."""
    ready = threading.Event()

    def hold() -> None:
        with psycopg.connect(dsn) as raw:
            raw.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
            ready.set()
            time.sleep(seconds)

    th = threading.Thread(target=hold)
    th.start()
    ready.wait(10)
    return th


@pytest.mark.parametrize("grace, outcome", [(10.0, "ok"), (0.2, "unfinished")])
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_log_closed_while_a_statement_runs_records_it(dsn, tmp_path, kind, grace,
                                                           outcome):
    """Another thread closes the log while an autocommit INSERT waits on a lock: close()
    waits for it (its record has its outcome), or, past its grace, records it as sent with
    its outcome unknown. Either way the row the server kept has a record."""
    log = AuditLog.open(tmp_path / "audit.jsonl")
    conn = await _connect(kind, dsn, log, True)
    value = 3000 + (kind == "async") + (grace < 1) * 10
    holder = _hold_lock(dsn, 0.8)
    closer = threading.Timer(0.3, lambda: log.close(grace=grace))
    closer.start()
    try:
        if kind == "sync":
            conn.execute(INSERT, (value,))
        else:
            await conn.execute(INSERT, (value,))
    except errors.AuditUnavailable:
        assert outcome == "unfinished"  # its own record came after the writer stopped
    finally:
        holder.join()
        closer.join()
        await _close(kind, conn)
    assert value in _rows_in_t(dsn)
    assert _outcomes(log.path, "INSERT INTO t VALUES ($1)") == [outcome]
    verify(log.path, log.key.public_key())


def test_no_statement_slips_through_while_the_log_closes(dsn, tmp_path):
    """Eight threads insert while the log closes: every row the server kept has its record
    (the close refuses new statements from its first moment, records in flight are taken
    until the writer stops)."""
    log = AuditLog.open(tmp_path / "audit.jsonl")
    stop = threading.Event()
    refused: list[int] = []

    def insert(n: int) -> None:
        with governed_db.connect(dsn, identity=SVC, audit=log, autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                try:
                    conn.execute(INSERT, (n * 1_000_000 + i,))
                except errors.AuditUnavailable:
                    refused.append(n)
                    return
                i += 1

    threads = [threading.Thread(target=insert, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    time.sleep(0.5)
    log.close()
    stop.set()
    for th in threads:
        th.join()
    kept = _rows_in_t(dsn)
    recorded = _outcomes(log.path, "INSERT INTO t VALUES ($1)")
    assert len(refused) == 8 and kept
    assert len(recorded) == len(kept)  # one record per row kept, none for a refused one
    assert set(recorded) <= {"ok", "unfinished"}
    verify(log.path, log.key.public_key())


@pytest.mark.parametrize("autocommit", [True, False])
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_pipelined_statements_in_flight_at_close_are_recorded(dsn, tmp_path, kind,
                                                                   autocommit):
    """Statements sent in a pipeline run on the server as they arrive; a COMMIT among them
    commits before the caller's sync. Closed before that sync, the log records each as sent
    (``unfinished``): the kept row has its record; the sync then raises."""
    log = AuditLog.open(tmp_path / "audit.jsonl")
    conn = await _connect(kind, dsn, log, autocommit)
    value = 3100 + (kind == "async") + autocommit * 10
    try:
        with pytest.raises(errors.AuditUnavailable, match="closed"):
            if kind == "sync":
                with conn.pipeline() as p:
                    conn.execute(INSERT, (value,))
                    conn.execute("COMMIT")
                    conn.execute(INSERT, (value + 1,))
                    log.close()
                    p.sync()
                    conn.execute("SELECT 1")  # (refused, if the sync was not)
            else:
                async with conn.pipeline() as p:
                    await conn.execute(INSERT, (value,))
                    await conn.execute("COMMIT")
                    await conn.execute(INSERT, (value + 1,))
                    log.close()
                    await p.sync()
                    await conn.execute("SELECT 1")
    finally:
        if kind == "sync":
            conn.rollback()  # (not refused: a rollback commits nothing)
        else:
            await conn.rollback()
        await _close(kind, conn)
    kept = _rows_in_t(dsn)
    assert value in kept and value + 1 not in kept
    # One record each: read before the close (ok, results arrive as later ones are sent) or
    # recorded by close() as sent (unfinished).
    inserts = _outcomes(log.path, "INSERT INTO t VALUES ($1)")
    assert len(inserts) == 2 and set(inserts) <= {"ok", "unfinished"}
    assert inserts[1] == "unfinished"  # (sent last: never read before the close)
    assert len(_outcomes(log.path, "COMMIT")) == 1
    verify(log.path, log.key.public_key())


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_effect_checked_write_rolls_back_when_the_log_closes_while_it_runs(dsn, tmp_path,
                                                                                kind):
    """An UPDATE under the agent's row limit runs in governance's own transaction; the log
    closes while it waits on a lock: its own COMMIT is a commit point too (rolled back,
    recorded as an error)."""
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("INSERT INTO t SELECT generate_series(1, 10)")
    log = AuditLog.open(tmp_path / "audit.jsonl")
    conn = await _connect(kind, dsn, log, True)
    holder = _hold_lock(dsn, 0.8)
    closer = threading.Timer(0.3, log.close)
    closer.start()
    try:
        with pytest.raises(errors.AuditUnavailable, match="closed"):
            if kind == "sync":
                conn.execute("UPDATE t SET a = a + 1000 WHERE a = 2")
            else:
                await conn.execute("UPDATE t SET a = a + 1000 WHERE a = 2")
    finally:
        holder.join()
        closer.join()
        await _close(kind, conn)
    assert _rows_in_t(dsn) == set(range(1, 11))
    assert _outcomes(log.path, "UPDATE t SET a = a + $1 WHERE a = $2") == ["error"]


def _tpc_enabled(dsn: str) -> bool:
    with psycopg.connect(dsn) as raw:
        return int(raw.execute("SHOW max_prepared_transactions").fetchone()[0]) > 0


@pytest.mark.parametrize("when", ["prepare", "commit-prepared", "commit-recovered"])
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_two_phase_commit_is_refused_on_a_closed_log(dsn, tmp_path, kind, when):
    """PREPARE TRANSACTION and COMMIT PREPARED are commit points: refused on a closed log
    (the prepared transaction is left to roll back)."""
    if not _tpc_enabled(dsn):
        pytest.skip("the server has max_prepared_transactions = 0")
    log = AuditLog.open(tmp_path / "audit.jsonl")
    conn = await _connect(kind, dsn, log, False)
    value = 3200 + (kind == "async") + ["prepare", "commit-prepared",
                                        "commit-recovered"].index(when) * 10
    xid = conn.xid(1, f"gtrid-{kind}-{when}", "bq")
    try:
        if kind == "sync":
            conn.tpc_begin(xid)
            conn.execute(INSERT, (value,))
            if when != "prepare":
                conn.tpc_prepare()
            log.close()
            with pytest.raises(errors.AuditUnavailable, match="closed"):
                if when == "prepare":
                    conn.tpc_prepare()
                elif when == "commit-prepared":
                    conn.tpc_commit()
                else:
                    conn.tpc_commit(xid)
        else:
            await conn.tpc_begin(xid)
            await conn.execute(INSERT, (value,))
            if when != "prepare":
                await conn.tpc_prepare()
            log.close()
            with pytest.raises(errors.AuditUnavailable, match="closed"):
                if when == "prepare":
                    await conn.tpc_prepare()
                elif when == "commit-prepared":
                    await conn.tpc_commit()
                else:
                    await conn.tpc_commit(xid)
    finally:
        await _close(kind, conn)
        with psycopg.connect(dsn, autocommit=True) as raw:
            for (gid,) in raw.execute("SELECT gid FROM pg_prepared_xacts").fetchall():
                raw.execute(psycopg.sql.SQL("ROLLBACK PREPARED {}").format(gid))
    assert value not in _rows_in_t(dsn)


@pytest.mark.parametrize("statement", ["insert", "select"])
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_log_closed_while_a_statement_is_judged(dsn, tmp_path, kind, statement):
    """The log closes after a statement passed the first audit check but before it was sent
    (its analysis takes ~100 ms: a 20,000-item IN list): either close() sees it in flight and
    records it, or it is refused before it is sent. Never kept or read unrecorded."""
    items = ",".join(str(i) for i in range(20_000))
    if statement == "insert":
        text = f"INSERT INTO t VALUES (CASE WHEN 1 IN ({items}) THEN 3300 END)"
    else:
        text = f"SELECT 3300 WHERE 1 IN ({items})"
    log = AuditLog.open(tmp_path / "audit.jsonl")
    conn = await _connect(kind, dsn, log, True)
    closer = threading.Timer(0.01, log.close)
    rows: Any = None
    cur = conn.cursor()
    try:
        closer.start()
        try:
            await cur.execute(text) if kind == "async" else cur.execute(text)
        except errors.AuditUnavailable:
            pass
        try:  # what the cursor holds, refused or not
            rows = await cur.fetchall() if kind == "async" else cur.fetchall()
        except (psycopg.ProgrammingError, errors.AuditUnavailable):
            rows = None
    finally:
        closer.join()
        await _close(kind, conn)
    records = [rec for rec in _statement_records(log.path)
               if "IN" in rec["statement"]["normalized"]]
    if statement == "insert":
        kept = 3300 in _rows_in_t(dsn)
        assert not kept or [r["outcome"]["outcome"] for r in records] in (["ok"], ["unfinished"])
    elif rows:
        assert [r["outcome"]["outcome"] for r in records] in (["ok"], ["unfinished"])
    verify(log.path, log.key.public_key())


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_connection_closed_under_a_running_statement_records_it(dsn, tmp_path, kind):
    """Another thread (or task) closes the connection while its INSERT waits on a lock, then
    closes the log at once. The server's backend still runs the INSERT once the lock is gone
    and commits it: the record says so is unknown (``unfinished``), never missing."""
    log = AuditLog.open(tmp_path / "audit.jsonl")
    conn = await _connect(kind, dsn, log, True)
    value = 3400 + (kind == "async")
    holder = _hold_lock(dsn, 0.6)
    if kind == "sync":
        def insert() -> None:
            with pytest.raises(psycopg.OperationalError):
                conn.execute(INSERT, (value,))

        th = threading.Thread(target=insert)
        th.start()
        time.sleep(0.2)
        conn.close()
        log.close(grace=1.0)
        th.join(10)
    else:
        import asyncio

        async def insert() -> None:
            with pytest.raises(psycopg.OperationalError):
                await conn.execute(INSERT, (value,))

        task = asyncio.create_task(insert())
        await asyncio.sleep(0.2)
        await conn.close()
        log.close(grace=1.0)  # (no await in between: the task has not seen the close)
        await asyncio.wait_for(task, 10)
    holder.join()
    for _ in range(100):  # the backend commits once the lock is released
        if value in _rows_in_t(dsn):
            break
        time.sleep(0.05)
    assert value in _rows_in_t(dsn)
    assert _outcomes(log.path, "INSERT INTO t VALUES ($1)") == ["unfinished"]
