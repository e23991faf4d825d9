"""Which base columns decide *which rows, in which order, how many* a statement returns.

``column.disallow-predicate-on-masked`` refuses statements whose row selection depends on a
column the identity sees masked: ``WHERE ssn LIKE '1%'`` returns the rows whose hidden value
starts with 1, so a value can be read bit by bit without ever being selected. Matching column
*names* in WHERE clauses misses every rename; this module follows lineage instead (the same
machinery as masking), through subqueries, CTEs, views, joins and whole-row forms
(``u::text``, ``to_jsonb(u)->>'ssn'``, ``(u).ssn``, ``ssn(u)``).

Deciding clauses, at every query level (subqueries and CTEs included): WHERE, JOIN … ON,
HAVING, GROUP BY and ORDER BY (output positions and output aliases resolved to the output's
lineage), DISTINCT ON, window PARTITION BY / ORDER BY (in the select list too: rows often come
back in window order), LIMIT / OFFSET expressions.

Allowed shapes, so ordinary analytics run: ``col IS [NOT] NULL`` on a plain column (reveals
nullness only); equality between two plain columns of base tables (``o.user_id = u.id``,
``u.email = o.email``: a join reveals whether two stored values match, never what they are);
and, for the same reason, GROUP BY / PARTITION BY / DISTINCT ON a plain stored column (one
group per hidden value: equality classes, as the join). Ordering by a masked column is never
allowed (it reveals comparisons), nor grouping by an expression of one (``substr(ssn, 5, 1)``).
PostgreSQL implements those equality shapes by sorting or hashing on the value, so their level
must also fix its output order by something else (``_Probe._level_order``, attack F6).
A side that is a CTE/subquery/VALUES column or any expression is not "plain": ``JOIN (VALUES
('guess')) v(x) ON u.email = v.x`` is a probe.

Value oracles (every other use of a value): a value computed from a masked column and
*output* (``SELECT ssn LIKE '1%'``, ``lower(email)``) is masked as a whole by the mask plan,
but the same value has effects beyond the output when it decides how many rows a
set-returning function yields (``generate_series(1, ascii(email))``), whether the statement
raises (``1/(ascii(ssn) - 48)``, ``substr(ssn, 1, 1)::int``) or which branch runs (``CASE
WHEN ssn …``, AND/OR, FILTER). So the select list, RETURNING, SET and VALUES are walked too
(:meth:`_Probe.nested`): a value may reach an output or pass through the allow-list of total
operations below; any other consumer is a deciding use, reported with how it decides.
Duplicate removal (UNION, INTERSECT, EXCEPT, DISTINCT over an expression) compares values
and is deciding as well.

TOTAL (the definition every entry of :data:`TOTAL_FUNCTIONS` / :data:`TOTAL_OPERATORS` is
checked against): an operation is total in an argument position when for EVERY value there it
(1) never raises (no range, format, size-limit or allocation check a value can fail), (2) never
returns NULL for a non-NULL input, and (3) returns a result whose shape (elements, keys), size
and cost are decided by no property of the value beyond its length. Its result may be NULL only
where an input is NULL (shown by ``IS NULL`` anyway) or by row position (``lag``). Lookups with
a hidden key (``->``, ``->>``, ``#>``, subscripts), NULL-on-no-match functions (``substring(s
FROM pattern)``, ``array_length``), JSON keys and lpad/rpad's fill fail it; so does every
function whose output SIZE follows the content (``replace``, ``translate``, the trims,
``split_part``, the quote_* functions, ``strpos``'s work: with a huge second operand the 1 GB /
256 MB limits or a statement_timeout answer "does the hidden value contain c?", attack G1). The
output that a total chain reaches is masked to a constant, NULL included
(``masking.ColumnMask.constant``). Residual (SECURITY.md): sizes follow lengths, so a value's
length (in characters and bytes) can still decide a size-limit error when it is combined with a
huge operand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._catalog import Catalog
from ._lineage import (
    UNKNOWN,
    Column,
    _Entry,
    _find_entry,
    _has_column,
    _Lineage,
    _svals,
    _Unresolvable,
)
from ._nodes import funcname

__all__ = ["TEXT_TYPES", "TOTAL_FUNCTIONS", "TOTAL_OPERATORS", "deciding_sources",
           "deciding_uses"]

# -- the allow-list of total operations ------------------------------------------------------
# TOTAL, in the strict sense this module relies on: an operation is total in an argument
# position when, for EVERY value that position may receive,
#   (1) it never raises (no range, format, encoding, size-limit or allocation check that a
#       value can fail: lpad/rpad's fill decides whether a huge length is allocated, a NULL
#       JSON key raises "cannot be null", repeat's count, casts to non-text types);
#   (2) it never returns NULL for a non-NULL input (a lookup such as ``->``/``->>``/``#>``/a
#       subscript with a hidden key, ``array_length`` of an empty array, ``substring(s FROM
#       pattern)`` that does not match, each answer "is the hidden value this one?" with
#       NULL-or-not);
#   (3) its result's SHAPE (number of elements, number of keys) depends on no input value
#       (jsonb objects keep one of equal keys, so ``jsonb_build_object(ssn, 1, 'guess', 2)``
#       counts 1 when they match: keys are never a total position); and
#   (4) its result's SIZE and the WORK to compute it are decided by no property of the value beyond
#       its length. Sizes are checked by the server (1 GB for a text or array, 256 MB for a jsonb,
#       statement_timeout for work): an operation whose size follows the content turns those checks
#       into an oracle. ``length(replace(substr(ssn, 1, 1), '0', repeat('x', 540000000)) ||
#       repeat('y', 540000000))`` raises exactly when the first character is '0' (attack G1). So not
#       total: replace's string and pattern (the replacement is: its size times a count of matches
#       in the other, non-hidden, operands), translate (deletes and widens by content),
#       btrim/ltrim/rtrim/trim (remove as many characters as match), split_part (a part's size is
#       where the delimiters are), quote_literal/quote_ident/quote_nullable (double quotes and
#       backslashes), strpos (a search stops at the first match: with a hidden needle and a huge
#       haystack the work is where the match is), regexp_* (never listed). What remains follows
#       lengths only; the residual, documented in SECURITY.md: a value's length (characters, and
#       bytes per character) combined with a huge operand still decides whether a size limit is
#       crossed; lower/upper/initcap change the byte width of a few non-ASCII letters, and JSON text
#       escapes '"', '\\' and control characters, a char(n) cast's text drops trailing spaces: fixed
#       sets no caller chooses.
# Whether the result is NULL may depend only on whether an input is NULL (which ``IS NULL`` on
# the stored column shows anyway) or on a row's position (lag, first_value). A value derived
# from a masked column may pass only through total positions; the result then reaches an
# output column, where the mask plan replaces it (NULL included) by a constant.
# Function name -> argument positions that are total (None: all of them). Built-ins only: a
# user function of the same name is never total. Deliberately absent: arithmetic, casts to
# non-text, make_*, to_date, to_number, repeat, lpad/rpad's length and fill, regexp_* and
# substring's pattern forms, set-returning functions (row count), sum/avg (overflow on some
# types), format (format string), array_length (NULL for empty), json_object/jsonb_object
# (keys), the lookups, and the content-sized functions of (4).
TOTAL_FUNCTIONS: Mapping[str, frozenset[int] | None] = {
    **dict.fromkeys((
        "lower", "upper", "initcap", "length", "char_length", "character_length",
        "octet_length", "bit_length", "md5", "ascii", "reverse", "starts_with",
        "concat", "concat_ws", "to_json", "to_jsonb", "row_to_json",
        "array_to_json", "json_build_array", "jsonb_build_array", "jsonb_typeof",
        "json_typeof", "array_to_string", "cardinality", "num_nulls", "num_nonnulls",
        "count", "min", "max", "array_agg", "string_agg", "json_agg", "jsonb_agg",
        "bool_and", "bool_or", "every",
    ), None),
    # the string is total; a position or length derived from a masked value is not
    # (substring: only with integer positions, see _INT_POSITION_ONLY)
    "substr": frozenset({0}), "substring": frozenset({0}), "left": frozenset({0}),
    "right": frozenset({0}), "overlay": frozenset({0, 1}),
    "lpad": frozenset({0}), "rpad": frozenset({0}),
    # replace(s, from, to): only the replacement (see (4))
    "replace": frozenset({2}),
    # values only: a NULL key raises, equal jsonb keys collapse
    "json_object_agg": frozenset({1}), "jsonb_object_agg": frozenset({1}),
    # window functions: the value is total, an offset or bucket count is not
    "lag": frozenset({0}), "lead": frozenset({0}), "first_value": frozenset({0}),
    "last_value": frozenset({0}), "nth_value": frozenset({0}),
}
# key, value, key, value...: the values (odd positions) are total, the keys are not
_PAIR_BUILDERS = frozenset({"json_build_object", "jsonb_build_object"})
# substring(s, 'pattern') / substring(s SIMILAR p ESCAPE e) return NULL when nothing matches:
# the string is total only when every other argument is an integer constant.
_INT_POSITION_ONLY = frozenset({"substring"})
# Operators that cannot raise on any operand values and return NULL only for a NULL operand
# (comparisons reveal nothing beyond the boolean output, which is masked as a whole). Not
# the JSON lookups (-> ->> #> #>>: NULL when the hidden key is absent).
TOTAL_OPERATORS = frozenset({"||", "=", "<>", "!=", "<", ">", "<=", ">="})
# Casts that cannot raise for any value (every type has a text output).
TEXT_TYPES = frozenset({"text", "varchar", "bpchar", "char", "name"})
_TOTAL_EXPR_KINDS = frozenset({"AEXPR_DISTINCT", "AEXPR_NOT_DISTINCT"})
# x IN (a, b) and x BETWEEN a AND b become OR/AND chains, evaluated lazily: a hidden x decides
# whether a later (possibly raising) operand runs, unless every operand is a constant.
_LIST_KINDS = frozenset({"AEXPR_IN", "AEXPR_BETWEEN", "AEXPR_NOT_BETWEEN",
                         "AEXPR_BETWEEN_SYM", "AEXPR_NOT_BETWEEN_SYM"})
_SUBJECT_ONLY_KINDS = frozenset({"AEXPR_LIKE", "AEXPR_ILIKE", "AEXPR_SIMILAR"})
_TOTAL_NODES = frozenset({"RowExpr", "A_ArrayExpr", "NullTest", "BooleanTest", "ResTarget",
                          "List", "SortBy", "CollateClause", "MultiAssignRef"})
_LEAVES = frozenset({"A_Const", "ColumnRef", "ParamRef", "SQLValueFunction", "A_Star",
                     "String", "Integer", "Float", "Boolean", "SetToDefault"})
_TOTAL_XML = frozenset({"IS_XMLELEMENT", "IS_XMLFOREST"})
# Set-returning functions that expand one level of a collection, and builders of collections
# whose element count is fixed by the syntax or by a row count (not by any value). Caveat: an
# element that is itself an array (a masked array-typed column) would be flattened by unnest.
_ONE_LEVEL_SRFS = frozenset({"unnest", "json_array_elements", "jsonb_array_elements",
                             "json_array_elements_text", "jsonb_array_elements_text",
                             "json_each", "jsonb_each", "json_each_text", "jsonb_each_text",
                             "json_object_keys", "jsonb_object_keys"})
_FIXED_SHAPE_BUILDERS = frozenset({"array_agg", "json_agg", "jsonb_agg", "json_build_array",
                                   "jsonb_build_array", "json_build_object"})
# (Not jsonb_build_object / jsonb_object_agg: jsonb keeps one of equal keys, so the number
# of pairs would say whether two values are equal.)
_PREDICATE = "decides which rows, in which order or how many come back"
_ORDER = ("decides the order rows come back in (GROUP BY, DISTINCT, PARTITION BY or an"
          " equality join on it sort by its value); add an ORDER BY on columns that are not"
          " masked and identify each row (a primary key; min(id) when grouped)")
# subqueries that only test membership: the order of their rows cannot escape
_SET_SUBLINKS = frozenset({"EXISTS_SUBLINK", "ANY_SUBLINK", "ALL_SUBLINK"})
# window functions whose result depends on the order rows reach them
_ORDERED_WINDOWS = frozenset({"row_number", "ntile", "lag", "lead", "first_value",
                              "last_value", "nth_value"})
# aggregates whose result depends on the order of their input (without their own ORDER BY)
_ORDERED_AGGREGATES = frozenset({"array_agg", "string_agg", "json_agg", "jsonb_agg", "xmlagg",
                                 "json_object_agg", "jsonb_object_agg", "json_objectagg",
                                 "json_arrayagg"})
_AGGREGATES = _ORDERED_AGGREGATES | frozenset({
    "count", "sum", "avg", "min", "max", "bool_and", "bool_or", "every", "bit_and", "bit_or",
    "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp"})
_SORTS = "decides the order of an aggregate's input (values are sorted)"
_SETOP = "decides how many rows a UNION/INTERSECT/EXCEPT keeps (values are compared)"
_ROWS = "decides how many rows a set-returning function returns"
_BRANCH = "decides which branch of a conditional expression runs (and whether it errors)"
_RAISES = "is an operand of {}, which can raise for some values (an error oracle)"


class _Probe:
    def __init__(self, catalog: Catalog) -> None:
        self.lin = _Lineage(catalog)
        self.out: dict[str, str] = {}  # deciding source -> how it decides (first use seen)
        # Per query level being walked: the sources of the "equality only" shapes allowed at
        # that level (kind -> sources), whose ORDER the server may follow (see _level_order).
        self._levels: list[dict[str, set[str]]] = []
        self._unordered: set[int] = set()  # ids of EXISTS/IN/ANY/ALL subquery bodies
        # FROM subqueries and CTE bodies: their order taint is judged where they are read
        self._inner: set[int] = set()
        self._deferred: dict[int, set[str]] = {}
        self._cte_taint: dict[str, set[str]] = {}
        self._pairs: list[list[tuple[str, str]]] = []  # equality-joined FROM items per level

    def _refs(self, node: Any, scopes: list[list[_Entry]],
              ctes: Mapping[str, list[Column]]) -> frozenset[str]:
        try:
            return self.lin.refs(node, scopes, ctes)
        except _Unresolvable:
            return frozenset({UNKNOWN})

    def _taint(self, kind: str, sources: frozenset[str] | set[str]) -> None:
        if self._levels and sources:
            self._levels[-1].setdefault(kind, set()).update(sources)

    def _add(self, sources: frozenset[str] | set[str], why: str) -> None:
        for src in sources:
            self.out.setdefault(src, why)

    # -- statements -------------------------------------------------------------------------

    def statement(self, node: Any, outer: list[list[_Entry]],
                  ctes: Mapping[str, list[Column]]) -> None:
        if not isinstance(node, dict):
            return
        for typ, body in node.items():
            if typ == "SelectStmt":
                self.select(body, outer, ctes)
            elif typ in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
                self.dml(typ, body, outer, ctes)
            elif isinstance(body, dict):
                # Any other statement: its body is a dict of FIELDS (never a node), walked
                # field by field, so a body with one field (``EXPLAIN query``, ``COPY (query)
                # TO STDOUT``: only ``query``) is not misread as a node of that type.
                for value in body.values():
                    self.nested(value, outer, ctes)

    def _ctes(self, wc: Any, outer: list[list[_Entry]],
              ctes: Mapping[str, list[Column]]) -> Mapping[str, list[Column]]:
        if not wc:
            return ctes
        wc = wc.get("WithClause", wc)
        for item in wc.get("ctes", ()):
            cte = item.get("CommonTableExpr", {})
            taint = self._inner_statement(cte.get("ctequery"), outer, ctes)
            if taint is not None:
                self._cte_taint[str(cte.get("ctename", ""))] = taint
        return self.lin._with(wc, outer, ctes)

    def _inner_statement(self, query: Any, outer: list[list[_Entry]],
                         ctes: Mapping[str, list[Column]]) -> Any:
        """Walk a CTE's or FROM subquery's statement as an inner one (judged where it is
        read); the order taint it deferred to its reader, or None."""
        sel = query.get("SelectStmt") if isinstance(query, dict) else None
        if isinstance(sel, dict):
            self._inner.add(id(sel))
        self.statement(query, outer, ctes)
        if isinstance(sel, dict) and id(sel) in self._deferred:
            return self._deferred.pop(id(sel))
        return None

    def select(self, body: Mapping[str, Any], outer: list[list[_Entry]],
               ctes: Mapping[str, list[Column]]) -> None:
        self._levels.append({})
        self._pairs.append([])
        try:
            level = self._select(body, outer, ctes)
        finally:
            taint = self._levels.pop()
            pairs = self._pairs.pop()
        if taint:
            self._level_order(body, level, taint, pairs)

    def _select(self, body: Mapping[str, Any], outer: list[list[_Entry]],
                ctes: Mapping[str, list[Column]]) -> list[_Entry] | None:
        ctes = self._ctes(body.get("withClause"), outer, ctes)
        op = body.get("op", "SETOP_NONE")
        if op not in (None, "SETOP_NONE"):
            self.statement({"SelectStmt": _sel(body["larg"])}, outer, ctes)
            self.statement({"SelectStmt": _sel(body["rarg"])}, outer, ctes)
            targets = self.lin.select(body, outer, ctes)
            scopes: list[list[_Entry]] = [[], *outer]
            if op != "SETOP_UNION" or not body.get("all"):
                # Duplicate removal (UNION) and INTERSECT/EXCEPT compare every output value
                # across branches: with a guessed literal in one branch, the row count says
                # whether the hidden value equals the guess.
                for _, src in targets:
                    self._add(src, _SETOP)
        else:
            for row in body.get("valuesLists") or ():
                self.nested(row, outer, ctes)
            scope: list[_Entry] = []
            for item in body.get("fromClause") or ():
                entries = self.from_item(item, [scope, *outer], ctes)
                scope.extend(entries)
            scopes = [scope, *outer]
            targets = self.lin.select(body, outer, ctes)
            for target in body.get("targetList") or ():
                val = (target.get("ResTarget") or {}).get("val")
                self.nested(val, scopes, ctes)  # subqueries and window clauses
            self.decide(body.get("whereClause"), scopes, ctes)
            self.decide(body.get("havingClause"), scopes, ctes)
            tlist = [(t.get("ResTarget") or {}).get("val") for t in body.get("targetList") or ()]
            for item in body.get("groupClause") or ():
                self.ordering(item, scopes, ctes, targets, prefer_output=False,
                              equality=True, tlist=tlist)
            for item in body.get("distinctClause") or ():
                if item:  # DISTINCT ON (…); plain DISTINCT is a list with one empty node
                    self.ordering(item, scopes, ctes, targets, prefer_output=True,
                                  equality=True, tlist=tlist)
                    continue
                # Plain DISTINCT groups by every output: a plain stored column (or a whole
                # row of base tables) gives equality classes only, as GROUP BY does; an
                # expression (substr(ssn, 1, 4)) would count the rows sharing a prefix.
                for val in tlist:
                    star = _star_ref(val)
                    if star is not None and all(
                            e.relation is not None and not e.relation.is_view and not e.unknown
                            for e in (scope if not star else
                                      [x for x in scope if x.alias == star[-1]])):
                        self._taint("group", self._refs(val, scopes, ctes))
                        continue
                    self.ordering(val, scopes, ctes, targets, prefer_output=False,
                                  equality=True, tlist=tlist)
            for wd in body.get("windowClause") or ():
                self.window_def(wd.get("WindowDef", wd), scopes, ctes)
        for item in body.get("sortClause") or ():
            self.ordering((item.get("SortBy") or {}).get("node"), scopes, ctes, targets,
                          prefer_output=True)
        for key in ("limitCount", "limitOffset"):
            self.decide(body.get(key), scopes, ctes)
        return scopes[0] if op in (None, "SETOP_NONE") else None

    # -- the order rows come back in ---------------------------------------------------------

    def _level_order(self, body: Mapping[str, Any], scope: list[_Entry] | None,
                     taint: Mapping[str, set[str]],
                     pairs: Sequence[tuple[str, str]] = ()) -> None:
        """Grouping, DISTINCT, PARTITION BY or an equality join on a stored value reveal only
        equality classes in WHAT comes back, but PostgreSQL implements them by sorting (or
        hashing) on the value, and rows then come back in the hidden value's order: a ranking
        oracle (attack F6; ``SELECT DISTINCT ON (email) id`` is ``ORDER BY email``). So such
        a level's sources decide the order unless its order provably does not follow them:
        its ORDER BY is total (see :meth:`_total_order`) or, for an EXISTS / IN / ANY / ALL
        subquery without LIMIT, order is not observable. Window functions that read rows in
        order (row_number, lag, first_value, ntile, aggregates over a window without ORDER BY)
        and order-sensitive aggregates after an equality join see the rows in that order
        whatever the level's ORDER BY says."""
        limited = body.get("limitCount") is not None or body.get("limitOffset") is not None
        if "input" in taint and scope is not None and len(scope) > 1 \
                and body.get("sortClause"):
            # Rows of a value-ordered subquery/CTE joined with other items and sorted again
            # by this level's ORDER BY: accepted. KNOWN RESIDUE: rows this ORDER BY leaves
            # tied keep the subquery's order (see SECURITY.md, "order of grouped rows").
            taint = {k: v for k, v in taint.items() if k != "input"}
            if not taint:
                return
        sources: set[str] = set().union(*taint.values())
        total = scope is not None and self._total_order(
            body, scope, pairs if set(taint) == {"join"} else ())
        if id(body) in self._inner and not total and not limited:
            # a FROM subquery / CTE: its order matters where it is read (the consumer)
            self._deferred.setdefault(id(body), set()).update(sources)
            sources_left = self._order_consumers(body, taint)
            if sources_left:
                self._add(sources_left, _ORDER)
            return
        observable = id(body) not in self._unordered or limited
        if not observable and self._levels:
            # EXISTS / IN / ANY: the planner may run it as a (merge) semi-join, returning the
            # ENCLOSING level's rows in the order of the correlated values: judged there
            self._taint("join", sources)
        if scope is None or (observable and not total):
            self._add(sources, _ORDER)
            return
        left = self._order_consumers(body, taint)
        if left:
            self._add(left, _ORDER)

    def _order_consumers(self, body: Mapping[str, Any], taint: Mapping[str, set[str]]
                         ) -> set[str]:
        """Sources whose order reaches a window function or aggregate of this level that
        reads its rows in order (whatever the level's own ORDER BY says)."""
        tlist = [(t.get("ResTarget") or {}).get("val") for t in body.get("targetList") or ()]
        calls = _calls([tlist, body.get("havingClause")])
        if any(c.get("over") and _order_sensitive_window(c) for c in calls):
            return set().union(*taint.values())
        streamed = set().union(*(v for k, v in taint.items() if k in ("join", "input")))
        if streamed and any(not c.get("over") and funcname(c) in _ORDERED_AGGREGATES
                            and not c.get("agg_order") for c in calls):
            return streamed
        return set()

    def _total_order(self, body: Mapping[str, Any], scope: list[_Entry],
                     pairs: Sequence[tuple[str, str]] = ()) -> bool:
        """Whether the level's ORDER BY leaves no two output rows tied: for every FROM item
        (a base table) a unique key of it is among the sort keys; for a grouped level over one
        base table, ``min``/``max`` of a one-column unique key (groups are disjoint, so it
        differs per group) or every grouping key. A level that aggregates without GROUP BY
        returns one row."""
        tlist = [(t.get("ResTarget") or {}).get("val") for t in body.get("targetList") or ()]
        names = [(t.get("ResTarget") or {}).get("name") for t in body.get("targetList") or ()]
        grouped = bool(body.get("groupClause"))
        if not grouped and not body.get("distinctClause") and any(
                not c.get("over") and funcname(c) in _AGGREGATES for c in _calls(tlist)):
            return True
        plain: set[tuple[str, str]] = set()
        extremes: set[tuple[str, str]] = set()
        for item in body.get("sortClause") or ():
            node = (item.get("SortBy") or {}).get("node")
            node = _output_item(node, tlist, names, scope)
            ref = _plain_ref(node)
            if ref is not None:
                hit = _resolve(ref, scope)
                if hit is not None:
                    plain.add(hit)
                continue
            call = node.get("FuncCall") if isinstance(node, dict) else None
            if call is not None and funcname(call) in ("min", "max") and not call.get("over") \
                    and len(call.get("args") or ()) == 1:
                inner = _plain_ref(call["args"][0])
                hit = _resolve(inner, scope) if inner is not None else None
                if hit is not None:
                    extremes.add(hit)
        catalog = self.lin.catalog
        unique = getattr(catalog, "unique_keys", {})
        bases = [e for e in scope if e.relation is not None and not e.relation.is_view
                 and not e.unknown]
        if not scope or len(bases) != len(scope):
            return False
        if grouped:
            groups = [_plain_ref(g) for g in body.get("groupClause") or ()]
            if groups and all(g is not None and _resolve(g, scope) in plain for g in groups):
                return True
            if len(bases) != 1:
                return False
            e = bases[0]
            assert e.relation is not None
            return any(len(k) == 1 and (e.alias, next(iter(k))) in extremes
                       for k in unique.get(e.relation.oid, ()))
        keyed = {e.alias for e in bases if e.relation is not None and any(
            all((e.alias, c) in plain for c in k) for k in unique.get(e.relation.oid, ()))}
        # Equality joins only (``pairs``): an item joined by equality to a keyed item adds
        # rows that tie only with rows holding the same joined value (nothing ordered).
        grew = bool(pairs)
        while grew:
            grew = False
            for a, b in pairs:
                if (a in keyed) != (b in keyed):
                    keyed |= {a, b}
                    grew = True
        return all(e.alias in keyed for e in bases)

    def dml(self, typ: str, body: Mapping[str, Any], outer: list[list[_Entry]],
            ctes: Mapping[str, list[Column]]) -> None:
        ctes = self._ctes(body.get("withClause"), outer, ctes)
        scope: list[_Entry] = []
        rel = body.get("relation")
        if isinstance(rel, dict):
            scope.extend(self.from_item({"RangeVar": rel}, [scope, *outer], ctes))
        for key in ("fromClause", "usingClause"):
            for item in body.get(key) or ():
                scope.extend(self.from_item(item, [scope, *outer], ctes))
        if typ == "MergeStmt" and body.get("sourceRelation"):
            scope.extend(self.from_item(body["sourceRelation"], [scope, *outer], ctes))
            self.decide(body.get("joinCondition"), [scope, *outer], ctes)
        scopes = [scope, *outer]
        self.decide(body.get("whereClause"), scopes, ctes)
        if typ == "InsertStmt":
            self.statement(body.get("selectStmt"), outer, ctes)
        for key in ("targetList", "returningList", "mergeWhenClauses", "onConflictClause"):
            self.nested(body.get(key), scopes, ctes)

    # -- FROM ---------------------------------------------------------------------------------

    def from_item(self, item: Mapping[str, Any], scopes: list[list[_Entry]],
                  ctes: Mapping[str, list[Column]]) -> list[_Entry]:
        (typ, body), = item.items()
        if typ == "RangeSubselect":
            inner = scopes if body.get("lateral") else scopes[1:]
            taint = self._inner_statement(body.get("subquery"), inner, ctes)
            if taint is not None:
                self._taint("input", taint)
        elif typ == "JoinExpr":
            left = self.from_item(body["larg"], scopes, ctes)
            right = self.from_item(body["rarg"], [left + scopes[0], *scopes[1:]], ctes)
            # USING / NATURAL: equality of plain columns, allowed, but a merge join on them
            # returns rows in their order (as ON a = b)
            using = [n for n in _svals(body.get("usingClause") or ()) if n]
            if body.get("isNatural"):
                rnames = {c for e in right for c, _ in e.columns}
                using = [c for e in left for c, _ in e.columns if c in rnames]
            for name in using:
                hits = [(e, e.find(name)) for e in left + right]
                self._taint("join", set().union(*(h for _, h in hits if h is not None)))
                if self._pairs:
                    lh = [e.alias for e, h in hits[:len(left)] if h is not None]
                    rh = [e.alias for e, h in hits[len(left):] if h is not None]
                    self._pairs[-1].extend((a, b) for a in lh for b in rh)
            self.decide(body.get("quals"), [left + right + scopes[0], *scopes[1:]], ctes)
        elif typ == "RangeTableSample":
            self.decide([body.get("args"), body.get("repeatable")], scopes, ctes, _ROWS)
        elif typ == "RangeVar" and not body.get("schemaname") \
                and body.get("relname") in ctes and body.get("relname") in self._cte_taint:
            self._taint("input", self._cte_taint[body["relname"]])
        elif typ not in ("RangeVar", "RangeFunction"):
            # XMLTABLE, JSON_TABLE and anything newer: their inputs decide the rows they yield.
            self.decide({k: v for k, v in body.items() if k != "alias"}, scopes, ctes, _ROWS)
        elif typ == "RangeFunction":
            for fn in body.get("functions") or ():
                items = (fn.get("List") or {}).get("items") or []
                call = (items[0] if items and isinstance(items[0], dict) else {}).get("FuncCall")
                if call is not None and _fixed_shape_srf(call):
                    self.nested(items[:1], scopes, ctes)
                else:
                    self.decide(items[:1], scopes, ctes, _ROWS)
        entries, _ = self.lin.from_item(item, scopes, ctes)
        return entries

    # -- expressions --------------------------------------------------------------------------

    def nested(self, node: Any, scopes: list[list[_Entry]],
               ctes: Mapping[str, list[Column]]) -> None:
        """Walk an expression whose value flows to an output (a select-list item, RETURNING,
        SET, VALUES): probe its subqueries, and treat every *deciding use* of a value as a
        deciding clause. A value may flow only into an output or through a total operation
        (:data:`TOTAL_FUNCTIONS`, :data:`TOTAL_OPERATORS`, text casts, row/array
        constructors, ``IS NULL``, ``coalesce``'s first argument): those cannot raise and
        return exactly one value, so the mask plan masks the result as a whole. Anything else
        that receives it (a set-returning function's argument, an operation that can raise,
        a CASE condition, GREATEST/LEAST/NULLIF, a FILTER clause, a node not understood)
        lets the hidden value decide how many rows come back, whether the statement errors
        or which branch runs: an oracle, refused as a predicate is."""
        if isinstance(node, list):
            for item in node:
                self.nested(item, scopes, ctes)
            return
        if not isinstance(node, dict) or not node:
            return
        typ = next(iter(node))
        if len(node) != 1 or not typ[:1].isupper():
            # A dict of fields (a bare node such as a statement body, an ON CONFLICT clause):
            # node types are CamelCase, field names are not, so the walk is structural.
            for value in node.values():
                self.nested(value, scopes, ctes)
            return
        body = node[typ]
        if typ in _LEAVES:
            return
        if not isinstance(body, dict):
            self.nested(body, scopes, ctes)  # a node whose body is a list (List items)
            return
        if typ == "SubLink":
            self.nested(body.get("testexpr"), scopes, ctes)
            sub = body.get("subselect")
            if body.get("subLinkType") in _SET_SUBLINKS and isinstance(sub, dict) \
                    and isinstance(sub.get("SelectStmt"), dict):
                self._unordered.add(id(sub["SelectStmt"]))  # membership only: no order
            self.statement(sub, scopes, ctes)
        elif typ in ("SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
            self.statement({typ: body}, scopes, ctes)
        elif typ == "FuncCall":
            self._call(body, scopes, ctes)
        elif typ == "A_Expr":
            ops = [_sval(n) for n in body.get("name") or ()]
            op = ops[-1] if ops else None
            kind = body.get("kind")
            if kind in _TOTAL_EXPR_KINDS or (kind == "AEXPR_OP" and op in TOTAL_OPERATORS):
                self.nested(body.get("lexpr"), scopes, ctes)
                self.nested(body.get("rexpr"), scopes, ctes)
            elif kind in _LIST_KINDS:
                rexpr = body.get("rexpr")
                items = rexpr if isinstance(rexpr, list) else \
                    (rexpr.get("List") or {}).get("items", [rexpr]) \
                    if isinstance(rexpr, dict) else []
                if all(_constant(i) for i in items):
                    self.nested(body.get("lexpr"), scopes, ctes)
                else:
                    self.decide(body.get("lexpr"), scopes, ctes, _BRANCH)
                    self.decide(rexpr, scopes, ctes, _BRANCH)
            elif kind in _SUBJECT_ONLY_KINDS and _safe_pattern(body.get("rexpr")):
                # A constant, well-formed pattern: the match is total in the subject.
                self.nested(body.get("lexpr"), scopes, ctes)
            elif kind in _SUBJECT_ONLY_KINDS:
                # Any other pattern can raise depending on the SUBJECT: LIKE reads the
                # pattern only as far as the subject matches, so 'a\\' raises "must not
                # end with escape character" exactly when the hidden value starts with a.
                why = _RAISES.format(op or "pattern")
                self.decide(body.get("lexpr"), scopes, ctes, why)
                self.decide(body.get("rexpr"), scopes, ctes, why)
            else:
                why = _RAISES.format(f"operator {op}" if op else str(kind))
                self.decide(body.get("lexpr"), scopes, ctes, why)
                self.decide(body.get("rexpr"), scopes, ctes, why)
        elif typ == "TypeCast":
            type_name = body.get("typeName") or {}
            names = [n for n in _svals(type_name.get("names") or ()) if n]
            if names and names[-1] in TEXT_TYPES and not type_name.get("arrayBounds"):
                self.nested(body.get("arg"), scopes, ctes)
            else:
                target = names[-1] if names else "?"
                self.decide(body.get("arg"), scopes, ctes,
                            f"is cast to {target}, which raises for some values")
        elif typ == "CaseExpr":
            self.decide(body.get("arg"), scopes, ctes, _BRANCH)
            for when in body.get("args") or ():
                w = when.get("CaseWhen", when)
                self.decide(w.get("expr"), scopes, ctes, _BRANCH)
                self.nested(w.get("result"), scopes, ctes)
            self.nested(body.get("defresult"), scopes, ctes)
        elif typ == "CoalesceExpr":
            args = body.get("args") or []
            self.nested(args[:1], scopes, ctes)
            for arg in args[1:]:
                self.decide(arg, scopes, ctes, _BRANCH)
        elif typ == "BoolExpr" and body.get("boolop") == "NOT_EXPR":
            self.nested(body.get("args"), scopes, ctes)
        elif typ == "A_Indirection":
            self.nested(body.get("arg"), scopes, ctes)
            for ind in body.get("indirection") or ():
                if isinstance(ind, dict) and "A_Indices" in ind:
                    self.decide(ind, scopes, ctes, "is an array subscript")
        elif typ in _TOTAL_NODES or (typ == "XmlExpr" and body.get("op") in _TOTAL_XML):
            for key, value in body.items():
                if key != "location":
                    self.nested(value, scopes, ctes)
        else:
            # AND/OR (a hidden operand decides whether the others are evaluated),
            # GREATEST/LEAST, NULLIF, and every node not understood: fail closed.
            why = _BRANCH if typ in ("BoolExpr", "MinMaxExpr", "NullIfExpr") else \
                f"is used in a {typ} expression this check does not follow"
            for key, value in body.items():
                if isinstance(value, (dict, list)):
                    self.decide(value, scopes, ctes, why)

    def _call(self, body: Mapping[str, Any], scopes: list[list[_Entry]],
              ctes: Mapping[str, list[Column]]) -> None:
        name = funcname(body)
        args = body.get("args") or []
        if len(args) == 1 and _column_call(name, args[0], scopes):
            return  # functional notation for a column: ssn(u) is u.ssn, a value
        if body.get("over"):
            self.window_def(body["over"], scopes, ctes)
        self.decide(body.get("agg_filter"), scopes, ctes, "decides which rows a FILTER keeps")
        for item in body.get("agg_order") or ():
            # array_agg(id ORDER BY ssn) returns the ids in the hidden values' order
            self.decide((item.get("SortBy") or {}).get("node") if isinstance(item, dict)
                        else item, scopes, ctes, _SORTS)
        builtin = name not in self.lin.catalog.user_functions
        total = TOTAL_FUNCTIONS.get(name, frozenset()) if builtin else frozenset()
        if builtin and name in _PAIR_BUILDERS and not body.get("func_variadic"):
            total = frozenset(range(1, len(args), 2))
        if name in _INT_POSITION_ONLY and not all(_int_constant(a) for a in args[1:]):
            total = frozenset()
        if builtin and _fixed_shape_srf(body):
            total = None
        if body.get("agg_distinct"):
            # count(DISTINCT …), array_agg(DISTINCT …): duplicates removed by comparing the
            # values, the number of elements counts the hidden values' equality classes
            total = frozenset()
        for i, arg in enumerate(args):
            if total is None or i in total:
                self.nested(arg, scopes, ctes)
            else:
                self.decide(arg, scopes, ctes, f"is an argument of {name}(), which can raise,"
                            " return a number of rows, or size its result or its work by"
                            " what the value contains")

    def window_def(self, wd: Any, scopes: list[list[_Entry]],
                   ctes: Mapping[str, list[Column]]) -> None:
        wd = wd.get("WindowDef", wd) if isinstance(wd, dict) else {}
        for item in wd.get("partitionClause") or ():
            ref = _plain_ref(item)
            if ref is not None and self._base_column(ref, scopes):
                # partitions by a stored value: equality classes, but sorted by it
                self._taint("window", self._refs(item, scopes, ctes))
                continue
            self.decide(item, scopes, ctes)
        for item in wd.get("orderClause") or ():
            self.decide((item.get("SortBy") or {}).get("node"), scopes, ctes)

    def ordering(self, node: Any, scopes: list[list[_Entry]], ctes: Mapping[str, list[Column]],
                 targets: list[Column], *, prefer_output: bool, equality: bool = False,
                 tlist: list[Any] | None = None) -> None:
        """An ORDER BY / GROUP BY / DISTINCT ON item: output positions and aliases mean the
        output's lineage. Grouping (``equality``) by a plain stored column reveals equality
        classes only, as a join on it does: allowed; ordering reveals comparisons: never."""
        if not isinstance(node, dict):
            return
        const = node.get("A_Const")
        if const is not None and "ival" in const:
            pos = int(const["ival"].get("ival", 0))
            if 1 <= pos <= len(targets):
                if equality and tlist is not None and pos <= len(tlist):
                    ref = _plain_ref(tlist[pos - 1])
                    if ref is not None and self._base_column(ref, scopes):
                        self._taint("group", targets[pos - 1][1])
                        return
                self._add(targets[pos - 1][1], _PREDICATE)
            return
        if equality:
            ref = _plain_ref(node)
            if ref is not None and self._base_column(ref, scopes):
                self._taint("group", self._refs(node, scopes, ctes))
                return
        ref = node.get("ColumnRef")
        if ref is not None:
            names = _svals(ref.get("fields", ()))
            if len(names) == 1 and names[0] is not None:
                outputs = [src for name, src in targets if name == names[0]]
                resolvable = any(e.find(names[0]) is not None for e in scopes[0]) \
                    if scopes else False
                if outputs and (prefer_output or not resolvable):
                    for src in outputs:
                        self._add(src, _PREDICATE)
                    if prefer_output:
                        return
        self.decide(node, scopes, ctes)

    def decide(self, node: Any, scopes: list[list[_Entry]],
               ctes: Mapping[str, list[Column]], why: str = "") -> None:
        """Every source of ``node`` decides something (``why``; default: which rows)."""
        if isinstance(node, list):
            for item in node:
                self.decide(item, scopes, ctes, why)
            return
        if not isinstance(node, dict) or not node:
            return
        why = why or _PREDICATE
        typ, body = next(iter(node.items())) if len(node) == 1 else (None, {})
        if typ == "BoolExpr":
            for arg in body.get("args") or ():
                self.decide(arg, scopes, ctes, why)
            return
        if typ == "NullTest" and _plain_ref(body.get("arg")) is not None:
            return
        if typ == "A_Expr" and body.get("kind") == "AEXPR_OP" and \
                [(_sval(n)) for n in body.get("name") or ()] == ["="]:
            left, right = _plain_ref(body.get("lexpr")), _plain_ref(body.get("rexpr"))
            if left is not None and right is not None and \
                    self._base_column(left, scopes) and self._base_column(right, scopes):
                # equality of two stored values; a merge join returns rows in their order
                self._taint("join", self._refs(node, scopes, ctes))
                if self._pairs and scopes:
                    a, b = _resolve(left, scopes[0]), _resolve(right, scopes[0])
                    if a is not None and b is not None:
                        self._pairs[-1].append((a[0], b[0]))
                return
        self.nested(node, scopes, ctes)
        try:
            self._add(self.lin.refs(node, scopes, ctes), why)
        except _Unresolvable:
            self._add({UNKNOWN}, why)

    def _base_column(self, fields: list[str | None], scopes: list[list[_Entry]]) -> bool:
        """A plain column of a base table (not a view, CTE, subquery or VALUES column)."""
        if any(f is None for f in fields):
            return False
        name = fields[-1]
        assert name is not None
        if len(fields) >= 2:
            qualifier = fields[-2]
            assert qualifier is not None
            entry = _find_entry(qualifier, scopes)  # by alias only, as PostgreSQL does
            return entry is not None and entry.relation is not None \
                and not entry.relation.is_view and not entry.unknown \
                and entry.find(name) is not None
        for scope in scopes:
            hits = [e for e in scope if e.find(name) is not None]
            if hits:
                return len(hits) == 1 and hits[0].relation is not None \
                    and not hits[0].relation.is_view and not hits[0].unknown
        return False


def _constant(node: Any) -> bool:
    """A literal or a parameter (optionally cast): evaluating it cannot depend on a row."""
    if isinstance(node, dict) and len(node) == 1:
        (typ, body), = node.items()
        if typ in ("A_Const", "ParamRef"):
            return True
        if typ == "TypeCast":
            return _constant(body.get("arg"))
    return False


def _int_constant(node: Any) -> bool:
    """An integer literal (optionally cast to an integer type): a position, not a pattern."""
    if isinstance(node, dict) and len(node) == 1:
        (typ, body), = node.items()
        if typ == "A_Const":
            return "ival" in body
        if typ == "TypeCast":
            names = [n for n in _svals((body.get("typeName") or {}).get("names") or ()) if n]
            return bool(names) and names[-1] in ("int2", "int4", "int8") and \
                _int_constant(body.get("arg"))
    return False


def _safe_pattern(node: Any) -> bool:
    """A LIKE/ILIKE pattern that cannot raise for any subject: a string literal without an
    ESCAPE clause (an ESCAPE clause or SIMILAR TO is a function call around the pattern)
    whose backslashes all escape a following character."""
    if not (isinstance(node, dict) and len(node) == 1 and "A_Const" in node):
        return False
    const = node["A_Const"]
    if "sval" not in const:
        return False
    text = str((const.get("sval") or {}).get("sval", ""))
    i = 0
    while i < len(text):
        if text[i] == "\\":
            if i + 1 >= len(text):
                return False
            i += 2
            continue
        i += 1
    return True


def _star_ref(node: Any) -> list[str] | None:
    """``*`` or ``t.*``: the qualifier (empty for a bare star); None for anything else."""
    if isinstance(node, dict) and len(node) == 1 and "ColumnRef" in node:
        fields = _svals(node["ColumnRef"].get("fields", ()))
        if fields and fields[-1] is None and all(f is not None for f in fields[:-1]):
            return [f for f in fields[:-1] if f is not None]
    return None


def _column_call(name: str, arg: Any, scopes: list[list[_Entry]]) -> bool:
    """``ssn(u)``: a column of ``u`` in functional notation (as lineage reads it)."""
    if not (isinstance(arg, dict) and "ColumnRef" in arg):
        return False
    fields = _svals(arg["ColumnRef"].get("fields", ()))
    if len(fields) != 1 or fields[0] is None:
        return False
    entry = _find_entry(fields[0], scopes)
    return entry is not None and not _has_column(fields[0], scopes) and \
        entry.find(name) is not None


def _fixed_shape_srf(call: Mapping[str, Any]) -> bool:
    """A one-level set-returning function over a collection whose NUMBER of elements no
    hidden value decides (``unnest(ARRAY[a, b])``, ``unnest((SELECT array_agg(ssn) …))``,
    ``jsonb_each(jsonb_build_object(…))``): it returns as many rows as the syntax or the
    (already checked) row count of a subquery says, whatever the values are."""
    if funcname(call) not in _ONE_LEVEL_SRFS or call.get("agg_distinct"):
        return False
    args = call.get("args") or []
    return bool(args) and all(_fixed_shape(a) for a in args)


def _fixed_shape(node: Any) -> bool:
    if not isinstance(node, dict) or len(node) != 1:
        return False
    (typ, body), = node.items()
    if typ == "A_ArrayExpr":
        return True
    if typ == "FuncCall":
        return funcname(body) in _FIXED_SHAPE_BUILDERS and not body.get("agg_distinct") \
            and not body.get("agg_filter")
    if typ == "SubLink":
        if body.get("subLinkType") == "ARRAY_SUBLINK":
            return True
        sub = (body.get("subselect") or {}).get("SelectStmt") or {}
        targets = sub.get("targetList") or []
        return body.get("subLinkType") == "EXPR_SUBLINK" and len(targets) == 1 and \
            not sub.get("groupClause") and \
            _fixed_shape((targets[0].get("ResTarget") or {}).get("val"))
    return False


def _sel(node: Mapping[str, Any]) -> Mapping[str, Any]:
    return node["SelectStmt"] if "SelectStmt" in node else node


def _sval(node: Any) -> str | None:
    if isinstance(node, dict) and "String" in node:
        return str(node["String"].get("sval", ""))
    return None


def _plain_ref(node: Any) -> list[str | None] | None:
    if isinstance(node, dict) and len(node) == 1 and "ColumnRef" in node:
        fields = _svals(node["ColumnRef"].get("fields", ()))
        if fields and fields[-1] is not None:
            return fields
    return None


def deciding_uses(tree: Mapping[str, Any], catalog: Catalog) -> dict[str, str] | None:
    """Base columns (``schema.table.column``; ``?`` for unknown) whose values decide which
    rows a statement returns or touches, in which order, how many, which branch runs or
    whether it errors, each with how it decides; None when the statement's shape cannot be
    followed (the caller falls back to a stricter check)."""
    probe = _Probe(catalog)
    try:
        probe.statement(tree, [], {})
    except _Unresolvable:
        return None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None
    return probe.out


def deciding_sources(tree: Mapping[str, Any], catalog: Catalog) -> frozenset[str] | None:
    """The sources of :func:`deciding_uses`, without how they decide."""
    uses = deciding_uses(tree, catalog)
    return None if uses is None else frozenset(uses)


def _calls(node: Any) -> list[Mapping[str, Any]]:
    """Every FuncCall body in ``node``, not descending into subqueries (other levels)."""
    out: list[Mapping[str, Any]] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key, value in item.items():
                if key in ("SubLink", "SelectStmt"):
                    continue
                if key == "FuncCall" and isinstance(value, dict):
                    out.append(value)
                stack.append(value)
    return out


def _order_sensitive_window(call: Mapping[str, Any]) -> bool:
    over = call.get("over") or {}
    over = over.get("WindowDef", over) if isinstance(over, dict) else {}
    name = funcname(call)
    return name in _ORDERED_WINDOWS or (name in _ORDERED_AGGREGATES
                                        and not over.get("orderClause"))


def _output_item(node: Any, tlist: list[Any], names: list[str | None],
                 scope: list[_Entry]) -> Any:
    """An ORDER BY item as the expression it means: ``ORDER BY 2`` / ``ORDER BY alias``."""
    if not isinstance(node, dict):
        return node
    const = node.get("A_Const")
    if const is not None and "ival" in const:
        pos = int(const["ival"].get("ival", 0))
        return tlist[pos - 1] if 1 <= pos <= len(tlist) else node
    ref = _plain_ref(node)
    if ref is not None and len(ref) == 1 and ref[0] in names and _resolve(ref, scope) is None:
        return tlist[names.index(ref[0])]
    return node


def _resolve(fields: list[str | None], scope: list[_Entry]) -> tuple[str, str] | None:
    """(FROM item, column) a plain column reference names at this level."""
    if not fields or any(f is None for f in fields):
        return None
    name = fields[-1]
    assert name is not None
    if len(fields) >= 2:
        qualifier = fields[-2]
        assert qualifier is not None
        entry = _find_entry(qualifier, [scope])
        return (entry.alias, name) if entry is not None and entry.find(name) is not None \
            else None
    hits = [e for e in scope if e.find(name) is not None]
    return (hits[0].alias, name) if len(hits) == 1 else None
