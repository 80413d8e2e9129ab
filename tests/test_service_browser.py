"""The example service's page in a real browser: headless Chromium driven by Playwright.

Uses the system's Chromium (Debian's ``chromium`` package), never a browser downloaded by
Playwright. Without one the test is skipped, saying why; with ``AIOMR_REQUIRE_BROWSER=1``
(set by CI) it fails instead.
"""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

from examples.service.app import Settings

from .test_service import DEADLINE, make_text, running_service, top20

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> tuple[str | None, str]:
    """Return ``(executable, "")``, or ``(None, why not)``."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return None, "the playwright package is not installed (pip install '.[service]')"
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found is not None:
            return found, ""
    return None, "no Chromium found on PATH (Debian: apt-get install chromium)"


def require_chromium() -> str:
    """Return the Chromium to drive; skip the test without one (fail if one is required)."""
    executable, reason = find_chromium()
    if executable is None:
        if os.environ.get("AIOMR_REQUIRE_BROWSER") == "1":
            pytest.fail(f"AIOMR_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return executable


async def test_page_shows_the_final_top_20(
    tmp_path: pathlib.Path, nothing_left_running: None
) -> None:
    chromium = require_chromium()
    from playwright.async_api import Page, async_playwright, expect

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # Typed into the text area: short, as Playwright's fill() of a long multi-line text
    # stalls on some Chromium versions.
    typed, typed_counts = make_text(120, seed=8)
    # Uploaded: long enough for many chunks, so the table moves before it settles.
    uploaded, uploaded_counts = make_text(40_000, seed=9)
    upload = tmp_path / "words.txt"
    upload.write_text(uploaded)
    settings = Settings(data_dir=data_dir, workers=2, split_bytes=64 * 1024, grace=1.0)
    screenshot = tmp_path / "service-page.png"
    timeout_ms = DEADLINE * 1000

    async def shown_table(page: Page) -> list[tuple[str, str]]:
        rows = page.locator("#top tbody tr")
        await expect(rows).to_have_count(20, timeout=timeout_ms)
        return [
            (await row.locator("td.word").inner_text(), await row.locator("td.count").inner_text())
            for row in await rows.all()
        ]

    async with running_service(settings) as running, async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium,
            headless=True,
            # Loopback only: no proxy, whatever the environment says.
            args=["--no-proxy-server"],
        )
        try:
            page = await browser.new_page(viewport={"width": 1000, "height": 1100})
            page.set_default_timeout(timeout_ms)
            await page.goto(running.url + "/")
            status = page.locator("#status")
            await expect(status).to_have_text("idle")

            await page.fill("#text", typed)
            await page.click("#start")
            await expect(status).to_have_text("done", timeout=timeout_ms)
            typed_table = await shown_table(page)

            await page.set_input_files("#file", upload)
            await page.click("#start")
            # The end of this job, not the previous one: all its lines are counted.
            await expect(page.locator("#records")).to_have_text("40,000", timeout=timeout_ms)
            await expect(status).to_have_text("done", timeout=timeout_ms)
            uploaded_table = await shown_table(page)
            await page.screenshot(path=str(screenshot), full_page=True)
        finally:
            await browser.close()
    assert typed_table == [(word, f"{count:,}") for word, count in top20(typed_counts)]
    assert uploaded_table == [(word, f"{count:,}") for word, count in top20(uploaded_counts)]
    assert screenshot.stat().st_size > 0
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {screenshot}")
