"""``governed-db approvals list/show/prune``: what a person needs to decide, and housekeeping."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

import click

from ..errors import PolicyError

__all__ = ["approvals_prune", "approvals_show", "print_requests"]


def _when(ts: Any) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _age(ts: Any, now: float) -> str:
    if ts is None:
        return "-"
    secs = int(now - float(ts))
    sign = "-" if secs < 0 else ""
    secs = abs(secs)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{sign}{secs // size}{unit}"
    return f"{sign}{secs}s"


def public_view(req: Mapping[str, Any]) -> dict[str, Any]:
    """A request as shown to people and scripts: no binding hash or seal (not secrets, but
    of no use to a reader), everything else as stored — normalized, value-free."""
    return {k: v for k, v in req.items() if k not in ("binding", "seal")}


def print_requests(reqs: Iterable[Mapping[str, Any]], as_json: bool, con: Any) -> None:
    reqs = list(reqs)
    if as_json:
        for req in reqs:
            click.echo(json.dumps(public_view(req), sort_keys=True))
        return
    if not reqs:
        con.print("no approval requests")
        return
    from rich.table import Table

    now = time.time()
    t = Table(title=f"{len(reqs)} request(s)", expand=False)
    t.add_column("id", no_wrap=True)
    t.add_column("status", no_wrap=True)
    t.add_column("requester", no_wrap=True)
    t.add_column("statement", overflow="fold")
    t.add_column("age", justify="right", no_wrap=True)
    t.add_column("expires in", justify="right", no_wrap=True)
    for req in reqs:
        who = req.get("requester") or {}
        expires = req.get("expires_at")
        t.add_row(str(req["id"]), str(req.get("status")), f"{who.get('kind')}:{who.get('id')}",
                  str(req.get("summary") or ""), _age(req.get("requested_at"), now),
                  _age(now, float(expires)) if expires is not None else "-")
    con.print(t)
    con.print("(details: governed-db approvals show ID)")


@click.command("show")
@click.argument("request_id")
@click.option("--json", "as_json", is_flag=True, help="The request as one JSON document.")
def approvals_show(request_id: str, as_json: bool) -> None:
    """Everything about REQUEST_ID a person needs to decide on it.

    The normalized statement (literals replaced), the requester with purpose, on-behalf-of and
    model, the tables, the rules and why, the exact row count when bound, the policy version,
    age, expiry and every decision so far.

    \b
    Example:
      governed-db approvals show 3f9c2a1b0d4e5f60
    """
    from . import _console, _store

    try:
        req = _store().get(request_id)
    except PolicyError as exc:
        click.echo(f"error: {getattr(exc, 'detail', exc)}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(public_view(req), sort_keys=True, indent=1))
        return
    now = time.time()
    who = req.get("requester") or {}
    rows = [
        ("request", req["id"]), ("status", req.get("status")),
        ("requester", f"{who.get('kind')}:{who.get('id')}"),
        ("purpose", who.get("purpose") or "-"), ("on behalf of", who.get("on_behalf_of") or "-"),
        ("model", who.get("model") or "-"),
        ("statement", req.get("statement") or req.get("summary")),
        ("tables", ", ".join(req.get("tables") or []) or "-"),
        ("rules", ", ".join(req.get("rule_ids") or [])), ("why", req.get("reason") or "-"),
        ("exact rows", req.get("affected_rows") if req.get("affected_rows") is not None
         else "not bound"),
        ("policy version", req.get("policy")),
        ("requested", f"{_when(req.get('requested_at'))} UTC"
                      f" ({_age(req.get('requested_at'), now)} ago)"),
        ("expires", f"{_when(req.get('expires_at'))} UTC"),
    ]
    for d in req.get("decisions") or []:
        by = d.get("by") or {}
        rows.append(("decision", f"{'approved' if d.get('approve') else 'denied'} by"
                                 f" {by.get('kind')}:{by.get('id')}"
                                 + (f" (verified: {by.get('issuer')}, subject {by.get('subject')})"
                                    if by.get("verified") else "")
                                 + f" at {_when(d.get('at'))} UTC"
                                 + (f": {d['note']}" if d.get("note") else "")))
    from rich.table import Table

    t = Table(show_header=False, expand=False)
    t.add_column("field", no_wrap=True, style="bold")
    t.add_column("value", overflow="fold")
    for k, v in rows:
        t.add_row(k, str(v))
    _console().print(t)


@click.command("prune")
@click.option("--older-than", default="30d", show_default=True,
              help="Age of requests to delete: 12h, 7d, 4w ...")
def approvals_prune(older_than: str) -> None:
    """Delete denied, used and expired requests older than --older-than.

    Pending and approved requests are kept. Decisions stay in the audit trail.

    \b
    Example:
      governed-db approvals prune --older-than 7d
    """
    from ..approvals import prune
    from . import _store

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = older_than.strip().lower()
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise click.BadParameter("use a number and a unit, e.g. 12h, 7d, 4w",
                                 param_hint="--older-than")
    n = prune(_store(), int(text[:-1]) * units[text[-1]])
    click.echo(f"pruned {n} request(s)")
