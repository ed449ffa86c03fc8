"""The four PD-FGC networks (paper Fig. 2): appearance encoder, motion encoder (pose / eye /
expression heads), audio encoder (mouth) and generator.

Each module declares the checkpoint keys that rendering does not use (``UNUSED_CHECKPOINT_PREFIXES``
and ``UNUSED_CHECKPOINT_PARTS``); :func:`is_unused_checkpoint_key` is the one place that reads them.
Some of those keys form an optional head (``OPTIONAL_CHECKPOINT_PREFIXES``, a subset of the unused
prefixes: the motion network's mouth head, used only by the motion-embedding export):
``build_network(net, optional=True)`` holds them, and the loader builds that variant when a
checkpoint carries the whole head (:func:`optional_checkpoint_prefixes`). When it is loaded, its keys
are model keys; when it is absent or incomplete, they are unused keys like the others.
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


def build_network(net: str, optional: bool = False) -> nn.Module:
    """A fresh, randomly initialised network in eval mode (CPU, float32); ``optional=True`` adds the
    network's optional heads (see :func:`optional_checkpoint_prefixes`), if it has any."""
    cls = getattr(_module(net), NETWORK_CLASSES[net][1])
    return (cls(optional_heads=True) if optional and optional_checkpoint_prefixes(net) else cls()).eval()


def optional_checkpoint_prefixes(net: str) -> tuple[str, ...]:
    """Key prefixes of ``net``'s optional heads (empty for networks without one); every such key is
    also an unused key (:func:`is_unused_checkpoint_key`)."""
    return tuple(getattr(_module(net), "OPTIONAL_CHECKPOINT_PREFIXES", ()))


def is_unused_checkpoint_key(net: str, key: str) -> bool:
    """True for a key that official checkpoints of ``net`` carry but inference never uses."""
    m = _module(net)
    return key.startswith(m.UNUSED_CHECKPOINT_PREFIXES) or any(p in key for p in m.UNUSED_CHECKPOINT_PARTS)
