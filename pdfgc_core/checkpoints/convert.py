"""Conversion to our single, pickle-free ``.safetensors`` file (optionally fp16)."""

from __future__ import annotations

import logging
from pathlib import Path

from .models import FORMAT_NAME, FORMAT_VERSION, PDFGCModels
from .validate import load_models

log = logging.getLogger("pdfgc")


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
    from ..media import atomic_write

    with atomic_write(dst) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return dst


def convert(src, dst, half: bool = False) -> Path:
    """Official checkpoints (folder or tar) -> our single ``.safetensors`` file (optionally fp16)."""
    models = load_models(src)
    return save_safetensors(models, dst, half=half, extra_metadata={"converted_from": Path(src).name})
