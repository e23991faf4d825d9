"""Who is acting: the identity attached to every connection and statement.

Resolution order for a statement: the innermost ``acting_as()`` block (a contextvar, so it
follows threads started inside it only explicitly, and async tasks naturally), then the
connection's ``identity=``, then ``configure(identity=...)``, then ``GOVERNED_DB_IDENTITY``
(``kind:id``), then an identity derived from the OS user and program (with a one-time warning).
"""

from __future__ import annotations

import contextlib
import contextvars
import getpass
import os
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import attrs

from .errors import PolicyError

__all__ = ["Identity", "IdentityKind", "acting_as", "current_identity", "derived_identity"]

# Fields a verified token establishes: changing one with evolve() drops the verification
# (a caller cannot keep "verified" while claiming other roles, tenant or kind).
_TOKEN_FIELDS = frozenset({"id", "kind", "roles", "on_behalf_of", "model", "tenant"})

IdentityKind = Literal["human", "service", "ai_agent"]
KINDS: tuple[str, ...] = ("human", "service", "ai_agent")


def _check_kind(instance: Any, attribute: Any, value: str) -> None:
    if value not in KINDS:
        raise PolicyError(f"identity kind must be one of {', '.join(KINDS)}, not {value!r}")


def _check_id(instance: Any, attribute: Any, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise PolicyError("identity id must be a non-empty string")
    if len(value) > 200 or any(ord(ch) < 32 for ch in value):
        raise PolicyError("identity id must be at most 200 printable characters")


def _check_text(instance: Any, attribute: Any, value: Any) -> None:
    # Checked here, not when the audit writer serializes the record: a bad value found there
    # could only stop the audit trail (and with it every statement).
    if value is not None and not isinstance(value, str):
        raise PolicyError(f"Identity {attribute.name} must be a string or None, not"
                          f" {type(value).__name__}")


def _roles(value: Any) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)):
        raise PolicyError("Identity roles must be a sequence of role names such as"
                          f" (\"support\",), not a single {type(value).__name__}")
    try:
        roles = tuple(value)
    except TypeError:
        raise PolicyError("Identity roles must be a sequence of role names, not"
                          f" {type(value).__name__}") from None
    for role in roles:
        if not isinstance(role, str) or not role:
            raise PolicyError("Identity roles must be non-empty strings, not"
                              f" {type(role).__name__}")
    return roles


class FrozenAttributes(dict[str, Any]):  # a dict for json/pickle/equality
    """Identity attributes: a read-only mapping (an identity is a value; the audit record is
    written later, on the writer thread, and must show what the statement ran with)."""

    __slots__ = ()

    def _read_only(self, *_args: Any, **_kwargs: Any) -> Any:
        raise TypeError("Identity attributes are read-only: make a variant with"
                        " identity.evolve(attributes={...})")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> Any:
        return (FrozenAttributes, (dict(self),))

    def __copy__(self) -> FrozenAttributes:
        return self

    def __deepcopy__(self, memo: Any) -> FrozenAttributes:
        return self


def _frozen_value(value: Any) -> Any:
    """Containers copied into immutable ones (lists -> tuples, dicts -> read-only mappings),
    so nothing the caller still holds can change what the identity says."""
    if isinstance(value, Mapping):
        return FrozenAttributes({k: _frozen_value(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_frozen_value(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(_frozen_value(v) for v in value)
    if isinstance(value, bytearray):
        return bytes(value)
    return value


def _freeze_attributes(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if isinstance(value, FrozenAttributes):
        return value
    try:
        out = dict(value or {})
    except (TypeError, ValueError):
        raise PolicyError("Identity attributes must be a mapping of names to values, not"
                          f" {type(value).__name__}") from None
    for key, item in out.items():
        if not isinstance(key, str):
            raise PolicyError(f"Identity attribute names must be strings, not"
                              f" {type(key).__name__}")
        if isinstance(item, bytes):
            raise PolicyError(f"Identity attribute {key!r} is bytes; pass text (decode it)")
        try:
            _jsonable(item)  # what the audit record will hold
        except Exception as exc:  # noqa: BLE001 - any failure: refuse the value now
            raise PolicyError(f"Identity attribute {key!r} cannot be recorded:"
                              f" str() of its {type(item).__name__} value failed"
                              f" ({type(exc).__name__})") from None
    return FrozenAttributes({key: _frozen_value(item) for key, item in out.items()})


@attrs.frozen
class Identity:
    """A person, service or AI agent on whose behalf statements run.

    Args:
        id: a stable identifier (``"alice@corp"``, ``"billing-api"``, ``"recs-bot"``).
        kind: ``"human"``, ``"service"`` or ``"ai_agent"``.
        purpose: why it acts (``"weekly recommendations"``); goes to every audit record.
        on_behalf_of: the person an agent or service acts for.
        model: the AI model behind an agent (``"gpt-4o"``).
        roles: policy roles (``("support",)``) used by rule scopes and unmask grants.
        attributes: free-form context such as ``tool_call_id`` or ``run_id``.
        tenant: the tenant it acts in (row-level security reads it from
            ``governed_db.identity.tenant``).

    Identities are immutable values; use :meth:`evolve` for a variant (e.g. per tool call).

    An identity made by :meth:`from_token` is *verified* (``verified``, ``issuer``,
    ``subject``, ``token_id``, ``expires_at``); one made by the constructor never is, whatever
    it claims. ``[identity] require_verified`` in the policy refuses unverified identities of
    the kinds it lists.
    """

    id: str = attrs.field(validator=_check_id)
    kind: str = attrs.field(validator=_check_kind)
    purpose: str | None = attrs.field(default=None, kw_only=True, validator=_check_text)
    on_behalf_of: str | None = attrs.field(default=None, kw_only=True, validator=_check_text)
    model: str | None = attrs.field(default=None, kw_only=True, validator=_check_text)
    roles: tuple[str, ...] = attrs.field(default=(), converter=_roles, kw_only=True)
    attributes: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_freeze_attributes, kw_only=True, eq=False, hash=False
    )
    tenant: str | None = attrs.field(default=None, kw_only=True, validator=_check_text)
    # Set only by from_token (init=False: the constructor cannot claim it).
    _verification: Any = attrs.field(default=None, init=False, repr=False)

    def evolve(self, **changes: Any) -> Identity:
        """A copy with some fields changed (``identity.evolve(attributes={...})``).

        A verified identity stays verified when only ``attributes`` or ``purpose`` change
        (per-call context); changing a field the token established (id, kind, roles,
        on_behalf_of, model, tenant) gives an unverified identity.
        """
        out = attrs.evolve(self, **changes)
        if self._verification is not None and not (
                _TOKEN_FIELDS & {k for k, v in changes.items() if getattr(self, k) != v}):
            object.__setattr__(out, "_verification", self._verification)
        return out

    @classmethod
    def from_token(cls, token: str | bytes, *, issuer: str | None = None,
                   audience: str | list[str] | tuple[str, ...] | None = None,
                   jwks: Any = None, kind: str | None = None,
                   policy: Any = None) -> Identity:
        """Verify a signed OIDC/JWT token (access or ID token) and return who it proves.

        Args:
            token: the compact JWS (``header.payload.signature``; a ``Bearer `` prefix is
                accepted). It is never stored: the identity keeps issuer, subject, ``jti``
                and expiry.
            issuer: the exact ``iss`` expected.
            audience: the ``aud`` value (or values) accepted.
            jwks: a JWKS dict, a path to a JWKS JSON file, or an https URL (cached with a
                bounded TTL).
            kind: the identity kind, overriding the policy's claim mapping.
            policy: where ``[identity.oidc]`` comes from (default: the process policy).
                Arguments given here override its issuer / audience / jwks; its claim
                mapping (id, kind, roles, purpose, model, tenant, delegation) applies.

        Raises:
            governed_db.errors.IdentityError: a subclass that says why (``TokenExpired``,
                ``WrongIssuer``, ``BadSignature``, ``AlgorithmRefused``, ...).
        """
        from . import _tokens

        if policy is None and (issuer is None or audience is None or jwks is None):
            from . import _config

            policy = _config.resolve_policy(None)
        settings = _tokens.settings_for(issuer, audience, jwks, policy)
        claims, verification = _tokens.verify_token(token, settings, kind=kind)
        fields, verification = _tokens.identity_fields(claims, settings, verification, kind)
        try:
            out = cls(fields.pop("id"), fields.pop("kind"), **fields)
        except PolicyError as exc:
            from .errors import TokenRejected

            raise TokenRejected(f"the token's claims do not make a valid identity: {exc}",
                                reason="claims") from None
        object.__setattr__(out, "_verification", verification)
        return out

    @property
    def verified(self) -> bool:
        """Whether a signed token proved this identity (:meth:`from_token`)."""
        return self._verification is not None

    @property
    def issuer(self) -> str | None:
        """The verified token's issuer (``iss``), or None."""
        v = self._verification
        return v.issuer if v is not None else None

    @property
    def subject(self) -> str | None:
        """The verified token's subject (``sub``), or None. For a delegated token (RFC 8693
        ``act``) this is the party acted for; ``id`` is the actor."""
        v = self._verification
        return v.subject if v is not None else None

    @property
    def token_id(self) -> str | None:
        """The verified token's id (``jti``), or None."""
        v = self._verification
        return v.token_id if v is not None else None

    @property
    def expires_at(self) -> float | None:
        """When the verification stops holding (``exp`` plus leeway, epoch seconds)."""
        v = self._verification
        return v.expires_at if v is not None else None

    def check_current(self, now: float | None = None) -> None:
        """Raise ``TokenExpired`` when the token behind this identity has expired."""
        v = self._verification
        if v is not None and (time.time() if now is None else now) >= v.expires_at:
            from .errors import TokenExpired

            raise TokenExpired(
                f"the token of {self.label} (issuer {v.issuer}) has expired; statements no"
                " longer run as it. Get a new token and make a new identity from it",
                reason="expired")

    @property
    def is_agent(self) -> bool:
        return self.kind == "ai_agent"

    @property
    def label(self) -> str:
        """``kind:id``, the form used in ``GOVERNED_DB_IDENTITY`` and on the server session."""
        return f"{self.kind}:{self.id}"

    def to_record(self) -> dict[str, Any]:
        """The identity as it appears in audit records (attributes as given, no secrets)."""
        out: dict[str, Any] = {"id": self.id, "kind": self.kind}
        for key in ("purpose", "on_behalf_of", "model"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.roles:
            out["roles"] = list(self.roles)
        if self.tenant is not None:
            out["tenant"] = self.tenant
        v = self._verification
        if v is not None:
            out.update(v.to_record())
        else:
            out["verified"] = False
        if self.attributes:
            out["attributes"] = {str(k): _jsonable(v) for k, v in self.attributes.items()}
        return out

    @classmethod
    def parse(cls, text: str) -> Identity:
        """Parse ``kind:id`` (``ai_agent:recs-bot``), as ``GOVERNED_DB_IDENTITY`` holds it."""
        kind, sep, ident = text.partition(":")
        if not sep or kind not in KINDS or not ident:
            raise PolicyError(
                f"identity {text!r} must look like kind:id with kind one of {', '.join(KINDS)}"
                " (for example ai_agent:recs-bot)"
            )
        return cls(ident, kind)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


_acting: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "governed_db_acting_as", default=None
)


@contextlib.contextmanager
def acting_as(identity: Identity | None = None, *,
              token: str | bytes | None = None, policy: Any = None) -> Iterator[Identity]:
    """Run the statements inside the block as ``identity`` (on any connection, pooled or not).

    ``token=`` instead verifies a signed token with the policy's ``[identity.oidc]``
    (see :meth:`Identity.from_token`). An unverified identity of a kind the policy's
    ``[identity] require_verified`` lists is refused here (``VerificationRequired``) and again
    by each connection's own policy at every statement. ``policy=`` (a Policy or a path)
    names the policy to check against; by default the process's (``configure()``,
    ``GOVERNED_DB_POLICY``, else the built-in default profile).

    Example::

        with governed_db.acting_as(Identity("alice", "human", purpose="support ticket 42")):
            conn.execute("SELECT ...")
    """
    from . import _config

    resolved = _config.resolve_policy(policy)
    if token is not None:
        if identity is not None:
            raise TypeError("acting_as() takes an identity or token=, not both")
        identity = Identity.from_token(token, policy=resolved)
    if not isinstance(identity, Identity):
        raise TypeError("acting_as() takes a governed_db.Identity (or token=...)")
    require_verified(identity, resolved)
    identity.check_current()
    reset = _acting.set(identity)
    try:
        yield identity
    finally:
        _acting.reset(reset)


def require_verified(identity: Identity, policy: Any) -> None:
    """Raise ``VerificationRequired`` when ``policy`` requires a verified ``identity.kind``."""
    kinds = getattr(policy, "require_verified", ())
    if identity._verification is None and identity.kind in kinds:
        from .errors import VerificationRequired

        raise VerificationRequired(
            f"the policy requires a verified identity for kind {identity.kind}"
            f" ([identity] require_verified); {identity.label} was not made from a signed"
            " token. Use Identity.from_token(...), connect(identity_token=...) or"
            " acting_as(token=...)", reason="unverified")


def current_identity() -> Identity | None:
    """The identity set by the innermost ``acting_as()`` block, if any."""
    return _acting.get()


_derived: Identity | None = None


def derived_identity() -> Identity:
    """An identity made from the OS user and the program, used when none is given anywhere."""
    global _derived
    if _derived is None:
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no passwd entry in some containers
            user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
        program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
        _derived = Identity(f"{user}@{program or 'python'}", "service",
                            attributes={"derived": True})
        warnings.warn(
            f"governed_db: no identity configured; statements run as {_derived.label}. "
            "Pass identity=, use configure(identity=...) or set GOVERNED_DB_IDENTITY=kind:id.",
            stacklevel=3,
        )
    return _derived


Identity.__module__ = "governed_db"
