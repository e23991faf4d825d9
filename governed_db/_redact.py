"""Server error and notice text: an allow-list of what may come back (security principle 5).

PostgreSQL formats values into its messages: ``Key (email)=(a@x.com) already exists``,
``invalid input syntax for type integer: "123-45-6789"``, ``cross-database references are not
implemented: "a@x.com"`` (from ``email::regclass``), a JSON cast's ``CONTEXT: JSON data, line 1:
…``, ``Failing row contains (…)``, a PL/pgSQL ``RAISE EXCEPTION '%', ssn``, a ``QUERY:`` built
by a function. Listing the messages that carry data is a deny-list whose missing entry leaks.
The rule here is the other way round: *nothing* of a server message passes unless it is known
to be safe.

How a line of a message (primary, detail, hint, each context line) is judged:

1. It must match one of PostgreSQL's own message templates. The templates are the server's
   message catalogue (msgids of ``postgres-NN.mo`` and ``plpgsql-NN.mo``, shipped as
   ``pg_messages.txt``; regenerate with ``tools/gen_pg_messages.py``); ``%s``, ``%d``, … become
   captures. The fixed text of a template is PostgreSQL's, never data. A line that matches no
   template (``RAISE EXCEPTION 'ssn is %'``, a function's own message) is replaced as a whole
   by ``<redacted>``, unless the whole line is something the caller sent.
2. Every capture must be safe on its own: a whole token of the statement text the caller sent
   on this connection (a string literal's value, a number, an identifier), a catalog
   identifier (relation, column, schema, function, type, constraint or index name in the
   snapshot), or a composite of those (``public.users``, ``leak(integer)``, a column list, a
   type name with its modifier). Numbers from ``%d`` captures pass only in the few templates
   where they are positions (``line %d``). A capture that is not safe is replaced by
   ``<redacted>``; a parenthesized list (``(email)=(…)``, ``Failing row contains (…)``) is
   judged item by item, so the column names stay.
3. Parameters bound separately are *not* a source: they are often the application's values,
   not the statement author's (an agent tool binds what the app supplies). Parts of a literal
   are not a source either: echoing any substring of a sent literal would let a statement
   carrying every three-digit string confirm three digits of a value at a time.

4. A statement that can only compute from its own constants (no relation read or written, only
   built-in functions, nothing opaque: ``Allowed.own``) reaches no sensitive column: its
   messages pass whole, with the in-text value detectors applied as to a result row.

What stays true: the exception class and SQLSTATE are kept (callers branch on them), the
diagnostic fields, ``str(exc)`` and ``exc.pgresult.error_field()`` are redacted alike, and the
``QUERY:`` of function-built SQL (``internal_query``) is dropped. The one residue: a value equal
to a whole literal of the statement comes back, which confirms a guess the caller already made
(one guess per statement, like the predicate probes ``column.disallow-predicate-on-masked``
refuses).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import Any

from .masking import mask_in_text

__all__ = ["REDACTED_TEXT", "Allowed", "RedactedResult", "message_from_fields", "redact_fields",
           "query_excerpt", "redact_line", "redact_text"]

REDACTED_TEXT = "<redacted>"

_SPEC = re.compile(r"%(?:\d+\$)?[-+ #0]*(?:\*|\d+)?(?:\.(?:\*|\d+))?(?:hh|h|ll|l|z|j|t|L)?"
                   r"([sdiuxXcfgeEm%])")
_INT_CONVERSIONS = frozenset("diuxX")
# Templates whose integer captures are positions in text the server reports (line numbers),
# not values computed from data.
_POSITION_NUMBERS = frozenset({
    "PL/pgSQL function %s line %d at %s", "PL/pgSQL function %s line %d %s",
    'SQL function "%s" statement %d', "COPY %s, line %llu", "COPY %s, line %llu, column %s",
    'COPY %s, line %llu, column %s: "%s"', "COPY %s, line %llu, column %s: null input",
    'COPY %s, line %llu: "%s"', "COPY %s, line %s", "COPY %s, line %s, column %s",
    # type modifiers (schema, not data)
    "value too long for type character varying(%d)", "value too long for type character(%d)",
})
# PL/pgSQL statement names in "at %s" context lines (plpgsql_stmt_typename: keywords, not
# translated, so not in the message catalogue).
_PLPGSQL_WORDS = frozenset({
    "RAISE", "RETURN", "EXECUTE", "PERFORM", "OPEN", "FETCH", "CLOSE", "EXIT", "CONTINUE",
    "CALL", "COMMIT", "ROLLBACK", "ASSERT", "IF", "CASE", "LOOP", "WHILE", "FOREACH", "GET",
    "DIAGNOSTICS", "NEXT", "QUERY", "STACKED", "NULL", "FOR", "MOVE", "WITH", "SELECT",
})
# Words of type names as format_type() prints them (the catalog has typname only).
_TYPE_WORDS = frozenset({
    "character", "varying", "timestamp", "time", "with", "without", "zone", "double",
    "precision", "bit", "integer", "smallint", "bigint", "boolean", "real", "numeric",
    "interval", "decimal", "char", "national", "null", "true", "false", "default",
})
_TYPE_SHAPE = re.compile(r"[a-z_][a-z0-9_ .\"]*(?:\(\d+(?:,\d+)?\))?(?:\[\])*")
# The most pieces (words between separators) a captured name, type or signature may have
# when it is not the caller's own text: ``timestamp without time zone``, ``f(text, text, int)``.
_MAX_PIECES = 4
_MAX_ARGS = 8
_SIGNATURE = re.compile(r"([^(),]+)\(([^()]*)\)")
_PIECES = re.compile(r"::|[\s(),.\[\]\"*=]+")


# Which captures are NAMES (value-free by the message's shape): the fixed text right before
# the capture names a kind of catalog object (``relation "%s"``, ``constraint "%s"``,
# ``function %s``, ``type %s``, ``Key (%s)=``) or a list of argument types. Every other capture
# is a VALUE slot: the server may have put (a piece of) an input value there (``invalid symbol
# "%.*s" found while decoding``, ``invalid input value for enum mood: "%s"``, ``Token "%s" is
# invalid``, a regex or date/time fragment, ...). A value slot passes only a whole token the
# caller sent: never because it happens to equal a catalog identifier or a type word, nor
# because it is punctuation (``"."`` at a chosen position of an e-mail is one character of it;
# attack F11). An allow-list of shapes, so a message not listed here is judged as a value.
_NAME_NOUNS = frozenset({
    "relation", "relations", "table", "tables", "column", "columns", "constraint", "index",
    "function", "functions", "procedure", "routine", "aggregate", "type", "types", "schema",
    "database", "role", "sequence", "view", "trigger", "operator", "operators", "extension",
    "collation", "domain", "policy", "rule", "cursor", "statement", "portal", "savepoint",
    "tablespace", "publication", "subscription", "server", "wrapper", "family", "class",
    "conversion", "parameter", "key", "attribute", "enum", "event", "language", "cast",
    "transform", "object", "user", "mapping", "partition", "method", "template", "dictionary",
    "configuration", "parser", "channel", "variable", "field", "label", "name", "identifier",
    "setting", "option", "exist:", "argument", "arguments", "for", "of", "in", "on", "to",
    "copy",
})
_DENIES_NAME = re.compile(r"does not exist|unrecognized|not found|unknown|could not find"
                          r"|no such|not recognized|invalid [a-z ]*name", re.I)
_NAME_TAIL = re.compile(r"([A-Za-z_:]+)\s*[\"(]*\s*$")


def _name_slot(before: str) -> bool:
    m = _NAME_TAIL.search(before)
    return m is not None and m.group(1).lower() in _NAME_NOUNS


class _Template:
    __slots__ = ("text", "_regex", "kinds", "names", "anchor", "key", "fixed")

    def __init__(self, text: str) -> None:
        self.text = text
        self._regex: re.Pattern[str] | None = None
        kinds: list[str] = []
        names: list[bool] = []
        literal: list[str] = []
        pos = 0
        for m in _SPEC.finditer(text):
            literal.append(text[pos:m.start()])
            conv = m.group(1)
            if conv == "%":
                literal.append("%")
            else:
                kinds.append("d" if conv in _INT_CONVERSIONS or conv in "fgeE" else "s")
                names.append(_name_slot(text[:m.start()]))
            pos = m.end()
        literal.append(text[pos:])
        self.kinds = tuple(kinds)
        if _DENIES_NAME.search(text):
            # "relation "%s" does not exist", "unrecognized configuration parameter "%s"":
            # the capture names nothing in the catalog, it is input (``value::regclass``,
            # ``current_setting(value)``): a value slot, whatever noun precedes it
            names = [False] * len(names)
        self.names = tuple(names)
        self.anchor = max(literal, key=len)
        words = _WORD.findall(" ".join(literal))
        self.key = max(words, key=len) if words else ""
        self.fixed = sum(len(c) for c in literal)

    @property
    def regex(self) -> re.Pattern[str]:
        """Compiled on first use: only templates whose fixed words occur are ever tried."""
        if self._regex is None:
            parts: list[str] = []
            pos = 0
            for m in _SPEC.finditer(self.text):
                parts.append(re.escape(self.text[pos:m.start()]))
                conv = m.group(1)
                if conv == "%":
                    parts.append("%")
                elif conv in _INT_CONVERSIONS:
                    parts.append(r"(-?\d+)")
                elif conv in "fgeE":
                    parts.append(r"(-?[0-9.]+(?:[eE][-+]?\d+)?|NaN|-?Infinity)")
                else:
                    parts.append("(.*?)")
                pos = m.end()
            parts.append(re.escape(self.text[pos:]))
            self._regex = re.compile("".join(parts), re.S)
        return self._regex


_WORD = re.compile(r"[A-Za-z]{2,}")
_index: dict[str, list[_Template]] | None = None
_fixed_messages: frozenset[str] = frozenset()  # msgids without placeholders
_templates_lock = threading.Lock()


def _load() -> dict[str, list[_Template]]:
    """The server's message templates, indexed by their longest fixed word."""
    global _index, _fixed_messages
    if _index is None:
        with _templates_lock:
            if _index is None:
                text = resources.files("governed_db").joinpath("pg_messages.txt").read_text(
                    encoding="utf-8")
                index: dict[str, list[_Template]] = {}
                for line in text.splitlines():
                    tpl = _Template(line)
                    # A template with (almost) no fixed text ("%s", "%s: %s") would frame any
                    # text: such lines are judged as unmatched instead.
                    if sum(ch.isalpha() for ch in tpl.anchor) >= 3 and tpl.key:
                        index.setdefault(tpl.key, []).append(tpl)
                # Messages nested in a capture ("at %s" → "FOR over SELECT rows") are the
                # server's own words when they are a whole msgid.
                _fixed_messages = frozenset(line for line in text.splitlines()
                                            if "%" not in line)
                _index = index
    return _index


class Allowed:
    """What may be echoed: catalog identifiers always; whole tokens of the caller's statements
    only where they cannot confirm a guess about data (see ``echo``)."""

    __slots__ = ("fragments", "identifiers", "lines", "own", "texts")

    def __init__(self, texts: Iterable[str], identifiers: Iterable[str] = (),
                 own: bool = False) -> None:
        from .analysis._normalize import statement_fragments

        self.fragments: set[str] = set()
        self.lines: set[str] = set()
        self.texts = tuple(texts)
        # Every value the statement(s) in question can compute is built from their own
        # constants by built-in functions (no relation, no user code, nothing opaque: see
        # ErrorTextStage.error_allowed): their messages pass whole, the value detectors
        # applied, as a result row of the same values would.
        self.own = own
        for text in self.texts:
            self.fragments |= statement_fragments(text)
            for line in text.splitlines():
                if line.strip():
                    self.lines.add(line.strip())
        self.identifiers = frozenset(i.lower() for i in identifiers)

    def without_statement_tokens(self) -> Allowed:
        """Only catalog identifiers (the statement's own tokens would be a guess oracle)."""
        out = Allowed((), ())
        out.identifiers = self.identifiers
        out.texts = self.texts
        return out

    def word(self, piece: str) -> bool:
        low = piece.lower()
        return piece in self.fragments or low in self.identifiers or low in _TYPE_WORDS \
            or (low in self.fragments and not low.isdigit())

    def value(self, value: str) -> bool:
        if value == "" or value in self.fragments or value in _fixed_messages:
            return True
        if value.isupper() and all(w in _PLPGSQL_WORDS for w in value.split()):
            return True
        low = value.lower()
        if low in self.identifiers:
            return True
        if _TYPE_SHAPE.fullmatch(low):
            base = re.sub(r"\(.*|\[\]", "", low)
            words = [w for w in re.split(r"[\s.\"]+", base) if w]
            if words and len(words) <= _MAX_PIECES and all(self.word(w) for w in words):
                return True
        sig = _SIGNATURE.fullmatch(value)
        if sig is not None:  # name(type, type …): the server spells argument types
            items = [i.strip() for i in sig.group(2).split(",")] if sig.group(2).strip() else []
            return (self.value(sig.group(1)) and len(items) <= _MAX_ARGS
                    and all(self.value(i) for i in items))
        pieces = [p for p in _PIECES.split(value) if p]
        if not pieces:
            return not any(ch.isalnum() for ch in value)
        # Names compose into a few pieces (schema.table.column, a type, a signature); a long
        # run of them is a value the server built from data (``repeat('a ', ascii(…))``
        # spelled in column names), whatever words it is made of.
        return len(pieces) <= _MAX_PIECES and all(self.word(p) for p in pieces)


_LIST = re.compile(r"\(([^()]*)\)")


def _redact_capture(value: str, allowed: Allowed) -> str:
    if allowed.value(value):
        return value
    # (col, col)=(value, value) / (v1, v2, …): judge each item, keep names.
    listed = _redact_lists(value, allowed.value)
    return REDACTED_TEXT if listed is None else listed


def _redact_lists(value: str, keep: Callable[[str], bool]) -> str | None:
    """A capture made only of parenthesized lists (``(a, b)=(1, 2)``): each item kept when
    ``keep(item)``, else redacted; None when the capture is anything else."""
    if "(" not in value or not _LIST.search(value) or _LIST.sub("", value).strip(" =,"):
        return None

    def one(m: re.Match[str]) -> str:
        return "(" + ", ".join(i if keep(i) else REDACTED_TEXT
                               for i in m.group(1).split(", ")) + ")"
    return _LIST.sub(one, value)


def _redact_value(value: str, allowed: Allowed) -> str:
    """A value slot: a whole token the caller sent passes, or a list of them judged item by
    item (``Failing row contains (…)``); nothing else (see ``_NAME_NOUNS``)."""
    if value == "" or value in allowed.fragments or value in _fixed_messages:
        return value
    if value.isupper() and all(w in _PLPGSQL_WORDS for w in value.split()):
        return value  # "at RETURN", "at FOR over SELECT rows": the statement kind
    sig = _SIGNATURE.fullmatch(value)
    if sig is not None and sig.group(1) in allowed.fragments:
        # name(argument types): the name the caller wrote, the types the parser resolved
        items = [i.strip() for i in sig.group(2).split(",")] if sig.group(2).strip() else []
        if len(items) <= _MAX_ARGS and all(allowed.value(i) for i in items):
            return value
    listed = _redact_lists(value, lambda i: i in allowed.fragments or i == "null")
    return REDACTED_TEXT if listed is None else listed


def redact_line(line: str, allowed: Allowed) -> str:
    """One line of a message with every capture that is not safe replaced (see above)."""
    if not line or line.strip() in allowed.lines or line in allowed.fragments:
        # the caller's own text: a line of it, or a whole literal it sent (RAISE NOTICE 'x'
        # in a DO block; fragments are empty unless the statement may echo, see redact_fields)
        return line
    index = _load()
    candidates = [t for w in set(_WORD.findall(line)) for t in index.get(w, ())
                  if t.anchor in line]
    candidates.sort(key=lambda t: -t.fixed)  # the most specific template first
    best: tuple[_Template, re.Match[str]] | None = None
    for tpl in candidates:
        m = tpl.regex.fullmatch(line)
        if m is not None:
            best = (tpl, m)
            break
    if best is None:
        return REDACTED_TEXT
    tpl, m = best
    out: list[str] = []
    pos = 0
    for idx, kind in enumerate(tpl.kinds, start=1):
        start, end = m.span(idx)
        out.append(line[pos:start])
        value = m.group(idx)
        if kind == "d":
            ok = value in allowed.fragments or tpl.text in _POSITION_NUMBERS
            out.append(value if ok else REDACTED_TEXT)
        elif tpl.names[idx - 1] or allowed.own:
            out.append(_redact_capture(value, allowed))
        else:
            out.append(_redact_value(value, allowed))
        pos = end
    out.append(line[pos:])
    return "".join(out)


def redact_text(text: str | None, allowed: Allowed) -> str | None:
    if not text:
        return text
    return "\n".join(redact_line(line, allowed) for line in text.split("\n"))


# Diagnostic fields: text judged line by line; identifier fields judged as captures; the
# function-built query and its position are dropped.
_TEXT_FIELDS = ("message_primary", "message_detail", "message_hint", "context")
_NAME_FIELDS = ("schema_name", "table_name", "column_name", "datatype_name", "constraint_name")
_KEEP_FIELDS = ("sqlstate", "severity", "severity_nonlocalized", "statement_position",
                "source_file", "source_line", "source_function")


def redact_fields(diag: Any, allowed: Allowed, *, echo: bool = False) -> dict[int, bytes | None]:
    """A server message's diagnostic fields as ``{DiagnosticField: bytes}``, redacted.

    The statement's own tokens are echoed when ``echo`` (the statement cannot read a value
    masked for the caller) or when the server reports a position in the statement text: then
    the error was raised while parsing and analyzing the caller's text, before any row was
    read (an executor-time error, such as a cast of a column value, has no position).
    Otherwise only catalog identifiers are: a statement carrying a thousand literals would
    otherwise learn which of them equals ``substr(ssn, 5, 3)`` from one error.
    """
    from psycopg.pq import DiagnosticField as F

    codes = {"sqlstate": F.SQLSTATE, "severity": F.SEVERITY,
             "severity_nonlocalized": F.SEVERITY_NONLOCALIZED,
             "message_primary": F.MESSAGE_PRIMARY, "message_detail": F.MESSAGE_DETAIL,
             "message_hint": F.MESSAGE_HINT, "context": F.CONTEXT,
             "schema_name": F.SCHEMA_NAME, "table_name": F.TABLE_NAME,
             "column_name": F.COLUMN_NAME, "datatype_name": F.DATATYPE_NAME,
             "constraint_name": F.CONSTRAINT_NAME, "statement_position": F.STATEMENT_POSITION,
             "source_file": F.SOURCE_FILE, "source_line": F.SOURCE_LINE,
             "source_function": F.SOURCE_FUNCTION}
    info: dict[int, bytes | None] = {}
    if diag is None:
        return info
    if allowed.own:
        for attr, code in codes.items():
            value = getattr(diag, attr, None)
            if value is None:
                continue
            if attr not in _KEEP_FIELDS:
                value = mask_in_text(str(value))[0]
            info[int(code)] = str(value).encode()
        return info
    if not echo and getattr(diag, "statement_position", None) is None:
        allowed = allowed.without_statement_tokens()
    for attr, code in codes.items():
        value = getattr(diag, attr, None)
        if value is None:
            continue
        if attr in _TEXT_FIELDS:
            value = redact_text(value, allowed)
        elif attr in _NAME_FIELDS:
            # RAISE … USING COLUMN = <data> sets these from a function: judged as values.
            value = value if allowed.value(value) else REDACTED_TEXT
        info[int(code)] = str(value).encode()
    return info


_EXCERPT = re.compile(r"LINE (\d+): (.*)\n( *\^)$", re.M)


def query_excerpt(message: str, allowed: Allowed) -> str | None:
    """The ``LINE n: ...`` excerpt libpq adds to a message with a statement position, with
    its caret line, when the excerpt is text of the statement(s) in question (the caller's
    own text: libpq cuts it from the query it sent), else None."""
    m = _EXCERPT.search(message)
    if m is None:
        return None
    text = m.group(2)
    text = text.removeprefix("...").removesuffix("...")
    if not text.strip() or not any(text in t for t in allowed.texts):
        return None
    return m.group(0)


def message_from_fields(info: Mapping[int, bytes | None], excerpt: str | None = None) -> str:
    """``str(exc)`` as psycopg builds it, from (redacted) fields: primary, the ``LINE n:``
    excerpt of the caller's statement (see :func:`query_excerpt`), DETAIL, HINT, CONTEXT.
    (The ``QUERY:`` of function-built SQL is left out.)"""
    from psycopg.pq import DiagnosticField as F

    def get(code: F) -> str | None:
        raw = info.get(int(code))
        return None if raw is None else raw.decode("utf-8", "replace")

    parts = [get(F.MESSAGE_PRIMARY) or ""]
    if excerpt:
        parts.append(excerpt)
    for label, code in (("DETAIL", F.MESSAGE_DETAIL), ("HINT", F.MESSAGE_HINT),
                        ("CONTEXT", F.CONTEXT)):
        value = get(code)
        if value:
            parts.append(f"{label}:  {value}")
    return "\n".join(parts)


class RedactedResult:
    """What ``exc.pgresult`` returns for a redacted error: the fields, redacted, nothing else.

    psycopg treats any object with ``error_field`` as a result (``exc.diag`` reads it too), so
    code that inspects ``exc.pgresult.error_field(...)`` keeps working and sees no value.
    """

    __slots__ = ("_excerpt", "_info", "status")

    def __init__(self, info: Mapping[int, bytes | None], status: Any,
                 excerpt: str | None = None) -> None:
        self._info = dict(info)
        self.status = status
        self._excerpt = excerpt

    def error_field(self, fieldcode: Any) -> bytes | None:
        return self._info.get(int(fieldcode))

    @property
    def error_message(self) -> bytes:
        return message_from_fields(self._info, self._excerpt).encode()

    ntuples = 0
    nfields = 0
    command_status = None
    command_tuples = None

    def __repr__(self) -> str:
        return "<redacted PGresult>"

