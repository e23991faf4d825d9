"""Statement facts out of a parsed string: the handler table, statement kinds, the entry points.

``extract_all`` is what ``analyze`` calls: one ``StatementFacts`` per statement, sharing
PREPARE/DECLARE state in order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from . import _statements as st
from ._facts import StatementFacts
from ._nodes import Node, relname
from ._vocabulary import _SIMPLE_KINDS, _TX_KINDS
from ._walk import HANDLERS, _Collector, _walk_fields

__all__ = ["extract_all", "extract_facts", "split_statements"]


HANDLERS.update({
    "ViewStmt": st._stored("CREATE", "view", ("query",)),
    "RuleStmt": st._stored("CREATE", "relation", ("actions", "whereClause")),
    "CreateFunctionStmt": st._stored("CREATE", None),
    "CreateTrigStmt": st._stored("CREATE", "relation", ("whenClause",)),
    "IndexStmt": st._stored("CREATE", "relation", ("indexParams", "whereClause")),
    "CreateStmt": st._stored("CREATE", "relation", ("tableElts", "constraints")),
    "AlterTableStmt": st._h_alter_table,
    "RenameStmt": st._h_rename,
    "DropStmt": st._h_drop,
    "TruncateStmt": st._h_relations("TRUNCATE", "relations"),
    "LockStmt": st._h_relations("LOCK", "relations"),
    "ClusterStmt": st._stored("CLUSTER", "relation", ("indexname",)),
    "ReindexStmt": st._stored("REINDEX", "relation", ("name",)),
    "RefreshMatViewStmt": st._stored("REFRESH", "relation", ("options",)),
    "VacuumStmt": st._h_vacuum,
    "GrantStmt": st._h_grant,
    "CommentStmt": st._h_comment,
    "TransactionStmt": st._h_tx,
    "VariableSetStmt": st._h_set,
    "DiscardStmt": st._h_discard,
    "PrepareStmt": st._h_prepare,
    "ExecuteStmt": st._h_execute,
    "DeclareCursorStmt": st._h_declare,
    "FetchStmt": st._h_fetch,
    "ClosePortalStmt": st._h_close,
    "DeallocateStmt": st._h_deallocate,
    "DoStmt": st._h_do,
    "CallStmt": st._h_opaque("CALL", "CALL runs a procedure body the analyzer cannot see"),
})


for _typ, _kind in _SIMPLE_KINDS.items():
    HANDLERS.setdefault(_typ, st._h_simple(_kind))


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
    known = typ in HANDLERS or bool(_kind_of(typ))
    if typ in HANDLERS:
        if typ == "SelectStmt":
            c.kinds.add("SELECT")
        HANDLERS[typ](body, c, True, frozenset())
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
        explain_analyze=c.explain_analyze, vacuum_full=c.vacuum_full,
        row_kinds=frozenset(c.rows),
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
