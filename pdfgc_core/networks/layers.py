"""Building blocks of the PD-FGC style generator (a StyleGAN2 variant), each with two paths.

``impl="reference"`` follows the official arithmetic step by step: every sample gets its own
modulated, demodulated weight and the batch runs as one grouped convolution. ``impl="fast"``
computes the same function without grouped convolution: the activations are scaled per input
channel, convolved with the single shared weight, and the outputs are scaled per sample by the
demodulation factor. The two agree to float32 rounding (a few 1e-6 on the images).

Layout: feature maps are [B, C, H, W] (either memory format); styles are [B, style_dim] float.
Parameter names and shapes match the official checkpoint (see ``schema.json``); the blur
kernels are constants, kept as non-persistent buffers so they follow ``.to()`` but are not part
of the state dict.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)
DEMOD_EPS = 1e-8
BLUR_TAPS = (1, 3, 3, 1)


def make_blur_kernel(taps=BLUR_TAPS, gain: float = 1.0) -> torch.Tensor:
    """Separable FIR kernel ``outer(taps, taps) / sum**2 * gain``: [K, K] float32."""
    t = torch.tensor(taps, dtype=torch.float32)
    k = t[None, :] * t[:, None]
    return k / k.sum() * gain


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with ``kernel`` (true convolution), downsample.

    Plain-torch version of the official ``upfirdn2d_native``, same order of operations.
    x: [B, C, H, W]; kernel: [K, K]; pad (p0, p1) applies to both axes (p < 0 crops).
    Returns [B, C, (H*up + p0 + p1 - K) // down + 1, ...].
    """
    b, c, h, w = x.shape
    p0, p1 = pad
    kh, kw = kernel.shape
    out = x.reshape(b * c, 1, h, 1, w, 1)
    out = F.pad(out, [0, up - 1, 0, 0, 0, up - 1])  # zeros after every sample, both axes
    out = out.reshape(b * c, 1, h * up, w * up)
    out = F.pad(out, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    out = out[:, :, max(-p0, 0) : out.shape[2] - max(-p1, 0), max(-p0, 0) : out.shape[3] - max(-p1, 0)]
    weight = torch.flip(kernel, [0, 1]).reshape(1, 1, kh, kw).to(out.dtype)
    out = F.conv2d(out, weight)
    out = out[:, :, ::down, ::down]
    return out.reshape(b, c, out.shape[2], out.shape[3])


def blur_depthwise(x: torch.Tensor, kernel: torch.Tensor, pad) -> torch.Tensor:
    """``upfirdn2d(x, kernel, pad=pad)`` (no resampling) as one depthwise convolution."""
    c = x.shape[1]
    p0, p1 = pad
    weight = torch.flip(kernel, [0, 1]).to(x.dtype).expand(c, 1, *kernel.shape)
    if p0 != p1:
        x = F.pad(x, [p0, p1, p0, p1])
        p0 = 0
    return F.conv2d(x, weight, padding=p0, groups=c)


def upsample_depthwise(x: torch.Tensor, kernel: torch.Tensor, pad) -> torch.Tensor:
    """``upfirdn2d(x, kernel, up=2, pad=pad)`` as one depthwise transposed convolution.

    Exact equivalent when ``pad[0] - pad[1] == 1`` (the case K=4, pad (2, 1) of ToRGB);
    otherwise falls back to :func:`upfirdn2d`.
    """
    k = kernel.shape[0]
    p0, p1 = pad
    if p0 - p1 != 1 or k - 1 - p0 < 0:
        return upfirdn2d(x, kernel, up=2, pad=pad)
    c = x.shape[1]
    weight = kernel.to(x.dtype).expand(c, 1, *kernel.shape)
    return F.conv_transpose2d(x, weight, stride=2, padding=k - 1 - p0, groups=c)


def _layout(x: torch.Tensor) -> torch.memory_format:
    """channels_last if ``x`` is stored that way, else contiguous_format."""
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate (no activation): the modulation of a conv.

    weight [out, in] is stored unscaled and multiplied by ``lr_mul / sqrt(in)`` at run time;
    bias [out] is multiplied by ``lr_mul``. Input [B, in] -> output [B, out].
    """

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)

    def forward_fp32(self, x: torch.Tensor) -> torch.Tensor:
        """Same function, computed in float32 outside autocast, scaling the product instead of
        the weight (no scaled copy of the weight)."""
        with torch.autocast(x.device.type, enabled=False):
            w = self.weight.float()
            return torch.addmm(self.bias.float() * self.lr_mul, x.float(), w.t(), alpha=self.scale)


class Blur(nn.Module):
    """FIR blur ``upfirdn2d(x, kernel, pad=pad)``; kernel = outer(taps)/sum * up_factor**2."""

    def __init__(self, taps=BLUR_TAPS, pad=(1, 1), upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel(taps, upsample_factor**2), persistent=False)
        self.pad = tuple(pad)

    def forward(self, x: torch.Tensor, impl: str = "reference") -> torch.Tensor:
        if impl == "reference":
            return upfirdn2d(x, self.kernel, pad=self.pad)
        return blur_depthwise(x, self.kernel, self.pad)


class Upsample(nn.Module):
    """x2 FIR upsampling ``upfirdn2d(x, kernel, up=2, pad=(2, 1))``, kernel gain 4: [B,C,H,W] -> [B,C,2H,2W]."""

    def __init__(self, taps=BLUR_TAPS, factor: int = 2):
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel(taps, factor**2), persistent=False)
        p = len(taps) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)
        self.factor = factor

    def forward(self, x: torch.Tensor, impl: str = "reference") -> torch.Tensor:
        if impl == "reference" or self.factor != 2:
            return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)
        return upsample_depthwise(x, self.kernel, self.pad)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution, optionally demodulated and/or x2 upsampling.

    weight [1, out, in, k, k] (stored unscaled; run-time scale 1/sqrt(in*k*k)).
    Per sample b: s = modulation(style_b) [in]; w_b = scale * W * s (over the in axis);
    if demodulate: w_b *= rsqrt(sum_{in,k,k} w_b^2 + 1e-8) per output channel.
    Upsampling: transposed conv (stride 2, no padding) followed by Blur(pad (1, 1), gain 4).
    x [B, in, H, W], style [B, style_dim] -> [B, out, H', W'] with H' = H (or 2H when upsampling).
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_taps=BLUR_TAPS,
    ):
        super().__init__()
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        if upsample:
            factor = 2
            p = (len(blur_taps) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_taps, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)

    def forward(self, x: torch.Tensor, style: torch.Tensor, impl: str = "fast") -> torch.Tensor:
        if impl == "reference":
            return self.forward_reference(x, style)
        return self.forward_fast(x, style)

    def forward_reference(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Official arithmetic: per-sample weights, one grouped convolution over the batch."""
        b, c, h, w = x.shape
        k = self.kernel_size
        s = self.modulation(style).view(b, 1, c, 1, 1)
        weight = self.scale * self.weight * s
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + DEMOD_EPS)
            weight = weight * demod.view(b, self.out_channel, 1, 1, 1)
        x = x.reshape(1, b * c, h, w)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(b * c, self.out_channel, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=b)
            out = out.view(b, self.out_channel, out.shape[2], out.shape[3])
            return self.blur(out, impl="reference")
        weight = weight.view(b * self.out_channel, c, k, k)
        out = F.conv2d(x, weight, padding=self.padding, groups=b)
        return out.view(b, self.out_channel, out.shape[2], out.shape[3])

    def _cached(self, name: str, build, *key_extra):
        """``build()``, memoised while the weight is unchanged (same storage, version, device,
        dtype) and no gradient can flow into it; this is how the fast path precomputes its
        per-model constants once instead of on every call."""
        w = self.weight
        if torch.is_grad_enabled() and w.requires_grad:
            return build()
        try:
            key = (w.data_ptr(), w._version, w.device, w.dtype, torch.is_inference_mode_enabled(), *key_extra)
        except RuntimeError:  # inference tensors have no version counter
            return build()
        cache = self.__dict__.setdefault("_fast_cache", {})
        hit = cache.get(name)
        if hit is None or hit[0] != key:
            hit = cache[name] = (key, build())
        return hit[1]

    def _apply(self, fn, *args, **kwargs):
        self.__dict__.pop("_fast_cache", None)  # .to() / .cuda() / .half(): drop derived copies
        return super()._apply(fn, *args, **kwargs)

    def weight_energy(self) -> torch.Tensor:
        """``scale^2 * sum_{k,k} W^2``: [out, in] float32, the demodulation's weight term."""
        return self._cached("energy", lambda: self.weight[0].float().square().sum((2, 3)) * (self.scale**2))

    def fast_weight(self, dtype: torch.dtype, memory_format: torch.memory_format) -> torch.Tensor:
        """The shared, pre-scaled convolution weight ``scale * W`` in the activations' dtype and
        layout: [out, in, k, k], or [in, out, k, k] for the transposed (upsampling) convolution."""

        def build():
            w = self.weight[0] * self.scale
            w = w.transpose(0, 1) if self.upsample else w
            return w.to(dtype).contiguous(memory_format=memory_format)

        return self._cached("weight", build, dtype, memory_format)

    def output_scale(self, s: torch.Tensor) -> torch.Tensor:
        """Per-sample output factor [B, out] float32 for the modulation ``s`` [B, in] float32:
        the demodulation ``rsqrt(s^2 @ energy^T + 1e-8)``, or ones without demodulation."""
        if not self.demodulate:
            return torch.ones((s.shape[0], self.out_channel), dtype=s.dtype, device=s.device)
        with torch.autocast(s.device.type, enabled=False):
            return torch.rsqrt(torch.mm(s.square(), self.weight_energy().t()) + DEMOD_EPS)

    def forward_fast(
        self,
        x: torch.Tensor,
        style: torch.Tensor,
        gain: float = 1.0,
        overwrite_input: bool = False,
        shift: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Shared-weight formulation: ``conv(x * s, scale * W) * demod * gain``, no grouped conv.

        ``overwrite_input=True`` lets it scale ``x`` in place (saves a full-size temporary).
        ``shift`` (broadcastable to the output) is added in the same pass as the output factor.
        Returns a fresh tensor in the memory format of ``x``.
        """
        b = x.shape[0]
        s = self.modulation.forward_fp32(style)  # [B, in] float32
        factor = self.output_scale(s) * gain
        s = s.to(x.dtype).view(b, self.in_channel, 1, 1)
        x = x.mul_(s) if overwrite_input else x * s
        weight = self.fast_weight(x.dtype, _layout(x))
        if self.upsample:
            out = F.conv_transpose2d(x, weight, padding=0, stride=2)
            out = self.blur(out, impl="fast")
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        factor = factor.to(out.dtype).view(b, self.out_channel, 1, 1)
        if shift is None:
            return out.mul_(factor)
        if torch.is_grad_enabled():  # out= does not record gradients
            return torch.addcmul(shift.to(out.dtype), out, factor)
        return torch.addcmul(shift.to(out.dtype), out, factor, out=out)


class NoiseInjection(nn.Module):
    """``x + weight * noise``; weight [1] (learned), noise [1 or B, 1, H, W] broadcast over channels."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    """``leaky_relu(x + bias, 0.2) * sqrt(2)``; bias [1, C, 1, 1]."""

    def __init__(self, channel: int, negative_slope: float = 0.2, scale: float = SQRT2):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channel, 1, 1))
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias, negative_slope=self.negative_slope) * self.scale


class StyledConv(nn.Module):
    """ModulatedConv2d -> NoiseInjection -> FusedLeakyReLU.

    x [B, in, H, W], style [B, style_dim], noise [1 or B, 1, H', W'] -> [B, out, H', W'].
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        demodulate: bool = True,
    ):
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channel, out_channel, kernel_size, style_dim, demodulate=demodulate, upsample=upsample
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(
        self,
        x: torch.Tensor,
        style: torch.Tensor,
        noise: torch.Tensor,
        impl: str = "fast",
        overwrite_input: bool = False,
    ) -> torch.Tensor:
        """``overwrite_input`` (fast path only) allows reusing ``x``'s memory as scratch."""
        if impl == "reference":
            return self.activate(self.noise(self.conv(x, style, impl="reference"), noise))
        # fast: sqrt(2) folded into the conv's output factor and the shift (leaky_relu is
        # positively homogeneous); the epilogue is two in-place passes over the output:
        # out * factor + (noise + bias), then leaky_relu. The shift [1 or B, C, H, W] is built
        # in the output's layout from the small noise map and bias.
        act = self.activate
        noise_term = self.noise.weight * act.scale * noise.to(self.noise.weight.dtype)  # [1 or B, 1, H, W]
        bias_term = act.bias * act.scale  # [1, C, 1, 1]
        if torch.is_grad_enabled():  # out= does not record gradients
            shift = noise_term + bias_term
        else:
            shift = torch.empty(
                (noise_term.shape[0], bias_term.shape[1], *noise_term.shape[2:]),
                dtype=noise_term.dtype,
                device=noise_term.device,
                memory_format=_layout(x),
            )
            torch.add(noise_term, bias_term, out=shift)
        out = self.conv.forward_fast(x, style, gain=act.scale, overwrite_input=overwrite_input, shift=shift)
        return F.leaky_relu_(out, act.negative_slope)


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB without demodulation, + bias, + x2-upsampled previous skip.

    x [B, in, H, W], style [B, style_dim], skip [B, 3, H/2, W/2] or None -> [B, 3, H, W].
    The fast path returns the skip in float32 whatever the feature dtype.
    """

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True, out_channel: int = 3):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, out_channel, 1, 1))
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_channel, out_channel, 1, style_dim, demodulate=False)

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None, impl: str = "fast"
    ) -> torch.Tensor:
        if impl == "reference":
            out = self.conv(x, style, impl="reference") + self.bias
        else:
            out = self._rgb_fast(x, style).float() + self.bias.float()
        if skip is not None:
            out = out + self.upsample(skip, impl=impl)
        return out

    def _rgb_fast(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Per-sample 3 x in weight applied as a batched matmul (cheaper than scaling x)."""
        b, c, h, w = x.shape
        conv = self.conv
        s = conv.modulation.forward_fp32(style)  # [B, in]
        weight = (conv.weight[0, :, :, 0, 0].float() * conv.scale)[None] * s[:, None, :]  # [B, 3, in]
        weight = weight.to(x.dtype)
        if _layout(x) == torch.channels_last:
            out = torch.bmm(x.permute(0, 2, 3, 1).reshape(b, h * w, c), weight.transpose(1, 2))
            return out.view(b, h, w, -1).permute(0, 3, 1, 2)
        out = torch.bmm(weight, x.reshape(b, c, h * w))
        return out.view(b, -1, h, w)
