"""From files to a talking-head clip: the official pipeline, streamed.

``render`` reads the appearance image, the speech and the three driving sources, encodes them
(drivers are read and encoded in chunks; only their small embeddings are kept), assembles the
per-frame motion with the official post-processing, and streams generated frames to a callback.
Peak memory is bounded by the chunk size, not the clip length.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import audio as audio_io
from . import images, media, provenance
from .engine import DRIVER_HEADS, OFFICIAL_BATCH, Appearance, Engine
from .errors import InputError
from .faces.landmarks import DETECTORS
from .factors import DEFAULT_FPS, MOTION_ORDER, Factor, PostProcess, combine_motion, scale

log = logging.getLogger("pdfgc")

OFFICIAL_SKIP = 2
OFFICIAL_MIN_DRIVER_FILES = OFFICIAL_SKIP + OFFICIAL_BATCH
"""The official code needs one full batch of driving frames after the skip (shorter ones crash it)."""
STRENGTH_WARN = 10.0
"""Factor strengths above this (in magnitude) are logged as a warning: the frames saturate."""
ALIGN_CHOICES = ("none", *DETECTORS)
"""``align`` values: ``none`` (inputs are already aligned crops) or a landmark backend."""
ALIGN_CHUNK = 256  # driver frames aligned together (one similarity per chunk, video mode)


@dataclass
class Driver:
    """One driving source for one or more heads (``pose``, ``eye``, ``expression``).

    ``source``: a folder of frames, a video file, an image file, or uint8 frames [N,H,W,3] RGB.
    ``skip_first``: frames dropped at the start; ``None`` = official behaviour (2 for a folder of
    frames, 0 otherwise). ``crop``: one of :data:`pdfgc_core.images.CROPS` (``"official"``: the
    official loader's crop, ``"none"``: resize only). ``align``: one of :data:`ALIGN_CHOICES`, a
    landmark backend that detects and aligns faces in ordinary footage first, or ``"none"`` for
    frames already aligned like the official samples."""

    source: str | Path | np.ndarray
    skip_first: int | None = None
    crop: str = "official"
    align: str = "none"


@dataclass
class RenderSettings:
    """Everything that shapes the motion. Strength 0 turns a factor off (zero = canonical)."""

    fps: float = DEFAULT_FPS
    audio_quality: str = "official"
    max_seconds: float | None = None
    strengths: dict = field(default_factory=lambda: dict.fromkeys(MOTION_ORDER, 1.0))
    blink: bool = True
    gaze: bool = True
    fit: str = "loop"
    post: PostProcess = field(default_factory=PostProcess.official)
    batch_size: int = 8
    noise: int | None = None
    driver_chunk: int = 32


def _skip(driver: Driver) -> int:
    if driver.skip_first is not None:
        return int(driver.skip_first)
    return OFFICIAL_SKIP if isinstance(driver.source, (str, Path)) and Path(driver.source).is_dir() else 0


def _driver_total(driver: Driver) -> int | None:
    """Frames a driver holds before the skip: known for arrays and frame folders, None for videos."""
    src = driver.source
    if isinstance(src, np.ndarray):
        return int(src.shape[0])
    if Path(src).is_dir():
        return len(media.list_frame_files(src))
    return None


def iter_driver_batches(driver: Driver, num_needed: int, chunk: int, fps: float) -> Iterator[torch.Tensor]:
    """Network batches [b,3,224,224] of the driver's first min(L, num_needed) usable frames (L = frames
    after the skip). Videos are resampled to ``fps``; only ``chunk`` frames are decoded at a time."""
    skip = _skip(driver)
    src = driver.source
    name = "driver frames" if isinstance(src, np.ndarray) else str(src)
    total = _driver_total(driver)
    if total is not None and skip == OFFICIAL_SKIP and driver.skip_first is None and total < OFFICIAL_MIN_DRIVER_FILES:
        raise InputError(
            f"{name}: has {total} frame file(s); the official pipeline drops the first {OFFICIAL_SKIP} and needs "
            f"at least {OFFICIAL_MIN_DRIVER_FILES} files. Add frames, or set skip_first=0 (CLI: --skip-first 0) "
            f"to use every frame, looped."
        )
    if total is not None and total - skip < 1:
        raise InputError(f"{name}: has {total} frame(s), none left after skipping {skip}; give more frames.")
    if isinstance(src, np.ndarray):
        frames = iter(src[skip : skip + num_needed])
    else:
        frames = media.iter_frames(src, start=skip, stop=skip + num_needed, fps=fps)
    n = 0
    for raw in _chunks(frames, ALIGN_CHUNK if driver.align != "none" else chunk):
        n += len(raw)
        if driver.align != "none":
            from .faces import align_faces

            raw, _ = align_faces(np.stack(raw), driver.align, mode="video", name=name)
        for s in range(0, len(raw), chunk):
            yield images.prepare_batch(list(raw[s : s + chunk]), crop=driver.crop)
    if n == 0:
        raise InputError(f"{name}: no frames left after skipping {skip}; give a longer driver or lower skip_first.")


def _chunks(it, size: int) -> Iterator[list]:
    buf = []
    for x in it:
        buf.append(x)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


def encode_driver(
    engine: Engine,
    driver: Driver,
    heads,
    num_frames: int,
    settings: RenderSettings,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Factor]:
    """Raw factors for ``heads`` from one source, covering its first min(L, num_frames) usable frames."""
    batches = iter_driver_batches(driver, num_frames, settings.driver_chunk, settings.fps)
    return engine.encode_drivers(batches, heads=heads, fps=settings.fps, progress=progress)


@dataclass
class AppearanceInput:
    """The portrait as the network sees it ([1,3,224,224]) and, when it was aligned, the original
    picture (uint8 [H,W,3]) with its crop transform for paste-back."""

    tensor: torch.Tensor
    original: np.ndarray | None = None
    crop_info: object | None = None


def load_appearance_image(source, crop: str = "official", align: str = "none") -> AppearanceInput:
    """Appearance image (path or uint8 [H,W,3] RGB) -> :class:`AppearanceInput`. ``align`` as in
    :class:`Driver`."""
    rgb = images.read_image(source) if isinstance(source, (str, Path)) else np.asarray(source)
    original, info = None, None
    if align != "none":
        from .faces import align_faces

        original = rgb
        (rgb,), info = align_faces(
            rgb[None], align, mode="image", name=str(source) if isinstance(source, (str, Path)) else "appearance image"
        )
    return AppearanceInput(images.prepare_batch([rgb], crop=crop), original, info)


def mouth_windows(audio, settings: RenderSettings) -> torch.Tensor:
    """Speech (path or (waveform [C,N] float, sample_rate)) -> mel windows [T,1,80,20]."""
    wave, sr = audio_io.read_speech(audio)
    return audio_io.audio_to_windows(
        wave, sr, fps=settings.fps, quality=settings.audio_quality, max_seconds=settings.max_seconds
    )


@dataclass
class Plan:
    """What a render will produce: the appearance, the motion [T,542] (``num_frames`` = T), the raw
    factors, the appearance picture (for paste-back) and a copy of the :class:`RenderSettings` it
    was planned with (:func:`frames_u8` generates with them)."""

    appearance: Appearance
    motion: torch.Tensor
    factors: dict[str, Factor]
    source: AppearanceInput | None = None
    settings: RenderSettings = field(default_factory=RenderSettings)

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])


StageProgress = Callable[[str, int, int], None]
"""``on_stage(stage, done, total)``: what :func:`plan` is doing, e.g. ("encoding the pose driver x.mp4",
32, 250), called as each step starts and as its count grows. ``total`` 0: a step without a count."""


def _check_strengths(strengths: dict) -> None:
    """InputError naming the first NaN or infinite strength (per-frame sequences are checked when applied)."""
    for k, v in strengths.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            continue
        try:
            finite = math.isfinite(v)
        except OverflowError:  # an int beyond float: reported as an overflow when applied
            finite = True
        if not finite:
            raise InputError(
                f"{k} strength {v!r} is not a finite number; give a finite strength (1 = official, 0 = off)."
            )


def plan(
    engine: Engine,
    appearance,
    audio,
    drivers: dict[str, Driver | None],
    settings: RenderSettings,
    align: str = "none",
    on_stage: StageProgress | None = None,
) -> Plan:
    """Encodes everything and assembles the motion. ``drivers`` maps pose / eye / expression to a
    :class:`Driver`, a ready :class:`Factor` of that kind (fitted like a driver's), or None (factor
    off). Drivers that share one source object are read once. ``align`` applies to the appearance
    image (see :class:`Driver`). ``on_stage`` (see :data:`StageProgress`) hears each step: reading
    the inputs, the audio, each driver's encoding."""
    bad = [k for k in drivers if k not in DRIVER_HEADS]
    if bad:
        raise InputError(f"unknown driver factor(s) {bad}; use {DRIVER_HEADS}")
    for head, drv in drivers.items():
        if isinstance(drv, Factor) and drv.kind != head:
            raise InputError(f"the {head} input is a factor of kind {drv.kind!r}; give a {head} factor")
    _check_strengths(settings.strengths)

    def stage(what: str, done: int = 0, total: int = 0) -> None:
        if on_stage is not None:
            on_stage(what, done, total)

    stage("reading the appearance image")
    source = load_appearance_image(appearance, align=align)
    stage("decoding the audio and computing its mel spectrogram")
    windows = mouth_windows(audio, settings)  # cheap checks before the first network runs
    stage("encoding the appearance")
    app = engine.encode_appearance(source.tensor)
    num = windows.shape[0]
    factors: dict[str, Factor] = {}
    if settings.strengths.get("mouth", 1.0) != 0:
        factors["mouth"] = engine.encode_mouth(
            windows, fps=settings.fps, progress=_counter(stage, "encoding the lips", num)
        )
    groups: dict[int, tuple[Driver, list[str]]] = {}
    for head, drv in drivers.items():
        if isinstance(drv, Factor):  # a ready factor (idle motion, pose from angles): used as it is
            if settings.strengths.get(head, 1.0) != 0:
                factors[head] = drv
            continue
        if drv is not None and settings.strengths.get(head, 1.0) != 0:
            groups.setdefault(id(drv), (drv, []))[1].append(head)
    for drv, heads in groups.values():
        t0 = time.perf_counter()
        what = f"encoding the {'/'.join(heads)} driver" + (
            "" if isinstance(drv.source, np.ndarray) else f" {drv.source}"
        )
        total = _driver_total(drv) if on_stage is not None else None
        expected = num if total is None else max(0, min(total - _skip(drv), num))
        factors.update(encode_driver(engine, drv, heads, num, settings, progress=_counter(stage, what, expected)))
        log.info("encoded %s from %s in %.1f s", "/".join(heads), getattr(drv, "source", "?"), time.perf_counter() - t0)
    strong = {
        k: v
        for k, v in settings.strengths.items()
        if k in factors and isinstance(v, (int, float)) and abs(v) > STRENGTH_WARN
    }
    if strong:
        log.warning(
            "factor strength(s) %s are far above 1: the generator saturates and the frames stop looking "
            "like a face (official strengths are 1)",
            strong,
        )
    scaled = {k: _scaled(k, f, settings.strengths.get(k, 1.0)) for k, f in factors.items()}
    motion = combine_motion(
        **scaled, length=num, fit=settings.fit, post=settings.post, blink=settings.blink, gaze=settings.gaze
    )
    return Plan(app, motion, factors, source, dataclasses.replace(settings, strengths=dict(settings.strengths)))


def _counter(stage: Callable[[str, int, int], None], what: str, total: int) -> Callable[[int], None]:
    """A per-batch ``progress(n)`` callback that reports the running count to ``stage``."""
    done = 0
    stage(what, 0, total)

    def add(n: int) -> None:
        nonlocal done
        done += int(n)
        stage(what, done, total)

    return add


def _scaled(kind: str, f: Factor, strength) -> Factor:
    if strength == 1.0:
        return f
    try:
        return scale(f, strength)
    except InputError as e:
        raise InputError(f"{kind} strength {strength!r}: {e}") from None


def frames_u8(
    engine: Engine,
    p: Plan,
    paste_back: bool = False,
    progress: Callable[[int], None] | None = None,
    check_interrupt: Callable[[], None] | None = None,
    watermark: bool = True,
) -> Iterator[np.ndarray]:
    """Generated frames as uint8 RGB chunks of ``p.settings.batch_size`` frames, with the noise of
    ``p.settings.noise``: [b,224,224,3] (official truncating conversion), or with ``paste_back``
    (needs an aligned appearance) the full original picture [b,H,W,3] with the face blended in.
    Every frame carries the invisible PD-FGC watermark (:mod:`pdfgc_core.provenance`) unless
    ``watermark=False`` (an explicit opt-out, logged as a warning)."""
    if isinstance(paste_back, RenderSettings):
        raise InputError("frames_u8 takes no settings: the plan carries the ones it was planned with (plan.settings)")
    if paste_back and (p.source is None or p.source.crop_info is None):
        raise InputError("paste-back needs an aligned appearance image: set an alignment backend (e.g. dlib)")
    if not watermark:
        log.warning(provenance.OPT_OUT_WARNING)
    for chunk in engine.generate(
        p.appearance,
        p.motion,
        batch_size=p.settings.batch_size,
        noise=p.settings.noise,
        progress=progress,
        check_interrupt=check_interrupt,
    ):
        u8 = images.network_to_u8(chunk)
        if paste_back:
            from .faces import paste_back as paste

            full, _ = paste(p.source.original[None], u8, p.source.crop_info)
            u8 = images.to_rgb(full, "pasted frames")
        yield provenance.embed(u8) if watermark else u8
