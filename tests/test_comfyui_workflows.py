"""The PD-FGC nodes and example workflows in a real ComfyUI 0.3.75 (tests/comfy_harness), with
the synthetic checkpoint in models/pdfgc/.

Every shipped workflow, converted to API format, runs to success and gives the same frames as the
same computation through pdfgc_core in this process (on the very inputs the server's loaders
produced, read back with the harness's tensor taps); progress reaches the client; Cancel stops a
long run; bad graphs are refused with validation errors and bad inputs end in execution errors
with our messages. Clips are kept to a few frames: the generator costs about 1 s per frame here.
"""

from __future__ import annotations

import json
import time

import pytest
import torch
from comfy_harness import PromptRejected, build_workflows_module, example_workflows, execution_error, saved_tensors
from testenv import scaled

from pdfgc_core import audio as core_audio
from pdfgc_core import factors as F
from pdfgc_core import images, media, provenance
from pdfgc_core.engine import Engine

pytestmark = pytest.mark.comfyui

# Workflows whose reference frames need more than the encoders and the generator run in their own
# tests: audio_only_alive (idle motion) in tests/test_comfyui_control.py, photo_to_talking_head
# and dub_video (faces, dubbing) in tests/test_comfyui_templates.py.
OWN_TESTS = ("audio_only_alive", "photo_to_talking_head", "dub_video")
EXAMPLE_WORKFLOWS = [p for p in example_workflows() if p.stem not in OWN_TESTS]
CKPT = "pdfgc-synthetic.safetensors"
MAX_SECONDS = 0.4  # speech kept: 7 frames at 25 fps
VIDEO_FRAMES = 8  # frames of each driving video
TAP = "PDFGCHarnessSaveTensor"


bw = build_workflows_module()


@pytest.fixture(scope="module")
def server(comfy_server, synthetic_checkpoint, tmp_path_factory):
    """The session's ComfyUI with the synthetic checkpoint and the workflows' inputs (short videos)."""
    comfy_server.add_model(synthetic_checkpoint, CKPT)
    staging = tmp_path_factory.mktemp("workflow-inputs")
    for name in bw.write_workflow_inputs(staging, max_video_frames=VIDEO_FRAMES):
        comfy_server.add_input(staging / name, name)
    return comfy_server


@pytest.fixture(scope="module")
def object_info(server):
    return server.object_info()


@pytest.fixture(scope="module")
def engine(synthetic_models):
    """The same checkpoint in this process (the session's synthetic models)."""
    return Engine(synthetic_models, precision="fp32", impl="fast")


def tapped(server, entry) -> dict:
    return saved_tensors(server, entry)


def tap(prompt: dict, node: str, output: int = 0, name: str | None = None) -> str:
    tap_id = f"tap_{node}_{output}"
    prompt[tap_id] = {"class_type": TAP, "inputs": {"value": [node, output], "name": name or tap_id}}
    return tap_id


def network(u8_or_image) -> torch.Tensor:
    """A ComfyUI IMAGE -> network tensor, the official crop (what the encoders see)."""
    return images.prepare_batch(images.comfy_to_u8(u8_or_image), crop="official")


def progress_values(server, prompt_id: str, node: str) -> list[int]:
    return [m["data"]["value"] for m in server.ws.messages("progress", prompt_id) if m["data"].get("node") == node]


def node_of(prompt: dict, class_type: str) -> str:
    (node,) = [k for k, v in prompt.items() if v["class_type"] == class_type]
    return node


# --------------------------------------------------------------------------------------- the workflows


def reference_frames(name: str, prompt: dict, taps: dict, engine: Engine) -> torch.Tensor:
    """The workflow's frames computed with pdfgc_core directly from the server's loader outputs."""
    g = prompt
    app_node = node_of(g, "PDFGC_EncodeAppearance")
    app = engine.encode_appearance(network(taps[f"tap_{g[app_node]['inputs']['image'][0]}_0"]))
    factors = {}
    if name in ("full_control", "lipsync_only"):
        audio = taps[f"tap_{node_of(g, 'LoadAudio')}_0"]
        lips = g[node_of(g, "PDFGC_EncodeLips")]["inputs"]
        windows = core_audio.audio_to_windows(
            audio["waveform"][0],
            audio["sample_rate"],
            fps=lips["fps"],
            quality=lips["quality"],
            max_seconds=lips["max_seconds"] or None,
        )
        factors["mouth"] = engine.encode_mouth(windows, fps=lips["fps"])
    if name == "full_control":
        for cls, head in (
            ("PDFGC_EncodePose", "pose"),
            ("PDFGC_EncodeEyes", "eye"),
            ("PDFGC_EncodeExpression", "expression"),
        ):
            video_components = g[node_of(g, cls)]["inputs"]["images"][0]
            frames = taps[f"tap_{video_components}_0"]
            factors.update(engine.encode_drivers(network(frames), heads=(head,)))
    if name == "expression_interpolation":
        portrait, reference = (
            taps[f"tap_{g[k]['inputs']['images'][0]}_0"]
            for k in sorted((k for k, v in g.items() if v["class_type"] == "PDFGC_EncodeExpression"), key=int)
        )
        a = engine.encode_drivers(network(portrait), heads=("expression",))["expression"]
        b = engine.encode_drivers(network(reference), heads=("expression",))["expression"]
        mix = g[node_of(g, "PDFGC_MixFactors")]["inputs"]
        weights = F.ramp(mix["length"], mix["start"], mix["end"], curve=mix["curve"])
        factors["expression"] = F.mix(a, b, weights, fit=mix["fit"])
    n = len(factors["mouth"]) if "mouth" in factors else max(len(f) for f in factors.values())
    motion = F.assemble_motion(n, **factors)  # Combine Motion's defaults are the official ones
    batch = g[node_of(g, "PDFGC_Generate")]["inputs"]["batch_size"]
    return provenance.embed(images.network_to_comfy(engine.generate_all(app, motion, batch_size=batch)))


def shortened(name: str, prompt: dict) -> dict:
    """The workflow with the synthetic checkpoint and a clip of a few frames."""
    prompt[node_of(prompt, "PDFGC_LoadModel")]["inputs"]["checkpoint"] = CKPT
    for node in prompt.values():
        if node["class_type"] == "PDFGC_EncodeLips":
            node["inputs"]["max_seconds"] = MAX_SECONDS
        if node["class_type"] == "PDFGC_MixFactors":
            node["inputs"]["length"] = 4
    return prompt


@pytest.mark.parametrize("path", EXAMPLE_WORKFLOWS, ids=lambda p: p.stem)
def test_example_workflow_runs_and_equals_core(server, object_info, engine, path):
    workflow = json.loads(path.read_text())
    prompt = bw.ui_to_api(workflow, object_info)
    assert bw.normalise(prompt) == bw.normalise(bw.GRAPHS[path.stem]["graph"]), (
        f"{path.name} differs from its source graph in scripts/build_workflows.py; run that script"
    )
    for node in prompt.values():
        assert node["class_type"] in object_info
        assert node["class_type"].startswith("PDFGC_") or object_info[node["class_type"]]["python_module"] in (
            "nodes",
            "comfy_extras.nodes_video",
            "comfy_extras.nodes_audio",
        ), f"{node['class_type']} is not a core node"

    prompt = shortened(path.stem, prompt)
    gen = node_of(prompt, "PDFGC_Generate")
    tap(prompt, gen)
    for node_id, node in list(prompt.items()):
        if node["class_type"] in ("LoadImage", "LoadAudio", "GetVideoComponents"):
            tap(prompt, node_id)
        if node["class_type"] == "PDFGC_EncodeLips":
            tap(prompt, node_id, 3)
    t0 = time.monotonic()
    pid = server.queue(prompt)
    entry = server.wait(pid, timeout=600)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:4000]
    seconds = time.monotonic() - t0
    taps = tapped(server, entry)

    frames = taps[f"tap_{gen}_0"]
    expected = reference_frames(path.stem, prompt, taps, engine)
    assert frames.shape == expected.shape and frames.shape[1:] == (224, 224, 3)
    assert torch.equal(frames, expected), f"max abs diff {(frames - expected).abs().max():.3g}"
    n = frames.shape[0]

    if any(
        n["class_type"] == "PDFGC_EncodeLips" for n in prompt.values()
    ):  # the sound for the video starts 0.08 s in, lined up with the lips
        from pdfgc_core.audio import AUDIO_LEAD_SECONDS

        lips = node_of(prompt, "PDFGC_EncodeLips")
        loaded = taps[f"tap_{prompt[lips]['inputs']['audio'][0]}_0"]
        synced = taps[f"tap_{lips}_3"]
        lead = round(AUDIO_LEAD_SECONDS * loaded["sample_rate"])
        assert torch.equal(synced["waveform"], loaded["waveform"][..., lead:])
        assert prompt[node_of(prompt, "CreateVideo")]["inputs"]["audio"] == [lips, 3]

    values = progress_values(server, pid, gen)
    assert values and values[-1] == n and values == sorted(values), values

    (mp4,) = [f for f in server.output_files(entry) if f.suffix == ".mp4"]
    info = media.probe(mp4)  # ffmpeg decodes every frame to count them
    assert info.num_frames == n
    assert info.has_audio == (path.stem != "expression_interpolation")
    assert "Requested to load ModuleDict" in server.log_text()  # ComfyUI's model management loaded our networks
    print(f"{path.stem}: {n} frames in {seconds:.1f} s")


# --------------------------------------------------------------------------------------- small graphs


def lipsync_prompt() -> dict:
    return shortened("lipsync_only", bw.api_prompt("lipsync_only"))


def test_long_run_reports_progress_and_stops_on_interrupt(server):
    prompt = lipsync_prompt()
    for k in [
        k for k, v in prompt.items() if v["class_type"] in ("LoadAudio", "PDFGC_EncodeLips", "CreateVideo", "SaveVideo")
    ]:
        del prompt[k]
    combine, gen = node_of(prompt, "PDFGC_CombineMotion"), node_of(prompt, "PDFGC_Generate")
    del prompt[combine]["inputs"]["mouth"]
    prompt[combine]["inputs"]["length"] = 300
    prompt[gen]["inputs"]["batch_size"] = 1
    tap(prompt, gen)
    pid = server.queue(prompt)
    server.ws.wait_for(
        lambda m: (
            m["type"] == "progress"
            and m["data"].get("prompt_id") == pid
            and m["data"].get("node") == gen
            and m["data"]["value"] >= 2
        ),
        timeout=300,
    )
    t0 = time.monotonic()
    server.interrupt(pid)
    entry = server.wait(pid, timeout=60)
    stopped = time.monotonic() - t0
    kinds = [kind for kind, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds and entry["status"]["status_str"] != "success"
    assert max(progress_values(server, pid, gen)) < 300
    assert progress_values(server, pid, gen)[0] == 1  # one frame per batch
    assert stopped < scaled(30), f"took {stopped:.1f} s to stop"


@pytest.mark.parametrize(
    "change, node_class, error",
    [
        (
            lambda p: p[node_of(p, "PDFGC_Generate")]["inputs"].update(batch_size=0),
            "PDFGC_Generate",
            "value_smaller_than_min",
        ),
        (
            lambda p: p[node_of(p, "PDFGC_LoadModel")]["inputs"].update(precision="fp8"),
            "PDFGC_LoadModel",
            "value_not_in_list",
        ),
        (
            lambda p: p[node_of(p, "PDFGC_EncodeLips")]["inputs"].update(max_seconds=-1.0),
            "PDFGC_EncodeLips",
            "value_smaller_than_min",
        ),
        (
            lambda p: p[node_of(p, "PDFGC_Generate")]["inputs"].pop("appearance"),
            "PDFGC_Generate",
            "required_input_missing",
        ),
        (
            lambda p: p[node_of(p, "PDFGC_Generate")]["inputs"].update(
                motion=[node_of(p, "PDFGC_EncodeAppearance"), 0]
            ),
            "PDFGC_Generate",
            "return_type_mismatch",
        ),
        (
            lambda p: p[node_of(p, "PDFGC_CombineMotion")]["inputs"].update(mouth=[node_of(p, "PDFGC_EncodeLips"), 1]),
            "PDFGC_CombineMotion",
            "return_type_mismatch",
        ),
    ],
    ids=["batch_size=0", "precision", "max_seconds<0", "no appearance", "appearance as motion", "INT as factor"],
)
def test_bad_graphs_are_refused_by_validation(server, change, node_class, error):
    prompt = lipsync_prompt()
    change(prompt)
    with pytest.raises(PromptRejected) as info:
        server.queue(prompt)
    assert info.value.status == 400
    node = node_of(prompt, node_class)
    assert error in [e["type"] for e in info.value.node_errors[node]["errors"]], info.value.node_errors


def run_to_error(server, prompt: dict) -> dict:
    entry = server.wait(server.queue(prompt), timeout=300)
    assert entry["status"]["status_str"] == "error", entry["status"]
    return execution_error(entry)


def test_missing_checkpoint_is_an_execution_error_saying_where_checkpoints_go(server):
    prompt = lipsync_prompt()
    model = node_of(prompt, "PDFGC_LoadModel")
    prompt[model]["inputs"]["checkpoint"] = "checkpoints.tar"  # what the shipped workflows name
    err = run_to_error(server, prompt)
    assert err["node_id"] == model and err["exception_type"].endswith("CheckpointError")
    msg = err["exception_message"]
    assert "'checkpoints.tar' is not in" in msg and str(server.models_dir) in msg and CKPT in msg


def test_silent_audio_is_an_execution_error(server):
    server.put_tensor({"waveform": torch.zeros(1, 2, 48000), "sample_rate": 48000}, "pdfgc_silence.pt")
    prompt = lipsync_prompt()
    prompt["audio"] = {"class_type": "PDFGCHarnessLoadTensor", "inputs": {"file": "pdfgc_silence.pt"}}
    lips = node_of(prompt, "PDFGC_EncodeLips")
    prompt[lips]["inputs"]["audio"] = ["audio", 0]
    err = run_to_error(server, prompt)
    assert err["node_id"] == lips and err["exception_type"].endswith("InputError")
    assert err["exception_message"].startswith("PD-FGC Encode Lips: audio: audio is silent")
    assert "zero the mouth factor" in err["exception_message"]


@pytest.mark.parametrize("node_class", ["PDFGC_EncodePose", "PDFGC_EncodeAppearance"])
def test_empty_image_batch_is_an_execution_error(server, node_class):
    server.put_tensor(torch.zeros(0, 224, 224, 3), "pdfgc_empty.pt")
    image_input = "images" if node_class == "PDFGC_EncodePose" else "image"
    prompt = {
        "1": {
            "class_type": "PDFGC_LoadModel",
            "inputs": {"checkpoint": CKPT, "precision": "auto", "generator_impl": "fast"},
        },
        "2": {"class_type": "PDFGCHarnessLoadTensor", "inputs": {"file": "pdfgc_empty.pt"}},
        "3": {
            "class_type": node_class,
            "inputs": {
                "model": ["1", 0],
                image_input: ["2", 0],
                "crop": "official",
                **({"skip_first": 0, "fps": 25.0} if image_input == "images" else {}),
            },
        },
    }
    tap(prompt, "3")
    err = run_to_error(server, prompt)
    assert err["node_id"] == "3" and err["exception_type"].endswith("InputError")
    assert "the image batch is empty" in err["exception_message"]


def test_factor_ops_and_factor_files_through_the_server(server):
    pose = F.Factor("pose", torch.randn(6, 6, generator=torch.Generator().manual_seed(3)), 25.0)
    F.save_factor(pose, server.input_dir / "pdfgc_test_pose.safetensors")
    prompt = {
        "1": {"class_type": "PDFGC_LoadFactor", "inputs": {"file": "pdfgc_test_pose.safetensors", "kind": "pose"}},
        "2": {"class_type": "PDFGC_FactorStrength", "inputs": {"factor": ["1", 0], "strength": 0.5}},
        "3": {
            "class_type": "PDFGC_SmoothFactor",
            "inputs": {"factor": ["2", 0], "method": "gaussian", "window": 5, "sigma": 1.5, "edge": "replicate"},
        },
        "4": {"class_type": "PDFGC_FitLength", "inputs": {"factor": ["3", 0], "length": 9, "mode": "pingpong"}},
        "5": {"class_type": "PDFGC_SaveFactor", "inputs": {"factor": ["4", 0], "filename_prefix": "pdfgc_test/pose"}},
        "6": {
            "class_type": "PDFGC_CombineMotion",
            "inputs": {
                **{k: v for k, v in bw.GRAPHS["lipsync_only"]["graph"]["6"]["inputs"].items() if k != "mouth"},
                "pose": ["4", 0],
            },
        },
    }
    tap(prompt, "4")
    tap(prompt, "6")
    entry = server.run(prompt, timeout=120)
    taps = tapped(server, entry)
    expected = F.fit_length(F.smooth(F.scale(pose, 0.5), "gaussian", 5, 1.5, "replicate"), 9, "pingpong")
    got = taps["tap_4_0"]
    assert got["__type__"] == "Factor" and got["kind"] == "pose" and got["fps"] == 25.0
    assert torch.equal(got["values"], expected.values)
    assert torch.equal(taps["tap_6_0"], F.assemble_motion(9, pose=expected))

    saved = entry["outputs"]["5"]["factors"][0]
    listed = f"{saved['subfolder']}/{saved['filename']} [output]"
    assert listed in server.object_info("PDFGC_LoadFactor")["input"]["required"]["file"][0]
    back = {"1": {"class_type": "PDFGC_LoadFactor", "inputs": {"file": listed, "kind": "any"}}}
    tap(back, "1")
    again = tapped(server, server.run(back, timeout=60))["tap_1_0"]
    assert torch.equal(again["values"], expected.values) and again["kind"] == "pose"


def test_loader_lists_checkpoint_files_and_official_folders(server, tmp_path):
    official = tmp_path / "official"
    official.mkdir()
    for net in ("appearance", "motion", "audio", "generator"):
        (official / f"{net}_model.pth").write_bytes(b"")
    server.add_model(official, "pdfgc-official-test")
    choices = server.object_info("PDFGC_LoadModel")["input"]["required"]["checkpoint"][0]
    assert CKPT in choices and "pdfgc-official-test/" in choices
    assert not any(c.endswith(".pth") for c in choices)
