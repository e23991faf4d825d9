"""Stage 0, the statement's context: what one statement carries through the pipeline, the
identity scope every cached answer is keyed by, and the keyed parameter digests."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from ..analysis import Analysis, StatementFacts
from ..audit._record import param_digests, statement_id
from ..identity import Identity
from ..masking import MaskPlan
from ..rules import Decision


_CATALOG_SCHEMAS = frozenset({"pg_catalog", "information_schema"})


class StatementContext:
    """Everything known about one statement on its way through the pipeline.

    One is made per statement, on the hot path: the constructor sets only what every
    statement has; everything else starts as the class attribute below (immutable defaults)
    and is set on the instance when it changes. Parameter hashes are computed on first use
    (by the audit writer thread, or an approval check).
    """

    _params_digest: tuple[str, ...] | None = None
    # The statement's number in this process (its id is made from it; the audit writer is
    # given the number); 0 for a context made from a record, whose id is given.
    _n: int = 0
    approval_id: str | None = None
    rows_returned = 0
    affected_rows: int | None = None
    runtime_findings: list[str] | None = None
    finished = False
    span: Any = None
    # A read-only identity's allowed write: runs in a transaction made READ WRITE for it.
    read_write = False
    approval_consumed = False  # given back when the statement does not run
    # The executions an approval covers (Governor.execution_digest of each), and how many of
    # them were sent: every execution is checked before it is sent (executemany).
    approved_runs: tuple[tuple[str, ...], ...] | None = None
    executions = 0
    many_sent = 0  # executions of an executemany sent or about to be (_cursor_base)
    current_run: tuple[Any, Any] | None = None  # (text, params) of executemany's current one
    effect_check = False  # runs under the exact blast radius (see gate())
    measured = False  # running inside the blast-radius savepoint (_cursor_base)
    # May run code the analyzer did not see: the identity settings are read back after it.
    settings_check = False
    # What every cached answer about this statement is keyed by (see Governor.gate): the
    # text, the identity's scope, the policy, the catalog snapshot and the versions of the
    # session objects (prepared statements, cursors) the text refers to.
    key: tuple[Any, ...] = ()
    server_mask: Any = None  # the rewrite sent instead of the text (_server_mask)
    # (result index, column index, detector) already recorded as masked in free text
    detections: set[tuple[int, int, str]] | None = None
    # The cached plan the gate answered from (engine/cached_plan.py), None: the full gate.
    cached: Any = None

    def __init__(self, *, id: str | int, identity: Identity, analysis: Analysis,
                 statements: tuple[StatementFacts, ...], decision: Decision, started: float,
                 params: Sequence[Any] | None = None, param_key: bytes = b"") -> None:
        if isinstance(id, int):
            self._n = id  # (the id text is made on first use: see id)
        else:
            self.id = id  # (a replayed record's)
        self.identity = identity
        self.analysis = analysis
        self.statements = statements
        self.decision = decision
        self.started = started
        self.params = params
        self._param_key = param_key
        # result index -> (mask plan, {output column: "strategy:reason"}, base columns)
        self.plans: dict[int, tuple[MaskPlan | None, Mapping[str, str], frozenset[str]]] = {}
        # result index -> ((output column, its base columns or "?"), ...): names, no values
        self.lineage: dict[int, tuple[tuple[str, tuple[str, ...]], ...]] = {}

    @functools.cached_property
    def id(self) -> str:
        """The statement id (audit records, spans, events), made from its number when first
        read (the writer usually makes it, from the number it is given)."""
        return statement_id(self._n)

    @property
    def masked(self) -> dict[str, str]:
        """Output columns masked in any result of the statement, with strategy and reason."""
        out: dict[str, str] = {}
        for _, masked, _ in self.plans.values():
            out.update(masked)
        return out

    @property
    def columns(self) -> set[str]:
        """Base columns (``schema.table.column``) the statement's results derive from."""
        out: set[str] = set()
        for _, _, cols in self.plans.values():
            out.update(cols)
        return out

    @property
    def params_digest(self) -> tuple[str, ...]:
        """Keyed hashes of parameter values: records can match values, never reveal them."""
        if self._params_digest is None:
            self._params_digest = digest_params(self.params, self._param_key)
        return self._params_digest


# The gate makes a cached plan's context without __init__ (engine/decide.py: what __init__
# sets, plus the plan's key and flags).
_new = object.__new__


def digest_params(params: Sequence[Any] | None, key: bytes) -> tuple[str, ...]:
    """The keyed parameter digests audit records carry (``audit._record.param_digests``):
    approvals bind to the same ones."""
    return param_digests(params, key)


def scope_key(identity: Identity) -> tuple[Any, ...]:
    """Everything about ``identity`` that a decision, a mask plan or a server-side rewrite can
    depend on, as a hashable key.

    Every field that takes part in the identity's equality — kind, id, roles, purpose,
    on_behalf_of, model, and whatever fields ``Identity`` gains later (verified claims...):
    a new field joins every cache key by default instead of being forgotten (fail closed).
    Left out: the free-form ``attributes`` (tool-call and run ids change per call; no rule or
    masking decision reads them — one that does must be added here).
    """
    cls = type(identity)
    out: list[Any] = [cls]
    for field in attrs.fields(cls):
        if not field.eq:
            continue
        value = getattr(identity, field.name)
        try:
            hash(value)
        except TypeError:
            value = repr(sorted(value.items())) if isinstance(value, Mapping) else repr(value)
        out.append(value)
    return tuple(out)


_ids = itertools.count(1)
_next_n = _ids.__next__


def _next_id() -> int:
    """The next statement number of this process (see StatementContext.id)."""
    return _next_n()


def kinds_label(kinds: Iterable[str]) -> str:
    return ",".join(sorted(kinds))

