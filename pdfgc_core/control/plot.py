"""A small line plot of pose controls over time (OpenCV drawing, no plotting library)."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .pose import AXES

COLOURS = ((230, 80, 60), (60, 170, 70), (60, 110, 230))  # RGB for the three curves of a panel
BACKGROUND = (250, 250, 250)
GRID = (215, 215, 215)
TEXT = (40, 40, 40)


def _panel(img: np.ndarray, top: int, height: int, t: np.ndarray, series: np.ndarray, names, unit: str) -> None:
    import cv2

    h_img, w_img = img.shape[:2]
    left, right = 64, w_img - 16
    y0, y1 = top + 22, top + height - 24
    lo, hi = float(np.nanmin(series)), float(np.nanmax(series))
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0
    pad = 0.08 * (hi - lo)
    lo, hi = lo - pad, hi + pad

    def ty(v):
        return y1 - (v - lo) / (hi - lo) * (y1 - y0)

    tmax = max(float(t[-1]), 1e-9)
    for v in np.linspace(lo, hi, 5):
        yy = int(round(ty(v)))
        cv2.line(img, (left, yy), (right, yy), GRID, 1)
        cv2.putText(img, f"{v:.3g}", (4, yy + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, TEXT, 1, cv2.LINE_AA)
    if lo < 0 < hi:
        cv2.line(img, (left, int(round(ty(0.0)))), (right, int(round(ty(0.0)))), (160, 160, 160), 1)
    x = left + t / tmax * (right - left)
    for k, (name, colour) in enumerate(zip(names, COLOURS)):
        pts = np.stack([x, ty(series[:, k])], 1).round().astype(np.int32)
        if len(pts) == 1:
            cv2.circle(img, tuple(int(v) for v in pts[0]), 3, colour, -1)
        else:
            cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA)
        cv2.putText(img, name, (left + 8 + 90 * k, top + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    cv2.putText(img, unit, (right - 150, top + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, TEXT, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, y0), (right, y1), (120, 120, 120), 1)


def plot_controls(controls, fps: float = 25.0, title: str = "", size: tuple[int, int] = (640, 420)) -> np.ndarray:
    """uint8 RGB picture [H,W,3] (``size`` = (width, height)) of pose controls [T,6]: pitch, yaw,
    roll (degrees) on top, x, y, z below, against time in seconds."""
    import cv2

    c = np.asarray(controls, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 6 or len(c) < 1 or not np.isfinite(c).all():
        raise InputError(f"pose plot: expected finite controls [frames, 6], got {c.shape}")
    w, h = int(size[0]), int(size[1])
    img = np.full((h, w, 3), BACKGROUND, np.uint8)
    t = np.arange(len(c)) / float(fps)
    head = 24 if title else 4
    if title:
        cv2.putText(img, title[:90], (8, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, TEXT, 1, cv2.LINE_AA)
    panel = (h - head - 18) // 2
    _panel(img, head, panel, t, c[:, :3], AXES[:3], "degrees")
    _panel(img, head + panel, panel, t, c[:, 3:], AXES[3:], "translation")
    cv2.putText(
        img, f"time (s), {len(c)} frames at {fps:g} fps", (w // 2 - 90, h - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, TEXT, 1
    )
    return img


def controls_csv(controls, fps: float = 25.0) -> str:
    """CSV text: ``frame,seconds,pitch,yaw,roll,x,y,z`` one line per frame."""
    c = np.asarray(controls, dtype=np.float64)
    lines = ["frame,seconds," + ",".join(AXES)]
    for i, row in enumerate(c):
        lines.append(f"{i},{i / fps:.4f}," + ",".join(f"{v:.6g}" for v in row))
    return "\n".join(lines) + "\n"
