"""Stage-2 losses (paper Eq. 2-5) and their accuracies. Plain functions of tensors, no distributed
code: cross-process negatives arrive as already gathered tensors.

``S(x, y)`` is the cosine similarity; logits are ``S / temperature`` (temperature 1 is the paper's
``exp(S)``). Each function returns ``(loss, metrics)``: a scalar tensor with gradient and a dict of
float metrics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_logits(a: torch.Tensor, b: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``S(a_i, b_j) / temperature`` for a [N,D], b [M,D] -> [N,M] (float32)."""
    return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T / temperature


def lip_contrastive(
    f_a: torch.Tensor,
    f_v: torch.Tensor,
    temperature: float = 1.0,
    all_a: torch.Tensor | None = None,
    all_v: torch.Tensor | None = None,
    offset: int = 0,
) -> tuple[torch.Tensor, dict]:
    """Audio <-> lip InfoNCE in both directions (Eq. 2, 3).

    ``f_a``, ``f_v``: [B,K,D], item ``b`` holding K synchronised (audio, frame) pairs of one clip at
    K different times. For every pair (b,k) the positive is its own partner and the negatives are
    the other K-1 partners of the same item (unsynchronised, same clip):
    ``L_a2v = -log softmax_j(S(f_a[b,k], f_v[b,j]))[k]`` and ``L_v2a`` with the roles swapped; the
    loss is ``mean(L_a2v) + mean(L_v2a)``.

    ``all_a``, ``all_v``: [G,K,D] features of the whole global batch (this process's items at
    ``offset``..``offset+B``): then every pair of every item of the batch is a further negative.
    Metrics: ``loss_a2v``, ``loss_v2a``, ``acc_a2v``, ``acc_v2a`` (positive ranked first).
    """
    b, k, _ = f_a.shape
    if all_a is None:
        logits = torch.einsum("bkd,bjd->bkj", F.normalize(f_a.float(), dim=-1), F.normalize(f_v.float(), dim=-1))
        logits = logits / temperature  # [B,K,K], row (b,k): audio k against the item's frames
        a2v, v2a = logits.reshape(b * k, k), logits.transpose(1, 2).reshape(b * k, k)
        target = torch.arange(k, device=f_a.device).repeat(b)
    else:
        a2v = cosine_logits(f_a.reshape(b * k, -1), all_v.reshape(-1, all_v.shape[-1]), temperature)
        v2a = cosine_logits(f_v.reshape(b * k, -1), all_a.reshape(-1, all_a.shape[-1]), temperature)
        target = torch.arange(offset * k, (offset + b) * k, device=f_a.device)
    loss_a2v, loss_v2a = F.cross_entropy(a2v, target), F.cross_entropy(v2a, target)
    metrics = {
        "loss_a2v": loss_a2v.item(),
        "loss_v2a": loss_v2a.item(),
        "acc_a2v": float((a2v.detach().argmax(1) == target).float().mean()),
        "acc_v2a": float((v2a.detach().argmax(1) == target).float().mean()),
    }
    return loss_a2v + loss_v2a, metrics


def eye_contrastive(f1: torch.Tensor, f2: torch.Tensor, fa: torch.Tensor, temperature: float = 1.0):
    """Eye InfoNCE (Eq. 4): ``-log e^{S(f1,fa)} / (e^{S(f1,fa)} + e^{S(f2,fa)})``, averaged over the
    batch. f1, f2, fa: [B,D] eye features of v1, v2 and the anchor (v2 with v1's eyes).
    Metric ``acc``: fraction with ``S(f1,fa) > S(f2,fa)``."""
    s1 = F.cosine_similarity(f1.float(), fa.float(), dim=-1)
    s2 = F.cosine_similarity(f2.float(), fa.float(), dim=-1)
    logits = torch.stack([s1, s2], 1) / temperature
    loss = F.cross_entropy(logits, torch.zeros(len(f1), dtype=torch.long, device=f1.device))
    s1, s2 = s1.detach(), s2.detach()
    return loss, {"acc": float((s1 > s2).float().mean()), "sim_pos": float(s1.mean()), "sim_neg": float(s2.mean())}


def pose_l1(pred: torch.Tensor, target: torch.Tensor):
    """Pose regression (Eq. 5): ``|pred - target|_1`` summed over the 6 dims, averaged over the
    batch. Metrics: ``angle_err_deg`` (mean absolute pitch/yaw/roll error in degrees, labels in
    radians) and ``trans_err`` (mean absolute translation error, label units)."""
    diff = (pred.float() - target.float()).abs()
    loss = diff.sum(1).mean()
    diff = diff.detach()
    return loss, {
        "angle_err_deg": float(torch.rad2deg(diff[:, :3]).mean()),
        "trans_err": float(diff[:, 3:].mean()),
    }
