"""LlamaIndex: a governed ``SQLDatabase`` (for ``run_sql``, ``NLSQLTableQueryEngine``...).

    from governed_db.integrations.llamaindex import governed_sql_database
    sql_database = governed_sql_database(dsn, identity=Identity("rag-bot", "ai_agent"),
                                         include_tables=["orders", "users"])
    engine = NLSQLTableQueryEngine(sql_database=sql_database, llm=llm)

Rows, sample rows in table descriptions and the synthesized answer's context are masked; a
denied statement raises ``errors.StatementDenied`` (wrapped by SQLAlchemy) whose text names the
rule and carries no value.
"""

from __future__ import annotations

from typing import Any

from ..identity import Identity
from . import governed_url

__all__ = ["governed_engine", "governed_sql_database"]


def governed_engine(dsn: str, *, identity: Identity, policy: Any = None, audit: Any = None,
                    **engine_kwargs: Any) -> Any:
    """A SQLAlchemy engine on the governed dialect with ``identity`` on every connection."""
    import sqlalchemy

    connect_args: dict[str, Any] = {"identity": identity}
    if policy is not None:
        connect_args["policy"] = policy
    if audit is not None:
        connect_args["audit"] = audit
    engine_kwargs["connect_args"] = {**engine_kwargs.get("connect_args", {}), **connect_args}
    return sqlalchemy.create_engine(governed_url(dsn), **engine_kwargs)


def governed_sql_database(dsn: str, *, identity: Identity, policy: Any = None,
                          audit: Any = None, **kwargs: Any) -> Any:
    """A ``llama_index.core.SQLDatabase`` on a governed engine."""
    from llama_index.core import SQLDatabase

    return SQLDatabase(governed_engine(dsn, identity=identity, policy=policy, audit=audit),
                       **kwargs)
