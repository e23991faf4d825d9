"""The governed AsyncConnection: psycopg's AsyncConnection with governance wired in (thin)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Self, cast, overload

import psycopg
from psycopg.abc import AdaptContext, ConnParam, Params, Query, QueryNoTemplate
from psycopg.rows import Row

from ._commit_gate import GovernedPipelineMixin, GovernedTransactionMixin
from ._connection_base import GovernedConnectionMixin, masked_notify, pop_governed_kwargs
from ._cursor_async import AsyncCursor, AsyncServerCursor, governed_async_cursor_class
from ._typing import AsyncRowFactory, AuditArg, IdentityArg, PolicyArg

if TYPE_CHECKING:
    from psycopg._compat import Template
    from psycopg._connection_base import CursorRow

__all__ = ["AsyncConnection"]


class AsyncTransaction(GovernedTransactionMixin, psycopg.AsyncTransaction):
    """psycopg's AsyncTransaction; its end commits only while the audit log can be written."""


class AsyncPipeline(GovernedPipelineMixin, psycopg.AsyncPipeline):
    """psycopg's AsyncPipeline; its syncs commit only while the audit log can be written."""


class AsyncConnection(GovernedConnectionMixin, psycopg.AsyncConnection[Row]):
    """A psycopg AsyncConnection whose every statement and row passes governance.

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
        self._gov_cursor_factory = (AsyncCursor if cls is psycopg.AsyncCursor
                                    else governed_async_cursor_class(cls))

    @property
    def server_cursor_factory(self) -> type:
        return self._gov_server_cursor_factory

    @server_cursor_factory.setter
    def server_cursor_factory(self, cls: Any) -> None:
        self._gov_server_cursor_factory = (AsyncServerCursor if cls is psycopg.AsyncServerCursor
                                           else governed_async_cursor_class(cls, server=True))

    if TYPE_CHECKING:
        # psycopg's signatures, with the governed cursor classes a governed connection makes
        # (and row factories that may be typed with them, see _typing).
        @overload
        def cursor(self, *, binary: bool = False) -> AsyncCursor[Row]: ...

        @overload
        def cursor(self, *, binary: bool = False,
                   row_factory: AsyncRowFactory[CursorRow]) -> AsyncCursor[CursorRow]: ...

        @overload
        def cursor(self, name: str, *, binary: bool = False, scrollable: bool | None = None,
                   withhold: bool = False) -> AsyncServerCursor[Row]: ...

        @overload
        def cursor(self, name: str, *, binary: bool = False,
                   row_factory: AsyncRowFactory[CursorRow], scrollable: bool | None = None,
                   withhold: bool = False) -> AsyncServerCursor[CursorRow]: ...

        def cursor(self, name: str = "", *, binary: bool = False,
                   row_factory: AsyncRowFactory[Any] | None = None,
                   scrollable: bool | None = None,
                   withhold: bool = False) -> AsyncCursor[Any] | AsyncServerCursor[Any]: ...

        @overload
        async def execute(
            self, query: QueryNoTemplate, params: Params | None = None, *,
            prepare: bool | None = None, binary: bool = False,
        ) -> AsyncCursor[Row]: ...

        @overload
        async def execute(
            self, query: Template, *, prepare: bool | None = None, binary: bool = False,
        ) -> AsyncCursor[Row]: ...

        async def execute(
            self, query: Query, params: Params | None = None, *,
            prepare: bool | None = None, binary: bool = False,
        ) -> AsyncCursor[Row]: ...

    # [override]: psycopg's **kwargs take any keyword as a libpq parameter (str | int | None);
    # identity=, policy=, audit= and identity_token= are governed_db's, with their own types.
    @classmethod
    async def connect(  # type: ignore[override]
        cls,
        conninfo: str = "",
        *,
        autocommit: bool = False,
        prepare_threshold: int | None = 5,
        context: AdaptContext | None = None,
        row_factory: AsyncRowFactory[Row] | None = None,
        cursor_factory: type[psycopg.AsyncCursor[Row]] | None = None,
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
        conn = await super().connect(
            conninfo, autocommit=autocommit, prepare_threshold=prepare_threshold,
            context=context, cursor_factory=cursor_factory,
            # Called with governed cursors only (see _typing.AsyncRowFactory).
            row_factory=cast("psycopg.rows.AsyncRowFactory[Row] | None", row_factory),
            **kwargs)
        try:
            conn._gov_setup(opts)
            # Identity on the session and the catalog snapshot now, not at the first
            # statement: a first statement in pipeline mode then has exact lineage too.
            async with conn.lock:
                await conn.wait(conn._gov_session_gen(conn.governor.identity()))
        except BaseException:
            await conn.close()
            raise
        return conn

    @asynccontextmanager
    async def transaction(self, savepoint_name: str | None = None,
                          force_rollback: bool = False
                          ) -> AsyncIterator[psycopg.AsyncTransaction]:
        """As psycopg's; the block's end commits only while the audit log can be written (else
        its work is rolled back and ``AuditUnavailable`` raised: ``_commit_gate``)."""
        tx = AsyncTransaction(self, savepoint_name, force_rollback)
        if self._pipeline:
            async with self.pipeline(), tx, self.pipeline():
                yield tx
        else:
            async with tx:
                yield tx

    @asynccontextmanager
    async def pipeline(self) -> AsyncIterator[psycopg.AsyncPipeline]:
        """As psycopg's; results that need the catalog snapshot reloaded are planned again
        when the pipeline ends (masked until then); a due catalog snapshot is reloaded before
        it starts; a sync commits only while the audit log can be written (``_commit_gate``)."""
        if self._pipeline is None and self._governor is not None:
            async with self.lock:
                await self.wait(self._gov_before_pipeline_gen())
        # (psycopg 3.3's pipeline(), with the governed pipeline class)
        async with self.lock:
            self._check_connection_ok()
            if (pipeline := self._pipeline) is None:
                pipeline = self._pipeline = AsyncPipeline(self)  # (a loop, broken below)
        try:
            async with pipeline:
                yield pipeline
        finally:
            if pipeline.level == 0:
                async with self.lock:
                    assert pipeline is self._pipeline
                    self._pipeline = None
        if self._pipeline is None and self._gov_replan_cursors:
            async with self.lock:
                await self.wait(self._gov_after_pipeline_gen())

    @asynccontextmanager
    async def _pipeline_nolock(self) -> AsyncIterator[psycopg.AsyncPipeline]:
        # executemany()'s own pipeline (the lock is held; psycopg 3.3's, with the governed
        # pipeline class)
        await self.wait(self._gov_before_pipeline_gen())
        assert not self._pipeline
        pipeline = self._pipeline = AsyncPipeline(self, _no_lock=True)
        try:
            async with pipeline:
                yield pipeline
        finally:
            assert pipeline.level == 0
            assert pipeline is self._pipeline
            self._pipeline = None

    async def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
        error: psycopg.Error | None = None
        try:
            rv = await super().wait(gen, *args, **kwargs)
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

    async def notifies(self, *, timeout: float | None = None,
                       stop_after: int | None = None) -> Any:
        """As psycopg's, with detectable values in payloads masked."""
        async for n in super().notifies(timeout=timeout, stop_after=stop_after):
            yield masked_notify(n)

    async def close(self) -> None:
        was_open = self._gov_closing()
        await super().close()
        self._gov_closed(was_open)
