"""SQL analysis: PostgreSQL's own parser, facts per statement, lineage, a bounded cache.

``analyze(text)`` is what the statement choke point calls with the exact text psycopg sends
(after its ``%s`` → ``$n`` conversion). Results are cached by that text in a bounded LRU.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import pgparse

from .._client_encoding import query_text
from .._state import param_hash_key
from ._extract import extract_all, extract_facts
from ._facts import CopyFacts, StatementFacts
from ._nodes import funcname
from ._normalize import neutral_text, normalize_statement, placeholder
from ._vocabulary import DANGEROUS_FUNCTIONS, DDL_KINDS, SECURITY_SETTINGS, is_dangerous_function
from ._where import predicate_columns

__all__ = [
    "Analysis",
    "AnalysisCache",
    "CopyFacts",
    "DANGEROUS_FUNCTIONS",
    "DDL_KINDS",
    "SECURITY_SETTINGS",
    "StatementFacts",
    "analyze",
    "extract_all",
    "extract_facts",
    "funcname",
    "is_dangerous_function",
    "predicate_columns",
]


class Analysis:
    """The analysis of one string as sent to the server (immutable once built).

    Attributes:
        text: the text analyzed.
        statements: facts per statement, in order (empty for an empty query).
        error: the parser's message when the text does not parse (then nothing runs).
        normalized: the text with every literal replaced by ``$n`` and comments removed, in
            every statement kind (see the ``_normalize`` module); a placeholder naming the statement
            kinds when that cannot be done with confidence. Never the raw text.
        fingerprint: libpg_query's fingerprint, equal for statements differing in literals;
            for text that does not parse, ``text:`` and a keyed hash of it.

    ``normalized`` and ``fingerprint`` are computed on first use — by the audit writer thread
    or a span, off the statement's path — and then kept.
    """

    __slots__ = ("text", "statements", "error", "_normalized", "_fingerprint", "_kinds")

    def __init__(self, *, text: str, statements: tuple[StatementFacts, ...],
                 error: str | None = None, normalized: str | None = None,
                 fingerprint: str | None = None) -> None:
        self.text = text
        self.statements = statements
        self.error = error
        self._normalized = normalized
        self._fingerprint = fingerprint
        kinds: set[str] = set()
        for st in statements:
            kinds |= st.kinds
        self._kinds = frozenset(kinds)

    def __repr__(self) -> str:
        return f"Analysis(text={self.text[:60]!r}, statements={len(self.statements)}," \
               f" error={self.error!r})"

    @property
    def normalized(self) -> str:
        if self._normalized is None:
            self._normalized = _normalized_text(self)
        return self._normalized

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = _fingerprint(self)
        return self._fingerprint

    @property
    def kinds(self) -> frozenset[str]:
        return self._kinds

    @property
    def reads(self) -> frozenset[str]:
        return frozenset().union(*(s.reads for s in self.statements))

    @property
    def writes(self) -> frozenset[str]:
        return frozenset().union(*(s.writes for s in self.statements))

    @property
    def summary(self) -> str:
        """A short low-cardinality description, e.g. ``SELECT users`` (OTel query summary)."""
        if self.error is not None:
            return "UNPARSEABLE"
        parts = []
        for s in self.statements[:3]:
            tables = sorted(s.writes or s.reads)[:2]
            parts.append(" ".join([s.kind, *tables]))
        return "; ".join(parts) or "EMPTY"


def _parse(text: str) -> Analysis:
    if "\x00" in text:
        # libpq and the parser stop at a NUL byte: what follows would be invisible to one of
        # them. Such text is never legitimate SQL; refuse it.
        return Analysis(text=text, statements=(), error="the statement contains a NUL byte",
                        normalized=placeholder(()))
    try:
        parsed: list[dict[str, Any]] = pgparse.parse(text)
    except pgparse.PGQueryError as exc:
        return Analysis(text=text, statements=(), error=str(getattr(exc, "message", exc)),
                        normalized=placeholder(()))
    except Exception as exc:  # noqa: BLE001 - anything else from the C extension: fail closed
        return Analysis(text=text, statements=(), error=f"parser failure: {type(exc).__name__}",
                        normalized=placeholder(()))
    return Analysis(text=text, statements=extract_all(text, parsed), error=None)


def _normalized_text(analysis: Analysis) -> str:
    """Literal- and comment-free text, or a placeholder: never the raw text (fail closed)."""
    if analysis.error is not None:
        return placeholder(())
    try:
        out = normalize_statement(analysis.text, [s.tree for s in analysis.statements])
    except Exception:  # noqa: BLE001 - never fall back to the raw text (it has literals)
        out = None
    return placeholder(analysis.kinds) if out is None else out


def _fingerprint(analysis: Analysis) -> str:
    """libpg_query's fingerprint of the literal-free text (see ``neutral_text``)."""
    if analysis.error is None:
        try:
            neutral = neutral_text(analysis.text, [s.tree for s in analysis.statements])
            if neutral is not None:
                return str(pgparse.fingerprint(neutral))
        except Exception:  # noqa: BLE001, S110 - falls back to the keyed hash below
            pass
    return _keyed_fingerprint(analysis.text)


def _keyed_fingerprint(text: str) -> str:
    """For text libpg_query cannot fingerprint: a keyed hash (a plain hash of a short
    statement could be reversed by trying values)."""
    import hashlib
    import hmac

    return "text:" + hmac.new(param_hash_key(), text.encode("utf-8", "surrogatepass"),
                              hashlib.sha256).hexdigest()[:32]


class AnalysisCache:
    """A bounded, thread-safe LRU of analyses keyed by the exact text sent.

    Bounded by entries *and* by estimated memory so that 100k distinct literal-inlined queries
    (ClientCursor) or a few huge ones cannot grow memory without limit. An entry (text, parse
    tree, facts) takes about 100-220 bytes per byte of SQL text (measured with tracemalloc):
    it is accounted as ``ENTRY_OVERHEAD + BYTES_PER_CHAR * len(text)``.
    """

    ENTRY_OVERHEAD = 4096
    BYTES_PER_CHAR = 160

    def __init__(self, max_entries: int = 4096, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, Analysis] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, text: str) -> Analysis:
        data = self._data
        try:
            result = data[text]
        except KeyError:
            pass
        else:
            self.hits += 1
            try:
                data.move_to_end(text)
            except KeyError:  # evicted by another thread in between: still a valid result
                pass
            return result
        result = _parse(text)
        self.misses += 1
        size = self.ENTRY_OVERHEAD + self.BYTES_PER_CHAR * len(text)
        if size > self.max_bytes // 16:
            return result  # one huge statement must not evict the whole cache
        with self._lock:
            if text not in data:
                data[text] = result
                self._bytes += size
                while len(data) > self.max_entries or self._bytes > self.max_bytes:
                    old, _ = data.popitem(last=False)
                    self._bytes -= self.ENTRY_OVERHEAD + self.BYTES_PER_CHAR * len(old)
        return result

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0


_default_cache = AnalysisCache()


def analyze(text: str | bytes, codec: str = "utf-8") -> Analysis:
    """Analyze a string the way the statement choke point does (cached).

    Bytes are decoded with ``codec``, the Python codec of the connection's client encoding
    (``conn.pgconn._encoding``): the text the server lexes after converting them (see
    ``governed_db._client_encoding``)."""
    if isinstance(text, bytes):
        text = query_text(text, codec)
    return _default_cache.get(text)


def default_cache() -> AnalysisCache:
    """The process-wide analysis cache (for statistics and benchmarks)."""
    return _default_cache
