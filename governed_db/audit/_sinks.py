"""Secondary audit sinks: a PostgreSQL table shared by many hosts, and OTLP log export.

The writer thread hands each sink the chained records after the local file took them (or
directly, for an in-memory log). A sink that fails keeps its backlog and is retried; until it
catches up, governed statements fail closed like they do for the file. Writes are idempotent
(``ON CONFLICT (chain, seq) DO NOTHING``), so a retry never duplicates a record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["OtlpLogSink", "PostgresAuditSink", "fetch_lines"]

_DDL = """
CREATE SCHEMA IF NOT EXISTS governed_db;
CREATE TABLE IF NOT EXISTS governed_db.audit_log (
    chain text NOT NULL,
    seq bigint NOT NULL,
    ts timestamptz,
    type text NOT NULL,
    identity_id text,
    identity_kind text,
    line text NOT NULL,          -- the exact signed JSONL line; verify re-checks it
    PRIMARY KEY (chain, seq)
);
CREATE INDEX IF NOT EXISTS audit_log_identity ON governed_db.audit_log (identity_id, ts);
"""


class PostgresAuditSink:
    """Batched COPY into ``governed_db.audit_log`` on the sink's own connection."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.backlog: list[tuple[dict[str, Any], bytes]] = []
        self._conn: Any = None

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5,
                                   application_name="governed_db audit sink")
            conn.execute(_DDL)
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS audit_stage"
                         " (LIKE governed_db.audit_log)")
            self._conn = conn
        return self._conn

    def flush(self) -> None:
        """Write the backlog; raise (keeping it) when the database cannot take it."""
        if not self.backlog:
            return
        import psycopg

        try:
            conn = self._connection()
            with conn.transaction():
                with conn.cursor() as cur:
                    with cur.copy("COPY audit_stage (chain, seq, ts, type, identity_id,"
                                  " identity_kind, line) FROM STDIN") as cp:
                        for rec, line in self.backlog:
                            ident = rec.get("identity") or {}
                            cp.write_row((rec["chain"], rec["seq"], rec.get("ts"),
                                          rec.get("type"), ident.get("id"), ident.get("kind"),
                                          line.decode("utf-8").rstrip("\n")))
                    cur.execute("INSERT INTO governed_db.audit_log SELECT * FROM audit_stage"
                                " ON CONFLICT (chain, seq) DO NOTHING")
                    cur.execute("TRUNCATE audit_stage")
        except psycopg.Error as exc:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            raise OSError(f"audit sink PostgreSQL: {type(exc).__name__}: {exc}") from None
        self.backlog = []

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class OtlpLogSink:
    """Each record as an OpenTelemetry log record (body: the signed line), for a collector.

    Uses the global logger provider unless one is given; with the API's no-op provider it
    exports nothing (configure the SDK's ``LoggerProvider`` with an OTLP exporter).
    """

    def __init__(self, logger_provider: Any = None) -> None:
        from opentelemetry import _logs

        self.backlog: list[tuple[dict[str, Any], bytes]] = []
        provider = logger_provider or _logs.get_logger_provider()
        self._logger = provider.get_logger("governed_db.audit")

    def flush(self) -> None:
        from opentelemetry._logs import LogRecord, SeverityNumber

        for rec, line in self.backlog:
            ident = rec.get("identity") or {}
            attrs: dict[str, str | int] = {"governed_db.audit.type": str(rec.get("type")),
                     "governed_db.audit.chain": str(rec.get("chain")),
                     "governed_db.audit.seq": int(rec.get("seq") or 0)}
            if ident:
                attrs["governed_db.identity.kind"] = str(ident.get("kind"))
            self._logger.emit(LogRecord(body=line.decode("utf-8").rstrip("\n"),
                                        severity_number=SeverityNumber.INFO,
                                        attributes=attrs))
        self.backlog = []

    def close(self) -> None:
        return None


def fetch_lines(dsn: str) -> Sequence[str]:
    """Every stored line of a PostgreSQL audit store, chain by chain in order (for verify)."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT line FROM governed_db.audit_log ORDER BY chain, seq"
                            ).fetchall()
    return [r[0] for r in rows]
