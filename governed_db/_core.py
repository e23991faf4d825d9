"""The governance pipeline, free of I/O and shared by the sync and async classes.

identity → analyze (cached) → decide (policy) → [execute: psycopg] → mask plan → record

A :class:`Governor` belongs to one connection. The cursor choke points call :meth:`gate` with
the exact bytes psycopg is about to send, :meth:`plan` when a result set becomes current, and
:meth:`finish` when the statement is over. Anything that needs the server (pushing the identity,
loading the catalog, savepoints) is expressed as SQL this module *returns*; the thin sync/async
shells run it.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import itertools
import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from . import _config, _server_mask, telemetry
from ._catalog import Catalog
from .analysis import Analysis, StatementFacts, analyze
from .analysis._effects import (
    may_run_unseen_code,
    static_bound,
    unknown_functions,
    with_function_effects,
)
from .analysis._lineage import UNKNOWN, statement_lineage
from .analysis._probes import _constant
from .errors import ApprovalRequired, StatementDenied
from .guardrails import Decision, effective_facts, evaluate, rule_limit
from .identity import Identity, current_identity, derived_identity
from ._redact import Allowed, RedactedResult, message_from_fields, redact_fields
from .masking import SAFE_TYPE_OIDS, BoundPlan, Classifier, ColumnMask, MaskPlan
from .policy import Policy

__all__ = ["Governor", "StatementContext", "scope_key"]

logger = logging.getLogger("governed_db")

_CATALOG_SCHEMAS = frozenset({"pg_catalog", "information_schema"})
# Statement kinds that change rows (besides anything with a write target).
_EFFECT_KINDS = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "CALL", "EXECUTE"})
_LEVEL_RANK = {"warning": 0, "approval": 1, "error": 2}
# Statements that can end a transaction or change the transaction mode / session settings.
_TX_STATE_KINDS = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE",
                             "ROLLBACK TO", "PREPARE TRANSACTION", "COMMIT PREPARED",
                             "ROLLBACK PREPARED", "TRANSACTION", "SET", "RESET", "DISCARD"})
# After one of these, a read-only identity's transaction mode is read back from the server.
TX_MODE_KINDS = frozenset({"BEGIN", "SET", "RESET", "TRANSACTION"})

# Rows touched in the current transaction per table, including cascades and trigger writes:
# inserted, updated, deleted, and the statistics' estimate of the table's live rows (which
# decides whether an exact count is needed to tell "every row" apart from "many rows").
BLAST_COUNT_SQL = (b"SELECT x.relid::pg_catalog.regclass::text, x.n_tup_ins, x.n_tup_upd,"
                   b" x.n_tup_del, pg_catalog.pg_stat_get_live_tuples(x.relid)"
                   b" FROM pg_catalog.pg_stat_xact_user_tables x"
                   b" WHERE x.n_tup_ins + x.n_tup_upd + x.n_tup_del > 0")
BLAST_SAVEPOINT = b"governed_db_blast_radius"
# Statement kinds a READ ONLY transaction refuses: an allowed (or approved) one of these, run
# by a read-only identity, runs in a transaction switched to READ WRITE for it alone.
READ_WRITE_KINDS = frozenset({
    "INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "CREATE", "ALTER", "DROP", "TRUNCATE",
    "GRANT", "REVOKE", "COMMENT", "REFRESH", "CLUSTER", "REINDEX", "SECURITY LABEL", "LOCK",
    "NOTIFY", "LISTEN", "IMPORT", "REASSIGN", "CALL", "EXECUTE"})


# Functions that keep text values whole (so the detectors still see every value's shape) or
# cannot return text: a statement calling only these may compute from free text and still
# get in-place detection (see Governor._free_text). Anything else — replace, translate,
# substr, left/right, split_part, regexp_*, reverse, encode, overlay, trim with a character
# set, user functions — makes computed free-text values redacted whole for the kinds
# ``[masking] detect_in_text`` names.
TEXT_PRESERVING = frozenset({
    "lower", "upper", "concat", "concat_ws", "format", "coalesce", "nullif", "greatest",
    "least", "textcat", "text", "string_agg", "array_agg", "json_agg", "jsonb_agg",
    "json_object_agg", "jsonb_object_agg", "array_to_string", "array_to_json", "to_json",
    "to_jsonb", "row_to_json", "json_build_object", "jsonb_build_object", "json_build_array",
    "jsonb_build_array", "jsonb_strip_nulls", "jsonb_pretty", "unnest", "array_append",
    "array_prepend", "array_cat", "min", "max", "first_value", "last_value", "nth_value",
    "lag", "lead", "mode",
    # results that are not text (safe by type anyway)
    "count", "sum", "avg", "length", "char_length", "character_length", "octet_length",
    "bit_length", "strpos", "position", "row_number", "rank", "dense_rank", "percent_rank",
    "cume_dist", "ntile", "now", "date_trunc", "date_part", "extract", "round", "trunc",
    "abs", "ceil", "ceiling", "floor", "bool_and", "bool_or", "every", "stddev",
    "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "age", "make_date",
    "make_timestamp", "current_date", "current_timestamp", "localtimestamp", "clock_timestamp",
    "statement_timestamp", "transaction_timestamp", "to_timestamp", "to_date", "to_number",
    "percentile_cont", "percentile_disc", "corr", "covar_pop", "covar_samp", "regr_slope",
    "array_length", "cardinality", "jsonb_array_length", "json_array_length", "num_nulls",
    "num_nonnulls", "starts_with",
})


class StatementContext:
    """Everything known about one statement on its way through the pipeline.

    A plain slotted class: one is made per statement, on the hot path. Parameter hashes are
    computed on first use (by the audit writer thread, or an approval check).
    """

    __slots__ = ("id", "identity", "analysis", "statements", "decision", "started", "params",
                 "_params_digest", "_param_key", "approval_id", "rows_returned",
                 "affected_rows", "runtime_findings", "finished", "span", "plans", "lineage",
                 "read_write", "approval_consumed", "effect_check", "server_mask",
                 "detections", "key", "measured", "settings_check")

    def __init__(self, *, id: str, identity: Identity, analysis: Analysis,
                 statements: tuple[StatementFacts, ...], decision: Decision, started: float,
                 params: Sequence[Any] | None = None, param_key: bytes = b"") -> None:
        self.id = id
        self.identity = identity
        self.analysis = analysis
        self.statements = statements
        self.decision = decision
        self.started = started
        self.params = params
        self._params_digest: tuple[str, ...] | None = None
        self._param_key = param_key
        self.approval_id: str | None = None
        self.rows_returned = 0
        self.affected_rows: int | None = None
        self.runtime_findings: list[str] | None = None
        self.finished = False
        self.span: Any = None
        # A read-only identity's allowed write: runs in a transaction made READ WRITE for it.
        self.read_write = False
        self.approval_consumed = False  # given back when the statement does not run
        self.effect_check = False  # runs under the exact blast radius (see gate())
        self.measured = False  # running inside the blast-radius savepoint (_cursor_base)
        # May run code the analyzer did not see: the identity settings are read back after it.
        self.settings_check = False
        # What every cached answer about this statement is keyed by (see Governor.gate):
        # the text, the identity's scope, the policy, the catalog snapshot and the versions
        # of the session objects (prepared statements, cursors) the text refers to.
        self.key: tuple[Any, ...] = ()
        self.server_mask: Any = None  # the rewrite sent instead of the text (_server_mask)
        # result index -> (mask plan, {output column: "strategy:reason"}, base columns)
        self.plans: dict[int, tuple[MaskPlan | None, Mapping[str, str], frozenset[str]]] = {}
        # result index -> ((output column, its base columns or "?"), ...): names, no values
        self.lineage: dict[int, tuple[tuple[str, tuple[str, ...]], ...]] = {}
        # (result index, column index, detector) already recorded as masked in free text
        self.detections: set[tuple[int, int, str]] | None = None

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


def digest_params(params: Sequence[Any] | None, key: bytes) -> tuple[str, ...]:
    if not params:
        return ()
    out = []
    for p in params:
        raw = p if isinstance(p, (bytes, bytearray, memoryview)) else (
            b"\x00NULL" if p is None else str(p).encode())
        out.append(hmac.new(key, bytes(raw), hashlib.sha256).hexdigest()[:24])
    return tuple(out)


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
_id_prefix = uuid.uuid4().hex[:16]


def _next_id() -> str:
    """Unique per process run (random prefix) and cheap (a counter, no syscall)."""
    return f"{_id_prefix}{next(_ids):012x}"


class Governor:
    """Per-connection governance: policy, identity, session state and the audit hand-off."""

    def __init__(self, *, policy: Policy, identity: Identity | None, auditor: Any,
                 catalog_key: tuple[Any, ...], conn_info: Mapping[str, Any]) -> None:
        self.policy = policy
        self.conn_identity = identity
        self.auditor = auditor
        self.catalog_key = catalog_key
        self.conn_info = dict(conn_info)
        self.classifier = Classifier(policy)
        self.catalog: Catalog | None = None
        self.catalog_stale = True
        self.catalog_forced = False  # stale because of DDL / an unknown object: query again
        self.catalog_private = False  # the snapshot holds this session's temporary tables
        # A result named a relation or column the snapshot does not know: the catalog is
        # reloaded and the result planned again before its rows reach the caller.
        self.replan = False
        # Session state the analyzer cannot see from one string, by the names PostgreSQL's
        # parser resolved: facts and query trees of PREPAREd statements and DECLAREd cursors,
        # and a version per object ("prepared:NAME" / "cursor:NAME", from a per-connection
        # counter) that the cache key of every statement referring to it holds. Changed only
        # through _session_put / _session_drop.
        self.prepared: dict[str, StatementFacts] = {}
        self.cursors: dict[str, StatementFacts] = {}
        self.session_trees: dict[str, Any] = {}
        self.session_versions: dict[str, int] = {}
        self._session_counter = itertools.count(1)
        self.holdable_cursors: set[str] = set()  # DECLARE ... WITH HOLD: outlive COMMIT
        # Whether object names with non-ASCII characters are exact: PostgreSQL truncates
        # names to 63 bytes *in the server encoding*, the parser here in UTF-8.
        self.server_utf8 = True
        # The Python codec of the session's client encoding (result column names arrive in
        # it); kept current by the connection after every operation.
        self.codec = "utf-8"
        self._scope: tuple[Identity | None, tuple[Any, ...]] = (None, ())
        # What the server session currently carries (None: unknown, push before next statement)
        self.server_identity: str | None = None
        # Settings governance imposes for an identity (READ ONLY, statement_timeout) and the
        # session's own values from before, put back when an identity that does not require
        # them acts. Governance never sets what no identity's policy requires: a service
        # identity leaves the application's default_transaction_read_only and
        # statement_timeout alone, after rollbacks too.
        self.server_read_only: bool | None = None  # True: on is imposed; None: unknown
        self.server_timeout: str | None = None  # the timeout imposed (None: none / unknown)
        self.prior_read_only: str | None = None  # the session's value before READ ONLY
        self.prior_timeout: str | None = None  # the session's value before the timeout
        self.synced_in_tx = False  # sync SETs ran inside the open transaction (undone by ROLLBACK)
        self.server_rls: tuple[tuple[str, str], ...] | None = None  # identity_settings()
        self.synced_identity: Identity | None = None  # the object last synced (fast path)
        self.pipeline_synced = False  # a sync was queued in a pipeline (see _gov_session_gen)
        self.server_search_path = False
        self.pending_identity: Identity | None = None  # from _start_query to gate()
        # Whether the next statement is the first of its transaction (nothing has taken a
        # snapshot yet, so the transaction can still be made READ WRITE); set by the cursor.
        self.tx_fresh = True
        # Server state verified after every operation (see _connection_base): reported
        # parameters expected unchanged since connect, and a violation found by a query.
        self.expected_params: dict[str, str | None] = {}
        self.violation: str | None = None
        self.last_statement_id: str | None = None
        self._param_key = _config.param_hash_key()
        # (identity, analysis) of the last statement sent: error and notice text may echo
        # its tokens back.
        self.sent: collections.deque[tuple[Identity, Analysis]] = collections.deque(maxlen=1)
        # Caches, by StatementContext.key (text, identity scope, policy, catalog snapshot,
        # session objects referred to): decisions; mask plans (plus the result's shape).
        self._decisions: dict[tuple[Any, ...], tuple[tuple[StatementFacts, ...], Decision]] = {}
        self._plans: dict[tuple[Any, ...], tuple[tuple[MaskPlan | None, dict[str, str],
                                                        frozenset[str]], Any]] = {}
        # By the decision key: (runs under the blast radius, changes data a READ ONLY
        # transaction refuses) — both depend only on the text, identity and snapshot.
        self._effects: dict[tuple[Any, ...], tuple[bool, bool, bool]] = {}
        # Statement shapes masked by the server, by the decision key (see _server_mask).
        self.server_masks: dict[tuple[Any, ...], Any] = {}

    # -- catalog snapshot ----------------------------------------------------------------------

    def mark_catalog_stale(self) -> None:
        """Reload the snapshot before the next statement (DDL ran, an unknown object showed)."""
        self.catalog_stale = True
        self.catalog_forced = True

    def catalog_due(self) -> bool:
        """Whether the snapshot must be refreshed before the next statement."""
        if self.catalog_stale:
            return True
        if self.catalog is None or not self.catalog.fresh():
            self.catalog_stale = True  # by age: a newer shared snapshot will do
            return True
        return False

    # -- identity ------------------------------------------------------------------------------

    def identity(self) -> Identity:
        """The identity for the next statement (acting_as > connection > configure > env)."""
        ident = current_identity() or self.conn_identity or _config.default_identity()
        return ident if ident is not None else derived_identity()

    def check_identity(self, ident: Identity) -> None:
        """Raise (recorded) when ``ident`` may not act under this connection's policy: its
        token expired (verification is cached until ``exp``: a clock read per statement),
        or its kind must be verified and it is not."""
        from .identity import require_verified

        try:
            require_verified(ident, self.policy)
            ident.check_current()
        except Exception as exc:
            self.event("identity_refused", ident, reason=getattr(exc, "reason", "unverified"))
            raise

    def read_only_for(self, identity: Identity) -> bool:
        return identity.kind in self.policy.session.read_only_kinds

    def session_sync_sql(self, identity: Identity, in_transaction: bool,
                         reported_read_only: str | None = None) -> list[bytes]:
        """SQL that brings the server session in line with ``identity`` (empty when it is).

        Pushes the identity to ``application_name`` and the ``governed_db.identity`` GUC (so
        ``pg_stat_activity`` and pgAudit see who acts) and applies READ ONLY and
        ``statement_timeout`` when the identity's kind requires them. A setting the identity
        does not require is only touched to put back the session's own value after an
        identity that required it (``reported_read_only``: the value the server reports for
        ``default_transaction_read_only``, None where it does not report it).
        """
        out: list[bytes] = []
        label = identity.label
        rls = identity_settings(identity)
        if label != self.server_identity or rls != self.server_rls:
            # One statement, sent only when the identity changes: the row-level security
            # hand-off (identity_settings) costs nothing per statement.
            lit = _sql_literal(label[:200])
            out.append(b"SELECT pg_catalog.set_config('governed_db.identity', " + lit +
                       b", false), pg_catalog.set_config('application_name', " +
                       _sql_literal(("governed_db " + label)[:63]) + b", false)" +
                       b"".join(b", pg_catalog.set_config(" + _sql_literal(name) + b", " +
                                _sql_literal(value) + b", false)" for name, value in rls))
        if self.read_only_for(identity):
            if reported_read_only is not None:
                switch = reported_read_only != "on"  # what the server says, not a guess
            else:
                switch = self.server_read_only is not True
            if switch:
                if self.prior_read_only is None:
                    self.prior_read_only = reported_read_only or "off"
                out.append(b"SET default_transaction_read_only = on")
            if in_transaction and self.server_read_only is not True:
                # The current transaction started before the switch: make it read-only too.
                out.append(b"SET LOCAL transaction_read_only = on")
        elif self.prior_read_only is not None:
            # Imposed for an earlier identity: the session's own value goes back.
            if reported_read_only != self.prior_read_only:
                out.append(b"SET default_transaction_read_only = "
                           + (b"on" if self.prior_read_only == "on" else b"off"))
        timeout = self.policy.session.statement_timeout.get(identity.kind)
        if timeout is not None:
            if timeout != self.server_timeout:
                # The session's own value is read in the same statement, to be put back.
                out.append(_TIMEOUT_SYNC + _sql_literal(str(timeout)) + b", false)")
        elif self.prior_timeout is not None:
            out.append(b"SELECT pg_catalog.set_config('statement_timeout', "
                       + _sql_literal(self.prior_timeout) + b", false)")
        path = self.policy.session.search_path
        if path is not None and not self.server_search_path:
            # Pinned: what names resolve to is part of what the analyzer decided on, and
            # session.disallow-security-settings keeps statements from changing it.
            out.append(b"SELECT pg_catalog.set_config('search_path', " + _sql_literal(path)
                       + b", false)")
        return out

    def session_sync_result(self, sql: bytes, res: Any) -> None:
        """A sync statement ran: keep what it read (the session's own statement_timeout)."""
        if sql.startswith(_TIMEOUT_SYNC) and self.prior_timeout is None and res is not None:
            value = res.get_value(0, 0)
            self.prior_timeout = None if value is None else bytes(value).decode()

    def session_synced(self, identity: Identity, in_transaction: bool = False,
                       sent: bool = False) -> None:
        self.synced_identity = identity
        self.server_search_path = self.policy.session.search_path is not None
        self.server_identity = identity.label
        self.server_rls = identity_settings(identity)
        if self.read_only_for(identity):
            self.server_read_only = True
        else:
            self.server_read_only = False
            self.prior_read_only = None
        timeout = self.policy.session.statement_timeout.get(identity.kind)
        self.server_timeout = timeout
        if timeout is None:
            self.prior_timeout = None
        if sent and in_transaction:
            self.synced_in_tx = True

    def session_reset(self) -> None:
        """The server session state is unknown again (rollback of a SET, reconnect)."""
        self.synced_identity = None
        self.server_search_path = False
        self.server_identity = None
        self.server_rls = None
        self.server_read_only = None
        self.server_timeout = None

    def rolled_back(self) -> None:
        """A ROLLBACK (or ROLLBACK TO) ran: what governance SET inside the transaction is
        undone, so it is synced again; SETs made outside it (the usual case) still hold."""
        if self.synced_in_tx:
            self.synced_in_tx = False
            self.session_reset()

    # -- statement in ----------------------------------------------------------------------------

    def gate(self, text: bytes | str, params: Sequence[Any] | None = None,
             identity: Identity | None = None, codec: str = "utf-8") -> StatementContext:
        """Analyze and decide one string about to be sent. Raises on denial (recorded).

        ``codec``: the Python codec of the session's client encoding, which the bytes are
        read in (as the server reads them)."""
        started = time.perf_counter()
        ident = identity or self.identity()
        if ident._verification is not None or ident.kind in self.policy.require_verified:
            self.check_identity(ident)  # expiry per statement; unverified kinds refused
        analysis = analyze(text, codec)
        key = self.statement_key(analysis, ident)
        cached = self._decisions.get(key)
        if cached is None:
            statements, decision = self.decide(analysis, ident)
            if len(self._decisions) >= 2048:
                self._decisions.clear()
            self._decisions[key] = (statements, decision)
        else:
            statements, decision = cached
        self.sent.append((ident, analysis))
        ctx = StatementContext(
            id=_next_id(), identity=ident, analysis=analysis, statements=statements,
            decision=decision, started=started, params=params, param_key=self._param_key)
        ctx.key = key
        self.last_statement_id = ctx.id
        if telemetry.tracing():
            ctx.span = telemetry.start_statement_span(ctx, self.conn_info, self._param_key)
        if decision.action == "deny":
            self._record(ctx, outcome="denied")
            raise StatementDenied(decision.message(), rule_ids=decision.rule_ids)
        if len(statements) > 1 and self.read_only_for(ident) and any(
                s.kinds & _TX_STATE_KINDS for s in statements):
            # The server state is verified between operations; inside one multi-statement
            # string a transaction could end, and the next begin READ WRITE, unseen.
            self._record(ctx, outcome="denied", rules=["session.verify-server-state"])
            raise StatementDenied(
                "denied by policy rule `session.verify-server-state`: for a read-only identity,"
                " transaction control and SET/RESET must be sent as statements of their own"
                " (the session's READ ONLY state is verified after each one); send the"
                " statements one at a time", rule_ids=("session.verify-server-state",))
        effects = self._effects.get(key)
        if effects is None:
            effects = (decision.checks_effect and self._needs_effect_check(
                           statements, decision.affected_row_limit, decision.full_table_min_rows),
                       any(s.kinds & READ_WRITE_KINDS or s.calls_writing_function
                           for s in statements),
                       may_run_unseen_code(statements, self.catalog))
            if len(self._effects) >= 2048:
                self._effects.clear()
            self._effects[key] = effects
        ctx.effect_check = effects[0]
        ctx.settings_check = effects[2]
        read_write = (effects[1] and decision.would in ("allow", "approval")
                      and self.read_only_for(ident))
        if read_write and not self.tx_fresh:
            # A READ ONLY transaction that already ran a query cannot become READ WRITE
            # (PostgreSQL refuses once a snapshot was taken). Say so before any approval
            # is looked at, so none is used up.
            self._record(ctx, outcome="denied", rules=["session.read-only"])
            raise StatementDenied(
                "denied: this write was allowed for a read-only identity, but it can only run"
                " as the first statement of a transaction (the current one already ran"
                " queries READ ONLY). Commit or roll back, then run it again in a new"
                " transaction; no approval was used", rule_ids=("session.read-only",))
        ctx.read_write = read_write and not decision.observe
        if decision.action == "approval":
            self._approve(ctx, ident, analysis, decision)
        return ctx

    def statement_key(self, analysis: Analysis, ident: Identity) -> tuple[Any, ...]:
        """The key of every cached answer about ``analysis`` for ``ident``: the text, the
        identity's scope (:func:`scope_key`), the policy's digest, the catalog snapshot's
        version and the version of every prepared statement and cursor the text refers to
        (``FETCH ALL FROM c`` means another statement once ``c`` is declared again)."""
        last, scope = self._scope
        if last is not ident:
            scope = scope_key(ident)
            self._scope = (ident, scope)
        catalog = self.catalog
        refs: tuple[Any, ...] = ()
        for s in analysis.statements:
            if s.session_refs:
                versions = self.session_versions
                refs += tuple((what, name, versions.get(f"{what}:{name}"))
                              for _, what, name in s.session_refs)
        return (analysis.text, scope, self.policy.digest,
                catalog.version if catalog is not None else -1, refs)

    def decide(self, analysis: Analysis, ident: Identity
               ) -> tuple[tuple[StatementFacts, ...], Decision]:
        """The policy's decision on an analyzed string for ``ident``: no I/O, nothing
        recorded, no approval requested (``gate`` acts on it; ``policy replay`` reports it)."""
        catalog = self.catalog
        statements = tuple(with_function_effects(
            effective_facts(s, self.prepared, self.cursors), catalog)
            for s in analysis.statements)
        if catalog is not None and any(unknown_functions(s, catalog) for s in statements):
            self.mark_catalog_stale()  # a function created since the snapshot
        decision = evaluate(self.policy, ident, analysis, statements,
                            read_only=self.read_only_for(ident), catalog=self.catalog)
        decision = self._check_predicates(ident, statements, decision)
        return statements, self._check_notify(ident, statements, decision)

    def _approve(self, ctx: StatementContext, ident: Identity, analysis: Analysis,
                 decision: Decision) -> None:
        """Consume an approval for ``ctx``, or file/find the request and raise."""
        approvals = _config.approvals(self.policy)
        ask = {"identity": ident, "analysis": analysis, "params_digest": ctx.params_digest,
               "policy_tag": self.policy.version_tag, "rule_ids": decision.rule_ids,
               "message": decision.message(), "policy": self.policy}
        request_id, granted = self._check_or_request(ctx, approvals, ask)
        if not granted and self._may_wait():
            status = approvals.wait(request_id, float(self.policy.approvals["wait_seconds"]))
            if status == "approved":
                request_id, granted = self._check_or_request(ctx, approvals, ask)
            elif status == "denied":
                ctx.approval_id = request_id
                self._check_or_request(ctx, approvals, ask)  # raises: denied by whom, why
        ctx.approval_id = request_id
        if not granted:
            self._record(ctx, outcome="approval_required")
            raise ApprovalRequired(
                decision.message() + f" (approval request {request_id}: a person runs"
                f" `governed-db approvals approve {request_id}`)",
                rule_ids=decision.rule_ids, request_id=request_id)
        ctx.approval_consumed = True
        self.event("approval_used", ident, request_id=request_id, statement_id=ctx.id)

    def _check_or_request(self, ctx: StatementContext, approvals: Any,
                          ask: Mapping[str, Any], **extra: Any) -> tuple[str, bool]:
        """The store's answer, with requests, expiries and remembered denials recorded."""
        from .approvals import ApprovalDenied

        try:
            request_id, granted = approvals.check_or_request(**ask, **extra)
        except ApprovalDenied as exc:
            ctx.approval_id = exc.request_id
            self._record(ctx, outcome="denied", rules=list(exc.rule_ids))
            raise StatementDenied(str(exc), rule_ids=exc.rule_ids) from None
        for expired in getattr(approvals, "last_expired", ()):
            self.event("approval_expired", ctx.identity, request_id=expired)
        if getattr(approvals, "last_filed", None) == request_id:
            self.event("approval_requested", ctx.identity, request_id=request_id,
                       statement_id=ctx.id, rules=list(ask["rule_ids"]),
                       affected_rows=extra.get("affected_rows"))
        return request_id, granted

    def unverifiable_in_pipeline(self, ctx: StatementContext) -> StatementDenied:
        """BEGIN/SET/RESET of a read-only identity, or a statement that may run code the
        analyzer did not see, in pipeline mode: the server state (transaction mode, the
        identity settings) cannot be read back between pipelined statements, so it does
        not run."""
        rule_ids = ("session.verify-server-state",)
        self._record(ctx, outcome="denied", rules=list(rule_ids))
        if ctx.settings_check:
            return StatementDenied(
                "denied by policy rule `session.verify-server-state`: this statement may run"
                " code its text does not show (a user-defined function, a view, a trigger), so"
                " the identity settings (governed_db.identity.*) are read back after it, which"
                " pipeline mode cannot do; run it outside the pipeline", rule_ids=rule_ids)
        return StatementDenied(
            "denied by policy rule `session.verify-server-state`: for a read-only identity,"
            " transaction control and SET/RESET cannot run in pipeline mode (the session's"
            " READ ONLY state is verified after each one); run it outside the pipeline",
            rule_ids=rule_ids)

    def give_back_approval(self, ctx: StatementContext) -> None:
        """The statement did not run (error, rolled back): its approval stays usable."""
        if not ctx.approval_consumed or ctx.approval_id is None:
            return
        ctx.approval_consumed = False
        try:
            _config.approvals(self.policy).release(ctx.approval_id)
        except Exception:  # noqa: BLE001 - the store may be gone; the approval stays used
            logger.warning("governed_db: could not give back approval %s", ctx.approval_id)
            return
        self.event("approval_returned", ctx.identity, request_id=ctx.approval_id,
                   statement_id=ctx.id)

    def _check_predicates(self, ident: Identity, statements: Sequence[StatementFacts],
                          decision: Decision) -> Decision:
        """``column.disallow-predicate-on-masked``: no filtering, joining, grouping or
        ordering on a column this identity sees masked (inference by probing)."""
        rules = [r for r in self.policy.rules_for(ident)
                 if r.id == "column.disallow-predicate-on-masked"]
        if not rules or (decision.action == "deny" and not decision.observe):
            return decision
        from .guardrails import Finding, rebuild_decision

        probed: dict[str, str] = {}
        for s in statements:
            for column, why in self._probed_columns(s, ident).items():
                probed.setdefault(column, why)
        if not probed:
            return decision
        cfg = rules[0]
        uses = "; ".join(f"{column} {why}" for column, why in sorted(probed.items()))
        finding = Finding(rule_id=cfg.id, level=cfg.level, message=(
            f"a value of masked column(s) {', '.join(sorted(probed))} would decide more than"
            f" the (masked) output: {uses}; that reveals the hidden value to a {ident.kind}"
            " identity. Select the column itself (it comes back masked) instead of filtering,"
            " ordering, branching, counting rows or computing on it"))
        return rebuild_decision(self.policy, (*decision.findings, finding), decision)

    def _check_notify(self, ident: Identity, statements: Sequence[StatementFacts],
                      decision: Decision) -> Decision:
        """``notify.disallow-sensitive-payload``: ``pg_notify`` with a channel or payload
        that is not a constant or parameter, in a statement that may read a value masked for
        the identity. Other listeners are not governed: a payload leaves unmasked."""
        rules = [r for r in self.policy.rules_for(ident)
                 if r.id == "notify.disallow-sensitive-payload"]
        if not rules or (decision.action == "deny" and not decision.observe):
            return decision
        from .guardrails import Finding, rebuild_decision

        hit = any(_computed_notify(s.tree) and
                  self._may_touch_sensitive(s, self.catalog, ident) for s in statements)
        if not hit:
            return decision
        cfg = rules[0]
        finding = Finding(rule_id=cfg.id, level=cfg.level, message=(
            "pg_notify with a channel or payload computed from table data is not allowed when"
            " the statement may read masked columns: listeners on other connections would"
            " receive it unmasked; send a constant payload (such as an id from a column that"
            " is not masked) instead"))
        return rebuild_decision(self.policy, (*decision.findings, finding), decision)

    def _probed_columns(self, s: StatementFacts, ident: Identity) -> dict[str, str]:
        """Masked columns (``table.column``) whose values decide which rows ``s`` returns or
        touches, how many, which branch runs or whether it errors, each with how; followed
        by lineage (see ``analysis._probes``); by name where lineage cannot be had."""
        from .analysis._probes import deciding_uses

        catalog = self.catalog
        uses = deciding_uses(s.tree, catalog) if catalog is not None else None
        if uses is None:
            return dict.fromkeys(self._probed_by_name(s, ident),
                                 "is filtered, joined or ordered on")
        probed: dict[str, str] = {}
        for src, why in sorted(uses.items()):
            if src == UNKNOWN:
                if self._may_touch_sensitive(s, catalog, ident):
                    probed.setdefault("(a value of unknown lineage)", why)
                continue
            schema, table, column = _split3(src)
            if self._masked_for(schema, table, column, ident):
                probed.setdefault(f"{table}.{column}", why)
        return probed

    def _probed_by_name(self, s: StatementFacts, ident: Identity) -> set[str]:
        from .analysis._facts import predicate_columns

        probed: set[str] = set()
        names = predicate_columns(s.tree)
        if not names:
            return probed
        for table in s.reads | s.writes:
            rel = self.catalog.resolve(table) if self.catalog is not None else None
            if rel is None:
                probed.update(f"{table}.{n}" for n in names
                              if self._masked_for("?", table, n, ident))
                continue
            if rel.is_view:
                from .analysis._lineage import relation_columns

                for col, sources in relation_columns(rel, self.catalog):
                    if col.lower() in names and any(
                            src == UNKNOWN or self._masked_for(*_split3(src), ident)
                            for src in sources):
                        probed.add(f"{rel.name}.{col}")
                continue
            for col in rel.columns:
                if col.lower() in names and self._masked_for(rel.schema, rel.name, col, ident):
                    probed.add(f"{rel.name}.{col}")
        return probed

    def _masked_for(self, schema: str, table: str, column: str, ident: Identity) -> bool:
        found = self.classifier.column(schema, table, column, ident)
        return found is not None and found[0] != "none"

    def _may_wait(self) -> bool:
        """Wait mode: only when configured, and never on an event loop's thread."""
        if not self.policy.approvals.get("wait_seconds"):
            return False
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return True
        return False

    # -- blast radius (statement.affected-row-limit) -------------------------------------------

    def limits_rows(self, analysis: Analysis | None = None) -> bool:
        """Whether executions of ``analysis`` (for the current identity) need their effect
        checked one by one (no pipeline). Without an analysis: whether any effect rule
        applies to the identity at all."""
        ident = self.identity()
        rules = [r for r in self.policy.rules_for(ident)
                 if r.id in ("statement.affected-row-limit", "statement.disallow-full-table-write")]
        if not rules:
            return False
        if analysis is None or analysis.error is not None:
            return True
        limit = min((v for r in rules if r.id == "statement.affected-row-limit"
                     for v in (rule_limit(r, ident),) if v is not None), default=None)
        full = any(r.id == "statement.disallow-full-table-write" for r in rules)
        statements = tuple(with_function_effects(
            effective_facts(s, self.prepared, self.cursors), self.catalog)
            for s in analysis.statements)
        return self._needs_effect_check(statements, limit, 2 if full else None)

    def blast_radius_applies(self, ctx: StatementContext) -> bool:
        """Whether ``ctx`` runs inside a savepoint and has its affected rows counted.

        Only when its effect is not bounded in advance within the limits (see
        :func:`~governed_db.analysis._effects.static_bound`): a point write by unique key or
        an ``INSERT ... VALUES`` under the limit costs nothing extra.
        """
        return ctx.effect_check

    def _needs_effect_check(self, statements: Sequence[StatementFacts], limit: int | None,
                            full_min: int | None) -> bool:
        catalog = self.catalog
        total = 0
        changes_rows = False
        for s in statements:
            if catalog is None and s.functions:
                return True  # no snapshot to read function bodies from: measure
            bound = static_bound(s, catalog)
            if bound is None:
                return True
            total += bound
            changes_rows = changes_rows or bool(s.kinds & {"UPDATE", "DELETE"})
        if limit is not None and total > limit:
            return True
        return full_min is not None and changes_rows and total >= full_min

    def blast_radius_in_pipeline(self, ctx: StatementContext) -> StatementDenied:
        rule_ids = ("statement.affected-row-limit",)
        self._record(ctx, outcome="denied", rules=list(rule_ids))
        self.give_back_approval(ctx)
        return StatementDenied(
            "denied by policy rule `statement.affected-row-limit`: a statement that changes"
            " rows whose effect is not bounded in advance cannot run in pipeline mode (its"
            " exact effect is checked in a savepoint); run it outside the pipeline",
            rule_ids=rule_ids)

    def blast_radius_unmeasured(self, ctx: StatementContext, path: str) -> StatementDenied:
        """A statement under the exact blast radius sent through ``path``, which cannot be
        measured (rows or a FETCH reach the caller while it runs): refused before it is sent."""
        rule_ids = ("statement.affected-row-limit",)
        self._record(ctx, outcome="denied", rules=list(rule_ids))
        self.give_back_approval(ctx)
        return StatementDenied(
            "denied by policy rule `statement.affected-row-limit`: this statement may change"
            f" rows (or calls a function that may), and through {path} its exact effect cannot"
            " be checked against the limit; run it with execute(), which measures it",
            rule_ids=rule_ids)

    def exact_count_targets(self, ctx: StatementContext, before: Mapping[str, Sequence[int]],
                            after: Mapping[str, Sequence[int]]) -> list[str]:
        """Tables whose row count must be read exactly to tell whether the statement
        changed every live row: only those where it updated or deleted at least half the
        statistics' estimate (the estimate is never trusted to *clear* a statement that
        touched every row; it only spares the count when the change is clearly partial)."""
        full_min = ctx.decision.full_table_min_rows
        if full_min is None:
            return []
        out = []
        for table, (ins, upd, dele, est) in after.items():
            b = before.get(table, (0, 0, 0, 0))
            changed = (upd - b[1]) + (dele - b[2])
            if changed >= max(full_min, 1) and changed * 2 >= est:
                out.append(table)
        return out

    def blast_radius_verdict(self, ctx: StatementContext, rowcount: int,
                             before: Mapping[str, Sequence[int]],
                             after: Mapping[str, Sequence[int]],
                             exact: Mapping[str, int] | None = None) -> BaseException | None:
        """Compare the exact rows a statement touched with its limits.

        ``before``/``after`` map tables to ``(ins, upd, del, live estimate)`` from
        ``pg_stat_xact_user_tables`` around the statement: their difference counts cascades
        and trigger writes too. ``exact`` holds exact row counts (after the statement, in its
        savepoint) of the tables :meth:`exact_count_targets` named. Returns None to keep the
        change, or the exception to raise after rolling it back (recorded).
        """
        per_table: dict[str, int] = {}
        changed_rows: dict[str, tuple[int, int, int]] = {}
        for t, (ins, upd, dele, _est) in after.items():
            b = before.get(t, (0, 0, 0, 0))
            d_ins, d_upd, d_del = ins - b[0], upd - b[1], dele - b[2]
            if d_ins + d_upd + d_del > 0:
                per_table[t] = d_ins + d_upd + d_del
                changed_rows[t] = (d_ins, d_upd, d_del)
        # The statistics see every row (cascades, triggers); rowcount is the fallback when
        # track_counts is off. (executemany checks each execution on its own.)
        total = sum(per_table.values()) if per_table else max(rowcount, 0)
        ident = ctx.identity
        violations: list[tuple[str, str, str, int, int]] = []  # level, rule, what, touched, n
        for cfg in self.policy.rules_for(ident):
            if cfg.id == "statement.affected-row-limit":
                limit = rule_limit(cfg, ident)
                if limit is None:
                    continue
                if cfg.tables:
                    from .guardrails import _table_matches

                    touched = sum(n for t, n in per_table.items()
                                  if _table_matches(t, cfg.tables))
                    scope = ", ".join(cfg.tables)
                else:
                    touched, scope = total, "all tables"
                if touched > limit:
                    violations.append((cfg.level, cfg.id, (
                        f"the statement touched {touched} rows ({scope}; limit {limit} for"
                        f" {ident.kind} identities)"), touched, limit))
            elif cfg.id == "statement.disallow-full-table-write" and exact:
                min_rows = int(cfg.params.get("min_rows", 2))
                for t, count_after in sorted(exact.items()):
                    if cfg.tables:
                        from .guardrails import _table_matches

                        if not _table_matches(t, cfg.tables):
                            continue
                    d_ins, d_upd, d_del = changed_rows.get(t, (0, 0, 0))
                    rows_before = count_after - d_ins + d_del
                    if rows_before >= max(min_rows, 1) and d_upd + d_del >= rows_before:
                        violations.append((cfg.level, cfg.id, (
                            f"the statement updated or deleted every row of {t}"
                            f" ({rows_before} rows)"), total, rows_before))
                        break
        ctx.affected_rows = total
        if not violations:
            return None
        level, rule_id, what, touched, limit = max(violations, key=lambda v: _LEVEL_RANK[v[0]])
        rule_ids = tuple(dict.fromkeys(v[1] for v in violations if v[0] == level))
        if level == "warning" or self.policy.mode == "observe":
            ctx.runtime_findings = [*(ctx.runtime_findings or ()),
                                    *(f"{v[1]}: {v[2]}" for v in violations)]
            return None
        if level == "approval":
            approvals = _config.approvals(self.policy)
            ask = {"identity": ident, "analysis": ctx.analysis,
                   "params_digest": ctx.params_digest, "policy_tag": self.policy.version_tag,
                   "rule_ids": rule_ids, "message": what, "policy": self.policy}
            try:
                request_id, granted = self._check_or_request(ctx, approvals, ask,
                                                             affected_rows=total)
            except StatementDenied as exc:
                return exc
            ctx.approval_id = request_id
            if granted:
                ctx.approval_consumed = True
                self.event("approval_used", ident, request_id=request_id, statement_id=ctx.id)
                return None
            self._record(ctx, outcome="approval_required", rolled_back=True,
                         affected_rows=total, rules=list(rule_ids))
            return ApprovalRequired(
                f"approval required by policy rule `{rule_id}`: {what}; it"
                f" was rolled back (approval request {request_id}: a person runs `governed-db"
                f" approvals approve {request_id}`, then the identical statement touching"
                f" exactly {total} rows runs once)", rule_ids=rule_ids, request_id=request_id)
        self._record(ctx, outcome="rolled_back", affected_rows=total, rules=list(rule_ids))
        self.give_back_approval(ctx)
        if rule_id == "statement.disallow-full-table-write":
            advice = ("a condition no parser can see through was true for every row. Narrow"
                      " the WHERE clause to the rows you mean (by key)")
        else:
            advice = f"Narrow the WHERE clause or change at most {limit} rows per statement"
        return StatementDenied(
            f"denied by policy rule `{rule_id}`: {what}; it was rolled back and nothing"
            f" changed. {advice}", rule_ids=rule_ids)

    def effect_check_failed(self, ctx: StatementContext, exc: BaseException) -> StatementDenied:
        """The exact count could not be read (no SELECT privilege...): rolled back, denied."""
        rule_ids = ("statement.disallow-full-table-write",)
        self._record(ctx, outcome="rolled_back", rules=list(rule_ids),
                     error_class=type(exc).__name__)
        self.give_back_approval(ctx)
        return StatementDenied(
            "denied by policy rule `statement.disallow-full-table-write`: whether the statement"
            " changed every row of a table could not be verified (the table could not be"
            " counted), so it was rolled back and nothing changed; narrow the WHERE clause to"
            " rows pinned by a unique key", rule_ids=rule_ids)

    # -- row out ------------------------------------------------------------------------------

    def too_many_rows(self, ctx: StatementContext, count: int) -> StatementDenied:
        """``statement.max-rows-returned``: the result is larger than the identity may read."""
        limit = ctx.decision.max_rows_returned
        self._record(ctx, outcome="denied", rows=count, rules=["statement.max-rows-returned"])
        return StatementDenied(
            f"denied by policy rule `statement.max-rows-returned`: the result has more than"
            f" {limit} rows, the most a {ctx.identity.kind} identity may read at once. Add"
            f" LIMIT {limit} (or aggregate) and retry", rule_ids=("statement.max-rows-returned",))

    def plan(self, ctx: StatementContext | None, index: int, result: Any) -> MaskPlan | None:
        """The mask plan for result set ``index`` of ``ctx`` (None: nothing to mask)."""
        if result is None or not result.nfields:
            return None
        if ctx is None:
            # A result that no gated statement produced (cannot happen through the public
            # API; covers internals such as a stolen server cursor): mask everything.
            return self._plan_unknown(result, None)
        if ctx.statements:
            # Result sets follow statements one to one in a multi-statement string; a
            # one-statement query may return many (executemany(returning=True): one per
            # execution), all of them that statement's rows.
            index %= len(ctx.statements)
        cached = ctx.plans.get(index)
        if cached is not None:
            return cached[0]
        if ctx.server_mask is not None and index == 0:
            # The server masked some columns (the statement was rewritten): their values
            # arrive masked; the rest is planned as learned, if the result has its shape.
            hit = _server_mask.plan_for(ctx.server_mask, result)
            if hit is not None:
                ctx.plans[0], ctx.lineage[0] = hit
                return hit[0][0]
            _server_mask.forget(self, ctx)  # not the learned shape: plan it from scratch
        catalog = self.catalog
        key = None
        if catalog is not None and not self.catalog_stale and ctx.key:
            cols = range(result.nfields)
            # The statement's key (text, identity scope, policy, snapshot, session objects it
            # refers to). (ftable, ftablecol) pin the base columns: a table re-created or a
            # column replaced since the plan was cached changes them, so `SELECT *` cannot
            # reuse it. The column types decide which text columns the free-text detectors
            # scan (``SELECT $1`` returns text or int by the parameter's type).
            key = (ctx.key, index, tuple(map(result.ftable, cols)),
                   tuple(map(result.ftablecol, cols)), tuple(map(result.ftype, cols)))
            hit = self._plans.get(key)
            if hit is not None:
                ctx.plans[index], ctx.lineage[index] = hit
                return hit[0][0]
        seen: set[str] = set()
        sources: dict[int, frozenset[str]] = {}
        plan = self._build_plan(ctx, index, result, seen, sources)
        masked: dict[str, str] = {}
        if plan is not None:
            for i in plan.masked_columns:
                col = plan.columns[i]
                assert col is not None
                masked[_fname(result, i, self.codec)] = f"{col.strategy}:{col.reason}"
        entry = (plan, masked, frozenset(seen))
        ctx.plans[index] = entry
        # Per output column lineage for the audit record (OpenLineage column lineage):
        # column names only, "?" where it could not be established.
        lineage = tuple((_fname(result, i, self.codec), tuple(sorted(sources.get(i, (UNKNOWN,)))))
                        for i in range(result.nfields))
        ctx.lineage[index] = lineage
        if key is not None and not self.catalog_stale:
            if len(self._plans) >= 2048:
                self._plans.clear()
            self._plans[key] = (entry, lineage)
        return plan

    def _build_plan(self, ctx: StatementContext, index: int, result: Any,
                    seen: set[str], sources: dict[int, frozenset[str]] | None = None
                    ) -> MaskPlan | None:
        catalog = self.catalog
        ident = ctx.identity
        stmt = ctx.statements[index] if index < len(ctx.statements) else None
        lineage: list[tuple[str, frozenset[str]]] | None = None
        if stmt is not None and catalog is not None:
            lineage = statement_lineage(_rows_tree(stmt.tree), catalog, self.session_trees)
            if lineage is not None and len(lineage) != result.nfields:
                lineage = None
        refs = self._base_column_refs(stmt, catalog)
        masks: list[ColumnMask | None] = []
        any_mask = False
        for i in range(result.nfields):
            cm = self._column_mask(i, result, lineage, catalog, ident, stmt, refs, seen, sources)
            masks.append(cm)
            any_mask = any_mask or cm is not None
        if not any_mask:
            return None
        return MaskPlan(masks, self.classifier.key)

    def _column_mask(self, i: int, result: Any, lineage: Any, catalog: Catalog | None,
                     ident: Identity, stmt: StatementFacts | None,
                     refs: Mapping[int, str | None], seen: set[str],
                     sources_out: dict[int, frozenset[str]] | None = None) -> ColumnMask | None:
        sources: frozenset[str] | None = None
        direct = False  # the value is a base column as stored (result provenance)
        table_oid = result.ftable(i) if catalog is not None else 0
        if table_oid and catalog is not None:
            rel = catalog.by_oid.get(table_oid)
            if rel is None:
                # A table we do not know yet (created since the snapshot, by this session or
                # another): masked as unknown until the reload, which happens before the
                # rows are handed out.
                self._unknown_in_snapshot(catalog, table_oid)
            else:
                col = rel.column_by_attnum(result.ftablecol(i))
                if col is None:
                    # a column added since the snapshot
                    self._unknown_in_snapshot(catalog, (table_oid, result.ftablecol(i)))
                if col is not None and not rel.is_view:
                    sources = frozenset({f"{rel.qualname}.{col}"})
                    direct = True
                    named = refs.get(i)
                    if named is not None and named != col.lower():
                        # The statement names this column differently from the snapshot: it
                        # was renamed by another session. Reload, and judge by both names.
                        self._unknown_in_snapshot(catalog, (table_oid, col, named))
                        sources = sources | {f"{rel.qualname}.{named}"}
                elif col is not None:
                    from .analysis._lineage import relation_columns

                    for name, view_sources in relation_columns(rel, catalog):
                        if name == col:
                            sources = view_sources
                            break
        if sources is None and lineage is not None:
            sources = lineage[i][1]
            direct = i in refs
        if sources is None:
            return self._unknown_column(i, result, stmt, catalog, ident)
        if sources_out is not None:
            sources_out[i] = sources
        seen.update(src for src in sources if src != UNKNOWN)
        strongest: tuple[str, str] | None = None
        keyed: dict[str, str] = {}
        unknown = False
        sensitive: list[tuple[str, str]] = []
        for src in sorted(sources):
            if src == UNKNOWN:
                unknown = True
                continue
            schema, table, column = src.split(".", 2)
            if schema in _CATALOG_SCHEMAS and self.classifier.masking.detect_names is False:
                continue
            found = self.classifier.column(schema, table, column, ident)
            keyed[column.lower()] = found[0] if found else "none"
            if found is not None:
                if found[0] != "none":  # an unmask grant reveals it: not a secret here
                    sensitive.append(found)
                if strongest is None or _rank(found[0]) > _rank(strongest[0]):
                    strongest = found
        if strongest is not None and len(sensitive) > 1 and strongest[0] in _SHAPED:
            # A value built from several sensitive columns (a whole row, a concatenation):
            # a shape-keeping strategy (e-mail domain, last four) applied to the combined text
            # would reveal the other columns, so the whole value is redacted.
            strongest = ("redact", strongest[1])
        elif strongest is not None and strongest[0] in _PARTIAL and not direct:
            # A value *derived* from a sensitive column is masked as a whole: a shape-keeping
            # strategy applied to an expression shows whatever the expression put in the kept
            # part (``repeat('.', 8) || substr(ssn, k, 4)`` under "last four" reveals any four
            # characters; reverse(email) puts the local part where the domain should be), and a
            # keyed hash of substr(ssn, k, 1) splits rows by one hidden digit.
            strongest = ("redact", strongest[1])
        if strongest is not None:
            reason = strongest[1] if direct else f"lineage:{strongest[1]}"
            return ColumnMask(strategy=strongest[0], reason=reason,
                              sources=tuple(sorted(sources)), keyed=keyed,
                              derived=not direct)
        if unknown:
            return self._unknown_column(i, result, stmt, catalog, ident)
        return self._free_text(i, result, sources, ident, stmt, direct)

    def _unknown_in_snapshot(self, catalog: Catalog, what: Any) -> None:
        """Ask for a reload and a new plan, once per object and snapshot line: an object
        still unknown after a reload (a sequence, a system column) is not asked about again."""
        if what in catalog.absent:
            return
        catalog.absent.add(what)
        self.mark_catalog_stale()
        self.replan = True

    def _free_text(self, i: int, result: Any, sources: frozenset[str], ident: Identity,
                   stmt: StatementFacts | None = None, direct: bool = False
                   ) -> ColumnMask | None:
        """Free-text PII: for the kinds ``[masking] detect_in_text`` names, a column that no
        sensitive column feeds is still scanned by the value detectors (an e-mail typed into
        ``orders.note``), unless its type cannot hold text or the policy names every column
        it derives from safe (``not_sensitive``). An allow-list: an unknown type is scanned.

        Judged by effect: a detector sees a value's shape, and a computed value can be given
        any shape (``replace(note, '@', ' at ')``, ``translate(note, '0123456789', 'abcdefghij')``,
        ``substr(note, 12, 4)`` in pieces). So a value *computed* from a user table's text is
        scanned in place only when every function of the statement keeps values whole
        (``TEXT_PRESERVING``: case changes, concatenation, aggregation into arrays/JSON...);
        otherwise it is redacted whole. Plain columns are always scanned in place."""
        if ident.kind not in self.policy.masking.detect_in_text:
            return None
        if result.ftype(i) in SAFE_TYPE_OIDS:
            return None
        if sources and all(src != UNKNOWN and self.classifier.known_safe(*src.split(".", 2))
                           for src in sources):
            return None
        if not direct and stmt is not None and stmt.functions - TEXT_PRESERVING and any(
                src == UNKNOWN or src.split(".", 1)[0] not in _CATALOG_SCHEMAS
                for src in sources):
            return ColumnMask(strategy="redact", reason="free-text-derived",
                              sources=tuple(sorted(sources)), derived=True)
        return ColumnMask(strategy="detect", reason="free-text", sources=tuple(sorted(sources)))

    def bound_plan(self, ctx: StatementContext | None, index: int,
                   result: Any) -> MaskPlan | BoundPlan | None:
        """:meth:`plan`, bound to the statement's detection report: the first time a
        detector masks something in a column, an audit record ``masked_in_text`` says which
        detector, which output column and which base columns (names only, never a value)."""
        plan = self.plan(ctx, index, result)
        if plan is None or not plan.detecting or ctx is None or self.auditor is None:
            return plan
        names = [_fname(result, i, self.codec) for i in range(result.nfields)]

        def report(column: int, detectors: Sequence[str]) -> None:
            seen = ctx.detections
            if seen is None:
                seen = ctx.detections = set()
            for detector in detectors:
                key = (index, column, detector)
                if key in seen:
                    continue
                seen.add(key)
                cm = plan.columns[column]
                self.event("masked_in_text", ctx.identity, statement_id=ctx.id,
                           column=names[column], detector=detector,
                           sources=list(cm.sources) if cm is not None and cm.sources else None)

        return plan.bind(report)

    def _base_column_refs(self, stmt: StatementFacts | None,
                          catalog: Catalog | None) -> dict[int, str | None]:
        """Output positions that are plain column references on base tables (no expression,
        view, CTE or subquery in between) — ``COPY users (email)``, ``SELECT id, email FROM
        users`` — mapped to the column name the text uses (lower-cased; None when aliased or
        not spelled out). Only these keep shape-preserving strategies without provenance, and
        only their names can reveal a column renamed since the catalog snapshot."""
        if stmt is None or catalog is None:
            return {}
        tree = _rows_tree(stmt.tree)
        copy = tree.get("CopyStmt")
        if copy is not None:
            if copy.get("relation") is not None and copy.get("query") is None:
                rel = catalog.resolve(_rv_name(copy["relation"]))
                if rel is None or rel.is_view:
                    return {}
                n = len(copy.get("attlist") or ()) or len(rel.columns)
                return dict.fromkeys(range(n))
            tree = copy.get("query") or {}
        sel = tree.get("SelectStmt")
        if not sel or sel.get("withClause") or sel.get("op", "SETOP_NONE") != "SETOP_NONE":
            return {}
        for item in sel.get("fromClause") or ():
            rv = item.get("RangeVar") if isinstance(item, dict) else None
            if rv is None:
                return {}
            rel = catalog.resolve(_rv_name(rv))
            if rel is None or rel.is_view:
                return {}
        out: dict[int, str | None] = {}
        for pos, target in enumerate(sel.get("targetList") or ()):
            res = target.get("ResTarget") or {}
            ref = (res.get("val") or {}).get("ColumnRef")
            if ref is None:
                continue
            fields = ref.get("fields") or ()
            if any("A_Star" in f for f in fields):
                return out  # positions after a * are not known from the text
            last = fields[-1] if fields else {}
            name = (last.get("String") or {}).get("sval") if isinstance(last, dict) else None
            out[pos] = None if res.get("name") or not name else str(name).lower()
        return out

    def _unknown_column(self, i: int, result: Any, stmt: StatementFacts | None,
                        catalog: Catalog | None, ident: Identity) -> ColumnMask | None:
        """Lineage cannot be established: fail closed where a sensitive source is possible."""
        if self._may_touch_sensitive(stmt, catalog, ident):
            return ColumnMask(strategy="redact", reason="unknown-lineage")
        if self.policy.masking.detect_values:
            return ColumnMask(strategy="detect", reason="detected")
        return self._free_text(i, result, frozenset({UNKNOWN}), ident, stmt)

    def _may_touch_sensitive(self, stmt: StatementFacts | None, catalog: Catalog | None,
                             ident: Identity) -> bool:
        if stmt is None or catalog is None:
            return True
        reads = set(stmt.reads) | set(stmt.writes)
        for name in reads:
            rel = catalog.resolve(name)
            if rel is None:
                return True
            if rel.schema in _CATALOG_SCHEMAS:
                continue
            for col in rel.columns:
                if self._masked_for(rel.schema, rel.name, col, ident):
                    return True
            if rel.is_view:
                return True
        if stmt.functions & catalog.user_functions or stmt.opaque:
            return True
        if catalog.builtin_functions and stmt.functions - catalog.builtin_functions:
            # A function the snapshot does not know (created since): reload, fail closed.
            self.mark_catalog_stale()
            return True
        return False

    def _plan_unknown(self, result: Any, stmt: StatementFacts | None) -> MaskPlan:
        return MaskPlan([ColumnMask(strategy="redact", reason="unknown-lineage")] * result.nfields,
                        self.classifier.key)

    def copy_plan(self, ctx: StatementContext | None, nfields: int,
                  bound: bool = False) -> MaskPlan | BoundPlan | None:
        """The plan for ``COPY ... TO STDOUT`` data (no provenance on COPY results); with
        ``bound``, reporting free-text detections like :meth:`bound_plan`."""

        class _NoProvenance:
            def __init__(self, n: int) -> None:
                self.nfields = n

            def ftable(self, i: int) -> int:
                return 0

            def ftablecol(self, i: int) -> int:
                return 0

            def ftype(self, i: int) -> int:
                return 0  # unknown: COPY data is text, the free-text detectors scan it

            def fname(self, i: int) -> bytes:
                return b"column%d" % i

        if ctx is None:
            return self._plan_unknown(_NoProvenance(nfields), None)
        if bound:
            return self.bound_plan(ctx, 0, _NoProvenance(nfields))
        return self.plan(ctx, 0, _NoProvenance(nfields))

    # -- after the statement ------------------------------------------------------------------

    def succeeded(self, ctx: StatementContext, rowcount: int, status: str | None) -> None:
        """Record a statement that ran; update session state it changed."""
        self.session_effects(ctx)
        self._record(ctx, outcome="ok", rowcount=rowcount, status=status,
                     affected_rows=ctx.affected_rows, warnings=ctx.runtime_findings or None)

    def session_effects(self, ctx: StatementContext) -> None:
        """Remember what a statement that ran prepared, declared, closed or deallocated (and
        DDL). Every change gives the object a new version: cached answers about statements
        that refer to it by name are not reused."""
        for s in ctx.statements if _has_session_effects(ctx) else ():
            for name in s.prepares:
                self._session_put("prepared", name, _inner_facts(s, name, prepared=True),
                                  _inner_tree(s.tree, "PrepareStmt"))
            for name in s.declares:
                self._session_put("cursor", name, _inner_facts(s, name, prepared=False),
                                  _inner_tree(s.tree, "DeclareCursorStmt"))
                if _holdable(s.tree):
                    self.holdable_cursors.add(name)
            for name in s.closes:
                self._session_drop("cursor", name)
            for name in s.deallocates:
                self._session_drop("prepared", name)
            if s.kind == "DISCARD" and ("*", None) in s.settings:
                self._session_drop("prepared", "*")  # DISCARD ALL: DEALLOCATE ALL, CLOSE ALL
                self._session_drop("cursor", "*")
            if s.is_ddl:
                self.mark_catalog_stale()

    def session_effects_unknown(self, ctx: StatementContext) -> None:
        """A statement failed or was rolled back: whatever it would have prepared, declared,
        closed or deallocated is unknown now (PREPARE and DEALLOCATE are not undone by a
        rollback). Forgotten, so a later EXECUTE/FETCH of those names fails closed."""
        for s in ctx.statements if _has_session_effects(ctx) else ():
            for name in s.prepares + s.deallocates:
                self._session_drop("prepared", name)
            for name in s.declares + s.closes:
                self._session_drop("cursor", name)
            if s.kind == "DISCARD":
                self._session_drop("prepared", "*")
                self._session_drop("cursor", "*")

    def transaction_ended(self, committed: bool) -> None:
        """Cursors die with their transaction (WITH HOLD ones survive a COMMIT)."""
        if not self.cursors:
            return
        for name in list(self.cursors):
            if not committed or name not in self.holdable_cursors:
                self._session_drop("cursor", name)

    def _session_put(self, what: str, name: str, facts: StatementFacts, tree: Any) -> None:
        key = f"{what}:{name}"
        self.session_versions[key] = next(self._session_counter)
        if not (name.isascii() or self.server_utf8):
            # The server truncates long names by bytes of its own encoding: this name may
            # not be the one it stored. Not remembered, so EXECUTE/FETCH of it fails closed.
            self._session_drop(what, name)
            return
        (self.prepared if what == "prepared" else self.cursors)[name] = facts
        self.session_trees[key] = tree
        if what == "cursor":
            self.holdable_cursors.discard(name)

    def _session_drop(self, what: str, name: str) -> None:
        objects = self.prepared if what == "prepared" else self.cursors
        names = list(objects) if name == "*" else [name]
        for n in names:
            key = f"{what}:{n}"
            objects.pop(n, None)
            self.session_trees.pop(key, None)
            self.session_versions[key] = next(self._session_counter)
            if what == "cursor":
                self.holdable_cursors.discard(n)

    def failed(self, ctx: StatementContext, exc: BaseException) -> None:
        self.session_effects_unknown(ctx)
        sqlstate = getattr(exc, "sqlstate", None)
        self._record(ctx, outcome="error", sqlstate=sqlstate, error_class=type(exc).__name__)
        self.give_back_approval(ctx)
        if ctx.server_mask is not None:
            _server_mask.forget(self, ctx)  # described again next time (a column type changed?)

    def _record(self, ctx: StatementContext, **outcome: Any) -> None:
        if ctx.finished:
            return
        ctx.finished = True
        if ctx.span is not None:
            telemetry.end_statement_span(ctx.span, ctx, outcome)
        telemetry.record_metrics(ctx, outcome)
        if self.auditor is None:
            return
        self.auditor.statement(ctx, self.conn_info, **outcome)

    def event(self, kind: str, identity: Identity | None = None, **fields: Any) -> None:
        """Connection-level events: connect, close, commit, rollback."""
        if self.auditor is not None:
            self.auditor.event(kind, identity or self.identity(), self.conn_info, **fields)

    def error_allowed(self, in_flight: Iterable[StatementContext] = ()) -> tuple[Allowed, bool]:
        """What server text may echo now: the statement(s) whose result it is — the last one
        sent, and those still in flight in a pipeline — and catalog identifiers.

        Only the statement(s) in question: echoing a value the caller sent in an earlier
        statement would let one statement carry the guesses another one's error confirms."""
        pairs = [(ctx.identity, ctx.analysis) for ctx in in_flight]
        if self.sent:
            pairs.append(self.sent[-1])
        catalog = self.catalog
        allowed = Allowed([a.text for _, a in pairs],
                          catalog.identifiers if catalog is not None else ())
        return allowed, all(self._echo_safe(ident, a) for ident, a in pairs)

    def _echo_safe(self, ident: Identity, analysis: Analysis) -> bool:
        """Whether errors of ``analysis`` may echo its literals: it reads no column masked for
        ``ident`` (an UPDATE, DELETE, MERGE or upsert reads its target's rows too), calls no
        user function and reads no view whose body could."""
        catalog = self.catalog
        if catalog is None or analysis.error is not None:
            return False
        for s in analysis.statements:
            tables = set(s.reads)
            if s.kind != "INSERT" or (s.tree.get("InsertStmt") or {}).get("onConflictClause"):
                tables |= s.writes
            probe = attrs.evolve(s, reads=frozenset(tables), writes=frozenset())
            if self._may_touch_sensitive(probe, catalog, ident):
                return False
        return True

    def redact_error(self, exc: BaseException) -> BaseException:
        """The same exception class, SQLSTATE kept, with data values removed from its text."""
        return redact_exception(exc, *self.error_allowed())


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
    new = type(exc)(message_from_fields(info), info=RedactedResult(info, status),
                    pgconn=exc.pgconn)
    return new


_SHAPED = frozenset({"partial", "email"})
# Strategies that keep part of a value (or its equality classes): direct references only.
_PARTIAL = frozenset({"partial", "email", "hash"})


def _split3(src: str) -> tuple[str, str, str]:
    """``schema.table.column`` (the column may contain dots)."""
    schema, table, column = src.split(".", 2)
    return schema, table, column


def _computed_notify(tree: Any) -> bool:
    """Whether the tree calls ``pg_notify`` with an argument that is not a constant or a
    parameter (``pg_notify('c', email)``, ``pg_notify('c', (SELECT …))``)."""
    from .analysis._facts import funcname

    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            call = node.get("FuncCall")
            if isinstance(call, dict) and funcname(call) == "pg_notify":
                if any(not _constant(arg) for arg in call.get("args") or ()):
                    return True
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
    return False


# statement_timeout for an identity, reading the session's own value in the same round trip.
_TIMEOUT_SYNC = (b"SELECT pg_catalog.current_setting('statement_timeout'),"
                 b" pg_catalog.set_config('statement_timeout', ")


def _rows_tree(tree: Mapping[str, Any]) -> Mapping[str, Any]:
    """The statement whose rows a result carries: a server cursor's results (the describe
    after ``DECLARE``, every ``FETCH`` from it) are the rows of the query it declares."""
    declare = tree.get("DeclareCursorStmt") if tree else None
    if declare is not None and declare.get("query"):
        return declare["query"]  # type: ignore[no-any-return]
    return tree


def _rv_name(rv: Mapping[str, Any]) -> str:
    name = str(rv.get("relname", ""))
    return f"{rv['schemaname']}.{name}" if rv.get("schemaname") else name


def _has_session_effects(ctx: StatementContext) -> bool:
    return any(s.prepares or s.declares or s.closes or s.deallocates or s.kind == "DISCARD"
               or s.is_ddl for s in ctx.statements)


_CURSOR_OPT_HOLD = 0x0020  # PostgreSQL's parsenodes.h: DECLARE ... WITH HOLD


def _holdable(tree: Mapping[str, Any]) -> bool:
    body = tree.get("DeclareCursorStmt") or {}
    return bool(int(body.get("options") or 0) & _CURSOR_OPT_HOLD)


def _rank(strategy: str) -> int:
    return {"none": 0, "hash": 1, "partial": 2, "email": 2, "redact": 3, "null": 4}.get(strategy, 3)


def _fname(result: Any, i: int, codec: str = "utf-8") -> str:
    try:
        raw = result.fname(i)
    except Exception:  # noqa: BLE001
        return f"column{i}"
    return raw.decode(codec, "replace") if isinstance(raw, bytes) else str(raw)


def _inner_tree(tree: Mapping[str, Any], typ: str) -> Any:
    body = tree.get(typ, {})
    return body.get("query")


def _inner_facts(s: StatementFacts, name: str, *, prepared: bool) -> StatementFacts:
    from .analysis._facts import extract_facts

    inner = _inner_tree(s.tree, "PrepareStmt" if prepared else "DeclareCursorStmt")
    if not inner:
        return s
    facts = extract_facts({"stmt": inner}, s.text)
    if not prepared:
        facts = attrs.evolve(facts, kinds=facts.kinds | {"SELECT"})
    return facts


# The row-level security hand-off (docs/row-level-security.md): what PostgreSQL policies read
# with current_setting('governed_db.identity.<name>', true). Set by the library whenever the
# acting identity changes; SET/RESET/set_config of governed_db.* is denied for every identity
# (session.disallow-security-settings) and read back after statements that may run code the
# analyzer did not see (a user function, a view, a trigger).
IDENTITY_SETTINGS = ("governed_db.identity.id", "governed_db.identity.kind",
                     "governed_db.identity.roles", "governed_db.identity.tenant",
                     "governed_db.identity.verified", "governed_db.identity.issuer",
                     "governed_db.identity.subject")
IDENTITY_SETTINGS_QUERY = ("SELECT " + ", ".join(
    f"pg_catalog.current_setting('{name}', true)" for name in IDENTITY_SETTINGS)).encode()


def identity_settings(identity: Identity) -> tuple[tuple[str, str], ...]:
    """``(setting, value)`` of the hand-off, in IDENTITY_SETTINGS order: id, kind, roles (a
    JSON array of strings: unambiguous, ``::jsonb ? 'role'`` tests one), tenant, verified
    (``true``/``false``), issuer and subject (empty unless verified). An absent value is
    the empty string (``nullif(current_setting(...), '')`` makes it NULL)."""
    import json

    values = (identity.id, identity.kind, json.dumps(list(identity.roles)),
              identity.tenant or "", "true" if identity.verified else "false",
              identity.issuer or "", identity.subject or "")
    return tuple(zip(IDENTITY_SETTINGS, values, strict=True))


def _sql_literal(text: str) -> bytes:
    """A standard-conforming string literal (we refuse to run when that setting is off)."""
    return ("'" + text.replace("'", "''") + "'").encode()


def kinds_label(kinds: Iterable[str]) -> str:
    return ",".join(sorted(kinds))
