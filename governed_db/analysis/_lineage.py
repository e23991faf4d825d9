"""Column lineage: which base columns each output column of a statement derives from.

Computed on the parse tree against a catalog snapshot (for ``*`` expansion, unqualified column
resolution and view expansion). Sources are ``schema.table.column`` strings; ``UNKNOWN`` marks
a dependency that cannot be resolved (an unknown relation, a user-defined function whose body
may read any table). A result whose shape cannot be known at all (``*`` over an unknown
relation) is ``None``: the masking layer then fails closed.

What counts (the corpus rules): function arguments, CASE conditions, window PARTITION BY /
ORDER BY, aggregate ORDER BY/FILTER, scalar-subquery outputs; whole-row references (``u``,
``u.*``, ``row_to_json(u)``, ``u::text``) mean every column; ``ssn(u)`` is column ``ssn``.
Columns used only in WHERE/JOIN/ORDER BY of the query are excluded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pgparse

from .._catalog import Catalog, Relation
from ._nodes import funcname

__all__ = ["UNKNOWN", "Column", "statement_lineage", "relation_columns"]

UNKNOWN = "?"
Column = tuple[str, frozenset[str]]
_EMPTY: frozenset[str] = frozenset()
_MAX_DEPTH = 64


class _Unresolvable(Exception):
    """The result's shape cannot be known statically."""


class _Entry:
    """One FROM item as seen by column references."""

    __slots__ = ("alias", "columns", "relation", "unknown")

    def __init__(self, alias: str, columns: list[Column], relation: Relation | None = None,
                 unknown: bool = False) -> None:
        self.alias = alias
        self.columns = columns
        self.relation = relation
        self.unknown = unknown

    def whole(self) -> frozenset[str]:
        if self.unknown:
            return frozenset({UNKNOWN})
        out: set[str] = set()
        for _, src in self.columns:
            out |= src
        return frozenset(out)

    def find(self, name: str) -> frozenset[str] | None:
        if self.unknown:
            return frozenset({UNKNOWN})
        hits = [src for col, src in self.columns if col == name]
        if not hits:
            return None
        return frozenset().union(*hits)


def _svals(fields: Sequence[Any]) -> list[str | None]:
    out: list[str | None] = []
    for f in fields:
        if isinstance(f, dict) and "String" in f:
            out.append(str(f["String"].get("sval", "")))
        else:
            out.append(None)  # A_Star
    return out


class _Lineage:
    def __init__(self, catalog: Catalog, depth: int = 0,
                 assignments: list[tuple[frozenset[str], frozenset[str]]] | None = None) -> None:
        self.catalog = catalog
        self.depth = depth
        # when a list: every write's (target column sources, assigned value sources)
        self.assignments = assignments

    # -- statements ------------------------------------------------------------------------

    def select(self, body: Mapping[str, Any], outer: list[list[_Entry]],
               ctes: Mapping[str, list[Column]]) -> list[Column]:
        if self.depth > _MAX_DEPTH:
            raise _Unresolvable("nesting too deep")
        ctes = self._with(body.get("withClause"), outer, ctes)
        op = body.get("op", "SETOP_NONE")
        if op not in (None, "SETOP_NONE"):
            left = self.select(body["larg"]["SelectStmt"] if "SelectStmt" in body["larg"]
                               else body["larg"], outer, ctes)
            right = self.select(body["rarg"]["SelectStmt"] if "SelectStmt" in body["rarg"]
                                else body["rarg"], outer, ctes)
            if len(left) != len(right):
                raise _Unresolvable("set operation branches differ in width")
            return [(ln, ls | rs) for (ln, ls), (_, rs) in zip(left, right, strict=False)]
        if body.get("valuesLists"):
            rows = [item.get("List", {}).get("items", []) for item in body["valuesLists"]]
            width = len(rows[0]) if rows else 0
            cols = []
            for i in range(width):
                src: set[str] = set()
                for row in rows:
                    if i < len(row):
                        src |= self.refs(row[i], outer, ctes)
                cols.append((f"column{i + 1}", frozenset(src)))
            return cols
        scope: list[_Entry] = []
        star_lists: list[list[Column]] = []
        for item in body.get("fromClause", ()) or ():
            entries, star = self.from_item(item, [scope, *outer], ctes)
            scope.extend(entries)
            star_lists.append(star)
        scopes = [scope, *outer]
        out: list[Column] = []
        for target in body.get("targetList", ()) or ():
            rt = target.get("ResTarget", {})
            val = rt.get("val")
            if isinstance(val, dict) and "ColumnRef" in val:
                names = _svals(val["ColumnRef"].get("fields", ()))
                if names and names[-1] is None:
                    out.extend(self.star(names[:-1], scope, star_lists))
                    continue
            out.append((rt.get("name") or _output_name(val), self.refs(val, scopes, ctes)))
        return out

    def _with(self, wc: Any, outer: list[list[_Entry]],
              ctes: Mapping[str, list[Column]]) -> Mapping[str, list[Column]]:
        if not wc:
            return ctes
        wc = wc.get("WithClause", wc)
        result = dict(ctes)
        for item in wc.get("ctes", ()):
            cte = item.get("CommonTableExpr", {})
            name = cte.get("ctename", "")
            query = cte.get("ctequery", {})
            aliases = [n for n in _svals(cte.get("aliascolnames", ()) or ()) if n]
            if wc.get("recursive") and "SelectStmt" in query and \
                    query["SelectStmt"].get("op") not in (None, "SETOP_NONE"):
                base = self.statement_result(query["SelectStmt"]["larg"], outer, result)
                result[name] = _rename(base or [], aliases)
                # one more pass so the recursive term's references are included
                full = self.statement_result(query, outer, result)
                result[name] = _rename(full or [], aliases)
            else:
                cols = self.statement_result(query, outer, result)
                result[name] = _rename(cols or [], aliases)
        return result

    def statement_result(self, node: Mapping[str, Any], outer: list[list[_Entry]],
                         ctes: Mapping[str, list[Column]]) -> list[Column] | None:
        """Output columns of a query-like node (SELECT, or DML with RETURNING)."""
        if "SelectStmt" in node:
            return self.select(node["SelectStmt"], outer, ctes)
        for typ, scope_keys in (("InsertStmt", ()), ("UpdateStmt", ("fromClause",)),
                                ("DeleteStmt", ("usingClause",)), ("MergeStmt", ())):
            if typ in node:
                return self.dml(node[typ], scope_keys, outer, ctes, typ)
        return None

    def dml(self, body: Mapping[str, Any], scope_keys: Sequence[str],
            outer: list[list[_Entry]], ctes: Mapping[str, list[Column]],
            typ: str = "") -> list[Column] | None:
        """RETURNING of INSERT/UPDATE/DELETE/MERGE. A RETURNING column is the NEW row's value:
        the target column's lineage united with every expression that may be assigned to it
        (SET, the inserted SELECT/VALUES, ON CONFLICT DO UPDATE, MERGE actions). The target
        column's own lineage alone would let ``UPDATE t SET v = ssn ... RETURNING v`` bring
        a masked value back raw (attack F9). When ``self.assignments`` collects (the copy
        check), every write's (target sources, assigned sources) pairs are recorded."""
        returning = body.get("returningList")
        if not returning and self.assignments is None:
            return None
        ctes = self._with(body.get("withClause"), outer, ctes)
        rel = body.get("relation", {})
        entries, star = self.from_item({"RangeVar": rel}, outer, ctes)
        target = entries[0]
        scope = list(entries)
        stars = [star]
        for key in scope_keys:
            for item in body.get(key, ()) or ():
                e, s = self.from_item(item, [scope, *outer], ctes)
                scope.extend(e)
                stars.append(s)
        if body.get("sourceRelation"):  # MERGE ... USING
            e, s = self.from_item(body["sourceRelation"], [scope, *outer], ctes)
            scope.extend(e)
            stars.append(s)
        scopes = [scope, *outer]
        assigned = self._assigned(typ, body, target, scopes, outer, ctes)
        if self.assignments is not None:
            for name, src in target.columns:
                if assigned.get(name):
                    self.assignments.append((src, assigned[name]))
        if not returning:
            return None
        # The target as RETURNING sees it: every column may hold what was assigned to it;
        # a table whose triggers or rules may rewrite the new row is unknown.
        rewrites = target.relation is not None and not target.relation.is_view and \
            target.relation.oid in getattr(self.catalog, "side_effect_tables", ())
        new_cols = [(name, src | assigned.get(name, _EMPTY) | ({UNKNOWN} if rewrites else _EMPTY))
                    for name, src in target.columns]
        new_target = _Entry(target.alias, new_cols, target.relation, target.unknown)
        scope[0] = new_target
        stars[0] = [(name, src) for name, src in new_cols] if not target.unknown else stars[0]
        out: list[Column] = []
        for target_item in returning:
            rt = target_item.get("ResTarget", {})
            val = rt.get("val")
            if isinstance(val, dict) and "ColumnRef" in val:
                names = _svals(val["ColumnRef"].get("fields", ()))
                if names and names[-1] is None:
                    out.extend(self.star(names[:-1], scope, stars[:1] if not names[:-1] else stars))
                    continue
            out.append((rt.get("name") or _output_name(val), self.refs(val, scopes, ctes)))
        return out

    def _assigned(self, typ: str, body: Mapping[str, Any], target: _Entry,
                  scopes: list[list[_Entry]],
                  outer: list[list[_Entry]], ctes: Mapping[str, list[Column]]
                  ) -> dict[str, frozenset[str]]:
        """Target column -> sources of every value the statement may write into it."""
        out: dict[str, set[str]] = {}
        all_cols = [name for name, _ in target.columns]

        def add(name: str | None, src: frozenset[str]) -> None:
            if name is None:
                return
            if name not in all_cols and not target.unknown:
                # a column the snapshot does not know (added since): every column may hold it
                for col in all_cols:
                    out.setdefault(col, set()).update(src)
                return
            out.setdefault(name, set()).update(src)

        def set_list(items: Any, item_scopes: list[list[_Entry]]) -> None:
            for item in items or ():
                rt = item.get("ResTarget", {})
                add(rt.get("name"), self.refs(rt.get("val"), item_scopes, ctes))

        def positional(cols_node: Any, values: list[frozenset[str]]) -> None:
            names = [(c.get("ResTarget") or {}).get("name") for c in cols_node or ()] or all_cols
            for name, src in zip(names, values, strict=False):
                add(name, src)

        if typ == "InsertStmt":
            inserted: dict[str, frozenset[str]] = {}
            sel = body.get("selectStmt")
            if sel:
                try:
                    cols = _Lineage(self.catalog, self.depth + 1).statement_result(
                        sel, outer, ctes) or []
                except _Unresolvable:
                    cols = [("?", frozenset({UNKNOWN}))] * max(len(all_cols), 1)
                positional(body.get("cols"), [src for _, src in cols])
                inserted = {k: frozenset(v) for k, v in out.items()}
            conflict = body.get("onConflictClause") or {}
            if conflict.get("action") == "ONCONFLICT_UPDATE":
                excluded = _Entry("excluded", [(c, inserted.get(c, _EMPTY)) for c in all_cols],
                                  target.relation, target.unknown)
                conflict_scopes = [[target, excluded], *outer]
                set_list(conflict.get("targetList"), conflict_scopes)
        elif typ == "MergeStmt":
            for clause in body.get("mergeWhenClauses") or ():
                when = clause.get("MergeWhenClause", clause)
                if when.get("commandType") == "CMD_UPDATE":
                    set_list(when.get("targetList"), scopes)
                elif when.get("commandType") == "CMD_INSERT":
                    positional(when.get("targetList"),
                               [self.refs(v, scopes, ctes) for v in when.get("values") or ()])
        elif typ == "UpdateStmt":
            set_list(body.get("targetList"), scopes)
        return {k: frozenset(v) for k, v in out.items()}

    # -- FROM items ------------------------------------------------------------------------

    def from_item(self, item: Mapping[str, Any], scopes: list[list[_Entry]],
                  ctes: Mapping[str, list[Column]]) -> tuple[list[_Entry], list[Column]]:
        (typ, body), = item.items()
        if typ == "RangeVar":
            alias = body.get("alias") or {}
            name = body.get("relname", "")
            schema = body.get("schemaname")
            if not schema and name in ctes:
                cols = list(ctes[name])
                rel = None
            else:
                rel = self.catalog.resolve(f"{schema}.{name}" if schema else name)
                if rel is None:
                    entry = _Entry(alias.get("aliasname", name), [], unknown=True)
                    return [entry], [("?", frozenset({UNKNOWN}))]
                cols = relation_columns(rel, self.catalog)
            cols = _rename(cols, [n for n in _svals(alias.get("colnames", ()) or ()) if n])
            entry = _Entry(alias.get("aliasname", name), cols, rel)
            return [entry], cols
        if typ == "RangeSubselect":
            sub = body.get("subquery", {})
            lateral_scopes = scopes if body.get("lateral") else scopes[1:]
            inner = _Lineage(self.catalog, self.depth + 1)
            cols = inner.statement_result(sub, lateral_scopes, ctes) or []
            alias = body.get("alias") or {}
            cols = _rename(cols, [n for n in _svals(alias.get("colnames", ()) or ()) if n])
            entry = _Entry(alias.get("aliasname", ""), cols)
            return [entry], cols
        if typ == "JoinExpr":
            left, lstar = self.from_item(body["larg"], scopes, ctes)
            right, rstar = self.from_item(body["rarg"], [left + scopes[0], *scopes[1:]], ctes)
            using = [n for n in _svals(body.get("usingClause", ()) or ()) if n]
            if body.get("isNatural"):
                rnames = {c for c, _ in rstar}
                using = [c for c, _ in lstar if c in rnames]
            if using:
                lmap, rmap = dict(_merge_dupes(lstar)), dict(_merge_dupes(rstar))
                merged = [(c, lmap.get(c, _EMPTY) | rmap.get(c, _EMPTY)) for c in using]
                star = merged + [c for c in lstar if c[0] not in using] + \
                    [c for c in rstar if c[0] not in using]
            else:
                star = lstar + rstar
            entries = left + right
            alias = body.get("alias")
            if alias:
                cols = _rename(star, [n for n in _svals(alias.get("colnames", ()) or ()) if n])
                entries = [_Entry(alias.get("aliasname", ""), cols)]
                star = cols
            return entries, star
        if typ == "RangeFunction":
            fn_src: set[str] = set()
            names: list[str] = []
            for fn in body.get("functions", ()):
                items = fn.get("List", {}).get("items", [])
                if items:
                    call = items[0]
                    fn_src |= self.refs(call, scopes, ctes)
                    if isinstance(call, dict) and "FuncCall" in call:
                        names.append(funcname(call["FuncCall"]))
                if len(items) > 1 and items[1]:
                    for cd in items[1]:
                        names.append(cd.get("ColumnDef", {}).get("colname", "?"))
            alias = body.get("alias") or {}
            colnames = [n for n in _svals(alias.get("colnames", ()) or ()) if n]
            if colnames:
                names = colnames
            elif alias.get("aliasname") and len(names) == 1:
                names = [alias["aliasname"]]
            cols = [(n, frozenset(fn_src)) for n in names]
            if body.get("ordinality"):
                cols.append(("ordinality", _EMPTY))
            entry = _Entry(alias.get("aliasname", names[0] if names else ""), cols)
            return [entry], cols
        if typ == "RangeTableSample":
            return self.from_item(body["relation"], scopes, ctes)
        # XMLTABLE, JSON_TABLE and anything newer: every column depends on everything.
        src = frozenset(self.refs(body, scopes, ctes) | {UNKNOWN})
        entry = _Entry((body.get("alias") or {}).get("aliasname", ""), [], unknown=True)
        return [entry], [("?", src)]

    def star(self, qualifier: list[str | None], scope: list[_Entry],
             star_lists: list[list[Column]]) -> list[Column]:
        if not qualifier:
            cols = [c for star in star_lists for c in star]
        else:
            alias = qualifier[-1]
            matches = [e for e in scope if e.alias == alias]
            if not matches:
                raise _Unresolvable(f"unknown relation {alias} in *")
            cols = list(matches[0].columns)
            if matches[0].unknown:
                raise _Unresolvable("* over an unknown relation")
        if any(UNKNOWN in src and name == "?" for name, src in cols):
            raise _Unresolvable("* over an unknown relation")
        return cols

    # -- expressions -----------------------------------------------------------------------

    def refs(self, node: Any, scopes: list[list[_Entry]],
             ctes: Mapping[str, list[Column]]) -> frozenset[str]:
        out: set[str] = set()
        self._refs(node, scopes, ctes, out)
        return frozenset(out)

    def _refs(self, node: Any, scopes: list[list[_Entry]], ctes: Mapping[str, list[Column]],
              out: set[str]) -> None:
        if isinstance(node, list):
            for item in node:
                self._refs(item, scopes, ctes, out)
            return
        if not isinstance(node, dict):
            return
        if len(node) == 1:
            (typ, body), = node.items()
            if typ == "ColumnRef":
                out |= self.column(_svals(body.get("fields", ())), scopes)
                return
            if typ == "SubLink":
                self._refs(body.get("testexpr"), scopes, ctes, out)
                inner = _Lineage(self.catalog, self.depth + 1)
                try:
                    cols = inner.statement_result(body.get("subselect", {}), scopes, ctes) or []
                except _Unresolvable:
                    out.add(UNKNOWN)
                    return
                if body.get("subLinkType") in ("EXPR_SUBLINK", "ARRAY_SUBLINK") and cols:
                    out |= cols[0][1]
                else:
                    for _, src in cols:
                        out |= src
                return
            if typ == "FuncCall":
                self._func(body, scopes, ctes, out)
                return
            if typ in ("SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt"):
                inner = _Lineage(self.catalog, self.depth + 1)
                try:
                    for _, src in inner.statement_result(node, scopes, ctes) or []:
                        out |= src
                except _Unresolvable:
                    out.add(UNKNOWN)
                return
        for value in node.values():
            if isinstance(value, (dict, list)):
                self._refs(value, scopes, ctes, out)

    def _func(self, body: Mapping[str, Any], scopes: list[list[_Entry]],
              ctes: Mapping[str, list[Column]], out: set[str]) -> None:
        name = funcname(body)
        args = body.get("args") or []
        # Functional notation for column access: ssn(u) is u.ssn.
        if len(args) == 1 and isinstance(args[0], dict) and "ColumnRef" in args[0]:
            fields = _svals(args[0]["ColumnRef"].get("fields", ()))
            if len(fields) == 1 and fields[0] is not None:
                entry = _find_entry(fields[0], scopes)
                if entry is not None and not _has_column(fields[0], scopes):
                    hit = entry.find(name)
                    if hit is not None:
                        out |= hit
                        return
        builtins: frozenset[str] = getattr(self.catalog, "builtin_functions", frozenset())
        if name in self.catalog.user_functions or (builtins and name not in builtins):
            # A user function's body can read any table; a function the snapshot does not
            # know yet (created since it was taken) is treated the same: fail closed.
            out.add(UNKNOWN)
        for key, value in body.items():
            if key != "funcname" and isinstance(value, (dict, list)):
                self._refs(value, scopes, ctes, out)

    def column(self, fields: list[str | None], scopes: list[list[_Entry]]) -> frozenset[str]:
        if not fields or fields[-1] is None:
            qualifier = [f for f in fields if f is not None]
            if not qualifier:
                return frozenset().union(*(e.whole() for e in scopes[0])) if scopes else _EMPTY
            entry = _find_entry(qualifier[-1], scopes)
            return entry.whole() if entry is not None else frozenset({UNKNOWN})
        if len(fields) == 1:
            name = fields[0]
            assert name is not None
            for scope in scopes:
                hits = [h for h in (e.find(name) for e in scope) if h is not None]
                if hits:
                    return frozenset().union(*hits)
                for e in scope:
                    if e.alias == name:
                        return e.whole()  # whole-row reference: SELECT u FROM users u
            return frozenset({UNKNOWN})
        alias, name = fields[-2], fields[-1]
        assert alias is not None and name is not None
        entry = _find_entry(alias, scopes)
        if entry is None:
            return frozenset({UNKNOWN})
        hit = entry.find(name)
        return hit if hit is not None else entry.whole()  # composite field access: be safe


def _find_entry(alias: str, scopes: list[list[_Entry]]) -> _Entry | None:
    """The FROM item a qualifier names, innermost scope first. By its alias only: in
    PostgreSQL a relation given an alias (``FROM users u``) is reachable by that alias alone,
    its real name then means whatever an outer scope calls so (an unaliased item's alias is
    its relation name)."""
    for scope in scopes:
        for e in scope:
            if e.alias == alias:
                return e
    return None


def _has_column(name: str, scopes: list[list[_Entry]]) -> bool:
    return any(e.find(name) is not None and not e.unknown for scope in scopes for e in scope)


def _rename(cols: list[Column], names: list[str]) -> list[Column]:
    if not names:
        return list(cols)
    return [(names[i] if i < len(names) else c, s) for i, (c, s) in enumerate(cols)]


def _merge_dupes(cols: list[Column]) -> list[Column]:
    return cols


def _output_name(val: Any) -> str:
    """The column name PostgreSQL gives an unaliased expression (FigureColname)."""
    if not isinstance(val, dict) or len(val) != 1:
        return "?column?"
    (typ, body), = val.items()
    if typ == "ColumnRef":
        names = [n for n in _svals(body.get("fields", ())) if n]
        return names[-1] if names else "?column?"
    if typ == "FuncCall":
        return funcname(body) or "?column?"
    if typ == "TypeCast":
        inner = _output_name(body.get("arg"))
        if inner != "?column?":
            return inner
        names = [n for n in _svals(body.get("typeName", {}).get("names", ())) if n]
        return names[-1] if names else "?column?"
    if typ == "SubLink":
        if body.get("subLinkType") == "EXISTS_SUBLINK":
            return "exists"
        if body.get("subLinkType") == "ARRAY_SUBLINK":
            return "array"
        sub = body.get("subselect", {}).get("SelectStmt", {})
        targets = sub.get("targetList") or []
        if targets:
            rt = targets[0].get("ResTarget", {})
            return rt.get("name") or _output_name(rt.get("val"))
        return "?column?"
    simple = {"CoalesceExpr": "coalesce", "RowExpr": "row", "CaseExpr": "case",
              "A_ArrayExpr": "array", "NullIfExpr": "nullif", "MinMaxExpr": "?column?"}
    if typ == "XmlExpr":
        return {"IS_XMLELEMENT": "xmlelement", "IS_XMLCONCAT": "xmlconcat",
                "IS_XMLFOREST": "xmlforest", "IS_XMLPI": "xmlpi", "IS_XMLROOT": "xmlroot",
                "IS_XMLSERIALIZE": "xmlserialize", "IS_DOCUMENT": "?column?"}.get(
            body.get("op", ""), "?column?")
    if typ == "MinMaxExpr":
        return "greatest" if body.get("op") == "IS_GREATEST" else "least"
    if typ == "SQLValueFunction":
        return str(body.get("op", "")).removeprefix("SVFOP_").lower()
    return simple.get(typ, "?column?")


def relation_columns(rel: Relation, catalog: Catalog) -> list[Column]:
    """Output columns of a relation: base columns, or a view's columns through its definition."""
    if rel.schema in ("pg_catalog", "information_schema") or not rel.is_view or not rel.viewdef:
        return [(c, frozenset({f"{rel.qualname}.{c}"})) for c in rel.columns]
    lineage = catalog.view_lineage(rel, lambda r: _view_columns(r, catalog))
    if lineage is None or len(lineage) != len(rel.columns):
        return [(c, frozenset({UNKNOWN, f"{rel.qualname}.{c}"})) for c in rel.columns]
    return [(c, src) for c, (_, src) in zip(rel.columns, lineage, strict=False)]


def _view_columns(rel: Relation, catalog: Catalog) -> list[Column] | None:
    try:
        parsed = pgparse.parse(rel.viewdef or "")
        stmt = parsed[0]["stmt"]
        return _Lineage(catalog, 1).statement_result(stmt, [], {})
    except Exception:  # noqa: BLE001 - a view we cannot follow is unknown lineage (masked)
        return None


def statement_lineage(stmt: Mapping[str, Any], catalog: Catalog,
                      session_queries: Mapping[str, Mapping[str, Any]] | None = None,
                      ) -> list[Column] | None:
    """Lineage of the one result set a statement returns (None: unknown; [] no rows).

    ``session_queries`` maps ``cursor:NAME`` / ``prepared:NAME`` to parse trees of queries
    declared or prepared earlier on the session, for ``FETCH`` and ``EXECUTE``.
    """
    if not stmt:
        return []
    (typ, body), = stmt.items()
    lin = _Lineage(catalog)
    try:
        if typ in ("SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
            if typ == "SelectStmt" and body.get("intoClause"):
                return []
            cols = lin.statement_result(stmt, [], {})
            return [] if cols is None else cols
        if typ == "ExplainStmt":
            return [("QUERY PLAN", _EMPTY)]
        if typ == "VariableShowStmt":
            if str(body.get("name", "")).lower() == "all":
                return [("name", _EMPTY), ("setting", _EMPTY), ("description", _EMPTY)]
            return [(str(body.get("name", "")), _EMPTY)]
        if typ == "CopyStmt":
            if body.get("query"):
                return lin.statement_result(body["query"], [], {})
            rel_node = body.get("relation") or {}
            rel = catalog.resolve(
                f"{rel_node['schemaname']}.{rel_node['relname']}" if rel_node.get("schemaname")
                else rel_node.get("relname", ""))
            if rel is None:
                return None
            cols = relation_columns(rel, catalog)
            wanted = [n for n in _svals(body.get("attlist", ()) or ()) if n]
            if wanted:
                cols = [c for c in cols if c[0] in wanted]
            return cols
        if typ == "FetchStmt":
            query = (session_queries or {}).get("cursor:" + str(body.get("portalname", "")))
            return None if query is None else lin.statement_result(query, [], {})
        if typ == "ExecuteStmt":
            query = (session_queries or {}).get("prepared:" + str(body.get("name", "")))
            return None if query is None else lin.statement_result(query, [], {})
        if typ in ("DeclareCursorStmt", "PrepareStmt"):
            return []
        if typ in ("CallStmt", "DoStmt"):
            return None
        return []
    except _Unresolvable:
        return None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None  # a tree shape we do not follow: unknown lineage, masked


def write_assignments(stmt: Mapping[str, Any], catalog: Catalog,
                      ) -> list[tuple[frozenset[str], frozenset[str]]] | None:
    """Every column a statement writes (top level and data-modifying CTEs), as pairs of
    (the target column's sources, the sources of every value that may be assigned to it);
    None when the statement cannot be followed (the caller fails closed)."""
    if not stmt:
        return []
    out: list[tuple[frozenset[str], frozenset[str]]] = []
    lin = _Lineage(catalog, assignments=out)
    (typ, body), = stmt.items()
    try:
        if typ in ("SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
            lin.statement_result(stmt, [], {})
        elif typ == "ExplainStmt" or typ == "CopyStmt":
            return out  # (EXPLAIN ANALYZE and COPY (query) bodies are reads or judged apart)
        elif typ == "PrepareStmt":
            return out  # stored, not run: judged at EXECUTE
    except _Unresolvable:
        return None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None
    return out
