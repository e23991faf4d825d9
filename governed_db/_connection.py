# Generated from _connection_async.py by tools/async_to_sync.py: do not edit.
# Change the async source and run `python tools/async_to_sync.py`.
"""The governed Connection: psycopg's Connection with governance wired in (thin)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Self, cast, overload

import psycopg
from psycopg.abc import AdaptContext, ConnParam, Params, Query, QueryNoTemplate
from psycopg.rows import Row

from ._commit_gate import GovernedPipelineMixin, GovernedTransactionMixin
from ._connection_base import GovernedConnectionMixin, masked_notify, pop_governed_kwargs
from ._cursor import Cursor, ServerCursor, governed_cursor_class
from ._typing import RowFactory, AuditArg, IdentityArg, PolicyArg

if TYPE_CHECKING:
    from psycopg._compat import Template
    from psycopg._connection_base import CursorRow

__all__ = ["Connection"]


class Transaction(GovernedTransactionMixin, psycopg.Transaction):
    """psycopg's Transaction; its end commits only while the audit log can be written."""


class Pipeline(GovernedPipelineMixin, psycopg.Pipeline):
    """psycopg's Pipeline; its syncs commit only while the audit log can be written."""


class Connection(GovernedConnectionMixin, psycopg.Connection[Row]):
    """A psycopg Connection whose every statement and row passes governance.

    ``cursor_factory`` and ``server_cursor_factory`` stay writable, but an ungoverned cursor
    class assigned to them (e.g. by ``opentelemetry-instrumentation-psycopg``) is wrapped in a
    governed subclass instead of silently switching governance off.
    """

    __module__ = "governed_db"

    @property
    def cursor_factory(self) -> type:
        return self._gov_cursor_factory

    @cursor_factory.setter
    def cursor_factory(self, cls: Any) -> None:
        self._gov_cursor_factory = (Cursor if cls is psycopg.Cursor
                                    else governed_cursor_class(cls))

    @property
    def server_cursor_factory(self) -> type:
        return self._gov_server_cursor_factory

    @server_cursor_factory.setter
    def server_cursor_factory(self, cls: Any) -> None:
        self._gov_server_cursor_factory = (ServerCursor if cls is psycopg.ServerCursor
                                           else governed_cursor_class(cls, server=True))

    if TYPE_CHECKING:
        # psycopg's signatures, with the governed cursor classes a governed connection makes
        # (and row factories that may be typed with them, see _typing).
        @overload
        def cursor(self, *, binary: bool = False) -> Cursor[Row]: ...

        @overload
        def cursor(self, *, binary: bool = False,
                   row_factory: RowFactory[CursorRow]) -> Cursor[CursorRow]: ...

        @overload
        def cursor(self, name: str, *, binary: bool = False, scrollable: bool | None = None,
                   withhold: bool = False) -> ServerCursor[Row]: ...

        @overload
        def cursor(self, name: str, *, binary: bool = False,
                   row_factory: RowFactory[CursorRow], scrollable: bool | None = None,
                   withhold: bool = False) -> ServerCursor[CursorRow]: ...

        def cursor(self, name: str = "", *, binary: bool = False,
                   row_factory: RowFactory[Any] | None = None,
                   scrollable: bool | None = None,
                   withhold: bool = False) -> Cursor[Any] | ServerCursor[Any]: ...

        @overload
        def execute(
            self, query: QueryNoTemplate, params: Params | None = None, *,
            prepare: bool | None = None, binary: bool = False,
        ) -> Cursor[Row]: ...

        @overload
        def execute(
            self, query: Template, *, prepare: bool | None = None, binary: bool = False,
        ) -> Cursor[Row]: ...

        def execute(
            self, query: Query, params: Params | None = None, *,
            prepare: bool | None = None, binary: bool = False,
        ) -> Cursor[Row]: ...

    # [override]: psycopg's **kwargs take any keyword as a libpq parameter (str | int | None);
    # identity=, policy=, audit= and identity_token= are governed_db's, with their own types.
    @classmethod
    def connect(  # type: ignore[override]
        cls,
        conninfo: str = "",
        *,
        autocommit: bool = False,
        prepare_threshold: int | None = 5,
        context: AdaptContext | None = None,
        row_factory: RowFactory[Row] | None = None,
        cursor_factory: type[psycopg.Cursor[Row]] | None = None,
        identity: IdentityArg = None,
        identity_token: str | bytes | None = None,
        policy: PolicyArg = None,
        audit: AuditArg = None,
        **kwargs: ConnParam,
    ) -> Self:
        """Connect like psycopg, plus ``identity=``, ``identity_token=``, ``policy=``,
        ``audit=``."""
        opts = pop_governed_kwargs({"identity": identity, "identity_token": identity_token,
                                    "policy": policy, "audit": audit})
        conn = super().connect(
            conninfo, autocommit=autocommit, prepare_threshold=prepare_threshold,
            context=context, cursor_factory=cursor_factory,
            # Called with governed cursors only (see _typing.RowFactory).
            row_factory=cast("psycopg.rows.RowFactory[Row] | None", row_factory),
            **kwargs)
        try:
            conn._gov_setup(opts)
            # Identity on the session and the catalog snapshot now, not at the first
            # statement: a first statement in pipeline mode then has exact lineage too.
            with conn.lock:
                conn.wait(conn._gov_session_gen(conn.governor.identity()))
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def transaction(self, savepoint_name: str | None = None,
                    force_rollback: bool = False
                    ) -> Iterator[psycopg.Transaction]:
        """As psycopg's; the block's end commits only while the audit log can be written (else
        its work is rolled back and ``AuditUnavailable`` raised: ``_commit_gate``)."""
        tx = Transaction(self, savepoint_name, force_rollback)
        if self._pipeline:
            with self.pipeline(), tx, self.pipeline():
                yield tx
        else:
            with tx:
                yield tx

    @contextmanager
    def pipeline(self) -> Iterator[psycopg.Pipeline]:
        """As psycopg's; results that need the catalog snapshot reloaded are planned again
        when the pipeline ends (masked until then); a due catalog snapshot is reloaded before
        it starts; a sync commits only while the audit log can be written (``_commit_gate``)."""
        if self._pipeline is None and self._governor is not None:
            with self.lock:
                self.wait(self._gov_before_pipeline_gen())
        # (psycopg 3.3's pipeline(), with the governed pipeline class)
        with self.lock:
            self._check_connection_ok()
            if (pipeline := self._pipeline) is None:
                pipeline = self._pipeline = Pipeline(self)  # (a loop, broken below)
        try:
            with pipeline:
                yield pipeline
        finally:
            if pipeline.level == 0:
                with self.lock:
                    assert pipeline is self._pipeline
                    self._pipeline = None
        if self._pipeline is None and self._gov_replan_cursors:
            with self.lock:
                self.wait(self._gov_after_pipeline_gen())

    @contextmanager
    def _pipeline_nolock(self) -> Iterator[psycopg.Pipeline]:
        # executemany()'s own pipeline (the lock is held; psycopg 3.3's, with the governed
        # pipeline class)
        self.wait(self._gov_before_pipeline_gen())
        assert not self._pipeline
        pipeline = self._pipeline = Pipeline(self, _no_lock=True)
        try:
            with pipeline:
                yield pipeline
        finally:
            assert pipeline.level == 0
            assert pipeline is self._pipeline
            self._pipeline = None

    def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
        error: psycopg.Error | None = None
        try:
            rv = super().wait(gen, *args, **kwargs)
        except psycopg.Error as exc:
            error = exc
        # After every operation, failed ones too: the server state must still be what the
        # identity requires (raises, closing the session, when it is not).
        self._gov_verify_server_state()
        if error is None:
            return rv
        failure = self._gov_redact(error)
        if failure is error:
            raise error
        # Raised outside the except block so the unredacted error is not chained to it.
        raise failure

    def notifies(self, *, timeout: float | None = None,
                 stop_after: int | None = None) -> Any:
        """As psycopg's, with detectable values in payloads masked."""
        for n in super().notifies(timeout=timeout, stop_after=stop_after):
            yield masked_notify(n)

    def close(self) -> None:
        was_open = self._gov_closing()
        super().close()
        self._gov_closed(was_open)
