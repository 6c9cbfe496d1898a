"""Browser smoke test: `streamlit run` on a free port, every page loaded in headless Chromium
(Debian's `chromium`, driven by Playwright with `executable_path`; no browser download), waiting for
the page's content, failing on any exception box. Skips with the reason when Chromium is absent."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (CI installs it: apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def page_urls() -> list[tuple[str, str]]:
    """(page file, URL path) for Home and every file in pages/, as Streamlit names them."""
    urls = [("Home.py", "")]
    for page in sorted((ROOT / "pages").glob("*.py")):
        name = page.stem.split("_", 1)[1] if page.stem[0].isdigit() else page.stem
        urls.append((f"pages/{page.name}", name))
    return urls


@pytest.fixture(scope="module")
def server(demo_registry, tmp_path_factory):
    from conftest import copy_registry

    port = _free_port()
    state = tmp_path_factory.mktemp("smoke")
    env = {**os.environ, **copy_registry(state / "registry")}  # the pages write predictions: use a copy
    log_path = state / "streamlit-smoke.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "Home.py", "--server.port", str(port),
             "--server.headless", "true", "--server.address", "127.0.0.1"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{base}/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail(f"streamlit did not start: {log_path.read_text()[-2000:]}")
    yield base
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


def wait_until_rendered(page, timeout_ms: int = 90_000) -> None:
    """Wait for the title, then until the script has stopped adding elements (the element count is
    unchanged over 2 s with no 'Running...' widget), then until every plotly chart has drawn its SVG.
    A screenshot right after start would show a half-rendered page."""
    page.wait_for_selector("[data-testid='stMain'] h1", timeout=timeout_ms)
    deadline, last, stable_since = time.time() + timeout_ms / 1000, -1, time.time()
    while time.time() < deadline:
        count = page.locator("[data-testid='stElementContainer']").count()
        running = page.locator("[data-testid='stStatusWidget']").count()
        if count != last or running:
            last, stable_since = count, time.time()
        elif time.time() - stable_since >= 2.0:
            break
        page.wait_for_timeout(250)
    page.wait_for_function(
        "() => [...document.querySelectorAll(\"[data-testid='stPlotlyChart']\")].every(c => c.querySelector('.main-svg'))",
        timeout=timeout_ms, polling=250,
    )
    page.wait_for_timeout(500)


@pytest.mark.parametrize("page_file, path", page_urls())
def test_page_renders_without_exception(server, browser, page_file, path, tmp_path_factory):
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server}/{path}", wait_until="domcontentloaded")
    wait_until_rendered(page)
    shot = tmp_path_factory.mktemp("screens") / f"{path or 'Home'}.png"
    page.screenshot(path=str(shot), full_page=True)
    exceptions = page.locator("[data-testid='stException']")
    assert exceptions.count() == 0, f"{page_file} shows an exception: {exceptions.first.inner_text()[:800]}"
    assert page.locator("[data-testid='stMain'] h1").count() >= 1
    assert not errors, f"{page_file}: JavaScript errors {errors}"
    page.close()
