"""An MCP client session against the governed MCP server: masked rows, a denied DROP, a blocked
``COMMIT; DROP TABLE ...`` escape — with the official SDK's own client, as an IDE agent would.

    python examples/mcp_session.py                 # starts a throwaway PostgreSQL
    python examples/mcp_session.py --dsn "$DSN"    # or uses yours (creates mcp_demo.customers)

Needs ``pip install 'governed-db[mcp]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile

import mcp_types as types
import psycopg
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

SEED = """
DROP SCHEMA IF EXISTS mcp_demo CASCADE;
CREATE SCHEMA mcp_demo;
CREATE TABLE mcp_demo.customers (id int PRIMARY KEY, name text, email text, ssn text,
                                 city text);
INSERT INTO mcp_demo.customers VALUES
  (1, 'Ada Lovelace', 'ada@example.com', '123-45-6789', 'London'),
  (2, 'Alan Turing', 'alan@example.org', '987-65-4321', 'Manchester'),
  (3, 'Grace Hopper', 'grace@example.net', '555-12-3456', 'Arlington');
"""

STEPS = [
    ("list_tables", {"schema": "mcp_demo"}),
    ("describe_table", {"table": "mcp_demo.customers"}),
    ("query", {"sql": "SELECT id, name, email, ssn FROM mcp_demo.customers WHERE city <> %s",
               "params": ["Paris"]}),
    ("query", {"sql": "DROP TABLE mcp_demo.customers"}),
    ("query", {"sql": "COMMIT; DROP TABLE mcp_demo.customers"}),
    ("query", {"sql": "SELECT * FROM pg_read_file('/etc/passwd')"}),
]


async def session(dsn: str, env: dict[str, str]) -> None:
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "governed_db", "mcp", "--dsn", dsn, "--identity", "ai_agent:demo-agent",
              "--model", "demo-llm", "--purpose", "MCP demo"], env=env)
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write, client_info=types.Implementation(
                name="mcp-demo-client", version="1.0")) as client:
            await client.initialize()
            tools = await client.list_tools()
            print("tools:", ", ".join(t.name for t in tools.tools))
            for name, args in STEPS:
                result = await client.call_tool(name, args)
                flag = "ERROR" if result.is_error else "ok"
                print(f"\n>>> {name} {args}  [{flag}]")
                for block in result.content:
                    print(getattr(block, "text", block))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mcp_demo_") as tmp, contextlib.ExitStack() as st:
        dsn = args.dsn
        if dsn is None:
            from governed_db._pgcluster import Cluster

            dsn = st.enter_context(Cluster()).dsn
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(SEED)
        audit = os.path.join(tmp, "audit.jsonl")
        env = {"GOVERNED_DB_HOME": os.path.join(tmp, "state"), "GOVERNED_DB_AUDIT": audit,
               "PYTHONWARNINGS": "ignore"}
        asyncio.run(session(dsn, env))
        with psycopg.connect(dsn) as c:  # the server's view, as a superuser
            n = c.execute("SELECT count(*) FROM mcp_demo.customers").fetchone()[0]
        print(f"\nraw check: mcp_demo.customers still has {n} rows; the audit log is {audit}:")
        os.environ.update(env)
        from governed_db.cli import main as cli

        with contextlib.suppress(SystemExit):
            cli(["audit", "report", audit, "--identity", "ai_agent:demo-agent"])
        if args.dsn:
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute("DROP SCHEMA mcp_demo CASCADE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
