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
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable
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


def interleaved(variants: dict[str, Callable[[], Any]], *, rounds: int, per_round: int,
                warmup: int = 50) -> dict[str, float]:
    """Median (over rounds) of per-round median µs per call, rounds in alternating order."""
    names = list(variants)
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    per: dict[str, list[float]] = {n: [] for n in names}
    clock = time.perf_counter_ns
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            fn = variants[n]
            samples = []
            for _ in range(per_round):
                t0 = clock()
                fn()
                samples.append(clock() - t0)
            per[n].append(statistics.median(samples) / 1000)
    return {n: statistics.median(v) for n, v in per.items()}


class Bench:
    def __init__(self, dsn: str, quick: bool) -> None:
        self.dsn = dsn
        self.quick = quick
        self.rounds = 5 if quick else 11
        self.tmp = Path(tempfile.mkdtemp(prefix="governed_db_bench_"))
        os.environ["GOVERNED_DB_HOME"] = str(self.tmp / "state")
        self.audit = AuditLog.open(self.tmp / "audit.jsonl")
        self.results: list[dict[str, Any]] = []

    def add(self, name: str, figures: dict[str, float], base: str, target: str = "",
            unit: str = "µs") -> None:
        for variant, value in figures.items():
            ratio = value / figures[base] if variant != base else 1.0
            self.results.append({"case": name, "variant": variant, "median": round(value, 2),
                                 "unit": unit, "ratio": round(ratio, 3),
                                 "target": target if variant != base else ""})

    def connections(self) -> tuple[Any, Any, Any]:
        raw = psycopg.connect(self.dsn, autocommit=True)
        gov = governed_db.connect(self.dsn, identity=SERVICE, audit=self.audit, autocommit=True)
        agent = governed_db.connect(self.dsn, identity=AGENT, audit=self.audit, autocommit=True)
        return raw, gov, agent

    # -- cases ----------------------------------------------------------------------------------

    def statements(self, pin: tuple[int, int]) -> bool:
        raw, gov, agent = self.connections()
        pinned = _pin([raw, gov, agent], *pin)
        n = 200 if self.quick else 400
        ids = iter(range(10**9))

        def point(c: Any) -> Callable[[], Any]:
            cur = c.cursor()
            q = "SELECT id, email, note FROM bench WHERE id = %s"
            return lambda: cur.execute(q, (next(ids) % 10000 + 1,)).fetchone()

        empty = governed_db.connect(self.dsn, identity=SERVICE, policy=parse_policy(""),
                                    audit=self.audit, autocommit=True)
        _pin([empty], *pin)
        self.add("point SELECT by PK", interleaved(
            {"raw psycopg": point(raw), "governed (empty policy, audit on)": point(empty),
             "governed (agent, default profile)": point(agent)},
            rounds=self.rounds, per_round=n), "raw psycopg", "≤ 1.10× (P1)")
        empty.close()

        def one(c: Any) -> Callable[[], Any]:
            cur = c.cursor()
            return lambda: cur.execute("SELECT 1").fetchone()

        self.add("SELECT 1", interleaved({"raw psycopg": one(raw), "governed (agent)": one(agent)},
                                         rounds=self.rounds, per_round=n), "raw psycopg")

        def insert(c: Any) -> Callable[[], Any]:
            cur = c.cursor()
            return lambda: cur.execute("INSERT INTO bench_ins (note, amount) VALUES (%s, %s)",
                                       ("x", 1))

        self.add("single-row INSERT (autocommit)", interleaved(
            {"raw psycopg": insert(raw), "governed (service)": insert(gov)},
            rounds=self.rounds, per_round=n // 4, warmup=10), "raw psycopg")

        rows = [(f"n{i}", i) for i in range(1000)]

        def many(c: Any) -> Callable[[], Any]:
            cur = c.cursor()
            return lambda: cur.executemany(
                "INSERT INTO bench_ins (note, amount) VALUES (%s, %s)", rows)

        self.add("executemany 1,000 rows", interleaved(
            {"raw psycopg": many(raw), "governed (service)": many(gov)},
            rounds=self.rounds, per_round=3, warmup=1), "raw psycopg")

        def fetch(c: Any, cols: str) -> Callable[[], Any]:
            cur = c.cursor()
            return lambda: cur.execute(f"SELECT {cols} FROM bench").fetchall()

        self.add("fetch 10,000 rows, unmasked", interleaved(
            {"raw psycopg": fetch(raw, "id, note, amount"),
             "governed (agent)": fetch(agent, "id, note, amount")},
            rounds=self.rounds, per_round=5, warmup=2), "raw psycopg", "≤ 1.03× (P3)")
        self.add("fetch 10,000 rows, 2 masked columns", interleaved(
            {"raw psycopg": fetch(raw, "id, email, ssn"),
             "governed (agent)": fetch(agent, "id, email, ssn")},
            rounds=self.rounds, per_round=5, warmup=2), "raw psycopg", "≤ 1.15× (P3)")
        for c in (raw, gov, agent):
            c.close()
        return pinned

    def strict(self, pin: tuple[int, int]) -> None:
        strict_log = AuditLog.open(self.tmp / "strict.jsonl", settings={"durability": "strict"})
        raw = psycopg.connect(self.dsn, autocommit=True)
        batched = governed_db.connect(self.dsn, identity=AGENT, audit=self.audit, autocommit=True)
        strict = governed_db.connect(self.dsn, identity=AGENT, audit=strict_log, autocommit=True)
        _pin([raw, batched, strict], *pin)

        def point(c: Any) -> Callable[[], Any]:
            cur = c.cursor()
            return lambda: cur.execute("SELECT id, note FROM bench WHERE id = %s", (7,)).fetchone()

        self.add("point SELECT, audit durability", interleaved(
            {"raw psycopg": point(raw), "governed, batched audit": point(batched),
             "governed, strict audit (fsync + sign each)": point(strict)},
            rounds=self.rounds, per_round=50, warmup=10), "raw psycopg")
        for c in (raw, batched, strict):
            c.close()
        strict_log.close()

    def otel(self, pin: tuple[int, int]) -> None:
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

        tp = TracerProvider()
        tp.add_span_processor(SimpleSpanProcessor(_NullExporter()))
        raw = psycopg.connect(self.dsn, autocommit=True)
        peer = psycopg.connect(self.dsn, autocommit=True)
        peer = PsycopgInstrumentor().instrument_connection(peer, tracer_provider=tp)
        agent = governed_db.connect(self.dsn, identity=AGENT, audit=self.audit, autocommit=True)
        _pin([raw, peer, agent], *pin)
        ids = iter(range(10**9))

        def point(c: Any) -> Callable[[], Any]:
            cur = c.cursor()
            q = "SELECT id, email, note FROM bench WHERE id = %s"
            return lambda: cur.execute(q, (next(ids) % 10000 + 1,)).fetchone()

        telemetry.use_providers(tp)
        try:
            figures = interleaved({"raw psycopg": point(raw),
                                   "opentelemetry-instrumentation-psycopg": point(peer),
                                   "governed + SDK span": point(agent)},
                                  rounds=self.rounds, per_round=200 if self.quick else 400)
        finally:
            telemetry.use_providers()
        peer_v = figures["opentelemetry-instrumentation-psycopg"]
        self.add("point SELECT with an OTel SDK span", figures, "raw psycopg")
        self.results.append({"case": "point SELECT with an OTel SDK span",
                             "variant": "governed + span vs OTel peer",
                             "median": figures["governed + SDK span"], "unit": "µs",
                             "ratio": round(figures["governed + SDK span"] / peer_v, 3),
                             "target": "≤ 1.0× (P2)"})
        for c in (raw, peer, agent):
            c.close()

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
        log = AuditLog.open(self.tmp / "throughput.jsonl")
        who = SERVICE
        n = 50_000 if self.quick else 200_000
        t0 = time.perf_counter()
        for i in range(n):
            log.event("bench", who, {"dbname": "bench"}, i=i)
        log.flush(timeout=120)
        elapsed = time.perf_counter() - t0
        log.close()
        self.results.append({"case": "audit writer, group fsync + chain + checkpoints",
                             "variant": f"{n:,} records", "median": round(n / elapsed),
                             "unit": "records/s", "ratio": None, "target": "≥ 50,000 (P5)"})


def _table(results: list[dict[str, Any]], title: str) -> str:
    lines = [f"### {title}", "", "| case | variant | median | ratio | target |",
             "|---|---|---|---|---|"]
    for r in results:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}×"
        lines.append(f"| {r['case']} | {r['variant']} | {r['median']:,} {r['unit']} | {ratio} |"
                     f" {r['target']} |")
    return "\n".join(lines)


def readme_table(out: dict[str, Any]) -> str:
    """One table, same-CPU and split-CPU side by side (the README's performance section)."""
    runs = out["runs"]
    same = runs.get("same-CPU", {}).get("results", [])
    split = {(r["case"], r["variant"]): r for r in runs.get("split-CPU", {}).get("results", [])}

    def cell(r: dict[str, Any] | None) -> str:
        if r is None:
            return ""
        ratio = "" if r["ratio"] is None else f" ({r['ratio']:.2f}×)"
        return f"{r['median']:,} {r['unit']}{ratio}"

    lines = ["| case | variant | same-CPU | split-CPU | target |", "|---|---|---|---|---|"]
    for r in same:
        lines.append(f"| {r['case']} | {r['variant']} | {cell(r)} |"
                     f" {cell(split.get((r['case'], r['variant'])))} | {r['target']} |")
    lines.append("")
    lines.append(f"Python {out['python']}, psycopg {out['psycopg']}, PostgreSQL server"
                 f" {out.get('server')}, {out['cpus']} CPUs; {out['seconds']} s.")
    return "\n".join(lines)


def update_readme(out: dict[str, Any], path: Path) -> None:
    text = path.read_text()
    start, end = "<!-- bench:start -->\n", "\n<!-- bench:end -->"
    if start not in text or end not in text:
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(head + start + readme_table(out) + end + tail)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (smoke run)")
    ap.add_argument("--json", default="benchmarks/results.json", help="where to write JSON")
    ap.add_argument("--readme", action="store_true",
                    help="write the table into README.md's performance section")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    dsn = os.environ.get("GOVERNED_DB_TEST_DSN")
    cluster = None
    if not dsn:
        cluster = Cluster()
        cluster.start()
        dsn = cluster.dsn
    started = time.time()
    out: dict[str, Any] = {"python": sys.version.split()[0], "psycopg": psycopg.__version__,
                           "cpus": os.cpu_count(), "runs": {}}
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(SETUP)
            out["server"] = c.info.server_version
        cpus = sorted(os.sched_getaffinity(0))
        layouts = [("same-CPU", (cpus[0], cpus[0]))]
        if len(cpus) > 1:
            layouts.append(("split-CPU", (cpus[0], cpus[1])))
        for label, pin in layouts:
            bench = Bench(dsn, args.quick)
            pinned = bench.statements(pin)
            bench.otel(pin)
            bench.strict(pin)
            if label == "same-CPU":
                bench.analysis()
                bench.writer()
            bench.audit.close()
            title = f"{label} (client CPU {pin[0]}, backends CPU {pin[1]})" + \
                ("" if pinned else " — pinning refused, placement left to the kernel")
            print(_table(bench.results, title), "\n", flush=True)
            out["runs"][label] = {"pinned": pinned, "results": bench.results}
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        if cluster is not None:
            cluster.stop()
    out["seconds"] = round(time.time() - started, 1)
    Path(args.json).write_text(json.dumps(out, indent=1, ensure_ascii=False))
    if args.readme:
        update_readme(out, Path("README.md"))
    print(f"({out['seconds']} s; JSON in {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
