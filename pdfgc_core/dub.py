"""Dubbing: new speech for an existing video, same person, same head motion.

PD-FGC drives each factor from its own source, so a dub takes pose, eyes and expression from the
video itself and only the lips from the new audio; the generated face is pasted back into the
source frames inside a mask (default: the lower face), so eyes, hair and background stay the
original pixels.

Three streamed passes over the video keep memory bounded for hour-long inputs (only per-frame
numbers are kept between passes, never frames):

1. **track** (:func:`track_face`): detect faces (dlib 68 points) in every frame, cut the video into
   shots where the picture changes abruptly, pick one face per shot (:class:`FaceChoice`) and
   follow it; score every frame as an appearance reference (frontal, eyes open). Frames where the
   face is missing are marked and later pass through untouched.
2. **encode**: crop every tracked frame with temporally smoothed alignment
   (:func:`smooth_points`), encode pose / eyes / expression from the crops and the appearance from
   the reference frame; encode the new audio's lips at the video's frame rate.
3. **render** (:func:`dub_frames`): generate the tracked frames in chunks and composite each into
   its source frame (:func:`composite`): the mask warped into the frame, the face's colours matched
   to the source inside it, pixels outside the mask exactly the source's.

Frames are RGB uint8 ``[H,W,3]`` everywhere here; the networks see ``[B,3,224,224]`` in -1..1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from . import audio as audio_io
from . import images, provenance
from .engine import Appearance, Engine
from .errors import FaceNotFoundError, InputError
from .faces.align import TEMPLATE, similarity_transform, warp_crops
from .faces.headpose import estimate_head_pose
from .faces.landmarks import LEFT_EYE, RIGHT_EYE, Face, get_detector, template_points
from .faces.paste import REGIONS, region_mask, warp_into_frame
from .factors import Factor, PostProcess, assemble_motion, fit_indices
from .memory import release_free_memory

log = logging.getLogger("pdfgc")

LENGTHS = ("video", "audio")
"""``video``: the dub lasts as long as the video (new audio trimmed or padded with silence);
``audio``: as long as the audio (the video is extended by playing it back and forth)."""
DEFAULT_SMOOTH_SECONDS = 0.1
"""Gaussian sigma of the temporal smoothing of the alignment points, in seconds."""
CUT_THRESHOLD = 40.0
"""Mean absolute difference (0..255) between consecutive 64x36 grey thumbnails above which a new
shot starts (a cut): the face is chosen again there and alignment is not smoothed across it."""
DETECT_MAX_SIDE = 640
"""Faces are searched at this size (longer side) for speed; landmarks use full resolution."""
EYES_OPEN_EAR = 0.3
"""Eye aspect ratio counted as fully open when scoring reference frames."""


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class FaceChoice:
    """Which face to dub when there are several: ``largest`` (default), the ``index``-th from the
    left (0-based), or the one nearest to ``point`` (x, y in source pixels)."""

    policy: str = "largest"
    index: int = 0
    point: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def parse(cls, spec: str | int | tuple | FaceChoice | None) -> FaceChoice:
        """``"largest"``, ``"N"`` / N (N-th from the left, 0-based) or ``"X,Y"`` / (x, y)."""
        if spec is None:
            return cls()
        if isinstance(spec, FaceChoice):
            return spec
        if isinstance(spec, bool):
            raise InputError(f"face choice {spec!r}: give 'largest', a face number N or a point X,Y")
        if isinstance(spec, int):
            if spec < 0:
                raise InputError(f"face number {spec} must be >= 0 (0 = the leftmost face)")
            return cls("index", index=spec)
        if isinstance(spec, (tuple, list)) and len(spec) == 2:
            x, y = (float(v) for v in spec)
            if not (math.isfinite(x) and math.isfinite(y)):
                raise InputError(f"face point {spec!r} must be finite pixel coordinates")
            return cls("point", point=(x, y))
        s = str(spec).strip().lower()
        if s in ("", "largest"):
            return cls()
        if "," in s:
            try:
                return cls.parse(tuple(float(v) for v in s.split(",")))
            except ValueError:
                pass
        elif s.lstrip("+").isdigit():
            return cls.parse(int(s))
        raise InputError(f"face choice {spec!r}: give 'largest', a face number N (0 = leftmost) or a point X,Y")

    def select(self, faces: list[Face]) -> Face | None:
        """The chosen face among one frame's detections (ordered left to right), or None."""
        if not faces:
            return None
        if self.policy == "index":
            return faces[self.index] if self.index < len(faces) else None
        if self.policy == "point":
            p = np.asarray(self.point)
            return min(faces, key=lambda f: float(np.linalg.norm(f.points[:2].mean(0) - p)))
        return max(faces, key=lambda f: f.eye_distance)


@dataclass
class DubSettings:
    """Everything that shapes a dub.

    ``face``: :class:`FaceChoice` or its text form. ``reference_frame``: source frame whose face
    gives the appearance (None: the best-scored). ``mask``: paste region (:data:`REGIONS`),
    ``feather``: its soft edge in crop pixels, ``color_match``: match the generated face's colours
    to the source inside the mask. ``length``: :data:`LENGTHS`. ``smooth_seconds``: temporal
    smoothing of the alignment (0 = none). ``detector``: landmark backend. ``chunk``: frames per
    render chunk (memory), ``batch_size``: generator batch. ``noise``: as in
    :meth:`Engine.generate`. ``mouth_strength``: scale of the lip factor. ``watermark``: the
    invisible PD-FGC mark in every generated face before it is pasted (:mod:`pdfgc_core.provenance`;
    frames without the face stay the source's)."""

    face: FaceChoice | str | int | tuple = "largest"
    reference_frame: int | None = None
    mask: str = "lower"
    feather: float = 12.0
    color_match: bool = True
    length: str = "video"
    smooth_seconds: float = DEFAULT_SMOOTH_SECONDS
    cut_threshold: float = CUT_THRESHOLD
    detector: str = "dlib"
    audio_quality: str = "official"
    chunk: int = 32
    batch_size: int = 8
    noise: int | None = None
    mouth_strength: float = 1.0
    watermark: bool = True
    post: PostProcess = field(default_factory=PostProcess.official)

    def __post_init__(self):
        self.face = FaceChoice.parse(self.face)
        if self.mask not in REGIONS:
            raise InputError(f"mask {self.mask!r} is unknown; choose one of {', '.join(REGIONS)}")
        if self.length not in LENGTHS:
            raise InputError(f"length {self.length!r} is unknown; choose one of {', '.join(LENGTHS)}")
        for name in ("feather", "smooth_seconds", "cut_threshold", "mouth_strength"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v)) or (name != "mouth_strength" and v < 0):
                raise InputError(f"{name} must be a finite number >= 0, got {v!r}")
        for name in ("chunk", "batch_size"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise InputError(f"{name} must be a whole number >= 1, got {v!r}")
        if self.reference_frame is not None and not (
            isinstance(self.reference_frame, int) and self.reference_frame >= 0
        ):
            raise InputError(f"reference frame must be a frame number >= 0, got {self.reference_frame!r}")


# ------------------------------------------------------------------------------- sources


def exact_rate(fps: float) -> Fraction:
    """A container's frame rate as a fraction: the NTSC rates (23.976, 29.97, 59.94, ...) become
    exactly k*1000/1001, others the nearest fraction with a small denominator."""
    fps = float(fps)
    if not (math.isfinite(fps) and fps > 0):
        raise InputError(f"video frame rate {fps!r} is not a positive number")
    for k in (24, 30, 48, 60, 120):
        if abs(fps - k * 1000 / 1001) < 0.006:
            return Fraction(k * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


class FrameSource:
    """Frames of a clip, read in order as often as needed: uint8 ``[N,H,W,3]`` in memory or a video
    file streamed by ffmpeg. ``fps`` is a Fraction; ``num_frames`` is known after the first full
    read (:func:`track_face` does one)."""

    def __init__(self, source, fps=None, name: str | None = None):
        from . import media

        if isinstance(source, (str, Path)):
            path = Path(source)
            meta = media.video_meta(path)
            if fps is None and not meta.fps:
                raise InputError(f"{path}: the video has no frame rate; give one (fps=...)")
            self.path, self.array = path, None
            self.fps = exact_rate(fps if fps is not None else meta.fps)
            self.num_frames = None  # counted by the first full read
            self.name = name or str(path)
        else:
            arr = np.asarray(source)
            if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or arr.shape[0] == 0:
                raise InputError(f"video frames: expected uint8 [N,H,W,3] with N >= 1, got {arr.dtype} {arr.shape}")
            if fps is None:
                raise InputError("video frames: give their frame rate (fps)")
            self.path, self.array = None, arr
            self.fps = exact_rate(fps)
            self.num_frames = int(arr.shape[0])
            self.name = name or "video frames"

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Frames ``start .. stop-1`` in order (stop None: to the end)."""
        if self.array is not None:
            yield from self.array[start:stop]
            return
        from . import media

        if start == 0:
            yield from media.iter_frames(self.path, 0, stop)
            return
        yield from media.seek_frames(self.path, self.fps, start, stop)

    def frame(self, index: int) -> np.ndarray:
        for f in self.frames(index, index + 1):
            return f
        raise InputError(f"{self.name}: has no frame {index}")


# -------------------------------------------------------------------------------- tracking


@dataclass
class Track:
    """One face followed through a clip (per source frame ``t`` of ``num_frames``).

    ``points`` float64 ``[N,3,2]``: the alignment points (eye centres, inner-mouth centre) of the
    tracked face, NaN where it is missing. ``detected`` bool ``[N]``. ``shots`` int ``[N]``: shot
    number (a cut starts a new one). ``scores`` float64 ``[N]``: appearance-reference quality
    (-inf where missing). ``smoothed`` ``[N,3,2]``: the points after temporal smoothing (NaN where
    missing). ``size``: (H, W)."""

    points: np.ndarray
    detected: np.ndarray
    shots: np.ndarray
    scores: np.ndarray
    size: tuple[int, int]
    fps: Fraction
    smoothed: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return int(len(self.detected))

    def matrices(self) -> np.ndarray:
        """Frame -> crop similarities ``[N,2,3]`` from the smoothed points (identity where missing)."""
        pts = self.smoothed if self.smoothed is not None else self.points
        out = np.zeros((self.num_frames, 2, 3))
        out[:, 0, 0] = out[:, 1, 1] = 1.0
        for t in np.flatnonzero(self.detected):
            out[t] = similarity_transform(pts[t], TEMPLATE)
        return out

    def jitter(self, smoothed: bool = True) -> float:
        """Landmark jitter of the crop in source pixels: RMS of the second difference over time of
        the alignment points, over runs of consecutive tracked frames within a shot."""
        return crop_jitter(self.smoothed if smoothed and self.smoothed is not None else self.points, self.shots)


def _thumb(frame: np.ndarray) -> np.ndarray:
    import cv2

    g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(g, (64, 36), interpolation=cv2.INTER_AREA).astype(np.float32)


def _eye_aspect(lm: np.ndarray) -> float:
    def ear(p):
        return (np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2.0 * np.linalg.norm(p[0] - p[3]) + 1e-9)

    return float((ear(lm[LEFT_EYE]) + ear(lm[RIGHT_EYE])) / 2.0)


def reference_score(face: Face, width: int, height: int) -> float:
    """How good a face is as the appearance reference: eyes open (eye aspect ratio up to
    :data:`EYES_OPEN_EAR`) minus turning away (pitch and yaw, 45 degrees counting as 1)."""
    pose = estimate_head_pose(face.landmarks, width, height)
    pitch, yaw = (abs(float(a)) for a in pose.angles[:2])
    return min(_eye_aspect(face.landmarks), EYES_OPEN_EAR) / EYES_OPEN_EAR - (pitch + yaw) / 45.0


def track_face(
    source: FrameSource,
    settings: DubSettings,
    progress: Callable[[int, int | None], None] | None = None,
) -> Track:
    """Pass 1: detect, choose and follow the face through ``source`` (see :class:`Track`). The face is
    chosen by ``settings.face`` on the first frame of each shot that has faces, then followed to the
    nearest face while it stays within 1.5 eye distances (plus half an eye distance per frame it was
    lost); a face that cannot be followed is chosen again by the policy."""
    from .faces.landmarks import DlibDetector

    det = get_detector(settings.detector)
    if isinstance(det, DlibDetector):
        det.max_side = min(det.max_side, DETECT_MAX_SIDE)
    choice: FaceChoice = settings.face
    pts, found, shots, scores = [], [], [], []
    shot, prev_thumb, last, last_t = 0, None, None, -1
    size = None
    for t, frame in enumerate(source.frames()):
        if size is None:
            size = frame.shape[:2]
        elif frame.shape[:2] != size:
            raise InputError(
                f"{source.name}: frame {t} is {frame.shape[1]}x{frame.shape[0]}, frame 0 was "
                f"{size[1]}x{size[0]}; a video must keep one size"
            )
        thumb = _thumb(frame)
        if prev_thumb is not None and float(np.abs(thumb - prev_thumb).mean()) > settings.cut_threshold:
            shot, last = shot + 1, None
        prev_thumb = thumb
        faces = det.detect(frame)
        face = None
        if last is not None and faces:
            near = min(faces, key=lambda f: float(np.linalg.norm(f.points[:2].mean(0) - last.points[:2].mean(0))))
            reach = last.eye_distance * (1.5 + 0.5 * (t - last_t - 1))
            if np.linalg.norm(near.points[:2].mean(0) - last.points[:2].mean(0)) <= reach:
                face = near
        if face is None and (last is None or t - last_t > round(float(source.fps))):
            face = choice.select(faces)  # (re)acquire by the policy: a new shot, or lost for a second
        if face is not None:
            last, last_t = face, t
            pts.append(template_points(face.landmarks))
            scores.append(reference_score(face, size[1], size[0]))
        else:
            pts.append(np.full((3, 2), np.nan))
            scores.append(-np.inf)
        found.append(face is not None)
        shots.append(shot)
        if progress is not None:
            progress(t + 1, source.num_frames)
    if size is None:
        raise InputError(f"{source.name}: the video has no frames")
    source.num_frames = len(found)
    track = Track(np.array(pts), np.array(found, bool), np.array(shots), np.array(scores), size, source.fps)
    if not track.detected.any():
        raise FaceNotFoundError(
            f"{source.name}: no face was found in any of its {track.num_frames} frames; dubbing needs a visible "
            f"face (at least about 80 pixels wide)."
        )
    sigma = settings.smooth_seconds * float(source.fps)
    track.smoothed = smooth_points(track.points, track.detected, track.shots, sigma)
    return track


def smooth_points(points: np.ndarray, detected: np.ndarray, shots: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing over time (``sigma`` frames) of alignment points ``[N,3,2]``, within each
    shot and over the frames where the face was found only (a normalised convolution: frames near
    a gap or a shot's edge average what they have). Missing frames stay NaN; ``sigma`` 0 copies."""
    out = np.where(detected[:, None, None], points, np.nan)
    if sigma <= 0:
        return out
    radius = int(math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    flat = np.nan_to_num(points.reshape(len(points), -1))
    for s in np.unique(shots):
        idx = np.flatnonzero(shots == s)
        w = detected[idx].astype(np.float64)
        n = len(idx)

        def conv(x, n=n):  # centred, as long as the shot even when the kernel is longer
            return np.convolve(x, k, mode="full")[radius : radius + n]

        num = np.stack([conv(flat[idx, c] * w) for c in range(flat.shape[1])], 1)
        den = conv(w)[:, None]
        sm = num / np.maximum(den, 1e-12)
        keep = detected[idx]
        out[idx[keep]] = sm[keep].reshape(-1, 3, 2)
    return out


def crop_jitter(points: np.ndarray, shots: np.ndarray | None = None) -> float:
    """RMS (pixels) of the second time difference of alignment points ``[N,3,2]`` over triples of
    consecutive frames that all have a face and lie in one shot; 0 if there are none."""
    p = np.asarray(points, np.float64)
    if len(p) < 3:
        return 0.0
    d2 = p[2:] - 2 * p[1:-1] + p[:-2]
    ok = np.isfinite(d2).all(axis=(1, 2))
    if shots is not None:
        ok &= shots[2:] == shots[:-2]
    if not ok.any():
        return 0.0
    return float(np.sqrt((d2[ok] ** 2).sum(-1).mean()))


def choose_reference(track: Track, settings: DubSettings) -> int:
    """The source frame whose face gives the appearance: ``settings.reference_frame`` if set (it
    must show the tracked face), else the best :func:`reference_score`."""
    r = settings.reference_frame
    if r is not None:
        if r >= track.num_frames:
            raise InputError(
                f"reference frame {r}: the video has {track.num_frames} frames (0..{track.num_frames - 1})"
            )
        if not track.detected[r]:
            raise InputError(f"reference frame {r} shows no tracked face; choose a frame where the face is visible")
        return int(r)
    return int(np.argmax(track.scores))


# ---------------------------------------------------------------------------- compositing


def color_match(face: np.ndarray, source: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per-channel mean and standard deviation of ``face`` made equal to those of ``source``
    where ``weight`` > 0.5. float32 ``[h,w,3]`` in 0..1 in, same out (clipped)."""
    sel = weight > 0.5
    if sel.sum() < 16:
        return face
    f, s = face[sel], source[sel]
    fm, fs = f.mean(0), f.std(0) + 1e-4
    sm, ss = s.mean(0), s.std(0)
    gain = np.clip(ss / fs, 0.5, 2.0)
    return np.clip((face - fm) * gain + sm, 0.0, 1.0).astype(np.float32)


def composite(
    frame: np.ndarray, face: np.ndarray, matrix: np.ndarray, mask_crop: np.ndarray, match_colors: bool = True
) -> np.ndarray:
    """Paste one generated face into its source frame.

    ``frame`` uint8 ``[H,W,3]``; ``face`` uint8 ``[224,224,3]`` in the generator view;
    ``matrix`` ``[2,3]`` frame -> crop pixels; ``mask_crop`` float32 ``[224,224]`` in crop pixels.
    Returns a new uint8 frame, equal to ``frame`` wherever the warped mask is 0."""
    out = frame.copy()
    warped_face = warp_into_frame(face.astype(np.float32) / 255.0, mask_crop, matrix, frame.shape[:2])
    if warped_face is None:
        return out
    (x0, y0, x1, y1), warped, mask = warped_face
    if not (mask > 0).any():
        return out
    src = out[y0:y1, x0:x1].astype(np.float32) / 255.0
    if match_colors:
        warped = color_match(warped, src, mask)
    blended = src + (warped - src) * mask[..., None]
    region = np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)
    inside = mask > 0
    out[y0:y1, x0:x1][inside] = region[inside]
    return out


# ------------------------------------------------------------------------------ planning


@dataclass
class DubPlan:
    """What a dub will produce. ``source_index`` int ``[T]``: the source frame behind each output
    frame; ``motion`` ``[T,542]``; ``generate`` bool ``[T]``: whether output frame t gets a generated
    face (its source frame has the tracked face)."""

    track: Track
    appearance: Appearance
    reference_frame: int
    motion: torch.Tensor
    source_index: np.ndarray
    generate: np.ndarray
    settings: DubSettings
    audio_seconds: float

    @property
    def num_frames(self) -> int:
        return int(len(self.source_index))

    @property
    def fps(self) -> Fraction:
        return self.track.fps


def _crops(source: FrameSource, track: Track, indices: np.ndarray, chunk: int) -> Iterator[torch.Tensor]:
    """Network batches [b,3,224,224] of the aligned crops of source frames ``indices`` (ascending)."""
    mats = track.matrices()
    want = set(int(i) for i in indices)
    buf, mbuf = [], []

    def batch() -> torch.Tensor:
        return images.to_network(np.stack([images.official_crop(c) for c in warp_crops(np.stack(buf), np.stack(mbuf))]))

    for t, frame in enumerate(source.frames(0, int(indices[-1]) + 1)):
        if t in want:
            buf.append(frame)
            mbuf.append(mats[t])
            if len(buf) == chunk:
                yield batch()
                buf, mbuf = [], []
                release_free_memory()  # the chunk's full-size frames, freed
    if buf:
        yield batch()


def _hold_fill(values: torch.Tensor, have: np.ndarray, n: int) -> torch.Tensor:
    """Rows for all ``n`` frames from rows known at ``have`` (ascending): nearest known row."""
    known = np.flatnonzero(have)
    pos = np.searchsorted(known, np.arange(n))
    left = known[np.clip(pos - 1, 0, len(known) - 1)]
    right = known[np.clip(pos, 0, len(known) - 1)]
    nearest = np.where(np.abs(np.arange(n) - left) <= np.abs(right - np.arange(n)), left, right)
    return values[torch.from_numpy(np.searchsorted(known, nearest))]


def mouth_for_video(
    engine: Engine, audio, num_frames: int, fps: Fraction, settings: DubSettings
) -> tuple[Factor, float]:
    """Lip factor ``[num_frames,500]`` from speech (path or ``(waveform, sample_rate)``) at the video's
    frame rate; output frames past the speech get the lips of silence. Also returns the speech's
    length in seconds."""
    wave, sr = audio_io.read_speech(audio)
    windows = audio_io.audio_to_windows(wave, sr, fps=float(fps), quality=settings.audio_quality)
    seconds = np.asarray(wave).shape[-1] / float(sr)
    n = min(num_frames, windows.shape[0])
    mouth = engine.encode_mouth(windows[:n], fps=float(fps)).values
    if n < num_frames:
        silent = audio_io.mel_windows(audio_io.mel_spectrogram(np.zeros(audio_io.MIN_SAMPLES * 4, np.float32)))[:1]
        rest = engine.encode_mouth(silent, fps=float(fps)).values.expand(num_frames - n, -1)
        mouth = torch.cat([mouth, rest])
    return Factor("mouth", mouth, fps=float(fps)), seconds


def plan_dub(
    engine: Engine,
    source: FrameSource,
    audio,
    settings: DubSettings | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> DubPlan:
    """Passes 1 and 2: track the face, encode appearance, pose, eyes, expression and the new lips,
    and decide which source frame each output frame shows. ``progress(stage, done, total)``."""
    settings = settings or DubSettings()
    track = track_face(source, settings, (lambda d, n: progress("track", d, n)) if progress else None)
    release_free_memory()  # each pass starts from what is kept, not from the last pass's freed buffers
    n_src = track.num_frames
    if track.detected.sum() < track.num_frames:
        log.info(
            "%s: the face is missing in %d of %d frames; they pass through unchanged",
            source.name,
            n_src - int(track.detected.sum()),
            n_src,
        )
    ref = choose_reference(track, settings)
    ref_crop = warp_crops(source.frame(ref)[None], track.matrices()[ref][None])
    appearance = engine.encode_appearance(images.to_network(images.official_crop(ref_crop[0])[None]))

    wave, sr = audio_io.read_speech(audio)
    audio_seconds = np.asarray(wave).shape[-1] / float(sr)
    if settings.length == "audio":
        n_out = max(1, audio_io.num_output_frames(round(audio_seconds * audio_io.SAMPLE_RATE), float(source.fps)))
        source_index = fit_indices(n_src, n_out, "pingpong").numpy()
    else:
        n_out = n_src
        source_index = np.arange(n_src)
    mouth, _ = mouth_for_video(engine, (wave, sr), n_out, source.fps, settings)
    del wave  # only the lip factor is needed from here on (pass 3 muxes the sound from `audio`)
    release_free_memory()
    if settings.mouth_strength != 1.0:
        mouth = Factor("mouth", mouth.values * float(settings.mouth_strength), fps=mouth.fps)

    tracked = np.flatnonzero(track.detected)
    done = [0]

    def on_batch(b):
        done[0] += b
        if progress:
            progress("encode", done[0], len(tracked))

    raw = engine.encode_drivers(
        _crops(source, track, tracked, settings.chunk),
        heads=("pose", "eye", "expression"),
        fps=float(source.fps),
        progress=on_batch,
    )
    release_free_memory()
    per_src = {k: _hold_fill(f.values, track.detected, n_src) for k, f in raw.items()}
    idx = torch.from_numpy(source_index)
    factors = {k: Factor(k, v[idx], fps=float(source.fps)) for k, v in per_src.items()}
    motion = assemble_motion(n_out, mouth=mouth, **factors, fit="truncate", post=settings.post)
    return DubPlan(track, appearance, ref, motion, source_index, track.detected[source_index], settings, audio_seconds)


def _source_frames_in_order(source: FrameSource, source_index: np.ndarray, budget_frames: int) -> Iterator[np.ndarray]:
    """Source frames for output order ``source_index`` (runs of +1 / -1 steps, as ping-pong makes).
    Forward runs stream; backward runs are read in blocks of ``budget_frames`` and reversed."""
    i, n = 0, len(source_index)
    while i < n:
        j = i + 1
        step = 1 if j >= n or source_index[j] >= source_index[i] else -1
        while j < n and source_index[j] - source_index[j - 1] == step:
            j += 1
        a, b = int(source_index[i]), int(source_index[j - 1])
        if step == 1:
            yield from source.frames(a, b + 1)
        else:
            hi = a + 1  # frames a, a-1, ..., b
            while hi > b:
                lo = max(b, hi - budget_frames)
                block = list(source.frames(lo, hi))
                yield from reversed(block)
                hi = lo
        i = j


def dub_frames(
    engine: Engine,
    source: FrameSource,
    plan: DubPlan,
    progress: Callable[[str, int, int | None], None] | None = None,
    check_interrupt: Callable[[], None] | None = None,
) -> Iterator[np.ndarray]:
    """Pass 3: the dubbed frames in output order, uint8 ``[b,H,W,3]`` chunks of ``settings.chunk``.
    Frames without the tracked face are the source frames, unchanged."""
    s = plan.settings
    if not s.watermark:
        log.warning(provenance.OPT_OUT_WARNING)
    mats = plan.track.matrices()
    mask = region_mask(s.mask, s.feather)
    h, w = plan.track.size
    budget = max(8, int((256 << 20) // (h * w * 3)))
    frames = _source_frames_in_order(source, plan.source_index, budget)
    done = 0
    for start in range(0, plan.num_frames, s.chunk):
        stop = min(start + s.chunk, plan.num_frames)
        block = []
        for _ in range(stop - start):
            try:
                block.append(next(frames))
            except StopIteration:
                raise InputError(f"{source.name}: ended early while rendering (frame {start + len(block)})") from None
        out = np.stack(block)
        todo = np.flatnonzero(plan.generate[start:stop])
        if len(todo):
            rows = plan.motion[torch.from_numpy(start + todo)]
            gen = torch.cat(
                list(
                    engine.generate(
                        plan.appearance, rows, batch_size=s.batch_size, noise=s.noise, check_interrupt=check_interrupt
                    )
                )
            )
            faces = images.network_to_u8(gen)
            if s.watermark:
                faces = provenance.embed(faces)
            for k, j in enumerate(todo):
                out[j] = composite(out[j], faces[k], mats[plan.source_index[start + j]], mask, s.color_match)
        done = stop
        if progress:
            progress("render", done, plan.num_frames)
        yield out
        del out, block
        release_free_memory()  # one chunk's 1080p buffers, freed in several threads' heaps


def write_dub(
    engine: Engine,
    source: FrameSource,
    plan: DubPlan,
    audio,
    out,
    *,
    frames_dir=None,
    progress: Callable[[str, int, int | None], None] | None = None,
    check_interrupt: Callable[[], None] | None = None,
    metadata: dict | None = None,
    sign=None,
) -> Path:
    """Pass 3 into the mp4 ``out``, written atomically: the source's size and frame rate, ``audio``
    (path or ``(waveform, sample_rate)``) muxed and lined up with the lips (cut or padded with
    silence to the video's length). ``frames_dir`` also writes every frame as PNG. ``metadata`` and
    ``sign``: container tags and the C2PA signing step, as for :class:`~pdfgc_core.media.Mp4Writer`
    (default: the provenance tags, no C2PA manifest)."""
    from .media import Mp4Writer, write_frames_png
    from .provenance import manifest

    if metadata is None:
        metadata = manifest.container_tags(watermarked=plan.settings.watermark)
    with Mp4Writer(
        out, fps=plan.fps, audio=audio, audio_offset=audio_io.AUDIO_LEAD_SECONDS, metadata=metadata, sign=sign
    ) as w:
        i = 0
        for chunk in dub_frames(engine, source, plan, progress, check_interrupt):
            w.write(chunk)
            if frames_dir is not None:
                write_frames_png(frames_dir, chunk, i)
            i += len(chunk)
    return Path(out)


def dub_to_file(
    engine: Engine,
    video,
    audio,
    out,
    settings: DubSettings | None = None,
    *,
    frames_dir=None,
    fps=None,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> DubPlan:
    """Dub ``video`` (file path, or uint8 frames ``[N,H,W,3]`` with ``fps``) with ``audio`` into the
    mp4 ``out``: :func:`plan_dub` then :func:`write_dub`."""
    source = video if isinstance(video, FrameSource) else FrameSource(video, fps=fps)
    plan = plan_dub(engine, source, audio, settings, progress)
    write_dub(engine, source, plan, audio, out, frames_dir=frames_dir, progress=progress)
    return plan
