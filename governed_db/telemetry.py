"""OpenTelemetry: one CLIENT span per statement and counters, through the OTel API only.

Spans exist only when a real tracer provider is installed (with the API's default no-op one a
statement pays for one check). Attributes follow the stable database semantic conventions; no
literal value ever appears: the query text is the normalized one (constants replaced by
``$n``). Services and agents are named in clear (``enduser.id``; agents also
``gen_ai.agent.name`` and ``gen_ai.request.model``): they are configuration, not personal data.
People are pseudonymous (``enduser.pseudo.id``, a keyed hash); see
:func:`identity_ids_in_clear`. The audit record id links a span to its signed record.

Cost: the attributes that depend on the statement shape are built once per (connection, text,
identity, decision) and the span is created once, at the statement's end, with every attribute
in one mapping (see :class:`_Pending`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from time import time_ns
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as _metrics_internal
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import egress as _egress


__all__ = ["end_statement_span", "identity_ids_in_clear", "record_metrics",
           "start_statement_span", "use_providers"]


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
# The OTel API modules' globals: the statement path reads whether a global provider was ever
# set without a call (None: never set, nothing can record; see tracing() and metering()).
_TRACE_GLOBALS = trace.__dict__
_METER_GLOBALS = _metrics_internal.__dict__


def tracing() -> bool:
    """Whether a span could record (an SDK or other real provider is installed).

    Reads the API's global directly when it can: ``trace.get_tracer_provider()`` looks up an
    environment variable on every call while no provider is set, which costs more than the
    rest of a statement's governance.
    """
    if _explicit_tracer:
        return True
    # (_real inlined: this runs for every statement)
    provider = getattr(trace, "_TRACER_PROVIDER", _UNSET)
    if provider is _UNSET:
        provider = trace.get_tracer_provider()
    return provider is not None and not isinstance(provider, _NOOP_TRACER_PROVIDERS)


def metering() -> bool:
    if _explicit_meter:
        return True
    provider = getattr(_metrics_internal, "_METER_PROVIDER", _UNSET)  # (_real inlined)
    if provider is _UNSET:
        provider = metrics.get_meter_provider()
    return provider is not None and not isinstance(provider, _NOOP_METER_PROVIDERS)


def pseudonym(label: str, key: bytes) -> str:
    return hmac.new(key, label.encode(), hashlib.sha256).hexdigest()[:16]


# Identity kinds whose id goes into spans in clear (``enduser.id``): services and agents are
# configuration, not people. Every other kind — people — gets a keyed pseudonym
# (``enduser.pseudo.id``). An allow-list: a kind added later is pseudonymous until listed.
_clear_id_kinds: frozenset[str] = frozenset({"service", "ai_agent"})


def identity_ids_in_clear(kinds: Any = ("service", "ai_agent")) -> None:
    """Which identity kinds' ids spans carry in clear (``enduser.id``); the others get a keyed
    pseudonym (``enduser.pseudo.id``). ``()``: every id pseudonymous. Default: services and
    agents in clear, people (``human``) pseudonymous."""
    global _clear_id_kinds
    from .identity import KINDS

    chosen = frozenset(kinds)
    unknown = chosen - set(KINDS)
    if unknown:
        raise ValueError(f"unknown identity kind(s): {', '.join(sorted(unknown))}")
    _clear_id_kinds = chosen
    _attr_cache.clear()


class _Pending:
    """A statement's span before it is created: its cached attributes and start time.

    The span is created when the statement ends, with ``start_time`` set to when it began and
    every attribute in one mapping: the SDK validates and copies attributes once per call, so
    creating it at the end costs one attribute pass where start + ``set_attributes`` cost two
    (~8 µs). Nothing runs as a child of the statement span (it was never made current), so
    creating it late changes no parentage.
    """

    __slots__ = ("attrs", "start_ns")

    def __init__(self, attrs: dict[str, Any], start_ns: int) -> None:
        self.attrs = attrs
        self.start_ns = start_ns

    def get_span_context(self) -> Any:  # a record built before the span ended: no trace
        return trace.INVALID_SPAN_CONTEXT

    def is_recording(self) -> bool:
        return False


# id(conn_info) -> id(analysis) -> (conn_info, analysis, identity, decision, attributes).
# The keys are ids, the entries hold the objects themselves (so an id cannot be reused while
# its entry lives) and a hit is checked by identity: no key tuple is built per statement.
# The same analysis and decision objects mean the same text, statements and rules (a
# decision that is not cached — EXECUTE, FETCH — is a new object, hence a miss).
_attr_cache: dict[int, dict[int, tuple[Any, Any, Any, Any, dict[str, Any]]]] = {}


def start_statement_span(ctx: Any, conn_info: Mapping[str, Any], key: bytes) -> Any:
    """What the statement's span needs at its start (its span is created when it ends, see
    :class:`_Pending`). Attributes that depend only on the statement text, identity,
    connection and decision are built once and reused."""
    analysis = ctx.analysis
    per_conn = _attr_cache.get(id(conn_info))
    if per_conn is None:
        if len(_attr_cache) >= 64:
            _attr_cache.clear()
        per_conn = _attr_cache[id(conn_info)] = {}
    entry = per_conn.get(id(analysis))
    if (entry is None or entry[0] is not conn_info or entry[1] is not analysis
            or entry[2] is not ctx.identity or entry[3] is not ctx.decision):
        if len(per_conn) >= 1024:
            per_conn.clear()
        entry = (conn_info, analysis, ctx.identity, ctx.decision,
                 _static_attributes(ctx, conn_info, key))
        per_conn[id(analysis)] = entry
    return _Pending(entry[4], time_ns())


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
        "governed_db.identity.kind": ident.kind,
        "governed_db.decision": ctx.decision.action,
    }
    if ident.kind in _clear_id_kinds:
        attrs["enduser.id"] = ident.id
    else:
        attrs["enduser.pseudo.id"] = pseudonym(ident.label, key)
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
    if ident.verified:
        # Proven by a signed token: who issued it, for whom, which token (never the token).
        # Absent on unverified identities (no attribute cost on every span).
        attrs["governed_db.identity.verified"] = True
        attrs["governed_db.identity.issuer"] = ident.issuer
        if ident.kind in _clear_id_kinds and ident.subject == ident.id:
            # (a delegated token's subject is the person acted for: pseudonymous)
            attrs["governed_db.identity.subject"] = ident.subject
        else:
            attrs["governed_db.identity.subject.pseudo"] = pseudonym(
                f"{ident.issuer}#{ident.subject}", key)
        if ident.token_id is not None:
            attrs["governed_db.identity.token_id"] = ident.token_id
    if ident.kind == "ai_agent":
        if ident.kind in _clear_id_kinds:  # the agent's name is its id
            attrs["gen_ai.agent.name"] = ident.id
        if ident.model:
            attrs["gen_ai.request.model"] = ident.model
    if ctx.decision.rule_ids:
        attrs["governed_db.rule_ids"] = list(ctx.decision.rule_ids)
    return attrs


def end_statement_span(pending: Any, ctx: Any, outcome: Mapping[str, Any]) -> None:
    """Create and end the statement's span: the cached attributes and what the outcome adds,
    in one mapping (one validation pass in the SDK), started when the statement began.
    ``ctx.span`` becomes the span (the audit record names its trace), or None when it does
    not record (sampled out)."""
    static = pending.attrs
    attrs = {**static, "governed_db.audit.record_id": ctx.id}
    if ctx.approval_id:
        attrs["governed_db.approval_id"] = ctx.approval_id
    plans = ctx.plans
    if plans and any(m for _, m, _ in plans.values()):
        attrs["governed_db.masked_columns"] = sorted(ctx.masked)
    rowcount = outcome.get("rowcount")
    if rowcount is not None:
        attrs["governed_db.rowcount"] = int(rowcount)
    affected = outcome.get("affected_rows")
    if affected is not None:
        attrs["governed_db.affected_rows"] = int(affected)
    status = outcome.get("outcome")
    error: Any = None
    if status in ("denied", "approval_required", "rolled_back"):
        attrs["governed_db.decision"] = "approval" if status == "approval_required" else "deny"
        attrs["db.response.status_code"] = "42501"
        rules = outcome.get("rules") or list(ctx.decision.rule_ids)
        if rules:
            attrs["governed_db.rule_ids"] = list(rules)
        error = Status(StatusCode.ERROR, status)
    elif status == "error":
        if outcome.get("sqlstate"):
            attrs["db.response.status_code"] = outcome["sqlstate"]
        attrs["error.type"] = outcome.get("sqlstate") or outcome.get("error_class") or "error"
        error = Status(StatusCode.ERROR)
    if _egress._observers:
        _egress.emit("span", attrs)
    span = _inst.tracer.start_span(static["db.query.summary"], kind=SpanKind.CLIENT,
                                   attributes=attrs, start_time=pending.start_ns)
    recording = span.is_recording()  # (an ended span no longer says)
    if error is not None:
        span.set_status(error)
    span.end()
    ctx.span = span if recording else None


def record_metrics(ctx: Any, outcome: Mapping[str, Any]) -> None:
    if not metering():
        return
    status: str = outcome.get("outcome") or ""
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
