"""The operator console in a real browser (Debian's headless Chromium, driven by Selenium)
against the running system, and `rehost watch` in a terminal.

`REHOST_SCREENSHOTS=docs pytest tests/e2e/test_console.py` keeps the screenshots of the
main views in docs/ (the README shows them); otherwise they go to the test's own folder.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import auth, token
from tests.e2e.helpers import act, create_task, eventually, ok, register, server_body
from tests.e2e.test_scripts import COC, create_script, execute, start_agents, wait_done
from tests.support.processes import System

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver (make test)"
)
OPERATOR = ["sms:*", "coc:*"]
AGENTS = ["console-1", "console-2"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("REHOST_SCREENSHOTS")
    folder = Path(wanted) if wanted else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def until(browser: WebDriver, check: Callable[[], Any], timeout: float = 20) -> Any:
    """Waits until `check()` is truthy: the page redraws under it, so a vanished element
    is tried again."""

    def once(_: WebDriver) -> Any:
        try:
            return check()
        except StaleElementReferenceException:
            return False

    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(once)


def sign_in(browser: WebDriver, url: str, bearer: str) -> None:
    browser.get(f"{url}/console")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{url}/console")
    field = browser.find_element(By.NAME, "token")
    field.clear()
    field.send_keys(bearer)
    browser.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()


def text(browser: WebDriver, css: str) -> str:
    found = browser.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def live(browser: WebDriver) -> bool:
    return text(browser, "#live") == "live"


async def test_a_wrong_or_expired_token_gets_the_form_with_the_reason(
    browser: WebDriver, system: System
) -> None:
    sign_in(browser, system.gateway_url, "not-a-token")
    until(browser, lambda: "invalid" in text(browser, "#sign-in-error"))
    sign_in(browser, system.gateway_url, token("domain-a", OPERATOR, ttl=-10))
    until(browser, lambda: "expired" in text(browser, "#sign-in-error"))
    assert not browser.find_element(By.ID, "sign-in").get_attribute("hidden")


async def test_an_access_key_signs_in_and_a_wrong_secret_does_not(
    browser: WebDriver, system: System
) -> None:
    browser.get(f"{system.gateway_url}/console")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{system.gateway_url}/console")
    browser.find_element(By.NAME, "ak").send_keys("AKDOMAINA00000000001")
    browser.find_element(By.NAME, "sk").send_keys("wrong")
    browser.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()
    until(browser, lambda: "does not match" in text(browser, "#sign-in-error"))
    browser.find_element(By.NAME, "sk").clear()
    browser.find_element(By.NAME, "sk").send_keys("sk-domain-a-secret")
    browser.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()
    until(browser, lambda: text(browser, "#tenant") == "tenant domain-a")


async def test_a_task_bar_moves_with_its_progress_reports_and_comes_back_after_a_restart(
    browser: WebDriver, system: System, client: httpx.AsyncClient, shots: Path
) -> None:
    server_id = await register(client, server_body(f"web-{uuid.uuid4().hex[:6]}"))
    task_id = await create_task(client, server_id)
    assert (await act(client, task_id, "start")).status_code == 200
    sign_in(browser, system.gateway_url, token("domain-a", OPERATOR))
    until(browser, lambda: live(browser))
    bar = f'[data-task="{task_id}"] .bar[data-subtask="MIGRATE_LINUX_FILE"]'

    async def report(percent: int) -> None:
        body = {
            "subtask_name": "MIGRATE_LINUX_FILE",
            "progress": percent,
            "replicatesize": percent * 10,
            "totalsize": 1000,
            "migrate_speed": 95.5,
            "remain_time": (100 - percent) * 6,
        }
        await ok(client.put(f"/v3/tasks/{task_id}/progress", json=body, headers=auth()))

    for percent in (20, 65):
        await report(percent)
        until(browser, lambda p=percent: _value(browser, bar) == p)
    assert "95.5 Mbit/s" in text(browser, f'[data-task="{task_id}"] .figures')
    assert "locked" in text(browser, f'[data-task="{task_id}"] .lock')
    until(browser, lambda: "task.progress" in text(browser, "#event-feed"))
    assert "trace " in text(browser, "#event-feed li")
    browser.save_screenshot(str(shots / "console.png"))

    system["gateway"].stop()  # the page reconnects to the new process and catches up
    until(browser, lambda: not live(browser))
    system["gateway"].start()
    await report(80)
    until(browser, lambda: _value(browser, bar) == 80, timeout=30)
    until(browser, lambda: live(browser))


def _value(browser: WebDriver, css: str) -> int | None:
    found = browser.find_elements(By.CSS_SELECTOR, css)
    return int(found[0].get_attribute("aria-valuenow") or -1) if found else None


@pytest.fixture(scope="module")
async def agents(system: System, amqp_url: str) -> Any:
    await start_agents(system, amqp_url, AGENTS)
    yield AGENTS
    for sn in AGENTS:
        system.discard(f"agent-{sn}")


async def test_hosts_turn_finished_and_pause_pauses_the_execution(
    browser: WebDriver, system: System, agents: list[str], shots: Path
) -> None:
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30, headers=COC) as coc:
        ready = await create_script(coc, "true")

        async def online() -> bool:
            done = await wait_done(coc, await execute(coc, ready, [agents]))
            return bool(done["statistics"]["success"] == len(agents))

        await eventually(online, timeout=30)
        sign_in(browser, system.gateway_url, token("domain-a", OPERATOR))
        until(browser, lambda: live(browser))
        script = await create_script(coc, "sleep 3")
        execute_uuid = await execute(coc, script, [[agents[0]], [agents[1]]])
        order = f'[data-execution="{execute_uuid}"]'
        until(browser, lambda: text(browser, f"{order} .status") == "PROCESSING")
        until(browser, lambda: _host(browser, order, 1, agents[0]) == "PROCESSING")
        browser.find_element(By.CSS_SELECTOR, f'{order} button[data-op="pause"]').click()
        until(browser, lambda: _host(browser, order, 1, agents[0]) == "FINISHED", timeout=30)
        until(browser, lambda: text(browser, f"{order} .status") == "PAUSED", timeout=30)
        assert _host(browser, order, 2, agents[1]) == "READY"  # paused after batch 1
        browser.save_screenshot(str(shots / "console-paused.png"))
        browser.find_element(By.CSS_SELECTOR, f'{order} button[data-op="continue"]').click()
        until(browser, lambda: text(browser, f"{order} .status") == "FINISHED", timeout=30)
        assert _host(browser, order, 2, agents[1]) == "FINISHED"
        assert (await wait_done(coc, execute_uuid))["status"] == "FINISHED"


def _host(browser: WebDriver, order: str, batch: int, agent_sn: str) -> str | None:
    css = f'{order} [data-batch="{batch}"] [data-host="{agent_sn}"]'
    found = browser.find_elements(By.CSS_SELECTOR, css)
    return found[0].get_attribute("data-status") if found else None


async def test_another_tenants_servers_and_events_never_appear(
    browser: WebDriver, system: System, client: httpx.AsyncClient
) -> None:
    theirs = f"theirs-{uuid.uuid4().hex[:6]}"
    await register(client, server_body(theirs), domain="domain-a")
    sign_in(browser, system.gateway_url, token("domain-b", OPERATOR))
    until(browser, lambda: live(browser))
    mine = f"mine-{uuid.uuid4().hex[:6]}"
    await register(client, server_body(mine), domain="domain-b")
    until(browser, lambda: mine in text(browser, "#server-rows"))
    await register(client, server_body(f"theirs-{uuid.uuid4().hex[:6]}"), domain="domain-a")
    await asyncio.sleep(1.5)
    assert theirs not in text(browser, "#server-rows")
    feed = text(browser, "#event-feed")
    assert feed.count("source.registered") == 1, feed  # its own register only


async def test_the_stream_refuses_without_credentials(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"X-Auth-Token": "not-a-token"}):
        response = await client.get("/console/stream", headers=headers)
        assert response.status_code == 401 and response.json()["error_code"].startswith("SMS.900")
    blind = {"X-Auth-Token": token("domain-a", ["sms:task:create"])}  # may read no events
    response = await client.get("/console/stream", headers=blind)
    assert response.status_code == 403 and response.json()["error_code"] == "SMS.9004"


async def test_rehost_watch_draws_a_tasks_progress(
    system: System, client: httpx.AsyncClient, base_env: dict[str, str]
) -> None:
    server_id = await register(client)
    task_id = await create_task(client, server_id)
    assert (await act(client, task_id, "start")).status_code == 200
    env = {**base_env, "REHOST_TOKEN": token("domain-a", OPERATOR), "COLUMNS": "120"}
    watcher = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "services.cli", "watch", "--task", task_id),
        *("--gateway", system.gateway_url),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await asyncio.sleep(3)
        body = {
            "subtask_name": "MIGRATE_LINUX_FILE",
            "progress": 73,
            "replicatesize": 730,
            "totalsize": 1000,
            "migrate_speed": 88.0,
            "remain_time": 120,
        }
        await ok(client.put(f"/v3/tasks/{task_id}/progress", json=body, headers=auth()))
        await asyncio.sleep(2)
    finally:
        watcher.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            printed, _ = await watcher.communicate()
    output = printed.decode()
    assert "MIGRATE_LINUX_FILE" in output and "73%" in output, output
    assert "88.0 Mbit/s" in output and "2 min left" in output, output
