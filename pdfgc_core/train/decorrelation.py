"""Stage 3's expression disentanglement (paper Sec. 3.3): in-window averaging and the lip-motion
decorrelation loss (Eq. 6) over memory banks of recent features.

- :func:`window_mean`: the expression feature of a driving frame is the mean of ``E_exp`` over
  the K augmented frames of the window around it ([B,K,D] -> [B,D]).
- :func:`correlation`: per-dimension Pearson correlation between the columns of two feature
  matrices over their N rows; :func:`decorrelation_loss` = ``(1/D) sum_ij corr(E, A)_ij^2`` with
  D the expression dimensions.
- :class:`MemoryBank`: the ``size`` latest features of one kind (a ring buffer, no gradient).
  The loss of a step uses the rows of the current (global) batch, which carry gradient, followed
  by the bank's rows (the features of earlier steps, constants); after the step the global
  batch is pushed, overwriting the oldest rows once the bank is full.
"""

from __future__ import annotations

import torch


def window_mean(features: torch.Tensor) -> torch.Tensor:
    """[B,K,D] features of the K frames of each window -> their mean [B,D]."""
    return features.mean(1)


def correlation(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Pearson correlation ``C[i,j] = corr(x[:,i], y[:,j])`` over the N rows: x [N,Dx], y [N,Dy]
    -> [Dx,Dy] (float32). Each column is centred and divided by its norm (+ ``eps``)."""
    x = x.float() - x.float().mean(0, keepdim=True)
    y = y.float() - y.float().mean(0, keepdim=True)
    x = x / (x.norm(dim=0, keepdim=True) + eps)
    y = y / (y.norm(dim=0, keepdim=True) + eps)
    return x.T @ y


def decorrelation_loss(expression: torch.Tensor, audio: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Eq. 6: ``(1/D) sum_{i,j} corr(E, A)_{ij}^2`` for E [N,D] (expression) and A [N,Da] (audio)."""
    c = correlation(expression, audio, eps)
    return c.pow(2).sum() / expression.shape[1]


class MemoryBank:
    """The ``size`` latest rows [D] pushed into it (float32, on ``device``; no gradient).

    ``rows()`` -> [n,D] with n = min(pushed, size), newest first (so a loss sees the same rows in
    the same order whatever the ring position). ``push(x)`` [B,D] adds a batch (its rows in
    order; when B > size only the last ``size`` rows stay). ``state_dict`` / ``load_state_dict``
    for exact resume."""

    def __init__(self, size: int, dim: int, device="cpu"):
        if size < 1:
            raise ValueError("a memory bank needs a size of at least 1")
        self.size, self.dim = int(size), int(dim)
        self.data = torch.zeros(self.size, self.dim, device=device)
        self.ptr = 0  # the next row to write
        self.count = 0  # rows pushed in total

    def __len__(self) -> int:
        return min(self.count, self.size)

    @torch.no_grad()
    def push(self, x: torch.Tensor) -> None:
        x = x.detach().float().reshape(-1, self.dim).to(self.data.device)
        for row in x[-self.size :]:
            self.data[self.ptr] = row
            self.ptr = (self.ptr + 1) % self.size
        self.count += len(x)

    def rows(self) -> torch.Tensor:
        n = len(self)
        idx = [(self.ptr - 1 - i) % self.size for i in range(n)]
        return self.data[idx].clone()

    def with_current(self, current: torch.Tensor) -> torch.Tensor:
        """``current`` [B,D] (with its gradient) followed by the bank's rows -> [B + len(self), D]."""
        return torch.cat([current.float(), self.rows().to(current.device)])

    def state_dict(self) -> dict:
        return {"data": self.data.cpu().clone(), "ptr": self.ptr, "count": self.count}

    def load_state_dict(self, sd: dict) -> None:
        if tuple(sd["data"].shape) != (self.size, self.dim):
            raise ValueError(f"memory bank shape {tuple(sd['data'].shape)} != {(self.size, self.dim)}")
        self.data.copy_(sd["data"])
        self.ptr, self.count = int(sd["ptr"]), int(sd["count"])
