"""Dataset preparation (bad videos reported, resume), what a clip holds, items and the batch plan."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from train_support import CLIPS, SAMPLES, corrupt_video, faceless_video, silent_video, small_dataset, talking_video

from pdfgc_core.audio import audio_to_windows, load_audio, mel_windows
from pdfgc_core.errors import InputError
from pdfgc_core.faces import get_detector
from pdfgc_core.images import official_crop, read_image
from pdfgc_core.train import config, data, eyes, prepare, shards


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two good videos (one with a pose label file beside it) and four bad ones."""
    d = tmp_path_factory.mktemp("videos")
    name, pattern, t0 = CLIPS[1]
    talking_video(d / "talk.mp4", pattern, t0)
    talking_video(d / "labeled.mp4", CLIPS[0][1], 0.0, seconds=1.2)
    labels = np.random.default_rng(1).normal(size=(30, 6)).round(4)
    np.savetxt(d / "labeled.pose.csv", labels, delimiter=",", header="pitch,yaw,roll,tx,ty,tz")
    corrupt_video(d / "corrupt.mp4", d / "talk.mp4")
    silent_video(d / "silent.mp4", pattern)
    faceless_video(d / "noface.mp4", seconds=2.0)
    talking_video(d / "short.mp4", pattern, t0, seconds=0.6)
    return d, labels


@pytest.fixture(scope="module")
def prepared(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("dataset")
    lines = []
    report = prepare.prepare([folder[0]], out, prepare.PrepareOptions(workers=2, frame_codec="raw"), echo=lines.append)
    return out, report, lines


def test_prepare_finishes_and_reports_each_bad_video(prepared):
    out, report, lines = prepared
    reasons = {r["source"].rsplit("/", 1)[-1]: r["reason"] for r in report.skipped}
    assert reasons == {
        "corrupt.mp4": "unreadable",
        "silent.mp4": "no_audio",
        "noface.mp4": "no_face",
        "short.mp4": "too_short",
    }
    text = "\n".join(report.lines())
    for name in reasons:
        assert f"{name}: {reasons[name]}" in text
    assert any("6/6 videos" in ln and "4 skipped" in ln and "ETA" in ln for ln in lines)  # progress with ETA
    index = json.loads((out / "index.json").read_text())
    assert [c["source"].rsplit("/", 1)[-1] for c in index["clips"]] == ["labeled.mp4", "talk.mp4"]
    assert len(index["skipped"]) == 4 and index["fps"] == 25 and index["audio_lead_frames"] == 2


def test_prepare_resumes_without_redoing_work(prepared, folder):
    out, report, _ = prepared
    again = prepare.prepare([folder[0]], out, prepare.PrepareOptions(workers=1), echo=lambda s: None)
    assert again.already_done == 6 and again.prepared == 0 and not again.skipped
    assert again.index == report.index


def test_clip_audio_is_the_inference_windows_of_its_frames(prepared, folder):
    """Clip frame i = video frame start + i, paired with the inference window of video frame start + i - 2."""
    store = shards.ClipStore(prepared[0])
    i = next(k for k, c in enumerate(store.clips) if c["source"].endswith("talk.mp4"))
    c = store.clips[i]
    ours = mel_windows(store.small(i, "mel").copy(), 25, num_frames=c["num_frames"])
    inference = audio_to_windows(*load_audio(folder[0] / "talk.mp4"))
    w0 = c["start_frame"] - prepare.LEAD_FRAMES
    assert c["start_frame"] == 2 and torch.equal(ours, inference[w0 : w0 + c["num_frames"]])


def test_clip_frames_landmarks_boxes_and_poses_agree(prepared, folder):
    store = shards.ClipStore(prepared[0])
    i = next(k for k, c in enumerate(store.clips) if c["source"].endswith("talk.mp4"))
    n = store.clips[i]["num_frames"]
    lm, det = store.small(i, "landmarks"), store.small(i, "detected").astype(bool)
    windows = len(audio_to_windows(*load_audio(folder[0] / "talk.mp4")))
    assert n == min(52, windows + 2) - 2 and det.all()  # frames 2.. that have an audio window
    frames = store.frames(i, [0, n // 2, n - 1])
    assert frames.shape == (3, 224, 224, 3) and frames.dtype == np.uint8
    detector = get_detector("dlib")
    for f, t in zip(frames, [0, n // 2, n - 1]):  # landmarks are in the stored (network) image
        (face,) = detector.detect(f)
        assert np.abs(face.landmarks - lm[t]).mean() < 1.5
    assert np.array_equal(store.small(i, "eye_box"), eyes.eye_boxes(lm))
    pose = store.small(i, "pose")
    assert np.allclose(pose, prepare.landmark_poses(lm), atol=1e-6)
    assert np.abs(np.degrees(pose[:, :3])).max() < 45 and 0.5 < pose[:, 5].mean() < 2.0


def test_a_label_file_takes_precedence(prepared, folder):
    store = shards.ClipStore(prepared[0])
    i = next(k for k, c in enumerate(store.clips) if c["source"].endswith("labeled.mp4"))
    c = store.clips[i]
    assert c["pose_source"] == "file"
    want = folder[1][c["start_frame"] : c["start_frame"] + c["num_frames"]]
    assert np.allclose(store.small(i, "pose"), want, atol=1e-6)


def test_a_short_label_file_is_reported(tmp_path):
    v = talking_video(tmp_path / "v.mp4", CLIPS[1][1], 0.0, seconds=1.2)
    np.save(tmp_path / "v.pose.npy", np.zeros((10, 6)))
    res = prepare.prepare_video(v, prepare.PrepareOptions())
    assert res.skipped[0] == "bad_pose_labels" and "10 rows" in res.skipped[1] and not res.clips


def test_missing_inputs_and_empty_folders_are_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        prepare.prepare([tmp_path / "nope"], tmp_path / "out")
    with pytest.raises(InputError, match="no video files"):
        prepare.prepare([tmp_path], tmp_path / "out")
    with pytest.raises(InputError, match="not a prepared dataset"):
        shards.ClipStore(tmp_path)


def test_frame_codecs_round_trip():
    face = official_crop(read_image(SAMPLES / "anne.png"))
    frames = np.stack([face, face[:, ::-1], face[::-1]])
    assert np.array_equal(shards.encode_frames(frames, "raw")["frames"], frames)
    enc = shards.encode_frames(frames, "jpeg", 95)
    offsets = enc["jpeg_offsets"]
    back = np.stack([shards.decode_jpeg(enc["jpeg"][a:b]) for a, b in zip(offsets, offsets[1:])])
    assert back.shape == frames.shape and np.abs(back.astype(int) - frames).mean() < 2.0
    assert (back[1] != back[0]).any()  # each frame decodes to itself, in order


# ------------------------------------------------------------------------------ items, plan


def test_batch_plan_splits_each_global_batch_over_processes():
    single = data.BatchPlan(50, 8, seed=3)
    parts = [data.BatchPlan(50, 8, world=2, rank=r, seed=3) for r in (0, 1)]
    assert single.steps_per_epoch == 6
    for step in (0, 5, 6, 17):  # within and across epochs
        assert parts[0].batch(step) + parts[1].batch(step) == single.batch(step)
    epoch0 = [i for s in range(6) for _, i in single.batch(s)]
    assert len(set(epoch0)) == 48 and single.batch(6)[0][0] == 1  # no repeats in an epoch; step 6 is epoch 1
    assert list(single.span(4, 7)) == [single.batch(4), single.batch(5), single.batch(6)]
    with pytest.raises(InputError, match="multiple"):
        data.BatchPlan(50, 8, world=3)
    with pytest.raises(InputError, match="fewer than batch_size"):
        data.BatchPlan(5, 8)


def test_separated_times_are_uniform_and_apart():
    rng = np.random.default_rng(0)
    draws = np.stack([data.separated_times(rng, 41, 9, 5) for _ in range(500)])
    assert (np.diff(draws, axis=1) >= 5).all() and draws.min() >= 0 and draws.max() <= 40
    spread = np.stack([data.separated_times(rng, 60, 3, 5) for _ in range(2000)])[:, 0]
    assert spread.min() == 0 and spread.max() > 40  # the first time ranges over the clip


@pytest.fixture(scope="module")
def store():
    return shards.ClipStore(small_dataset())


def test_items_are_pure_functions_of_epoch_and_index(store):
    cfg = config.load_config("lip", None, ["data.items_per_clip=4"])
    a, b = data.Stage2Data(store, cfg), data.Stage2Data(shards.ClipStore(store.root), cfg, load_frames=False)
    assert len(a) == 8
    for key in [(0, 0), (0, 5), (3, 5)]:
        x, y = a[key], b[key]
        assert np.array_equal(x["times"], y["times"]) and np.array_equal(x["mel"], y["mel"]) and "frames" not in y
    assert not np.array_equal(a[(0, 5)]["times"], a[(1, 5)]["times"])
    item = a[(2, 6)]
    clip, t = int(item["clip"]), item["times"]
    assert len(t) == 9 and (np.diff(t) >= 5).all()
    windows = mel_windows(store.small(clip, "mel").copy(), 25, num_frames=store.clips[clip]["num_frames"])
    assert np.array_equal(item["mel"], windows[torch.from_numpy(t)].numpy())
    assert np.array_equal(item["frames"], store.frames(clip, t))


def test_eye_items_paste_v1_eyes_into_v2(store):
    ds = data.Stage2Data(store, config.load_config("eye", None, ["data.items_per_clip=3"]))
    item = ds[(0, 4)]
    clip, (t1, t2) = int(item["clip"]), item["times"]
    v1, v2 = item["frames"]
    boxes = store.small(clip, "eye_box")
    assert t1 != t2 and np.array_equal(item["anchor"], eyes.paste_eyes(v2, v1, eyes.union_box(boxes[t1], boxes[t2])))
    batch = data.collate([ds[(0, k)] for k in range(3)])
    assert batch["frames"].shape == (3, 2, 224, 224, 3) and batch["anchor"].dtype == torch.uint8


def test_pose_items_carry_the_label_of_their_frame(store):
    ds = data.Stage2Data(store, config.load_config("pose"))
    item = ds[(1, 1)]
    assert np.array_equal(item["pose"], store.small(int(item["clip"]), "pose")[item["times"][0]])


def test_clips_too_short_for_an_item_are_explained(store):
    with pytest.raises(InputError, match="lip.negatives"):
        data.Stage2Data(store, config.load_config("lip", None, ["lip.negatives=20"]))


def test_cli_prepare_reports_and_fails_without_any_clip(tmp_path, capsys):
    from pdfgc_core import cli

    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "broken.mp4").write_bytes(b"not a video at all")
    assert cli.main(["prepare", str(bad), "--out", str(tmp_path / "ds"), "--workers", "1"]) == 2
    out, err = capsys.readouterr()
    assert "broken.mp4: unreadable" in out and "no usable clip" in err
    assert json.loads((tmp_path / "ds" / "index.json").read_text())["skipped"][0]["reason"] == "unreadable"


def test_cli_train_reports_bad_data_and_settings(tmp_path, capsys):
    from pdfgc_core import cli

    args = ["train", "--stage", "pose", "--data", str(tmp_path), "--out", str(tmp_path / "run")]
    assert cli.main(args) == 2 and "not a prepared dataset" in capsys.readouterr().err
    assert cli.main([*args, "--set", "pose.lr=fast"]) == 2 and "pose.lr = 'fast'" in capsys.readouterr().err
    assert cli.main([*args, "--max-steps", "0"]) == 2 and "--max-steps" in capsys.readouterr().err
