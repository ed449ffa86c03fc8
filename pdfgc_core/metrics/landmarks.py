"""Landmark metrics: LMD and mouth LMD, eye aspect ratio and blinks, an iris-free gaze proxy.

Landmarks are the 68 points of the iBUG layout (``pdfgc_core.faces``), one face per frame (the
largest). Every metric here takes plain arrays, so it can be tested on planted points:

- ``landmarks``: float64 ``[N,68,2]`` pixel coordinates (x right, y down); a frame without a
  face is a row of NaN and is left out of every mean (the number of frames used is reported).
- Distances are in pixels of a :data:`REFERENCE_SIZE` x :data:`REFERENCE_SIZE` frame: each
  clip's coordinates are scaled by ``REFERENCE_SIZE / width`` and ``REFERENCE_SIZE / height``
  first, so clips of different resolutions compare (the PD-FGC frame is 224 x 224).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..faces.landmarks import LEFT_EYE, RIGHT_EYE

REFERENCE_SIZE = 224
"""Side of the square frame LMD is measured in (pixels): PD-FGC's output size."""
MOUTH = slice(48, 68)
"""The 20 mouth points (outer lip 48-59, inner lip 60-67)."""
INNER_LIP_TOP, INNER_LIP_BOTTOM = (61, 62, 63), (67, 66, 65)
MOUTH_CORNERS = (48, 54)
LMD_ALIGN = ("none", "centroid")
BLINK_RATIO = 0.75
"""A frame is "eyes closed" when its EAR is below this fraction of the clip's median EAR."""
BLINK_TOLERANCE = 3
"""Frames two blinks' lowest points may be apart and still count as the same blink."""


def _check_landmarks(lm, what: str) -> np.ndarray:
    a = np.asarray(lm, dtype=np.float64)
    if a.ndim != 3 or a.shape[1:] != (68, 2):
        raise InputError(f"{what}: expected landmarks [frames, 68, 2], got shape {a.shape}")
    return a


def _check_frames(frames, what: str) -> np.ndarray:
    a = np.asarray(frames)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8 or a.shape[0] == 0:
        raise InputError(f"{what}: expected uint8 RGB frames [N, H, W, 3], got {a.dtype} {a.shape}")
    return a


def detect_landmarks(
    frames, backend="dlib", progress: Callable[[int], None] | None = None, what: str = "frames"
) -> np.ndarray:
    """68 landmarks of the largest face in each frame: uint8 RGB ``[N,H,W,3]`` -> float64
    ``[N,68,2]`` pixel coordinates, NaN for frames where no face is found. ``backend``: a name
    for :func:`pdfgc_core.faces.get_detector` (``dlib``, ``face_alignment``) or a detector."""
    from ..faces import get_detector

    frames = _check_frames(frames, what)
    det = get_detector(backend)
    if det.pre_aligned:
        raise InputError(f"landmark backend {backend!r} detects nothing; use 'dlib' or 'face_alignment'")
    out = np.full((frames.shape[0], 68, 2), np.nan)
    for i, frame in enumerate(frames):
        faces = det.detect(frame)
        if faces:
            box_area = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces]
            out[i] = faces[int(np.argmax(box_area))].landmarks
        if progress:
            progress(1)
    return out


def to_reference(landmarks, width: int, height: int, size: int = REFERENCE_SIZE) -> np.ndarray:
    """Pixel coordinates in a ``width`` x ``height`` frame -> coordinates in a ``size`` square frame."""
    lm = _check_landmarks(landmarks, "landmarks")
    if not (width > 0 and height > 0):
        raise InputError(f"frame size must be positive, got {width}x{height}")
    return lm * np.array([size / width, size / height])


def landmark_distance(a, b, points: slice | tuple | None = None, align: str = "none") -> np.ndarray:
    """Per-frame mean Euclidean distance between corresponding points of ``a`` and ``b`` (both
    ``[N,68,2]`` in the same coordinates; the first min(N_a, N_b) frames) -> ``[N]``, NaN where
    either frame has no face. ``points``: a subset (e.g. :data:`MOUTH`); ``align="centroid"``
    subtracts each frame's centroid of those points first (translation removed)."""
    if align not in LMD_ALIGN:
        raise InputError(f"LMD alignment {align!r} is not one of {LMD_ALIGN}")
    a, b = _check_landmarks(a, "first landmarks"), _check_landmarks(b, "second landmarks")
    n = min(a.shape[0], b.shape[0])
    sel = slice(None) if points is None else points
    pa, pb = a[:n, sel], b[:n, sel]
    if align == "centroid":
        pa = pa - pa.mean(1, keepdims=True)
        pb = pb - pb.mean(1, keepdims=True)
    return np.linalg.norm(pa - pb, axis=-1).mean(-1)


def nanmean(x) -> float:
    """Mean of the finite values; NaN when there are none (no warning)."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


def lmd(a, b, size_a: tuple[int, int], size_b: tuple[int, int], align: str = "none") -> dict:
    """LMD (all 68 points) and mouth LMD of landmarks ``a`` against ``b``.

    ``size_a`` / ``size_b``: (width, height) of the frames each set was detected in; both are
    scaled to the :data:`REFERENCE_SIZE` frame first. Returns ``lmd`` and ``mouth_lmd`` (means over
    frames with a face in both, pixels of the reference frame), ``per_frame`` / ``mouth_per_frame``
    arrays ``[N]`` and ``frames_used``."""
    ra, rb = to_reference(a, *size_a), to_reference(b, *size_b)
    full = landmark_distance(ra, rb, None, align)
    mouth = landmark_distance(ra, rb, MOUTH, align)
    return {
        "lmd": nanmean(full),
        "mouth_lmd": nanmean(mouth),
        "per_frame": full,
        "mouth_per_frame": mouth,
        "frames_used": int(np.isfinite(full).sum()),
        "frames_compared": int(full.shape[0]),
    }


# ------------------------------------------------------------------------------------ eyes


def eye_aspect_ratio(landmarks) -> np.ndarray:
    """Eye aspect ratio per frame ``[N]``, the mean of both eyes: for eye points p1..p6 (corner,
    two upper lid, corner, two lower lid), ``(|p2-p6| + |p3-p5|) / (2 |p1-p4|)`` (Soukupova and
    Cech 2016). About 0.25-0.35 open, below ~0.15 closed; NaN without a face."""
    lm = _check_landmarks(landmarks, "landmarks")
    out = []
    for sl in (LEFT_EYE, RIGHT_EYE):
        p = lm[:, sl]
        vert = np.linalg.norm(p[:, 1] - p[:, 5], axis=-1) + np.linalg.norm(p[:, 2] - p[:, 4], axis=-1)
        horiz = 2.0 * np.linalg.norm(p[:, 0] - p[:, 3], axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append(np.where(horiz > 0, vert / horiz, np.nan))
    return (out[0] + out[1]) / 2.0


def mouth_opening(landmarks) -> np.ndarray:
    """Inner-lip gap over mouth width per frame ``[N]`` (0 closed, ~0.3-0.6 wide open); NaN
    without a face."""
    lm = _check_landmarks(landmarks, "landmarks")
    gap = np.linalg.norm(lm[:, list(INNER_LIP_TOP)] - lm[:, list(INNER_LIP_BOTTOM)], axis=-1).mean(-1)
    width = np.linalg.norm(lm[:, MOUTH_CORNERS[0]] - lm[:, MOUTH_CORNERS[1]], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(width > 0, gap / width, np.nan)


@dataclass(frozen=True)
class Blink:
    """One blink: frames ``start`` .. ``end`` (inclusive) below the threshold, ``apex`` the frame
    of lowest EAR."""

    start: int
    end: int
    apex: int


def detect_blinks(ear, ratio: float = BLINK_RATIO, min_frames: int = 1) -> list[Blink]:
    """Blinks in an EAR series ``[N]``: runs of at least ``min_frames`` frames whose EAR is below
    ``ratio`` x the median EAR of the clip (frames without a face end a run). The threshold is
    relative so that it works for any eye shape, including generated ones."""
    e = np.asarray(ear, dtype=np.float64).reshape(-1)
    if not 0 < ratio < 1:
        raise InputError(f"blink ratio must be between 0 and 1, got {ratio!r}")
    ok = np.isfinite(e)
    if not ok.any():
        return []
    closed = ok & (e < ratio * float(np.median(e[ok])))
    blinks, i = [], 0
    while i < e.shape[0]:
        if not closed[i]:
            i += 1
            continue
        j = i
        while j + 1 < e.shape[0] and closed[j + 1]:
            j += 1
        if j - i + 1 >= min_frames:
            blinks.append(Blink(i, j, i + int(np.argmin(e[i : j + 1]))))
        i = j + 1
    return blinks


def blink_rate(blinks: list[Blink], num_frames: int, fps: float) -> float:
    """Blinks per minute."""
    if num_frames <= 0 or fps <= 0:
        raise InputError(f"blink rate needs frames > 0 and fps > 0, got {num_frames}, {fps}")
    return len(blinks) * 60.0 * fps / num_frames


def blink_agreement(reference: list[Blink], test: list[Blink], tolerance: int = BLINK_TOLERANCE) -> dict:
    """How well ``test`` blinks match ``reference`` blinks in time: pairs whose apexes are at
    most ``tolerance`` frames apart are matched (closest first, each blink used once).

    Returns ``precision`` (matched / test blinks), ``recall`` (matched / reference blinks), ``f1``
    (None where undefined: no blinks on that side), ``matched`` and ``mean_offset`` (frames, test
    minus reference apex, over matched pairs; None without a match)."""
    pairs = sorted(
        ((abs(t.apex - r.apex), i, j) for i, r in enumerate(reference) for j, t in enumerate(test)),
        key=lambda p: p[0],
    )
    used_r, used_t, offsets = set(), set(), []
    for d, i, j in pairs:
        if d <= tolerance and i not in used_r and j not in used_t:
            used_r.add(i)
            used_t.add(j)
            offsets.append(test[j].apex - reference[i].apex)
    m = len(offsets)
    precision = m / len(test) if test else None
    recall = m / len(reference) if reference else None
    if not test and not reference:
        f1 = None
    elif not test or not reference or m == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "matched": m,
        "reference_blinks": len(reference),
        "test_blinks": len(test),
        "mean_offset": float(np.mean(offsets)) if offsets else None,
    }


# ------------------------------------------------------------------------------------ gaze


def _pupil(gray: np.ndarray, eye: np.ndarray) -> np.ndarray | None:
    """Centroid (x, y) of the darkest fifth of the pixels inside one eye's landmark polygon."""
    import cv2

    x0, y0 = np.floor(eye.min(0)).astype(int)
    x1, y1 = np.ceil(eye.max(0)).astype(int) + 1
    h, w = gray.shape
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 3 or y1 - y0 < 2:
        return None
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [np.round(eye - [x0, y0]).astype(np.int32)], 1)
    ys, xs = np.nonzero(mask)
    if ys.size < 4:
        return None
    vals = gray[y0:y1, x0:x1][ys, xs].astype(np.float64)
    dark = vals <= np.percentile(vals, 20)
    return np.array([xs[dark].mean() + x0, ys[dark].mean() + y0])


def gaze_proxy(frames, landmarks, ear_ratio: float = BLINK_RATIO) -> np.ndarray:
    """An iris-free gaze estimate per frame ``[N,2]``: where the darkest pixels of each eye sit
    between its corners, averaged over both eyes. Column 0: along the corner-to-corner axis in
    half eye widths (-1 at the image-left corner, +1 at the image-right); column 1: across it
    (positive downwards). NaN without a face or while the eyes are closed (EAR below
    ``ear_ratio`` x median). A proxy: it follows the dark iris, not a calibrated angle."""
    import cv2

    frames = _check_frames(frames, "frames")
    lm = _check_landmarks(landmarks, "landmarks")
    if lm.shape[0] != frames.shape[0]:
        raise InputError(f"gaze: {frames.shape[0]} frames but {lm.shape[0]} landmark sets")
    ear = eye_aspect_ratio(lm)
    ok = np.isfinite(ear)
    thr = ear_ratio * float(np.median(ear[ok])) if ok.any() else np.inf
    out = np.full((lm.shape[0], 2), np.nan)
    for i in range(lm.shape[0]):
        if not (np.isfinite(ear[i]) and ear[i] >= thr):
            continue
        gray = cv2.cvtColor(np.ascontiguousarray(frames[i]), cv2.COLOR_RGB2GRAY)
        vals = []
        for sl in (LEFT_EYE, RIGHT_EYE):
            eye = lm[i, sl]
            p = _pupil(gray, eye)
            if p is None:
                continue
            c0, c1 = eye[0], eye[3]
            axis = c1 - c0
            half = np.linalg.norm(axis) / 2.0
            if half <= 0:
                continue
            u = axis / (2.0 * half)
            rel = p - (c0 + c1) / 2.0
            vals.append([rel @ u / half, (rel @ np.array([-u[1], u[0]])) / half])
        if vals:
            out[i] = np.mean(vals, 0)
    return out


def gaze_agreement(reference, test) -> dict:
    """Gaze proxies ``[N,2]`` of two clips (first min(N) frames): ``mean_abs_difference`` per
    axis (half eye widths), ``correlation`` of the horizontal proxy (None with < 3 frames or no
    variation) and ``frames_used``."""
    a, b = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    n = min(a.shape[0], b.shape[0])
    a, b = a[:n], b[:n]
    ok = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    if not ok.any():
        return {"mean_abs_difference": None, "correlation": None, "frames_used": 0}
    diff = np.abs(a[ok] - b[ok]).mean(0)
    corr = None
    if ok.sum() >= 3 and a[ok, 0].std() > 0 and b[ok, 0].std() > 0:
        corr = float(np.corrcoef(a[ok, 0], b[ok, 0])[0, 1])
    return {"mean_abs_difference": [float(diff[0]), float(diff[1])], "correlation": corr, "frames_used": int(ok.sum())}
