"""The dashboard (issue 17, first slice): a one-time login link becomes an HttpOnly session; the
page lists apps and their containers live (server-sent events) and stops an app; without the
session everything answers 401. The browser tests drive Debian's headless Chromium."""
from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .conftest import REPO, Wisp, get, start_wisp, wait_until

pytestmark = pytest.mark.e2e
ARTIFACTS = REPO / "test-artifacts"  # screenshots, kept after the run (git ignores them)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wisp]:
    root = tmp_path_factory.mktemp("dashboard")
    wisp = start_wisp(root / "home")
    try:
        shutil.copy(REPO / "tests" / "e2e" / "apps" / "dash_app.py", root / "dash_app.py")
        wisp.run("deploy", str(root / "dash_app.py"))
        yield wisp
    finally:
        wisp.run("server", "stop", check=False)


def login_url(wisp: Wisp) -> str:
    out = wisp.run("dashboard").stdout.splitlines()[0]
    assert "/dashboard/login?code=" in out and (wisp.home / "token").read_text().strip() not in out
    return out


def base(url: str) -> str:
    return url.split("/dashboard/", 1)[0]


def signed_in(wisp: Wisp) -> tuple[requests.Session, str]:
    url = login_url(wisp)
    session = requests.Session()
    answer = session.get(url, timeout=30)
    assert answer.status_code == 200 and "<title>wisp</title>" in answer.text
    return session, base(url)


def test_the_login_link_works_once_and_sets_an_httponly_session(server: Wisp) -> None:
    url = login_url(server)
    first = requests.get(url, allow_redirects=False, timeout=30)
    assert first.status_code == 303 and first.headers["location"] == "/dashboard/"
    cookie = first.headers["set-cookie"]
    assert "wisp_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    again = requests.get(url, allow_redirects=False, timeout=30)
    assert again.status_code == 401 and "wisp dashboard" in again.json()["error"]


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/api/apps", "/dashboard/api/events"])
def test_without_the_session_cookie_everything_is_401(server: Wisp, path: str) -> None:
    _, root = signed_in(server)
    answer = requests.get(root + path, timeout=30)
    assert answer.status_code == 401 and "Not signed in" in answer.json()["error"]
    forged = requests.get(root + path, cookies={"wisp_session": "guessed"}, timeout=30)
    assert forged.status_code == 401


def test_the_apps_api_and_the_live_stream_list_deployed_and_served_apps(server: Wisp, tmp_path: Path) -> None:
    session, root = signed_in(server)
    script = tmp_path / "dash_app.py"
    shutil.copy(REPO / "tests" / "e2e" / "apps" / "dash_app.py", script)
    with server.serve(script) as serving:
        serving.wait_for("Watching")
        listed = {(a["name"], a["mode"]) for a in session.get(root + "/dashboard/api/apps", timeout=30).json()["apps"]}
        assert {("dash", "deploy"), ("dash", "serve")} <= listed, listed
        with session.get(root + "/dashboard/api/events", stream=True, timeout=30) as stream:
            line = next(raw for raw in stream.iter_lines() if raw.startswith(b"data: "))
        snapshot = json.loads(line[len(b"data: "):])
        assert {a["id"] for a in snapshot["apps"]} >= {"dash", "dash-dev"}


def test_an_action_needs_the_session_and_the_pages_own_origin(server: Wisp, tmp_path: Path) -> None:
    session, root = signed_in(server)
    shutil.copy(REPO / "tests" / "e2e" / "apps" / "dash_app.py", tmp_path / "dash_app.py")
    script = tmp_path / "dash_app.py"
    script.write_text(script.read_text().replace('"dash"', '"dash-stoppable"'))
    server.run("deploy", str(script))
    stop = root + "/dashboard/api/apps/dash-stoppable/stop"
    assert requests.post(stop, headers={"Origin": root}, timeout=30).status_code == 401  # no session
    assert session.post(stop, headers={"Origin": "http://evil.example"}, timeout=30).status_code == 403
    assert session.post(stop, timeout=30).status_code == 403  # no Origin at all
    assert session.post(stop, headers={"Origin": root}, timeout=60).json() == {"stopped": "dash-stoppable"}
    listed = server.run("app", "list").stdout
    assert any(line.split()[:2] == ["dash-stoppable", "stopped"] for line in listed.splitlines()), listed


def test_a_container_is_drained_from_the_dashboard(server: Wisp) -> None:
    session, root = signed_in(server)
    assert get(server.url("dash--slow", "/?s=0")).status_code == 200

    def slow_containers() -> list[dict[str, object]]:
        apps = session.get(root + "/dashboard/api/apps", timeout=30).json()["apps"]
        app = next(a for a in apps if a["id"] == "dash")
        return next(e for e in app["endpoints"] if e["function"] == "slow")["container_list"]

    ready = [c for c in slow_containers() if c["state"] == "ready"]
    assert ready, slow_containers()
    cid = ready[0]["id"]
    stop = f"{root}/dashboard/api/apps/dash/containers/{cid}/stop"
    assert session.post(stop, timeout=30).status_code == 403  # not from the page
    assert session.post(stop, headers={"Origin": root}, timeout=30).json() == {"stopping": cid}
    wait_until(lambda: all(c["id"] != cid or c["state"] == "draining" for c in slow_containers()), timeout=30,
               message="the container to drain and go")
    assert "stopped from the dashboard" in server.run("app", "logs", "dash").stdout
    missing = session.post(f"{root}/dashboard/api/apps/dash/containers/c9999/stop", headers={"Origin": root}, timeout=30)
    assert missing.status_code == 404


def test_recent_calls_are_listed_without_their_data(server: Wisp) -> None:
    session, root = signed_in(server)
    answer = session.get(root + "/dashboard/api/apps/dash/calls", timeout=30)
    assert answer.status_code == 200 and answer.json() == {"calls": []}
    assert requests.get(root + "/dashboard/api/apps/dash/calls", timeout=30).status_code == 401


def test_the_cluster_view_shows_this_machine_and_its_containers(server: Wisp) -> None:
    session, root = signed_in(server)
    assert get(server.url("dash--slow", "/?s=0")).status_code == 200
    nodes = session.get(root + "/dashboard/api/cluster", timeout=30).json()["nodes"]
    assert len(nodes) == 1 and nodes[0]["cpus"] >= 1 and nodes[0]["memory_mb"] > 0
    assert nodes[0]["containers"] >= 1
    assert requests.get(root + "/dashboard/api/cluster", timeout=30).status_code == 401


# -- in a real browser ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1100,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _read(driver: object, css: str, prop: str = "textContent") -> str:
    """One property of the first match, read in one script call: the page re-renders its cards
    and charts every second, so a found element can go stale before a second call reads it."""
    script = "const e = document.querySelector(arguments[0]); return e ? String(e[arguments[1]] ?? e.getAttribute(arguments[1]) ?? '') : '';"
    return str(driver.execute_script(script, css, prop))  # type: ignore[attr-defined]


def _click(driver: object, css: str, last: bool = False) -> None:
    """Click the first (or last) match, finding it again if a re-render replaced it meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def clicked() -> bool:
        found = driver.find_elements(By.CSS_SELECTOR, css)  # type: ignore[attr-defined]
        if not found:
            return False
        try:
            found[-1 if last else 0].click()
        except StaleElementReferenceException:
            return False
        return True

    wait_until(clicked, timeout=30, message=f"to click {css}")


def _shot(driver: object, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"dashboard-{name}.png"))  # type: ignore[attr-defined]


def test_in_a_browser_an_exception_appears_in_the_log_tail(server: Wisp, browser: object) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(login_url(server))  # type: ignore[attr-defined]
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, '[data-app="dash"] button.toggle'),  # type: ignore[attr-defined]
               timeout=30, message="the app's card")
    _click(driver, '[data-app="dash"] button.toggle')
    log = '[data-panel="dash"] pre.log'

    def tail() -> str:
        return _read(driver, log)

    wait_until(lambda: "deploy dash version 1" in tail(), timeout=30, message="the log's backlog")
    sent = time.monotonic()
    assert get(server.url("dash--boom")).status_code == 500
    wait_until(lambda: "RuntimeError: dashboard-boom" in tail(), timeout=20, message="the traceback in the tail")
    print(f"\nthe exception reached the page's log tail {time.monotonic() - sent:.2f} s after the request was sent")
    assert _read(driver, '[data-panel="dash"] .versions li', "innerText").startswith("version 1 · deployed")
    box = '[data-panel="dash"] .filter'
    driver.find_element(By.CSS_SELECTOR, box).send_keys("no line ")  # type: ignore[attr-defined]
    time.sleep(2.5)  # the cards are drawn anew each second, and the open panel moves into the new one
    assert driver.execute_script("return document.activeElement === document.querySelector(arguments[0])", box)  # type: ignore[attr-defined]
    driver.switch_to.active_element.send_keys("has this")  # type: ignore[attr-defined]  # typing on, as a person would
    assert _read(driver, box, "value") == "no line has this"
    wait_until(lambda: tail() == "", timeout=10, message="the filter to hide every line")
    _shot(driver, "logs")


def test_in_a_browser_a_deployed_and_a_served_app_are_listed_and_one_is_rolled_back(
        server: Wisp, browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    script = tmp_path / "dash_app.py"
    shutil.copy(REPO / "tests" / "e2e" / "apps" / "dash_app.py", script)
    script.write_text(script.read_text().replace('return {"slept": s}', 'return {"slept": s, "v": 2}'))
    server.run("deploy", str(script))  # version 2 of the deployed app
    with server.serve(script) as serving:
        serving.wait_for("Watching")
        driver.get(login_url(server))  # type: ignore[attr-defined]
        wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, '[data-app="dash-dev"]')  # type: ignore[attr-defined]
                   and driver.find_elements(By.CSS_SELECTOR, '[data-app="dash"]'),  # type: ignore[attr-defined]
                   timeout=30, message="the deployed and the served app on the page")
        _shot(driver, "apps")
    _click(driver, '[data-app="dash"] button.toggle')
    back = '[data-panel="dash"] .versions button.rollback'
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, back), timeout=30,  # type: ignore[attr-defined]
               message="a version to roll back to")
    _click(driver, back, last=True)  # the oldest: version 1
    driver.switch_to.alert.accept()  # type: ignore[attr-defined]  # the confirmation
    wait_until(lambda: "v" not in get(server.url("dash--slow")).json(), timeout=120, message="version 1's code back")
    wait_until(lambda: _alert_text(driver), timeout=30, message="the page's answer")
    assert "serves version 1's code as version 3" in _alert_text(driver)
    driver.switch_to.alert.accept()  # type: ignore[attr-defined]


def _alert_text(driver: object) -> str:
    try:
        return str(driver.switch_to.alert.text)  # type: ignore[attr-defined]
    except Exception:  # no alert yet
        return ""


def test_in_a_browser_the_page_follows_traffic_and_stops_an_app(server: Wisp, browser: object) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(login_url(server))  # type: ignore[attr-defined]
    card = '[data-app="dash"] [data-function="slow"] .containers'

    def containers_text() -> str:
        return _read(driver, card, "innerText")

    wait_until(lambda: containers_text() != "", timeout=30, message="the app's card")
    before = containers_text()
    busy = [threading.Thread(target=get, args=(server.url("dash--slow", "/?s=4"),)) for _ in range(2)]
    for thread in busy:
        thread.start()
    wait_until(lambda: "busy" in containers_text(), timeout=30, message="busy containers on the page, no reload")
    _click(driver, '[data-app="dash"] button.toggle')
    rate = '[data-panel="dash"] .chart-row[data-function="slow"] .chart[data-series="requests"]'

    def chart_max() -> float:
        return float(_read(driver, rate, "data-max") or 0)

    for thread in busy:
        thread.join()  # the requests are answered: the next second's point counts them
    wait_until(lambda: chart_max() > 0, timeout=30, message="the request-rate chart to show the traffic")
    _shot(driver, "busy")
    assert containers_text() != before

    _click(driver, '[data-app="dash"] button.danger')
    driver.switch_to.alert.accept()  # type: ignore[attr-defined]  # the confirmation
    wait_until(lambda: any(line.split()[:2] == ["dash", "stopped"] for line in server.run("app", "list").stdout.splitlines()),
               timeout=60, message="the app stopped from the page")
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, '[data-app="dash"] .badge.stopped'),  # type: ignore[attr-defined]
               timeout=30, message="the page to show it stopped")
    _shot(driver, "stopped")


def test_the_control_token_is_never_in_the_page(server: Wisp) -> None:
    session, root = signed_in(server)
    token = (server.home / "token").read_text().strip()
    for path in ("/dashboard/", "/dashboard/dashboard.js", "/dashboard/api/apps"):
        assert token not in session.get(root + path, timeout=30).text




def test_in_a_browser_the_page_fits_a_phone(server: Wisp, browser: object) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.set_window_size(390, 844)  # type: ignore[attr-defined]
    try:
        driver.get(login_url(server))  # type: ignore[attr-defined]
        wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, ".app"), timeout=30,  # type: ignore[attr-defined]
                   message="the apps")
        _click(driver, ".app button.toggle")
        wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, ".chart"), timeout=30,  # type: ignore[attr-defined]
                   message="the charts")
        overflow = driver.execute_script(  # type: ignore[attr-defined]
            "return document.documentElement.scrollWidth - window.innerWidth")
        _shot(driver, "phone")
        assert overflow <= 1, f"the page is {overflow} px wider than a phone's screen"
    finally:
        driver.set_window_size(1100, 900)  # type: ignore[attr-defined]
