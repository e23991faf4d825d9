"""OpenTelemetry: one CLIENT span per statement and counters, through the OTel API only.

Spans exist only when a tracer provider is recording (with the API's default no-op provider a
statement pays for one ``start_span`` call). Attributes follow the stable database semantic
conventions; no literal value ever appears: the query text is the normalized one (constants
replaced by ``$n``) and the identity is pseudonymous (a keyed hash) except for agent names and
models, which are configuration, not personal data. The audit record id links a span to its
signed record.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as _metrics_internal
from opentelemetry.trace import SpanKind, Status, StatusCode

__all__ = ["end_statement_span", "record_metrics", "start_statement_span", "use_providers"]

class _Instruments:
    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self.tracer = trace.get_tracer("governed_db", _VERSION, tracer_provider=tracer_provider)
        meter = metrics.get_meter("governed_db", _VERSION, meter_provider=meter_provider)
        self.statements = meter.create_counter(
            "governed_db.statements", unit="{statement}",
            description="Statements by decision (allow, deny, approval) and identity kind")
        self.masked = meter.create_counter(
            "governed_db.masked_values", unit="{value}",
            description="Values masked in rows returned to callers")
        self.denials = meter.create_counter(
            "governed_db.denials", unit="{statement}", description="Statements denied, by rule")
        self.approvals = meter.create_counter(
            "governed_db.approvals", unit="{request}",
            description="Statements sent for approval")


_VERSION = "0.1.0"
_inst = _Instruments()
_explicit_tracer = False
_explicit_meter = False
_NOOP_TRACER_PROVIDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
_NOOP_METER_PROVIDERS = tuple(c for c in (
    getattr(getattr(metrics, "_internal", None), "_ProxyMeterProvider", None),
    metrics.NoOpMeterProvider) if c is not None)


def use_providers(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Send governed_db's spans and metrics to these providers instead of the global ones
    (``None``: the global one)."""
    global _inst, _explicit_tracer, _explicit_meter
    _inst = _Instruments(tracer_provider, meter_provider)
    _explicit_tracer = tracer_provider is not None
    _explicit_meter = meter_provider is not None


_UNSET = object()


def tracing() -> bool:
    """Whether a span could record (an SDK or other real provider is installed).

    Reads the API's global directly when it can: ``trace.get_tracer_provider()`` looks up an
    environment variable on every call while no provider is set, which costs more than the
    rest of a statement's governance.
    """
    return _explicit_tracer or _real(getattr(trace, "_TRACER_PROVIDER", _UNSET),
                                     trace.get_tracer_provider, _NOOP_TRACER_PROVIDERS)


def metering() -> bool:
    return _explicit_meter or _real(getattr(_metrics_internal, "_METER_PROVIDER", _UNSET),
                                    metrics.get_meter_provider, _NOOP_METER_PROVIDERS)


def _real(provider: Any, getter: Any, noop: tuple[type, ...]) -> bool:
    if provider is _UNSET:
        provider = getter()
    return provider is not None and not isinstance(provider, noop)


def pseudonym(label: str, key: bytes) -> str:
    return hmac.new(key, label.encode(), hashlib.sha256).hexdigest()[:16]


_attr_cache: dict[tuple[Any, ...], dict[str, Any]] = {}


def start_statement_span(ctx: Any, conn_info: Mapping[str, Any], key: bytes) -> Any:
    """A started span for ``ctx`` (None when tracing is not recording).

    The attributes that depend only on the statement text, identity, connection and decision
    are built once and reused; the span gets them at creation (one validation pass).
    """
    analysis = ctx.analysis
    ident = ctx.identity
    decision = ctx.decision
    ck = (analysis.text, ident.kind, ident.id, ident.purpose, ident.model, ident.roles,
          conn_info.get("host"), conn_info.get("port"), conn_info.get("dbname"),
          decision.action, decision.rule_ids)
    attrs = _attr_cache.get(ck)
    if attrs is None:
        attrs = _static_attributes(ctx, conn_info, key)
        if len(_attr_cache) >= 1024:
            _attr_cache.clear()
        _attr_cache[ck] = attrs
    span = _inst.tracer.start_span(attrs["db.query.summary"], kind=SpanKind.CLIENT,
                                   attributes={**attrs, "governed_db.audit.record_id": ctx.id})
    if not span.is_recording():
        return None
    return span


def _static_attributes(ctx: Any, conn_info: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    analysis = ctx.analysis
    summary = analysis.summary or "statement"
    ident = ctx.identity
    stmts = ctx.statements
    tables = sorted({t for s in stmts for t in s.reads} | {t for s in stmts for t in s.writes})
    attrs: dict[str, Any] = {
        "db.system.name": "postgresql",
        "db.namespace": conn_info.get("dbname") or "",
        "db.query.summary": summary,
        "db.operation.name": ",".join(sorted(analysis.kinds)) if stmts else "UNKNOWN",
        "server.address": str(conn_info.get("host") or ""),
        "enduser.pseudo.id": pseudonym(ident.label, key),
        "governed_db.identity.kind": ident.kind,
        "governed_db.decision": ctx.decision.action,
    }
    if analysis.error is None and analysis.normalized:
        attrs["db.query.text"] = analysis.normalized
    if len(tables) == 1:
        attrs["db.collection.name"] = tables[0]
    if conn_info.get("port"):
        attrs["server.port"] = int(conn_info["port"])
    if ident.roles:
        attrs["governed_db.identity.roles"] = list(ident.roles)
    if ident.purpose:
        attrs["governed_db.identity.purpose"] = ident.purpose
    if ident.kind == "ai_agent":
        attrs["gen_ai.agent.name"] = ident.id
        if ident.model:
            attrs["gen_ai.request.model"] = ident.model
    if ctx.decision.rule_ids:
        attrs["governed_db.rule_ids"] = list(ctx.decision.rule_ids)
    return attrs


def end_statement_span(span: Any, ctx: Any, outcome: Mapping[str, Any]) -> None:
    from . import testing

    status = outcome.get("outcome")
    if testing._monitor is not None:
        testing._monitor.check("span", dict(getattr(span, "attributes", None) or {}))
    extra: dict[str, Any] = {}  # one validation pass in the SDK instead of one per attribute
    if ctx.approval_id:
        extra["governed_db.approval_id"] = ctx.approval_id
    plans = ctx.plans
    if plans and any(m for _, m, _ in plans.values()):
        extra["governed_db.masked_columns"] = sorted(ctx.masked)
    for key in ("rowcount", "affected_rows"):
        if outcome.get(key) is not None:
            extra[f"governed_db.{key}"] = int(outcome[key])
    if status in ("denied", "approval_required", "rolled_back"):
        extra["governed_db.decision"] = "approval" if status == "approval_required" else "deny"
        extra["db.response.status_code"] = "42501"
        rules = outcome.get("rules") or list(ctx.decision.rule_ids)
        if rules:
            extra["governed_db.rule_ids"] = list(rules)
        span.set_status(Status(StatusCode.ERROR, status))
    elif status == "error":
        if outcome.get("sqlstate"):
            extra["db.response.status_code"] = outcome["sqlstate"]
        extra["error.type"] = outcome.get("sqlstate") or outcome.get("error_class") or "error"
        span.set_status(Status(StatusCode.ERROR))
    if extra:
        span.set_attributes(extra)
    span.end()


def record_metrics(ctx: Any, outcome: Mapping[str, Any]) -> None:
    if not metering():
        return
    status = outcome.get("outcome")
    kind = ctx.identity.kind
    decision = {"denied": "deny", "rolled_back": "deny",
                "approval_required": "approval"}.get(status, "allow")
    inst = _inst
    inst.statements.add(1, {"governed_db.decision": decision, "governed_db.identity.kind": kind})
    if decision == "deny":
        for rule in outcome.get("rules") or ctx.decision.rule_ids or ("unknown",):
            inst.denials.add(1, {"governed_db.rule_id": rule, "governed_db.identity.kind": kind})
    elif decision == "approval":
        inst.approvals.add(1, {"governed_db.identity.kind": kind})
    if ctx.masked and outcome.get("rowcount"):
        inst.masked.add(len(ctx.masked) * max(int(outcome["rowcount"]), 0),
                    {"governed_db.identity.kind": kind})
