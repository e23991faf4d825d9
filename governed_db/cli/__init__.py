"""The ``governed-db`` command line (click + rich). Exit codes: 0 ok, 1 check failed, 2 usage/input error."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import PolicyError, StatementDenied

__all__ = ["main"]

# Mirrors governed_db.audit.DECISIONS (kept literal: the CLI imports nothing heavy at start).
_DECISIONS = ("allow", "deny", "approval", "ok", "denied", "approval_required", "rolled_back",
              "error", "would_deny", "would_approve")


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _readable(fn: Any) -> Any:
    """Audit commands: an unreadable log or unreachable store is exit code 2 and a message."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import psycopg

        try:
            return fn(*args, **kwargs)
        except (OSError, psycopg.Error) as exc:
            click.echo(f"error: cannot read the audit log: {type(exc).__name__}: {exc}",
                       err=True)
            sys.exit(2)

    return wrapper


class _LogSource(click.ParamType):  # type: ignore[type-arg]
    """A JSONL audit log file, or a PostgreSQL audit store URL (postgresql://...)."""

    name = "LOG"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        from ..audit._verify import is_store_url

        text = str(value)
        if is_store_url(text) or Path(text).is_file():
            return text
        self.fail(f"{text!r} is neither an audit log file nor a postgresql:// store URL",
                  param, ctx)
        raise AssertionError  # unreachable: fail() raises


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="governed-db")
def main() -> None:
    """Govern how apps and AI agents touch PostgreSQL: guardrails, masking, signed audit.

    \b
    Examples:
      governed-db demo
      governed-db audit verify ~/.local/state/governed_db/audit.jsonl --public-key key.pub
      governed-db audit query audit.jsonl --identity recs-bot --table users
      governed-db policy check policy.toml
    """


@main.command()
@click.option("--dsn", help="Use an existing PostgreSQL instead of a throwaway one.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable steps.")
def demo(dsn: str | None, as_json: bool) -> None:
    """Run the seed scenario end to end on a throwaway PostgreSQL.

    An AI agent reads customers (PII masked), tries DROP TABLE (denied), a mass UPDATE
    (denied), a DDL change (approval), then the audit trail answers who touched what.
    """
    from .demo import run_demo

    sys.exit(run_demo(dsn=dsn, as_json=as_json))


@main.command()
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Directory for audit-signing.key and audit-signing.pub.")
def keygen(out: str) -> None:
    """Create an Ed25519 key pair for signing audit logs.

    \b
    Example:
      governed-db keygen --out /etc/governed_db
      # then in the policy:  [audit] signing_key = "/etc/governed_db/audit-signing.key"
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    priv = d / "audit-signing.key"
    if priv.exists():
        raise click.UsageError(f"{priv} exists; refusing to overwrite a signing key")
    key = Ed25519PrivateKey.generate()
    import os

    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    (d / "audit-signing.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    click.echo(f"wrote {priv} (private, 0600) and {d / 'audit-signing.pub'}")
    click.echo("use it with [audit] signing_key = \"" + str(priv) + "\" in your policy")


@main.group()
def audit() -> None:
    """Verify and query audit logs."""


@audit.command("verify")
@click.argument("log", type=_LogSource(), nargs=-1, required=True)
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False),
              help="PEM public key; without it signatures are not checked.")
@click.option("--allow-open", is_flag=True, help="Accept chains still being written.")
@_readable
def audit_verify(log: tuple[str, ...], public_key: str | None, allow_open: bool) -> None:
    """Exit 0 when the LOG(s) are intact; otherwise name the first bad record and why (exit 1).

    LOG is a JSONL file or a PostgreSQL store (postgresql://...); give rotated files and other
    hosts' logs together to check the links between their chains. Exit 2: unreadable.

    \b
    Examples:
      governed-db audit verify audit.jsonl --public-key audit-signing.pub
      governed-db audit verify audit.jsonl.1 audit.jsonl     # rotated: checks the link
      governed-db audit verify audit.jsonl --allow-open      # still being written
      governed-db audit verify postgresql://auditor@db/audit
    """
    from ..audit import VerificationError, load_public_key, verify_many

    key = load_public_key(public_key) if public_key else None
    try:
        trail = verify_many(list(log), key)
    except VerificationError as exc:
        where = log[0] if len(log) == 1 else "log"
        click.echo(f"TAMPERED: {where}: record {exc.index}: {exc.reason}", err=True)
        sys.exit(1)
    problems = [f"GAP: {gap}" for gap in trail.gaps]
    if key is not None:  # --allow-open excuses a cut tail, never a chain nobody signed
        problems += [f"UNSIGNED: chain {c[:8]}: none of its {n} record(s) is signed by this key,"
                     " so nothing attributes them to the signer (appended by someone who can"
                     " write the file, or a writer killed before its first checkpoint)"
                     for r in trail.reports for c, n in r.unsigned_chains.items()]
    if not allow_open:
        problems += [f"TRUNCATED: chain {c[:8]} ends without its close checkpoint and no"
                     " rotated log continues it (truncated, or the writer was killed; "
                     "--allow-open accepts a log still being written)" for c in trail.open_chains]
    if problems:
        click.echo("\n".join(problems), err=True)
        sys.exit(1)
    tail = sum(sum(r.unsigned_tail.values()) for r in trail.reports)
    click.echo(f"OK: {trail.records} records in {trail.chains} chain(s) verified"
               + ("" if key else " (hashes only: pass --public-key to check signatures)")
               + (f"; {tail} record(s) after the last signed checkpoint" if tail else ""))
    for prev in trail.earlier:
        click.echo(f"NOTE: a chain here continues chain {prev[:8]} from an earlier (rotated)"
                   " log; give that file too to check the link")
    for chain in trail.open_chains:
        click.echo(f"OPEN: chain {chain[:8]} has no close checkpoint (still being written, or"
                   " the writer was killed); its records verify up to the last one above")
    for r in trail.reports:
        if r.torn_line is not None:
            click.echo(f"TORN: line {r.torn_line} is a partial record (the writer was killed"
                       " mid-write); it was not counted")


_TIME_HELP = "ISO time (2026-11-01T09:00, UTC), today, yesterday, or an age: 30m, 1h, 7d."


@audit.command("query")
@click.argument("log", type=_LogSource())
@click.option("--identity", help="Identity id, kind:id or model.")
@click.option("--table", help="Table read or written.")
@click.option("--column", help="Column that was masked.")
@click.option("--since", help=_TIME_HELP)
@click.option("--until", help=_TIME_HELP)
@click.option("--kind", help="Statement kind, e.g. SELECT, UPDATE, DROP.")
@click.option("--decision", type=click.Choice(_DECISIONS),
              help="What was decided or happened; would_deny/would_approve select observe-mode"
                   " results, error selects statements that failed.")
@click.option("--wide", is_flag=True, help="All columns (default: what fits 80 columns).")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line.")
@_readable
def audit_query(log: str, identity: str | None, table: str | None, column: str | None,
                since: str | None, until: str | None, kind: str | None, decision: str | None,
                wide: bool, as_json: bool) -> None:
    """Who touched what, when and why: one row (or JSON record) per statement.

    \b
    Examples:
      governed-db audit query audit.jsonl --identity recs-bot --table users
      governed-db audit query audit.jsonl --identity gpt-4o --since today --json
      governed-db audit query audit.jsonl --decision would_deny --since 1h
      governed-db audit query audit.jsonl --decision denied --kind DROP --wide
    """
    from ..audit import query

    try:
        records = query(log, identity=identity, table=table, column=column, since=since,
                        until=until, kind=kind, decision=decision)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        for rec in records:
            click.echo(json.dumps(rec, sort_keys=True))
        return
    from rich.table import Table

    con = _console()
    t = Table(title=f"{len(records)} statement(s)", expand=False)
    t.add_column("time (UTC)", no_wrap=True)
    t.add_column("identity", no_wrap=True)
    t.add_column("statement", overflow="fold")
    t.add_column("decision", overflow="fold")
    if wide:
        for col in ("purpose", "tool call", "tables", "masked", "rules", "rows"):
            t.add_column(col, overflow="fold")
    for rec in records:
        ident = rec.get("identity", {})
        stmt = rec.get("statement", {})
        out = rec.get("outcome", {})
        dec = rec.get("decision", {})
        what = str(out.get("outcome") or dec.get("action") or "")
        if dec.get("observe") and dec.get("would") not in (None, "allow"):
            what += f" (would {dec['would']})"
        if out.get("sqlstate"):
            what += f" {out['sqlstate']}"
        row = [(rec.get("ts") or "")[:19].replace("T", " ") if wide else
               (rec.get("ts") or "")[11:19], f"{ident.get('kind')}:{ident.get('id')}",
               str(stmt.get("summary") or ""), what]
        if wide:
            row += [ident.get("purpose") or "",
                    str((ident.get("attributes") or {}).get("tool_call_id") or ""),
                    ", ".join(sorted(set(stmt.get("reads", [])) | set(stmt.get("writes", [])))),
                    ", ".join(sorted(rec.get("masked", {}))),
                    ", ".join(out.get("rules") or dec.get("rules") or []),
                    str(out.get("rowcount", ""))]
        t.add_row(*row)
    con.print(t)
    if not wide and records:
        con.print("(--wide for purpose, tool call, tables, masked columns, rules, rows)")


@audit.command("report")
@click.argument("log", type=_LogSource())
@click.option("--identity", help="Identity id, kind:id or model.")
@click.option("--session", help="One governed connection (its id, or 8+ leading characters).")
@click.option("--tool-call", help="One tool call (the identity's tool_call_id or run_id).")
@click.option("--since", help=_TIME_HELP)
@click.option("--until", help=_TIME_HELP)
@click.option("--include-catalog", is_flag=True,
              help="Also list system-catalog reads (ORM reflection, introspection).")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON document.")
@_readable
def audit_report(log: str, identity: str | None, session: str | None, tool_call: str | None,
                 since: str | None, until: str | None, include_catalog: bool,
                 as_json: bool) -> None:
    """Which datasets IDENTITY touched, when, how many rows, why; what was masked or denied.

    With --session or --tool-call: what that one agent run did, end to end (statements,
    decisions, rows, tables and columns, masking, approvals, commits).

    \b
    Examples:
      governed-db audit report audit.jsonl --identity recs-bot --since 2026-11-01
      governed-db audit report audit.jsonl --tool-call call_7Qx2 --json
    """
    if session or tool_call:
        from .export import session_view

        session_view(log, session, tool_call, include_catalog, as_json)
        return
    if not identity:
        from ..audit import summary

        try:
            rows = summary(log, since=since, until=until, include_catalog=include_catalog)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        if as_json:
            click.echo(json.dumps(rows, sort_keys=True, indent=1))
            return
        render_summary(rows, _console())
        return
    from ..audit import report

    try:
        rep = report(log, identity, since=since, until=until, include_catalog=include_catalog)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(rep, sort_keys=True, indent=1))
        return
    render_report(rep, _console())


def render_summary(rows: list[dict[str, Any]], con: Any) -> None:
    """``audit report`` without a filter: every identity in one table that fits 80 columns."""
    from rich.table import Table

    t = Table(title=f"{len(rows)} identities", expand=False)
    t.add_column("identity", no_wrap=True)
    for col in ("stmts", "ok", "denied", "approval", "errors"):
        t.add_column(col, justify="right")
    t.add_column("tables", overflow="fold")
    for e in rows:
        extra = f" (+{e['would_deny']} would deny)" if e["would_deny"] else ""
        t.add_row(e["identity"], str(e["statements"]), str(e["ok"]), f"{e['denied']}{extra}",
                  str(e["approvals"]), str(e["errors"]), ", ".join(e["tables"]) or "-")
    con.print(t)
    for e in rows:
        bits = [f"purposes: {', '.join(e['purposes'])}" if e["purposes"] else "",
                f"models: {', '.join(e['models'])}" if e["models"] else "",
                f"masked: {', '.join(e['masked'])}" if e["masked"] else "",
                f"tool calls: {len(e['tool_calls'])}" if e["tool_calls"] else ""]
        line = "; ".join(b for b in bits if b)
        if line:
            con.print(f"{e['identity']}: {line}")
    con.print("(details: --identity ID, --session ID or --tool-call ID)")


def render_report(rep: dict[str, Any], con: Any) -> None:
    """The auditor's report as rich tables (``audit report`` and the demo)."""
    from rich.table import Table

    con.print(f"[bold]{rep['identity']}[/]: {rep['statements']} statement(s) from"
              f" {(rep['first'] or '-')[:19]} to {(rep['last'] or '-')[:19]};"
              f" purposes: {', '.join(rep['purposes']) or '-'};"
              f" models: {', '.join(rep['models']) or '-'}")
    t = Table(title="datasets touched")
    t.add_column("table", no_wrap=True)
    for col in ("reads", "writes", "rows"):
        t.add_column(col, justify="right")
    t.add_column("columns read")
    t.add_column("masked (strategy)")
    t.add_column("last (UTC)", no_wrap=True)
    for e in rep["tables"]:
        t.add_row(e["table"], str(e["reads"]), str(e["writes"]), str(e["rows"]),
                  ", ".join(e["columns"]),
                  ", ".join(f"{k} ({v.split(':')[0]})" for k, v in sorted(e["masked"].items())),
                  (e["last"] or "")[11:19])
    con.print(t)
    if rep["denied"]:
        d = Table(title="denied")
        d.add_column("time (UTC)", no_wrap=True)
        d.add_column("statement")
        d.add_column("rules")
        for x in rep["denied"]:
            d.add_row((x["ts"] or "")[11:19], x["summary"] or "", ", ".join(x["rules"] or []))
        con.print(d)
    for a in rep["approvals"]:
        con.print(f"approval {a['request']}: {a['summary']} ({a['outcome']})")


@main.group()
def approvals() -> None:
    """List, approve or deny pending approval requests.

    The store is the one GOVERNED_DB_APPROVALS_DSN (PostgreSQL) or the [approvals] table of
    the GOVERNED_DB_POLICY file selects; otherwise the local file store.
    """


def _policy() -> Any:
    """The policy of GOVERNED_DB_POLICY (else the built-in default); exit 2 when unusable."""
    import os

    from ..policy import default_policy, load_policy

    path = os.environ.get("GOVERNED_DB_POLICY")
    try:
        return load_policy(path) if path else default_policy()
    except PolicyError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def _store(policy: Any = None) -> Any:
    from .. import _config

    try:
        return _config.approvals(policy if policy is not None else _policy())
    except PolicyError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@approvals.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include decided and expired requests.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document per request.")
def approvals_list(show_all: bool, as_json: bool) -> None:
    """Pending approval requests, and TAMPERED ones (stored text that is not what governed_db
    filed: never approvable); --all: decided and expired ones too.

    \b
    Examples:
      governed-db approvals list
      governed-db approvals list --all --json
    """
    from ..approvals import TAMPERED
    from .approvals_view import print_requests

    reqs = _store().list()
    print_requests([r for r in reqs if show_all or r.get("status") in ("pending", TAMPERED)],
                   as_json, _console())


def approver_option_values(approver: str | None, token_file: str | None) -> tuple[
        str | None, str | None]:
    """(name, token) from --as / --token-file / $GOVERNED_DB_APPROVER_TOKEN: a token, when
    given, wins over an --as that came from the environment; both on the command line is an
    error (approver_identity says so)."""
    import os

    from ..approvals import APPROVER_TOKEN_ENV, read_token_file

    token = read_token_file(token_file) if token_file else os.environ.get(APPROVER_TOKEN_ENV)
    if token is not None and approver is not None:
        ctx = click.get_current_context()
        if ctx.get_parameter_source("approver") is not click.core.ParameterSource.COMMANDLINE:
            approver = None
    return approver, token


def _decide(request_id: str, approver: str | None, token_file: str | None, approve: bool,
            note: str | None) -> None:
    from ..approvals import approver_identity
    from ..errors import IdentityError

    policy = _policy()
    try:
        name, token = approver_option_values(approver, token_file)
        ident = approver_identity(name=name, token=token, policy=policy)
        req = _store(policy).decide(request_id, ident, approve=approve, note=note,
                                    policy=policy)
    except (StatementDenied, PolicyError, IdentityError) as exc:
        click.echo(f"refused: {exc}", err=True)
        sys.exit(1)
    who = ident.label + (f" (verified: {ident.issuer} subject {ident.subject})"
                         if ident.verified else "")
    click.echo(f"{req['id']} {req['status']} by {who}")


_AS_HELP = ("The approver's identity (kind:id or id of a human); refused when the policy"
            " requires verified approvers.")
_TOKEN_HELP = ("File holding the approver's signed token (default: $GOVERNED_DB_APPROVER_TOKEN),"
               " verified with the policy's [identity.oidc].")


@approvals.command("approve")
@click.argument("request_id")
@click.option("--as", "approver", envvar="GOVERNED_DB_IDENTITY", help=_AS_HELP)
@click.option("--token-file", type=click.Path(dir_okay=False), help=_TOKEN_HELP)
@click.option("--note")
def approvals_approve(request_id: str, approver: str | None, token_file: str | None,
                      note: str | None) -> None:
    """Approve REQUEST_ID (never your own request; never as an ai_agent).

    The identical statement then runs once before the approval expires.

    \b
    Examples:
      governed-db approvals approve 3f9c2a1b0d4e5f60 --as human:maria --note "ok for today"
      governed-db approvals approve 3f9c2a1b0d4e5f60 --token-file ~/.maria.jwt
    """
    _decide(request_id, approver, token_file, True, note)


@approvals.command("deny")
@click.argument("request_id")
@click.option("--as", "approver", envvar="GOVERNED_DB_IDENTITY", help=_AS_HELP)
@click.option("--token-file", type=click.Path(dir_okay=False), help=_TOKEN_HELP)
@click.option("--note")
def approvals_deny(request_id: str, approver: str | None, token_file: str | None,
                   note: str | None) -> None:
    """Deny REQUEST_ID (a waiting statement is then denied; do not retry it).

    \b
    Example:
      governed-db approvals deny 3f9c2a1b0d4e5f60 --as human:maria --note "too broad"
    """
    _decide(request_id, approver, token_file, False, note)


@main.group()
def policy() -> None:
    """Check and print policies."""


@policy.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--dsn", envvar="GOVERNED_DB_DSN",
              help="Also check tables, columns and functions against this database (read only).")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON document.")
@click.option("--strict", is_flag=True, help="Warnings fail the check too (exit 1).")
@click.option("-q", "--quiet", is_flag=True,
              help="Print only errors and warnings (not the summary of what each kind may do).")
def policy_check(file: str, dsn: str | None, as_json: bool, strict: bool, quiet: bool) -> None:
    """Check a policy file: every error and warning at once, each at FILE:LINE:COLUMN.

    Errors: what the loader rejects, unknown keys, rule ids, parameters, statement kinds,
    PostgreSQL function and setting names (with the name you probably meant), a configured
    key file that does not exist (relative paths are relative to the policy file); with
    --dsn, tables and columns the database does not have. Warnings: rules that can never
    fire and overrides that narrow a built-in rule. Then what the policy lets each identity
    kind do (reads, writes, DDL; what needs approval).

    \b
    Exit codes: 0 no errors (warnings allowed unless --strict), 1 errors (or warnings with
    --strict), 2 usage error, unreadable file or unreachable database.

    \b
    Examples:
      governed-db policy check policy.toml
      governed-db policy check policy.toml --strict -q        # in CI
      governed-db policy check policy.toml --dsn "$DATABASE_URL" --json
    """
    from ..policy import check_policy

    try:
        result = check_policy(file, dsn=dsn)
    except PolicyError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - psycopg errors: the database is unreachable
        import psycopg

        if not isinstance(exc, psycopg.Error):
            raise
        click.echo(f"error: --dsn: cannot read the database catalog: {type(exc).__name__}:"
                   f" {exc}", err=True)
        sys.exit(2)
    failed = bool(result.errors) or (strict and bool(result.warnings))
    if as_json:
        doc = result.to_dict()
        doc["strict"] = strict
        doc["exit_code"] = 1 if failed else 0
        click.echo(json.dumps(doc, indent=1))
        sys.exit(1 if failed else 0)
    for problem in (*result.errors, *result.warnings):
        click.echo(f"{problem.level}: {problem.location(file)}: {problem.message}", err=True)
    if result.errors:
        click.echo(f"FAILED: {file}: {len(result.errors)} error(s), {len(result.warnings)}"
                   " warning(s)", err=True)
        sys.exit(1)
    p = result.policy
    assert p is not None  # loaded: a policy with errors exited above
    if strict and result.warnings:
        click.echo(f"FAILED: {file}: {len(result.warnings)} warning(s) (--strict)", err=True)
        sys.exit(1)
    if quiet:
        return
    from ..policy._check import render_allows

    layered = ("extends the built-in default" if p.extends == "default"
               else "starts empty (extends = \"none\")")
    warned = f", {len(result.warnings)} warning(s)" if result.warnings else ""
    checked = ", tables and columns checked against the database" if result.catalog_checked \
        else ""
    click.echo(f"OK: {file}: policy {p.name!r} ({p.mode}), {layered}, {len(p.rules)} rules,"
               f" {len(p.masking.columns)} masking rules, version {p.version_tag}{checked}"
               f"{warned}")
    click.echo("What each identity kind may do (sample statements on an ordinary table):")
    for line in render_allows(result.allows, observe=p.mode == "observe"):
        click.echo(line)


def _load_policy_echoing_warnings(file: str) -> Any:
    import warnings

    from ..policy import PolicyWarning, load_policy

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PolicyWarning)
        try:
            p = load_policy(file)
        except PolicyError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    return p


@policy.command("show")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--effective", is_flag=True,
              help="Print the merged policy (built-in default + FILE) with each rule's origin.")
def policy_show(file: str, effective: bool) -> None:
    """Print a policy file; with --effective, what actually applies after layering."""
    from .policy_show import render_effective

    p = _load_policy_echoing_warnings(file)
    if effective:
        click.echo(render_effective(p), nl=False)
    else:
        click.echo(Path(file).read_text(encoding="utf-8"), nl=False)


@policy.command("show-default")
def policy_show_default() -> None:
    """Print the built-in default profile (copy it to start your own)."""
    from ..policy import default_policy_text

    click.echo(default_policy_text(), nl=False)


@policy.command("rules")
def policy_rules() -> None:
    """The rule catalogue: every permanent rule id and what it checks."""
    from ..rules import catalogue_markdown

    click.echo(catalogue_markdown())


@main.command()
@click.argument("dsn")
@click.option("--sample", default=200, show_default=True, help="Rows sampled per table.")
def scan(dsn: str, sample: int) -> None:
    """Find likely PII columns (names + sampled values) and print a proposed policy.

    \b
    Example:
      governed-db scan "host=db dbname=shop user=auditor" > masking.toml
    """
    from .scan import run_scan

    sys.exit(run_scan(dsn, sample))


# Commands in their own modules (registered here, one line each).
from .export import audit_export  # noqa: E402

audit.add_command(audit_export)
from .replay import policy_replay  # noqa: E402

policy.add_command(policy_replay)
from .approvals_view import approvals_prune, approvals_show  # noqa: E402

approvals.add_command(approvals_show)
approvals.add_command(approvals_prune)
from .console import console as _console_command  # noqa: E402

main.add_command(_console_command)
from .mcp import mcp_command  # noqa: E402

main.add_command(mcp_command)

if __name__ == "__main__":  # pragma: no cover
    main()
