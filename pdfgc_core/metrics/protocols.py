"""The paper's two evaluation set-ups, from files: self-driving reconstruction (Sec. 4.1) and the
disentanglement table (supplementary B.2)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import media, pipeline
from ..audio import AUDIO_LEAD_SECONDS, load_audio
from ..engine import DRIVER_HEADS, Engine
from ..errors import InputError
from .disentangle import DisentanglementResult, disentanglement
from .evaluate import AudioInput, Weights, evaluate
from .report import Report
from .sync import has_lip_head, motion_lip_embedder


@dataclass
class SelfDriving:
    """A self-driving render: ``generated`` uint8 ``[T,224,224,3]``, the clip's own frames
    ``reference`` uint8 ``[T,H,W,3]`` (aligned framing), its ``audio`` and the ``plan`` rendered."""

    generated: np.ndarray
    reference: np.ndarray
    audio: AudioInput
    plan: pipeline.Plan


def self_driving(
    engine: Engine,
    clip,
    *,
    fps: float = 25.0,
    seconds: float | None = None,
    align: str = "none",
    batch_size: int = 8,
) -> SelfDriving:
    """Self-driving protocol on one talking-head clip (a video with sound): its first frame is the
    appearance, its speech drives the lips and its frames drive pose, eyes and expression; the clip
    itself is the ground truth.

    The speech is delayed by the pipeline's audio lead (0.08 s) before encoding, so generated frame
    ``j`` is driven by the sound and the picture of clip frame ``j``. ``align``: a landmark backend to
    align ordinary footage first ("none": the clip is already aligned like the official samples)."""
    clip = Path(clip)
    stop = None if seconds is None else max(1, int(round(float(seconds) * fps)))
    frames = media.read_frames(clip, stop=stop, fps=fps, max_bytes=8 << 30)
    if align != "none":
        from ..faces import align_faces

        frames, _ = align_faces(frames, align, mode="video", name=str(clip))
    wave, sr = load_audio(clip)
    if seconds is not None:
        wave = wave[:, : int(round((float(seconds) + 0.5) * sr))]
    lead = np.zeros((wave.shape[0], int(round(AUDIO_LEAD_SECONDS * sr))), wave.dtype)
    settings = pipeline.RenderSettings(fps=fps, batch_size=batch_size)
    driver = pipeline.Driver(frames, skip_first=0, crop="official", align="none")
    p = pipeline.plan(
        engine, frames[0], (np.concatenate([lead, wave], 1), sr), {h: driver for h in DRIVER_HEADS}, settings
    )
    t = min(p.num_frames, frames.shape[0])
    if t < 1:
        raise InputError(f"{clip}: no frame has both picture and sound")
    p = pipeline.Plan(p.appearance, p.motion[:t], p.factors, p.source, p.settings)
    gen = np.concatenate(list(pipeline.frames_u8(engine, p)))
    return SelfDriving(gen, frames[:t], AudioInput(wave, sr, synchronous=True), p)


def evaluate_self_driving(
    engine: Engine, clip, *, weights: Weights | None = None, landmarks: str | None = "dlib", **kw
) -> tuple[Report, SelfDriving]:
    """:func:`self_driving`, then :func:`~.evaluate.evaluate` of the result against the clip."""
    sd = self_driving(engine, clip, **kw)
    rep = evaluate(
        sd.generated,
        kw.get("fps", 25.0),
        framing="generated",
        reference=sd.reference,
        reference_framing="aligned",
        audio=sd.audio,
        engine=engine,
        requested=sd.plan.motion,
        weights=weights,
        identity_image=sd.reference[0],
        landmarks=landmarks,
        title=f"PD-FGC self-driving evaluation: {Path(clip).name}",
    )
    return rep, sd


def disentanglement_from_files(
    engine: Engine,
    appearance,
    audio,
    drivers: dict[str, pipeline.Driver | None],
    frames: int = 50,
    *,
    fps: float = 25.0,
    landmarks: str | None = "dlib",
    batch_size: int = 8,
) -> DisentanglementResult:
    """The disentanglement table for a portrait, a speech file and driver sources (as
    :func:`pipeline.plan` takes them). Uses the motion network's lip head for the lip column when it
    has one."""
    settings = pipeline.RenderSettings(fps=fps, batch_size=batch_size, max_seconds=(frames + 8) / fps)
    p = pipeline.plan(engine, appearance, audio, drivers, settings)
    lip = motion_lip_embedder(engine.models) if has_lip_head(engine.models) else None
    n = min(int(frames), p.num_frames)
    return disentanglement(
        engine, p.appearance, p.factors, n, post=settings.post, lip=lip, landmarks=landmarks, batch_size=batch_size
    )
