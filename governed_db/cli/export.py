"""``governed-db audit export``: the audit trail as CSV, ECS JSON lines or OpenLineage events."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import click

from . import _LogSource, _readable

__all__ = ["audit_export"]

FORMATS = ("csv", "ecs", "openlineage")


def _records(log: str) -> Iterator[dict[str, Any]]:
    from ..audit import iter_records

    for n, rec, _ in iter_records(log):
        if rec is None:
            click.echo(f"warning: line {n} is not a record (torn or edited); skipped"
                       " (`governed-db audit verify` says why)", err=True)
            continue
        yield rec


def _policy_lineage_settings(policy: str | None) -> dict[str, Any]:
    """``[audit.openlineage]`` of the policy (job naming, namespace), when one is given."""
    import os

    from ..errors import PolicyError
    from ..policy import load_policy

    path = policy or os.environ.get("GOVERNED_DB_POLICY")
    if not path:
        return {}
    try:
        settings = dict(load_policy(path).audit.get("openlineage") or {})
    except PolicyError as exc:
        raise click.UsageError(str(exc)) from None
    settings.pop("enabled", None)
    return settings


@click.command("export")
@click.argument("log", type=_LogSource())
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True,
              help="csv: one row per record; ecs: Elastic Common Schema JSON lines;"
                   " openlineage: OpenLineage run events, one per line.")
@click.option("--out", type=click.Path(dir_okay=False, writable=True),
              help="Write here instead of standard output.")
@click.option("--policy", type=click.Path(dir_okay=False),
              help="Policy whose [audit.openlineage] names jobs (default GOVERNED_DB_POLICY).")
@_readable
def audit_export(log: str, fmt: str, out: str | None, policy: str | None) -> None:
    """Export LOG for the tools teams already run: one CSV row or JSON line per record.

    Chain fields (chain, seq, prev, hash, sig) are kept so a SIEM can still see a missing
    record; like the log itself, exports hold normalized SQL and names, never values.
    LOG is a JSONL file or a PostgreSQL audit store (postgresql://...).

    \b
    Examples:
      governed-db audit export audit.jsonl --format ecs --out audit.ecs.jsonl
      governed-db audit export audit.jsonl --format csv > audit.csv
      governed-db audit export audit.jsonl --format openlineage --out lineage.jsonl
    """
    from ..audit import _export

    records = _records(log)
    fh: Any = open(out, "w", encoding="utf-8", newline="") if out else sys.stdout  # noqa: SIM115
    try:
        if fmt == "csv":
            n = _export.write_csv(records, fh)
        elif fmt == "ecs":
            n = _export.write_ecs(records, fh)
        else:
            from ..audit._openlineage import event_to_dict, events_from_records

            try:
                import openlineage.client  # noqa: F401 - the optional extra
            except ImportError:
                raise click.UsageError("--format openlineage needs the openlineage-python"
                                       " client: pip install 'governed-db[openlineage]'"
                                       ) from None
            n = 0
            for event in events_from_records(records, _policy_lineage_settings(policy)):
                fh.write(json.dumps(event_to_dict(event), sort_keys=True) + "\n")
                n += 1
    finally:
        if out:
            fh.close()
    if out:
        click.echo(f"wrote {n} {'events' if fmt == 'openlineage' else 'records'} to {out}",
                   err=True)


def session_view(log: str, session: str | None, tool_call: str | None, include_catalog: bool,
                 as_json: bool) -> None:
    """``audit report --session/--tool-call``: one agent run, as tables or one JSON document."""
    from ..audit._sessions import session_report

    rep = session_report(log, session=session, tool_call=tool_call,
                         include_catalog=include_catalog)
    if as_json:
        click.echo(json.dumps(rep, sort_keys=True, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False)
    what = f"session {session}" if session else f"tool call {tool_call}"
    t = rep["totals"]
    con.print(f"[bold]{what}[/]: {t['statements']} statement(s) by"
              f" {', '.join(rep['identities']) or '-'} from {(rep['first'] or '-')[:19]} to"
              f" {(rep['last'] or '-')[:19]}; models: {', '.join(rep['models']) or '-'};"
              f" purposes: {', '.join(rep['purposes']) or '-'}")
    con.print(f"ok {t['ok']}, denied {t['denied']}, approval required"
              f" {t['approval_required']}, rolled back {t['rolled_back']}, errors {t['error']};"
              f" rows returned or changed {t['rows']}")
    st = Table(title="statements")
    for col in ("time (UTC)", "statement", "decision", "outcome", "rows", "masked", "tx"):
        st.add_column(col)
    for s in rep["statements"]:
        st.add_row((s["ts"] or "")[11:19], s["summary"] or "",
                   s["decision"] + (f" ({', '.join(s['rules'])})" if s["rules"] else ""),
                   s["outcome"], str(s["rows"]),
                   ", ".join(f"{k} ({v.split(':')[0]})" for k, v in sorted(s["masked"].items())),
                   s["transaction"] or "")
    con.print(st)
    if rep["tables"]:
        tt = Table(title="tables")
        for col in ("table", "reads", "writes", "rows", "columns", "masked"):
            tt.add_column(col)
        for e in rep["tables"]:
            tt.add_row(e["table"], str(e["reads"]), str(e["writes"]), str(e["rows"]),
                       ", ".join(e["columns"]), ", ".join(sorted(e["masked"])))
        con.print(tt)
    for a in rep["approvals"]:
        con.print(f"approval {a['request']}: {a['summary']} ({a['outcome']})")
    for tx in rep["transactions"]:
        con.print(f"{tx['outcome']} at {(tx['ts'] or '')[11:19]}:"
                  f" {len(tx['statements'])} write(s)")
