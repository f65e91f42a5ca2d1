"""Dashboard fixtures: a real registry with two real model versions, users of every role, a real
server on 127.0.0.1, and (for the browser tests) Debian's Chromium driven by Playwright.

``browser`` installs Chromium with ``scripts/browser.sh`` once per session. Without it the
browser tests are skipped with a loud line; ``SLIPWAY_TEST_BROWSER_REQUIRED=1`` (``make test``)
makes that a failure instead. Screenshots go to ``test-artifacts/ui/`` (or
``SLIPWAY_TEST_ARTIFACTS``/ui).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from slipway.governance.identities import create_user, issue_token
from slipway.local import Registry
from slipway.server import BackgroundServer
from slipway.settings import Settings

from ..conftest import REPO
from ..serving.conftest import cancer, cancer_models, make_settings

__all__ = ["cancer", "cancer_models"]  # fixtures shared with tests/serving

ROLES = {
    "viewer": "viewer",
    "deployer": "deployer",
    "approver": "approver",
    "approver2": "approver",
    "admin": "admin",
}


@pytest.fixture
def ui_settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path / "home",
        reconcile_interval_s=0.1,
        token_refresh_s=0.2,
        audit_flush_interval_s=0.05,
        monitor_interval_s=0.25,  # the overview's numbers move within a fraction of a second
        evidence_flush_interval_s=0.2,
        drift_interval_s=0.5,
        rollout_interval_s=3600.0,  # rollouts move only when the test (through the UI) says so
    )


@pytest.fixture
def ui_registry(ui_settings: Settings, cancer, cancer_models) -> Iterator[Registry]:
    x, _ = cancer
    with Registry(ui_settings) as registry:
        for estimator in cancer_models:
            registry.register_sklearn(
                "cancer",
                estimator,
                x,
                metrics={"accuracy": 0.95},
                hyperparameters={"C": getattr(estimator[-1], "C", None)},
                training_data="s3://bucket/cancer.parquet",
            )
        registry.store.create_deployment("cancer-prod", "cancer", 1)
        yield registry


@pytest.fixture
def users(ui_registry: Registry) -> dict[str, str]:
    """Role name (and ``approver2``) -> a token of a user named after it."""
    tokens = {}
    for name, role in ROLES.items():
        create_user(ui_registry.store, name, role, actor="fixture")
        tokens[name] = issue_token(ui_registry.store, name, actor="fixture").token
    return tokens


@pytest.fixture
def ui_server(ui_settings: Settings, ui_registry: Registry, users) -> Iterator[BackgroundServer]:
    with BackgroundServer(ui_settings) as server:
        yield server
    server.app.store.close()


@pytest.fixture
def session(ui_server: BackgroundServer, users) -> Iterator[Callable[..., httpx.Client]]:
    """``session("viewer")``: an HTTP client signed in to the dashboard as that user (cookie
    set by the real sign-in form); ``session()``: not signed in."""
    opened: list[httpx.Client] = []

    def make(user: str | None = None) -> httpx.Client:
        http = httpx.Client(base_url=ui_server.url, timeout=30)
        opened.append(http)
        if user is not None:
            response = http.post(
                "/ui/signin",
                data={"token": users[user], "next": "/ui"},
                headers={"origin": ui_server.url},
            )
            assert response.status_code == 303, response.text
        return http

    yield make
    for http in opened:
        http.close()


def csrf_of(page_html: str) -> str:
    """The CSRF token a rendered page carries in its forms."""
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page_html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


# -- the browser -------------------------------------------------------------------------------


def _no_browser(request: pytest.FixtureRequest, why: str) -> NoReturn:
    line = f"!!!!! BROWSER TESTS NOT RUN: {why} !!!!!"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(line, red=True, bold=True)
    if os.environ.get("SLIPWAY_TEST_BROWSER_REQUIRED"):
        pytest.fail(line, pytrace=False)
    pytest.skip(line)


@pytest.fixture(scope="session")
def chromium_path(request: pytest.FixtureRequest) -> str:
    """Debian's Chromium, installed by ``scripts/browser.sh`` when missing (session-wide)."""
    try:
        found = subprocess.run(
            ["bash", str(REPO / "scripts" / "browser.sh")],
            capture_output=True,
            text=True,
            timeout=900,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _no_browser(request, f"scripts/browser.sh did not run: {exc}")
    if found.returncode != 0 or not found.stdout.strip():
        _no_browser(request, f"scripts/browser.sh found no browser: {found.stderr.strip()}")
    return found.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest, chromium_path: str) -> Iterator[Any]:
    """A headless Chromium (Playwright's Python package driving Debian's browser).

    Module-scoped: while Playwright's sync API runs, its event loop counts as running in the
    main thread, and every later test that calls ``asyncio.run`` there would fail.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _no_browser(request, f"the playwright package is not installed: {exc}")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(
                executable_path=chromium_path,
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            )
        except Exception as exc:  # any launch failure means "no usable browser"
            _no_browser(request, f"chromium did not start: {exc}")
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go (ignored by git)."""
    base = Path(os.environ.get("SLIPWAY_TEST_ARTIFACTS", REPO / "test-artifacts"))
    folder = base / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def signed_in(browser, ui_server: BackgroundServer, users, artifacts: Path):
    """``signed_in("approver")``: a fresh browser page signed in as that user through the real
    sign-in form. Confirmation dialogs are accepted."""
    contexts: list[Any] = []

    def make(user: str, path: str = "/ui") -> Any:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(ui_server.url + path)
        shoot(page, artifacts, "signin")
        page.fill("#token", users[user])
        page.click("#signin")
        page.wait_for_selector("#whoami")
        assert page.inner_text("#whoami") == f"{user} · {ROLES[user]}"
        return page

    yield make
    for context in contexts:
        context.close()


def shoot(page: Any, artifacts: Path, name: str) -> None:
    """Save a full-page screenshot as a test artifact."""
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
