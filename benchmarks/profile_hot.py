"""Where the µs of a governed point SELECT go: cProfile over a tight loop, and call counts.

    python -m benchmarks.profile_hot [--n 20000] [--top 30] [--identity agent|service]

Prints the loop's µs per statement without the profiler (governed and raw, same pinning),
Python calls per statement (raw psycopg vs governed, and how many of them are governed_db's),
and the functions ordered by their own time per statement. The audit writer runs in its own
thread and is not in this profile; ``benchmarks.run`` reports its CPU time per statement.
Run it under ``flock /work/locks/suite`` on a shared machine.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg

import governed_db
from governed_db.audit import AuditLog

from .run import AGENT, SERVICE, SETUP, _pin, database

QUERY = "SELECT id, email, note FROM bench WHERE id = %s"


def _loop(cur: Any, n: int) -> None:
    for i in range(n):
        cur.execute(QUERY, (i % 10000 + 1,)).fetchone()


def _profile(cur: Any, n: int) -> pstats.Stats:
    prof = cProfile.Profile()
    prof.enable()
    _loop(cur, n)
    prof.disable()
    return pstats.Stats(prof)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--identity", choices=("agent", "service"), default="agent")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    tmp = Path(tempfile.mkdtemp(prefix="governed_db_prof_"))
    os.environ["GOVERNED_DB_HOME"] = str(tmp / "state")
    with database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(SETUP)
        log = AuditLog.open(tmp / "audit.jsonl")
        raw = psycopg.connect(dsn, autocommit=True)
        gov = governed_db.connect(dsn, identity=AGENT if args.identity == "agent" else SERVICE,
                                  audit=log, autocommit=True)
        cpu0 = sorted(os.sched_getaffinity(0))[0]
        _pin([raw, gov], cpu0, cpu0)
        rc, gc = raw.cursor(), gov.cursor()
        for cur in (rc, gc):
            _loop(cur, 500)
        timing = {}
        for name, cur in (("raw", rc), ("governed", gc), ("raw", rc), ("governed", gc)):
            t0 = time.perf_counter()
            _loop(cur, args.n)
            timing.setdefault(name, []).append((time.perf_counter() - t0) / args.n * 1e6)
        for name, vals in timing.items():
            print(f"{name:9s} {min(vals):7.2f} µs per statement (best of 2, same-CPU, no profiler)")
        raw_stats = _profile(rc, args.n)
        gov_stats = _profile(gc, args.n)
        log.flush(timeout=60)
        for name, st in (("raw psycopg", raw_stats), ("governed", gov_stats)):
            calls = sum(v[1] for v in st.stats.values()) / args.n  # type: ignore[attr-defined]
            ours = sum(v[1] for k, v in st.stats.items()  # type: ignore[attr-defined]
                       if "governed_db" in k[0]) / args.n
            print(f"{name}: {calls:.1f} Python calls per statement, {ours:.1f} in governed_db")
        print(f"\ngoverned, own time per statement (µs, under the profiler), top {args.top}:")
        rows = sorted(gov_stats.stats.items(),  # type: ignore[attr-defined]
                      key=lambda kv: kv[1][2], reverse=True)[:args.top]
        for (file, line, func), (_cc, nc, tt, ct, _callers) in rows:
            short = file.split("site-packages/")[-1].split("/work/wt/")[-1]
            print(f"{tt / args.n * 1e6:7.2f} own {ct / args.n * 1e6:7.2f} cum"
                  f" {nc / args.n:5.1f}× {short}:{line} {func}")
        raw.close()
        gov.close()
        log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
