"""PL/pgSQL bodies: parsed by libpg_query, walked once for DO blocks and function bodies alike.

A body is judged by the SQL it embeds only when it is made of constructs on an allow-list
(:data:`PLPGSQL_UNDERSTOOD`); every other construct (dynamic ``EXECUTE``, cursors, ``CALL``,
``COMMIT``, a node type the list does not name) is reported so that the caller fails closed.
``DO`` (``_statements._h_do``) and ``CREATE FUNCTION`` bodies (``_effects``) share this walk;
they differ only in the list (a function may ``RETURN NEXT``/``RETURN QUERY``) and in what they
do with a construct off the list (a DO block becomes opaque; a function body's effect lists why).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["PLPGSQL_UNDERSTOOD", "embedded_sql", "parse_plpgsql", "plpgsql_nodes"]

# PL/pgSQL constructs a body may use and still be judged by what it does (an allow-list):
# blocks, variables, assignments, control flow, RAISE/ASSERT, GET DIAGNOSTICS, exception
# handlers and embedded static SQL (analyzed as the body's own statements).
PLPGSQL_UNDERSTOOD = frozenset({
    "PLpgSQL_function", "PLpgSQL_stmt_block", "PLpgSQL_exception_block", "PLpgSQL_exception",
    "PLpgSQL_condition", "PLpgSQL_var", "PLpgSQL_rec", "PLpgSQL_row", "PLpgSQL_recfield",
    "PLpgSQL_type", "PLpgSQL_expr", "PLpgSQL_stmt_assign", "PLpgSQL_stmt_if",
    "PLpgSQL_if_elsif", "PLpgSQL_stmt_case", "PLpgSQL_case_when", "PLpgSQL_stmt_loop",
    "PLpgSQL_stmt_while", "PLpgSQL_stmt_fori", "PLpgSQL_stmt_fors", "PLpgSQL_stmt_foreach_a",
    "PLpgSQL_stmt_exit", "PLpgSQL_stmt_return", "PLpgSQL_stmt_raise", "PLpgSQL_raise_option",
    "PLpgSQL_stmt_assert", "PLpgSQL_stmt_perform", "PLpgSQL_stmt_execsql",
    "PLpgSQL_stmt_getdiag", "PLpgSQL_diag_item"})

_TAG = "$gdb_body$"


def parse_plpgsql(src: str, *, arguments: str = "", returns: str = "void") -> Any | None:
    """libpg_query's PL/pgSQL tree of a body, or None when it does not parse (fail closed:
    an unparsed body may do anything) or contains the quoting tag."""
    import pgparse  # local: keeps the module importable for docs without the extension

    if _TAG in src:
        return None
    try:
        return pgparse.parse_pgsql(f"CREATE FUNCTION gdb_body({arguments}) RETURNS {returns}"
                                   f" LANGUAGE plpgsql AS {_TAG}{src}{_TAG}")
    except Exception:  # noqa: BLE001 - fail closed, as above
        return None


def plpgsql_nodes(tree: Any) -> Iterator[tuple[str, Any]]:
    """``(node type, body)`` of every PL/pgSQL node of a tree (and of every ``dynquery``), depth
    first. An embedded SQL text (``PLpgSQL_expr`` with a dict body) is yielded, not entered."""
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            if key.startswith("PLpgSQL_") or key == "dynquery":
                yield key, value
                if key == "PLpgSQL_expr" and isinstance(value, dict):
                    continue
            if isinstance(value, (dict, list)):
                stack.append(value)


def embedded_sql(expr: dict[str, Any]) -> str:
    """The SQL text of a ``PLpgSQL_expr``: a statement (parse mode 0) as it stands, an
    expression (2) or the right side of an assignment (3-5) as a SELECT."""
    query = str(expr.get("query", ""))
    mode = int(expr.get("parseMode", 0) or 0)
    if mode == 0:
        return query
    if mode >= 3:  # an assignment: target := expression
        # The target is SQL too: a subscript (``a[(SELECT ssn FROM users)] := 1``) or a field
        # is evaluated by the server (attack5 F1/F5). Both sides become select items; should
        # the split fall inside a literal or a subscript, every token is still in the text.
        for sep in (":=", "="):
            if sep in query:
                target, value = query.split(sep, 1)
                return f"SELECT {target}, {value}"
    return "SELECT " + query
