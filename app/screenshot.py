"""Screenshot of the Translate tab for the README: ``python -m app.screenshot --out docs/translate_tab.png``.

Serves the real app (``mini`` preset) on a free loopback port, opens it in headless Debian
Chromium (Playwright; as in ``tests/test_browser.py``), translates the first bundled example,
clicks a pixel of opt_v2 so the spectrum chart shows, and saves a full-page screenshot.
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
TIMEOUT_MS = 60_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def screenshot(out: Path, *, width: int = 1400) -> Path:
    from playwright.sync_api import expect, sync_playwright

    from app.ui import build_demo

    if not CHROMIUM.is_file():
        raise SystemExit(f"{CHROMIUM} is absent: install Debian's chromium package")
    demo = build_demo(warm_examples=False).queue(default_concurrency_limit=1)
    port = _free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": width, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#examples img").first.click()  # fills the form and translates
            expect(page.locator("#metrics-table")).to_contain_text("opt_v3")
            target = page.locator("#opt-v2-image img").first
            target.scroll_into_view_if_needed()
            box = target.bounding_box()
            target.click(position={"x": box["width"] * 0.3, "y": box["height"] * 0.6})
            expect(page.locator("#spectrum .js-plotly-plot")).to_be_visible()
            page.wait_for_timeout(500)  # let the chart finish drawing
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    finally:
        demo.close()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/translate_tab.png"))
    parser.add_argument("--width", type=int, default=1400, help="browser window width in px")
    args = parser.parse_args(argv)
    print(f"wrote {screenshot(args.out, width=args.width)}")


if __name__ == "__main__":
    main()
