"""The templates run as shipped: ComfyUI gets the sample inputs at start-up (nothing copied by
hand but a checkpoint), and the photo and dubbing templates run in the real server with their
outputs checked (frame count, frame rate, sound present and as long as the video)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from comfy_harness import build_workflows_module

from nodes._samples import SAMPLE_INPUTS, SAMPLES
from pdfgc_core import media

pytestmark = pytest.mark.comfyui

CKPT = "pdfgc-synthetic.safetensors"
bw = build_workflows_module()


@pytest.fixture(scope="module")
def server(comfy_server, synthetic_checkpoint):
    comfy_server.add_model(synthetic_checkpoint, CKPT)
    return comfy_server


def test_the_pack_put_every_template_input_into_the_input_folder(server):
    names = {p.name for p in server.input_dir.iterdir()}
    assert set(SAMPLE_INPUTS) <= names
    assert "pdfgc_samples_LICENSE-CC-BY-4.0.txt" in names  # attribution kept beside the samples
    for template, inputs in bw.workflow_inputs().items():
        assert set(inputs) <= set(SAMPLE_INPUTS), f"{template} loads a file the pack does not ship"


def run_template(server, name: str, edit=None) -> tuple[dict, dict]:
    workflow = json.loads((bw.OUT_DIR / f"{name}.json").read_text())
    prompt = bw.ui_to_api(workflow, server.object_info())
    assert bw.normalise(prompt) == bw.normalise(bw.GRAPHS[name]["graph"])
    (model,) = [k for k, v in prompt.items() if v["class_type"] == "PDFGC_LoadModel"]
    prompt[model]["inputs"]["checkpoint"] = CKPT
    if edit:
        edit(prompt)
    entry = server.run(prompt, timeout=1200)
    return prompt, entry


def check_mp4(server, entry, frames: int | None, fps: float):
    (mp4,) = [f for f in server.output_files(entry) if f.suffix == ".mp4"]
    info = media.probe(mp4)
    if frames is not None:
        assert info.num_frames == frames
    assert abs(info.fps - fps) < 0.01 and info.has_audio
    from pdfgc_core.audio import load_audio

    wave, sr = load_audio(mp4)
    assert abs(wave.shape[-1] / sr - info.num_frames / fps) < 0.1  # the sound lasts as long as the video
    return info


def test_photo_template_pastes_the_talking_face_into_the_photo(server):
    def short(prompt):
        for node in prompt.values():
            if node["class_type"] == "PDFGC_EncodeLips":
                node["inputs"]["max_seconds"] = 0.4

    prompt, entry = run_template(server, "photo_to_talking_head", short)
    info = check_mp4(server, entry, None, 25.0)
    photo = media.read_frames(SAMPLES / "photo.jpg")
    assert (info.width, info.height) == (photo.shape[2], photo.shape[1])  # the full photo, not the crop
    assert info.num_frames == 7


def test_dub_template_keeps_the_video_and_changes_only_the_face(server):
    prompt, entry = run_template(server, "dub_video")
    src = media.probe(SAMPLES / "videos" / "talk.mp4")
    info = check_mp4(server, entry, src.num_frames, src.fps)
    assert (info.width, info.height) == (src.width, src.height)
    out = media.read_frames([f for f in server.output_files(entry) if f.suffix == ".mp4"][0])
    original = media.read_frames(SAMPLES / "videos" / "talk.mp4")
    diff = (torch.from_numpy(out).float() - torch.from_numpy(original).float()).abs().mean(-1)
    assert float(diff[:, :30].mean()) < 3.0  # the top of the picture (above the face) is the source, up to h264


def test_an_eye_factor_in_the_mouth_input_is_refused_before_anything_runs(server):
    prompt = bw.api_prompt("full_control")
    (combine,) = [k for k, v in prompt.items() if v["class_type"] == "PDFGC_CombineMotion"]
    (eyes,) = [k for k, v in prompt.items() if v["class_type"] == "PDFGC_EncodeEyes"]
    prompt[combine]["inputs"]["mouth"] = [eyes, 0]
    r = server.post("/prompt", {"prompt": prompt, "client_id": "kind-check"})
    assert r.status_code == 400, r.text
    errors = r.json()["node_errors"][combine]["errors"]
    assert any(e["type"] == "return_type_mismatch" and "mouth" in json.dumps(e) for e in errors), errors


def test_a_workflow_saved_with_the_old_generic_factor_type_still_runs(server):
    """tests/data/legacy_full_control_0.1.0.json: full_control as 0.1.0 shipped it, every factor
    link typed PDFGC_FACTOR (see CHANGELOG.md)."""
    legacy = json.loads((Path(__file__).parent / "data" / "legacy_full_control_0.1.0.json").read_text())
    assert {link[5] for link in legacy["links"]} >= {"PDFGC_FACTOR"}
    prompt = bw.ui_to_api(legacy, server.object_info())
    for node in prompt.values():
        if node["class_type"] == "PDFGC_LoadModel":
            node["inputs"]["checkpoint"] = CKPT
        if node["class_type"] == "PDFGC_EncodeLips":
            node["inputs"]["max_seconds"] = 0.2
        if node["class_type"] == "LoadImage":
            node["inputs"]["image"] = "pdfgc_anne.png"
        if node["class_type"] == "LoadAudio":
            node["inputs"]["audio"] = "pdfgc_speech.mp3"
    entry = server.run(prompt, timeout=1200)
    assert entry["status"]["status_str"] == "success"
