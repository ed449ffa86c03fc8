"""Motion-embedding export: PD-FGC's motion encoder as a frozen feature extractor for other systems.

Per frame, the raw heads of the motion network (:data:`HEADS`): ``pose`` 6, ``eye`` 6,
``expression`` 30 (the official ``emo_embed``), ``mouth_feature`` 512 (the official ``to_mouth``
output, which the official inference computes and discards; it is *not* the audio's 500-d mouth
factor) and ``lip`` 500 (the motion network's ``mouth_embed`` of that feature: the picture's lip
code, in the audio mouth factor's space). Layouts (:data:`LAYOUTS`) concatenate heads in the order
other systems read them:

- ``fantasyportrait_554``: ``[pose 6 | eye 6 | emotion 30 | mouth 512]``;
- ``portrait4d_548`` and ``hellomeme_548``: ``[eye 6 | emotion 30 | mouth 512]``.

The **negative** embedding is the encoder's output for an all -1 network input (a black picture),
which HelloMeme uses as its unconditional input.

Faces are aligned with an explicit convention (:data:`ALIGNMENTS`), recorded in every file:

- ``official``: PD-FGC's own framing, used by Portrait4D: the 3-point template of
  :mod:`pdfgc_core.faces.align` (eyes and inner mouth at (87,59), (137,59), (112,120) of a 224 crop)
  then the official 192 crop (rows 0-191, columns 16-207) resized to 224. The ``pre-aligned``
  landmark backend takes pictures that already are PD-FGC crops (only the official crop is applied).
- ``five_point``: FantasyPortrait / HelloMeme: a least-squares similarity of five landmarks (eye
  centres, nose tip, mouth corners) onto :data:`FIVE_POINT_TEMPLATE` x 224, bicubic, no 192 crop.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import FaceNotFoundError, InputError, MediaError
from ..factors import DEFAULT_FPS

ALIGNMENTS = ("official", "five_point")
FIVE_POINT_TEMPLATE = (
    np.array([[0.3843, 0.27], [0.62, 0.2668], [0.503, 0.4185], [0.406, 0.5273], [0.5977, 0.525]]) * 224.0
)
"""(x, y) pixels in the 224 network input of: image-left eye centre, image-right eye centre, nose
tip, image-left and image-right mouth corners (FantasyPortrait / HelloMeme)."""
NETWORK_SIZE = 224
HEADS = {"pose": 6, "eye": 6, "expression": 30, "mouth_feature": 512, "lip": 500}
"""Exported raw heads and their sizes."""
LAYOUTS = {
    "fantasyportrait_554": ("pose", "eye", "expression", "mouth_feature"),
    "portrait4d_548": ("eye", "expression", "mouth_feature"),
    "hellomeme_548": ("eye", "expression", "mouth_feature"),
}
"""Layout name -> the heads it concatenates, in order."""
FILE_FORMAT = "pdfgc-motion-embedding"
FILE_VERSION = 1
NEGATIVE_PREFIX = "negative."
ALIGN_CHUNK = 256


def layout_dim(name: str) -> int:
    return sum(HEADS[h] for h in _layout(name))


def _layout(name: str) -> tuple[str, ...]:
    if name not in LAYOUTS:
        raise InputError(f"embedding layout {name!r} is unknown; choose one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def five_points(landmarks) -> np.ndarray:
    """The five alignment points [5,2] from 68 landmarks [68,2] (iBUG order): mean of 36-41, mean of
    42-47, point 30 (nose tip), points 48 and 54 (mouth corners)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise InputError(f"landmarks: expected [68,2], got {lm.shape}")
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def official_crop_affine() -> np.ndarray:
    """[2,3] map from a pixel of a 224 PD-FGC crop to the network input after the official 192 crop."""
    from ..faces import invert_affine
    from ..faces.paste import view_to_crop

    return invert_affine(view_to_crop("generator"))


def template_points(alignment: str) -> np.ndarray:
    """Where ``alignment`` puts its alignment points in the 224 network input: [3,2] for
    ``official`` (eyes, inner mouth), [5,2] for ``five_point``."""
    from ..faces import TEMPLATE, apply_affine

    if alignment == "official":
        return apply_affine(official_crop_affine(), TEMPLATE)
    if alignment == "five_point":
        return FIVE_POINT_TEMPLATE.copy()
    raise InputError(f"alignment {alignment!r} is unknown; choose one of {', '.join(ALIGNMENTS)}")


@dataclass(frozen=True, eq=False)
class AlignedFrames:
    """Network-input pictures uint8 [N,224,224,3] and, per frame, the [2,3] map from source pixels
    to them (``matrices`` [N,2,3]) and whether the frame's own face set it (``detected`` [N])."""

    images: np.ndarray
    matrices: np.ndarray
    detected: np.ndarray
    notes: tuple = ()


def align_for_export(
    frames,
    alignment: str = "official",
    backend="dlib",
    *,
    mode: str = "auto",
    name: str = "frames",
    face_index: int = -1,
) -> AlignedFrames:
    """Aligns uint8 RGB frames [N,H,W,3] (or one [H,W,3]) with ``alignment`` (see the module doc).
    ``backend``: landmark backend name or detector (``"pre-aligned"`` only with ``official``).
    ``mode`` (official only, see :func:`pdfgc_core.faces.align_faces`): "video" (one similarity per
    clip, steady crops; "auto" for several frames), "image" (one per picture). ``five_point`` always
    aligns each frame on its own, as the systems that use it do."""
    from .. import images
    from ..faces import align_faces, as_rgb_u8, compose_affine, get_detector, select_face, similarity_transform

    if alignment not in ALIGNMENTS:
        raise InputError(f"alignment {alignment!r} is unknown; choose one of {', '.join(ALIGNMENTS)}")
    frames = as_rgb_u8(frames, name)
    det = get_detector(backend)
    crop = official_crop_affine()
    if alignment == "official":
        crops, info = align_faces(frames, det, mode=mode, face_index=face_index, name=name)
        net = np.stack([images.official_crop(c) for c in crops])
        mats = np.stack([compose_affine(crop, m) for m in info.matrices])
        return AlignedFrames(net, mats, info.detected, info.notes)
    if det.pre_aligned:
        raise InputError(
            f"{name}: the five_point alignment detects landmarks; choose the dlib or face_alignment backend "
            "('pre-aligned' is only for the official alignment of pictures that already are PD-FGC crops)"
        )
    import cv2

    n = len(frames)
    points = np.full((n, 5, 2), np.nan)
    for t in range(n):
        face = select_face(det.detect(frames[t]), face_index, name=name, frame=t)
        if face is not None:
            points[t] = five_points(face.landmarks)
    detected = np.isfinite(points).all((1, 2))
    if not detected.any():
        raise FaceNotFoundError(
            f"{name}: no face found in {'the picture' if n == 1 else f'any of the {n} frames'} (landmark backend "
            f"{det.name}); use pictures with a visible, roughly frontal face"
        )
    notes = ()
    if not detected.all():
        known = np.flatnonzero(detected)
        flat = points.reshape(n, -1)
        for k in range(flat.shape[1]):
            flat[:, k] = np.interp(np.arange(n), known, flat[known, k])
        points = flat.reshape(n, 5, 2)
        notes = (f"{int((~detected).sum())} frame(s) without a face: points interpolated from the nearest frames",)
    mats = np.stack([similarity_transform(p, FIVE_POINT_TEMPLATE) for p in points])
    net = np.stack(
        [
            cv2.warpAffine(
                f, m, (NETWORK_SIZE, NETWORK_SIZE), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=0
            )
            for f, m in zip(frames, mats)
        ]
    )
    return AlignedFrames(net, mats, detected, notes)


# ------------------------------------------------------------------------------------------ encode


def _heads_of(engine, x: torch.Tensor) -> dict[str, torch.Tensor]:
    motion = engine.models.motion
    with torch.inference_mode(), engine._autocast():
        feat = motion.features(engine._in(x))
        out = {h: motion.head(h, feat) for h in ("pose", "eye", "expression")}
        out["mouth_feature"] = motion.mouth_feature(feat)
        out["lip"] = motion.lip_embedding(out["mouth_feature"])
    return {k: v.float().cpu() for k, v in out.items()}


def encode_heads(
    engine, batches: torch.Tensor | Iterable[torch.Tensor], progress: Callable[[int], None] | None = None
) -> dict[str, torch.Tensor]:
    """Network inputs [B,3,224,224] in -1..1 (a tensor or an iterable of chunks) -> ``{head: [N, D]}``
    float32 CPU for every head of :data:`HEADS`. ``engine``: a :class:`pdfgc_core.engine.Engine`
    whose checkpoint carries the motion network's mouth head."""
    from ..networks.blocks import check_batch

    chunks = [batches] if torch.is_tensor(batches) else batches
    acc: dict[str, list[torch.Tensor]] = {h: [] for h in HEADS}
    for chunk in chunks:
        check_batch(chunk, (3, NETWORK_SIZE, NETWORK_SIZE), "export frames", "give aligned 224x224 pictures")
        for s in range(0, chunk.shape[0], 16):
            res = _heads_of(engine, chunk[s : s + 16])
            for h in HEADS:
                acc[h].append(res[h])
            if progress:
                progress(min(16, chunk.shape[0] - s))
    if not acc["pose"]:
        raise InputError("export: no frames were given; give at least one picture")
    return {h: torch.cat(v) for h, v in acc.items()}


def negative_heads(engine) -> dict[str, torch.Tensor]:
    """Every head [1, D] for an all -1 network input (the negative / unconditional embedding)."""
    return _heads_of(engine, torch.full((1, 3, NETWORK_SIZE, NETWORK_SIZE), -1.0))


@dataclass(eq=False)
class MotionEmbedding:
    """Exported motion embeddings of one clip.

    ``heads``: ``{head: float32 [N, D]}`` for :data:`HEADS`; ``negative``: ``{head: [1, D]}`` for an
    all -1 input; ``alignment``: "official" or "five_point"; ``fps``; ``meta``: provenance
    (landmark backend, checkpoint, frames without a face, ...), strings only."""

    heads: dict
    negative: dict
    alignment: str
    fps: float = DEFAULT_FPS
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.alignment not in ALIGNMENTS:
            raise InputError(f"alignment {self.alignment!r} is unknown; choose one of {', '.join(ALIGNMENTS)}")
        n = None
        for what, group, rows in (("heads", self.heads, None), ("negative", self.negative, 1)):
            for h, d in HEADS.items():
                t = group.get(h)
                if not torch.is_tensor(t) or t.dim() != 2 or t.shape[1] != d:
                    raise InputError(f"motion embedding {what}[{h!r}]: expected [frames, {d}], got {t!r:.80}")
                if rows is None:
                    n = t.shape[0] if n is None else n
                    rows_ok = t.shape[0] == n and n >= 1
                else:
                    rows_ok = t.shape[0] == rows
                if not rows_ok:
                    raise InputError(f"motion embedding {what}[{h!r}] has {t.shape[0]} rows; the heads disagree")

    @property
    def num_frames(self) -> int:
        return int(self.heads["pose"].shape[0])

    def layout(self, name: str) -> torch.Tensor:
        """The layout ``name`` of every frame: float32 [N, dim] (see :data:`LAYOUTS`)."""
        return torch.cat([self.heads[h] for h in _layout(name)], 1)

    def negative_layout(self, name: str) -> torch.Tensor:
        """The layout ``name`` of the all -1 input: float32 [1, dim]."""
        return torch.cat([self.negative[h] for h in _layout(name)], 1)

    def metadata(self) -> dict[str, str]:
        """The file metadata (strings): format, alignment and its template, layouts, fps, frames."""
        meta = {
            "format": FILE_FORMAT,
            "format_version": str(FILE_VERSION),
            "producer": "ComfyUI-PD-FGC",
            "alignment": self.alignment,
            "alignment_template_224": json.dumps(np.round(template_points(self.alignment), 4).tolist()),
            "alignment_crop": "official 192 crop (rows 0-191, cols 16-207) resized to 224"
            if self.alignment == "official"
            else "none (bicubic similarity warp straight to 224)",
            "layouts": json.dumps({k: list(v) for k, v in LAYOUTS.items()}),
            "heads": json.dumps(HEADS),
            "negative": "encoder output for an all -1 network input (black picture)",
            "fps": repr(float(self.fps)),
            "frames": str(self.num_frames),
        }
        meta.update({f"source.{k}": str(v) for k, v in self.meta.items()})
        return meta


def export_motion(
    engine,
    frames,
    alignment: str = "official",
    backend="dlib",
    *,
    mode: str = "auto",
    fps: float = DEFAULT_FPS,
    name: str = "frames",
    progress: Callable[[int], None] | None = None,
) -> MotionEmbedding:
    """Aligns and encodes uint8 RGB frames: a [N,H,W,3] array or an iterable of such chunks (aligned
    :data:`ALIGN_CHUNK` frames at a time) -> :class:`MotionEmbedding`. ``mode``: see
    :func:`align_for_export`."""
    from .. import images

    if alignment not in ALIGNMENTS:
        raise InputError(f"alignment {alignment!r} is unknown; choose one of {', '.join(ALIGNMENTS)}")
    chunks = [frames] if isinstance(frames, np.ndarray) else frames
    notes: list[str] = []
    missing = 0

    def batches() -> Iterator[torch.Tensor]:
        nonlocal missing
        for chunk in _rechunk(chunks, ALIGN_CHUNK):
            a = align_for_export(chunk, alignment, backend, mode=mode, name=name)
            missing += int((~a.detected).sum())
            notes.extend(a.notes)
            yield images.to_network(a.images)

    heads = encode_heads(engine, batches(), progress)
    meta = {
        "landmarks": getattr(backend, "name", str(backend)),
        "mode": mode if alignment == "official" else "per frame",
        "frames_without_face": missing,
        "checkpoint": getattr(engine.models.report, "source", ""),
        "synthetic": str(bool(engine.models.synthetic)).lower(),
    }
    if notes:
        meta["notes"] = "; ".join(dict.fromkeys(notes))
    return MotionEmbedding(heads, negative_heads(engine), alignment, float(fps), meta)


def _rechunk(chunks, size: int) -> Iterator[np.ndarray]:
    buf: list[np.ndarray] = []
    for c in chunks:
        c = np.asarray(c)
        if c.ndim == 3:
            c = c[None]
        buf.extend(c)
        while len(buf) >= size:
            yield np.stack(buf[:size])
            buf = buf[size:]
    if buf:
        yield np.stack(buf)


# -------------------------------------------------------------------------------------------- files


def save_embedding(emb: MotionEmbedding, path: str | os.PathLike) -> Path:
    """One ``.safetensors`` per clip (atomic): every head ``[N, D]``, every layout ``[N, dim]``, and
    the negative of each (``negative.<name>`` ``[1, D]``), with :meth:`MotionEmbedding.metadata`."""
    from safetensors.torch import save

    from ..media import atomic_write

    tensors = {h: emb.heads[h].contiguous() for h in HEADS}
    tensors.update({name: emb.layout(name).contiguous() for name in LAYOUTS})
    tensors.update({NEGATIVE_PREFIX + h: emb.negative[h].contiguous() for h in HEADS})
    tensors.update({NEGATIVE_PREFIX + name: emb.negative_layout(name).contiguous() for name in LAYOUTS})
    path = Path(path)
    try:
        with atomic_write(path) as tmp:
            tmp.write_bytes(save(tensors, metadata=emb.metadata()))
    except OSError as e:
        raise MediaError(f"cannot write {path}: {e}; check the folder is writable") from e
    return path


def save_embedding_npy(emb: MotionEmbedding, folder: str | os.PathLike, layout: str) -> list[Path]:
    """One ``.npy`` per frame (``frame_000000.npy`` ... float32 [dim] of ``layout``), plus
    ``negative.npy`` [dim] and ``embedding.json`` (the metadata and the layout's order), in ``folder``."""
    from ..media import atomic_write

    order = _layout(layout)
    folder = Path(folder)
    values = emb.layout(layout).numpy()
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for i, row in enumerate(values):
            p = folder / f"frame_{i:06d}.npy"
            with atomic_write(p) as tmp, open(tmp, "wb") as fh:
                np.save(fh, row)
            written.append(p)
        p = folder / "negative.npy"
        with atomic_write(p) as tmp, open(tmp, "wb") as fh:
            np.save(fh, emb.negative_layout(layout).numpy()[0])
        written.append(p)
        info = {**emb.metadata(), "layout": layout, "order": list(order), "dim": layout_dim(layout)}
        p = folder / "embedding.json"
        with atomic_write(p) as tmp:
            tmp.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        written.append(p)
    except OSError as e:
        raise MediaError(f"cannot write the .npy files in {folder}: {e}; check the folder is writable") from e
    return written


def load_embedding(path: str | os.PathLike) -> MotionEmbedding:
    """Reads a file written by :func:`save_embedding`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"motion embedding file {path} does not exist; check the path")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            keys = set(fh.keys())
            if meta.get("format") != FILE_FORMAT:
                raise InputError(f"{path} is not a PD-FGC motion embedding file (no format={FILE_FORMAT!r})")
            missing = [k for h in HEADS for k in (h, NEGATIVE_PREFIX + h) if k not in keys]
            if missing:
                raise InputError(f"{path}: tensors {missing} are missing; export it again")
            heads = {h: fh.get_tensor(h) for h in HEADS}
            negative = {h: fh.get_tensor(NEGATIVE_PREFIX + h) for h in HEADS}
    except InputError:
        raise
    except Exception as e:  # safetensors' own error types
        raise MediaError(f"{path} is not a readable .safetensors file ({e}); export it again") from e
    extra = {k[len("source.") :]: v for k, v in meta.items() if k.startswith("source.")}
    return MotionEmbedding(heads, negative, meta.get("alignment", ""), float(meta.get("fps", DEFAULT_FPS)), extra)


__all__ = [
    "ALIGNMENTS",
    "FIVE_POINT_TEMPLATE",
    "HEADS",
    "LAYOUTS",
    "AlignedFrames",
    "MotionEmbedding",
    "align_for_export",
    "encode_heads",
    "export_motion",
    "five_points",
    "layout_dim",
    "load_embedding",
    "negative_heads",
    "save_embedding",
    "save_embedding_npy",
    "template_points",
]
