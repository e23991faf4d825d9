"""Integrations with libraries that drive psycopg for you (SQLAlchemy, LangChain, LlamaIndex)."""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["governed_url"]


def governed_url(dsn: str) -> str:
    """A ``postgresql+governed://`` SQLAlchemy URL for a libpq DSN (``host=... dbname=...``)
    or a ``postgresql://`` URL."""
    if "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        return "postgresql+governed://" + rest if scheme.startswith("postgres") else dsn
    parts = [p.split("=", 1) for p in dsn.split()]
    return "postgresql+governed://?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in parts)
