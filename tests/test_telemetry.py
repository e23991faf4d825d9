"""OpenTelemetry spans and metrics: semantic-convention attributes, identity, no literal values."""

from __future__ import annotations

import json
import time

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import governed_db
from governed_db import errors, telemetry

from .conftest import MARKERS


@pytest.fixture
def otel():
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    telemetry.use_providers(tp, MeterProvider(metric_readers=[reader]))
    yield exporter, reader
    telemetry.use_providers()


def _metrics(reader) -> dict[str, list]:
    out: dict[str, list] = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = [(dict(p.attributes), p.value) for p in m.data.data_points]
    return out


def test_span_per_statement_with_conventions_and_identity(otel, agent_conn, audit):
    exporter, reader = otel
    before = time.time_ns()
    agent_conn.execute("SELECT email FROM users WHERE id = %s AND 'qnm Alice' <> ''", (1001,))
    after = time.time_ns()
    with pytest.raises(errors.StatementDenied):
        agent_conn.execute("DROP TABLE users")
    spans = [s for s in exporter.get_finished_spans() if s.name != "statement"]
    select, drop = spans[-2], spans[-1]
    # Created at the statement's end, started when it began: the span covers the statement.
    assert before <= select.start_time <= select.end_time <= after
    a = dict(select.attributes)
    normalized = a["db.query.text"]
    assert "$1" in normalized and "qnm" not in normalized
    assert a == {
        "db.system.name": "postgresql", "db.namespace": a["db.namespace"],
        "db.query.summary": select.name, "db.operation.name": "SELECT",
        "db.query.text": normalized, "db.collection.name": "users",
        "server.address": a["server.address"], "server.port": a["server.port"],
        "enduser.id": "recs-bot",  # an agent is configuration, not a person: in clear
        "governed_db.identity.kind": "ai_agent", "governed_db.decision": "allow",
        "governed_db.identity.purpose": "weekly recommendations",
        "gen_ai.agent.name": "recs-bot", "gen_ai.request.model": "test-llm",
        "governed_db.masked_columns": ("email",), "governed_db.rowcount": 1,
        "governed_db.audit.record_id": a["governed_db.audit.record_id"]}
    assert a["db.namespace"] and isinstance(a["server.port"], int)
    audit.flush()
    by_id = {r["id"]: r for r in audit.records if r["type"] == "statement"}
    rec = by_id[a["governed_db.audit.record_id"]]
    assert rec["trace"] == {"trace_id": f"{select.context.trace_id:032x}",
                            "span_id": f"{select.context.span_id:016x}"}
    d = dict(drop.attributes)
    assert d["governed_db.decision"] == "deny"
    assert d["db.response.status_code"] == "42501"
    assert "statement.disallow-drop" in d["governed_db.rule_ids"]
    assert drop.status.status_code.name == "ERROR"
    m = _metrics(reader)
    assert ({"governed_db.rule_id": "statement.disallow-drop",
             "governed_db.identity.kind": "ai_agent"}, 1) in m["governed_db.denials"]
    assert sum(v for _, v in m["governed_db.masked_values"]) >= 1


@pytest.mark.parametrize("kind", ["human", "service", "ai_agent"])
def test_identity_in_clear_or_pseudonymous_by_kind(otel, dsn, audit, kind):
    exporter, _ = otel
    who = governed_db.Identity("qid-person-7", kind)
    try:
        for clear in (("service", "ai_agent"), ()):
            telemetry.identity_ids_in_clear(clear)
            with governed_db.connect(dsn, identity=who, audit=audit, autocommit=True) as c:
                c.execute("SELECT 1")
            a = dict(exporter.get_finished_spans()[-1].attributes)
            if kind in clear:
                assert a["enduser.id"] == "qid-person-7" and "enduser.pseudo.id" not in a
            else:
                assert "enduser.id" not in a
                pseudo = a["enduser.pseudo.id"]
                assert len(pseudo) == 16 and int(pseudo, 16) >= 0
                assert "qid" not in json.dumps(a, default=str)
    finally:
        telemetry.identity_ids_in_clear()
    with pytest.raises(ValueError, match="unknown identity kind"):
        telemetry.identity_ids_in_clear(["robot"])


def test_span_cache_follows_identity_and_decision(otel, dsn, audit):
    """The cached attributes of one text are never reused for another identity (or when
    acting_as switches the identity on the same connection)."""
    exporter, _ = otel
    svc = governed_db.Identity("svc-a", "service", purpose="p1")
    with governed_db.connect(dsn, identity=svc, audit=audit, autocommit=True) as c:
        c.execute("SELECT id FROM users WHERE id = 1")
        with governed_db.acting_as(governed_db.Identity("bob", "human")):
            c.execute("SELECT id FROM users WHERE id = 1")
        c.execute("SELECT id FROM users WHERE id = 1")
    s1, s2, s3 = (dict(s.attributes) for s in exporter.get_finished_spans()[-3:])
    assert s1["enduser.id"] == s3["enduser.id"] == "svc-a"
    assert s1["governed_db.identity.purpose"] == "p1"
    assert "enduser.id" not in s2 and s2["governed_db.identity.kind"] == "human"
    assert "governed_db.identity.purpose" not in s2
    assert s1["governed_db.audit.record_id"] != s3["governed_db.audit.record_id"]


def test_no_literal_value_in_any_span(otel, dsn, audit):
    exporter, _ = otel
    human = governed_db.Identity("alice", "human")
    with governed_db.connect(dsn, identity=human, audit=audit, autocommit=True) as c:
        c.execute("SELECT * FROM users WHERE email = 'qem.alice@example.com'")
        c.cursor().execute("SELECT * FROM users WHERE ssn = %s", ("qsn-111-22-3333",))
        with pytest.raises(governed_db.errors.UniqueViolation):
            governed_db.ClientCursor(c).execute(
                "INSERT INTO users (id, email) VALUES (%s, %s)", (1001, "qem.dup@example.com"))
    dumped = json.dumps([dict(s.attributes) | {"name": s.name, "events": [
        dict(e.attributes or {}) for e in s.events]} for s in exporter.get_finished_spans()],
        default=str).lower()
    for marker in MARKERS:
        assert marker not in dumped
    error_span = exporter.get_finished_spans()[-1]
    assert error_span.attributes["db.response.status_code"] == "23505"


def test_no_span_without_a_recording_provider(agent_conn):
    # With the API's no-op provider nothing is recorded and nothing fails.
    from opentelemetry import trace

    assert not trace.get_tracer_provider().get_tracer("x").start_span("y").is_recording()
    agent_conn.execute("SELECT 1")
