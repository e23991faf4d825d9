"""The audit trail under stress: SIGKILL, threads + async tasks, processes; the auditor's report."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import psycopg_pool
import pytest
from click.testing import CliRunner

import governed_db
from governed_db import Identity, errors
from governed_db.audit import AuditLog, VerificationError, load_public_key, query, verify
from governed_db.cli import main

from .conftest import AGENT, MARKERS

WRITER = """
import sys, time
from governed_db.audit import AuditLog
from governed_db import Identity
log = AuditLog.open(sys.argv[1])
who = Identity("w", "service")
n = 0
while True:
    for _ in range(200):
        log.event("heartbeat", who, {"host": "x"}, n=n)
        n += 1
    log.flush()
    if n == 2000:
        print("flushed", flush=True)
    if len(sys.argv) > 2 and n >= int(sys.argv[2]):
        log.close()
        break
    time.sleep(0.001)
"""


def test_sigkill_mid_stream_verifies_up_to_last_durable_record(tmp_path):
    path = tmp_path / "audit.jsonl"
    env = dict(os.environ, GOVERNED_DB_HOME=str(tmp_path / "state"))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "flushed"
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    pub = load_public_key(tmp_path / "state" / "audit-signing.pub")
    with pytest.raises(VerificationError, match="close checkpoint|torn"):
        verify(path, pub)  # honest: the chain was cut
    report = verify(path, pub, allow_open=True)
    assert report.records >= 2000 and len(report.open_chains) == 1
    # A torn partial last line (killed inside write()) is reported, not counted.
    with path.open("ab") as f:
        f.write(b'{"chain":"abc","seq":')
    report2 = verify(path, pub, allow_open=True)
    assert report2.torn_line is not None and report2.records == report.records
    result = CliRunner().invoke(main, ["audit", "verify", str(path), "--allow-open"])
    assert result.exit_code == 0 and "TORN" in result.output and "OPEN" in result.output


def test_processes_share_one_file_without_breaking_chains(tmp_path):
    path = tmp_path / "audit.jsonl"
    env = dict(os.environ, GOVERNED_DB_HOME=str(tmp_path / "state"))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), "3000"], env=env,
                              stdout=subprocess.DEVNULL) for _ in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    report = verify(path, load_public_key(tmp_path / "state" / "audit-signing.pub"))
    assert report.chains == 3 and report.records >= 9000


def test_threads_and_async_tasks_leave_one_complete_chain(dsn, tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog.open(path)
    per_thread = 25

    def worker(i: int) -> None:
        ident = Identity(f"svc-{i}", "service")
        with governed_db.connect(dsn, identity=ident, audit=log, autocommit=True) as c:
            for j in range(per_thread):
                c.execute("SELECT id FROM users WHERE id = %s", (j,)).fetchall()

    async def tasks() -> None:
        async with psycopg_pool.AsyncConnectionPool(
                dsn, connection_class=governed_db.AsyncConnection, min_size=4, max_size=8,
                kwargs={"identity": AGENT, "audit": log, "autocommit": True}) as pool:
            async def one(k: int) -> None:
                async with pool.connection() as c:
                    await (await c.execute("SELECT %s::int", (k,))).fetchall()
            await asyncio.gather(*(one(k) for k in range(100)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    asyncio.run(tasks())
    for t in threads:
        t.join()
    log.close()
    report = verify(path, log.key.public_key())
    assert report.chains == 1 and not report.open_chains
    statements = [r for r in query(path) if r["type"] == "statement"]
    assert len([r for r in statements if r["identity"]["kind"] == "service"]) == 8 * per_thread
    assert len([r for r in statements if r["identity"]["id"] == "recs-bot"]) == 100


def test_no_pii_or_literal_parameter_in_audit_file(dsn, tmp_path):
    path = tmp_path / "audit.jsonl"
    human = Identity("alice", "human")
    with governed_db.connect(dsn, identity=human, audit=str(path), autocommit=True) as c:
        c.execute("SELECT * FROM users WHERE email = 'qem.alice@example.com'").fetchall()
        c.execute("SELECT * FROM users WHERE ssn = %s", ("qsn-111-22-3333",)).fetchall()
        governed_db.ClientCursor(c).execute("SELECT name FROM users WHERE name = %s",
                                            ("qnm Alice",)).fetchall()
        with pytest.raises(errors.UniqueViolation):
            c.execute("INSERT INTO users (id, email) VALUES (1001, 'qem.dup@example.com')")
    governed_db.reset_defaults()
    text = path.read_text().lower()
    for marker in (*MARKERS, "qnm"):
        assert marker not in text
    recs = [json.loads(line) for line in text.splitlines()]
    stmts = [r for r in recs if r["type"] == "statement"]
    assert stmts[1]["statement"]["params"] and len(stmts[1]["statement"]["params"][0]) == 24


def test_auditor_report_answers_which_datasets_the_model_touched(dsn, tmp_path):
    path = tmp_path / "audit.jsonl"
    with governed_db.connect(dsn, identity=AGENT, audit=str(path)) as c:
        c.execute("SELECT u.email, o.amount FROM users u JOIN orders o ON o.user_id = u.id"
                  ).fetchall()
        c.execute("SELECT name FROM orgs").fetchall()
        with pytest.raises(errors.StatementDenied):
            c.execute("DELETE FROM orders")
    governed_db.reset_defaults()
    result = CliRunner().invoke(main, ["audit", "report", str(path), "--identity", "test-llm",
                                       "--json"])
    assert result.exit_code == 0, result.output
    rep = json.loads(result.output)
    assert rep["models"] == ["test-llm"] and rep["purposes"] == ["weekly recommendations"]
    tables = {t["table"]: t for t in rep["tables"]}
    assert set(tables) == {"users", "orders", "orgs"}
    assert tables["users"]["columns"] == ["email"]
    assert tables["orgs"]["rows"] == 2
    assert rep["denied"][0]["summary"].startswith("DELETE")
    assert "statement.allowlist" in rep["denied"][0]["rules"]
    human = CliRunner().invoke(main, ["audit", "report", str(path), "--identity", "recs-bot"])
    assert human.exit_code == 0 and "datasets touched" in human.output
    only_users = CliRunner().invoke(main, ["audit", "query", str(path), "--column",
                                           "users.email", "--json"])
    assert len(only_users.output.strip().splitlines()) == 1


def test_many_processes_creating_the_signing_key_at_once(tmp_path):
    env = dict(os.environ, GOVERNED_DB_HOME=str(tmp_path / "state"))
    code = ("from governed_db.audit import load_or_create_key\n"
            "import sys\n"
            "k = load_or_create_key(None)\n"
            "from cryptography.hazmat.primitives import serialization as s\n"
            "sys.stdout.write(k.public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw).hex())\n")
    procs = [subprocess.Popen([sys.executable, "-W", "ignore", "-c", code], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [e for _, e in outs]
    assert len({o for o, _ in outs}) == 1  # every process signs with the same key
    assert not [f for f in (tmp_path / "state").iterdir() if f.name.endswith(".tmp")]
