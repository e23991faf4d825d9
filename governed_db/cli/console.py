"""``governed-db console``: serve the web console (approvals queue, audit explorer)."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import click

from ..errors import IdentityError, PolicyError, StatementDenied

__all__ = ["console"]

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@click.command("console")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback needs --allow-remote.")
@click.option("--port", default=8765, show_default=True, type=int,
              help="Port to listen on (0: any free port).")
@click.option("--log", "logs", multiple=True,
              help="Audit log file or postgresql:// audit store (repeatable). Default:"
                   " GOVERNED_DB_AUDIT, else the policy's, else the default location.")
@click.option("--as", "approver", envvar="GOVERNED_DB_APPROVER",
              help="The person deciding in this console (kind:id, e.g. human:maria)."
                   " Without it the approvals queue is read-only.")
@click.option("--token-file", type=click.Path(dir_okay=False),
              help="File holding the approver's signed token instead of --as (default:"
                   " $GOVERNED_DB_APPROVER_TOKEN); required when the policy requires verified"
                   " approvers. Its expiry ends the console's decisions.")
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False),
              help="Audit signing public key, to show signature status.")
@click.option("--allow-remote", is_flag=True,
              help="Allow binding a non-loopback address (put TLS in front of it).")
def console(host: str, port: int, logs: tuple[str, ...], approver: str | None,
            token_file: str | None, public_key: str | None, allow_remote: bool) -> None:
    """Serve the web console and print its URL with the access token.

    Every request needs the token (printed once, exchanged for a session cookie);
    state-changing forms need a CSRF token; approvers obey the CLI's rules (never the
    requester, never an ai_agent).

    \b
    Example:
      governed-db console --as human:maria --log audit.jsonl --public-key audit-signing.pub
    """
    try:
        import uvicorn

        from ..console import ConsoleSettings, create_app
    except ImportError as exc:
        click.echo(f"error: the console needs its extra: pip install 'governed-db[console]'"
                   f" ({exc.name} is missing)", err=True)
        sys.exit(2)
    from .. import _config
    from ..approvals import approver_identity
    from . import approver_option_values

    if host not in _LOOPBACK and not allow_remote:
        click.echo(f"error: refusing to bind {host}: the console binds loopback unless"
                   " --allow-remote is given (and then belongs behind TLS)", err=True)
        sys.exit(2)
    try:
        policy = _config.resolve_policy(None)
        name, token = approver_option_values(approver, token_file)
        ident = None
        if name is not None or token is not None:
            ident = approver_identity(name=name, token=token, policy=policy)
    except (PolicyError, StatementDenied, IdentityError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if not logs:
        path = os.environ.get("GOVERNED_DB_AUDIT") or policy.audit.get("path") \
            or str(_config.state_dir() / "audit.jsonl")
        logs = (str(path),)
    settings = ConsoleSettings(logs=logs, approver=ident, policy=policy, public_key=public_key)
    app = create_app(settings)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        click.echo(f"error: cannot listen on {host}:{port}: {exc.strerror}", err=True)
        sys.exit(2)
    sock.listen(64)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"http://{shown}:{bound}/?token={settings.token}", nl=True)
    sys.stdout.flush()
    config: Any = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
