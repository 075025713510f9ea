"""Debian's Chromium, headless, driven by Playwright (never a browser download), against the real stack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, Request, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
# The flags; Playwright adds --headless and a fresh temporary --user-data-dir per launch, and
# every context below is a profile of its own (own IndexedDB and sessionStorage).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
TABLET = {"width": 768, "height": 1024}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            yield launched
        finally:
            await launched.close()


class Console:
    """One person's browser profile at the console, recording what the page complains about."""

    def __init__(self, context: BrowserContext, page: Page) -> None:
        self.context = context
        self.page = page
        self.complaints: list[str] = []
        self.sent: list[str] = []  # every request body the page sent, to show what leaves the browser
        self._unchanged: set[str] = set()
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.complaints.append(f"page error: {error}"))
        page.on("request", lambda request: self.sent.append(request.post_data or ""))
        page.on(
            "response", lambda response: self._unchanged.add(response.url) if response.status == 304 else None
        )
        page.on("requestfailed", self._failed)

    def _failed(self, request: Request) -> None:
        # Chromium reports the missing body of a 304 (the board polling with If-None-Match) as aborted.
        if not (request.failure == "net::ERR_ABORTED" and request.url in self._unchanged):
            self.complaints.append(f"failed: {request.url} {request.failure}")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" or "Content Security Policy" in message.text:
            self.complaints.append(f"{message.text} ({message.location.get('url')})")


@pytest.fixture
async def open_console(browser: Browser) -> AsyncIterator[object]:
    contexts: list[BrowserContext] = []

    async def open_(url: str, viewport: dict[str, int] = DESKTOP) -> Console:
        context = await browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        contexts.append(context)
        page = await context.new_page()
        page.set_default_timeout(15_000)
        console = Console(context, page)
        await page.goto(url)
        return console

    yield open_
    for context in contexts:
        await context.close()
