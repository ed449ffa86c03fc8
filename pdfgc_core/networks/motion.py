"""Motion encoder: FAN (face-alignment network) trunk -> 512 features -> pose / eye / expression heads.

State-dict layout equals the official ``FanEncoder`` (trunk ``FAN_use`` under ``model.``, heads
``to_headpose``/``headpose_embed``, ``to_eye``/``eye_embed``, ``to_emo``/``emo_embed``). The mouth
head (``to_mouth``/``mouth_embed``), which rendering never uses (see :data:`UNUSED_CHECKPOINT_PREFIXES`),
is optional: ``MotionEncoder(optional_heads=True)`` holds it, and the checkpoint loader builds that
variant when a file carries the whole head (:data:`OPTIONAL_CHECKPOINT_PREFIXES`), for the
motion-embedding export (the 512-d ``to_mouth`` feature). The user-facing head names are ``pose``,
``eye`` and ``expression``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..factors import FACTOR_DIMS
from .blocks import IMAGE_HINT, check_batch, conv1x1, conv3x3, conv_weight

# Checkpoint keys this module does not hold: the mouth head (computed and discarded, or never
# called, by the official code).
UNUSED_CHECKPOINT_PREFIXES = ("to_mouth.", "mouth_embed.")
# ... and the classifier / feature heads that training checkpoints carry beside the used ones.
UNUSED_CHECKPOINT_PARTS = ("mouth_fc", "headpose_fc", "classifier", "to_feature", "to_embed")
# Unused keys that form an optional head: loaded (into ``MotionEncoder(optional_heads=True)``) when
# a checkpoint holds every key of it, with the right shapes; ignored otherwise.
OPTIONAL_CHECKPOINT_PREFIXES = UNUSED_CHECKPOINT_PREFIXES
MOUTH_FEATURE_DIM = 512  # official ``to_mouth`` output
LIP_DIM = 500  # official ``mouth_embed`` output (the space of the audio's mouth factor)

# user-facing head name -> (official feature MLP, official embedding layer, output size)
HEADS = {
    "pose": ("to_headpose", "headpose_embed", FACTOR_DIMS["pose"]),
    "eye": ("to_eye", "eye_embed", FACTOR_DIMS["eye"]),
    "expression": ("to_emo", "emo_embed", FACTOR_DIMS["expression"]),
}


def _layout(x: torch.Tensor):
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.aten, "mkldnn_convolution")


def _conv2d(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    """``conv``'s convolution with the given weight and bias (inference)."""
    if conv.kernel_size == (1, 1) and _ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32:
        # PyTorch sends single-threaded 1x1 convolutions of fewer than 16 images to a generic
        # im2col path (~3x slower here); oneDNN is what it uses in every other case.
        return torch.ops.aten.mkldnn_convolution(
            x, weight, bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups
        )
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``; without gradients its weight is used in the activations' layout (memoised),
    so channels_last activations do not re-layout the weight on every call."""
    if torch.is_grad_enabled():
        return conv(x)
    return _conv2d(conv, x, conv_weight(conv, _layout(x)), conv.bias)


def _conv_bn_relu(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``relu(bn(conv(x)))``, the ReLU in place. (Folding the BatchNorm into the convolution would
    save one pass but moves the pose / eye / expression codes by ~2e-5 instead of ~2e-6.)"""
    if torch.is_grad_enabled():
        return F.relu(bn(conv(x)))
    return torch.relu_(bn(_conv(conv, x)))


class ConvBlock(nn.Module):
    """FAN residual block: three chained pre-activation 3x3 convs (out/2, out/4, out/4 channels),
    concatenated and added to the shortcut (pre-activated 1x1 conv when the width changes).

    Without gradients the concatenation and the addition are one pass: each conv output is added
    to its channel slice of the shortcut (elementwise the same sums as cat-then-add)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = conv3x3(in_ch, out_ch // 2)
        self.bn2 = nn.BatchNorm2d(out_ch // 2)
        self.conv2 = conv3x3(out_ch // 2, out_ch // 4)
        self.bn3 = nn.BatchNorm2d(out_ch // 4)
        self.conv3 = conv3x3(out_ch // 4, out_ch // 4)
        self.downsample = None
        if in_ch != out_ch:
            self.downsample = nn.Sequential(nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True), conv1x1(in_ch, out_ch))

    def forward(self, x):
        o1 = _conv(self.conv1, torch.relu_(self.bn1(x)))
        o2 = _conv(self.conv2, torch.relu_(self.bn2(o1)))
        o3 = _conv(self.conv3, torch.relu_(self.bn3(o2)))
        if torch.is_grad_enabled():
            shortcut = x if self.downsample is None else self.downsample(x)
            return torch.cat((o1, o2, o3), 1) + shortcut
        if self.downsample is None:
            out = torch.empty_like(x)
            src = x
        else:
            bn, _, conv = self.downsample
            out = _conv(conv, torch.relu_(bn(x)))
            src = out
        lo = 0
        for o in (o1, o2, o3):
            hi = lo + o.shape[1]
            torch.add(src[:, lo:hi], o, out=out[:, lo:hi])
            lo = hi
        return out


class HourGlass(nn.Module):
    """Recursive hourglass of ``depth`` levels: max-pool down, bilinear (align_corners=False) back up
    to the exact skip size (56 -> 28 -> 14 -> 7 -> 3 -> 7 -> ... for a 56x56 input)."""

    def __init__(self, depth: int = 4, ch: int = 256):
        super().__init__()
        self.depth = depth
        self._add(depth, ch)

    def _add(self, level: int, ch: int):
        # registration order defines the official state-dict order
        self.add_module(f"b1_{level}", ConvBlock(ch, ch))
        self.add_module(f"b2_{level}", ConvBlock(ch, ch))
        if level > 1:
            self._add(level - 1, ch)
        else:
            self.add_module(f"b2_plus_{level}", ConvBlock(ch, ch))
        self.add_module(f"b3_{level}", ConvBlock(ch, ch))

    def _level(self, level: int, x):
        up = self._modules[f"b1_{level}"](x)
        low = self._modules[f"b2_{level}"](F.max_pool2d(x, 2, stride=2))
        if level > 1:
            low = self._level(level - 1, low)
        else:
            low = self._modules[f"b2_plus_{level}"](low)
        low = F.interpolate(self._modules[f"b3_{level}"](low), size=up.shape[-2:], mode="bilinear", align_corners=False)
        return up + low if torch.is_grad_enabled() else up.add_(low)

    def forward(self, x):
        return self._level(self.depth, x)


class FanTrunk(nn.Module):
    """FAN with one hourglass, reduced to a vector: [B,3,224,224] -> [B,512].

    The 68 landmark heatmaps (56x56) go through ``conv6`` (stride 2) to one 28x28 map, which is
    flattened and projected by ``fc``."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = ConvBlock(64, 128)
        self.conv3 = ConvBlock(128, 128)
        self.conv4 = ConvBlock(128, 256)
        self.m0 = HourGlass(4, 256)
        self.top_m_0 = ConvBlock(256, 256)
        self.conv_last0 = nn.Conv2d(256, 256, 1)
        self.l0 = nn.Conv2d(256, 68, 1)
        self.bn_end0 = nn.BatchNorm2d(256)
        self.conv6 = nn.Conv2d(68, 1, 3, stride=2, padding=1)
        self.fc = nn.Linear(28 * 28, 512)
        self.bn5 = nn.BatchNorm2d(68)

    def forward(self, x):
        x = _conv_bn_relu(self.conv1, self.bn1, x)
        x = F.max_pool2d(self.conv2(x), 2)
        x = self.conv4(self.conv3(x))
        x = self.top_m_0(self.m0(x))
        x = _conv_bn_relu(self.conv_last0, self.bn_end0, x)
        x = _conv_bn_relu(self.l0, self.bn5, x)
        x = _conv(self.conv6, x)
        return self.fc(F.relu(x.flatten(1)))


def feature_mlp() -> nn.Sequential:
    """Linear -> ReLU -> BatchNorm1d -> Linear, 512 -> 512 (official ``to_*``)."""
    return nn.Sequential(nn.Linear(512, 512), nn.ReLU(inplace=True), nn.BatchNorm1d(512), nn.Linear(512, 512))


def embedding(dim: int) -> nn.Sequential:
    """ReLU -> Linear 512 -> dim (official ``*_embed``)."""
    return nn.Sequential(nn.ReLU(), nn.Linear(512, dim))


class MotionEncoder(nn.Module):
    """Pose, eye and expression codes of driving faces.

    forward(x, heads): x [B,3,224,224] float32 RGB in [-1,1] (any memory format) -> dict with the
    requested heads only: "pose" [B,6], "eye" [B,6] (dims 0,1,4,5 blink, 2,3 gaze),
    "expression" [B,30]; raw head outputs, before the pipeline's scaling and smoothing.
    The trunk runs channels_last, as the official run did (and faster on CPU).
    """

    memory_format = torch.channels_last

    def __init__(self, optional_heads: bool = False):
        super().__init__()
        self.model = FanTrunk()
        for mlp, emb, dim in HEADS.values():
            self.add_module(mlp, feature_mlp())
            self.add_module(emb, embedding(dim))
        if optional_heads:
            self.to_mouth = feature_mlp()
            self.mouth_embed = embedding(LIP_DIM)
        self.eval()

    @property
    def has_mouth_head(self) -> bool:
        """True when the optional mouth head (``to_mouth``, ``mouth_embed``) was built and loaded."""
        return "to_mouth" in self._modules

    def mouth_feature(self, feat: torch.Tensor) -> torch.Tensor:
        """The official ``to_mouth`` output [B,512] for trunk features [B,512] (what the official
        inference computes and discards; motion-embedding exports use it as the mouth feature)."""
        if not self.has_mouth_head:
            raise InputError(
                "this motion network has no mouth head (to_mouth / mouth_embed): the checkpoint file does not "
                "carry it. The official motion_model.pth has it; a .safetensors converted by an older version "
                "of ComfyUI-PD-FGC dropped it: convert the official checkpoint again."
            )
        return self.to_mouth(feat)

    def lip_embedding(self, mouth_feat: torch.Tensor) -> torch.Tensor:
        """The official ``mouth_embed`` [B,500] of a ``to_mouth`` feature [B,512]: the picture's lip
        code, in the space of the audio encoder's mouth factor."""
        if not self.has_mouth_head:
            self.mouth_feature(mouth_feat)  # raises the explanation
        return self.mouth_embed(mouth_feat)

    def train(self, mode: bool = True):
        """Inference only: BatchNorm always uses the checkpoint's running statistics."""
        return super().train(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk output [B,512] float32 for x [B,3,224,224] in [-1,1]."""
        check_batch(x, (3, 224, 224), "motion (driving) image", IMAGE_HINT)
        return self.model(x.contiguous(memory_format=self.memory_format))

    def head(self, name: str, feat: torch.Tensor) -> torch.Tensor:
        """One head on trunk features [B,512] -> [B,d]."""
        if name not in HEADS:
            raise InputError(f"motion head {name!r}: unknown; choose from {', '.join(HEADS)}.")
        mlp, emb, _ = HEADS[name]
        return self._modules[emb](self._modules[mlp](feat))

    def forward(self, x: torch.Tensor, heads=tuple(HEADS)) -> dict:
        if isinstance(heads, str):
            heads = (heads,)
        for name in heads:
            if name not in HEADS:
                raise InputError(f"motion head {name!r}: unknown; choose from {', '.join(HEADS)}.")
        feat = self.features(x)
        return {name: self.head(name, feat) for name in heads}
