"""OpenTelemetry spans and metrics: semantic-convention attributes, identity, no literal values."""

from __future__ import annotations

import json

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
    agent_conn.execute("SELECT email FROM users WHERE id = %s AND name = 'qnm Alice'", (1001,))
    with pytest.raises(errors.StatementDenied):
        agent_conn.execute("DROP TABLE users")
    spans = [s for s in exporter.get_finished_spans() if s.name != "statement"]
    select, drop = spans[-2], spans[-1]
    a = dict(select.attributes)
    assert a["db.system.name"] == "postgresql"
    assert a["db.operation.name"] == "SELECT"
    assert a["db.collection.name"] == "users"
    assert a["db.query.summary"] == select.name
    assert "$1" in a["db.query.text"] and "qnm" not in a["db.query.text"]
    assert a["gen_ai.agent.name"] == "recs-bot" and a["gen_ai.request.model"] == "test-llm"
    assert a["governed_db.identity.kind"] == "ai_agent"
    assert len(a["enduser.pseudo.id"]) == 16 and "recs-bot" not in a["enduser.pseudo.id"]
    assert a["governed_db.masked_columns"] == ("email",)
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
