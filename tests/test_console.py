"""The web console: authentication, CSRF, approver rules, what it renders — over HTTP with
Starlette's test client, and end to end in a real headless Chromium (Debian's, via Selenium)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import psycopg
import pytest

pytest.importorskip("starlette")
pytest.importorskip("jinja2")

import governed_db  # noqa: E402
from governed_db import Identity, errors  # noqa: E402
from governed_db.approvals import ApprovalStore  # noqa: E402
from governed_db.audit import AuditLog  # noqa: E402
from governed_db.console import ConsoleSettings, create_app  # noqa: E402
from governed_db.testing import assert_no_unmasked_pii  # noqa: E402

from .conftest import AGENT  # noqa: E402

ETL = Identity("etl", "service", purpose="nightly load", model=None)
MARIA = Identity("maria", "human")
POLICY = """
[[rules]]
id = "statement.disallow-ddl"
level = "approval"
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def trail(dsn: str, tmp_path: Path, policy_file: Path):
    """A governed session that leaves an audit trail with masked reads and denials, and a
    pending DDL approval request in the file store. Yields (log path, store, request id)."""
    log = tmp_path / "audit.jsonl"
    audit = AuditLog.open(log)
    store = ApprovalStore(tmp_path / "approvals")
    governed_db._config.set_approvals(store)
    with governed_db.connect(dsn, identity=AGENT, audit=audit) as conn:
        conn.execute("SELECT email, ssn FROM users").fetchall()
        with pytest.raises(errors.StatementDenied):
            conn.execute("DROP TABLE users")
    with governed_db.connect(dsn, identity=ETL, audit=audit, policy=str(policy_file),
                             autocommit=True) as conn:
        with pytest.raises(errors.ApprovalRequired) as ei:
            conn.execute("CREATE TABLE t_console (id int)")
    audit.close()
    yield log, store, ei.value.request_id


@pytest.fixture
def client(trail):
    from starlette.testclient import TestClient

    log, store, _ = trail
    settings = ConsoleSettings(logs=[str(log)], approver=MARIA, store=store)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8765",
                    follow_redirects=False) as c:
        c.settings = settings  # type: ignore[attr-defined]
        yield c


def _login(client) -> None:
    r = client.get(f"/?token={client.settings.token}")
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_every_page_needs_the_token(client, trail):
    _, _, request_id = trail
    for path in ("/", "/approvals", f"/approvals/{request_id}", "/audit"):
        assert client.get(path).status_code == 401
    assert client.get("/?token=wrong").status_code == 401
    assert client.post(f"/approvals/{request_id}/decide",
                       data={"action": "approve"}).status_code == 401
    _login(client)
    r = client.get("/")
    assert r.status_code == 200
    assert "script-src" not in r.headers["content-security-policy"]  # default-src 'none'
    assert r.headers["referrer-policy"] == "same-origin"
    assert r.headers["x-frame-options"] == "DENY"


def test_post_without_csrf_or_cross_origin_is_refused(client, trail):
    _, store, request_id = trail
    _login(client)
    r = client.post(f"/approvals/{request_id}/decide", data={"action": "approve"})
    assert r.status_code == 403 and "CSRF" in r.text
    page = client.get(f"/approvals/{request_id}").text
    r = client.post(f"/approvals/{request_id}/decide",
                    data={"action": "approve", "csrf": "0" * 64})
    assert r.status_code == 403
    r = client.post(f"/approvals/{request_id}/decide",
                    data={"action": "approve", "csrf": _csrf(page)},
                    headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "Cross-origin" in r.text
    assert store.get(request_id)["status"] == "pending"  # nothing was decided


def test_approve_with_reason_then_the_statement_runs_once(client, trail, dsn, policy_file):
    log, store, request_id = trail
    _login(client)
    page = client.get("/approvals")
    assert request_id in page.text and "service:etl" in page.text and "nightly load" in page.text
    detail = client.get(f"/approvals/{request_id}").text
    assert "statement.disallow-ddl" in detail and "t_console" in detail
    r = client.post(f"/approvals/{request_id}/decide",
                    data={"action": "approve", "note": "schema change ticket 42",
                          "csrf": _csrf(detail)})
    assert r.status_code == 303
    req = store.get(request_id)
    assert req["status"] == "approved"
    assert req["decisions"][-1]["by"] == {"id": "maria", "kind": "human", "verified": False}
    assert req["decisions"][-1]["note"] == "schema change ticket 42"
    with governed_db.connect(dsn, identity=ETL, audit=False, policy=str(policy_file),
                             autocommit=True) as conn:
        conn.execute("CREATE TABLE t_console (id int)")
        with pytest.raises(errors.ApprovalRequired):  # single use
            conn.execute("CREATE TABLE t_console (id int)")
    with psycopg.connect(dsn) as raw:
        assert raw.execute("SELECT to_regclass('t_console') IS NOT NULL").fetchone() == (True,)
    history = client.get("/approvals").text
    assert "schema change ticket 42" in history and "human:maria" in history


def test_self_approval_and_agent_approvers_refused(trail, dsn, policy_file, tmp_path):
    from starlette.testclient import TestClient

    log, store, _ = trail
    with governed_db.connect(dsn, identity=MARIA, audit=False, policy=str(policy_file),
                             autocommit=True) as conn:
        with pytest.raises(errors.ApprovalRequired) as ei:
            conn.execute("CREATE TABLE t_own (id int)")
    own = ei.value.request_id
    for approver, refusal in ((MARIA, "cannot approve its own request"),
                              (Identity("helper-bot", "ai_agent"), "ai_agent identity cannot")):
        settings = ConsoleSettings(logs=[str(log)], approver=approver, store=store)
        with TestClient(create_app(settings), base_url="http://127.0.0.1:8765",
                        follow_redirects=False) as c:
            c.get(f"/?token={settings.token}")
            page = c.get(f"/approvals/{own}").text
            r = c.post(f"/approvals/{own}/decide",
                       data={"action": "approve", "csrf": _csrf(page)})
            assert r.status_code == 403 and refusal in r.text
    assert store.get(own)["status"] == "pending"


def test_read_only_console_has_no_decide_form(trail):
    from starlette.testclient import TestClient

    log, store, request_id = trail
    settings = ConsoleSettings(logs=[str(log)], approver=None, store=store)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8765",
                    follow_redirects=False) as c:
        c.get(f"/?token={settings.token}")
        page = c.get(f"/approvals/{request_id}").text
        assert 'id="approve"' not in page and "read-only" in page
        sid = c.cookies["governed_db_console"].rsplit(".", 1)[0]
        r = c.post(f"/approvals/{request_id}/decide",
                   data={"action": "approve", "csrf": settings.csrf_for(sid)})
        assert r.status_code == 403 and "decisions are off" in r.text


def test_audit_explorer_filters_and_renders_no_values(client, trail):
    _login(client)
    page = client.get("/").text
    assert "intact" in page and page.count("<svg") >= 3
    assert "Masked vs unmasked reads" in page
    agent_rows = client.get("/audit", params={"identity": "recs-bot"}).text
    assert "ai_agent:recs-bot" in agent_rows and "service:etl" not in agent_rows
    assert "email (" in agent_rows and "denied" in agent_rows
    assert "weekly recommendations" in client.get("/audit",
                                                  params={"purpose": "weekly"}).text
    bad = client.get("/audit", params={"since": "not-a-time"})
    assert bad.status_code == 200 and "refusal" in bad.text
    for path in ("/", "/approvals", "/audit"):
        assert_no_unmasked_pii(client.get(path).text)


def test_tampered_log_is_shown_plainly(client, trail):
    log, _, _ = trail
    lines = log.read_text().splitlines()
    lines[1] = lines[1].replace('"SELECT', '"select', 1) if '"SELECT' in lines[1] else \
        lines[1].replace('"ts":"', '"ts":"1', 1)
    log.write_text("\n".join(lines) + "\n")
    _login(client)
    assert "TAMPERED" in client.get("/").text


def test_console_command_refuses_a_remote_bind_without_the_flag():
    from click.testing import CliRunner

    from governed_db.cli import main

    result = CliRunner().invoke(main, ["console", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "refusing to bind" in result.output


# -- a real browser ------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def console_url(trail, tmp_path, policy_file):
    """``governed-db console`` as a real subprocess; yields the printed URL with its token."""
    log, store, _ = trail
    env = dict(os.environ, GOVERNED_DB_APPROVALS=str(store.directory),
               GOVERNED_DB_POLICY=str(policy_file))
    proc = subprocess.Popen([sys.executable, "-W", "ignore", "-m", "governed_db.cli", "console",
                             "--port", "0", "--as", "human:maria", "--log", str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[\w-]+", line), \
            line + proc.stderr.read() if proc.poll() is not None else line
        yield line
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1280,1000", f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(flag)
    # The system driver: Selenium Manager would otherwise try to download one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _text_of(browser, element_id: str) -> str:
    """The text of an element of the page a click navigated to (waits for it to load)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, 20).until(
        ec.presence_of_element_located((By.ID, element_id))).text


def _click_and_wait(browser, element_id: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    button = browser.find_element(By.ID, element_id)
    button.click()
    WebDriverWait(browser, 20).until(_replaced(button))  # the next page replaced it
    WebDriverWait(browser, 20).until(
        lambda d: d.execute_script("return document.readyState") == "complete")


def _replaced(element):
    """A wait condition: ``element`` is gone from the page. As selenium's staleness_of, and
    chromedriver's answer while the old document is being torn down ("Node with given id does
    not belong to the document", an inspector error rather than a stale element) counts as
    gone too."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    def gone(_driver):
        try:
            element.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    return gone


def _png_is_not_blank(png: bytes) -> bool:
    """Decode enough of a PNG to tell a rendered page from a blank one (many distinct bytes)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, data = 8, b""
    while pos < len(png):
        length = int.from_bytes(png[pos:pos + 4], "big")
        kind = png[pos + 4:pos + 8]
        if kind == b"IDAT":
            data += png[pos + 8:pos + 8 + length]
        pos += 12 + length
    pixels = zlib.decompress(data)
    return len(set(pixels[: 4_000_000])) > 32


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="no system chromium/chromedriver")
def test_browser_approve_deny_self_approval_and_charts(browser, console_url, trail, dsn,
                                                       policy_file, tmp_path):
    from selenium.webdriver.common.by import By

    _, store, request_id = trail
    base = console_url.split("/?")[0]
    # Without the token: 401.
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(base + "/approvals", timeout=10)  # noqa: S310 - loopback
    ei.value.close()  # the error holds the open response
    assert ei.value.code == 401

    # Log in with the printed URL; the token leaves the address bar.
    browser.get(console_url)
    assert "token=" not in browser.current_url
    assert "Audit trail verification" in browser.page_source

    # The charts render: a screenshot (kept as a test artifact) that is not blank.
    bars = browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")
    assert len(bars) >= 4
    shot = browser.get_screenshot_as_png()
    artifacts = Path(os.environ.get("GOVERNED_DB_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "console-overview.png").write_bytes(shot)
    assert len(shot) > 20_000 and _png_is_not_blank(shot)

    # Approve the pending request created by the governed connection.
    browser.get(base + "/approvals")
    browser.find_element(By.LINK_TEXT, request_id).click()
    _text_of(browser, "decide")
    assert "t_console" in browser.page_source
    browser.find_element(By.ID, "note").send_keys("ticket 42")
    _click_and_wait(browser, "approve")
    assert _text_of(browser, "status") == "approved"
    with governed_db.connect(dsn, identity=ETL, audit=False, policy=str(policy_file),
                             autocommit=True) as conn:
        conn.execute("CREATE TABLE t_console (id int)")  # runs, once
        with pytest.raises(errors.ApprovalRequired) as again:
            conn.execute("CREATE TABLE t_console (id int)")
        # Deny path: the new request is denied in the browser; the statement never runs.
        with pytest.raises(errors.ApprovalRequired) as other:
            conn.execute("CREATE TABLE t_denied (id int)")
    browser.get(base + f"/approvals/{other.value.request_id}")
    browser.find_element(By.ID, "note").send_keys("too broad")
    _click_and_wait(browser, "deny")
    assert _text_of(browser, "status") == "denied"
    assert store.get(other.value.request_id)["decisions"][-1]["note"] == "too broad"

    # Self-approval: maria's own request, decided by the console's operator maria: refused.
    with governed_db.connect(dsn, identity=MARIA, audit=False, policy=str(policy_file),
                             autocommit=True) as conn:
        with pytest.raises(errors.ApprovalRequired) as own:
            conn.execute("CREATE TABLE t_own (id int)")
    browser.get(base + f"/approvals/{own.value.request_id}")
    _click_and_wait(browser, "approve")
    assert "cannot approve its own request" in _text_of(browser, "refusal")
    assert store.get(own.value.request_id)["status"] == "pending"

    # A POST without the CSRF token, carrying the browser's own session cookie: refused.
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in browser.get_cookies())
    req = urllib.request.Request(base + f"/approvals/{again.value.request_id}/decide",
                                 data=b"action=approve", method="POST",
                                 headers={"Cookie": cookie,
                                          "Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(req, timeout=10)  # noqa: S310 - loopback
    ei.value.close()
    assert ei.value.code == 403
    assert store.get(again.value.request_id)["status"] == "pending"

    with psycopg.connect(dsn) as raw:
        assert raw.execute("SELECT to_regclass('t_denied'), to_regclass('t_own')"
                           ).fetchone() == (None, None)
    for path in ("/", "/approvals", "/audit"):
        browser.get(base + path)
        assert_no_unmasked_pii(browser.page_source)
