"""End to end in a real browser: headless Debian Chromium driven by Playwright.

The app is the real ``build_demo`` with the bundled ``mini`` preset, served in-process on a free
loopback port; the Evaluation tab reads the small fixture results so the test does not depend
on committed numbers. Playwright's own browser download is not used: ``.ci/run`` installs
Debian's ``chromium`` package and the test points Playwright at it.
"""

import socket
from pathlib import Path

import pytest

from app import handlers

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FIXTURE_RESULTS = Path(__file__).parent / "fixtures" / "eval_results"
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(),
                                reason=f"{CHROMIUM} is absent: install Debian's chromium package (see .ci/run)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    from app.ui import build_demo

    demo = build_demo(results_dir=FIXTURE_RESULTS).queue(default_concurrency_limit=1, max_size=8)
    port = _free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True,
                max_file_size="64mb")
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def page(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(app_url)
            yield page
            assert errors == [], f"JavaScript errors in the page: {errors}"
        finally:
            browser.close()


def test_translate_an_example_then_see_the_evaluation_chart(page):
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)  # its own default (5 s) is shorter than a first run on CPU
    from app.ui import _examples

    _, labels = _examples()
    page.get_by_text(labels[0][:40]).first.click()  # Gradio shortens long example labels
    # The example fills the SAR upload; only then does Translate have an input.
    expect(page.locator("#sar-file")).to_contain_text("S1GRD")
    page.locator("#translate-button").click()

    for panel in ("sar-image", "opt-v1-image", "opt-v2-image", "opt-v3-image", "reference-image"):
        expect(page.locator(f"#{panel} img").first).to_be_visible()
    table = page.locator("#metrics-table")
    for row in ("opt_v1", "opt_v2", "opt_v3", handlers.BASELINE_ROW, handlers.REFERENCE_ROW):
        expect(table).to_contain_text(row)
    expect(page.get_by_text("GAC-mini").first).to_be_visible()

    page.get_by_role("tab", name="Evaluation").click()
    expect(page.locator("#ablation-table")).to_contain_text("v1+v2+v3")
    charts = page.locator(".js-plotly-plot")
    expect(charts.first).to_be_visible()
    expect(charts).to_have_count(6)  # PSNR vs sharpness, PSNR, SSIM, SAM, SAR-edge and the per-tile distribution
    expect(page.locator("#paired-table")).to_contain_text("v1+v2 - v1")
    expect(page.get_by_text("untrained model").first).to_be_visible()
