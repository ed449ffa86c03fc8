"""The control nodes in a real ComfyUI 0.3.75 (tests/comfy_harness.py): the shipped
``audio_only_alive`` template (portrait + speech -> lips, idle blinks, head sway) runs and gives the
same frames as pdfgc_core in this process; Pose from Angles -> Pose Readout through the server;
bad keyframes end in an execution error with our message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from comfy_harness import build_workflows_module

from pdfgc_core import audio as core_audio
from pdfgc_core import factors as F
from pdfgc_core import images, provenance
from pdfgc_core.checkpoints import load_models
from pdfgc_core.control import idle, pose
from pdfgc_core.engine import Engine

pytestmark = pytest.mark.comfyui

REPO = Path(__file__).resolve().parents[1]
CKPT = "pdfgc-synthetic.safetensors"
MAX_SECONDS = 0.4  # 7 frames at 25 fps
TAP = "PDFGCHarnessSaveTensor"
NAME = "audio_only_alive"

bw = build_workflows_module()


@pytest.fixture(scope="module")
def checkpoint():
    from pdfgc_synthetic import synthetic_checkpoint

    return synthetic_checkpoint()


@pytest.fixture(scope="module")
def server(comfy_server, checkpoint, tmp_path_factory):
    comfy_server.add_model(checkpoint, CKPT)
    staging = tmp_path_factory.mktemp("control-inputs")
    for name in bw.write_workflow_inputs(staging, names=bw.workflow_inputs()[NAME]):
        comfy_server.add_input(staging / name, name)
    return comfy_server


@pytest.fixture(scope="module")
def engine(checkpoint):
    return Engine(load_models(checkpoint), precision="fp32", impl="fast")


def tap(prompt: dict, node: str, output: int = 0) -> str:
    tap_id = f"tap_{node}_{output}"
    prompt[tap_id] = {"class_type": TAP, "inputs": {"value": [node, output], "name": tap_id}}
    return tap_id


def node_of(prompt: dict, class_type: str) -> str:
    (node,) = [k for k, v in prompt.items() if v["class_type"] == class_type]
    return node


def test_audio_only_alive_runs_and_equals_core(server, engine):
    from comfy_harness import saved_tensors

    path = REPO / "example_workflows" / f"{NAME}.json"
    prompt = bw.ui_to_api(json.loads(path.read_text()), server.object_info())
    assert bw.normalise(prompt) == bw.normalise(bw.GRAPHS[NAME]["graph"]), f"{path.name} is stale: rebuild it"
    assert not any(n["class_type"].startswith("PDFGC_Encode") and "Pose" in n["class_type"] for n in prompt.values())
    prompt[node_of(prompt, "PDFGC_LoadModel")]["inputs"]["checkpoint"] = CKPT
    lips = node_of(prompt, "PDFGC_EncodeLips")
    prompt[lips]["inputs"]["max_seconds"] = MAX_SECONDS
    blinks, sway = node_of(prompt, "PDFGC_IdleBlinks"), node_of(prompt, "PDFGC_HeadSway")
    gen = node_of(prompt, "PDFGC_Generate")
    for node in (gen, blinks, sway, node_of(prompt, "LoadImage"), node_of(prompt, "LoadAudio")):
        tap(prompt, node)
    entry = server.wait(server.queue(prompt), timeout=900)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:4000]
    taps = saved_tensors(server, entry)

    g = prompt
    audio = taps[f"tap_{node_of(g, 'LoadAudio')}_0"]
    li = g[lips]["inputs"]
    windows = core_audio.audio_to_windows(
        audio["waveform"][0], audio["sample_rate"], fps=li["fps"], quality=li["quality"], max_seconds=MAX_SECONDS
    )
    mouth = engine.encode_mouth(windows, fps=li["fps"])
    n = len(mouth)
    b = g[blinks]["inputs"]
    eye = idle.idle_blinks(
        n, idle.sample_blink_shape(engine), rate=b["rate"], seed=b["seed"], duration=b["duration"], depth=b["depth"]
    ).factor
    s = g[sway]["inputs"]
    env = idle.speech_envelope(audio["waveform"][0].numpy(), audio["sample_rate"], n, li["fps"])
    head = idle.head_sway(
        n,
        idle.encode_sample(engine, "pose"),
        amplitude=s["amplitude"],
        speed=s["speed"],
        seed=s["seed"],
        center=s["center"],
        envelope=env,
        liveliness=s["liveliness"],
    )
    got_eye, got_pose = taps[f"tap_{blinks}_0"], taps[f"tap_{sway}_0"]
    assert got_eye["kind"] == "eye" and torch.equal(got_eye["values"], eye.values)
    assert got_pose["kind"] == "pose" and torch.equal(got_pose["values"], head.values)
    assert float(head.values.std(0).max()) > 0  # the head moves

    app = engine.encode_appearance(
        images.prepare_batch(images.comfy_to_u8(taps[f"tap_{node_of(g, 'LoadImage')}_0"]), crop="official")
    )
    motion = F.assemble_motion(n, mouth=mouth, eye=eye, pose=head)
    generated = engine.generate_all(app, motion, batch_size=g[gen]["inputs"]["batch_size"])
    expected = provenance.embed(images.network_to_comfy(generated))  # Generate marks its frames
    frames = taps[f"tap_{gen}_0"]
    assert frames.shape == expected.shape == (n, 224, 224, 3)
    assert torch.equal(frames, expected), f"max abs diff {(frames - expected).abs().max():.3g}"
    assert [f for f in server.output_files(entry) if f.suffix == ".mp4"]


def test_pose_nodes_through_the_server(server):
    from comfy_harness import execution_error, saved_tensors

    keys = "0: 0,0,0; 0.4s: 12,-6,3 ease; 20: 0,0,0,0.02,0,0"
    prompt = {
        "1": {
            "class_type": "PDFGC_PoseFromAngles",
            "inputs": {
                "pitch": 0.0,
                "yaw": 0.0,
                "roll": 0.0,
                "x": 0.0,
                "y": 0.0,
                "z": 0.0,
                "length": 0,
                "fps": 25.0,
                "keyframes": keys,
                "curve": "linear",
            },
        },
        "2": {"class_type": "PDFGC_LoadPoseMap", "inputs": {"file": "assumed (uncalibrated)"}},
        "3": {"class_type": "PDFGC_PoseReadout", "inputs": {"pose": ["1", 0], "pose_map": ["2", 0]}},
    }
    for node, out in (("1", 0), ("3", 0), ("3", 1)):
        tap(prompt, node, out)
    taps = saved_tensors(server, server.run(prompt, timeout=120))
    controls = pose.keyframe_controls(pose.parse_keyframes(keys, 25.0), curve="linear")
    assert torch.equal(taps["tap_1_0"]["values"], pose.assumed_pose_map().to_factor(controls).values)
    assert taps["tap_3_0"].shape == (1, 420, 640, 3)
    rows = np.array([[float(v) for v in line.split(",")[2:]] for line in taps["tap_3_1"].splitlines()[1:]])
    assert np.allclose(rows, controls, atol=1e-3)

    prompt["1"]["inputs"]["keyframes"] = "0: 0,0,0; 1s: 1,2"
    entry = server.wait(server.queue(prompt), timeout=120)
    err = execution_error(entry)
    assert err["node_id"] == "1" and err["exception_type"].endswith("InputError")
    assert err["exception_message"].startswith("PD-FGC Pose from Angles: keyframe 2")
