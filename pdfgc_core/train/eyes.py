"""The eye region of a face and the eye-stage anchor (paper Eq. 4: ``v2`` with ``v1``'s eyes pasted in).

The paper does not define the region; here it is one axis-aligned box around both eyes, from the
68-point landmarks (iBUG order), padded by a fraction of the distance between the eye centres, and
never reaching above the mean height of the eyebrow landmarks (brows excluded) while always holding
every eye landmark. Boxes are ``(x0, y0, x1, y1)`` in pixels of the 224x224 network image, integer
valued, end-exclusive (``image[y0:y1, x0:x1]``); a frame without landmarks has a NaN box.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..faces.landmarks import LEFT_EYE, RIGHT_EYE

BROWS = slice(17, 27)
"""Eyebrow landmarks of the 68-point layout (17-21 and 22-26)."""

PAD_X = 0.12
PAD_Y = 0.10
"""Box padding, as fractions of the distance between the two eye centres (lids and lashes)."""


def eye_box(landmarks, size: int = 224, pad_x: float = PAD_X, pad_y: float = PAD_Y) -> np.ndarray:
    """Box ``[4]`` float32 ``(x0, y0, x1, y1)`` around both eyes of one face's landmarks ``[68,2]``
    (network-image pixels, centres at integers), clipped to a ``size`` x ``size`` image; all NaN
    when a landmark is not finite."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise InputError(f"eye box: expected landmarks [68,2], got {lm.shape}")
    if not np.isfinite(lm).all():
        return np.full(4, np.nan, np.float32)
    eyes = np.concatenate([lm[LEFT_EYE], lm[RIGHT_EYE]])
    d = float(np.linalg.norm(lm[LEFT_EYE].mean(0) - lm[RIGHT_EYE].mean(0)))
    top = float(eyes[:, 1].min())
    brow = float(lm[BROWS, 1].mean())
    y0 = min(max(top - pad_y * d, brow), top)
    box = np.array(
        [
            np.floor(eyes[:, 0].min() - pad_x * d),
            np.floor(y0),
            np.ceil(eyes[:, 0].max() + pad_x * d) + 1,
            np.ceil(eyes[:, 1].max() + pad_y * d) + 1,
        ]
    )
    return np.clip(box, 0, size).astype(np.float32)


def eye_boxes(landmarks_seq, size: int = 224) -> np.ndarray:
    """:func:`eye_box` of every frame: landmarks ``[N,68,2]`` -> boxes ``[N,4]`` float32."""
    seq = np.asarray(landmarks_seq)
    if seq.ndim != 3 or seq.shape[1:] != (68, 2):
        raise InputError(f"eye boxes: expected landmarks [N,68,2], got {seq.shape}")
    return np.stack([eye_box(lm, size) for lm in seq]) if len(seq) else np.zeros((0, 4), np.float32)


def union_box(a, b) -> np.ndarray:
    """Smallest box holding boxes ``a`` and ``b`` (each ``[4]``)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return np.concatenate([np.minimum(a[:2], b[:2]), np.maximum(a[2:], b[2:])])


def paste_eyes(base, donor, box) -> np.ndarray:
    """``base`` (uint8 [H,W,3]) with the pixels of ``donor`` (same shape) inside ``box`` pasted in.

    The eye anchor of the paper is ``paste_eyes(v2, v1, union_box(box(v1), box(v2)))``: the union
    covers the eyes of both frames, so none of ``v2``'s own eye pixels remain. Returns a new array."""
    base, donor = np.asarray(base), np.asarray(donor)
    if base.shape != donor.shape or base.ndim != 3:
        raise InputError(f"paste_eyes: base {base.shape} and donor {donor.shape} must be equal [H,W,3] images")
    box = np.asarray(box, np.float64)
    if box.shape != (4,) or not np.isfinite(box).all():
        raise InputError(f"paste_eyes: box must be 4 finite numbers, got {box}")
    h, w = base.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in np.round(box))
    x0, x1 = max(0, min(x0, w)), max(0, min(x1, w))
    y0, y1 = max(0, min(y0, h)), max(0, min(y1, h))
    out = base.copy()
    out[y0:y1, x0:x1] = donor[y0:y1, x0:x1]
    return out
