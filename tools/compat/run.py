"""Compatibility job: psycopg's own test suite, raw and with ``psycopg`` bound to governed_db.

    make compat PSYCOPG_SRC=/path/to/psycopg-checkout            # every group
    make compat PSYCOPG_SRC=... COMPAT_ARGS="--group cursor"     # one group
    python tools/compat/run.py --psycopg-src DIR [--group G ...] [--only raw|governed] [--compare]

For each group (a few of psycopg's test files; ``--list`` shows them) it runs pytest twice in
psycopg's checkout, raw and governed, one after the other (interleaved, so the wall-time ratio
is measured under the same machine load), with our plugin ``governed_db_compat`` recording every
test's outcome. The governed run is a *service* identity under the default profile in
``mode = "observe"`` (so the suite's own DDL runs) with audit on, i.e. every statement analyzed,
decided, masked and recorded.

It then compares per test and exits non-zero when a test that passes raw does not pass governed,
unless ``allowlist.toml`` lists it (only tests that reach into psycopg's private ``_`` modules
may be listed, each with its reason). Each such difference is first run again, governed, alone,
``--reruns`` times (default 3): a difference is a regression when any of those runs fails; one
that passes every time did not reproduce (a timing bound or a random schema of psycopg's faker
met once under load) and is listed as such with its psycopg markers, without failing the job.
``--reruns 0`` counts every difference of the group run. ``--compare`` compares the results
already in ``--out`` without running anything; ``--only raw`` / ``--only governed`` runs one
side (the other side's earlier results are reused by the comparison).

The psycopg tests need a server: ``PSYCOPG_TEST_DSN`` when set, else a throwaway cluster started
like the project's test harness (``governed_db._pgcluster``). Keep runs short on a shared machine:
one group at a time; pytest runs with ``-p no:cacheprovider`` (nothing written into the checkout).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# Short groups: each runs in well under a few minutes on a loaded 2-core machine.
GROUPS: dict[str, list[str]] = {
    "connection": ["test_connection.py", "test_connection_async.py", "test_connection_info.py"],
    "cursor": ["test_cursor.py", "test_cursor_async.py", "test_cursor_common.py",
               "test_cursor_common_async.py"],
    "cursor-client": ["test_cursor_client.py", "test_cursor_client_async.py",
                      "test_cursor_raw.py", "test_cursor_raw_async.py"],
    "cursor-server": ["test_cursor_server.py", "test_cursor_server_async.py"],
    "copy": ["test_copy.py", "test_copy_async.py"],
    "pipeline": ["test_pipeline.py", "test_pipeline_async.py"],
    "transaction": ["test_transaction.py", "test_transaction_async.py"],
    "rows": ["test_rows.py"],
    "prepared": ["test_prepared.py", "test_prepared_async.py"],
    "errors": ["test_errors.py"],
    "sql": ["test_sql.py"],
    "adapt": ["test_adapt.py"],
    "typeinfo": ["test_typeinfo.py"],
    "types-a": ["types/test_array.py", "types/test_bool.py", "types/test_composite.py",
                "types/test_datetime.py", "types/test_enum.py", "types/test_hstore.py"],
    "types-b": ["types/test_json.py", "types/test_multirange.py", "types/test_net.py",
                "types/test_none.py", "types/test_numeric.py"],
    "types-c": ["types/test_range.py", "types/test_string.py", "types/test_uuid.py"],
    "pool": ["pool/test_module.py", "pool/test_pool.py", "pool/test_pool_async.py",
             "pool/test_pool_common.py", "pool/test_pool_common_async.py",
             "pool/test_pool_null.py", "pool/test_pool_null_async.py",
             "pool/test_sched.py", "pool/test_sched_async.py"],
    "dbapi": ["test_psycopg_dbapi20.py", "test_tpc.py", "test_tpc_async.py", "test_xid.py"],
    "notify": ["test_notify.py", "test_notify_async.py", "test_concurrency.py",
               "test_concurrency_async.py"],
    "module": ["test_module.py", "test_column.py", "test_query.py", "test_encodings.py",
               "test_capabilities.py", "test_conninfo.py", "test_conninfo_attempts.py",
               "test_conninfo_attempts_async.py", "test_dns.py", "test_dns_srv.py",
               "test_generators.py", "test_waiting.py", "test_waiting_async.py"],
}

PASSING = ("passed", "xpassed")
# More differences than this are not rerun one by one: they share a cause to fix.
MAX_RERUNS = 50

# What the governed run is: a service identity, the default profile in observe mode.
POLICY = """\
version = 1
name = "psycopg-compat"
# extends the built-in default profile; observe: run everything, record what would be denied
mode = "observe"
"""


def _load_allowlist(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    data = tomllib.loads(path.read_text())
    allowed: dict[str, str] = {}
    for entry in data.get("test", []):
        nodeid, reason = entry.get("id"), entry.get("reason", "").strip()
        if not nodeid or not reason:
            raise SystemExit(f"{path}: every [[test]] needs an id and a reason ({entry!r})")
        allowed[nodeid] = reason
    return allowed


def _allowed(nodeid: str, allowlist: dict[str, str]) -> str | None:
    # An entry names a test function (its parametrized instances share the reason) or a
    # test module (every test in it: a module that imports a private name at its top).
    # An entry with ``*`` matches node ids as a pattern (``*``: any text, nothing else special).
    if nodeid in allowlist:
        return allowlist[nodeid]
    base = nodeid.split("[", 1)[0]
    found = allowlist.get(base) or allowlist.get(base.split("::", 1)[0])
    if found is None:
        for pattern, reason in allowlist.items():
            if "*" in pattern and re.fullmatch(
                    ".*".join(map(re.escape, pattern.split("*"))), nodeid):
                return reason
    return found


@contextlib.contextmanager
def _server(dsn: str | None):
    if dsn:
        yield dsn
        return
    sys.path.insert(0, str(ROOT))
    from governed_db._pgcluster import Cluster

    with Cluster() as cluster:
        yield cluster.dsn


def _governed_home(out: Path) -> Path:
    """A state directory for the governed runs, its signing key made up front (the key's
    creation warning would otherwise be an error under psycopg's ``filterwarnings = error``)."""
    home = out / "home"
    home.mkdir(parents=True, exist_ok=True)
    (out / "policy.toml").write_text(POLICY)
    code = ("import warnings, governed_db\n"
            "from governed_db._config import resolve_auditor, resolve_policy\n"
            "with warnings.catch_warnings():\n"
            "    warnings.simplefilter('ignore')\n"
            "    resolve_auditor(None, resolve_policy(None)).close()\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(out, "governed", None))
    return home


def _env(out: Path, mode: str, dsn: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVERNED_DB_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    # The virtualenv's scripts first: psycopg's typing tests run `mypy` as a command.
    env["PATH"] = os.pathsep.join(filter(None, [str(Path(sys.executable).parent),
                                                env.get("PATH")]))
    env["GOVERNED_DB_COMPAT_MODE"] = mode
    if dsn is not None:
        env["PSYCOPG_TEST_DSN"] = dsn
    if mode == "governed":
        env["GOVERNED_DB_HOME"] = str(out / "home")
        env["GOVERNED_DB_POLICY"] = str(out / "policy.toml")
        env["GOVERNED_DB_IDENTITY"] = "service:psycopg-compat"
    return env


def _run_side(src: Path, out: Path, group: str, mode: str, dsn: str,
              extra: list[str]) -> dict[str, Any]:
    result = out / f"{group}.{mode}.json"
    log = out / f"{group}.{mode}.log"
    files = [f"tests/{f}" for f in GROUPS[group]]
    # (--continue-on-collection-errors: a module that cannot be imported governed fails its
    # own tests, not the whole group's run)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           "-p", "no:asyncio", "-p", "governed_db_compat", "-o", "addopts=", "-rN",
           "--no-header", "--continue-on-collection-errors", *extra, *files]
    env = _env(out, mode, dsn)
    env["GOVERNED_DB_COMPAT_OUT"] = str(result)
    result.unlink(missing_ok=True)
    start = time.monotonic()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, cwd=src, env=env, stdout=fh, stderr=subprocess.STDOUT)
    wall = time.monotonic() - start
    if not result.exists():
        tail = log.read_text()[-3000:]
        raise SystemExit(f"{group} ({mode}): pytest wrote no results (exit {proc.returncode});"
                         f" see {log}:\n{tail}")
    data = json.loads(result.read_text())
    data["wall"] = wall
    result.write_text(json.dumps(data, indent=0, sort_keys=True))
    return data


def _rerun(src: Path, out: Path, nodeids: list[str], dsn: str, extra: list[str],
           times: int) -> dict[str, list[str]]:
    """Run ``nodeids`` again, governed and alone (a pytest process of their own), ``times``
    times; each test's outcomes, in order, are kept in ``rerun.json`` for ``--compare``."""
    outcomes: dict[str, list[str]] = {n: [] for n in nodeids}
    result = out / "rerun.governed.json"
    log = out / "rerun.governed.log"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           "-p", "no:asyncio", "-p", "governed_db_compat", "-o", "addopts=", "-rN",
           "--no-header", *extra, *nodeids]
    env = _env(out, "governed", dsn)
    env["GOVERNED_DB_COMPAT_OUT"] = str(result)
    with log.open("w") as fh:
        for i in range(times):
            result.unlink(missing_ok=True)
            fh.write(f"--- rerun {i + 1} of {times}\n")
            fh.flush()
            subprocess.run(cmd, cwd=src, env=env, stdout=fh, stderr=subprocess.STDOUT)
            got = json.loads(result.read_text())["outcomes"] if result.exists() else {}
            for nodeid in nodeids:
                outcomes[nodeid].append(got.get(nodeid, "not run"))
    (out / "rerun.json").write_text(json.dumps(outcomes, indent=0, sort_keys=True))
    return outcomes


def _differences(out: Path, groups: list[str], allowlist: dict[str, str]) -> list[str]:
    """Node ids passing raw and not governed, allow-list aside (results already in ``out``)."""
    found = []
    for group in groups:
        try:
            raw = json.loads((out / f"{group}.raw.json").read_text())["outcomes"]
            gov = json.loads((out / f"{group}.governed.json").read_text())["outcomes"]
        except FileNotFoundError:
            continue
        # (a test that did not run governed, its module not importable, is not rerun)
        found += [n for n, o in sorted(raw.items()) if o in PASSING
                  and gov.get(n) in ("failed", "error") and _allowed(n, allowlist) is None]
    return found


def _counts(outcomes: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def compare(out: Path, groups: list[str], allowlist: dict[str, str]) -> int:
    rows = []
    regressions: list[tuple[str, str, str]] = []
    unstable: list[tuple[str, str, str, list[str], list[str]]] = []
    try:
        reruns: dict[str, list[str]] = json.loads((out / "rerun.json").read_text())
    except FileNotFoundError:
        reruns = {}
    allowed_hits: list[tuple[str, str]] = []
    wall_raw = wall_gov = 0.0
    for group in groups:
        try:
            raw = json.loads((out / f"{group}.raw.json").read_text())
            gov = json.loads((out / f"{group}.governed.json").read_text())
        except FileNotFoundError as exc:
            print(f"{group}: no results yet ({exc.filename}); run it first", file=sys.stderr)
            return 2
        r, g = raw["outcomes"], gov["outcomes"]
        markers = raw.get("markers", {})
        for nodeid, outcome in sorted(r.items()):
            if outcome not in PASSING:
                continue
            got = g.get(nodeid, "not run")
            if got in PASSING:
                continue
            reason = _allowed(nodeid, allowlist)
            again = reruns.get(nodeid, [])
            if reason is None and again and all(o in PASSING for o in again):
                unstable.append((group, nodeid, got, again, markers.get(nodeid, [])))
            elif reason is None:
                regressions.append((group, nodeid, got))
            else:
                allowed_hits.append((nodeid, reason))
        rc, gc = _counts(r), _counts(g)
        wall_raw += raw["wall"]
        wall_gov += gov["wall"]
        rows.append((group, rc.get("passed", 0), rc.get("failed", 0) + rc.get("error", 0),
                     gc.get("passed", 0), gc.get("failed", 0) + gc.get("error", 0)
                     + gc.get("collection-error", 0),
                     gc.get("skipped", 0) - rc.get("skipped", 0),
                     raw["wall"], gov["wall"]))
    print(f"{'group':<14} {'raw pass':>8} {'raw fail':>8} {'gov pass':>8} {'gov fail':>8}"
          f" {'+skip':>5} {'raw s':>7} {'gov s':>7} {'ratio':>6}")
    totals = [0, 0, 0, 0, 0]
    for group, rp, rf, gp, gf, sk, wr, wg in rows:
        totals = [a + b for a, b in zip(totals, (rp, rf, gp, gf, sk), strict=True)]
        print(f"{group:<14} {rp:>8} {rf:>8} {gp:>8} {gf:>8} {sk:>5} {wr:>7.1f} {wg:>7.1f}"
              f" {wg / wr if wr else 0:>5.2f}x")
    rp, rf, gp, gf, sk = totals
    print(f"{'total':<14} {rp:>8} {rf:>8} {gp:>8} {gf:>8} {sk:>5} {wall_raw:>7.1f}"
          f" {wall_gov:>7.1f} {wall_gov / wall_raw if wall_raw else 0:>5.2f}x")
    if allowed_hits:
        print(f"\nallow-listed ({len(allowed_hits)}, tests reaching psycopg's private modules):")
        for nodeid, reason in allowed_hits:
            print(f"  {nodeid}: {reason}")
    if unstable:
        print(f"\n{len(unstable)} difference(s) did not reproduce (governed, alone, every rerun"
              " passed):")
        for group, nodeid, got, again, marks in unstable:
            print(f"  [{group}] {nodeid}: {got} in the group run, then {'/'.join(again)}"
                  + (f" (psycopg marks it {', '.join(marks)})" if marks else ""))
    if regressions:
        print(f"\n{len(regressions)} test(s) pass raw but not governed:")
        for group, nodeid, got in regressions:
            again = reruns.get(nodeid)
            print(f"  [{group}] {nodeid}: {got}"
                  + (f" (alone: {'/'.join(again)})" if again else ""))
        return 1
    print("\nevery test that passes raw passes governed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--psycopg-src", type=Path, default=os.environ.get("PSYCOPG_SRC"),
                        help="a psycopg source checkout (its tests/ directory is run)")
    parser.add_argument("--group", action="append", choices=sorted(GROUPS),
                        help="run only this group (repeatable); default: all")
    parser.add_argument("--only", choices=("raw", "governed"), help="run only one side")
    parser.add_argument("--compare", action="store_true",
                        help="compare results already in --out; run nothing")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "compat",
                        help="results directory (default: build/compat)")
    parser.add_argument("--reruns", type=int, default=3, metavar="N",
                        help="run each test passing raw and failing governed N more times,"
                             " governed and alone; it counts only if one of them fails"
                             " (default 3; 0: every difference counts)")
    parser.add_argument("--list", action="store_true", help="list the groups and exit")
    parser.add_argument("pytest_args", nargs="*",
                        help="extra pytest arguments after --, e.g. -- -k name -x")
    args = parser.parse_args(argv)
    groups = args.group or list(GROUPS)
    if args.list:
        for name, files in GROUPS.items():
            print(f"{name:<14} {' '.join(files)}")
        return 0
    allowlist = _load_allowlist(HERE / "allowlist.toml")
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.compare:
        if args.psycopg_src is None or not (Path(args.psycopg_src) / "tests" / "conftest.py").exists():
            parser.error("--psycopg-src (or PSYCOPG_SRC) must be a psycopg source checkout"
                         " holding tests/conftest.py, e.g. the 3.3.4 tag")
        src = Path(args.psycopg_src).resolve()
        sides = [args.only] if args.only else ["raw", "governed"]
        with _server(os.environ.get("PSYCOPG_TEST_DSN")) as dsn:
            if "governed" in sides:
                _governed_home(out)
            for i, group in enumerate(groups):
                # Alternate which side goes first, so load drifts do not favour one side.
                order = sides if i % 2 == 0 else sides[::-1]
                for mode in order:
                    data = _run_side(src, out, group, mode, dsn, args.pytest_args)
                    c = _counts(data["outcomes"])
                    print(f"{group} {mode}: {c} in {data['wall']:.1f}s", flush=True)
            (out / "rerun.json").unlink(missing_ok=True)
            differing = _differences(out, groups, allowlist)
            if len(differing) > MAX_RERUNS:
                print(f"{len(differing)} tests pass raw and fail governed: not run again (more"
                      f" than {MAX_RERUNS}, a cause common to them)", flush=True)
            elif differing and args.reruns > 0:
                print(f"running {len(differing)} difference(s) again, governed and alone,"
                      f" {args.reruns} times", flush=True)
                _rerun(src, out, differing, dsn, args.pytest_args, args.reruns)
    return compare(out, groups, allowlist)


if __name__ == "__main__":
    sys.exit(main())
