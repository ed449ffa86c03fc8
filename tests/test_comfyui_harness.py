"""Self-tests of the test harness and of ComfyUI itself (not of this pack): core nodes run and
validate, progress / errors / interrupts reach the client, the harness's tensor taps are exact,
templates are served, and the frontend check notices unknown node types.

Opt-in (marker ``harness``): ``python -m pytest --harness -m harness`` or PDFGC_TEST_HARNESS=1.
Run them after changing tests/comfy_harness or the pinned ComfyUI.
"""

import json

import pytest
import torch
from comfy_harness import (
    HARNESS_PACK,
    HARNESS_WORKFLOW,
    PromptRejected,
    check_frontend_accepts,
    execution_error,
    load_in_frontend,
)
from comfy_harness.plugin import SYNTHETIC_MODEL

pytestmark = [pytest.mark.harness, pytest.mark.comfyui]


def test_server_loads_the_harness_nodes(comfy_server):
    assert comfy_server.object_info("PDFGCHarnessSleep")["python_module"] == f"custom_nodes.{HARNESS_PACK}"


def test_core_prompt_runs_to_success(comfy_server):
    from PIL import Image

    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 2, "color": 255}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "smoke/core"}},
    }
    entry = comfy_server.run(prompt, timeout=60)
    files = comfy_server.output_files(entry)
    assert len(files) == 2
    for f in files:
        with Image.open(f) as im:
            assert im.size == (32, 24) and im.getpixel((0, 0))[:3] == (0, 0, 255)


@pytest.mark.parametrize(
    "inputs, error",
    [
        ({"width": 0, "height": 24, "batch_size": 1, "color": 0}, "value_smaller_than_min"),
        ({"height": 24, "batch_size": 1, "color": 0}, "required_input_missing"),
    ],
)
def test_validation_error_is_http_400_with_node_errors(comfy_server, inputs, error):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": inputs},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "smoke/bad"}},
    }
    with pytest.raises(PromptRejected) as info:
        comfy_server.queue(prompt)
    assert info.value.status == 400
    assert [e["type"] for e in info.value.node_errors["1"]["errors"]] == [error]


def test_progress_execution_error_and_interrupt_reach_the_client(comfy_server):
    pid = comfy_server.queue({"1": {"class_type": "PDFGCHarnessSleep", "inputs": {"steps": 4, "seconds_per_step": 0}}})
    assert comfy_server.wait(pid)["status"]["status_str"] == "success"
    assert [m["data"]["value"] for m in comfy_server.ws.messages("progress", pid)] == [1, 2, 3, 4]

    pid = comfy_server.queue({"1": {"class_type": "PDFGCHarnessFail", "inputs": {"message": "no face in frame 3"}}})
    err = execution_error(comfy_server.wait(pid))
    assert (err["node_id"], err["exception_type"], err["exception_message"].strip()) == (
        "1",
        "ValueError",
        "no face in frame 3",
    )

    pid = comfy_server.queue(
        {"1": {"class_type": "PDFGCHarnessSleep", "inputs": {"steps": 10000, "seconds_per_step": 0.01}}}
    )
    comfy_server.ws.wait_for(lambda m: m["type"] == "progress" and m["data"].get("prompt_id") == pid, timeout=60)
    comfy_server.interrupt(pid)
    kinds = [kind for kind, _ in comfy_server.wait(pid, timeout=30)["status"]["messages"]]
    assert "execution_interrupted" in kinds


def test_workflow_templates_route_serves_custom_node_examples(comfy_server):
    listing = comfy_server.get("/workflow_templates").json()
    assert listing[HARNESS_PACK] == ["harness_sleep"]
    served = comfy_server.get(f"/api/workflow_templates/{HARNESS_PACK}/harness_sleep.json")
    assert served.status_code == 200 and served.json() == HARNESS_WORKFLOW


def test_harness_tensor_nodes_pass_values_exactly(comfy_server):
    """PDFGCHarnessLoadTensor / SaveTensor move exact values in and out of a graph (for comparing
    node results with pdfgc_core run in the test process)."""
    images = torch.rand(2, 8, 6, 3, generator=torch.Generator().manual_seed(0))
    audio = {"waveform": torch.randn(1, 2, 1600, generator=torch.Generator().manual_seed(1)), "sample_rate": 16000}
    prompt = {
        "1": {
            "class_type": "PDFGCHarnessLoadTensor",
            "inputs": {"file": comfy_server.put_tensor(images, "smoke/images.pt")},
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PDFGCHarnessSaveTensor", "inputs": {"value": ["2", 0], "name": "inverted"}},
        "4": {
            "class_type": "PDFGCHarnessLoadTensor",
            "inputs": {"file": comfy_server.put_tensor(audio, "smoke/audio.pt")},
        },
        "5": {"class_type": "PDFGCHarnessSaveTensor", "inputs": {"value": ["4", 0], "name": "audio"}},
    }
    saved = comfy_server.saved_tensors(comfy_server.run(prompt, timeout=60))
    assert torch.equal(saved["3"], 1.0 - images)
    assert saved["5"]["sample_rate"] == 16000 and torch.equal(saved["5"]["waveform"], audio["waveform"])


def test_default_model_is_listed(comfy_server, comfy_models):
    assert comfy_models.keys() == {SYNTHETIC_MODEL}
    assert SYNTHETIC_MODEL in comfy_server.get("/models/pdfgc").json()


@pytest.mark.browser
def test_harness_workflow_round_trips_through_the_frontend(comfy_browser, comfy_server):
    """The frontend check the shipped workflows go through, on a known-good workflow."""
    check_frontend_accepts(comfy_browser, comfy_server, HARNESS_WORKFLOW, "harness_sleep.json")


@pytest.mark.browser
def test_frontend_reports_unknown_node_types(comfy_browser):
    workflow = json.loads(json.dumps(HARNESS_WORKFLOW))
    workflow["nodes"][0]["type"] = "PDFGC_NoSuchNode"
    assert load_in_frontend(comfy_browser, workflow)["missing"] == ["PDFGC_NoSuchNode"]
