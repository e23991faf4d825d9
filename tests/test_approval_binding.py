"""Approvals bound to what runs (attack F7, F8): every execution an approval lets through is
one the approver was shown and approved.

* ``executemany``: psycopg converts the query once and only dumps the later parameter sets;
  an approval is bound to the whole sequence of executions (each one's parameters, and its
  text for ClientCursor) and every execution is checked against it (sync, async, pipeline,
  ``returning=True``). A sequence of one is the same statement as ``execute()``.
* ``EXECUTE p`` / ``FETCH c``: the approval is bound to the body the name resolves to on the
  session (shown to the approver), and to the objects the names resolve to; a body swapped
  after the approval (DEALLOCATE + PREPARE under the same name) needs a new approval.
* async ``executemany`` / ``stream`` / ``copy`` wait for a decision in wait mode as the sync
  statement hook and async ``execute`` do.

Effects are read from a separate raw superuser connection.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import Any

import psycopg
import pytest

import governed_db
from governed_db import Identity, errors
from governed_db.policy import parse_policy

SERVICE = Identity("etl", "service")
ALICE = Identity("alice", "human")
DELETE = "DELETE FROM orders WHERE id = %s"
RULE = ("statement.require-approval",)


def _policy(extra: str = "") -> governed_db.Policy:
    return parse_policy(f"""
[[rules]]
id = "statement.require-approval"
level = "approval"
kinds = ["DELETE", "UPDATE", "INSERT"]
tables = ["orders"]
{extra}""")


class Driver:
    """One scenario on the sync or the async API (awaits what the async API returns)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.loop = asyncio.new_event_loop() if kind == "async" else None
        self.conns: list[Any] = []

    def run(self, value: Any) -> Any:
        if self.loop is not None and inspect.isawaitable(value):
            return self.loop.run_until_complete(value)
        return value

    def connect(self, dsn: str, policy: Any, audit: Any, **kw: Any) -> Any:
        cls = governed_db.AsyncConnection if self.kind == "async" else governed_db.Connection
        kw.setdefault("autocommit", True)
        conn = self.run(cls.connect(dsn, identity=SERVICE, policy=policy, audit=audit, **kw))
        self.conns.append(conn)
        return conn

    def execute(self, conn: Any, query: str, params: Any = None) -> Any:
        return self.run(conn.execute(query, params))

    def executemany(self, conn: Any, query: str, seq: Any, *, returning: bool = False,
                    pipeline: bool = False) -> list[Any]:
        async def amany() -> list[Any]:
            cur = conn.cursor()
            if pipeline:
                async with conn.pipeline():
                    await cur.executemany(query, seq, returning=returning)
            else:
                await cur.executemany(query, seq, returning=returning)
            out = []
            while returning:
                out.extend(await cur.fetchall())
                if not cur.nextset():
                    break
            return out

        if self.kind == "async":
            return self.run(amany())
        cur = conn.cursor()
        if pipeline:
            with conn.pipeline():
                cur.executemany(query, seq, returning=returning)
        else:
            cur.executemany(query, seq, returning=returning)
        out = []
        while returning:
            out.extend(cur.fetchall())
            if not cur.nextset():
                break
        return out

    def close(self) -> None:
        for conn in self.conns:
            self.run(conn.close())
        if self.loop is not None:
            self.loop.close()


@pytest.fixture(params=["sync", "async"])
def drv(request: pytest.FixtureRequest):
    d = Driver(request.param)
    yield d
    d.close()


def _ids(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as c:
        return [r[0] for r in c.execute("SELECT id FROM orders ORDER BY id").fetchall()]


def _seed(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("INSERT INTO orders (id, user_id, amount) SELECT g, 1001, g FROM"
                  " generate_series(3, 9) g")


def _approve(policy: Any, rid: str) -> dict[str, Any]:
    return governed_db._config.approvals(policy).decide(rid, ALICE, approve=True, policy=policy)


def _request(drv: Driver, fn: Any) -> errors.ApprovalRequired:
    with pytest.raises(errors.ApprovalRequired) as ei:
        drv.run(fn())
    assert ei.value.rule_ids == RULE
    return ei.value


# -- F7: executemany ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["plain", "returning", "pipeline"])
def test_approval_of_one_execution_does_not_cover_more(drv, dsn, audit, shape):
    _seed(dsn)
    policy = _policy()
    conn = drv.connect(dsn, policy, audit)
    sql = DELETE + (" RETURNING id" if shape == "returning" else "")
    first = _request(drv, lambda: conn.execute(sql, [5]))
    _approve(policy, first.request_id)
    store = governed_db._config.approvals(policy)

    def many() -> Any:
        return drv.executemany(conn, sql, [[5], [6], [7]], returning=shape == "returning",
                               pipeline=shape == "pipeline")

    # The approval of (5) is not an approval of (5), (6), (7): nothing ran, it is kept.
    seq = _request(drv, many)
    assert seq.request_id != first.request_id
    assert _ids(dsn) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert store.get(first.request_id)["status"] == "approved"
    shown = store.get(seq.request_id)
    assert "3 executions" in shown["statement"] and "3 executions" in shown["summary"]
    # Approved as a whole: the sequence runs once, every execution of it.
    _approve(policy, seq.request_id)
    rows = many()
    assert _ids(dsn) == [1, 2, 3, 4, 8, 9]
    if shape == "returning":
        assert sorted(rows) == [(5,), (6,), (7,)]
    assert store.get(seq.request_id)["status"] == "used"
    # The single execution's approval is still unused, and still covers only itself.
    assert store.get(first.request_id)["status"] == "approved"
    again = _request(drv, lambda: drv.executemany(conn, sql, [[8], [9]],
                                                  pipeline=shape == "pipeline"))
    assert again.request_id not in (first.request_id, seq.request_id)
    assert _ids(dsn) == [1, 2, 3, 4, 8, 9]
    drv.run(conn.close())


def test_sequence_approval_is_bound_to_every_parameter_set(drv, dsn, audit):
    """Same first set, same count, another later set: a new request; an iterator is taken
    as the sequence it yields; a sequence of one is the statement execute() runs."""
    _seed(dsn)
    policy = _policy()
    conn = drv.connect(dsn, policy, audit)
    seq = _request(drv, lambda: drv.executemany(conn, DELETE, iter([[3], [4]])))
    _approve(policy, seq.request_id)
    other = _request(drv, lambda: drv.executemany(conn, DELETE, [[3], [5]]))
    assert other.request_id != seq.request_id
    assert _ids(dsn) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    drv.executemany(conn, DELETE, ([3], [4]))  # the approved sequence (any container)
    assert _ids(dsn) == [1, 2, 5, 6, 7, 8, 9]
    one = _request(drv, lambda: conn.execute(DELETE, [6]))
    _approve(policy, one.request_id)
    drv.executemany(conn, DELETE, [[6]])
    assert _ids(dsn) == [1, 2, 5, 7, 8, 9]
    drv.run(conn.close())


def test_client_cursor_sequence_binds_each_text(drv, dsn, audit):
    """ClientCursor inlines each parameter set into the text it sends: every text is bound."""
    _seed(dsn)
    policy = _policy()
    cls = governed_db.AsyncClientCursor if drv.kind == "async" else governed_db.ClientCursor
    conn = drv.connect(dsn, policy, audit, cursor_factory=cls)
    first = _request(drv, lambda: conn.execute(DELETE, [5]))
    _approve(policy, first.request_id)
    seq = _request(drv, lambda: drv.executemany(conn, DELETE, [[5], [6]]))
    assert _ids(dsn) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    _approve(policy, seq.request_id)
    drv.executemany(conn, DELETE, [[5], [6]])
    assert _ids(dsn) == [1, 2, 3, 4, 7, 8, 9]
    drv.run(conn.close())


# -- F8: the body EXECUTE resolves to ------------------------------------------------------------


def test_execute_approval_is_bound_to_the_prepared_body(drv, dsn, audit):
    """Approve `EXECUTE p` for one body; `DEALLOCATE p; PREPARE p AS <another>; EXECUTE p`
    is a new request (nothing ran); the approver saw the body; the approved body runs once."""
    _seed(dsn)
    policy = _policy()
    conn = drv.connect(dsn, policy, audit)
    drv.execute(conn, "PREPARE p AS DELETE FROM orders WHERE id = 5")
    first = _request(drv, lambda: conn.execute("EXECUTE p"))
    store = governed_db._config.approvals(policy)
    shown = store.get(first.request_id)["statement"]
    assert shown.startswith("EXECUTE p")
    assert "prepared statement p is: PREPARE p AS DELETE FROM orders WHERE id = $1" in shown
    _approve(policy, first.request_id)
    drv.execute(conn, "DEALLOCATE p")
    drv.execute(conn, "PREPARE p AS DELETE FROM orders WHERE id BETWEEN 6 AND 9")
    swapped = _request(drv, lambda: conn.execute("EXECUTE p"))
    assert swapped.request_id != first.request_id
    assert "BETWEEN $1 AND $2" in store.get(swapped.request_id)["statement"]
    assert _ids(dsn) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert store.get(first.request_id)["status"] == "approved"
    # Same shape, another literal (the normalized body shown is the same): a new request.
    drv.execute(conn, "DEALLOCATE p")
    drv.execute(conn, "PREPARE p AS DELETE FROM orders WHERE id = 6")
    literal = _request(drv, lambda: conn.execute("EXECUTE p"))
    assert literal.request_id not in (first.request_id, swapped.request_id)
    assert _ids(dsn) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    # The approved body again (prepared anew, same text): its approval runs it, once.
    drv.execute(conn, "DEALLOCATE p")
    drv.execute(conn, "PREPARE p AS DELETE FROM orders WHERE id = 5")
    drv.execute(conn, "EXECUTE p")
    assert _ids(dsn) == [1, 2, 3, 4, 6, 7, 8, 9]
    assert store.get(first.request_id)["status"] == "used"


def test_approval_is_bound_to_the_view_definition(drv, dsn, audit):
    """The same text through a view replaced after the approval: a new request."""
    _seed(dsn)
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("CREATE VIEW big_orders AS SELECT * FROM orders WHERE id = 5")
    policy = parse_policy("""
[[rules]]
id = "statement.require-approval"
level = "approval"
kinds = ["DELETE"]
""")
    conn = drv.connect(dsn, policy, audit)
    sql = "DELETE FROM big_orders WHERE amount > 0"
    first = _request(drv, lambda: conn.execute(sql))
    _approve(policy, first.request_id)
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("CREATE OR REPLACE VIEW big_orders AS SELECT * FROM orders WHERE id > 2")
    conn._governor.mark_catalog_stale()  # (as by age, or DDL of this session)
    swapped = _request(drv, lambda: conn.execute(sql))
    assert swapped.request_id != first.request_id
    assert _ids(dsn) == [1, 2, 3, 4, 5, 6, 7, 8, 9]


# -- async wait mode on every path ------------------------------------------------------------


@pytest.mark.parametrize("op", ["executemany", "stream", "copy"])
async def test_async_paths_wait_for_the_decision(dsn, audit, op):
    """In wait mode the async executemany/stream/copy wait for the decision (without blocking
    the event loop) and then run once, as the sync statement hook and async execute() do."""
    _seed(dsn)
    policy = parse_policy("""
[[rules]]
id = "statement.require-approval"
level = "approval"
kinds = ["DELETE", "SELECT", "COPY"]
tables = ["orders"]

[approvals]
wait_seconds = 20
""")
    store = governed_db._config.approvals(policy)
    decided: list[str] = []

    def approver() -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not decided:
            pending = store.list("pending")
            if pending:
                store.decide(pending[0]["id"], ALICE, approve=True, policy=policy)
                decided.append(pending[0]["id"])
            time.sleep(0.1)

    helper = threading.Thread(target=approver)
    helper.start()
    conn = await governed_db.AsyncConnection.connect(dsn, identity=SERVICE, policy=policy,
                                                     audit=audit, autocommit=True)
    try:
        cur = conn.cursor()
        if op == "executemany":
            await cur.executemany(DELETE, [[5], [6]])
            assert _ids(dsn) == [1, 2, 3, 4, 7, 8, 9]
        elif op == "stream":
            got = [r async for r in cur.stream("SELECT id FROM orders WHERE id < 4 ORDER BY id")]
            assert got == [(1,), (2,), (3,)]
        else:
            async with cur.copy("COPY (SELECT id FROM orders WHERE id < 3 ORDER BY id)"
                                " TO STDOUT") as copy:
                data = b"".join([bytes(b) async for b in copy])
            assert data == b"1\n2\n"
    finally:
        await conn.close()
        helper.join()
    assert len(decided) == 1 and store.get(decided[0])["status"] == "used"
