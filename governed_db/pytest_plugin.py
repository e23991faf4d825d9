"""pytest plugin (entry point ``pytest11``): fixtures for governed connections and PII checks.

Imports nothing heavy until a fixture is used.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def no_unmasked_pii() -> Any:
    """The assertion helper: ``no_unmasked_pii(rows, canaries=["canary-"])``."""
    from .testing import assert_no_unmasked_pii

    return assert_no_unmasked_pii
