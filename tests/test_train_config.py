"""Training configuration: the paper's defaults, overrides, and clear errors for bad settings."""

from __future__ import annotations

import pytest

from pdfgc_core.errors import InputError
from pdfgc_core.train import config


def test_defaults_are_the_papers():
    lip = config.load_config("lip")
    assert lip.head is lip.lip and lip.optim.betas == (0.0, 0.99)
    assert (lip.lip.lr, lip.lip.lr_decay, lip.lip.lr_decay_every, lip.lip.batch_size, lip.lip.epochs) == (
        1e-5, 0.93, 200_000, 32, 30,
    )  # fmt: skip
    assert lip.lip.negatives == 8 and lip.lip.negatives_from == "clip"
    for stage in ("eye", "pose"):
        h = config.load_config(stage).head
        assert (h.lr, h.lr_decay, h.lr_decay_every, h.batch_size, h.epochs) == (1e-5, 0.5, 80_000, 128, 30)


def test_file_and_set_override_in_order(tmp_path):
    f = tmp_path / "small.toml"
    f.write_text('[lip]\nlr = 1e-3\nbatch_size = 4\n[run]\nprecision = "bf16"\n')
    cfg = config.load_config("lip", f, ["lip.batch_size=2", "lip.audio_trainable=head", "optim.betas=[0.5, 0.9]"])
    assert cfg.lip.lr == 1e-3 and cfg.lip.batch_size == 2 and cfg.lip.audio_trainable == "head"
    assert cfg.run.precision == "bf16" and cfg.optim.betas == (0.5, 0.9)
    assert config.from_dict(cfg.to_dict()) == cfg
    assert cfg.differences(config.load_config("lip")) == [
        ("optim", "betas"), ("lip", "lr"), ("lip", "batch_size"), ("lip", "audio_trainable"), ("run", "precision"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "override, words",
    [
        ("lip.lrr=1", "unknown key lip.lrr"),
        ("head.lr=1", "unknown section [head]"),
        ("lip.batch_size=2.5", "whole number"),
        ("lip.lr=-1", "must be positive"),
        ("lip.negatives_from=other", "choose one of clip, clip+batch"),
        ("run.trunk_cache=1", "true or false"),
        ("optim.betas=[0.9]", "two numbers"),
        ("eye.lr_decay=2", "at most 1"),
        ("lip.lr", "SECTION.KEY=VALUE"),
    ],
)
def test_bad_settings_are_named(override, words):
    with pytest.raises(InputError, match=None) as e:
        config.load_config("lip", None, [override])
    assert words in str(e.value)


def test_bad_files_and_stage(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[lip\nlr = 1")
    with pytest.raises(InputError, match="not valid TOML"):
        config.load_config("lip", bad)
    with pytest.raises(InputError, match="does not exist"):
        config.load_config("lip", tmp_path / "missing.toml")
    with pytest.raises(InputError, match="stage 'gaze' is unknown"):
        config.load_config("gaze")
