"""Latency of a ``query`` tool call: governed MCP server vs a direct governed connection.

    python -m benchmarks.mcp_latency            # 8 interleaved rounds of 40 calls each
    python -m benchmarks.mcp_latency --quick    # a smoke run

Variants, measured in one process run in interleaved rounds whose order alternates
(../shared/design/performance.md), each a point SELECT by primary key with one masked column,
as the same ai_agent identity, audit on:

* ``direct``   — ``governed_db.AsyncConnection``: ``execute`` + ``fetchall``;
* ``tools``    — the server's tool layer in-process (``GovernedTools.call("query")``): budget,
  acting_as with the call's attributes, result rendering, the tool-call audit event;
* ``mcp-stdio`` — the SDK's ``ClientSession.call_tool`` against ``governed-db mcp`` running as
  a subprocess (JSON-RPC over pipes, the SDK server, the tool layer);
* ``mcp-http`` — the same over streamable HTTP on loopback.

Reported: the median of the per-round medians (µs per call) and each ratio to ``direct``. A
throwaway PostgreSQL is started unless GOVERNED_DB_TEST_DSN points at a server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg

import governed_db
from governed_db import Identity
from governed_db._pgcluster import Cluster
from governed_db.mcp._settings import Limits, McpSettings
from governed_db.mcp._tools import CallInfo, GovernedTools
from governed_db.policy import default_policy

AGENT = Identity("bench-agent", "ai_agent", purpose="benchmark", model="bench-llm")
QUERY = "SELECT id, email, note FROM mcp_bench WHERE id = %s"
SETUP = """
DROP TABLE IF EXISTS mcp_bench;
CREATE TABLE mcp_bench (id int PRIMARY KEY, email text, note text);
INSERT INTO mcp_bench SELECT g, 'user' || g || '@example.com', 'note ' || g
  FROM generate_series(1, 1000) g;
ANALYZE mcp_bench;
"""
# Budgets out of the way (flags can only tighten, so the policy raises them).
POLICY = "[mcp]\nstatements_per_minute = 100000000\nrows_per_hour = 100000000\n"
FLAGS: list[str] = []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _bench(dsn: str, rounds: int, calls: int, env: dict[str, str]) -> dict[str, Any]:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from mcp.client.streamable_http import streamable_http_client
    import httpx2

    conn = await governed_db.AsyncConnection.connect(dsn, identity=AGENT, autocommit=True)
    settings = McpSettings(limits=Limits(statements_per_minute=10**8, rows_per_hour=10**8))
    tools = GovernedTools(dsn, policy=default_policy(), settings=settings)
    port = _free_port()
    http = subprocess.Popen(
        [sys.executable, "-m", "governed_db", "mcp", "--dsn", dsn, "--identity",
         AGENT.label, "--http", f"127.0.0.1:{port}", *FLAGS],
        env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "governed_db", "mcp", "--dsn", dsn, "--identity",
                                      AGENT.label, *FLAGS], env=env)
    results: dict[str, list[float]] = {"direct": [], "tools": [], "mcp-stdio": [],
                                       "mcp-http": []}
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline or http.poll() is not None:
                raise RuntimeError("the HTTP server did not start")
            await asyncio.sleep(0.2)
        errlog = open(os.devnull, "w")  # noqa: SIM115 - closed below
        async with contextlib.AsyncExitStack() as stack:
            r, w = await stack.enter_async_context(stdio_client(params, errlog=errlog))
            stdio = await stack.enter_async_context(ClientSession(r, w))
            await stdio.initialize()
            client = await stack.enter_async_context(httpx2.AsyncClient(timeout=60))
            hr, hw = await stack.enter_async_context(
                streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=client))
            hsess = await stack.enter_async_context(ClientSession(hr, hw))
            await hsess.initialize()

            async def direct(i: int) -> None:
                cur = await conn.execute(QUERY, [i])
                await cur.fetchall()

            async def in_process(i: int) -> None:
                out = await tools.call("query", {"sql": QUERY, "params": [i]}, AGENT,
                                       CallInfo(request_id=str(i), client_name="bench"))
                assert not out.is_error, out.text

            async def over_stdio(i: int) -> None:
                res = await stdio.call_tool("query", {"sql": QUERY, "params": [i]})
                assert not res.is_error, res.content[0].text

            async def over_http(i: int) -> None:
                res = await hsess.call_tool("query", {"sql": QUERY, "params": [i]})
                assert not res.is_error, res.content[0].text

            variants: list[tuple[str, Callable[[int], Awaitable[None]]]] = [
                ("direct", direct), ("tools", in_process), ("mcp-stdio", over_stdio),
                ("mcp-http", over_http)]
            for name, fn in variants:  # warm up every path (caches, plans, connections)
                for i in range(1, 20):
                    await fn(i)
            for rnd in range(rounds):
                order = variants if rnd % 2 == 0 else list(reversed(variants))
                for name, fn in order:
                    times = []
                    for k in range(calls):
                        i = 1 + (rnd * calls + k) % 1000
                        t0 = time.perf_counter()
                        await fn(i)
                        times.append(time.perf_counter() - t0)
                    results[name].append(statistics.median(times) * 1e6)
        errlog.close()
    finally:
        await conn.close()
        await tools.aclose()
        http.terminate()
        http.wait(15)
    med = {k: statistics.median(v) for k, v in results.items()}
    return {"median_us": med, "ratio_to_direct": {k: v / med["direct"] for k, v in med.items()},
            "rounds": rounds, "calls_per_round": calls}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--calls", type=int, default=40)
    args = ap.parse_args(argv)
    rounds, calls = (2, 10) if args.quick else (args.rounds, args.calls)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(prefix="mcp_bench_") as tmp, contextlib.ExitStack() as st:
        home = Path(tmp) / "state"
        os.environ["GOVERNED_DB_HOME"] = str(home)
        os.environ["GOVERNED_DB_AUDIT"] = str(Path(tmp) / "audit.jsonl")
        policy = Path(tmp) / "policy.toml"
        policy.write_text(POLICY)
        env = {"GOVERNED_DB_HOME": str(home), "GOVERNED_DB_AUDIT": os.environ["GOVERNED_DB_AUDIT"],
               "GOVERNED_DB_POLICY": str(policy), "PYTHONWARNINGS": "ignore"}
        dsn = os.environ.get("GOVERNED_DB_TEST_DSN") or st.enter_context(Cluster()).dsn
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(SETUP)
        out = asyncio.run(_bench(dsn, rounds, calls, env))
    print(f"query tool call, point SELECT with a masked column ({out['rounds']} rounds x"
          f" {out['calls_per_round']} calls, median of round medians)")
    print(f"{'variant':<12}{'µs/call':>12}{'vs direct':>12}")
    for name, us in out["median_us"].items():
        print(f"{name:<12}{us:>12.0f}{out['ratio_to_direct'][name]:>11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
