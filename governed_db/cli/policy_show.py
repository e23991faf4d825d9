"""``governed-db policy show --effective FILE``: the merged policy, each entry with its origin.

The output is itself a complete policy (``extends = "none"``), so it can be reviewed, diffed
against a later release's defaults, or pinned as a full copy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..policy import Policy, RuleConfig

__all__ = ["render_effective"]


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return json.dumps(str(v))


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def _rule(rule: RuleConfig) -> list[str]:
    state = "  (disabled)" if rule.level == "disabled" else ""
    out = [f"[[rules]]  # {rule.origin or 'python'}{state}", f"id = {_value(rule.id)}",
           f"level = {_value(rule.level)}"]
    for key in ("identity_kinds", "identity_ids", "roles", "tables"):
        value = getattr(rule, key)
        if value:
            out.append(f"{key} = {_value(list(value))}")
    for key, value in rule.params.items():
        out.append(f"{_key(key)} = {_value(value)}")
    return out


def render_effective(policy: Policy) -> str:
    """The merged policy as TOML, with ``# origin`` comments (builtin / file:line / overridden)."""
    lines = [f"# effective policy of {policy.source or '<python>'}"
             f" (extends = {_value(policy.extends)}), version {policy.version_tag}",
             "# origins: builtin = the default profile; FILE:LINE = added by the file;",
             "# 'builtin, overridden at FILE:LINE' = a default rule the file changed",
             'extends = "none"  # this output is complete on its own',
             f"version = {policy.version}", f"name = {_value(policy.name)}",
             f"mode = {_value(policy.mode)}", "", "[session]",
             f"read_only_kinds = {_value(list(policy.session.read_only_kinds))}",
             f"statement_timeout = {_value(dict(policy.session.statement_timeout))}"]
    if policy.session.search_path is not None:
        schemas = [s.strip().strip('"').replace('""', '"')
                   for s in policy.session.search_path.split(",")]
        lines.append(f"search_path = {_value(schemas)}")
    for rule in policy.rules:
        lines += ["", *_rule(rule)]
    m = policy.masking
    lines += ["", "[masking]", f"detect_names = {_value(m.detect_names)}",
              f"detect_values = {_value(m.detect_values)}",
              f"hash_key_env = {_value(m.hash_key_env)}"]
    if m.not_sensitive:
        lines.append(f"not_sensitive = {_value(list(m.not_sensitive))}")
    for col in m.columns:
        lines += ["", f"[[masking.columns]]  # {col.origin or 'python'}",
                  f"columns = {_value(list(col.columns))}", f"strategy = {_value(col.strategy)}"]
    for g in m.unmask:
        lines += ["", f"[[masking.unmask]]  # {g.origin or 'python'}",
                  f"columns = {_value(list(g.columns))}", f"strategy = {_value(g.strategy)}"]
        if g.roles:
            lines.append(f"roles = {_value(list(g.roles))}")
        if g.identity_ids:
            lines.append(f"identity_ids = {_value(list(g.identity_ids))}")
    for section, table in (("audit", policy.audit), ("approvals", policy.approvals)):
        if table:
            lines += ["", f"[{section}]"] + [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"
