"""The compatibility job's own machinery (tools/compat): the comparison, the allow-list, the swap.

The job itself (`make compat PSYCOPG_SRC=...`) needs a psycopg source checkout and minutes of
CPU; these tests check what decides its verdict, without psycopg's suite.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools" / "compat"


def _run_module():
    spec = importlib.util.spec_from_file_location("compat_run", TOOLS / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(out: Path, group: str, mode: str, outcomes: dict[str, str], wall: float) -> None:
    (out / f"{group}.{mode}.json").write_text(json.dumps(
        {"mode": mode, "exitstatus": 0, "outcomes": outcomes, "wall": wall}))


def test_compare_fails_on_a_test_passing_raw_only(tmp_path: Path, capsys) -> None:
    run = _run_module()
    _write(tmp_path, "rows", "raw", {"t::a": "passed", "t::b[1]": "passed", "t::c": "passed",
                                     "t::d": "failed", "t::e": "skipped"}, 2.0)
    _write(tmp_path, "rows", "governed", {"t::a": "passed", "t::b[1]": "failed",
                                          "t::d": "failed", "t::e": "skipped"}, 3.0)
    assert run.compare(tmp_path, ["rows"], {}) == 1
    out = capsys.readouterr().out
    # A failing test and a test that did not run at all (a module that failed to import) both
    # count; one failing on both sides does not.
    assert "[rows] t::b[1]: failed" in out and "[rows] t::c: not run" in out
    assert "t::d" not in out.split("pass raw but not governed", 1)[1]
    assert "1.50x" in out


def test_compare_allow_list_covers_named_tests_and_their_parameters(tmp_path: Path,
                                                                   capsys) -> None:
    run = _run_module()
    _write(tmp_path, "errors", "raw", {"t::a[x]": "passed", "t::a[y]": "passed"}, 1.0)
    _write(tmp_path, "errors", "governed", {"t::a[x]": "failed", "t::a[y]": "error"}, 1.0)
    assert run.compare(tmp_path, ["errors"], {"t::a": "reads psycopg._private"}) == 0
    assert "allow-listed (2" in capsys.readouterr().out
    assert run.compare(tmp_path, ["errors"], {"t::a[x]": "reads psycopg._private"}) == 1


def test_compare_without_results_says_what_to_run(tmp_path: Path, capsys) -> None:
    run = _run_module()
    assert run.compare(tmp_path, ["copy"], {}) == 2
    assert "copy: no results yet" in capsys.readouterr().err


def test_allow_list_entries_need_a_reason(tmp_path: Path) -> None:
    run = _run_module()
    path = tmp_path / "allow.toml"
    path.write_text('[[test]]\nid = "tests/test_x.py::test_y"\n')
    with pytest.raises(SystemExit, match="needs an id and a reason"):
        run._load_allowlist(path)
    # The shipped allow-list parses and every entry has its reason.
    for nodeid, reason in run._load_allowlist(TOOLS / "allowlist.toml").items():
        assert nodeid.startswith("tests/") and reason


def test_plugin_binds_psycopg_and_psycopg_pool_to_governed_db(tmp_path: Path) -> None:
    (tmp_path / "test_bound.py").write_text(
        "import psycopg, psycopg_pool, governed_db\n"
        "from psycopg.types.json import Jsonb\n"
        "import psycopg.types.json\n"
        "def test_bound():\n"
        "    assert psycopg is governed_db\n"
        "    assert psycopg.types.json.Jsonb is Jsonb\n"
        "    assert psycopg_pool.pool.Connection is governed_db.Connection\n")
    out = tmp_path / "out.json"
    env = {**os.environ, "GOVERNED_DB_COMPAT_MODE": "governed", "GOVERNED_DB_COMPAT_OUT": str(out),
           "PYTHONPATH": str(TOOLS)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "governed_db_compat", "-p", "no:governed_db",
                           "test_bound.py"], cwd=tmp_path, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(out.read_text())["outcomes"] == {"test_bound.py::test_bound": "passed"}


def test_compare_counts_a_difference_only_when_a_rerun_alone_fails(tmp_path: Path,
                                                                    capsys) -> None:
    run = _run_module()
    raw = {"t::timed": "passed", "t::real": "passed", "t::never": "passed"}
    (tmp_path / "pool.raw.json").write_text(json.dumps(
        {"outcomes": raw, "wall": 1.0, "markers": {"t::timed": ["slow", "timing"]}}))
    _write(tmp_path, "pool", "governed", {"t::timed": "failed", "t::real": "failed",
                                          "t::never": "failed"}, 1.0)
    (tmp_path / "rerun.json").write_text(json.dumps(
        {"t::timed": ["passed", "passed", "passed"], "t::real": ["passed", "failed", "passed"]}))
    assert run.compare(tmp_path, ["pool"], {}) == 1
    out = capsys.readouterr().out
    unstable, regressions = out.split("pass raw but not governed", 1)
    assert ("[pool] t::timed: failed in the group run, then passed/passed/passed"
            " (psycopg marks it slow, timing)") in unstable
    # One failing rerun confirms a difference; a test never rerun stays a difference.
    assert "[pool] t::real: failed (alone: passed/failed/passed)" in regressions
    assert "[pool] t::never: failed" in regressions and "t::timed" not in regressions
    (tmp_path / "rerun.json").write_text(json.dumps(
        {n: ["passed"] for n in ("t::timed", "t::real", "t::never")}))
    assert run.compare(tmp_path, ["pool"], {}) == 0
    assert "3 difference(s) did not reproduce" in capsys.readouterr().out


def test_rerun_runs_each_difference_governed_and_alone(tmp_path: Path) -> None:
    run = _run_module()
    src, out = tmp_path / "src", tmp_path / "out"
    (src / "tests").mkdir(parents=True)
    out.mkdir()
    # Fails on its first run only (a counter file beside it); the other always fails; a third
    # test of the same file is not asked for and must not run.
    (src / "tests" / "test_f.py").write_text(
        "import pathlib, psycopg, pytest\n"
        "HERE = pathlib.Path(__file__).parent\n"
        "@pytest.mark.timing\n"
        "def test_once():\n"
        "    assert psycopg.__name__ == 'governed_db'\n"
        "    n = HERE / 'n'\n"
        "    first = not n.exists()\n"
        "    n.write_text('x')\n"
        "    assert not first\n"
        "def test_always():\n"
        "    assert False\n"
        "def test_other():\n"
        "    (HERE / 'other').write_text('ran')\n")
    got = run._rerun(src, out, ["tests/test_f.py::test_once", "tests/test_f.py::test_always"],
                     "dbname=unused", [], 3)
    assert got == {"tests/test_f.py::test_once": ["failed", "passed", "passed"],
                   "tests/test_f.py::test_always": ["failed", "failed", "failed"]}
    assert json.loads((out / "rerun.json").read_text()) == got
    assert not (src / "tests" / "other").exists()
    assert "--- rerun 3 of 3" in (out / "rerun.governed.log").read_text()
    # The plugin keeps psycopg's markers of the tests that may fail under load.
    last = json.loads((out / "rerun.governed.json").read_text())
    assert last["markers"] == {"tests/test_f.py::test_once": ["timing"]}


def test_allow_list_entries_for_a_module_and_by_pattern(tmp_path: Path, capsys) -> None:
    run = _run_module()
    allow = {"tests/test_enc.py": "imports psycopg._encodings",
             "tests/test_w.py::*[wait_c*": "skipif reads psycopg._cmodule"}
    assert run._allowed("tests/test_enc.py::test_a[x]", allow) == "imports psycopg._encodings"
    assert run._allowed("tests/test_w.py::test_r[wait_c-R]", allow) == \
        "skipif reads psycopg._cmodule"
    # `[` is itself in a pattern (not a character class); other names are not covered.
    assert run._allowed("tests/test_w.py::test_r[wait_py-R]", allow) is None
    assert run._allowed("tests/test_w.py::test_wait_conn", allow) is None
    assert run._allowed("tests/test_encodings.py::test_a", allow) is None


def test_differences_rerun_only_tests_that_ran_and_failed(tmp_path: Path) -> None:
    run = _run_module()
    _write(tmp_path, "m", "raw", {"t::ran": "passed", "t::err": "passed", "t::gone": "passed",
                                  "t::allowed": "passed", "t::both": "failed"}, 1.0)
    _write(tmp_path, "m", "governed", {"t::ran": "failed", "t::err": "error",
                                       "t::allowed": "failed", "t::both": "failed"}, 1.0)
    # A test its module's import error kept from running is not run again (nothing to learn
    # alone); it still counts in the comparison.
    assert run._differences(tmp_path, ["m"], {"t::allowed": "private"}) == ["t::err", "t::ran"]
    assert run.compare(tmp_path, ["m"], {"t::allowed": "private"}) == 1
