"""`governed-db policy check` catches mistakes: every error at once, each at the line and
column of the offending key, with the name that was probably meant; warnings for rules that
can never fire; with --dsn, names checked against the database; what each kind may do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from governed_db import errors
from governed_db.cli import main
from governed_db.policy import check_policy, load_policy, parse_policy
from governed_db.policy._positions import index_positions

# Each line of BAD has at most one mistake; the comment says where its message points.
BAD = """\
mod = "enforce"

[session]
read_only_kinds = ["ai_agent", "ai_agnet"]

[[rules]]
id = "statement.require-approval"
level = "approval"
kinds = ["INSERT", "INSRT"]

[[rules]]
id = "function.deny"
functions = ["pg_sleeep"]

[[rules]]
id = "session.settings-allowlist"
allow = ["TimeZone", "work_mme"]
max_rows = 3

[[rules]]
id = "statement.dissallow-drop"

[masking]
detect_valus = true

[[masking.columns]]
columns = ["users.email"]
stratgy = "hash"
"""

BAD_ERRORS = [
    (1, 1, "unknown top-level key 'mod'; did you mean mode? (keys: approvals, audit, extends,"
           " identity, masking, mcp, mode, name, rules, session, version)"),
    (4, 32, "session.read_only_kinds: unknown identity kind 'ai_agnet'; did you mean ai_agent?"
            " (kinds: human, service, ai_agent)"),
    (9, 20, "rule statement.require-approval: kinds: unknown statement kind 'INSRT'; did you"
            " mean INSERT?"),
    (13, 14, "rule function.deny: functions: unknown function 'pg_sleeep'; did you mean"
             " pg_sleep? (a function of your own: run `policy check --dsn` to check it against"
             " the database)"),
    (17, 22, "rule session.settings-allowlist: allow: unknown setting 'work_mme'; did you mean"
             " work_mem?"),
    (18, 1, "rule session.settings-allowlist: unknown parameter 'max_rows' (it takes allow)"),
    (21, 1, "unknown rule id 'statement.dissallow-drop'; did you mean statement.disallow-drop?"
            " (`governed-db policy rules` lists them)"),
    (24, 1, "[masking]: unknown key 'detect_valus'; did you mean detect_values? (keys: columns,"
            " detect_in_text, detect_names, detect_values, hash_key_env, not_sensitive,"
            " server_side, unmask)"),
    (28, 1, "[[masking.columns]]: unknown key 'stratgy'; did you mean strategy? (keys: columns,"
            " strategy)"),
]


def _write(tmp_path, text, name="policy.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _run(*args):
    return CliRunner().invoke(main, ["policy", "check", *map(str, args)])


def test_every_error_at_once_each_at_its_key_line_and_column(tmp_path):
    path = _write(tmp_path, BAD)
    result = _run(path)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[:len(BAD_ERRORS)] == [f"error: {path}:{ln}:{col}: {msg}"
                                       for ln, col, msg in BAD_ERRORS]
    assert lines[-1] == f"FAILED: {path}: {len(BAD_ERRORS)} error(s), 0 warning(s)"


def test_the_python_api_returns_the_same_problems(tmp_path):
    path = _write(tmp_path, BAD)
    result = check_policy(path)
    assert not result.ok and result.policy is None and not result.warnings
    assert [(e.line, e.column, e.message) for e in result.errors] == BAD_ERRORS
    assert [e.key for e in result.errors][:4] == [
        "mod", "session.read_only_kinds[1]", "rules[0].kinds[1]", "rules[1].functions[0]"]


def test_json_output(tmp_path):
    path = _write(tmp_path, BAD)
    result = _run(path, "--json")
    assert result.exit_code == 1
    doc = json.loads(result.output)
    assert doc["ok"] is False and doc["exit_code"] == 1 and doc["policy"] is None
    assert doc["errors"][2] == {
        "level": "error", "line": 9, "column": 20, "key": "rules[0].kinds[1]",
        "message": BAD_ERRORS[2][2]}


def test_the_loader_rejects_an_unknown_statement_kind_too():
    """Not only `policy check`: connect/load fail on it (it would silently match nothing)."""
    with pytest.raises(errors.PolicyError, match=r"p.toml:1: rule statement.require-approval:"
                       r" kinds: unknown statement kind 'INSRT'; did you mean INSERT\?"):
        parse_policy('[[rules]]\nid = "statement.require-approval"\nkinds = ["INSRT"]\n',
                     source="p.toml")
    with pytest.raises(errors.PolicyError, match="unknown key 'stratgy'; did you mean strategy"):
        parse_policy('[[masking.columns]]\ncolumns = ["a.b"]\nstratgy = "hash"\n')


@pytest.mark.parametrize("kind", ["SELECT", "INSERT", "ROLLBACK TO", "EMPTY", "MERGE", "COPY",
                                  "SET", "REVOKE", "SECURITY LABEL"])
def test_every_kind_the_analyzer_reports_is_accepted(kind):
    parse_policy(f'[[rules]]\nid = "statement.require-approval"\nkinds = ["{kind}"]\n')


def test_kinds_the_corpus_produces_are_all_known():
    from governed_db.analysis import analyze
    from governed_db.policy._names import statement_kinds

    from .conftest import corpus_statements

    seen = set()
    for case in corpus_statements():
        a = analyze(case["sql"])
        for s in a.statements:
            seen |= s.kinds
    assert seen and seen <= statement_kinds(), seen - statement_kinds()


def test_a_good_policy_passes_and_says_what_each_kind_may_do(tmp_path):
    path = _write(tmp_path, """\
[[rules]]
id = "statement.allowlist"
allow = ["SELECT", "INSERT", "UPDATE", "BEGIN", "COMMIT", "ROLLBACK"]

[[rules]]
id = "statement.require-approval"
identity_kinds = ["ai_agent"]
kinds = ["UPDATE"]
level = "approval"

[[rules]]
id = "statement.require-approval"
kinds = ["DELETE"]
tables = ["orders"]
level = "approval"
""")
    result = _run(path)
    assert result.exit_code == 0, result.output
    out = result.output.splitlines()
    assert out[0].startswith(f"OK: {path}: policy 'custom' (enforce), extends the built-in"
                             " default, 22 rules")
    assert out[1:] == [
        "What each identity kind may do (sample statements on an ordinary table):",
        "human (read-write session):",
        "  read: allowed",
        "  write: allowed",
        "  DDL: needs approval by statement.disallow-ddl",
        "  DROP/TRUNCATE: denied: DROP by statement.disallow-drop; TRUNCATE by"
        " statement.disallow-truncate",
        "  on orders: write INSERT, UPDATE allowed; DELETE needs approval by"
        " statement.require-approval",
        "  rows changed per statement: at most 1000 (above: rolled back and denied)",
        "service (read-write session):",
        "  read: allowed",
        "  write: allowed",
        "  DDL: needs approval by statement.disallow-ddl",
        "  DROP/TRUNCATE: denied: DROP by statement.disallow-drop; TRUNCATE by"
        " statement.disallow-truncate",
        "  on orders: write INSERT, UPDATE allowed; DELETE needs approval by"
        " statement.require-approval",
        "  rows changed per statement: at most 10000 (above: rolled back and denied)",
        "ai_agent (read-only session, statement_timeout 30s, PII in free text masked):",
        "  read: allowed",
        "  write: INSERT allowed; UPDATE needs approval by statement.require-approval; DELETE"
        " denied by statement.allowlist (such a write runs read-write for that statement alone)",
        "  DDL: denied by statement.allowlist",
        "  DROP/TRUNCATE: denied: DROP by statement.allowlist, statement.disallow-drop;"
        " TRUNCATE by statement.allowlist, statement.disallow-truncate",
        "  rows changed per statement: at most 10 (above: rolled back and denied)",
    ]
    quiet = _run(path, "-q")
    assert quiet.exit_code == 0 and quiet.output == ""


def test_the_default_profile_explained_matches_the_contract(tmp_path):
    """Agents read only; everyone: no DROP/TRUNCATE, DDL needs approval (architecture.md)."""
    result = check_policy(_write(tmp_path, "# nothing: the built-in default\n"))
    assert result.ok and not result.warnings
    allows = {a["kind"]: a for a in result.allows}
    agent = allows["ai_agent"]
    assert agent["read"] == {"allowed": ["SELECT"]} and agent["read_only_session"]
    assert set(agent["write"]["denied"]) == {"INSERT", "UPDATE", "DELETE"}
    for kind in ("human", "service"):
        assert allows[kind]["write"] == {"allowed": ["INSERT", "UPDATE", "DELETE"]}
        assert allows[kind]["DDL"] == {"approval": {"CREATE": ["statement.disallow-ddl"],
                                                    "ALTER": ["statement.disallow-ddl"]}}
        assert allows[kind]["DROP/TRUNCATE"] == {"denied": {
            "DROP": ["statement.disallow-drop"], "TRUNCATE": ["statement.disallow-truncate"]}}
    assert [x["max"] for x in allows["human"]["max_rows_changed"]] == [1000]


def test_observe_mode_says_would_be_denied(tmp_path):
    result = _run(_write(tmp_path, 'mode = "observe"\n'))
    assert result.exit_code == 0
    assert ("  DROP/TRUNCATE: would be denied (observe mode): DROP by statement.disallow-drop;"
            " TRUNCATE by statement.disallow-truncate") in result.output.splitlines()


WARN = """\
[[rules]]
id = "statement.affected-row-limit"
identity_kinds = ["service"]
tables = ["orders"]
max_rows = 500

[[rules]]
id = "statement.require-approval"
kinds = ["DROP"]
level = "approval"

[[rules]]
id = "statement.affected-row-limit"
max_rows_by_kind = { service = 50000 }

[[rules]]
id = "catalog.disallow-write"
tables = ["users"]

[[rules]]
id = "statement.disallow-multi-statement"
identity_kinds = []

[[rules]]
id = "statement.require-approval"
kinds = ["UPDATE"]
"""


def test_warnings_for_rules_that_never_fire_and_narrowed_defaults(tmp_path):
    path = _write(tmp_path, WARN)
    result = check_policy(path)
    assert result.ok and not result.errors
    assert [(w.line, w.column, w.message) for w in result.warnings] == [
        (1, 1, "rule statement.affected-row-limit overrides the built-in rule of that id (rules"
               " merge by id) and narrows it: identity_kinds = ['service'] removes it for human,"
               " ai_agent; tables = ['orders'] limits it to those tables; max_rows = 500 replaces"
               " the per-kind limits and raises them (ai_agent 10 -> 500). To keep the default,"
               " change only its limits or level here; to add a narrower rule beside it, use a"
               " rule id of its own (such as statement.require-approval)"),
        (7, 1, "rule statement.require-approval can never take effect: a stricter rule already"
               " denies every statement it covers (for ai_agent: statement.allowlist,"
               " statement.disallow-drop; for human: statement.disallow-drop; for service:"
               " statement.disallow-drop)"),
        (18, 1, "rule catalog.disallow-write never looks at tables, so tables = [...] does not"
                " narrow it; remove the key or use a rule that takes tables"),
        (22, 1, "rule statement.disallow-multi-statement: identity_kinds = [] names no kind,"
                " which means every kind; name the kinds it is for, or remove the key"),
        (24, 1, 'rule statement.require-approval at level "error" (the default level) denies'
                ' these statements outright; set level = "approval" to have a person decide'),
    ]
    assert _run(path).exit_code == 0
    strict = _run(path, "--strict", "-q")
    assert strict.exit_code == 1
    assert strict.output.splitlines()[-1] == f"FAILED: {path}: 5 warning(s) (--strict)"
    assert strict.output.splitlines()[0] == f"warning: {path}:1:1: {result.warnings[0].message}"


def test_a_limit_a_stricter_layer_already_caps(tmp_path):
    path = _write(tmp_path, """\
[[rules]]
id = "statement.affected-row-limit"   # the built-in, unchanged

[[rules]]
id = "statement.affected-row-limit"
identity_kinds = ["service"]
max_rows = 50000

[[rules]]
id = "statement.affected-row-limit"
identity_kinds = ["human"]
tables = ["orders"]
max_rows = 100
""")
    result = check_policy(path)
    assert [(w.line, w.message) for w in result.warnings] == [
        (4, "rule statement.affected-row-limit can never fire: a stricter limit of the same rule"
            f" already applies (service: 50000, capped at 10000 by builtin, overridden at"
            f" {path}:1); lower the limit, or change the other rule")]


def test_read_only_allowlists_with_no_read_only_kinds_never_fire(tmp_path):
    result = check_policy(_write(tmp_path, "[session]\nread_only_kinds = []\n"))
    assert [(w.line, w.message) for w in result.warnings] == [
        (None, f"rule {rid} applies to read-only identities only (session.read_only_kinds), and"
               " that list is empty: it can never fire; scope it with identity_kinds")
        for rid in ()]  # built-in rules are not warned about: only the file's own entries
    path = _write(tmp_path, '[session]\nread_only_kinds = []\n\n[[rules]]\n'
                            'id = "catalog.allowlist"\nallow = ["pg_stats"]\n')
    assert [(w.line, w.message) for w in check_policy(path).warnings] == [
        (4, "rule catalog.allowlist applies to read-only identities only"
            " (session.read_only_kinds), and that list is empty: it can never fire; scope it"
            " with identity_kinds")]


def test_a_row_limit_for_a_kind_that_may_not_write_never_fires(tmp_path):
    path = _write(tmp_path, '[[rules]]\nid = "statement.affected-row-limit"\n\n[[rules]]\n'
                            'id = "statement.affected-row-limit"\nidentity_kinds = ["ai_agent"]'
                            '\nmax_rows = 5\n')
    assert [(w.line, w.message) for w in check_policy(path).warnings] == [
        (4, "rule statement.affected-row-limit can never fire: other rules deny every write of"
            " ai_agent identities before it runs")]


def test_exit_codes(tmp_path):
    assert _run(_write(tmp_path, "")).exit_code == 0
    assert _run(_write(tmp_path, "[[rules]]\nid = 1 2\n")).exit_code == 1  # not TOML
    missing = _run(tmp_path / "nope.toml")
    assert missing.exit_code == 2 and "policy file not found" in missing.output
    assert _run().exit_code == 2  # usage
    unreachable = _run(_write(tmp_path, ""), "--dsn", "host=/nonexistent dbname=x")
    assert unreachable.exit_code == 2
    assert "--dsn: cannot read the database catalog" in unreachable.output


def test_not_valid_toml_points_at_line_and_column(tmp_path):
    path = _write(tmp_path, '[[rules]]\nid = "statement.disallow-drop"\nlevel = error\n')
    result = check_policy(path)
    (e,) = result.errors
    assert (e.line, e.column) == (3, 9) and e.message.startswith("not valid TOML: ")


def test_a_missing_signing_key_is_an_error_at_its_key(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    path = _write(conf, '[audit]\ndurability = "strict"\nsigning_key = "keys/missing.key"\n')
    result = _run(path)
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == (
        f"error: {path}:3:1: [audit] signing_key {conf / 'keys' / 'missing.key'} does not"
        " exist (relative paths are relative to the policy file); create it with"
        " `governed-db keygen --out DIR`")
    made = CliRunner().invoke(main, ["keygen", "--out", str(conf / "keys")])
    assert made.exit_code == 0
    (conf / "keys" / "audit-signing.key").rename(conf / "keys" / "missing.key")
    assert _run(path, "-q").exit_code == 0  # found next to the policy, from any directory


def test_every_policy_the_checker_passes_loads(tmp_path):
    """The loader runs last: anything it rejects is an error of the check too."""
    for text in ('[approvals]\nstore = "sqlite"\n', '[mcp]\nmax_rowz = 5\n',
                 '[[approvals.notify]]\nkind = "slack"\nurl = "ftp://x"\n',
                 '[[rules]]\nid = "statement.affected-row-limit"\nidentity_kinds = ["human"]\n'
                 'max_rows = "ten"\n',
                 '[identity]\nrequire_verified = ["ai_agent"]\napprover_roles = "dba"\n'):
        path = _write(tmp_path, text)
        result = check_policy(path)
        with pytest.raises(errors.PolicyError):
            load_policy(path)
        assert result.errors, text
        assert all(e.line is not None for e in result.errors), result.errors


def test_positions_of_keys_elements_and_inline_tables():
    text = ('x = """a\nb"""\n[[rules]]\nid = \'a\'\n[[rules]]\n  "id" = "b"  # c\n'
            'kinds = [ "INSERT",\n   "INSRT" ]\n[a."b c"]\ne.f = {g = [1, {h = 2}]}\n')
    p = index_positions(text)
    assert p.get(("rules", 1, "id")) == (6, 3)
    assert p.get(("rules", 1, "kinds", 1)) == (8, 4)
    assert p.get(("a", "b c", "e", "f", "g", 1, "h")) == (10, 17)
    assert p.nearest(("rules", 0, "nope", 3)) == (3, 1)  # its [[rules]] header


# -- against the database's catalog (--dsn) ----------------------------------------------


@pytest.fixture
def shop(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE feedback (id int, body text)")
        c.execute("CREATE FUNCTION tidy_feedback() RETURNS void LANGUAGE sql AS 'SELECT 1'")
    return dsn


CATALOG = """\
[[rules]]
id = "statement.require-approval"
kinds = ["DELETE"]
level = "approval"
tables = ["feedbak", "orders", "audit_*", "nothing_*"]

[[rules]]
id = "function.deny"
functions = ["tidy_feedback", "tidy_feedbak"]

[[masking.columns]]
columns = ["feedback.bdy", "feedback.body", "*.notes"]
"""


def test_dsn_checks_tables_columns_and_functions(shop, tmp_path):
    path = _write(tmp_path, CATALOG)
    result = _run(path, "--dsn", shop)
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"error: {path}:5:11: rule statement.require-approval: tables: no table 'feedbak' in the"
        " database; did you mean feedback?",
        f"error: {path}:9:31: rule function.deny: functions: no function 'tidy_feedbak' in the"
        " database or among PostgreSQL's built-ins; did you mean tidy_feedback?",
        f"error: {path}:12:12: masking.columns[0]: no column 'feedback.bdy' in the database;"
        " did you mean feedback.body?",
        f"warning: {path}:5:43: rule statement.require-approval: tables: 'nothing_*' matches no"
        " table in the database",
        f"warning: {path}:12:45: masking.columns[0]: '*.notes' matches no column in the database",
        f"FAILED: {path}: 3 error(s), 2 warning(s)",
    ]
    # Without the database, a function that is not a built-in is only a warning.
    offline = check_policy(path)
    assert offline.ok
    assert [(w.line, w.column) for w in offline.warnings
            if "not a PostgreSQL built-in" in w.message] == [(9, 14), (9, 31)]


def test_dsn_ok_says_the_catalog_was_checked(shop, tmp_path):
    path = _write(tmp_path, '[[masking.columns]]\ncolumns = ["feedback.body"]\n')
    result = _run(path, "--dsn", shop)
    assert result.exit_code == 0, result.output
    assert "tables and columns checked against the database" in result.output.splitlines()[0]
    doc = json.loads(_run(path, "--dsn", shop, "--json").output)
    assert doc["ok"] and doc["catalog_checked"] and doc["errors"] == []


# -- the README's and docs' own words, run literally ---------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _block(doc: str, after: str, lang: str) -> str:
    text = (ROOT / doc).read_text(encoding="utf-8").split(after, 1)[1]
    return text.split(f"```{lang}\n", 1)[1].split("\n```", 1)[0] + "\n"


def _shell(command: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bindir = str(Path(sys.executable).parent)  # where the governed-db console script is
    full = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), **env}
    return subprocess.run(command, shell=True, cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=120)


README_EXAMPLE = "may do. `--strict` makes warnings fail"


def _edit_as_the_readme_says(path: Path, example: str) -> None:
    """Edit the copied default: its row-limit entry takes the example's limits (in place), the
    example's other entries are added."""
    limit, rest = example.split("\n[[rules]]\n", 1)
    new_limits = next(ln for ln in limit.splitlines() if ln.startswith("max_rows_by_kind"))
    text = path.read_text()
    old_limits = next(ln for ln in text.splitlines() if ln.startswith("max_rows_by_kind"))
    path.write_text(text.replace(old_limits, new_limits) + "\n[[rules]]\n" + rest)


def test_readme_policy_workflow_runs_as_written(tmp_path):
    made = _shell("governed-db policy show-default > policy.toml", tmp_path)
    assert made.returncode == 0, made.stderr
    checked = _shell("governed-db policy check policy.toml", tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""  # the default profile has nothing to warn about
    assert checked.stdout.startswith("OK: policy.toml: policy 'default' (enforce)")
    assert "ai_agent (read-only session, statement_timeout 30s" in checked.stdout
    # The README's example, alone and added to the copied default, checks clean even --strict.
    example = _block("README.md", README_EXAMPLE, "toml")
    (tmp_path / "example.toml").write_text(example)
    alone = _shell("governed-db policy check example.toml --strict", tmp_path)
    assert alone.returncode == 0, alone.stderr
    _edit_as_the_readme_says(tmp_path / "policy.toml", example)
    edited = _shell("governed-db policy check policy.toml --strict", tmp_path)
    assert edited.returncode == 0, edited.stderr
    assert ("  on orders: write INSERT, UPDATE allowed; DELETE needs approval by"
            " statement.require-approval") in edited.stdout.splitlines()


def test_the_old_readme_example_is_what_policy_check_warns_about(tmp_path):
    """The example the README had: it removed the default row limit for agents and people."""
    (tmp_path / "old.toml").write_text(
        '[[rules]]\nid = "statement.affected-row-limit"\nidentity_kinds = ["service"]\n'
        'tables = ["orders"]\nmax_rows = 500\nlevel = "approval"\n')
    result = _shell("governed-db policy check old.toml --strict -q", tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "warning: old.toml:1:1: rule statement.affected-row-limit overrides the built-in rule of"
        " that id (rules merge by id) and narrows it: identity_kinds = ['service'] removes it"
        " for human, ai_agent;")


def test_deployment_ci_commands_run_as_written(shop, tmp_path):
    with psycopg.connect(shop, autocommit=True) as c:  # the README example's shop schema
        c.execute("ALTER TABLE users ADD COLUMN birth_date date")
        c.execute("ALTER TABLE orders ADD COLUMN notes text")
    policy = _shell("governed-db policy show-default > policy.toml", tmp_path)
    assert policy.returncode == 0
    _edit_as_the_readme_says(tmp_path / "policy.toml", _block("README.md", README_EXAMPLE, "toml"))
    commands = _block("docs/deployment.md", "## Check your policy in CI", "sh").splitlines()
    assert len(commands) == 2 and all(c.startswith("governed-db policy check") for c in commands)
    for command in commands:
        result = _shell(command, tmp_path, STAGING_DATABASE_URL=shop)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), command
    # A misspelt table fails the same command, at its line and column.
    with (tmp_path / "policy.toml").open("a") as fh:
        fh.write('\n[[rules]]\nid = "table.deny-list"\ntables = ["feedbak"]\n')
    lines = (tmp_path / "policy.toml").read_text().splitlines()
    failed = _shell(commands[1], tmp_path, STAGING_DATABASE_URL=shop)
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[0] == (
        f"error: policy.toml:{len(lines)}:11: rule table.deny-list: tables: no table 'feedbak'"
        " in the database; did you mean feedback?")
    workflow = _block("docs/deployment.md", "In GitHub Actions:", "yaml")
    (tmp_path / "deploy").mkdir()
    (tmp_path / "policy.toml").rename(tmp_path / "deploy" / "policy.toml")
    for line in workflow.splitlines():
        command = line.removeprefix("- run: ")
        if command.startswith("governed-db"):
            result = _shell(command, tmp_path)
            # Without --dsn table names are not checked: the misspelt one passes here.
            assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), command


def test_the_demo_policy_checks_clean():
    from governed_db.cli.demo import DEMO_POLICY
    from governed_db.policy._check import check_policy_text

    result = check_policy_text(DEMO_POLICY, source="demo")
    assert (result.errors, result.warnings) == ((), ())
