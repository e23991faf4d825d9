"""pytest plugin for the compatibility job: psycopg's own tests with ``psycopg`` bound to governed_db.

Loaded with ``-p governed_db_compat`` (``tools/compat`` on ``PYTHONPATH``) by ``tools/compat/run.py``,
in both runs of a group, so the raw and the governed run differ only in the binding:

* ``GOVERNED_DB_COMPAT_MODE=governed``: before any conftest or test module is imported,
  ``sys.modules["psycopg"]`` becomes ``governed_db``. Every ``import psycopg`` /
  ``from psycopg import X`` made while collecting and running then gets governed_db, exactly what a
  program that wrote ``import governed_db as psycopg`` gets. psycopg's submodules stay psycopg's own
  module objects (governed_db re-exports them); ``psycopg_pool`` is imported after the swap, so its
  pools make governed connections. ``raw``: nothing is swapped.
* Per-test outcomes go to ``GOVERNED_DB_COMPAT_OUT`` (JSON: node id -> ``passed``, ``failed``,
  ``error``, ``skipped``, ``xfailed``, ``xpassed``) for ``run.py`` to compare, with psycopg's
  ``timing`` / ``slow`` / ``flakey`` markers of each test that has one.
* psycopg's conftest keeps a crash marker in ``config.cache``; the job runs with
  ``-p no:cacheprovider`` (nothing written into the psycopg checkout), so an in-memory cache stands
  in for it.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys
from typing import Any

import pytest

MODE = os.environ.get("GOVERNED_DB_COMPAT_MODE", "raw")
if MODE not in ("raw", "governed"):
    raise pytest.UsageError(f"GOVERNED_DB_COMPAT_MODE={MODE!r}: use raw or governed")


def _import_all_submodules(package: Any) -> None:
    """Import every submodule psycopg can import here (optional dependencies aside).

    After the swap, ``import psycopg.x`` of a module not yet loaded would be looked for in
    governed_db's directory; loaded beforehand, it is found in ``sys.modules`` as psycopg's own."""
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        try:
            importlib.import_module(info.name)
        except Exception:  # noqa: S112 - optional extras (numpy, shapely, dnspython...) absent
            continue


def _swap() -> None:
    import psycopg

    _import_all_submodules(psycopg)
    # psycopg_pool binds psycopg's names when imported: drop any early import of it so it is
    # imported again, against governed_db, by the tests.
    for name in [n for n in sys.modules if n == "psycopg_pool" or n.startswith("psycopg_pool.")]:
        del sys.modules[name]

    import governed_db

    sys.modules["psycopg"] = governed_db


if MODE == "governed":
    _swap()


class _MemoryCache:
    """What psycopg's conftest uses of pytest's cache, kept in memory."""

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}

    def get(self, key: str, default: Any) -> Any:
        return self._data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self._data[key] = value


_outcomes: dict[str, str] = {}
# psycopg's markers for tests that may fail on a loaded machine (its CI deselects them there).
_UNSTEADY = ("timing", "slow", "flakey")
_markers: dict[str, list[str]] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "cache"):
        config.cache = _MemoryCache()  # type: ignore[attr-defined]


def pytest_report_header(config: pytest.Config) -> list[str]:
    mod = sys.modules["psycopg"]
    return [f"governed_db compat: mode={MODE}, psycopg is {mod.__name__} ({mod.__file__})"]


def pytest_sessionstart(session: pytest.Session) -> None:
    # Fail loudly rather than compare two raw runs.
    bound = sys.modules["psycopg"].__name__
    expected = "governed_db" if MODE == "governed" else "psycopg"
    if bound != expected:
        raise pytest.UsageError(f"compat mode {MODE}: psycopg is bound to {bound}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marks = sorted({m.name for m in item.iter_markers() if m.name in _UNSTEADY})
        if marks:
            _markers[item.nodeid] = marks


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    nodeid = report.nodeid
    previous = _outcomes.get(nodeid)
    if previous in ("failed", "error"):
        return
    if report.failed:
        _outcomes[nodeid] = "failed" if report.when == "call" else "error"
    elif report.skipped:
        _outcomes[nodeid] = "xfailed" if hasattr(report, "wasxfail") else "skipped"
    elif report.when == "call":
        _outcomes[nodeid] = "xpassed" if hasattr(report, "wasxfail") else "passed"


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _outcomes[report.nodeid or "<collection>"] = "collection-error"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    out = os.environ.get("GOVERNED_DB_COMPAT_OUT")
    if out:
        with open(out, "w") as fh:
            json.dump({"mode": MODE, "exitstatus": int(exitstatus), "outcomes": _outcomes,
                       "markers": _markers}, fh,
                      indent=0, sort_keys=True)
