"""A psycopg server cursor is read as the identity fetching it (attack2 G8).

Declared by a service the policy shows a column unmasked, fetched under ``acting_as(agent)``:
the agent's rows are judged as a FETCH from the cursor's name by the agent's policy (masked)
and recorded as the agent's. Raw values come from a separate superuser connection.
"""

from __future__ import annotations

import psycopg
import pytest

import governed_db
from governed_db import Identity, acting_as
from governed_db.policy import parse_policy

from .conftest import AGENT

SVC = Identity("svc", "service")
UNMASK_SVC = parse_policy('[[masking.unmask]]\ncolumns = ["users.ssn"]\n'
                          'identity_ids = ["svc"]\nstrategy = "none"\n')
MODES = ["sync", "async"]
QUERY = "SELECT id, ssn FROM users ORDER BY id"


async def _call(mode, result):
    return result if mode == "sync" else await result


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", ["fetchone", "fetchmany", "fetchall", "scroll_fetch"])
async def test_server_cursor_fetched_by_another_identity(dsn, audit, mode, how):
    with psycopg.connect(dsn) as raw:
        raw.execute("INSERT INTO users (id, email, ssn, name) SELECT i, 'e' || i, 'qsn-' || i,"
                    " 'n' || i FROM generate_series(1, 6) AS i")
        truth = raw.execute(QUERY).fetchall()
    secrets = {ssn for _, ssn in truth}
    if mode == "sync":
        conn = governed_db.connect(dsn, identity=SVC, audit=audit, policy=UNMASK_SVC)
    else:
        conn = await governed_db.AsyncConnection.connect(dsn, identity=SVC, audit=audit,
                                                         policy=UNMASK_SVC)
    try:
        cur = conn.cursor(name="n2")
        await _call(mode, cur.execute(QUERY))
        assert await _call(mode, cur.fetchone()) == truth[0]  # the service sees it unmasked
        audit.flush()
        before = len(audit.records)
        with acting_as(AGENT):
            if how == "fetchone":
                rows = [await _call(mode, cur.fetchone())]
            elif how == "fetchmany":
                rows = await _call(mode, cur.fetchmany(2))
            elif how == "scroll_fetch":
                await _call(mode, cur.scroll(1))
                rows = await _call(mode, cur.fetchmany(1))
            else:
                rows = await _call(mode, cur.fetchall())
        assert rows and all(r[0] in {t[0] for t in truth} for r in rows), rows
        assert not {r[1] for r in rows} & secrets, rows  # masked for the agent
        audit.flush()
        fetched = [r for r in audit.records[before:] if r["type"] == "statement"
                   and r["identity"]["id"] == AGENT.id]
        assert fetched and "FETCH" in str(fetched[0]), fetched  # recorded as the agent's
        if how != "fetchall":
            rows = await _call(mode, cur.fetchall())  # the service again: unmasked
            assert rows and {r[1] for r in rows} <= secrets, rows
        await _call(mode, cur.close())
        await _call(mode, conn.rollback())
    finally:
        await _call(mode, conn.close())
