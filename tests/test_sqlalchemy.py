"""SQLAlchemy: the governed dialects, ORM, reflection, error text, async engine."""

from __future__ import annotations

import pytest

sa = pytest.importorskip("sqlalchemy")
from sqlalchemy import orm  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

import governed_db  # noqa: E402
from governed_db import errors  # noqa: E402

from .conftest import AGENT, HUMAN, MARKERS  # noqa: E402


def _url(dsn: str, driver: str = "governed") -> str:
    return f"postgresql+{driver}://?" + "&".join(
        f"{k}={v}" for k, v in (p.split("=", 1) for p in dsn.split()))


class Base(orm.DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    email: orm.Mapped[str]
    ssn: orm.Mapped[str]


@pytest.fixture
def engine(dsn, audit):
    eng = sa.create_engine(_url(dsn), connect_args={"identity": AGENT, "audit": audit})
    yield eng
    eng.dispose()


def test_dialect_is_postgresql_on_governed_db(engine):
    assert engine.dialect.name == "postgresql"
    assert engine.dialect.driver == "governed"
    assert engine.dialect.dbapi is governed_db
    with engine.connect() as c:
        assert isinstance(c.connection.driver_connection, governed_db.Connection)


def test_orm_rows_masked_and_recorded(engine, audit):
    with orm.Session(engine) as s:
        users = s.scalars(sa.select(User).order_by(User.id)).all()
    assert [u.id for u in users] == [1001, 1002]
    assert users[0].email == "****@example.com"
    assert not any(m in repr([(u.email, u.ssn) for u in users]).lower() for m in MARKERS)
    audit.flush()
    rec = [r for r in audit.records if r["type"] == "statement"
           and r["statement"]["reads"] == ["users"]][-1]
    assert rec["identity"]["id"] == "recs-bot"
    assert rec["masked"]["email"].startswith("email:")


def test_drop_denied_through_engine_and_table_kept(engine, dsn):
    with engine.connect() as c, pytest.raises(sa.exc.ProgrammingError) as ei:
        c.execute(sa.text("DROP TABLE orders"))
    assert isinstance(ei.value.orig, errors.StatementDenied)
    assert "statement.disallow-drop" in ei.value.orig.rule_ids
    with governed_db.connect(dsn, identity=HUMAN, audit=False) as raw:
        assert raw.execute("SELECT count(*) FROM orders").fetchone() == (2,)


def _engine(dsn: str, style: str, **connect_args):
    """An engine the two documented ways: our dialect, or SQLAlchemy's with module=."""
    if style == "governed":
        return sa.create_engine(_url(dsn), connect_args=connect_args)
    return sa.create_engine(_url(dsn, "psycopg"), module=governed_db, connect_args=connect_args)


@pytest.mark.parametrize("style", ["governed", "module"])
def test_error_text_hides_bound_parameters(dsn, audit, style):
    eng = _engine(dsn, style, identity=HUMAN, audit=audit)
    try:
        with eng.begin() as c, pytest.raises(sa.exc.IntegrityError) as ei:
            c.execute(sa.text("INSERT INTO users (id, email) VALUES (:id, :email)"),
                      {"id": 1001, "email": "new.person@example.com"})
        text = str(ei.value)
        assert "new.person" not in text and "1001" not in text.split("\n[SQL")[0]
        assert "[SQL parameters hidden" in text and "[parameters:" not in text
    finally:
        eng.dispose()


async def test_async_error_text_hides_bound_parameters(dsn, audit):
    # (SQLAlchemy's async psycopg dialect cannot take module=: the async twin is ours only.)
    eng = create_async_engine(_url(dsn), connect_args={"identity": HUMAN, "audit": audit})
    try:
        async with eng.begin() as c:
            with pytest.raises(sa.exc.IntegrityError) as ei:
                await c.execute(sa.text("INSERT INTO users (id, email) VALUES (:id, :email)"),
                                {"id": 1001, "email": "new.person@example.com"})
        text = str(ei.value)
        assert "new.person" not in text and "[SQL parameters hidden" in text
    finally:
        await eng.dispose()


def test_strict_mode_flags_sqlalchemy_parameter_text(dsn, audit):
    # An engine whose owner turned hiding off again: the text is a finding for strict mode
    # and for assert_no_unmasked_pii, even when no value looks like PII.
    from governed_db.testing import EgressMonitor, assert_no_unmasked_pii

    eng = _engine(dsn, "governed", identity=HUMAN, audit=audit)
    try:
        with eng.connect() as c:
            c.execute(sa.text("SELECT 1"))
        eng.hide_parameters = False
        with eng.begin() as c, pytest.raises(sa.exc.IntegrityError) as ei:
            c.execute(sa.text("INSERT INTO users (id, name) VALUES (:id, :name)"),
                      {"id": 1001, "name": "Plain Name"})
        assert "[parameters:" in str(ei.value)
        with pytest.raises(AssertionError, match=r"SQLAlchemy bound parameters"):
            assert_no_unmasked_pii(str(ei.value))
        with EgressMonitor() as mon:
            import logging

            logging.getLogger("sqlalchemy.engine").error("%s", ei.value)
        assert any("SQLAlchemy bound parameters" in what for _, what in mon.violations)
    finally:
        eng.dispose()


def test_reflection_works_for_an_agent(engine):
    insp = sa.inspect(engine)
    assert {"users", "orders", "orgs"} <= set(insp.get_table_names())
    assert [c["name"] for c in insp.get_columns("orgs")] == ["id", "name", "plan"]


def test_psycopg_dialect_with_module_governed_db(dsn, audit):
    eng = sa.create_engine(_url(dsn, "psycopg"), module=governed_db,
                           connect_args={"identity": AGENT, "audit": audit})
    try:
        with eng.connect() as c:
            assert c.execute(sa.text("SELECT email FROM users WHERE id = 1001")).scalar() \
                == "****@example.com"
    finally:
        eng.dispose()


async def test_async_engine_governed(dsn, audit):
    eng = create_async_engine(_url(dsn), connect_args={"identity": AGENT, "audit": audit})
    try:
        async with eng.connect() as c:
            assert await c.scalar(sa.text("SELECT ssn FROM users WHERE id = 1001")) \
                == "***********3333"
            with pytest.raises(sa.exc.ProgrammingError) as ei:
                await c.execute(sa.text("DELETE FROM users"))
            assert isinstance(ei.value.orig, errors.StatementDenied)
        assert eng.dialect.driver == "governed_async"
    finally:
        await eng.dispose()
