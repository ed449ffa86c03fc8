"""The pack inside a real ComfyUI 0.3.75 server (see tests/comfy_harness.py), plus the
import contract of the pack's entry files (no server needed)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Fixtures (comfy_server, ...) and helpers come from tests/comfy_harness.py, loaded as a plugin;
# import it inside tests only (imported here first, pytest could not assertion-rewrite it).
pytest_plugins = ["comfy_harness"]

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "ComfyUI-PD-FGC"
HARNESS_PACK = "pdfgc_harness_nodes"
EXAMPLE_WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))

comfyui = pytest.mark.comfyui

LOAD_PACK_LIKE_COMFYUI = textwrap.dedent("""
    import importlib.util, json, sys
    path = sys.argv[1]
    name = path.replace(".", "_x_")  # how ComfyUI 0.3.75 names a custom-node package
    spec = importlib.util.spec_from_file_location(name, path + "/__init__.py")
    pack = importlib.util.module_from_spec(spec)
    sys.modules[name] = pack
    spec.loader.exec_module(pack)
    print(json.dumps({
        "nodes": sorted(pack.NODE_CLASS_MAPPINGS),
        "display": pack.NODE_DISPLAY_NAME_MAPPINGS,
        "functions": {k: [c.FUNCTION, hasattr(c, getattr(c, "FUNCTION", "")), callable(getattr(c, "INPUT_TYPES", None))]
                      for k, c in pack.NODE_CLASS_MAPPINGS.items()},
        "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("pdfgc_core", "nodes", "folder_paths", "comfy")),
    }))
""")


@pytest.fixture(scope="module")
def pack_exports(tmp_path_factory):
    """What the pack exports when imported the way ComfyUI imports it, in a clean interpreter
    (-P: the working directory is not on sys.path, so nothing but the pack can provide pdfgc_core)."""
    r = subprocess.run(
        [sys.executable, "-P", "-c", LOAD_PACK_LIKE_COMFYUI, str(REPO)],
        capture_output=True,
        text=True,
        cwd=tmp_path_factory.mktemp("cwd"),
        timeout=300,
    )
    assert r.returncode == 0, f"the pack does not import outside ComfyUI:\n{r.stderr[-4000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_pack_imports_outside_comfyui_with_one_core_copy(pack_exports):
    assert pack_exports["modules"] == [], (
        "importing the pack loaded top-level modules it must reach relatively (see nodes/__init__.py): "
        f"{pack_exports['modules']}"
    )
    for node, (function, has_function, has_input_types) in pack_exports["functions"].items():
        assert has_function and has_input_types, f"{node}: FUNCTION {function!r} or INPUT_TYPES missing"
    assert set(pack_exports["display"]) <= set(pack_exports["nodes"])


@comfyui
def test_server_loads_pack_and_lists_its_nodes(comfy_server, pack_exports):
    log = comfy_server.log_text()
    import_lines = [line for line in log.splitlines() if f"custom_nodes/{PACK_NAME}" in line]
    assert import_lines and not any("IMPORT FAILED" in line for line in import_lines), log[-6000:]
    assert "Unable to parse pyproject.toml" not in log

    listed = comfy_server.pack_nodes()
    assert sorted(listed) == pack_exports["nodes"]
    for node, info in listed.items():
        assert info["display_name"] == pack_exports["display"].get(node, node)
        assert info["category"], f"{node} has no category"
    # custom-node loading itself works even while the pack has no nodes yet
    assert comfy_server.object_info("PDFGCHarnessSleep")["python_module"] == f"custom_nodes.{HARNESS_PACK}"


@comfyui
def test_pdfgc_model_folder_is_registered(comfy_server, tmp_path):
    assert "pdfgc" in comfy_server.get("/models").json()
    src = tmp_path / "ckpt"
    (src / "official").mkdir(parents=True)
    for name in ("official/appearance_model.pth", "smoke.safetensors", "checkpoints.tar", "notes.txt"):
        (src / name).write_bytes(b"")
    comfy_server.add_model(src / "official", "smoke-official")
    for name in ("smoke.safetensors", "checkpoints.tar", "notes.txt"):
        comfy_server.add_model(src / name, f"smoke-{name}")
    listed = set(comfy_server.get("/models/pdfgc").json())
    assert {"smoke-official/appearance_model.pth", "smoke-smoke.safetensors", "smoke-checkpoints.tar"} <= listed
    assert "smoke-notes.txt" not in listed


@comfyui
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


@comfyui
@pytest.mark.parametrize(
    "inputs, error",
    [
        ({"width": 0, "height": 24, "batch_size": 1, "color": 0}, "value_smaller_than_min"),
        ({"height": 24, "batch_size": 1, "color": 0}, "required_input_missing"),
    ],
)
def test_validation_error_is_http_400_with_node_errors(comfy_server, inputs, error):
    from comfy_harness import PromptRejected

    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": inputs},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "smoke/bad"}},
    }
    with pytest.raises(PromptRejected) as info:
        comfy_server.queue(prompt)
    assert info.value.status == 400
    assert [e["type"] for e in info.value.node_errors["1"]["errors"]] == [error]


@comfyui
def test_progress_execution_error_and_interrupt_reach_the_client(comfy_server):
    from comfy_harness import execution_error

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


@comfyui
def test_workflow_templates_route_serves_custom_node_examples(comfy_server):
    listing = comfy_server.get("/workflow_templates").json()
    assert listing[HARNESS_PACK] == ["harness_sleep"]
    served = comfy_server.get(f"/api/workflow_templates/{HARNESS_PACK}/harness_sleep.json")
    assert served.status_code == 200 and served.json()["nodes"][0]["type"] == "PDFGCHarnessSleep"


@comfyui
@pytest.mark.parametrize("path", EXAMPLE_WORKFLOWS or [None], ids=lambda p: p.name if p else "none")
def test_example_workflow_is_listed_and_served(comfy_server, path):
    if path is None:
        pytest.skip(f"no example workflows in {REPO / 'example_workflows'} yet")
    listing = comfy_server.get("/workflow_templates").json()
    assert path.stem in listing.get(PACK_NAME, []), listing
    served = comfy_server.get(f"/api/workflow_templates/{PACK_NAME}/{path.name}")
    assert served.status_code == 200
    assert served.json() == json.loads(path.read_text())


def test_pyproject_mirrors_requirements_and_follows_registry_rules():
    import re

    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    assert project["dependencies"] == [r for r in requirements if r], "pyproject.toml and requirements.txt differ"
    name = project["name"]
    assert re.fullmatch(r"[A-Za-z](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9]))*", name) and len(name) < 100
    assert "comfyui" not in name.lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])


@comfyui
def test_comfyui_parses_pyproject(comfy_env):
    """ComfyUI's own parser (it reads pyproject.toml when it loads the pack; the registry uses the same fields)."""
    code = (
        "import json, sys; from comfy_config import config_parser; "
        "print(config_parser.extract_node_configuration(sys.argv[1]).model_dump_json())"
    )
    r = subprocess.run(
        [str(comfy_env.python), "-c", code, str(REPO)],
        cwd=comfy_env.comfy_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    config = json.loads(r.stdout)
    assert config["tool_comfy"]["display_name"] == PACK_NAME
    assert config["tool_comfy"]["publisher_id"]
    assert config["project"]["supported_comfyui_version"].startswith(">=")


@comfyui
def test_harness_tensor_nodes_pass_values_exactly(comfy_server):
    """PDFGCHarnessLoadTensor / SaveTensor move exact values in and out of a graph (for comparing
    node results with pdfgc_core run in the test process)."""
    import torch

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


@comfyui
def test_default_synthetic_weights_are_listed(comfy_server, comfy_models):
    from comfy_harness import SYNTHETIC_MODEL

    if not comfy_models:
        pytest.skip("no parity folder: the server runs without synthetic weights")
    listed = comfy_server.get("/models/pdfgc").json()
    expected = {f"{SYNTHETIC_MODEL}/{p.name}" for p in comfy_models[SYNTHETIC_MODEL].glob("*.pth")}
    assert len(expected) == 4 and expected <= set(listed)
