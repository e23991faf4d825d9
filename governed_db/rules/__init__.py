"""decide: the rule catalogue, the static checks and their evaluation into one Decision (no I/O).

``_model`` (Rule, Finding, Decision) <- ``_checks`` (one check per rule) <- ``_catalogue`` (rule
ids, parameters, runtime limits) <- ``_decide`` (``evaluate``, session-resolved facts). The
policy model (:mod:`governed_db.policy`) validates its rules against the catalogue; nothing
here imports the policy at run time.
"""

from __future__ import annotations

from ._catalogue import RULES, catalogue_markdown, full_table_min_rows, rule_limit
from ._checks import _table_matches as table_matches
from ._decide import GOVERNANCE_SCHEMA, effective_facts, evaluate, rebuild_decision
from ._model import ALLOW, CheckContext, Decision, Finding, Rule

__all__ = ["ALLOW", "GOVERNANCE_SCHEMA", "RULES", "CheckContext", "Decision", "Finding", "Rule",
           "catalogue_markdown", "effective_facts", "evaluate", "full_table_min_rows",
           "rebuild_decision", "rule_limit", "table_matches"]
