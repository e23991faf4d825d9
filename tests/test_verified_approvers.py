"""Verified approvers (issue 16, item 4): when the policy requires verified humans or names
approver_roles, a decision is made with the approver's signed token (CLI --token-file or
$GOVERNED_DB_APPROVER_TOKEN, the Python API, the console), never with a name; the approver
is never the requester by token subject; the decision record names the verified subject,
never the token. Keys, JWKS and tokens are made in the test; real PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import governed_db
from governed_db import Identity, errors
from governed_db.approvals import approver_from_token
from governed_db.cli import main
from governed_db.policy import load_policy

from .fix_tokens import ISS, AUD, issuer, tamper  # noqa: F401

ETL = Identity("etl", "service", purpose="nightly load")


def _policy(tmp_path: Path, issuer, identity: str) -> Path:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks))
    path = tmp_path / "policy.toml"
    path.write_text(f"""
[[rules]]
id = "statement.disallow-ddl"
level = "approval"

[identity]
{identity}

[identity.oidc]
issuer = "{ISS}"
audience = "{AUD}"
jwks = "jwks.json"
id_claim = "name"
kind_claim = "gdb_kind"
roles_claim = "roles"
leeway_seconds = 0
""")
    return path


VERIFIED_HUMANS = 'require_verified = ["human"]'
ROLES_ONLY = 'approver_roles = ["dba"]'


@pytest.fixture(params=["file", "postgres"])
def store_kind(request, dsn, monkeypatch):
    if request.param == "postgres":
        monkeypatch.setenv("GOVERNED_DB_APPROVALS_DSN", dsn)
    return request.param


@pytest.fixture
def setup(tmp_path, issuer, monkeypatch, dsn, store_kind):
    """A policy requiring verified humans, in GOVERNED_DB_POLICY; a pending DDL request by
    an (unverified) service; the audit log in GOVERNED_DB_AUDIT."""
    path = _policy(tmp_path, issuer, VERIFIED_HUMANS)
    monkeypatch.setenv("GOVERNED_DB_POLICY", str(path))
    monkeypatch.setenv("GOVERNED_DB_AUDIT", str(tmp_path / "audit.jsonl"))
    return path, _request(dsn, path, ETL)


def _request(dsn, policy_path, identity=None, table="t_ver", token=None) -> str:
    kw = {"identity_token": token} if token else {"identity": identity}
    with governed_db.connect(dsn, audit=False, autocommit=True, policy=str(policy_path),
                             **kw) as conn:
        with pytest.raises(errors.ApprovalRequired) as ei:
            conn.execute(f"CREATE TABLE {table} (id int)")
    return ei.value.request_id


def _human(issuer, sub="u-maria", name="maria", **claims) -> str:
    return issuer.mint(sub=sub, name=name, gdb_kind="human", **claims)


def _run(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), env={"COLUMNS": "100", **(env or {})})


def _status(request_id: str) -> str:
    return governed_db._config.approvals(None).get(request_id)["status"]


# -- the CLI ----------------------------------------------------------------------------------

@pytest.mark.parametrize("identity", [VERIFIED_HUMANS, ROLES_ONLY])
@pytest.mark.parametrize("how", ["--as", "env-identity"])
def test_a_name_is_refused_when_verified_approvers_are_required(
        tmp_path, issuer, monkeypatch, dsn, identity, how):
    path = _policy(tmp_path, issuer, identity)
    monkeypatch.setenv("GOVERNED_DB_POLICY", str(path))
    request_id = _request(dsn, path, ETL)
    if how == "--as":
        r = _run("approvals", "approve", request_id, "--as", "human:maria")
    else:
        r = _run("approvals", "approve", request_id,
                 env={"GOVERNED_DB_IDENTITY": "human:maria"})
    assert r.exit_code == 1, r.output
    assert "--as is refused" in r.output and "--token-file" in r.output \
        and "GOVERNED_DB_APPROVER_TOKEN" in r.output
    assert _status(request_id) == "pending"


@pytest.mark.parametrize("via", ["token-file", "env"])
@pytest.mark.parametrize("approve", [True, False])
def test_token_decides_and_the_record_names_the_verified_subject(
        setup, issuer, tmp_path, via, approve):
    _, request_id = setup
    token = _human(issuer, jti="maria-tok-7")
    verb = "approve" if approve else "deny"
    if via == "token-file":
        (tmp_path / "maria.jwt").write_text(token + "\n")
        r = _run("approvals", verb, request_id, "--token-file", str(tmp_path / "maria.jwt"),
                 "--note", "checked")
    else:
        r = _run("approvals", verb, request_id, "--note", "checked",
                 env={"GOVERNED_DB_APPROVER_TOKEN": token,
                      "GOVERNED_DB_IDENTITY": "human:someone-else"})  # the token wins
    status = "approved" if approve else "denied"
    assert r.exit_code == 0, r.output
    assert r.output.strip() == (f"{request_id} {status} by human:maria (verified: {ISS}"
                                " subject u-maria)")
    req = governed_db._config.approvals(None).get(request_id)
    by = req["decisions"][-1]["by"]
    assert req["status"] == status
    assert (by["id"], by["kind"], by["verified"], by["issuer"], by["subject"], by["jti"]) == (
        "maria", "human", True, ISS, "u-maria", "maria-tok-7")
    shown = _run("approvals", "show", request_id, env={"COLUMNS": "200"})
    assert f"{status} by human:maria (verified: {ISS}, subject u-maria)" in shown.output
    log = (tmp_path / "audit.jsonl").read_text()
    decided = [json.loads(x) for x in log.splitlines() if '"approval_decided"' in x]
    assert len(decided) == 1
    ident = decided[0]["identity"]
    assert (ident["verified"], ident["subject"], ident["jti"]) == (True, "u-maria",
                                                                   "maria-tok-7")
    store_text = json.dumps(req)
    for part in token.split("."):
        assert part not in log and part not in store_text  # never the token


def test_token_and_as_on_the_command_line_is_an_error(setup, issuer, tmp_path):
    _, request_id = setup
    (tmp_path / "t.jwt").write_text(_human(issuer))
    r = _run("approvals", "approve", request_id, "--as", "human:maria", "--token-file",
             str(tmp_path / "t.jwt"))
    assert r.exit_code == 1 and "not both" in r.output
    r = _run("approvals", "approve", request_id, "--token-file", str(tmp_path / "none.jwt"))
    assert r.exit_code == 1 and "cannot read the approver token file" in r.output
    (tmp_path / "empty.jwt").write_text("\n")
    r = _run("approvals", "approve", request_id, "--token-file", str(tmp_path / "empty.jwt"))
    assert r.exit_code == 1 and "is empty" in r.output
    assert _status(request_id) == "pending"


@pytest.mark.parametrize("case,error", [
    ("expired", "the token expired"),
    ("wrong-issuer", "issued by 'https://evil.example'"),
    ("tampered", "signature"),
    ("agent", "ai_agent identity cannot"),
])
def test_bad_approver_tokens_refused(setup, issuer, case, error):
    _, request_id = setup
    token = {
        "expired": lambda: _human(issuer, exp=int(time.time()) - 3600,
                                  iat=int(time.time()) - 7200),
        "wrong-issuer": lambda: _human(issuer, iss="https://evil.example"),
        "tampered": lambda: tamper(_human(issuer, sub="u-bob", name="bob"), sub="u-maria"),
        "agent": lambda: issuer.mint(sub="helper", name="helper", gdb_kind="ai_agent"),
    }[case]()
    r = _run("approvals", "approve", request_id, env={"GOVERNED_DB_APPROVER_TOKEN": token})
    assert r.exit_code == 1 and r.output.startswith("refused:") and error in r.output, r.output
    assert _status(request_id) == "pending"


def test_self_approval_refused_by_subject_not_display_name(setup, issuer, dsn):
    """The requester acts with a token (sub u-dana, name "dana-etl"); a token with the same
    subject and another display name is the same person."""
    path, _ = setup
    requester = issuer.mint(sub="u-dana", name="dana-etl", gdb_kind="service")
    own = _request(dsn, path, token=requester, table="t_own")
    same_person = _human(issuer, sub="u-dana", name="Dana Admin")
    r = _run("approvals", "approve", own, env={"GOVERNED_DB_APPROVER_TOKEN": same_person})
    assert r.exit_code == 1 and "token subject is the requester's" in r.output, r.output
    assert _status(own) == "pending"
    # The same display name with another subject is another person, but the id is compared
    # too (fail closed on a name collision).
    namesake = _human(issuer, sub="u-other", name="dana-etl")
    r = _run("approvals", "approve", own, env={"GOVERNED_DB_APPROVER_TOKEN": namesake})
    assert r.exit_code == 1 and "cannot approve its own request" in r.output
    other = _human(issuer, sub="u-maria", name="maria")
    r = _run("approvals", "approve", own, env={"GOVERNED_DB_APPROVER_TOKEN": other})
    assert r.exit_code == 0, r.output


def test_approving_what_was_done_on_your_behalf_is_self_approval(tmp_path, issuer, dsn,
                                                                 monkeypatch):
    """A delegated token (RFC 8693 act): the agent acts for u-dana; u-dana cannot approve."""
    path = _policy(tmp_path, issuer, VERIFIED_HUMANS)
    text = path.read_text().replace('roles_claim = "roles"',
                                    'roles_claim = "roles"\ndelegation = ["act"]')
    path.write_text(text)
    monkeypatch.setenv("GOVERNED_DB_POLICY", str(path))
    delegated = issuer.mint(sub="u-dana", name="u-dana", gdb_kind="service",
                            act={"sub": "etl-runner"})
    own = _request(dsn, path, token=delegated, table="t_obo")
    req = governed_db._config.approvals(None).get(own)
    assert (req["requester"]["id"], req["requester"]["on_behalf_of"]) == ("etl-runner",
                                                                          "u-dana")
    r = _run("approvals", "approve", own,
             env={"GOVERNED_DB_APPROVER_TOKEN": _human(issuer, sub="u-dana", name="Dana")})
    assert r.exit_code == 1 and "token subject is the requester's" in r.output


def test_approver_roles_required(tmp_path, issuer, dsn, monkeypatch):
    path = _policy(tmp_path, issuer, VERIFIED_HUMANS + "\n" + ROLES_ONLY)
    monkeypatch.setenv("GOVERNED_DB_POLICY", str(path))
    request_id = _request(dsn, path, ETL)
    for roles in (None, ["support"], "support analyst"):
        r = _run("approvals", "approve", request_id,
                 env={"GOVERNED_DB_APPROVER_TOKEN": _human(issuer, roles=roles)})
        assert r.exit_code == 1 and "holds none of the approver roles" in r.output \
            and "dba" in r.output, (roles, r.output)
        assert _status(request_id) == "pending"
    r = _run("approvals", "approve", request_id,
             env={"GOVERNED_DB_APPROVER_TOKEN": _human(issuer, roles="support dba")})
    assert r.exit_code == 0, r.output
    assert _status(request_id) == "approved"


def test_without_the_requirement_as_still_works(tmp_path, issuer, dsn, monkeypatch):
    path = _policy(tmp_path, issuer, "")
    monkeypatch.setenv("GOVERNED_DB_POLICY", str(path))
    request_id = _request(dsn, path, ETL)
    r = _run("approvals", "approve", request_id, "--as", "human:maria")
    assert r.exit_code == 0 and r.output.strip() == f"{request_id} approved by human:maria"
    missing = _run("approvals", "deny", _request(dsn, path, ETL, table="t_2"))
    assert missing.exit_code == 1 and "name the approver" in missing.output


# -- the Python API -----------------------------------------------------------------------------

def test_python_api_applies_the_same_rules(setup, issuer):
    path, request_id = setup
    policy = load_policy(path)
    store = governed_db._config.approvals(None)
    with pytest.raises(errors.StatementDenied) as ei:
        store.decide(request_id, Identity("maria", "human"), approve=True, policy=policy)
    assert ei.value.rule_ids == ("approval.verified-approver",)
    # Without policy=, the process policy (GOVERNED_DB_POLICY here) applies.
    with pytest.raises(errors.StatementDenied) as ei:
        store.decide(request_id, Identity("maria", "human"), approve=True)
    assert ei.value.rule_ids == ("approval.verified-approver",)
    maria = approver_from_token(_human(issuer), policy)
    assert (maria.kind, maria.verified, maria.subject) == ("human", True, "u-maria")
    req = store.decide(request_id, maria, approve=True, policy=policy)
    assert req["status"] == "approved" and req["decisions"][-1]["by"]["subject"] == "u-maria"


def test_an_expired_approver_identity_is_refused(setup, issuer):
    path, request_id = setup
    policy = load_policy(path)
    maria = approver_from_token(_human(issuer, exp=int(time.time()) + 1), policy)
    time.sleep(max(0.0, maria.expires_at - time.time()) + 0.1)
    with pytest.raises(errors.StatementDenied) as ei:
        governed_db._config.approvals(None).decide(request_id, maria, approve=True,
                                                   policy=policy)
    assert ei.value.rule_ids == ("approval.verified-approver",)
    assert "no longer valid" in str(ei.value)


# -- the console --------------------------------------------------------------------------------

def test_console_refuses_to_decide_for_an_unverified_approver(setup, issuer):
    pytest.importorskip("starlette")
    import re

    from starlette.testclient import TestClient

    from governed_db.console import ConsoleSettings, create_app

    path, request_id = setup
    policy = load_policy(path)
    store = governed_db._config.approvals(None)
    for approver, status in ((Identity("maria", "human"), 403),
                             (approver_from_token(_human(issuer), policy), 303)):
        settings = ConsoleSettings(logs=[], approver=approver, policy=policy, store=store)
        with TestClient(create_app(settings), base_url="http://127.0.0.1:8765",
                        follow_redirects=False) as c:
            c.get(f"/?token={settings.token}")
            page = c.get(f"/approvals/{request_id}").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
            r = c.post(f"/approvals/{request_id}/decide",
                       data={"action": "approve", "csrf": csrf})
            assert r.status_code == status, r.text
            if status == 403:
                assert "requires verified approvers" in r.text
                assert store.get(request_id)["status"] == "pending"
            if status == 303:
                shown = c.get(f"/approvals/{request_id}").text
                assert f"(verified: {ISS}, subject u-maria)" in shown
    assert store.get(request_id)["status"] == "approved"


def test_console_command_refuses_as_when_verified_approvers_are_required(setup):
    r = _run("console", "--as", "human:maria", "--port", "0")
    assert r.exit_code == 2 and "--as is refused" in r.output


def test_a_delegated_token_cannot_decide(tmp_path, issuer, dsn, monkeypatch):
    """An agent holding a token that acts on maria's behalf (RFC 8693 act) is not maria."""
    path = _policy(tmp_path, issuer, VERIFIED_HUMANS)
    path.write_text(path.read_text().replace('roles_claim = "roles"',
                                             'roles_claim = "roles"\ndelegation = ["act"]'))
    monkeypatch.setenv("GOVERNED_DB_POLICY", str(path))
    request_id = _request(dsn, path, ETL)
    delegated = _human(issuer, sub="u-maria", name="maria", act={"sub": "helper-bot"})
    r = _run("approvals", "approve", request_id, env={"GOVERNED_DB_APPROVER_TOKEN": delegated})
    assert r.exit_code == 1 and "delegated token" in r.output, r.output
    assert _status(request_id) == "pending"
    r = _run("approvals", "approve", request_id,
             env={"GOVERNED_DB_APPROVER_TOKEN": _human(issuer, sub="u-maria", name="maria")})
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("identity,oidc,warns", [
    (ROLES_ONLY, 'roles_claim = "roles"', None),
    (ROLES_ONLY, "", "sets no roles_claim"),
    (VERIFIED_HUMANS, None, "no [identity.oidc]"),
    (ROLES_ONLY, None, "no [identity.oidc]"),
])
def test_policy_check_warns_when_no_approver_can_qualify(tmp_path, issuer, identity, oidc,
                                                         warns):
    from governed_db.policy import check_policy

    (tmp_path / "jwks.json").write_text(json.dumps(issuer.jwks))
    section = "" if oidc is None else f"""
[identity.oidc]
issuer = "{ISS}"
audience = "{AUD}"
jwks = "jwks.json"
kind_claim = "gdb_kind"
{oidc}
"""
    path = tmp_path / "policy.toml"
    path.write_text(f"[identity]\n{identity}\n{section}")
    report = check_policy(path)
    assert report.errors == ()
    found = [w.message for w in report.warnings if "approve" in w.message]
    if warns is None:
        assert found == []
    else:
        assert len(found) == 1 and warns in found[0], found


def test_console_takes_the_approvers_token_with_the_decision(setup, issuer):
    """A console without an approver identity decides with the token pasted in the form:
    verified per decision, never stored; a bad or self-approving token is refused."""
    pytest.importorskip("starlette")
    import re

    from starlette.testclient import TestClient

    from governed_db.console import ConsoleSettings, create_app

    path, request_id = setup
    policy = load_policy(path)
    store = governed_db._config.approvals(None)
    settings = ConsoleSettings(logs=[], approver=None, policy=policy, store=store)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8765",
                    follow_redirects=False) as c:
        c.get(f"/?token={settings.token}")
        page = c.get(f"/approvals/{request_id}").text
        assert 'name="approver_token"' in page
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        r = c.post(f"/approvals/{request_id}/decide", data={"action": "approve", "csrf": csrf})
        assert r.status_code == 403 and "decisions are off" in r.text
        bad = tamper(_human(issuer, sub="u-bob", name="bob"), sub="u-maria")
        r = c.post(f"/approvals/{request_id}/decide",
                   data={"action": "approve", "csrf": csrf, "approver_token": bad})
        assert r.status_code == 403 and "signature" in r.text
        assert store.get(request_id)["status"] == "pending"
        token = _human(issuer, jti="console-jti")
        r = c.post(f"/approvals/{request_id}/decide",
                   data={"action": "approve", "csrf": csrf, "approver_token": token})
        assert r.status_code == 303, r.text
        shown = c.get(f"/approvals/{request_id}").text
        assert f"(verified: {ISS}, subject u-maria)" in shown
        for part in token.split("."):
            assert part not in shown
    req = store.get(request_id)
    assert req["status"] == "approved" and req["decisions"][-1]["by"]["jti"] == "console-jti"
    assert token.split(".")[1] not in json.dumps(req)
