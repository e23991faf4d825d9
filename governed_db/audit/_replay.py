"""``governed-db policy replay``: the recorded statements through a new policy, before it ships.

Each statement record's normalized text (literals are ``$n`` placeholders, which PostgreSQL's
parser accepts, so the statement keeps its shape) is analyzed again and decided by the new
policy for the recorded identity — with the same :class:`~governed_db.engine.Governor`
decision path a live connection uses (``Governor.decide``: guardrails plus the
predicate-on-masked check), one governor per recorded session so ``PREPARE``/``DECLARE``
seen earlier in that session resolve ``EXECUTE``/``FETCH`` as they did. Masking is planned
again from the statement's lineage when a catalog snapshot is given (``--dsn``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .._catalog import Catalog
from ..errors import PolicyError
from ..identity import Identity
from ..policy import Policy
from ._export import session_id
from ._verify import iter_records

__all__ = ["CAVEATS", "load_catalog", "replay"]

# What a replay cannot know: printed with every report.
# Rules that resolve names through the catalog (shadowing of built-in functions, which
# relation a name means): without --dsn they fail closed, which says nothing about the policy.
CATALOG_RULES = frozenset({"function.allowlist", "catalog.allowlist"})

CAVEATS = (
    "function and catalog allow-lists resolve names through the catalog: without --dsn their "
    "findings are left out (they would fail closed on every function call)",
    "parameter values and literals: records keep only the normalized text ($n placeholders) "
    "and keyed hashes, so rules that read a literal (a set_config() setting name, LIMIT n) "
    "see a placeholder; give --baseline with the current policy to cancel such effects",
    "row counts under the new policy: affected-row and returned-row limits are compared with "
    "the rows recorded at the time, not re-measured (the blast radius is known only by "
    "running the statement)",
    "function bodies, views and the catalog at the time: masking and predicate checks use "
    "today's catalog (--dsn), or names alone without one",
    "approvals already granted, and server-side checks made at run time (READ ONLY, "
    "settings the server reported)",
)


def load_catalog(dsn: str, policy: Policy) -> Catalog:
    """A catalog snapshot as a governed connection loads it (read-only; with the policy's
    pinned ``search_path``)."""
    import psycopg

    from .._catalog import CATALOG_QUERY

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = on")
        if policy.session.search_path is not None:
            conn.execute("SELECT pg_catalog.set_config('search_path', %s, false)",
                         (policy.session.search_path,))
        rows = conn.execute(CATALOG_QUERY).fetchall()
    return Catalog.from_rows(rows, version=1)


def _identity(rec: Mapping[str, Any]) -> Identity:
    ident = rec.get("identity") or {}
    return Identity(str(ident.get("id")), str(ident.get("kind")), purpose=ident.get("purpose"),
                    on_behalf_of=ident.get("on_behalf_of"), model=ident.get("model"),
                    roles=tuple(ident.get("roles") or ()),
                    attributes=dict(ident.get("attributes") or {}))


class _Result:
    """The shape of a result (column names) for planning masks without a server result."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.nfields = len(names)

    def ftable(self, i: int) -> int:
        return 0  # no provenance: the plan comes from the statement's lineage

    def ftablecol(self, i: int) -> int:
        return 0

    def ftype(self, i: int) -> int:
        return 0  # not recorded; free-text scanning (which depends on it) is not compared

    def fname(self, i: int) -> bytes:
        return self.names[i].encode()


class _Replayer:
    def __init__(self, policy: Policy, catalog: Catalog | None) -> None:
        self.policy = policy
        self.catalog = catalog
        self.governors: dict[str, Any] = {}

    def governor(self, rec: Mapping[str, Any]) -> Any:
        from ..engine import Governor

        sid = session_id(rec) or f"chain:{rec.get('chain')}"
        gov = self.governors.get(sid)
        if gov is None:
            gov = Governor(policy=self.policy, identity=None, auditor=None,
                           catalog_key=("replay", sid), conn_info=rec.get("db") or {})
            gov.catalog = self.catalog
            gov.catalog_stale = False
            self.governors[sid] = gov
        return gov

    def decide(self, rec: Mapping[str, Any], analysis: Any, ident: Identity) -> Any:
        from ..engine import StatementContext

        gov = self.governor(rec)
        statements, decision = gov.decide(analysis, ident)
        if self.catalog is None:
            decision = _without_catalog_rules(self.policy, decision)
        ctx = StatementContext(id=str(rec.get("id")), identity=ident, analysis=analysis,
                               statements=statements, decision=decision, started=0.0)
        if (rec.get("outcome") or {}).get("outcome") == "ok":
            gov.session_effects(ctx)
            gov.catalog, gov.catalog_stale = self.catalog, False  # DDL: today's snapshot
        return ctx

    def masks(self, rec: Mapping[str, Any], ctx: Any) -> dict[str, str] | None:
        """Strategy per output column under the new policy; None: not evaluated."""
        if self.catalog is None:
            return None
        from ..analysis._lineage import statement_lineage

        gov = self.governor(rec)
        out: dict[str, str] = {}
        for index, stmt in enumerate(ctx.statements):
            lineage = statement_lineage(stmt.tree, self.catalog, gov.session_trees)
            if lineage is None:
                return None  # the shape of its result is not known from the text alone
            if not lineage:
                continue
            gov.plan(ctx, index, _Result([name for name, _ in lineage]))
        for _, masked, _ in ctx.plans.values():
            out.update({k: v.split(":", 1)[0] for k, v in masked.items()
                        if not v.endswith(":free-text")})
        return out


def _without_catalog_rules(policy: Policy, decision: Any) -> Any:
    import attrs

    from ..rules import rebuild_decision

    kept = tuple(f for f in decision.findings if f.rule_id not in CATALOG_RULES)
    if len(kept) == len(decision.findings):
        return decision
    if not kept:
        return attrs.evolve(decision, action="allow", findings=(), would="allow")
    return rebuild_decision(policy, kept, attrs.evolve(decision, findings=()))


def _label(rec: Mapping[str, Any]) -> str:
    ident = rec.get("identity") or {}
    return f"{ident.get('kind')}:{ident.get('id')}"


def _change(before: str, after: str) -> str:
    return {"deny": "denied", "approval": "approval"}.get(after, "allowed") \
        if before != after else "masking"


def replay(source: str | Path | Iterable[Mapping[str, Any]], policy: Policy, *,
           catalog: Catalog | None = None, baseline: Policy | None = None) -> dict[str, Any]:
    """Which recorded statements ``policy`` would decide (or mask) differently.

    A statement changes when the new policy's action (allow / deny / approval) differs from
    the recorded one — or, with ``baseline``, from the baseline policy's action on the same
    normalized text (cancelling what normalization hides) — or when, with a catalog, an
    output column would be masked with another strategy. Returns a JSON-able report: the
    changes, counts per rule and per identity, limit warnings, skipped records, caveats.
    """
    records = (rec for _, rec, _ in iter_records(source)) if isinstance(source, (str, Path)) \
        else iter(source)
    new = _Replayer(policy, catalog)
    base = _Replayer(baseline, catalog) if baseline is not None else None
    from ..analysis import analyze

    changes: list[dict[str, Any]] = []
    limits: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    by_rule: dict[str, dict[str, int]] = {}
    by_identity: dict[str, dict[str, int]] = {}
    evaluated = 0
    masking_evaluated = 0
    for rec in records:
        if rec is None or rec.get("type") != "statement":
            continue
        stmt = rec.get("statement") or {}
        text = stmt.get("normalized")
        if not text:
            skipped.append({"id": rec.get("id"), "why": "no normalized text (unparseable when"
                            " recorded: denied under any policy)"})
            continue
        analysis = analyze(text)
        if analysis.error is not None:
            skipped.append({"id": rec.get("id"), "why": "the normalized text does not parse"})
            continue
        try:
            ident = _identity(rec)
        except PolicyError:
            skipped.append({"id": rec.get("id"), "why": "the recorded identity is not valid"})
            continue
        evaluated += 1
        ctx = new.decide(rec, analysis, ident)
        decision = ctx.decision
        recorded = rec.get("decision") or {}
        before_action = str(recorded.get("action") or "allow")
        before_rules = list(recorded.get("rules") or ())
        bctx = None
        if base is not None:
            bctx = base.decide(rec, analysis, ident)
            before_action, before_rules = bctx.decision.action, list(bctx.decision.rule_ids)
        masking: list[dict[str, Any]] = []
        ran = (rec.get("outcome") or {}).get("outcome") == "ok"
        if ran and (rec.get("lineage") or rec.get("masked")):
            after_masks = new.masks(rec, ctx)
            if after_masks is not None:
                masking_evaluated += 1
                if base is not None and bctx is not None:
                    before_masks = base.masks(rec, bctx) or {}
                else:
                    # Free-text scanning depends on the result's column types, which the
                    # record does not keep: left out on both sides.
                    before_masks = {k: str(v).split(":", 1)[0]
                                    for k, v in (rec.get("masked") or {}).items()
                                    if not str(v).endswith(":free-text")}
                for col in sorted(set(before_masks) | set(after_masks)):
                    if before_masks.get(col) != after_masks.get(col):
                        masking.append({"column": col, "before": before_masks.get(col),
                                        "after": after_masks.get(col)})
        out = rec.get("outcome") or {}
        recorded_rows = out.get("affected_rows") if out.get("affected_rows") is not None \
            else out.get("rowcount")
        if ran and recorded_rows is not None:
            writes = bool(stmt.get("writes"))
            limit = decision.affected_row_limit if writes else decision.max_rows_returned
            if limit is not None and int(recorded_rows) > limit:
                limits.append({"id": rec.get("id"), "identity": _label(rec),
                               "summary": stmt.get("summary"),
                               "rule": "statement.affected-row-limit" if writes
                               else "statement.max-rows-returned",
                               "recorded_rows": int(recorded_rows), "limit": limit})
        if decision.action == before_action and not masking:
            continue
        kind = _change(before_action, decision.action)
        rules = [f.rule_id for f in (decision.blocking or decision.findings)] \
            if kind in ("denied", "approval") else before_rules
        if kind == "masking":
            rules = ["column.mask"]
        changes.append({"id": rec.get("id"), "ts": rec.get("ts"), "seq": rec.get("seq"),
                        "chain": rec.get("chain"), "session": session_id(rec),
                        "identity": _label(rec), "summary": stmt.get("summary"),
                        "normalized": text, "change": kind,
                        "before": {"action": before_action, "rules": before_rules},
                        "after": {"action": decision.action,
                                  "rules": list(decision.rule_ids)},
                        "rules": rules, "masking": masking})
        for rule in rules:
            by_rule.setdefault(rule, {}).setdefault(kind, 0)
            by_rule[rule][kind] += 1
        by_identity.setdefault(_label(rec), {}).setdefault(kind, 0)
        by_identity[_label(rec)][kind] += 1
    return {"policy": policy.version_tag, "baseline": baseline.version_tag if baseline else None,
            "evaluated": evaluated, "changed": len(changes), "changes": changes,
            "by_rule": by_rule, "by_identity": by_identity, "limits": limits,
            "skipped": skipped,
            "masking": "evaluated with the catalog snapshot" if catalog is not None
            else "not evaluated (give --dsn to load the catalog)",
            "masking_evaluated": masking_evaluated, "caveats": list(CAVEATS)}
