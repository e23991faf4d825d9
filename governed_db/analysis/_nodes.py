"""Reading pgparse's parse tree: names, literals and constants out of plain-dict nodes.

The tree is plain dicts, as pgparse returns it. Wrapped nodes look like ``{"SelectStmt": {...}}``;
some fields hold bare nodes (``DeleteStmt.relation`` is a bare RangeVar).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["Node", "funcname", "relname", "strip_locations"]


Node = dict[str, Any]


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


def funcname(fc: Mapping[str, Any]) -> str:
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


def _const_str(arg: Any) -> str | None:
    """The value of a constant string argument (``'x'``, ``'x'::text``), else None."""
    if isinstance(arg, dict) and "TypeCast" in arg:
        arg = arg["TypeCast"].get("arg")
    if isinstance(arg, dict) and "A_Const" in arg and "sval" in arg["A_Const"]:
        return str(arg["A_Const"]["sval"].get("sval", ""))
    return None


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


def _defelem_str(arg: Any) -> str | None:
    if isinstance(arg, dict) and isinstance(arg.get("String"), dict):
        return str(arg["String"].get("sval", ""))
    return None
