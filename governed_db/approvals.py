"""Approvals bound to the exact statement: normalized SQL, parameters, identity, policy.

A statement that a rule at level ``approval`` matches raises ``ApprovalRequired`` with a
``request_id``. A person (never the requester, never an ``ai_agent``) approves it with
``governed-db approvals approve ID``; the identical statement then runs **once** before the
approval expires. A changed statement, parameter, identity or policy needs a new approval.

The embedded store is a directory of JSON files (one per request, written atomically);
every replica on the host sees it. Every request, decision and use is recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import PolicyError, StatementDenied

__all__ = ["ApprovalStore", "binding_hash"]

DEFAULT_TTL = 3600.0


def binding_hash(*, normalized: str, params_digest: Sequence[str], identity_label: str,
                 policy_tag: str) -> str:
    """What an approval is bound to (no raw value: parameters arrive as keyed hashes)."""
    data = json.dumps([normalized, list(params_digest), identity_label, policy_tag])
    return hashlib.sha256(data.encode()).hexdigest()


class ApprovalStore:
    """Approval requests on disk (``<state>/approvals/<id>.json``)."""

    def __init__(self, directory: str | os.PathLike[str], ttl: float = DEFAULT_TTL) -> None:
        self.directory = Path(directory)
        self.ttl = ttl

    @classmethod
    def default(cls) -> ApprovalStore:
        from ._config import state_dir

        return cls(os.environ.get("GOVERNED_DB_APPROVALS") or state_dir() / "approvals")

    # -- storage --------------------------------------------------------------------------------

    def _path(self, request_id: str) -> Path:
        if not request_id.replace("-", "").isalnum() or len(request_id) > 64:
            raise PolicyError(f"not an approval request id: {request_id!r}")
        return self.directory / f"{request_id}.json"

    def _write(self, req: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(req["id"])
        tmp = path.with_suffix(f".{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
        tmp.write_text(json.dumps(req, indent=1, sort_keys=True))
        os.replace(tmp, path)

    def get(self, request_id: str) -> dict[str, Any]:
        try:
            return json.loads(self._path(request_id).read_text())
        except FileNotFoundError:
            raise PolicyError(f"no approval request {request_id}") from None
        except (OSError, ValueError) as exc:
            raise PolicyError(f"approval request {request_id} is unreadable: {exc}") from None

    def list(self, status: str | None = None) -> list[dict[str, Any]]:
        out = []
        if not self.directory.exists():
            return out
        for path in sorted(self.directory.glob("*.json")):
            try:
                req = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            self._expire(req)
            if status is None or req.get("status") == status:
                out.append(req)
        return sorted(out, key=lambda r: r.get("requested_at", 0))

    def _expire(self, req: dict[str, Any]) -> None:
        if req.get("status") in ("pending", "approved") and req.get("expires_at", 0) < time.time():
            req["status"] = "expired"

    # -- the flow -------------------------------------------------------------------------------

    def check_or_request(self, *, identity: Any, analysis: Any, params_digest: Sequence[str],
                         policy_tag: str, rule_ids: Sequence[str], message: str,
                         affected_rows: int | None = None) -> tuple[str, bool]:
        """``(request_id, granted)``: consume a matching approval, or file/find a request."""
        binding = binding_hash(normalized=analysis.normalized or analysis.text,
                               params_digest=params_digest, identity_label=identity.label,
                               policy_tag=policy_tag)
        pending = None
        for req in self.list():
            if req.get("binding") != binding:
                continue
            if affected_rows is not None and req.get("affected_rows") not in (None, affected_rows):
                continue
            if req["status"] == "approved":
                req["status"] = "used"
                req["used_at"] = time.time()
                self._write(req)
                return req["id"], True
            if req["status"] == "pending":
                pending = req
        if pending is not None:
            return pending["id"], False
        now = time.time()
        req = {
            "id": uuid.uuid4().hex[:16], "binding": binding, "status": "pending",
            "requested_at": now, "expires_at": now + self.ttl,
            "requester": identity.to_record(), "statement": analysis.normalized,
            "summary": analysis.summary, "rule_ids": list(rule_ids), "policy": policy_tag,
            "reason": message, "affected_rows": affected_rows, "decisions": [],
        }
        self._write(req)
        return req["id"], False

    def decide(self, request_id: str, approver: Any, *, approve: bool,
               note: str | None = None) -> dict[str, Any]:
        """Approve or deny a pending request as ``approver`` (an Identity)."""
        req = self.get(request_id)
        self._expire(req)
        if req["status"] != "pending":
            raise StatementDenied(f"approval request {request_id} is {req['status']}, not pending",
                                  rule_ids=("approval.not-pending",))
        if approver.kind == "ai_agent":
            raise StatementDenied("an ai_agent identity cannot approve statements",
                                  rule_ids=("approval.agent-approver",))
        if approver.id == req["requester"]["id"]:
            raise StatementDenied("the requester cannot approve its own request",
                                  rule_ids=("approval.self-approval",))
        req["status"] = "approved" if approve else "denied"
        req["decisions"].append({"by": approver.to_record(), "approve": approve,
                                 "at": time.time(), "note": note})
        if approve:
            req["expires_at"] = time.time() + self.ttl
        self._write(req)
        return req
