"""The audio front end's own kernels equal the libraries the official numbers came from, bit for
bit, and a short clip is processed without importing numba (resampy, librosa), whose import and
JIT compilation cost seconds in every new process."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pdfgc_core import audio as A

resampy = pytest.importorskip("resampy")

RATES = [
    (44100, 16000, 9000),  # downsampling, the common case
    (48000, 16000, 4801),
    (22050, 16000, 3001),
    (32000, 16000, 2000),
    (16001, 16000, 1500),  # ratio just below 1
    (8000, 16000, 2000),  # upsampling: full-rate filter, 512 phases
    (11025, 16000, 1234),
    (44100, 16000, 7),  # shorter than the filter: both signal ends inside every window
]


@pytest.mark.parametrize(("sr", "target", "n"), RATES, ids=[f"{a}-{b}-{n}" for a, b, n in RATES])
def test_resample_kaiser_best_is_resampy_bit_for_bit(sr, target, n):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 0.3).astype(np.float32)
    x[n // 3] = 0.0  # exact zeros and a full-scale sample: the summation order shows in the low bits
    x[n // 2] = -1.0
    want = resampy.resample(x, sr, target, filter="kaiser_best")
    got = A.resample_kaiser_best(x, sr, target)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_resample_kaiser_best_blocks_do_not_change_the_result(monkeypatch):
    x = (np.random.default_rng(3).standard_normal(20000) * 0.2).astype(np.float32)
    whole = A.resample_kaiser_best(x, 44100, 16000)
    monkeypatch.setattr(A, "_RESAMPLE_BLOCK", 97)  # many blocks, each needing its own padded window
    np.testing.assert_array_equal(A.resample_kaiser_best(x, 44100, 16000), whole)


def test_resample_kaiser_best_too_short_and_bad_shape():
    assert A.resample_kaiser_best(np.ones(2, np.float32), 44100, 16000).shape == (0,)
    assert A.resample(np.ones(2, np.float32), 44100).shape == (1,)  # padded to ceil(N * 16000 / 44100)
    with pytest.raises(A.InputError, match="1-D"):
        A.resample_kaiser_best(np.ones((2, 5), np.float32), 44100, 16000)


def test_official_resample_same_below_and_above_the_resampy_threshold(monkeypatch):
    x = (np.random.default_rng(5).standard_normal((2, 6000)) * 0.2).astype(np.float32)
    ours = A.resample(x, 48000, quality="official")  # short: the numpy kernel, row by row
    monkeypatch.setattr(A, "RESAMPY_MIN_SECONDS", 0.0)  # everything through resampy itself
    np.testing.assert_array_equal(A.resample(x, 48000, quality="official"), ours)
    assert ours.shape == (2, 2000)


def test_mel_basis_is_librosa_bit_for_bit():
    librosa = pytest.importorskip("librosa")
    want = librosa.filters.mel(sr=16000, n_fft=1280, n_mels=80, fmin=125, fmax=7600)
    got = A.mel_basis()
    assert got.dtype == torch.float64 and tuple(got.shape) == (80, 641)
    np.testing.assert_array_equal(got.float().numpy(), want)


def test_short_clip_needs_no_numba():
    """audio_to_windows on a 2-second clip imports neither numba, resampy nor librosa."""
    code = (
        "import sys, numpy as np\n"
        "from pdfgc_core import audio\n"
        "t = np.arange(88200) / 44100.0\n"
        "w = audio.audio_to_windows((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 44100)\n"
        "assert tuple(w.shape) == (audio.num_output_frames(32000), 1, 80, 20), w.shape\n"
        "print(sorted(m for m in ('numba', 'resampy', 'librosa') if m in sys.modules))\n"
    )
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
