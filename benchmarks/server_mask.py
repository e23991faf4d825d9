"""P3 with masking done by the server: a 10,000-row fetch with 2 masked columns.

    python -m benchmarks.server_mask           # same-CPU and split-CPU, prints a table
    python -m benchmarks.server_mask --quick   # fewer rounds

Variants, measured in one process in interleaved rounds (see benchmarks/run.py for the method):
raw psycopg; governed ai_agent with ``[masking] server_side = false`` (every masked cell
masked in Python); governed ai_agent with the default (the server masks). Besides the ratio of
medians, CPU time per statement is reported split into the client thread, the rest of the
client process (the audit writer) and the server backend (``/proc/<pid>/schedstat``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

import governed_db
from governed_db._pgcluster import Cluster
from governed_db.audit import AuditLog
from governed_db.policy import parse_policy

from .run import AGENT, SETUP, _pin, interleaved

QUERY = "SELECT id, email, ssn FROM bench"
UNMASKED = "SELECT id, note, amount FROM bench"


def _backend_ns(conn: Any) -> int:
    try:
        with open(f"/proc/{conn.info.backend_pid}/schedstat") as f:
            return int(f.read().split()[0])
    except OSError:
        return 0


def cpu_per_call(conn: Any, fn: Callable[[], Any], n: int) -> dict[str, float]:
    """µs of CPU per call: client thread, other client threads (writer), server backend."""
    t0, p0, s0 = time.thread_time_ns(), time.process_time_ns(), _backend_ns(conn)
    for _ in range(n):
        fn()
    t1, p1, s1 = time.thread_time_ns(), time.process_time_ns(), _backend_ns(conn)
    client = (t1 - t0) / n / 1000
    return {"client": round(client, 1), "writer": round((p1 - p0) / n / 1000 - client, 1),
            "server": round((s1 - s0) / n / 1000, 1)}


def run(dsn: str, quick: bool) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="governed_db_bench_sm_"))
    os.environ["GOVERNED_DB_HOME"] = str(tmp / "state")
    audit = AuditLog.open(tmp / "audit.jsonl")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(SETUP)
    off_policy = parse_policy("[masking]\nserver_side = false\n")
    rounds = 5 if quick else 11
    out: list[dict[str, Any]] = []
    for label, pin in (("same-CPU", (0, 0)), ("split-CPU", (0, 1))):
        raw = psycopg.connect(dsn, autocommit=True)
        off = governed_db.connect(dsn, identity=AGENT, audit=audit, autocommit=True,
                                  policy=off_policy)
        on = governed_db.connect(dsn, identity=AGENT, audit=audit, autocommit=True)
        conns = {"raw psycopg": raw, "governed, client-side masking": off,
                 "governed, server-side masking": on}
        pinned = _pin(list(conns.values()), *pin)

        def fetch(c: Any, q: str) -> Callable[[], Any]:
            cur = c.cursor()
            return lambda: cur.execute(q).fetchall()

        for case, q in (("fetch 10,000 rows, 2 masked columns", QUERY),
                        ("fetch 10,000 rows, unmasked", UNMASKED)):
            fns = {name: fetch(c, q) for name, c in conns.items()}
            if q == QUERY:
                assert fns["governed, server-side masking"]() == fns[
                    "governed, client-side masking"](), "server and client masking differ"
            medians = {name: f["median"] for name, f in interleaved(
                fns, rounds=rounds, per_round=5, warmup=2).items()}
            cpu = {name: cpu_per_call(conns[name], fn, 10 if quick else 30)
                   for name, fn in fns.items()}
            base = medians["raw psycopg"]
            base_cpu = sum(cpu["raw psycopg"].values())
            for name, med in medians.items():
                total = sum(cpu[name].values())
                out.append({"pinning": label if pinned else "unpinned", "case": case,
                            "variant": name, "median_us": round(med, 1),
                            "ratio": round(med / base, 3), "cpu_us": cpu[name],
                            "cpu_ratio": round(total / base_cpu, 3) if base_cpu else None})
        for c in conns.values():
            c.close()
        audit.flush()
    audit.close()
    return out


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| pinning | case | variant | median µs | ratio | CPU µs client / writer / server"
             " | CPU ratio |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["cpu_us"]
        lines.append(f"| {r['pinning']} | {r['case']} | {r['variant']} | {r['median_us']:,} |"
                     f" {r['ratio']:.3f}× | {c['client']:,} / {c['writer']:,} / {c['server']:,}"
                     f" | {r['cpu_ratio']:.3f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    dsn = os.environ.get("GOVERNED_DB_TEST_DSN")
    if dsn:
        rows = run(dsn, args.quick)
    else:
        with Cluster() as cluster:
            rows = run(cluster.dsn, args.quick)
    print(_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
