"""Governed async cursors and AsyncCopy: psycopg's classes plus the choke-point mixin (thin)."""

from __future__ import annotations

import asyncio  # async only
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import errors as e
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
        ``GovernedCursorMixin._gov_copy_in_gen``): kept, or rolled back and denied."""
        try:
            await super().finish(exc)
        except BaseException as failure:
            await self.connection.wait(self.cursor._gov_copy_end_gen(failure))
            raise
        await self.connection.wait(self.cursor._gov_copy_end_gen(exc))


class _AsyncCopyMixin:
    __slots__ = ()

    @asynccontextmanager
    async def copy(self, statement: Any, params: Any = None, *,
                   writer: Any = None) -> AsyncIterator[AsyncCopy]:
        """Initiate a COPY operation and return a (governed) object to manage it."""
        try:
            async with self._conn.lock:  # type: ignore[attr-defined]
                await self._conn.wait(self._start_copy_gen(statement, params))  # type: ignore[attr-defined]
                async with AsyncCopy(self, writer=writer) as copy:
                    yield copy
        except e._NO_TRACEBACK as ex:
            raise ex.with_traceback(None) from None
        self._select_current_result(0)  # type: ignore[attr-defined]

    # async only: begin (the sync statement hook waits for the decision itself, see engine.decide)
    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        """As psycopg's. In approval wait mode (``[approvals] wait_seconds``) a statement that
        needs approval waits for the decision without blocking the event loop, then runs
        (approved) or is denied; the sync path waits inside the statement hook instead."""
        try:
            return await super().execute(query, params, **kwargs)  # type: ignore[misc]
        except ApprovalRequired as exc:
            gov = self._conn._governor  # type: ignore[attr-defined]
            wait = gov.policy.approvals.get("wait_seconds") if gov is not None else None
            if not wait:
                raise
            store = _config.approvals(gov.policy)
            status = await asyncio.to_thread(store.wait, exc.request_id, float(wait))
            if status not in ("approved", "denied"):
                raise
        # Approved: runs once. Denied: the store remembers it, so this raises the denial
        # (by whom, when, why) without filing a new request.
        return await super().execute(query, params, **kwargs)  # type: ignore[misc]
    # async only: end

    async def executemany(self, query: Any, params_seq: Any, *, returning: bool = False) -> None:
        """As psycopg's; under an affected-row limit each execution runs in its own savepoint
        (no pipeline), so every execution's exact effect is checked."""
        conn = self._conn  # type: ignore[attr-defined]
        if conn._pipeline is not None or not self._gov_serial_executemany(query, params_seq):
            return await super().executemany(  # type: ignore[misc,no-any-return]
                query, params_seq, returning=returning)
        try:
            async with conn.lock:
                await conn.wait(self._executemany_gen_no_pipeline(  # type: ignore[attr-defined]
                    query, params_seq, returning))
        except e._NO_TRACEBACK as ex:
            raise ex.with_traceback(None) from None


class AsyncCursor(GovernedCursorMixin, _AsyncCopyMixin, psycopg.AsyncCursor[Row]):
    __module__ = "governed_db"
    __slots__ = GOV_SLOTS


class AsyncClientCursor(GovernedCursorMixin, _AsyncCopyMixin, psycopg.AsyncClientCursor[Row]):
    __module__ = "governed_db"
    __slots__ = GOV_SLOTS


class AsyncRawCursor(GovernedCursorMixin, _AsyncCopyMixin, psycopg.AsyncRawCursor[Row]):
    __module__ = "governed_db"
    __slots__ = GOV_SLOTS


class AsyncServerCursor(GovernedCursorMixin, psycopg.AsyncServerCursor[Row]):
    __module__ = "governed_db"
    __slots__ = GOV_SLOTS


class AsyncRawServerCursor(GovernedCursorMixin, psycopg.AsyncRawServerCursor[Row]):
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
