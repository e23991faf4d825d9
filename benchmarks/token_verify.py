"""What verifying a bearer JWT costs, per request (``[mcp.jwt]``) and per statement.

    python -m benchmarks.token_verify

In one process, interleaved rounds (see benchmarks/run.py): ``Identity.from_token`` (full
verification: JOSE header, signature, claims, mapping) for RS256, ES256 and EdDSA tokens; the
MCP server's ``JwtTokens.identity_for`` on a token it already verified (a SHA-256 and a
dictionary lookup until ``exp``); and the per-statement check of a verified identity
(``Identity.check_current``: one clock read against the cached expiry).
"""

from __future__ import annotations

import json
import sys

from governed_db import Identity, _tokens
from governed_db.mcp._auth import JwtTokens
from governed_db.mcp._settings import JwtSettings

from .run import interleaved


def main() -> None:
    sys.path.insert(0, ".")
    from tests.fix_tokens import AUD, ISS, Issuer

    _tokens.reset_key_cache()
    issuer = Issuer()
    tokens = {alg: issuer.mint(alg=alg) for alg in ("RS256", "ES256", "EdDSA")}
    kw = {"issuer": ISS, "audience": AUD, "jwks": issuer.jwks, "kind": "ai_agent"}
    jwt = JwtTokens(JwtSettings(issuer=ISS, audience=AUD, jwks=issuer.jwks, kind="ai_agent"))
    ident = Identity.from_token(tokens["RS256"], **kw)
    jwt.identity_for(tokens["RS256"])
    variants = {f"from_token {alg}": (lambda t=t: Identity.from_token(t, **kw))
                for alg, t in tokens.items()}
    variants["mcp identity_for (cached)"] = lambda: jwt.identity_for(tokens["RS256"])
    variants["per statement check_current"] = ident.check_current
    out = interleaved(variants, rounds=7, per_round=400)
    res = {n: round(f["median"], 2) for n, f in out.items()}
    for n, v in res.items():
        print(f"{n:32} {v:9.2f} µs")
    json.dump(res, sys.stdout)
    print()


if __name__ == "__main__":
    main()
