"""``python -m pdfgc_core evaluate``: metrics of a rendered clip, the self-driving protocol, or the
disentanglement table, written as a report folder (JSON, Markdown, HTML, PNG plots)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import PDFGCError

log = logging.getLogger("pdfgc")


def add_parser(sub) -> argparse.ArgumentParser:
    """Adds the ``evaluate`` sub-command to an argparse sub-parser collection."""
    from ..cli import CHECKPOINT_ENV, SAMPLES
    from .consistency import FRAMINGS
    from .landmarks import LMD_ALIGN
    from .sync import MAX_OFFSET

    ap = sub.add_parser(
        "evaluate",
        help="measure a clip: lip sync, landmarks, head pose, self-consistency, disentanglement",
        description="Metrics of a rendered clip (--video), of the self-driving protocol on a talking-head clip "
        "(--self-driving), or the disentanglement table (--disentanglement). See docs/METRICS.md.",
    )
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--video", help="the clip to measure: video file or folder of frames")
    mode.add_argument(
        "--self-driving",
        metavar="CLIP",
        help="talking-head video with sound: its first frame is the appearance, its audio and frames the "
        "drivers; the render is measured against the clip",
    )
    mode.add_argument(
        "--disentanglement",
        action="store_true",
        help="render each factor alone (others zero) and tabulate every factor's variance (paper Eq. I)",
    )
    ap.add_argument("--reference", help="ground truth for --video: video file or folder of frames")
    ap.add_argument("--framing", default="generated", choices=list(FRAMINGS), help="framing of --video frames")
    ap.add_argument(
        "--reference-framing",
        default="aligned",
        choices=list(FRAMINGS),
        help="framing of --reference frames (aligned: official crop first, as for drivers)",
    )
    ap.add_argument(
        "--audio",
        help="--video: the speech it was rendered from (default: the video's own, synchronous track); "
        "--disentanglement: the speech (default: the bundled sample)",
    )
    ap.add_argument(
        "--audio-synchronous",
        action="store_true",
        help="--audio is in real-time sync with the picture (not the speech as fed to render)",
    )
    d = lambda p: str(SAMPLES / p)  # noqa: E731
    for f in ("pose", "eye", "expression"):
        ap.add_argument(
            f"--{f}",
            help=f"{f} driver the clip was rendered from (--video: enables self-consistency; "
            f"--disentanglement: default the bundled sample)",
        )
    ap.add_argument("--skip-first", type=int, default=None, help="frames dropped from each driver (as render)")
    ap.add_argument("--appearance", help="portrait: identity reference, and for --disentanglement the face rendered")
    ap.add_argument("--frames", type=int, default=50, help="--disentanglement: frames per single-factor clip")
    ap.add_argument("--seconds", type=float, default=None, help="measure only the first N seconds")
    ap.add_argument("--fps", type=float, default=25.0, help="frame rate (videos are resampled to it)")
    ap.add_argument("--align", default="none", choices=["none", "dlib", "face_alignment"], help="--self-driving")
    ap.add_argument("--landmarks", default="dlib", choices=["dlib", "face_alignment", "none"], help="landmark backend")
    ap.add_argument("--lmd-align", default="none", choices=list(LMD_ALIGN), help="remove translation before LMD")
    ap.add_argument("--max-offset", type=int, default=MAX_OFFSET, help="sync sweep: +-N frames")
    ap.add_argument("--syncnet", help="syncnet_v2.model: adds LSE-D / LSE-C")
    ap.add_argument("--inception", help="pt_inception-2015-12-05-6726825d.pth: adds FID (needs --reference)")
    ap.add_argument("--arcface", help="ArcFace ONNX model (112x112 input): adds identity similarity")
    ap.add_argument("--arcface-normalization", default="insightface", choices=["insightface", "none"])
    ap.add_argument(
        "--checkpoint",
        default=None,
        help=f"PD-FGC checkpoint (official folder / .tar / .safetensors; env {CHECKPOINT_ENV})",
    )
    ap.add_argument(
        "--synthetic", action="store_true", help="allow synthetic noise weights when no checkpoint is found"
    )
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    ap.add_argument("--precision", default="fp32", choices=["auto", "fp32", "fp16", "bf16"])
    ap.add_argument("--batch-size", type=int, default=8, help="frames per generator batch")
    ap.add_argument("--out", default="output/evaluation", help="report folder (report.json / .md / .html, PNGs)")
    ap.set_defaults(_sample=d)
    return ap


def _engine(args, required: bool):
    import torch

    from ..cli import get_models
    from ..engine import Engine

    try:
        models = get_models(args.checkpoint, args.synthetic)
    except PDFGCError:
        if required or args.checkpoint:  # a checkpoint the user named must load
            raise
        return None
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return Engine(models, device=device, precision=args.precision)
    except PDFGCError:
        raise
    except (RuntimeError, AssertionError, ValueError) as e:
        raise PDFGCError(f"--device {device}: cannot use this device ({str(e).splitlines()[0][:200]})") from None


def _weights(args):
    from .evaluate import Weights

    return Weights(args.syncnet, args.inception, args.arcface, args.arcface_normalization)


def _read(path, args):
    from .. import media

    stop = None if args.seconds is None else max(1, int(round(args.seconds * args.fps)))
    return media.read_frames(path, stop=stop, fps=args.fps, max_bytes=8 << 30)


def _requested(engine, args, num: int) -> dict | None:
    """The codes the driver options ask for (official post-processing), for the driven heads only."""
    from .. import pipeline
    from ..factors import PostProcess, assemble_motion
    from .consistency import requested_from_motion

    heads_by_source: dict[str, list[str]] = {}
    for f in ("pose", "eye", "expression"):
        if getattr(args, f):
            heads_by_source.setdefault(getattr(args, f), []).append(f)
    if not heads_by_source:
        return None
    settings = pipeline.RenderSettings(fps=args.fps)
    factors = {}
    for src, heads in heads_by_source.items():  # a source shared by several heads is read once
        factors.update(
            pipeline.encode_driver(engine, pipeline.Driver(src, skip_first=args.skip_first), heads, num, settings)
        )
    motion = assemble_motion(num, **factors, post=PostProcess.official())
    driven = {h for heads in heads_by_source.values() for h in heads}
    return {k: v for k, v in requested_from_motion(motion).items() if k in driven}


def _driver_frames(src, args, num: int):
    """A driver's frames as the pipeline feeds them (official skip and crop), uint8 in network framing,
    looped to ``num`` frames like the official fit."""
    import numpy as np

    from .. import pipeline
    from ..factors import fit_indices
    from ..images import network_to_u8

    drv = pipeline.Driver(src, skip_first=args.skip_first)
    batches = pipeline.iter_driver_batches(drv, num, 32, args.fps)
    frames = np.concatenate([network_to_u8(b, rounding="round") for b in batches])
    return frames[fit_indices(len(frames), num, "loop").numpy()]


def run(args) -> int:
    from .evaluate import AudioInput, evaluate

    landmarks = None if args.landmarks == "none" else args.landmarks
    out = Path(args.out)
    if args.disentanglement:
        from .. import pipeline
        from .protocols import disentanglement_from_files

        engine = _engine(args, required=True)
        drivers = {
            f: pipeline.Driver(getattr(args, f) or args._sample(f"drivers/{f}"), skip_first=args.skip_first)
            for f in ("pose", "eye", "expression")
        }
        res = disentanglement_from_files(
            engine,
            args.appearance or args._sample("anne.png"),
            args.audio or args._sample("speech.mp3"),
            drivers,
            args.frames,
            fps=args.fps,
            landmarks=landmarks,
            batch_size=args.batch_size,
        )
        rep = res.report()
        if engine.models.synthetic:
            rep.note("SYNTHETIC weights: the frames are noise and the table says nothing about PD-FGC itself")
    elif args.self_driving:
        from .protocols import evaluate_self_driving

        engine = _engine(args, required=True)
        rep, _ = evaluate_self_driving(
            engine,
            args.self_driving,
            weights=_weights(args),
            landmarks=landmarks,
            fps=args.fps,
            seconds=args.seconds,
            align=args.align,
            batch_size=args.batch_size,
        )
    else:
        from .. import media
        from ..audio import load_audio

        frames = _read(args.video, args)
        reference = _read(args.reference, args) if args.reference else None
        audio = None
        if args.audio:
            audio = AudioInput(*load_audio(args.audio), synchronous=args.audio_synchronous)
        elif Path(args.video).is_file() and media.probe(args.video).has_audio:
            audio = AudioInput(*load_audio(args.video), synchronous=True)
        wants_model = bool(args.pose or args.eye or args.expression or audio is not None)
        engine = _engine(args, required=False) if wants_model else None
        requested = _requested(engine, args, frames.shape[0]) if engine is not None else None
        drivers = {
            h: _driver_frames(getattr(args, h), args, frames.shape[0]) for h in ("pose", "eye") if getattr(args, h)
        }
        identity = None
        if args.appearance:
            from ..images import read_image

            identity = read_image(args.appearance)
        rep = evaluate(
            frames,
            args.fps,
            framing=args.framing,
            reference=reference,
            reference_framing=args.reference_framing,
            audio=audio,
            engine=engine,
            requested=requested,
            weights=_weights(args),
            identity_image=identity,
            drivers=drivers if reference is None and landmarks else None,
            landmarks=landmarks,
            max_offset=args.max_offset,
            lmd_align=args.lmd_align,
            title=f"PD-FGC evaluation: {Path(args.video).name}",
        )
        if wants_model and engine is None:
            rep.note("no PD-FGC checkpoint found: model-based metrics skipped (pass --checkpoint or --synthetic)")
    written = rep.write(out)
    print(rep.summary())
    print(f"[pdfgc] wrote {written['html']} ({len(written) - 3} plots)", file=sys.stderr)
    return 0


__all__ = ["add_parser", "run"]
