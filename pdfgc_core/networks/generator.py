"""The PD-FGC generator: a 224 px StyleGAN2-style decoder driven by one 2590-d style vector.

The appearance encoder's identity map [1 or B, 512, 7, 7] replaces StyleGAN2's constant input;
the style [B, 2590] = [appearance 2048 | mouth 500 | expression 30 | eye 6 | pose 6] modulates
every layer (the official ``input_is_latent=True``: the mapping network is never applied and all
layers receive the same vector). Resolutions 7 -> 14 -> 28 -> 56 -> 112 -> 224 with
512, 512, 512, 512, 256, 128 channels; an RGB skip is accumulated over the resolutions and the
image is ``tanh(skip)``: [B, 3, 224, 224] float, RGB, in [-1, 1].

State-dict keys equal the official checkpoint's (``schema.json``, network "generator") minus the
keys inference never uses (:data:`UNUSED_CHECKPOINT_PREFIXES`) and the constant blur kernels
(:data:`CHECKPOINT_CONSTANT_BUFFERS`, which a loader should compare with the file's values).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from ..factors import MOTION_DIM
from .appearance import APPEARANCE_DIM, ID_MAP_CHANNELS
from .layers import StyledConv, ToRGB, make_blur_kernel

STYLE_DIM = APPEARANCE_DIM + MOTION_DIM  # 2590 = [appearance 2048 | motion 542]
ID_CHANNELS = ID_MAP_CHANNELS
INITIAL_SIZE = 7
CHANNELS = {7: 512, 14: 512, 28: 512, 56: 512, 112: 256, 224: 128}
NUM_NOISES = 11
UNUSED_CHECKPOINT_PREFIXES = ("style.", "input.")
UNUSED_CHECKPOINT_PARTS = ()

_RESOLUTIONS = sorted(CHANNELS)[1:]  # 14 .. 224, one upsampling block each
NOISE_SIZES = (INITIAL_SIZE,) + tuple(r for r in _RESOLUTIONS for _ in range(2))
IMPLS = ("fast", "reference")

CHECKPOINT_CONSTANT_BUFFERS: dict[str, torch.Tensor] = {
    **{f"convs.{2 * i}.conv.blur.kernel": make_blur_kernel(gain=4.0) for i in range(len(_RESOLUTIONS))},
    **{f"to_rgbs.{i}.upsample.kernel": make_blur_kernel(gain=4.0) for i in range(len(_RESOLUTIONS))},
}


class Generator(nn.Module):
    """PD-FGC ``ModulateGenerator`` for inference (see module docstring for shapes).

    ``noises.noise_0 .. noise_10`` are persistent buffers holding the checkpoint's stored noise
    maps [1, 1, r, r]; they are the deterministic default noise (conv1 -> noise_0,
    convs[k] -> noise_{k+1}).

    The fast path keeps derived copies of the conv weights (in the activations' layout and
    dtype, plus the demodulation's weight energies), rebuilt when a weight's storage or version
    changes (``load_state_dict``, ``.to()``); writes through ``.data`` bypass the version
    counter, so call :meth:`clear_fast_cache` after those.

    ``fast_memory_format`` is the activation layout of the fast path: channels_last (default;
    faster for these convolutions on CPU, see benchmarks/bench_generator.py --layouts, and the
    layout tensor cores want on CUDA) or ``torch.contiguous_format``.
    """

    fast_memory_format = torch.channels_last

    def __init__(self, style_dim: int = STYLE_DIM):
        super().__init__()
        self.style_dim = style_dim
        self.conv1 = StyledConv(CHANNELS[INITIAL_SIZE], CHANNELS[INITIAL_SIZE], 3, style_dim)
        self.to_rgb1 = ToRGB(CHANNELS[INITIAL_SIZE], style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_ch = CHANNELS[INITIAL_SIZE]
        for res in _RESOLUTIONS:
            out_ch = CHANNELS[res]
            self.convs.append(StyledConv(in_ch, out_ch, 3, style_dim, upsample=True))
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim))
            self.to_rgbs.append(ToRGB(out_ch, style_dim))
            in_ch = out_ch
        self.noises = nn.Module()
        for i, r in enumerate(NOISE_SIZES):
            self.noises.register_buffer(f"noise_{i}", torch.zeros(1, 1, r, r))

    def clear_fast_cache(self) -> None:
        """Drop the fast path's derived weight copies (they are rebuilt on the next call)."""
        for module in self.modules():
            module.__dict__.pop("_fast_cache", None)

    def stored_noise(self) -> list[torch.Tensor]:
        """The 11 stored noise maps [1, 1, r, r], in layer order."""
        return [getattr(self.noises, f"noise_{i}") for i in range(NUM_NOISES)]

    def draw_noise(self, generator: torch.Generator) -> list[torch.Tensor]:
        """11 fresh N(0, 1) maps [1, 1, r, r] float32 from ``generator`` (on its device), in layer order."""
        return [torch.randn(1, 1, r, r, generator=generator, device=generator.device) for r in NOISE_SIZES]

    def _resolve_noise(self, noise, batch: int, device, dtype) -> list[torch.Tensor]:
        if noise is None:
            maps = self.stored_noise()
        elif isinstance(noise, torch.Generator):
            maps = self.draw_noise(noise)
        elif isinstance(noise, (list, tuple)):
            if len(noise) != NUM_NOISES:
                raise InputError(
                    f"generator noise: got a list of {len(noise)} maps, expected {NUM_NOISES} "
                    f"(sizes {NOISE_SIZES}); pass None to use the stored noise"
                )
            maps = []
            for i, (n, r) in enumerate(zip(noise, NOISE_SIZES)):
                n = torch.as_tensor(n)
                if n.dim() == 2:
                    n = n[None, None]
                if n.dim() != 4 or tuple(n.shape[1:]) != (1, r, r) or n.shape[0] not in (1, batch):
                    raise InputError(
                        f"generator noise[{i}]: shape {tuple(n.shape)} is not [1 or {batch}, 1, {r}, {r}] "
                        f"or [{r}, {r}]; give one map per layer at that layer's resolution"
                    )
                maps.append(n)
        else:
            raise InputError(
                f"generator noise: got {type(noise).__name__}; pass None (stored noise), "
                "a torch.Generator (seeded random noise) or a list of 11 tensors"
            )
        return [n.to(device=device, dtype=dtype) for n in maps]

    def _check_inputs(self, id_map: torch.Tensor, style: torch.Tensor) -> int:
        if not torch.is_tensor(style) or style.dim() != 2 or style.shape[1] != self.style_dim:
            shape = tuple(style.shape) if torch.is_tensor(style) else type(style).__name__
            raise InputError(
                f"generator style: got {shape}, expected [B, {self.style_dim}] "
                "(appearance 2048 | mouth 500 | expression 30 | eye 6 | pose 6)"
            )
        b = style.shape[0]
        if b == 0:
            raise InputError("generator style: the batch is empty; give at least one frame")
        expected = (ID_CHANNELS, INITIAL_SIZE, INITIAL_SIZE)
        if (
            not torch.is_tensor(id_map)
            or id_map.dim() != 4
            or tuple(id_map.shape[1:]) != expected
            or id_map.shape[0] not in (1, b)
        ):
            shape = tuple(id_map.shape) if torch.is_tensor(id_map) else type(id_map).__name__
            raise InputError(
                f"generator id_map: got {shape}, expected [1 or {b}, 512, 7, 7] (the appearance encoder's identity map)"
            )
        return b

    def forward(
        self,
        id_map: torch.Tensor,
        style: torch.Tensor,
        *,
        impl: str = "fast",
        noise=None,
    ) -> torch.Tensor:
        """Render frames.

        id_map: [1 or B, 512, 7, 7] float, the identity map (shared when its batch is 1).
        style: [B, 2590] float, the same vector for every layer.
        impl: "fast" (shared-weight convolutions) or "reference" (official grouped convolutions).
        noise: None (stored buffers, same map for every sample), a ``torch.Generator`` (11 maps
            drawn once per call, shared over the batch) or a list of 11 tensors
            [1 or B, 1, r, r] / [r, r] with r = 7, 14, 14, 28, 28, 56, 56, 112, 112, 224, 224.
        Returns images [B, 3, 224, 224] (tanh output, RGB, -1..1; float32 on the fast path).

        Intermediate results are the outputs of ``conv1``, ``convs[k]`` (StyledConv) and
        ``to_rgb1`` / ``to_rgbs[i]`` (the running RGB skip before tanh); read them with forward
        hooks. The fast path reuses each ``convs[k]`` output as scratch for ``convs[k + 1]``, so a
        hook must copy what it keeps.
        """
        if impl not in IMPLS:
            raise InputError(f"generator impl: got {impl!r}, expected one of {IMPLS}")
        b = self._check_inputs(id_map, style)
        weight = self.conv1.conv.weight
        autocast = torch.is_autocast_enabled(weight.device.type)
        dtype = torch.float32 if autocast else weight.dtype
        x = id_map.to(device=weight.device, dtype=dtype).expand(b, -1, -1, -1)
        style = style.to(device=weight.device, dtype=dtype)
        noises = self._resolve_noise(noise, b, weight.device, dtype)
        x = x.contiguous(memory_format=self.fast_memory_format if impl == "fast" else torch.contiguous_format)

        # the fast path reuses a finished activation as scratch for the next conv
        scratch = {"overwrite_input": True} if impl == "fast" else {}
        out = self.conv1(x, style, noises[0], impl=impl)
        skip = self.to_rgb1(out, style, impl=impl)
        for i in range(len(_RESOLUTIONS)):
            out = self.convs[2 * i](out, style, noises[2 * i + 1], impl=impl, **scratch)
            out = self.convs[2 * i + 1](out, style, noises[2 * i + 2], impl=impl, **scratch)
            skip = self.to_rgbs[i](out, style, skip, impl=impl)
        return torch.tanh(skip).contiguous()
