"""Approval notifications: signed webhooks, Slack and Teams messages, delivered off the path.

On each approval request, decision and expiry, every ``[[approvals.notify]]`` target of the
policy receives one JSON POST::

    [[approvals.notify]]
    kind = "webhook"                       # or "slack", "teams"
    url = "https://hooks.example.com/governed-db"
    secret_env = "GOVERNED_DB_WEBHOOK_SECRET"   # webhook kind: the HMAC key, from the env
    events = ["requested", "decided", "expired"] # default: all three

What is sent is what a person needs to decide, never a value: the normalized statement
(literals replaced by ``$n``), the requester (kind, id, purpose, on-behalf-of, model), the
tables, the rules, the exact row count of a blast-radius request, the policy version, the expiry
and a link to the console (``[approvals] console_url``).

**Signature** (kind ``webhook``). Header ``Governed-DB-Signature: t=<unix seconds>,v1=<hex>``
where ``v1 = HMAC-SHA256(secret, "<t>." + body)`` over the exact body bytes. A receiver
recomputes it with :func:`verify_signature` and refuses a timestamp outside its replay window
(default 300 s), so a captured request cannot be replayed later. ``Governed-DB-Event`` names
the event and ``Governed-DB-Delivery`` is a unique id (deduplicate retries by it).

**Delivery** never touches the statement's path: events go into a bounded in-memory queue read
by one daemon thread; each POST has a short timeout and is retried with exponential backoff
(0.5 s, 1 s, 2 s, … up to ``max_attempts``) on connection errors and 5xx/429 answers. A full
queue drops the event; a dropped or finally failed delivery is written to the audit trail as an
``approval.notify_failed`` event (target kind and host only, never the URL's query or secret).
A dead or hanging endpoint therefore never blocks, slows or crashes a statement.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from .errors import PolicyError

__all__ = ["EVENTS", "KINDS", "Notifier", "Target", "build_event", "sign", "verify_signature"]

logger = logging.getLogger("governed_db.webhooks")

KINDS = ("webhook", "slack", "teams")
EVENTS = ("requested", "decided", "expired")
SIGNATURE_HEADER = "Governed-DB-Signature"
REPLAY_WINDOW = 300.0


def sign(secret: bytes, body: bytes, timestamp: int | None = None) -> str:
    """The ``Governed-DB-Signature`` header value for ``body``."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    mac = hmac.new(secret, str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_signature(secret: bytes, header: str, body: bytes, *,
                     tolerance: float = REPLAY_WINDOW, now: float | None = None) -> None:
    """Check a received webhook; returns None or raises ``ValueError`` saying why.

    For receivers: pass the raw body bytes as received (not re-serialized JSON).
    """
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        raise ValueError("malformed signature header: expected t=<unix>,v1=<hex>") from None
    current = time.time() if now is None else now
    if abs(current - t) > tolerance:
        raise ValueError(f"timestamp outside the replay window of {tolerance:.0f} s")
    want = hmac.new(secret, str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, given):
        raise ValueError("signature does not match the body")


def _url_host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or "?"


@attrs.frozen(kw_only=True)
class Target:
    """One ``[[approvals.notify]]`` entry (validated when the policy loads)."""

    url: str = attrs.field()
    kind: str = attrs.field(default="webhook")
    secret_env: str | None = None
    events: tuple[str, ...] = attrs.field(default=EVENTS, converter=tuple)
    timeout: float = 3.0
    max_attempts: int = 4

    @url.validator
    def _check_url(self, _: Any, value: str) -> None:
        scheme = urllib.parse.urlsplit(str(value)).scheme
        if scheme not in ("http", "https"):
            raise PolicyError(f"approvals.notify: url must be http(s)://…, not {value!r}")

    @kind.validator
    def _check_kind(self, _: Any, value: str) -> None:
        if value not in KINDS:
            raise PolicyError(f"approvals.notify: kind must be one of {', '.join(KINDS)},"
                              f" not {value!r}")

    @events.validator
    def _check_events(self, _: Any, value: tuple[str, ...]) -> None:
        for e in value:
            if e not in EVENTS:
                raise PolicyError(f"approvals.notify: unknown event {e!r}; use"
                                  f" {', '.join(EVENTS)}")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Target:
        known = {"url", "kind", "secret_env", "events", "timeout", "max_attempts"}
        unknown = set(raw) - known
        if unknown:
            raise PolicyError(f"approvals.notify: unknown key(s) {', '.join(sorted(unknown))};"
                              f" known: {', '.join(sorted(known))}")
        if "url" not in raw:
            raise PolicyError("approvals.notify: every target needs a url")
        target = cls(**dict(raw))
        if target.kind == "webhook" and not target.secret_env:
            raise PolicyError("approvals.notify: a webhook target needs secret_env (the name"
                              " of the environment variable holding its HMAC key), so that"
                              " receivers can verify what they get")
        return target

    def secret(self) -> bytes | None:
        if not self.secret_env:
            return None
        value = os.environ.get(self.secret_env)
        return value.encode() if value else None


def build_event(event: str, req: Mapping[str, Any], *,
                console_url: str | None = None) -> dict[str, Any]:
    """The value-free description of an approval request that every target receives."""
    requester = dict(req.get("requester") or {})
    decisions = list(req.get("decisions") or [])
    last = decisions[-1] if decisions else None
    out: dict[str, Any] = {
        "event": f"approval.{event}",
        "request_id": req.get("id"),
        "status": req.get("status"),
        "statement": req.get("statement"),  # normalized: literals are $n placeholders
        "summary": req.get("summary"),
        "tables": sorted(_tables(req)),
        "rule_ids": list(req.get("rule_ids") or ()),
        "reason": req.get("reason"),
        "affected_rows": req.get("affected_rows"),
        "policy": req.get("policy"),
        "requested_at": req.get("requested_at"),
        "expires_at": req.get("expires_at"),
        "requester": {k: requester.get(k) for k in
                      ("kind", "id", "purpose", "on_behalf_of", "model") if k in requester},
    }
    if last is not None:
        by = last.get("by") or {}
        out["decision"] = {"approve": bool(last.get("approve")), "at": last.get("at"),
                           "by": {"kind": by.get("kind"), "id": by.get("id")},
                           "note": last.get("note")}
    if console_url:
        out["link"] = console_url.rstrip("/") + f"/approvals/{req.get('id')}"
    return out


def _tables(req: Mapping[str, Any]) -> Iterable[str]:
    tables: Iterable[str] | None = req.get("tables")
    if tables:
        return tables
    # Older requests carry only the summary ("INSERT promotions"): its words after the kind.
    summary = str(req.get("summary") or "")
    return [w for w in summary.split()[1:] if w.replace("_", "").replace(".", "").isalnum()]


def render(target: Target, event: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body for ``target``: ours as is, or Slack / Teams incoming-webhook formats."""
    if target.kind == "webhook":
        return dict(event)
    who = event.get("requester", {})
    title = {"approval.requested": "Approval requested",
             "approval.decided": "Approval decided",
             "approval.expired": "Approval expired"}.get(str(event.get("event")), "Approval")
    facts = [
        ("Request", str(event.get("request_id"))),
        ("Status", str(event.get("status"))),
        ("Requester", f"{who.get('kind')}:{who.get('id')}"),
        ("Purpose", str(who.get("purpose") or "-")),
        ("On behalf of", str(who.get("on_behalf_of") or "-")),
        ("Model", str(who.get("model") or "-")),
        ("Tables", ", ".join(event.get("tables") or ()) or "-"),
        ("Rules", ", ".join(event.get("rule_ids") or ()) or "-"),
    ]
    if event.get("affected_rows") is not None:
        facts.append(("Rows (exact)", str(event["affected_rows"])))
    if event.get("decision"):
        d = event["decision"]
        facts.append(("Decision", f"{'approved' if d['approve'] else 'denied'} by"
                                  f" {d['by'].get('kind')}:{d['by'].get('id')}"))
    statement = str(event.get("statement") or event.get("summary") or "")
    link = event.get("link")
    if target.kind == "slack":
        fields = [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in facts]
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": title}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"```{statement[:2800]}```"}},
            {"type": "section", "fields": fields[:10]},
        ]
        if link:
            blocks.append({"type": "actions", "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Open in console"},
                 "url": link}]})
        return {"text": f"{title}: {event.get('summary')} ({event.get('request_id')})",
                "blocks": blocks}
    # Teams: an Adaptive Card in the incoming-webhook / Workflows message envelope.
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "size": "Large", "weight": "Bolder", "text": title},
        {"type": "TextBlock", "text": statement[:2800], "wrap": True, "fontType": "Monospace"},
        {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in facts]},
    ]
    card: dict[str, Any] = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                            "type": "AdaptiveCard", "version": "1.4", "body": body}
    if link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open in console", "url": link}]
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}]}


class Notifier:
    """Delivers approval events to targets from one background thread (bounded queue).

    ``on_failure(target, event, reason)`` is called (on the delivery thread) for an event that
    was dropped or could not be delivered after every attempt; governed_db records it in the
    audit trail.
    """

    def __init__(self, targets: Sequence[Target], *, console_url: str | None = None,
                 max_queue: int = 1000,
                 on_failure: Callable[[Target, Mapping[str, Any], str], None] | None = None,
                 backoff: float = 0.5) -> None:
        self.targets = tuple(targets)
        self.console_url = console_url
        self.on_failure = on_failure
        self.backoff = backoff
        self._queue: queue.Queue[tuple[Target, dict[str, Any]] | None] = queue.Queue(max_queue)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.delivered = 0
        self.failed = 0

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any],
                      on_failure: Callable[[Target, Mapping[str, Any], str], None] | None = None,
                      ) -> Notifier | None:
        raw = settings.get("notify") or ()
        if isinstance(raw, Mapping):
            raw = [raw]
        targets = [t if isinstance(t, Target) else Target.from_mapping(t) for t in raw]
        if not targets:
            return None
        return cls(targets, console_url=settings.get("console_url"), on_failure=on_failure)

    def notify(self, event: str, req: Mapping[str, Any]) -> None:
        """Queue ``event`` (requested / decided / expired) for every target; never blocks."""
        payload = build_event(event, req, console_url=self.console_url)
        for target in self.targets:
            if event not in target.events:
                continue
            try:
                self._queue.put_nowait((target, payload))
            except queue.Full:
                self._failed(target, payload, "queue full: event dropped")
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="governed_db-webhooks",
                                                daemon=True)
                self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event was delivered or given up (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self._queue.unfinished_tasks

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._deliver(*item)
            except Exception as exc:  # noqa: BLE001 - the thread must survive anything
                if item is not None:
                    self._failed(item[0], item[1], f"{type(exc).__name__}")
            finally:
                self._queue.task_done()

    def _deliver(self, target: Target, event: dict[str, Any]) -> None:
        body = json.dumps(render(target, event), sort_keys=True, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "governed-db",
                   "Governed-DB-Event": str(event.get("event")),
                   "Governed-DB-Delivery": uuid.uuid4().hex}
        reason = "not attempted"
        for attempt in range(max(1, target.max_attempts)):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            if target.kind == "webhook":
                secret = target.secret()
                if secret is None:
                    reason = f"secret ${target.secret_env} is not set: not sent unsigned"
                    break
                headers[SIGNATURE_HEADER] = sign(secret, body)  # fresh t on every attempt
            request = urllib.request.Request(target.url, data=body, headers=headers,
                                             method="POST")
            try:
                with urllib.request.urlopen(request, timeout=target.timeout) as resp:  # noqa: S310
                    status = resp.status
            except urllib.error.HTTPError as exc:
                status = exc.code
                exc.close()  # the error carries the open response: release its socket
            except (OSError, ValueError) as exc:
                reason = f"{type(exc).__name__}"
                continue
            if 200 <= status < 300:
                self.delivered += 1
                return
            reason = f"HTTP {status}"
            if status < 500 and status != 429:
                break  # the receiver refused it: retrying the same body will not help
        self._failed(target, event, reason)

    def _failed(self, target: Target, event: Mapping[str, Any], reason: str) -> None:
        self.failed += 1
        logger.warning("approval notification to %s (%s) failed: %s", _url_host(target.url),
                       target.kind, reason)
        if self.on_failure is not None:
            try:
                self.on_failure(target, event, reason)
            except Exception:  # noqa: BLE001 - recording a failure must not fail the thread
                logger.exception("recording a failed approval notification failed")

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
