"""Reading the identity settings back in the middle of a pipeline.

After a statement that may run code its text does not show (a user function, a trigger, a
relation the catalog snapshot does not know: ``may_run_unseen_code``), the row-level security
hand-off (``governed_db.identity.*``, custom settings the server does not report) is read
back before anything else runs. Outside a pipeline that is one more query. In pipeline mode
the read-back is queued right behind the statement and the pipeline is *flushed* (not
synced: no transaction boundary, no change in what the server runs), and the call does not
return until the read-back's result is in: the caller cannot queue another statement before
the server state after this one is known. A changed value closes the session (``wait()``),
as outside a pipeline.

Results of earlier statements arrive on the way and are processed as psycopg processes them;
an error among them is not raised here, in the middle of ``execute()``, but where psycopg
would raise it (the next ``sync()``, ``commit()``, fetch or the end of the pipeline): the
error is kept on the pipeline and raised by its next result-processing step.

These are psycopg 3.3 private pipeline internals (pinned ``>=3.3,<3.4``), as elsewhere in the
cursor and connection mixins.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from psycopg import errors as e
from psycopg import generators, pq

from .engine import IDENTITY_SETTINGS_QUERY

TUPLES_OK = pq.ExecStatus.TUPLES_OK

_DEFERRED = "_gov_deferred_error"
_PATCHED = ("_communicate_gen", "_fetch_gen")


class _ReadBack:
    """Stands in the pipeline's result queue where psycopg puts a cursor (it is given the
    read-back's results, never the caller)."""

    def __init__(self, gov: Any, expected: tuple[tuple[str, str], ...]) -> None:
        self.gov = gov
        self.expected = expected
        self.done = False

    def _check_results(self, results: list[Any]) -> None:
        self.done = True
        res = results[0] if len(results) == 1 else None
        if res is None or res.status != TUPLES_OK:
            # The pipeline was aborted before it (the statement or an earlier one failed):
            # the transaction that would hold a changed setting is rolled back, and nothing
            # else runs before the next sync.
            if res is None or res.status != pq.ExecStatus.PIPELINE_ABORTED:
                self.gov.violation = "governed_db.identity (not read back)"
            return
        for i, (name, value) in enumerate(self.expected):
            got = res.get_value(0, i)
            if got is None or bytes(got).decode() != value:
                self.gov.violation = name
                return

    def _set_results(self, results: list[Any]) -> None:
        pass


def read_back_gen(conn: Any) -> Any:
    """Queue the identity-settings read-back behind what was just queued, flush, and wait for
    its result (see the module docstring). Sets ``gov.violation`` on a mismatch."""
    gov = conn._governor
    pipeline = conn._pipeline
    expected = gov.server_rls
    if pipeline is None or expected is None:
        return
    check = _ReadBack(gov, expected)
    pgconn = conn.pgconn
    pipeline.command_queue.append(partial(pgconn.send_query_params, IDENTITY_SETTINGS_QUERY,
                                          None))
    pipeline.result_queue.append((check, None))
    deferred: e.Error | None = None
    try:
        yield from pipeline._communicate_gen()
    except e.Error as exc:
        deferred = exc
    if not check.done:
        pgconn.send_flush_request()
        yield from generators.send(pgconn)
        while not check.done and pipeline.result_queue:
            results = yield from generators.fetch_many(pgconn)
            if not results:
                break
            queued = pipeline.result_queue.popleft()
            try:
                pipeline._process_results(queued, results)
            except e.Error as exc:
                if deferred is None:
                    deferred = exc
    if not check.done:
        gov.violation = "governed_db.identity (not read back)"  # fail closed
    if deferred is not None:
        defer_error(pipeline, deferred)


def defer_error(pipeline: Any, exc: e.Error) -> None:
    """Raise ``exc`` from the pipeline's next result-processing step (the first kept error
    wins, as psycopg raises the first of several)."""
    if pipeline.__dict__.get(_DEFERRED) is not None:
        return
    pipeline.__dict__[_DEFERRED] = exc
    for name in _PATCHED:
        original = getattr(type(pipeline), name).__get__(pipeline)
        pipeline.__dict__[name] = partial(_raising, pipeline, original)


def _raising(pipeline: Any, original: Any, *args: Any, **kwargs: Any) -> Any:
    error: e.Error | None = None
    try:
        yield from original(*args, **kwargs)
    except e.Error as exc:
        error = exc
    deferred = pipeline.__dict__.pop(_DEFERRED, None)
    for name in _PATCHED:
        pipeline.__dict__.pop(name, None)
    if deferred is not None:
        raise deferred
    if error is not None:
        raise error
