"""The two choke points, as a mixin shared by every governed cursor class (sync and async).

* statement in: ``_convert_query`` sees the exact text psycopg will send (after ``%s`` → ``$n``,
  or with literals inlined by ClientCursor) for execute, executemany, stream, copy, server
  cursors' DECLARE and pipeline mode alike;
* row out: ``_make_row_maker`` wraps whatever row maker the caller's row factory builds, for
  every result set that becomes current (fetch*, iteration, stream, server-cursor fetches,
  nextset/results, pipeline results).

Both are private psycopg 3.3 methods: psycopg is pinned ``>=3.3,<3.4`` and
``tests/test_psycopg_internals.py`` fails loudly if they move.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from threading import get_ident as _get_ident
from time import monotonic
from types import MethodType
from typing import TYPE_CHECKING, Any, Generic

from psycopg import pq
from psycopg.generators import copy_from
from psycopg.rows import Row, RowFactory, RowMaker

from . import _pipeline_readback, _server_mask
from . import _catalog
from . import egress as _egress
from ._commit_gate import audit_refusal
from .engine import BLAST_COUNT_SQL, BLAST_SAVEPOINT, TX_MODE_KINDS
from .engine.mask_plan import ReportCell
from .identity import _acting
from .engine.session import (EXECUTION_READ_BACK_QUERY, read_back_violation,
                              read_search_path)
from ._client_encoding import text_as_bytes, to_bytes_like, to_text, view_codec
from .errors import AuditUnavailable, InterfaceError, StatementDenied

INTRANS = pq.TransactionStatus.INTRANS
_TUPLES_OK = pq.ExecStatus.TUPLES_OK
_COPY_OUT = pq.ExecStatus.COPY_OUT
IDLE = pq.TransactionStatus.IDLE
INERROR = pq.TransactionStatus.INERROR
_SYNCABLE = (IDLE, INTRANS)
# Errors the server raises while it analyses a statement, before anything of it runs, when a
# masking expression does not fit a column's type: undefined_function, datatype_mismatch,
# cannot_coerce, ambiguous_function, indeterminate_datatype, collation_mismatch,
# indeterminate_collation.
_REWRITE_ANALYSIS_ERRORS = frozenset({"42883", "42804", "42846", "42725", "42P18", "42P21",
                                      "42P22"})
_BoundMethod = MethodType  # namedtuple_row's maker: a class's bound _make
# Instance slots every concrete governed cursor class declares.
GOV_SLOTS = ("_gov_ctx", "_gov_result", "_gov_result_view", "_gov_path", "_gov_measure",
             "_gov_portal", "_gov_rows", "_gov_many")
# Paths that send a statement without psycopg's _maybe_prepare_gen, so its effect cannot be
# measured in a savepoint around it: stream() hands rows over while the statement runs, a
# server cursor runs its query (and any function in it) at each FETCH, COPY TO streams.
# COPY FROM STDIN under a row limit is measured when the copy ends (this path name).
MEASURED_COPY = "COPY FROM STDIN (measured)"


def governed_repr(obj: Any, text: str) -> str:
    """psycopg's repr with the class path of the psycopg (or user) class governed, and a
    ``(governed)`` marker: ``<psycopg.Cursor (governed) [IDLE] (host=...) at 0x...>``.

    Code and tests recognise psycopg objects by that path (``"psycopg.Cursor" in str(cur)``);
    the marker still says the object is governed."""
    cls = type(obj)
    path = f"<{cls.__module__}.{cls.__qualname__}"
    if not text.startswith(path):
        return text
    base = next((c for c in cls.__mro__ if not c.__module__.startswith("governed_db")), cls)
    return f"<{base.__module__}.{base.__qualname__} (governed){text[len(path):]}"


if TYPE_CHECKING:
    # What the mixins are mixed into, for the type checker: psycopg's cursor and copy bases.
    from psycopg._copy_base import BaseCopy
    from psycopg._cursor_base import BaseCursor

    _CursorBase = BaseCursor[Any, Row]  # (subscripted again with Row below)
    _CopyBase = BaseCopy[Any]
else:
    # Generic in Row like psycopg's cursors (``_CursorBase[Row]`` is ``Generic[Row]``), so
    # ``Cursor(GovernedCursorMixin[Row], ...)`` types rows as the class's Row, not as Any.
    _CursorBase = Generic
    _CopyBase = object


class GovernedCursorMixin(_CursorBase[Row]):
    """Hooks shared by all governed cursors. Concrete classes add the ``_gov_ctx`` slot."""

    __slots__ = ()
    # The slots of GOV_SLOTS, which each concrete class declares.
    _gov_ctx: Any
    _gov_result: Any
    _gov_result_view: GovernedResult | None
    _gov_path: str | None
    _gov_measure: tuple[Any, Any, Any] | None
    _gov_rows: tuple[Any, Any, int, Any, Any] | None
    # psycopg's server cursor slots (the portal's name, whether it was described); used only by
    # the server-cursor methods below.
    _name: str
    _described: bool
    # The parameter sets of the executemany() running (a sequence: an approval binds them all)
    _gov_many: Any

    if not TYPE_CHECKING:
        # Hidden from the type checker, which reads the psycopg class's own (overloaded)
        # __init__ instead: ``Cursor(conn)`` is then typed with ``conn``'s Row.
        def __init__(self, connection: Any, *args: Any, **kwargs: Any) -> None:
            self._gov_ctx = None
            self._gov_path = None
            self._gov_measure = None
            self._gov_portal = None  # server cursors: the version of the portal judged
            self._gov_rows = None  # (plan, inner maker, result index, row maker, report cell)
            self._gov_many = None
            if getattr(connection, "_governor", None) is None:
                raise InterfaceError(
                    "governed cursors need a governed connection: connect with"
                    " governed_db.connect()")
            super().__init__(connection, *args, **kwargs)

    def __repr__(self) -> str:
        return governed_repr(self, super().__repr__())

    # -- statement in ---------------------------------------------------------------------------

    def _start_query(self, query: Any = None) -> Any:
        # A plain function returning a generator: the common case adds no generator layer.
        conn = self._conn
        gov = conn._governor
        if gov is None:
            raise InterfaceError("the connection is not governed (closed or not set up)")
        auditor = gov.auditor
        if auditor is not None and (auditor.error is not None or auditor.closed):
            auditor.check()  # raises (a failed log configured to fail open runs on)
        # (Governor.identity() inlined: acting_as > connection > configure > env)
        ident = _acting.get() or gov.conn_identity or gov.identity()
        gov.pending_identity = ident
        if gov.driver_statements_gone:
            conn._gov_forget_prepared()  # before psycopg looks a statement name up
        tx_status = conn.pgconn.transaction_status
        now = monotonic()
        if tx_status == IDLE:
            # Nothing has run in the transaction yet (psycopg is about to BEGIN it, or
            # autocommit): a read-only identity's allowed write can still make it READ WRITE.
            gov.tx_fresh = True
            gov.tx_since = now
            if gov.catalog_tx:
                gov.catalog_tx_ended()  # the transaction it was read in is over
            if gov.synced_in_tx:
                # The transaction governance synced inside ended (COMMIT or ROLLBACK, maybe
                # through transaction()): whether its SETs hold is not known, sync again.
                gov.rolled_back()
        if gov.pipeline_synced and conn._pipeline is None:
            gov.pipeline_synced = False
            gov.session_reset()  # synced inside a pipeline: not known to have run
        catalog = gov.catalog
        if ident is not gov.synced_identity or tx_status not in _SYNCABLE \
                or gov.catalog_stale or catalog is None \
                or now - catalog.loaded_at >= _catalog.REFRESH_SECONDS:
            # (the common case's test of Governor.catalog_due() inlined; it is called here
            # to mark a snapshot that aged stale)
            gov.catalog_due()
            return self._gov_sync_then_start(ident, query)
        return super()._start_query(query)

    def _gov_sync_then_start(self, ident: Any, query: Any) -> Any:
        yield from self._conn._gov_session_gen(ident)
        yield from super()._start_query(query)

    def _convert_query(self, query: Any, params: Any = None) -> Any:
        pgq = self._query_cls(self._tx)  # (psycopg 3.3's _convert_query)
        pgq.convert(query, params)
        conn = self._conn
        gov = conn._governor
        ident, gov.pending_identity = gov.pending_identity, None
        # Read in the encoding the server reads it in now (psycopg may have encoded the text
        # with its cursor's older one: what counts is how the server lexes the bytes).
        codec = conn.pgconn._encoding
        if codec == "ascii":
            codec = view_codec(conn.pgconn)
        many = self._gov_many
        ctx = gov.gate(pgq.query, pgq.params, ident, codec, pgq.types,
                       executions=None if many is None else _executions(pgq, many))
        # Judged (the context complete): in flight from now on, until its record is queued.
        # Then the log is checked again: if it closed (or failed) while the statement was
        # judged, either AuditLog.close() saw it in flight and records it, or it is refused
        # here, before anything is sent.
        gov.inflight = ctx
        gov.inflight_thread = _get_ident()  # (close() on this thread cannot wait for it)
        auditor = gov.auditor
        if auditor is not None and (auditor.closed or auditor.error is not None):
            _refuse_unsent(conn, ctx)
        gov.tx_fresh = False  # from here on the transaction has run something
        self._gov_ctx = ctx
        path, self._gov_path = self._gov_path, None
        if path == MEASURED_COPY:
            ctx.measured = True  # recorded when the copy ends, with the rows it touched
        elif path is not None and ctx.effect_check:
            # Nothing sent yet: a write whose effect is not bounded in advance may only take
            # a path where it is measured exactly (execute(), executemany(), COPY FROM).
            raise gov.blast_radius_unmeasured(ctx, path)
        sm = _server_mask.rewrite_for(self, gov, ctx) if gov.server_masks else None
        if sm is not None:
            # Decided, recorded and bound to the caller's text; the server masks (see
            # _server_mask): what is sent is the caller's statement inside a masking SELECT.
            pgq.query = sm.query
            ctx.server_mask = sm
        if conn._pipeline is not None:
            # (A statement that may run unseen code has the identity settings read back
            # behind it, mid-pipeline, in _gov_track: see _pipeline_readback.)
            if gov.read_only_for(ctx.identity) and any(
                    st.kinds & TX_MODE_KINDS for st in ctx.statements):
                raise gov.unverifiable_in_pipeline(ctx)
            conn._gov_inflight.append(ctx)
        return pgq

    def _gov_serial_executemany(self, query: Any, params_seq: Any) -> bool:
        """Whether executemany must run execution by execution (each with its effect
        checked) instead of in a pipeline: only when the statement's effect is not bounded in
        advance within the identity's limits (``INSERT ... VALUES`` by key stays pipelined)."""
        gov = self._conn._governor
        if gov.read_only_for(gov.identity()):
            return True  # an allowed write may need its own READ WRITE switch: no pipeline
        if not gov.limits_rows():
            return False
        from collections.abc import Sequence

        from psycopg import adapt

        from .analysis import analyze

        if not isinstance(params_seq, Sequence) or not params_seq:
            return True  # an iterator cannot be peeked at without consuming it: be safe
        try:
            # (a transformer of its own: a new cursor has none before its first execute)
            pgq = self._query_cls(adapt.Transformer(self))
            pgq.convert(query, params_seq[0])
        except Exception:  # noqa: BLE001 - psycopg raises the real error when it runs
            return True
        limited: bool = gov.limits_rows(analyze(pgq.query, _read_codec(self._conn.pgconn)))
        return limited

    def _gov_track(self, gen: Any) -> Any:
        """Run a psycopg generator and record the statement's outcome."""
        self._gov_ctx = None
        try:
            rv = yield from gen
        except BaseException as exc:
            self._gov_failed(exc)
            raise
        ctx = self._gov_ctx
        if ctx is not None:
            yield from self._gov_after_gen(ctx)
        return rv

    def _execute_gen(self, query: Any, params: Any = None, *, prepare: bool | None = None,
                     binary: bool | None = None, _again: bool = False) -> Any:
        """psycopg 3.3's ``_execute_gen`` with the outcome recorded in its own frame: what
        ``_gov_track`` does around the other paths, without a generator layer around the
        statement (execute() is the hot path)."""
        self._gov_ctx = None
        conn = self._conn
        try:
            yield from self._start_query(query)
            pgq = self._convert_query(query, params)
            yield from self._maybe_prepare_gen(pgq, prepare=prepare, binary=binary)
            if conn._pipeline:
                yield from conn._pipeline._communicate_gen()
            self._last_query = query
            yield from conn._prepared.maintain_gen(conn)
        except BaseException as exc:
            self._gov_failed(exc)
            if _again or not self._gov_rewrite_refused(exc):
                raise
            # Sent again as the caller wrote it: the rewrite is forgotten (failed() above), so
            # it is masked client-side, or described again for the new type.
            return (yield from self._execute_gen(query, params, prepare=prepare,
                                                 binary=binary, _again=True))
        ctx = self._gov_ctx
        if ctx is None:
            return
        if ctx.cached is not None and not ctx.settings_check and conn._pipeline is None \
                and not conn._governor.replan:
            # The common case (see _gov_after_gen): a cached plan ran, nothing to read back.
            if not ctx.measured:
                conn._governor.succeeded(ctx, self._rowcount, _status(self))
            return
        yield from self._gov_after_gen(ctx)

    def _gov_rewrite_refused(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the server refusing the masking SELECT sent instead of the
        caller's statement while it was being analysed (_server_mask: a column's type changed
        in another session since the rewrite was learned, so its masking expression names no
        function or collation for the new type), in autocommit with nothing else in flight:
        nothing of the statement ran, and it can be sent again as written."""
        ctx = self._gov_ctx
        conn = self._conn
        if ctx is None or ctx.server_mask is None \
                or getattr(exc, "sqlstate", None) not in _REWRITE_ANALYSIS_ERRORS \
                or conn._pipeline is not None or self._gov_many is not None \
                or conn.pgconn.transaction_status != IDLE:
            return False
        # The error points into the masking select list, before the caller's statement (an
        # error of the caller's own text, or one a function raises while it runs, does not).
        diag = getattr(exc, "diag", None)
        position: str | None = diag.statement_position if diag is not None else None
        if position is None or not position.isdigit():
            return False
        select_list_end: int = ctx.server_mask.query.find(b" FROM (\n")
        return 0 < int(position) <= select_list_end

    def _gov_failed(self, exc: BaseException) -> None:
        ctx = self._gov_ctx
        if ctx is not None:
            # Denied, failed or rolled back by the blast radius: what it would have
            # prepared or declared is not known to exist (fail closed on its names).
            self._conn._governor.session_effects_unknown(ctx)
            if not ctx.finished:
                self._conn._governor.failed(ctx, exc)

    def _gov_after_gen(self, ctx: Any) -> Any:
        """After a statement ran: read back what it may have changed, and record it."""
        if self._conn._pipeline is not None:
            if ctx.settings_check:
                # Read back before the caller can queue anything behind it.
                path = yield from _pipeline_readback.read_back_gen(self._conn)
                if path is not None:
                    self._conn._governor.search_path_seen(path)
            return
        if self._conn._governor.replan:
            yield from self._gov_replan(ctx)
        if ctx.cached is not None:
            # A cached plan: one statement, no transaction control, SET/RESET, DDL or
            # session object (engine/cached_plan.cacheable): none of the steps below apply.
            if ctx.settings_check:
                yield from self._gov_check_identity_settings()
            if not ctx.measured:
                self._conn._governor.succeeded(ctx, self._rowcount, _status(self))
            return
        if any(s.kind in ("ROLLBACK", "ROLLBACK TO") for s in ctx.statements):
            # A rollback undoes session SETs made in the transaction (an identity synced
            # inside it): the session is synced again before the next statement. Its
            # cursors are gone (all of them are forgotten: fail closed).
            self._conn._governor.rolled_back()
            self._conn._governor.transaction_ended(committed=False)
        yield from self._gov_check_tx_mode(ctx)
        if _resets_all_alone(ctx):
            # RESET ALL / DISCARD ALL sent alone (a pool's reset function): its effect
            # is known in advance (every setting back to its default, the identity
            # hand-off included) and nothing ran after it, so the session is synced
            # again before the next statement rather than read back and closed. Among
            # other statements it is read back as any unseen change (those after it
            # ran without the hand-off).
            self._conn._governor.session_reset()
        elif ctx.settings_check:
            yield from self._gov_check_identity_settings()
        if not ctx.measured:
            self._conn._governor.succeeded(ctx, self._rowcount, _status(self))
            if self._conn._governor.catalog_forced and any(s.is_ddl for s in ctx.statements):
                # DDL ran: reload the snapshot now, while nothing else is in flight, not
                # before the next statement (which may be the first of a pipeline, where
                # it would cost a round trip of its own).
                yield from self._conn._gov_load_catalog_gen()

    def _gov_replan(self, ctx: Any) -> Any:
        """The result names a table or column the catalog snapshot does not know (``SELECT *``
        from a table created since, a temporary table): reload the snapshot, then plan the
        statement's results again, before any row reaches the caller. Until then (and when
        the reload cannot run) such columns are unknown lineage: masked."""
        gov = self._conn._governor
        gov.replan = False
        loaded = yield from self._conn._gov_load_catalog_gen()
        if loaded:
            self._gov_replanned()

    def _gov_replanned(self) -> None:
        """The catalog snapshot was reloaded: plan this cursor's results again."""
        ctx = self._gov_ctx
        if ctx is None:
            return
        ctx.plans.clear()
        ctx.lineage.clear()
        if self.pgresult is not None:
            self._make_row = self._make_row_maker()

    def _gov_check_tx_mode(self, ctx: Any) -> Any:
        """After BEGIN/SET/RESET by a read-only identity inside a transaction, read the
        transaction's mode back from the server (``transaction_read_only`` is not a reported
        parameter). ``BEGIN READ WRITE``, ``SET TRANSACTION READ WRITE`` or ``SET LOCAL
        transaction_read_only`` that got past the analyzer closes the session (in wait())."""
        conn = self._conn
        gov = conn._governor
        if conn.pgconn.transaction_status != INTRANS or not gov.read_only_for(ctx.identity):
            return
        if not any(s.kinds & TX_MODE_KINDS for s in ctx.statements):
            return
        res = yield from conn._exec_command(b"SHOW transaction_read_only")
        if res is None or res.get_value(0, 0) != b"on":
            gov.violation = "transaction_read_only"

    def _gov_check_identity_settings(self) -> Any:
        """After a statement that may have run code the analyzer did not see (a user
        function, a view, a trigger: see ``may_run_unseen_code``), read the row-level
        security hand-off back (custom settings are not reported by the server). A value
        other than the one the library set closes the session (in wait())."""
        conn = self._conn
        gov = conn._governor
        expected = gov.server_rls
        if expected is None or conn.pgconn.transaction_status not in _SYNCABLE:
            return  # not synced yet, or a failed transaction (its changes are rolled back)
        res = yield from conn._exec_command(EXECUTION_READ_BACK_QUERY)
        if res is None:
            return
        problem = read_back_violation(res, expected)
        if problem is not None:
            gov.violation = problem
        # (search_path is not reported: a function's SET search_path is seen here, and the
        # next statement is judged with a snapshot read with the new path)
        gov.search_path_seen(read_search_path(res.get_value(0, res.nfields - 1), gov.codec))

    def _executemany_gen_pipeline(self, *args: Any, **kwargs: Any) -> Any:
        return self._gov_track(super()._executemany_gen_pipeline(*args, **kwargs))

    def _executemany_gen_no_pipeline(self, *args: Any, **kwargs: Any) -> Any:
        return self._gov_track(super()._executemany_gen_no_pipeline(*args, **kwargs))

    def _stream_send_gen(self, *args: Any, **kwargs: Any) -> Any:
        self._gov_path = "stream()"
        return self._gov_track(super()._stream_send_gen(*args, **kwargs))

    def _start_copy_gen(self, statement: Any, params: Any = None) -> Any:
        if self._gov_copy_in_limited(statement, params):
            return self._gov_copy_in_gen(statement, params)
        self._gov_path = "COPY"
        return self._gov_track(super()._start_copy_gen(statement, params))

    def _gov_discard_copy_out_gen(self) -> Any:
        """Read to its end, and drop, a ``COPY ... TO STDOUT`` the server began but that is
        refused (``GovernedCopyMixin._gov_init``), leaving the connection out of COPY mode and
        its transaction as it was. The data never reaches the caller, egress observers
        included. No cancel: a cancel can land on the caller's next statement."""
        if self._gov_result is None or self._gov_result.status != _COPY_OUT:
            return
        pgconn = self._conn.pgconn
        try:
            while isinstance((yield from copy_from(pgconn)), memoryview):
                pass
        except Exception:  # noqa: BLE001 - the copy ended (its error is moot); the refusal is raised
            pass

    def _gov_copy_in_limited(self, statement: Any, params: Any) -> bool:
        """Whether ``COPY ... FROM STDIN`` is about to run under a row limit (measured then)."""
        conn = self._conn
        gov = conn._governor
        if conn._pipeline is not None or not gov.limits_rows():
            return False
        from psycopg._compat import Template
        from psycopg._queries import PostgresClientQuery, PostgresQuery
        from psycopg.adapt import Transformer

        from .analysis import analyze

        try:
            tx = Transformer(self)
            pgq = (PostgresClientQuery(tx) if params or isinstance(statement, Template)
                   else PostgresQuery(tx))
            pgq.convert(statement, params)
        except Exception:  # noqa: BLE001 - psycopg raises the real error when it runs
            return False
        analysis = analyze(pgq.query, _read_codec(conn.pgconn))
        return any(st.copy is not None and st.copy.is_from for st in analysis.statements) \
            and gov.limits_rows(analysis)

    def _gov_copy_in_gen(self, statement: Any, params: Any) -> Any:
        """COPY FROM STDIN under a row limit: run in a savepoint (its own transaction in
        autocommit), counted when the copy ends (GovernedCopyMixin.finish) and rolled back
        there when it touched more rows than allowed. The gate refuses any other COPY whose
        effect it would have to measure."""
        conn = self._conn
        gov = conn._governor
        ident = gov.identity()
        if ident is not gov.synced_identity or gov.catalog_due() \
                or conn.pgconn.transaction_status not in _SYNCABLE:
            yield from conn._gov_session_gen(ident)  # before BEGIN: session-level settings
        yield from conn._start_query()  # psycopg's BEGIN outside autocommit
        own = conn.pgconn.transaction_status == IDLE
        yield from conn._exec_command(b"BEGIN" if own else b"SAVEPOINT " + BLAST_SAVEPOINT)
        before = yield from _counts(conn)
        self._gov_path = MEASURED_COPY
        try:
            yield from self._gov_track(super()._start_copy_gen(statement, params))
        except BaseException:
            yield from self._gov_unwind_gen(own)
            raise
        self._gov_measure = (self._gov_ctx, own, before)

    def _gov_unwind_gen(self, own: bool) -> Any:
        conn = self._conn
        status = conn.pgconn.transaction_status
        if own and status != IDLE:
            yield from conn._exec_command(b"ROLLBACK")
        elif not own and status == INTRANS:
            yield from conn._exec_command(b"ROLLBACK TO " + BLAST_SAVEPOINT)
            yield from conn._exec_command(b"RELEASE " + BLAST_SAVEPOINT)
        # (A failed statement leaves the caller's transaction failed, as without governance.)

    def _gov_copy_end_gen(self, exc: BaseException | None) -> Any:
        """After a measured COPY FROM ended (``exc``: why it did not complete): keep it, or
        roll it back and raise, with its record."""
        measure, self._gov_measure = self._gov_measure, None
        if measure is None:
            return
        ctx, own, before = measure
        gov = self._conn._governor
        if exc is not None or self._conn.pgconn.transaction_status != INTRANS:
            yield from self._gov_unwind_gen(own)
            if not ctx.finished:
                gov.failed(ctx, exc or InterfaceError("COPY did not complete"))
            return
        res = self._results[0] if self._results else None
        rowcount = res.command_tuples if res is not None and res.command_tuples is not None \
            else -1
        yield from self._gov_settle_gen(ctx, own, before, rw=False, blast=True,
                                        rowcount=rowcount)
        gov.succeeded(ctx, rowcount, "COPY")

    # The server-cursor generators below override psycopg's ServerCursorMixin's, which the
    # mixin's typed base (BaseCursor) does not have: hence the [misc] ignores on super() calls.
    def _declare_gen(self, *args: Any, **kwargs: Any) -> Any:
        self._gov_path = "a server-side cursor"
        return self._gov_judged_portal(
            self._gov_track(super()._declare_gen(*args, **kwargs)))  # type: ignore[misc]

    def _gov_judged_portal(self, gen: Any) -> Any:
        rv = yield from gen
        self._gov_portal = self._gov_portal_version()
        return rv

    def _gov_portal_version(self) -> Any:
        """The session's version of this server cursor's name (bumped by every DECLARE,
        CLOSE, transaction end the governor saw): what the cursor's plan was judged for."""
        return self._conn._governor.session_versions.get(f"cursor:{self._name}")

    def _describe_gen(self) -> Any:
        """Server cursors: learn the shape of the cursor before its first fetch.

        A cursor this object did not declare (SQL ``DECLARE c CURSOR FOR ...`` run earlier,
        then read through ``conn.cursor("c")``) has no statement of its own: its rows are
        judged as a ``FETCH`` from that cursor by name, through the statement choke point, so
        they are masked by what the declared query reads (a name the session did not see
        declared stays unknown lineage: masked)."""
        if self._gov_ctx is None:
            from psycopg import sql

            gov = self._conn._governor
            ident, gov.pending_identity = gov.pending_identity, None
            text = sql.SQL("FETCH ALL FROM {}").format(
                sql.Identifier(self._name)).as_bytes(self._conn)
            ctx = self._gov_ctx = gov.gate(text, None, ident)
            self._gov_portal = self._gov_portal_version()
            yield from super()._describe_gen()  # type: ignore[misc]
            gov.succeeded(ctx, -1, None)
            return
        yield from super()._describe_gen()  # type: ignore[misc]

    # Server cursors only (psycopg's ServerCursor): FETCH and MOVE run the cursor's query.
    def _fetch_gen(self, num: int | None) -> Any:
        self._gov_check_portal()
        return super()._fetch_gen(num)  # type: ignore[misc]

    def _scroll_gen(self, value: int, mode: str) -> Any:
        self._gov_check_portal()
        return super()._scroll_gen(value, mode)  # type: ignore[misc]

    def _gov_check_portal(self) -> None:
        refusal = audit_refusal(self._conn)
        if refusal is not None:
            raise refusal  # rows read while the audit log cannot be written: none
        self._gov_check_redeclared()
        self._gov_check_portal_effect()

    def _gov_check_redeclared(self) -> None:
        """The cursor's name was closed or declared again by SQL since its rows were judged
        (``CLOSE c; DECLARE c CURSOR FOR SELECT ssn ...`` through another cursor): the plan
        made for the old query must not mask the new one's rows. The cursor is read as one
        this object did not declare: described again and judged as ``FETCH`` from the name,
        by what the session saw it declared as now (unknown: masked; gone: the server's
        error, as psycopg raises it). Likewise when the identity fetching is not the one
        the rows were judged for (declared by a service, fetched under ``acting_as(agent)``):
        judged and recorded as that identity's FETCH."""
        ctx = self._gov_ctx
        if ctx is None or not self._described:
            return  # not judged yet: the describe before the fetch judges it
        if self._gov_portal_version() != self._gov_portal \
                or ctx.identity != self._conn._governor.identity():
            self._gov_ctx = None
            self._described = False

    def _gov_check_portal_effect(self) -> None:
        """FETCH/MOVE through a server cursor are sent by psycopg without the statement
        hook, and each runs more of the cursor's query (a function in it writes then). The
        query was judged at DECLARE (refused there when only measuring could judge it); a
        cursor declared in SQL and read through ``conn.cursor(name)`` is judged here, by what
        its DECLARE was seen to be: one whose effect is not bounded in advance, or not known,
        is refused when a row limit applies (a SQL ``FETCH`` through execute() measures it)."""
        from psycopg import sql

        from .analysis import analyze

        conn = self._conn
        gov = conn._governor
        name = self._name
        fetch = analyze(f"FETCH ALL FROM {sql.Identifier(name).as_string(conn)}")
        if gov.limits_rows(fetch):
            if gov.policy.mode == "observe":
                # Observe mode runs what a rule would refuse and records it (the rows still
                # come back masked by what the DECLARE was seen to read, or whole if unknown).
                gov.event("denied_fetch", rule="statement.affected-row-limit", observe=True)
                return
            gov.event("denied_fetch", rule="statement.affected-row-limit")
            raise StatementDenied(
                "denied by policy rule `statement.affected-row-limit`: fetching from this"
                " server-side cursor runs a query that may change rows (or was not declared"
                " through governed_db), whose exact effect cannot be checked here; run"
                " `FETCH ... FROM <cursor>` with execute(), which measures it",
                rule_ids=("statement.affected-row-limit",))

    def _maybe_prepare_gen(self, pgq: Any, *, prepare: bool | None = None,
                           binary: bool | None = None) -> Any:
        """Send and run one statement; when its effect must be checked, inside a savepoint.

        Two reasons to wrap psycopg's own generator (otherwise it runs as is):

        * exact blast radius: a row-changing statement whose effect is not bounded in advance
          runs in a savepoint (its own transaction in autocommit); the rows it touched are read
          from ``pg_stat_xact_user_tables`` before and after, tables it may have changed in
          full are counted exactly, and over a limit the change is rolled back to the
          savepoint (the caller's transaction stays usable) and denied or sent for approval;
        * an allowed write of a read-only identity runs in a transaction switched to READ WRITE
          for that statement alone, and READ ONLY again right after it.
        """
        ctx = self._gov_ctx
        if ctx is not None and ctx.cached is not None and self._gov_many is None and (
                ctx.server_mask is not None or ctx.cached.server_mask is None):
            # The common case: a cached plan (no approval, no effect measured, no READ
            # WRITE switch: cached_plan.cacheable), rewritten for server masking already or
            # known to need none. psycopg's own generator (see _gov_prepare_gen).
            return super()._maybe_prepare_gen(pgq, prepare=prepare, binary=binary)
        if ctx is not None and self._gov_many is not None and ctx.settings_check:
            # executemany of a statement that may run code the analyzer did not see: judged
            # once, for the session as it was before the first execution. Each later one is
            # sent only once the server state is read back as still that (attack3 A1/A1b).
            ctx.many_sent += 1
            if ctx.many_sent > 1:
                return self._gov_next_execution_gen(ctx, pgq, prepare, binary)
        return self._gov_prepare_gen(ctx, pgq, prepare, binary)

    def _gov_next_execution_gen(self, ctx: Any, pgq: Any, prepare: bool | None,
                                binary: bool | None) -> Any:
        yield from self._gov_between_executions_gen(ctx, pgq)
        return (yield from self._gov_prepare_gen(ctx, pgq, prepare, binary))

    def _gov_between_executions_gen(self, ctx: Any, pgq: Any) -> Any:
        """Before execution 2, 3, ... of an executemany whose statement may run unseen code
        (a user function, a view, a trigger): what the previous execution may have changed
        in the session is read back — the reported parameters (standard_conforming_strings,
        client_encoding, session_authorization, ...), the identity settings, and the schemas
        names resolve through — and the execution is judged again where that state decides:

        * the identity hand-off, the session's role or read-only mode changed: the session
          is closed (``session.verify-server-state``), as after any statement;
        * standard_conforming_strings is off now: this execution's text (ClientCursor inlines
          each parameter set into it) is refused if the server may lex it, or a body it runs,
          otherwise than it was judged (``session.standard-conforming-strings``);
        * the search path is not the one names were resolved with: refused
          (``session.verify-server-state``), the snapshot is read again before the next
          statement, which is judged with the new path.

        In a pipeline the read-back is queued behind the previous execution and waited for
        (``_pipeline_readback``); outside one, it is one more query. Earlier executions
        stand (in autocommit they are committed; in a transaction, roll it back)."""
        conn = self._conn
        gov = conn._governor
        path = None
        if conn._pipeline is not None:
            path = yield from _pipeline_readback.read_back_gen(conn)
        elif gov.server_rls is not None and conn.pgconn.transaction_status in _SYNCABLE:
            res = yield from conn._exec_command(EXECUTION_READ_BACK_QUERY)
            if res is not None:
                problem = read_back_violation(res, gov.server_rls)
                if problem is not None:
                    gov.violation = problem
                path = read_search_path(res.get_value(0, res.nfields - 1), gov.codec)
        if path is None and gov.violation is None:
            gov.violation = "governed_db.identity (not read back)"  # fail closed
        conn._gov_verify_server_state()  # closes the session on a violation (raises)
        if gov.scs_off or gov.scs_unsure:
            gov.refuse_if_lexed_otherwise(
                ctx, bytes(pgq.query).decode(_read_codec(conn.pgconn), "surrogateescape"))
        if not gov.search_path_seen(path):
            gov._record(ctx, outcome="denied", rules=["session.verify-server-state"])
            raise StatementDenied(
                "denied by policy rule `session.verify-server-state`: an earlier execution of"
                " this executemany() changed the schema search path (a function it calls ran"
                " SET search_path or set_config), so the same text would now resolve its names"
                " to other tables than it was judged for. The executions before it ran; the"
                " rest were not sent. Run the statement again (it is judged with the new"
                " path), or keep functions from changing search_path (CREATE FUNCTION ... SET"
                " search_path = ... confines it to the function)",
                rule_ids=("session.verify-server-state",))

    def _gov_prepare_gen(self, ctx: Any, pgq: Any, prepare: bool | None,
                         binary: bool | None) -> Any:
        if ctx is not None and ctx.approved_runs is not None:
            # Under an approval: this execution must be the next one it covers.
            self._conn._governor.check_approved_execution(ctx, pgq.query, pgq.params)
        if ctx is not None and self._gov_many is not None:
            ctx.current_run = (pgq.query, pgq.params)  # (an approval of its effect binds it)
        run = super()._maybe_prepare_gen(pgq, prepare=prepare, binary=binary)
        if ctx is None or (ctx.server_mask is not None and not ctx.effect_check
                           and not ctx.read_write):
            return run  # (rewritten for server masking already: nothing to describe)
        gov = self._conn._governor
        blast = gov.blast_radius_applies(ctx)
        if not blast and not ctx.read_write:
            # The common case: psycopg's own generator, no extra layer (a new SELECT shape
            # that may return sensitive columns is described first, for server masking).
            return _server_mask.maybe_describe(self, gov, ctx, pgq, run)
        return self._gov_effect_gen(ctx, run, blast)

    def _gov_effect_gen(self, ctx: Any, run: Any, blast: bool) -> Any:
        conn = self._conn
        gov = conn._governor
        rw = ctx.read_write
        if conn._pipeline is not None:
            # A pipeline cannot stop between statements to count, roll back or switch modes.
            if gov.policy.mode == "observe" and not rw:
                # Observe mode runs everything: unmeasurable here, not refused.
                return (yield from run)
            if ctx in conn._gov_inflight:
                conn._gov_inflight.remove(ctx)
            raise gov.blast_radius_in_pipeline(ctx)
        own = conn.pgconn.transaction_status == IDLE
        if own:
            yield from conn._exec_command(b"BEGIN READ WRITE" if rw else b"BEGIN")
        else:
            if rw:
                # First statement of the transaction (checked in gate()): still switchable.
                yield from conn._exec_command(b"SET TRANSACTION READ WRITE")
            if blast:
                yield from conn._exec_command(b"SAVEPOINT " + BLAST_SAVEPOINT)
        before = (yield from _counts(conn)) if blast else {}
        try:
            rv = yield from run
        except BaseException:
            if own and conn.pgconn.transaction_status != IDLE:
                yield from conn._exec_command(b"ROLLBACK")
            elif rw and conn.pgconn.transaction_status == INTRANS:
                yield from conn._exec_command(b"SET LOCAL transaction_read_only = on")
            raise
        yield from self._gov_settle_gen(ctx, own, before, rw=rw, blast=blast,
                                        rowcount=self._rowcount)
        return rv

    def _gov_settle_gen(self, ctx: Any, own: bool, before: Any, *, rw: bool, blast: bool,
                        rowcount: int) -> Any:
        """Count what the statement touched, compare with its limits, and keep the change
        (COMMIT / RELEASE) or roll it back to before it (and raise the verdict)."""
        conn = self._conn
        gov = conn._governor
        verdict = None
        if blast:
            after = yield from _counts(conn)
            exact: dict[str, int] = {}
            targets = gov.exact_count_targets(ctx, before, after)
            if targets:
                try:
                    exact = yield from _exact_counts(conn, targets)
                except Exception as exc:  # noqa: BLE001 - cannot verify: roll back, deny
                    verdict = gov.effect_check_failed(ctx, exc)
            if verdict is None:
                verdict = gov.blast_radius_verdict(ctx, rowcount, before, after, exact)
        if verdict is None and own:
            # Governance's own transaction commits only while the audit log can be written
            # (the log closed while the statement ran: rolled back, _commit_gate).
            verdict = audit_refusal(conn)
        if verdict is None:
            if own:
                yield from conn._exec_command(b"COMMIT")
            else:
                if blast:
                    yield from conn._exec_command(b"RELEASE " + BLAST_SAVEPOINT)
                if rw:
                    yield from conn._exec_command(b"SET LOCAL transaction_read_only = on")
            return
        if own:
            yield from conn._exec_command(b"ROLLBACK")
        else:
            yield from conn._exec_command(b"ROLLBACK TO " + BLAST_SAVEPOINT)
            yield from conn._exec_command(b"RELEASE " + BLAST_SAVEPOINT)
            if rw:
                yield from conn._exec_command(b"SET LOCAL transaction_read_only = on")
        self._reset()  # no rows of a change that did not happen
        raise verdict

    def _set_results(self, results: Any) -> None:
        if self._execmany_returning is None:
            # (psycopg 3.3's _set_results for execute(), inlined: the hot path)
            self._results[:] = results
            self._select_current_result(0)
        else:
            super()._set_results(results)
        ctx = self._gov_ctx
        conn = self._conn
        if ctx is not None and conn._pipeline is not None:
            if conn._governor.replan:
                # planned with an unknown relation: again once the pipeline ends
                conn._governor.replan = False
                import weakref

                conn._gov_replan_cursors.append(weakref.ref(self))
            if not ctx.finished:
                conn._governor.succeeded(ctx, self._rowcount, _status(self))
                if ctx in conn._gov_inflight:
                    conn._gov_inflight.remove(ctx)

    # -- row out --------------------------------------------------------------------------------

    def _make_row_maker(self) -> RowMaker[Any]:
        inner = super()._make_row_maker()
        if _egress._observers:
            inner = _egress.watch_rows(inner)
        conn = self._conn
        gov = conn._governor
        ctx = self._gov_ctx
        res = self._gov_result
        index = self._iresult
        # (Not self._encoding: it raises for an encoding Python has no codec for, EUC_TW,
        # where psycopg raises only when a statement is sent in it, as ours does then.)
        as_bytes = conn.pgconn.parameter_status(b"client_encoding") == b"SQL_ASCII"
        if conn._pipeline is not None or ctx is None or as_bytes:
            plan = gov.bound_plan(ctx, index, res)
            if plan is None:
                maker = inner
            elif as_bytes:  # SQL_ASCII: text values are bytes
                maker = _text_bytes_maker(plan, inner, _read_codec(self._conn.pgconn), res)
            else:
                maker = plan.wrap(inner)
        else:
            # Outside a pipeline a cursor's rows are made before it runs its next statement:
            # the row maker of a cached plan (with its detection report, which names the
            # statement and result in the cell) is made once and kept with that plan.
            sm = ctx.server_mask
            hit = _server_mask.plan_for(sm, res) if sm is not None and index == 0 \
                and not ctx.plans else None
            if hit is not None:
                # (MaskPlanStage.plan's first step for a rewritten statement, inlined: the
                # result has the learned shape, its server-masked values arrive masked.)
                ctx.plans[0], ctx.lineage[0] = hit
                plan = hit[0][0]
            else:
                plan = gov.plan(ctx, index, res)
            if plan is None:
                maker = inner
            else:
                kept = self._gov_rows
                # (A row factory may make its maker anew for every result: namedtuple_row's
                # is the bound ``_make`` of a class cached per column names, equal to the
                # kept one while the names are; tuple_row's is ``tuple`` itself.)
                if kept is not None and kept[0] is plan and kept[2] == index and (
                        kept[1] is inner or (type(inner) is _BoundMethod and kept[1] == inner)):
                    cell = kept[4]
                    if cell is not None:
                        cell.ctx, cell.result, cell.codec = ctx, res, gov.codec
                    maker = kept[3]
                else:
                    cell = None
                    bound: Any = plan
                    if plan._dops and gov.auditor is not None:
                        cell = ReportCell(ctx, res, gov.codec)
                        bound = gov.bind_report(plan, index, cell)
                    maker = bound.wrap(inner)
                    self._gov_rows = (plan, inner, index, maker, cell)
        if plan is not None and ctx is not None and ctx.server_mask is None:
            _server_mask.learn(self, gov, ctx, self._gov_result)  # a rewrite for next time
        if ctx is not None and ctx.decision.max_rows_returned is not None:
            maker = _row_limited(maker, gov, ctx, self._gov_result)
        return maker

    @property
    def pgresult(self) -> Any:
        """The current result, seen through a view whose ``get_value()`` masks like rows do.

        ``cursor.pgresult.get_value()`` is raw libpq access: without the view it would hand
        out sensitive values unmasked (a known leak path). The view is made when the
        attribute is read; psycopg's own fetch path reads the result through
        ``_select_current_result`` / ``_check_result_for_fetch`` (status and row count only,
        values are loaded by the transformer, through the row maker).
        """
        view = self._gov_result_view
        if view is None:
            res = self._gov_result
            if res is None:
                return None
            view = self._gov_result_view = GovernedResult(res, self)
        return view

    @pgresult.setter
    def pgresult(self, res: Any) -> None:
        self._gov_result = res
        self._gov_result_view = None

    def _select_current_result(self, i: int, format: Any = None) -> None:
        # psycopg 3.3's, reading status and counts from the result itself rather than
        # through the masking view (no value is read here).
        self._iresult = i
        res = self._results[i]
        self._gov_result = res  # (the pgresult setter's body, without its call)
        self._gov_result_view = None
        self._tx.set_pgresult(res, format=format)
        self._pos = 0
        status = res.status
        if status == _TUPLES_OK:
            self._rowcount = res.ntuples
        elif status != _COPY_OUT:
            nrows = res.command_tuples
            self._rowcount = nrows if nrows is not None else -1
        self._statusmessage = res.command_status
        self._make_row = self._make_row_maker()

    def _check_result_for_fetch(self) -> Any:
        # The common case without the view (psycopg reads only status and ntuples of it);
        # every other case is psycopg's own, with its errors.
        res = self._gov_result
        if res is not None and res.status == _TUPLES_OK and not self.closed:
            return res
        return super()._check_result_for_fetch()

    if not TYPE_CHECKING:
        # Typed as psycopg's own (``RowFactory[Row]`` on sync cursors, ``AsyncRowFactory[Row]``
        # on async ones), which the type checker reads from the psycopg class it is mixed into.
        @property
        def row_factory(self) -> RowFactory[Any]:
            """Writable; setting it after execute() still goes through the row choke point."""
            return self._row_factory

        @row_factory.setter
        def row_factory(self, row_factory: RowFactory[Any]) -> None:
            self._row_factory = row_factory
            if self.pgresult:
                self._make_row = self._make_row_maker()


# Types whose binary format is their text (text, varchar, bpchar, name): masked values of
# these can be given back in binary results too; other binary values are withheld.
_TEXT_BINARY = frozenset({25, 1043, 1042, 19})


class GovernedResult:
    """A read-only view of a libpq result: values of masked columns come back masked.

    Everything but ``get_value`` is the underlying result's (psycopg reads status, fields and
    errors through it). Text-format values are masked with the column's strategy, and so are
    binary values of text types (the same bytes); another masked binary-format value is
    withheld (None), since it cannot be masked in place.
    """

    __slots__ = ("_res", "_cursor")

    def __init__(self, res: Any, cursor: Any) -> None:
        self._res = res
        self._cursor = cursor

    # What psycopg itself reads on every statement, forwarded without __getattr__'s detour.
    status = property(lambda self: self._res.status)
    ntuples = property(lambda self: self._res.ntuples)
    nfields = property(lambda self: self._res.nfields)
    command_status = property(lambda self: self._res.command_status)
    command_tuples = property(lambda self: self._res.command_tuples)
    binary_tuples = property(lambda self: self._res.binary_tuples)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._res, name)

    def get_value(self, row_number: int, column_number: int) -> bytes | None:
        value = self._masked_value(row_number, column_number)
        if _egress._observers and value is not None:
            res = self._res
            _egress.emit("value", bytes(value).decode(self._cursor._encoding, "replace")
                         if res.fformat(column_number) == 0 else bytes(value))
        return value

    def _masked_value(self, row_number: int, column_number: int) -> bytes | None:
        res = self._res
        value: bytes | None = res.get_value(row_number, column_number)
        cur = self._cursor
        gov = cur._conn._governor
        plan = gov.bound_plan(cur._gov_ctx, cur._iresult, res) if gov is not None else None
        if plan is None or plan.columns[column_number] is None:
            return value
        if res.fformat(column_number) != 0 and res.ftype(column_number) not in _TEXT_BINARY:
            return None
        # Text values come in the session's client encoding (under SQL_ASCII: the server's)
        codec = _read_codec(cur._conn.pgconn)
        # NULL too: a derived value's NULL comes back as the strategy's constant
        masked = plan.apply_one(column_number, None if value is None
                                else bytes(value).decode(codec, "surrogateescape"))
        return None if masked is None else str(masked).encode(codec, "surrogateescape")

    def set_attributes(self, descriptions: Any) -> None:
        raise TypeError("a governed result is read-only")

    def __repr__(self) -> str:
        return f"<governed {self._res!r}>"


def _row_limited(maker: Any, gov: Any, ctx: Any, result: Any) -> Any:
    """Count rows across every result and fetch of the statement (server cursors included)."""
    limit = ctx.decision.max_rows_returned
    if result is not None and ctx.rows_returned + result.ntuples > limit:
        raise gov.too_many_rows(ctx, ctx.rows_returned + result.ntuples)

    def limited(values: Any) -> Any:
        ctx.rows_returned += 1
        if ctx.rows_returned > limit:
            raise gov.too_many_rows(ctx, ctx.rows_returned)
        return maker(values)

    return limited


def _executions(pgq: Any, many: Any) -> Any:
    """What gives the (text, params) of every execution of an executemany, as psycopg will
    send them: each parameter set dumped by the query psycopg converted (the first one put
    back afterwards). Only called when an approval must cover them."""

    def executions() -> list[tuple[Any, Any]]:
        out = []
        try:
            for params in many:
                pgq.dump(params)
                out.append((pgq.query, pgq.params))
        finally:
            pgq.dump(many[0])
        return out

    return executions


def _counts(conn: Any) -> Any:
    res = yield from conn._exec_command(BLAST_COUNT_SQL)
    return {res.get_value(i, 0).decode(): tuple(int(res.get_value(i, k)) for k in range(1, 5))
            for i in range(res.ntuples)}


def _exact_counts(conn: Any, tables: list[str]) -> Any:
    """Exact row counts, inside the statement's savepoint, of tables it may have changed in
    full. The names come from the server (``regclass`` output, quoted as needed), never from
    the caller. A failure (no SELECT privilege) aborts the savepoint: the caller rolls back."""
    parts = [b"(SELECT count(*) FROM " + t.encode() + b")" for t in tables]
    res = yield from conn._exec_command(b"SELECT " + b", ".join(parts))
    return {t: int(res.get_value(0, i)) for i, t in enumerate(tables)}



def _resets_all_alone(ctx: Any) -> bool:
    """The string sent is one ``RESET ALL`` or ``DISCARD ALL`` and nothing else."""
    return len(ctx.statements) == 1 and ctx.statements[0].kind in ("RESET", "DISCARD") \
        and ("*", None) in ctx.statements[0].settings

def _status(cur: Any) -> str | None:
    msg = cur._statusmessage
    return msg.decode() if msg else None


class GovernedCopyMixin(_CopyBase):
    """Masks ``COPY ... TO STDOUT`` data (read(), rows(), read_row(), iteration).

    Why COPY TO is wrapped: it bypasses row makers entirely and hands raw text to the caller.
    Text format is parsed per line, masked per column with the statement's plan and re-encoded;
    binary format with anything to mask is refused (its values cannot be masked safely).
    """

    __slots__ = ()
    cursor: Any
    formatter: Any
    _direction: Any
    _gov_plan: Any
    _write: Any  # psycopg's Copy: its writer's write (sync or async)

    def __repr__(self) -> str:
        return governed_repr(self, super().__repr__())

    def _gov_init(self) -> None:
        cur = self.cursor
        self._gov_plan = None
        if self._direction == pq.ExecStatus.COPY_IN:
            # Data is refused while the audit log cannot be written, and the copy then ends
            # failed (see _gov_end_refusal): nothing of it commits unrecorded.
            self._write = partial(_audit_checked_write, cur._conn, self._write)
        if self._direction == pq.ExecStatus.COPY_OUT:
            nfields = cur.pgresult.nfields if cur.pgresult is not None else 0
            self._gov_plan = cur._conn._governor.copy_plan(cur._gov_ctx, nfields, bound=True)
            if self._gov_plan is not None and self.formatter.format == pq.Format.BINARY:
                raise StatementDenied(
                    "denied by policy rule `column.mask`: binary COPY TO would return masked"
                    " columns unmasked; use text format (the default) so values can be masked",
                    rule_ids=("column.mask",))

    def _gov_end_refusal(self, exc: BaseException | None) -> BaseException | None:
        """Before a COPY FROM ends: why it must fail instead of completing (the audit log
        cannot be written: ``AuditUnavailable``), or None. ``finish()`` then ends it with
        CopyFail (the server keeps nothing) and raises the refusal."""
        if exc is not None or self._direction != pq.ExecStatus.COPY_IN:
            return None
        return audit_refusal(self.cursor._conn)

    def _read_gen(self) -> Any:
        data = yield from super()._read_gen()
        plan = self._gov_plan
        if plan is not None and data:
            data = memoryview(_mask_copy_line(bytes(data), plan,
                                              _read_codec(self.cursor._conn.pgconn)))
        if _egress._observers and data:
            _egress.emit("copy", bytes(data).decode(self.cursor._encoding, "replace"))
        return data


def _refuse_unsent(conn: Any, ctx: Any) -> None:
    """Raise the log's refusal for a statement judged but not sent (recorded as refused
    while the writer still takes records); a log failed but configured to fail open runs on."""
    refusal = audit_refusal(conn)
    if refusal is None:
        return
    try:
        conn._governor.failed(ctx, refusal)
    except AuditUnavailable:
        pass  # the writer has stopped: nothing was sent, nothing to record
    raise refusal


def _audit_checked_write(conn: Any, write: Any, data: Any) -> Any:
    """A COPY FROM block of data, sent only while the audit log can be written."""
    refusal = audit_refusal(conn)
    if refusal is not None:
        raise refusal
    return write(data)


_UNESC = {b"t": b"\t", b"n": b"\n", b"r": b"\r", b"\\": b"\\", b"b": b"\b", b"f": b"\f",
          b"v": b"\v"}


def _unescape(field: bytes, codec: str) -> str:
    if b"\\" not in field:
        return field.decode(codec, "surrogateescape")
    out = bytearray()
    i = 0
    while i < len(field):
        ch = field[i:i + 1]
        if ch == b"\\" and i + 1 < len(field):
            nxt = field[i + 1:i + 2]
            out += _UNESC.get(nxt, nxt)
            i += 2
        else:
            out += ch
            i += 1
    return out.decode(codec, "surrogateescape")


def _escape(text: str, codec: str) -> bytes:
    return (text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r").encode(codec, "surrogateescape"))


def _mask_copy_line(line: bytes, plan: Any, codec: str) -> bytes:
    """One line of text-format COPY data (in the session's client encoding ``codec``) with
    each column masked by ``plan``."""
    end = b"\n" if line.endswith(b"\n") else b""
    fields = line[: len(line) - len(end)].split(b"\t")
    values: list[Any] = [None if f == b"\\N" else _unescape(f, codec) for f in fields]
    if len(values) != len(plan.columns):
        # Shape mismatch: never return what we cannot map; mask every column.
        return b"\t".join(b"****" for _ in fields) + end
    masked = plan.apply(values)
    return b"\t".join(b"\\N" if v is None else _escape(str(v), codec) for v in masked) + end


def _read_codec(pgconn: Any) -> str:
    """The codec the server's bytes are read in: the client encoding's, or for SQL_ASCII
    (psycopg's "ascii") the server encoding's (see ``_client_encoding.view_codec``)."""
    codec: str = pgconn._encoding
    return view_codec(pgconn) if codec == "ascii" else codec


# bytea and bytea[]: bytes under every client encoding, never text.
_BYTEA_OIDS = frozenset({17, 1001})


def _text_bytes_maker(plan: Any, inner: Any, codec: str, result: Any) -> Any:
    """Under SQL_ASCII psycopg loads text as ``bytes``: each row's values are read as text
    (``to_text``) for the mask plan and the detectors, and what they return is given back as
    ``bytes`` where the caller would have had bytes (``to_bytes_like``)."""
    skip = frozenset(i for i in range(result.nfields) if result.ftype(i) in _BYTEA_OIDS)
    current: list[Any] = [()]

    def give_back(masked: Any) -> Any:
        original = current[0]
        return inner([to_bytes_like(o, v, codec) for o, v in zip(original, masked)])

    wrapped = plan.wrap(give_back)

    def make_row(values: Any) -> Any:
        current[0] = values
        return wrapped([v if i in skip else to_text(v, codec) for i, v in enumerate(values)])
    return make_row


def iter_governed(classes: Iterator[type]) -> list[type]:
    return [c for c in classes if issubclass(c, GovernedCursorMixin)]
