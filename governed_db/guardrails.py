"""The former name of :mod:`governed_db.rules` (the rule catalogue and evaluate()), kept for
code that imports it; new code imports ``governed_db.rules``."""

from __future__ import annotations

from .rules import (
    ALLOW,
    RULES,
    CheckContext,
    Decision,
    Finding,
    Rule,
    catalogue_markdown,
    effective_facts,
    evaluate,
    full_table_min_rows,
    rebuild_decision,
    rule_limit,
)

__all__ = ["ALLOW", "RULES", "CheckContext", "Decision", "Finding", "Rule", "catalogue_markdown",
           "effective_facts", "evaluate", "full_table_min_rows", "rebuild_decision",
           "rule_limit"]
