"""A governed MCP server: the way AI agents reach PostgreSQL, with every guarantee of the library.

``governed-db mcp --dsn DSN [--identity KIND:ID] [--http HOST:PORT]`` (extra
``governed-db[mcp]``, the official ``mcp`` SDK). Tools: ``list_schemas``, ``list_tables``,
``describe_table``, ``query``, ``explain``, ``request_approval``, ``approval_status`` — each a
governed statement path (guardrails, masking, audit) run as one configured identity, with the
MCP request id, tool and client recorded on every statement.

Modules: :mod:`._settings` (the ``[mcp]`` policy table, limits), :mod:`._budget` (statements
per minute, rows per hour), :mod:`._tools` (the tools, SDK-free), :mod:`._auth` (bearer
tokens), :mod:`.server` (the SDK server, stdio and streamable HTTP). Nothing here imports the
SDK until a server is built, so the policy loader can validate ``[mcp]`` without it.
"""

from __future__ import annotations

from ._settings import Limits, McpSettings, TokenEntry

__all__ = ["Limits", "McpSettings", "TokenEntry"]
