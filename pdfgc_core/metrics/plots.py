"""Plots drawn with OpenCV (already a dependency): line charts, event tracks and heat maps as
uint8 RGB images ``[H,W,3]``, ready for PNG files and ComfyUI IMAGE outputs."""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..errors import InputError

WIDTH, HEIGHT = 720, 360
"""Size of every plot, so that a set of them stacks into one IMAGE batch."""
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
"""Line colours, RGB."""
_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
_MARGIN = (64, 16, 34, 40)  # left, right, top, bottom


def _cv2():
    import cv2

    return cv2


def _text(img, s: str, org, scale: float = 0.42, color=(30, 30, 30), anchor: str = "left") -> None:
    cv2 = _cv2()
    (w, h), _ = cv2.getTextSize(s, _FONT, scale, 1)
    x, y = org
    if anchor == "center":
        x -= w // 2
    elif anchor == "right":
        x -= w
    cv2.putText(img, s, (int(x), int(y + h // 2)), _FONT, scale, color, 1, cv2.LINE_AA)


def nice_ticks(lo: float, hi: float, n: int = 5) -> np.ndarray:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return np.array([0.0])
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return np.arange(math.ceil(lo / step) * step, hi + step * 1e-9, step)


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000 or a < 0.01:
        return f"{v:.1e}"
    return f"{v:.3g}"


class _Axes:
    def __init__(self, title: str, xlabel: str, ylabel: str, xlim, ylim, size=(WIDTH, HEIGHT), yticks: bool = True):
        self.w, self.h = size
        self.img = np.full((self.h, self.w, 3), 255, np.uint8)
        left, right, top, bottom = _MARGIN
        self.box = (left, top, self.w - right, self.h - bottom)
        self.xlim, self.ylim = xlim, ylim
        cv2 = _cv2()
        x0, y0, x1, y1 = self.box
        for v in nice_ticks(*ylim) if yticks else []:
            if ylim[0] <= v <= ylim[1]:
                y = self.y(v)
                cv2.line(self.img, (x0, y), (x1, y), (232, 232, 232), 1)
                _text(self.img, _fmt(v), (x0 - 6, y), anchor="right")
        for v in nice_ticks(*xlim, n=8):
            if xlim[0] <= v <= xlim[1]:
                x = self.x(v)
                cv2.line(self.img, (x, y1), (x, y1 + 4), (90, 90, 90), 1)
                _text(self.img, _fmt(v), (x, y1 + 13), anchor="center")
        cv2.rectangle(self.img, (x0, y0), (x1, y1), (90, 90, 90), 1)
        _text(self.img, title, (self.w // 2, 14), 0.5, anchor="center")
        _text(self.img, xlabel, ((x0 + x1) // 2, self.h - 10), anchor="center")
        _text(self.img, ylabel, (6, 14))

    def x(self, v) -> int:
        x0, _, x1, _ = self.box
        lo, hi = self.xlim
        return int(round(x0 + (float(v) - lo) / (hi - lo) * (x1 - x0)))

    def y(self, v) -> int:
        _, y0, _, y1 = self.box
        lo, hi = self.ylim
        return int(round(y1 - (float(v) - lo) / (hi - lo) * (y1 - y0)))

    def legend(self, entries: list[tuple[str, tuple, int]]) -> None:
        cv2 = _cv2()
        x1, y0 = self.box[2], self.box[1]
        for i, (name, color, width) in enumerate(entries):
            y = y0 + 12 + 16 * i
            cv2.line(self.img, (x1 - 150, y), (x1 - 128, y), color, width, cv2.LINE_AA)
            _text(self.img, name[:20], (x1 - 122, y))


def _limits(values: list[np.ndarray], pad: float = 0.05) -> tuple[float, float]:
    finite = [v[np.isfinite(v)] for v in values]
    finite = [v for v in finite if v.size]
    if not finite:
        return 0.0, 1.0
    lo, hi = float(min(v.min() for v in finite)), float(max(v.max() for v in finite))
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 if lo == 0 else lo - abs(lo) * 0.1, hi + 0.5 if hi == 0 else hi + abs(hi) * 0.1
    span = hi - lo
    return lo - pad * span, hi + pad * span


def line_plot(
    series: dict[str, np.ndarray],
    title: str,
    xlabel: str = "frame",
    ylabel: str = "",
    x: np.ndarray | None = None,
    marks: dict[str, float] | None = None,
    style: dict[str, tuple[int, int]] | None = None,
    size=(WIDTH, HEIGHT),
) -> np.ndarray:
    """One line per series (``{name: [N]}``; NaN values break the line) against ``x`` (default the
    frame index). ``marks``: vertical lines ``{label: x}``. ``style``: ``{name: (palette index, line
    width)}`` (default: the next colour, width 2). Returns uint8 RGB ``[H,W,3]``."""
    if not series:
        raise InputError("line plot: no series to draw")
    ys = {k: np.asarray(v, np.float64).reshape(-1) for k, v in series.items()}
    n = max(v.size for v in ys.values())
    xs = np.arange(n, dtype=np.float64) if x is None else np.asarray(x, np.float64).reshape(-1)
    if xs.size < n:
        raise InputError(f"line plot: {xs.size} x values for {n} points")
    xlim = (float(xs[:n].min()), float(xs[:n].max()) if n > 1 else float(xs[0]) + 1.0)
    ax = _Axes(title, xlabel, ylabel, xlim, _limits(list(ys.values())), size)
    cv2 = _cv2()
    for name, xv in (marks or {}).items():
        px = ax.x(xv)
        cv2.line(ax.img, (px, ax.box[1]), (px, ax.box[3]), (160, 160, 160), 1)
        _text(ax.img, name, (px + 3, ax.box[1] + 8), 0.38, (110, 110, 110))
    legend = []
    for i, (name, v) in enumerate(ys.items()):
        ci, width = (style or {}).get(name, (i, 2))
        color = PALETTE[ci % len(PALETTE)]
        legend.append((name, color, width))
        pts = [(ax.x(xs[j]), ax.y(v[j])) if np.isfinite(v[j]) else None for j in range(v.size)]
        run: list = []
        for p in pts + [None]:
            if p is None:
                if len(run) > 1:
                    cv2.polylines(ax.img, [np.array(run, np.int32)], False, color, width, cv2.LINE_AA)
                elif len(run) == 1:
                    cv2.circle(ax.img, run[0], 2, color, -1, cv2.LINE_AA)
                run = []
            else:
                run.append(p)
    ax.legend(legend)
    return ax.img


def event_plot(
    tracks: dict[str, list[tuple[int, int]]], num_frames: int, title: str, size=(WIDTH, HEIGHT)
) -> np.ndarray:
    """One row per track with a bar for each event ``(start, end)`` (inclusive frames), e.g. blinks
    of the driver and of the result. Returns uint8 RGB ``[H,W,3]``."""
    if not tracks:
        raise InputError("event plot: no tracks to draw")
    names = list(tracks)
    ax = _Axes(title, "frame", "", (0.0, float(max(num_frames, 1))), (0.0, float(len(names))), size, yticks=False)
    cv2 = _cv2()
    for i, name in enumerate(names):
        lo, hi = ax.y(len(names) - i - 0.2), ax.y(len(names) - i - 0.8)
        color = PALETTE[i % len(PALETTE)]
        for s, e in tracks[name]:
            cv2.rectangle(ax.img, (ax.x(s), lo), (max(ax.x(e + 1), ax.x(s) + 2), hi), color, -1)
        _text(ax.img, f"{name} ({len(tracks[name])})", (ax.box[0] + 6, (lo + hi) // 2), 0.42, (20, 20, 20))
    return ax.img


def _viridis(t: float) -> tuple[int, int, int]:
    cv2 = _cv2()
    v = np.uint8([[int(round(np.clip(t, 0, 1) * 255))]])
    b, g, r = cv2.applyColorMap(v, cv2.COLORMAP_VIRIDIS)[0, 0]
    return int(r), int(g), int(b)


def heatmap(
    matrix,
    row_labels: list[str],
    col_labels: list[str],
    title: str,
    normalize: str = "column",
    row_title: str = "",
    col_title: str = "",
    size=(WIDTH, HEIGHT),
) -> np.ndarray:
    """A table of numbers as coloured cells with the values written in. Colour: each value divided
    by its column's largest (``normalize="column"``, so columns of different scales compare) or by
    the largest overall (``"all"``). NaN cells are grey and read ``n/a``. Returns uint8 RGB."""
    m = np.asarray(matrix, np.float64)
    if m.ndim != 2 or m.shape != (len(row_labels), len(col_labels)) or m.size == 0:
        raise InputError(f"heat map: matrix {m.shape} does not match {len(row_labels)} x {len(col_labels)} labels")
    if normalize not in ("column", "all"):
        raise InputError(f"heat map normalize {normalize!r} is not 'column' or 'all'")
    cv2 = _cv2()
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, top, right, bottom = 130, 62, 16, 28
    cw, ch = (w - left - right) / m.shape[1], (h - top - bottom) / m.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        if normalize == "column":
            scale = np.nanmax(np.where(np.isfinite(m), np.abs(m), np.nan), axis=0, keepdims=True)
        else:
            scale = np.nanmax(np.where(np.isfinite(m), np.abs(m), np.nan), keepdims=True)
        rel = np.abs(m) / scale
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            x0, y0 = int(left + j * cw), int(top + i * ch)
            x1, y1 = int(left + (j + 1) * cw), int(top + (i + 1) * ch)
            if np.isfinite(m[i, j]):
                t = float(rel[i, j]) if np.isfinite(rel[i, j]) else 0.0
                color, label = _viridis(t), _fmt(float(m[i, j]))
                ink = (255, 255, 255) if t < 0.6 else (20, 20, 20)
            else:
                color, label, ink = (200, 200, 200), "n/a", (60, 60, 60)
            cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), color, -1)
            _text(img, label, ((x0 + x1) // 2, (y0 + y1) // 2), 0.45, ink, anchor="center")
    for i, name in enumerate(row_labels):
        _text(img, name, (left - 8, int(top + (i + 0.5) * ch)), 0.45, anchor="right")
    for j, name in enumerate(col_labels):
        _text(img, name, (int(left + (j + 0.5) * cw), top - 12), 0.45, anchor="center")
    _text(img, title, (w // 2, 12), 0.5, anchor="center")
    if col_title:
        _text(img, col_title, (left + (w - left - right) // 2, 32), 0.4, (90, 90, 90), anchor="center")
    if row_title:
        _text(img, row_title, (8, top - 12), 0.4, (90, 90, 90))
    note = "colour: value / column maximum" if normalize == "column" else "colour: value / maximum"
    _text(img, note, (w - right, h - 12), 0.38, (110, 110, 110), anchor="right")
    return img


def stack(images: list[np.ndarray]) -> np.ndarray:
    """Plots -> one batch ``[K,H,W,3]`` (smaller ones padded with white to the largest)."""
    if not images:
        raise InputError("no plots to stack")
    h = max(i.shape[0] for i in images)
    w = max(i.shape[1] for i in images)
    out = np.full((len(images), h, w, 3), 255, np.uint8)
    for k, im in enumerate(images):
        out[k, : im.shape[0], : im.shape[1]] = im
    return out
