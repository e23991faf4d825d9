"""The Governor: per-connection governance, one class made of the pipeline's stages.

identity/session (session.py) → analyze, decide (decide.py) → execute under limits
(blast_radius.py) → mask (mask_plan.py) → record (record.py); error text (error_text.py).
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Mapping
from typing import Any

from .. import _config
from .._catalog import Catalog
from ..analysis import Analysis, StatementFacts, analyze
from ..rules import Decision
from ..identity import Identity
from ..masking import Classifier, MaskPlan
from ..policy import Policy
from .session import SessionStage
from .decide import DecideStage
from .blast_radius import BlastRadiusStage
from .mask_plan import MaskPlanStage
from .error_text import ErrorTextStage
from .record import RecordStage
from ..audit._record import statement_id
from .context import StatementContext


class Governor(SessionStage, DecideStage, BlastRadiusStage, MaskPlanStage, ErrorTextStage, RecordStage):
    """Per-connection governance: policy, identity, session state and the audit hand-off.

    The state set here that a stage uses is declared in ``_governor_state.GovernorState``
    as well (for the type checker: tests/test_typing.py fails on an undeclared one)."""

    @property
    def last_statement_id(self) -> str | None:
        """The id of the last statement gated on this connection (None: none yet)."""
        n = self.last_statement_n
        return None if n is None else statement_id(n)

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
        # The session's search path was seen to differ from the snapshot's (a function's SET
        # search_path): snapshots it reads are its own, never shared with other connections.
        self.path_diverged = False
        self.catalog_private = False  # the snapshot holds this session's temporary tables
        # The snapshot was read inside a transaction that had written (maybe uncommitted DDL)
        # or under REPEATABLE READ / SERIALIZABLE (the catalog as of its snapshot): it is
        # this transaction's own, never shared, and discarded when the transaction ends or
        # rolls back to a savepoint (SessionStage.catalog_tx_ended).
        self.catalog_tx = False
        # When the current transaction can have taken its snapshot at the earliest (set
        # when a statement starts with no transaction open, and at psycopg's BEGIN).
        self.tx_since = float("-inf")
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
        # A statement that may have run unseen code failed (no read-back behind it): psycopg
        # forgets its prepared statements before the next one (_connection_base).
        self.driver_statements_gone = False
        # Whether object names with non-ASCII characters are exact: PostgreSQL truncates
        # names to 63 bytes *in the server encoding*, the parser here in UTF-8.
        self.server_utf8 = True
        # The Python codec of the session's client encoding (result column names arrive in
        # it); kept current by the connection after every operation.
        self.codec = "utf-8"
        # standard_conforming_strings as the server last reported it (off: only statements
        # whose lexing cannot depend on it run, see DecideStage.gate), and whether a statement
        # sent since may have changed it (SET/RESET/DISCARD/set_config of it, not yet reported
        # back: in a pipeline the server reports it only at a sync).
        self.scs_off = False
        self.scs_unsure = False
        # The client_encoding the server last reported (bytes): codec is its Python codec.
        self.reported_encoding: bytes | None = None
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
        # application_name: the session's own (set by the application: never overwritten)
        # or ours to carry the identity (empty, or the value last set here).
        self.app_name_own = False
        self.app_name_sent: str | None = None
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
        self.expected_raw: tuple[tuple[str, bytes, bytes | None], ...] = ()  # (name, as bytes)
        self.violation: str | None = None
        self.last_statement_n: int | None = None  # (its id: last_statement_id)
        self.inflight: Any = None  # the last statement gated (a StatementContext)
        self.inflight_thread = 0  # the thread that sent it
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
        # The static part of each statement plan's audit record (audit._record), by key.
        self._audit_statics: dict[tuple[Any, ...], Any] = {}
        # One cached plan per sent text, valid under its statement key (cached_plan.py).
        self.cached_plans: dict[Any, Any] = {}
        self.last_plan: Any = None  # the plan the last gated statement was answered from
