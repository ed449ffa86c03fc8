"""Audio encoder: ResNetSE with self-attentive pooling -> 512 features -> mouth code (500).

State-dict layout equals the official ``ResSESyncEncoder`` (``ResNetSE`` under ``model.`` plus
``mouth_embed``); inference uses every key.
"""

import torch
from torch import nn

from ..factors import FACTOR_DIMS
from .blocks import check_batch, conv1x1, conv3x3

# Keys of the training-time expression branch and top-level classifiers, never used by inference.
UNUSED_CHECKPOINT_PREFIXES = ("fc",)
UNUSED_CHECKPOINT_PARTS = ("model.layer4_exp", "model.attention_exp", "model.fc_exp", "exp_embed")

N_MELS, N_STEPS = 80, 20


class SqueezeExcite(nn.Module):
    """Channel gate: global average -> Linear(c, c/r) -> ReLU -> Linear -> sigmoid -> scale."""

    def __init__(self, ch: int, reduction: int = 8):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(ch, ch // reduction), nn.ReLU(inplace=True), nn.Linear(ch // reduction, ch), nn.Sigmoid()
        )

    def gate(self, x):
        """Per-channel gate [B, C, 1, 1] in (0, 1)."""
        b, c = x.shape[:2]
        return self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1)

    def forward(self, x):
        return x * self.gate(x)


class SEBasicBlock(nn.Module):
    """conv(stride) -> ReLU -> BN -> conv -> BN -> SE, + shortcut, ReLU. Note ReLU *before* bn1."""

    def __init__(self, in_ch: int, out_ch: int, stride=1):
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.se = SqueezeExcite(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))

    def forward(self, x):
        out = self.bn1(self.relu(self.conv1(x)))
        if torch.is_grad_enabled():
            out = self.se(self.bn2(self.conv2(out)))
            shortcut = x if self.downsample is None else self.downsample(x)
            return self.relu(out + shortcut)
        # inference: gate, shortcut and ReLU in two passes (out * gate + shortcut, then ReLU in place)
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu_(torch.addcmul(shortcut, out, self.se.gate(out)))


def _pointwise(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A kernel-1 Conv1d on [B, C, T] as one matrix product (the CPU conv falls back to a slow path)."""
    if torch.is_grad_enabled():
        return conv(x)
    return torch.matmul(conv.weight[:, :, 0], x).add_(conv.bias[:, None])


class ResNetSE(nn.Module):
    """[B,1,80,20] mel window -> [B,512]. Four SE-ResNet stages (the last three halve both axes) give
    [B,256,10,3]; the 2560 channel-frequency rows are pooled over the 3 time steps with learned
    softmax attention (SAP), then projected by ``fc``."""

    def __init__(self, layers=(3, 4, 6, 3), filters=(32, 64, 128, 256), n_out: int = 512):
        super().__init__()
        self.conv1 = nn.Conv2d(1, filters[0], 3, stride=1, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.bn1 = nn.BatchNorm2d(filters[0])
        in_ch = filters[0]
        for i, (ch, blocks) in enumerate(zip(filters, layers)):
            stride = 1 if i == 0 else (2, 2)
            stage = [SEBasicBlock(in_ch, ch, stride)] + [SEBasicBlock(ch, ch) for _ in range(blocks - 1)]
            in_ch = ch
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
        rows = filters[3] * (N_MELS // 8)
        self.attention = nn.Sequential(
            nn.Conv1d(rows, 128, 1), nn.ReLU(), nn.BatchNorm1d(128), nn.Conv1d(128, rows, 1), nn.Softmax(dim=2)
        )
        self.fc = nn.Linear(rows, n_out)

    def forward(self, x):
        x = self.bn1(self.relu(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = x.reshape(x.shape[0], -1, x.shape[-1])  # [B, C*F, T], row index c*F + f
        if torch.is_grad_enabled():
            w = self.attention(x)
        else:
            first, _, bn, last, softmax = self.attention
            h = bn(torch.relu_(_pointwise(first, x)))
            w = softmax(_pointwise(last, h))
        return self.fc(torch.sum(x * w, dim=2))


class AudioEncoder(nn.Module):
    """Mouth (lip-sync) code of 0.8 s mel windows.

    forward(mel): mel [B,1,80,20] float32 (80 mel bins x 20 mel frames, values 0..1, one window per
    video frame) -> mouth [B,500], the raw head output before the pipeline's x1.5 and smoothing.
    """

    def __init__(self):
        super().__init__()
        self.model = ResNetSE()
        self.mouth_embed = nn.Sequential(nn.ReLU(), nn.Linear(512, FACTOR_DIMS["mouth"]))
        self.eval()

    def train(self, mode: bool = True):
        """Inference only: BatchNorm always uses the checkpoint's running statistics."""
        return super().train(False)

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        """ResNetSE output [B,512] float32 for mel [B,1,80,20]."""
        check_batch(
            mel,
            (1, N_MELS, N_STEPS),
            "audio mel windows",
            "cut the mel spectrogram into per-frame windows of 80 mel bins x 20 mel frames first.",
        )
        return self.model(mel.contiguous())

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.mouth_embed(self.features(mel))
