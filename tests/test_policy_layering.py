"""Policy files layer on the built-in default profile (architecture.md "Additions")."""

from __future__ import annotations

import tomllib

import psycopg
import pytest
from click.testing import CliRunner

import governed_db
from governed_db import errors
from governed_db.cli import main
from governed_db.policy import (
    PolicyWarning,
    default_policy,
    default_policy_text,
    load_policy,
    parse_policy,
)

from .conftest import AGENT, HUMAN

MASK_ONE = '[[masking.columns]]\ncolumns = ["orders.note"]\nstrategy = "hash"\n'


def _ids(policy):
    return [(r.id, r.level, r.identity_kinds, dict(r.params)) for r in policy.rules]


def test_a_file_that_only_masks_keeps_every_default_rule(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(MASK_ONE)
    policy = load_policy(path)
    assert policy.extends == "default"
    assert _ids(policy) == _ids(default_policy())
    assert all(r.origin == "builtin" for r in policy.rules)
    (col,) = policy.masking.columns
    assert col.columns == ("orders.note",) and col.origin == f"{path}:1"
    assert policy.session == default_policy().session


def test_a_rule_with_a_default_id_overrides_only_the_fields_it_sets():
    policy = parse_policy('\n[[rules]]\nid = "statement.allowlist"\nallow = ["SELECT"]\n',
                          source="p.toml")
    (rule,) = [r for r in policy.rules if r.id == "statement.allowlist"]
    assert rule.params["allow"] == ["SELECT"]
    assert rule.identity_kinds == ("ai_agent",) and rule.level == "error"  # kept
    assert rule.origin == "builtin, overridden at p.toml:2"
    assert len(policy.rules) == len(default_policy().rules)  # overridden in place, not added


def test_disabled_removes_a_rule_visibly(dsn, audit, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[[rules]]\nid = "statement.disallow-truncate"\nlevel = "disabled"\n')
    policy = load_policy(path)
    shown = CliRunner().invoke(main, ["policy", "show", "--effective", str(path)])
    assert shown.exit_code == 0, shown.output
    assert (f"[[rules]]  # builtin, overridden at {path}:1  (disabled)\n"
            'id = "statement.disallow-truncate"\nlevel = "disabled"') in shown.output
    with governed_db.connect(dsn, identity=HUMAN, policy=policy, audit=audit,
                             autocommit=True) as conn:
        # The TRUNCATE rule is off; the DDL-approval default still holds.
        with pytest.raises(errors.ApprovalRequired) as ei:
            conn.execute("TRUNCATE users")
        assert ei.value.rule_ids == ("statement.disallow-ddl",)
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute("DROP TABLE t")
        assert ei.value.rule_ids == ("statement.disallow-drop", "statement.disallow-ddl")
    with psycopg.connect(dsn) as raw:
        assert raw.execute("SELECT count(*), to_regclass('t') IS NOT NULL FROM users"
                           ).fetchone() == (2, True)


def test_a_masking_only_file_keeps_the_agent_guardrails(dsn, audit, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(MASK_ONE)
    with governed_db.connect(dsn, identity=AGENT, policy=str(path), audit=audit) as conn:
        for sql, rule in (("DELETE FROM users WHERE id = 1001", "statement.allowlist"),
                          ("SELECT pg_read_file('/etc/passwd')", "function.deny"),
                          ("SELECT query_to_xml('SELECT ssn FROM users', true, false, '')",
                           "function.deny")):
            with pytest.raises(errors.StatementDenied) as ei:
                conn.execute(sql)
            assert rule in ei.value.rule_ids
            conn.rollback()
        note = conn.execute("SELECT note FROM orders WHERE id = 1").fetchone()[0]
        assert "qnt" not in note  # the added column is masked (hash)
    with psycopg.connect(dsn) as raw:
        assert raw.execute("SELECT count(*) FROM users").fetchone() == (2,)


def test_extends_none_starts_empty_and_warns(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('extends = "none"\n' + MASK_ONE)
    with pytest.warns(PolicyWarning, match='extends = "none"'):
        policy = load_policy(path)
    assert policy.rules == () and policy.extends == "none"
    checked = CliRunner().invoke(main, ["policy", "check", str(path)])
    assert checked.exit_code == 0
    assert f'warning: {path}:1:1: policy {path} says extends = "none"' in checked.output
    assert 'starts empty (extends = "none")' in checked.output


def test_extends_must_be_default_or_none():
    with pytest.raises(errors.PolicyError, match="extends") as ei:
        parse_policy('name = "x"\nextends = "strict"\n', source="p.toml")
    assert "p.toml:2" in str(ei.value)


def test_a_full_copy_of_the_old_default_keeps_working():
    # A full copy: every rule has a default id, so each one is an override of itself.
    policy = parse_policy(default_policy_text(), source="copy.toml")
    assert _ids(policy) == _ids(default_policy())
    assert all(r.origin.startswith("builtin, overridden at copy.toml:") for r in policy.rules)


def test_effective_output_is_a_complete_policy_with_the_same_meaning(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(MASK_ONE + '[[rules]]\nid = "table.deny-list"\ntables = ["sessions"]\n'
                    '[session]\nstatement_timeout = { human = "60s" }\n')
    shown = CliRunner().invoke(main, ["policy", "show", "--effective", str(path)])
    assert shown.exit_code == 0, shown.output
    text = shown.output
    tomllib.loads(text)  # valid TOML
    assert f"[[rules]]  # {path}:4\nid = \"table.deny-list\"" in text
    assert f"[[masking.columns]]  # {path}:1" in text
    with pytest.warns(PolicyWarning):
        again = parse_policy(text, source="effective.toml")
    original = load_policy(path)
    assert _ids(again) == _ids(original)
    assert again.masking == original.masking
    assert dict(again.session.statement_timeout) == {"ai_agent": "30s", "human": "60s"}
