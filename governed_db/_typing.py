"""Types the governed signatures share (typing only; nothing here runs on a statement's path).

Row factories: psycopg's ``RowFactory`` protocol takes a *psycopg* cursor, so a factory
annotated the way code written for ``import governed_db as psycopg`` annotates it
(``def f(cursor: psycopg.Cursor[Any]) -> RowMaker[T]``, i.e. a governed cursor) would not
match it. Governed connections only ever call a factory with one of their own cursors, so
their signatures take these protocols: anything psycopg's protocols accept (``dict_row``,
``class_row(...)``, a factory typed with psycopg's classes) and factories typed with governed
cursors too.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

from psycopg.rows import Row, RowMaker

if TYPE_CHECKING:
    from ._cursor import Cursor
    from ._cursor_async import AsyncCursor
    from .audit import AuditLog
    from .identity import Identity
    from .policy import Policy

__all__ = ["AsyncRowFactory", "AuditArg", "IdentityArg", "PolicyArg", "RowFactory"]


class RowFactory(Protocol[Row]):
    """psycopg's ``RowFactory``, called with a governed cursor."""

    def __call__(self, cursor: Cursor[Any], /) -> RowMaker[Row]: ...


class AsyncRowFactory(Protocol[Row]):
    """psycopg's ``AsyncRowFactory``, called with a governed async cursor."""

    def __call__(self, cursor: AsyncCursor[Any], /) -> RowMaker[Row]: ...


# connect()'s own keywords (see _connection_base.pop_governed_kwargs and _config).
IdentityArg: TypeAlias = "Identity | str | None"
PolicyArg: TypeAlias = "Policy | str | os.PathLike[str] | None"
AuditArg: TypeAlias = "AuditLog | str | os.PathLike[str] | Literal[False] | None"
