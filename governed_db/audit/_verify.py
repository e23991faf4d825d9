"""Offline verification and querying of audit logs (needs only the public key)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._canonical import NotIJSON, canonical_of_line
from ._log import SCHEMA_VERSIONS, key_id_of, record_hash

__all__ = ["TrailReport", "VerificationError", "VerifyReport", "iter_records", "query", "report",
           "verify", "verify_many"]


class VerificationError(Exception):
    """The log was edited, reordered, truncated or signed with another key.

    Attributes:
        index: 1-based line number of the first bad record.
        reason: what is wrong with it.
    """

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"record {index}: {reason}")
        self.index = index
        self.reason = reason


@attrs.frozen(kw_only=True)
class VerifyReport:
    records: int
    chains: int
    signed_through: dict[str, int]
    unsigned_tail: dict[str, int]
    open_chains: tuple[str, ...]
    torn_line: int | None = None  # a partial final line (writer killed mid-write), ignored
    chain_ends: dict[str, tuple[int, str]] = attrs.field(factory=dict)  # chain: (seq, hash)
    rotations: tuple[dict[str, Any], ...] = ()  # "rotated" records: where a chain continued

    @property
    def unsigned_chains(self) -> dict[str, int]:
        """Chains none of whose records carries a signature: ``{chain: records}``. With a
        public key nothing attributes them to its signer (a chain appended whole by someone
        with write access to the file, or a writer killed before its first checkpoint)."""
        return {c: end[0] for c, end in self.chain_ends.items()
                if end[0] and not self.signed_through.get(c)}


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(Path(path).expanduser().read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


def is_store_url(path: str | Path) -> bool:
    """A PostgreSQL audit store (``postgresql://...``) rather than a JSONL file."""
    return str(path).startswith(("postgresql://", "postgres://"))


def iter_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """``(line number, record or None if unparseable, raw line)`` for each line of a JSONL
    log, or of a PostgreSQL store (``postgresql://...``, chain by chain)."""
    if is_store_url(path):
        from ._sinks import fetch_lines

        lines: Any = (line + "\n" for line in fetch_lines(str(path)))
        yield from _parse_lines(lines)
        return
    with open(path, "rb") as fh:
        yield from _parse_lines(raw.decode("utf-8", "replace") for raw in fh)


def _parse_lines(lines: Any) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    for n, text in enumerate(lines, 1):
        try:
            rec = json.loads(text)
            yield n, rec if isinstance(rec, dict) else None, text
        except ValueError:
            yield n, None, text


# The records the writer always signs (in strict mode it signs every record).
SIGNED_TYPES = ("checkpoint", "rotated", "record_failed")


def verify(path: str | Path, public_key: Ed25519PublicKey | None = None, *,
           allow_open: bool = False) -> VerifyReport:
    """Check every chain of the log; return a report or raise VerificationError.

    Detects: an edited byte (hash mismatch), a deleted or reordered record (sequence / previous
    hash mismatch), a forged record (bad or missing signature at the next checkpoint), another
    signing key (key id / signature), and truncation (a chain that does not end with its close
    checkpoint; ``allow_open`` accepts chains still being written).
    """
    key_id = key_id_of(public_key) if public_key is not None else None
    state: dict[str, dict[str, Any]] = {}
    count = 0
    lines = list(iter_records(path))
    torn_line = None
    rotations: list[dict[str, Any]] = []
    for n, rec, raw in lines:
        if rec is None:
            if n == len(lines) and not raw.endswith("\n"):
                if allow_open:
                    torn_line = n
                    break
                raise VerificationError(n, "torn final record (the writer was killed mid-write);"
                                           f" records before line {n} verify with --allow-open")
            raise VerificationError(n, "not a valid JSON record (edited)")
        count += 1
        chain = rec.get("chain")
        if not isinstance(chain, str):
            raise VerificationError(n, "record has no chain id (edited or foreign line)")
        st = state.setdefault(chain, {"seq": 0, "prev": "0" * 64, "signed": 0, "last_line": n,
                                      "closed": False})
        if st["closed"]:
            raise VerificationError(n, f"record after the close checkpoint of chain {chain[:8]}")
        version = rec.get("v")
        if version not in SCHEMA_VERSIONS:
            raise VerificationError(n, f"schema version {version!r} is not one this verifier"
                                       f" reads ({', '.join(map(str, SCHEMA_VERSIONS))}):"
                                       " edited, or written by a newer governed_db")
        try:
            # v2: the line parsed strictly — a lenient parser would read a NaN token or a
            # member name given twice one way and another verifier another way, or not at all.
            digest = record_hash(rec) if version == 1 else \
                hashlib.sha256(canonical_of_line(raw)).hexdigest()
        except NotIJSON:
            raise VerificationError(n, "not I-JSON (NaN, Infinity or a member name twice):"
                                       " edited") from None
        except (TypeError, ValueError):  # no canonical form (a NaN in a v1 line, ...)
            raise VerificationError(n, "content has no canonical form (edited)") from None
        if rec.get("seq") != st["seq"] + 1:
            what = "deleted" if isinstance(rec.get("seq"), int) and rec["seq"] > st["seq"] + 1 \
                else "reordered or duplicated"
            raise VerificationError(n, f"sequence {rec.get('seq')} follows {st['seq']} in chain"
                                       f" {chain[:8]}: a record was {what}")
        if rec.get("prev") != st["prev"]:
            raise VerificationError(n, "previous-hash link broken (record deleted, reordered"
                                       " or edited before this one)")
        if digest != rec.get("hash"):
            raise VerificationError(n, "content does not match its hash (edited)")
        if "sig" not in rec and rec.get("type") in SIGNED_TYPES:
            # Without this, a log rewritten whole (every hash recomputed, no signature at
            # all) would verify even against the public key.
            raise VerificationError(n, f"a {rec.get('type')} record without its signature"
                                       " (forged, or its signature removed)")
        if "sig" in rec:
            if key_id is not None and rec.get("key_id") != key_id:
                raise VerificationError(n, "signed with another key (key id"
                                           f" {rec.get('key_id')}, expected {key_id})")
            if public_key is not None:
                try:
                    public_key.verify(bytes.fromhex(rec["sig"]), bytes.fromhex(rec["hash"]))
                except (InvalidSignature, ValueError):
                    raise VerificationError(n, "signature invalid (forged, or signed with"
                                               " another key)") from None
            st["signed"] = rec["seq"]
        if rec.get("type") == "checkpoint" and rec.get("close"):
            st["closed"] = True
        st["seq"] = rec["seq"]
        st["prev"] = rec["hash"]
        st["last_line"] = n
        if rec.get("type") == "rotated":
            rotations.append(rec)
    open_chains = tuple(c for c, st in state.items() if not st["closed"])
    if open_chains and not allow_open:
        c = open_chains[0]
        st = state[c]
        raise VerificationError(
            st["last_line"], f"chain {c[:8]} ends without its close checkpoint after record"
            f" {st['seq']}: the log was truncated or the writer was killed (records up to the"
            f" last signed checkpoint, #{st['signed']}, are intact)")
    return VerifyReport(
        records=count, chains=len(state),
        signed_through={c: st["signed"] for c, st in state.items()},
        unsigned_tail={c: st["seq"] - st["signed"] for c, st in state.items()
                       if st["seq"] > st["signed"]},
        open_chains=open_chains, torn_line=torn_line,
        chain_ends={c: (st["seq"], st["prev"]) for c, st in state.items()},
        rotations=tuple(rotations),
    )


@attrs.frozen(kw_only=True)
class TrailReport:
    """Several logs verified as one trail (see :func:`verify_many`)."""

    reports: tuple[VerifyReport, ...]
    gaps: tuple[str, ...]  # links that do not match: records missing between two chains
    open_chains: tuple[str, ...]  # chains with no close checkpoint that nothing continues
    earlier: tuple[str, ...]  # chains continued here from logs not given

    @property
    def records(self) -> int:
        return sum(r.records for r in self.reports)

    @property
    def chains(self) -> int:
        return sum(r.chains for r in self.reports)


def verify_many(paths: list[str], public_key: Ed25519PublicKey | None = None) -> TrailReport:
    """Verify several logs (rotated files, several hosts' files) as one trail.

    A chain that a "rotated" record in any of them continues is complete; a rotated record
    whose predecessor is given but ends elsewhere is a gap. Raises VerificationError (naming
    the file) on a bad record.
    """
    reports = []
    for path in paths:
        try:
            reports.append(verify(path, public_key, allow_open=True))
        except VerificationError as exc:
            raise VerificationError(exc.index, f"{path}: {exc.reason}") from None
    ends = {c: end for r in reports for c, end in r.chain_ends.items()}
    continued: set[str] = set()
    earlier: set[str] = set()
    gaps: list[str] = []
    for r in reports:
        for rot in r.rotations:
            prev = str(rot.get("previous_chain"))
            end = ends.get(prev)
            if end is None:
                earlier.add(prev)  # its predecessor is in a log not given: nothing to compare
            elif end != (rot.get("previous_seq"), rot.get("previous_hash")):
                gaps.append(f"chain {prev[:8]} ends at record {end[0]} but chain"
                            f" {rot['chain'][:8]} says it ended at {rot.get('previous_seq')}:"
                            " records are missing between them")
            else:
                continued.add(prev)
    still_open = tuple(c for r in reports for c in r.open_chains if c not in continued)
    return TrailReport(reports=tuple(reports), gaps=tuple(gaps), open_chains=still_open,
                       earlier=tuple(sorted(earlier)))


_RELATIVE = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

# What --decision selects: the decision taken (action), what happened (outcome), and what
# observe mode would have done.
DECISIONS = ("allow", "deny", "approval", "ok", "denied", "approval_required", "rolled_back",
             "error", "would_deny", "would_approve")


def _parse_time(text: str | None, *, now: dt.datetime | None = None) -> dt.datetime | None:
    """An ISO time (UTC unless it says otherwise), ``now``, ``today``, ``yesterday``, or an age
    such as ``30m``, ``1h``, ``7d``, ``2w`` (that long ago)."""
    if not text:
        return None
    word = text.strip().lower()
    current = now or dt.datetime.now(dt.UTC)
    midnight = current.replace(hour=0, minute=0, second=0, microsecond=0)
    if word == "now":
        return current
    if word == "today":
        return midnight
    if word == "yesterday":
        return midnight - dt.timedelta(days=1)
    digits = word.lstrip("-")
    if len(digits) >= 2 and digits[-1] in _RELATIVE and digits[:-1].isdigit():
        return current - dt.timedelta(seconds=int(digits[:-1]) * _RELATIVE[digits[-1]])
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a time: {text!r}; use an ISO time (2026-11-01T09:00), today,"
                         " yesterday, now, or an age such as 30m, 1h, 7d") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def decision_matches(rec: Mapping[str, Any], decision: str) -> bool:
    """Whether a statement record has ``decision`` (one of :data:`DECISIONS`)."""
    dec = rec.get("decision", {})
    outcome = rec.get("outcome", {}).get("outcome")
    if decision == "would_deny":
        return bool(dec.get("observe")) and dec.get("would") == "deny"
    if decision == "would_approve":
        return bool(dec.get("observe")) and dec.get("would") == "approval"
    matched: bool = dec.get("action") == decision or outcome == decision
    return matched


def query(path: str | Path, *, identity: str | None = None, table: str | None = None,
          column: str | None = None, since: str | None = None, until: str | None = None,
          kind: str | None = None, decision: str | None = None) -> list[dict[str, Any]]:
    """Statement records matching every given filter (who touched what, when and why)."""
    if decision is not None and decision not in DECISIONS:
        raise ValueError(f"unknown decision {decision!r}; use one of {', '.join(DECISIONS)}")
    lo, hi = _parse_time(since), _parse_time(until)
    out = []
    for _, rec, _ in iter_records(path):
        if rec is None or rec.get("type") != "statement":
            continue
        ident = rec.get("identity", {})
        if identity and identity not in (ident.get("id"), f"{ident.get('kind')}:{ident.get('id')}",
                                         ident.get("model")):
            continue
        stmt = rec.get("statement", {})
        tables = set(stmt.get("reads", [])) | set(stmt.get("writes", []))
        if table and not any(t == table or t.split(".")[-1] == table for t in tables):
            continue
        if column and not _touches_column(rec, column):
            continue
        if kind and kind.upper() not in stmt.get("kinds", []):
            continue
        if decision and not decision_matches(rec, decision):
            continue
        ts = _parse_time(rec.get("ts"))
        if lo and ts and ts < lo or hi and ts and ts > hi:
            continue
        out.append(rec)
    return out


def _touches_column(rec: dict[str, Any], column: str) -> bool:
    """``column`` is ``col``, ``table.col`` or ``schema.table.col``."""
    want = column.lower().split(".")
    for src in rec.get("columns", []):
        if src.lower().split(".")[-len(want):] == want:
            return True
    return want[-1] in {m.lower() for m in rec.get("masked", {})}


_CATALOG_PREFIXES = ("pg_catalog.", "information_schema.", "pg_")


def summary(path: str | Path, *, since: str | None = None, until: str | None = None,
            include_catalog: bool = False) -> list[dict[str, Any]]:
    """``audit report`` with no filter: one entry per identity — what every identity did."""
    out: dict[str, dict[str, Any]] = {}
    for rec in query(path, since=since, until=until):
        ident = rec.get("identity", {})
        label = f"{ident.get('kind')}:{ident.get('id')}"
        e = out.setdefault(label, {"identity": label, "statements": 0, "ok": 0, "denied": 0,
                                   "approvals": 0, "errors": 0, "would_deny": 0, "rows": 0,
                                   "tables": set(), "masked": set(), "purposes": set(),
                                   "models": set(), "tool_calls": set(),
                                   "first": rec.get("ts"), "last": rec.get("ts")})
        e["statements"] += 1
        e["last"] = rec.get("ts")
        outcome = rec.get("outcome", {}).get("outcome")
        if outcome in ("denied", "rolled_back"):
            e["denied"] += 1
        elif outcome == "approval_required":
            e["approvals"] += 1
        elif outcome == "error":
            e["errors"] += 1
        elif outcome == "ok":
            e["ok"] += 1
            e["rows"] += int(rec.get("outcome", {}).get("rowcount") or 0)
        if decision_matches(rec, "would_deny"):
            e["would_deny"] += 1
        stmt = rec.get("statement", {})
        for t in set(stmt.get("reads") or []) | set(stmt.get("writes") or []):
            if include_catalog or not str(t).startswith(_CATALOG_PREFIXES):
                e["tables"].add(t)
        e["masked"].update(rec.get("masked") or {})
        for key, field in (("purposes", "purpose"), ("models", "model")):
            if ident.get(field):
                e[key].add(ident[field])
        attrs = ident.get("attributes") or {}
        if attrs.get("tool_call_id"):
            e["tool_calls"].add(str(attrs["tool_call_id"]))
    for e in out.values():
        for key in ("tables", "masked", "purposes", "models", "tool_calls"):
            e[key] = sorted(e[key])
    return sorted(out.values(), key=lambda e: e["identity"])


def report(path: str | Path, identity: str, *, since: str | None = None,
           until: str | None = None, include_catalog: bool = False) -> dict[str, Any]:
    """The auditor's question for one identity (id, kind:id or model): which datasets it
    touched, when, how many rows, for what purpose, what was masked and what was denied.

    System-catalog reads (ORM reflection, ``\\d``-style introspection) are left out unless
    ``include_catalog``."""
    records = query(path, identity=identity, since=since, until=until)
    tables: dict[str, dict[str, Any]] = {}
    denied: list[dict[str, Any]] = []
    approvals: list[dict[str, Any]] = []
    purposes: set[str] = set()
    models: set[str] = set()
    for rec in records:
        ident = rec.get("identity", {})
        if ident.get("purpose"):
            purposes.add(ident["purpose"])
        if ident.get("model"):
            models.add(ident["model"])
        outcome = rec.get("outcome", {})
        stmt = rec.get("statement", {})
        status = outcome.get("outcome")
        if status in ("denied", "rolled_back"):
            denied.append({"ts": rec.get("ts"), "summary": stmt.get("summary"),
                           "rules": outcome.get("rules") or rec.get("decision", {}).get("rules"),
                           "purpose": ident.get("purpose")})
            continue
        if status == "approval_required" or rec.get("decision", {}).get("approval"):
            approvals.append({"ts": rec.get("ts"), "summary": stmt.get("summary"),
                              "request": rec.get("decision", {}).get("approval"),
                              "outcome": status})
        if status != "ok":
            continue
        rows = int(outcome.get("rowcount") or 0)
        for access, names in (("read", stmt.get("reads", [])), ("write", stmt.get("writes", []))):
            for t in names:
                if not include_catalog and t.startswith(_CATALOG_PREFIXES):
                    continue
                e = tables.setdefault(t, {"table": t, "reads": 0, "writes": 0, "rows": 0,
                                          "first": rec.get("ts"), "last": rec.get("ts"),
                                          "columns": set(), "masked": {}, "purposes": set()})
                e["reads" if access == "read" else "writes"] += 1
                e["rows"] += rows
                e["last"] = rec.get("ts")
                if ident.get("purpose"):
                    e["purposes"].add(ident["purpose"])
                bare = t.split(".")[-1]
                masked = rec.get("masked", {})
                for src in rec.get("columns", []):
                    parts = src.split(".")
                    if len(parts) >= 2 and parts[-2] == bare:
                        e["columns"].add(parts[-1])
                        if parts[-1] in masked:
                            e["masked"][parts[-1]] = masked[parts[-1]]
    for e in tables.values():
        e["columns"] = sorted(e["columns"])
        e["purposes"] = sorted(e["purposes"])
    return {"identity": identity, "statements": len(records), "purposes": sorted(purposes),
            "models": sorted(models), "tables": sorted(tables.values(), key=lambda e: e["table"]),
            "denied": denied, "approvals": approvals,
            "first": records[0].get("ts") if records else None,
            "last": records[-1].get("ts") if records else None}
