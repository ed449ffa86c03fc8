"""Inputs a hostile or careless user gives: checkpoints with tensors that hold no plain values or
that unpack far beyond their size, images that declare gigapixels, numbers out of range on the
command line, folders with symlink loops, FIFOs and devices, termination signals, outputs that are
device nodes, and what the command line shows meanwhile. One test per row of docs/BAD_INPUTS.md
("Hostile inputs"); each one failed (or hung) before its fix.

Hang-prone steps run under :func:`deadline`, which turns a hang into a test failure.
"""

from __future__ import annotations

import io
import logging
import os
import re
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import tarfile
import time
import tracemalloc
import types
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
import torch

from pdfgc_core import cli, images, media, pipeline
from pdfgc_core.checkpoints import load_models
from pdfgc_core.errors import CheckpointError, InputError, MediaError
from pdfgc_core.factors import Factor, save_factor
from pdfgc_core.networks import build_network

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
SR = 16000
OFFICIAL = ("appearance_model.pth", "motion_model.pth", "audio_model.pth", "generator_model.pth")


# --------------------------------------------------------------------------- helpers


class Hang(BaseException):
    """Raised by :func:`deadline`; not an Exception (nor an OSError, as TimeoutError is), so code
    under test that swallows errors cannot swallow it."""


@contextmanager
def deadline(seconds: float):
    """Raise :class:`Hang` in the block after ``seconds`` (SIGALRM, repeated every second): a hang
    fails the test instead of stalling the suite."""

    def fire(signum, frame):
        raise Hang(f"still running after {seconds} s: it hangs")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def models():
    from pdfgc_synthetic import synthetic_checkpoint

    return load_models(synthetic_checkpoint())


def speech(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    x = 0.3 * env * sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 700), 1)) / 2
    return (x + 0.01 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)


def wav(path: Path, seconds: float) -> Path:
    sf.write(str(path), speech(seconds), SR, subtype="FLOAT")
    return path


def run_cli(capsys, *argv) -> tuple[int, str]:
    rc = cli.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def render_args(tmp: Path, audio: Path, **over) -> list:
    args = {"--appearance": SAMPLES / "anne.png", "--audio": audio, "--out": tmp / "out" / "v.mp4", "--device": "cpu"}
    args.update(over)
    return ["render", *[x for k, v in args.items() if v is not None for x in (k, v)]]


def pth_bytes(sd: dict, compress: int = zipfile.ZIP_STORED) -> bytes:
    """``torch.save(sd)``, its zip members re-packed with ``compress``."""
    buf = io.BytesIO()
    torch.save(sd, buf)
    if compress == zipfile.ZIP_STORED:
        return buf.getvalue()
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            z.writestr(info.filename, src.read(info.filename), compress_type=compress)
    return out.getvalue()


def official_folder(folder: Path, audio_file: bytes) -> Path:
    """A folder of the four official file names: ``audio_file`` as audio_model.pth (the network read
    first), junk for the others (never reached when the audio file is refused)."""
    folder.mkdir()
    for name in OFFICIAL:
        (folder / name).write_bytes(audio_file if name == "audio_model.pth" else b"never read")
    return folder


def official_tar(path: Path, members: dict[str, bytes], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"checkpoints/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def png(width: int, height: int, depth: int = 8, color: int = 2, rows: bytes = b"") -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header is patched to declare ``width`` x ``height``."""
    data = bytearray(cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def fake_frames(engine, p, paste_back=False, **kw):
    """Stands in for ``pipeline.frames_u8``: black frames at once (these tests are about what
    happens around generation, not about the generator)."""
    b = p.settings.batch_size
    for s in range(0, p.num_frames, b):
        yield np.zeros((min(b, p.num_frames - s), 224, 224, 3), np.uint8)


# --------------------------------------------------------------------------- checkpoints


NON_PLAIN = {
    "meta": (lambda t: torch.empty(t.shape, device="meta"), "meta tensor"),
    "sparse_coo": (lambda t: t.to_sparse(), "layout torch.sparse_coo"),
    "sparse_csr": (lambda t: t.to_sparse_csr(), "layout torch.sparse_csr"),
    "quantized": (lambda t: torch.quantize_per_tensor(t, 0.1, 0, torch.qint8), "quantized"),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch: sparse CSR is beta, quantized is deprecated
@pytest.mark.parametrize("kind", list(NON_PLAIN))
@pytest.mark.parametrize("container", ["folder", "tar"])
def test_non_plain_tensors_in_a_checkpoint(tmp_path, kind, container):
    """Meta, sparse and quantized tensors are CheckpointErrors naming the file and the key, not
    torch errors from the validation or from load_state_dict. (.safetensors stores only dense
    tensors, so it cannot hold them.)"""
    sd = build_network("audio").state_dict()
    key = next(k for k, v in sd.items() if v.ndim == 2)
    make, words = NON_PLAIN[kind]
    data = pth_bytes({**sd, key: make(sd[key])})
    if container == "folder":
        path, where = official_folder(tmp_path / "ck", data), "audio_model.pth"
    else:
        path = official_tar(
            tmp_path / "checkpoints.tar", {n: data if n == "audio_model.pth" else b"x" for n in OFFICIAL}
        )
        where = "checkpoints.tar:checkpoints/audio_model.pth"
    with pytest.raises(CheckpointError) as e:
        load_models(path)
    msg = str(e.value)
    assert where in msg and key in msg and words in msg, msg


def test_odd_strides_are_plain_values(tmp_path):
    """A stride-0 (expanded) tensor is an ordinary dense tensor: its values load as they are."""
    sd = build_network("audio").state_dict()
    key = next(k for k, v in sd.items() if v.ndim == 2)
    sd[key] = sd[key][:1].expand(sd[key].shape)
    path = official_folder(tmp_path / "ck", pth_bytes(sd))
    with pytest.raises(CheckpointError, match="motion_model.pth"):  # the audio file passed; the next is junk
        load_models(path)


def test_compressed_pth_member_that_unpacks_far_beyond_its_size(tmp_path, monkeypatch):
    """A deflated .pth member that unpacks ~1000x is refused from the zip directory, before torch
    or the checksum test unpack it; trained weights (about 1.1x) still load when deflated."""
    from pdfgc_core.checkpoints import safety

    bomb = pth_bytes({"w": torch.zeros(8 << 20)}, zipfile.ZIP_DEFLATED)  # 32 MiB of zeros in ~35 KB
    assert len(bomb) < 100_000
    path = official_folder(tmp_path / "bomb", bomb)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"audio_model.pth: refused before unpacking.*decompression bomb"):
            load_models(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB allocated: the member was unpacked"

    weights = pth_bytes(build_network("audio").state_dict(), zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointError, match="motion_model.pth"):  # the deflated audio weights passed
        load_models(official_folder(tmp_path / "deflated", weights))

    monkeypatch.setattr(safety, "MAX_CHECKPOINT_BYTES", 1 << 20)  # declared sizes add up past the cap
    big = pth_bytes({"w": torch.zeros(1 << 19)})  # 2 MiB, stored
    with pytest.raises(CheckpointError, match=r"declare 0\.0 GiB unpacked, more than"):
        load_models(official_folder(tmp_path / "big", big))


@pytest.mark.parametrize("mode", ["gz", "bz2", "xz"])
def test_compressed_tar_that_unpacks_far_beyond_its_size(tmp_path, mode):
    """A compressed checkpoints.tar whose member would unpack far past 10x the archive is refused
    while its headers are read: the member is never unpacked into memory."""
    zeros = bytes(32 << 20)
    members = {"audio_model.pth": zeros, **{n: b"x" for n in OFFICIAL if n != "audio_model.pth"}}
    path = official_tar(tmp_path / f"checkpoints.tar.{mode}", members, f"w:{mode}")
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with deadline(60):
            with pytest.raises(CheckpointError, match=r"refused before unpacking.*audio_model.pth.*decompression bomb"):
                load_models(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB allocated: the member was unpacked"  # xz: an 8 MiB window


# --------------------------------------------------------------------------- images


def test_image_declaring_a_huge_size_is_refused_before_decoding(tmp_path):
    """A 100000 x 100000 PNG header (OpenCV raised cv2.error), a JPEG declaring 65535 x 65535, and
    a real 18 KB PNG that decodes to 432 MB: refused from the header, as the appearance and as a
    frame of a folder, with the cap in the message."""
    huge = tmp_path / "huge.png"
    huge.write_bytes(png(100_000, 100_000, rows=bytes(1000)))
    jpg = tmp_path / "huge.jpg"
    jpg.write_bytes(jpeg_declaring(65535, 65535))
    bomb = tmp_path / "bomb.png"  # 1-bit grey, 12000 x 12000: 144 megapixels
    bomb.write_bytes(png(12000, 12000, depth=1, color=0, rows=bytes(12000 * (1 + 12000 // 8))))
    assert bomb.stat().st_size < 40_000
    for path, size in ((huge, "100000x100000"), (jpg, "65535x65535"), (bomb, "12000x12000")):
        with pytest.raises(MediaError, match=rf"{path.name}.* is {size} pixels .*more than the 100 megapixels"):
            pipeline.load_appearance_image(path)
        folder = tmp_path / f"frames_{path.name}"
        folder.mkdir()
        cv2.imwrite(str(folder / "000000.png"), np.zeros((8, 8, 3), np.uint8))
        (folder / f"000001{path.suffix}").write_bytes(path.read_bytes())
        with pytest.raises(MediaError, match=rf"000001{path.suffix}.* is {size} pixels"):
            media.read_frames(folder)


def test_pixel_cap_covers_every_format_and_video_streams(tmp_path, monkeypatch):
    """The header size is read for PNG, JPEG, BMP, WebP, TIFF, GIF and PNM, so the cap
    (PDFGC_MAX_IMAGE_PIXELS, here lowered) applies to each; a video is refused from its stream's
    declared size before a frame is decoded."""
    img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".webp", ".tiff", ".gif", ".ppm"):
        data = cv2.imencode(ext, img)[1].tobytes()
        assert images.image_header_size(data) == (64, 48), ext
    video = tmp_path / "v.mp4"
    with media.Mp4Writer(video, fps=25) as w:
        w.write(np.zeros((3, 48, 64, 3), np.uint8))
    monkeypatch.setenv("PDFGC_MAX_IMAGE_PIXELS", str(64 * 48))
    assert media.read_frames(video).shape == (3, 48, 64, 3)  # at the cap: fine
    cv2.imwrite(str(tmp_path / "ok.webp"), img)
    assert images.read_image(tmp_path / "ok.webp").shape == (48, 64, 3)
    monkeypatch.setenv("PDFGC_MAX_IMAGE_PIXELS", str(64 * 48 - 1))
    for ext in (".png", ".jpg", ".bmp", ".webp", ".tiff"):
        cv2.imwrite(str(tmp_path / f"x{ext}"), img)
        with pytest.raises(MediaError, match=rf"x\{ext}' is 64x48 pixels"):
            images.read_image(tmp_path / f"x{ext}")
    for read in (media.read_frames, media.probe, lambda p: next(media.iter_frames(p))):
        with pytest.raises(MediaError, match=r"Each frame of video .*v\.mp4 is 64x48 pixels.*PDFGC_MAX_IMAGE_PIXELS"):
            read(video)
    monkeypatch.setenv("PDFGC_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(InputError, match="PDFGC_MAX_IMAGE_PIXELS='lots'"):
        images.read_image(tmp_path / "x.png")


# --------------------------------------------------------------------------- numbers on the command line


OUT_OF_RANGE = [
    ("--seed", str(2**64)),
    ("--seed", "-1"),
    ("--skip-first", "-1"),
    ("--pose-strength", "1e30"),
    ("--mouth-strength", "-1e30"),
    ("--eye-strength", "nan"),
    ("--expression-strength", "inf"),
    ("--fps", "0"),
    ("--fps", "nan"),
    ("--fps", "1000"),
    ("--seconds", "-1"),
    ("--seconds", "nan"),
    ("--seconds", "1e305"),
    ("--batch-size", "0"),
    ("--batch-size", str(10**20)),
]


@pytest.mark.parametrize("flag,value", OUT_OF_RANGE)
def test_cli_numbers_out_of_range_name_the_flag(tmp_path, capsys, monkeypatch, flag, value):
    """Refused while the arguments are parsed: one line naming the flag, exit status 2, and no
    network is loaded."""

    def never(*a, **kw):
        raise AssertionError("the networks were loaded before the arguments were checked")

    monkeypatch.setattr(cli, "get_models", never)
    rc, err = run_cli(capsys, *render_args(tmp_path, tmp_path / "a.wav"), f"{flag}={value}")  # "=": -1e30 is a value
    assert rc == 2, err
    assert err.startswith(f"error: argument {flag}: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


@pytest.mark.slow  # full run only: end to end, and the inner loop must stay under 3 minutes
def test_non_finite_strength_names_the_strength_before_any_encoding(models, tmp_path):
    """In the library too: a NaN or infinite strength is named as a strength, before a driver is
    read (the driver here does not exist, so reading it would fail first)."""
    engine = pipeline.Engine(models, device="cpu")
    gone = pipeline.Driver(tmp_path / "no-such-driver")
    for bad in (float("nan"), float("-inf")):
        s = pipeline.RenderSettings(strengths={"mouth": 1.0, "pose": bad})
        with pytest.raises(InputError) as e:
            pipeline.plan(engine, SAMPLES / "anne.png", (speech(0.2)[None], SR), {"pose": gone}, s)
        assert str(e.value).startswith(f"pose strength {bad!r} is not a finite number"), e.value
        assert "driver" not in str(e.value)


# --------------------------------------------------------------------------- listings


def make_strange_folder(root: Path) -> list[str]:
    """Symlink loops (two links to the folder itself: ``os.walk(followlinks=True)`` explores 2^40
    paths), a link cycle, a dangling link, a FIFO, a socket, a link to a device, a file whose
    safetensors header claims 64 MiB, and two real factor files. Returns the real ones."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "a").symlink_to(".")
    (root / "b").symlink_to(".")
    (root / "c1").symlink_to("c2")
    (root / "c2").symlink_to("c1")
    (root / "gone.safetensors").symlink_to("nowhere")
    os.mkfifo(root / "pipe.safetensors")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.safetensors"))
    sock.close()
    (root / "dev.safetensors").symlink_to("/dev/zero")
    with open(root / "huge.safetensors", "wb") as f:  # sparse: header length 64 MiB, then holes
        f.write((64 << 20).to_bytes(8, "little"))
        f.truncate((64 << 20) + 8)
    f = Factor("pose", torch.zeros(3, 6))
    save_factor(f, root / "good.safetensors")
    save_factor(f, root / "sub" / "deeper.safetensors")
    return ["good.safetensors", "sub/deeper.safetensors"]


def fake_folder_paths(tmp: Path):
    """ComfyUI's ``folder_paths`` as the nodes use it, with ComfyUI's own recursive walker
    (``os.walk(followlinks=True)``) behind ``get_filename_list``."""

    def comfy_walk(name):
        out = []
        for dirpath, _, files in os.walk(tmp / "models" / "pdfgc", followlinks=True):
            out += [os.path.relpath(os.path.join(dirpath, f), tmp / "models" / "pdfgc") for f in files]
        return out

    return types.SimpleNamespace(
        get_input_directory=lambda: str(tmp / "input"),
        get_output_directory=lambda: str(tmp / "output"),
        get_folder_paths=lambda name: [str(tmp / "models" / "pdfgc")],
        get_filename_list=comfy_walk,
        models_dir=str(tmp / "models"),
    )


def test_listings_survive_symlink_loops_fifos_devices_and_huge_headers(tmp_path, monkeypatch):
    """The Load Factor list (ComfyUI input/ and output/) and the Load Model list (models/pdfgc)
    come back at once from folders that hung them: nothing but regular files is opened, each
    folder is entered once, and no header beyond 1 MiB is read."""
    from nodes import factor_io
    from nodes import models as model_nodes

    fp = fake_folder_paths(tmp_path)
    monkeypatch.setattr(factor_io, "_folder_paths", lambda: fp)
    monkeypatch.setattr(model_nodes, "_folder_paths", lambda: fp)
    real = make_strange_folder(tmp_path / "input")
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "loop").symlink_to("..")
    ck = tmp_path / "models" / "pdfgc"
    ck.mkdir(parents=True)
    (ck / "self").symlink_to(".")
    (ck / "again").symlink_to(".")
    os.mkfifo(ck / "fifo.tar")
    (ck / "pdfgc.safetensors").write_bytes(b"{}")
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        with deadline(30):
            factors = factor_io.list_factor_files()
            checkpoints = model_nodes.list_checkpoints()
        took = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert factors == real + [f"loop/input/{n} [output]" for n in real]  # output/loop -> the tmp root
    assert checkpoints == ["pdfgc.safetensors"]
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB allocated: an oversized header was read"
    print(f"\nlisted the strange folders in {took:.2f} s")


def test_listings_are_bounded_in_depth_count_and_time(tmp_path, caplog, monkeypatch):
    """One core listing serves every folder scan; it stops at a depth, a number of entries and a
    time budget, says so, and the Load Factor list logs the partial listing."""
    from nodes import factor_io

    deep = tmp_path / "deep"
    leaf = deep.joinpath(*[f"d{i}" for i in range(12)])
    leaf.mkdir(parents=True)
    (leaf / "f.safetensors").write_bytes(b"")
    (deep / "top.safetensors").write_bytes(b"")
    found = media.list_files(deep, [".safetensors"], recursive=True)
    assert found.files == ["top.safetensors"] and "nested more than 8 levels" in found.stopped
    assert media.list_files(deep, [".safetensors"], recursive=True, max_depth=12).files == [
        "d0/d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/d11/f.safetensors",
        "top.safetensors",
    ]
    many = tmp_path / "many"
    many.mkdir()
    for i in range(50):
        (many / f"{i:02d}.png").write_bytes(b"")
    part = media.list_files(many, [".png"], max_entries=20)
    assert len(part.files) == 20 and "more than 20 entries" in part.stopped
    slow = media.list_files(many, [".png"], accept=lambda p: time.sleep(0.02) or True, max_seconds=0.1)
    assert 0 < len(slow.files) < 50 and "took more than 0.1 s" in slow.stopped
    with caplog.at_level(logging.WARNING, logger="pdfgc"):
        assert factor_io._factor_files(str(deep)) == []  # empty files are not factor files
    assert "lists only part of" in caplog.text and "nested" in caplog.text
    from pdfgc_core.media import read as media_read

    monkeypatch.setattr(media_read, "MAX_FRAME_FILES", 20)
    with pytest.raises(MediaError, match="not read: it holds more than 20 entries"):
        media.list_frame_files(many)


def test_fifos_and_devices_are_never_opened_as_inputs(tmp_path):
    """A FIFO given as a driver video, an appearance image or a checkpoint (opening one blocks until
    a writer comes: ffmpeg and tarfile hung) and a device as a driver are refused at once; a FIFO
    inside a frame folder is skipped."""
    for name in ("drv.mp4", "face.png", "checkpoints.tar"):
        os.mkfifo(tmp_path / name)
    with deadline(30):
        for read in (media.read_frames, media.probe):
            with pytest.raises(MediaError, match=r"drv\.mp4 is a FIFO \(named pipe\), not a regular file"):
                read(tmp_path / "drv.mp4")
        with pytest.raises(MediaError, match=r"/dev/zero is a character device"):
            media.read_frames("/dev/zero")
        with pytest.raises(MediaError, match=r"face\.png' is a FIFO"):
            pipeline.load_appearance_image(tmp_path / "face.png")
        with pytest.raises(CheckpointError, match=r"checkpoints\.tar: is a FIFO"):
            load_models(tmp_path / "checkpoints.tar")
        folder = tmp_path / "frames"
        folder.mkdir()
        cv2.imwrite(str(folder / "000000.png"), np.zeros((8, 8, 3), np.uint8))
        os.mkfifo(folder / "000001.png")
        assert [p.name for p in media.list_frame_files(folder)] == ["000000.png"]


# --------------------------------------------------------------------------- signals


def _wait_for(proc: subprocess.Popen, text: bytes, seconds: float) -> bytes:
    """Read the child's stderr until ``text`` appears (progress lines end in \\r, not \\n)."""
    seen, end = b"", time.monotonic() + seconds
    fd = proc.stderr.fileno()
    while text not in seen:
        left = end - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise AssertionError(f"no {text!r} within {seconds} s: {seen.decode(errors='replace')[-2000:]}")
        if select.select([fd], [], [], min(left, 1.0))[0]:
            seen += os.read(fd, 65536)
    return seen


def _processes_using(path: Path) -> list[str]:
    out = []
    for d in Path("/proc").iterdir():
        try:
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if str(path).encode() in cmd:
            out.append(cmd.replace(b"\0", b" ").decode(errors="replace"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_termination_signal_mid_render_leaves_no_partial_file(tmp_path, sig):
    """``kill`` (SIGTERM) or a closed terminal (SIGHUP) during generation: like Ctrl-C, the mp4's
    hidden temporary files are removed, ffmpeg is stopped, and the exit status is 128 + signal."""
    from pdfgc_synthetic import synthetic_checkpoint

    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("kept")
    cmd = [
        sys.executable,
        "-m",
        "pdfgc_core",
        *render_args(tmp_path, wav(tmp_path / "s.wav", 1.5), **{"--batch-size": "1"}),
        "--checkpoint",
        str(synthetic_checkpoint()),
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _wait_for(proc, b" frames, ", 400)  # the first generated frame went to ffmpeg
        for _ in range(100):  # ffmpeg creates its (hidden, temporary) output as it starts
            if any(p.name.startswith(".") for p in out.iterdir()):
                break
            time.sleep(0.1)
        assert any(p.name.startswith(".") for p in out.iterdir()), "no temporary file while rendering?"
        os.kill(proc.pid, sig)
        rc = proc.wait(timeout=120)
        err = proc.stderr.read().decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 128 + sig, err
    assert f"terminated by {signal.Signals(sig).name}; no partial output" in err
    assert sorted(p.name for p in out.iterdir()) == ["earlier.txt"]
    assert not _processes_using(out), "ffmpeg still runs"


# --------------------------------------------------------------------------- outputs


def strange_outputs(tmp: Path) -> dict[str, Path]:
    """A FIFO, a socket, a symlink to /dev/null and (where allowed) a character device node."""
    d = tmp / "strange"
    d.mkdir()
    nodes = {"fifo": d / "fifo.mp4", "socket": d / "sock.mp4", "link to /dev/null": d / "null-link.mp4"}
    os.mkfifo(nodes["fifo"])
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(nodes["socket"]))
    s.close()
    nodes["link to /dev/null"].symlink_to("/dev/null")
    try:
        os.mknod(d / "null.mp4", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        nodes["device"] = d / "null.mp4"
    except (PermissionError, OSError):
        pass  # no CAP_MKNOD here: the symlink to /dev/null covers the device case
    return nodes


def _node_state(p: Path):
    return (p.is_symlink(), stat.S_IFMT(os.stat(p).st_mode))


def test_output_that_is_not_a_regular_file_is_refused(tmp_path, capsys, monkeypatch):
    """--out, --frames-dir files, convert's target and factor files go through one check: a device
    node, FIFO, socket or folder is never written over nor replaced; the command line refuses it
    before any work."""
    nodes = strange_outputs(tmp_path)
    before = {k: _node_state(p) for k, p in nodes.items()}
    factor = Factor("pose", torch.zeros(2, 6))
    for what, p in nodes.items():
        with pytest.raises(MediaError, match="not a regular file; refusing to replace it"):
            with media.atomic_write(p) as tmp:
                tmp.write_bytes(b"data")
        with pytest.raises(MediaError, match="not a regular file"):
            media.Mp4Writer(p, fps=25)
        with pytest.raises(MediaError, match="not a regular file"):
            save_factor(factor, p)
        with pytest.raises(MediaError, match="not a regular file"):
            media.write_frames_png(p.parent, np.zeros((1, 4, 4, 3), np.uint8), pattern=p.name)
        assert _node_state(p) == before[what], what
    with pytest.raises(MediaError, match="is a folder"):
        media.Mp4Writer(tmp_path, fps=25)

    target = tmp_path / "late.mp4"  # a FIFO appears at the target while the file is written
    with pytest.raises(MediaError, match="FIFO"):
        with media.atomic_write(target) as tmp:
            tmp.write_bytes(b"data")
            os.mkfifo(target)
    assert stat.S_ISFIFO(os.lstat(target).st_mode) and sorted(os.listdir(tmp_path)) == ["late.mp4", "strange"]

    def never(*a, **kw):
        raise AssertionError("the networks were loaded for an output that cannot be written")

    monkeypatch.setattr(cli, "get_models", never)
    for what, p in nodes.items():
        rc, err = run_cli(capsys, *render_args(tmp_path, tmp_path / "a.wav", **{"--out": p}))
        assert rc == 2 and err.startswith(f"error: Output {p} is ") and "not a regular file" in err, err
        assert _node_state(p) == before[what], what
    assert sorted(os.listdir(nodes["fifo"].parent)) == sorted(p.name for p in nodes.values())  # nothing left


# --------------------------------------------------------------------------- what the command line shows


@pytest.mark.slow  # full run only: end to end, and the inner loop must stay under 3 minutes
def test_error_after_progress_starts_on_its_own_line(models, tmp_path, capsys, monkeypatch):
    """The frame counter is rewritten with \\r; an error (or an interrupt) after it is printed on a
    new line, not glued to the counter."""
    monkeypatch.setattr(cli, "get_models", lambda checkpoint, allow_synthetic: models)

    def failing(*a, **kw):
        for i, chunk in enumerate(fake_frames(*a, **kw)):
            if i == 1:
                raise MediaError("simulated disk full")
            yield chunk

    monkeypatch.setattr(pipeline, "frames_u8", failing)
    for fail in (MediaError, KeyboardInterrupt):
        if fail is KeyboardInterrupt:

            def interrupted(*a, **kw):
                yield from fake_frames(*a, **kw)
                raise KeyboardInterrupt

            monkeypatch.setattr(pipeline, "frames_u8", interrupted)
        rc, err = run_cli(capsys, *render_args(tmp_path, wav(tmp_path / "s.wav", 0.3), **{"--batch-size": "2"}))
        assert rc == (2 if fail is MediaError else 130), err
        assert re.search(r"\r\[pdfgc\] 2/5 frames[^\n]*\n", err), err  # the counter was on screen
        last = err.rstrip("\n").split("\n")[-1]
        assert last in ("error: simulated disk full", "interrupted; no partial output was left behind"), repr(last)
        assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


@pytest.mark.slow  # full run only: end to end, and the inner loop must stay under 3 minutes
def test_cli_shows_progress_while_reading_and_encoding_inputs(models, tmp_path, capsys, monkeypatch):
    """Before generation the command line says what it is doing: the networks, the appearance,
    the audio, the lips and each driver (with counts and an ETA); the demo no longer sits silent."""
    monkeypatch.setattr(cli, "get_models", lambda checkpoint, allow_synthetic: models)
    monkeypatch.setattr(pipeline, "frames_u8", fake_frames)
    drivers = SAMPLES / "drivers"
    argv = render_args(
        tmp_path,
        wav(tmp_path / "s.wav", 0.5),
        **{"--pose": drivers / "pose", "--eye": drivers / "pose", "--expression": drivers / "expression"},
    )
    rc, err = run_cli(capsys, *argv)
    assert rc == 0, err
    shown = [ln.strip() for ln in re.split(r"[\r\n]", err) if ln.strip()]
    n = int(re.search(r"\[pdfgc\] (\d+) frames at 25 fps", err).group(1))
    assert 8 < n < 16  # 0.5 s of speech: the lips are encoded in more than one part
    steps = [
        "[pdfgc] loading the networks ...",
        "[pdfgc] reading the appearance image ...",
        "[pdfgc] decoding the audio and computing its mel spectrogram ...",
        "[pdfgc] encoding the appearance ...",
        f"[pdfgc] encoding the lips: 0/{n}",
        re.compile(rf"\[pdfgc\] encoding the lips: [1-9]\d*/{n}, ETA"),  # a part done, n not yet
        f"[pdfgc] encoding the lips: {n}/{n}",
        f"[pdfgc] encoding the pose/eye driver {drivers / 'pose'}: 0/{n}",
        f"[pdfgc] encoding the pose/eye driver {drivers / 'pose'}: {n}/{n}",
        f"[pdfgc] encoding the expression driver {drivers / 'expression'}: {n}/{n}",
        f"[pdfgc] {n} frames at 25 fps; encoded in",
        f"[pdfgc] {n}/{n} frames",
        "[pdfgc] wrote",
    ]

    def first(step) -> int | None:
        hit = step.match if isinstance(step, re.Pattern) else (lambda ln: ln.startswith(step))
        return next((i for i, ln in enumerate(shown) if hit(ln)), None)

    at = [first(step) for step in steps]
    assert None not in at and at == sorted(at), "\n".join(shown)
