"""The command line's main job: the bundled sample to a playable mp4 with sound, equal to the core."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pdfgc_core import cli, media, pipeline, provenance, synthetic
from pdfgc_core.engine import Engine
from pdfgc_core.errors import InputError
from pdfgc_core.provenance import manifest

SECONDS = 0.4


def _models():
    """The session's synthetic models (tests/pdfgc_synthetic.py): synthetic_models(0), built once."""
    from pdfgc_synthetic import synthetic_models

    return synthetic_models()


@pytest.fixture
def no_checkpoint(monkeypatch):
    monkeypatch.setattr(cli, "_find_checkpoint", lambda: None)
    monkeypatch.setattr(synthetic, "synthetic_models", lambda seed=0: _models())


def test_demo_renders_sample_with_sound_equal_to_core(no_checkpoint, tmp_path, capsys):
    out, frames_dir = tmp_path / "demo.mp4", tmp_path / "frames"
    code = cli.main(
        ["demo", "--seconds", str(SECONDS), "--out", str(out), "--frames-dir", str(frames_dir), "--device", "cpu"]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "SYNTHETIC" in err and "models/pdfgc" in err  # loud, and says where checkpoints go

    settings = pipeline.RenderSettings(max_seconds=SECONDS)
    engine = Engine(_models(), device="cpu")
    drivers = {k: pipeline.Driver(str(cli.SAMPLES / "drivers" / k)) for k in ("pose", "eye", "expression")}
    plan = pipeline.plan(engine, str(cli.SAMPLES / "anne.png"), str(cli.SAMPLES / "speech.mp3"), drivers, settings)
    want = np.concatenate(list(pipeline.frames_u8(engine, plan)))  # generated with plan.settings
    assert plan.settings == settings and plan.settings is not settings  # a copy of what it was planned with
    with pytest.raises(InputError, match="plan carries"):
        next(pipeline.frames_u8(engine, plan, settings))

    pngs = sorted(frames_dir.glob("*.png"))
    assert len(pngs) == len(want) == plan.num_frames > 0
    got = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in pngs])
    assert np.array_equal(got, want)
    assert provenance.detect(got, search=False).found  # marked by default, in the core and so in the CLI

    info = media.probe(out)
    assert info.kind == "video" and info.has_audio and info.num_frames == plan.num_frames
    assert (info.width, info.height) == (224, 224) and info.fps == pytest.approx(25.0)
    decoded = media.read_frames(out)
    assert np.abs(decoded.astype(np.int16) - want).mean() < 5.0  # h264 crf 18 on noise-like synthetic frames
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert "AI-generated" in manifest.read_container_tags(out)["comment"]


@pytest.mark.slow  # inner loop: under 3 minutes (tests/README.md)
def test_any_photo_aligned_and_pasted_back(no_checkpoint, tmp_path, capsys):
    skimage_data = pytest.importorskip("skimage.data")
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR))
    out, frames_dir = tmp_path / "pasted.mp4", tmp_path / "frames"
    code = cli.main(
        [
            "render",
            "--synthetic",
            "--appearance",
            str(photo),
            "--audio",
            str(cli.SAMPLES / "speech.mp3"),
            "--expression",
            str(cli.SAMPLES / "drivers" / "expression"),
            "--align",
            "dlib",
            "--paste-back",
            "--seconds",
            "0.3",
            "--out",
            str(out),
            "--frames-dir",
            str(frames_dir),
            "--device",
            "cpu",
            "--no-watermark",  # the pixel checks below look at where the picture changed
        ]
    )
    assert code == 0, capsys.readouterr().err
    info = media.probe(out)
    assert (info.width, info.height) == (512, 512) and info.has_audio
    assert "opted out" in manifest.read_container_tags(out)["comment"]
    first = cv2.cvtColor(cv2.imread(str(sorted(frames_dir.glob("*.png"))[0])), cv2.COLOR_BGR2RGB).astype(np.int16)
    assert not provenance.detect(first.astype(np.uint8), search=False).found
    changed = np.abs(first - skimage_data.astronaut().astype(np.int16)).max(axis=2) > 2
    ys, xs = np.nonzero(changed)
    assert 0.02 < changed.mean() < 0.15  # the face region is replaced, nothing else
    assert ys.min() > 0 and ys.max() < 300 and xs.min() > 100 and xs.max() < 380, (
        ys.min(),
        ys.max(),
        xs.min(),
        xs.max(),
    )


def test_render_without_checkpoint_refuses_unless_synthetic(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_find_checkpoint", lambda: None)
    code = cli.main(
        ["render", "--appearance", str(cli.SAMPLES / "anne.png"), "--audio", str(cli.SAMPLES / "speech.mp3")]
    )
    assert code == 2
    assert "models/pdfgc" in capsys.readouterr().err


@pytest.mark.slow  # inner loop: under 3 minutes (tests/README.md)
def test_batch_size_auto_and_bad_value(no_checkpoint, tmp_path, capsys):
    out = tmp_path / "auto.mp4"
    assert cli.main(["demo", "--seconds", "0.2", "--batch-size", "auto", "--out", str(out), "--device", "cpu"]) == 0
    assert media.probe(out).num_frames > 0
    capsys.readouterr()
    assert cli.main(["demo", "--seconds", "0.2", "--batch-size", "zero", "--out", str(tmp_path / "x.mp4")]) == 2
    assert "--batch-size" in capsys.readouterr().err and not (tmp_path / "x.mp4").exists()
