"""The process's audit logs: one open log per path, shared by every connection that uses it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import _state
from ._log import AuditLog

__all__ = ["close_process_logs", "process_log"]

_auditors: dict[str, Any] = {}


def process_log(explicit: Any, policy: Any) -> Any:
    """The audit log for a new connection: argument > configure() > env > policy > default."""
    choice = explicit if explicit is not None else _state.config.audit
    if choice is False:
        return None
    if isinstance(choice, AuditLog):
        return choice
    path = choice or os.environ.get("GOVERNED_DB_AUDIT") or policy.audit.get("path")
    if path is None:
        path = _state.state_dir() / "audit.jsonl"
    key = str(Path(path).expanduser().resolve())
    with _state.lock:
        auditor = _auditors.get(key)
        if auditor is None or auditor.closed:
            auditor = AuditLog.open(key, settings=policy.audit)
            _auditors[key] = auditor
        return auditor


def close_process_logs() -> None:
    """Close and forget every log :func:`process_log` opened (``reset_defaults()``)."""
    with _state.lock:
        for auditor in list(_auditors.values()):
            try:
                auditor.close()
            except Exception:  # noqa: BLE001, S110 - closing on reset must not mask the test result
                pass
        _auditors.clear()
