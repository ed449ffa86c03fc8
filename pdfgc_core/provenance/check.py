"""Checking media for PD-FGC provenance: the invisible watermark (any video or image, re-encoded,
resized or cropped), the C2PA manifest and the container tags (files as this package wrote them).
Used by ``python -m pdfgc_core check FILE`` and the PD-FGC Check Provenance node."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MediaError
from . import manifest
from .watermark import Detection, detect

DEFAULT_FRAMES = 64
"""Video frames read by :func:`check_file` (from the start; their evidence is summed)."""


@dataclass
class Report:
    """The outcome of a check. ``c2pa``: :func:`manifest.read_manifest`'s summary, None when the file
    has no manifest (or was not read: see ``c2pa_note``)."""

    source: str
    kind: str
    size: tuple[int, int]
    watermark: Detection
    c2pa: dict | None = None
    c2pa_note: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        """The watermark was found, or a C2PA manifest names PD-FGC."""
        return self.watermark.found or bool(self.c2pa and "PD-FGC" in str(self.c2pa.get("generator", "")))

    def text(self) -> str:
        w, h = self.size
        lines = [f"{self.source}: {self.kind}, {w}x{h}", f"  watermark: {self.watermark.summary()}"]
        if self.c2pa is not None:
            c = self.c2pa
            if "error" in c:
                lines.append(f"  C2PA: manifest unreadable or damaged ({c['error']})")
            else:
                acts = ", ".join(f"{a}" + (f" ({t.rsplit('/', 1)[-1]})" if t else "") for a, t in c["actions"])
                fails = ", ".join(c["failures"]) or "none"
                trust = (
                    " (signature and content hashes check out; the signer is not on a trust list)"
                    if c["state"] == "Valid" and c["failures"] == ["signingCredential.untrusted"]
                    else ""
                )
                lines.append(
                    f"  C2PA: manifest present, validation {c['state']}{trust}; generator {c['generator']}; "
                    f"signer {c['signer']!r}; actions: {acts or 'none'}; "
                    f"AI-generated: {'yes' if c['ai_generated'] else 'not stated'}; failures: {fails}"
                )
        else:
            lines.append(f"  C2PA: {self.c2pa_note or 'no manifest'}")
        tag = self.tags.get("comment") or self.tags.get("description")
        if tag:
            lines.append(f"  container comment: {tag}")
        return "\n".join(lines)


def check_frames(frames, search: bool = True, source: str = "frames") -> Report:
    """Check a batch of frames (RGB [B,H,W,3] / [H,W,3], uint8 or float 0..1, numpy or torch) for the
    watermark; a batch is treated as one video."""
    d = detect(frames, search=search)
    shape = tuple(frames.shape)
    h, w = shape[-3], shape[-2]
    return Report(source, f"{d.frames} frame(s)", (w, h), d, None, "not applicable (frames, not a file)")


def check_file(path: str | os.PathLike, max_frames: int = DEFAULT_FRAMES, search: bool = True) -> Report:
    """Check an image, a video or a folder of frames: watermark (first ``max_frames`` frames of a video),
    C2PA manifest (when the ``c2pa`` package is installed) and container tags."""
    from ..media import read_frames
    from ..media.read import _source_kind

    p = Path(path)
    if not p.exists():
        raise MediaError(f"{str(p)!r} does not exist; give an image, a video or a folder of frames.")
    kind = _source_kind(p)
    frames = read_frames(p, stop=max_frames)
    d = detect(frames, search=search)
    c2pa, note, tags = None, "", {}
    if p.is_file():
        if manifest.c2pa_available():
            c2pa = manifest.read_manifest(p)
            note = "no manifest"
        else:
            note = f"not checked ({manifest.C2PA_HINT})"
        if kind == "video":
            tags = manifest.read_container_tags(p)
    else:
        note = "not applicable (a folder)"
    label = f"{kind}, {d.frames} frame(s) read" if kind != "image" else kind
    return Report(str(p), label, (frames.shape[2], frames.shape[1]), d, c2pa, note, tags)
