"""Client encodings governed_db can trust: the server must read the bytes sent as the
statement the analyzer judged.

PostgreSQL converts every query from the session's ``client_encoding`` to the server encoding
before its lexer runs; the analyzer decodes the same bytes with the connection's Python codec
(:func:`query_text`). The two agree on where strings, comments and statements end only when no
multi-byte character of the client encoding can contain a byte below 0x80. In Shift-JIS the
bytes ``81 5C`` are one character, while UTF-8 reads ``5C`` as a backslash: ``E'<C2 81 5C>';
DELETE ...`` is one SELECT to a UTF-8 reader and SELECT plus DELETE to the server. Server
encodings are all ASCII-safe; six client-only families are not (SJIS, SHIFT_JIS_2004, BIG5,
GBK, UHC, GB18030, JOHAB).

Why an allow-list: a name missing from it is refused, never trusted.

SQL_ASCII means "no conversion": the server lexes the bytes sent in its own encoding
(validating them unless that is SQL_ASCII too), and every server encoding is ASCII-safe, so
the analyzer reads them in the server encoding's codec (:func:`view_codec`; Latin-1, which maps
every byte to one character, when the server's is SQL_ASCII or has no Python codec) and sees
the statements the server sees. psycopg then returns text values as ``bytes``: masking, the
detectors and COPY read them through the same view (``surrogateescape``, lossless) and give
back ``bytes`` (``_cursor_base``), and the catalog snapshot decodes its names the same way.

Why refuse rather than force UTF8 at connect: governance never changes a setting the policy
does not require, and the application chose its encoding; it is told what to change instead.
The encoding is verified where the server reports it (``client_encoding`` is a GUC_REPORT
parameter, sent after every change): at connect, whichever way it was chosen (conninfo,
``PGCLIENTENCODING``, ``options=-c``, ``ALTER ROLE/DATABASE ... SET``), and after every
operation (a function calling ``set_config`` is caught there and the session closed).
``SET client_encoding`` / ``SET NAMES`` / ``set_config('client_encoding', ...)`` to anything
not on the list is denied before it is sent, for every identity and in observe mode too.
"""

from __future__ import annotations

import re
from typing import Any

# As the server reports them (pg_enc2name_tbl): every byte below 0x80 is that ASCII character
# and every byte of a multi-byte character is 0x80 or above. EUC_TW and MULE_INTERNAL have no
# Python codec: psycopg itself refuses to send text in them (NotSupportedError), and so does
# the analyzer.
SAFE_CLIENT_ENCODINGS = frozenset({
    "UTF8",
    "LATIN1", "LATIN2", "LATIN3", "LATIN4", "LATIN5", "LATIN6", "LATIN7", "LATIN8", "LATIN9",
    "LATIN10", "ISO_8859_5", "ISO_8859_6", "ISO_8859_7", "ISO_8859_8",
    "WIN866", "WIN874", "WIN1250", "WIN1251", "WIN1252", "WIN1253", "WIN1254", "WIN1255",
    "WIN1256", "WIN1257", "WIN1258", "KOI8R", "KOI8U",
    "EUC_JP", "EUC_CN", "EUC_KR", "EUC_TW", "EUC_JIS_2004", "MULE_INTERNAL",
    "SQL_ASCII",  # no conversion: read in the server encoding's codec (view_codec)
})
_SAFE_REPORTED = frozenset(name.encode() for name in SAFE_CLIENT_ENCODINGS)

# Every spelling PostgreSQL accepts for a safe encoding (pg_encname_tbl, cleaned as the server
# cleans a name: lower case, letters and digits only). Any other value is refused, including
# spellings of the safe ones this table does not list: a missing alias fails closed.
_SAFE_ALIASES = frozenset({
    "utf8", "unicode",
    *(f"latin{n}" for n in range(1, 11)),
    "iso88591", "iso88592", "iso88593", "iso88594", "iso88599", "iso885910", "iso885913",
    "iso885914", "iso885915", "iso885916", "iso88595", "iso88596", "iso88597", "iso88598",
    "win866", "alt", "win874", "win1250", "win1251", "win", "win1252", "win1253", "win1254",
    "win1255", "win1256", "win1257", "win1258", "abc", "tcvn", "tcvn5712", "vscii",
    "koi8", "koi8r", "koi8u",
    "eucjp", "euccn", "euckr", "euctw", "eucjis2004", "muleinternal", "sqlascii",
})

_NOT_ALNUM = re.compile(r"[^0-9a-z]")

ADVICE = ("use UTF8 (client_encoding=UTF8 in the conninfo, or unset PGCLIENTENCODING); single-byte"
          " encodings such as LATIN1..LATIN10 and WIN1250..WIN1258, EUC_* and SQL_ASCII work"
          " too")


def reported_encoding_safe(reported: bytes | None) -> bool:
    """Whether ``pgconn.parameter_status(b"client_encoding")`` names an allowed encoding."""
    return reported in _SAFE_REPORTED


def setting_value_safe(value: str | None) -> bool:
    """Whether ``SET client_encoding`` to ``value`` (as the analyzer read it; None for RESET,
    DEFAULT or a value computed at run time) keeps the session on an allowed encoding."""
    if value is None:
        return False  # computed, or a reset whose target is not checked here: fail closed
    return _NOT_ALNUM.sub("", value.strip().strip("'\"").lower()) in _SAFE_ALIASES


def unsafe_encoding_message(name: str | None) -> str:
    """Why a session in client encoding ``name`` cannot be governed, and what to do."""
    return (f"client_encoding {name or '(unknown)'} cannot be governed: governed_db reads every"
            " statement the way the server will only when no multi-byte character of the"
            " encoding can contain an ASCII byte (in SJIS, BIG5, GBK, UHC, GB18030 and JOHAB"
            f" it can, so bytes that look like one statement can run as two). To connect, {ADVICE}")


def query_text(query: bytes, codec: str) -> str:
    """The text the server will lex from ``query`` sent on a connection whose client encoding
    psycopg maps to the Python ``codec``. Bytes that are not valid in it become lone
    surrogates, which the analyzer refuses as unparseable (the server would reject them too)."""
    return query.decode(codec, "surrogateescape")


def view_codec(pgconn: Any) -> str:
    """For a SQL_ASCII session: the codec the server's bytes are read in (the server
    encoding's, or Latin-1 when it has none or is SQL_ASCII itself)."""
    from psycopg._encodings import pg2pyenc

    server = pgconn.parameter_status(b"server_encoding")
    if not server or server == b"SQL_ASCII":
        return "latin-1"
    try:
        return str(pg2pyenc(server))
    except Exception:  # noqa: BLE001 - psycopg.NotSupportedError: no Python codec
        return "latin-1"


def text_as_bytes(pgconn: Any) -> bool:
    """Whether psycopg returns text values as ``bytes`` (client_encoding SQL_ASCII)."""
    return bool(pgconn.parameter_status(b"client_encoding") == b"SQL_ASCII")


def to_text(value: Any, codec: str) -> Any:
    """``bytes`` (also inside lists, tuples and dict values) read as text in ``codec``,
    losslessly (``surrogateescape``): what masking and the detectors look at."""
    cls = value.__class__
    if cls is bytes:
        return value.decode(codec, "surrogateescape")
    if cls is list:
        return [to_text(v, codec) for v in value]
    if cls is tuple:
        return tuple(to_text(v, codec) for v in value)
    if cls is dict:
        return {k: to_text(v, codec) for k, v in value.items()}
    return value


def to_bytes_like(original: Any, value: Any, codec: str) -> Any:
    """``value`` (masked from ``to_text(original)``) with text given back as ``bytes``
    wherever ``original`` held bytes: the type the caller gets without governance."""
    if value is None:
        return None
    if original.__class__ is bytes:
        return value.encode(codec, "surrogateescape") if isinstance(value, str) else value
    if isinstance(original, (list, tuple)) and isinstance(value, (list, tuple)):
        if len(original) == len(value):
            items = [to_bytes_like(o, v, codec) for o, v in zip(original, value)]
        else:
            items = [v.encode(codec, "surrogateescape") if isinstance(v, str) else v
                     for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(original, dict) and isinstance(value, dict):
        return {k: to_bytes_like(original[k], v, codec) if k in original else v
                for k, v in value.items()}
    return value


def session_codec(pgconn: Any) -> str:
    """The Python codec of the session's client encoding; UTF-8 for the allow-listed
    encodings Python has no codec for (EUC_TW, MULE_INTERNAL: psycopg refuses to send or read
    text in them anyway, so only names of result columns would be read with it)."""
    try:
        if text_as_bytes(pgconn):
            return view_codec(pgconn)
        return str(pgconn._encoding)
    except Exception:  # noqa: BLE001 - psycopg.NotSupportedError
        return "utf-8"
