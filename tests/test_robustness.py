"""Bad inputs through the public API (Engine, render, the command line): one test per input class
of docs/BAD_INPUTS.md, each checking what the user gets; and what a failed or interrupted render
leaves behind (nothing) and keeps in memory (nothing).

Synthetic weights (the session's synthetic checkpoint: ``synthetic_models(0)``), ~0.3 s of audio
(5 frames at 25 fps) and small driver arrays keep it fast; generation runs on at most a handful
of frames.
"""

from __future__ import annotations

import gc
import logging
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
import torch

from pdfgc_core import InputError, MediaError, cli, images, pipeline
from pdfgc_core import audio as A
from pdfgc_core.engine import MOTION_DIM, Engine
from pdfgc_core.factors import Factor, PostProcess, assemble_motion

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
SR = 16000


# --------------------------------------------------------------------------- fixtures / helpers


@pytest.fixture(scope="module")
def models(synthetic_checkpoint):
    """This module's own copy of the session's synthetic checkpoint (loaded, not rebuilt): the
    memory checks here must not see fast-path caches other modules left in shared models."""
    from pdfgc_core.checkpoints import load_models

    return load_models(synthetic_checkpoint)


@pytest.fixture(scope="module")
def engine(models) -> Engine:
    return Engine(models, device="cpu", precision="fp32")


def speech(seconds=0.3, sr=SR, channels=1, amp=0.3, dc=0.0) -> np.ndarray:
    """Speech-like float32 [C, N]: a voiced harmonic stack with a 4 Hz syllable envelope plus noise."""
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    voice = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 700, 1100), 1))
    rng = np.random.default_rng(0)
    x = amp * (env * voice / 2.3 + 0.03 * rng.standard_normal(n)) + dc
    return np.stack([x * (1 - 0.3 * c) for c in range(channels)]).astype(np.float32)


def write_wav(path: Path, wave: np.ndarray, sr: int = SR, subtype="FLOAT") -> Path:
    sf.write(str(path), wave.T, sr, subtype=subtype)
    return path


def frames(n: int, seed: int = 0, size: int = 224) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def portrait() -> np.ndarray:
    return images.read_image(SAMPLES / "anne.png")


def settings(**kw) -> pipeline.RenderSettings:
    return pipeline.RenderSettings(**kw)


def sample_folder(tmp_path: Path, n: int, name="pose") -> Path:
    d = tmp_path / f"{name}{n}"
    d.mkdir()
    for f in sorted((SAMPLES / "drivers" / "pose").iterdir())[:n]:
        (d / f.name).symlink_to(f)
    return d


# --------------------------------------------------------------------------- audio


def test_silent_audio(engine):
    with pytest.raises(InputError, match="silent.*zero the mouth factor"):
        pipeline.plan(engine, portrait(), (np.zeros((1, 8000), np.float32), SR), {}, settings())
    with pytest.raises(InputError, match="silent"):  # -90 dBFS hiss is silence too
        pipeline.plan(engine, portrait(), (speech(amp=3e-5), SR), {}, settings())


def test_audio_shorter_than_one_frame(engine):
    with pytest.raises(InputError, match=r"0\.100 s long.*at least 0\.12"):
        pipeline.plan(engine, portrait(), (speech(0.1), SR), {}, settings())
    assert pipeline.mouth_windows((speech(0.121), SR), settings()).shape[0] == 1  # just enough: one frame


def test_clipped_audio_warns_and_renders(engine):
    loud = np.clip(speech(amp=3.0), -1, 1)
    with pytest.warns(A.AudioWarning, match="clipped"):
        p = pipeline.plan(engine, portrait(), (loud, SR), {}, settings())
    assert p.num_frames == 5 and bool(torch.isfinite(p.motion).all())


def test_dc_offset_warns_and_renders(engine):
    with pytest.warns(A.AudioWarning, match="DC offset"):
        w = pipeline.mouth_windows((speech(dc=0.3), SR), settings())
    assert w.shape == (5, 1, 80, 20)
    dc_free = A.audio_to_windows(speech(dc=0.3), SR, remove_dc=True)
    assert torch.allclose(dc_free, A.audio_to_windows(speech(), SR), atol=2e-3)


@pytest.mark.parametrize("sr,channels", [(8000, 1), (48000, 1), (44100, 2), (16000, 2)])
def test_other_rates_and_stereo_give_the_right_frame_count(tmp_path, sr, channels):
    path = write_wav(tmp_path / "s.wav", speech(0.3, sr, channels), sr)
    w = pipeline.mouth_windows(path, settings())
    n16 = math.ceil(round(0.3 * sr) * SR / sr)
    assert w.shape == (A.num_output_frames(n16), 1, 80, 20) == (5, 1, 80, 20)
    assert bool(torch.isfinite(w).all())
    mono = pipeline.mouth_windows((speech(0.3, SR, 1), SR), settings())
    low = slice(0, 60)  # mel bins below 4 kHz, which 8 kHz audio cannot carry
    assert float((w - mono)[:, :, low].abs().mean()) < 0.05  # same speech, other rate / layout: same mel


def test_corrupt_audio_file(tmp_path, engine):
    good = write_wav(tmp_path / "g.wav", speech(), subtype="PCM_16").read_bytes()
    (tmp_path / "trunc.wav").write_bytes(good[:30])
    (tmp_path / "junk.mp3").write_bytes(os.urandom(3000))
    for name in ("trunc.wav", "junk.mp3"):
        with pytest.raises(MediaError, match=name):
            pipeline.plan(engine, portrait(), tmp_path / name, {}, settings())
    with pytest.raises(MediaError, match="does not exist"):
        pipeline.mouth_windows(tmp_path / "none.wav", settings())


def test_overflowing_sample_values(engine):
    with pytest.raises(InputError, match="far outside"):
        pipeline.mouth_windows((speech() * 1e30, SR), settings())


# --------------------------------------------------------------------------- images


def test_empty_image_batch(engine):
    empty = torch.zeros(0, 3, 224, 224)
    with pytest.raises(InputError, match="empty"):
        engine.encode_appearance(empty)
    with pytest.raises(InputError, match="empty|no frames"):
        engine.encode_drivers(empty)
    with pytest.raises(InputError, match="IMAGE batch is empty"):
        images.comfy_to_u8(torch.zeros(0, 224, 224, 3))
    with pytest.raises(InputError, match="empty"):
        images.prepare_batch(np.zeros((0, 224, 224, 3), np.uint8))
    with pytest.raises(InputError, match="no frames"):
        engine.encode_drivers(iter([]))


def test_grayscale_rgba_16bit_images(tmp_path, engine):
    rgb = portrait()
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([rgb[..., ::-1], np.full(gray.shape, 7, np.uint8)]))
    cv2.imwrite(str(tmp_path / "deep.png"), rgb[..., ::-1].astype(np.uint16) * 257)
    ref = pipeline.load_appearance_image(rgb).tensor
    got = {n: pipeline.load_appearance_image(tmp_path / f"{n}.png").tensor for n in ("gray", "rgba", "deep")}
    assert all(t.shape == (1, 3, 224, 224) for t in got.values())
    assert torch.equal(got["rgba"], ref) and torch.equal(got["deep"], ref)  # alpha dropped; high byte kept
    assert torch.equal(got["gray"][:, 0], got["gray"][:, 1])  # grey replicated to 3 channels
    assert torch.equal(pipeline.load_appearance_image(rgb.astype(np.uint16) * 257).tensor, ref)  # 16-bit array
    comfy = torch.from_numpy(gray).float()[None, ..., None] / 255
    assert images.comfy_to_u8(comfy).shape == (1, 224, 224, 3)
    rgba = torch.cat([torch.from_numpy(rgb).float()[None] / 255, torch.zeros(1, 224, 224, 1)], -1)
    assert np.array_equal(images.comfy_to_u8(rgba)[0], rgb)
    app = engine.encode_appearance(got["gray"])
    assert app.id_vector.shape == (1, 2048) and bool(torch.isfinite(app.id_vector).all())


def test_non_three_channel_appearance(engine):
    with pytest.raises(InputError, match=r"expected RGB uint8 \[H, W, 3\], got shape \(224, 224, 2\)"):
        pipeline.load_appearance_image(np.zeros((224, 224, 2), np.uint8))
    with pytest.raises(InputError, match="2 channels"):
        images.comfy_to_u8(torch.zeros(1, 224, 224, 2))
    with pytest.raises(InputError, match=r"appearance image: expected network images \[B,3,224,224\]"):
        engine.encode_appearance(torch.zeros(1, 4, 224, 224))
    with pytest.raises(InputError, match="dtype float32"):
        pipeline.load_appearance_image(np.zeros((224, 224, 3), np.float32))


# --------------------------------------------------------------------------- drivers and factors


def test_short_driver_is_looped(engine):
    drv = pipeline.Driver(frames(3))
    s = settings(post=PostProcess.none())
    p = pipeline.plan(engine, portrait(), (speech(), SR), {"pose": drv}, s)
    assert p.num_frames == 5 and p.factors["pose"].num_frames == 3
    pose = p.motion[:, -6:]
    assert torch.equal(pose[3], pose[0]) and torch.equal(pose[4], pose[1])  # official cycling: i mod 3
    assert torch.equal(pose[:3], p.factors["pose"].values)


def test_official_frame_folder_too_short(tmp_path, engine):
    d = sample_folder(tmp_path, 5)
    with pytest.raises(InputError, match=r"has 5 frame file\(s\).*at least 10.*skip_first=0"):
        pipeline.plan(engine, portrait(), (speech(), SR), {"pose": pipeline.Driver(d)}, settings())
    p = pipeline.plan(engine, portrait(), (speech(), SR), {"pose": pipeline.Driver(d, skip_first=0)}, settings())
    assert p.factors["pose"].num_frames == 5 and p.num_frames == 5
    d3 = sample_folder(tmp_path, 2, "two")
    with pytest.raises(InputError, match="none left after skipping 3"):
        pipeline.plan(engine, portrait(), (speech(), SR), {"pose": pipeline.Driver(d3, skip_first=3)}, settings())


def test_empty_or_missing_driver_folder(tmp_path, engine):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no frames here")
    with pytest.raises(MediaError, match="holds no image files"):
        pipeline.plan(engine, portrait(), (speech(), SR), {"eye": pipeline.Driver(tmp_path / "empty")}, settings())
    with pytest.raises(MediaError, match="does not exist"):
        pipeline.plan(engine, portrait(), (speech(), SR), {"eye": pipeline.Driver(tmp_path / "gone")}, settings())
    with pytest.raises(InputError, match="none left|no frames"):
        pipeline.plan(engine, portrait(), (speech(), SR), {"eye": pipeline.Driver(frames(0))}, settings())


@pytest.mark.slow  # inner loop: under 3 minutes (tests/README.md)
def test_mismatched_factor_lengths_follow_the_fit_policy(engine):
    """The audio decides the length; every driver is fitted to it (read only as far as needed)."""
    drivers = {
        "pose": pipeline.Driver(frames(3, 1)),
        "eye": pipeline.Driver(frames(2, 2)),
        "expression": pipeline.Driver(frames(9, 3)),
    }
    p = pipeline.plan(engine, portrait(), (speech(), SR), drivers, settings(fit="pingpong", post=PostProcess.none()))
    assert p.num_frames == 5 and p.motion.shape == (5, MOTION_DIM)
    assert {k: f.num_frames for k, f in p.factors.items()} == {"mouth": 5, "pose": 3, "eye": 2, "expression": 5}
    assert torch.equal(p.motion[:, -6:], p.factors["pose"].values[[0, 1, 2, 1, 0]])
    assert torch.equal(p.motion[:, -12:-6], p.factors["eye"].values[[0, 1, 0, 1, 0]])
    for fit, idx in (("loop", [0, 1, 2, 0, 1]), ("hold", [0, 1, 2, 2, 2])):  # the same assembly plan() runs
        m = assemble_motion(5, **p.factors, fit=fit, post=PostProcess.none())
        assert torch.equal(m[:, -6:], p.factors["pose"].values[idx])
    with pytest.raises(InputError, match="fit mode 'stretch'"):
        pipeline.plan(engine, portrait(), (speech(), SR), drivers, settings(fit="stretch"))


@pytest.mark.slow  # inner loop: under 3 minutes (tests/README.md)
def test_extreme_factor_strengths(engine, caplog):
    drv = pipeline.Driver(frames(2))
    s = settings(strengths={"mouth": 1.0, "expression": 1.0, "eye": 1.0, "pose": 1e6}, batch_size=1)
    with caplog.at_level(logging.WARNING, logger="pdfgc"):
        p = pipeline.plan(engine, portrait(), (speech(0.13), SR), {"pose": drv}, s)
    assert "far above 1" in caplog.text and "'pose': 1000000.0" in caplog.text
    frame = next(pipeline.frames_u8(engine, p))  # saturated, but finite pixels
    assert frame.shape == (1, 224, 224, 3) and frame.dtype == np.uint8
    app = engine.encode_appearance(pipeline.load_appearance_image(portrait()).tensor)
    motion = torch.full((1, MOTION_DIM), 3e37)  # finite, but the generator's arithmetic overflows
    with pytest.raises(InputError, match="NaN/inf for frames 0-0.*Lower the factor strengths"):
        next(engine.generate(app, motion))
    s.strengths["pose"] = 1e300  # overflows float32 when applied
    with pytest.raises(InputError, match="pose strength 1e\\+300"):
        pipeline.plan(engine, portrait(), (speech(0.13), SR), {"pose": drv}, s)
    for bad in (float("nan"), float("inf")):
        s.strengths["pose"] = bad
        with pytest.raises(InputError, match="strength"):
            pipeline.plan(engine, portrait(), (speech(0.13), SR), {"pose": drv}, s)


def test_nan_in_a_factor(engine):
    v = torch.zeros(4, 6)
    v[2, 3] = float("nan")
    with pytest.raises(InputError, match="pose factor contains 1 NaN.*first at frame 2"):
        Factor("pose", v)
    motion = torch.zeros(2, MOTION_DIM)
    motion[1, 7] = float("nan")
    app = engine.encode_appearance(pipeline.load_appearance_image(portrait()).tensor)
    with pytest.raises(InputError, match="motion: contains NaN"):
        next(engine.generate(app, motion))
    with pytest.raises(InputError, match="NaN"):
        assemble_motion(3, pose=Factor("pose", torch.zeros(3, 6)).with_values(torch.full((3, 6), float("nan"))))


# --------------------------------------------------------------------------- command line


@pytest.fixture
def cli_env(monkeypatch, models, tmp_path):
    """The CLI with the in-memory synthetic models (no checkpoint search) and small inputs."""
    monkeypatch.setattr(cli, "get_models", lambda checkpoint, allow_synthetic: models)
    audio = write_wav(tmp_path / "speech.wav", speech())
    return {"tmp": tmp_path, "audio": audio, "appearance": SAMPLES / "anne.png"}


def run_cli(capsys, *argv) -> tuple[int, str]:
    rc = cli.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def _base(env, **over):
    args = {
        "--appearance": env["appearance"],
        "--audio": env["audio"],
        "--out": env["tmp"] / "out" / "v.mp4",
        "--device": "cpu",
    }
    args.update(over)
    return ["render", *[x for k, v in args.items() if v is not None for x in (k, v)]]


@pytest.mark.parametrize(
    "case,expect",
    [
        ("silent", "audio is silent"),
        ("short", "at least 0.12"),
        ("corrupt_audio", "could not be decoded"),
        ("missing_appearance", "does not exist"),
        ("empty_driver", "holds no image files"),
        ("short_folder", "--skip-first 0"),
        ("nan_strength", "strength"),
        ("bad_device", "--device nonsense"),
        ("bad_fps", "frame rate"),
    ],
)
def test_cli_bad_inputs_exit_2_with_a_message(cli_env, capsys, case, expect):
    env, tmp = cli_env, cli_env["tmp"]
    over = {}
    if case == "silent":
        over["--audio"] = write_wav(tmp / "silent.wav", np.zeros((1, 8000), np.float32))
    elif case == "short":
        over["--audio"] = write_wav(tmp / "short.wav", speech(0.05))
    elif case == "corrupt_audio":
        (tmp / "bad.mp3").write_bytes(b"ID3" + os.urandom(2000))
        over["--audio"] = tmp / "bad.mp3"
    elif case == "missing_appearance":
        over["--appearance"] = tmp / "nobody.png"
    elif case == "empty_driver":
        (tmp / "none").mkdir()
        over["--pose"] = tmp / "none"
    elif case == "short_folder":
        over["--pose"] = sample_folder(tmp, 4)
    elif case == "nan_strength":
        over.update({"--pose": sample_folder(tmp, 12), "--pose-strength": "nan"})
    elif case == "bad_device":
        over["--device"] = "nonsense"
    elif case == "bad_fps":
        over["--fps"] = "0"
    rc, err = run_cli(capsys, *_base(env, **over))
    assert rc == 2, err
    last = err.strip().splitlines()[-1]  # after the progress lines of the steps that ran
    assert last.startswith("error: ") and expect in last and err.count("error: ") == 1, err
    assert "Traceback" not in err and len(err) < 1500
    assert not (tmp / "out").exists() or not any((tmp / "out").iterdir())


# --------------------------------------------------------------------------- atomicity and memory


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def live_tensor_mb() -> float:
    gc.collect()
    seen, total = set(), 0
    for o in gc.get_objects():
        if issubclass(type(o), torch.Tensor) and not o.is_meta:  # type(): weak proxies must not be touched
            try:
                s = o.untyped_storage()
            except RuntimeError:
                continue
            if s.data_ptr() not in seen:
                seen.add(s.data_ptr())
                total += s.nbytes()
    return total / 2**20


def child_pids() -> set[int]:
    out = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            out |= {int(x) for x in (task / "children").read_text().split()}
        except OSError:
            pass
    return out


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.slow  # inner loop: under 3 minutes (tests/README.md)
def test_failed_or_interrupted_render_leaves_nothing_and_frees_memory(cli_env, capsys, monkeypatch):
    env, out_dir = cli_env, cli_env["tmp"] / "out"
    final = out_dir / "v.mp4"
    argv = _base(env, **{"--batch-size": "2", "--seconds": "0.2"})  # 2 frames
    children_before = child_pids()

    rc, err = run_cli(capsys, *argv)  # warm-up: a complete render allocates what a render needs
    assert rc == 0 and final.is_file() and _leftovers(out_dir) == ["v.mp4"], err
    final.unlink()
    base_rss, base_tensors = rss_mb(), live_tensor_mb()

    real = pipeline.frames_u8

    def failing(*a, **kw):
        for i, chunk in enumerate(real(*a, **kw)):
            if i == 1:
                raise failure(*message)  # a fresh exception: a stored one would keep its traceback alive
            yield chunk

    monkeypatch.setattr(pipeline, "frames_u8", failing)
    argv = _base(env, **{"--batch-size": "1", "--seconds": "0.2"})  # fails after 1 of 2 frames
    figures = []
    for failure, message in (
        (RuntimeError, ["simulated crash in the frame loop"]),
        (MediaError, ["simulated disk full"]),
        (KeyboardInterrupt, []),
    ):
        if failure is RuntimeError:
            with pytest.raises(RuntimeError, match="simulated crash"):
                cli.main([str(a) for a in argv])
        else:
            rc, err = run_cli(capsys, *argv)
            assert rc == (130 if failure is KeyboardInterrupt else 2), err
            assert ("no partial output" in err) if rc == 130 else ("simulated disk full" in err)
        assert _leftovers(out_dir) == [], _leftovers(out_dir)  # no mp4, no hidden temporary files
        assert child_pids() <= children_before  # ffmpeg is gone
        figures.append((rss_mb(), live_tensor_mb()))
    capsys.readouterr()
    print(
        f"\nRSS before failures {base_rss:.0f} MB, after each: {[round(r) for r, _ in figures]} MB; "
        f"live tensors {base_tensors:.1f} MB -> {[round(t, 1) for _, t in figures]} MB"
    )
    assert all(abs(t - base_tensors) < 1.0 for _, t in figures)  # every tensor of the failed render was freed
    assert figures[-1][0] - base_rss < 150  # no growth beyond allocator noise


def test_progress_callback_exception_stops_generation(engine):
    app = engine.encode_appearance(pipeline.load_appearance_image(portrait()).tensor)
    motion = torch.zeros(4, MOTION_DIM)
    engine.generate_all(app, motion[:1], batch_size=1)  # warm-up: caches a batch-1 run builds stay out of the count
    before = live_tensor_mb()
    calls = []

    def progress(n):
        calls.append(n)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.generate_all(app, motion, batch_size=1, progress=progress)
    assert calls == [1]  # stopped after the first frame, not after all four
    after = live_tensor_mb()
    print(f"\nlive tensors before {before:.1f} MB, after the interrupted generation {after:.1f} MB")
    assert abs(after - before) < 1.0


# --------------------------------------------------------------------------- the documented table


def test_docs_table_names_real_tests():
    """docs/BAD_INPUTS.md names only tests that exist, and every test here has a row."""
    import re

    doc = (REPO / "docs" / "BAD_INPUTS.md").read_text()
    named = set(re.findall(r"`(?:tests/(test_\w+)\.py::)?(test_\w+)`", doc))
    sources = {
        f: (REPO / "tests" / f"{f}.py").read_text()
        for f in ("test_robustness", "test_checkpoints", "test_fuzz", "test_hostile_inputs")
    }
    for file, name in named:
        candidates = [file] if file else list(sources)
        assert any(re.search(rf"^def {name}\(", sources[f], re.M) for f in candidates), f"{name} is not a test"
    here = {
        name
        for f in ("test_robustness", "test_hostile_inputs")
        for name in re.findall(r"^def (test_\w+)\(", sources[f], re.M)
    } - {"test_docs_table_names_real_tests"}
    assert here <= {name for _, name in named}, f"tests without a row: {here - {n for _, n in named}}"
