"""The corpus's lineage statements through every fetch path: no sensitive marker unmasked."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.rows import dict_row

import governed_db

from .conftest import AGENT, MARKERS, corpus_statements, scratch_database

CASES = [c for c in corpus_statements()
         if c["category"] == "lineage" and c["kinds"] == ["SELECT"] and not c["setup"]]


@pytest.fixture(scope="module")
def shared_dsn(server_dsn, template_db):
    """One database for the module: these statements only read."""
    with scratch_database(server_dsn, template_db, prefix="gdb_ro") as d:
        yield d


def _fetchall(c, q, p):
    return c.cursor().execute(q, p).fetchall()


def _fetchone(c, q, p):
    cur = c.cursor().execute(q, p)
    return list(iter(cur.fetchone, None))


def _fetchmany(c, q, p):
    cur = c.cursor().execute(q, p)
    out = []
    while batch := cur.fetchmany(2):
        out += batch
    return out


def _server(c, q, p):
    with c.cursor(name="lin") as cur:
        cur.execute(q, p)
        return cur.fetchall()


def _raw(c, q, p):
    cur = c.cursor().execute(q, p)
    res = cur.pgresult
    return [[res.get_value(i, j) for j in range(res.nfields)] for i in range(res.ntuples)]


PATHS = {
    "fetchall": _fetchall,
    "fetchone": _fetchone,
    "fetchmany": _fetchmany,
    "iterate": lambda c, q, p: list(c.cursor().execute(q, p)),
    "stream": lambda c, q, p: list(c.cursor().stream(q, p)),
    "server_cursor": _server,
    "dict_row": lambda c, q, p: c.cursor(row_factory=dict_row).execute(q, p).fetchall(),
    "client_cursor": lambda c, q, p: governed_db.ClientCursor(c).execute(q, p).fetchall(),
    "pgresult": _raw,
}


@pytest.fixture(scope="module")
def agent(shared_dsn):
    conn = governed_db.connect(shared_dsn, identity=AGENT, audit=False)
    yield conn
    conn.close()


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("case", CASES, ids=[str(c["id"]) for c in CASES])
def test_no_marker_through_path(agent, case, path):
    try:
        rows = PATHS[path](agent, case["sql"], case["params"])
    except governed_db.errors.StatementDenied:
        agent.rollback()
        return
    except psycopg.Error:
        agent.rollback()
        return
    finally:
        if agent.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            agent.rollback()
    text = repr(rows).lower()
    for marker in MARKERS:
        assert marker not in text, f"{marker} leaked via {path}: {rows!r}"


async def test_async_paths_on_lineage_cases(shared_dsn):
    conn = await governed_db.AsyncConnection.connect(shared_dsn, identity=AGENT, audit=False)
    async with conn:
        for case in CASES:
            try:
                cur = await conn.execute(case["sql"], case["params"])
                rows = await cur.fetchall()
                rows += [r async for r in conn.cursor().stream(case["sql"], case["params"])]
            except (governed_db.errors.StatementDenied, psycopg.Error):
                await conn.rollback()
                continue
            await conn.rollback()
            text = repr(rows).lower()
            assert not any(m in text for m in MARKERS), (case["id"], rows)


# NATURAL JOIN "Users" joins on email (masked): a merge join returns rows in its order
ORDER_REFUSED = {248}
# translate(ssn, ...) / replace(ssn, '-', ''): output size follows the hidden content, not
# total (attack G1): refused for an agent, nothing comes back to over-mask
SIZE_REFUSED = {254, 270}
NOT_SENSITIVE = {"orgs.name", "orgs.plan", "orgs.id", "orders.note", "orders.id", "orders.amount",
                 "orders.user_id", "orders.created_at", "products.sku", "products.id",
                 "products.price", "users.id", "users.org_id", "users.created_at", "t.a"}


@pytest.mark.parametrize("case", [c for c in CASES if c["lineage"] and len(c["lineage"]) == 1],
                         ids=lambda c: str(c["id"]))
def test_exact_lineage_is_not_over_masked(agent, shared_dsn, case):
    """Columns whose lineage is exact and non-sensitive come back unchanged."""
    with psycopg.connect(shared_dsn) as raw:
        expected = raw.execute(case["sql"], case["params"]).fetchall()
    if case["id"] in ORDER_REFUSED:
        # refused for an agent (rows would come back in a masked column's order, attack F6):
        # nothing comes back, so nothing is over-masked; the denial itself is asserted
        with pytest.raises(governed_db.errors.StatementDenied) as ei:
            agent.execute(case["sql"], case["params"])
        agent.rollback()
        assert ei.value.rule_ids == ("column.disallow-predicate-on-masked",)
        assert "order rows come back in" in str(ei.value)
        return
    if case["id"] in SIZE_REFUSED:
        with pytest.raises(governed_db.errors.StatementDenied) as ei:
            agent.execute(case["sql"], case["params"])
        agent.rollback()
        assert ei.value.rule_ids == ("column.disallow-predicate-on-masked",)
        assert "users.ssn is an argument of" in str(ei.value), str(ei.value)
        return
    got = agent.execute(case["sql"], case["params"]).fetchall()
    agent.rollback()
    kept = [i for i, (_, sources) in enumerate(case["lineage"][0])
            if sources and set(sources) <= NOT_SENSITIVE]
    for i in kept:
        assert [r[i] for r in got] == [r[i] for r in expected], \
            f"column {case['lineage'][0][i][0]} over-masked"
