"""Test material for the training tests: short talking videos built from the bundled samples, and a
small prepared dataset cached outside the repository (keyed by the code and samples that shape it)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
SPEECH = SAMPLES / "speech.mp3"
SECONDS = 2.08  # 52 frames at 25 fps, the length of the bundled driver folders

# (name, frame pattern, audio start in s): the two clips of the small dataset
CLIPS = (
    ("talk_pose", SAMPLES / "drivers" / "pose" / "%06d.jpg", 0.0),
    ("talk_eye", SAMPLES / "drivers" / "eye" / "%04d.jpg", 1.9),
)


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg(), "-nostdin", "-v", "error", "-y", *args], check=True, capture_output=True)


def talking_video(out: Path, frames_pattern, audio_start: float, seconds: float = SECONDS) -> Path:
    """mp4 (H.264 + AAC, 25 fps) of a numbered frame sequence with a slice of the bundled speech."""
    run_ffmpeg(
        "-framerate", "25", "-i", str(frames_pattern), "-ss", f"{audio_start}", "-i", str(SPEECH),
        "-t", f"{seconds}", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(out),
    )  # fmt: skip
    return out


def silent_video(out: Path, frames_pattern, seconds: float = 1.0) -> Path:
    """A video with no audio track."""
    run_ffmpeg("-framerate", "25", "-i", str(frames_pattern), "-t", f"{seconds}", "-c:v", "libx264",
               "-pix_fmt", "yuv420p", str(out))  # fmt: skip
    return out


def faceless_video(out: Path, seconds: float = 1.0) -> Path:
    """Moving noise (no face) with the bundled speech."""
    run_ffmpeg("-f", "lavfi", "-i", f"nullsrc=s=160x120:r=25:d={seconds},geq=random(1)*255:128:128",
               "-i", str(SPEECH), "-t", f"{seconds}", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
               "-shortest", str(out))  # fmt: skip
    return out


def corrupt_video(out: Path, like: Path) -> Path:
    """The first kilobytes of a real mp4 followed by garbage: not decodable."""
    data = like.read_bytes()[:2000]
    out.write_bytes(
        b"\x00\x00\x00\x18ftypmp42" + bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8)) + data[:10]
    )
    return out


def _cache_dir() -> Path:
    env = os.environ.get("PDFGC_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "pdfgc"


def _key() -> str:
    h = hashlib.sha256()
    files = [REPO / "pdfgc_core" / "train" / n for n in ("prepare.py", "shards.py", "eyes.py")]
    files += sorted((REPO / "pdfgc_core" / "faces").glob("*.py"))
    files += [REPO / "pdfgc_core" / n for n in ("audio.py", "images.py")]
    files += [SPEECH] + [Path(str(p)).parent for _, p, _ in CLIPS]
    for f in files:
        if f.is_dir():
            for g in sorted(f.iterdir()):
                h.update(g.name.encode() + g.read_bytes())
        else:
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def small_dataset() -> Path:
    """The dataset prepared from the two talking videos of :data:`CLIPS` (JPEG frames), cached."""
    from pdfgc_core.train.prepare import PrepareOptions, prepare

    out = _cache_dir() / "train-dataset" / _key()
    if (out / "dataset" / "index.json").is_file():
        return out / "dataset"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "dataset" / "index.json").is_file():
            videos = out / "videos"
            shutil.rmtree(videos, ignore_errors=True)
            shutil.rmtree(out / "dataset", ignore_errors=True)
            videos.mkdir()
            for name, pattern, t0 in CLIPS:
                talking_video(videos / f"{name}.mp4", pattern, t0)
            prepare([videos], out / "dataset.part", PrepareOptions(workers=1), echo=lambda s: None)
            os.replace(out / "dataset.part", out / "dataset")
    return out / "dataset"


def weights_copy(src: Path, dst: Path) -> Path:
    """The four official files of ``src`` hard-linked (or copied) into ``dst``, so a run in the same
    file system links its frozen networks instead of copying 500 MB."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in ("appearance_model.pth", "motion_model.pth", "audio_model.pth", "generator_model.pth"):
        if not (dst / f).exists():
            try:
                os.link(src / f, dst / f)
            except OSError:
                shutil.copyfile(src / f, dst / f)
    return dst
