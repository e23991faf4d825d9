"""The walk over a parse tree: what a subtree reads, calls and runs, into a collector.

``_walk`` visits any subtree and dispatches on the node type through ``HANDLERS``: the
expression and query handlers are here (function calls, SQL carried in strings, operators,
CTEs, SELECT, the DML statements, EXPLAIN, COPY, CREATE TABLE AS); the other statements'
handlers are in ``_statements`` and join the table in ``_extract``. ``now`` is False inside
stored bodies (views, rules, PREPARE): their calls count, their reads and writes do not.
"""

from __future__ import annotations

from typing import Any

from ._facts import CopyFacts
from ._nodes import Node, _const_str, _is_plain_literal, _regclass_name, _sval, relname
from ._where import _const_bool, _def_bool, is_effective_where


class _Collector:
    __slots__ = (
        "kinds", "writes", "reads", "functions", "unbounded", "settings", "opaque",
        "prepares", "executes", "declares", "fetches", "closes", "copy", "rw",
        "prepared_here", "refs", "ops", "dynamic_settings", "colnot", "deallocates",
        "session_refs", "explain_analyze", "vacuum_full", "rows",
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
        self.vacuum_full = False
        # the row operations run (INSERT/UPDATE/DELETE), by effect: a MERGE's WHEN actions,
        # COPY FROM, INSERT ... ON CONFLICT DO UPDATE
        self.rows: set[str] = set()

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


# Node types that can hold no table, function or statement: not descended into. (The most
# frequent nodes of any query; pruning them halves the walk.)
_LEAVES = frozenset({"A_Const", "ColumnRef", "ParamRef", "TypeName", "String", "Integer",
                     "Float", "Boolean", "BitString", "A_Star", "SetToDefault"})


# Handlers by node type: the walk's own (expressions, queries) are added below, the
# statement handlers by ``_extract`` (which imports every handler module).
HANDLERS: dict[str, Any] = {}


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
            handler = HANDLERS.get(typ)
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
        args: list[Any] = fc.get("args") or []
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
                assert not isinstance(spec, str), spec  # "*" and "last" are the only strings
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
            c.rows |= inner.rows
            c.writes |= inner.writes
            c.unbounded |= inner.unbounded


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


def _h_funccall(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    _func_call(body, c, now, ctes)


def _h_rangevar(body: Node, c: _Collector, now: bool, ctes: frozenset[str]) -> None:
    _range_var(body, c, now, ctes)


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
            c.rows |= _row_kinds(kind, body)
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


_MERGE_COMMANDS = {"CMD_INSERT": "INSERT", "CMD_UPDATE": "UPDATE", "CMD_DELETE": "DELETE"}


def _row_kinds(kind: str, body: Node) -> set[str]:
    """The row operations a DML statement performs on its target."""
    if kind == "MERGE":
        return {_MERGE_COMMANDS[cmd] for w in body.get("mergeWhenClauses", ())
                if (cmd := w.get("MergeWhenClause", {}).get("commandType")) in _MERGE_COMMANDS}
    if kind == "INSERT":
        action = (body.get("onConflictClause") or {}).get("action")
        return {"INSERT", "UPDATE"} if action == "ONCONFLICT_UPDATE" else {"INSERT"}
    return {kind}


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
        if is_from:
            c.rows.add("INSERT")
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


HANDLERS.update({
    "SelectStmt": _h_select,
    "InsertStmt": _dml("INSERT", "relation"),
    "UpdateStmt": _dml("UPDATE", "relation"),
    "DeleteStmt": _dml("DELETE", "relation"),
    "MergeStmt": _dml("MERGE", "relation"),
    "ExplainStmt": _h_explain,
    "CopyStmt": _h_copy,
    "CreateTableAsStmt": _h_ctas,
    "FuncCall": _h_funccall,
    "RangeVar": _h_rangevar,
    "A_Expr": _h_aexpr,
    "SubLink": _h_sublink,
    "SortBy": _h_sortby,
})
