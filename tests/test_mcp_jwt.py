"""The MCP HTTP server with ``[mcp.jwt]``: a signed JWT is a verified identity for the tool
calls it makes; every refused token gets a 401 that says why (RFC 6750 error_description,
from a fixed vocabulary: never the token, never a claim echoed). Keys, JWKS and tokens are
made in the test; the server runs as a subprocess on loopback, real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("mcp")

import httpx2  # noqa: E402

from governed_db.mcp._auth import REFUSALS  # noqa: E402

from .fix_tokens import AUD, ISS, Issuer, hs256_with, issuer, tamper, unsigned  # noqa: E402,F401
from .test_mcp import _policy_file, audit_records, http_server, http_session  # noqa: E402
from .test_mcp import TOKEN, _env  # noqa: E402

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "raw", "version": "0"}}}
ACCEPT = {"Accept": "application/json, text/event-stream"}


def _jwt_policy(tmp_path: Path, issuer: Issuer) -> Path:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks))
    return _policy_file(tmp_path, f"""
[mcp.jwt]
issuer = "{ISS}"
audience = "{AUD}"
jwks = "{jwks}"
kind = "ai_agent"
""")


async def test_jwt_bearer_tokens_and_401_reasons(dsn, tmp_path, issuer):
    policy = _jwt_policy(tmp_path, issuer)
    now_claims = issuer.claims()
    stranger = Issuer()  # same kids, other keys
    cases = {
        "missing": None,
        "unknown": "not-a-jwt-and-not-in-the-table",
        "malformed": "a.b.c",
        "expired": issuer.mint(exp=now_claims["iat"] - 3600, iat=now_claims["iat"] - 7200),
        "not-yet-valid": issuer.mint(nbf=now_claims["iat"] + 3600),
        "issuer": issuer.mint(iss="https://evil.example"),
        "audience": issuer.mint(aud="someone-else"),
        "signature": stranger.mint(),
        "algorithm": unsigned(now_claims),
        "algorithm-hs256": hs256_with(issuer.public_pem(), now_claims),
        "tampered": tamper(issuer.mint(sub="bot-a"), sub="bot-b"),
        "key": issuer.mint(kid="no-such-kid"),
    }
    expected = {"algorithm-hs256": "algorithm", "tampered": "signature"}
    with (tmp_path / "stderr.txt").open("w") as errlog, \
            http_server(dsn, _env(tmp_path, policy), errlog) as url:
        async with httpx2.AsyncClient(timeout=30) as raw:
            for case, token in cases.items():
                hdrs = dict(ACCEPT)
                if token is not None:
                    hdrs["Authorization"] = f"Bearer {token}"
                r = await raw.post(url, json=INIT, headers=hdrs)
                reason = expected.get(case, case)
                assert r.status_code == 401, (case, r.status_code)
                body = r.json()
                assert (body["error"], body["reason"]) == ("invalid_token", reason), case
                assert body["error_description"] == REFUSALS[reason]
                assert r.headers["www-authenticate"] == (
                    f'Bearer error="invalid_token", error_description="{REFUSALS[reason]}"')
                if token is not None:
                    for part in token.split("."):
                        assert len(part) < 8 or part not in r.text + r.headers["www-authenticate"]
                assert "evil.example" not in r.text
        # A valid JWT is a verified identity; the static table still works beside it.
        token = issuer.mint(sub="jwt-bot", jti="mcp-jti-1")
        async with http_session(url, token) as s:
            res = await s.call_tool("query", {"sql": "SELECT count(*) AS n FROM users"})
            assert not res.is_error and res.structured_content["rows"] == [[2]]
        async with http_session(url, TOKEN) as s:
            res = await s.call_tool("query", {"sql": "SELECT 1 AS one"})
            assert not res.is_error
    recs = audit_records(tmp_path / "audit.jsonl", calls=2)
    stmts = [r for r in recs if r.get("type") == "statement"
             and r["identity"].get("attributes", {}).get("tool") == "query"]
    by_id = {r["identity"]["id"]: r["identity"] for r in stmts}
    assert by_id["jwt-bot"]["verified"] is True
    assert (by_id["jwt-bot"]["issuer"], by_id["jwt-bot"]["subject"],
            by_id["jwt-bot"]["jti"]) == (ISS, "jwt-bot", "mcp-jti-1")
    assert by_id["http-bot"]["verified"] is False
    raw_log = (tmp_path / "audit.jsonl").read_text()
    for part in token.split("."):
        assert part not in raw_log


def test_verified_tokens_are_cached_until_they_expire(issuer, monkeypatch):
    import time

    from governed_db import Identity
    from governed_db.mcp import _auth
    from governed_db.mcp._settings import JwtSettings

    jwt = _auth.JwtTokens(JwtSettings(issuer=ISS, audience=AUD, jwks=issuer.jwks,
                                      kind="ai_agent"))
    calls = []
    real = Identity.from_token

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    jwt._verify = counting
    token = issuer.mint(sub="cached-bot", exp=int(time.time()) + 2)
    first = jwt.identity_for(token)
    assert first is not None and first.verified and jwt.identity_for(token) is first
    assert len(calls) == 1
    assert jwt.identity_for(tamper(token, sub="other")) is None and len(calls) == 2
    monkeypatch.setattr(time, "time", lambda: first.expires_at + 1)
    holder: dict[str, str] = {}
    reset = _auth._refusal.set(holder)
    try:
        assert jwt.identity_for(token) is None
    finally:
        _auth._refusal.reset(reset)
    assert holder == {"reason": "expired"} and len(calls) == 2
