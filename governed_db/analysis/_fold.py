"""Dynamic SQL built only from a body's own constants: the texts a ``DO`` block's ``EXECUTE``
would send, folded client-side.

Used for one thing: what a server message may echo (``_redact.Allowed``). A DO block running
``EXECUTE format('insert into "%s" values (1)', chr(8364))`` gets ``relation "€" does not
exist`` back; "€" is not a token of the text sent, but it is computed from that text's
constants alone, so echoing it confirms nothing about data. The folded text's tokens count as
sent text.

The folding may differ from the server's (a ``quote_ident`` keyword rule not modelled, a
function of the same name in another schema): a folded text is trusted for echo safety only
when the server's own ``QUERY:`` of the message equals it (``ErrorTextStage._do_echo_safe``),
and its tokens only echo what is a function of the statement's literals (``_redact`` rule 3).
The folded text is never analyzed as the statement that runs: governance still judges the
dynamic ``EXECUTE`` as opaque.

An allow-list of node shapes and functions: anything else (a variable, a column, a subquery, a
function not listed, a format spec with a width) is not folded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["dynamic_constant_texts", "fold_constant", "fold_execute"]

# The most characters a folded value may have: a statement cannot grow a guess beyond its own
# size by much (``repeat`` is not on the list), this only bounds pathological inputs.
_MAX_LEN = 65536


class _NotConstant(Exception):
    """The expression is not built from constants by a listed function."""


def _quote_ident(value: str | None) -> str | None:
    if value is None:
        return None
    if re.fullmatch(r"[a-z_][a-z0-9_]*", value):
        return value
    return '"' + value.replace('"', '""') + '"'


def _quote_literal(value: str | None) -> str | None:
    if value is None:
        return None
    body = value.replace("'", "''")
    if "\\" in body:
        return "E'" + body.replace("\\", "\\\\") + "'"
    return "'" + body + "'"


def _chr(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        code = int(value)
    except ValueError:
        raise _NotConstant from None
    if not 0 < code <= 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        raise _NotConstant  # the server raises: nothing is sent
    return chr(code)


def _concat(*values: str | None) -> str:
    return "".join(v for v in values if v is not None)


def _concat_ws(sep: str | None, *values: str | None) -> str | None:
    if sep is None:
        return None
    return sep.join(v for v in values if v is not None)


_FORMAT_SPEC = re.compile(r"%(?:(\d+)\$)?([sIL%])")


def _format(fmt: str | None, *args: str | None) -> str | None:
    if fmt is None:
        return None
    out: list[str] = []
    pos = 0
    index = 0
    while True:
        at = fmt.find("%", pos)
        if at < 0:
            out.append(fmt[pos:])
            break
        out.append(fmt[pos:at])
        m = _FORMAT_SPEC.match(fmt, at)
        if m is None:  # a width, a flag, '*': not folded
            raise _NotConstant
        conv = m.group(2)
        pos = m.end()
        if conv == "%":
            out.append("%")
            continue
        if m.group(1) is not None:
            index = int(m.group(1)) - 1
        if not 0 <= index < len(args):
            raise _NotConstant  # the server raises "too few arguments for format()"
        arg = args[index]
        index += 1
        if conv == "s":
            out.append("" if arg is None else arg)
        elif conv == "I":
            if arg is None:
                raise _NotConstant
            out.append(_quote_ident(arg) or "")
        else:
            out.append("NULL" if arg is None else (_quote_literal(arg) or ""))
    return "".join(out)


_FUNCTIONS: dict[str, Callable[..., str | None]] = {
    "format": _format, "chr": _chr, "concat": _concat, "concat_ws": _concat_ws,
    "quote_ident": _quote_ident, "quote_literal": _quote_literal,
    # not lower()/upper(): the server's follow the database's locale, Python's do not
}
# casts that keep a text as it is (not bpchar: it drops trailing spaces; not name: it cuts)
_TEXT_TYPES = frozenset({"text", "varchar"})


def fold_constant(node: Any) -> str | None:
    """The text value of an expression tree built only from constants by listed functions;
    ``None`` is SQL NULL. Raises ``_NotConstant`` for anything else."""
    if not isinstance(node, dict) or len(node) != 1:
        raise _NotConstant
    (kind, body), = node.items()
    if kind == "A_Const":
        if body.get("isnull"):
            return None
        # strings and integers only: a boolean or numeric constant's text depends on where it
        # is used (concat(true) is 't', true::text 'true'; 1e3 is 1000)
        if "sval" in body:
            return str((body["sval"] or {}).get("sval", ""))
        if "ival" in body:
            return str((body["ival"] or {}).get("ival", 0))
        raise _NotConstant
    if kind == "TypeCast":
        names = [n.get("String", {}).get("sval") for n in body["typeName"].get("names", ())]
        if names[-1:] and names[-1] in _TEXT_TYPES and names[:-1] in ([], ["pg_catalog"]) \
                and not body["typeName"].get("typmods") and not body["typeName"].get("arrayBounds"):
            return fold_constant(body.get("arg"))
        raise _NotConstant
    if kind == "A_Expr":
        name = [n.get("String", {}).get("sval") for n in body.get("name", ())]
        if body.get("kind") == "AEXPR_OP" and name in (["||"], ["pg_catalog", "||"]):
            left, right = fold_constant(body.get("lexpr")), fold_constant(body.get("rexpr"))
            return None if left is None or right is None else _bounded(left + right)
        raise _NotConstant
    if kind == "FuncCall":
        name = [n.get("String", {}).get("sval") for n in body.get("funcname", ())]
        if name[:-1] not in ([], ["pg_catalog"]) or any(
                body.get(k) for k in ("agg_order", "agg_filter", "over", "agg_star",
                                      "agg_distinct", "func_variadic")):
            raise _NotConstant
        fn = _FUNCTIONS.get(str(name[-1]))
        if fn is None:
            raise _NotConstant
        args = [fold_constant(a) for a in body.get("args") or ()]
        try:
            value = fn(*args)
        except TypeError:  # wrong number of arguments: the server raises
            raise _NotConstant from None
        return None if value is None else _bounded(value)
    raise _NotConstant


def _bounded(value: str) -> str:
    if len(value) > _MAX_LEN:
        raise _NotConstant
    return value


def fold_execute(stmt: Any) -> str | None:
    """The text a ``PLpgSQL_stmt_dynexecute`` sends when its query is built from constants
    alone (no ``USING`` parameters), else None."""
    import pgparse

    if not isinstance(stmt, dict) or stmt.get("params"):
        return None
    expr = (stmt.get("query") or {}).get("PLpgSQL_expr") or {}
    query = expr.get("query")
    if not isinstance(query, str):
        return None
    try:
        (parsed,) = pgparse.parse("SELECT " + query)
        select = parsed["stmt"]["SelectStmt"]
        targets = select["targetList"]
        if len(targets) != 1 or set(select) - {"targetList", "limitOption", "op"}:
            return None
        return fold_constant(targets[0]["ResTarget"]["val"])
    except (_NotConstant, KeyError, TypeError, ValueError, AttributeError):
        return None
    except Exception:  # noqa: BLE001 - pgparse's error: not an expression we can fold
        return None


def dynamic_constant_texts(body: str) -> list[str]:
    """The SQL texts the ``EXECUTE`` statements of a PL/pgSQL body would send, for those
    built only from the body's constants (see the module docstring)."""
    from ._plpgsql import parse_plpgsql, plpgsql_nodes

    tree = parse_plpgsql(body)
    if tree is None:
        return []
    out: list[str] = []
    for key, value in plpgsql_nodes(tree):
        if key == "PLpgSQL_stmt_dynexecute":
            text = fold_execute(value)
            if text is not None:
                out.append(text)
    return out
