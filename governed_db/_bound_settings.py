"""``set_config($1, $2, ...)``: judged by the values bound to it.

A statement whose ``set_config`` takes its setting name (or value) from a bind parameter is a
SET of a setting the text does not name: the settings rules cannot judge it and refuse it
(``set_config with a non-constant setting name``, ``session.client-encoding``). But the
parameters are not unknown when the statement is about to be sent: they travel with it, and
the server reads ``$n`` as exactly that value. So the statement is judged as the text with
those parameters written in as constants — every rule sees the setting name and value the
server will use (``client_encoding`` still only to an allow-listed encoding, a protected
setting still protected) — and the cached decision is keyed by that text, values included.

Only a parameter that is a direct argument of ``set_config`` (plain or ``pg_catalog.``) and
whose value is text the server reads unchanged (types text, varchar or unknown: their text
and binary forms are the same bytes, in the session's encoding) is written in; anything else
(NULL, another type, bytes the encoding cannot read) leaves the statement as it was, refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

# text, varchar, unknown: the bytes are the string, in the client encoding, either format
_TEXT_OIDS = frozenset({0, 25, 1043})
_PARAM = re.compile(rb"\$([0-9]+)")


def _set_config_params(node: Any, out: list[tuple[int, int]]) -> None:
    """(byte location, parameter number) of every ParamRef passed as the name or value of
    a set_config() call in ``node``."""
    if isinstance(node, dict):
        if "PrepareStmt" in node:
            return  # its $n are its own parameters (EXECUTE's), not the ones bound here
        call = node.get("FuncCall")
        if isinstance(call, dict):
            name = [part.get("String", {}).get("sval") for part in call.get("funcname", ())]
            if name in (["set_config"], ["pg_catalog", "set_config"]):
                for arg in call.get("args", ())[:2]:
                    ref = arg.get("ParamRef") if isinstance(arg, dict) else None
                    if ref is not None and "location" in ref:
                        out.append((int(ref["location"]), int(ref.get("number", 0))))
        for value in node.values():
            _set_config_params(value, out)
    elif isinstance(node, list):
        for value in node:
            _set_config_params(value, out)


def bound_text(analysis: Any, params: Sequence[Any] | None,
               types: Sequence[int] | None, codec: str) -> str | None:
    """The text to judge ``analysis`` by, with its set_config parameters written in; None when
    there is nothing to write in (or a parameter cannot be: then it stays refused)."""
    if not params or not any(s.dynamic_settings or any(v is None for _, v in s.settings)
                             for s in analysis.statements):
        return None
    spots: list[tuple[int, int]] = []
    for s in analysis.statements:
        _set_config_params(s.tree, spots)
    if not spots:
        return None
    try:
        raw: bytes = analysis.text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    for location, number in sorted(spots, reverse=True):
        if not 1 <= number <= len(params):
            return None
        value = params[number - 1]
        oid = types[number - 1] if types is not None and len(types) >= number else 0
        if value is None or oid not in _TEXT_OIDS:
            return None
        match = _PARAM.match(raw, location)
        if match is None or int(match.group(1)) != number:
            return None
        try:
            text = bytes(value).decode(codec)
        except (UnicodeDecodeError, LookupError):
            return None
        if "\x00" in text:
            return None
        literal = ("'" + text.replace("'", "''") + "'").encode("utf-8")
        raw = raw[:location] + literal + raw[match.end():]
    return raw.decode("utf-8")
