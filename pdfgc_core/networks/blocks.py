"""Small building blocks shared by the three encoders: plain convs and an input check.

All convolutions here are bias-free unless asked: the official encoders follow every such conv
with BatchNorm, and the checkpoints hold no bias for them.
"""

import torch
from torch import nn

from ..errors import InputError

IMAGE_HINT = "crop and resize the face to 224x224 RGB scaled to [-1, 1] first."


def conv3x3(in_ch: int, out_ch: int, stride=1, groups: int = 1, bias: bool = False) -> nn.Conv2d:
    """3x3 convolution with padding 1 (spatial size kept at stride 1)."""
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, groups=groups, bias=bias)


def conv1x1(in_ch: int, out_ch: int, stride=1, bias: bool = False) -> nn.Conv2d:
    """1x1 convolution."""
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=bias)


def check_batch(x: torch.Tensor, shape: tuple, name: str, hint: str) -> None:
    """Raise :class:`InputError` (naming ``name``, ending with ``hint``) unless ``x`` is a tensor of
    shape [B, *shape] with B >= 1."""
    if (
        not isinstance(x, torch.Tensor)
        or x.dim() != len(shape) + 1
        or tuple(x.shape[1:]) != tuple(shape)
        or x.shape[0] < 1
    ):
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        want = "[B," + ",".join(str(s) for s in shape) + "]"
        raise InputError(f"{name}: expected a tensor of shape {want} with B >= 1, got {got}; {hint}")
