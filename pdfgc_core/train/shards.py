"""The prepared dataset on disk: safetensors shards of clips, a JSON index, a skip log.

Layout of a dataset folder::

    index.json               every clip (shard, frame count, source, ...) and every skipped video
    shard-000000.safetensors clips, each as the tensors "<clip id>.<field>" (see CLIP_FIELDS)
    skipped.jsonl            one JSON line per video that gave no clip, with the reason

A shard is written all at once (atomically) and lists the source videos it completes in its
metadata, so an interrupted ``prepare`` resumes by skipping the sources found in finished shards
and in ``skipped.jsonl``. Shards are read lazily and memory-mapped (``safetensors.safe_open``):
training streams the frames it needs, never a whole shard.

Per clip (N frames at 25 fps, all in the 224x224 network framing):

- ``frames``: uint8 [N,224,224,3] RGB (``frame_codec="raw"``), or ``jpeg``: uint8 [bytes] with
  ``jpeg_offsets``: int64 [N+1] (``frame_codec="jpeg"``);
- ``mel``: float32 [M,80], the inference log-mel spectrogram, cut so that audio window ``j`` of
  the clip (``pdfgc_core.audio.mel_windows``) belongs to frame ``j``;
- ``landmarks``: float32 [N,68,2] (x, y) network-image pixels, NaN where no face was detected;
- ``eye_box``: float32 [N,4] (see :mod:`.eyes`); ``pose``: float32 [N,6] pose labels (see
  :mod:`.prepare`); ``detected``: uint8 [N], 1 where the frame's own face was found.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError

FORMAT = "pdfgc-train-dataset"
VERSION = 1
INDEX = "index.json"
SKIPPED = "skipped.jsonl"
SHARD_PATTERN = "shard-{:06d}.safetensors"
CLIP_FIELDS = ("mel", "landmarks", "eye_box", "pose", "detected")
FRAME_CODECS = ("jpeg", "raw")


@dataclass
class ClipData:
    """One prepared clip in memory (arrays as in the module docstring)."""

    clip_id: str
    source: str
    start_frame: int
    frames: np.ndarray
    mel: np.ndarray
    landmarks: np.ndarray
    eye_box: np.ndarray
    pose: np.ndarray
    detected: np.ndarray
    pose_source: str
    notes: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(len(self.landmarks))


def encode_frames(frames: np.ndarray, codec: str, quality: int = 95) -> dict[str, np.ndarray]:
    """uint8 [N,H,W,3] RGB -> the stored tensors for ``codec`` ("raw" or "jpeg")."""
    if codec == "raw":
        return {"frames": np.ascontiguousarray(frames, dtype=np.uint8)}
    if codec != "jpeg":
        raise InputError(f"frame codec {codec!r} is unknown; choose one of {', '.join(FRAME_CODECS)}")
    import cv2

    chunks = []
    for f in frames:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(f[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise InputError("JPEG encoding of a frame failed")
        chunks.append(buf.reshape(-1))
    offsets = np.zeros(len(chunks) + 1, np.int64)
    offsets[1:] = np.cumsum([len(c) for c in chunks])
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    return {"jpeg": data.astype(np.uint8), "jpeg_offsets": offsets}


def decode_jpeg(buf: np.ndarray) -> np.ndarray:
    import cv2

    img = cv2.imdecode(np.ascontiguousarray(buf, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError("a stored JPEG frame cannot be decoded; the shard is damaged (prepare the data again)")
    return np.ascontiguousarray(img[..., ::-1])


def clip_meta(clip: ClipData, shard: str, codec: str) -> dict:
    return {
        "id": clip.clip_id,
        "shard": shard,
        "source": clip.source,
        "start_frame": int(clip.start_frame),
        "num_frames": clip.num_frames,
        "num_mel": int(len(clip.mel)),
        "detected_frames": int(np.asarray(clip.detected).sum()),
        "pose_source": clip.pose_source,
        "frame_codec": codec,
        "notes": list(clip.notes),
    }


class ShardWriter:
    """Collects the clips of finished videos and writes a shard whenever ``shard_bytes`` are held.

    ``add(source, clips)`` takes all clips of one video (a video is never split over shards)."""

    def __init__(self, root, codec: str = "jpeg", jpeg_quality: int = 95, shard_bytes: int = 512 << 20):
        if codec not in FRAME_CODECS:
            raise InputError(f"frame codec {codec!r} is unknown; choose one of {', '.join(FRAME_CODECS)}")
        self.root = Path(root)
        self.codec, self.quality, self.shard_bytes = codec, int(jpeg_quality), int(shard_bytes)
        self.tensors: dict[str, torch.Tensor] = {}
        self.metas: list[dict] = []
        self.sources: list[str] = []
        self.bytes = 0
        self.written: list[Path] = []

    def _next_name(self) -> str:
        used = {
            int(m.group(1)) for p in self.root.glob("shard-*.safetensors") if (m := re.match(r"shard-(\d+)", p.name))
        }
        n = max(used, default=-1) + 1
        return SHARD_PATTERN.format(n)

    def add(self, source: str, clips: list[ClipData]) -> None:
        for clip in clips:
            arrays = encode_frames(clip.frames, self.codec, self.quality)
            for name in CLIP_FIELDS:
                arrays[name] = np.asarray(getattr(clip, name))
            arrays["detected"] = arrays["detected"].astype(np.uint8)
            for name, a in arrays.items():
                t = torch.from_numpy(np.ascontiguousarray(a))
                self.tensors[f"{clip.clip_id}.{name}"] = t
                self.bytes += t.numel() * t.element_size()
            self.metas.append(clip_meta(clip, "", self.codec))
        self.sources.append(source)
        if self.bytes >= self.shard_bytes:
            self.flush()

    def flush(self) -> Path | None:
        if not self.sources:
            return None
        from safetensors.torch import save_file

        from ..media import atomic_write

        name = self._next_name()
        for m in self.metas:
            m["shard"] = name
        meta = {
            "format": FORMAT,
            "version": str(VERSION),
            "clips": json.dumps(self.metas),
            "sources": json.dumps(self.sources),
        }
        with atomic_write(self.root / name) as tmp:
            save_file(self.tensors, str(tmp), metadata=meta)
        self.tensors, self.metas, self.sources, self.bytes = {}, [], [], 0
        self.written.append(self.root / name)
        return self.root / name


def _shard_metadata(path: Path) -> dict | None:
    from ..checkpoints import safetensors_metadata

    try:
        meta = safetensors_metadata(path)
    except (OSError, ValueError):
        return None
    if meta.get("format") != FORMAT:
        return None
    return meta


def finished_shards(root) -> list[tuple[Path, list[dict], list[str]]]:
    """``(path, clip metas, completed sources)`` of every readable shard in ``root``, by name."""
    out = []
    for p in sorted(Path(root).glob("shard-*.safetensors")):
        meta = _shard_metadata(p)
        if meta is None:
            continue
        try:
            out.append((p, json.loads(meta["clips"]), json.loads(meta["sources"])))
        except (KeyError, ValueError):
            continue
    return out


def read_skipped(root) -> dict[str, dict]:
    """``{source: record}`` from ``skipped.jsonl`` (the last record of a source wins)."""
    p = Path(root) / SKIPPED
    out = {}
    if p.is_file():
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                out[rec["source"]] = rec
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a crash
    return out


def append_skipped(root, record: dict) -> None:
    """Appends one skip record (a single short write, flushed and synced)."""
    p = Path(root) / SKIPPED
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_index(root, extra: dict | None = None) -> dict:
    """Rebuilds ``index.json`` from the shards and the skip log; returns it. Clips are ordered by
    (source, start frame), so the index does not depend on which worker finished first."""
    from ..media import atomic_write

    root = Path(root)
    clips, done = [], set()
    for _, metas, sources in finished_shards(root):
        fresh = [s for s in sources if s not in done]
        done.update(fresh)
        clips += [m for m in metas if m["source"] in fresh]
    clips.sort(key=lambda m: (m["source"], m["start_frame"]))
    skipped = [r for s, r in sorted(read_skipped(root).items()) if s not in done]
    index = {"format": FORMAT, "version": VERSION, **(extra or {}), "clips": clips, "skipped": skipped}
    with atomic_write(root / INDEX) as tmp:
        tmp.write_text(json.dumps(index, indent=1), encoding="utf-8")
    return index


class ClipStore:
    """Read access to a prepared dataset. ``clips`` is the index's clip list; arrays are read on
    demand from memory-mapped shards. Picklable (open files are reopened in each process)."""

    def __init__(self, root):
        self.root = Path(root)
        p = self.root / INDEX
        if not p.is_file():
            raise InputError(
                f"{self.root}: no {INDEX}; this is not a prepared dataset (run `python -m pdfgc_core prepare "
                f"VIDEOS --out {self.root}` first, and let it finish)."
            )
        try:
            index = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"{p} cannot be read ({e}); run prepare again.") from None
        if index.get("format") != FORMAT or index.get("version") != VERSION:
            raise InputError(f"{p}: not a version-{VERSION} {FORMAT} index; prepare the data with this version.")
        self.index = index
        self.clips: list[dict] = index["clips"]
        self.fps = float(index.get("fps", 25.0))
        self._files: dict[str, object] = {}

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_files"] = {}
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._files = {}

    def __len__(self) -> int:
        return len(self.clips)

    def _file(self, shard: str):
        f = self._files.get(shard)
        if f is None:
            from safetensors import safe_open

            path = self.root / shard
            try:
                f = safe_open(str(path), framework="pt")
            except Exception as e:  # safetensors raises its own error type
                raise InputError(f"{path}: shard cannot be opened ({e}); prepare the data again.") from None
            self._files[shard] = f
        return f

    def array(self, i: int, name: str) -> torch.Tensor:
        """Field ``name`` of clip ``i`` as a tensor (whole field)."""
        c = self.clips[i]
        return self._file(c["shard"]).get_tensor(f"{c['id']}.{name}")

    @functools.lru_cache(maxsize=256)  # noqa: B019 - a store lives as long as its run
    def small(self, i: int, name: str) -> np.ndarray:
        """Field ``name`` (not frames) of clip ``i`` as numpy, cached."""
        return self.array(i, name).numpy()

    def frames(self, i: int, times) -> np.ndarray:
        """uint8 [len(times),224,224,3] RGB frames ``times`` of clip ``i``."""
        c = self.clips[i]
        f = self._file(c["shard"])
        times = [int(t) for t in times]
        if c.get("frame_codec", "raw") == "raw":
            sl = f.get_slice(f"{c['id']}.frames")
            return np.stack([sl[t : t + 1].numpy()[0] for t in times])
        offsets = self.small(i, "jpeg_offsets")
        sl = f.get_slice(f"{c['id']}.jpeg")
        return np.stack([decode_jpeg(sl[int(offsets[t]) : int(offsets[t + 1])].numpy()) for t in times])
