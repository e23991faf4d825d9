"""One cached plan per sent statement text: the gate's answer for a statement shape, computed
once and reused while it is valid.

A :class:`CachedPlan` holds what the gate computed for one text sent by one connection: the
analysis, the effective statements and the policy's decision, and the effect flags. It is
used only under the very key every cached answer about a statement is keyed by
(:meth:`DecideStage.statement_key`): the text (bytes read in the same client encoding), the
identity's scope (:func:`~governed_db.engine.context.scope_key`: every identity field that
takes part in equality), the policy's digest and the catalog snapshot's version. The key is
checked field by field on every use — never weakened: a plan is never used for another
identity scope, another policy or another snapshot; it is replaced instead.

Only plans whose use needs nothing but the key are kept (:func:`cacheable`): one statement,
allowed (or observed), no approval, no session object referred to by name (``EXECUTE``,
``FETCH``: their versions would join the key) or changed (PREPARE, DECLARE, CLOSE,
DEALLOCATE, DISCARD, DDL), no setting written (``set_config($1, $2)`` is judged by the
values bound to it), no effect measured in a savepoint, no READ WRITE switch of a
read-only identity, no transaction-state statement. Everything else takes the full gate every
time, as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._server_mask import UNSET
from .context import scope_key

if TYPE_CHECKING:
    from ._governor_state import GovernorState

__all__ = ["CachedPlan", "cacheable", "valid_for"]

_MAX_PLANS = 2048


class CachedPlan:
    """The gate's answer for one sent text under one statement key."""

    __slots__ = ("analysis", "audit_static", "codec", "decision", "effect_check", "ident", "key",
                 "policy_digest", "catalog_version", "result0", "scope", "sent", "server_mask",
                 "settings_check", "statements")
    # The statement key's parts (see valid_for).
    scope: tuple[Any, ...]
    policy_digest: str
    catalog_version: int

    def __init__(self, *, analysis: Any, codec: str, statements: Any, decision: Any,
                 key: tuple[Any, ...], ident: Any, effects: tuple[bool, bool, bool]) -> None:
        self.analysis = analysis
        self.codec = codec
        self.statements = statements
        self.decision = decision
        self.key = key
        # The key's parts, checked one by one on use (see valid_for).
        _text, self.scope, self.policy_digest, self.catalog_version, _refs = key
        self.ident = ident  # the identity object last seen with this scope (fast check)
        self.sent = (ident, analysis)
        self.effect_check = effects[0]
        self.settings_check = effects[2]
        # The server-masking rewrite learned under this key (_server_mask.rewrite_for), None
        # when the statement needs none, UNSET until looked up; forget() resets it.
        self.server_mask: Any = UNSET
        # The static part of the statement's audit record (audit._record.StatementStatic),
        # made by the record stage at the first use and checked with its same() each time.
        self.audit_static: Any = None
        # (result shape, (mask plan entry, lineage)) of the first result set, planned under
        # this plan's key (engine/mask_plan.py; the shape is checked on every use).
        self.result0: Any = None


def cacheable(statements: Any, decision: Any, key: tuple[Any, ...], effects: Any,
              read_write: bool, tx_state_kinds: frozenset[str]) -> bool:
    """Whether the gate's answer may be reused under ``key`` alone (see the module doc)."""
    if len(statements) != 1 or decision.action != "allow" or read_write or effects[0]:
        return False
    if key[4]:  # refers to prepared statements / cursors by name: their versions decide
        return False
    st = statements[0]
    if st.prepares or st.declares or st.closes or st.deallocates or st.is_ddl:
        return False  # changes session objects or the catalog: the full path after it
    if st.settings or st.dynamic_settings:
        return False  # set_config($1, ...) is judged by the values bound (_bound_settings)
    return not (st.kinds & tx_state_kinds)


def valid_for(gov: GovernorState, plan: CachedPlan, ident: Any, codec: str) -> bool:
    """Whether ``plan`` answers for ``ident`` now: the same statement key, part by part."""
    if codec != plan.codec:
        return False
    if ident is not plan.ident:
        last, scope = gov._scope
        if last is not ident:
            scope = scope_key(ident)
            gov._scope = (ident, scope)
        if scope != plan.scope:
            return False
        plan.ident = ident
        plan.sent = (ident, plan.analysis)
    catalog = gov.catalog
    version = catalog.version if catalog is not None else -1
    return version == plan.catalog_version and gov.policy.digest == plan.policy_digest


def remember(gov: GovernorState, text: Any, plan: CachedPlan) -> None:
    cache = gov.cached_plans
    if len(cache) >= _MAX_PLANS:
        cache.clear()
    cache[text] = plan
