"""Guardrails: the rule catalogue and its evaluation into one Decision (no I/O).

Rule ids are public and permanent (Bytebase's dotted vocabulary where it fits). Each rule is a
small object with ``check(config, ctx, stmt)`` returning a reason or None; the policy's rules
are evaluated in order and the most severe level wins (error > approval > warning).

Messages are written for a person *and* a model: which rule, what is allowed instead, whether
a rewrite can help. They never contain a value from the statement, its parameters or the policy.
"""

from __future__ import annotations

import fnmatch
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from ._client_encoding import setting_value_safe
from .analysis import Analysis, StatementFacts, analyze, is_dangerous_function
from .analysis._functions import (
    AGENT_SETTINGS,
    BUILTIN_OPERATORS,
    PROTECTED_SETTINGS,
    READ_FUNCTIONS,
    catalog_relation_allowed,
    duration_ms,
    setting_matches,
)
from .errors import PolicyError
from .policy import Policy, RuleConfig

__all__ = ["Decision", "Finding", "RULES", "Rule", "evaluate", "effective_facts"]

_SEVERITY = {"warning": 1, "approval": 2, "error": 3}
_CATALOG_SCHEMAS = ("pg_catalog.", "information_schema.")


@attrs.frozen(kw_only=True)
class Finding:
    """One rule that matched: its id, level and a value-free explanation."""

    rule_id: str
    level: str
    message: str


@attrs.frozen(kw_only=True)
class Decision:
    """The outcome of evaluating a policy on one string.

    ``action`` is ``allow``, ``deny`` or ``approval``; in observe mode it is always ``allow``
    and ``would`` says what enforcement would have done.
    """

    action: str
    findings: tuple[Finding, ...] = ()
    would: str = "allow"
    observe: bool = False
    affected_row_limit: int | None = None
    max_rows_returned: int | None = None
    full_table_min_rows: int | None = None  # statement.disallow-full-table-write applies

    @property
    def checks_effect(self) -> bool:
        """Whether a runtime effect rule (row limit, full-table write) applies."""
        return self.affected_row_limit is not None or self.full_table_min_rows is not None

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(f.rule_id for f in self.findings)

    @property
    def blocking(self) -> tuple[Finding, ...]:
        level = "error" if self.would == "deny" else "approval"
        return tuple(f for f in self.findings if f.level == level)

    def message(self) -> str:
        findings = self.blocking or self.findings
        return " | ".join(f"denied by policy rule `{f.rule_id}`: {f.message}" if f.level == "error"
                          else f"approval required by policy rule `{f.rule_id}`: {f.message}"
                          for f in findings)


ALLOW = Decision(action="allow")


@attrs.frozen(kw_only=True)
class CheckContext:
    identity: Any
    analysis: Analysis
    read_only: bool
    policy: Any = None
    catalog: Any = None  # the session's catalog snapshot (None: not loaded; fail closed)


@attrs.frozen
class Rule:
    """A catalogue entry: the id, what it checks, and how."""

    id: str
    summary: str
    check: Callable[[RuleConfig, CheckContext, StatementFacts], str | None]
    params: Mapping[str, str] = attrs.field(factory=dict)
    runtime: bool = False

    def validate(self, cfg: RuleConfig, source: str | None) -> None:
        if self.runtime and "max_rows" in self.params and "max_rows" not in cfg.params \
                and "max_rows_by_kind" not in cfg.params:
            raise PolicyError(f"rule {cfg.id} needs max_rows = N (the most rows allowed)",
                              path=source, line=cfg.line)
        for key, value in cfg.params.items():
            if key not in self.params:
                raise PolicyError(f"rule {cfg.id}: unknown parameter {key!r}"
                                  + (f"; it takes {', '.join(sorted(self.params))}"
                                     if self.params else "; it takes none"),
                                  path=source, line=cfg.line)
            kind = self.params[key]
            ok = (isinstance(value, list) and all(isinstance(v, str) for v in value)
                  if kind == "list[str]" else
                  isinstance(value, int) and not isinstance(value, bool) and value >= 0
                  if kind == "int" else isinstance(value, bool) if kind == "bool" else
                  isinstance(value, Mapping) and all(
                      k in ("human", "service", "ai_agent") and isinstance(v, int)
                      and not isinstance(v, bool) and v >= 0 for k, v in value.items())
                  if kind == "dict[kind,int]" else True)
            if not ok:
                raise PolicyError(f"rule {cfg.id}: parameter {key} must be {kind}",
                                  path=source, line=cfg.line)

    def __repr__(self) -> str:
        return f"<Rule {self.id}: {self.summary}>"


def _kinds_list(kinds: Sequence[str]) -> str:
    return ", ".join(sorted(kinds))


def _allowlist(cfg: RuleConfig, ctx: CheckContext, s: StatementFacts) -> str | None:
    allowed = set(cfg.params.get("allow", ()))
    bad = s.policy_kinds - allowed
    if not bad:
        return None
    who = f"{ctx.identity.kind} identities" if cfg.identity_kinds else "this identity"
    return (f"{_kinds_list(bad)} is not allowed for {who}; allowed statement kinds are"
            f" {_kinds_list(allowed)}. Rewriting will not help: ask a person with the"
            " right role to run it")


def _kind_rule(kind: str, advice: str) -> Callable[[RuleConfig, CheckContext, StatementFacts], str | None]:
    def check(cfg: RuleConfig, ctx: CheckContext, s: StatementFacts) -> str | None:
        if kind not in s.kinds or not _tables_match(cfg, s.writes or s.reads, default=True):
            return None
        return advice

    return check


def _tables_match(cfg: RuleConfig, tables: frozenset[str], *, default: bool) -> bool:
    if not cfg.tables:
        return default
    return any(_table_matches(t, cfg.tables) for t in tables)


def _table_matches(table: str, patterns: Sequence[str]) -> bool:
    bare = table.split(".", 1)[1] if table.startswith("public.") else table
    return any(fnmatch.fnmatchcase(bare, p) or fnmatch.fnmatchcase(table, p) for p in patterns)


def _where(cfg: RuleConfig, ctx: CheckContext, s: StatementFacts) -> str | None:
    targets = s.unbounded_writes
    if not targets or not _tables_match(cfg, targets, default=True):
        return None
    return ("UPDATE, DELETE and MERGE must have a WHERE clause that limits the rows touched"
            " (WHERE true, WHERE 1=1 and x = x count as none); add a real condition on the"
            " rows you mean to change")


def _copy_program(cfg: RuleConfig, ctx: CheckContext, s: StatementFacts) -> str | None:
    if s.copy is not None and (s.copy.program or s.copy.server_file):
        return ("COPY to or from a program or a server-side file is not allowed; use"
                " COPY ... FROM STDIN / TO STDOUT through the driver instead")
    return None


def _functions(cfg: RuleConfig, ctx: CheckContext, s: StatementFacts) -> str | None:
    extra = set(cfg.params.get("functions", ()))
    allowed = set(cfg.params.get("allow", ()))
    if not s.dynamic_settings:
        # set_config('name', ...) with constant names is a SET: the session.* rules judge
        # each name (allow-list for read-only kinds, protected settings for everyone).
        allowed.add("set_config")
    bad = sorted(f for f in s.functions
                 if f not in allowed and (is_dangerous_function(f) or f in extra))
    if not bad:
        return None
    return (f"calling {', '.join(bad)} is not allowed (file or program access, dblink, large"
            " objects, backend control, settings, SQL in strings or sleeps); remove the call,"
            " there is no allowed rewrite that keeps it")


def _scoped(cfg: RuleConfig) -> bool:
    return bool(cfg.identity_kinds or cfg.identity_ids or cfg.roles)


_view_closures: weakref.WeakKeyDictionary[Any, dict[int, Any]] = weakref.WeakKeyDictionary()


def _view_bodies(ctx: CheckContext, s: StatementFacts) -> list[StatementFacts]:
    """Facts of the bodies of every user view the statement reads, transitively.

    Why: a view runs its body for the reader (with the view owner's privileges), so a view
    over ``pg_stats`` or one that calls a function reads and calls on the reader's behalf.
    """
    catalog = ctx.catalog
    if catalog is None:
        return []
    try:
        memo = _view_closures.setdefault(catalog, {})
    except TypeError:
        memo = {}
    out: list[StatementFacts] = []
    seen: set[int] = set()
    todo = list(s.reads)
    while todo and len(seen) < 256:
        rel = catalog.resolve(todo.pop())
        if rel is None or not rel.is_view or rel.viewdef is None or rel.oid in seen:
            continue
        seen.add(rel.oid)
        body = memo.get(rel.oid)
        if body is None:
            a = analyze(rel.viewdef)
            body = memo[rel.oid] = a.statements[0] if a.statements else False
        if body:
            out.append(body)
            todo.extend(body.reads)
    return out


def _function_allowlist(cfg: RuleConfig, ctx: CheckContext, s: StatementFacts) -> str | None:
    # Unscoped (the default), the rule is for read-only identities (session.read_only_kinds);
    # scoped with identity_kinds / identity_ids / roles, for whoever is in scope.
    if not _scoped(cfg) and not ctx.read_only:
        return None
    allow = set(cfg.params.get("allow", ()))
    builtins = READ_FUNCTIONS if cfg.params.get("builtins", True) else frozenset()
    catalog = ctx.catalog
    user_functions = catalog.user_functions if catalog is not None else None
    user_ops = catalog.user_operators if catalog is not None else None
    bad: set[str] = set()
    refs, ops = set(s.function_refs), set(s.operators)
    colnot = set(s.column_notation)
    for body in _view_bodies(ctx, s):
        refs |= body.function_refs
        ops |= body.operators
        colnot |= body.column_notation
    for schema, name in refs:
        folded = name.lower()
        shown = f"{schema}.{name}" if schema else name
        if folded in allow or f"{schema}.{name}".lower() in allow:
            continue
        if (not schema and name in colnot and catalog is not None and name == folded
                and folded not in catalog.user_functions
                and folded not in catalog.builtin_functions):
            # ``ssn(u)``: no function has this name, so the server reads the column u.ssn
            # (or fails); nothing is called.
            continue
        if folded == "set_config" and not s.dynamic_settings:
            continue  # a SET: the settings allow-list judges the constant names
        if schema not in ("", "pg_catalog") or name not in builtins:
            bad.add(shown)
        elif not schema and (user_functions is None or folded in user_functions):
            # A user-defined function of the same name could win overload resolution.
            bad.add(f"{name} (unqualified, and a user-defined function shares the name;"
                    f" write pg_catalog.{name})" if user_functions is not None else name)
    for schema, op in ops:
        if f"operator {op}" in allow:
            continue
        if schema not in ("", "pg_catalog") or op not in BUILTIN_OPERATORS:
            bad.add(f"operator {schema + '.' if schema else ''}{op}")
        elif not schema and (user_ops is None or op in user_ops):
            bad.add(f"operator {op} (a user-defined operator shares the symbol)")
    if s.dynamic_settings:
        bad.add("set_config with a non-constant setting name")
    if not bad:
        return None
    return (f"calling {', '.join(sorted(bad))} is not allowed for this identity: read-only"
            " identities may call built-in pure functions (string, math, date/time, JSON,"
            " arrays, aggregates, window functions, casts and catalog introspection) and"
            " those the policy's function.allowlist rule names; user-defined, locking,"
            " writing, sequence, notify, file, network and SQL-in-a-string functions are"
            " refused. Rewrite the query with built-in functions, or ask for the function"
            " to be allowed")


_READ_ONLY_SETTINGS = frozenset({"transaction_read_only", "default_transaction_read_only"})


def _stricter(name: str, value: str | None) -> bool:
    """``BEGIN READ ONLY`` / ``SET transaction_read_only = on``: only ever stricter."""
    return name in _READ_ONLY_SETTINGS and str(value).strip("'").lower() in (
        "1", "on", "true", "t", "yes", "y")


def _settings_allowlist(cfg: RuleConfig, ctx: CheckContext, s: StatementFacts) -> str | None:
    if not _scoped(cfg) and not ctx.read_only:
        return None
    allowed = set(AGENT_SETTINGS) | {a.lower() for a in cfg.params.get("allow", ())}
    bad = sorted({"RESET ALL / DISCARD ALL" if name == "*" else name
                  for name, value in s.settings
                  if name == "*" or not (setting_matches(name, allowed)
                                         or _stricter(name, value))})
    if s.read_write_requested:
        bad.append("READ WRITE transaction mode")
    if s.dynamic_settings:
        bad.append("set_config with a non-constant setting name")
    if not bad:
        return None
    return (f"changing {', '.join(bad)} is not allowed for this identity; settings it may"
            f" change: {', '.join(sorted(allowed))}")


def _timeout_ok(ctx: CheckContext, value: str | None) -> bool:
    """statement_timeout may be lowered below the policy's value for the kind, never raised,
    switched off (0) or RESET to the server's default."""
    policy = ctx.policy
    limit = (policy.session.statement_timeout.get(ctx.identity.kind)
             if policy is not None else None)
    if limit is None:
        return value is not None  # nothing configured to protect; RESET stays refused
    wanted, bound = duration_ms(value), duration_ms(limit)
    return wanted is not None and bound is not None and 0 < wanted <= bound


def _settings(cfg: RuleConfig, ctx: CheckContext, s: StatementFacts) -> str | None:
    protected = PROTECTED_SETTINGS | {x.lower() for x in cfg.params.get("settings", ())}
    allowed = {a.lower() for a in cfg.params.get("allow", ())}
    bad = set()
    for name, value in s.settings:
        if name == "*":
            bad.add("RESET ALL / DISCARD ALL")
        elif name.startswith("governed_db.") or name == "governed_db":
            # The library's own (the identity row-level security reads): never the
            # caller's to change, whatever the policy allows.
            bad.add(name)
        elif setting_matches(name, allowed) or _stricter(name, value):
            continue
        elif name == "statement_timeout":
            if not _timeout_ok(ctx, value):
                bad.add("statement_timeout (it may only be lowered below the policy's)")
        elif setting_matches(name, protected):
            bad.add(name)
    out = sorted(bad)
    if ctx.read_only and s.read_write_requested:
        out.append("READ WRITE transaction mode")
    if s.dynamic_settings:
        out.append("set_config with a non-constant setting name")
    if not out:
        return None
    return (f"changing {', '.join(out)} is not allowed: these settings decide how statements"
            " are lexed, which tables names resolve to, which privileges and limits apply"
            " and what is logged; the policy must allow them explicitly; do not retry")


_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


def _system_relation(ctx: CheckContext, name: str) -> tuple[str, str] | None:
    """(schema, relation) when ``name`` resolves to a system relation, else None.

    By the catalog snapshot (search_path, case and quoting as the server resolves them);
    without one, an unqualified ``pg_*`` name counts as pg_catalog's (pg_catalog is searched
    first unless listed later; fail closed).
    """
    catalog = ctx.catalog
    rel = catalog.resolve(name) if catalog is not None else None
    if rel is not None:
        schema, relname = rel.schema, rel.name
    elif "." in name:
        schema, _, relname = name.rpartition(".")
        schema = schema.rsplit(".", 1)[-1]
    elif name.startswith("pg_"):
        schema, relname = "pg_catalog", name
    else:
        return None
    if schema in _SYSTEM_SCHEMAS or schema.startswith(("pg_temp", "pg_toast")):
        return schema, relname
    return None


def _catalog_allowlist(cfg: RuleConfig, ctx: CheckContext, s: StatementFacts) -> str | None:
    if not _scoped(cfg) and not ctx.read_only:
        return None
    allow = {a.lower() for a in cfg.params.get("allow", ())}
    reads = set(s.reads)
    for body in _view_bodies(ctx, s):
        reads |= body.reads
    bad = set()
    for name in reads:
        found = _system_relation(ctx, name)
        if found is None:
            continue
        schema, rel = found
        if schema.startswith("pg_temp"):
            continue  # the session's own temporary tables
        if catalog_relation_allowed(schema, rel) or rel in allow or f"{schema}.{rel}" in allow:
            continue
        bad.add(f"{schema}.{rel}")
    if not bad:
        return None
    return (f"reading {', '.join(sorted(bad))} is not allowed for this identity: catalog"
            " reflection (information_schema, pg_class, pg_attribute, pg_namespace, pg_type,"
            " constraints, indexes, views, pg_settings...) is; statistics with sample values,"
            " other sessions' activity and query text, password hashes and large objects are"
            " not. Use information_schema or the reflection catalogs instead")


def _catalog_write(cfg: RuleConfig, ctx: CheckContext, s: StatementFacts) -> str | None:
    bad = set()
    for name in s.writes:
        found = _system_relation(ctx, name)
        if found is not None and not found[0].startswith("pg_temp"):
            bad.add(f"{found[0]}.{found[1]}")
    if not bad:
        return None
    return (f"writing {', '.join(sorted(bad))} is not allowed: system catalogs (pg_settings,"
            " pg_class, ...) change server state past every other rule; use the SQL command"
            " meant for the change (SET, ALTER ...) instead")


def _ddl(cfg: RuleConfig, ctx: CheckContext, s: StatementFacts) -> str | None:
    if not s.is_ddl or not _tables_match(cfg, s.writes, default=True):
        return None
    return ("schema changes (DDL) and server maintenance (VACUUM FULL, CHECKPOINT, LOAD) are"
            " not run without a person's approval; the request has been recorded, retry the"
            " identical statement once it is approved")


def _require_approval(cfg: RuleConfig, ctx: CheckContext, s: StatementFacts) -> str | None:
    kinds = set(cfg.params.get("kinds", ()))
    if kinds and not s.policy_kinds & kinds:
        return None
    if not _tables_match(cfg, s.writes | s.reads, default=True):
        return None
    return ("this statement needs a person's approval; retry the identical statement once it"
            " is approved")


def _deny_tables(cfg: RuleConfig, ctx: CheckContext, s: StatementFacts) -> str | None:
    tables = set(cfg.params.get("tables", ())) | set(cfg.tables)
    bad = sorted(t for t in s.reads | s.writes if _table_matches(t, tuple(tables)))
    if not bad:
        return None
    return (f"access to {', '.join(bad)} is not allowed for this identity; query other"
            " tables instead")


def _allow_tables(cfg: RuleConfig, ctx: CheckContext, s: StatementFacts) -> str | None:
    tables = tuple(cfg.params.get("tables", ())) + tuple(cfg.tables)
    bad = sorted(t for t in s.reads | s.writes
                 if not t.startswith(_CATALOG_SCHEMAS) and not t.startswith("pg_")
                 and not _table_matches(t, tables))
    if not bad:
        return None
    return (f"{', '.join(bad)} is not on this identity's table allow-list; allowed tables are"
            f" {', '.join(tables)}")


def _multi(cfg: RuleConfig, ctx: CheckContext, s: StatementFacts) -> str | None:
    if len(ctx.analysis.statements) > 1:
        return ("several statements in one string are not allowed; send them one at a time")
    return None


def _parse_error(cfg: RuleConfig, ctx: CheckContext, s: StatementFacts) -> str | None:
    return None  # evaluated once per string in evaluate(); listed for the catalogue


def _opaque(cfg: RuleConfig, ctx: CheckContext, s: StatementFacts) -> str | None:
    if not s.opaque_reasons:
        if ctx.read_only and s.effect_unknown:
            # Read-only identities: a body we cannot see may write, set or drop anything.
            # (Other identities run it under the exact blast radius instead.)
            return (f"{s.effect_unknown[0]}, so what it does cannot be checked and a read-only"
                    " identity may not call it; query the tables directly")
        return None
    return (f"{s.opaque_reasons[0]}, so its effect cannot be checked; write the statements"
            " it would run directly")


def _never(cfg: RuleConfig, ctx: CheckContext, s: StatementFacts) -> str | None:
    return None  # runtime rules: enforced at execution, not by static analysis


RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        Rule("statement.parse-error", "text PostgreSQL's parser rejects never reaches the server",
             _parse_error),
        Rule("statement.opaque", "DO, CALL, EXECUTE/FETCH of unseen objects and unknown"
             " statement types are denied (effect unknowable)", _opaque),
        Rule("statement.allowlist", "only the listed statement kinds may run (read-only agents)",
             _allowlist, {"allow": "list[str]"}),
        Rule("statement.disallow-drop", "no DROP", _kind_rule(
            "DROP", "DROP is not allowed; nothing was dropped. Do not retry: ask a person to"
            " run it if it is really intended")),
        Rule("statement.disallow-truncate", "no TRUNCATE", _kind_rule(
            "TRUNCATE", "TRUNCATE is not allowed; use DELETE with a WHERE clause for the rows"
            " you mean")),
        Rule("statement.where.require.update-delete", "UPDATE/DELETE/MERGE need an effective"
             " WHERE (tautologies count as none)", _where),
        Rule("statement.disallow-copy-program", "no COPY to/from programs or server files",
             _copy_program),
        Rule("statement.disallow-do", "no anonymous DO blocks", _kind_rule(
            "DO", "DO blocks are not allowed; their effect cannot be checked before they"
            " run. Send the statements directly")),
        Rule("statement.disallow-ddl", "schema changes (CREATE/ALTER/DROP/GRANT/COMMENT...)"
             " and server maintenance (VACUUM FULL, CHECKPOINT, LOAD)",
             _ddl),
        Rule("statement.disallow-multi-statement", "one statement per string", _multi),
        Rule("statement.require-approval", "statements of these kinds/tables need approval",
             _require_approval, {"kinds": "list[str]"}),
        Rule("statement.affected-row-limit", "DML touching more rows than max_rows (or the"
             " identity kind's max_rows_by_kind) is rolled back (exact count, savepoint)",
             _never, {"max_rows": "int", "max_rows_by_kind": "dict[kind,int]"}, runtime=True),
        Rule("statement.disallow-full-table-write", "a statement that updates or deletes every"
             " live row of a table (of at least min_rows rows) is rolled back (exact count)",
             _never, {"min_rows": "int"}, runtime=True),
        Rule("statement.max-rows-returned", "results larger than max_rows are refused",
             _never, {"max_rows": "int"}, runtime=True),
        Rule("function.deny", "dangerous functions (files, programs, dblink, large objects,"
             " backend control, set_config, query_to_xml, sleeps...)", _functions,
             {"functions": "list[str]", "allow": "list[str]"}),
        Rule("function.allowlist", "read-only identities (or the rule's scope) call only"
             " built-in pure functions and those listed in allow (user-defined functions and"
             " operators, locks, sequences, notify, files, SQL in strings are refused)",
             _function_allowlist, {"allow": "list[str]", "builtins": "bool"}),
        Rule("session.disallow-security-settings", "no SET/RESET/set_config of search_path,"
             " role, standard_conforming_strings, read-only modes, log_*/track_*, raising"
             " statement_timeout and other security settings unless listed in allow",
             _settings, {"settings": "list[str]", "allow": "list[str]"}),
        Rule("session.settings-allowlist", "read-only identities (or the rule's scope) SET"
             " only harmless settings (TimeZone, DateStyle, ...) and those listed in allow;"
             " no READ WRITE transactions", _settings_allowlist, {"allow": "list[str]"}),
        Rule("catalog.allowlist", "read-only identities (or the rule's scope) read only"
             " reflection catalogs (no pg_statistic/pg_stats, pg_stat_activity, pg_authid,"
             " pg_largeobject...), also through views", _catalog_allowlist,
             {"allow": "list[str]"}),
        Rule("catalog.disallow-write", "no INSERT/UPDATE/DELETE/DDL on system catalogs"
             " (UPDATE pg_settings, ...)", _catalog_write),
        Rule("table.deny-list", "these tables may not be read or written", _deny_tables,
             {"tables": "list[str]"}),
        Rule("table.allow-list", "only these tables may be read or written", _allow_tables,
             {"tables": "list[str]"}),
        Rule("column.disallow-predicate-on-masked", "no WHERE/JOIN/HAVING/GROUP BY/ORDER BY"
             " on columns the identity sees masked (inference by probing)", _never,
             runtime=True),
        Rule("notify.disallow-sensitive-payload", "no pg_notify channel/payload computed from"
             " a statement that may read masked columns (listeners are not governed)", _never,
             runtime=True),
    )
}


def effective_facts(s: StatementFacts, prepared: Mapping[str, StatementFacts],
                    cursors: Mapping[str, StatementFacts]) -> StatementFacts:
    """Resolve EXECUTE/FETCH of objects prepared/declared earlier on this session.

    By the names PostgreSQL's parser resolved (``s.session_refs``, from the parse tree):
    ``EXECUTE "x'""y"`` looks up the statement named ``x'"y``, nothing else.
    """
    if not s.session_refs:
        return s
    kinds, writes, reads = set(s.kinds), set(s.writes), set(s.reads)
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
    return attrs.evolve(s, kinds=frozenset(kinds), writes=frozenset(writes),
                        reads=frozenset(reads), functions=frozenset(functions),
                        function_refs=frozenset(refs), operators=frozenset(ops),
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
    encoding = (_client_encoding(facts) or _governance_state(ctx, facts)
                or _identity_hand_off(facts))
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
                        " WIN1250..WIN1258, KOI8R/U, ISO_8859_5..8, EUC_*), named by a constant"
                        " (not RESET, DEFAULT or a computed value), and set_config needs a"
                        " constant setting name: in other encodings (SJIS, BIG5, GBK, UHC,"
                        " GB18030, JOHAB, SQL_ASCII) the server could read later statements"
                        " differently than governed_db. Use UTF8; do not retry with another"
                        " spelling")
    return None


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


def rule_limit(cfg: RuleConfig, identity: Any) -> int | None:
    """A row-limit rule's limit for ``identity``: ``max_rows`` when set (it is the rule's own
    number for everyone it applies to), else the kind's ``max_rows_by_kind`` entry."""
    if "max_rows" in cfg.params:
        return int(cfg.params["max_rows"])
    by_kind = cfg.params.get("max_rows_by_kind") or {}
    value = by_kind.get(getattr(identity, "kind", None))
    return None if value is None else int(value)


def _runtime_limit(rules: Sequence[RuleConfig], rule_id: str, identity: Any) -> int | None:
    limits = [v for r in rules if r.id == rule_id
              for v in (rule_limit(r, identity),) if v is not None]
    return min(limits) if limits else None


def full_table_min_rows(rules: Sequence[RuleConfig]) -> int | None:
    """The smallest table ``statement.disallow-full-table-write`` protects (None: off)."""
    values = [int(r.params.get("min_rows", 2)) for r in rules
              if r.id == "statement.disallow-full-table-write"]
    return min(values) if values else None


def catalogue_markdown() -> str:
    """The rule catalogue as a Markdown table (the README's reference is generated from it)."""
    lines = ["| rule id | checks | parameters |", "|---|---|---|"]
    for rule in sorted(RULES.values(), key=lambda r: r.id):
        params = ", ".join(f"`{k}` ({v})" for k, v in rule.params.items()) or "—"
        lines.append(f"| `{rule.id}` | {rule.summary} | {params} |")
    return "\n".join(lines)
