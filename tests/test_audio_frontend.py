"""Audio front end: exact parity with the official waveform / mel / window tensors, fps
generalisation, decoding, and every rejected input."""

import math
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import REPO, SAMPLES, fixture_files
from hypothesis import given, settings
from hypothesis import strategies as st

from pdfgc_core import audio as A
from pdfgc_core.errors import InputError, MediaError

OFFICIAL_SAMPLES = Path("samples") / "pdfgc-official" / "data"


def official_mp3(parity):
    """The full official audio_longer.mp3, or the bundled first 4 s of it, with how many leading
    16 kHz samples of ``wav_loaded_full`` it must reproduce."""
    full = parity.parent / OFFICIAL_SAMPLES / "audios" / "audio_longer.mp3"
    if full.is_file():
        return full, 240000
    short = SAMPLES / "speech.mp3"
    if short.is_file():
        return short, 64000  # the last ~50 samples see the cut through the resampling filter
    pytest.skip("no official audio sample")


def sine(seconds=1.0, sr=16000, freq=220.0, amp=0.3, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x * (1 - 0.2 * c) for c in range(channels)])


# ------------------------------------------------------------------------------------ parity


def test_mp3_decode_and_official_resample_reproduce_wav_loaded(parity, parity_inputs):
    path, n = official_mp3(parity)
    wave, sr = A.load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 2 and wave.shape[0] == 2 and sr == 44100
    x = A.resample(A.to_mono(wave), sr, 16000, quality="official")
    ref = parity_inputs["wav_loaded_full"]
    assert x.dtype == np.float32
    if n == ref.shape[0]:
        assert x.shape == ref.shape
    assert np.abs(x[:n] - ref[:n]).max() == 0.0


def test_whole_clip_rms_normalisation_matches(parity_inputs):
    full = parity_inputs["wav_loaded_full"]
    assert float(A.clip_rms(full)) == pytest.approx(float(parity_inputs["wav_loaded_full_rms"]), rel=1e-7)
    norm = A.normalize_rms(full)
    assert norm.dtype == np.float32
    np.testing.assert_array_equal(norm[:33600], parity_inputs["wav_normalized"])
    # cutting first would use another gain: the official order matters
    assert not np.array_equal(A.normalize_rms(parity_inputs["wav_loaded"]), parity_inputs["wav_normalized"])


@pytest.mark.parametrize("block_frames", [2048, 7])
def test_mel_spectrogram_exact(parity_inputs, block_frames):
    mel = A.mel_spectrogram(parity_inputs["wav_normalized"], block_frames=block_frames)
    assert mel.dtype == torch.float32 and tuple(mel.shape) == (217, 80)
    assert mel.shape[0] == A.num_mel_frames(33600)
    assert torch.equal(mel, torch.from_numpy(parity_inputs["mel_full"]))


def test_mel_spectrogram_accepts_torch(parity_inputs):
    mel = A.mel_spectrogram(torch.from_numpy(parity_inputs["wav_normalized"]))
    assert torch.equal(mel, torch.from_numpy(parity_inputs["mel_full"]))


def test_mel_spectrogram_same_from_float32_and_float64(parity_inputs):
    """The signal is kept as given and widened per block: float32 and float64 inputs agree exactly."""
    w = parity_inputs["wav_normalized"]
    assert w.dtype == np.float32
    assert torch.equal(A.mel_spectrogram(w, block_frames=50), A.mel_spectrogram(w.astype(np.float64)))


def test_mel_windows_exact(parity_inputs):
    mel = torch.from_numpy(parity_inputs["mel_full"])
    win = A.mel_windows(mel)
    assert win.dtype == torch.float32 and tuple(win.shape) == (50, 1, 80, 20) and win.is_contiguous()
    assert torch.equal(win, torch.from_numpy(parity_inputs["mel_windows"]))
    np.testing.assert_array_equal(A.window_starts(mel.shape[0]), parity_inputs["audio_inds"])


def test_full_chain_from_16k_waveform(parity_inputs):
    win = A.audio_to_windows(parity_inputs["wav_loaded_full"], 16000, max_seconds=2.1)
    assert torch.equal(win, torch.from_numpy(parity_inputs["mel_windows"]))


def test_full_chain_from_mp3(parity, parity_inputs):
    path, _ = official_mp3(parity)
    wave, sr = A.load_audio(path)
    if wave.shape[1] < 44100 * 15:
        pytest.skip("only the 4 s sample is available; the whole-clip RMS needs the full file")
    win = A.audio_to_windows(wave, sr, max_seconds=2.1)
    assert torch.equal(win, torch.from_numpy(parity_inputs["mel_windows"]))


def cycle_fixtures():
    files = [f for f in fixture_files() if "inputs__wav_normalized" in np.load(f).files]
    return files or [pytest.param(None, marks=pytest.mark.skip(reason="no fixture with inputs__ audio keys"))]


@pytest.mark.parametrize("fixture", cycle_fixtures(), ids=lambda f: getattr(f, "stem", "none"))
def test_fixture_audio_inputs_exact(fixture, parity_inputs):
    fx = np.load(fixture)
    wav = fx["inputs__wav_normalized"]
    np.testing.assert_array_equal(A.normalize_rms(parity_inputs["wav_loaded_full"])[: wav.shape[0]], wav)
    mel = A.mel_spectrogram(wav)
    assert torch.equal(mel, torch.from_numpy(fx["inputs__mel_full"]))
    assert torch.equal(A.mel_windows(mel), torch.from_numpy(fx["inputs__mel_windows"]))
    np.testing.assert_array_equal(A.window_starts(mel.shape[0]), fx["inputs__audio_inds"])
    seconds = wav.shape[0] / 16000
    win = A.audio_to_windows(parity_inputs["wav_loaded_full"], 16000, max_seconds=seconds)
    assert torch.equal(win, torch.from_numpy(fx["inputs__mel_windows"]))


def test_full_file_frame_count(parity_inputs):
    mel = A.mel_spectrogram(A.normalize_rms(parity_inputs["wav_loaded_full"]))
    assert mel.shape[0] == 1507 and A.mel_windows(mel).shape[0] == 372  # the official run's counts for this clip


# ------------------------------------------------------------------------- fps generalisation


def brute_starts(num_mel, fps):
    out, j = [], 0
    while True:
        s = math.floor(j * 100 / fps + 0.5)
        if s + 20 > num_mel:
            return out
        out.append(s)
        j += 1


@pytest.mark.parametrize("fps", [24, 25, 30, 50])
@pytest.mark.parametrize("num_mel", [0, 19, 20, 21, 23, 24, 217, 1507])
def test_window_count_and_starts(fps, num_mel):
    starts = A.window_starts(num_mel, fps)
    assert starts.tolist() == brute_starts(num_mel, fps)
    assert A.num_windows(num_mel, fps) == len(starts)
    if fps == 25:
        assert len(starts) == max(0, num_mel // 4 - 4)
        assert starts.tolist() == [4 * j for j in range(len(starts))]


@settings(max_examples=60, deadline=None)
@given(num_mel=st.integers(0, 5000), fps=st.floats(1.0, 100.0, allow_nan=False))
def test_window_starts_property(num_mel, fps):
    starts = A.window_starts(num_mel, fps)
    assert starts.tolist() == brute_starts(num_mel, fps)
    if len(starts):
        assert starts[0] == 0 and starts[-1] + 20 <= num_mel
        assert np.all(np.diff(starts) >= 1)


@pytest.mark.parametrize("fps", [24, 25, 30, 50])
def test_windows_content_and_streaming(parity_inputs, fps):
    mel = torch.from_numpy(parity_inputs["mel_full"])
    win = A.mel_windows(mel, fps=fps)
    starts = A.window_starts(mel.shape[0], fps)
    assert win.shape == (len(starts), 1, 80, 20)
    for j in (0, len(starts) // 2, len(starts) - 1):
        assert torch.equal(win[j, 0], mel[starts[j] : starts[j] + 20].T)
    parts = list(A.iter_mel_windows(mel, fps=fps, batch_size=8))
    assert [p[0] for p in parts] == list(range(0, len(starts), 8))
    assert torch.equal(torch.cat([p[1] for p in parts]), win)
    sub = list(A.iter_mel_windows(mel, fps=fps, batch_size=3, start=5, stop=11))
    assert torch.equal(torch.cat([p[1] for p in sub]), win[5:11])


def test_num_output_frames_matches_windows(parity_inputs):
    assert A.num_output_frames(33600) == 50
    assert A.num_output_frames(12800) == 17
    assert A.num_output_frames(A.MIN_SAMPLES) == 1 and A.num_output_frames(A.MIN_SAMPLES - 1) == 0


def test_num_frames_argument(parity_inputs):
    mel = torch.from_numpy(parity_inputs["mel_full"])
    assert torch.equal(A.mel_windows(mel, num_frames=12), A.mel_windows(mel)[:12])
    with pytest.raises(InputError, match="50 frames"):
        A.mel_windows(mel, num_frames=51)


@pytest.mark.parametrize("fps", [0, -5, float("nan"), 101, "x"])
def test_bad_fps(fps, parity_inputs):
    with pytest.raises(InputError, match="frame rate"):
        A.mel_windows(torch.from_numpy(parity_inputs["mel_full"]), fps=fps)


# ------------------------------------------------------------------------- waveform handling


def test_to_mono_and_int_pcm():
    st_ = sine(channels=2)
    np.testing.assert_array_equal(A.to_mono(st_), (st_[0] + st_[1]) / np.float32(2))
    pcm = (sine() * 32767).round().astype(np.int16)
    a = A.audio_to_windows(pcm, 16000)
    b = A.audio_to_windows(pcm.astype(np.float32) / 32768, 16000)
    assert torch.equal(a, b)


def test_resample_lengths_and_fast_mode():
    x = sine(1.0, sr=44100)[0]
    off = A.resample(x, 44100, quality="official")
    fast = A.resample(x, 44100, quality="fast")
    assert off.shape == fast.shape == (16000,)
    assert off.dtype == fast.dtype == np.float32
    assert np.abs(off - fast)[100:-100].max() < 1e-3
    odd = A.resample(x[:1001], 44100)
    assert odd.shape == (math.ceil(1001 * 16000 / 44100),)
    assert A.resample(sine(channels=2), 48000).shape == (2, math.ceil(16000 / 3))
    assert np.array_equal(A.resample(x, 16000), x)
    with pytest.raises(InputError, match="quality"):
        A.resample(x, 44100, quality="best")


def test_accepts_comfy_layout_and_torch():
    w = sine(channels=2)
    a = A.audio_to_windows(torch.from_numpy(w)[None], 16000)
    b = A.audio_to_windows(w, 16000)
    assert torch.equal(a, b) and a.shape == (A.num_output_frames(16000), 1, 80, 20) == (22, 1, 80, 20)


@pytest.mark.parametrize("fps", [24, 30])
def test_other_fps_chain(fps):
    w = sine(2.0)
    win = A.audio_to_windows(w, 16000, fps=fps)
    assert win.shape[0] == A.num_output_frames(32000, fps)


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rejected(bad):
    w = sine()
    w[0, 123] = bad
    with pytest.raises(InputError, match="NaN or infinite.*sample 123"):
        A.audio_to_windows(w, 16000)


@pytest.mark.parametrize("shape", [(0,), (2, 0), (1, 2, 0)])
def test_empty_rejected(shape):
    with pytest.raises(InputError, match="empty"):
        A.audio_to_windows(np.zeros(shape, np.float32), 16000)


def test_too_short_rejected():
    w = sine(0.1)
    with pytest.raises(InputError, match=r"0\.100 s long.*at least 0\.1201 s"):
        A.audio_to_windows(w, 16000)
    assert A.audio_to_windows(sine()[:, : A.MIN_SAMPLES], 16000).shape[0] == 1
    with pytest.raises(InputError, match="max_seconds"):
        A.audio_to_windows(sine(), 16000, max_seconds=0.05)


@pytest.mark.parametrize("amp", [0.0, 5e-5])
def test_silence_rejected(amp):
    with pytest.raises(InputError, match="silent.*zero the mouth factor"):
        A.audio_to_windows(sine(amp=amp), 16000)


@pytest.mark.parametrize("shape", [(16000, 2), (2, 2, 16000), (16000, 40)])
def test_wrong_shape_rejected(shape):
    with pytest.raises(InputError, match="audio waveform"):
        A.audio_to_windows(np.zeros(shape, np.float32) + 0.1, 16000)


def test_transposed_layout_hint():
    with pytest.raises(InputError, match="transpose"):
        A.audio_to_windows(sine(channels=2).T, 16000)


@pytest.mark.parametrize("arr", [np.ones(16000, bool), np.ones(16000, np.complex64)])
def test_wrong_dtype_rejected(arr):
    with pytest.raises(InputError, match="dtype"):
        A.audio_to_windows(arr, 16000)


@pytest.mark.parametrize("sr", [0, 44100.5, "fast", None, 500])
def test_bad_sample_rate(sr):
    with pytest.raises(InputError, match="sample rate"):
        A.audio_to_windows(sine(), sr)


def test_mel_input_checks():
    with pytest.raises(InputError):
        A.mel_spectrogram(np.zeros((2, 100), np.float32))
    with pytest.raises(InputError):
        A.mel_spectrogram(np.zeros(0, np.float32))
    with pytest.raises(InputError):
        A.mel_spectrogram(np.array([0.1, np.nan], np.float32))
    with pytest.raises(InputError):
        A.mel_windows(torch.zeros(30, 40))


# ---------------------------------------------------------------------------- warnings / DC


def test_clipping_warns_and_keeps_samples():
    w = np.clip(sine(amp=3.0), -1, 1)
    with pytest.warns(A.AudioWarning, match="clipped"):
        A.audio_to_windows(w, 16000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A.audio_to_windows(sine(), 16000)  # a clean sine does not warn


def test_dc_offset_warns_and_option_removes_it():
    clean = sine()
    off = clean + np.float32(0.2)
    with pytest.warns(A.AudioWarning, match="DC offset"):
        official = A.audio_to_windows(off, 16000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = A.audio_to_windows(off, 16000, remove_dc=True)
    ref = A.audio_to_windows(clean, 16000)
    assert (fixed - ref).abs().max() < 1e-3 < (official - ref).abs().max()


# --------------------------------------------------------------------------------- decoding


def write_wav(path, wave, sr, subtype="FLOAT"):
    sf.write(str(path), wave.T, sr, subtype=subtype)
    return path


def test_load_wav_roundtrip(tmp_path):
    w = sine(0.5, sr=22050, channels=2)
    wave, sr = A.load_audio(write_wav(tmp_path / "a.wav", w, 22050))
    assert sr == 22050 and wave.dtype == np.float32 and wave.shape == w.shape
    np.testing.assert_array_equal(wave, w)


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_load_mono_equals_mixing_the_whole(tmp_path, monkeypatch, channels):
    """``mono=True`` mixes block by block while reading: the same float32 samples as to_mono of the
    whole file, for blocks that do not divide the length; the mp4 (ffmpeg) path mixes too."""
    rng = np.random.default_rng(channels)
    w = (rng.standard_normal((channels, 10007)) * 0.2).astype(np.float32)
    path = write_wav(tmp_path / "a.wav", w, 16000, subtype="FLOAT")
    monkeypatch.setattr(A, "_READ_BLOCK", 1000)
    mono, sr = A.load_audio(path, mono=True)
    whole, _ = A.load_audio(path)
    assert sr == 16000 and mono.dtype == np.float32 and mono.shape == (1, 10007)
    np.testing.assert_array_equal(mono[0], A.to_mono(whole))
    mov = tmp_path / "a.mov"
    ffmpeg("-i", path, "-c:a", "pcm_f32le", mov)
    np.testing.assert_array_equal(A.load_audio(mov, mono=True)[0], mono)


def ffmpeg(*args):
    subprocess.run([A.ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *map(str, args)], check=True)


def test_ffmpeg_fallback_lossless(tmp_path):
    w = sine(0.5, sr=48000, channels=2)
    src = write_wav(tmp_path / "a.wav", w, 48000, subtype="PCM_16")
    mov = tmp_path / "a.mov"
    ffmpeg("-i", src, "-c:a", "pcm_s16le", mov)
    with pytest.raises(Exception):
        sf.info(str(mov))  # soundfile cannot read it: the ffmpeg path is exercised
    wave, sr = A.load_audio(mov)
    ref, _ = A.load_audio(src)
    assert sr == 48000 and wave.shape == ref.shape
    np.testing.assert_array_equal(wave, ref)


def test_ffmpeg_fallback_aac(tmp_path):
    w = sine(1.0, sr=44100, channels=1)
    src = write_wav(tmp_path / "a.wav", w, 44100)
    m4a = tmp_path / "a.m4a"
    ffmpeg("-i", src, "-c:a", "aac", "-b:a", "128k", m4a)
    wave, sr = A.load_audio(m4a)
    assert sr == 44100 and wave.shape[0] == 1
    assert abs(wave.shape[1] - w.shape[1]) < 2048
    n = min(wave.shape[1], w.shape[1])
    assert np.corrcoef(wave[0, 4096 : n - 4096], w[0, 4096 : n - 4096])[0, 1] > 0.999  # ffmpeg trims the priming


def test_video_without_audio(tmp_path):
    mp4 = tmp_path / "v.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=32x32:d=0.2", "-pix_fmt", "yuv420p", mp4)
    with pytest.raises(MediaError, match="no audio track"):
        A.load_audio(mp4)


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(MediaError, match="does not exist"):
        A.load_audio(tmp_path / "nope.wav")
    with pytest.raises(MediaError, match="folder"):
        A.load_audio(tmp_path)
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"this is not audio at all" * 50)
    with pytest.raises(MediaError, match="could not be decoded"):
        A.load_audio(junk)
    empty_file = tmp_path / "empty.wav"
    empty_file.write_bytes(b"")
    with pytest.raises(MediaError, match="empty.wav.*could not be decoded"):
        A.load_audio(empty_file)
    zero = write_wav(tmp_path / "zero.wav", np.zeros((1, 0), np.float32), 16000)
    with pytest.raises(MediaError, match="zero samples"):
        A.load_audio(zero)


def test_truncated_files(tmp_path):
    src = write_wav(tmp_path / "a.wav", sine(0.5), 16000)
    data = src.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[:4000])  # data chunk cut short: the samples that are there decode
    wave, _ = A.load_audio(cut)
    assert 0 < wave.shape[1] < 8000
    headless = tmp_path / "headless.wav"
    headless.write_bytes(data[:30])  # no data chunk at all
    with pytest.raises(MediaError, match="headless.wav.*could not be decoded"):
        A.load_audio(headless)


# ------------------------------------------------------------------------------ long audio


@pytest.mark.slow
def test_ten_minute_clip_memory(tmp_path):
    """A 10-minute 44.1 kHz stereo clip goes through the official chain in bounded memory."""
    script = textwrap.dedent(f"""
        import resource, sys, numpy as np, torch
        sys.path.insert(0, {str(REPO)!r})
        torch.set_num_threads(2)
        from pdfgc_core import audio as A
        rng = np.random.default_rng(0)
        w = rng.standard_normal((2, 44100 * 600), dtype=np.float32) * np.float32(0.1)  # 202 MB
        A.audio_to_windows(w[:, :44100], 44100)  # imports, filter tables, JIT
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        win = A.audio_to_windows(w, 44100)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(win.shape[0], (peak - base) // 1024)  # ru_maxrss is in KiB on Linux
    """)
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout.split()
    frames, grown_mb = int(out[0]), int(out[1])
    assert frames == A.num_output_frames(16000 * 600)
    assert grown_mb < 800, f"peak memory grew by {grown_mb} MB"  # measured: 374 MB
