"""LangChain: a governed ``SQLDatabase`` and tool-call identity.

``SQLDatabase.from_uri("postgresql+governed://...")`` already works (the SQLAlchemy dialect);
this module adds the two things an agent deployment needs::

    from governed_db.integrations.langchain import governed_sql_database, ToolCallIdentity

    agent = Identity("sql-agent", "ai_agent", model="gpt-4.1", purpose="answer support questions")
    db = governed_sql_database(dsn, identity=agent)          # a langchain_community SQLDatabase
    toolkit = SQLDatabaseToolkit(db=db, llm=llm)
    tools = toolkit.get_tools()
    # every statement a tool runs is recorded with the tool call it served:
    result = tools[0].invoke(tool_call, config={"callbacks": [ToolCallIdentity(agent)]})

Denied statements come back from ``run_no_throw()`` (and the toolkit's query tool) as
``Error: ... denied by policy rule `...`: ...`` — text a model can act on, with no values.
"""

from __future__ import annotations

import contextvars
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from ..identity import Identity, _acting
from . import governed_url

__all__ = ["ToolCallIdentity", "governed_sql_database", "governed_url"]


def governed_sql_database(dsn: str, *, identity: Identity, policy: Any = None, audit: Any = None,
                          **kwargs: Any) -> Any:
    """A ``langchain_community.utilities.SQLDatabase`` whose statements are governed and
    carry ``identity``. Extra keywords go to ``SQLDatabase.from_uri``."""
    from langchain_community.utilities import SQLDatabase

    connect_args: dict[str, Any] = {"identity": identity}
    if policy is not None:
        connect_args["policy"] = policy
    if audit is not None:
        connect_args["audit"] = audit
    engine_args = dict(kwargs.pop("engine_args", None) or {})
    engine_args["connect_args"] = {**engine_args.get("connect_args", {}), **connect_args}
    return SQLDatabase.from_uri(governed_url(dsn), engine_args=engine_args, **kwargs)


class ToolCallIdentity(BaseCallbackHandler):
    """Statements run by a tool carry the tool call: ``identity`` plus ``tool_call_id``,
    ``tool`` and ``run_id`` attributes, for the tool's duration (sync and async tools)."""

    run_inline = True  # run in the tool's own context, so the identity reaches its statements

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self._tokens: dict[UUID, contextvars.Token[Identity | None]] = {}

    def on_tool_start(self, serialized: dict[str, Any], input_str: str, *, run_id: UUID,
                      **kwargs: Any) -> None:
        attrs = dict(self.identity.attributes)
        attrs.update({"tool": serialized.get("name"), "run_id": str(run_id)})
        if kwargs.get("tool_call_id"):
            attrs["tool_call_id"] = kwargs["tool_call_id"]
        self._tokens[run_id] = _acting.set(self.identity.evolve(attributes=attrs))

    def _done(self, run_id: UUID) -> None:
        token = self._tokens.pop(run_id, None)
        if token is not None:
            try:
                _acting.reset(token)
            except ValueError:  # ended in another context: clear what we set there
                _acting.set(None)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._done(run_id)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._done(run_id)
