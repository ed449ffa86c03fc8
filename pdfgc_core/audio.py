"""Audio front end: sound -> mel windows for the audio encoder, as the official code computes them.

The official chain (librosa 0.8.1 + resampy 0.4.3 + lws) is

    file -> float32 samples [C, N] at the native rate         (:func:`load_audio`)
         -> mean of the channels [N]                           (:func:`to_mono`)
         -> 16 kHz, resampy ``kaiser_best``                    (:func:`resample`)
         -> x * 0.1 / RMS of the whole clip                    (:func:`normalize_rms`)
         -> 80-bin log-mel spectrogram [M, 80], 100 frames/s   (:func:`mel_spectrogram`)
         -> one [1, 80, 20] window per output video frame      (:func:`mel_windows`)

and every step here reproduces it bit for bit. :func:`audio_to_windows` runs the whole chain
with input checks. A mel frame covers 10 ms; a window spans 20 of them (200 ms). At 25 fps the
window of output frame ``j`` starts at mel frame ``4 j``; other frame rates scale the start
index (``round(j * 100 / fps)``).

Waveforms are numpy float32 in [-1, 1] (values beyond are accepted; the RMS normalisation
rescales anyway), laid out [channels, samples] or [samples]. Mel tensors are torch float32 in
[0, 1], (time, mel) order.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import subprocess
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .errors import InputError, MediaError
from .media import ffmpeg_exe

SAMPLE_RATE = 16000
HOP_LENGTH = 160
FFT_SIZE = 1280
N_MELS = 80
MEL_FMIN = 125.0
MEL_FMAX = 7600.0
MEL_FPS = SAMPLE_RATE // HOP_LENGTH  # 100 mel frames per second
WINDOW_FRAMES = 20  # mel frames per audio-net window
OFFICIAL_FPS = 25.0
"""The official video frame rate: one audio window per 40 ms (4 mel frames)."""

TARGET_RMS = 0.1
RMS_FLOOR = 1e-4  # official lower bound of the RMS before normalisation
SILENCE_RMS = RMS_FLOOR
"""Whole-clip RMS (16 kHz mono, before normalisation) at or below which the audio counts as
silent (-80 dBFS): the official normalisation clamps its gain there, so the clip can no longer
be brought to speaking level and the mouth features would be meaningless."""

DC_WARN_RATIO = 0.25
"""A DC offset above this fraction of the RMS triggers :class:`AudioWarning` (official mode keeps
the offset; it inflates the RMS, so the normalised speech comes out quieter)."""

CLIP_WARN_FRACTION = 1e-3
"""Fraction of samples sitting in flat runs at the peak value above which the audio is reported
as clipped (:class:`AudioWarning`; the samples are kept as they are)."""

MIN_SAMPLES = HOP_LENGTH * (WINDOW_FRAMES - 8) + 1
"""Fewest 16 kHz samples giving one complete window: M = ceil(N/160) + 7 >= 20, i.e. N >= 1921."""

QUALITIES = ("official", "fast")
"""Resampling to 16 kHz: ``official`` (resampy kaiser_best, bit-exact) or ``fast`` (soxr HQ)."""

MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384000
MAX_CHANNELS = 16

AUDIO_LEAD_SECONDS = 0.08
"""How far the sound leads the pictures in the official videos: output frame j shows the mouth of
the speech at video frame j + 2 (2 frames at 25 fps). A video of the frames plays its sound from
this offset on (``Mp4Writer(audio_offset=...)``; PD-FGC Encode Lips' audio output is cut by it)."""


class AudioWarning(UserWarning):
    """The audio is usable but probably not what the user meant (clipping, DC offset)."""


# ----------------------------------------------------------------------------------- decoding


def load_audio(path, mono: bool = False) -> tuple[np.ndarray, int]:
    """Decode an audio file (or the audio track of a video) at its native sample rate.

    Returns ``(waveform, sample_rate)``: waveform float32 [C, N], values in [-1, 1].
    ``mono=True``: [1, N], the channel mean of :func:`to_mono` (the same float32 values), read in
    blocks so that a long multi-channel file never sits in memory with all its channels.
    wav/flac/ogg/mp3/... go through soundfile (libsndfile decodes MP3 to float32: what the
    official numbers used); anything soundfile refuses (mp4, m4a, aac, webm, ...) through the
    ffmpeg binary bundled with imageio-ffmpeg. Raises :class:`MediaError` for a missing,
    undecodable or empty file.
    """
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "does not exist"
        raise MediaError(f"Audio file {str(path)!r} {what}. Give the path of an existing audio or video file.")
    try:
        wave, sr = _load_soundfile(p, mono)
        sf_error = None
    except Exception as exc:  # soundfile reports unknown formats with several exception types
        wave, sr, sf_error = None, 0, exc
    if wave is None:
        try:
            wave, sr = _load_ffmpeg(p)
        except MediaError as exc:
            detail = f" (soundfile: {sf_error}; ffmpeg: {exc})"
            raise MediaError(
                f"Audio file {str(p)!r} could not be decoded{detail}. Check that it is a complete, "
                "uncorrupted audio file or a video with an audio track (wav, flac, mp3, ogg, m4a, mp4, ...)."
            ) from exc
    if wave.shape[-1] == 0 or wave.shape[0] == 0:
        raise MediaError(f"Audio file {str(p)!r} decodes to zero samples. Use a file that contains sound.")
    if mono and wave.shape[0] > 1:
        wave = to_mono(wave)[None]
    return wave, sr


def read_speech(speech) -> tuple[np.ndarray, int]:
    """Speech given as a file path (read mono with :func:`load_audio`) or as ``(waveform, sample_rate)``
    (returned as it is) -> ``(waveform, sample_rate)``; waveform float [C, N] or [N]."""
    return load_audio(speech, mono=True) if isinstance(speech, (str, Path)) else speech


_READ_BLOCK = 1 << 20  # frames per soundfile read when mixing down while reading (~8 MB of stereo)


def _load_soundfile(path: Path, mono: bool = False) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with sf.SoundFile(str(path)) as f:
        sr = int(f.samplerate)
        if not mono or f.channels == 1:
            data = f.read(dtype="float32", always_2d=True)  # [N, C], like librosa 0.8.1's read
            return data.T, sr  # [C, N] as a view, the layout librosa averaged over
        # the mean over channels is per sample, so mixing each block equals mixing the whole
        blocks = [to_mono(b.T) for b in f.blocks(_READ_BLOCK, dtype="float32", always_2d=True)]
    mixed = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    return mixed[None], sr


def _load_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    cmd = [
        ffmpeg_exe(),
        "-nostdin",
        "-v",
        "error",
        "-i",
        str(path),
        "-map",
        "0:a:0",
        "-vn",
        "-sn",
        "-dn",
        "-map_metadata",
        "-1",
        "-fflags",
        "+bitexact",
        "-acodec",
        "pcm_f32le",
        "-f",
        "wav",
        "pipe:1",
    ]
    proc = subprocess.run(cmd, capture_output=True)
    err = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        if "matches no streams" in err:
            raise MediaError("the file has no audio track")
        raise MediaError(err.splitlines()[-1] if err else f"ffmpeg exit status {proc.returncode}")
    return _parse_float_wav(proc.stdout)


def _parse_float_wav(buf: bytes) -> tuple[np.ndarray, int]:
    """[C, N] float32 and the rate from a float WAV stream whose sizes may be unset (piped)."""
    if len(buf) < 12 or buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
        raise MediaError("ffmpeg did not produce a WAV stream")
    pos, channels, sr = 12, 0, 0
    while pos + 8 <= len(buf):
        cid, size = buf[pos : pos + 4], int.from_bytes(buf[pos + 4 : pos + 8], "little")
        body = pos + 8
        if cid == b"fmt ":
            channels = int.from_bytes(buf[body + 2 : body + 4], "little")
            sr = int.from_bytes(buf[body + 4 : body + 8], "little")
        elif cid == b"data":
            if channels <= 0 or sr <= 0:
                break
            end = len(buf) if size in (0, 0xFFFFFFFF) or body + size > len(buf) else body + size
            n = (end - body) // (4 * channels)
            data = np.frombuffer(buf, dtype="<f4", count=n * channels, offset=body)
            return data.reshape(n, channels).T.astype(np.float32), sr
        pos = body + size + (size & 1)
    raise MediaError("ffmpeg produced no decodable audio data")


# ---------------------------------------------------------------------------------- waveforms


def to_mono(wave) -> np.ndarray:
    """[C, N] or [N] float -> [N] float32, the channel mean computed in float32 (librosa's to_mono);
    one float32 channel comes back as a view of it (its mean is itself), so do not write into it."""
    wave = np.asarray(wave)
    if wave.ndim == 1:
        return wave.astype(np.float32, copy=False)
    if wave.ndim != 2:
        raise InputError(f"audio waveform: expected [channels, samples] or [samples], got shape {tuple(wave.shape)}.")
    if wave.shape[0] == 1:  # the mean of one channel is that channel, exactly: no copy
        return wave[0].astype(np.float32, copy=False)
    return np.mean(wave.astype(np.float32, copy=False), axis=0)


RESAMPY_MIN_SECONDS = 30.0
"""Official-quality inputs at least this long (at the source rate) go through resampy's own numba
kernel; shorter ones through :func:`resample_kaiser_best` (same filter, bit-identical output).
numba costs ~0.7 s to import and ~2 s to compile the kernel in every new process, and then runs
about twice as fast as the numpy loop, so the numpy loop wins below about half a minute of audio."""

_RESAMPLE_BLOCK = 16384  # output samples per block of the numpy kernel (its working set ~1 MB)


def resample(wave, sr: int, target: int = SAMPLE_RATE, quality: str = "official") -> np.ndarray:
    """Resample float audio along its last axis from ``sr`` to ``target`` Hz; float32 out.

    ``quality="official"``: resampy 0.4.3 ``kaiser_best``, the filter the official numbers used,
    bit for bit (:func:`resample_kaiser_best` for inputs shorter than :data:`RESAMPY_MIN_SECONDS`,
    resampy itself for longer ones).
    ``quality="fast"``: soxr ``HQ`` (librosa's ``soxr_hq``), about 50x faster, differs by ~1e-3.
    Either way the length is fixed to ``ceil(N * target / sr)`` (librosa's ``fix_length``);
    equal rates return the input unchanged (as float32).
    """
    if quality not in QUALITIES:
        raise InputError(f"audio resampling quality {quality!r} is not one of {QUALITIES}.")
    wave = np.asarray(wave, dtype=np.float32)
    sr, target = int(sr), int(target)
    if sr == target:
        return wave
    n_out = int(math.ceil(wave.shape[-1] * target / sr))
    if quality == "official" and wave.shape[-1] < RESAMPY_MIN_SECONDS * sr:
        rows = wave.reshape(-1, wave.shape[-1])
        y = np.stack([resample_kaiser_best(r, sr, target) for r in rows]).reshape(*wave.shape[:-1], -1)
    elif quality == "official":
        import resampy

        y = resampy.resample(wave, sr, target, filter="kaiser_best", axis=-1)
    else:
        import soxr

        if wave.ndim == 1:
            y = soxr.resample(wave, sr, target, quality="HQ")
        else:
            y = np.stack([soxr.resample(np.ascontiguousarray(c), sr, target, quality="HQ") for c in wave])
    if y.shape[-1] > n_out:
        y = y[..., :n_out]
    elif y.shape[-1] < n_out:
        y = np.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, n_out - y.shape[-1])])
    return np.ascontiguousarray(y, dtype=np.float32)


@functools.lru_cache(maxsize=1)
def _kaiser_best() -> tuple[np.ndarray, int]:
    """resampy's pre-computed ``kaiser_best`` filter: (right wing float64 [32769], table
    precision 512 = filter samples per zero crossing), read from resampy's package data without
    importing resampy (whose import loads numba)."""
    spec = importlib.util.find_spec("resampy")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "audio resampling: the resampy package (it holds the official kaiser_best filter) is not installed; "
            "run `pip install -r requirements.txt`, or choose the fast resampler."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "kaiser_best.npz"
    with np.load(path) as data:
        return np.asarray(data["half_window"], dtype=np.float64), int(data["precision"])


def resample_kaiser_best(x, sr: int, target: int) -> np.ndarray:
    """resampy 0.4.3 ``resample(x, sr, target, filter="kaiser_best")`` of a 1-D float32 signal,
    bit for bit, in numpy (no numba): float32 [int(N * target / sr)].

    Band-limited interpolation (J. O. Smith): output sample t sits at input time
    ``u = t * sr / target``; with n = floor(u), the left wing adds x[n - i] times the filter
    interpolated at phase frac(u) (i = 0, 1, ...), then the right wing adds x[n + 1 + k] at the
    mirrored phase. For every t the terms are added in that order, each product formed in float64
    and the running sum rounded to float32 after every addition, exactly as resampy's kernel does;
    here the loop runs over the tap index with all outputs of a block at once. Terms resampy
    skips (past the signal's ends, the filter's last partial tap) are zeros, which leave a float32
    sum unchanged. Memory: O(block + filter), whatever the length. Blocks of outputs run in up to
    ``torch.get_num_threads()`` threads.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise InputError(f"resample_kaiser_best: expected a 1-D signal, got shape {tuple(x.shape)}.")
    half, precision = _kaiser_best()
    sr, target = int(sr), int(target)
    ratio = float(target) / sr
    size = x.shape[0]
    n_out = int(size * float(target) / float(sr))
    out = np.zeros(max(n_out, 0), dtype=np.float32)
    if n_out < 1:
        return out
    win = ratio * half if ratio < 1 else half
    delta = np.diff(win, append=win[-1])
    scale = min(1.0, ratio)
    step = int(scale * precision)
    taps = win.shape[0] // step  # most taps of a wing at any phase
    phase = np.arange(int(math.ceil(scale * precision)) + 1)[:, None]
    k = np.arange(taps)[None, :]
    inside = k < (win.shape[0] - phase) // step  # resampy's per-phase tap count
    where = np.where(inside, phase + k * step, 0)
    table_w = np.ascontiguousarray(np.where(inside, win[where], 0.0).T)  # [tap, phase]
    table_d = np.ascontiguousarray(np.where(inside, delta[where], 0.0).T)
    increment = 1.0 / ratio

    def block(s: int, e: int) -> None:
        t_in = np.arange(s, e) * increment
        n = t_in.astype(np.int64)
        frac = scale * (t_in - n)
        # the signal this block reads, float64, zero padded by a wing on each side:
        # seg[j] = x[lo + j], and output t reads seg[n_t - lo - i] (left) and seg[n_t - lo + 1 + k] (right)
        lo = int(n[0]) - taps
        seg = np.zeros(int(n[-1]) + taps + 2 - lo)
        a, z = max(lo, 0), min(int(n[-1]) + taps + 2, size)
        if z > a:
            seg[a - lo : z - lo] = x[a:z]
        acc = out[s:e]
        w, d, xs = np.empty(e - s), np.empty(e - s), np.empty(e - s)
        rel = n - int(n[0])  # n_t - lo - taps >= 0
        for f, right in ((frac, False), (scale - frac, True)):
            pos = f * precision
            off = pos.astype(np.int64)
            eta = pos - off
            for c in range(taps):
                np.take(table_w[c], off, out=w)
                np.take(table_d[c], off, out=d)
                d *= eta
                w += d  # filter value: win + eta * delta, as resampy forms it
                # x[n_t - c] (left) / x[n_t + 1 + c] (right) through a shifted view: no index arithmetic
                np.take(seg[taps + 1 + c :] if right else seg[taps - c :], rel, out=xs)
                w *= xs
                np.add(acc, w, out=acc, casting="same_kind")

    spans = [(s, min(s + _RESAMPLE_BLOCK, n_out)) for s in range(0, n_out, _RESAMPLE_BLOCK)]
    workers = min(len(spans), max(1, torch.get_num_threads()))
    if workers > 1:  # numpy releases the GIL in these calls: blocks run in parallel, each writes its own slice
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda span: block(*span), spans))
    else:
        for span in spans:
            block(*span)
    return out


def clip_rms(wave) -> np.float32:
    """Float32 RMS of a float32 waveform: sqrt(mean(x^2)) with numpy's pairwise sum, as officially."""
    x = np.asarray(wave, dtype=np.float32)
    return np.sqrt(np.mean(x * x))


def rms_gain(wave) -> np.float32:
    """Official normalisation gain float32(0.1 / max(1e-4, rms)), the division in float64 as numpy 1.x did."""
    return np.float32(TARGET_RMS / max(RMS_FLOOR, float(clip_rms(wave))))


def normalize_rms(wave) -> np.ndarray:
    """Official whole-clip loudness normalisation: float32 ``x * 0.1 / max(1e-4, rms(x))``.

    Normalise the whole clip, then cut it (as the fixtures did); cutting first changes the gain.
    """
    x = np.asarray(wave, dtype=np.float32)
    return x * rms_gain(x)


# ---------------------------------------------------------------------------- mel spectrogram


_MEL_F_SP = 200.0 / 3  # Slaney mel scale: linear below 1 kHz (3 mel per 200 Hz), logarithmic above
_MEL_MIN_LOG_HZ = 1000.0
_MEL_MIN_LOG_MEL = _MEL_MIN_LOG_HZ / _MEL_F_SP
_MEL_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(hz) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    log_part = hz >= _MEL_MIN_LOG_HZ
    safe = np.where(log_part, hz, _MEL_MIN_LOG_HZ)
    return np.where(log_part, _MEL_MIN_LOG_MEL + np.log(safe / _MEL_MIN_LOG_HZ) / _MEL_LOGSTEP, hz / _MEL_F_SP)


def _mel_to_hz(mel) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log_part = mel >= _MEL_MIN_LOG_MEL
    return np.where(log_part, _MEL_MIN_LOG_HZ * np.exp(_MEL_LOGSTEP * (mel - _MEL_MIN_LOG_MEL)), _MEL_F_SP * mel)


@functools.lru_cache(maxsize=1)
def mel_basis() -> torch.Tensor:
    """Slaney mel filter bank [80, 641] float64: the float32 values of librosa's
    ``filters.mel(sr=16000, n_fft=1280, n_mels=80, fmin=125, fmax=7600)`` (Slaney scale and
    area normalisation), computed here in the same float64 steps so they match bit for bit
    (test_audio_frontend checks it against librosa) without importing librosa (~2 s with numba).

    Triangle i rises from mel edge i to edge i+1 and falls to edge i+2 (82 edges equally spaced in
    mel between fmin and fmax), sampled at the 641 FFT bin frequencies, scaled by 2 / (width in Hz).
    """
    bins = np.linspace(0.0, SAMPLE_RATE / 2, 1 + FFT_SIZE // 2)
    edges = _mel_to_hz(np.linspace(float(_hz_to_mel(MEL_FMIN)), float(_hz_to_mel(MEL_FMAX)), N_MELS + 2))
    width = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    basis = np.zeros((N_MELS, bins.shape[0]), dtype=np.float32)
    for i in range(N_MELS):
        rising = -ramps[i] / width[i]
        falling = ramps[i + 2] / width[i + 1]
        basis[i] = np.maximum(0, np.minimum(rising, falling))
    basis *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return torch.from_numpy(basis).double()


@functools.lru_cache(maxsize=1)
def lws_window() -> torch.Tensor:
    """lws ``mode="speech"`` analysis window [1280] float64: sqrt(h / w), where h is the
    half-sample-offset Hann window and w its overlap-add over the 8 hops (~4), so ~sqrt(h) / 2."""
    n = np.arange(FFT_SIZE, dtype=np.float64)
    h = 0.5 * (1.0 - np.cos(2.0 * np.pi * (2.0 * n + 1.0) / (2 * FFT_SIZE)))
    w = h.reshape(FFT_SIZE // HOP_LENGTH, HOP_LENGTH).sum(axis=0)
    return torch.from_numpy(np.sqrt(h / np.tile(w, FFT_SIZE // HOP_LENGTH)))


def num_mel_frames(num_samples: int) -> int:
    """Mel frames of a 16 kHz waveform of ``num_samples``: ceil(N / 160) + 7 (lws padding)."""
    return -(-int(num_samples) // HOP_LENGTH) + 7 if num_samples > 0 else 0


_PAD = FFT_SIZE - HOP_LENGTH  # 1120 zeros before the signal (and after its 160-multiple end)


def _mel_block(x: torch.Tensor, m0: int, m1: int) -> torch.Tensor:
    """Mel frames [m0, m1) of signal ``x`` (computed in float64) -> [m1 - m0, 80] float32; frame m
    covers x[160 m - 1120 : 160 m + 160], zeros outside the signal."""
    lo, hi = HOP_LENGTH * m0 - _PAD, HOP_LENGTH * (m1 - 1) + HOP_LENGTH
    seg = x[max(lo, 0) : max(min(hi, x.shape[0]), 0)].double()
    left = min(max(-lo, 0), hi - lo)
    seg = torch.nn.functional.pad(seg, (left, hi - lo - left - seg.shape[0]))
    frames = seg.unfold(0, FFT_SIZE, HOP_LENGTH) * lws_window()
    magnitude = torch.fft.rfft(frames, n=FFT_SIZE).abs()
    mel = magnitude @ mel_basis().T
    db = 20.0 * torch.log10(torch.clamp(mel, min=1e-5)) - 20.0
    return torch.clamp((db + 100.0) / 100.0, 0.0, 1.0).float()


def mel_spectrogram(wave16k, block_frames: int = 2048) -> torch.Tensor:
    """Official log-mel spectrogram of a 16 kHz mono waveform (normalised already).

    wave16k: [N] float (numpy or torch). Returns torch float32 [M, 80] in [0, 1], M = ceil(N/160)+7,
    (time, mel) order. The lws STFT is computed in float64 in blocks of ``block_frames`` frames,
    so memory stays proportional to the audio; the result does not depend on the block size.
    """
    # kept in its float32 / float64 precision; each block is widened to float64 (exactly)
    if torch.is_tensor(wave16k):
        x = wave16k.detach().cpu()
    else:
        x = torch.from_numpy(np.ascontiguousarray(wave16k))
    if x.dtype not in (torch.float32, torch.float64):
        x = x.double()
    if x.ndim != 1:
        raise InputError(f"audio waveform for the mel spectrogram: expected [samples], got shape {tuple(x.shape)}.")
    if x.numel() == 0:
        raise InputError("audio waveform for the mel spectrogram is empty.")
    if not bool(torch.isfinite(x).all()):
        raise InputError("audio waveform for the mel spectrogram contains NaN or infinite samples.")
    total = num_mel_frames(x.shape[0])
    step = max(1, int(block_frames))
    return torch.cat([_mel_block(x, m, min(m + step, total)) for m in range(0, total, step)])


# -------------------------------------------------------------------------------- frame windows


def _check_fps(fps) -> float:
    try:
        f = float(fps)
    except (TypeError, ValueError):
        raise InputError(f"frame rate {fps!r} is not a number.") from None
    if not math.isfinite(f) or f <= 0 or f > MEL_FPS:
        raise InputError(f"frame rate {fps!r} must be a positive number of at most {MEL_FPS} frames per second.")
    return f


def window_start(j: int, fps: float = OFFICIAL_FPS) -> int:
    """Mel index where the window of output frame ``j`` starts: round-half-up(j * 100 / fps)."""
    return int(math.floor(j * MEL_FPS / fps + 0.5))


def num_windows(num_mel: int, fps: float = OFFICIAL_FPS) -> int:
    """Number of complete 20-frame windows in ``num_mel`` mel frames at ``fps`` (M//4 - 4 at 25 fps)."""
    fps = _check_fps(fps)
    last = int(num_mel) - WINDOW_FRAMES  # latest allowed start
    if last < 0:
        return 0
    t = int(math.floor((last + 0.5) * fps / MEL_FPS)) + 1  # estimate, then fix rounding at the edge
    while t > 0 and window_start(t - 1, fps) > last:
        t -= 1
    while window_start(t, fps) <= last:
        t += 1
    return t


def window_starts(num_mel: int, fps: float = OFFICIAL_FPS) -> np.ndarray:
    """int64 [T]: start mel index of every complete window (0, 4, 8, ... at 25 fps)."""
    fps = _check_fps(fps)
    return np.array([window_start(j, fps) for j in range(num_windows(num_mel, fps))], dtype=np.int64)


def num_output_frames(num_samples_16k: int, fps: float = OFFICIAL_FPS) -> int:
    """Output video frames a 16 kHz waveform of ``num_samples_16k`` samples yields at ``fps``."""
    return num_windows(num_mel_frames(num_samples_16k), fps)


def _check_mel(mel) -> torch.Tensor:
    if not torch.is_tensor(mel):
        mel = torch.as_tensor(np.asarray(mel))
    if mel.ndim != 2 or mel.shape[1] != N_MELS:
        raise InputError(f"mel spectrogram: expected [frames, {N_MELS}], got shape {tuple(mel.shape)}.")
    return mel


def _gather(mel: torch.Tensor, starts) -> torch.Tensor:
    idx = torch.as_tensor(np.asarray(starts, dtype=np.int64))[:, None] + torch.arange(WINDOW_FRAMES)
    return mel[idx].transpose(1, 2).unsqueeze(1).contiguous()  # [T, 20, 80] -> [T, 1, 80, 20]


def mel_windows(mel, fps: float = OFFICIAL_FPS, num_frames: int | None = None) -> torch.Tensor:
    """Audio-net inputs [T, 1, 80, 20] float32 (mel x time): window j = mel[s_j : s_j + 20].T.

    mel: [M, 80] from :func:`mel_spectrogram`. ``s_j = round(j * 100 / fps)``; T is the number of
    complete windows (official 25 fps: s_j = 4 j, T = M // 4 - 4). ``num_frames`` keeps the first
    ``num_frames`` windows; asking for more than the audio holds raises :class:`InputError`.
    """
    mel = _check_mel(mel)
    starts = window_starts(mel.shape[0], fps)
    if num_frames is not None:
        if num_frames < 0 or num_frames > len(starts):
            raise InputError(
                f"audio gives {len(starts)} frames at {float(fps):g} fps; {num_frames} were requested. "
                "Use longer audio or fewer frames."
            )
        starts = starts[:num_frames]
    return _gather(mel, starts)


def iter_mel_windows(
    mel, fps: float = OFFICIAL_FPS, batch_size: int = 8, start: int = 0, stop: int | None = None
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(first_frame, windows [b, 1, 80, 20])`` for output frames [start, stop) in batches,
    without materialising all windows (for long audio). Same values as :func:`mel_windows`."""
    mel = _check_mel(mel)
    fps = _check_fps(fps)
    total = num_windows(mel.shape[0], fps)
    stop = total if stop is None else min(int(stop), total)
    for j in range(max(0, int(start)), stop, max(1, int(batch_size))):
        hi = min(j + batch_size, stop)
        yield j, _gather(mel, [window_start(k, fps) for k in range(j, hi)])


# ----------------------------------------------------------------------------- full front end


def check_sample_rate(sample_rate, what: str = "audio sample rate") -> int:
    """``sample_rate`` as an int: a whole number of Hz in 1000..384000, else :class:`InputError`."""
    try:
        sr = int(sample_rate)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{what} {sample_rate!r} is not a number.") from None
    if isinstance(sample_rate, bool) or sr != sample_rate or not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise InputError(
            f"{what} {sample_rate!r} must be a whole number of Hz in {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}."
        )
    return sr


def as_waveform(waveform) -> np.ndarray:
    """The one waveform validator: [N], [C, N] or [1, C, N] samples (numpy or torch, float in
    [-1, 1] or integer PCM) -> float32 [C, N] numpy; integers are scaled to [-1, 1]. At most 16
    channels, channels first. :class:`InputError` for another layout or dtype, no samples,
    NaN / inf."""
    if torch.is_tensor(waveform):
        t = waveform.detach().cpu()
        try:
            waveform = (t.float() if t.dtype == torch.bfloat16 else t).numpy()
        except TypeError:  # dtypes numpy lacks (float8, complex32, ...)
            raise InputError(f"audio waveform has dtype {t.dtype}; expected float samples in [-1, 1].") from None
    try:
        x = np.asarray(waveform)
    except Exception as exc:
        raise InputError(f"audio waveform could not be read as an array ({exc}).") from None
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise InputError(f"audio waveform has dtype {x.dtype}; expected float samples in [-1, 1].")
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise InputError(
            f"audio waveform: expected [samples], [channels, samples] or [1, channels, samples], "
            f"got shape {tuple(x.shape)}."
        )
    if x.shape[0] > MAX_CHANNELS:
        hint = " It looks like [samples, channels]: transpose it." if x.shape[1] <= MAX_CHANNELS else ""
        raise InputError(
            f"audio waveform has {x.shape[0]} channels (shape {tuple(x.shape)}); at most {MAX_CHANNELS} are "
            f"supported, channels first ([channels, samples]).{hint}"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"audio waveform is empty (shape {tuple(x.shape)}). Connect audio that contains sound.")
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        mid = (int(info.max) + int(info.min) + 1) / 2.0
        x = ((x.astype(np.float64) - mid) / (int(info.max) + 1 - mid)).astype(np.float32)
    else:
        x = x.astype(np.float32, copy=False)
        bad = ~np.isfinite(x)
        if bad.any():
            first = int(np.argmax(bad.any(axis=0)))
            raise InputError(
                f"audio waveform contains {int(bad.sum())} NaN or infinite samples (first at sample "
                f"{first}). Fix or re-export the audio."
            )
    return x


def _clipped_fraction(mono: np.ndarray) -> float:
    """Fraction of samples in flat runs (>= 3 equal samples) at +-peak: the signature of clipping."""
    peak = float(np.max(np.abs(mono)))
    if peak == 0.0 or mono.shape[0] < 3:
        return 0.0
    at_peak = np.abs(mono) >= peak
    flat = at_peak[1:-1] & at_peak[:-2] & at_peak[2:] & (mono[1:-1] == mono[:-2]) & (mono[1:-1] == mono[2:])
    return float(flat.sum()) / mono.shape[0]


def prepare_waveform(
    waveform, sample_rate: int, quality: str = "official", max_seconds: float | None = None, remove_dc: bool = False
) -> np.ndarray:
    """User waveform -> the normalised 16 kHz mono float32 [N] the mel spectrogram receives.

    mono -> resample -> (``remove_dc``: subtract the mean; not official) -> whole-clip RMS
    normalisation -> cut to ``max_seconds`` (round(max_seconds * 16000) samples, after
    normalising, as the official fixtures did). Raises :class:`InputError` for a bad shape or
    dtype, NaN/inf, empty, silent (RMS <= ``SILENCE_RMS``) or too short audio. Warns
    (:class:`AudioWarning`) about clipping and a large DC offset, which official mode keeps.
    """
    x = as_waveform(waveform)
    sr = check_sample_rate(sample_rate)
    mono = to_mono(x)
    del x
    clipped = _clipped_fraction(mono)
    wave = resample(mono, sr, SAMPLE_RATE, quality)
    del mono
    seconds = wave.shape[0] / SAMPLE_RATE
    if wave.shape[0] < MIN_SAMPLES:
        raise InputError(
            f"audio is {seconds:.3f} s long ({wave.shape[0]} samples at 16 kHz); at least "
            f"{MIN_SAMPLES / SAMPLE_RATE:.4f} s ({MIN_SAMPLES} samples) are needed for one output frame."
        )
    dc = float(np.mean(wave, dtype=np.float64))
    if remove_dc:
        wave = wave - np.float32(dc)
    with np.errstate(over="ignore", invalid="ignore"):
        rms = float(clip_rms(wave))
    if not math.isfinite(rms):
        raise InputError(
            f"audio samples are far outside [-1, 1] (peak {float(np.max(np.abs(wave))):.3g}): their power "
            "overflows float32. Scale the waveform to [-1, 1] (integer PCM: divide by its full scale)."
        )
    if rms <= SILENCE_RMS:
        raise InputError(
            f"audio is silent (RMS {rms:.2e} <= {SILENCE_RMS:g}, about -80 dBFS), so it cannot drive "
            "the lips. To render without lip motion, zero the mouth factor instead of feeding silence."
        )
    if clipped > CLIP_WARN_FRACTION:
        warnings.warn(
            f"audio looks clipped ({100 * clipped:.2f} % of samples flat at the peak); it is used as is. "
            "Re-export it at a lower level if the lips look wrong.",
            AudioWarning,
            stacklevel=3,
        )
    if not remove_dc and abs(dc) > DC_WARN_RATIO * rms:
        warnings.warn(
            f"audio has a DC offset of {dc:+.4f} (RMS {rms:.4f}); official mode keeps it, which lowers "
            "the normalised speech level. Pass remove_dc=True to subtract it.",
            AudioWarning,
            stacklevel=3,
        )
    wave = normalize_rms(wave)
    if max_seconds is not None:
        try:
            limit = float(max_seconds)
        except (TypeError, ValueError):
            raise InputError(f"max_seconds {max_seconds!r} is not a number.") from None
        if not math.isfinite(limit) or limit <= 0:
            raise InputError(f"max_seconds must be a positive number of seconds, got {max_seconds!r}.")
        n = int(round(limit * SAMPLE_RATE)) if limit * SAMPLE_RATE < wave.shape[0] else wave.shape[0]  # no inf
        if n < MIN_SAMPLES and n < wave.shape[0]:
            raise InputError(
                f"max_seconds={limit:g} keeps too little audio; at least {MIN_SAMPLES / SAMPLE_RATE:.4f} s "
                "are needed for one output frame."
            )
        wave = wave[:n]
    return wave


def audio_to_windows(
    waveform,
    sample_rate: int,
    fps: float = OFFICIAL_FPS,
    quality: str = "official",
    max_seconds: float | None = None,
    remove_dc: bool = False,
) -> torch.Tensor:
    """Waveform [C, N], [N] or [1, C, N] (numpy/torch, float in [-1, 1] or integer PCM) at
    ``sample_rate`` -> audio-net input windows torch float32 [T, 1, 80, 20], one per output frame
    at ``fps``. See :func:`prepare_waveform` for the steps and the checks."""
    fps = _check_fps(fps)
    wave = prepare_waveform(waveform, sample_rate, quality, max_seconds, remove_dc)
    return mel_windows(mel_spectrogram(wave), fps)
