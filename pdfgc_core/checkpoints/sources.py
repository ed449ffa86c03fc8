"""Where checkpoints come from: an official folder, the authors' ``checkpoints.tar`` (read in
memory, nothing extracted), or our single ``.safetensors``. Each source yields one reader per
network, called once, smallest network first."""

from __future__ import annotations

import io
import json
import logging
import lzma
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import CheckpointError
from ..media.listing import file_kind
from .models import FORMAT_NAME, FORMAT_VERSION, INSTALL_HINT, NETWORKS, OFFICIAL_FILES
from .safety import EXPANSION_ALLOWANCE, MAX_EXPANSION, MAX_TAR_MEMBER_BYTES, first_line, safe_torch_load

log = logging.getLogger("pdfgc")


LOAD_ORDER = ("audio", "motion", "appearance", "generator")
"""Networks are read and validated one at a time, smallest file first: a broken set fails after
reading little, and only one raw state dict is in memory at a time."""


Readers = dict  # {net: (where, read)}: read() -> {key: tensor}, called once per network


def _folder_readers(folder: Path) -> Readers:
    for base in (folder, folder / "checkpoints"):
        if all((base / f).is_file() for f in OFFICIAL_FILES.values()):
            return {
                net: (str(base / f), lambda p=base / f: safe_torch_load(p, str(p))) for net, f in OFFICIAL_FILES.items()
            }
    present = sorted(p.name for p in folder.iterdir())[:12] if folder.is_dir() else []
    missing = [f for f in OFFICIAL_FILES.values() if not (folder / f).is_file()]
    raise CheckpointError(
        f"{folder}: this folder is not a PD-FGC checkpoint folder; missing {', '.join(missing)} "
        f"(found: {', '.join(present) or 'nothing'}). {INSTALL_HINT}"
    )


_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, ValueError, zlib.error, lzma.LZMAError)


def _tar_error(path: Path, e: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path}: cannot be read as a tar archive ({type(e).__name__}: {first_line(e)}); it is "
        f"truncated or corrupted. Download checkpoints.tar again."
    )


MAX_TAR_MEMBERS = 10_000
"""Entries a checkpoint tar may hold (the official one has a handful)."""


def _tar_members(path: Path, tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """The ``.pth`` members of ``tar`` by file name. Headers are read one by one; a compressed
    archive (gz, bz2, xz) is unpacked only as far as :data:`MAX_EXPANSION` times its size on disk
    (plus :data:`EXPANSION_ALLOWANCE`): a member that would end beyond that is refused before its
    bytes are unpacked, so a decompression bomb neither fills memory nor runs for minutes."""
    limit = max(MAX_EXPANSION * path.stat().st_size, EXPANSION_ALLOWANCE)
    members = {}
    try:
        for count, m in enumerate(tar, 1):
            if m.offset_data + m.size > limit:
                raise CheckpointError(
                    f"{path}: refused before unpacking: {m.name!r} would end {(m.offset_data + m.size) / 2**20:.0f} "
                    f"MiB into the unpacked archive, more than {MAX_EXPANSION}x the archive's "
                    f"{path.stat().st_size / 2**20:.1f} MiB on disk (trained weights compress about 1.1x). It is "
                    f"a decompression bomb or damaged. Download checkpoints.tar again."
                )
            if count > MAX_TAR_MEMBERS:
                raise CheckpointError(
                    f"{path}: holds more than {MAX_TAR_MEMBERS} entries; it is not the official checkpoints.tar. "
                    f"{INSTALL_HINT}"
                )
            if m.isfile() and m.name.endswith(".pth"):
                members[Path(m.name).name] = m
    except _TAR_ERRORS as e:
        raise _tar_error(path, e) from None
    return members


@contextmanager
def _tar_readers(path: Path) -> Iterator[Readers]:
    try:
        tar = tarfile.open(path, "r:*")
    except _TAR_ERRORS as e:
        raise _tar_error(path, e) from None
    with tar:
        members = _tar_members(path, tar)
        missing = [f for f in OFFICIAL_FILES.values() if f not in members]
        if missing:
            raise CheckpointError(
                f"{path}: the archive does not contain {', '.join(missing)}; it is not the official "
                f"checkpoints.tar or it is incomplete. {INSTALL_HINT}"
            )

        def read(m: tarfile.TarInfo) -> dict:
            where = f"{path}:{m.name}"
            if m.size > MAX_TAR_MEMBER_BYTES:
                raise CheckpointError(
                    f"{where}: {m.size / 2**30:.1f} GiB is far larger than any PD-FGC checkpoint "
                    f"file; refused. {INSTALL_HINT}"
                )
            try:
                data = io.BytesIO(tar.extractfile(m).read())
            except _TAR_ERRORS as e:
                raise _tar_error(path, e) from None
            return safe_torch_load(data, where)

        yield {net: (f"{path}:{members[f].name}", lambda m=members[f]: read(m)) for net, f in OFFICIAL_FILES.items()}


MAX_SAFETENSORS_HEADER = 100_000_000
"""Largest .safetensors header read (the safetensors library's own limit)."""


def safetensors_metadata(path, max_header: int = MAX_SAFETENSORS_HEADER) -> dict:
    """The ``__metadata__`` of a .safetensors file (reads only the header, at most ``max_header``
    bytes). Raises ``ValueError`` for a header that is longer, or not a JSON object, and for a path
    that is not a regular file (``MediaError``, a ``ValueError``: a FIFO is never opened)."""
    from ..media.listing import open_regular

    path = Path(path)
    with open_regular(path, "File") as f:
        size = os.fstat(f.fileno()).st_size
        n = int.from_bytes(f.read(8), "little")
        if size < 8 or n > size - 8:
            raise ValueError(f"header length {n} does not fit a file of {size} bytes")
        if n > max_header:
            raise ValueError(f"header length {n} is more than the {max_header} bytes read")
        try:
            header = json.loads(f.read(n))
        except RecursionError:
            raise ValueError("header JSON is nested too deeply") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    meta = header.get("__metadata__") or {}
    return meta if isinstance(meta, dict) else {}


_ST_ERRORS = (ValueError, OSError, OverflowError, RuntimeError, TypeError, MemoryError)


@contextmanager
def _safetensors_readers(path: Path) -> Iterator[tuple[Readers, dict]]:
    from safetensors import SafetensorError, safe_open

    def bad(e: BaseException) -> CheckpointError:
        return CheckpointError(
            f"{path}: not a readable .safetensors file ({first_line(e)}); it is truncated or "
            f"corrupted. Convert the official checkpoints again with `python -m pdfgc_core convert`."
        )

    try:
        f = safe_open(str(path), framework="pt")
    except (SafetensorError, *_ST_ERRORS) as e:
        raise bad(e) from None
    with f:
        try:
            meta = dict(f.metadata() or {})
            keys = list(f.keys())
        except (SafetensorError, *_ST_ERRORS) as e:
            raise bad(e) from None
        if meta.get("format") != FORMAT_NAME:
            raise CheckpointError(
                f"{path}: this .safetensors file was not written by ComfyUI-PD-FGC (metadata format="
                f"{meta.get('format')!r}); it is probably another model. Use the official PD-FGC checkpoints "
                f"or a file from `python -m pdfgc_core convert`."
            )
        try:
            version = int(meta.get("format_version", "0"))
        except (TypeError, ValueError):
            version = -1
        if not 1 <= version <= FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: format version {meta.get('format_version')!r} is not one this "
                f"ComfyUI-PD-FGC understands (1..{FORMAT_VERSION}); update the node pack or "
                f"convert again."
            )
        groups: dict[str, list[str]] = {net: [] for net in NETWORKS}
        for key in keys:
            net, _, sub = key.partition(".")
            if net not in groups or not sub:
                raise CheckpointError(f"{path}: unexpected key {key!r}; the file is not a PD-FGC checkpoint.")
            groups[net].append(key)

        def read(net: str) -> dict:
            try:
                return {key.partition(".")[2]: f.get_tensor(key) for key in groups[net]}
            except (SafetensorError, *_ST_ERRORS) as e:
                raise bad(e) from None

        yield {net: (f"{path}[{net}]", lambda n=net: read(n)) for net in NETWORKS}, meta


@contextmanager
def open_checkpoint(path) -> Iterator[tuple[str, dict, Readers]]:
    """Opens a checkpoint source without reading its tensors: yields ``(kind, metadata, readers)``,
    kind ``"official-folder"``, ``"official-tar"`` or ``"safetensors"``, readers
    ``{net: (where, read)}`` where ``read()`` returns that network's raw ``{key: tensor}``."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder. {INSTALL_HINT}")
    st = path.stat()
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):  # a FIFO would block the reader forever
        raise CheckpointError(f"{path}: is {file_kind(st)}, not a checkpoint file or folder. {INSTALL_HINT}")
    if path.is_dir():
        yield "official-folder", {}, _folder_readers(path)
    elif path.suffix == ".safetensors":
        with _safetensors_readers(path) as (readers, meta):
            yield "safetensors", meta, readers
    elif path.suffix == ".pth":
        yield "official-folder", {}, _folder_readers(path.parent)
    elif path.suffix in (".tar", ".tgz", ".gz") or _is_tarfile(path):
        with _tar_readers(path) as readers:
            yield "official-tar", {}, readers
    else:
        raise CheckpointError(
            f"{path}: unsupported checkpoint; expected a folder, checkpoints.tar or a "
            f".safetensors file written by ComfyUI-PD-FGC. {INSTALL_HINT}"
        )


def _is_tarfile(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, ValueError):
        return False
