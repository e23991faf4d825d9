"""Errors raised by governed_db, on top of every psycopg error (re-exported unchanged).

::

    psycopg.Error
     ├── psycopg.DatabaseError
     │    ├── psycopg.OperationalError
     │    │    └── AuditUnavailable          the audit trail cannot be written: nothing runs
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

from typing import Any

from psycopg import errors as _pgerrors
from psycopg.errors import *  # noqa: F403 - the drop-in re-exports every psycopg error

__all__ = [name for name in dir(_pgerrors) if not name.startswith("_")]  # noqa: PLE0605
__all__ += ["ApprovalRequired", "AuditUnavailable", "PolicyError", "StatementDenied"]


class StatementDenied(_pgerrors.InsufficientPrivilege):
    """A policy rule denied the statement before it reached the server.

    Attributes:
        rule_ids: the permanent ids of the rules that denied it (``("statement.disallow-ddl",)``).
        sqlstate: ``"42501"`` like a server-side permission error.
    """

    __module__ = "governed_db.errors"

    def __init__(self, message: str = "statement denied by policy", *,
                 rule_ids: tuple[str, ...] | list[str] = (), **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.rule_ids = tuple(rule_ids)

    @property
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
                 rule_ids: tuple[str, ...] | list[str] = (), request_id: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(message, rule_ids=rule_ids, **kwargs)
        self.request_id = request_id


class AuditUnavailable(_pgerrors.OperationalError):
    """The audit trail cannot be written, so governed statements do not run (fail closed)."""

    __module__ = "governed_db.errors"

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), str(self), self.__dict__.copy()))


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
