"""Every shipped workflow in the real ComfyUI frontend (headless Chromium, Debian packages):
it loads with no missing node types, and the graph the frontend builds from it is accepted
by /prompt. Generic over example_workflows/*.json (UI format)."""

import json

import pytest
from comfy_harness import check_frontend_accepts, example_workflows, is_ui_workflow

pytestmark = [pytest.mark.comfyui, pytest.mark.browser]

EXAMPLE_WORKFLOWS = example_workflows()


def test_frontend_knows_every_pack_node(comfy_browser, comfy_server):
    registered = set(comfy_browser.execute_script("return Object.keys(LiteGraph.registered_node_types)"))
    missing = set(comfy_server.pack_nodes()) - registered
    assert not missing, f"pack nodes missing from the frontend: {sorted(missing)}"


@pytest.mark.parametrize("path", EXAMPLE_WORKFLOWS, ids=lambda p: p.name)
def test_example_workflow_loads_and_is_accepted(comfy_browser, comfy_server, path):
    workflow = json.loads(path.read_text())
    assert is_ui_workflow(workflow), (
        f"{path.name} is not a UI-format workflow (nodes + links), as saved by the frontend"
    )
    check_frontend_accepts(comfy_browser, comfy_server, workflow, path.name)
