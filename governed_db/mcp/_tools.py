"""The tools of the governed MCP server, free of the MCP SDK (so they can be tested and timed).

Every tool that touches the database sends its SQL through a governed ``AsyncConnection``, as
the served identity (``acting_as`` with the tool call's attributes: the MCP request id, the
tool, the client's name and version), so each statement passes the same two choke points as any
other governed statement: guardrails before it is sent, masking on every row that comes back,
and an audit record that names the tool call. Catalog reflection (``list_tables``,
``describe_table``) is ordinary SQL on that connection too; there is no second path.

A tool never raises to the SDK: it returns a :class:`ToolOutput`; a denial is
``is_error=True`` with text that names the rule id, says what is allowed and whether retrying
helps, and never contains a value.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import orjson
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql as pg_sql

from .. import _config
from .._client_encoding import view_codec
from ..errors import ApprovalRequired, PolicyError, StatementDenied
from ..identity import Identity, acting_as
from ..policy import Policy
from ._budget import Budget, BudgetSpent
from ._settings import Limits, McpSettings

__all__ = ["CallInfo", "GovernedTools", "TOOL_SPECS", "ToolOutput"]

logger = logging.getLogger("governed_db.mcp")

TIMEOUT_RULE = "mcp.statement-timeout"
_MAX_SQL_CHARS = 100_000
_MAX_CELL_CHARS = 2_000
_EXPLAINABLE = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"})
_RELKINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view",
             "f": "foreign table"}

# governed_db's own schema (approval requests, audit records) is not data: never listed,
# never described (guardrails refuse every statement that touches it).
_NOT_DATA = " AND n.nspname !~ '^pg_' AND n.nspname NOT IN ('information_schema', 'governed_db')"
_LIST_SCHEMAS_SQL = (
    "SELECT n.nspname AS schema FROM pg_catalog.pg_namespace n WHERE true" + _NOT_DATA
    + " ORDER BY 1")
_LIST_TABLES_SQL = (
    "SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS kind"
    " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')" + _NOT_DATA)
# Name resolution by the server's own rules (quoting, search_path) through a regclass cast of
# a bound parameter: the caller's text never becomes SQL.
_DESCRIBE_SQL = (
    "SELECT n.nspname, c.relname, c.relkind::text, a.attname, t.typname, a.attnotnull"
    " FROM pg_catalog.pg_class c"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0"
    " AND NOT a.attisdropped"
    " JOIN pg_catalog.pg_type t ON t.oid = a.atttypid"
    " WHERE c.oid = %s::pg_catalog.regclass AND n.nspname <> 'governed_db' ORDER BY a.attnum")

_READ_ONLY_HINTS = {"readOnlyHint": True, "destructiveHint": False, "openWorldHint": False}
TOOL_SPECS: tuple[dict[str, Any], ...] = (
    {"name": "list_schemas",
     "description": "List the database schemas this agent can see.",
     "input_schema": {"type": "object", "properties": {}, "additionalProperties": False},
     "annotations": _READ_ONLY_HINTS},
    {"name": "list_tables",
     "description": "List tables and views (optionally of one schema), as schema.name (kind).",
     "input_schema": {"type": "object", "properties": {
         "schema": {"type": "string", "description": "Only this schema (default: all)."}},
         "additionalProperties": False},
     "annotations": _READ_ONLY_HINTS},
    {"name": "describe_table",
     "description": ("Columns and types of a table or view, which columns come back masked"
                     " and why, and a few sample rows (masked). Call this before writing a"
                     " query on a table."),
     "input_schema": {"type": "object", "properties": {
         "table": {"type": "string", "description": "Table or view name, optionally"
                   " schema-qualified (public.users)."}},
         "required": ["table"], "additionalProperties": False},
     "annotations": _READ_ONLY_HINTS},
    {"name": "query",
     "description": ("Run one SQL statement under the database's governance policy and"
                     " return the result as a table (sensitive values masked, rows capped)."
                     " Pass values as params with %s placeholders (write %% for a literal"
                     " percent sign when params are given). A denial names the policy rule;"
                     " a statement that needs approval returns a request id for a person."),
     "input_schema": {"type": "object", "properties": {
         "sql": {"type": "string", "description": "One SQL statement."},
         "params": {"type": "array", "description": "Values for the %s placeholders.",
                    "items": {"type": ["string", "number", "integer", "boolean", "null"]}}},
         "required": ["sql"], "additionalProperties": False},
     "annotations": {"readOnlyHint": False, "destructiveHint": True, "openWorldHint": False}},
    {"name": "explain",
     "description": ("Show PostgreSQL's plan for one SELECT/INSERT/UPDATE/DELETE/MERGE"
                     " statement without running it (EXPLAIN, never ANALYZE)."),
     "input_schema": {"type": "object", "properties": {
         "sql": {"type": "string", "description": "One SQL statement."}},
         "required": ["sql"], "additionalProperties": False},
     "annotations": _READ_ONLY_HINTS},
    {"name": "request_approval",
     "description": ("Ask a person to approve a statement the policy sends for approval,"
                     " without running it. Returns the request id; a person decides. Once"
                     " approved, run the identical statement (same sql and params) with the"
                     " query tool: it runs once."),
     "input_schema": {"type": "object", "properties": {
         "sql": {"type": "string"},
         "params": {"type": "array",
                    "items": {"type": ["string", "number", "integer", "boolean", "null"]}}},
         "required": ["sql"], "additionalProperties": False},
     "annotations": {"readOnlyHint": False, "destructiveHint": False, "openWorldHint": False}},
    {"name": "approval_status",
     "description": "The status of an approval request this agent made (pending, approved,"
                    " denied, used, expired) and what to do next.",
     "input_schema": {"type": "object", "properties": {
         "request_id": {"type": "string"}},
         "required": ["request_id"], "additionalProperties": False},
     "annotations": _READ_ONLY_HINTS},
)
TOOL_NAMES = frozenset(t["name"] for t in TOOL_SPECS)


@attrs.frozen(kw_only=True)
class CallInfo:
    """Who called, as the MCP layer knows it; recorded with every statement of the call."""

    request_id: str | None = None
    client_name: str | None = None
    client_version: str | None = None
    session: str | None = None
    transport: str = "stdio"


@attrs.frozen(kw_only=True)
class ToolOutput:
    """What a tool call returns: text for the model, structured content, error flag."""

    text: str
    structured: dict[str, Any] | None = None
    is_error: bool = False
    outcome: str = "ok"
    rule_ids: tuple[str, ...] = ()
    statements: tuple[str, ...] = ()
    rows: int = 0


class _ToolError(Exception):
    """Raised inside a tool to end it with a value-free error result."""

    def __init__(self, output: ToolOutput) -> None:
        super().__init__(output.text)
        self.output = output


def _error(text: str, *, outcome: str = "error", rule_ids: Sequence[str] = (),
           **structured: Any) -> _ToolError:
    data = {"error": outcome, "rule_ids": list(rule_ids), **structured}
    return _ToolError(ToolOutput(text=text, structured=data, is_error=True, outcome=outcome,
                                 rule_ids=tuple(rule_ids)))


class _Session:
    """One served identity: its governed connection, a lock, its budget."""

    def __init__(self, identity: Identity, limits: Limits) -> None:
        self.identity = identity
        self.conn: Any = None
        self.lock = asyncio.Lock()
        self.budget = Budget(limits.statements_per_minute, limits.rows_per_hour)


@attrs.define
class _Result:
    columns: list[str]
    rows: list[list[Any]]
    masked: dict[str, str]
    truncated: str | None
    statement_id: str | None
    status: str | None


class GovernedTools:
    """The tool implementations over one DSN and policy, for any number of identities.

    Args:
        dsn: the PostgreSQL connection string.
        policy: the governing policy (its ``[mcp]`` table is already in ``settings``).
        settings: identity, limits and tokens.
        audit: an AuditLog, a path, or None for the policy's / environment's.
    """

    def __init__(self, dsn: str, *, policy: Policy, settings: McpSettings,
                 audit: Any = None) -> None:
        self.dsn = dsn
        self.settings = settings
        self.limits = settings.limits
        self.policy = _with_timeout(policy, self.limits.statement_timeout_ms)
        self.audit = audit
        self._sessions: dict[tuple[Any, ...], _Session] = {}
        self._process_session = uuid.uuid4().hex[:16]

    # -- plumbing -------------------------------------------------------------------------------

    def _session(self, identity: Identity) -> _Session:
        key = (identity.kind, identity.id, identity.roles, identity.purpose, identity.model,
               identity.on_behalf_of)
        sess = self._sessions.get(key)
        if sess is None:
            sess = self._sessions[key] = _Session(identity, self.limits)
        return sess

    async def _conn(self, sess: _Session) -> Any:
        from .. import AsyncConnection

        conn = sess.conn
        if conn is None or conn.closed or conn.broken:
            kwargs: dict[str, Any] = {"identity": sess.identity, "policy": self.policy,
                                      "autocommit": True}
            if self.audit is not None:
                kwargs["audit"] = self.audit
            conn = sess.conn = await AsyncConnection.connect(self.dsn, **kwargs)
        return conn

    def call_identity(self, base: Identity, tool: str, info: CallInfo) -> Identity:
        """The identity a tool call's statements carry: ``base`` plus the call's attributes
        (as :class:`~governed_db.integrations.langchain.ToolCallIdentity` does for tools)."""
        attrs_ = dict(base.attributes)
        session = info.session or self._process_session
        attrs_.update({"tool": tool, "mcp_transport": info.transport, "mcp_session": session})
        if info.request_id is not None:
            attrs_["mcp_request_id"] = info.request_id
            # Unique across sessions (request ids restart at 1 in each): what
            # `governed-db audit report --tool-call` and the OpenLineage runs key on.
            attrs_["tool_call_id"] = f"mcp:{session}:{info.request_id}"
        if info.client_name:
            attrs_["mcp_client"] = info.client_name
        if info.client_version:
            attrs_["mcp_client_version"] = info.client_version
        return base.evolve(attributes=attrs_)

    async def aclose(self) -> None:
        for sess in self._sessions.values():
            if sess.conn is not None and not sess.conn.closed:
                with contextlib.suppress(Exception):
                    await sess.conn.close()
        self._sessions.clear()

    # -- the entry point ------------------------------------------------------------------------

    async def call(self, tool: str, arguments: Mapping[str, Any] | None, base: Identity,
                   info: CallInfo) -> ToolOutput:
        """Run one tool call as ``base`` (with the call's attributes) and record it."""
        started = time.perf_counter()
        if tool not in TOOL_NAMES:
            tool_label = "<unknown>"  # the client's text goes to no log or record
        else:
            tool_label = tool
        identity = self.call_identity(base, tool_label, info)
        sess = self._session(base)
        statements: list[str] = []
        try:
            if tool not in TOOL_NAMES:
                raise _error(f"unknown tool; the tools are {', '.join(sorted(TOOL_NAMES))}",
                             outcome="bad_request")
            args = dict(arguments or {})
            async with sess.lock:
                with acting_as(identity, policy=self.policy):
                    out: ToolOutput = await getattr(self, "_tool_" + tool)(sess, args, statements)
        except _ToolError as exc:
            out = exc.output
        except Exception as exc:  # noqa: BLE001 - a tool never crashes the server; fail closed
            logger.error("tool=%s request=%s internal error %s", tool_label, info.request_id,
                         type(exc).__name__)
            out = ToolOutput(
                text=("internal error in the governed MCP server (" + type(exc).__name__ +
                      "); nothing was returned. The statement may not have run; retrying the"
                      " same call is unlikely to help"),
                structured={"error": "internal", "rule_ids": []}, is_error=True,
                outcome="internal")
        if sess.conn is not None and not sess.conn.closed:
            await self._end_transaction(sess.conn)
        out = attrs.evolve(out, statements=tuple(statements))
        elapsed = round((time.perf_counter() - started) * 1000, 2)
        await self._record_call(sess, identity, tool_label, out, elapsed)
        # The server's own log: tool, request id, outcome and rule ids only; never SQL,
        # parameters or values.
        logger.info("tool=%s request=%s outcome=%s rules=%s statements=%d rows=%d ms=%s",
                    tool_label, info.request_id, out.outcome, ",".join(out.rule_ids) or "-",
                    len(out.statements), out.rows, elapsed)
        return out

    async def _end_transaction(self, conn: Any) -> None:
        """Tool calls do not share a transaction: one left open (BEGIN) is rolled back."""
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with contextlib.suppress(Exception):
                await conn.rollback()

    async def _record_call(self, sess: _Session, identity: Identity, tool: str,
                           out: ToolOutput, elapsed_ms: float) -> None:
        """One ``mcp_tool_call`` audit event per call (statements are recorded on their own
        and carry the same request id), so refused calls that sent nothing are on record."""
        conn = sess.conn
        if conn is None or conn.closed:
            with contextlib.suppress(Exception):
                conn = await self._conn(sess)  # the audit log is the connection's
        gov = getattr(conn, "_governor", None) if conn is not None else None
        if gov is None:
            logger.error("tool=%s request=%s could not be recorded in the audit log", tool,
                         identity.attributes.get("mcp_request_id"))
            return
        with contextlib.suppress(Exception):
            gov.event("mcp_tool_call", identity, tool=tool, outcome=out.outcome,
                      rules=list(out.rule_ids) or None, statements=list(out.statements),
                      rows=out.rows, duration_ms=elapsed_ms)

    # -- shared steps ---------------------------------------------------------------------------

    def _spend(self, sess: _Session, statements: int = 1, *, rows: bool = True) -> None:
        spent: BudgetSpent | None = sess.budget.check(statements, rows=rows)
        if spent is not None:
            raise _error(spent.message(), outcome="budget", rule_ids=(spent.rule_id,),
                         retry_after_s=spent.retry_after_s)

    async def _run(self, sess: _Session, conn: Any, query: Any, params: Sequence[Any] | None,
                   statements: list[str], *, max_rows: int, stream: bool = True) -> _Result:
        """Send one governed statement; collect at most ``max_rows`` rows / the byte cap."""
        sess.budget.charge_statement()
        deadline = self.limits.statement_timeout_ms / 1000 + 2.0
        cur = conn.cursor()
        try:
            async with asyncio.timeout(deadline):
                return await self._collect(cur, conn, query, params, statements, max_rows,
                                           stream)
        except TimeoutError:
            # The server-side statement_timeout did not end it (network, lock waits outside
            # it): cancel, and start a new connection next time.
            with contextlib.suppress(Exception):
                conn.cancel_safe()
            with contextlib.suppress(Exception):
                await conn.close()
            raise _error(self._timeout_text(), outcome="timeout",
                         rule_ids=(TIMEOUT_RULE,)) from None
        except ApprovalRequired as exc:
            _note_statement(cur, statements)
            raise _approval_error(exc) from None
        except StatementDenied as exc:
            _note_statement(cur, statements)
            raise _error(str(exc), outcome="denied", rule_ids=exc.rule_ids) from None
        except pg_errors.QueryCanceled:
            _note_statement(cur, statements)
            raise _error(self._timeout_text(), outcome="timeout",
                         rule_ids=(TIMEOUT_RULE,)) from None
        except psycopg.Error as exc:
            _note_statement(cur, statements)
            raise _error(_database_error_text(exc), outcome="db_error",
                         sqlstate=getattr(exc, "sqlstate", None)) from None

    def _timeout_text(self) -> str:
        secs = self.limits.statement_timeout_ms / 1000
        return (f"denied by limit `{TIMEOUT_RULE}`: the statement ran longer than {secs:g} s"
                " and was cancelled (set by the server's operator). Narrow it (WHERE, LIMIT,"
                " aggregates) rather than retrying it unchanged")

    async def _collect(self, cur: Any, conn: Any, query: Any, params: Sequence[Any] | None,
                       statements: list[str], max_rows: int, stream: bool) -> _Result:
        max_bytes = self.limits.max_result_bytes
        rows: list[list[Any]] = []
        used = 0
        truncated: str | None = None

        def take(row: Sequence[Any]) -> str | None:
            """Keep one row, or say which limit it would cross (the row is then not kept)."""
            nonlocal used
            if len(rows) >= max_rows:
                return "max_rows"
            cells = [_jsonable(v) for v in row]
            used += len(orjson.dumps(cells))
            if used > max_bytes:
                return "max_result_bytes"
            rows.append(cells)
            return None

        if stream and _streamable(conn, query, params):
            agen = cur.stream(query, params, size=min(max_rows + 1, 500))
            async with contextlib.aclosing(agen) as it:
                async for row in it:
                    if (truncated := take(row)) is not None:
                        break
        else:
            await cur.execute(query, params)
            while True:
                if cur.description is not None:
                    for row in await cur.fetchmany(max_rows + 1):
                        if (truncated := take(row)) is not None:
                            break
                if truncated or not cur.nextset():
                    break
                rows.clear()  # several result sets: the last one is shown
                used = 0
        ctx = cur._gov_ctx
        if ctx is not None:
            statements.append(ctx.id)
        columns = [c.name for c in cur.description] if cur.description else []
        return _Result(columns=columns, rows=rows, masked=dict(ctx.masked) if ctx else {},
                       truncated=truncated, statement_id=ctx.id if ctx else None,
                       status=cur.statusmessage)

    # -- tools ----------------------------------------------------------------------------------

    async def _tool_list_schemas(self, sess: _Session, args: dict[str, Any],
                                 statements: list[str]) -> ToolOutput:
        _no_args(args, ())
        self._spend(sess, rows=False)
        conn = await self._conn(sess)
        res = await self._run(sess, conn, _LIST_SCHEMAS_SQL, None, statements,
                              max_rows=10_000)
        names = [str(r[0]) for r in res.rows]
        text = "schemas: " + (", ".join(names) if names else "(none visible)")
        return ToolOutput(text=text, structured={"schemas": names})

    async def _tool_list_tables(self, sess: _Session, args: dict[str, Any],
                                statements: list[str]) -> ToolOutput:
        _no_args(args, ("schema",))
        schema = _opt_str(args, "schema", 200)
        self._spend(sess, rows=False)
        conn = await self._conn(sess)
        q = _LIST_TABLES_SQL + (" AND n.nspname = %s" if schema else "") + " ORDER BY 1, 2"
        res = await self._run(sess, conn, q, [schema] if schema else None, statements,
                              max_rows=10_000)
        tables = [{"schema": str(s), "name": str(n), "kind": _RELKINDS.get(str(k), str(k))}
                  for s, n, k in res.rows]
        lines = [f"{_qual(t['schema'], t['name'])} ({t['kind']})" for t in tables]
        text = (f"{len(tables)} table(s) and view(s)" + (" (truncated)" if res.truncated else "")
                + (":\n" + "\n".join(lines) if lines else ""))
        return ToolOutput(text=text, structured={"tables": tables,
                                                 "truncated": bool(res.truncated)})

    async def _tool_describe_table(self, sess: _Session, args: dict[str, Any],
                                   statements: list[str]) -> ToolOutput:
        _no_args(args, ("table",))
        table = _req_str(args, "table", 400)
        sample_n = self.limits.sample_rows
        self._spend(sess, 2 if sample_n else 1)
        conn = await self._conn(sess)
        try:
            res = await self._run(sess, conn, _DESCRIBE_SQL, [table], statements,
                                  max_rows=2_000, stream=False)
        except _ToolError as exc:
            if exc.output.structured and exc.output.structured.get("sqlstate") in (
                    "42P01", "3F000", "42602", "42601"):
                raise _error("no table or view by that name is visible to this agent; call"
                             " list_tables for the names (quote mixed-case names:"
                             " public.\"Users\")", outcome="not_found") from None
            raise
        if not res.rows:
            raise _error("that name is not a table or view (or its columns are not visible);"
                         " call list_tables", outcome="not_found")
        schema, name, relkind = str(res.rows[0][0]), str(res.rows[0][1]), str(res.rows[0][2])
        columns: list[dict[str, Any]] = [
            {"name": str(r[3]), "type": str(r[4]), "not_null": bool(r[5])} for r in res.rows]
        masked: dict[str, str] = {}
        sample: _Result | None = None
        sample_note = None
        if sample_n:
            q = pg_sql.SQL("SELECT * FROM {} LIMIT {}").format(
                pg_sql.Identifier(schema, name), pg_sql.Literal(sample_n))
            try:
                sample = await self._run(sess, conn, q, None, statements, max_rows=sample_n,
                                         stream=False)
                masked = sample.masked
            except _ToolError as exc:
                sample_note = exc.output.text
        if sample is None:
            masked = self._classify_columns(conn, schema, name, [c["name"] for c in columns])
        for col in columns:
            how = masked.get(col["name"])
            col["masked"] = how is not None
            if how is not None:
                strategy, _, reason = how.partition(":")
                col["mask_strategy"] = strategy
                col["mask_reason"] = reason
        predicate_rule = any(r.id == "column.disallow-predicate-on-masked"
                             for r in self.policy.rules_for(sess.identity))
        lines = [f"{_qual(schema, name)} ({_RELKINDS.get(relkind, relkind)}), "
                 f"{len(columns)} column(s):"]
        for col in columns:
            line = f"  {col['name']} {col['type']}" + (" NOT NULL" if col["not_null"] else "")
            if col["masked"]:
                line += f"  -- masked ({_explain_mask(col['mask_strategy'], col['mask_reason'])})"
            lines.append(line)
        if any(c["masked"] for c in columns):
            lines.append("Masked columns come back masked in every result, including"
                         " expressions built from them; the real values cannot be queried.")
            if predicate_rule:
                lines.append("Filtering, joining, grouping or ordering on a masked column is"
                             " denied (rule `column.disallow-predicate-on-masked`).")
        structured: dict[str, Any] = {"schema": schema, "name": name,
                                      "kind": _RELKINDS.get(relkind, relkind),
                                      "columns": columns}
        if sample is not None:
            lines.append(f"sample rows ({len(sample.rows)}, masked):")
            lines.append(_render_table(sample.columns, sample.rows))
            structured["sample"] = {"columns": sample.columns, "rows": sample.rows}
        elif sample_note:
            lines.append("no sample rows: " + sample_note)
            structured["sample_error"] = sample_note
        sess.budget.charge_rows(len(sample.rows) if sample else 0)
        return ToolOutput(text="\n".join(lines), structured=structured,
                          rows=len(sample.rows) if sample else 0)

    def _classify_columns(self, conn: Any, schema: str, table: str,
                          names: Sequence[str]) -> dict[str, str]:
        """The policy's classifier, for when no sample could be read (base columns only)."""
        gov = conn._governor
        ident = gov.identity()
        out = {}
        for col in names:
            found = gov.classifier.column(schema, table, col, ident)
            if found is not None and found[0] != "none":
                out[col] = f"{found[0]}:{found[1]}"
        return out

    async def _tool_query(self, sess: _Session, args: dict[str, Any],
                          statements: list[str]) -> ToolOutput:
        _no_args(args, ("sql", "params"))
        sql_text = _req_str(args, "sql", _MAX_SQL_CHARS)
        params = _params(args)
        _check_placeholders(sql_text, params)
        self._spend(sess)
        conn = await self._conn(sess)
        cap = min(self.limits.max_rows, sess.budget.rows_left())
        res = await self._run(sess, conn, sql_text, params, statements, max_rows=cap)
        if res.truncated == "max_rows" and cap < self.limits.max_rows:
            res.truncated = "rows_per_hour"
        sess.budget.charge_rows(len(res.rows))
        return _query_output(res, self.limits)

    async def _tool_explain(self, sess: _Session, args: dict[str, Any],
                            statements: list[str]) -> ToolOutput:
        from ..analysis import analyze

        _no_args(args, ("sql",))
        sql_text = _req_str(args, "sql", _MAX_SQL_CHARS)
        analysis = analyze(sql_text)
        if analysis.error is None and (
                len(analysis.statements) != 1
                or analysis.statements[0].kind not in _EXPLAINABLE):
            raise _error("explain takes exactly one SELECT, INSERT, UPDATE, DELETE or MERGE"
                         " statement (without EXPLAIN); nothing was sent",
                         outcome="bad_request")
        self._spend(sess, rows=False)
        conn = await self._conn(sess)
        # EXPLAIN, never ANALYZE: the plan is shown, the statement is not run. The combined
        # text still goes through the gate like any statement.
        res = await self._run(sess, conn, "EXPLAIN (FORMAT TEXT) " + sql_text, None,
                              statements, max_rows=2_000, stream=False)
        plan = "\n".join(str(r[0]) for r in res.rows)
        return ToolOutput(text=plan, structured={"plan": plan,
                                                 "truncated": bool(res.truncated)})

    async def _tool_request_approval(self, sess: _Session, args: dict[str, Any],
                                     statements: list[str]) -> ToolOutput:
        _no_args(args, ("sql", "params"))
        sql_text = _req_str(args, "sql", _MAX_SQL_CHARS)
        params = _params(args)
        _check_placeholders(sql_text, params)
        self._spend(sess, rows=False)
        sess.budget.charge_statement()  # a decision on a statement, like sending one
        conn = await self._conn(sess)
        gov = conn._governor
        ident = gov.identity()
        # Bring the session and catalog snapshot in line first, so the decision is the one
        # `query` would get.
        await conn.wait(conn._gov_session_gen(ident))
        # The statement as psycopg's cursor would send it (placeholders converted, the same
        # conversion the statement choke point sees); it is not sent here.
        from psycopg._queries import PostgresQuery
        from psycopg.adapt import Transformer

        pgq = PostgresQuery(Transformer(conn))
        pgq.convert(sql_text, params)
        store = _config.approvals(self.policy)
        approved = _approved_request(store, gov, ident, pgq, conn.pgconn._encoding)
        if approved is not None:
            return ToolOutput(
                text=(f"request {approved} is already approved by a person: run the identical"
                      " statement (same sql and params) with the query tool now; it runs once"),
                structured={"request_id": approved, "status": "approved"},
                outcome="approved")
        try:
            codec = conn.pgconn._encoding  # SQL_ASCII ("ascii"): read in the server's encoding
            ctx = gov.gate(pgq.query, pgq.params, ident,
                           view_codec(conn.pgconn) if codec == "ascii" else codec)
        except ApprovalRequired as exc:
            raise _approval_error(exc, requested=True) from None
        except StatementDenied as exc:
            raise _error(str(exc), outcome="denied", rule_ids=exc.rule_ids) from None
        if ctx.span is not None:  # a dry run: end the span it opened
            from .. import telemetry

            telemetry.end_statement_span(ctx.span, ctx, {"outcome": "not_run"})
        return ToolOutput(
            text=("this statement does not need approval under the current policy; nothing"
                  " was sent. Run it with the query tool"),
            structured={"request_id": None, "status": "not_needed"}, outcome="not_needed")

    async def _tool_approval_status(self, sess: _Session, args: dict[str, Any],
                                    statements: list[str]) -> ToolOutput:
        _no_args(args, ("request_id",))
        request_id = _req_str(args, "request_id", 64)
        conn = await self._conn(sess)  # for the audit event of this call
        ident = conn._governor.identity()
        try:
            req = _config.approvals(self.policy).get(request_id)
        except PolicyError:
            req = None
        who = (req or {}).get("requester") or {}
        if req is None or who.get("id") != ident.id or who.get("kind") != ident.kind:
            # Requests of other identities are not this agent's business: same answer as none.
            raise _error("no approval request with that id was made by this agent",
                         outcome="not_found")
        status = str(req.get("status"))
        next_step = {
            "pending": (f"a person decides; they run `governed-db approvals approve"
                        f" {request_id}` (or deny). Check again later; do not resend the"
                        " statement meanwhile"),
            "approved": ("a person approved it: run the identical statement (same sql and"
                         " params) with the query tool; it runs once"),
            "used": "the approved statement has run (approvals are single use)",
            "denied": "a person denied it: do not retry this statement",
            "expired": "it expired undecided: call request_approval again if still needed",
        }.get(status, "unknown status")
        text = (f"approval request {request_id}: {status} (rules:"
                f" {', '.join(req.get('rule_ids') or []) or '-'}). {next_step}")
        return ToolOutput(text=text, structured={
            "request_id": request_id, "status": status, "rule_ids": req.get("rule_ids") or [],
            "summary": req.get("summary"), "next": next_step}, outcome=status)


# -- helpers --------------------------------------------------------------------------------------


def _with_timeout(policy: Policy, timeout_ms: int) -> Policy:
    """The policy with each kind's statement_timeout no longer than the MCP limit."""
    timeouts = dict(policy.session.statement_timeout)
    for kind in ("human", "service", "ai_agent"):
        current = timeouts.get(kind)
        current_ms = _interval_ms(current) if current is not None else 0
        if current_ms == 0 or current_ms > timeout_ms:
            timeouts[kind] = f"{timeout_ms}ms"
    session = attrs.evolve(policy.session, statement_timeout=timeouts)
    return attrs.evolve(policy, session=session, digest="")


def _interval_ms(value: str) -> int:
    from ._settings import parse_duration_ms

    try:
        return parse_duration_ms(value)
    except ValueError:
        return 0


_STREAM_KINDS = frozenset({"SELECT", "SHOW", "EXPLAIN"})


def _streamable(conn: Any, query: Any, params: Sequence[Any] | None) -> bool:
    """Whether to stream: rows fetched in chunks, the query cancelled once a cap is reached,
    so a huge result never sits in the server's memory.

    Streaming is psycopg's extended protocol: one statement, which must return rows. Several
    statements are streamed too, so that the server refuses them (after the governed gate has
    judged the whole string). Statements that change rows, or anything under an exact
    blast-radius limit (``statement.affected-row-limit``, measured on the ``execute()`` path),
    take ``execute()``.
    """
    if not isinstance(query, str):
        return False
    from psycopg._queries import PostgresQuery
    from psycopg.adapt import Transformer

    from ..analysis import analyze

    pgq = PostgresQuery(Transformer(conn))
    try:
        pgq.convert(query, params)
    except Exception:  # noqa: BLE001 - psycopg reports it the same way on execute()
        return False
    analysis = analyze(pgq.query, conn.pgconn._encoding)  # cached: the gate reuses it
    if analysis.error is not None or not analysis.statements:
        return False
    if len(analysis.statements) > 1:
        return True
    if conn._governor.limits_rows():
        return False
    return analysis.statements[0].kinds <= _STREAM_KINDS


def _note_statement(cur: Any, statements: list[str]) -> None:
    ctx = getattr(cur, "_gov_ctx", None)
    if ctx is not None and ctx.id not in statements:
        statements.append(ctx.id)


def _approved_request(store: Any, gov: Any, ident: Identity, pgq: Any,
                      codec: str) -> str | None:
    """The id of an approved (unused) request bound to exactly this statement, if any:
    ``request_approval`` must not use it up (only running the statement does)."""
    from ..engine import digest_params
    from ..analysis import analyze
    from ..approvals import approval_usable, binding_hash, statement_binding

    # Exactly the binding the store computes in check_or_request (the approvals tests and
    # the MCP round-trip test fail if the two ever drift apart).
    analysis = analyze(pgq.query, codec)
    statements, _ = gov.decide(analysis, ident)
    try:
        subject = gov.approval_subject(analysis, statements,
                                       (gov.execution_digest(pgq.query, pgq.params),))
    except StatementDenied:
        return None  # nothing can be approved for it (the gate says why)
    binding = binding_hash(normalized=statement_binding(subject),
                           params_digest=digest_params(pgq.params, gov._param_key),
                           identity_label=ident.label, policy_tag=gov.policy.version_tag)
    for req in store.list("approved"):
        if req.get("binding") == binding and approval_usable(req, gov.policy):
            return str(req["id"])
    return None


def _approval_error(exc: ApprovalRequired, *, requested: bool = False) -> _ToolError:
    rid = exc.request_id
    reason = str(exc).split(" (approval request ")[0]
    text = (f"{reason}. Nothing was run. Approval request {rid} is pending: a person decides"
            f" (they run `governed-db approvals approve {rid}`). Check it with approval_status;"
            " once approved, send the identical statement (same sql and params) with the query"
            " tool and it runs once")
    if requested:
        return _ToolError(ToolOutput(
            text=text, structured={"request_id": rid, "status": "pending",
                                   "rule_ids": list(exc.rule_ids)},
            is_error=False, outcome="approval_requested", rule_ids=tuple(exc.rule_ids)))
    return _error(text, outcome="approval_required", rule_ids=exc.rule_ids, request_id=rid,
                  status="pending")


def _database_error_text(exc: BaseException) -> str:
    sqlstate = getattr(exc, "sqlstate", None) or "-"
    # The text was redacted by the governed connection (values removed; the caller's own
    # identifiers and syntax kept, which is what a model needs to fix the statement).
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if sqlstate == "42601" and "multiple commands" in message:
        return ("send one statement per query call (several statements in one string are"
                " refused by the server in this mode); nothing was run")
    if sqlstate == "25006":
        return ("the database refused a write: this agent's session is read-only"
                f" ({type(exc).__name__}, SQLSTATE {sqlstate}); rewriting will not help")
    return f"the database refused the statement ({type(exc).__name__}, SQLSTATE {sqlstate}):" \
           f" {message}"


def _query_output(res: _Result, limits: Limits) -> ToolOutput:
    n = len(res.rows)
    head = (f"{n} row(s)" if res.columns else (res.status or "OK"))
    if res.truncated:
        why = {"max_rows": f"at most {limits.max_rows} rows are shown",
               "max_result_bytes": f"at most {limits.max_result_bytes} bytes of values are"
                                   " shown",
               "rows_per_hour": "the hourly row budget is nearly spent"}[res.truncated]
        head += f" [truncated: {why}; add LIMIT/WHERE or aggregate for the rest]"
    if res.masked:
        head += "; masked: " + ", ".join(
            f"{col} ({_explain_mask(*_split_mask(how))})" for col, how in sorted(res.masked.items()))
    text = head if not res.columns else head + "\n" + _render_table(res.columns, res.rows)
    structured = {"columns": res.columns, "rows": res.rows, "row_count": n,
                  "truncated": bool(res.truncated), "truncated_reason": res.truncated,
                  "masked": res.masked, "status": res.status, "statement_id": res.statement_id}
    return ToolOutput(text=text, structured=structured, rows=n)


def _split_mask(how: str) -> tuple[str, str]:
    strategy, _, reason = how.partition(":")
    return strategy, reason


def _explain_mask(strategy: str, reason: str) -> str:
    what = {"email": "e-mail local part hidden, domain kept", "partial": "last 4 kept",
            "redact": "replaced by ****", "hash": "replaced by a keyed hash token",
            "null": "returned as NULL", "detect": "PII-looking values hidden"}.get(
        strategy, strategy)
    src = reason[len("lineage:"):] if reason.startswith("lineage:") else reason
    why = ("name denotes " + src.split(":", 1)[1]) if src.startswith("name:") else {
        "declared": "declared sensitive by the policy", "unknown-lineage":
        "its source cannot be established", "detected": "lineage unknown, values scanned",
        "unmask-grant": "partly revealed by an unmask grant"}.get(src, src)
    if reason.startswith("lineage:"):
        why = "derived from a column whose " + why
    return f"{strategy}: {what}; {why}"


def _render_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A compact pipe table: header, then one line per row (newlines and pipes escaped)."""
    out = [" | ".join(_cell(c) for c in columns)]
    out.extend(" | ".join(_cell(v) for v in row) for row in rows)
    return "\n".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r") \
        .replace("|", "\\|")


def _jsonable(value: Any) -> Any:
    """A JSON value for structured content (exact: decimals and dates as text)."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        return value if len(value) <= _MAX_CELL_CHARS else value[:_MAX_CELL_CHARS] + "…"
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) \
            else str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        return "\\x" + raw[: _MAX_CELL_CHARS // 2].hex()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return _jsonable(str(value))


def _qual(schema: str, name: str) -> str:
    return f"{_ident(schema)}.{_ident(name)}"


def _ident(name: str) -> str:
    if name.isidentifier() and name == name.lower() and name.isascii():
        return name
    return '"' + name.replace('"', '""') + '"'


def _no_args(args: Mapping[str, Any], allowed: Sequence[str]) -> None:
    extra = sorted(set(args) - set(allowed))
    if extra:
        raise _error(f"unexpected argument(s) {', '.join(a[:40] for a in extra)}; this tool"
                     f" takes {', '.join(allowed) or 'none'}", outcome="bad_request")


def _req_str(args: Mapping[str, Any], key: str, limit: int) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _error(f"argument {key} must be a non-empty string", outcome="bad_request")
    if len(value) > limit or "\x00" in value:
        raise _error(f"argument {key} is too long (at most {limit} characters) or holds a NUL"
                     " character", outcome="bad_request")
    return value


def _opt_str(args: Mapping[str, Any], key: str, limit: int) -> str | None:
    return None if args.get(key) in (None, "") else _req_str(args, key, limit)


def _params(args: Mapping[str, Any]) -> list[Any] | None:
    params = args.get("params")
    if params is None:
        return None
    if not isinstance(params, list) or len(params) > 1000 or not all(
            v is None or isinstance(v, (str, int, float, bool)) for v in params):
        raise _error("argument params must be a list of at most 1000 strings, numbers,"
                     " booleans or nulls", outcome="bad_request")
    if any(isinstance(v, str) and "\x00" in v for v in params):
        raise _error("a parameter holds a NUL character", outcome="bad_request")
    return params


def _check_placeholders(sql_text: str, params: list[Any] | None) -> None:
    """Refuse, before anything is spent or sent, a ``params`` list that the placeholders in
    ``sql`` cannot take (named ``%(name)s`` placeholders, a count mismatch, ``%x``): psycopg
    would raise on ``execute()``; the model gets a request error that says what to change."""
    if params is None:
        return
    from psycopg._queries import PostgresQuery
    from psycopg.adapt import Transformer

    try:
        PostgresQuery(Transformer()).convert(sql_text, params)
    except (TypeError, ValueError, psycopg.ProgrammingError) as exc:
        raise _error(f"argument params does not fit the placeholders in sql ({exc}): use one"
                     " %s per value in params, in order (named %(name)s placeholders are not"
                     " supported; write %% for a literal percent sign)",
                     outcome="bad_request") from None
