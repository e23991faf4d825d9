"""Process state below every stage: the state directory, its keys, the configured defaults.

A leaf (it imports nothing of governed_db at run time), so the audit log, the approval store and
the analyzer read what they need from here without importing the composition root
(``_config``: ``configure()``, the policy, audit log and approval store a connection gets).
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from .identity import Identity
    from .policy import Policy

__all__ = ["Config", "config", "lock", "param_hash_key", "persistent_key", "reset", "state_dir"]

lock = threading.RLock()


@attrs.define(kw_only=True)
class Config:
    """The process defaults; ``None`` means "from the environment, else built in"."""

    policy: Policy | None = None
    audit: Any = None
    identity: Identity | None = None


# The live process defaults: set by ``_config.configure()``, read by everyone else.
config = Config()
_param_key: bytes | None = None


def state_dir() -> Path:
    """Where governed_db keeps its local state (audit log, keys, approvals)."""
    base = os.environ.get("GOVERNED_DB_HOME")
    if base:
        return Path(base).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "governed_db"


def param_hash_key() -> bytes:
    """Key for parameter hashes in audit records (GOVERNED_DB_PARAM_KEY or per process)."""
    global _param_key
    if _param_key is None:
        env = os.environ.get("GOVERNED_DB_PARAM_KEY")
        _param_key = env.encode() if env else persistent_key("param.key")
    return _param_key


def persistent_key(name: str) -> bytes:
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


def reset() -> None:
    """Forget the configured defaults and the cached parameter key (``reset_defaults()``)."""
    global config, _param_key
    with lock:
        config = Config()
        _param_key = None
