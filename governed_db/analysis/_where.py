"""Which rows a statement can reach: constant folding of conditions, predicate columns.

``is_effective_where`` tells a WHERE that limits rows from none or a tautology (the
unbounded-write rule); ``predicate_columns`` names the columns that decide which rows come back
(the probe rule for masked columns).
"""

from __future__ import annotations

from typing import Any

from ._nodes import _literal, _sval, strip_locations

__all__ = ["is_effective_where", "predicate_columns"]


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
                    return bool({"=": lv == rv, "<>": lv != rv, "!=": lv != rv, "<=": lv <= rv,
                            ">=": lv >= rv, "<": lv < rv, ">": lv > rv}[op])
                except TypeError:
                    return None
        return None
    if typ == "NullTest":
        arg = body.get("arg")
        if isinstance(arg, dict) and "A_Const" in arg:
            is_null = bool(arg["A_Const"].get("isnull"))
            want_null: bool = body.get("nulltesttype") == "IS_NULL"
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


def is_effective_where(where: Any) -> bool:
    """Whether a WHERE clause can limit the rows touched (False for none or a tautology)."""
    return where is not None and _const_bool(where) is not True


def _def_bool(arg: Any) -> bool:
    s = _sval(arg)
    if s is not None:
        return s.lower() in ("true", "on", "1", "yes", "t", "y")
    v = _const_bool(arg)
    if v is not None:
        return v
    lit = _literal(arg)
    return bool(lit) if lit is not None else True


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
