"""pytest plugin of the harness (loaded through ``pytest_plugins = ["comfy_harness"]``): fixtures,
the comfyui marker on every test that needs the server, the server log in failure reports.

    comfy_env      session: the built ComfyEnv (skips if ComfyUI cannot be fetched, fails when CI=true)
    comfy_models   session: {name: path} linked into models/pdfgc/ before start (default: the synthetic checkpoint)
    comfy_server   session: a started ComfyServer with this repository at custom_nodes/ComfyUI-PD-FGC
    comfy_browser  module: headless Chromium showing comfy_server's frontend (Selenium WebDriver)

Tests that use them are marked ``comfyui`` (and ``browser``) automatically.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from testenv import unavailable

from .browser import ensure_chromium, open_frontend
from .env import COMFYUI_VERSION, ComfyEnv, ComfyUIUnavailable, _log, ensure_comfyui
from .server import ComfyServer, harness_nodes

SYNTHETIC_MODEL = "pdfgc-synthetic.safetensors"  # models/pdfgc/ name of the default checkpoint (comfy_models)
SERVER_FIXTURES = {"comfy_env", "comfy_server"}
BROWSER_FIXTURES = {"comfy_browser"}


def _uncaptured(request):
    capman = request.config.pluginmanager.getplugin("capturemanager")
    return capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """A test that uses the ComfyUI environment or server is a ``comfyui`` test (and one that uses
    the browser a ``browser`` test), marked or not, so ``-m "not comfyui"`` never starts a server."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixtures, marker in ((SERVER_FIXTURES | BROWSER_FIXTURES, "comfyui"), (BROWSER_FIXTURES, "browser")):
            if fixtures & used and not item.get_closest_marker(marker):
                item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(scope="session")
def comfy_env(request) -> ComfyEnv:
    with _uncaptured(request):
        try:
            return ensure_comfyui()
        except ComfyUIUnavailable as exc:
            unavailable(f"ComfyUI {COMFYUI_VERSION} cannot be fetched: {exc}")


@pytest.fixture(scope="session")
def comfy_models() -> dict[str, Path]:
    """{name: checkpoint file or folder} linked into models/pdfgc/ before the server starts.

    Default: SYNTHETIC_MODEL -> the cached synthetic checkpoint (tests/pdfgc_synthetic.py).
    Override this fixture or call ``comfy_server.add_model(path, name)`` at any time.
    """
    from pdfgc_synthetic import synthetic_checkpoint

    return {SYNTHETIC_MODEL: synthetic_checkpoint()}


@pytest.fixture(scope="session")
def comfy_server(comfy_env, comfy_models, tmp_path_factory, request) -> Iterator[ComfyServer]:
    server = ComfyServer(comfy_env, tmp_path_factory.mktemp("comfyui"), extra_nodes=harness_nodes())
    for name, src in comfy_models.items():
        server.add_model(src, name)
    with _uncaptured(request):
        _log(f"starting ComfyUI on {server.url} (base directory {server.base_dir})")
        server.start()
        _log(f"  ready in {server.startup_seconds:.1f} s")
    request.config.stash[_SERVER_KEY] = server
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def comfy_browser(comfy_server):
    """Headless Chromium showing the server's frontend, once ``window.app`` exists (one per
    module: closed when the module's tests are done)."""
    try:
        ensure_chromium()
    except ComfyUIUnavailable as exc:
        unavailable(f"no headless Chromium: {exc}")
    with open_frontend(comfy_server.url) as driver:
        yield driver


_SERVER_KEY = pytest.StashKey[ComfyServer]()
_LOG_OFFSET = pytest.StashKey[int]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    server = item.config.stash.get(_SERVER_KEY, None)
    if server is not None:
        item.stash[_LOG_OFFSET] = server.log_size()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    server = item.config.stash.get(_SERVER_KEY, None)
    if report.failed and server is not None and "comfy_server" in getattr(item, "fixturenames", ()):
        text = server.log_text(item.stash.get(_LOG_OFFSET, 0)) if report.when == "call" else server.log_tail(80)
        lines = text.splitlines()[-150:]
        report.sections.append((f"ComfyUI server log ({server.log_path})", "\n".join(lines) or "(empty)"))
