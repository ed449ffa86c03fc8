"""Reading driving media: frame folders, single images and video files as streams of RGB uint8 frames."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InputError, MediaError
from .ffmpeg import fps_arg, short_error
from .listing import file_kind, list_files

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".avi", ".mkv", ".gif"})


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` learns about a driving source.

    kind: "frames" (a folder of images), "image" (one image) or "video".
    num_frames: frames :func:`iter_frames` yields with no range and no ``fps``.
    fps: the video's frame rate; None for frames / images or when the container has none.
    width, height: size of the decoded frames in pixels (the first file for a folder).
    has_audio: whether a video carries an audio stream.
    duration: seconds of video as ffmpeg decodes it; None for frames / images.
    """

    kind: str
    num_frames: int | None
    fps: float | None
    width: int
    height: int
    has_audio: bool
    duration: float | None = None
    path: Path | None = None


MAX_FRAME_FILES = 1_000_000
"""Entries a frame folder may hold (about 11 hours of frames at 25 fps); a larger folder is refused."""


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """Image files (png / jpg / jpeg / bmp / webp, any case) in ``folder``, sorted by file name
    as a plain string (the official loader's ``sorted(os.listdir(...))``). Hidden files,
    sub-folders and anything that is not a regular file (FIFOs, devices, sockets, broken links)
    are skipped. Raises MediaError when the folder is missing, holds no image, or holds more than
    :data:`MAX_FRAME_FILES` entries."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MediaError(f"Frame folder {folder} does not exist or is not a folder.")
    try:
        found = list_files(folder, IMAGE_EXTENSIONS, max_entries=MAX_FRAME_FILES, max_seconds=0)
    except MediaError as e:
        raise MediaError(f"Cannot list the frame folder {folder}: {e}") from None
    if found.stopped:
        raise MediaError(
            f"Frame folder {folder} was not read: {found.stopped}. Put only the driving frames in it, "
            "or pass a video file instead."
        )
    files = [folder / n for n in found.files]
    if not files:
        exts = ", ".join(sorted(e[1:] for e in IMAGE_EXTENSIONS))
        raise MediaError(
            f"Frame folder {folder} holds no image files ({exts}). "
            "Put the driving frames there or pass a video file instead."
        )
    return files


def _read_image_file(path: Path) -> np.ndarray:
    """One image file -> RGB uint8 [H,W,3], decoded like ``cv2.imread(path, IMREAD_COLOR)``."""
    from ..images import read_image

    return read_image(path)


def _source_kind(path: Path) -> str:
    if path.is_dir():
        return "frames"
    if not path.exists():
        raise MediaError(
            f"Driving source {path} does not exist. Pass a folder of frames, an "
            "image or a video file (mp4, mov, webm, avi, mkv, gif)."
        )
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):  # opening a FIFO would block forever, a device may never end
        raise MediaError(f"Driving source {path} is {file_kind(st)}, not a regular file. Pass a folder or a file.")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return "image"
    return "video"  # VIDEO_EXTENSIONS, or anything else ffmpeg may still read


def _check_range(start: int, stop: int | None, step: int) -> None:
    if int(start) != start or start < 0:
        raise InputError(f"start must be an integer >= 0, got {start!r}.")
    if stop is not None and (int(stop) != stop or stop < 0):
        raise InputError(f"stop must be None or an integer >= 0, got {stop!r}.")
    if int(step) != step or step < 1:
        raise InputError(f"step must be an integer >= 1, got {step!r}.")


def _fps_filter(fps: float | Fraction | None) -> list[str]:
    if fps is None:
        return ["-fps_mode", "passthrough"]
    if not (isinstance(fps, (int, float, Fraction)) and float(fps) > 0 and np.isfinite(float(fps))):
        raise InputError(f"fps must be a positive number or None, got {fps!r}.")
    return ["-vf", f"fps={fps_arg(fps)}"]


def _open_video(path: Path, output_params: list[str], input_params: list[str] | None = None):
    """Start imageio-ffmpeg's reader; returns (generator, meta). Errors -> MediaError. The frame
    size the stream declares is checked (``images.check_image_size``) before any frame is read."""
    import imageio_ffmpeg

    from ..images import check_image_size

    gen = imageio_ffmpeg.read_frames(str(path), input_params=input_params, output_params=output_params)
    try:
        meta = next(gen)
    except Exception as e:  # corrupt container, no video stream, unparsable header
        gen.close()
        raise MediaError(
            f"Cannot read video {path}: no decodable video stream ({short_error(e)}). "
            "Check that the file is a complete video (mp4, mov, webm, avi, mkv, gif)."
        ) from e
    try:
        check_image_size(*meta["size"], f"Each frame of video {path}")
    except BaseException:
        gen.close()
        raise
    return gen, meta


def _decoded(path: Path, gen, meta, first: int, stop: int | None) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, RGB uint8 [H,W,3]) from an open reader whose first frame is frame ``first``,
    up to ``stop``; a decoding failure is a MediaError naming the frame. Closes the reader."""
    try:
        w, h = meta["size"]
        i = first
        while stop is None or i < stop:
            try:
                buf = next(gen)
            except StopIteration:
                break
            except Exception as e:
                raise MediaError(f"Video {path} is damaged: decoding stopped at frame {i} ({short_error(e)}).") from e
            yield i, np.frombuffer(buf, np.uint8).reshape(h, w, 3).copy()
            i += 1
    finally:
        gen.close()  # terminates ffmpeg when the caller stops early


def _iter_video(path: Path, start: int, stop: int | None, step: int, fps) -> Iterator[tuple[str, np.ndarray]]:
    gen, meta = _open_video(path, _fps_filter(fps))
    seen = False
    for i, frame in _decoded(path, gen, meta, 0, stop):
        seen = True
        if i >= start and (i - start) % step == 0:
            yield f"{path} frame {i}", frame
    if not seen and (stop is None or stop > 0):
        raise MediaError(f"Video {path} has no decodable frames.")


def _iter_labeled(path, start=0, stop=None, step=1, fps=None) -> Iterator[tuple[str, np.ndarray]]:
    path = Path(path)
    _check_range(start, stop, step)
    kind = _source_kind(path)
    if kind == "video":
        _fps_filter(fps)  # validate now, not on first next()
        return _iter_video(path, start, stop, step, fps)
    files = list_frame_files(path) if kind == "frames" else [path]
    return ((str(f), _read_image_file(f)) for f in files[start:stop:step])


def iter_frames(
    path: str | os.PathLike,
    start: int = 0,
    stop: int | None = None,
    step: int = 1,
    *,
    fps: float | Fraction | None = None,
) -> Iterator[np.ndarray]:
    """Stream the frames of a folder of images, a single image or a video file.

    Yields RGB uint8 arrays [H, W, 3] for frame indices ``range(start, stop, step)`` (stop
    None: to the end). Frames are produced lazily; only the current frame is in memory.
    Stopping early (break, ``close()``) stops ffmpeg. ``fps`` resamples a video to that
    constant rate first (ffmpeg's fps filter); it is ignored for folders and images, whose
    frames have no time base. Unreadable files raise MediaError naming the file; a bad path
    or range raises before the first frame.
    """
    return _frames_only(_iter_labeled(path, start, stop, step, fps))


def _frames_only(labeled) -> Iterator[np.ndarray]:
    try:
        for _, frame in labeled:
            yield frame
    finally:
        close = getattr(labeled, "close", None)
        if close is not None:
            close()


def read_frames(
    path: str | os.PathLike,
    max_frames: int | None = None,
    *,
    max_bytes: int | None = None,
    start: int = 0,
    stop: int | None = None,
    step: int = 1,
    fps: float | Fraction | None = None,
) -> np.ndarray:
    """All (selected) frames of a source as one array [N, H, W, 3] RGB uint8.

    ``max_frames`` / ``max_bytes`` are safety limits: when the selection holds more frames,
    or would take more bytes, MediaError is raised as soon as that is known (nothing beyond
    the limit is decoded). Use ``stop`` to take a prefix instead, or :func:`iter_frames` to
    stream. All frames must share one size (folder files are not resized here).
    """
    if max_frames is not None and (int(max_frames) != max_frames or max_frames < 1):
        raise InputError(f"max_frames must be None or an integer >= 1, got {max_frames!r}.")
    frames: list[np.ndarray] = []
    total = 0
    for label, frame in _iter_labeled(path, start, stop, step, fps):
        if frames and frame.shape != frames[0].shape:
            raise MediaError(
                f"{label} is {frame.shape[1]}x{frame.shape[0]} but the first frame of "
                f"{path} is {frames[0].shape[1]}x{frames[0].shape[0]}. Give every "
                "frame the same size."
            )
        if max_frames is not None and len(frames) >= max_frames:
            raise MediaError(
                f"{path} has more than {max_frames} frames (max_frames). Raise the "
                "limit, read a range with stop=, or stream with iter_frames()."
            )
        total += frame.nbytes
        if max_bytes is not None and total > max_bytes:
            raise MediaError(
                f"Reading {path} would take more than {max_bytes} bytes (max_bytes) "
                f"at frame {len(frames)}. Read a shorter range or stream with iter_frames()."
            )
        frames.append(frame)
    if not frames:
        raise MediaError(f"No frames were read from {path} with start={start}, stop={stop}, step={step}.")
    out = np.empty((len(frames),) + frames[0].shape, np.uint8)
    for i in range(len(frames)):
        out[i] = frames[i]
        frames[i] = None  # keep the peak near one copy
    return out


def seek_frames(path: str | os.PathLike, fps: float, start: int, stop: int | None = None) -> Iterator[np.ndarray]:
    """Frames ``start .. stop-1`` of a constant-frame-rate video by an input seek: fast however far
    into a long video ``start`` is. ffmpeg's accurate seek decodes from the key frame before and
    drops the frames before the time asked for, half a frame before frame ``start``, so the first
    frame yielded is frame ``start``. RGB uint8 [H, W, 3], as :func:`iter_frames`."""
    path = Path(path)
    _check_range(start, stop, 1)
    t = max(0.0, (start - 0.5) / float(fps))
    gen, meta = _open_video(path, ["-fps_mode", "passthrough"], ["-ss", f"{t:.6f}"] if start > 0 else None)
    for _, frame in _decoded(path, gen, meta, start, stop):
        yield frame


def video_meta(path: str | os.PathLike) -> MediaInfo:
    """Frame rate, size and audio presence of a video file from its header, without decoding it
    (``num_frames`` and ``duration`` are None: use :func:`probe` to count)."""
    path = Path(path)
    if _source_kind(path) != "video":
        raise InputError(f"{path}: expected a video file ({', '.join(sorted(VIDEO_EXTENSIONS))}).")
    gen, meta = _open_video(path, ["-fps_mode", "passthrough"])
    gen.close()
    w, h = meta["size"]
    return MediaInfo(
        "video", None, float(meta.get("fps") or 0) or None, int(w), int(h), "audio_codec" in meta, None, path
    )


def probe(path: str | os.PathLike) -> MediaInfo:
    """Kind, frame count, rate, size and audio presence of a driving source.

    For a video, ``num_frames`` comes from decoding the whole stream once
    (``imageio_ffmpeg.count_frames_and_secs``): exact, but as slow as a decode without the
    copy to Python. For a folder only the first file is decoded.
    """
    import imageio_ffmpeg

    path = Path(path)
    kind = _source_kind(path)
    if kind != "video":
        files = list_frame_files(path) if kind == "frames" else [path]
        h, w = _read_image_file(files[0]).shape[:2]
        return MediaInfo(kind, len(files), None, w, h, False, None, path)
    gen, meta = _open_video(path, ["-fps_mode", "passthrough"])
    gen.close()
    try:
        n, secs = imageio_ffmpeg.count_frames_and_secs(str(path))
    except Exception as e:
        raise MediaError(f"Cannot count the frames of video {path} ({short_error(e)}).") from e
    w, h = meta["size"]
    fps = float(meta.get("fps") or 0) or None
    return MediaInfo(
        "video", int(n), fps, int(w), int(h), "audio_codec" in meta, float(secs) if secs is not None else None, path
    )
