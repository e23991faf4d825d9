"""Bypass matrix: one case per way a statement reaches the server or a row reaches the caller.

Each case runs a denied statement (the statement hook must stop it) and a read of a sensitive
column (the row hook must mask it), asserting the exact rule and strategy.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg.rows import class_row, dict_row, namedtuple_row

import governed_db
from governed_db import errors

DENIED = "DELETE FROM orders"  # unbounded DELETE: denied for every identity
READ = "SELECT id, email FROM users ORDER BY id"


def _email(row):
    return row["email"] if isinstance(row, dict) else row[1]


SYNC_PATHS = {
    "execute": lambda c, q: c.cursor().execute(q).fetchall(),
    "connection.execute": lambda c, q: c.execute(q).fetchall(),
    "client_cursor": lambda c, q: governed_db.ClientCursor(c).execute(q).fetchall(),
    "raw_cursor": lambda c, q: governed_db.RawCursor(c).execute(q).fetchall(),
    "fetchone": lambda c, q: [c.execute(q).fetchone()],
    "fetchmany": lambda c, q: c.execute(q).fetchmany(5),
    "iteration": lambda c, q: list(c.execute(q)),
    "stream": lambda c, q: list(c.cursor().stream(q)),
    "server_cursor": lambda c, q: _server(c, q),
    "dict_row_before": lambda c, q: c.cursor(row_factory=dict_row).execute(q).fetchall(),
    "dict_row_after": lambda c, q: _after(c, q),
    "namedtuple_row": lambda c, q: [tuple(r) for r in c.cursor(row_factory=namedtuple_row).execute(q)],
    "results": lambda c, q: [r for cur in c.cursor().execute(q + "; SELECT 1").results()
                              for r in cur.fetchall()][:-1] if q == READ else c.execute(q),
    "pipeline": lambda c, q: _pipeline(c, q),
    "class_row": lambda c, q: [(r.id, r.email) for r in
                               c.cursor(row_factory=class_row(_User)).execute(q)],
    "pgresult_get_value": lambda c, q: _raw_values(c, q),
    "sql_declare_fetch": lambda c, q: _sql_cursor(c, q),
    "sql_prepare_execute": lambda c, q: _sql_prepared(c, q),
    "executemany_returning": lambda c, q: _executemany(c, q),
}


class _User:
    def __init__(self, id, email):  # noqa: A002 - column names
        self.id, self.email = id, email


def _raw_values(c, q):
    """``cursor.pgresult.get_value()``: raw libpq access to the current result."""
    cur = c.execute(q)
    res = cur.pgresult
    return [(res.get_value(i, 0), (res.get_value(i, 1) or b"").decode())
            for i in range(res.ntuples)]


def _sql_cursor(c, q):
    """DECLARE / FETCH issued as SQL text (not a psycopg server cursor)."""
    with c.transaction():
        c.execute(f"DECLARE sqlcur CURSOR FOR {q}")
        return c.execute("FETCH ALL FROM sqlcur").fetchall()


def _sql_prepared(c, q):
    c.execute(f"PREPARE sqlprep AS {q}")
    try:
        return c.execute("EXECUTE sqlprep").fetchall()
    finally:
        c.execute("DEALLOCATE sqlprep")


def _server(c, q):
    with c.transaction(), c.cursor(name="srv") as cur:
        cur.execute(q)
        return cur.fetchall()


def _after(c, q):
    cur = c.cursor()
    cur.execute(q)
    cur.row_factory = dict_row
    return cur.fetchall()


def _pipeline(c, q):
    with c.pipeline():
        cur = c.cursor()
        cur.execute(q)
    return cur.fetchall()


def _executemany(c, q):
    if q != READ:
        c.cursor().executemany(q + " WHERE true OR id = %s", [(1,), (2,)])
        return None
    cur = c.cursor()
    cur.executemany("SELECT id, email FROM users WHERE id = %s", [(1001,), (1002,)],
                    returning=True)
    rows = []
    while True:
        rows += cur.fetchall()
        if not cur.nextset():
            break
    return rows


@pytest.mark.parametrize("path", sorted(SYNC_PATHS))
def test_sync_path_statement_denied(human_conn, path):
    with pytest.raises(errors.StatementDenied) as info:
        SYNC_PATHS[path](human_conn, DENIED)
    # DECLARE ... FOR DELETE is not even valid SQL: denied as unparseable before the server.
    expected = "statement.parse-error" if path in ("server_cursor", "sql_declare_fetch") else \
        "statement.where.require.update-delete"
    assert expected in info.value.rule_ids
    assert human_conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 2


@pytest.mark.parametrize("path", sorted(SYNC_PATHS))
def test_sync_path_rows_masked(human_conn, path):
    rows = SYNC_PATHS[path](human_conn, READ)
    assert rows, "no rows came back"
    for row in rows:
        # Masked with the email strategy, or redacted whole where lineage failed closed.
        assert _email(row).startswith("****"), row
        assert "qem" not in repr(row)


UNMASK_EMAIL = """
[[masking.unmask]]
columns = ["users.email"]
roles = ["support"]
"""


@pytest.mark.parametrize("path", sorted(SYNC_PATHS))
def test_sync_path_cached_plan_is_per_identity(dsn, audit, path):
    """Each path run, in turn, for an identity that sees email in clear (an unmask grant) and
    one that does not, on one connection: the plan cached for the first never answers for
    the second (engine/cached_plan.py; same text, same connection, interleaved twice)."""
    from governed_db.policy import parse_policy

    support = governed_db.Identity("s1", "human", purpose="support", roles=("support",))
    plain = support.evolve(roles=())
    with governed_db.connect(dsn, identity=support, policy=parse_policy(UNMASK_EMAIL),
                             audit=audit, autocommit=True) as conn:
        for who, clear in ((support, True), (plain, False), (support, True), (plain, False),
                           (support, True), (plain, False)):
            with governed_db.acting_as(who):
                rows = SYNC_PATHS[path](conn, READ)
            assert rows, "no rows came back"
            for row in rows:
                email = _email(row)
                if clear:
                    assert "qem" in email, (who, row)
                else:
                    assert email.startswith("****") and "qem" not in repr(row), (who, row)
        if path in ("execute", "connection.execute", "fetchone", "fetchmany", "iteration"):
            assert conn.governor.cached_plans, "the repeated statement was never cached"


def test_copy_to_stdout_masked(human_conn):
    with human_conn.cursor().copy("COPY (SELECT id, email, ssn FROM users ORDER BY id) TO STDOUT") as cp:
        rows = list(cp.rows())
    assert rows[0][0] == "1001"
    assert rows[0][1] == "****@example.com"
    assert "qsn" not in rows[0][2]
    with human_conn.cursor().copy("COPY users (email) TO STDOUT") as cp:
        data = b"".join(bytes(b) for b in cp)
    assert b"qem" not in data and b"****@example.com" in data


def test_copy_program_denied(human_conn):
    with pytest.raises(errors.StatementDenied) as info:
        with human_conn.cursor().copy("COPY t FROM PROGRAM 'echo 7'"):
            pass
    assert info.value.rule_ids == ("statement.disallow-copy-program",) or \
        "statement.disallow-copy-program" in info.value.rule_ids


def test_reassigned_cursor_factory_stays_governed(human_conn):
    import psycopg

    class MyCursor(psycopg.Cursor):
        pass

    human_conn.cursor_factory = MyCursor
    cur = human_conn.cursor()
    assert isinstance(cur, MyCursor) and isinstance(cur, governed_db.Cursor.__mro__[1])
    assert cur.execute(READ).fetchone()[1].startswith("****@")
    with pytest.raises(errors.StatementDenied):
        human_conn.cursor().execute(DENIED)
    with pytest.raises(TypeError):
        human_conn.cursor_factory = dict


def test_opentelemetry_instrumented_connection_stays_governed(human_conn):
    otel = pytest.importorskip("opentelemetry.instrumentation.psycopg")
    conn = otel.PsycopgInstrumentor().instrument_connection(human_conn)
    assert conn.execute(READ).fetchone()[1].startswith("****@")
    with pytest.raises(errors.StatementDenied):
        conn.execute(DENIED)


def test_server_error_text_redacted(human_conn):
    import psycopg

    with pytest.raises(psycopg.errors.UniqueViolation) as info:
        human_conn.execute("INSERT INTO users (id, email) VALUES (%s, %s)", [1001, "x@y.com"])
    assert info.value.sqlstate == "23505"
    # 1001 and x@y.com are parameters (the application's values, not the statement's text)
    assert "1001" not in str(info.value) and "<redacted>" in str(info.value)
    assert info.value.diag.message_detail == "Key (id)=(<redacted>) already exists."
    with pytest.raises(psycopg.errors.InvalidTextRepresentation) as info2:
        human_conn.execute("SELECT %s::int", ["qem.alice@example.com"])
    assert "qem" not in str(info2.value) and "alice@" not in str(info2.value)


def test_ungoverned_connection_rejected_by_governed_cursor(dsn):
    import psycopg

    with psycopg.connect(dsn) as raw:
        with pytest.raises(governed_db.InterfaceError):
            governed_db.Cursor(raw)


ASYNC_PATHS = ["execute", "stream", "server_cursor", "dict_row_after", "copy"]


@pytest.mark.parametrize("path", ASYNC_PATHS)
async def test_async_paths(async_agent_conn, path):
    conn = async_agent_conn
    with pytest.raises(errors.StatementDenied):
        await conn.execute(DENIED)
    await conn.rollback()
    if path == "execute":
        rows = await (await conn.execute(READ)).fetchall()
    elif path == "stream":
        rows = [r async for r in conn.cursor().stream(READ)]
    elif path == "server_cursor":
        async with conn.transaction(), conn.cursor(name="asrv") as cur:
            await cur.execute(READ)
            rows = await cur.fetchall()
    elif path == "dict_row_after":
        cur = conn.cursor()
        await cur.execute(READ)
        cur.row_factory = dict_row
        rows = await cur.fetchall()
    else:
        # COPY is not in the agent allow-list of the default profile (contract).
        with pytest.raises(errors.StatementDenied) as info:
            async with conn.cursor().copy("COPY (SELECT id, email FROM users) TO STDOUT"):
                pass
        assert "statement.allowlist" in info.value.rule_ids
        return
    assert rows and all(_email(r).startswith("****@") for r in rows)


def test_returning_of_a_write_masked(human_conn):
    rows = human_conn.execute("UPDATE users SET name = name WHERE id = 1001"
                              " RETURNING id, email, ssn").fetchall()
    assert rows[0][1] == "****@example.com" and "qsn" not in rows[0][2]


@pytest.fixture
def leaky_function(dsn):
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("""CREATE FUNCTION leak() RETURNS int LANGUAGE plpgsql AS $$
            DECLARE v text; BEGIN SELECT email INTO v FROM users WHERE id = 1001;
            RAISE NOTICE 'user %', v USING DETAIL = 'detail ' || v, HINT = v;
            RETURN 1; END$$""")


def test_notices_redacted(human_conn, leaky_function):
    seen = []
    human_conn.add_notice_handler(seen.append)
    human_conn.governor.mark_catalog_stale()  # the function was created after connecting
    # The result itself is redacted (a user function: lineage unknown, fails closed).
    assert human_conn.execute("SELECT leak()").fetchone() == (None,)
    assert len(seen) == 1
    diag = seen[0]
    # A function's own message matches no server template: redacted whole, with its detail
    # and hint; the context line (a server template naming the function) stays.
    assert (diag.message_primary, diag.message_detail, diag.message_hint) == (
        "<redacted>", "<redacted>", "<redacted>")
    assert diag.context == "PL/pgSQL function leak() line 3 at RAISE"
    assert diag.severity == "NOTICE"


def test_notify_payloads_masked(human_conn, dsn, audit):
    listener = governed_db.connect(dsn, identity=human_conn.identity, audit=audit,
                                   autocommit=True)
    try:
        listener.execute("LISTEN ch")
        with pytest.raises(errors.StatementDenied) as denied:
            human_conn.execute("SELECT pg_notify('ch', email) FROM users WHERE id = 1001")
        assert denied.value.rule_ids == ("notify.disallow-sensitive-payload",)
        human_conn.execute("NOTIFY ch, 'qem.alice@example.com'")
        human_conn.execute("NOTIFY ch, 'ssn 123-45-6789 for qem.bob@example.com'")
        got = [n.payload for n in listener.notifies(timeout=2, stop_after=2)]
        handled = []
        listener.add_notify_handler(handled.append)
        human_conn.execute("NOTIFY ch, 'card 4111 1111 1111 1111'")
        listener.execute("SELECT 1")  # notifications are delivered while the connection works
    finally:
        listener.close()
    assert got == ["[email redacted]", "ssn [ssn redacted] for [email redacted]"]
    assert handled and "4111 1111 1111 1111" not in handled[0].payload


async def test_async_notifies_masked(dsn, audit):
    alice = governed_db.Identity("alice", "human")
    async with await governed_db.AsyncConnection.connect(
            dsn, identity=alice, audit=audit, autocommit=True) as listener, \
            await governed_db.AsyncConnection.connect(
                dsn, identity=alice, audit=audit, autocommit=True) as sender:
        await listener.execute("LISTEN ch2")
        with pytest.raises(errors.StatementDenied) as denied:
            await sender.execute("SELECT pg_notify('ch2', email) FROM users WHERE id = 1002")
        assert denied.value.rule_ids == ("notify.disallow-sensitive-payload",)
        await sender.execute("SELECT pg_notify('ch2', 'qem.bob@example.com')")
        got = [n.payload async for n in listener.notifies(timeout=2, stop_after=1)]
    assert got == ["[email redacted]"]


# -- statement.affected-row-limit on every path that can write ---------------------------------
# A write whose effect is not bounded in advance is measured exactly (savepoint, rows touched
# per table) or refused before it is sent: never run unmeasured. (A service identity, limit 1;
# `orders` has 2 rows; trim_orders() deletes both, in a body only measuring can judge.)

LIMIT_ONE = """
[[rules]]
id = "statement.affected-row-limit"
level = "error"
max_rows = 1
"""
ROW_LIMIT = "statement.affected-row-limit"
WRITE = "DELETE FROM orders WHERE amount > 0 RETURNING id"
UNMEASURED = {
    "stream": WRITE,
    "stream-writing-function": "SELECT trim_orders()",
    "server_cursor-writing-function": "SELECT trim_orders()",
    "server_cursor-function-in-where": "SELECT id FROM orgs WHERE trim_orders() IS NULL",
    "copy_to-dml": f"COPY ({WRITE}) TO STDOUT",
    "copy_to-writing-function": "COPY (SELECT trim_orders()) TO STDOUT",
}


@pytest.fixture
def wdsn(dsn):
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("CREATE FUNCTION trim_orders() RETURNS int LANGUAGE plpgsql AS $$BEGIN"
                    " DELETE FROM orders WHERE amount > 0; RETURN 1; END$$")
    return dsn


def _counts(dsn):
    with psycopg.connect(dsn) as raw:
        return raw.execute("SELECT count(*) FROM orders").fetchone()[0]


def _run_unmeasured(conn, case):
    sql = UNMEASURED[case]
    if case.startswith("stream"):
        return list(conn.cursor().stream(sql))
    if case.startswith("server_cursor"):
        with conn.cursor(name="wsrv") as cur:
            cur.execute(sql)
            return cur.fetchall()
    with conn.cursor().copy(sql) as copy:
        return list(copy)


async def _run_unmeasured_async(conn, case):
    sql = UNMEASURED[case]
    if case.startswith("stream"):
        return [r async for r in conn.cursor().stream(sql)]
    if case.startswith("server_cursor"):
        async with conn.cursor(name="wsrv") as cur:
            await cur.execute(sql)
            return await cur.fetchall()
    async with conn.cursor().copy(sql) as copy:
        return [row async for row in copy]


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "in-transaction"])
@pytest.mark.parametrize("case", sorted(UNMEASURED))
def test_unmeasurable_write_paths_refused(wdsn, audit, case, autocommit):
    policy = _parse(LIMIT_ONE)
    with governed_db.connect(wdsn, identity=governed_db.Identity("etl", "service"),
                             policy=policy, audit=audit, autocommit=autocommit) as conn:
        with pytest.raises(errors.StatementDenied) as ei:
            _run_unmeasured(conn, case)
        assert ei.value.rule_ids == (ROW_LIMIT,)
        assert "execute()" in str(ei.value)
        if not autocommit:
            conn.rollback()
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (2,)  # still usable
    assert _counts(wdsn) == 2
    audit.flush()
    denied = [r for r in audit.records if r["type"] == "statement"
              and r["outcome"]["outcome"] == "denied"]
    assert [r["outcome"]["rules"] for r in denied] == [[ROW_LIMIT]]


@pytest.mark.parametrize("case", sorted(UNMEASURED))
async def test_unmeasurable_write_paths_refused_async(wdsn, audit, case):
    conn = await governed_db.AsyncConnection.connect(
        wdsn, identity=governed_db.Identity("etl", "service"), policy=_parse(LIMIT_ONE),
        audit=audit, autocommit=True)
    try:
        with pytest.raises(errors.StatementDenied) as ei:
            await _run_unmeasured_async(conn, case)
        assert ei.value.rule_ids == (ROW_LIMIT,)
    finally:
        await conn.close()
    assert _counts(wdsn) == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_reads_on_unmeasured_paths_still_run(wdsn, audit, mode):
    """Only writes (and calls that may write) are refused: reads take every path as before."""
    if mode == "sync":
        with governed_db.connect(wdsn, identity=governed_db.Identity("etl", "service"),
                                 policy=_parse(LIMIT_ONE), audit=audit) as conn:
            assert len(list(conn.cursor().stream("SELECT id FROM orders"))) == 2
            with conn.cursor(name="rsrv") as cur:
                cur.execute("SELECT id FROM orders")
                assert len(cur.fetchall()) == 2
    else:
        conn = await governed_db.AsyncConnection.connect(
            wdsn, identity=governed_db.Identity("etl", "service"), policy=_parse(LIMIT_ONE),
            audit=audit)
        try:
            assert len([r async for r in conn.cursor().stream("SELECT id FROM orders")]) == 2
        finally:
            await conn.close()


def _parse(text):
    from governed_db.policy import parse_policy

    return parse_policy(text)


async def _copy_in(conn, rows):
    if isinstance(conn, governed_db.AsyncConnection):
        async with conn.cursor().copy("COPY orders (id, user_id, amount) FROM STDIN") as copy:
            for r in rows:
                await copy.write_row(r)
    else:
        with conn.cursor().copy("COPY orders (id, user_id, amount) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)


async def _maybe_await(value):
    return (await value) if hasattr(value, "__await__") else value


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "in-transaction"])
async def test_copy_from_stdin_measured_exactly(wdsn, audit, mode, autocommit):
    """COPY FROM STDIN is measured when the copy ends: within the limit (2 rows) kept, over
    it (3 rows) rolled back to before the copy, the caller's transaction still usable."""
    policy = _parse(LIMIT_ONE.replace("max_rows = 1", "max_rows = 2"))
    ident = governed_db.Identity("etl", "service")
    conn = await _maybe_await((governed_db.AsyncConnection.connect if mode == "async"
                               else governed_db.connect)(wdsn, identity=ident, policy=policy,
                                                         audit=audit, autocommit=autocommit))
    try:
        await _copy_in(conn, [(10, 1001, 1), (11, 1001, 1)])
        with pytest.raises(errors.StatementDenied) as ei:
            await _copy_in(conn, [(20, 1001, 1), (21, 1001, 1), (22, 1001, 1)])
        assert ei.value.rule_ids == (ROW_LIMIT,)
        assert "touched 3 rows" in str(ei.value)
        if not autocommit:
            cur = await _maybe_await(conn.execute("SELECT count(*) FROM orders"))
            assert await _maybe_await(cur.fetchone()) == (4,)  # usable, the 3 rows gone
            await _maybe_await(conn.commit())
    finally:
        await _maybe_await(conn.close())
    with psycopg.connect(wdsn) as raw:
        assert raw.execute("SELECT id FROM orders ORDER BY id").fetchall() == [
            (1,), (2,), (10,), (11,)]
    audit.flush()
    copies = [r["outcome"] for r in audit.records if r["type"] == "statement"
              and r["statement"]["kinds"] == ["COPY"]]
    assert [(o["outcome"], o.get("affected_rows")) for o in copies] == [
        ("ok", 2), ("rolled_back", 3)]


def test_copy_from_stdin_counts_trigger_writes(wdsn, audit):
    """Rows a trigger writes count too (judged by effect: pg_stat_xact_user_tables)."""
    with psycopg.connect(wdsn, autocommit=True) as raw:
        raw.execute("CREATE TABLE copy_log (id int);"
                    " CREATE FUNCTION log_ins() RETURNS trigger LANGUAGE plpgsql AS"
                    " $$BEGIN INSERT INTO copy_log VALUES (NEW.id); RETURN NEW; END$$;"
                    " CREATE TRIGGER log_ins AFTER INSERT ON orders FOR EACH ROW"
                    " EXECUTE FUNCTION log_ins()")
    policy = _parse(LIMIT_ONE.replace("max_rows = 1", "max_rows = 3"))
    with governed_db.connect(wdsn, identity=governed_db.Identity("etl", "service"),
                             policy=policy, audit=audit, autocommit=True) as conn:
        with pytest.raises(errors.StatementDenied, match="touched 4 rows"):
            with conn.cursor().copy("COPY orders (id, user_id, amount) FROM STDIN") as copy:
                copy.write_row((30, 1001, 1))
                copy.write_row((31, 1001, 1))
    with psycopg.connect(wdsn) as raw:
        assert raw.execute("SELECT count(*) FROM orders").fetchone() == (2,)
        assert raw.execute("SELECT count(*) FROM copy_log").fetchone() == (0,)


STOLEN = {
    "fetchall": lambda cur: cur.fetchall(),
    "fetchone": lambda cur: cur.fetchone(),
    "fetchmany": lambda cur: cur.fetchmany(1),
    "iteration": lambda cur: list(cur),
    "scroll": lambda cur: cur.scroll(1),
}


@pytest.mark.parametrize("how", sorted(STOLEN))
def test_sql_declared_cursor_read_through_a_server_cursor(wdsn, audit, how):
    """``DECLARE`` in SQL (nothing runs yet), then ``conn.cursor(name)``: psycopg sends its
    FETCH/MOVE without the statement hook, and each runs the cursor's query. A query only
    measuring can judge is refused there (a SQL FETCH through execute() is measured); a
    harmless one reads as before."""
    with governed_db.connect(wdsn, identity=governed_db.Identity("etl", "service"),
                             policy=_parse(LIMIT_ONE), audit=audit) as conn:
        conn.execute("DECLARE w SCROLL CURSOR FOR SELECT trim_orders()")
        with conn.cursor("w") as cur, pytest.raises(errors.StatementDenied) as ei:
            STOLEN[how](cur)
        assert ei.value.rule_ids == (ROW_LIMIT,)
        conn.rollback()
        conn.execute("DECLARE r SCROLL CURSOR FOR SELECT id FROM orders ORDER BY id")
        with conn.cursor("r") as cur:
            if how == "scroll":
                cur.scroll(1)
            assert cur.fetchall() == ([(2,)] if how == "scroll" else [(1,), (2,)])
        conn.commit()
    assert _counts(wdsn) == 2


async def test_sql_declared_cursor_read_through_a_server_cursor_async(wdsn, audit):
    conn = await governed_db.AsyncConnection.connect(
        wdsn, identity=governed_db.Identity("etl", "service"), policy=_parse(LIMIT_ONE),
        audit=audit)
    try:
        await conn.execute("DECLARE w CURSOR FOR SELECT trim_orders()")
        async with conn.cursor("w") as cur:
            with pytest.raises(errors.StatementDenied) as ei:
                await cur.fetchall()
        assert ei.value.rule_ids == (ROW_LIMIT,)
    finally:
        await conn.close()
    assert _counts(wdsn) == 2


class _Boom(Exception):
    pass


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "in-transaction"])
@pytest.mark.parametrize("failure", ["caller-exception", "bad-data", "unknown-table"])
def test_measured_copy_from_that_fails_leaves_the_session_as_psycopg_does(wdsn, audit, failure,
                                                                          autocommit):
    """A measured COPY FROM that fails leaves nothing behind: no rows, no transaction of
    governed_db's own open (autocommit), the caller's transaction failed as it would be."""
    table = "nope" if failure == "unknown-table" else "orders"
    with governed_db.connect(wdsn, identity=governed_db.Identity("etl", "service"),
                             policy=_parse(LIMIT_ONE), audit=audit,
                             autocommit=autocommit) as conn:
        with pytest.raises((_Boom, psycopg.Error)):
            with conn.cursor().copy(f"COPY {table} (id, user_id, amount) FROM STDIN") as copy:
                copy.write_row((40, 1001, "x" if failure == "bad-data" else 1))
                if failure == "caller-exception":
                    raise _Boom
        want = psycopg.pq.TransactionStatus.IDLE if autocommit \
            else psycopg.pq.TransactionStatus.INERROR
        assert conn.info.transaction_status == want
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (2,)
    assert _counts(wdsn) == 2
