"""Image intake/output: bytes-exact official crop and network tensors, ComfyUI conversions, errors."""

import os

import cv2
import numpy as np
import pytest
import torch
from conftest import SAMPLES

from pdfgc_core import images as I
from pdfgc_core.errors import InputError, MediaError

DRIVERS = {  # the official driving folders the fixtures used, and the bundled copies of their first frames
    "pose": ("motions/pose/681600002", "drivers/pose"),
    "exp": ("motions/exp/vox2_id01228_00309", "drivers/expression"),
    "eye": ("motions/eye/id01333_00040/images", "drivers/eye"),
}


def official_data(parity):
    return parity.parent / "samples" / "pdfgc-official" / "data"


def driver_dir(parity, kind):
    full, bundled = official_data(parity) / DRIVERS[kind][0], SAMPLES / DRIVERS[kind][1]
    if full.is_dir():
        return full
    if bundled.is_dir():
        return bundled
    pytest.skip(f"no {kind} driving frames")


def appearance_path(parity):
    for p in (official_data(parity) / "apps" / "anne.png", SAMPLES / "anne.png"):
        if p.is_file():
            return p
    pytest.skip("no anne.png")


def rng_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------ parity


def test_appearance_exact(parity, parity_inputs):
    raw = I.read_image(appearance_path(parity))
    crop = I.official_crop(raw)
    assert crop.dtype == np.uint8 and crop.shape == (224, 224, 3)
    np.testing.assert_array_equal(crop, parity_inputs["app_rgb_u8"])
    net = I.to_network(crop)
    assert net.dtype == torch.float32 and net.shape == (1, 3, 224, 224)
    assert torch.equal(net, torch.from_numpy(parity_inputs["app_img"]))
    assert torch.equal(I.prepare_batch(raw[None]), net)


def test_read_image_equals_cv2_imread(parity):
    p = appearance_path(parity)
    np.testing.assert_array_equal(I.read_image(p), cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB))


@pytest.mark.parametrize("kind", list(DRIVERS))
def test_driving_frames_exact(parity, parity_inputs, kind):
    folder = driver_dir(parity, kind)
    names = sorted(os.listdir(folder))
    ref_names = [str(n) for n in parity_inputs[f"drive_{kind}_files"]]
    assert names == ref_names[: len(names)]
    n = min(14, len(names))
    raw = np.stack([I.read_image(folder / f) for f in names[:n]])
    crops = np.stack([I.official_crop(r) for r in raw])
    np.testing.assert_array_equal(crops, parity_inputs[f"drive_{kind}_rgb_u8"][:n])
    fed_index = parity_inputs[f"drive_{kind}_fed_file_index"]
    keep = fed_index < n
    fed = I.prepare_batch(raw)[fed_index[keep]]
    assert torch.equal(fed, torch.from_numpy(parity_inputs[f"drive_{kind}_fed"][keep]))


def test_to_network_formula_and_layout(parity_inputs):
    u = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    net = I.to_network(u)
    ref = np.float32(u.transpose(0, 3, 1, 2) / 255.0) * np.float32(2) - np.float32(1)
    assert torch.equal(net, torch.from_numpy(ref))
    assert net.min() == -1 and net.max() == 1 and net.is_contiguous()
    cl = I.to_network(torch.from_numpy(parity_inputs["drive_pose_rgb_u8"][:3]), channels_last=True)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(cl, I.to_network(parity_inputs["drive_pose_rgb_u8"][:3]))


# ------------------------------------------------------------------------------- crop / resize


@pytest.mark.parametrize("hw", [(300, 250), (224, 224), (100, 480)])
def test_official_crop_matches_opencv_recipe(hw):
    img = rng_image(*hw)
    bgr = np.ascontiguousarray(img[..., ::-1])
    ref = cv2.resize(cv2.resize(bgr, (224, 224))[0:192, 16:208], (224, 224))
    np.testing.assert_array_equal(I.official_crop(img), ref[..., ::-1])


def test_prepare_batch_none_only_resizes():
    a = rng_image(224, 224)
    b = rng_image(256, 320, seed=1)
    assert torch.equal(I.prepare_batch(a[None], crop="none"), I.to_network(a))
    assert torch.equal(I.prepare_batch(b[None], crop="none"), I.to_network(cv2.resize(b, (224, 224))))
    with pytest.raises(InputError, match="crop mode"):
        I.prepare_batch(a[None], crop="center")


def test_prepare_batch_checks():
    with pytest.raises(InputError, match="empty"):
        I.prepare_batch(np.zeros((0, 224, 224, 3), np.uint8))
    with pytest.raises(InputError, match="RGB uint8"):
        I.prepare_batch(np.zeros((224, 224, 3), np.uint8))
    with pytest.raises(InputError, match="dtype"):
        I.prepare_batch(np.zeros((1, 224, 224, 3), np.float32))


def test_uint16_rule():
    v = np.arange(65536, dtype=np.uint16)
    np.testing.assert_array_equal(I.to_u8(v), (v >> 8).astype(np.uint8))
    img16 = (rng_image(224, 224).astype(np.uint16) * 257)[None]
    assert torch.equal(I.prepare_batch(img16), I.prepare_batch((img16 >> 8).astype(np.uint8)))


# ----------------------------------------------------------------------------------- reading


def test_read_image_16bit_gray_alpha_unicode(tmp_path):
    v = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    p16 = tmp_path / "deep.png"
    cv2.imwrite(str(p16), np.stack([v, v, v], -1))
    img = I.read_image(p16)
    assert img.dtype == np.uint8 and img.shape == (256, 256, 3)
    np.testing.assert_array_equal(img[..., 0], (v >> 8).astype(np.uint8))

    gray = rng_image(20, 30)[..., 0]
    pg = tmp_path / "gray.png"
    cv2.imwrite(str(pg), gray)
    np.testing.assert_array_equal(I.read_image(pg), np.stack([gray] * 3, -1))

    rgba = np.concatenate([rng_image(20, 30), np.zeros((20, 30, 1), np.uint8)], -1)
    pa = tmp_path / "alpha.png"
    cv2.imwrite(str(pa), rgba)  # BGRA on disk
    np.testing.assert_array_equal(I.read_image(pa), rgba[..., 2::-1])

    pu = tmp_path / "visage é 顔.png"
    cv2.imencode(".png", rgba[..., :3])[1].tofile(str(pu))
    np.testing.assert_array_equal(I.read_image(pu), rgba[..., 2::-1])


def test_read_image_errors(tmp_path):
    with pytest.raises(MediaError, match="does not exist"):
        I.read_image(tmp_path / "missing.png")
    with pytest.raises(MediaError, match="folder"):
        I.read_image(tmp_path)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image" * 20)
    with pytest.raises(MediaError, match="junk.jpg.*could not be decoded"):
        I.read_image(junk)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="could not be decoded"):
        I.read_image(empty)


# ---------------------------------------------------------------------------------- ComfyUI


def test_comfy_u8_round_trip():
    u = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    c = I.u8_to_comfy(u)
    assert c.dtype == torch.float32 and c.shape == (1, 16, 16, 3) and 0 <= c.min() and c.max() == 1
    np.testing.assert_array_equal(I.comfy_to_u8(c), u)
    np.testing.assert_array_equal(I.comfy_to_u8(c[0]), u)  # a single [H, W, C] image


def test_comfy_to_u8_rounding_and_clipping():
    x = torch.tensor([-0.5, 0.0, 0.4 / 255, 0.6 / 255, 0.5, 1.0, 2.0]).reshape(1, 1, 7, 1).expand(1, 1, 7, 3)
    out = I.comfy_to_u8(x)
    assert out.dtype == np.uint8 and out.shape == (1, 1, 7, 3)
    assert out[0, 0, :, 0].tolist() == [0, 0, 0, 1, 128, 255, 255]


def test_comfy_channels():
    g = torch.rand(2, 8, 8, 1)
    np.testing.assert_array_equal(I.comfy_to_u8(g), I.comfy_to_u8(g.expand(-1, -1, -1, 3)))
    rgba = torch.rand(2, 8, 8, 4)
    np.testing.assert_array_equal(I.comfy_to_u8(rgba), I.comfy_to_u8(rgba[..., :3]))
    with pytest.raises(InputError, match="2 channels"):
        I.comfy_to_u8(torch.rand(1, 8, 8, 2))


@pytest.mark.parametrize(
    "bad,msg",
    [
        (torch.zeros(0, 8, 8, 3), "empty"),
        (torch.zeros(8, 8), "expected"),
        (torch.full((1, 4, 4, 3), float("nan")), "NaN"),
        (torch.full((1, 4, 4, 3), float("inf")), "NaN or infinite"),
        (torch.zeros(1, 4, 4, 3, dtype=torch.uint8), "dtype"),
    ],
)
def test_comfy_to_u8_errors(bad, msg):
    with pytest.raises(InputError, match=msg):
        I.comfy_to_u8(bad)


def test_network_outputs():
    x = torch.linspace(-1, 1, 2001).reshape(1, 1, 1, 2001).expand(2, 3, 1, 2001).contiguous()
    official = I.network_to_u8(x)
    assert official.dtype == np.uint8 and official.shape == (2, 1, 2001, 3)
    ref = ((x.numpy() + 1) / 2 * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(official, ref)
    rounded = I.network_to_u8(x, rounding="round")
    np.testing.assert_array_equal(rounded, np.round((x.numpy() + 1) / 2 * 255).astype(np.uint8).transpose(0, 2, 3, 1))
    assert (rounded.astype(int) - official.astype(int)).max() == 1 and (rounded >= official).all()
    comfy = I.network_to_comfy(x)
    assert comfy.shape == (2, 1, 2001, 3) and comfy.dtype == torch.float32
    assert comfy.min() == 0 and comfy.max() == 1
    assert torch.equal(comfy, ((x + 1) / 2).permute(0, 2, 3, 1))
    with pytest.raises(InputError, match="rounding"):
        I.network_to_u8(x, rounding="floor")
    with pytest.raises(InputError, match="NaN"):
        I.network_to_u8(torch.full((1, 3, 2, 2), float("nan")))
    with pytest.raises(InputError, match="expected"):
        I.network_to_comfy(torch.zeros(1, 4, 2, 2))


def test_network_round_trip_is_exact_for_u8():
    u = np.random.default_rng(3).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_array_equal(I.network_to_u8(I.to_network(u), rounding="round"), u)
    np.testing.assert_array_equal(I.comfy_to_u8(I.network_to_comfy(I.to_network(u))), u)


# ------------------------------------------------------------------------ the picture converter


def test_to_rgb_is_the_one_converter(tmp_path):
    from pdfgc_core.faces import as_rgb_u8
    from pdfgc_core.media import read_frames, write_frames_png

    x = torch.rand(2, 40, 36, 3)
    u = I.to_rgb(x)
    assert u.dtype == np.uint8 and u.shape == (2, 40, 36, 3)
    np.testing.assert_array_equal(u, (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
    np.testing.assert_array_equal(I.comfy_to_u8(x), u)  # the ComfyUI IMAGE path
    np.testing.assert_array_equal(as_rgb_u8(x), u)  # the faces path
    write_frames_png(tmp_path, x)  # the writers
    np.testing.assert_array_equal(read_frames(tmp_path), u)


def test_to_rgb_layouts_and_values():
    rng = np.random.default_rng(0)
    g = rng.integers(0, 256, (40, 36), np.uint8)
    rgb = np.repeat(g[None, ..., None], 3, -1)
    for pic in (g, g[..., None], np.stack([g, g // 2], -1), torch.from_numpy(g)):  # grey, grey + alpha
        np.testing.assert_array_equal(I.to_rgb(pic), rgb)
    rgba = np.concatenate([rgb[0], np.zeros_like(g)[..., None]], -1)
    np.testing.assert_array_equal(I.to_rgb(rgba), rgb)  # alpha dropped, not composited
    np.testing.assert_array_equal(I.to_rgb(rgb.astype(np.uint16) * 256 + 7), rgb)  # 16 bit: the high byte
    np.testing.assert_array_equal(I.to_rgb(rgb.astype(np.int32)), rgb)
    np.testing.assert_array_equal(I.to_rgb(rgb, dtype=np.float32), rgb.astype(np.float32) / 255)
    f = np.array([[[-0.5, 0.5, 1.5]]], np.float64)
    assert I.to_rgb(f).tolist() == [[[[0, 128, 255]]]]  # clipped, then rounded
    assert I.to_rgb(f, dtype=np.float32).tolist() == [[[[0.0, 0.5, 1.0]]]]
    assert I.to_rgb(torch.full((1, 2, 2, 3), 0.5, dtype=torch.bfloat16)).max() == 128


@pytest.mark.parametrize(
    "bad, kw, match",
    [
        (np.zeros((4, 4, 3), bool), {}, "pixel type bool"),
        (np.zeros((4, 4, 3), np.complex64), {}, "pixel type"),
        (np.full((4, 4, 3), 256, np.int32), {}, "outside 0..255"),
        (np.full((4, 4, 3), 1.5, np.float32), {"strict_range": True}, "values in 0..1"),
        (np.full((4, 4, 3), np.nan, np.float32), {}, "NaN or infinite"),
        (np.zeros((4, 4, 5), np.uint8), {}, "C = 1..4"),
        (np.zeros((0, 4, 4, 3), np.uint8), {}, "empty"),
        (np.zeros((4, 0, 3), np.uint8), {}, "empty"),
        ([np.zeros((4, 4, 3)), np.zeros((5, 4, 3))], {}, "one size"),
    ],
)
def test_to_rgb_errors_name_the_input(bad, kw, match):
    with pytest.raises(InputError, match=f"^the pictures.*{match}"):
        I.to_rgb(bad, "the pictures", **kw)
