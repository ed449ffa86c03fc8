"""Checkpoint loading, validation and conversion.

Accepted sources (``load_models``):
- a folder holding the four official files ``appearance_model.pth``, ``motion_model.pth``,
  ``audio_model.pth``, ``generator_model.pth`` (directly or in a ``checkpoints/`` subfolder);
- the authors' ``checkpoints.tar`` (read in memory, nothing is extracted to disk);
- our single ``.safetensors`` file written by :func:`convert` (keys ``<network>.<official key>``).

Safety: ``.pth`` files are read with ``torch.load(weights_only=True)``; a file that needs anything
but tensors and plain containers is refused, never unpickled. Every key and shape that inference
uses is checked; the error names the file, the key and what to do.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import re
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError

log = logging.getLogger("pdfgc")

NETWORKS = ("appearance", "motion", "audio", "generator")
OFFICIAL_FILES = {net: f"{net}_model.pth" for net in NETWORKS}
FORMAT_NAME = "pdfgc"
FORMAT_VERSION = 1
INSTALL_HINT = (
    "Download the official PD-FGC checkpoints (checkpoints.tar from the authors' PD-FGC-inference "
    "repository) and put the tar file, or a folder holding appearance_model.pth, motion_model.pth, "
    "audio_model.pth and generator_model.pth, into ComfyUI/models/pdfgc/ (or pass its path)."
)

# Extra keys that real training checkpoints are known to carry (PDFGC.md section 8): ignored quietly.
_KNOWN_EXTRA = {
    "appearance": lambda k: k.startswith("fc.") or k.startswith("model.fc."),
    "motion": lambda k: (
        k.startswith(("to_mouth.", "mouth_embed."))
        or any(s in k for s in ("mouth_fc", "headpose_fc", "classifier", "to_feature", "to_embed"))
    ),
    "audio": lambda k: (
        any(s in k for s in ("model.layer4_exp", "model.attention_exp", "model.fc_exp", "exp_embed"))
        or (k.startswith("fc") and not k.startswith("model."))
    ),
    "generator": lambda k: k.startswith(("style.", "input.")),
}


def build_network(net: str) -> nn.Module:
    """A fresh, randomly initialised network in eval mode (CPU, float32)."""
    if net == "appearance":
        from .networks.appearance import AppearanceEncoder as cls
    elif net == "motion":
        from .networks.motion import MotionEncoder as cls
    elif net == "audio":
        from .networks.audio import AudioEncoder as cls
    elif net == "generator":
        from .networks.generator import Generator as cls
    else:
        raise ValueError(f"unknown network {net!r}")
    return cls().eval()


def _constant_buffers(net: str) -> dict[str, torch.Tensor]:
    if net != "generator":
        return {}
    from .networks.generator import CHECKPOINT_CONSTANT_BUFFERS

    return CHECKPOINT_CONSTANT_BUFFERS


@dataclass
class LoadReport:
    """What loading found: the source, ignored keys, warnings (also sent to the ``pdfgc`` logger)."""

    source: str = ""
    kind: str = ""
    info: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def note(self, msg: str) -> None:
        self.info.append(msg)
        log.info(msg)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        log.warning(msg)


@dataclass
class PDFGCModels:
    """The four networks, loaded and in eval mode. ``report`` says where they came from."""

    appearance: nn.Module
    motion: nn.Module
    audio: nn.Module
    generator: nn.Module
    report: LoadReport
    synthetic: bool = False

    def networks(self) -> dict[str, nn.Module]:
        return {net: getattr(self, net) for net in NETWORKS}

    def to(self, device=None, dtype=None) -> PDFGCModels:
        for m in self.networks().values():
            m.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.generator.parameters()).dtype


# --------------------------------------------------------------------------- reading files

LOAD_ORDER = ("audio", "motion", "appearance", "generator")
"""Networks are read and validated one at a time, smallest file first: a broken set fails after
reading little, and only one raw state dict is in memory at a time."""

MAX_TAR_MEMBER_BYTES = 4 << 30
"""Largest ``.pth`` accepted inside a tar (the official generator file is ~365 MB); guards memory
against a crafted or decompression-bomb archive."""

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


def _first_line(e: BaseException | str, limit: int = 200) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0][:limit] if lines else "no detail"


def _zip_damage(data) -> str | None:
    """Name of the first member of a zip-format ``.pth`` whose CRC-32 does not match its bytes (torch
    itself does not check them, so flipped bytes in tensor data would load silently); None if all
    match or the file is not a readable zip (``torch.load`` then reports it)."""
    try:
        with zipfile.ZipFile(data) as z:
            return z.testzip()
    except Exception:
        return None
    finally:
        if hasattr(data, "seek"):
            data.seek(0)


def _torch_load(data, where: str) -> dict:
    _check_pickle_safety(where)
    bad_member = _zip_damage(data)
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
            f"reader stopped: {_first_line(str(e).split('WeightsUnpickler error:')[-1], 120)}); it is "
            f"corrupted, or it holds Python objects that are never unpickled here. Download it again."
        ) from None
    except Exception as e:  # torch raises RuntimeError/EOFError/ValueError/... for damaged archives
        raise CheckpointError(
            f"{where}: cannot be read as a PyTorch checkpoint; it is truncated or corrupted "
            f"({type(e).__name__}: {_first_line(e)}). Download it again."
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        what = type(obj).__name__ if not isinstance(obj, dict) else "a dict with non-tensor entries"
        raise CheckpointError(f"{where}: is not a state dict of tensors ({what}). {INSTALL_HINT}")
    return obj


Readers = dict  # {net: (where, read)}: read() -> {key: tensor}, called once per network


def _folder_readers(folder: Path) -> Readers:
    for base in (folder, folder / "checkpoints"):
        if all((base / f).is_file() for f in OFFICIAL_FILES.values()):
            return {
                net: (str(base / f), lambda p=base / f: _torch_load(p, str(p))) for net, f in OFFICIAL_FILES.items()
            }
    present = sorted(p.name for p in folder.iterdir())[:12] if folder.is_dir() else []
    missing = [f for f in OFFICIAL_FILES.values() if not (folder / f).is_file()]
    raise CheckpointError(
        f"{folder}: this folder is not a PD-FGC checkpoint folder; missing {', '.join(missing)} "
        f"(found: {', '.join(present) or 'nothing'}). {INSTALL_HINT}"
    )


def _tar_error(path: Path, e: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path}: cannot be read as a tar archive ({type(e).__name__}: {_first_line(e)}); it is "
        f"truncated or corrupted. Download checkpoints.tar again."
    )


@contextmanager
def _tar_readers(path: Path) -> Iterator[Readers]:
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise _tar_error(path, e) from None
    with tar:
        try:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile() and m.name.endswith(".pth")}
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:
            raise _tar_error(path, e) from None
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
            except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as e:
                raise _tar_error(path, e) from None
            return _torch_load(data, where)

        yield {net: (f"{path}:{members[f].name}", lambda m=members[f]: read(m)) for net, f in OFFICIAL_FILES.items()}


def safetensors_metadata(path) -> dict:
    """The ``__metadata__`` of a .safetensors file (reads only the header). Raises ``ValueError``
    for a file whose header is not a JSON object."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if size < 8 or n > size - 8:
            raise ValueError(f"header length {n} does not fit a file of {size} bytes")
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
            f"{path}: not a readable .safetensors file ({_first_line(e)}); it is truncated or "
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


# --------------------------------------------------------------------------- validation


_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def _clean(net: str, where: str, sd: dict, model_keys: dict, report: LoadReport) -> dict:
    """Checks ``sd`` against the model's expected keys and shapes; returns the tensors to load."""
    sd = dict(sd)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
        report.note(f"{where}: stripped the 'module.' prefix (DataParallel checkpoint)")
    missing = [k for k in model_keys if k not in sd]
    consts = _constant_buffers(net)
    extra = [k for k in sd if k not in model_keys and k not in consts]
    if missing and len(missing) == len(model_keys):
        raise CheckpointError(
            f"{where}: none of the {len(model_keys)} keys of the PD-FGC {net} network are in this file "
            f"(it has {len(sd)} keys, e.g. {', '.join(list(sd)[:3]) or 'none'}); it is not a PD-FGC {net} "
            f"checkpoint. {INSTALL_HINT}"
        )
    noise_missing = [k for k in missing if net == "generator" and k.startswith("noises.")]
    missing = [k for k in missing if k not in noise_missing]
    if missing:
        raise CheckpointError(
            f"{where}: {len(missing)} key(s) of the {net} network are missing, e.g. "
            f"{', '.join(missing[:5])}. The file is incomplete or belongs to another model. {INSTALL_HINT}"
        )
    if noise_missing:
        report.warn(
            f"{where}: no stored noise buffers ({len(noise_missing)} missing); the generator uses "
            f"seeded random noise instead, so frames will differ from the official ones."
        )
    for k, (shape, _) in model_keys.items():  # BatchNorm counters: unused, saved as () or (1,)
        if k.endswith("num_batches_tracked") and k in sd and sd[k].numel() == 1:
            sd[k] = sd[k].reshape(shape)
    bad = [
        f"{k} {tuple(sd[k].shape)} (expected {tuple(model_keys[k][0])})"
        for k in model_keys
        if k in sd and tuple(sd[k].shape) != tuple(model_keys[k][0])
    ]
    if bad:
        raise CheckpointError(
            f"{where}: mis-shaped tensors for the {net} network: {'; '.join(bad[:5])}. "
            f"The file belongs to another model or configuration. {INSTALL_HINT}"
        )
    out = {}
    for k, (_, dtype) in model_keys.items():
        if k not in sd:
            continue
        t = sd[k]
        ok = t.dtype in _FLOAT_DTYPES if dtype.is_floating_point else t.dtype in _INT_DTYPES
        if not ok:
            raise CheckpointError(
                f"{where}: tensor {k} has dtype {t.dtype}, expected {dtype}; the file is "
                f"damaged or not a PD-FGC checkpoint."
            )
        t = t.to(dtype)
        if t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
            raise CheckpointError(
                f"{where}: tensor {k} contains NaN or infinite values (or values too large for "
                f"{dtype}); the checkpoint is corrupted. Download it again."
            )
        out[k] = t
    for k, expected in consts.items():
        if k in sd and (sd[k].shape != expected.shape or not torch.allclose(sd[k].float(), expected, atol=1e-6)):
            report.warn(
                f"{where}: constant buffer {k} differs from the standard blur kernel; the official code "
                f"would have used the file's values, this implementation uses the standard constant."
            )
    known = [k for k in extra if _KNOWN_EXTRA[net](k)]
    unknown = [k for k in extra if not _KNOWN_EXTRA[net](k)]
    if known:
        report.note(
            f"{where}: ignored {len(known)} key(s) that inference does not use "
            f"({', '.join(sorted({k.split('.')[0] for k in known}))})"
        )
    if unknown:
        report.warn(f"{where}: ignored {len(unknown)} unexpected key(s), e.g. {', '.join(unknown[:5])}")
    return out


def _model_keys(module: nn.Module) -> dict:
    return {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}


def _materialise(net: str, module: nn.Module, sd: dict, report: LoadReport) -> nn.Module:
    if net == "generator":
        missing = [k for k in module.state_dict() if k.startswith("noises.") and k not in sd]
        g = torch.Generator().manual_seed(20202001)
        for k in missing:
            sd[k] = torch.randn(module.state_dict()[k].shape, generator=g)
    module.load_state_dict(sd, strict=True)
    return module.eval().requires_grad_(False)


def _load_network(net: str, where: str, sd: dict, report: LoadReport) -> nn.Module:
    module = build_network(net)
    return _materialise(net, module, _clean(net, where, sd, _model_keys(module), report), report)


def load_models(path, device=None, dtype: torch.dtype = torch.float32) -> PDFGCModels:
    """Loads the four networks from ``path`` (official folder / checkpoints.tar / our .safetensors).

    Returns :class:`PDFGCModels` in eval mode, on ``device`` (default CPU) in ``dtype``. Raises
    :class:`CheckpointError` naming the file and key for anything missing, mis-shaped, non-finite,
    unsafe or unreadable."""
    nets = {}
    with open_checkpoint(path) as (kind, meta, readers):
        report = LoadReport(source=str(path), kind=kind)
        synthetic = meta.get("synthetic") == "true"
        if synthetic:
            report.warn(
                f"{path}: these are SYNTHETIC weights made by ComfyUI-PD-FGC for testing: the output is "
                f"noise, not a face. {INSTALL_HINT}"
            )
        for net in LOAD_ORDER:
            where, read = readers[net]
            nets[net] = _load_network(net, where, read(), report)
    models = PDFGCModels(**nets, report=report, synthetic=synthetic)
    if device is not None or dtype != torch.float32:
        models.to(device=device, dtype=dtype)
    return models


def models_from_state_dicts(
    state_dicts: dict[str, dict], source: str = "memory", synthetic: bool = False
) -> PDFGCModels:
    """Builds validated models from in-memory ``{net: {key: tensor}}`` (same rules as files)."""
    report = LoadReport(source=source, kind="memory")
    nets = {}
    for net in NETWORKS:
        nets[net] = _load_network(net, f"{source}[{net}]", state_dicts[net], report)
    return PDFGCModels(**nets, report=report, synthetic=synthetic)


# --------------------------------------------------------------------------- conversion


def save_safetensors(models: PDFGCModels, dst, half: bool = False, extra_metadata: dict | None = None) -> Path:
    """Writes ``models`` as one ``.safetensors`` file (only what inference uses), atomically."""
    from safetensors.torch import save_file

    dst = Path(dst)
    tensors = {}
    for net, module in models.networks().items():
        for k, v in module.state_dict().items():
            v = v.detach().to("cpu")
            if half and v.is_floating_point() and not k.startswith("noises."):
                v = v.half()
            tensors[f"{net}.{k}"] = v.contiguous()
    meta = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "producer": "ComfyUI-PD-FGC",
        "dtype": "float16" if half else "float32",
        "synthetic": str(bool(models.synthetic)).lower(),
    }
    meta.update(extra_metadata or {})
    from .media import atomic_write

    with atomic_write(dst) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return dst


def convert(src, dst, half: bool = False) -> Path:
    """Official checkpoints (folder or tar) -> our single ``.safetensors`` file (optionally fp16)."""
    models = load_models(src)
    return save_safetensors(models, dst, half=half, extra_metadata={"converted_from": Path(src).name})
