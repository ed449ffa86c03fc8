"""Motion factors: their representation, the official post-processing, and their algebra.

PD-FGC drives its generator with four disentangled motion factors per output frame:

=============  ====  ==========================================================
factor         dims  source
=============  ====  ==========================================================
``mouth``       500  audio net ``mouth_embed`` (one per 80x20 mel window)
``expression``   30  motion net ``emo_embed`` on the expression driver
``eye``           6  motion net ``eye_embed`` on the eye driver
                     (dims 0, 1, 4, 5 = blink; dims 2, 3 = gaze)
``pose``          6  motion net ``headpose_embed`` on the pose driver
=============  ====  ==========================================================

The generator's motion input is ``[mouth 500 | expression 30 | eye 6 | pose 6]`` = 542
floats per frame (:data:`MOTION_ORDER`), appended to the 2048-d appearance vector.

A :class:`Factor` holds the *raw* encoder outputs, one row per driving frame or audio
window: float32 CPU ``[T, D]``. Everything here is immutable; operations return new
factors. The official post-processing (gains and temporal smoothing, :class:`PostProcess`)
is applied exactly once, by :func:`assemble_motion`, after each factor has been fitted to
the output length, as the official code does:

    fit to the output length -> gain -> smoothing -> blink / gaze masks -> concatenate

(the official code multiplies the mouth by 1.5 *before* smoothing it; it is linear, but
only that order is bit-exact, so gains always come first here).

Sequence lengths are matched by frame count only; frames are never resampled in time
implicitly. Use :func:`retime` to change a factor's frame rate.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .audio import OFFICIAL_FPS
from .errors import InputError, MediaError

FACTOR_DIMS = {"mouth": 500, "expression": 30, "eye": 6, "pose": 6}
MOTION_ORDER = ("mouth", "expression", "eye", "pose")
MOTION_DIM = sum(FACTOR_DIMS.values())  # 542
EYE_BLINK_DIMS = (0, 1, 4, 5)
EYE_GAZE_DIMS = (2, 3)
DEFAULT_FPS = OFFICIAL_FPS
OFFICIAL_GAINS = {"mouth": 1.5, "expression": 1.2, "eye": 1.2, "pose": 1.0}
"""The official post-processing's gain per factor (:class:`PostProcess` defaults), in MOTION_ORDER."""

FIT_MODES = ("loop", "pingpong", "hold", "truncate")
SMOOTHING_METHODS = ("none", "box", "gaussian")
EDGE_MODES = ("replicate", "official")
RAMP_CURVES = ("linear", "smoothstep")
RETIME_METHODS = ("linear", "nearest")

FILE_FORMAT = "pdfgc-factor"
FILE_FORMAT_VERSION = 1
FILE_PRODUCER = "ComfyUI-PD-FGC"
FILE_TENSOR_KEY = "values"

Weight = float | int | torch.Tensor | np.ndarray | Sequence[float]


# --------------------------------------------------------------------------- the type


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _a(kind: str) -> str:
    """``kind`` with its indefinite article: "a pose", "an eye"."""
    return ("an " if kind[:1] in "aeiou" else "a ") + kind


def _check_kind(kind, what: str = "factor kind") -> str:
    if not isinstance(kind, str) or kind not in FACTOR_DIMS:
        raise InputError(f"{what} {kind!r} is not one of {', '.join(MOTION_ORDER)}; use one of those names")
    return kind


def _as_float_tensor(x, what: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "fiu":
            raise InputError(f"{what} has numpy dtype {x.dtype}; give real numbers (float32)")
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise InputError(f"{what} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.dtype == torch.bool or x.is_complex():
        raise InputError(f"{what} has dtype {x.dtype}; give real numbers (float32)")
    return x.detach().to(device="cpu", dtype=torch.float32)


def _check_finite(values: torch.Tensor, what: str) -> None:
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        n_nan = int(torch.isnan(values).sum())
        n_inf = int(bad.sum()) - n_nan
        frame = int(bad.reshape(bad.shape[0], -1).any(1).nonzero()[0, 0]) if values.dim() else 0
        raise InputError(
            f"{what} contains {n_nan} NaN and {n_inf} infinite values (first at frame "
            f"{frame}); the encoder input or an operation upstream produced invalid "
            f"numbers: re-encode the driver or check the values fed to that operation"
        )


@dataclass(frozen=True, eq=False)
class Factor:
    """One motion factor over time.

    kind:   one of :data:`MOTION_ORDER`.
    values: float32 CPU tensor ``[T, D]``, T >= 1 frames, D = ``FACTOR_DIMS[kind]``; raw
            encoder outputs (unbounded reals, roughly unit scale), finite. numpy arrays and
            other real dtypes are accepted and converted; the tensor is copied, so the
            factor never aliases the caller's data.
    fps:    frame rate the rows were sampled at (25 for the official pipeline and for
            audio, whose windows advance by 40 ms).
    """

    kind: str
    values: torch.Tensor
    fps: float = DEFAULT_FPS

    def __post_init__(self):
        kind = _check_kind(self.kind)
        dim = FACTOR_DIMS[kind]
        v = _as_float_tensor(self.values, f"the {kind} factor's values")
        if v.dim() != 2 or v.shape[1] != dim or v.shape[0] < 1:
            hint = " (a single frame needs a leading frame axis: values[None])" if v.dim() == 1 else ""
            raise InputError(
                f"the {kind} factor's values have shape {tuple(v.shape)}; expected [frames >= 1, {dim}]{hint}"
            )
        _check_finite(v, f"the {kind} factor")
        fps = self.fps
        if not _is_number(fps) or not math.isfinite(fps) or fps <= 0:
            raise InputError(f"the {kind} factor's fps is {fps!r}; give a positive frame rate such as 25")
        object.__setattr__(self, "values", v.clone(memory_format=torch.contiguous_format))
        object.__setattr__(self, "fps", float(fps))

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def num_frames(self) -> int:
        return self.values.shape[0]

    @property
    def dim(self) -> int:
        return self.values.shape[1]

    def with_values(self, values) -> Factor:
        """A factor of the same kind and fps holding ``values`` ([T', D])."""
        return Factor(self.kind, values, self.fps)

    def zeros_like(self) -> Factor:
        return self.with_values(torch.zeros_like(self.values))

    def __repr__(self) -> str:
        return f"Factor(kind={self.kind!r}, frames={len(self)}, dim={self.dim}, fps={self.fps:g})"


def _check_factor(f, what: str = "factor", kind: str | None = None) -> Factor:
    if not isinstance(f, Factor):
        raise InputError(f"{what} must be a Factor, got {type(f).__name__}")
    if kind is not None and f.kind != kind:
        raise InputError(f"{what} must be {_a(kind)} factor, got {_a(f.kind)} factor")
    return f


def _check_length(length, what: str = "length") -> int:
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise InputError(f"{what} is {length!r}; give a whole number of frames >= 1")
    return int(length)


def _common(a: Factor, b: Factor, op: str) -> None:
    _check_factor(a, f"{op}: the first factor")
    _check_factor(b, f"{op}: the second factor")
    if a.kind != b.kind:
        raise InputError(
            f"{op}: cannot combine {_a(a.kind)} factor with {_a(b.kind)} factor; give two factors of the same kind"
        )
    if not math.isclose(a.fps, b.fps, rel_tol=1e-6):
        raise InputError(
            f"{op}: the {a.kind} factors have different frame rates ({a.fps:g} and "
            f"{b.fps:g} fps); retime one of them first"
        )


# --------------------------------------------------------------------------- smoothing


def gaussian_kernel(window: int = 3, sigma: float = 1.0) -> torch.Tensor:
    """Normalised Gaussian taps ``exp(-x^2 / 2 sigma^2)``, x = -(window//2)..window//2,
    computed in float64 and cast to float32 (window 3, sigma 1 gives the official
    [0.27406862, 0.45186275, 0.27406862]). Returns float32 ``[window]``."""
    x = np.arange(window, dtype=np.float64) - (window // 2)
    k = np.exp(-(x**2) / (2.0 * float(sigma) ** 2))
    return torch.from_numpy(k / k.sum()).float()


def _box_official(x: torch.Tensor, r: int) -> torch.Tensor:
    # Mean over the neighbours that exist; per-frame torch mean in float32 (bit-exact to
    # the official per-frame loop).
    t = x.shape[0]
    out = torch.empty_like(x)
    if t > 2 * r:
        out[r : t - r] = x.unfold(0, 2 * r + 1, 1).mean(-1)
        edges = list(range(r)) + list(range(t - r, t))
    else:
        edges = range(t)
    for i in edges:
        out[i] = x[max(0, i - r) : min(t, i + r + 1)].mean(0)
    return out


@dataclass(frozen=True)
class Smoothing:
    """A temporal filter applied along the frame axis of a ``[T, D]`` float32 tensor.

    method: "none", "box" (mean of ``window`` frames) or "gaussian" (``window`` taps,
            standard deviation ``sigma`` frames).
    window: odd number of taps >= 1.
    edge:   "official": box averages the neighbours that exist (official pose smoothing);
            gaussian zero-pads, so the first and last frames are attenuated (official
            mouth smoothing). "replicate": both repeat the edge frames.
    """

    method: str = "none"
    window: int = 3
    sigma: float = 1.0
    edge: str = "official"

    def __post_init__(self):
        if self.method not in SMOOTHING_METHODS:
            raise InputError(f"smoothing method {self.method!r} is not one of {', '.join(SMOOTHING_METHODS)}")
        w = self.window
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1 or w % 2 == 0:
            raise InputError(f"smoothing window is {w!r}; give an odd number of frames >= 1 (e.g. 3)")
        s = self.sigma
        if not _is_number(s) or not math.isfinite(s) or s <= 0:
            raise InputError(f"smoothing sigma is {s!r}; give a positive number of frames (e.g. 1.0)")
        if self.edge not in EDGE_MODES:
            raise InputError(f"smoothing edge mode {self.edge!r} is not one of {', '.join(EDGE_MODES)}")
        object.__setattr__(self, "window", int(w))
        object.__setattr__(self, "sigma", float(s))

    @classmethod
    def none(cls) -> Smoothing:
        return cls("none")

    @classmethod
    def box(cls, window: int = 3, edge: str = "official") -> Smoothing:
        return cls("box", window=window, edge=edge)

    @classmethod
    def gaussian(cls, window: int = 3, sigma: float = 1.0, edge: str = "official") -> Smoothing:
        return cls("gaussian", window=window, sigma=sigma, edge=edge)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Filter ``x`` float32 ``[T, D]`` over T; returns a new float32 ``[T, D]``."""
        if self.method == "none" or self.window == 1:
            return x.clone()
        r = self.window // 2
        if self.method == "box":
            if self.edge == "official":
                return _box_official(x, r)
            padded = F.pad(x.T[None], (r, r), mode="replicate")[0].T
            return padded.unfold(0, self.window, 1).mean(-1)
        d = x.shape[1]
        k = gaussian_kernel(self.window, self.sigma).view(1, 1, -1).repeat(d, 1, 1)
        seq = x.T[None]  # [1, D, T]
        if self.edge == "replicate":
            seq, pad = F.pad(seq, (r, r), mode="replicate"), 0
        else:
            pad = r
        return F.conv1d(seq, k, padding=pad, groups=d)[0].T.contiguous()


def _as_smoothing(s, what: str) -> Smoothing:
    if isinstance(s, Smoothing):
        return s
    if isinstance(s, str):
        return Smoothing(s)
    if s is None:
        return Smoothing.none()
    raise InputError(f"{what} must be a Smoothing or one of {', '.join(SMOOTHING_METHODS)}, got {s!r}")


# --------------------------------------------------------------------------- post-processing


@dataclass(frozen=True)
class PostProcess:
    """Per-factor gain and temporal smoothing, applied once to the fitted sequences.

    Each factor ``x`` [T, D] becomes ``smoothing.apply(x * gain)``. The defaults are the
    official ones: mouth x1.5 then 3-tap Gaussian (sigma 1, zero-padded edges); pose 3-tap
    box mean (edges renormalised), gain 1; eye x1.2; expression x1.2 (:data:`OFFICIAL_GAINS`). Smoothing fields
    accept a :class:`Smoothing` or a method name ("none", "box", "gaussian": window 3,
    sigma 1, official edges).
    """

    mouth_gain: float = OFFICIAL_GAINS["mouth"]
    mouth_smoothing: Smoothing = Smoothing.gaussian(3, 1.0)
    expression_gain: float = OFFICIAL_GAINS["expression"]
    expression_smoothing: Smoothing = Smoothing.none()
    eye_gain: float = OFFICIAL_GAINS["eye"]
    eye_smoothing: Smoothing = Smoothing.none()
    pose_gain: float = OFFICIAL_GAINS["pose"]
    pose_smoothing: Smoothing = Smoothing.box(3)

    def __post_init__(self):
        for kind in MOTION_ORDER:
            g = getattr(self, f"{kind}_gain")
            if not _is_number(g) or not math.isfinite(g):
                raise InputError(f"{kind} gain is {g!r}; give a finite number (official: {OFFICIAL_GAINS[kind]:g})")
            object.__setattr__(self, f"{kind}_gain", float(g))
            object.__setattr__(
                self, f"{kind}_smoothing", _as_smoothing(getattr(self, f"{kind}_smoothing"), f"{kind} smoothing")
            )

    @classmethod
    def official(cls) -> PostProcess:
        return cls()

    @classmethod
    def none(cls) -> PostProcess:
        """Unit gains, no smoothing: the raw factors reach the generator unchanged."""
        return cls(1.0, "none", 1.0, "none", 1.0, "none", 1.0, "none")

    def gain(self, kind: str) -> float:
        return getattr(self, f"{_check_kind(kind)}_gain")

    def smoothing(self, kind: str) -> Smoothing:
        return getattr(self, f"{_check_kind(kind)}_smoothing")

    def apply_values(self, kind: str, x: torch.Tensor) -> torch.Tensor:
        """Post-process a float32 ``[T, D]`` tensor of factor ``kind``."""
        return self.smoothing(kind).apply(x * self.gain(kind))

    def apply(self, f: Factor) -> Factor:
        _check_factor(f)
        return f.with_values(self.apply_values(f.kind, f.values))


# --------------------------------------------------------------------------- length fitting


def fit_indices(num_frames: int, length: int, mode: str = "loop") -> torch.Tensor:
    """Source frame index for each of ``length`` output frames, int64 ``[length]``.

    loop:     i -> i mod T (the official cycling of driving sequences).
    pingpong: 0, 1, .., T-1, T-2, .., 1, 0, 1, .. (no frame repeated at the turns).
    hold:     i -> min(i, T-1): plays once, then holds the last frame.
    truncate: i -> i; only shortens. Asking for more than T frames is an InputError
              rather than a silent pad: pick loop, pingpong or hold to lengthen.
    """
    t = _check_length(num_frames, "number of source frames")
    n = _check_length(length)
    i = torch.arange(n, dtype=torch.int64)
    if mode == "loop":
        return i % t
    if mode == "pingpong":
        if t == 1:
            return torch.zeros(n, dtype=torch.int64)
        p = i % (2 * (t - 1))
        return torch.where(p < t, p, 2 * (t - 1) - p)
    if mode == "hold":
        return i.clamp(max=t - 1)
    if mode == "truncate":
        if n > t:
            raise InputError(
                f"fit 'truncate' can only shorten: the sequence has {t} frames but {n} "
                f"are needed; use 'loop', 'pingpong' or 'hold' to lengthen it"
            )
        return i
    raise InputError(f"fit mode {mode!r} is not one of {', '.join(FIT_MODES)}")


def fit_length(f: Factor, length: int, mode: str = "loop") -> Factor:
    """``f`` with exactly ``length`` frames, chosen by :func:`fit_indices` (``mode``)."""
    _check_factor(f)
    try:
        idx = fit_indices(len(f), length, mode)
    except InputError as e:
        raise InputError(f"the {f.kind} factor: {e}") from None
    if len(idx) == len(f):  # every mode is the identity at the same length
        return f
    return f.with_values(f.values[idx])


def skip_first(f: Factor, n: int = 2) -> Factor:
    """``f`` without its first ``n`` frames (the official loader drops the first two
    files of every driving directory)."""
    _check_factor(f)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InputError(f"skip_first: n is {n!r}; give a whole number of frames >= 0")
    if n >= len(f):
        raise InputError(
            f"the {f.kind} driver has {len(f)} frames; skipping the first {n} leaves none: give at least {n + 1} frames"
        )
    return f if n == 0 else f.with_values(f.values[n:])


def retime(f: Factor, fps: float, method: str = "linear") -> Factor:
    """``f`` resampled in time to ``fps``: round(T * fps / f.fps) frames (>= 1); output frame
    j samples source time j * f.fps / fps (in source frames), by nearest frame or by linear
    interpolation between neighbours (clamped at the end)."""
    _check_factor(f)
    if not _is_number(fps) or not math.isfinite(fps) or fps <= 0:
        raise InputError(f"retime: fps is {fps!r}; give a positive frame rate such as 25")
    if method not in RETIME_METHODS:
        raise InputError(f"retime method {method!r} is not one of {', '.join(RETIME_METHODS)}")
    t = len(f)
    n = max(1, round(t * fps / f.fps))
    pos = torch.arange(n, dtype=torch.float64) * (f.fps / fps)
    pos = pos.clamp(max=t - 1)
    if method == "nearest":
        return Factor(f.kind, f.values[torch.floor(pos + 0.5).long().clamp(max=t - 1)], fps)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=t - 1)
    w = (pos - lo).float()[:, None]
    return Factor(f.kind, (1 - w) * f.values[lo] + w * f.values[hi], fps)


# --------------------------------------------------------------------------- algebra


def _per_frame(w: Weight, length: int | None, what: str) -> tuple[torch.Tensor, bool]:
    """A weight as float32 ``[1, 1]`` (a number) or ``[T, 1]`` (per frame, checked against
    ``length`` if given), and whether it was given per frame."""
    if isinstance(w, (bool, np.bool_)):
        raise InputError(f"{what} must be a number or a per-frame sequence, got {w!r}")
    if _is_number(w):
        t, per_frame = torch.tensor([[float(w)]], dtype=torch.float32), False
    else:
        if isinstance(w, (list, tuple)):
            w = np.asarray(w, dtype=np.float64)
        t = _as_float_tensor(w, what)
        if t.dim() == 2 and t.shape[1] == 1:
            t = t[:, 0]
        per_frame = t.dim() == 1
        if t.dim() == 0:
            t = t.reshape(1, 1)
        elif t.dim() == 1 and t.shape[0] >= 1:
            if length is not None and t.shape[0] != length:
                raise InputError(
                    f"{what} has {t.shape[0]} per-frame values but the factor has {length} "
                    f"frames; give one value per frame or fit the factor first"
                )
            t = t[:, None]
        else:
            raise InputError(f"{what} has shape {tuple(t.shape)}; give a number or a [frames] sequence")
    _check_finite(t, what)
    return t, per_frame


def zero(f: Factor) -> Factor:
    """All-zero factor of the same kind, length and fps (what a disabled factor feeds)."""
    return _check_factor(f).zeros_like()


def scale(f: Factor, strength: Weight) -> Factor:
    """``f * strength``; strength is a number or a per-frame sequence of len(f) values."""
    _check_factor(f)
    return f.with_values(f.values * _per_frame(strength, len(f), "strength")[0])


def offset(f: Factor, delta: Weight) -> Factor:
    """``f + delta``: a number, or one value per dimension (float32 ``[D]``), added to
    every frame (e.g. a constant head-pose bias)."""
    _check_factor(f)
    if _is_number(delta):
        d = torch.tensor([float(delta)], dtype=torch.float32)
    else:
        if isinstance(delta, bool):
            raise InputError(f"offset must be a number or {f.dim} values, got {delta!r}")
        d = _as_float_tensor(np.asarray(delta, np.float64) if isinstance(delta, (list, tuple)) else delta, "offset")
        if d.dim() == 0:
            d = d.reshape(1)
        elif d.dim() != 1 or d.shape[0] != f.dim:
            raise InputError(f"offset has shape {tuple(d.shape)}; {_a(f.kind)} offset is a number or {f.dim} values")
    _check_finite(d, "offset")
    return f.with_values(f.values + d[None, :])


def _pair(a: Factor, b: Factor, length: int | None, fit: str, op: str):
    _common(a, b, op)
    n = max(len(a), len(b)) if length is None else length
    return fit_length(a, n, fit), fit_length(b, n, fit)


def add(a: Factor, b: Factor, *, fit: str = "loop") -> Factor:
    """``a + b``. Both are fitted to max(len(a), len(b)) frames with ``fit`` first."""
    a, b = _pair(a, b, None, fit, "add")
    return a.with_values(a.values + b.values)


def mix(a: Factor, b: Factor, t: Weight, *, fit: str = "loop") -> Factor:
    """Interpolation ``(1 - t) * a + t * b`` (t = 0 gives a, t = 1 gives b, exactly).

    ``t`` is a number or a per-frame sequence (see :func:`ramp`). Common length: len(t) for
    a per-frame t, else max(len(a), len(b)); each input is fitted to it with ``fit``.
    """
    _common(a, b, "mix")
    w, per_frame = _per_frame(t, None, "mix weight")
    a, b = _pair(a, b, w.shape[0] if per_frame else None, fit, "mix")
    return a.with_values((1 - w) * a.values + w * b.values)


def ramp(
    length: int, start: float = 0.0, end: float = 1.0, *, first: int = 0, last: int | None = None, curve: str = "linear"
) -> torch.Tensor:
    """Per-frame weights, float32 ``[length]``: ``start`` up to frame ``first``, a transition
    reaching ``end`` at frame ``last`` (default length-1), ``end`` from there on (so a
    one-frame ramp is ``[end]``). ``curve``: "linear" or "smoothstep" (3s^2 - 2s^3, zero
    slope at both ends). Both plateaus are exactly ``start`` and ``end``."""
    n = _check_length(length)
    last = n - 1 if last is None else last
    for name, v in (("first", first), ("last", last)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < n:
            raise InputError(f"ramp: {name} is {v!r}; give a frame index in 0..{n - 1}")
    if last < first:
        raise InputError(f"ramp: last ({last}) is before first ({first})")
    for name, v in (("start", start), ("end", end)):
        if not _is_number(v) or not math.isfinite(v):
            raise InputError(f"ramp: {name} is {v!r}; give a finite number")
    if curve not in RAMP_CURVES:
        raise InputError(f"ramp curve {curve!r} is not one of {', '.join(RAMP_CURVES)}")
    i = torch.arange(n, dtype=torch.float64)
    s = (i >= first).double() if last == first else ((i - first) / (last - first)).clamp(0, 1)
    if curve == "smoothstep":
        s = s * s * (3 - 2 * s)
    s = s.float()
    return (1 - s) * float(start) + s * float(end)


def _eye_mask(dims: Sequence[int]) -> torch.Tensor:
    m = torch.zeros(FACTOR_DIMS["eye"], dtype=torch.float32)
    m[list(dims)] = 1
    return m


def _keep_dims(f: Factor, dims: Sequence[int]) -> Factor:
    v = torch.zeros_like(f.values)
    v[:, list(dims)] = f.values[:, list(dims)]
    return f.with_values(v)


def split_eye(eye: Factor) -> tuple[Factor, Factor]:
    """(blink, gaze): two eye factors; blink keeps dims 0, 1, 4, 5 and gaze dims 2, 3, the
    other dims being zero."""
    _check_factor(eye, "split_eye: the input", "eye")
    return _keep_dims(eye, EYE_BLINK_DIMS), _keep_dims(eye, EYE_GAZE_DIMS)


def merge_eye(blink: Factor, gaze: Factor, *, fit: str = "loop") -> Factor:
    """An eye factor taking dims 0, 1, 4, 5 from ``blink`` and dims 2, 3 from ``gaze`` (their
    other dims are ignored), fitted to max(len) frames with ``fit``. Inverse of split_eye."""
    _check_factor(blink, "merge_eye: blink", "eye")
    _check_factor(gaze, "merge_eye: gaze", "eye")
    blink, gaze = _pair(blink, gaze, None, fit, "merge_eye")
    v = blink.values.clone()
    v[:, list(EYE_GAZE_DIMS)] = gaze.values[:, list(EYE_GAZE_DIMS)]
    return blink.with_values(v)


def smooth(
    f: Factor, method: str | Smoothing = "gaussian", window: int = 3, sigma: float = 1.0, edge: str = "official"
) -> Factor:
    """``f`` filtered over time (see :class:`Smoothing`); ``method`` may be a Smoothing."""
    _check_factor(f)
    s = method if isinstance(method, Smoothing) else Smoothing(method, window, sigma, edge)
    return f.with_values(s.apply(f.values))


def hold(f: Factor, index: int = 0, length: int | None = None) -> Factor:
    """Frame ``index`` of ``f`` (negative counts from the end) repeated ``length`` times
    (default len(f)): freezes that factor."""
    _check_factor(f)
    t = len(f)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -t <= index < t:
        raise InputError(f"hold: frame {index!r} is outside the {f.kind} factor's {t} frames (valid: {-t}..{t - 1})")
    n = t if length is None else _check_length(length, "hold length")
    return f.with_values(f.values[int(index)].expand(n, -1))


def concat(*factors: Factor) -> Factor:
    """The factors played one after another (same kind and fps)."""
    if not factors:
        raise InputError("concat needs at least one factor")
    for g in factors[1:]:
        _common(factors[0], g, "concat")
    _check_factor(factors[0])
    return factors[0].with_values(torch.cat([g.values for g in factors], 0))


# --------------------------------------------------------------------------- assembly


def motion_slices() -> dict[str, slice]:
    """Where each factor lives in the 542-d motion vector."""
    out, start = {}, 0
    for kind in MOTION_ORDER:
        out[kind] = slice(start, start + FACTOR_DIMS[kind])
        start += FACTOR_DIMS[kind]
    return out


def assemble_motion(
    length: int,
    mouth: Factor | None = None,
    expression: Factor | None = None,
    eye: Factor | None = None,
    pose: Factor | None = None,
    *,
    fit: str = "loop",
    post: PostProcess | None = None,
    blink: bool = True,
    gaze: bool = True,
) -> torch.Tensor:
    """The generator's motion input, float32 ``[length, 542]`` =
    ``[mouth 500 | expression 30 | eye 6 | pose 6]`` per output frame.

    A missing factor is zero. Each present factor is fitted to ``length`` frames
    (:func:`fit_length`, ``fit``), then post-processed (``post``, default the official one: gain, then smoothing over
    the whole sequence). Then the official eye masks: ``blink=False`` keeps only eye dims 2, 3
    (eye x [0,0,1,1,0,0]); ``gaze=False`` keeps only dims 0, 1, 4, 5 (eye x [1,1,0,0,1,1]).
    """
    n = _check_length(length, "output length")
    post = PostProcess.official() if post is None else post
    if not isinstance(post, PostProcess):
        raise InputError(f"post must be a PostProcess (e.g. PostProcess.official()), got {type(post).__name__}")
    given = {"mouth": mouth, "expression": expression, "eye": eye, "pose": pose}
    parts = []
    for kind in MOTION_ORDER:
        f = given[kind]
        if f is None:
            parts.append(torch.zeros(n, FACTOR_DIMS[kind], dtype=torch.float32))
            continue
        _check_factor(f, f"the {kind} input", kind)
        x = post.apply_values(kind, fit_length(f, n, fit).values)
        if kind == "eye":
            if not blink:
                x = x * _eye_mask(EYE_GAZE_DIMS)
            if not gaze:
                x = x * _eye_mask(EYE_BLINK_DIMS)
        parts.append(x)
    return torch.cat(parts, 1)


def combine_motion(
    mouth: Factor | None = None,
    expression: Factor | None = None,
    eye: Factor | None = None,
    pose: Factor | None = None,
    *,
    length: int | None = None,
    fit: str = "loop",
    match_fps: bool = True,
    post: PostProcess | None = None,
    blink: bool = True,
    gaze: bool = True,
    name: str = "combine_motion",
) -> torch.Tensor:
    """Up to four factors, each at its own frame rate and length -> the generator's motion input,
    float32 ``[T, 542]`` (what PD-FGC Combine Motion computes).

    Frame rates: with ``match_fps``, every factor whose fps differs from the reference one (the
    mouth's, else the first given in :data:`MOTION_ORDER`) is resampled to it (:func:`retime`,
    linear); without it, frames are matched one to one. Length T: ``length`` if given (>= 1),
    else the mouth's frame count (after the fps matching), else the longest factor's. Then
    :func:`assemble_motion` (fit each to T with ``fit``, ``post`` once, eye masks). A missing
    factor is zero; with no factor at all ``length`` is required (a still, all-neutral motion).
    ``name`` prefixes error messages.
    """
    given = {"mouth": mouth, "expression": expression, "eye": eye, "pose": pose}
    given = {k: f for k, f in given.items() if f is not None}
    for kind, f in given.items():
        if not isinstance(f, Factor):
            raise InputError(f"{name}: the {kind} input must be a PD-FGC factor, got {type(f).__name__}")
        if f.kind != kind:
            raise InputError(f"{name}: the {kind} input got {_a(f.kind)} factor; connect {_a(kind)} factor there")
    if match_fps and given:
        ref = next(iter(given.values())).fps  # the mouth's if given: MOTION_ORDER starts with it
        given = {k: f if math.isclose(f.fps, ref, rel_tol=1e-6) else retime(f, ref) for k, f in given.items()}
    if length is not None:
        n = _check_length(length, f"{name}: length")
    elif "mouth" in given:
        n = len(given["mouth"])
    elif given:
        n = max(len(f) for f in given.values())
    else:
        raise InputError(
            f"{name}: connect at least one factor, or set length to the number of frames of a still "
            "(all-neutral) motion"
        )
    return assemble_motion(n, **given, fit=fit, post=post, blink=bool(blink), gaze=bool(gaze))


# --------------------------------------------------------------------------- persistence


def save_factor(f: Factor, path: str | os.PathLike) -> Path:
    """Write ``f`` to ``path`` as .safetensors (tensor "values" float32 [T, D]; metadata
    format, format_version, kind, fps, frames, dim, producer). Atomic: written to a temporary
    file next to it, then renamed over it. Missing parent folders are created."""
    from safetensors.torch import save

    _check_factor(f)
    path = Path(path)
    meta = {
        "format": FILE_FORMAT,
        "format_version": str(FILE_FORMAT_VERSION),
        "kind": f.kind,
        "fps": repr(f.fps),
        "frames": str(len(f)),
        "dim": str(f.dim),
        "producer": FILE_PRODUCER,
    }
    data = save({FILE_TENSOR_KEY: f.values.contiguous()}, metadata=meta)
    from .media import atomic_write

    try:
        with atomic_write(path) as tmp:
            tmp.write_bytes(data)
    except OSError as e:
        raise MediaError(f"cannot write factor file {path}: {e}; check the folder exists and is writable") from e
    return path


def load_factor(path: str | os.PathLike, kind: str | None = None) -> Factor:
    """Read a factor written by :func:`save_factor`. ``kind``, if given, is the kind the
    caller expects. Unreadable or corrupt files raise MediaError; readable files that are
    not a valid factor raise InputError. Nothing is unpickled."""
    from safetensors import safe_open

    path = Path(path)
    if kind is not None:
        _check_kind(kind, "expected factor kind")
    if not path.is_file():
        raise MediaError(f"factor file {path} does not exist or is not a file; check the path")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            keys = list(fh.keys())
            values = fh.get_tensor(FILE_TENSOR_KEY) if FILE_TENSOR_KEY in keys else None
    except Exception as e:  # safetensors raises its own error types for malformed files
        raise MediaError(
            f"factor file {path} is not a readable .safetensors file ({e}); "
            f"it may be truncated or not a factor file: save it again"
        ) from e
    if meta.get("format") != FILE_FORMAT:
        raise InputError(
            f"{path} is a .safetensors file but not a PD-FGC factor file (its metadata has "
            f"no format={FILE_FORMAT!r}); use a file written by save_factor / Save Factor"
        )
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        version = None
    if version is None or version < 1:
        raise InputError(
            f"factor file {path} has an invalid format_version {meta.get('format_version')!r}; save it again"
        )
    if version > FILE_FORMAT_VERSION:
        raise InputError(
            f"factor file {path} has format version {version}, newer than this version "
            f"of ComfyUI-PD-FGC reads ({FILE_FORMAT_VERSION}); update ComfyUI-PD-FGC"
        )
    file_kind = meta.get("kind")
    if file_kind not in FACTOR_DIMS:
        raise InputError(f"factor file {path} names an unknown factor kind {file_kind!r}; save it again")
    if kind is not None and file_kind != kind:
        raise InputError(f"factor file {path} holds {_a(file_kind)} factor, but {_a(kind)} factor is needed here")
    if values is None:
        raise InputError(f"factor file {path} has no {FILE_TENSOR_KEY!r} tensor (it has {keys}); save it again")
    try:
        fps = float(meta.get("fps", ""))
    except ValueError:
        raise InputError(f"factor file {path} has an invalid fps {meta.get('fps')!r}; save it again") from None
    try:
        return Factor(file_kind, values, fps)
    except InputError as e:
        raise InputError(f"factor file {path}: {e}") from None


__all__ = [
    "DEFAULT_FPS",
    "EDGE_MODES",
    "EYE_BLINK_DIMS",
    "EYE_GAZE_DIMS",
    "FACTOR_DIMS",
    "FIT_MODES",
    "MOTION_DIM",
    "MOTION_ORDER",
    "OFFICIAL_GAINS",
    "RAMP_CURVES",
    "RETIME_METHODS",
    "SMOOTHING_METHODS",
    "Factor",
    "PostProcess",
    "Smoothing",
    "add",
    "assemble_motion",
    "combine_motion",
    "concat",
    "fit_indices",
    "fit_length",
    "gaussian_kernel",
    "hold",
    "load_factor",
    "merge_eye",
    "mix",
    "motion_slices",
    "offset",
    "ramp",
    "retime",
    "save_factor",
    "scale",
    "skip_first",
    "smooth",
    "split_eye",
    "zero",
]
