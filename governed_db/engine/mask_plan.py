"""Stage 4, mask: the mask plan of every result set (provenance, lineage, free-text
detection), cached by the statement key and the result's shape."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .. import _server_mask
from .._catalog import Catalog
from ..analysis import StatementFacts
from ..analysis._lineage import UNKNOWN, statement_lineage
from ..errors import StatementDenied
from ..identity import Identity
from ..masking import SAFE_TYPE_OIDS, BoundPlan, ColumnMask, MaskPlan
from .context import StatementContext
from .context import _CATALOG_SCHEMAS
from ._governor_state import GovernorState


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


_SHAPED = frozenset({"partial", "email"})


# Strategies that keep part of a value (or its equality classes): direct references only.
_PARTIAL = frozenset({"partial", "email", "hash"})


def _rows_tree(tree: Mapping[str, Any]) -> Mapping[str, Any]:
    """The statement whose rows a result carries: a server cursor's results (the describe
    after ``DECLARE``, every ``FETCH`` from it) are the rows of the query it declares."""
    declare = tree.get("DeclareCursorStmt") if tree else None
    if declare is not None and declare.get("query"):
        query: Mapping[str, Any] = declare["query"]
        return query
    return tree


def _rv_name(rv: Mapping[str, Any]) -> str:
    name = str(rv.get("relname", ""))
    return f"{rv['schemaname']}.{name}" if rv.get("schemaname") else name


def _split_source(src: str) -> tuple[str, str, str]:
    schema, table, column = src.split(".", 2)
    return schema, table, column


def _assigned_keys(stmt: StatementFacts | None, catalog: Catalog | None
                   ) -> dict[str, frozenset[str]]:
    """For a write: target column name -> sources of what may be assigned to it."""
    if stmt is None or catalog is None or not stmt.writes:
        return {}
    from ..analysis._lineage import write_assignments

    pairs = write_assignments(stmt.tree, catalog)
    if pairs is None:
        return {}
    out: dict[str, frozenset[str]] = {}
    for target, values in pairs:
        for t in target:
            name = t.rsplit(".", 1)[-1].lower()
            out[name] = out.get(name, frozenset()) | values
    return out


def _rank(strategy: str) -> int:
    return {"none": 0, "hash": 1, "partial": 2, "email": 2, "redact": 3, "null": 4}.get(strategy, 3)


class ReportCell:
    """The statement and result a bound plan's detection report names (see bind_report);
    ``codec``: the column names' encoding when the rows arrived."""

    __slots__ = ("ctx", "result", "codec")

    def __init__(self, ctx: StatementContext, result: Any, codec: str) -> None:
        self.ctx = ctx
        self.result = result
        self.codec = codec


def _fname(result: Any, i: int, codec: str = "utf-8") -> str:
    try:
        raw = result.fname(i)
    except Exception:  # noqa: BLE001
        return f"column{i}"
    return raw.decode(codec, "replace") if isinstance(raw, bytes) else str(raw)


class MaskPlanStage(GovernorState):
    """The Governor's methods of this stage (see governor.py)."""

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
                return ctx.plans[0][0]
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
            shape = (tuple(map(result.ftable, cols)), tuple(map(result.ftablecol, cols)),
                     tuple(map(result.ftype, cols)))
            plan0 = ctx.cached if index == 0 else None
            if plan0 is not None:
                # The gate's cached plan keeps its first result's plan with that result's
                # shape (its own key is ctx.key): the same lookup without hashing the key.
                kept = plan0.result0
                if kept is not None and kept[0] == shape:
                    ctx.plans[0], ctx.lineage[0] = kept[1]
                    return ctx.plans[0][0]
            key = (ctx.key, index, *shape)
            hit = self._plans.get(key)
            if hit is not None:
                ctx.plans[index], ctx.lineage[index] = hit
                if plan0 is not None:
                    plan0.result0 = (shape, hit)
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
            if index == 0 and ctx.cached is not None:
                ctx.cached.result0 = (key[2:], (entry, lineage))
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
        rows = self._whole_row_outputs(stmt, catalog)
        assigned = _assigned_keys(stmt, catalog)
        masks: list[ColumnMask | None] = []
        any_mask = False
        for i in range(result.nfields):
            cm = self._column_mask(i, result, lineage, catalog, ident, stmt, refs, seen, sources,
                                   assigned, whole_row=i in rows)
            masks.append(cm)
            any_mask = any_mask or cm is not None
        if not any_mask:
            return None
        return MaskPlan(masks, self.classifier.key)

    def _sensitive_source(self, src: str, ident: Identity) -> bool:
        if src == UNKNOWN:
            return True
        found = self.classifier.column(*_split_source(src), ident)
        return found is not None and found[0] != "none"

    def _column_mask(self, i: int, result: Any, lineage: Any, catalog: Catalog | None,
                     ident: Identity, stmt: StatementFacts | None,
                     refs: Mapping[int, str | None], seen: set[str],
                     sources_out: dict[int, frozenset[str]] | None = None,
                     assigned: Mapping[str, frozenset[str]] | None = None,
                     whole_row: bool = False) -> ColumnMask | None:
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
                    from ..analysis._lineage import relation_columns

                    for name, view_sources in relation_columns(rel, catalog):
                        if name == col:
                            sources = view_sources
                            break
        if sources is None and lineage is not None:
            sources = lineage[i][1]
            direct = i in refs
        elif sources is not None and stmt is not None and stmt.writes:
            # RETURNING (also through a data-modifying CTE): the provenance names the column
            # the NEW value is stored in, not where it came from (``SET v = ssn ...
            # RETURNING v`` reports v). The lineage says what may have been assigned to it
            # (attack F9); a write whose lineage is unknown masks as unknown.
            new_value = lineage[i][1] if lineage is not None else frozenset({UNKNOWN})
            if not new_value <= sources:
                sources = sources | new_value
                direct = False
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
        if keyed and assigned:
            # A whole NEW row (``RETURNING to_jsonb(t)``): its keys are the target's column
            # names, but a key holds what the write assigned to it (``SET note = ssn``).
            for name, extra in assigned.items():
                if name in keyed and any(self._sensitive_source(src, ident) for src in extra):
                    keyed[name] = "redact"
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
            if not direct and not whole_row:
                keyed = {}  # keys are the statement's, not column names: trust none
            return ColumnMask(strategy=strongest[0], reason=reason,
                              sources=tuple(sorted(sources)), keyed=keyed,
                              derived=not direct,
                              constant=not direct and result.ftype(i) not in SAFE_TYPE_OIDS)
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
                              sources=tuple(sorted(sources)), derived=True,
                              constant=result.ftype(i) not in SAFE_TYPE_OIDS)
        return ColumnMask(strategy="detect", reason="free-text", sources=tuple(sorted(sources)))

    def bound_plan(self, ctx: StatementContext | None, index: int,
                   result: Any) -> MaskPlan | BoundPlan | None:
        """:meth:`plan`, bound to the statement's detection report: the first time a
        detector masks something in a column, an audit record ``masked_in_text`` says which
        detector, which output column and which base columns (names only, never a value)."""
        plan = self.plan(ctx, index, result)
        if plan is None or not plan._dops or ctx is None or self.auditor is None:
            return plan
        return self.bind_report(plan, index, ReportCell(ctx, result, self.codec))

    def bind_report(self, plan: MaskPlan, index: int, cell: ReportCell) -> BoundPlan | MaskPlan:
        """``plan`` reporting its detections for the statement and result ``cell`` holds
        when a row is made. A cursor outside a pipeline keeps one per cached plan and sets
        the cell for each execution (its earlier results can no longer be fetched then); in
        a pipeline rows of an earlier statement may be made later, so it binds a new cell."""

        def report(column: int, detectors: Sequence[str]) -> None:
            # Called while a row of the cell's result is made: the column's name is read
            # from the result then, not for every column of every statement up front (most
            # statements' detectors find nothing).
            ctx = cell.ctx
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
                           column=_fname(cell.result, column, cell.codec), detector=detector,
                           sources=list(cm.sources) if cm is not None and cm.sources else None)

        return plan.bind(report)

    def _whole_row_outputs(self, stmt: StatementFacts | None,
                           catalog: Catalog | None) -> frozenset[int]:
        """Output positions that are a whole row of a base table as JSON or an array of
        rows: ``to_jsonb(u)``, ``row_to_json(u)``, ``to_json(u.*)``, ``json_agg(u)``,
        ``jsonb_agg(u)``, ``array_agg(u)`` with ``u`` an alias of a top-level FROM item that
        is a base table (and not also a column name). Only there are JSON keys the table's
        column names with each column's stored value under its own name; anywhere else a key
        is whatever the statement wrote (``json_build_object('id', ssn)``), so it says
        nothing about the value under it."""
        if stmt is None or catalog is None:
            return frozenset()
        sel = _rows_tree(stmt.tree).get("SelectStmt")
        if not sel or sel.get("op", "SETOP_NONE") != "SETOP_NONE":
            return frozenset()
        aliases: dict[str, Any] = {}
        for item in sel.get("fromClause") or ():
            rv = item.get("RangeVar") if isinstance(item, dict) else None
            if rv is None or (rv.get("relname") and not rv.get("schemaname")
                              and sel.get("withClause")):
                continue
            rel = catalog.resolve(_rv_name(rv))
            if rel is None or rel.is_view:
                continue
            name = (rv.get("alias") or {}).get("aliasname") or rv.get("relname")
            aliases[name] = rel
        columns = {c.lower() for rel in aliases.values() for c in rel.columns}
        out: set[int] = set()
        for pos, target in enumerate(sel.get("targetList") or ()):
            val = (target.get("ResTarget") or {}).get("val") or {}
            call = val.get("FuncCall") if isinstance(val, dict) else None
            if call is None or len(call.get("args") or ()) != 1 or call.get("agg_distinct") \
                    or call.get("agg_filter") or call.get("agg_order") or call.get("over"):
                continue
            fn = [f.get("String", {}).get("sval") for f in call.get("funcname") or ()]
            if fn[-1:] not in (["to_jsonb"], ["to_json"], ["row_to_json"], ["json_agg"],
                               ["jsonb_agg"], ["array_agg"]) or \
                    (len(fn) == 2 and fn[0] != "pg_catalog") or len(fn) > 2:
                continue
            ref = (call["args"][0] or {}).get("ColumnRef") or {}
            fields = ref.get("fields") or ()
            names = [f.get("String", {}).get("sval") if "String" in f else "*" for f in fields]
            if names[-1:] == ["*"]:
                names = names[:-1]
            if len(names) == 1 and names[0] in aliases and names[0] not in columns:
                out.add(pos)
        return frozenset(out)

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
            return ColumnMask(strategy="redact", reason="unknown-lineage",
                              constant=result.ftype(i) not in SAFE_TYPE_OIDS)
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
        return MaskPlan([ColumnMask(strategy="redact", reason="unknown-lineage",
                                    constant=result.ftype(i) not in SAFE_TYPE_OIDS)
                         for i in range(result.nfields)], self.classifier.key)

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

