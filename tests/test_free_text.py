"""Free-text PII: the value detectors run on text columns an ai_agent reads (and kinds the
policy names) and mask what they find in place; person-name columns by table context; `scan`.

Default profile unless a test says otherwise. Data is written with a raw superuser
connection, read through the public API, and the raw connection checks afterwards that the
stored values are unchanged (masking never writes back).
"""

from __future__ import annotations

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.rows import dict_row

import governed_db
from governed_db import Identity, errors
from governed_db.cli import main
from governed_db.masking import IN_TEXT_FORMS
from governed_db.policy import parse_policy
from governed_db.testing import assert_no_unmasked_pii

from .conftest import AGENT, HUMAN

# -- exact output per detector: several shapes each, embedded, at the edges, unicode around ----

SHAPES = {
    "email": [
        ("mail bob@example.com please", "mail [email redacted] please"),
        ("alice@example.com", "[email redacted]"),
        ("«alice.o-brien+tag@mail.example.co.uk»", "«[email redacted]»"),
        ("José <josé.garcía@exämple.es>", "José <[email redacted]>"),
        ("a@b.io,c@d.io", "[email redacted],[email redacted]"),
    ],
    "phone": [
        ("call me at (555) 123-4567", "call me at [phone redacted]"),
        ("555.123.4567 or 555-123-4567", "[phone redacted] or [phone redacted]"),
        ("+44 20 7946 0958 (office)", "[phone redacted] (office)"),
        ("tel:+15551234567", "tel:[phone redacted]"),
        ("1-800-555-0199!", "[phone redacted]!"),
        ("☎ 06 12 34 56 78", "☎ [phone redacted]"),
        ("名前: 山田 電話 090-1234-5678 です", "名前: 山田 電話 [phone redacted] です"),
    ],
    "ssn": [
        ("SSN 123-45-6789.", "SSN [ssn redacted]."),
        ("ssn: 078 05 1120", "ssn: [ssn redacted]"),
        ("(123-45-6789)", "([ssn redacted])"),
        ("123-45-6789", "[ssn redacted]"),
    ],
    "card": [
        ("card 4111 1111 1111 1111 exp 12/27", "card [card redacted] exp 12/27"),
        ("5500-0000-0000-0004", "[card redacted]"),
        ("amex 378282246310005 ✓", "amex [card redacted] ✓"),
    ],
    "iban": [
        ("IBAN DE89 3704 0044 0532 0130 00 thanks", "IBAN [iban redacted] thanks"),
        ("GB82WEST12345698765432", "[iban redacted]"),
    ],
    "secret": [
        ("key sk_live_4eC39HqLyjWDarjtT1zdp7dc", "key [secret redacted]"),
        ("AKIAIOSFODNN7EXAMPLE in the note", "[secret redacted] in the note"),
    ],
    "mixed": [
        ("email bob@example.com and SSN 123-45-6789 — ok",
         "email [email redacted] and SSN [ssn redacted] — ok"),
        ("call (555) 123-4567, mail x@y.org, card 4111111111111111",
         "call [phone redacted], mail [email redacted], card [card redacted]"),
    ],
}

# Text that looks numeric or structured but is not PII: it reaches the agent unchanged.
NEGATIVES = [
    "order 123456789 shipped",  # a 9-digit id is not an SSN without separators
    "ORD-123-45-6789",  # a reference glued to a prefix
    "invoice 2026-000123",
    "2026-12-02 05:57:36",
    "2026-12-02T06:11:51.618035+00:00",
    "v1.2.3 on 10.0.0.1",
    "card ending 1111",
    "4111 1111 1111 1112",  # fails Luhn: not a card, and not a phone either
    "000-12-3456 666-12-3456",  # SSN areas never issued
    "amount 1,234,567.89",
    "call 555-1234",  # seven digits: too short to tell from a code
    "user@localhost",
    "ISBN 978-3-16-148410-0",
    "4e3c8a4e-9b1d-4c2a-8f5e-2d1b6c7a9e0f",
    "between 10-20 and 30-40 items, slot 12:30-14:45",
    "SKU-2026-0001-0042",
    "@channel deploy at 10:00",
    "qnt gift",
]


def _store_notes(dsn: str, notes: list[str], first_id: int = 100) -> list[int]:
    ids = list(range(first_id, first_id + len(notes)))
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.cursor().executemany("INSERT INTO orders (id, user_id, amount, note) VALUES"
                                 " (%s, 1001, 1, %s)", list(zip(ids, notes)))
    return ids


def _stored(dsn: str, ids: list[int]) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as raw:
        return [r[0] for r in raw.execute("SELECT note FROM orders WHERE id = ANY(%s)"
                                          " ORDER BY id", [ids])]


@pytest.mark.parametrize("detector", sorted(SHAPES))
def test_each_detector_masks_in_place(agent_conn, dsn, detector):
    cases = SHAPES[detector]
    ids = _store_notes(dsn, [note for note, _ in cases])
    got = agent_conn.execute("SELECT id, note FROM orders WHERE id >= 100 ORDER BY id"
                             ).fetchall()
    assert [note for _, note in got] == [masked for _, masked in cases]
    assert _stored(dsn, ids) == [note for note, _ in cases]  # nothing written back


def test_text_without_pii_reaches_the_agent_unchanged(agent_conn, dsn):
    _store_notes(dsn, NEGATIVES)
    got = agent_conn.execute("SELECT note FROM orders WHERE id >= 100 ORDER BY id").fetchall()
    assert [n for (n,) in got] == NEGATIVES


def test_replacement_forms_are_stable_and_inert():
    """One fixed form per detector; no form contains a digit or '@' (re-masking is a no-op)."""
    assert IN_TEXT_FORMS == {
        "email": "[email redacted]", "phone": "[phone redacted]", "ssn": "[ssn redacted]",
        "card": "[card redacted]", "iban": "[iban redacted]", "secret": "[secret redacted]"}
    for form in IN_TEXT_FORMS.values():
        assert "@" not in form and not any(ch.isdigit() for ch in form)


# -- every path a row takes, sync and async ---------------------------------------------------

NOTE = "reach me at (555) 123-4567 or bob@example.com, ssn 123-45-6789"
MASKED = "reach me at [phone redacted] or [email redacted], ssn [ssn redacted]"
READ = "SELECT id, note FROM orders WHERE id IN (1, 2) ORDER BY id"
# The paths that need more than the default agent allow-list (COPY, PREPARE, a write with
# RETURNING) run under a policy that allows them; masking is the same.
PATH_POLICY = """
[[rules]]
id = "statement.allowlist"
allow = ["SELECT", "BEGIN", "COMMIT", "ROLLBACK", "DECLARE", "FETCH", "CLOSE", "PREPARE",
         "EXECUTE", "DEALLOCATE", "COPY", "UPDATE"]
"""
PATHS = ["fetchone", "fetchmany", "fetchall", "iteration", "stream", "server_cursor",
         "dict_row", "row_factory_after", "pgresult_get_value", "sql_declare_fetch",
         "sql_prepare_execute", "multi_statement_results", "pipeline", "copy_rows",
         "copy_read", "update_returning", "json_row", "array_agg"]


async def _notes(conn, path: str, aio: bool) -> list[str]:
    """The two notes of READ as the caller receives them through ``path``."""

    async def w(x):
        return (await x) if aio else x

    async def fetchall(cur):
        return await w(cur.fetchall())

    if path == "fetchone":
        cur = await w(conn.execute(READ))
        return [(await w(cur.fetchone()))[1], (await w(cur.fetchone()))[1]]
    if path == "fetchmany":
        return [r[1] for r in await w((await w(conn.execute(READ))).fetchmany(5))]
    if path == "fetchall":
        return [r[1] for r in await fetchall(await w(conn.execute(READ)))]
    if path == "iteration":
        cur = await w(conn.execute(READ))
        return [r[1] async for r in cur] if aio else [r[1] for r in cur]
    if path == "stream":
        gen = conn.cursor().stream(READ)
        return [r[1] async for r in gen] if aio else [r[1] for r in gen]
    if path == "server_cursor":
        if aio:
            async with conn.transaction(), conn.cursor(name="srv") as cur:
                await cur.execute(READ)
                return [r[1] for r in await cur.fetchall()]
        with conn.transaction(), conn.cursor(name="srv") as cur:
            cur.execute(READ)
            return [cur.fetchone()[1], cur.fetchone()[1]]
    if path == "dict_row":
        cur = conn.cursor(row_factory=dict_row)
        return [r["note"] for r in await fetchall(await w(cur.execute(READ)))]
    if path == "row_factory_after":
        cur = conn.cursor()
        await w(cur.execute(READ))
        cur.row_factory = dict_row
        return [r["note"] for r in await fetchall(cur)]
    if path == "pgresult_get_value":
        res = (await w(conn.execute(READ))).pgresult
        return [res.get_value(i, 1).decode() for i in range(res.ntuples)]
    if path == "sql_declare_fetch":
        await w(conn.execute(f"DECLARE c1 CURSOR WITH HOLD FOR {READ}"))
        try:
            return [r[1] for r in await fetchall(await w(conn.execute("FETCH ALL FROM c1")))]
        finally:
            await w(conn.execute("CLOSE c1"))
    if path == "sql_prepare_execute":
        await w(conn.execute(f"PREPARE p1 AS {READ}"))
        try:
            return [r[1] for r in await fetchall(await w(conn.execute("EXECUTE p1")))]
        finally:
            await w(conn.execute("DEALLOCATE p1"))
    if path == "multi_statement_results":
        cur = await w(conn.cursor().execute(f"SELECT 1; {READ}"))
        assert await w(cur.fetchall()) == [(1,)]
        assert cur.nextset()
        return [r[1] for r in await fetchall(cur)]
    if path == "pipeline":
        if aio:
            async with conn.pipeline():
                cur = await conn.execute(READ)
            return [r[1] for r in await cur.fetchall()]
        with conn.pipeline():
            cur = conn.execute(READ)
        return [r[1] for r in cur.fetchall()]
    if path in ("copy_rows", "copy_read"):
        sql = f"COPY ({READ}) TO STDOUT"
        if aio:
            async with conn.cursor().copy(sql) as cp:
                if path == "copy_rows":
                    return [r[1] async for r in cp.rows()]
                data = b"".join([bytes(b) async for b in cp])
        else:
            with conn.cursor().copy(sql) as cp:
                if path == "copy_rows":
                    return [r[1] for r in cp.rows()]
                data = b"".join(bytes(b) for b in cp)
        return [line.split("\t")[1] for line in data.decode().splitlines()]
    if path == "update_returning":
        out = []
        for key in (1, 2):  # one row each: a write pinned by its key (autocommit)
            cur = await w(conn.execute("UPDATE orders SET amount = amount WHERE id = %s"
                                       " RETURNING id, note", [key]))
            out.append((await w(cur.fetchone()))[1])
        return out
    if path == "json_row":
        cur = await w(conn.execute("SELECT to_jsonb(o) FROM orders o WHERE id IN (1, 2)"
                                   " ORDER BY id"))
        return [r[0]["note"] for r in await fetchall(cur)]
    if path == "array_agg":
        cur = await w(conn.execute("SELECT array_agg(note ORDER BY id) FROM orders"
                                   " WHERE id IN (1, 2)"))
        return (await w(cur.fetchone()))[0]
    raise AssertionError(path)


@pytest.fixture
def pii_note(dsn):
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("UPDATE orders SET note = %s WHERE id = 1", [NOTE])
    yield
    with psycopg.connect(dsn, autocommit=True) as raw:
        assert raw.execute("SELECT note FROM orders ORDER BY id").fetchall() == [
            (NOTE,), ("qnt rush",)], "the stored notes changed"


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("path", PATHS)
async def test_every_fetch_path_masks_free_text(dsn, audit, pii_note, path, aio):
    policy = parse_policy(PATH_POLICY)
    if aio:
        conn = await governed_db.AsyncConnection.connect(dsn, identity=AGENT, audit=audit,
                                                         policy=policy, autocommit=True)
    else:
        conn = governed_db.connect(dsn, identity=AGENT, audit=audit, policy=policy,
                                   autocommit=True)
    try:
        notes = await _notes(conn, path, aio)
    finally:
        await conn.close() if aio else conn.close()
    assert notes == [MASKED, "qnt rush"]
    audit.flush()
    found = {(r["column"], r["detector"]) for r in audit.records
             if r.get("type") == "masked_in_text"}
    assert {d for _, d in found} == {"phone", "email", "ssn"}, found


def test_error_text_never_carries_a_stored_note(agent_conn, pii_note):
    """Server error text is an allow-list (the caller's own tokens, catalog names): a stored
    note quoted by a cast error does not come back, masked or not."""
    with pytest.raises(psycopg.errors.InvalidTextRepresentation) as info:
        agent_conn.execute("SELECT note::int FROM orders WHERE id = 1")
    assert_no_unmasked_pii(info.value, canaries=["reach me", "555", "bob@"])
    assert info.value.sqlstate == "22P02"


# -- audit: which detector masked which column, never the value --------------------------------


def test_audit_records_detector_and_column_without_values(agent_conn, audit, dsn, pii_note):
    agent_conn.execute("SELECT o.id, o.note AS remark, u.id AS uid FROM orders o"
                       " JOIN users u ON u.id = o.user_id ORDER BY o.id").fetchall()
    agent_conn.execute("SELECT note FROM orders ORDER BY id").fetchall()  # second statement
    audit.flush()
    stmts = [r for r in audit.records if r.get("type") == "statement"]
    events = [r for r in audit.records if r.get("type") == "masked_in_text"]
    assert stmts[-2]["masked"] == {"remark": "detect:free-text"}
    by_stmt = {}
    for ev in events:
        by_stmt.setdefault(ev["statement_id"], set()).add(
            (ev["column"], ev["detector"], tuple(ev["sources"])))
    assert by_stmt == {
        stmts[-2]["id"]: {("remark", d, ("public.orders.note",))
                          for d in ("phone", "email", "ssn")},
        stmts[-1]["id"]: {("note", d, ("public.orders.note",)) for d in ("phone", "email", "ssn")},
    }
    # Once per statement, column and detector (not per row), and no value anywhere.
    assert len(events) == 6
    # (fragments with their separators: bare digit runs like "555" turn up in hex hashes)
    assert_no_unmasked_pii(audit.records,
                           canaries=["(555)", "123-4567", "bob@", "45-6789", "reach me"])


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("pipeline", [False, True], ids=["plain", "pipeline"])
async def test_detection_reports_name_their_own_statement(dsn, audit, pii_note, aio,
                                                          pipeline):
    """The same cached statement run again by one cursor and by a second cursor (interleaved
    with the first's fetch), outside and inside a pipeline: each masked_in_text event names
    the statement whose rows it was found in (the row maker is reused per cached plan)."""
    q = "SELECT note FROM orders ORDER BY id"
    if aio:
        conn = await governed_db.AsyncConnection.connect(dsn, identity=AGENT, audit=audit,
                                                         autocommit=True)
    else:
        conn = governed_db.connect(dsn, identity=AGENT, audit=audit, autocommit=True)

    async def run(cur):
        r = cur.execute(q)
        return await r if aio else r

    async def fetch(cur):
        r = cur.fetchall()
        return await r if aio else r

    try:
        a, b = conn.cursor(), conn.cursor()
        got = []
        if pipeline:
            async def in_pipeline(p):
                await run(a)
                await run(b)
                r = p.sync()
                await r if aio else r
                got.append(await fetch(a))
                got.append(await fetch(b))
            if aio:
                async with conn.pipeline() as p:
                    await in_pipeline(p)
            else:
                with conn.pipeline() as p:
                    await in_pipeline(p)
        else:
            await run(a)
            got.append(await fetch(a))  # learns the plan
            await run(a)  # the same cursor again: the cached row maker
            await run(b)
            got.append(await fetch(b))
            got.append(await fetch(a))  # after b ran: a's rows name a's statement
    finally:
        await conn.close() if aio else conn.close()
    assert all(rows == [(MASKED,), ("qnt rush",)] for rows in got), got
    audit.flush()
    stmts = [r["id"] for r in audit.records
             if r.get("type") == "statement" and r.get("masked")]
    by_stmt: dict = {}
    for ev in audit.records:
        if ev.get("type") == "masked_in_text":
            by_stmt.setdefault(ev["statement_id"], set()).add((ev["column"], ev["detector"]))
    want = {("note", d) for d in ("phone", "email", "ssn")}
    assert len(stmts) == (2 if pipeline else 3), stmts
    assert by_stmt == {s: want for s in stmts}


# -- who gets it, and what is known safe -------------------------------------------------------


@pytest.mark.parametrize("identity,policy_text,expected", [
    (AGENT, "", MASKED),
    (HUMAN, "", NOTE),  # humans see free text as stored by default
    (Identity("etl", "service"), "", NOTE),
    (HUMAN, '[masking]\ndetect_in_text = ["ai_agent", "human"]\n', MASKED),
    (AGENT, '[masking]\ndetect_in_text = []\n', NOTE),  # switched off explicitly
    (AGENT, '[masking]\nnot_sensitive = ["orders.note"]\n', NOTE),  # known safe by policy
    (AGENT, '[masking]\nnot_sensitive = ["public.orders.*"]\n', NOTE),
    (AGENT, '[masking]\nnot_sensitive = ["orders.amount"]\n', MASKED),
], ids=["agent", "human", "service", "human-named", "off", "safe-column", "safe-pattern",
        "other-column-safe"])
def test_kinds_and_known_safe_columns(dsn, audit, pii_note, identity, policy_text, expected):
    with governed_db.connect(dsn, identity=identity, audit=audit,
                             policy=parse_policy(policy_text)) as conn:
        assert conn.execute("SELECT note FROM orders WHERE id = 1").fetchone() == (expected,)
        # A value derived from the column is scanned the same way.
        got = conn.execute("SELECT upper(note) || '!' FROM orders WHERE id = 1").fetchone()
        assert got == ((NOTE.upper() + "!",) if expected == NOTE else (
            "REACH ME AT [phone redacted] OR [email redacted], SSN [ssn redacted]!",))


@pytest.mark.parametrize("sql,expected", [
    # Computed with a function that can reshape text: the detectors cannot see through it,
    # so the computed value is redacted whole.
    ("SELECT replace(note, '@', ' at ') FROM orders WHERE id = 1", "****"),
    ("SELECT translate(note, '0123456789', 'abcdefghij') FROM orders WHERE id = 1", "****"),
    ("SELECT substr(note, 13, 5) FROM orders WHERE id = 1", "****"),
    ("SELECT x FROM (SELECT id, reverse(note) AS x FROM orders) s WHERE id = 1", "****"),
    ("WITH c AS (SELECT id, split_part(note, ' ', 4) AS p FROM orders) SELECT p FROM c"
     " WHERE id = 1", "****"),
    ("SELECT regexp_replace(note, '(\\d)', '\\1 ', 'g') FROM orders WHERE id = 1", "****"),
    # Functions that keep values whole: scanned in place.
    ("SELECT lower(note) FROM orders WHERE id = 1", MASKED),
    ("SELECT concat_ws(' / ', note, 'ok') FROM orders WHERE id = 1", MASKED + " / ok"),
    ("SELECT string_agg(note, '|' ORDER BY id) FROM orders", MASKED + "|qnt rush"),
    # A plain column stays scanned in place whatever else the statement computes.
    ("SELECT note FROM orders WHERE substr(note, 1, 5) = 'reach' AND id = 1", MASKED),
])
def test_computed_free_text_is_judged_by_effect(agent_conn, pii_note, sql, expected):
    assert agent_conn.execute(sql).fetchone() == (expected,)


def test_policy_rejects_an_unknown_kind():
    with pytest.raises(errors.PolicyError) as info:
        parse_policy('[masking]\ndetect_in_text = ["robot"]\n', source="p.toml")
    assert "detect_in_text" in str(info.value) and "robot" in str(info.value)


def test_types_scanned_and_types_safe_by_type(dsn, audit):
    """Text, varchar, char, json and jsonb (keys and string values), arrays and unknown
    types are scanned; numbers, dates, booleans and uuids are safe by type."""
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("CREATE DOMAIN phone_text AS text")
        raw.execute("CREATE TYPE mood AS ENUM ('ok', 'call 555-123-4567')")
        raw.execute(
            "CREATE TABLE kinds (id int PRIMARY KEY, v varchar(80), c char(30), j jsonb,"
            " js json, arr text[], d phone_text, m mood, big bigint, u uuid, day date,"
            " flag bool)")
        raw.execute(
            "INSERT INTO kinds VALUES (1, 'mail a@b.io', 'ssn 123-45-6789',"
            " '{\"who\": \"x@y.org\", \"bob@example.com\": 1, \"n\": 4111111111111111}',"
            " '[\"tel (555) 123-4567\", 2]', ARRAY['fine', 'ssn 123-45-6789'],"
            " 'call (555) 123-4567', 'call 555-123-4567', 4111111111111111,"
            " '4e3c8a4e-9b1d-4c2a-8f5e-2d1b6c7a9e0f', '2026-12-02', true)")
    with governed_db.connect(dsn, identity=AGENT, audit=audit) as agent_conn:
        row = agent_conn.execute("SELECT v, c, j, js, arr, d, m, big, u, day, flag FROM kinds"
                                 ).fetchone()
        # The same number as text is scanned.
        as_text = agent_conn.execute("SELECT big::text FROM kinds").fetchone()
    v, c, j, js, arr, d, m, big, u, day, flag = row
    assert v == "mail [email redacted]"
    assert c == "ssn [ssn redacted]" + " " * 15  # in place: the padding stays as stored
    assert j == {"who": "[email redacted]", "[email redacted]": 1, "n": 4111111111111111}
    assert js == ["tel [phone redacted]", 2]
    assert arr == ["fine", "ssn [ssn redacted]"]
    assert d == "call [phone redacted]"  # a domain over text is text
    assert m == "call [phone redacted]"  # an enum is an unknown type: scanned
    assert big == 4111111111111111  # a number, not text: safe by type
    assert str(u) == "4e3c8a4e-9b1d-4c2a-8f5e-2d1b6c7a9e0f" and str(day) == "2026-12-02"
    assert flag is True
    assert as_text == ("[card redacted]",)


# -- person names: by column name and table context -------------------------------------------


@pytest.mark.parametrize("identity", [AGENT, HUMAN], ids=["agent", "human"])
def test_person_names_masked_by_table_context(dsn, audit, identity):
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute("CREATE TABLE customers (id int, display_name text, company text)")
        raw.execute("INSERT INTO customers VALUES (1, 'Ada Lovelace', 'Analytical Engines')")
        raw.execute("CREATE TABLE plans (id int, name text)")
        raw.execute("INSERT INTO plans VALUES (1, 'Pro')")
        raw.execute("CREATE TABLE shipments (id int, recipient_name text, name text)")
        raw.execute("INSERT INTO shipments VALUES (1, 'Grace Hopper', 'express box')")
    with governed_db.connect(dsn, identity=identity, audit=audit) as conn:
        assert conn.execute("SELECT name FROM users ORDER BY id").fetchall() == [
            ("****",), ("****",)]
        assert conn.execute("SELECT u.id, u.name FROM v_users v JOIN users u USING (id)"
                            " ORDER BY 1").fetchall() == [(1001, "****"), (1002, "****")]
        # Names of products, organizations and plans are not a person's: kept.
        assert conn.execute("SELECT name FROM orgs ORDER BY id").fetchall() == [
            ("qon Acme",), ("qon Beta",)]
        assert conn.execute("SELECT name FROM plans").fetchone() == ("Pro",)
        assert conn.execute("SELECT display_name, company FROM customers").fetchone() == (
            "****", "Analytical Engines")
        assert conn.execute("SELECT recipient_name, name FROM shipments").fetchone() == (
            "****", "express box")
        audit.flush()
        last = [r for r in audit.records if r.get("type") == "statement"][-1]
        expected = {"recipient_name": "redact:name:person_name"}
        if identity.kind == "ai_agent":
            expected["name"] = "detect:free-text"  # scanned, not masked as a name
        assert last["masked"] == expected


def test_agent_filtering_on_a_person_name_is_denied(agent_conn):
    with pytest.raises(errors.StatementDenied) as info:
        agent_conn.execute("SELECT id FROM users WHERE name LIKE 'qnm A%'")
    assert info.value.rule_ids == ("column.disallow-predicate-on-masked",)


def test_a_person_name_column_can_be_declared_or_unmasked(dsn, audit):
    policy = parse_policy("""
[[masking.columns]]
columns = ["orgs.name"]
strategy = "redact"

[[masking.unmask]]
columns = ["users.name"]
roles = ["support"]
""")
    support = Identity("sam", "human", roles=("support",))
    with governed_db.connect(dsn, identity=support, audit=audit, policy=policy) as conn:
        assert conn.execute("SELECT name FROM users WHERE id = 1001").fetchone() == (
            "qnm Alice",)
        assert conn.execute("SELECT name FROM orgs WHERE id = 1").fetchone() == ("****",)


# -- scan ---------------------------------------------------------------------------------------


def test_scan_proposes_redact_for_free_text_with_mixed_pii(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE tickets (id int, body text, contact text, remark text)")
        c.execute("""INSERT INTO tickets SELECT g,
            CASE g % 4 WHEN 0 THEN 'please call (555) 123-' || lpad(g::text, 4, '0')
                       WHEN 1 THEN 'my ssn is 123-45-' || lpad(g::text, 4, '0') || ' thanks'
                       WHEN 2 THEN 'write to user' || g || '@example.com'
                       ELSE 'no pii here ' || g END,
            'person' || g || '@example.com',
            CASE WHEN g = 7 THEN 'ring (555) 123-4567' ELSE 'fine' END
            FROM generate_series(1, 40) g""")
    result = CliRunner().invoke(main, ["scan", dsn, "--sample", "100"])
    assert result.exit_code == 0, result.output
    policy = parse_policy(result.output)
    masked = {c: r.strategy for r in policy.masking.columns for c in r.columns}
    assert masked["tickets.body"] == "redact"
    assert masked["tickets.contact"] == "email"
    assert "tickets.remark" not in masked  # one stray match: reported, not proposed
    assert masked["users.name"] == "redact"  # a person's name, by table context
    assert "orgs.name" not in masked
    out = result.output
    assert "# tickets.body: free text: 30/40 sampled values contain PII" \
           " (email 10, phone 10, ssn 10)" in out
    assert "# tickets.remark: 1/40 sampled values contain PII (phone 1); not proposed" in out
    assert "555" not in out and "@example.com" not in out  # counts, never values
