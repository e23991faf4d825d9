"""A LangChain SQL agent on a governed connection, driven by a scripted chat model (offline).

    python examples/langchain_agent.py "host=/tmp port=5432 dbname=shop user=app"
    python examples/langchain_agent.py           # starts a throwaway PostgreSQL

The "model" is LangChain's GenericFakeChatModel replaying tool calls a real model could make;
the loop is the standard one: the model emits tool calls, the tools run, their results go
back into the conversation. Everything the tools run is governed: rows come back masked, a
DROP is refused with a message the model can read, and each statement is recorded with the
tool call that ran it.
"""

from __future__ import annotations

import os
import sys
import tempfile

from langchain_community.agent_toolkits import SQLDatabaseToolkit
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from governed_db import Identity
from governed_db.integrations.langchain import ToolCallIdentity, governed_sql_database

SCRIPT = [  # what the scripted model answers, turn by turn
    AIMessage(content="", tool_calls=[{"name": "sql_db_list_tables", "args": {},
                                       "id": "call_1", "type": "tool_call"}]),
    AIMessage(content="", tool_calls=[{"name": "sql_db_query", "id": "call_2",
                                       "type": "tool_call",
                                       "args": {"query": "SELECT name, email FROM customers"
                                                         " ORDER BY id LIMIT 3"}}]),
    AIMessage(content="", tool_calls=[{"name": "sql_db_query", "id": "call_3",
                                       "type": "tool_call",
                                       "args": {"query": "DROP TABLE customers"}}]),
    AIMessage(content="I can read customers (contact details are masked) but may not"
                      " change the schema."),
]


def run(dsn: str) -> list[str]:
    """Run the agent loop; return the transcript."""
    agent = Identity("example-agent", "ai_agent", model="scripted", purpose="example")
    db = governed_sql_database(dsn, identity=agent, audit=False)
    tools = {t.name: t for t in SQLDatabaseToolkit(db=db, llm=FakeListLLM(responses=["ok"]))
             .get_tools()}
    model = GenericFakeChatModel(messages=iter(SCRIPT))
    callbacks = [ToolCallIdentity(agent)]
    messages: list = [HumanMessage(content="Who are our first customers?")]
    transcript = []
    while True:
        reply = model.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            transcript.append(f"model: {reply.content}")
            break
        for call in reply.tool_calls:
            result: ToolMessage = tools[call["name"]].invoke(call,
                                                             config={"callbacks": callbacks})
            transcript.append(f"{call['id']} {call['name']}({call['args']}) -> {result.content}")
            messages.append(result)
    db._engine.dispose()
    return transcript


def _seed(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS customers (id int PRIMARY KEY, name text,"
                  " email text)")
        c.execute("INSERT INTO customers VALUES (1, 'Ada', 'ada@example.com'),"
                  " (2, 'Alan', 'alan@example.org') ON CONFLICT DO NOTHING")


def main() -> int:
    os.environ.setdefault("GOVERNED_DB_HOME", tempfile.mkdtemp(prefix="governed_db_example_"))
    if len(sys.argv) > 1:
        dsn = sys.argv[1]
        _seed(dsn)
        lines = run(dsn)
    else:
        from governed_db._pgcluster import Cluster

        with Cluster() as cluster:
            _seed(cluster.dsn)
            lines = run(cluster.dsn)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
