"""The rule catalogue: every rule id, what it checks, its parameters; and the runtime limits.

Rule ids are public and permanent (Bytebase's dotted vocabulary where it fits). The policy
model validates a policy's rules against this catalogue when it is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import _checks as c
from ._model import Rule

if TYPE_CHECKING:  # the policy model imports the catalogue: names for annotations only
    from ..policy import RuleConfig


RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        Rule("statement.parse-error", "text PostgreSQL's parser rejects never reaches the server",
             c._parse_error),
        Rule("statement.opaque", "DO, CALL, EXECUTE/FETCH of unseen objects and unknown"
             " statement types are denied (effect unknowable)", c._opaque),
        Rule("statement.allowlist", "only the listed statement kinds may run (read-only agents)",
             c._allowlist, {"allow": "list[str]"}),
        Rule("statement.disallow-drop", "no DROP", c._kind_rule(
            "DROP", "DROP is not allowed; nothing was dropped. Do not retry: ask a person to"
            " run it if it is really intended")),
        Rule("statement.disallow-truncate", "no TRUNCATE", c._kind_rule(
            "TRUNCATE", "TRUNCATE is not allowed; use DELETE with a WHERE clause for the rows"
            " you mean")),
        Rule("statement.where.require.update-delete", "UPDATE/DELETE/MERGE need an effective"
             " WHERE (tautologies count as none)", c._where),
        Rule("statement.disallow-copy-program", "no COPY to/from programs or server files",
             c._copy_program),
        Rule("statement.disallow-do", "no anonymous DO blocks", c._kind_rule(
            "DO", "DO blocks are not allowed; their effect cannot be checked before they"
            " run. Send the statements directly")),
        Rule("statement.disallow-ddl", "schema changes (CREATE/ALTER/DROP/GRANT/COMMENT...)"
             " and server maintenance (VACUUM FULL, CHECKPOINT, LOAD)",
             c._ddl),
        Rule("statement.disallow-multi-statement", "one statement per string", c._multi),
        Rule("statement.require-approval", "statements of these kinds/tables need approval"
             " (kinds by effect too: MERGE actions, COPY FROM, ON CONFLICT DO UPDATE)",
             c._require_approval, {"kinds": "list[str]"}),
        Rule("statement.affected-row-limit", "DML touching more rows than max_rows (or the"
             " identity kind's max_rows_by_kind) is rolled back (exact count, savepoint)",
             c._never, {"max_rows": "int", "max_rows_by_kind": "dict[kind,int]"}, runtime=True),
        Rule("statement.disallow-full-table-write", "a statement that updates or deletes every"
             " live row of a table (of at least min_rows rows) is rolled back (exact count)",
             c._never, {"min_rows": "int"}, runtime=True),
        Rule("statement.max-rows-returned", "results larger than max_rows are refused",
             c._never, {"max_rows": "int"}, runtime=True),
        Rule("function.deny", "dangerous functions (files, programs, dblink, large objects,"
             " backend control, set_config, query_to_xml, sleeps...)", c._functions,
             {"functions": "list[str]", "allow": "list[str]"}),
        Rule("function.allowlist", "read-only identities (or the rule's scope) call only"
             " built-in pure functions and those listed in allow (user-defined functions and"
             " operators, locks, sequences, notify, files, SQL in strings are refused)",
             c._function_allowlist, {"allow": "list[str]", "builtins": "bool"}),
        Rule("session.disallow-security-settings", "no SET/RESET/set_config of search_path,"
             " role, standard_conforming_strings, read-only modes, log_*/track_*, raising"
             " statement_timeout and other security settings unless listed in allow",
             c._settings, {"settings": "list[str]", "allow": "list[str]"}),
        Rule("session.settings-allowlist", "read-only identities (or the rule's scope) SET"
             " only harmless settings (TimeZone, DateStyle, ...) and those listed in allow;"
             " no READ WRITE transactions", c._settings_allowlist, {"allow": "list[str]"}),
        Rule("catalog.allowlist", "read-only identities (or the rule's scope) read only"
             " reflection catalogs (no pg_statistic/pg_stats, pg_stat_activity, pg_authid,"
             " pg_largeobject...), also through views", c._catalog_allowlist,
             {"allow": "list[str]"}),
        Rule("catalog.disallow-write", "no INSERT/UPDATE/DELETE/DDL on system catalogs"
             " (UPDATE pg_settings, ...)", c._catalog_write),
        Rule("table.deny-list", "these tables may not be read or written", c._deny_tables,
             {"tables": "list[str]"}),
        Rule("table.allow-list", "only these tables may be read or written", c._allow_tables,
             {"tables": "list[str]"}),
        Rule("column.disallow-predicate-on-masked", "no WHERE/JOIN/HAVING/GROUP BY/ORDER BY"
             " on columns the identity sees masked (inference by probing)", c._never,
             runtime=True),
        Rule("column.disallow-masked-copy", "no write that stores a value of a masked column"
             " into a column masked less strongly (the copy would be read unmasked)",
             c._never, runtime=True),
        Rule("notify.disallow-sensitive-payload", "no pg_notify channel/payload computed from"
             " a statement that may read masked columns (listeners are not governed)", c._never,
             runtime=True),
    )
}


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
