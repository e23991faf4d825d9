"""Where each key and value of a TOML document starts (line and column), for messages.

``tomllib`` returns plain dicts without positions, so a mistake could only be reported at the
``[[rules]]`` header it sits under. This is a small scanner of the same text that records the
position of every table header, key and array element under its path in the parsed data:

    [[rules]]                 ("rules", 0)                 -> line 1, column 1
    id = "statement.x"        ("rules", 0, "id")           -> line 2, column 1
    kinds = ["INSERT", "X"]   ("rules", 0, "kinds", 1)     -> line 3, column 20

It only reads text that ``tomllib`` has already accepted, so it need not validate anything;
on text it does not understand it stops and keeps what it found (a message then falls back to
the nearest enclosing key or header, never to a wrong one).
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["Path", "Positions", "index_positions"]

Path = tuple[str | int, ...]
_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class Positions:
    """Positions of a document's keys, headers and array elements, by path."""

    def __init__(self) -> None:
        self._at: dict[Path, tuple[int, int]] = {}

    def __contains__(self, path: Path) -> bool:
        return tuple(path) in self._at

    def __iter__(self) -> Iterator[Path]:
        return iter(self._at)

    def get(self, path: Path) -> tuple[int, int] | None:
        """The (line, column) where ``path`` starts, both 1-based, or None."""
        return self._at.get(tuple(path))

    def nearest(self, path: Path) -> tuple[int, int] | None:
        """The position of ``path``, else of its longest recorded prefix (its key or table)."""
        p = tuple(path)
        while p:
            found = self._at.get(p)
            if found is not None:
                return found
            p = p[:-1]
        return None

    def _set(self, path: Path, line: int, col: int) -> None:
        self._at.setdefault(path, (line, col))


class _Scanner:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.line = 1
        self.col = 1
        self.out = Positions()
        self.arrays: dict[Path, int] = {}  # array-of-tables path -> elements seen

    # -- characters ----------------------------------------------------------------------

    def peek(self, n: int = 0) -> str:
        j = self.i + n
        return self.s[j] if j < len(self.s) else ""

    def take(self) -> str:
        ch = self.s[self.i]
        self.i += 1
        if ch == "\n":
            self.line += 1
            self.col = 1
        else:
            self.col += 1
        return ch

    def skip_blanks(self, newlines: bool) -> None:
        """Skip spaces, tabs, comments (and newlines if asked)."""
        while self.i < len(self.s):
            ch = self.peek()
            if ch in " \t\r" or (newlines and ch == "\n"):
                self.take()
            elif ch == "#":
                while self.i < len(self.s) and self.peek() != "\n":
                    self.take()
            else:
                return

    # -- keys ----------------------------------------------------------------------------

    def key(self) -> list[str]:
        """A bare, quoted or dotted key."""
        parts = []
        while True:
            self.skip_blanks(False)
            ch = self.peek()
            if ch in "\"'":
                parts.append(self.string())
            else:
                start = self.i
                while self.peek() and self.peek() in _BARE:
                    self.take()
                if self.i == start:
                    raise ValueError("key expected")
                parts.append(self.s[start:self.i])
            self.skip_blanks(False)
            if self.peek() != ".":
                return parts
            self.take()

    def string(self) -> str:
        quote = self.take()
        if self.peek() == quote and self.peek(1) == quote:  # multi-line
            self.take()
            self.take()
            buf = []
            while self.i < len(self.s):
                if self.peek() == quote and self.peek(1) == quote and self.peek(2) == quote:
                    self.take()
                    self.take()
                    self.take()
                    while self.peek() == quote:  # up to two quotes may end the content
                        buf.append(self.take())
                    return "".join(buf)
                if quote == '"' and self.peek() == "\\":
                    buf.append(self.take())
                buf.append(self.take())
            raise ValueError("unterminated string")
        buf = []
        while self.i < len(self.s) and self.peek() != quote:
            ch = self.take()
            if ch == "\\" and quote == '"':
                esc = self.take()
                buf.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\"}.get(esc, esc))
            else:
                buf.append(ch)
        if not self.peek():
            raise ValueError("unterminated string")
        self.take()
        return "".join(buf)

    # -- values --------------------------------------------------------------------------

    def value(self, path: Path) -> None:
        ch = self.peek()
        if ch in "\"'":
            self.string()
        elif ch == "[":
            self.take()
            n = 0
            while True:
                self.skip_blanks(True)
                if self.peek() == "]":
                    self.take()
                    return
                self.out._set((*path, n), self.line, self.col)
                self.value((*path, n))
                n += 1
                self.skip_blanks(True)
                if self.peek() == ",":
                    self.take()
                elif self.peek() != "]":
                    raise ValueError("array: , or ] expected")
        elif ch == "{":
            self.take()
            while True:
                self.skip_blanks(False)
                if self.peek() == "}":
                    self.take()
                    return
                self.keyval(path)
                self.skip_blanks(False)
                if self.peek() == ",":
                    self.take()
                elif self.peek() != "}":
                    raise ValueError("inline table: , or } expected")
        else:  # number, boolean, date: up to the next delimiter
            while self.peek() and self.peek() not in ",]}#\n":
                self.take()

    def keyval(self, table: Path) -> None:
        line, col = self.line, self.col
        parts = self.key()
        path: Path = (*table, *parts)
        for k in range(1, len(parts)):  # a.b = 1 also defines table a
            self.out._set((*table, *parts[:k]), line, col)
        self.out._set(path, line, col)
        self.skip_blanks(False)
        if self.peek() != "=":
            raise ValueError("= expected")
        self.take()
        self.skip_blanks(False)
        self.value(path)

    # -- document ------------------------------------------------------------------------

    def resolve(self, parts: list[str]) -> Path:
        """A header's key parts as a data path (array-of-tables parents get their index)."""
        path: Path = ()
        for part in parts:
            path = (*path, part)
            count = self.arrays.get(path)
            if count is not None:
                path = (*path, count - 1)
        return path

    def document(self) -> Positions:
        table: Path = ()
        while True:
            self.skip_blanks(True)
            if self.i >= len(self.s):
                return self.out
            line, col = self.line, self.col
            if self.peek() == "[":
                self.take()
                many = self.peek() == "["
                if many:
                    self.take()
                parts = self.key()
                if many:
                    parent = self.resolve(parts[:-1])
                    where = (*parent, parts[-1])
                    self.arrays[where] = self.arrays.get(where, 0) + 1
                    self.out._set(where, line, col)
                    table = (*where, self.arrays[where] - 1)
                else:
                    table = self.resolve(parts)
                self.out._set(table, line, col)
                for _ in range(2 if many else 1):
                    if self.peek() != "]":
                        raise ValueError("] expected")
                    self.take()
            else:
                self.keyval(table)
            self.skip_blanks(False)
            if self.peek() and self.peek() != "\n":
                raise ValueError("end of line expected")


def index_positions(text: str) -> Positions:
    """Index the positions in TOML ``text`` (best effort: stops at what it cannot read)."""
    scanner = _Scanner(text)
    try:
        return scanner.document()
    except (ValueError, IndexError):
        return scanner.out
