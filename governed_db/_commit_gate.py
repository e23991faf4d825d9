"""Nothing commits while the audit trail cannot be written.

Every statement is refused at the statement choke point when the connection's audit log has
failed or is closed (``GovernedCursorMixin._start_query``). Work already sent before the log
failed can still reach a *commit point* without passing that choke point again; each one checks
the log first and, when it cannot be written, rolls back instead of committing and raises
``AuditUnavailable`` (fail closed; a failed log configured with ``on_failure = "open"`` runs
on):

- ``connection.commit()``: refused, the transaction left open as it was (the caller may roll
  back, or commit once the log can be written again: a full disk, freed);
  ``GovernedConnectionMixin._commit_gen``.
- the end of a ``with conn.transaction():`` block (``COMMIT``, or ``RELEASE`` of its
  savepoint): the block's work is rolled back as when the block raises, then the refusal is
  raised (:class:`GovernedTransactionMixin`).
- a pipeline's sync (``Pipeline.sync()``, the end of the pipeline block, a nested pipeline
  or transaction block starting): statements queued since the last sync outside a
  transaction block (autocommit mode, or after a ``COMMIT`` the caller queued) run in one
  implicit transaction that the sync commits. A ``ROLLBACK`` is queued before the sync (the
  server aborts the implicit transaction, or the open one, which could not commit on this
  log either), then the refusal is raised (:class:`GovernedPipelineMixin`).
- governance's own transaction around a write whose effect it measures (the row limits):
  rolled back instead of committed (``GovernedCursorMixin._gov_settle_gen``).
- ``tpc_prepare()`` and ``tpc_commit()``: refused like ``commit()``.
- the end of ``COPY ... FROM STDIN`` (and every block of data written to it): the copy is
  failed (``CopyFail``, the server keeps nothing of it) and the refusal raised
  (``GovernedCopyMixin``).

Statements already sent when the log closes are recorded all the same (``AuditLog.close()``
waits for those running and records the rest as ``unfinished``): a ``COMMIT`` the server ran
before the close is in the log.

These hook psycopg 3.3 private generators (pinned ``>=3.3,<3.4``), as the connection and
cursor mixins do.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from psycopg import errors as e
from psycopg.transaction import OutOfOrderTransactionNesting

from .errors import AuditUnavailable

if TYPE_CHECKING:
    from psycopg._pipeline_base import BasePipeline
    from psycopg.transaction import BaseTransaction

    _TransactionBase = BaseTransaction[Any]
    _PipelineBase = BasePipeline
else:
    _TransactionBase = _PipelineBase = object

__all__ = ["GovernedPipelineMixin", "GovernedTransactionMixin", "audit_refusal"]


def audit_refusal(conn: Any) -> AuditUnavailable | None:
    """Why ``conn``'s work may not commit now (its audit log failed or is closed), or None."""
    gov = getattr(conn, "_governor", None)
    auditor = gov.auditor if gov is not None else None
    if auditor is None or (auditor.error is None and not auditor.closed):
        return None
    try:
        auditor.check()
    except AuditUnavailable as exc:
        return exc
    return None  # a failed log configured to fail open


class GovernedTransactionMixin(_TransactionBase):
    """psycopg's Transaction whose successful end is a commit point (see the module)."""

    def __repr__(self) -> str:
        from ._cursor_base import governed_repr

        return governed_repr(self, super().__repr__())

    def _commit_gen(self) -> Any:
        refusal = audit_refusal(self._conn)
        if refusal is None:
            yield from super()._commit_gen()
            return
        try:
            # As psycopg ends a block that raised: ROLLBACK, or ROLLBACK TO and RELEASE of
            # its savepoint (an enclosing block then sees the refusal and rolls back too).
            yield from super()._rollback_gen(refusal)
        except OutOfOrderTransactionNesting:
            raise
        except e.Error:
            pass  # (the connection is broken: nothing commits either way)
        raise refusal


class GovernedPipelineMixin(_PipelineBase):
    """psycopg's Pipeline whose syncs are commit points (see the module)."""

    _gov_refusal: AuditUnavailable | None = None

    def __repr__(self) -> str:
        from ._cursor_base import governed_repr

        return governed_repr(self, super().__repr__())

    def _enqueue_sync(self) -> None:
        self._gov_refusal = None
        refusal = audit_refusal(self._conn)
        if refusal is not None:
            # What was queued since the last sync is rolled back before the sync would
            # commit it: ROLLBACK ends the implicit transaction (with a warning) or the
            # open one (which could not commit on this log either).
            pgconn = self.pgconn
            self.command_queue.append(partial(pgconn.send_query_params, b"ROLLBACK", None))
            self.result_queue.append(None)
            self._gov_refusal = refusal
        super()._enqueue_sync()

    def _gov_raise_refusal(self) -> None:
        refusal, self._gov_refusal = self._gov_refusal, None
        if refusal is not None:
            raise refusal

    def _sync_gen(self) -> Any:
        yield from super()._sync_gen()
        self._gov_raise_refusal()

    def _exit_gen(self) -> Any:
        yield from super()._exit_gen()
        self._gov_raise_refusal()
