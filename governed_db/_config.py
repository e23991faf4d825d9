"""Process-wide defaults (structlog style): configure(), get_config(), reset_defaults().

The composition root: what a new connection gets when it passes nothing (policy, audit log,
approval store). The state below it (directory, keys, the configured values) is ``_state``,
which the stages read without importing this module.

Environment variables are read when code passes nothing:
``GOVERNED_DB_POLICY`` (policy TOML path), ``GOVERNED_DB_AUDIT`` (JSONL audit log path, wins over
the policy's), ``GOVERNED_DB_IDENTITY`` (``kind:id``).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import attrs

from . import _state
from ._state import Config, param_hash_key, state_dir
from .approvals import store_for
from .audit import close_process_logs
from .audit import process_log as resolve_auditor
from .errors import PolicyError
from .identity import Identity
from .policy import Policy, default_policy, load_policy

__all__ = ["Config", "approvals", "configure", "get_config", "param_hash_key", "reset_defaults",
           "resolve_auditor", "resolve_policy", "state_dir"]

_lock = _state.lock


_resolved_policy: Policy | None = None
_approvals: Any = None
_approval_stores: dict[tuple[Any, ...], Any] = {}
_warned_default = False


def configure(*, policy: Policy | str | os.PathLike[str] | None = None, audit: Any = None,
              identity: Identity | None = None) -> None:
    """Set process-wide defaults used by connections that pass nothing themselves.

    Args:
        policy: a :class:`Policy`, or a path to a policy TOML file (validated now).
        audit: an :class:`~governed_db.audit.AuditLog`, a path to a JSONL log, or ``False``
            to disable auditing (not recommended; recorded nowhere).
        identity: the default :class:`Identity`.
    """
    global _resolved_policy
    with _lock:
        if policy is not None:
            _state.config.policy = policy if isinstance(policy, Policy) else load_policy(policy)
            _resolved_policy = None
        if audit is not None:
            _state.config.audit = audit
        if identity is not None:
            if not isinstance(identity, Identity):
                raise PolicyError("configure(identity=...) takes a governed_db.Identity")
            _state.config.identity = identity


def get_config() -> Config:
    """The current process defaults (a copy)."""
    return attrs.evolve(_state.config)


def reset_defaults() -> None:
    """Forget configure() and cached environment lookups (tests call this between cases)."""
    global _resolved_policy, _approvals, _warned_default
    with _lock:
        close_process_logs()
        _state.reset()
        _resolved_policy = None
        _approvals = None
        for store in _approval_stores.values():
            close = getattr(store, "close", None)
            if close is not None:
                close()
        _approval_stores.clear()
        _warned_default = False


def resolve_policy(explicit: Policy | str | os.PathLike[str] | None) -> Policy:
    """The policy for a new connection: argument > configure() > GOVERNED_DB_POLICY > default."""
    global _resolved_policy, _warned_default
    if isinstance(explicit, Policy):
        return explicit
    if explicit is not None:
        return load_policy(explicit)
    if _state.config.policy is not None:
        return _state.config.policy
    with _lock:
        if _resolved_policy is None:
            env = os.environ.get("GOVERNED_DB_POLICY")
            if env:
                _resolved_policy = load_policy(env)
            else:
                _resolved_policy = default_policy()
                if not _warned_default:
                    _warned_default = True
                    warnings.warn(
                        "governed_db: no policy configured; using the built-in default profile"
                        " (ai_agent read-only, no DROP/TRUNCATE/unbounded writes, DDL needs"
                        " approval, PII masked). Set GOVERNED_DB_POLICY or pass policy=.",
                        stacklevel=4,
                    )
        return _resolved_policy


# GOVERNED_DB_IDENTITY's text and the identity parsed from it: read before every statement
# of a connection without an identity of its own, so the same text gives the same (frozen)
# object, which every per-identity cache recognises by identity (a new object per statement
# missed them all: the scope key made again, the session's identity compared again).
_env_identity: tuple[str, Identity] | None = None


def default_identity() -> Identity | None:
    global _env_identity

    if _state.config.identity is not None:
        return _state.config.identity
    env = os.environ.get("GOVERNED_DB_IDENTITY")
    if env:
        cached = _env_identity
        if cached is not None and cached[0] == env:
            return cached[1]
        ident = Identity.parse(env)
        _env_identity = (env, ident)
        return ident
    return None


def approvals(policy: Policy | None = None) -> Any:
    """The approval store: one set with set_approvals(), else the one the policy's
    ``[approvals]`` table or GOVERNED_DB_APPROVALS_DSN selects (file store by default)."""
    global _approvals

    settings = dict(policy.approvals) if policy is not None else {}
    with _lock:
        if _approvals is not None:
            return _approvals
        key = (settings.get("store"), settings.get("dsn_env"), settings.get("ttl_seconds"),
               repr(settings.get("notify")), settings.get("console_url"),
               os.environ.get("GOVERNED_DB_APPROVALS_DSN"), str(state_dir()))
        store = _approval_stores.get(key)
        if store is None:
            store = _approval_stores[key] = store_for(
                settings, on_notify_failure=_notify_failure_recorder(policy))
        return store


def _notify_failure_recorder(policy: Policy | None) -> Any:
    """Write a failed approval notification to the audit trail (target kind and host only)."""

    def record(target: Any, event: Any, reason: str) -> None:
        from urllib.parse import urlsplit

        auditor = resolve_auditor(None, policy or resolve_policy(None))
        if auditor is None:
            return
        auditor.event("approval.notify_failed", Identity("governed_db", "service"), {},
                      request_id=event.get("request_id"), event=event.get("event"),
                      target_kind=target.kind, target_host=urlsplit(target.url).netloc,
                      reason=reason)

    return record


def set_approvals(store: Any) -> None:
    global _approvals
    with _lock:
        _approvals = store


