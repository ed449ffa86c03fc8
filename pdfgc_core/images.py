"""Image intake and output, bit-exact with the official loader.

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

import os
import struct
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


MAX_IMAGE_PIXELS = 100_000_000
"""Largest image decoded, in pixels (width x height): 100 megapixels, 300 MB as RGB uint8 (a
12000 x 8000 photo). A small file can declare far more (a 380 KB PNG that decodes to 2.6 GB), so
image files, frame-folder files and video streams are refused before decoding when their header
declares more. The environment variable :data:`MAX_PIXELS_ENV` overrides it."""
MAX_PIXELS_ENV = "PDFGC_MAX_IMAGE_PIXELS"
HEADER_FORMATS = "PNG, JPEG, BMP, WebP, TIFF, GIF, PNM or PFM"
"""Image formats whose size :func:`image_header_size` reads (and so the ones :func:`read_image` decodes)."""


def max_image_pixels() -> int:
    """:data:`MAX_IMAGE_PIXELS`, or the positive whole number in ``$PDFGC_MAX_IMAGE_PIXELS``."""
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        return MAX_IMAGE_PIXELS
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise InputError(f"{MAX_PIXELS_ENV}={value!r}: give a positive whole number of pixels, or unset it.")
    return n


def check_image_size(width: int, height: int, what: str) -> None:
    """InputError (MediaError) if ``width`` x ``height`` is empty or above :func:`max_image_pixels`."""
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise MediaError(f"{what} declares an empty size ({width}x{height}); it is damaged.")
    cap = max_image_pixels()
    if width * height > cap:
        raise MediaError(
            f"{what} is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), more than the "
            f"{cap / 1e6:g} megapixels this pack decodes (decoding it would take {width * height * 3 / 2**30:.1f} GiB "
            f"or more); it was not decoded. Scale it down (faces are used at 224x224), or raise the limit "
            f"with the environment variable {MAX_PIXELS_ENV}."
        )


def _u16(b: bytes, i: int, order: str = ">") -> int:
    return struct.unpack_from(order + "H", b, i)[0]


def _u32(b: bytes, i: int, order: str = ">") -> int:
    return struct.unpack_from(order + "I", b, i)[0]


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(b: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(b):
        if b[i] != 0xFF:
            return None
        while i < len(b) and b[i] == 0xFF:  # fill bytes
            i += 1
        if i >= len(b):
            return None
        marker = b[i]
        i += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            continue
        if marker in (0xD9, 0xDA) or i + 2 > len(b):  # end of image / scan before any frame header
            return None
        if marker in _JPEG_SOF:
            return (_u16(b, i + 5), _u16(b, i + 3)) if i + 7 <= len(b) else None
        i += _u16(b, i)
    return None


def _tiff_size(b: bytes) -> tuple[int, int] | None:
    order = "<" if b[:2] == b"II" else ">"
    ifd = _u32(b, 4, order)
    if ifd + 2 > len(b):
        return None
    size = {}
    for k in range(_u16(b, ifd, order)):
        e = ifd + 2 + 12 * k
        if e + 12 > len(b):
            return None
        tag, typ = _u16(b, e, order), _u16(b, e + 2, order)
        if tag in (256, 257) and typ in (3, 4):
            size[tag] = _u16(b, e + 8, order) if typ == 3 else _u32(b, e + 8, order)
    return (size[256], size[257]) if len(size) == 2 else None


def _pnm_size(b: bytes) -> tuple[int, int] | None:
    tokens, i = [], 2
    while len(tokens) < 2 and i < min(len(b), 4096):
        c = b[i : i + 1]
        if c == b"#":
            while i < len(b) and b[i : i + 1] not in (b"\n", b"\r"):
                i += 1
        elif c.isdigit():
            j = i
            while j < len(b) and b[j : j + 1].isdigit():
                j += 1
            tokens.append(int(b[i:j]))
            i = j
        elif c.isspace():
            i += 1
        else:
            return None
    return (tokens[0], tokens[1]) if len(tokens) == 2 else None


def image_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) an image file declares in its header, without decoding it: PNG (IHDR),
    JPEG (the first frame header), BMP, WebP (VP8, VP8L, VP8X), TIFF (the first page), GIF
    (the logical screen), PNM and PFM. None for any other format or a header too short to tell."""
    b = bytes(data[: 1 << 20]) if len(data) > 1 << 20 else bytes(data)
    try:
        if b[:8] == b"\x89PNG\r\n\x1a\n" and b[12:16] == b"IHDR":
            return _u32(b, 16), _u32(b, 20)
        if b[:2] == b"\xff\xd8":
            return _jpeg_size(b)
        if b[:2] == b"BM":
            if struct.unpack_from("<I", b, 14)[0] == 12:  # OS/2 BITMAPCOREHEADER
                return _u16(b, 18, "<"), _u16(b, 20, "<")
            w, h = struct.unpack_from("<ii", b, 18)
            return abs(w), abs(h)  # negative height: rows stored top-down
        if b[:4] == b"RIFF" and b[8:12] == b"WEBP":
            chunk = b[12:16]
            if chunk == b"VP8 " and b[23:26] == b"\x9d\x01\x2a":
                return _u16(b, 26, "<") & 0x3FFF, _u16(b, 28, "<") & 0x3FFF
            if chunk == b"VP8L" and b[20] == 0x2F:
                bits = _u32(b, 21, "<")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8X":
                return int.from_bytes(b[24:27], "little") + 1, int.from_bytes(b[27:30], "little") + 1
            return None
        if b[:4] in (b"II*\0", b"MM\0*"):
            return _tiff_size(b)
        if b[:6] in (b"GIF87a", b"GIF89a"):
            return _u16(b, 6, "<"), _u16(b, 8, "<")
        if len(b) > 2 and b[0:1] == b"P" and b[1:2] in b"123456Ff" and b[2:3].isspace():
            return _pnm_size(b)
    except (struct.error, IndexError):
        return None
    return None


def read_image(path) -> np.ndarray:
    """Decode an image file -> RGB uint8 [H, W, 3], as ``cv2.imread(path)`` + BGR->RGB.

    OpenCV's IMREAD_COLOR rules apply: grey is replicated to 3 channels, an alpha channel is
    dropped (not composited), 16-bit files keep their high byte (``v >> 8``), EXIF orientation is
    applied. The bytes are read by Python so non-ASCII paths work. The size declared in the
    header is checked before decoding (:data:`MAX_IMAGE_PIXELS`); formats whose header is not
    one of :data:`HEADER_FORMATS` are not decoded. :class:`MediaError` for a missing, non-regular
    (FIFO, device), oversized or undecodable file.
    """
    from .media.listing import open_regular

    cv2 = _cv2()
    p = Path(path)
    if not p.exists() or p.is_dir():
        what = "is a folder, not a file" if p.is_dir() else "does not exist"
        raise MediaError(f"Image file {str(path)!r} {what}. Give the path of an existing image.")
    try:
        with open_regular(p, "Image file") as f:
            buf = np.frombuffer(f.read(), dtype=np.uint8)
    except OSError as exc:
        raise MediaError(f"Image file {str(p)!r} could not be read ({exc}).") from None
    size = image_header_size(buf) if buf.size else None
    if size is None:
        raise MediaError(
            f"Image file {str(p)!r} could not be decoded: it is empty, damaged, or not a {HEADER_FORMATS} "
            f"image. Use a complete PNG, JPEG, BMP, WebP or TIFF image."
        )
    check_image_size(*size, f"Image file {str(p)!r}")
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise MediaError(f"Image file {str(p)!r} could not be decoded ({str(exc).strip()[-200:]}).") from None
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
        f"image array has dtype {a.dtype}; expected uint8 (or uint16). Float pictures go through to_rgb "
        "(ComfyUI IMAGE: comfy_to_u8)."
    )


def _picture_batch(pictures, what: str) -> np.ndarray:
    """``[N,H,W,C]`` view (C = 1..4, N, H, W >= 1) of a picture or batch; any dtype, not converted."""
    if torch.is_tensor(pictures):
        t = pictures.detach().cpu()
        pictures = (t.float() if t.dtype == torch.bfloat16 else t).numpy()
    try:
        a = np.asarray(pictures)
    except ValueError as e:  # a list of pictures of different sizes
        raise InputError(f"{what}: the pictures cannot form one batch ({e}); give pictures of one size") from e
    if a.dtype == object:
        raise InputError(f"{what}: expected an image array, got {type(pictures).__name__} of mixed contents")
    if a.ndim == 2:
        a = a[None, :, :, None]
    elif a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] not in (1, 2, 3, 4):
        raise InputError(
            f"{what}: expected a picture [H,W], [H,W,C] or a batch [N,H,W,C] with C = 1..4 "
            f"channels, got an array of shape {tuple(np.shape(pictures))}"
        )
    if a.shape[0] == 0:
        raise InputError(f"{what}: the batch is empty (0 pictures); give at least one picture")
    if a.shape[1] == 0 or a.shape[2] == 0:
        raise InputError(f"{what}: the picture is empty (shape {tuple(a.shape)}); give a picture with pixels")
    return a


def _check_floats(f: np.ndarray, what: str, strict_range: bool) -> None:
    if not np.isfinite(f).all():
        raise InputError(f"{what} contains NaN or infinite values")
    if strict_range:
        lo, hi = float(f.min()), float(f.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            hint = " (divide 0..255 values by 255)" if hi <= 255 else ""
            raise InputError(f"{what}: float pictures must hold values in 0..1, found {lo:.3g}..{hi:.3g}{hint}")


def to_rgb(pictures, what: str = "image", *, dtype=np.uint8, strict_range: bool = False) -> np.ndarray:
    """The one picture converter: a picture or a batch -> numpy RGB ``[N,H,W,3]``, uint8 0..255
    (``dtype=np.uint8``) or float32 0..1 (``dtype=np.float32``).

    Layouts: ``[H,W]`` (one grey picture), ``[H,W,C]`` (one picture), ``[N,H,W,C]`` (a batch, e.g.
    a ComfyUI IMAGE); numpy arrays, torch tensors (any device) or sequences of pictures of one size.
    Channels: C = 1 (grey, repeated to RGB), 2 (grey + alpha), 3 (RGB), 4 (RGBA); alpha is dropped,
    not composited (what OpenCV's IMREAD_COLOR, used by the official loader, does).
    Values: uint8 as they are; uint16 keep their high byte (:func:`to_u8`); other integers must
    lie in 0..255; floats are 0..1, clipped (``strict_range``: refused beyond 1e-3 of it), then
    rounded to the nearest level in float32 (ties to even). float32 output keeps float input's
    precision (clipped) and divides integer input, converted as above, by 255.

    :class:`InputError` naming ``what`` for another layout or channel count, an empty batch or
    picture, NaN / inf, integers outside 0..255 and other dtypes (bool, complex, ...). Converted
    frame by frame, so a long float clip needs no full-size temporaries.
    """
    a = _picture_batch(pictures, what)
    is_float = np.issubdtype(a.dtype, np.floating)
    if not (is_float or (np.issubdtype(a.dtype, np.integer) and a.dtype != np.bool_)):
        raise InputError(f"{what}: unsupported pixel type {a.dtype}; use uint8 0..255 or floats in 0..1")
    if a.dtype.kind in "iu" and a.dtype not in (np.uint8, np.uint16) and a.size and (a.min() < 0 or a.max() > 255):
        raise InputError(f"{what}: integer pixels outside 0..255 (dtype {a.dtype}); pass uint8, or floats in 0..1")
    n, h, w, c = a.shape
    out = np.empty((n, h, w, 3), dtype)
    for i in range(n):
        f = a[i][..., : 1 if c <= 2 else 3]  # grey (+alpha) -> grey, RGBA -> RGB; broadcast to 3 below
        if is_float:
            f = f.astype(np.float32, copy=False)
            _check_floats(f, what, strict_range)
            f = np.clip(f, 0, 1)
            out[i] = np.rint(f * 255) if dtype == np.uint8 else f
        else:
            f = to_u8(f) if a.dtype in (np.uint8, np.uint16) else f.astype(np.uint8)
            out[i] = f if dtype == np.uint8 else f.astype(np.float32) / np.float32(255)
    return out


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
    """The one frames -> network batch function: RGB uint8 (or uint16) [B, H, W, 3], or a list of
    [H, W, 3] frames whose sizes may differ -> network tensor [B, 3, 224, 224] float32 in -1..1.

    ``crop="official"``: the official loader's resize + crop + resize (faces framed like the
    official samples / our alignment). ``crop="none"``: only resize to 224 (images already in
    network framing).
    """
    if crop not in CROPS:
        raise InputError(f"crop mode {crop!r} is not one of {CROPS}.")
    if isinstance(images, (list, tuple)):
        if not images:
            raise InputError("image batch is empty (no frames).")
        frames = [_check_rgb_u8(im, "image", batched=False) for im in images]
    else:
        frames = _check_rgb_u8(images, "image batch", batched=True)
    fn = official_crop if crop == "official" else resize_224
    return to_network(np.stack([fn(im) for im in frames]), channels_last=channels_last)


# ---------------------------------------------------------------------------------- ComfyUI


def comfy_to_u8(images) -> np.ndarray:
    """ComfyUI IMAGE [B, H, W, C] float 0..1 (torch or numpy) -> uint8 numpy [B, H, W, 3].

    Checks what an IMAGE socket promises (float values, C = 3, 1 or 4, a single [H, W, C] image
    taken as a batch of one; :class:`InputError` otherwise), then converts with :func:`to_rgb`
    (clipped to 0..1, ``round(x * 255)``, grey repeated, alpha dropped).
    """
    shape = tuple(images.shape) if hasattr(images, "shape") else tuple(np.shape(images))
    if len(shape) not in (3, 4):
        raise InputError(f"IMAGE: expected [batch, height, width, channels], got shape {shape}.")
    if 0 in shape[:-1]:
        raise InputError(f"IMAGE batch is empty (shape {shape}). Connect at least one image.")
    if shape[-1] not in (1, 3, 4):
        raise InputError(f"IMAGE has {shape[-1]} channels; expected 3 (RGB), 1 (grey) or 4 (RGBA).")
    dtype = images.dtype if torch.is_tensor(images) else np.asarray(images).dtype
    if not (dtype.is_floating_point if torch.is_tensor(images) else dtype.kind == "f"):
        raise InputError(f"IMAGE has dtype {dtype}; expected float values in 0..1.")
    return to_rgb(images, "IMAGE")


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
