"""Audio-visual sync as an offset sweep over a pair of embeddings: one per video frame from the
frames, one per frame from the audio.

PD-FGC's own pair (paper Eq. 2-3) is the audio encoder's 500-d mouth embedding of each mel window
against the motion network's lip head (``to_mouth`` -> ``mouth_embed``) on each frame, trained with
cosine-similarity InfoNCE; so its distance is the cosine distance ``1 - cos``. The sweep, the best
offset and the confidence (median minus minimum of the mean distance over offsets) follow the
SyncNet evaluation (LSE-D / LSE-C), but the numbers are PD-FGC's embedding distances and are not
comparable with SyncNet's; :mod:`.byow` computes the SyncNet ones from the published weights.

Offsets (everywhere in this package): offset ``d`` pairs video frame ``t`` with audio frame
``t + d``. A best offset ``d > 0`` means the sound of a mouth shape comes ``d`` frames after the
picture (audio late); syncnet_python prints the opposite sign.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..audio import AUDIO_LEAD_SECONDS
from ..errors import InputError
from .consistency import network_chunks

MAX_OFFSET = 15
"""Default sweep: +-15 frames (0.6 s at 25 fps), as the SyncNet evaluation."""
FRAMEWISE_WINDOW = 12
"""Half-width in frames of the window the per-frame offset curve averages distances over."""
METRICS = ("cosine", "euclidean")
PADS = ("none", "zeros")

Embedder = Callable[[torch.Tensor], torch.Tensor]
"""A batch of inputs -> embeddings ``[B,D]``: frames ``[B,3,224,224]`` in -1..1 for the visual
side, mel windows ``[B,1,80,20]`` for the audio side."""


def pipeline_lead_frames(fps: float = 25.0) -> int:
    """Frames by which PD-FGC's audio window ``j`` runs ahead of real time: the pipeline's frame ``j``
    shows the speech at frame ``j + lead`` (0.08 s, 2 frames at 25 fps). Used to pair frames with a
    synchronous audio track (e.g. the one in a rendered mp4)."""
    return int(round(AUDIO_LEAD_SECONDS * float(fps)))


@dataclass
class SyncResult:
    """An offset sweep.

    ``offsets`` int ``[K]`` (-V..V); ``distances`` ``[K]`` the mean distance at each offset;
    ``per_frame`` ``[T,K]`` the distance of every frame at every offset (NaN where the audio has no
    frame, unless zero-padded); ``best_offset`` the offset of the smallest mean distance;
    ``min_distance`` that distance (LSE-D's form); ``confidence`` median minus minimum of
    ``distances`` (LSE-C's form); ``metric`` ``cosine`` or ``euclidean``."""

    offsets: np.ndarray
    distances: np.ndarray
    per_frame: np.ndarray
    best_offset: int
    min_distance: float
    median_distance: float
    confidence: float
    metric: str

    @property
    def frames(self) -> int:
        return int(self.per_frame.shape[0])

    def framewise(self, window: int = FRAMEWISE_WINDOW) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame best offset ``[T]`` (float, NaN where undefined) and confidence ``[T]``, from the
        distances averaged over frames ``t - window .. t + window``."""
        pf = self.per_frame
        t = pf.shape[0]
        ok = np.isfinite(pf)
        vals = np.where(ok, pf, 0.0)
        csum = np.concatenate([np.zeros((1, pf.shape[1])), np.cumsum(vals, 0)])
        ccnt = np.concatenate([np.zeros((1, pf.shape[1])), np.cumsum(ok, 0)])
        off = np.full(t, np.nan)
        conf = np.full(t, np.nan)
        for i in range(t):
            lo, hi = max(0, i - window), min(t, i + window + 1)
            cnt = ccnt[hi] - ccnt[lo]
            if not (cnt > 0).any():
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(cnt > 0, (csum[hi] - csum[lo]) / np.maximum(cnt, 1), np.nan)
            k = int(np.nanargmin(mean))
            off[i] = self.offsets[k]
            conf[i] = float(np.nanmedian(mean) - mean[k])
        return off, conf

    def summary(self) -> dict:
        return {
            "best_offset": int(self.best_offset),
            "min_distance": float(self.min_distance),
            "median_distance": float(self.median_distance),
            "confidence": float(self.confidence),
            "metric": self.metric,
            "frames": self.frames,
            "max_offset": int(self.offsets.max()),
        }


def _as_2d(x, what: str) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if torch.is_tensor(x) else np.asarray(x, np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise InputError(f"{what}: expected embeddings [frames, dims], got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{what}: embeddings contain NaN or infinite values")
    return a


def offset_sweep(
    visual,
    audio,
    max_offset: int = MAX_OFFSET,
    metric: str = "cosine",
    lead: int = 0,
    pad: str = "none",
) -> SyncResult:
    """Distance of every video frame's embedding to the audio embedding ``offset`` frames away.

    ``visual`` ``[T,D]``, ``audio`` ``[Ta,D]`` (numpy or torch). Video frame ``t`` at offset ``d`` is
    paired with audio row ``t + d - lead`` (``lead``: frames by which audio row ``j`` runs ahead,
    see :func:`pipeline_lead_frames`). ``metric``: ``cosine`` (1 - cos) or ``euclidean`` (as
    ``torch.nn.functional.pairwise_distance``, eps 1e-6). ``pad``: ``none`` leaves frames without an
    audio partner out of the mean; ``zeros`` pairs them with a zero vector (SyncNet's evaluation)."""
    if metric not in METRICS:
        raise InputError(f"sync metric {metric!r} is not one of {METRICS}")
    if pad not in PADS:
        raise InputError(f"sync padding {pad!r} is not one of {PADS}")
    v, a = _as_2d(visual, "visual embeddings"), _as_2d(audio, "audio embeddings")
    if v.shape[1] != a.shape[1]:
        raise InputError(f"sync: visual embeddings have {v.shape[1]} dims but audio ones {a.shape[1]}")
    if int(max_offset) != max_offset or max_offset < 0:
        raise InputError(f"max_offset must be a whole number >= 0, got {max_offset!r}")
    max_offset = int(max_offset)
    offsets = np.arange(-max_offset, max_offset + 1)
    t = v.shape[0]
    if metric == "cosine":
        vn = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    per = np.full((t, offsets.size), np.nan)
    rows = np.arange(t)
    for k, d in enumerate(offsets):
        idx = rows + d - int(lead)
        inside = (idx >= 0) & (idx < a.shape[0])
        partner = np.zeros_like(v)
        partner[inside] = a[idx[inside]]
        if metric == "cosine":
            pn = np.zeros_like(v)
            pn[inside] = an[idx[inside]]
            dist = 1.0 - (vn * pn).sum(1)
        else:
            dist = np.linalg.norm(v - partner + 1e-6, axis=1)
        per[:, k] = np.where(inside | (pad == "zeros"), dist, np.nan)
    with np.errstate(invalid="ignore"):
        counts = np.isfinite(per).sum(0)
        mean = np.where(counts > 0, np.nansum(per, 0) / np.maximum(counts, 1), np.nan)
    if not np.isfinite(mean).any():
        raise InputError(
            f"sync: no video frame has an audio partner within +-{max_offset} frames "
            f"({t} video frames, {a.shape[0]} audio frames); give overlapping audio and video"
        )
    best = int(np.nanargmin(mean))
    med = float(np.nanmedian(mean))
    return SyncResult(offsets, mean, per, int(offsets[best]), float(mean[best]), med, med - float(mean[best]), metric)


# ----------------------------------------------------------------------------- PD-FGC's own pair


def has_lip_head(models) -> bool:
    """Whether the motion network holds the lip head (``to_mouth`` and ``mouth_embed``)."""
    motion = getattr(models, "motion", models)
    return isinstance(getattr(motion, "to_mouth", None), torch.nn.Module) and isinstance(
        getattr(motion, "mouth_embed", None), torch.nn.Module
    )


NO_LIP_HEAD = (
    "the PD-FGC sync metric needs the motion network's lip head (to_mouth / mouth_embed, the visual side of "
    "PD-FGC's lip contrastive pair), and this motion network does not hold it. Load a build/checkpoint that "
    "keeps the lip head, or use the SyncNet tier (--syncnet syncnet_v2.model) for lip sync"
)


def motion_lip_embedder(models) -> Embedder:
    """The visual side of PD-FGC's pair: frames ``[B,3,224,224]`` -1..1 -> lip embedding ``[B,500]``
    through the motion trunk and its lip head. Raises :class:`InputError` when the network has no
    lip head (see :func:`has_lip_head`)."""
    motion = getattr(models, "motion", models)
    if not has_lip_head(motion):
        raise InputError(NO_LIP_HEAD)

    @torch.inference_mode()
    def embed(x: torch.Tensor) -> torch.Tensor:
        dev = next(motion.parameters()).device
        feat = motion.features(x.to(dev, torch.float32))
        return motion.mouth_embed(motion.to_mouth(feat)).float().cpu()

    return embed


def audio_lip_embedder(models) -> Embedder:
    """The audio side of PD-FGC's pair: mel windows ``[B,1,80,20]`` -> mouth embedding ``[B,500]``."""
    audio = getattr(models, "audio", models)

    @torch.inference_mode()
    def embed(w: torch.Tensor) -> torch.Tensor:
        dev = next(audio.parameters()).device
        return audio(w.to(dev, torch.float32)).float().cpu()

    return embed


def embed_batches(embedder: Embedder, batches, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Runs ``embedder`` over an iterable of input batches -> ``[N,D]`` float64."""
    out = []
    for b in batches:
        e = embedder(b)
        if not torch.is_tensor(e) or e.dim() != 2 or e.shape[0] != b.shape[0]:
            shape = tuple(e.shape) if torch.is_tensor(e) else type(e).__name__
            raise InputError(f"sync embedder returned {shape} for a batch of {b.shape[0]}; expected [batch, dims]")
        out.append(e.detach().cpu().double().numpy())
        if progress:
            progress(int(b.shape[0]))
    if not out:
        raise InputError("sync: no frames or audio windows to embed")
    return np.concatenate(out)


def pdfgc_sync(
    frames_u8,
    windows: torch.Tensor,
    lip: Embedder,
    audio: Embedder,
    framing: str = "generated",
    max_offset: int = MAX_OFFSET,
    lead: int = 0,
    batch_size: int = 16,
) -> SyncResult:
    """The offset sweep of PD-FGC's lip pair (or any pair of embedders with that interface).

    ``frames_u8``: uint8 RGB ``[T,H,W,3]``; ``framing``: ``generated`` (network framing) or
    ``aligned`` (official crop first). ``windows``: mel windows ``[Ta,1,80,20]`` from
    :func:`pdfgc_core.audio.audio_to_windows` at the video's frame rate. ``lead``: 0 when
    ``windows`` come from the speech the frames were generated from (frame ``j`` <-> window ``j``),
    :func:`pipeline_lead_frames` when they come from a track synchronous with the picture."""
    if not torch.is_tensor(windows) or windows.dim() != 4 or tuple(windows.shape[1:]) != (1, 80, 20):
        shape = tuple(windows.shape) if torch.is_tensor(windows) else type(windows).__name__
        raise InputError(f"sync: audio windows must be [T,1,80,20], got {shape}")
    vis = embed_batches(lip, network_chunks(frames_u8, framing, batch_size))
    aud = embed_batches(audio, (windows[s : s + batch_size] for s in range(0, windows.shape[0], batch_size)))
    return offset_sweep(vis, aud, max_offset=max_offset, metric="cosine", lead=lead)
