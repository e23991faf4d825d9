"""The governance pipeline, free of I/O and shared by the sync and async classes.

identity/session → analyze, decide → execute under limits → mask → record, one module a stage:

* ``context``: what one statement carries through the pipeline (:class:`StatementContext`), the
  identity scope every cached answer is keyed by (:func:`scope_key`), parameter digests;
* ``session``: the server session brought in line with the acting identity, the catalog
  snapshot's freshness, PREPAREd statements and DECLAREd cursors by name and version;
* ``decide``: the gate every sent string passes (analysis, the policy's decision, approvals);
* ``blast_radius``: which statements run in a savepoint with their exact effect counted, and
  the verdict on what they touched;
* ``mask_plan``: the mask plan of every result set;
* ``record``: the outcome to the span, the metrics and the audit writer;
* ``error_text``: what server errors and notices may echo;
* ``governor``: :class:`Governor`, one per connection, made of those stages.

The cursor choke points (``_cursor_base``) call :meth:`Governor.gate` with the exact bytes
psycopg is about to send, :meth:`Governor.plan` when a result set becomes current, and
:meth:`Governor.succeeded` / :meth:`Governor.failed` when the statement is over. Anything that
needs the server (pushing the identity, loading the catalog, savepoints) is expressed as SQL
this package *returns*; the thin sync/async shells run it.
"""

from __future__ import annotations

from .blast_radius import BLAST_COUNT_SQL, BLAST_SAVEPOINT
from .context import StatementContext, digest_params, kinds_label, scope_key
from .error_text import redact_exception
from .governor import Governor
from .session import IDENTITY_SETTINGS, IDENTITY_SETTINGS_QUERY, TX_MODE_KINDS, identity_settings

__all__ = ["BLAST_COUNT_SQL", "BLAST_SAVEPOINT", "IDENTITY_SETTINGS", "IDENTITY_SETTINGS_QUERY",
           "TX_MODE_KINDS", "Governor", "StatementContext", "digest_params", "identity_settings",
           "kinds_label", "redact_exception", "scope_key"]
