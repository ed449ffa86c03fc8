"""The ffmpeg binary and its processes: where it is, how it is started, how its errors are shortened."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

from ..errors import MediaError


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


def popen(cmd: list[str], stdin=None, stderr=None) -> subprocess.Popen:
    kwargs = {}
    if sys.platform.startswith("win"):
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
    else:
        kwargs["start_new_session"] = True  # Ctrl-C reaches Python, which then kills ffmpeg itself
    return subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.DEVNULL, stderr=stderr, **kwargs)


def read_log(f) -> str:
    try:
        f.seek(0)
        text = f.read().decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-8:])


_FFMPEG_BANNER = ("ffmpeg version", "built with", "configuration:", "lib", "=== stderr", "Could not load meta")


def short_error(e: BaseException, limit: int = 400) -> str:
    """The last informative lines of an error text (ffmpeg's version banner dropped)."""
    lines = [ln.strip() for ln in str(e).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(_FFMPEG_BANNER)] or [str(e).strip()]
    text = " | ".join(lines[-3:])
    return text if len(text) <= limit else "... " + text[-limit:]


def fps_arg(fps: float | Fraction) -> str:
    if isinstance(fps, Fraction):
        return f"{fps.numerator}/{fps.denominator}"
    return repr(float(fps)) if not float(fps).is_integer() else str(int(fps))
