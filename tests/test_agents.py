"""LangChain and LlamaIndex SQL tools on governed connections: masking, denial text, identity."""

from __future__ import annotations

import pytest

import governed_db
from governed_db import Identity

from .conftest import MARKERS

AGENT = Identity("sql-agent", "ai_agent", model="scripted-llm", purpose="answer support tickets")


def _no_marker(text: str) -> None:
    low = str(text).lower()
    for marker in MARKERS:
        assert marker not in low, f"{marker} leaked: {text}"


def _statements(audit):
    audit.flush()
    return [r for r in audit.records if r["type"] == "statement"]


# -- LangChain ---------------------------------------------------------------------------------

lc = pytest.importorskip("langchain_community.utilities")


@pytest.fixture
def lc_db(dsn, audit):
    from governed_db.integrations.langchain import governed_sql_database

    db = governed_sql_database(dsn, identity=AGENT, audit=audit,
                               include_tables=["users", "orders", "orgs"], sample_rows_in_table_info=2)
    yield db
    db._engine.dispose()


def test_langchain_sql_database_masked_and_denials_readable(lc_db, audit):
    info = lc_db.get_table_info()
    assert "CREATE TABLE users" in info and "****@example.com" in info
    _no_marker(info)
    out = lc_db.run("SELECT email, ssn FROM users ORDER BY id")
    assert "****@example.com" in out
    _no_marker(out)
    err = lc_db.run_no_throw("DROP TABLE orders")
    assert err.startswith("Error:") and "statement.disallow-drop" in err
    assert "Do not retry" in err
    # A cast of a masked value that raises for some values is an error oracle: refused before
    # it runs, readably, with no value in the text (server error text redaction is covered in
    # test_error_text.py).
    err2 = lc_db.run_no_throw("SELECT email::int FROM users")
    assert err2.startswith("Error:") and "column.disallow-predicate-on-masked" in err2
    _no_marker(err2)
    recs = _statements(audit)
    assert {r["identity"]["id"] for r in recs} == {"sql-agent"}
    assert recs[-1]["identity"]["model"] == "scripted-llm"


def test_langchain_toolkit_tool_calls_carry_identity(lc_db, audit):
    from langchain_community.agent_toolkits import SQLDatabaseToolkit
    from langchain_core.language_models.fake import FakeListLLM

    from governed_db.integrations.langchain import ToolCallIdentity

    toolkit = SQLDatabaseToolkit(db=lc_db, llm=FakeListLLM(responses=["SELECT 1"]))
    tools = {t.name: t for t in toolkit.get_tools()}
    handler = ToolCallIdentity(AGENT)
    msg = tools["sql_db_query"].invoke(
        {"name": "sql_db_query", "args": {"query": "SELECT name, email FROM users"},
         "id": "call_42", "type": "tool_call"}, config={"callbacks": [handler]})
    assert msg.tool_call_id == "call_42" and "****@example.com" in msg.content
    _no_marker(msg.content)
    denied = tools["sql_db_query"].invoke(
        {"name": "sql_db_query", "args": {"query": "DELETE FROM orders"}, "id": "call_43",
         "type": "tool_call"}, config={"callbacks": [handler]})
    assert "statement.allowlist" in denied.content
    schema = tools["sql_db_schema"].invoke({"table_names": "users"})
    _no_marker(schema)
    recs = _statements(audit)
    by_call = {r["identity"].get("attributes", {}).get("tool_call_id"): r for r in recs}
    assert by_call["call_42"]["statement"]["reads"] == ["users"]
    assert by_call["call_42"]["identity"]["attributes"]["tool"] == "sql_db_query"
    assert by_call["call_43"]["decision"]["action"] == "deny"


# -- LlamaIndex --------------------------------------------------------------------------------


def test_llamaindex_run_sql_and_nl_sql_engine(dsn, audit):
    pytest.importorskip("llama_index.core")
    from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
    from llama_index.core.query_engine import NLSQLTableQueryEngine

    from governed_db.integrations.llamaindex import governed_sql_database

    class ScriptedLLM(CustomLLM):
        """Text-to-SQL answers with a fixed query; synthesis echoes its context."""

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata()

        def complete(self, prompt: str, formatted: bool = False, **kwargs) -> CompletionResponse:
            if "synthesize a response" in prompt:
                return CompletionResponse(text="ANSWER FROM: " + prompt)
            return CompletionResponse(text="SELECT name, email, ssn FROM users ORDER BY id")

        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs):
            yield self.complete(prompt)

    db = governed_sql_database(dsn, identity=AGENT, audit=audit, include_tables=["users"])
    try:
        text, meta = db.run_sql("SELECT email, ssn FROM users ORDER BY id")
        assert "****@example.com" in text
        _no_marker(text + repr(meta))
        from llama_index.core import Settings
        from llama_index.core.embeddings import MockEmbedding

        Settings.embed_model = MockEmbedding(embed_dim=8)
        engine = NLSQLTableQueryEngine(sql_database=db, llm=ScriptedLLM(), tables=["users"])
        answer = engine.query("What are the customers' emails?")
        _no_marker(str(answer) + repr(answer.metadata))
        assert "****@example.com" in str(answer)  # the model saw masked rows only
        # LlamaIndex re-raises database errors as NotImplementedError("... invalid SQL ...");
        # the rule and its advice survive, values do not.
        with pytest.raises(NotImplementedError) as ei:
            db.run_sql("DROP TABLE users")
        assert "statement.disallow-drop" in str(ei.value)
        assert isinstance(ei.value.__cause__.orig, governed_db.errors.StatementDenied)
    finally:
        db.engine.dispose()
    assert {r["identity"]["id"] for r in _statements(audit)} == {"sql-agent"}


def test_example_agent_runs_offline(dsn):
    import runpy
    from pathlib import Path

    example = runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples"
                                 / "langchain_agent.py"))
    example["_seed"](dsn)
    transcript = example["run"](dsn)
    assert "****@example.com" in transcript[1] and "ada@" not in " ".join(transcript)
    assert "statement.disallow-drop" in transcript[2]
    assert transcript[-1].startswith("model: ")
