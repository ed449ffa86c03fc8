"""Bring any picture batch to what the face code works on: RGB ``[N,H,W,3]``."""

from __future__ import annotations

import numpy as np

from ..errors import InputError

MIN_SIDE = 32
"""Smallest height or width (pixels) accepted; no face fits in less."""


def _batch(images, name: str) -> np.ndarray:
    """Validated ``[N,H,W,C]`` view (C = 1..4) of a picture or batch, any dtype."""
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    try:
        a = np.asarray(images)
    except ValueError as e:  # a list of pictures of different sizes
        raise InputError(f"{name}: the pictures cannot form one batch ({e}); give pictures of one size") from e
    if a.dtype == object:
        raise InputError(f"{name}: expected an image array, got {type(images).__name__} of mixed contents")
    if a.ndim == 2:
        a = a[None, :, :, None]
    elif a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] not in (1, 2, 3, 4):
        raise InputError(
            f"{name}: expected a picture [H,W], [H,W,C] or a batch [N,H,W,C] with C = 1..4 "
            f"channels, got an array of shape {tuple(np.shape(images))}"
        )
    n, h, w, _ = a.shape
    if n == 0:
        raise InputError(f"{name}: the batch is empty (0 pictures); give at least one picture")
    if h < MIN_SIDE or w < MIN_SIDE:
        raise InputError(
            f"{name}: the picture is {w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed "
            f"to find and crop a face — use a larger picture"
        )
    return a


def _check_float(a: np.ndarray, name: str) -> None:
    if not np.isfinite(a).all():
        raise InputError(f"{name}: the picture contains NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        hint = " (divide 0..255 values by 255)" if hi <= 255 else ""
        raise InputError(f"{name}: float pictures must hold values in 0..1, found {lo:.3g}..{hi:.3g}{hint}")


def as_rgb_u8(images, name: str = "image") -> np.ndarray:
    """Convert a picture or a batch of pictures to uint8 RGB ``[N,H,W,3]``.

    Accepted layouts: ``[H,W]`` (one gray picture), ``[H,W,C]`` (one picture) and
    ``[N,H,W,C]`` (a batch, e.g. a ComfyUI IMAGE), as numpy arrays or torch tensors.
    Accepted values: uint8 0..255, uint16 0..65535 (high byte kept, ``v >> 8``, as OpenCV
    reads 16-bit files), or floats in 0..1 (rounded to the nearest of 256 levels).
    Channels: C=1 (gray) is repeated to RGB; C=2 (gray + alpha) and C=4 (RGBA) lose their
    alpha channel and the colour values are used as stored (what OpenCV's ``IMREAD_COLOR``,
    used by the official loader, does); C=3 is taken as RGB.

    Raises :class:`InputError` naming ``name`` for an empty batch, another layout, floats
    outside 0..1 or NaN, or a side shorter than ``MIN_SIDE`` pixels.
    """
    return _convert(_batch(images, name), name, np.uint8)


def as_rgb_f32(images, name: str = "image") -> np.ndarray:
    """Like :func:`as_rgb_u8` but float32 0..1 ``[N,H,W,3]``; float input keeps its precision
    (clipped to 0..1), integer input is divided by 255 after :func:`as_rgb_u8`'s rules."""
    return _convert(_batch(images, name), name, np.float32)


def _convert(a: np.ndarray, name: str, dtype) -> np.ndarray:
    """Frame by frame, so a long float clip needs no full-size temporaries."""
    is_float = np.issubdtype(a.dtype, np.floating)
    if not (is_float or a.dtype in (np.uint8, np.uint16)):
        raise InputError(f"{name}: unsupported pixel type {a.dtype}; use uint8 0..255 or floats in 0..1")
    n, h, w, c = a.shape
    out = np.empty((n, h, w, 3), dtype)
    for i in range(n):
        f = a[i][..., : 1 if c <= 2 else 3]  # gray (+alpha) -> gray, RGBA -> RGB; broadcast to 3 below
        if is_float:
            f = f.astype(np.float32, copy=False)
            _check_float(f, name)
            f = np.clip(f, 0, 1)
            out[i] = np.round(f * 255) if dtype == np.uint8 else f
        else:
            if a.dtype == np.uint16:
                f = f >> 8
            out[i] = f if dtype == np.uint8 else f.astype(np.float32) / np.float32(255)
    return out
