"""Reading the identity settings back in the middle of a pipeline.

After a statement that may run code its text does not show (a user function, a trigger, a
relation the catalog snapshot does not know: ``may_run_unseen_code``), the row-level security
hand-off (``governed_db.identity.*``, custom settings the server does not report) is read
back before anything else runs. Outside a pipeline that is one more query (the reported
parameters, client_encoding and the others ``_gov_verify_server_state`` checks, arrive with
every ReadyForQuery). In pipeline mode the server sends those only at a sync, so they are read
back too (``current_setting``), in the same query. In pipeline mode
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

from ._client_encoding import reported_encoding_safe
from .engine import IDENTITY_SETTINGS_QUERY
from .engine.session import SEARCH_PATH_READ, read_back_violation, read_search_path

TUPLES_OK = pq.ExecStatus.TUPLES_OK

# The server reports these (GUC_REPORT) only with ReadyForQuery, i.e. at a pipeline's sync, after
# later statements were sent: mid-pipeline they are read back with the identity settings.
_REPORTED = ("client_encoding", "standard_conforming_strings", "session_authorization",
             "is_superuser", "default_transaction_read_only")
READ_BACK_QUERY = IDENTITY_SETTINGS_QUERY + b"".join(
    b", pg_catalog.current_setting('" + name.encode() + b"')" for name in _REPORTED
) + b", " + SEARCH_PATH_READ  # (last: the schemas names resolve through now)

_DEFERRED = "_gov_deferred_error"
_PATCHED = ("_communicate_gen", "_fetch_gen")


class _ReadBack:
    """Stands in the pipeline's result queue where psycopg puts a cursor (it is given the
    read-back's results, never the caller)."""

    def __init__(self, gov: Any, expected: tuple[tuple[str, str], ...]) -> None:
        self.gov = gov
        self.expected = expected
        self.done = False
        self.search_path: tuple[str, ...] | None = None  # as read (None: not read)

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
        problem = read_back_violation(res, self.expected)
        if problem is not None:
            self.gov.violation = problem
            return
        gov = self.gov
        first = len(self.expected) + 1  # after the settings and the driver-statements count
        state = {name: res.get_value(0, first + i) for i, name in enumerate(_REPORTED)}
        self.search_path = read_search_path(res.get_value(0, first + len(_REPORTED)), gov.codec)
        # Read now, after the statement and before anything queued behind it: exact.
        gov.scs_off = state["standard_conforming_strings"] != b"on"
        gov.scs_unsure = False
        if not reported_encoding_safe(state["client_encoding"]):
            gov.violation = "client_encoding"
        elif gov.server_read_only and state["default_transaction_read_only"] != b"on":
            gov.violation = "default_transaction_read_only"
        else:
            for name, value in gov.expected_params.items():
                got = state.get(name)
                if (bytes(got).decode() if got is not None else None) != value:
                    gov.violation = name
                    return

    def _set_results(self, results: list[Any]) -> None:
        pass


def read_back_gen(conn: Any) -> Any:
    """Queue the identity-settings read-back behind what was just queued, flush, and wait for
    its result (see the module docstring). Sets ``gov.violation`` on a mismatch. Returns the
    schemas names resolve through after what was queued (None: not read)."""
    gov = conn._governor
    pipeline = conn._pipeline
    expected = gov.server_rls
    if pipeline is None or expected is None:
        return None
    check = _ReadBack(gov, expected)
    pgconn = conn.pgconn
    pipeline.command_queue.append(partial(pgconn.send_query_params, READ_BACK_QUERY, None))
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
    return check.search_path


def defer_error(pipeline: Any, exc: e.Error) -> None:
    """Raise ``exc`` where psycopg would: when the pipeline next drains its results (a
    sync, commit, fetch, the pipeline's end). The first kept error wins, as psycopg raises the
    first of several; later errors (statements aborted after it) are not raised on their own,
    and sending (``_communicate_gen``) does not stop at it, so a sync runs to its end."""
    if pipeline.__dict__.get(_DEFERRED) is not None:
        return
    pipeline.__dict__[_DEFERRED] = exc
    cls = type(pipeline)
    pipeline.__dict__["_communicate_gen"] = partial(
        _swallowing, cls._communicate_gen.__get__(pipeline))
    pipeline.__dict__["_fetch_gen"] = partial(
        _raising, pipeline, cls._fetch_gen.__get__(pipeline))


def _swallowing(original: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        yield from original(*args, **kwargs)
    except e.Error:
        pass  # after the kept error: psycopg would raise only that one


def _raising(pipeline: Any, original: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        yield from original(*args, **kwargs)
    except e.Error:
        pass  # after the kept error, as above
    deferred = pipeline.__dict__.pop(_DEFERRED, None)
    for name in _PATCHED:
        pipeline.__dict__.pop(name, None)
    if deferred is not None:
        raise deferred
