"""Checkpoint loading: every accepted source gives the same networks; every broken, foreign or
hostile file gives a CheckpointError that names the file (and the key) and says what to do.

Sources are built from the cached official-layout synthetic weights (``weights_for(1)``, ~585 MB):
unchanged files are symlinked, only the file under test is rewritten. The loader reads the
networks smallest file first (audio, motion, appearance, generator), so most broken variants
break ``audio_model.pth`` and fail after reading ~30 MB.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pdfgc_core import CheckpointError
from pdfgc_core.checkpoints import (
    FORMAT_NAME,
    FORMAT_VERSION,
    LOAD_ORDER,
    NETWORKS,
    OFFICIAL_FILES,
    load_models,
    save_safetensors,
)
from pdfgc_core.cli import main as cli_main
from pdfgc_core.engine import MOTION_DIM, Engine
from pdfgc_core.images import network_to_u8

# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def official(weights_for) -> Path:
    return weights_for(1)


@functools.lru_cache(maxsize=2)
def _raw_cached(folder: str, net: str) -> dict:
    return torch.load(Path(folder) / OFFICIAL_FILES[net], map_location="cpu", weights_only=True)


def raw(official: Path, net: str) -> dict:
    """A fresh (shallow) copy of the official-layout state dict of ``net``."""
    return dict(_raw_cached(str(official), net))


def variant(tmp_path: Path, official: Path, **files) -> Path:
    """A checkpoint folder: ``files`` maps a network to a state dict (saved with torch.save) or to raw
    bytes; every other official file is a symlink to the cached one."""
    d = tmp_path / "ckpt"
    d.mkdir(exist_ok=True)
    for net, fname in OFFICIAL_FILES.items():
        dst = d / fname
        if net not in files:
            dst.symlink_to(official / fname)
        elif isinstance(files[net], (bytes, bytearray)):
            dst.write_bytes(files[net])
        else:
            torch.save(files[net], dst)
    return d


def expect_error(path, *fragments: str) -> str:
    with pytest.raises(CheckpointError) as ei:
        load_models(path)
    msg = str(ei.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    assert len(msg) < 2000
    return msg


def small_forward(models) -> dict[str, torch.Tensor]:
    """One small pass through every network (1 image, 2 mel windows, 1 frame)."""
    g = torch.Generator().manual_seed(5)
    img = torch.rand(1, 3, 224, 224, generator=g) * 2 - 1
    mel = torch.rand(2, 1, 80, 20, generator=g)
    motion = torch.randn(1, MOTION_DIM, generator=g)
    eng = Engine(models, device="cpu", precision="fp32")
    app = eng.encode_appearance(img)
    out = {"id_vector": app.id_vector, "id_map": app.id_map, "mouth": eng.encode_mouth(mel).values}
    out.update({k: f.values for k, f in eng.encode_drivers(img).items()})
    out["frame"] = eng.generate_all(app, motion)
    return out


def state_equal(a, b) -> bool:
    for net in NETWORKS:
        sa, sb = getattr(a, net).state_dict(), getattr(b, net).state_dict()
        if sa.keys() != sb.keys() or not all(torch.equal(sa[k], sb[k]) for k in sa):
            return False
    return True


@pytest.fixture(scope="module")
def folder_models(official):
    return load_models(official)


# --------------------------------------------------------------------------- accepted sources


@pytest.mark.slow  # inner loop: under 3 minutes (tests/README.md)
def test_folder_and_safetensors_identical(folder_models, official, tmp_path):
    from safetensors import safe_open

    assert folder_models.report.kind == "official-folder" and not folder_models.report.warnings
    assert any("ignored" in m and "(input, style)" in m for m in folder_models.report.info)
    dst = save_safetensors(folder_models, tmp_path / "pdfgc.safetensors")
    with safe_open(str(dst), framework="pt") as f:
        meta, keys = f.metadata(), list(f.keys())
    assert meta["format"] == FORMAT_NAME and meta["format_version"] == str(FORMAT_VERSION)
    assert meta["dtype"] == "float32"
    dropped = [k for k in keys if k.startswith(("generator.style.", "generator.input.", "appearance.fc."))]
    assert not dropped and any(k.startswith("generator.noises.") for k in keys)
    assert {k.split(".")[0] for k in keys} == set(NETWORKS)
    st = load_models(dst)
    assert st.report.kind == "safetensors" and not st.report.warnings
    assert state_equal(folder_models, st)
    a, b = small_forward(folder_models), small_forward(st)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_checkpoints_subfolder_and_pth_path(official, tmp_path):
    d = tmp_path / "models" / "checkpoints"
    d.mkdir(parents=True)
    for f in OFFICIAL_FILES.values():
        (d / f).symlink_to(official / f)
    # Both forms resolve to the same four files (checked without reading them; the slow test loads them).
    from pdfgc_core.checkpoints import open_checkpoint

    for p in (tmp_path / "models", d / "generator_model.pth"):
        with open_checkpoint(p) as (kind, meta, readers):
            assert kind == "official-folder" and set(readers) == set(NETWORKS)
            assert all(Path(where).parent == d for where, _ in readers.values())


@pytest.mark.slow
def test_pth_path_tar_and_fp16_convert(folder_models, official, tmp_path, capsys):
    ref = small_forward(folder_models)
    via_pth = load_models(official / "motion_model.pth")
    assert state_equal(folder_models, via_pth)
    del via_pth

    tar = tmp_path / "checkpoints.tar"
    with tarfile.open(tar, "w") as t:
        for f in OFFICIAL_FILES.values():
            t.add(official / f, arcname=f"checkpoints/{f}")  # follows the cache's real files
    via_tar = load_models(tar)
    assert via_tar.report.kind == "official-tar" and state_equal(folder_models, via_tar)
    del via_tar

    dst = tmp_path / "half.safetensors"
    assert cli_main(["convert", str(tar), str(dst), "--fp16"]) == 0
    assert "wrote" in capsys.readouterr().out
    half = load_models(dst)
    from safetensors import safe_open

    with safe_open(str(dst), framework="pt") as f:
        assert f.metadata()["dtype"] == "float16" and f.metadata()["converted_from"] == "checkpoints.tar"
        assert f.get_tensor("generator.conv1.conv.weight").dtype == torch.float16
        assert f.get_tensor("generator.noises.noise_0").dtype == torch.float32
        assert f.metadata()["format_version"] == str(FORMAT_VERSION)
        assert not [k for k in f.keys() if k.startswith(("generator.style.", "generator.input.", "appearance.fc."))]
    worst_rel = 0.0
    for net in NETWORKS:
        sa, sb = getattr(folder_models, net).state_dict(), getattr(half, net).state_dict()
        for k, v in sa.items():
            if v.is_floating_point():  # fp16 rounding: relative 2^-11, absolute 2^-25 below the normals
                err = (sb[k] - v).abs()
                assert bool((err <= v.abs() * 2.0**-11 + 2.0**-24).all()), (net, k)
                worst_rel = max(worst_rel, float((err / v.abs().clamp_min(1e-3)).max()))
    got = small_forward(half)
    rel = {k: float((got[k] - ref[k]).pow(2).mean().sqrt() / ref[k].pow(2).mean().sqrt()) for k in ref}
    levels = np.abs(network_to_u8(got["frame"]).astype(int) - network_to_u8(ref["frame"]).astype(int))
    print(
        f"fp16 weights vs fp32: max relative weight error {worst_rel:.2e}; output relative RMS differences "
        f"{ {k: round(v, 4) for k, v in rel.items()} }; frame: mean {levels.mean():.2f}, max {levels.max()} levels"
    )
    # Bound (synthetic weights, measured: id_map 5.4 %, frame 3.3 %, others < 2 %; mean 1.9 levels):
    # fp16 storage is a size option, not a parity mode.
    assert all(v < 0.08 for v in rel.values()) and levels.mean() < 4


# --------------------------------------------------------------------------- missing / unreadable


def test_missing_path_and_unsupported_file(tmp_path):
    expect_error(tmp_path / "nope", "nope", "no such file", "checkpoints.tar")
    other = tmp_path / "model.bin"
    other.write_bytes(b"\0" * 100)
    expect_error(other, "model.bin", "unsupported checkpoint")


def test_folder_missing_one_file(official, tmp_path):
    d = tmp_path / "three"
    d.mkdir()
    for net in ("appearance", "motion", "audio"):
        (d / OFFICIAL_FILES[net]).symlink_to(official / OFFICIAL_FILES[net])
    msg = expect_error(d, str(d), "missing generator_model.pth", "found: appearance_model.pth")
    assert "appearance_model.pth," not in msg.split("missing")[1].split("(")[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    expect_error(empty, "found: nothing")


def test_truncated_pth(official, tmp_path):
    data = (official / "audio_model.pth").read_bytes()
    d = variant(tmp_path, official, audio=data[: len(data) // 2])
    expect_error(d, str(d / "audio_model.pth"), "truncated or corrupted", "Download it again")
    (tmp_path / "empty").mkdir()
    expect_error(variant(tmp_path / "empty", official, audio=b""), "audio_model.pth", "truncated or corrupted")


def test_corrupted_bytes_are_detected(official, tmp_path):
    data = bytearray((official / "audio_model.pth").read_bytes())
    mid = len(data) // 2  # inside the tensor data: torch itself would load the damaged values silently
    data[mid : mid + 16] = bytes(b ^ 0x5A for b in data[mid : mid + 16])
    d = variant(tmp_path, official, audio=bytes(data))
    expect_error(d, str(d / "audio_model.pth"), "corrupted", "checksum", "Download it again")
    head = bytearray((official / "audio_model.pth").read_bytes())
    head[:64] = os.urandom(64)
    d2 = tmp_path / "h"
    d2.mkdir()
    expect_error(variant(d2, official, audio=bytes(head)), "audio_model.pth", "Download it again")


def test_random_bytes_named_pth(official, tmp_path):
    d = variant(tmp_path, official, audio=os.urandom(4096))
    expect_error(d, "audio_model.pth", "Download it again")


# --------------------------------------------------------------------------- wrong content


def _resnet18_like() -> dict:
    """A torchvision-style ResNet state dict (another model), built here without torchvision."""
    sd = {"conv1.weight": torch.randn(64, 3, 7, 7)}
    for bn, c in (("bn1", 64), ("layer1.0.bn1", 64), ("layer2.0.bn1", 128)):
        sd.update(
            {
                f"{bn}.weight": torch.ones(c),
                f"{bn}.bias": torch.zeros(c),
                f"{bn}.running_mean": torch.zeros(c),
                f"{bn}.running_var": torch.ones(c),
                f"{bn}.num_batches_tracked": torch.tensor(0),
            }
        )
    sd.update(
        {
            "layer1.0.conv1.weight": torch.randn(64, 64, 3, 3),
            "layer2.0.conv1.weight": torch.randn(128, 64, 3, 3),
            "fc.weight": torch.randn(1000, 512),
            "fc.bias": torch.zeros(1000),
        }
    )
    return sd


def test_pth_of_another_model(official, tmp_path):
    d = variant(tmp_path, official, audio=_resnet18_like())
    expect_error(d, str(d / "audio_model.pth"), "none of the", "not a PD-FGC audio checkpoint", "checkpoints.tar")


def test_swapped_files(official, tmp_path):
    d = tmp_path / "swapped"
    d.mkdir()
    for net, fname in OFFICIAL_FILES.items():
        src = {"audio": "motion", "motion": "audio"}.get(net, net)
        (d / fname).symlink_to(official / OFFICIAL_FILES[src])
    expect_error(d, str(d / "audio_model.pth"), "audio network")


def test_not_a_state_dict(official, tmp_path):
    d = variant(tmp_path, official, audio=[torch.zeros(3)])
    expect_error(d, "audio_model.pth", "not a state dict of tensors")
    d2 = tmp_path / "b"
    d2.mkdir()
    expect_error(variant(d2, official, audio={"epoch": 3, "w": torch.zeros(2)}), "audio_model.pth", "non-tensor")


def test_state_dict_wrapper_is_unwrapped(official, tmp_path):
    sd = raw(official, "audio")
    sd["model.conv1.weight"] = torch.full_like(sd["model.conv1.weight"], float("nan"))
    d = variant(tmp_path, official, audio={"state_dict": sd, "epoch": torch.tensor(7)})
    expect_error(d, "model.conv1.weight", "NaN")  # the wrapped dict was validated, not refused


def test_missing_key(official, tmp_path):
    sd = raw(official, "audio")
    del sd["mouth_embed.1.weight"]
    d = variant(tmp_path, official, audio=sd)
    expect_error(d, str(d / "audio_model.pth"), "missing", "mouth_embed.1.weight")


def test_misshaped_key(official, tmp_path):
    sd = raw(official, "audio")
    sd["mouth_embed.1.weight"] = torch.zeros(400, 512)
    d = variant(tmp_path, official, audio=sd)
    expect_error(d, "audio_model.pth", "mis-shaped", "mouth_embed.1.weight (400, 512) (expected (500, 512))")


def test_wrong_dtype(official, tmp_path):
    sd = raw(official, "audio")
    sd["mouth_embed.1.weight"] = sd["mouth_embed.1.weight"].to(torch.int32)
    d = variant(tmp_path, official, audio=sd)
    expect_error(d, "audio_model.pth", "mouth_embed.1.weight", "torch.int32", "expected torch.float32")
    sd = raw(official, "audio")
    sd["mouth_embed.1.bias"] = sd["mouth_embed.1.bias"].bool()
    d2 = tmp_path / "b"
    d2.mkdir()
    expect_error(variant(d2, official, audio=sd), "mouth_embed.1.bias", "torch.bool")


def test_nan_and_inf_tensors(official, tmp_path):
    sd = raw(official, "motion")
    k = next(k for k in sd if k.endswith("running_var"))
    sd[k] = torch.full_like(sd[k], float("nan"))
    d = variant(tmp_path, official, motion=sd)
    expect_error(d, str(d / "motion_model.pth"), k, "NaN or infinite", "Download it again")
    sd = raw(official, "audio")
    sd["mouth_embed.1.bias"] = sd["mouth_embed.1.bias"].clone()
    sd["mouth_embed.1.bias"][3] = float("inf")
    d2 = tmp_path / "b"
    d2.mkdir()
    expect_error(variant(d2, official, audio=sd), "mouth_embed.1.bias", "NaN or infinite")


@pytest.mark.slow  # inner loop: under 3 minutes (tests/README.md)
def test_prefix_extras_noise_and_kernel_policy(official, tmp_path):
    """One full load through every tolerated irregularity: 'module.' prefix, known and unknown
    extra keys, no stored generator noise, a non-standard blur kernel."""
    from pdfgc_core.networks.generator import CHECKPOINT_CONSTANT_BUFFERS

    audio = raw(official, "audio")
    audio["model.fc_exp.weight"] = torch.zeros(3)  # expression branch of training: known, ignored quietly
    audio["surprise.weight"] = torch.zeros(3)  # unknown: warned about
    audio = {f"module.{k}": v for k, v in audio.items()}
    gen = raw(official, "generator")
    noises = sorted(k for k in gen if k.startswith("noises."))
    for k in noises:
        del gen[k]
    kernel = next(iter(CHECKPOINT_CONSTANT_BUFFERS))
    gen[kernel] = gen[kernel] * 2
    d = variant(tmp_path, official, audio=audio, generator=gen)
    m = load_models(d)
    info, warns = " | ".join(m.report.info), " | ".join(m.report.warnings)
    assert "stripped the 'module.' prefix" in info and "audio_model.pth" in info
    assert "ignored 1 key(s) that inference does not use (model)" in info
    assert "(input, style)" in info and "(fc, model)" in info and "(mouth_embed, to_mouth)" in info
    assert "unexpected key(s), e.g. surprise.weight" in warns
    assert f"no stored noise buffers ({len(noises)} missing)" in warns and "seeded random noise" in warns
    assert kernel in warns and "standard" in warns
    assert len(m.report.warnings) == 3
    g = torch.Generator().manual_seed(20202001)  # the documented seed of the fallback noise
    stored = dict(m.generator.named_buffers())
    for i in range(len(noises)):
        k = f"noises.noise_{i}"
        assert torch.equal(stored[k], torch.randn(stored[k].shape, generator=g)), k
    ref_kernel = CHECKPOINT_CONSTANT_BUFFERS[kernel]
    assert all(not torch.equal(b, gen[kernel]) for b in stored.values() if b.shape == ref_kernel.shape)
    frame = Engine(m, device="cpu").generate_all(
        Engine(m).encode_appearance(torch.zeros(1, 3, 224, 224)), torch.zeros(1, MOTION_DIM)
    )
    assert bool(torch.isfinite(frame).all())


# --------------------------------------------------------------------------- hostile pickles


class _RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _RunsPython:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import builtins

        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _evil_files(marker: Path) -> dict[str, bytes]:
    """Real .pth files whose unpickling would create ``marker``, in every format torch.load reads."""
    payload = {"model.conv1.weight": torch.zeros(1), "x": _RunsShell(marker)}
    out = {}
    for name, kw in (("zip", {}), ("legacy", {"_use_new_zipfile_serialization": False})):
        buf = io.BytesIO()
        torch.save(payload, buf, **kw)
        out[name] = buf.getvalue()
    out["pickle-p2-exec"] = pickle.dumps({"w": _RunsPython(marker)}, protocol=2)
    out["pickle-p4"] = pickle.dumps({"w": _RunsShell(marker)}, protocol=4)
    return out


def test_evil_payloads_really_run_code_when_unpickled(tmp_path):
    """Control: the crafted files are real exploits (plain pickle would run them)."""
    marker = tmp_path / "MARKER"
    for name, data in _evil_files(marker).items():
        if name.startswith("pickle"):
            pickle.loads(data)
            assert marker.exists(), name
            marker.unlink()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", ["zip", "legacy", "pickle-p2-exec", "pickle-p4"])
def test_malicious_pickle_is_refused(official, tmp_path, kind):
    marker = tmp_path / "MARKER"
    d = variant(tmp_path, official, audio=_evil_files(marker)[kind])
    msg = expect_error(d, str(d / "audio_model.pth"), "refused")
    if kind != "pickle-p4":  # protocol 4 stops at an opcode before any global is named
        assert "could run arbitrary code" in msg and ("posix.system" in msg or "exec" in msg)
    assert not marker.exists()
    assert cli_main(["info", str(d)]) == 2
    assert not marker.exists()


def _fake_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def _tiny_pth() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    return buf.getvalue()


def test_malicious_pickle_inside_tar(tmp_path):
    marker = tmp_path / "MARKER"
    members = {f"checkpoints/{f}": _tiny_pth() for f in OFFICIAL_FILES.values()}
    members["checkpoints/audio_model.pth"] = _evil_files(marker)["zip"]
    tar = _fake_tar(tmp_path / "checkpoints.tar", members)
    expect_error(tar, "checkpoints.tar:checkpoints/audio_model.pth", "refused", "posix.system")
    assert not marker.exists()
    assert LOAD_ORDER[0] == "audio"


def test_tar_errors(tmp_path):
    good = {f"checkpoints/{f}": _tiny_pth() for f in OFFICIAL_FILES.values()}
    incomplete = dict(good)
    del incomplete["checkpoints/generator_model.pth"]
    expect_error(_fake_tar(tmp_path / "a.tar", incomplete), "a.tar", "does not contain generator_model.pth")
    full = _fake_tar(tmp_path / "b.tar", good).read_bytes()
    (tmp_path / "trunc.tar").write_bytes(full[: len(full) // 3])
    expect_error(tmp_path / "trunc.tar", "trunc.tar", "Download")
    (tmp_path / "junk.tar").write_bytes(os.urandom(3000))
    expect_error(tmp_path / "junk.tar", "junk.tar", "cannot be read as a tar archive")
    # the tiny members are readable but are not PD-FGC networks
    expect_error(tmp_path / "b.tar", "b.tar:checkpoints/audio_model.pth", "none of the")


# --------------------------------------------------------------------------- foreign .safetensors


def _st(path: Path, tensors: dict, meta: dict | None) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=meta)
    return path


def test_safetensors_of_another_model(tmp_path):
    p = _st(tmp_path / "sdxl.safetensors", {"model.diffusion.weight": torch.zeros(4)}, None)
    expect_error(p, "sdxl.safetensors", "not written by ComfyUI-PD-FGC", "probably another model")
    p = _st(tmp_path / "lora.safetensors", {"w": torch.zeros(4)}, {"format": "pt"})
    expect_error(p, "lora.safetensors", "format='pt'")


def test_safetensors_future_or_bad_version(tmp_path):
    for v in (str(FORMAT_VERSION + 1), "0", "x"):
        p = _st(
            tmp_path / f"v{v}.safetensors", {"audio.w": torch.zeros(1)}, {"format": FORMAT_NAME, "format_version": v}
        )
        expect_error(p, p.name, f"format version {v!r}", "update the node pack")


def test_safetensors_foreign_key_and_incomplete(official, tmp_path):
    meta = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)}
    p = _st(tmp_path / "k.safetensors", {"audio.w": torch.zeros(1), "vae.w": torch.zeros(1)}, meta)
    expect_error(p, "k.safetensors", "unexpected key 'vae.w'")
    audio = {f"audio.{k}": v.contiguous() for k, v in raw(official, "audio").items()}
    p = _st(tmp_path / "only_audio.safetensors", audio, meta)
    expect_error(p, "only_audio.safetensors[motion]", "none of the", "motion")


def test_safetensors_truncated_and_corrupted(official, tmp_path):
    meta = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)}
    audio = {f"audio.{k}": v.contiguous() for k, v in raw(official, "audio").items()}
    data = _st(tmp_path / "a.safetensors", audio, meta).read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[: len(data) - 1000])
    expect_error(tmp_path / "t.safetensors", "t.safetensors", "truncated or corrupted", "convert")
    (tmp_path / "h.safetensors").write_bytes(b"\xff" * 8 + data[8:])
    expect_error(tmp_path / "h.safetensors", "h.safetensors", "truncated or corrupted")
    (tmp_path / "deep.safetensors").write_bytes(len(b"[" * 5000).to_bytes(8, "little") + b"[" * 5000)
    expect_error(tmp_path / "deep.safetensors", "deep.safetensors")


# --------------------------------------------------------------------------- command line


def test_cli_reports_checkpoint_errors(official, tmp_path, capsys):
    d = variant(tmp_path, official, audio=b"garbage")
    assert cli_main(["info", str(d)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "audio_model.pth" in err and "Traceback" not in err
    assert cli_main(["convert", str(tmp_path / "missing"), str(tmp_path / "out.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "out.safetensors").exists() and not list(tmp_path.glob(".out*"))


def test_old_pytorch_refuses_pth(official, tmp_path, monkeypatch):
    """PyTorch < 2.10 has published weights_only bypasses: .pth files are refused there unless the user
    opts in; .safetensors files are unaffected."""
    monkeypatch.setattr(torch, "__version__", "2.5.1+cu121")
    d = variant(tmp_path, official, audio=b"not read")
    msg = expect_error(d, "audio_model.pth", "PyTorch 2.5.1+cu121", "Upgrade PyTorch to 2.10", "PDFGC_TRUST_PTH=1")
    assert "convert" in msg
    monkeypatch.setenv("PDFGC_TRUST_PTH", "1")
    msg = expect_error(d, "audio_model.pth", "Download it again")  # opted in: the file is read (and is junk)
    assert "PyTorch 2.5.1" not in msg
    p = _st(tmp_path / "v.safetensors", {"audio.w": torch.zeros(1)}, {"format": FORMAT_NAME, "format_version": "9"})
    expect_error(p, "format version '9'")  # safetensors never goes through the pickle gate
