"""Function and catalog classification: what a read-only identity may call and read.

Why allow-lists (security-principles.md, 1): a deny-list of dangerous functions is as strong
as its missing entry, and PostgreSQL's volatility labels are no security boundary (a STABLE
function such as ``table_to_xml`` or ``pg_stat_get_activity`` still reads what it should not).
So a read-only identity may call only

* the built-in functions on :data:`READ_FUNCTIONS` — generated from PostgreSQL 15's
  ``pg_proc`` by ``tools/gen_read_functions.py`` with the rules in its docstring and checked
  against the live catalog by ``tests/test_function_allowlist.py``, — and
* what the policy's ``function.allowlist`` rule adds (``allow = [...]``).

Names are matched case-folded and unqualified, for every overload; a call qualified with a
schema other than ``pg_catalog`` is never a built-in, and an unqualified name that a
user-defined function shares (an overload in ``public`` would be picked for other argument
types) is refused unless written ``pg_catalog.name``.

The catalog allow-list (:func:`catalog_relation_allowed`) follows the same idea: reflection
an ORM needs stays readable; statistics with sample values, other sessions' query text,
password hashes and anything else is refused.
"""

from __future__ import annotations

import re
from importlib import resources

__all__ = [
    "AGENT_SETTINGS",
    "BUILTIN_OPERATORS",
    "CATALOG_RELATIONS",
    "DENY_CLASSES",
    "READ_FUNCTIONS",
    "REFLECTION",
    "PROTECTED_SETTINGS",
    "REVIEWED_VOLATILE",
    "catalog_relation_allowed",
    "denied_class",
    "duration_ms",
    "setting_matches",
]

# Deny classes: a name in one of them is never on the read list, whatever its volatility.
# (class, pattern on the case-folded unqualified name)
DENY_CLASSES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (cls, re.compile(pattern)) for cls, pattern in (
        ("file or program access", r"^pg_(ls_|read_|stat_file|file_|logdir|current_logfile)"
                                   r"|^pg_(relation_filepath|relation_filenode|filenode_relation"
                                   r"|tablespace_location)$"),
        ("large objects", r"^lo_|^lo(read|write)$"),
        ("SQL in a string", r"_to_xml|_to_xmlschema|^ts_stat$|^ts_rewrite$|^dblink|^crosstab"
                            r"|^connectby$|^xpath_table$"),
        ("settings", r"^set_config$|^setseed$"),
        ("sequences", r"^(nextval|setval|currval|lastval)$|^pg_sequence_last_value$"),
        ("locks", r"^pg_(try_)?advisory|^pg_lock_status$|^pg_blocking_pids$"
                  r"|^pg_safe_snapshot_blocking_pids$|^pg_isolation_test"),
        ("notify", r"^pg_notify$|^pg_notification_queue_usage$"),
        ("sleeps", r"^pg_sleep"),
        ("backend and server control", r"^pg_(cancel|terminate)_backend$|^pg_reload_conf$"
                                       r"|^pg_rotate_logfile|^pg_promote$|^pg_log_backend"
                                       r"|^pg_get_backend_memory|^pg_get_shmem|^pg_nextoid$"
                                       r"|^pg_stop_making_pinned|^binary_upgrade_"),
        ("WAL, backup and replication", r"^pg_(wal_|switch_wal|create_|drop_|copy_|logical_"
                                        r"|replication_|backup_|start_backup|stop_backup"
                                        r"|current_wal|last_wal|last_xact|export_snapshot"
                                        r"|get_replication_slots|get_wal|walfile_name"
                                        r"|is_wal_replay|control_|show_replication)"),
        ("statistics and other sessions' activity", r"^pg_stat|^pg_mcv_list_items$"
                                                    r"|^pg_get_publication_tables$"),
        ("server configuration files", r"^pg_(hba_file_rules|ident_file_mappings"
                                       r"|show_all_file_settings|config)$"),
        ("collation import", r"^pg_import_system_collations$|collation_actual_version$"),
        ("transaction ids", r"^txid_|^pg_current_xact_id|^pg_xact_|^pg_prepared_xact$"
                            r"|^pg_last_committed_xact$|^pg_get_multixact"),
        ("maintenance", r"^brin_|^gin_clean|^pg_extension_config_dump$|^amvalidate$"
                        r"|_validator$|^pg_event_trigger_"),
    )
)


def denied_class(name: str) -> str | None:
    """The deny class of a case-folded function name, or None."""
    for cls, pattern in DENY_CLASSES:
        if pattern.search(name):
            return cls
    return None


# VOLATILE built-ins reviewed as harmless reads (no state changed, nothing outside the
# session's own database objects read).
REVIEWED_VOLATILE = frozenset({
    "random", "clock_timestamp", "timeofday", "gen_random_uuid", "current_query",
    "pg_relation_size", "pg_total_relation_size", "pg_table_size", "pg_indexes_size",
    "pg_database_size", "pg_tablespace_size", "pg_is_in_recovery", "pg_partition_tree",
    "pg_partition_ancestors", "pg_jit_available",
})

# pg_* built-ins reviewed as catalog introspection (what reflection, ORMs and psql's \d need).
REFLECTION = frozenset({
    "pg_available_extension_versions", "pg_available_extensions", "pg_backend_pid",
    "pg_char_to_encoding", "pg_client_encoding", "pg_collation_for", "pg_collation_is_visible",
    "pg_column_compression", "pg_column_is_updatable", "pg_column_size", "pg_conf_load_time",
    "pg_conversion_is_visible", "pg_cursor", "pg_database_size", "pg_describe_object",
    "pg_encoding_max_length", "pg_encoding_to_char", "pg_extension_update_paths",
    "pg_function_is_visible", "pg_get_catalog_foreign_keys", "pg_get_constraintdef",
    "pg_get_expr", "pg_get_function_arg_default", "pg_get_function_arguments",
    "pg_get_function_identity_arguments", "pg_get_function_result", "pg_get_function_sqlbody",
    "pg_get_functiondef", "pg_get_indexdef", "pg_get_keywords", "pg_get_object_address",
    "pg_get_partition_constraintdef", "pg_get_partkeydef", "pg_get_replica_identity_index",
    "pg_get_ruledef", "pg_get_serial_sequence", "pg_get_statisticsobjdef",
    "pg_get_statisticsobjdef_columns", "pg_get_statisticsobjdef_expressions",
    "pg_get_triggerdef", "pg_get_userbyid", "pg_get_viewdef", "pg_has_role",
    "pg_identify_object", "pg_identify_object_as_address", "pg_index_column_has_property",
    "pg_index_has_property", "pg_indexam_has_property", "pg_indexes_size", "pg_is_in_recovery",
    "pg_is_other_temp_schema", "pg_jit_available", "pg_listening_channels",
    "pg_my_temp_schema", "pg_opclass_is_visible", "pg_operator_is_visible",
    "pg_opfamily_is_visible", "pg_options_to_table", "pg_partition_ancestors",
    "pg_partition_root", "pg_partition_tree", "pg_postmaster_start_time",
    "pg_prepared_statement", "pg_relation_is_updatable", "pg_relation_size",
    "pg_sequence_parameters", "pg_settings_get_flags", "pg_show_all_settings",
    "pg_size_bytes", "pg_size_pretty", "pg_table_is_visible", "pg_table_size",
    "pg_tablespace_databases", "pg_tablespace_size", "pg_timezone_abbrevs",
    "pg_timezone_names", "pg_total_relation_size", "pg_trigger_depth",
    "pg_ts_config_is_visible", "pg_ts_dict_is_visible", "pg_ts_parser_is_visible",
    "pg_ts_template_is_visible", "pg_type_is_visible", "pg_typeof",
})


def _load() -> frozenset[str]:
    text = resources.files(__package__).joinpath("read_functions.txt").read_text("utf-8")
    return frozenset(line.strip() for line in text.splitlines()
                     if line.strip() and not line.startswith("#"))


READ_FUNCTIONS: frozenset[str] = _load()


# Catalog relations a read-only identity may read: what reflection (SQLAlchemy, LangChain's
# SQLDatabase, psql's \d, Django introspection) needs. Not here, so refused: statistics with
# sample values (pg_statistic, pg_stats, pg_stats_ext, pg_stats_ext_exprs,
# pg_statistic_ext_data), other sessions' activity and query text (pg_stat_activity,
# pg_stat_statements, every other pg_stat*/pg_statio* view, pg_locks), password hashes and
# secrets (pg_authid, pg_shadow, pg_user_mapping(s), pg_user_mappings), large objects
# (pg_largeobject), server files (pg_hba_file_rules, pg_file_settings), replication state.
CATALOG_RELATIONS = frozenset({
    "pg_aggregate", "pg_am", "pg_amop", "pg_amproc", "pg_attrdef", "pg_attribute",
    "pg_available_extension_versions", "pg_available_extensions", "pg_cast", "pg_class",
    "pg_collation", "pg_constraint", "pg_conversion", "pg_cursors", "pg_database",
    "pg_default_acl", "pg_depend", "pg_description", "pg_enum", "pg_event_trigger",
    "pg_extension", "pg_foreign_data_wrapper", "pg_foreign_server", "pg_foreign_table",
    "pg_group", "pg_index", "pg_indexes", "pg_inherits", "pg_init_privs", "pg_language",
    "pg_matviews", "pg_namespace", "pg_opclass", "pg_operator", "pg_opfamily",
    "pg_partitioned_table", "pg_policies", "pg_policy", "pg_prepared_statements", "pg_proc",
    "pg_publication", "pg_publication_namespace", "pg_publication_rel", "pg_publication_tables",
    "pg_range", "pg_rewrite", "pg_roles", "pg_rules", "pg_sequence", "pg_sequences",
    "pg_settings", "pg_shdepend", "pg_shdescription", "pg_statistic_ext", "pg_tables",
    "pg_tablespace", "pg_timezone_abbrevs", "pg_timezone_names", "pg_transform", "pg_trigger",
    "pg_ts_config", "pg_ts_config_map", "pg_ts_dict", "pg_ts_parser", "pg_ts_template",
    "pg_type", "pg_views", "pg_auth_members", "pg_seclabel", "pg_seclabels", "pg_shseclabel",
    "pg_user",
})


def catalog_relation_allowed(schema: str, name: str) -> bool:
    """Whether a read-only identity may read ``schema.name`` (a system schema relation).

    ``information_schema``'s standard views are allowed: they are defined over the catalogs
    with the caller's privileges and expose neither statistics nor other sessions' queries.
    Its internal ``_pg_*`` views are not (``_pg_user_mappings`` carries user mapping options,
    passwords included).
    """
    if schema == "information_schema":
        return not name.startswith("_pg_")
    return schema == "pg_catalog" and name in CATALOG_RELATIONS


# Operator symbols PostgreSQL 15 defines in pg_catalog (every one implemented by a built-in
# pure function). Any other symbol, or one qualified with another schema
# (``OPERATOR(public.+)``), is user-defined: for a read-only identity it is refused like a
# user-defined function, and so is an unqualified built-in symbol that a user-defined operator
# shares (overload resolution could pick the user's for some argument types).
BUILTIN_OPERATORS = frozenset({
    "!!", "!~", "!~*", "!~~", "!~~*", "#", "##", "#-", "#>", "#>>", "%", "&", "&&", "&<",
    "&<|", "&>", "*", "*<", "*<=", "*<>", "*=", "*>", "*>=", "+", "-", "->", "->>", "-|-", "/",
    "<", "<->", "<<", "<<=", "<<|", "<=", "<>", "<@", "<^", "=", ">", ">=", ">>", ">>=", ">^",
    "?", "?#", "?&", "?-", "?-|", "?|", "?||", "@", "@-@", "@>", "@?", "@@", "@@@", "^", "^@",
    "|", "|&>", "|/", "|>>", "||", "||/", "~", "~*", "~<=~", "~<~", "~=", "~>=~", "~>~", "~~",
    "~~*",
})

# Settings a read-only identity may change with SET / RESET / SET LOCAL / set_config: they
# change how values are shown or how the session's own statements are planned, never what is
# allowed, logged or how text is lexed. (application_name is not here: governed_db pushes the
# identity into it.) Not statement_timeout: the policy's value is a ceiling, and lowering it
# below a hidden-value-dependent cost turns that cost into a cancellation, an error oracle
# (attack G1: ``SET statement_timeout = '300ms'`` then md5 of a content-sized value). Other
# identities may still lower it (``session.disallow-security-settings``); a policy can let an
# agent do so with this rule's ``allow``.
AGENT_SETTINGS = frozenset({
    "timezone", "datestyle", "intervalstyle", "extra_float_digits", "bytea_output",
    "xmloption", "lc_monetary", "lc_numeric", "lc_time", "client_min_messages",
    "transaction_isolation", "transaction_deferrable", "default_transaction_isolation",
    "default_transaction_deferrable", "lock_timeout", "enable_seqscan", "enable_indexscan",
    "enable_bitmapscan", "enable_hashjoin", "enable_mergejoin", "enable_nestloop",
    "enable_sort", "jit", "plan_cache_mode", "random_page_cost", "seq_page_cost",
    "cpu_tuple_cost", "effective_cache_size", "geqo", "join_collapse_limit",
    "from_collapse_limit", "default_statistics_target", "max_parallel_workers_per_gather",
})

# Settings that decide how statements are lexed, which objects names resolve to, which
# privileges, transaction modes and time limits apply, and what is logged or tracked. No
# identity changes them without the policy's explicit permission
# (``session.disallow-security-settings`` ``allow = [...]``). Names ending in ``*`` are
# prefixes. statement_timeout may be lowered below the policy's value (stricter), never
# raised or switched off.
PROTECTED_SETTINGS = frozenset({
    "standard_conforming_strings", "backslash_quote", "escape_string_warning",
    "client_encoding", "search_path", "role", "session_authorization",
    "transaction_read_only", "default_transaction_read_only", "session_replication_role",
    "row_security", "statement_timeout", "idle_in_transaction_session_timeout",
    "idle_session_timeout", "application_name", "log_*", "track_*", "debug_*",
    "governed_db.*", "session_preload_libraries", "local_preload_libraries",
    "dynamic_library_path", "password_encryption", "check_function_bodies",
    "default_tablespace", "temp_tablespaces", "allow_system_table_mods", "zero_damaged_pages",
    "ignore_system_indexes", "ignore_checksum_failure", "lo_compat_privileges",
    "compute_query_id", "pg_stat_statements.*", "auto_explain.*", "pgaudit.*",
    # change what a statement that was judged (or approved) as written means at the server:
    # `WHERE x = NULL` matching NULLs, 'NULL' in an array literal, PL/pgSQL name resolution
    "transform_null_equals", "array_nulls", "plpgsql.*",
})


def setting_matches(name: str, patterns: frozenset[str] | set[str]) -> bool:
    """Whether a case-folded setting name is one of ``patterns`` (``prefix*`` allowed)."""
    if name in patterns:
        return True
    return any(p.endswith("*") and name.startswith(p[:-1]) for p in patterns)


_UNITS_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000, "": 1}


def duration_ms(value: str | None) -> int | None:
    """Milliseconds of a PostgreSQL duration (``30s``, ``500``, ``'1min'``), else None."""
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(ms|s|min|h|d)?\s*", str(value))
    if not m:
        return None
    return int(m.group(1)) * _UNITS_MS[m.group(2) or ""]
