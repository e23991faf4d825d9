"""The audit writer alone: CPU per statement record and sustained records per second.

    python -m benchmarks.audit_writer [--quick]

Three figures, same-CPU pinning (client, its backend and so the writer thread on one CPU):

* **in situ**: point SELECTs by primary key through a governed connection (agent identity,
  default profile) with a file log in batched durability; the writer thread's CPU per statement
  from ``/proc/self/task/<tid>/schedstat`` after a flush, the client thread's from
  ``time.thread_time``, the backend's from ``/proc/<pid>/schedstat``. Interleaved rounds with
  raw psycopg; medians over rounds.
* **tight loop**: what the writer does for one queued statement item (build, serialize,
  digest the parameters, chain), on items captured from real statements, this thread's CPU.
* **sustained**: records/s a file log takes from statement items put as fast as one thread
  can, group fsync, until all are durable (P5: >= 50,000/s).

Run it under ``flock /work/locks/suite`` on a shared machine; quote ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg

import governed_db
from governed_db.audit import AuditLog

from .run import AGENT, SETUP, _pin, _schedstat_ns, capture_items, database

QUERY = "SELECT id, email, note FROM bench WHERE id = %s"


def _captured(dsn: str, tmp: Path, n: int = 8) -> list[Any]:
    """Statement items as the hot path queues them (real statements, agent identity)."""
    log = AuditLog.open(tmp / "capture.jsonl")
    items: list[Any] = []
    capture_items(log, items)
    with governed_db.connect(dsn, identity=AGENT, audit=log, autocommit=True) as c:
        cur = c.cursor()
        for i in range(1, n + 1):
            cur.execute(QUERY, (i,)).fetchone()
    log.close()
    return [it for it in items if type(it) is tuple]


def _reset(item: Any) -> None:  # noqa: D103 - before and after the v3 writer
    ctx = item[1] if len(item) > 1 else None
    if hasattr(ctx, "_params_digest"):  # the old layout: the context, digested lazily
        ctx._params_digest = None


def tight_loop(items: list[Any], n: int) -> float:
    log = AuditLog.in_memory()  # idle writer thread: this thread does the work
    cpu = time.thread_time_ns
    per = max(1, n // len(items))
    runs = []
    for _ in range(5):
        for it in items:
            _reset(it)
        c0 = cpu()
        for it in items:
            for _ in range(per):
                _reset(it)
                log._record_line(it)
        runs.append((cpu() - c0) / (per * len(items)) / 1000)
        log._pending.clear() if hasattr(log, "_pending") else None
    log.close()
    return statistics.median(runs)


def sustained(items: list[Any], tmp: Path, n: int) -> tuple[float, float, float, float]:
    """(records/s wall, CPU µs per record: putting thread, writer thread, bytes per record)."""
    log = AuditLog.open(tmp / "sustained.jsonl")
    k = len(items)
    wpath = f"/proc/self/task/{log._thread.native_id}/schedstat"
    w0, c0 = _schedstat_ns(wpath), time.thread_time_ns()
    t0 = time.perf_counter()
    for i in range(n):
        it = items[i % k]
        _reset(it)
        log._put(it)
    c1 = time.thread_time_ns()
    log.flush(timeout=300)
    elapsed = time.perf_counter() - t0
    w1 = _schedstat_ns(wpath)
    log.close()
    size = (tmp / "sustained.jsonl").stat().st_size
    return n / elapsed, (c1 - c0) / n / 1000, (w1 - w0) / n / 1000, size / n


def in_situ(dsn: str, tmp: Path, rounds: int, per_round: int) -> dict[str, dict[str, float]]:
    raw = psycopg.connect(dsn, autocommit=True)
    log = AuditLog.open(tmp / "situ.jsonl")
    gov = governed_db.connect(dsn, identity=AGENT, audit=log, autocommit=True)
    _pin([raw, gov], 0, 0)
    tid = log._thread.native_id
    wpath = f"/proc/self/task/{tid}/schedstat"
    ids = iter(range(10**9))
    curs = {"raw": raw.cursor(), "governed": gov.cursor()}
    bpath = {"raw": f"/proc/{raw.info.backend_pid}/schedstat",
             "governed": f"/proc/{gov.info.backend_pid}/schedstat"}
    out: dict[str, dict[str, list[float]]] = {
        k: {"median": [], "client": [], "writer": [], "server": []} for k in curs}
    for name, cur in curs.items():  # warm up
        for _ in range(100):
            cur.execute(QUERY, (next(ids) % 10000 + 1,)).fetchone()
    log.flush(timeout=60)
    order = list(curs)
    clock, cpu = time.perf_counter_ns, time.thread_time_ns
    for r in range(rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            cur = curs[name]
            w0, s0, c0 = _schedstat_ns(wpath), _schedstat_ns(bpath[name]), cpu()
            times = []
            for _ in range(per_round):
                t0 = clock()
                cur.execute(QUERY, (next(ids) % 10000 + 1,)).fetchone()
                times.append(clock() - t0)
            c1 = cpu()
            s1 = _schedstat_ns(bpath[name])
            if name == "governed":
                log.flush(timeout=60)
            w1 = _schedstat_ns(wpath)
            o = out[name]
            o["median"].append(statistics.median(times) / 1000)
            o["client"].append((c1 - c0) / per_round / 1000)
            o["server"].append((s1 - s0) / per_round / 1000)
            o["writer"].append((w1 - w0) / per_round / 1000 if name == "governed" else 0.0)
    raw.close()
    gov.close()
    log.close()
    return {k: {m: statistics.median(v) for m, v in o.items()} for k, o in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    tmp = Path(tempfile.mkdtemp(prefix="governed_db_wbench_"))
    os.environ["GOVERNED_DB_HOME"] = str(tmp / "state")
    with database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(SETUP)
        os.sched_setaffinity(0, {0})
        items = _captured(dsn, tmp)
        loop = tight_loop(items, 20_000 if args.quick else 100_000)
        rate = sustained(items, tmp, 100_000 if args.quick else 300_000)
        situ = in_situ(dsn, tmp, 5 if args.quick else 9, 300 if args.quick else 600)
    g, r = situ["governed"], situ["raw"]
    print(f"writer CPU per statement record, tight loop: {loop:.2f} µs")
    wall, put_us, writer_us, size = rate
    print(f"writer sustained, file log, group fsync: {wall:,.0f} records/s wall"
          f" ({size:,.0f} bytes each); CPU per record: putting thread {put_us:.2f} µs,"
          f" writer thread {writer_us:.2f} µs (= {1e6 / (put_us + writer_us):,.0f} records"
          " per CPU-second)")
    print("in situ point SELECT, same-CPU (median µs; CPU µs client + writer + server):")
    for name, f in (("raw", r), ("governed", g)):
        total = f["client"] + f["writer"] + f["server"]
        print(f"  {name:9s} {f['median']:7.2f}  {f['client']:.2f} + {f['writer']:.2f} +"
              f" {f['server']:.2f} = {total:.2f}")
    print(f"  ratio of medians {g['median'] / r['median']:.3f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
