"""Which base columns decide *which rows, in which order, how many* a statement returns.

``column.disallow-predicate-on-masked`` refuses statements whose row selection depends on a
column the identity sees masked: ``WHERE ssn LIKE '1%'`` returns the rows whose hidden value
starts with 1, so a value can be read bit by bit without ever being selected. Matching column
*names* in WHERE clauses misses every rename; this module follows lineage instead (the same
machinery as masking), through subqueries, CTEs, views, joins and whole-row forms
(``u::text``, ``to_jsonb(u)->>'ssn'``, ``(u).ssn``, ``ssn(u)``).

Deciding clauses, at every query level (subqueries and CTEs included): WHERE, JOIN … ON,
HAVING, GROUP BY and ORDER BY (output positions and output aliases resolved to the output's
lineage), DISTINCT ON, window PARTITION BY / ORDER BY (in the select list too: rows often come
back in window order), LIMIT / OFFSET expressions.

Allowed shapes, so ordinary analytics run: ``col IS [NOT] NULL`` on a plain column (reveals
nullness only); equality between two plain columns of base tables (``o.user_id = u.id``,
``u.email = o.email``: a join reveals whether two stored values match, never what they are);
and, for the same reason, GROUP BY / PARTITION BY / DISTINCT ON a plain stored column (one
group per hidden value: equality classes, as the join). Ordering by a masked column is never
allowed (it reveals comparisons), nor grouping by an expression of one (``substr(ssn, 5, 1)``).
A side that is a CTE/subquery/VALUES column or any expression is not "plain": ``JOIN (VALUES
('guess')) v(x) ON u.email = v.x`` is a probe. Outputs are not this module's concern: a
value computed from a masked column (``SELECT ssn LIKE '1%'``, ``CASE WHEN ssn …``, ``count(*)
FILTER (WHERE ssn …)``) is masked as a whole by the mask plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._catalog import Catalog
from ._lineage import UNKNOWN, Column, _Entry, _Lineage, _svals, _Unresolvable

__all__ = ["deciding_sources"]


class _Probe:
    def __init__(self, catalog: Catalog) -> None:
        self.lin = _Lineage(catalog)
        self.out: set[str] = set()

    # -- statements -------------------------------------------------------------------------

    def statement(self, node: Any, outer: list[list[_Entry]],
                  ctes: Mapping[str, list[Column]]) -> None:
        if not isinstance(node, dict):
            return
        for typ, body in node.items():
            if typ == "SelectStmt":
                self.select(body, outer, ctes)
            elif typ in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
                self.dml(typ, body, outer, ctes)
            elif isinstance(body, (dict, list)):
                self.nested(body, outer, ctes)

    def _ctes(self, wc: Any, outer: list[list[_Entry]],
              ctes: Mapping[str, list[Column]]) -> Mapping[str, list[Column]]:
        if not wc:
            return ctes
        wc = wc.get("WithClause", wc)
        for item in wc.get("ctes", ()):
            self.statement(item.get("CommonTableExpr", {}).get("ctequery"), outer, ctes)
        return self.lin._with(wc, outer, ctes)

    def select(self, body: Mapping[str, Any], outer: list[list[_Entry]],
               ctes: Mapping[str, list[Column]]) -> None:
        ctes = self._ctes(body.get("withClause"), outer, ctes)
        op = body.get("op", "SETOP_NONE")
        if op not in (None, "SETOP_NONE"):
            self.statement({"SelectStmt": _sel(body["larg"])}, outer, ctes)
            self.statement({"SelectStmt": _sel(body["rarg"])}, outer, ctes)
            targets = self.lin.select(body, outer, ctes)
            scopes: list[list[_Entry]] = [[], *outer]
        else:
            for row in body.get("valuesLists") or ():
                self.nested(row, outer, ctes)
            scope: list[_Entry] = []
            for item in body.get("fromClause") or ():
                entries = self.from_item(item, [scope, *outer], ctes)
                scope.extend(entries)
            scopes = [scope, *outer]
            targets = self.lin.select(body, outer, ctes)
            for target in body.get("targetList") or ():
                val = (target.get("ResTarget") or {}).get("val")
                self.nested(val, scopes, ctes)  # subqueries and window clauses
            self.decide(body.get("whereClause"), scopes, ctes)
            self.decide(body.get("havingClause"), scopes, ctes)
            tlist = [(t.get("ResTarget") or {}).get("val") for t in body.get("targetList") or ()]
            for item in body.get("groupClause") or ():
                self.ordering(item, scopes, ctes, targets, prefer_output=False,
                              equality=True, tlist=tlist)
            for item in body.get("distinctClause") or ():
                if item:  # DISTINCT ON (…); plain DISTINCT is a list with one empty node
                    self.ordering(item, scopes, ctes, targets, prefer_output=True,
                                  equality=True, tlist=tlist)
            for wd in body.get("windowClause") or ():
                self.window_def(wd.get("WindowDef", wd), scopes, ctes)
        for item in body.get("sortClause") or ():
            self.ordering((item.get("SortBy") or {}).get("node"), scopes, ctes, targets,
                          prefer_output=True)
        for key in ("limitCount", "limitOffset"):
            self.decide(body.get(key), scopes, ctes)

    def dml(self, typ: str, body: Mapping[str, Any], outer: list[list[_Entry]],
            ctes: Mapping[str, list[Column]]) -> None:
        ctes = self._ctes(body.get("withClause"), outer, ctes)
        scope: list[_Entry] = []
        rel = body.get("relation")
        if isinstance(rel, dict):
            scope.extend(self.from_item({"RangeVar": rel}, [scope, *outer], ctes))
        for key in ("fromClause", "usingClause"):
            for item in body.get(key) or ():
                scope.extend(self.from_item(item, [scope, *outer], ctes))
        if typ == "MergeStmt" and body.get("sourceRelation"):
            scope.extend(self.from_item(body["sourceRelation"], [scope, *outer], ctes))
            self.decide(body.get("joinCondition"), [scope, *outer], ctes)
        scopes = [scope, *outer]
        self.decide(body.get("whereClause"), scopes, ctes)
        if typ == "InsertStmt":
            self.statement(body.get("selectStmt"), outer, ctes)
        for key in ("targetList", "returningList", "mergeWhenClauses", "onConflictClause"):
            self.nested(body.get(key), scopes, ctes)

    # -- FROM ---------------------------------------------------------------------------------

    def from_item(self, item: Mapping[str, Any], scopes: list[list[_Entry]],
                  ctes: Mapping[str, list[Column]]) -> list[_Entry]:
        (typ, body), = item.items()
        if typ == "RangeSubselect":
            inner = scopes if body.get("lateral") else scopes[1:]
            self.statement(body.get("subquery"), inner, ctes)
        elif typ == "JoinExpr":
            left = self.from_item(body["larg"], scopes, ctes)
            right = self.from_item(body["rarg"], [left + scopes[0], *scopes[1:]], ctes)
            # (USING / NATURAL: equality of plain columns, allowed.)
            self.decide(body.get("quals"), [left + right + scopes[0], *scopes[1:]], ctes)
        elif typ == "RangeFunction":
            self.nested(body.get("functions"), scopes, ctes)
        entries, _ = self.lin.from_item(item, scopes, ctes)
        return entries

    # -- expressions --------------------------------------------------------------------------

    def nested(self, node: Any, scopes: list[list[_Entry]],
               ctes: Mapping[str, list[Column]]) -> None:
        """Probe the deciding clauses of subqueries inside an expression."""
        if isinstance(node, list):
            for item in node:
                self.nested(item, scopes, ctes)
            return
        if not isinstance(node, dict):
            return
        for typ, body in node.items():
            if typ == "SubLink":
                self.nested(body.get("testexpr"), scopes, ctes)
                self.statement(body.get("subselect"), scopes, ctes)
            elif typ in ("SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
                self.statement({typ: body}, scopes, ctes)
            elif typ == "FuncCall":
                if body.get("over"):
                    self.window_def(body["over"], scopes, ctes)
                self.nested({k: v for k, v in body.items() if k != "over"}, scopes, ctes)
            elif isinstance(body, (dict, list)):
                self.nested(body, scopes, ctes)

    def window_def(self, wd: Any, scopes: list[list[_Entry]],
                   ctes: Mapping[str, list[Column]]) -> None:
        wd = wd.get("WindowDef", wd) if isinstance(wd, dict) else {}
        for item in wd.get("partitionClause") or ():
            ref = _plain_ref(item)
            if ref is not None and self._base_column(ref, scopes):
                continue  # partitions by a stored value: equality classes only
            self.decide(item, scopes, ctes)
        for item in wd.get("orderClause") or ():
            self.decide((item.get("SortBy") or {}).get("node"), scopes, ctes)

    def ordering(self, node: Any, scopes: list[list[_Entry]], ctes: Mapping[str, list[Column]],
                 targets: list[Column], *, prefer_output: bool, equality: bool = False,
                 tlist: list[Any] | None = None) -> None:
        """An ORDER BY / GROUP BY / DISTINCT ON item: output positions and aliases mean the
        output's lineage. Grouping (``equality``) by a plain stored column reveals equality
        classes only, as a join on it does: allowed; ordering reveals comparisons: never."""
        if not isinstance(node, dict):
            return
        const = node.get("A_Const")
        if const is not None and "ival" in const:
            pos = int(const["ival"].get("ival", 0))
            if 1 <= pos <= len(targets):
                if equality and tlist is not None and pos <= len(tlist):
                    ref = _plain_ref(tlist[pos - 1])
                    if ref is not None and self._base_column(ref, scopes):
                        return
                self.out |= targets[pos - 1][1]
            return
        if equality:
            ref = _plain_ref(node)
            if ref is not None and self._base_column(ref, scopes):
                return
        ref = node.get("ColumnRef")
        if ref is not None:
            names = _svals(ref.get("fields", ()))
            if len(names) == 1 and names[0] is not None:
                outputs = [src for name, src in targets if name == names[0]]
                resolvable = any(e.find(names[0]) is not None for e in scopes[0]) \
                    if scopes else False
                if outputs and (prefer_output or not resolvable):
                    for src in outputs:
                        self.out |= src
                    if prefer_output:
                        return
        self.decide(node, scopes, ctes)

    def decide(self, node: Any, scopes: list[list[_Entry]],
               ctes: Mapping[str, list[Column]]) -> None:
        if not isinstance(node, dict) or not node:
            return
        (typ, body), = node.items() if len(node) == 1 else ((None, None),)
        if typ == "BoolExpr":
            for arg in body.get("args") or ():
                self.decide(arg, scopes, ctes)
            return
        if typ == "NullTest" and _plain_ref(body.get("arg")) is not None:
            return
        if typ == "A_Expr" and body.get("kind") == "AEXPR_OP" and \
                [(_sval(n)) for n in body.get("name") or ()] == ["="]:
            left, right = _plain_ref(body.get("lexpr")), _plain_ref(body.get("rexpr"))
            if left is not None and right is not None and \
                    self._base_column(left, scopes) and self._base_column(right, scopes):
                return
        self.nested(node, scopes, ctes)
        try:
            self.out |= self.lin.refs(node, scopes, ctes)
        except _Unresolvable:
            self.out.add(UNKNOWN)

    def _base_column(self, fields: list[str | None], scopes: list[list[_Entry]]) -> bool:
        """A plain column of a base table (not a view, CTE, subquery or VALUES column)."""
        if any(f is None for f in fields):
            return False
        name = fields[-1]
        assert name is not None
        if len(fields) >= 2:
            qualifier = fields[-2]
            for scope in scopes:
                for e in scope:
                    if e.alias == qualifier or (e.relation is not None and
                                                e.relation.name == qualifier):
                        return e.relation is not None and not e.relation.is_view \
                            and e.find(name) is not None
            return False
        for scope in scopes:
            hits = [e for e in scope if e.find(name) is not None]
            if hits:
                return len(hits) == 1 and hits[0].relation is not None \
                    and not hits[0].relation.is_view and not hits[0].unknown
        return False


def _sel(node: Mapping[str, Any]) -> Mapping[str, Any]:
    return node["SelectStmt"] if "SelectStmt" in node else node


def _sval(node: Any) -> str | None:
    if isinstance(node, dict) and "String" in node:
        return str(node["String"].get("sval", ""))
    return None


def _plain_ref(node: Any) -> list[str | None] | None:
    if isinstance(node, dict) and len(node) == 1 and "ColumnRef" in node:
        fields = _svals(node["ColumnRef"].get("fields", ()))
        if fields and fields[-1] is not None:
            return fields
    return None


def deciding_sources(tree: Mapping[str, Any], catalog: Catalog) -> frozenset[str] | None:
    """Base columns (``schema.table.column``; ``?`` for unknown) that decide which rows a
    statement returns or touches, in which order and how many; None when the statement's
    shape cannot be followed (the caller falls back to a stricter check)."""
    probe = _Probe(catalog)
    try:
        probe.statement(tree, [], {})
    except _Unresolvable:
        return None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None
    return frozenset(probe.out)
