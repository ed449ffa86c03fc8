"""Data-parallel helpers: process-group set-up from torchrun's environment, gathering with gradient.

``python -m pdfgc_core train ...`` runs as one process; under ``torchrun --nproc_per_node N``
(optionally ``--nnodes``) each process reads ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` and joins
a process group: NCCL when it trains on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import InputError


@dataclass(frozen=True)
class DistContext:
    """This process's place: ``rank`` of ``world_size`` (``local_rank`` on its node), its device;
    ``owns_group``: the process group was created here (and is destroyed by :func:`cleanup`)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise InputError(f"environment variable {name}={os.environ[name]!r} is not a whole number.") from None


def setup(device: str | None = None) -> DistContext:
    """Joins the process group torchrun describes (if any) and picks the device: ``device`` if
    given (``cuda`` means this process's ``cuda:LOCAL_RANK``), else CUDA when available."""
    world, rank, local = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available here; use --device cpu.")
        if dev.index is None:
            dev = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    owns = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        owns = True
    return DistContext(rank, world, local, dev, owns)


def cleanup(ctx: DistContext) -> None:
    """Leaves the process group if :func:`setup` created it."""
    if ctx.owns_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if active():
        dist.barrier()


class _AllGather(torch.autograd.Function):
    """Forward: every process's tensor, stacked [W, ...]. Backward: each process receives the sum
    over processes of the gradient of its own slice (an all-reduce, which gloo supports), so the
    loss of every process back-propagates into the features that produced each negative."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[dist.get_rank()]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``x`` [B,...] of every process concatenated in rank order -> [W*B, ...], differentiable.
    Every process must pass the same shape. Without a process group: ``x`` itself."""
    if not active():
        return x
    return _AllGather.apply(x).flatten(0, 1)


def sum_across(values: torch.Tensor) -> torch.Tensor:
    """Elementwise sum of a tensor over processes (for logging; no gradient)."""
    if active():
        dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        values = values.to(dev).clone()
        dist.all_reduce(values)
        values = values.cpu()
    return values


def gather_objects(obj) -> list:
    """Every process's picklable ``obj``, in rank order (``[obj]`` without a process group)."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's ``obj`` on every process."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def autocast(device, dtype):
    """A context that runs its body in ``dtype`` autocast on ``device`` (``dtype`` None: full
    precision, no autocast)."""
    import contextlib

    return contextlib.nullcontext() if dtype is None else torch.autocast(torch.device(device).type, dtype=dtype)
