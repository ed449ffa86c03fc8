"""Head-pose error between two clips, from landmarks with the project's one estimator
(:func:`pdfgc_core.faces.estimate_head_poses`: generic 3D face + ``cv2.solvePnP``)."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..faces.headpose import estimate_head_poses, euler_to_rotation
from .landmarks import nanmean

ANGLES = ("pitch", "yaw", "roll")


def head_poses(landmarks, width: int, height: int) -> np.ndarray:
    """Per-frame pose ``[N,6]`` = (pitch, yaw, roll degrees, tx, ty, tz) from landmarks
    ``[N,68,2]`` detected in ``width`` x ``height`` frames; NaN rows where there is no face."""
    return estimate_head_poses(landmarks, width, height)


def rotation_angle(a, b) -> np.ndarray:
    """Angle in degrees of the rotation taking pose ``a`` to pose ``b`` (Euler angles ``[N,3]``
    degrees each): the geodesic distance, independent of the angle convention; NaN where either
    is NaN."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    out = np.full(a.shape[0], np.nan)
    for i in range(a.shape[0]):
        if np.isfinite(a[i]).all() and np.isfinite(b[i]).all():
            r = euler_to_rotation(a[i]).T @ euler_to_rotation(b[i])
            # ||R - I||_F = 2 sqrt(2) sin(theta / 2): exact near 0, where arccos of the trace is not
            out[i] = np.degrees(2.0 * np.arcsin(min(1.0, np.linalg.norm(r - np.eye(3)) / np.sqrt(8.0))))
    return out


def pose_error(reference, test) -> dict:
    """Pose error of ``test`` against ``reference`` (each ``[N,6]`` or ``[N,3]`` Euler degrees from
    :func:`head_poses`; the first min(N) frames).

    Returns ``mean_deg`` (mean geodesic rotation error, degrees), ``mae_deg`` {pitch, yaw, roll}
    (mean absolute angle differences, degrees), ``mse_rad2`` (mean over frames and the three angles
    of the squared difference in radians, the form of the paper's "pose MSE" but from a different
    estimator), ``per_frame`` geodesic error ``[N]`` and ``frames_used``."""
    a, b = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] < 3 or b.shape[1] < 3:
        raise InputError(f"pose error: expected poses [N,6] or [N,3], got {a.shape} and {b.shape}")
    n = min(a.shape[0], b.shape[0])
    a, b = a[:n, :3], b[:n, :3]
    geo = rotation_angle(a, b)
    ok = np.isfinite(geo)
    diff = (b - a + 180.0) % 360.0 - 180.0  # wrapped to [-180, 180)
    mae = {k: nanmean(np.abs(diff[ok, i])) for i, k in enumerate(ANGLES)}
    return {
        "mean_deg": nanmean(geo),
        "mae_deg": mae,
        "mse_rad2": float(np.mean(np.radians(diff[ok]) ** 2)) if ok.any() else float("nan"),
        "per_frame": geo,
        "frames_used": int(ok.sum()),
        "frames_compared": int(n),
    }
