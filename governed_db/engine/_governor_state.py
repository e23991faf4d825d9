"""What every stage of the Governor may use of the others, declared for the type checker.

The stages (session.py, decide.py, blast_radius.py, mask_plan.py, error_text.py, record.py)
are mixins of one class, :class:`~governed_db.engine.Governor`: a stage's method reads the
state :meth:`Governor.__init__` sets and calls methods another stage defines. Each stage
inherits :class:`GovernorState`, which declares that state and those methods, so that mypy
checks every use against one declaration (and checks the Governor's ``__init__`` and each
stage's method against it too).

Only for the type checker: at run time ``GovernorState`` is ``object``, so the Governor's
method resolution order and behaviour are what they were. The meaning of each attribute is
documented where the Governor sets it (governor.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["GovernorState"]

if TYPE_CHECKING:
    import collections
    import itertools
    from collections.abc import Mapping, Sequence
    from typing import Any

    from .._catalog import Catalog
    from ..analysis import Analysis, StatementFacts
    from ..identity import Identity
    from ..masking import Classifier, MaskPlan
    from ..policy import Policy
    from ..rules import Decision
    from .context import StatementContext

    class GovernorState:
        """The Governor's state and cross-stage methods (see governor.py)."""

        # Set at construction.
        policy: Policy
        conn_identity: Identity | None
        auditor: Any
        catalog_key: tuple[Any, ...]
        conn_info: dict[str, Any]
        classifier: Classifier
        # The catalog snapshot.
        catalog: Catalog | None
        catalog_stale: bool
        catalog_forced: bool
        catalog_private: bool
        path_diverged: bool
        catalog_tx: bool
        tx_since: float
        replan: bool
        # Session objects by name (PREPAREd statements, DECLAREd cursors).
        prepared: dict[str, StatementFacts]
        cursors: dict[str, StatementFacts]
        session_trees: dict[str, Any]
        session_versions: dict[str, int]
        _session_counter: itertools.count[int]
        holdable_cursors: set[str]
        driver_statements_gone: bool
        server_utf8: bool
        codec: str
        reported_encoding: bytes | None
        _scope: tuple[Identity | None, tuple[Any, ...]]
        # What the server session carries.
        server_identity: str | None
        server_read_only: bool | None
        server_timeout: str | None
        prior_read_only: str | None
        prior_timeout: str | None
        synced_in_tx: bool
        server_rls: tuple[tuple[str, str], ...] | None
        app_name_own: bool
        app_name_sent: str | None
        synced_identity: Identity | None
        pipeline_synced: bool
        server_search_path: bool
        pending_identity: Identity | None
        scs_off: bool
        scs_unsure: bool
        tx_fresh: bool
        expected_params: dict[str, str | None]
        expected_raw: tuple[tuple[str, bytes, bytes | None], ...]
        violation: str | None
        last_statement_n: int | None
        inflight: Any
        inflight_thread: int
        _param_key: bytes
        sent: collections.deque[tuple[Identity, Analysis]]
        # Caches by statement key.
        _decisions: dict[tuple[Any, ...], tuple[tuple[StatementFacts, ...], Decision]]
        _plans: dict[tuple[Any, ...], tuple[tuple[MaskPlan | None, dict[str, str],
                                                  frozenset[str]], Any]]
        _effects: dict[tuple[Any, ...], tuple[bool, bool, bool]]
        server_masks: dict[tuple[Any, ...], Any]
        _audit_statics: dict[tuple[Any, ...], Any]
        cached_plans: dict[Any, Any]
        last_plan: Any

        # session.py
        def mark_catalog_stale(self) -> None: ...
        def search_path_seen(self, path: tuple[str, ...] | None) -> bool: ...
        def identity(self) -> Identity: ...
        def check_identity(self, ident: Identity) -> None: ...
        def read_only_for(self, identity: Identity) -> bool: ...
        def session_effects(self, ctx: StatementContext) -> None: ...
        def session_effects_unknown(self, ctx: StatementContext) -> None: ...

        # decide.py
        def _check_or_request(self, ctx: StatementContext, approvals: Any,
                              ask: Mapping[str, Any], **extra: Any) -> tuple[str, bool]: ...
        def give_back_approval(self, ctx: StatementContext) -> None: ...
        def execution_digest(self, query: Any, params: Sequence[Any] | None
                             ) -> tuple[str, ...]: ...
        def approval_subject(self, analysis: Analysis, statements: Sequence[StatementFacts],
                             executions: Sequence[tuple[str, ...]] | None = None) -> Any: ...
        def _masked_for(self, schema: str, table: str, column: str,
                        ident: Identity) -> bool: ...

        # blast_radius.py
        def _needs_effect_check(self, statements: Sequence[StatementFacts], limit: int | None,
                                full_min: int | None) -> bool: ...

        # mask_plan.py
        def _may_touch_sensitive(self, stmt: StatementFacts | None, catalog: Catalog | None,
                                 ident: Identity) -> bool: ...

        # record.py
        def _record(self, ctx: StatementContext, **outcome: Any) -> None: ...
        def event(self, kind: str, identity: Identity | None = None, **fields: Any) -> None: ...
else:
    GovernorState = object
