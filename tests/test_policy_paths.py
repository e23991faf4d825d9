"""Keys named in a policy resolve next to the policy file, and a configured key that does not
exist is an error — never silently created (the auditor's public key would not match)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import governed_db
from governed_db import Identity, errors
from governed_db.audit import load_public_key, verify
from governed_db.cli import main

BOT = Identity("recs-bot", "ai_agent")


def _policy(tmp_path, key: str):
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    path = conf / "policy.toml"
    path.write_text(f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\nsigning_key = "{key}"\n')
    return path


def test_relative_signing_key_resolves_next_to_the_policy(dsn, tmp_path, monkeypatch):
    policy = _policy(tmp_path, "keys/audit-signing.key")
    assert CliRunner().invoke(main, ["keygen", "--out", str(policy.parent / "keys")]).exit_code == 0
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the process starts in another directory
    with governed_db.connect(dsn, identity=BOT, policy=str(policy)) as conn:
        conn.execute("SELECT 1").fetchall()
    governed_db.reset_defaults()  # closes the log
    public = load_public_key(policy.parent / "keys" / "audit-signing.pub")
    report = verify(tmp_path / "audit.jsonl", public)  # signed with the configured key
    assert report.records >= 2
    assert not (elsewhere / "keys").exists()


@pytest.mark.parametrize("key", ["keys/missing.key", "/nonexistent/dir/audit-signing.key"])
def test_a_configured_key_that_does_not_exist_is_an_error(dsn, tmp_path, key):
    policy = _policy(tmp_path, key)
    with pytest.raises(errors.AuditUnavailable, match="does not exist.*governed-db keygen"):
        governed_db.connect(dsn, identity=BOT, policy=str(policy))
    assert not (policy.parent / "keys").exists()


def test_policy_check_reports_a_missing_key_at_its_line(tmp_path):
    policy = _policy(tmp_path, "keys/missing.key")
    result = CliRunner().invoke(main, ["policy", "check", str(policy)])
    assert result.exit_code == 1
    assert f"{policy}:3:" in result.output and "does not exist" in result.output
