"""Metrics: planted values are recovered, a clip measured against itself scores perfectly, a known
shift is reported as that shift, the bring-your-own-weights loaders take their published layouts
(random weights here) and refuse anything else, and reports / plots / nodes / CLI produce files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pdfgc_core import audio as core_audio
from pdfgc_core import images, media
from pdfgc_core.errors import CheckpointError, InputError
from pdfgc_core.faces.headpose import project
from pdfgc_core.factors import FACTOR_DIMS, Factor, motion_slices
from pdfgc_core.metrics import byow, consistency, disentangle, plots, report, sync
from pdfgc_core.metrics import landmarks as lmk
from pdfgc_core.metrics import pose as pose_m
from pdfgc_core.metrics.evaluate import Weights, evaluate
from pdfgc_core.networks import build_network
from pdfgc_core.networks.motion import embedding, feature_mlp

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
FPS = 25.0


@pytest.fixture(scope="module")
def faces():
    """Six real aligned faces (the bundled pose driver) and their dlib landmarks."""
    frames = media.read_frames(SAMPLES / "drivers" / "pose", stop=6)
    return frames, lmk.detect_landmarks(frames, "dlib")


@pytest.fixture(scope="module")
def models():
    from pdfgc_synthetic import synthetic_checkpoint

    from pdfgc_core.checkpoints import load_models

    return load_models(synthetic_checkpoint())


@pytest.fixture(scope="module")
def engine(models):
    from pdfgc_core.engine import Engine

    return Engine(models, device="cpu")


@pytest.fixture(scope="module")
def speech():
    wave, sr = core_audio.load_audio(SAMPLES / "speech.mp3")
    return wave[:, : int(1.6 * sr)], sr


def shift(frames, dx: float, dy: float = 0.0):
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return np.stack([cv2.warpAffine(f, m, (f.shape[1], f.shape[0]), borderMode=cv2.BORDER_REPLICATE) for f in frames])


# ------------------------------------------------------------------------------------ landmarks


def test_lmd_of_planted_landmarks():
    rng = np.random.default_rng(0)
    a = rng.uniform(20, 200, size=(5, 68, 2))
    res = lmk.lmd(a, a + [3.0, 4.0], (224, 224), (224, 224))
    assert res["lmd"] == pytest.approx(5.0) and res["mouth_lmd"] == pytest.approx(5.0)
    # the same face detected in a frame twice the size compares equal after scaling
    assert lmk.lmd(a * 2, a, (448, 448), (224, 224))["lmd"] == pytest.approx(0.0, abs=1e-12)
    # only the mouth moves: mouth LMD is the shift, LMD its share over 68 points
    b = a.copy()
    b[:, lmk.MOUTH] += [0.0, 2.0]
    res = lmk.lmd(a, b, (224, 224), (224, 224))
    assert res["mouth_lmd"] == pytest.approx(2.0) and res["lmd"] == pytest.approx(2.0 * 20 / 68)
    # a frame without a face is left out; centroid alignment removes a translation
    b[2] = np.nan
    res = lmk.lmd(a, b, (224, 224), (224, 224))
    assert res["frames_used"] == 4 and np.isnan(res["per_frame"][2])
    assert lmk.lmd(a, a + 7.0, (224, 224), (224, 224), align="centroid")["lmd"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(InputError, match="landmarks"):
        lmk.lmd(a[:, :10], a, (224, 224), (224, 224))


def test_clip_against_itself_and_against_a_shifted_copy(faces):
    frames, _ = faces
    rep = evaluate(frames, FPS, framing="aligned", reference=frames, reference_framing="aligned")
    m = rep.sections
    assert m["landmarks"]["frames_with_face"] == len(frames)
    assert m["lmd"]["lmd"] == 0.0 and m["lmd"]["mouth_lmd"] == 0.0 and m["lmd"]["frames_used"] == len(frames)
    assert m["pose_error"]["mean_deg"] == pytest.approx(0.0, abs=1e-9)
    assert m["gaze_proxy"]["mean_abs_difference"] == [0.0, 0.0]
    assert {"lmd", "pose", "eye_aspect_ratio", "blinks"} <= set(rep.plots)
    # 3 px to the right in the 224 px source frame = 3.5 px after the official crop (192 -> 224)
    moved = evaluate(shift(frames, 3.0), FPS, framing="aligned", reference=frames, reference_framing="aligned")
    assert 2.5 < moved.sections["lmd"]["lmd"] < 4.5
    assert moved.sections["pose_error"]["mean_deg"] < 3.0


def test_eye_aspect_ratio_of_real_faces_and_mouth_opening(faces):
    _, lm = faces
    ear = lmk.eye_aspect_ratio(lm)
    assert ear.shape == (6,) and ((ear > 0.12) & (ear < 0.5)).all()
    opening = lmk.mouth_opening(lm)
    assert ((opening >= 0) & (opening < 0.8)).all()


def test_blinks_on_a_planted_eye_aspect_ratio():
    ear = np.full(100, 0.3)
    ear[10:13] = [0.2, 0.1, 0.18]
    ear[40:42] = [0.12, 0.2]
    blinks = lmk.detect_blinks(ear)
    assert [(b.start, b.end, b.apex) for b in blinks] == [(10, 12, 11), (40, 41, 40)]
    assert lmk.blink_rate(blinks, 100, FPS) == pytest.approx(30.0)  # 2 blinks in 4 s
    same = lmk.blink_agreement(blinks, blinks)
    assert same["f1"] == 1.0 and same["mean_offset"] == 0.0
    late = lmk.detect_blinks(np.roll(ear, 2))
    agree = lmk.blink_agreement(blinks, late)
    assert agree["f1"] == 1.0 and agree["mean_offset"] == 2.0
    extra = np.roll(ear, 2)
    extra[70:72] = 0.1
    agree = lmk.blink_agreement(blinks, lmk.detect_blinks(extra))
    assert agree["precision"] == pytest.approx(2 / 3) and agree["recall"] == 1.0
    assert lmk.blink_agreement(blinks, lmk.detect_blinks(np.roll(ear, 6)))["matched"] == 0
    assert lmk.blink_agreement([], [])["f1"] is None


def test_gaze_proxy_follows_a_painted_iris(faces):
    frames, lm = faces
    f, p = frames[0].copy(), lm[0]
    looks = []
    for side in (0.25, 0.75):  # iris near the image-left corner, then near the image-right corner
        img = f.copy()
        for sl in (slice(36, 42), slice(42, 48)):
            eye = p[sl]
            cv2.fillPoly(img, [np.round(eye).astype(np.int32)], (235, 235, 235))
            c = eye[0] + side * (eye[3] - eye[0])
            cv2.circle(img, tuple(int(round(v)) for v in c), 3, (10, 10, 10), -1)
        looks.append(lmk.gaze_proxy(img[None], p[None])[0])
    assert looks[0][0] < -0.2 and looks[1][0] > 0.2


# ----------------------------------------------------------------------------------------- pose


def test_pose_error_of_planted_poses():
    def landmarks(angle_rows):
        return np.stack([project(a, (0.0, 0.0, 2500.0), 640, 480) for a in angle_rows])

    a = np.array([[0.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, -20.0, 0.0]])
    pa = pose_m.head_poses(landmarks(a), 640, 480)
    pb = pose_m.head_poses(landmarks(a + [0.0, 7.0, 0.0]), 640, 480)
    err = pose_m.pose_error(pa, pb)
    assert err["mean_deg"] == pytest.approx(7.0, abs=0.1)
    assert err["mae_deg"]["yaw"] == pytest.approx(7.0, abs=0.1) and err["mae_deg"]["pitch"] < 0.1
    assert err["mse_rad2"] == pytest.approx(np.radians(7.0) ** 2 / 3, rel=0.05)
    assert pose_m.pose_error(pa, pa)["mean_deg"] == pytest.approx(0.0, abs=1e-9)
    # angles wrap: 179 and -179 are 2 degrees apart
    assert pose_m.pose_error(np.array([[0, 0, 179.0]]), np.array([[0, 0, -179.0]]))["mae_deg"]["roll"] == 2.0


# ----------------------------------------------------------------------------------------- sync


def test_offset_sweep_recovers_a_planted_shift():
    rng = np.random.default_rng(1)
    audio = rng.normal(size=(60, 16))
    visual = audio[3:43] + 0.05 * rng.normal(size=(40, 16))  # frame t looks like audio row t + 3
    res = sync.offset_sweep(visual, audio, max_offset=8)
    assert res.best_offset == 3 and res.offsets.tolist() == list(range(-8, 9))
    assert res.confidence == pytest.approx(np.nanmedian(res.distances) - res.min_distance)
    assert res.min_distance == pytest.approx(np.nanmin(res.distances))
    off, conf = res.framewise(window=5)
    assert (off == 3).all() and (conf > 0).all()
    # audio row j describing real time j + 2 (lead 2): the picture is then 5 frames ahead of the sound
    assert sync.offset_sweep(visual, audio, max_offset=8, lead=2).best_offset == 5
    assert sync.offset_sweep(visual, audio, max_offset=8, metric="euclidean", pad="zeros").best_offset == 3
    assert sync.offset_sweep(visual, visual, max_offset=8).best_offset == 0
    with pytest.raises(InputError, match="dims"):
        sync.offset_sweep(visual, audio[:, :8])


def _planted_frames(windows: torch.Tensor) -> np.ndarray:
    """Frames that carry their mel window in pixels: the planted audio/lip pairing."""
    frames = np.full((windows.shape[0], 224, 224, 3), 128, np.uint8)
    block = np.clip(np.round(windows[:, 0].numpy() * 255), 0, 255).astype(np.uint8)
    frames[:, :160, :40, :] = block.repeat(2, 1).repeat(2, 2)[..., None]
    return frames


def _planted_lip(audio_embed):
    def embed(x):  # network frames -> the window they carry -> the audio encoder
        mel = ((x[:, 0, :160:2, :40:2] + 1.0) / 2.0).unsqueeze(1)
        return audio_embed(mel)

    return embed


@pytest.mark.slow  # inner loop: under 3 minutes (tests/README.md)
def test_pdfgc_sync_on_the_bundled_speech_reports_the_shift(models, speech):
    wave, sr = speech
    wave = wave[:, : int(0.64 * sr)]
    windows = core_audio.audio_to_windows(wave, sr, fps=FPS)
    frames = _planted_frames(windows)
    aud = sync.audio_lip_embedder(models)
    lip = _planted_lip(aud)
    same = sync.pdfgc_sync(frames, windows, lip, aud, max_offset=5)
    assert same.best_offset == 0 and same.confidence > 0 and same.metric == "cosine"
    visual = sync.embed_batches(lip, consistency.network_chunks(frames))

    def best(w, lead=0):
        audio_emb = sync.embed_batches(aud, [core_audio.audio_to_windows(w, sr, fps=FPS)])
        return sync.offset_sweep(visual, audio_emb, max_offset=5, lead=lead).best_offset

    hop = int(round(sr / FPS))
    assert best(np.concatenate([np.zeros((wave.shape[0], 3 * hop), wave.dtype), wave], 1)) == 3  # sound 3 late
    assert best(wave[:, 2 * hop :]) == -2  # sound 2 frames early
    # a synchronous track (a rendered mp4's audio) runs 2 frames behind the speech that drove the frames
    assert best(wave[:, int(round(0.08 * sr)) :], lead=sync.pipeline_lead_frames(FPS)) == 0


def test_lip_head_adapter():
    motion = build_network("motion")
    assert not sync.has_lip_head(motion)
    with pytest.raises(InputError, match="lip head"):
        sync.motion_lip_embedder(motion)
    motion.to_mouth, motion.mouth_embed = feature_mlp().eval(), embedding(FACTOR_DIMS["mouth"]).eval()
    assert sync.has_lip_head(motion)
    out = sync.motion_lip_embedder(motion)(torch.zeros(2, 3, 224, 224))
    assert out.shape == (2, FACTOR_DIMS["mouth"]) and torch.isfinite(out).all()


# ------------------------------------------------------------------------------ SyncNet, FID, ArcFace


def test_syncnet_mfcc_matches_python_speech_features(speech):
    psf = pytest.importorskip("python_speech_features")
    wave, sr = speech
    x = core_audio.resample(core_audio.to_mono(wave), sr, 16000, "fast")[:12000]
    ref = psf.mfcc(np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16), 16000).T
    np.testing.assert_allclose(byow.syncnet_mfcc(x), ref, atol=1e-8)


def test_syncnet_file_loads_and_the_sweep_follows_the_video(tmp_path, faces, speech):
    torch.manual_seed(0)
    path = tmp_path / "syncnet_v2.model"
    net = byow.SyncNetV2()
    for m in net.modules():  # non-trivial running statistics, as a trained file has
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), path)
    model = byow.load_syncnet(path)
    frames = np.concatenate([faces[0], faces[0][::-1], faces[0]])[:14]
    wave = core_audio.resample(core_audio.to_mono(speech[0]), speech[1], 16000, "fast")
    res = byow.syncnet_lse(model, frames, wave, max_offset=4)
    assert res.frames == 14 - byow.SYNCNET_FRAMES and res.offsets.tolist() == list(range(-4, 5))
    assert res.confidence == pytest.approx(np.median(res.distances) - res.distances.min())
    k = 2  # drop the first k video frames: frame i of the new clip is frame i + k of the old one
    moved = byow.syncnet_lse(model, frames[k:], wave, max_offset=4)
    n_aud = moved.frames  # audio rows of the shorter clip
    for i in range(moved.frames):
        for j in range(9):
            if 0 <= i + j - 4 < n_aud and 0 <= j - k < 9:
                assert moved.per_frame[i, j] == pytest.approx(res.per_frame[i + k, j - k], rel=1e-4)


def test_bring_your_own_weights_errors(tmp_path):
    for loader, name in ((byow.load_syncnet, "syncnet_v2.model"), (byow.load_fid_inception, "pt_inception")):
        with pytest.raises(CheckpointError, match=name):
            loader(None)
        with pytest.raises(CheckpointError, match="does not exist"):
            loader(tmp_path / "missing.pth")
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not in the expected layout"):
        byow.load_syncnet(other)
    tv = tmp_path / "torchvision.pth"
    torch.save({"AuxLogits.fc.weight": torch.zeros(1000, 768), "fc.weight": torch.zeros(1000, 2048)}, tv)
    with pytest.raises(CheckpointError, match="torchvision"):
        byow.load_fid_inception(tv)
    with pytest.raises(CheckpointError, match="ONNX"):
        byow.ArcFaceONNX(tmp_path / "none.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a network")
    with pytest.raises(CheckpointError, match="OpenCV cannot read"):
        byow.ArcFaceONNX(junk)


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    s1, s2 = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert byow.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected)
    a = rng.normal(size=(6, 6))
    b = rng.normal(size=(6, 6))
    c1, c2 = a @ a.T, b @ b.T
    from scipy.linalg import sqrtm

    ref = np.trace(c1 + c2 - 2 * np.real(sqrtm(c1 @ c2)))
    assert byow.frechet_distance(np.zeros(6), c1, np.zeros(6), c2) == pytest.approx(ref, rel=1e-6)
    assert byow.frechet_distance(mu2[:1].repeat(6), c1, mu2[:1].repeat(6), c1) == pytest.approx(0.0, abs=1e-9)


def test_fid_inception_layout():
    sd = byow.FIDInception().state_dict()
    assert sum(v.numel() for k, v in sd.items() if not k.endswith(("running_mean", "running_var", "tracked"))) == (
        23_850_960
    )
    assert sd["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert sd["fc.weight"].shape == (1008, 2048) and sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)


@pytest.mark.slow
def test_fid_with_an_inception_file(tmp_path, faces):
    torch.manual_seed(0)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(byow.FIDInception().state_dict(), path)
    model = byow.load_fid_inception(path)
    frames = faces[0][:2]
    same = byow.fid(model, frames, frames)
    a = byow.feature_stats(byow.inception_features(model, frames))
    b = byow.feature_stats(byow.inception_features(model, 255 - frames))
    other = byow.frechet_distance(*a, *b)
    assert a[0].shape == (byow.FID_DIMS,) and other > 0 and abs(same) < 1e-6 * other


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_arcface_identity_with_an_onnx_file(tmp_path, faces):
    pytest.importorskip("onnx")  # torch.onnx.export needs it to write the test model
    frames, lm = faces
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, 2, 1),
        torch.nn.BatchNorm2d(8),
        torch.nn.PReLU(8),
        torch.nn.Conv2d(8, 16, 3, 2, 1),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 512),
    ).eval()
    path = tmp_path / "w600k_r50.onnx"
    torch.onnx.export(
        net,
        torch.zeros(1, 3, 112, 112),
        str(path),
        dynamo=False,
        input_names=["input.1"],
        output_names=["embedding"],
        dynamic_axes={"input.1": {0: "n"}, "embedding": {0: "n"}},
    )
    model = byow.ArcFaceONNX(path)
    crops = np.stack([byow.arcface_crop(f, p) for f, p in zip(frames, lm)])
    x = torch.from_numpy((crops.astype(np.float32) - 127.5) / 127.5).permute(0, 3, 1, 2)
    expected = torch.nn.functional.normalize(net(x), dim=1).detach().numpy()
    np.testing.assert_allclose(model.embed(crops), expected, atol=1e-4)
    res = byow.identity_similarity(model, frames, lm, frames[0], lm[0])
    assert res["per_frame"][0] == pytest.approx(1.0, abs=1e-5) and res["frames_used"] == len(frames)
    assert (res["per_frame"] <= 1.0 + 1e-6).all()
    rep = evaluate(frames, FPS, framing="aligned", weights=Weights(arcface=str(path)), identity_image=frames[0])
    assert rep.sections["identity"]["frames_used"] == len(frames)
    assert rep.series["identity"]["per_frame"][0] == pytest.approx(1.0, abs=1e-5) and "identity" in rep.plots


# ---------------------------------------------------------------------------------- consistency


def test_compare_codes_of_planted_codes():
    rng = np.random.default_rng(3)
    req = {k: rng.normal(size=(10, FACTOR_DIMS[k])) for k in ("pose", "eye", "expression")}
    same = consistency.compare_codes(req, req)
    assert set(same) == {"pose", "blink", "gaze", "expression"}
    for v in same.values():
        assert v["mse"] == 0.0 and v["cosine"] == pytest.approx(1.0) and v["correlation"] == pytest.approx(1.0)
    double = consistency.compare_codes(req, {k: 2 * v for k, v in req.items()})
    assert double["pose"]["mse"] == pytest.approx(np.mean(req["pose"] ** 2))
    assert double["pose"]["cosine"] == pytest.approx(1.0)
    motion = torch.arange(542.0).repeat(3, 1)
    sl = motion_slices()
    got = consistency.requested_from_motion(motion)
    assert got["pose"][0].tolist() == list(range(sl["pose"].start, sl["pose"].stop))


def test_frames_against_their_own_encoding(engine, faces):
    frames, _ = faces
    codes = consistency.reencode(engine, frames[:3], "generated")
    rep = evaluate(frames[:3], FPS, engine=engine, requested=codes, landmarks=None)
    for k, v in rep.sections["pdfgc_consistency"].items():
        assert v["mse"] == pytest.approx(0.0, abs=1e-10), k
    assert "consistency" in rep.plots


# ------------------------------------------------------------------------------ disentanglement


def test_eq1_variance_table_of_planted_features():
    t = np.arange(4.0)[:, None]  # variance over time: mean((t - 1.5)^2) = 1.25
    feats = {
        "pose": [{"pose": t, "blink": np.zeros((4, 4))}, {"pose": 3 * t, "blink": np.zeros((4, 4))}],
        "blink": [{"pose": np.ones((4, 6)), "blink": np.hstack([t, t])}],
        "gaze": [{"pose": np.sqrt(0.4) * t, "blink": np.zeros((4, 4))}],
    }
    m = disentangle.variance_table(feats)
    i, j = disentangle.DRIVEN.index, disentangle.MEASURED.index
    assert m[i("pose"), j("pose")] == pytest.approx((1.25 + 9 * 1.25) / 2)
    assert m[i("blink"), j("blink")] == pytest.approx(2.5) and m[i("pose"), j("blink")] == 0.0
    assert m[i("gaze"), j("pose")] == pytest.approx(0.5)
    assert np.isnan(m[i("mouth")]).all() and np.isnan(m[i("pose"), j("lip")])
    dom = disentangle.DisentanglementResult(m).dominance()
    assert dom["pose"] == pytest.approx(6.25 / 0.5)
    assert dom["blink"] is None and dom["lip"] is None  # all other rows 0 / nothing measured: no ratio


def test_single_factor_motions_keep_only_their_factor():
    rng = np.random.default_rng(4)
    factors = {k: Factor(k, rng.normal(size=(5, d)).astype(np.float32)) for k, d in FACTOR_DIMS.items()}
    motions = disentangle.single_factor_motions(factors, 5)
    sl = motion_slices()
    for row, m in motions.items():
        src = {"blink": "eye", "gaze": "eye"}.get(row, row)
        for kind, s in sl.items():
            assert bool(m[:, s].abs().sum() > 0) == (kind == src), (row, kind)
    eye = sl["eye"].start
    assert (motions["blink"][:, [eye + 2, eye + 3]] == 0).all() and (motions["gaze"][:, [eye, eye + 1]] == 0).all()


@pytest.mark.slow
def test_disentanglement_report_on_the_bundled_samples(tmp_path, capsys):
    from pdfgc_synthetic import synthetic_checkpoint

    from pdfgc_core import cli

    out = tmp_path / "dis"
    code = cli.main(
        ["evaluate", "--disentanglement", "--checkpoint", str(synthetic_checkpoint()), "--frames", "3"]
        + ["--device", "cpu", "--out", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "report.json").read_text())
    var = data["metrics"]["disentanglement"]["variance"]
    assert set(var) == set(disentangle.DRIVEN)
    for row in disentangle.DRIVEN:
        for col in ("pose", "blink", "gaze", "expression"):
            assert var[row][col] is not None and var[row][col] >= 0, (row, col)
        # the synthetic weights carry the motion network's lip head (issue 12): the lip column is
        # measured where it can be, never negative
        assert var[row]["lip"] is None or var[row]["lip"] >= 0
    assert any("constant over the clip" in n and "expression" in n for n in data["notes"])  # static sample
    heat = cv2.imread(str(out / "disentanglement.png"))
    assert heat.shape == (plots.HEIGHT, plots.WIDTH, 3) and heat.std() > 10
    assert "disentanglement.png" in (out / "report.html").read_text()


# ------------------------------------------------------------------------------- plots, reports


def test_line_plot_heatmap_and_stack():
    y = np.sin(np.arange(50) / 5.0)
    y[20:25] = np.nan
    img = plots.line_plot({"a": y, "b": -y}, "title", ylabel="unit", marks={"0": 10.0})
    assert img.shape == (plots.HEIGHT, plots.WIDTH, 3) and img.dtype == np.uint8
    for color in plots.PALETTE[:2]:
        assert (np.abs(img.astype(int) - color).sum(-1) < 30).sum() > 100, color
    heat = plots.heatmap(np.array([[1.0, np.nan], [0.0, 2.0]]), ["r1", "r2"], ["c1", "c2"], "t")
    cell = lambda i, j: heat[62 + int((i + 0.5) * (plots.HEIGHT - 90) / 2) - 12, 140 + int(j * (plots.WIDTH - 146) / 2)]  # noqa: E731
    assert tuple(cell(0, 1)) == (200, 200, 200)  # NaN: grey
    assert not np.array_equal(cell(0, 0), cell(1, 0))  # column max vs column min differ in colour
    batch = plots.stack([img, img[:100]])
    assert batch.shape == (2, plots.HEIGHT, plots.WIDTH, 3) and (batch[1, 100:] == 255).all()
    with pytest.raises(InputError):
        plots.heatmap(np.zeros((2, 3)), ["a"], ["b"], "t")


def test_report_files(tmp_path):
    rep = report.Report("test report")
    scalars = rep.add("sec", {"x": 1.5, "missing": float("nan"), "nested": {"a": np.float32(2)}, "curve": np.ones(3)})
    assert "curve" not in scalars and rep.series["sec"]["curve"].shape == (3,)
    rep.tables["table"] = report.markdown_table(["a", "b"], [["row", 0.12345], ["n", float("nan")]])
    rep.plots["plot one"] = plots.line_plot({"y": np.arange(5.0)}, "p")
    rep.note("a note")
    files = rep.write(tmp_path / "out")
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["metrics"]["sec"] == {"x": 1.5, "missing": None, "nested": {"a": 2.0}}
    assert data["series"]["sec"]["curve"] == [1.0, 1.0, 1.0] and data["notes"] == ["a note"]
    md = files["markdown"].read_text()
    assert "| nested.a | 2 |" in md and "![plot one](plot one.png)" in md and "| row | 0.1235 |" in md
    html = files["html"].read_text()
    assert "<img src='plot one.png'" in html and "<td>n/a</td>" in html
    assert cv2.imread(str(files["plot one"])).shape == (plots.HEIGHT, plots.WIDTH, 3)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary files left


# ------------------------------------------------------------------------------- CLI and nodes


def test_cli_evaluate_video_against_itself(tmp_path, faces, capsys, monkeypatch):
    from pdfgc_core import cli

    monkeypatch.setattr(cli, "_find_checkpoint", lambda: None)

    clip = tmp_path / "clip.mp4"
    with media.Mp4Writer(clip, fps=FPS, audio=str(SAMPLES / "speech.mp3")) as w:
        w.write(faces[0])
    out = tmp_path / "report"
    args = ["evaluate", "--video", str(clip), "--reference", str(clip), "--framing", "aligned", "--out", str(out)]
    assert cli.main(args + ["--landmarks", "dlib", "--checkpoint", str(tmp_path / "none")]) == 2
    assert "none" in capsys.readouterr().err  # an explicit checkpoint that is missing is an error ...
    assert cli.main(args) == 0, capsys.readouterr().err  # ... no checkpoint at all only skips model metrics
    data = json.loads((out / "report.json").read_text())
    assert data["metrics"]["lmd"]["lmd"] == 0.0 and data["metrics"]["lmd"]["mouth_lmd"] == 0.0
    assert data["metrics"]["pose_error"]["mean_deg"] == pytest.approx(0.0, abs=1e-9)
    assert {"pose.png", "lmd.png", "blinks.png"} <= {p.name for p in out.iterdir()}
    assert cli.main(args + ["--syncnet", str(tmp_path / "syncnet_v2.model")]) == 2
    assert "syncnet_v2.model" in capsys.readouterr().err


def test_cli_evaluate_against_the_drivers(tmp_path, capsys, monkeypatch):
    """Without a reference, head pose is measured against the pose driver and blinks against the eye
    driver, each read as the pipeline reads it (first 2 files of a folder dropped, official crop)."""
    from pdfgc_core import cli

    monkeypatch.setattr(cli, "_find_checkpoint", lambda: None)
    folder = SAMPLES / "drivers" / "pose"
    video = tmp_path / "frames"
    video.mkdir()
    for i, f in enumerate(media.read_frames(folder, start=2, stop=7)):  # what the driver gives, losslessly
        cv2.imwrite(str(video / f"{i:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    out = tmp_path / "report"
    args = ["evaluate", "--video", str(video), "--framing", "aligned", "--pose", str(folder), "--eye", str(folder)]
    assert cli.main(args + ["--out", str(out)]) == 0, capsys.readouterr().err
    data = json.loads((out / "report.json").read_text())
    assert data["metrics"]["pose_error"]["against"] == "pose driver"
    assert data["metrics"]["pose_error"]["mean_deg"] == pytest.approx(0.0, abs=1e-9)
    assert data["metrics"]["blinks"]["against"] == "eye driver" and "lmd" not in data["metrics"]
    assert data["series"]["pose"]["pose driver"] == data["series"]["pose"]["result"]


METRIC_INTERFACE = {
    "PDFGC_Evaluate": (
        ["images", "fps", "framing", "reference_framing", "landmarks", "max_offset", "audio_timing"],
        ["reference", "model", "motion", "audio", "syncnet_path", "inception_path", "arcface_path"],
        ["plots", "report", "summary"],
    ),
    "PDFGC_Disentanglement": (
        ["model", "appearance", "frames", "batch_size", "landmarks"],
        ["mouth", "pose", "eye", "expression"],
        ["heatmap", "table", "report"],
    ),
}


def test_metric_nodes_interface():
    import nodes
    from nodes import metrics as metric_nodes

    assert set(metric_nodes.NODE_CLASS_MAPPINGS) == set(METRIC_INTERFACE)
    text = (SAMPLES.parent / "nodes" / "NODES.md").read_text()
    for name, (req, opt, outs) in METRIC_INTERFACE.items():
        cls = nodes.NODE_CLASS_MAPPINGS[name]
        spec = cls.INPUT_TYPES()
        assert list(spec["required"]) == req and list(spec.get("optional", {})) == opt
        assert list(cls.RETURN_NAMES) == outs and len(cls.OUTPUT_TOOLTIPS) == len(outs)
        for section in ("required", "optional"):
            for inp, (kind, *o) in spec.get(section, {}).items():
                assert o and o[0].get("tooltip"), f"{name}.{inp} has no tooltip"
                if kind in ("INT", "FLOAT"):
                    assert o[0]["min"] <= o[0]["default"] <= o[0]["max"]
        assert f"`{name}`" in text and name in nodes.NODE_DISPLAY_NAME_MAPPINGS


def test_evaluate_node_on_frames_against_themselves(faces):
    from nodes.metrics import AUDIO_TIMING, PDFGC_Evaluate

    imgs = images.u8_to_comfy(faces[0])
    plots_img, rep, summary = PDFGC_Evaluate().evaluate(
        imgs, FPS, "aligned", "aligned", "dlib", 15, AUDIO_TIMING[0], reference=imgs
    )
    assert plots_img.dim() == 4 and plots_img.shape[1:] == (plots.HEIGHT, plots.WIDTH, 3)
    assert 0.0 <= float(plots_img.min()) and float(plots_img.max()) <= 1.0
    data = json.loads(rep)
    assert data["metrics"]["lmd"]["lmd"] == 0.0 and "lmd: lmd 0" in summary
    with pytest.raises(InputError, match="PD-FGC Evaluate"):
        PDFGC_Evaluate().evaluate(imgs[:0], FPS, "aligned", "aligned", "dlib", 15, AUDIO_TIMING[0])


@pytest.mark.slow
def test_disentanglement_node_and_self_driving(tmp_path, models, engine, faces):
    from nodes._common import ModelHandle
    from nodes.metrics import PDFGC_Disentanglement
    from pdfgc_core.metrics.protocols import evaluate_self_driving

    frames, _ = faces
    codes = engine.encode_drivers(images.prepare_batch(frames[:3]))
    app = engine.encode_appearance(images.prepare_batch(images.read_image(SAMPLES / "anne.png")[None]))
    heat, table, rep = PDFGC_Disentanglement().run(
        ModelHandle(models, "synthetic"), app, 2, 8, "none", pose=codes["pose"], eye=codes["eye"]
    )
    assert heat.shape == (1, plots.HEIGHT, plots.WIDTH, 3) and table.startswith("| driven")
    var = json.loads(rep)["metrics"]["disentanglement"]["variance"]
    assert var["pose"]["pose"] is not None and var["mouth"]["pose"] is None  # mouth not given: row n/a
    # self-driving: a clip with sound in, metrics against the clip out
    clip = tmp_path / "talk.mp4"
    with media.Mp4Writer(clip, fps=FPS, audio=str(SAMPLES / "speech.mp3")) as w:
        w.write(frames)
    out, sd = evaluate_self_driving(engine, clip, landmarks=None)
    # the last frames of a clip have no complete 0.2 s audio window after them
    assert sd.generated.shape[1:] == (224, 224, 3) and len(frames) - 2 <= len(sd.generated) == len(sd.reference)
    assert out.sections["clip"]["frames"] == len(sd.generated)
    assert set(out.sections["pdfgc_consistency"]) == {"pose", "blink", "gaze", "expression"}
    lip_head = sync.has_lip_head(engine.models)
    assert any("lip head" in n for n in out.notes) != lip_head  # the note says so only when the head is absent


@pytest.mark.slow
def test_cli_consistency_against_the_drivers(tmp_path, faces, capsys):
    """The clip's own frames as the expression driver: the re-encoded expression is the raw code, the
    requested one the official x1.2 gain of it, so MSE = 0.04 x mean(code^2) and cosine = 1."""
    from pdfgc_synthetic import synthetic_checkpoint

    from pdfgc_core import cli

    clip = tmp_path / "clip.mp4"
    with media.Mp4Writer(clip, fps=FPS, audio=str(SAMPLES / "speech.mp3")) as w:
        w.write(faces[0][:4])
    out = tmp_path / "report"
    args = ["evaluate", "--video", str(clip), "--framing", "aligned", "--expression", str(clip), "--out", str(out)]
    assert cli.main(args + ["--checkpoint", str(synthetic_checkpoint()), "--landmarks", "none"]) == 0
    data = json.loads((out / "report.json").read_text())
    expr = data["metrics"]["pdfgc_consistency"]["expression"]
    assert set(data["metrics"]["pdfgc_consistency"]) == {"expression"}
    assert expr["cosine"] == pytest.approx(1.0, abs=1e-6)
    from pdfgc_core.checkpoints import load_models
    from pdfgc_core.engine import Engine

    codes = consistency.reencode(Engine(load_models(synthetic_checkpoint())), media.read_frames(clip), "aligned")
    assert expr["mse"] == pytest.approx(0.04 * float(np.mean(codes["expression"].astype(np.float64) ** 2)), rel=1e-4)
    assert any("lip head" in n for n in data["notes"]) != sync.has_lip_head(load_models(synthetic_checkpoint()))
