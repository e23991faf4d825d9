"""A Policy built in Python is validated like one loaded from a file (attrs validators).

Each bad field raises PolicyError naming the field as a policy file spells it; from a file,
the message also names the file and line.
"""

from __future__ import annotations

import pytest

from governed_db.errors import PolicyError
from governed_db.policy import (Masking, MaskRule, Policy, RuleConfig, SessionSettings,
                                UnmaskGrant, parse_policy)

BAD = [
    (lambda: RuleConfig(id="statement.disallow-drop", level="fatal"),
     "rule statement.disallow-drop: level must be one of error, approval, warning, disabled,"
     " not 'fatal'"),
    (lambda: RuleConfig(id="statement.disallow-drop", identity_kinds="ai_agent"),
     "rule statement.disallow-drop: identity_kinds must be a tuple of names, not 'ai_agent'"
     " (write ('ai_agent',) or ['ai_agent'])"),
    (lambda: RuleConfig(id="statement.disallow-drop", identity_kinds=("robot",)),
     "rule statement.disallow-drop: identity_kinds: unknown identity kind 'robot'; use one of"
     " human, service, ai_agent"),
    (lambda: RuleConfig(id="statement.disallow-drop", roles=["admin"]),
     "rule statement.disallow-drop: roles must be a tuple of names, not ['admin']"),
    (lambda: RuleConfig(id="statement.disallow-drop", tables=(1,)),
     "rule statement.disallow-drop: tables must be a tuple of names, not (1,)"),
    (lambda: RuleConfig(id=7), "id must be str, not int 7"),
    (lambda: RuleConfig(id="statement.disallow-drop", params=[("allow", "SELECT")]),
     "rule statement.disallow-drop: params must be Mapping, not list"),
    (lambda: MaskRule(columns="users.ssn"),
     "masking.columns: columns must be a tuple of names, not 'users.ssn'"),
    (lambda: MaskRule(columns=("users.ssn",), strategy="scramble"),
     "masking.columns: strategy must be one of redact, partial, email, hash, null, none,"
     " not 'scramble'"),
    (lambda: UnmaskGrant(columns=("users.ssn",), roles="admin"),
     "masking.unmask: roles must be a tuple of names, not 'admin'"),
    (lambda: Masking(detect_values="no"), "masking.detect_values must be bool, not str 'no'"),
    (lambda: Masking(detect_in_text=("agent",)),
     "masking.detect_in_text: unknown identity kind 'agent'"),
    (lambda: Masking(columns=({"columns": ["users.ssn"]},)),
     "masking.columns must be a tuple of MaskRule"),
    (lambda: SessionSettings(read_only_kinds="ai_agent"),
     "session.read_only_kinds must be a tuple of names"),
    (lambda: SessionSettings(search_path=["public"]), "session.search_path must be str"),
    (lambda: Policy(mode="audit"), "mode must be one of enforce, observe, not 'audit'"),
    (lambda: Policy(version="1"), "version must be int, not str '1'"),
    (lambda: Policy(version=True), "version must be int, not bool True"),
    (lambda: Policy(rules=[RuleConfig(id="statement.disallow-drop")]),
     "rules must be a tuple of RuleConfig"),
]


@pytest.mark.parametrize("build, message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_fields_are_refused_with_the_field_named(build, message):
    with pytest.raises(PolicyError) as exc:
        build()
    assert str(exc.value).startswith(message), str(exc.value)


def test_good_structures_build():
    p = Policy(rules=(RuleConfig(id="statement.disallow-drop", identity_kinds=("ai_agent",),
                                 roles=("x",), tables=("public.*",)),),
               masking=Masking(columns=(MaskRule(columns=("users.ssn",), strategy="partial"),),
                               unmask=(UnmaskGrant(columns=("users.ssn",), roles=("dpo",)),)),
               session=SessionSettings(read_only_kinds=("ai_agent", "service"),
                                       search_path="public"))
    assert p.masking.columns[0].strategy == "partial"


def test_from_a_file_the_message_names_file_and_line():
    text = 'extends = "none"\n\n[[rules]]\nid = "statement.disallow-drop"\nlevel = "fatal"\n'
    with pytest.raises(PolicyError) as exc:
        parse_policy(text, source="p.toml")
    assert str(exc.value) == ("p.toml:3: rule statement.disallow-drop: level must be one of"
                              " error, approval, warning, disabled, not 'fatal'")
    assert (exc.value.path, exc.value.line) == ("p.toml", 3)
