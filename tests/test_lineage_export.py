"""Audit export (CSV, ECS, OpenLineage), live OpenLineage emission, policy replay, session views.

One recorded session (an agent's tool call reading with a join + expression, a human inserting
and updating, a denied DROP) is exported, parsed back and checked: chain fields kept, gaps
detectable, OpenLineage events valid against the client's schema, datasets and column lineage
right, no PII and no literal in any output; then replayed against a stricter policy.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from pathlib import Path
from typing import Any

import attr
import psycopg
import pytest
from click.testing import CliRunner

import governed_db
from governed_db import Identity
from governed_db.audit import AuditLog, _export, iter_records, verify
from governed_db.cli import main
from governed_db.errors import StatementDenied
from governed_db.policy import default_policy_text, parse_policy
from governed_db.testing import EgressMonitor, assert_no_unmasked_pii, pii_canary

pytest.importorskip("openlineage.client")
jsonschema = pytest.importorskip("jsonschema")

AGENT = Identity("recs-bot", "ai_agent", purpose="weekly recommendations", model="test-llm",
                 on_behalf_of="maria", attributes={"tool_call_id": "call_A1"})
HUMAN = Identity("alice", "human", purpose="support")
JOIN = ("SELECT u.name, lower(u.email) AS e, o.amount * 2 AS dbl FROM users u"
        " JOIN orders o ON o.user_id = u.id WHERE u.id = 1001")
LITERAL = "qlit-7781"  # a literal only the statements carry: must never be exported


def _record(dsn: str, path: Path, settings: dict[str, Any] | None = None,
            monitor: EgressMonitor | None = None) -> dict[str, Any]:
    """A demo-like session; returns the canary and the ids of what was recorded."""
    canary = pii_canary("email")
    if monitor is not None:
        monitor.add_canary(canary)
        monitor.add_canary(LITERAL)
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("INSERT INTO users (id, email, name) VALUES (1003, %s, 'qnm Carol')",
                    (canary,))
    log = AuditLog.open(path, settings={"batch_ms": 0, **(settings or {})})
    with governed_db.connect(dsn, identity=AGENT, audit=log) as conn:
        rows = conn.execute(JOIN).fetchall()
        assert rows and rows[0][1] != "qem.alice@example.com"  # masked
        conn.execute("SELECT id, email FROM users").fetchall()
        conn.execute("SELECT count(*) FROM products").fetchall()
        with pytest.raises(StatementDenied):
            conn.execute("DROP TABLE orders")
    with governed_db.connect(dsn, identity=HUMAN, audit=log) as conn:
        conn.execute(f"INSERT INTO orders (id, user_id, amount, note) VALUES (9, 1001, 5,"
                     f" '{LITERAL}')")
        conn.execute(f"UPDATE orders SET note = '{LITERAL}' WHERE id = 9")
        conn.commit()
        conn.execute("SELECT email FROM users WHERE id = 1003").fetchall()
    log.close()
    recs = [r for _, r, _ in iter_records(path)]
    stmts = [r for r in recs if r["type"] == "statement"]
    return {"canary": canary, "records": recs, "statements": stmts, "log": log}


@pytest.fixture
def recorded(dsn: str, tmp_path: Path) -> dict[str, Any]:
    out = _record(dsn, tmp_path / "audit.jsonl")
    out["path"] = tmp_path / "audit.jsonl"
    out["dsn"] = dsn
    return out


def _no_leak(obj: Any, canary: str) -> None:
    assert_no_unmasked_pii(obj, canaries=[canary, LITERAL, "qem.alice", "qnm Alice"])


def _export_cli(path: Path, fmt: str, out: Path, *extra: str) -> None:
    res = CliRunner().invoke(main, ["audit", "export", str(path), "--format", fmt,
                                    "--out", str(out), *extra])
    assert res.exit_code == 0, res.output


# -- records ------------------------------------------------------------------------------

def test_records_carry_session_and_lineage(recorded):
    stmts = recorded["statements"]
    join = next(r for r in stmts if r["statement"]["normalized"].startswith("SELECT u.name"))
    assert join["lineage"] == [["name", ["public.users.name"]], ["e", ["public.users.email"]],
                               ["dbl", ["public.orders.amount"]]]
    sessions = {r["db"]["session"] for r in recorded["records"] if r["type"] != "checkpoint"}
    assert len(sessions) == 2  # one per governed connection, on every record incl. events
    verify(recorded["path"], recorded["log"].key.public_key())


# -- CSV / ECS round trips --------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csv", "ecs"])
def test_siem_export_round_trips_and_keeps_the_chain(recorded, tmp_path, fmt):
    out = tmp_path / f"export.{fmt}"
    _export_cli(recorded["path"], fmt, out)
    text = out.read_text()
    rows = _export.read_csv(text) if fmt == "csv" else \
        [_export.from_ecs(d) for d in _export.iter_lines(text)]
    recs = recorded["records"]
    assert len(rows) == len(recs)  # one row / line per record, checkpoints included
    for rec, row in zip(recs, rows, strict=True):
        for key in ("chain", "seq", "prev", "hash", "type", "ts"):
            assert row[key] == rec[key], key
        assert row.get("id") == rec.get("id")
        if rec["type"] == "statement":
            ident = row["identity_id"] if fmt == "csv" else row["identity"]["id"]
            assert ident == rec["identity"]["id"]
            reads = row["reads"] if fmt == "csv" else row["statement"]["reads"]
            assert reads == rec["statement"]["reads"]
            masked = row["masked"]
            assert masked == rec["masked"]
    assert _export.chain_gaps(rows) == []
    # A SIEM-side check sees a deleted record and a reordering without our verifier.
    middle = next(i for i, r in enumerate(rows) if r["type"] == "statement" and i > 1)
    assert len(_export.chain_gaps(rows[:middle] + rows[middle + 1:])) == 1
    swapped = rows[:middle] + [rows[middle + 1], rows[middle]] + rows[middle + 2:]
    assert _export.chain_gaps(swapped)
    _no_leak(text, recorded["canary"])


def test_ecs_fields(recorded):
    join = next(r for r in recorded["statements"]
                if r["statement"]["normalized"].startswith("SELECT u.name"))
    doc = _export.to_ecs(join)
    assert doc["event"]["kind"] == "event" and doc["event"]["category"] == ["database"]
    assert doc["event"]["outcome"] == "success" and doc["event"]["type"] == ["access"]
    assert doc["user"] == {"id": "recs-bot", "name": "recs-bot"}
    assert doc["db"]["statement"] == join["statement"]["normalized"]
    assert doc["labels"]["seq"] == str(join["seq"]) and doc["labels"]["hash"] == join["hash"]
    assert doc["governed_db"]["tables"]["all"] == ["orders", "users"]
    assert doc["related"]["user"] == ["recs-bot", "maria"]
    drop = next(r for r in recorded["statements"] if "DROP" in r["statement"]["kinds"])
    d = _export.to_ecs(drop)
    assert (d["event"]["outcome"], d["event"]["type"]) == ("failure", ["denied"])
    assert d["governed_db"]["decision"]["rules"] == ["statement.allowlist",
                                                     "statement.disallow-drop",
                                                     "statement.disallow-ddl"]


# -- OpenLineage ------------------------------------------------------------------------------

def _facet_classes() -> dict[str, Any]:
    from governed_db.audit._openlineage import _facet_classes as classes

    c = classes()
    return {"columnLineage": c["cl"].ColumnLineageDatasetFacet,
            "schema": c["schema"].SchemaDatasetFacet,
            "datasetType": c["dtype"].DatasetTypeDatasetFacet, "sql": c["sql"].SQLJobFacet,
            "jobType": c["jtype"].JobTypeJobFacet, "governed_db": c["RunFacet"],
            "governed_db_statement": c["StatementFacet"]}


def client_schema() -> dict[str, Any]:
    """The OpenLineage RunEvent schema as the official client ships it: its classes are
    generated from the spec, so required fields, types and enums come from them (the client
    does not ship the spec's JSON files)."""
    from openlineage.client.generated import base

    defs: dict[str, Any] = {}
    facets = _facet_classes()

    def of_type(tp: Any, key: str | None = None) -> dict[str, Any]:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            return {"anyOf": [of_type(a, key) for a in args]}
        if tp is type(None):
            return {"type": "null"}
        if tp is str:
            return {"type": "string"}
        if tp is bool:
            return {"type": "boolean"}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            return {"type": "number"}
        if tp is typing.Any:
            return {}
        if origin is list:
            return {"type": "array", "items": of_type(args[0])}
        if origin is dict:
            value = args[1]
            if isinstance(value, type) and issubclass(value, base.BaseFacet):
                known = {k: of_class(c) for k, c in facets.items() if issubclass(c, value)}
                return {"type": "object", "properties": known,
                        "additionalProperties": of_class(value)}
            return {"type": "object", "additionalProperties": of_type(value)}
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return {"enum": [m.value for m in tp]}
        if attr.has(tp):
            return of_class(tp)
        raise AssertionError(f"no schema for {tp!r}")

    def of_class(cls: type) -> dict[str, Any]:
        name = f"{cls.__module__}.{cls.__qualname__}"
        if name not in defs:
            defs[name] = {}
            hints = typing.get_type_hints(cls)
            props, required = {}, []
            for f in attr.fields(cls):
                props[f.name] = of_type(hints[f.name], f.name)
                if f.default is attr.NOTHING:
                    required.append(f.name)
            is_facet = issubclass(cls, base.BaseFacet)
            if is_facet:
                required += ["_producer", "_schemaURL"]
            defs[name] = {"type": "object", "properties": props, "required": required,
                          # facets may carry more (the spec's BaseFacet allows it); core
                          # objects may not
                          "additionalProperties": is_facet}
        return {"$ref": f"#/$defs/{name}"}

    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            **of_class(base.RunEvent), "$defs": defs}


def _validate(events: list[dict[str, Any]]) -> None:
    import uuid

    from dateutil import parser

    validator = jsonschema.Draft202012Validator(client_schema())
    for ev in events:
        errors = sorted(validator.iter_errors(ev), key=str)
        assert not errors, errors[0]
        uuid.UUID(ev["run"]["runId"])
        parser.isoparse(ev["eventTime"])
        assert ev["schemaURL"].startswith("https://openlineage.io/spec/2-0-2/OpenLineage.json")
        for group in (ev["run"].get("facets") or {}, ev["job"].get("facets") or {},
                      *[d.get("facets") or {} for d in ev["inputs"] + ev["outputs"]]):
            for name, facet in group.items():
                own = name.startswith("governed_db")
                # ours, or one the client itself adds on emit (its own producer)
                assert facet["_producer"] == "https://pypi.org/project/governed-db/" or (
                    not own and facet["_producer"].startswith("https://github.com/OpenLineage/"))
                assert facet["_schemaURL"].startswith(
                    "https://pypi.org/project/governed-db/spec/facets/" if own
                    else "https://openlineage.io/spec/facets/"), name
    # The validator is not vacuous: a missing required field and a wrong type fail.
    bad = json.loads(json.dumps(events[0]))
    del bad["run"]["runId"]
    assert list(validator.iter_errors(bad))
    bad = json.loads(json.dumps(events[0]))
    bad["eventType"] = "FINISHED"
    assert list(validator.iter_errors(bad))


def _lineage_checks(events: list[dict[str, Any]], recorded: dict[str, Any]) -> None:
    dbname = recorded["statements"][0]["db"]["dbname"]
    port = recorded["statements"][0]["db"]["port"]
    ns = f"postgres://localhost:{port}"
    agent_run = {e["run"]["runId"] for e in events
                 if e["run"].get("facets", {}).get("governed_db", {}).get("toolCallId")}
    assert len(agent_run) == 1  # one run for the tool call
    kinds = [e["eventType"] for e in events if e["run"]["runId"] in agent_run]
    assert kinds[0] == "START" and kinds[-1] == "COMPLETE" and kinds.count("RUNNING") == 4
    start = next(e for e in events if e["run"]["runId"] in agent_run)
    assert start["job"] == {**start["job"], "namespace": "governed_db",
                            "name": "ai_agent:recs-bot/weekly recommendations"}
    facet = start["run"]["facets"]["governed_db"]
    assert (facet["model"], facet["onBehalfOf"], facet["toolCallId"]) == \
        ("test-llm", "maria", "call_A1")
    join = next(e for e in events if e["eventType"] == "RUNNING" and e["job"]["facets"]["sql"]
                ["query"].startswith("SELECT u.name"))
    assert {(d["namespace"], d["name"]) for d in join["inputs"]} == {
        (ns, f"{dbname}.public.orders"), (ns, f"{dbname}.public.users")}
    (result,) = join["outputs"]
    assert result["facets"]["datasetType"]["datasetType"] == "QUERY_RESULT"
    fields = result["facets"]["columnLineage"]["fields"]
    assert set(fields) == {"name", "e", "dbl"}

    def src(col: str) -> tuple[str, str, str, bool]:
        (f,) = fields[col]["inputFields"]
        (t,) = f["transformations"]
        return f["name"], f["field"], t["subtype"], t["masking"]

    # users.name is a person's name (by its table): masked like the e-mail
    assert src("name") == (f"{dbname}.public.users", "name", "IDENTITY", True)
    assert src("e") == (f"{dbname}.public.users", "email", "TRANSFORMATION", True)
    assert src("dbl") == (f"{dbname}.public.orders", "amount", "TRANSFORMATION", False)
    st = join["run"]["facets"]["governed_db_statement"]
    rec = next(r for r in recorded["statements"] if r["id"] == st["recordId"])
    assert (st["chain"], st["seq"], st["hash"]) == (rec["chain"], rec["seq"], rec["hash"])
    insert = next(e for e in events if e["eventType"] == "RUNNING"
                  and e["job"]["facets"]["sql"]["query"].startswith("INSERT"))
    assert [(d["namespace"], d["name"]) for d in insert["outputs"]] == \
        [(ns, f"{dbname}.public.orders")]
    assert insert["inputs"] == []
    # The denied DROP is reported (decision, rules) but moved no data: no dataset edges.
    (drop,) = [e for e in events if e["eventType"] == "RUNNING"
               and e["run"]["facets"]["governed_db_statement"]["decision"] == "deny"]
    assert (drop["inputs"], drop["outputs"]) == ([], [])
    assert "statement.disallow-drop" in drop["run"]["facets"]["governed_db_statement"]["rules"]


def test_openlineage_export_validates_and_names_the_lineage(recorded, tmp_path):
    out = tmp_path / "lineage.jsonl"
    _export_cli(recorded["path"], "openlineage", out)
    events = list(_export.iter_lines(out.read_text()))
    _validate(events)
    _lineage_checks(events, recorded)
    _no_leak(out, recorded["canary"])


def test_openlineage_live_emission_file_transport(dsn, tmp_path):
    ol = tmp_path / "ol.jsonl"
    settings = {"openlineage": {"transport": {"type": "file", "log_file_path": str(ol),
                                              "append": True}, "batch_ms": 5}}
    # Strict mode: every row, error, span, audit record and governed_db log line is checked
    # for PII and canaries while the session runs and the emitter works.
    with EgressMonitor() as mon:
        recorded = _record(dsn, tmp_path / "audit.jsonl", settings, mon)
    assert not mon.violations, mon.report()
    (sink,) = [s for s in recorded["log"].sinks if type(s).__name__ == "OpenLineageSink"]
    assert (sink.failed, sink.dropped) == (0, 0) and sink.sent > 0
    events = list(_export.iter_lines(ol.read_text()))
    assert len(events) == sink.sent
    _validate(events)
    _lineage_checks(events, recorded)
    _no_leak(ol, recorded["canary"])


def test_openlineage_failures_never_block_statements(dsn, tmp_path):
    class Broken:
        def __init__(self) -> None:
            self.calls = 0

        def emit(self, event: Any) -> None:
            self.calls += 1
            raise ConnectionError("collector down")

        def close(self, timeout: float) -> bool:
            return True

    client = Broken()
    log = AuditLog.open(tmp_path / "audit.jsonl", settings={
        "batch_ms": 0, "openlineage_client": client,
        "openlineage": {"transport": {"type": "console"}, "batch_ms": 0}})
    with governed_db.connect(dsn, identity=AGENT, audit=log) as conn:
        for _ in range(3):
            assert conn.execute("SELECT count(*) FROM products").fetchone() == (1,)
    log.flush()
    (sink,) = log.sinks
    assert sink.wait_idle()
    log.close()
    assert client.calls >= 4 and sink.failed == client.calls and sink.sent == 0
    assert "collector down" in sink.last_error
    assert log.error is None  # the audit trail itself is unaffected
    verify(tmp_path / "audit.jsonl")


def test_openlineage_policy_section_is_validated():
    base = default_policy_text()
    ok = parse_policy(base + '\n[audit.openlineage]\nnamespace = "shop"\n'
                      'transport = { type = "http", url = "http://127.0.0.1:5000" }\n')
    assert ok.audit["openlineage"]["namespace"] == "shop"
    for bad in ('transport = { type = "pigeon" }', 'run_per = "year"', 'colour = "red"',
                'job_name = "{nope}"'):
        with pytest.raises(governed_db.errors.PolicyError, match="audit.openlineage"):
            parse_policy(base + f"\n[audit.openlineage]\n{bad}\n")


# -- session and tool-call reports ------------------------------------------------------------

def test_report_by_tool_call_and_session(recorded):
    res = CliRunner().invoke(main, ["audit", "report", str(recorded["path"]),
                                    "--tool-call", "call_A1", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["identities"] == ["ai_agent:recs-bot"] and rep["models"] == ["test-llm"]
    assert rep["totals"]["statements"] == 4
    assert (rep["totals"]["ok"], rep["totals"]["denied"]) == (3, 1)
    assert [s["outcome"] for s in rep["statements"]] == ["ok", "ok", "ok", "denied"]
    assert "statement.disallow-drop" in rep["statements"][3]["rules"]
    users = next(t for t in rep["tables"] if t["table"] == "users")
    assert users["columns"] == ["email", "id", "name"] and "e" in users["masked"]
    human = next(r for r in recorded["statements"] if r["identity"]["id"] == "alice")
    sid = human["db"]["session"]
    res = CliRunner().invoke(main, ["audit", "report", str(recorded["path"]),
                                    "--session", sid[:12], "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert [s["kinds"] for s in rep["statements"]] == [["INSERT"], ["UPDATE"], ["SELECT"]]
    assert [s["transaction"] for s in rep["statements"][:2]] == ["committed", "committed"]
    assert rep["transactions"][0]["outcome"] == "commit"
    assert rep["sessions"][0]["connected"] and rep["sessions"][0]["closed"]
    assert rep["totals"]["rows"] == 3  # 1 inserted + 1 updated + 1 read
    table = CliRunner().invoke(main, ["audit", "report", str(recorded["path"]),
                                      "--session", sid])
    assert table.exit_code == 0 and "committed" in table.output
    _no_leak(res.output + table.output, recorded["canary"])


# -- policy replay ------------------------------------------------------------------------------

STRICTER = """
[[rules]]
id = "table.deny-list"
level = "error"
identity_kinds = ["ai_agent"]
tables = ["orders"]

[[rules]]
id = "statement.require-approval"
level = "approval"
identity_kinds = ["human"]
kinds = ["UPDATE"]
"""


def _replay(recorded: dict[str, Any], policy_text: str, tmp_path: Path, *extra: str) -> Any:
    pol = tmp_path / "new.toml"
    pol.write_text(policy_text)
    return CliRunner().invoke(main, ["policy", "replay", str(recorded["path"]), "--policy",
                                     str(pol), "--json", *extra])


@pytest.mark.parametrize("with_catalog", [False, True])
def test_replay_lists_exactly_what_a_stricter_policy_denies(recorded, tmp_path, with_catalog):
    extra = ("--dsn", recorded["dsn"]) if with_catalog else ()
    res = _replay(recorded, default_policy_text() + STRICTER, tmp_path, *extra)
    assert res.exit_code == 1, res.output
    rep = json.loads(res.output)
    stmts = recorded["statements"]
    join = next(r for r in stmts if r["statement"]["normalized"].startswith("SELECT u.name"))
    update = next(r for r in stmts if "UPDATE" in r["statement"]["kinds"])
    got = {(c["id"], c["change"], tuple(c["rules"])) for c in rep["changes"]}
    assert got == {(join["id"], "denied", ("table.deny-list",)),
                   (update["id"], "approval", ("statement.require-approval",))}
    assert rep["by_rule"] == {"table.deny-list": {"denied": 1},
                              "statement.require-approval": {"approval": 1}}
    assert rep["by_identity"] == {"ai_agent:recs-bot": {"denied": 1},
                                  "human:alice": {"approval": 1}}
    assert rep["evaluated"] == len(stmts)
    assert ("not evaluated" in rep["masking"]) is not with_catalog
    assert any("row counts" in c for c in rep["caveats"])
    _no_leak(res.output, recorded["canary"])


@pytest.mark.parametrize("with_catalog", [False, True])
def test_replay_with_the_same_policy_lists_nothing(recorded, tmp_path, with_catalog):
    extra = ("--dsn", recorded["dsn"]) if with_catalog else ()
    res = _replay(recorded, default_policy_text(), tmp_path, *extra)
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["changes"] == [] and rep["evaluated"] == len(recorded["statements"])
    if with_catalog:
        assert rep["masking_evaluated"] >= 4


def test_replay_sees_masking_changes_with_the_catalog(recorded, tmp_path):
    stricter = default_policy_text() + """
[[masking.columns]]
columns = ["orders.amount"]
strategy = "redact"
"""
    res = _replay(recorded, stricter, tmp_path, "--dsn", recorded["dsn"])
    assert res.exit_code == 1, res.output
    rep = json.loads(res.output)
    join = next(r for r in recorded["statements"]
                if r["statement"]["normalized"].startswith("SELECT u.name"))
    # The masking change is listed; and since `o.amount * 2` can raise (overflow) for some
    # hidden values once amount is masked, the agent's statement is now a value oracle: denied.
    assert [(c["id"], c["change"], c["masking"]) for c in rep["changes"]] == [
        (join["id"], "denied", [{"column": "dbl", "before": None, "after": "redact"}])]
    assert rep["by_rule"] == {"column.disallow-predicate-on-masked": {"denied": 1}}
    # Without the catalog, masking is not evaluated (and said so): no change listed.
    res = _replay(recorded, stricter, tmp_path)
    assert json.loads(res.output)["changes"] == []
