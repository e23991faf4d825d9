"""Stage 3, execute under limits: ``statement.affected-row-limit`` and
``statement.disallow-full-table-write`` — which statements run in a savepoint with their exact
effect counted, and the verdict on what they touched."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .. import _config
from ..analysis import Analysis, StatementFacts
from ..analysis._effects import static_bound, with_function_effects
from ..errors import ApprovalRequired, StatementDenied
from ..rules import effective_facts, rule_limit
from .context import StatementContext, digest_params
from ._governor_state import GovernorState


# Statement kinds that change rows (besides anything with a write target).
_EFFECT_KINDS = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "CALL", "EXECUTE"})


_LEVEL_RANK = {"warning": 0, "approval": 1, "error": 2}


# Rows touched in the current transaction per table, including cascades and trigger writes:
# inserted, updated, deleted, and the statistics' estimate of the table's live rows (which
# decides whether an exact count is needed to tell "every row" apart from "many rows").
BLAST_COUNT_SQL = (b"SELECT x.relid::pg_catalog.regclass::text, x.n_tup_ins, x.n_tup_upd,"
                   b" x.n_tup_del, pg_catalog.pg_stat_get_live_tuples(x.relid)"
                   b" FROM pg_catalog.pg_stat_xact_user_tables x"
                   b" WHERE x.n_tup_ins + x.n_tup_upd + x.n_tup_del > 0")


BLAST_SAVEPOINT = b"governed_db_blast_radius"


class BlastRadiusStage(GovernorState):
    """The Governor's methods of this stage (see governor.py)."""

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
                    from ..rules import table_matches as _table_matches

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
                        from ..rules import table_matches as _table_matches

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
            # Bound to this execution (executemany measures each one: its own parameters)
            # and to what the statement's names resolve to (approval_subject).
            query, params = ctx.current_run or (ctx.analysis.text, ctx.params)
            try:
                subject = self.approval_subject(ctx.analysis, ctx.statements,
                                                (self.execution_digest(query, params),))
            except StatementDenied as exc:
                self._record(ctx, outcome="rolled_back", affected_rows=total,
                             rules=list(exc.rule_ids))
                return exc
            digest = ctx.params_digest if ctx.current_run is None else digest_params(
                [bytes(p) if isinstance(p, (bytearray, memoryview)) else p
                 for p in params or ()], self._param_key)
            ask = {"identity": ident, "analysis": subject,
                   "params_digest": digest, "policy_tag": self.policy.version_tag,
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

