"""``governed-db policy check``: every mistake in a policy file at once, each where it is.

Loading a policy (:func:`~governed_db.policy.load_policy`) stops at the first error, which is
right at connect time. A person editing the file wants them all, each at the line and column
of the offending key or list element (``tomllib`` gives no positions, so
:mod:`._positions` indexes the text), with the name they probably meant:

- errors: anything the loader rejects, plus unknown statement kinds, misspelt PostgreSQL
  function and setting names, unknown keys in every section and rule entry; with a database
  (``dsn=``), tables, columns and functions the catalog does not have;
- warnings: what loads but does not do what it says — rules that can never fire (a kind
  another rule always denies, a limit a stricter rule already caps, ``tables`` on a rule that
  ignores tables, an allow-list that only applies to read-only kinds when there are none) and
  overrides that quietly narrow a built-in rule (``identity_kinds = ["service"]`` on the
  built-in row limit removes it for agents and people).

The loader is always run last as well: whatever it rejects is an error here too, so a policy
``policy check`` passes always loads.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import attrs

from .._tokens import check_identity_section
from ..analysis import analyze
from ..errors import PolicyError
from ..identity import Identity
from ..mcp._settings import check_mcp_section
from ..rules import RULES, evaluate, rule_limit
from . import (
    _INTERVAL,
    APPROVALS_KEYS,
    AUDIT_KEYS,
    BUILTIN,
    EXTENDS,
    IDENTITY_KINDS,
    KIND_PARAMS,
    LEVELS,
    MASK_COLUMN_KEYS,
    MASKING_KEYS,
    MODES,
    SESSION_KEYS,
    STRATEGIES,
    TOP_KEYS,
    UNMASK_KEYS,
    Policy,
    PolicyWarning,
    RuleConfig,
    _relative_to_policy,
    default_policy,
    parse_policy,
)
from . import _check_approvals as _load_check_approvals
from . import _check_audit as _load_check_audit
from ._names import builtin_functions, builtin_settings, did_you_mean, statement_kinds, suggest
from ._positions import Path as KeyPath
from ._positions import Positions, index_positions

__all__ = ["PolicyCheck", "Problem", "check_policy", "check_policy_text"]

_RULE_KEYS = ("id", "level", "identity_kinds", "identity_ids", "roles", "tables")
# Rules whose check looks at the statement's tables, so that ``tables = [...]`` narrows them.
_TABLE_AWARE = frozenset({
    "statement.disallow-drop", "statement.disallow-truncate",
    "statement.where.require.update-delete", "statement.disallow-ddl",
    "statement.require-approval", "table.deny-list", "table.allow-list",
    "statement.affected-row-limit", "statement.disallow-full-table-write",
})
# Unscoped, these apply to read-only identities only (session.read_only_kinds).
_READ_ONLY_RULES = frozenset({"function.allowlist", "session.settings-allowlist",
                              "catalog.allowlist"})
_FUNCTION_PARAMS = {("function.deny", "functions"), ("function.deny", "allow"),
                    ("function.allowlist", "allow")}
_SETTING_PARAMS = {("session.disallow-security-settings", "settings"),
                   ("session.disallow-security-settings", "allow"),
                   ("session.settings-allowlist", "allow")}
_LIMIT_RULES = ("statement.affected-row-limit", "statement.max-rows-returned")
_SEVERITY = {"warning": 1, "approval": 2, "error": 3}


@attrs.frozen(kw_only=True)
class Problem:
    """One finding of ``policy check``.

    Attributes:
        level: ``"error"`` (the policy is wrong) or ``"warning"`` (it loads, but a rule
            cannot do what it says, or narrows a built-in protection).
        message: what is wrong and what to write instead.
        line / column: 1-based position of the offending key or list element (None when the
            text has no such key, e.g. a missing one).
        key: the key's path, ``rules[3].kinds[1]``.
    """

    level: str
    message: str
    line: int | None = None
    column: int | None = None
    key: str = ""

    def location(self, source: str) -> str:
        """``FILE:LINE:COLUMN`` (as much of it as is known)."""
        if self.line is None:
            return source
        return f"{source}:{self.line}" + (f":{self.column}" if self.column else "")

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "message": self.message, "line": self.line,
                "column": self.column, "key": self.key}


@attrs.frozen(kw_only=True)
class PolicyCheck:
    """The outcome of :func:`check_policy`.

    Attributes:
        source: the file checked.
        errors / warnings: every finding, in file order.
        policy: the loaded policy (None when it has errors).
        allows: per identity kind, what the policy lets it do (see :func:`explain`).
    """

    source: str
    errors: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()
    policy: Policy | None = None
    allows: tuple[Mapping[str, Any], ...] = ()
    catalog_checked: bool = False

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        p = self.policy
        return {
            "file": self.source, "ok": self.ok, "catalog_checked": self.catalog_checked,
            "errors": [e.to_dict() for e in self.errors],
            "warnings": [w.to_dict() for w in self.warnings],
            "policy": None if p is None else {
                "name": p.name, "mode": p.mode, "extends": p.extends, "version": p.version_tag,
                "rules": len(p.rules), "masking_rules": len(p.masking.columns)},
            "allows": [dict(a) for a in self.allows],
        }


def _key_text(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Collector:
    def __init__(self, positions: Positions) -> None:
        self.pos = positions
        self.problems: list[Problem] = []

    def add(self, level: str, path: KeyPath, message: str) -> None:
        at = self.pos.nearest(path)
        problem = Problem(level=level, message=message, line=at[0] if at else None,
                          column=at[1] if at else None, key=_key_text(path))
        if problem not in self.problems:
            self.problems.append(problem)

    def error(self, path: KeyPath, message: str) -> None:
        self.add("error", path, message)

    def warning(self, path: KeyPath, message: str) -> None:
        self.add("warning", path, message)

    def call(self, path: KeyPath, fn: Any, *args: Any) -> None:
        """Run one of the loader's validators on a part of the document; its PolicyError
        becomes an error at ``path``."""
        try:
            fn(*args)
        except PolicyError as exc:
            self.error(path, exc.detail)


# ---------------------------------------------------------------------------------------------
# structure: keys, types and values of every section


def _strings(c: _Collector, path: KeyPath, value: Any, what: str) -> list[tuple[KeyPath, str]]:
    """The strings of a string-or-list value with their paths (an error when not strings)."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [((*path, i), v) for i, v in enumerate(value)]
    c.error(path, f"{what} must be a string or a list of strings")
    return []


def _unknown_keys(c: _Collector, path: KeyPath, raw: Mapping[str, Any], known: Iterable[str],
                  section: str) -> None:
    known = sorted(known)
    for key in raw:
        if key not in known:
            c.error((*path, key), f"[{section}]: unknown key {key!r}{did_you_mean(key, known)}"
                                  f" (keys: {', '.join(known)})")


def _kinds(c: _Collector, path: KeyPath, value: Any, what: str) -> None:
    for p, kind in _strings(c, path, value, what):
        if kind not in IDENTITY_KINDS:
            c.error(p, f"{what}: unknown identity kind {kind!r}"
                       f"{did_you_mean(kind, IDENTITY_KINDS)} (kinds: {', '.join(IDENTITY_KINDS)})")


def _check_top(c: _Collector, data: Mapping[str, Any]) -> None:
    for key in data:
        if key not in TOP_KEYS:
            c.error((key,), f"unknown top-level key {key!r}{did_you_mean(key, TOP_KEYS)}"
                            f" (keys: {', '.join(sorted(TOP_KEYS))})")
    if data.get("version", 1) != 1:
        c.error(("version",), f"unsupported policy version {data['version']!r} (this release"
                              " reads 1)")
    if "extends" in data and data["extends"] not in EXTENDS:
        c.error(("extends",), 'extends must be "default" (layer on the built-in profile) or'
                              f' "none" (start empty), not {data["extends"]!r}')
    if "mode" in data and data["mode"] not in MODES:
        c.error(("mode",), f"mode must be one of {', '.join(MODES)}, not {data['mode']!r}"
                           f"{did_you_mean(str(data['mode']), MODES)}")
    for key in ("masking", "session", "audit", "approvals", "mcp", "identity"):
        if key in data and not isinstance(data[key], Mapping):
            c.error((key,), f"[{key}] must be a table")
    if "rules" in data and not (isinstance(data["rules"], list)
                                and all(isinstance(r, Mapping) for r in data["rules"])):
        c.error(("rules",), "rules must be an array of tables ([[rules]])")


def _check_session(c: _Collector, raw: Mapping[str, Any]) -> None:
    _unknown_keys(c, ("session",), raw, SESSION_KEYS, "session")
    if "read_only_kinds" in raw:
        _kinds(c, ("session", "read_only_kinds"), raw["read_only_kinds"],
               "session.read_only_kinds")
    timeout = raw.get("statement_timeout", {})
    if not isinstance(timeout, Mapping):
        c.error(("session", "statement_timeout"),
                'session.statement_timeout must be a table of kind = "30s"')
    else:
        for kind, value in timeout.items():
            path = ("session", "statement_timeout", kind)
            if kind not in IDENTITY_KINDS:
                c.error(path, f"session.statement_timeout: unknown identity kind {kind!r}"
                              f"{did_you_mean(kind, IDENTITY_KINDS)}")
            elif not _INTERVAL.match(str(value)):
                c.error(path, f"session.statement_timeout: {kind} = {value!r} must be a"
                              ' duration such as "30s" or "500ms"')
    if "search_path" in raw:
        schemas = _strings(c, ("session", "search_path"), raw["search_path"], "search_path")
        for p, schema in schemas:
            if not schema:
                c.error(p, 'session.search_path must list schema names, e.g. ["app", "public"]')


def _check_masking(c: _Collector, raw: Mapping[str, Any]) -> None:
    _unknown_keys(c, ("masking",), raw, MASKING_KEYS, "masking")
    for key in ("detect_names", "detect_values", "server_side"):
        if key in raw and not isinstance(raw[key], bool):
            c.error(("masking", key), f"[masking] {key} must be true or false")
    if "detect_in_text" in raw:
        _kinds(c, ("masking", "detect_in_text"), raw["detect_in_text"],
               "masking.detect_in_text")
    if "not_sensitive" in raw:
        _strings(c, ("masking", "not_sensitive"), raw["not_sensitive"], "not_sensitive")
    for section, keys, default in (("columns", MASK_COLUMN_KEYS, "redact"),
                                   ("unmask", UNMASK_KEYS, "none")):
        entries = raw.get(section, [])
        if not isinstance(entries, list):
            c.error(("masking", section), f"masking.{section} must be an array of tables"
                                          f" ([[masking.{section}]])")
            continue
        for i, item in enumerate(entries):
            path: KeyPath = ("masking", section, i)
            if not isinstance(item, Mapping):
                c.error(path, f"each [[masking.{section}]] entry must be a table")
                continue
            _unknown_keys(c, path, item, keys, f"[masking.{section}]")
            if "columns" not in item:
                c.error(path, f'[[masking.{section}]] needs columns = ["table.column", ...]')
            else:
                _strings(c, (*path, "columns"), item["columns"], "columns")
            strategy = item.get("strategy", default)
            if strategy not in STRATEGIES:
                c.error((*path, "strategy"), f"unknown masking strategy {strategy!r}"
                                             f"{did_you_mean(str(strategy), STRATEGIES)} (use one"
                                             f" of {', '.join(STRATEGIES)})")
            if section == "unmask":
                for key in ("roles", "identity_ids"):
                    if key in item:
                        _strings(c, (*path, key), item[key], key)
                if not item.get("roles") and not item.get("identity_ids"):
                    c.error(path, "[[masking.unmask]] must name roles or identity_ids")


def _check_audit(c: _Collector, raw: Mapping[str, Any], source: str | None) -> None:
    _unknown_keys(c, ("audit",), raw, AUDIT_KEYS, "audit")
    for key, value in raw.items():
        if key in AUDIT_KEYS:
            c.call(("audit", key), _load_check_audit, {key: value}, source, "")
    if "signing_key" in raw and not isinstance(raw["signing_key"], str):
        c.error(("audit", "signing_key"), "[audit] signing_key must be the path of a key file"
                                          " (made by `governed-db keygen --out DIR`)")
    key_path = _relative_to_policy(raw, source, ("signing_key",)).get("signing_key")
    if isinstance(key_path, str) and key_path and not Path(key_path).expanduser().exists():
        c.error(("audit", "signing_key"),
                f"[audit] signing_key {key_path} does not exist (relative paths are relative to the"
                " policy file); create it with `governed-db keygen --out DIR`")


def _check_approvals(c: _Collector, raw: Mapping[str, Any], source: str | None) -> None:
    _unknown_keys(c, ("approvals",), raw, APPROVALS_KEYS, "approvals")
    for key, value in raw.items():
        if key == "notify" and isinstance(value, list):
            for i, entry in enumerate(value):
                c.call(("approvals", "notify", i), _load_check_approvals, {"notify": [entry]}, source, "")
        elif key in APPROVALS_KEYS:
            c.call(("approvals", key), _load_check_approvals, {key: value}, source, "")


def _check_mcp(c: _Collector, raw: Mapping[str, Any], source: str | None) -> None:
    for key, value in raw.items():
        if key == "tokens" and isinstance(value, list):
            for i, entry in enumerate(value):
                c.call(("mcp", "tokens", i), check_mcp_section, {"tokens": [entry]}, source, "")
        elif key == "identity":
            c.call(("mcp", key), check_mcp_section,
                   {k: raw[k] for k in ("identity", "roles", "purpose", "model", "on_behalf_of")
                    if k in raw}, source, "")
        else:
            c.call(("mcp", key), check_mcp_section, {key: value}, source, "")


def _check_identity(c: _Collector, raw: Mapping[str, Any], source: str | None) -> None:
    for key, value in raw.items():
        c.call(("identity", key), check_identity_section, {key: value}, source,
               lambda _key: None)
    # Verified approvers (governed_db.approvals.requires_verified_approvers) need a way to
    # verify a token and, with approver_roles, roles from it: otherwise every decision fails.
    roles = raw.get("approver_roles")
    humans = isinstance(raw.get("require_verified"), list) and "human" in raw["require_verified"]
    oidc = raw.get("oidc") if isinstance(raw.get("oidc"), Mapping) else None
    if (roles or humans) and oidc is None:
        c.warning(("identity", "approver_roles" if roles else "require_verified"),
                  "approvals need the approver's verified token here, but there is no"
                  " [identity.oidc] to verify it with: every approve/deny will be refused;"
                  " add [identity.oidc]")
    elif roles and oidc is not None and not oidc.get("roles_claim"):
        c.warning(("identity", "approver_roles"),
                  "approver_roles are read from the approver's token, but [identity.oidc] sets"
                  " no roles_claim: no approver can hold one and every approve/deny will be"
                  " refused; set roles_claim (e.g. \"roles\" or \"groups\")")


def _check_rules(c: _Collector, data: Mapping[str, Any], builtin_ids: frozenset[str]) -> None:
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        return
    seen: set[str] = set()
    for i, raw in enumerate(raw_rules):
        path: KeyPath = ("rules", i)
        if not isinstance(raw, Mapping):
            continue
        if "id" not in raw:
            c.error(path, "every [[rules]] entry needs an id (`governed-db policy rules` lists"
                          " them)")
            continue
        rule_id = str(raw["id"])
        rule = RULES.get(rule_id)
        if rule is None:
            c.error((*path, "id"), f"unknown rule id {rule_id!r}{did_you_mean(rule_id, RULES)}"
                                   " (`governed-db policy rules` lists them)")
            continue
        overrides = rule_id in builtin_ids and rule_id not in seen
        seen.add(rule_id)
        level = raw.get("level", "error")
        if level not in LEVELS:
            c.error((*path, "level"), f"rule {rule_id}: level must be one of"
                                      f" {', '.join(LEVELS)}, not {level!r}"
                                      f"{did_you_mean(str(level), LEVELS)}")
        if "identity_kinds" in raw:
            _kinds(c, (*path, "identity_kinds"), raw["identity_kinds"],
                   f"rule {rule_id}: identity_kinds")
        for key in ("identity_ids", "roles", "tables"):
            if key in raw:
                _strings(c, (*path, key), raw[key], f"rule {rule_id}: {key}")
        for key, value in raw.items():
            if key in _RULE_KEYS:
                continue
            if key not in rule.params:
                takes = sorted(rule.params)
                hint = did_you_mean(key, [*takes, *_RULE_KEYS])
                c.error((*path, key), f"rule {rule_id}: unknown parameter {key!r}{hint}"
                                      + (f" (it takes {', '.join(takes)})" if takes
                                         else " (it takes none)"))
                continue
            c.call((*path, key), rule.validate, RuleConfig(id=rule_id, params={key: value}),
                   None)
            if isinstance(value, list):
                _check_names(c, (*path, key), rule_id, key, value)
        if rule.runtime and "max_rows" in rule.params and not overrides \
                and "max_rows" not in raw and "max_rows_by_kind" not in raw:
            c.error(path, f"rule {rule_id} needs max_rows = N (the most rows allowed)")


def _check_names(c: _Collector, path: KeyPath, rule_id: str, key: str,
                 values: Sequence[Any]) -> None:
    if KIND_PARAMS.get(rule_id) == key:
        known = statement_kinds()
        for i, kind in enumerate(values):
            if isinstance(kind, str) and kind not in known:
                hint = did_you_mean(kind, known) or f" (kinds: {', '.join(sorted(known))})"
                c.error((*path, i), f"rule {rule_id}: {key}: unknown statement kind"
                                    f" {kind!r}{hint}")
    if (rule_id, key) in _SETTING_PARAMS:
        settings = builtin_settings()
        for i, name in enumerate(values):
            if not isinstance(name, str):
                continue
            folded = name.lower()
            if "." in folded:
                continue  # an extension's or the application's own setting (prefix.name)
            if folded.endswith("*"):
                if not any(s.startswith(folded[:-1]) for s in settings):
                    c.error((*path, i), f"rule {rule_id}: {key}: {name!r} matches no"
                                        " PostgreSQL setting")
            elif folded not in settings:
                c.error((*path, i), f"rule {rule_id}: {key}: unknown setting {name!r}"
                                    f"{did_you_mean(folded, settings)}")


# ---------------------------------------------------------------------------------------------
# functions and catalog names (the catalog is optional: without it, only built-ins are known)


@attrs.frozen(kw_only=True)
class _Catalog:
    tables: frozenset[str]  # "schema.table"
    columns: frozenset[tuple[str, str, str]]  # (schema, table, column)
    functions: frozenset[str]  # lower-case names, every schema

    @classmethod
    def load(cls, dsn: str) -> _Catalog:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET default_transaction_read_only = on")
            user_ns = ("n.nspname NOT IN ('pg_catalog', 'information_schema')"
                       " AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'")
            tables = {f"{s}.{t}" for s, t in conn.execute(
                "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c"
                " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
                f" WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {user_ns}")}
            columns = {(s, t, a) for s, t, a in conn.execute(
                "SELECT n.nspname, c.relname, a.attname FROM pg_catalog.pg_attribute a"
                " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
                " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
                " WHERE a.attnum > 0 AND NOT a.attisdropped"
                f" AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {user_ns}")}
            functions = {str(r[0]).lower() for r in conn.execute(
                "SELECT DISTINCT proname::text FROM pg_catalog.pg_proc")}
        return cls(tables=frozenset(tables), columns=frozenset(columns),
                   functions=frozenset(functions))


def _table_names(table: str) -> tuple[str, ...]:
    schema, _, name = table.partition(".")
    return (name, table) if schema == "public" else (table, name)


def _check_functions(c: _Collector, data: Mapping[str, Any], catalog: _Catalog | None) -> None:
    builtins = builtin_functions()
    for i, raw in enumerate(data.get("rules", []) if isinstance(data.get("rules"), list) else []):
        if not isinstance(raw, Mapping):
            continue
        for key, value in raw.items():
            if (str(raw.get("id")), key) not in _FUNCTION_PARAMS or not isinstance(value, list):
                continue
            for j, name in enumerate(value):
                if not isinstance(name, str) or name.lower().startswith("operator "):
                    continue
                schema, _, bare = name.lower().rpartition(".")
                path: KeyPath = ("rules", i, key, j)
                if schema in ("", "pg_catalog") and bare in builtins:
                    continue
                if catalog is not None:
                    if bare not in catalog.functions:
                        c.error(path, f"rule {raw['id']}: {key}: no function {name!r} in the"
                                      " database or among PostgreSQL's built-ins"
                                      f"{did_you_mean(bare, builtins | catalog.functions)}")
                    continue
                close = suggest(bare, builtins, cutoff=0.85)
                if schema in ("", "pg_catalog") and close is not None:
                    c.error(path, f"rule {raw['id']}: {key}: unknown function {name!r}; did you"
                                  f" mean {close}? (a function of your own: run `policy check"
                                  " --dsn` to check it against the database)")
                else:
                    c.warning(path, f"rule {raw['id']}: {key}: {name!r} is not a PostgreSQL"
                                    " built-in function; if it is one of yours, `policy check"
                                    " --dsn DSN` checks that it exists")


def _check_catalog_names(c: _Collector, data: Mapping[str, Any], catalog: _Catalog) -> None:
    """Tables and columns the policy names, against the database's catalog."""
    all_tables = sorted({n for t in catalog.tables for n in _table_names(t)})
    rules = data.get("rules", []) if isinstance(data.get("rules"), list) else []
    for i, raw in enumerate(rules):
        if not isinstance(raw, Mapping):
            continue
        value = raw.get("tables")
        if value is None:
            continue
        values = [value] if isinstance(value, str) else value
        for j, pattern in enumerate(values):
            if not isinstance(pattern, str):
                continue
            p: KeyPath = ("rules", i, "tables") if isinstance(value, str) else (
                "rules", i, "tables", j)
            if any(fnmatchcase(n, pattern) for t in catalog.tables for n in _table_names(t)):
                continue
            if any(ch in pattern for ch in "*?["):
                c.warning(p, f"rule {raw.get('id')}: tables: {pattern!r} matches no table in"
                             " the database")
            else:
                c.error(p, f"rule {raw.get('id')}: tables: no table {pattern!r} in the"
                           f" database{did_you_mean(pattern, all_tables)}")
    masking = data.get("masking", {})
    if not isinstance(masking, Mapping):
        return
    all_columns = sorted({f"{t}.{col}" for s, t, col in catalog.columns}
                         | {f"{s}.{t}.{col}" for s, t, col in catalog.columns if s != "public"})
    places: list[tuple[KeyPath, Any]] = [(("masking", "not_sensitive"),
                                          masking.get("not_sensitive"))]
    for section in ("columns", "unmask"):
        entries = masking.get(section, [])
        if isinstance(entries, list):
            places += [(("masking", section, i, "columns"), e.get("columns"))
                       for i, e in enumerate(entries) if isinstance(e, Mapping)]
    for path, value in places:
        if value is None:
            continue
        values = [value] if isinstance(value, str) else value
        for j, pattern in enumerate(values):
            if not isinstance(pattern, str):
                continue
            p = path if isinstance(value, str) else (*path, j)
            pat = pattern.lower()
            if any(fnmatchcase(n, pat) for s, t, col in catalog.columns
                   for n in (f"{t}.{col}".lower(), f"{s}.{t}.{col}".lower(), col.lower())):
                continue
            what = _key_text(path[:-1] if path[-1] == "columns" else path)
            if any(ch in pattern for ch in "*?["):
                c.warning(p, f"{what}: {pattern!r} matches no column in the database")
            else:
                c.error(p, f"{what}: no column {pattern!r} in the database"
                           f"{did_you_mean(pattern, all_columns)}")


# ---------------------------------------------------------------------------------------------
# warnings: rules that can never fire, overrides that narrow a built-in rule


_PROBES = {
    "SELECT": "SELECT * FROM policy_check_t",
    "INSERT": "INSERT INTO policy_check_t VALUES (1)",
    "UPDATE": "UPDATE policy_check_t SET x = 1 WHERE id IS NULL",
    "DELETE": "DELETE FROM policy_check_t WHERE id IS NULL",
    "MERGE": "MERGE INTO policy_check_t t USING policy_check_u u ON t.id = u.id"
             " WHEN MATCHED THEN UPDATE SET x = 1",
    "CREATE": "CREATE TABLE policy_check_new (x int)",
    "ALTER": "ALTER TABLE policy_check_t ADD COLUMN y int",
    "DROP": "DROP TABLE policy_check_t",
    "TRUNCATE": "TRUNCATE policy_check_t",
    "COPY": "COPY policy_check_t FROM STDIN",
    "GRANT": "GRANT SELECT ON policy_check_t TO PUBLIC",
    "COMMENT": "COMMENT ON TABLE policy_check_t IS 'x'",
}


def _probe(policy: Policy, kind: str, sql: str, *, roles: Sequence[str] = (),
           ident_id: str = "policy-check") -> Any:
    identity = Identity(ident_id, kind, roles=tuple(roles))
    return evaluate(policy, identity, analyze(sql),
                    read_only=kind in policy.session.read_only_kinds)


def _scope_kinds(rule: RuleConfig) -> tuple[str, ...]:
    return rule.identity_kinds or IDENTITY_KINDS


def _probe_table(rule: RuleConfig) -> str | None:
    """A table name the rule's ``tables`` patterns match (None: the rule is not scoped)."""
    for pattern in rule.tables:
        if not any(ch in pattern for ch in "*?["):
            return pattern
    return "policy_check_t" if not rule.tables else None


def _shadowed(c: _Collector, policy: Policy, i: int, rule: RuleConfig) -> None:
    """A kind-based rule whose statements another rule always denies at a stricter level."""
    kinds: Sequence[str] = ()
    if rule.id == "statement.require-approval":
        kinds = rule.params.get("kinds", ()) or ("SELECT", "INSERT", "UPDATE", "DELETE")
    elif rule.id == "statement.disallow-ddl":
        kinds = ("CREATE", "ALTER")
    elif rule.id in ("statement.disallow-drop", "statement.disallow-truncate"):
        kinds = ("DROP",) if rule.id.endswith("drop") else ("TRUNCATE",)
    table = _probe_table(rule)
    if not kinds or table is None or rule.identity_ids or rule.level == "disabled":
        return
    reasons: dict[str, set[str]] = {}
    for kind in _scope_kinds(rule):
        for k in kinds:
            sql = _PROBES.get(k)
            if sql is None:
                return
            decision = _probe(policy, kind, sql.replace("policy_check_t", table),
                              roles=rule.roles)
            mine = [f for f in decision.findings if f.rule_id == rule.id]
            if not mine:
                return  # it fires here (or the probe is not what it looks at): no claim
            stricter = [f.rule_id for f in decision.findings
                        if f.rule_id != rule.id and _SEVERITY[f.level] > _SEVERITY[rule.level]]
            if not stricter:
                return
            reasons.setdefault(kind, set()).update(stricter)
    if reasons:
        why = "; ".join(f"for {k}: {', '.join(sorted(v))}" for k, v in sorted(reasons.items()))
        c.warning(("rules", i), f"rule {rule.id} can never take effect: a stricter rule already"
                                f" denies every statement it covers ({why})")


def _limit(rule: RuleConfig, kind: str) -> int | None:
    if "max_rows" in rule.params:
        return int(rule.params["max_rows"])
    value = (rule.params.get("max_rows_by_kind") or {}).get(kind)
    return None if value is None else int(value)


def _covers(outer: RuleConfig, inner: RuleConfig) -> bool:
    """Whether ``outer`` applies to everyone and every table ``inner`` applies to."""
    if outer.identity_ids or outer.roles:
        return False
    if outer.identity_kinds and not set(_scope_kinds(inner)) <= set(outer.identity_kinds):
        return False
    return not outer.tables or bool(inner.tables) and set(inner.tables) <= set(outer.tables)


def _capped(c: _Collector, policy: Policy, i: int, rule: RuleConfig) -> None:
    if rule.id not in _LIMIT_RULES or rule.level == "disabled":
        return
    capped: list[str] = []
    for kind in _scope_kinds(rule):
        mine = _limit(rule, kind)
        if mine is None:
            continue
        caps = [(limit, other) for other in policy.rules
                if other is not rule and other.id == rule.id and other.level != "disabled"
                and _SEVERITY[other.level] >= _SEVERITY[rule.level] and _covers(other, rule)
                and kind in _scope_kinds(other)
                for limit in (_limit(other, kind),) if limit is not None and limit <= mine]
        if not caps:
            return
        limit, other = min(caps, key=lambda x: x[0])
        capped.append(f"{kind}: {mine}, capped at {limit} by {other.origin or 'another rule'}")
    if capped:
        c.warning(("rules", i), f"rule {rule.id} can never fire: a stricter limit of the same"
                                f" rule already applies ({'; '.join(capped)}); lower the limit,"
                                " or change the other rule")


def _writes_denied(policy: Policy, kind: str, table: str) -> bool:
    for k in ("INSERT", "UPDATE", "DELETE"):
        sql = _PROBES[k].replace("policy_check_t", table)
        if _probe(policy, kind, sql).would != "deny":
            return False
    return True


def _never_fires(c: _Collector, policy: Policy, data: Mapping[str, Any], i: int,
                 rule: RuleConfig) -> None:
    raw = data["rules"][i]
    if rule.level == "disabled":
        return
    if "tables" in raw and rule.id not in _TABLE_AWARE:
        c.warning(("rules", i, "tables"),
                  f"rule {rule.id} never looks at tables, so tables = [...] does not narrow it"
                  + (" (a DO block names no table: with tables it can never fire)"
                     if rule.id == "statement.disallow-do" else "")
                  + "; remove the key or use a rule that takes tables")
    if "identity_kinds" in raw and not raw["identity_kinds"]:
        c.warning(("rules", i, "identity_kinds"),
                  f"rule {rule.id}: identity_kinds = [] names no kind, which means every kind;"
                  " name the kinds it is for, or remove the key")
    if rule.id in _READ_ONLY_RULES and not (rule.identity_kinds or rule.identity_ids
                                            or rule.roles) \
            and not policy.session.read_only_kinds:
        c.warning(("rules", i), f"rule {rule.id} applies to read-only identities only"
                                " (session.read_only_kinds), and that list is empty: it can"
                                " never fire; scope it with identity_kinds")
    if rule.id == "statement.require-approval" and rule.level == "error":
        c.warning(("rules", i), 'rule statement.require-approval at level "error" (the default'
                                " level) denies these statements outright; set"
                                ' level = "approval" to have a person decide')
    _shadowed(c, policy, i, rule)
    _capped(c, policy, i, rule)
    if rule.id in ("statement.affected-row-limit", "statement.disallow-full-table-write") \
            and not rule.identity_ids:
        table = _probe_table(rule)
        if table is not None and all(_writes_denied(policy, k, table)
                                     for k in _scope_kinds(rule)):
            c.warning(("rules", i), f"rule {rule.id} can never fire: other rules deny every"
                                    f" write of {', '.join(_scope_kinds(rule))} identities"
                                    " before it runs")


def _narrows(c: _Collector, base: RuleConfig, raw: Mapping[str, Any], i: int) -> None:
    """An entry that overrides a built-in rule and removes part of its protection."""
    lost: list[str] = []
    if raw.get("level") == "disabled":
        return  # explicit, and shown by `policy show --effective`
    kinds = raw.get("identity_kinds")
    if isinstance(kinds, list) and kinds:
        gone = [k for k in _scope_kinds(base) if k not in kinds]
        if gone:
            lost.append(f"identity_kinds = {kinds} removes it for {', '.join(gone)}")
    for key in ("identity_ids", "roles"):
        if raw.get(key) and not getattr(base, key):
            lost.append(f"{key} = {raw[key]} limits it to those identities")
    if raw.get("tables") and not base.tables and base.id in _TABLE_AWARE:
        lost.append(f"tables = {raw['tables']} limits it to those tables")
    by_kind = base.params.get("max_rows_by_kind") or {}
    if "max_rows" in raw:
        looser = [f"{k} {v} -> {raw['max_rows']}" for k, v in sorted(by_kind.items())
                  if isinstance(raw["max_rows"], int) and raw["max_rows"] > v
                  and k not in (raw.get("max_rows_by_kind") or {})]
        if looser:
            lost.append(f"max_rows = {raw['max_rows']} replaces the per-kind limits and raises"
                        f" them ({', '.join(looser)})")
    elif isinstance(raw.get("max_rows_by_kind"), Mapping):
        gone = [k for k in by_kind if k not in raw["max_rows_by_kind"]]
        if gone:
            lost.append(f"max_rows_by_kind drops the limit for {', '.join(gone)}")
    if lost:
        c.warning(("rules", i), f"rule {base.id} overrides the built-in rule of that id (rules"
                                f" merge by id) and narrows it: {'; '.join(lost)}. To keep the"
                                " default, change only its limits or level here; to add a"
                                " narrower rule beside it, use a rule id of its own (such as"
                                " statement.require-approval)")


def _warnings(c: _Collector, policy: Policy, data: Mapping[str, Any]) -> None:
    raw_rules = data.get("rules", []) if isinstance(data.get("rules"), list) else []
    base = {r.id: r for r in default_policy().rules} if policy.extends == "default" else {}
    seen: set[str] = set()
    rules = [r for r in policy.rules if r.origin != BUILTIN]
    # The file's entries in order; each maps to one effective rule (its override or itself).
    for i, raw in enumerate(raw_rules):
        rid = str(raw.get("id"))
        line = c.pos.get(("rules", i))
        rule = next((r for r in rules if r.line == (line[0] if line else None)
                     and r.id == rid), None)
        if rule is None:
            continue
        if rid in base and rid not in seen:
            _narrows(c, base[rid], raw, i)
        seen.add(rid)
        _never_fires(c, policy, data, i, rule)


# ---------------------------------------------------------------------------------------------
# what the policy allows, per identity kind


_ACTIONS = (("read", ("SELECT",)), ("write", ("INSERT", "UPDATE", "DELETE")),
            ("DDL", ("CREATE", "ALTER")), ("DROP/TRUNCATE", ("DROP", "TRUNCATE")))


def _verdict(policy: Policy, kind: str, kinds: Sequence[str], table: str) -> dict[str, Any]:
    """``{"allowed": [kinds], "approval": {kind: [rules]}, "denied": {kind: [rules]}}``."""
    out: dict[str, Any] = {}
    for k in kinds:
        d = _probe(policy, kind, _PROBES[k].replace("policy_check_t", table))
        if d.would == "allow":
            out.setdefault("allowed", []).append(k)
        else:
            verdict = "denied" if d.would == "deny" else "approval"
            out.setdefault(verdict, {})[k] = sorted({f.rule_id for f in d.blocking})
    return out


def explain(policy: Policy) -> tuple[dict[str, Any], ...]:
    """What ``policy`` lets each identity kind do, by running its rules on sample statements.

    Per kind: the server session (read-only, statement timeout), what happens to a read, a
    write, DDL and DROP/TRUNCATE of an ordinary table (allowed, needs approval, denied, with
    the rule ids), the same for each table a rule names, the per-statement row limit and
    whether free text is scanned for PII. Rules scoped to identity ids or roles are listed,
    not applied (they need a particular identity).
    """
    out = []
    tables = sorted({t for r in policy.rules if r.level != "disabled" for t in r.tables
                     if not any(ch in t for ch in "*?[")})
    for kind in IDENTITY_KINDS:
        entry: dict[str, Any] = {
            "kind": kind, "read_only_session": kind in policy.session.read_only_kinds,
            "statement_timeout": policy.session.statement_timeout.get(kind),
            "free_text_scanned": kind in policy.masking.detect_in_text,
        }
        for name, kinds in _ACTIONS:
            entry[name] = _verdict(policy, kind, kinds, "policy_check_t")
        per_table = {}
        for table in tables:
            here = {name: _verdict(policy, kind, kinds, table) for name, kinds in _ACTIONS}
            if any(here[n] != entry[n] for n, _ in _ACTIONS):
                per_table[table] = {n: here[n] for n, _ in _ACTIONS if here[n] != entry[n]}
        entry["tables"] = per_table
        ident = Identity("policy-check", kind)
        limits = [(rule_limit(r, ident), r) for r in policy.rules_for(ident)
                  if r.id == "statement.affected-row-limit"]
        set_limits = [(v, r) for v, r in limits if v is not None]
        entry["max_rows_changed"] = [{"max": v, "tables": list(r.tables), "level": r.level}
                                     for v, r in sorted(set_limits, key=lambda x: x[0])]
        entry["scoped_rules"] = sorted({r.id for r in policy.rules if r.level != "disabled"
                                        and (r.identity_ids or r.roles)
                                        and (not r.identity_kinds or kind in r.identity_kinds)})
        out.append(entry)
    return tuple(out)


def render_allows(allows: Sequence[Mapping[str, Any]], observe: bool = False) -> list[str]:
    """``explain`` as text lines, one block per kind."""
    lines = []

    def fmt(v: Mapping[str, Any], read_only: bool) -> str:
        parts = []
        if "allowed" in v:
            parts.append("allowed" if len(v) == 1 else f"{', '.join(v['allowed'])} allowed")
        for verdict in ("approval", "denied"):
            if verdict not in v:
                continue
            by_kind: Mapping[str, list[str]] = v[verdict]
            word = {"approval": "needs approval",
                    "denied": "would be denied (observe mode)" if observe else "denied"}[verdict]
            rule_sets = {tuple(r) for r in by_kind.values()}
            if len(rule_sets) == 1:
                rules = ", ".join(next(iter(rule_sets)))
                what = "" if len(v) == 1 else f"{', '.join(by_kind)} "
                parts.append(f"{what}{word} by {rules}")
            else:
                parts.append(f"{word}: " + "; ".join(f"{k} by {', '.join(r)}"
                                                     for k, r in by_kind.items()))
        text = "; ".join(parts)
        return text

    for a in allows:
        session = ["read-only session" if a["read_only_session"] else "read-write session"]
        if a["statement_timeout"]:
            session.append(f"statement_timeout {a['statement_timeout']}")
        if a["free_text_scanned"]:
            session.append("PII in free text masked")
        lines.append(f"{a['kind']} ({', '.join(session)}):")
        for name, _ in _ACTIONS:
            note = ""
            if name == "write" and a["read_only_session"] and (
                    "allowed" in a[name] or "approval" in a[name]):
                note = " (such a write runs read-write for that statement alone)"
            lines.append(f"  {name}: {fmt(a[name], a['read_only_session'])}{note}")
        for table, diff in a["tables"].items():
            lines.append(f"  on {table}: " + "; ".join(
                f"{n} {fmt(v, a['read_only_session'])}" for n, v in diff.items()))
        for lim in a["max_rows_changed"]:
            where = f" in {', '.join(lim['tables'])}" if lim["tables"] else ""
            then = {"error": "rolled back and denied", "approval": "needs approval",
                    "warning": "recorded"}.get(lim["level"], lim["level"])
            lines.append(f"  rows changed per statement{where}: at most {lim['max']}"
                         f" (above: {then})")
        if a["scoped_rules"]:
            lines.append(f"  also, for some identities or roles: {', '.join(a['scoped_rules'])}")
    return lines


# ---------------------------------------------------------------------------------------------


def check_policy_text(text: str, *, source: str | None = None, dsn: str | None = None
                      ) -> PolicyCheck:
    """Check policy TOML ``text`` (``source`` names the file; relative keys resolve next to
    it). With ``dsn``, names are also checked against that database's catalog (read only).

    Raises:
        psycopg.OperationalError: the database cannot be reached.
    """
    import tomllib

    where = source or "<policy>"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        import re

        m = re.search(r"line (\d+), column (\d+)", str(exc))
        return PolicyCheck(source=where, errors=(Problem(
            level="error", message=f"not valid TOML: {exc}",
            line=int(m.group(1)) if m else None, column=int(m.group(2)) if m else None),))
    catalog = _Catalog.load(dsn) if dsn else None
    c = _Collector(index_positions(text))
    _check_top(c, data)
    for key, fn in (("session", _check_session), ("masking", _check_masking)):
        if isinstance(data.get(key), Mapping):
            fn(c, data[key])
    if isinstance(data.get("audit"), Mapping):
        _check_audit(c, data["audit"], source)
    if isinstance(data.get("approvals"), Mapping):
        _check_approvals(c, data["approvals"], source)
    if isinstance(data.get("mcp"), Mapping):
        _check_mcp(c, data["mcp"], source)
    if isinstance(data.get("identity"), Mapping):
        _check_identity(c, data["identity"], source)
    extends = data.get("extends", "default")
    builtin_ids = frozenset(r.id for r in default_policy().rules) if extends == "default" \
        else frozenset()
    _check_rules(c, data, builtin_ids)
    _check_functions(c, data, catalog)
    if catalog is not None:
        _check_catalog_names(c, data, catalog)
    policy: Policy | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PolicyWarning)
        try:
            policy = parse_policy(text, source=source)
        except PolicyError as exc:
            if not any(p.level == "error" for p in c.problems):
                # The loader found what the checks above did not: report it (never pass a
                # policy that does not load).
                c.problems.append(Problem(level="error", message=exc.detail, line=exc.line))
    for w in caught:
        if issubclass(w.category, PolicyWarning):
            c.warning(("extends",), str(w.message).removeprefix("governed_db: "))
    errors = tuple(p for p in c.problems if p.level == "error")
    if errors:
        policy = None
    allows: tuple[dict[str, Any], ...] = ()
    if policy is not None:
        _warnings(c, policy, data)
        allows = explain(policy)
    def by_position(p: Problem) -> tuple[int, int]:
        return (p.line or 0, p.column or 0)
    return PolicyCheck(
        source=where, policy=policy, allows=allows, catalog_checked=catalog is not None,
        errors=tuple(sorted(errors, key=by_position)),
        warnings=tuple(sorted((p for p in c.problems if p.level == "warning"), key=by_position)))


def check_policy(path: str | Path, *, dsn: str | None = None) -> PolicyCheck:
    """Check a policy file: every error and warning at once, each at its line and column.

    Example::

        result = check_policy("policy.toml")
        for problem in result.errors:
            print(problem.location(result.source), problem.message)

    Raises:
        PolicyError: the file cannot be read.
        psycopg.OperationalError: ``dsn`` given and the database cannot be reached.
    """
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError("policy file not found", path=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read policy file: {exc}", path=str(p)) from None
    return check_policy_text(text, source=str(path), dsn=dsn)
