"""Allow-lists for read-only identities: functions, operators, settings, catalogs (issue 12).

Each class has several shapes (schema-qualified, quoted, overloaded, nested in CTE, subquery,
LATERAL, EXPLAIN, views, operators); each denial names its rule, and a separate raw superuser
connection checks that nothing changed on the server.
"""

from __future__ import annotations

import psycopg
import pytest

import governed_db
from governed_db import errors
from governed_db.analysis._functions import (
    BUILTIN_OPERATORS,
    CATALOG_RELATIONS,
    READ_FUNCTIONS,
    REFLECTION,
    REVIEWED_VOLATILE,
    denied_class,
)

from .conftest import AGENT, HUMAN

# -- the list itself, checked against the live catalog ----------------------------------------


def test_every_listed_function_exists_in_pg_proc_and_is_in_no_deny_class(dsn):
    with psycopg.connect(dsn) as raw:
        rows = raw.execute(
            "SELECT p.proname, p.provolatile, p.prorettype::regtype::text,"
            " 'internal'::regtype = ANY (p.proargtypes)"
            " FROM pg_proc p WHERE p.pronamespace = 'pg_catalog'::regnamespace").fetchall()
    by_name: dict[str, list[tuple[str, str, bool]]] = {}
    for name, vol, ret, internal in rows:
        by_name.setdefault(name, []).append((vol, ret, internal))
    assert len(READ_FUNCTIONS) > 1500
    missing = sorted(READ_FUNCTIONS - set(by_name))
    assert not missing, missing
    for name in READ_FUNCTIONS:
        assert denied_class(name) is None, name
        callable_ = [o for o in by_name[name] if not o[2]]
        assert callable_, name
        for vol, ret, _ in callable_:
            assert vol != "v" or name in REVIEWED_VOLATILE, name
            assert ret not in ("trigger", "event_trigger", "internal", "language_handler"), name
        if name.startswith("pg_"):
            assert name in REFLECTION, name
    for must_not in ("pg_read_file", "query_to_xml", "table_to_xml", "ts_stat", "ts_rewrite",
                     "set_config", "nextval", "setval", "currval", "pg_advisory_lock",
                     "pg_try_advisory_xact_lock", "pg_notify", "lo_import", "lo_get",
                     "pg_stat_get_activity", "pg_stat_get_backend_activity", "txid_current",
                     "pg_current_xact_id", "pg_import_system_collations", "pg_sleep",
                     "pg_terminate_backend", "pg_stat_reset", "dblink", "cursor_to_xml",
                     "pg_ls_dir", "pg_reload_conf", "setseed", "pg_mcv_list_items"):
        assert must_not not in READ_FUNCTIONS, must_not
    for needed in ("lower", "count", "sum", "row_number", "format_type", "pg_get_indexdef",
                   "pg_table_is_visible", "has_table_privilege", "obj_description",
                   "col_description", "current_schema", "current_schemas", "version",
                   "jsonb_build_object", "array_agg", "string_agg", "extract", "date_trunc",
                   "to_char", "generate_series", "unnest", "pg_get_constraintdef", "now"):
        assert needed in READ_FUNCTIONS, needed


def test_builtin_operators_and_catalog_relations_exist(dsn):
    with psycopg.connect(dsn) as raw:
        ops = {r[0] for r in raw.execute("SELECT DISTINCT oprname FROM pg_operator WHERE"
                                         " oprnamespace = 'pg_catalog'::regnamespace")}
        rels = {r[0] for r in raw.execute("SELECT relname FROM pg_class WHERE"
                                          " relnamespace = 'pg_catalog'::regnamespace")}
    assert BUILTIN_OPERATORS == ops
    assert CATALOG_RELATIONS <= rels
    assert not CATALOG_RELATIONS & {"pg_statistic", "pg_stats", "pg_stats_ext",
                                    "pg_stats_ext_exprs", "pg_statistic_ext_data",
                                    "pg_stat_activity", "pg_authid", "pg_shadow",
                                    "pg_user_mapping", "pg_user_mappings", "pg_largeobject",
                                    "pg_hba_file_rules", "pg_file_settings", "pg_locks"}


# -- adversarial classes -------------------------------------------------------------------


def _state(dsn):
    with psycopg.connect(dsn, autocommit=True) as raw:
        return raw.execute(
            "SELECT (SELECT count(*) FROM users), (SELECT last_value FROM order_seq),"
            " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'),"
            " (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace),"
            " (SELECT count(*) FROM t)").fetchone()


@pytest.fixture
def hostile(dsn):
    """User-defined functions and operators an attacker (or a careless app) left around."""
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("""
            CREATE FUNCTION public.lower(integer) RETURNS text LANGUAGE sql
              AS $$ INSERT INTO t VALUES (1) RETURNING 'x' $$;
            CREATE FUNCTION public.peek() RETURNS text LANGUAGE sql STABLE
              AS $$ SELECT 'x' $$;
            CREATE FUNCTION public.plus_text(text, text) RETURNS text LANGUAGE sql
              AS $$ SELECT $1 || $2 $$;
            CREATE OPERATOR public.+ (FUNCTION = public.plus_text, LEFTARG = text,
                                      RIGHTARG = text);
            CREATE OPERATOR public.### (FUNCTION = public.plus_text, LEFTARG = text,
                                        RIGHTARG = text);
            CREATE VIEW public.stats_view AS SELECT attname, most_common_vals::text AS v
              FROM pg_stats WHERE tablename = 'users';
            CREATE VIEW public.peek_view AS SELECT public.peek() AS p;
            CREATE VIEW public.lock_view AS SELECT pg_try_advisory_lock(42) AS l;
        """)
    return dsn


FUNCTION_CASES = [
    # user-defined, schema-qualified, quoted, overloaded
    "SELECT peek()",
    "SELECT public.peek()",
    'SELECT "public"."peek"()',
    "SELECT lower(1)",  # public.lower(integer) wins overload resolution
    "SELECT peek(u) FROM users u",  # functional notation, but a function of the name exists
    'SELECT "lower"(1)',
    # locking / sequence / notify / xact state, nested
    "SELECT pg_advisory_lock(7)",
    "SELECT pg_catalog.pg_try_advisory_xact_lock(7)",
    'SELECT "PG_CATALOG".pg_advisory_lock(7)',
    "WITH x AS (SELECT pg_advisory_lock(7)) SELECT * FROM x",
    "SELECT * FROM users u, LATERAL (SELECT nextval('order_seq')) s",
    "SELECT (SELECT setval('order_seq', 1))",
    "SELECT id FROM users WHERE id IN (SELECT currval('order_seq'))",
    "SELECT pg_notify('ch', 'x')",
    "SELECT txid_current()",
    "SELECT pg_catalog.pg_current_xact_id()",
    "EXPLAIN SELECT peek()",
    "SELECT * FROM generate_series(1, 2) g, LATERAL peek() p",
    # operators that map to user functions
    "SELECT 'a'::text + 'b'::text",
    "SELECT 'a' OPERATOR(public.+) 'b'",
    "SELECT 'a' ### 'b'",
    "SELECT 1 WHERE 'a' ### 'b' IS NOT NULL",
    # via views
    "SELECT * FROM peek_view",
    "SELECT * FROM lock_view",
    # set_config with a computed name
    "SELECT set_config(current_user || '.x', 'y', false)",
]


@pytest.mark.parametrize("sql", FUNCTION_CASES)
def test_read_only_identity_calls_only_builtin_pure_functions(hostile, audit, sql):
    before = _state(hostile)
    with governed_db.connect(hostile, identity=AGENT, audit=audit) as conn:
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute(sql)
        assert "function.allowlist" in ei.value.rule_ids, ei.value.rule_ids
        assert "allowed" in str(ei.value)
    assert _state(hostile) == before


SQL_STRING_CASES = [
    ("SELECT query_to_xml('DELETE FROM users RETURNING id', true, false, '')", None),
    ("SELECT pg_catalog.query_to_xml('SELECT ssn FROM users', true, false, '')", None),
    ("SELECT query_to_xml(current_user, true, false, '')", "statement.opaque"),
    ("SELECT * FROM ts_stat('SELECT to_tsvector(ssn) FROM users')", None),
    ("SELECT ts_rewrite('a'::tsquery, 'SELECT ssn::tsquery, ssn::tsquery FROM users')", None),
    ("SELECT table_to_xml('users', true, false, '')", None),
    ("SELECT table_to_xml(('us' || 'ers')::regclass, true, false, '')", "statement.opaque"),
    ("SELECT cursor_to_xml('c', 1, true, false, '')", "statement.opaque"),
    ("SELECT schema_to_xml('public', true, false, '')", "statement.opaque"),
]


@pytest.mark.parametrize("who", [AGENT, HUMAN], ids=["ai_agent", "human"])
@pytest.mark.parametrize("sql,rule", SQL_STRING_CASES)
def test_sql_in_a_string_is_the_statement_in_the_string(dsn, audit, who, sql, rule):
    before = _state(dsn)
    with governed_db.connect(dsn, identity=who, audit=audit) as conn:
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute(sql)
        if rule is not None:
            assert rule in ei.value.rule_ids
        else:  # denied as a dangerous function for everyone (and off the agent's list)
            assert "function.deny" in ei.value.rule_ids
            assert (who is HUMAN) == ("function.allowlist" not in ei.value.rule_ids)
    assert _state(dsn) == before


def test_sql_in_a_string_counts_its_writes_and_reads():
    from governed_db.analysis import analyze

    s = analyze("SELECT query_to_xml('DELETE FROM users', true, false, '')").statements[0]
    assert "DELETE" in s.kinds and "users" in s.writes and "users" in s.unbounded_writes
    s = analyze("SELECT table_to_xml('public.\"Users\"', true, false, '')").statements[0]
    assert s.reads == frozenset({"public.Users"})
    s = analyze("CREATE VIEW v AS SELECT query_to_xml('SELECT pg_read_file(''x'')',"
                " true, false, '')").statements[0]
    assert "pg_read_file" in s.functions and not s.reads  # stored body: calls count


ALLOWED_FOR_AGENT = [
    "SELECT lower(name), upper(email), length(ssn) FROM users",
    "SELECT pg_catalog.lower(name) FROM users",
    "SELECT count(*), sum(amount), avg(amount) FROM orders",
    "SELECT row_number() OVER (ORDER BY id), id FROM users",
    "SELECT date_trunc('day', now()), extract(year FROM now()), now() AT TIME ZONE 'UTC'",
    "SELECT jsonb_build_object('a', 1) -> 'a', '[1,2]'::jsonb @> '[1]'",
    "SELECT format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid)"
    " FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid"
    " AND d.adnum = a.attnum WHERE a.attrelid = 'users'::regclass",
    "SELECT pg_get_indexdef(indexrelid), pg_table_is_visible(indrelid) FROM pg_index LIMIT 1",
    "SELECT obj_description('users'::regclass, 'pg_class'), current_schema(),"
    " current_schemas(false), version(), has_table_privilege('users', 'SELECT')",
    "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public'",
    "SELECT name, setting FROM pg_settings WHERE name = 'TimeZone'",
    "SELECT 1 BETWEEN 0 AND 2, 'a' || 'b', 'x' LIKE 'x%', 2 = ANY(ARRAY[1, 2])",
    "SELECT set_config('TimeZone', 'UTC', false)",
    "SELECT ssn(u) FROM users u",  # functional notation for u.ssn: no function is called
]


@pytest.mark.parametrize("sql", ALLOWED_FOR_AGENT)
def test_ordinary_reads_and_reflection_still_run_for_agents(dsn, audit, sql):
    with governed_db.connect(dsn, identity=AGENT, audit=audit) as conn:
        conn.execute(sql).fetchall()


def test_policy_can_allow_a_function(hostile, audit, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[[rules]]\nid = "function.allowlist"\nallow = ["peek"]\n')
    with governed_db.connect(hostile, identity=AGENT, audit=audit, policy=str(path)) as conn:
        # runs (the value is masked: a user function's lineage is unknown)
        assert conn.execute("SELECT peek()").fetchone() is not None
        with pytest.raises(errors.StatementDenied):
            conn.execute("SELECT lower(1)")


# -- settings ------------------------------------------------------------------------------

SETTING_CASES = [
    ("SET search_path = evil, public", "session.disallow-security-settings"),
    ("SET LOCAL search_path = evil", "session.disallow-security-settings"),
    ("SELECT set_config('search_path', 'evil', false)", "session.disallow-security-settings"),
    ("SELECT pg_catalog.set_config('log_statement', 'none', true)",
     "session.disallow-security-settings"),
    ("SET track_activities = off", "session.disallow-security-settings"),
    ("SET session_replication_role = replica", "session.disallow-security-settings"),
    ("SET statement_timeout = 0", "session.disallow-security-settings"),
    ("SET statement_timeout = '1h'", "session.disallow-security-settings"),
    ("RESET statement_timeout", "session.disallow-security-settings"),
    # lowering it is a cancellation oracle for a cost a hidden value decides (attack G1)
    ("SET statement_timeout = '5s'", "session.settings-allowlist"),
    ("SET LOCAL statement_timeout = 300", "session.settings-allowlist"),
    ("SELECT set_config('statement_timeout', '300ms', false)", "session.settings-allowlist"),
    ("SET governed_db.identity = 'someone'", "session.disallow-security-settings"),
    ("SET application_name = 'x'", "session.disallow-security-settings"),
    ("BEGIN READ WRITE", "session.disallow-security-settings"),
    ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
     "session.disallow-security-settings"),
    ("SET TRANSACTION READ WRITE", "session.settings-allowlist"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "session.settings-allowlist"),
    ("SET default_transaction_read_only = off", "session.disallow-security-settings"),
    ("SET work_mem = '1GB'", "session.settings-allowlist"),
    ("RESET ALL", "session.settings-allowlist"),
    ("SELECT set_config('work_mem', '1GB', false)", "session.settings-allowlist"),
    ("WITH s AS (SELECT set_config('row_security', 'off', false)) SELECT * FROM s",
     "session.disallow-security-settings"),
]


@pytest.mark.parametrize("sql,rule", SETTING_CASES)
def test_agents_set_only_harmless_settings(dsn, audit, sql, rule):
    with governed_db.connect(dsn, identity=AGENT, audit=audit) as conn:
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute(sql)
        assert rule in ei.value.rule_ids, ei.value.rule_ids
        conn.rollback()
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        assert conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
        assert conn.execute("SHOW search_path").fetchone()[0] != "evil"


@pytest.mark.parametrize("sql", [
    "SET TimeZone = 'Europe/Paris'", "SET TIME ZONE 'UTC'", "SET LOCAL DateStyle = 'ISO, DMY'",
    "SELECT set_config('TimeZone', 'Asia/Tokyo', false)", "SET extra_float_digits = 3",
    "RESET TimeZone", "SET lock_timeout = '5s'", "BEGIN ISOLATION LEVEL REPEATABLE READ",
    "BEGIN READ ONLY", "SET TRANSACTION READ ONLY",
])
def test_agents_may_set_the_time_zone_and_similar(dsn, audit, sql):
    with governed_db.connect(dsn, identity=AGENT, audit=audit) as conn:
        conn.execute(sql)


@pytest.mark.parametrize("sql", [
    "SET search_path = evil", "SET log_statement = 'none'", "SET track_counts = off",
    "SET row_security = off", "SELECT set_config('standard_conforming_strings', 'off', false)",
])
def test_protected_settings_need_the_policys_permission_for_every_kind(dsn, audit, sql):
    with governed_db.connect(dsn, identity=HUMAN, audit=audit, autocommit=True) as conn:
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute(sql)
        assert ei.value.rule_ids == ("session.disallow-security-settings",)
        assert conn.execute("SHOW standard_conforming_strings").fetchone() == ("on",)


def test_the_policy_may_allow_a_protected_setting(dsn, audit, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[[rules]]\nid = "session.disallow-security-settings"\n'
                    'allow = ["lock_timeout", "row_security"]\n')
    with governed_db.connect(dsn, identity=HUMAN, audit=audit, policy=str(path),
                             autocommit=True) as conn:
        conn.execute("SET row_security = off")
        with pytest.raises(errors.StatementDenied):
            conn.execute("SET search_path = evil")


# -- catalogs ------------------------------------------------------------------------------

CATALOG_CASES = [
    "SELECT * FROM pg_stats",
    "SELECT * FROM pg_catalog.pg_stats",
    'SELECT * FROM "pg_catalog"."pg_statistic"',
    "SELECT * FROM PG_CATALOG.PG_STATS_EXT",
    "SELECT * FROM pg_stats_ext_exprs",
    "SELECT * FROM pg_statistic_ext_data",
    "SELECT query FROM pg_stat_activity",
    "SELECT * FROM pg_catalog.pg_authid",
    "SELECT passwd FROM pg_shadow",
    "SELECT * FROM pg_user_mappings",
    "SELECT * FROM pg_largeobject",
    "SELECT * FROM pg_locks",
    "WITH s AS (SELECT * FROM pg_stats) SELECT count(*) FROM s",
    "SELECT (SELECT count(*) FROM pg_statistic) AS n",
    "SELECT * FROM users u, LATERAL (SELECT * FROM pg_stat_activity LIMIT 1) a",
    "EXPLAIN ANALYZE SELECT * FROM pg_stats",
    "SELECT * FROM stats_view",  # a user view over pg_stats
    "SELECT * FROM pg_stat_statements",
    "SELECT umoptions FROM information_schema._pg_user_mappings",
    "TABLE pg_stats",
    "SELECT * FROM pg_toast.pg_toast_2619",
]


@pytest.mark.parametrize("sql", CATALOG_CASES)
def test_agents_read_only_reflection_catalogs(hostile, audit, sql):
    with governed_db.connect(hostile, identity=AGENT, audit=audit) as conn:
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute(sql)
        assert "catalog.allowlist" in ei.value.rule_ids, ei.value.rule_ids


@pytest.mark.parametrize("sql", [
    "SELECT pg_stat_get_activity(NULL)", "SELECT pg_stat_get_backend_activity(1)",
    "SELECT * FROM pg_catalog.pg_stat_get_activity(NULL)",
])
def test_functions_returning_denied_catalog_data_are_refused(dsn, audit, sql):
    with governed_db.connect(dsn, identity=AGENT, audit=audit) as conn:
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute(sql)
        assert "function.allowlist" in ei.value.rule_ids


@pytest.mark.parametrize("who", [AGENT, HUMAN], ids=["ai_agent", "human"])
@pytest.mark.parametrize("sql", [
    "UPDATE pg_settings SET setting = 'off' WHERE name = 'row_security'",
    "UPDATE pg_catalog.pg_settings SET setting = '0' WHERE name = 'statement_timeout'",
    "WITH u AS (UPDATE pg_settings SET setting = 'x' WHERE name = 'search_path'"
    " RETURNING 1) SELECT * FROM u",
    "DELETE FROM pg_catalog.pg_description WHERE objoid = 1",
    'INSERT INTO "pg_catalog"."pg_description" VALUES (1, 1, 0, \'x\')',
])
def test_nobody_writes_system_catalogs(dsn, audit, who, sql):
    with governed_db.connect(dsn, identity=who, audit=audit) as conn:
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute(sql)
        assert "catalog.disallow-write" in ei.value.rule_ids
        conn.rollback()
    with psycopg.connect(dsn) as raw:
        assert raw.execute("SHOW row_security").fetchone() == ("on",)
