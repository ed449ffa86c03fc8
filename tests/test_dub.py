"""Dubbing: face choice and tracking, smoothing, masks and compositing, frame rates, ping-pong
reading, and the whole `dub` command on a video the test makes (second face, frames without a
face, drifting face)."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
from dub_media import face_clip, write_video

from pdfgc_core import audio as A
from pdfgc_core.dub import (
    DubSettings,
    FaceChoice,
    FrameSource,
    _source_frames_in_order,
    composite,
    crop_jitter,
    exact_rate,
    smooth_points,
    track_face,
)
from pdfgc_core.errors import InputError
from pdfgc_core.faces.paste import REGIONS, region_mask
from pdfgc_core.factors import fit_indices

SR = 16000


# ------------------------------------------------------------------------------ settings


def test_face_choice_parsing():
    assert FaceChoice.parse("largest").policy == "largest"
    assert FaceChoice.parse(None).policy == "largest"
    assert FaceChoice.parse("2") == FaceChoice("index", index=2)
    assert FaceChoice.parse(1) == FaceChoice("index", index=1)
    assert FaceChoice.parse("120.5, 80") == FaceChoice("point", point=(120.5, 80.0))
    for bad in ("-1", "left", "1,2,3", "nan,3", True, -2):
        with pytest.raises(InputError, match="face"):
            FaceChoice.parse(bad)


def test_settings_are_checked():
    with pytest.raises(InputError, match="mask"):
        DubSettings(mask="eyes")
    with pytest.raises(InputError, match="length"):
        DubSettings(length="longest")
    with pytest.raises(InputError, match="feather"):
        DubSettings(feather=float("nan"))
    with pytest.raises(InputError, match="chunk"):
        DubSettings(chunk=0)
    with pytest.raises(InputError, match="reference frame"):
        DubSettings(reference_frame=-1)


@pytest.mark.parametrize(
    "fps, exact",
    [
        (23.976, Fraction(24000, 1001)),
        (24, Fraction(24)),
        (25.0, Fraction(25)),
        (29.97, Fraction(30000, 1001)),
        (30, Fraction(30)),
        (50, Fraction(50)),
        (59.94, Fraction(60000, 1001)),
        (60, Fraction(60)),
    ],
)
def test_frame_rates_stay_in_sync_over_minutes(fps, exact):
    """The lips of output frame j come from the speech at j / fps seconds: at every common rate the
    window of the last frame of a 5-minute clip starts within half a mel frame (5 ms) of it."""
    assert exact_rate(fps) == exact
    seconds = 300
    n = A.num_output_frames(seconds * SR, float(exact))
    assert abs(n - seconds * float(exact)) <= 0.2 * float(exact) + 1  # the last window needs 0.2 s of speech
    for j in (0, n // 2, n - 1):
        start_s = A.window_start(j, float(exact)) / A.MEL_FPS
        assert abs(start_s - j / float(exact)) <= 0.5 / A.MEL_FPS


# ------------------------------------------------------------------------- masks, paste


def test_region_masks_nest_and_stay_below_the_eyes():
    masks = {r: region_mask(r, 12.0) for r in REGIONS}
    for m in masks.values():
        assert m.dtype == np.float32 and m.shape == (224, 224) and m.min() == 0.0 and m.max() == 1.0
    assert (masks["mouth"] <= masks["lower"] + 1e-6).all() and (masks["lower"] <= masks["face"] + 1e-6).all()
    assert masks["lower"][:80].max() == 0.0  # eye line (row 59) and above untouched
    assert masks["mouth"][120, 112] == 1.0 and masks["mouth"][59, 87] == 0.0
    hard = region_mask("mouth", 0.0)
    assert set(np.unique(hard)) == {0.0, 1.0}


def test_composite_changes_only_pixels_under_the_mask():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    face = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    m = np.array([[0.9, 0.1, -120.0], [-0.1, 0.9, -40.0]])  # frame -> crop
    mask = region_mask("lower", 10.0)
    out = composite(frame, face, m, mask, match_colors=True)
    import cv2

    from pdfgc_core.faces.align import invert_affine

    warped_mask = cv2.warpAffine(mask, invert_affine(m), (400, 300), flags=cv2.INTER_LINEAR)
    changed = (out != frame).any(-1)
    assert changed.any()
    assert not changed[warped_mask == 0].any()  # outside the mask: the source, byte for byte


def test_color_match_moves_statistics_to_the_source():
    from pdfgc_core.dub import color_match

    rng = np.random.default_rng(1)
    face = rng.uniform(0.0, 0.3, (50, 50, 3)).astype(np.float32)
    src = rng.uniform(0.5, 0.9, (50, 50, 3)).astype(np.float32)
    w = np.ones((50, 50), np.float32)
    out = color_match(face, src, w)
    np.testing.assert_allclose(out.mean((0, 1)), src.mean((0, 1)), atol=0.02)


# --------------------------------------------------------------------- smoothing, jitter


def test_smoothing_lowers_jitter_and_keeps_gaps_and_shots():
    rng = np.random.default_rng(2)
    t = np.arange(60, dtype=float)
    base = np.array([[100.0, 50.0], [150.0, 50.0], [125.0, 110.0]])
    pts = base[None] + np.stack([1.5 * t, 0.3 * t], -1)[:, None, :] + rng.normal(0, 1.0, (60, 3, 2))
    detected = np.ones(60, bool)
    detected[20:30] = False
    shots = (t >= 40).astype(int)
    sm = smooth_points(pts, detected, shots, sigma=3.0)
    assert np.isnan(sm[20:30]).all() and np.isfinite(sm[detected]).all()
    raw_j, sm_j = crop_jitter(np.where(detected[:, None, None], pts, np.nan), shots), crop_jitter(sm, shots)
    assert sm_j < 0.4 * raw_j
    # no smoothing across the cut: the frame after it is not pulled towards the old shot
    jump = pts.copy()
    jump[40:] += 200.0
    sm2 = smooth_points(jump, detected, shots, sigma=3.0)
    assert np.abs(sm2[40] - jump[40:43].mean(0)).max() < 5.0
    np.testing.assert_array_equal(smooth_points(pts, detected, shots, 0.0)[detected], pts[detected])


# ------------------------------------------------------------------- reading, tracking


def test_seeking_and_ping_pong_read_the_right_frames(tmp_path):
    frames = np.stack([np.full((32, 48, 3), i * 9, np.uint8) for i in range(20)])
    path = write_video(tmp_path / "ramp.mp4", frames, 25)
    src = FrameSource(path)
    seq = list(src.frames())
    assert len(seq) == 20
    for a, b in ((7, 12), (15, None), (0, 3)):
        got = list(src.frames(a, b))
        assert all(np.array_equal(g, s) for g, s in zip(got, seq[a:b], strict=True))
    order = fit_indices(20, 50, "pingpong").numpy()
    out = list(_source_frames_in_order(src, order, budget_frames=4))  # backward runs in blocks of 4
    assert len(out) == 50
    assert all(np.array_equal(o, seq[i]) for o, i in zip(out, order))


def test_track_follows_the_chosen_face_and_skips_faceless_frames():
    frames, corners = face_clip(n=8, no_face=(3, 5), second=170)
    src = FrameSource(frames, fps=30)
    largest = track_face(src, DubSettings())
    assert largest.detected.tolist() == [True, True, True, False, False, True, True, True]
    eye_mid = largest.points[:, :2].mean(1)
    ok = largest.detected
    assert (eye_mid[ok, 0] > corners[ok, 0]).all() and (eye_mid[ok, 0] < corners[ok, 0] + 210).all()
    leftmost = track_face(src, DubSettings(face=0))
    assert (leftmost.points[leftmost.detected][:, :2, 0].mean(1) < 210).all()  # the small face at x 40..210
    near = track_face(src, DubSettings(face=(120, 180)))
    np.testing.assert_allclose(near.points[near.detected], leftmost.points[leftmost.detected])
    with pytest.raises(InputError, match="no face"):
        track_face(FrameSource(frames[3:5], fps=30), DubSettings())


def test_a_cut_starts_a_new_shot():
    frames, _ = face_clip(n=8, no_face=None, second=None, cut_at=4, drift=0.0)
    track = track_face(FrameSource(frames, fps=25), DubSettings())
    assert track.shots.tolist() == [0, 0, 0, 0, 1, 1, 1, 1] and track.detected.all()


# ------------------------------------------------------------------- the whole command


@pytest.mark.slow
def test_dub_command_end_to_end(tmp_path, synthetic_models):
    """30 fps 640x360 video with a second face, 8 frames without a face and a drifting face: the
    output keeps size, rate and length, carries the new audio, leaves no-face frames and every pixel
    outside the mask byte-identical, and its crop jitters less than unsmoothed alignment."""
    import soundfile as sf

    from pdfgc_core.dub import plan_dub
    from pdfgc_core.engine import Engine
    from pdfgc_core.media import probe, read_frames

    frames, _ = face_clip(n=30, no_face=(12, 20))
    video = write_video(tmp_path / "in.mp4", frames, 30)
    wave, sr = A.load_audio(str(__import__("conftest").SAMPLES / "speech.mp3"))
    speech = tmp_path / "speech.wav"
    sf.write(speech, wave[:, : int(0.7 * sr)].T, sr)  # shorter than the video: padded with silence
    out, fdir = tmp_path / "out.mp4", tmp_path / "frames"
    cmd = [sys.executable, "-m", "pdfgc_core", "dub", "--video", str(video), "--audio", str(speech)]
    cmd += ["--out", str(out), "--synthetic", "--frames-dir", str(fdir), "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    info = probe(out)
    assert (info.width, info.height, info.num_frames, round(info.fps)) == (640, 360, 30, 30) and info.has_audio
    src = read_frames(video)
    import cv2

    got = np.stack([cv2.cvtColor(cv2.imread(str(fdir / f"{i:06d}.png")), cv2.COLOR_BGR2RGB) for i in range(30)])
    for i in range(12, 20):
        assert np.array_equal(got[i], src[i]), f"frame {i} without a face was changed"
    engine = Engine(synthetic_models)
    plan = plan_dub(engine, FrameSource(video), str(speech), DubSettings())
    assert plan.num_frames == 30 and plan.generate.sum() == 22
    assert plan.track.jitter(True) < plan.track.jitter(False)
    mats = plan.track.matrices()
    from pdfgc_core.faces.align import invert_affine

    mask = region_mask("lower", DubSettings().feather)
    for i in np.flatnonzero(plan.generate):
        inside = cv2.warpAffine(mask, invert_affine(mats[i]), (640, 360), flags=cv2.INTER_LINEAR) > 0
        changed = (got[i] != src[i]).any(-1)
        assert changed.any() and not changed[~inside].any(), f"frame {i}: pixels outside the mask changed"
    assert torch.isfinite(plan.motion).all()
