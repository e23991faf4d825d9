"""Statement facts from PostgreSQL's own parser (libpg_query through pgparse).

The parse tree is walked as plain dicts, as pgparse returns it. Wrapped nodes look like
``{"SelectStmt": {...}}``; some fields hold bare nodes (``DeleteStmt.relation`` is a bare
RangeVar), which is why the walker dispatches on the key *and* falls back to generic recursion.

Why these rules (each checked against a real PostgreSQL 15, see ``shared/corpus``):

* kinds are what executes *now*: data-modifying CTEs even when unreferenced, the inner
  statement of ``EXPLAIN ANALYZE`` (never of a plain ``EXPLAIN``), ``COPY (query)``,
  ``CREATE TABLE AS``/``SELECT INTO``, ``EXECUTE`` of a statement prepared earlier in the
  same string. Stored bodies (views, rules, SQL-standard function bodies, ``PREPARE``) do not
  execute now, so they add no kind, read or write.
* functions are collected everywhere, stored bodies included: a dangerous call embedded in a
  view or a column default runs later, on someone else's behalf.
* anything the analyzer cannot see through (``DO``, ``CALL``, ``EXECUTE``/``FETCH`` of an
  object it did not see prepared/declared, unknown statement types) is marked ``opaque`` so
  that the policy fails closed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import attrs

Node = dict[str, Any]

__all__ = ["StatementFacts", "extract_facts", "DANGEROUS_FUNCTIONS", "is_dangerous_function"]


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
        "pg_advisory_lock", "pg_advisory_xact_lock",
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
     "CLUSTER", "REINDEX", "SECURITY LABEL", "REASSIGN", "IMPORT"}
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


@attrs.frozen(kw_only=True)
class CopyFacts:
    """What a COPY statement does: direction, endpoint and whether a query feeds it."""

    is_from: bool
    program: bool
    server_file: bool
    to_client: bool
    has_query: bool


@attrs.frozen(kw_only=True)
class StatementFacts:
    """Facts about one statement of a (possibly multi-statement) string.

    Attributes:
        kind: the top-level statement kind (``"SELECT"``, ``"DELETE"``, ``"EMPTY"``, ...).
        kinds: every kind that executes now (see the module docstring).
        writes / reads: relation names as written (``schema.rel`` when qualified).
        functions: every function called or embedded, case-folded and unqualified.
        unbounded_writes: targets of UPDATE/DELETE/MERGE without an effective condition.
        settings: ``(name, value-or-None)`` of every setting changed (``SET``, ``RESET``,
            transaction modes); ``"*"`` for ``RESET ALL``/``DISCARD ALL``.
        read_write_requested: a ``BEGIN``/``SET TRANSACTION`` asked for READ WRITE.
        opaque_reasons: why static analysis cannot know the effect (fail closed on these).
        prepares / executes / declares / fetches / closes / deallocates: names for
            session-state tracking, exactly as PostgreSQL's parser resolved them (quotes,
            case folding, truncation to 63 bytes); ``"*"`` for ``CLOSE ALL`` and
            ``DEALLOCATE ALL``.
        session_refs: ``(index into opaque_reasons, "prepared" | "cursor", name)`` for every
            EXECUTE/FETCH/MOVE of an object not prepared/declared earlier in the same
            string: what :func:`~governed_db.guardrails.effective_facts` resolves against the
            session, by the name from the parse tree (never parsed back out of a message).
        copy: COPY details, when the statement is a COPY.
        tree: the statement's parse tree (for lineage), not for mutation.
        text: the statement's own text, sliced from the string that was sent.
        effect_unknown: why the effect of a called function cannot be known (its body is
            opaque: another language, dynamic SQL); filled in with the catalog.
        calls_writing_function: a called user function may change data (body analysis).
        explain_analyze: an ``EXPLAIN (ANALYZE)`` that runs its statement (see
            ``policy_kinds``).
    """

    kind: str
    kinds: frozenset[str]
    writes: frozenset[str]
    reads: frozenset[str]
    functions: frozenset[str]
    unbounded_writes: frozenset[str]
    settings: tuple[tuple[str, str | None], ...]
    read_write_requested: bool
    opaque_reasons: tuple[str, ...]
    prepares: tuple[str, ...]
    executes: tuple[str, ...]
    declares: tuple[str, ...]
    fetches: tuple[str, ...]
    closes: tuple[str, ...]
    copy: CopyFacts | None
    tree: Node = attrs.field(eq=False, repr=False)
    text: str = attrs.field(repr=False)
    # (schema or "", name exactly as resolved by the parser) of every function call, and
    # (schema or "", symbol) of every operator: for the read-only allow-lists, which must
    # tell ``pg_catalog.lower`` from ``public.lower`` and ``"Lower"`` from ``lower``.
    function_refs: frozenset[tuple[str, str]] = frozenset()
    operators: frozenset[tuple[str, str]] = frozenset()
    # a set_config() whose setting name is not a constant (its effect cannot be judged)
    dynamic_settings: bool = False
    # unqualified names called as ``name(alias)``: PostgreSQL's functional notation for a
    # column (``ssn(u)`` is ``u.ssn``) when no function of that name exists
    column_notation: frozenset[str] = frozenset()
    effect_unknown: tuple[str, ...] = ()
    calls_writing_function: bool = False
    deallocates: tuple[str, ...] = ()
    session_refs: tuple[tuple[int, str, str], ...] = ()
    explain_analyze: bool = False

    @property
    def dangerous_functions(self) -> frozenset[str]:
        return frozenset(f for f in self.functions if is_dangerous_function(f))

    @property
    def has_unbounded_write(self) -> bool:
        return bool(self.unbounded_writes)

    @property
    def policy_kinds(self) -> frozenset[str]:
        """``kinds`` as allow-lists and approval rules see them: with ``"EXPLAIN ANALYZE"``
        when an EXPLAIN runs its statement (it reports actual row counts: not a plan only)."""
        return self.kinds | {"EXPLAIN ANALYZE"} if self.explain_analyze else self.kinds

    @property
    def opaque(self) -> bool:
        return bool(self.opaque_reasons)

    @property
    def is_ddl(self) -> bool:
        return bool(self.kinds & DDL_KINDS)

    @property
    def writes_data(self) -> bool:
        return bool(self.kinds - READ_KINDS - TRANSACTION_KINDS - {"EXPLAIN", "DECLARE",
                                                                    "FETCH", "CLOSE"})


class _Collector:
    __slots__ = (
        "kinds", "writes", "reads", "functions", "unbounded", "settings", "opaque",
        "prepares", "executes", "declares", "fetches", "closes", "copy", "rw",
        "prepared_here", "refs", "ops", "dynamic_settings", "colnot", "deallocates",
        "session_refs", "explain_analyze",
    )

    def __init__(self, prepared_here: dict[str, _Collector]) -> None:
        self.kinds: set[str] = set()
        self.writes: set[str] = set()
        self.reads: set[str] = set()
        self.functions: set[str] = set()
        self.unbounded: set[str] = set()
        self.settings: list[tuple[str, str | None]] = []
        self.opaque: list[str] = []
        self.prepares: list[str] = []
        self.executes: list[str] = []
        self.declares: list[str] = []
        self.fetches: list[str] = []
        self.closes: list[str] = []
        self.deallocates: list[str] = []
        self.session_refs: list[tuple[int, str, str]] = []
        self.copy: CopyFacts | None = None
        self.rw = False
        self.prepared_here = prepared_here
        self.refs: set[tuple[str, str]] = set()
        self.ops: set[tuple[str, str]] = set()
        self.dynamic_settings = False
        self.colnot: set[str] = set()
        self.explain_analyze = False

    def merge_calls(self, inner: _Collector) -> None:
        """Functions, operators and settings of an inner body count as this statement's."""
        if inner is self:
            return
        self.functions |= inner.functions
        self.refs |= inner.refs
        self.ops |= inner.ops
        self.colnot |= inner.colnot
        self.dynamic_settings = self.dynamic_settings or inner.dynamic_settings
        self.settings.extend(inner.settings)


def _sval(node: Any) -> str | None:
    """The string of a ``{"String": {"sval": ...}}`` node."""
    if isinstance(node, dict):
        s = node.get("String")
        if s is not None:
            return str(s.get("sval", ""))
    return None


def relname(rv: Node) -> str:
    """``schema.rel`` or ``rel`` of a bare RangeVar dict."""
    name = rv.get("relname", "")
    schema = rv.get("schemaname")
    return f"{schema}.{name}" if schema else str(name)


def _namelist(items: list[Any]) -> str:
    return ".".join(s for s in (_sval(i) for i in items) if s is not None)


def funcname(fc: Node) -> str:
    """Case-folded unqualified name of a FuncCall (quoted names are already resolved)."""
    parts = [s for s in (_sval(n) for n in fc.get("funcname", ())) if s is not None]
    return parts[-1].lower() if parts else ""


def strip_locations(node: Any) -> str:
    """A canonical text of a subtree without source positions (for structural equality)."""

    def clean(n: Any) -> Any:
        if isinstance(n, dict):
            return {k: clean(v) for k, v in n.items() if k != "location"}
        if isinstance(n, list):
            return [clean(v) for v in n]
        return n

    return json.dumps(clean(node), sort_keys=True)


# ---------------------------------------------------------------------------------------------
# constant folding for "is this WHERE clause a tautology"


def _const_bool(node: Any) -> bool | None:
    """Truth value of a constant expression, or None when it depends on data."""
    if not isinstance(node, dict) or len(node) != 1:
        return None
    (typ, body), = node.items()
    if typ == "A_Const":
        if "boolval" in body:
            return bool(body["boolval"].get("boolval", False))
        if "sval" in body:
            text = str(body["sval"].get("sval", "")).strip().lower()
            if text in ("t", "true", "y", "yes", "on", "1"):
                return True
            if text in ("f", "false", "n", "no", "off", "0"):
                return False
        return None
    if typ == "TypeCast":
        names = [_sval(n) for n in body.get("typeName", {}).get("names", ())]
        if names and names[-1] in ("bool", "boolean"):
            arg = body.get("arg")
            if isinstance(arg, dict) and "A_Const" in arg:
                c = arg["A_Const"]
                if "ival" in c:
                    return bool(c["ival"].get("ival", 0))
            return _const_bool(arg)
        return None
    if typ == "BoolExpr":
        op = body.get("boolop")
        vals = [_const_bool(a) for a in body.get("args", ())]
        if op == "NOT_EXPR":
            return None if vals[0] is None else not vals[0]
        if op == "AND_EXPR":
            if any(v is False for v in vals):
                return False
            return True if all(v is True for v in vals) else None
        if op == "OR_EXPR":
            if any(v is True for v in vals):
                return True
            return False if all(v is False for v in vals) else None
        return None
    if typ == "A_Expr":
        kind = body.get("kind")
        left, right = body.get("lexpr"), body.get("rexpr")
        op = _sval((body.get("name") or [None])[0])
        same = left is not None and strip_locations(left) == strip_locations(right)
        if kind == "AEXPR_NOT_DISTINCT" and same:
            return True
        if kind == "AEXPR_DISTINCT" and same:
            return False
        if kind == "AEXPR_OP" and op in ("=", "<=", ">=", "<>", "!=", "<", ">"):
            if same:
                # x = x is true for every non-NULL x; the corpus counts it as no filter.
                return op in ("=", "<=", ">=")
            lv, rv = _literal(left), _literal(right)
            if lv is not None and rv is not None:
                try:
                    return {"=": lv == rv, "<>": lv != rv, "!=": lv != rv, "<=": lv <= rv,
                            ">=": lv >= rv, "<": lv < rv, ">": lv > rv}[op]
                except TypeError:
                    return None
        return None
    if typ == "NullTest":
        arg = body.get("arg")
        if isinstance(arg, dict) and "A_Const" in arg:
            is_null = bool(arg["A_Const"].get("isnull"))
            want_null = body.get("nulltesttype") == "IS_NULL"
            return is_null == want_null
        return None
    if typ == "BooleanTest":
        v = _const_bool(body.get("arg"))
        if v is None:
            return None
        return {"IS_TRUE": v, "IS_NOT_FALSE": v, "IS_FALSE": not v,
                "IS_NOT_TRUE": not v}.get(body.get("booltesttype", ""), None)
    if typ == "SubLink" and body.get("subLinkType") == "EXISTS_SUBLINK":
        sub = body.get("subselect", {}).get("SelectStmt", {})
        if not sub.get("fromClause") and not sub.get("whereClause") and not sub.get("havingClause"):
            return True
        return None
    return None


def _literal(node: Any) -> Any:
    if isinstance(node, dict) and "A_Const" in node:
        c = node["A_Const"]
        for key in ("ival", "fval", "sval", "boolval"):
            if key in c:
                inner = c[key]
                v = inner.get(key, 0 if key == "ival" else (False if key == "boolval" else ""))
                return float(v) if key == "fval" else v
    if isinstance(node, dict) and "TypeCast" in node:
        return _literal(node["TypeCast"].get("arg"))
    return None


def is_effective_where(where: Any) -> bool:
    """Whether a WHERE clause can limit the rows touched (False for none or a tautology)."""
    return where is not None and _const_bool(where) is not True


# ---------------------------------------------------------------------------------------------
# the walk


# Node types that can hold no table, function or statement: not descended into. (The most
# frequent nodes of any query; pruning them halves the walk.)
_LEAVES = frozenset({"A_Const", "ColumnRef", "ParamRef", "TypeName", "String", "Integer",
                     "Float", "Boolean", "BitString", "A_Star", "SetToDefault"})


def _walk(node: Any, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    """Visit any subtree. ``now`` is False inside stored bodies (views, rules, PREPARE)."""
    if isinstance(node, list):
        for item in node:
            _walk(item, c, now, ctes)
        return
    if not isinstance(node, dict):
        return
    if len(node) == 1:
        (typ, body), = node.items()
        if typ in _LEAVES:
            return
        if isinstance(body, dict) and typ[:1].isupper():
            handler = _HANDLERS.get(typ)
            if handler is not None:
                handler(body, c, now, ctes)
                return
            _walk_fields(body, c, now, ctes)
            return
    if "funcname" in node:  # bare FuncCall (CallStmt.funccall)
        _func_call(node, c, now, ctes)
        return
    if "relname" in node:  # bare RangeVar in an expression context: a data source
        _range_var(node, c, now, ctes)
        return
    _walk_fields(node, c, now, ctes)


def _const_str(arg: Any) -> str | None:
    """The value of a constant string argument (``'x'``, ``'x'::text``), else None."""
    if isinstance(arg, dict) and "TypeCast" in arg:
        arg = arg["TypeCast"].get("arg")
    if isinstance(arg, dict) and "A_Const" in arg and "sval" in arg["A_Const"]:
        return str(arg["A_Const"]["sval"].get("sval", ""))
    return None


def _sql_in_string(arg: Any, writes: bool, c: _Collector, *, now: bool = True) -> None:
    """Merge what a constant SQL string argument does (query_to_xml, dblink_exec, ts_stat).

    Why: such a function runs the string as a statement, so the string's reads, writes and
    calls are the caller's. A non-constant string cannot be judged: opaque (denied).
    ``now`` False (a view or default body): the string's calls count, its effects do not.
    """
    sql = _const_str(arg)
    if sql is None:
        c.opaque.append("SQL passed to a function in a non-constant string")
        return
    import pgparse  # local: keeps the module importable for docs without the extension

    try:
        parsed = pgparse.parse(sql)
    except Exception:  # noqa: BLE001 - the server would reject it too; nothing to merge
        if sql.strip():
            # Not SQL to us but maybe to the server (another grammar version): fail closed.
            c.opaque.append("SQL passed to a function that the analyzer cannot parse")
        return
    for raw in parsed:
        inner = _Collector({})
        stmt = raw.get("stmt", {})
        _walk(stmt, inner, True, frozenset())
        c.merge_calls(inner)
        c.opaque.extend(inner.opaque)
        if not now:
            continue
        if "SelectStmt" in stmt:
            inner.kinds.add("SELECT")
        c.reads |= inner.reads
        if inner.kinds - {"SELECT"}:
            # query_to_xml('DELETE ...') runs the DELETE too: count it whatever the function
            writes = True
        if writes:
            if "SelectStmt" in stmt:
                inner.kinds.add("SELECT")
            c.kinds |= inner.kinds
            c.writes |= inner.writes
            c.unbounded |= inner.unbounded


def _walk_fields(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    for value in body.values():
        if isinstance(value, (dict, list)):
            _walk(value, c, now, ctes)


def _range_var(rv: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    name = relname(rv)
    if now and not (not rv.get("schemaname") and name in ctes):
        c.reads.add(name)


# Functions that run SQL given to them as a string (found in pg_proc by argument names and
# the docs; extensions dblink and tablefunc included): which arguments hold SQL. "*" means
# every argument (crosstab's source and category queries); "last" the last argument that is
# not a boolean or number (every dblink overload puts the SQL after the connection and cursor
# names and before an optional fail_on_error flag).
_SQL_IN_STRING: dict[str, tuple[int, ...] | str] = {
    "query_to_xml": (0,), "query_to_xmlschema": (0,), "query_to_xml_and_xmlschema": (0,),
    "ts_stat": (0,), "crosstab": "*", "dblink": "last", "dblink_exec": "last",
    "dblink_open": "last", "dblink_send_query": "last",
}
# Functions that read a whole relation named by an argument: a read of that relation.
_RELATION_ARG = {"table_to_xml": 0, "table_to_xmlschema": 0, "table_to_xml_and_xmlschema": 0,
                 "connectby": 0}
# Functions whose rows come from state the analyzer cannot see (a cursor's query, a whole
# schema or database): opaque for every identity.
_OPAQUE_CALLS = {
    "cursor_to_xml": "cursor_to_xml reads a cursor's rows past column masking",
    "cursor_to_xmlschema": "cursor_to_xmlschema reads a cursor's definition",
    "schema_to_xml": "schema_to_xml reads every table of a schema",
    "schema_to_xmlschema": "schema_to_xmlschema reads every table of a schema",
    "schema_to_xml_and_xmlschema": "schema_to_xml_and_xmlschema reads every table of a schema",
    "database_to_xml": "database_to_xml reads every table of the database",
    "database_to_xmlschema": "database_to_xmlschema reads every table of the database",
    "database_to_xml_and_xmlschema": "database_to_xml_and_xmlschema reads every table",
    "xpath_table": "xpath_table builds SQL from its arguments",
}
_BETWEEN_OPS = (">=", "<=")


def _func_call(fc: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    parts = [s for s in (_sval(n) for n in fc.get("funcname", ())) if s is not None]
    name = parts[-1].lower() if parts else ""
    if name:
        c.functions.add(name)
        c.refs.add((parts[-2] if len(parts) > 1 else "", parts[-1]))
        args = fc.get("args") or ()
        if len(parts) == 1 and len(args) == 1 and not fc.get("agg_star"):
            ref = args[0].get("ColumnRef") if isinstance(args[0], dict) else None
            if ref is not None and len(ref.get("fields") or ()) == 1:
                c.colnot.add(parts[0])
        spec = _SQL_IN_STRING.get(name)
        if spec is not None:
            # Stored bodies (views, defaults) run this later, for someone else: the string's
            # calls count now too; its kinds, reads and writes only when it runs now.
            if spec == "*":
                for arg in args:
                    if not _is_plain_literal(arg) or _const_str(arg) is not None:
                        _sql_in_string(arg, True, c, now=now)
            elif spec == "last":
                texts = [a for a in args if not _is_plain_literal(a) or _const_str(a) is not None]
                if texts:
                    _sql_in_string(texts[-1], True, c, now=now)
            else:
                for i in spec:
                    if len(args) > i:
                        _sql_in_string(args[i], False, c, now=now)
        elif name == "ts_rewrite" and len(args) == 2:
            _sql_in_string(args[1], False, c, now=now)  # ts_rewrite(tsquery, sql text)
        elif name in _RELATION_ARG and len(args) > _RELATION_ARG[name]:
            rel = _const_str(args[_RELATION_ARG[name]])
            if rel is None:
                c.opaque.append(f"{name} of a relation named by a non-constant argument")
            elif now:
                c.reads.add(_regclass_name(rel))
        elif name in _OPAQUE_CALLS:
            c.opaque.append(_OPAQUE_CALLS[name])
        elif name == "set_config":
            # set_config(name, value, is_local) is a SET: the settings rules judge it.
            setting = _const_str(args[0]) if args else None
            if setting is None:
                c.dynamic_settings = True
            else:
                c.settings.append((setting.strip().lower(),
                                   _const_str(args[1]) if len(args) > 1 else None))
    _walk_fields({k: v for k, v in fc.items() if k != "funcname"}, c, now, ctes)


def _is_plain_literal(arg: Any) -> bool:
    """A constant that is not a string (a boolean, a number): cannot be SQL."""
    if isinstance(arg, dict) and "TypeCast" in arg:
        arg = arg["TypeCast"].get("arg")
    return isinstance(arg, dict) and "A_Const" in arg


def _regclass_name(text: str) -> str:
    """``schema.rel`` of a regclass literal (``'"Users"'``, ``'public.users'``)."""
    out, cur, quoted, i = [], "", False, 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == '"' and text[i + 1:i + 2] == '"':
                cur += '"'
                i += 1
            elif ch == '"':
                quoted = False
            else:
                cur += ch
        elif ch == '"':
            quoted = True
        elif ch == ".":
            out.append(cur)
            cur = ""
        elif not ch.isspace():
            cur += ch.lower()
        i += 1
    out.append(cur)
    return ".".join(out[-2:])


def _operator(names: Any, c: _Collector, kind: str = "") -> None:
    parts = [s for s in (_sval(n) for n in names or ()) if s is not None]
    if not parts:
        return
    schema = parts[-2] if len(parts) > 1 else ""
    if "BETWEEN" in kind:  # BETWEEN x AND y is >= and <=
        for op in _BETWEEN_OPS:
            c.ops.add((schema, op))
        return
    c.ops.add((schema, parts[-1]))


def _h_aexpr(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    _operator(body.get("name"), c, str(body.get("kind", "")))
    _walk_fields(body, c, now, ctes)


def _h_sublink(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    _operator(body.get("operName"), c)
    _walk_fields(body, c, now, ctes)


def _h_sortby(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    _operator(body.get("useOp"), c)
    _walk_fields(body, c, now, ctes)


def _with(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> frozenset[str]:
    wc = body.get("withClause")
    if not wc:
        return ctes
    items = wc.get("WithClause", wc).get("ctes", ())
    names = set(ctes)
    for item in items:
        cte = item.get("CommonTableExpr", {})
        names.add(cte.get("ctename", ""))
    scope = frozenset(names)
    for item in items:
        cte = item.get("CommonTableExpr", {})
        # A data-modifying CTE executes even when nothing references it.
        _walk(cte.get("ctequery"), c, now, scope)
    return scope


def _h_select(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    scope = _with(body, c, now, ctes)
    into = body.get("intoClause")
    if into and now:
        c.kinds.add("CREATE")
        c.writes.add(relname(into.get("rel", {})))
    for key, value in body.items():
        if key in ("withClause", "intoClause"):
            continue
        if isinstance(value, (dict, list)):
            _walk(value, c, now, scope)


def _dml(kind: str, target_key: str) -> Any:
    def handler(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
        scope = _with(body, c, now, ctes)
        target = body.get(target_key, {})
        if now:
            c.kinds.add(kind)
            c.writes.add(relname(target))
            if kind in ("UPDATE", "DELETE") and not is_effective_where(body.get("whereClause")):
                c.unbounded.add(relname(target))
            if kind == "MERGE" and _const_bool(body.get("joinCondition")) is True:
                for w in body.get("mergeWhenClauses", ()):
                    clause = w.get("MergeWhenClause", {})
                    if (clause.get("matchKind") == "MERGE_WHEN_MATCHED"
                            and clause.get("commandType") in ("CMD_UPDATE", "CMD_DELETE")):
                        c.unbounded.add(relname(target))
        for key, value in body.items():
            if key in ("withClause", target_key):
                continue
            if isinstance(value, (dict, list)):
                _walk(value, c, now, scope)

    return handler


def _h_explain(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    if now:
        c.kinds.add("EXPLAIN")
    analyze = False
    for opt in body.get("options", ()):
        d = opt.get("DefElem", {})
        if d.get("defname") == "analyze":
            arg = d.get("arg")
            analyze = True if arg is None else _def_bool(arg)
    # EXPLAIN without ANALYZE plans but never runs its statement. With ANALYZE it runs it and
    # reports what happened (actual row counts, loops, rows removed): a kind of its own, so an
    # allow-list that names only "EXPLAIN" does not let it run.
    if now and analyze:
        c.explain_analyze = True
    _walk(body.get("query"), c, now and analyze, ctes)


def _def_bool(arg: Any) -> bool:
    s = _sval(arg)
    if s is not None:
        return s.lower() in ("true", "on", "1", "yes", "t", "y")
    v = _const_bool(arg)
    if v is not None:
        return v
    lit = _literal(arg)
    return bool(lit) if lit is not None else True


def _h_copy(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    if now:
        c.kinds.add("COPY")
    is_from = bool(body.get("is_from"))
    program = bool(body.get("is_program"))
    filename = body.get("filename")
    query = body.get("query")
    c.copy = CopyFacts(
        is_from=is_from, program=program, server_file=bool(filename) and not program,
        to_client=not filename and not program, has_query=query is not None,
    )
    if query is not None:
        if now and "SelectStmt" in query:
            c.kinds.add("SELECT")
        _walk(query, c, now, ctes)
    rel = body.get("relation")
    if rel and now:
        (c.writes if is_from else c.reads).add(relname(rel))
    _walk(body.get("whereClause"), c, now, ctes)


def _h_ctas(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    into = body.get("into", {})
    runs = now and not into.get("skipData")
    if now:
        c.kinds.add("CREATE")
        c.writes.add(relname(into.get("rel", {})))
    query = body.get("query")
    if runs and isinstance(query, dict) and "SelectStmt" in query:
        c.kinds.add("SELECT")
    _walk(query, c, runs, ctes)


def _stored(kind: str, rel_key: str | None, body_keys: tuple[str, ...] = ()) -> Any:
    """DDL that stores a body: the body adds functions but no kinds, reads or writes."""

    def handler(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
        if now:
            c.kinds.add(kind)
            if rel_key and isinstance(body.get(rel_key), dict):
                c.writes.add(relname(body[rel_key]))
        for key, value in body.items():
            if key == rel_key:
                continue
            if isinstance(value, (dict, list)):
                _walk(value, c, False if key in body_keys or not body_keys else now, ctes)

    return handler


def _h_relations(kind: str, key: str) -> Any:
    def handler(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
        if now:
            c.kinds.add(kind)
            for item in body.get(key, ()) or ():
                rv = item.get("RangeVar", item) if isinstance(item, dict) else {}
                if "VacuumRelation" in rv:
                    rv = rv["VacuumRelation"].get("relation", {})
                if "relname" in rv:
                    c.writes.add(relname(rv))
        for k, value in body.items():
            if k != key and isinstance(value, (dict, list)):
                _walk(value, c, now, ctes)

    return handler


def _h_vacuum(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    _h_relations("VACUUM" if body.get("is_vacuumcmd") else "ANALYZE", "rels")(body, c, now, ctes)


def _h_drop(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    if now:
        c.kinds.add("DROP")
        if body.get("removeType") in _RELATION_OBJECTS:
            for obj in body.get("objects", ()):
                items = obj.get("List", {}).get("items", ())
                c.writes.add(_namelist(items))


def _h_grant(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    if now:
        c.kinds.add("GRANT" if body.get("is_grant") else "REVOKE")
        if body.get("objtype") in _RELATION_OBJECTS and body.get("targtype") == "ACL_TARGET_OBJECT":
            for obj in body.get("objects", ()):
                rv = obj.get("RangeVar", obj)
                if "relname" in rv:
                    c.writes.add(relname(rv))


def _h_comment(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    if now:
        c.kinds.add("COMMENT")
        if body.get("objtype") in _RELATION_OBJECTS:
            items = body.get("object", {}).get("List", {}).get("items", ())
            name = _namelist(items)
            if body.get("objtype") == "OBJECT_COLUMN":
                name = name.rsplit(".", 1)[0]
            if name:
                c.writes.add(name)


def _h_rename(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    if now:
        c.kinds.add("ALTER")
        rel = body.get("relation")
        if isinstance(rel, dict) and "relname" in rel:
            c.writes.add(relname(rel))


def _h_alter_table(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    if now:
        c.kinds.add("ALTER")
        rel = body.get("relation")
        if isinstance(rel, dict):
            c.writes.add(relname(rel))
    # Column defaults added now are evaluated for existing rows now: walk them "now".
    _walk(body.get("cmds"), c, now, ctes)


def _h_tx(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    kind = _TX_KINDS.get(body.get("kind", ""), "TRANSACTION")
    if now:
        c.kinds.add(kind)
    _tx_options(body.get("options", ()), c, "transaction_read_only")


def _tx_options(options: Any, c: _Collector, setting: str) -> None:
    for opt in options or ():
        d = opt.get("DefElem", {})
        name = d.get("defname", "")
        value = _literal(d.get("arg"))
        if name == "transaction_read_only":
            c.settings.append((setting, str(value)))
            if not value:
                c.rw = True
        elif name:
            c.settings.append((name, None if value is None else str(value)))


def _h_set(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    kind = body.get("kind", "")
    name = str(body.get("name", "")).lower()
    c.kinds.add("RESET" if kind.startswith("VAR_RESET") else "SET")
    if kind == "VAR_RESET_ALL":
        c.settings.append(("*", None))
    elif kind == "VAR_SET_MULTI":
        target = ("default_transaction_read_only" if name == "session characteristics"
                  else "transaction_read_only")
        _tx_options(body.get("args", ()), c, target)
    else:
        args = body.get("args") or ()
        value = ",".join(str(_literal(a)) for a in args) if args else None
        c.settings.append((name, value))
    _walk(body.get("args"), c, now, ctes)


def _h_discard(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    c.kinds.add("DISCARD")
    if body.get("target") == "DISCARD_ALL":
        c.settings.append(("*", None))


def _h_prepare(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    if now:
        c.kinds.add("PREPARE")
    name = str(body.get("name", ""))
    c.prepares.append(name)
    inner = _Collector({})
    query = body.get("query")
    if isinstance(query, dict) and "SelectStmt" in query:
        inner.kinds.add("SELECT")
    _walk(query, inner, True, ctes)
    c.prepared_here[name] = inner
    c.merge_calls(inner)


def _h_execute(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    if now:
        c.kinds.add("EXECUTE")
    name = str(body.get("name", ""))
    c.executes.append(name)
    inner = c.prepared_here.get(name)
    if inner is None:
        # Resolved against the session by this name (effective_facts); the message is text
        # for people only.
        c.session_refs.append((len(c.opaque), "prepared", name))
        c.opaque.append(f"EXECUTE of {name!r}, which was not prepared in this string")
    elif now:
        c.kinds |= inner.kinds
        c.writes |= inner.writes
        c.reads |= inner.reads
        c.unbounded |= inner.unbounded
    _walk(body.get("params"), c, now, ctes)


def _h_declare(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    if now:
        c.kinds.add("DECLARE")
    name = str(body.get("portalname", ""))
    c.declares.append(name)
    # The query runs as rows are fetched: its reads and functions count from now on.
    inner = _Collector({})
    _walk(body.get("query"), inner, True, ctes)
    inner.kinds.add("SELECT")
    c.prepared_here["\0cursor:" + name] = inner
    c.reads |= inner.reads
    c.merge_calls(inner)


def _h_fetch(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    if now:
        c.kinds.add("MOVE" if body.get("ismove") else "FETCH")
    name = str(body.get("portalname", ""))
    c.fetches.append(name)
    inner = c.prepared_here.get("\0cursor:" + name)
    if inner is None:
        c.session_refs.append((len(c.opaque), "cursor", name))
        c.opaque.append(f"FETCH from cursor {name!r}, which was not declared in this string")
    elif now:
        c.kinds |= inner.kinds
        c.reads |= inner.reads


def _h_close(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    c.kinds.add("CLOSE")
    name = body.get("portalname")
    if name is None:  # CLOSE ALL
        c.closes.append("*")
        for key in [k for k in c.prepared_here if k.startswith("\0cursor:")]:
            del c.prepared_here[key]
    else:
        c.closes.append(str(name))
        c.prepared_here.pop("\0cursor:" + str(name), None)


def _h_deallocate(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    c.kinds.add("DEALLOCATE")
    name = body.get("name")
    if body.get("isall") or name is None:
        c.deallocates.append("*")
        for key in [k for k in c.prepared_here if not k.startswith("\0cursor:")]:
            del c.prepared_here[key]
    else:
        c.deallocates.append(str(name))
        c.prepared_here.pop(str(name), None)


def _h_opaque(kind: str, why: str) -> Any:
    def handler(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
        if now:
            c.kinds.add(kind)
            c.opaque.append(why)
        _walk_fields(body, c, now, ctes)

    return handler


# PL/pgSQL constructs a DO body may use and still be judged by what it does (an allow-list):
# blocks, variables, assignments, control flow, RAISE/ASSERT, GET DIAGNOSTICS, exception
# handlers and embedded static SQL (analyzed as the DO's own statements). Anything else —
# dynamic EXECUTE, cursors (OPEN/FETCH/MOVE/CLOSE), CALL, COMMIT/ROLLBACK, a node type this
# list does not name — leaves the block opaque, as before.
_PLPGSQL_UNDERSTOOD = frozenset({
    "PLpgSQL_function", "PLpgSQL_stmt_block", "PLpgSQL_exception_block", "PLpgSQL_exception",
    "PLpgSQL_condition", "PLpgSQL_var", "PLpgSQL_rec", "PLpgSQL_row", "PLpgSQL_recfield",
    "PLpgSQL_type", "PLpgSQL_expr", "PLpgSQL_stmt_assign", "PLpgSQL_stmt_if",
    "PLpgSQL_if_elsif", "PLpgSQL_stmt_case", "PLpgSQL_case_when", "PLpgSQL_stmt_loop",
    "PLpgSQL_stmt_while", "PLpgSQL_stmt_fori", "PLpgSQL_stmt_fors", "PLpgSQL_stmt_foreach_a",
    "PLpgSQL_stmt_exit", "PLpgSQL_stmt_return", "PLpgSQL_stmt_raise", "PLpgSQL_raise_option",
    "PLpgSQL_stmt_assert", "PLpgSQL_stmt_perform", "PLpgSQL_stmt_execsql",
    "PLpgSQL_stmt_getdiag", "PLpgSQL_diag_item"})
_DO_OPAQUE = "DO runs procedural code the analyzer cannot see"


def _h_do(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    """``DO``: a PL/pgSQL body made only of understood constructs (_PLPGSQL_UNDERSTOOD) is
    judged by what it does — its embedded SQL counts as the DO's own reads, writes, calls
    and statement kinds. Any other body (another language, a construct not on the list, a
    parse failure) stays opaque: fail closed."""
    if now:
        c.kinds.add("DO")
    opts = {str(d["DefElem"].get("defname")): d["DefElem"].get("arg")
            for d in body.get("args") or () if isinstance(d, dict) and "DefElem" in d}
    src = _defelem_str(opts.get("as"))
    lang = _defelem_str(opts.get("language")) if "language" in opts else "plpgsql"
    queries = None if src is None or (lang or "").lower() != "plpgsql" else _plpgsql_sql(src)
    if queries is None:
        if now:
            c.opaque.append(_DO_OPAQUE)
        return
    import pgparse

    for text in queries:
        try:
            parsed = pgparse.parse(text)
        except Exception:  # noqa: BLE001 - not SQL to us: we cannot know what it does
            c.opaque.append(_DO_OPAQUE)
            return
        for raw in parsed:
            _walk(raw.get("stmt", {}), c, now, ctes)


def _defelem_str(arg: Any) -> str | None:
    if isinstance(arg, dict) and isinstance(arg.get("String"), dict):
        return str(arg["String"].get("sval", ""))
    return None


def _plpgsql_sql(src: str) -> list[str] | None:
    """The SQL texts of a PL/pgSQL body (statements, and expressions as SELECTs), or None
    when the body uses anything not on the allow-list or does not parse."""
    import pgparse

    tag = "$gdb_do$"
    if tag in src:
        return None
    try:
        tree = pgparse.parse_pgsql(
            f"CREATE FUNCTION gdb_do() RETURNS void LANGUAGE plpgsql AS {tag}{src}{tag}")
    except Exception:  # noqa: BLE001 - fail closed: an unparsed body may do anything
        return None
    out: list[str] = []
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            if key.startswith("PLpgSQL_"):
                if key not in _PLPGSQL_UNDERSTOOD:
                    return None
                if key == "PLpgSQL_expr":
                    if not isinstance(value, dict):
                        return None
                    query = str(value.get("query", ""))
                    mode = int(value.get("parseMode", 0) or 0)
                    if mode >= 3:  # an assignment: target := expression
                        for sep in (":=", "="):
                            if sep in query:
                                query = query.split(sep, 1)[1]
                                break
                    out.append(query if mode == 0 else "SELECT " + query)
                    continue
            if isinstance(value, (dict, list)):
                stack.append(value)
    return out


def _h_simple(kind: str) -> Any:
    def handler(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
        if now:
            c.kinds.add(kind)
        _walk_fields(body, c, now, ctes)

    return handler


def _h_funccall(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    _func_call(body, c, now, ctes)


def _h_rangevar(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    _range_var(body, c, now, ctes)


_HANDLERS: dict[str, Any] = {
    "SelectStmt": _h_select,
    "InsertStmt": _dml("INSERT", "relation"),
    "UpdateStmt": _dml("UPDATE", "relation"),
    "DeleteStmt": _dml("DELETE", "relation"),
    "MergeStmt": _dml("MERGE", "relation"),
    "ExplainStmt": _h_explain,
    "CopyStmt": _h_copy,
    "CreateTableAsStmt": _h_ctas,
    "ViewStmt": _stored("CREATE", "view", ("query",)),
    "RuleStmt": _stored("CREATE", "relation", ("actions", "whereClause")),
    "CreateFunctionStmt": _stored("CREATE", None),
    "CreateTrigStmt": _stored("CREATE", "relation", ("whenClause",)),
    "IndexStmt": _stored("CREATE", "relation", ("indexParams", "whereClause")),
    "CreateStmt": _stored("CREATE", "relation", ("tableElts", "constraints")),
    "AlterTableStmt": _h_alter_table,
    "RenameStmt": _h_rename,
    "DropStmt": _h_drop,
    "TruncateStmt": _h_relations("TRUNCATE", "relations"),
    "LockStmt": _h_relations("LOCK", "relations"),
    "ClusterStmt": _stored("CLUSTER", "relation", ("indexname",)),
    "ReindexStmt": _stored("REINDEX", "relation", ("name",)),
    "RefreshMatViewStmt": _stored("REFRESH", "relation", ("options",)),
    "VacuumStmt": _h_vacuum,
    "GrantStmt": _h_grant,
    "CommentStmt": _h_comment,
    "TransactionStmt": _h_tx,
    "VariableSetStmt": _h_set,
    "DiscardStmt": _h_discard,
    "PrepareStmt": _h_prepare,
    "ExecuteStmt": _h_execute,
    "DeclareCursorStmt": _h_declare,
    "FetchStmt": _h_fetch,
    "ClosePortalStmt": _h_close,
    "DeallocateStmt": _h_deallocate,
    "DoStmt": _h_do,
    "CallStmt": _h_opaque("CALL", "CALL runs a procedure body the analyzer cannot see"),
    "FuncCall": _h_funccall,
    "RangeVar": _h_rangevar,
    "A_Expr": _h_aexpr,
    "SubLink": _h_sublink,
    "SortBy": _h_sortby,
}
for _typ, _kind in _SIMPLE_KINDS.items():
    _HANDLERS.setdefault(_typ, _h_simple(_kind))


def _kind_of(typ: str) -> str:
    if typ in _SIMPLE_KINDS:
        return _SIMPLE_KINDS[typ]
    for prefix, kind in (("Create", "CREATE"), ("Alter", "ALTER"), ("Drop", "DROP")):
        if typ.startswith(prefix):
            return kind
    return ""


_TOP_KINDS = {
    "SelectStmt": "SELECT", "InsertStmt": "INSERT", "UpdateStmt": "UPDATE",
    "DeleteStmt": "DELETE", "MergeStmt": "MERGE", "AlterTableStmt": "ALTER",
    "DropStmt": "DROP", "CreateStmt": "CREATE", "CreateTrigStmt": "CREATE",
}


def _top_kind(typ: str, body: Node) -> str:
    """The kind of the statement itself (not of what it runs inside)."""
    if typ == "TransactionStmt":
        return _TX_KINDS.get(body.get("kind", ""), "TRANSACTION")
    if typ == "VariableSetStmt":
        return "RESET" if str(body.get("kind", "")).startswith("VAR_RESET") else "SET"
    if typ == "GrantStmt":
        return "GRANT" if body.get("is_grant") else "REVOKE"
    if typ == "VacuumStmt":
        return "VACUUM" if body.get("is_vacuumcmd") else "ANALYZE"
    if typ == "FetchStmt" and body.get("ismove"):
        return "MOVE"
    return _TOP_KINDS.get(typ) or _kind_of(typ) or "UNKNOWN"


def extract_facts(raw: dict[str, Any], text: str) -> StatementFacts:
    """Facts of one raw statement as returned by ``pgparse.parse`` (one list item)."""
    return _extract(raw, text, {})


def _extract(raw: dict[str, Any], text: str, prepared: dict[str, _Collector]) -> StatementFacts:
    stmt = raw.get("stmt", {})
    (typ, body), = stmt.items() if stmt else (("EmptyStmt", {}),)
    c = _Collector(prepared)
    known = typ in _HANDLERS or bool(_kind_of(typ))
    if typ in _HANDLERS:
        if typ == "SelectStmt":
            c.kinds.add("SELECT")
        _HANDLERS[typ](body, c, True, frozenset())
    elif known:
        c.kinds.add(_kind_of(typ))
        _walk_fields_generic_ddl(typ, body, c)
    else:
        c.kinds.add("UNKNOWN")
        c.opaque.append(f"statement type {typ} is not understood by the analyzer")
        _walk_fields(body, c, False, frozenset())
    kind = _top_kind(typ, body)
    return StatementFacts(
        kind=kind, kinds=frozenset(c.kinds), writes=frozenset(c.writes),
        reads=frozenset(c.reads), functions=frozenset(c.functions),
        unbounded_writes=frozenset(c.unbounded), settings=tuple(c.settings),
        read_write_requested=c.rw, opaque_reasons=tuple(c.opaque), prepares=tuple(c.prepares),
        executes=tuple(c.executes), declares=tuple(c.declares), fetches=tuple(c.fetches),
        closes=tuple(c.closes), copy=c.copy, tree=stmt, text=text,
        function_refs=frozenset(c.refs), operators=frozenset(c.ops),
        dynamic_settings=c.dynamic_settings, column_notation=frozenset(c.colnot),
        deallocates=tuple(c.deallocates), session_refs=tuple(c.session_refs),
        explain_analyze=c.explain_analyze,
    )


def _walk_fields_generic_ddl(typ: str, body: Node, c: _Collector) -> None:
    # Other CREATE/ALTER/DROP statements: their relation (if any) is written; bodies stored.
    rel = body.get("relation")
    if isinstance(rel, dict) and "relname" in rel:
        c.writes.add(relname(rel))
    _walk_fields(body, c, False, frozenset())


def split_statements(sql: str, parsed: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], str]]:
    """Pair each parsed statement with its own text (positions are in bytes of UTF-8)."""
    data = sql.encode("utf-8")
    for raw in parsed:
        start = int(raw.get("stmt_location", 0))
        length = raw.get("stmt_len")
        end = len(data) if length is None or length == 0 else start + int(length)
        yield raw, data[start:end].decode("utf-8", "replace").strip()


def extract_all(sql: str, parsed: list[dict[str, Any]]) -> tuple[StatementFacts, ...]:
    """Facts for every statement of a parsed string, sharing PREPARE state in order."""
    prepared: dict[str, _Collector] = {}
    return tuple(_extract(raw, text, prepared) for raw, text in split_statements(sql, parsed))


# Clauses whose column references decide which rows come back (or in which order): a probe
# such as ``WHERE ssn LIKE '123%'`` or ``ORDER BY ssn`` reveals a masked value bit by bit.
_PREDICATE_KEYS = frozenset({"whereClause", "havingClause", "quals", "sortClause", "groupClause",
                             "distinctClause", "joinCondition", "partitionClause",
                             "orderClause"})


def predicate_columns(tree: Any) -> frozenset[str]:
    """Lower-cased names of the columns referenced in filters, joins, grouping and ordering
    anywhere in ``tree`` (subqueries and CTEs included)."""
    out: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                collect(item)
        elif isinstance(node, dict):
            ref = node.get("ColumnRef")
            if ref is not None:
                fields = ref.get("fields") or ()
                if fields and isinstance(fields[-1], dict) and "String" in fields[-1]:
                    out.add(str(fields[-1]["String"].get("sval", "")).lower())
                return
            for value in node.values():
                collect(value)

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in _PREDICATE_KEYS:
                    collect(value)
                walk(value)

    walk(tree)
    return frozenset(out)
