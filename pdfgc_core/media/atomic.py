"""Atomic files: write beside the target under a hidden name, fsync, rename onto it in one step.

An exception, Ctrl-C or termination signal during the write leaves the target as it was and no
temporary file behind. Only a regular file is ever replaced: a device node, FIFO or socket at the
target is refused."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import MediaError
from .listing import file_kind


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


def check_output_path(path: str | os.PathLike) -> None:
    """MediaError unless ``path`` is free or a regular file (symlinks followed): a device node
    (``/dev/null``), a FIFO, a socket or a folder is never written over or replaced."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return  # nothing there yet (or a dangling symlink, which the rename replaces)
    except OSError:
        return  # e.g. a symlink loop: the rename replaces the link itself
    if stat.S_ISREG(st.st_mode):
        return
    if stat.S_ISDIR(st.st_mode):
        raise MediaError(f"Output {path} is a folder; give a file name (e.g. {Path(path) / 'out.mp4'}).")
    raise MediaError(
        f"Output {path} is {file_kind(st)}, not a regular file; refusing to replace it. Give the path of a "
        f"new or existing regular file."
    )


def _commit(tmp: Path, path: Path) -> None:
    """fsync ``tmp`` and rename it onto ``path`` in one step (same folder, same filesystem), unless
    ``path`` has become something other than a regular file meanwhile (:func:`check_output_path`)."""
    _fsync(tmp)
    check_output_path(path)
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
    renamed onto ``path`` with ``os.replace``. A ``path`` that is not a regular file (a device,
    FIFO, socket or folder) is refused with MediaError, before and again at the rename. On any exception (KeyboardInterrupt included)
    the temporary file is deleted and ``path``, whether it existed before or not, is left
    as it was. The output folder is created if missing.

        with atomic_write("out/factors.safetensors") as tmp:
            safetensors.torch.save_file(tensors, tmp)
    """
    path = Path(path)
    check_output_path(path)
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
