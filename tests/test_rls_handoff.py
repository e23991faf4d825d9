"""Row-level security hand-off (issue 16, item 5): the library puts the acting identity into
``governed_db.identity.*`` settings that PostgreSQL policies read; the caller's SQL cannot
change them (denied by parse tree and by function effect, and read back after statements
that may run unseen code). The docs/row-level-security.md example, run as written: two
verified agents of two tenants, RLS set up by a raw superuser for a non-superuser role."""

from __future__ import annotations

import asyncio
import json
import re

import psycopg
import pytest

import governed_db
from governed_db import Identity, acting_as, errors
from governed_db.policy import parse_policy

from .fix_tokens import AUD, ISS, issuer  # noqa: F401

ROLE = "gdb_rls_app"
SETUP = f"""
DO $$BEGIN CREATE ROLE {ROLE} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$;
CREATE TABLE tenant_orders (id int PRIMARY KEY, tenant text NOT NULL, item text NOT NULL);
INSERT INTO tenant_orders VALUES (1, 'acme', 'anvil'), (2, 'acme', 'rocket'),
                          (3, 'globex', 'laser');
ALTER TABLE tenant_orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_orders
  USING (tenant = nullif(current_setting('governed_db.identity.tenant', true), '')
         AND current_setting('governed_db.identity.verified', true) = 'true');
GRANT SELECT ON tenant_orders TO {ROLE};
"""
NAMES = ("id", "kind", "roles", "tenant", "verified", "issuer", "subject")
OBSERVE = parse_policy('version = 1\nmode = "observe"\n')
READ_BACK = "SELECT " + ", ".join(
    f"current_setting('governed_db.identity.{n}', true)" for n in NAMES)


@pytest.fixture
def rls(dsn, tmp_path, issuer):
    """(app DSN as the non-superuser role, policy with [identity.oidc], agent A, agent B)."""
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute(SETUP)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks))
    policy = parse_policy(f"""
[identity.oidc]
issuer = "{ISS}"
audience = "{AUD}"
jwks = "{jwks}"
kind = "ai_agent"
tenant_claim = "tenant"
roles_claim = "roles"
""", source=str(tmp_path / "policy.toml"))
    app_dsn = re.sub(r"user=\S+", "", dsn) + f" user={ROLE}"
    a = Identity.from_token(issuer.mint(sub="bot-a", tenant="acme", roles=["reader", "x,y"],
                                        jti="ja"), policy=policy)
    b = Identity.from_token(issuer.mint(sub="bot-b", tenant="globex", jti="jb"),
                            policy=policy)
    return app_dsn, policy, a, b


def _items(conn) -> list[str]:
    return [r[0] for r in conn.execute("SELECT item FROM tenant_orders ORDER BY id").fetchall()]


# -- the documented example ----------------------------------------------------------------------

@pytest.mark.parametrize("autocommit", [True, False])
def test_each_agent_sees_only_its_tenants_rows(rls, autocommit):
    app_dsn, policy, a, b = rls
    with governed_db.connect(app_dsn, identity=a, policy=policy, audit=False,
                             autocommit=autocommit) as ca, \
            governed_db.connect(app_dsn, identity=b, policy=policy, audit=False,
                                autocommit=autocommit) as cb:
        assert _items(ca) == ["anvil", "rocket"]
        assert _items(cb) == ["laser"]
        # the same connection, identity switched per block (one pooled connection, two agents)
        with acting_as(b):
            assert _items(ca) == ["laser"]
        assert _items(ca) == ["anvil", "rocket"]
        # an unverified identity claiming the tenant, and one without a tenant: no rows
        with acting_as(Identity("bot-a", "ai_agent", tenant="acme")):
            assert _items(ca) == []
        with acting_as(a.evolve(tenant=None)):
            assert _items(ca) == []
        assert _items(ca) == ["anvil", "rocket"]


def test_settings_hold_exact_values(rls):
    app_dsn, policy, a, _ = rls
    with governed_db.connect(app_dsn, identity=a, policy=policy, audit=False) as conn:
        assert conn.execute(READ_BACK).fetchone() == (
            "bot-a", "ai_agent", '["reader", "x,y"]', "acme", "true", ISS, "bot-a")
        with acting_as(Identity("ops", "service", roles=("dba",))):
            assert conn.execute(READ_BACK).fetchone() == (
                "ops", "service", '["dba"]', "", "false", "", "")


def test_switch_inside_a_transaction_and_after_rollback(rls):
    app_dsn, policy, a, b = rls
    with governed_db.connect(app_dsn, identity=a, policy=policy, audit=False) as conn:
        assert _items(conn) == ["anvil", "rocket"]  # transaction open (autocommit off)
        with acting_as(b):
            assert _items(conn) == ["laser"]  # switched mid-transaction
        conn.rollback()  # the switch made in it is undone at the server: synced again
        with acting_as(b):
            assert _items(conn) == ["laser"]
        conn.commit()
        assert _items(conn) == ["anvil", "rocket"]


def test_pool_hands_each_borrower_its_identity(rls):
    psycopg_pool = pytest.importorskip("psycopg_pool")
    app_dsn, policy, a, b = rls
    with psycopg_pool.ConnectionPool(app_dsn, connection_class=governed_db.Connection,
                                     kwargs={"policy": policy, "audit": False,
                                             "autocommit": True},
                                     min_size=1, max_size=1, open=True) as pool:
        for ident, want in ((a, ["anvil", "rocket"]), (b, ["laser"]), (a, ["anvil", "rocket"])):
            with pool.connection() as conn, acting_as(ident):
                assert _items(conn) == want


async def test_async_tasks_each_see_their_tenant(rls):
    app_dsn, policy, a, b = rls
    conn = await governed_db.AsyncConnection.connect(app_dsn, policy=policy, audit=False,
                                                      autocommit=True, identity=a)
    try:
        async def items(ident):
            with acting_as(ident):
                cur = await conn.execute("SELECT item FROM tenant_orders ORDER BY id")
                return [r[0] for r in await cur.fetchall()]

        results = [await items(x) for x in (a, b, a)]
        assert results == [["anvil", "rocket"], ["laser"], ["anvil", "rocket"]]
        assert await asyncio.gather(items(b)) == [["laser"]]
    finally:
        await conn.close()


def test_pipeline_mode(rls):
    app_dsn, policy, a, b = rls
    with governed_db.connect(app_dsn, identity=a, policy=policy, audit=False,
                             autocommit=True) as conn:
        with conn.pipeline():
            c1 = conn.execute("SELECT item FROM tenant_orders ORDER BY id")
            with acting_as(b):
                c2 = conn.execute("SELECT item FROM tenant_orders ORDER BY id")
        assert [r[0] for r in c1.fetchall()] == ["anvil", "rocket"]
        assert [r[0] for r in c2.fetchall()] == ["laser"]


# -- the caller cannot change them -----------------------------------------------------------------

CHANGES = [
    "SET governed_db.identity.tenant = 'globex'",
    "SET LOCAL governed_db.identity.tenant TO 'globex'",
    "SET SESSION \"GOVERNED_DB.IDENTITY.TENANT\" = 'globex'",
    "SET governed_db.identity.verified = 'true'",
    "RESET governed_db.identity.tenant",
    "SELECT set_config('governed_db.identity.tenant', 'globex', false)",
    "SELECT set_config('Governed_DB.Identity.Tenant', 'globex', true)",
    "SELECT item FROM tenant_orders WHERE set_config('governed_db.identity.tenant', 'globex', true)"
    " IS NOT NULL",
    "SELECT (SELECT length(set_config('governed_db.identity.id', 'root', false)))",
    "SELECT * FROM tenant_orders, LATERAL (SELECT set_config('governed_db.identity.roles',"
    " '[\"dba\"]', false)) s",
    "SELECT set_config('governed_db.identity', 'human:root', false)",
    "SELECT set_config(lower('GOVERNED_DB.identity.tenant'), 'globex', false)",
    "SELECT set_config(x, 'globex', false) FROM (VALUES ('governed_db.identity.tenant')) v(x)",
    "SELECT pg_catalog.set_config('governed_db.identity.tenant'::text, 'globex', false)",
    "SELECT set_config(E'governed_db.identity.tenant', 'globex', false)",
    "SELECT set_config(U&'governed_db.identity.tenan\\0074', 'globex', false)",
    "SELECT set_config('governed_db.' || 'identity.tenant', 'globex', false)",
    "SELECT * FROM set_config('governed_db.identity.tenant', 'globex', false)",
    "WITH x AS (SELECT set_config('governed_db.identity.tenant', 'globex', false))"
    " SELECT * FROM x",
    "SELECT ARRAY[set_config('governed_db.identity.tenant', 'globex', false)]",
    "PREPARE p AS SELECT set_config('governed_db.identity.tenant', 'globex', false)",
    "DECLARE c CURSOR FOR SELECT set_config('governed_db.identity.tenant', 'globex', false)",
    "COPY (SELECT set_config('governed_db.identity.tenant', 'globex', false)) TO STDOUT",
    "EXPLAIN ANALYZE SELECT set_config('governed_db.identity.tenant', 'globex', false)",
    "RESET ALL",
    "DISCARD ALL",
]


@pytest.mark.parametrize("kind", ["ai_agent", "service", "human"])
@pytest.mark.parametrize("sql", CHANGES)
def test_direct_and_nested_changes_denied_for_every_identity(rls, sql, kind):
    app_dsn, policy, a, _ = rls
    ident = a if kind == "ai_agent" else Identity("ops", kind, tenant="acme")
    with governed_db.connect(app_dsn, identity=ident, policy=policy, audit=False,
                             autocommit=True) as conn:
        before = conn.execute(READ_BACK).fetchone()
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute(sql)
        assert "session.disallow-security-settings" in ei.value.rule_ids \
            or "function.allowlist" in ei.value.rule_ids, ei.value.rule_ids
        assert conn.execute(READ_BACK).fetchone() == before
        if kind == "ai_agent":
            assert _items(conn) == ["anvil", "rocket"]


def test_policy_cannot_allow_them(rls, tmp_path):
    app_dsn, _, _, _ = rls
    policy = parse_policy("""
[[rules]]
id = "session.disallow-security-settings"
allow = ["governed_db.*", "governed_db.identity.tenant"]
""")
    with governed_db.connect(app_dsn, identity=Identity("ops", "service"), policy=policy,
                             audit=False, autocommit=True) as conn:
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute("SET governed_db.identity.tenant = 'globex'")
        assert ei.value.rule_ids == ("session.disallow-security-settings",)


@pytest.fixture
def functions(dsn):
    """Functions and a trigger a DBA (the raw superuser) made; the app role may run them."""
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute(f"""
CREATE FUNCTION switch_sql() RETURNS text LANGUAGE sql AS
  $$ SELECT set_config('governed_db.identity.tenant', 'globex', false) $$;
CREATE FUNCTION switch_plpgsql() RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN PERFORM set_config('governed_db.identity.tenant', 'globex', false);
     RETURN 'x'; END $$;
CREATE FUNCTION switch_dynamic() RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN EXECUTE 'SELECT set_config(' || quote_literal('governed_db.identity.' || 'tenant')
     || ', ''globex'', false)'; RETURN 'x'; END $$;
CREATE TABLE notes (id serial PRIMARY KEY, body text);
CREATE FUNCTION notes_switch() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN EXECUTE 'SELECT set_config(''governed_db.identity.' || 'tenant'', ''globex'', false)';
     RETURN NEW; END $$;
CREATE TRIGGER notes_switch BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION notes_switch();
CREATE VIEW switching_view AS SELECT switch_dynamic() AS x;
CREATE FUNCTION globex_items() RETURNS text LANGUAGE sql
  SET governed_db.identity.tenant = 'globex' SET search_path = public
  AS $$ SELECT string_agg(item, ',') FROM tenant_orders $$;
CREATE FUNCTION safe_items() RETURNS text LANGUAGE sql SET search_path = public
  AS $$ SELECT string_agg(item, ',' ORDER BY id) FROM tenant_orders $$;
GRANT EXECUTE ON FUNCTION globex_items(), safe_items() TO {ROLE};
GRANT EXECUTE ON FUNCTION switch_sql(), switch_plpgsql(), switch_dynamic() TO {ROLE};
GRANT SELECT, INSERT ON notes TO {ROLE};
GRANT USAGE ON SEQUENCE notes_id_seq TO {ROLE};
GRANT SELECT ON switching_view TO {ROLE};
""")


@pytest.mark.parametrize("sql", ["SELECT switch_sql()", "SELECT 1 WHERE switch_plpgsql() = 'x'",
                                 "SELECT globex_items()"])
def test_change_inside_a_function_is_denied_by_its_effect(rls, functions, sql):
    app_dsn, policy, _, _ = rls
    with governed_db.connect(app_dsn, identity=Identity("ops", "service", tenant="acme"),
                             policy=policy, audit=False, autocommit=True) as conn:
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute(sql)
        assert ei.value.rule_ids == ("session.disallow-security-settings",)
        assert conn.execute(READ_BACK).fetchone()[3] == "acme"


@pytest.mark.parametrize("sql", [
    "SELECT switch_dynamic()",
    "SELECT x FROM switching_view",
    "INSERT INTO notes (body) VALUES ('hello')",
])
@pytest.mark.parametrize("is_async", [False, True])
async def test_change_the_analyzer_cannot_see_closes_the_session(rls, functions, dsn, sql,
                                                                 is_async):
    """Dynamic SQL, a view's body, a trigger: the settings are read back after the statement;
    a changed value closes the session (its transaction rolled back), nothing is returned."""
    app_dsn, policy, _, _ = rls
    ident = Identity("ops", "service", tenant="acme")
    kw = {"identity": ident, "policy": policy, "audit": False, "autocommit": False}
    if is_async:
        conn = await governed_db.AsyncConnection.connect(app_dsn, **kw)
        with pytest.raises(errors.StatementDenied) as ei:
            await conn.execute(sql)
    else:
        conn = governed_db.connect(app_dsn, **kw)
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute(sql)
    assert ei.value.rule_ids == ("session.verify-server-state",)
    assert "governed_db.identity.tenant" in str(ei.value)
    assert conn.closed
    with psycopg.connect(dsn) as raw:  # the transaction was rolled back with the session
        assert raw.execute("SELECT count(*) FROM notes").fetchone() == (0,)


@pytest.mark.parametrize("sql", [
    "SELECT switch_dynamic()",
    "SELECT x FROM switching_view",
    "INSERT INTO notes (body) VALUES ('hello')",
])
@pytest.mark.parametrize("is_async", [False, True])
async def test_change_the_analyzer_cannot_see_is_caught_inside_a_pipeline(
        rls, functions, dsn, sql, is_async):
    """In pipeline mode the settings are read back right behind the statement (the pipeline
    flushed, not synced) before execute() returns: a changed value closes the session before
    the caller can queue the next statement; nothing it wrote is kept, no row of the other
    tenant comes back. Observe mode, as psycopg's suite runs (enforced, the default profile
    first refuses a call whose writes it cannot bound in a pipeline: affected-row-limit); the
    read-back is no rule, observe mode does not lift it."""
    app_dsn, _, _, _ = rls
    ident = Identity("ops", "service", tenant="acme")
    kw = {"identity": ident, "policy": OBSERVE, "audit": False, "autocommit": True}
    after = "SELECT string_agg(item, ',') FROM tenant_orders"
    reached = []
    if is_async:
        conn = await governed_db.AsyncConnection.connect(app_dsn, **kw)
        with pytest.raises(errors.StatementDenied) as ei:
            async with conn.pipeline():
                await conn.execute(sql)
                reached.append(await conn.execute(after))
    else:
        conn = governed_db.connect(app_dsn, **kw)
        with pytest.raises(errors.StatementDenied) as ei:
            with conn.pipeline():
                conn.execute(sql)
                reached.append(conn.execute(after))
    closed = conn.closed
    await conn.close() if is_async else conn.close()
    assert ei.value.rule_ids == ("session.verify-server-state",)
    assert "governed_db.identity.tenant" in str(ei.value)
    assert reached == []
    assert closed
    with psycopg.connect(dsn) as raw:
        assert raw.execute("SELECT count(*) FROM notes").fetchone() == (0,)


@pytest.mark.parametrize("is_async", [False, True])
async def test_unseen_code_that_keeps_the_settings_runs_in_a_pipeline(rls, functions, is_async):
    """A statement that may run unseen code and leaves the settings alone runs pipelined, its
    result where psycopg puts it; the session stays open (observe mode: see above)."""
    app_dsn, _, _, _ = rls
    kw = {"identity": Identity("ops", "service", tenant="acme"), "policy": OBSERVE,
          "audit": False, "autocommit": True}
    if is_async:
        async with await governed_db.AsyncConnection.connect(app_dsn, **kw) as conn:
            async with conn.pipeline():
                cur = await conn.execute("SELECT safe_items()")
                back = await conn.execute(READ_BACK)
            assert len(await cur.fetchall()) == 1
            assert (await back.fetchone())[3] == "acme"
    else:
        with governed_db.connect(app_dsn, **kw) as conn:
            with conn.pipeline():
                cur = conn.execute("SELECT safe_items()")
                back = conn.execute(READ_BACK)
            assert len(cur.fetchall()) == 1
            assert back.fetchone()[3] == "acme"


@pytest.mark.parametrize("view, seen", [
    ("v_plain", True),          # SELECT of built-ins only: its definition is seen
    ("v_over_plain", True),     # a view over that view
    ("v_calls", False),         # its definition calls a user function: read back behind it
    ("v_over_calls", False),    # ... one level down
])
@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_views_in_a_pipeline_are_judged_by_their_definition(dsn, view, seen, mode):
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("""
            CREATE FUNCTION f_user(i int) RETURNS int LANGUAGE sql AS 'SELECT i';
            CREATE VIEW v_plain AS SELECT id, lower(name) AS n FROM users;
            CREATE VIEW v_over_plain AS SELECT id FROM v_plain;
            CREATE VIEW v_calls AS SELECT f_user(id) AS id FROM users;
            CREATE VIEW v_over_calls AS SELECT id FROM v_calls;""")
    policy = parse_policy(f'version = 1\nmode = "{mode}"\n')
    with governed_db.connect(dsn, identity=Identity("etl", "service"), audit=False,
                             autocommit=True, policy=policy) as conn:
        if seen or mode == "observe":
            # Seen, or not (then read back mid-pipeline): it runs, the session stays open.
            with conn.pipeline():
                cur = conn.execute(f"SELECT count(*) FROM {view}")
            assert cur.fetchone() == (2,)
            assert not conn.closed
        else:
            # Enforced, a call the analyzer cannot bound is refused in a pipeline first.
            with pytest.raises(errors.StatementDenied) as ei:
                with conn.pipeline():
                    conn.execute(f"SELECT count(*) FROM {view}")
            assert ei.value.rule_ids == ("statement.affected-row-limit",)


def test_a_function_setting_only_its_search_path_still_runs(rls, functions):
    """A SET clause other than governed_db.* (a SECURITY DEFINER function's search_path) is
    local to the function: not refused (its result is masked: its lineage is unknown)."""
    app_dsn, policy, _, _ = rls
    with governed_db.connect(app_dsn, identity=Identity("ops", "service", tenant="acme"),
                             policy=policy, audit=False, autocommit=True) as conn:
        assert len(conn.execute("SELECT safe_items()").fetchall()) == 1


def test_identity_switched_inside_a_pipeline_gets_its_server_state(rls):
    """The switch is queued ahead of the statement while results are in flight: the agent's
    READ ONLY default and its identity settings apply to its pipelined statement, and the
    session is synced again after the pipeline."""
    app_dsn, policy, a, _ = rls
    svc = Identity("ops", "service", tenant="acme")
    q = ("SELECT current_setting('default_transaction_read_only'),"
         " current_setting('governed_db.identity.id')")
    with governed_db.connect(app_dsn, identity=svc, policy=policy, audit=False,
                             autocommit=True) as conn:
        with conn.pipeline():
            c1 = conn.execute(q)
            with acting_as(a):
                c2 = conn.execute(q)
            c3 = conn.execute(q)
        assert (c1.fetchone(), c2.fetchone(), c3.fetchone()) == (
            ("off", "ops"), ("on", "bot-a"), ("off", "ops"))
        assert conn.execute(q).fetchone() == ("off", "ops")
        with acting_as(a):
            assert conn.execute(q).fetchone() == ("on", "bot-a")


@pytest.mark.parametrize("is_async", [False, True])
@pytest.mark.parametrize("order", ["agent-first", "agent-between", "agent-last"])
async def test_identity_switched_first_in_a_pipeline_keeps_the_session(rls, is_async, order):
    """Nothing in flight yet when the first statement of a pipeline switches identity: the
    sync is queued too (not run), so what the server reports is not read back before the
    pipeline is over (attack2 side note: an agent statement first in a service's pipeline
    closed the session under session.verify-server-state)."""
    app_dsn, policy, a, _ = rls
    svc = Identity("ops", "service", tenant="acme")
    q = ("SELECT current_setting('default_transaction_read_only'),"
         " current_setting('governed_db.identity.id')")
    who = {"agent-first": [a, svc, svc], "agent-between": [svc, a, svc],
           "agent-last": [svc, svc, a]}[order]
    want = [("on", "bot-a") if w is a else ("off", "ops") for w in who]
    kw = {"identity": svc, "policy": policy, "audit": False, "autocommit": True}
    got = []
    if is_async:
        async with await governed_db.AsyncConnection.connect(app_dsn, **kw) as aconn:
            async with aconn.pipeline():
                curs = []
                for w in who:
                    with acting_as(w):
                        curs.append(await aconn.execute(q))
            got = [await c.fetchone() for c in curs]
            assert await (await aconn.execute(q)).fetchone() == ("off", "ops")
            assert not aconn.closed
    else:
        with governed_db.connect(app_dsn, **kw) as conn:
            with conn.pipeline():
                curs = []
                for w in who:
                    with acting_as(w):
                        curs.append(conn.execute(q))
            got = [c.fetchone() for c in curs]
            assert conn.execute(q).fetchone() == ("off", "ops")
            assert not conn.closed
    assert got == want
