"""Approvals bound to the exact statement: normalized SQL, parameters, identity, policy.

A statement that a rule at level ``approval`` matches raises ``ApprovalRequired`` with a
``request_id``. A person (never the requester, never an ``ai_agent``) approves it with
``governed-db approvals approve ID``; the identical statement then runs **once** before the
approval expires. A changed statement, parameter, identity or policy needs a new approval.

Two stores with the same behaviour:

* :class:`ApprovalStore` — a directory of JSON files (one per request, written atomically);
  the embedded default, shared by every process on the host.
* :class:`PostgresApprovalStore` — a table ``governed_db.approval_requests`` so every replica
  on every host sees the same requests; single use is one atomic ``UPDATE``, and decisions are
  announced with ``NOTIFY governed_db_approvals`` so waiters wake at once.

Choose with ``GOVERNED_DB_APPROVALS_DSN`` or the policy's ``[approvals]`` table
(``store = "postgres"``, ``dsn_env = "..."``). ``wait_seconds = N`` makes a (sync)
statement block up to N seconds for a decision instead of raising at once. Every request,
decision and use is recorded in the audit trail.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from . import _state, _tokens
from ._state import param_hash_key, state_dir
from .audit import process_log
from .errors import IdentityError, PolicyError, StatementDenied
from .identity import Identity
from .policy import default_policy, load_policy
from .webhooks import Notifier

__all__ = ["APPROVER_TOKEN_ENV", "ApprovalDenied", "ApprovalSubject", "ApprovalStore", "PostgresApprovalStore",
           "approver_from_token", "approver_identity", "binding_hash", "read_token_file", "requires_verified_approvers", "store_for"]

DEFAULT_TTL = 3600.0
# Where `governed-db approvals approve/deny` (and the console) read the approver's token when
# no --token-file is given.
APPROVER_TOKEN_ENV = "GOVERNED_DB_APPROVER_TOKEN"


class ApprovalDenied(StatementDenied):
    """The identical statement was denied by a person before: say by whom, when and why,
    and file no new request (the governor re-raises it as a plain ``StatementDenied``)."""

    def __init__(self, *args: Any, rule_ids: Sequence[str] = (), request_id: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, rule_ids=rule_ids, **kwargs)
        self.request_id = request_id


def denial_message(req: Mapping[str, Any]) -> str:
    """"denied by <approver> at <time>: <reason>" for a denied request."""
    decision: Mapping[str, Any] = next((d for d in reversed(req.get("decisions") or ())
                     if "approve" in d and not d["approve"]), {})
    by = decision.get("by") or {}
    who = f"{by.get('kind', 'human')}:{by.get('id', '?')}"
    at = decision.get("at")
    when = (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(at))) if at is not None
            else "an unknown time")
    reason = decision.get("note") or "no reason given"
    return (f"approval request {req['id']} for this identical statement was denied by {who} at"
            f" {when}: {reason}. Do not retry it; no new request was filed")


def _raise_denied(req: Mapping[str, Any]) -> None:
    raise ApprovalDenied(denial_message(req), rule_ids=tuple(req.get("rule_ids") or ()),
                         request_id=str(req["id"]))


def _process_policy() -> Any:
    """The process's policy (``configure(policy=)``, else ``GOVERNED_DB_POLICY``, else the
    built-in default), without the default-policy warning a connection gives."""
    env = os.environ.get("GOVERNED_DB_POLICY")
    return _state.config.policy or (load_policy(env) if env else default_policy())


def record_decision(req: Mapping[str, Any], approver: Any, *, approve: bool,
                    note: str | None, audit: Any = None) -> None:
    """Write the decision (approver, reason) to the audit trail: the one given, else the
    process's default log (``configure(audit=)``, ``GOVERNED_DB_AUDIT``, the policy's)."""
    if audit is None:
        audit = process_log(None, _process_policy())
    if audit is None:
        return
    audit.event("approval_decided", approver, {}, request_id=req.get("id"),
                decision="approved" if approve else "denied", reason=note,
                requester=req.get("requester"), rules=list(req.get("rule_ids") or ()))
    audit.flush()


def binding_hash(*, normalized: str, params_digest: Sequence[str], identity_label: str,
                 policy_tag: str) -> str:
    """What an approval is bound to (no raw value: parameters arrive as keyed hashes)."""
    data = json.dumps([normalized, list(params_digest), identity_label, policy_tag])
    return hashlib.sha256(data.encode()).hexdigest()


@attrs.frozen(kw_only=True)
class ApprovalSubject:
    """What an approval is bound to and what the approver is shown, when that is more than
    the text sent (:meth:`Governor.approval_subject <governed_db.engine.decide.DecideStage.approval_subject>`).

    ``text`` (only ever hashed, with a key) is the sent text plus everything its effect
    depends on that the text does not say: the body of a prepared statement or cursor it
    runs, the objects its names resolve to on the session (search_path, relation and function
    identities, view and function definitions), every parameter set of an ``executemany``.
    ``normalized`` is what the approver reads: the normalized text plus the normalized body
    that ``EXECUTE``/``FETCH`` resolves to and the number of executions; no literal.
    ``statements``: the facts the tables shown are taken from."""

    text: str
    normalized: str
    summary: str
    statements: tuple[Any, ...] = ()


def statement_binding(analysis: Any) -> str:
    """The exact statement an approval is for, without its text: the normalized form plus a
    keyed hash of the text sent. Why both: the normalized form alone would let an approval
    of ``DELETE … WHERE id = 5`` run ``… WHERE id = 6`` (same ``$1``), and a plain hash of the
    text could be reversed by trying values; the key is the one parameters are hashed with."""
    digest = hmac.new(param_hash_key(), analysis.text.encode("utf-8", "surrogatepass"),
                      hashlib.sha256).hexdigest()
    return f"{analysis.normalized}\x00{digest}"


class ApprovalStore:
    """Approval requests on disk (``<state>/approvals/<id>.json``)."""

    def __init__(self, directory: str | os.PathLike[str], ttl: float = DEFAULT_TTL) -> None:
        self.directory = Path(directory)
        self.ttl = ttl
        self.notifier: Any = None  # governed_db.webhooks.Notifier, set by store_for()
        # What the last check_or_request did besides answering (for the audit trail).
        self.last_filed: str | None = None
        self.last_expired: tuple[str, ...] = ()

    @classmethod
    def default(cls) -> ApprovalStore:
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
            req: dict[str, Any] = json.loads(self._path(request_id).read_text())
            self._expire(req)
            return req
        except FileNotFoundError:
            raise PolicyError(f"no approval request {request_id}") from None
        except (OSError, ValueError) as exc:
            raise PolicyError(f"approval request {request_id} is unreadable: {exc}") from None

    def list(self, status: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not self.directory.exists():
            return out
        for path in sorted(self.directory.glob("*.json")):
            try:
                req = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            self._expire(req)
            if req.get("status") == "expired" and self.notifier is not None \
                    and not req.get("expiry_announced"):
                self._announce_expiry(path, req)
            if status is None or req.get("status") == status:
                out.append(req)
        return sorted(out, key=lambda r: r.get("requested_at", 0))

    def _announce_expiry(self, path: Path, req: dict[str, Any]) -> None:
        """Announce an expiry once: the marker is written back under the store's lock."""
        with self._locked():
            try:
                on_disk = json.loads(path.read_text())
            except (OSError, ValueError):
                return
            if on_disk.get("expiry_announced"):
                return
            on_disk["expiry_announced"] = True
            self._write(on_disk)
        _announce(self, "expired", req)

    def _expire(self, req: dict[str, Any]) -> None:
        if req.get("status") in ("pending", "approved") and req.get("expires_at", 0) < time.time():
            req["status"] = "expired"
        _mark_tampered(req)

    # -- the flow -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Any:
        """An exclusive lock across processes: an approval is used exactly once."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def check_or_request(self, *, identity: Any, analysis: Any, params_digest: Sequence[str],
                         policy_tag: str, rule_ids: Sequence[str], message: str,
                         affected_rows: int | None = None,
                         policy: Any = None) -> tuple[str, bool]:
        """``(request_id, granted)``: consume a matching approval, or file/find a request.

        ``policy`` is the one the statement runs under: an approval is consumed only when its
        sealed decision satisfies that policy's approver rules (:func:`approval_usable`).

        Raises :class:`ApprovalDenied` when a person denied the identical request (and none
        is pending or approved since): the retry is told who denied it, when and why.
        """
        self.last_filed, self.last_expired = None, ()
        with self._locked():
            return self._check_or_request(
                identity=identity, analysis=analysis, params_digest=params_digest,
                policy_tag=policy_tag, rule_ids=rule_ids, message=message,
                affected_rows=affected_rows, policy=policy)

    def _check_or_request(self, *, identity: Any, analysis: Any, params_digest: Sequence[str],
                          policy_tag: str, rule_ids: Sequence[str], message: str,
                          affected_rows: int | None, policy: Any) -> tuple[str, bool]:
        binding = binding_hash(normalized=statement_binding(analysis),
                               params_digest=params_digest, identity_label=identity.label,
                               policy_tag=policy_tag)
        pending = denied = None
        expired: list[str] = []
        for req in self.list():
            if req.get("binding") != binding:
                continue
            if affected_rows is not None and req.get("affected_rows") not in (None, affected_rows):
                continue
            if req["status"] == "approved":
                if not approval_usable(req, policy) or self._ledger(req["id"]) != req.get("gen"):
                    # Forged, edited by hand, or rolled back to an earlier sealed state (the
                    # use ledger is ahead of the row): not an approval.
                    continue
                _reseal(req, status="used", used_at=round(time.time(), 3))
                self._set_ledger(req["id"], req["gen"])
                self._write(req)
                return req["id"], True
            if req["status"] == "pending" and sealed(req):  # a tampered one: file anew
                pending = req
            elif req["status"] == "denied" and sealed(req):
                denied = req
            elif req["status"] == "expired" and not req.get("expiry_recorded"):
                req["expiry_recorded"] = True
                self._write(req)
                expired.append(req["id"])
        self.last_expired = tuple(expired)
        if pending is not None:
            return pending["id"], False
        if denied is not None:
            _raise_denied(denied)
        req = _new_request(binding=binding, identity=identity, analysis=analysis,
                           rule_ids=rule_ids, policy_tag=policy_tag, message=message,
                           affected_rows=affected_rows, ttl=self.ttl)
        self._write(req)
        _announce(self, "requested", req)
        self.last_filed = req["id"]
        return req["id"], False

    def release(self, request_id: str) -> None:
        """Give a used approval back (the statement it was used for did not run)."""
        with self._locked():
            try:
                req = json.loads(self._path(request_id).read_text())
            except (OSError, ValueError):
                return
            if req.get("status") != "used" or not sealed(req) \
                    or self._ledger(request_id) != req.get("gen"):
                return
            _reseal(req, status="approved", used_at=None)
            self._set_ledger(request_id, req["gen"])
            self._write(req)

    # The use ledger: the generation of each decided request, kept apart from the request, so
    # a request file restored to an earlier sealed state ("approved" before its use) is behind
    # the ledger and refused. Someone who can write the whole state directory can restore both
    # (and read the seal key): the file store trusts the directory's permissions.
    def _ledger_path(self, request_id: str) -> Path:
        return self.directory / ".ledger" / self._path(request_id).name

    def _ledger(self, request_id: str) -> int | None:
        try:
            return int(self._ledger_path(request_id).read_text())
        except (OSError, ValueError):
            return None

    def _set_ledger(self, request_id: str, gen: int) -> None:
        path = self._ledger_path(request_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(str(gen))
        os.replace(tmp, path)

    def wait(self, request_id: str, timeout: float) -> str:
        """Block up to ``timeout`` seconds while the request is pending; return its status."""
        deadline = time.monotonic() + timeout
        while True:
            req = self.get(request_id)
            self._expire(req)
            if req["status"] != "pending" or time.monotonic() >= deadline:
                return str(req["status"])
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def decide(self, request_id: str, approver: Any, *, approve: bool,
               note: str | None = None, audit: Any = None,
               policy: Any = None) -> dict[str, Any]:
        """Approve or deny a pending request as ``approver`` (an Identity); the decision,
        approver and reason are written to the audit trail (``audit``, else the default).

        The rules of :func:`check_decision` apply, with ``policy`` (else the process policy:
        ``configure(policy=)``, ``GOVERNED_DB_POLICY``) deciding whether approvers must be verified and hold a role.
        """
        policy = policy or _process_policy()
        with self._locked():
            req = self._decide(request_id, approver, approve=approve, note=note,
                               policy=policy)
        record_decision(req, approver, approve=approve, note=note, audit=audit)
        return req

    def _decide(self, request_id: str, approver: Any, *, approve: bool,
                note: str | None, policy: Any) -> dict[str, Any]:
        req = self.get(request_id)
        check_decision(req, request_id, approver, policy)
        req["decisions"].append({"by": approver.to_record(), "approve": approve,
                                 "at": time.time(), "note": note})
        if approve:
            req["expires_at"] = round(time.time() + self.ttl, 3)
        _reseal(req, status="approved" if approve else "denied")
        self._set_ledger(request_id, req["gen"])
        self._write(req)
        _announce(self, "decided", req)
        return req


def _new_request(*, binding: str, identity: Any, analysis: Any, rule_ids: Sequence[str],
                 policy_tag: str, message: str, affected_rows: int | None,
                 ttl: float) -> dict[str, Any]:
    """A pending request as both stores file it, sealed (generation 0)."""
    now = round(time.time(), 3)
    req = {
        "id": uuid.uuid4().hex[:16], "binding": binding, "status": "pending",
        "requested_at": now, "expires_at": round(now + ttl, 3), "used_at": None,
        "requester": identity.to_record(), "statement": analysis.normalized,
        "summary": analysis.summary, "rule_ids": list(rule_ids), "policy": policy_tag,
        "reason": message, "affected_rows": affected_rows, "decisions": [],
        "tables": _tables_of(analysis), "gen": 0,
    }
    req["seal"] = seal(req)
    return req


def _tables_of(analysis: Any) -> list[str]:
    """Tables a request's statement reads or writes (names only: shown to the approver)."""
    names: set[str] = set()
    for stmt in getattr(analysis, "statements", ()) or ():
        names.update(getattr(stmt, "reads", ()) or ())
        names.update(getattr(stmt, "writes", ()) or ())
    return sorted(names)


def _announce(store: Any, event: str, req: Mapping[str, Any]) -> None:
    """Hand an approval event to the store's notifier (queued: never blocks, never raises)."""
    notifier = getattr(store, "notifier", None)
    if notifier is None:
        return
    try:
        notifier.notify(event, req)
    except Exception:  # noqa: BLE001 - a notification problem must not fail the statement
        import logging

        logging.getLogger("governed_db.webhooks").exception("queueing a notification failed")


def _seal_key() -> bytes:
    """Key for approval seals: GOVERNED_DB_APPROVALS_KEY (share it across hosts using one
    PostgreSQL store), else a key kept in the state directory."""
    env = os.environ.get("GOVERNED_DB_APPROVALS_KEY")
    if env:
        return env.encode()
    return _state.persistent_key("approvals.key")


# What a seal covers: everything the approver is shown and the consumer relies on (statement,
# summary, tables, rules, reason, requester, policy tag, binding, row count, expiry), the state
# (status, decisions) and the use (``gen``: bumped by every decision, use and give-back;
# ``used_at``). Version 2: requests sealed the old way (v1, pending ones not at all) fail.
_SEAL_VERSION = 2
_SEALED = ("id", "binding", "status", "requested_at", "expires_at", "used_at", "requester",
           "statement", "summary", "rule_ids", "policy", "reason", "affected_rows",
           "decisions", "tables", "gen")
_TIMES = ("requested_at", "expires_at", "used_at")


def _sealed_value(req: Mapping[str, Any], key: str) -> Any:
    value = req.get(key)
    if key in _TIMES:
        return None if value is None else round(float(value), 3)
    if key in ("rule_ids", "tables"):
        return list(value or ())
    if key == "gen":
        return int(value or 0)
    return value


def seal(req: Mapping[str, Any]) -> str:
    """An HMAC over a request as a whole (``_SEALED``): a request edited or written by hand
    (an "approved" file dropped into the store, an UPDATE on the table, a statement text
    swapped for another) does not carry it."""
    body = json.dumps([_SEAL_VERSION, *(_sealed_value(req, k) for k in _SEALED)],
                      sort_keys=True, default=str)
    return hmac.new(_seal_key(), body.encode(), hashlib.sha256).hexdigest()


def sealed(req: Mapping[str, Any]) -> bool:
    """Whether the request is as governed_db last wrote it (its seal matches)."""
    return hmac.compare_digest(str(req.get("seal") or ""), seal(req))


TAMPERED = "TAMPERED"


def _mark_tampered(req: dict[str, Any]) -> None:
    """A loaded request whose seal fails gets the status ``TAMPERED`` (what every view shows):
    not pending, approved or denied, so it is never decided, consumed or quoted as a denial.
    Expired requests are dead whatever they say."""
    if req.get("status") not in ("expired", TAMPERED) and not sealed(req):
        req["status"] = TAMPERED


def _reseal(req: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``req`` after a state change: the use generation bumped, sealed again."""
    req.update(changes)
    req["gen"] = int(req.get("gen") or 0) + 1
    req["seal"] = seal(req)
    return req


def approval_usable(req: Mapping[str, Any], policy: Any) -> bool:
    """Whether an approved request may be consumed under ``policy`` (the one the statement
    runs under, which the requester cannot choose): its seal holds, and its sealed approving
    decision satisfies the approver rules of *that* policy — a human (never an ai_agent), not
    the requester (by id, and by token subject against the requester's id, subject and
    on-behalf-of), verified by the policy's issuer when it requires verified approvers, and
    holding one of its ``approver_roles``. Why at use: the decision was judged under the
    policy of whoever ran ``approvals approve``, which an attacker can pick."""
    if not sealed(req) or req.get("status") != "approved":
        return False
    decision = next((d for d in reversed(req.get("decisions") or ()) if d.get("approve")),
                    None)
    if decision is None:
        return False
    by = decision.get("by") or {}
    requester = req.get("requester") or {}
    if by.get("kind") == "ai_agent" or not by.get("id") or by.get("id") in {
            requester.get("id"), requester.get("on_behalf_of")}:
        return False
    if by.get("verified") and by.get("subject") in {
            requester.get("id"), requester.get("subject"), requester.get("on_behalf_of")}:
        return False
    if policy is None:
        policy = _process_policy()
    if requires_verified_approvers(policy):
        if by.get("verified") is not True or by.get("kind") != "human":
            return False
        try:
            issuer = _tokens.policy_settings(policy).issuer
        except Exception:  # noqa: BLE001 - no usable [identity.oidc]: nobody qualifies
            return False
        if not issuer or by.get("issuer") != issuer:
            return False
    roles = (getattr(policy, "identity", None) or {}).get("approver_roles") or ()
    return not roles or bool(set(roles) & set(by.get("roles") or ()))


def requires_verified_approvers(policy: Any) -> bool:
    """Whether decisions need an approver proven by a token: the policy requires verified
    humans (``[identity] require_verified`` includes ``"human"``) or names
    ``approver_roles`` (a role claimed without a token proves nothing)."""
    section = getattr(policy, "identity", None) or {}
    return "human" in getattr(policy, "require_verified", ()) \
        or bool(section.get("approver_roles"))


def approver_from_token(token: str | bytes, policy: Any) -> Any:
    """The approver a signed token proves, verified with the policy's ``[identity.oidc]``
    exactly as statement identities are. Its kind comes from the claim mapping (``kind`` or
    ``kind_claim``) and must be ``human``: a mapping that does not say is refused (never
    assumed human: an agent's own token would approve), and a token that says ``ai_agent`` or
    ``service`` never approves."""
    settings = _tokens.policy_settings(policy)
    if settings.kind is None and settings.kind_claim is None:
        raise StatementDenied(
            "the approver's token cannot prove a person: the policy's [identity.oidc] names no"
            " kind (kind = \"human\" for an issuer of people only, or kind_claim = the claim"
            " carrying the kind), so an agent's or a service's token would look the same. Add"
            " one to the policy that verifies approvers", rule_ids=("approval.verified-approver",))
    ident = Identity.from_token(token, policy=policy)
    if ident.kind == "ai_agent":
        raise StatementDenied("an ai_agent identity cannot approve statements",
                              rule_ids=("approval.agent-approver",))
    if ident.kind != "human":
        raise StatementDenied(
            f"the approver's token proves a {ident.kind} ({ident.label}); only a human approves"
            " or denies", rule_ids=("approval.verified-approver",))
    if ident._verification.actor is not None:
        # A delegated token (RFC 8693 act, or azp): someone acts on the subject's behalf;
        # approving is the person's own act, never a delegate's.
        raise StatementDenied(
            "a delegated token (act / azp: one party acting on behalf of another) cannot"
            " approve or deny; use the approver's own token",
            rule_ids=("approval.verified-approver",))
    return ident


def approver_identity(*, name: str | None, token: str | bytes | None, policy: Any) -> Any:
    """Who a decision is made as: the identity ``token`` proves when one is given, else
    ``name`` (``kind:id``, or the id of a human) — refused when the policy requires verified
    approvers (:func:`requires_verified_approvers`), so a name is never enough there."""
    if token is not None:
        if name is not None:
            raise PolicyError("give the approver's token or a name (--as), not both")
        return approver_from_token(token, policy)
    if name is None:
        raise PolicyError(f"name the approver: --token-file PATH (or ${APPROVER_TOKEN_ENV})"
                          " with the approver's signed token, or --as human:NAME")
    if requires_verified_approvers(policy):
        raise StatementDenied(
            "--as is refused: the policy requires verified approvers ([identity]"
            " require_verified includes human, or approver_roles is set). Pass the"
            f" approver's signed token with --token-file PATH or ${APPROVER_TOKEN_ENV}",
            rule_ids=("approval.verified-approver",))
    return Identity.parse(name) if ":" in name else Identity(name, "human")


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The token in a file (surrounding whitespace removed); PolicyError when unreadable."""
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read the approver token file {os.fspath(path)}:"
                          f" {getattr(exc, 'strerror', None) or exc}") from None
    if not token:
        raise PolicyError(f"the approver token file {os.fspath(path)} is empty")
    return token


def check_decision(req: dict[str, Any], request_id: str, approver: Any,
                   policy: Any = None) -> None:
    """The refusals every store applies before a decision is written.

    Never the requester: compared by id and, for a verified approver, by token subject
    against the requester's id, subject and on-behalf-of (a display name or ``id_claim``
    that differs does not make another person). With :func:`requires_verified_approvers`,
    the approver must be verified, its token current, and (with ``approver_roles``) hold
    one of those roles.
    """
    if req["status"] == TAMPERED or (req["status"] == "pending" and not sealed(req)):
        raise StatementDenied(
            f"approval request {request_id} is TAMPERED: what is stored is not what governed_db"
            " filed (its seal fails), so what it shows may not be what would run. It cannot be"
            " decided; the requester's next run of the statement files a new request",
            rule_ids=("approval.tampered",))
    if req["status"] != "pending":
        raise StatementDenied(f"approval request {request_id} is {req['status']}, not pending",
                              rule_ids=("approval.not-pending",))
    if approver.kind == "ai_agent":
        raise StatementDenied("an ai_agent identity cannot approve statements",
                              rule_ids=("approval.agent-approver",))
    if requires_verified_approvers(policy) and not approver.verified:
        raise StatementDenied(
            "the policy requires verified approvers ([identity] require_verified includes"
            " human, or approver_roles is set): an approver named with --as proves nothing."
            f" Decide with the approver's signed token: --token-file PATH or"
            f" ${APPROVER_TOKEN_ENV}", rule_ids=("approval.verified-approver",))
    if approver.verified:
        try:
            approver.check_current()
        except IdentityError as exc:
            raise StatementDenied(f"the approver's token is no longer valid: {exc}",
                                  rule_ids=("approval.verified-approver",)) from None
    requester = req["requester"]
    if approver.id == requester["id"]:
        raise StatementDenied("the requester cannot approve its own request",
                              rule_ids=("approval.self-approval",))
    if requester.get("on_behalf_of") and approver.id == requester["on_behalf_of"]:
        raise StatementDenied(
            f"{approver.label} cannot approve a request made on its own behalf (the requester"
            f" acts for {requester['on_behalf_of']}): another person must approve it",
            rule_ids=("approval.self-approval",))
    if approver.verified and approver.subject in {
            requester.get("id"), requester.get("subject"), requester.get("on_behalf_of")}:
        raise StatementDenied("the requester cannot approve its own request: the approver's"
                              " token subject is the requester's (or the one it acts for)",
                              rule_ids=("approval.self-approval",))
    roles = (getattr(policy, "identity", None) or {}).get("approver_roles") or ()
    if roles and not set(roles) & set(approver.roles):
        raise StatementDenied(
            f"{approver.label} holds none of the approver roles the policy names"
            f" ([identity] approver_roles: {', '.join(roles)}); ask someone who does",
            rule_ids=("approval.approver-role",))


_DDL = """
CREATE SCHEMA IF NOT EXISTS governed_db;
CREATE TABLE IF NOT EXISTS governed_db.approval_requests (
    id text PRIMARY KEY,
    binding text NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'used')),
    requested_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    requester jsonb NOT NULL,
    statement text,
    summary text,
    rule_ids text[] NOT NULL,
    policy text NOT NULL,
    reason text,
    affected_rows bigint,
    decisions jsonb NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS approval_requests_binding
    ON governed_db.approval_requests (binding, status);
ALTER TABLE governed_db.approval_requests ADD COLUMN IF NOT EXISTS seal text;
ALTER TABLE governed_db.approval_requests ADD COLUMN IF NOT EXISTS tables text[];
ALTER TABLE governed_db.approval_requests
    ADD COLUMN IF NOT EXISTS expiry_announced boolean NOT NULL DEFAULT false;
ALTER TABLE governed_db.approval_requests
    ADD COLUMN IF NOT EXISTS expiry_recorded boolean NOT NULL DEFAULT false;
ALTER TABLE governed_db.approval_requests ADD COLUMN IF NOT EXISTS gen integer NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS governed_db.approval_ledger (
    id text PRIMARY KEY,
    gen integer NOT NULL
);
"""
_CHANNEL = "governed_db_approvals"
_COLUMNS = ("id, binding, status, extract(epoch FROM requested_at), extract(epoch FROM"
            " expires_at), extract(epoch FROM used_at), requester, statement, summary, rule_ids,"
            " policy, reason, affected_rows, decisions, coalesce(tables, '{}'), seal, gen")


class PostgresApprovalStore:
    """Approval requests in ``governed_db.approval_requests`` (shared by every replica).

    Uses its own plain psycopg connection (store bookkeeping is not a governed statement);
    the role needs CREATE on the database the first time, then SELECT/INSERT/UPDATE on the
    table. Thread-safe: one connection, serialized by a lock.
    """

    def __init__(self, dsn: str, ttl: float = DEFAULT_TTL) -> None:
        import threading

        self.dsn = dsn
        self.ttl = ttl
        self.notifier: Any = None  # governed_db.webhooks.Notifier, set by store_for()
        self._conn: Any = None
        self._lock = threading.Lock()
        self.last_filed: str | None = None
        self.last_expired: tuple[str, ...] = ()

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            try:
                conn = psycopg.connect(self.dsn, autocommit=True,
                                       application_name="governed_db approvals")
                conn.execute(_DDL)
            except psycopg.Error as exc:
                raise PolicyError(f"the approval store at GOVERNED_DB_APPROVALS_DSN cannot be"
                                  f" used ({type(exc).__name__}: {exc}); check the DSN and that"
                                  " the role may create schema governed_db") from None
            self._conn = conn
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @staticmethod
    def _row(row: Sequence[Any]) -> dict[str, Any]:
        keys = ("id", "binding", "status", "requested_at", "expires_at", "used_at", "requester",
                "statement", "summary", "rule_ids", "policy", "reason", "affected_rows",
                "decisions", "tables", "seal", "gen")
        req = dict(zip(keys, row, strict=True))
        for k in ("requested_at", "expires_at", "used_at"):
            req[k] = float(req[k]) if req[k] is not None else None
        if req["status"] in ("pending", "approved") and req["expires_at"] < time.time():
            req["status"] = "expired"
        _mark_tampered(req)
        return req

    def get(self, request_id: str) -> dict[str, Any]:
        with self._lock:
            row = self._connection().execute(
                f"SELECT {_COLUMNS} FROM governed_db.approval_requests WHERE id = %s",
                (request_id,)).fetchone()
        if row is None:
            raise PolicyError(f"no approval request {request_id}")
        return self._row(row)

    def list(self, status: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._connection().execute(
                f"SELECT {_COLUMNS} FROM governed_db.approval_requests"
                " ORDER BY requested_at").fetchall()
        out = [self._row(r) for r in rows]
        if self.notifier is not None:
            for req in out:
                if req["status"] == "expired":
                    self._announce_expiry(req)
        return [r for r in out if status is None or r["status"] == status]

    def _announce_expiry(self, req: dict[str, Any]) -> None:
        """Once per request across replicas: the flag flips in one atomic UPDATE."""
        with self._lock:
            row = self._connection().execute(
                "UPDATE governed_db.approval_requests SET expiry_announced = true"
                " WHERE id = %s AND NOT expiry_announced RETURNING id", (req["id"],)).fetchone()
        if row is not None:
            _announce(self, "expired", req)

    def check_or_request(self, *, identity: Any, analysis: Any, params_digest: Sequence[str],
                         policy_tag: str, rule_ids: Sequence[str], message: str,
                         affected_rows: int | None = None,
                         policy: Any = None) -> tuple[str, bool]:
        """``(request_id, granted)``: consume a matching approval atomically, or file one
        (``policy``: as for :meth:`ApprovalStore.check_or_request`)."""
        from psycopg.types.json import Jsonb

        self.last_filed, self.last_expired = None, ()
        binding = binding_hash(normalized=statement_binding(analysis),
                               params_digest=params_digest, identity_label=identity.label,
                               policy_tag=policy_tag)
        with self._lock:
            conn = self._connection()
            approved = conn.execute(
                f"SELECT {_COLUMNS} FROM governed_db.approval_requests WHERE binding = %s"
                " AND status = 'approved' AND expires_at > now()"
                " AND (affected_rows IS NULL OR %s::bigint IS NULL OR affected_rows = %s)"
                " ORDER BY requested_at", (binding, affected_rows, affected_rows)).fetchall()
            for row in approved:
                req = self._row(row)
                if not approval_usable(req, policy):
                    continue  # edited outside governed_db, or decided by someone unqualified
                gen = req["gen"]
                _reseal(req, status="used", used_at=round(time.time(), 3))
                # Single use: another replica may have taken it first; a row rolled back to
                # an earlier sealed state is behind the ledger and matches nothing.
                if self._transition(conn, req, gen, "approved"):
                    return str(req["id"]), True
            pending = [r for r in conn.execute(
                f"SELECT {_COLUMNS} FROM governed_db.approval_requests WHERE binding = %s"
                " AND status = 'pending' AND expires_at > now()"
                " AND (affected_rows IS NULL OR %s::bigint IS NULL OR affected_rows = %s)"
                " ORDER BY requested_at",
                (binding, affected_rows, affected_rows)).fetchall() if sealed(self._row(r))]
            if pending:  # a tampered one is not the request: a new one is filed
                return str(pending[0][0]), False
            denied = conn.execute(
                f"SELECT {_COLUMNS} FROM governed_db.approval_requests WHERE binding = %s"
                " AND status = 'denied'"
                " AND (affected_rows IS NULL OR %s::bigint IS NULL OR affected_rows = %s)"
                " ORDER BY requested_at DESC", (binding, affected_rows, affected_rows)).fetchall()
            for row in denied:
                req = self._row(row)
                if sealed(req):
                    _raise_denied(req)
            # Each expiry is recorded once (the audit trail's approval_expired).
            self.last_expired = tuple(str(r[0]) for r in conn.execute(
                "UPDATE governed_db.approval_requests SET expiry_recorded = true"
                " WHERE binding = %s AND status IN ('pending', 'approved')"
                " AND expires_at <= now() AND NOT expiry_recorded RETURNING id",
                (binding,)).fetchall())
            req = _new_request(binding=binding, identity=identity, analysis=analysis,
                               rule_ids=rule_ids, policy_tag=policy_tag, message=message,
                               affected_rows=affected_rows, ttl=self.ttl)
            request_id = req["id"]
            conn.execute(
                "INSERT INTO governed_db.approval_requests (id, binding, status, requested_at,"
                " expires_at, requester, statement, summary, rule_ids, policy, reason,"
                " affected_rows, tables, seal, gen)"
                " VALUES (%s, %s, 'pending', to_timestamp(%s), to_timestamp(%s), %s, %s, %s,"
                " %s, %s, %s, %s, %s, %s, 0)",
                (request_id, binding, req["requested_at"], req["expires_at"],
                 Jsonb(req["requester"]), req["statement"], req["summary"], req["rule_ids"],
                 policy_tag, message, affected_rows, req["tables"], req["seal"]))
            conn.execute("SELECT pg_notify(%s, %s)", (_CHANNEL, request_id))
        if self.notifier is not None:
            _announce(self, "requested", self.get(request_id))
        self.last_filed = request_id
        return request_id, False

    def release(self, request_id: str) -> None:
        """Give a used approval back (the statement it was used for did not run)."""
        with self._lock:
            conn = self._connection()
            row = conn.execute(f"SELECT {_COLUMNS} FROM governed_db.approval_requests"
                               " WHERE id = %s AND status = 'used'", (request_id,)).fetchone()
            if row is None:
                return
            req = self._row(row)
            if not sealed(req):
                return
            gen = req["gen"]
            self._transition(conn, _reseal(req, status="approved", used_at=None), gen, "used")

    @staticmethod
    def _transition(conn: Any, req: Mapping[str, Any], gen: int, status: str) -> bool:
        """Write ``req`` (resealed at generation ``gen + 1``) over the row at ``status`` and
        generation ``gen``, and move the use ledger from ``gen`` (none before a decision) to
        the new generation, in one transaction: both or neither.

        The ledger is kept apart from the row so a row restored to an earlier sealed state
        (an "approved" row before its use) is behind it and refused. A role with raw write
        access to both tables can restore both: the store trusts who may write the
        governed_db schema (governed statements never may)."""
        from psycopg.types.json import Jsonb

        with conn.transaction():
            ledger = conn.execute(
                "SELECT gen FROM governed_db.approval_ledger WHERE id = %s FOR UPDATE",
                (req["id"],)).fetchone()
            if (None if ledger is None else ledger[0]) != (None if gen == 0 else gen):
                return False
            row = conn.execute(
                "UPDATE governed_db.approval_requests SET status = %s, decisions = %s,"
                " expires_at = to_timestamp(%s), used_at = to_timestamp(%s), seal = %s,"
                " gen = %s WHERE id = %s AND status = %s AND gen = %s AND expires_at > now()"
                " RETURNING id",
                (req["status"], Jsonb(req["decisions"]), req["expires_at"], req["used_at"],
                 req["seal"], req["gen"], req["id"], status, gen)).fetchone()
            if row is None:
                return False
            conn.execute(
                "INSERT INTO governed_db.approval_ledger (id, gen) VALUES (%s, %s)"
                " ON CONFLICT (id) DO UPDATE SET gen = excluded.gen", (req["id"], req["gen"]))
        return True

    def decide(self, request_id: str, approver: Any, *, approve: bool,
               note: str | None = None, audit: Any = None,
               policy: Any = None) -> dict[str, Any]:
        """Approve or deny a pending request; the decision is written to the audit trail.
        Same rules as :meth:`ApprovalStore.decide`."""
        req = self.get(request_id)
        check_decision(req, request_id, approver, policy or _process_policy())
        decision = {"by": approver.to_record(), "approve": approve, "at": time.time(),
                    "note": note}
        req["decisions"] = [*req["decisions"], decision]
        if approve:
            req["expires_at"] = round(time.time() + self.ttl, 3)
        gen = req["gen"]
        _reseal(req, status="approved" if approve else "denied")
        with self._lock:
            conn = self._connection()
            if not self._transition(conn, req, gen, "pending"):
                # decided or expired by someone else in between
                raise StatementDenied(f"approval request {request_id} is no longer pending",
                                      rule_ids=("approval.not-pending",))
            conn.execute("SELECT pg_notify(%s, %s)", (_CHANNEL, request_id))
        decided = self.get(request_id)
        _announce(self, "decided", decided)
        record_decision(decided, approver, approve=approve, note=note, audit=audit)
        return decided

    def wait(self, request_id: str, timeout: float) -> str:
        """Block up to ``timeout`` seconds (LISTEN/NOTIFY) while the request is pending."""
        import psycopg

        deadline = time.monotonic() + timeout
        with psycopg.connect(self.dsn, autocommit=True) as listener:
            listener.execute(f"LISTEN {_CHANNEL}")
            while True:
                status = str(self.get(request_id)["status"])
                left = deadline - time.monotonic()
                if status != "pending" or left <= 0:
                    return status
                for note in listener.notifies(timeout=min(left, 5.0)):
                    if note.payload == request_id:
                        break


def store_for(settings: Mapping[str, Any], on_notify_failure: Any = None) -> Any:
    """The approval store a policy's ``[approvals]`` table (or the environment) selects, with
    its notifier when the table has ``[[approvals.notify]]`` targets."""
    store = _store_for(settings)
    store.notifier = Notifier.from_settings(settings, on_failure=on_notify_failure)
    return store


def _store_for(settings: Mapping[str, Any]) -> Any:
    ttl = float(settings.get("ttl_seconds", DEFAULT_TTL))
    dsn = os.environ.get("GOVERNED_DB_APPROVALS_DSN")
    if settings.get("store") == "postgres" or dsn:
        env = str(settings.get("dsn_env", "GOVERNED_DB_APPROVALS_DSN"))
        dsn = os.environ.get(env) or dsn
        if not dsn:
            raise PolicyError(f"approvals.store = \"postgres\" needs a DSN in ${env}")
        return PostgresApprovalStore(dsn, ttl=ttl)
    store = ApprovalStore.default()
    store.ttl = ttl
    return store


def prune(store: Any, older_than: float) -> int:
    """Delete requests that can no longer be used (denied, used, expired) and were made more
    than ``older_than`` seconds ago; returns how many. Pending and approved requests are kept
    whatever their age (an approved one still expires by itself)."""
    cutoff = time.time() - older_than
    if isinstance(store, PostgresApprovalStore):
        with store._lock:
            rows = store._connection().execute(
                "WITH gone AS (DELETE FROM governed_db.approval_requests"
                " WHERE requested_at < to_timestamp(%s)"
                " AND (status IN ('denied', 'used') OR expires_at < now()) RETURNING id),"
                " ledger AS (DELETE FROM governed_db.approval_ledger"
                " WHERE id IN (SELECT id FROM gone)) SELECT id FROM gone",
                (cutoff,)).fetchall()
        return len(rows)
    removed = 0
    with store._locked():
        for req in store.list():
            if req.get("status") in ("denied", "used", "expired") \
                    and float(req.get("requested_at") or 0) < cutoff:
                store._path(req["id"]).unlink(missing_ok=True)
                store._ledger_path(req["id"]).unlink(missing_ok=True)
                removed += 1
    return removed
