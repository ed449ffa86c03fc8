"""Pre-trained "prior" networks the stage-1 / stage-3 losses need, loaded from files the user supplies.

None of them can be downloaded here, and none is part of PD-FGC's release. Each is read from a
file in its published layout, validated like our checkpoints (safe ``weights_only`` loading,
every expected key with its shape, finite values), and frozen. A wrong or missing file raises
:class:`~pdfgc_core.errors.CheckpointError` / :class:`~pdfgc_core.errors.InputError` naming the
file, what was wrong and where to get the right one (:data:`SOURCES`).

===========  =====================================================================  ===========
name         file (published layout)                                                 used by
===========  =====================================================================  ===========
``vgg19``    torchvision ``vgg19`` ImageNet state dict (``features.N.weight`` ...)    stage 1, Eq. 7
``vggface``  VGG-Face (Parkhi et al. 2015) as ``vgg_face_dag.pth`` (``conv1_1.weight``) stage 1
``gaze``     L2CS-Net state dict (ResNet-50 + ``fc_yaw_gaze`` / ``fc_pitch_gaze``)      Eq. 8
``emoca``    TorchScript export of the EMOCA / DECA encoders: image -> feature vector   Eq. 1, 8
===========  =====================================================================  ===========

All priors take the generator's images [B,3,H,W] RGB in -1..1 and convert them to their own
input convention (size, normalisation) themselves. :class:`GazeSubstitute` and
:class:`MotionFeatureSubstitute` are the offline stand-ins built from PD-FGC's own frozen motion
encoder; they are *substitutes*, named so in every log line, not the paper's priors.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, InputError

SOURCES = {
    "vgg19": "the torchvision ImageNet VGG19 weights, vgg19-dcbb9e9d.pth (on a machine with internet: "
    "`python -c \"import torchvision; torchvision.models.vgg19(weights='IMAGENET1K_V1')\"` stores it in "
    "~/.cache/torch/hub/checkpoints/)",
    "vggface": "the VGG-Face network converted to PyTorch, vgg_face_dag.pth (Albanie's 'pytorch-models' "
    "page, robots.ox.ac.uk/~albanie/pytorch-models.html; keys conv1_1.weight ... fc8.bias)",
    "gaze": "an L2CS-Net gaze model, e.g. L2CSNet_gaze360.pkl (github.com/Ahmednull/L2CS-Net, 'pretrained models'); "
    "or set the gaze prior to 'substitute' for PD-FGC's own eye head",
    "emoca": "a TorchScript export of EMOCA's encoders (github.com/radekd91/emoca): a module mapping RGB images "
    "[B,3,224,224] in 0..1 to one feature vector per image (e.g. the concatenated expression / jaw "
    "parameters and emotion features), saved with torch.jit.save",
}
NAMES = tuple(SOURCES)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGGFACE_MEAN_255 = (129.186279296875, 104.76238250732422, 93.59396362304688)  # vgg_face_dag meta, RGB


def where_to_get(name: str) -> str:
    return f"Get {SOURCES[name]}."


def _load_state(path: Path, name: str) -> dict:
    from ..checkpoints.safety import safe_torch_load

    if not path.is_file():
        raise InputError(f"prior {name}: {path} does not exist. {where_to_get(name)}")
    try:
        with open(path, "rb") as f:
            sd = safe_torch_load(f, str(path))
    except CheckpointError as e:
        raise CheckpointError(f"prior {name}: {e} {where_to_get(name)}") from None
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _fill(module: nn.Module, sd: dict, path: Path, name: str) -> nn.Module:
    """Loads the module's keys from ``sd`` (extra keys of the file are ignored) after checking
    presence, shapes and finiteness; returns the module frozen in eval mode."""
    want = module.state_dict()
    missing = [k for k in want if k not in sd]
    bad = [k for k in want if k in sd and tuple(sd[k].shape) != tuple(want[k].shape)]
    if missing or bad:
        shapes = [f"{k} {tuple(sd[k].shape)} (expected {tuple(want[k].shape)})" for k in bad[:3]]
        raise CheckpointError(
            f"prior {name}: {path} is not in the expected layout (missing keys {missing[:4]}"
            f"{' ...' if len(missing) > 4 else ''}; wrong shapes {shapes}). {where_to_get(name)}"
        )
    values = {k: sd[k].to(want[k].dtype) for k in want}
    if not all(bool(torch.isfinite(v).all()) for v in values.values() if v.is_floating_point()):
        raise CheckpointError(f"prior {name}: {path} holds NaN or infinite values; the file is damaged.")
    module.load_state_dict(values)
    module.eval().requires_grad_(False)
    return module


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)


class _Frozen(nn.Module):
    """A prior never trains: ``train()`` keeps it in eval mode."""

    def train(self, mode: bool = True):
        return super().train(False)


# --------------------------------------------------------------------------------- VGG19

VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)
"""torchvision ``vgg19`` ``features`` up to conv5_4 (the last max-pool is never needed)."""
PERCEPTUAL_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def _vgg_layers(layout=VGG19_LAYOUT) -> tuple[list[nn.Module], dict[str, int]]:
    """Modules of a VGG feature stack and the index of each ``reluB_C`` in it."""
    mods, names, ch, block, conv = [], {}, 3, 1, 0
    for v in layout:
        if v == "M":
            mods.append(nn.MaxPool2d(2, 2))
            block, conv = block + 1, 0
            continue
        conv += 1
        mods += [nn.Conv2d(ch, v, 3, padding=1), nn.ReLU()]
        names[f"relu{block}_{conv}"] = len(mods) - 1
        ch = v
    return mods, names


class VGG19Features(_Frozen):
    """ImageNet VGG19 (torchvision keys ``features.N.weight/bias``). ``forward(x)``: x [B,3,H,W]
    RGB -1..1 -> features at :data:`PERCEPTUAL_LAYERS` (resized to ``size`` px first, ImageNet
    normalisation)."""

    def __init__(self, size: int = 224, layers=PERCEPTUAL_LAYERS):
        super().__init__()
        mods, names = _vgg_layers()
        self.out = [names[n] for n in layers]
        self.features = nn.Sequential(*mods[: max(self.out) + 1])
        self.size = size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (_resize(x.float(), self.size) * 0.5 + 0.5 - self.mean) / self.std
        feats = []
        for i, m in enumerate(self.features):
            x = m(x)
            if i in self.out:
                feats.append(x)
        return feats


class VGGFaceFeatures(_Frozen):
    """VGG-Face (``vgg_face_dag`` keys ``conv1_1.weight`` ... ``conv5_3.bias``; VGG16 layout).
    ``forward(x)``: x [B,3,H,W] RGB -1..1 -> relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 features
    (resized to ``size``; input in 0..255 minus the network's mean colour)."""

    BLOCKS = (2, 2, 3, 3, 3)

    def __init__(self, size: int = 224):
        super().__init__()
        ch = 3
        for b, n in enumerate(self.BLOCKS, start=1):
            for c in range(1, n + 1):
                out = min(64 * 2 ** (b - 1), 512)
                self.add_module(f"conv{b}_{c}", nn.Conv2d(ch, out, 3, padding=1))
                ch = out
        self.size = size
        self.register_buffer("mean", torch.tensor(VGGFACE_MEAN_255).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (_resize(x.float(), self.size) * 0.5 + 0.5) * 255.0 - self.mean
        feats = []
        for b, n in enumerate(self.BLOCKS, start=1):
            if b > 1:
                x = F.max_pool2d(x, 2, 2)
            for c in range(1, n + 1):
                x = F.relu(self._modules[f"conv{b}_{c}"](x))
                if c == 1:
                    feats.append(x)
        return feats


# ---------------------------------------------------------------------------------- gaze


class _ResNet50(nn.Module):
    """torchvision-layout ResNet-50 trunk (``conv1``, ``bn1``, ``layer1..4``) -> pooled [B,2048]."""

    def __init__(self):
        super().__init__()
        from ..networks.appearance import Bottleneck

        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_ch = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
            stride = 1 if i == 0 else 2
            stage = [Bottleneck(in_ch, planes, stride, groups=1, base_width=64)]
            in_ch = planes * Bottleneck.expansion
            stage += [Bottleneck(in_ch, planes, groups=1, base_width=64) for _ in range(blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean((2, 3))


GAZE_BINS = {90: (4.0, 180.0), 28: (3.0, 42.0)}
"""L2CS-Net bin layouts: bins -> (degrees per bin, offset): Gaze360 (90 bins) and MPIIGaze (28 bins)."""


class L2CSGaze(_Frozen):
    """L2CS-Net: ResNet-50 + two bin classifiers (``fc_yaw_gaze``, ``fc_pitch_gaze``, [bins, 2048]).
    ``forward(x)``: x [B,3,H,W] RGB -1..1 -> (pitch, yaw) [B,2] in degrees, the expectation over
    the bins (resized to ``size``, ImageNet normalisation)."""

    def __init__(self, bins: int = 90, size: int = 448):
        super().__init__()
        if bins not in GAZE_BINS:
            raise ValueError(f"L2CS-Net has {sorted(GAZE_BINS)} bins, not {bins}")
        self.trunk = _ResNet50()
        self.fc_yaw_gaze = nn.Linear(2048, bins)
        self.fc_pitch_gaze = nn.Linear(2048, bins)
        self.size, (self.step, self.offset) = size, GAZE_BINS[bins]
        self.register_buffer("idx", torch.arange(bins, dtype=torch.float32), persistent=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def load_published(self, sd: dict, path: Path) -> L2CSGaze:
        trunk = {f"trunk.{k}": v for k, v in sd.items() if not k.startswith(("fc", "fc_"))}
        heads = {k: v for k, v in sd.items() if k.startswith(("fc_yaw_gaze.", "fc_pitch_gaze."))}
        return _fill(self, {**trunk, **heads}, path, "gaze")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (_resize(x.float(), self.size) * 0.5 + 0.5 - self.mean) / self.std
        f = self.trunk(x)
        angles = [
            (F.softmax(head(f), 1) * self.idx).sum(1) * self.step - self.offset
            for head in (self.fc_pitch_gaze, self.fc_yaw_gaze)
        ]
        return torch.stack(angles, 1)


# ------------------------------------------------------------------------------ EMOCA


class ScriptedFeatures(_Frozen):
    """A TorchScript module (the user's EMOCA export) mapping RGB [B,3,S,S] in 0..1 to a tensor
    or a tuple / list / dict of tensors; ``forward(x)`` (x in -1..1) -> all of them flattened and
    concatenated, [B,F]."""

    def __init__(self, scripted, size: int = 224):
        super().__init__()
        self.net, self.size = scripted, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(_resize(x.float(), self.size) * 0.5 + 0.5)
        if isinstance(out, dict):
            out = [out[k] for k in sorted(out)]
        if torch.is_tensor(out):
            out = [out]
        return torch.cat([o.reshape(len(x), -1).float() for o in out], 1)


def _load_scripted(path: Path, size: int) -> ScriptedFeatures:
    if not path.is_file():
        raise InputError(f"prior emoca: {path} does not exist. {where_to_get('emoca')}")
    try:
        net = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # torch raises RuntimeError / ValueError for non-TorchScript files
        raise CheckpointError(
            f"prior emoca: {path} is not a TorchScript archive ({type(e).__name__}). {where_to_get('emoca')}"
        ) from None
    mod = ScriptedFeatures(net, size).eval().requires_grad_(False)
    try:
        with torch.no_grad():
            probe = mod(torch.zeros(2, 3, size, size))
    except Exception as e:
        raise CheckpointError(
            f"prior emoca: {path} fails on a [2,3,{size},{size}] image batch ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160] if str(e) else ''}). {where_to_get('emoca')}"
        ) from None
    if probe.shape[0] != 2 or not torch.isfinite(probe).all():
        raise CheckpointError(f"prior emoca: {path} does not return one finite feature vector per image.")
    return mod


# ------------------------------------------------------------------------- substitutes


class GazeSubstitute(nn.Module):
    """SUBSTITUTE for L2CS-Net: the gaze dimensions (2, 3) of PD-FGC's own frozen eye head on the
    motion trunk's features [B,512] -> [B,2] (not angles; only differences are used)."""

    def __init__(self, motion: nn.Module):
        super().__init__()
        self.motion = [motion]  # not a submodule: the frozen motion encoder is owned elsewhere

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        from ..factors import EYE_GAZE_DIMS

        return self.motion[0].head("eye", feat)[:, list(EYE_GAZE_DIMS)]


# ---------------------------------------------------------------------------------- load


def load_prior(name: str, path, size: int | None = None) -> nn.Module:
    """The prior ``name`` from the user's file ``path``, frozen, on CPU (``size``: its input size)."""
    if name not in SOURCES:
        raise InputError(f"prior {name!r} is unknown; priors are {', '.join(NAMES)}.")
    p = Path(path).expanduser()
    if name == "emoca":
        return _load_scripted(p, size or 224)
    sd = _load_state(p, name)
    if name == "vgg19":
        return _fill(VGG19Features(size or 224), sd, p, name)
    if name == "vggface":
        return _fill(VGGFaceFeatures(size or 224), sd, p, name)
    bins = sd.get("fc_yaw_gaze.weight")
    if bins is None or bins.dim() != 2 or bins.shape[0] not in GAZE_BINS:
        raise CheckpointError(
            f"prior gaze: {path} has no fc_yaw_gaze.weight of {sorted(GAZE_BINS)} bins: not an L2CS-Net "
            f"state dict. {where_to_get('gaze')}"
        )
    return L2CSGaze(int(bins.shape[0]), size or 448).load_published(sd, p)


def published_state_dict(name: str, seed: int = 0, bins: int = 90) -> dict[str, torch.Tensor]:
    """A randomly initialised state dict in prior ``name``'s published layout (key names and shapes
    of the real file), for tests and for checking a loader without the real weights."""
    torch.manual_seed(seed)
    if name == "vgg19":
        mods, _ = _vgg_layers((*VGG19_LAYOUT, "M"))
        sd = {f"features.{k}": v for k, v in nn.Sequential(*mods).state_dict().items()}
        sd.update({"classifier.0.weight": torch.randn(8, 4) * 0.01, "classifier.0.bias": torch.zeros(8)})
        return sd  # (the real classifier is [4096, 25088]; it is ignored, so a small one stands in)
    if name == "vggface":
        sd = dict(VGGFaceFeatures().state_dict())
        sd.update({"fc8.weight": torch.randn(4, 8) * 0.01, "fc8.bias": torch.zeros(4)})
        return sd
    if name == "gaze":
        g = L2CSGaze(bins)
        sd = dict(g.trunk.state_dict())
        sd.update({f"fc_yaw_gaze.{k}": v for k, v in g.fc_yaw_gaze.state_dict().items()})
        sd.update({f"fc_pitch_gaze.{k}": v for k, v in g.fc_pitch_gaze.state_dict().items()})
        sd.update({"fc_finetune.weight": torch.zeros(3, 2051), "fc_finetune.bias": torch.zeros(3)})
        return sd
    raise InputError(f"prior {name!r} has no state-dict layout (emoca is a TorchScript file).")
