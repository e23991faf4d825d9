"""Audit records, spans and approval files carry no literal and no comment, in any statement kind.

The normalizer is checked three ways: exact outputs for every literal syntax and many utility
statements; fail-closed cases (placeholder plus fingerprint, never the text); and a property
test that runs random literals and comments embedded in many statement kinds through a real
governed connection and looks for them in the audit file, the spans and the approval files.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pgparse
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import governed_db
from governed_db import Identity, errors, telemetry
from governed_db.analysis import analyze
from governed_db.analysis._normalize import normalize_statement
from governed_db.approvals import ApprovalStore, statement_binding
from governed_db.audit import AuditLog

NORMALIZED = [
    ("COMMENT ON TABLE t IS 'secret'", "COMMENT ON TABLE t IS $1"),
    ("COMMENT ON COLUMN users.ssn IS E'it''s \\' x'", "COMMENT ON COLUMN users.ssn IS $1"),
    ("CREATE VIEW v AS SELECT 'x' AS a, 42 AS b", "CREATE VIEW v AS SELECT $1 AS a, $2 AS b"),
    ("PREPARE p (text) AS SELECT $1 || 'x'", "PREPARE p (text) AS SELECT $1 || $2"),
    ("EXECUTE p('x', 12)", "EXECUTE p($1, $2)"),
    ("NOTIFY c, 'payload'", "NOTIFY c, $1"),
    ("LISTEN chan", "LISTEN chan"),
    ("SET search_path = 'abc', public", "SET search_path = $1, $2"),
    ("SET my.var TO bare_value", "SET my.var TO $1"),
    ("SET TIME ZONE 'UTC'", "SET TIME ZONE $1"),
    ("SET TIME ZONE LOCAL", "SET TIME ZONE LOCAL"),
    ("ALTER SYSTEM SET work_mem = 64", "ALTER SYSTEM SET work_mem = $1"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 42 $$",
     "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $1"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT $$x$$ $body$",
     "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $1"),
    ("DO $$BEGIN RAISE NOTICE 'x'; END$$", "DO $1"),
    ("COPY t FROM STDIN WITH (DELIMITER '|', NULL 'nil')",
     "COPY t FROM STDIN WITH (DELIMITER $1, NULL $2)"),
    ("ALTER ROLE r PASSWORD 'hunter2'", "ALTER ROLE r PASSWORD $1"),
    ("CREATE ROLE r LOGIN PASSWORD 'pw' VALID UNTIL '2030-01-01'",
     "CREATE ROLE r LOGIN PASSWORD $1 VALID UNTIL $2"),
    ("CREATE USER MAPPING FOR r SERVER s OPTIONS (user 'u', password 'pw')",
     "CREATE USER MAPPING FOR r SERVER s OPTIONS (user $1, password $2)"),
    ("SECURITY LABEL ON TABLE t IS 'classified'", "SECURITY LABEL ON TABLE t IS $1"),
    ("CREATE TABLE t2 (a int DEFAULT 42, b text CHECK (b <> 'zz'))",
     "CREATE TABLE t2 (a int DEFAULT $1, b text CHECK (b <> $2))"),
    ("SELECT U&'d\\0061t' UESCAPE '!', E'a\\'b', $t$dol$$lar$t$, B'101', X'ff', N'n'",
     "SELECT $1 UESCAPE $2, $3, $4, $5, $6, N $7"),
    ("select true, null, false, 0x1F, 1_000, .5e-3, -7", "select $1, $2, $3, $4, $5, $6, -$7"),
    ("SELECT interval '1 day', date '2020-01-01', '1'::int",
     "SELECT interval $1, date $2, $3::int"),
    ("SELECT 1 /* a /* nested */ comment */ + 2 -- trailing\n", "SELECT $1 + $2"),
    ("SELECT a/*x*/+b FROM t", "SELECT a +b FROM t"),
    ("SELECT $1, 'x', $2", "SELECT $1, $3, $2"),
    ("SELECT 'é' AS \"naïve\" FROM t WHERE a = 'ø'", "SELECT $1 AS \"naïve\" FROM t WHERE a = $2"),
    ("SELECT 'a'\n'b'", "SELECT $1 $2"),
    ("SELECT \"it\"\"s\" FROM t", "SELECT \"it\"\"s\" FROM t"),
    ("SELECT 1; /* c */ NOTIFY x, 'y'", "SELECT $1; NOTIFY x, $2"),
    ("FETCH 5 FROM c", "FETCH $1 FROM c"),
]


@pytest.mark.parametrize("sql,expected", NORMALIZED, ids=[s for s, _ in NORMALIZED])
def test_normalized_exactly(sql, expected):
    a = analyze(sql)
    assert a.error is None
    assert a.normalized == expected


@pytest.mark.parametrize("sql", [
    "SELECT 'unterminated", "SELECT 1 /* open comment", "SELEC 'typo' FROM t",
    "SELECT 'a' \x00 'b'",
])
def test_unparseable_text_is_a_placeholder_and_a_keyed_fingerprint(sql):
    a = analyze(sql)
    assert a.error is not None
    assert a.normalized == "<not normalized: UNPARSEABLE>"
    assert a.fingerprint.startswith("text:") and len(a.fingerprint) == 37
    assert "typo" not in a.fingerprint and analyze(sql + " ").fingerprint != a.fingerprint


def test_lexer_and_parser_disagreeing_fails_closed():
    # A constant location the lexer did not see start a token: never trust the lexer then.
    tree = pgparse.parse("SELECT 'x'")[0]["stmt"]
    tree["SelectStmt"]["targetList"][0]["ResTarget"]["val"]["A_Const"]["location"] = 8
    assert normalize_statement("SELECT 'x'", [tree]) is None


def test_fingerprint_ignores_utility_literals():
    """libpg_query hashes utility strings: a password's fingerprint could be reversed."""
    for a, b in [("ALTER ROLE r PASSWORD 'a'", "ALTER ROLE r PASSWORD 'b'"),
                 ("COMMENT ON TABLE t IS 'a'", "COMMENT ON TABLE t IS 'b'"),
                 ("NOTIFY c, 'a'", "NOTIFY c, 'b'")]:
        assert pgparse.fingerprint(a) != pgparse.fingerprint(b)
        assert analyze(a).fingerprint == analyze(b).fingerprint
    # DML keeps libpg_query's own fingerprint.
    sql = "SELECT * FROM users WHERE id = 5 AND name = 'x'"
    assert analyze(sql).fingerprint == pgparse.fingerprint(sql)


def test_approval_binding_covers_the_literals():
    """Approving ``WHERE id = 5`` must not approve ``WHERE id = 6`` (same normalized text)."""
    a, b = analyze("DELETE FROM orders WHERE id = 5"), analyze("DELETE FROM orders WHERE id = 6")
    assert a.normalized == b.normalized
    assert statement_binding(a) != statement_binding(b)
    assert "5" not in statement_binding(a).split("\x00")[0]


# -- property: random literals and comments never reach audit, spans or approval files -------

_ALNUM = string.ascii_lowercase + string.digits
_marker = st.text(alphabet=_ALNUM, min_size=10, max_size=14).map(lambda s: "zq" + s)
_digits = st.integers(min_value=10**11, max_value=10**13).map(str)

# How a marker is written as a literal or comment ({m}: the marker text).
_WRAPS = {
    "plain": "'{m}'", "escape": "E'{m}\\n'", "unicode": "U&'{m}'", "dollar": "$$ {m} $$",
    "tagged": "$tg$ {m} $tg$", "national": "N'{m}'",
}
# Statement kinds: {s} a string literal, {c} a comment, {n} a number literal.
_TEMPLATES = [
    "SELECT {s} AS a {c}",
    "SELECT id FROM orders WHERE note = {s} OR amount > {n}",
    "SELECT interval '1 day' * {n}, {s}::text",
    "COMMENT ON TABLE t IS {s}",
    "CREATE VIEW v_lit AS SELECT {s} AS a, {n} AS b",
    "PREPARE p_lit AS SELECT {s} AS a",
    "NOTIFY lit_channel, {s}",
    "SET governed_test.value = {s}",
    "CREATE FUNCTION f_lit() RETURNS text LANGUAGE sql AS $fn$ SELECT {s} $fn$",
    "DO $do$ BEGIN PERFORM {s}; END $do$",
    "ALTER ROLE app_ro PASSWORD {s}",
    "CREATE USER MAPPING FOR app_ro SERVER nosuch OPTIONS (password {s})",
    "INSERT INTO t (a) VALUES ({n}) {c}",
    "UPDATE orders SET note = {s} WHERE id = {n}",
    "SELECT {s} FROM FROM",  # a parse error: recorded as a placeholder
    "EXPLAIN SELECT * FROM t WHERE a = {n} {c}",
]


def _records_text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_providers(tp)
    yield exporter
    telemetry.use_providers()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(template=st.sampled_from(_TEMPLATES), wrap=st.sampled_from(sorted(_WRAPS)),
       marker=_marker, number=_digits, comment=_marker,
       line_comment=st.booleans())
def test_no_literal_reaches_audit_spans_or_approvals(dsn, tmp_path, spans, template, wrap,
                                                     marker, number, comment, line_comment):
    log_path = tmp_path / "audit.jsonl"
    log = AuditLog.open(log_path)
    approvals_dir = Path(governed_db._config.state_dir()) / "approvals"
    text_comment = f"-- {comment}\n" if line_comment else f"/* {comment} */"
    sql = template.format(s=_WRAPS[wrap].format(m=marker), n=number, c=text_comment)
    ident = Identity("lit-tester", "human")
    try:
        with governed_db.connect(dsn, identity=ident, audit=log, autocommit=True) as conn:
            try:
                conn.execute(sql)
            except errors.StatementDenied:
                pass  # denials and approval requests are recorded too
            except governed_db.Error:
                pass  # a server error (no such server, ...) is recorded as an error
    finally:
        log.close()
    audit_text = _records_text(log_path)
    assert '"type":"statement"' in audit_text.replace(" ", "")
    span_text = json.dumps([dict(s.attributes or {}) for s in spans.get_finished_spans()])
    approval_text = "".join(p.read_text() for p in approvals_dir.glob("*.json")) \
        if approvals_dir.exists() else ""
    for secret in (marker, number, comment):
        assert secret not in audit_text
        assert secret not in span_text
        assert secret not in approval_text
    spans.clear()


@pytest.mark.parametrize("sql,kind", [
    ("COMMENT ON TABLE t IS 'zqcommentvalue'", "approval"),
    ("ALTER ROLE app_ro PASSWORD 'zqpasswordvalue'", "approval"),
    ("CREATE VIEW v_z AS SELECT 'zqviewvalue' AS a", "approval"),
])
def test_approval_file_has_no_literal(dsn, audit, sql, kind):
    ident = Identity("lit-tester", "human")
    with governed_db.connect(dsn, identity=ident, audit=audit, autocommit=True) as conn:
        with pytest.raises(errors.ApprovalRequired) as ei:
            conn.execute(sql)
    req = ApprovalStore.default().get(ei.value.request_id)
    assert req["statement"] == analyze(sql).normalized
    assert "zq" not in json.dumps(req)
    audit.flush()
    rec = [r for r in audit.records if r["type"] == "statement"][-1]
    assert rec["outcome"]["outcome"] == "approval_required"
    assert rec["statement"]["normalized"] == analyze(sql).normalized
    assert "zq" not in json.dumps(rec)
