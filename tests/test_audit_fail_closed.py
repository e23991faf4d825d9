"""The audit writer fails closed: a writer that fails or stops makes the next statement raise
``AuditUnavailable`` naming the cause, on every execute path, sync and async, in the default
batched mode as in strict mode; Identity fields are checked when the identity is made.

Faults are caused through the public surface: a secondary sink (``AuditLog.sinks``) that raises,
an identity attribute that cannot be turned into text, a sink that breaks the writer loop."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

import governed_db
from governed_db import Identity, errors
from governed_db.audit import AuditLog, iter_records, verify

SVC = Identity("fail-closed-svc", "service")
PATHS = ("execute", "connection_execute", "executemany", "copy", "stream", "server_cursor",
         "pipeline")


class FlakySink:
    """A secondary sink that raises a non-OSError while ``broken`` (a bug, a lost service)."""

    def __init__(self) -> None:
        self.backlog: list[tuple[dict[str, Any], bytes]] = []
        self.broken = False
        self.lines: list[bytes] = []

    def flush(self) -> None:
        if self.broken:
            raise RuntimeError("sink down")
        self.lines.extend(line for _, line in self.backlog)
        self.backlog = []

    def close(self) -> None:
        return None


class LoopBreakingSink:
    """A sink whose backlog cannot be read: the writer loop itself fails (thread stops)."""

    def __init__(self) -> None:
        self.armed = False
        self._backlog: list[Any] = []

    @property
    def backlog(self) -> list[Any]:
        if self.armed:
            raise LookupError("backlog unreadable")
        return self._backlog

    @backlog.setter
    def backlog(self, value: list[Any]) -> None:
        self._backlog = value

    def flush(self) -> None:
        self._backlog = []

    def close(self) -> None:
        return None


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for this value")


def _rows_in_t(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as raw:  # a separate, ungoverned connection: what the server has
        return sorted(r[0] for r in raw.execute("SELECT a FROM t").fetchall())


def _run_sync(conn: Any, path: str, value: int) -> None:
    if path == "execute":
        conn.cursor().execute("INSERT INTO t VALUES (%s)", (value,))
    elif path == "connection_execute":
        conn.execute("INSERT INTO t VALUES (%s)", (value,))
    elif path == "executemany":
        conn.cursor().executemany("INSERT INTO t VALUES (%s)", [(value,), (value + 1,)])
    elif path == "copy":
        with conn.cursor().copy("COPY t (a) FROM STDIN") as cp:
            cp.write_row((value,))
    elif path == "stream":
        list(conn.cursor().stream("SELECT a FROM t WHERE a = %s", (value,)))
    elif path == "server_cursor":
        with conn.cursor("sc", withhold=True) as cur:
            cur.execute("SELECT a FROM t WHERE a > %s", (value,))
            cur.fetchall()
    elif path == "pipeline":
        with conn.pipeline():
            conn.execute("INSERT INTO t VALUES (%s)", (value,))
    else:  # pragma: no cover
        raise AssertionError(path)


async def _run_async(conn: Any, path: str, value: int) -> None:
    if path == "execute":
        await conn.cursor().execute("INSERT INTO t VALUES (%s)", (value,))
    elif path == "connection_execute":
        await conn.execute("INSERT INTO t VALUES (%s)", (value,))
    elif path == "executemany":
        await conn.cursor().executemany("INSERT INTO t VALUES (%s)", [(value,), (value + 1,)])
    elif path == "copy":
        async with conn.cursor().copy("COPY t (a) FROM STDIN") as cp:
            await cp.write_row((value,))
    elif path == "stream":
        async for _ in conn.cursor().stream("SELECT a FROM t WHERE a = %s", (value,)):
            pass
    elif path == "server_cursor":
        async with conn.cursor("sc", withhold=True) as cur:
            await cur.execute("SELECT a FROM t WHERE a > %s", (value,))
            await cur.fetchall()
    elif path == "pipeline":
        async with conn.pipeline():
            await conn.execute("INSERT INTO t VALUES (%s)", (value,))
    else:  # pragma: no cover
        raise AssertionError(path)


def _statement_records(path: Path) -> list[dict[str, Any]]:
    return [rec for _, rec, _ in iter_records(path) if rec and rec.get("type") == "statement"]


def _wait_until_runs(run: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            run()
            return
        except errors.AuditUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("path", PATHS)
def test_failing_sink_refuses_next_statement_sync(dsn, tmp_path, path):
    log = AuditLog.open(tmp_path / "audit.jsonl")  # default batched durability
    sink = FlakySink()
    log.sinks.append(sink)
    with governed_db.connect(dsn, identity=SVC, audit=log, autocommit=True) as conn:
        conn.execute("SELECT 1")
        log.flush()
        sink.broken = True
        conn.execute("SELECT 2")  # batched: returns once queued; the writer then fails
        with pytest.raises(errors.AuditUnavailable, match="FlakySink: RuntimeError: sink down"):
            log.flush(timeout=5)
        with pytest.raises(errors.AuditUnavailable,
                           match=r"cannot be written \(audit sink FlakySink: RuntimeError"):
            _run_sync(conn, path, 7)
        assert 7 not in _rows_in_t(dsn)  # refused before anything reached the server
        sink.broken = False  # the sink comes back: its backlog is retried, not repeated
        _wait_until_runs(lambda: conn.execute("SELECT 3"))
        _run_sync(conn, path, 20)
        log.flush()
    log.close()
    verify(log.path, log.key.public_key())
    ids = [rec["id"] for rec in _statement_records(log.path)]
    assert len(ids) == len(set(ids)) >= 4
    assert len(sink.lines) == len(set(sink.lines)) == sum(1 for _ in iter_records(log.path))


@pytest.mark.parametrize("path", PATHS)
async def test_failing_sink_refuses_next_statement_async(dsn, tmp_path, path):
    log = AuditLog.open(tmp_path / "audit.jsonl")
    sink = FlakySink()
    log.sinks.append(sink)
    conn = await governed_db.AsyncConnection.connect(dsn, identity=SVC, audit=log,
                                                     autocommit=True)
    try:
        await conn.execute("SELECT 1")
        log.flush()
        sink.broken = True
        await conn.execute("SELECT 2")
        with pytest.raises(errors.AuditUnavailable, match="FlakySink: RuntimeError: sink down"):
            log.flush(timeout=5)
        with pytest.raises(errors.AuditUnavailable,
                           match=r"cannot be written \(audit sink FlakySink: RuntimeError"):
            await _run_async(conn, path, 7)
        assert 7 not in _rows_in_t(dsn)
    finally:
        await conn.close()
        sink.broken = False
        log.close()
    verify(log.path, log.key.public_key())


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_closed_log_refuses_every_path_before_the_server(dsn, tmp_path, kind, path):
    """The log a connection records to is closed (the application closed the log it passed,
    close_process_logs(), exit): the next statement on every path is refused before anything
    reaches the server, and the connection's transaction commits nothing unrecorded."""
    log = AuditLog.open(tmp_path / "audit.jsonl")
    value = 300 + PATHS.index(path) * 10 + (kind == "async")
    if kind == "sync":
        conn: Any = governed_db.connect(dsn, identity=SVC, audit=log, autocommit=True)
        try:
            conn.execute("SELECT 1")
            log.close()
            with pytest.raises(errors.AuditUnavailable, match="the audit log is closed"):
                _run_sync(conn, path, value)
        finally:
            conn.close()  # (closing never fails because the audit did)
    else:
        conn = await governed_db.AsyncConnection.connect(dsn, identity=SVC, audit=log,
                                                         autocommit=True)
        try:
            await conn.execute("SELECT 1")
            log.close()
            with pytest.raises(errors.AuditUnavailable, match="the audit log is closed"):
                await _run_async(conn, path, value)
        finally:
            await conn.close()
    assert value not in _rows_in_t(dsn) and value + 1 not in _rows_in_t(dsn)
    verify(log.path, log.key.public_key())


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_closed_log_commits_nothing_of_an_open_transaction(dsn, tmp_path, kind):
    log = AuditLog.open(tmp_path / "audit.jsonl")
    if kind == "sync":
        conn = governed_db.connect(dsn, identity=SVC, audit=log)
        conn.execute("INSERT INTO t VALUES (%s)", (391,))
        log.close()
        with pytest.raises(errors.AuditUnavailable):
            conn.execute("INSERT INTO t VALUES (%s)", (392,))
        with pytest.raises(errors.AuditUnavailable):
            conn.commit()
        conn.close()
    else:
        conn = await governed_db.AsyncConnection.connect(dsn, identity=SVC, audit=log)
        await conn.execute("INSERT INTO t VALUES (%s)", (393,))
        log.close()
        with pytest.raises(errors.AuditUnavailable):
            await conn.execute("INSERT INTO t VALUES (%s)", (394,))
        with pytest.raises(errors.AuditUnavailable):
            await conn.commit()
        await conn.close()
    assert not {391, 392, 393, 394} & set(_rows_in_t(dsn))


class PrintsOnce:
    """str() works when the identity is made (checked there), fails afterwards."""

    def __init__(self) -> None:
        self.calls = 0

    def __str__(self) -> str:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("no text for this value")
        return "r1"


def _unbuildable_identity() -> Identity:
    # Checked at construction (attributes are read-only since attack G7); the value's own
    # str() fails later, so only the writer can find out: it must not stop silently.
    return Identity("odd-svc", "service", attributes={"run": PrintsOnce()})


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_record_that_cannot_be_built_fails_closed_for_good(dsn, tmp_path, kind):
    log = AuditLog.open(tmp_path / "audit.jsonl")
    bad = _unbuildable_identity()
    if kind == "sync":
        conn: Any = governed_db.connect(dsn, identity=SVC, audit=log, autocommit=True)
        conn.execute("SELECT 1")
        with governed_db.acting_as(bad):
            conn.execute("SELECT 2")  # ran; its record cannot be built
    else:
        conn = await governed_db.AsyncConnection.connect(dsn, identity=SVC, audit=log,
                                                         autocommit=True)
        await conn.execute("SELECT 1")
        with governed_db.acting_as(bad):
            await conn.execute("SELECT 2")
    with pytest.raises(errors.AuditUnavailable, match="could not be built"):
        log.flush(timeout=5)
    for value in (31, 32):  # sticky: a missing record is not forgotten by the next write
        with pytest.raises(errors.AuditUnavailable,
                           match=r"audit writer .* failed \(the record of a statement could not"
                                 r" be built or serialized: RuntimeError: no text"):
            if kind == "sync":
                conn.execute("INSERT INTO t VALUES (%s)", (value,))
            else:
                await conn.execute("INSERT INTO t VALUES (%s)", (value,))
    assert not {31, 32} & set(_rows_in_t(dsn))
    if kind == "sync":
        conn.close()
    else:
        await conn.close()
    log.close()
    verify(log.path, log.key.public_key())  # the chain is intact: the gap is declared
    recs = [rec for _, rec, _ in iter_records(log.path) if rec]
    failed = [rec for rec in recs if rec["type"] == "record_failed"]
    assert len(failed) == 1 and "sig" in failed[0]
    assert failed[0]["record_type"] == "statement" and failed[0]["error"] == "RuntimeError"
    assert failed[0]["statement_id"]
    assert len(_statement_records(log.path)) == 1  # SELECT 1; nothing recorded after it ran


def test_strict_mode_statement_whose_record_fails_raises_itself(dsn, tmp_path):
    log = AuditLog.open(tmp_path / "audit.jsonl", settings={"durability": "strict"})
    conn = governed_db.connect(dsn, identity=SVC, audit=log, autocommit=True)
    conn.execute("SELECT 1")
    with governed_db.acting_as(_unbuildable_identity()):
        with pytest.raises(errors.AuditUnavailable, match="could not be built"):
            conn.execute("SELECT 2")
    with pytest.raises(errors.AuditUnavailable, match="could not be built"):
        conn.execute("SELECT 3")
    with pytest.raises(errors.AuditUnavailable, match="could not be built"):
        conn.commit()  # strict: nothing returns as if recorded, a commit record neither
    conn.close()  # closing never fails because the audit did
    log.close()
    verify(log.path, log.key.public_key())


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_writer_thread_that_stops_refuses_statements(dsn, tmp_path, kind):
    log = AuditLog.open(tmp_path / "audit.jsonl")
    sink = LoopBreakingSink()
    log.sinks.append(sink)
    if kind == "sync":
        conn: Any = governed_db.connect(dsn, identity=SVC, audit=log, autocommit=True)
        conn.execute("SELECT 1")
    else:
        conn = await governed_db.AsyncConnection.connect(dsn, identity=SVC, audit=log,
                                                         autocommit=True)
        await conn.execute("SELECT 1")
    log.flush()
    sink.armed = True
    if kind == "sync":
        conn.execute("SELECT 2")
    else:
        await conn.execute("SELECT 2")
    with pytest.raises(errors.AuditUnavailable,
                       match="writer thread stopped: LookupError: backlog unreadable"):
        log.flush(timeout=5)  # the writer is gone: flush does not wait out its timeout
    deadline = time.monotonic() + 5
    while log._thread.is_alive() and time.monotonic() < deadline:  # noqa: SLF001 - the claim
        time.sleep(0.01)
    assert not log._thread.is_alive()  # noqa: SLF001
    for _ in range(3):  # not one statement runs unrecorded (batched mode: no 100k backlog)
        with pytest.raises(errors.AuditUnavailable, match="writer thread stopped"):
            if kind == "sync":
                conn.execute("INSERT INTO t VALUES (41)")
            else:
                await conn.execute("INSERT INTO t VALUES (41)")
    assert 41 not in _rows_in_t(dsn)
    if kind == "sync":
        conn.close()
    else:
        await conn.close()
    log.close()


@pytest.mark.parametrize("kwargs, message", [
    ({"purpose": b"weekly"}, "purpose must be a string or None, not bytes"),
    ({"on_behalf_of": 42}, "on_behalf_of must be a string or None, not int"),
    ({"model": ["gpt"]}, "model must be a string or None, not list"),
    ({"roles": "support"}, r"roles must be a sequence of role names .*not a single str"),
    ({"roles": [b"support"]}, "roles must be non-empty strings, not bytes"),
    ({"roles": 3}, "roles must be a sequence of role names, not int"),
    ({"attributes": {1: "x"}}, "attribute names must be strings, not int"),
    ({"attributes": {"run": b"r1"}}, "attribute 'run' is bytes"),
    ({"attributes": {"run": Unprintable()}}, "attribute 'run' cannot be recorded"),
    ({"attributes": 5}, "attributes must be a mapping"),
])
def test_identity_fields_validate_at_construction(kwargs, message):
    with pytest.raises(errors.PolicyError, match=message):
        Identity("bot", "ai_agent", **kwargs)
    with pytest.raises(errors.PolicyError, match=message):  # evolve() checks the same
        Identity("bot", "ai_agent").evolve(**kwargs)


def test_identity_valid_fields_still_accepted():
    ident = Identity("bot", "ai_agent", purpose="p", on_behalf_of="alice", model="m",
                     roles=["support"], attributes={"tool_call_id": "c1", "n": 3, "x": None})
    assert ident.roles == ("support",)
    assert ident.to_record()["attributes"] == {"tool_call_id": "c1", "n": 3, "x": None}
