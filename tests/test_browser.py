"""End to end in a real browser: headless Debian Chromium driven by Playwright.

The app is the real ``build_demo`` with the bundled ``mini`` preset, served in-process on a free
loopback port; the Evaluation tab reads the small fixture results so the test does not depend
on committed numbers. Playwright's own browser download is not used: ``.ci/run`` installs
Debian's ``chromium`` package and the test points Playwright at it.
"""

import socket
import time
from pathlib import Path
from unittest import mock

import httpx
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

    # No background warm-up of the example cache: the test clicks examples itself.
    demo = build_demo(results_dir=FIXTURE_RESULTS, warm_examples=False).queue(default_concurrency_limit=1,
                                                                              max_size=8)
    port = _free_port()
    # Gradio checks that the page answers with one 3 s HEAD request and, on a timeout, refuses to
    # start ("localhost is not accessible"); on a busy 2-core CI run the first answer can take
    # longer, so the check polls for up to a minute here.
    from gradio import networking

    def patient_url_ok(url: str) -> bool:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.head(url, timeout=10).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        return False

    with mock.patch.object(networking, "url_ok", patient_url_ok):
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


OPTICAL_PANELS = ("opt-v1-image", "opt-v2-image", "opt-v3-image", "reference-image")


def _image(page, panel: str):
    """A panel's <img>, scrolled into view first (the page loads images lazily, when they are seen)."""
    page.locator(f"#{panel}").scroll_into_view_if_needed()
    return page.locator(f"#{panel} img").first


def test_translate_an_example_inspect_it_then_see_the_evaluation_chart(page):
    from playwright.sync_api import expect

    from app import examples, panels

    expect.set_options(timeout=TIMEOUT_MS)  # its own default (5 s) is shorter than a first run on CPU
    bundled = examples.examples()
    thumbnails = page.locator("#examples img")
    expect(thumbnails).to_have_count(len(bundled))  # every bundled test tile, with a thumbnail
    thumbnails.first.click()  # fills the form and translates
    expect(page.locator("#sar-file")).to_contain_text("S1GRD")

    for panel in ("sar-image", *OPTICAL_PANELS):
        expect(_image(page, panel)).to_be_visible()
        box = page.locator(f"#{panel} img").first.bounding_box()
        assert box["width"] >= panels.MIN_PANEL_PX, (panel, box)  # a 120-px tile is readable
    table = page.locator("#metrics-table")
    for row in ("opt_v1", "opt_v2", "opt_v3", handlers.BASELINE_ROW, handlers.REFERENCE_ROW):
        expect(table).to_contain_text(row)
    expect(table).to_contain_text("n/a (first stage)")  # the change vs previous stage column
    expect(page.get_by_text("GAC-mini").first).to_be_visible()
    for panel in ("change-v2-image", "change-v3-image", "error-v1-image", "error-v2-image", "error-v3-image"):
        expect(_image(page, panel)).to_be_visible()

    # NDVI: every optical panel and both change maps are redrawn (new images), without a re-run.
    redrawn = (*OPTICAL_PANELS, "change-v2-image", "change-v3-image")
    before = {panel: _image(page, panel).get_attribute("src") for panel in redrawn}
    page.locator("#composite").get_by_text("NDVI").click()
    expect(page.locator("#composite-description")).to_contain_text("RdYlGn")
    for panel in redrawn:
        expect(page.locator(f"#{panel} img").first).not_to_have_attribute("src", before[panel])

    # A click on a panel: the spectrum at that pixel, one trace per image; the pixel is marked.
    unmarked = _image(page, "opt-v1-image").get_attribute("src")
    target = _image(page, "opt-v2-image")
    box = target.bounding_box()
    target.click(position={"x": box["width"] * 0.3, "y": box["height"] * 0.6})
    spectrum = page.locator("#spectrum")
    expect(spectrum.locator(".js-plotly-plot")).to_be_visible()
    expect(spectrum.locator(".scatterlayer .trace")).to_have_count(4)  # opt_v1, opt_v2, opt_v3, reference
    expect(spectrum).to_contain_text("Spectrum at row")
    expect(page.locator("#opt-v1-image img").first).not_to_have_attribute("src", unmarked)

    # A month mini's stage 2 never saw in training, typed in, then Translate: the page warns.
    pipeline, _ = handlers.load_pipeline("mini")
    seen = set(pipeline.stage2.config.seen_months)
    unseen = min(set(range(1, 13)) - seen)
    if bundled[0].pair.month in seen:
        expect(page.locator("#conditioning-warning")).not_to_contain_text("Warning:")
    page.locator("#month input").fill(str(unseen))
    page.locator("#translate-button").click()
    expect(page.locator("#conditioning-warning")).to_contain_text("Warning:")
    expect(page.locator("#conditioning-warning")).to_contain_text(f"month {unseen} not seen in training")

    # The uncertainty option: Translate again, the map shows; the variant means swap the optical panels.
    expect(page.locator("#uncertainty-image")).to_be_hidden()
    page.locator("#uncertainty input").check()
    page.locator("#translate-button").click()
    expect(_image(page, "uncertainty-image")).to_be_visible()
    expect(page.locator("#uncertainty-colour-bar img").first).to_be_visible()
    plain = _image(page, "opt-v3-image").get_attribute("src")
    page.locator("#show-mean input").check()
    expect(page.locator("#opt-v3-image img").first).not_to_have_attribute("src", plain)

    page.get_by_role("tab", name="Evaluation").click()
    expect(page.locator("#ablation-table")).to_contain_text("v1+v2+v3")
    expect(page.locator("#ablation-table")).to_contain_text("uncertainty-error r_s")
    charts = page.locator(".js-plotly-plot").filter(visible=True)  # not the spectrum on the hidden tab
    expect(charts.first).to_be_visible()
    expect(charts).to_have_count(6)  # PSNR vs sharpness, PSNR, SSIM, SAM, SAR-edge and the per-tile distribution
    expect(page.locator("#paired-table")).to_contain_text("v1+v2 - v1")
    expect(page.get_by_text("untrained model").first).to_be_visible()
