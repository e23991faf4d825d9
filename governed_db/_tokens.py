"""Verified identities: a signed OIDC/JWT token proves who acts (``Identity.from_token``).

Why PyJWT (``PyJWT[crypto]``): it is the most used JOSE library in Python, small, built on
``cryptography`` (already a dependency for audit signing), and ships a JWKS client with a
bounded cache and an http(s)-only URL check. joserfc covers more of JOSE (JWE, nested tokens)
that verification of access and ID tokens does not need.

What is checked, in this order, each refusal its own error class (``governed_db.errors``):

1. the token is three base64url parts with a JSON header (``TokenMalformed``);
2. ``alg`` is on an allow-list of *asymmetric* algorithms (RS*, PS*, ES*, EdDSA) that the
   policy may narrow: ``none`` and every HS* are refused before any key is touched, which is
   what stops the "HS256 signed with the public key" confusion (``AlgorithmRefused``);
3. the signing key comes from the configured JWKS only (never from ``jku``/``x5u``/``jwk``
   headers), chosen by ``kid``; its type must fit ``alg`` and its ``use`` must be ``sig``
   (``KeyNotFound``; the JWKS itself unreachable: ``KeysUnavailable``);
4. the signature (``BadSignature``; a payload edited after signing fails here);
5. ``exp`` is required; ``exp``/``nbf``/``iat`` with a bounded leeway (``TokenExpired``,
   ``TokenNotYetValid``), ``iss`` equal to the issuer (``WrongIssuer``), ``aud`` containing
   the audience (``WrongAudience``);
6. the claims the identity is made from exist and have usable types (``TokenRejected``).

The token itself is never stored, logged, put in an error message, an audit record or a
span: the identity keeps the issuer, the subject, the token id (``jti``) and the expiry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .errors import (
    AlgorithmRefused,
    BadSignature,
    IdentityError,
    KeyNotFound,
    KeysUnavailable,
    PolicyError,
    TokenExpired,
    TokenMalformed,
    TokenNotYetValid,
    TokenRejected,
    WrongAudience,
    WrongIssuer,
)

__all__ = ["ASYMMETRIC_ALGORITHMS", "OidcSettings", "Verification", "check_identity_section",
           "verify_token"]

# The only algorithms ever accepted: signatures a public key can verify. HS* would let
# anyone holding the public key (it is public) mint tokens if it were ever used as an HMAC
# secret; "none" is no signature at all.
ASYMMETRIC_ALGORITHMS: tuple[str, ...] = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
MAX_LEEWAY = 300.0
MAX_JWKS_TTL = 86_400.0
MAX_TOKEN_BYTES = 16_384
_OIDC_KEYS = {"issuer", "audience", "jwks", "algorithms", "leeway_seconds", "jwks_ttl_seconds",
              "max_token_age_seconds", "id_claim", "kind", "kind_claim", "roles_claim",
              "purpose_claim", "model_claim", "tenant_claim", "on_behalf_of_claim",
              "delegation"}
_IDENTITY_KEYS = {"oidc", "require_verified", "approver_roles"}


@attrs.frozen(kw_only=True)
class Verification:
    """What a verified token proved (no token, no signature): kept on the Identity."""

    issuer: str
    subject: str
    token_id: str | None
    expires_at: float
    issued_at: float | None
    algorithm: str
    key_id: str | None
    actor: str | None = None  # RFC 8693 ``act.sub`` / ``azp`` when the token is delegated

    def to_record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"verified": True, "issuer": self.issuer, "subject": self.subject}
        if self.token_id is not None:
            out["jti"] = self.token_id
        out["expires_at"] = int(self.expires_at)
        return out


def _audiences(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


@attrs.frozen(kw_only=True)
class OidcSettings:
    """How tokens are verified and mapped to an Identity (the policy's ``[identity.oidc]``).

    Args:
        issuer: the exact ``iss`` expected.
        audience: the ``aud`` value(s) accepted (one of them must be in the token).
        jwks: a JWKS dict, a path to a JWKS JSON file (offline, air-gapped) or an http(s) URL.
        algorithms: allowed ``alg`` values, a subset of the asymmetric ones.
        leeway_seconds: clock skew tolerated on exp/nbf/iat (at most 300).
        jwks_ttl_seconds: how long a fetched (or read) JWKS is reused (at most one day).
        max_token_age_seconds: refuse tokens issued longer ago than this (needs ``iat``).
        id_claim: the claim that is the identity's id (``sub``).
        kind / kind_claim: the identity kind, fixed or read from a claim.
        roles_claim, purpose_claim, model_claim, tenant_claim, on_behalf_of_claim: where
            those fields come from (roles: a list, or a space-separated string).
        delegation: how delegated tokens name who acts: ``"act"`` (RFC 8693: ``act.sub``
            acts on behalf of ``sub``), ``"azp"`` (the authorized party acts for ``sub``).
    """

    issuer: str
    audience: tuple[str, ...] = attrs.field(converter=_audiences)
    jwks: Any
    algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS
    leeway_seconds: float = 30.0
    jwks_ttl_seconds: float = 300.0
    max_token_age_seconds: float | None = None
    id_claim: str = "sub"
    kind: str | None = None
    kind_claim: str | None = None
    roles_claim: str | None = None
    purpose_claim: str | None = None
    model_claim: str | None = None
    tenant_claim: str | None = None
    on_behalf_of_claim: str | None = None
    delegation: tuple[str, ...] = attrs.field(default=("act",), converter=tuple)

    def __attrs_post_init__(self) -> None:
        if not self.issuer or not self.audience or not all(self.audience):
            raise PolicyError("[identity.oidc] needs issuer and audience")
        bad = [a for a in self.algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if bad or not self.algorithms:
            raise PolicyError(
                f"[identity.oidc] algorithms {bad or '[]'} not allowed: only asymmetric"
                f" algorithms ({', '.join(ASYMMETRIC_ALGORITHMS)}); HS* and none are refused")
        if not 0 <= self.leeway_seconds <= MAX_LEEWAY:
            raise PolicyError(f"[identity.oidc] leeway_seconds must be 0..{MAX_LEEWAY:g}")
        if not 1 <= self.jwks_ttl_seconds <= MAX_JWKS_TTL:
            raise PolicyError(f"[identity.oidc] jwks_ttl_seconds must be 1..{MAX_JWKS_TTL:g}")
        if self.max_token_age_seconds is not None and self.max_token_age_seconds <= 0:
            raise PolicyError("[identity.oidc] max_token_age_seconds must be positive")
        from .identity import KINDS

        if self.kind is not None and self.kind not in KINDS:
            raise PolicyError(f"[identity.oidc] kind must be one of {', '.join(KINDS)}")
        for d in self.delegation:
            if d not in ("act", "azp"):
                raise PolicyError('[identity.oidc] delegation entries are "act" or "azp"')
        _check_jwks_spec(self.jwks)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, base: str | None = None) -> OidcSettings:
        unknown = set(raw) - _OIDC_KEYS
        if unknown:
            raise PolicyError(f"[identity.oidc]: unknown key {sorted(unknown)[0]!r}; expected"
                              f" one of {', '.join(sorted(_OIDC_KEYS))}")
        for key in ("issuer", "audience", "jwks"):
            if not raw.get(key):
                raise PolicyError(f"[identity.oidc] needs {key}")
        kwargs: dict[str, Any] = dict(raw)
        jwks = kwargs["jwks"]
        if isinstance(jwks, str) and base and not jwks.startswith(("http://", "https://")) \
                and not Path(jwks).expanduser().is_absolute():
            kwargs["jwks"] = str(Path(base).resolve().parent / jwks)
        for key in ("algorithms", "delegation"):
            if key in kwargs:
                value = kwargs[key]
                kwargs[key] = (value,) if isinstance(value, str) else tuple(value)
        for key in ("leeway_seconds", "jwks_ttl_seconds", "max_token_age_seconds"):
            if key in kwargs:
                value = kwargs[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise PolicyError(f"[identity.oidc] {key} must be a number of seconds")
                kwargs[key] = float(value)
        return cls(**kwargs)


def _check_jwks_spec(jwks: Any) -> None:
    if isinstance(jwks, Mapping):
        if not isinstance(jwks.get("keys"), list):
            raise PolicyError("a JWKS dict needs a \"keys\" list")
        return
    if isinstance(jwks, (str, os.PathLike)):
        text = os.fspath(jwks)
        if text.startswith("http://") and not _loopback_url(text):
            raise PolicyError("a JWKS URL must be https:// (http:// only on a loopback host)")
        return
    raise PolicyError("jwks must be a JWKS dict, a path to a JWKS JSON file or an https:// URL")


def _loopback_url(url: str) -> bool:
    from urllib.parse import urlparse

    host = urlparse(url).hostname or ""
    return host in ("localhost", "127.0.0.1", "::1")


def check_identity_section(raw: Any, source: str | None, line_of: Any) -> None:
    """Validate the policy's ``[identity]`` table at load time (file and line in errors)."""
    from .identity import KINDS

    if not isinstance(raw, Mapping):
        raise PolicyError("[identity] must be a table", path=source, line=line_of("identity"))
    for key in raw:
        if key not in _IDENTITY_KEYS:
            raise PolicyError(f"[identity]: unknown key {key!r}; expected one of"
                              f" {', '.join(sorted(_IDENTITY_KEYS))}", path=source,
                              line=line_of(key))
    req = raw.get("require_verified", [])
    if isinstance(req, str) or not isinstance(req, list) or any(k not in KINDS for k in req):
        raise PolicyError(f"identity.require_verified must be a list of kinds"
                          f" ({', '.join(KINDS)})", path=source,
                          line=line_of("require_verified"))
    roles = raw.get("approver_roles", [])
    if isinstance(roles, str) or not isinstance(roles, list) \
            or not all(isinstance(r, str) and r for r in roles):
        raise PolicyError("identity.approver_roles must be a list of role names", path=source,
                          line=line_of("approver_roles"))
    if "oidc" in raw:
        if not isinstance(raw["oidc"], Mapping):
            raise PolicyError("[identity.oidc] must be a table", path=source,
                              line=line_of("identity.oidc"))
        try:
            OidcSettings.from_mapping(raw["oidc"], base=source)
        except PolicyError as exc:
            raise PolicyError(exc.detail, path=source, line=line_of("identity.oidc")) from None


# -- JWKS sources ---------------------------------------------------------------------------------

class _KeySet:
    """Raw JWK dicts of one source, with the time they were read."""

    __slots__ = ("keys", "read_at")

    def __init__(self, keys: list[Mapping[str, Any]]) -> None:
        self.keys = keys
        self.read_at = time.monotonic()


_lock = threading.Lock()
_sources: OrderedDict[Any, Any] = OrderedDict()  # bounded: one entry per configured source


def _parse_jwks(data: Any, where: str) -> list[Mapping[str, Any]]:
    if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
        raise KeysUnavailable(f"the JWKS from {where} is not a JSON object with a \"keys\" list",
                              reason="jwks-invalid")
    return [k for k in data["keys"] if isinstance(k, Mapping)]


def _source_key(jwks: Any) -> Any:
    if isinstance(jwks, Mapping):
        return ("dict", hashlib.sha256(json.dumps(jwks, sort_keys=True, default=str)
                                       .encode()).hexdigest())
    return ("ref", os.fspath(jwks))


def _remember(key: Any, value: Any) -> None:
    _sources[key] = value
    _sources.move_to_end(key)
    while len(_sources) > 64:
        _sources.popitem(last=False)


def _keys(jwks: Any, ttl: float, *, refresh: bool = False) -> list[Mapping[str, Any]]:
    """The JWK dicts of a source: a dict as given, a file re-read after ``ttl`` (or when it
    changes), a URL fetched through PyJWT's JWKS client with a ``ttl`` cache."""
    key = _source_key(jwks)
    if isinstance(jwks, Mapping):
        with _lock:
            cached = _sources.get(key)
            if cached is None:
                cached = _KeySet(_parse_jwks(jwks, "the jwks dict"))
                _remember(key, cached)
        return list(cached.keys)
    ref = os.fspath(jwks)
    if ref.startswith(("https://", "http://")):
        return _url_keys(key, ref, ttl, refresh)
    path = Path(ref).expanduser()
    try:
        st = path.stat()
    except OSError as exc:
        raise KeysUnavailable(f"cannot read the JWKS file {path}: {exc.strerror}",
                              reason="jwks-unavailable") from None
    stamp = (st.st_mtime_ns, st.st_size)
    with _lock:
        cached = _sources.get(key)
        if cached is not None and cached[0] == stamp and not refresh \
                and time.monotonic() - cached[1].read_at < ttl:
            return list(cached[1].keys)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise KeysUnavailable(f"cannot read the JWKS file {path}: {exc}",
                              reason="jwks-unavailable") from None
    keyset = _KeySet(_parse_jwks(data, str(path)))
    with _lock:
        _remember(key, (stamp, keyset))
    return list(keyset.keys)


def _url_keys(key: Any, url: str, ttl: float, refresh: bool) -> list[Mapping[str, Any]]:
    import jwt

    with _lock:
        client = _sources.get(key)
        if client is None or client.jwk_set_cache is None \
                or client.jwk_set_cache.lifespan != ttl:
            # No redirects followed (PyJWT's client), http(s) only, a short timeout, the whole
            # set cached for ttl; an unknown kid forces one refresh at most every 30 s.
            client = jwt.PyJWKClient(url, cache_jwk_set=True, lifespan=ttl, timeout=5,
                                     cooldown_duration=30)
            _remember(key, client)
    try:
        data = client.fetch_data() if refresh else _cached_or_fetch(client)
    except jwt.PyJWKClientError as exc:
        raise KeysUnavailable(f"cannot fetch the JWKS from {url}: {exc}",
                              reason="jwks-unavailable") from None
    return _parse_jwks(data, url)


def _cached_or_fetch(client: Any) -> Any:
    cache = client.jwk_set_cache
    jwk_set = cache.get() if cache is not None else None
    if jwk_set is not None:
        return {"keys": [k._jwk_data for k in jwk_set.keys]}
    return client.fetch_data()


def reset_key_cache() -> None:
    """Forget every cached JWKS (tests; a rotated offline file is also noticed by mtime)."""
    with _lock:
        _sources.clear()


# -- verification ---------------------------------------------------------------------------------

def _b64json(part: str, what: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        return json.loads(raw)
    except (ValueError, TypeError):
        raise TokenMalformed(f"the token's {what} is not base64url-encoded JSON",
                             reason="malformed") from None


def _fits(jwk: Mapping[str, Any], alg: str) -> bool:
    if jwk.get("use", "sig") != "sig":
        return False
    if jwk.get("alg") is not None and jwk.get("alg") != alg:
        return False
    if jwk.get("kty") != _KEY_TYPES[alg[:2]]:
        return False
    if alg in _EC_CURVES and jwk.get("crv") != _EC_CURVES[alg]:
        return False
    return not (alg == "EdDSA" and jwk.get("crv") not in ("Ed25519", "Ed448"))


def _select_key(candidates: list[Mapping[str, Any]], kid: str | None,
                alg: str) -> Mapping[str, Any] | None:
    if kid is not None:
        matching = [k for k in candidates if k.get("kid") == kid]
    else:
        # No kid: only a JWKS with exactly one key of the right type is unambiguous.
        matching = [k for k in candidates if _fits(k, alg)]
        if len(matching) != 1:
            return None
    for k in matching:
        if _fits(k, alg):
            return k
    return None


def verify_token(token: Any, settings: OidcSettings, *, kind: str | None = None,
                 now: float | None = None) -> tuple[dict[str, Any], Verification]:
    """Verify ``token`` against ``settings``; the claims and what was proven, or raise."""
    import jwt

    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            raise TokenMalformed("the token is not ASCII text", reason="malformed") from None
    if not isinstance(token, str):
        raise TokenMalformed("the token must be a string (a compact JWS: header.payload."
                             "signature)", reason="malformed")
    token = token.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenMalformed(f"the token is longer than {MAX_TOKEN_BYTES} bytes",
                             reason="malformed")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise TokenMalformed("the token is not a compact JWS (header.payload.signature);"
                             " encrypted tokens (JWE) are not accepted", reason="malformed")
    header = _b64json(parts[0], "header")
    if not isinstance(header, Mapping):
        raise TokenMalformed("the token's header is not a JSON object", reason="malformed")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in settings.algorithms:
        shown = alg if isinstance(alg, str) and len(alg) <= 16 else "?"
        raise AlgorithmRefused(
            f"token algorithm {shown!r} is refused: only {', '.join(settings.algorithms)}"
            " (asymmetric signatures) are accepted; none and HS* never are",
            reason="algorithm")
    if not parts[2]:
        raise BadSignature("the token has no signature", reason="signature")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise TokenMalformed("the token's kid header is not a string", reason="malformed")
    jwk = _select_key(_keys(settings.jwks, settings.jwks_ttl_seconds), kid, alg)
    if jwk is None and kid is not None:
        # A rotated key: the URL's JWKS is fetched again (rate-limited by PyJWT's cooldown).
        jwk = _select_key(_keys(settings.jwks, settings.jwks_ttl_seconds, refresh=True),
                          kid, alg)
    if jwk is None:
        raise KeyNotFound(
            f"no signing key for this token in the JWKS (kid {kid!r}, alg {alg}); the token"
            " was not signed by the configured issuer's keys" if kid is not None else
            "the token names no key (kid) and the JWKS does not hold exactly one key for"
            f" {alg}", reason="key")
    try:
        key = jwt.PyJWK(dict(jwk), algorithm=alg)
    except jwt.PyJWTError:
        raise KeysUnavailable(f"the JWKS key {kid!r} cannot be used for {alg}",
                              reason="jwks-invalid") from None
    try:
        # Signature only here (with minimum key lengths enforced); claims are checked below
        # so each refusal gets its own error and the leeway stays bounded.
        claims = jwt.decode(token, key, algorithms=[alg], options={
            "verify_signature": True, "verify_exp": False, "verify_nbf": False,
            "verify_iat": False, "verify_aud": False, "verify_iss": False,
            "verify_sub": False, "verify_jti": False, "enforce_minimum_key_length": True})
    except jwt.InvalidSignatureError:
        raise BadSignature("the token's signature does not verify with the issuer's key"
                           " (signed by another key, or edited after signing)",
                           reason="signature") from None
    except jwt.InvalidKeyError:
        raise KeysUnavailable("the JWKS key is too short to be trusted (RSA keys need at"
                              " least 2048 bits)", reason="jwks-invalid") from None
    except jwt.InvalidAlgorithmError:
        raise AlgorithmRefused(f"token algorithm {alg!r} does not fit the key",
                               reason="algorithm") from None
    except jwt.PyJWTError:
        raise TokenMalformed("the token's payload is not a JSON object", reason="malformed") \
            from None
    if not isinstance(claims, dict):
        raise TokenMalformed("the token's payload is not a JSON object", reason="malformed")
    return claims, _check_claims(claims, settings, alg, kid, now)


def _num(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenMalformed(f"the token's {name} claim must be a number (seconds since"
                             " the epoch)", reason="malformed")
    return float(value)


def _check_claims(claims: Mapping[str, Any], s: OidcSettings, alg: str, kid: str | None,
                  now: float | None) -> Verification:
    now = time.time() if now is None else now
    leeway = s.leeway_seconds
    exp = _num(claims, "exp")
    if exp is None:
        raise TokenRejected("the token has no exp claim: tokens that never expire are not"
                            " accepted", reason="claims")
    if exp <= now - leeway:
        raise TokenExpired(f"the token expired {int(now - exp)} s ago; get a new one",
                           reason="expired")
    nbf = _num(claims, "nbf")
    if nbf is not None and nbf > now + leeway:
        raise TokenNotYetValid(f"the token is not valid for another {int(nbf - now)} s (nbf)",
                               reason="not-yet-valid")
    iat = _num(claims, "iat")
    if iat is not None and iat > now + leeway:
        raise TokenNotYetValid("the token claims to be issued in the future (iat); check the"
                               " clocks", reason="not-yet-valid")
    if s.max_token_age_seconds is not None:
        if iat is None:
            raise TokenRejected("the token has no iat claim, needed for"
                                " max_token_age_seconds", reason="claims")
        if now - iat > s.max_token_age_seconds + leeway:
            raise TokenExpired("the token is older than max_token_age_seconds",
                               reason="expired")
    iss = claims.get("iss")
    if not isinstance(iss, str) or not _same(iss, s.issuer):
        raise WrongIssuer(f"the token was issued by {_short(iss)}, not by {s.issuer!r}",
                          reason="issuer")
    aud = claims.get("aud")
    auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else None
    if not auds or not all(isinstance(a, str) for a in auds) \
            or not any(_same(a, want) for a in auds for want in s.audience):
        raise WrongAudience(f"the token is not meant for audience {', '.join(s.audience)}"
                            " (aud)", reason="audience")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise TokenRejected("the token has no sub claim", reason="claims")
    jti = claims.get("jti")
    if jti is not None and not isinstance(jti, str):
        raise TokenMalformed("the token's jti claim must be a string", reason="malformed")
    return Verification(issuer=iss, subject=sub, token_id=jti, expires_at=exp + leeway,
                        issued_at=iat, algorithm=alg, key_id=kid)


def _same(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


def _short(value: Any) -> str:
    return repr(value[:80]) if isinstance(value, str) else "no issuer (iss)"


def identity_fields(claims: Mapping[str, Any], s: OidcSettings, v: Verification,
                    kind: str | None) -> tuple[dict[str, Any], Verification]:
    """The Identity fields the claims map to (and the verification with the actor set)."""
    from .identity import KINDS

    def text(name: str | None, what: str) -> str | None:
        if name is None:
            return None
        value = claims.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise TokenRejected(f"the token's {name} claim ({what}) must be a string",
                                reason="claims")
        return value

    ident_id = text(s.id_claim, "identity id")
    if ident_id is None:
        raise TokenRejected(f"the token has no {s.id_claim} claim (the identity id)",
                            reason="claims")
    on_behalf_of = text(s.on_behalf_of_claim, "on behalf of")
    actor = None
    act = claims.get("act")
    if "act" in s.delegation and act is not None:
        if not isinstance(act, Mapping) or not isinstance(act.get("sub"), str) \
                or not act["sub"]:
            raise TokenRejected("the token's act claim must be an object with a sub"
                                " (RFC 8693)", reason="claims")
        actor = act["sub"]
    elif "azp" in s.delegation and isinstance(claims.get("azp"), str) \
            and claims["azp"] and claims["azp"] != ident_id:
        actor = claims["azp"]
    if actor is not None:
        # Delegation: the actor acts, on behalf of the token's subject.
        on_behalf_of, ident_id = ident_id, actor
    if kind is None:
        kind = s.kind
        if s.kind_claim is not None and claims.get(s.kind_claim) is not None:
            kind = text(s.kind_claim, "identity kind")
    if kind is None:
        raise TokenRejected("the identity kind is unknown: pass kind= or set kind /"
                            " kind_claim in [identity.oidc]", reason="claims")
    if kind not in KINDS:
        raise TokenRejected(f"the token's identity kind must be one of {', '.join(KINDS)}",
                            reason="claims")
    roles: tuple[str, ...] = ()
    if s.roles_claim is not None and claims.get(s.roles_claim) is not None:
        raw = claims[s.roles_claim]
        if isinstance(raw, str):
            roles = tuple(r for r in raw.split() if r)
        elif isinstance(raw, list) and all(isinstance(r, str) for r in raw):
            roles = tuple(r for r in raw if r)
        else:
            raise TokenRejected(f"the token's {s.roles_claim} claim (roles) must be a list"
                                " of strings or a space-separated string", reason="claims")
    fields: dict[str, Any] = {"id": ident_id, "kind": kind, "roles": roles,
                              "on_behalf_of": on_behalf_of,
                              "purpose": text(s.purpose_claim, "purpose"),
                              "model": text(s.model_claim, "model"),
                              "tenant": text(s.tenant_claim, "tenant")}
    return fields, attrs.evolve(v, actor=actor)


def settings_for(issuer: str | None, audience: Any, jwks: Any,
                 policy: Any = None) -> OidcSettings:
    """Explicit arguments over the policy's ``[identity.oidc]`` (claim mapping kept)."""
    raw: dict[str, Any] = {}
    section = (getattr(policy, "identity", None) or {}).get("oidc") if policy is not None \
        else None
    if section:
        raw.update(section)
    if issuer is not None:
        raw["issuer"] = issuer
    if audience is not None:
        raw["audience"] = audience
    if jwks is not None:
        raw["jwks"] = jwks
    missing = [k for k in ("issuer", "audience", "jwks") if not raw.get(k)]
    if missing:
        raise IdentityError(
            f"cannot verify the token: no {', '.join(missing)} given; pass them to"
            " Identity.from_token() or set them in the policy's [identity.oidc]",
            reason="configuration")
    try:
        if isinstance(raw["jwks"], Mapping):
            return OidcSettings.from_mapping(raw, base=getattr(policy, "source", None))
        raw["jwks"] = os.fspath(raw["jwks"])
        return OidcSettings.from_mapping(raw, base=getattr(policy, "source", None))
    except PolicyError as exc:
        raise IdentityError(f"cannot verify the token: {exc.detail}",
                            reason="configuration") from None


def policy_settings(policy: Any) -> OidcSettings:
    """The policy's ``[identity.oidc]`` settings (IdentityError when it has none)."""
    return settings_for(None, None, None, policy)
