"""The command line: the demo end to end, help texts, exit codes, policy commands."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest
from click.testing import CliRunner

from governed_db.cli import main

from .conftest import scratch_database


@pytest.fixture
def empty_dsn(server_dsn):
    with scratch_database(server_dsn, prefix="gdb_empty") as d:
        yield d


def test_demo_tells_the_whole_story_on_an_existing_server(empty_dsn):
    # The same demo as `make demo`, pointed at an existing server (--dsn), machine-readable.
    dsn = empty_dsn
    proc = subprocess.run([sys.executable, "-m", "governed_db.cli", "demo", "--dsn", dsn,
                           "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] and all(s["ok"] for s in out["steps"])
    titles = " | ".join(s["step"] for s in out["steps"])
    for part in ("PII masked", "DROP TABLE", "blast-radius", "approval", "approves",
                 "runs, once", "auditor", "intact", "caught"):
        assert part in titles
    auditor = next(s for s in out["steps"] if "auditor" in s["step"])
    assert {"customers", "orders"} <= set(auditor["tables"]) and auditor["denied"] == 2
    with psycopg.connect(dsn) as c:  # cleaned up: the demo's schema is gone
        assert c.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'governed_demo'"
                         ).fetchone() == (0,)


@pytest.mark.parametrize("args", [[], ["demo"], ["audit"], ["audit", "report"], ["approvals"],
                                  ["policy", "check"], ["scan"], ["keygen"]])
def test_help_everywhere(args):
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_policy_check_exit_codes(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[[rules]]\nid = "statement.disallow-drop"\n')
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rules]]\nid = "statement.disallow-drop"\n\n[[rules]]\nid = "no.such-rule"\n')
    runner = CliRunner()
    ok = runner.invoke(main, ["policy", "check", str(good)])
    assert ok.exit_code == 0
    ko = runner.invoke(main, ["policy", "check", str(bad)])
    assert ko.exit_code == 1 and f"{bad}:5:1: unknown rule id 'no.such-rule'" in ko.output


def test_audit_verify_on_a_missing_or_garbage_file(tmp_path):
    junk = tmp_path / "junk.jsonl"
    junk.write_text("this is not an audit log\n")
    result = CliRunner().invoke(main, ["audit", "verify", str(junk)])
    assert result.exit_code == 1 and "record 1" in result.output
    missing = CliRunner().invoke(main, ["audit", "verify", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2


def test_readme_rule_reference_is_the_catalogue():
    from pathlib import Path

    from governed_db.rules import catalogue_markdown

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("<!-- rules:start -->\n", 1)[1].split("\n<!-- rules:end -->", 1)[0]
    assert block.strip() == catalogue_markdown().strip(), \
        "README rule reference drifted: paste `governed-db policy rules` output"
