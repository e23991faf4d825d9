"""Server error and notice text echoes only what the caller sent (or catalog identifiers).

Each class has several shapes; every test checks ``str(exc)``, ``repr(exc)``, every ``exc.diag``
field and ``exc.pgresult.error_field()`` for the value, keeps the exception class and SQLSTATE,
and checks that a caller's own literal still comes back where it is safe to echo.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg.pq import DiagnosticField

import governed_db
from governed_db import Identity, errors
from governed_db._redact import REDACTED_TEXT
from governed_db.policy import parse_policy

from .conftest import MARKERS

HUMAN = Identity("err-tester", "human")
AGENT = Identity("err-bot", "ai_agent")

SETUP = """
CREATE TYPE mood AS ENUM ('happy', 'sad');
ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);
CREATE TABLE chk (id int, email text CHECK (length(email) < 5), v varchar(3) NOT NULL DEFAULT 'a');
CREATE FUNCTION leak(u_id int) RETURNS text LANGUAGE plpgsql AS
  $$ DECLARE s text; BEGIN SELECT ssn INTO s FROM users WHERE id = u_id; RAISE EXCEPTION 'value %', s; END $$;
CREATE FUNCTION leak_detail() RETURNS text LANGUAGE plpgsql AS
  $$ DECLARE s text; BEGIN SELECT email INTO s FROM users LIMIT 1;
     RAISE EXCEPTION 'relation "%" does not exist', s USING DETAIL = 'Key (id)=(' || s || ')', HINT = s, COLUMN = s; END $$;
CREATE FUNCTION inner_f(e text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN e::int; END $$;
CREATE FUNCTION outer_f(e text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN inner_f(e); END $$;
CREATE FUNCTION dyn(e text) RETURNS int LANGUAGE plpgsql AS
  $$ DECLARE r int; BEGIN EXECUTE 'SELECT ' || quote_literal(e) || '::int' INTO r; RETURN r; END $$;
CREATE FUNCTION noti() RETURNS void LANGUAGE plpgsql AS
  $$ DECLARE s text; BEGIN SELECT email INTO s FROM users WHERE id = 1001; RAISE NOTICE 'email is %', s;
     RAISE NOTICE USING MESSAGE = s; END $$;
"""


@pytest.fixture
def db(dsn):
    with psycopg.connect(dsn, autocommit=True) as raw:
        raw.execute(SETUP)
    return dsn


def _texts(exc: BaseException) -> list[str]:
    d = exc.diag
    out = [str(exc), repr(exc), *(str(a) for a in exc.args)]
    for attr in ("message_primary", "message_detail", "message_hint", "context",
                 "internal_query", "schema_name", "table_name", "column_name", "datatype_name",
                 "constraint_name"):
        out.append(str(getattr(d, attr)))
    res = exc.pgresult
    assert res is not None
    for code in DiagnosticField:
        v = res.error_field(code)
        out.append("" if v is None else v.decode())
    out.append(res.error_message.decode())
    return out


def _assert_clean(exc: BaseException) -> None:
    for text in _texts(exc):
        low = text.lower()
        assert not any(m in low for m in MARKERS), text
        assert "alice" not in low and "111-22" not in low, text


# (sql, identity, exception class, sqlstate, exact primary message, exact detail). The shapes
# that raise on a masked value run as a human: for an ai_agent they are value oracles (whether
# they raise depends on the value) and are refused before they run (test_value_oracles.py,
# test_agent_data_error_shapes_never_run below); the redaction is the layer behind that.
DATA_ERRORS = [
    ("SELECT ssn::int FROM users", HUMAN, errors.InvalidTextRepresentation, "22P02",
     f'invalid input syntax for type integer: "{REDACTED_TEXT}"', None),
    ("SELECT email::regclass FROM users", HUMAN, errors.FeatureNotSupported, "0A000",
     "cross-database references are not implemented:"
     f' "{REDACTED_TEXT}.{REDACTED_TEXT}.{REDACTED_TEXT}"', None),
    ("SELECT split_part(name, ' ', 2)::regclass FROM users", HUMAN, errors.UndefinedTable, "42P01",
     f'relation "{REDACTED_TEXT}" does not exist', None),
    ("SELECT email::json FROM users", HUMAN, errors.InvalidTextRepresentation, "22P02",
     "invalid input syntax for type json", f'Token "{REDACTED_TEXT}" is invalid.'),
    ("SELECT ('{\"k\": ' || email || '}')::jsonb FROM users", HUMAN,
     errors.InvalidTextRepresentation, "22P02", "invalid input syntax for type json",
     f'Token "{REDACTED_TEXT}" is invalid.'),
    ("SELECT ssn::date FROM users", HUMAN, errors.InvalidDatetimeFormat, "22007",
     f'invalid input syntax for type date: "{REDACTED_TEXT}"', None),
    ("SELECT email::uuid FROM users", HUMAN, errors.InvalidTextRepresentation, "22P02",
     f'invalid input syntax for type uuid: "{REDACTED_TEXT}"', None),
    ("SELECT ssn::inet FROM users", HUMAN, errors.InvalidTextRepresentation, "22P02",
     f'invalid input syntax for type inet: "{REDACTED_TEXT}"', None),
    ("SELECT ssn::mood FROM users", HUMAN, errors.InvalidTextRepresentation, "22P02",
     f'invalid input value for enum mood: "{REDACTED_TEXT}"', None),
    ("SELECT make_date(2020, 13, length(ssn)) FROM users", HUMAN, errors.DatetimeFieldOverflow,
     "22008", f"date field value out of range: {REDACTED_TEXT}-{REDACTED_TEXT}-{REDACTED_TEXT}",
     None),
    ("INSERT INTO users (id, email) SELECT id + 10, email FROM users", HUMAN,
     errors.UniqueViolation, "23505",
     'duplicate key value violates unique constraint "users_email_key"',
     f"Key (email)=({REDACTED_TEXT}) already exists."),
    ("INSERT INTO chk (id, email) SELECT id, email FROM users", HUMAN, errors.CheckViolation,
     "23514", 'new row for relation "chk" violates check constraint "chk_email_check"',
     # v's stored default 'a' is a value, redacted although a column is named "a" (F11)
     f"Failing row contains ({REDACTED_TEXT}, {REDACTED_TEXT}, {REDACTED_TEXT})."),
    ("INSERT INTO chk (id, email, v) SELECT id, 'a', NULL FROM users", HUMAN,
     errors.NotNullViolation, "23502",
     'null value in column "v" of relation "chk" violates not-null constraint',
     # 'a' is the caller's literal, but the statement reads masked columns: not echoed
     f"Failing row contains ({REDACTED_TEXT}, {REDACTED_TEXT}, null)."),
    # (copying ssn itself into chk.v needs an approval: column.disallow-masked-copy)
    ("INSERT INTO chk (id, v) SELECT id, 'qsn-' || id FROM users", HUMAN,
     errors.StringDataRightTruncation, "22001", "value too long for type character varying(3)",
     None),
    ("SELECT leak(1001)", HUMAN, errors.RaiseException, "P0001", REDACTED_TEXT, None),
    ("SELECT leak_detail()", HUMAN, errors.RaiseException, "P0001",
     f'relation "{REDACTED_TEXT}.{REDACTED_TEXT}" does not exist', REDACTED_TEXT),
    ("SELECT outer_f(ssn) FROM users", HUMAN, errors.InvalidTextRepresentation, "22P02",
     f'invalid input syntax for type integer: "{REDACTED_TEXT}"', None),
    ("SELECT dyn(email) FROM users", HUMAN, errors.InvalidTextRepresentation, "22P02",
     f'invalid input syntax for type integer: "{REDACTED_TEXT}"', None),
    # A value guessed in the statement is not confirmed by the error.
    ("SELECT substr(ssn, 5, 3)::date, '111', '222', '333' FROM users", HUMAN,
     errors.InvalidDatetimeFormat, "22007",
     f'invalid input syntax for type date: "{REDACTED_TEXT}"', None),
]


@pytest.mark.parametrize("sql,ident,cls,sqlstate,message,detail", DATA_ERRORS,
                         ids=[d[0] for d in DATA_ERRORS])
def test_data_never_in_error_text(db, audit, sql, ident, cls, sqlstate, message, detail):
    with governed_db.connect(db, identity=ident, audit=audit, autocommit=True) as conn:
        with pytest.raises(cls) as ei:
            conn.execute(sql)
        exc = ei.value
        assert type(exc) is cls and exc.sqlstate == sqlstate
        assert exc.diag.message_primary == message
        assert exc.diag.message_detail == detail
        assert exc.diag.internal_query is None
        _assert_clean(exc)
        assert str(exc).splitlines()[0] == message
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection stays usable


@pytest.mark.parametrize("sql", [d[0] for d in DATA_ERRORS if d[0].startswith("SELECT")
                                 and ("ssn" in d[0] or "email" in d[0] or "name" in d[0])
                                 and "leak" not in d[0] and "_f(" not in d[0]
                                 and "dyn(" not in d[0]])
def test_agent_data_error_shapes_never_run(db, audit, sql):
    with governed_db.connect(db, identity=AGENT, audit=audit, autocommit=True) as conn:
        with pytest.raises(errors.StatementDenied) as ei:
            conn.execute(sql)
    assert ei.value.rule_ids == ("column.disallow-predicate-on-masked",)
    assert not any(m in str(ei.value).lower() for m in MARKERS), str(ei.value)


def test_context_lines_keep_function_names_not_values(db, audit):
    with governed_db.connect(db, identity=HUMAN, audit=audit, autocommit=True) as conn:
        with pytest.raises(errors.InvalidTextRepresentation) as ei:
            conn.execute("SELECT outer_f(ssn) FROM users")
        assert ei.value.diag.context == (
            "PL/pgSQL function inner_f(text) line 1 at RETURN\n"
            "PL/pgSQL function outer_f(text) line 1 at RETURN")
        with pytest.raises(errors.RaiseException) as ei:
            conn.execute("SELECT leak(1001)")
        assert ei.value.diag.context == "PL/pgSQL function leak(integer) line 1 at RAISE"
        with pytest.raises(errors.RaiseException) as ei:
            conn.execute("SELECT leak_detail()")
        assert ei.value.diag.column_name == REDACTED_TEXT
        assert ei.value.diag.message_hint == REDACTED_TEXT


# The caller's own text stays useful: (sql, identity, class, exact primary, exact detail)
OWN_TEXT = [
    ("SELECT 'abc'::int", AGENT, errors.InvalidTextRepresentation,
     'invalid input syntax for type integer: "abc"', None),
    ("SELECT * FROM users WHERE id = 'x1'", AGENT, errors.InvalidTextRepresentation,
     'invalid input syntax for type integer: "x1"', None),
    ("SELECT nosuchcol FROM users", AGENT, errors.UndefinedColumn,
     'column "nosuchcol" does not exist', None),
    ("SELECT * FROM nosuch", AGENT, errors.UndefinedTable,
     'relation "nosuch" does not exist', None),
    ("SELECT 'x'::mood", AGENT, errors.InvalidTextRepresentation,
     'invalid input value for enum mood: "x"', None),
    ("SELECT 1/0", AGENT, errors.DivisionByZero, "division by zero", None),
    ("INSERT INTO users (id, email) VALUES (7, 'qem.alice@example.com')", HUMAN,
     errors.UniqueViolation, 'duplicate key value violates unique constraint "users_email_key"',
     "Key (email)=(qem.alice@example.com) already exists."),
    ("INSERT INTO chk (id, email) VALUES (7, 'toolong')", HUMAN, errors.CheckViolation,
     'new row for relation "chk" violates check constraint "chk_email_check"',
     # the stored default 'a' is not the caller's: a value, redacted (F11)
     f"Failing row contains (7, toolong, {REDACTED_TEXT})."),
    ("SELECT outer_f('notanint')", HUMAN, errors.InvalidTextRepresentation,
     f'invalid input syntax for type integer: "{REDACTED_TEXT}"', None),  # a function may read
]


@pytest.mark.parametrize("sql,ident,cls,message,detail", OWN_TEXT, ids=[d[0] for d in OWN_TEXT])
def test_callers_own_text_comes_back(db, audit, sql, ident, cls, message, detail):
    with governed_db.connect(db, identity=ident, audit=audit, autocommit=True) as conn:
        with pytest.raises(cls) as ei:
            conn.execute(sql)
    assert ei.value.diag.message_primary == message
    assert ei.value.diag.message_detail == detail


def test_values_sent_in_an_earlier_statement_are_not_echoed(db, audit):
    with governed_db.connect(db, identity=HUMAN, audit=audit, autocommit=True) as conn:
        conn.execute("SELECT 'qsn-111-22-3333', 'qem.alice@example.com'").fetchall()
        with pytest.raises(errors.InvalidTextRepresentation) as ei:
            conn.execute("SELECT ssn::int FROM users WHERE id = 1001")
    _assert_clean(ei.value)


def test_parameters_are_not_echoed(db, audit):
    """Bound parameters are the application's values, not the statement author's."""
    with governed_db.connect(db, identity=HUMAN, audit=audit, autocommit=True) as conn:
        with pytest.raises(errors.InvalidTextRepresentation) as ei:
            conn.execute("SELECT email::uuid FROM users WHERE email = %s",
                         ("qem.alice@example.com",))
    _assert_clean(ei.value)


def test_notices_are_redacted_like_errors(db, audit):
    seen: list = []
    with governed_db.connect(db, identity=HUMAN, audit=audit, autocommit=True) as conn:
        conn.add_notice_handler(seen.append)
        conn.execute("SELECT noti()")
    assert [d.message_primary for d in seen] == [REDACTED_TEXT, REDACTED_TEXT]
    assert [d.context for d in seen] == ["PL/pgSQL function noti() line 1 at RAISE",
                                         "PL/pgSQL function noti() line 2 at RAISE"]
    assert not any(m in repr([(d.message_primary, d.context) for d in seen]).lower()
                   for m in MARKERS)


def test_errors_inside_copy(db, audit):
    with governed_db.connect(db, identity=HUMAN, audit=audit, autocommit=True) as conn:
        cur = conn.cursor()
        with pytest.raises(errors.CheckViolation) as ei:
            with cur.copy("COPY chk (id, email) FROM STDIN") as cp:
                cp.write_row((1, "qem.copied@example.com"))
        exc = ei.value
        _assert_clean(exc)
        # COPY data is not statement text: every value of the row is redacted (F11)
        assert exc.diag.message_detail == \
            f"Failing row contains ({REDACTED_TEXT}, {REDACTED_TEXT}, {REDACTED_TEXT})."
        assert exc.diag.context is not None and exc.diag.context.startswith("COPY chk, line 1")
        with pytest.raises(errors.InvalidTextRepresentation) as ei:
            with cur.copy("COPY chk (id) FROM STDIN") as cp:
                cp.write_row(("qsn-999-88-7777",))
        _assert_clean(ei.value)
        assert "999-88" not in str(ei.value)


def test_errors_in_executemany_and_pipeline(db, audit):
    with governed_db.connect(db, identity=HUMAN, audit=audit, autocommit=True) as conn:
        cur = conn.cursor()
        with pytest.raises(errors.CheckViolation) as ei:
            cur.executemany("INSERT INTO chk (id, email) SELECT %s, email FROM users",
                            [(1,), (2,)])
        _assert_clean(ei.value)
        with pytest.raises(errors.InvalidTextRepresentation) as ei:
            with conn.pipeline():
                conn.execute("SELECT 1")
                conn.execute("SELECT ssn::int FROM users")
        _assert_clean(ei.value)
        assert ei.value.diag.message_primary == \
            f'invalid input syntax for type integer: "{REDACTED_TEXT}"'


async def test_async_errors_are_redacted(db, audit):
    conn = await governed_db.AsyncConnection.connect(db, identity=HUMAN, audit=audit)
    try:
        with pytest.raises(errors.InvalidTextRepresentation) as ei:
            await conn.execute("SELECT email::uuid FROM users")
        _assert_clean(ei.value)
        await conn.rollback()
        with pytest.raises(errors.InvalidTextRepresentation) as ei:
            await conn.execute("SELECT 'abc'::int")
        assert ei.value.diag.message_primary == 'invalid input syntax for type integer: "abc"'
    finally:
        await conn.close()


def test_unredacted_error_is_not_chained(db, audit):
    with governed_db.connect(db, identity=HUMAN, audit=audit, autocommit=True) as conn:
        with pytest.raises(errors.InvalidTextRepresentation) as ei:
            conn.execute("SELECT ssn::int FROM users")
    exc = ei.value
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        assert "qsn" not in str(exc)
        exc = exc.__cause__ or exc.__context__


# A value the server builds from data, spelled in words the redactor knows (column, table and
# type names, joined by any separator): a run of them is data, not a name.
SPELLED = [
    "SELECT encode('x', repeat('id ', ascii(substr(email, 1, 1)))) FROM users WHERE id = 1001",
    "SELECT encode('x', repeat('text ', ascii(substr(ssn, 5, 1)))) FROM users WHERE id = 1001",
    "SELECT encode('x', repeat('users.', ascii(substr(email, 2, 1)))) FROM users WHERE id = 1001",
    "SELECT encode('x', repeat('id, ', length(email))) FROM users WHERE id = 1001",
    "SELECT encode('x', repeat('\"users\" ', length(ssn))) FROM users WHERE id = 1001",
    "SELECT encode('x', (SELECT string_agg(repeat('email ', ascii(substr(u.email, i, 1))), 'id '"
    " ORDER BY i) FROM generate_series(1, 3) i)) FROM users u WHERE id = 1001",
]


@pytest.mark.parametrize("ident", [HUMAN, Identity("etl", "service")], ids=["human", "service"])
@pytest.mark.parametrize("sql", SPELLED)
def test_values_spelled_in_catalog_words_are_redacted(db, audit, sql, ident):
    with governed_db.connect(db, identity=ident, audit=audit, autocommit=True) as conn:
        try:
            conn.execute(sql)
        except errors.StatementDenied:
            return  # (refused before it ran: nothing came back at all)
        except psycopg.errors.InvalidParameterValue as exc:
            assert exc.diag.message_primary == f'unrecognized encoding: "{REDACTED_TEXT}"'
            _assert_clean(exc)
        else:
            raise AssertionError("the statement was expected to fail on the server")


def test_short_names_still_come_back(db, audit):
    """Qualified names and multi-word types are still echoed where the server quotes them."""
    with governed_db.connect(db, identity=HUMAN, audit=audit, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedFunction) as ei:
            conn.execute("SELECT lower(now()::timestamp without time zone, 1)")
        assert ei.value.diag.message_primary == \
            "function lower(timestamp without time zone, integer) does not exist"


# -- Class: a message quoting a PIECE of an input value (attack F11) ---------------------------
# The capture is judged by the message's shape: a value slot (``invalid symbol "%.*s"``, ``enum
# mood: "%s"``, ``Token "%s"``, ``invalid value "%s" for``) passes only a whole token the caller
# sent, never a punctuation character or a piece that happens to equal a catalog name ("a",
# the column t.a). Each shape below makes the server quote one character of users.email /
# users.ssn (qem.alice@..., qsn-111-...): "." / "-" / "a".
VALUE_PIECES = [
    ("SELECT decode(email, 'base64') FROM users WHERE id = 1001", '"."'),
    ("SELECT decode(substr(ssn, 4, 1), 'hex') FROM users WHERE id = 1001", '"-"'),
    ("SELECT to_date(substr(ssn, 4, 1), 'YYYY') FROM users WHERE id = 1001", '"-"'),
    ("SELECT substr(email, 4, 1)::json FROM users WHERE id = 1001", '"."'),
    ("SELECT substr(ssn, 4, 1)::mood FROM users WHERE id = 1001", '"-"'),
    ("SELECT substr(email, 5, 1)::mood FROM users WHERE id = 1001", '"a"'),
    ("SELECT substr(ssn, 4, 1)::interval FROM users WHERE id = 1001", '"-"'),
    ("SELECT substr(email, 4, 1)::numeric FROM users WHERE id = 1001", '"."'),
    ("SELECT format('%' || substr(email, 4, 1), 1) FROM users WHERE id = 1001", '"."'),
    # a name slot fed by a value: the object "does not exist" / is "unrecognized", so the
    # capture is input, not a catalog name (even when it equals one: column t.a)
    ("SELECT substr(email, 5, 1)::regproc FROM users WHERE id = 1001", '"a"'),
    ("SELECT substr(email, 5, 1)::regrole FROM users WHERE id = 1001", '"a"'),
    ("SELECT substr(email, 5, 1)::regnamespace FROM users WHERE id = 1001", '"a"'),
    ("SELECT current_setting(substr(email, 5, 1)) FROM users WHERE id = 1001", '"a"'),
    ("SELECT convert_from(email::bytea, substr(email, 5, 1)) FROM users WHERE id = 1001",
     '"a"'),
]


def _all_text(exc) -> str:
    d = exc.diag
    return "\n".join(str(x) for x in (str(exc), d.message_primary, d.message_detail,
                                      d.message_hint, d.context) if x)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("ident", [HUMAN, Identity("etl", "service")], ids=["human", "service"])
@pytest.mark.parametrize("sql,piece", VALUE_PIECES, ids=[v[0] for v in VALUE_PIECES])
async def test_a_piece_of_a_value_is_not_quoted(db, audit, mode, ident, sql, piece):
    if mode == "sync":
        with governed_db.connect(db, identity=ident, audit=audit, autocommit=True) as conn:
            with pytest.raises(psycopg.Error) as ei:
                conn.execute(sql)
    else:
        conn = await governed_db.AsyncConnection.connect(db, identity=ident, audit=audit,
                                                         autocommit=True)
        try:
            with pytest.raises(psycopg.Error) as ei:
                await conn.execute(sql)
        finally:
            await conn.close()
    exc = ei.value
    assert not isinstance(exc, errors.StatementDenied), exc  # it ran and failed on the server
    with psycopg.connect(db, autocommit=True) as raw:  # the raw server text does quote it
        with pytest.raises(psycopg.Error) as raw_ei:
            raw.execute(sql)
    assert piece in _all_text(raw_ei.value), _all_text(raw_ei.value)
    assert type(exc) is type(raw_ei.value) and exc.sqlstate == raw_ei.value.sqlstate
    text = _all_text(exc)
    assert piece not in text, text
    assert REDACTED_TEXT in text, text


# -- Class: dynamic SQL of a DO block (psycopg's test_error_encoding) --------------------------
# A DO block whose one EXECUTE builds its text from the block's own constants (format, chr, ||,
# quote_ident ...) echoes what that text names, when the server's QUERY: shows it ran exactly
# that text: it is a function of the statement's literals, never of data. Every other shape
# stays redacted, although each carries the very value as a literal (echoing it would confirm
# the guess): a value computed from a row, a built text reading a masked column, a DO built by
# a DO, a static part reading one, a fold the server does differently (bpchar, a keyword %I
# quotes, a user function or operator standing in), a trigger on the INSERT's table, an
# assignment target reading data (attack5). (A built SELECT of a relation the snapshot does not
# know stays redacted too: it may be a view created since.) DO blocks are opaque to
# governance: observe mode runs them.
OBSERVE = parse_policy('version = 1\nname = "observe"\nmode = "observe"\n')
VALUE = "qsn-111-22-3333"  # users.ssn of id 1001
TILDES = "qsn~111~22~3333"  # the same, past the SSN detector

DO_OWN = [
    ("""do $$begin execute format('insert into "%s" values (1)', chr(8364)); end$$""",
     'relation "\u20ac" does not exist'),
    ("do $$begin execute 'insert into ' || quote_ident('no such' || chr(8364)) || ' values (1)';"
     " end$$",
     'relation "no such\u20ac" does not exist'),
    ("do $$begin execute concat('insert into ', 'nosuch_', 7, ' values (1)'); end$$",
     'relation "nosuch_7" does not exist'),
    ("do $$begin execute format('insert into nosuch_%1$s values (%1$s)', 3); end$$",
     'relation "nosuch_3" does not exist'),
]
USER_COALESCE = """CREATE FUNCTION public."coalesce"(text) RETURNS int LANGUAGE sql AS
  $$ SELECT ssn::int FROM users WHERE id = 1001 $$"""
USER_CONCAT = """CREATE FUNCTION public.cat(text, text) RETURNS text LANGUAGE sql AS
  $$ SELECT (SELECT ssn::int FROM users WHERE id = 1001)::text $$;
CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = public.cat)"""
TRIGGER = """CREATE TABLE trg_t (id int);
CREATE FUNCTION trg_f() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN PERFORM (SELECT ssn::int FROM users WHERE id = 1001); RETURN NEW; END $$;
CREATE TRIGGER trg BEFORE INSERT ON trg_t FOR EACH ROW EXECUTE FUNCTION trg_f()"""
# A user function the server picks over pg_catalog.format(text, VARIADIC "any") for (text, text)
SHADOW = """CREATE FUNCTION public.format(f text, a text) RETURNS text LANGUAGE sql AS
  $$ SELECT 'select 1 from ' || quote_ident((SELECT ssn FROM users WHERE id = 1001)) $$"""
# (setup, statement, the value the raw error shows)
DO_DATA = [
    (None, f"""do $$begin perform '{VALUE}';
         execute format('select 1 from %I', (select ssn from users where id = 1001)); end$$""",
     VALUE),
    (None, f"""do $$begin execute 'select 1 where ''{VALUE}'' <> ''x''';
         execute 'select 1 from ' || quote_ident((select ssn from users where id = 1001)); end$$""",
     VALUE),
    (None, f"""do $$begin execute 'select ssn::regclass from users
         where id = 1001 or ssn = ''{VALUE}'''; end$$""", VALUE),
    (None, f"""do $$begin perform '{VALUE}'; execute 'do $x$ begin execute format(''select 1 from %I'',
         (select ssn from users where id = 1001)); end $x$'; end$$""", VALUE),
    (None, f"""do $$begin execute 'do $x$ begin execute ''select ssn::int from users
         where id = 1001 or ssn = ''''{VALUE}''''''; end $x$'; end$$""", VALUE),
    (None, f"""do $$begin perform ssn::regclass from users where id = 1001 or ssn = '{VALUE}';
         execute 'select 1'; end$$""", VALUE),
    (SHADOW, f"do $$begin execute format('select 1 from %s'::text, '{VALUE}'::text); end$$",
     VALUE),
    (None, f"""do $$begin perform '{VALUE}'; execute 'select 1 - '::bpchar || '- 1 /*' || chr(10)
         || ', (select ssn::int from users where id = 1001) -- */'; end$$""", VALUE),
    (USER_COALESCE, f"""do $$begin perform '{VALUE}';
         execute format('select %I(%L)', 'coalesce', 'x'); end$$""", VALUE),
    (USER_CONCAT, f"""do $$begin perform '{VALUE}'; set local search_path = public, pg_catalog;
         execute 'select ''a''::text || ''b''::text'; end$$""", VALUE),
    (TRIGGER, f"do $$begin perform '{VALUE}'; execute 'insert into trg_t values (1)'; end$$",
     VALUE),
    (TRIGGER, f"INSERT INTO trg_t SELECT 1 WHERE '{VALUE}' <> ''", VALUE),
    (None, f"""do $$declare a int[] := '{{1}}'; begin perform '{TILDES}';
         a[(select replace(ssn, '-', '~')::int from users where id = 1001)] := 1; end$$""",
     TILDES),
]


async def _error_of(mode: str, dsn: str, ident: Identity, audit, sql: str,
                    encoding: str = "utf8") -> BaseException:
    if mode == "sync":
        with governed_db.connect(dsn, identity=ident, audit=audit, autocommit=True,
                                 policy=OBSERVE) as conn:
            conn.execute(f"SET client_encoding TO {encoding}")
            with pytest.raises(psycopg.Error) as ei:
                conn.execute(sql)
    else:
        aconn = await governed_db.AsyncConnection.connect(dsn, identity=ident, audit=audit,
                                                          autocommit=True, policy=OBSERVE)
        try:
            await aconn.execute(f"SET client_encoding TO {encoding}")
            with pytest.raises(psycopg.Error) as ei:
                await aconn.execute(sql)
        finally:
            await aconn.close()
    assert not isinstance(ei.value, errors.StatementDenied), ei.value
    return ei.value


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("encoding", ["utf8", "latin9"])
@pytest.mark.parametrize("ident", [HUMAN, Identity("etl", "service")], ids=["human", "service"])
@pytest.mark.parametrize("sql,message", DO_OWN, ids=range(len(DO_OWN)))
async def test_do_dynamic_sql_from_its_own_constants_is_echoed(db, audit, mode, encoding, ident,
                                                               sql, message):
    exc = await _error_of(mode, db, ident, audit, sql, encoding)
    assert isinstance(exc, errors.UndefinedTable) and exc.sqlstate == "42P01"
    assert exc.diag.message_primary == message


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("ident", [HUMAN, Identity("etl", "service")], ids=["human", "service"])
@pytest.mark.parametrize("setup,sql,value", DO_DATA, ids=range(len(DO_DATA)))
async def test_do_dynamic_sql_from_data_is_not_echoed(db, audit, mode, ident, setup, sql, value):
    with psycopg.connect(db, autocommit=True) as raw:
        if setup is not None:
            raw.execute(setup)
        with pytest.raises(psycopg.Error) as raw_ei:  # the raw server text names the value
            raw.execute(sql)
    assert value in _all_text(raw_ei.value), _all_text(raw_ei.value)
    exc = await _error_of(mode, db, ident, audit, sql)
    assert type(exc) is type(raw_ei.value) and exc.sqlstate == raw_ei.value.sqlstate
    _assert_clean(exc)
    assert value not in _all_text(exc) and REDACTED_TEXT in _all_text(exc)
