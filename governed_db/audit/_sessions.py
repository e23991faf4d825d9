"""What one agent run did, end to end: ``audit report --session`` / ``--tool-call``.

A *session* is one governed connection: every record it wrote carries ``db.session`` (a
random id made at connect). A *tool call* is the set of statements whose identity carries
that ``tool_call_id`` (or ``run_id``) attribute — LangChain's ``ToolCallIdentity`` sets it —
plus the commits and rollbacks that ended their transactions on the same sessions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ._export import session_id, tool_call_id
from ._verify import iter_records

__all__ = ["session_report"]

_TX_EVENTS = ("commit", "rollback")


def _matches(rec: Mapping[str, Any], session: str | None, tool_call: str | None) -> bool:
    if session is not None and session_id(rec) != session and \
            not (len(session) >= 8 and (session_id(rec) or "").startswith(session)):
        return False
    return tool_call is None or tool_call_id(rec) == tool_call


def session_report(path: str | Path | Iterable[Mapping[str, Any]], *,
                   session: str | None = None, tool_call: str | None = None,
                   include_catalog: bool = False) -> dict[str, Any]:
    """Statements, decisions, rows, tables/columns, masked columns, approvals and commit
    outcomes of one session (a prefix of 8+ characters of its id will do) or tool call."""
    if session is None and tool_call is None:
        raise ValueError("give a session id or a tool call id")
    records = (rec for _, rec, _ in iter_records(path)) if isinstance(path, (str, Path)) \
        else iter(path)
    statements: list[dict[str, Any]] = []
    transactions: list[dict[str, Any]] = []
    sessions: dict[str, dict[str, Any]] = {}
    open_tx: dict[str, list[dict[str, Any]]] = {}  # session -> statements since its last end
    tables: dict[str, dict[str, Any]] = {}
    identities: set[str] = set()
    models: set[str] = set()
    purposes: set[str] = set()
    approvals: list[dict[str, Any]] = []
    totals = {"statements": 0, "ok": 0, "denied": 0, "approval_required": 0, "rolled_back": 0,
              "error": 0, "rows": 0, "affected_rows": 0}
    for rec in records:
        if rec is None:
            continue
        kind = rec.get("type")
        sid = session_id(rec) or ""
        if kind in _TX_EVENTS or kind in ("connect", "close"):
            if sid in sessions or (tool_call is None and _matches(rec, session, None)):
                entry = sessions.setdefault(sid, {"session": sid, "connected": None,
                                                  "closed": None})
                if kind == "connect":
                    entry["connected"] = rec.get("ts")
                elif kind == "close":
                    entry["closed"] = rec.get("ts")
                elif open_tx.get(sid):
                    ended = open_tx.pop(sid)
                    for st in ended:
                        st["transaction"] = "committed" if kind == "commit" else "rolled back"
                    transactions.append({"ts": rec.get("ts"), "session": sid, "outcome": kind,
                                         "statements": [st["id"] for st in ended]})
            continue
        if kind != "statement" or not _matches(rec, session, tool_call):
            continue
        sessions.setdefault(sid, {"session": sid, "connected": None, "closed": None})
        ident = rec.get("identity") or {}
        identities.add(f"{ident.get('kind')}:{ident.get('id')}")
        if ident.get("model"):
            models.add(ident["model"])
        if ident.get("purpose"):
            purposes.add(ident["purpose"])
        stmt = rec.get("statement") or {}
        dec = rec.get("decision") or {}
        out = rec.get("outcome") or {}
        status = out.get("outcome") or "unknown"
        rows = int(out.get("rowcount") or 0) if status == "ok" else 0
        entry = {"id": rec.get("id"), "ts": rec.get("ts"), "seq": rec.get("seq"),
                 "chain": rec.get("chain"), "session": sid, "tool_call": tool_call_id(rec),
                 "identity": f"{ident.get('kind')}:{ident.get('id')}",
                 "summary": stmt.get("summary"), "kinds": list(stmt.get("kinds") or ()),
                 "normalized": stmt.get("normalized"), "decision": dec.get("action"),
                 "rules": list(out.get("rules") or dec.get("rules") or ()), "outcome": status,
                 "rows": rows, "affected_rows": out.get("affected_rows"),
                 "reads": list(stmt.get("reads") or ()), "writes": list(stmt.get("writes") or ()),
                 "columns": list(rec.get("columns") or ()), "masked": dict(rec.get("masked") or {}),
                 "approval": dec.get("approval"), "transaction": None}
        statements.append(entry)
        totals["statements"] += 1
        totals[status if status in totals else "error"] += 1
        totals["rows"] += rows
        totals["affected_rows"] += int(out.get("affected_rows") or 0)
        if dec.get("approval") or status == "approval_required":
            approvals.append({"request": dec.get("approval"), "statement": rec.get("id"),
                              "summary": stmt.get("summary"), "outcome": status})
        if status == "ok" and (stmt.get("writes") or set(stmt.get("kinds") or ())
                               & {"INSERT", "UPDATE", "DELETE", "MERGE"}):
            open_tx.setdefault(sid, []).append(entry)
        if status != "ok":
            continue
        for access, names in (("reads", stmt.get("reads") or ()),
                              ("writes", stmt.get("writes") or ())):
            for t in names:
                if not include_catalog and t.startswith(("pg_", "information_schema.")):
                    continue
                e = tables.setdefault(t, {"table": t, "reads": 0, "writes": 0, "rows": 0,
                                          "columns": set(), "masked": {}})
                e[access] += 1
                e["rows"] += rows
                bare = t.split(".")[-1]
                for src in rec.get("columns") or ():
                    parts = str(src).split(".")
                    if len(parts) >= 3 and parts[-2] == bare:
                        e["columns"].add(parts[-1])
                for name, how in (rec.get("masked") or {}).items():
                    e["masked"][name] = how
    for ended in open_tx.values():
        for st in ended:
            st["transaction"] = "open (no commit recorded)"
    for e in tables.values():
        e["columns"] = sorted(e["columns"])
    return {"session": session, "tool_call": tool_call, "identities": sorted(identities),
            "models": sorted(models), "purposes": sorted(purposes),
            "sessions": sorted(sessions.values(), key=lambda s: s["session"]),
            "first": statements[0]["ts"] if statements else None,
            "last": statements[-1]["ts"] if statements else None,
            "totals": totals, "statements": statements,
            "tables": sorted(tables.values(), key=lambda e: e["table"]),
            "approvals": approvals, "transactions": transactions}
