"""Masking done by the server: the statement is rewritten so masked values never cross the wire.

Client-side masking (``masking.py``) receives the raw value and replaces it per cell, so the
sensitive value is in the client's memory and costs ~0.5 µs per masked cell. For a statement
whose result columns are masked with a strategy SQL can compute exactly (``redact``,
``partial``, ``email``, ``null``), the text sent is instead::

    SELECT governed_db_m.c1 AS "id", <email strategy on governed_db_m.c2> AS "email"
      FROM (
    <the caller's statement, byte for byte>
    ) AS governed_db_m(c1, c2)

so the server returns the masked value. The caller's statement is untouched inside the
parentheses (its WHERE, ORDER BY, GROUP BY, LIMIT keep their meaning; a subquery with ORDER BY
is not flattened, so its order is what the outer scan returns), and only the outer select list
masks. Output names, count and types (type OIDs and modifiers) are the caller's.

How a rewrite is learned, and why that way: the client-side mask plan is built from the result's
own provenance (``ftable``/``ftablecol``), the statement's lineage and the result types, and is
the reference for what must be masked and how. So the rewrite is derived from that plan: the
first time a statement shape (per identity and catalog snapshot) that may return sensitive
columns is executed, the server is asked to describe it first (Parse and Describe of the
unnamed statement: columns, types, provenance, no rows); the plan built from that description
becomes a rewrite, used from this very execution on (paths that do not describe first, such as
``stream()``, learn from their first result, masked client-side). A column is masked by the
server when:

* the strategy is computed in SQL byte-identically to ``masking._strategy_text`` for every
  input (NULL, empty, short, non-ASCII: lengths are characters on a UTF8 server and client);
* the column type is one whose loaded value the client masker handles as a plain string
  (``text``, ``varchar``) or as a scalar it turns into None (numbers, dates, bool, bytea,
  uuid, inet…), with psycopg's default loader on the cursor (a custom loader could turn an
  ``int4`` into a ``str``, which the client would mask differently);
* the reason is exact lineage (never ``unknown-lineage`` or value detection) and the strategy
  is not ``hash`` (its key never goes to the server).

A column that does not qualify is masked client-side as before, in the same result. Only a
single plain SELECT (no SELECT INTO, no locking clause, no data-modifying CTE, no user
function) outside pipeline mode is rewritten; COPY, RETURNING, DECLARE/FETCH, EXECUTE and
multi-statement strings keep client-side masking. The rewritten text is parsed back and its
inner statement must equal the caller's parse tree, else nothing is rewritten.

Fail closed: when a rewritten statement's result does not have the learned shape (column
count, types, provenance of the unmasked columns), the plan is built from that result as for
any statement (every column the lineage says is sensitive is masked client-side again), and
the rewrite is forgotten. Audit records, spans and approvals bind to the caller's statement:
the rewrite happens after the statement was decided, in the text psycopg sends.

Policy: ``[masking] server_side = false`` turns this off (default on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import pgparse
import psycopg
from psycopg import pq

from .analysis._nodes import strip_locations

__all__ = ["ServerMask", "learn", "mask_expression", "maybe_describe", "plan_for", "rewrite_for"]

ALIAS = b"governed_db_m"
# Strategies SQL computes exactly (see mask_expression); "hash" stays client-side: its key
# must never be sent to the server.
SQL_STRATEGIES = frozenset({"redact", "partial", "email", "null"})
_TEXT, _VARCHAR = 25, 1043
# Scalar types whose default loader returns neither str, dict, list nor tuple: the client
# masker turns every non-NULL value of these into None, whatever the strategy.
NULL_TYPES = frozenset({
    16,  # bool
    17,  # bytea
    20, 21, 23, 26,  # int8, int2, int4, oid
    700, 701, 1700,  # float4, float8, numeric
    1082, 1083, 1114, 1184, 1186, 1266,  # date, time, timestamp, timestamptz, interval, timetz
    2950,  # uuid
    650, 869,  # cidr, inet
})
_REASONS_NOT_EXACT = ("unknown-lineage", "detected")
_MAX_CACHE = 2048
UNSET: Any = type("Unset", (), {"__repr__": lambda self: "UNSET"})()  # not looked up yet


@attrs.define(kw_only=True, repr=False)
class ServerMask:
    """A learned rewrite for one statement shape.

    Attributes:
        query: the text sent instead of the caller's (UTF-8 bytes).
        masked: output positions the server masks.
        types: ``ftype`` of every output column of the rewritten result.
        provenance: ``(ftable, ftablecol)`` of every column the server does not mask (None at
            masked positions): the rewritten result must show the same sources.
        oids: type OIDs of the masked columns, whose loaders must be psycopg's defaults.
        entry: the statement's plan entry with the server-masked columns taken out of the
            client plan: ``(plan or None, {column: "strategy:reason"}, base columns)``.
        lineage: the per-column lineage recorded for the audit (as learned).
    """

    query: bytes
    masked: tuple[int, ...]
    types: tuple[int, ...]
    provenance: tuple[tuple[int, int] | None, ...]
    oids: tuple[int, ...]
    entry: tuple[Any, Mapping[str, str], frozenset[str]]
    lineage: tuple[Any, ...]

    # (position, ftable, ftablecol) of the columns whose provenance plan_for checks
    checked: tuple[tuple[int, int, int], ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.checked = tuple((i, p[0], p[1]) for i, p in enumerate(self.provenance)
                             if p is not None)

    def __repr__(self) -> str:
        return f"ServerMask(masked={self.masked!r})"


# -- strategies in SQL ---------------------------------------------------------------------------

_OP = {name: b"OPERATOR(pg_catalog." + name + b")"
       for name in (b"||", b"<=", b"-", b">", b"<", b"~~")}


def _text_type(oid: int, fmod: int, strategy: str) -> bytes | None:
    """The cast that keeps a text column's type (and modifier) for a strategy's output."""
    if oid == _TEXT and fmod == -1:
        return b"pg_catalog.text"
    if oid == _VARCHAR:
        if fmod == -1:
            return b"pg_catalog.varchar"
        n = fmod - 4
        # varchar(n) keeps its modifier only where the masked text always fits: an explicit
        # cast would silently cut a longer one, which the client would not.
        if strategy in ("redact", "partial", "null") and n >= 4:
            return b"pg_catalog.varchar(%d)" % n
    return None


def mask_expression(col: bytes, strategy: str, oid: int, fmod: int, *,
                    split_part_last: bool = True, constant: bool = False) -> bytes | None:
    """SQL computing ``strategy`` on column expression ``col`` exactly as the client does.

    Equal for every value to what ``masking._Masker`` returns for the value psycopg loads:
    for a string the strategy's text (lengths and the last four are characters), for any other
    scalar None; NULL stays NULL. Every expression references the column, so a subquery
    flattened by the planner still evaluates (and raises) what the caller's statement
    computes. Functions and operators are schema-qualified: nothing on the search path can
    shadow them. None when the type is not one this module handles exactly.
    ``split_part_last``: the server has ``split_part(s, d, -1)`` (PostgreSQL 14 and later).
    ``constant``: the column is a value derived from a masked one (``ColumnMask.constant``):
    NULL comes back as the strategy's constant too, as the client masker does.
    """
    if strategy not in SQL_STRATEGIES:
        return None
    if oid not in (_TEXT, _VARCHAR):
        if oid not in NULL_TYPES:
            return None
        # Any strategy on a non-text scalar: None on the client. ARRAY[x][0] is NULL of x's
        # own type and modifier (numeric(10,2) stays numeric(10,2)), and still evaluates x.
        return b"(ARRAY[" + col + b"])[0]"
    cast = _text_type(oid, fmod, strategy)
    if cast is None:
        return None
    c = col
    if strategy == "null":
        body = b"CASE WHEN " + c + b" IS NULL THEN NULL ELSE NULL END"
    elif strategy == "redact":
        when_null = b"'****'::pg_catalog.text" if constant else b"NULL"
        body = b"CASE WHEN " + c + b" IS NULL THEN " + when_null + \
            b" ELSE '****'::pg_catalog.text END"
    elif constant:
        return None  # a derived value is never given a shape-keeping strategy
    elif strategy == "partial":
        # n <= 8: "****"; else n-4 stars and the last four characters (NULL in, NULL out:
        # all are strict). repeat() || right() walks the characters once less than
        # lpad(right(c, 4), n, '*'), which counts them again: ~13% of this expression's
        # backend CPU (benchmarks/server_mask.py, EXPLAIN ANALYZE of 10,000 rows).
        length = b"pg_catalog.length(" + c + b")"
        body = (b"CASE WHEN " + length + b" " + _OP[b"<="] + b" 8 THEN '****'::pg_catalog.text"
                b" ELSE pg_catalog.repeat('*'::pg_catalog.text, " + length + b" " + _OP[b"-"]
                + b" 4) " + _OP[b"||"] + b" pg_catalog.right(" + c + b", 4) END")
    elif split_part_last:
        # Python: at = s.rfind("@"); at > 0 -> "****@" + s[at+1:], else "****". at > 0 means
        # some "@" stands after the first character (LIKE '_%@%', bytewise "C" collation so
        # no collation can refuse or change it); s[at+1:] is split_part(s, '@', -1).
        body = (b"CASE WHEN " + c + b" IS NULL THEN NULL WHEN " + c
                + b" COLLATE pg_catalog.\"C\" " + _OP[b"~~"] + b" '_%@%'::pg_catalog.text"
                b" THEN '****@'::pg_catalog.text " + _OP[b"||"] + b" pg_catalog.split_part("
                + c + b", '@'::pg_catalog.text, -1) ELSE '****'::pg_catalog.text END")
    else:  # email on a server without split_part(..., -1) (before PostgreSQL 14)
        # With k the 1-based position of "@" in reverse(s): at = len - k, so at > 0 <=>
        # 0 < k < len, and s[at+1:] is the last k-1 characters.
        k = b"pg_catalog.strpos(pg_catalog.reverse(" + c + b"), '@'::pg_catalog.text)"
        body = (b"CASE WHEN " + c + b" IS NULL THEN NULL WHEN " + k + b" " + _OP[b">"]
                + b" 0 AND " + k + b" " + _OP[b"<"] + b" pg_catalog.length(" + c + b") THEN"
                b" '****@'::pg_catalog.text " + _OP[b"||"] + b" pg_catalog.right(" + c + b", "
                + k + b" " + _OP[b"-"] + b" 1) ELSE '****'::pg_catalog.text END")
    return b"CAST(" + body + b" AS " + cast + b")"


def _quote_ident(name: bytes) -> bytes:
    return b'"' + name.replace(b'"', b'""') + b'"'


# -- which statements qualify ----------------------------------------------------------------------

_NOT_NESTABLE = ("intoClause", "lockingClause", "InsertStmt", "UpdateStmt", "DeleteStmt",
                 "MergeStmt")


def _nestable(node: Any) -> bool:
    """Whether a SELECT means the same as a subquery in FROM: no SELECT INTO, no row locks,
    no data-modifying CTE (only allowed at the top level) anywhere in it."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in _NOT_NESTABLE:
                return False
            if not _nestable(v):
                return False
    elif isinstance(node, list):
        return all(_nestable(v) for v in node)
    return True


def _statement(gov: Any, ctx: Any) -> Any:
    """The statement's facts when it may be rewritten at all, else None."""
    if len(ctx.statements) != 1:
        return None
    st = ctx.statements[0]
    if st.kind != "SELECT" or "SelectStmt" not in st.tree or st.opaque_reasons:
        return None
    catalog = gov.catalog
    if catalog is None or st.functions & catalog.user_functions:
        # A user function (even one labelled STABLE) could run a different number of times
        # when the planner flattens the subquery: its effects are not ours to change.
        return None
    if not _nestable(st.tree):
        return None
    return st


def _key(gov: Any, ctx: Any) -> tuple[Any, ...]:
    # The statement's own key (Governor.statement_key): text, identity scope, policy digest,
    # catalog snapshot, session objects it refers to.
    key: tuple[Any, ...] = ctx.key
    return key


def _utf8(conn: Any, gov: Any = None) -> bool:
    # Lengths and "the last four" are characters: the same on both sides only when the server
    # counts UTF-8 characters and the client decodes UTF-8 (and statement offsets are bytes).
    if gov is not None and gov.reported_encoding is not None:
        # What the server reported after the last operation (kept by the connection's
        # server-state check; server_encoding never changes in a session).
        reported: bool = gov.server_utf8 and gov.reported_encoding == b"UTF8"
        return reported
    pgconn = conn.pgconn
    asked: bool = (pgconn.parameter_status(b"server_encoding") == b"UTF8"
                   and pgconn.parameter_status(b"client_encoding") == b"UTF8")
    return asked


_FMT_TEXT, _FMT_BINARY = pq.Format.TEXT, pq.Format.BINARY
_DEFAULT_LOADERS = psycopg.adapters._loaders  # (the list itself: its maps are replaced in it)


def _default_loaders(cursor: Any, oids: Sequence[int]) -> bool:
    """Whether the cursor loads every type in ``oids`` with psycopg's default loaders, text
    and binary (what ``AdaptersMap.get_loader`` returns, read from its per-format maps)."""
    mine = cursor.adapters._loaders
    default = psycopg.adapters._loaders
    text, binary = _FMT_TEXT, _FMT_BINARY
    if mine[text] is default[text] and mine[binary] is default[binary]:
        return True  # the maps are shared (copy-on-write): nothing registered since
    for oid in oids:
        for fmt in (text, binary):
            if mine[fmt].get(oid) is not default[fmt].get(oid):
                return False
    return True


# -- the three hooks ----------------------------------------------------------------------------


def rewrite_for(cursor: Any, gov: Any, ctx: Any) -> ServerMask | None:
    """The learned rewrite for a statement about to be sent (None: send it as it is).

    Called by the statement choke point after the statement was decided; never raises into
    the caller's path (any doubt sends the caller's text, masked client-side).
    """
    try:
        cached = ctx.cached
        sm: ServerMask | None = UNSET if cached is None else cached.server_mask
        if sm is None:
            return None  # (learned under the plan's key: nothing to mask server-side)
        if sm is not UNSET and not gov.catalog_stale and cursor._conn._pipeline is None \
                and gov.reported_encoding == b"UTF8" and gov.server_utf8 \
                and cursor._execmany_returning is None:
            # The common case, _utf8() and _default_loaders() inlined (maps shared with
            # psycopg's defaults: nothing registered since).
            mine, default = cursor.adapters._loaders, _DEFAULT_LOADERS
            if (mine[0] is default[0] and mine[1] is default[1]) \
                    or _default_loaders(cursor, sm.oids):
                return sm
            return None
        if sm is UNSET:
            cache = gov.server_masks
            if not cache or gov.catalog_stale or not gov.policy.masking.server_side:
                return None
            key = _key(gov, ctx)
            sm = cache.get(key)
            if cached is not None and key in cache:
                # Learned (or known to need none) under the plan's own key: kept with the
                # plan until forget() drops it.
                cached.server_mask = sm
        elif gov.catalog_stale:
            return None
        if sm is None or cursor._conn._pipeline is not None or not _utf8(cursor._conn, gov):
            return None
        if getattr(cursor, "_execmany_returning", None) is not None:
            return None  # executemany: its results are numbered across executions
        if not _default_loaders(cursor, sm.oids):
            return None
        return sm
    except Exception:  # noqa: BLE001 - fall back to client-side masking, never to none
        return None


def maybe_describe(cursor: Any, gov: Any, ctx: Any, pgq: Any, run: Any) -> Any:
    """``run`` itself, or a generator that first learns the statement's result shape.

    A statement shape not seen before (per identity and snapshot) that may return sensitive
    columns is described by the server first (Parse and Describe of the unnamed statement: the
    result's columns, types and provenance, no rows), so even its first execution is masked
    by the server. Everything else runs as it is: one dictionary lookup.
    """
    try:
        if ctx.server_mask is not None or not gov.policy.masking.server_side:
            return run
        cache = gov.server_masks
        key = _key(gov, ctx)
        if key in cache:
            return run
        conn = cursor._conn
        if gov.catalog_stale or conn._pipeline is not None \
                or getattr(cursor, "_execmany_returning", None) is not None:
            return run
        st = _statement(gov, ctx)
        if st is None or not gov._may_touch_sensitive(st, gov.catalog, ctx.identity):
            if not gov.catalog_stale:
                _store(cache, key, None)  # nothing to rewrite in this shape: no second look
            return run
    except Exception:  # noqa: BLE001 - no rewrite: client-side masking stays
        return run
    return _describe_then(cursor, gov, ctx, pgq, run)


def _describe_then(cursor: Any, gov: Any, ctx: Any, pgq: Any, run: Any) -> Any:
    from psycopg import errors as e
    from psycopg.generators import execute

    pgconn = cursor._pgconn
    # The unnamed statement: psycopg's own unprepared executions use it too. An error here
    # (the statement does not parse or names what does not exist) is the error its execution
    # would raise, raised the way psycopg raises it.
    pgconn.send_prepare(b"", pgq.query, param_types=pgq.types)
    results = yield from execute(pgconn)
    for res in results:
        if res.status == pq.ExecStatus.FATAL_ERROR:
            raise e.error_from_result(res, encoding=cursor._encoding)
    pgconn.send_describe_prepared(b"")
    results = yield from execute(pgconn)
    described = results[-1] if results else None
    if described is not None and described.status == pq.ExecStatus.FATAL_ERROR:
        raise e.error_from_result(described, encoding=cursor._encoding)
    if described is not None and described.status == pq.ExecStatus.COMMAND_OK \
            and described.nfields:
        try:
            if gov.plan(ctx, 0, described) is not None:
                learn(cursor, gov, ctx, described)
            elif not gov.catalog_stale:
                _store(gov.server_masks, _key(gov, ctx), None)  # nothing to mask
        finally:
            # The execution's own result is planned again (or as learned).
            ctx.plans.pop(0, None)
            ctx.lineage.pop(0, None)
        sm = rewrite_for(cursor, gov, ctx)
        if sm is not None:
            pgq.query = sm.query
            ctx.server_mask = sm
    return (yield from run)


def _store(cache: dict[tuple[Any, ...], ServerMask | None], key: tuple[Any, ...],
           value: ServerMask | None) -> None:
    if len(cache) >= _MAX_CACHE:
        cache.clear()
    cache[key] = value


def learn(cursor: Any, gov: Any, ctx: Any, result: Any) -> None:
    """After a result was planned client-side, learn a rewrite for the statement's next runs."""
    if ctx is None or result is None or cursor._iresult != 0 or ctx.server_mask is not None:
        return
    try:
        cache = gov.server_masks
        key = _key(gov, ctx)
        if key in cache:
            return
        sm = _build(cursor, gov, ctx, result)
        if gov.catalog_stale:
            return  # the snapshot is being reloaded: the plan may not be the last word
        _store(cache, key, sm)
    except Exception:  # noqa: BLE001 - no rewrite: client-side masking stays
        return


def _build(cursor: Any, gov: Any, ctx: Any, result: Any) -> ServerMask | None:
    if not gov.policy.masking.server_side or gov.catalog is None or gov.catalog_stale:
        return None
    if cursor._conn._pipeline is not None or not _utf8(cursor._conn):
        return None
    st = _statement(gov, ctx)
    if st is None:
        return None
    cached = ctx.plans.get(0)
    lineage = ctx.lineage.get(0)
    if cached is None or lineage is None or cached[0] is None:
        return None
    plan, masked_names, seen = cached
    n = result.nfields
    if len(plan.columns) != n or n == 0:
        return None
    pg14 = cursor._conn.pgconn.server_version >= 140000
    exprs: list[bytes] = []
    masked: list[int] = []
    oids: list[int] = []
    provenance: list[tuple[int, int] | None] = []
    client_cols: list[Any] = []
    for i, cm in enumerate(plan.columns):
        col = ALIAS + b".c%d" % (i + 1)
        expr = None
        oid, fmod = result.ftype(i), result.fmod(i)
        if cm is not None and cm.reason not in _REASONS_NOT_EXACT:
            expr = mask_expression(col, cm.strategy, oid, fmod, split_part_last=pg14,
                                   constant=cm.constant)
        if expr is None:
            exprs.append(col)
            provenance.append((result.ftable(i), result.ftablecol(i)))
            client_cols.append(cm)
        else:
            exprs.append(expr)
            masked.append(i)
            oids.append(oid)
            provenance.append(None)
            client_cols.append(None)
    if not masked or not _default_loaders(cursor, oids):
        return None
    body = st.text.encode("utf-8")
    names = [_quote_ident(bytes(result.fname(i))) for i in range(n)]
    select = b", ".join(e + b" AS " + nm for e, nm in zip(exprs, names))
    aliases = b", ".join(b"c%d" % (i + 1) for i in range(n))
    query = (b"SELECT " + select + b" FROM (\n" + body + b"\n) AS " + ALIAS
             + b"(" + aliases + b")")
    if not _proven(query, st.tree, n):
        return None
    from .masking import MaskPlan

    rest = MaskPlan(client_cols, gov.classifier.key) if any(
        c is not None for c in client_cols) else None
    return ServerMask(query=query, masked=tuple(masked),
                      types=tuple(result.ftype(i) for i in range(n)),
                      provenance=tuple(provenance), oids=tuple(oids),
                      entry=(rest, masked_names, seen), lineage=lineage)


def _proven(query: bytes, tree: Mapping[str, Any], n: int) -> bool:
    """The rewritten text parses as one SELECT over one subquery that is the caller's own
    statement, node for node (positions aside), with ``n`` output columns."""
    try:
        stmts = pgparse.parse(query.decode("utf-8"))
    except Exception:  # noqa: BLE001 - does not parse: no rewrite
        return False
    if len(stmts) != 1:
        return False
    sel = stmts[0].get("stmt", {}).get("SelectStmt")
    if not sel or len(sel.get("targetList") or ()) != n:
        return False
    if set(sel) - {"targetList", "fromClause", "limitOption", "op"}:
        return False
    from_: Sequence[Any] = sel.get("fromClause") or ()
    if len(from_) != 1 or "RangeSubselect" not in from_[0]:
        return False
    inner = from_[0]["RangeSubselect"].get("subquery")
    return inner is not None and strip_locations(inner) == strip_locations(tree)


def plan_for(sm: ServerMask, result: Any) -> Any:
    """The plan entry and lineage for a rewritten statement's result, or None when the result
    does not have the learned shape (the caller then plans it from scratch: fail closed)."""
    n = result.nfields
    if n != len(sm.types):
        return None
    if tuple(map(result.ftype, range(n))) != sm.types:
        return None
    ftable, ftablecol = result.ftable, result.ftablecol
    for i, table, col in sm.checked:
        if ftable(i) != table or ftablecol(i) != col:
            return None
    return sm.entry, sm.lineage


def forget(gov: Any, ctx: Any) -> None:
    """Drop the rewrite of ``ctx``'s statement (its result did not have the learned shape)."""
    gov.server_masks.pop(_key(gov, ctx), None)
    if ctx.cached is not None:
        ctx.cached.server_mask = UNSET
