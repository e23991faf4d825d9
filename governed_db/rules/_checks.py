"""The static checks: one function per rule, ``check(config, ctx, stmt)`` -> a reason or None.

Messages are written for a person *and* a model: which rule, what is allowed instead, whether
a rewrite can help. They never contain a value from the statement, its parameters or the policy.
"""

from __future__ import annotations

import fnmatch
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ..analysis import StatementFacts, analyze, is_dangerous_function
from ..analysis._functions import (
    AGENT_SETTINGS,
    BUILTIN_OPERATORS,
    PROTECTED_SETTINGS,
    READ_FUNCTIONS,
    catalog_relation_allowed,
    duration_ms,
    setting_matches,
)
from ._model import CheckContext

if TYPE_CHECKING:  # the policy model imports the catalogue: names for annotations only
    from ..policy import RuleConfig


_CATALOG_SCHEMAS = ("pg_catalog.", "information_schema.")


def _kinds_list(kinds: Iterable[str]) -> str:
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


# Per catalog: view oid -> facts of its body's statement (False: the body has none).
_ViewMemo = dict[int, "StatementFacts | Literal[False]"]
_view_closures: weakref.WeakKeyDictionary[Any, _ViewMemo] = weakref.WeakKeyDictionary()


def _view_bodies(ctx: CheckContext, s: StatementFacts) -> list[StatementFacts]:
    """Facts of the bodies of every user view the statement reads, transitively.

    Why: a view runs its body for the reader (with the view owner's privileges), so a view
    over ``pg_stats`` or one that calls a function reads and calls on the reader's behalf.
    """
    catalog = ctx.catalog
    if catalog is None:
        return []
    memo: _ViewMemo
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


# Kinds that never change anything: a rule listing only these is not widened by unknown bodies.
_READ_KINDS = frozenset({"SELECT", "SHOW", "EXPLAIN", "FETCH", "VALUES", "TABLE"})


def _ddl(cfg: RuleConfig, ctx: CheckContext, s: StatementFacts) -> str | None:
    if not s.is_ddl or not _tables_match(cfg, s.writes, default=True):
        return None
    return ("schema changes (DDL) and server maintenance (VACUUM FULL, CHECKPOINT, LOAD) are"
            " not run without a person's approval; the request has been recorded, retry the"
            " identical statement once it is approved")


def _require_approval(cfg: RuleConfig, ctx: CheckContext, s: StatementFacts) -> str | None:
    kinds = set(cfg.params.get("kinds", ()))
    if s.effect_unknown and (not kinds or kinds - _READ_KINDS):
        # A body the analysis cannot see (another language, dynamic SQL, a body lexed with
        # other settings) may do whatever this rule asks approval for, on any table.
        return (f"{s.effect_unknown[0]}, so it may do what this rule needs a person's approval"
                " for; retry the identical statement once it is approved")
    # by effect: a MERGE, COPY FROM or INSERT ... ON CONFLICT DO UPDATE counts as each row
    # operation it performs, as well as by its own kind
    if kinds and not (s.policy_kinds | s.row_kinds) & kinds:
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
