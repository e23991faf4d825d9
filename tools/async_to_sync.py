#!/usr/bin/env python
"""Generate the sync connection and cursor classes from their async source.

The async modules (``governed_db/_connection_async.py``, ``governed_db/_cursor_async.py``)
are the only ones written by hand; their sync twins are derived from them so the two cannot
drift apart. Usage::

    python tools/async_to_sync.py           # rewrite the generated files
    python tools/async_to_sync.py --check   # exit 1 (with a diff) when one is not current

The conversion works on tokens, so comments, layout and docstrings survive as written:

* ``async def`` / ``async with`` / ``async for`` lose ``async``; ``await`` is dropped;
* names are renamed by :data:`NAMES` (``AsyncConnection`` -> ``Connection``,
  ``asynccontextmanager`` -> ``contextmanager``, the module names ...), in code, strings
  (``__all__``, docstrings) and comments alike;
* a line ending in ``# async only`` is dropped, and so is everything from a line
  ``# async only: begin`` to a line ``# async only: end`` (say on the begin line why the
  sync side needs nothing there);
* continuation lines aligned under an opening bracket are moved left by as much as the line
  that opened it became shorter, so hanging arguments stay aligned.

The sync side is the async side with the asynchrony removed: behaviour that must differ is
written once, in the async source, inside an ``async only`` block that says why. The test
``tests/test_async_to_sync.py`` runs ``--check``, so a stale generated file fails the suite.
"""

from __future__ import annotations

import argparse
import difflib
import io
import re
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# async source -> generated sync file (relative to the repository root)
PAIRS = {
    "governed_db/_connection_async.py": "governed_db/_connection.py",
    "governed_db/_cursor_async.py": "governed_db/_cursor.py",
}

NAMES = {
    "AsyncConnection": "Connection",
    "AsyncCursor": "Cursor",
    "AsyncClientCursor": "ClientCursor",
    "AsyncRawCursor": "RawCursor",
    "AsyncServerCursor": "ServerCursor",
    "AsyncRawServerCursor": "RawServerCursor",
    "AsyncCopy": "Copy",
    "AsyncPipeline": "Pipeline",
    "AsyncTransaction": "Transaction",
    "AsyncIterator": "Iterator",
    "AsyncGenerator": "Generator",
    "asynccontextmanager": "contextmanager",
    "_AsyncCopyMixin": "_CopyMixin",
    "_AsyncCursorBase": "_CursorBase",
    "AsyncRowFactory": "RowFactory",
    "AsyncWriter": "Writer",
    "governed_async_cursor_class": "governed_cursor_class",
    "_cursor_async": "_cursor",
    "_connection_async": "_connection",
}
# prose in docstrings and comments: "the async cursor" -> "the cursor"
_PROSE = re.compile(r"\b(?:([Aa])n? )?async (?=[a-z])")
_WORDS = re.compile(r"\b(" + "|".join(sorted(NAMES, key=len, reverse=True)) + r")\b")

# tokens whose text is prose or names in quotes (f-strings are split into parts from 3.12)
_TEXT = {tokenize.STRING, tokenize.COMMENT, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}

BEGIN, END, LINE = "# async only: begin", "# async only: end", "# async only"


def header(source: str) -> str:
    return (f"# Generated from {Path(source).name} by tools/async_to_sync.py: do not edit.\n"
            "# Change the async source and run `python tools/async_to_sync.py`.\n")


def _drop_async_only(text: str) -> str:
    out: list[str] = []
    skipping = closed = False
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        stripped = line.strip()
        if closed and not stripped and out and not out[-1].strip():
            continue  # the block stood between blank lines: keep one of them
        closed = False
        if stripped.startswith(BEGIN):
            if skipping:
                raise SyntaxError(f"line {number}: {BEGIN!r} inside an async-only block")
            skipping = True
            continue
        if stripped == END:
            if not skipping:
                raise SyntaxError(f"line {number}: {END!r} without {BEGIN!r}")
            skipping, closed = False, True
            continue
        if skipping or line.rstrip().endswith(LINE):
            continue
        out.append(line)
    if skipping:
        raise SyntaxError(f"{BEGIN!r} without {END!r}")
    return "".join(out)


def _text(s: str) -> str:
    s = _WORDS.sub(lambda m: NAMES[m.group(1)], s)
    return _PROSE.sub(lambda m: m.group(1) + " " if m.group(1) else "", s)


def convert(text: str, source: str) -> str:
    """The sync module for the async module ``text`` (named ``source`` in the header)."""
    text = _drop_async_only(text)
    lines = text.splitlines(keepends=True)
    # edits[row] = [(start col, end col, replacement)]
    edits: dict[int, list[tuple[int, int, str]]] = {}
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    for i, tok in enumerate(tokens):
        (row, col), (erow, ecol) = tok.start, tok.end
        if tok.type == tokenize.NAME and tok.string in ("async", "await"):
            nxt = tokens[i + 1]
            if tok.string == "async" and nxt.string not in ("def", "with", "for"):
                continue
            end = nxt.start[1] if nxt.start[0] == row else ecol
            edits.setdefault(row, []).append((col, end, ""))
        elif tok.type == tokenize.NAME and tok.string in NAMES:
            edits.setdefault(row, []).append((col, ecol, NAMES[tok.string]))
        elif tok.type in _TEXT and row == erow:
            new = _text(tok.string)
            if new != tok.string:
                edits.setdefault(row, []).append((col, ecol, new))
        elif tok.type == tokenize.STRING:  # a multi-line string: line by line
            for r in range(row, erow + 1):
                line = lines[r - 1]
                a = col if r == row else 0
                b = ecol if r == erow else len(line.rstrip("\n"))
                new = _text(line[a:b])
                if new != line[a:b]:
                    edits.setdefault(r, []).append((a, b, new))
    # opened[row]: the brackets (row, column) still open where physical line ``row`` starts
    opened: dict[int, list[tuple[int, int]]] = {}
    depth: list[tuple[int, int]] = []  # (row, col) of unclosed brackets
    for tok in tokens:
        if tok.type == tokenize.OP and tok.string in "([{":
            depth.append(tok.start)
        elif tok.type == tokenize.OP and tok.string in ")]}":
            depth.pop()
        elif tok.type in (tokenize.NL, tokenize.NEWLINE) and depth:
            opened.setdefault(tok.start[0] + 1, list(depth))
    out: list[str] = []
    for row, line in enumerate(lines, 1):
        new = line
        for a, b, repl in sorted(edits.get(row, ()), reverse=True):
            new = new[:a] + repl + new[b:]
        moved = _shift_of(row, opened, edits, lines)
        if moved > 0 and not new[:moved].strip():
            new = new[moved:]
        out.append(new)
    return header(source) + "".join(out)


def _shift_of(row: int, opened: dict[int, list[tuple[int, int]]],
              edits: dict[int, list[tuple[int, int, str]]], lines: list[str]) -> int:
    """How far left continuation line ``row`` must move to stay aligned under the bracket it
    was aligned under (that bracket's line may itself be such a continuation line)."""
    line = lines[row - 1]
    indent = len(line) - len(line.lstrip(" "))
    for brow, bcol in reversed(opened.get(row, ())):
        if indent == bcol + 1:
            return sum((b - a) - len(repl) for a, b, repl in edits.get(brow, ())
                       if b <= bcol) + _shift_of(brow, opened, edits, lines)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 when a generated file is not current")
    args = parser.parse_args(argv)
    stale = 0
    for source, target in PAIRS.items():
        want = convert((ROOT / source).read_text(encoding="utf-8"), source)
        path = ROOT / target
        have = path.read_text(encoding="utf-8") if path.exists() else ""
        if have == want:
            continue
        if args.check:
            stale += 1
            sys.stdout.writelines(difflib.unified_diff(
                have.splitlines(keepends=True), want.splitlines(keepends=True),
                f"{target} (as committed)", f"{target} (generated from {source})"))
        else:
            path.write_text(want, encoding="utf-8")
            print(f"wrote {target}")
    if stale:
        print(f"\n{stale} generated file(s) not current: run `python tools/async_to_sync.py`"
              " and commit the result", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
