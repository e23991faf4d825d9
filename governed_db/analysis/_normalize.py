"""Literal-free statement text for audit records, spans and approval files.

``pgparse.normalize`` (libpg_query's) replaces the constants of DML and of a few utility
statements, but keeps comments and the strings of most utility statements: ``COMMENT ON … IS
'…'``, view and ``PREPARE`` bodies, ``NOTIFY c, '…'``, ``COPY … (DELIMITER '…')``. Audit and
spans must carry no literal at all (security principle 5), so normalization here works on the
token level, for every statement kind alike:

* a lexer that follows PostgreSQL's ``scan.l`` (standard_conforming_strings on, which the
  connection enforces) finds every string (``'…'``, ``E'…'``, ``U&'…'``, ``N'…'``, ``B'…'``,
  ``X'…'``, ``$tag$…$tag$``), every number and every comment (nested ``/* */`` and ``--``);
  strings and numbers become ``$n`` placeholders, comments disappear;
* the parse tree is the cross-check: every ``A_Const`` node's location must start a token the
  lexer replaced, a keyword constant (``TRUE``, ``NULL``, a bare ``SET x = value``), which is
  then replaced too, or the ``-`` of a negated number. Any disagreement between the lexer and
  PostgreSQL's parser means the lexer cannot be trusted on this text.

Fail closed: text that does not parse, that the lexer cannot finish (an unterminated quote or
comment) or where the cross-check fails is never recorded; the caller gets ``None`` and
records a placeholder plus the statement's fingerprint instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["neutral_text", "normalize_statement", "placeholder"]

_IDENT_START = re.compile(r"[A-Za-z_\u0080-\U0010ffff]")
_IDENT = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*")
_PARAM = re.compile(r"\$\d+")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)?\$")
# Numbers as scan.l (PG 17) reads them, digit separators included; anything glued to a number
# ("123abc") is a parse error since PG 16 and never reaches here.
_NUMBER = re.compile(
    r"0[xX](?:_?[0-9A-Fa-f])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+"
    r"|(?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:[eE][-+]?\d(?:_?\d)*)?")
_SPACE = " \t\n\r\f\v"

# token kinds
_LIT, _WORD, _OTHER = 0, 1, 2


class _LexError(Exception):
    pass


def _string_end(text: str, start: int, *, backslash: bool) -> int:
    """Index just past the closing quote of a '…' literal whose opening quote is at start."""
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if backslash and ch == "\\":
            i += 2
            continue
        if ch == "'":
            if i + 1 < n and text[i + 1] == "'":
                i += 2
                continue
            return i + 1
        i += 1
    raise _LexError("unterminated string")


def _tokens(text: str) -> list[tuple[int, int, int]]:
    """``(kind, start, end)`` of every token; comments and whitespace are not tokens."""
    out: list[tuple[int, int, int]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _SPACE:
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < n else ""
        if ch == "-" and nxt == "-":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if ch == "/" and nxt == "*":
            depth, i = 1, i + 2
            while depth:
                if i >= n:
                    raise _LexError("unterminated comment")
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            continue
        if ch == "'":
            end = _string_end(text, i, backslash=False)
            out.append((_LIT, i, end))
            i = end
            continue
        if ch == '"':
            end = text.find('"', i + 1)
            while end >= 0 and text.startswith('""', end):
                end = text.find('"', end + 2)
            if end < 0:
                raise _LexError("unterminated quoted identifier")
            out.append((_WORD, i, end + 1))
            i = end + 1
            continue
        if ch == "$":
            m = _PARAM.match(text, i)
            if m:
                out.append((_OTHER, i, m.end()))
                i = m.end()
                continue
            m = _DOLLAR_TAG.match(text, i)
            if m:
                close = text.find(m.group(), m.end())
                if close < 0:
                    raise _LexError("unterminated dollar quote")
                end = close + len(m.group())
                out.append((_LIT, i, end))
                i = end
                continue
            raise _LexError("stray $")
        if ch.isdigit() or (ch == "." and nxt.isdigit()):
            m = _NUMBER.match(text, i)
            assert m is not None
            out.append((_LIT, i, m.end()))
            i = m.end()
            continue
        if _IDENT_START.match(ch):
            m = _IDENT.match(text, i)
            assert m is not None
            word_end = m.end()
            low = ch.lower()
            # Prefixed strings: longest match in the scanner, so only a one-letter word
            # directly followed by the quote (or "U&" + quote) starts one. (N'…' is the
            # keyword NATIONAL CHARACTER and then a plain string, as scan.l lexes it.)
            if word_end == i + 1 and nxt == "'" and low in "ebx":
                end = _string_end(text, i + 1, backslash=low == "e")
                out.append((_LIT, i, end))
                i = end
                continue
            if word_end == i + 1 and low == "u" and nxt == "&" and i + 2 < n \
                    and text[i + 2] in "'\"":
                if text[i + 2] == "'":
                    end = _string_end(text, i + 2, backslash=False)
                    out.append((_LIT, i, end))
                else:
                    close = text.find('"', i + 3)
                    while close >= 0 and text.startswith('""', close):
                        close = text.find('"', close + 2)
                    if close < 0:
                        raise _LexError("unterminated quoted identifier")
                    end = close + 1
                    out.append((_WORD, i, end))
                i = end
                continue
            out.append((_WORD, i, word_end))
            i = word_end
            continue
        out.append((_OTHER, i, i + 1))
        i += 1
    return out


def _const_locations(trees: Iterable[Any]) -> set[int]:
    """Byte offsets of every ``A_Const`` node of the parse trees."""
    found: set[int] = set()
    stack = list(trees)
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            const = node.get("A_Const")
            if isinstance(const, dict) and "location" in const:
                found.add(int(const["location"]))
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _plan(text: str, trees: Iterable[Any]) -> tuple[list[tuple[int, int, int]], list[bool]] | None:
    """Tokens and which of them are literals, or None when lexer and parser disagree."""
    try:
        toks = _tokens(text)
    except _LexError:
        return None
    replace = [kind == _LIT for kind, _, _ in toks]
    if text.isascii():
        starts = {s: idx for idx, (_, s, _) in enumerate(toks)}
    else:
        # Parser locations count UTF-8 bytes; map them to character offsets.
        starts = {len(text[:s].encode("utf-8")): idx for idx, (_, s, _) in enumerate(toks)}
    for loc in _const_locations(trees):
        idx = starts.get(loc)
        if idx is None:
            return None
        kind, s, e = toks[idx]
        if kind == _LIT:
            continue
        if kind == _WORD:
            replace[idx] = True  # TRUE / FALSE / NULL / a bare SET value: a literal too
            continue
        if text[s:e] == "-" and idx + 1 < len(toks) and toks[idx + 1][0] == _LIT:
            continue  # a negated number: the sign is kept, the number replaced
        return None
    return toks, replace


def _join(text: str, toks: list[tuple[int, int, int]], subst: list[str | None]) -> str:
    out: list[str] = []
    prev_end = 0
    for (_, s, e), rep in zip(toks, subst, strict=True):
        if out and (s > prev_end or (rep is not None and rep.startswith("$")
                                     and (out[-1][-1:].isalnum() or out[-1][-1:] == "_"))):
            # One space wherever the original had whitespace or a comment (and between a
            # word and a placeholder: N'x' is the keyword N and a string, not "N$1").
            out.append(" ")
        out.append(text[s:e] if rep is None else rep)
        prev_end = e
    return "".join(out)


def normalize_statement(text: str, trees: Iterable[Any]) -> str | None:
    """``text`` with every literal replaced by ``$n`` and comments removed, or None.

    ``trees`` are the parse trees libpg_query returned for ``text`` (locations are byte
    offsets into its UTF-8 form). None means the text cannot be normalized with confidence:
    the caller records a placeholder, never the text.
    """
    planned = _plan(text, trees)
    if planned is None:
        return None
    toks, replace = planned
    counter = max((int(text[s + 1:e]) for kind, s, e in toks
                   if kind == _OTHER and text[s] == "$" and e - s > 1), default=0)
    subst: list[str | None] = []
    for rep in replace:
        if rep:
            counter += 1
            subst.append(f"${counter}")
        else:
            subst.append(None)
    return _join(text, toks, subst)


def neutral_text(text: str, trees: Iterable[Any]) -> str | None:
    """``text`` with every string literal emptied and every number made ``0``, comments
    removed: still parseable in (almost) every position, so libpg_query can fingerprint it.

    Why: libpg_query's fingerprint ignores DML constants but hashes the strings of utility
    statements (``ALTER ROLE … PASSWORD '…'``, ``COMMENT … IS '…'``), and a 64-bit hash of a
    short secret can be reversed by trying values. The fingerprint of the neutral text is
    the same as the original's for DML and carries no literal for the rest.
    """
    planned = _plan(text, trees)
    if planned is None:
        return None
    toks, replace = planned
    subst: list[str | None] = []
    for (kind, s, _), rep in zip(toks, replace, strict=True):
        if kind != _LIT:
            subst.append(None)  # keyword constants: A_Const, which fingerprints ignore
            continue
        first = text[s]
        if first.isdigit() or first == ".":
            subst.append("0")
        elif first in "bBxX" and text[s + 1:s + 2] == "'":
            subst.append(first + "''")
        else:
            subst.append("''")
    return _join(text, toks, subst)


def placeholder(kinds: Iterable[str]) -> str:
    """What is recorded for a statement that cannot be normalized (never its text)."""
    return "<not normalized: " + (",".join(sorted(kinds)) or "UNPARSEABLE") + ">"
