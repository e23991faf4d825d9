"""Approvals a person can decide on, from the CLI: list and show with everything needed,
--json on both, and pruning of old requests (file and PostgreSQL stores)."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

import governed_db
from governed_db import Identity, errors
from governed_db.cli import main

ETL = Identity("etl", "service", purpose="nightly load", on_behalf_of="dana", model="planner-1")


@pytest.fixture(params=["file", "postgres"])
def store_kind(request, dsn, monkeypatch):
    if request.param == "postgres":
        monkeypatch.setenv("GOVERNED_DB_APPROVALS_DSN", dsn)
    return request.param


def _request(dsn: str, table: str = "t_cli") -> str:
    with governed_db.connect(dsn, identity=ETL, audit=False, autocommit=True) as conn:
        with pytest.raises(errors.ApprovalRequired) as ei:
            conn.execute(f"CREATE TABLE {table} (id int, note text DEFAULT 'literal-x')")
    return ei.value.request_id


def _run(*args: str):
    return CliRunner().invoke(main, list(args), env={"COLUMNS": "100"})


def test_list_and_show_tell_a_person_what_to_decide(dsn, store_kind):
    request_id = _request(dsn)
    listed = _run("approvals", "list")
    assert listed.exit_code == 0 and request_id in listed.output and "service:etl" in listed.output
    shown = _run("approvals", "show", request_id)
    assert shown.exit_code == 0, shown.output
    for part in ("nightly load", "dana", "planner-1", "t_cli", "statement.disallow-ddl",
                 "not bound", "default@", "expires"):
        assert part in shown.output, part
    assert "literal-x" not in shown.output + listed.output
    doc = json.loads(_run("approvals", "show", request_id, "--json").output)
    assert doc["id"] == request_id and doc["status"] == "pending"
    assert doc["requester"]["purpose"] == "nightly load" and "seal" not in doc
    lines = _run("approvals", "list", "--json").output.splitlines()
    assert [json.loads(x)["id"] for x in lines] == [request_id]
    missing = _run("approvals", "show", "0123456789abcdef")
    assert missing.exit_code == 2 and "no approval request" in missing.output


def test_decisions_show_and_prune_keeps_what_can_still_be_used(dsn, store_kind):
    denied = _request(dsn, "t_a")
    pending = _request(dsn, "t_b")
    assert _run("approvals", "deny", denied, "--as", "human:maria", "--note",
                "too broad").exit_code == 0
    shown = _run("approvals", "show", denied)
    assert "denied by human:maria" in shown.output and "too broad" in shown.output
    assert denied not in _run("approvals", "list").output  # only pending by default
    assert denied in _run("approvals", "list", "--all").output
    assert _run("approvals", "prune", "--older-than", "1h").output.strip() == "pruned 0 request(s)"
    time.sleep(1.1)
    assert _run("approvals", "prune", "--older-than", "1s").output.strip() == "pruned 1 request(s)"
    everything = _run("approvals", "list", "--all", "--json").output
    assert pending in everything and denied not in everything
    bad = _run("approvals", "prune", "--older-than", "soon")
    assert bad.exit_code == 2 and "12h" in bad.output
