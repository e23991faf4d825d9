"""governed_db: a governed drop-in for psycopg 3.

``import governed_db as psycopg`` and every statement carries an identity, is checked by
guardrails on PostgreSQL's own parser, has sensitive values masked in every row that leaves
the database, and leaves a signed, hash-chained audit record.

Everything of ``psycopg.__all__`` that governance does not need to change is re-exported as the
*same object* (``governed_db.Error is psycopg.Error``); connections, cursors and Copy are
governed subclasses of psycopg's.
"""

from __future__ import annotations


import psycopg as _psycopg
# (`name as name`: psycopg's submodules, re-exported for type checkers too)
from psycopg import (
    BINARY,
    DATETIME,
    NUMBER,
    ROWID,
    STRING,
    AsyncPipeline,
    AsyncTransaction,
    BaseConnection,
    Binary,
    Capabilities,
    Column,
    ConnectionInfo,
    DatabaseError,
    DataError,
    Date,
    DateFromTicks,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    IsolationLevel,
    Notify,
    NotSupportedError,
    OperationalError,
    Pipeline,
    ProgrammingError,
    Rollback,
    Time,
    TimeFromTicks,
    Timestamp,
    TimestampFromTicks,
    Transaction,
    Warning,
    Xid,
    adapt as adapt,
    adapters as adapters,
    apilevel,
    capabilities as capabilities,
    paramstyle,
    pq as pq,
    rows as rows,
    sql as sql,
    threadsafety,
    types as types,
)

from psycopg.abc import AdaptContext as _AdaptContext
from psycopg.abc import ConnParam as _ConnParam
from psycopg.rows import Row as _Row

from . import errors
from ._typing import AuditArg as _AuditArg
from ._typing import IdentityArg as _IdentityArg
from ._typing import PolicyArg as _PolicyArg
from ._typing import RowFactory as _RowFactory
from ._aliases import install as _install_submodule_aliases
from ._aliases import submodule as _submodule
from ._config import configure, get_config, reset_defaults
from ._connection import Connection
from ._connection_async import AsyncConnection
from ._cursor import ClientCursor, Copy, Cursor, RawCursor, RawServerCursor, ServerCursor
from ._cursor_async import (
    AsyncClientCursor,
    AsyncCopy,
    AsyncCursor,
    AsyncRawCursor,
    AsyncRawServerCursor,
    AsyncServerCursor,
)
from .identity import Identity, acting_as
from .policy import Policy, load_policy

# A drop-in answers version checks the way psycopg does (SQLAlchemy and others gate features on
# ``dbapi.__version__``); governed_db's own release is ``__governed_version__``.
__version__: str = _psycopg.__version__
__governed_version__ = "0.1.0"

_install_submodule_aliases(__name__, _psycopg)


def connect(
    conninfo: str = "",
    *,
    autocommit: bool = False,
    prepare_threshold: int | None = 5,
    context: _AdaptContext | None = None,
    row_factory: _RowFactory[_Row] | None = None,
    cursor_factory: type[_psycopg.Cursor[_Row]] | None = None,
    identity: _IdentityArg = None,
    identity_token: str | bytes | None = None,
    policy: _PolicyArg = None,
    audit: _AuditArg = None,
    **kwargs: _ConnParam,
) -> Connection[_Row]:
    """Connect to PostgreSQL with governance: psycopg's ``connect()`` plus ``identity=``,
    ``policy=`` and ``audit=``.

    Example::

        import governed_db as psycopg
        conn = psycopg.connect(dsn, identity=psycopg.Identity("recs-bot", "ai_agent"))
    """
    return Connection.connect(
        conninfo, autocommit=autocommit, prepare_threshold=prepare_threshold, context=context,
        row_factory=row_factory, cursor_factory=cursor_factory, identity=identity,
        identity_token=identity_token, policy=policy, audit=audit, **kwargs)


def __getattr__(name: str) -> object:
    # psycopg's public submodules not imported yet (``governed_db.crdb``), as attributes.
    return _submodule(__name__, name)


# Every name of psycopg.__all__ (re-exported by identity) plus governed_db's own; sorted,
# pinned by tests/test_audit_policy_identity.py::test_exports_pinned.
__all__ = [
    "AsyncClientCursor",
    "AsyncConnection",
    "AsyncCopy",
    "AsyncCursor",
    "AsyncPipeline",
    "AsyncRawCursor",
    "AsyncRawServerCursor",
    "AsyncServerCursor",
    "AsyncTransaction",
    "BINARY",
    "BaseConnection",
    "Binary",
    "Capabilities",
    "ClientCursor",
    "Column",
    "Connection",
    "ConnectionInfo",
    "Copy",
    "Cursor",
    "DATETIME",
    "DataError",
    "DatabaseError",
    "Date",
    "DateFromTicks",
    "Error",
    "Identity",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "IsolationLevel",
    "NUMBER",
    "NotSupportedError",
    "Notify",
    "OperationalError",
    "Pipeline",
    "Policy",
    "ProgrammingError",
    "ROWID",
    "RawCursor",
    "RawServerCursor",
    "Rollback",
    "STRING",
    "ServerCursor",
    "Time",
    "TimeFromTicks",
    "Timestamp",
    "TimestampFromTicks",
    "Transaction",
    "Warning",
    "Xid",
    "acting_as",
    "apilevel",
    "capabilities",
    "configure",
    "connect",
    "errors",
    "get_config",
    "load_policy",
    "paramstyle",
    "reset_defaults",
    "threadsafety",
]
