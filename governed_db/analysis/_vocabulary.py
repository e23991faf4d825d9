"""The analyzer's vocabulary: statement kinds, dangerous functions, security settings.

Names only, no parsing: what ``StatementFacts.kinds`` can hold (policy files are checked against
it, see ``policy._names``), which functions reach outside the database, which settings change how
later statements are read.
"""

from __future__ import annotations

__all__ = ["DANGEROUS_FUNCTIONS", "DDL_KINDS", "READ_KINDS", "SECURITY_SETTINGS",
           "TRANSACTION_KINDS", "is_dangerous_function"]


# Functions that reach outside the database, control other backends, or run SQL hidden in a
# string. Matched on the unqualified, case-folded name (what libpg_query reports after
# U&"..." and quoting have been resolved).
DANGEROUS_FUNCTIONS = frozenset(
    {
        # file and program access
        "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_ls_logdir",
        "pg_ls_waldir", "pg_ls_tmpdir", "pg_ls_archive_statusdir", "pg_ls_logicalsnapdir",
        "pg_ls_logicalmapdir", "pg_ls_replslotdir", "pg_file_write", "pg_file_rename",
        "pg_file_unlink", "pg_file_sync", "pg_logdir_ls", "pg_current_logfile",
        # large objects (server-side file import/export)
        "lo_import", "lo_export", "lo_unlink", "lo_create", "lo_creat", "lo_open", "lo_put",
        "lo_get", "lo_from_bytea", "loread", "lowrite", "lo_truncate", "lo_truncate64",
        "lo_lseek", "lo_lseek64", "lo_tell", "lo_tell64", "lo_close",
        # settings changed from inside a query
        "set_config",
        # SQL carried in a string
        "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema",
        "table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema",
        "cursor_to_xml", "cursor_to_xmlschema", "schema_to_xml", "schema_to_xmlschema",
        "schema_to_xml_and_xmlschema", "database_to_xml", "database_to_xmlschema",
        "database_to_xml_and_xmlschema", "ts_stat", "ts_rewrite", "crosstab", "connectby",
        # backend and server control
        "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
        "pg_promote", "pg_log_backend_memory_contexts",
        # sleeps (denial of service by holding locks and connections)
        "pg_sleep", "pg_sleep_for", "pg_sleep_until",
        # sequences moved backwards break invariants
        "setval",
        # WAL and replication control
        "pg_switch_wal", "pg_create_restore_point", "pg_backup_start", "pg_backup_stop",
        "pg_start_backup", "pg_stop_backup", "pg_create_physical_replication_slot",
        "pg_create_logical_replication_slot", "pg_drop_replication_slot",
        "pg_replication_slot_advance", "pg_logical_emit_message", "pg_wal_replay_pause",
        "pg_wal_replay_resume", "pg_copy_physical_replication_slot",
        "pg_copy_logical_replication_slot", "pg_logical_slot_get_changes",
        "pg_logical_slot_peek_changes", "pg_logical_slot_get_binary_changes",
        "pg_logical_slot_peek_binary_changes", "pg_replication_origin_create",
        "pg_replication_origin_drop",
        # statistics resets
        "pg_stat_reset", "pg_stat_reset_shared", "pg_stat_reset_single_table_counters",
        "pg_stat_reset_single_function_counters", "pg_stat_reset_slru",
        "pg_stat_reset_replication_slot", "pg_stat_reset_subscription_stats",
        "pg_stat_statements_reset",
        # advisory locks held across statements (lock-out of other sessions)
        # (every blocking form; the pg_try_ forms never wait)
        "pg_advisory_lock", "pg_advisory_xact_lock", "pg_advisory_lock_shared",
        "pg_advisory_xact_lock_shared",
    }
)


_DANGEROUS_PREFIXES = ("dblink", "lo_", "pg_stat_reset", "pg_ls_", "pg_read_", "pg_file_")


def is_dangerous_function(name: str) -> bool:
    """Whether an unqualified, case-folded function name is on the dangerous list."""
    return name in DANGEROUS_FUNCTIONS or name.startswith(_DANGEROUS_PREFIXES)


# Settings whose change alters how later statements are lexed, which objects names resolve to,
# or which privileges and transaction modes apply.
SECURITY_SETTINGS = frozenset(
    {
        "standard_conforming_strings", "backslash_quote", "search_path", "role",
        "session_authorization", "transaction_read_only", "default_transaction_read_only",
        "session_replication_role", "row_security", "escape_string_warning",
        "client_encoding", "statement_timeout", "lock_timeout",
        "idle_in_transaction_session_timeout", "default_transaction_isolation",
        "transaction_isolation", "governed_db.identity", "application_name",
    }
)


DDL_KINDS = frozenset(
    {"CREATE", "ALTER", "DROP", "TRUNCATE", "GRANT", "REVOKE", "COMMENT", "REFRESH",
     "CLUSTER", "REINDEX", "SECURITY LABEL", "REASSIGN", "IMPORT", "VACUUM FULL", "CHECKPOINT",
     # a shared library's native code run inside the server process
     "LOAD"}
)


READ_KINDS = frozenset({"SELECT", "SHOW", "EXPLAIN", "EMPTY"})


TRANSACTION_KINDS = frozenset(
    {"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "ROLLBACK TO"}
)


_SIMPLE_KINDS = {
    "InsertStmt": "INSERT", "UpdateStmt": "UPDATE", "DeleteStmt": "DELETE",
    "MergeStmt": "MERGE", "TruncateStmt": "TRUNCATE", "LockStmt": "LOCK",
    "CommentStmt": "COMMENT", "ClusterStmt": "CLUSTER", "ReindexStmt": "REINDEX",
    "CheckPointStmt": "CHECKPOINT", "ListenStmt": "LISTEN", "NotifyStmt": "NOTIFY",
    "UnlistenStmt": "UNLISTEN", "LoadStmt": "LOAD", "DoStmt": "DO", "CallStmt": "CALL",
    "DiscardStmt": "DISCARD", "DeallocateStmt": "DEALLOCATE", "PrepareStmt": "PREPARE",
    "ExecuteStmt": "EXECUTE", "DeclareCursorStmt": "DECLARE", "ClosePortalStmt": "CLOSE",
    "VariableShowStmt": "SHOW", "ExplainStmt": "EXPLAIN", "CopyStmt": "COPY",
    "RefreshMatViewStmt": "REFRESH", "ReassignOwnedStmt": "REASSIGN", "DropOwnedStmt": "DROP",
    "DropdbStmt": "DROP", "DropRoleStmt": "DROP", "DropTableSpaceStmt": "DROP",
    "CreatedbStmt": "CREATE", "ViewStmt": "CREATE", "IndexStmt": "CREATE",
    "RuleStmt": "CREATE", "CreateTableAsStmt": "CREATE", "DefineStmt": "CREATE",
    "CompositeTypeStmt": "CREATE", "ConstraintsSetStmt": "SET", "SecLabelStmt": "SECURITY LABEL",
    "ImportForeignSchemaStmt": "IMPORT", "RenameStmt": "ALTER", "GrantRoleStmt": "GRANT",
    "AlterSystemStmt": "ALTER", "CreateSchemaStmt": "CREATE", "CreateFunctionStmt": "CREATE",
}


_TX_KINDS = {
    "TRANS_STMT_BEGIN": "BEGIN", "TRANS_STMT_START": "BEGIN", "TRANS_STMT_COMMIT": "COMMIT",
    "TRANS_STMT_ROLLBACK": "ROLLBACK", "TRANS_STMT_SAVEPOINT": "SAVEPOINT",
    "TRANS_STMT_RELEASE": "RELEASE", "TRANS_STMT_ROLLBACK_TO": "ROLLBACK TO",
    "TRANS_STMT_PREPARE": "PREPARE TRANSACTION", "TRANS_STMT_COMMIT_PREPARED": "COMMIT PREPARED",
    "TRANS_STMT_ROLLBACK_PREPARED": "ROLLBACK PREPARED",
}


_RELATION_OBJECTS = frozenset(
    {"OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_INDEX", "OBJECT_SEQUENCE",
     "OBJECT_FOREIGN_TABLE", "OBJECT_COLUMN"}
)
