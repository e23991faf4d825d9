"""governed_db benchmarks: governed vs raw psycopg, measured in one process, interleaved rounds.

    python -m benchmarks.run            # same-CPU and split-CPU, prints a table, writes JSON
    python -m benchmarks.run --quick    # fewer rounds (a smoke run, e.g. in CI)

Method (../shared/design/performance.md): every ratio compares variants measured in the same
run, in interleaved rounds whose order alternates (A B C, C B A, ...); each round yields a
median per variant and the reported figure is the median of those medians. The client process
and its server backends are pinned to one CPU ("same-CPU", the worst case for the ratio) and
then to different CPUs ("split-CPU"). A throwaway PostgreSQL is started unless
GOVERNED_DB_TEST_DSN points at a server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import governed_db
from governed_db import Identity, telemetry
from governed_db._pgcluster import Cluster
from governed_db.analysis import AnalysisCache
from governed_db.audit import AuditLog
from governed_db.policy import parse_policy

SERVICE = Identity("bench-svc", "service", purpose="benchmark")
AGENT = Identity("bench-agent", "ai_agent", purpose="benchmark", model="bench-llm")

SETUP = """
DROP TABLE IF EXISTS bench, bench_ins;
CREATE TABLE bench (id int PRIMARY KEY, email text, ssn text, note text, amount numeric);
INSERT INTO bench SELECT g, 'user' || g || '@example.com', '123-45-' || lpad(g::text, 4, '0'),
       'note ' || g, g * 1.5 FROM generate_series(1, 10000) g;
CREATE TABLE bench_ins (id bigserial PRIMARY KEY, note text, amount numeric);
ANALYZE bench;
"""

AGENT_QUERY = """
SELECT o.id,
       o.note,
       o.amount,
       sum(o.amount) OVER (PARTITION BY o.id % 10) AS bucket_total,
       CASE WHEN o.amount > 100 THEN 'big'
            WHEN o.amount > 10 THEN 'medium'
            ELSE 'small' END AS size
  FROM bench AS o
  JOIN (SELECT id, count(*) AS n
          FROM bench
         WHERE note LIKE 'note 1%'
         GROUP BY id) AS c ON c.id = o.id
 WHERE o.amount BETWEEN 10 AND 5000
   AND o.id NOT IN (SELECT id FROM bench WHERE amount < 2)
   AND o.note IS NOT NULL
 ORDER BY o.amount DESC, o.id
 LIMIT 50 OFFSET {n}
"""


class _NullExporter(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


# -- pinning ----------------------------------------------------------------------------------


def _pin(conns: list[Any], client_cpu: int, server_cpu: int) -> bool:
    """Pin this process to ``client_cpu`` and each connection's backend to ``server_cpu``."""
    try:
        os.sched_setaffinity(0, {client_cpu})
        for c in conns:
            pid = c.info.backend_pid
            os.sched_setaffinity(pid, {server_cpu})
        return True
    except (OSError, AttributeError):
        return False


# -- measuring ----------------------------------------------------------------------------------


def _schedstat_ns(path: str) -> int:
    """Nanoseconds a task has spent on a CPU (first field of /proc/.../schedstat)."""
    try:
        with open(path) as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


class Variant:
    """One thing to measure: a call, and whose CPU it spends.

    ``conns``: the connections it uses (their server backends' CPU is read from
    ``/proc/<pid>/schedstat``); ``audit``: its own audit log, whose writer thread's CPU is read
    from ``/proc/self/task/<tid>/schedstat`` after a flush (a writer that works in bursts
    shows up here, not in the median).
    """

    def __init__(self, fn: Callable[[], Any], conns: list[Any] = (), audit: Any = None) -> None:
        self.fn = fn
        self.backends = [f"/proc/{c.info.backend_pid}/schedstat" for c in conns]
        self.audit = audit

    def writer_path(self) -> str | None:
        thread = getattr(self.audit, "_thread", None)
        tid = getattr(thread, "native_id", None)
        return f"/proc/self/task/{tid}/schedstat" if tid else None

    def server_ns(self) -> int:
        return sum(_schedstat_ns(p) for p in self.backends)

    def writer_ns(self) -> int:
        path = self.writer_path()
        return _schedstat_ns(path) if path else 0


class _RecordingQueue:
    """A log's queue, keeping a copy of every item put on it (what the writer is given)."""

    def __init__(self, queue: Any, into: list[Any]) -> None:
        self._queue, self._into = queue, into

    def put(self, item: Any) -> None:
        self._into.append(item)
        self._queue.put(item)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


def capture_items(log: Any, into: list[Any]) -> None:
    """Keep a copy of every item ``log``'s writer is given (statement tuples and events)."""
    log._queue = _RecordingQueue(log._queue, into)


def writer_record(log: Any, item: Any) -> bytes:
    """What the audit writer does for one queued statement: splice the record (parameter
    digests included, computed from the values each time), serialize it canonically and chain
    it."""
    return log._record_line(item)[1]


def interleaved(variants: dict[str, Callable[[], Any] | Variant], *, rounds: int,
                per_round: int, warmup: int = 50) -> dict[str, dict[str, float]]:
    """Per variant: median (over rounds) of per-round median µs per call, and CPU µs per call
    split into client thread, audit writer thread and server backend(s) (medians over rounds).
    Rounds run in alternating order (A B C, C B A, ...)."""
    vs = {n: v if isinstance(v, Variant) else Variant(v) for n, v in variants.items()}
    names = list(vs)
    for v in vs.values():
        for _ in range(warmup):
            v.fn()
        if v.audit is not None:
            v.audit.flush(timeout=60)
    per: dict[str, dict[str, list[float]]] = {
        n: {"median": [], "client": [], "writer": [], "server": []} for n in names}
    clock = time.perf_counter_ns
    cpu = time.thread_time_ns
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            v = vs[n]
            fn = v.fn
            samples = []
            w0, s0, c0 = v.writer_ns(), v.server_ns(), cpu()
            for _ in range(per_round):
                t0 = clock()
                fn()
                samples.append(clock() - t0)
            c1, s1 = cpu(), v.server_ns()
            if v.audit is not None:
                v.audit.flush(timeout=60)  # the writer's share of this round, all of it
            w1 = v.writer_ns()
            p = per[n]
            p["median"].append(statistics.median(samples) / 1000)
            p["client"].append((c1 - c0) / per_round / 1000)
            p["server"].append((s1 - s0) / per_round / 1000)
            p["writer"].append((w1 - w0) / per_round / 1000)
    out: dict[str, dict[str, float]] = {}
    for n, p in per.items():
        f = {k: statistics.median(v) for k, v in p.items()}
        f["total"] = f["client"] + f["writer"] + f["server"]
        out[n] = f
    return out


class Bench:
    def __init__(self, dsn: str, quick: bool) -> None:
        self.dsn = dsn
        self.quick = quick
        self.rounds = 5 if quick else 11
        self.tmp = Path(tempfile.mkdtemp(prefix="governed_db_bench_"))
        os.environ["GOVERNED_DB_HOME"] = str(self.tmp / "state")
        self.audit = AuditLog.open(self.tmp / "audit.jsonl")
        self.logs: list[Any] = [self.audit]
        self.results: list[dict[str, Any]] = []

    def log(self, name: str, **settings: Any) -> Any:
        """A separate audit log (file, group fsync) per variant: its writer's CPU is its own."""
        log = AuditLog.open(self.tmp / f"{name}.jsonl", settings=settings or None)
        self.logs.append(log)
        return log

    def add(self, name: str, figures: dict[str, dict[str, float]], base: str, target: str = "",
            unit: str = "µs", with_base: bool = True) -> None:
        b = figures[base]
        for variant, f in figures.items():
            is_base = variant == base
            if is_base and not with_base:
                continue
            self.results.append({
                "case": name, "variant": variant, "median": round(f["median"], 2), "unit": unit,
                "ratio": 1.0 if is_base else round(f["median"] / b["median"], 3),
                "target": "" if is_base else target,
                "cpu": {k: round(f[k], 2) for k in ("client", "writer", "server", "total")},
                "cpu_ratio": 1.0 if is_base else round(f["total"] / b["total"], 3)})

    def connect(self, identity: Identity, audit: Any, **kw: Any) -> Any:
        return governed_db.connect(self.dsn, identity=identity, audit=audit, autocommit=True,
                                   **kw)

    # -- cases ----------------------------------------------------------------------------------

    def statements(self, pin: tuple[int, int]) -> bool:
        raw = psycopg.connect(self.dsn, autocommit=True)
        logs = {"empty": self.log("p1-empty"), "agent": self.log("p1-agent"),
                "svc": self.log("p1-svc")}
        empty_off = self.connect(SERVICE, False, policy=parse_policy(""))
        empty = self.connect(SERVICE, logs["empty"], policy=parse_policy(""))
        agent = self.connect(AGENT, logs["agent"])
        gov = self.connect(SERVICE, logs["svc"])
        conns = [raw, empty_off, empty, agent, gov]
        pinned = _pin(conns, *pin)
        n = 200 if self.quick else 400
        ids = iter(range(10**9))

        def point(c: Any, log: Any = None) -> Variant:
            cur = c.cursor()
            q = "SELECT id, email, note FROM bench WHERE id = %s"
            return Variant(lambda: cur.execute(q, (next(ids) % 10000 + 1,)).fetchone(), [c], log)

        self.add("P1 point SELECT by PK", interleaved(
            {"raw psycopg": point(raw),
             "governed (empty policy, audit off)": point(empty_off),
             "governed (empty policy, audit on)": point(empty, logs["empty"]),
             "governed (agent, default profile)": point(agent, logs["agent"])},
            rounds=self.rounds, per_round=n), "raw psycopg", "≤ 1.10× (P1)")

        def one(c: Any, log: Any = None) -> Variant:
            cur = c.cursor()
            return Variant(lambda: cur.execute("SELECT 1").fetchone(), [c], log)

        self.add("SELECT 1", interleaved({"raw psycopg": one(raw),
                                          "governed (agent)": one(agent, logs["agent"])},
                                         rounds=self.rounds, per_round=n), "raw psycopg")

        def insert(c: Any, log: Any = None) -> Variant:
            cur = c.cursor()
            return Variant(lambda: cur.execute(
                "INSERT INTO bench_ins (note, amount) VALUES (%s, %s)", ("x", 1)), [c], log)

        self.add("single-row INSERT (autocommit)", interleaved(
            {"raw psycopg": insert(raw), "governed (service)": insert(gov, logs["svc"])},
            rounds=self.rounds, per_round=n // 4, warmup=10), "raw psycopg")

        rows = [(f"n{i}", i) for i in range(1000)]

        def many(c: Any, log: Any = None) -> Variant:
            cur = c.cursor()
            return Variant(lambda: cur.executemany(
                "INSERT INTO bench_ins (note, amount) VALUES (%s, %s)", rows), [c], log)

        self.add("executemany 1,000 rows", interleaved(
            {"raw psycopg": many(raw), "governed (service)": many(gov, logs["svc"])},
            rounds=self.rounds, per_round=3, warmup=1), "raw psycopg")

        def fetch(c: Any, cols: str, log: Any = None) -> Variant:
            cur = c.cursor()
            return Variant(lambda: cur.execute(f"SELECT {cols} FROM bench").fetchall(), [c], log)

        self.add("P3 fetch 10,000 rows, unmasked", interleaved(
            {"raw psycopg": fetch(raw, "id, note, amount"),
             # (a service: nothing to mask or scan, the governance cost alone; an agent's
             # default profile scans the free text in `note` for PII)
             "governed (service)": fetch(gov, "id, note, amount", logs["svc"]),
             "governed (agent)": fetch(agent, "id, note, amount", logs["agent"])},
            rounds=self.rounds, per_round=5, warmup=2), "raw psycopg", "≤ 1.03× (P3)")
        self.add("P3 fetch 10,000 rows, 2 masked columns", interleaved(
            {"raw psycopg": fetch(raw, "id, email, ssn"),
             "governed (agent)": fetch(agent, "id, email, ssn", logs["agent"])},
            rounds=self.rounds, per_round=5, warmup=2), "raw psycopg", "≤ 1.15× (P3)")
        for c in conns:
            c.close()
        return pinned

    def strict(self, pin: tuple[int, int]) -> None:
        batched_log = self.log("durability-batched")
        strict_log = self.log("durability-strict", durability="strict")
        raw = psycopg.connect(self.dsn, autocommit=True)
        batched = self.connect(AGENT, batched_log)
        strict = self.connect(AGENT, strict_log)
        _pin([raw, batched, strict], *pin)

        def point(c: Any, log: Any = None) -> Variant:
            cur = c.cursor()
            return Variant(lambda: cur.execute("SELECT id, note FROM bench WHERE id = %s",
                                               (7,)).fetchone(), [c], log)

        self.add("point SELECT, audit durability", interleaved(
            {"raw psycopg": point(raw), "governed, batched audit": point(batched, batched_log),
             "governed, strict audit (fsync + sign each)": point(strict, strict_log)},
            rounds=self.rounds, per_round=50, warmup=10), "raw psycopg")
        for c in (raw, batched, strict):
            c.close()

    def otel(self, pin: tuple[int, int]) -> None:
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

        tp = TracerProvider()
        tp.add_span_processor(SimpleSpanProcessor(_NullExporter()))
        raw = psycopg.connect(self.dsn, autocommit=True)
        peer = psycopg.connect(self.dsn, autocommit=True)
        peer = PsycopgInstrumentor().instrument_connection(peer, tracer_provider=tp)
        log = self.log("otel-agent")
        agent = self.connect(AGENT, log)
        _pin([raw, peer, agent], *pin)
        ids = iter(range(10**9))

        def point(c: Any, log: Any = None) -> Variant:
            cur = c.cursor()
            q = "SELECT id, email, note FROM bench WHERE id = %s"
            return Variant(lambda: cur.execute(q, (next(ids) % 10000 + 1,)).fetchone(), [c], log)

        telemetry.use_providers(tp)
        try:
            figures = interleaved({"raw psycopg": point(raw),
                                   "opentelemetry-instrumentation-psycopg": point(peer),
                                   "governed + SDK span": point(agent, log)},
                                  rounds=self.rounds, per_round=200 if self.quick else 400)
        finally:
            telemetry.use_providers()
        case = "P2 point SELECT with an OTel SDK span"
        self.add(case, figures, "raw psycopg")
        self.add(case, {"opentelemetry-instrumentation-psycopg":
                        figures["opentelemetry-instrumentation-psycopg"],
                        "governed + span vs OTel peer": figures["governed + SDK span"]},
                 "opentelemetry-instrumentation-psycopg", "≤ 1.0× (P2)", with_base=False)
        for c in (raw, peer, agent):
            c.close()

    def writer_cpu(self) -> None:
        """Audit writer CPU per statement record: the writer's own work (build, serialize,
        chain) on real statement records in a tight loop, this thread's CPU time."""
        captured: list[Any] = []
        log = AuditLog.in_memory()
        self.logs.append(log)
        capture_items(log, captured)
        with self.connect(AGENT, log) as c:
            cur = c.cursor()
            for i in range(1, 5):
                cur.execute("SELECT id, email, note FROM bench WHERE id = %s", (i,)).fetchone()
        items = [it for it in captured if type(it) is tuple]
        if not items:
            return
        log = AuditLog.in_memory()  # idle writer thread: this thread does the work
        self.logs.append(log)
        n = 20_000 if self.quick else 100_000
        per_item = max(1, n // len(items))
        cpu = time.thread_time_ns
        runs = []
        for _ in range(5):
            c0 = cpu()
            for it in items:
                for _ in range(per_item):
                    writer_record(log, it)
            runs.append((cpu() - c0) / (per_item * len(items)) / 1000)
        self.results.append({"case": "audit writer CPU per statement record (tight loop)",
                             "variant": "build + serialize + chain", "unit": "µs",
                             "median": round(statistics.median(runs), 2), "ratio": None,
                             "target": "≤ 4 µs"})

    def analysis(self) -> None:
        cache = AnalysisCache()
        n = 300 if self.quick else 2000
        texts = [AGENT_QUERY.format(n=i) + f" -- q{i}" for i in range(n)]
        # Warm the parser's own code paths with other texts, then time unseen ones.
        for t in texts[:20]:
            cache.get(t + " ")
        clock = time.perf_counter_ns
        cold = []
        for t in texts:
            t0 = clock()
            cache.get(t)
            cold.append((clock() - t0) / 1000)
        import pgparse

        parse_only = []
        for t in texts:
            t2 = t + "  "
            t0 = clock()
            pgparse.parse(t2)
            parse_only.append((clock() - t0) / 1000)
        hit_text = texts[0]
        hits = []
        for _ in range(5):
            t0 = clock()
            for _ in range(10000):
                cache.get(hit_text)
            hits.append((clock() - t0) / 1000 / 10000)
        self.results.append({"case": "analysis, unseen 20-line agent query (cold)",
                             "variant": "libpg_query parse alone (pgparse.parse)",
                             "median": round(statistics.median(parse_only), 2), "unit": "µs",
                             "ratio": 1.0, "target": ""})
        self.results.append({"case": "analysis, unseen 20-line agent query (cold)",
                             "variant": "parse + facts (normalize, fingerprint: off the path)",
                             "median": round(statistics.median(cold), 2), "unit": "µs",
                             "ratio": round(statistics.median(cold) /
                                            statistics.median(parse_only), 2),
                             "target": "≤ 60 µs (P4)"})
        self.results.append({"case": "analysis, cache hit", "variant": "LRU lookup",
                             "median": round(statistics.median(hits), 3), "unit": "µs",
                             "ratio": None, "target": "≤ 1 µs (P4)"})
        # Memory under 100k distinct (literal-inlined) queries: bounded by the cache limits.
        distinct = 20_000 if self.quick else 100_000
        tracemalloc.start()
        big = AnalysisCache()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(distinct):
            big.get(f"SELECT id, note FROM bench WHERE id = {i} AND note = 'n{i}'")
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        self.results.append({"case": f"analysis cache after {distinct:,} distinct queries",
                             "variant": f"{len(big):,} entries kept",
                             "median": round(used / 2**20, 1), "unit": "MiB",
                             "ratio": None, "target": "bounded"})

    def writer(self) -> None:
        """P5: records/s one thread queues and the writer makes durable (group fsync, chain,
        checkpoints): statement records as real statements queue them, and events."""
        captured: list[Any] = []
        log = AuditLog.open(self.tmp / "capture.jsonl")
        capture_items(log, captured)
        with self.connect(AGENT, log) as c:
            cur = c.cursor()
            for i in range(1, 9):
                cur.execute("SELECT id, email, note FROM bench WHERE id = %s", (i,)).fetchone()
        log.close()
        items = [it for it in captured if type(it) is tuple]
        n = 50_000 if self.quick else 200_000
        for name in ("statement records", "events"):
            log = AuditLog.open(self.tmp / f"throughput-{name[0]}.jsonl")
            t0 = time.perf_counter()
            if name == "events":
                for i in range(n):
                    log.event("bench", SERVICE, {"dbname": "bench"}, i=i)
            else:
                k = len(items)
                for i in range(n):
                    log._put(items[i % k])
            log.flush(timeout=120)
            elapsed = time.perf_counter() - t0
            log.close()
            self.results.append({"case": "audit writer, group fsync + chain + checkpoints",
                                 "variant": f"{n:,} {name}", "median": round(n / elapsed),
                                 "unit": "records/s", "ratio": None,
                                 "target": "≥ 50,000 (P5)"})


def _cpu(r: dict[str, Any]) -> str:
    c = r.get("cpu")
    if not c:
        return ""
    ratio = "" if r.get("cpu_ratio") in (None, 1.0) else f" ({r['cpu_ratio']:.2f}×)"
    return (f"{c['client']:,} + {c['writer']:,} + {c['server']:,} = {c['total']:,}{ratio}")


def _table(results: list[dict[str, Any]], title: str) -> str:
    lines = [f"### {title}", "", "| case | variant | median | ratio | CPU µs: client + writer"
             " + server = total | target |", "|---|---|---|---|---|---|"]
    for r in results:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}×"
        lines.append(f"| {r['case']} | {r['variant']} | {r['median']:,} {r['unit']} | {ratio} |"
                     f" {_cpu(r)} | {r['target']} |")
    return "\n".join(lines)


def readme_table(out: dict[str, Any]) -> str:
    """The README's performance section: same-CPU and split-CPU side by side, each a median
    (ratio) and the CPU time per statement split into client, audit writer and server."""
    runs = out["runs"]
    same = runs.get("same-CPU", {}).get("results", [])
    split = {(r["case"], r["variant"]): r for r in runs.get("split-CPU", {}).get("results", [])}

    def cell(r: dict[str, Any] | None) -> str:
        if r is None:
            return ""
        ratio = "" if r["ratio"] is None else f" ({r['ratio']:.2f}×)"
        return f"{r['median']:,} {r['unit']}{ratio}"

    def cpu(r: dict[str, Any] | None) -> str:
        return _cpu(r) if r else ""

    lines = ["| case | variant | same-CPU median | same-CPU CPU µs (client + writer + server)"
             " | split-CPU median | split-CPU CPU µs | target |",
             "|---|---|---|---|---|---|---|"]
    for r in same:
        o = split.get((r["case"], r["variant"]))
        lines.append(f"| {r['case']} | {r['variant']} | {cell(r)} | {cpu(r)} | {cell(o)} |"
                     f" {cpu(o)} | {r['target']} |")
    lines.append("")
    load = out.get("load", {})
    lines.append(f"Python {out['python']}, psycopg {out['psycopg']}, PostgreSQL server"
                 f" {out.get('server')}, {out['cpus']} CPUs; {out['seconds']} s; load average"
                 f" {load.get('before', '?')} before, {load.get('after', '?')} after"
                 f" ({out.get('note', '')}).")
    return "\n".join(lines)


def update_readme(out: dict[str, Any], path: Path) -> None:
    text = path.read_text()
    start, end = "<!-- bench:start -->\n", "\n<!-- bench:end -->"
    if start not in text or end not in text:
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(head + start + readme_table(out) + end + tail)


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


@contextlib.contextmanager
def database() -> Iterator[str]:
    """The server to measure: ``GOVERNED_DB_TEST_DSN``, or a throwaway cluster for the run.
    The process's CPU affinity is restored afterwards (the runs pin it)."""
    try:
        with contextlib.ExitStack() as stack:
            yield os.environ.get("GOVERNED_DB_TEST_DSN") or stack.enter_context(Cluster()).dsn
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


def cpu_layouts() -> list[tuple[str, tuple[int, int]]]:
    """(label, (client CPU, backend CPU)): same-CPU, and split-CPU when there are two."""
    cpus = sorted(os.sched_getaffinity(0))
    layouts = [("same-CPU", (cpus[0], cpus[0]))]
    if len(cpus) > 1:
        layouts.append(("split-CPU", (cpus[0], cpus[1])))
    return layouts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (smoke run)")
    ap.add_argument("--json", default="benchmarks/results.json", help="where to write JSON")
    ap.add_argument("--note", default="", help="what else ran on the machine (for the record)")
    ap.add_argument("--readme", action="store_true",
                    help="write the table into README.md's performance section")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    started = time.time()
    out: dict[str, Any] = {"python": sys.version.split()[0], "psycopg": psycopg.__version__,
                           "cpus": os.cpu_count(), "runs": {}, "note": args.note,
                           "load": {"before": _load()}}
    with database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(SETUP)
            out["server"] = c.info.server_version
        for label, pin in cpu_layouts():
            bench = Bench(dsn, args.quick)
            pinned = bench.statements(pin)
            bench.otel(pin)
            bench.strict(pin)
            if label == "same-CPU":
                bench.writer_cpu()
                bench.analysis()
                bench.writer()
            for log in bench.logs:
                log.close()
            title = f"{label} (client CPU {pin[0]}, backends CPU {pin[1]})" + \
                ("" if pinned else " — pinning refused, placement left to the kernel")
            print(_table(bench.results, title), "\n", flush=True)
            out["runs"][label] = {"pinned": pinned, "results": bench.results}
    out["seconds"] = round(time.time() - started, 1)
    out["load"]["after"] = _load()
    Path(args.json).write_text(json.dumps(out, indent=1, ensure_ascii=False))
    if args.readme:
        update_readme(out, Path("README.md"))
    print(f"({out['seconds']} s; JSON in {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
