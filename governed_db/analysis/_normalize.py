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

from ._fold import dynamic_constant_texts

__all__ = ["neutral_text", "normalize_statement", "placeholder", "statement_fragments"]

# Numbers as scan.l (PG 17) reads them, digit separators included (in _MASTER); anything
# glued to a number ("123abc") is a parse error since PG 16 and never reaches here.

# token kinds
_LIT, _WORD, _OTHER = 0, 1, 2


class _LexError(Exception):
    pass


_MASTER = re.compile(r"""
    (?P<ws>[ \t\n\r\f\v]+)
  | (?P<line>--[^\n]*)
  | (?P<block>/\*)
  | (?P<lit>[eE]'(?:[^'\\]|\\.|'')*'
          | [bBxX]'(?:[^']|'')*'
          | [uU]&'(?:[^']|'')*'
          | '(?:[^']|'')*')
  | (?P<word>[uU]&"(?:[^"]|"")*"
           | "(?:[^"]|"")*")
  | (?P<param>\$\d+)
  | (?P<dollar>\$(?:[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)?\$)
  | (?P<num>0[xX](?:_?[0-9A-Fa-f])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+
          | (?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:[eE][-+]?\d(?:_?\d)*)?)
  | (?P<ident>[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*)
  | (?P<other>.)
""", re.X | re.S)
_KINDS = {"lit": _LIT, "num": _LIT, "dollar": _LIT, "word": _WORD, "ident": _WORD,
          "param": _OTHER, "other": _OTHER}


def _tokens(text: str) -> list[tuple[int, int, int]]:
    """``(kind, start, end)`` of every token; comments and whitespace are not tokens.

    One alternation in scan.l's order of precedence: a prefixed string (``E'…'``) can only
    start where a token starts, so ``be'x'`` is the word ``be`` and a string, as the server
    reads it; nested block comments and dollar quotes are closed by hand."""
    out: list[tuple[int, int, int]] = []
    i, n = 0, len(text)
    match = _MASTER.match
    while i < n:
        m = match(text, i)
        assert m is not None  # "other" matches any character
        group = m.lastgroup
        end = m.end()
        if group == "ws" or group == "line":
            i = end
            continue
        if group == "block":
            depth, i = 1, end
            while depth:
                close = text.find("*/", i)
                if close < 0:
                    raise _LexError("unterminated comment")
                opened = text.find("/*", i, close)
                if opened >= 0:
                    depth, i = depth + 1, opened + 2
                else:
                    depth, i = depth - 1, close + 2
            continue
        if group == "dollar":
            close = text.find(m.group(), end)
            if close < 0:
                raise _LexError("unterminated dollar quote")
            end = close + len(m.group())
        elif group == "other" and m.group() in "'\"$":
            raise _LexError("unterminated quote")
        out.append((_KINDS[group or "other"], i, end))
        i = end
    return out


def _const_locations(trees: Iterable[Any]) -> set[int]:
    """Byte offsets of every ``A_Const`` node of the parse trees."""
    found: set[int] = set()
    dict_, list_ = dict, list

    def walk(node: Any) -> None:
        if node.__class__ is dict_:
            const = node.get("A_Const")
            if const is not None and "location" in const:
                found.add(int(const["location"]))
            for v in node.values():
                cls = v.__class__
                if cls is dict_ or cls is list_:
                    walk(v)
        else:
            for v in node:
                cls = v.__class__
                if cls is dict_ or cls is list_:
                    walk(v)

    for tree in trees:
        walk(tree)
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


def _literal_value(raw: str) -> str:
    """The value of one string literal token as the server reads it (close enough to compare:
    quotes undoubled, the common E'' escapes resolved)."""
    if raw.startswith("$"):
        tag_end = raw.index("$", 1) + 1
        return raw[tag_end:len(raw) - tag_end]
    prefix = raw[:raw.index("'")]
    body = raw[len(prefix) + 1:-1].replace("''", "'")
    if prefix.lower() == "e":
        body = re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r", "b": "\b",
                                            "f": "\f"}.get(m.group(1), m.group(1)), body)
    return body


def statement_fragments(text: str, _nested: bool = False) -> set[str]:
    """Whole tokens of ``text`` a server message may echo back to its sender: the values of
    its string literals, its numbers and its identifiers (case-folded unless quoted). A
    dollar-quoted string is also a body (DO, a function): its own tokens count too, one level
    deep (``RAISE NOTICE 'hello'`` in a DO block echoes ``hello``), and so do the texts its
    ``EXECUTE`` statements build from its constants alone (``analysis._fold``)."""
    try:
        toks = _tokens(text)
    except _LexError:
        return set()
    out: set[str] = set()
    for kind, s, e in toks:
        raw = text[s:e]
        if kind == _LIT:
            if raw[0].isdigit() or raw[0] == ".":
                out.add(raw)
            else:
                value = _literal_value(raw)
                out.add(value)
                if raw[0] == "$" and not _nested:
                    out |= statement_fragments(value, True)
                    # what its EXECUTEs send, when built from its constants alone (_fold)
                    for built in dynamic_constant_texts(value):
                        out.add(built)
                        out |= statement_fragments(built, True)
        elif kind == _WORD:
            if raw.startswith('"'):
                out.add(raw[1:-1].replace('""', '"'))
            elif raw[:3].lower() == 'u&"':
                out.add(raw[3:-1].replace('""', '"'))
            else:
                out.add(raw.lower())
    return out


def lexing_depends_on_scs(text: str, _depth: int = 0) -> bool:
    """Whether PostgreSQL could lex ``text`` differently with ``standard_conforming_strings``
    off than libpg_query does (it always lexes with it on).

    The two lexings differ only inside a plain ``'…'`` string: with the setting off, scan.l
    reads it as an escape string, where ``\\'`` does not end it (``'\\'; DELETE …; --'`` is
    one literal to the analyzer and a literal plus a DELETE to the server). ``E'…'`` strings,
    comments, quoted identifiers and dollar quotes lex the same either way. Tokens are read
    as the server reads them with the setting on, and as long as no plain string (nor an
    ``N'…'``, ``B'…'``, ``X'…'``, ``U&'…'`` one: counted as plain, erring on the safe side)
    holds a backslash, each token ends where the other lexing ends it too, so the whole text
    lexes the same. A dollar-quoted body holding a backslash is read the same way, as code
    (a DO block or function body is lexed by the server when it runs; three levels deep, then
    dependent). Fail closed: text this lexer cannot finish counts as dependent."""
    if "\\" not in text:
        return False  # no backslash at all: nothing can lex differently
    try:
        toks = _tokens(text)
    except _LexError:
        return True
    for kind, s, e in toks:
        if kind != _LIT or "\\" not in text[s:e]:
            continue
        if text[s] == "$":
            # A dollar quote has no escapes, but its body may be code the server lexes when
            # it runs, under the setting then (a DO block, a function body: attack5 F2)
            if _depth >= 3 or lexing_depends_on_scs(_literal_value(text[s:e]), _depth + 1):
                return True
        elif text[s] not in "eE":
            return True  # (numbers hold no backslash)
    return False
