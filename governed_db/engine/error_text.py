"""Server text out: what an error or notice may echo (the statement in question and catalog
identifiers), and server errors re-raised with data values removed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

import attrs

from ..analysis import Analysis, StatementFacts, analyze
from ..analysis._statements import do_block_texts
from ..errors import StatementDenied
from ..identity import Identity
from .._redact import (Allowed, RedactedResult, message_from_fields, query_excerpt,
                       redact_fields)
from .context import StatementContext
from ._governor_state import GovernorState

if TYPE_CHECKING:
    from psycopg.pq.abc import PGresult

# What the SQL of a DO block judged by its texts may be (ErrorTextStage._do_echo_safe).
_PLAIN_KINDS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})


def redact_exception(exc: BaseException, allowed: Allowed, echo: bool = False) -> BaseException:
    """A server error re-raised as the same class (SQLSTATE kept) whose message, detail, hint,
    context, identifier fields and ``pgresult`` echo only what ``allowed`` permits (see
    ``_redact``). Errors raised by the client library itself carry no server text: kept."""
    import psycopg

    if not isinstance(exc, psycopg.Error) or isinstance(exc, StatementDenied):
        return exc
    diag = exc.diag
    if diag.sqlstate is None:
        return exc
    info = redact_fields(diag, allowed, echo=echo)
    pgres = exc.pgresult
    status = pgres.status if pgres is not None else None
    # libpq's "LINE n:" excerpt is of the statement sent, unless the server reports a
    # position in a function-built query (then it shows that one): kept only in the first case
    excerpt = query_excerpt(str(exc), allowed) if diag.statement_position \
        and not diag.internal_position and not diag.internal_query else None
    # A stand-in for the PGresult: psycopg takes any object with error_field() as one
    # (errors._is_pgresult), and that is all it and callers read of a failed result.
    redacted = cast("PGresult", RedactedResult(info, status, excerpt))
    new = type(exc)(message_from_fields(info, excerpt), info=redacted, pgconn=exc.pgconn)
    return new


class ErrorTextStage(GovernorState):
    """The Governor's methods of this stage (see governor.py)."""

    def error_allowed(self, in_flight: Iterable[StatementContext] = (),
                      internal_query: str | None = None) -> tuple[Allowed, bool]:
        """What server text may echo now: the statement(s) whose result it is — the last one
        sent, and those still in flight in a pipeline — and catalog identifiers.
        ``internal_query`` is the message's ``QUERY:`` (the text a function or DO block built),
        which a DO block's folded EXECUTE must equal (``_echo_safe``).

        Only the statement(s) in question: echoing a value the caller sent in an earlier
        statement would let one statement carry the guesses another one's error confirms."""
        pairs = [(ctx.identity, ctx.analysis) for ctx in in_flight]
        if self.sent:
            pairs.append(self.sent[-1])
        catalog = self.catalog
        allowed = Allowed([a.text for _, a in pairs],
                          catalog.identifiers if catalog is not None else (),
                          own=bool(pairs) and all(self._values_own(a) for _, a in pairs))
        return allowed, all(self._echo_safe(ident, a, internal_query) for ident, a in pairs)

    def _values_own(self, analysis: Analysis) -> bool:
        """Whether every value ``analysis`` can put in a message is computed from its own
        constants by built-in functions: it reads and writes no relation (so no row, trigger,
        rule or view body is involved), calls only functions the snapshot knows as built-in,
        runs no prepared statement or cursor and nothing opaque (dynamic SQL, another
        language). Then no sensitive column is reachable and its messages pass whole (with
        the value detectors applied); anything else is judged by the allow-list."""
        catalog = self.catalog
        if catalog is None or analysis.error is not None or not catalog.builtin_functions:
            return False
        for s in analysis.statements:
            if (s.reads or s.writes or s.opaque or s.effect_unknown or s.executes or s.fetches
                    or s.declares or s.copy is not None or s.column_notation
                    or s.calls_writing_function):
                return False
            if s.functions & catalog.user_functions or s.functions - catalog.builtin_functions:
                return False
        return True

    def _echo_safe(self, ident: Identity, analysis: Analysis,
                   internal_query: str | None = None, *, built: bool = False) -> bool:
        """Whether errors of ``analysis`` may echo its literals: it reads no column masked for
        ``ident`` (an UPDATE, DELETE, MERGE or upsert reads its target's rows too; an INSERT
        into a table with triggers or rules runs them), calls no user function and reads no
        view whose body could. A ``DO`` block is judged by the SQL it runs, when that is
        known: see ``_do_echo_safe``."""
        catalog = self.catalog
        if catalog is None or analysis.error is not None:
            return False
        for s in analysis.statements:
            if built and (s.kind not in _PLAIN_KINDS or s.kinds - _PLAIN_KINDS
                          or "set_config" in s.functions):
                return False
            if s.kind == "DO" and s.opaque:
                if built or not self._do_echo_safe(ident, s, internal_query):
                    return False
                continue
            tables = set(s.reads)
            if s.kind != "INSERT" or (s.tree.get("InsertStmt") or {}).get("onConflictClause"):
                tables |= s.writes
            else:
                for name in s.writes:
                    rel = catalog.resolve(name)
                    if rel is not None and rel.oid in catalog.side_effect_tables:
                        return False
            probe = attrs.evolve(s, reads=frozenset(tables), writes=frozenset())
            if self._may_touch_sensitive(probe, catalog, ident):
                return False
        return True

    def _do_echo_safe(self, ident: Identity, s: StatementFacts,
                      internal_query: str | None) -> bool:
        """A DO block opaque only for one ``EXECUTE`` of a text built from its constants
        (psycopg's ``EXECUTE format('insert into "%s" ...', chr(8364))``): echo-safe when the
        server reports running exactly the text folded here (its ``QUERY:``; so a fold that
        differs from the server's — a cast, a keyword ``%I`` quotes, an overload — never
        counts), and every text of the block is plain row SQL (no SET, set_config, DDL or
        nested DO that could change what the built text resolves to) judged echo-safe."""
        texts = do_block_texts(s.tree.get("DoStmt") or {})
        if texts is None or internal_query is None:
            return False
        static, dynamic = texts
        if dynamic != [internal_query]:
            return False
        return all(self._echo_safe(ident, analyze(t), built=True) for t in (*static, *dynamic))

    def redact_error(self, exc: BaseException) -> BaseException:
        """The same exception class, SQLSTATE kept, with data values removed from its text."""
        return redact_exception(exc, *self.error_allowed())

