"""Process-wide defaults (structlog style): configure(), get_config(), reset_defaults().

Environment variables are read when code passes nothing:
``GOVERNED_DB_POLICY`` (policy TOML path), ``GOVERNED_DB_AUDIT`` (JSONL audit log path, wins over
the policy's), ``GOVERNED_DB_IDENTITY`` (``kind:id``).
"""

from __future__ import annotations

import os
import secrets
import threading
import warnings
from pathlib import Path
from typing import Any

import attrs

from .errors import PolicyError
from .identity import Identity
from .policy import Policy, default_policy, load_policy

__all__ = ["Config", "configure", "get_config", "reset_defaults", "state_dir"]

_lock = threading.RLock()


@attrs.define(kw_only=True)
class Config:
    """The process defaults; ``None`` means "from the environment, else built in"."""

    policy: Policy | None = None
    audit: Any = None
    identity: Identity | None = None


_config = Config()
_resolved_policy: Policy | None = None
_auditors: dict[str, Any] = {}
_approvals: Any = None
_approval_stores: dict[tuple[Any, ...], Any] = {}
_warned_default = False
_param_key: bytes | None = None


def state_dir() -> Path:
    """Where governed_db keeps its local state (audit log, keys, approvals)."""
    base = os.environ.get("GOVERNED_DB_HOME")
    if base:
        return Path(base).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "governed_db"


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
            _config.policy = policy if isinstance(policy, Policy) else load_policy(policy)
            _resolved_policy = None
        if audit is not None:
            _config.audit = audit
        if identity is not None:
            if not isinstance(identity, Identity):
                raise PolicyError("configure(identity=...) takes a governed_db.Identity")
            _config.identity = identity


def get_config() -> Config:
    """The current process defaults (a copy)."""
    return attrs.evolve(_config)


def reset_defaults() -> None:
    """Forget configure() and cached environment lookups (tests call this between cases)."""
    global _config, _resolved_policy, _approvals, _warned_default, _param_key
    with _lock:
        for auditor in list(_auditors.values()):
            try:
                auditor.close()
            except Exception:  # noqa: BLE001, S110 - closing on reset must not mask the test result
                pass
        _auditors.clear()
        _config = Config()
        _resolved_policy = None
        _approvals = None
        for store in _approval_stores.values():
            close = getattr(store, "close", None)
            if close is not None:
                close()
        _approval_stores.clear()
        _warned_default = False
        _param_key = None


def resolve_policy(explicit: Policy | str | os.PathLike[str] | None) -> Policy:
    """The policy for a new connection: argument > configure() > GOVERNED_DB_POLICY > default."""
    global _resolved_policy, _warned_default
    if isinstance(explicit, Policy):
        return explicit
    if explicit is not None:
        return load_policy(explicit)
    if _config.policy is not None:
        return _config.policy
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


def default_identity() -> Identity | None:
    if _config.identity is not None:
        return _config.identity
    env = os.environ.get("GOVERNED_DB_IDENTITY")
    if env:
        return Identity.parse(env)
    return None


def resolve_auditor(explicit: Any, policy: Policy) -> Any:
    """The audit log for a new connection: argument > configure() > env > policy > default."""
    from .audit import AuditLog

    choice = explicit if explicit is not None else _config.audit
    if choice is False:
        return None
    if isinstance(choice, AuditLog):
        return choice
    path = choice or os.environ.get("GOVERNED_DB_AUDIT") or policy.audit.get("path")
    if path is None:
        path = state_dir() / "audit.jsonl"
    key = str(Path(path).expanduser().resolve())
    with _lock:
        auditor = _auditors.get(key)
        if auditor is None or auditor.closed:
            auditor = AuditLog.open(key, settings=policy.audit)
            _auditors[key] = auditor
        return auditor


def approvals(policy: Policy | None = None) -> Any:
    """The approval store: one set with set_approvals(), else the one the policy's
    ``[approvals]`` table or GOVERNED_DB_APPROVALS_DSN selects (file store by default)."""
    global _approvals
    from .approvals import store_for

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


def param_hash_key() -> bytes:
    """Key for parameter hashes in audit records (GOVERNED_DB_PARAM_KEY or per process)."""
    global _param_key
    if _param_key is None:
        env = os.environ.get("GOVERNED_DB_PARAM_KEY")
        _param_key = env.encode() if env else _persistent_key("param.key")
    return _param_key


def _persistent_key(name: str) -> bytes:
    """A random key kept in the state directory (0600), so hashes match across processes."""
    path = state_dir() / name
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key.hex())
        try:
            os.link(tmp, path)  # atomic publish; another process may have won the race
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        return bytes.fromhex(path.read_text().strip())  # the published key, whoever wrote it
    except (OSError, ValueError):
        return secrets.token_bytes(32)  # read-only home: per-process key, still never raw
