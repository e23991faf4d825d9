"""Evaluate a policy on an analyzed string into one Decision (no I/O).

The policy's rules are evaluated in order and the most severe level wins (error > approval >
warning); two findings no policy can lift (an unsafe client encoding, the governance schema)
come first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .._client_encoding import setting_value_safe
from ..analysis import Analysis, StatementFacts
from ._catalogue import RULES, _runtime_limit, full_table_min_rows
from ._checks import _view_bodies
from ._model import _SEVERITY, ALLOW, CheckContext, Decision, Finding

if TYPE_CHECKING:  # the policy model imports the catalogue: names for annotations only
    from ..policy import Policy


def effective_facts(s: StatementFacts, prepared: Mapping[str, StatementFacts],
                    cursors: Mapping[str, StatementFacts]) -> StatementFacts:
    """Resolve EXECUTE/FETCH of objects prepared/declared earlier on this session.

    By the names PostgreSQL's parser resolved (``s.session_refs``, from the parse tree):
    ``EXECUTE "x'""y"`` looks up the statement named ``x'"y``, nothing else.
    """
    if not s.session_refs:
        return s
    kinds, writes, reads = set(s.kinds), set(s.writes), set(s.reads)
    rows = set(s.row_kinds)
    functions, unbounded = set(s.functions), set(s.unbounded_writes)
    refs, ops = set(s.function_refs), set(s.operators)
    resolved: set[int] = set()
    added: list[str] = []
    for index, what, name in s.session_refs:
        inner = (prepared if what == "prepared" else cursors).get(name)
        if inner is None:
            continue
        resolved.add(index)
        kinds |= inner.kinds
        rows |= inner.row_kinds
        writes |= inner.writes
        reads |= inner.reads
        functions |= inner.functions
        refs |= inner.function_refs
        ops |= inner.operators
        unbounded |= inner.unbounded_writes
        added.extend(inner.opaque_reasons)
    if not resolved:
        return s
    remaining = [r for i, r in enumerate(s.opaque_reasons) if i not in resolved] + added
    return attrs.evolve(s, kinds=frozenset(kinds), row_kinds=frozenset(rows),
                        writes=frozenset(writes), reads=frozenset(reads),
                        functions=frozenset(functions), function_refs=frozenset(refs),
                        operators=frozenset(ops),
                        unbounded_writes=frozenset(unbounded), opaque_reasons=tuple(remaining),
                        session_refs=())


def evaluate(policy: Policy, identity: Any, analysis: Analysis,
             statements: Sequence[StatementFacts] | None = None, *,
             read_only: bool = False, catalog: Any = None) -> Decision:
    """Evaluate ``policy`` for ``identity`` on an analyzed string. Pure: no I/O.

    ``catalog`` is the session's catalog snapshot: the allow-lists resolve relation names,
    user-defined function and operator names and view bodies through it.
    """
    rules = policy.rules_for(identity)
    findings: list[Finding] = []
    ctx = CheckContext(identity=identity, analysis=analysis, read_only=read_only,
                       policy=policy, catalog=catalog)
    if analysis.error is not None:
        for cfg in rules:
            if cfg.id == "statement.parse-error":
                findings.append(Finding(
                    rule_id=cfg.id, level=cfg.level,
                    message="PostgreSQL's parser rejects this text, so it is not sent; fix the"
                            " syntax (one statement per call is easiest) and retry"))
                break
        else:
            # Unparseable text is never sent, whatever the policy says: fail closed.
            findings.append(Finding(rule_id="statement.parse-error", level="error",
                                    message="PostgreSQL's parser rejects this text"))
    else:
        for stmt in statements if statements is not None else analysis.statements:
            for cfg in rules:
                rule = RULES[cfg.id]
                if rule.runtime:
                    continue
                reason = rule.check(cfg, ctx, stmt)
                if reason is not None and not any(f.rule_id == cfg.id for f in findings):
                    findings.append(Finding(rule_id=cfg.id, level=cfg.level, message=reason))
    row_limit = _runtime_limit(rules, "statement.affected-row-limit", identity)
    max_rows = _runtime_limit(rules, "statement.max-rows-returned", identity)
    full_table = full_table_min_rows(rules)
    facts = statements if statements is not None else analysis.statements
    encoding = (_client_encoding(facts) or _driver_statement_names(facts)
                or _governance_state(ctx, facts) or _identity_hand_off(facts))
    if encoding is not None:
        # Not a policy rule: no policy, level or observe mode can let it through (the
        # analyzer could no longer read what the server runs next).
        findings = [f for f in findings if f.rule_id != encoding.rule_id]
        return Decision(action="deny", would="deny", findings=(encoding, *findings),
                        affected_row_limit=row_limit, max_rows_returned=max_rows,
                        full_table_min_rows=full_table)
    if not findings:
        if row_limit is None and max_rows is None and full_table is None:
            return ALLOW
        return Decision(action="allow", affected_row_limit=row_limit, max_rows_returned=max_rows,
                        full_table_min_rows=full_table)
    worst = max(_SEVERITY[f.level] for f in findings)
    would = "deny" if worst == 3 else "approval" if worst == 2 else "allow"
    observe = policy.mode == "observe"
    return Decision(action="allow" if observe else would, findings=tuple(findings), would=would,
                    observe=observe, affected_row_limit=row_limit, max_rows_returned=max_rows,
                    full_table_min_rows=full_table)


def _client_encoding(statements: Sequence[StatementFacts]) -> Finding | None:
    """``SET client_encoding`` / ``SET NAMES`` / ``set_config('client_encoding', ...)`` to an
    encoding not on the allow-list (see ``governed_db._client_encoding``), to a value only known at
    run time, or ``set_config`` of a setting named at run time."""
    for s in statements:
        if s.dynamic_settings or any(name == "client_encoding" and not setting_value_safe(value)
                                     for name, value in s.settings):
            return Finding(
                rule_id="session.client-encoding", level="error",
                message="client_encoding may only be set to an encoding in which no multi-byte"
                        " character contains an ASCII byte (UTF8, LATIN1..LATIN10,"
                        " WIN1250..WIN1258, KOI8R/U, ISO_8859_5..8, EUC_*, SQL_ASCII), named by a"
                        " constant"
                        " (not RESET, DEFAULT or a computed value), and set_config needs a"
                        " constant setting name: in other encodings (SJIS, BIG5, GBK, UHC,"
                        " GB18030, JOHAB) the server could read later statements"
                        " differently than governed_db. Use UTF8; do not retry with another"
                        " spelling")
    return None


# psycopg names the statements it prepares itself ``_pg3_<n>`` (psycopg/_preparing.py) and
# later runs a cached text by that name alone.
DRIVER_STATEMENT_PREFIX = "_pg3_"


def _driver_statement_names(statements: Sequence[StatementFacts]) -> Finding | None:
    """SQL ``PREPARE``/``EXECUTE``/``DEALLOCATE`` of a name in psycopg's own namespace.

    Why a hard finding: psycopg maps a text it has seen often to a name it prepared, and then
    sends only that name. Redefined with SQL (``DEALLOCATE _pg3_0; PREPARE _pg3_0 AS DELETE
    ...``), the name would run a statement nobody judged the next time the harmless text is
    executed. Names as PostgreSQL's parser resolved them (quoting, case folding, Unicode
    escapes), compared without case; in DO blocks too (their static SQL is walked). Code the
    analyzer does not see (dynamic SQL, function bodies) is checked after it runs: the
    read-back finds such a name created by SQL and closes the session."""
    for s in statements:
        names = [*s.prepares, *s.executes, *s.deallocates,
                 *(name for _, what, name in s.session_refs if what == "prepared")]
        if any(n.lower().startswith(DRIVER_STATEMENT_PREFIX) for n in names):
            return Finding(
                rule_id="session.driver-prepared-name", level="error",
                message=f"prepared statement names starting with {DRIVER_STATEMENT_PREFIX!r}"
                        " belong to psycopg (it runs cached statements by these names): no"
                        " governed statement may PREPARE, EXECUTE or DEALLOCATE them, whatever"
                        " the policy or mode. Use another name, or let psycopg prepare"
                        " (prepare=True); do not retry")
    return None


GOVERNANCE_SCHEMA = "governed_db"


def _governance_state(ctx: CheckContext, statements: Sequence[StatementFacts]) -> Finding | None:
    """A statement that reads, writes, alters or grants on the ``governed_db`` schema.

    Why a hard finding and not a rule: the schema holds the governance's own state (approval
    requests, their seals and use markers, the audit log). Reading it shows other identities'
    requests; writing it replays or rewrites approvals. No policy, level or observe mode makes
    it data. Judged by the names PostgreSQL resolves (the catalog snapshot: search_path,
    quoting), through the bodies of views and of the SQL/PL/pgSQL functions a statement calls
    (their reads and writes are merged into the facts), and by every schema-qualified name in
    the parse tree (``DROP SCHEMA``, ``GRANT ON SCHEMA``, ``CREATE FUNCTION governed_db.f``).
    """
    for s in statements:
        names = set(s.reads) | set(s.writes)
        for body in _view_bodies(ctx, s):
            names |= body.reads | body.writes
        if any(_in_governance_schema(ctx, n) for n in names) \
                or any(schema == GOVERNANCE_SCHEMA for schema, _ in s.function_refs) \
                or _names_governance_schema(s.tree):
            return Finding(
                rule_id="governance.state", level="error",
                message=f"the {GOVERNANCE_SCHEMA} schema holds governed_db's own state"
                        " (approval requests, audit records): no governed statement may read,"
                        " write or change it, whatever the policy or mode. Use `governed-db"
                        " approvals list/show` or `governed-db audit` instead; do not retry")
    return None


def _in_governance_schema(ctx: CheckContext, name: str) -> bool:
    catalog = ctx.catalog
    schema = name.rpartition(".")[0].rsplit(".", 1)[-1]
    if schema:
        return schema == GOVERNANCE_SCHEMA
    if catalog is None:
        return False
    # Unqualified: a name the schema holds counts whatever the snapshot's search_path says
    # (a SET search_path in the session may not have reloaded the snapshot yet).
    rel = catalog.resolve(name)
    return (rel is not None and rel.schema == GOVERNANCE_SCHEMA) \
        or (GOVERNANCE_SCHEMA, name) in catalog.by_name


def _names_governance_schema(node: Any) -> bool:
    """Whether the parse tree names the schema as an identifier (not in a literal: an
    ``A_Const`` keeps its text under another key, and column references are skipped)."""
    todo = [node]
    while todo:
        cur = todo.pop()
        if isinstance(cur, dict):
            for key, value in cur.items():
                if key in ("A_Const", "ColumnRef"):
                    continue
                if key == "schemaname" and value == GOVERNANCE_SCHEMA:
                    return True
                if key == "String" and isinstance(value, dict) \
                        and value.get("sval") == GOVERNANCE_SCHEMA:
                    return True
                if isinstance(value, (dict, list)):
                    todo.append(value)
        elif isinstance(cur, list):
            todo.extend(cur)
    return False


def rebuild_decision(policy: Policy, findings: Sequence[Finding], base: Decision) -> Decision:
    """A decision from findings (as :func:`evaluate` builds it), keeping runtime limits."""
    if not findings:
        return base
    worst = max(_SEVERITY[f.level] for f in findings)
    would = "deny" if worst == 3 else "approval" if worst == 2 else "allow"
    observe = policy.mode == "observe"
    return Decision(action="allow" if observe else would, findings=tuple(findings), would=would,
                    observe=observe, affected_row_limit=base.affected_row_limit,
                    max_rows_returned=base.max_rows_returned,
                    full_table_min_rows=base.full_table_min_rows)


def _identity_hand_off(statements: Sequence[StatementFacts]) -> Finding | None:
    """``SET`` / ``set_config`` (also inside a called function's body) of a ``governed_db.*``
    setting: the identity hand-off row-level security policies read. The library's own, never
    the caller's: no policy allows it and observe mode does not run it (it would act as
    another identity from then on, unseen: a SET is not read back)."""
    for s in statements:
        names = sorted({name for name, _ in s.settings
                        if name == "governed_db" or name.startswith("governed_db.")})
        if names:
            return Finding(
                rule_id="session.disallow-security-settings", level="error",
                message=f"changing {', '.join(names)} is not allowed: the governed_db.*"
                        " settings carry the acting identity to row-level security policies;"
                        " only the library sets them (connect with the identity instead);"
                        " do not retry")
    return None
