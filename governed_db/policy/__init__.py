"""Policy as code: the model, the TOML loader and the built-in default profile.

A policy is an ordered chain of rules (permanent ids, see :mod:`governed_db.rules`), a
masking section and session settings. It is validated completely when loaded: a bad policy
raises :class:`~governed_db.errors.PolicyError` naming the file and line, never at the first
execute.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
import warnings
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import attrs

from .._tokens import check_identity_section
from .._toml_lines import key_line as _key_line
from .._toml_lines import table_lines as _lines_of
from ..audit._openlineage import check_settings as _check_openlineage
from ..errors import PolicyError
from ..mcp._settings import check_mcp_section
from ..rules import RULES
from ..webhooks import Target
from ._names import did_you_mean, statement_kinds

__all__ = [
    "LEVELS",
    "MaskRule",
    "PolicyWarning",
    "Problem",
    "Masking",
    "Policy",
    "PolicyCheck",
    "RuleConfig",
    "SessionSettings",
    "UnmaskGrant",
    "check_policy",
    "default_policy",
    "default_policy_text",
    "load_policy",
    "parse_policy",
]

LEVELS = ("error", "approval", "warning", "disabled")
MODES = ("enforce", "observe")
STRATEGIES = ("redact", "partial", "email", "hash", "null", "none")
IDENTITY_KINDS = ("human", "service", "ai_agent")
_INTERVAL = re.compile(r"^\s*\d+\s*(ms|s|min|h)?\s*$")
EXTENDS = ("default", "none")
BUILTIN = "builtin"


# -- validators: a Policy built in Python is checked like one loaded from a file ---------------
# (They raise PolicyError naming the class, field and line; the loader adds the file.)

_SECTIONS = {"MaskRule": "masking.columns: ", "UnmaskGrant": "masking.unmask: ",
             "Masking": "masking.", "SessionSettings": "session.", "Policy": ""}


def _where(inst: Any, attribute: Any) -> tuple[str, int | None]:
    """How the field is named in a policy file, and the line it was read from."""
    cls = type(inst).__name__
    prefix = f"rule {inst.id}: " if cls == "RuleConfig" and isinstance(
        getattr(inst, "id", None), str) and attribute.name != "id" else _SECTIONS.get(cls, "")
    return f"{prefix}{attribute.name}", getattr(inst, "line", None)


def _name_tuple(inst: Any, attribute: Any, value: Any) -> None:
    """A tuple of names; a bare string would be read as one name per letter."""
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return
    what, line = _where(inst, attribute)
    hint = f" (write ({value!r},) or [{value!r}])" if isinstance(value, str) else ""
    raise PolicyError(f"{what} must be a tuple of names, not {value!r}{hint}", line=line)


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(inst: Any, attribute: Any, value: Any) -> None:
        if value not in choices:
            what, line = _where(inst, attribute)
            raise PolicyError(f"{what} must be one of {', '.join(choices)}, not {value!r}",
                              line=line)
    return check


def _kinds(inst: Any, attribute: Any, value: Any) -> None:
    _name_tuple(inst, attribute, value)
    bad = [k for k in value if k not in IDENTITY_KINDS]
    if bad:
        what, line = _where(inst, attribute)
        raise PolicyError(f"{what}: unknown identity kind {bad[0]!r}; use one of"
                          f" {', '.join(IDENTITY_KINDS)}", line=line)


def _of_type(*types: type) -> Any:
    def check(inst: Any, attribute: Any, value: Any) -> None:
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)
                                              and int in types):
            what, line = _where(inst, attribute)
            raise PolicyError(f"{what} must be {' or '.join(t.__name__ for t in types)},"
                              f" not {type(value).__name__} {value!r}", line=line)
    return check


def _items(cls: type) -> Any:
    def check(inst: Any, attribute: Any, value: Any) -> None:
        if isinstance(value, tuple) and all(isinstance(v, cls) for v in value):
            return
        what, line = _where(inst, attribute)
        raise PolicyError(f"{what} must be a tuple of {cls.__name__}, not {value!r}", line=line)
    return check


class PolicyWarning(UserWarning):
    """A policy that loads but weakens the protection users expect (``extends = "none"``)."""

    __module__ = "governed_db"


@attrs.frozen(kw_only=True)
class RuleConfig:
    """One configured rule: which check, how severe, for whom, with which parameters.

    Attributes:
        id: a permanent rule id from the catalogue (``statement.disallow-ddl``).
        level: ``error`` (deny), ``approval`` (ask a person), ``warning`` (allow, record),
            ``disabled``.
        identity_kinds / identity_ids / roles: scope; empty means everyone.
        tables: restrict table-scoped rules to these tables (``users``, ``public.*``).
        params: rule-specific parameters (``allow``, ``max_rows``, ``functions``...).
        line: where the rule starts in its file, for messages.
        origin: where the effective rule comes from: ``builtin`` (the default profile),
            ``file:LINE`` (added by the policy file) or ``builtin, overridden at file:LINE``.
    """

    id: str = attrs.field(validator=_of_type(str))
    level: str = attrs.field(default="error", validator=_one_of(LEVELS))
    identity_kinds: tuple[str, ...] = attrs.field(default=(), validator=_kinds)
    identity_ids: tuple[str, ...] = attrs.field(default=(), validator=_name_tuple)
    roles: tuple[str, ...] = attrs.field(default=(), validator=_name_tuple)
    tables: tuple[str, ...] = attrs.field(default=(), validator=_name_tuple)
    params: Mapping[str, Any] = attrs.field(factory=dict, eq=False, hash=False,
                                            validator=_of_type(Mapping))
    line: int | None = attrs.field(default=None, eq=False)
    origin: str = attrs.field(default="", eq=False, repr=False)

    def applies_to(self, identity: Any) -> bool:
        if self.identity_kinds and identity.kind not in self.identity_kinds:
            return False
        if self.identity_ids and identity.id not in self.identity_ids:
            return False
        if self.roles and not set(self.roles) & set(identity.roles):
            return False
        return True


@attrs.frozen(kw_only=True)
class MaskRule:
    """Columns (``table.column`` patterns, ``*`` wildcards) masked with a strategy."""

    columns: tuple[str, ...] = attrs.field(validator=_name_tuple)
    strategy: str = attrs.field(default="redact", validator=_one_of(STRATEGIES))
    line: int | None = attrs.field(default=None, eq=False)
    origin: str = attrs.field(default="", eq=False, repr=False)


@attrs.frozen(kw_only=True)
class UnmaskGrant:
    """Lets identities with some roles/ids see some columns with a weaker strategy."""

    columns: tuple[str, ...] = attrs.field(validator=_name_tuple)
    strategy: str = attrs.field(default="none", validator=_one_of(STRATEGIES))
    roles: tuple[str, ...] = attrs.field(default=(), validator=_name_tuple)
    identity_ids: tuple[str, ...] = attrs.field(default=(), validator=_name_tuple)
    line: int | None = attrs.field(default=None, eq=False)
    origin: str = attrs.field(default="", eq=False, repr=False)

    def applies_to(self, identity: Any) -> bool:
        if self.identity_ids and identity.id in self.identity_ids:
            return True
        return bool(self.roles and set(self.roles) & set(identity.roles))


@attrs.frozen(kw_only=True)
class Masking:
    """The masking section: declared columns, detectors, grants and the hash key source."""

    detect_names: bool = attrs.field(default=True, validator=_of_type(bool))
    detect_values: bool = attrs.field(default=True, validator=_of_type(bool))
    # Identity kinds for which the value detectors also run on text columns that are not
    # known to be safe, masking what they find in place (free-text PII: an e-mail address
    # inside ``orders.note``). Safe means a type that cannot hold text, or ``not_sensitive``.
    detect_in_text: tuple[str, ...] = attrs.field(default=("ai_agent",), validator=_kinds)
    columns: tuple[MaskRule, ...] = attrs.field(default=(), validator=_items(MaskRule))
    unmask: tuple[UnmaskGrant, ...] = attrs.field(default=(), validator=_items(UnmaskGrant))
    not_sensitive: tuple[str, ...] = attrs.field(default=(), validator=_name_tuple)
    hash_key_env: str = attrs.field(default="GOVERNED_DB_MASK_KEY", validator=_of_type(str))
    # Let the server compute redact/partial/email/null where that is exact (_server_mask):
    # masked values then never cross the wire. False: every value is masked in the client.
    server_side: bool = attrs.field(default=True, validator=_of_type(bool))


@attrs.frozen(kw_only=True)
class SessionSettings:
    """Server-side settings applied per identity kind."""

    read_only_kinds: tuple[str, ...] = attrs.field(default=("ai_agent",), validator=_kinds)
    statement_timeout: Mapping[str, str] = attrs.field(factory=dict, eq=False, hash=False,
                                                       validator=_of_type(Mapping))
    search_path: str | None = attrs.field(default=None,
                                          validator=attrs.validators.optional(_of_type(str)))  # pinned at connect (quoted, comma-separated schemas)


@attrs.frozen(kw_only=True)
class Policy:
    """A complete, validated policy.

    Build one from TOML with :func:`load_policy` / :func:`parse_policy`, or in Python::

        Policy(name="mine", rules=(RuleConfig(id="statement.disallow-drop"),))
    """

    name: str = attrs.field(default="custom", validator=_of_type(str))
    version: int = attrs.field(default=1, validator=_of_type(int))
    mode: str = attrs.field(default="enforce", validator=_one_of(MODES))
    rules: tuple[RuleConfig, ...] = attrs.field(default=(), validator=_items(RuleConfig))
    masking: Masking = attrs.field(factory=Masking, validator=_of_type(Masking))
    session: SessionSettings = attrs.field(factory=SessionSettings,
                                           validator=_of_type(SessionSettings))
    audit: Mapping[str, Any] = attrs.field(factory=dict, eq=False, hash=False)
    approvals: Mapping[str, Any] = attrs.field(factory=dict, eq=False, hash=False)
    # ``governed-db mcp`` settings (identity, limits, bearer tokens); governed_db.mcp reads it.
    mcp: Mapping[str, Any] = attrs.field(factory=dict, eq=False, hash=False)
    # ``[identity]``: require_verified, approver_roles, ``[identity.oidc]`` (see _tokens).
    identity: Mapping[str, Any] = attrs.field(factory=dict, eq=False, hash=False)
    source: str | None = attrs.field(default=None, eq=False)
    digest: str = attrs.field(default="", eq=False)
    extends: str = attrs.field(default="none", eq=False)
    # Kinds that must be verified (from [identity]); read per statement, so precomputed.
    require_verified: frozenset[str] = attrs.field(init=False, eq=False, factory=frozenset)

    def __attrs_post_init__(self) -> None:
        # (types, levels, modes, identity kinds and strategies: the fields' validators)
        for rule in self.rules:
            if rule.id not in RULES:
                known = ", ".join(sorted(RULES))
                raise PolicyError(f"unknown rule id {rule.id!r}; known ids: {known}",
                                  path=self.source, line=rule.line)
            RULES[rule.id].validate(rule, self.source)
            _check_kinds(rule, self.source)
        for kind, value in self.session.statement_timeout.items():
            if kind not in IDENTITY_KINDS or not _INTERVAL.match(str(value)):
                raise PolicyError(
                    f"session.statement_timeout: {kind} = {value!r} must map an identity kind"
                    " to a duration such as \"30s\" or \"500ms\"", path=self.source)
        object.__setattr__(self, "require_verified",
                           frozenset(self.identity.get("require_verified", ())))
        if not self.digest:
            object.__setattr__(self, "digest", _digest(self))

    def rule(self, rule_id: str) -> RuleConfig | None:
        """The first enabled rule with this id, or None."""
        for r in self.rules:
            if r.id == rule_id and r.level != "disabled":
                return r
        return None

    def rules_for(self, identity: Any) -> tuple[RuleConfig, ...]:
        return tuple(r for r in self.rules if r.level != "disabled" and r.applies_to(identity))

    @property
    def version_tag(self) -> str:
        """``name@digest``: binds approvals to the exact policy that asked for them."""
        return f"{self.name}@{self.digest[:12]}"


# Rule parameters that name statement kinds: a kind the analyzer never reports would silently
# never match (``kinds = ["INSRT"]`` requiring approval of nothing), so it is an error.
KIND_PARAMS = {"statement.allowlist": "allow", "statement.require-approval": "kinds"}


def _check_kinds(rule: RuleConfig, path: str | None) -> None:
    key = KIND_PARAMS.get(rule.id)
    if key is None:
        return
    known = statement_kinds()
    for kind in rule.params.get(key, ()):
        if kind not in known:
            raise PolicyError(f"rule {rule.id}: {key}: unknown statement kind {kind!r}"
                              f"{did_you_mean(kind, known)}", path=path, line=rule.line)


def _check_strategy(strategy: str, path: str | None, line: int | None) -> None:
    if strategy not in STRATEGIES:
        raise PolicyError(f"unknown masking strategy {strategy!r}; use one of"
                          f" {', '.join(STRATEGIES)}", path=path, line=line)


def _digest(policy: Policy) -> str:
    parts = [policy.name, policy.mode]
    for r in policy.rules:
        parts.append(repr((r.id, r.level, r.identity_kinds, r.identity_ids, r.roles, r.tables,
                           sorted((k, repr(v)) for k, v in r.params.items()))))
    parts.append(repr(policy.masking))
    parts.append(repr((policy.session.read_only_kinds,
                       sorted(policy.session.statement_timeout.items()))))
    if policy.identity:
        parts.append(repr(sorted((k, repr(v)) for k, v in policy.identity.items())))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# TOML loading with file:line in every error

_RULE_KEYS = {"id", "level", "identity_kinds", "identity_ids", "roles", "tables"}
# The keys each section takes (shared with ``policy check``, which suggests the nearest one).
TOP_KEYS = frozenset({"version", "name", "mode", "rules", "masking", "session", "audit",
                      "approvals", "extends", "mcp", "identity"})
SESSION_KEYS = frozenset({"read_only_kinds", "statement_timeout", "search_path"})
MASKING_KEYS = frozenset({"detect_names", "detect_values", "detect_in_text", "columns", "unmask",
                          "not_sensitive", "hash_key_env", "server_side"})
MASK_COLUMN_KEYS = frozenset({"columns", "strategy"})
UNMASK_KEYS = frozenset({"columns", "strategy", "roles", "identity_ids"})
APPROVALS_KEYS = frozenset({"store", "dsn_env", "wait_seconds", "ttl_seconds", "notify",
                            "console_url"})
AUDIT_KEYS = frozenset({"path", "durability", "on_failure", "signing_key", "checkpoint_every",
                        "checkpoint_ms", "batch_ms", "max_queue", "param_hash_key_env",
                        "postgres_dsn_env", "otlp", "openlineage"})


def _str_tuple(value: Any, what: str, path: str | None, line: int | None) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise PolicyError(f"{what} must be a string or a list of strings", path=path, line=line)


def parse_policy(text: str, *, source: str | None = None) -> Policy:
    """Parse and validate policy TOML text. ``source`` names the file in error messages.

    The result extends the built-in default profile unless the text says ``extends = "none"``
    (see :func:`policy_from_dict`).
    """
    return _parse(text, source=source, builtin=False)


def _parse(text: str, *, source: str | None, builtin: bool) -> Policy:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise PolicyError(f"not valid TOML: {exc}", path=source,
                          line=int(m.group(1)) if m else None) from None
    try:
        return policy_from_dict(data, source=source, text=text, _builtin=builtin)
    except PolicyError as exc:
        if exc.path is None and source is not None:  # (a field validator: add the file)
            raise PolicyError(exc.detail, path=source, line=exc.line) from None
        raise


def policy_from_dict(data: Mapping[str, Any], *, source: str | None = None,
                     text: str = "", _builtin: bool = False) -> Policy:
    """Build a policy from already-parsed data (TOML tables or a plain dict).

    Layering (why: a file written to add one masked column must not silently drop every
    default guardrail): unless ``extends = "none"``, the file is merged onto the built-in
    default profile. A ``[[rules]]`` entry whose id is a default rule's id overrides that
    rule field by field (only the keys the entry sets; ``level = "disabled"`` switches it off
    and stays visible in ``policy show --effective``); other entries are added after the
    default rules. Masking columns, grants and ``not_sensitive`` add to the default's;
    ``[session]``, ``[audit]`` and ``[approvals]`` keys override one by one.
    """
    for key in data:
        if key not in TOP_KEYS:
            raise PolicyError(f"unknown top-level key {key!r}; expected one of"
                              f" {', '.join(sorted(TOP_KEYS))}", path=source,
                              line=_key_line(text, key))
    version = data.get("version", 1)
    if version != 1:
        raise PolicyError(f"unsupported policy version {version!r} (this release reads 1)",
                          path=source, line=_key_line(text, "version"))
    extends = data.get("extends", "none" if _builtin else "default")
    if extends not in EXTENDS:
        raise PolicyError(f"extends must be \"default\" (layer on the built-in profile) or"
                          f" \"none\" (start empty), not {extends!r}", path=source,
                          line=_key_line(text, "extends"))
    where = source or "<policy>"
    rule_lines = _lines_of(text, "rules")
    rules: list[tuple[RuleConfig, Mapping[str, Any]]] = []
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise PolicyError("rules must be an array of tables ([[rules]])", path=source)
    for i, raw in enumerate(raw_rules):
        line = rule_lines[i] if i < len(rule_lines) else None
        if not isinstance(raw, Mapping) or "id" not in raw:
            raise PolicyError("every [[rules]] entry needs an id", path=source, line=line)
        params = {k: v for k, v in raw.items() if k not in _RULE_KEYS}
        rules.append((RuleConfig(
            id=str(raw["id"]), level=str(raw.get("level", "error")),
            identity_kinds=_str_tuple(raw.get("identity_kinds", ()), "identity_kinds", source, line),
            identity_ids=_str_tuple(raw.get("identity_ids", ()), "identity_ids", source, line),
            roles=_str_tuple(raw.get("roles", ()), "roles", source, line),
            tables=_str_tuple(raw.get("tables", ()), "tables", source, line),
            params=params, line=line,
            origin=BUILTIN if _builtin else f"{where}:{line}" if line else where,
        ), raw))
    raw_masking = data.get("masking", {})
    masking = _masking(raw_masking, source, text, BUILTIN if _builtin else where)
    raw_session = data.get("session", {})
    session = _session(raw_session, source, text)
    audit = data.get("audit", {})
    if not isinstance(audit, Mapping):
        raise PolicyError("[audit] must be a table", path=source, line=_key_line(text, "audit"))
    _check_audit(audit, source, text)
    audit = _relative_to_policy(audit, source, ("signing_key",))
    approvals = data.get("approvals", {})
    _check_approvals(approvals, source, text)
    mcp = data.get("mcp", {})
    if "mcp" in data:
        check_mcp_section(mcp, source, text)
    identity = data.get("identity", {})
    if "identity" in data:
        # (a relative jwks path means next to the policy file: resolved by _tokens)
        check_identity_section(identity, source, lambda key: _key_line(text, key))
    name = str(data.get("name", "custom"))
    mode = str(data.get("mode", "enforce"))
    if extends == "none":
        if not _builtin:
            warnings.warn(
                f"governed_db: policy {where} says extends = \"none\": the built-in default"
                " guardrails (read-only agents, no DROP/TRUNCATE/unbounded writes, function,"
                " setting and catalog allow-lists, DDL approval) apply only where this file"
                " lists them", PolicyWarning, stacklevel=4)
        return Policy(name=name, version=int(version), mode=mode,
                      rules=tuple(r for r, _ in rules), masking=masking, session=session,
                      audit=dict(audit), approvals=dict(approvals), mcp=dict(mcp),
                      identity=dict(identity), source=source, extends="none")
    base = default_policy()
    return Policy(
        name=name, version=int(version),
        mode=mode if "mode" in data else base.mode,
        rules=_merge_rules(base.rules, rules),
        masking=_merge_masking(base.masking, masking, raw_masking),
        session=_merge_session(base.session, session, raw_session),
        audit={**base.audit, **audit}, approvals={**base.approvals, **approvals},
        mcp={**base.mcp, **mcp}, identity={**base.identity, **identity},
        source=source, extends="default",
    )


def _merge_rules(base: Sequence[RuleConfig],
                 own: Sequence[tuple[RuleConfig, Mapping[str, Any]]]) -> tuple[RuleConfig, ...]:
    merged = list(base)
    overridden: set[str] = set()
    added: list[RuleConfig] = []
    for rule, raw in own:
        index = next((i for i, b in enumerate(merged)
                      if b.id == rule.id and b.origin == BUILTIN), None)
        if index is None or rule.id in overridden:
            added.append(rule)  # a new rule, or a second entry for an already-overridden id
            continue
        overridden.add(rule.id)
        b = merged[index]
        changes: dict[str, Any] = {k: getattr(rule, k) for k in
                                   ("level", "identity_kinds", "identity_ids", "roles", "tables")
                                   if k in raw}
        own_params = {k: v for k, v in raw.items() if k not in _RULE_KEYS}
        merged[index] = attrs.evolve(b, **changes, params={**b.params, **own_params},
                                     line=rule.line,
                                     origin=f"{BUILTIN}, overridden at {rule.origin}")
    return tuple(merged + added)


def _merge_masking(base: Masking, own: Masking, raw: Mapping[str, Any]) -> Masking:
    return Masking(
        detect_names=own.detect_names if "detect_names" in raw else base.detect_names,
        detect_values=own.detect_values if "detect_values" in raw else base.detect_values,
        detect_in_text=own.detect_in_text if "detect_in_text" in raw else base.detect_in_text,
        columns=base.columns + own.columns, unmask=base.unmask + own.unmask,
        not_sensitive=base.not_sensitive + own.not_sensitive,
        hash_key_env=own.hash_key_env if "hash_key_env" in raw else base.hash_key_env,
        server_side=own.server_side if "server_side" in raw else base.server_side,
    )


def _merge_session(base: SessionSettings, own: SessionSettings,
                   raw: Mapping[str, Any]) -> SessionSettings:
    return SessionSettings(
        read_only_kinds=own.read_only_kinds if "read_only_kinds" in raw else base.read_only_kinds,
        statement_timeout={**base.statement_timeout, **own.statement_timeout},
        search_path=own.search_path if "search_path" in raw else base.search_path,
    )


def _origin(where: str, line: int | None) -> str:
    return where if where == BUILTIN or line is None else f"{where}:{line}"


def _masking(raw: Any, source: str | None, text: str, where: str) -> Masking:
    if not isinstance(raw, Mapping):
        raise PolicyError("[masking] must be a table", path=source, line=_key_line(text, "masking"))
    _check_keys(raw, MASKING_KEYS, "masking", source, text)
    if not isinstance(raw.get("server_side", True), bool):
        raise PolicyError("[masking] server_side must be true or false", path=source,
                          line=_key_line(text, "server_side"))
    in_text = _str_tuple(raw.get("detect_in_text", ("ai_agent",)), "detect_in_text", source,
                         _key_line(text, "detect_in_text"))
    for kind in in_text:
        if kind not in IDENTITY_KINDS:
            raise PolicyError(f"masking.detect_in_text: unknown identity kind {kind!r}; use"
                              f" {', '.join(IDENTITY_KINDS)}", path=source,
                              line=_key_line(text, "detect_in_text"))
    col_lines = _lines_of(text, "masking.columns")
    cols = []
    for i, item in enumerate(raw.get("columns", [])):
        line = col_lines[i] if i < len(col_lines) else None
        if not isinstance(item, Mapping) or "columns" not in item:
            raise PolicyError("[[masking.columns]] needs columns = [\"table.column\", ...]",
                              path=source, line=line)
        _check_keys(item, MASK_COLUMN_KEYS, "[masking.columns]", source, "", line)
        cols.append(MaskRule(columns=_str_tuple(item["columns"], "columns", source, line),
                             strategy=str(item.get("strategy", "redact")), line=line,
                             origin=_origin(where, line)))
    grant_lines = _lines_of(text, "masking.unmask")
    grants = []
    for i, item in enumerate(raw.get("unmask", [])):
        line = grant_lines[i] if i < len(grant_lines) else None
        if not isinstance(item, Mapping) or "columns" not in item:
            raise PolicyError("[[masking.unmask]] needs columns and roles or identity_ids",
                              path=source, line=line)
        _check_keys(item, UNMASK_KEYS, "[masking.unmask]", source, "", line)
        grant = UnmaskGrant(
            columns=_str_tuple(item["columns"], "columns", source, line),
            strategy=str(item.get("strategy", "none")),
            roles=_str_tuple(item.get("roles", ()), "roles", source, line),
            identity_ids=_str_tuple(item.get("identity_ids", ()), "identity_ids", source, line),
            line=line, origin=_origin(where, line),
        )
        if not grant.roles and not grant.identity_ids:
            raise PolicyError("[[masking.unmask]] must name roles or identity_ids",
                              path=source, line=line)
        grants.append(grant)
    return Masking(
        detect_names=bool(raw.get("detect_names", True)),
        detect_values=bool(raw.get("detect_values", True)),
        detect_in_text=in_text,
        columns=tuple(cols), unmask=tuple(grants),
        not_sensitive=_str_tuple(raw.get("not_sensitive", ()), "not_sensitive", source, None),
        hash_key_env=str(raw.get("hash_key_env", "GOVERNED_DB_MASK_KEY")),
        server_side=raw.get("server_side", True),
    )


def _session(raw: Any, source: str | None, text: str) -> SessionSettings:
    if not isinstance(raw, Mapping):
        raise PolicyError("[session] must be a table", path=source, line=_key_line(text, "session"))
    _check_keys(raw, SESSION_KEYS, "session", source, text)
    timeout = raw.get("statement_timeout", {})
    if not isinstance(timeout, Mapping):
        raise PolicyError("session.statement_timeout must be a table of kind = \"30s\"",
                          path=source, line=_key_line(text, "statement_timeout"))
    kinds = _str_tuple(raw.get("read_only_kinds", ("ai_agent",)), "read_only_kinds", source,
                       _key_line(text, "read_only_kinds"))
    for kind in kinds:
        if kind not in IDENTITY_KINDS:
            raise PolicyError(f"session.read_only_kinds: unknown identity kind {kind!r}",
                              path=source, line=_key_line(text, "read_only_kinds"))
    path = raw.get("search_path")
    if path is not None:
        schemas = _str_tuple(path, "search_path", source, _key_line(text, "search_path"))
        if not schemas or not all(schemas):
            raise PolicyError("session.search_path must list schema names, e.g."
                              ' ["app", "public"]', path=source,
                              line=_key_line(text, "search_path"))
        path = ", ".join('"' + s.replace('"', '""') + '"' for s in schemas)
    return SessionSettings(read_only_kinds=kinds,
                           statement_timeout={str(k): str(v) for k, v in timeout.items()},
                           search_path=path)


def _check_keys(raw: Mapping[str, Any], known: frozenset[str], section: str, source: str | None,
                text: str, line: int | None = None) -> None:
    for key in raw:
        if key not in known:
            raise PolicyError(f"[{section}]: unknown key {key!r}{did_you_mean(key, known)}"
                              f" (keys: {', '.join(sorted(known))})", path=source,
                              line=line or _key_line(text, key))


def _check_approvals(raw: Any, source: str | None, text: str) -> None:
    if not isinstance(raw, Mapping):
        raise PolicyError("[approvals] must be a table", path=source,
                          line=_key_line(text, "approvals"))
    _check_keys(raw, APPROVALS_KEYS, "approvals", source, text)
    notify = raw.get("notify", [])
    if isinstance(notify, Mapping):
        notify = [notify]
    if not isinstance(notify, list):
        raise PolicyError("approvals.notify must be an array of tables ([[approvals.notify]])",
                          path=source, line=_key_line(text, "notify"))
    for entry in notify:
        if not isinstance(entry, Mapping):
            raise PolicyError("each [[approvals.notify]] entry must be a table", path=source,
                              line=_key_line(text, "notify"))
        try:
            Target.from_mapping(entry)
        except (PolicyError, TypeError) as exc:
            raise PolicyError(getattr(exc, "detail", str(exc)), path=source,
                              line=_key_line(text, "url")) from None
    url = raw.get("console_url")
    if url is not None and not str(url).startswith(("http://", "https://")):
        raise PolicyError("approvals.console_url must be an http(s):// URL", path=source,
                          line=_key_line(text, "console_url"))
    if raw.get("store", "file") not in ("file", "postgres"):
        raise PolicyError('approvals.store must be "file" or "postgres"', path=source,
                          line=_key_line(text, "store"))
    for key, low in (("wait_seconds", 0.0), ("ttl_seconds", 1.0)):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value < low):
            raise PolicyError(f"approvals.{key} must be a number of seconds >= {low:g}",
                              path=source, line=_key_line(text, key))


def _relative_to_policy(section: Mapping[str, Any], source: str | None,
                        keys: tuple[str, ...]) -> dict[str, Any]:
    """Relative file paths in a policy mean "next to the policy file", not "wherever the
    process happens to start" (the same file then works from any working directory)."""
    out = dict(section)
    if not source or source.startswith("<") or not Path(source).exists():
        return out
    base = Path(source).resolve().parent
    for key in keys:
        value = out.get(key)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            out[key] = str(base / value)
    return out


def _check_audit(audit: Mapping[str, Any], source: str | None, text: str) -> None:
    _check_keys(audit, AUDIT_KEYS, "audit", source, text)
    if "openlineage" in audit:
        _check_openlineage(audit["openlineage"], source)
    if audit.get("durability", "batched") not in ("strict", "batched"):
        raise PolicyError("audit.durability must be \"strict\" or \"batched\"", path=source,
                          line=_key_line(text, "durability"))
    if audit.get("on_failure", "closed") not in ("closed", "open"):
        raise PolicyError("audit.on_failure must be \"closed\" or \"open\"", path=source,
                          line=_key_line(text, "on_failure"))


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Load and validate a policy TOML file."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError("policy file not found; check GOVERNED_DB_POLICY or policy=",
                          path=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read policy file: {exc}", path=str(p)) from None
    return parse_policy(text, source=str(p))


def default_policy_text() -> str:
    """The built-in default profile as TOML (print it, copy it, edit it)."""
    return resources.files(__package__).joinpath("default.toml").read_text(encoding="utf-8")


_default: Policy | None = None


def default_policy() -> Policy:
    """The built-in default profile (the contract's default), parsed once."""
    global _default
    if _default is None:
        _default = _parse(default_policy_text(), source="<built-in default.toml>", builtin=True)
    return _default


from ._check import PolicyCheck, Problem, check_policy  # noqa: E402 - uses the names above
