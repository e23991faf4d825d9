"""The public egress-observer interface: every value handed out is reported, as handed out.

Governance code reports to `governed_db.egress` observers and never reads test code; the pytest
plugin's strict mode is one such observer.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import governed_db
from governed_db import egress, errors, telemetry
from governed_db.audit import AuditLog

from .conftest import AGENT


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []

    def observe(self, where: str, value: object) -> None:
        self.seen.append((where, value))

    def of(self, where: str) -> list[object]:
        return [v for w, v in self.seen if w == where]


@pytest.fixture
def recorder():
    with egress.observing(Recorder()) as rec:
        yield rec
    assert rec not in egress.observers()


@pytest.mark.parametrize("fetch", ["fetchone", "fetchall", "iterate", "stream"])
def test_rows_are_reported_as_the_caller_gets_them(agent_conn, recorder, fetch):
    cur = agent_conn.cursor()
    query = "SELECT id, email FROM users WHERE id = 1001"
    if fetch == "stream":
        rows = list(cur.stream(query))
    else:
        cur.execute(query)
        rows = [cur.fetchone()] if fetch == "fetchone" else \
            cur.fetchall() if fetch == "fetchall" else list(cur)
    assert len(rows) == 1 and rows[0][1] != "qem.alice@example.com"  # masked
    assert recorder.of("row") == [list(rows[0])]


async def test_async_rows_are_reported(async_agent_conn, recorder):
    cur = await async_agent_conn.execute("SELECT id, email FROM users WHERE id = 1002")
    row = await cur.fetchone()
    assert row[1] != "qem.bob@example.com"
    assert recorder.of("row") == [list(row)]


SERVICE = governed_db.Identity("etl", "service")


def test_errors_and_notifications_are_reported(dsn, recorder):
    with governed_db.connect(dsn, identity=SERVICE, audit=False, autocommit=True) as conn:
        with pytest.raises(errors.DataError) as err:
            conn.execute("SELECT email::int FROM users WHERE id = 1001")
        assert recorder.of("error") == [err.value]
        assert "qem.alice" not in str(err.value)
        conn.execute("LISTEN ch")
        conn.execute("NOTIFY ch, 'mail me at qem.carol@example.com'")
        got = list(conn.notifies(timeout=1, stop_after=1))
        assert got[0].payload == "mail me at [email redacted]"
        # (reported once per way it is handed out: notifies() and the notify-handler hook)
        assert set(recorder.of("notify")) == {got[0].payload}


def test_notice_text_is_reported(dsn, recorder):
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as su:
        su.execute("CREATE FUNCTION say(t text) RETURNS int LANGUAGE plpgsql AS "
                   "$$BEGIN RAISE NOTICE 'said %', t USING DETAIL = 'detail', HINT = 'hint';"
                   " RETURN 1; END$$")
    with governed_db.connect(dsn, identity=SERVICE, audit=False, autocommit=True) as conn:
        got: list[object] = []
        conn.add_notice_handler(got.append)
        conn.execute("SELECT say('hi')")
        assert len(got) == 1  # (RAISE text is not a server message: the allow-list redacts it)
        assert recorder.of("notice") == [[got[0].message_primary, got[0].message_detail,
                                          got[0].message_hint]]


def test_spans_and_audit_records_are_reported(dsn, recorder):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_providers(provider)
    log = AuditLog.in_memory()
    with governed_db.connect(dsn, identity=AGENT, audit=log) as conn:
        conn.execute("SELECT id FROM users WHERE id = 1001").fetchall()
    log.flush()
    records = recorder.of("audit record")
    assert records == log.records  # every record written, as written, and nothing else
    assert [r["statement"]["reads"] for r in records if r["type"] == "statement"] == \
        [["users"]]
    telemetry.use_providers()
    spans = recorder.of("span")
    assert [dict(s.attributes) for s in exporter.get_finished_spans()] == spans
    assert len(spans) == 1 and spans[0]["db.query.summary"] == "SELECT users"
    log.close()


def test_a_failing_observer_cannot_break_the_statement_or_unmask(agent_conn, caplog):
    class Broken:
        def observe(self, where: str, value: object) -> None:
            raise RuntimeError("observer bug")

    with egress.observing(Broken()), caplog.at_level("ERROR", "governed_db.egress"):
        row = agent_conn.execute("SELECT email FROM users WHERE id = 1001").fetchone()
    assert row[0] != "qem.alice@example.com"
    assert any("observer bug" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_registration():
    rec = Recorder()
    assert egress.add_observer(rec) is rec
    egress.add_observer(rec)
    assert egress.observers().count(rec) == 1
    egress.remove_observer(rec)
    egress.remove_observer(rec)
    assert rec not in egress.observers()
    with pytest.raises(TypeError, match="observe"):
        egress.add_observer(object())  # type: ignore[arg-type]


def test_governance_never_imports_test_code(dsn):
    """A program using every egress path does not load governed_db.testing or pytest."""
    program = textwrap.dedent(f"""
        import sys, governed_db
        from governed_db.audit import AuditLog
        log = AuditLog.in_memory()
        with governed_db.connect({dsn!r}, identity=governed_db.Identity("etl", "service"),
                                 audit=log, autocommit=True) as conn:
            conn.add_notice_handler(lambda d: None)
            conn.execute("SELECT email FROM users").fetchall()
            list(conn.cursor().stream("SELECT ssn FROM users"))
            try:
                conn.execute("SELECT email::int FROM users")
            except governed_db.DataError:
                pass
            conn.execute("LISTEN c"); conn.execute("NOTIFY c, 'x'")
            list(conn.notifies(timeout=0.5, stop_after=1))
        log.flush(); log.close()
        bad = sorted(m for m in sys.modules if m == "governed_db.testing" or m == "pytest"
                     or m.startswith("_pytest"))
        print(bad)
    """)
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_pgresult_values_are_reported(agent_conn, recorder):
    cur = agent_conn.execute("SELECT id, email FROM users WHERE id = 1001")
    value = cur.pgresult.get_value(0, 1)
    assert value is not None and b"qem.alice" not in value
    assert recorder.of("value") == [value.decode()]


@pytest.mark.parametrize("read", ["read", "rows", "iterate"])
def test_copy_data_is_reported_as_handed_out(dsn, recorder, read):
    with governed_db.connect(dsn, identity=SERVICE, audit=False, autocommit=True) as conn:
        with conn.cursor().copy("COPY (SELECT id, email FROM users ORDER BY id) TO STDOUT") as cp:
            if read == "read":
                got = []
                while data := cp.read():
                    got.append(bytes(data).decode())
                text = "".join(got)
            elif read == "rows":
                text = "".join(f"{a}\t{b}\n" for a, b in cp.rows())
            else:
                text = "".join(bytes(b).decode() for b in cp)
    assert "qem.alice@example.com" not in text and "1001\t" in text
    assert "".join(recorder.of("copy")) == text
