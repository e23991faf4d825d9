"""``governed-db policy replay``: what a new policy would decide on recorded statements."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from . import _LogSource, _readable

__all__ = ["policy_replay"]


@click.command("replay")
@click.argument("log", type=_LogSource())
@click.option("--policy", "policy_file", required=True, type=click.Path(dir_okay=False),
              help="The new policy (TOML) to test.")
@click.option("--dsn", help="Load the catalog snapshot from here, so masking is evaluated too.")
@click.option("--baseline", type=click.Path(dir_okay=False),
              help="The policy in force: compare with its replay instead of the recorded"
                   " decisions (cancels what normalized text hides).")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON document.")
@_readable
def policy_replay(log: str, policy_file: str, dsn: str | None, baseline: str | None,
                  as_json: bool) -> None:
    """List the recorded statements in LOG whose decision FILE would change.

    Each recorded statement (normalized: literals are placeholders) runs through the analyzer
    and the new policy for its recorded identity; the report says, per rule and per identity,
    what would now be denied, sent for approval, allowed, or masked differently. Exit 0 when
    nothing changes, 1 when something does, 2 on bad input.

    \b
    Examples:
      governed-db policy replay audit.jsonl --policy stricter.toml
      governed-db policy replay audit.jsonl --policy new.toml --dsn "$DSN" --json
    """
    from ..audit._replay import load_catalog, replay
    from ..errors import PolicyError
    from ..policy import load_policy

    try:
        policy = load_policy(policy_file)
        base = load_policy(baseline) if baseline else None
    except PolicyError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    catalog = load_catalog(dsn, policy) if dsn else None
    rep = replay(log, policy, catalog=catalog, baseline=base)
    if as_json:
        click.echo(json.dumps(rep, sort_keys=True, indent=1))
    else:
        _render(rep)
    sys.exit(1 if rep["changed"] else 0)


def _render(rep: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False)
    against = f"baseline {rep['baseline']}" if rep["baseline"] else "the recorded decisions"
    con.print(f"[bold]{rep['policy']}[/] against {against}: {rep['evaluated']} statement(s)"
              f" replayed, {rep['changed']} would change; masking {rep['masking']}")
    if rep["changes"]:
        t = Table(title="statements whose decision would change")
        for col in ("record", "identity", "statement", "before", "after", "rules"):
            t.add_column(col)
        for c in rep["changes"]:
            after = c["after"]["action"] if c["change"] != "masking" else ", ".join(
                f"{m['column']}: {m['before'] or 'clear'} -> {m['after'] or 'clear'}"
                for m in c["masking"])
            t.add_row(str(c["id"])[-12:], c["identity"], c["summary"] or "",
                      c["before"]["action"], after, ", ".join(c["rules"]))
        con.print(t)
        for title, key in (("per rule", "by_rule"), ("per identity", "by_identity")):
            s = Table(title=title)
            s.add_column("rule" if key == "by_rule" else "identity")
            for kind in ("denied", "approval", "allowed", "masking"):
                s.add_column(kind, justify="right")
            for name, counts in sorted(rep[key].items()):
                s.add_row(name, *(str(counts.get(k, 0)) for k in
                                  ("denied", "approval", "allowed", "masking")))
            con.print(s)
    for w in rep["limits"]:
        con.print(f"limit: {w['summary']} ({w['identity']}) had {w['recorded_rows']} rows when"
                  f" recorded; {w['rule']} now allows {w['limit']}")
    for s in rep["skipped"]:
        con.print(f"skipped {s['id']}: {s['why']}")
    con.print("replay cannot know: " + "; ".join(rep["caveats"]))
