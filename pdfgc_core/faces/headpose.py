"""Head pose from 68-point landmarks: a generic 3D face, ``cv2.solvePnP``, Euler angles.

The one landmark-based head-pose estimator of the project (pose control, training pseudo-labels
and metrics all use it). It needs no network weights: six landmarks (nose tip, chin, outer eye
corners, mouth corners) of the dlib / iBUG 68-point layout are matched to the same six points of
an average 3D face, with a pinhole camera whose focal length is the image width and whose centre
is the image centre.

Conventions (camera coordinates: x to the image right, y down, z away from the camera):

- ``angles`` = ``(pitch, yaw, roll)`` in degrees, zero for a face looking straight into the camera,
  with ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` taking face coordinates to camera coordinates.
  A horizontally mirrored picture changes the sign of yaw and roll (and of the x translation).
- ``translation`` = ``(tx, ty, tz)`` of the nose tip in the 3D model's units (about millimetres
  for an average adult face).

This is an estimate from a generic face (no identity, no expression), good to a few degrees for
moderate poses; it is the offline substitute for the 3D face reconstruction the paper used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

POSE_LANDMARKS = (30, 8, 36, 45, 48, 54)
"""Indices in the 68-point layout: nose tip, chin, outer corner of the image-left eye, outer corner
of the image-right eye, image-left and image-right mouth corners."""

FACE_MODEL_3D = np.array(
    [
        [0.0, 0.0, 0.0],  # nose tip
        [0.0, 330.0, 65.0],  # chin
        [-225.0, -170.0, 135.0],  # image-left eye, outer corner
        [225.0, -170.0, 135.0],  # image-right eye, outer corner
        [-150.0, 150.0, 125.0],  # image-left mouth corner
        [150.0, 150.0, 125.0],  # image-right mouth corner
    ],
    dtype=np.float64,
)
"""The six points of an average face, camera-aligned (x right, y down, z away from the viewer), in
model units (~0.1 mm scale of the widely used generic head model; only ratios matter for angles)."""


@dataclass(frozen=True)
class HeadPose:
    """One face's pose: ``angles`` (pitch, yaw, roll) degrees, ``translation`` (tx, ty, tz) model
    units, ``reprojection_error`` mean pixel distance of the six points after the fit."""

    angles: np.ndarray
    translation: np.ndarray
    reprojection_error: float


def camera_matrix(width: int, height: int) -> np.ndarray:
    """Pinhole intrinsics [3,3]: focal length = width px, principal point = image centre."""
    if not (width > 0 and height > 0):
        raise InputError(f"image size must be positive, got {width}x{height}")
    return np.array([[width, 0, width / 2.0], [0, width, height / 2.0], [0, 0, 1]], dtype=np.float64)


def rotation_to_euler(r: np.ndarray) -> np.ndarray:
    """Rotation matrix [3,3] -> (pitch, yaw, roll) degrees for ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``."""
    pitch = np.arctan2(r[2, 1], r[2, 2])
    yaw = np.arcsin(np.clip(-r[2, 0], -1.0, 1.0))
    roll = np.arctan2(r[1, 0], r[0, 0])
    return np.degrees(np.array([pitch, yaw, roll]))


def euler_to_rotation(angles_deg) -> np.ndarray:
    """(pitch, yaw, roll) degrees -> rotation matrix [3,3], the inverse of :func:`rotation_to_euler`."""
    p, y, r = np.radians(np.asarray(angles_deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def project(angles_deg, translation, width: int, height: int) -> np.ndarray:
    """The six model points seen at a pose: image points [6,2] (pixels). Used to test the estimator."""
    import cv2

    rvec, _ = cv2.Rodrigues(euler_to_rotation(angles_deg))
    pts, _ = cv2.projectPoints(
        FACE_MODEL_3D, rvec, np.asarray(translation, np.float64), camera_matrix(width, height), np.zeros(4)
    )
    return pts.reshape(-1, 2)


def _image_points(landmarks) -> np.ndarray:
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape == (68, 2):
        lm = lm[list(POSE_LANDMARKS)]
    if lm.shape != (len(POSE_LANDMARKS), 2):
        raise InputError(f"landmarks: expected [68,2] (iBUG layout) or [6,2] pose points, got {lm.shape}")
    if not np.isfinite(lm).all():
        raise InputError("landmarks: contain NaN or infinite values")
    return lm


def estimate_head_pose(landmarks, width: int, height: int) -> HeadPose:
    """Head pose of one face from its landmarks ([68,2] pixels, x right / y down, or the six
    :data:`POSE_LANDMARKS` points [6,2]) in an image of ``width`` x ``height`` pixels."""
    import cv2

    pts = _image_points(landmarks)
    cam = camera_matrix(width, height)
    # start from a frontal face at a distance where the eye corners are as far apart as observed
    eye_px = max(float(np.linalg.norm(pts[3] - pts[2])), 1e-3)
    z0 = cam[0, 0] * 450.0 / eye_px
    rvec0 = np.zeros((3, 1))
    tvec0 = np.array([[(pts[0, 0] - cam[0, 2]) * z0 / cam[0, 0]], [(pts[0, 1] - cam[1, 2]) * z0 / cam[1, 1]], [z0]])
    ok, rvec, tvec = cv2.solvePnP(
        FACE_MODEL_3D, pts, cam, np.zeros(4), rvec0, tvec0, useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE
    )
    if not ok:
        raise InputError("head pose: solvePnP found no pose for these landmarks (degenerate points?)")
    r, _ = cv2.Rodrigues(rvec)
    proj, _ = cv2.projectPoints(FACE_MODEL_3D, rvec, tvec, cam, np.zeros(4))
    err = float(np.linalg.norm(proj.reshape(-1, 2) - pts, axis=1).mean())
    return HeadPose(rotation_to_euler(r), tvec.reshape(3).copy(), err)


def estimate_head_poses(landmarks_seq, width: int, height: int) -> np.ndarray:
    """Per-frame pose [N,6] = (pitch, yaw, roll degrees, tx, ty, tz) from landmarks [N,68,2]; a frame
    whose landmarks are NaN (no face) gives a row of NaN."""
    seq = np.asarray(landmarks_seq, dtype=np.float64)
    if seq.ndim != 3 or seq.shape[2] != 2:
        raise InputError(f"landmarks: expected [N,68,2], got {seq.shape}")
    out = np.full((seq.shape[0], 6), np.nan)
    for i, lm in enumerate(seq):
        if np.isfinite(lm).all():
            p = estimate_head_pose(lm, width, height)
            out[i, :3], out[i, 3:] = p.angles, p.translation
    return out
