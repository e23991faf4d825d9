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

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import PolicyError
from ..identity import Identity
from ._settings import JwtSettings, TokenEntry

__all__ = ["BearerAuth", "JwtTokens", "StaticTokens", "TokenIdentity"]


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
        self._verify = getattr(Identity, "from_token", None)
        if self._verify is None:
            raise PolicyError("[mcp.jwt] needs Identity.from_token (verified identity), which"
                              " this governed_db does not have; remove [mcp.jwt] or upgrade")

    def identity_for(self, token: str) -> Identity | None:
        if token.count(".") != 2:
            return None  # not a JWT: let the next verifier (or the 401) answer
        s = self.settings
        try:
            ident = self._verify(token, issuer=s.issuer, audience=s.audience, jwks=s.jwks,
                                 kind=s.kind)
        except Exception:  # noqa: BLE001 - any verification failure is "not authenticated"
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


def verifiers_for(tokens: Sequence[TokenEntry], jwt: JwtSettings | None) -> list[TokenIdentity]:
    out: list[TokenIdentity] = []
    if tokens:
        out.append(StaticTokens(tokens))
    if jwt is not None:
        out.append(JwtTokens(jwt))
    return out
