"""Invisible watermark: a keyed, tiled spread-spectrum mark in the luma of every generated frame.

Method (established techniques, combined; see docs/PROVENANCE.md for the measurements):

- **Spread spectrum in a mid-frequency band** (Cox et al., 1997): the mark is a pseudo-random
  pattern whose spectrum covers a ring of spatial frequencies (wavelengths of about 5 to 32 px)
  that survives H.264, resizing and blur, added to the luma only (the same value to R, G and B, so
  colours do not shift), scaled by a local-activity mask (weaker on flat areas).
- **Periodic tiling** (Kutter, 1998): the pattern is a ``TILE`` x ``TILE`` tile repeated over the
  frame at native pixel scale. The detector folds the image onto one tile (sums all tiles), so a
  crop only shifts the tile cyclically; every cyclic shift is tested at once with an FFT.
- **Sync + payload by frequency division**: the ring's DFT bins are split at random (keyed) into a
  sync pattern (half of the bins) and one group per payload bit. Groups are disjoint, so the
  patterns are exactly orthogonal. The sync is found with phase-only (whitened) correlation; the
  bits are the signs of the correlations of the other groups at the sync's shift.
- **Informed embedding** (host-interference cancellation, as in Malvar & Florencio's improved
  spread spectrum): the embedder knows the frame, so it removes the frame's own periodic content
  from the sync bins and its projection on each bit pattern before adding the mark. The detector
  then sees the mark, not the face, which is what makes a 224x224 frame carry it reliably.

Payload (24 bits): the package version (major 4 bits, minor 6, patch 6: versions up to 15.63.63)
and a CRC-8 over ``b"PD-FGC"`` + the version bits. The mark's patterns are derived from the key
``"PD-FGC watermark v1"``: finding the sync at all says "PD-FGC"; the CRC binds the version to it.

Why not the ``invisible-watermark`` package (``imwatermark``): it refuses frames smaller than
256x256 (``r*c < 256*256``: our frames are 224x224), its DWT-DCT methods quantise fixed 4x4
blocks at fixed positions (a resize or crop moves the blocks) and return bits without any
"is a mark present" statistic, and its learned method needs onnxruntime and 256x256 inputs.
``benchmarks/bench_watermark.py --compare-imwatermark`` measures it on 256x256 frames when it is
installed.

Confidence: under "no mark" the phases of an image in the sync bins are unrelated to the key's,
so the normalised sync correlation at one shift is a mean of cosines of independent uniform
angles; ``cos`` of a uniform angle is sub-Gaussian with variance proxy 1/2 (``I0(t) <= e^{t^2/4}``),
hence ``P(z >= x) <= exp(-x^2 / 2)`` exactly, for ``z = rho * sqrt(2 N)``. Over all tested shifts
and scales (Bonferroni) that bounds the false-alarm probability reported by :func:`detect`; a
matching CRC divides it by 256 (under "no mark" the decoded bits are random).

Layouts: frames are RGB ``[H,W,3]`` or ``[B,H,W,3]``, uint8 0..255 (numpy) or float 0..1 (numpy
or torch, any device: moved to the CPU and back). Marking returns the same type, dtype, device
and shape. Cost: a few ms per 224x224 frame on a CPU (benchmarks/bench_watermark.py).
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

KEY = b"PD-FGC watermark v1"
NAME = b"PD-FGC"
TILE = 64
"""Tile size in pixels at the scale the mark was written (native frame pixels)."""
BAND = (2.0, 12.0)
"""The ring of tile DFT bins used (radius in bins of a TILE-point DFT: wavelengths TILE/12..TILE/2 px)."""
SYNC_SHARE = 0.5
PAYLOAD_BITS = 24
STRENGTH = 3.4
"""RMS of the added pattern in luma levels (0..255) before the activity mask (mean about 1)."""
HIGHPASS_BOX = 15
MASK_BOX = 9
MASK_RANGE = (0.35, 2.0)
CANCEL = 0.3
"""Share of the frame's own periodic content removed from the mark's bins (informed embedding)."""
OPT_OUT_WARNING = (
    "invisible watermark OFF (explicit opt-out): these frames cannot be recognised as PD-FGC output. "
    "Label the result as AI-generated yourself wherever you publish it."
)
FOUND_P = 1e-4
"""A mark is reported as found when its false-alarm probability bound is at most this."""


def _cv2():
    import cv2

    return cv2


# --- payload: 12 bits of version in an extended Golay (24,12) code ------------------------------------

VERSION_BITS = 12
"""major (3 bits), minor (5), patch (4): versions up to 7.31.15 are carried exactly, larger parts saturate."""


@functools.lru_cache(maxsize=1)
def _golay() -> np.ndarray:
    """All 4096 codewords of the extended binary Golay code [4096, 24] (0/1; row m encodes message m):
    the cyclic (23,12) code of generator x^11+x^10+x^6+x^5+x^4+x^2+1 plus an overall parity bit.
    Minimum distance 8: any 3 bit errors are corrected, 4 are detected."""
    gen = 0b110001110101
    words = np.zeros((1 << VERSION_BITS, PAYLOAD_BITS), np.uint8)
    for m in range(1 << VERSION_BITS):
        c = 0
        for i in range(VERSION_BITS):
            if m >> i & 1:
                c ^= gen << i
        bits = [(c >> (22 - j)) & 1 for j in range(23)]
        words[m, :23] = bits
        words[m, 23] = sum(bits) & 1
    return words


def _version_code(version: str) -> int:
    parts = [int("".join(c for c in p if c.isdigit()) or 0) for p in str(version).split(".")[:3]]
    major, minor, patch = (parts + [0, 0, 0])[:3]
    return (min(major, 7) << 9) | (min(minor, 31) << 4) | min(patch, 15)


def payload_bits(version: str | None = None) -> np.ndarray:
    """The 24 payload bits (uint8 0/1): ``version`` (default: this package's) as a Golay codeword."""
    if version is None:
        from .. import __version__ as version
    return _golay()[_version_code(version)].copy()


def decode_payload(soft) -> tuple[str | None, bool]:
    """24 soft bit values (positive = 1) -> ("major.minor.patch", reliable). Maximum-likelihood soft
    decoding over the 4096 codewords; reliable when the hard bits are within 3 errors of the codeword
    found (inside the code's unique-decoding radius). The version is None when not reliable."""
    v = np.asarray(soft, np.float64).ravel()[:PAYLOAD_BITS]
    words = _golay()
    m = int(np.argmax((2.0 * words - 1.0) @ v))
    errors = int(np.sum(words[m] != (v > 0)))
    if errors > 3:
        return None, False
    return f"{m >> 9}.{(m >> 4) & 31}.{m & 15}", True


# --- the key: bins, groups, patterns ---------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    group: np.ndarray  # [TILE, TILE//2+1] int: -1 outside the ring, 0 sync, 1..PAYLOAD_BITS bits
    phase: np.ndarray  # [TILE, TILE//2+1] complex unit phasors (the patterns' spectra)
    counts: np.ndarray  # bins per group


@functools.lru_cache(maxsize=1)
def _key() -> _Key:
    seed = int.from_bytes(hashlib.sha256(KEY).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(TILE) * TILE
    fx = np.fft.rfftfreq(TILE) * TILE
    r = np.hypot(fy[:, None], fx[None, :])
    ring = (r >= BAND[0]) & (r <= BAND[1])
    ring[:, 0] = False  # columns 0 and TILE/2 hold conjugate pairs of the full spectrum: left out so
    ring[:, -1] = False  # every used bin stands for exactly two full-plane bins
    idx = np.flatnonzero(ring)
    rng.shuffle(idx)
    n_sync = int(round(len(idx) * SYNC_SHARE))
    # the payload takes the lower half of the ring (it survives blur and H.264 best), the sync the upper
    idx = idx[np.argsort(r.flat[idx], kind="stable")]
    bit_idx, sync_idx = idx[: len(idx) - n_sync].copy(), idx[len(idx) - n_sync :]
    rng.shuffle(bit_idx)
    group = np.full(ring.shape, -1, np.int64)
    group.flat[sync_idx] = 0
    for k, part in enumerate(np.array_split(bit_idx, PAYLOAD_BITS)):
        group.flat[part] = k + 1
    phase = np.exp(2j * np.pi * rng.random(ring.shape)) * (group >= 0)
    counts = np.bincount(group[group >= 0], minlength=PAYLOAD_BITS + 1)
    return _Key(group, phase, counts)


# --- shared image steps ----------------------------------------------------------------------------


def _luma(rgb: np.ndarray) -> np.ndarray:
    """float32 [H,W,3] RGB -> luma [H,W] (same units; BT.601 weights, as OpenCV's RGB2GRAY)."""
    return _cv2().cvtColor(rgb, _cv2().COLOR_RGB2GRAY)


def _smooth(y: np.ndarray, k: int) -> np.ndarray:
    """Two passes of a k x k box filter (about a Gaussian of sigma k/sqrt(6)); cost independent of k."""
    cv2 = _cv2()
    return cv2.blur(cv2.blur(y, (k, k), borderType=cv2.BORDER_REFLECT), (k, k), borderType=cv2.BORDER_REFLECT)


def _highpass(y: np.ndarray) -> np.ndarray:
    """Luma minus its local mean (removes what lies below the band, so the fold does not leak it)."""
    return y - _smooth(y, HIGHPASS_BOX)


def _fold(r: np.ndarray) -> np.ndarray:
    """[H,W] -> [TILE,TILE]: the sum of every pixel with the same (y mod TILE, x mod TILE)."""
    h, w = r.shape
    hh, ww = -(-h // TILE) * TILE, -(-w // TILE) * TILE
    if (hh, ww) != (h, w):
        p = np.zeros((hh, ww), np.float32)
        p[:h, :w] = r
        r = p
    return r.reshape(hh // TILE, TILE, ww // TILE, TILE).sum(axis=(0, 2))


# --- embedding -----------------------------------------------------------------------------------


def _as_float255(frames) -> tuple[np.ndarray, callable]:
    """Any supported frame batch -> (float32 [B,H,W,3] in 0..255, a function giving the original
    type back from such an array)."""
    if hasattr(frames, "detach"):  # torch tensor, float 0..1
        import torch

        t = frames
        if not torch.is_floating_point(t):
            raise InputError(f"watermark: torch frames must be float 0..1, got {t.dtype}.")
        a = t.detach().to("cpu", torch.float32).numpy()
        single = a.ndim == 3

        def back(x):
            x = np.clip(x / 255.0, 0.0, 1.0)
            return torch.from_numpy(x[0] if single else x).to(device=t.device, dtype=t.dtype)

        return (a[None] if single else a) * 255.0, back
    a = np.asarray(frames)
    single = a.ndim == 3
    if a.dtype == np.uint8:

        def back(x):
            x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
            return x[0] if single else x

        b = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.floating):
        dtype = a.dtype

        def back(x):
            x = np.clip(x / 255.0, 0.0, 1.0).astype(dtype)
            return x[0] if single else x

        b = a.astype(np.float32) * 255.0
    else:
        raise InputError(f"watermark: frames must be uint8 0..255 or float 0..1, got dtype {a.dtype}.")
    return (b[None] if single else b), back


def _check_shape(a: np.ndarray) -> None:
    if a.ndim != 4 or a.shape[-1] != 3 or min(a.shape[1:3]) < 1:
        raise InputError(f"watermark: frames must be RGB [H,W,3] or [B,H,W,3], got shape {tuple(a.shape[1:])}.")


def _mark_delta(y: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """The luma change [H,W] (float32, 0..255 units) that writes ``bits`` into luma ``y``."""
    key = _key()
    h, w = y.shape
    r = _highpass(y)
    F = np.fft.rfft2(_fold(r))
    n_t = h * w / TILE**2  # tiles covering the frame (fractional)
    n_band = int(key.counts.sum())
    amp = STRENGTH * n_t * TILE**2 / math.sqrt(2 * n_band)  # per-bin fold spectrum magnitude of the mark
    g = key.group
    Q = np.zeros_like(F)
    sync = g == 0
    Q[sync] = amp * key.phase[sync] - CANCEL * F[sync]  # replace the frame's own periodic content by the sync
    proj = np.bincount(g[g > 0], weights=np.real(F[g > 0] * np.conj(key.phase[g > 0])), minlength=PAYLOAD_BITS + 1)
    signs = 2.0 * bits.astype(np.float64) - 1.0
    coef = signs * amp - CANCEL * proj[1:] / np.maximum(key.counts[1:], 1)  # projection of bit k becomes +-amp per bin
    Q[g > 0] = coef[g[g > 0] - 1] * key.phase[g > 0]
    q = np.fft.irfft2(Q / n_t, s=(TILE, TILE)).astype(np.float32)
    d = np.tile(q, (-(-h // TILE), -(-w // TILE)))[:h, :w]
    act = _smooth(np.abs(y - _smooth(y, 3)), MASK_BOX)  # local fine texture: the mark hides in it
    m = act * np.float32(1.0 / (float(act.mean()) + 1e-3))
    np.clip(m, *MASK_RANGE, out=m)
    return d * m


def embed(frames, version: str | None = None):
    """Write the watermark (payload: ``version``, default this package's) into every frame.

    frames: RGB [H,W,3] or [B,H,W,3]; uint8 0..255 (numpy), or float 0..1 (numpy, or a torch tensor
    on any device). Returns the marked frames in the same type, dtype, device and shape (uint8 is
    rounded, floats stay unrounded; both are clipped to their range). Frames of any size are marked;
    detection needs about 100x100 pixels or more."""
    a, back = _as_float255(frames)
    _check_shape(a)
    bits = payload_bits(version)
    out = np.empty_like(a)
    for i in range(a.shape[0]):
        d = _mark_delta(_luma(a[i]), bits)
        np.add(a[i], d[..., None], out=out[i])
    return back(out)


# --- detection -----------------------------------------------------------------------------------


@dataclass
class Detection:
    """What :func:`detect` found. ``z``: sync score (about N(0,1)-bounded at one shift without a mark;
    the strongest marks give ~14); ``p_false_alarm``: bound on the chance that an unmarked input scores
    this high over everything tested; ``scale``: size of the input relative to the marked frames;
    ``bit_margin``: mean |correlation| of the payload bits (1 = clean, ~0.1 = noise)."""

    found: bool
    z: float
    p_false_alarm: float
    scale: float
    shift: tuple[int, int]
    version: str | None
    payload_ok: bool
    frames: int
    bit_margin: float
    tests: int = field(default=0, repr=False)

    @property
    def confidence(self) -> float:
        """1 - p_false_alarm."""
        return 1.0 - self.p_false_alarm

    def summary(self) -> str:
        p = f"{self.p_false_alarm:.1e}" if self.p_false_alarm >= 1e-300 else "<1e-300"
        where = f"{self.frames} frame(s)" + (f", scale {self.scale:.3g}x" if abs(self.scale - 1) > 1e-3 else "")
        if self.found:
            pay = (
                f"payload PD-FGC {self.version}"
                if self.payload_ok
                else "payload unreadable (bits damaged: version unknown)"
            )
            return (
                f"PD-FGC watermark FOUND: confidence {self.confidence:.6f} (false-alarm probability {p}, "
                f"z {self.z:.1f}), {pay}; {where}"
            )
        return f"PD-FGC watermark not found (best z {self.z:.1f}, false-alarm probability {p}); {where}"


def _torch_index(frames, idx: np.ndarray):
    """``idx`` as an index for ``frames`` (a torch tensor wants a tensor)."""
    if hasattr(frames, "detach"):
        import torch

        return torch.from_numpy(idx)
    return idx


def _lumas(frames) -> np.ndarray:
    a, _ = _as_float255(frames)
    _check_shape(a)
    if not np.isfinite(a).all():
        raise InputError("watermark check: the frames contain NaN or infinite values.")
    return np.stack([_luma(f) for f in a])


def _resized(y: np.ndarray, scale: float) -> np.ndarray:
    if abs(scale - 1.0) < 1e-6:
        return y
    cv2 = _cv2()
    h, w = y.shape
    size = (max(1, int(round(w / scale))), max(1, int(round(h / scale))))
    return cv2.resize(y, size, interpolation=cv2.INTER_AREA if scale > 1 else cv2.INTER_LINEAR)


def _folds(lumas: np.ndarray, scale: float, window: int | None = None) -> np.ndarray:
    """Sum over frames of the folded high-passed luma at ``scale`` ([TILE,TILE] float64). ``window``:
    use only a centred window of that many pixels (at mark scale) per side."""
    acc = np.zeros((TILE, TILE))
    for y in lumas:
        if window is not None:
            h, w = y.shape
            side = int(round(window * scale))
            if side < min(h, w):
                t, l0 = (h - side) // 2, (w - side) // 2
                y = y[t : t + side, l0 : l0 + side]
        acc += _fold(_highpass(_resized(y, scale)))
    return acc


def _score(F_fold: np.ndarray) -> tuple[float, tuple[int, int], np.ndarray]:
    """Folded luma -> (sync z at the best cyclic shift, that shift, per-bit normalised correlations)."""
    key = _key()
    F = np.fft.rfft2(F_fold)
    g = key.group
    sync = g == 0
    W = np.zeros_like(F)
    W[sync] = F[sync] / (np.abs(F[sync]) + 1e-9) * np.conj(key.phase[sync])
    n = int(key.counts[0])
    rho = np.fft.irfft2(W, s=(TILE, TILE)) * (TILE**2 / (2 * n))  # 1 = every sync bin in phase
    s = np.unravel_index(int(np.argmax(rho)), rho.shape)
    z = float(rho[s]) * math.sqrt(2 * n)
    # bits at that shift: a pattern rolled by s has spectrum phase * exp(-2pi i (fy*sy + fx*sx)/TILE)
    fy = np.fft.fftfreq(TILE)[:, None]
    fx = np.fft.rfftfreq(TILE)[None, :]
    shift = np.exp(-2j * np.pi * (fy * s[0] + fx * s[1]))
    sel = g > 0
    c = np.real(F[sel] * np.conj(key.phase[sel] * shift[sel]))
    num = np.bincount(g[sel], weights=c, minlength=PAYLOAD_BITS + 1)[1:]
    den = np.bincount(g[sel], weights=np.abs(F[sel]), minlength=PAYLOAD_BITS + 1)[1:]
    return z, (int(s[0]), int(s[1])), num / np.maximum(den, 1e-9)


def _p_bound(z: float, tests: int) -> float:
    return min(1.0, tests * math.exp(-0.5 * max(z, 0.0) ** 2))


SEARCH_SCALES = tuple(float(s) for s in np.exp(np.arange(np.log(0.3), np.log(6.0), np.log(1.012))))
"""Scales tried when the mark is not found at 1x (input size / marked size), 1.2 % apart."""
QUICK_SCALES = (1.0, 2.0, 0.5, 1.5, 1 / 1.5, 4.0, 3.0)


def detect(frames, search: bool = True, max_frames: int = 64) -> Detection:
    """Look for the PD-FGC watermark in one image or in the frames of one video.

    frames: RGB [H,W,3] or [B,H,W,3] (uint8 0..255, or float 0..1 numpy / torch). The frames of a
    batch are treated as one video: their evidence is summed (at most ``max_frames`` of them, spread
    evenly). Tried first at the frames' own scale and a few common resizes; with ``search`` a scale
    search from 0.3x to 6x follows when those fail (slower: about a second per image).
    """
    if getattr(frames, "ndim", 0) == 4 and frames.shape[0] > max_frames:  # pick before any copy is made
        idx = np.linspace(0, frames.shape[0] - 1, max_frames).round().astype(np.int64)
        frames = frames[_torch_index(frames, idx)]
    y = _lumas(frames)
    tests = 0
    best = None

    def consider(scale: float, fold: np.ndarray) -> None:
        nonlocal best, tests
        tests += TILE * TILE
        z, s, bits = _score(fold)
        if best is None or z > best[0]:
            best = (z, s, bits, scale)

    def verdict() -> Detection:
        z, s, bits, scale = best
        version, ok = decode_payload(bits)
        p = _p_bound(z, tests)
        return Detection(
            found=p <= FOUND_P,
            z=z,
            p_false_alarm=p,
            scale=scale,
            shift=s,
            version=version,
            payload_ok=ok,
            frames=int(y.shape[0]),
            bit_margin=float(np.mean(np.abs(bits))),
            tests=tests,
        )

    h, w = y.shape[1:]
    for sc in QUICK_SCALES:
        if min(h, w) / sc < TILE:
            continue
        consider(sc, _folds(y, sc))
        if verdict().found:
            return verdict()
    if best is None:  # too small at every scale tried: nothing to fold
        return _nothing(y.shape[0])
    if not search:
        return verdict()
    # coarse search on a window and a few frames, then the best scales on everything
    sub = y[np.linspace(0, y.shape[0] - 1, min(8, y.shape[0])).round().astype(int)]
    coarse = []
    for sc in SEARCH_SCALES:
        if min(h, w) / sc < TILE:
            continue
        tests += TILE * TILE
        z, _, _ = _score(_folds(sub, sc, window=256))
        coarse.append((z, sc))
    for _, sc in sorted(coarse, reverse=True)[:3]:
        for fine in (sc / 1.004, sc, sc * 1.004):
            consider(fine, _folds(y, fine))
    return verdict()


def _nothing(frames: int) -> Detection:
    return Detection(False, 0.0, 1.0, 1.0, (0, 0), None, False, frames, 0.0, 0)
