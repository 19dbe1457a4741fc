"""Flower's pages, as a person sees them in a browser (headless Debian chromium).

A real worker serves ``digits:fp32`` only; jobs for ``digits:int8`` wait in their
queue. Pages are checked after their JavaScript ran (the dashboard and the tasks
table load over AJAX), by waiting for what they should show, never by sleeping.

Needs ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (``bash scripts/bootstrap.sh
--with-browser``, which ``scripts/test.sh`` runs). Without them the tests skip, except
under ``CI=true``, where a missing browser is a failure: CI must not go green on a
test it did not run.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from producers.client import Client
from producers.job import Job
from tasks.settings import Settings
from tests.conftest import WorkerProcess, on_db, queue_depth, started_worker
from tests.helpers.flower import FlowerProcess

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Known to work as root in a container; no network calls of Chromium's own.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
#: How long a page may take to show what it should (a shared 2-core machine).
PAGE_WAIT_S = 30
#: Jobs for the unserved int8 queue, by priority: its depth must count every priority list.
QUEUED_INT8 = {"high": 1, "normal": 2, "low": 1}


def require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (the dev extra)")
    if missing:
        reason = f"the Flower browser test needs {', '.join(missing)}: run bash scripts/bootstrap.sh --with-browser"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def own_settings(settings: Settings) -> Settings:
    require_browser()  # before any process starts
    return on_db(settings, 13)


@pytest.fixture(scope="module")
def fp32_worker(own_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    w = started_worker(own_settings, ["digits:fp32"], tmp_path_factory.mktemp("browser") / "worker.log")
    yield w
    w.stop()


@pytest.fixture(scope="module")
def flower(
    own_settings: Settings, fp32_worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FlowerProcess]:
    f = FlowerProcess(own_settings, tmp_path_factory.mktemp("browser") / "flower.log")
    assert fp32_worker.hostname
    f.wait_worker_online(fp32_worker.hostname)
    yield f
    f.stop()


@pytest.fixture(scope="module")
def jobs(flower: FlowerProcess, own_settings: Settings) -> list[Job]:
    """Three fp32 jobs done (Flower saw them run) and the int8 jobs left queued."""
    x = np.load(own_settings.models_dir / "digits" / "data" / "heldout_x.npy")
    with Client(own_settings) as client:
        done = [client.submit("digits", xi, variant="fp32", no_cache=True) for xi in x[:3]]
        client.wait_all(done, timeout=60)
        inputs = iter(x[3:])
        for priority, n in QUEUED_INT8.items():
            for _ in range(n):
                client.submit("digits", next(inputs), variant="int8", priority=priority, no_cache=True)
        assert queue_depth(client.broker, "digits", "int8") == sum(QUEUED_INT8.values())
    return done


@pytest.fixture(scope="module")
def browser(flower: FlowerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tmp_path_factory.mktemp("chromium-profile")
    options.add_argument(f"--user-data-dir={profile}")
    # A driver path given: Selenium Manager (which would download one) is never run.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    # Basic auth on every request, the pages' own AJAX calls included.
    token = base64.b64encode(":".join(flower.auth).encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def text_of(driver: Any, css: str) -> str:
    """All text under the elements matching ``css`` (textContent: hidden tabs too)."""
    from selenium.webdriver.common.by import By

    return " ".join(e.get_attribute("textContent") or "" for e in driver.find_elements(By.CSS_SELECTOR, css))


def wait_for(driver: Any, what: str, ok: Callable[[Any], Any]) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, PAGE_WAIT_S, poll_frequency=0.3).until(ok)
    except TimeoutException:
        raise AssertionError(
            f"{driver.current_url}: {what}; page text: {text_of(driver, 'body')[:2000]}"
        ) from None


def test_dashboard_lists_the_worker_online(
    browser: Any, flower: FlowerProcess, fp32_worker: WorkerProcess
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(flower.base + "/")

    def worker_row(d: Any) -> bool:
        rows = d.find_elements(By.CSS_SELECTOR, "#workers-table tbody tr")
        return any(
            fp32_worker.hostname in (r.get_attribute("textContent") or "") and "Online" in r.text
            for r in rows
        )

    wait_for(browser, f"worker {fp32_worker.hostname} not listed online", worker_row)


def test_tasks_page_lists_the_submitted_jobs(browser: Any, flower: FlowerProcess, jobs: list[Job]) -> None:
    browser.get(flower.base + "/tasks")
    wait_for(
        browser,
        "submitted job ids not all in the tasks table",
        lambda d: all(j.id in text_of(d, "#tasks-table tbody") for j in jobs),
    )


def test_task_page_shows_success_and_model_variant_args_never_the_input(
    browser: Any, flower: FlowerProcess, jobs: list[Job]
) -> None:
    job = jobs[0]
    browser.get(f"{flower.base}/task/{job.id}")
    wait_for(browser, "task page without its state", lambda d: "SUCCESS" in text_of(d, "#task-page .badge"))
    page = text_of(browser, "#task-page")
    assert job.id in page
    # Arguments show model and variant only: no input bytes, dtype or shape reach Flower.
    assert "('digits', 'fp32')" in page
    for leak in ("inputs", "b64", "float32", "dtype", "shape"):
        assert leak not in page, f"task page shows {leak!r}"


def test_worker_page_renders_the_worker_stats(
    browser: Any, flower: FlowerProcess, fp32_worker: WorkerProcess
) -> None:
    assert fp32_worker.hostname
    browser.get(flower.base + flower.worker_path(fp32_worker.hostname))
    wait_for(
        browser, "worker page without its name", lambda d: fp32_worker.hostname in text_of(d, "#workername")
    )
    assert "Unable to get stats" not in browser.page_source
    pool = text_of(browser, "#tab-pool")
    assert "solo" in pool.lower()  # the pool implementation, from the stats reply
    assert str(fp32_worker.proc.pid) in pool  # "Worker PID": this worker process's pid
    broker = text_of(browser, "#tab-broker")
    assert "redis" in broker.lower()
    assert str(urlsplit(flower.settings.broker_url).port) in broker  # the broker's port
    # The queues tab names the model queue this worker serves (its own active_queues).
    assert "inferq.digits.fp32" in text_of(browser, "#tab-queues")


def test_broker_page_lists_every_model_queue_with_its_depth(
    browser: Any, flower: FlowerProcess, jobs: list[Job]
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(flower.base + "/broker")
    wait_for(browser, "broker page without its queue table", lambda d: d.find_elements(By.ID, "queue-table"))
    depths = {}
    for row in browser.find_elements(By.CSS_SELECTOR, "#queue-table tbody tr"):
        cells = [c.get_attribute("textContent").strip() for c in row.find_elements(By.TAG_NAME, "td")]
        if len(cells) >= 2:
            depths[cells[0]] = cells[1]
    assert depths.get("inferq.digits.fp32") == "0", depths  # served, drained
    assert depths.get("inferq.digits.int8") == str(sum(QUEUED_INT8.values())), depths  # unserved, waiting
