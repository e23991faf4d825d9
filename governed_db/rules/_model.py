"""What a decision is made of: a catalogue entry (:class:`Rule`), a :class:`Finding`, the
:class:`Decision` (no I/O)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ..analysis import Analysis, StatementFacts
from ..errors import PolicyError

if TYPE_CHECKING:  # the policy model imports the catalogue: names for annotations only
    from ..policy import RuleConfig


_SEVERITY = {"warning": 1, "approval": 2, "error": 3}


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
