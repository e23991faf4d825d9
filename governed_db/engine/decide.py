"""Stage 2, analyze → decide: the gate every sent string passes (analysis from the cache, the
policy's decision cached by the statement key), approvals, and the decision-time checks that
need the catalog (predicates on masked columns, pg_notify payloads)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from time import perf_counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import _config, telemetry
from .._bound_settings import bound_text
from ..analysis import Analysis, StatementFacts, analyze
from ..analysis._effects import (function_effects, may_run_unseen_code, unknown_functions,
                                 with_function_effects)
from ..analysis._lineage import UNKNOWN
from ..analysis._normalize import lexing_depends_on_scs
from ..analysis._probes import _constant
from ..errors import ApprovalRequired, StatementDenied
from ..rules import Decision, effective_facts, evaluate
from ..identity import Identity
from .cached_plan import CachedPlan, cacheable, remember, valid_for
from .context import (_CATALOG_SCHEMAS, StatementContext, _new, _next_id, _next_n,
                      digest_params, scope_key)
from .session import _TX_STATE_KINDS
from ._governor_state import GovernorState

logger = logging.getLogger("governed_db")

# Not a policy rule: refused with standard_conforming_strings off when the text may lex
# differently on the server (see analysis._normalize.lexing_depends_on_scs).
SCS_RULE = "session.standard-conforming-strings"
# Settings that change how the server lexes later statements, and statement kinds that may
# put them back to another value (RESET ALL, DISCARD ALL, a rollback undoing a SET).
_LEXING_SETTINGS = frozenset({"standard_conforming_strings", "backslash_quote"})
_SCS_RESETTING = frozenset({"RESET", "DISCARD", "ROLLBACK", "ROLLBACK TO"})


# Statement kinds a READ ONLY transaction refuses: an allowed (or approved) one of these, run
# by a read-only identity, runs in a transaction switched to READ WRITE for it alone.
READ_WRITE_KINDS = frozenset({
    "INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "CREATE", "ALTER", "DROP", "TRUNCATE",
    "GRANT", "REVOKE", "COMMENT", "REFRESH", "CLUSTER", "REINDEX", "SECURITY LABEL", "LOCK",
    "NOTIFY", "LISTEN", "IMPORT", "REASSIGN", "CALL", "EXECUTE"})


# The reader a copy is judged for: an agent with no roles sees every mask the policy has.
_RESTRICTED_READER = Identity("governed_db:copy-reader", "ai_agent")


def _strength(strategy: str) -> int:
    """redact / null hide the whole value; shape-keeping ones (email, partial) and keyed
    hashes keep something of it."""
    return {"none": 0, "hash": 1, "partial": 2, "email": 2, "redact": 3, "null": 4}.get(
        strategy, 3)


def _split3(src: str) -> tuple[str, str, str]:
    """``schema.table.column`` (the column may contain dots)."""
    schema, table, column = src.split(".", 2)
    return schema, table, column


def _computed_notify(tree: Any) -> bool:
    """Whether the tree calls ``pg_notify`` with an argument that is not a constant or a
    parameter (``pg_notify('c', email)``, ``pg_notify('c', (SELECT …))``)."""
    from ..analysis import funcname

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


class DecideStage(GovernorState):
    """The Governor's methods of this stage (see governor.py)."""

    def gate(self, text: bytes | str, params: Sequence[Any] | None = None,
             identity: Identity | None = None, codec: str = "utf-8",
             types: Sequence[int] | None = None,
             executions: Callable[[], Sequence[tuple[Any, Any]]] | None = None
             ) -> StatementContext:
        """Analyze and decide one string about to be sent. Raises on denial (recorded).

        ``codec``: the Python codec of the session's client encoding, which the bytes are
        read in (as the server reads them). ``types``: the oids of ``params`` (server-side
        binding); ``set_config($1, $2, ...)`` is judged by the values bound to it
        (``_bound_settings``). ``executions``: for ``executemany``, what gives the (text,
        params) of every execution the string is about to run (an approval covers all of them,
        see :meth:`approval_subject`)."""
        started = perf_counter()
        ident = identity or self.identity()
        policy = self.policy
        if ident._verification is not None or ident.kind in policy.require_verified:
            self.check_identity(ident)  # expiry per statement; unverified kinds refused
        scs_check = self.scs_off or self.scs_unsure
        plan = None if scs_check else self.cached_plans.get(text)
        if plan is not None and (
                (ident is plan.ident and codec == plan.codec
                 and policy.digest == plan.policy_digest
                 and self.catalog is not None and self.catalog.version == plan.catalog_version)
                or valid_for(self, plan, ident, codec)):
            # The same statement key as when the plan was made (text, identity scope,
            # policy, catalog snapshot): its answer stands. Only allowed, unmeasured,
            # single statements are cached (see cached_plan.cacheable). (valid_for's test
            # inlined for the plan's own identity object.)
            self.sent.append(plan.sent)
            # (context.from_plan and _next_id inlined: this runs for every statement)
            ctx = _new(StatementContext)
            ctx._n = n = _next_n()
            ctx.identity = ident
            ctx.analysis = plan.analysis
            ctx.statements = plan.statements
            ctx.decision = plan.decision
            ctx.started = started
            ctx.params = params
            ctx._param_key = self._param_key
            ctx.plans = {}
            ctx.lineage = {}
            ctx.key = plan.key
            ctx.cached = plan
            if plan.settings_check:
                ctx.settings_check = True
            self.last_statement_n = n
            self.last_plan = plan
            if (telemetry._explicit_tracer or telemetry._TRACE_GLOBALS.get(
                    "_TRACER_PROVIDER", True) is not None) and telemetry.tracing():
                ctx.span = telemetry.start_statement_span(ctx, self.conn_info, self._param_key)
            return ctx
        self.last_plan = None
        analysis = judged = analyze(text, codec)
        if params and types is not None:
            bound = bound_text(analysis, params, types, codec)
            if bound is not None:
                judged = analyze(bound)
        key = self.statement_key(judged, ident)
        cached = self._decisions.get(key)
        if cached is None:
            statements, decision = self.decide(judged, ident)
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
        self.last_statement_n = ctx._n
        if telemetry.tracing():
            ctx.span = telemetry.start_statement_span(ctx, self.conn_info, self._param_key)
        if scs_check:
            self.refuse_if_lexed_otherwise(ctx, analysis.text)
        if any(s.dynamic_settings or s.kinds & _SCS_RESETTING
               or any(name in _LEXING_SETTINGS for name, _ in s.settings) for s in statements):
            self.scs_unsure = True  # until the server reports it back (_gov_verify_server_state)
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
        if cacheable(statements, decision, key, effects, read_write, _TX_STATE_KINDS):
            remember(self, text, CachedPlan(
                analysis=analysis, codec=codec, statements=statements, decision=decision,
                key=key, ident=ident, effects=effects))
        if decision.action == "approval":
            self._approve(ctx, ident, analysis, decision, executions)
        return ctx

    def refuse_if_lexed_otherwise(self, ctx: StatementContext, text: str) -> None:
        """With standard_conforming_strings off (or maybe off), refuse ``text`` (one
        execution of ``ctx``'s statement) when the server may lex it, or a function body it
        runs, differently than the analyzer did (see ``lexing_depends_on_scs``). Recorded."""
        if not (lexing_depends_on_scs(text) or any(
                s.functions and function_effects(s.functions, self.catalog).lexing_depends_on_scs
                for s in ctx.statements)):
            return
        # (A function body is lexed by the server with the session's setting too.)
        # Not a policy rule (no level or observe mode lets it through): the server may
        # lex this text differently than the analyzer did (see lexing_depends_on_scs).
        self._record(ctx, outcome="denied", rules=[SCS_RULE])
        raise StatementDenied(
            f"denied by `{SCS_RULE}`: standard_conforming_strings is off in this session"
            f"{'' if self.scs_off else ' or may have been turned off by an earlier statement'},"
            " and this statement (or a function body it runs) has a backslash inside a plain"
            " '...' string, which the"
            " server then reads as an escape (governed_db reads it as PostgreSQL does with"
            " the setting on, so the two could disagree on where the string ends). Write"
            " the string as E'...' (backslashes doubled), pass the value as a parameter"
            " (%s), or set standard_conforming_strings to on (the PostgreSQL default)",
            rule_ids=(SCS_RULE,))

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
        decision = self._check_copies(ident, statements, decision)
        return statements, self._check_notify(ident, statements, decision)

    def execution_digest(self, query: Any, params: Sequence[Any] | None) -> tuple[str, ...]:
        """One execution as an approval binds it: a keyed hash of the text sent (ClientCursor
        inlines each parameter set into it) and the keyed digests of its parameters."""
        text = bytes(query) if not isinstance(query, str) else query.encode("utf-8",
                                                                            "surrogatepass")
        head = hmac.new(self._param_key, text, hashlib.sha256).hexdigest()
        values = None if params is None else [
            bytes(p) if isinstance(p, (bytearray, memoryview)) else p for p in params]
        return (head, *digest_params(values, self._param_key))

    def approval_subject(self, analysis: Analysis, statements: Sequence[StatementFacts],
                         executions: Sequence[tuple[str, ...]] | None = None) -> Any:
        """What an approval of ``analysis`` is bound to, and what the approver is shown.

        The text alone does not say what runs when the statement's effect depends on the
        session: ``EXECUTE p`` runs whatever ``p`` was last prepared as, ``FETCH c`` the
        query ``c`` was declared for, a name means the relation or function search_path finds
        first, a view or function does what its current definition says. All of that is
        bound (keyed hashes only): the body each session reference resolves to (and shown,
        normalized, to the approver), the search_path, and the identity (oid, row version,
        definition) of every relation and user function the statement names. A reference the
        session did not see defined cannot be bound: no approval is asked for or used.
        ``executions``: :meth:`execution_digest` of every execution of an ``executemany``
        (more than one: the count is shown, each one bound)."""
        from ..approvals import ApprovalSubject

        text: list[str] = [analysis.text]
        shown: list[str] = [analysis.normalized]
        facts: list[StatementFacts] = list(statements)
        for s in analysis.statements:
            for _, what, name in s.session_refs:
                inner = (self.prepared if what == "prepared" else self.cursors).get(name)
                if inner is None:
                    raise self._unbound_approval(what, name)
                # (its text, not the session's version of the name: the same body prepared
                # again, or on another connection, is what was approved)
                text.append(f"{what}:{name}\x00{inner.text}")
                body = analyze(inner.text).normalized
                shown.append(f"-- {'prepared statement' if what == 'prepared' else 'cursor'}"
                             f" {name} is: {body}")
                facts.append(inner)
        catalog = self.catalog
        if catalog is None:
            text.append("catalog:?")
        else:
            text.append("search_path:" + ",".join(catalog.search_path))
            for s in facts:
                for rel_name in sorted(s.reads | s.writes):
                    rel = catalog.resolve(rel_name)
                    text.append(f"rel:{rel_name}=" + ("?" if rel is None else
                                f"{rel.oid}:{rel.qualname}:{rel.kind}:{rel.viewdef or ''}"))
                for fn_name in sorted(s.functions):
                    for fn in catalog.functions.get(fn_name, ()):
                        text.append(f"fn:{fn_name}={fn.oid}:{fn.xmin}:{fn.schema}.{fn.name}"
                                    f"({fn.arguments}):{fn.source or ''}")
        summary = analysis.summary
        if executions is not None and len(executions) != 1:
            n = len(executions)
            text.append(f"executions:{n}")
            text.extend(":".join(d) for d in executions)
            shown.append(f"-- executemany: {n} executions, each with its own parameters")
            summary = f"{summary} ({n} executions)"
        return ApprovalSubject(text="\x00".join(text), normalized="\n".join(shown),
                               summary=summary, statements=tuple(facts))

    def _unbound_approval(self, what: str, name: str) -> StatementDenied:
        rule = "approval.unbound-session-object"
        return StatementDenied(
            f"denied by policy rule `{rule}`: this statement needs approval, and it runs a"
            f" {'prepared statement' if what == 'prepared' else 'cursor'} whose definition"
            " this session did not see, so no approval could say what it does; prepare or"
            " declare it through this governed connection first, or send the statement itself",
            rule_ids=(rule,))

    def _approve(self, ctx: StatementContext, ident: Identity, analysis: Analysis,
                 decision: Decision,
                 executions: Callable[[], Sequence[tuple[Any, Any]]] | None = None) -> None:
        """Consume an approval for ``ctx``, or file/find the request and raise.

        The approval covers exactly the executions about to run (one, or every parameter
        set of an ``executemany``): each execution is checked against them before it is sent
        (:meth:`check_approved_execution`)."""
        approvals = _config.approvals(self.policy)
        runs: tuple[tuple[str, ...], ...]
        if executions is None:
            runs = (self.execution_digest(analysis.text, ctx.params),)
        else:
            runs = tuple(self.execution_digest(q, p) for q, p in executions())
        try:
            subject = self.approval_subject(analysis, ctx.statements, runs)
        except StatementDenied as exc:
            self._record(ctx, outcome="denied", rules=list(exc.rule_ids))
            raise
        ask = {"identity": ident, "analysis": subject,
               "params_digest": ctx.params_digest,
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
        ctx.approved_runs = runs
        self.event("approval_used", ident, request_id=request_id, statement_id=ctx.id)

    def check_approved_execution(self, ctx: StatementContext, query: Any,
                                 params: Sequence[Any] | None) -> None:
        """Before each execution of a statement that runs under an approval: it must be the
        next one the approval covers (psycopg's executemany converts the query once and only
        dumps later parameter sets: without this an approval of one would run them all)."""
        runs = ctx.approved_runs
        if runs is None:
            return
        index = ctx.executions
        ctx.executions = index + 1
        if index < len(runs) and self.execution_digest(query, params) == runs[index]:
            return
        rule = "approval.binding"
        self._record(ctx, outcome="denied", rules=[rule])
        raise StatementDenied(
            f"denied by policy rule `{rule}`: execution {index + 1} is not one the approval"
            f" {ctx.approval_id} covers ({len(runs)} approved, each with its own parameters);"
            " the executions before it ran. Ask for an approval of exactly what you run",
            rule_ids=(rule,))

    def _check_or_request(self, ctx: StatementContext, approvals: Any,
                          ask: Mapping[str, Any], **extra: Any) -> tuple[str, bool]:
        """The store's answer, with requests, expiries and remembered denials recorded."""
        from ..approvals import ApprovalDenied

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
        """BEGIN/SET/RESET of a read-only identity in pipeline mode: the transaction mode
        cannot be read back between pipelined statements, so it does not run. (A statement
        that may run unseen code has the identity settings read back mid-pipeline instead:
        ``_pipeline_readback``.)"""
        rule_ids = ("session.verify-server-state",)
        self._record(ctx, outcome="denied", rules=list(rule_ids))
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
        from ..rules import Finding, rebuild_decision

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

    def _check_copies(self, ident: Identity, statements: Sequence[StatementFacts],
                      decision: Decision) -> Decision:
        """``column.disallow-masked-copy``: a write that stores a value derived from a masked
        column into a column masked less (or not at all) launders it: every later reader,
        agents included, reads the copy raw (``INSERT INTO notes SELECT id, ssn FROM
        users``; attack F9). Judged for the most restricted reader (an ``ai_agent`` with no
        roles), whoever writes: the writer may see the value, the copy's readers may not.
        A write whose assigned values cannot be followed counts as a copy (fail closed)."""
        rules = [r for r in self.policy.rules_for(ident)
                 if r.id == "column.disallow-masked-copy"]
        if not rules or (decision.action == "deny" and not decision.observe) \
                or self.catalog is None:
            return decision
        from ..analysis._lineage import write_assignments
        from ..rules import Finding, rebuild_decision

        copies: set[str] = set()
        for s in statements:
            if not s.writes:
                continue
            tree: Any = s.tree
            if tree and "ExecuteStmt" in tree:
                name = str(tree["ExecuteStmt"].get("name", ""))
                tree = self.session_trees.get("prepared:" + name) or tree
            pairs = write_assignments(tree, self.catalog)
            if pairs is None:
                if self._may_touch_sensitive(s, self.catalog, ident):
                    copies.add("(a value of unknown lineage)")
                continue
            for target, values in pairs:
                copies.update(self._laundered(target, values, s, ident))
        if not copies:
            return decision
        cfg = rules[0]
        finding = Finding(rule_id=cfg.id, level=cfg.level, message=(
            f"the statement writes a value of masked column(s) {', '.join(sorted(copies))}"
            " into a column that is not masked as strongly: every later reader would see the"
            " copy unmasked. Write it into a column masked the same way, or have the copy"
            " approved"))
        return rebuild_decision(self.policy, (*decision.findings, finding), decision)

    def _laundered(self, target: frozenset[str], values: frozenset[str], s: StatementFacts,
                   ident: Identity) -> set[str]:
        """Masked sources among ``values`` that the target column would not mask as
        strongly, for the most restricted reader."""
        reader = _RESTRICTED_READER
        classify = self.classifier.column
        strength = [classify(*_split3(t), reader) for t in target if t != UNKNOWN]
        out: set[str] = set()
        for src in values:
            if src == UNKNOWN:
                if self._may_touch_sensitive(s, self.catalog, ident):
                    out.add("(a value of unknown lineage)")
                continue
            schema, table, column = _split3(src)
            found = classify(schema, table, column, reader)
            if found is None or found[0] == "none":
                continue
            if not any(t is not None and (t[0] == found[0] or _strength(t[0]) >= 3)
                       for t in strength):
                out.add(f"{table}.{column}")
        return out

    def _check_notify(self, ident: Identity, statements: Sequence[StatementFacts],
                      decision: Decision) -> Decision:
        """``notify.disallow-sensitive-payload``: ``pg_notify`` with a channel or payload
        that is not a constant or parameter, in a statement that may read a value masked for
        the identity. Other listeners are not governed: a payload leaves unmasked."""
        rules = [r for r in self.policy.rules_for(ident)
                 if r.id == "notify.disallow-sensitive-payload"]
        if not rules or (decision.action == "deny" and not decision.observe):
            return decision
        from ..rules import Finding, rebuild_decision

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
        from ..analysis._probes import deciding_uses

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
        from ..analysis import predicate_columns

        probed: set[str] = set()
        names = predicate_columns(s.tree)
        if not names:
            return probed
        catalog = self.catalog
        for table in s.reads | s.writes:
            rel = catalog.resolve(table) if catalog is not None else None
            if rel is None:
                probed.update(f"{table}.{n}" for n in names
                              if self._masked_for("?", table, n, ident))
                continue
            if rel.is_view:
                from ..analysis._lineage import relation_columns

                assert catalog is not None  # rel was resolved in it
                for col, sources in relation_columns(rel, catalog):
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

