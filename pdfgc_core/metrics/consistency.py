"""PD-FGC self-consistency: re-encode generated frames with the motion encoder and compare the
pose / eye / expression codes with the ones the frames were generated from.

Both sides are raw motion-encoder codes (pose 6, eye 6, expression 30 per frame). "Requested"
is what the generator received: the slices of the motion ``[T,542]`` (after the pipeline's gains
and smoothing), so a perfect generator + encoder pair gives zero error.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .. import images
from ..engine import DRIVER_HEADS, Engine
from ..errors import InputError
from ..factors import EYE_BLINK_DIMS, EYE_GAZE_DIMS, MOTION_DIM, motion_slices

CHUNK = 32
FRAMINGS = {"generated": "none", "aligned": "official"}
"""How a clip's frames become network input: ``generated`` frames are already in network framing
(plain resize to 224); ``aligned`` frames (official samples, our alignment output, dataset clips)
get the official crop, as driving frames do."""


def crop_for(framing: str) -> str:
    if framing not in FRAMINGS:
        raise InputError(f"framing {framing!r} is not one of {tuple(FRAMINGS)}")
    return FRAMINGS[framing]


def network_chunks(frames_u8, framing: str = "generated", chunk: int = CHUNK):
    """uint8 RGB ``[N,H,W,3]`` -> network tensors ``[b,3,224,224]`` in -1..1, ``chunk`` at a time."""
    crop = crop_for(framing)
    for s in range(0, len(frames_u8), chunk):
        yield images.prepare_batch(np.asarray(frames_u8[s : s + chunk]), crop=crop)


def reencode(
    engine: Engine,
    frames_u8,
    framing: str = "generated",
    heads=DRIVER_HEADS,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Motion-encoder codes of frames: ``{head: float32 [N,D]}`` for pose / eye / expression."""
    res = engine.encode_drivers(network_chunks(frames_u8, framing), heads=heads, progress=progress)
    return {k: f.values.numpy() for k, f in res.items()}


def requested_from_motion(motion) -> dict[str, np.ndarray]:
    """The pose / eye / expression slices of a generator motion ``[T,542]``."""
    m = motion.detach().cpu().float().numpy() if torch.is_tensor(motion) else np.asarray(motion, np.float32)
    if m.ndim != 2 or m.shape[1] != MOTION_DIM:
        raise InputError(f"motion: expected [T,{MOTION_DIM}], got {m.shape}")
    sl = motion_slices()
    return {k: m[:, sl[k]] for k in DRIVER_HEADS}


def split_eye(codes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Codes with ``eye`` replaced by ``blink`` (dims 0, 1, 4, 5) and ``gaze`` (dims 2, 3)."""
    out = {k: v for k, v in codes.items() if k != "eye"}
    if "eye" in codes:
        out["blink"] = codes["eye"][:, list(EYE_BLINK_DIMS)]
        out["gaze"] = codes["eye"][:, list(EYE_GAZE_DIMS)]
    return out


def compare_codes(requested: dict[str, np.ndarray], measured: dict[str, np.ndarray]) -> dict:
    """Per factor (pose, blink, gaze, expression): ``mse`` (mean squared difference per value),
    ``cosine`` (mean per-frame cosine similarity; None when a side is all zero), ``correlation``
    (mean over dims of the Pearson correlation in time, over dims that vary on both sides; None if
    none do) and ``per_frame`` Euclidean distance ``[N]``. First min(N) frames of each."""
    req, mea = split_eye(requested), split_eye(measured)
    out = {}
    for k in ("pose", "blink", "gaze", "expression"):
        if k not in req or k not in mea:
            continue
        a, b = np.asarray(req[k], np.float64), np.asarray(mea[k], np.float64)
        n = min(a.shape[0], b.shape[0])
        a, b = a[:n], b[:n]
        dist = np.linalg.norm(a - b, axis=1)
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        ok = (na > 0) & (nb > 0)
        cos = float(np.mean((a[ok] * b[ok]).sum(1) / (na[ok] * nb[ok]))) if ok.any() else None
        corrs = [
            float(np.corrcoef(a[:, d], b[:, d])[0, 1])
            for d in range(a.shape[1])
            if n >= 3 and a[:, d].std() > 1e-12 and b[:, d].std() > 1e-12
        ]
        out[k] = {
            "mse": float(np.mean((a - b) ** 2)),
            "cosine": cos,
            "correlation": float(np.mean(corrs)) if corrs else None,
            "per_frame": dist,
            "frames": int(n),
        }
    return out
