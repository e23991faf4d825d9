# Generated from _cursor_async.py by tools/async_to_sync.py: do not edit.
# Change the async source and run `python tools/async_to_sync.py`.
"""Governed cursors and Copy: psycopg's classes plus the choke-point mixin (thin)."""

from __future__ import annotations

from collections.abc import Iterator, Iterable, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Generic

import psycopg
from psycopg import errors as e
from psycopg.abc import Params, Query
from psycopg.copy import Writer
from psycopg.rows import Row

from ._cursor_base import GOV_SLOTS, GovernedCopyMixin, GovernedCursorMixin

__all__ = ["ClientCursor", "Copy", "Cursor", "RawCursor",
           "RawServerCursor", "ServerCursor"]


class Copy(GovernedCopyMixin, psycopg.Copy):
    """psycopg's Copy with COPY TO data masked."""

    __module__ = "governed_db"
    __slots__ = ("_gov_plan",)

    def __init__(self, cursor: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(cursor, *args, **kwargs)
        self._gov_init()

    def finish(self, exc: BaseException | None) -> None:
        """As psycopg's; a COPY FROM under a row limit is then measured (see
        ``GovernedCursorMixin._gov_copy_in_gen``): kept, or rolled back and denied. A COPY
        FROM ends failed, and raises ``AuditUnavailable``, while the audit log cannot be
        written (``_commit_gate``)."""
        refusal = self._gov_end_refusal(exc)
        try:
            super().finish(exc or refusal)
        except BaseException as failure:
            self.connection.wait(self.cursor._gov_copy_end_gen(failure))
            raise
        self.connection.wait(self.cursor._gov_copy_end_gen(exc or refusal))
        if refusal is not None:
            raise refusal


if TYPE_CHECKING:
    from ._connection import Connection

    # What the mixin is mixed into, for the type checker (after GovernedCursorMixin).
    _CursorBase = psycopg.Cursor
else:
    _CursorBase = Generic  # generic in Row like GovernedCursorMixin


class _CopyMixin(_CursorBase[Row]):
    __slots__ = ()

    if TYPE_CHECKING:
        _conn: Connection[Any]  # a governed one (GovernedCursorMixin.__init__)
        _gov_many: Any  # GovernedCursorMixin's slot

        def _gov_serial_executemany(self, query: Query, params_seq: Iterable[Params]) -> bool:
            ...  # GovernedCursorMixin's

        def _gov_discard_copy_out_gen(self) -> Any:
            ...  # GovernedCursorMixin's

    @contextmanager
    def copy(self, statement: Query, params: Params | None = None, *,
             writer: Writer | None = None) -> Iterator[Copy]:
        """Initiate a COPY operation and return a (governed) object to manage it."""
        try:
            with self._conn.lock:
                self._gov_start_copy(statement, params)
                try:
                    copy = Copy(self, writer=writer)
                except BaseException:
                    # Refused after the server began a COPY TO (binary data to mask): read
                    # the rest and drop it, so the connection is left usable.
                    self._conn.wait(self._gov_discard_copy_out_gen())
                    raise
                with copy:
                    yield copy
        except e._NO_TRACEBACK as ex:
            raise ex.with_traceback(None) from None
        self._select_current_result(0)

    def _fetch_pipeline(self) -> None:
        # psycopg's reads ``self.pgresult`` first, which here makes the masking view of the
        # result on every fetch (see GovernedCursorMixin.pgresult); it has nothing to fetch
        # outside a pipeline.
        if self._conn._pipeline is not None:
            super()._fetch_pipeline()

    def _gov_start_copy(self, statement: Query, params: Params | None) -> None:
        self._conn.wait(self._start_copy_gen(statement, params))

    def executemany(self, query: Query, params_seq: Iterable[Params], *,
                    returning: bool = False) -> None:
        """As psycopg's; under an affected-row limit each execution runs in its own savepoint
        (no pipeline), so every execution's exact effect is checked."""
        # The parameter sets as a sequence: an approval is bound to all of them before the
        # first runs (an iterator is read once, here, instead of as psycopg goes).
        seq = params_seq if isinstance(params_seq, Sequence) else list(params_seq)
        return self._gov_executemany(query, seq, returning)

    def _gov_executemany(self, query: Query, seq: Sequence[Params],
                         returning: bool) -> None:
        conn = self._conn
        self._gov_many = seq
        try:
            if conn._pipeline is not None or not self._gov_serial_executemany(query, seq):
                return super().executemany(query, seq, returning=returning)
            try:
                with conn.lock:
                    conn.wait(self._executemany_gen_no_pipeline(query, seq, returning))
            except e._NO_TRACEBACK as ex:
                raise ex.with_traceback(None) from None
        finally:
            self._gov_many = None


class Cursor(GovernedCursorMixin[Row], _CopyMixin[Row], psycopg.Cursor[Row]):
    __module__ = "governed_db"
    __slots__ = GOV_SLOTS


class ClientCursor(GovernedCursorMixin[Row], _CopyMixin[Row], psycopg.ClientCursor[Row]):
    __module__ = "governed_db"
    __slots__ = GOV_SLOTS


class RawCursor(GovernedCursorMixin[Row], _CopyMixin[Row], psycopg.RawCursor[Row]):
    __module__ = "governed_db"
    __slots__ = GOV_SLOTS


class ServerCursor(GovernedCursorMixin[Row], psycopg.ServerCursor[Row]):
    __module__ = "governed_db"
    __slots__ = GOV_SLOTS


class RawServerCursor(GovernedCursorMixin[Row], psycopg.RawServerCursor[Row]):
    __module__ = "governed_db"
    __slots__ = GOV_SLOTS


_wrapped: dict[type, type] = {}


def governed_cursor_class(cls: Any, *, server: bool = False) -> type:
    """The governed version of a cursor class (e.g. one OpenTelemetry's
    instrumentation made)."""
    if isinstance(cls, type) and issubclass(cls, GovernedCursorMixin):
        return cls
    if not (isinstance(cls, type) and issubclass(cls, (psycopg.Cursor,
                                                       psycopg.ClientCursor,
                                                       psycopg.RawCursor,
                                                       psycopg.ServerCursor))):
        raise TypeError(f"{cls!r} is not a psycopg cursor class; governed connections"
                        " only accept cursor classes they can govern")
    try:
        return _wrapped[cls]
    except KeyError:
        pass
    bases = (GovernedCursorMixin, cls) if server or issubclass(cls, psycopg.ServerCursor) else (
        GovernedCursorMixin, _CopyMixin, cls)
    new = type(f"Governed{cls.__name__}", bases, {"__slots__": GOV_SLOTS,
                                                  "__module__": "governed_db"})
    _wrapped[cls] = new
    return new
