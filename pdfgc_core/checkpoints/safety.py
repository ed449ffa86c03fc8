"""The safety gate for pickle-based ``.pth`` files: ``weights_only`` loading, PyTorch version
check, CRC check of zip members, and errors that name the blocked global of a hostile pickle."""

from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile

import torch

from ..errors import CheckpointError
from .models import INSTALL_HINT

log = logging.getLogger("pdfgc")


MAX_CHECKPOINT_BYTES = 4 << 30
"""Largest checkpoint file content accepted, unpacked (the official generator file is ~365 MB):
the declared size of a ``.pth``'s zip members together, or of one ``.pth`` inside a tar."""
MAX_TAR_MEMBER_BYTES = MAX_CHECKPOINT_BYTES

MAX_EXPANSION = 10
"""Compressed checkpoint data may unpack to at most this many times its packed size (plus
:data:`EXPANSION_ALLOWANCE`): trained weights barely compress (about 1.1x), while a decompression
bomb unpacks 1000x or more. Checked from the declared sizes before anything is unpacked."""
EXPANSION_ALLOWANCE = 16 << 20
"""Bytes any compressed member or archive may unpack to whatever its ratio (small pickles and tar
headers compress well)."""


_BLOCKED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


SAFE_TORCH_FOR_PICKLES = (2, 10)
"""Oldest PyTorch whose ``weights_only`` unpickler has no published bypass: code execution through
``weights_only=True`` was fixed in 2.6.0 (CVE-2025-32434) and memory corruption in 2.10.0
(CVE-2026-24747). Older versions refuse ``.pth`` files unless :data:`TRUST_PTH_ENV` is 1."""


TRUST_PTH_ENV = "PDFGC_TRUST_PTH"


def _torch_version() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", str(torch.__version__))
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _check_pickle_safety(where: str) -> None:
    if _torch_version() >= SAFE_TORCH_FOR_PICKLES or os.environ.get(TRUST_PTH_ENV) == "1":
        return
    need = ".".join(map(str, SAFE_TORCH_FOR_PICKLES))
    raise CheckpointError(
        f"{where}: refused to load: PyTorch {torch.__version__} cannot read .pth files safely (its weights_only "
        f"loader has published code-execution bypasses, fixed in {need}). Upgrade PyTorch to {need} or newer, or "
        f"convert the official files to .safetensors on a machine that has it (`python -m pdfgc_core convert`). "
        f"If you trust this file completely (downloaded from the authors yourself), set {TRUST_PTH_ENV}=1."
    )


def first_line(e: BaseException | str, limit: int = 200) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0][:limit] if lines else "no detail"


def _zip_oversized(z: zipfile.ZipFile) -> str | None:
    """Why the declared sizes of a zip-format ``.pth`` are refused (None if they are fine): more than
    :data:`MAX_CHECKPOINT_BYTES` in all, or a compressed member that unpacks more than
    :data:`MAX_EXPANSION` times its packed size. Read from the zip's directory, nothing unpacked."""
    infos = z.infolist()
    total = sum(i.file_size for i in infos)
    if total > MAX_CHECKPOINT_BYTES:
        return (
            f"its members declare {total / 2**30:.1f} GiB unpacked, more than the "
            f"{MAX_CHECKPOINT_BYTES / 2**30:g} GiB any PD-FGC checkpoint needs"
        )
    for i in infos:
        if i.compress_type != zipfile.ZIP_STORED and i.file_size > max(
            MAX_EXPANSION * i.compress_size, EXPANSION_ALLOWANCE
        ):
            return (
                f"member {i.filename!r} would unpack from {i.compress_size} bytes to {i.file_size / 2**20:.0f} MiB "
                f"({i.file_size / max(i.compress_size, 1):.0f}x; trained weights compress about 1.1x): "
                f"a decompression bomb or a damaged file"
            )
    return None


def _zip_damage(data, where: str) -> str | None:
    """Name of the first member of a zip-format ``.pth`` whose CRC-32 does not match its bytes (torch
    itself does not check them, so flipped bytes in tensor data would load silently); None if all
    match or the file is not a readable zip (``torch.load`` then reports it). Declared sizes that
    :func:`_zip_oversized` refuses raise CheckpointError before any member is unpacked."""
    try:
        try:
            z = zipfile.ZipFile(data)
        except Exception:
            return None
        with z:
            oversized = _zip_oversized(z)
            if oversized:
                raise CheckpointError(f"{where}: refused before unpacking: {oversized}. Download it again.")
            try:
                return z.testzip()
            except Exception:
                return None
    finally:
        if hasattr(data, "seek"):
            data.seek(0)


def safe_torch_load(data, where: str) -> dict:
    _check_pickle_safety(where)
    bad_member = _zip_damage(data, where)
    if bad_member is not None:
        raise CheckpointError(
            f"{where}: is corrupted: the bytes of {bad_member!r} inside it do not match their "
            f"checksum (damaged download or disk). Download it again."
        )
    try:
        obj = torch.load(data, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = _BLOCKED_GLOBAL.search(str(e))
        if found:
            raise CheckpointError(
                f"{where}: refused to load. Unpickling this file would import and call {found.group(1)!r}, which is "
                f"code, not tensor data: loading it could run arbitrary code, so it was not unpickled. Official "
                f"PD-FGC checkpoints are plain tensor dictionaries; delete this file and download the official "
                f"checkpoints again."
            ) from None
        raise CheckpointError(
            f"{where}: refused to load. It is not a plain tensor checkpoint that can be read safely (the safe "
            f"reader stopped: {first_line(str(e).split('WeightsUnpickler error:')[-1], 120)}); it is "
            f"corrupted, or it holds Python objects that are never unpickled here. Download it again."
        ) from None
    except Exception as e:  # torch raises RuntimeError/EOFError/ValueError/... for damaged archives
        raise CheckpointError(
            f"{where}: cannot be read as a PyTorch checkpoint; it is truncated or corrupted "
            f"({type(e).__name__}: {first_line(e)}). Download it again."
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        what = type(obj).__name__ if not isinstance(obj, dict) else "a dict with non-tensor entries"
        raise CheckpointError(f"{where}: is not a state dict of tensors ({what}). {INSTALL_HINT}")
    return obj
