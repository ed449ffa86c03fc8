"""Sample inputs for the templates: every file exists, the installer copies only missing ones and
never replaces a user's file."""

import os

from nodes._samples import ATTRIBUTION, SAMPLE_INPUTS, SAMPLES, install_sample_inputs


def test_every_sample_exists_and_is_small():
    for src in SAMPLE_INPUTS.values():
        p = SAMPLES / src
        assert p.is_file() and 0 < p.stat().st_size < 1_000_000, src


def test_install_copies_missing_files_only(tmp_path):
    (tmp_path / "pdfgc_anne.png").write_bytes(b"the user's own file")
    os.symlink(tmp_path / "nowhere", tmp_path / "pdfgc_speech.mp3")  # even a dangling link is kept
    copied = install_sample_inputs(tmp_path)
    assert set(copied) == set(SAMPLE_INPUTS) - {"pdfgc_anne.png", "pdfgc_speech.mp3"} | {ATTRIBUTION}
    assert (tmp_path / "pdfgc_anne.png").read_bytes() == b"the user's own file"
    assert (tmp_path / "pdfgc_pose.mp4").read_bytes() == (SAMPLES / "videos/pose.mp4").read_bytes()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]
    assert install_sample_inputs(tmp_path) == []
