"""Statements that change the server, not rows, for services and people (default profile).

Found by an attacker (F10): a service ran LOAD (native code in the backend), VACUUM FULL (a
table rewrite under an ACCESS EXCLUSIVE lock, while CLUSTER needs approval), CHECKPOINT, a
blocking shared advisory lock, and settings that change what a judged statement means at the
server (``transform_null_equals`` makes ``WHERE x = NULL`` match NULLs). Each class is refused
or needs approval, in every spelling; effects are checked from a raw superuser connection or
the backend itself.
"""

from __future__ import annotations

import psycopg
import pytest

import governed_db
from governed_db import Identity, errors

SERVICE = Identity("etl", "service")


async def _run(mode: str, dsn: str, sql: str, then: str | None = None):
    """Run ``sql`` governed as SERVICE; return (exception or None, rows of ``then``)."""
    kw = {"identity": SERVICE, "autocommit": True}
    exc = None
    if mode == "sync":
        with governed_db.connect(dsn, **kw) as conn:
            try:
                conn.execute(sql)
            except errors.StatementDenied as e:
                exc = e
            rows = conn.execute(then).fetchall() if then else None
        return exc, rows
    async with await governed_db.AsyncConnection.connect(dsn, **kw) as conn:
        try:
            await conn.execute(sql)
        except errors.StatementDenied as e:
            exc = e
        rows = await (await conn.execute(then)).fetchall() if then else None
    return exc, rows


def _relfilenode(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as raw:
        return raw.execute("SELECT relfilenode FROM pg_class WHERE oid = 'users'::regclass"
                           ).fetchone()[0]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql", ["LOAD 'auto_explain'", "load '$libdir/auto_explain'",
                                 "LOAD 'plpgsql'", "SELECT 1; LOAD 'auto_explain'"])
async def test_load_needs_approval(dsn, mode, sql):
    exc, rows = await _run(mode, dsn, sql,
                           "SELECT current_setting('auto_explain.log_min_duration', true)")
    assert isinstance(exc, errors.ApprovalRequired)
    assert exc.rule_ids == ("statement.disallow-ddl",) and "LOAD" in str(exc)
    assert rows == [(None,)]  # the library was not loaded into this backend


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql", ["VACUUM FULL users", "VACUUM (FULL, FREEZE) users",
                                 "vacuum (verbose false, full true) users",
                                 "VACUUM (FULL on) users", "VACUUM FULL"])
async def test_vacuum_full_needs_approval(dsn, mode, sql):
    before = _relfilenode(dsn)
    exc, _ = await _run(mode, dsn, sql)
    assert isinstance(exc, errors.ApprovalRequired)
    assert exc.rule_ids == ("statement.disallow-ddl",)
    assert _relfilenode(dsn) == before  # not rewritten


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql", ["VACUUM users", "VACUUM (FULL false) users",
                                 "VACUUM (FULL off, ANALYZE) users", "ANALYZE users"])
async def test_plain_vacuum_and_analyze_run(dsn, mode, sql):
    before = _relfilenode(dsn)
    exc, _ = await _run(mode, dsn, sql)
    assert exc is None
    assert _relfilenode(dsn) == before


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_checkpoint_needs_approval(dsn, mode):
    def requested() -> int:
        with psycopg.connect(dsn, autocommit=True) as raw:
            return raw.execute("SELECT checkpoints_req FROM pg_stat_bgwriter").fetchone()[0]

    before = requested()
    exc, _ = await _run(mode, dsn, "CHECKPOINT")
    assert isinstance(exc, errors.ApprovalRequired)
    assert exc.rule_ids == ("statement.disallow-ddl",)
    assert requested() == before


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql,name", [
    ("SET transform_null_equals = on", "transform_null_equals"),
    ("SET SESSION transform_null_equals TO true", "transform_null_equals"),
    ("SELECT set_config('transform_null_equals', 'on', false)", "transform_null_equals"),
    ("SET array_nulls = off", "array_nulls"),
    ("SET plpgsql.variable_conflict = use_column", "plpgsql.variable_conflict"),
])
async def test_settings_that_change_what_a_statement_means(dsn, mode, sql, name):
    exc, rows = await _run(mode, dsn, sql, f"SELECT current_setting('{name}', true)")
    assert exc is not None
    assert set(exc.rule_ids) & {"session.disallow-security-settings", "function.deny"}
    default = {"transform_null_equals": "off", "array_nulls": "on"}.get(name)
    assert rows == [(default,)]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("sql", ["SELECT pg_advisory_lock_shared(4711)",
                                 "SELECT pg_advisory_xact_lock_shared(4711)",
                                 "SELECT pg_catalog.pg_advisory_lock_shared(4711, 1)",
                                 "SELECT pg_advisory_lock(4711)"])
async def test_blocking_advisory_locks_are_denied(dsn, mode, sql):
    exc, rows = await _run(mode, dsn, sql,
                           "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                           " AND pid = pg_backend_pid()")
    assert exc is not None and exc.rule_ids == ("function.deny",)
    assert rows == [(0,)]


async def test_try_advisory_locks_never_wait_and_stay_allowed(dsn):
    """The pg_try_ forms return at once (a job queue's "claim if free"): allowed."""
    exc, rows = await _run("sync", dsn, "SELECT pg_try_advisory_lock(4712)",
                           "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                           " AND pid = pg_backend_pid()")
    assert exc is None and rows == [(1,)]
