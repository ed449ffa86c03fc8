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
import tarfile
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
    "motion": lambda k: k.startswith(("to_mouth.", "mouth_embed."))
    or any(s in k for s in ("mouth_fc", "headpose_fc", "classifier", "to_feature", "to_embed")),
    "audio": lambda k: any(s in k for s in ("model.layer4_exp", "model.attention_exp", "model.fc_exp", "exp_embed"))
    or (k.startswith("fc") and not k.startswith("model.")),
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

    def to(self, device=None, dtype=None) -> "PDFGCModels":
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


def _torch_load(data, where: str) -> dict:
    try:
        obj = torch.load(data, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{where}: refused to load. The file contains Python objects other than tensors, so "
            f"unpickling it could run code ({str(e).splitlines()[0][:200]}). Official PD-FGC checkpoints "
            f"are plain tensor dictionaries; re-download the file from the official source."
        ) from None
    except Exception as e:  # torch raises RuntimeError/EOFError/ValueError/... for damaged archives
        raise CheckpointError(
            f"{where}: cannot be read as a PyTorch checkpoint; it is truncated or corrupted "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else 'no detail'}). "
            f"Download it again."
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise CheckpointError(f"{where}: is not a state dict of tensors ({type(obj).__name__}). {INSTALL_HINT}")
    return obj


def _read_pth_folder(folder: Path) -> dict[str, tuple[str, dict]]:
    for base in (folder, folder / "checkpoints"):
        if all((base / f).is_file() for f in OFFICIAL_FILES.values()):
            return {net: (str(base / f), _torch_load(base / f, str(base / f))) for net, f in OFFICIAL_FILES.items()}
    present = sorted(p.name for p in folder.iterdir())[:12] if folder.is_dir() else []
    missing = [f for f in OFFICIAL_FILES.values() if not (folder / f).is_file()]
    raise CheckpointError(
        f"{folder}: this folder is not a PD-FGC checkpoint folder; missing {', '.join(missing)} "
        f"(found: {', '.join(present) or 'nothing'}). {INSTALL_HINT}"
    )


def _read_tar(path: Path) -> dict[str, tuple[str, dict]]:
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile() and m.name.endswith(".pth")}
            missing = [f for f in OFFICIAL_FILES.values() if f not in members]
            if missing:
                raise CheckpointError(
                    f"{path}: the archive does not contain {', '.join(missing)}; it is not the official "
                    f"checkpoints.tar or it is incomplete. {INSTALL_HINT}"
                )
            out = {}
            for net, fname in OFFICIAL_FILES.items():
                data = io.BytesIO(tar.extractfile(members[fname]).read())
                out[net] = (f"{path}:{members[fname].name}", _torch_load(data, f"{path}:{members[fname].name}"))
            return out
    except (tarfile.TarError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: cannot be read as a tar archive ({e}); it is truncated or corrupted. "
                              f"Download it again.") from None


def safetensors_metadata(path) -> dict:
    """The ``__metadata__`` of a .safetensors file (reads only the header)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if size < 8 or n > size - 8:
            raise ValueError(f"header length {n} does not fit a file of {size} bytes")
        header = json.loads(f.read(n))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    meta = header.get("__metadata__") or {}
    return meta if isinstance(meta, dict) else {}


def _read_safetensors(path: Path) -> tuple[dict[str, tuple[str, dict]], dict]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        meta = safetensors_metadata(path)
        tensors = load_file(str(path))
    except (SafetensorError, ValueError, OSError, OverflowError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable .safetensors file ({e}); it is truncated or corrupted. "
                              f"Convert the official checkpoints again with `python -m pdfgc_core convert`.") from None
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path}: this .safetensors file was not written by ComfyUI-PD-FGC (metadata format="
            f"{meta.get('format')!r}); it is probably another model. Use the official PD-FGC checkpoints "
            f"or a file from `python -m pdfgc_core convert`."
        )
    try:
        version = int(meta.get("format_version", "0"))
    except ValueError:
        version = -1
    if not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {meta.get('format_version')!r} is not one this "
                              f"ComfyUI-PD-FGC understands (1..{FORMAT_VERSION}); update the node pack or convert again.")
    out: dict[str, dict] = {net: {} for net in NETWORKS}
    for key, t in tensors.items():
        net, _, sub = key.partition(".")
        if net not in out or not sub:
            raise CheckpointError(f"{path}: unexpected key {key!r}; the file is not a PD-FGC checkpoint.")
        out[net][sub] = t
    return {net: (f"{path}[{net}]", sd) for net, sd in out.items()}, meta


def read_state_dicts(path) -> tuple[dict[str, tuple[str, dict]], str, dict]:
    """Raw state dicts per network ``{net: (where, {key: tensor})}``, the source kind
    (``"official-folder"``, ``"official-tar"`` or ``"safetensors"``) and the file metadata.
    No validation beyond readability."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder. {INSTALL_HINT}")
    if path.is_dir():
        return _read_pth_folder(path), "official-folder", {}
    if path.suffix == ".safetensors":
        raw, meta = _read_safetensors(path)
        return raw, "safetensors", meta
    if path.suffix == ".pth":
        return _read_pth_folder(path.parent), "official-folder", {}
    if tarfile.is_tarfile(path):
        return _read_tar(path), "official-tar", {}
    raise CheckpointError(f"{path}: unsupported checkpoint; expected a folder, checkpoints.tar or a "
                          f".safetensors file written by ComfyUI-PD-FGC. {INSTALL_HINT}")


# --------------------------------------------------------------------------- validation


def _clean(net: str, where: str, sd: dict, model_keys: dict, report: LoadReport) -> dict:
    """Checks ``sd`` against the model's expected keys and shapes; returns the tensors to load."""
    sd = dict(sd)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
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
        report.warn(f"{where}: no stored noise buffers ({len(noise_missing)} missing); the generator uses "
                    f"seeded random noise instead, so frames will differ from the official ones.")
    for k, (shape, _) in model_keys.items():  # BatchNorm counters: unused, saved as () or (1,)
        if k.endswith("num_batches_tracked") and k in sd and sd[k].numel() == 1:
            sd[k] = sd[k].reshape(shape)
    bad = [f"{k} {tuple(sd[k].shape)} (expected {tuple(model_keys[k][0])})"
           for k in model_keys if k in sd and tuple(sd[k].shape) != tuple(model_keys[k][0])]
    if bad:
        raise CheckpointError(f"{where}: mis-shaped tensors for the {net} network: {'; '.join(bad[:5])}. "
                              f"The file belongs to another model or configuration. {INSTALL_HINT}")
    out = {}
    for k, (_, dtype) in model_keys.items():
        if k not in sd:
            continue
        t = sd[k]
        if dtype.is_floating_point != t.dtype.is_floating_point or t.dtype in (torch.bool, torch.complex64):
            raise CheckpointError(f"{where}: tensor {k} has dtype {t.dtype}, expected {dtype}; the file is "
                                  f"damaged or not a PD-FGC checkpoint.")
        if t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{where}: tensor {k} contains NaN or infinite values; the checkpoint is "
                                  f"corrupted. Download it again.")
        out[k] = t.to(dtype)
    for k, expected in consts.items():
        if k in sd and (sd[k].shape != expected.shape or not torch.allclose(sd[k].float(), expected, atol=1e-6)):
            report.warn(f"{where}: constant buffer {k} differs from the standard blur kernel; the official code "
                        f"would have used the file's values, this implementation uses the standard constant.")
    known = [k for k in extra if _KNOWN_EXTRA[net](k)]
    unknown = [k for k in extra if not _KNOWN_EXTRA[net](k)]
    if known:
        report.note(f"{where}: ignored {len(known)} key(s) that inference does not use "
                    f"({', '.join(sorted({k.split('.')[0] for k in known}))})")
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


def load_models(path, device=None, dtype: torch.dtype = torch.float32) -> PDFGCModels:
    """Loads the four networks from ``path`` (official folder / checkpoints.tar / our .safetensors).

    Returns :class:`PDFGCModels` in eval mode, on ``device`` (default CPU) in ``dtype``. Raises
    :class:`CheckpointError` naming the file and key for anything missing, mis-shaped, non-finite,
    unsafe or unreadable."""
    raw, kind, meta = read_state_dicts(path)
    report = LoadReport(source=str(path), kind=kind)
    synthetic = meta.get("synthetic") == "true"
    if synthetic:
        report.warn(f"{path}: these are SYNTHETIC weights made by ComfyUI-PD-FGC for testing: the output is "
                    f"noise, not a face. {INSTALL_HINT}")
    nets = {}
    for net in NETWORKS:
        where, sd = raw[net]
        module = build_network(net)
        clean = _clean(net, where, sd, _model_keys(module), report)
        nets[net] = _materialise(net, module, clean, report)
    models = PDFGCModels(**nets, report=report, synthetic=synthetic)
    if device is not None or dtype != torch.float32:
        models.to(device=device, dtype=dtype)
    return models


def models_from_state_dicts(state_dicts: dict[str, dict], source: str = "memory", synthetic: bool = False) -> PDFGCModels:
    """Builds validated models from in-memory ``{net: {key: tensor}}`` (same rules as files)."""
    report = LoadReport(source=source, kind="memory")
    nets = {}
    for net in NETWORKS:
        module = build_network(net)
        clean = _clean(net, f"{source}[{net}]", state_dicts[net], _model_keys(module), report)
        nets[net] = _materialise(net, module, clean, report)
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
    meta = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "producer": "ComfyUI-PD-FGC",
            "dtype": "float16" if half else "float32", "synthetic": str(bool(models.synthetic)).lower()}
    meta.update(extra_metadata or {})
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dst


def convert(src, dst, half: bool = False) -> Path:
    """Official checkpoints (folder or tar) -> our single ``.safetensors`` file (optionally fp16)."""
    models = load_models(src)
    return save_safetensors(models, dst, half=half, extra_metadata={"converted_from": Path(src).name})


def is_synthetic(path) -> bool:
    """True for a .safetensors file that holds the project's synthetic (noise) weights."""
    try:
        return Path(path).suffix == ".safetensors" and safetensors_metadata(path).get("synthetic") == "true"
    except (OSError, ValueError):
        return False
