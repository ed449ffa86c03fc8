"""Stages 1 and 3 and fine-tuning on the small dataset prepared from the bundled samples, from the
official-layout synthetic weights.

Fast: configuration defaults (the paper's numbers), the loss plan (a loss without its prior needs an
explicit flag), items and augmentation, the fine-tuning split, sample grids. Slow (a generator step
takes 15-45 s on 2 CPU cores): each stage runs and resumes exactly, a stage-3 result loads and
renders, two gloo processes equal one, and ``finetune`` runs end to end on a 10-second clip and
its result loads in the Load Model node."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from train_support import REPO, SAMPLES, run_ffmpeg, small_dataset, weights_copy

from pdfgc_core import cli
from pdfgc_core.checkpoints import OFFICIAL_FILES, load_models
from pdfgc_core.errors import InputError
from pdfgc_core.train import augment, config, finetune, gan_loop, monitor, priors, stage1, stage3, state
from pdfgc_core.train import cli as train_cli
from pdfgc_core.train.gan_data import GanData
from pdfgc_core.train.shards import ClipStore

QUIET = ["data.num_workers=0", "run.log_every=1", "run.checkpoint_every=1", "run.sample_every=1"]
SMALL = {  # one item per step, a 3-frame window, VGG at 64 px
    "appearance-motion": ["train.batch_size=1", "priors.size=64"],
    "expression": ["train.batch_size=1", "expression.window=3", "expression.bank_size=4", "priors.size=64"],
}
NO_PRIORS = {"appearance-motion": ["vgg19", "vggface", "motion"], "expression": ["vgg19", "gaze", "motion"]}


def small_config(stage: str, *extra: str, off=None) -> config.GanConfig:
    off = NO_PRIORS[stage] if off is None else off
    sets = [*SMALL[stage], *QUIET, f"losses.off={off!r}".replace("'", '"'), *extra]
    return config.load_gan_config(stage, None, sets)


def load_sd(folder: Path, name: str) -> dict:
    return torch.load(folder / name, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def dataset():
    return small_dataset()


# ------------------------------------------------------------------------------ fast


def test_defaults_are_the_papers_numbers():
    s1 = config.load_gan_config("appearance-motion")
    assert (s1.encoders.lr, s1.generator.lr, s1.discriminator.lr) == (5e-5, 5e-5, 5e-6)
    assert (s1.train.batch_size, s1.train.epochs, s1.generator.lr_decay_every) == (24, 50, 80_000)
    assert (s1.losses.feature_matching, s1.losses.vgg19, s1.losses.vggface) == (10.0, 10.0, 5.0)
    assert (s1.discriminator.scales, s1.discriminator.layers, s1.discriminator.ndf) == (2, 4, 64)
    assert (s1.augment.brightness, s1.augment.hue, s1.augment.perspective, s1.augment.perspective_p) == (
        0.5,
        0.4,
        0.1,
        0.9,
    )
    s3 = config.load_gan_config("expression")
    assert (s3.expression.lr, s3.generator.lr, s3.discriminator.lr) == (1e-5, 2e-5, 3.5e-6)
    assert (s3.expression.window, s3.expression.bank_size, s3.expression.train_steps) == (13, 512, 40_000)
    assert (s3.train.batch_size, s3.train.epochs, s3.optim.betas) == (16, 50, (0.0, 0.99))
    ft = config.load_gan_config("finetune")
    assert ft.expression.train_steps == 0 and ft.expression.window == 13 and ft.finetune.holdout_seconds == 2.0


def test_gan_config_refuses_unknown_keys_and_wrong_types():
    with pytest.raises(InputError, match="unknown key generator.lrr"):
        config.load_gan_config("expression", None, ["generator.lrr=1"])
    with pytest.raises(InputError, match="expression.window = 'many': expected a whole number"):
        config.load_gan_config("expression", None, ["expression.window=many"])
    with pytest.raises(InputError, match="unknown section \\[finetune\\]"):
        config.load_gan_config("expression", None, ["finetune.patience=2"])
    with pytest.raises(InputError, match="must be positive"):
        config.load_gan_config("appearance-motion", None, ["generator.lr=0"])


def test_prior_and_without_flags_become_settings():
    args = train_cli.argparse.Namespace(set=["run.seed=3"], prior=["vgg19=/w/vgg19.pth"], without=["gaze", "gaze"])
    sets = train_cli.gan_overrides(args)
    cfg = config.load_gan_config("expression", None, sets)
    assert cfg.priors.vgg19 == "/w/vgg19.pth" and cfg.losses.off == ("gaze",) and cfg.run.seed == 3
    with pytest.raises(InputError, match="NAME=PATH"):
        train_cli.gan_overrides(train_cli.argparse.Namespace(set=[], prior=["vgg19"], without=[]))


def test_a_loss_without_its_prior_needs_an_explicit_flag(tmp_path):
    with pytest.raises(InputError, match=r"loss 'vgg19' needs the prior network 'vgg19'.*--without vgg19.*torchvision"):
        stage3.Stage3.plan_losses(config.load_gan_config("expression"))
    with pytest.raises(InputError, match="this stage has no substitute for emoca"):
        stage1.Stage1.plan_losses(
            small_config("appearance-motion", 'priors.emoca="substitute"', off=["vgg19", "vggface"])
        )
    torch.save(priors.published_state_dict("vgg19"), tmp_path / "vgg19.pth")
    cfg = small_config(
        "expression", f'priors.vgg19="{tmp_path / "vgg19.pth"}"', 'priors.gaze="substitute"', off=["motion"]
    )
    plan = stage3.Stage3.plan_losses(cfg)
    assert isinstance(plan.priors["vgg19"], priors.VGG19Features) and plan.priors["gaze"] == "substitute"
    assert "motion" not in plan.weights and "image" not in plan.weights  # off, weight 0
    text = "\n".join(plan.lines())
    assert "gaze: weight 1, SUBSTITUTE" in text and "motion: OFF" in text and f"prior vgg19 = {tmp_path}" in text


def test_augmentations_are_seeded_and_neutral_when_zero():
    img = np.asarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3)), np.uint8)
    assert np.array_equal(augment.color_jitter(img, np.random.default_rng(1), 0, 0, 0, 0), img)
    assert np.array_equal(augment.perspective(img, np.random.default_rng(1), 0.1, 0.0), img)
    assert np.array_equal(augment.rotate_scale(img, np.random.default_rng(1), 0.0, 0.0), img)
    a = augment.color_jitter(img, np.random.default_rng(5), 0.5, 0.4, 0.4, 0.4)
    assert np.array_equal(a, augment.color_jitter(img, np.random.default_rng(5), 0.5, 0.4, 0.4, 0.4))
    assert not np.array_equal(a, img)
    dark = augment.color_jitter(np.full((4, 4, 3), 200, np.uint8), np.random.default_rng(0), 0.5, 0, 0, 0)
    assert len(np.unique(dark)) == 1  # brightness scales all channels alike


def test_items_of_both_stages(dataset):
    store = ClipStore(dataset)
    s1 = GanData(store, small_config("appearance-motion"))
    it = s1[(0, 1)]
    assert it["appearance"].shape == it["target"].shape == it["driving"].shape == (224, 224, 3)
    assert it["times"][0] != it["times"][1] and not np.array_equal(it["driving"], it["target"])
    assert all(np.array_equal(v, s1[(0, 1)][k]) for k, v in it.items())  # same item, same augmentation
    s3 = GanData(store, small_config("expression"), ranges={0: (10, 20)})
    it = s3[(0, 0)]
    assert it["window"].shape == (3, 224, 224, 3) and it["mel"].shape == (1, 80, 20)
    assert s3.clips == [0] and all(10 <= t < 20 for t in it["times"])


def test_finetune_split_holds_out_the_tail(dataset):
    store = ClipStore(dataset)
    n = sum(c["num_frames"] for c in store.clips)
    ranges, held = finetune.split_frames(store, 0.4)  # 10 frames
    assert len(held) == 10 and sum(hi - lo for lo, hi in ranges.values()) == n - 10
    assert not any(lo <= t < ranges.get(c, (0, 0))[1] for c, t in held for lo in [ranges.get(c, (0, 0))[0]])
    with pytest.raises(InputError, match="less than 1 s to train on"):
        finetune.split_frames(store, n / 25 - 0.5)


def test_sample_grid_rows_and_columns(tmp_path):
    import cv2

    cols = [torch.zeros(2, 3, 16, 16) - 1, torch.ones(2, 3, 16, 16)]
    gan_loop.write_sample_grid(tmp_path / "g.jpg", cols)
    img = cv2.imread(str(tmp_path / "g.jpg"))
    assert img.shape == (32, 32, 3) and img[:, :16].max() < 20 and img[:, 16:].min() > 235


# ----------------------------------------------------------------------------------- slow


@pytest.fixture(scope="module")
def init(weights_for, tmp_path_factory):
    return weights_copy(weights_for(1), tmp_path_factory.mktemp("init"))


def _equal_files(a: Path, b: Path, names) -> None:
    for name in names:
        sa, sb = load_sd(a, name), load_sd(b, name)
        assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa), name


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["expression", "appearance-motion"])
def test_stage_runs_resumes_exactly_and_loads(dataset, init, tmp_path, stage):
    """Two steps in one go, against one step, an interruption, and a resumed second step: every
    weight, the discriminator, the optimisers and the memory banks equal. The result is an official
    checkpoint folder that ``load_models`` reads; only the trained networks changed."""
    module = stage3 if stage == "expression" else stage1
    # stage 3: 3 steps of 1 item; Eq. 6 counts from 3 rows, i.e. at step 3 (1 current + 2 bank rows)
    steps, extra = (3, ["expression.decorrelation_min_rows=3"]) if stage == "expression" else (2, [])
    cfg = small_config(stage, "generator.lr=1e-3", *extra)
    whole = module.train(cfg, dataset, tmp_path / "whole", init=init, max_steps=steps, device="cpu")
    cut = module.train(cfg, dataset, tmp_path / "cut", init=init, max_steps=steps, device="cpu", stop_after=steps - 1)
    assert cut.step == steps - 1 and cut.checkpoint.name == state.step_name(steps - 1)
    torch.manual_seed(77)
    np.random.seed(5)
    resumed = module.train(cfg, dataset, tmp_path / "cut", init=init, max_steps=steps, device="cpu")
    assert resumed.step == steps and whole.checkpoint.name == state.step_name(steps)
    trained = [OFFICIAL_FILES[n] for n in module.__dict__[module.__name__.split(".")[-1].title()].TRAINED]
    extras = [gan_loop.DISCRIMINATOR] + ([stage1.G0_FILE] if stage == "appearance-motion" else [])
    _equal_files(whole.checkpoint, resumed.checkpoint, trained + extras)
    ta, tb = (state.read_train_state(r.checkpoint) for r in (whole, resumed))
    for name in ta["optimizers"]:
        sa, sb = ta["optimizers"][name]["state"], tb["optimizers"][name]["state"]
        assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    if stage == "expression":
        bank = ta["stage"]["bank_expression"]
        assert bank["count"] == 3 and torch.equal(bank["data"], tb["stage"]["bank_expression"]["data"])
    rows = monitor.read_metrics(whole.run_dir)
    assert [r["step"] for r in rows] == list(range(1, steps + 1)) and all(np.isfinite(r["loss_g"]) for r in rows)
    if stage == "expression":  # off while fewer than 3 rows, then a correlation over 3 rows (not +-1 each)
        assert rows[0]["loss_decorrelation"] == rows[1]["loss_decorrelation"] == 0
        assert 0 < rows[2]["loss_decorrelation"] < 500
    resumed_losses = [r["loss_g"] for r in monitor.read_metrics(resumed.run_dir)]
    assert resumed_losses == pytest.approx([r["loss_g"] for r in rows], rel=0, abs=1e-4)
    assert (whole.run_dir / "samples" / f"{state.step_name(steps)}.jpg").is_file()

    models = load_models(whole.checkpoint)  # the inference loader takes the step folder as it is
    assert not models.report.warnings
    for net, f in OFFICIAL_FILES.items():
        before, after = load_sd(init, f), load_sd(whole.checkpoint, f)
        assert list(before) == list(after)
        changed = any(not torch.equal(before[k], after[k]) for k in before)
        assert changed == (f in trained), net
    if stage == "expression":
        before, after = load_sd(init, OFFICIAL_FILES["motion"]), load_sd(whole.checkpoint, OFFICIAL_FILES["motion"])
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        assert changed and all(k.startswith(("to_emo.", "emo_embed.")) for k in changed)


@pytest.mark.slow
def test_stage3_result_renders_with_the_cli(dataset, init, tmp_path, capsys):
    res = stage3.train(small_config("expression"), dataset, tmp_path / "r", init=init, max_steps=1, device="cpu")
    out = tmp_path / "trained.mp4"
    code = cli.main(
        [
            "render", "--checkpoint", str(res.checkpoint), "--appearance", str(SAMPLES / "anne.png"),
            "--audio", str(SAMPLES / "speech.mp3"), "--seconds", "0.2", "--out", str(out), "--device", "cpu",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert out.stat().st_size > 0


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_stage3_two_processes_give_the_parameters_of_one(dataset, init, tmp_path):
    """torchrun, 2 gloo processes with 1 item each against 1 process with the global batch of 2, two
    steps; Eq. 6 counts from 3 rows, so at step 2 over the gathered global batch (with its gradient)
    followed by the banks' 2 rows. Every loss of both steps agrees (to 1e-4, measured 2e-6), and the
    parameters after step 1 agree to 2e-3 of how far they moved (measured 7.5e-4). After step 2 they are
    about 1 % of the movement apart: the adversarial game amplifies rounding (a batch of 2 against
    two batches of 1), as stage 2 saw for the audio encoder."""
    sets = [*SMALL["expression"], *QUIET, "train.batch_size=2", "expression.decorrelation_min_rows=3"]
    # Adam divides each gradient by its own size: with the default eps an element whose gradient is
    # rounding noise moves by +-lr whichever way the rounding falls (measured: 1.3 % of the movement
    # apart after 2 steps, while every loss agreed to 6 digits). eps 1e-3 keeps such elements still.
    sets += ["optim.eps=1e-3", "generator.lr=1e-3", "expression.lr=1e-3", "discriminator.lr=1e-3"]
    sets += [f"losses.off={NO_PRIORS['expression']!r}".replace("'", '"')]
    args = ["train", "--stage", "expression", "--data", str(dataset), "--init", str(init), "--max-steps", "2"]
    args += ["--device", "cpu"] + [x for s in sets for x in ("--set", s)]
    one = subprocess.run(
        [sys.executable, "-m", "pdfgc_core", *args, "--out", str(tmp_path / "one")],
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = subprocess.run(
        [*torchrun, "-m", "pdfgc_core", *args, "--out", str(tmp_path / "two")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 process(es)" in two.stderr
    assert_same_parameters(tmp_path / "one", tmp_path / "two", init)
    la, lb = monitor.read_metrics(tmp_path / "one"), monitor.read_metrics(tmp_path / "two")
    assert len(la) == len(lb) == 2 and la[1]["loss_decorrelation"] > 0
    for r, s in zip(la, lb):
        for k in ("loss_decorrelation", "loss_g", "loss_d", "loss_lip", "loss_feature_matching"):
            assert r[k] == pytest.approx(s[k], rel=1e-4, abs=1e-6), (k, r["step"])


def assert_same_parameters(one: Path, two: Path, init: Path, step: int = 1, tol: float = 2e-3) -> None:
    """After ``step``, each trained file of the two runs differs by less than ``tol`` of how far it moved."""
    ck = f"checkpoints/{state.step_name(step)}"
    for f in (OFFICIAL_FILES["generator"], OFFICIAL_FILES["motion"], gan_loop.DISCRIMINATOR):
        a, b = load_sd(one / ck, f), load_sd(two / ck, f)
        keys = [k for k in a if a[k].is_floating_point()]
        apart = torch.cat([(a[k] - b[k]).flatten() for k in keys]).norm()
        if f == gan_loop.DISCRIMINATOR:  # a fresh one (its start is not saved): compare with its size
            moved = torch.cat([a[k].flatten() for k in keys]).norm()
        else:
            start = load_sd(init, f)
            moved = torch.cat([(a[k] - start[k].reshape(a[k].shape)).flatten() for k in keys]).norm()
        assert moved > 0 and apart < tol * moved, (f, float(apart / moved))


def ten_second_clip(out: Path) -> Path:
    """10 s, 25 fps: the bundled pose driver frames looped, with the bundled speech looped."""
    run_ffmpeg(
        "-stream_loop", "-1", "-framerate", "25", "-i", str(SAMPLES / "drivers" / "pose" / "%06d.jpg"),
        "-stream_loop", "-1", "-i", str(SAMPLES / "speech.mp3"), "-t", "10", "-c:v", "libx264",
        "-pix_fmt", "yuv420p", "-c:a", "aac", str(out),
    )  # fmt: skip
    return out


@pytest.mark.slow
def test_finetune_end_to_end_and_load_model_node(init, tmp_path, monkeypatch, capsys):
    video = ten_second_clip(tmp_path / "person.mp4")
    run = tmp_path / "ft"
    sets = ["train.batch_size=1", "expression.window=3", "finetune.validate_every=1", "run.checkpoint_every=1"]
    sets += ["data.num_workers=0", "run.log_every=1", "finetune.patience=1"]
    argv = ["finetune", "--video", str(video), "--init", str(init), "--out", str(run), "--max-steps", "3"]
    argv += ["--device", "cpu", "--without", "vgg19"] + [x for s in sets for x in ("--set", s)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "held-out L1" in err and "vgg19: OFF" in err and "SUBSTITUTE" in err
    final = run / "final"
    assert all((final / f).is_file() for f in OFFICIAL_FILES.values())
    rows = (run / "validation.csv").read_text().splitlines()
    assert rows[0] == "step,val_l1,best_step" and 2 <= len(rows) <= 4
    models = load_models(final)
    assert not models.report.warnings
    changed = load_sd(final, OFFICIAL_FILES["generator"])
    before = load_sd(init, OFFICIAL_FILES["generator"])
    assert any(not torch.equal(changed[k], before[k]) for k in before)
    for n in ("appearance", "motion", "audio"):  # encoders frozen
        a, b = load_sd(final, OFFICIAL_FILES[n]), load_sd(init, OFFICIAL_FILES[n])
        assert all(torch.equal(a[k], b[k]) for k in a), n

    # ComfyUI's Load Model node lists the folder under models/pdfgc and loads it
    import types

    from test_nodes import FakeComfy

    import nodes.models as model_nodes

    fake, root = FakeComfy(), tmp_path / "models" / "pdfgc"
    weights_copy(final, root / "person")
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(tmp_path / "models")
    fp.get_folder_paths = lambda name: [str(root)]
    pkg = types.ModuleType("comfy")
    pkg.model_management, pkg.utils, pkg.model_patcher = fake.mm, fake.utils, fake.patcher
    for name, mod in (("comfy", pkg), ("comfy.model_management", fake.mm), ("comfy.utils", fake.utils),
                      ("comfy.model_patcher", fake.patcher), ("folder_paths", fp)):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, mod)
    assert "person/" in model_nodes.list_checkpoints()
    handle, info = model_nodes.PDFGC_LoadModel().load("person/", "fp32", "fast")["result"]
    assert "loaded person/" in info and handle.models.generator is not None
