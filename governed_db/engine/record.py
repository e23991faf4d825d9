"""Stage 5, record: the statement's outcome to its span, the metrics and the audit writer;
connection-level events."""

from __future__ import annotations

import time
from typing import Any

from psycopg import OperationalError

from .. import _server_mask, telemetry
from ..audit._record import StatementStatic
from ..errors import AuditUnavailable, IdentityError
from ..identity import Identity
from .context import StatementContext
from ._governor_state import GovernorState


class RecordStage(GovernorState):
    """The Governor's methods of this stage (see governor.py)."""

    def succeeded(self, ctx: StatementContext, rowcount: int, status: str | None) -> None:
        """Record a statement that ran; update session state it changed."""
        if ctx.cached is None:  # (a cached plan changes no session object: cacheable())
            self.session_effects(ctx)
        if self.auditor is None and ctx.span is None and not ctx.finished and not (
                telemetry._explicit_meter or telemetry._METER_GLOBALS.get(
                    "_METER_PROVIDER", True) is not None):
            ctx.finished = True  # (no log, span or metrics: nothing to record it to)
            return
        self._record(ctx, outcome="ok", rowcount=rowcount, status=status,
                     affected_rows=ctx.affected_rows, warnings=ctx.runtime_findings or None)

    def failed(self, ctx: StatementContext, exc: BaseException) -> None:
        self.session_effects_unknown(ctx)
        if ctx.settings_check:
            # It may have run code that redefined psycopg's statement names, and no read-back
            # ran behind it: psycopg forgets them before its next statement.
            self.driver_statements_gone = True
        sqlstate = getattr(exc, "sqlstate", None)
        # No answer from the server (the connection was lost or closed under the statement):
        # what the server did is unknown (a backend waiting on a lock still commits an
        # autocommit INSERT after its client has gone), so the record says "unfinished".
        # Refusals of governed_db's own (AuditUnavailable, denials) are known not sent.
        lost = sqlstate is None and (isinstance(exc, GeneratorExit) or (
            isinstance(exc, OperationalError)
            and not isinstance(exc, (AuditUnavailable, IdentityError))))
        self._record(ctx, outcome="unfinished" if lost else "error", sqlstate=sqlstate,
                     error_class=type(exc).__name__)
        self.give_back_approval(ctx)
        if ctx.server_mask is not None:
            _server_mask.forget(self, ctx)  # described again next time (a column type changed?)

    def record_unfinished(self, ctx: StatementContext) -> None:
        """The audit log is closing while ``ctx`` is in flight (sent, its result not read):
        its record now, outcome ``unfinished``, so nothing sent goes unrecorded (called by
        ``AuditLog.close()``, on its thread)."""
        self._record(ctx, outcome="unfinished")

    def _record(self, ctx: StatementContext, **outcome: Any) -> None:
        if ctx.finished:
            return
        # Finished once its record is queued, not before (the finally below):
        # AuditLog.close() waits for statements in flight until then, so the writer does not
        # stop in between.
        try:
            if ctx.span is not None:
                telemetry.end_statement_span(ctx.span, ctx, outcome)
            if (telemetry._explicit_meter or telemetry._METER_GLOBALS.get(
                    "_METER_PROVIDER", True) is not None) and telemetry.metering():
                telemetry.record_metrics(ctx, outcome)
            auditor = self.auditor
            if auditor is None:
                return
            enqueue = getattr(auditor, "enqueue_statement", None)
            if enqueue is None:  # another auditor object: the context-based call
                auditor.statement(ctx, self.conn_info, **outcome)
                return
            # The record's static part, made once per plan (the audit writer serializes it
            # once): reused while the statement has the same identity, analysis, decision and
            # mask plans. Kept with the cached plan when the gate answered from one
            # (engine/cached_plan.py).
            cached = ctx.cached
            statics = self._audit_statics
            static = cached.audit_static if cached is not None else None
            if static is None:
                static = statics.get(ctx.key)
            if static is None or not static.same(ctx.identity, self.conn_info, ctx.analysis,
                                                 ctx.statements, ctx.decision, ctx.plans,
                                                 ctx.lineage, ctx._param_key):
                static = StatementStatic(ctx.identity, self.conn_info, ctx.analysis,
                                         ctx.statements, ctx.decision, ctx.plans, ctx.lineage,
                                         ctx._param_key)
                if ctx.key:
                    if len(statics) >= 1024:
                        statics.clear()
                    statics[ctx.key] = static
            if cached is not None:
                cached.audit_static = static
            span = ctx.span
            trace = None
            if span is not None:
                sc = span.get_span_context()
                trace = (sc.trace_id, sc.span_id)
            enqueue(static, ctx._n or ctx.id, time.time_ns(),
                    (time.perf_counter() - ctx.started) * 1000, ctx.params, ctx.approval_id,
                    outcome, trace)
        finally:
            ctx.finished = True

    def event(self, kind: str, identity: Identity | None = None, **fields: Any) -> None:
        """Connection-level events: connect, close, commit, rollback."""
        if self.auditor is not None:
            self.auditor.event(kind, identity or self.identity(), self.conn_info, **fields)

