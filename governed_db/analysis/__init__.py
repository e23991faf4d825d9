"""SQL analysis: PostgreSQL's own parser, facts per statement, lineage, a bounded cache.

``analyze(text)`` is what the statement choke point calls with the exact text psycopg sends
(after its ``%s`` → ``$n`` conversion). Results are cached by that text in a bounded LRU.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import attrs
import pgparse

from ._facts import (
    DANGEROUS_FUNCTIONS,
    DDL_KINDS,
    SECURITY_SETTINGS,
    CopyFacts,
    StatementFacts,
    extract_all,
    is_dangerous_function,
)

__all__ = [
    "Analysis",
    "AnalysisCache",
    "CopyFacts",
    "DANGEROUS_FUNCTIONS",
    "DDL_KINDS",
    "SECURITY_SETTINGS",
    "StatementFacts",
    "analyze",
    "is_dangerous_function",
]


@attrs.frozen(kw_only=True)
class Analysis:
    """The analysis of one string as sent to the server.

    Attributes:
        text: the text analyzed.
        statements: facts per statement, in order (empty for an empty query).
        error: the parser's message when the text does not parse (then nothing runs).
        normalized: the text with every literal replaced by ``$n`` (safe for audit/spans).
        fingerprint: libpg_query's fingerprint, equal for statements differing in literals.
    """

    text: str
    statements: tuple[StatementFacts, ...]
    error: str | None = None
    normalized: str = ""
    fingerprint: str = ""

    @property
    def kinds(self) -> frozenset[str]:
        out: set[str] = set()
        for s in self.statements:
            out |= s.kinds
        return frozenset(out)

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
    try:
        parsed: list[dict[str, Any]] = pgparse.parse(text)
    except pgparse.PGQueryError as exc:
        return Analysis(text=text, statements=(), error=str(getattr(exc, "message", exc)),
                        normalized="", fingerprint="")
    except Exception as exc:  # noqa: BLE001 - anything else from the C extension: fail closed
        return Analysis(text=text, statements=(), error=f"parser failure: {type(exc).__name__}")
    try:
        normalized = pgparse.normalize(text)
    except Exception:  # noqa: BLE001 - normalization is best effort; never keep raw literals
        normalized = "; ".join(sorted({kind for s in extract_all(text, parsed) for kind in s.kinds}))
    try:
        fingerprint = pgparse.fingerprint(text)
    except Exception:  # noqa: BLE001
        fingerprint = ""
    return Analysis(text=text, statements=extract_all(text, parsed), error=None,
                    normalized=normalized, fingerprint=fingerprint)


class AnalysisCache:
    """A bounded, thread-safe LRU of analyses keyed by the exact text sent.

    Bounded by entries *and* by total text size so that 100k distinct literal-inlined queries
    (ClientCursor) cannot grow memory without limit.
    """

    def __init__(self, max_entries: int = 4096, max_bytes: int = 32 * 1024 * 1024) -> None:
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
        size = len(text)
        if size > self.max_bytes // 16:
            return result  # one huge statement must not evict the whole cache
        with self._lock:
            if text not in data:
                data[text] = result
                self._bytes += size
                while len(data) > self.max_entries or self._bytes > self.max_bytes:
                    old, _ = data.popitem(last=False)
                    self._bytes -= len(old)
        return result

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0


_default_cache = AnalysisCache()


def analyze(text: str | bytes) -> Analysis:
    """Analyze a string the way the statement choke point does (cached)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    return _default_cache.get(text)


def default_cache() -> AnalysisCache:
    """The process-wide analysis cache (for statistics and benchmarks)."""
    return _default_cache
