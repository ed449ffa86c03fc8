"""Every shipped workflow in the real ComfyUI frontend (headless Chromium, Debian packages):
it loads with no missing node types, and the graph the frontend builds from it is accepted
by /prompt. Generic over example_workflows/*.json (UI format)."""

import json

import pytest
from comfy_harness import check_frontend_accepts, example_workflows, is_ui_workflow
from comfy_harness.plugin import SYNTHETIC_MODEL
from testenv import scaled

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


# web/pdfgc_notes.js: what a PD-FGC node reports shows on the node, and never goes into the saved
# workflow or the prompt. Runs Load Model (the synthetic checkpoint) from the page itself, so the
# frontend receives the "executed" message as in a user's browser.
RUN_LOAD_MODEL = """
const [model, timeoutMs, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
(async () => {
  try {
    const graph = window.app.graph;
    graph.clear();
    const load = LiteGraph.createNode("PDFGC_LoadModel");
    graph.add(load);
    load.widgets.find((w) => w.name === "checkpoint").value = model;
    const show = LiteGraph.createNode("PreviewAny");
    graph.add(show);
    load.connect(1, show, 0);
    const values = () => graph.serialize().nodes.find((n) => n.id === load.id).widgets_values;
    const before = JSON.stringify(values());
    await window.app.queuePrompt(0, 1);
    const box = () => (load.widgets || []).find((w) => w.name === "pdfgc_notes");
    const t0 = Date.now();
    while (!box() && Date.now() - t0 < timeoutMs) await new Promise((r) => setTimeout(r, 250));
    const prompt = await window.app.graphToPrompt();
    done({
      box: box() ? box().value : null,
      color: load.color || null,
      before: before,
      after: JSON.stringify(values()),
      inputs: Object.keys(prompt.output[String(load.id)].inputs),
    });
  } catch (e) {
    done({error: String((e && e.stack) || e)});
  }
})();
"""


def test_load_model_shows_the_synthetic_warning_on_the_node(comfy_browser, comfy_server):
    r = comfy_browser.execute_async_script(RUN_LOAD_MODEL, SYNTHETIC_MODEL, int(scaled(90) * 1000))
    assert "error" not in r, r.get("error")
    assert r["box"], "no notes box appeared on Load Model after it ran"
    lines = r["box"].splitlines()
    assert lines[0].startswith("⚠") and "SYNTHETIC TEST WEIGHTS" in lines[0]  # the warning first
    assert any(line.startswith("PD-FGC: loaded") for line in lines)  # then the info
    assert r["color"] == "#7a2020"  # a node with a warning turns red
    assert r["after"] == r["before"], "the notes box changed the saved widget values"
    assert "pdfgc_notes" not in r["inputs"]
