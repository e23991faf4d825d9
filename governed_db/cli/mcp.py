"""``governed-db mcp``: the governed MCP server (stdio by default, streamable HTTP with --http)."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import PolicyError

__all__ = ["mcp_command"]


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise click.BadParameter("must be HOST:PORT, e.g. 127.0.0.1:8765")
    return host, int(port)


@click.command("mcp")
@click.option("--dsn", required=True, envvar="GOVERNED_DB_DSN",
              help="PostgreSQL connection string (or GOVERNED_DB_DSN).")
@click.option("--identity", "identity_text", envvar="GOVERNED_DB_IDENTITY",
              help="KIND:ID the server acts as (default: the policy's [mcp] identity, else"
                   " ai_agent:mcp).")
@click.option("--purpose", help="Why the agent acts (recorded with every statement).")
@click.option("--model", help="The AI model behind the client.")
@click.option("--on-behalf-of", "on_behalf_of", help="The person the agent acts for.")
@click.option("--role", "roles", multiple=True, help="A policy role (repeatable).")
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False),
              help="Policy TOML (default: GOVERNED_DB_POLICY, else the built-in profile).")
@click.option("--http", "http", help="Serve streamable HTTP on HOST:PORT instead of stdio.")
@click.option("--allow-remote", is_flag=True,
              help="Allow a non-loopback --http address (bearer tokens are then required).")
@click.option("--max-rows", type=click.IntRange(1), help="Rows shown per result.")
@click.option("--max-result-bytes", type=click.IntRange(1), help="Bytes of values per result.")
@click.option("--statement-timeout", help='Per statement, e.g. "15s" or "500ms".')
@click.option("--statements-per-minute", type=click.IntRange(1))
@click.option("--rows-per-hour", type=click.IntRange(1))
def mcp_command(dsn: str, identity_text: str | None, purpose: str | None, model: str | None,
                on_behalf_of: str | None, roles: tuple[str, ...], policy_path: str | None,
                http: str | None, allow_remote: bool, max_rows: int | None,
                max_result_bytes: int | None, statement_timeout: str | None,
                statements_per_minute: int | None, rows_per_hour: int | None) -> None:
    """Serve governed PostgreSQL tools to an MCP client (Claude Desktop, Cursor, VS Code...).

    Tools: list_schemas, list_tables, describe_table, query, explain, request_approval,
    approval_status. Every statement is checked by the policy, masked and audited as the
    configured identity, with the MCP request id and client recorded. Limit flags can only
    tighten the policy's [mcp] limits.

    \b
    Examples:
      governed-db mcp --dsn postgresql://agent@db/shop --identity ai_agent:support-bot
      governed-db mcp --dsn "$DSN" --http 127.0.0.1:8765 --policy policy.toml
    """
    try:
        import mcp  # noqa: F401
    except ImportError:
        click.echo("error: the MCP server needs the official SDK: pip install"
                   " 'governed-db[mcp]'", err=True)
        sys.exit(2)
    import asyncio

    from .. import _config
    from ..identity import Identity
    from ..mcp._settings import McpSettings, parse_duration_ms
    from ..mcp.server import configure_logging, logger, serve

    configure_logging()
    try:
        policy = _config.resolve_policy(policy_path)
        settings = McpSettings.from_policy(policy)
        timeout_ms = None
        if statement_timeout is not None:
            try:
                timeout_ms = parse_duration_ms(statement_timeout)
            except ValueError:
                raise click.BadParameter('must be a duration such as "15s"',
                                         param_hint="--statement-timeout") from None
            if timeout_ms < 1:
                raise click.BadParameter("must be more than zero",
                                         param_hint="--statement-timeout")
        limits = settings.limits.tightened(
            max_rows=max_rows, max_result_bytes=max_result_bytes,
            statement_timeout_ms=timeout_ms, statements_per_minute=statements_per_minute,
            rows_per_hour=rows_per_hour)
        if identity_text:
            base = Identity.parse(identity_text)
        elif settings.identity is not None:
            base = settings.identity
        else:
            base = Identity("mcp", "ai_agent")
            logger.warning("no identity configured (--identity, GOVERNED_DB_IDENTITY or [mcp]"
                           " identity): acting as ai_agent:mcp")
        changes: dict[str, Any] = {k: v for k, v in (("purpose", purpose), ("model", model),
                                                     ("on_behalf_of", on_behalf_of)) if v}
        if roles:
            changes["roles"] = roles
        base = base.evolve(**changes) if changes else base
        if base.kind != "ai_agent":
            logger.warning("serving as a %s identity: MCP clients are driven by a model;"
                           " ai_agent is the kind the policy restricts for that", base.kind)
        import attrs

        settings = attrs.evolve(settings, limits=limits)
        address = _host_port(http) if http else None
        asyncio.run(serve(dsn, policy=policy, settings=settings, identity=base, http=address,
                          allow_remote=allow_remote))
    except PolicyError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        click.echo(f"error: {type(exc).__name__}: {exc.strerror or exc}", err=True)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - e.g. the database is unreachable at start-up
        import psycopg

        if isinstance(exc, psycopg.Error):
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            click.echo(f"error: cannot connect to the database ({type(exc).__name__}:"
                       f" {first})", err=True)
            sys.exit(2)
        raise

