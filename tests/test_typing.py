"""governed_db and typed user code type-check (mypy --strict, one run for every case).

The package itself: ``mypy --strict governed_db`` has no finding at all.
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
PACKAGE = ROOT / "governed_db"

_EXPECTED = re.compile(r"reveal_type\(.*\)\s*# T: (?P<type>.+?)\s*$")
_NOTE = re.compile(r'^(?P<file>[^:]+):(?P<line>\d+): note: Revealed type is "(?P<type>.+)"$')
_FINDING = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<kind>error|warning|note): (?P<msg>.+)$")
# mypy's last line: "Success: no issues found in N source files" or "... (checked N source files)"
_CHECKED = re.compile(r"(?:found in|checked) (?P<n>\d+) source files?\)?$")


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
    # One run: the package (every module of it, as `mypy --strict governed_db` checks it) and
    # the two example files; the cache is this test's own (nothing written outside tmp).
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache),
         "--show-absolute-path", str(PACKAGE), str(EXAMPLE), str(DROPIN)],
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


def test_package_strict(mypy_output: str) -> None:
    """`mypy --strict governed_db` is clean: any finding in the package fails, named."""
    problems, _ = check(mypy_output)
    in_package = [p for p in problems if Path(p.split(":", 1)[0]).is_relative_to(PACKAGE)]
    assert in_package == []
    m = _CHECKED.search(mypy_output.strip().splitlines()[-1])
    assert m, mypy_output[-500:]
    # every module of the package was checked, not only the examples' imports of it
    modules = [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.pyi")]
    assert int(m.group("n")) >= len(modules) + 2
