"""The row-level security hand-off (docs/row-level-security.md): what it costs per statement.

    python -m benchmarks.rls_handoff           # same-CPU pinning, prints a table and JSON
    python -m benchmarks.rls_handoff --quick   # fewer rounds

Variants, measured in one process in interleaved rounds (see benchmarks/run.py), autocommit,
point SELECT by primary key, audit off (the audit trail's cost is P1's, not the hand-off's):

* raw psycopg;
* raw psycopg + one ``SELECT set_config(..., true)`` round trip per statement: the floor of
  transaction-local settings per statement (what the hand-off does not do);
* governed, the same identity statement after statement (P1's path: the settings were set
  once, nothing per statement);
* governed, the identity switched every statement (``acting_as`` alternating: one sync each);
* raw and governed ``SELECT bench_fn(id)`` (a SQL function: not built in, so the identity
  settings are read back after it — one query).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import psycopg

import governed_db
from governed_db import Identity, acting_as
from governed_db.engine import IDENTITY_SETTINGS
from governed_db._pgcluster import Cluster

from .run import SETUP, _pin, interleaved

A = Identity("bench-a", "service", tenant="acme", roles=("reader",))
B = Identity("bench-b", "service", tenant="globex", roles=("reader",))
POINT = "SELECT id, note, amount FROM bench WHERE id = %s"
FN = "SELECT bench_fn(%s)"
TX_LOCAL = ("SELECT " + ", ".join(f"set_config('{n}', %s, true)" for n in IDENTITY_SETTINGS))


def run(dsn: str, quick: bool) -> dict[str, Any]:
    os.environ["GOVERNED_DB_HOME"] = tempfile.mkdtemp(prefix="governed_db_bench_rls_")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(SETUP)
        c.execute("CREATE OR REPLACE FUNCTION bench_fn(i int) RETURNS int LANGUAGE sql"
                  " IMMUTABLE AS 'SELECT i + 1'")
    raw = psycopg.connect(dsn, autocommit=True)
    same = governed_db.connect(dsn, identity=A, audit=False, autocommit=True)
    switching = governed_db.connect(dsn, identity=A, audit=False, autocommit=True)
    pinned = _pin([raw, same, switching], 0, 0)
    values = ["bench-a", "service", '["reader"]', "acme", "false", "", ""]
    n = [0]

    def key() -> int:
        n[0] = n[0] % 9000 + 1
        return n[0]

    def raw_point() -> None:
        raw.execute(POINT, (key(),)).fetchall()

    def raw_tx_local() -> None:
        raw.execute(TX_LOCAL, values)
        raw.execute(POINT, (key(),)).fetchall()

    def gov_same() -> None:
        same.execute(POINT, (key(),)).fetchall()

    flip = [A, B]

    def gov_switch() -> None:
        flip.reverse()
        with acting_as(flip[0]):
            switching.execute(POINT, (key(),)).fetchall()

    def raw_fn() -> None:
        raw.execute(FN, (key(),)).fetchall()

    def gov_fn() -> None:
        same.execute(FN, (key(),)).fetchall()

    rounds = 5 if quick else 11
    per_round = 300 if quick else 1000
    figures = interleaved({
        "raw": raw_point, "raw + set_config(local) round trip": raw_tx_local,
        "governed, same identity": gov_same, "governed, identity switched": gov_switch,
        "raw SELECT bench_fn()": raw_fn, "governed SELECT bench_fn() (read back)": gov_fn,
    }, rounds=rounds, per_round=per_round)
    for c in (raw, same, switching):
        c.close()
    base, fn_base = figures["raw"]["median"], figures["raw SELECT bench_fn()"]["median"]
    out = {"pinned_same_cpu": pinned, "rounds": rounds, "per_round": per_round, "variants": {}}
    for name, f in figures.items():
        ref = fn_base if "bench_fn" in name else base
        out["variants"][name] = {"median_us": round(f["median"], 1),
                                 "vs_raw": round(f["median"] / ref, 3),
                                 "client_cpu_us": round(f["client"], 1),
                                 "server_cpu_us": round(f["server"], 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    dsn = os.environ.get("GOVERNED_DB_TEST_DSN")
    if dsn:
        out = run(dsn, args.quick)
    else:
        with Cluster() as cluster:
            out = run(cluster.dsn, args.quick)
    print(f"{'variant':45} {'µs':>8} {'ratio':>7} {'client':>7} {'server':>7}")
    for name, f in out["variants"].items():
        print(f"{name:45} {f['median_us']:8.1f} {f['vs_raw']:7.3f} {f['client_cpu_us']:7.1f}"
              f" {f['server_cpu_us']:7.1f}")
    Path("benchmarks/rls_handoff.json").write_text(json.dumps(out, indent=1))
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
