"""Cost of the effect check per write statement (issue 12 item 4).

    python -m benchmarks.effects            # same-CPU and split-CPU, prints a table, writes JSON
    python -m benchmarks.effects --quick

Three variants per write shape, measured in one process in interleaved rounds (see
``benchmarks/run.py`` for the method): raw psycopg, governed with the default profile (effect
check on) and governed with the same profile minus the two effect rules
(``statement.affected-row-limit``, ``statement.disallow-full-table-write``). Shapes:

* point UPDATE by primary key — bounded in advance: the check adds nothing but analysis;
* 5-row range UPDATE (``WHERE id BETWEEN $1 AND $2``) — not bounded in advance: runs in a
  savepoint with ``pg_stat_xact_user_tables`` read before and after (no exact count needed:
  5 rows of 10,000);
* both in autocommit (each statement its own transaction, fsync) and inside a transaction.

Client CPU time per statement is reported beside each median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import psycopg

import governed_db
from governed_db import Identity
from governed_db._pgcluster import Cluster
from governed_db.audit import AuditLog
from governed_db.policy import default_policy

from .run import _pin

SERVICE = Identity("bench-svc", "service", purpose="benchmark")
SETUP = """
DROP TABLE IF EXISTS bench_fx;
CREATE TABLE bench_fx (id int PRIMARY KEY, amount numeric);
INSERT INTO bench_fx SELECT g, g FROM generate_series(1, 10000) g;
ANALYZE bench_fx;
"""
EFFECT_RULES = ("statement.affected-row-limit", "statement.disallow-full-table-write")


def _measure(variants: dict[str, Callable[[], Any]], *, rounds: int, per_round: int,
             warmup: int = 30) -> dict[str, tuple[float, float]]:
    """(median µs, client CPU µs) per call: median over rounds of per-round medians, rounds
    in alternating order."""
    names = list(variants)
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            fn = variants[n]
            samples = []
            c0 = cpu_clock()
            for _ in range(per_round):
                t0 = clock()
                fn()
                samples.append(clock() - t0)
            cpu[n].append((cpu_clock() - c0) / per_round / 1000)
            wall[n].append(statistics.median(samples) / 1000)
    return {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in names}


def run(dsn: str, *, quick: bool, pin: tuple[int, int]) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="governed_db_bench_fx_"))
    os.environ["GOVERNED_DB_HOME"] = str(tmp / "state")
    audit = AuditLog.open(tmp / "audit.jsonl")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(SETUP)
    full = default_policy()
    without = attrs.evolve(full, rules=tuple(r for r in full.rules if r.id not in EFFECT_RULES))
    rounds, per_round = (3, 30) if quick else (7, 100)
    out: list[dict[str, Any]] = []
    for autocommit in (True, False):
        conns = {"raw psycopg": psycopg.connect(dsn, autocommit=autocommit),
                 "governed, effect check": governed_db.connect(
                     dsn, identity=SERVICE, policy=full, audit=audit, autocommit=autocommit),
                 "governed, no effect check": governed_db.connect(
                     dsn, identity=SERVICE, policy=without, audit=audit,
                     autocommit=autocommit)}
        pinned = _pin(list(conns.values()), *pin)
        for shape, sql, params in (
                ("point UPDATE by PK", "UPDATE bench_fx SET amount = amount WHERE id = %s",
                 lambda i: (i,)),
                ("5-row range UPDATE", "UPDATE bench_fx SET amount = amount"
                 " WHERE id BETWEEN %s AND %s", lambda i: (i, i + 4))):
            def make(conn: Any, slot: int, sql: str = sql, params: Any = params
                     ) -> Callable[[], Any]:
                # Each connection writes its own third of the table: an open transaction of
                # one variant never makes another wait for its row locks.
                cur = conn.cursor()
                state = {"i": 0}

                def call() -> None:
                    state["i"] += 1
                    cur.execute(sql, params(slot * 3300 + state["i"] % 3290 + 1))
                    if not autocommit and state["i"] % 50 == 0:
                        conn.commit()

                return call

            figures = _measure({n: make(c, k) for k, (n, c) in enumerate(conns.items())},
                               rounds=rounds,
                               per_round=per_round)
            base = figures["raw psycopg"][0]
            no_check = figures["governed, no effect check"][0]
            for variant, (med, cpu) in figures.items():
                out.append({"case": f"{shape} ({'autocommit' if autocommit else 'in a transaction'})",
                            "variant": variant, "median_us": round(med, 1),
                            "client_cpu_us": round(cpu, 1), "vs_raw": round(med / base, 3),
                            "vs_no_check": round(med / no_check, 3), "pinned": pinned})
        for c in conns.values():
            if not autocommit:
                c.rollback()
            c.close()
    audit.close()
    return out


def _table(rows: list[dict[str, Any]], title: str) -> str:
    lines = [f"### {title}", "", "| case | variant | median µs | client CPU µs | vs raw |"
             " vs governed without check |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['variant']} | {r['median_us']} | {r['client_cpu_us']}"
                     f" | {r['vs_raw']:.2f}× | {r['vs_no_check']:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/effects-results.json")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    layouts = [("same-CPU", (0, 0))]
    if (os.cpu_count() or 1) > 1:
        layouts.append(("split-CPU", (0, 1)))
    results: dict[str, Any] = {}

    def go(dsn: str) -> None:
        for label, pin in layouts:
            rows = run(dsn, quick=args.quick, pin=pin)
            results[label] = rows
            print(_table(rows, f"{label} (client CPU {pin[0]}, backends CPU {pin[1]})"))
            print()

    dsn = os.environ.get("GOVERNED_DB_TEST_DSN")
    if dsn:
        go(dsn)
    else:
        with Cluster() as cluster:
            go(cluster.dsn)
    Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
