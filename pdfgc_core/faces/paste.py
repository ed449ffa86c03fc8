"""Paste generated faces back into the full frames they were cropped from.

Two coordinate frames exist for a 224 picture of a face:

- the *crop* (``view="crop"``): the aligned template crop made by
  :func:`~pdfgc_core.faces.align.align_faces`;
- the *generator* view (``view="generator"``): what the networks see and the generator
  produces. The official loader cuts rows 0-191 and columns 16-207 of the crop
  (``GENERATOR_WINDOW``) and resizes them back to 224x224, so a generated frame shows that
  window of the crop, enlarged 224/192.

Pictures of another square size (e.g. a generated frame upscaled 2x) are placed by
proportion. The face mask is a disc in crop pixels, centred (111.5, 95.5) with radius 96:
the largest inside the generator window (pixel edges -0.5..191.5 and 15.5..207.5), holding
forehead to chin of the template face, with a Gaussian edge ``feather`` crop pixels wide.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..images import CROP_COLS, CROP_ROWS
from .align import CROP_SIZE, CropInfo, compose_affine, invert_affine, resize_affine
from .convert import as_rgb_f32

GENERATOR_WINDOW = (*CROP_ROWS, *CROP_COLS)
"""(top, bottom, left, right) of the crop region the networks see (official loader)."""
MASK_CENTER = (111.5, 95.5)
MASK_RADIUS = 96.0
DEFAULT_FEATHER = 16.0
VIEWS = ("generator", "crop")


def view_to_crop(view: str = "generator", size: int = CROP_SIZE) -> np.ndarray:
    """``[2,3]`` affine from a pixel of a ``size`` x ``size`` picture in ``view`` ("generator"
    or "crop") to a crop pixel."""
    if view == "crop":
        return resize_affine((size, size), (CROP_SIZE, CROP_SIZE))
    if view == "generator":
        top, bottom, left, right = GENERATOR_WINDOW
        m = resize_affine((size, size), (bottom - top, right - left))
        m[:, 2] += (left, top)
        return m
    raise InputError(f"view {view!r} is unknown; choose one of {', '.join(VIEWS)}")


def face_mask(feather: float = DEFAULT_FEATHER) -> np.ndarray:
    """The paste mask in crop pixels: float32 ``[224,224]`` in 0..1. 1 inside the disc of
    radius ``MASK_RADIUS - feather``, 0 outside ``MASK_RADIUS``, a Gaussian-profile edge
    (erfc, sigma = feather/6) between; ``feather=0`` gives a hard disc."""
    from scipy.special import erfc

    yy, xx = np.mgrid[0:CROP_SIZE, 0:CROP_SIZE].astype(np.float64)
    r = np.hypot(xx - MASK_CENTER[0], yy - MASK_CENTER[1])
    if feather <= 0:
        return (r <= MASK_RADIUS).astype(np.float32)
    sigma = feather / 6.0
    m = 0.5 * erfc((r - (MASK_RADIUS - feather / 2.0)) / (np.sqrt(2.0) * sigma))
    m[r > MASK_RADIUS] = 0.0
    m[r <= MASK_RADIUS - feather] = 1.0
    return m.astype(np.float32)


REGIONS = ("mouth", "lower", "face")
"""Paste regions, smallest first: the mouth alone, the lower face (below the eyes: eyes, brows and
forehead keep the original pixels), or the whole face disc of :func:`face_mask`."""
MOUTH_ELLIPSE = ((112.0, 122.0), (40.0, 27.0))
"""Centre (x, y) and half-axes of the mouth region in crop pixels: the template mouth (112, 120)
with room for an open jaw; the template's eyes are 50 px apart."""
LOWER_TOP = 80.0
"""Crop row above which the lower-face region never reaches: 21 px below the template's eye line
(y 59), above the nostrils."""


def region_mask(region: str = "face", feather: float = DEFAULT_FEATHER) -> np.ndarray:
    """A paste mask in crop pixels, float32 ``[224,224]`` in 0..1, for one of :data:`REGIONS`.

    ``face``: :func:`face_mask`. ``lower``: the face disc below row :data:`LOWER_TOP`, with the
    same soft edge at the top. ``mouth``: an ellipse (:data:`MOUTH_ELLIPSE`) with a soft edge of
    ``feather`` pixels inside it. Everything outside the region is exactly 0."""
    from scipy.special import erfc

    if region not in REGIONS:
        raise InputError(f"paste region {region!r} is unknown; choose one of {', '.join(REGIONS)}")
    if not np.isfinite(feather) or feather < 0:
        raise InputError(f"feather must be a number >= 0 (crop pixels), got {feather}")
    yy, xx = np.mgrid[0:CROP_SIZE, 0:CROP_SIZE].astype(np.float64)

    def soft_inside(distance_to_edge: np.ndarray) -> np.ndarray:
        """1 deep inside, 0 at and beyond the edge; ``distance_to_edge`` > 0 inside."""
        if feather <= 0:
            return (distance_to_edge >= 0).astype(np.float64)
        m = 0.5 * erfc((feather / 2.0 - distance_to_edge) / (np.sqrt(2.0) * feather / 6.0))
        m[distance_to_edge <= 0] = 0.0
        m[distance_to_edge >= feather] = 1.0
        return m

    if region == "face":
        return face_mask(feather)
    if region == "lower":
        return (face_mask(feather) * soft_inside(yy - LOWER_TOP)).astype(np.float32)
    (cx, cy), (ax, ay) = MOUTH_ELLIPSE
    # distance inside the ellipse along its normal, approximated by the scaled radial distance
    rho = np.hypot((xx - cx) / ax, (yy - cy) / ay)
    return soft_inside((1.0 - rho) * min(ax, ay)).astype(np.float32)


def _roi(m_crop_from_frame: np.ndarray, hw: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Frame box (x0, y0, x1, y1), exclusive end, holding the mask's support."""
    cx, cy = MASK_CENTER
    r = MASK_RADIUS + 1
    corners = np.array([[cx - r, cy - r], [cx + r, cy - r], [cx - r, cy + r], [cx + r, cy + r]])
    inv = invert_affine(m_crop_from_frame)
    p = corners @ inv[:, :2].T + inv[:, 2]
    x0, y0 = np.floor(p.min(0)).astype(int) - 2
    x1, y1 = np.ceil(p.max(0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, hw[1]), min(y1, hw[0])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def warp_into_frame(
    face: np.ndarray, mask_crop: np.ndarray, m_crop: np.ndarray, hw: tuple[int, int], view: str = "generator"
):
    """One face picture and a crop-pixel mask warped into a frame of size ``hw`` (H, W), over the box
    that holds the mask's support: ``((x0, y0, x1, y1), face [y1-y0, x1-x0, 3], mask [y1-y0, x1-x0])``
    (bilinear; the face's borders replicated, the mask 0 outside the crop), or None when the box
    lies outside the frame. ``face``: float32 ``[S,S,3]`` in ``view`` ("generator" or "crop");
    ``mask_crop``: float32 ``[224,224]``; ``m_crop``: ``[2,3]`` frame pixel -> crop pixel."""
    import cv2

    roi = _roi(m_crop, hw)
    if roi is None:
        return None
    x0, y0, x1, y1 = roi
    shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0]])
    m_crop_roi = compose_affine(m_crop, shift)
    m_img_roi = compose_affine(invert_affine(view_to_crop(view, face.shape[0])), m_crop_roi)
    size = (x1 - x0, y1 - y0)
    inverse = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    face_px = cv2.warpAffine(face, m_img_roi, size, flags=inverse, borderMode=cv2.BORDER_REPLICATE)
    mask = cv2.warpAffine(mask_crop, m_crop_roi, size, flags=inverse, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return roi, face_px, mask


def paste_back(
    frames, images, info: CropInfo, *, feather: float = DEFAULT_FEATHER, view: str = "generator", name: str = "frames"
) -> tuple[np.ndarray, np.ndarray]:
    """Blend face pictures into the frames they were aligned from.

    ``frames``: the original frames ``[F,H,W,C]`` (uint8 or float 0..1, as accepted by
    :func:`~pdfgc_core.faces.convert.as_rgb_u8`), ``F == len(info)``, size ``info.frame_size``.
    ``images``: ``[G,S,S,C]`` square face pictures in ``view`` ("generator": generator output,
    the default; "crop": aligned crops). Pairing: ``F == 1`` pastes every picture into that
    one frame; otherwise picture ``j`` goes into frame ``j`` (``G <= F``; extra frames are
    left out). ``feather``: soft-edge width in crop pixels (see :func:`face_mask`).

    Each picture is warped into the frame (bilinear, inverse of the frame's alignment) and
    blended ``frame * (1 - mask) + warped * mask``. Returns float32 frames ``[G,H,W,3]`` in
    0..1 and the float32 masks ``[G,H,W]`` in 0..1.
    """

    if not isinstance(info, CropInfo):
        raise InputError(f"crop info: expected a CropInfo (from face alignment), got {type(info).__name__}")
    if not np.isfinite(feather) or feather < 0:
        raise InputError(f"feather must be a number >= 0 (crop pixels), got {feather}")
    base = as_rgb_f32(frames, name)
    faces = as_rgb_f32(images, "face pictures to paste")
    f_count, h, w, _ = base.shape
    g_count, s, s2, _ = faces.shape
    if (h, w) != info.frame_size or f_count != len(info):
        raise InputError(
            f"{name}: {f_count} frame(s) of {w}x{h}, but the crop info describes {len(info)} frame(s) "
            f"of {info.frame_size[1]}x{info.frame_size[0]}; give the frames that were aligned"
        )
    if s != s2:
        raise InputError(f"face pictures to paste: must be square (224x224 from the generator), got {s2}x{s}")
    if f_count != 1 and g_count > f_count:
        raise InputError(
            f"face pictures to paste: {g_count} pictures but only {f_count} frames; give one frame "
            f"(every picture is pasted into it) or at least {g_count} frames"
        )

    mask_crop = face_mask(feather)
    out = np.empty((g_count, h, w, 3), np.float32)
    masks = np.zeros((g_count, h, w), np.float32)
    for j in range(g_count):
        fi = 0 if f_count == 1 else j
        out[j] = base[fi]
        warped = warp_into_frame(faces[j], mask_crop, info.matrices[fi], (h, w), view)
        if warped is None:
            continue
        (x0, y0, x1, y1), face_px, m = warped
        region = out[j, y0:y1, x0:x1]
        out[j, y0:y1, x0:x1] = region + (face_px - region) * m[..., None]
        masks[j, y0:y1, x0:x1] = m
    return out, masks
