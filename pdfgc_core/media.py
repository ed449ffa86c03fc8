"""Driving media in, mp4 with sound out: frame folders, single images and video files are
read as a stream of RGB uint8 frames; results are written as H.264 + AAC mp4 atomically.

Frames everywhere in this module are numpy ``uint8`` arrays ``[H, W, 3]`` in RGB order,
``0..255`` (a batch is ``[B, H, W, 3]``). Nothing here imports torch or ComfyUI; the ffmpeg
binary is the static one shipped by ``imageio-ffmpeg`` (``imageio_ffmpeg.get_ffmpeg_exe()``).

Decoding rules
  * Frame folders and single images are decoded like the official loader:
    ``cv2.imread(path, IMREAD_COLOR)`` then BGR -> RGB. That fixes what other files become:
    grayscale is replicated to three channels; an alpha channel is dropped (not composited,
    so transparent pixels show their stored colour); 16-bit samples keep their high byte
    (``v >> 8``); JPEG EXIF orientation is applied.
  * Folders list image files (png, jpg, jpeg, bmp, webp; any case) sorted by file name as a
    plain string, as ``sorted(os.listdir(folder))`` does (``"10.png" < "2.png"``). Hidden
    files (``.name``) are skipped.
  * Videos are decoded by ffmpeg to rgb24 and streamed one frame at a time: every decoded
    frame once (``-fps_mode passthrough``), or resampled to a constant rate with ``fps=``.

Writing rules
  * :class:`Mp4Writer` pipes raw frames into ffmpeg (libx264, ``crf``/``preset``/``pix_fmt``)
    writing a hidden temporary file beside ``path``; the audio, if any, is muxed in a second
    pass as AAC, padded with silence or cut so it lasts exactly as long as the video (the
    video decides the length; ``-shortest`` guards the rest). Only a clean finish renames the
    result onto ``path`` (``os.replace``); an exception, KeyboardInterrupt or :meth:`abort`
    kills ffmpeg and deletes every temporary file, leaving a pre-existing ``path`` untouched.
  * With chroma-subsampled pixel formats (``yuv420p``: even width and height;
    ``yuv422p``: even width) odd frame sizes are padded by one pixel on the right / bottom,
    repeating the last column / row. The written video is then 1 px larger than the frames.
  * Float frames are taken as ``0..1`` and converted with ``round(clip(x, 0, 1) * 255)``:
    rounding (not truncation) maps ``k / 255`` back to ``k`` exactly.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import InputError, MediaError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".avi", ".mkv", ".gif"})

_AUDIO_BITRATE = "192k"


def ffmpeg_exe() -> str:
    """Path of an ffmpeg binary: imageio-ffmpeg's bundled one, else one on PATH."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:
        import shutil

        exe = shutil.which("ffmpeg")
        if exe is None:
            raise MediaError(
                "No ffmpeg binary found. Install imageio-ffmpeg (pip install imageio-ffmpeg) or put ffmpeg on PATH."
            ) from None
        return exe


# ---------------------------------------------------------------------------------------
# atomic files


def _temp_sibling(path: Path, tag: str) -> Path:
    """A hidden, unique, not yet existing name in ``path``'s folder with ``path``'s suffix
    (so tools that pick a format from the extension still do)."""
    return path.with_name(f".{path.stem}.{secrets.token_hex(6)}.{tag}{path.suffix}")


def _unlink(path: Path | None) -> None:
    if path is not None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError:
            pass  # best effort: a file still held open elsewhere (Windows) cannot go now


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit(tmp: Path, path: Path) -> None:
    """fsync ``tmp`` and rename it onto ``path`` in one step (same folder, same filesystem)."""
    _fsync(tmp)
    try:
        os.replace(tmp, path)
    except OSError as e:
        raise MediaError(
            f"Could not move the finished file onto {path}: {e}. "
            f"Check that {path} is not a folder and that the folder is writable."
        ) from e


def _prepare_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MediaError(f"Cannot create the output folder {path.parent}: {e}.") from e


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Write a file all-or-nothing.

    Yields a temporary path in the same folder as ``path`` (hidden name, same suffix, not yet
    created). Write the complete file there by any means; on a clean exit it is fsynced and
    renamed onto ``path`` with ``os.replace``. On any exception (KeyboardInterrupt included)
    the temporary file is deleted and ``path``, whether it existed before or not, is left
    as it was. The output folder is created if missing.

        with atomic_write("out/factors.safetensors") as tmp:
            safetensors.torch.save_file(tensors, tmp)
    """
    path = Path(path)
    _prepare_parent(path)
    tmp = _temp_sibling(path, "part")
    try:
        yield tmp
        if not tmp.is_file():
            raise MediaError(f"Nothing was written for {path}: the temporary file {tmp.name} was not created.")
        _commit(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------
# reading


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
    num_frames: int
    fps: float | None
    width: int
    height: int
    has_audio: bool
    duration: float | None = None
    path: Path | None = None


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """Image files (png / jpg / jpeg / bmp / webp, any case) in ``folder``, sorted by file name
    as a plain string (the official loader's ``sorted(os.listdir(...))``). Hidden files and
    sub-folders are skipped. Raises MediaError when the folder is missing or holds no image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MediaError(f"Frame folder {folder} does not exist or is not a folder.")
    try:
        names = sorted(os.listdir(folder))
    except OSError as e:
        raise MediaError(f"Cannot list the frame folder {folder}: {e}.") from e
    files = [
        folder / n
        for n in names
        if not n.startswith(".") and os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS and (folder / n).is_file()
    ]
    if not files:
        exts = ", ".join(sorted(e[1:] for e in IMAGE_EXTENSIONS))
        raise MediaError(
            f"Frame folder {folder} holds no image files ({exts}). "
            "Put the driving frames there or pass a video file instead."
        )
    return files


def _read_image_file(path: Path) -> np.ndarray:
    """One image file -> RGB uint8 [H,W,3], decoded like ``cv2.imread(path, IMREAD_COLOR)``."""
    from .images import read_image

    return read_image(path)


def _source_kind(path: Path) -> str:
    if path.is_dir():
        return "frames"
    if not path.exists():
        raise MediaError(
            f"Driving source {path} does not exist. Pass a folder of frames, an "
            "image or a video file (mp4, mov, webm, avi, mkv, gif)."
        )
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
    return ["-vf", f"fps={_fps_arg(fps)}"]


def _fps_arg(fps: float | Fraction) -> str:
    if isinstance(fps, Fraction):
        return f"{fps.numerator}/{fps.denominator}"
    return repr(float(fps)) if not float(fps).is_integer() else str(int(fps))


def _open_video(path: Path, output_params: list[str]):
    """Start imageio-ffmpeg's reader; returns (generator, meta). Errors -> MediaError."""
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path), output_params=output_params)
    try:
        meta = next(gen)
    except Exception as e:  # corrupt container, no video stream, unparsable header
        gen.close()
        raise MediaError(
            f"Cannot read video {path}: no decodable video stream ({_short(e)}). "
            "Check that the file is a complete video (mp4, mov, webm, avi, mkv, gif)."
        ) from e
    return gen, meta


_FFMPEG_BANNER = ("ffmpeg version", "built with", "configuration:", "lib", "=== stderr", "Could not load meta")


def _short(e: BaseException, limit: int = 400) -> str:
    """The last informative lines of an error text (ffmpeg's version banner dropped)."""
    lines = [ln.strip() for ln in str(e).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(_FFMPEG_BANNER)] or [str(e).strip()]
    text = " | ".join(lines[-3:])
    return text if len(text) <= limit else "... " + text[-limit:]


def _iter_video(path: Path, start: int, stop: int | None, step: int, fps) -> Iterator[tuple[str, np.ndarray]]:
    gen, meta = _open_video(path, _fps_filter(fps))
    try:
        w, h = meta["size"]
        i = 0
        while stop is None or i < stop:
            try:
                buf = next(gen)
            except StopIteration:
                break
            except Exception as e:
                raise MediaError(f"Video {path} is damaged: decoding stopped at frame {i} ({_short(e)}).") from e
            if i >= start and (i - start) % step == 0:
                yield f"{path} frame {i}", np.frombuffer(buf, np.uint8).reshape(h, w, 3).copy()
            i += 1
        if i == 0 and (stop is None or stop > 0):
            raise MediaError(f"Video {path} has no decodable frames.")
    finally:
        gen.close()  # terminates ffmpeg when the caller stops early


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
        raise MediaError(f"Cannot count the frames of video {path} ({_short(e)}).") from e
    w, h = meta["size"]
    fps = float(meta.get("fps") or 0) or None
    return MediaInfo(
        "video", int(n), fps, int(w), int(h), "audio_codec" in meta, float(secs) if secs is not None else None, path
    )


# ---------------------------------------------------------------------------------------
# writing


def _to_uint8_rgb(frames, what: str = "frames") -> np.ndarray:
    """uint8 / float 0..1 (numpy, or anything with ``__array__``; torch tensors are moved to
    the CPU) in [H,W,3], [B,H,W,3] or grayscale [H,W] / [...,1] -> uint8 [B,H,W,3]."""
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    a = np.asarray(frames)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] not in (1, 3) or min(a.shape[1:3]) < 1:
        raise InputError(
            f"{what} must be RGB images [H,W,3] or [B,H,W,3] (grayscale [H,W] or "
            f"[...,1] also accepted), got shape {tuple(a.shape)}."
        )
    if a.dtype == np.uint8:
        pass
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InputError(f"{what} contain NaN or infinite values.")
        a = np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer):
        if a.size and (a.min() < 0 or a.max() > 255):
            raise InputError(f"{what} are integers outside 0..255 (dtype {a.dtype}); pass uint8, or floats in 0..1.")
        a = a.astype(np.uint8)
    else:
        raise InputError(f"{what} have dtype {a.dtype}; pass uint8 0..255 or float 0..1.")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a


def _even_shape(pix_fmt: str, h: int, w: int) -> tuple[int, int]:
    sub_w = any(t in pix_fmt for t in ("420", "422", "411", "nv12", "nv21", "yuyv", "uyvy"))
    sub_h = any(t in pix_fmt for t in ("420", "nv12", "nv21"))
    return h + (h % 2 if sub_h else 0), w + (w % 2 if sub_w else 0)


def _pad_edge(a: np.ndarray, h: int, w: int) -> np.ndarray:
    if a.shape[1:3] == (h, w):
        return a
    return np.pad(a, ((0, 0), (0, h - a.shape[1]), (0, w - a.shape[2]), (0, 0)), mode="edge")


def _prepare_waveform(waveform, sample_rate) -> np.ndarray:
    """-> float32 [N, C] for soundfile."""
    if hasattr(waveform, "detach"):
        waveform = waveform.detach().cpu().numpy()
    x = np.asarray(waveform)
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] < 1:
        raise InputError(f"audio waveform must be [N] or [C, N] (or [1, C, N]), got shape {tuple(x.shape)}.")
    if x.shape[0] > 16:
        raise InputError(
            f"audio waveform of shape {tuple(x.shape)} has {x.shape[0]} channels; pass it as [C, N] (channels first)."
        )
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise InputError(f"audio waveform has dtype {x.dtype}; pass float32 in -1..1.")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise InputError("audio waveform contains NaN or infinite values.")
    if not (int(sample_rate) == sample_rate and 1000 <= sample_rate <= 384000):
        raise InputError(f"audio sample rate must be an integer in 1000..384000 Hz, got {sample_rate!r}.")
    return np.ascontiguousarray(x.T)


def _popen(cmd: list[str], stdin=None, stderr=None) -> subprocess.Popen:
    kwargs = {}
    if sys.platform.startswith("win"):
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
    else:
        kwargs["start_new_session"] = True  # Ctrl-C reaches Python, which then kills ffmpeg itself
    return subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.DEVNULL, stderr=stderr, **kwargs)


def _read_log(f) -> str:
    try:
        f.seek(0)
        text = f.read().decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-8:])


class _Resources:
    """Processes and temporary files of one writer; ``release`` kills / deletes them all.
    Kept apart from the writer so a ``weakref.finalize`` can clean up a forgotten writer."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []
        self.files: list[Path] = []

    def release(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.kill()
                except OSError:
                    pass
            for stream in (p.stdin,):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:
                    pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        for f in self.files:
            _unlink(f)
        self.files.clear()


class Mp4Writer:
    """Stream RGB frames into an H.264 mp4 (with AAC sound) that appears at ``path`` only
    when complete.

    path: the .mp4 to create (its folder is created if missing; an existing file is
        replaced only on success).
    fps: frame rate (int, float or Fraction, > 0).
    audio: None; a path to any audio (or video-with-audio) file ffmpeg reads; or
        ``(waveform, sample_rate)`` with waveform float32 [C, N] or [N] in -1..1 (written
        to a temporary WAV). The sound is cut or padded with silence to the video's length.
    audio_offset: seconds of the audio to skip, so that frame 0 lines up with that moment.
    crf, preset, pix_fmt: libx264 quality (0..51, lower is better), speed preset, and
        output pixel format.

    ``write(frames)`` takes uint8 [H,W,3] / [B,H,W,3] RGB, float 0..1 in the same layouts,
    or torch tensors of them; the first frame fixes the size. Use as a context manager, or
    call ``close()`` (finish, may raise MediaError) / ``abort()`` (discard) yourself.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float | Fraction,
        audio=None,
        *,
        crf: int = 18,
        preset: str = "medium",
        pix_fmt: str = "yuv420p",
        audio_offset: float = 0.0,
    ):
        self.path = Path(path)
        if not (
            isinstance(fps, (int, float, Fraction))
            and not isinstance(fps, bool)
            and np.isfinite(float(fps))
            and float(fps) > 0
        ):
            raise InputError(f"fps must be a positive number, got {fps!r}.")
        if not (isinstance(crf, (int, float)) and 0 <= crf <= 51):
            raise InputError(f"crf must be between 0 and 51, got {crf!r}.")
        if not (np.isfinite(audio_offset) and audio_offset >= 0):
            raise InputError(f"audio_offset must be >= 0 seconds, got {audio_offset!r}.")
        self.fps = fps
        self.crf, self.preset, self.pix_fmt = crf, str(preset), str(pix_fmt)
        self.audio_offset = float(audio_offset)
        self.frames_written = 0
        self.size: tuple[int, int] | None = None  # (width, height) as given by the first frame
        self._encoded_hw: tuple[int, int] | None = None
        self._proc: subprocess.Popen | None = None
        self._log = None
        self._done = False
        self._res = _Resources()
        self._finalizer = weakref.finalize(self, self._res.release)
        _prepare_parent(self.path)
        self._video_tmp = _temp_sibling(self.path, "video")
        self._res.files.append(self._video_tmp)
        try:
            self._audio = self._prepare_audio(audio)
        except BaseException:
            self._res.release()
            raise

    # -- audio -----------------------------------------------------------------------

    def _prepare_audio(self, audio) -> Path | None:
        if audio is None:
            return None
        if isinstance(audio, (str, os.PathLike)):
            src = Path(audio)
            if not src.is_file():
                raise MediaError(f"Audio file {src} does not exist.")
            self._check_audio_file(src)
            return src
        if isinstance(audio, dict) and "waveform" in audio and "sample_rate" in audio:
            audio = (audio["waveform"], audio["sample_rate"])
        if isinstance(audio, tuple) and len(audio) == 2:
            import soundfile

            data = _prepare_waveform(*audio)
            wav = _temp_sibling(self.path, "audio").with_suffix(".wav")
            self._res.files.append(wav)
            try:
                soundfile.write(str(wav), data, int(audio[1]), subtype="FLOAT", format="WAV")
            except Exception as e:
                raise MediaError(f"Cannot write the temporary audio file {wav}: {e}.") from e
            return wav
        raise InputError(
            "audio must be None, a path to an audio file, or (waveform [C,N] float32, "
            f"sample_rate); got {type(audio).__name__}."
        )

    @staticmethod
    def _check_audio_file(src: Path) -> None:
        """Fail now, not after the whole video was generated, if ffmpeg cannot decode it."""
        cmd = [
            ffmpeg_exe(),
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(src),
            "-map",
            "0:a:0",
            "-t",
            "0.1",
            "-f",
            "null",
            "-",
        ]
        r = subprocess.run(cmd, capture_output=True)
        if r.returncode != 0:
            msg = " ".join(r.stderr.decode("utf-8", "replace").split())[-400:]
            raise MediaError(
                f"Cannot use {src} as audio: ffmpeg finds no decodable audio stream "
                f"({msg}). Pass a wav, mp3, flac, m4a or a video with sound."
            )

    # -- frames ----------------------------------------------------------------------

    def _start(self, h: int, w: int) -> None:
        eh, ew = _even_shape(self.pix_fmt, h, w)
        self._encoded_hw = (eh, ew)
        final_pass = self._audio is None
        cmd = [
            ffmpeg_exe(),
            "-hide_banner",
            "-nostdin",
            "-y",
            "-loglevel",
            "error",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{ew}x{eh}",
            "-framerate",
            _fps_arg(self.fps),
            "-i",
            "-",
            "-an",
            "-c:v",
            "libx264",
            "-preset",
            self.preset,
            "-crf",
            str(self.crf),
            "-pix_fmt",
            self.pix_fmt,
        ]
        if final_pass:
            cmd += ["-movflags", "+faststart"]
        cmd += ["-f", "mp4", str(self._video_tmp)]
        self._log = tempfile.TemporaryFile()
        try:
            self._proc = _popen(cmd, stdin=subprocess.PIPE, stderr=self._log)
        except OSError as e:
            raise MediaError(f"Cannot start ffmpeg ({cmd[0]}): {e}.") from e
        self._res.procs.append(self._proc)

    def write(self, frames) -> None:
        """Append frames: [H,W,3] or [B,H,W,3] RGB, uint8 0..255 or float 0..1.

        A frame of the wrong shape raises InputError and leaves the writer usable; a failure
        of ffmpeg (or an interrupt) while frames are being sent aborts the writer."""
        if self._done:
            raise MediaError(f"Mp4Writer for {self.path} is already closed.")
        batch = _to_uint8_rgb(frames)
        if self.size is not None and (batch.shape[2], batch.shape[1]) != self.size:
            raise InputError(
                f"frame {self.frames_written} is {batch.shape[2]}x{batch.shape[1]} but "
                f"{self.path} was started at {self.size[0]}x{self.size[1]}; every frame "
                "of a video must have the same size."
            )
        try:
            if self._proc is None:
                self._start(batch.shape[1], batch.shape[2])
                self.size = (batch.shape[2], batch.shape[1])
            batch = np.ascontiguousarray(_pad_edge(batch, *self._encoded_hw))
            try:
                self._proc.stdin.write(memoryview(batch).cast("B"))
            except (OSError, ValueError) as e:
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
                raise MediaError(
                    f"ffmpeg stopped while writing {self.path} (exit code "
                    f"{self._proc.returncode}): {_read_log(self._log) or e}"
                ) from e
        except BaseException:
            self.abort()
            raise
        self.frames_written += batch.shape[0]

    # -- finishing -------------------------------------------------------------------

    def _finish_video(self) -> None:
        self._proc.stdin.close()
        rc = self._proc.wait()
        if rc != 0 or not self._video_tmp.is_file():
            raise MediaError(
                f"ffmpeg could not encode {self.path} (exit code {rc}): {_read_log(self._log)}. "
                f"Check pix_fmt={self.pix_fmt!r}, preset={self.preset!r} and the free disk space."
            )

    def _mux_audio(self) -> Path:
        out = _temp_sibling(self.path, "mux")
        self._res.files.append(out)
        duration = repr(self.frames_written / float(self.fps))
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-i", str(self._video_tmp)]
        if self.audio_offset > 0:
            cmd += ["-ss", repr(self.audio_offset)]
        cmd += [
            "-i",
            str(self._audio),
            "-map",
            "0:v:0",
            "-map",
            "1:a:0",
            "-c:v",
            "copy",
            "-af",
            f"apad=whole_dur={duration},atrim=duration={duration}",
            "-c:a",
            "aac",
            "-b:a",
            _AUDIO_BITRATE,
            "-shortest",
            "-movflags",
            "+faststart",
            "-f",
            "mp4",
            str(out),
        ]
        with tempfile.TemporaryFile() as log:
            try:
                proc = _popen(cmd, stderr=log)
            except OSError as e:
                raise MediaError(f"Cannot start ffmpeg ({cmd[0]}): {e}.") from e
            self._res.procs.append(proc)
            rc = proc.wait()
            if rc != 0 or not out.is_file():
                raise MediaError(
                    f"ffmpeg could not add the sound from {self._audio} to {self.path} "
                    f"(exit code {rc}): {_read_log(log)}."
                )
        return out

    def close(self) -> Path:
        """Finish encoding, add the sound and move the file onto ``path``. Returns ``path``.
        On any failure everything temporary is removed and MediaError is raised."""
        if self._done:
            return self.path
        try:
            if self._proc is None:
                raise MediaError(f"No frames were written to {self.path}; nothing to save.")
            self._finish_video()
            final = self._mux_audio() if self._audio is not None else self._video_tmp
            _commit(final, self.path)
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._release()
        return self.path

    def abort(self) -> None:
        """Stop ffmpeg and delete every temporary file; ``path`` is left as it was."""
        self._done = True
        self._release()

    def _release(self) -> None:
        self._res.release()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def write_frames_png(
    folder: str | os.PathLike, frames, start_index: int = 0, pattern: str = "{:06d}.png"
) -> list[Path]:
    """Write frames as numbered PNG files (each one atomically) into ``folder``.

    frames: [H,W,3] or [B,H,W,3] RGB, uint8 or float 0..1 (see Mp4Writer.write). File i of
    the batch is named ``pattern.format(start_index + i)``; existing files are replaced.
    Returns the paths written, in order.
    """
    import cv2

    if int(start_index) != start_index or start_index < 0:
        raise InputError(f"start_index must be an integer >= 0, got {start_index!r}.")
    batch = _to_uint8_rgb(frames)
    folder = Path(folder)
    written = []
    for i, rgb in enumerate(batch):
        path = folder / pattern.format(start_index + i)
        ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise MediaError(f"Cannot encode frame {start_index + i} as PNG.")
        with atomic_write(path) as tmp:
            try:
                tmp.write_bytes(data.tobytes())
            except OSError as e:
                raise MediaError(f"Cannot write {path}: {e}.") from e
        written.append(path)
    return written
