"""Face landmarks, alignment to the PD-FGC template, paste-back, and their ComfyUI nodes.

Measured figures asserted below (dlib 20.0.1, OpenCV 5, the bundled anne.png and
scikit-image's astronaut):
- anne.png as shipped: template points 0.76-4.32 px from the template (left eye 4.32 px,
  every axis within 3.9 px); after our alignment, re-detected on the crop: 1.9-2.5 px.
- astronaut (512x512, face off-centre): re-detected on the crop 3.4-3.7 px from the template
  (the least-squares residual of a similarity through three points of this face).
- rotated / scaled / shifted copies of anne.png: re-detected on the crop 1.9-3.0 px.
- round trip frame -> crop -> frame (two bilinear warps + uint8 crop) inside the mask, in
  1/255 units: sharp photo mean 2.5, 99th percentile 16 (crop) / mean 3.1, p99 19 (generator
  view); the same photo blurred (sigma 2 px) max 2.9 / 3.4; integer translation and 2x: exact.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from pdfgc_core.errors import CheckpointError, FaceNotFoundError, InputError
from pdfgc_core.faces import (
    TEMPLATE,
    CropInfo,
    DlibDetector,
    Face,
    FaceAlignmentDetector,
    LandmarkDetector,
    align_faces,
    apply_affine,
    as_rgb_u8,
    compose_affine,
    face_mask,
    find_fan_weights,
    get_detector,
    invert_affine,
    paste_back,
    similarity_transform,
    video_transforms,
    view_to_crop,
    warp_crops,
)
from pdfgc_core.faces import landmarks as lm_mod

cv2 = pytest.importorskip("cv2")

REPO = Path(__file__).resolve().parents[1]
ANNE = REPO / "samples" / "anne.png"


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def dlib_det():
    pytest.importorskip("dlib")
    det = DlibDetector()
    det.detect(np.zeros((64, 64, 3), np.uint8))  # loads the models once for the session
    return det


@pytest.fixture(scope="session")
def anne():
    img = cv2.imread(str(ANNE), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(img[..., ::-1])


@pytest.fixture(scope="session")
def astronaut():
    skdata = pytest.importorskip("skimage.data")
    return skdata.astronaut()


def face_from_points(p, score=1.0) -> Face:
    """A Face whose eye and inner-mouth landmarks sit exactly on the three points ``p [3,2]``."""
    p = np.asarray(p, float)
    lm = np.repeat(p.mean(0)[None], 68, 0)
    lm[36:42], lm[42:48], lm[60:68] = p[0], p[1], p[2]
    d = np.linalg.norm(p[1] - p[0])
    (x0, y0), (x1, y1) = p.min(0) - d, p.max(0) + d
    return Face(lm, (x0, y0, x1, y1), score)


class ScriptedDetector(LandmarkDetector):
    """Frame t is recognised by its pixel [0,0,0] == t; returns ``script[t]`` (a list of Faces)."""

    name = "scripted"

    def __init__(self, script):
        self.script = script

    def detect(self, rgb):
        return list(self.script.get(int(rgb[0, 0, 0]), []))


def numbered_frames(n, h=240, w=320):
    f = np.full((n, h, w, 3), 100, np.uint8)
    f[:, 0, 0, 0] = np.arange(n)
    return f


def template_error(det, crop) -> np.ndarray:
    faces = det.detect(crop)
    assert len(faces) == 1, f"expected one face in the crop, found {len(faces)}"
    return np.linalg.norm(faces[0].points - TEMPLATE, axis=1)


# ------------------------------------------------------------------- landmarks, template


def test_anne_is_already_aligned(dlib_det, anne):
    faces = dlib_det.detect(anne)
    assert len(faces) == 1
    p = faces[0].points
    # eye and mouth centres measured with dlib directly (HOG detector.run(img, 1, 0) + the 68-point predictor)
    np.testing.assert_allclose(p, [[84.8, 62.8], [139.0, 61.8], [112.6, 120.2]], atol=0.4)
    assert np.abs(p - TEMPLATE).max() < 4.0  # every axis within 4 px
    assert np.linalg.norm(p - TEMPLATE, axis=1).max() < 4.5  # left eye 4.32 px away


def test_anne_crop_puts_points_on_template(dlib_det, anne):
    crops, info = align_faces(anne, dlib_det)
    assert crops.shape == (1, 224, 224, 3) and crops.dtype == np.uint8
    assert info.mode == "image" and info.detected.tolist() == [True]
    assert template_error(dlib_det, crops[0]).max() < 4.0  # measured 2.48


def test_astronaut_crop_puts_points_on_template(dlib_det, astronaut):
    crops, info = align_faces(astronaut, dlib_det, name="astronaut")
    assert info.frame_size == (512, 512)
    assert template_error(dlib_det, crops[0]).max() < 4.0  # measured 3.73


@pytest.mark.parametrize("angle,scale,shift", [(15, 1.4, (60, 30)), (-20, 0.8, (150, 120)), (5, 2.0, (-20, 10))])
def test_moved_copy_crop_puts_points_on_template(dlib_det, anne, angle, scale, shift):
    m = cv2.getRotationMatrix2D((112, 112), angle, scale)
    m[:, 2] += shift
    frame = cv2.warpAffine(anne, m, (420, 360), borderMode=cv2.BORDER_CONSTANT, borderValue=(127, 127, 127))
    crops, info = align_faces(frame, dlib_det)
    assert template_error(dlib_det, crops[0]).max() < 4.0  # measured <= 3.0
    # the alignment undoes the move: frame->crop after anne->frame equals anne's own alignment
    _, own = align_faces(anne, dlib_det)
    centre = apply_affine(compose_affine(info.matrices[0], m), TEMPLATE)
    assert np.abs(centre - apply_affine(own.matrices[0], TEMPLATE)).max() < 3.0


def test_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 300, (5, 2))
    a = 1.7 * np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    m = np.concatenate([a, [[12.5], [-40.0]]], 1)
    np.testing.assert_allclose(similarity_transform(src, apply_affine(m, src)), m, atol=1e-9)
    np.testing.assert_allclose(compose_affine(invert_affine(m), m), [[1, 0, 0], [0, 1, 0]], atol=1e-12)


def test_video_transforms_follow_the_mouth_with_smoothing():
    pts = np.repeat(TEMPLATE[None], 6, 0).copy()
    pts[3:, :, 0] += 10.0  # the face moves 10 px right at frame 3
    mats = video_transforms(pts)
    mouth = np.array([apply_affine(m, p[2]) for m, p in zip(mats, pts)])
    # the clip similarity is the mean (shift +5); the bias re-centres the mouth with bias = 0.2 prev + 0.8 cur
    np.testing.assert_allclose(mouth[:3, 0], 112.0, atol=1e-9)
    np.testing.assert_allclose(mouth[3:, 0] - 112.0, [10 * 0.2, 10 * 0.04, 10 * 0.008], atol=1e-9)
    np.testing.assert_allclose(mouth[:, 1], 120.0, atol=1e-9)


# ----------------------------------------------------------------------------- round trip


def test_large_picture_is_reduced_before_cropping(dlib_det, anne):
    big = cv2.resize(anne, (1120, 1120), interpolation=cv2.INTER_CUBIC)  # searched at 1024, crop scale 0.2
    crops_big, info = align_faces(big, dlib_det)
    crops, _ = align_faces(anne, dlib_det)
    assert template_error(dlib_det, crops_big[0]).max() < 4.0  # measured 3.0
    assert np.abs(crops_big.astype(int) - crops).mean() < 3  # measured 1.9 (area-reduced, not aliased)


def test_round_trip_is_exact_for_integer_translation_and_2x(anne):
    frame = np.zeros((300, 400, 3), np.uint8)
    frame[30:254, 100:324] = anne
    for m in ([[1.0, 0, -100], [0, 1.0, -30]], [[2.0, 0, -220], [0, 2.0, -60]]):
        m = np.array(m)
        crops = warp_crops(frame[None], m[None])
        info = CropInfo(m[None], frame.shape[:2], [True], np.full((1, 3, 2), np.nan), "image", "test")
        out, mask = paste_back(frame, crops, info, view="crop")
        inside = mask[0] > 0
        assert inside.sum() > 5000
        assert np.abs(out[0] - frame / 255.0)[inside].max() < 1e-6


@pytest.mark.parametrize(
    "blur,view,mean_bound,max_bound",
    [
        (0, "crop", 3.0, None),
        (0, "generator", 3.6, None),  # measured mean 2.46 / 3.08 (p99 16 / 19)
        (2, "crop", None, 4.0),
        (2, "generator", None, 4.5),  # measured max 2.88 / 3.36
    ],
)
def test_round_trip_reproduces_the_frame_inside_the_mask(dlib_det, astronaut, blur, view, mean_bound, max_bound):
    frame = cv2.GaussianBlur(astronaut, (0, 0), blur) if blur else astronaut
    crops, info = align_faces(frame, dlib_det)
    if view == "generator":  # what the networks see: the official loader's rows 0:192, cols 16:208
        crops = cv2.resize(crops[0, 0:192, 16:208], (224, 224), interpolation=cv2.INTER_LINEAR)[None]
    out, mask = paste_back(frame, crops, info, view=view)
    inside = mask[0] > 0
    assert inside.sum() > 10000
    err = np.abs(out[0] - frame / 255.0).max(-1)[inside] * 255
    if mean_bound is not None:
        assert err.mean() < mean_bound and np.percentile(err, 99) < 20
    if max_bound is not None:
        assert err.max() < max_bound
    outside = mask[0] == 0
    assert np.array_equal(out[0][outside], (frame.astype(np.float32) / np.float32(255))[outside])


def test_paste_matches_a_full_frame_warp(dlib_det, astronaut):
    """The region-of-interest shortcut gives the same pixels as warping the whole frame."""
    crops, info = align_faces(astronaut, dlib_det)
    gen = np.random.default_rng(1).uniform(0, 1, (1, 224, 224, 3)).astype(np.float32)
    out, mask = paste_back(astronaut, gen, info, feather=10)
    m_view = compose_affine(invert_affine(view_to_crop("generator")), info.matrices[0])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(gen[0], m_view, (512, 512), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    full_mask = cv2.warpAffine(face_mask(10), info.matrices[0], (512, 512), flags=flags)
    ref = astronaut / np.float32(255) * (1 - full_mask[..., None]) + warped * full_mask[..., None]
    np.testing.assert_allclose(mask[0], full_mask, atol=1e-5)  # float32 weights
    np.testing.assert_allclose(out[0], ref, atol=1e-4)


def test_face_mask_shape():
    m = face_mask(16)
    assert m.shape == (224, 224) and m.dtype == np.float32 and m.min() == 0 and m.max() == 1
    # centre (111.5, 95.5), radius 96: 1 up to radius 80, 0 beyond 96
    assert m[95, 112] == 1 and m[95, 191] == 1 and m[95, 192] < 1 and m[95, 208] == 0 and m[223, 112] == 0
    row = m[95, 112:]
    assert (np.diff(row) <= 0).all()  # falls monotonically from the centre
    assert 0.4 < m[95, 200] < 0.6  # half-way at feather/2 inside the rim
    hard = face_mask(0)
    assert set(np.unique(hard)) == {0.0, 1.0}
    # the disc stays inside the generator's view (rows 0:192, cols 16:208)
    assert m[192:].max() == 0 and m[:, :16].max() == 0 and m[:, 208:].max() == 0


def test_generator_view_mapping_is_the_official_loader_crop():
    noise = np.random.default_rng(2).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    crop = cv2.GaussianBlur(noise, (0, 0), 3)
    crop = cv2.normalize(crop, None, 0, 255, cv2.NORM_MINMAX)
    official = cv2.resize(crop[0:192, 16:208], (224, 224), interpolation=cv2.INTER_LINEAR)
    m = invert_affine(view_to_crop("generator"))
    ours = cv2.warpAffine(crop, m, (224, 224), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    diff = np.abs(ours.astype(int) - official)
    assert diff.max() <= 2 and diff.mean() < 0.3  # same geometry; the two fixed-point kernels round differently


def test_one_frame_many_generated_and_pairing_errors(anne):
    frame = np.zeros((260, 300, 3), np.uint8)
    frame[10:234, 40:264] = anne
    crops, info = align_faces(frame, "pre-aligned")  # pre-aligned: stretch 300x260 -> 224
    gen = np.stack([np.full((224, 224, 3), v, np.float32) for v in (0.2, 0.8, 0.5)])
    out, mask = paste_back(frame, gen, info)
    assert out.shape == (3, 260, 300, 3) and mask.shape == (3, 260, 300)
    assert out.dtype == np.float32 and mask.dtype == np.float32 and 0 <= mask.min() and mask.max() <= 1
    assert np.allclose(out[1][mask[1] == 1], 0.8)
    with pytest.raises(InputError, match="square"):
        paste_back(frame, gen[:, :200], info)
    with pytest.raises(InputError, match="frame"):
        paste_back(frame[:200], gen, info)
    two = np.stack([frame, frame])
    _, info2 = align_faces(two, "pre-aligned")
    with pytest.raises(InputError, match="3 pictures but only 2 frames"):
        paste_back(two, gen, info2)
    assert paste_back(two, gen[:1], info2)[0].shape == (1, 260, 300, 3)
    with pytest.raises(InputError, match="CropInfo"):
        paste_back(frame, gen, {"matrices": []})
    with pytest.raises(InputError, match="feather"):
        paste_back(frame, gen, info, feather=-1)
    with pytest.raises(InputError, match="view"):
        paste_back(frame, gen, info, view="side")


def test_upscaled_generated_faces_land_in_the_same_place(dlib_det, anne):
    crops, info = align_faces(anne, dlib_det)
    gen = cv2.resize(crops[0, 0:192, 16:208], (224, 224), interpolation=cv2.INTER_LINEAR)
    out1, m1 = paste_back(anne, gen[None], info)
    out2, m2 = paste_back(anne, cv2.resize(gen, (448, 448), interpolation=cv2.INTER_CUBIC)[None], info)
    assert np.array_equal(m1, m2)
    assert np.abs(out1 - out2)[m1 > 0].mean() < 1.5 / 255


# ---------------------------------------------------------------------------------- video


def test_video_with_missing_and_occluded_frames_has_no_jumps(dlib_det, astronaut):
    ref = dlib_det.detect(astronaut)
    assert len(ref) == 1  # the weak false face (score 0.12) is dropped
    p = ref[0].points
    frames, moves = [], []
    for t in range(16):  # the head rolls 0.6 deg and drifts (1.5, 0.8) px per frame
        m = cv2.getRotationMatrix2D((225, 130), 0.6 * t, 1.0)
        m[:, 2] += (160 + 1.5 * t - 225, 140 + 0.8 * t - 130)
        f = cv2.warpAffine(astronaut, m, (320, 300), borderMode=cv2.BORDER_REFLECT_101)
        c = apply_affine(m, p)
        if t in (0, 4, 5, 6, 15):  # face hidden: at the start, in the middle, at the end
            (x0, y0), (x1, y1) = (c.min(0) - 40).astype(int), (c.max(0) + 40).astype(int)
            f[y0:y1, x0:x1] = 128
        if t == 9:  # eyes covered
            f[int(c[0, 1]) - 8 : int(c[0, 1]) + 8, int(c[0, 0]) - 20 : int(c[1, 0]) + 20] = 0
        if t == 11:  # mouth covered
            f[int(c[2, 1]) - 12 : int(c[2, 1]) + 15, int(c[2, 0]) - 25 : int(c[2, 0]) + 25] = 0
        frames.append(f)
        moves.append(m)
    crops, info = align_faces(np.stack(frames), dlib_det, mode="video", name="clip")
    assert crops.shape == (16, 224, 224, 3) and len(info) == 16 and info.mode == "video"
    assert np.flatnonzero(~info.detected).tolist() == [0, 4, 5, 6, 15]
    assert any("interpolated" in n for n in info.notes)
    # where the true face lands in each crop
    q = np.stack([apply_affine(compose_affine(info.matrices[t], moves[t]), p) for t in range(16)])
    steps = np.linalg.norm(np.diff(q, axis=0), axis=2).max(1)
    assert steps.max() < 3.0  # measured 2.4 (frame 0 holds frame 1's alignment while the head moves)
    assert np.linalg.norm(q[info.detected, 2] - TEMPLATE[2], axis=1).max() < 3.5  # mouth re-centred
    # one similarity for the clip: every frame has the same rotation and scale
    assert np.ptp(info.matrices[:, :, :2], axis=0).max() < 1e-12


def test_video_interpolates_gaps_holds_ends_and_rejects_outliers():
    def pts(t):
        return TEMPLATE * 1.5 + (10 + 2.0 * t, 20.0)

    script = {t: [face_from_points(pts(t))] for t in range(12) if t not in (0, 1, 5, 6, 7)}
    bogus = pts(9).copy()
    bogus[2] += (40, 25)  # occluded mouth: landmarks land far away
    script[9] = [face_from_points(bogus)]
    crops, info = align_faces(numbered_frames(12), ScriptedDetector(script), mode="video")
    half = {t: [face_from_points(pts(t) if t % 2 else bogus)] for t in range(4)}
    assert align_faces(numbered_frames(4), ScriptedDetector(half), mode="video")[1].detected.all()
    assert crops.shape == (12, 224, 224, 3)
    assert np.flatnonzero(~info.detected).tolist() == [0, 1, 5, 6, 7, 9]
    assert any("occluded" in n for n in info.notes)
    assert np.isnan(info.points[[0, 5, 9]]).all() and np.isfinite(info.points[info.detected]).all()
    mouth = np.array([apply_affine(m, pts(t)[2]) for t, m in enumerate(info.matrices)])
    # the start holds frame 2's alignment while the face moves 2 px per frame (x 1/1.5 in the crop)
    np.testing.assert_allclose(mouth[:3, 0] - 112, [-8 / 3, -4 / 3, 0], atol=1e-9)
    # gaps are interpolated, so the mouth stays re-centred; the smoothing lags the motion by 0.33 px
    assert (mouth[2:, 0] >= 112 - 1e-9).all() and (mouth[2:, 0] < 112.34).all()
    np.testing.assert_allclose(mouth[:, 1], 120.0, atol=1e-9)


def test_video_follows_the_chosen_face():
    left = [face_from_points(TEMPLATE + (10.0 + t, 10.0)) for t in range(6)]
    right = [face_from_points(TEMPLATE * (1.1 + 0.1 * t) + (150.0, 0.0)) for t in range(6)]
    script = {t: [left[t], right[t]] for t in range(6)}
    _, info = align_faces(numbered_frames(6), ScriptedDetector(script), mode="video", face_index=0)
    np.testing.assert_allclose(info.points, np.stack([f.points for f in left]))
    _, info = align_faces(numbered_frames(6), ScriptedDetector(script), mode="video")
    np.testing.assert_allclose(info.points[0], right[0].points)  # largest on the first frame ...
    np.testing.assert_allclose(info.points, np.stack([f.points for f in right]))  # ... then followed
    assert any("several faces" in n for n in info.notes)


# ------------------------------------------------------------------------ input policies


def test_no_face_anywhere_raises_face_not_found(dlib_det):
    blank = np.full((3, 120, 160, 3), 90, np.uint8)
    with pytest.raises(FaceNotFoundError, match="driver clip: no face found in any of the 3 frames") as e:
        align_faces(blank, dlib_det, mode="video", name="driver clip")
    assert "pre-aligned" in str(e.value)
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    with pytest.raises(FaceNotFoundError, match="photo: no face found in the picture"):
        align_faces(noise, dlib_det, name="photo")


def test_image_mode_needs_a_face_in_every_picture(dlib_det, anne):
    batch = np.stack([anne, np.full_like(anne, 90), anne])
    with pytest.raises(FaceNotFoundError, match=r"frame\(s\) 1 of 3"):
        align_faces(batch, dlib_det, mode="image")
    _, info = align_faces(batch, dlib_det, mode="video")
    assert info.detected.tolist() == [True, False, True]


def test_several_faces_largest_or_chosen_index(dlib_det, anne):
    canvas = np.full((300, 560, 3), 127, np.uint8)
    small = cv2.resize(anne, (180, 180), interpolation=cv2.INTER_AREA)
    big = cv2.resize(anne, (280, 280), interpolation=cv2.INTER_CUBIC)
    canvas[60:240, 20:200] = small
    canvas[10:290, 260:540] = big
    faces = dlib_det.detect(canvas)
    assert len(faces) == 2 and faces[0].box[0] < faces[1].box[0]  # left to right
    _, auto = align_faces(canvas, dlib_det)
    _, first = align_faces(canvas, dlib_det, face_index=0)
    _, second = align_faces(canvas, dlib_det, face_index=1)
    assert auto.points[0, 0, 0] > 260 and first.points[0, 0, 0] < 200
    np.testing.assert_array_equal(auto.points, second.points)
    assert any("several faces" in n for n in auto.notes)
    with pytest.raises(InputError, match="face_index=2 but frame 0 has 2 face"):
        align_faces(canvas, dlib_det, face_index=2)


def test_tiny_face_is_refused_unless_allowed():
    det = ScriptedDetector({0: [face_from_points(TEMPLATE * 0.3 + 50)]})  # eyes 15 px apart
    with pytest.raises(InputError, match=r"too small: its eyes are 15.0 pixels apart.*3.3x"):
        align_faces(numbered_frames(1), det)
    crops, info = align_faces(numbered_frames(1), det, min_eye_distance=0)
    np.testing.assert_allclose(apply_affine(info.matrices[0], info.points[0]), TEMPLATE, atol=1e-9)


def test_gray_rgba_float_inputs(dlib_det, anne):
    crops, info = align_faces(anne, dlib_det)
    rgba = np.concatenate([anne, np.random.default_rng(0).integers(0, 256, anne.shape[:2] + (1,), np.uint8)], -1)
    crops_a, info_a = align_faces(rgba, dlib_det)  # alpha is dropped, colours used as stored
    assert np.array_equal(crops_a, crops) and np.array_equal(info_a.matrices, info.matrices)
    crops_f, _ = align_faces(torch.from_numpy(anne / 255.0)[None].float(), dlib_det)  # ComfyUI IMAGE layout
    assert np.array_equal(crops_f, crops)
    gray = cv2.cvtColor(anne, cv2.COLOR_RGB2GRAY)
    for g in (gray, gray[..., None]):
        crops_g, _ = align_faces(g, dlib_det)  # gray is repeated to three channels
        assert crops_g.shape == (1, 224, 224, 3)
        assert np.array_equal(crops_g[..., 0], crops_g[..., 2])
        assert template_error(dlib_det, crops_g[0]).max() < 4.0
    assert as_rgb_u8(np.full((40, 40), 0x1234, np.uint16)).max() == 0x12  # high byte, as OpenCV reads 16 bit


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((1, 1, 3), np.uint8), "1x1 pixels"),
        (np.zeros((1, 1), np.float32), "1x1 pixels"),
        (np.zeros((0, 64, 64, 3), np.uint8), "empty"),
        (np.zeros((64, 64, 5), np.uint8), "C = 1..4"),
        (np.zeros((2, 2, 64, 64, 3), np.uint8), "shape"),
        (np.full((64, 64, 3), 200.0), "0..1.*divide"),
        (np.full((64, 64, 3), np.nan, np.float32), "NaN"),
        (np.zeros((64, 64, 3), np.complex64), "pixel type"),
        (np.full((64, 64, 3), 300, np.int64), "outside 0..255"),
        ([np.zeros((64, 64, 3), np.uint8), np.zeros((80, 64, 3), np.uint8)], "one size"),
    ],
)
def test_bad_pictures_raise_input_error(bad, match):
    with pytest.raises(InputError, match=match):
        align_faces(bad, "dlib", name="the picture")


def test_unknown_settings_raise_input_error(anne):
    with pytest.raises(InputError, match="unknown"):
        get_detector("mediapipe")
    with pytest.raises(InputError, match="mode"):
        align_faces(anne, "pre-aligned", mode="film")
    with pytest.raises(InputError, match="border"):
        warp_crops(anne[None], np.eye(2, 3)[None], border="wrap")


def test_pre_aligned_is_the_official_resize(anne):
    crops, info = align_faces(np.stack([anne, anne[::-1]]), "none")
    assert np.array_equal(crops[0], anne) and info.mode == "pre-aligned" and info.detected.all()
    wide = cv2.resize(anne, (300, 250))
    crops, info = align_faces(wide, "pre-aligned")
    assert np.array_equal(crops[0], cv2.resize(wide, (224, 224), interpolation=cv2.INTER_LINEAR))
    out, mask = paste_back(wide, crops, info, view="crop")
    assert np.abs(out[0] - wide / 255.0)[mask[0] > 0].mean() < 3 / 255


# --------------------------------------------------------------------------------- CropInfo


def test_crop_info_survives_json_and_pickle(dlib_det, anne):
    batch = np.stack([anne, np.full_like(anne, 90), anne])
    _, info = align_faces(batch, dlib_det, mode="video")
    back = CropInfo.from_dict(json.loads(json.dumps(info.to_dict(), allow_nan=False)))
    for a, b in ((info, back), (info, pickle.loads(pickle.dumps(info)))):
        np.testing.assert_array_equal(a.matrices, b.matrices)
        np.testing.assert_array_equal(a.points, b.points)  # NaN rows kept
        assert (a.detected.tolist(), a.frame_size, a.mode, a.backend, a.notes) == (
            b.detected.tolist(),
            b.frame_size,
            b.mode,
            b.backend,
            b.notes,
        )
    part = info.select([2])
    assert len(part) == 1 and np.array_equal(part.matrices[0], info.matrices[2])
    assert "3 frame(s)" in repr(info)
    with pytest.raises(InputError, match="crop info"):
        CropInfo.from_dict({"format": "something else"})
    with pytest.raises(InputError, match="crop info"):
        CropInfo.from_dict({**info.to_dict(), "matrices": "x"})
    with pytest.raises(InputError, match="singular"):
        CropInfo(np.zeros((1, 2, 3)), (10, 10), [True], np.zeros((1, 3, 2)), "image", "x")


# ------------------------------------------------------------------ face-alignment plumbing


def test_fan_weights_are_looked_up_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    mine = tmp_path / "models"
    mine.mkdir()
    with pytest.raises(CheckpointError) as e:
        find_fan_weights([mine])
    msg = str(e.value)
    assert "2DFAN4-11f355bf06.pth.tar" in msg and "s3fd-619a316812.pth" in msg
    assert str(mine) in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg and "dlib" in msg
    with pytest.raises(CheckpointError):
        FaceAlignmentDetector([mine]).detect(np.zeros((64, 64, 3), np.uint8))
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "s3fd-619a316812.pth").write_bytes(b"x")
    (hub / "2DFAN4-11f355bf06.pth.tar").write_bytes(b"x")
    assert find_fan_weights([mine]) == (hub / "2DFAN4-11f355bf06.pth.tar", hub / "s3fd-619a316812.pth")
    (mine / "2DFAN4-11f355bf06.pth.tar").write_bytes(b"x")
    assert find_fan_weights(mine)[0] == mine / "2DFAN4-11f355bf06.pth.tar"  # the caller's folder first


def test_fan_backend_turns_its_output_into_faces(tmp_path, monkeypatch, anne):
    for name in ("2DFAN4-11f355bf06.pth.tar", "s3fd-619a316812.pth"):
        (tmp_path / name).write_bytes(b"x")
    lm = face_from_points([[84.8, 62.8], [139.0, 61.8], [112.6, 120.2]]).landmarks
    calls = []

    class FakeFA:
        def get_landmarks_from_image(self, img, return_bboxes=False, return_landmark_score=False):
            calls.append((img.shape, img.dtype, return_bboxes, return_landmark_score))
            if img.mean() < 1:
                return None, None, None
            return [np.c_[lm, np.zeros(68)]], [np.ones(68)], [np.array([50, 20, 180, 160, 0.99])]

    def build(fan, s3fd, device):
        calls.append((fan, s3fd, device))
        return FakeFA()

    monkeypatch.setattr(lm_mod, "_build_face_alignment", build)
    monkeypatch.setattr(lm_mod, "_FAN_MODELS", {})
    det = get_detector("fan", weights_dirs=[tmp_path], device="cpu")
    assert det.detect(np.zeros((64, 64, 3), np.uint8)) == []
    crops, info = align_faces(anne, det)
    assert info.backend == "face_alignment" and info.detected.all()
    np.testing.assert_allclose(info.points[0], [[84.8, 62.8], [139.0, 61.8], [112.6, 120.2]])
    assert calls[0] == (tmp_path / "2DFAN4-11f355bf06.pth.tar", tmp_path / "s3fd-619a316812.pth", "cpu")
    assert sum(len(c) == 3 for c in calls) == 1  # model built once, then reused
    assert calls[1] == ((64, 64, 3), np.uint8, True, True)


def test_fan_model_is_built_from_local_files(tmp_path, monkeypatch):
    fan_file = tmp_path / "2DFAN4-11f355bf06.pth.tar"
    torch.save({"w": torch.ones(2)}, fan_file)
    seen = {}

    class FAN(torch.nn.Module):
        def __init__(self, size):
            super().__init__()
            seen["size"] = size
            self.w = torch.nn.Parameter(torch.zeros(2))

    class FaceAlignment:
        def __init__(
            self,
            landmarks_type,
            network_size=4,
            device="cuda",
            face_detector="sfd",
            face_detector_kwargs=None,
            compile=True,
            **kw,
        ):
            seen.update(
                type=landmarks_type, device=device, detector=face_detector, kwargs=face_detector_kwargs, compile=compile
            )
            self.net = self._load_native("2DFAN-4", network_size, device, torch.float32)

        def _load_native(self, *a):
            raise AssertionError("would download")

    fake = types.ModuleType("face_alignment")
    fake.FaceAlignment = FaceAlignment
    fake.LandmarksType = types.SimpleNamespace(TWO_D=1)
    fake_models = types.ModuleType("face_alignment.models")
    fake_models.FAN = FAN
    monkeypatch.setitem(sys.modules, "face_alignment", fake)
    monkeypatch.setitem(sys.modules, "face_alignment.models", fake_models)
    model = lm_mod._build_face_alignment(fan_file, tmp_path / "s3fd.pth", "cpu")
    assert torch.equal(model.net.w.detach(), torch.ones(2)) and not model.net.training
    assert seen == {
        "size": 4,
        "type": 1,
        "device": "cpu",
        "detector": "sfd",
        "kwargs": {"path_to_detector": str(tmp_path / "s3fd.pth")},
        "compile": False,
    }
    monkeypatch.setitem(sys.modules, "face_alignment", None)
    with pytest.raises(InputError, match="face-alignment package cannot be imported"):
        lm_mod._build_face_alignment(fan_file, tmp_path / "s3fd.pth", "cpu")


def test_faces_package_imports_without_detectors():
    code = "import sys, pdfgc_core.faces; assert not {'dlib', 'face_alignment'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# ------------------------------------------------------------------------------------ nodes


@pytest.fixture(scope="module")
def nodes_faces():
    spec = importlib.util.spec_from_file_location("pdfgc_test_nodes_faces", REPO / "nodes" / "faces.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_node_definitions(nodes_faces):
    assert set(nodes_faces.NODE_CLASS_MAPPINGS) == {"PDFGC_AlignFaces", "PDFGC_PasteBack"}
    assert set(nodes_faces.NODE_DISPLAY_NAME_MAPPINGS) == set(nodes_faces.NODE_CLASS_MAPPINGS)
    for cls in nodes_faces.NODE_CLASS_MAPPINGS.values():
        spec = cls.INPUT_TYPES()
        assert cls.CATEGORY == "PD-FGC/faces" and cls.DESCRIPTION and hasattr(cls, cls.FUNCTION)
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
        for group in spec.values():
            for name, (kind, opts) in group.items():
                assert opts.get("tooltip"), f"{cls.__name__}.{name} has no tooltip"
                if isinstance(kind, list):
                    assert opts["default"] in kind
    assert nodes_faces.PDFGC_AlignFaces.RETURN_TYPES == ("IMAGE", "PDFGC_CROP_INFO")
    assert nodes_faces.PDFGC_PasteBack.RETURN_TYPES == ("IMAGE", "MASK")
    assert "PDFGC_CROP_INFO" in nodes_faces.PDFGC_PasteBack.INPUT_TYPES()["required"]["crop_info"]


def test_align_and_paste_nodes_on_comfy_tensors(nodes_faces, dlib_det, astronaut):
    image = torch.from_numpy(astronaut).float().div(255)[None]
    crops, info = nodes_faces.PDFGC_AlignFaces().align(image, "dlib", "auto", -1)
    assert crops.shape == (1, 224, 224, 3) and crops.dtype == torch.float32 and 0 <= crops.min() <= crops.max() <= 1
    assert isinstance(info, CropInfo) and info.frame_size == (512, 512)
    ref, _ = align_faces(astronaut, dlib_det)
    assert torch.equal(crops, torch.from_numpy(ref).float() / 255)
    gen = torch.nn.functional.interpolate(
        crops[:, 0:192, 16:208].permute(0, 3, 1, 2), size=(224, 224), mode="bilinear", align_corners=False
    ).permute(0, 2, 3, 1)
    out, mask = nodes_faces.PDFGC_PasteBack().paste(image.repeat(1, 1, 1, 1), gen.repeat(4, 1, 1, 1), info, 16.0)
    assert out.shape == (4, 512, 512, 3) and mask.shape == (4, 512, 512)
    assert out.dtype == torch.float32 and mask.dtype == torch.float32
    inside = mask[0] > 0
    assert (out[0] - image[0]).abs().amax(-1)[inside].mean() < 4 / 255
    crops2, info2 = nodes_faces.PDFGC_AlignFaces().align(
        crops, "pre-aligned", "video", -1, min_eye_distance=20.0, border="replicate"
    )
    assert torch.equal(crops2, crops) and info2.mode == "pre-aligned"


def test_nodes_use_comfy_services_when_present(nodes_faces, monkeypatch, tmp_path):
    events = []

    class Bar:
        def __init__(self, total):
            events.append(("bar", total))

        def update_absolute(self, done, total):
            events.append((done, total))

    comfy = types.ModuleType("comfy")
    mm = types.ModuleType("comfy.model_management")
    mm.throw_exception_if_processing_interrupted = lambda: events.append("check")
    mm.get_torch_device = lambda: torch.device("cpu")
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = Bar
    comfy.model_management, comfy.utils = mm, utils
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.models_dir = str(tmp_path)
    folder_paths.get_folder_paths = lambda name: [str(tmp_path / "pdfgc")] if name == "pdfgc" else 1 / 0
    for name, mod in (
        ("comfy", comfy),
        ("comfy.model_management", mm),
        ("comfy.utils", utils),
        ("folder_paths", folder_paths),
    ):
        monkeypatch.setitem(sys.modules, name, mod)
    assert nodes_faces._fan_weight_dirs() == [str(tmp_path / "pdfgc"), str(tmp_path / "face_alignment")]
    assert nodes_faces._torch_device() == "cpu"
    script = {t: [face_from_points(TEMPLATE * 1.2 + t)] for t in range(3)}
    monkeypatch.setattr(nodes_faces.core, "get_detector", lambda *a, **k: ScriptedDetector(script))
    frames = torch.from_numpy(numbered_frames(3)).float() / 255
    crops, info = nodes_faces.PDFGC_AlignFaces().align(frames, "dlib", "auto", -1)
    assert info.mode == "video" and crops.shape == (3, 224, 224, 3)
    assert events == [("bar", 3), "check", (1, 3), "check", (2, 3), "check", (3, 3)]
