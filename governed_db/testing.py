"""Test helpers: assert that no unmasked PII crossed the boundary."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .masking import detect

__all__ = ["assert_no_unmasked_pii", "find_pii"]


def _texts(obj: Any, path: str = "$") -> Iterable[tuple[str, str]]:
    if obj is None:
        return
    if isinstance(obj, BaseException):
        yield path, str(obj)
        diag = getattr(obj, "diag", None)
        if diag is not None:
            for attr in ("message_detail", "message_hint", "context"):
                value = getattr(diag, attr, None)
                if value:
                    yield f"{path}.diag.{attr}", value
        return
    if isinstance(obj, Path):
        text = obj.read_text(errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            try:
                yield from _texts(json.loads(line), f"{obj}:{n}")
            except ValueError:
                yield f"{obj}:{n}", line
        return
    if isinstance(obj, (str, bytes)):
        yield path, obj.decode("utf-8", "replace") if isinstance(obj, bytes) else obj
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _texts(v, f"{path}.{k}")
        return
    if isinstance(obj, (list, tuple, set, frozenset)):
        for i, v in enumerate(obj):
            yield from _texts(v, f"{path}[{i}]")
        return
    attrs = getattr(obj, "attributes", None)  # OpenTelemetry spans
    if attrs is not None:
        yield from _texts(dict(attrs), f"{path}.attributes")
        return
    yield path, str(obj)


def find_pii(obj: Any, canaries: Iterable[str] = ()) -> list[tuple[str, str]]:
    """``(where, what)`` for every PII-looking value or canary string inside ``obj``."""
    found = []
    canaries = [c.lower() for c in canaries]
    for where, text in _texts(obj):
        for start, end, cat in detect(text):
            found.append((where, f"{cat}: {text[start:end][:3]}…"))
        low = text.lower()
        for c in canaries:
            if c in low:
                found.append((where, f"canary {c!r}"))
    return found


def assert_no_unmasked_pii(obj: Any, *, canaries: Iterable[str] = ()) -> None:
    """Fail (AssertionError) naming where PII or a canary value was found in ``obj``.

    ``obj`` may be rows, strings, exceptions, dicts/lists (LangChain/LlamaIndex outputs), OTel
    spans, or a :class:`pathlib.Path` to an audit log or any text file.
    """
    found = find_pii(obj, canaries)
    if found:
        lines = "\n".join(f"  {where}: {what}" for where, what in found[:20])
        raise AssertionError(f"unmasked PII found ({len(found)}):\n{lines}")
