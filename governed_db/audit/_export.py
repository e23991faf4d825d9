"""Audit records in the formats other tools read: CSV (spreadsheets), ECS JSON lines (Elastic,
Splunk and other SIEM pipelines) and OpenLineage run events (see ``_openlineage``).

Every export keeps the chain fields (``chain``, ``seq``, ``prev``, ``hash``; ``sig`` where the
record was signed), one output record per audit record, checkpoints included: a SIEM that
receives the export can still see a deleted or reordered record (:func:`chain_gaps`) without
our verifier. What an export carries is what the audit record carries: normalized statement
text (literals are ``$n`` placeholders), table and column *names*, strategies — never a value.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = ["CSV_COLUMNS", "ECS_VERSION", "chain_gaps", "from_csv_row", "from_ecs", "to_csv_row",
           "to_ecs", "write_csv", "write_ecs"]

ECS_VERSION = "8.11.0"

# Stable column order (append new columns at the end only: spreadsheets and SIEM parsers map
# them by position as often as by name).
CSV_COLUMNS = (
    "ts", "type", "chain", "seq", "prev", "hash", "sig", "key_id", "v", "id", "session",
    "identity_kind", "identity_id", "purpose", "on_behalf_of", "model", "roles", "tool_call_id",
    "host", "port", "dbname", "db_user", "kinds", "summary", "fingerprint", "normalized",
    "reads", "writes", "columns", "masked", "decision", "would", "rules", "approval",
    "outcome", "rowcount", "affected_rows", "sqlstate", "duration_ms", "trace_id", "span_id",
    "details",
)

# Fields of a record the flat columns above carry; anything else goes to ``details`` (JSON).
_COVERED = frozenset({"ts", "type", "chain", "seq", "prev", "hash", "sig", "key_id", "v", "id",
                      "identity", "db", "statement", "decision", "columns", "masked", "outcome",
                      "duration_ms", "trace", "lineage"})


def _ident(rec: Mapping[str, Any]) -> Mapping[str, Any]:
    return rec.get("identity") or {}


def tool_call_id(rec: Mapping[str, Any]) -> str | None:
    """The tool call (or run) a record belongs to, from the identity's attributes."""
    attrs = _ident(rec).get("attributes") or {}
    value = attrs.get("tool_call_id") or attrs.get("run_id")
    return str(value) if value is not None else None


def session_id(rec: Mapping[str, Any]) -> str | None:
    """The governed connection (session) a record belongs to."""
    value = (rec.get("db") or {}).get("session")
    return str(value) if value is not None else None


def _join(values: Iterable[Any] | None) -> str:
    return ";".join(str(v) for v in values or ())


def _split(text: str) -> list[str]:
    return text.split(";") if text else []


def _num(text: str) -> int | float | None:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def to_csv_row(rec: Mapping[str, Any]) -> dict[str, str]:
    """One audit record as a flat row of :data:`CSV_COLUMNS` (lists joined with ``;``)."""
    ident = _ident(rec)
    db = rec.get("db") or {}
    stmt = rec.get("statement") or {}
    dec = rec.get("decision") or {}
    out = rec.get("outcome") or {}
    trace = rec.get("trace") or {}
    details = {k: v for k, v in rec.items() if k not in _COVERED}
    if isinstance(rec.get("outcome"), Mapping):
        rest = {k: v for k, v in out.items()
                if k not in ("outcome", "rowcount", "affected_rows", "sqlstate")}
        if rest:
            details["outcome"] = rest
    row = {
        "ts": rec.get("ts"), "type": rec.get("type"), "chain": rec.get("chain"),
        "seq": rec.get("seq"), "prev": rec.get("prev"), "hash": rec.get("hash"),
        "sig": rec.get("sig"), "key_id": rec.get("key_id"), "v": rec.get("v"),
        "id": rec.get("id"), "session": session_id(rec),
        "identity_kind": ident.get("kind"), "identity_id": ident.get("id"),
        "purpose": ident.get("purpose"), "on_behalf_of": ident.get("on_behalf_of"),
        "model": ident.get("model"), "roles": _join(ident.get("roles")),
        "tool_call_id": tool_call_id(rec),
        "host": db.get("host"), "port": db.get("port"), "dbname": db.get("dbname"),
        "db_user": db.get("user"),
        "kinds": _join(stmt.get("kinds")), "summary": stmt.get("summary"),
        "fingerprint": stmt.get("fingerprint"), "normalized": stmt.get("normalized"),
        "reads": _join(stmt.get("reads")), "writes": _join(stmt.get("writes")),
        "columns": _join(rec.get("columns")),
        "masked": _join(f"{k}={v}" for k, v in sorted((rec.get("masked") or {}).items())),
        "decision": dec.get("action"), "would": dec.get("would"), "rules": _join(dec.get("rules")),
        "approval": dec.get("approval"),
        "outcome": out.get("outcome") if isinstance(out, Mapping) else out,
        "rowcount": out.get("rowcount") if isinstance(out, Mapping) else None,
        "affected_rows": out.get("affected_rows") if isinstance(out, Mapping) else None,
        "sqlstate": out.get("sqlstate") if isinstance(out, Mapping) else None,
        "duration_ms": rec.get("duration_ms"),
        "trace_id": trace.get("trace_id"), "span_id": trace.get("span_id"),
        "details": json.dumps(details, sort_keys=True, separators=(",", ":")) if details else "",
    }
    return {k: "" if v is None else str(v) for k, v in row.items()}


def from_csv_row(row: Mapping[str, str]) -> dict[str, Any]:
    """Parse a row written by :func:`to_csv_row` back into its fields (typed where known)."""
    out: dict[str, Any] = {k: (v if v != "" else None) for k, v in row.items()}
    for key in ("seq", "v", "port", "rowcount", "affected_rows", "duration_ms"):
        out[key] = _num(row.get(key, ""))
    for key in ("roles", "kinds", "reads", "writes", "columns", "rules"):
        out[key] = _split(row.get(key, ""))
    out["masked"] = dict(item.split("=", 1) for item in _split(row.get("masked", "")))
    out["details"] = json.loads(row["details"]) if row.get("details") else {}
    return out


def write_csv(records: Iterable[Mapping[str, Any]], fh: Any) -> int:
    """Write a header and one row per record to the text file ``fh``; return the count."""
    writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    n = 0
    for rec in records:
        writer.writerow(to_csv_row(rec))
        n += 1
    return n


def read_csv(text: str) -> list[dict[str, Any]]:
    """The rows of a CSV export, parsed (for tests and SIEM-side checks)."""
    return [from_csv_row(row) for row in csv.DictReader(io.StringIO(text))]


# -- ECS ------------------------------------------------------------------------------------

_CATEGORY = {"statement": ["database"], "connect": ["session"], "close": ["session"],
             "commit": ["database"], "rollback": ["database"], "approval": ["iam"],
             "checkpoint": ["configuration"], "rotated": ["configuration"]}


def _ecs_outcome(rec: Mapping[str, Any]) -> str:
    out = rec.get("outcome")
    status = out.get("outcome") if isinstance(out, Mapping) else out
    if status == "ok" or rec.get("type") in ("connect", "close", "commit", "checkpoint",
                                               "rotated"):
        return "success"
    if status in ("denied", "rolled_back", "error", "approval_required"):
        return "failure"
    return "unknown"


def _ecs_types(rec: Mapping[str, Any]) -> list[str]:
    kind = rec.get("type")
    if kind == "connect":
        return ["start"]
    if kind == "close":
        return ["end"]
    if kind != "statement":
        return ["info"]
    out = rec.get("outcome") or {}
    if out.get("outcome") in ("denied", "rolled_back", "approval_required"):
        return ["denied"]
    stmt = rec.get("statement") or {}
    return ["change"] if stmt.get("writes") else ["access"]


def to_ecs(rec: Mapping[str, Any]) -> dict[str, Any]:
    """One audit record as an Elastic Common Schema document.

    ``event.*``, ``user.*``, ``service.*``, ``server.*``, ``trace.id``/``span.id`` and
    ``related.*`` are ECS fields; ``db.*`` follows OpenTelemetry's database conventions
    (``db.statement`` is the normalized text); ``labels`` carry the chain (strings, as ECS
    labels are keywords); everything governance-specific is under ``governed_db``.
    """
    ident = _ident(rec)
    db = rec.get("db") or {}
    stmt = rec.get("statement") or {}
    dec = rec.get("decision") or {}
    out = rec.get("outcome") if isinstance(rec.get("outcome"), Mapping) else {}
    kind = str(rec.get("type"))
    doc: dict[str, Any] = {
        "@timestamp": rec.get("ts"),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "event", "category": _CATEGORY.get(kind, ["database"]),
            "type": _ecs_types(rec), "action": kind if kind != "statement" else
            f"statement-{(dec.get('action') or 'allow')}",
            "outcome": _ecs_outcome(rec), "dataset": "governed_db.audit",
            "provider": "governed_db", "module": "governed_db", "sequence": rec.get("seq"),
        },
        "service": {"name": "governed_db", "type": "postgresql"},
        "labels": {k: str(rec[k]) for k in ("chain", "seq", "prev", "hash", "sig", "key_id", "v")
                   if rec.get(k) is not None},
    }
    if rec.get("id"):
        doc["event"]["id"] = rec["id"]
    if rec.get("duration_ms") is not None:
        doc["event"]["duration"] = int(float(rec["duration_ms"]) * 1_000_000)  # nanoseconds
    if ident:
        user: dict[str, Any] = {"id": ident.get("id"), "name": ident.get("id")}
        if ident.get("roles"):
            user["roles"] = list(ident["roles"])
        doc["user"] = user
        related = [u for u in (ident.get("id"), ident.get("on_behalf_of")) if u]
        doc["related"] = {"user": related}
    if rec.get("hash"):
        doc.setdefault("related", {})["hash"] = [rec["hash"]]
    if db:
        doc["server"] = {k: v for k, v in (("address", db.get("host")),
                                           ("port", db.get("port"))) if v is not None}
        dbdoc: dict[str, Any] = {"system": "postgresql", "name": db.get("dbname"),
                                 "user": db.get("user")}
        if stmt:
            dbdoc["statement"] = stmt.get("normalized")
            dbdoc["operation"] = ",".join(stmt.get("kinds") or ()) or None
        doc["db"] = {k: v for k, v in dbdoc.items() if v is not None}
    trace = rec.get("trace") or {}
    if trace.get("trace_id"):
        doc["trace"] = {"id": trace["trace_id"]}
        doc["span"] = {"id": trace.get("span_id")}
    gov: dict[str, Any] = {"record_type": kind}
    for key in ("session",):
        if db.get(key):
            gov[key] = db[key]
    if ident:
        gov["identity"] = {k: ident[k] for k in ("kind", "purpose", "on_behalf_of", "model")
                           if ident.get(k)}
        if ident.get("attributes"):
            gov["identity"]["attributes"] = ident["attributes"]
    if stmt:
        tables = sorted(set(stmt.get("reads") or ()) | set(stmt.get("writes") or ()))
        gov["tables"] = {"read": list(stmt.get("reads") or ()),
                         "written": list(stmt.get("writes") or ()), "all": tables}
        gov["statement"] = {k: stmt[k] for k in ("fingerprint", "summary", "params")
                            if stmt.get(k) is not None}
    if dec:
        gov["decision"] = dict(dec)
    if out:
        gov["outcome"] = dict(out)
    if rec.get("columns") is not None:
        gov["columns"] = list(rec["columns"])
    if rec.get("masked") is not None:
        gov["masked"] = dict(rec["masked"])
    if rec.get("lineage") is not None:
        gov["lineage"] = rec["lineage"]
    for key, value in rec.items():
        if key not in _COVERED and key not in gov:
            gov[key] = value  # event-specific fields (close checkpoint flag, rotation links)
    doc["governed_db"] = gov
    return doc


def from_ecs(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The audit fields an ECS document carries, back in the record's shape (chain fields,
    id, type, identity, tables, decision) — for round-trip tests and SIEM-side checks."""
    labels = doc.get("labels") or {}
    gov = doc.get("governed_db") or {}
    out: dict[str, Any] = {"ts": doc.get("@timestamp"), "type": gov.get("record_type")}
    for key in ("chain", "prev", "hash", "sig", "key_id"):
        if key in labels:
            out[key] = labels[key]
    for key in ("seq", "v"):
        if key in labels:
            out[key] = int(labels[key])
    event = doc.get("event") or {}
    if event.get("id"):
        out["id"] = event["id"]
    user = doc.get("user") or {}
    if user:
        out["identity"] = {"id": user.get("id"), **(gov.get("identity") or {})}
        if user.get("roles"):
            out["identity"]["roles"] = user["roles"]
    if "tables" in gov:
        out["statement"] = {"reads": gov["tables"]["read"], "writes": gov["tables"]["written"],
                            "normalized": (doc.get("db") or {}).get("statement"),
                            **gov.get("statement", {})}
    for key in ("decision", "outcome", "columns", "masked", "lineage", "session"):
        if key in gov:
            out[key] = gov[key]
    return out


def write_ecs(records: Iterable[Mapping[str, Any]], fh: Any) -> int:
    """One ECS JSON document per line; return the count."""
    n = 0
    for rec in records:
        fh.write(json.dumps(to_ecs(rec), sort_keys=True, separators=(",", ":"),
                            ensure_ascii=False) + "\n")
        n += 1
    return n


def chain_gaps(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """What a SIEM can check on exported rows alone (no key, no canonical form): per chain,
    ``seq`` counts up by one from 1 and each ``prev`` is the previous record's ``hash``.
    Returns one message per break, in order (empty when every chain is contiguous)."""
    last: dict[str, tuple[int, str]] = {}
    gaps: list[str] = []
    for row in rows:
        chain, seq, prev, digest = row.get("chain"), row.get("seq"), row.get("prev"), \
            row.get("hash")
        if chain is None or seq is None:
            continue
        seq = int(seq)
        before = last.get(str(chain))
        if before is None:
            if seq != 1 and prev != "0" * 64:
                gaps.append(f"chain {str(chain)[:8]}: starts at record {seq}, not 1")
        elif seq != before[0] + 1 or prev != before[1]:
            gaps.append(f"chain {str(chain)[:8]}: record {seq} follows record {before[0]}"
                        + ("" if prev == before[1] else " and does not link to its hash"))
        last[str(chain)] = (seq, str(digest))
    return gaps


def iter_lines(text: str) -> Iterator[dict[str, Any]]:
    """The JSON documents of a JSON-lines export."""
    for line in text.splitlines():
        if line.strip():
            yield json.loads(line)
