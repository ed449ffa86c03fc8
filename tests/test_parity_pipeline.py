"""End-to-end parity through the public API: checkpoint files -> load_models -> Engine / render.

For every ``fixture_*.npz`` in the parity folder: the official-layout weights for its
``weights_seed`` are filled (cached), loaded with ``load_models``, and every stage is compared
with the official tensors: mel windows from ``wav_normalized`` exactly, id features, raw and
processed embeddings, the generator's motion input and frames within 1e-4.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fixture_files, parity_dir

from pdfgc_core import audio, images
from pdfgc_core.checkpoints import load_models
from pdfgc_core.engine import Engine
from pdfgc_core.factors import assemble_motion, fit_length
from pdfgc_core.pipeline import Driver, RenderSettings, encode_driver

TOL = 1e-4
SETTINGS = {  # fixture "setting" -> (mouth, expression, eye, pose, blink, gaze)
    "all": dict(mouth=True, expression=True, eye=True, pose=True, blink=True, gaze=True),
    "mouthonly": dict(mouth=True, expression=False, eye=False, pose=False, blink=False, gaze=False),
    "blinkoff_gazeon": dict(mouth=True, expression=True, eye=True, pose=True, blink=False, gaze=True),
    "all_cycle": dict(mouth=True, expression=True, eye=True, pose=True, blink=True, gaze=True),
}
STREAMS = {"pose": "pose", "exp": "expression", "eye": "eye"}

FIXTURES = fixture_files()


def maxabs(a, b) -> float:
    return float((torch.as_tensor(np.asarray(a)).double() - torch.as_tensor(np.asarray(b)).double()).abs().max())


@functools.lru_cache(maxsize=2)
def engine_for(seed: int) -> Engine:
    from conftest import official_weights

    return Engine(load_models(official_weights(parity_dir(), seed)), device="cpu", precision="fp32")


@functools.lru_cache(maxsize=1)
def inputs() -> dict:
    return dict(np.load(parity_dir() / "inputs.npz", allow_pickle=False))


def fixture(path: Path) -> dict:
    return dict(np.load(path, allow_pickle=False))


def sample_roots() -> list[Path]:
    """Where driver frames are looked for: beside the parity folder, the shared samples, and the
    repository's bundled samples (the official pose / eye / expression clips the A fixtures use)."""
    repo = Path(__file__).resolve().parents[1]
    roots = [parity_dir().parent / "samples", repo.parent / "shared" / "samples", repo / "samples"]
    return [r for r in dict.fromkeys(roots) if r.is_dir()]


@functools.cache
def locate_driver_files(stream: str, names: tuple[str, ...], first_u8_key: str) -> list[Path]:
    """The files behind a driver stream: the sample folder holding all ``names`` whose first decoded
    frames equal ``inputs.npz[first_u8_key]`` (the fixtures store names and pixels, not paths)."""
    ref = inputs()[first_u8_key]
    for root in sample_roots():
        for d in sorted({p.parent for p in root.rglob(names[0])}):
            if all((d / n).is_file() for n in names):
                files = [d / n for n in names]
                k = min(len(ref), len(files))
                got = np.stack([images.official_crop(images.read_image(f)) for f in files[:k]])
                if np.array_equal(got, ref[:k]):
                    return files
    pytest.skip(f"sample files for the {stream} driver ({names[0]}...) not found beside the parity folder")


def driver_folder(tmp_path: Path, fx: dict, stream: str) -> Path:
    """A folder with the official driver files of ``stream`` for this fixture (symlinks)."""
    key = f"inputs__drive_{stream}_files" if f"inputs__drive_{stream}_files" in fx else f"drive_{stream}_files"
    names = tuple(str(n) for n in (fx[key] if key in fx else inputs()[key]))
    # the cycle fixture's exp stream is made of eye images; look the names up in every stream
    for src in (stream, "eye", "pose", "exp"):
        try:
            all_names = tuple(str(n) for n in inputs()[f"drive_{src}_files"])
            if not set(names) <= set(all_names):
                continue
            files = locate_driver_files(src, all_names, f"drive_{src}_rgb_u8")
            break
        except pytest.skip.Exception:
            continue
    else:
        pytest.skip(f"no sample folder holds the {stream} files of this fixture")
    by_name = {f.name: f for f in files}
    out = tmp_path / stream
    out.mkdir()
    for n in names:
        (out / n).symlink_to(by_name[n])
    return out


def fixture_windows(fx: dict) -> torch.Tensor:
    wav = fx.get("inputs__wav_normalized", inputs()["wav_normalized"])
    return audio.mel_windows(audio.mel_spectrogram(wav))


@pytest.fixture(params=FIXTURES, ids=[p.stem for p in FIXTURES], scope="module")
def case(request):
    if not FIXTURES:
        pytest.skip("no parity fixtures")
    fx = fixture(request.param)
    setting = str(fx["setting"])
    if setting not in SETTINGS:
        pytest.fail(f"unknown fixture setting {setting!r}: extend SETTINGS")
    return fx, engine_for(int(fx["weights_seed"])), SETTINGS[setting]


def test_weights_are_the_fixture_weights(case, parity):
    import json

    from conftest import official_weights

    fx, _, _ = case
    manifest = json.loads((official_weights(parity, int(fx["weights_seed"])) / "fill_manifest.json").read_text())
    digests = "".join(v["tensor_sha256"] for v in manifest["files"].values())
    stored = str(fx["weights_tensor_sha256"])
    for v in manifest["files"].values():
        assert v["tensor_sha256"] in stored, (digests, stored)


def test_mel_windows_exact(case):
    fx, _, _ = case
    want = fx.get("inputs__mel_windows", inputs()["mel_windows"])
    assert torch.equal(fixture_windows(fx), torch.from_numpy(want))


def test_appearance(case):
    fx, engine, _ = case
    app = engine.encode_appearance(images.prepare_batch(inputs()["app_rgb_u8"][None], crop="none"))
    assert maxabs(app.id_vector, fx["id_feature0"]) <= TOL
    assert maxabs(app.id_map, fx["id_feature1"]) <= TOL


def test_mouth_raw(case):
    fx, engine, _ = case
    mouth = engine.encode_mouth(fixture_windows(fx))
    assert maxabs(mouth.values, fx["mouth_embed_raw"]) <= TOL


_ENCODED: dict = {}


@pytest.fixture(scope="module")
def drivers(case, tmp_path_factory):
    """Raw pose / eye / expression per output frame, encoded from the official folders
    (fixtures sharing weights and folders share one encoding)."""
    fx, engine, _ = case
    tmp = tmp_path_factory.mktemp("drivers")
    n = int(fx["num_frames"])
    out = {}
    for stream, head in STREAMS.items():
        folder = driver_folder(tmp, fx, stream)
        key = (int(fx["weights_seed"]), head, n, tuple(sorted(p.name for p in folder.iterdir())))
        if key not in _ENCODED:
            _ENCODED[key] = encode_driver(engine, Driver(folder), [head], n, RenderSettings())[head]
        out[head] = fit_length(_ENCODED[key], n, "loop")
    return out


def test_driver_embeddings(case, drivers):
    fx, _, _ = case
    assert maxabs(drivers["pose"].values, fx["pose_embed_raw"]) <= TOL
    assert maxabs(drivers["eye"].values, fx["eye_embed_raw"]) <= TOL
    assert maxabs(drivers["expression"].values, fx["emo_embed_raw"]) <= TOL


@pytest.fixture(scope="module")
def motion(case, drivers):
    fx, engine, on = case
    n = int(fx["num_frames"])
    mouth = engine.encode_mouth(fixture_windows(fx))
    factors = {"mouth": mouth, **drivers}
    return assemble_motion(n, **{k: f for k, f in factors.items() if on[k]}, blink=on["blink"], gaze=on["gaze"])


def test_generator_input_motion(case, motion):
    fx, _, _ = case
    assert motion.shape == fx["gen_input_motion"].shape
    assert maxabs(motion, fx["gen_input_motion"]) <= TOL


def test_frames_fast_path(case, motion):
    fx, engine, _ = case
    if "gen_images" not in fx:
        pytest.skip("fixture has no frames")
    app = engine.encode_appearance(images.prepare_batch(inputs()["app_rgb_u8"][None], crop="none"))
    n = fx["gen_images"].shape[0]
    frames = engine.generate_all(app, motion[:n])
    assert maxabs(frames, fx["gen_images"]) <= TOL
