"""Atomic files: write beside the target under a hidden name, fsync, rename onto it in one step.

An exception, Ctrl-C or termination signal during the write leaves the target as it was and no
temporary file behind."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import MediaError


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
