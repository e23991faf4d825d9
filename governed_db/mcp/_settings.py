"""The MCP server's configuration: identity, resource limits, bearer tokens (no SDK import).

It comes from the policy's ``[mcp]`` table and from ``governed-db mcp`` flags. Flags can only
*tighten* what the policy sets (the smaller limit wins): the policy is the operator's word, a
client configuration file is not. Everything is validated when the policy loads, naming file and
line, so a bad token table never surfaces at the first tool call.

::

    [mcp]
    identity = "ai_agent:support-bot"      # stdio, and HTTP without a token table
    purpose = "answer support questions"
    model = "claude-sonnet"
    max_rows = 100                         # rows shown per result (then "truncated")
    max_result_bytes = 65536               # bytes of rendered values per result
    statement_timeout = "15s"              # server-side, and a client-side deadline
    statements_per_minute = 60             # per identity served
    rows_per_hour = 10000

    [[mcp.tokens]]                         # HTTP: a bearer token maps to an identity
    sha256 = "990971588d6cdec7f0f5cedb4e220c7a39897946d603c2bf287c1f799a651a69"
    identity = "ai_agent:ide-bot"
    purpose = "code assistance"
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from .._toml_lines import key_line as _key_line
from .._toml_lines import table_lines as _lines_of
from ..errors import PolicyError
from ..identity import Identity

__all__ = ["JwtSettings", "Limits", "McpSettings", "TokenEntry", "check_mcp_section",
           "parse_duration_ms"]

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|min|h)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, None: 1000}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_LIMIT_KEYS = ("max_rows", "max_result_bytes", "statements_per_minute", "rows_per_hour",
               "sample_rows")
_IDENTITY_KEYS = ("purpose", "model", "on_behalf_of")
_TOP_KEYS = {"identity", "roles", "statement_timeout", "tokens", "jwt", *_LIMIT_KEYS,
             *_IDENTITY_KEYS}
_TOKEN_KEYS = {"sha256", "identity", "roles", *_IDENTITY_KEYS}
_JWT_KEYS = {"issuer", "audience", "jwks", "kind"}


def parse_duration_ms(value: Any) -> int:
    """``"15s"``, ``"500ms"``, ``"2min"``, ``"1h"`` or a bare number of seconds, in ms."""
    if isinstance(value, bool):
        raise ValueError("a duration")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration")
        return int(value * 1000)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError("a duration")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


@attrs.frozen(kw_only=True)
class Limits:
    """Resource limits a model cannot negotiate (it never sees a way to change them).

    Attributes:
        max_rows: rows returned per result set; more are cut and marked ``truncated``.
        max_result_bytes: bytes of rendered values per tool result; then cut, ``truncated``.
        statement_timeout_ms: the server-side ``statement_timeout`` (and, a second later, a
            client-side deadline that cancels the query).
        statements_per_minute: statements each served identity may send per rolling minute.
        rows_per_hour: rows each served identity may receive per rolling hour.
        sample_rows: masked sample rows ``describe_table`` shows.
    """

    max_rows: int = 100
    max_result_bytes: int = 65_536
    statement_timeout_ms: int = 15_000
    statements_per_minute: int = 60
    rows_per_hour: int = 10_000
    sample_rows: int = 3

    def tightened(self, **flags: int | None) -> Limits:
        """These limits with each given flag applied where it is stricter (smaller)."""
        changes = {k: min(v, getattr(self, k)) for k, v in flags.items() if v is not None}
        return attrs.evolve(self, **changes)


@attrs.frozen(kw_only=True)
class TokenEntry:
    """One row of the static token table: the SHA-256 of a bearer token and its identity.

    The token itself is never stored: only its digest, compared in constant time.
    """

    sha256: str = attrs.field(repr=lambda v: v[:8] + "…")
    identity: Identity
    line: int | None = attrs.field(default=None, eq=False)


@attrs.frozen(kw_only=True)
class JwtSettings:
    """Verified JWT bearer tokens (``Identity.from_token``), when that API is available."""

    issuer: str
    audience: str
    jwks: Any
    kind: str | None = None


@attrs.frozen(kw_only=True)
class McpSettings:
    """Everything ``governed-db mcp`` needs besides the DSN and the policy."""

    identity: Identity | None = None
    limits: Limits = attrs.field(factory=Limits)
    tokens: tuple[TokenEntry, ...] = ()
    jwt: JwtSettings | None = None

    @classmethod
    def from_policy(cls, policy: Any) -> McpSettings:
        """The settings of the policy's ``[mcp]`` table (validated when the policy loaded)."""
        raw: Mapping[str, Any] = getattr(policy, "mcp", None) or {}
        source = getattr(policy, "source", None)
        ident = None
        if raw.get("identity"):
            ident = _identity(raw, source, None)
        limits = Limits(**{k: int(raw[k]) for k in _LIMIT_KEYS if k in raw},
                        **({"statement_timeout_ms": parse_duration_ms(raw["statement_timeout"])}
                           if "statement_timeout" in raw else {}))
        tokens = tuple(
            TokenEntry(sha256=str(t["sha256"]).lower(), identity=_identity(t, source, None))
            for t in raw.get("tokens", ()))
        jwt = None
        if raw.get("jwt"):
            j = raw["jwt"]
            jwt = JwtSettings(issuer=str(j["issuer"]), audience=str(j["audience"]),
                              jwks=j["jwks"], kind=j.get("kind"))
        return cls(identity=ident, limits=limits, tokens=tokens, jwt=jwt)


def _identity(raw: Mapping[str, Any], source: str | None, line: int | None) -> Identity:
    ident = Identity.parse(str(raw["identity"]))
    return ident.evolve(roles=tuple(raw.get("roles", ())),
                        **{k: str(raw[k]) for k in _IDENTITY_KEYS if raw.get(k) is not None})


def check_mcp_section(raw: Any, source: str | None, text: str) -> None:
    """Validate a policy's ``[mcp]`` table (called by the policy loader): PolicyError with the
    file and line of the first problem."""
    if not isinstance(raw, Mapping):
        raise PolicyError("[mcp] must be a table", path=source, line=_key_line(text, "mcp"))
    for key in raw:
        if key not in _TOP_KEYS:
            raise PolicyError(f"[mcp]: unknown key {key!r}; expected one of"
                              f" {', '.join(sorted(_TOP_KEYS))}", path=source,
                              line=_key_line(text, key))
    for key in _LIMIT_KEYS:
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < (0 if key == "sample_rows" else 1)):
            raise PolicyError(f"mcp.{key} must be a whole number"
                              f" {'>= 0' if key == 'sample_rows' else '>= 1'}", path=source,
                              line=_key_line(text, key))
    if "statement_timeout" in raw:
        try:
            if parse_duration_ms(raw["statement_timeout"]) < 1:
                raise ValueError("zero")
        except ValueError:
            raise PolicyError('mcp.statement_timeout must be a duration such as "15s" or'
                              ' "500ms" (not zero: that would mean no timeout)', path=source,
                              line=_key_line(text, "statement_timeout")) from None
    if "identity" in raw:
        _check_identity(raw, source, _key_line(text, "identity"))
    tokens = raw.get("tokens", [])
    token_lines = _lines_of(text, "mcp.tokens")
    if not isinstance(tokens, list):
        raise PolicyError("mcp.tokens must be an array of tables ([[mcp.tokens]])", path=source,
                          line=_key_line(text, "tokens"))
    seen: set[str] = set()
    for i, entry in enumerate(tokens):
        line = token_lines[i] if i < len(token_lines) else None
        if not isinstance(entry, Mapping):
            raise PolicyError("every [[mcp.tokens]] entry must be a table", path=source,
                              line=line)
        for key in entry:
            if key not in _TOKEN_KEYS:
                hint = ("; store only the token's SHA-256 (sha256 = \"...\"), never the token"
                        if key in ("token", "secret", "value") else "")
                raise PolicyError(f"[[mcp.tokens]]: unknown key {key!r}; expected one of"
                                  f" {', '.join(sorted(_TOKEN_KEYS))}{hint}", path=source,
                                  line=line)
        digest = entry.get("sha256")
        if not isinstance(digest, str) or not _HEX64.match(digest.lower()):
            raise PolicyError("[[mcp.tokens]] needs sha256 = the 64 hex digits of the token's"
                              " SHA-256 (printf %s TOKEN | sha256sum)", path=source, line=line)
        if digest.lower() in seen:
            raise PolicyError("[[mcp.tokens]]: the same token digest is listed twice",
                              path=source, line=line)
        seen.add(digest.lower())
        if "identity" not in entry:
            raise PolicyError("[[mcp.tokens]] needs identity = \"kind:id\"", path=source,
                              line=line)
        _check_identity(entry, source, line)
    jwt = raw.get("jwt")
    if jwt is not None:
        line = _key_line(text, "mcp.jwt")
        if not isinstance(jwt, Mapping):
            raise PolicyError("[mcp.jwt] must be a table", path=source, line=line)
        for key in jwt:
            if key not in _JWT_KEYS:
                raise PolicyError(f"[mcp.jwt]: unknown key {key!r}; expected one of"
                                  f" {', '.join(sorted(_JWT_KEYS))}", path=source, line=line)
        for key in ("issuer", "audience", "jwks"):
            if not jwt.get(key):
                raise PolicyError(f"[mcp.jwt] needs {key}", path=source, line=line)


def _check_identity(raw: Mapping[str, Any], source: str | None, line: int | None) -> None:
    try:
        Identity.parse(str(raw["identity"]))
    except PolicyError as exc:
        raise PolicyError(exc.detail, path=source, line=line) from None
    roles = raw.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise PolicyError("roles must be a list of strings", path=source, line=line)
    for key in _IDENTITY_KEYS:
        if key in raw and not isinstance(raw[key], str):
            raise PolicyError(f"{key} must be a string", path=source, line=line)
