"""Bring any picture batch to what the face code works on: RGB ``[N,H,W,3]``."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..images import to_rgb

MIN_SIDE = 32
"""Smallest height or width (pixels) accepted; no face fits in less."""


def _check_size(rgb: np.ndarray, name: str) -> np.ndarray:
    h, w = rgb.shape[1:3]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise InputError(
            f"{name}: the picture is {w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed "
            f"to find and crop a face — use a larger picture"
        )
    return rgb


def as_rgb_u8(images, name: str = "image") -> np.ndarray:
    """A picture or a batch of pictures -> uint8 RGB ``[N,H,W,3]``, by
    :func:`pdfgc_core.images.to_rgb` (layouts [H,W], [H,W,C], [N,H,W,C] with C = 1..4, numpy or
    torch; uint8, uint16 (high byte), integers 0..255 or floats 0..1; grey repeated, alpha
    dropped), with floats outside 0..1 refused rather than clipped.

    Raises :class:`InputError` naming ``name`` for what ``to_rgb`` refuses, floats outside 0..1,
    or a side shorter than ``MIN_SIDE`` pixels.
    """
    return _check_size(to_rgb(images, name, strict_range=True), name)


def as_rgb_f32(images, name: str = "image") -> np.ndarray:
    """Like :func:`as_rgb_u8` but float32 0..1 ``[N,H,W,3]``; float input keeps its precision
    (clipped to 0..1), integer input is divided by 255 after :func:`as_rgb_u8`'s rules."""
    return _check_size(to_rgb(images, name, dtype=np.float32, strict_range=True), name)
