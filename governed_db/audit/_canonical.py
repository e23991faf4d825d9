"""The canonical form of audit records (schema v2): RFC 8785, the JSON Canonicalization Scheme.

The bytes a record's hash covers are the JCS serialization of the record without ``hash`` and
``sig``: object members sorted by their names' UTF-16 code units, no whitespace, strings with
JCS's minimal escaping, numbers as ECMAScript's ``Number.prototype.toString`` writes the IEEE
double, UTF-8. An outside verifier reproduces them with any RFC 8785 library (see
docs/audit-log-format.md and docs/verify_audit_log.py).

JCS is defined over I-JSON (RFC 7493), so before a record is written its values are brought into
that data model (:func:`to_ijson`): an integer outside ±(2**53 - 1) becomes its decimal string,
and NaN / Infinity / -Infinity become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
Without that, a verifier that reads numbers as doubles (JavaScript, most JCS libraries) would
recompute other bytes and call a valid record edited.

:func:`jcs` is the definition, written for clarity. :func:`canonical_bytes` produces the same
bytes ~10x faster with orjson, and falls back to :func:`jcs` for the inputs where orjson's output
differs (floats, keys whose UTF-16 and code-point orders can differ); the test suite checks the
two agree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["MAX_SAFE_INTEGER", "canonical_bytes", "canonical_of_parsed", "es_number", "jcs",
           "to_ijson"]

# I-JSON's interoperable integers: exactly representable as IEEE doubles, and so are their
# neighbours (RFC 7493 §2.2).
MAX_SAFE_INTEGER = 2**53 - 1

_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def es_number(x: float | int) -> str:
    """ECMAScript ``Number::toString`` of the double nearest ``x`` (RFC 8785 §3.2.2.3).

    Python's ``repr`` gives the shortest digits that round-trip (the same digits ECMAScript
    chooses); only the layout differs: ES writes integers below 1e21 in full, 0.000001 and up
    without an exponent, and ``1e+21`` / ``1e-7`` style exponents.
    """
    x = float(x)
    if x != x or x in _NON_FINITE:
        raise ValueError(f"{x!r} has no JSON form (RFC 8785 §3.2.2.2)")
    if x == 0:
        return "0"  # -0 too
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    point = len(whole) + (int(exp) if exp else 0)  # value = 0.digits × 10**point
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k, n = len(digits), point
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * -n + digits
    else:
        e = n - 1
        body = digits[0] + ("." + digits[1:] if k > 1 else "") + ("e+" if e >= 0 else "e-") \
            + str(abs(e))
    return sign + body


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
            "\t": "\\t"}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    return _ESCAPES.get(ch) or f"\\u{ord(ch):04x}"


def _string(s: str) -> str:
    s.encode("utf-8")  # a lone surrogate has no UTF-8 form: refused, never written otherwise
    if _NEEDS_ESCAPE.search(s) is None:
        return '"' + s + '"'
    return '"' + _NEEDS_ESCAPE.sub(_escape, s) + '"'


def _utf16_key(name: str) -> bytes:
    return name.encode("utf-16-be")


def _jcs_text(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int):
        # A JSON number is a double to JCS: integers beyond ±2**53 are written as the double
        # they parse to, exactly what a JavaScript verifier would write.
        return str(value) if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else es_number(value)
    if isinstance(value, float):
        return es_number(value)
    if isinstance(value, Mapping):
        for name in value:
            if not isinstance(name, str):
                raise TypeError(f"object member names must be text, not {type(name).__name__}")
        return "{" + ",".join(_string(k) + ":" + _jcs_text(value[k])
                              for k in sorted(value, key=_utf16_key)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_jcs_text(v) for v in value) + "]"
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def jcs(value: Any) -> bytes:
    """The RFC 8785 canonical form of a JSON value (dict, list, str, int, float, bool, None).

    Raises ValueError for NaN and infinities and TypeError for anything else (JCS has no form
    for them); a value from :func:`to_ijson` always has one.
    """
    return _jcs_text(value).encode("utf-8")


def to_ijson(value: Any) -> Any:
    """``value`` in the I-JSON data model JCS is defined over (a new object only where needed).

    Integers outside ±(2**53 - 1) become their decimal strings; NaN, Infinity and -Infinity
    the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``; tuples lists; other values orjson
    can write (datetimes, UUIDs, enums, dataclasses) what orjson writes for them. Names of
    object members must be text (TypeError otherwise).
    """
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is float:
        return value if value - value == 0 else _NON_FINITE.get(value, "NaN")
    if t is int:
        return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else str(value)
    if t is dict:
        for name in value:
            if type(name) is not str:
                raise TypeError("names of audit record members must be text, not"
                                f" {type(name).__name__}")
        return {k: to_ijson(v) for k, v in value.items()}
    if t is list or t is tuple:
        return [to_ijson(v) for v in value]
    # Anything else orjson takes: what it writes, read back (subclasses, datetimes, ...).
    return to_ijson(orjson.loads(orjson.dumps(value, option=orjson.OPT_PASSTHROUGH_SUBCLASS,
                                              default=_plain_of)))


def _plain_of(value: Any) -> Any:
    for base in (bool, int, float, str):
        if isinstance(value, base):
            return base(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def canonical_bytes(value: Any, *, floats: bool = True) -> bytes:
    """``jcs(to_ijson(value))``, through orjson where its bytes are provably the same.

    The writer's serializer. ``value`` must hold no NaN or infinity (orjson would write them
    as ``null``, silently, and checking every float would cost the hot path a walk of the
    record): the writer passes every field that can carry one through :func:`to_ijson` when
    it builds the record. Integers beyond the safe range need no such care.

    ``floats=False`` says ``value`` holds no float that orjson writes otherwise than JCS
    (the writer knows it of a statement record, whose fields it builds), which saves the scan
    of the output for float tokens.
    """
    out = _via_orjson(value, floats)
    if out is not None:
        return out
    prepared = to_ijson(value)
    out = orjson.dumps(_floats_as_fragments(prepared), option=orjson.OPT_SORT_KEYS)
    if out.isascii() or not _may_sort_differently(out):
        return out
    return jcs(prepared)


def canonical_of_parsed(value: Any) -> bytes:
    """``jcs(value)`` for a value parsed from JSON text (no NaN: the parser refused it)."""
    out = _via_orjson(value)
    return out if out is not None else jcs(value)


def _via_orjson(value: Any, floats: bool = True) -> bytes | None:
    """orjson's bytes when they are JCS's, else None.

    orjson's output differs from JCS only (1) for floats it writes as ``100.0``, ``1e+16`` ..
    ``1e+20`` and ``1e-6`` .. ``9.9e-6`` (JCS: ``100``, ``10000000000000000``, ``0.000001``),
    (2) for integers beyond ±(2**53 - 1) (refused here by OPT_STRICT_INTEGER), and (3) in the
    order of member names holding characters from both U+E000..U+FFFF and U+10000.. (code point
    order vs UTF-16's). The byte patterns below occur in every such float token
    (test_audit_canonical pins this on random doubles); a string that happens to hold one only
    costs the slower path. Substring tests, not a regex: ~10x cheaper here.
    """
    try:
        out = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER)
    except TypeError:
        return None
    if floats and _orjson_float_differs(out):
        return None
    if not out.isascii() and _may_sort_differently(out):
        return None
    return out


def _orjson_float_differs(out: bytes) -> bool:
    """Whether orjson's output may hold a float token it writes otherwise than JCS:
    ``D.0`` (integral), ``e+16`` .. ``e+20``, ``e-6``."""
    return (b".0," in out or b".0}" in out or b".0]" in out or out.endswith(b".0")
            or b"e+1" in out or b"e+20" in out or b"e-6" in out)


def _may_sort_differently(out: bytes) -> bool:
    """UTF-8 lead bytes of U+E000..U+FFFF (EE, EF) and of U+10000.. (F0..F4) both present:
    orjson's order and UTF-16's differ only between names with one and names with the other."""
    return (b"\xee" in out or b"\xef" in out) and (
        b"\xf0" in out or b"\xf1" in out or b"\xf2" in out or b"\xf3" in out or b"\xf4" in out)


def _floats_as_fragments(value: Any) -> Any:
    t = type(value)
    if t is float:
        return orjson.Fragment(es_number(value))
    if t is dict:
        return {k: _floats_as_fragments(v) for k, v in value.items()}
    if t is list:
        return [_floats_as_fragments(v) for v in value]
    return value
