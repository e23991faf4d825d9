"""Errors raised by governed_db, on top of every psycopg error (re-exported unchanged).

::

    psycopg.Error
     ├── psycopg.DatabaseError
     │    ├── psycopg.OperationalError
     │    │    ├── AuditUnavailable          the audit trail cannot be written: nothing runs
     │    │    └── IdentityError             who acts is not proven (``.reason``)
     │    │         ├── TokenRejected        the token itself is not acceptable
     │    │         │    ├── TokenMalformed  not a compact JWS / bad JSON / bad claim types
     │    │         │    ├── AlgorithmRefused alg none, HS*, or not on the policy's list
     │    │         │    ├── KeyNotFound     no JWKS key for its kid / alg
     │    │         │    ├── BadSignature    signed by another key, or edited after signing
     │    │         │    ├── TokenExpired    exp passed (also mid-session)
     │    │         │    ├── TokenNotYetValid nbf / iat in the future
     │    │         │    ├── WrongIssuer     iss is not the configured issuer
     │    │         │    └── WrongAudience   aud does not name the configured audience
     │    │         ├── KeysUnavailable      the JWKS cannot be read or fetched
     │    │         └── VerificationRequired the policy requires a verified identity
     │    └── psycopg.ProgrammingError
     │         └── psycopg.errors.InsufficientPrivilege   (SQLSTATE 42501)
     │              └── StatementDenied       a policy rule stopped the statement
     │                   └── ApprovalRequired a person must approve it first
     ValueError
     └── PolicyError                          bad policy, identity or configuration

Denials subclass ``InsufficientPrivilege`` so that SQLAlchemy wraps them as its own
``ProgrammingError`` and LangChain's SQL tool hands the text to the model instead of crashing.
They never pass ``code=`` to the class statement: that would re-register SQLSTATE 42501 and
make psycopg raise *our* class for genuine server permission errors.
"""

from __future__ import annotations

from collections.abc import Sequence as _Sequence
from typing import Any

from psycopg import errors as _pgerrors
from psycopg.errors import *  # noqa: F403 - the drop-in re-exports every psycopg error

__all__ = [name for name in dir(_pgerrors) if not name.startswith("_")]  # noqa: PLE0605
__all__ += ["AlgorithmRefused", "ApprovalRequired", "AuditUnavailable", "BadSignature",
            "IdentityError", "KeyNotFound", "KeysUnavailable", "PolicyError", "StatementDenied",
            "TokenExpired", "TokenMalformed", "TokenNotYetValid", "TokenRejected",
            "VerificationRequired", "WrongAudience", "WrongIssuer"]


class StatementDenied(_pgerrors.InsufficientPrivilege):
    """A policy rule denied the statement before it reached the server.

    Attributes:
        rule_ids: the permanent ids of the rules that denied it (``("statement.disallow-ddl",)``).
        sqlstate: ``"42501"`` like a server-side permission error.
    """

    __module__ = "governed_db.errors"

    def __init__(self, message: str = "statement denied by policy", *,
                 rule_ids: _Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.rule_ids = tuple(rule_ids)

    @property
    # (psycopg's Error declares sqlstate as a class attribute; a property is read the same way)
    def sqlstate(self) -> str | None:  # type: ignore[override]
        return "42501"

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), str(self), self.__dict__.copy()))


class ApprovalRequired(StatementDenied):
    """The statement needs a person's approval; ``request_id`` names the pending request.

    Approve with ``governed-db approvals approve REQUEST_ID``, then run the identical statement
    again: it runs once. A changed statement, parameters or effect needs a new approval.
    """

    __module__ = "governed_db.errors"

    def __init__(self, message: str = "statement requires approval", *,
                 rule_ids: _Sequence[str] = (), request_id: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(message, rule_ids=rule_ids, **kwargs)
        self.request_id = request_id


class AuditUnavailable(_pgerrors.OperationalError):
    """The audit trail cannot be written, so governed statements do not run (fail closed)."""

    __module__ = "governed_db.errors"

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), str(self), self.__dict__.copy()))


class IdentityError(_pgerrors.OperationalError):
    """Who acts is not proven: a token was refused, or the policy requires a verified identity.

    Attributes:
        reason: a stable short code (``"expired"``, ``"signature"``, ``"issuer"``,
            ``"audience"``, ``"algorithm"``, ``"key"``, ``"not-yet-valid"``, ``"malformed"``,
            ``"claims"``, ``"jwks-unavailable"``, ``"jwks-invalid"``, ``"unverified"``,
            ``"configuration"``) for logs and HTTP 401 answers. Messages never contain the token.
    """

    __module__ = "governed_db.errors"

    def __init__(self, message: str = "identity not verified", *, reason: str = "unverified",
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.reason = reason

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), str(self), self.__dict__.copy()))


class TokenRejected(IdentityError):
    """The token is not acceptable (the subclass says why)."""

    __module__ = "governed_db.errors"


class TokenMalformed(TokenRejected):
    """Not a compact JWS, not JSON, or a claim of the wrong type."""

    __module__ = "governed_db.errors"


class AlgorithmRefused(TokenRejected):
    """``alg`` is ``none``, symmetric (HS*), or not on the policy's list."""

    __module__ = "governed_db.errors"


class KeyNotFound(TokenRejected):
    """The JWKS has no key for the token's ``kid`` and ``alg``."""

    __module__ = "governed_db.errors"


class BadSignature(TokenRejected):
    """The signature does not verify: another key signed it, or it was edited after signing."""

    __module__ = "governed_db.errors"


class TokenExpired(TokenRejected):
    """``exp`` has passed (beyond the leeway); raised mid-session too, per statement."""

    __module__ = "governed_db.errors"


class TokenNotYetValid(TokenRejected):
    """``nbf`` or ``iat`` is in the future (beyond the leeway)."""

    __module__ = "governed_db.errors"


class WrongIssuer(TokenRejected):
    """``iss`` is not the configured issuer."""

    __module__ = "governed_db.errors"


class WrongAudience(TokenRejected):
    """``aud`` does not name the configured audience."""

    __module__ = "governed_db.errors"


class KeysUnavailable(IdentityError):
    """The JWKS cannot be read, fetched or used (nothing is accepted without keys)."""

    __module__ = "governed_db.errors"


class VerificationRequired(IdentityError):
    """The policy's ``[identity] require_verified`` names this kind and the identity was not
    made from a verified token (``Identity.from_token``, ``identity_token=``)."""

    __module__ = "governed_db.errors"


class PolicyError(ValueError):
    """A policy, identity or configuration is invalid; the message names file and line."""

    __module__ = "governed_db.errors"

    def __init__(self, message: str = "invalid policy", *, path: str | None = None,
                 line: int | None = None) -> None:
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line
        self.detail = message

    def __reduce__(self) -> Any:
        return (_rebuild_policy_error, (type(self), self.detail, self.path, self.line))


def _rebuild_policy_error(cls: type[PolicyError], detail: str, path: str | None,
                          line: int | None) -> PolicyError:
    return cls(detail, path=path, line=line)


def _rebuild(cls: type[Exception], message: str, state: dict[str, Any]) -> Exception:
    exc = cls(message)
    state = {k: v for k, v in state.items() if not k.startswith("_")}
    exc.__dict__.update(state)
    return exc
