"""Small building blocks shared by the three encoders: plain convs, weight copies derived for
inference, and an input check.

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


def derived(owner: nn.Module, name: str, sources, build):
    """``build()``, memoised on ``owner`` while every tensor in ``sources`` keeps its storage,
    version, device and dtype. Used for weights derived at inference time (a weight in the
    activations' memory layout); only call it when no gradient is needed.
    ``.to()`` / ``.cuda()`` / ``load_state_dict`` change storage or version and so rebuild;
    writes through ``.data`` bypass the version counter (call :func:`clear_derived` after them)."""
    try:
        key = tuple((t.data_ptr(), t._version, t.device, t.dtype) for t in sources)
    except RuntimeError:  # inference tensors have no version counter
        return build()
    key += (torch.is_inference_mode_enabled(),)
    cache = owner.__dict__.setdefault("_derived_cache", {})
    hit = cache.get(name)
    if hit is None or hit[0] != key:
        hit = cache[name] = (key, build())
    return hit[1]


def clear_derived(module: nn.Module) -> None:
    """Drop every weight :func:`derived` memoised on ``module`` and its submodules."""
    for m in module.modules():
        m.__dict__.pop("_derived_cache", None)


def conv_weight(conv: nn.Conv2d, memory_format) -> torch.Tensor:
    """``conv.weight`` laid out in ``memory_format`` (a memoised copy when it is not already), so
    a channels_last network does not re-layout its weights on every call. No gradient."""
    w = conv.weight
    if w.is_contiguous(memory_format=memory_format):
        return w
    return derived(conv, f"weight_{memory_format}", (w,), lambda: w.contiguous(memory_format=memory_format))
