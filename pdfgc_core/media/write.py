"""Writing results: H.264 + AAC mp4 files and PNG frame folders, all-or-nothing."""

from __future__ import annotations

import os
import subprocess
import tempfile
import weakref
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InputError, MediaError
from .atomic import _commit, _prepare_parent, _temp_sibling, _unlink, atomic_write, check_output_path
from .ffmpeg import ffmpeg_exe, fps_arg, popen, read_log

_AUDIO_BITRATE = "192k"


def _even_shape(pix_fmt: str, h: int, w: int) -> tuple[int, int]:
    sub_w = any(t in pix_fmt for t in ("420", "422", "411", "nv12", "nv21", "yuyv", "uyvy"))
    sub_h = any(t in pix_fmt for t in ("420", "nv12", "nv21"))
    return h + (h % 2 if sub_h else 0), w + (w % 2 if sub_w else 0)


def _pad_edge(a: np.ndarray, h: int, w: int) -> np.ndarray:
    if a.shape[1:3] == (h, w):
        return a
    return np.pad(a, ((0, 0), (0, h - a.shape[1]), (0, w - a.shape[2]), (0, 0)), mode="edge")


def _to_rgb(frames) -> np.ndarray:
    """uint8 RGB [B,H,W,3] by :func:`pdfgc_core.images.to_rgb` (imported on use: this package does
    not import torch)."""
    from ..images import to_rgb

    return to_rgb(frames, "frames")


def _prepare_waveform(waveform, sample_rate) -> np.ndarray:
    """(waveform, sample_rate) -> float32 [N, C] for soundfile, checked by the audio module's
    validators (imported here: the audio module itself imports this package)."""
    from ..audio import as_waveform, check_sample_rate

    check_sample_rate(sample_rate)
    return np.ascontiguousarray(as_waveform(waveform).T)


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
        replaced only on success; a device node, FIFO, socket or folder there is refused).
    fps: frame rate (int, float or Fraction, > 0).
    audio: None; a path to any audio (or video-with-audio) file ffmpeg reads; or
        ``(waveform, sample_rate)`` with waveform float32 [C, N] or [N] in -1..1 (written
        to a temporary WAV). The sound is cut or padded with silence to the video's length.
    audio_offset: seconds of the audio to skip, so that frame 0 lines up with that moment.
    crf, preset, pix_fmt: libx264 quality (0..51, lower is better), speed preset, and
        output pixel format.
    metadata: container tags written into the file (ffmpeg ``-metadata key=value``), e.g.
        ``pdfgc_core.provenance.manifest.container_tags()``.
    sign: None, or ``sign(src, dst, final)`` called on the complete temporary file ``src`` to
        write a signed copy at ``dst`` (e.g. a C2PA manifest embedded); the signed copy is what
        is renamed onto ``path`` (``final``), so the result still appears all at once.

    ``write(frames)`` takes uint8 [H,W,3] / [B,H,W,3] RGB, float 0..1 in the same layouts,
    or torch tensors of them (any picture :func:`pdfgc_core.images.to_rgb` converts); the first
    frame fixes the size. Use as a context manager, or
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
        metadata: dict[str, str] | None = None,
        sign: Callable[[Path, Path, Path], None] | None = None,
    ):
        self.path = Path(path)
        check_output_path(self.path)
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
        self._meta = [a for k, v in (metadata or {}).items() for a in ("-metadata", f"{k}={v}")]
        self._sign = sign
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
            fps_arg(self.fps),
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
        cmd += [*self._meta, "-f", "mp4", str(self._video_tmp)]
        self._log = tempfile.TemporaryFile()
        try:
            self._proc = popen(cmd, stdin=subprocess.PIPE, stderr=self._log)
        except OSError as e:
            raise MediaError(f"Cannot start ffmpeg ({cmd[0]}): {e}.") from e
        self._res.procs.append(self._proc)

    def write(self, frames) -> None:
        """Append frames: [H,W,3] or [B,H,W,3] RGB, uint8 0..255 or float 0..1 (see
        :func:`pdfgc_core.images.to_rgb`).

        A frame of the wrong shape raises InputError and leaves the writer usable; a failure
        of ffmpeg (or an interrupt) while frames are being sent aborts the writer."""
        if self._done:
            raise MediaError(f"Mp4Writer for {self.path} is already closed.")
        batch = _to_rgb(frames)
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
                    f"{self._proc.returncode}): {read_log(self._log) or e}"
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
                f"ffmpeg could not encode {self.path} (exit code {rc}): {read_log(self._log)}. "
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
            *self._meta,
            "-f",
            "mp4",
            str(out),
        ]
        with tempfile.TemporaryFile() as log:
            try:
                proc = popen(cmd, stderr=log)
            except OSError as e:
                raise MediaError(f"Cannot start ffmpeg ({cmd[0]}): {e}.") from e
            self._res.procs.append(proc)
            rc = proc.wait()
            if rc != 0 or not out.is_file():
                raise MediaError(
                    f"ffmpeg could not add the sound from {self._audio} to {self.path} "
                    f"(exit code {rc}): {read_log(log)}."
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
            if self._sign is not None:
                signed = _temp_sibling(self.path, "signed")
                self._res.files.append(signed)
                self._sign(final, signed, self.path)
                final = signed
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
    batch = _to_rgb(frames)
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
