"""Where a key or a table stands in TOML text, for error messages that name a line.

``tomllib`` gives no positions; these find the first line that names a key and the lines of
each ``[[header]]``. Shared by the policy loader and the section checks of the packages that
own a policy section (``[mcp]``, ``[identity]``), so those need not import the loader.
"""

from __future__ import annotations

import re

__all__ = ["key_line", "table_lines"]


def table_lines(text: str, header: str) -> list[int]:
    """1-based line numbers of each ``[[header]]`` occurrence."""
    pattern = re.compile(r"^[ \t]*\[\[\s*" + re.escape(header) + r"\s*\]\]", re.M)
    return [text.count("\n", 0, m.start()) + 1 for m in pattern.finditer(text)]


def key_line(text: str, key: str) -> int | None:
    """1-based line of the first line that starts with ``key`` (or a table header naming it)."""
    m = re.search(r"^[ \t]*\[?\[?\s*" + re.escape(key) + r"\b", text, re.M)
    return text.count("\n", 0, m.start()) + 1 if m else None
