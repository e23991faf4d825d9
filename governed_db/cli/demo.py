"""``governed-db demo``: the seed scenario on a throwaway PostgreSQL (first version)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import click

SEED = """
CREATE TABLE customers (id int PRIMARY KEY, name text, email text, phone text, ssn text,
                        city text, segment text);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int, amount numeric, item text);
INSERT INTO customers VALUES
 (1, 'Ada Byron', 'ada@example.com', '+1 415 555 0101', '123-45-6789', 'London', 'gold'),
 (2, 'Alan Turing', 'alan@example.org', '+1 415 555 0102', '234-56-7890', 'Wilmslow', 'silver'),
 (3, 'Grace Hopper', 'grace@example.net', '+1 415 555 0103', '345-67-8901', 'Arlington', 'gold');
INSERT INTO orders VALUES (1, 1, 120, 'telescope'), (2, 1, 30, 'star chart'),
 (3, 2, 75, 'cipher wheel'), (4, 3, 55, 'compiler book');
"""


def run_demo(dsn: str | None, as_json: bool) -> int:
    import psycopg as raw

    import governed_db as gdb
    from governed_db import Identity, errors
    from governed_db._pgcluster import Cluster
    from governed_db.approvals import ApprovalStore
    from governed_db.audit import VerificationError, load_public_key, verify

    steps: list[dict[str, Any]] = []
    ok = True

    def say(step: str, **data: Any) -> None:
        steps.append({"step": step, **data})
        if not as_json:
            click.secho(f"\n== {step}", bold=True)
            for k, v in data.items():
                click.echo(f"   {k}: {v}")

    home = Path(tempfile.mkdtemp(prefix="governed_db_demo_"))
    os.environ["GOVERNED_DB_HOME"] = str(home)
    cluster = None
    try:
        if dsn is None:
            if not as_json:
                click.echo("starting a throwaway PostgreSQL ...")
            cluster = Cluster().start()
            dsn = cluster.dsn
        with raw.connect(dsn, autocommit=True) as r:
            r.execute("DROP TABLE IF EXISTS customers, orders")
            r.execute(SEED)
        log = home / "audit.jsonl"
        gdb.reset_defaults()
        gdb.configure(audit=str(log))
        from governed_db import _config

        _config.set_approvals(ApprovalStore(home / "approvals"))
        agent = Identity("recs-bot", "ai_agent", purpose="weekly recommendations",
                         on_behalf_of="maria.analyst", model="scripted-llm",
                         attributes={"tool_call_id": "call_001"})
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            conn = gdb.connect(dsn, identity=agent, autocommit=True)
        rows = conn.execute("SELECT c.name, c.email, c.phone, c.ssn, c.segment, sum(o.amount)"
                            " AS spend FROM customers c JOIN orders o ON o.customer_id = c.id"
                            " GROUP BY 1, 2, 3, 4, 5 ORDER BY spend DESC").fetchall()
        say("agent reads customers: PII masked", rows=rows)
        ok &= all("@example" in r[1] and r[1].startswith("****") for r in rows)
        for label, stmt in (("agent tries DROP TABLE", "DROP TABLE customers"),
                            ("agent tries a mass UPDATE",
                             "UPDATE customers SET segment = 'gold' WHERE 1=1")):
            try:
                conn.execute(stmt)
                ok = False
                say(label, result="RAN (unexpected)")
            except errors.StatementDenied as exc:
                say(label, denied_by=list(exc.rule_ids), message_to_model=str(exc))
        conn.close()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ops = gdb.connect(dsn, identity=Identity("deploy-bot", "service"), autocommit=True)
        ddl = "CREATE INDEX customers_segment ON customers (segment)"
        try:
            ops.execute(ddl)
            ok = False
        except errors.ApprovalRequired as exc:
            req = exc.request_id
            say("a service asks for a schema change: approval required", request_id=req,
                rules=list(exc.rule_ids))
            _config.approvals().decide(req, Identity("maria.analyst", "human"), approve=True)
            ops.execute(ddl)
            say("a human approves it; the identical statement runs once", approved_by="maria.analyst")
        ops.close()
        gdb.reset_defaults()
        from governed_db.audit import query

        touched = query(log, identity="recs-bot")
        say("auditor: which datasets did recs-bot touch, when and why",
            command=f"governed-db audit query {log} --identity recs-bot",
            answer=[{"ts": r["ts"][:19], "tables": r["statement"]["reads"] or r["statement"]["writes"],
                     "purpose": r["identity"].get("purpose"), "masked": sorted(r["masked"]),
                     "decision": r["decision"]["action"]} for r in touched])
        pub = load_public_key(home / "audit-signing.pub")
        report = verify(log, pub)
        say("audit verify", result=f"OK, {report.records} records, signed")
        tampered = home / "tampered.jsonl"
        lines = log.read_text().splitlines(keepends=True)
        lines[2] = lines[2].replace("recs-bot", "someone-else")
        tampered.write_text("".join(lines))
        try:
            verify(tampered, pub)
            ok = False
            say("tampered copy", result="NOT DETECTED")
        except VerificationError as exc:
            say("tampered copy is caught", result=str(exc))
    finally:
        if cluster is not None:
            cluster.stop()
    if as_json:
        click.echo(json.dumps({"ok": ok, "steps": steps}, default=str))
    else:
        click.secho("\ndemo " + ("passed" if ok else "FAILED"), fg="green" if ok else "red")
    return 0 if ok else 1
