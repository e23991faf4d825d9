"""Names resolve through the session's search_path as the server resolves them.

A statement that changes search_path (observe mode lets a denied SET run; a SQL function's
set_config; dynamic SQL in PL/pgSQL) must not leave governance resolving names through the
old path. Shadow: a view `<current_user>.users` of constants is first on the connect-time
path; after the switch the server reads `public.users`, whose `org_id` the policy masks.
Enforced, the visible switches are refused; the dynamic one runs and the next read is masked."""

from __future__ import annotations

import psycopg
import pytest

import governed_db
from governed_db import Identity
from governed_db.policy import parse_policy

SERVICE = Identity("billing", "service")
MASKS = '[[masking.columns]]\ncolumns = ["public.users.org_id"]\nstrategy = "redact"\n'
POLICIES = {"observe": parse_policy('version = 1\nmode = "observe"\n' + MASKS),
            "enforce": parse_policy('version = 1\n' + MASKS)}


@pytest.fixture
def shadowed(dsn):
    with psycopg.connect(dsn, autocommit=True) as raw:
        user = raw.execute("SELECT current_user").fetchone()[0]
        raw.execute(f'CREATE SCHEMA "{user}"')
        raw.execute(f'CREATE VIEW "{user}".users AS SELECT 1 AS id, 4242 AS org_id')
        raw.execute("CREATE FUNCTION public.go_public() RETURNS int LANGUAGE sql"
                    " AS $$ SELECT pg_catalog.length(pg_catalog.set_config('search_path', 'public', false)) * 0 $$")
        raw.execute("CREATE FUNCTION public.go_dynamic() RETURNS int LANGUAGE plpgsql AS $$"
                    " BEGIN EXECUTE pg_catalog.format('SET search_path = %I', 'public');"
                    " RETURN 0; END $$")
        truth = raw.execute("SELECT org_id FROM public.users ORDER BY id LIMIT 1").fetchone()[0]
    assert truth is not None
    return dsn, truth


SWITCHES = {
    "SET": "SET search_path = public",
    "set_config": "SELECT pg_catalog.set_config('search_path', 'public', false)",
    "function": "SELECT public.go_public()",
    "dynamic": "SELECT public.go_dynamic()",
}


@pytest.mark.parametrize("is_async", [False, True])
@pytest.mark.parametrize("how", list(SWITCHES))
@pytest.mark.parametrize("mode", list(POLICIES))
async def test_names_resolve_through_the_new_search_path(shadowed, how, is_async, mode):
    dsn, truth = shadowed
    q = "SELECT org_id FROM users ORDER BY id LIMIT 1"
    kw = {"identity": SERVICE, "policy": POLICIES[mode], "audit": False, "autocommit": True}
    if mode == "enforce" and how != "dynamic":
        # Enforced, the SET itself is refused (a protected setting): nothing to follow.
        with governed_db.connect(dsn, **kw) as conn:
            with pytest.raises(governed_db.errors.StatementDenied) as ei:
                conn.execute(SWITCHES[how])
            assert ei.value.rule_ids == ("session.disallow-security-settings",)
            assert conn.execute("SHOW search_path").fetchone()[0] != "public"
        return
    if is_async:
        async with await governed_db.AsyncConnection.connect(dsn, **kw) as conn:
            assert await (await conn.execute(q)).fetchone() == (4242,)  # the shadow view
            await conn.execute(SWITCHES[how])
            path = (await (await conn.execute("SHOW search_path")).fetchone())[0]
            got = (await (await conn.execute(q)).fetchone())[0]
    else:
        with governed_db.connect(dsn, **kw) as conn:
            assert conn.execute(q).fetchone() == (4242,)
            conn.execute(SWITCHES[how])
            path = conn.execute("SHOW search_path").fetchone()[0]
            got = conn.execute(q).fetchone()[0]
    assert path == "public"  # the switch really happened at the server
    assert got is None, f"public.users.org_id came back raw through the old path: {got!r}"
