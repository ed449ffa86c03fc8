"""Headless Chromium for the frontend tests: Debian's chromium + chromium-driver, driven by Selenium."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable

from testenv import scaled

from .env import ComfyUIUnavailable, _log

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> tuple[str, str] | None:
    browser = next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def ensure_chromium(log: Callable[[str], None] = _log) -> tuple[str, str]:
    """(browser, chromedriver) paths; installs Debian's chromium + chromium-driver if missing."""
    found = find_chromium()
    if found:
        return found
    if not shutil.which("apt-get"):
        raise ComfyUIUnavailable("chromium/chromedriver not found and no apt-get to install them")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    apt = sudo + [
        "apt-get",
        "-o",
        "DPkg::Lock::Timeout=300",
        "install",
        "-y",
        "--no-install-recommends",
        "chromium",
        "chromium-driver",
    ]
    envvars = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    t0 = time.monotonic()
    log("installing chromium + chromium-driver with apt-get")
    r = subprocess.run(apt, capture_output=True, text=True, env=envvars)
    if r.returncode != 0:
        log("apt-get install failed; running apt-get update and retrying")
        subprocess.run(sudo + ["apt-get", "-o", "DPkg::Lock::Timeout=300", "update"], capture_output=True, env=envvars)
        r = subprocess.run(apt, capture_output=True, text=True, env=envvars)
    found = find_chromium()
    if r.returncode != 0 or not found:
        raise ComfyUIUnavailable(
            f"could not install chromium with apt-get (exit {r.returncode}):\n" + (r.stderr or r.stdout)[-2000:]
        )
    log(f"  chromium installed in {time.monotonic() - t0:.0f} s")
    return found


CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--window-size=1600,1000",
)


@contextlib.contextmanager
def open_frontend(url: str, script_timeout: float = 120):
    """Headless Chromium (Selenium) showing the ComfyUI frontend at ``url``, once ``window.app`` exists.

    ``script_timeout`` (seconds on a quiet machine, scaled with the load) bounds each
    ``execute_async_script``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    chromium, chromedriver = ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        driver.set_script_timeout(scaled(script_timeout))
        driver.set_page_load_timeout(scaled(120))
        driver.get(url)
        WebDriverWait(driver, scaled(120), poll_frequency=0.25).until(
            lambda d: d.execute_script("return !!(window.app && window.app.graph && window.LiteGraph)")
        )
        yield driver
    finally:
        driver.quit()


# Selenium turns `undefined` into null, which the frontend rejects: the workflow goes in as a string.
LOAD_AND_CONVERT = """
const [text, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => {
  try {
    await window.app.loadGraphData(JSON.parse(text));
    const nodes = window.app.graph.nodes;
    const missing = nodes.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type);
    const prompt = await window.app.graphToPrompt();
    done({nodes: nodes.length, missing: missing, output: prompt.output});
  } catch (e) {
    done({error: String((e && e.stack) || e)});
  }
})();
"""


def load_in_frontend(driver, workflow: dict) -> dict:
    """Load a UI-format workflow in the page's frontend: {"nodes": count, "missing": [node types
    the frontend does not know], "output": the API-format graph ``graphToPrompt`` builds}."""
    result = driver.execute_async_script(LOAD_AND_CONVERT, json.dumps(workflow))
    if "error" in result:
        raise AssertionError(f"the frontend could not load the workflow:\n{result['error']}")
    return result
