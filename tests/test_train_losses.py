"""Stage-2 losses against hand computations on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from pdfgc_core.train import dist, losses


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def _nll(logits, target):
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


# one item, K = 3 synchronised (audio, frame) pairs, 2-d features
A = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]
V = [[2.0, 0.1], [-1.0, 1.0], [0.2, 1.0]]


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_lip_infonce_both_directions_by_hand(temperature):
    s = [[_cos(a, v) / temperature for v in V] for a in A]  # s[k][j] = S(f_a_k, f_v_j) / T
    a2v = sum(_nll(s[k], k) for k in range(3)) / 3
    v2a = sum(_nll([s[j][k] for j in range(3)], k) for k in range(3)) / 3
    acc_a2v = sum(max(range(3), key=lambda j: s[k][j]) == k for k in range(3)) / 3
    acc_v2a = sum(max(range(3), key=lambda j: s[j][k]) == k for k in range(3)) / 3

    loss, m = losses.lip_contrastive(torch.tensor([A]), torch.tensor([V]), temperature)
    assert loss.item() == pytest.approx(a2v + v2a, rel=1e-6)
    assert m["loss_a2v"] == pytest.approx(a2v, rel=1e-6) and m["loss_v2a"] == pytest.approx(v2a, rel=1e-6)
    assert m["acc_a2v"] == pytest.approx(acc_a2v) and m["acc_v2a"] == pytest.approx(acc_v2a)
    assert 0 < acc_a2v < 1  # the example is neither trivial nor hopeless


def test_lip_negatives_stay_in_their_clip():
    """Two items: an item's loss must not depend on the other item's features (same-clip negatives)."""
    other = torch.tensor([[[9.0, -3.0], [0.2, 0.7], [5.0, 5.0]]])
    one, _ = losses.lip_contrastive(torch.tensor([A]), torch.tensor([V]))
    both, _ = losses.lip_contrastive(torch.cat([torch.tensor([A]), other]), torch.cat([torch.tensor([V]), other]))
    alone, _ = losses.lip_contrastive(other, other)
    assert both.item() == pytest.approx((one.item() + alone.item()) / 2, rel=1e-6)


def test_lip_batch_negatives_by_hand():
    """'clip+batch': every pair of the global batch is a candidate; this process's items sit at ``offset``."""
    other_a = [[0.3, -1.0], [2.0, 2.0], [-1.0, 0.0]]
    other_v = [[1.0, 1.0], [0.0, -1.0], [3.0, 0.5]]
    all_a, all_v = [*other_a, *A], [*other_v, *V]  # this process holds item 1 of a global batch of 2
    a2v = sum(_nll([_cos(A[k], v) for v in all_v], 3 + k) for k in range(3)) / 3
    v2a = sum(_nll([_cos(V[k], a) for a in all_a], 3 + k) for k in range(3)) / 3
    loss, _ = losses.lip_contrastive(
        torch.tensor([A]),
        torch.tensor([V]),
        all_a=torch.tensor([other_a, A]),
        all_v=torch.tensor([other_v, V]),
        offset=1,
    )
    assert loss.item() == pytest.approx(a2v + v2a, rel=1e-6)


def test_lip_gradient_reaches_both_encoders():
    f_a, f_v = torch.tensor([A], requires_grad=True), torch.tensor([V], requires_grad=True)
    loss, _ = losses.lip_contrastive(f_a, f_v)
    loss.backward()
    assert f_a.grad.abs().sum() > 0 and f_v.grad.abs().sum() > 0


def test_eye_infonce_by_hand():
    f1 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    f2 = [[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    fa = [[0.9, 0.1, 0.0], [1.0, 0.0, 0.2]]
    for t in (1.0, 0.1):
        want = [
            -_cos(p, a) / t + math.log(math.exp(_cos(p, a) / t) + math.exp(_cos(n, a) / t))
            for p, n, a in zip(f1, f2, fa)
        ]
        acc = sum(_cos(p, a) > _cos(n, a) for p, n, a in zip(f1, f2, fa)) / 2
        loss, m = losses.eye_contrastive(torch.tensor(f1), torch.tensor(f2), torch.tensor(fa), t)
        assert loss.item() == pytest.approx(sum(want) / 2, rel=1e-6)
        assert m["acc"] == acc == 0.5


def test_pose_l1_by_hand():
    pred = torch.tensor([[0.1, 0.2, -0.3, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    target = torch.tensor([[0.0, 0.2, 0.3, 1.5, -1.0, 2.0], [0.1, -0.1, 0.0, 0.0, 0.0, 1.0]])
    # sums of |diff| per item: 0.1 + 0 + 0.6 + 0.5 + 1 + 0 = 2.2 and 0.1 + 0.1 + 1 = 1.2
    loss, m = losses.pose_l1(pred, target)
    assert loss.item() == pytest.approx((2.2 + 1.2) / 2, rel=1e-6)
    assert m["angle_err_deg"] == pytest.approx(math.degrees((0.1 + 0.6 + 0.1 + 0.1) / 6), rel=1e-5)
    assert m["trans_err"] == pytest.approx((0.5 + 1 + 1) / 6, rel=1e-5)


def test_gather_without_process_group_is_identity():
    x = torch.randn(2, 3, requires_grad=True)
    assert dist.all_gather_with_grad(x) is x
    assert not dist.active()
