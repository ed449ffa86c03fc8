"""Stage-1 / stage-3 losses against hand computations: decorrelation (Eq. 6) with its memory banks
(start-up, wrap-around), in-window averaging, hinge and feature-matching terms, the discriminator's
shapes, and the prior networks' published layouts (randomly initialised files, nothing downloaded)."""

from __future__ import annotations

import math

import pytest
import torch

from pdfgc_core.errors import CheckpointError, InputError
from pdfgc_core.train import gan, priors
from pdfgc_core.train.decorrelation import MemoryBank, correlation, decorrelation_loss, window_mean


def _pearson(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sx = math.sqrt(sum((x - mx) ** 2 for x in xs))
    sy = math.sqrt(sum((y - my) ** 2 for y in ys))
    return sxy / (sx * sy)


E = [[1.0, 0.5], [2.0, -1.0], [0.0, 0.25], [3.0, 2.0]]  # 4 samples, 2 expression dims
A = [[0.2, 1.0, -1.0], [0.1, 0.0, 2.0], [0.9, 0.5, 0.0], [0.3, -0.2, 1.0]]  # 3 audio dims


def _hand_loss(e, a):
    d = len(e[0])
    cols_e, cols_a = list(zip(*e)), list(zip(*a))
    return sum(_pearson(ce, ca) ** 2 for ce in cols_e for ca in cols_a) / d


def test_correlation_and_decorrelation_by_hand():
    c = correlation(torch.tensor(E), torch.tensor(A), eps=0.0)
    for i, ce in enumerate(zip(*E)):
        for j, ca in enumerate(zip(*A)):
            assert c[i, j].item() == pytest.approx(_pearson(ce, ca), rel=1e-5)
    assert decorrelation_loss(torch.tensor(E), torch.tensor(A), eps=0.0).item() == pytest.approx(
        _hand_loss(E, A), rel=1e-5
    )


def test_decorrelation_is_zero_for_independent_and_one_for_copies():
    x = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])
    y = torch.tensor([[1.0], [1.0], [-1.0], [-1.0]])
    assert decorrelation_loss(x, y).item() == pytest.approx(0.0, abs=1e-7)
    assert decorrelation_loss(x, 3 * x + 2).item() == pytest.approx(1.0, rel=1e-5)


def test_memory_bank_start_up_and_wrap_around():
    bank = MemoryBank(size=3, dim=2)
    assert len(bank) == 0 and bank.rows().shape == (0, 2)  # start-up: only the current batch counts
    cur = torch.tensor(E[:2], requires_grad=True)
    assert torch.equal(bank.with_current(cur), cur)
    bank.push(torch.tensor(E[:2]))
    assert len(bank) == 2 and bank.rows().tolist() == [E[1], E[0]]  # newest first
    bank.push(torch.tensor(E[2:]))  # 4 rows pushed into 3 slots: E[0] is overwritten
    assert len(bank) == 3 and bank.count == 4 and bank.rows().tolist() == [E[3], E[2], E[1]]
    bank.push(torch.tensor([[9.0, 9.0], [8.0, 8.0], [7.0, 7.0], [6.0, 6.0]]))  # more than the bank holds
    assert bank.rows().tolist() == [[6.0, 6.0], [7.0, 7.0], [8.0, 8.0]]
    copy = MemoryBank(3, 2)
    copy.load_state_dict(bank.state_dict())
    assert torch.equal(copy.rows(), bank.rows()) and copy.ptr == bank.ptr


def test_decorrelation_over_banks_by_hand_gradient_only_through_the_current_batch():
    """Step 1: the banks are empty, N = batch. Step 2: N = batch + bank rows; the bank rows carry
    no gradient (they are the features of step 1)."""
    be, ba = MemoryBank(4, 2), MemoryBank(4, 3)
    e1, a1 = torch.tensor(E[:2], requires_grad=True), torch.tensor(A[:2])
    loss1 = decorrelation_loss(be.with_current(e1), ba.with_current(a1), eps=0.0)
    assert loss1.item() == pytest.approx(_hand_loss(E[:2], A[:2]), rel=1e-5)
    be.push(e1), ba.push(a1)
    e2, a2 = torch.tensor(E[2:], requires_grad=True), torch.tensor(A[2:])
    all_e, all_a = be.with_current(e2), ba.with_current(a2)
    assert all_e.tolist() == [E[2], E[3], E[1], E[0]]
    loss2 = decorrelation_loss(all_e, all_a, eps=0.0)
    assert loss2.item() == pytest.approx(_hand_loss([E[2], E[3], E[1], E[0]], [A[2], A[3], A[1], A[0]]), rel=1e-5)
    loss2.backward()
    assert e2.grad is not None and e2.grad.abs().sum() > 0 and e1.grad is None


def test_window_mean_is_the_centre_frames_feature():
    feats = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    want = [[sum(feats[b, k, d].item() for k in range(3)) / 3 for d in range(4)] for b in range(2)]
    assert window_mean(feats).tolist() == want


def _fake_d(values):
    """One scale's outputs: two feature maps and the logits."""
    return [torch.tensor(v, dtype=torch.float32).reshape(1, 1, 1, -1) for v in values]


def test_hinge_terms_by_hand():
    real = [_fake_d([[0.0], [0.0], [0.5, 2.0]]), _fake_d([[0.0], [0.0], [-1.0]])]
    fake = [_fake_d([[0.0], [0.0], [-2.0, 0.5]]), _fake_d([[0.0], [0.0], [0.2]])]
    d0 = (max(0, 1 - 0.5) + max(0, 1 - 2.0)) / 2 + (max(0, 1 - 2.0) + max(0, 1 + 0.5)) / 2
    d1 = max(0, 1 + 1.0) + max(0, 1 + 0.2)
    assert gan.hinge_d(real, fake).item() == pytest.approx((d0 + d1) / 2)
    assert gan.hinge_g(fake).item() == pytest.approx(-((-2.0 + 0.5) / 2 + 0.2) / 2)


def test_feature_matching_by_hand_and_only_fake_side_gets_gradient():
    real = [_fake_d([[1.0, 2.0], [0.0], [5.0]]), _fake_d([[3.0], [1.0, 1.0, 1.0], [5.0]])]
    fake = [_fake_d([[0.0, 4.0], [0.5], [-5.0]]), _fake_d([[3.0], [0.0, 2.0, 1.0], [9.0]])]
    for f in fake[0]:
        f.requires_grad_(True)
    want = ((1 + 2) / 2 + 0.5 + 0 + (1 + 1 + 0) / 3) / 2  # logits excluded, mean over scales
    loss = gan.feature_matching(real, fake)
    assert loss.item() == pytest.approx(want)
    loss.backward()
    assert fake[0][0].grad is not None and real[0][0].grad is None


def test_multiscale_discriminator_shapes_and_spectral_norm():
    torch.manual_seed(0)
    d = gan.MultiscaleDiscriminator(ndf=8, layers=4, scales=2)
    out = d(torch.randn(2, 3, 32, 32))
    assert len(out) == 2 and all(len(s) == 5 for s in out)
    assert out[0][-1].shape[:2] == (2, 1) and out[1][-1].shape[-1] < out[0][-1].shape[-1]
    assert sum("parametrizations" in k for k in d.state_dict()) > 0  # spectral-normalised layers
    with torch.no_grad():  # spectral norm: the largest singular value of each normalised weight is ~1
        for _ in range(10):
            d(torch.randn(1, 3, 16, 16))
        w = d.scales[0].blocks[1][0].weight
        assert torch.linalg.matrix_norm(w.flatten(1), ord=2).item() == pytest.approx(1.0, rel=0.05)


# ------------------------------------------------------------------------------ priors


@pytest.mark.parametrize("name", ["vgg19", "vggface"])
def test_perceptual_priors_load_from_their_published_layout(tmp_path, name):
    sd = priors.published_state_dict(name)
    path = tmp_path / f"{name}.pth"
    torch.save(sd, path)
    net = priors.load_prior(name, path, size=32)
    feats = net(torch.rand(1, 3, 40, 40) * 2 - 1)
    assert len(feats) == 5 and feats[0].shape[1] == 64 and feats[-1].shape[1] == 512
    assert not any(p.requires_grad for p in net.parameters())
    key = "features.0.weight" if name == "vgg19" else "conv1_1.weight"
    assert torch.equal(net.state_dict()[key.replace("features.", "features.")], sd[key])


@pytest.mark.slow
def test_gaze_prior_reads_the_l2cs_layout_and_returns_angles(tmp_path):
    path = tmp_path / "L2CSNet_gaze360.pkl"
    torch.save(priors.published_state_dict("gaze"), path)
    net = priors.load_prior("gaze", path, size=64)
    angles = net(torch.zeros(2, 3, 64, 64))
    assert angles.shape == (2, 2) and bool(((angles > -180) & (angles < 180)).all())


def test_emoca_prior_is_a_torchscript_file(tmp_path):
    class Enc(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3)), x.amax((2, 3))

    path = tmp_path / "emoca.pt"
    torch.jit.save(torch.jit.script(Enc()), str(path))
    net = priors.load_prior("emoca", path, size=16)
    assert net(torch.zeros(3, 3, 20, 20)).shape == (3, 6)


def test_prior_errors_name_the_file_and_where_to_get_it(tmp_path):
    with pytest.raises(InputError, match=r"vgg19.*does not exist.*torchvision"):
        priors.load_prior("vgg19", tmp_path / "missing.pth")
    wrong = tmp_path / "not_vgg.pth"
    torch.save({"conv1_1.weight": torch.zeros(64, 3, 3, 3)}, wrong)
    with pytest.raises(CheckpointError, match=r"not_vgg\.pth is not in the expected layout.*features\.0\.weight"):
        priors.load_prior("vgg19", wrong)
    with pytest.raises(CheckpointError, match="L2CS-Net"):
        priors.load_prior("gaze", wrong)
    with pytest.raises(CheckpointError, match="TorchScript"):
        priors.load_prior("emoca", wrong)
    bad = priors.published_state_dict("vggface")
    bad["conv2_1.weight"] = bad["conv2_1.weight"] * float("nan")
    torch.save(bad, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match="NaN"):
        priors.load_prior("vggface", tmp_path / "nan.pth")
