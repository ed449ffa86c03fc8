"""The PD-FGC nodes called in-process (no server): their results equal pdfgc_core called
directly, bad inputs give clear errors, and the node interface (names, input order, tooltips,
ranges) stays what saved workflows rely on. ComfyUI's modules are replaced by small fakes where
a node needs them (folders, progress bar, Cancel, model management)."""

from __future__ import annotations

import itertools
import logging
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"

import nodes  # noqa: E402  (the pack's nodes package, imported as a top-level package)
from nodes import _common, encode, factor_io, generate  # noqa: E402
from nodes import factors as factor_nodes
from nodes import models as model_nodes
from pdfgc_core import audio as core_audio  # noqa: E402
from pdfgc_core import factors as F
from pdfgc_core import images, media, pipeline, provenance
from pdfgc_core.checkpoints import INSTALL_HINT  # noqa: E402
from pdfgc_core.engine import Appearance, Engine  # noqa: E402
from pdfgc_core.errors import CheckpointError, InputError, MediaError  # noqa: E402

OUR_NODES = {
    k: v
    for k, v in nodes.NODE_CLASS_MAPPINGS.items()
    if v.__module__.split(".")[-1] in ("models", "encode", "factors", "generate", "factor_io", "provenance")
}

# The public interface: node -> (required inputs in order, optional inputs in order, output names).
# Saved workflows store widget values by position and links by name; changing this is a breaking
# change for users (see nodes/NODES.md). Add new inputs only at the end of "optional".
INTERFACE = {
    "PDFGC_CombineMotion": (
        [
            "length",
            "fit",
            "match_fps",
            "post_process",
            "mouth_gain",
            "expression_gain",
            "eye_gain",
            "pose_gain",
            "blink",
            "gaze",
        ],
        ["mouth", "expression", "eye", "pose"],
        ["motion", "frame_count"],
    ),
    "PDFGC_EncodeAppearance": (["model", "image", "crop"], [], ["appearance"]),
    "PDFGC_EncodeExpression": (["model", "images", "crop", "skip_first", "fps"], [], ["expression"]),
    "PDFGC_EncodeEyes": (["model", "images", "crop", "skip_first", "fps"], [], ["eye"]),
    "PDFGC_EncodeLips": (
        ["model", "audio", "fps", "quality", "max_seconds"],
        [],
        ["mouth", "frame_count", "fps", "audio"],
    ),
    "PDFGC_EncodeMotion": (["model", "images", "crop", "skip_first", "fps"], [], ["pose", "eye", "expression"]),
    "PDFGC_EncodePose": (["model", "images", "crop", "skip_first", "fps"], [], ["pose"]),
    "PDFGC_FactorStrength": (["factor", "strength"], [], ["factor"]),
    "PDFGC_FitLength": (["factor", "length", "mode"], [], ["factor"]),
    "PDFGC_Generate": (["model", "appearance", "motion", "batch_size", "noise"], ["watermark"], ["images"]),
    "PDFGC_CheckProvenance": (["images", "scale_search"], [], ["report", "found"]),
    "PDFGC_HoldFrame": (["factor", "frame", "length"], [], ["factor"]),
    "PDFGC_LoadFactor": (["file", "kind"], ["path"], ["factor", "frame_count"]),
    "PDFGC_LoadModel": (["checkpoint", "precision", "generator_impl"], [], ["model", "info"]),
    "PDFGC_MergeEyes": (["blink", "gaze", "fit"], [], ["factor"]),
    "PDFGC_MixFactors": (["a", "b", "mode", "t", "start", "end", "curve", "length", "fit"], [], ["factor"]),
    "PDFGC_RetimeFactor": (["factor", "fps", "method"], [], ["factor"]),
    "PDFGC_SaveFactor": (["factor", "filename_prefix"], [], ["file"]),
    "PDFGC_SmoothFactor": (["factor", "method", "window", "sigma", "edge"], [], ["factor"]),
    "PDFGC_SplitEyes": (["eye"], [], ["blink", "gaze"]),
    "PDFGC_ZeroFactor": (["factor"], [], ["factor"]),
}
CUSTOM_TYPES = {"PDFGC_MODEL", "PDFGC_APPEARANCE", "PDFGC_FACTOR", "PDFGC_MOTION", *_common.KIND_TYPES.values()}
COMFY_TYPES = {"IMAGE", "AUDIO", "INT", "FLOAT", "STRING", "BOOLEAN"}


# --------------------------------------------------------------------------------------- fakes


class FakeComfy:
    """comfy.model_management / comfy.utils / comfy.model_patcher stand-ins that record calls."""

    class Interrupted(Exception):
        pass

    def __init__(self):
        self.loaded, self.bars, self.checks = [], [], 0
        self.interrupt_at: int | None = None
        fake = self

        class ProgressBar:
            def __init__(self, total):
                self.total, self.value = total, 0
                fake.bars.append(self)

            def update(self, n):
                self.value += n

        class ModelPatcher:
            def __init__(self, model, load_device, offload_device, size=0):
                self.model, self.load_device, self.offload_device = model, load_device, offload_device

        def throw():
            fake.checks += 1
            if fake.interrupt_at is not None and fake.checks >= fake.interrupt_at:
                raise FakeComfy.Interrupted("interrupted")

        self.mm = types.SimpleNamespace(
            get_torch_device=lambda: torch.device("cpu"),
            unet_offload_device=lambda: torch.device("cpu"),
            intermediate_device=lambda: torch.device("cpu"),
            throw_exception_if_processing_interrupted=throw,
            load_models_gpu=lambda models, **kw: fake.loaded.append((list(models), kw)),
        )
        self.utils = types.SimpleNamespace(ProgressBar=ProgressBar)
        self.patcher = types.SimpleNamespace(ModelPatcher=ModelPatcher)


@pytest.fixture
def comfy(monkeypatch):
    fake = FakeComfy()
    pkg = types.ModuleType("comfy")
    pkg.model_management, pkg.utils, pkg.model_patcher = fake.mm, fake.utils, fake.patcher
    for name, mod in (
        ("comfy", pkg),
        ("comfy.model_management", fake.mm),
        ("comfy.utils", fake.utils),
        ("comfy.model_patcher", fake.patcher),
    ):
        monkeypatch.setitem(sys.modules, name, mod)
    return fake


@pytest.fixture
def folders(monkeypatch, tmp_path):
    """A fake ``folder_paths`` with models/pdfgc, input/ and output/ under tmp_path."""
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(tmp_path / "models")
    roots = {"pdfgc": [str(tmp_path / "models" / "pdfgc")]}
    exts = {".pth", ".tar", ".safetensors"}
    for d in ("models/pdfgc", "input", "output"):
        (tmp_path / d).mkdir(parents=True)

    def get_filename_list(name):
        out = []
        for root in roots[name]:
            for dirpath, _, files in os.walk(root, followlinks=True):
                out += [
                    os.path.relpath(os.path.join(dirpath, f), root)
                    for f in files
                    if os.path.splitext(f)[1].lower() in exts
                ]
        return sorted(out)

    def get_annotated_filepath(name):
        for tag, base in ((" [output]", fp.get_output_directory()), (" [input]", fp.get_input_directory())):
            if name.endswith(tag):
                return os.path.join(base, name[: -len(tag)])
        return os.path.join(fp.get_input_directory(), name)

    fp.get_folder_paths = lambda name: roots[name]
    fp.get_filename_list = get_filename_list
    fp.get_input_directory = lambda: str(tmp_path / "input")
    fp.get_output_directory = lambda: str(tmp_path / "output")
    fp.get_annotated_filepath = get_annotated_filepath
    fp.root = tmp_path
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    return fp


# --------------------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def checkpoint(synthetic_checkpoint):
    return synthetic_checkpoint


@pytest.fixture(scope="module")
def handle(synthetic_models):
    """A PDFGC_MODEL value without ComfyUI (no patcher: the CPU), on the session's synthetic models."""
    return _common.ModelHandle(synthetic_models, "synthetic", precision="fp32", impl="fast")


@pytest.fixture(scope="module")
def engine(handle):
    return Engine(handle.models, precision="fp32", impl="fast")


def comfy_image(u8) -> torch.Tensor:
    """uint8 [B,H,W,3] -> ComfyUI IMAGE, as LoadImage makes it (u / 255)."""
    return images.u8_to_comfy(u8)


@pytest.fixture(scope="module")
def portrait():
    return comfy_image(images.read_image(SAMPLES / "anne.png")[None])


@pytest.fixture(scope="module")
def pose_frames():
    return comfy_image(media.read_frames(SAMPLES / "drivers" / "pose", stop=6))


@pytest.fixture(scope="module")
def speech():
    wave, sr = core_audio.load_audio(SAMPLES / "speech.mp3")
    return {"waveform": torch.from_numpy(wave)[None], "sample_rate": sr}


def factor(kind, n, seed=0, fps=25.0):
    g = torch.Generator().manual_seed(seed)
    return F.Factor(kind, torch.randn(n, F.FACTOR_DIMS[kind], generator=g), fps)


def same(a: F.Factor, b: F.Factor) -> bool:
    return a.kind == b.kind and a.fps == b.fps and torch.equal(a.values, b.values)


# --------------------------------------------------------------------------------------- interface


def test_node_set_and_interface_are_stable():
    assert sorted(OUR_NODES) == sorted(INTERFACE)
    for name, cls in OUR_NODES.items():
        spec = cls.INPUT_TYPES()
        got = (list(spec.get("required", {})), list(spec.get("optional", {})), list(cls.RETURN_NAMES))
        assert got == tuple(INTERFACE[name]), (
            f"{name}: inputs/outputs changed from {INTERFACE[name]} to {got}. Saved workflows store widget values "
            "by position: renaming or reordering is a breaking change (append new optional inputs instead)."
        )


@pytest.mark.parametrize("name", sorted(INTERFACE))
def test_node_metadata(name):
    cls = OUR_NODES[name]
    assert name.startswith("PDFGC_") and name in nodes.NODE_DISPLAY_NAME_MAPPINGS
    assert cls.CATEGORY.startswith("PD-FGC") and len(cls.DESCRIPTION) > 40
    assert callable(getattr(cls, cls.FUNCTION))
    assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
    assert set(cls.RETURN_TYPES) <= CUSTOM_TYPES | COMFY_TYPES
    spec = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for inp, (kind, *opts) in spec.get(section, {}).items():
            opts = opts[0] if opts else {}
            assert opts.get("tooltip"), f"{name}.{inp} has no tooltip"
            if kind in ("INT", "FLOAT"):
                assert {"default", "min", "max"} <= set(opts), f"{name}.{inp} lacks default/min/max"
                assert opts["min"] <= opts["default"] <= opts["max"]
            elif isinstance(kind, list):
                assert kind and opts.get("default", kind[0]) in kind
            else:
                assert set(kind.split(",")) <= CUSTOM_TYPES | COMFY_TYPES, f"{name}.{inp}: unknown type {kind}"


def test_nodes_md_lists_every_node():
    text = (REPO / "nodes" / "NODES.md").read_text()
    for name in INTERFACE:
        assert f"`{name}`" in text, f"{name} is not documented in nodes/NODES.md"


def test_workflows_folder_holds_no_json():
    """ComfyUI lists workflows/*.json as templates too: copies there would show every template twice."""
    assert not list((REPO / "workflows").glob("*.json"))
    assert "example_workflows" in (REPO / "workflows" / "README.md").read_text()


# --------------------------------------------------------------------------------------- loader


def test_checkpoint_listing():
    names = [
        "a.safetensors",
        "checkpoints.tar",
        "notes.txt",
        "random.pth",
        "official/appearance_model.pth",
        "official/motion_model.pth",
        "official/audio_model.pth",
        "official/generator_model.pth",
        "partial/appearance_model.pth",
        "deep\\win\\appearance_model.pth",
        "deep\\win\\motion_model.pth",
        "deep\\win\\audio_model.pth",
        "deep\\win\\generator_model.pth",
        "sub\\b.safetensors",
        "appearance_model.pth",
        "motion_model.pth",
        "audio_model.pth",
        "generator_model.pth",
    ]
    assert model_nodes.list_checkpoints(names) == [
        "./",
        "a.safetensors",
        "checkpoints.tar",
        "deep/win/",
        "official/",
        "sub/b.safetensors",
    ]
    assert model_nodes.list_checkpoints([]) == []


def test_loader_lists_and_resolves_real_folders(folders):
    root = folders.root / "models" / "pdfgc"
    assert model_nodes.PDFGC_LoadModel.INPUT_TYPES()["required"]["checkpoint"][0] == [model_nodes.NO_CHECKPOINTS]
    with pytest.raises(CheckpointError) as e:
        model_nodes.PDFGC_LoadModel().load(model_nodes.NO_CHECKPOINTS, "auto", "fast")
    assert str(root) in str(e.value) and INSTALL_HINT in str(e.value)

    (root / "official").mkdir()
    for f in ("appearance", "motion", "audio", "generator"):
        (root / "official" / f"{f}_model.pth").write_bytes(b"")
    (root / "x.safetensors").write_bytes(b"")
    assert model_nodes.PDFGC_LoadModel.INPUT_TYPES()["required"]["checkpoint"][0] == ["official/", "x.safetensors"]
    assert model_nodes.resolve_checkpoint("official/") == str(root / "official")
    assert model_nodes.resolve_checkpoint("x.safetensors") == str(root / "x.safetensors")
    for bad in ("missing.safetensors", "../x.safetensors", str(root / "x.safetensors"), "x.safetensors/"):
        with pytest.raises(CheckpointError, match="is not in .*found: official/, x.safetensors"):
            model_nodes.resolve_checkpoint(bad)
    assert model_nodes.PDFGC_LoadModel.VALIDATE_INPUTS("anything") is True


def test_load_model_wraps_networks_for_comfy_and_warns_about_synthetic(folders, comfy, checkpoint, caplog):
    os.symlink(checkpoint, folders.root / "models" / "pdfgc" / "synth.safetensors")
    with caplog.at_level(logging.WARNING, logger="pdfgc"):
        out = model_nodes.PDFGC_LoadModel().load("synth.safetensors", "fp16", "reference")
    handle, info = out["result"]
    assert out["ui"]["text"] == [info]
    assert "SYNTHETIC TEST WEIGHTS" in info and "SYNTHETIC TEST WEIGHTS" in caplog.text
    assert len(out["ui"]["pdfgc_warning"]) == 1 and "SYNTHETIC" in out["ui"]["pdfgc_warning"][0]
    assert handle.synthetic and (handle.precision, handle.impl) == ("fp16", "reference")
    patcher = handle.patcher
    assert isinstance(patcher.model, torch.nn.ModuleDict)
    assert dict(patcher.model.items()) == handle.models.networks()
    eng = handle.engine()
    assert comfy.loaded == [([patcher], {"force_full_load": True})]
    assert eng.device == torch.device("cpu") and eng.dtype == torch.float16 and eng.impl == "reference"
    with pytest.raises(InputError, match="precision 'fp8'"):
        model_nodes.PDFGC_LoadModel().load("synth.safetensors", "fp8", "fast")


# --------------------------------------------------------------------------------------- encoders


@pytest.mark.slow  # full run only: end to end, and the inner loop must stay under 3 minutes
def test_encode_appearance_equals_core_from_the_file(handle, engine, portrait):
    (app,) = encode.PDFGC_EncodeAppearance().encode(handle, torch.cat([portrait, portrait * 0]), "official")["result"]
    official = images.to_network(images.official_crop(images.read_image(SAMPLES / "anne.png"))[None])
    ref = engine.encode_appearance(official)  # the official loader, from the file
    assert isinstance(app, Appearance)
    assert torch.equal(app.id_vector, ref.id_vector) and torch.equal(app.id_map, ref.id_map)
    (plain,) = encode.PDFGC_EncodeAppearance().encode(handle, portrait, "none")["result"]
    resized = images.to_network(images.resize_224(images.read_image(SAMPLES / "anne.png"))[None])
    assert torch.equal(plain.id_vector, engine.encode_appearance(resized).id_vector)


@pytest.mark.slow  # full run only: end to end, and the inner loop must stay under 3 minutes
def test_encode_lips_equals_core(handle, engine, speech, comfy):
    mouth, count, fps, synced = encode.PDFGC_EncodeLips().encode(handle, speech, 25.0, "official", 0.4)
    windows = pipeline.mouth_windows(SAMPLES / "speech.mp3", pipeline.RenderSettings(max_seconds=0.4))
    ref = engine.encode_mouth(windows, fps=25.0)
    assert same(mouth, ref) and count == len(ref) == 7 and fps == 25.0
    assert comfy.bars[-1].value == comfy.bars[-1].total == count
    # the sound for the video starts 2 frames (0.08 s) in, as the official videos and the CLI
    lead = round(core_audio.AUDIO_LEAD_SECONDS * speech["sample_rate"])
    assert lead == round(2 / 25 * 44100) and synced["sample_rate"] == speech["sample_rate"]
    assert torch.equal(synced["waveform"], speech["waveform"][..., lead:])
    mouth30, count30, _, _ = encode.PDFGC_EncodeLips().encode(handle, speech, 30.0, "official", 0.4)
    assert mouth30.fps == 30.0 and count30 > count


@pytest.mark.parametrize(
    "audio, match",
    [
        ({"waveform": torch.zeros(1, 2, 16000), "sample_rate": 16000}, "silent"),
        ({"waveform": torch.zeros(1, 1, 100) + 0.1, "sample_rate": 16000}, "at least"),
        ({"waveform": torch.zeros(2, 16000), "sample_rate": 16000}, r"\[batch, channels, samples\]"),
        ({"samples": torch.zeros(1, 1, 16000)}, "AUDIO"),
        ({"waveform": torch.full((1, 1, 16000), float("nan")), "sample_rate": 16000}, "NaN"),
    ],
)
def test_encode_lips_rejects_bad_audio(handle, audio, match):
    with pytest.raises(InputError, match=match) as e:
        encode.PDFGC_EncodeLips().encode(handle, audio, 25.0, "official", 0.0)
    assert str(e.value).startswith("PD-FGC Encode Lips: audio")


@pytest.mark.slow  # inner loop: under 3 minutes (tests/README.md)
def test_driver_encoders_equal_core_and_run_only_their_head(handle, engine, pose_frames, comfy, monkeypatch):
    motion = handle.models.motion
    calls = []
    original = type(motion).forward
    monkeypatch.setattr(
        type(motion),
        "forward",
        lambda self, x, heads=("pose", "eye", "expression"): calls.append(tuple(heads)) or original(self, x, heads),
    )
    # (on CPU the engine may split a batch over its streams: several calls, each with the same heads)
    ref = engine.encode_drivers(images.prepare_batch(images.comfy_to_u8(pose_frames[2:]), "official"))
    assert calls and set(calls) == {("pose", "eye", "expression")}
    calls.clear()
    (pose,) = encode.PDFGC_EncodePose().encode(handle, pose_frames, "official", 2, 25.0)["result"]
    (eye,) = encode.PDFGC_EncodeEyes().encode(handle, pose_frames, "official", 2, 25.0)["result"]
    (expr,) = encode.PDFGC_EncodeExpression().encode(handle, pose_frames, "official", 2, 30.0)["result"]
    assert [heads for heads, _ in itertools.groupby(calls)] == [("pose",), ("eye",), ("expression",)]
    assert same(pose, ref["pose"]) and same(eye, ref["eye"]) and len(pose) == 4
    assert torch.equal(expr.values, ref["expression"].values) and expr.fps == 30.0
    calls.clear()
    both = encode.PDFGC_EncodeMotion().encode(handle, pose_frames, "official", 2, 25.0)["result"]
    assert calls and set(calls) == {("pose", "eye", "expression")}
    assert all(same(f, ref[k]) for f, k in zip(both, ("pose", "eye", "expression")))
    assert comfy.bars[-1].value == comfy.bars[-1].total == 4


@pytest.mark.slow  # full run only: end to end, and the inner loop must stay under 3 minutes
def test_driver_node_reproduces_the_official_frame_folder(handle, engine, tmp_path):
    """skip_first=2 on the frames of a folder = the core's official folder handling."""
    folder = tmp_path / "drv"
    folder.mkdir()
    files = media.list_frame_files(SAMPLES / "drivers" / "expression")[:10]
    for f in files:
        (folder / f.name).write_bytes(f.read_bytes())
    ref = pipeline.encode_driver(engine, pipeline.Driver(folder), ("expression",), 100, pipeline.RenderSettings())
    frames = comfy_image(np.stack([images.read_image(f) for f in files]))
    (expr,) = encode.PDFGC_EncodeExpression().encode(handle, frames, "official", 2, 25.0)["result"]
    assert same(expr, ref["expression"]) and len(expr) == 8


@pytest.mark.parametrize(
    "frames, skip, match",
    [
        (torch.zeros(0, 224, 224, 3), 0, "empty"),
        (torch.zeros(3, 224, 224, 3), 3, "skip_first=3 leaves none of the 3"),
        (torch.zeros(224, 224, 3), 0, r"\[frames, height, width, channels\]"),
        (torch.zeros(2, 224, 224, 5), 0, "5 channels"),
    ],
)
def test_driver_encoders_reject_bad_batches(handle, frames, skip, match):
    with pytest.raises(InputError, match=match) as e:
        encode.PDFGC_EncodePose().encode(handle, frames, "official", skip, 25.0)
    assert str(e.value).startswith("PD-FGC Encode Pose: images")


def test_encoders_honour_cancel(handle, pose_frames, comfy):
    comfy.interrupt_at = 1
    with pytest.raises(FakeComfy.Interrupted):
        encode.PDFGC_EncodeMotion().encode(handle, pose_frames, "official", 0, 25.0)


# --------------------------------------------------------------------------------------- factor ops


def test_factor_ops_equal_core():
    a, b = factor("expression", 5, 1), factor("expression", 3, 2)
    assert same(factor_nodes.PDFGC_ZeroFactor().zero(a)[0], F.zero(a))
    assert same(factor_nodes.PDFGC_FactorStrength().scale(a, 0.7)[0], F.scale(a, 0.7))
    mix = factor_nodes.PDFGC_MixFactors().mix
    assert same(
        mix(a, b, "constant", 0.25, 0, 1, "linear", 0, "loop")[0], F.mix(a, b, torch.full((5,), 0.25), fit="loop")
    )
    ramped = mix(a, b, "ramp", 0.5, 0.0, 1.0, "smoothstep", 9, "pingpong")[0]
    assert same(ramped, F.mix(a, b, F.ramp(9, 0.0, 1.0, curve="smoothstep"), fit="pingpong"))
    assert torch.equal(ramped.values[0], a.values[0]) and torch.equal(
        ramped.values[-1], F.fit_length(b, 9, "pingpong").values[-1]
    )
    eye, eye2 = factor("eye", 4, 3), factor("eye", 6, 4)
    blink, gaze = factor_nodes.PDFGC_SplitEyes().split(eye)
    assert same(blink, F.split_eye(eye)[0]) and same(gaze, F.split_eye(eye)[1])
    assert same(factor_nodes.PDFGC_MergeEyes().merge(blink, gaze, "loop")[0], eye)
    assert same(factor_nodes.PDFGC_MergeEyes().merge(eye, eye2, "hold")[0], F.merge_eye(eye, eye2, fit="hold"))
    assert same(
        factor_nodes.PDFGC_SmoothFactor().smooth(a, "gaussian", 5, 1.5, "replicate")[0],
        F.smooth(a, "gaussian", 5, 1.5, "replicate"),
    )
    assert same(factor_nodes.PDFGC_HoldFrame().hold(a, -1, 0)[0], F.hold(a, -1))
    assert len(factor_nodes.PDFGC_HoldFrame().hold(a, 2, 11)[0]) == 11
    assert same(factor_nodes.PDFGC_FitLength().fit(a, 12, "pingpong")[0], F.fit_length(a, 12, "pingpong"))
    assert same(factor_nodes.PDFGC_RetimeFactor().retime(a, 30.0, "linear")[0], F.retime(a, 30.0, "linear"))


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: factor_nodes.PDFGC_MixFactors().mix(
                factor("pose", 3), factor("eye", 3), "constant", 0.5, 0, 1, "linear", 0, "loop"
            ),
            "pose factor with an eye",
        ),
        (lambda: factor_nodes.PDFGC_SplitEyes().split(factor("pose", 3)), "must be an eye factor"),
        (lambda: factor_nodes.PDFGC_SmoothFactor().smooth(factor("pose", 3), "box", 4, 1.0, "official"), "odd"),
        (lambda: factor_nodes.PDFGC_FitLength().fit(factor("pose", 3), 5, "truncate"), "only shorten"),
        (lambda: factor_nodes.PDFGC_HoldFrame().hold(factor("pose", 3), 3, 0), "outside"),
        (lambda: factor_nodes.PDFGC_ZeroFactor().zero(torch.zeros(3, 6)), "expected a PD-FGC factor"),
    ],
)
def test_factor_ops_reject_bad_inputs(call, match):
    with pytest.raises(InputError, match=match):
        call()


COMBINE_DEFAULTS = dict(
    length=0,
    fit="loop",
    match_fps=True,
    post_process=True,
    **{f"{kind}_gain": gain for kind, gain in F.OFFICIAL_GAINS.items()},
    blink=True,
    gaze=True,
)


def combine(**kw):
    return factor_nodes.PDFGC_CombineMotion().combine(**{**COMBINE_DEFAULTS, **kw})


def test_combine_motion_equals_core_assembly():
    mouth, pose, eye, expr = factor("mouth", 7), factor("pose", 3, 1), factor("eye", 4, 2), factor("expression", 1, 3)
    motion, n = combine(mouth=mouth, pose=pose, eye=eye, expression=expr)
    assert n == 7 and torch.equal(motion, F.assemble_motion(7, mouth=mouth, expression=expr, eye=eye, pose=pose))
    # missing factors are zero; length given; fit mode; official post-processing off; eye switches
    motion, n = combine(pose=pose, length=10, fit="pingpong", post_process=False, blink=False)
    assert n == 10 and torch.equal(
        motion, F.assemble_motion(10, pose=pose, fit="pingpong", post=F.PostProcess.none(), blink=False)
    )
    assert not motion[:, : 542 - 6].any()
    motion, _ = combine(eye=eye, mouth=mouth, mouth_gain=2.0, eye_gain=0.5, gaze=False)
    assert torch.equal(
        motion, F.assemble_motion(7, mouth=mouth, eye=eye, gaze=False, post=F.PostProcess(mouth_gain=2.0, eye_gain=0.5))
    )
    # no mouth: the longest factor decides
    assert combine(pose=pose, eye=eye)[1] == 4


def test_combine_motion_matches_frame_rates():
    mouth, pose30 = factor("mouth", 10), factor("pose", 12, 1, fps=30.0)
    motion, _ = combine(mouth=mouth, pose=pose30)
    assert torch.equal(motion, F.assemble_motion(10, mouth=mouth, pose=F.retime(pose30, 25.0)))
    motion, _ = combine(mouth=mouth, pose=pose30, match_fps=False)
    assert torch.equal(motion, F.assemble_motion(10, mouth=mouth, pose=pose30))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({}, "connect at least one factor"),
        ({"pose": factor("eye", 3)}, "the pose input got an eye factor"),
        ({"mouth": factor("mouth", 3), "pose": factor("pose", 2), "fit": "truncate"}, "only shorten"),
    ],
)
def test_combine_motion_errors(kw, match):
    with pytest.raises(InputError, match=match):
        combine(**kw)


# --------------------------------------------------------------------------------------- generate


@pytest.mark.slow  # full run only: end to end, and the inner loop must stay under 3 minutes
def test_generate_equals_core_with_progress(handle, engine, portrait, comfy):
    (app,) = encode.PDFGC_EncodeAppearance().encode(handle, portrait, "official")["result"]
    motion, _ = combine(mouth=factor("mouth", 3), pose=factor("pose", 3, 1))
    (frames,) = generate.PDFGC_Generate().generate(handle, app, motion, 2, -1, watermark=False)
    ref = images.network_to_comfy(engine.generate_all(app, motion, batch_size=2))
    assert frames.shape == (3, 224, 224, 3) and frames.dtype == torch.float32
    assert torch.equal(frames, ref) and 0 <= frames.min() and frames.max() <= 1
    (marked,) = generate.PDFGC_Generate().generate(handle, app, motion, 2, -1)  # default: watermarked
    assert torch.equal(marked, provenance.embed(ref)) and provenance.detect(marked, search=False).found
    assert comfy.bars[-1].value == comfy.bars[-1].total == 3
    assert comfy.checks >= 2  # once per batch
    comfy.interrupt_at = comfy.checks + 2  # Cancel during the second batch
    with pytest.raises(FakeComfy.Interrupted):
        generate.PDFGC_Generate().generate(handle, app, motion, 1, -1)


@pytest.mark.slow  # full run only: end to end, and the inner loop must stay under 3 minutes
def test_generate_seeded_noise(handle, engine, portrait):
    (app,) = encode.PDFGC_EncodeAppearance().encode(handle, portrait, "official")["result"]
    motion, _ = combine(length=1)
    (a,) = generate.PDFGC_Generate().generate(handle, app, motion, 8, 7)
    assert torch.equal(a, provenance.embed(images.network_to_comfy(engine.generate_all(app, motion, noise=7))))
    (b,) = generate.PDFGC_Generate().generate(handle, app, motion, 8, -1)
    assert not torch.equal(a, b)


@pytest.mark.parametrize(
    "appearance, motion, match",
    [
        ("not an appearance", torch.zeros(2, 542), "appearance must come from"),
        (None, torch.zeros(2, 500), r"motion must come from PD-FGC Combine Motion \(\[frames, 542\]\)"),
        (None, torch.zeros(0, 542), "0 frames"),
        (None, torch.full((2, 542), float("nan")), "NaN"),
    ],
)
def test_generate_rejects_bad_inputs(handle, appearance, motion, match):
    app = appearance if appearance is not None else Appearance(torch.zeros(1, 2048), torch.zeros(1, 512, 7, 7))
    with pytest.raises(InputError, match=match):
        generate.PDFGC_Generate().generate(handle, app, motion, 8, -1)


# --------------------------------------------------------------------------------------- factor files


def test_save_and_load_factor_round_trip(folders):
    f = factor("pose", 5, fps=30.0)
    save = factor_io.PDFGC_SaveFactor().save
    first = save(f, "pdfgc/head")
    second = save(f, "pdfgc/head")
    assert first["result"] == ("pdfgc/head_00001_.safetensors [output]",)
    assert second["result"] == ("pdfgc/head_00002_.safetensors [output]",)
    assert first["ui"]["factors"][0] == {
        "filename": "head_00001_.safetensors",
        "subfolder": "pdfgc",
        "type": "output",
        "kind": "pose",
        "frames": 5,
    }
    out = folders.root / "output" / "pdfgc" / "head_00001_.safetensors"
    assert same(F.load_factor(out), f)

    F.save_factor(factor("eye", 2), folders.root / "input" / "eyes.safetensors")
    (folders.root / "input" / "other.safetensors").write_bytes(b"not a factor")
    listed = factor_io.PDFGC_LoadFactor.INPUT_TYPES()["required"]["file"][0]
    assert listed == [
        "eyes.safetensors",
        "pdfgc/head_00001_.safetensors [output]",
        "pdfgc/head_00002_.safetensors [output]",
    ]
    load = factor_io.PDFGC_LoadFactor().load
    loaded, n = load(first["result"][0], "pose")
    assert same(loaded, f) and n == 5
    loaded, _ = load("eyes.safetensors", "any", path=str(out))  # path wins
    assert same(loaded, f)
    assert load("eyes.safetensors", "any")[0].kind == "eye"
    with pytest.raises(InputError, match="holds an eye factor, but a pose factor is needed"):
        load("eyes.safetensors", "pose")
    with pytest.raises(MediaError, match="does not exist"):
        load("gone.safetensors", "any")
    with pytest.raises(InputError, match="not a readable"):
        load("other.safetensors", "any")
    assert factor_io.PDFGC_LoadFactor.IS_CHANGED("eyes.safetensors", "any") != ""


def test_save_factor_stays_in_the_output_folder(folders):
    for prefix in ("../escape", "/abs/path", "a/.."):
        with pytest.raises(InputError, match="inside the output folder"):
            factor_io.PDFGC_SaveFactor().save(factor("pose", 2), prefix)


def test_load_factor_with_no_files(folders):
    assert factor_io.PDFGC_LoadFactor.INPUT_TYPES()["required"]["file"][0] == [factor_io.NO_FILES]
    with pytest.raises(MediaError, match="no factor files"):
        factor_io.PDFGC_LoadFactor().load(factor_io.NO_FILES, "any")
