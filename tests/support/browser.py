"""A real browser for the UI tests: Debian's chromium, driven by Playwright.

Playwright's own browser download does not work here, so it drives
``/usr/bin/chromium`` (``.ci/install-debian-packages``). Every page opened
through :func:`open_page` records what it asked for, what it logged and any
dialog (an ``alert`` an injected script would raise), and aborts any request
to an origin the test did not allow; chromium itself resolves no host but
loopback. :func:`axe_violations` runs axe-core, bundled in the
``axe-playwright-python`` wheel, so the accessibility check needs no network.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported when used, so that a missing Playwright only skips
    from playwright.async_api import Browser, ConsoleMessage, Dialog, Page, Route

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # Belt and braces: no host resolves but loopback ones (127.0.0.2 stands for another site).
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1,"
    " EXCLUDE 127.0.0.2",
]  # fmt: skip
VIEWPORT_WIDTH, VIEWPORT_HEIGHT = 1280, 900
# What the accessibility check holds the pages to: WCAG 2.1 A and AA, and axe's best practices.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


def require_browser() -> None:
    """Skip unless chromium and Playwright are installed."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not installed (see .ci/install-debian-packages)")
    pytest.importorskip("playwright.async_api")
    pytest.importorskip("axe_playwright_python")


@dataclass
class Traffic:
    """Everything a page did that a test may want to refuse."""

    requests: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # requests to an origin not allowed
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Refused requests, console errors (CSP violations among them), script errors, dialogs."""
        return [*self.refused, *self.console_errors, *self.page_errors, *self.dialogs]


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless chromium for one test."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


async def open_page(
    browser: Browser, allowed: Sequence[str], *, token: str | None = None,
    permissions: Sequence[str] = (),
) -> tuple[Page, Traffic]:  # fmt: skip
    """A new page in its own context; ``token`` is sent as a bearer token on every request."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    context = await browser.new_context(
        viewport={"width": VIEWPORT_WIDTH, "height": VIEWPORT_HEIGHT}, extra_http_headers=headers
    )
    if permissions:
        await context.grant_permissions(list(permissions), origin=allowed[0])
    traffic = Traffic()

    async def guard(route: Route) -> None:
        url = route.request.url
        traffic.requests.append(url)
        if url.startswith(tuple(f"{origin}/" for origin in allowed)):
            await route.continue_()
        else:
            traffic.refused.append(f"request to {url}")
            await route.abort()

    await context.route("**/*", guard)
    page = await context.new_page()
    page.on("console", lambda m: traffic.console_errors.append(m.text) if _is_problem(m) else None)
    page.on("pageerror", lambda e: traffic.page_errors.append(str(e)))

    async def dismiss(dialog: Dialog) -> None:
        traffic.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    page.on("dialog", dismiss)
    return page, traffic


def _is_problem(message: ConsoleMessage) -> bool:
    # An HTTP error status is logged as a console error too; the tests check statuses.
    return message.type == "error" and not message.text.startswith(
        "Failed to load resource: the server responded with a status of"
    )


async def axe_violations(page: Page) -> list[str]:
    """axe-core's violations of :data:`AXE_TAGS` on the page, one line each."""
    from axe_playwright_python.async_playwright import Axe

    options = {"runOnly": {"type": "tag", "values": AXE_TAGS}, "resultTypes": ["violations"]}
    results = await Axe().run(page, options=options)
    return [
        f"{v['id']}: {v['help']} ({len(v['nodes'])}x, e.g. {v['nodes'][0]['target']})"
        for v in results.response["violations"]
    ]


def screenshot_dirs(base: Path) -> list[Path]:
    """Where screenshots go: ``base``, and ``$MIRROR_UI_SCREENSHOTS`` when set (for docs)."""
    extra = os.environ.get("MIRROR_UI_SCREENSHOTS")
    return [base, *([Path(extra)] if extra else [])]


async def screenshot(page: Page, base: Path, name: str, *, full_page: bool = True) -> None:
    """Save the page (or what the window shows) as ``<name>.png`` in every folder of
    :func:`screenshot_dirs`."""
    for folder in screenshot_dirs(base):
        folder.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(folder / f"{name}.png"), full_page=full_page)
