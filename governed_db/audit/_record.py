"""The statement record, built lean: a static part serialized once per plan, spliced with the
few values each statement adds.

What the statement path hands the writer (docs/audit-log-format.md, "The writer's input"):

* a :class:`StatementStatic` — everything a record shares with the other records of its plan
  (who, which database, what the statement reads and writes, the decision, the masked and
  base columns, the lineage): plain data, no context, cursor or connection. Its canonical
  (RFC 8785) bytes are rendered once, on the writer thread, the first time it is used;
* and per statement a plain tuple (see :meth:`AuditLog.enqueue_statement`): id, time,
  duration, the parameter values (digested on the writer thread), approval id, outcome, trace.

Since a JCS object is its members' canonical forms sorted by name, the record's bytes are the
static parts' bytes with the per-statement values' bytes put between them in name order; the
tests check them byte for byte against :func:`~governed_db.audit._canonical.jcs` of the record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from ._canonical import canonical_bytes, es_number, to_ijson

__all__ = ["StatementStatic", "param_digests", "param_digests_v2", "params_json",
           "params_json_v2", "statement_id"]

# Statement ids: unique per process run (a random prefix) and cheap (a counter, no syscall).
# The statement path keeps the number; the text is made where it is first needed (usually
# by the writer, from the number in the queued item).
_ID_PREFIX = uuid.uuid4().hex[:16]


def statement_id(n: int | str) -> str:
    """The statement id of statement number ``n`` of this process (an id as it is)."""
    return n if isinstance(n, str) else f"{_ID_PREFIX}{n:012x}"

_DIGEST_SIZE = 12  # 96 bits, 24 hex digits: what v1 / v2 kept of the HMAC


def _blake2b_key(key: bytes) -> bytes:
    """BLAKE2b takes keys of up to 64 bytes; a longer one is used through its BLAKE2b-512."""
    return key if len(key) <= 64 else hashlib.blake2b(key).digest()


_protos: dict[bytes, Any] = {}


def _proto(key: bytes) -> Any:
    p = _protos.get(key)
    if p is None:
        if len(_protos) > 16:
            _protos.clear()
        p = _protos[key] = hashlib.blake2b(key=_blake2b_key(key), digest_size=_DIGEST_SIZE)
    return p


def _param_bytes(p: Any) -> bytes:
    if isinstance(p, (bytes, bytearray, memoryview)):
        return bytes(p)
    if p is None:
        return b"\x00NULL"
    return str(p).encode("utf-8", "surrogatepass")


def param_digests(params: Sequence[Any] | None, key: bytes) -> tuple[str, ...]:
    """Keyed digests of parameter values (schema v3): BLAKE2b-96 keyed with ``key``, hex.

    The value's bytes: bytes as they are, None as ``\\x00NULL``, anything else its ``str`` in
    UTF-8. Records (and approvals, which bind to them) can match values, never reveal them."""
    if not params:
        return ()
    proto = _proto(key)
    out = []
    for p in params:
        h = proto.copy()
        h.update(_param_bytes(p))
        out.append(h.hexdigest())
    return tuple(out)


def params_json(params: Sequence[Any] | None, key: bytes) -> bytes:
    """``statement.params`` of a v3 record: :func:`param_digests` as canonical JSON."""
    if not params:
        return b"[]"
    proto = _proto(key)
    out = []
    for p in params:
        h = proto.copy()
        t = type(p)
        h.update(p if t is bytes or t is bytearray else _param_bytes(p))
        out.append(h.hexdigest())
    return ('["' + '","'.join(out) + '"]').encode()


def params_json_v2(params: Sequence[Any] | None, key: bytes) -> bytes:
    """``statement.params`` of a v1 / v2 record."""
    digests = param_digests_v2(params, key)
    return ('["' + '","'.join(digests) + '"]').encode() if digests else b"[]"


def param_digests_v2(params: Sequence[Any] | None, key: bytes) -> tuple[str, ...]:
    """The digests schema v1 and v2 records carry: HMAC-SHA-256, first 24 hex digits."""
    if not params:
        return ()
    return tuple(hmac.new(key, _param_bytes(p), hashlib.sha256).hexdigest()[:24]
                 for p in params)


class StatementStatic:
    """What the records of one statement plan share (see the module doc).

    Made on the statement path from objects the plan already holds (nothing is computed
    there); rendered lazily, once, by the writer (:meth:`parts`). :meth:`same` tells whether
    it still describes a statement: the very objects (or equal ones) it was made from.
    """

    __slots__ = ("identity", "attrs", "db", "analysis", "statements", "decision", "plans",
                 "lineage", "param_key", "_parts", "_outcome")

    def __init__(self, identity: Any, db: Mapping[str, Any], analysis: Any,
                 statements: tuple[Any, ...], decision: Any, plans: Mapping[int, Any],
                 lineage: Mapping[int, Any] | None, param_key: bytes) -> None:
        self.identity = identity
        # The free-form attributes are a mutable mapping: a copy says when they changed.
        self.attrs = dict(identity.attributes)
        self.db = db
        self.analysis = analysis
        self.statements = statements
        self.decision = decision
        self.plans = dict(plans)
        self.lineage = dict(lineage) if lineage else None
        self.param_key = param_key
        self._parts: tuple[bytes, ...] | None = None
        # The last outcome written and its bytes (the writer's: most outcomes repeat).
        self._outcome: tuple[Any, bytes] | None = None

    def same(self, identity: Any, db: Mapping[str, Any], analysis: Any, statements: Any,
             decision: Any, plans: Mapping[int, Any], lineage: Mapping[int, Any] | None,
             param_key: bytes) -> bool:
        """Whether this describes a statement with these parts (cheap: identity checks)."""
        return (identity is self.identity and analysis is self.analysis
                and decision is self.decision and db is self.db
                and param_key is self.param_key
                and (statements is self.statements or statements == self.statements)
                and plans == self.plans and (lineage or None) == self.lineage
                and identity.attributes == self.attrs)

    def parts(self) -> tuple[bytes, ...]:
        """The static bytes, in record member order (see :func:`statement_body`):
        columns..decision up to approval, decision after approval, identity, lineage..outcome,
        statement up to params, statement after params. Raises what serializing raises."""
        parts = self._parts
        if parts is None:
            parts = self._parts = self._render()
        return parts

    def record_dict(self) -> dict[str, Any]:
        """The static members as a record dict (params and approval left out)."""
        analysis = self.analysis
        stmts = self.statements
        decision = self.decision
        masked: dict[str, str] = {}
        columns: set[str] = set()
        for _, m, cols in self.plans.values():
            masked.update(m)
            columns.update(cols)
        ident = self.identity.to_record()
        if "attributes" in ident:
            ident["attributes"] = to_ijson(ident["attributes"])
        rec: dict[str, Any] = {
            "identity": ident,
            "db": to_ijson(dict(self.db)),
            "statement": {
                "fingerprint": analysis.fingerprint,
                "normalized": analysis.normalized if analysis.error is None else None,
                "summary": analysis.summary,
                "kinds": sorted(analysis.kinds) if stmts else [],
                "reads": sorted({t for s in stmts for t in s.reads}),
                "writes": sorted({t for s in stmts for t in s.writes}),
            },
            "decision": {"action": decision.action, "would": decision.would,
                         "rules": list(decision.rule_ids), "observe": decision.observe},
            "columns": sorted(columns),
            "masked": masked,
        }
        lineage = self.lineage
        if lineage:
            rec["lineage"] = [[name, list(srcs)] for i in sorted(lineage)
                              for name, srcs in lineage[i]]
        return rec

    def _render(self) -> tuple[bytes, ...]:
        rec = self.record_dict()
        s = rec["statement"]
        d = rec["decision"]
        # Member names sort fingerprint < kinds < normalized < params < reads < summary <
        # writes, and action < approval < observe < rules < would: the part before the
        # per-statement member ends its object's opening, the part after begins its close.
        st_pre = canonical_bytes({k: s[k] for k in ("fingerprint", "kinds", "normalized")})
        st_post = canonical_bytes({k: s[k] for k in ("reads", "summary", "writes")})
        dec_pre = canonical_bytes({"action": d["action"]})
        dec_post = canonical_bytes({k: d[k] for k in ("observe", "rules", "would")})
        lineage = b',"lineage":' + canonical_bytes(rec["lineage"]) if "lineage" in rec else b""
        return (
            b'","columns":' + canonical_bytes(rec["columns"]) + b',"db":'
            + canonical_bytes(rec["db"]) + b',"decision":' + dec_pre[:-1] + b',"approval":',
            b"," + dec_post[1:] + b',"duration_ms":',
            b',"identity":' + canonical_bytes(rec["identity"]) + b',"key_id":"',
            b'"' + lineage + b',"masked":' + canonical_bytes(rec["masked"]) + b',"outcome":',
            b',"statement":' + st_pre[:-1] + b',"params":',
            b"," + st_post[1:],
        )


_OUTCOME_TYPES = (str, int, bool)


_outcomes: dict[Any, bytes] = {}


def outcome_bytes(outcome: Mapping[str, Any]) -> bytes:
    """The ``outcome`` member: the fields given, None left out, canonical. Most statements
    end as others of their plan did (``ok``, one row, ``SELECT 1``): remembered by value."""
    try:
        key = tuple(outcome.items())
        out_b = _outcomes.get(key)
    except TypeError:  # a list of warnings
        return _outcome_bytes(outcome)
    if out_b is None:
        out_b = _outcome_bytes(outcome)
        if len(_outcomes) >= 4096:
            _outcomes.clear()
        _outcomes[key] = out_b
    return out_b


def _outcome_bytes(outcome: Mapping[str, Any]) -> bytes:
    out = {k: v for k, v in outcome.items() if v is not None}
    for k, v in out.items():
        t = type(v)
        if t is str or t is bool or (t is int and -9007199254740991 <= v <= 9007199254740991):
            continue
        if t is list and all(type(x) is str for x in v):
            continue
        return canonical_bytes(out)  # anything else: the general path
    try:
        return orjson.dumps(out, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return canonical_bytes(out)


def duration_bytes(d: float) -> bytes:
    """``duration_ms`` rounded to the microsecond, as JCS writes it."""
    d = round(float(d), 3)
    if 0.001 <= d < 1e15 and d % 1:
        # Python's repr is positional from 1e-4 to 1e16 and, like ECMAScript, the shortest
        # digits that read back: the same text there (tests pin it).
        return repr(d).encode()
    return es_number(d).encode()


class Timestamps:
    """``ts`` text, the part up to the seconds rendered once per second."""

    __slots__ = ("_sec", "_prefix")

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = b""

    def text(self, ts_ns: int) -> bytes:
        sec, us = divmod(ts_ns // 1000, 1_000_000)
        if sec != self._sec:
            self._prefix = dt.datetime.fromtimestamp(sec, dt.UTC).strftime(
                "%Y-%m-%dT%H:%M:%S.").encode()
            self._sec = sec
        return self._prefix + b"%06d+00:00" % us


def trace_bytes(trace: tuple[int, int] | None) -> bytes:
    if trace is None:
        return b""
    return b',"trace":{"span_id":"%016x","trace_id":"%032x"}' % (trace[1], trace[0])
