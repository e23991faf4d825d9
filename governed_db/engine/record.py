"""Stage 5, record: the statement's outcome to its span, the metrics and the audit writer;
connection-level events."""

from __future__ import annotations

from typing import Any

from .. import _server_mask, telemetry
from ..identity import Identity
from .context import StatementContext


class RecordStage:
    """The Governor's methods of this stage (see governor.py)."""

    def succeeded(self, ctx: StatementContext, rowcount: int, status: str | None) -> None:
        """Record a statement that ran; update session state it changed."""
        self.session_effects(ctx)
        self._record(ctx, outcome="ok", rowcount=rowcount, status=status,
                     affected_rows=ctx.affected_rows, warnings=ctx.runtime_findings or None)

    def failed(self, ctx: StatementContext, exc: BaseException) -> None:
        self.session_effects_unknown(ctx)
        sqlstate = getattr(exc, "sqlstate", None)
        self._record(ctx, outcome="error", sqlstate=sqlstate, error_class=type(exc).__name__)
        self.give_back_approval(ctx)
        if ctx.server_mask is not None:
            _server_mask.forget(self, ctx)  # described again next time (a column type changed?)

    def _record(self, ctx: StatementContext, **outcome: Any) -> None:
        if ctx.finished:
            return
        ctx.finished = True
        if ctx.span is not None:
            telemetry.end_statement_span(ctx.span, ctx, outcome)
        telemetry.record_metrics(ctx, outcome)
        if self.auditor is None:
            return
        self.auditor.statement(ctx, self.conn_info, **outcome)

    def event(self, kind: str, identity: Identity | None = None, **fields: Any) -> None:
        """Connection-level events: connect, close, commit, rollback."""
        if self.auditor is not None:
            self.auditor.event(kind, identity or self.identity(), self.conn_info, **fields)

