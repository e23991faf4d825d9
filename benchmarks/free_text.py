"""Cost of the free-text PII detectors on the 10,000-row fetch (``[masking] detect_in_text``).

    flock /work/locks/suite python -m benchmarks.free_text [--quick]

The same agent query (``SELECT id, note, amount FROM ...``, 10,000 rows, ``fetchall``) with
the detectors on (the default profile) and off (``detect_in_text = []``), beside raw psycopg,
measured in one process in interleaved rounds with the client and its backends pinned to one
CPU (the worst case for the ratio), as ``benchmarks.run`` does. Three kinds of notes:

* short notes with a number (``note 1234``): the cheap prefilter rejects every value;
* notes with an 8+ digit order number (``shipped order 10001234, thanks``): every value
  passes the prefilter and runs the detectors, which find nothing (the worst case);
* 10 % of the notes hold a phone number and an e-mail address (masked in place).

Each variant writes its own audit log (a ``masked_in_text`` record per statement, column and
detector). Prints a table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg

import governed_db
from governed_db import Identity
from governed_db.audit import AuditLog
from governed_db.policy import parse_policy

from .run import Variant, _load, _pin, _table, cpu_layouts, database, interleaved

AGENT = Identity("bench-agent", "ai_agent", purpose="benchmark", model="bench-llm")

SETUP = """
DROP TABLE IF EXISTS ft_plain, ft_digits, ft_pii;
CREATE TABLE ft_plain (id int PRIMARY KEY, note text, amount numeric);
INSERT INTO ft_plain SELECT g, 'note ' || g, g * 1.5 FROM generate_series(1, 10000) g;
CREATE TABLE ft_digits (id int PRIMARY KEY, note text, amount numeric);
INSERT INTO ft_digits SELECT g, 'shipped order ' || (10000000 + g) || ', thanks', g * 1.5
  FROM generate_series(1, 10000) g;
CREATE TABLE ft_pii (id int PRIMARY KEY, note text, amount numeric);
INSERT INTO ft_pii SELECT g, CASE WHEN g % 10 = 0
    THEN 'call me at (555) 123-' || lpad((g % 10000)::text, 4, '0') || ' or user' || g
         || '@example.com'
    ELSE 'note ' || g END, g * 1.5 FROM generate_series(1, 10000) g;
ANALYZE ft_plain; ANALYZE ft_digits; ANALYZE ft_pii;
"""
CASES = {
    "ft_plain": "fetch 10,000 rows, short notes (prefilter rejects all)",
    "ft_digits": "fetch 10,000 rows, notes with 8-digit order numbers (all run detectors)",
    "ft_pii": "fetch 10,000 rows, 10% of notes hold a phone and an e-mail",
}


def run(dsn: str, quick: bool, pin: tuple[int, int]) -> tuple[list[dict[str, Any]], bool]:
    tmp = Path(tempfile.mkdtemp(prefix="governed_db_bench_ft_"))
    os.environ["GOVERNED_DB_HOME"] = str(tmp / "state")
    off = parse_policy("[masking]\ndetect_in_text = []\n")
    logs = {n: AuditLog.open(tmp / f"{n}.jsonl") for n in ("on", "off")}
    raw = psycopg.connect(dsn, autocommit=True)
    on_conn = governed_db.connect(dsn, identity=AGENT, audit=logs["on"], autocommit=True)
    off_conn = governed_db.connect(dsn, identity=AGENT, audit=logs["off"], autocommit=True,
                                   policy=off)
    conns = [raw, on_conn, off_conn]
    pinned = _pin(conns, *pin)
    rounds = 5 if quick else 11
    results: list[dict[str, Any]] = []
    for table, title in CASES.items():
        q = f"SELECT id, note, amount FROM {table}"

        def fetch(c: Any, q: str = q) -> Any:
            cur = c.cursor()
            return lambda: cur.execute(q).fetchall()

        figures = interleaved({
            "raw psycopg": Variant(fetch(raw), [raw]),
            "agent, detectors off": Variant(fetch(off_conn), [off_conn], logs["off"]),
            "agent, detectors on (default)": Variant(fetch(on_conn), [on_conn], logs["on"]),
        }, rounds=rounds, per_round=3 if quick else 5, warmup=2)
        base, without = figures["raw psycopg"], figures["agent, detectors off"]
        for variant, f in figures.items():
            results.append({
                "case": title, "variant": variant, "median": round(f["median"], 1), "unit": "µs",
                "ratio": round(f["median"] / base["median"], 3),
                "vs_off": round(f["median"] / without["median"], 3),
                "target": "" if variant != "agent, detectors on (default)" else
                f"{f['median'] / without['median']:.2f}× detectors off",
                "cpu": {k: round(f[k], 1) for k in ("client", "writer", "server", "total")},
                "cpu_ratio": round(f["total"] / base["total"], 3)})
    for c in conns:
        c.close()
    for log in logs.values():
        log.close()
    return results, pinned


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (smoke run)")
    ap.add_argument("--json", default="benchmarks/free_text_results.json")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    started = time.time()
    out: dict[str, Any] = {"python": sys.version.split()[0], "psycopg": psycopg.__version__,
                           "load_before": _load(), "runs": {}}
    with database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(SETUP)
        for label, pin in cpu_layouts():
            results, pinned = run(dsn, args.quick, pin)
            title = f"{label} (client CPU {pin[0]}, backends CPU {pin[1]})" + \
                ("" if pinned else " — pinning refused")
            print(_table(results, title), "\n", flush=True)
            out["runs"][label] = {"pinned": pinned, "results": results}
    out["load_after"] = _load()
    out["seconds"] = round(time.time() - started, 1)
    Path(args.json).write_text(json.dumps(out, indent=1, ensure_ascii=False))
    print(f"({out['seconds']} s; load {out['load_before']} -> {out['load_after']};"
          f" JSON in {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
