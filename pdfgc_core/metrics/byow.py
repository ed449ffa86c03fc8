"""Bring-your-own-weights metrics: the published networks behind the numbers papers report.

None of these weights ship with the project or are downloaded by it; each loader takes the file
in its published layout and says what to get when it is missing or is something else.

- **SyncNet** (Chung and Zisserman 2016; ``syncnet_v2.model`` of the syncnet_python project): LSE-D
  (minimum mean distance over a +-15 frame offset sweep) and LSE-C (median minus minimum), the
  lip-sync numbers of Wav2Lip-style evaluations, PD-FGC's included.
- **FID** (Heusel et al. 2017) with the TensorFlow Inception port used by pytorch-fid
  (``pt_inception-2015-12-05-6726825d.pth``): 2048-d pool features, Frechet distance.
- **Identity** with an ArcFace recognition model in ONNX (e.g. insightface's ``w600k_r50.onnx``):
  cosine similarity of 5-point-aligned 112 x 112 faces, run with OpenCV's DNN module.

Network definitions here are written from the published layer shapes so that the files load
with their own key names; nothing is downloaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints.safety import first_line, safe_torch_load
from ..errors import CheckpointError, InputError
from .sync import SyncResult, offset_sweep

SYNCNET_HINT = (
    "Get syncnet_v2.model from the syncnet_python project (Chung and Zisserman; its download_model.sh "
    "fetches it) and pass its path (CLI: --syncnet PATH)."
)
INCEPTION_HINT = (
    "Get pt_inception-2015-12-05-6726825d.pth, the FID Inception weights published with pytorch-fid "
    "(github.com/mseitzer/pytorch-fid releases), and pass its path (CLI: --inception PATH)."
)
ARCFACE_HINT = (
    "Get an ArcFace face-recognition model in ONNX format taking 112x112 faces (e.g. w600k_r50.onnx from "
    "insightface's buffalo_l pack) and pass its path (CLI: --arcface PATH)."
)


def _require_file(path, what: str, hint: str) -> Path:
    if path is None or str(path) == "":
        raise CheckpointError(f"{what}: no weight file given. {hint}")
    p = Path(path)
    if not p.is_file():
        why = "is a folder, not a file" if p.is_dir() else "does not exist"
        raise CheckpointError(f"{what}: {p} {why}. {hint}")
    return p


def _read_state(path: Path, what: str) -> dict:
    """A plain tensor state dict from a ``.pth``-style file (safely unpickled), ``module.`` prefixes removed."""
    sd = safe_torch_load(str(path), f"{what} {path}")
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}


def _load_layout(module: nn.Module, sd: dict, path: Path, what: str, hint: str) -> nn.Module:
    """Loads ``sd`` into ``module``, requiring exactly its keys and shapes."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [
        f"{k} {tuple(sd[k].shape)} (expected {tuple(own[k].shape)})"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {name} (e.g. {', '.join(keys[:3])})")
        raise CheckpointError(f"{what}: {path} is not in the expected layout: {'; '.join(parts)}. {hint}")
    module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    return module.eval()


# ------------------------------------------------------------------------------------ SyncNet

SYNCNET_FPS = 25.0
SYNCNET_RATE = 16000
SYNCNET_FRAMES = 5
"""Video frames per SyncNet sample (0.2 s), paired with 20 MFCC frames."""
SYNCNET_SIZE = 224


def _bn_relu(block: list, ch: int, dims: int = 2) -> list:
    block.append(nn.BatchNorm2d(ch) if dims == 2 else nn.BatchNorm3d(ch))
    block.append(nn.ReLU(inplace=True))
    return block


class SyncNetV2(nn.Module):
    """SyncNet as published in ``syncnet_v2.model`` (state-dict keys ``netcnnaud.*``, ``netfcaud.*``,
    ``netcnnlip.*``, ``netfclip.*``).

    ``forward_aud``: MFCC ``[B,1,13,20]`` (13 cepstra x 0.2 s) -> ``[B,1024]``.
    ``forward_lip``: frames ``[B,3,5,224,224]`` BGR float 0..255 (5 consecutive face crops) -> ``[B,1024]``.
    """

    def __init__(self, embed: int = 1024):
        super().__init__()
        a: list = [nn.Conv2d(1, 64, 3, 1, 1)]
        _bn_relu(a, 64).append(nn.MaxPool2d(1, 1))
        a.append(nn.Conv2d(64, 192, 3, 1, 1))
        _bn_relu(a, 192).append(nn.MaxPool2d(3, (1, 2)))
        a.append(nn.Conv2d(192, 384, 3, padding=1))
        _bn_relu(a, 384).append(nn.Conv2d(384, 256, 3, padding=1))
        _bn_relu(a, 256).append(nn.Conv2d(256, 256, 3, padding=1))
        _bn_relu(a, 256).append(nn.MaxPool2d(3, 2))
        a.append(nn.Conv2d(256, 512, (5, 4)))
        _bn_relu(a, 512)
        self.netcnnaud = nn.Sequential(*a)
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed))
        v: list = [nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2))]
        _bn_relu(v, 96, 3).append(nn.MaxPool3d((1, 3, 3), (1, 2, 2)))
        v.append(nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)))
        _bn_relu(v, 256, 3).append(nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
        v.append(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)))
        _bn_relu(v, 256, 3).append(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)))
        _bn_relu(v, 256, 3).append(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)))
        _bn_relu(v, 256, 3).append(nn.MaxPool3d((1, 3, 3), (1, 2, 2)))
        v.append(nn.Conv3d(256, 512, (1, 6, 6)))
        _bn_relu(v, 512, 3)
        self.netcnnlip = nn.Sequential(*v)
        self.eval()

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(x).flatten(1))


def load_syncnet(path, device="cpu") -> SyncNetV2:
    """``syncnet_v2.model`` (a state dict of :class:`SyncNetV2`) -> the network in eval mode."""
    what = "SyncNet weights"
    p = _require_file(path, what, SYNCNET_HINT)
    return _load_layout(SyncNetV2(), _read_state(p, what), p, what, SYNCNET_HINT).to(device)


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mfcc_filterbank(n_filters: int = 26, nfft: int = 512, rate: int = SYNCNET_RATE) -> np.ndarray:
    """Triangular mel filters ``[n_filters, nfft//2+1]`` on FFT bins floor((nfft+1) f / rate) of
    mel-spaced points from 0 Hz to rate/2 (the layout of python_speech_features)."""
    pts = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(rate / 2.0), n_filters + 2))
    bins = np.floor((nfft + 1) * pts / rate)
    fb = np.zeros((n_filters, nfft // 2 + 1))
    for j in range(n_filters):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        for i in range(int(lo), int(mid)):
            fb[j, i] = (i - lo) / (mid - lo)
        for i in range(int(mid), int(hi)):
            fb[j, i] = (hi - i) / (hi - mid)
    return fb


def _dct_ortho(n: int, keep: int) -> np.ndarray:
    k = np.arange(keep)[:, None]
    m = np.cos(np.pi * k * (2 * np.arange(n)[None] + 1) / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


def syncnet_mfcc(wave16k) -> np.ndarray:
    """SyncNet's audio features: 16 kHz mono ``[N]`` float in -1..1 -> MFCC ``[13, M]``, 100 per second.

    The samples are taken as 16-bit PCM (x 32768, as syncnet_python reads its wav), pre-emphasis 0.97,
    25 ms rectangular frames every 10 ms (the last one zero-padded), 512-point power spectrum / 512,
    26 mel filters, log, orthonormal DCT-II, 13 cepstra, sine lifter 22, and c0 replaced by the log
    frame energy: the defaults of ``python_speech_features.mfcc``."""
    x = np.asarray(wave16k, np.float64).reshape(-1)
    if x.size == 0 or not np.isfinite(x).all():
        raise InputError("SyncNet audio: the waveform is empty or contains NaN/inf")
    sig = np.clip(np.round(x * 32768.0), -32768, 32767)
    sig = np.append(sig[0], sig[1:] - 0.97 * sig[:-1])
    flen, step, nfft = 400, 160, 512
    n = 1 if sig.size <= flen else 1 + int(math.ceil((sig.size - flen) / step))
    sig = np.concatenate([sig, np.zeros((n - 1) * step + flen - sig.size)])
    idx = np.arange(flen)[None] + step * np.arange(n)[:, None]
    pspec = np.abs(np.fft.rfft(sig[idx], nfft)) ** 2 / nfft
    eps = np.finfo(np.float64).eps
    energy = pspec.sum(1)
    energy = np.where(energy == 0, eps, energy)
    feat = pspec @ mfcc_filterbank(26, nfft, SYNCNET_RATE).T
    feat = np.log(np.where(feat == 0, eps, feat)) @ _dct_ortho(26, 13).T
    feat *= 1.0 + 11.0 * np.sin(np.pi * np.arange(13) / 22.0)
    feat[:, 0] = np.log(energy)
    return feat.T


@torch.inference_mode()
def syncnet_lse(
    model: SyncNetV2,
    frames_u8,
    wave16k,
    max_offset: int = 15,
    batch_size: int = 20,
    progress: Callable[[int], None] | None = None,
) -> SyncResult:
    """SyncNet's offset sweep over face-crop frames and their synchronous audio.

    ``frames_u8``: uint8 RGB ``[N,H,W,3]`` at 25 fps, face crops (resized to 224 x 224 if needed);
    ``wave16k``: the audio track, 16 kHz mono float in -1..1, starting with frame 0. As
    syncnet_python: ``min(N, samples // 640) - 5`` samples of 5 frames / 20 MFCC frames, Euclidean
    distance, audio zero-padded at the ends. ``min_distance`` is LSE-D, ``confidence`` LSE-C;
    ``best_offset`` uses this package's sign (syncnet_python prints ``-best_offset``)."""
    import cv2

    frames = np.asarray(frames_u8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(f"SyncNet frames: expected uint8 RGB [N,H,W,3], got {frames.dtype} {frames.shape}")
    wave = np.asarray(wave16k, np.float64).reshape(-1)
    usable = min(frames.shape[0], wave.size // 640) - SYNCNET_FRAMES
    if usable < 1:
        raise InputError(
            f"SyncNet needs at least {SYNCNET_FRAMES + 1} frames (0.24 s) of video with audio; got "
            f"{frames.shape[0]} frames and {wave.size / SYNCNET_RATE:.3f} s of audio"
        )
    mfcc = torch.from_numpy(syncnet_mfcc(wave)).float()
    dev = next(model.parameters()).device
    crops = [
        f if f.shape[:2] == (SYNCNET_SIZE, SYNCNET_SIZE) else cv2.resize(f, (SYNCNET_SIZE, SYNCNET_SIZE))
        for f in frames[: usable + SYNCNET_FRAMES - 1]
    ]
    video = torch.from_numpy(np.stack(crops)[..., ::-1].copy()).float().permute(3, 0, 1, 2)  # [3,T,H,W] BGR
    lip, aud = [], []
    for s in range(0, usable, batch_size):
        ids = range(s, min(usable, s + batch_size))
        lip.append(model.forward_lip(torch.stack([video[:, i : i + SYNCNET_FRAMES] for i in ids]).to(dev)).cpu())
        aud.append(model.forward_aud(torch.stack([mfcc[None, :, 4 * i : 4 * i + 20] for i in ids]).to(dev)).cpu())
        if progress:
            progress(len(ids))
    return offset_sweep(torch.cat(lip), torch.cat(aud), max_offset=max_offset, metric="euclidean", pad="zeros")


def nlse_c(lse_c_generated: float, lse_c_ground_truth: float) -> float:
    """Normalised LSE-C (PD-FGC Eq. 9): (LSE-C_gen - LSE-C_gt) / LSE-C_gt."""
    if not lse_c_ground_truth:
        raise InputError("NLSE-C: the ground truth's LSE-C is 0; it cannot normalise")
    return (lse_c_generated - lse_c_ground_truth) / lse_c_ground_truth


# ------------------------------------------------------------------------------------ FID

FID_SIZE = 299
FID_DIMS = 2048


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU."""

    def __init__(self, cin: int, cout: int, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg3(x):
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)  # TensorFlow's average pool ignores padding


class _MixedA(nn.Module):  # 35x35
    def __init__(self, cin: int, pool: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool, kernel_size=1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg3(x))], 1)


class _MixedB(nn.Module):  # 35 -> 17
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, 2)], 1)


class _MixedC(nn.Module):  # 17x17, factorised 7x7
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class _MixedD(nn.Module):  # 17 -> 8
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, 2)], 1)


class _MixedE(nn.Module):  # 8x8, expanded filter bank
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool  # the FID network's last block pools with max, not average
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = F.max_pool2d(x, 3, 1, 1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pooled)], 1)


class FIDInception(nn.Module):
    """Inception v3 as in the FID weights (TensorFlow's 2015-12-05 graph ported to PyTorch): state-dict
    keys ``Conv2d_1a_3x3.*`` ... ``Mixed_7c.*`` and ``fc.*`` (1008 classes, unused).

    forward: RGB ``[B,3,H,W]`` float in 0..1 -> pool features ``[B,2048]`` (bilinear resize to
    299 x 299, scaled to -1..1)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = _MixedA(192, 32)
        self.Mixed_5c = _MixedA(256, 64)
        self.Mixed_5d = _MixedA(288, 64)
        self.Mixed_6a = _MixedB(288)
        self.Mixed_6b = _MixedC(768, 128)
        self.Mixed_6c = _MixedC(768, 160)
        self.Mixed_6d = _MixedC(768, 160)
        self.Mixed_6e = _MixedC(768, 192)
        self.Mixed_7a = _MixedD(768)
        self.Mixed_7b = _MixedE(1280, max_pool=False)
        self.Mixed_7c = _MixedE(2048, max_pool=True)
        self.fc = nn.Linear(FID_DIMS, 1008)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(FID_SIZE, FID_SIZE), mode="bilinear", align_corners=False) * 2.0 - 1.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, 2)))
        x = F.max_pool2d(x, 3, 2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def load_fid_inception(path, device="cpu") -> FIDInception:
    """The FID Inception weights (pytorch-fid's ``pt_inception-2015-12-05-*.pth``) -> :class:`FIDInception`."""
    what = "FID Inception weights"
    p = _require_file(path, what, INCEPTION_HINT)
    sd = _read_state(p, what)
    fc = sd.get("fc.weight")
    if any(k.startswith("AuxLogits.") for k in sd) or (fc is not None and fc.shape[0] == 1000):
        raise CheckpointError(
            f"{what}: {p} is torchvision's ImageNet Inception v3 (auxiliary head / 1000 classes), whose FID values "
            f"are not comparable with published ones. {INCEPTION_HINT}"
        )
    return _load_layout(FIDInception(), sd, p, what, INCEPTION_HINT).to(device)


@torch.inference_mode()
def inception_features(
    model: FIDInception, frames_u8, batch_size: int = 16, progress: Callable[[int], None] | None = None
) -> np.ndarray:
    """uint8 RGB frames ``[N,H,W,3]`` -> Inception pool features ``[N,2048]`` float64."""
    frames = np.asarray(frames_u8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] == 0:
        raise InputError(f"FID frames: expected uint8 RGB [N,H,W,3], got {frames.dtype} {frames.shape}")
    dev = next(model.parameters()).device
    out = []
    for s in range(0, frames.shape[0], batch_size):
        x = torch.from_numpy(np.ascontiguousarray(frames[s : s + batch_size])).permute(0, 3, 1, 2).float() / 255.0
        out.append(model(x.to(dev)).double().cpu().numpy())
        if progress:
            progress(x.shape[0])
    return np.concatenate(out)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance of two Gaussians: ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``. The trace
    of the matrix square root is taken as that of ``(S1^(1/2) S2 S1^(1/2))^(1/2)`` (same eigenvalues;
    symmetric, so it stays real and stable)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise InputError(f"Frechet distance: shapes {mu1.shape}, {s1.shape} and {mu2.shape}, {s2.shape} do not match")
    r1 = _psd_sqrt(s1)
    w = np.linalg.eigvalsh(r1 @ s2 @ r1)
    covmean_trace = float(np.sqrt(np.clip(w, 0.0, None)).sum())
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * covmean_trace)


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise InputError(f"FID needs at least 2 frames per set, got features of shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def fid(model: FIDInception, frames_a, frames_b, batch_size: int = 16) -> float:
    """FID between two sets of uint8 RGB frames (each ``[N,H,W,3]``, N >= 2). With fewer than a few
    thousand frames the value is biased upwards and only comparable between equally sized sets."""
    mu1, s1 = feature_stats(inception_features(model, frames_a, batch_size))
    mu2, s2 = feature_stats(inception_features(model, frames_b, batch_size))
    return frechet_distance(mu1, s1, mu2, s2)


# ------------------------------------------------------------------------------------ ArcFace

ARCFACE_SIZE = 112
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
"""Where ArcFace models expect the five points in a 112 x 112 crop: image-left eye centre, image-right
eye centre, nose tip, image-left and image-right mouth corners (the insightface alignment)."""
ARCFACE_NORMALIZATIONS = {"insightface": (127.5, 127.5), "none": (0.0, 1.0)}
"""Input scaling (mean, std) on 0..255 RGB: ``insightface`` for models trained by insightface
(w600k_r50 and others), ``none`` for models that normalise inside the graph."""


def five_points(landmarks68) -> np.ndarray:
    """The five ArcFace alignment points ``[5,2]`` from 68 landmarks ``[68,2]``."""
    lm = np.asarray(landmarks68, np.float64)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def arcface_crop(frame_u8, landmarks68) -> np.ndarray:
    """One face aligned for ArcFace: uint8 RGB ``[112,112,3]`` (similarity transform of the five points
    onto :data:`ARCFACE_TEMPLATE`)."""
    import cv2

    from ..faces import similarity_transform

    m = similarity_transform(five_points(landmarks68), ARCFACE_TEMPLATE)
    return cv2.warpAffine(np.ascontiguousarray(frame_u8), m, (ARCFACE_SIZE, ARCFACE_SIZE), flags=cv2.INTER_LINEAR)


class ArcFaceONNX:
    """An ArcFace ONNX model run with OpenCV's DNN module (no extra runtime).

    ``embed(faces)``: aligned uint8 RGB faces ``[N,112,112,3]`` -> L2-normalised embeddings ``[N,D]``."""

    def __init__(self, path, normalization: str = "insightface"):
        import cv2

        p = _require_file(path, "ArcFace ONNX model", ARCFACE_HINT)
        if normalization not in ARCFACE_NORMALIZATIONS:
            raise InputError(f"ArcFace normalization {normalization!r} is not one of {tuple(ARCFACE_NORMALIZATIONS)}")
        try:
            self.net = cv2.dnn.readNetFromONNX(str(p))
        except cv2.error as e:
            raise CheckpointError(
                f"ArcFace ONNX model: OpenCV cannot read {p} as an ONNX network ({first_line(e)}). {ARCFACE_HINT}"
            ) from None
        self.mean, self.std = ARCFACE_NORMALIZATIONS[normalization]
        self.path = p

    def _run(self, blob: np.ndarray) -> np.ndarray:
        import cv2

        try:
            self.net.setInput(blob)
            return np.asarray(self.net.forward(), np.float64).reshape(blob.shape[0], -1)
        except cv2.error as e:
            raise CheckpointError(
                f"ArcFace ONNX model {self.path} failed on a {ARCFACE_SIZE}x{ARCFACE_SIZE} face batch "
                f"({first_line(e)}). {ARCFACE_HINT}"
            ) from None

    def embed(self, faces_u8) -> np.ndarray:
        faces = np.asarray(faces_u8)
        if faces.ndim != 4 or faces.shape[1:] != (ARCFACE_SIZE, ARCFACE_SIZE, 3) or faces.dtype != np.uint8:
            raise InputError(f"ArcFace faces: expected uint8 RGB [N,112,112,3], got {faces.dtype} {faces.shape}")
        blob = ((faces.astype(np.float32) - self.mean) / self.std).transpose(0, 3, 1, 2).copy()
        try:
            emb = self._run(blob)
        except CheckpointError:
            if blob.shape[0] == 1:
                raise
            emb = np.concatenate([self._run(blob[i : i + 1]) for i in range(blob.shape[0])])  # fixed batch 1
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def identity_similarity(model: ArcFaceONNX, frames_u8, landmarks, reference_u8, reference_landmarks) -> dict:
    """Cosine similarity of each frame's face to a reference face (the appearance image or a
    ground-truth frame): ``mean`` over frames with a face, ``per_frame`` ``[N]`` (NaN without a face),
    ``frames_used``. Faces are aligned with their 68 landmarks (see :func:`arcface_crop`)."""
    frames = np.asarray(frames_u8)
    lm = np.asarray(landmarks, np.float64)
    if not np.isfinite(np.asarray(reference_landmarks, np.float64)).all():
        raise InputError("identity: no face was found in the reference image")
    ref = model.embed(arcface_crop(reference_u8, reference_landmarks)[None])[0]
    ok = [i for i in range(frames.shape[0]) if np.isfinite(lm[i]).all()]
    per = np.full(frames.shape[0], np.nan)
    if ok:
        emb = model.embed(np.stack([arcface_crop(frames[i], lm[i]) for i in ok]))
        per[ok] = emb @ ref
    return {"mean": float(np.nanmean(per)) if ok else float("nan"), "per_frame": per, "frames_used": len(ok)}
