"""The adversarial part of stages 1 and 3: a multi-scale spectral-norm discriminator, the hinge
loss and discriminator feature matching (as in Burkov et al. 2020 / pix2pixHD / SPADE, which
PD-FGC's official configuration names: hinge GAN, 2 scales, 4 layers, spectral instance norm,
64 base channels).

Images are [B,3,H,W] float in -1..1 (the generator's output range). A discriminator returns, per
scale, the list of its layer outputs; the last one is the patch logits [B,1,h,w].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """One scale: ``layers`` stride-2/1 4x4 convolutions (``ndf`` doubling up to 512 channels),
    each but the first spectral-normalised and instance-normalised, LeakyReLU 0.2, then a 4x4
    convolution to one logit per patch. ``forward(x)`` -> list of ``layers + 1`` feature maps."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, layers: int = 4):
        super().__init__()
        blocks = [nn.Sequential(nn.Conv2d(in_channels, ndf, 4, 2, 2), nn.LeakyReLU(0.2))]
        ch = ndf
        for i in range(1, layers):
            out = min(ch * 2, 512)
            stride = 1 if i == layers - 1 else 2
            conv = spectral_norm(nn.Conv2d(ch, out, 4, stride, 2, bias=False))
            blocks.append(nn.Sequential(conv, nn.InstanceNorm2d(out, affine=False), nn.LeakyReLU(0.2)))
            ch = out
        blocks.append(nn.Sequential(nn.Conv2d(ch, 1, 4, 1, 2)))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats


class MultiscaleDiscriminator(nn.Module):
    """``scales`` :class:`PatchDiscriminator` s; scale ``k`` sees the image average-pooled ``k``
    times (3x3, stride 2). ``forward(x)`` -> ``[features of scale 0, features of scale 1, ...]``."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, layers: int = 4, scales: int = 2):
        super().__init__()
        self.scales = nn.ModuleList(PatchDiscriminator(in_channels, ndf, layers) for _ in range(scales))

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        out = []
        for i, d in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(d(x))
        return out


def hinge_d(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Discriminator hinge loss ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))`` on each
    scale's logits (the last feature map), averaged over scales."""
    total = sum(F.relu(1 - r[-1]).mean() + F.relu(1 + f[-1]).mean() for r, f in zip(real, fake))
    return total / len(real)


def hinge_g(fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Generator hinge loss ``-mean(D(fake))``, averaged over scales."""
    return -sum(f[-1].mean() for f in fake) / len(fake)


def feature_matching(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """``(1/scales) sum_scales sum_layers mean|D_l(fake) - D_l(real)|`` over the intermediate
    feature maps (logits excluded); the real features are constants (detached)."""
    total = 0.0
    for r, f in zip(real, fake):
        for rl, fl in zip(r[:-1], f[:-1]):
            total = total + F.l1_loss(fl, rl.detach())
    return total / len(real)


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)
