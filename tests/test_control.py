"""Control without driving videos (pdfgc_core.control, nodes/control.py, the CLI's control commands):
idle blinks and head sway, pose from angles / keyframes / readout, the pose-map fit, the motion-
embedding export and its two face alignments, and the optional mouth head of the motion network."""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pdfgc_core import images, media
from pdfgc_core.control import export, idle, pose
from pdfgc_core.errors import FaceNotFoundError, InputError, MediaError
from pdfgc_core.faces import Face, LandmarkDetector
from pdfgc_core.factors import EYE_BLINK_DIMS, EYE_GAZE_DIMS, Factor

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"


# ------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models():
    from pdfgc_synthetic import synthetic_checkpoint

    from pdfgc_core.checkpoints import load_models

    return load_models(synthetic_checkpoint())


@pytest.fixture(scope="module")
def engine(models):
    from pdfgc_core.engine import Engine

    return Engine(models, precision="fp32")


def planted_eye(n: int = 60, start: int = 20, seed: int = 0) -> Factor:
    """An eye factor resting at fixed values with small noise, one 9-frame blink at ``start``."""
    rng = np.random.default_rng(seed)
    rest = np.array([0.5, -0.3, 0.2, -0.1, 0.4, 0.1])
    v = rest + 0.01 * rng.standard_normal((n, 6))
    closed = np.array([2.0, 1.5, 0.2, -0.1, -1.2, 1.8])
    s = np.sin(np.linspace(0, np.pi, 9))[:, None]
    v[start : start + 9, list(EYE_BLINK_DIMS)] = (rest + s * (closed - rest))[:, list(EYE_BLINK_DIMS)]
    return Factor("eye", v.astype(np.float32))


# ----------------------------------------------------------------------------------------- blinks


@pytest.mark.parametrize("rate", [6.0, 17.0, 30.0])
def test_blink_times_match_the_rate_over_a_seed_sweep(rate):
    seconds, seeds, gap = 120.0, 400, 0.7
    runs = [idle.blink_times(seconds, rate, seed, gap=gap) for seed in range(seeds)]
    counts = np.array([len(t) for t in runs])
    expected = rate * seconds / 60
    assert abs(counts.mean() - expected) < 4 * counts.std() / np.sqrt(seeds) + 1e-9, (counts.mean(), expected)
    intervals = np.concatenate([np.diff(t) for t in runs])
    assert intervals.min() >= gap - 1e-12
    assert all((t >= 0).all() and (t < seconds).all() and (np.diff(t) > 0).all() for t in runs)
    # one long run: the mean interval is 60/rate, and beyond the gap the intervals are exponential
    long = idle.blink_times(40_000, rate, 1, gap=gap)
    iv = np.diff(long)
    assert abs(iv.mean() - 60 / rate) < 0.03 * 60 / rate
    excess = iv - gap
    assert abs(np.median(excess) / excess.mean() - np.log(2)) < 0.05


def test_blink_times_are_deterministic_and_checked():
    a, b = idle.blink_times(60, 17, 5), idle.blink_times(60, 17, 5)
    assert np.array_equal(a, b) and not np.array_equal(a, idle.blink_times(60, 17, 6))
    assert len(idle.blink_times(60, 0, 1)) == 0
    with pytest.raises(InputError, match="lower the rate"):
        idle.blink_times(60, 120, 0, gap=0.7)
    for bad in (-1.0, float("nan")):
        with pytest.raises(InputError):
            idle.blink_times(60, bad, 0)
    with pytest.raises(InputError, match="seed"):
        idle.blink_times(60, 17, -1)


def test_blink_shape_is_found_in_an_eye_factor():
    eye = planted_eye(start=20)
    shape = idle.blink_shape(eye)
    v = eye.values.double().numpy()
    dims = list(EYE_BLINK_DIMS)
    assert len(shape.curve) >= 9 + 2 and shape.fps == eye.fps
    assert np.allclose(shape.curve[[0, -1]][:, dims], shape.rest[dims])  # starts and ends open
    assert np.allclose(shape.curve[:, list(EYE_GAZE_DIMS)], shape.rest[list(EYE_GAZE_DIMS)])
    peak = np.argmax(np.linalg.norm(shape.curve[:, dims] - shape.rest[dims], axis=1))
    assert np.allclose(shape.curve[peak, dims], v[24, dims])  # the most closed frame of the planted blink
    assert np.allclose(shape.rest, np.delete(v, range(18, 31), 0).mean(0), atol=0.01)
    given = idle.blink_shape(eye, (19, 30))
    assert np.allclose(given.curve[1:-1, dims], v[19:30, dims])
    with pytest.raises(InputError, match="no clear blink"):
        idle.blink_shape(Factor("eye", np.tile(v[:1], (40, 1)) + 0.01 * np.random.default_rng(1).random((40, 6))))
    with pytest.raises(InputError, match="eye factor"):
        idle.blink_shape(Factor("pose", v))
    with pytest.raises(InputError, match="blink frames"):
        idle.blink_shape(eye, (10, 11))


def test_idle_blinks_stay_in_the_source_range_and_blink_where_scheduled():
    eye = planted_eye()
    shape = idle.blink_shape(eye)
    lo, hi = eye.values.double().numpy().min(0), eye.values.double().numpy().max(0)
    dims = list(EYE_BLINK_DIMS)
    total = 0
    for seed in range(25):
        track = idle.idle_blinks(1500, shape, rate=20, seed=seed, duration=1.3, depth=1.0)
        v = track.factor.values.double().numpy()
        assert track.factor.kind == "eye" and v.shape == (1500, 6)
        assert (v >= lo - 1e-5).all() and (v <= hi + 1e-5).all(), "a blink left the source's range"
        assert np.allclose(v[:, list(EYE_GAZE_DIMS)], shape.rest[list(EYE_GAZE_DIMS)], atol=1e-6)
        moving = np.linalg.norm(v[:, dims] - shape.rest[dims], axis=1) > 1e-4
        # the frames that move are exactly the scheduled blinks, which never overlap
        expected = np.zeros(1500, bool)
        for s, k in zip(track.starts, track.frames):
            assert not expected[s : s + k].any()
            expected[s + 1 : s + k - 1] = True
        assert not (moving & ~expected).any() and moving[expected].mean() > 0.9
        assert ((track.depth >= 0.8) & (track.depth <= 1.0)).all()
        total += len(track.starts)
    assert abs(total / 25 - 20 * 60 / 60) < 3  # 1500 frames = 60 s at 25 fps
    assert idle.idle_blinks(100, shape, rate=0).starts.size == 0
    a = idle.idle_blinks(300, shape, seed=3).factor.values
    assert torch.equal(a, idle.idle_blinks(300, shape, seed=3).factor.values)
    with pytest.raises(InputError, match="depth"):
        idle.idle_blinks(100, shape, depth=1.5)
    with pytest.raises(InputError, match="implausible"):
        idle.idle_blinks(100, shape, rate=90)


def test_the_sample_eye_video_blinks_where_declared():
    """SAMPLE_BLINK is checked with dlib's eye aspect ratio on the bundled frames."""
    from pdfgc_core.faces import get_detector

    det = get_detector("dlib")
    frames = media.read_frames(idle.SAMPLE_EYE, stop=idle.SAMPLE_FRAMES["eye"].stop)

    def ear(lm):
        out = []
        for s in (slice(36, 42), slice(42, 48)):
            p = lm[s]
            out.append((np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2 * np.linalg.norm(p[0] - p[3])))
        return np.mean(out)

    e = np.array([ear(det.detect(f)[0].landmarks) for f in frames])
    a, b = idle.SAMPLE_BLINK
    assert a <= int(np.argmin(e)) < b and e.min() < 0.6 * np.median(e[b:])
    assert e[a] > 0.8 * np.median(e[b:]) and e[b - 1] > 0.8 * np.median(e[b:])  # open at both ends
    assert (e[b:] > 0.8 * np.median(e[b:])).all()


# ------------------------------------------------------------------------------------------- sway


def test_head_sway_follows_the_reference_and_the_speech():
    rng = np.random.default_rng(0)
    ref = np.zeros((80, 6))
    ref[:, 1] = rng.standard_normal(80) * 0.3 + 0.5  # only dim 1 moves in the reference
    reference = Factor("pose", ref.astype(np.float32))
    s = idle.head_sway(1000, reference, amplitude=1.0, seed=1)
    v = s.values.double().numpy()
    assert np.abs(np.delete(v, 1, 1)).max() < 1e-6 and v[:, 1].std() > 0.1
    assert abs(v[:, 1].mean()) < 0.15  # center "zero"
    assert np.abs(np.diff(v[:, 1])).max() < 0.1 * v[:, 1].std() * 2  # smooth at 25 fps
    around = idle.head_sway(1000, reference, seed=1, center="reference").values.double().numpy()
    assert np.allclose(around - v, ref.mean(0), atol=1e-5)
    assert torch.equal(s.values, idle.head_sway(1000, reference, seed=1).values)
    assert not torch.equal(s.values, idle.head_sway(1000, reference, seed=2).values)
    assert float(idle.head_sway(100, reference, amplitude=0.0).values.abs().max()) == 0
    env = np.zeros(1000, np.float32)
    env[500:] = 1
    loud = idle.head_sway(1000, reference, seed=1, envelope=env, liveliness=1.0).values.double().numpy()
    assert np.allclose(loud[:500], v[:500], atol=1e-6) and np.allclose(loud[500:], 2 * v[500:], atol=1e-5)
    with pytest.raises(InputError, match="half the frame rate"):
        idle.head_sway(100, reference, speed=20.0)
    with pytest.raises(InputError, match="envelope"):
        idle.head_sway(100, reference, envelope=np.zeros(5))


def test_speech_envelope():
    sr, fps = 16000, 25.0
    t = np.arange(3 * sr) / sr
    wave = np.zeros_like(t)
    wave[sr : 2 * sr] = 0.3 * np.sin(2 * np.pi * 200 * t[:sr])  # one second of tone in silence
    env = idle.speech_envelope(wave[None], sr, 75, fps)
    assert env.shape == (75,) and env.dtype == np.float32 and 0 <= env.min() and env.max() <= 1
    times = np.arange(75) / fps + 0.08  # the lips' audio lead
    assert env[(times > 1.35) & (times < 1.65)].min() > 0.8
    assert env[times < 0.5].max() < 0.05 and env[times > 2.6].max() < 0.05
    assert idle.speech_envelope(np.zeros(sr), sr, 10).max() == 0  # silence: not lively


# ------------------------------------------------------------------------------------ pose controls


def test_keyframes_interpolate_exactly_at_the_keys():
    text = "# a nod and a turn\n0: 0,0,0; 1s: 10, -5, 2.5 ease\n2s: -4,7.25,0, 0.05,-0.02,0.1 ease_in; 60f: 3,3,3 step"
    keys = pose.parse_keyframes(text, 25.0)
    assert [k.frame for k in keys] == [0, 25, 50, 60]
    assert [k.curve for k in keys] == [None, "ease", "ease_in", "step"]
    c = pose.keyframe_controls(keys, length=80, curve="linear")
    assert c.shape == (80, 6)
    for k in keys:
        assert np.array_equal(c[k.frame], np.array(k.values)), k
    assert np.array_equal(c[60:], np.tile(keys[-1].values, (20, 1)))
    assert np.array_equal(c[51:60], np.tile(keys[2].values, (9, 1)))  # step holds until the key
    # ease is symmetric about the middle of its segment, ease_in starts slowly
    assert abs((c[12, 0] + c[13, 0]) / 2 - 5.0) < 0.5
    lin = pose.keyframe_controls(pose.parse_keyframes("0: 0,0,0; 25: 10,0,0"), curve="linear")
    ease_in = pose.keyframe_controls(pose.parse_keyframes("0: 0,0,0; 25: 10,0,0 ease_in"))
    assert (ease_in[1:25, 0] < lin[1:25, 0]).all() and lin.shape == (26, 6)
    assert np.allclose(lin[:, 0], np.arange(26) * 10 / 25)
    assert pose.parse_keyframes("2.5s: 1,2,3", fps=25)[0].frame == 63  # seconds round to the nearest frame
    assert np.array_equal(
        pose.keyframe_controls(pose.parse_keyframes("5: 1,2,3"), length=3), np.tile([1, 2, 3, 0, 0, 0], (3, 1))
    )


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "none given"),
        ("0 0,0,0", "expected 'TIME"),
        ("x: 0,0,0", "not a frame number"),
        ("1.5: 0,0,0", "not a whole number"),
        ("0: 1,2", "give 3"),
        ("0: 1,2,3,4", "give 3"),
        ("0: a,b,c", "not numbers"),
        ("0: 1,2,3 wobble", "not numbers"),
        ("0: 1,2,3; 0s: 1,1,1", "two keys fall on frame 0"),
        ("0: nan,0,0", "finite"),
    ],
)
def test_bad_keyframes_are_explained(text, match):
    with pytest.raises(InputError, match=match):
        pose.parse_keyframes(text, 25.0)


def random_map(seed: int = 0) -> pose.PoseMap:
    rng = np.random.default_rng(seed)
    return pose.PoseMap(rng.normal(size=(6, 6)) + 3 * np.eye(6), rng.normal(size=6), calibrated=True)


def random_controls(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.uniform(-30, 30, (n, 3)), rng.normal(0, 0.05, (n, 3))], 1)


@pytest.mark.parametrize("pose_map", [pose.assumed_pose_map(), random_map()], ids=["assumed", "calibrated"])
def test_angles_to_factor_to_readout_round_trips(pose_map):
    c = random_controls(200)
    f = pose_map.to_factor(c, fps=30.0)
    assert f.kind == "pose" and f.fps == 30.0 and f.values.shape == (200, 6) and f.values.dtype == torch.float32
    back = pose_map.readout(f)
    assert np.abs(back[:, :3] - c[:, :3]).max() < 1e-3  # degrees, float32 factor
    assert np.abs(back[:, 3:] - c[:, 3:]).max() < 1e-5
    if not pose_map.calibrated:  # the assumption: factor = (pitch, yaw, roll in radians, x, y, z)
        assert np.allclose(f.values.double().numpy(), np.concatenate([np.radians(c[:, :3]), c[:, 3:]], 1), atol=1e-6)
        assert "ASSUMED" in pose.ASSUMPTION.upper() and pose_map.describe() == pose.ASSUMPTION


def test_fit_recovers_a_planted_linear_map():
    truth = random_map(3)
    c = random_controls(400, seed=4)
    f = truth.to_factor(c).values.double().numpy() + np.random.default_rng(5).normal(0, 1e-4, (400, 6))
    fit = pose.fit_pose_map(c, f, source="planted")
    assert np.abs(fit.matrix - truth.matrix).max() < 5e-3 and np.abs(fit.bias - truth.bias).max() < 5e-4
    assert fit.calibrated and fit.info["frames"] == 400 and fit.info["source"] == "planted"
    assert min(fit.info["r2"].values()) > 0.999 and min(fit.info["r2_factor"]) > 0.999
    # an axis that never varies is reported and gets no weight
    c2 = c.copy()
    c2[:, 5] = 0.3
    fit2 = pose.fit_pose_map(c2, truth.to_factor(c2).values)
    assert fit2.info["unobserved"] == ["z"] and np.abs(fit2.matrix[:, 5]).max() == 0 and fit2.info["r2"]["z"] is None
    with pytest.raises(InputError, match="at least 8"):
        pose.fit_pose_map(c[:5], f[:5])


def test_mirror_test_flags_a_wrong_sign():
    truth = random_map(7)
    c = random_controls(300, seed=8)
    f, mirrored = truth.to_factor(c), truth.to_factor(c * pose.MIRROR_SIGNS)
    res = pose.mirror_test(truth, f, mirrored)
    assert all(r["ok"] for r in res.values()) and res["yaw"]["expected"] == "flips"
    assert res["yaw"]["slope"] == pytest.approx(-1, abs=1e-3) and res["pitch"]["slope"] == pytest.approx(1, abs=1e-3)
    unflipped = pose.mirror_test(truth, f, f)  # a pose head that ignores mirroring fails yaw, roll, x
    assert [a for a, r in unflipped.items() if not r["ok"]] == ["yaw", "roll", "x"]


def test_pose_map_files(tmp_path):
    fit = pose.fit_pose_map(random_controls(50), random_map().to_factor(random_controls(50)).values, source="s")
    path = fit.save(tmp_path / "maps" / "m.json")
    back = pose.PoseMap.load(path)
    assert np.array_equal(back.matrix, fit.matrix) and np.array_equal(back.bias, fit.bias) and back.calibrated
    assert back.info["r2"] == fit.info["r2"] and "calibrated pose map from s" in back.describe()
    assert pose.as_pose_map(str(path)).calibrated and not pose.as_pose_map(None).calibrated
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(MediaError, match="not readable JSON"):
        pose.PoseMap.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something"}))
    with pytest.raises(InputError, match="not a PD-FGC pose map"):
        pose.PoseMap.load(tmp_path / "other.json")
    d = fit.to_dict()
    d["matrix"] = [[1, 2]]
    (tmp_path / "shape.json").write_text(json.dumps(d))
    with pytest.raises(InputError, match="6x6"):
        pose.PoseMap.load(tmp_path / "shape.json")
    with pytest.raises(MediaError, match="does not exist"):
        pose.PoseMap.load(tmp_path / "missing.json")


def test_controls_from_the_landmark_estimator():
    from pdfgc_core.faces.headpose import POSE_LANDMARKS, estimate_head_poses, project

    w = h = 224
    z_ref = 450.0 / pose.REFERENCE_EYE_SPAN
    for angles, t in [((0, 0, 0), (0, 0, z_ref)), ((8, -12, 5), (60, -30, 1.3 * z_ref))]:
        lm = np.zeros((1, 68, 2))
        lm[0, list(POSE_LANDMARKS)] = project(angles, t, w, h)
        c = pose.controls_from_head_pose(estimate_head_poses(lm, w, h))[0]
        assert np.allclose(c[:3], angles, atol=0.05)
        assert c[3] == pytest.approx(t[0] / t[2], abs=1e-3) and c[4] == pytest.approx(t[1] / t[2], abs=1e-3)
        assert c[5] == pytest.approx(np.log(z_ref / t[2]), abs=1e-3)


def test_estimate_controls_on_real_frames_and_the_mirror():
    anne = images.read_image(SAMPLES / "anne.png")
    frames = np.stack([anne, np.ascontiguousarray(anne[:, ::-1]), np.zeros_like(anne)])
    c, detected = pose.estimate_controls(frames, "dlib")
    assert detected.tolist() == [True, True, False] and np.allclose(c[2], c[1])  # no face: held from neighbour
    assert np.allclose(c[1] * pose.MIRROR_SIGNS, c[0], atol=np.array([3, 3, 3, 0.02, 0.02, 0.05]))
    with pytest.raises(FaceNotFoundError):
        pose.estimate_controls(np.zeros((2, 224, 224, 3), np.uint8), "dlib")


def test_plot_and_csv():
    c = random_controls(40)
    from pdfgc_core.control import controls_csv, plot_controls

    img = plot_controls(c, 25.0, "title")
    assert img.shape == (420, 640, 3) and img.dtype == np.uint8 and img.std() > 5

    lines = controls_csv(c, 25.0).splitlines()
    assert lines[0] == "frame,seconds,pitch,yaw,roll,x,y,z" and len(lines) == 41
    assert np.allclose([float(v) for v in lines[2].split(",")[2:]], c[1], rtol=1e-5)


# ------------------------------------------------------------------------------------- alignments


class DotDetector(LandmarkDetector):
    """A landmark detector for pictures of white dots: returns 68 landmarks whose alignment points
    (eye centres, nose tip, mouth corners, inner-mouth centre) are the planted ones."""

    name = "planted"
    pre_aligned = False

    def __init__(self, points5: np.ndarray):
        self.points5 = points5

    def detect(self, rgb):
        p = self.points5
        lm = np.zeros((68, 2))
        lm[36:42], lm[42:48], lm[30], lm[48], lm[54] = p[0], p[1], p[2], p[3], p[4]
        lm[60:68] = (p[3] + p[4]) / 2  # inner mouth centre between the corners
        x0, y0 = p.min(0) - 40
        x1, y1 = p.max(0) + 40
        return [Face(lm, (x0, y0, x1, y1), 1.0)]


def dot_picture(points: np.ndarray, size=(480, 640)) -> np.ndarray:
    img = np.zeros((*size, 3), np.uint8)
    for x, y in points:
        cv2.circle(img, (int(round(x * 16)), int(round(y * 16))), 3 * 16, (255, 255, 255), -1, cv2.LINE_AA, shift=4)
    return img


def dot_centres(img: np.ndarray) -> np.ndarray:
    g = img[..., 0].astype(np.float64)
    n, labels = cv2.connectedComponents((g > 40).astype(np.uint8))
    out = []
    for k in range(1, n):
        ys, xs = np.nonzero(labels == k)
        w = g[ys, xs]
        out.append([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])
    return np.array(out)


@pytest.mark.parametrize("alignment", export.ALIGNMENTS)
def test_alignment_places_planted_points_on_the_template(alignment):
    """Pictures of white dots at a random similarity of the convention's points (its template in the
    source frame); after alignment the dots are found within 4 px of the template."""
    from pdfgc_core.faces import TEMPLATE

    rng = np.random.default_rng(2)
    base = TEMPLATE if alignment == "official" else export.FIVE_POINT_TEMPLATE
    for _ in range(3):
        a, s = np.radians(rng.uniform(-25, 25)), rng.uniform(1.2, 1.9)
        rot = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        src = base @ rot.T + rng.uniform([150, 80], [350, 200])
        if alignment == "official":  # eyes and inner-mouth centre; mouth corners either side of it
            d = rot @ np.array([12.0, 0.0])
            pts5 = np.stack([src[0], src[1], (src[0] + src[1]) / 2 + rot @ [0, 30.0], src[2] - d, src[2] + d])
        else:
            pts5 = src
        aligned = export.align_for_export(dot_picture(src), alignment, DotDetector(pts5), mode="image")
        target = export.template_points(alignment)
        mapped = src @ aligned.matrices[0][:, :2].T + aligned.matrices[0][:, 2]
        assert np.abs(mapped - target).max() < 1e-6  # the planted points are an exact similarity of it
        found = dot_centres(aligned.images[0])
        assert len(found) == len(target)
        d = np.linalg.norm(found[:, None] - target[None], axis=2)
        assert d.min(0).max() < 4.0, (alignment, d.min(0))


@pytest.mark.parametrize("alignment", export.ALIGNMENTS)
def test_alignment_of_a_real_face_within_4_px(alignment):
    """The bundled portrait placed rotated, scaled and shifted in a larger frame: after alignment,
    dlib finds the convention's points within 4 px of its template."""
    from pdfgc_core.faces import get_detector, template_points

    det = get_detector("dlib")
    anne = images.read_image(SAMPLES / "anne.png")
    frames = []
    for angle, scale, cx, cy in [(0, 1.5, 320, 240), (12, 1.8, 300, 260), (-15, 1.3, 350, 220)]:
        m = cv2.getRotationMatrix2D((112, 112), angle, scale)
        m[:, 2] += (cx - 112, cy - 112)
        frames.append(cv2.warpAffine(anne, m, (640, 480), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT))
    aligned = export.align_for_export(np.stack(frames), alignment, det, mode="image")
    assert aligned.images.shape == (3, 224, 224, 3) and aligned.detected.all()
    target = export.template_points(alignment)
    for im in aligned.images:
        lm = det.detect(im)[0].landmarks
        got = template_points(lm) if alignment == "official" else export.five_points(lm)
        assert np.linalg.norm(got - target, axis=1).max() < 4.0


def test_five_point_needs_landmarks_and_a_face():
    with pytest.raises(InputError, match="five_point alignment detects landmarks"):
        export.align_for_export(np.zeros((224, 224, 3), np.uint8), "five_point", "pre-aligned")
    with pytest.raises(FaceNotFoundError):
        export.align_for_export(np.zeros((2, 224, 224, 3), np.uint8), "five_point", "dlib")
    with pytest.raises(InputError, match="alignment"):
        export.align_for_export(np.zeros((224, 224, 3), np.uint8), "nine_point", "dlib")


# ------------------------------------------------------------------------------------------ export


@pytest.mark.slow  # inner loop: under 3 minutes (tests/README.md)
def test_the_optional_mouth_head_of_the_motion_network(models):
    from pdfgc_core.checkpoints.models import LoadReport
    from pdfgc_core.checkpoints.validate import _load_network
    from pdfgc_core.networks import is_unused_checkpoint_key, optional_checkpoint_prefixes

    sd = models.motion.state_dict()
    assert models.motion.has_mouth_head
    assert sd["to_mouth.0.weight"].shape == (512, 512) and sd["mouth_embed.1.weight"].shape == (500, 512)
    prefixes = optional_checkpoint_prefixes("motion")
    assert prefixes and all(is_unused_checkpoint_key("motion", p + "x") for p in prefixes)
    assert optional_checkpoint_prefixes("generator") == ()
    report = LoadReport()
    full = _load_network("motion", "full", dict(sd), report)
    assert full.has_mouth_head and "loaded the optional head (mouth_embed, to_mouth)" in report.info[-1]
    without = {k: v for k, v in sd.items() if not k.startswith(prefixes)}
    report = LoadReport()
    bare = _load_network("motion", "bare", without, report)
    assert not bare.has_mouth_head and not report.warnings
    with pytest.raises(InputError, match="no mouth head"):
        bare.mouth_feature(torch.zeros(1, 512))
    partial = dict(sd)
    del partial["mouth_embed.1.bias"]
    report = LoadReport()
    assert not _load_network("motion", "partial", partial, report).has_mouth_head
    assert "incomplete or damaged" in report.warnings[0] and "mouth_embed.1.bias" in report.warnings[0]
    broken = dict(sd, **{"to_mouth.0.bias": torch.full((512,), float("nan"))})
    report = LoadReport()
    assert not _load_network("motion", "nan", broken, report).has_mouth_head and report.warnings
    x = torch.randn(2, 3, 224, 224).clamp(-1, 1)  # the heads that rendering uses are unchanged
    assert torch.equal(full(x)["pose"], bare(x)["pose"])


@pytest.fixture(scope="module")
def exported(engine):
    frames = media.read_frames(SAMPLES / "drivers" / "pose", stop=2)
    return frames, export.export_motion(engine, frames, "official", "pre-aligned", fps=25.0)


def test_export_layouts_equal_the_raw_heads_and_the_negative_the_all_minus_one_input(engine, exported):
    frames, emb = exported
    net = engine.models.motion
    x = images.prepare_batch(frames, crop="official")
    with torch.inference_mode():
        feat = net.features(x)
        mouth = net.to_mouth(feat)
        raw = {
            "pose": net.headpose_embed(net.to_headpose(feat)),
            "eye": net.eye_embed(net.to_eye(feat)),
            "expression": net.emo_embed(net.to_emo(feat)),
            "mouth_feature": mouth,
            "lip": net.mouth_embed(mouth),
        }
        nfeat = net.features(torch.full((1, 3, 224, 224), -1.0))
        neg_mouth = net.to_mouth(nfeat)
        neg = {"eye": net.eye_embed(net.to_eye(nfeat)), "expression": net.emo_embed(net.to_emo(nfeat))}
        neg["pose"], neg["mouth_feature"] = net.headpose_embed(net.to_headpose(nfeat)), neg_mouth
    assert emb.num_frames == 2 and emb.alignment == "official"
    for h, d in export.HEADS.items():
        assert emb.heads[h].shape == (2, d) and torch.allclose(emb.heads[h], raw[h], atol=1e-5), h
    fp = emb.layout("fantasyportrait_554")
    assert fp.shape == (2, 554)
    assert torch.equal(fp[:, :6], emb.heads["pose"]) and torch.equal(fp[:, 6:12], emb.heads["eye"])
    assert torch.equal(fp[:, 12:42], emb.heads["expression"]) and torch.equal(fp[:, 42:], emb.heads["mouth_feature"])
    for name in ("portrait4d_548", "hellomeme_548"):
        lay = emb.layout(name)
        assert lay.shape == (2, 548) and torch.equal(lay, fp[:, 6:])
        assert export.layout_dim(name) == 548
    n = emb.negative_layout("hellomeme_548")
    assert n.shape == (1, 548)
    expected = torch.cat([neg["eye"], neg["expression"], neg["mouth_feature"]], 1)
    assert torch.allclose(n, expected, atol=1e-5)
    assert torch.allclose(emb.negative_layout("fantasyportrait_554")[:, :6], neg["pose"], atol=1e-5)
    with pytest.raises(InputError, match="layout"):
        emb.layout("liveportrait_1")


def test_export_files(exported, tmp_path):
    from safetensors import safe_open

    _, emb = exported
    path = export.save_embedding(emb, tmp_path / "clip.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        meta, keys = fh.metadata(), set(fh.keys())
        assert torch.equal(fh.get_tensor("fantasyportrait_554"), emb.layout("fantasyportrait_554"))
        assert torch.equal(fh.get_tensor("negative.portrait4d_548"), emb.negative_layout("portrait4d_548"))
    assert meta["alignment"] == "official" and meta["format"] == export.FILE_FORMAT and meta["frames"] == "2"
    assert np.allclose(json.loads(meta["alignment_template_224"]), export.template_points("official"), atol=1e-3)
    assert json.loads(meta["layouts"])["fantasyportrait_554"] == ["pose", "eye", "expression", "mouth_feature"]
    assert meta["source.synthetic"] == "true" and meta["source.landmarks"] == "pre-aligned"
    assert set(export.HEADS) | set(export.LAYOUTS) <= keys
    back = export.load_embedding(path)
    assert back.alignment == "official" and all(torch.equal(back.heads[h], emb.heads[h]) for h in export.HEADS)
    files = export.save_embedding_npy(emb, tmp_path / "npy", "hellomeme_548")
    assert [f.name for f in files] == ["frame_000000.npy", "frame_000001.npy", "negative.npy", "embedding.json"]
    assert np.array_equal(np.load(files[1]), emb.layout("hellomeme_548")[1].numpy())
    assert np.load(files[2]).shape == (548,)
    info = json.loads(files[3].read_text())
    assert info["order"] == ["eye", "expression", "mouth_feature"] and info["alignment"] == "official"
    (tmp_path / "f.safetensors").write_bytes(b"garbage")
    with pytest.raises(MediaError):
        export.load_embedding(tmp_path / "f.safetensors")


# ------------------------------------------------------------------------------------------- nodes

INTERFACE = {
    "PDFGC_IdleBlinks": (
        ["model", "length", "fps", "rate", "seed", "duration", "depth"],
        ["eye"],
        ["eye", "blink_count"],
    ),
    "PDFGC_HeadSway": (
        ["model", "length", "fps", "amplitude", "speed", "seed", "center", "liveliness"],
        ["reference", "audio", "base"],
        ["pose"],
    ),
    "PDFGC_PoseFromAngles": (
        ["pitch", "yaw", "roll", "x", "y", "z", "length", "fps", "keyframes", "curve"],
        ["pose_map"],
        ["pose", "frame_count"],
    ),
    "PDFGC_PoseReadout": (["pose"], ["pose_map"], ["plot", "angles"]),
    "PDFGC_EstimateHeadPose": (["images", "landmarks", "fps"], ["pose_map"], ["pose", "plot", "angles"]),
    "PDFGC_LoadPoseMap": (["file"], [], ["pose_map", "info"]),
    "PDFGC_CalibratePose": (["model", "images", "landmarks", "crop", "filename_prefix"], [], ["pose_map", "report"]),
    "PDFGC_MotionEmbedding": (
        ["model", "images", "alignment", "landmarks", "mode", "fps"],
        [],
        ["embedding", "frame_count"],
    ),
    "PDFGC_SaveMotionEmbedding": (["embedding", "filename_prefix", "npy_layout"], [], ["file"]),
}


def control_nodes():
    from nodes import control

    return control


def test_control_node_interface_and_metadata():
    import nodes

    control = control_nodes()
    assert set(control.NODE_CLASS_MAPPINGS) == set(INTERFACE) == set(control.NODE_DISPLAY_NAME_MAPPINGS)
    docs = (REPO / "nodes" / "NODES.md").read_text() + (REPO / "README.md").read_text()
    for name, cls in control.NODE_CLASS_MAPPINGS.items():
        assert nodes.NODE_CLASS_MAPPINGS[name] is cls and f"`{name}`" in docs
        spec = cls.INPUT_TYPES()
        got = (list(spec.get("required", {})), list(spec.get("optional", {})), list(cls.RETURN_NAMES))
        assert got == tuple(INTERFACE[name]), f"{name}: {got}"
        assert cls.CATEGORY.startswith("PD-FGC/") and len(cls.DESCRIPTION) > 40 and callable(getattr(cls, cls.FUNCTION))
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
        for section in ("required", "optional"):
            for inp, (kind, *opts) in spec.get(section, {}).items():
                opts = opts[0] if opts else {}
                assert opts.get("tooltip"), f"{name}.{inp} has no tooltip"
                if kind in ("INT", "FLOAT"):
                    assert opts["min"] <= opts["default"] <= opts["max"], f"{name}.{inp}"
                elif isinstance(kind, list):
                    assert kind and opts.get("default", kind[0]) in kind
    assert "ASSUMPTION" in control.PDFGC_PoseFromAngles.DESCRIPTION


def test_pose_nodes_equal_the_core():
    control = control_nodes()
    node = control.PDFGC_PoseFromAngles()
    (f, n) = node.run(10.0, -5.0, 2.0, 0.01, 0.0, 0.0, 1, 25.0, "", "ease")
    assert n == 1 and torch.equal(f.values, pose.assumed_pose_map().to_factor([10, -5, 2, 0.01, 0, 0]).values)
    text = "0: 0,0,0; 1s: 10,-5,0"
    (f, n) = node.run(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 25.0, text, "ease")
    keys = pose.parse_keyframes(text, 25.0)
    assert n == 26 and torch.equal(
        f.values, pose.assumed_pose_map().to_factor(pose.keyframe_controls(keys, curve="ease")).values
    )
    with pytest.raises(InputError, match="^PD-FGC Pose from Angles: keyframe 1"):
        node.run(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 25.0, "bad", "ease")
    pm = random_map()
    (f2, _) = node.run(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 25.0, text, "ease", pose_map=pm)
    plot, csv = control.PDFGC_PoseReadout().run(f2, pose_map=pm)
    assert plot.shape == (1, 420, 640, 3) and plot.dtype == torch.float32 and 0 <= float(plot.min())
    rows = np.array([[float(v) for v in line.split(",")[2:]] for line in csv.splitlines()[1:]])
    assert np.allclose(rows, pose.keyframe_controls(keys, curve="ease"), atol=1e-3)
    pm_out, info = control.PDFGC_LoadPoseMap().load(control.ASSUMED)
    assert not pm_out.calibrated and "assumed" in info
    with pytest.raises(InputError, match="Load Pose Map"):
        control.PDFGC_PoseReadout().run(f2, pose_map="not a map")


def test_idle_nodes_with_given_sources_equal_the_core():
    control = control_nodes()
    eye = planted_eye()
    f, count = control.PDFGC_IdleBlinks().run(None, 400, 25.0, 20.0, 7, 1.0, 0.9, eye=eye)
    track = idle.idle_blinks(400, idle.blink_shape(eye), rate=20.0, seed=7, depth=0.9)
    assert torch.equal(f.values, track.factor.values) and count == len(track.starts)
    ref = Factor("pose", np.random.default_rng(0).standard_normal((30, 6)).astype(np.float32))
    sr = 16000
    wave = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 1, 3 * sr)).astype(np.float32) * 0.1)
    base = pose.assumed_pose_map().to_factor([5, 0, 0, 0, 0, 0])
    (p,) = control.PDFGC_HeadSway().run(
        None, 60, 25.0, 0.5, 0.3, 2, "zero", 1.0, reference=ref, audio={"waveform": wave, "sample_rate": sr}, base=base
    )
    env = idle.speech_envelope(wave[0].numpy(), sr, 60, 25.0)
    want = idle.head_sway(60, ref, amplitude=0.5, speed=0.3, seed=2, envelope=env, liveliness=1.0)
    assert torch.equal(p.values, want.values + base.values)
    with pytest.raises(InputError, match="^PD-FGC Idle Blinks: the eye factor shows no clear blink"):
        control.PDFGC_IdleBlinks().run(None, 40, 25.0, 17.0, 0, 1.0, 1.0, eye=Factor("eye", torch.zeros(30, 6)))


def test_estimate_head_pose_node():
    control = control_nodes()
    anne = images.u8_to_comfy(images.read_image(SAMPLES / "anne.png")[None])
    f, plot, csv = control.PDFGC_EstimateHeadPose().run(anne.repeat(2, 1, 1, 1), "dlib", 25.0)
    c, _ = pose.estimate_controls(images.comfy_to_u8(anne), "dlib")
    assert (
        f.kind == "pose" and len(f) == 2 and torch.allclose(f.values[0], pose.assumed_pose_map().to_factor(c).values[0])
    )
    assert plot.shape == (1, 420, 640, 3) and csv.count("\n") == 3


@pytest.fixture
def output_dir(monkeypatch, tmp_path):
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(tmp_path / "models")
    for d in ("models/pdfgc", "input", "output"):
        (tmp_path / d).mkdir(parents=True)
    fp.get_folder_paths = lambda name: [str(tmp_path / "models" / name)]
    fp.get_input_directory = lambda: str(tmp_path / "input")
    fp.get_output_directory = lambda: str(tmp_path / "output")
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    return tmp_path


def test_pose_map_listing_and_loading(output_dir):
    control = control_nodes()
    fit = pose.fit_pose_map(random_controls(30), random_map().to_factor(random_controls(30)).values, source="x")
    fit.save(output_dir / "models" / "pdfgc" / "maps" / "a.json")
    fit.save(output_dir / "output" / "pdfgc" / "b.json")
    (output_dir / "input" / "other.json").write_text("{}")
    choices = control.PDFGC_LoadPoseMap.INPUT_TYPES()["required"]["file"][0]
    assert choices == [control.ASSUMED, "maps/a.json", "pdfgc/b.json [output]"]
    pm, info = control.PDFGC_LoadPoseMap().load("pdfgc/b.json [output]")
    assert pm.calibrated and np.array_equal(pm.matrix, fit.matrix) and "calibrated pose map from x" in info
    with pytest.raises(MediaError, match="was not found"):
        control.PDFGC_LoadPoseMap().load("../secret.json")


def test_motion_embedding_nodes(engine, exported, output_dir):
    from nodes._common import ModelHandle

    control = control_nodes()
    frames, emb = exported
    handle = ModelHandle(engine.models, "synthetic", precision="fp32")
    got, n = control.PDFGC_MotionEmbedding().run(
        handle, images.u8_to_comfy(frames), "official", "pre-aligned", "auto", 25.0
    )
    assert n == 2 and all(torch.equal(got.heads[h], emb.heads[h]) for h in export.HEADS)
    out = control.PDFGC_SaveMotionEmbedding().save(got, "pdfgc/emb", "fantasyportrait_554")
    path = Path(out["result"][0])
    assert path.name == "emb_00001_.safetensors" and path.is_file()
    assert sorted(p.name for p in (path.parent / "emb_00001__fantasyportrait_554").iterdir())[:2] == [
        "embedding.json",
        "frame_000000.npy",
    ]
    again = control.PDFGC_SaveMotionEmbedding().save(got, "pdfgc/emb", "none")
    assert Path(again["result"][0]).name == "emb_00002_.safetensors"
    with pytest.raises(InputError, match="inside the output folder"):
        control.PDFGC_SaveMotionEmbedding().save(got, "../../x", "none")
    with pytest.raises(InputError, match="five_point alignment detects landmarks"):
        control.PDFGC_MotionEmbedding().run(
            handle, images.u8_to_comfy(frames), "five_point", "pre-aligned", "auto", 25.0
        )


# --------------------------------------------------------------------------------------- CLI (slow)


def run_cli(*argv) -> int:
    from pdfgc_core.cli import main

    return main([str(a) for a in argv])


@pytest.mark.slow
def test_cli_calibrate_pose_on_the_bundled_pose_driver(tmp_path, capsys, monkeypatch):
    from pdfgc_synthetic import synthetic_checkpoint

    monkeypatch.setenv("PDFGC_CHECKPOINT", str(synthetic_checkpoint()))
    out = tmp_path / "map.json"
    assert run_cli("calibrate-pose", SAMPLES / "drivers" / "pose", "--max-frames", 16, "--out", out) == 0
    text = capsys.readouterr().out
    assert "R^2 per axis" in text and "mirror test" in text and "SYNTHETIC" in text
    pm = pose.PoseMap.load(out)
    assert pm.calibrated and pm.info["frames"] == 16 and set(pm.info["mirror"]) == set(pose.AXES)
    assert pm.info["frames_without_face"] == 0


@pytest.mark.slow
def test_cli_export_motion(tmp_path, monkeypatch, capsys):
    from pdfgc_synthetic import synthetic_checkpoint

    monkeypatch.setenv("PDFGC_CHECKPOINT", str(synthetic_checkpoint()))
    out = tmp_path / "e.safetensors"
    args = ["export-motion", SAMPLES / "drivers" / "eye", "--alignment", "five_point", "--max-frames", 3]
    assert run_cli(*args, "--out", out, "--npy", tmp_path / "npy", "--layout", "portrait4d_548") == 0
    emb = export.load_embedding(out)
    assert emb.num_frames == 3 and emb.alignment == "five_point" and emb.meta["landmarks"] == "dlib"
    assert len(list((tmp_path / "npy").glob("frame_*.npy"))) == 3
    assert run_cli("export-motion", SAMPLES / "anne.png", "--alignment", "official", "--landmarks", "pre-aligned",
                   "--out", tmp_path / "one.safetensors") == 0  # fmt: skip
    err = capsys.readouterr().err
    assert (
        run_cli("export-motion", SAMPLES / "anne.png", "--alignment", "five_point", "--landmarks", "pre-aligned") == 2
    )
    assert "only with --alignment official" in capsys.readouterr().err and "SYNTHETIC" in err


@pytest.mark.slow
def test_render_flags_make_the_idle_and_angle_factors(engine, tmp_path, monkeypatch):
    from pdfgc_synthetic import synthetic_checkpoint

    from pdfgc_core import audio as core_audio
    from pdfgc_core import pipeline
    from pdfgc_core.control import cli as control_cli

    ap = argparse.ArgumentParser()
    control_cli.add_render_args(ap)
    args = ap.parse_args(["--idle-blinks", "15", "--head-sway", "0.5", "--pose-keyframes", "0: 0,0,0; 0.2s: 6,0,0"])
    args.audio, args.seconds = str(SAMPLES / "speech.mp3"), 0.4
    settings = pipeline.RenderSettings()
    got = control_cli.render_factors(args, engine, settings, {})
    n = 12  # ceil(0.4 s * 25) + 2
    shape = idle.sample_blink_shape(engine)
    assert torch.equal(got["eye"].values, idle.idle_blinks(n, shape, rate=15, seed=0).factor.values)
    wave, sr = core_audio.load_audio(SAMPLES / "speech.mp3")
    sway = idle.head_sway(
        n, idle.encode_sample(engine, "pose"), amplitude=0.5, envelope=idle.speech_envelope(wave, sr, n)
    )
    keys = pose.keyframe_controls(pose.parse_keyframes("0: 0,0,0; 0.2s: 6,0,0"), length=n)
    assert torch.allclose(got["pose"].values, pose.assumed_pose_map().to_factor(keys).values + sway.values)
    monkeypatch.setenv("PDFGC_CHECKPOINT", str(synthetic_checkpoint()))
    out = tmp_path / "alive.mp4"
    assert run_cli("render", "--appearance", SAMPLES / "anne.png", "--audio", SAMPLES / "speech.mp3", "--seconds",
                   0.2, "--idle-blinks", 17, "--head-sway", 1, "--pose-angles", "5,0,0", "--out", out) == 0  # fmt: skip
    assert media.probe(out).num_frames == core_audio.audio_to_windows(wave, sr, max_seconds=0.2).shape[0]
    assert run_cli("render", "--appearance", SAMPLES / "anne.png", "--audio", SAMPLES / "speech.mp3",
                   "--pose-angles", "1,2", "--out", tmp_path / "x.mp4") == 2  # fmt: skip
    assert not (tmp_path / "x.mp4").exists()


def test_pipeline_takes_ready_factors(engine):
    from pdfgc_core import pipeline

    eye = planted_eye()
    with pytest.raises(InputError, match="the pose input is a factor of kind 'eye'"):
        pipeline.plan(engine, SAMPLES / "anne.png", SAMPLES / "speech.mp3", {"pose": eye}, pipeline.RenderSettings())
