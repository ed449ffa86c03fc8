"""Validation and loading: every key, shape, dtype and value that inference uses is checked
against the network it is loaded into; the error names the file, the key and what to do."""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..errors import CheckpointError
from ..networks import build_network, is_unused_checkpoint_key, optional_checkpoint_prefixes
from .models import INSTALL_HINT, NETWORKS, LoadReport, PDFGCModels
from .sources import LOAD_ORDER, open_checkpoint

log = logging.getLogger("pdfgc")


def _constant_buffers(net: str) -> dict[str, torch.Tensor]:
    if net != "generator":
        return {}
    from ..networks.generator import CHECKPOINT_CONSTANT_BUFFERS

    return CHECKPOINT_CONSTANT_BUFFERS


_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def _not_plain(t) -> str | None:
    """Why ``t`` is not an ordinary dense tensor with values (None if it is one)."""
    if type(t) not in (torch.Tensor, nn.Parameter):
        return f"a {type(t).__name__} object, not a tensor" if not torch.is_tensor(t) else f"a {type(t).__name__}"
    if t.is_meta:
        return "a meta tensor: a shape without values"
    if t.layout != torch.strided:
        return f"layout {t.layout}, not dense"
    if t.is_quantized:
        return f"quantized, dtype {t.dtype}"
    if getattr(t, "is_nested", False):
        return "a nested tensor"
    return None


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
    odd = [f"{k} ({problem})" for k in [*model_keys, *consts] if k in sd and (problem := _not_plain(sd[k]))]
    if odd:
        raise CheckpointError(
            f"{where}: {len(odd)} tensor(s) of the {net} network hold no plain values: {'; '.join(odd[:3])}. "
            f"A checkpoint stores every weight as an ordinary dense tensor; this file was saved from a "
            f"model that was not materialised, converted or quantized. {INSTALL_HINT}"
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
    known = [k for k in extra if is_unused_checkpoint_key(net, k)]
    unknown = [k for k in extra if not is_unused_checkpoint_key(net, k)]
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


def _has_optional_heads(net: str, where: str, sd: dict, report: LoadReport) -> bool:
    """True when ``sd`` carries every key of ``net``'s optional heads, well shaped, typed and finite;
    a partial or damaged optional head is reported and left out (rendering never uses it)."""
    prefixes = optional_checkpoint_prefixes(net)
    if not prefixes:
        return False
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    wanted = {k: v for k, v in _model_keys(build_network(net, optional=True)).items() if k.startswith(prefixes)}
    present = [k for k in wanted if k in sd]
    if not present:
        return False
    groups = ", ".join(sorted({k.split(".")[0] for k in wanted}))
    problems = [k for k in wanted if k not in sd]
    for k in present:
        t, (shape, dtype) = sd[k], wanted[k]
        if not torch.is_tensor(t) or (tuple(t.shape) != tuple(shape) and t.numel() != 1):
            problems.append(k)
        elif dtype.is_floating_point and (t.dtype not in _FLOAT_DTYPES or not bool(torch.isfinite(t.float()).all())):
            problems.append(k)
    if problems:
        report.warn(
            f"{where}: the optional head ({groups}) is incomplete or damaged (e.g. {', '.join(problems[:3])}); it "
            f"is ignored: rendering is unaffected, but motion-embedding export needs it"
        )
        return False
    return True


def _load_network(net: str, where: str, sd: dict, report: LoadReport) -> nn.Module:
    optional = _has_optional_heads(net, where, sd, report)
    module = build_network(net, optional=optional)
    if optional:
        groups = ", ".join(
            sorted({k.split(".")[0] for k in _model_keys(module) if k.startswith(optional_checkpoint_prefixes(net))})
        )
        report.note(f"{where}: loaded the optional head ({groups}), used only by the motion-embedding export")
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
