"""Every shipped workflow in the real ComfyUI frontend (headless Chromium, Debian packages):
it loads with no missing node types, and the graph the frontend builds from it is accepted
by /prompt. Generic over example_workflows/*.json (UI format)."""

import json
from pathlib import Path

import pytest

pytest_plugins = ["comfy_harness"]  # comfy_server; import the module inside tests only

pytestmark = [pytest.mark.comfyui, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))

# Selenium turns `undefined` into null, which the frontend rejects: pass the workflow as a string.
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


@pytest.fixture(scope="module")
def browser(comfy_server):
    """Chromium showing the server's frontend, after window.app exists."""
    from comfy_harness import ComfyUIUnavailable, ensure_chromium, open_frontend, unavailable

    try:
        ensure_chromium()
    except ComfyUIUnavailable as exc:
        unavailable(f"no headless Chromium: {exc}")
    with open_frontend(comfy_server.url) as driver:
        yield driver


def load_in_frontend(browser, workflow: dict) -> dict:
    result = browser.execute_async_script(LOAD_AND_CONVERT, json.dumps(workflow))
    assert "error" not in result, f"the frontend could not load the workflow:\n{result['error']}"
    return result


def assert_loads_and_is_accepted(browser, server, workflow: dict, name: str) -> None:
    from comfy_harness import build_workflows_module, stage_inputs

    build_workflows_module().write_workflow_inputs(server.input_dir)  # driver videos the workflows load
    result = load_in_frontend(browser, workflow)
    assert result["nodes"] == len(workflow["nodes"])
    assert result["missing"] == [], f"{name}: node types unknown to the frontend: {result['missing']}"
    stage_inputs(server, result["output"])  # files the graph names (LoadImage ...) from samples/
    response = server.submit(result["output"])
    assert response.status_code == 200, f"{name}: /prompt rejected the frontend's graph: {response.text[:4000]}"
    server.cancel(response.json()["prompt_id"])  # accepted is what is tested here; do not execute


def test_frontend_knows_every_pack_node(browser, comfy_server):
    registered = set(browser.execute_script("return Object.keys(LiteGraph.registered_node_types)"))
    missing = set(comfy_server.pack_nodes()) - registered
    assert not missing, f"pack nodes missing from the frontend: {sorted(missing)}"


def test_harness_workflow_round_trips(browser, comfy_server):
    """The check below on a known-good workflow, so it is exercised while example_workflows/ is empty."""
    from comfy_harness import HARNESS_WORKFLOW

    assert_loads_and_is_accepted(browser, comfy_server, HARNESS_WORKFLOW, "harness_sleep.json")


def test_unknown_node_type_is_reported_missing(browser):
    from comfy_harness import HARNESS_WORKFLOW

    workflow = json.loads(json.dumps(HARNESS_WORKFLOW))
    workflow["nodes"][0]["type"] = "PDFGC_NoSuchNode"
    assert load_in_frontend(browser, workflow)["missing"] == ["PDFGC_NoSuchNode"]


@pytest.mark.parametrize("path", EXAMPLE_WORKFLOWS or [None], ids=lambda p: p.name if p else "none")
def test_example_workflow_loads_and_is_accepted(browser, comfy_server, path):
    from comfy_harness import is_ui_workflow

    if path is None:
        pytest.skip(f"no example workflows in {REPO / 'example_workflows'} yet")
    workflow = json.loads(path.read_text())
    assert is_ui_workflow(workflow), (
        f"{path.name} is not a UI-format workflow (nodes + links), as saved by the frontend"
    )
    assert_loads_and_is_accepted(browser, comfy_server, workflow, path.name)
