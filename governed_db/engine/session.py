"""Stage 1, identity → session: bring the server session in line with the acting identity
(the identity GUCs and the row-level security hand-off, READ ONLY, statement_timeout,
search_path), the catalog snapshot's freshness, and the session objects (PREPAREd statements,
DECLAREd cursors) whose versions every cache key holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .. import _config
from .._catalog import invalidate_database
from ..analysis import StatementFacts
from ..identity import Identity, _acting, derived_identity
from .context import StatementContext
from ._governor_state import GovernorState


# Statements that can end a transaction or change the transaction mode / session settings.
_TX_STATE_KINDS = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE",
                             "ROLLBACK TO", "PREPARE TRANSACTION", "COMMIT PREPARED",
                             "ROLLBACK PREPARED", "TRANSACTION", "SET", "RESET", "DISCARD"})


# After one of these, a read-only identity's transaction mode is read back from the server.
TX_MODE_KINDS = frozenset({"BEGIN", "SET", "RESET", "TRANSACTION"})


# statement_timeout for an identity, reading the session's own value in the same round trip.
_TIMEOUT_SYNC = (b"SELECT pg_catalog.current_setting('statement_timeout'),"
                 b" pg_catalog.set_config('statement_timeout', ")


# The row-level security hand-off (docs/row-level-security.md): what PostgreSQL policies read
# with current_setting('governed_db.identity.<name>', true). Set by the library whenever the
# acting identity changes; SET/RESET/set_config of governed_db.* is denied for every identity
# (session.disallow-security-settings) and read back after statements that may run code the
# analyzer did not see (a user function, a view, a trigger).
IDENTITY_SETTINGS = ("governed_db.identity.id", "governed_db.identity.kind",
                     "governed_db.identity.roles", "governed_db.identity.tenant",
                     "governed_db.identity.verified", "governed_db.identity.issuer",
                     "governed_db.identity.subject")


# Read back with them (one more column, same round trip): how many prepared statements in
# psycopg's own namespace (``_pg3_*``) were created by SQL PREPARE — in a function body or a
# DO block's dynamic SQL, where the analyzer could not refuse it (``session.driver-prepared-
# name``). psycopg prepares its statements through the protocol (``from_sql`` false) and
# runs a cached text by name alone: any such statement closes the session.
DRIVER_STATEMENTS_CHECK = ("(SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statements"
                           " WHERE from_sql AND pg_catalog.starts_with(name, '_pg3_'))")


IDENTITY_SETTINGS_QUERY = ("SELECT " + ", ".join(
    [f"pg_catalog.current_setting('{name}', true)" for name in IDENTITY_SETTINGS]
    + [DRIVER_STATEMENTS_CHECK])).encode()


# The schemas names resolve through now (``current_schemas(true)``: the temporary schema and
# pg_catalog where they apply, "$user" expanded), joined by U+001F. search_path is not a
# reported parameter before PostgreSQL 18: read back, with the identity settings, between the
# executions of an executemany that may run unseen code (a function's SET search_path).
SEARCH_PATH_READ = b"pg_catalog.array_to_string(pg_catalog.current_schemas(true), E'\\x1f')"
EXECUTION_READ_BACK_QUERY = IDENTITY_SETTINGS_QUERY + b", " + SEARCH_PATH_READ


def read_search_path(value: Any, codec: str = "utf-8") -> tuple[str, ...] | None:
    """The schemas of a ``SEARCH_PATH_READ`` value (None: not read)."""
    if value is None:
        return None
    return tuple(bytes(value).decode(codec, "surrogateescape").split("\x1f"))


def read_back_violation(res: Any, expected: tuple[tuple[str, str], ...]) -> str | None:
    """What the identity-settings read-back (``IDENTITY_SETTINGS_QUERY``'s one row) shows
    changed, or None: a setting's name, or the driver's prepared statements."""
    for i, (name, value) in enumerate(expected):
        got = res.get_value(0, i)
        if got is None or bytes(got).decode() != value:
            return name
    if res.nfields <= len(expected) or res.get_value(0, len(expected)) != b"0":
        return "psycopg's prepared statement namespace (_pg3_*, redefined by SQL PREPARE)"
    return None


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
    """A string literal the server reads the same with standard_conforming_strings on or off
    (governed sessions may run with it off): an escape string, backslashes doubled. Labels
    and identity attributes come from the caller; ``\\'`` in one must not end the literal."""
    return ("E'" + text.replace("\\", "\\\\").replace("'", "''") + "'").encode()


def _has_session_effects(ctx: StatementContext) -> bool:
    return any(s.prepares or s.declares or s.closes or s.deallocates
               or s.kind in ("DISCARD", "COMMIT", "PREPARE TRANSACTION")
               or s.is_ddl for s in ctx.statements)


_CURSOR_OPT_HOLD = 0x0020  # PostgreSQL's parsenodes.h: DECLARE ... WITH HOLD


def _holdable(tree: Mapping[str, Any]) -> bool:
    body = tree.get("DeclareCursorStmt") or {}
    return bool(int(body.get("options") or 0) & _CURSOR_OPT_HOLD)


def _inner_tree(tree: Mapping[str, Any], typ: str) -> Any:
    body = tree.get(typ, {})
    return body.get("query")


def _inner_facts(s: StatementFacts, name: str, *, prepared: bool) -> StatementFacts:
    from ..analysis import extract_facts

    inner = _inner_tree(s.tree, "PrepareStmt" if prepared else "DeclareCursorStmt")
    if not inner:
        return s
    facts = extract_facts({"stmt": inner}, s.text)
    if not prepared:
        facts = attrs.evolve(facts, kinds=facts.kinds | {"SELECT"})
    return facts


class SessionStage(GovernorState):
    """The Governor's methods of this stage (see governor.py)."""

    def mark_catalog_stale(self) -> None:
        """Reload the snapshot before the next statement (DDL ran, an unknown object showed)."""
        self.catalog_stale = True
        self.catalog_forced = True

    def search_path_seen(self, path: tuple[str, ...] | None) -> bool:
        """The schemas names resolve through on the server now (read back; None: not read).
        True when they are the snapshot's; otherwise the snapshot is read again before the
        next statement, and this session's snapshots stay its own from now on (names resolve
        through a path other connections of the process do not have)."""
        catalog = self.catalog
        if path is not None and catalog is not None and path == catalog.search_path:
            return True
        if path is not None:
            self.path_diverged = True
        self.mark_catalog_stale()
        return False

    def catalog_tx_ended(self) -> None:
        """The transaction (or the part after a savepoint) ended, committed or not: a
        snapshot read inside it is not the catalog any more (DDL undone or committed, an old
        REPEATABLE READ view): reloaded before the next statement."""
        if self.catalog_tx:
            self.catalog_tx = False
            self.mark_catalog_stale()

    def catalog_due(self) -> bool:
        """Whether the snapshot must be refreshed before the next statement."""
        if self.catalog_stale:
            return True
        if self.catalog is None or not self.catalog.fresh():
            self.catalog_stale = True  # by age: a newer shared snapshot will do
            return True
        return False

    def identity(self) -> Identity:
        """The identity for the next statement (acting_as > connection > configure > env)."""
        # (current_identity() inlined: read before every statement)
        ident = _acting.get() or self.conn_identity or _config.default_identity()
        return ident if ident is not None else derived_identity()

    def check_identity(self, ident: Identity) -> None:
        """Raise (recorded) when ``ident`` may not act under this connection's policy: its
        token expired (verification is cached until ``exp``: a clock read per statement),
        or its kind must be verified and it is not."""
        from ..identity import require_verified

        try:
            require_verified(ident, self.policy)
            ident.check_current()
        except Exception as exc:
            self.event("identity_refused", ident, reason=getattr(exc, "reason", "unverified"))
            raise

    def read_only_for(self, identity: Identity) -> bool:
        return identity.kind in self.policy.session.read_only_kinds

    def session_sync_sql(self, identity: Identity, in_transaction: bool,
                         reported_read_only: str | None = None,
                         reported_app_name: str | None = None) -> list[bytes]:
        """SQL that brings the server session in line with ``identity`` (empty when it is).

        Pushes the identity to the ``governed_db.identity`` GUC (and the row-level security
        hand-off), and to ``application_name`` while the session has no name of its own (so
        ``pg_stat_activity`` shows who acts), and applies READ ONLY and ``statement_timeout``
        when the identity's kind requires them. A setting the identity does not require is
        only touched to put back the session's own value after an identity that required it
        (``reported_read_only``: the value the server reports for
        ``default_transaction_read_only``, None where it does not report it). The
        application's own ``application_name`` (conninfo, ``PGAPPNAME``, a pool's kwargs) is
        never overwritten (``reported_app_name``: the value the server reports).
        """
        out: list[bytes] = []
        label = identity.label
        rls = identity_settings(identity)
        if reported_app_name is not None:
            # What the server reports decides: empty or a name in governance's own form
            # ("governed_db <kind:id>", whoever set it: pg_stat_activity never shows a label
            # that is not the acting identity's) is ours to set; any other value is the
            # application's own and stays (it is not an identity claim governance relies
            # on: governed_db.identity is).
            self.app_name_own = reported_app_name != "" and not (
                reported_app_name == self.app_name_sent
                or reported_app_name.startswith("governed_db "))
        if label != self.server_identity or rls != self.server_rls:
            # One statement, sent only when the identity changes: the row-level security
            # hand-off (identity_settings) costs nothing per statement.
            lit = _sql_literal(label[:200])
            app_name = b""
            if not self.app_name_own:
                self.app_name_sent = ("governed_db " + label)[:63]
                app_name = (b", pg_catalog.set_config('application_name', "
                            + _sql_literal(self.app_name_sent) + b", false)")
            out.append(b"SELECT pg_catalog.set_config('governed_db.identity', " + lit +
                       b", false)" + app_name +
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
        undone, so it is synced again; SETs made outside it (the usual case) still hold.
        DDL it ran is undone too: a snapshot read inside it is discarded."""
        self.catalog_tx_ended()
        if self.synced_in_tx:
            self.synced_in_tx = False
            self.session_reset()

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
            if s.kind == "DISCARD" and (self.catalog_private or (
                    self.catalog is not None and self.catalog.has_temp)):
                self.mark_catalog_stale()  # DISCARD TEMP / ALL dropped its temporary tables
            if s.kind in ("COMMIT", "PREPARE TRANSACTION"):
                self.catalog_tx_ended()  # ("COMMIT; BEGIN" in one text: never seen idle)
            if s.kind == "DISCARD" and ("*", None) in s.settings:
                self._session_drop("prepared", "*")  # DISCARD ALL: DEALLOCATE ALL, CLOSE ALL
                self._session_drop("cursor", "*")
            if s.is_ddl:
                self.mark_catalog_stale()
                invalidate_database(self.catalog_key)  # others' shared snapshot too

    def session_effects_unknown(self, ctx: StatementContext) -> None:
        """A statement failed or was rolled back: whatever it would have prepared, declared,
        closed or deallocated is unknown now (PREPARE and DEALLOCATE are not undone by a
        rollback). Forgotten, so a later EXECUTE/FETCH of those names fails closed. (It may
        have ended its transaction: a snapshot read inside that is discarded.)"""
        self.catalog_tx_ended()
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

