"""SQLAlchemy dialects: ``postgresql+governed://`` (sync) and ``postgresql+governed_async://``.

They are SQLAlchemy's own psycopg dialects with :mod:`governed_db` as the DB-API module, so every
statement an engine, an ORM session or a reflection runs is governed. Pass identity, policy and
audit through ``connect_args``::

    engine = create_engine("postgresql+governed://app@db/shop",
                           connect_args={"identity": Identity("recs-bot", "ai_agent")})

Engines made with these dialects hide bound parameters in error text (SQLAlchemy otherwise
appends ``[parameters: ...]`` with the values to every database error). Set
``engine.hide_parameters = False`` to show them again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg, PGDialectAsync_psycopg

__all__ = ["GovernedAsyncDialect", "GovernedDialect"]


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
        from governed_db.pq import ExecStatus

        return PsycopgAdaptDBAPI(governed_db, ExecStatus)

    @classmethod
    def engine_created(cls, engine: Any) -> None:
        engine.hide_parameters = True
