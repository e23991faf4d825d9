"""The pytest plugin, run with pytester: strict mode, canaries, fixtures, the exemption marker."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

INNER = '''
import os
import psycopg
import pytest
from governed_db.policy import parse_policy

DSN = os.environ["GDB_INNER_DSN"]
UNMASK = parse_policy("""
[[masking.unmask]]
columns = ["users.email"]
roles = ["support"]
""")


def test_masked_rows_pass(governed_connect, no_unmasked_pii):
    c = governed_connect(DSN, identity="ai_agent:bot", audit=False)
    rows = c.execute("SELECT email, ssn FROM users").fetchall()
    no_unmasked_pii(rows)


def test_unmasked_grant_leaks(governed_connect):
    from governed_db import Identity
    c = governed_connect(DSN, identity=Identity("sam", "human", roles=("support",)),
                         policy=UNMASK, audit=False)
    c.execute("SELECT email FROM users").fetchall()


def test_canary_in_an_undeclared_column(governed_connect, pii_canary):
    canary = pii_canary("email")
    with psycopg.connect(DSN, autocommit=True) as raw:
        raw.execute("UPDATE orders SET note = %s WHERE id = 1", (canary,))
    c = governed_connect(DSN, identity="human:alice", audit=False, autocommit=True)
    c.execute("SELECT note FROM orders WHERE id = 1").fetchall()


@pytest.mark.governed_db_allow_pii
def test_exempted(governed_connect):
    from governed_db import Identity
    c = governed_connect(DSN, identity=Identity("sam", "human", roles=("support",)),
                         policy=UNMASK, audit=False)
    c.execute("SELECT email FROM users").fetchall()


def test_error_text_is_checked(governed_connect):
    c = governed_connect(DSN, identity="human:alice", audit=False, autocommit=True)
    with pytest.raises(psycopg.errors.UniqueViolation):
        c.execute("INSERT INTO users (id, email) VALUES (1001, 'dup@example.com')")
'''


@pytest.fixture
def inner(pytester, dsn, monkeypatch):
    monkeypatch.setenv("GDB_INNER_DSN", dsn)
    pytester.makepyfile(test_inner=INNER)
    pytester.makeini("[pytest]\nfilterwarnings = ignore::UserWarning\n")
    return pytester


def test_without_strict_everything_passes(inner):
    result = inner.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


@pytest.mark.parametrize("how", ["option", "ini"])
def test_strict_fails_exactly_the_leaking_tests(inner, how):
    if how == "ini":
        inner.makeini("[pytest]\nfilterwarnings = ignore::UserWarning\n"
                      "governed_db_strict = true\n")
        result = inner.runpytest("-p", "no:cacheprovider")
    else:
        result = inner.runpytest("-p", "no:cacheprovider", "--governed-db-strict")
    result.assert_outcomes(passed=3, failed=2)
    out = result.stdout.str()
    assert "test_unmasked_grant_leaks" in out and "test_canary_in_an_undeclared_column" in out
    assert "governed_db strict mode: unmasked PII left the database" in out
    assert "row" in out and "email" in out
    assert "FAILED test_inner.py::test_masked_rows_pass" not in out
    assert "FAILED test_inner.py::test_error_text_is_checked" not in out
