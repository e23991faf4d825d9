"""OpenLineage run events from audit records, with the official ``openlineage-python`` client.

One *run* per agent session (a governed connection) or, when statements carry a
``tool_call_id`` (or ``run_id``) attribute, per tool call; the *job* is the identity and its
purpose. Each statement adds a ``RUNNING`` event whose inputs are the tables it read and whose
outputs are the tables it wrote (namespace ``postgres://host:port``, name
``db.schema.table``); a statement that returned rows also has a ``result`` output dataset with
the column-lineage facet: which base columns each output column derives from, and whether the
value left masked (``masking: true`` on the transformation). Run facets say who acted (model,
on behalf of whom, tool call id) and link each event to its audit record (chain, seq, hash).

Built from the audit records, so events carry what records carry — normalized SQL, names and
strategies, never a value — and the same code serves live emission (:class:`OpenLineageSink`,
a background emitter fed by the audit writer thread, batched, never blocking or failing a
statement) and ``governed-db audit export --format openlineage`` (replay of a log).
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..errors import PolicyError
from ._export import session_id, tool_call_id

__all__ = ["EventBuilder", "OpenLineageSink", "SETTINGS_KEYS", "check_settings",
           "events_from_records", "event_to_dict"]

logger = logging.getLogger("governed_db.audit.openlineage")

PRODUCER = "https://pypi.org/project/governed-db/"
# Custom facets name their own schema, as the spec asks of facets outside the standard set.
_FACET_SCHEMA = "https://pypi.org/project/governed-db/spec/facets/1-0-0/{0}.json#/$defs/{0}"
# uuid5 namespace for run ids: the same session / tool call always maps to the same run.
_RUN_NAMESPACE = uuid.UUID("5b0f3c2e-8f7e-4a39-9c55-7d0e6f1a2b3c")

SETTINGS_KEYS = frozenset({"enabled", "transport", "namespace", "job_name", "run_per",
                           "batch_ms", "max_queue"})
_SYSTEM = ("pg_", "information_schema.")
_TRANSPORTS = ("http", "console", "file", "kafka", "composite", "noop")


def check_settings(raw: Any, source: str | None = None) -> dict[str, Any]:
    """Validate an ``[audit.openlineage]`` table (no import of the client: policy check works
    without the extra). Returns the settings with defaults filled in."""
    if not isinstance(raw, Mapping):
        raise PolicyError("audit.openlineage must be a table", path=source)
    unknown = set(raw) - SETTINGS_KEYS
    if unknown:
        raise PolicyError(f"audit.openlineage: unknown key(s) {', '.join(sorted(unknown))};"
                          f" known: {', '.join(sorted(SETTINGS_KEYS))}", path=source)
    transport = raw.get("transport", {"type": "console"})
    if isinstance(transport, str):
        transport = {"type": transport}
    if not isinstance(transport, Mapping) or transport.get("type") not in _TRANSPORTS:
        raise PolicyError("audit.openlineage.transport must be a table with type = one of"
                          f" {', '.join(_TRANSPORTS)} (as the openlineage-python client"
                          " configures transports)", path=source)
    run_per = raw.get("run_per", "tool_call")
    if run_per not in ("session", "tool_call"):
        raise PolicyError("audit.openlineage.run_per must be \"session\" or \"tool_call\"",
                          path=source)
    job_name = str(raw.get("job_name", "{kind}:{id}/{purpose}"))
    try:
        job_name.format(kind="k", id="i", purpose="p", model="m", on_behalf_of="o")
    except (KeyError, IndexError, ValueError) as exc:
        raise PolicyError(f"audit.openlineage.job_name: bad template ({exc}); fields:"
                          " {kind} {id} {purpose} {model} {on_behalf_of}", path=source) from None
    for key in ("batch_ms", "max_queue"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value < 0):
            raise PolicyError(f"audit.openlineage.{key} must be a non-negative number",
                              path=source)
    return {"enabled": bool(raw.get("enabled", True)), "transport": dict(transport),
            "namespace": str(raw.get("namespace", "governed_db")), "job_name": job_name,
            "run_per": run_per, "batch_ms": float(raw.get("batch_ms", 500)),
            "max_queue": int(raw.get("max_queue", 10_000))}


def _facet_classes() -> dict[str, Any]:
    """The client's classes, and our two custom facets on its base classes (imported lazily:
    the client is the optional extra ``governed-db[openlineage]``)."""
    global _classes
    if _classes is not None:
        return _classes
    import attr
    from openlineage.client import event_v2
    from openlineage.client.generated import (
        base,
        column_lineage_dataset,
        dataset_type_dataset,
        job_type_job,
        schema_dataset,
        sql_job,
    )

    @attr.define
    class GovernedDbRunFacet(base.RunFacet):
        """Who acted in this run: the governed identity (no secrets, no values)."""

        identity: str
        kind: str
        session: str | None = attr.field(default=None)
        toolCallId: str | None = attr.field(default=None)  # noqa: N815
        model: str | None = attr.field(default=None)
        onBehalfOf: str | None = attr.field(default=None)  # noqa: N815
        purpose: str | None = attr.field(default=None)

        @staticmethod
        def _get_schema() -> str:
            return _FACET_SCHEMA.format("GovernedDbRunFacet")

    @attr.define
    class GovernedDbStatementRunFacet(base.RunFacet):
        """The audit record behind this event: decision and where it is in the chain."""

        recordId: str | None  # noqa: N815
        chain: str
        seq: int
        hash: str  # noqa: A003
        decision: str
        outcome: str | None = attr.field(default=None)
        rules: list[str] = attr.field(factory=list)
        summary: str | None = attr.field(default=None)
        rowcount: int | None = attr.field(default=None)

        @staticmethod
        def _get_schema() -> str:
            return _FACET_SCHEMA.format("GovernedDbStatementRunFacet")

    _classes = {"ev": event_v2, "base": base, "cl": column_lineage_dataset,
                "dtype": dataset_type_dataset, "jtype": job_type_job, "schema": schema_dataset,
                "sql": sql_job, "RunFacet": GovernedDbRunFacet,
                "StatementFacet": GovernedDbStatementRunFacet}
    return _classes


_classes: dict[str, Any] | None = None


def _qualifier(rec: Mapping[str, Any]) -> dict[str, str]:
    """table name as written -> schema, from the qualified column names the record has."""
    out: dict[str, str] = {}
    sources = list(rec.get("columns") or ())
    for _, srcs in rec.get("lineage") or ():
        sources.extend(srcs)
    for src in sources:
        parts = str(src).split(".")
        if len(parts) >= 3:
            out.setdefault(parts[1], parts[0])
    return out


def _dataset_name(rec: Mapping[str, Any], table: str, schemas: Mapping[str, str]) -> str:
    db = (rec.get("db") or {}).get("dbname") or "postgres"
    if "." in table:
        return f"{db}.{table}"
    schema = schemas.get(table) or ("pg_catalog" if table.startswith("pg_") else "public")
    return f"{db}.{schema}.{table}"


def _namespace(rec: Mapping[str, Any]) -> str:
    db = rec.get("db") or {}
    host = str(db.get("host") or "localhost")
    if host.startswith("/"):
        host = "localhost"  # a Unix-socket directory is this machine, not a host name
    return f"postgres://{host}:{db.get('port') or 5432}"


class EventBuilder:
    """Turns audit records, in order, into OpenLineage run events (stateful: START once per
    run, RUNNING per statement, COMPLETE when the session closes or at :meth:`finish`)."""

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self.settings = check_settings(dict(settings or {}))
        self.c = _facet_classes()
        self._open: dict[str, tuple[Any, str]] = {}  # run id -> (job, session)
        self._session_runs: dict[str, set[str]] = {}
        # The client validates every object it builds (URLs, times): reuse what repeats —
        # run facets per run, datasets per statement shape, the SQL facet per text.
        self._facets: dict[str, dict[str, Any]] = {}
        self._datasets: dict[tuple[Any, ...], tuple[list[Any], list[Any]]] = {}
        self._sql: dict[str, Any] = {}

    def _job(self, rec: Mapping[str, Any], kind: str) -> Any:
        ident = rec.get("identity") or {}
        name = self.settings["job_name"].format(
            kind=ident.get("kind", ""), id=ident.get("id", ""),
            purpose=ident.get("purpose") or "-", model=ident.get("model") or "-",
            on_behalf_of=ident.get("on_behalf_of") or "-")
        facets = {"jobType": self.c["jtype"].JobTypeJobFacet(producer=PRODUCER,
            processingType="STREAMING" if kind == "session" else "BATCH",
            integration="GOVERNED_DB", jobType="AGENT_SESSION" if kind == "session"
            else "TOOL_CALL")}
        return self.c["ev"].Job(namespace=self.settings["namespace"], name=name, facets=facets)

    def _run_key(self, rec: Mapping[str, Any]) -> tuple[str, str]:
        session = session_id(rec) or f"chain:{rec.get('chain')}"
        call = tool_call_id(rec) if self.settings["run_per"] == "tool_call" else None
        key = f"{session}/{call}" if call else session
        return str(uuid.uuid5(_RUN_NAMESPACE, key)), "tool_call" if call else "session"

    def _run_facets(self, rec: Mapping[str, Any]) -> dict[str, Any]:
        ident = rec.get("identity") or {}
        return {"governed_db": self.c["RunFacet"](producer=PRODUCER,
            identity=f"{ident.get('kind')}:{ident.get('id')}", kind=str(ident.get("kind")),
            session=session_id(rec), toolCallId=tool_call_id(rec), model=ident.get("model"),
            onBehalfOf=ident.get("on_behalf_of"), purpose=ident.get("purpose"))}

    def feed(self, rec: Mapping[str, Any]) -> list[Any]:
        """The events one audit record produces (often none: checkpoints, connects)."""
        kind = rec.get("type")
        if kind == "close":
            return self._close_session(session_id(rec), rec.get("ts"))
        if kind != "statement":
            return []
        stmt = rec.get("statement") or {}
        if not any(not str(t).startswith(_SYSTEM) for t in
                   (*(stmt.get("reads") or ()), *(stmt.get("writes") or ()))):
            return []  # no user table (SELECT 1, SET, ORM reflection): nothing for lineage
        run_id, run_kind = self._run_key(rec)
        ev = self.c["ev"]
        out = []
        if run_id not in self._open:
            job = self._job(rec, run_kind)
            session = session_id(rec) or ""
            self._open[run_id] = (job, session)
            self._session_runs.setdefault(session, set()).add(run_id)
            out.append(ev.RunEvent(eventType=ev.RunState.START, eventTime=_time(rec.get("ts")),
                                   run=ev.Run(runId=run_id, facets=self._run_facets(rec)),
                                   job=job, producer=PRODUCER))
        job, _ = self._open[run_id]
        out.append(self._statement_event(rec, run_id, job))
        return out

    def _cached_run_facets(self, rec: Mapping[str, Any], run_id: str) -> dict[str, Any]:
        facets = self._facets.get(run_id)
        if facets is None:
            if len(self._facets) >= 4096:
                self._facets.clear()
            facets = self._facets[run_id] = self._run_facets(rec)
        return facets

    def _cached_datasets(self, rec: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
        stmt = rec.get("statement") or {}
        ident = rec.get("identity") or {}
        db = rec.get("db") or {}
        key = (db.get("host"), db.get("port"), db.get("dbname"), tuple(stmt.get("reads") or ()),
               tuple(stmt.get("writes") or ()), stmt.get("fingerprint"), ident.get("kind"),
               ident.get("id"), repr(rec.get("lineage")), repr(sorted((rec.get("masked") or {})
                                                                     .items())))
        hit = self._datasets.get(key)
        if hit is None:
            if len(self._datasets) >= 1024:
                self._datasets.clear()
            hit = self._datasets[key] = self._build_datasets(rec)
        return hit

    def _statement_event(self, rec: Mapping[str, Any], run_id: str, job: Any) -> Any:
        ev, c = self.c["ev"], self.c
        stmt = rec.get("statement") or {}
        dec = rec.get("decision") or {}
        outcome = rec.get("outcome") or {}
        # Only a statement that ran moved data: a denied, rolled-back or failed one keeps its
        # event (the attempt, its decision and rules) without dataset edges.
        inputs, outputs = self._cached_datasets(rec) if outcome.get("outcome") == "ok" \
            else ([], [])
        facets = dict(self._cached_run_facets(rec, run_id))
        rowcount = outcome.get("rowcount")
        facets["governed_db_statement"] = c["StatementFacet"](producer=PRODUCER,
            recordId=rec.get("id"), chain=str(rec.get("chain")), seq=int(rec.get("seq") or 0),
            hash=str(rec.get("hash")), decision=str(dec.get("action") or ""),
            outcome=outcome.get("outcome"), rules=list(dec.get("rules") or ()),
            summary=stmt.get("summary"), rowcount=int(rowcount) if rowcount is not None else None)
        job_facets = dict(job.facets or {})
        text = stmt.get("normalized")
        if text:
            sql = self._sql.get(text)
            if sql is None:
                if len(self._sql) >= 1024:
                    self._sql.clear()
                sql = self._sql[text] = c["sql"].SQLJobFacet(
                    producer=PRODUCER, query=text, dialect="postgres")
            job_facets["sql"] = sql
        job_now = ev.Job(namespace=job.namespace, name=job.name, facets=job_facets)
        return ev.RunEvent(eventType=ev.RunState.RUNNING, eventTime=_time(rec.get("ts")),
                           run=ev.Run(runId=run_id, facets=facets), job=job_now,
                           inputs=list(inputs), outputs=list(outputs), producer=PRODUCER)

    def _build_datasets(self, rec: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
        ev = self.c["ev"]
        stmt = rec.get("statement") or {}
        ns = _namespace(rec)
        schemas = _qualifier(rec)
        inputs = [ev.InputDataset(namespace=ns, name=_dataset_name(rec, t, schemas))
                  for t in sorted(stmt.get("reads") or ())]
        outputs = [ev.OutputDataset(namespace=ns, name=_dataset_name(rec, t, schemas))
                   for t in sorted(stmt.get("writes") or ())]
        result = self._result_dataset(rec, ns, schemas)
        if result is not None:
            outputs.append(result)
        return inputs, outputs

    def _result_dataset(self, rec: Mapping[str, Any], ns: str,
                        schemas: Mapping[str, str]) -> Any:
        """The rows sent back to the caller, as a dataset with column lineage and masking."""
        lineage = rec.get("lineage")
        if not lineage:
            return None
        c = self.c
        masked = rec.get("masked") or {}
        fields: dict[str, Any] = {}
        names: list[str] = []
        for name, sources in lineage:
            names.append(name)
            strategy = masked.get(name)
            inputs = []
            for src in sources:
                parts = str(src).split(".", 2)
                if len(parts) != 3:
                    continue  # "?": lineage not established (the value was masked if it mattered)
                schema, table, column = parts
                single = len(sources) == 1
                subtype = "IDENTITY" if single and column == name and not (
                    strategy and strategy.split(":", 1)[-1].startswith("lineage")) \
                    else "TRANSFORMATION"
                inputs.append(c["cl"].InputField(
                    namespace=ns, name=_dataset_name(rec, f"{schema}.{table}", schemas),
                    field=column, transformations=[c["cl"].Transformation(
                        type="DIRECT", subtype=subtype,
                        description=f"masked ({strategy.split(':')[0]})" if strategy else None,
                        masking=bool(strategy))]))
            if name in fields:
                fields[name].inputFields.extend(inputs)
            else:
                fields[name] = c["cl"].Fields(inputFields=inputs)
        facets = {
            "columnLineage": c["cl"].ColumnLineageDatasetFacet(fields=fields, producer=PRODUCER),
            "schema": c["schema"].SchemaDatasetFacet(producer=PRODUCER, fields=[
                c["schema"].SchemaDatasetFacetFields(name=n) for n in dict.fromkeys(names)]),
            "datasetType": c["dtype"].DatasetTypeDatasetFacet(datasetType="QUERY_RESULT",
                                                              producer=PRODUCER),
        }
        stmt = rec.get("statement") or {}
        ident = rec.get("identity") or {}
        name = f"result/{ident.get('kind')}:{ident.get('id')}/{stmt.get('fingerprint') or rec.get('id')}"
        return c["ev"].OutputDataset(namespace=f"governed_db://{self.settings['namespace']}",
                                     name=name, facets=facets)

    def _close_session(self, session: str | None, ts: Any) -> list[Any]:
        ev = self.c["ev"]
        out = []
        for run_id in sorted(self._session_runs.pop(session or "", set())):
            job, _ = self._open.pop(run_id)
            out.append(ev.RunEvent(eventType=ev.RunState.COMPLETE, eventTime=_time(ts),
                                   run=ev.Run(runId=run_id), job=job, producer=PRODUCER))
        return out

    def finish(self, ts: Any = None) -> list[Any]:
        """COMPLETE events for the runs still open (end of an export, or shutdown)."""
        out = []
        for session in list(self._session_runs):
            out.extend(self._close_session(session, ts))
        return out


def _time(ts: Any) -> str:
    return str(ts) if ts else dt.datetime.now(dt.UTC).isoformat()


def event_to_dict(event: Any) -> dict[str, Any]:
    """An event as the JSON object the client sends (its own serializer)."""
    from openlineage.client.serde import Serde

    return Serde.to_dict(event)


def events_from_records(records: Iterable[Mapping[str, Any]],
                        settings: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """Every event an audit log's records make, runs completed at the end (export)."""
    builder = EventBuilder(settings)
    last = None
    for rec in records:
        last = rec.get("ts") or last
        yield from builder.feed(rec)
    yield from builder.finish(last)


class OpenLineageSink:
    """An audit sink that emits OpenLineage events from a background thread.

    The audit writer thread hands over chained records (``backlog``, then :meth:`flush`); that
    only moves them to a bounded queue. The emitter thread turns them into events and sends
    them through the client's transport in batches every ``batch_ms``. Lineage is telemetry,
    not the audit trail: a failing or slow collector never blocks or fails a statement. A
    failure is logged, counted (``failed``, ``last_error``) and the event is dropped; a full
    queue drops the oldest records (``dropped``).
    """

    def __init__(self, settings: Mapping[str, Any], client: Any = None) -> None:
        self.settings = check_settings(settings)
        try:
            from openlineage.client import OpenLineageClient
        except ImportError:
            raise PolicyError("[audit.openlineage] needs the openlineage-python client:"
                              " pip install 'governed-db[openlineage]'") from None
        self.backlog: list[tuple[dict[str, Any], bytes]] = []
        self.client = client or OpenLineageClient(
            config={"transport": self.settings["transport"]})
        self.builder = EventBuilder(self.settings)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, self.settings["max_queue"]))
        self._stop = threading.Event()
        self._handed = 0  # records put on the queue (writer thread)
        self._done = 0  # records taken off it and emitted or dropped (emitter thread)
        self._thread = threading.Thread(target=self._run, name="governed_db-openlineage",
                                        daemon=True)
        self._thread.start()

    def flush(self) -> None:
        """Called by the audit writer thread: hand the records over, never block or raise."""
        items, self.backlog = self.backlog, []
        for rec, _ in items:
            if rec.get("type") not in ("statement", "close"):
                continue
            self._handed += 1
            try:
                self._queue.put_nowait(rec)
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                    self._done += 1
                except queue.Empty:
                    pass
                try:
                    self._queue.put_nowait(rec)
                except queue.Full:
                    self.dropped += 1
                    self._done += 1

    def _run(self) -> None:
        window = self.settings["batch_ms"] / 1000
        while True:
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    break
                continue
            if window and not self._stop.is_set():
                time.sleep(window)  # batch: let the records of a burst arrive
            batch = [first]
            while len(batch) < 1000:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events = []
            for rec in batch:
                try:
                    events.extend(self.builder.feed(rec))
                except Exception as exc:  # noqa: BLE001 - never let lineage break auditing
                    self._failure(exc)
            self._emit(events)
            self._done += len(batch)
        try:
            self._emit(self.builder.finish())
        except Exception as exc:  # noqa: BLE001
            self._failure(exc)

    def _emit(self, events: list[Any]) -> None:
        for event in events:
            try:
                self.client.emit(event)
                self.sent += 1
            except Exception as exc:  # noqa: BLE001 - a collector outage is not a statement error
                self._failure(exc)

    def _failure(self, exc: BaseException) -> None:
        self.failed += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if self.failed == 1 or self.failed % 100 == 0:
            logger.warning("governed_db: OpenLineage emission failed (%d so far): %s",
                           self.failed, self.last_error)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every handed-over record was emitted (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._done < self._handed:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Emit what is queued, complete the open runs, close the client's transport."""
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            self.client.close(5.0)
        except Exception as exc:  # noqa: BLE001
            self._failure(exc)
