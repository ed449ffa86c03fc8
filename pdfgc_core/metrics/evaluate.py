"""One evaluation of a clip: every metric its inputs allow, gathered in a :class:`Report`.

What runs depends on what is given:

=========================  ==========================================================
input                      metrics
=========================  ==========================================================
frames only                blink rate (EAR), head-pose track
+ ``reference``            LMD, mouth LMD, head-pose error, blink and gaze agreement
+ ``drivers`` (no ref.)    head-pose error vs the pose driver, blinks / gaze vs the eye driver
+ ``engine`` + requested   PD-FGC self-consistency (pose / blink / gaze / expression)
+ ``engine`` + ``audio``   PD-FGC lip-pair sync sweep (needs the motion lip head)
+ ``weights.syncnet``      LSE-D / LSE-C (and NLSE-C with a reference)
+ ``weights.inception``    FID against the reference frames
+ ``weights.arcface``      identity similarity to ``identity_image`` or reference frame 0
=========================  ==========================================================

Frames are compared in the network framing (224 x 224, PD-FGC's output): ``generated`` frames are
used as they are, ``aligned`` ones (official samples, aligned dataset clips) get the official crop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from .. import images
from ..audio import AUDIO_LEAD_SECONDS
from ..engine import Engine
from ..errors import InputError, PDFGCError
from . import byow, plots
from .consistency import FRAMINGS, compare_codes, crop_for, reencode, requested_from_motion
from .landmarks import (
    blink_agreement,
    blink_rate,
    detect_blinks,
    detect_landmarks,
    eye_aspect_ratio,
    gaze_agreement,
    gaze_proxy,
    lmd,
)
from .pose import ANGLES, head_poses, pose_error
from .report import Report
from .sync import MAX_OFFSET, NO_LIP_HEAD, audio_lip_embedder, has_lip_head, motion_lip_embedder, pdfgc_sync
from .sync import pipeline_lead_frames as lead_frames

log = logging.getLogger("pdfgc")


@dataclass
class AudioInput:
    """The speech of a clip: ``waveform`` float ``[C,N]`` or ``[N]`` in -1..1 at ``sample_rate``.
    ``synchronous``: True for a track in real-time sync with the picture (the audio of a rendered
    mp4, of a recorded clip); False for the speech as fed to the pipeline, whose window ``j`` drove
    frame ``j`` (it runs 0.08 s ahead of the picture)."""

    waveform: np.ndarray
    sample_rate: int
    synchronous: bool = True

    def mono16k(self) -> np.ndarray:
        """16 kHz mono float, not level-normalised, synchronous with the picture (speech fed to the
        pipeline loses its first 0.08 s)."""
        from ..audio import SAMPLE_RATE, resample, to_mono

        w = np.asarray(self.waveform, np.float32)
        if w.ndim == 1:
            w = w[None]
        x = resample(to_mono(w), int(self.sample_rate), SAMPLE_RATE, "fast")
        if not self.synchronous:
            x = x[int(round(AUDIO_LEAD_SECONDS * SAMPLE_RATE)) :]
        return x


@dataclass
class Weights:
    """Paths of the bring-your-own-weights files (None: that metric is skipped)."""

    syncnet: str | None = None
    inception: str | None = None
    arcface: str | None = None
    arcface_normalization: str = "insightface"


def to_network_framing(frames_u8, framing: str) -> np.ndarray:
    """uint8 RGB ``[N,H,W,3]`` -> ``[N,224,224,3]`` in PD-FGC's network framing."""
    crop = crop_for(framing)
    a = np.asarray(frames_u8)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8 or a.shape[0] == 0:
        raise InputError(f"frames: expected uint8 RGB [N,H,W,3], got {a.dtype} {a.shape}")
    fn = images.official_crop if crop == "official" else images.resize_224
    return np.stack([fn(f) for f in a])


def _poses_plot(ref_pose, gen_pose, label: str) -> np.ndarray:
    series, style = {}, {}
    for i, k in enumerate(ANGLES):
        if ref_pose is not None:
            series[f"{k} {label}"] = ref_pose[:, i]
            style[f"{k} {label}"] = (i, 1)
        series[f"{k} result"] = gen_pose[:, i]
        style[f"{k} result"] = (i, 3)
    title = "Head pose (landmarks + solvePnP)" + (f": {label} thin, result thick" if ref_pose is not None else "")
    return plots.line_plot(series, title, ylabel="degrees", style=style)


def evaluate(
    frames_u8,
    fps: float = 25.0,
    *,
    framing: str = "generated",
    reference=None,
    reference_framing: str = "aligned",
    audio: AudioInput | None = None,
    engine: Engine | None = None,
    requested=None,
    weights: Weights | None = None,
    identity_image=None,
    drivers: dict | None = None,
    driver_framing: str = "generated",
    landmarks: str | None = "dlib",
    max_offset: int = MAX_OFFSET,
    lmd_align: str = "none",
    title: str = "PD-FGC evaluation",
) -> Report:
    """Evaluates uint8 RGB frames ``[N,H,W,3]`` at ``fps`` (see the module docstring for what each
    input adds). ``requested``: the generator motion ``[T,542]`` or codes ``{pose, eye, expression}``
    the frames were made from. ``drivers``: ``{"pose": frames, "eye": frames}`` (uint8, one per output
    frame, in ``driver_framing``): without a reference, head-pose error is measured against the pose
    driver and blinks / gaze against the eye driver. ``landmarks``: detector backend (None skips
    landmark metrics).
    Metrics whose inputs are missing are skipped with a note; a metric that fails on bad input
    raises :class:`~pdfgc_core.errors.PDFGCError`."""
    if framing not in FRAMINGS or reference_framing not in FRAMINGS:
        raise InputError(f"framing must be one of {tuple(FRAMINGS)}, got {framing!r} / {reference_framing!r}")
    weights = weights or Weights()
    rep = Report(title)
    gen = to_network_framing(frames_u8, framing)
    ref = to_network_framing(reference, reference_framing) if reference is not None else None
    n = gen.shape[0]
    rep.add("clip", {"frames": n, "fps": float(fps), "reference_frames": None if ref is None else int(ref.shape[0])})

    lm_gen = None
    if landmarks:
        lm_gen = detect_landmarks(gen, landmarks, what="frames")
        clips = {"result": _Clip(gen, lm_gen, "result")}
        if ref is not None:
            clips["reference"] = _Clip(ref, detect_landmarks(ref, landmarks, what="reference frames"), "reference")
        for head in ("pose", "eye"):
            if ref is None and drivers and drivers.get(head) is not None:
                d = to_network_framing(drivers[head], driver_framing)
                clips[head] = _Clip(d, detect_landmarks(d, landmarks, what=f"{head} driver"), f"{head} driver")
        pose_ref = clips.get("reference", clips.get("pose"))
        eye_ref = clips.get("reference", clips.get("eye"))
        _landmark_sections(rep, clips["result"], clips.get("reference"), pose_ref, eye_ref, fps, lmd_align)
    else:
        rep.note("landmark metrics skipped (no landmark backend)")

    if engine is not None and requested is not None:
        req = requested_from_motion(requested) if not isinstance(requested, dict) else requested
        measured = reencode(engine, gen, "generated")
        cons = compare_codes(req, measured)
        rep.add("pdfgc_consistency", {k: {m: v[m] for m in ("mse", "cosine", "correlation")} for k, v in cons.items()})
        rep.plots["consistency"] = plots.line_plot(
            {k: v["per_frame"] for k, v in cons.items()},
            "Self-consistency: |re-encoded - requested| per frame",
            ylabel="distance",
        )
        rep.series["pdfgc_consistency"] = {k: v["per_frame"] for k, v in cons.items()}
    elif requested is not None:
        rep.note("PD-FGC self-consistency skipped: no model loaded")

    if audio is not None:
        _pdfgc_sync_section(rep, gen, audio, engine, fps, max_offset)
        if weights.syncnet:
            _syncnet_section(rep, gen, ref, audio, weights.syncnet, fps, max_offset, engine)
    elif weights.syncnet:
        rep.note("SyncNet skipped: no audio")

    if weights.inception:
        if ref is None:
            rep.note("FID skipped: it needs reference frames")
        else:
            model = byow.load_fid_inception(weights.inception, _device(engine))
            rep.add("fid", {"fid": byow.fid(model, gen, ref), "frames": n, "reference_frames": int(ref.shape[0])})
            rep.note(
                "FID on a few hundred frames is biased upwards; compare it only between sets of the same size "
                "(published FIDs use thousands of frames)"
            )
    if weights.arcface:
        _identity_section(rep, gen, ref, lm_gen, identity_image, weights, landmarks)
    return rep


def _device(engine):
    return engine.device if engine is not None else torch.device("cpu")


@dataclass
class _Clip:
    """Frames in network framing with their landmarks and a label for reports."""

    frames: np.ndarray
    landmarks: np.ndarray
    label: str

    @property
    def size(self) -> tuple[int, int]:
        return (self.frames.shape[2], self.frames.shape[1])


def _landmark_sections(
    rep, gen: _Clip, ref: _Clip | None, pose_ref: _Clip | None, eye_ref: _Clip | None, fps, lmd_align
):
    ear_gen = eye_aspect_ratio(gen.landmarks)
    blinks_gen = detect_blinks(ear_gen)
    found = int(np.isfinite(gen.landmarks).all((1, 2)).sum())
    rep.add(
        "landmarks",
        {
            "frames_with_face": found,
            "blinks": len(blinks_gen),
            "blink_rate_per_min": blink_rate(blinks_gen, gen.frames.shape[0], fps),
            "eye_aspect_ratio": ear_gen,
        },
    )
    if found == 0:
        rep.note("no face found in the frames: landmark metrics are n/a (synthetic weights draw no faces)")
    if ref is not None:
        res = lmd(ref.landmarks, gen.landmarks, ref.size, gen.size, align=lmd_align)
        rep.add(
            "lmd",
            {
                "lmd": res["lmd"],
                "mouth_lmd": res["mouth_lmd"],
                "frames_used": res["frames_used"],
                "frames_compared": res["frames_compared"],
                "align": lmd_align,
                "per_frame": res["per_frame"],
                "mouth_per_frame": res["mouth_per_frame"],
            },
        )
        rep.plots["lmd"] = plots.line_plot(
            {"LMD": res["per_frame"], "mouth LMD": res["mouth_per_frame"]}, "Landmark distance per frame", ylabel="px"
        )
    gen_pose = head_poses(gen.landmarks, *gen.size)
    rep.series.setdefault("pose", {})["result"] = gen_pose[:, :3]
    ref_pose = None
    if pose_ref is not None:
        ref_pose = head_poses(pose_ref.landmarks, *pose_ref.size)
        rep.add("pose_error", {"against": pose_ref.label, **pose_error(ref_pose, gen_pose)})
        rep.series["pose"][pose_ref.label] = ref_pose[:, :3]
    rep.plots["pose"] = _poses_plot(ref_pose, gen_pose, pose_ref.label if pose_ref else "")
    tracks = {"result": [(b.start, b.end) for b in blinks_gen]}
    ears = {"result": ear_gen}
    if eye_ref is not None:
        ear_ref = eye_aspect_ratio(eye_ref.landmarks)
        blinks_ref = detect_blinks(ear_ref)
        rep.add(
            "blinks",
            {
                "against": eye_ref.label,
                **blink_agreement(blinks_ref, blinks_gen),
                "reference_rate_per_min": blink_rate(blinks_ref, eye_ref.frames.shape[0], fps),
            },
        )
        m = min(gen.frames.shape[0], eye_ref.frames.shape[0])
        rep.add(
            "gaze_proxy",
            {
                "against": eye_ref.label,
                **gaze_agreement(
                    gaze_proxy(eye_ref.frames[:m], eye_ref.landmarks[:m]), gaze_proxy(gen.frames[:m], gen.landmarks[:m])
                ),
            },
        )
        tracks = {eye_ref.label: [(b.start, b.end) for b in blinks_ref], **tracks}
        ears = {eye_ref.label: ear_ref, **ears}
    rep.plots["eye_aspect_ratio"] = plots.line_plot(ears, "Eye aspect ratio", ylabel="EAR")
    rep.plots["blinks"] = plots.event_plot(tracks, gen.frames.shape[0], "Blinks (EAR below 0.75 x median)")


def _pdfgc_sync_section(rep, gen, audio: AudioInput, engine, fps, max_offset) -> None:
    if engine is None:
        rep.note("PD-FGC sync skipped: no model loaded")
        return
    if not has_lip_head(engine.models):
        rep.note("PD-FGC sync skipped: " + NO_LIP_HEAD)
        return
    from ..audio import audio_to_windows

    windows = audio_to_windows(audio.waveform, audio.sample_rate, fps=fps)
    lead = lead_frames(fps) if audio.synchronous else 0
    res = pdfgc_sync(
        gen,
        windows,
        motion_lip_embedder(engine.models),
        audio_lip_embedder(engine.models),
        max_offset=max_offset,
        lead=lead,
    )
    _sync_to_report(rep, "pdfgc_sync", res, "PD-FGC lip pair", "cosine distance")
    rep.note("PD-FGC sync distances are PD-FGC's own embedding distances, not comparable with SyncNet's LSE-C/LSE-D")


def _sync_to_report(rep, section, res, label, unit) -> None:
    rep.add(section, res.summary())
    off, conf = res.framewise()
    rep.series.setdefault(section, {}).update({"offset_per_frame": off, "confidence_per_frame": conf})
    rep.plots[f"{section}_sweep"] = plots.line_plot(
        {"mean distance": res.distances},
        f"{label}: distance by audio offset (best {res.best_offset:+d})",
        xlabel="audio offset (frames, + = audio late)",
        ylabel=unit,
        x=res.offsets,
        marks={"0": 0.0},
    )
    rep.plots[f"{section}_offset"] = plots.line_plot(
        {"best offset": off}, f"{label}: best offset per frame (+-12 frame window)", ylabel="frames"
    )


def _syncnet_section(rep, gen, ref, audio: AudioInput, path, fps, max_offset, engine) -> None:
    if abs(float(fps) - byow.SYNCNET_FPS) > 1e-6:
        rep.note(f"SyncNet skipped: it needs 25 fps video, these frames are at {fps:g} fps")
        return
    model = byow.load_syncnet(path, _device(engine))
    wave = audio.mono16k()
    res = byow.syncnet_lse(model, gen, wave, max_offset=max_offset)
    _sync_to_report(rep, "syncnet", res, "SyncNet", "euclidean distance")
    extra = {"lse_d": res.min_distance, "lse_c": res.confidence, "syncnet_printed_offset": -res.best_offset}
    if ref is not None:
        gt = byow.syncnet_lse(model, ref, wave, max_offset=max_offset)
        extra["lse_c_reference"] = gt.confidence
        extra["lse_d_reference"] = gt.min_distance
        try:
            extra["nlse_c"] = byow.nlse_c(res.confidence, gt.confidence)
        except InputError as e:
            rep.note(f"NLSE-C skipped: {e}")
    rep.add("syncnet", extra)


def _identity_section(rep, gen, ref, lm_gen, identity_image, weights: Weights, landmarks) -> None:
    if not landmarks or lm_gen is None:
        rep.note("identity skipped: it aligns faces with landmarks; choose a landmark backend")
        return
    if identity_image is not None:
        ident = to_network_framing(identity_image, "aligned")[0]
    elif ref is not None:
        ident = ref[0]
    else:
        rep.note("identity skipped: give an identity image (the appearance) or reference frames")
        return
    model = byow.ArcFaceONNX(weights.arcface, weights.arcface_normalization)
    ident_lm = detect_landmarks(ident, landmarks, what="identity image")[0]
    try:
        res = byow.identity_similarity(model, gen, lm_gen, ident, ident_lm)
    except PDFGCError as e:
        rep.note(f"identity skipped: {e}")
        return
    rep.add("identity", res)
    rep.plots["identity"] = plots.line_plot(
        {"cosine similarity": res["per_frame"]}, "ArcFace identity similarity to the reference face", ylabel="cos"
    )
