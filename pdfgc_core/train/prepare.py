"""``python -m pdfgc_core prepare``: talking-head videos -> a sharded training dataset.

Per video (a bad video is reported and skipped, never stops the run):

1. audio: the inference front end (:mod:`pdfgc_core.audio`: decode, mono, 16 kHz, whole-clip RMS
   normalisation, log-mel); no usable audio -> skipped;
2. frames: decoded at 25 fps (other rates resampled by ffmpeg), frames larger than ``max_side``
   reduced, cut into clips of at most ``max_clip_seconds``;
3. faces: 68-point landmarks and alignment to the PD-FGC template in video mode
   (:func:`pdfgc_core.faces.align_faces`), then the official ``[0:192,16:208]`` crop + resize
   (:func:`pdfgc_core.images.official_crop`): the stored frames are exactly what the networks see;
   the landmarks are mapped into that 224x224 network image;
4. eye boxes (:mod:`.eyes`) and pose labels: a user label file when one is given, otherwise the
   landmark head pose (:func:`pdfgc_core.faces.estimate_head_poses`, generic 3D face +
   ``cv2.solvePnP``: the offline substitute for the paper's 3D face reconstruction).

Audio/video pairing: inference makes output frame ``j`` from audio window ``j`` and shows it with
the speech of video frame ``j + 2`` (``pipeline.AUDIO_LEAD_SECONDS`` at 25 fps), so a clip pairs
its frame ``j`` with the window of frame ``j - 2`` of the video; the first two frames of a video
have no window and are not used.

Pose labels (``POSE_UNITS``): pitch, yaw, roll in radians (``R = Rz(roll) Ry(yaw) Rx(pitch)``, zero
facing the camera) and the nose-tip translation of the generic 3D face in thousands of model units
(camera with focal length 224 px on the network image: an aligned face has tz of about 1.3). A
label file replaces them: ``<stem>.npy`` or ``<stem>.csv`` (comma separated, ``#`` comments) in the
``--pose-labels`` folder, or ``<video stem>.pose.npy|csv`` beside the video; one row of 6 numbers per
video frame at 25 fps, stored as given (e.g. Deep3DFaceRecon angles and translation).
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import (
    AUDIO_LEAD_SECONDS,
    MEL_FPS,
    OFFICIAL_FPS,
    WINDOW_FRAMES,
    load_audio,
    mel_spectrogram,
    num_windows,
    prepare_waveform,
    window_start,
)
from ..errors import FaceNotFoundError, InputError, MediaError
from ..faces import align_faces, apply_affine, compose_affine, estimate_head_poses, get_detector
from ..faces.align import MIN_EYE_DISTANCE, resize_affine
from ..faces.landmarks import LandmarkDetector
from ..images import CROP_COLS, CROP_ROWS, SIZE, official_crop
from ..media import VIDEO_EXTENSIONS, iter_frames
from . import shards
from .eyes import eye_boxes

FPS = OFFICIAL_FPS
LEAD_FRAMES = int(round(AUDIO_LEAD_SECONDS * FPS))
TRANSLATION_UNIT = 1000.0
POSE_UNITS = "pitch, yaw, roll radians; tx, ty, tz of the generic 3D face / 1000 (network image, focal 224 px)"
assert MEL_FPS % FPS == 0, "clips cut the mel spectrogram at whole mel frames"

SKIP_REASONS = {
    "unreadable": "the file cannot be decoded as a video",
    "no_audio": "no usable audio track",
    "bad_audio": "the audio cannot drive the lips (silent or too short)",
    "too_short": "too short",
    "no_face": "no face found",
    "small_face": "the face is too small",
    "bad_pose_labels": "the pose label file does not fit the video",
    "error": "unexpected error while preparing",
}


@dataclass(frozen=True)
class PrepareOptions:
    """``detector``: landmark backend (``dlib`` works offline). ``max_clip_seconds``: longer videos
    are cut into clips of this length. ``min_seconds``: shorter clips are dropped (a video giving
    none is "too_short"). ``max_side``: larger frames are reduced first (INTER_AREA). ``frame_codec``:
    "jpeg" (``jpeg_quality``) or "raw". ``pose_labels``: folder of label files. ``workers``: videos
    prepared in parallel (processes). ``shard_mb``: shard size. ``retry_skipped``: try again the
    videos an earlier run skipped."""

    detector: str = "dlib"
    max_clip_seconds: float = 10.0
    min_seconds: float = 1.0
    max_side: int = 1024
    frame_codec: str = "jpeg"
    jpeg_quality: int = 95
    pose_labels: str | None = None
    workers: int = 1
    shard_mb: float = 512.0
    retry_skipped: bool = False
    min_eye_distance: float = MIN_EYE_DISTANCE

    def check(self) -> None:
        if self.frame_codec not in shards.FRAME_CODECS:
            raise InputError(f"--frame-codec {self.frame_codec!r}: choose one of {', '.join(shards.FRAME_CODECS)}.")
        if not (self.max_clip_seconds > 0 and self.min_seconds > 0 and self.min_seconds <= self.max_clip_seconds):
            raise InputError("clip lengths: need 0 < --min-seconds <= --max-clip-seconds.")
        if self.workers < 1 or self.max_side < 64 or self.shard_mb <= 0 or not 1 <= self.jpeg_quality <= 100:
            raise InputError("--workers must be >= 1, --max-side >= 64, --shard-mb > 0, --jpeg-quality 1..100.")
        get_detector(self.detector)  # unknown backend -> InputError now, not per video


@dataclass
class VideoResult:
    """What one video gave: its clips, or why it was skipped (``skipped``: reason code, detail)."""

    source: str
    clips: list[shards.ClipData] = field(default_factory=list)
    skipped: tuple[str, str] | None = None
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ one video


class _Recorder(LandmarkDetector):
    """Passes detection on to ``inner`` and keeps every frame's faces, so the landmarks of the face
    the alignment chose can be mapped into the crop afterwards."""

    def __init__(self, inner: LandmarkDetector):
        self.inner, self.name, self.pre_aligned = inner, inner.name, inner.pre_aligned
        self.faces: list = []

    def detect(self, rgb):
        faces = self.inner.detect(rgb)
        self.faces.append(faces)
        return faces


def crop_to_network() -> np.ndarray:
    """[2,3] affine: pixels of a 224x224 template crop -> pixels of the network image after
    :func:`pdfgc_core.images.official_crop` (rows/cols cut, then resized back to 224)."""
    shift = np.array([[1.0, 0.0, -CROP_COLS[0]], [0.0, 1.0, -CROP_ROWS[0]]])
    cut = (CROP_ROWS[1] - CROP_ROWS[0], CROP_COLS[1] - CROP_COLS[0])
    return compose_affine(resize_affine(cut, (SIZE, SIZE)), shift)


def landmark_poses(landmarks: np.ndarray) -> np.ndarray:
    """Pose labels [N,6] in ``POSE_UNITS`` from network-image landmarks [N,68,2] (NaN rows stay NaN)."""
    raw = estimate_head_poses(landmarks, SIZE, SIZE)
    return np.concatenate([np.radians(raw[:, :3]), raw[:, 3:] / TRANSLATION_UNIT], 1).astype(np.float32)


def find_label_file(video: Path, labels_dir) -> Path | None:
    names = [f"{video.stem}.npy", f"{video.stem}.csv"]
    places = [Path(labels_dir) / n for n in names] if labels_dir else []
    places += [video.with_name(f"{video.stem}.pose.npy"), video.with_name(f"{video.stem}.pose.csv")]
    return next((p for p in places if p.is_file()), None)


def read_label_file(path: Path) -> np.ndarray:
    """[R,6] float32 from a .npy or .csv label file; :class:`InputError` if it is anything else."""
    try:
        a = np.load(path, allow_pickle=False) if path.suffix == ".npy" else np.loadtxt(path, delimiter=",", ndmin=2)
    except (OSError, ValueError) as e:
        raise InputError(f"pose label file {path} cannot be read ({e})") from None
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 6 or not np.isfinite(a).all():
        raise InputError(f"pose label file {path}: expected finite rows of 6 numbers, got shape {a.shape}")
    return a.astype(np.float32)


def _clip_id(source: str, start: int) -> str:
    return "c" + hashlib.sha1(f"{source}#{start}".encode()).hexdigest()[:15]


def _segment(frames, start, source, mel, labels, opts, detector) -> tuple[shards.ClipData | None, tuple | None]:
    """One clip from frames [n,H,W,3] whose first frame is video frame ``start``."""
    rec = _Recorder(detector)
    name = f"{source} (frames {start}..{start + len(frames) - 1})"
    try:
        crops, info = align_faces(
            np.stack(frames), rec, mode="video", min_eye_distance=opts.min_eye_distance, name=name
        )
    except FaceNotFoundError as e:
        return None, ("no_face", str(e))
    except InputError as e:
        return None, ("small_face", str(e))
    n = len(crops)
    net = np.stack([official_crop(c) for c in crops])
    lm = np.full((n, 68, 2), np.nan)
    c2n = crop_to_network()
    for t in range(n):
        if info.detected[t]:
            face = min(rec.faces[t], key=lambda f: float(np.abs(f.points - info.points[t]).max()))
            lm[t] = apply_affine(compose_affine(c2n, info.matrices[t]), face.landmarks)
    lm = lm.astype(np.float32)
    if labels is not None:
        pose, pose_source = labels[start : start + n].copy(), "file"
    else:
        pose, pose_source = landmark_poses(lm), "landmarks"
    w0 = start - LEAD_FRAMES  # the audio window of the clip's first frame
    m0, m1 = window_start(w0, FPS), window_start(w0 + n - 1, FPS) + WINDOW_FRAMES
    clip = shards.ClipData(
        clip_id=_clip_id(source, start),
        source=source,
        start_frame=start,
        frames=net,
        mel=np.ascontiguousarray(mel[m0:m1], dtype=np.float32),
        landmarks=lm,
        eye_box=eye_boxes(lm, SIZE),
        pose=np.asarray(pose, np.float32),
        detected=info.detected.astype(np.uint8),
        pose_source=pose_source,
        notes=list(info.notes),
    )
    return clip, None


def _reduce(frame: np.ndarray, max_side: int) -> np.ndarray:
    h, w = frame.shape[:2]
    if max(h, w) <= max_side:
        return frame
    import cv2

    s = max_side / max(h, w)
    return cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _readable(path: Path) -> bool:
    try:
        frames = iter_frames(path, stop=1)
        next(frames, None)
        frames.close()
        return True
    except MediaError:
        return False


def prepare_video(path, opts: PrepareOptions) -> VideoResult:
    """All clips of one video, or the reason it gives none. Never raises for a bad video."""
    source = str(Path(path).resolve())
    res = VideoResult(source)
    try:
        return _prepare_video(Path(source), opts, res)
    except Exception as e:  # a bad video must never stop the run: report it
        res.clips, res.skipped = [], ("error", f"{type(e).__name__}: {e}")
        return res


def _prepare_video(path: Path, opts: PrepareOptions, res: VideoResult) -> VideoResult:
    try:
        wave, sr = load_audio(path)
    except MediaError as e:
        res.skipped = ("no_audio", str(e)) if _readable(path) else ("unreadable", str(e))
        return res
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            wave16 = prepare_waveform(wave, sr)
        except InputError as e:
            res.skipped = ("bad_audio", str(e))
            return res
    res.notes += [f"audio: {w.message}" for w in caught]
    mel = mel_spectrogram(wave16).numpy()
    last = num_windows(len(mel), FPS) + LEAD_FRAMES  # frames [LEAD_FRAMES, last) have a window
    labels = None
    label_file = find_label_file(path, opts.pose_labels)
    if label_file is not None:
        try:
            labels = read_label_file(label_file)
        except InputError as e:
            res.skipped = ("bad_pose_labels", str(e))
            return res
    seg_len = max(1, int(round(opts.max_clip_seconds * FPS)))
    min_len = max(1, int(math.ceil(opts.min_seconds * FPS)))
    detector = get_detector(opts.detector)
    failures, buf, start, seen = [], [], LEAD_FRAMES, 0

    def flush():
        if len(buf) < min_len:
            if buf:
                res.notes.append(f"frames {start}..{start + len(buf) - 1}: {len(buf)} frames, under --min-seconds")
            return
        if labels is not None and len(labels) < start + len(buf):
            failures.append(
                (
                    "bad_pose_labels",
                    f"{label_file} has {len(labels)} rows; frames up to {start + len(buf) - 1} need one each",
                )
            )
            return
        clip, fail = _segment(buf, start, str(path), mel, labels, opts, detector)
        if clip is not None:
            res.clips.append(clip)
        else:
            failures.append(fail)

    try:
        for g, frame in enumerate(iter_frames(path, fps=FPS)):
            seen = g + 1
            if g >= last:
                break
            if g < LEAD_FRAMES:
                continue
            buf.append(_reduce(frame, opts.max_side))
            if len(buf) == seg_len:
                flush()
                buf, start = [], g + 1
    except MediaError as e:
        if not res.clips and not buf:
            res.skipped = ("unreadable", str(e))
            return res
        res.notes.append(f"decoding stopped early: {e}")
    flush()
    if not res.clips:
        if failures:
            res.skipped = failures[0]
        else:
            usable = max(0, min(seen, last) - LEAD_FRAMES)
            res.skipped = (
                "too_short",
                f"{usable} usable frames at {FPS:g} fps (video and audio overlap); at least {min_len} "
                f"(--min-seconds {opts.min_seconds:g}) are needed",
            )
        return res
    res.notes += [f"a clip was dropped: {SKIP_REASONS[r]}: {d}" for r, d in failures]
    return res


# ------------------------------------------------------------------------------- the run


def find_videos(inputs) -> list[Path]:
    """Video files named in ``inputs``, and those found (recursively) in the folders named, sorted
    and without duplicates. A path that does not exist raises :class:`InputError`."""
    found = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found += [q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in VIDEO_EXTENSIONS]
        elif p.is_file():
            found.append(p)
        else:
            raise InputError(f"prepare: {p} does not exist; give video files or folders holding videos.")
    out, seen = [], set()
    for p in sorted(q.resolve() for q in found):
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


@dataclass
class PrepareReport:
    """The outcome of a prepare run (``index`` is the dataset's index after it)."""

    out: Path
    videos: int
    already_done: int
    prepared: int
    clips: int
    skipped: list[dict]
    index: dict

    def lines(self) -> list[str]:
        clips = self.index["clips"]
        frames = sum(c["num_frames"] for c in clips)
        out = [
            f"{self.out}: {len(clips)} clips, {frames} frames ({frames / FPS / 60:.1f} min) in total",
            f"this run: {self.prepared} video(s) prepared into {self.clips} clip(s), {len(self.skipped)} skipped, "
            f"{self.already_done} already done",
        ]
        for r in self.skipped:
            out.append(f"  skipped {r['source']}: {r['reason']} ({SKIP_REASONS.get(r['reason'], '')}): {r['detail']}")
        return out


def _init_worker() -> None:
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def _progress_line(done: int, total: int, clips: int, skipped: int, t0: float) -> str:
    el = time.perf_counter() - t0
    eta = el / done * (total - done) if done else float("nan")
    return (
        f"[prepare] {done}/{total} videos, {clips} clips, {skipped} skipped, {el:.0f} s elapsed, ETA {eta:.0f} s"
        if done
        else f"[prepare] 0/{total} videos"
    )


def prepare(inputs, out, opts: PrepareOptions | None = None, echo=None) -> PrepareReport:
    """Prepares every video of ``inputs`` into the dataset folder ``out`` (resuming a previous run:
    videos already in a finished shard, or skipped before, are not done again unless
    ``opts.retry_skipped``). ``echo(line)`` receives progress lines (default: stderr)."""
    opts = opts or PrepareOptions()
    opts.check()
    echo = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    out = Path(out)
    videos = find_videos(inputs)
    if not videos:
        raise InputError(
            f"prepare: no video files ({', '.join(sorted(VIDEO_EXTENSIONS))}) in {', '.join(map(str, inputs))}."
        )
    out.mkdir(parents=True, exist_ok=True)
    done = {s for _, _, sources in shards.finished_shards(out) for s in sources}
    before = shards.read_skipped(out)
    todo = [v for v in videos if str(v) not in done and (opts.retry_skipped or str(v) not in before)]
    writer = shards.ShardWriter(out, opts.frame_codec, opts.jpeg_quality, int(opts.shard_mb * (1 << 20)))
    skipped, count, t0 = [], {"videos": 0, "clips": 0}, time.perf_counter()
    shown = [0.0]  # time of the last progress line (at most one a second, and the last one)

    def take(res: VideoResult) -> None:
        if res.clips:
            writer.add(res.source, res.clips)
            count["videos"] += 1
            count["clips"] += len(res.clips)
        else:
            reason, detail = res.skipped or ("error", "no clip and no reason")
            rec = {"source": res.source, "reason": reason, "detail": detail}
            shards.append_skipped(out, rec)
            skipped.append(rec)
        done = count["videos"] + len(skipped)
        if time.perf_counter() - shown[0] >= 1.0 or done == len(todo):
            shown[0] = time.perf_counter()
            echo(_progress_line(done, len(todo), count["clips"], len(skipped), t0))

    echo(f"[prepare] {len(videos)} video(s), {len(videos) - len(todo)} already done, {len(todo)} to prepare")
    if opts.workers <= 1 or len(todo) <= 1:
        for v in todo:
            take(prepare_video(v, opts))
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(opts.workers, len(todo)), mp_context=ctx, initializer=_init_worker) as pool:
            futures = {pool.submit(prepare_video, v, opts): v for v in todo}
            for fut in as_completed(futures):
                try:
                    res = fut.result()
                except BrokenProcessPool:
                    res = VideoResult(
                        str(futures[fut]),
                        skipped=("error", "a worker process died while preparing it; rerun with --retry-skipped"),
                    )
                take(res)
    writer.flush()
    extra = {"fps": FPS, "audio_lead_frames": LEAD_FRAMES, "pose_units": POSE_UNITS, "image_size": SIZE}
    index = shards.write_index(out, extra)
    return PrepareReport(out, len(videos), len(videos) - len(todo), count["videos"], count["clips"], skipped, index)


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) // 2))
