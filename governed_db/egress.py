"""Egress observers: watch everything that leaves governance, after masking.

Governance code reports each value it hands out — rows, error and notice text, NOTIFY payloads,
span attributes, audit records — to the registered observers. The pytest plugin's strict mode
is one observer (:class:`governed_db.testing.EgressMonitor`); a deployment can register its own
(a DLP scanner, a sampling logger) the same way::

    class Scanner:
        def observe(self, where: str, value: object) -> None:
            ...

    with governed_db.egress.observing(Scanner()):
        ...

``where`` is one of :data:`WHERE`. ``value`` is what the caller receives: for ``"row"`` the
list of column values as masked, before the row factory builds the row; for ``"value"`` one
value read with ``cursor.pgresult.get_value()`` (text, or bytes in binary format); for
``"copy"`` one block of ``COPY … TO STDOUT`` data as handed out (text); for ``"error"`` the
exception; for ``"notice"`` the primary, detail and hint text; for ``"notify"`` the payload;
for ``"span"`` the attribute mapping; for ``"audit record"`` the record as written. Observers
see values, never change them, and must not block: they run on the calling thread (the audit
writer's thread for audit records). An observer that raises is logged and skipped — it cannot
break the statement, nor make governance hand out anything it would not hand out anyway.

With no observer registered the cost is one attribute read per result set or record.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

__all__ = ["WHERE", "EgressObserver", "add_observer", "observers", "observing",
           "remove_observer"]

WHERE = ("row", "value", "copy", "error", "notice", "notify", "span", "audit record")

logger = logging.getLogger("governed_db.egress")


class EgressObserver(Protocol):
    def observe(self, where: str, value: Any) -> None: ...


# Read without a lock on every path that hands something out: replaced whole (a tuple), never
# mutated, so a reader sees either the old or the new set.
_observers: tuple[EgressObserver, ...] = ()
_lock = threading.Lock()

_O = TypeVar("_O", bound=EgressObserver)


def add_observer(observer: _O) -> _O:
    """Register ``observer`` (process-wide); returns it. Adding one twice has no effect."""
    global _observers
    if not callable(getattr(observer, "observe", None)):
        raise TypeError(f"an egress observer needs an observe(where, value) method, "
                        f"got {type(observer).__name__}")
    with _lock:
        if observer not in _observers:
            _observers = (*_observers, observer)
    return observer


def remove_observer(observer: EgressObserver) -> None:
    """Unregister ``observer``; removing one that is not registered has no effect."""
    global _observers
    with _lock:
        _observers = tuple(o for o in _observers if o is not observer)


def observers() -> tuple[EgressObserver, ...]:
    """The observers registered now, in registration order."""
    return _observers


@contextmanager
def observing(observer: _O) -> Iterator[_O]:
    """Register ``observer`` for the duration of a ``with`` block."""
    add_observer(observer)
    try:
        yield observer
    finally:
        remove_observer(observer)


def emit(where: str, value: Any) -> None:
    """Report ``value`` leaving through ``where`` to every observer (governance code only)."""
    for observer in _observers:
        try:
            observer.observe(where, value)
        except Exception:  # noqa: BLE001 - an observer must not break the statement
            logger.exception("egress observer %r failed on %s", observer, where)


def watch_rows(make_row: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``make_row`` reporting each row's values (as masked) before building the row."""
    def observed(values: Any) -> Any:
        emit("row", list(values))
        return make_row(values)

    return observed
