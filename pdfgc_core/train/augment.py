"""Image augmentations of the generator stages, driven by a ``numpy.random.Generator`` so that an
item's augmentation is a function of its seed (exact resume, any number of processes).

All functions take and return uint8 [H,W,3] RGB images.

- :func:`color_jitter`: brightness / contrast / saturation factors drawn from ``[1-x, 1+x]`` and a
  hue shift from ``[-h, h]`` (fraction of the colour circle), applied in a random order (the
  torchvision ``ColorJitter`` definition of the four settings);
- :func:`perspective`: each corner moved inwards by up to ``distortion`` x half the image size,
  with probability ``p`` (torchvision ``RandomPerspective``'s ``distortion_scale``);
- :func:`rotate_scale`: rotation by up to ``degrees`` and scaling by ``1 +- scale`` about the centre.
"""

from __future__ import annotations

import numpy as np


def color_jitter(img: np.ndarray, rng: np.random.Generator, brightness, contrast, saturation, hue) -> np.ndarray:
    import cv2

    x = img.astype(np.float32) / 255.0
    ops = []
    if brightness > 0:
        ops.append(("b", rng.uniform(max(0.0, 1 - brightness), 1 + brightness)))
    if contrast > 0:
        ops.append(("c", rng.uniform(max(0.0, 1 - contrast), 1 + contrast)))
    if saturation > 0:
        ops.append(("s", rng.uniform(max(0.0, 1 - saturation), 1 + saturation)))
    if hue > 0:
        ops.append(("h", rng.uniform(-min(hue, 0.5), min(hue, 0.5))))
    for i in rng.permutation(len(ops)):
        kind, f = ops[i]
        if kind == "b":
            x = x * f
        elif kind == "c":
            gray = cv2.cvtColor(np.clip(x, 0, 1), cv2.COLOR_RGB2GRAY).mean()
            x = (x - gray) * f + gray
        elif kind == "s":
            gray = cv2.cvtColor(np.clip(x, 0, 1), cv2.COLOR_RGB2GRAY)[..., None]
            x = (x - gray) * f + gray
        else:
            hsv = cv2.cvtColor(np.clip(x, 0, 1), cv2.COLOR_RGB2HSV)
            hsv[..., 0] = (hsv[..., 0] + f * 360.0) % 360.0
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        x = np.clip(x, 0.0, 1.0)
    return np.round(x * 255.0).astype(np.uint8)


def perspective(img: np.ndarray, rng: np.random.Generator, distortion: float, p: float) -> np.ndarray:
    import cv2

    if distortion <= 0 or rng.uniform() >= p:
        return img
    h, w = img.shape[:2]
    dx, dy = distortion * w / 2, distortion * h / 2
    src = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
    sign = np.float32([[1, 1], [-1, 1], [-1, -1], [1, -1]])
    dst = src + sign * np.stack([rng.uniform(0, dx, 4), rng.uniform(0, dy, 4)], 1).astype(np.float32)
    m = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def rotate_scale(img: np.ndarray, rng: np.random.Generator, degrees: float, scale: float) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    angle = rng.uniform(-degrees, degrees) if degrees > 0 else 0.0
    s = rng.uniform(1 - scale, 1 + scale) if scale > 0 else 1.0
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, s)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
