"""Alignment of faces to the PD-FGC crop template, and the per-frame transforms.

The training crops put the left-eye centre, right-eye centre and inner-mouth centre at
``TEMPLATE`` = (87,59), (137,59), (112,120) of a 224x224 picture (see
:func:`~pdfgc_core.faces.landmarks.template_points`). A similarity transform (rotation,
uniform scale, translation) fitted by least squares to those three points maps a frame
onto its crop.

Modes:

- ``"image"``: every picture gets its own similarity.
- ``"video"``: one similarity fitted to the clip-average points, plus a per-frame
  translation that re-centres the inner mouth on (112,120), smoothed as
  ``bias = 0.2 * previous + 0.8 * current``.
- ``"auto"``: ``"image"`` for one picture, ``"video"`` for several.
- backend ``"pre-aligned"``: no detection; pictures are stretched to 224x224 exactly like
  the official loader (``cv2.resize``, INTER_LINEAR).

Policies (also written into :attr:`CropInfo.notes` when they apply):

- Several faces: ``face_index=-1`` takes the largest (eye distance) among the confident
  ones (score at least half the best score; dlib's up-sampled pass finds weak false faces);
  ``face_index=k >= 0`` takes the k-th confident face counted from the left. In a video the
  choice is made on the first frame with a face, then the face nearest to it is followed.
- Frames without a usable face (none found, lost track, or in a video a detection whose
  eye/mouth geometry or size is far from the clip's median, e.g. an occluded face): in
  video mode their points are interpolated linearly between the nearest frames with a face
  before and after, and held from the nearest one at the clip's ends, so the crop never
  jumps. In image mode every picture must have a face (:class:`FaceNotFoundError`).
- No face anywhere: :class:`FaceNotFoundError` naming the input and suggesting the
  pre-aligned mode or another picture.
- Tiny faces: eyes less than ``min_eye_distance`` (default 20) pixels apart (the template
  has 50, so the crop would be enlarged more than 2.5x) raise :class:`InputError`; in a
  video the clip's median eye distance is what counts. ``min_eye_distance=0`` accepts any.
- Large faces are first reduced with area averaging, so the crop is not aliased.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import FaceNotFoundError, InputError
from ..images import SIZE, resize_224
from .convert import as_rgb_u8
from .landmarks import Face, LandmarkDetector, get_detector

TEMPLATE = np.array([[87.0, 59.0], [137.0, 59.0], [112.0, 120.0]])
"""Crop-pixel positions (x, y) of left eye, right eye and inner-mouth centres."""
TEMPLATE_EYE_DISTANCE = float(np.linalg.norm(TEMPLATE[1] - TEMPLATE[0]))
CROP_SIZE = SIZE
MIN_EYE_DISTANCE = 20.0
SMOOTHING = 0.2
"""Weight of the previous frame's mouth re-centring bias in video mode."""
MIN_RELATIVE_SCORE = 0.5
BORDERS = ("constant", "replicate", "reflect")
MODES = ("auto", "image", "video")


# ------------------------------------------------------------------------ affine helpers


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity ``[2,3]`` (float64) mapping points ``src [K,2]`` onto ``dst [K,2]``:
    ``dst ~ [[a,-b],[b,a]] @ src + t``."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    x, y = src[:, 0], src[:, 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    a_mat = np.concatenate([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])
    a, b, tx, ty = np.linalg.lstsq(a_mat, np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points ``[...,2]`` mapped by a ``[2,3]`` affine."""
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a ``[2,3]`` affine."""
    a = np.linalg.inv(m[:, :2])
    return np.concatenate([a, -(a @ m[:, 2])[:, None]], 1)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer`` after ``inner``, both ``[2,3]``."""
    return np.concatenate([outer[:, :2] @ inner[:, :2], (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]], 1)


def resize_affine(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    """The ``[2,3]`` pixel mapping of ``cv2.resize`` from ``src_hw`` to ``dst_hw`` (half-pixel centres)."""
    sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])


# ------------------------------------------------------------------------------ CropInfo


@dataclass(eq=False)
class CropInfo:
    """Where each crop came from, enough to paste results back.

    ``matrices``: float64 ``[N,2,3]``, frame pixel (x, y) -> crop pixel, pixel centres at
    integers (``cv2.warpAffine`` convention). ``frame_size``: (H, W) of the source frames.
    ``detected``: bool ``[N]``, True where the frame's own face set its transform.
    ``points``: float64 ``[N,3,2]``, the alignment points found in each frame, NaN where
    none was used. ``mode``: "image", "video" or "pre-aligned". ``backend``: landmark
    backend name. ``notes``: the policies that applied, in words.
    """

    matrices: np.ndarray
    frame_size: tuple[int, int]
    detected: np.ndarray
    points: np.ndarray
    mode: str
    backend: str
    crop_size: int = CROP_SIZE
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        self.matrices = np.asarray(self.matrices, dtype=np.float64).reshape(-1, 2, 3)
        n = len(self.matrices)
        self.detected = np.asarray(self.detected, dtype=bool).reshape(n)
        self.points = np.asarray(self.points, dtype=np.float64).reshape(n, 3, 2)
        self.frame_size = (int(self.frame_size[0]), int(self.frame_size[1]))
        self.crop_size = int(self.crop_size)
        self.notes = tuple(str(s) for s in self.notes)
        if n == 0 or not np.isfinite(self.matrices).all() or min(self.frame_size) < 1:
            raise InputError("crop info: no frames, non-finite transforms or an empty frame size")
        if (np.abs(np.linalg.det(self.matrices[:, :, :2])) < 1e-12).any():
            raise InputError("crop info: a transform is singular (cannot be inverted for paste-back)")

    def __len__(self) -> int:
        return len(self.matrices)

    def __repr__(self) -> str:
        return (
            f"CropInfo({len(self)} frame(s) {self.frame_size[1]}x{self.frame_size[0]} -> {self.crop_size}, "
            f"mode={self.mode}, backend={self.backend}, with face: {int(self.detected.sum())})"
        )

    def select(self, indices) -> CropInfo:
        """The crop info of some frames (an index array, list or slice)."""
        idx = np.arange(len(self))[indices]
        return CropInfo(
            self.matrices[idx],
            self.frame_size,
            self.detected[idx],
            self.points[idx],
            self.mode,
            self.backend,
            self.crop_size,
            self.notes,
        )

    def to_dict(self) -> dict:
        """JSON-ready dict (lists, NaN as None) for :meth:`from_dict`."""
        pts = [[[None if np.isnan(v) else float(v) for v in p] for p in f] for f in self.points]
        return {
            "format": "pdfgc-crop-info",
            "version": 1,
            "crop_size": self.crop_size,
            "frame_size": list(self.frame_size),
            "mode": self.mode,
            "backend": self.backend,
            "matrices": self.matrices.tolist(),
            "detected": self.detected.tolist(),
            "points": pts,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict) -> CropInfo:
        """Inverse of :meth:`to_dict`; raises :class:`InputError` on anything else."""
        try:
            if d.get("format") != "pdfgc-crop-info" or int(d.get("version", 0)) != 1:
                raise ValueError("not a version-1 pdfgc-crop-info dict")
            pts = np.array([[[np.nan if v is None else v for v in p] for p in f] for f in d["points"]], float)
            return cls(
                np.array(d["matrices"], float),
                tuple(d["frame_size"]),
                np.array(d["detected"], bool),
                pts,
                str(d["mode"]),
                str(d["backend"]),
                int(d["crop_size"]),
                tuple(d.get("notes", ())),
            )
        except InputError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(f"crop info: cannot read it ({e}); expected the output of CropInfo.to_dict()") from e


# ------------------------------------------------------------------------ face selection


def _confident(faces: list[Face]) -> list[Face]:
    if not faces:
        return []
    best = max(f.score for f in faces)
    return [f for f in faces if f.score >= MIN_RELATIVE_SCORE * best] if best > 0 else list(faces)


def select_face(faces: list[Face], face_index: int = -1, *, name: str = "image", frame: int = 0) -> Face | None:
    """The face to use among ``faces`` (ordered left to right), or None if there is none.
    ``face_index=-1``: the largest confident face; ``k >= 0``: the k-th confident face from
    the left (:class:`InputError` when there are fewer)."""
    cands = _confident(faces)
    if not cands:
        return None
    if face_index < 0:
        return max(cands, key=lambda f: f.eye_distance)
    if face_index >= len(cands):
        raise InputError(
            f"{name}: face_index={face_index} but frame {frame} has {len(cands)} face(s) "
            f"(counted from the left, starting at 0); use -1 for the largest face"
        )
    return cands[face_index]


def _eye_mid(f: Face) -> np.ndarray:
    return f.points[:2].mean(0)


def _track(faces_per_frame: list[list[Face]], face_index: int, name: str) -> list[Face | None]:
    """Follow one face through a clip: chosen by the policy on the first frame with a face,
    then the confident face nearest to the last one kept."""
    chosen: list[Face | None] = [None] * len(faces_per_frame)
    last, last_t = None, 0
    for t, faces in enumerate(faces_per_frame):
        if last is None:
            f = select_face(faces, face_index, name=name, frame=t)
        else:
            cands = _confident(faces)
            if not cands:
                continue
            f = min(cands, key=lambda c: np.linalg.norm(_eye_mid(c) - _eye_mid(last)))
            reach = last.eye_distance * (1.5 + 0.5 * (t - last_t - 1))
            if np.linalg.norm(_eye_mid(f) - _eye_mid(last)) > reach:
                continue
        if f is not None:
            chosen[t], last, last_t = f, f, t
    return chosen


def _shape(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation/scale-free mouth position relative to the eyes ``[N,2]``, and eye distance ``[N]``."""
    e = points[:, 1] - points[:, 0]
    d = points[:, 2] - points[:, :2].mean(1)
    n2 = (e * e).sum(1)
    u = (d * e).sum(1) / n2
    v = (e[:, 0] * d[:, 1] - e[:, 1] * d[:, 0]) / n2
    return np.stack([u, v], 1), np.sqrt(n2)


def _outliers(points: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """Detected frames whose face geometry is implausible for the clip (occlusion, wrong face):
    mouth offset from the eyes more than 0.35 eye distances from the clip median, or eye
    distance outside 0.6..1.67 times the median; never a majority of the frames."""
    out = np.zeros_like(detected)
    if detected.sum() < 3:
        return out
    shape, dist = _shape(points[detected])
    bad = (np.linalg.norm(shape - np.median(shape, 0), axis=1) > 0.35) | (
        np.abs(np.log(dist / np.median(dist))) > np.log(1.67)
    )
    if 2 * bad.sum() < len(bad):  # only a minority can be outliers
        out[np.flatnonzero(detected)[bad]] = True
    return out


def _fill(points: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """Points of frames without a face: linear between the nearest detected frames, held at the ends."""
    t = np.arange(len(points))
    known = np.flatnonzero(detected)
    flat = points.reshape(len(points), -1)
    return np.stack([np.interp(t, known, flat[known, k]) for k in range(flat.shape[1])], 1).reshape(points.shape)


# ---------------------------------------------------------------------------- transforms


def image_transforms(points: np.ndarray) -> np.ndarray:
    """Per-picture similarities ``[N,2,3]`` mapping each picture's three points ``[N,3,2]`` to ``TEMPLATE``."""
    return np.stack([similarity_transform(p, TEMPLATE) for p in points])


def video_transforms(
    points: np.ndarray, detected: np.ndarray | None = None, smoothing: float = SMOOTHING
) -> np.ndarray:
    """Clip transforms ``[N,2,3]``: one similarity from the average points of the ``detected``
    frames (all if None), then per frame a translation moving that frame's mouth onto the
    template mouth, smoothed ``bias_t = smoothing * bias_(t-1) + (1 - smoothing) * current_t``
    with ``bias_(-1) = current_0``. ``points`` ``[N,3,2]`` must be finite (fill gaps first)."""
    points = np.asarray(points, dtype=np.float64)
    det = np.ones(len(points), bool) if detected is None else np.asarray(detected, bool)
    base = similarity_transform(points[det].mean(0), TEMPLATE)
    current = TEMPLATE[2] - apply_affine(base, points[:, 2])
    out = np.repeat(base[None], len(points), 0)
    bias = current[0]
    for t in range(len(points)):
        bias = smoothing * bias + (1 - smoothing) * current[t]
        out[t, :, 2] += bias
    return out


_BORDER_CODES = {"constant": "BORDER_CONSTANT", "replicate": "BORDER_REPLICATE", "reflect": "BORDER_REFLECT_101"}


def warp_crops(frames: np.ndarray, matrices: np.ndarray, border: str = "constant", size: int = CROP_SIZE) -> np.ndarray:
    """``cv2.warpAffine`` (bilinear) of uint8 frames ``[N,H,W,3]`` to crops ``[N,size,size,3]``.
    Frames whose scale is below 0.7 are first reduced with INTER_AREA (anti-aliasing).
    ``border``: "constant" (black, as the training pre-processing), "replicate" or "reflect"."""
    import cv2

    if border not in _BORDER_CODES:
        raise InputError(f"border {border!r} is unknown; choose one of {', '.join(BORDERS)}")
    code = getattr(cv2, _BORDER_CODES[border])
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i, (frame, m) in enumerate(zip(frames, matrices)):
        scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
        if scale < 0.7:
            h, w = frame.shape[:2]
            hw = (max(1, round(h * scale)), max(1, round(w * scale)))
            frame = cv2.resize(frame, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
            m = compose_affine(m, invert_affine(resize_affine((h, w), hw)))
        out[i] = cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=code, borderValue=0)
    return out


# ------------------------------------------------------------------------------- driver


def _frames_list(idx) -> str:
    idx = list(idx)
    return ", ".join(map(str, idx[:10])) + (f" and {len(idx) - 10} more" if len(idx) > 10 else "")


def align_faces(
    images,
    detector: str | LandmarkDetector = "dlib",
    *,
    mode: str = "auto",
    face_index: int = -1,
    min_eye_distance: float = MIN_EYE_DISTANCE,
    border: str = "constant",
    name: str = "image",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, CropInfo]:
    """Detect, align and crop the face of every picture of a batch.

    ``images``: a picture or batch, see :func:`~pdfgc_core.faces.convert.as_rgb_u8` (uint8 or
    float 0..1, ``[H,W]``, ``[H,W,C]`` or ``[N,H,W,C]``; gray repeated, alpha dropped).
    ``detector``: backend name or :class:`LandmarkDetector`. ``mode``: "auto", "image" or
    "video" (see the module docstring for these and the policies). ``name``: how errors call
    the input. ``progress(done, total)`` is called after each frame's detection.

    Returns uint8 crops ``[N,224,224,3]`` (RGB, the layout of the official sample crops) and
    the :class:`CropInfo`.
    """
    det = get_detector(detector)
    if mode not in MODES:
        raise InputError(f"alignment mode {mode!r} is unknown; choose one of {', '.join(MODES)}")
    frames = as_rgb_u8(images, name)
    n, h, w, _ = frames.shape

    if det.pre_aligned:
        mats = np.repeat(resize_affine((h, w), (CROP_SIZE, CROP_SIZE))[None], n, 0)
        crops = np.stack([resize_224(f) for f in frames])
        note = "pre-aligned: no detection" + (
            "" if (h, w) == (CROP_SIZE, CROP_SIZE) else f"; {w}x{h} stretched to 224x224 like the official loader"
        )
        return crops, CropInfo(
            mats, (h, w), np.ones(n, bool), np.full((n, 3, 2), np.nan), "pre-aligned", det.name, notes=(note,)
        )

    mode = ("image" if n == 1 else "video") if mode == "auto" else mode
    faces = []
    for t in range(n):
        faces.append(det.detect(frames[t]))
        if progress is not None:
            progress(t + 1, n)
    notes = []
    if any(len(_confident(f)) > 1 for f in faces):
        notes.append(
            "several faces: "
            + (f"face {face_index} from the left" if face_index >= 0 else "the largest")
            + (" (then followed through the clip)" if mode == "video" else "")
        )
    chosen = (
        _track(faces, face_index, name)
        if mode == "video"
        else [select_face(f, face_index, name=name, frame=t) for t, f in enumerate(faces)]
    )
    detected = np.array([c is not None for c in chosen])
    if not detected.any():
        raise FaceNotFoundError(
            f"{name}: no face found in {'the picture' if n == 1 else f'any of the {n} frames'} "
            f"({w}x{h}, landmark backend {det.name}). Use a picture where the face is visible, roughly frontal "
            f"and at least about 80 pixels wide, or, if the pictures already are PD-FGC 224x224 crops, "
            f"the 'pre-aligned' backend"
        )
    if mode == "image" and not detected.all():
        raise FaceNotFoundError(
            f"{name}: no face found in frame(s) {_frames_list(np.flatnonzero(~detected))} of {n} "
            f"(mode 'image' needs a face in every picture; use mode 'video' for a clip, which reuses the nearest "
            f"frames' alignment, or remove those pictures)"
        )
    points = np.full((n, 3, 2), np.nan)
    for t, c in enumerate(chosen):
        if c is not None:
            points[t] = c.points

    if mode == "video":
        bad = _outliers(points, detected)
        if bad.any():
            notes.append(
                f"frame(s) {_frames_list(np.flatnonzero(bad))}: face geometry far from the clip's "
                f"(occluded?), treated as without face"
            )
            detected &= ~bad
            points[bad] = np.nan
        if not detected.all():
            notes.append(
                f"frame(s) {_frames_list(np.flatnonzero(~detected))} without a usable face: alignment "
                f"interpolated from the nearest frames with one"
            )

    eye = _shape(points[detected])[1]
    small = eye.min() if mode == "image" else np.median(eye)
    if small < min_eye_distance:
        where = f"frame {int(np.flatnonzero(detected)[np.argmin(eye)])}" if mode == "image" else "the clip"
        raise InputError(
            f"{name}: the face in {where} is too small: its eyes are {small:.1f} pixels apart, at least "
            f"{min_eye_distance:g} are needed (the crop template has 50, so it would be enlarged "
            f"{TEMPLATE_EYE_DISTANCE / small:.1f}x and come out blurred). Use a higher-resolution picture or "
            f"enlarge the face region first; min_eye_distance=0 accepts it anyway"
        )

    if mode == "video":
        mats = video_transforms(_fill(points, detected), detected)
    else:
        mats = image_transforms(points)
    crops = warp_crops(frames, mats, border)
    return crops, CropInfo(mats, (h, w), detected, points, mode, det.name, notes=tuple(notes))


# --------------------------------------------------------------------------- input checks

ALIGNMENT_TOLERANCE = 0.25
"""How far (in template eye distances, 50 px of the 224 crop: 12.5 px) a picture's eye and mouth
centres may lie from the template before :func:`alignment_problems` reports it."""


def alignment_problems(
    images, detector: str | LandmarkDetector = "dlib", samples: int = 3, name: str = "images"
) -> list[str]:
    """What is wrong, in words, with pictures meant to be faces aligned to the PD-FGC crop
    (pre-aligned 224 crops, or the output of :func:`align_faces`): up to ``samples`` evenly spaced
    pictures of the batch (``images`` as :func:`align_faces` takes them) are searched for a face;
    a picture without one, or whose eye and mouth centres (scaled to 224x224) lie more than
    :data:`ALIGNMENT_TOLERANCE` template eye distances from the template, is reported. An empty
    list means the sample looks aligned."""
    det = get_detector(detector)
    frames = as_rgb_u8(images, name)
    n, h, w, _ = frames.shape
    picks = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(max(int(samples), 1), n))})
    problems = []
    for i in picks:
        faces = _confident(det.detect(frames[i]))
        label = f"{name} frame {i}" if n > 1 else name
        if not faces:
            problems.append(f"{label}: no face found")
            continue
        face = max(faces, key=lambda f: f.eye_distance)
        pts = face.points * np.array([CROP_SIZE / w, CROP_SIZE / h])
        err = float(np.linalg.norm(pts - TEMPLATE, axis=1).max())
        if err > ALIGNMENT_TOLERANCE * TEMPLATE_EYE_DISTANCE:
            problems.append(f"{label}: the face is not aligned to the PD-FGC crop (eyes / mouth {err:.0f} px off)")
    return problems
