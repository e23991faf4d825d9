"""Test helpers: assert that no unmasked PII crossed the boundary."""

from __future__ import annotations

import itertools
import json
import logging
import re
import secrets
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import egress
from .masking import detect

# The active egress monitor (strict mode of the pytest plugin), or None; see monitor().
_monitor: EgressMonitor | None = None
_canary_ids = itertools.count(1)

__all__ = ["EgressMonitor", "assert_no_unmasked_pii", "find_pii", "monitor", "pii_canary"]

# SQLAlchemy appends the bound values to error text as "[parameters: ...]" unless the engine
# hides them ("[SQL parameters hidden due to hide_parameters=True]"). Values a caller bound are
# exactly what must not reach a model or a log, whatever they look like, so the text itself is
# a finding — detectors alone would miss an id or a name.
_SQLALCHEMY_PARAMS = re.compile(r"\[parameters: (?!\(\)\]|\{\}\]|\[\]\])")


def _extra_findings(text: str) -> Iterable[str]:
    if "[parameters: " in text and _SQLALCHEMY_PARAMS.search(text):
        yield "SQLAlchemy bound parameters in text ([parameters: …])"


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
        found.extend((where, what) for what in _extra_findings(text))
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


def pii_canary(kind: str = "email") -> str:
    """A unique, realistic PII value to seed in test data (emails, SSNs, phones, cards)."""
    n = next(_canary_ids)
    tag = secrets.token_hex(3)
    if kind == "email":
        return f"canary.{tag}{n}@example.com"
    if kind == "ssn":
        return f"{100 + n % 500:03d}-{10 + n % 89:02d}-{1000 + n % 8999:04d}"
    if kind == "phone":
        return f"(555) {200 + n % 700:03d}-{1000 + n % 8999:04d}"
    if kind == "card":
        return luhn_complete(f"4{n:014d}"[-15:])
    raise ValueError(f"unknown canary kind {kind!r}; use email, ssn, phone or card")


def luhn_complete(body: str) -> str:
    """``body`` plus the check digit that makes it pass the Luhn test (test card numbers)."""
    from .masking import _luhn

    return next(body + d for d in "0123456789" if _luhn(body + d))


class EgressMonitor:
    """Collects every unmasked PII value (or canary) seen leaving governed connections.

    An egress observer (:mod:`governed_db.egress`) while active: rows (every fetch path, after
    masking), error text, notices and NOTIFY payloads, span attributes, audit records; and a
    handler on the ``governed_db`` and ``sqlalchemy`` loggers.
    """

    def __init__(self, canaries: Iterable[str] = (), *, detectors: bool = True) -> None:
        self.canaries = [c.lower() for c in canaries]
        self.detectors = detectors
        self.violations: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._log_handler = _LogCheck(self)

    def add_canary(self, value: str) -> str:
        self.canaries.append(value.lower())
        return value

    def check(self, where: str, obj: Any) -> None:
        found = []
        for path, text in _texts(obj):
            if self.detectors:
                for start, end, cat in detect(text):
                    found.append((f"{where} {path}", f"{cat}: {text[start:end][:3]}…"))
            found.extend((f"{where} {path}", what) for what in _extra_findings(text))
            low = text.lower()
            for c in self.canaries:
                if c in low:
                    found.append((f"{where} {path}", f"canary {c[:6]}…"))
        if found:
            with self._lock:
                self.violations.extend(found)

    observe = check  # the egress observer interface

    def __enter__(self) -> EgressMonitor:
        global _monitor
        _monitor = self
        egress.add_observer(self)
        for name in _WATCHED_LOGGERS:
            logging.getLogger(name).addHandler(self._log_handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        global _monitor
        _monitor = None
        egress.remove_observer(self)
        for name in _WATCHED_LOGGERS:
            logging.getLogger(name).removeHandler(self._log_handler)

    def report(self) -> str:
        lines = "\n".join(f"  {where}: {what}" for where, what in self.violations[:20])
        return f"unmasked PII left the database ({len(self.violations)}):\n{lines}"


# Our own records, and SQLAlchemy's engine/pool logs (echo=True prints statements and
# parameters there).
_WATCHED_LOGGERS = ("governed_db", "sqlalchemy")


class _LogCheck(logging.Handler):
    def __init__(self, mon: EgressMonitor) -> None:
        super().__init__()
        self.mon = mon

    def emit(self, record: logging.LogRecord) -> None:
        self.mon.check("log", record.getMessage())


def monitor() -> EgressMonitor | None:
    """The active egress monitor (strict mode), if any."""
    return _monitor
