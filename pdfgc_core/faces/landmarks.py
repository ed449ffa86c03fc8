"""68-point facial landmarks (iBUG order) behind one small interface.

Backends:

- ``"dlib"`` (default): dlib's HOG face detector + the 68-point shape predictor shipped by
  the ``face-recognition-models`` package. Works offline; the models load once per process.
- ``"face_alignment"``: Adrian Bulat's FAN (``face-alignment`` package) with its S3FD
  detector. Used when its two weight files are present in a folder given by the caller
  or in torch's hub cache; it never downloads.
- ``"pre-aligned"`` (also ``"none"``): no detection; the pictures already are PD-FGC crops.

Every backend's :meth:`LandmarkDetector.detect` takes one uint8 RGB picture ``[H,W,3]`` and
returns the faces found as :class:`Face` objects, ordered left to right.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, InputError

LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
INNER_MOUTH = slice(60, 68)


def template_points(landmarks: np.ndarray) -> np.ndarray:
    """The three alignment points ``[3,2]`` (x, y) from 68 landmarks ``[68,2]``: the mean of
    points 36-41 (left eye as seen in the picture), of 42-47 (right eye) and of 60-67 (inner
    mouth)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return np.stack([lm[LEFT_EYE].mean(0), lm[RIGHT_EYE].mean(0), lm[INNER_MOUTH].mean(0)])


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    ``landmarks``: float64 ``[68,2]`` pixel coordinates (x, y) in the picture, iBUG order,
    pixel centres at integers. ``box``: the detector's box (x0, y0, x1, y1) in pixels.
    ``score``: the detector's confidence (dlib: SVM margin, > 0; FAN: S3FD probability).
    """

    landmarks: np.ndarray
    box: tuple[float, float, float, float]
    score: float

    @property
    def points(self) -> np.ndarray:
        """The three alignment points ``[3,2]``, see :func:`template_points`."""
        return template_points(self.landmarks)

    @property
    def eye_distance(self) -> float:
        """Distance in pixels between the two eye centres."""
        p = self.points
        return float(np.linalg.norm(p[1] - p[0]))


class LandmarkDetector:
    """Interface: ``detect(rgb_u8 [H,W,3]) -> list[Face]`` ordered left to right."""

    name = "base"
    pre_aligned = False

    def detect(self, rgb: np.ndarray) -> list[Face]:
        raise NotImplementedError


def _left_to_right(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: (f.box[0] + f.box[2], f.box[1] + f.box[3]))


class PreAligned(LandmarkDetector):
    """No detection: the pictures are already aligned PD-FGC crops. :meth:`detect` is never
    called by the alignment code, which stretches such pictures to 224x224 like the official
    loader; it returns an empty list."""

    name = "pre-aligned"
    pre_aligned = True

    def detect(self, rgb: np.ndarray) -> list[Face]:
        return []


# --------------------------------------------------------------------------------- dlib

_MODEL_LOCK = threading.Lock()
_DLIB_MODELS: dict[str, tuple[object, object]] = {}


def dlib_predictor_path() -> Path:
    """Path of ``shape_predictor_68_face_landmarks.dat`` inside the installed
    ``face-recognition-models`` package (found without importing it: its ``__init__`` needs
    ``pkg_resources``)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "landmark backend 'dlib': the package face-recognition-models, which ships "
            "shape_predictor_68_face_landmarks.dat, is not installed; "
            "run `pip install face-recognition-models` or choose another backend"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise CheckpointError(f"landmark backend 'dlib': {path} is missing; reinstall face-recognition-models")
    return path


def _dlib_models(path: Path):
    key = str(path)
    with _MODEL_LOCK:
        if key not in _DLIB_MODELS:
            try:
                import dlib
            except ImportError as e:
                raise InputError(
                    "landmark backend 'dlib': the dlib package cannot be imported "
                    f"({e}); run `pip install dlib-bin` or choose another backend"
                ) from e
            try:
                predictor = dlib.shape_predictor(key)
            except RuntimeError as e:
                raise CheckpointError(f"landmark backend 'dlib': cannot load {key}: {e}") from e
            _DLIB_MODELS[key] = (dlib.get_frontal_face_detector(), predictor)
        return _DLIB_MODELS[key]


class DlibDetector(LandmarkDetector):
    """dlib HOG detector + 68-point shape predictor.

    ``upsample``: most pyramid up-sampling passes. The detector first searches the picture
    as it is (faces from about 80 px) and up-samples (1: faces from about 40 px) only when
    that finds nothing; so when a large face is present, small ones are not listed. This is
    4-5x faster and avoids most false faces of the up-sampled pass.
    ``min_score``: detections scoring less are dropped (the up-sampled pass finds weak false
    faces, e.g. 0.12 on scikit-image's astronaut; real faces in the samples score 1.2-2.7).
    ``max_side``: pictures whose longer side exceeds it are searched for faces at that size
    (for speed); the landmarks are always predicted at full resolution.
    ``model_path``: another 68-point predictor file.
    """

    name = "dlib"

    def __init__(
        self,
        upsample: int = 1,
        max_side: int = 1024,
        min_score: float = 0.25,
        model_path: str | os.PathLike | None = None,
    ):
        self.upsample = int(upsample)
        self.min_score = float(min_score)
        self.max_side = int(max_side)
        self.model_path = Path(model_path) if model_path else None

    def detect(self, rgb: np.ndarray) -> list[Face]:
        import cv2
        import dlib

        detector, predictor = _dlib_models(self.model_path or dlib_predictor_path())
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = (
            rgb if scale == 1.0 else cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        )
        found = []
        for up in range(self.upsample + 1):
            boxes, scores, _ = detector.run(small, up, 0)
            found = [(b, s) for b, s in zip(boxes, scores) if s >= self.min_score]
            if found:
                break
        faces = []
        for b, s in found:
            x0, y0, x1, y1 = (b.left() / scale, b.top() / scale, b.right() / scale, b.bottom() / scale)
            shape = predictor(rgb, dlib.rectangle(round(x0), round(y0), round(x1), round(y1)))
            lm = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            faces.append(Face(lm, (x0, y0, x1, y1), float(s)))
        return _left_to_right(faces)


# ----------------------------------------------------------------------- face-alignment

_FAN_URL = "https://www.adrianbulat.com/downloads/python-fan/"
FAN_FILES = {
    "2DFAN-4": ("2DFAN4-11f355bf06.pth.tar", _FAN_URL + "2DFAN4-11f355bf06.pth.tar"),
    "s3fd": ("s3fd-619a316812.pth", _FAN_URL + "s3fd-619a316812.pth"),
}
"""The weight files face-alignment 1.5 downloads (file name, address), which we only look up."""
_FAN_MODELS: dict[tuple, object] = {}


def torch_hub_checkpoints() -> Path:
    """``$TORCH_HOME/hub/checkpoints``, where face-alignment itself keeps its weights."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def find_fan_weights(weights_dirs=()) -> tuple[Path, Path]:
    """Locate the FAN and S3FD weight files: first in ``weights_dirs`` (in order), then in
    torch's hub cache. Raises :class:`CheckpointError` listing the files, where they come
    from and every folder searched."""
    dirs = [Path(d) for d in ([weights_dirs] if isinstance(weights_dirs, (str, os.PathLike)) else weights_dirs)]
    dirs.append(torch_hub_checkpoints())
    found, missing = {}, []
    for key, (fname, url) in FAN_FILES.items():
        hit = next((d / fname for d in dirs if (d / fname).is_file()), None)
        if hit is None:
            missing.append(f"{fname} ({url})")
        found[key] = hit
    if missing:
        raise CheckpointError(
            "landmark backend 'face_alignment': weight file(s) not found: "
            + ", ".join(missing)
            + ". Download them on a machine with internet and put them in one of: "
            + ", ".join(str(d) for d in dirs)
            + " — or use the 'dlib' backend, which works offline"
        )
    return found["2DFAN-4"], found["s3fd"]


def _build_face_alignment(fan_path: Path, s3fd_path: Path, device: str):
    """A ``face_alignment.FaceAlignment`` (2D, S3FD) that loads its weights from the given files
    instead of downloading them (face-alignment 1.5 API)."""
    try:
        import face_alignment
        import torch
        from face_alignment.models import FAN
    except ImportError as e:
        raise InputError(
            f"landmark backend 'face_alignment': the face-alignment package cannot be imported ({e}); "
            "install it with its dependencies (`pip install face-alignment`, which also needs tqdm "
            "and numba) or choose the 'dlib' backend"
        ) from e
    if not hasattr(face_alignment.FaceAlignment, "_load_native"):
        raise InputError(
            "landmark backend 'face_alignment': face-alignment >= 1.5 is needed (its weights are "
            f"{', '.join(f for f, _ in FAN_FILES.values())}); run `pip install -U face-alignment`"
        )

    class LocalFAN(face_alignment.FaceAlignment):
        def _load_native(self, network_name, network_size, device, dtype):
            net = FAN(network_size)
            net.load_state_dict(torch.load(fan_path, map_location=device, weights_only=True))
            return net.to(device, dtype=dtype).eval()

    return LocalFAN(
        face_alignment.LandmarksType.TWO_D,
        device=device,
        face_detector="sfd",
        face_detector_kwargs={"path_to_detector": str(s3fd_path)},
        compile=False,
    )


class FaceAlignmentDetector(LandmarkDetector):
    """FAN landmarks (``face-alignment`` package) with its S3FD face detector.

    ``weights_dirs``: folders searched (before torch's hub cache) for
    ``2DFAN4-11f355bf06.pth.tar`` and ``s3fd-619a316812.pth``. ``device``: torch device
    string (default: cuda when available, else cpu). The model is built on first use and
    kept for the process.
    """

    name = "face_alignment"

    def __init__(self, weights_dirs=(), device: str | None = None):
        self.weights_dirs = weights_dirs
        self.device = device

    def _model(self):
        fan_path, s3fd_path = find_fan_weights(self.weights_dirs)
        device = self.device
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        key = (str(fan_path), str(s3fd_path), device)
        with _MODEL_LOCK:
            if key not in _FAN_MODELS:
                _FAN_MODELS[key] = _build_face_alignment(fan_path, s3fd_path, device)
            return _FAN_MODELS[key]

    def detect(self, rgb: np.ndarray) -> list[Face]:
        import warnings

        model = self._model()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No faces were detected." is an empty result here
            landmarks, _, boxes = model.get_landmarks_from_image(
                np.ascontiguousarray(rgb, dtype=np.uint8), return_bboxes=True, return_landmark_score=True
            )
        if landmarks is None:
            return []
        faces = []
        for lm, box in zip(landmarks, boxes):
            box = np.asarray(box, dtype=np.float64).ravel()
            faces.append(
                Face(np.asarray(lm, dtype=np.float64)[:, :2], tuple(box[:4]), float(box[4]) if box.size > 4 else 1.0)
            )
        return _left_to_right(faces)


DETECTORS = ("dlib", "face_alignment")
"""Backends that detect landmarks; ``pre-aligned`` (:data:`BACKENDS`) only resizes."""
BACKENDS = (*DETECTORS, "pre-aligned")
_ALIASES = {
    "dlib": "dlib",
    "face_alignment": "face_alignment",
    "face-alignment": "face_alignment",
    "fan": "face_alignment",
    "pre-aligned": "pre-aligned",
    "prealigned": "pre-aligned",
    "pre_aligned": "pre-aligned",
    "none": "pre-aligned",
}


def get_detector(
    backend: str | LandmarkDetector = "dlib", *, weights_dirs=(), device: str | None = None
) -> LandmarkDetector:
    """The detector for a backend name (``"dlib"``, ``"face_alignment"``/``"fan"``,
    ``"pre-aligned"``/``"none"``); a :class:`LandmarkDetector` is returned unchanged.
    ``weights_dirs`` and ``device`` are for face_alignment."""
    if isinstance(backend, LandmarkDetector):
        return backend
    kind = _ALIASES.get(str(backend).strip().lower())
    if kind == "dlib":
        return DlibDetector()
    if kind == "face_alignment":
        return FaceAlignmentDetector(weights_dirs, device)
    if kind == "pre-aligned":
        return PreAligned()
    raise InputError(f"landmark backend {backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
