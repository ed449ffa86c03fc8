"""The dubbing nodes in-process (no ComfyUI server): IMAGE-batch route and file route give the
frames of the core, and audio lined up for Create Video."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from dub_media import face_clip, write_video

from nodes import _common
from nodes.dub import PDFGC_DubVideo, PDFGC_DubVideoFile
from pdfgc_core import images
from pdfgc_core.dub import DubSettings, FrameSource, dub_frames, plan_dub
from pdfgc_core.errors import InputError

SR = 16000
OPTIONS = dict(
    face="largest",
    mask="lower",
    feather=12.0,
    color_match=True,
    length="video",
    reference_frame=-1,
    smooth_seconds=0.1,
    batch_size=8,
)


@pytest.fixture(scope="module")
def handle(synthetic_models):
    return _common.ModelHandle(synthetic_models, "synthetic", precision="fp32", impl="fast")


@pytest.fixture(scope="module")
def clip():
    frames, _ = face_clip(n=6, no_face=(2, 3), second=None)
    t = np.arange(int(0.5 * SR)) / SR
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)[None]
    return frames, wave


def test_dub_video_node_equals_core(handle, clip):
    frames, wave = clip
    audio = {"waveform": torch.from_numpy(wave)[None], "sample_rate": SR}
    out, synced, n, fps = PDFGC_DubVideo().dub(handle, images.u8_to_comfy(frames), audio, 25.0, **OPTIONS)
    assert out.shape == (6, 360, 640, 3) and n == 6 and fps == 25.0
    engine = handle.engine()
    src = FrameSource(frames, fps=25)
    plan = plan_dub(engine, src, (wave, SR), DubSettings())
    want = np.concatenate(list(dub_frames(engine, src, plan)))
    assert np.array_equal(images.comfy_to_u8(out), want)
    assert np.array_equal(want[2], frames[2])  # the faceless frame is the source frame
    assert synced["sample_rate"] == SR and synced["waveform"].shape[-1] == round(6 / 25 * SR)
    lead = round(0.08 * SR)
    np.testing.assert_array_equal(synced["waveform"][0, :, :100].numpy(), wave[:, lead : lead + 100])
    with pytest.raises(InputError, match="PD-FGC Dub Video: face choice"):
        PDFGC_DubVideo().dub(handle, images.u8_to_comfy(frames), audio, 25.0, **{**OPTIONS, "face": "left"})


@pytest.mark.slow  # inner loop: under 3 minutes (tests/README.md)
def test_dub_video_file_node_streams_input_to_output(handle, clip, tmp_path, monkeypatch):
    frames, wave = clip
    (tmp_path / "input").mkdir()
    write_video(tmp_path / "input" / "talk.mp4", frames, 25)
    fake = types.SimpleNamespace(
        get_input_directory=lambda: str(tmp_path / "input"),
        get_output_directory=lambda: str(tmp_path / "output"),
        get_annotated_filepath=lambda name: str(tmp_path / "input" / name),
    )
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    from nodes.dub import list_input_videos

    assert list_input_videos() == ["talk.mp4"]
    audio = {"waveform": torch.from_numpy(wave)[None], "sample_rate": SR}
    res = PDFGC_DubVideoFile().dub(handle, "talk.mp4", audio, "pdfgc/dub", **OPTIONS)
    path, n, fps = res["result"]
    assert path.endswith("pdfgc/dub_00001.mp4") and n == 6 and fps == 25.0
    assert res["ui"]["images"][0] == {"filename": "dub_00001.mp4", "subfolder": "pdfgc", "type": "output"}
    from pdfgc_core.media import probe

    info = probe(path)
    assert (info.num_frames, info.width, info.height, info.has_audio) == (6, 640, 360, True)
    with pytest.raises(InputError, match="inside the output folder"):
        PDFGC_DubVideoFile().dub(handle, "talk.mp4", audio, "../../etc/x", **OPTIONS)
    with pytest.raises(InputError, match="not a file"):
        PDFGC_DubVideoFile().dub(handle, "missing.mp4", audio, "pdfgc/dub", **OPTIONS)
