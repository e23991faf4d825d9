"""Test issuers: key pairs, JWKS and signed tokens made in the test (no network, no IdP)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISS = "https://idp.test.example"
AUD = "governed-db-test"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Issuer:
    """An identity provider in a box: one key per family, a JWKS, and ``mint()``."""

    def __init__(self, iss: str = ISS, aud: str = AUD) -> None:
        self.iss, self.aud = iss, aud
        self.keys: dict[str, Any] = {
            "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ec": ec.generate_private_key(ec.SECP256R1()),
            "ed": ed25519.Ed25519PrivateKey.generate(),
        }
        self.jwks = {"keys": [self.jwk(name) for name in self.keys]}

    def jwk(self, name: str, kid: str | None = None) -> dict[str, Any]:
        pub = self.keys[name].public_key()
        algo = {"rsa": RSAAlgorithm, "ec": ECAlgorithm, "ed": OKPAlgorithm}[name]
        out = json.loads(algo.to_jwk(pub))
        out["kid"] = kid or f"{name}-1"
        out["use"] = "sig"
        return out

    def claims(self, **over: Any) -> dict[str, Any]:
        now = int(time.time())
        out = {"iss": self.iss, "aud": self.aud, "sub": "recs-bot", "iat": now,
               "exp": now + 600, "jti": "tok-1"}
        out.update(over)
        return {k: v for k, v in out.items() if v is not None}

    def mint(self, *, alg: str = "RS256", key: str | None = None, kid: str | bool | None = None,
             headers: dict[str, Any] | None = None, **claims: Any) -> str:
        family = key or {"RS": "rsa", "PS": "rsa", "ES": "ec", "Ed": "ed"}[alg[:2]]
        hdr = {} if kid is False else {"kid": kid or f"{family}-1"}
        hdr.update(headers or {})
        return jwt.encode(self.claims(**claims), self.keys[family], algorithm=alg,
                          headers=hdr)

    def public_pem(self, name: str = "rsa") -> bytes:
        return self.keys[name].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def unsigned(claims: dict[str, Any], alg: str = "none", kid: str = "rsa-1") -> str:
    header = _b64(json.dumps({"alg": alg, "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{header}.{body}."


def hs256_with(secret: bytes, claims: dict[str, Any], kid: str = "rsa-1") -> str:
    """The algorithm-confusion forgery: HMAC-SHA256 keyed with the (public) key bytes."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(sig)}"


def tamper(token: str, **changes: Any) -> str:
    """The same signature over an edited payload."""
    header, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    return f"{header}.{_b64(json.dumps(claims).encode())}.{sig}"


class JwksServer:
    """A loopback HTTP server for the JWKS URL case; counts fetches."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                outer.fetches += 1
                body = json.dumps(outer.jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def issuer() -> Issuer:
    from governed_db import _tokens

    _tokens.reset_key_cache()
    yield Issuer()
    _tokens.reset_key_cache()


@pytest.fixture
def jwks_server(issuer: Issuer):
    server = JwksServer(issuer.jwks)
    yield server
    server.close()
