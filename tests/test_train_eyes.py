"""Eye region and the eye-stage anchor, on constructed and on detected landmarks."""

from __future__ import annotations

import numpy as np
import pytest
from train_support import SAMPLES

from pdfgc_core.errors import InputError
from pdfgc_core.faces import get_detector
from pdfgc_core.images import official_crop, read_image
from pdfgc_core.train import eyes


def face_landmarks(dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """A plausible 68-point face: eyes centred at (87,100) and (137,100), brows 25 px above them."""
    lm = np.zeros((68, 2))
    lm[:, 0], lm[:, 1] = 112.0, 170.0  # jaw, nose and mouth somewhere below
    ring = np.array([[-12, 0], [-6, -5], [6, -5], [12, 0], [6, 4], [-6, 4]], float)
    lm[36:42] = ring + (87, 100)
    lm[42:48] = ring + (137, 100)
    lm[17:22] = np.stack([np.linspace(70, 102, 5), [78, 74, 73, 74, 76]], 1)
    lm[22:27] = np.stack([np.linspace(122, 154, 5), [76, 74, 73, 74, 78]], 1)
    return lm + (dx, dy)


def test_box_holds_both_eyes_and_no_brow():
    lm = face_landmarks()
    x0, y0, x1, y1 = eyes.eye_box(lm)
    eye_pts = lm[36:48]
    assert (eye_pts[:, 0] >= x0).all() and (eye_pts[:, 0] < x1).all()
    assert (eye_pts[:, 1] >= y0).all() and (eye_pts[:, 1] < y1).all()
    assert y0 > lm[17:27, 1].max()  # every brow landmark is above the box
    d = 50.0  # distance between the eye centres
    assert x0 == np.floor(87 - 12 - eyes.PAD_X * d) and x1 == np.ceil(137 + 12 + eyes.PAD_X * d) + 1
    assert y0 == np.floor(95 - eyes.PAD_Y * d) and y1 == np.ceil(104 + eyes.PAD_Y * d) + 1


def test_box_never_cuts_an_eye_when_brows_sit_low():
    lm = face_landmarks()
    lm[17:27, 1] = 97.0  # brows (mean) below the top of the eyes: the box still starts at the eye top
    x0, y0, x1, y1 = eyes.eye_box(lm)
    assert y0 == np.floor(lm[36:48, 1].min())


def test_box_is_clipped_to_the_image_and_nan_without_face():
    x0, y0, x1, y1 = eyes.eye_box(face_landmarks(dx=-80.0))
    assert x0 == 0 and x1 > 0
    assert np.isnan(eyes.eye_box(np.full((68, 2), np.nan))).all()
    with pytest.raises(InputError):
        eyes.eye_box(np.zeros((5, 2)))


def test_anchor_is_v2_with_the_eyes_of_v1():
    rng = np.random.default_rng(0)
    v1 = rng.integers(0, 256, (224, 224, 3), np.uint8)
    v2 = rng.integers(0, 256, (224, 224, 3), np.uint8)
    b1, b2 = eyes.eye_box(face_landmarks()), eyes.eye_box(face_landmarks(dx=3, dy=-4))  # the head moved a little
    box = eyes.union_box(b1, b2)
    v1_before, v2_before = v1.copy(), v2.copy()
    anchor = eyes.paste_eyes(v2, v1, box)
    assert np.array_equal(v1, v1_before) and np.array_equal(v2, v2_before)  # inputs untouched
    x0, y0, x1, y1 = box.astype(int)
    inside = np.zeros((224, 224), bool)
    inside[y0:y1, x0:x1] = True
    assert (anchor[inside] == v1[inside]).all()
    assert (anchor[~inside] == v2[~inside]).all()
    for b in (b1, b2):  # both frames' eye regions are covered
        assert inside[int(b[1]) : int(b[3]), int(b[0]) : int(b[2])].all()
    with pytest.raises(InputError):
        eyes.paste_eyes(v2, v1[:100], box)


def test_box_on_detected_landmarks_of_the_bundled_portrait():
    """On a real face: the box holds the detected eyes, excludes the brows and covers a sensible area."""
    net = official_crop(read_image(SAMPLES / "anne.png"))
    (face,) = get_detector("dlib").detect(net)
    lm = face.landmarks
    x0, y0, x1, y1 = eyes.eye_box(lm)
    assert (lm[36:48, 0] >= x0).all() and (lm[36:48, 0] < x1).all()
    assert (lm[36:48, 1] >= y0).all() and (lm[36:48, 1] < y1).all()
    assert y0 >= lm[17:27, 1].mean()
    d = np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0))
    assert 1.3 * d < x1 - x0 < 2.2 * d and 0.2 * d < y1 - y0 < 0.8 * d
