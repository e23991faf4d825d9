"""SQLAlchemy dialects: ``postgresql+governed://`` (sync) and ``postgresql+governed_async://``.

They are SQLAlchemy's own psycopg dialects with :mod:`governed_db` as the DB-API module, so every
statement an engine, an ORM session or a reflection runs is governed. Pass identity, policy and
audit through ``connect_args``::

    engine = create_engine("postgresql+governed://app@db/shop",
                           connect_args={"identity": Identity("recs-bot", "ai_agent")})

Engines made with these dialects hide bound parameters in error text (SQLAlchemy otherwise
appends ``[parameters: ...]`` with the values to every database error). Set
``engine.hide_parameters = False`` to show them again.

``create_engine("postgresql+psycopg://...", module=governed_db)`` works too, and its engines hide
parameters as well: the first governed connection made while SQLAlchemy is imported registers
:func:`protect_engines`, which sets ``hide_parameters`` on every engine whose DB-API module is
governed_db when it connects (before any statement can fail).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg, PGDialectAsync_psycopg

__all__ = ["GovernedAsyncDialect", "GovernedDialect", "protect_engines"]

_protected = False


def _is_governed_dbapi(dbapi: Any) -> bool:
    import governed_db

    # The async dialect wraps the module (PsycopgAdaptDBAPI keeps it as ``psycopg``).
    return dbapi is governed_db or getattr(dbapi, "psycopg", None) is governed_db


def protect_engines() -> None:
    """Hide bound parameters in the error text of every engine that uses governed_db.

    Registered once per process (a class-level ``engine_connect`` listener): it covers engines
    made with ``module=governed_db`` on SQLAlchemy's own psycopg dialect, whose
    ``engine_created`` hook is not ours. An engine's owner can still opt out by setting
    ``hide_parameters = False`` after the first connection.
    """
    global _protected
    if _protected:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def _hide(conn: Any) -> None:
        engine = conn.engine
        if getattr(engine, "_governed_db_protected", False):
            return
        if _is_governed_dbapi(getattr(engine.dialect, "dbapi", None)) or _is_governed_dbapi(
                getattr(engine.dialect, "loaded_dbapi", None)):
            engine.hide_parameters = True
            engine._governed_db_protected = True

    event.listen(Engine, "engine_connect", _hide)
    _protected = True


class GovernedDialect(PGDialect_psycopg):
    """``postgresql+governed://``: psycopg 3 with governance."""

    driver = "governed"
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> Any:
        import governed_db

        return governed_db

    @classmethod
    def get_async_dialect_cls(cls, url: Any) -> type[GovernedAsyncDialect]:
        return GovernedAsyncDialect

    @classmethod
    def engine_created(cls, engine: Any) -> None:
        engine.hide_parameters = True


class GovernedAsyncDialect(PGDialectAsync_psycopg):
    """``postgresql+governed_async://`` (and ``create_async_engine("postgresql+governed://")``)."""

    driver = "governed_async"
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> Any:
        from sqlalchemy.dialects.postgresql.psycopg import PsycopgAdaptDBAPI

        import governed_db

        return PsycopgAdaptDBAPI(governed_db, governed_db.pq.ExecStatus)

    @classmethod
    def engine_created(cls, engine: Any) -> None:
        engine.hide_parameters = True
