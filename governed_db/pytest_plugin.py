"""pytest plugin (entry point ``pytest11``): governed connections, canaries, strict PII mode.

Fixtures:

* ``no_unmasked_pii`` — :func:`governed_db.testing.assert_no_unmasked_pii`.
* ``governed_connect`` — ``governed_connect(dsn, identity="ai_agent:bot", **kw)``: governed
  connections closed after the test.
* ``pii_canary`` — ``pii_canary("email")``: a unique realistic value to seed in test data; in
  strict mode it is watched for even where detectors would not recognise it.

Strict mode (``--governed-db-strict``, or ``governed_db_strict = true`` in the ini file):
a test fails when, while it ran, a governed connection let unmasked PII (detector hits or
canaries) out through rows, error text, notices, NOTIFY payloads, spans, audit records or
``governed_db`` log records.

Nothing heavy is imported until a fixture is used or strict mode is on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("governed_db")
    group.addoption("--governed-db-strict", action="store_true", default=None,
                    help="fail any test during which a governed connection let PII out")
    parser.addini("governed_db_strict", type="bool", default=False,
                  help="same as --governed-db-strict")


def _strict(config: pytest.Config) -> bool:
    opt = config.getoption("--governed-db-strict")
    return bool(opt) if opt is not None else bool(config.getini("governed_db_strict"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    if not _strict(item.config) or item.get_closest_marker("governed_db_allow_pii"):
        return (yield)
    from .testing import EgressMonitor

    mon = EgressMonitor(getattr(item, "_governed_db_canaries", ()))
    item._governed_db_monitor = mon  # type: ignore[attr-defined]
    with mon:
        result = yield
        _flush_audit()
    if mon.violations:
        raise AssertionError(f"governed_db strict mode: {mon.report()}")
    return result


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "governed_db_allow_pii: exempt a test from strict mode")


def _flush_audit() -> None:
    """Let queued audit records be built (and checked) before the verdict."""
    from .audit._log import _open_logs

    for log in list(_open_logs):
        try:
            log.flush(timeout=5)
        except Exception:  # noqa: BLE001, S110 - an unwritable log is not this check's business
            pass


@pytest.fixture
def no_unmasked_pii() -> Any:
    """The assertion helper: ``no_unmasked_pii(rows, canaries=["canary-"])``."""
    from .testing import assert_no_unmasked_pii

    return assert_no_unmasked_pii


@pytest.fixture
def governed_connect() -> Iterator[Any]:
    """``governed_connect(dsn, identity=..., policy=..., audit=..., **psycopg_kwargs)``."""
    import governed_db

    opened: list[Any] = []

    def connect(conninfo: str = "", **kwargs: Any) -> Any:
        conn = governed_db.connect(conninfo, **kwargs)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


@pytest.fixture
def pii_canary(request: pytest.FixtureRequest) -> Any:
    """``pii_canary(kind="email")``: a unique value to seed; watched for in strict mode."""
    from . import testing

    node = request.node

    def make(kind: str = "email") -> str:
        value = testing.pii_canary(kind)
        if not hasattr(node, "_governed_db_canaries"):
            node._governed_db_canaries = []
        node._governed_db_canaries.append(value)  # picked up when the test body starts
        mon = getattr(node, "_governed_db_monitor", None)
        if mon is not None:
            mon.add_canary(value)  # made inside the test body
        return value

    return make
