"""Test videos for dubbing, made from the bundled portrait: a 640x360 clip at any frame rate with
a main face drifting slowly, an optional second (smaller) face, frames without any face, and an
optional cut. Used by tests/test_dub.py and benchmarks/bench_dub.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def portrait(size: int) -> np.ndarray:
    import cv2

    from pdfgc_core.images import read_image

    return cv2.resize(read_image(REPO / "samples" / "anne.png"), (size, size), interpolation=cv2.INTER_AREA)


def background(h: int, w: int, t: int, shot: int = 0) -> np.ndarray:
    """A slowly moving colour pattern; another shot has another, much brighter scene."""
    yy, xx = np.mgrid[0:h, 0:w]
    r = 60 + 40 * np.sin(xx / 50.0 + t * 0.05)
    g = 70 + 30 * np.cos(yy / 40.0)
    b = 90 + 20 * np.sin((xx + yy) / 80.0)
    rgb = np.stack([r, g, b], -1) if shot == 0 else np.stack([220 - b / 3, 200 - r / 3, 180 + g / 4], -1)
    return rgb.clip(0, 255).astype(np.uint8)


def face_clip(
    n: int = 45,
    size: tuple[int, int] = (360, 640),
    main: int = 210,
    second: int | None = 150,
    no_face: tuple[int, int] | None = (20, 30),
    drift: float = 1.5,
    cut_at: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames [n,H,W,3] and the main face's top-left corner per frame [n,2] (x, y; NaN where
    no face is shown). The main face (``main`` px portrait) starts at x=330 and drifts right by
    ``drift`` px a frame; the second face (``second`` px) stays at the left; frames in the
    half-open range ``no_face`` show only the background. From ``cut_at`` on, the main face jumps
    to the other side (a new shot)."""
    h, w = size
    big, small = portrait(main), (portrait(second)[:, ::-1] if second else None)
    frames, corners = [], []
    for t in range(n):
        f = background(h, w, t, 0 if cut_at is None or t < cut_at else 1)
        if no_face and no_face[0] <= t < no_face[1]:
            frames.append(f)
            corners.append((np.nan, np.nan))
            continue
        x = int(round(330 + drift * t)) if cut_at is None or t < cut_at else int(round(260 - drift * (t - cut_at)))
        y = (h - main) // 2 + int(round(4 * np.sin(t / 7.0)))
        if small is not None:
            f[100 : 100 + second, 40 : 40 + second] = small
        f[y : y + main, x : x + main] = big
        frames.append(f)
        corners.append((x, y))
    return np.stack(frames), np.array(corners, float)


def write_video(path, frames: np.ndarray, fps, audio=None) -> Path:
    """frames -> an mp4 (h264, high quality) at ``fps``, with optional ``(waveform, sr)`` sound."""
    from pdfgc_core.media import Mp4Writer

    with Mp4Writer(path, fps=fps, audio=audio, crf=12) as w:
        w.write(frames)
    return Path(path)
