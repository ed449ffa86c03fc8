"""Image intake and output, bit-exact with the official loader (PDFGC.md section 5, "Images").

Layouts and ranges used here:
- ``u8``: numpy uint8 RGB, [H, W, 3] or [B, H, W, 3], 0..255.
- ComfyUI IMAGE: torch float32 [B, H, W, C] in 0..1.
- network: torch float32 [B, 3, 224, 224] RGB in -1..1 (no ImageNet mean/std).

The official loader reads with ``cv2.imread`` (BGR), resizes to 224x224 (INTER_LINEAR), keeps rows
0:192 and columns 16:208, resizes back to 224x224 (INTER_LINEAR, OpenCV's fixed-point bilinear),
converts to RGB and maps ``u -> float32(u / 255.0) * 2 - 1``. Both resizes act on each channel
alone, so doing them on RGB instead of BGR gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import InputError, MediaError

SIZE = 224
CROP_ROWS = (0, 192)
CROP_COLS = (16, 208)
CROPS = ("official", "none")


def _cv2():
    import cv2

    return cv2


def read_image(path) -> np.ndarray:
    """Decode an image file -> RGB uint8 [H, W, 3], as ``cv2.imread(path)`` + BGR->RGB.

    OpenCV's IMREAD_COLOR rules apply: grey is replicated to 3 channels, an alpha channel is
    dropped (not composited), 16-bit files keep their high byte (``v >> 8``), EXIF orientation is
    applied. The bytes are read by Python so non-ASCII paths work. :class:`MediaError` for a
    missing or undecodable file.
    """
    cv2 = _cv2()
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "does not exist"
        raise MediaError(f"Image file {str(path)!r} {what}. Give the path of an existing image.")
    try:
        buf = np.fromfile(str(p), dtype=np.uint8)
    except OSError as exc:
        raise MediaError(f"Image file {str(p)!r} could not be read ({exc}).") from None
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None:
        raise MediaError(
            f"Image file {str(p)!r} could not be decoded. Use a complete PNG, JPEG, BMP, WebP or TIFF image."
        )
    return np.ascontiguousarray(img[..., ::-1])


def to_u8(images) -> np.ndarray:
    """An integer image array -> uint8 (uint8 passes; uint16 keeps the high byte, ``v >> 8``, the
    rule OpenCV's IMREAD_COLOR applies to 16-bit files). Other dtypes raise :class:`InputError`."""
    a = np.asarray(images.detach().cpu().numpy() if torch.is_tensor(images) else images)
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return (a >> 8).astype(np.uint8)
    raise InputError(
        f"image array has dtype {a.dtype}; expected uint8 (or uint16). Float ComfyUI images go through comfy_to_u8."
    )


def _check_rgb_u8(img, what: str, batched: bool) -> np.ndarray:
    a = to_u8(img)
    nd = 4 if batched else 3
    if a.ndim != nd or a.shape[-1] != 3:
        layout = "[B, H, W, 3]" if batched else "[H, W, 3]"
        raise InputError(f"{what}: expected RGB uint8 {layout}, got shape {tuple(a.shape)}.")
    if a.shape[-3] < 1 or a.shape[-2] < 1 or (batched and a.shape[0] == 0):
        raise InputError(f"{what} is empty (shape {tuple(a.shape)}).")
    return a


def resize_224(rgb_u8: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 -> [224, 224, 3], cv2 INTER_LINEAR, aspect not kept; a copy if already 224."""
    a = _check_rgb_u8(rgb_u8, "image", batched=False)
    if a.shape[:2] == (SIZE, SIZE):
        return a.copy()
    return _cv2().resize(np.ascontiguousarray(a), (SIZE, SIZE), interpolation=_cv2().INTER_LINEAR)


def official_crop(rgb_u8) -> np.ndarray:
    """Official framing: [H, W, 3] uint8 -> resize 224 -> rows 0:192, cols 16:208 -> resize 224.

    Returns [224, 224, 3] uint8, byte-identical to the official ``load_img`` (RGB).
    """
    a = resize_224(rgb_u8)
    crop = np.ascontiguousarray(a[CROP_ROWS[0] : CROP_ROWS[1], CROP_COLS[0] : CROP_COLS[1]])
    return _cv2().resize(crop, (SIZE, SIZE), interpolation=_cv2().INTER_LINEAR)


def to_network(u8, channels_last: bool = False) -> torch.Tensor:
    """uint8 [B, 224, 224, 3] or [224, 224, 3] (numpy or torch) -> torch float32 [B, 3, 224, 224]
    in -1..1, ``float32(u / 255.0) * 2 - 1`` (the division in float64, as official ``to_Tensor``).

    ``channels_last=True`` gives the official tensor's NHWC strides (same values), which the
    motion encoder needs for bit-exact results; the default is contiguous NCHW.
    """
    a = to_u8(u8)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise InputError(f"image batch for the network: expected uint8 [B, H, W, 3], got shape {tuple(a.shape)}.")
    if a.shape[0] == 0:
        raise InputError("image batch for the network is empty.")
    t = torch.from_numpy(np.ascontiguousarray(a)).double().div_(255.0).float().mul_(2.0).sub_(1.0)
    t = t.permute(0, 3, 1, 2)
    return t.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def prepare_batch(images, crop: str = "official", channels_last: bool = False) -> torch.Tensor:
    """RGB uint8 [B, H, W, 3] -> network tensor [B, 3, 224, 224] float32 in -1..1.

    ``crop="official"``: the official loader's resize + crop + resize (faces framed like the
    official samples / our alignment). ``crop="none"``: only resize to 224 (images already in
    network framing).
    """
    if crop not in CROPS:
        raise InputError(f"crop mode {crop!r} is not one of {CROPS}.")
    a = _check_rgb_u8(images, "image batch", batched=True)
    fn = official_crop if crop == "official" else resize_224
    return to_network(np.stack([fn(im) for im in a]), channels_last=channels_last)


# ---------------------------------------------------------------------------------- ComfyUI


def comfy_to_u8(images) -> np.ndarray:
    """ComfyUI IMAGE [B, H, W, C] float 0..1 (torch or numpy) -> uint8 numpy [B, H, W, 3].

    Values are clipped to 0..1, then ``round(x * 255)`` (ties to even). C = 1 (grey) is repeated to
    3 channels; C = 4 (RGBA) drops alpha without compositing (as OpenCV's reader does); a single
    [H, W, C] image is taken as a batch of one. Empty batches, other channel counts and NaN/inf
    raise :class:`InputError`.
    """
    t = images if torch.is_tensor(images) else torch.as_tensor(np.asarray(images))
    t = t.detach().cpu()
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4:
        raise InputError(f"IMAGE: expected [batch, height, width, channels], got shape {tuple(t.shape)}.")
    if t.shape[0] == 0 or t.shape[1] == 0 or t.shape[2] == 0:
        raise InputError(f"IMAGE batch is empty (shape {tuple(t.shape)}). Connect at least one image.")
    c = t.shape[-1]
    if c not in (1, 3, 4):
        raise InputError(f"IMAGE has {c} channels; expected 3 (RGB), 1 (grey) or 4 (RGBA).")
    if not t.is_floating_point():
        raise InputError(f"IMAGE has dtype {t.dtype}; expected float values in 0..1.")
    t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise InputError("IMAGE contains NaN or infinite values. Fix the node that produced it.")
    if c == 1:
        t = t.expand(-1, -1, -1, 3)
    elif c == 4:
        t = t[..., :3]
    return (t.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy().copy()


def u8_to_comfy(u8) -> torch.Tensor:
    """uint8 [B, H, W, 3] or [H, W, 3] -> ComfyUI IMAGE torch float32 [B, H, W, 3] in 0..1 (u / 255)."""
    a = to_u8(u8)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise InputError(f"image: expected uint8 [B, H, W, C], got shape {tuple(a.shape)}.")
    return torch.from_numpy(np.ascontiguousarray(a)).float().div_(255.0)


def _check_network(x) -> torch.Tensor:
    t = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[1] != 3:
        raise InputError(f"network image: expected [B, 3, H, W] float in -1..1, got shape {tuple(t.shape)}.")
    t = t.detach().cpu().float()
    if not bool(torch.isfinite(t).all()):
        raise InputError("network image contains NaN or infinite values; it cannot be converted to pixels.")
    return t


def network_to_comfy(x) -> torch.Tensor:
    """Network images [B, 3, H, W] float -1..1 -> ComfyUI IMAGE [B, H, W, 3] float32 0..1 ((x+1)/2, clipped)."""
    t = _check_network(x)
    return ((t + 1.0) / 2.0).clamp_(0.0, 1.0).permute(0, 2, 3, 1).contiguous()


def network_to_u8(x, rounding: str = "official") -> np.ndarray:
    """Network images [B, 3, H, W] float -1..1 -> uint8 numpy [B, H, W, 3] RGB.

    ``rounding="official"``: ``((x + 1) / 2 * 255).astype(uint8)`` in float32, which truncates
    (as the official ``post_process``; it even maps 63 of the 256 ``to_network`` levels one step
    down). ``rounding="round"``: round to nearest, exact inverse of :func:`to_network`. Values
    outside -1..1 are clipped first (no effect on tanh outputs).
    """
    if rounding not in ("official", "round"):
        raise InputError(f"rounding {rounding!r} is not one of ('official', 'round').")
    v = ((_check_network(x) + 1.0) / 2.0 * 255.0).clamp_(0.0, 255.0)
    if rounding == "round":
        v = v.round_()
    return v.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
