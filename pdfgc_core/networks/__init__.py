"""The four PD-FGC networks (paper Fig. 2): appearance encoder, motion encoder (pose / eye /
expression heads), audio encoder (mouth) and generator.

Each module declares the checkpoint keys it does not hold (``UNUSED_CHECKPOINT_PREFIXES`` and
``UNUSED_CHECKPOINT_PARTS``); :func:`is_unused_checkpoint_key` is the one place that reads them.
"""

from __future__ import annotations

import importlib

from torch import nn

NETWORK_CLASSES = {
    "appearance": ("appearance", "AppearanceEncoder"),
    "motion": ("motion", "MotionEncoder"),
    "audio": ("audio", "AudioEncoder"),
    "generator": ("generator", "Generator"),
}
"""network name -> (module in this package, class name)."""


def _module(net: str):
    if net not in NETWORK_CLASSES:
        raise ValueError(f"unknown network {net!r}; choose from {tuple(NETWORK_CLASSES)}")
    return importlib.import_module(f".{NETWORK_CLASSES[net][0]}", __name__)


def build_network(net: str) -> nn.Module:
    """A fresh, randomly initialised network in eval mode (CPU, float32)."""
    return getattr(_module(net), NETWORK_CLASSES[net][1])().eval()


def is_unused_checkpoint_key(net: str, key: str) -> bool:
    """True for a key that official checkpoints of ``net`` carry but inference never uses."""
    m = _module(net)
    return key.startswith(m.UNUSED_CHECKPOINT_PREFIXES) or any(p in key for p in m.UNUSED_CHECKPOINT_PARTS)
