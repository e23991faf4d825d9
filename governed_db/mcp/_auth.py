"""Bearer tokens for the HTTP transport: each maps to one governed identity.

Verifiers are tried in order; the first that recognises a token names its identity:

* :class:`StaticTokens` — the policy's ``[[mcp.tokens]]`` table. Only SHA-256 digests are
  stored; a presented token is hashed and compared with **every** entry by
  ``hmac.compare_digest`` (constant time, no early exit), so timing says nothing about which
  entry, or how much of one, matched.
* :class:`JwtTokens` — ``[mcp.jwt]``: a signed JWT verified by ``Identity.from_token``
  (issuer, audience, JWKS), giving a *verified* identity. It needs a governed_db that has that
  API; configuring it without one is refused at start-up, never silently ignored.

Anything else with the interface ``identity_for(token) -> Identity | None`` plugs in the same
way (:class:`BearerAuth` takes a list).

:class:`BearerAuth` adapts the chain to the MCP SDK's ``TokenVerifier`` protocol: the SDK's
bearer middleware answers 401 to a missing or unknown token before any MCP message is read.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..errors import PolicyError
from ..identity import Identity
from ._settings import JwtSettings, TokenEntry

__all__ = ["BearerAuth", "JwtTokens", "StaticTokens", "TokenIdentity", "with_refusal_reasons"]

# Why the current request's bearer token was refused (one dict per HTTP request, set by
# with_refusal_reasons and filled in by the verifiers, which run in the request's task).
_refusal: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "governed_db_mcp_refusal", default=None)

# What a 401 says, by reason: a fixed vocabulary (never the token, never a claim from it: a
# client's own text would otherwise come back in a response header).
REFUSALS = {
    "missing": "no bearer token: send Authorization: Bearer <token>",
    "unknown": "this token is not one this server knows",
    "malformed": "the token is not a compact JWS (header.payload.signature)",
    "algorithm": "the token's algorithm is refused (asymmetric signatures only)",
    "key": "no key in the configured JWKS verifies this token (kid / key type)",
    "signature": "the token's signature does not verify",
    "expired": "the token has expired: get a new one",
    "not-yet-valid": "the token is not valid yet (nbf / iat in the future)",
    "issuer": "the token was issued by another issuer than the one configured",
    "audience": "the token is not meant for this server (aud)",
    "claims": "the token's claims do not make an identity (sub, kind, types)",
    "jwks-unavailable": "the signing keys (JWKS) cannot be read now: try again later",
    "jwks-invalid": "the configured signing keys (JWKS) are unusable",
    "configuration": "token verification is misconfigured on this server",
}


def note_refusal(reason: str) -> None:
    """Record why the current request's token was refused (kept: the first, most specific)."""
    holder = _refusal.get()
    if holder is not None and "reason" not in holder:
        holder["reason"] = reason if reason in REFUSALS else "unknown"


class TokenIdentity(Protocol):
    """A bearer-token check: the identity a token stands for, or None."""

    def identity_for(self, token: str) -> Identity | None: ...


class StaticTokens:
    """The static table of token digests (``[[mcp.tokens]]``)."""

    def __init__(self, entries: Sequence[TokenEntry]) -> None:
        self._entries = [(bytes.fromhex(e.sha256), e.identity) for e in entries]

    def identity_for(self, token: str) -> Identity | None:
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found = None
        for stored, identity in self._entries:
            # Every entry is compared (no break), each in constant time.
            if hmac.compare_digest(stored, digest):
                found = identity
        return found


class JwtTokens:
    """JWT bearer tokens verified by ``Identity.from_token`` (issuer, audience, JWKS)."""

    def __init__(self, settings: JwtSettings) -> None:
        self.settings = settings
        self._cache: OrderedDict[bytes, Identity] = OrderedDict()
        verify = getattr(Identity, "from_token", None)
        if verify is None:
            raise PolicyError("[mcp.jwt] needs Identity.from_token (verified identity), which"
                              " this governed_db does not have; remove [mcp.jwt] or upgrade")
        self._verify: Callable[..., Identity] = verify

    # Verified tokens are remembered (by SHA-256, never the token) until they expire: every
    # HTTP request of an MCP session carries the same bearer token, and a signature check
    # costs tens of microseconds (RSA) to more (EC); a dictionary lookup costs nothing.
    MAX_CACHED = 10_000

    def identity_for(self, token: str) -> Identity | None:
        if token.count(".") != 2:
            return None  # not a JWT: let the next verifier (or the 401) answer
        import time

        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        cached = self._cache.get(key)
        if cached is not None:
            if cached.expires_at is not None and time.time() < cached.expires_at:
                return cached
            del self._cache[key]
            note_refusal("expired")
            return None
        ident = self._verified(token)
        if ident is not None:
            self._cache[key] = ident
            while len(self._cache) > self.MAX_CACHED:
                self._cache.popitem(last=False)
        return ident

    def _verified(self, token: str) -> Identity | None:
        from ..errors import IdentityError

        s = self.settings
        try:
            ident = self._verify(token, issuer=s.issuer, audience=s.audience, jwks=s.jwks,
                                 kind=s.kind)
        except IdentityError as exc:
            note_refusal(str(getattr(exc, "reason", "") or "unknown"))  # said in the 401
            return None
        except Exception:  # noqa: BLE001 - any verification failure is "not authenticated"
            note_refusal("unknown")
            return None
        return ident if isinstance(ident, Identity) else None


class BearerAuth:
    """The SDK's ``TokenVerifier``: token → ``AccessToken`` whose ``client_id`` keys the
    identity (kept here, never the token: the key is a truncated SHA-256 of it)."""

    def __init__(self, verifiers: Sequence[TokenIdentity]) -> None:
        self.verifiers = list(verifiers)
        self._identities: OrderedDict[str, Identity] = OrderedDict()

    async def verify_token(self, token: str) -> Any:
        from mcp.server.auth.provider import AccessToken

        for verifier in self.verifiers:
            identity = verifier.identity_for(token)
            if identity is not None:
                key = "gdb-" + hashlib.sha256(token.encode("utf-8", "surrogatepass")) \
                    .hexdigest()[:24]
                self._identities[key] = identity
                self._identities.move_to_end(key)
                while len(self._identities) > 10_000:
                    self._identities.popitem(last=False)
                return AccessToken(token=key, client_id=key, scopes=[], subject=identity.id)
        return None

    def identity(self, access_token: Any) -> Identity | None:
        """The identity of a verified request (None: not verified by this object)."""
        if access_token is None:
            return None
        return self._identities.get(str(access_token.client_id))


def with_refusal_reasons(app: Any) -> Any:
    """Wrap the MCP HTTP app so that its 401 says why (RFC 6750 ``error_description``, in
    the ``WWW-Authenticate`` header and the JSON body): no token, an unknown token, or the
    verification failure of a JWT (expired, wrong issuer, audience, key, signature, ...),
    from the fixed vocabulary of :data:`REFUSALS`. Status codes are unchanged."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await app(scope, receive, send)
            return
        holder: dict[str, str] = {}
        reset = _refusal.set(holder)
        state: dict[str, bool | bytes] = {"rewrite": False}

        async def send_reasoned(message: Any) -> None:
            if message["type"] == "http.response.start" and message.get("status") == 401:
                auth = next((v for k, v in scope.get("headers", ())
                             if k.lower() == b"authorization"), b"")
                reason = holder.get("reason") or (
                    "unknown" if auth.lower().startswith(b"bearer ") else "missing")
                body = json.dumps({"error": "invalid_token", "reason": reason,
                                   "error_description": REFUSALS[reason]}).encode()
                state["body"] = body
                state["rewrite"] = True
                headers = [(k, v) for k, v in message.get("headers", ())
                           if k.lower() not in (b"www-authenticate", b"content-length")]
                headers += [(b"www-authenticate",
                             f'Bearer error="invalid_token", error_description='
                             f'"{REFUSALS[reason]}"'.encode()),
                            (b"content-length", str(len(body)).encode())]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and state["rewrite"]:
                if message.get("more_body"):
                    return  # the original body is replaced as a whole
                message = {**message, "body": state["body"]}
            await send(message)

        try:
            await app(scope, receive, send_reasoned)
        finally:
            _refusal.reset(reset)

    return wrapped


def verifiers_for(tokens: Sequence[TokenEntry], jwt: JwtSettings | None) -> list[TokenIdentity]:
    out: list[TokenIdentity] = []
    if tokens:
        out.append(StaticTokens(tokens))
    if jwt is not None:
        out.append(JwtTokens(jwt))
    return out
