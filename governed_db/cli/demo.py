"""``governed-db demo``: the seed scenario end to end on a throwaway PostgreSQL.

An AI agent ("recs-bot", weekly recommendations, on behalf of an analyst) works through a real
LangChain SQL toolkit driven by a scripted chat model: it reads customers (PII masked), tries
DROP TABLE (denied), a mass UPDATE (rolled back by the exact blast-radius limit) and an INSERT
that needs a person's approval (approved from the CLI, then run once). The auditor's question is
answered from the signed audit log, which verifies — and a tampered copy does not.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

DEMO_POLICY = """
version = 1
name = "demo"

[session]
read_only_kinds = []                   # this agent may write, within the limits below
statement_timeout = { ai_agent = "30s" }

[[rules]]
id = "statement.allowlist"
identity_kinds = ["ai_agent"]
allow = ["SELECT", "EXPLAIN", "SHOW", "EMPTY", "UPDATE", "INSERT", "BEGIN", "COMMIT",
         "ROLLBACK", "SAVEPOINT", "RELEASE", "ROLLBACK TO"]

[[rules]]
id = "statement.affected-row-limit"    # exact count, in a savepoint; over the limit: rolled back
max_rows_by_kind = { ai_agent = 25, human = 1000, service = 10000 }

[[rules]]
id = "statement.require-approval"      # new promotions need a person's approval
identity_kinds = ["ai_agent"]
kinds = ["INSERT"]
tables = ["promotions"]
level = "approval"

[[rules]]
id = "statement.disallow-drop"

[[rules]]
id = "statement.disallow-truncate"

[[rules]]
id = "statement.where.require.update-delete"

[[rules]]
id = "function.deny"

[[rules]]
id = "statement.disallow-ddl"
level = "approval"
"""

_FIRST = ["Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia",
          "Tim", "Margaret", "John", "Katherine", "Dennis", "Hedy", "Linus", "Shafi", "Niklaus"]
_LAST = ["Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
         "Perlman", "Berners-Lee", "Hamilton", "Backus", "Johnson", "Ritchie", "Lamarr",
         "Torvalds", "Goldwasser", "Wirth"]
_CITIES = ["London", "Paris", "Berlin", "Lisbon", "Austin", "Toronto", "Osaka", "Nairobi"]
_ITEMS = ["telescope", "star chart", "cipher wheel", "compiler book", "slide rule", "abacus"]

DEMO_SCHEMA = "governed_demo"  # everything the demo creates lives here, and is dropped after
SCHEMA = f"""
DROP SCHEMA IF EXISTS {DEMO_SCHEMA} CASCADE;
CREATE SCHEMA {DEMO_SCHEMA};
SET search_path = {DEMO_SCHEMA};
CREATE TABLE customers (id int PRIMARY KEY, name text, email text, phone text, ssn text,
                        city text, segment text);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers, amount numeric,
                     item text, ordered_at date);
CREATE TABLE promotions (id serial PRIMARY KEY, customer_id int REFERENCES customers,
                         offer text);
"""


def seed_rows(n_customers: int = 300, seed: int = 7) -> tuple[list[tuple[Any, ...]],
                                                              list[tuple[Any, ...]]]:
    """Deterministic, realistic-looking customers and orders (no network, no extra package)."""
    rng = random.Random(seed)  # noqa: S311 - demo data, not secrets
    customers, orders = [], []
    for i in range(1, n_customers + 1):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        customers.append((
            i, f"{first} {last}", f"{first}.{last}{i}@example.com".lower(),
            f"+1 415 555 {rng.randint(1000, 9999)}",
            f"{rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
            rng.choice(_CITIES), rng.choice(["bronze", "silver", "gold"])))
    oid = 0
    for cid in range(1, n_customers + 1):
        for _ in range(rng.randint(1, 6)):
            oid += 1
            orders.append((oid, cid, round(rng.uniform(5, 400), 2), rng.choice(_ITEMS),
                           f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}"))
    return customers, orders


class _Out:
    """Rich panels on a terminal, plain lines otherwise, nothing but JSON with --json."""

    def __init__(self, as_json: bool) -> None:
        from rich.console import Console

        self.as_json = as_json
        self.console = Console(highlight=False, quiet=as_json)
        self.steps: list[dict[str, Any]] = []
        self.ok = True

    def step(self, title: str, ok: bool, body: str = "", **data: Any) -> None:
        from rich.panel import Panel

        self.ok &= ok
        self.steps.append({"step": title, "ok": ok, "detail": body, **data})
        style = "green" if ok else "red"
        self.console.print(Panel(body or "", title=f"[bold]{title}[/]", border_style=style,
                                 title_align="left"))


def run_demo(dsn: str | None, as_json: bool) -> int:
    import psycopg
    from psycopg.conninfo import make_conninfo

    from governed_db._pgcluster import Cluster

    out = _Out(as_json)
    home = Path(tempfile.mkdtemp(prefix="governed_db_demo_"))
    saved_env = {k: os.environ.get(k) for k in ("GOVERNED_DB_HOME", "GOVERNED_DB_APPROVALS_DSN")}
    os.environ["GOVERNED_DB_HOME"] = str(home)
    os.environ.pop("GOVERNED_DB_APPROVALS_DSN", None)
    cluster = None
    started = time.monotonic()
    try:
        if dsn is None:
            with out.console.status("starting a throwaway PostgreSQL ..."):
                cluster = Cluster().start()
            dsn = cluster.dsn
        try:
            _story(make_conninfo(dsn, options=f"-csearch_path={DEMO_SCHEMA}"), home, out)
        finally:
            if cluster is None:  # an existing server: leave it as it was
                with psycopg.connect(dsn, autocommit=True) as raw:
                    raw.execute(f"DROP SCHEMA IF EXISTS {DEMO_SCHEMA} CASCADE")
    except KeyboardInterrupt:
        out.console.print("[yellow]interrupted: cleaning up[/]")
        out.ok = False
    except Exception as exc:  # noqa: BLE001 - the demo reports any failure as a failed step
        out.step("unexpected error", False, f"{type(exc).__name__}: {exc}")
    finally:
        import governed_db

        governed_db.reset_defaults()
        if cluster is not None:
            cluster.stop()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(home, ignore_errors=True)
    seconds = round(time.monotonic() - started, 1)
    if as_json:
        click.echo(json.dumps({"ok": out.ok, "seconds": seconds, "steps": out.steps},
                              default=str))
    else:
        verdict = "[green]demo passed[/]" if out.ok else "[red]demo FAILED[/]"
        out.console.print(f"{verdict} in {seconds} s")
    return 0 if out.ok else 1


def _story(dsn: str, home: Path, out: _Out) -> None:
    import psycopg

    import governed_db
    from governed_db import Identity
    from governed_db.audit import VerificationError, load_public_key, report, verify
    from governed_db.policy import parse_policy

    from . import render_report

    customers, orders = seed_rows()
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute(SCHEMA)
        with raw.cursor() as cur:
            cur.executemany("INSERT INTO customers VALUES (%s, %s, %s, %s, %s, %s, %s)",
                            customers)
            cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s, %s)", orders)
    log = home / "audit.jsonl"
    policy = parse_policy(DEMO_POLICY, source="demo policy")
    governed_db.reset_defaults()
    governed_db.configure(audit=str(log), policy=policy)
    agent = Identity("recs-bot", "ai_agent", purpose="weekly recommendations",
                     on_behalf_of="maria.analyst", model="scripted-llm")
    out.step("setup", True,
             f"{len(customers)} customers and {len(orders)} orders seeded; the agent runs as"
             f" {agent.label} (purpose: {agent.purpose}, on behalf of {agent.on_behalf_of})\n"
             "policy: read/insert/update allowed, at most 25 rows per change, new promotions"
             " need approval, no DROP/TRUNCATE/unbounded writes, dangerous functions denied")

    tool = _sql_tool(dsn, agent, out)
    top = ("SELECT c.name, c.email, c.phone, c.ssn, c.segment, sum(o.amount) AS spend"
           " FROM customers c JOIN orders o ON o.customer_id = c.id"
           " GROUP BY c.id ORDER BY spend DESC LIMIT 5")
    rows = tool("call_1", top)
    masked = "****@example.com" in rows and not any(c[2] in rows for c in customers[:50])
    out.step("1. the agent reads its top customers: PII masked", masked, rows)

    drop = tool("call_2", "DROP TABLE orders")
    out.step("2. the agent tries DROP TABLE: denied, and told why", "disallow-drop" in drop,
             drop)

    mass = tool("call_3", "UPDATE customers SET segment = 'vip' WHERE segment = 'gold'")
    with psycopg.connect(dsn) as raw:
        vip = (raw.execute("SELECT count(*) FROM customers WHERE segment = 'vip'").fetchone()
               or (0,))[0]
    out.step("3. a mass UPDATE: stopped by the exact blast-radius limit, rolled back",
             "affected-row-limit" in mass and vip == 0, f"{mass}\n\ncustomers now vip: {vip}")

    promo = ("INSERT INTO promotions (customer_id, offer) SELECT c.id, '10% off telescopes'"
             " FROM customers c JOIN orders o ON o.customer_id = c.id"
             " GROUP BY c.id ORDER BY sum(o.amount) DESC LIMIT 5")
    asked = tool("call_4", promo)
    request_id = asked.split("approval request ", 1)[-1].split(":", 1)[0].strip() \
        if "approval request" in asked else ""
    out.step("4. a risky change asks for approval", bool(request_id), asked)

    from click.testing import CliRunner

    from . import main

    cli = CliRunner().invoke(main, ["approvals", "approve", request_id, "--as",
                                    "human:dana.dba", "--note", "fine for this week"])
    self_try = CliRunner().invoke(main, ["approvals", "list"])
    out.step("5. a person approves it from the CLI", cli.exit_code == 0,
             f"$ governed-db approvals approve {request_id} --as human:dana.dba\n"
             f"{cli.output.strip()}\n$ governed-db approvals list\n"
             f"{self_try.output.strip() or '(nothing pending)'}")
    again = tool("call_5", promo)
    with psycopg.connect(dsn) as raw:
        promos = (raw.execute("SELECT count(*) FROM promotions").fetchone() or (0,))[0]
    out.step("6. the identical statement now runs, once", promos == 5,
             f"{again}\npromotions created: {promos}")

    governed_db.reset_defaults()  # closes the audit log: signed close checkpoint
    rep = report(log, "scripted-llm")
    touched = {t["table"] for t in rep["tables"]}
    out.step("7. the auditor: which datasets did the model touch, when and why",
             {"customers", "orders"} <= touched and bool(rep["denied"]),
             f"$ governed-db audit report {log.name} --identity scripted-llm",
             tables=sorted(touched), denied=len(rep["denied"]))
    render_report(rep, out.console)

    pub = load_public_key(home / "audit-signing.pub")
    rep_v = verify(log, pub)
    out.step("8. audit verify: the log is intact and signed", True,
             f"$ governed-db audit verify {log.name} --public-key audit-signing.pub\n"
             f"OK: {rep_v.records} records in {rep_v.chains} chain(s), signatures valid")
    tampered = home / "tampered.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    victim = next(i for i, line in enumerate(lines) if '"DROP' in line or "orders" in line)
    lines[victim] = lines[victim].replace('"action":"deny"', '"action":"allow"', 1) \
        if '"action":"deny"' in lines[victim] else lines[victim].replace("orders", "orderz", 1)
    tampered.write_text("".join(lines))
    try:
        verify(tampered, pub)
        out.step("9. a tampered copy", False, "NOT detected")
    except VerificationError as exc:
        out.step("9. someone edits one record: caught", True, f"TAMPERED: {exc}")


def _sql_tool(dsn: str, agent: Any, out: _Out) -> Callable[[str, str], str]:
    """The agent's SQL tool: LangChain's real toolkit when installed, else a direct call."""
    try:
        from langchain_community.agent_toolkits import SQLDatabaseToolkit
        from langchain_core.language_models.fake import FakeListLLM
        from langchain_core.messages import AIMessage
    except ImportError:
        out.console.print("[yellow]LangChain is not installed (pip install"
                          " 'governed-db[langchain]'): using a direct governed connection[/]")
        return _direct_tool(dsn, agent)
    from governed_db.integrations.langchain import ToolCallIdentity, governed_sql_database

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        db = governed_sql_database(dsn, identity=agent,
                                   include_tables=["customers", "orders", "promotions"])
    tools = {t.name: t for t in SQLDatabaseToolkit(db=db, llm=FakeListLLM(responses=["ok"]))
             .get_tools()}
    handler = ToolCallIdentity(agent)

    def run(call_id: str, sql: str) -> str:
        # What the scripted model "decided": a tool call, exactly as a chat model emits it.
        msg = AIMessage(content="", tool_calls=[{"name": "sql_db_query", "args": {"query": sql},
                                                 "id": call_id, "type": "tool_call"}])
        result = tools["sql_db_query"].invoke(msg.tool_calls[0],
                                              config={"callbacks": [handler]})
        return f"tool call {call_id}: {sql}\n-> {result.content}"

    return run


def _direct_tool(dsn: str, agent: Any) -> Callable[[str, str], str]:
    import governed_db

    def run(call_id: str, sql: str) -> str:
        with governed_db.connect(dsn, identity=agent.evolve(
                attributes={"tool_call_id": call_id})) as conn:
            try:
                cur = conn.execute(sql)
                result = cur.fetchall() if cur.description else cur.statusmessage
                conn.commit()
            except governed_db.errors.StatementDenied as exc:
                result = f"Error: {exc}"
        return f"tool call {call_id}: {sql}\n-> {result}"

    return run
