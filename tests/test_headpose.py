"""The landmark head-pose estimator: known poses recovered, mirror symmetry, real landmarks."""

import numpy as np
import pytest

from pdfgc_core.errors import InputError
from pdfgc_core.faces.headpose import (
    estimate_head_pose,
    estimate_head_poses,
    euler_to_rotation,
    project,
    rotation_to_euler,
)

W, H = 640, 480


@pytest.mark.parametrize("angles", [(0, 0, 0), (10, -20, 5), (-15, 30, -8), (25, 5, 12), (-5, -35, -15)])
def test_recovers_planted_pose(angles):
    t = np.array([20.0, -10.0, 2500.0])
    est = estimate_head_pose(project(angles, t, W, H), W, H)
    np.testing.assert_allclose(est.angles, angles, atol=0.05)
    np.testing.assert_allclose(est.translation, t, rtol=1e-3, atol=0.5)
    assert est.reprojection_error < 1e-3


def test_euler_round_trip():
    rng = np.random.default_rng(0)
    for a in rng.uniform(-60, 60, size=(50, 3)):
        np.testing.assert_allclose(rotation_to_euler(euler_to_rotation(a)), a, atol=1e-9)


def test_mirror_flips_yaw_roll_and_x():
    angles, t = (8.0, 22.0, 9.0), np.array([40.0, 15.0, 2400.0])
    pts = project(angles, t, W, H)
    mirrored = pts.copy()
    mirrored[:, 0] = W - pts[:, 0]  # mirror the picture ...
    mirrored = mirrored[[0, 1, 3, 2, 5, 4]]  # ... then image-left points are the old image-right ones
    est = estimate_head_pose(mirrored, W, H)
    np.testing.assert_allclose(est.angles, [angles[0], -angles[1], -angles[2]], atol=0.05)
    assert est.translation[0] == pytest.approx(-t[0], abs=0.5)


def test_sequence_with_missing_faces_and_bad_input():
    good = np.zeros((68, 2))
    good[[30, 8, 36, 45, 48, 54]] = project((0, 10, 0), (0, 0, 2500), W, H)
    seq = np.stack([good, np.full((68, 2), np.nan), good])
    out = estimate_head_poses(seq, W, H)
    assert out.shape == (3, 6) and np.isnan(out[1]).all()
    assert out[0, 1] == pytest.approx(10, abs=0.05)
    with pytest.raises(InputError, match="landmarks"):
        estimate_head_pose(np.zeros((5, 2)), W, H)
    with pytest.raises(InputError, match="NaN"):
        estimate_head_pose(np.full((68, 2), np.nan), W, H)


def test_real_portrait_and_its_mirror():
    """dlib landmarks of the bundled frontal portrait: small angles; the mirrored picture flips yaw and roll."""
    from conftest import SAMPLES

    from pdfgc_core.faces import get_detector
    from pdfgc_core.images import read_image

    rgb = read_image(SAMPLES / "anne.png")
    det = get_detector("dlib")
    h, w = rgb.shape[:2]
    a = estimate_head_pose(det.detect(rgb)[0].landmarks, w, h)
    b = estimate_head_pose(det.detect(np.ascontiguousarray(rgb[:, ::-1]))[0].landmarks, w, h)
    assert np.abs(a.angles).max() < 25 and a.reprojection_error < 0.05 * w
    assert abs(a.angles[0] - b.angles[0]) < 3  # pitch unchanged
    assert abs(a.angles[1] + b.angles[1]) < 3 and abs(a.angles[2] + b.angles[2]) < 3
