"""The pack inside a real ComfyUI 0.3.75 server (see tests/comfy_harness), plus the import
contract of the pack's entry files and its registry metadata (no server needed).

Tests of ComfyUI itself and of the harness are in test_comfyui_harness.py (opt-in: --harness)."""

import json
import subprocess
import sys
import textwrap

import pytest
from comfy_harness import PACK_NAME, example_workflows
from testenv import REPO, scaled

EXAMPLE_WORKFLOWS = example_workflows()

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
        timeout=scaled(300),
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
@pytest.mark.parametrize("path", EXAMPLE_WORKFLOWS, ids=lambda p: p.name)
def test_example_workflow_is_listed_and_served(comfy_server, path):
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
        timeout=scaled(120),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    config = json.loads(r.stdout)
    assert config["tool_comfy"]["display_name"] == PACK_NAME
    assert config["tool_comfy"]["publisher_id"]
    assert config["project"]["supported_comfyui_version"].startswith(">=")
