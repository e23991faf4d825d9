"""The canonical form of audit records (schema v2 and v3): RFC 8785, the JSON Canonicalization Scheme.

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

:func:`jcs` is the definition, written for clarity (~30x slower). The writer's
:func:`canonical_bytes` and the verifier's :func:`canonical_of_line` produce the same bytes with
orjson: floats as :func:`es_number` fragments, and :func:`jcs` only where orjson's order of
member names can differ from UTF-16's or an integer is beyond the safe range; the tests check
they agree with :func:`jcs` (RFC 8785's vectors, random values, every log the suite writes).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["MAX_SAFE_INTEGER", "NotIJSON", "canonical_bytes", "canonical_of_line",
           "canonical_of_parsed", "es_number", "jcs", "to_ijson"]

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
    """``jcs(to_ijson(value))``, the writer's serializer, computed with orjson.

    Floats are written as :func:`es_number` fragments (orjson writes ``100.0``, ``1e+16`` and
    ``1e-6`` where JCS writes ``100``, ``10000000000000000`` and ``0.000001``, and NaN as
    ``null``). ``floats=False`` says ``value`` holds no float that orjson writes otherwise
    than JCS, nor NaN or infinity: then orjson's bytes are used as they are, which saves a
    walk of the record.
    """
    if not floats:
        try:
            out = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER)
        except TypeError:  # an integer beyond the safe range, a name that is not text, ...
            pass
        else:
            if out.isascii() or not _may_sort_differently(out):
                return out
    try:
        out = orjson.dumps(_prepared(value), option=orjson.OPT_SORT_KEYS)
    except TypeError:  # a name that is not text, a value with no JSON form
        return jcs(to_ijson(value))
    if out.isascii() or not _may_sort_differently(out):
        return out
    return jcs(to_ijson(value))


def canonical_of_parsed(value: Any) -> bytes:
    """``jcs(value)`` for a value parsed from JSON text (no NaN: the parser refused it)."""
    try:
        out = orjson.dumps(_floats_as_fragments(value),
                           option=orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER)
    except TypeError:
        return jcs(value)
    if out.isascii() or not _may_sort_differently(out):
        return out
    return jcs(value)


class NotIJSON(ValueError):
    """A JSON text that is not strict I-JSON: NaN / Infinity, or a member name twice."""


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise NotIJSON("a member name appears twice in one object")
    return out


def _no_constant(name: str) -> Any:
    raise NotIJSON(f"{name} is not JSON")


def _float_fragment(token: str) -> Any:
    return orjson.Fragment(es_number(float(token)))


def canonical_of_line(line: str, *, without: tuple[str, ...] = ("hash", "sig")) -> bytes:
    """``jcs`` of the JSON object ``line`` holds, less the top-level members ``without``.

    The verifier's path: parsed strictly (NotIJSON for NaN / Infinity tokens or a member name
    twice), every number token read as a double and each float token parsed straight into its
    :func:`es_number` fragment, so orjson writes the canonical bytes without a walk.
    """
    obj = json.loads(line, object_pairs_hook=_unique_members, parse_constant=_no_constant,
                     parse_float=_float_fragment)
    if not isinstance(obj, dict):
        raise NotIJSON("a record is a JSON object")
    for name in without:
        obj.pop(name, None)
    try:
        out = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER)
    except TypeError:  # an integer token beyond the safe range, a lone surrogate
        out = None
    if out is None or (not out.isascii() and _may_sort_differently(out)):
        plain = json.loads(line)
        return jcs({k: v for k, v in plain.items() if k not in without})
    return out


def _prepared(value: Any) -> Any:
    """:func:`to_ijson` with every float as its :func:`es_number` fragment, in one walk
    (leaves handled inline: a call per leaf would double the cost)."""
    t = type(value)
    if t is dict:
        out = {}
        for k, v in value.items():
            vt = type(v)
            if vt is str or vt is bool or v is None:
                out[k] = v
            elif vt is int:
                out[k] = v if -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER else str(v)
            elif vt is float:
                out[k] = _float_prepared(v)
            else:
                out[k] = _prepared(v)
        return out
    if t is list or t is tuple:
        items = []
        for v in value:
            vt = type(v)
            if vt is str or vt is bool or v is None:
                items.append(v)
            else:
                items.append(_prepared(v))
        return items
    if t is float:
        return _float_prepared(value)
    if t is str or t is bool or value is None or t is int:
        return to_ijson(value)
    return _prepared(to_ijson(value))


def _float_prepared(x: float) -> Any:
    if x - x != 0:
        return _NON_FINITE.get(x, "NaN")
    return orjson.Fragment(es_number(x))


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
