"""The shipped example workflows in tests: where they are, their source (scripts/build_workflows.py)
and the input files they name."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

from testenv import REPO

from .browser import load_in_frontend
from .server import ComfyServer


def example_workflows() -> list[Path]:
    """The shipped workflows (UI format), example_workflows/*.json."""
    return sorted((REPO / "example_workflows").glob("*.json"))


def is_ui_workflow(data: Any) -> bool:
    """A workflow as the frontend saves it (nodes + links), not the API format."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


@functools.cache
def build_workflows_module():
    """scripts/build_workflows.py as a module (the single source of the example workflows and of
    the input files they load)."""
    spec = importlib.util.spec_from_file_location("build_workflows", REPO / "scripts" / "build_workflows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stage_inputs(server: ComfyServer, api_prompt: dict, roots: tuple[Path, ...] = (REPO / "samples",)) -> list[str]:
    """Copy every file an API-format graph names by a string input (e.g. LoadImage's "image")
    from ``roots`` (matched by relative path, then by file name) into the server's input/."""
    staged = []
    index: dict[str, Path] = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                index.setdefault(p.relative_to(root).as_posix(), p)
                index.setdefault(p.name, p)
    for node in api_prompt.values():
        for value in node.get("inputs", {}).values():
            if isinstance(value, str):
                key = value.split(" [")[0]  # "name.png [input]" annotations
                if key in index:
                    staged.append(server.add_input(index[key], key))
    return staged


def check_frontend_accepts(driver, server: ComfyServer, workflow: dict, name: str) -> None:
    """A UI-format workflow loads in the frontend with every node type known, and /prompt accepts
    the graph the frontend builds from it (then it is cancelled: accepted is what is checked).
    Raises AssertionError naming ``name`` otherwise."""
    build_workflows_module().write_workflow_inputs(server.input_dir)  # driver videos the workflows load
    result = load_in_frontend(driver, workflow)
    if result["nodes"] != len(workflow["nodes"]):
        raise AssertionError(f"{name}: the frontend loaded {result['nodes']} of {len(workflow['nodes'])} nodes")
    if result["missing"]:
        raise AssertionError(f"{name}: node types unknown to the frontend: {result['missing']}")
    stage_inputs(server, result["output"])  # files the graph names (LoadImage ...) from samples/
    response = server.submit(result["output"])
    if response.status_code != 200:
        raise AssertionError(f"{name}: /prompt rejected the frontend's graph: {response.text[:4000]}")
    server.cancel(response.json()["prompt_id"])
