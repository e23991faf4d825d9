"""The governed MCP server on the official SDK (``mcp``): stdio or streamable HTTP.

``governed-db mcp --dsn DSN`` runs :func:`serve`. The SDK's low-level ``Server`` carries the
protocol (handshake, JSON-RPC, transports, bearer middleware); this module only maps
``tools/list`` and ``tools/call`` onto :class:`~governed_db.mcp._tools.GovernedTools`, and
says who is calling:

* stdio: the one configured identity (one client per process);
* HTTP: the identity the request's bearer token maps to (``[[mcp.tokens]]``, or a verified
  JWT), else — only on a loopback address with no token table — the configured identity.

Every call's statements carry the MCP request id, the tool name, and the client's name and
version from the initialize handshake (``acting_as`` with a derived identity).
"""

from __future__ import annotations

import ipaddress
import logging
import sys
from typing import Any

from ..errors import PolicyError
from ..identity import Identity
from ._auth import BearerAuth, verifiers_for, with_refusal_reasons
from ._tools import TOOL_SPECS, CallInfo, GovernedTools

__all__ = ["build_server", "is_loopback", "serve", "serve_http", "serve_stdio",
           "transport_security"]

logger = logging.getLogger("governed_db.mcp")
SERVER_NAME = "governed-db"
INSTRUCTIONS = (
    "A governed PostgreSQL connection. Start with list_tables and describe_table (it says "
    "which columns come back masked). Use query for one SQL statement at a time, with %s "
    "placeholders and params for values. Denials name the policy rule and say whether a "
    "rewrite can help; statements that need approval return a request id that a person "
    "approves; check it with approval_status. Limits (rows, bytes, time, budget) are fixed "
    "by the operator.")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("governed-db")
    except PackageNotFoundError:
        return "0"


def _text(value: Any, limit: int = 100) -> str | None:
    """A client-supplied label as it may appear in audit records: printable and short."""
    if not isinstance(value, str) or not value:
        return None
    clean = "".join(ch for ch in value if ch.isprintable())
    return clean[:limit] or None


def build_server(tools: GovernedTools, identity: Identity, *, transport: str = "stdio",
                 auth: BearerAuth | None = None) -> Any:
    """The SDK ``Server`` with the governed tools, serving as ``identity`` (or the bearer
    token's identity when ``auth`` is given)."""
    import mcp_types as types
    from mcp.server import Server

    tool_list = [types.Tool(name=t["name"], description=t["description"],
                            input_schema=t["input_schema"],
                            annotations=types.ToolAnnotations.model_validate(t["annotations"]))
                 for t in TOOL_SPECS]

    async def on_list_tools(ctx: Any, params: Any) -> Any:
        return types.ListToolsResult(tools=tool_list)

    async def on_call_tool(ctx: Any, params: Any) -> Any:
        caller = identity
        if auth is not None:
            from mcp.server.auth.middleware.auth_context import get_access_token

            token = get_access_token()
            if token is None:
                request = getattr(ctx, "request", None)
                user = getattr(request, "scope", {}).get("user") if request is not None else None
                token = getattr(user, "access_token", None)
            verified = auth.identity(token)
            if verified is None:
                # The middleware lets no unauthenticated request through; if one got here
                # anyway, refuse rather than fall back to the default identity.
                return types.CallToolResult(content=[types.TextContent(
                    text="not authenticated: send a bearer token this server knows")],
                    is_error=True)
            caller = verified
        info = _call_info(ctx, transport)
        out = await tools.call(params.name, params.arguments, caller, info)
        return types.CallToolResult(content=[types.TextContent(text=out.text)],
                                    structured_content=out.structured, is_error=out.is_error)

    return Server(SERVER_NAME, version=_version(), instructions=INSTRUCTIONS,
                  on_list_tools=on_list_tools, on_call_tool=on_call_tool)


def _call_info(ctx: Any, transport: str) -> CallInfo:
    client = None
    try:
        cp = ctx.session.client_params
        client = cp.client_info if cp is not None else None
    except Exception:  # noqa: BLE001 - no handshake info: recorded as unknown
        client = None
    session = None
    request = getattr(ctx, "request", None)
    headers = getattr(request, "headers", None)
    if headers is not None:
        session = _text(headers.get("mcp-session-id"), 64)
    rid = ctx.request_id
    return CallInfo(request_id=None if rid is None else _text(str(rid), 64),
                    client_name=_text(getattr(client, "name", None)),
                    client_version=_text(getattr(client, "version", None), 40),
                    session=session, transport=transport)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def _check_database(tools: GovernedTools, identity: Identity) -> None:
    """Connect once at start-up, so a wrong DSN fails now and not at the first tool call."""
    await tools._conn(tools._session(identity))


async def serve_stdio(tools: GovernedTools, identity: Identity) -> None:
    """Serve one client over stdin/stdout until it closes the pipe."""
    from mcp.server.stdio import stdio_server

    await _check_database(tools, identity)
    server = build_server(tools, identity, transport="stdio")
    logger.info("serving stdio as %s", identity.label)
    try:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
    finally:
        await tools.aclose()


async def serve_http(tools: GovernedTools, identity: Identity, host: str, port: int, *,
                     allow_remote: bool = False, ready: Any = None) -> None:
    """Serve streamable HTTP on ``host:port`` (path ``/mcp``).

    Loopback only unless ``allow_remote``; a non-loopback address also needs a token table
    (or JWT settings): an open database endpoint on the network is refused.
    """
    import uvicorn
    from mcp.server.auth.settings import AuthSettings
    from pydantic import AnyHttpUrl

    settings = tools.settings
    verifiers = verifiers_for(settings.tokens, settings.jwt)
    loopback = is_loopback(host)
    if not loopback and not allow_remote:
        raise PolicyError(f"refusing to listen on {host}: not a loopback address; pass"
                          " --allow-remote (and configure [[mcp.tokens]]) to serve a network")
    if not loopback and not verifiers:
        raise PolicyError("serving a non-loopback address needs bearer tokens: add"
                          " [[mcp.tokens]] (or [mcp.jwt]) to the policy")
    auth = BearerAuth(verifiers) if verifiers else None
    if auth is None:
        logger.warning("no [[mcp.tokens]] configured: every local HTTP client acts as %s",
                       identity.label)
    await _check_database(tools, identity)
    server = build_server(tools, identity, transport="http", auth=auth)
    kwargs: dict[str, Any] = {"host": host, "transport_security": transport_security(host, port)}
    if auth is not None:
        url = f"http://{_url_host(host)}:{port}/mcp"
        kwargs.update(token_verifier=auth, auth=AuthSettings(
            issuer_url=AnyHttpUrl(url), resource_server_url=None, required_scopes=[]))
    app = server.streamable_http_app(**kwargs)
    if auth is not None:
        app = with_refusal_reasons(app)  # 401s say why (expired, wrong issuer, ...)
    config = uvicorn.Config(app, host=host.strip("[]"), port=port, log_level="warning",
                            access_log=False, lifespan="on")
    userver = uvicorn.Server(config)
    logger.info("serving streamable HTTP on http://%s:%d/mcp (%s)", _url_host(host), port,
                "bearer tokens required" if auth else f"as {identity.label}")
    try:
        await userver.serve()
    finally:
        await tools.aclose()


def transport_security(host: str, port: int) -> Any:
    """DNS-rebinding protection for every bind address, spelled however it was given.

    A web page can make a browser send requests to a loopback server under the page's own
    name (DNS rebinding); only the Host and Origin headers tell. The SDK turns its check on
    for three literal spellings only (``127.0.0.1``, ``localhost``, ``::1``), so
    ``--http 127.0.0.2:P`` or ``[::1]:P`` — loopback, hence served without bearer tokens —
    was open to any page. Here the allow-list is explicit: the address as bound, on this port
    (and, for loopback, the other loopback names a local client may use); anything else gets
    the SDK's refusal. A non-loopback server requires bearer tokens (a browser driven by a
    page has none) and checks its own address too.
    """
    from mcp.server.transport_security import TransportSecuritySettings

    hosts = [f"{_url_host(host.strip('[]'))}:{port}"]
    if is_loopback(host):
        hosts += [f"{name}:{port}" for name in ("127.0.0.1", "localhost", "[::1]")]
    hosts = list(dict.fromkeys(hosts))
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts,
                                     allowed_origins=[f"http://{h}" for h in hosts])


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class _WithholdPayloads(logging.Filter):
    """The SDK's own log records may quote request data (SQL, arguments, values): only the
    place and level are kept; governed_db's records carry no values by construction."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("mcp") and record.levelno < logging.CRITICAL:
            record.msg = f"{record.levelname.lower()} at {record.module}:{record.lineno}" \
                         " (details withheld: they may quote request data)"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def configure_logging(level: int = logging.INFO) -> None:
    """stderr only (stdout is the stdio transport): tool names, request ids, rule ids."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("governed-db mcp: %(levelname)s %(message)s"))
    handler.addFilter(_WithholdPayloads())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("governed_db.mcp").setLevel(level)
    for name in ("mcp", "uvicorn", "uvicorn.error", "httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.WARNING)


async def serve(dsn: str, *, policy: Any, settings: Any, identity: Identity,
                http: tuple[str, int] | None = None, allow_remote: bool = False) -> None:
    """Run the server until the client goes away (stdio) or the process is stopped (HTTP)."""
    tools = GovernedTools(dsn, policy=policy, settings=settings)
    if http is None:
        await serve_stdio(tools, identity)
    else:
        await serve_http(tools, identity, http[0], http[1], allow_remote=allow_remote)
