"""pdfgc_core.media: frame folders / images / videos in, atomic mp4 with sound out.

All media are made here with numpy, OpenCV and the imageio-ffmpeg binary (16..64 px frames,
a 440 Hz tone), so the tests need no files and run in a few seconds.
"""

import gc
import itertools
import os
import subprocess
import time
import tracemalloc
from fractions import Fraction

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
import soundfile

from pdfgc_core.errors import InputError, MediaError
from pdfgc_core.media import (
    MediaInfo,
    Mp4Writer,
    atomic_write,
    iter_frames,
    list_frame_files,
    probe,
    read_frames,
    write_frames_png,
)

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
SR = 16000


def gradient_frames(n, h=48, w=64):
    """Smooth moving gradients, uint8 [n,h,w,3] (what a face video looks like to x264)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return (
        np.stack([np.stack([xx * 3 + i, yy * 4 + 2 * i, np.full_like(xx, 100 + i)], -1) for i in range(n)])
        .clip(0, 255)
        .astype(np.uint8)
    )


def tone(seconds, freq=440.0, amp=0.3):
    t = np.arange(int(round(SR * seconds))) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def decode_audio(path):
    """Mono float32 at 16 kHz of the first audio stream of ``path``."""
    r = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", str(SR), "-f", "f32le", "-"],
        capture_output=True,
        check=True,
    )
    return np.frombuffer(r.stdout, np.float32)


def encode_reference_video(path, frames, fps=25):
    """Encode with imageio-ffmpeg's own writer, independent of Mp4Writer."""
    h, w = frames.shape[1:3]
    gen = imageio_ffmpeg.write_frames(
        str(path), (w, h), fps=fps, macro_block_size=1, output_params=["-preset", "ultrafast", "-crf", "18"]
    )
    gen.send(None)
    for f in frames:
        gen.send(np.ascontiguousarray(f))
    gen.close()


def leftovers(folder, keep=()):
    return sorted(n for n in os.listdir(folder) if n not in keep)


# ---------------------------------------------------------------------------------------
# writing + probing + reading back


def test_mp4_with_audio_round_trip(tmp_path):
    frames = gradient_frames(30)
    out = tmp_path / "talk.mp4"
    with Mp4Writer(out, 25, (tone(1.2), SR)) as w:
        w.write(frames[:10])
        for f in frames[10:]:
            w.write(f)
    assert w.frames_written == 30 and w.size == (64, 48)
    assert leftovers(tmp_path) == ["talk.mp4"]

    info = probe(out)
    assert isinstance(info, MediaInfo)
    assert (info.kind, info.num_frames, info.fps, info.width, info.height, info.has_audio) == (
        "video",
        30,
        25.0,
        64,
        48,
        True,
    )
    assert info.duration == pytest.approx(1.2, abs=0.04)

    back = read_frames(out)
    assert back.shape == (30, 48, 64, 3) and back.dtype == np.uint8
    err = np.abs(back.astype(np.int16) - frames)
    # measured: mean 1.67, max 8 (libx264 crf 18, yuv420p, BT.601 both ways)
    assert err.mean() < 2.5 and err.max() <= 16

    audio = decode_audio(out)
    assert abs(len(audio) / SR - 1.2) < 0.03
    spectrum = np.abs(np.fft.rfft(audio[1600:-1600]))
    assert np.fft.rfftfreq(len(audio) - 3200, 1 / SR)[spectrum.argmax()] == pytest.approx(440, abs=5)


@pytest.mark.parametrize("seconds", [0.5, 3.0])
def test_audio_is_padded_or_cut_to_the_video(tmp_path, seconds):
    out = tmp_path / "o.mp4"
    with Mp4Writer(out, 25, (tone(seconds)[None], SR)) as w:  # [C,N] waveform
        w.write(gradient_frames(30, 16, 16))
    audio = decode_audio(out)
    assert abs(len(audio) / SR - 1.2) < 0.03
    rms = lambda x: float(np.sqrt(np.mean(x**2)))  # noqa: E731
    assert rms(audio[: SR // 4]) > 0.1
    if seconds < 1.2:
        assert rms(audio[int(0.7 * SR) :]) < 1e-3  # silence after the tone ended at 0.5 s
    else:
        assert rms(audio[int(0.9 * SR) : int(1.1 * SR)]) > 0.1


def test_audio_file_and_offset(tmp_path):
    wav = tmp_path / "speech.wav"
    soundfile.write(wav, np.concatenate([np.zeros(int(0.4 * SR), np.float32), tone(2.0)]), SR)
    plain, shifted = tmp_path / "plain.mp4", tmp_path / "shifted.mp4"
    for path, offset in ((plain, 0.0), (shifted, 0.4)):
        with Mp4Writer(path, 25, wav, audio_offset=offset) as w:
            w.write(gradient_frames(25, 16, 16))
    rms = lambda x: float(np.sqrt(np.mean(x**2)))  # noqa: E731
    a, b = decode_audio(plain), decode_audio(shifted)
    assert rms(a[: int(0.3 * SR)]) < 1e-3 < 0.1 < rms(b[: int(0.3 * SR)])
    assert abs(len(b) / SR - 1.0) < 0.03
    assert leftovers(tmp_path) == ["plain.mp4", "shifted.mp4", "speech.wav"]


def test_odd_size_is_padded_by_repeating_the_edge(tmp_path):
    frames = gradient_frames(10, 47, 63)
    out = tmp_path / "odd.mp4"
    with Mp4Writer(out, 25) as w:
        w.write(frames.astype(np.float32) / 255.0)  # float 0..1 input
    info = probe(out)
    assert (info.width, info.height, info.has_audio) == (64, 48, False)
    back = read_frames(out).astype(np.int16)
    assert np.abs(back[:, :47, :63] - frames).mean() < 2.5
    assert np.abs(back[:, 47, :63] - back[:, 46, :63]).max() <= 8  # repeated row, not black
    assert np.abs(back[:, :47, 63] - back[:, :47, 62]).max() <= 8


def test_fraction_fps_and_yuv444(tmp_path):
    out = tmp_path / "ntsc.mp4"
    with Mp4Writer(out, Fraction(30000, 1001), pix_fmt="yuv444p", crf=10, preset="ultrafast") as w:
        w.write(gradient_frames(12, 17, 19))  # odd sizes are fine without chroma subsampling
    info = probe(out)
    assert (info.width, info.height, info.num_frames) == (19, 17, 12)
    assert info.fps == pytest.approx(29.97, abs=0.01)


# ---------------------------------------------------------------------------------------
# atomicity


def test_exception_inside_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with Mp4Writer(tmp_path / "o.mp4", 25, (tone(1.0), SR)) as w:
            w.write(gradient_frames(5, 16, 16))
            proc = w._proc
            raise RuntimeError("boom")
    assert proc.poll() is not None  # ffmpeg was stopped
    assert leftovers(tmp_path) == []


def test_failure_keeps_a_previous_file(tmp_path):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"previous result")
    for exc in (KeyboardInterrupt, ValueError):
        with pytest.raises(exc):
            with Mp4Writer(out, 25, (tone(1.0), SR)) as w:
                w.write(gradient_frames(5, 16, 16))
                raise exc()
    w = Mp4Writer(out, 25)
    w.write(gradient_frames(3, 16, 16))
    w.abort()
    with pytest.raises(MediaError, match="already closed"):
        w.write(gradient_frames(1, 16, 16))
    assert out.read_bytes() == b"previous result"
    assert leftovers(tmp_path) == ["o.mp4"]


def test_ffmpeg_failure_is_a_media_error_and_cleans_up(tmp_path):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"previous result")
    with pytest.raises(MediaError, match="ffmpeg"):
        with Mp4Writer(out, 25, preset="no-such-preset") as w:
            w.write(gradient_frames(3, 16, 16))
    assert out.read_bytes() == b"previous result"
    assert leftovers(tmp_path) == ["o.mp4"]


def test_no_frames_is_an_error(tmp_path):
    with pytest.raises(MediaError, match="No frames"):
        with Mp4Writer(tmp_path / "o.mp4", 25, (tone(1.0), SR)):
            pass
    assert leftovers(tmp_path) == []


def test_forgotten_writer_is_cleaned_up(tmp_path):
    w = Mp4Writer(tmp_path / "o.mp4", 25, (tone(1.0), SR))
    w.write(gradient_frames(3, 16, 16))
    proc = w._proc
    assert leftovers(tmp_path)  # at least the temporary WAV (ffmpeg may not have opened its output yet)
    del w
    gc.collect()
    assert leftovers(tmp_path) == [] and proc.poll() is not None


def test_bad_inputs_to_writer(tmp_path):
    with pytest.raises(MediaError, match="does not exist"):
        Mp4Writer(tmp_path / "o.mp4", 25, tmp_path / "missing.wav")
    (tmp_path / "noise.wav").write_bytes(os.urandom(2000))
    with pytest.raises(MediaError, match="noise.wav"):
        Mp4Writer(tmp_path / "o.mp4", 25, tmp_path / "noise.wav")
    with pytest.raises(InputError, match="channels first"):
        Mp4Writer(tmp_path / "o.mp4", 25, (np.zeros((16000, 2), np.float32), SR))
    with pytest.raises(InputError, match="fps"):
        Mp4Writer(tmp_path / "o.mp4", 0)
    assert leftovers(tmp_path) == ["noise.wav"]

    with Mp4Writer(tmp_path / "o.mp4", 25) as w:
        w.write(gradient_frames(2, 16, 16))
        with pytest.raises(InputError, match="same size"):
            w.write(gradient_frames(1, 18, 16))
        with pytest.raises(InputError, match="shape"):
            w.write(np.zeros((16, 16, 5), np.uint8))
        w.write(gradient_frames(1, 16, 16))  # still usable after a rejected frame
    assert probe(tmp_path / "o.mp4").num_frames == 3


def test_writer_audio_goes_through_the_audio_validators():
    from pdfgc_core.media.write import _prepare_waveform

    wave = tone(0.5)[None]  # [1, N] float32
    pcm = np.round(wave * 32768).astype(np.int16)  # the same sound as 16-bit PCM
    np.testing.assert_allclose(_prepare_waveform(pcm, SR), _prepare_waveform(wave, SR), atol=1 / 32768)
    assert _prepare_waveform(wave, SR).shape == (wave.shape[-1], wave.shape[0])  # [N, C] for soundfile
    with pytest.raises(InputError, match="sample rate"):
        _prepare_waveform(wave, 500)
    with pytest.raises(InputError, match="NaN"):
        _prepare_waveform(np.full((1, 100), np.nan, np.float32), SR)


def test_atomic_write(tmp_path):
    out = tmp_path / "factors.npz"
    out.write_bytes(b"old")
    with pytest.raises(ZeroDivisionError):
        with atomic_write(out) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".npz" and not tmp.exists()
            np.savez(tmp, a=np.arange(3))
            1 / 0
    assert out.read_bytes() == b"old" and leftovers(tmp_path) == ["factors.npz"]

    with atomic_write(out) as tmp:
        np.savez(tmp, a=np.arange(3))
    assert np.load(out)["a"].tolist() == [0, 1, 2]
    assert leftovers(tmp_path) == ["factors.npz"]

    with pytest.raises(MediaError, match="Nothing was written"):
        with atomic_write(tmp_path / "sub" / "x.bin"):
            pass
    assert leftovers(tmp_path / "sub") == []


# ---------------------------------------------------------------------------------------
# frame folders and images


def test_folder_order_is_by_string(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    for name in ("10.png", "2.png", "1.PNG", "a.jpg", "b.JpEg", "c.bmp", "d.webp", ".hidden.png", "notes.txt"):
        if name.endswith("txt"):
            (tmp_path / name).write_text("x")
        else:
            cv2.imwrite(str(tmp_path / name), img)
    (tmp_path / "3.png").mkdir()
    names = [p.name for p in list_frame_files(tmp_path)]
    assert names == ["1.PNG", "10.png", "2.png", "a.jpg", "b.JpEg", "c.bmp", "d.webp"]
    assert names == sorted(names)


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(MediaError, match=str(tmp_path)):
        list_frame_files(tmp_path)
    (tmp_path / "readme.txt").write_text("no frames here")
    with pytest.raises(MediaError, match="no image files"):
        next(iter_frames(tmp_path))
    with pytest.raises(MediaError, match="does not exist"):
        iter_frames(tmp_path / "missing")


def test_frame_files_decode_like_cv2_imread_color(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    rgba = rng.integers(0, 256, (12, 10, 4), dtype=np.uint8)  # as RGBA
    deep = rng.integers(0, 65536, (12, 10, 3), dtype=np.uint16)  # as RGB
    gray16 = rng.integers(0, 65536, (12, 10), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "0_gray.png"), gray)
    cv2.imwrite(str(tmp_path / "1_rgba.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    cv2.imwrite(str(tmp_path / "2_deep.png"), cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "3_gray16.png"), gray16)
    got = list(iter_frames(tmp_path))
    assert all(f.shape == (12, 10, 3) and f.dtype == np.uint8 for f in got)
    np.testing.assert_array_equal(got[0], np.repeat(gray[..., None], 3, -1))  # replicated
    np.testing.assert_array_equal(got[1], rgba[..., :3])  # alpha dropped, not composited
    np.testing.assert_array_equal(got[2], (deep >> 8).astype(np.uint8))  # high byte
    np.testing.assert_array_equal(got[3], np.repeat((gray16 >> 8).astype(np.uint8)[..., None], 3, -1))
    info = probe(tmp_path)
    assert (info.kind, info.num_frames, info.fps, info.width, info.height, info.has_audio) == (
        "frames",
        4,
        None,
        10,
        12,
        False,
    )


def test_single_image_and_png_writer_round_trip(tmp_path):
    frames = gradient_frames(3, 9, 11)
    paths = write_frames_png(tmp_path / "out", frames.astype(np.float32) / 255.0, start_index=7)
    assert [p.name for p in paths] == ["000007.png", "000008.png", "000009.png"]
    np.testing.assert_array_equal(read_frames(tmp_path / "out"), frames)  # float k/255 -> k exactly
    np.testing.assert_array_equal(next(iter_frames(paths[1])), frames[1])
    info = probe(paths[1])
    assert (info.kind, info.num_frames, info.width, info.height) == ("image", 1, 11, 9)
    assert leftovers(tmp_path / "out") == ["000007.png", "000008.png", "000009.png"]


def test_unreadable_frame_names_the_file(tmp_path):
    write_frames_png(tmp_path, gradient_frames(2, 8, 8))
    (tmp_path / "000002.png").write_bytes(b"not a png")
    it = iter_frames(tmp_path)
    assert next(it).shape == (8, 8, 3)  # lazy: earlier frames still come
    next(it)
    with pytest.raises(MediaError, match="000002.png"):
        next(it)


def test_read_frames_limits_and_sizes(tmp_path):
    write_frames_png(tmp_path, gradient_frames(5, 8, 8))
    assert read_frames(tmp_path, max_frames=5).shape == (5, 8, 8, 3)
    with pytest.raises(MediaError, match="more than 4 frames"):
        read_frames(tmp_path, max_frames=4)
    with pytest.raises(MediaError, match="max_bytes"):
        read_frames(tmp_path, max_bytes=3 * 8 * 8 * 3 - 1)
    write_frames_png(tmp_path, gradient_frames(1, 9, 8), start_index=5)
    with pytest.raises(MediaError, match="000005.png is 8x9"):
        read_frames(tmp_path)
    assert read_frames(tmp_path, stop=5).shape == (5, 8, 8, 3)


# ---------------------------------------------------------------------------------------
# videos


def test_video_ranges_and_fps(tmp_path):
    frames = gradient_frames(30, 32, 32)
    vid = tmp_path / "v.mp4"
    encode_reference_video(vid, frames)
    full = read_frames(vid)
    assert full.shape == (30, 32, 32, 3)
    assert np.abs(full.astype(np.int16) - frames).mean() < 2.5
    np.testing.assert_array_equal(read_frames(vid, start=3, stop=20, step=4), full[3:20:4])
    assert len(list(iter_frames(vid, start=28, stop=100))) == 2
    assert len(list(iter_frames(vid, stop=0))) == 0
    assert len(list(iter_frames(vid, fps=12.5))) == 15
    with pytest.raises(InputError):
        iter_frames(vid, step=0)
    with pytest.raises(InputError):
        iter_frames(vid, fps=-1)


def test_corrupt_or_soundless_video(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(os.urandom(5000))
    with pytest.raises(MediaError, match="bad.mp4"):
        next(iter_frames(bad))
    with pytest.raises(MediaError, match="bad.mp4"):
        probe(bad)
    audio_only = tmp_path / "voice.mkv"
    subprocess.run(
        [
            FFMPEG,
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=0.5",
            "-c:a",
            "flac",
            str(audio_only),
        ],
        check=True,
    )
    with pytest.raises(MediaError, match="no decodable video stream"):
        read_frames(audio_only)
    with pytest.raises(MediaError, match="does not exist"):
        probe(tmp_path / "missing.mp4")


def test_iter_frames_streams_a_long_video(tmp_path):
    frames = gradient_frames(300, 64, 64)
    vid = tmp_path / "long.mp4"
    encode_reference_video(vid, frames)
    whole = frames.nbytes  # 3.7 MB
    del frames

    tracemalloc.start()
    try:
        n = 0
        for f in iter_frames(vid):
            assert f.shape == (64, 64, 3)
            n += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 300
    assert peak < whole / 10, f"peak {peak} B while streaming a {whole} B video"

    t0 = time.perf_counter()
    it = iter_frames(vid)
    assert len(list(itertools.islice(it, 3))) == 3
    it.close()  # stops ffmpeg; nothing else is decoded
    assert time.perf_counter() - t0 < 5
