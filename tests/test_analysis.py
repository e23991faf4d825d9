"""Analysis: the bounded cache, and property tests that the analyzer fails closed on any input."""

from __future__ import annotations

import os
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from governed_db import Identity
from governed_db.analysis import AnalysisCache, analyze
from governed_db.rules import evaluate
from governed_db.policy import default_policy


def _n(default: int) -> int:
    """Examples per property: bounded in CI; GOVERNED_DB_FUZZ_EXAMPLES=20000 for a long run."""
    return int(os.environ.get("GOVERNED_DB_FUZZ_EXAMPLES", default))


AGENT = Identity("fuzz-bot", "ai_agent")
HUMAN = Identity("fuzzer", "human")


def test_cache_bounded_by_entries_and_estimated_memory():
    cache = AnalysisCache(max_entries=100, max_bytes=10_000_000)
    for i in range(1000):
        cache.get(f"SELECT {i}")
    assert len(cache) == 100 and cache.misses == 1000
    cache.get("SELECT 999")
    assert cache.hits == 1
    small = AnalysisCache(max_entries=10_000, max_bytes=200_000)
    for i in range(1000):
        small.get(f"SELECT id FROM t WHERE a = {i} AND b = 'x{i}'")
    per_entry = small.ENTRY_OVERHEAD + small.BYTES_PER_CHAR * len("SELECT id FROM t WHERE a = 999 AND b = 'x999'")
    assert len(small) <= 200_000 // per_entry + 1
    huge = "SELECT " + ", ".join(str(i) for i in range(20_000))
    assert small.get(huge).error is None and huge not in small._data  # analyzed, not cached


SQLISH = st.text(alphabet=string.ascii_letters + string.digits + " ;'\"$()*,.=-_/\\\n\t",
                 max_size=200)
KEYWORDS = st.sampled_from(["SELECT", "DROP TABLE users", "DELETE FROM users", "UPDATE users SET",
                            "WITH x AS (", "COPY users TO PROGRAM", "DO $$", "SET ROLE", ";",
                            "--", "/*", "*/", "$$", "'", "E'\\'", "U&'", "\\", "INSERT INTO"])


@settings(max_examples=_n(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(SQLISH, KEYWORDS), max_size=8).map(" ".join))
def test_analyzer_never_raises_and_fails_closed(text):
    analysis = analyze(text)
    policy = default_policy()
    for ident in (AGENT, HUMAN):
        decision = evaluate(policy, ident, analysis, analysis.statements,
                            read_only=ident.kind == "ai_agent")
        if analysis.error is not None:
            # Whatever PostgreSQL's parser rejects is never sent.
            assert decision.action == "deny"
            assert "statement.parse-error" in decision.rule_ids
        if ident.kind == "ai_agent" and decision.action == "allow":
            # Whatever an agent may run writes nothing the analyzer can see.
            assert not analysis.writes
            assert not any(s.kinds & {"DROP", "TRUNCATE", "DELETE", "UPDATE", "INSERT"}
                           for s in analysis.statements)


@settings(max_examples=_n(200), deadline=None)
@given(st.sampled_from(["true", "1=1", "'a'='a'", "NOT false", "1 = 1 OR id = 5", "id = id",
                        "true AND true", "(1<2)", "2 > 1", "NULL IS NULL"]),
       st.sampled_from(["UPDATE users SET name = 'x' WHERE {}", "DELETE FROM users WHERE {}"]))
def test_tautologies_count_as_no_where(cond, template):
    analysis = analyze(template.format(cond))
    decision = evaluate(default_policy(), HUMAN, analysis, analysis.statements, read_only=False)
    if cond in ("id = id",):
        return  # NULL ids make it not a tautology; either outcome is defensible
    assert decision.action == "deny", cond
    assert "statement.where.require.update-delete" in decision.rule_ids
