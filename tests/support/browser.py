"""The dashboard in a real browser: Debian's chromium (`make browser`) driven by Playwright, its own
browser download unused. `dashboard_page` opens one page on a stack's gateway; `shot` saves a
screenshot in .cache/test-artifacts/dashboard/ (docs/img/dashboard-*.png are copies of them)."""

import contextlib
import os

from playwright.sync_api import sync_playwright

from helpers import ROOT

ARTIFACTS = os.path.join(ROOT, ".cache", "test-artifacts", "dashboard")
CHROMIUM = "/usr/bin/chromium"  # Debian's package


@contextlib.contextmanager
def dashboard_page(env):
    """A page of a fresh headless chromium (1280x860), `page.base` the gateway's dashboard address of
    the stack's `env`; on leaving, fails if a script error was raised in the page."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 860}, device_scale_factor=1)
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.base = f"http://{env['COOKLINE_GATEWAY_HTTP_ADDR']}"
        yield page
        browser.close()
        assert not errors, f"script errors in the page: {errors}"


def shot(page, name):
    """Saves the whole page as ARTIFACTS/<name>.png."""
    page.screenshot(path=os.path.join(ARTIFACTS, f"{name}.png"), full_page=True)
