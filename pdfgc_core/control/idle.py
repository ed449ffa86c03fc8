"""Idle motion without a driving video: blinks and head sway, deterministic from a seed.

Both come out as ordinary factors (an eye factor, a pose factor) in the model's own units, because
their shapes are taken from factors the model encoded:

- **Blinks** (:func:`idle_blinks`). A :class:`BlinkShape` is one blink of a source eye factor: its
  level between blinks and its frames from open through closed to open again. By default the
  source is the bundled sample eye video (``samples/drivers/eye``, whose frames 0-8 hold one blink:
  :data:`SAMPLE_BLINK`, found with the dlib eye aspect ratio); any eye factor with a blink can be
  given instead (:func:`blink_shape` finds its strongest blink). Blink times are a stationary
  renewal process with a refractory gap: intervals ``gap + Exp(60/rate - gap)`` seconds, so the
  mean rate is exactly ``rate`` per minute and blinks never overlap. Each blink's duration and
  depth vary a little. Only the blink dims (0, 1, 4, 5) move; the gaze dims keep the source's
  level. Every value is a convex combination of source frames, so the curve stays inside the
  source's range.
- **Head sway** (:func:`head_sway`): smooth low-frequency motion of the 6 pose values: each of 6
  independent unit-variance signals is a sum of sinusoids around ``speed`` Hz, coloured by the
  covariance of a reference pose factor (by default the bundled sample pose video), so it moves
  along the directions a real head moves, ``amplitude`` times as much. An optional per-frame
  loudness envelope (:func:`speech_envelope`) makes it livelier while speech is loud.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..factors import DEFAULT_FPS, EYE_BLINK_DIMS, FACTOR_DIMS, Factor

PACK_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_EYE = PACK_ROOT / "samples" / "drivers" / "eye"
SAMPLE_POSE = PACK_ROOT / "samples" / "drivers" / "pose"
SAMPLE_BLINK = (0, 9)
"""Frames [0, 9) of the sample eye video: one blink (dlib eye aspect ratio 0.32 at frame 0, 0.13 at
frame 5, 0.31 at frame 8); frames 9 on are open (0.28-0.39). Checked by tests/test_control.py."""
SAMPLE_FRAMES = {"eye": slice(0, 24), "pose": slice(0, None, 2)}
"""The sample frames encoded for the defaults: the eye video's blink and 15 open frames after it;
every other frame of the pose video (26 frames, enough for its covariance)."""

DEFAULT_BLINK_RATE = 17.0
"""Blinks per minute (people at rest blink about 12-20 times a minute)."""
MAX_BLINK_RATE = 40.0
BLINK_GAP_SECONDS = 0.25
"""Least time between the end of one blink and the start of the next."""
DURATION_JITTER = 0.15
DEPTH_RANGE = (0.8, 1.0)
SWAY_COMPONENTS = 5
DEFAULT_SWAY_SPEED = 0.2
"""Centre frequency of the head sway, Hz (slow idle motion of a seated speaker)."""
ENVELOPE_RANGE_DB = 30.0
ENVELOPE_SMOOTH_SECONDS = 0.25


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed is {seed!r}; give a whole number >= 0")
    return np.random.default_rng(int(seed))


def _positive(x, what: str, allow_zero: bool = False) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)) or not math.isfinite(x):
        raise InputError(f"{what} is {x!r}; give a finite number")
    if x < 0 or (x == 0 and not allow_zero):
        raise InputError(f"{what} is {x!r}; give a number {'>= 0' if allow_zero else '> 0'}")
    return float(x)


def _length(n, what: str = "length") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"{what} is {n!r}; give a whole number of frames >= 1")
    return int(n)


# ------------------------------------------------------------------------------------------ blinks


@dataclass(frozen=True, eq=False)
class BlinkShape:
    """One blink in the units of the eye factor it was taken from.

    ``rest``: float64 [6], the eye values between blinks (mean of the source's open frames).
    ``curve``: float64 [K,6], the blink's frames; its first and last rows equal ``rest`` on the
    blink dims (the blink starts and ends open); gaze dims equal ``rest``.
    ``fps``: the source's frame rate. ``low`` / ``high``: [6], the source's range per dim."""

    rest: np.ndarray
    curve: np.ndarray
    fps: float
    low: np.ndarray
    high: np.ndarray

    @property
    def seconds(self) -> float:
        """Duration of the blink (first to last frame)."""
        return (len(self.curve) - 1) / self.fps


def _blink_segment(values: np.ndarray) -> tuple[int, int, np.ndarray]:
    """(start, stop, open mask) of the strongest blink in eye values [T,6]: the blink dims' distance
    from their median peaks well above its typical spread."""
    b = values[:, list(EYE_BLINK_DIMS)]
    dist = np.linalg.norm(b - np.median(b, 0), axis=1)
    med = float(np.median(dist))
    mad = float(np.median(np.abs(dist - med))) * 1.4826
    peak = int(np.argmax(dist))
    if len(values) < 5 or dist[peak] <= max(med + 6 * mad, 2 * med, 1e-6):
        raise InputError(
            "the eye factor shows no clear blink (its blink dims 0, 1, 4, 5 barely change); give an eye factor "
            "from a video where the person blinks, or leave it out to use the bundled sample eye video"
        )
    low = med + 0.25 * (dist[peak] - med)
    start, stop = peak, peak + 1
    while start > 0 and dist[start - 1] > low:
        start -= 1
    while stop < len(dist) and dist[stop] > low:
        stop += 1
    start, stop = max(0, start - 1), min(len(dist), stop + 1)  # the open frames on either side
    open_mask = dist <= low
    open_mask[start:stop] = False
    if not open_mask.any():
        open_mask[:] = dist <= np.median(dist)
    return start, stop, open_mask


def blink_shape(eye: Factor, blink: tuple[int, int] | None = None) -> BlinkShape:
    """The blink of an eye factor. ``blink`` = (start, stop) frames of one blink (open at both
    ends), or None to find the strongest blink automatically (:class:`InputError` if there is none).
    The rest level is the mean of the frames outside the blink that are open."""
    if not isinstance(eye, Factor) or eye.kind != "eye":
        raise InputError(f"blink source: expected an eye factor, got {eye!r}")
    v = eye.values.double().numpy()
    if blink is None:
        start, stop, open_mask = _blink_segment(v)
    else:
        start, stop = (int(x) for x in blink)
        if not (0 <= start and start + 3 <= stop <= len(v)):
            raise InputError(f"blink frames {blink!r}: need 0 <= start, start + 3 <= stop <= {len(v)}")
        open_mask = np.ones(len(v), bool)
        open_mask[start:stop] = False
        if not open_mask.any():
            open_mask[[start, stop - 1]] = True
    rest = v[open_mask].mean(0)
    curve = np.repeat(rest[None], stop - start + 2, 0)
    dims = list(EYE_BLINK_DIMS)
    curve[1:-1, dims] = v[start:stop, dims]
    return BlinkShape(rest, curve, eye.fps, v.min(0), v.max(0))


def blink_times(seconds: float, rate: float = DEFAULT_BLINK_RATE, seed: int = 0, gap: float = 0.6) -> np.ndarray:
    """Blink start times in [0, seconds), float64, from a stationary renewal process whose
    intervals are ``gap + Exp(mean 60/rate - gap)``: mean rate exactly ``rate`` per minute, no two
    starts closer than ``gap`` seconds. The first start follows the process's equilibrium law, so
    the expected count in any window of length D is ``rate * D / 60``."""
    seconds = _positive(seconds, "duration")
    rate = _positive(rate, "blink rate", allow_zero=True)
    gap = _positive(gap, "blink gap", allow_zero=True)
    rng = _rng(seed)
    if rate == 0:
        return np.zeros(0)
    mean = 60.0 / rate
    if mean <= gap:
        raise InputError(
            f"blink rate {rate:g}/min leaves {mean:.2f} s between blinks, but a blink and its pause take "
            f"{gap:.2f} s; lower the rate (at most {60.0 / gap:.0f} per minute here)"
        )
    # equilibrium first interval: with probability gap/mean uniform in [0, gap], else gap + Exp
    if rng.random() < gap / mean:
        t = rng.uniform(0.0, gap)
    else:
        t = gap + rng.exponential(mean - gap)
    out = []
    while t < seconds:
        out.append(t)
        t += gap + rng.exponential(mean - gap)
    return np.array(out, dtype=np.float64)


def _stretch(curve: np.ndarray, n: int) -> np.ndarray:
    """``curve`` [K,6] resampled linearly to ``n`` >= 2 frames (first and last rows kept)."""
    pos = np.linspace(0.0, len(curve) - 1, n)
    lo = np.floor(pos).astype(int).clip(0, len(curve) - 1)
    hi = (lo + 1).clip(max=len(curve) - 1)
    w = (pos - lo)[:, None]
    return (1 - w) * curve[lo] + w * curve[hi]


@dataclass(frozen=True)
class BlinkTrack:
    """The result of :func:`idle_blinks`: the eye ``factor`` and each blink's ``starts`` (output
    frame of its first frame), ``frames`` (its length) and ``depth`` (0..1 of the source blink)."""

    factor: Factor
    starts: np.ndarray
    frames: np.ndarray
    depth: np.ndarray


def idle_blinks(
    length: int,
    shape: BlinkShape,
    *,
    rate: float = DEFAULT_BLINK_RATE,
    seed: int = 0,
    fps: float = DEFAULT_FPS,
    duration: float = 1.0,
    depth: float = 1.0,
) -> BlinkTrack:
    """An eye factor of ``length`` frames at ``fps``: ``shape.rest`` with blinks at
    :func:`blink_times`. Each blink is the shape's curve time-stretched by ``duration`` (x a random
    factor within 1 +- :data:`DURATION_JITTER`) and scaled towards the rest level by ``depth`` (x a
    random factor in :data:`DEPTH_RANGE`; 1 = as closed as the source). ``rate`` 0 gives no blinks."""
    n = _length(length)
    fps = _positive(fps, "fps")
    duration = _positive(duration, "blink duration")
    depth = _positive(depth, "blink depth", allow_zero=True)
    if depth > 1:
        raise InputError(f"blink depth is {depth:g}; give 0..1 (1 closes the eyes as far as the source blink)")
    if not isinstance(shape, BlinkShape):
        raise InputError(f"blink shape: expected a BlinkShape, got {type(shape).__name__}")
    rate = _positive(rate, "blink rate", allow_zero=True)
    if rate > MAX_BLINK_RATE:
        raise InputError(f"blink rate {rate:g}/min is implausible; give 0..{MAX_BLINK_RATE:g} (people: 12-20)")
    longest = shape.seconds * duration * (1 + DURATION_JITTER)
    rng = _rng(seed)
    times = blink_times(n / fps, rate, int(rng.integers(2**31)), gap=longest + BLINK_GAP_SECONDS) if rate else []
    out = np.repeat(shape.rest[None], n, 0)
    starts, frames, depths = [], [], []
    for t in times:
        k = max(
            3, int(round(shape.seconds * duration * rng.uniform(1 - DURATION_JITTER, 1 + DURATION_JITTER) * fps)) + 1
        )
        d = depth * rng.uniform(*DEPTH_RANGE)
        s = int(round(t * fps))
        if s >= n:
            continue
        blink = shape.rest + d * (_stretch(shape.curve, k) - shape.rest)
        m = min(k, n - s)
        out[s : s + m, list(EYE_BLINK_DIMS)] = blink[:m, list(EYE_BLINK_DIMS)]
        starts.append(s)
        frames.append(k)
        depths.append(d)
    return BlinkTrack(
        Factor("eye", out.astype(np.float32), fps), np.array(starts, int), np.array(frames, int), np.array(depths)
    )


# -------------------------------------------------------------------------------------- head sway


def speech_envelope(
    waveform, sample_rate: int, length: int, fps: float = DEFAULT_FPS, lead: float | None = None
) -> np.ndarray:
    """Loudness per output frame, float32 [length] in 0..1: RMS over 1/fps-second windows centred on
    frame time + ``lead`` (default: the lips' 0.08 s audio lead), in dB relative to the clip's 95th
    percentile, 0 at :data:`ENVELOPE_RANGE_DB` below it (or at silence), then smoothed over
    :data:`ENVELOPE_SMOOTH_SECONDS`. ``waveform``: [C,N] or [N] float."""
    from ..audio import SILENCE_RMS, to_mono

    if lead is None:
        from ..audio import AUDIO_LEAD_SECONDS as lead
    n = _length(length)
    fps = _positive(fps, "fps")
    sr = int(_positive(sample_rate, "sample rate"))
    w = np.asarray(waveform, dtype=np.float64)
    mono = to_mono(w) if w.ndim == 2 else w.reshape(-1)
    if mono.size == 0 or not np.isfinite(mono).all():
        raise InputError("speech envelope: the audio is empty or has NaN / infinite samples")
    half = max(1, int(round(sr / fps / 2)))
    centres = np.round((np.arange(n) / fps + lead) * sr).astype(np.int64)
    csum = np.concatenate([[0.0], np.cumsum(mono.astype(np.float64) ** 2)])
    lo = np.clip(centres - half, 0, mono.size)
    hi = np.clip(centres + half, 0, mono.size)
    rms = np.sqrt((csum[hi] - csum[lo]) / np.maximum(hi - lo, 1))
    db = 20 * np.log10(np.maximum(rms, 1e-12))
    ref = float(np.percentile(db, 95))
    floor = max(ref - ENVELOPE_RANGE_DB, 20 * math.log10(SILENCE_RMS))
    env = np.zeros(n) if ref <= floor else np.clip((db - floor) / (ref - floor), 0, 1)
    sigma = ENVELOPE_SMOOTH_SECONDS * fps
    r = int(math.ceil(3 * sigma))
    if r > 0:
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
        env = np.convolve(np.pad(env, r, mode="edge"), k / k.sum(), mode="valid")
    return env.astype(np.float32)


def _smooth_noise(n: int, fps: float, speed: float, rng: np.random.Generator, channels: int) -> np.ndarray:
    """[n, channels] signals of unit variance (over random phases), each a sum of
    :data:`SWAY_COMPONENTS` sinusoids with frequencies ``speed * exp(U(-0.6, 0.6))`` Hz."""
    t = np.arange(n) / fps
    out = np.zeros((n, channels))
    amp = math.sqrt(2.0 / SWAY_COMPONENTS)
    for c in range(channels):
        f = speed * np.exp(rng.uniform(-0.6, 0.6, SWAY_COMPONENTS))
        ph = rng.uniform(0, 2 * np.pi, SWAY_COMPONENTS)
        out[:, c] = amp * np.sin(2 * np.pi * f[None, :] * t[:, None] + ph[None, :]).sum(1)
    return out


def head_sway(
    length: int,
    reference: Factor,
    *,
    amplitude: float = 1.0,
    speed: float = DEFAULT_SWAY_SPEED,
    seed: int = 0,
    fps: float = DEFAULT_FPS,
    center: str = "zero",
    envelope=None,
    liveliness: float = 1.0,
) -> Factor:
    """A pose factor [length, 6] at ``fps``: ``base + amplitude * (1 + liveliness * envelope) *
    (L @ noise)``, where ``L L^T`` is the covariance of the ``reference`` pose factor (so amplitude 1
    moves as much as the reference does, along its directions), ``noise`` is smooth unit-variance
    noise around ``speed`` Hz, and ``base`` is zero (``center="zero"``: the canonical pose, as when no
    pose is given) or the reference's mean pose (``"reference"``). ``envelope``: optional per-frame
    loudness [length] in 0..1 (:func:`speech_envelope`)."""
    n = _length(length)
    fps = _positive(fps, "fps")
    amplitude = _positive(amplitude, "sway amplitude", allow_zero=True)
    speed = _positive(speed, "sway speed")
    liveliness = _positive(liveliness, "sway liveliness", allow_zero=True)
    if speed > fps / 2:
        raise InputError(f"sway speed {speed:g} Hz is above half the frame rate ({fps / 2:g} Hz); use 0.05..1 Hz")
    if not isinstance(reference, Factor) or reference.kind != "pose":
        raise InputError(f"head sway reference: expected a pose factor, got {reference!r}")
    if center not in ("zero", "reference"):
        raise InputError(f"head sway center {center!r} is not 'zero' or 'reference'")
    ref = reference.values.double().numpy()
    cov = np.cov(ref.T) if len(ref) > 1 else np.zeros((6, 6))
    evals, evecs = np.linalg.eigh(cov)
    colour = evecs * np.sqrt(np.clip(evals, 0, None))[None, :]
    noise = _smooth_noise(n, fps, speed, _rng(seed), FACTOR_DIMS["pose"])
    gain = np.full(n, amplitude)
    if envelope is not None:
        env = np.asarray(envelope, dtype=np.float64).reshape(-1)
        if env.shape != (n,) or not np.isfinite(env).all():
            raise InputError(f"head sway envelope: expected {n} finite values, got {env.shape}")
        gain = gain * (1 + liveliness * np.clip(env, 0, 1))
    base = ref.mean(0) if center == "reference" else np.zeros(6)
    values = base[None] + gain[:, None] * (noise @ colour.T)
    return Factor("pose", values.astype(np.float32), fps)


# ---------------------------------------------------------------------------------- bundled samples


_SAMPLE_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def encode_sample(engine, kind: str) -> Factor:
    """The ``kind`` ("eye" or "pose") factor of the bundled sample driver (its
    :data:`SAMPLE_FRAMES`, 25 fps, official crop), encoded by ``engine`` (a
    :class:`pdfgc_core.engine.Engine`); kept per motion network, so it is encoded once."""
    from .. import images, media

    folder = {"eye": SAMPLE_EYE, "pose": SAMPLE_POSE}.get(kind)
    if folder is None:
        raise InputError(f"no bundled sample for the {kind!r} factor; use 'eye' or 'pose'")
    if not folder.is_dir():
        raise InputError(f"the bundled sample {folder} is missing; reinstall ComfyUI-PD-FGC or give your own factor")
    cache = _SAMPLE_CACHE.setdefault(engine.models.motion, {})
    if kind not in cache:
        files = media.list_frame_files(folder)[SAMPLE_FRAMES[kind]]
        x = images.prepare_batch(np.stack([images.read_image(f) for f in files]), crop="official")
        cache[kind] = engine.encode_drivers(x, heads=(kind,), fps=DEFAULT_FPS)[kind]
    return cache[kind]


def sample_blink_shape(engine) -> BlinkShape:
    """:class:`BlinkShape` of the bundled sample eye video (its blink at :data:`SAMPLE_BLINK`)."""
    return blink_shape(encode_sample(engine, "eye"), SAMPLE_BLINK)


__all__ = [
    "DEFAULT_BLINK_RATE",
    "DEFAULT_SWAY_SPEED",
    "SAMPLE_BLINK",
    "BlinkShape",
    "BlinkTrack",
    "blink_shape",
    "blink_times",
    "encode_sample",
    "head_sway",
    "idle_blinks",
    "sample_blink_shape",
    "speech_envelope",
]
