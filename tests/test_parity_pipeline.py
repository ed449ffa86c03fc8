"""End-to-end parity through the public API: checkpoint files -> load_models -> Engine / render.

For every ``fixture_*.npz`` in the parity folder: the official-layout weights for its
``weights_seed`` are filled (cached), loaded with ``load_models``, and every stage is compared
with the official tensors: mel windows from ``wav_normalized`` exactly, id features, raw and
processed embeddings, the generator's motion input and frames within 1e-4. The factors a fixture
switches on follow from the official flags it was made with (``flags``). Each stored tensor is its
own test, skipped when the fixture lacks it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from parity_folder import fixture_params, manifest_digests, parity_dir

from pdfgc_core import audio, images
from pdfgc_core.checkpoints import load_models
from pdfgc_core.engine import Engine
from pdfgc_core.factors import assemble_motion, fit_length
from pdfgc_core.pipeline import Driver, RenderSettings, encode_driver

TOL = 1e-4
STREAMS = {"pose": "pose", "exp": "expression", "eye": "eye"}  # fixture stream -> factor
FLAG_FACTORS = {  # official command-line flag -> factors it switches on
    "--mouth": ("mouth",),
    "--emo": ("expression",),
    "--headpose": ("pose",),
    "--blink": ("eye", "blink"),
    "--gaze": ("eye", "gaze"),
    "--all": ("mouth", "expression", "pose", "eye", "blink", "gaze"),
}
FACTORS = ("mouth", "expression", "eye", "pose", "blink", "gaze")
every_fixture = pytest.mark.parametrize("fx", fixture_params(inner=1), indirect=True)  # the rest: slow


def factors_on(flags: str) -> dict[str, bool]:
    """{factor: on} for the official flags a fixture was made with, e.g. "--mouth --gaze"."""
    unknown = [f for f in flags.split() if f not in FLAG_FACTORS]
    if unknown or not flags.split():
        pytest.fail(f"unknown official flags {flags!r}: extend FLAG_FACTORS", pytrace=False)
    on = {name for f in flags.split() for name in FLAG_FACTORS[f]}
    return {name: name in on for name in FACTORS}


def maxabs(a, b) -> float:
    return float((torch.as_tensor(np.asarray(a)).double() - torch.as_tensor(np.asarray(b)).double()).abs().max())


_ENGINES: dict = {}


@pytest.fixture(scope="module")
def engine(fx, fx_weights) -> Engine:
    """The public loader and Engine on the fixture's own seed (one kept at a time)."""
    if fx.seed not in _ENGINES:
        _ENGINES.clear()
        _ENGINES[fx.seed] = Engine(load_models(fx_weights), device="cpu", precision="fp32")
    return _ENGINES[fx.seed]


@functools.lru_cache(maxsize=1)
def inputs() -> dict:
    return dict(np.load(parity_dir() / "inputs.npz", allow_pickle=False))


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


def driver_folder(tmp_path: Path, fx, stream: str) -> Path:
    """A folder with the official driver files of ``stream`` for this fixture (symlinks)."""
    names = tuple(str(n) for n in fx.input(f"drive_{stream}_files", inputs()))
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
        pytest.skip(f"no sample folder holds the {stream} files of {fx.name}")
    by_name = {f.name: f for f in files}
    out = tmp_path / stream
    out.mkdir()
    for n in names:
        (out / n).symlink_to(by_name[n])
    return out


def fixture_windows(fx) -> torch.Tensor:
    return audio.mel_windows(audio.mel_spectrogram(fx.input("wav_normalized", inputs())))


def appearance(engine):
    return engine.encode_appearance(images.prepare_batch(inputs()["app_rgb_u8"][None], crop="none"))


@every_fixture
def test_weights_are_the_fixture_weights(fx, fx_weights):
    """The filled checkpoints of the fixture's weights_seed are the ones it stores digests of."""
    fx.tensor("weights_tensor_sha256")
    assert fx.weight_digests() == manifest_digests(fx_weights)


@every_fixture
def test_factors_follow_the_official_flags(fx):
    on = factors_on(str(fx.tensor("flags")))
    assert on["mouth"] or on["expression"] or on["eye"] or on["pose"], on


@every_fixture
def test_mel_windows_exact(fx):
    want = fx.input("mel_windows", inputs())
    assert torch.equal(fixture_windows(fx), torch.from_numpy(want))


@every_fixture
@pytest.mark.parametrize("tensor", ["id_feature0", "id_feature1"])
def test_appearance(fx, engine, tensor):
    ref = fx.tensor(tensor)
    app = appearance(engine)
    assert maxabs(app.id_vector if tensor == "id_feature0" else app.id_map, ref) <= TOL


@every_fixture
def test_mouth_raw(fx, engine):
    ref = fx.tensor("mouth_embed_raw")
    mouth = engine.encode_mouth(fixture_windows(fx))
    assert maxabs(mouth.values, ref) <= TOL


_ENCODED: dict = {}


@pytest.fixture(scope="module")
def drivers(fx, engine, tmp_path_factory):
    """Raw pose / eye / expression per output frame, encoded from the official folders
    (fixtures sharing weights and folders share one encoding)."""
    tmp = tmp_path_factory.mktemp("drivers")
    n = int(fx.tensor("num_frames"))
    out = {}
    for stream, head in STREAMS.items():
        folder = driver_folder(tmp, fx, stream)
        key = (fx.seed, head, n, tuple(sorted(p.name for p in folder.iterdir())))
        if key not in _ENCODED:
            _ENCODED[key] = encode_driver(engine, Driver(folder), [head], n, RenderSettings())[head]
        out[head] = fit_length(_ENCODED[key], n, "loop")
    return out


@every_fixture
@pytest.mark.parametrize("tensor", ["pose_embed_raw", "eye_embed_raw", "emo_embed_raw"])
def test_driver_embeddings(fx, drivers, tensor):
    ref = fx.tensor(tensor)
    factor = {"pose_embed_raw": "pose", "eye_embed_raw": "eye", "emo_embed_raw": "expression"}[tensor]
    assert maxabs(drivers[factor].values, ref) <= TOL


@pytest.fixture(scope="module")
def motion(fx, engine, drivers):
    on = factors_on(str(fx.tensor("flags")))
    n = int(fx.tensor("num_frames"))
    mouth = engine.encode_mouth(fixture_windows(fx))
    factors = {"mouth": mouth, **drivers}
    return assemble_motion(n, **{k: f for k, f in factors.items() if on[k]}, blink=on["blink"], gaze=on["gaze"])


@every_fixture
def test_generator_input_motion(fx, motion):
    ref = fx.tensor("gen_input_motion")
    assert motion.shape == ref.shape
    assert maxabs(motion, ref) <= TOL


@every_fixture
def test_frames_fast_path(fx, engine, motion):
    ref = fx.tensor("gen_images")
    frames = engine.generate_all(appearance(engine), motion[: ref.shape[0]])
    assert maxabs(frames, ref) <= TOL
