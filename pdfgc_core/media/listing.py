"""Bounded folder listings and non-blocking opens.

Every folder scan of the pack goes through :func:`list_files`: frame folders, factor files in
ComfyUI's ``input/`` and ``output/``, checkpoints in ``models/pdfgc``. A scan never follows a
symlink loop (each folder is entered once, by device and inode), never opens or lists FIFOs,
character or block devices and sockets (only regular files are listed, decided by ``stat``, which
opens nothing), skips hidden names (``.name``), and stops at a depth, an entry count and a time
budget; the result says when it stopped early. So a strange folder cannot hang the ComfyUI page
or the command line.

:func:`open_regular` opens a file for reading only if it is a regular file, without blocking on a
FIFO and without side effects on a device.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import MediaError

MAX_DEPTH = 8
"""Folders nested deeper than this below the listed folder are not searched."""
MAX_ENTRIES = 50_000
"""Folder entries (files, folders, anything) one listing examines at most."""
MAX_SECONDS = 5.0
"""Time one listing may take (a slow network share, a huge tree); it stops after that."""


def file_kind(st: os.stat_result) -> str:
    """What a ``stat`` result describes, in words: "a regular file", "a folder", "a FIFO", ..."""
    m = st.st_mode
    for test, name in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(m):
            return name
    return "not a regular file"


def is_regular_file(path: str | os.PathLike) -> bool:
    """True if ``path`` (symlinks followed) is a regular file. Nothing is opened."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def open_regular(path: str | os.PathLike, what: str = "File") -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file; MediaError otherwise.

    The type is checked with ``stat`` before opening (opening a device can have side effects, and
    opening a FIFO blocks until a writer appears), and again on the open descriptor, which is
    opened non-blocking, so a file swapped for a FIFO in between cannot block either."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise MediaError(f"{what} {str(path)!r} cannot be read: {e.strerror or e}.") from None
    if not stat.S_ISREG(st.st_mode):
        raise MediaError(f"{what} {str(path)!r} is {file_kind(st)}, not a regular file. Give the path of a file.")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise MediaError(f"{what} {str(path)!r} cannot be opened: {e.strerror or e}.") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise MediaError(f"{what} {str(path)!r} is {file_kind(st)}, not a regular file. Give the path of a file.")
    return os.fdopen(fd, "rb")


@dataclass
class Listing:
    """The result of :func:`list_files`.

    files: matching regular files as paths relative to the listed folder, "/"-separated, sorted as
        plain strings (for a single folder: ``sorted(os.listdir(folder))`` order).
    stopped: why the scan stopped before it saw everything (a limit), or None when complete.
    """

    root: Path
    files: list[str] = field(default_factory=list)
    stopped: str | None = None


def list_files(
    root: str | os.PathLike,
    suffixes: Iterable[str] | None = None,
    *,
    recursive: bool = False,
    accept: Callable[[Path], bool] | None = None,
    max_depth: int | None = None,
    max_entries: int | None = None,
    max_seconds: float | None = None,
) -> Listing:
    """Regular files under ``root`` whose suffix (lower-cased) is in ``suffixes`` (None: any).

    ``recursive``: also search sub-folders (symlinked ones too), each folder once, at most
    ``max_depth`` levels down. ``accept(path)``: an extra test for each matching file (e.g. a
    header check); it runs inside the time budget. Hidden names and non-regular files (FIFOs,
    devices, sockets, dangling or looping symlinks) are skipped. The scan stops after
    ``max_entries`` entries or ``max_seconds`` seconds (defaults :data:`MAX_ENTRIES`,
    :data:`MAX_SECONDS`, :data:`MAX_DEPTH`; ``max_seconds=None`` uses the default, ``0`` or less
    means no time limit) and reports it in :attr:`Listing.stopped`. Raises MediaError if ``root``
    is not a readable folder."""
    root = Path(root)
    exts = None if suffixes is None else {s.lower() for s in suffixes}
    max_depth = MAX_DEPTH if max_depth is None else int(max_depth)
    max_entries = MAX_ENTRIES if max_entries is None else int(max_entries)
    budget = MAX_SECONDS if max_seconds is None else float(max_seconds)
    deadline = time.monotonic() + budget if budget > 0 else None
    try:
        st = os.stat(root)
    except OSError as e:
        raise MediaError(f"Folder {root} cannot be listed: {e.strerror or e}.") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MediaError(f"{root} is {file_kind(st)}, not a folder.")
    out = Listing(root)
    seen = {(st.st_dev, st.st_ino)}
    todo: list[tuple[Path, str, int]] = [(root, "", 0)]
    examined = 0
    deep = False
    while todo:
        folder, rel, depth = todo.pop()
        entries = []
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    examined += 1
                    if examined > max_entries:
                        out.stopped = f"it holds more than {max_entries} entries"
                        break
                    if deadline is not None and time.monotonic() > deadline:
                        out.stopped = f"listing it took more than {budget:g} s"
                        break
                    entries.append(entry)
        except OSError as e:
            if folder == root:
                raise MediaError(f"Folder {root} cannot be listed: {e.strerror or e}.") from None
            continue  # an unreadable sub-folder is skipped
        entries.sort(key=lambda e: e.name)
        subfolders = []
        for entry in entries:
            if deadline is not None and time.monotonic() > deadline:
                out.stopped = out.stopped or f"listing it took more than {budget:g} s"
                break
            name = entry.name
            if name.startswith("."):
                continue
            try:
                est = entry.stat()  # follows symlinks; opens nothing
            except (OSError, ValueError):
                continue  # dangling symlink, symlink loop, vanished entry
            if stat.S_ISDIR(est.st_mode):
                if not recursive:
                    continue
                if depth >= max_depth:
                    deep = True
                elif (est.st_dev, est.st_ino) not in seen:
                    seen.add((est.st_dev, est.st_ino))
                    subfolders.append((Path(entry.path), f"{rel}{name}/", depth + 1))
                continue
            if not stat.S_ISREG(est.st_mode):
                continue  # FIFO, device, socket
            if exts is not None and os.path.splitext(name)[1].lower() not in exts:
                continue
            if accept is not None and not accept(Path(entry.path)):
                continue
            out.files.append(rel + name)
        if out.stopped:
            break
        todo.extend(reversed(subfolders))
    if deep and not out.stopped:
        out.stopped = f"folders nested more than {max_depth} levels deep were not searched"
    out.files.sort()
    return out
