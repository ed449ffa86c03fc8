"""What the test suite knows about the machine it runs on, and the pytest hooks that follow from it.

Plain helpers (importable anywhere under tests/, by scripts and by tests/comfy_harness):

    cache_dir()       $PDFGC_CACHE_DIR or ~/.cache/pdfgc: everything the suite caches outside the repository
    is_ci()           CI=true|1|yes: what would be skipped elsewhere (no parity folder, no ComfyUI) fails
    unavailable(why)  pytest.skip(why), or pytest.fail(why) under CI
    timeout_scale()   factor for every timeout that guards a server, a browser or a subprocess
    scaled(seconds)   seconds * timeout_scale()

Timeouts in the suite are written for a quiet machine; a busy one (other jobs on the same cores)
gets proportionally more time: the factor is the 1- or 5-minute load average (the larger) per CPU,
at least 1 and at most 10, or exactly $PDFGC_TEST_TIMEOUT_SCALE when set. It is read when a
timeout starts, so it follows the load during a long run.

As a pytest plugin (``pytest_plugins`` in conftest.py) it also
  * collects the repository root as a plain folder: the root is the pack's package (ComfyUI
    imports its __init__.py), and pytest must not import it as a test package, which fails when
    the clone's folder name is not a Python name (``ComfyUI-PD-FGC``);
  * under CI, fails a test whose parametrisation came out empty (pytest would skip it);
  * deselects the harness self-tests (marker ``harness``: tests of ComfyUI and of
    tests/comfy_harness, not of this project) unless ``--harness`` or PDFGC_TEST_HARNESS=1;
  * prints the CI mode and the timeout factor in the report header.

PYTEST_DONT_REWRITE: no assertions here; conftest.py imports this before pytest registers it.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_SCALE_ENV = "PDFGC_TEST_TIMEOUT_SCALE"
HARNESS_ENV = "PDFGC_TEST_HARNESS"
MAX_SCALE = 10.0


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes"}


def is_ci() -> bool:
    return _truthy(os.environ.get("CI"))


def cache_dir() -> Path:
    env = os.environ.get("PDFGC_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "pdfgc"


def timeout_scale() -> float:
    env = os.environ.get(TIMEOUT_SCALE_ENV, "").strip()
    if env:
        try:
            value = float(env)
        except ValueError:
            raise ValueError(f"{TIMEOUT_SCALE_ENV}={env!r} is not a number (e.g. 2 or 0.5)") from None
        if not 0 < value < float("inf"):
            raise ValueError(f"{TIMEOUT_SCALE_ENV}={env!r} must be a positive finite number")
        return value
    try:
        load = max(os.getloadavg()[:2])
    except OSError:  # not available on this platform
        return 1.0
    return min(MAX_SCALE, max(1.0, load / (os.cpu_count() or 1)))


def scaled(seconds: float) -> float:
    """``seconds`` (what the wait needs on a quiet machine) times :func:`timeout_scale`."""
    return seconds * timeout_scale()


def unavailable(reason: str):
    """Skip, or fail when CI=true: CI must not pass by silently skipping what it cannot reach."""
    import pytest

    if is_ci():
        pytest.fail(f"{reason} (CI=true: failing instead of skipping)", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------------------------------------
# pytest plugin

try:
    import pytest
except ImportError:  # used by scripts without pytest
    pytest = None

if pytest is not None:

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(path: Path, parent):
        if path == REPO:
            return pytest.Dir.from_parent(parent, path=path)
        return None

    def pytest_addoption(parser):
        parser.addoption(
            "--harness",
            action="store_true",
            default=False,
            help=f"also run the harness self-tests (marker 'harness'); same as {HARNESS_ENV}=1",
        )

    def harness_selected(config) -> bool:
        return bool(config.getoption("harness")) or _truthy(os.environ.get(HARNESS_ENV))

    def pytest_collection_modifyitems(config, items):
        if harness_selected(config):
            return
        dropped = [item for item in items if item.get_closest_marker("harness")]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = [item for item in items if not item.get_closest_marker("harness")]

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(item):
        """Under CI a parametrisation that found nothing to run (e.g. no fixtures) fails."""
        if not is_ci():
            return
        for mark in item.iter_markers("skip"):
            reason = str(mark.kwargs.get("reason", mark.args[0] if mark.args else ""))
            if reason.startswith("got empty parameter set"):
                pytest.fail(f"{item.nodeid}: {reason} (CI=true: failing instead of skipping)", pytrace=False)

    def pytest_report_header(config):
        try:
            load = "load average {:.1f}/{:.1f}/{:.1f}".format(*os.getloadavg())
        except OSError:
            load = "load average unknown"
        return (
            f"pdfgc: CI={'true' if is_ci() else 'false'}; timeout scale {timeout_scale():.1f} "
            f"({load} on {os.cpu_count()} CPUs); harness self-tests "
            f"{'on' if harness_selected(config) else 'off (--harness to run them)'}"
        )
