"""Masking: exact strategies per output column, on adversarial query shapes, against PostgreSQL."""

from __future__ import annotations

import pytest

import governed_db
from governed_db import Identity
from governed_db.masking import REDACTED
from governed_db.policy import parse_policy

from .conftest import MARKERS

# (sql, {output column: expected "strategy:reason"}) — reasons: declared/name:* for a direct
# column, lineage:* for derived values, unknown-lineage when the lineage cannot be known.
SHAPES = [
    ("SELECT email FROM users WHERE id = 1001", {"email": "email:name:email"}),
    ("SELECT ssn FROM users WHERE id = 1001", {"ssn": "partial:name:national_id"}),
    ("SELECT email || ' ' || ssn AS x FROM users WHERE id = 1001", {"x": "redact:lineage:name:email"}),
    ("SELECT (SELECT u FROM users u WHERE id = 1001)", {"u": "redact:lineage:name:email"}),
    ("SELECT u FROM users u WHERE id = 1001", {"u": "redact:lineage:name:email"}),
    ("SELECT row_to_json(u) AS j FROM users u WHERE id = 1001", {"j": "redact:lineage:name:email"}),
    ("SELECT ARRAY[email, ssn] AS a FROM users WHERE id = 1001", {"a": "redact:lineage:name:email"}),
    ("WITH c AS (SELECT ssn AS harmless FROM users) SELECT harmless FROM c",
     {"harmless": "partial:lineage:name:national_id"}),
    ("SELECT name FROM orgs UNION ALL SELECT email FROM users", {"name": "email:lineage:name:email"}),
    ("SELECT x FROM unnest((SELECT array_agg(ssn) FROM users)) AS x",
     {"x": "partial:lineage:name:national_id"}),
]


@pytest.mark.parametrize("sql,expected", SHAPES, ids=[s for s, _ in SHAPES])
def test_shape_masked_with_exact_strategy(agent_conn, audit, sql, expected):
    rows = agent_conn.execute(sql).fetchall()
    assert rows
    assert not any(m in repr(rows).lower() for m in MARKERS), rows
    audit.flush()
    rec = [r for r in audit.records if r["type"] == "statement"][-1]
    got = {k: v for k, v in rec["masked"].items() if k in expected}
    # The reason names the strongest sensitive source; which one is deterministic.
    assert {k: v.split(":", 1)[0] for k, v in got.items()} == \
        {k: v.split(":", 1)[0] for k, v in expected.items()}


def test_multi_source_value_never_keeps_a_shape(agent_conn):
    """email strategy keeps the domain; on email||ssn it would leak the ssn after the '@'."""
    (value,) = agent_conn.execute(
        "SELECT email || ssn FROM users WHERE id = 1001").fetchone()
    assert value == REDACTED


def test_unmask_grant_lets_a_role_see_a_column(dsn, audit, tmp_path):
    policy = parse_policy("""
[[masking.unmask]]
columns = ["public.users.email"]
roles = ["support-lead"]
""")
    lead = Identity("bea", "human", roles=("support-lead",))
    with governed_db.connect(dsn, identity=lead, policy=policy, audit=audit) as conn:
        email, ssn = conn.execute("SELECT email, ssn FROM users WHERE id = 1001").fetchone()
    assert email == "qem.alice@example.com"
    assert ssn.endswith("3333") and "qsn" not in ssn
