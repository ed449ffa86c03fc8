"""The bundled sample inputs, made available to ComfyUI's loaders so the shipped templates run
with zero manual steps.

At start-up the pack copies each sample into ComfyUI's input folder under a ``pdfgc_`` name,
only if no file of that name is there (a user's file is never replaced). Set
``PDFGC_NO_SAMPLE_INPUTS=1`` to skip it. The samples come from the official PD-FGC repository
(CC-BY-4.0, see samples/README.md); the attribution file is copied beside them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "samples"

SAMPLE_INPUTS = {
    "pdfgc_anne.png": "anne.png",
    "pdfgc_speech.mp3": "speech.mp3",
    "pdfgc_pose.mp4": "videos/pose.mp4",
    "pdfgc_eye.mp4": "videos/eye.mp4",
    "pdfgc_expression.mp4": "videos/expression.mp4",
    "pdfgc_expression.jpg": "drivers/expression/000006.jpg",
    "pdfgc_photo.jpg": "photo.jpg",
    "pdfgc_talk.mp4": "videos/talk.mp4",
}
"""input-folder name -> file under samples/."""
ATTRIBUTION = "pdfgc_samples_LICENSE-CC-BY-4.0.txt"
DISABLE_ENV = "PDFGC_NO_SAMPLE_INPUTS"


def install_sample_inputs(input_dir: str | os.PathLike) -> list[str]:
    """Copy the missing samples into ``input_dir``; returns the names copied. Each copy goes to a
    temporary name first and is renamed into place, so a half-copied file never appears."""
    dest = Path(input_dir)
    copied = []
    files = {**SAMPLE_INPUTS, ATTRIBUTION: "LICENSE-CC-BY-4.0.txt"}
    for name, src in files.items():
        target = dest / name
        if target.exists() or target.is_symlink():
            continue
        dest.mkdir(parents=True, exist_ok=True)
        tmp = dest / f".{name}.part"
        shutil.copyfile(SAMPLES / src, tmp)
        os.replace(tmp, target)
        copied.append(name)
    return copied
