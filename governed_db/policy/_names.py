"""Names a policy may use: statement kinds, PostgreSQL functions and settings, suggestions.

The statement kinds are the analyzer's own vocabulary (what ``StatementFacts.kinds`` can hold),
so a kind a rule names but the analyzer never reports (``INSRT``, ``DELET``) is caught when
the policy loads instead of silently never matching. Function and setting names come from
``pg_names.txt``, generated from a real server by ``tools/gen_pg_names.py``; they are used to
catch misspellings and suggest the intended name, never to allow anything.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable
from importlib import resources

from ..analysis import _vocabulary as v

__all__ = ["builtin_functions", "builtin_settings", "did_you_mean", "statement_kinds",
           "suggest"]


@functools.cache
def statement_kinds() -> frozenset[str]:
    """Every statement kind the analyzer can report (``SELECT``, ``INSERT``, ``ROLLBACK TO``...)."""
    kinds = set(v._SIMPLE_KINDS.values()) | set(v._TX_KINDS.values())
    kinds |= v.DDL_KINDS | v.READ_KINDS | v.TRANSACTION_KINDS
    # Added by handlers rather than the tables above (see analysis._walk/_statements: _h_grant, _h_set, _h_fetch,
    # _h_vacuum, _h_explain, _top_kind): SELECT/DML, SET/RESET, REVOKE, FETCH/MOVE, VACUUM/ANALYZE, and the
    # kind of statements the analyzer does not understand.
    kinds |= {"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "SET", "RESET", "GRANT",
              "REVOKE", "FETCH", "MOVE", "VACUUM", "ANALYZE", "EXPLAIN ANALYZE", "VACUUM FULL", "TRANSACTION",
              "UNKNOWN"}
    return frozenset(kinds)


@functools.cache
def _pg_names() -> dict[str, frozenset[str]]:
    text = resources.files(__package__).joinpath("pg_names.txt").read_text(encoding="utf-8")
    sections: dict[str, set[str]] = {}
    current: set[str] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], set())
        elif current is not None:
            current.add(line)
    return {k: frozenset(v) for k, v in sections.items()}


def builtin_functions() -> frozenset[str]:
    """Names of PostgreSQL's built-in functions (``pg_catalog``), lower case."""
    return _pg_names()["functions"]


def builtin_settings() -> frozenset[str]:
    """Names of PostgreSQL's run-time settings, lower case."""
    return _pg_names()["settings"]


def suggest(word: str, candidates: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The candidate closest to ``word`` (case-insensitive), or None when none is close."""
    by_folded: dict[str, str] = {}
    for c in candidates:
        by_folded.setdefault(c.lower(), c)
    found = difflib.get_close_matches(word.lower(), list(by_folded), n=1, cutoff=cutoff)
    return by_folded[found[0]] if found else None


def did_you_mean(word: str, candidates: Iterable[str], *, cutoff: float = 0.6) -> str:
    """``"; did you mean X?"`` for the closest candidate, or ``""``."""
    found = suggest(word, candidates, cutoff=cutoff)
    return f"; did you mean {found}?" if found else ""
