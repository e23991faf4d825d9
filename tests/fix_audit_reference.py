"""After every test: each audit log it left in its tmp_path verifies the same way with the
reference verifier in docs/ as with `governed-db audit verify` (issue #20's "agree on every log
the test suite writes"). In-process, so it costs little; logs of schema v1 (which the reference
verifier does not read) are left out."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from governed_db.audit import VerificationError, verify

_PATH = Path(__file__).resolve().parents[1] / "docs" / "verify_audit_log.py"
_spec = importlib.util.spec_from_file_location("verify_audit_log", _PATH)
assert _spec is not None and _spec.loader is not None
reference: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)

_MAX_BYTES = 8 << 20


def verdicts(path: Path) -> tuple[int | None, int | None]:
    """(first bad line per governed_db, per the reference verifier); None: intact. Both read
    one copy of the file, so a writer still appending cannot make them differ."""
    snapshot = path.with_name(f".{path.name}.snapshot")
    snapshot.write_bytes(path.read_bytes())
    try:
        return _verdicts(snapshot)
    finally:
        snapshot.unlink()


def _verdicts(path: Path) -> tuple[int | None, int | None]:
    try:
        verify(path, allow_open=False)
        ours = None
    except VerificationError as exc:
        ours = exc.index
    try:
        reference.verify(path)
        theirs = None
    except reference.Bad as exc:
        theirs = int(str(exc).split(":", 1)[0].removeprefix("record "))
    return ours, theirs


def logs_in(root: Path) -> list[Path]:
    """The v2 / v3 audit logs under ``root`` (JSONL files whose records carry ``"v":2`` or
    ``"v":3``, none ``"v":1``)."""
    out = []
    for path in sorted(root.rglob("*.jsonl")):
        if path.name.endswith(".snapshot"):
            continue
        try:
            if not path.is_file() or path.stat().st_size > _MAX_BYTES:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if (b'"v":2' in data or b'"v":3' in data) and b'"v":1,' not in data \
                and b'"v":1}' not in data:
            out.append(path)
    return out
