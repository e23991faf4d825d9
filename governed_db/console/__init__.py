"""``governed-db console``: the approvals queue and the audit explorer in a browser.

A small Starlette app with server-rendered pages (Jinja2, autoescaped) and SVG charts drawn on
the server — no JavaScript and no front-end build. It reads the same stores as the CLI: the
approval store the policy or ``GOVERNED_DB_APPROVALS_DSN`` selects, and one or more audit logs
(JSONL files or ``postgresql://`` audit stores), so one console serves a fleet.

Security, and why:

* **Loopback by default**, like a notebook server; another host needs ``--host`` on purpose.
* **Every request is authenticated.** A random access token is made at each start and printed
  once in the URL (``http://HOST:PORT/?token=…``). Opening that URL exchanges it for an
  ``HttpOnly``, ``SameSite=Strict`` session cookie and redirects to a URL without the token
  (so it does not stay in history or leak in a ``Referer``; ``Referrer-Policy: same-origin``
  too). Anything else gets 401. Tokens and cookies are compared in constant time.
* **CSRF protection on every state-changing request**: each form carries a token derived
  (HMAC) from the session; a POST without it, or with another session's, gets 403 — as does a
  POST whose ``Origin`` is not this console.
* **Approvers obey the CLI's rules**: decisions go through the store's ``decide()``, which
  refuses the requester and any ``ai_agent``. The person deciding is the console's operator,
  fixed at start (``--as human:maria``); without it the queue is read-only.
* **No value, literal or PII is rendered**: pages show what the audit trail and the approval
  store hold — normalized statements, names, counts — and Jinja2 escapes all of it. A strict
  Content-Security-Policy forbids scripts altogether.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.responses import Response

__all__ = ["ConsoleSettings", "create_app"]

_COOKIE = "governed_db_console"
_TEMPLATES = Path(__file__).with_name("templates")


class ConsoleSettings:
    """What one console serves: stores, the operator, and its secrets (made at start)."""

    def __init__(self, *, logs: Sequence[str], approver: Any = None, policy: Any = None,
                 public_key: str | None = None, token: str | None = None,
                 store: Any = None) -> None:
        self.logs = list(logs)
        self.approver = approver
        self.policy = policy
        self.public_key = public_key
        self.token = token or secrets.token_urlsafe(24)
        self._secret = secrets.token_bytes(32)  # signs session cookies and CSRF tokens
        self._store = store

    def takes_tokens(self) -> bool:
        """Whether a decision may carry the approver's own signed token (the policy can
        verify one: it has ``[identity.oidc]``)."""
        return bool((getattr(self.policy, "identity", None) or {}).get("oidc"))

    def store(self) -> Any:
        if self._store is None:
            from .. import _config

            self._store = _config.approvals(self.policy)
        return self._store

    # -- sessions and CSRF ------------------------------------------------------------------

    def new_session(self) -> str:
        sid = secrets.token_urlsafe(18)
        return f"{sid}.{self._mac('session', sid)}"

    def session_of(self, cookie: str | None) -> str | None:
        if not cookie or "." not in cookie:
            return None
        sid, mac = cookie.rsplit(".", 1)
        return sid if hmac.compare_digest(mac, self._mac("session", sid)) else None

    def csrf_for(self, sid: str) -> str:
        return self._mac("csrf", sid)

    def token_ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given), self.token)

    def _mac(self, purpose: str, value: str) -> str:
        return hmac.new(self._secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def create_app(settings: ConsoleSettings) -> Any:
    """The ASGI app (Starlette) for ``settings``."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, RedirectResponse, Response
    from starlette.routing import Route

    env = Environment(loader=FileSystemLoader(str(_TEMPLATES)),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["when"] = _when

    def page(request: Request, name: str, status: int = 200, **ctx: Any) -> Response:
        sid = request.state.sid
        body = env.get_template(name).render(
            csrf=settings.csrf_for(sid), approver=settings.approver, logs=settings.logs,
            path=request.url.path, takes_tokens=settings.takes_tokens(), **ctx)
        return HTMLResponse(body, status_code=status)

    def denied(status: int, message: str) -> Response:
        body = env.get_template("error.html").render(status=status, message=message,
                                                     approver=None, path="", csrf="")
        return HTMLResponse(body, status_code=status)

    async def authenticate(request: Request) -> Response | None:
        token = request.query_params.get("token")
        if token is not None:
            if not settings.token_ok(token):
                return denied(401, "This access token is not valid for this console. Use the"
                                   " URL `governed-db console` printed when it started.")
            target = request.url.path or "/"
            resp = RedirectResponse(target, status_code=303)
            resp.set_cookie(_COOKIE, settings.new_session(), httponly=True, samesite="strict",
                            path="/")
            return resp
        sid = settings.session_of(request.cookies.get(_COOKIE))
        if sid is None:
            return denied(401, "Not signed in: open the URL with ?token=… that `governed-db"
                               " console` printed when it started.")
        request.state.sid = sid
        if request.method not in ("GET", "HEAD"):
            form = await request.form()
            origin = request.headers.get("origin")
            if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
                return denied(403, "Cross-origin request refused.")
            given = str(form.get("csrf") or "")
            if not given or not hmac.compare_digest(given, settings.csrf_for(sid)):
                return denied(403, "Missing or invalid CSRF token: reload the page and submit"
                                   " the form again.")
            request.state.form = form
        return None

    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            refusal = await authenticate(request)
            if refusal is not None:
                return _secure(refusal)
            return _secure(await handler(request))

        return endpoint

    async def dashboard(request: Request) -> Response:
        records = _load(settings.logs)
        return page(request, "dashboard.html", charts=_charts(records),
                    verification=_verification(settings), totals=_totals(records))

    async def approvals(request: Request) -> Response:
        store = settings.store()
        reqs = store.list()
        pending = [r for r in reqs if r.get("status") == "pending"]
        history = [r for r in reversed(reqs) if r.get("status") != "pending"][:100]
        return page(request, "approvals.html", pending=pending, history=history, now=time.time())

    async def approval(request: Request) -> Response:
        from ..errors import PolicyError

        try:
            req = settings.store().get(request.path_params["request_id"])
        except PolicyError as exc:
            return denied(404, getattr(exc, "detail", str(exc)))
        return page(request, "approval.html", req=req, now=time.time(),
                    message=request.query_params.get("done"))

    async def decide(request: Request) -> Response:
        from ..approvals import approver_from_token
        from ..errors import IdentityError, PolicyError, StatementDenied

        request_id = request.path_params["request_id"]
        form = request.state.form
        action = str(form.get("action") or "")
        if action not in ("approve", "deny"):
            return denied(400, "Choose approve or deny.")
        token = str(form.get("approver_token") or "").strip()
        if settings.approver is None and not (token and settings.takes_tokens()):
            return denied(403, "This console was started without an approver identity"
                               " (`governed-db console --token-file PATH` or `--as human:NAME`)"
                               " and takes no approver tokens (the policy has no"
                               " [identity.oidc]): decisions are off.")
        note = str(form.get("note") or "").strip()[:500] or None
        try:
            # A token pasted with the decision is this person's, for this decision only
            # (verified like any identity; never stored or shown).
            approver = (approver_from_token(token, settings.policy) if token
                        else settings.approver)
            # The policy decides whether the approver must be verified and hold a role: a
            # console started with --as refuses here when it must (fail closed).
            settings.store().decide(request_id, approver, approve=action == "approve",
                                    note=note, policy=settings.policy)
        except (StatementDenied, PolicyError, IdentityError) as exc:
            try:
                req = settings.store().get(request_id)
            except PolicyError:
                return denied(404, getattr(exc, "detail", str(exc)))
            return page(request, "approval.html", status=403, req=req, now=time.time(),
                        refusal=str(exc).split("\n")[0])
        return RedirectResponse(f"/approvals/{request_id}?done={action}", status_code=303)

    async def audit(request: Request) -> Response:
        q = request.query_params
        filters = {k: (q.get(k) or "").strip() or None
                   for k in ("identity", "table", "column", "purpose", "since", "until",
                             "decision")}
        error = None
        try:
            records = _filtered(settings.logs, filters)
        except ValueError as exc:
            records, error = [], str(exc)
        return page(request, "audit.html", records=records[-500:][::-1], total=len(records),
                    filters=filters, error=error)

    routes = [
        Route("/", guarded(dashboard)),
        Route("/approvals", guarded(approvals)),
        Route("/approvals/{request_id}", guarded(approval)),
        Route("/approvals/{request_id}/decide", guarded(decide), methods=["POST"]),
        Route("/audit", guarded(audit)),
    ]
    return Starlette(routes=routes)


def _secure(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = ("default-src 'none'; style-src 'unsafe-inline';"
                                               " img-src 'self' data:; form-action 'self';"
                                               " frame-ancestors 'none'")
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    # same-origin: nothing leaks to other sites, and same-origin form posts keep a real Origin
    # header (with no-referrer, browsers send "Origin: null", which the check refuses).
    resp.headers["Referrer-Policy"] = "same-origin"
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _when(value: Any) -> str:
    if value in (None, ""):
        return "-"
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(float(value), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)[:19].replace("T", " ")


# -- audit data ----------------------------------------------------------------------------------

def _load(logs: Sequence[str]) -> list[dict[str, Any]]:
    from ..audit._verify import iter_records

    out: list[dict[str, Any]] = []
    for log in logs:
        try:
            out.extend(rec for _, rec, _ in iter_records(log)
                       if rec is not None and rec.get("type") == "statement")
        except OSError:
            continue  # shown as unreadable in the verification panel
    out.sort(key=lambda r: r.get("ts") or "")
    return out


def _filtered(logs: Sequence[str], f: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """The audit explorer's filters: the same engine as ``governed-db audit query``."""
    from ..audit import query

    out: list[dict[str, Any]] = []
    for log in logs:
        out.extend(query(log, identity=f.get("identity"), table=f.get("table"),
                         column=f.get("column"), since=f.get("since"), until=f.get("until"),
                         decision=f.get("decision")))
    if f.get("purpose"):
        want = str(f["purpose"]).lower()
        out = [r for r in out if want in str(r.get("identity", {}).get("purpose") or "").lower()]
    out.sort(key=lambda r: r.get("ts") or "")
    return out


def decision_of(rec: Mapping[str, Any]) -> str:
    """One label per record: what happened (observe-mode denials show as ``would_deny``)."""
    outcome = str(rec.get("outcome", {}).get("outcome") or "ok")
    if outcome == "ok" and rec.get("decision", {}).get("would") == "deny":
        return "would_deny"
    return outcome


def _totals(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    idents = {f"{r.get('identity', {}).get('kind')}:{r.get('identity', {}).get('id')}"
              for r in records}
    return {"statements": len(records), "identities": len(idents),
            "denied": sum(1 for r in records if decision_of(r) in ("denied", "rolled_back")),
            "masked": sum(1 for r in records if r.get("masked"))}


def _charts(records: Sequence[Mapping[str, Any]]) -> list[str]:
    from ._svg import grouped_bars, stacked_bars

    if not records:
        return []
    # Statements over time, by decision: hourly buckets, or by minute for a short trail.
    times = [_parse(r.get("ts")) for r in records]
    valid = [t for t in times if t is not None]
    span = (max(valid) - min(valid)).total_seconds() if valid else 0
    fmt = "%H:%M" if span < 3 * 3600 else "%m-%d %Hh"
    buckets: list[str] = []
    by_bucket: dict[str, Counter[str]] = defaultdict(Counter)
    for rec, t in zip(records, times, strict=True):
        key = t.strftime(fmt) if t is not None else "?"
        if key not in by_bucket:
            buckets.append(key)
        by_bucket[key][decision_of(rec)] += 1
    decisions = sorted({d for c in by_bucket.values() for d in c})
    series = {d: [by_bucket[b][d] for b in buckets] for d in decisions}
    charts = [stacked_bars("Statements over time, by decision", buckets, series)]

    per_ident: dict[str, Counter[str]] = defaultdict(Counter)
    reads: dict[str, Counter[str]] = defaultdict(Counter)
    tables: dict[str, Counter[str]] = defaultdict(Counter)
    for rec in records:
        ident = rec.get("identity", {})
        label = f"{ident.get('kind')}:{ident.get('id')}"
        per_ident[label][decision_of(rec)] += 1
        stmt = rec.get("statement", {})
        user_tables = [t for t in (stmt.get("reads") or [])
                       if not str(t).startswith(("pg_", "information_schema."))]
        if user_tables and decision_of(rec) == "ok":
            reads[label]["masked reads" if rec.get("masked") else "unmasked reads"] += 1
        for t in set(stmt.get("reads") or []) | set(stmt.get("writes") or []):
            if not str(t).startswith(("pg_", "information_schema.")):
                tables[label][str(t)] += 1
    charts.append(grouped_bars("Statements per identity, by decision", per_ident))
    if reads:
        charts.append(grouped_bars("Masked vs unmasked reads, per identity", reads))
    if tables:
        charts.append(grouped_bars("Tables touched, per identity", tables))
    return charts


def _parse(ts: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(ts)) if ts else None
    except ValueError:
        return None


def _verification(settings: ConsoleSettings) -> list[dict[str, Any]]:
    """Chain and signature status per log, shown plainly on the dashboard."""
    from ..audit._verify import VerificationError, load_public_key, verify

    key = None
    if settings.public_key:
        try:
            key = load_public_key(settings.public_key)
        except (OSError, ValueError) as exc:
            return [{"log": settings.public_key, "ok": False,
                     "text": f"public key unreadable: {type(exc).__name__}"}]
    out = []
    for log in settings.logs:
        try:
            rep = verify(log, key, allow_open=True)
        except VerificationError as exc:
            out.append({"log": log, "ok": False, "text": f"TAMPERED: {exc}"})
            continue
        except OSError as exc:
            out.append({"log": log, "ok": False, "text": f"unreadable: {type(exc).__name__}"})
            continue
        signed = "signatures valid" if key is not None else "signatures not checked (no"
        signed += "" if key is not None else " --public-key)"
        out.append({"log": log, "ok": True,
                    "text": f"intact: {getattr(rep, 'records', '?')} records, {signed}"})
    return out
