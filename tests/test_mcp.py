"""The governed MCP server, driven by the official SDK's own clients over stdio and HTTP.

Each session test starts ``governed-db mcp`` as a real subprocess against a real PostgreSQL and
checks exact outcomes: which rule denied, which strategy masked, which audit record names the
MCP request id; escape payloads are checked from a separate raw superuser connection. Server
start-up dominates the cost, so each session test runs many calls on one server.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytest.importorskip("mcp")

import httpx2  # noqa: E402 - the SDK's HTTP client
import mcp_types as types  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from governed_db import Identity  # noqa: E402
from governed_db.cli import main as cli_main  # noqa: E402
from governed_db.errors import PolicyError  # noqa: E402
from governed_db.rules import RULES  # noqa: E402
from governed_db.mcp._auth import BearerAuth, StaticTokens  # noqa: E402
from governed_db.mcp._budget import ROWS_RULE, STATEMENTS_RULE, Budget  # noqa: E402
from governed_db.mcp._settings import Limits, McpSettings, TokenEntry  # noqa: E402
from governed_db.mcp._tools import TOOL_SPECS, GovernedTools  # noqa: E402
from governed_db.policy import default_policy_text, parse_policy  # noqa: E402

from .conftest import MARKERS  # noqa: E402

CLIENT = types.Implementation(name="pytest-mcp-client", version="1.2.3")
TOOLS = {"list_schemas", "list_tables", "describe_table", "query", "explain",
         "request_approval", "approval_status"}
TOKEN = "test-token-Zq8WmX3v"  # a bearer token of the static table (its sha256 is stored)
APPROVAL_RULE = """
[[rules]]
id = "statement.require-approval"
level = "approval"
identity_kinds = ["ai_agent"]
kinds = ["SELECT"]
tables = ["orders"]
"""
PAYLOAD_FILE = "/tmp/governed_db_mcp_pwned"  # noqa: S108 - what COPY ... TO PROGRAM would touch

# Known public escapes of "read-only" MCP servers, and more shapes of each class.
ESCAPES = [
    "COMMIT; DROP TABLE users",
    "END; DROP TABLE users",
    "ROLLBACK; TRUNCATE users",
    "SELECT 1; COMMIT; DELETE FROM users WHERE id = 1001",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT * FROM pg_read_file('/etc/passwd')",
    "SELECT x FROM pg_catalog.pg_read_file('/etc/passwd') AS f(x)",
    "/* harmless */ DROP TABLE users",
    "/* a /* nested */ comment */ DELETE FROM users WHERE id = 1001",
    "-- just a comment\nDROP TABLE users",
    'DROP TABLE U&"\\0075sers"',
    'DELETE FROM U&"\\0075sers" WHERE id = 1001',
    "SELECT purge_users()",
    "WITH gone AS (DELETE FROM users WHERE id = 1001 RETURNING id) SELECT * FROM gone",
    "BEGIN READ WRITE; DELETE FROM users WHERE id = 1001",
    "BEGIN; SET TRANSACTION READ WRITE; DELETE FROM users WHERE id = 1001",
    "SET default_transaction_read_only = off",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    f"COPY users TO PROGRAM 'touch {PAYLOAD_FILE}'",
    f"COPY (SELECT 1) TO PROGRAM 'touch {PAYLOAD_FILE}'",
    "DO $$BEGIN DELETE FROM users; END$$",
    "CALL archive_orders()",
]


# -- helpers --------------------------------------------------------------------------------------


def _policy_file(tmp_path: Path, extra: str = "") -> Path:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    # Layered on the built-in default profile: only the additions are written.
    text = APPROVAL_RULE + f"""
[mcp]
identity = "ai_agent:mcp-test-bot"
purpose = "answer questions in tests"
model = "test-model"
max_rows = 20
max_result_bytes = 4000

[[mcp.tokens]]
sha256 = "{digest}"
identity = "ai_agent:http-bot"
purpose = "tests over HTTP"
""" + extra
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def _env(tmp_path: Path, policy: Path) -> dict[str, str]:
    return {"GOVERNED_DB_HOME": os.environ["GOVERNED_DB_HOME"],
            "GOVERNED_DB_AUDIT": str(tmp_path / "audit.jsonl"),
            "GOVERNED_DB_POLICY": str(policy),
            "PYTHONWARNINGS": "ignore"}


@contextlib.asynccontextmanager
async def stdio_session(dsn: str, env: dict[str, str], errlog: Any, *args: str) -> Any:
    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "governed_db", "mcp", "--dsn", dsn, *args],
                                   env=env)
    async with stdio_client(params, errlog=errlog) as (read, write):
        async with ClientSession(read, write, client_info=CLIENT,
                                 read_timeout_seconds=90) as session:
            await session.initialize()
            yield session


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def http_server(dsn: str, env: dict[str, str], errlog: Any, host: str = "127.0.0.1") -> Any:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "governed_db", "mcp", "--dsn", dsn, "--http", f"{host}:{port}"],
        env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=errlog)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, "the HTTP server exited at start-up"
            with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
                break
            assert time.monotonic() < deadline, "the HTTP server did not start"
            time.sleep(0.1)
        yield f"http://{host}:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.asynccontextmanager
async def http_session(url: str, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=90) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write, client_info=CLIENT,
                                     read_timeout_seconds=90) as session:
                await session.initialize()
                yield session


def _text(result: Any) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


def snapshot(dsn: str) -> Any:
    """The server's state as a superuser sees it: relations, functions, every row's hash."""
    with psycopg.connect(dsn, autocommit=True) as c:
        rels = c.execute(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'evil')"
            " ORDER BY 1, 2").fetchall()
        funcs = c.execute("SELECT p.oid::regprocedure::text, md5(p.prosrc) FROM pg_proc p"
                          " JOIN pg_namespace n ON n.oid = p.pronamespace"
                          " WHERE n.nspname IN ('public', 'evil') ORDER BY 1").fetchall()
        rows = {}
        for schema, name, kind in rels:
            if kind == "r":
                q = (f'SELECT count(*), md5(coalesce(string_agg(t::text, \'|\' ORDER BY'
                     f' t::text), \'\')) FROM "{schema}"."{name}" t')
                rows[f"{schema}.{name}"] = c.execute(q).fetchone()
    return rels, funcs, rows


def audit_records(path: Path, calls: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The records, once ``calls`` tool-call records (each written after its statements)
    are on disk: the writer is batched."""
    deadline = time.monotonic() + timeout
    while True:
        recs = [json.loads(line) for line in path.read_text().splitlines()] \
            if path.exists() else []
        if len([r for r in recs if r.get("type") == "mcp_tool_call"]) >= calls \
                or time.monotonic() > deadline:
            return recs
        time.sleep(0.2)


def _no_markers(text: str) -> None:
    low = text.lower()
    for marker in MARKERS:
        assert marker not in low, f"unmasked sensitive value ({marker}) left the server"


def _names_rule(text: str) -> bool:
    known = set(RULES) | {STATEMENTS_RULE, ROWS_RULE, "mcp.statement-timeout"}
    return any(f"`{rule}`" in text for rule in known)


# -- the stdio session ------------------------------------------------------------------------


async def test_stdio_session_tools_masking_escapes_and_audit(dsn: str, tmp_path: Path) -> None:
    policy = _policy_file(tmp_path)
    env = _env(tmp_path, policy)
    errlog_path = tmp_path / "stderr.txt"
    before = snapshot(dsn)
    seen: list[str] = []
    with errlog_path.open("w") as errlog:
        async with stdio_session(dsn, env, errlog) as s:
            listed = await s.list_tools()
            assert {t.name for t in listed.tools} == TOOLS
            query_tool = next(t for t in listed.tools if t.name == "query")
            assert query_tool.input_schema["required"] == ["sql"]

            res = await s.call_tool("list_tables", {"schema": "public"})
            assert not res.is_error
            names = {(t["schema"], t["name"]) for t in res.structured_content["tables"]}
            assert {("public", "users"), ("public", "Users"), ("public", "v_users")} <= names

            res = await s.call_tool("describe_table", {"table": "users"})
            assert not res.is_error, _text(res)
            cols = {c["name"]: c for c in res.structured_content["columns"]}
            assert (cols["email"]["mask_strategy"], cols["email"]["mask_reason"]) == \
                ("email", "name:email")
            assert (cols["ssn"]["mask_strategy"], cols["ssn"]["mask_reason"]) == \
                ("partial", "name:ssn")
            assert cols["id"]["masked"] is False and cols["id"]["type"] == "int4"
            assert res.structured_content["sample"]["rows"]
            seen.append(_text(res))

            res = await s.call_tool("describe_table", {"table": "v_users"})
            vcols = {c["name"]: c for c in res.structured_content["columns"]}
            assert vcols["email"]["mask_strategy"] == "redact"
            assert vcols["email"]["mask_reason"] == "lineage:name:email"

            res = await s.call_tool("query", {
                "sql": "SELECT id, email, ssn, name FROM users WHERE id = %s", "params": [1001]})
            assert not res.is_error, _text(res)
            sc = res.structured_content
            assert sc["columns"] == ["id", "email", "ssn", "name"]
            assert sc["rows"] == [[1001, "****@example.com", "***********3333", "****"]]
            assert sc["masked"] == {"email": "email:name:email", "ssn": "partial:name:ssn",
                                    "name": "redact:name:person_name"}
            assert sc["truncated"] is False
            assert "****@example.com" in _text(res)
            seen.append(_text(res))

            # Masking holds through a Unicode-escaped name of the same table.
            res = await s.call_tool("query", {"sql": 'SELECT email FROM U&"\\0075sers"'})
            assert res.structured_content["masked"] == {"email": "email:name:email"}
            seen.append(_text(res))

            # Row cap ([mcp] max_rows = 20) and byte cap (max_result_bytes = 4000).
            res = await s.call_tool("query", {"sql": "SELECT g FROM generate_series(1, 500) g"})
            sc = res.structured_content
            assert (sc["row_count"], sc["truncated"], sc["truncated_reason"]) == \
                (20, True, "max_rows")
            assert "truncated" in _text(res).splitlines()[0]
            res = await s.call_tool("query", {
                "sql": "SELECT repeat('x', 900) FROM generate_series(1, 10)"})
            sc = res.structured_content
            assert sc["truncated_reason"] == "max_result_bytes" and 0 < sc["row_count"] < 10

            res = await s.call_tool("explain", {"sql": "SELECT * FROM users WHERE id = 1"})
            assert not res.is_error and "Index Scan" in res.structured_content["plan"]
            res = await s.call_tool("explain", {"sql": "ANALYZE users"})
            assert res.is_error and "nothing was sent" in _text(res)

            for payload in ESCAPES:
                res = await s.call_tool("query", {"sql": payload})
                text = _text(res)
                assert res.is_error, payload
                assert _names_rule(text) or "read-only" in text or "one statement" in text, \
                    (payload, text)
                seen.append(text)
            # The parameterised path (extended protocol) refuses the same escapes.
            res = await s.call_tool("query", {"sql": "COMMIT; DROP TABLE users WHERE %s",
                                              "params": [1]})
            assert res.is_error
            res = await s.call_tool("explain", {"sql": "SELECT 1; DROP TABLE users"})
            assert res.is_error

            res = await s.call_tool("query", {"sql": "COMMIT; DROP TABLE users"})
            assert res.structured_content["rule_ids"][:2] == \
                ["statement.allowlist", "statement.disallow-drop"]
            assert "`statement.disallow-drop`" in _text(res)
            res = await s.call_tool("query", {"sql": "SELECT pg_read_file('/etc/passwd')"})
            assert "function.deny" in res.structured_content["rule_ids"]
            res = await s.call_tool("query", {"sql": "SELECT 1", "extra": True})
            assert res.is_error and res.structured_content["error"] == "bad_request"

    assert snapshot(dsn) == before, "an escape payload changed the server"
    assert not os.path.exists(PAYLOAD_FILE)
    for text in seen:
        _no_markers(text)

    # The server's own log: tool names, request ids, rule ids; no value, no literal.
    log = errlog_path.read_text()
    assert "tool=query request=" in log and "rules=statement.allowlist" in log
    _no_markers(log)
    for literal in ("/etc/passwd", "repeat(", "purge_users", PAYLOAD_FILE, "SELECT", "0075"):
        assert literal not in log

    recs = audit_records(tmp_path / "audit.jsonl", calls=14 + len(ESCAPES))
    stmts = [r for r in recs if r.get("type") == "statement"]
    calls = [r for r in recs if r.get("type") == "mcp_tool_call"]
    assert len(calls) == 14 + len(ESCAPES)
    for rec in stmts + calls:
        ident = rec["identity"]
        assert (ident["kind"], ident["id"], ident["model"]) == \
            ("ai_agent", "mcp-test-bot", "test-model")
        attrs = ident["attributes"]
        assert attrs["mcp_request_id"] and attrs["tool"] in TOOLS
        assert (attrs["mcp_client"], attrs["mcp_client_version"]) == \
            ("pytest-mcp-client", "1.2.3")
        assert attrs["mcp_transport"] == "stdio"
    # Every statement belongs to a recorded tool call with the same request id.
    call_ids = {c["identity"]["attributes"]["mcp_request_id"] for c in calls}
    assert {r["identity"]["attributes"]["mcp_request_id"] for r in stmts} <= call_ids
    denied = [r for r in stmts if r["outcome"].get("outcome") == "denied"]
    assert any("statement.disallow-drop" in r["decision"]["rules"] for r in denied)
    masked_read = next(r for r in stmts if r["masked"] == {"email": "email:name:email",
                                                           "ssn": "partial:name:ssn",
                                                           "name": "redact:name:person_name"}
                       and r["identity"]["attributes"]["tool"] == "query")
    assert "public.users.email" in masked_read["columns"]
    raw = (tmp_path / "audit.jsonl").read_text()
    _no_markers(raw)
    assert "/etc/passwd" not in raw

    # The auditor's view of the session.
    out = CliRunner().invoke(cli_main, ["audit", "report", str(tmp_path / "audit.jsonl"),
                                        "--identity", "ai_agent:mcp-test-bot", "--json"])
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert rep["models"] == ["test-model"]
    users = next(t for t in rep["tables"] if t["table"] in ("users", "public.users"))
    assert users["masked"]["email"].startswith("email:")
    assert any("statement.disallow-drop" in (d["rules"] or []) for d in rep["denied"])
    call_id = masked_read["identity"]["attributes"]["tool_call_id"]
    assert call_id.startswith("mcp:") and call_id.endswith(
        ":" + masked_read["identity"]["attributes"]["mcp_request_id"])
    out = CliRunner().invoke(cli_main, ["audit", "report", str(tmp_path / "audit.jsonl"),
                                        "--tool-call", call_id, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["totals"]["statements"] == 1


# -- HTTP: bearer tokens map to identities ------------------------------------------------------


async def test_http_session_tokens_masking_and_escapes(dsn: str, tmp_path: Path) -> None:
    policy = _policy_file(tmp_path)
    env = _env(tmp_path, policy)
    before = snapshot(dsn)
    with (tmp_path / "stderr.txt").open("w") as errlog, http_server(dsn, env, errlog) as url:
        async with httpx2.AsyncClient(timeout=30) as raw:
            body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"}}}
            hdrs = {"Accept": "application/json, text/event-stream"}
            assert (await raw.post(url, json=body, headers=hdrs)).status_code == 401
            bad = {**hdrs, "Authorization": "Bearer " + TOKEN + "x"}
            assert (await raw.post(url, json=body, headers=bad)).status_code == 401
        async with http_session(url, TOKEN) as s:
            assert {t.name for t in (await s.list_tools()).tools} == TOOLS
            res = await s.call_tool("query", {"sql": "SELECT email, ssn FROM users ORDER BY id"})
            assert res.structured_content["rows"] == [
                ["****@example.com", "***********3333"], ["****@example.com", "***********6666"]]
            for payload in ("COMMIT; DROP TABLE users", "SELECT * FROM pg_read_file('/etc/passwd')",
                            "BEGIN READ WRITE; DELETE FROM users WHERE id = 1001",
                            f"COPY users TO PROGRAM 'touch {PAYLOAD_FILE}'"):
                res = await s.call_tool("query", {"sql": payload})
                assert res.is_error and _names_rule(_text(res)), payload
    assert snapshot(dsn) == before
    assert not os.path.exists(PAYLOAD_FILE)
    recs = audit_records(tmp_path / "audit.jsonl", calls=6)
    stmts = [r for r in recs if r.get("type") == "statement"
             and r["identity"].get("attributes", {}).get("tool") == "query"]
    assert stmts and all(r["identity"]["id"] == "http-bot" for r in stmts)
    assert all(r["identity"]["attributes"]["mcp_transport"] == "http" for r in stmts)
    assert all(r["identity"]["attributes"]["mcp_session"] for r in stmts)


async def test_http_refuses_a_network_address_without_opt_in(tmp_path: Path) -> None:
    from governed_db.mcp.server import serve_http

    tools = GovernedTools("dbname=none", policy=parse_policy(default_policy_text()),
                          settings=McpSettings())
    with pytest.raises(PolicyError, match="not a loopback address"):
        await serve_http(tools, Identity("a", "ai_agent"), "0.0.0.0", 1)  # noqa: S104
    with pytest.raises(PolicyError, match="needs bearer tokens"):
        await serve_http(tools, Identity("a", "ai_agent"), "0.0.0.0", 1,  # noqa: S104
                         allow_remote=True)


# -- approvals, budgets, timeouts -----------------------------------------------------------------


async def test_approval_round_trip_budgets_and_timeout(dsn: str, tmp_path: Path) -> None:
    policy = _policy_file(tmp_path)
    env = _env(tmp_path, policy)
    before = snapshot(dsn)
    gated = {"sql": "SELECT id, amount FROM orders WHERE id = %s", "params": [1]}
    with (tmp_path / "stderr.txt").open("w") as errlog:
        async with stdio_session(dsn, env, errlog, "--statements-per-minute", "12",
                                 "--rows-per-hour", "25", "--statement-timeout", "2s") as s:
            res = await s.call_tool("query", gated)
            assert res.is_error
            sc = res.structured_content
            assert (sc["error"], sc["rule_ids"]) == \
                ("approval_required", ["statement.require-approval"])
            rid = sc["request_id"]
            assert f"governed-db approvals approve {rid}" in _text(res)
            res = await s.call_tool("request_approval", gated)  # the same pending request
            assert (res.is_error, res.structured_content["request_id"]) == (False, rid)
            res = await s.call_tool("approval_status", {"request_id": rid})
            assert res.structured_content["status"] == "pending"

            # A person approves from the CLI (an agent cannot approve).
            runner = CliRunner()
            out = runner.invoke(cli_main, ["approvals", "approve", rid, "--as",
                                           "ai_agent:mcp-test-bot"], env=env)
            assert out.exit_code == 1
            out = runner.invoke(cli_main, ["approvals", "approve", rid, "--as", "human:maria"],
                                env=env)
            assert out.exit_code == 0, out.output
            res = await s.call_tool("approval_status", {"request_id": rid})
            assert res.structured_content["status"] == "approved"
            res = await s.call_tool("request_approval", gated)  # does not use it up
            assert res.structured_content["status"] == "approved"

            res = await s.call_tool("query", gated)  # runs once ...
            assert not res.is_error, _text(res)
            assert res.structured_content["rows"] == [[1, "10.5"]]
            res = await s.call_tool("query", gated)  # ... and only once
            assert res.is_error and res.structured_content["request_id"] != rid
            res = await s.call_tool("approval_status", {"request_id": rid})
            assert res.structured_content["status"] == "used"
            res = await s.call_tool("approval_status", {"request_id": "0123456789abcdef"})
            assert res.is_error

            # statement_timeout (2 s, server side), reported with its limit id.
            res = await s.call_tool("query", {
                "sql": "SELECT count(*) FROM generate_series(1, 2000000000)"})
            assert res.is_error and res.structured_content["rule_ids"] == \
                ["mcp.statement-timeout"]

            # Rows per hour (25, one used by the approved query): 20 shown (max_rows), then
            # the 4 left (budget), then refused.
            res = await s.call_tool("query", {"sql": "SELECT g FROM generate_series(1, 30) g"})
            assert res.structured_content["row_count"] == 20
            res = await s.call_tool("query", {"sql": "SELECT g FROM generate_series(1, 30) g"})
            sc = res.structured_content
            assert (sc["row_count"], sc["truncated_reason"]) == (4, "rows_per_hour")
            res = await s.call_tool("query", {"sql": "SELECT 1"})
            assert res.is_error and res.structured_content["rule_ids"] == [ROWS_RULE]

            # Statements per minute (12): what is left, then refused before anything is sent
            # (catalog tools are not charged rows, so the row budget does not stop them).
            for _ in range(30):
                res = await s.call_tool("list_schemas", {})
                if res.is_error:
                    break
            assert res.is_error and res.structured_content["rule_ids"] == [STATEMENTS_RULE]
            assert "cannot be changed from here" in _text(res)
    assert snapshot(dsn)[2] == before[2]
    recs = audit_records(tmp_path / "audit.jsonl", calls=20)
    refused = [r for r in recs if r.get("type") == "mcp_tool_call"
               and r.get("outcome") == "budget"]
    assert refused and all(r["identity"]["attributes"]["mcp_request_id"] for r in refused)
    assert refused[-1]["rules"] == [STATEMENTS_RULE] and refused[-1]["statements"] == []
    ran = [r["outcome"]["outcome"] for r in recs
           if r.get("type") == "statement" and r["decision"]["approval"] == rid]
    assert ran[0] == "approval_required" and ran[-1] == "ok" and ran.count("ok") == 1


# -- units: settings, budget, tokens ---------------------------------------------------------


def test_mcp_policy_table_is_validated_with_file_and_line(tmp_path: Path) -> None:
    ok = parse_policy('[mcp]\nidentity = "ai_agent:x"\nmax_rows = 5\nstatement_timeout = "2s"\n'
                      f'[[mcp.tokens]]\nsha256 = "{"a" * 64}"\nidentity = "ai_agent:y"\n'
                      'roles = ["support"]\n')
    settings = McpSettings.from_policy(ok)
    assert settings.identity == Identity("x", "ai_agent")
    assert (settings.limits.max_rows, settings.limits.statement_timeout_ms) == (5, 2000)
    assert settings.tokens[0].identity.roles == ("support",)
    assert "a" * 64 not in repr(settings.tokens[0])
    for text, line, words in [
        ('[mcp]\nmax_rowz = 5\n', 2, "unknown key 'max_rowz'"),
        ('[mcp]\nmax_rows = 0\n', 2, "max_rows"),
        ('[mcp]\nstatement_timeout = "0s"\n', 2, "statement_timeout"),
        ('[mcp]\nidentity = "robot:x"\n', 2, "kind:id"),
        ('[[mcp.tokens]]\nsha256 = "abc"\nidentity = "ai_agent:y"\n', 1, "64 hex"),
        ('[[mcp.tokens]]\ntoken = "s3cret"\nidentity = "ai_agent:y"\n', 1, "never the token"),
        ('\n[[mcp.tokens]]\nsha256 = "' + "b" * 64 + '"\n', 2, "needs identity"),
    ]:
        with pytest.raises(PolicyError, match=words) as ei:
            parse_policy(text, source="p.toml")
        assert ei.value.line == line, text


def test_limit_flags_only_tighten() -> None:
    limits = Limits(max_rows=50, rows_per_hour=100)
    assert limits.tightened(max_rows=500, rows_per_hour=10) == Limits(max_rows=50,
                                                                      rows_per_hour=10)


def test_budget_windows_slide() -> None:
    now = [1000.0]
    budget = Budget(statements_per_minute=2, rows_per_hour=10, clock=lambda: now[0])
    assert budget.check() is None
    budget.charge_statement()
    budget.charge_statement()
    spent = budget.check()
    assert spent is not None and spent.rule_id == STATEMENTS_RULE and spent.retry_after_s == 60
    now[0] += 60.5
    assert budget.check() is None
    budget.charge_rows(10)
    assert budget.check().rule_id == ROWS_RULE and budget.rows_left() == 0
    now[0] += 3600
    assert budget.check() is None and budget.rows_left() == 10


async def test_static_tokens_map_to_identities() -> None:
    ident = Identity("bot", "ai_agent", purpose="p")
    table = StaticTokens([TokenEntry(sha256=hashlib.sha256(b"tok-1").hexdigest(),
                                     identity=ident)])
    assert table.identity_for("tok-1") == ident
    assert table.identity_for("tok-2") is None and table.identity_for("") is None
    auth = BearerAuth([table])
    access = await auth.verify_token("tok-1")
    assert "tok-1" not in access.token and auth.identity(access) == ident
    assert await auth.verify_token("tok-1x") is None


def test_tool_specs_are_the_contract() -> None:
    names = [t["name"] for t in TOOL_SPECS]
    assert set(names) == TOOLS and len(names) == len(TOOLS)
    spec = {t["name"]: t for t in TOOL_SPECS}
    assert spec["describe_table"]["input_schema"]["required"] == ["table"]
    assert spec["query"]["input_schema"]["properties"]["params"]["type"] == "array"
    assert spec["explain"]["input_schema"]["required"] == ["sql"]
    assert spec["approval_status"]["input_schema"]["required"] == ["request_id"]


async def test_in_process_unknown_tool_and_arguments_are_not_echoed(
        dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from governed_db.audit import AuditLog
    from governed_db.mcp._tools import CallInfo

    log = AuditLog.in_memory()
    tools = GovernedTools(dsn, policy=parse_policy(""), settings=McpSettings(), audit=log)
    agent = Identity("unit-bot", "ai_agent")
    caplog.set_level("INFO", logger="governed_db.mcp")
    try:
        out = await tools.call("drop_everything_qem@example.com", {}, agent,
                               CallInfo(request_id="7"))
        assert (out.is_error, out.outcome) == (True, "bad_request")
        assert "qem" not in out.text
        out = await tools.call("query", {"sql": 42}, agent, CallInfo(request_id="8"))
        assert out.outcome == "bad_request"
        out = await tools.call("query", {"sql": "BEGIN"}, agent, CallInfo(request_id="9"))
        assert not out.is_error  # ... and the open transaction is rolled back after the call
        out = await tools.call("query", {"sql": "SELECT 1"}, agent, CallInfo(request_id="10"))
        assert out.structured["rows"] == [[1]]
    finally:
        await tools.aclose()
    assert "qem" not in caplog.text and "tool=<unknown> request=7" in caplog.text
    log.flush()
    events = [r for r in log.records if r.get("type") == "mcp_tool_call"]
    assert [e["identity"]["attributes"]["tool"] for e in events] == \
        ["<unknown>", "query", "query", "query"]
    log.close()


async def test_params_the_placeholders_cannot_take_are_a_request_error(
        dsn: str, recwarn: pytest.WarningsRecorder) -> None:
    """Named placeholders with a list, a count mismatch, an unknown %x: refused before
    anything is spent or sent, with what to change (never an internal error). A server
    given a policy never warns that no policy is configured (the process has none)."""
    from governed_db.audit import AuditLog
    from governed_db.mcp._tools import CallInfo

    log = AuditLog.in_memory()
    tools = GovernedTools(dsn, policy=parse_policy(""), settings=McpSettings(), audit=log)
    agent = Identity("unit-bot", "ai_agent")
    try:
        out = await tools.call("query", {"sql": "SELECT %s", "params": [1]}, agent,
                               CallInfo(request_id="99"))
        assert out.structured["rows"] == [[1]]
        assert [str(w.message) for w in recwarn if "no policy" in str(w.message)] == []
        # params that the placeholders cannot take: a request error, never an internal one
        for rid, (sql, params) in enumerate([
                ("SELECT %(a)s", [1]), ("SELECT %s, %s", [1]), ("SELECT 1", [1]),
                ("SELECT %x", [1])], start=100):
            for tool in ("query", "request_approval"):
                out = await tools.call(tool, {"sql": sql, "params": params}, agent,
                                       CallInfo(request_id=str(rid)))
                assert (out.is_error, out.outcome) == (True, "bad_request"), (tool, sql, out)
                assert "argument params does not fit the placeholders" in out.text
    finally:
        await tools.aclose()
    log.flush()
    sent = [r for r in log.records if r.get("type") == "statement"]
    assert len(sent) == 1  # only the SELECT %s above
    log.close()


# -- DNS rebinding: Host/Origin checked for every bind address ---------------------------------

@pytest.mark.parametrize("bind", ["127.0.0.1", "127.0.0.2", "localhost", "[::1]", "::1",
                                  "10.1.2.3"])
async def test_transport_security_allows_only_the_bound_names(bind):
    from starlette.requests import Request

    from mcp.server.transport_security import TransportSecurityMiddleware

    from governed_db.mcp.server import is_loopback, transport_security

    check = TransportSecurityMiddleware(transport_security(bind, 8123))

    async def status(host: str, origin: str | None = None) -> int:
        headers = [(b"host", host.encode())] + ([(b"origin", origin.encode())] if origin else [])
        req = Request({"type": "http", "method": "GET", "path": "/mcp", "headers": headers})
        res = await check.validate_request(req)
        return 200 if res is None else res.status_code

    spelled = f"[{bind.strip('[]')}]" if ":" in bind else bind
    assert await status(f"{spelled}:8123") == 200
    assert await status(f"{spelled}:8123", f"http://{spelled}:8123") == 200
    assert await status("attacker.example:8123", "http://attacker.example:8123") == 421
    assert await status(f"{spelled}:8123", "http://attacker.example:8123") == 403
    assert await status(f"{spelled}:9999") == 421  # another port is another origin
    assert await status("localhost:8123") == (200 if is_loopback(bind) else 421)


def test_rebinding_refused_on_another_loopback_address(dsn, tmp_path):
    """``--http 127.0.0.2:P`` is loopback (no tokens needed), so it must check Host too."""
    with open(tmp_path / "err.log", "w") as errlog, \
            http_server(dsn, {"GOVERNED_DB_HOME": str(tmp_path)}, errlog, "127.0.0.2") as url:
        port = url.rsplit(":", 1)[1].split("/")[0]
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "page", "version": "1"}}}
        accept = {"Accept": "application/json, text/event-stream"}
        evil = httpx2.post(url, json=init, timeout=30, headers={
            **accept, "Host": f"attacker.example:{port}",
            "Origin": f"http://attacker.example:{port}"})
        assert evil.status_code == 421
        local = httpx2.post(url, json=init, timeout=30, headers=accept)
        assert local.status_code == 200
