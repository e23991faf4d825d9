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
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import attrs

from .errors import PolicyError

__all__ = ["Identity", "IdentityKind", "acting_as", "current_identity", "derived_identity"]

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


def _freeze_attributes(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
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
    return out


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

    Identities are immutable values; use :meth:`evolve` for a variant (e.g. per tool call).
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

    def evolve(self, **changes: Any) -> Identity:
        """A copy with some fields changed (``identity.evolve(attributes={...})``)."""
        return attrs.evolve(self, **changes)

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
def acting_as(identity: Identity) -> Iterator[Identity]:
    """Run the statements inside the block as ``identity`` (on any connection, pooled or not).

    Example::

        with governed_db.acting_as(Identity("alice", "human", purpose="support ticket 42")):
            conn.execute("SELECT ...")
    """
    if not isinstance(identity, Identity):
        raise TypeError("acting_as() takes a governed_db.Identity")
    token = _acting.set(identity)
    try:
        yield identity
    finally:
        _acting.reset(token)


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
