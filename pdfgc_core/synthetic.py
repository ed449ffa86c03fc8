"""Deterministic synthetic weights, so everything runs end to end without the official checkpoints.

The frames they produce are structured noise, not faces: they exist for tests, demos and
benchmarks. Every tensor is drawn from its own ``torch.Generator`` seeded by (seed, network, key),
with scales chosen so that activations stay finite and unsaturated through every network.
"""

from __future__ import annotations

import zlib

import torch
from torch import nn

from .checkpoints import NETWORKS, PDFGCModels, build_network, models_from_state_dicts

_PLAIN_GAIN = {"appearance": 1.7, "motion": 1.4, "audio": 2.8}


def _gen(seed: int, net: str, key: str) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + zlib.crc32(f"{net}/{key}".encode()))


def _plain_weight(shape, gain: float, g: torch.Generator) -> torch.Tensor:
    """N(0, gain/fan_in), each output unit's fan-in made zero-sum (keeps ReLU stacks centred)."""
    z = torch.randn(shape, generator=g)
    fan = z[0].numel()
    if fan > 1:
        z.sub_(z.flatten(1).mean(1).view(-1, *[1] * (z.dim() - 1))).mul_((fan / (fan - 1)) ** 0.5)
    return z.mul_((gain / fan) ** 0.5)


def _encoder_tensor(net: str, key: str, module: nn.Module, shape, g: torch.Generator) -> torch.Tensor:
    attr = key.rsplit(".", 1)[-1]
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return {
            "weight": lambda: 0.9 + 0.2 * torch.rand(shape, generator=g),
            "bias": lambda: 0.02 * torch.randn(shape, generator=g),
            "running_mean": lambda: 0.02 * torch.randn(shape, generator=g),
            "running_var": lambda: 0.5 + torch.rand(shape, generator=g),
            "num_batches_tracked": lambda: torch.zeros(shape, dtype=torch.long),
        }[attr]()
    if attr == "weight":
        return _plain_weight(shape, _PLAIN_GAIN[net], g)
    return 0.02 * torch.randn(shape, generator=g)


def _generator_tensor(key: str, shape, g: torch.Generator) -> torch.Tensor:
    if key.startswith("noises."):
        return torch.randn(shape, generator=g)
    if ".modulation." in key:
        return torch.randn(shape, generator=g) if key.endswith("weight") else 1 + 0.05 * torch.randn(shape, generator=g)
    if key.endswith("noise.weight"):
        return 0.05 + 0.1 * torch.rand(shape, generator=g)
    if key.endswith("conv.weight"):
        std = 0.15 if key.startswith("to_rgb") else 1.0
        return std * torch.randn(shape, generator=g)
    return 0.1 * torch.randn(shape, generator=g)  # activation and ToRGB biases


def synthetic_state_dicts(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """``{network: state_dict}`` with our modules' keys and shapes (optional heads included),
    deterministic in ``seed``."""
    out = {}
    for net in NETWORKS:
        module = build_network(net, optional=True)  # optional heads too (the mouth head, for exports)
        owners = {name: m for name, m in module.named_modules()}
        sd = {}
        for key, ref in module.state_dict().items():
            g = _gen(seed, net, key)
            if net == "generator":
                sd[key] = _generator_tensor(key, ref.shape, g)
            else:
                sd[key] = _encoder_tensor(net, key, owners[key.rsplit(".", 1)[0]], ref.shape, g)
        out[net] = sd
    return out


def synthetic_models(seed: int = 0) -> PDFGCModels:
    """Models filled with :func:`synthetic_state_dicts`; ``models.synthetic`` is True."""
    models = models_from_state_dicts(synthetic_state_dicts(seed), source=f"synthetic(seed={seed})", synthetic=True)
    models.report.warn(
        "SYNTHETIC weights: the output is noise, not a face, until the official checkpoints are installed."
    )
    return models
