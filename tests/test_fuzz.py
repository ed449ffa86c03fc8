"""Bounded fuzzing of every loader that reads user files or user arrays: whatever the bytes or
values, the only exceptions that may escape are pdfgc_core's own (PDFGCError subclasses).

Examples are derandomised (deterministic in CI) and few; the whole file runs in well under a
minute. Targets: our .safetensors reader and the .pth reader (through ``load_models``), the
validation of odd tensors, ``audio.load_audio`` on random and mutated files, and
``audio.audio_to_windows`` on random arrays.
"""

from __future__ import annotations

import io
import struct
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pdfgc_core import PDFGCError
from pdfgc_core import audio as A
from pdfgc_core.checkpoints import (
    FORMAT_NAME,
    FORMAT_VERSION,
    OFFICIAL_FILES,
    build_network,
    load_models,
)
from pdfgc_core.checkpoints.validate import _clean, _model_keys

FUZZ = settings(
    max_examples=40,
    deadline=timedelta(seconds=20),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------- mutations


@st.composite
def mutated(draw, base: bytes, hot: int = 256):
    """``base`` with a few byte edits (biased to the first ``hot`` bytes, where headers live),
    maybe truncated, maybe with bytes inserted."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        limit = min(hot, len(data)) if draw(st.booleans()) else len(data)
        if limit == 0:
            break
        pos = draw(st.integers(0, limit - 1))
        op = draw(st.sampled_from(["set", "flip", "insert", "delete"]))
        if op == "set":
            data[pos] = draw(st.integers(0, 255))
        elif op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[pos : pos + draw(st.integers(1, 8))]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def only_our_errors(fn, *args, **kw):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn(*args, **kw)
    except PDFGCError as e:
        event(f"{fn.__name__}: {type(e).__name__}")
        return None
    event(f"{fn.__name__}: ok")
    return out
    # any other exception propagates and fails the example


# --------------------------------------------------------------------------- checkpoints


def _small_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "mouth_embed.1.bias": torch.randn(500, generator=g),
        "model.bn1.running_var": torch.rand(32, generator=g),
        "model.bn1.num_batches_tracked": torch.tensor(3),
    }


def _small_safetensors() -> bytes:
    from safetensors.torch import save

    return save(
        {f"audio.{k}": v for k, v in _small_state().items()},
        metadata={"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "dtype": "float32"},
    )


def _small_pth() -> bytes:
    buf = io.BytesIO()
    torch.save(_small_state(), buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    """A folder with placeholder official files; the fuzzed file is written as audio_model.pth,
    which is read first, so the placeholders are never reached."""
    d = tmp_path_factory.mktemp("fuzzckpt")
    for f in OFFICIAL_FILES.values():
        (d / f).write_bytes(b"placeholder")
    return d


def test_small_files_are_valid_until_mutated(ckpt_dir):
    """The fuzz bases parse; they fail only at validation (incomplete network), as CheckpointError."""
    p = ckpt_dir / "base.safetensors"
    p.write_bytes(_small_safetensors())
    with pytest.raises(PDFGCError, match="missing"):
        load_models(p)
    (ckpt_dir / "audio_model.pth").write_bytes(_small_pth())
    with pytest.raises(PDFGCError, match="missing"):
        load_models(ckpt_dir)


@FUZZ
@given(data=mutated(_small_safetensors()))
def test_fuzz_safetensors_reader(ckpt_dir, data):
    p = ckpt_dir / "fuzz.safetensors"
    p.write_bytes(data)
    only_our_errors(load_models, p)


@FUZZ
@given(data=mutated(_small_pth(), hot=4096))
def test_fuzz_pth_reader(ckpt_dir, data):
    (ckpt_dir / "audio_model.pth").write_bytes(data)
    only_our_errors(load_models, ckpt_dir)


_ODD_DTYPES = [
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int8,
    torch.uint8,
    torch.int64,
    torch.bool,
    torch.complex64,
    torch.complex128,
] + [d for d in (getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None)) if d is not None]


@pytest.fixture(scope="module")
def audio_keys():
    keys = _model_keys(build_network("audio"))
    return keys, {k: torch.zeros(shape, dtype=dt) for k, (shape, dt) in keys.items()}


@FUZZ
@given(
    key_index=st.integers(0, 10_000),
    dtype=st.sampled_from(_ODD_DTYPES),
    fill=st.sampled_from([0.0, 1.0, -3e38, float("nan"), float("inf")]),
    reshape=st.booleans(),
)
@pytest.mark.slow  # full run only: end to end, and the inner loop must stay under 3 minutes
def test_fuzz_validation_of_odd_tensors(audio_keys, key_index, dtype, fill, reshape):
    """A complete audio state dict with one tensor of another dtype / value / shape: validated or
    refused with CheckpointError, never a torch error."""
    from pdfgc_core.checkpoints import LoadReport

    audio_keys, sd = audio_keys[0], dict(audio_keys[1])
    key = list(sd)[key_index % len(sd)]
    shape = audio_keys[key][0]
    t = torch.full(shape if not reshape else (*shape, 1), fill, dtype=torch.float64)
    sd[key] = t.to(dtype)
    out = only_our_errors(_clean, "audio", "fuzz.pth", sd, audio_keys, LoadReport())
    if out is not None:
        assert all(v.dtype == audio_keys[k][1] for k, v in out.items())
        assert all(bool(torch.isfinite(v).all()) for v in out.values() if v.is_floating_point())


# --------------------------------------------------------------------------- audio files


def _wav_bytes(seconds=0.2, sr=16000, channels=1, subtype="PCM_16") -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    x = np.stack([0.3 * np.sin(2 * np.pi * (220 + 50 * c) * t) for c in range(channels)], 1)
    buf = io.BytesIO()
    sf.write(buf, x, sr, subtype=subtype, format="WAV")
    return buf.getvalue()


def _wav_header(channels: int, sr: int, bits: int, fmt: int, data_size: int) -> bytes:
    block = max(1, channels * bits // 8) & 0xFFFF
    fmt_chunk = struct.pack("<4sIHHIIHH", b"fmt ", 16, fmt, channels, sr, (sr * block) & 0xFFFFFFFF, block, bits)
    riff = struct.pack("<I", (36 + data_size) & 0xFFFFFFFF)
    return b"RIFF" + riff + b"WAVE" + fmt_chunk + b"data" + struct.pack("<I", data_size)


def _check_loaded(res):
    if res is None:
        return
    wave, sr = res
    assert isinstance(wave, np.ndarray) and wave.dtype == np.float32 and wave.ndim == 2 and wave.shape[1] > 0
    assert isinstance(sr, int)
    # the rest of the chain accepts it or says why
    only_our_errors(A.audio_to_windows, wave, sr, quality="fast")


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzzaudio")


@FUZZ
@given(data=mutated(_wav_bytes(), hot=64), suffix=st.sampled_from([".wav", ".mp3", ".bin"]))
def test_fuzz_mutated_wav(audio_dir, data, suffix):
    p = audio_dir / f"m{suffix}"
    p.write_bytes(data)
    _check_loaded(only_our_errors(A.load_audio, p))


@st.composite
def wav_headers(draw):
    """Mostly sane 16-bit PCM headers with one field (sometimes all) replaced by an odd value."""
    fields = {
        "channels": draw(st.integers(1, 2)),
        "sr": draw(st.sampled_from([8000, 16000, 44100, 48000])),
        "bits": 16,
        "fmt": 1,
        "size": draw(st.integers(0, 4000)),
    }
    odd = {
        "channels": st.integers(0, 65535),
        "sr": st.integers(0, 2**32 - 1),
        "bits": st.sampled_from([0, 7, 8, 24, 32, 64]),
        "fmt": st.sampled_from([3, 6, 7, 0xFFFE, 0, 99]),
        "size": st.integers(0, 2**32 - 1),
    }
    which = draw(st.sampled_from([None, "all", *odd]))
    for name in odd if which == "all" else [which] if which else []:
        fields[name] = draw(odd[name])
    return fields


@FUZZ
@given(header=wav_headers(), body=st.binary(min_size=0, max_size=4096))
def test_fuzz_wav_headers(audio_dir, header, body):
    p = audio_dir / "h.wav"
    p.write_bytes(_wav_header(header["channels"], header["sr"], header["bits"], header["fmt"], header["size"]) + body)
    _check_loaded(only_our_errors(A.load_audio, p))


@settings(FUZZ, max_examples=15)
@given(data=st.binary(min_size=0, max_size=4096), suffix=st.sampled_from([".wav", ".flac", ".ogg", ".m4a", ".mp4"]))
def test_fuzz_random_audio_bytes(audio_dir, data, suffix):
    p = audio_dir / f"r{suffix}"
    p.write_bytes(data)
    _check_loaded(only_our_errors(A.load_audio, p))


# --------------------------------------------------------------------------- waveform arrays


_NP_DTYPES = [
    np.float16,
    np.float32,
    np.float64,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.bool_,
    np.complex64,
]


@st.composite
def waveforms(draw):
    """(wave, sample_rate, fps): a usable waveform most of the time, with one property (sometimes
    several) made odd: dtype, layout, length, values, sample rate, frame rate, torch dtype."""
    odd = set(
        draw(
            st.lists(
                st.sampled_from(["dtype", "layout", "length", "values", "sr", "fps", "torch"]), max_size=3, unique=True
            )
        )
    )
    dtype = draw(st.sampled_from(_NP_DTYPES)) if "dtype" in odd else np.float32
    layout = draw(st.sampled_from(["nc", "4d", "0d", "1cn"])) if "layout" in odd else draw(st.sampled_from(["n", "cn"]))
    n = draw(st.integers(0, 2000)) if "length" in odd else draw(st.integers(2000, 6000))
    c = draw(st.integers(0, 3) if layout != "nc" else st.integers(1, 3))
    shape = {"n": (n,), "cn": (c, n), "1cn": (1, c, n), "nc": (n, c), "4d": (1, 1, c, n), "0d": ()}[layout]
    kind = (
        draw(st.sampled_from(["silence", "huge", "nan", "inf", "tiny", "dc", "extreme"]))
        if "values" in odd
        else "noise"
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = np.array(rng.standard_normal(shape) * 0.3, dtype=np.float64)
    if kind == "silence":
        x[...] = 0
    elif kind == "huge":
        x = x * 1e30
    elif kind == "tiny":
        x = x * 1e-6
    elif kind == "dc":
        x = x + 0.9
    elif kind == "extreme":
        x = np.full(shape, draw(st.sampled_from([3e38, -3e38, 1e-45, 65504.0, 1e19])))
    elif kind in ("nan", "inf") and x.size:
        x.flat[rng.integers(0, x.size)] = np.nan if kind == "nan" else np.inf
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        with np.errstate(invalid="ignore", over="ignore"):
            x = np.nan_to_num(x * info.max, nan=0, posinf=info.max, neginf=info.min).clip(info.min, info.max)
    with np.errstate(invalid="ignore", over="ignore"):
        x = x.astype(dtype)
    if "torch" in odd and dtype not in (np.uint16, np.complex64):
        x = torch.from_numpy(np.ascontiguousarray(x)).to(
            draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.float64]))
        )
    sr = (
        draw(st.sampled_from([1000, 999, 0, -16000, 16000.5, 2**40, 11025, "16000", None]))
        if "sr" in odd
        else draw(st.sampled_from([16000, 8000, 48000, 44100, 22050]))
    )
    fps = draw(st.sampled_from([30, 12.5, 100, 0, -1, float("nan"), 101, 1e-9, "25"])) if "fps" in odd else 25
    return x, sr, fps


@settings(FUZZ, max_examples=80)
@given(case=waveforms(), quality=st.sampled_from(["fast", "official"]))
def test_fuzz_audio_to_windows(case, quality):
    wave, sr, fps = case
    if quality == "official" and isinstance(sr, int) and 0 < sr < 4000:
        quality = "fast"  # resampy's kaiser_best up-sampling of low-rate input is slow, not wrong
    out = only_our_errors(A.audio_to_windows, wave, sr, fps=fps, quality=quality)
    if out is not None:
        assert out.dtype == torch.float32 and out.dim() == 4 and tuple(out.shape[1:]) == (1, 80, 20)
        assert out.shape[0] >= 1 and bool(torch.isfinite(out).all())
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
