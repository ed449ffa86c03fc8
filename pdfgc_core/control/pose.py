"""Head pose as angles: pose controls <-> the 6-d pose factor, keyframes, calibration.

**Pose controls** are 6 numbers per frame, ``(pitch, yaw, roll, x, y, z)`` (:data:`AXES`):

- pitch, yaw, roll in degrees, with the conventions of :mod:`pdfgc_core.faces.headpose` (camera
  axes x right, y down, z away from the camera; ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``, zero for a
  face looking into the camera; a mirrored picture flips the signs of yaw and roll);
- x, y: the nose tip's offset from the picture centre, in picture widths (x right, y down);
- z: ``ln(Z_REFERENCE / distance)``, 0 for a face whose outer eye corners span
  :data:`REFERENCE_EYE_SPAN` of the picture width (the PD-FGC crop framing), positive when nearer.

:func:`controls_from_head_pose` turns the landmark estimator's output into controls.

**Pose map.** The paper trains the pose head to regress "three Euler angles and a 3-d translation"
from a 3D face reconstruction, but does not state the order, sign or scale of the 6 values. The
:class:`PoseMap` is an affine map ``factor = matrix @ v + bias`` with ``v = (pitch, yaw, roll in
radians, x, y, z)``. :func:`assumed_pose_map` is the paper's reading, the identity: ``[pitch, yaw,
roll, tx, ty, tz]`` with angles in radians. **It is an assumption until calibrated against the
official checkpoint**: :func:`fit_pose_map` fits the map from frames whose pose was measured with
landmarks and whose pose factor was encoded by the model (``python -m pdfgc_core calibrate-pose``),
and :func:`mirror_test` checks it (a mirrored video must flip yaw, roll and x). The readout (factor
-> controls) is the least-squares inverse of the same map, so angles -> factor -> readout round-trips.

**Keyframes** (:func:`parse_keyframes`): ``"0: 0,0,0; 2.5s: 10,-5,0 ease; 100: 0,0,0,0.05,0,0"``.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, MediaError
from ..factors import DEFAULT_FPS, FACTOR_DIMS, Factor

AXES = ("pitch", "yaw", "roll", "x", "y", "z")
UNITS = ("deg", "deg", "deg", "picture widths", "picture widths", "ln(reference distance / distance)")
ANGLE_AXES = 3
MIRROR_SIGNS = np.array([1.0, -1.0, -1.0, -1.0, 1.0, 1.0])
"""How each control changes when the picture is mirrored left-right: yaw, roll and x flip."""
REFERENCE_EYE_SPAN = 0.4
"""Outer-eye-corner span, as a fraction of the picture width, at which z = 0 (PD-FGC crops: ~0.4)."""

MAP_FORMAT = "pdfgc-pose-map"
MAP_VERSION = 1
ASSUMPTION = (
    "assumed mapping (paper's reading, not calibrated): pose factor = [pitch, yaw, roll, x, y, z], angles in "
    "radians; order, signs and scale are unverified until calibrated against the official checkpoint "
    "(python -m pdfgc_core calibrate-pose)"
)
CURVES = ("linear", "ease", "ease_in", "ease_out", "step")
"""Keyframe interpolation: linear; ease = smoothstep (3s^2 - 2s^3); ease_in = s^2; ease_out =
1 - (1 - s)^2; step = hold the previous key until the next."""


def _z_reference() -> float:
    from ..faces.headpose import FACE_MODEL_3D

    span = float(np.linalg.norm(FACE_MODEL_3D[3] - FACE_MODEL_3D[2]))  # outer eye corners, model units
    return span / REFERENCE_EYE_SPAN  # distance (in focal lengths = picture widths) giving that span


def controls_from_head_pose(estimates) -> np.ndarray:
    """Pose controls [N,6] from :func:`pdfgc_core.faces.headpose.estimate_head_poses` output [N,6]
    (pitch, yaw, roll degrees, tx, ty, tz model units; focal length = picture width). NaN rows
    (no face) stay NaN."""
    e = np.asarray(estimates, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] != 6:
        raise InputError(f"head-pose estimates: expected [frames, 6], got {e.shape}")
    out = e.copy()
    tz = e[:, 5]
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:, 3] = e[:, 3] / tz
        out[:, 4] = e[:, 4] / tz
        out[:, 5] = np.log(_z_reference() / tz)
    return out


def _check_controls(controls, what: str = "pose controls") -> np.ndarray:
    c = np.asarray(controls, dtype=np.float64)
    if c.ndim == 1:
        c = c[None]
    if c.ndim != 2 or c.shape[1] != 6 or c.shape[0] < 1:
        raise InputError(f"{what}: expected [frames, 6] = (pitch, yaw, roll, x, y, z), got shape {c.shape}")
    if not np.isfinite(c).all():
        raise InputError(f"{what}: contain NaN or infinite values")
    return c


def _linear(controls: np.ndarray) -> np.ndarray:
    v = controls.copy()
    v[:, :ANGLE_AXES] = np.radians(v[:, :ANGLE_AXES])
    return v


def _controls(v: np.ndarray) -> np.ndarray:
    c = v.copy()
    c[:, :ANGLE_AXES] = np.degrees(c[:, :ANGLE_AXES])
    return c


# --------------------------------------------------------------------------------------- the map


@dataclass(frozen=True, eq=False)
class PoseMap:
    """``factor = matrix @ v + bias`` per frame, ``v = (pitch, yaw, roll in radians, x, y, z)``.

    ``matrix`` float64 [6,6], ``bias`` [6]. ``calibrated``: False for :func:`assumed_pose_map`.
    ``info``: how the map was made (fit statistics, source), JSON-ready."""

    matrix: np.ndarray
    bias: np.ndarray
    calibrated: bool = False
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        m = np.asarray(self.matrix, dtype=np.float64)
        b = np.asarray(self.bias, dtype=np.float64).reshape(-1)
        if m.shape != (6, 6) or b.shape != (6,) or not (np.isfinite(m).all() and np.isfinite(b).all()):
            raise InputError(f"pose map: expected a finite 6x6 matrix and 6 biases, got {m.shape} and {b.shape}")
        object.__setattr__(self, "matrix", m)
        object.__setattr__(self, "bias", b)
        object.__setattr__(self, "info", dict(self.info))

    def to_factor(self, controls, fps: float = DEFAULT_FPS) -> Factor:
        """Pose controls [T,6] (or one [6]) -> a pose factor [T,6] at ``fps``."""
        v = _linear(_check_controls(controls))
        return Factor("pose", (v @ self.matrix.T + self.bias).astype(np.float32), fps)

    def readout(self, pose: Factor) -> np.ndarray:
        """A pose factor -> pose controls [T,6] (float64): the least-squares inverse of the map."""
        if not isinstance(pose, Factor) or pose.kind != "pose":
            raise InputError(f"pose readout: expected a pose factor, got {pose!r}")
        f = pose.values.double().numpy()
        return _controls((f - self.bias) @ np.linalg.pinv(self.matrix).T)

    def describe(self) -> str:
        """One paragraph: what this map is, and the fit statistics of a calibrated one."""
        if not self.calibrated:
            return ASSUMPTION
        r2 = self.info.get("r2", {})
        mirror = self.info.get("mirror", {})
        parts = [f"calibrated pose map from {self.info.get('source', '?')} ({self.info.get('frames', '?')} frames)"]
        if r2:
            parts.append("R^2 " + ", ".join(f"{a} {r2[a]:.2f}" for a in AXES if r2.get(a) is not None))
        if mirror:
            ok = [a for a in AXES if mirror.get(a, {}).get("ok")]
            parts.append(f"mirror test passed for {', '.join(ok) or 'no axis'}")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {
            "format": MAP_FORMAT,
            "version": MAP_VERSION,
            "axes": list(AXES),
            "units": list(UNITS),
            "equation": "factor = matrix @ [pitch, yaw, roll (radians), x, y, z] + bias",
            "calibrated": bool(self.calibrated),
            "matrix": self.matrix.tolist(),
            "bias": self.bias.tolist(),
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "pose map") -> PoseMap:
        if not isinstance(d, dict) or d.get("format") != MAP_FORMAT:
            raise InputError(f"{where}: not a PD-FGC pose map (no format={MAP_FORMAT!r}); use a calibrate-pose file")
        if not isinstance(d.get("version"), int) or d["version"] > MAP_VERSION or d["version"] < 1:
            raise InputError(
                f"{where}: pose map version {d.get('version')!r} is not one this version reads (1..{MAP_VERSION})"
            )
        try:
            return cls(
                np.array(d["matrix"], float), np.array(d["bias"], float), bool(d["calibrated"]), d.get("info", {})
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{where}: malformed pose map ({e}); write it again with calibrate-pose") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the map as JSON (atomically)."""
        from ..media import atomic_write

        path = Path(path)
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> PoseMap:
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MediaError(f"pose map file {path} does not exist; check the path") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise MediaError(f"pose map file {path} is not readable JSON ({e}); write it again") from None
        return cls.from_dict(d, str(path))


def assumed_pose_map() -> PoseMap:
    """The uncalibrated default: factor = (pitch, yaw, roll in radians, x, y, z), an ASSUMPTION."""
    return PoseMap(np.eye(6), np.zeros(6), calibrated=False, info={"note": ASSUMPTION})


def as_pose_map(pose_map) -> PoseMap:
    """None -> :func:`assumed_pose_map`; a PoseMap; or a path to a pose map file."""
    if pose_map is None:
        return assumed_pose_map()
    if isinstance(pose_map, PoseMap):
        return pose_map
    if isinstance(pose_map, (str, os.PathLike)):
        return PoseMap.load(pose_map)
    raise InputError(f"pose map: expected a PoseMap or a file path, got {type(pose_map).__name__}")


# ------------------------------------------------------------------------------------ calibration


def _r2(target: np.ndarray, pred: np.ndarray) -> list[float | None]:
    out = []
    for k in range(target.shape[1]):
        tot = float(((target[:, k] - target[:, k].mean()) ** 2).sum())
        out.append(
            None
            if tot <= 1e-12 * max(1.0, float((target[:, k] ** 2).sum()))
            else 1.0 - float(((target[:, k] - pred[:, k]) ** 2).sum()) / tot
        )
    return out


def fit_pose_map(controls, factors, *, ridge: float = 1e-6, source: str = "") -> PoseMap:
    """Least-squares affine map from pose controls [N,6] (measured) to pose factor values [N,6]
    (encoded from the same frames), with a small ridge on standardised controls (an axis that does
    not vary in the data gets a zero column and is listed as ``unobserved``).

    ``info``: ``r2`` per control axis (the readout of the factors against the measurements),
    ``r2_factor`` per factor dim (the map's prediction of the factors), ``frames``, ``source``."""
    c = _check_controls(controls, "calibration controls")
    f = np.asarray(factors.values.double().numpy() if isinstance(factors, Factor) else factors, dtype=np.float64)
    if f.shape != (c.shape[0], FACTOR_DIMS["pose"]) or not np.isfinite(f).all():
        raise InputError(f"calibration factors: expected finite [{c.shape[0]}, 6], got {f.shape}")
    if c.shape[0] < 8:
        raise InputError(f"calibration needs at least 8 frames with a face, got {c.shape[0]}; use a longer video")
    v = _linear(c)
    mu, sd = v.mean(0), v.std(0)
    observed = sd > 1e-9 * np.maximum(1.0, np.abs(mu))
    z = np.where(observed, (v - mu) / np.where(observed, sd, 1.0), 0.0)
    fm = f.mean(0)
    a = z.T @ z + ridge * len(z) * np.eye(6)
    coef = np.linalg.solve(a, z.T @ (f - fm))  # [6 controls, 6 factor dims] on standardised controls
    matrix = (np.where(observed, 1.0 / np.where(observed, sd, 1.0), 0.0)[:, None] * coef).T
    bias = fm - matrix @ mu
    pm = PoseMap(matrix, bias, calibrated=True)
    r2 = _r2(c, pm.readout(Factor("pose", f.astype(np.float32))))
    info = {
        "source": source,
        "frames": int(c.shape[0]),
        "r2": {a_: r for a_, r in zip(AXES, r2)},
        "r2_factor": _r2(f, v @ matrix.T + bias),
        "unobserved": [a_ for a_, o in zip(AXES, observed) if not o],
        "ridge": ridge,
    }
    return PoseMap(matrix, bias, calibrated=True, info=info)


def mirror_test(pose_map: PoseMap, pose: Factor, mirrored: Factor) -> dict:
    """Reads both factors (the same frames, and the frames mirrored left-right) and checks that
    yaw, roll and x change sign while pitch, y and z do not. Per axis: ``expected`` ("flips" /
    "same"), ``slope`` of the mirrored readout against the original one (through the origin after
    removing the sequence means: -1 / +1 ideally), ``corr`` of the expected-sign comparison of the
    varying parts, and ``ok`` (corr > 0.5, or for an axis that does not vary, equal means)."""
    a, b = pose_map.readout(pose), pose_map.readout(mirrored)
    if a.shape != b.shape:
        raise InputError(f"mirror test: the factors have {len(a)} and {len(b)} frames; give the same frames")
    out = {}
    for k, axis in enumerate(AXES):
        s = MIRROR_SIGNS[k]
        da, db = a[:, k] - a[:, k].mean(), b[:, k] - b[:, k].mean()
        va = float((da**2).sum())
        slope = float((da * db).sum() / va) if va > 1e-12 else None
        corr = float(np.corrcoef(s * da, db)[0, 1]) if va > 1e-12 and float((db**2).sum()) > 1e-12 else None
        scale = max(float(np.abs(a[:, k]).max()), 1e-6)
        mean_ok = abs(b[:, k].mean() - s * a[:, k].mean()) <= 0.25 * scale
        ok = bool(corr > 0.5) if corr is not None else bool(mean_ok)
        out[axis] = {"expected": "flips" if s < 0 else "same", "slope": slope, "corr": corr, "ok": ok}
    return out


# --------------------------------------------------------------------------------------- keyframes


@dataclass(frozen=True)
class Keyframe:
    """Pose controls ``values`` (6) at output frame ``frame``; ``curve`` shapes the segment that
    arrives at this key (None: the default curve)."""

    frame: int
    values: tuple
    curve: str | None = None


_TIME = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|f)?\s*$", re.IGNORECASE)


def parse_keyframes(text: str, fps: float = DEFAULT_FPS) -> list[Keyframe]:
    """Parses ``"TIME: pitch, yaw, roll[, x, y, z] [curve]; ..."`` into keyframes sorted by frame.

    Entries are separated by ``;`` or new lines; ``#`` starts a comment. TIME is a frame number
    (``12`` or ``12f``) or seconds (``2.5s``, rounded to the nearest frame at ``fps``). Three values
    leave x, y, z at 0. ``curve`` (one of :data:`CURVES`) shapes the segment from the previous key
    to this one. Two keys on the same frame are an error."""
    if not isinstance(text, str):
        raise InputError(f"keyframes: expected text, got {type(text).__name__}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise InputError(f"keyframes: fps is {fps!r}; give a positive frame rate")
    keys: list[Keyframe] = []
    entries = [e.split("#", 1)[0].strip() for line in text.splitlines() for e in line.split(";")]
    for n, entry in enumerate(e for e in entries if e):
        where = f"keyframe {n + 1} ({entry!r})"
        if ":" not in entry:
            raise InputError(f"{where}: expected 'TIME: pitch, yaw, roll', e.g. '2.5s: 10, -5, 0'")
        t_text, rest = entry.split(":", 1)
        m = _TIME.match(t_text)
        if not m:
            raise InputError(f"{where}: time {t_text.strip()!r} is not a frame number (12) or seconds (2.5s)")
        if (m.group(2) or "f").lower() == "s":
            frame = int(math.floor(float(m.group(1)) * fps + 0.5))
        elif "." in m.group(1):
            raise InputError(f"{where}: frame {m.group(1)} is not a whole number; write seconds with an s (2.5s)")
        else:
            frame = int(m.group(1))
        words = rest.replace(",", " ").split()
        curve = None
        if words and words[-1].lower() in CURVES:
            curve = words.pop().lower()
        try:
            values = [float(w) for w in words]
        except ValueError:
            raise InputError(
                f"{where}: values {rest.strip()!r} are not numbers (curve names: {', '.join(CURVES)})"
            ) from None
        if len(values) not in (3, 6) or not all(math.isfinite(v) for v in values):
            raise InputError(f"{where}: give 3 (pitch, yaw, roll) or 6 (+ x, y, z) finite numbers, got {len(values)}")
        keys.append(Keyframe(frame, tuple(values + [0.0] * (6 - len(values))), curve))
    if not keys:
        raise InputError("keyframes: none given; write e.g. '0: 0,0,0; 2s: 10,-5,0'")
    keys.sort(key=lambda k: k.frame)
    for a, b in zip(keys, keys[1:]):
        if a.frame == b.frame:
            raise InputError(
                f"keyframes: two keys fall on frame {a.frame} (seconds are rounded to frames at {fps:g} fps)"
            )
    return keys


def _shape(s: np.ndarray, curve: str) -> np.ndarray:
    if curve == "linear":
        return s
    if curve == "ease":
        return s * s * (3 - 2 * s)
    if curve == "ease_in":
        return s * s
    if curve == "ease_out":
        return 1 - (1 - s) ** 2
    if curve == "step":
        return np.zeros_like(s)
    raise InputError(f"keyframe curve {curve!r} is not one of {', '.join(CURVES)}")


def keyframe_controls(keys: list[Keyframe], length: int | None = None, curve: str = "linear") -> np.ndarray:
    """Pose controls [length, 6] (float64) sampled from the keys: the first key's values before it,
    the last key's after it, each segment shaped by its key's curve (default ``curve``). Every
    key frame inside the range holds exactly its key's values. ``length`` default: last key + 1."""
    if not keys:
        raise InputError("keyframes: none given")
    _shape(np.zeros(1), curve)  # checks the name
    n = keys[-1].frame + 1 if length is None else int(length)
    if n < 1:
        raise InputError(f"keyframes: length {length!r} must be at least 1 frame")
    t = np.arange(n, dtype=np.float64)
    vals = np.array([k.values for k in keys], dtype=np.float64)
    out = np.repeat(vals[:1], n, 0)
    for a, b, (ka, kb) in zip(vals, vals[1:], zip(keys, keys[1:])):
        inside = (t > ka.frame) & (t < kb.frame)
        s = _shape((t[inside] - ka.frame) / (kb.frame - ka.frame), kb.curve or curve)
        out[inside] = a + (b - a) * s[:, None]
    out[t >= keys[-1].frame] = vals[-1]
    for k, v in zip(keys, vals):
        if k.frame < n:
            out[k.frame] = v
    return out


# ------------------------------------------------------------------------------- from pictures


def estimate_controls(frames, backend="dlib", *, name: str = "frames", progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Pose controls of the largest face in each uint8 RGB frame [N,H,W,3] (68 landmarks +
    :func:`pdfgc_core.faces.headpose.estimate_head_poses`, no network): ``(controls [N,6] float64,
    detected [N] bool)``. Frames without a face get values interpolated linearly from the nearest
    frames with one (held at the ends); none at all is a :class:`FaceNotFoundError`.
    ``progress(done, total)`` after each frame."""
    from ..errors import FaceNotFoundError
    from ..faces import as_rgb_u8, get_detector, select_face
    from ..faces.headpose import estimate_head_poses

    frames = as_rgb_u8(frames, name)
    det = get_detector(backend)
    if det.pre_aligned:
        raise InputError(f"{name}: head pose needs landmarks; choose the dlib or face_alignment backend")
    n, h, w, _ = frames.shape
    landmarks = np.full((n, 68, 2), np.nan)
    for t in range(n):
        face = select_face(det.detect(frames[t]), -1, name=name, frame=t)
        if face is not None:
            landmarks[t] = face.landmarks
        if progress is not None:
            progress(t + 1, n)
    c = controls_from_head_pose(estimate_head_poses(landmarks, w, h))
    detected = np.isfinite(c).all(1)
    if not detected.any():
        raise FaceNotFoundError(
            f"{name}: no face found in {'the picture' if n == 1 else f'any of the {n} frames'} (landmark backend "
            f"{det.name}); use pictures with a visible face at least about 80 pixels wide"
        )
    known = np.flatnonzero(detected)
    for k in range(6):
        c[:, k] = np.interp(np.arange(n), known, c[known, k])
    return c, detected


def calibrate_pose_map(
    engine, frames, backend="dlib", *, crop: str = "official", source: str = "", progress=None
) -> PoseMap:
    """Fits a :class:`PoseMap` on uint8 RGB frames [N,H,W,3] of a talking head (faces framed as the
    pose encoder expects them, e.g. PD-FGC crops or the output of Align Faces): their pose controls
    measured with landmarks (:func:`estimate_controls`), their pose factors encoded by ``engine``
    with ``crop``, the fit (:func:`fit_pose_map`) on the frames with a face, and the
    :func:`mirror_test` on the same frames mirrored left-right (stored in ``info["mirror"]``)."""
    from .. import images

    frames = np.asarray(frames)
    controls, detected = estimate_controls(frames, backend, name=source or "calibration video", progress=progress)
    if int(detected.sum()) < 8:
        raise InputError(
            f"{source or 'calibration video'}: only {int(detected.sum())} frame(s) with a face; calibration needs "
            "at least 8 (a few seconds of a moving head is better)"
        )

    def encode(fr: np.ndarray) -> np.ndarray:
        out = []
        for s in range(0, len(fr), 64):
            x = images.prepare_batch(fr[s : s + 64], crop=crop)
            out.append(engine.encode_drivers(x, heads=("pose",))["pose"].values.double().numpy())
        return np.concatenate(out)

    pose = encode(frames)[detected]
    pm = fit_pose_map(controls[detected], pose, source=source)
    mirrored = encode(np.ascontiguousarray(frames[:, :, ::-1]))[detected]
    mirror = mirror_test(pm, Factor("pose", pose.astype(np.float32)), Factor("pose", mirrored.astype(np.float32)))
    info = {**pm.info, "mirror": mirror, "frames_without_face": int((~detected).sum()), "crop": crop}
    if getattr(engine.models, "synthetic", False):
        info["warning"] = "fitted with SYNTHETIC weights: meaningless, for testing only"
    return PoseMap(pm.matrix, pm.bias, calibrated=True, info=info)


__all__ = [
    "ANGLE_AXES",
    "ASSUMPTION",
    "AXES",
    "CURVES",
    "MIRROR_SIGNS",
    "UNITS",
    "Keyframe",
    "PoseMap",
    "as_pose_map",
    "assumed_pose_map",
    "calibrate_pose_map",
    "estimate_controls",
    "controls_from_head_pose",
    "fit_pose_map",
    "keyframe_controls",
    "mirror_test",
    "parse_keyframes",
]
