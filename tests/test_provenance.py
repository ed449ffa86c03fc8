"""Provenance: the invisible watermark survives H.264 and resizing, is absent from untouched media and
from opted-out renders; written mp4 files carry container tags and a valid C2PA manifest; the checker
(CLI and node) reports all of it."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch

from pdfgc_core import __version__, cli, images, media, pipeline, provenance
from pdfgc_core.engine import MOTION_DIM, Engine
from pdfgc_core.errors import InputError, MediaError
from pdfgc_core.provenance import manifest
from pdfgc_core.provenance.check import check_file

SAMPLES = cli.SAMPLES


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """Real face frames, uint8 [5,224,224,3]: the portrait and four pose-driver frames."""
    drivers = media.read_frames(SAMPLES / "drivers" / "pose", start=2, stop=30, step=7)
    return np.concatenate([images.read_image(SAMPLES / "anne.png")[None], drivers])


@pytest.fixture(scope="module")
def marked(faces) -> np.ndarray:
    return provenance.embed(faces)


def _h264(frames: np.ndarray, path, crf: int) -> np.ndarray:
    with media.Mp4Writer(path, fps=25, crf=crf) as w:
        w.write(frames)
    return media.read_frames(path)


# --------------------------------------------------------------------------------------- payload


def test_payload_carries_the_version_and_corrects_three_errors():
    bits = provenance.payload_bits("0.1.0")
    assert bits.shape == (24,) and set(np.unique(bits)) <= {0, 1}
    assert provenance.decode_payload(2.0 * bits - 1) == ("0.1.0", True)
    assert provenance.decode_payload(provenance.payload_bits("3.17.9") * 2.0 - 1) == ("3.17.9", True)
    soft = 2.0 * bits - 1
    soft[[0, 11, 23]] *= -1  # three wrong bits: corrected
    assert provenance.decode_payload(soft) == ("0.1.0", True)
    soft[5] *= -1  # four: detected, not guessed
    assert provenance.decode_payload(soft) == (None, False)
    assert np.array_equal(provenance.payload_bits(), provenance.payload_bits(__version__))


def test_marking_keeps_type_shape_and_quality(faces, marked):
    assert marked.dtype == np.uint8 and marked.shape == faces.shape
    mse = np.mean((marked.astype(np.float64) - faces) ** 2)
    assert 10 * np.log10(255**2 / mse) > 34.0  # PSNR; docs/PROVENANCE.md has the measured figures
    as_float = provenance.embed(torch.from_numpy(faces[:2]).float() / 255)
    assert as_float.dtype == torch.float32 and as_float.shape == (2, 224, 224, 3)
    assert 0 <= float(as_float.min()) and float(as_float.max()) <= 1
    assert np.abs(as_float.numpy() * 255 - marked[:2]).max() <= 0.5 + 1e-3  # same mark, unrounded
    single = provenance.embed(faces[0])
    assert single.shape == (224, 224, 3) and np.array_equal(single, marked[0])


# --------------------------------------------------------------------------------------- robustness


def test_mark_survives_h264_per_frame(marked, tmp_path):
    decoded = _h264(marked, tmp_path / "marked.mp4", crf=23)
    for i, frame in enumerate(decoded):
        d = provenance.detect(frame, search=False)
        assert d.found and d.version == __version__, (i, d)
        assert d.scale == 1.0 and d.p_false_alarm < 1e-6


def test_mark_survives_2x_resize_and_h264_after_it(marked, tmp_path):
    up = np.stack([cv2.resize(f, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC) for f in marked])
    for frame in up[:2]:
        d = provenance.detect(frame, search=False)
        assert d.found and d.version == __version__ and d.scale == pytest.approx(2.0)
    video = provenance.detect(_h264(up, tmp_path / "up.mp4", crf=28), search=False)
    assert video.found and video.version == __version__ and video.frames == len(up)
    half = np.stack([cv2.resize(f, (112, 112), interpolation=cv2.INTER_AREA) for f in marked])
    assert provenance.detect(half, search=False).found


def test_mark_survives_crop_and_blur(marked):
    crop = np.ascontiguousarray(marked[:, 30:200, 45:205])  # any offset: the tile grid is found again
    blur = np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in marked])
    for frames in (crop, blur):
        d = provenance.detect(frames[0], search=False)
        assert d.found and d.version == __version__


def test_untouched_samples_are_not_detected(faces, tmp_path):
    for frame in faces[:2]:  # full scale search: the strictest setting for false alarms
        d = provenance.detect(frame)
        assert not d.found and d.p_false_alarm > 0.01, d
    assert not provenance.detect(faces).found  # as one video
    assert not provenance.detect(_h264(faces, tmp_path / "plain.mp4", crf=23), search=False).found
    noise = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    assert not provenance.detect(noise, search=False).found


def test_detect_rejects_bad_frames():
    with pytest.raises(InputError, match="NaN"):
        provenance.detect(np.full((8, 8, 3), np.nan, np.float32))
    with pytest.raises(InputError, match=r"\[H,W,3\]"):
        provenance.embed(np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match="dtype"):
        provenance.embed(np.zeros((4, 4, 3), np.int64))


# --------------------------------------------------------------------------------------- pipeline


@pytest.fixture(scope="module")
def engine():
    from pdfgc_synthetic import synthetic_checkpoint

    from pdfgc_core.checkpoints import load_models

    return Engine(load_models(synthetic_checkpoint()), device="cpu")


def test_pipeline_marks_by_default_and_opt_out_leaves_no_mark(engine, caplog):
    appearance = engine.encode_appearance(images.to_network(images.read_image(SAMPLES / "anne.png")[None]))
    motion = torch.zeros(1, MOTION_DIM)
    plan = pipeline.Plan(appearance, motion, {}, settings=pipeline.RenderSettings(batch_size=1))
    with caplog.at_level(logging.WARNING, logger="pdfgc"):
        plain = np.concatenate(list(pipeline.frames_u8(engine, plan, watermark=False)))
    assert "watermark OFF" in caplog.text
    marked = np.concatenate(list(pipeline.frames_u8(engine, plan)))
    core = images.network_to_u8(engine.generate_all(appearance, motion, batch_size=1))
    assert np.array_equal(plain, core)  # opt-out: exactly the generator's frames
    assert np.array_equal(marked, provenance.embed(core))
    assert not provenance.detect(plain).found
    assert provenance.detect(marked, search=False).version == __version__


# --------------------------------------------------------------------------------------- files


def test_mp4_tags_always_written(tmp_path, marked):
    out = tmp_path / "tags.mp4"
    with media.Mp4Writer(out, fps=25, metadata=manifest.container_tags(watermarked=False)) as w:
        w.write(marked[:2])
    tags = manifest.read_container_tags(out)
    assert "AI-generated" in tags["comment"] and "opted out" in tags["comment"]
    assert f"PD-FGC {__version__}" in tags["description"]


@pytest.fixture
def local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for env in (manifest.CERT_ENV, manifest.KEY_ENV, manifest.TSA_ENV):
        monkeypatch.delenv(env, raising=False)
    return tmp_path / "cache" / "pdfgc" / "c2pa"


def test_c2pa_manifest_present_and_valid_on_written_mp4(tmp_path, marked, local_cache):
    pytest.importorskip("c2pa", reason='C2PA extra not installed (pip install "pd-fgc[c2pa]")')
    identity = manifest.signing_identity()
    assert identity.local and (local_cache / "local-signer-key.pem").stat().st_mode & 0o077 == 0
    out = tmp_path / "signed.mp4"
    with media.Mp4Writer(
        out,
        fps=25,
        audio=str(SAMPLES / "speech.mp3"),
        metadata=manifest.container_tags(),
        sign=manifest.mp4_signer(identity, watermarked=True),
    ) as w:
        w.write(marked)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    m = manifest.read_manifest(out)
    assert m["state"] == "Valid" and m["failures"] == ["signingCredential.untrusted"]  # local: untrusted only
    assert m["generator"].startswith(f"PD-FGC {__version__}") and m["ai_generated"]
    assert ("c2pa.created", manifest.DIGITAL_SOURCE_TYPE) in m["actions"]
    assert m["pdfgc"]["invisible_watermark"]["present"] and "NOT a trusted identity" in m["signer"]
    assert "AI-generated" in manifest.read_container_tags(out)["comment"]  # tags survive the signing
    info = media.probe(out)
    assert info.has_audio and info.num_frames == len(marked)

    report = check_file(out)
    assert report.found and report.watermark.found and report.c2pa["state"] == "Valid"
    assert "C2PA: manifest present, validation Valid" in report.text()

    data = bytearray(out.read_bytes())  # one changed byte in the video data: the hash no longer matches
    pos = data.find(b"mdat") + 200
    data[pos] ^= 0xFF
    tampered = tmp_path / "tampered.mp4"
    tampered.write_bytes(bytes(data))
    assert manifest.read_manifest(tampered)["state"] == "Invalid"

    # the same identity handed in as files (a user's certificate)
    cert, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    cert.write_bytes(identity.chain_pem)
    key.write_bytes(identity.key_pem)
    user = manifest.signing_identity(cert, key)
    assert not user.local and user.alg == "es256"
    plain, signed = tmp_path / "plain.mp4", tmp_path / "user.mp4"
    with media.Mp4Writer(plain, fps=25) as w:
        w.write(marked[:2])
    manifest.sign_mp4(plain, signed, user, title=signed.name, watermarked=False)
    m = manifest.read_manifest(signed)
    assert m["state"] == "Valid" and m["pdfgc"]["signer"] == "user-supplied certificate"
    assert not m["pdfgc"]["invisible_watermark"]["present"]


def test_signing_identity_rejects_bad_inputs(tmp_path, local_cache, monkeypatch):
    pytest.importorskip("cryptography")
    with pytest.raises(InputError, match="both a certificate chain and its private key"):
        manifest.signing_identity(cert=tmp_path / "a.pem")
    with pytest.raises(InputError, match="does not exist"):
        manifest.signing_identity(cert=tmp_path / "a.pem", key=tmp_path / "b.pem")
    (tmp_path / "a.pem").write_text("not pem")
    (tmp_path / "b.pem").write_text("-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n")
    with pytest.raises(InputError, match="not a PEM file"):
        manifest.signing_identity(cert=tmp_path / "a.pem", key=tmp_path / "b.pem")
    (tmp_path / "a.pem").write_text("-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n")
    with pytest.raises(InputError, match="not a readable unencrypted PEM private key"):
        manifest.signing_identity(cert=tmp_path / "a.pem", key=tmp_path / "b.pem")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a.pem"))  # a file: no cache folder can be made there
    with pytest.raises(InputError, match="cannot keep the local C2PA signing certificate"):
        manifest.signing_identity()


def test_failed_signing_leaves_no_file(tmp_path, marked):
    def broken(src, dst, final):
        raise MediaError("signing failed on purpose")

    out = tmp_path / "never.mp4"
    with pytest.raises(MediaError, match="on purpose"):
        with media.Mp4Writer(out, fps=25, sign=broken) as w:
            w.write(marked[:2])
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------- CLI and node


def test_cli_check_reports_and_exit_status(tmp_path, marked, capsys, local_cache):
    cv2.imwrite(str(tmp_path / "frame.png"), cv2.cvtColor(marked[0], cv2.COLOR_RGB2BGR))
    assert cli.main(["check", "--quick", str(tmp_path / "frame.png")]) == 0
    out = capsys.readouterr().out
    assert "watermark FOUND" in out and f"payload PD-FGC {__version__}" in out
    assert cli.main(["check", "--quick", str(SAMPLES / "anne.png")]) == 1
    assert "watermark not found" in capsys.readouterr().out
    assert cli.main(["check", str(tmp_path / "missing.mp4")]) == 2
    assert cli.main(["check", "--frames", "0", str(SAMPLES / "anne.png")]) == 2


def test_check_node_on_image_batches(marked, faces):
    from nodes import provenance as node

    check = node.PDFGC_CheckProvenance().check
    out = check(images.u8_to_comfy(marked[:3]), True)
    report, found = out["result"]
    assert found and "FOUND" in report and __version__ in report and out["ui"]["text"] == [report]
    report, found = check(images.u8_to_comfy(faces[:1]), False)["result"]
    assert not found and "not found" in report
    with pytest.raises(InputError, match=r"IMAGE batch \[B,H,W,3\]"):
        check(torch.zeros(2, 8, 8), True)
