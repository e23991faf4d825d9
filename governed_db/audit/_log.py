"""The audit log: records, SHA-256 chain per writer, Ed25519 checkpoints, background writer.

The statement path only puts a plain tuple on a queue: the plan's static part of the record
(serialized once, see ``_record``) and the few values of this statement. A background thread
splices, digests, chains, signs and appends batches under an exclusive file lock (so several processes
can share one file: each writes its own chain, identified by the writer id), with one fsync
per batch ("group fsync").

Durability modes (exact semantics):

* ``batched`` (default): a statement returns once its record is queued; records reach the disk
  within ``checkpoint_ms`` (default 200 ms). A crash loses at most that window; verify reports
  the torn tail.
* ``strict``: a statement returns only after its record is fsynced, and every record is
  signed.

Fail closed: when a batch cannot be written (disk full, permission, file removed), the records
stay queued in memory for retry and every *new* statement raises ``AuditUnavailable`` until
a write succeeds — unless ``on_failure = "open"`` was chosen explicitly.
"""

from __future__ import annotations

import atexit
import binascii
import datetime as dt
import fcntl
import hashlib
import json
import os
import queue
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Mapping
from hashlib import sha256
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .. import egress as _egress
from .._state import state_dir
from ..errors import AuditUnavailable
from ._canonical import canonical_bytes, canonical_of_parsed, es_number, to_ijson
from ._record import (
    StatementStatic,
    Timestamps,
    outcome_bytes,
    params_json,
    params_json_v2,
    statement_id,
    trace_bytes,
)

__all__ = ["SCHEMA_VERSION", "SCHEMA_VERSIONS", "AuditLog", "canonical", "key_id_of",
           "load_or_create_key", "record_hash"]

# v3: as v2, and statement.params are keyed BLAKE2b digests (v1, v2: HMAC-SHA-256).
# v2: the hashed bytes are RFC 8785 (JCS) canonical JSON of I-JSON values; v1: whatever orjson
# wrote (still verified). docs/audit-log-format.md specifies them.
SCHEMA_VERSION = 3
SCHEMA_VERSIONS = (1, 2, 3)
_STOP = object()
_CHAIN_FIELDS = ("chain", "seq", "prev", "hash", "sig", "v", "key_id")


def static_of(ctx: Any, conn_info: Mapping[str, Any]) -> StatementStatic:
    """A :class:`StatementStatic` made from a statement context (not cached)."""
    return StatementStatic(ctx.identity, conn_info, ctx.analysis, ctx.statements,
                           ctx.decision, ctx.plans, getattr(ctx, "lineage", None),
                           ctx._param_key)


def _identity_record(identity: Any) -> dict[str, Any]:
    """``identity.to_record()`` with its free-form attributes in I-JSON (big integers and
    non-finite floats as text, see ``_canonical.to_ijson``)."""
    out: dict[str, Any] = identity.to_record()
    if "attributes" in out:
        out["attributes"] = to_ijson(out["attributes"])
    return out


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash covers: the record without ``hash`` and ``sig``, serialized
    as its schema version says.

    Version 2 (written since 0.x, docs/audit-log-format.md): RFC 8785 JCS. Version 1: sorted
    keys, no whitespace, UTF-8, as orjson wrote them (``json.dumps`` where orjson refused).
    """
    body = {k: v for k, v in record.items() if k not in ("hash", "sig")}
    if record.get("v") == 1:
        return _canonical_v1(body)
    return canonical_of_parsed(body)


def _canonical_v1(body: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return json.dumps(body, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()


def record_hash(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _configured_key(path: str | os.PathLike[str] | None) -> Ed25519PrivateKey:
    """The key a policy names must exist: creating it silently would sign with a key the
    auditor's public key does not match ("signed with another key" later, and no way to tell
    a typo from tampering). Only the default location is created on first use."""
    if path is not None and not Path(path).expanduser().exists():
        raise AuditUnavailable(
            f"the audit signing key configured in the policy ([audit] signing_key) does not"
            f" exist: {Path(path).expanduser()}; create it with `governed-db keygen --out DIR`"
            " (relative paths are relative to the policy file), or remove the setting to use"
            " the default key")
    return load_or_create_key(path)


def load_or_create_key(path: str | os.PathLike[str] | None) -> Ed25519PrivateKey:
    """Load the Ed25519 signing key, creating it (0600, with a warning) on first use.

    Safe when several processes start at once: the key is written to a temporary file and
    published with an atomic link, so every process ends up with the same, complete key.
    """
    p = Path(path).expanduser() if path else state_dir() / "audit-signing.key"
    for _ in range(3):
        try:
            key = serialization.load_pem_private_key(p.read_bytes(), password=None)
        except FileNotFoundError:
            try:
                created = _create_key(p)
            except OSError as exc:
                raise AuditUnavailable(f"cannot create the audit signing key {p}: {exc}"
                                       ) from None
            if created is not None:
                return created
            continue  # another process published one first: load it
        except (OSError, ValueError) as exc:
            raise AuditUnavailable(f"cannot load the audit signing key {p}: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditUnavailable(f"{p} is not an Ed25519 private key (make one with"
                                   " `governed-db keygen`)")
        return key
    raise AuditUnavailable(f"cannot load or create the audit signing key {p}")


def _create_key(p: Path) -> Ed25519PrivateKey | None:
    key = Ed25519PrivateKey.generate()
    p.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, p)  # atomic: fails if another process published its key first
    except FileExistsError:
        return None
    finally:
        os.unlink(tmp)
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    pub_tmp = p.with_name(f".{p.name}.{os.getpid()}.pub.tmp")
    pub_tmp.write_bytes(pub)
    os.replace(pub_tmp, p.with_suffix(".pub"))
    warnings.warn(f"governed_db: created an audit signing key at {p} (public key"
                  f" {p.with_suffix('.pub')}); keep the private key safe and give auditors"
                  " the public one", stacklevel=3)
    return key


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def _sinks_from(settings: Mapping[str, Any]) -> list[Any]:
    """Secondary sinks the ``[audit]`` settings or the environment ask for."""
    from ._sinks import OtlpLogSink, PostgresAuditSink

    sinks: list[Any] = []
    dsn = os.environ.get(str(settings.get("postgres_dsn_env", "GOVERNED_DB_AUDIT_DSN")))
    if dsn:
        sinks.append(PostgresAuditSink(dsn))
    if settings.get("otlp"):
        sinks.append(OtlpLogSink(settings.get("otlp_logger_provider")))
    lineage = settings.get("openlineage")
    if lineage and lineage.get("enabled", True):
        from ._openlineage import OpenLineageSink

        sinks.append(OpenLineageSink(lineage, client=settings.get("openlineage_client")))
    return sinks


class AuditLog:
    """A JSONL audit log with one hash chain per writer (this object).

    Use :meth:`open` (or let connections resolve one from ``GOVERNED_DB_AUDIT``, the policy or
    the default path). ``records`` keeps the last records in memory for tests and the CLI.
    """

    def __init__(self, path: str | os.PathLike[str] | None, *,
                 settings: Mapping[str, Any] | None = None, memory: bool = False,
                 signing_key: Ed25519PrivateKey | None = None,
                 schema_version: int = SCHEMA_VERSION) -> None:
        settings = dict(settings or {})
        if schema_version not in SCHEMA_VERSIONS:
            raise ValueError(f"audit schema version {schema_version!r} is not one of"
                             f" {SCHEMA_VERSIONS}")
        # Version 1 is kept for readers that know only it; verify reads both.
        self.schema_version = schema_version
        self.path = Path(path) if path else None
        self.durability = settings.get("durability", "batched")
        self.fail_open = settings.get("on_failure", "closed") == "open"
        self.checkpoint_every = int(settings.get("checkpoint_every", 1000))
        self.checkpoint_ms = float(settings.get("checkpoint_ms", 200))
        self.batch_ms = float(settings.get("batch_ms", 5))
        self.max_queue = int(settings.get("max_queue", 100_000))
        self.strict = self.durability == "strict"
        self.chain = uuid.uuid4().hex
        self.key = signing_key or (_configured_key(settings.get("signing_key"))
                                   if self.path else Ed25519PrivateKey.generate())
        self.key_id = key_id_of(self.key.public_key())
        self.records: list[dict[str, Any]] = [] if memory or self.path is None else []
        self.keep_in_memory = memory or self.path is None
        # close() began: no statement is admitted any more (check(), the choke point); the
        # records of statements already in flight are still taken until the writer stops.
        self.closed = False
        self._stopped = False  # the writer has stopped: nothing more is written
        # Connections recording here (track()): close() records what they have in flight.
        self._conns: weakref.WeakSet[Any] = weakref.WeakSet()
        self._conns_lock = threading.Lock()
        # A failed write (OSError, a sink that raises): retried, cleared when a write succeeds.
        self.error: BaseException | None = None
        # A record that could not be built or the writer thread stopping: sticky, every new
        # statement fails closed until the log is closed (``error`` stays set too).
        self.fatal: str | None = None
        self.written = 0
        self._seq = 0
        self._prev_b = b"0" * 64  # the chain head's hash, hex (see _prev)
        self._since_checkpoint = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Chained, not yet written: (record, line); a statement's record is None until one
        # is needed (``_records_of``).
        self._pending: list[tuple[dict[str, Any] | None, bytes]] = []
        # The writer's own parts of a statement line (see _statement_line).
        self._key_id_b = self.key_id.encode()
        self._head = b'{"chain":"' + self.chain.encode()
        self._tail = b'","type":"statement","v":' + str(self.schema_version).encode() + b"}"
        self._ts = Timestamps()
        self._last_identity: tuple[Any, dict[str, Any], dict[str, Any]] | None = None
        # Records taken off the queue and not yet durable (the writer's count; with the
        # queue's size, the backlog a statement is slowed down by).
        self._undurable = 0
        self._durable_seq = 0
        self._durable_prev = "0" * 64
        self._file_id: tuple[int, int] | None = None
        self.sinks: list[Any] = _sinks_from(settings)
        self._done = threading.Condition()
        self._durable = 0  # records written (and fsynced) so far
        self._waiting: list[_Flush] = []  # flush() calls whose records are not yet written
        self._thread = threading.Thread(target=self._run, name="governed_db-audit", daemon=True)
        self._thread.start()
        _open_logs.add(self)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, settings: Mapping[str, Any] | None = None
             ) -> AuditLog:
        p = Path(path).expanduser()
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AuditUnavailable(f"cannot create the audit directory {p.parent}: {exc};"
                                   " set GOVERNED_DB_AUDIT to a writable path") from None
        return cls(p, settings=settings)

    @classmethod
    def in_memory(cls) -> AuditLog:
        """A log kept only in memory (tests, demos): chained and signed all the same."""
        return cls(None, memory=True)

    # -- hot path -------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise AuditUnavailable when the log cannot be written (fail closed)."""
        if self.error is not None and not self.fail_open:
            if self.fatal is not None:
                raise AuditUnavailable(
                    f"the audit writer of {self.path or 'the in-memory log'} failed"
                    f" ({self.fatal}); governed statements do not run on this log any more."
                    " Close it and open a new one (or restart the process) after fixing the"
                    " cause; the failure is recorded in the log") from None
            raise AuditUnavailable(
                f"the audit log {self.path} cannot be written ({self.error}); governed"
                " statements do not run until it can. Free space or fix permissions; queued"
                " records are kept and retried") from None
        if self.closed:
            raise AuditUnavailable("the audit log is closed")

    def enqueue_statement(self, static: StatementStatic, id: int | str, ts_ns: int,
                          duration_ms: float, params: Any, approval: str | None,
                          outcome: Mapping[str, Any], trace: tuple[int, int] | None) -> None:
        """Queue the record of one statement (the writer's input, docs/audit-log-format.md).

        ``static``: the plan's :class:`StatementStatic` (serialized once, by the writer);
        ``id``: the statement id, or its number (``audit._record.statement_id`` makes the id
        from it on the writer thread); ``ts_ns``: ``time.time_ns()`` when it ended;
        ``duration_ms``: its duration (rounded to the microsecond by the writer); ``params``:
        the parameter values sent (digested on the writer thread) or None; ``approval``: the
        approval id it ran under; ``outcome``: the outcome fields (None values left out);
        ``trace``: ``(trace_id, span_id)`` of its span, or None. Nothing here may refer to a
        connection, cursor or statement context: the tuple is what the queue holds.
        """
        # (_put inlined: this runs for every statement)
        if self._stopped:
            raise AuditUnavailable("the audit log is closed")
        queue_ = self._queue
        queue_.put((static, id, ts_ns, duration_ms, params, approval, outcome, trace))
        if self.strict:
            self.flush()
        elif queue_.qsize() + self._undurable > self.max_queue:
            self.flush(timeout=60.0)  # bounded: see _put

    def statement(self, ctx: Any, conn_info: Mapping[str, Any], **outcome: Any) -> None:
        """Queue the record of one statement from its context (a static part made for this
        statement alone; the engine caches them per plan and calls :meth:`enqueue_statement`)."""
        span = ctx.span
        trace = None
        if span is not None:
            sc = span.get_span_context()
            trace = (sc.trace_id, sc.span_id)
        self.enqueue_statement(static_of(ctx, conn_info), ctx.id, time.time_ns(),
                               (time.perf_counter() - ctx.started) * 1000, ctx.params,
                               ctx.approval_id, outcome, trace)

    def event(self, kind: str, identity: Any, conn_info: Mapping[str, Any],
              **fields: Any) -> None:
        """Queue a connection-level record: connect, close, commit, rollback, approval...

        Like a statement's, the record is made on the writer thread (a field with no JSON
        form becomes a signed ``record_failed`` and the log fails closed)."""
        self._put(_Event(kind, identity, conn_info, fields, time.time_ns()))

    def _put(self, item: Any) -> None:
        """Queue one item: no lock (``SimpleQueue.put`` is atomic); the writer wakes on it."""
        if self._stopped:
            raise AuditUnavailable("the audit log is closed")
        queue_ = self._queue
        queue_.put(item)
        if self.strict:
            self.flush()
        elif queue_.qsize() + self._undurable > self.max_queue:
            # Bounded: a writer that cannot keep up slows statements down instead of
            # letting memory grow (or records be dropped).
            self.flush(timeout=60.0)

    @property
    def backlog(self) -> int:
        """Records (and flush requests) queued or being written, not yet durable."""
        return self._queue.qsize() + self._undurable

    def flush(self, timeout: float = 10.0) -> None:
        """Block until the records this thread queued so far are durable.

        A marker follows them through the queue; the writer marks it done once everything
        before it is written and fsynced (and cuts its batch window short for it)."""
        if self.fatal is not None and not self.fail_open:
            # Even when the writer wrote something in place of each record: a record
            # that could not be built is missing, and strict mode must say so.
            raise AuditUnavailable(f"audit records could not be written: {self.fatal}")
        if self._stopped:
            return  # the writer wrote everything before it stopped
        marker = _Flush()
        self._queue.put(marker)
        deadline = time.monotonic() + timeout
        with self._done:
            while not marker.done:
                if not self._thread.is_alive() and not marker.done:
                    # Queued after the writer's stop (a close on another thread): never
                    # written.
                    raise AuditUnavailable(f"audit records could not be written: {self.fatal}"
                                           if self.fatal else "the audit log is closed")
                if self.error is not None and not self.fail_open:
                    raise AuditUnavailable(
                        f"audit records could not be written: {self.fatal or self.error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AuditUnavailable("timed out waiting for the audit writer")
                self._done.wait(min(left, 0.05))
            if self.fatal is not None and not self.fail_open:
                raise AuditUnavailable(f"audit records could not be written: {self.fatal}")

    # -- background writer ------------------------------------------------------------------------

    def _run(self) -> None:
        """The writer thread. It must never stop silently while statements run: anything
        that escapes the loop makes the log fail closed, naming the cause."""
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - the log fails closed, naming it
            self._fail_fatally(f"the audit writer thread stopped: {_describe(exc)}")

    def _fail_fatally(self, cause: str) -> None:
        if self.fatal is None:
            self.fatal = cause
            if self.fail_open:
                warnings.warn(f"governed_db: {cause}; on_failure = \"open\": statements keep"
                              " running unrecorded", stacklevel=1)
        self.error = AuditWriterFailed(cause)
        with self._done:
            self._done.notify_all()

    def _loop(self) -> None:
        last_checkpoint = time.monotonic()
        stop = False
        window = self.batch_ms / 1000
        while not stop:
            # Idle here holds no object of its own: the batch list is made after get(), so
            # the writer's state while it waits is the same whether or not it has run since
            # the last flush() was answered (psycopg's test_leak counts every object).
            try:
                item = self._queue.get(timeout=self.checkpoint_ms / 1000)
            except queue.Empty:
                item = None
            batch: list[Any] = []
            if item is not None and item is not _STOP and type(item) is not _Flush \
                    and not self.strict and window:
                # Group commit: let more records arrive, then chain, write and fsync them at
                # once. A flush() or close that comes first skips the window.
                time.sleep(window)
            while True:
                if item is _STOP:
                    stop = True
                elif type(item) is _Flush:
                    self._waiting.append(item)
                elif item is not None:
                    batch.append(item)
                    self._undurable += 1
                    if len(batch) % 1024 == 0:
                        time.sleep(0)  # hand the GIL to statement threads now and then
                if len(batch) >= 20000:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if stop and batch:
                batch = self._without_superseded(batch)
            for i, item in enumerate(batch):
                self._pending.append(self._record_line(item))
                if i % 256 == 255:
                    # ~1 ms of work: let statement threads run (a GIL hand-off costs the
                    # writer a context switch and cold caches, ~3 µs a record every 64).
                    time.sleep(0)
            # A flush() waiting on this batch gets its records signed over now (a checkpoint
            # with them), so no timer checkpoint is left to write once it returns: close()
            # leaves the writer idle, not about to wake up and write behind the caller's back.
            due = self._since_checkpoint > 0 and (
                self._since_checkpoint >= self.checkpoint_every or bool(self._waiting)
                or time.monotonic() - last_checkpoint >= self.checkpoint_ms / 1000 or stop)
            if (due and not self.strict) or stop:
                cp = {"type": "checkpoint", "ts": _now(), "close": bool(stop)}
                self._pending.append((cp, self._chain(cp, sign=True)))
                if _egress._observers:  # every record written is reported, checkpoints too
                    _egress.emit("audit record", cp)
                del cp  # (see below)
                last_checkpoint = time.monotonic()
            # Drop this batch's items before anyone waiting on it is told it is durable: a
            # flush() caller (e.g. close()) then finds nothing of its records alive on this
            # thread while it blocks in get() (psycopg's test_leak counts every object).
            del item, batch
            if self._pending or any(sink.backlog for sink in self.sinks):
                self._write_pending()
            elif self._waiting:
                self._mark_durable(0)  # nothing left to write: what they wait for is
            if stop and (self._pending or any(sink.backlog for sink in self.sinks)):
                self._last_resort()
            if stop:
                for sink in self.sinks:
                    sink.close()

    def _last_resort(self) -> None:
        """Closing with records the log cannot take: retry briefly, then save them beside it."""
        deadline = time.monotonic() + 5.0
        while (self._pending or any(s.backlog for s in self.sinks)) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
            self._write_pending()
        for sink in self.sinks:
            if sink.backlog:
                warnings.warn(f"governed_db: {len(sink.backlog)} audit records did not reach"
                              f" {type(sink).__name__} ({self.error}); they are in the local"
                              " log", stacklevel=1)
        if not self._pending or self.path is None:
            return
        side = self.path.with_name(f"{self.path.name}.unwritten-{self.chain[:8]}.jsonl")
        try:
            with open(side, "ab") as fh:
                fh.write(b"".join(line for _, line in self._pending))
            warnings.warn(f"governed_db: {len(self._pending)} audit records could not be"
                          f" written to {self.path} ({self.error}); saved in {side}",
                          stacklevel=1)
        except OSError as exc:
            warnings.warn(f"governed_db: {len(self._pending)} audit records are lost: the log"
                          f" and {side} cannot be written ({exc})", stacklevel=1)

    def _record_line(self, item: Any) -> tuple[dict[str, Any] | None, bytes]:
        """Build and chain one queued item. A record that cannot be built or serialized is
        replaced by a signed ``record_failed`` record in its place (so the chain says a
        record is missing, and why) and the log fails closed from then on."""
        try:
            if type(item) is tuple:
                return self._statement_line(item)
            rec = self._materialize(item)
            return rec, self._chain(rec)
        except Exception as exc:  # noqa: BLE001 - recorded, then every statement refused
            cause = (f"the record of a {_item_type(item)} could not be built or serialized:"
                     f" {_describe(exc)}")
            failed: dict[str, Any] = {"type": "record_failed", "ts": _now(),
                                      "record_type": _item_type(item),
                                      "error": type(exc).__name__}
            if type(item) is tuple:
                failed["statement_id"] = statement_id(item[1])
            line = failed, self._chain(failed, sign=True)
            if _egress._observers:
                _egress.emit("audit record", failed)
            self._fail_fatally(cause)
            return line

    def _materialize(self, item: Any) -> dict[str, Any]:
        # Event fields are free-form: brought into I-JSON here, on the writer thread, so a
        # value that has no JSON form becomes a record_failed, not an error in the caller.
        if type(item) is _Event:
            ident = item.identity
            last = self._last_identity
            if last is None or last[0] is not ident or last[1] != ident.attributes:
                last = self._last_identity = (ident, dict(ident.attributes),
                                              _identity_record(ident))
            # (to_ijson below copies every object: the remembered record is never changed)
            item = {"type": item.kind, "identity": last[2], "db": item.db,
                    **{k: v for k, v in item.fields.items() if v is not None},
                    "ts": self._ts.text(item.ts_ns).decode()}
        rec: dict[str, Any] = to_ijson(item)
        if _egress._observers:
            _egress.emit("audit record", rec)
        return rec

    def _statement_line(self, item: tuple[Any, ...]) -> tuple[dict[str, Any] | None, bytes]:
        """Chain one statement item; its line is the static part's bytes spliced with the
        per-statement values (``_record``), byte for byte the record's JCS form.

        Returns ``(None, line)``: the record dict is made from the line only where one is
        needed (in-memory records, sinks, a rotation). The helpers of ``_record`` are
        inlined here (this runs once per statement)."""
        static, sid, ts_ns, duration_ms, params, approval, outcome, trace = item
        p0, p1, p2, p3, p4, p5 = static._parts or static.parts()
        version = self.schema_version
        seq = self._seq + 1
        d = round(duration_ms, 3)
        # Python's repr is ECMAScript's text for these (see _record.duration_bytes).
        dur = repr(d).encode() if 0.001 <= d < 1e15 and d % 1 else es_number(d).encode()
        us = ts_ns // 1000
        sec = us // 1_000_000
        ts = self._ts
        ts_b = ts.text(ts_ns) if sec != ts._sec else \
            ts._prefix + b"%06d+00:00" % (us - sec * 1_000_000)
        last = static._outcome
        # (Outcome values are text, integers and lists of text: == tells them apart.)
        if last is not None and last[0] == outcome:
            outcome_b = last[1]
        else:
            outcome_b = outcome_bytes(outcome)
            static._outcome = (outcome, outcome_b)
        body = b"".join((
            self._head, p0, b"null" if approval is None else orjson.dumps(approval), p1,
            dur, b',"id":', orjson.dumps(statement_id(sid)), p2, self._key_id_b, p3, outcome_b,
            b',"prev":"', self._prev_b, b'","seq":', b"%d" % seq, p4,
            params_json(params, static.param_key) if version >= 3
            else params_json_v2(params, static.param_key), p5,
            b"" if trace is None else trace_bytes(trace), b',"ts":"', ts_b, self._tail))
        if version == 1 or _egress._observers or self.strict:
            return self._statement_rec(body)
        hx = binascii.hexlify(sha256(body).digest())
        self._seq = seq
        self._prev_b = hx
        self._since_checkpoint += 1
        return None, body[:-1] + b',"hash":"' + hx + b'"}\n'

    def _statement_rec(self, body: bytes) -> tuple[dict[str, Any] | None, bytes]:
        """The rarer paths of a statement line: a v1 log, egress observers, strict mode."""
        if self.schema_version == 1 or _egress._observers:
            rec = orjson.loads(body)
            if _egress._observers:  # the record as written (hash and sig added below)
                _egress.emit("audit record", rec)
            if self.schema_version == 1:
                for key in _CHAIN_FIELDS:
                    rec.pop(key, None)
                return rec, self._chain(rec)
            line, sig = self._link(body, False)
            rec["hash"] = self._prev
            if sig is not None:
                rec["sig"] = sig
            return rec, line
        return None, self._link(body, False)[0]

    def _chain(self, rec: dict[str, Any], sign: bool = False, floats: bool = True) -> bytes:
        """Link ``rec`` into the chain; return its JSONL line (canonical body + hash + sig).

        ``floats=False``: ``rec`` holds no float orjson writes otherwise than JCS (see
        ``canonical_bytes``). Nothing of the chain's state changes unless the record
        serializes."""
        seq = self._seq + 1
        rec["v"] = self.schema_version
        rec["chain"] = self.chain
        rec["seq"] = seq
        rec["prev"] = self._prev
        rec["key_id"] = self.key_id
        rec.pop("hash", None)
        rec.pop("sig", None)
        body = canonical_bytes(rec, floats=floats) if self.schema_version >= 2 \
            else _canonical_v1(rec)
        line, sig = self._link(body, sign)
        rec["hash"] = self._prev
        if sig is not None:
            rec["sig"] = sig
        return line

    def _link(self, body: bytes, sign: bool) -> tuple[bytes, str | None]:
        """Hash (and sign) the canonical ``body`` of the next record of the chain, advance the
        chain, and return its line: the body with ``hash`` (and ``sig``) before its ``}``."""
        digest = hashlib.sha256(body).digest()
        hexdigest = binascii.hexlify(digest)
        tail = b',"hash":"' + hexdigest + b'"'
        sig = None
        if sign or self.strict:
            sig = self.key.sign(digest).hex()
            tail += b',"sig":"' + sig.encode() + b'"'
            self._since_checkpoint = 0
        else:
            self._since_checkpoint += 1
        self._seq += 1
        self._prev_b = hexdigest
        return body[:-1] + tail + b"}\n", sig

    def _rechain(self) -> None:
        """The file at ``path`` is not the one this chain was written to (rotated, deleted or
        replaced): start a new chain there, whose first record names where the old one ended,
        and re-link the records not yet written."""
        old_chain, old_seq, old_prev = self.chain, self._durable_seq, self._durable_prev
        self.chain = uuid.uuid4().hex
        self._head = b'{"chain":"' + self.chain.encode()
        self._seq = 0
        self._prev_b = b"0" * 64
        pending = [rec for rec, _ in self._records_of(self._pending)]
        self._pending = []
        marker = {"type": "rotated", "ts": _now(), "previous_chain": old_chain,
                  "previous_seq": old_seq, "previous_hash": old_prev}
        self._pending.append((marker, self._chain(marker, sign=True)))
        if _egress._observers:
            _egress.emit("audit record", marker)
        for rec in pending:
            for key in _CHAIN_FIELDS:
                rec.pop(key, None)
            self._pending.append((rec, self._chain(rec, sign=rec.get("type") == "checkpoint")))

    def _write_pending(self) -> None:
        """Append every pending line under an exclusive lock, fsync, and mark them durable.

        A failed write (disk full, I/O error, permissions) is undone to the file's size before
        it, so a retry appends the same records once, whole: nothing torn, nothing duplicated.
        """
        if self.path is not None and self._pending:
            try:
                self._append_pending(self.path)
            except OSError as exc:
                self._failed(exc)
                return
        if self._pending:
            # Every chained record is pending until written: the last is the chain's head.
            self._durable_seq, self._durable_prev = self._seq, self._prev
            if self.keep_in_memory or self.sinks:
                full = self._records_of(self._pending)
                if self.keep_in_memory:
                    self.records.extend(rec for rec, _ in full)
                    if len(self.records) > 100_000:
                        del self.records[:50_000]
                for sink in self.sinks:
                    sink.backlog.extend(full)
                del full  # nothing of the records left on this thread once they are durable
            self.written += len(self._pending)
            self._pending = []
        for sink in self.sinks:  # a sink that fails keeps its backlog: retried, not repeated
            try:
                sink.flush()
            except Exception as exc:  # noqa: BLE001 - any failure of a sink: fail closed, retry
                self._failed(exc if isinstance(exc, OSError) else OSError(
                    f"audit sink {type(sink).__name__}: {_describe(exc)}"))
                return
        if self.fatal is None:
            self.error = None
        n, self._undurable = self._undurable, 0
        self._mark_durable(n)

    def _append_pending(self, path: str | os.PathLike[str]) -> None:
        """Append the pending lines to ``path`` and fsync (undone to the old size on failure).

        A function of its own so that its buffers are gone before the records are marked
        durable: a flush() caller finds nothing of its records alive on the writer thread."""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            st = os.fstat(fd)
            ident = (st.st_dev, st.st_ino)
            if self._file_id is not None and ident != self._file_id:
                self._rechain()
            start = st.st_size
            try:
                _write_all(fd, [line for _, line in self._pending])
                os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    pass
                raise
            self._file_id = ident
        finally:
            os.close(fd)

    @property
    def _prev(self) -> str:
        """The ``hash`` of the chain's last record (64 zeros before the first)."""
        return self._prev_b.decode()

    @staticmethod
    def _records_of(pending: list[tuple[dict[str, Any] | None, bytes]]
                    ) -> list[tuple[dict[str, Any], bytes]]:
        """``pending`` with every record a dict (a statement's read back from its line)."""
        return [(orjson.loads(line) if rec is None else rec, line) for rec, line in pending]

    def _failed(self, exc: OSError) -> None:
        """Keep the records for retry; new statements fail closed meanwhile."""
        if self.fatal is None:
            self.error = exc
        with self._done:
            self._done.notify_all()
        time.sleep(0.05)

    def _mark_durable(self, n: int) -> None:
        with self._done:
            self._durable += n
            for marker in self._waiting:
                marker.done = True
            self._waiting.clear()
            self._done.notify_all()

    def track(self, conn: Any) -> None:
        """A governed connection records here: close() records its statements in flight."""
        with self._conns_lock:
            self._conns.add(conn)

    def untrack(self, conn: Any) -> None:
        with self._conns_lock:
            self._conns.discard(conn)

    def close(self, *, grace: float = 5.0) -> None:
        """Stop admitting statements, record the ones in flight, flush, write a signed close
        checkpoint and stop the writer.

        From the first moment of close() every new statement is refused (``AuditUnavailable``)
        and commit points roll back (``governed_db/_commit_gate.py``). A statement already sent
        is recorded whatever happens next: close() waits up to ``grace`` seconds for those
        running on the server (their records carry their outcome); what is still in flight
        then (a statement blocked on a lock, statements queued in a pipeline whose owner has
        not synced) is recorded with the outcome ``unfinished`` (sent, outcome unknown)."""
        if self.closed:
            return
        self.closed = True
        try:
            self._record_in_flight(grace)
        finally:
            self._queue.put(_STOP)
            # Durable when close() returns: the writer's last batch, checkpoint and fsync
            # (bounded, so an exit handler cannot hang on a disk that never answers).
            self._thread.join(timeout=60)
            if self._thread.is_alive():
                where = self.path or "the in-memory log"
                warnings.warn(f"governed_db: the audit writer of {where} is still writing 60 s"
                              " after close(); its last records may not be durable yet",
                              stacklevel=2)
            self._stopped = True
            _open_logs.discard(self)

    def _record_in_flight(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        quiet_since: float | None = None
        while True:
            with self._conns_lock:
                conns = list(self._conns)
            running: list[tuple[Any, Any]] = []
            waiting: list[tuple[Any, Any]] = []
            for conn in conns:
                for gov, ctx, busy in conn._gov_in_flight():
                    (running if busy else waiting).append((gov, ctx))
            if not running and not waiting:
                return
            now = time.monotonic()
            if running:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            # Nothing on the server any more: a few ms for a result just read to be recorded
            # by its own thread, then the rest (waiting on their owner) are recorded here.
            if now >= deadline or (quiet_since is not None and now - quiet_since >= 0.05):
                break
            time.sleep(0.002)
        for gov, ctx in running + waiting:
            try:
                gov.record_unfinished(ctx)
            except Exception as exc:  # noqa: BLE001 - the others are recorded all the same
                ctx.finished = False  # its own thread may still record it
                warnings.warn(f"governed_db: the record of a statement in flight at close could"
                              f" not be made here ({_describe(exc)})", stacklevel=2)

    @staticmethod
    def _without_superseded(batch: list[Any]) -> list[Any]:
        """The closing batch without an ``unfinished`` record whose statement's own record
        arrived too (its thread recorded it while close() did)."""
        final = {item[1] for item in batch if type(item) is tuple
                 and item[6].get("outcome") != "unfinished"}
        return [item for item in batch if not (
            type(item) is tuple and item[6].get("outcome") == "unfinished" and item[1] in final)]

    def public_key_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class _Event:
    """A connection-level event as queued: made into its record by the writer."""

    __slots__ = ("kind", "identity", "db", "fields", "ts_ns")

    def __init__(self, kind: str, identity: Any, db: Mapping[str, Any],
                 fields: dict[str, Any], ts_ns: int) -> None:
        self.kind = kind
        self.identity = identity
        self.db = db
        self.fields = fields
        self.ts_ns = ts_ns


class _Flush:
    """A flush request in the queue: done once every record before it is durable."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False


class AuditWriterFailed(RuntimeError):
    """Why a log fails closed for good (``AuditLog.error`` once ``fatal`` is set)."""


# Lines handed to one writev() call (at most IOV_MAX, 1024 on Linux).
_IOV_LINES = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


def _write_all(fd: int, lines: list[bytes]) -> None:
    """Write ``lines`` to ``fd`` in order, whole: gathered (writev, no copy of the batch into
    one buffer), what a short write left is written again from where it stopped."""
    for i in range(0, len(lines), _IOV_LINES):
        chunk = lines[i:i + _IOV_LINES]
        want = sum(map(len, chunk))
        done = os.writev(fd, chunk)
        if done != want:
            view = memoryview(b"".join(chunk))[done:]
            while view:
                view = view[os.write(fd, view):]


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if len(text) > 200:
        text = text[:200] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _item_type(item: Any) -> str:
    if type(item) is tuple:
        return "statement"
    if type(item) is _Event:
        return str(item.kind)
    return str(item.get("type", "event")) if isinstance(item, dict) else type(item).__name__


_open_logs: weakref.WeakSet[AuditLog] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for log in list(_open_logs):
        try:
            log.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown: best effort, never raise
            pass
