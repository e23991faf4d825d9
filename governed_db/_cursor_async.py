"""Governed async cursors and AsyncCopy: psycopg's classes plus the choke-point mixin (thin)."""

from __future__ import annotations

import asyncio  # async only
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Generic
from typing import Self  # async only

import psycopg
from psycopg import errors as e
from psycopg.abc import Params, Query
from psycopg.copy import AsyncWriter
from psycopg.rows import Row

from . import _config  # async only
from ._cursor_base import GOV_SLOTS, GovernedCopyMixin, GovernedCursorMixin
from .errors import ApprovalRequired  # async only

__all__ = ["AsyncClientCursor", "AsyncCopy", "AsyncCursor", "AsyncRawCursor",
           "AsyncRawServerCursor", "AsyncServerCursor"]


class AsyncCopy(GovernedCopyMixin, psycopg.AsyncCopy):
    """psycopg's AsyncCopy with COPY TO data masked."""

    __module__ = "governed_db"
    __slots__ = ("_gov_plan",)

    def __init__(self, cursor: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(cursor, *args, **kwargs)
        self._gov_init()

    async def finish(self, exc: BaseException | None) -> None:
        """As psycopg's; a COPY FROM under a row limit is then measured (see
        ``GovernedCursorMixin._gov_copy_in_gen``): kept, or rolled back and denied. A COPY
        FROM ends failed, and raises ``AuditUnavailable``, while the audit log cannot be
        written (``_commit_gate``)."""
        refusal = self._gov_end_refusal(exc)
        try:
            await super().finish(exc or refusal)
        except BaseException as failure:
            await self.connection.wait(self.cursor._gov_copy_end_gen(failure))
            raise
        await self.connection.wait(self.cursor._gov_copy_end_gen(exc or refusal))
        if refusal is not None:
            raise refusal


if TYPE_CHECKING:
    from ._connection_async import AsyncConnection

    # What the mixin is mixed into, for the type checker (after GovernedCursorMixin).
    _AsyncCursorBase = psycopg.AsyncCursor
else:
    _AsyncCursorBase = Generic  # generic in Row like GovernedCursorMixin


class _AsyncCopyMixin(_AsyncCursorBase[Row]):
    __slots__ = ()

    if TYPE_CHECKING:
        _conn: AsyncConnection[Any]  # a governed one (GovernedCursorMixin.__init__)
        _gov_many: Any  # GovernedCursorMixin's slot

        def _gov_serial_executemany(self, query: Query, params_seq: Iterable[Params]) -> bool:
            ...  # GovernedCursorMixin's

        def _gov_discard_copy_out_gen(self) -> Any:
            ...  # GovernedCursorMixin's

    @asynccontextmanager
    async def copy(self, statement: Query, params: Params | None = None, *,
                   writer: AsyncWriter | None = None) -> AsyncIterator[AsyncCopy]:
        """Initiate a COPY operation and return a (governed) object to manage it."""
        try:
            async with self._conn.lock:
                await self._gov_start_copy(statement, params)
                try:
                    copy = AsyncCopy(self, writer=writer)
                except BaseException:
                    # Refused after the server began a COPY TO (binary data to mask): read
                    # the rest and drop it, so the connection is left usable.
                    await self._conn.wait(self._gov_discard_copy_out_gen())
                    raise
                async with copy:
                    yield copy
        except e._NO_TRACEBACK as ex:
            raise ex.with_traceback(None) from None
        self._select_current_result(0)

    async def _fetch_pipeline(self) -> None:
        # psycopg's reads ``self.pgresult`` first, which here makes the masking view of the
        # result on every fetch (see GovernedCursorMixin.pgresult); it has nothing to fetch
        # outside a pipeline.
        if self._conn._pipeline is not None:
            await super()._fetch_pipeline()

    # async only: begin (the sync statement hook waits for the decision itself, see engine.decide)
    async def execute(self, query: Query, params: Params | None = None, *,
                      prepare: bool | None = None, binary: bool | None = None) -> Self:
        """As psycopg's. In approval wait mode (``[approvals] wait_seconds``) a statement that
        needs approval waits for the decision without blocking the event loop, then runs
        (approved) or is denied; the sync path waits inside the statement hook instead."""
        try:
            # (psycopg's overloads keep Template queries apart from params; its implementation,
            # called here, takes either)
            return await super().execute(query, params, prepare=prepare, binary=binary)  # type: ignore[arg-type, misc]
        except ApprovalRequired as exc:
            if not await self._gov_approval_waited(exc):
                raise
        # Approved: runs once. Denied: the store remembers it, so this raises the denial
        # (by whom, when, why) without filing a new request.
        return await super().execute(query, params, prepare=prepare, binary=binary)  # type: ignore[arg-type, misc]

    async def _gov_approval_waited(self, exc: ApprovalRequired) -> bool:
        """Approval wait mode (``[approvals] wait_seconds``): wait for the decision on
        ``exc``'s request without blocking the event loop. True: decided (run the statement
        again: approved, it runs once; denied, the store raises the denial)."""
        gov = self._conn._governor
        wait = gov.policy.approvals.get("wait_seconds") if gov is not None else None
        if gov is None or not wait:
            return False
        store = _config.approvals(gov.policy)
        status = await asyncio.to_thread(store.wait, exc.request_id, float(wait))
        return status in ("approved", "denied")

    async def stream(self, query: Query, params: Params | None = None, *,
                     binary: bool | None = None, size: int = 1) -> AsyncIterator[Row]:
        """As psycopg's; in approval wait mode it waits for a decision like execute()
        (nothing was sent: the statement hook raised before any row)."""
        rows = super().stream(query, params, binary=binary, size=size)
        try:
            try:
                first = await anext(rows)
            except ApprovalRequired as exc:
                if not await self._gov_approval_waited(exc):
                    raise
                rows = super().stream(query, params, binary=binary, size=size)
                first = await anext(rows)
            yield first
            async for row in rows:
                yield row
        except StopAsyncIteration:
            return
        finally:
            close = getattr(rows, "aclose", None)  # (psycopg's is an async generator)
            if close is not None:
                await close()
    # async only: end

    async def _gov_start_copy(self, statement: Query, params: Params | None) -> None:
        # async only: begin (the sync statement hook waits for a decision itself)
        try:
            await self._conn.wait(self._start_copy_gen(statement, params))
            return
        except ApprovalRequired as exc:
            if not await self._gov_approval_waited(exc):
                raise
        # async only: end
        await self._conn.wait(self._start_copy_gen(statement, params))

    async def executemany(self, query: Query, params_seq: Iterable[Params], *,
                          returning: bool = False) -> None:
        """As psycopg's; under an affected-row limit each execution runs in its own savepoint
        (no pipeline), so every execution's exact effect is checked."""
        # The parameter sets as a sequence: an approval is bound to all of them before the
        # first runs (an iterator is read once, here, instead of as psycopg goes).
        seq = params_seq if isinstance(params_seq, Sequence) else list(params_seq)
        # async only: begin (the sync statement hook waits for a decision itself)
        try:
            return await self._gov_executemany(query, seq, returning)
        except ApprovalRequired as exc:
            if not await self._gov_approval_waited(exc):
                raise
        # async only: end
        return await self._gov_executemany(query, seq, returning)

    async def _gov_executemany(self, query: Query, seq: Sequence[Params],
                               returning: bool) -> None:
        conn = self._conn
        self._gov_many = seq
        try:
            if conn._pipeline is not None or not self._gov_serial_executemany(query, seq):
                return await super().executemany(query, seq, returning=returning)
            try:
                async with conn.lock:
                    await conn.wait(self._executemany_gen_no_pipeline(query, seq, returning))
            except e._NO_TRACEBACK as ex:
                raise ex.with_traceback(None) from None
        finally:
            self._gov_many = None


class AsyncCursor(GovernedCursorMixin[Row], _AsyncCopyMixin[Row], psycopg.AsyncCursor[Row]):
    __module__ = "governed_db"
    __slots__ = GOV_SLOTS


class AsyncClientCursor(GovernedCursorMixin[Row], _AsyncCopyMixin[Row], psycopg.AsyncClientCursor[Row]):
    __module__ = "governed_db"
    __slots__ = GOV_SLOTS


class AsyncRawCursor(GovernedCursorMixin[Row], _AsyncCopyMixin[Row], psycopg.AsyncRawCursor[Row]):
    __module__ = "governed_db"
    __slots__ = GOV_SLOTS


class AsyncServerCursor(GovernedCursorMixin[Row], psycopg.AsyncServerCursor[Row]):
    __module__ = "governed_db"
    __slots__ = GOV_SLOTS


class AsyncRawServerCursor(GovernedCursorMixin[Row], psycopg.AsyncRawServerCursor[Row]):
    __module__ = "governed_db"
    __slots__ = GOV_SLOTS


_wrapped: dict[type, type] = {}


def governed_async_cursor_class(cls: Any, *, server: bool = False) -> type:
    """The governed version of an async cursor class (e.g. one OpenTelemetry's
    instrumentation made)."""
    if isinstance(cls, type) and issubclass(cls, GovernedCursorMixin):
        return cls
    if not (isinstance(cls, type) and issubclass(cls, (psycopg.AsyncCursor,
                                                       psycopg.AsyncClientCursor,
                                                       psycopg.AsyncRawCursor,
                                                       psycopg.AsyncServerCursor))):
        raise TypeError(f"{cls!r} is not a psycopg async cursor class; governed connections"
                        " only accept cursor classes they can govern")
    try:
        return _wrapped[cls]
    except KeyError:
        pass
    bases = (GovernedCursorMixin, cls) if server or issubclass(cls, psycopg.AsyncServerCursor) else (
        GovernedCursorMixin, _AsyncCopyMixin, cls)
    new = type(f"Governed{cls.__name__}", bases, {"__slots__": GOV_SLOTS,
                                                  "__module__": "governed_db"})
    _wrapped[cls] = new
    return new
