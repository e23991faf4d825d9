"""What sync and async governed connections share: setup, session sync, factories, events."""

from __future__ import annotations

import logging
import sys
import threading
import uuid
import weakref
from time import monotonic
from functools import partial
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from psycopg import BaseConnection, Notify, pq
from psycopg import errors as e
from psycopg.adapt import Transformer
from psycopg.rows import tuple_row

from . import _config
from . import egress as _egress
from ._catalog import CATALOG_QUERY, Catalog, catalog_for, next_catalog_version, store_catalog
from ._client_encoding import (reported_encoding_safe, session_codec, text_as_bytes, to_text,
                               unsafe_encoding_message, view_codec)
from .engine import Governor, redact_exception
from ._cursor_base import governed_repr
from ._redact import Allowed, redact_fields
from ._commit_gate import audit_refusal
from .errors import AuditUnavailable, InterfaceError, PolicyError, StatementDenied
from .identity import Identity
from .masking import mask_text_values

INTRANS = pq.TransactionStatus.INTRANS
IDLE = pq.TransactionStatus.IDLE
ACTIVE = pq.TransactionStatus.ACTIVE
_CONN_OK = pq.ConnStatus.OK

GOVERNED_KWARGS = ("identity", "policy", "audit", "identity_token")


def pop_governed_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove identity=, policy=, audit=, identity_token= before psycopg sees the keywords."""
    out = {k: kwargs.pop(k) for k in GOVERNED_KWARGS if k in kwargs}
    if out.get("identity") is not None and out.get("identity_token") is not None:
        raise PolicyError("pass identity= or identity_token=, not both")
    ident = out.get("identity")
    if ident is not None and not isinstance(ident, Identity):
        if isinstance(ident, str):
            out["identity"] = Identity.parse(ident)
        else:
            raise PolicyError("identity= takes a governed_db.Identity or a 'kind:id' string")
    return out


if TYPE_CHECKING:
    # What the mixin is mixed into, for the type checker: psycopg's connection base.
    _ConnectionBase = BaseConnection[Any]
else:
    _ConnectionBase = object


class GovernedConnectionMixin(_ConnectionBase):
    """Shared by Connection and AsyncConnection (no I/O outside psycopg generators)."""

    _governor: Governor | None = None
    _gov_inflight: list[Any]
    _gov_replan_cursors: list[Any]
    _gov_cursor_wrap: Any = None
    _gov_server_cursor_wrap: Any = None

    def _gov_setup(self, opts: dict[str, Any]) -> None:
        if "sqlalchemy" in sys.modules:
            # SQLAlchemy prints bound parameter values in error text unless the engine hides
            # them; engines made with module=governed_db are not ours to configure otherwise.
            from .integrations.sqlalchemy import protect_engines

            protect_engines()
        policy = _config.resolve_policy(opts.get("policy"))
        auditor = _config.resolve_auditor(opts.get("audit"), policy)
        info = self.info
        if not reported_encoding_safe(self.pgconn.parameter_status(b"client_encoding")):
            # Lexing depends on it too: see _client_encoding (refused, not changed behind the
            # application's back; whichever way the server came to use it).
            raise InterfaceError(unsafe_encoding_message(info.parameter_status("client_encoding")))
        # "session": one id per governed connection, so a report (and OpenLineage) can
        # follow one agent run end to end across its statements, commits and close.
        conn_info = {"host": info.host, "port": info.port, "dbname": info.dbname,
                     "user": info.user, "server_version": info.server_version,
                     "session": uuid.uuid4().hex}
        # Shared per database, role and pinned search_path (names resolve through it).
        key = (info.host, info.port, info.dbname, info.user, policy.session.search_path)
        self._gov_inflight = []
        self._gov_replan_cursors = []
        ident = opts.get("identity")
        if opts.get("identity_token") is not None:
            # Verified with this connection's policy ([identity.oidc]); never stored.
            ident = Identity.from_token(opts["identity_token"], policy=policy)
        gov = Governor(policy=policy, identity=ident, auditor=auditor,
                       catalog_key=key, conn_info=conn_info)
        track = getattr(auditor, "track", None)
        if track is not None:
            track(self)  # its statements in flight are recorded if the log closes
        gov.server_utf8 = info.parameter_status("server_encoding") == "UTF8"
        # Lexing depends on it: with it off, '\'' could hide a statement from the analyzer,
        # so only texts that lex the same either way run (DecideStage.gate); verified after
        # every operation, whichever way the session came to it.
        gov.scs_off = self.pgconn.parameter_status(b"standard_conforming_strings") != b"on"
        gov.codec = session_codec(self.pgconn)
        gov.reported_encoding = self.pgconn.parameter_status(b"client_encoding")
        gov.catalog = catalog_for(key)
        gov.catalog_stale = gov.catalog is None
        # What the server reports now and must keep reporting (PostgreSQL sends these
        # GUC_REPORT parameters after every change, at no cost): a statement that changes
        # them behind the analyzer's back (a function calling set_config, UPDATE pg_settings)
        # is caught after it ran, and the session is closed. (client_encoding may change,
        # but only to an encoding on the allow-list: checked on its own below.)
        gov.expected_params = {
            name: info.parameter_status(name) for name in ("session_authorization", "is_superuser")}
        gov.expected_raw = tuple((name, name.encode(), None if value is None else value.encode())
                                 for name, value in gov.expected_params.items())
        self._governor = gov
        # [identity] require_verified: refused at connect, not at the first statement.
        gov.check_identity(gov.identity())
        # Notices (RAISE NOTICE ...) and NOTIFY payloads reach the caller outside any result:
        # route them through redaction. (psycopg binds these handlers to BaseConnection's.)
        wself = weakref.ref(self)
        self.pgconn.notice_handler = partial(_notice_handler, wself)
        self.pgconn.notify_handler = partial(_notify_handler, wself)
        gov.event("connect")

    def __repr__(self) -> str:
        return governed_repr(self, super().__repr__())

    @property
    def governor(self) -> Governor:
        """The connection's governance state (policy, identity, session, audit)."""
        if self._governor is None:
            raise InterfaceError("the connection is not governed")
        return self._governor

    @property
    def identity(self) -> Identity:
        """The identity the next statement on this connection would run as."""
        return self.governor.identity()

    @identity.setter
    def identity(self, value: Identity) -> None:
        if not isinstance(value, Identity):
            raise PolicyError("identity must be a governed_db.Identity")
        self.governor.check_identity(value)
        self.governor.conn_identity = value

    def _gov_session_gen(self, identity: Identity) -> Any:
        """Bring the server session in line with ``identity``; (re)load the catalog."""
        gov = self._governor
        assert gov is not None
        status = self.pgconn.transaction_status
        queued = self._pipeline is not None and status == pq.TransactionStatus.ACTIVE
        if status not in (IDLE, INTRANS) and not queued:
            gov.rolled_back()  # failed transaction: its SETs will be rolled back
            return
        # (In a pipeline with results in flight the reported value may predate queued SETs:
        # not used then, the governor's own record decides.)
        reported = None if queued else self.pgconn.parameter_status(
            b"default_transaction_read_only")
        app_name = None if queued else self.pgconn.parameter_status(b"application_name")
        sync = gov.session_sync_sql(identity, status != IDLE,
                                    None if reported is None else reported.decode(),
                                    None if app_name is None else app_name.decode(
                                        gov.codec, "replace"))
        if self._pipeline is not None and sync:
            # Pipeline mode (results in flight or not: the command is queued, not run): the
            # sync is queued ahead of the statement (an identity switched inside the pipeline
            # applies to its statements; an earlier error makes the server skip both). Whether
            # it ran is known only after the pipeline: the session is synced again before the
            # next statement, and the reported values are not read back before then.
            gov.pipeline_synced = True
        for sql in sync:
            res = yield from self._exec_command(sql)
            gov.session_sync_result(sql, res)
            if status == INTRANS:
                gov.tx_fresh = False  # a query ran in it: it can no longer become READ WRITE
        gov.session_synced(identity, status == INTRANS, bool(sync))
        gov.catalog_due()  # (ages the snapshot: also checked at connect)
        if gov.catalog_stale and not gov.catalog_forced and not gov.catalog_private \
                and not gov.path_diverged \
                and not (gov.catalog_tx and gov.catalog is not None and gov.catalog.tx_wrote):
            # Stale by age only: another connection may have refreshed the shared snapshot
            # (not when this session's own snapshot holds its temporary tables or what its
            # open transaction wrote). A shared one is the committed catalog, as the server
            # resolves names with it now, in any isolation level.
            shared = catalog_for(gov.catalog_key)
            if shared is not None and shared.fresh() and shared is not gov.catalog:
                gov.catalog = shared
                gov.catalog_stale = False
        if gov.catalog_stale:
            yield from self._gov_load_catalog_gen()
            catalog = gov.catalog
            if gov.catalog_tx and catalog is not None and catalog.old_view \
                    and not catalog.fresh():
                gov.catalog_stale = True
                gov.event("denied_catalog", reason="old transaction snapshot")
                raise StatementDenied(
                    "denied by policy rule `session.catalog-snapshot`: governed_db must read"
                    " the catalog again (it is older than its refresh window, or changed), but"
                    f" this {catalog.isolation.upper()} transaction reads it as of its start,"
                    " which may no longer be the schema the server resolves names with. End"
                    " the transaction (commit or roll back) and retry, or run it in READ"
                    " COMMITTED", rule_ids=("session.catalog-snapshot",))

    def _gov_before_pipeline_gen(self) -> Any:
        """Before entering pipeline mode (``pipeline()``, executemany's own pipeline): bring
        the session and the catalog snapshot up to date when due (after DDL, by age), since
        no catalog query can run between a pipeline's statements (a relation the snapshot
        does not know is refused there: it may run unseen code)."""
        gov = self._governor
        if gov is None or self._pipeline is not None:
            return
        ident = gov.identity()
        if ident is gov.synced_identity and not gov.catalog_due():
            return
        yield from self._gov_session_gen(ident)

    def _gov_after_pipeline_gen(self) -> Any:
        """After pipeline mode ends: results that named a relation or column the snapshot
        does not know (a table created earlier in the same pipeline) were planned as unknown
        lineage, masked whole, since no catalog query can run between a pipeline's
        statements. Reload now and plan them again, before their rows are read."""
        gov = self._governor
        pending, self._gov_replan_cursors = self._gov_replan_cursors, []
        if gov is None or not pending or self._pipeline is not None:
            return
        loaded = yield from self._gov_load_catalog_gen()
        if not loaded:
            return
        for ref in pending:
            cur = ref()
            if cur is not None:
                cur._gov_replanned()

    def _gov_load_catalog_gen(self) -> Any:
        """Load the catalog snapshot (not in pipeline mode: its results are not ours to
        interleave; the statements stay planned against the old one, unknowns masked)."""
        gov = self._governor
        assert gov is not None
        status = self.pgconn.transaction_status
        if self._pipeline is not None or status not in (IDLE, INTRANS):
            return False
        if status == INTRANS:
            gov.tx_fresh = False
        res = yield from self._exec_command(CATALOG_QUERY)
        if res is None:
            return False
        tx = Transformer(self)
        tx.set_pgresult(res)
        rows = tx.load_rows(0, res.ntuples, tuple_row(None))  # type: ignore[arg-type]
        if text_as_bytes(self.pgconn):
            # SQL_ASCII: psycopg loads names and definitions as bytes; the snapshot holds
            # them as the analyzer reads statements (the server encoding's text).
            codec = view_codec(self.pgconn)
            rows = [to_text(row, codec) for row in rows]
        catalog = Catalog.from_rows(rows, next_catalog_version())
        if gov.catalog is not None:
            catalog.carry_absent(gov.catalog)
        # A snapshot holding this session's temporary tables is its own: other sessions
        # cannot see them, and their `users` may not be ours.
        gov.catalog_private = catalog.has_temp
        # Read inside a transaction that wrote (its DDL may yet be rolled back) or under
        # REPEATABLE READ / SERIALIZABLE (the catalog as of the transaction's snapshot, and
        # no newer than when it could have been taken): this transaction's own, never
        # shared, discarded when it ends (SessionStage.catalog_tx_ended).
        gov.catalog_tx = status == INTRANS and (catalog.tx_wrote or catalog.old_view)
        if gov.catalog_tx and catalog.old_view:
            catalog.loaded_at = min(catalog.loaded_at, gov.tx_since)
        if not catalog.has_temp and not gov.catalog_tx and not gov.path_diverged:
            # (A session whose search path a function changed resolves names its own way.)
            store_catalog(gov.catalog_key, catalog)
        gov.catalog = catalog
        gov.catalog_stale = False
        gov.catalog_forced = False
        gov.replan = False
        return True

    # -- server state: read-only is verified, not assumed ---------------------------------------

    def _set_read_only_gen(self, value: bool | None) -> Any:
        """``read_only = False`` / ``set_read_only(False)`` (sync and async): psycopg would
        start every transaction with ``BEGIN READ WRITE``, switching a read-only identity's
        session out of READ ONLY. Refused for those identities."""
        gov = self._governor
        if value is not None and not value and gov is not None \
                and gov.read_only_for(gov.identity()):
            gov.event("denied_setting", attribute="read_only")
            raise StatementDenied(
                "denied by policy rule `session.read-only`: this connection acts for a read-only"
                f" identity ({gov.identity().kind}); its transactions stay READ ONLY at the"
                " server, so read_only cannot be set to False. Writes the policy allows run"
                " read-write on their own", rule_ids=("session.read-only",))
        return (yield from super()._set_read_only_gen(value))

    def _get_tx_start_command(self) -> bytes:
        """Never ``BEGIN READ WRITE`` for a read-only identity (read_only=False was set while
        another identity acted, or by psycopg internals)."""
        cmd: bytes = super()._get_tx_start_command()
        gov = self._governor
        if gov is not None:
            gov.tx_fresh = True  # a transaction is starting: nothing has run in it yet
            gov.tx_since = monotonic()
        if gov is not None and b"READ WRITE" in cmd:
            ident = gov.pending_identity or gov.identity()
            if gov.read_only_for(ident):
                raise StatementDenied(
                    "denied by policy rule `session.read-only`: a transaction of a read-only"
                    f" identity ({ident.kind}) cannot start READ WRITE; set read_only back to"
                    " None", rule_ids=("session.read-only",))
        return cmd

    def _gov_forget_prepared(self) -> None:
        """psycopg forgets the statements it prepared (and prepares again, by new names):
        after a failed statement that may have run unseen code (no read-back ran behind it)
        what its names hold is not known (see ``DRIVER_STATEMENTS_CHECK``). (psycopg itself
        forgets them after ROLLBACK, DEALLOCATE ALL and DISCARD ALL.)"""
        if self._governor is not None:
            self._governor.driver_statements_gone = False
        prepared = self._prepared
        prepared._names.clear()
        prepared._counts.clear()
        prepared._to_flush.clear()

    def _gov_verify_server_state(self) -> None:
        """After every operation: what the server reports must match what the identity
        requires. On a mismatch the session is closed (fail closed) and the caller told so."""
        gov = self._governor
        pgconn = self.pgconn
        if gov is None or pgconn.status != _CONN_OK:
            return
        if pgconn.transaction_status == IDLE:
            if gov.cursors:
                gov.transaction_ended(committed=True)  # (a rollback was told so already)
            if gov.catalog_tx:
                gov.catalog_tx_ended()
        if gov.driver_statements_gone:
            self._gov_forget_prepared()
        problem = gov.violation
        if problem is None:
            status = pgconn.parameter_status
            encoding = status(b"client_encoding")
            if self._pipeline is None:
                # (In a pipeline the server reports it only at a sync: until the pipeline
                # ends, a statement that may have changed it keeps gov.scs_unsure set.)
                gov.scs_off = status(b"standard_conforming_strings") != b"on"
                gov.scs_unsure = False
            if encoding != gov.reported_encoding:
                if not reported_encoding_safe(encoding):
                    problem = "client_encoding"
                else:
                    gov.codec = session_codec(self.pgconn)
                    gov.reported_encoding = encoding
            if problem is None:
                for name, raw_name, raw_value in gov.expected_raw:
                    if status(raw_name) != raw_value:
                        problem = name
                        break
            ident = gov.synced_identity
            # A sync queued in a pipeline has not run yet while results are in flight: the
            # reported value is checked once the pipeline is over.
            queued = gov.pipeline_synced and self._pipeline is not None
            if problem is None and ident is not None and gov.server_read_only \
                    and not queued and status(b"default_transaction_read_only") != b"on":
                problem = "default_transaction_read_only"
        if problem is None:
            return
        gov.violation = None
        ident = gov.synced_identity or gov.identity()
        try:
            gov.event("session_closed", ident, reason="server-state-changed",
                      parameter=problem, statement_id=gov.last_statement_id)
        finally:
            self._closed = True
            self.pgconn.finish()
        raise StatementDenied(
            "denied by policy rule `session.verify-server-state`: the server reports that"
            f" {problem} no longer has the value this {ident.kind} identity requires (a"
            " statement changed it, directly or inside a function). The session was closed"
            " and its open transaction rolled back; this connection is no longer usable, open"
            " a new one", rule_ids=("session.verify-server-state",))

    def _commit_gen(self) -> Any:
        gov = self._governor
        if self.pgconn.transaction_status != IDLE:
            refusal = audit_refusal(self)
            if refusal is not None:
                raise refusal  # the transaction's changes do not commit unrecorded
        yield from super()._commit_gen()
        if gov is not None:
            gov.event("commit")

    def _tpc_prepare_gen(self) -> Any:
        # PREPARE TRANSACTION makes the transaction's work durable: a commit point. Refused
        # like commit(), the transaction left open (tpc_rollback(), or prepare again once the
        # log can be written).
        refusal = audit_refusal(self)
        if refusal is not None and self._tpc and not self._tpc[1]:
            raise refusal
        yield from super()._tpc_prepare_gen()

    def _tpc_finish_gen(self, action: Any, xid: Any) -> Any:
        if action == "COMMIT":  # COMMIT PREPARED (or commit() of an unprepared one)
            refusal = audit_refusal(self)
            if refusal is not None:
                raise refusal
        yield from super()._tpc_finish_gen(action, xid)

    def _rollback_gen(self) -> Any:
        yield from super()._rollback_gen()
        if self._governor is not None:
            self._governor.rolled_back()  # session SETs made in the transaction are undone
            self._governor.transaction_ended(committed=False)
            try:
                self._governor.event("rollback")
            except AuditUnavailable:
                pass  # rolled back all the same: nothing of it can commit (not an error)

    def _gov_redact(self, exc: BaseException) -> BaseException:
        gov = self._governor
        diag = exc.diag if isinstance(exc, e.Error) else None
        allowed, echo = gov.error_allowed(getattr(self, "_gov_inflight", ()),
                                          diag.internal_query if diag is not None else None) \
            if gov is not None else (Allowed(()), False)
        for ctx in getattr(self, "_gov_inflight", ()):
            if not ctx.finished and self._governor is not None:
                self._governor.failed(ctx, exc)
        if getattr(self, "_gov_inflight", None):
            self._gov_inflight.clear()
        out = redact_exception(exc, allowed, echo)
        if _egress._observers:
            _egress.emit("error", out)
        return out

    def _gov_closing(self) -> bool:
        """Before close(): record it. Whether the connection was open."""
        gov = self._governor
        if gov is not None and not self.closed:
            try:
                gov.event("close")
            except Exception:  # noqa: BLE001, S110 - closing must not fail because audit did
                pass
            return True
        return False

    def _gov_in_flight(self) -> Iterator[tuple[Any, Any, bool]]:
        """(governor, statement context, running on the server for another thread) of each
        statement this connection sent whose record is not queued yet: what
        ``AuditLog.close()`` waits for (running) or records itself (the rest)."""
        gov = self._governor
        if gov is None:
            return
        queued = self._gov_inflight
        for ctx in list(queued):
            if not ctx.finished:
                yield gov, ctx, False  # queued in a pipeline: its owner's sync reads the result
        ctx = gov.inflight
        if ctx is not None and not ctx.finished and ctx not in queued:
            # A statement of close()'s own thread (a COPY it is writing, one whose notice
            # handler closes the log) cannot end while close() waits: recorded at once. So
            # is one of a connection closed under it: the server may still run it (a backend
            # waiting on a lock commits an autocommit INSERT after the client has gone).
            yield gov, ctx, (not self.closed
                             and self.pgconn.transaction_status == ACTIVE
                             and gov.inflight_thread != threading.get_ident())

    def _gov_unfinished(self) -> bool:
        """Whether a statement this connection sent has no record queued yet."""
        return next(self._gov_in_flight(), None) is not None

    def _gov_closed(self, was_open: bool) -> None:
        """After close(): the connection's audit records, its close included, are durable
        when close() returns, and none is still on its way through the writer thread (a
        closed connection leaves nothing of its own behind: psycopg's test_leak counts
        objects right after close())."""
        gov = self._governor
        if not was_open or gov is None or gov.auditor is None:
            return
        untrack = getattr(gov.auditor, "untrack", None)
        if untrack is not None and not self._gov_unfinished():
            # (A statement still unrecorded, closed under another thread's feet, keeps the
            # connection tracked, weakly: the log's close() records it.)
            untrack(self)
        try:
            gov.auditor.flush()
        except Exception:  # noqa: BLE001, S110 - closing must not fail because audit did
            pass  # (a failed writer is reported by the next statement on any connection)


logger = logging.getLogger("governed_db")


def masked_notify(n: Notify) -> Notify:
    """A notification with detectable values in its payload masked."""
    payload = mask_text_values(n.payload)
    if _egress._observers:
        _egress.emit("notify", payload)
    return n if payload == n.payload else Notify(n.channel, payload, n.pid)


def _notice_handler(wself: Any, res: Any) -> None:
    self = wself()
    if not (self and self._notice_handlers):
        return
    raw = e.Diagnostic(res, self.pgconn._encoding)
    gov = self._governor
    # RAISE NOTICE text goes through the same allow-list as errors.
    # In a pipeline the notice may come from any statement still in flight: all of them count.
    allowed, echo = gov.error_allowed(getattr(self, "_gov_inflight", ()), raw.internal_query) \
        if gov is not None else (Allowed(()), False)
    diag = e.Diagnostic(redact_fields(raw, allowed, echo=echo), "utf-8")
    if _egress._observers:
        _egress.emit("notice", [diag.message_primary, diag.message_detail, diag.message_hint])
    for cb in self._notice_handlers:
        try:
            cb(diag)
        except Exception as ex:  # noqa: BLE001, S110 - as psycopg: a bad handler must not break I/O
            logger.exception("error processing notice callback '%s': %s", cb, ex)


def _notify_handler(wself: Any, pgn: Any) -> None:
    self = wself()
    if not self:
        return
    enc = self.pgconn._encoding
    n = masked_notify(Notify(pgn.relname.decode(enc), pgn.extra.decode(enc), pgn.be_pid))
    if self._notify_handlers:
        for cb in self._notify_handlers:
            cb(n)
    elif (d := self._notifies_backlog) is not None:
        d.append(n)
