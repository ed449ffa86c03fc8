"""Appearance encoder: ResNeXt50-32x4d trunk -> identity vector and 7x7 identity map.

State-dict layout equals the official ``ResNeXtEncoder`` (torchvision-style trunk under ``model.``
plus ``conv1x1``), without the two classifiers inference never uses (see
:data:`UNUSED_CHECKPOINT_PREFIXES`).
"""

import torch
from torch import nn

from .blocks import IMAGE_HINT, check_batch, conv1x1, conv3x3

# Checkpoint keys this module does not hold: the 5995-way identity classifier (skipped by the
# official loader) and the ImageNet classifier of the trunk (loaded there, never called).
UNUSED_CHECKPOINT_PREFIXES = ("fc.", "model.fc.")
UNUSED_CHECKPOINT_PARTS = ()

APPEARANCE_DIM = 2048
"""Length of ``id_vector``: the trunk's layer-4 channels (512 x bottleneck expansion 4)."""
ID_MAP_CHANNELS = 512
"""Channels of ``id_map`` [B,512,7,7], the generator's input."""


class Bottleneck(nn.Module):
    """ResNeXt bottleneck: 1x1 -> grouped 3x3 (carries the stride) -> 1x1 (x4 channels), + shortcut."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, groups: int = 32, base_width: int = 4):
        super().__init__()
        width = planes * base_width // 64 * groups
        out_ch = planes * self.expansion
        self.conv1 = conv1x1(in_ch, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups=groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNeXt50Trunk(nn.Module):
    """ResNeXt50-32x4d without its classifier: [B,3,224,224] -> layer-4 map [B,2048,7,7]."""

    def __init__(self, layers=(3, 4, 6, 3)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            stage = [Bottleneck(in_ch, planes, stride)]
            in_ch = planes * Bottleneck.expansion
            stage += [Bottleneck(in_ch, planes) for _ in range(blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class AppearanceEncoder(nn.Module):
    """Identity features of the appearance (source) face.

    forward(x): x [B,3,224,224] float32 RGB in [-1,1] (any memory format) ->
    (id_vector [B,2048], id_map [B,512,7,7]). ``id_vector`` is the average-pooled layer-4 output
    (the appearance part of the generator style); ``id_map`` replaces the generator's constant input.
    The trunk runs channels_last, the layout the official code's input had (HWC images permuted to
    NCHW): about 3x faster than contiguous NCHW on a busy 2-core CPU, whose results match the
    parity fixtures bit for bit; channels_last differs from them by up to ~2.5e-5 (id_map).
    """

    memory_format = torch.channels_last

    def __init__(self):
        super().__init__()
        self.model = ResNeXt50Trunk()
        self.conv1x1 = nn.Conv2d(APPEARANCE_DIM, ID_MAP_CHANNELS, 1, bias=True)
        self.eval()

    def train(self, mode: bool = True):
        """Inference only: BatchNorm always uses the checkpoint's running statistics."""
        return super().train(False)

    def forward(self, x: torch.Tensor):
        check_batch(x, (3, 224, 224), "appearance image", IMAGE_HINT)
        x = x.contiguous(memory_format=self.memory_format)
        feat = self.model(x)
        id_vector = torch.flatten(self.model.avgpool(feat), 1)
        id_map = self.conv1x1(feat)
        return id_vector, id_map
