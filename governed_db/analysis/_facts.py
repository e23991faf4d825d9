"""Statement facts: what one statement does, as PostgreSQL's own parser sees it (the model).

Built by ``_extract`` (the walk is in ``_walk`` and ``_statements``).

The parse tree is walked as plain dicts, as pgparse returns it. Wrapped nodes look like
``{"SelectStmt": {...}}``; some fields hold bare nodes (``DeleteStmt.relation`` is a bare
RangeVar), which is why the walker dispatches on the key *and* falls back to generic recursion.

Why these rules (each checked against a real PostgreSQL 15, see ``shared/corpus``):

* kinds are what executes *now*: data-modifying CTEs even when unreferenced, the inner
  statement of ``EXPLAIN ANALYZE`` (never of a plain ``EXPLAIN``), ``COPY (query)``,
  ``CREATE TABLE AS``/``SELECT INTO``, ``EXECUTE`` of a statement prepared earlier in the
  same string. Stored bodies (views, rules, SQL-standard function bodies, ``PREPARE``) do not
  execute now, so they add no kind, read or write.
* functions are collected everywhere, stored bodies included: a dangerous call embedded in a
  view or a column default runs later, on someone else's behalf.
* anything the analyzer cannot see through (``DO``, ``CALL``, ``EXECUTE``/``FETCH`` of an
  object it did not see prepared/declared, unknown statement types) is marked ``opaque`` so
  that the policy fails closed.
"""

from __future__ import annotations

import attrs

from ._nodes import Node
from ._vocabulary import DDL_KINDS, READ_KINDS, TRANSACTION_KINDS, is_dangerous_function

__all__ = ["CopyFacts", "StatementFacts"]


@attrs.frozen(kw_only=True)
class CopyFacts:
    """What a COPY statement does: direction, endpoint and whether a query feeds it."""

    is_from: bool
    program: bool
    server_file: bool
    to_client: bool
    has_query: bool


@attrs.frozen(kw_only=True)
class StatementFacts:
    """Facts about one statement of a (possibly multi-statement) string.

    Attributes:
        kind: the top-level statement kind (``"SELECT"``, ``"DELETE"``, ``"EMPTY"``, ...).
        kinds: every kind that executes now (see the module docstring).
        writes / reads: relation names as written (``schema.rel`` when qualified).
        functions: every function called or embedded, case-folded and unqualified.
        unbounded_writes: targets of UPDATE/DELETE/MERGE without an effective condition.
        settings: ``(name, value-or-None)`` of every setting changed (``SET``, ``RESET``,
            transaction modes); ``"*"`` for ``RESET ALL``/``DISCARD ALL``.
        read_write_requested: a ``BEGIN``/``SET TRANSACTION`` asked for READ WRITE.
        opaque_reasons: why static analysis cannot know the effect (fail closed on these).
        prepares / executes / declares / fetches / closes / deallocates: names for
            session-state tracking, exactly as PostgreSQL's parser resolved them (quotes,
            case folding, truncation to 63 bytes); ``"*"`` for ``CLOSE ALL`` and
            ``DEALLOCATE ALL``.
        session_refs: ``(index into opaque_reasons, "prepared" | "cursor", name)`` for every
            EXECUTE/FETCH/MOVE of an object not prepared/declared earlier in the same
            string: what :func:`~governed_db.rules.effective_facts` resolves against the
            session, by the name from the parse tree (never parsed back out of a message).
        copy: COPY details, when the statement is a COPY.
        tree: the statement's parse tree (for lineage), not for mutation.
        text: the statement's own text, sliced from the string that was sent.
        effect_unknown: why the effect of a called function cannot be known (its body is
            opaque: another language, dynamic SQL); filled in with the catalog.
        calls_writing_function: a called user function may change data (body analysis).
        explain_analyze: an ``EXPLAIN (ANALYZE)`` that runs its statement (see
            ``policy_kinds``).
        row_kinds: the row operations (INSERT/UPDATE/DELETE) the statement performs, by
            effect: each WHEN action of a MERGE, INSERT for COPY FROM, INSERT and UPDATE for
            ``INSERT ... ON CONFLICT DO UPDATE``, the inner statements of writable CTEs.
    """

    kind: str
    kinds: frozenset[str]
    writes: frozenset[str]
    reads: frozenset[str]
    functions: frozenset[str]
    unbounded_writes: frozenset[str]
    settings: tuple[tuple[str, str | None], ...]
    read_write_requested: bool
    opaque_reasons: tuple[str, ...]
    prepares: tuple[str, ...]
    executes: tuple[str, ...]
    declares: tuple[str, ...]
    fetches: tuple[str, ...]
    closes: tuple[str, ...]
    copy: CopyFacts | None
    tree: Node = attrs.field(eq=False, repr=False)
    text: str = attrs.field(repr=False)
    # (schema or "", name exactly as resolved by the parser) of every function call, and
    # (schema or "", symbol) of every operator: for the read-only allow-lists, which must
    # tell ``pg_catalog.lower`` from ``public.lower`` and ``"Lower"`` from ``lower``.
    function_refs: frozenset[tuple[str, str]] = frozenset()
    operators: frozenset[tuple[str, str]] = frozenset()
    # a set_config() whose setting name is not a constant (its effect cannot be judged)
    dynamic_settings: bool = False
    # unqualified names called as ``name(alias)``: PostgreSQL's functional notation for a
    # column (``ssn(u)`` is ``u.ssn``) when no function of that name exists
    column_notation: frozenset[str] = frozenset()
    effect_unknown: tuple[str, ...] = ()
    calls_writing_function: bool = False
    deallocates: tuple[str, ...] = ()
    session_refs: tuple[tuple[int, str, str], ...] = ()
    explain_analyze: bool = False
    vacuum_full: bool = False
    row_kinds: frozenset[str] = frozenset()

    @property
    def dangerous_functions(self) -> frozenset[str]:
        return frozenset(f for f in self.functions if is_dangerous_function(f))

    @property
    def has_unbounded_write(self) -> bool:
        return bool(self.unbounded_writes)

    @property
    def policy_kinds(self) -> frozenset[str]:
        """``kinds`` as allow-lists and approval rules see them: with ``"EXPLAIN ANALYZE"``
        when an EXPLAIN runs its statement (it reports actual row counts: not a plan only),
        and ``"VACUUM FULL"`` for a VACUUM that rewrites its tables (a schema-level change,
        like CLUSTER)."""
        extra = set()
        if self.explain_analyze:
            extra.add("EXPLAIN ANALYZE")
        if self.vacuum_full:
            extra.add("VACUUM FULL")
        return self.kinds | extra if extra else self.kinds

    @property
    def opaque(self) -> bool:
        return bool(self.opaque_reasons)

    @property
    def is_ddl(self) -> bool:
        return bool(self.policy_kinds & DDL_KINDS)

    @property
    def writes_data(self) -> bool:
        return bool(self.kinds - READ_KINDS - TRANSACTION_KINDS - {"EXPLAIN", "DECLARE",
                                                                    "FETCH", "CLOSE"})
