"""What a loaded checkpoint is: the four networks, the official file names, the load report."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from ..networks import NETWORK_CLASSES

log = logging.getLogger("pdfgc")


NETWORKS = tuple(NETWORK_CLASSES)


OFFICIAL_FILES = {net: f"{net}_model.pth" for net in NETWORKS}


FORMAT_NAME = "pdfgc"


FORMAT_VERSION = 1


CHECKPOINT_URL = "https://drive.google.com/file/d/1UtFpTnRvUNGNSsr1LDU6W5nNtzacIB9J/view"
"""Where the authors' PD-FGC-inference README links the official checkpoints.tar."""
INSTALL_HINT = (
    f"Download the official PD-FGC checkpoints (checkpoints.tar, linked from the authors' PD-FGC-inference "
    f"README: {CHECKPOINT_URL}) and put the tar file, or a folder holding appearance_model.pth, "
    f"motion_model.pth, audio_model.pth and generator_model.pth, into ComfyUI/models/pdfgc/ (or pass its path)."
)


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
