"""Typed user code type-checks against governed_db (mypy --strict, one run for every case).

tests/typing_example.py asserts, line by line, the types mypy reveals (``# T: <type>``):
connections and cursors generic in their rows, sync and async, psycopg_pool with governed
connections. tests/typing_dropin_example.py is code written for psycopg with
``import governed_db as psycopg``: it must have no finding at all.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy is in the test extra")

HERE = Path(__file__).parent
ROOT = HERE.parent
EXAMPLE = HERE / "typing_example.py"
DROPIN = HERE / "typing_dropin_example.py"

_EXPECTED = re.compile(r"reveal_type\(.*\)\s*# T: (?P<type>.+?)\s*$")
_NOTE = re.compile(r'^(?P<file>[^:]+):(?P<line>\d+): note: Revealed type is "(?P<type>.+)"$')
_FINDING = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<kind>error|warning|note): (?P<msg>.+)$")


def _normalize(type_text: str) -> str:
    # mypy names a class by the module that defines it (governed_db._connection.Connection) and,
    # in older releases, prefixes builtins; the assertions use the public names.
    return re.sub(r"governed_db\._\w+\.", "governed_db.", type_text.replace("builtins.", ""))


def _expected(path: Path) -> dict[int, str]:
    out = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("reveal_type("):
            m = _EXPECTED.search(line)
            assert m, f"{path.name}:{number}: reveal_type without a '# T: <type>' comment"
            out[number] = m.group("type")
    return out


def check(output: str) -> tuple[list[str], dict[int, str]]:
    """mypy's findings (other than revealed types) and the types it revealed, by line."""
    problems, revealed = [], {}
    for line in output.splitlines():
        if m := _NOTE.match(line):
            assert Path(m.group("file")).name == EXAMPLE.name, line
            revealed[int(m.group("line"))] = _normalize(m.group("type"))
        elif (m := _FINDING.match(line)) and m.group("kind") != "note":
            problems.append(line)
    return problems, revealed


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    cache = tmp_path_factory.mktemp("mypy-cache")
    # --follow-imports=silent: governed_db and psycopg are read for their types, findings are
    # reported for the two example files only (`mypy --strict governed_db` checks the package).
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
         "--cache-dir", str(cache), "--no-error-summary", "--show-absolute-path",
         str(EXAMPLE), str(DROPIN)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.stderr == "", proc.stderr
    return proc.stdout


def test_revealed_types(mypy_output: str) -> None:
    problems, revealed = check(mypy_output)
    expected = _expected(EXAMPLE)
    assert len(expected) >= 40
    wrong = {n: (want, revealed.get(n)) for n, want in expected.items() if revealed.get(n) != want}
    assert wrong == {}, "line: (expected, revealed by mypy)"
    assert set(revealed) == set(expected)


def test_no_findings(mypy_output: str) -> None:
    problems, _ = check(mypy_output)
    assert problems == []

