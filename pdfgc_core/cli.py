"""Command line: ``python -m pdfgc_core {demo,render,convert,info,prepare,train}``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from .checkpoints import INSTALL_HINT, PDFGCModels, convert, load_models
from .errors import PDFGCError
from .factors import PostProcess

log = logging.getLogger("pdfgc")

PACK_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = PACK_ROOT / "samples"
CHECKPOINT_ENV = "PDFGC_CHECKPOINT"
SYNTHETIC_BANNER = """
======================================================================
  NO OFFICIAL CHECKPOINTS FOUND: using deterministic SYNTHETIC weights.
  The video will show structured noise, not a talking face.
  {hint}
  Then pass --checkpoint PATH or set {env}=PATH.
======================================================================
"""


def default_checkpoint_locations() -> list[Path]:
    """Where a checkpoint is looked for when none is given, in order."""
    locs = []
    if os.environ.get(CHECKPOINT_ENV):
        locs.append(Path(os.environ[CHECKPOINT_ENV]))
    for base in (
        PACK_ROOT / "checkpoints",
        PACK_ROOT.parents[1] / "models" / "pdfgc",
        Path.home() / ".cache" / "pdfgc" / "checkpoints",
    ):
        locs += [base, base / "checkpoints.tar", base / "pdfgc.safetensors"]
    return locs


def _find_checkpoint() -> Path | None:
    from .checkpoints import OFFICIAL_FILES

    for p in default_checkpoint_locations():
        if p.is_file() or (p.is_dir() and all((p / f).is_file() for f in OFFICIAL_FILES.values())):
            return p
    return None


def get_models(checkpoint: str | None, allow_synthetic: bool) -> PDFGCModels:
    path = Path(checkpoint) if checkpoint else _find_checkpoint()
    if path is not None:
        models = load_models(path)
        log.info("loaded checkpoints from %s", path)
        if models.synthetic:
            print(SYNTHETIC_BANNER.format(hint=INSTALL_HINT, env=CHECKPOINT_ENV), file=sys.stderr)
        return models
    if not allow_synthetic:
        raise PDFGCError(
            f"no checkpoint given or found. {INSTALL_HINT} Or add --synthetic to try the pipeline with noise weights."
        )
    from .synthetic import synthetic_models

    print(SYNTHETIC_BANNER.format(hint=INSTALL_HINT, env=CHECKPOINT_ENV), file=sys.stderr)
    return synthetic_models(0)


def _add_render_args(ap: argparse.ArgumentParser, sample_defaults: bool) -> None:
    d = (lambda p: str(SAMPLES / p)) if sample_defaults else (lambda p: None)
    ap.add_argument(
        "--appearance",
        default=d("anne.png"),
        required=not sample_defaults,
        help="portrait image (pre-aligned 224x224 crop, or any photo with --align dlib)",
    )
    ap.add_argument(
        "--audio",
        default=d("speech.mp3"),
        required=not sample_defaults,
        help="speech: wav / mp3 / flac / ogg / m4a / mp4 ...",
    )
    for f in ("pose", "eye", "expression"):
        ap.add_argument(
            f"--{f}",
            default=d(f"drivers/{f}"),
            help=f"{f} driver: folder of frames or video file; omit to zero the {f} factor",
        )
        ap.add_argument(f"--{f}-strength", type=float, default=1.0, help=f"{f} strength (0 = off)")
    ap.add_argument("--mouth-strength", type=float, default=1.0, help="lip motion strength (0 = closed, off)")
    ap.add_argument("--no-blink", action="store_true", help="zero the blink dims of the eye factor")
    ap.add_argument("--no-gaze", action="store_true", help="zero the gaze dims of the eye factor")
    ap.add_argument(
        "--skip-first",
        type=int,
        default=None,
        help="frames dropped at the start of each driver (default: official, 2 for frame folders)",
    )
    ap.add_argument(
        "--fit",
        default="loop",
        choices=["loop", "pingpong", "hold"],
        help="how drivers shorter than the audio are extended (official: loop)",
    )
    ap.add_argument("--fps", type=float, default=25.0, help="output frame rate (official: 25)")
    ap.add_argument("--seconds", type=float, default=None, help="render only the first N seconds of audio")
    ap.add_argument(
        "--align",
        default="none",
        choices=["none", "dlib", "face_alignment"],
        help="detect and align faces in ordinary photos / videos first (default: inputs are "
        "pre-aligned 224x224 crops like the official samples)",
    )
    ap.add_argument(
        "--paste-back",
        action="store_true",
        help="with --align: put the animated face back into the full appearance photo",
    )
    ap.add_argument("--out", default="output/pdfgc.mp4", help="output mp4 (written atomically)")
    ap.add_argument("--frames-dir", default=None, help="also write every frame as PNG here")
    ap.add_argument(
        "--checkpoint", default=None, help=f"official folder / checkpoints.tar / .safetensors (env {CHECKPOINT_ENV})"
    )
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    ap.add_argument("--batch-size", default="8", help="frames per generator batch, or 'auto' (from free memory)")
    ap.add_argument("--seed", type=int, default=None, help="random noise seed (default: the checkpoint's stored noise)")
    ap.add_argument(
        "--audio-quality",
        default="official",
        choices=["official", "fast"],
        help="resampler: official = resampy kaiser_best (parity), fast = soxr",
    )


def _run_render(args, allow_synthetic: bool) -> int:
    import torch

    from . import pipeline
    from .media import Mp4Writer, write_frames_png

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    models = get_models(args.checkpoint, allow_synthetic)
    try:
        engine = pipeline.Engine(models, device=device, precision=args.precision)
    except PDFGCError:
        raise
    except (RuntimeError, AssertionError, ValueError) as e:  # unknown or unavailable device
        raise PDFGCError(
            f"--device {device}: cannot use this device ({str(e).splitlines()[0][:200]}). "
            f"Use cpu, or cuda / cuda:N on a machine with a CUDA build of PyTorch."
        ) from None
    if args.batch_size == "auto":
        batch_size = engine.auto_batch_size()
    elif args.batch_size.isdigit() and int(args.batch_size) > 0:
        batch_size = int(args.batch_size)
    else:
        raise PDFGCError(f"--batch-size {args.batch_size!r}: give a positive whole number or 'auto'")
    settings = pipeline.RenderSettings(
        fps=args.fps,
        audio_quality=args.audio_quality,
        max_seconds=args.seconds,
        strengths={
            "mouth": args.mouth_strength,
            "pose": args.pose_strength,
            "eye": args.eye_strength,
            "expression": args.expression_strength,
        },
        blink=not args.no_blink,
        gaze=not args.no_gaze,
        fit=args.fit,
        post=PostProcess.official(),
        batch_size=batch_size,
        noise=args.seed,
    )
    drivers = {}
    shared: dict[str, pipeline.Driver] = {}
    for f in ("pose", "eye", "expression"):
        src = getattr(args, f)
        if src:
            drivers[f] = shared.setdefault(src, pipeline.Driver(src, skip_first=args.skip_first, align=args.align))
    p = pipeline.plan(engine, args.appearance, args.audio, drivers, settings, align=args.align)
    print(
        f"[pdfgc] {p.num_frames} frames at {args.fps:g} fps; encoded in {time.perf_counter() - t0:.1f} s "
        f"on {device} ({engine.dtype})",
        file=sys.stderr,
    )
    audio_track = args.audio if args.seconds is None else _cut_audio(args.audio, args.seconds)
    done, t1 = 0, time.perf_counter()
    with Mp4Writer(args.out, fps=args.fps, audio=audio_track, audio_offset=pipeline.AUDIO_LEAD_SECONDS) as w:
        for chunk in pipeline.frames_u8(engine, p, settings, paste_back=args.paste_back):
            w.write(chunk)
            if args.frames_dir:
                write_frames_png(args.frames_dir, chunk, done)
            done += chunk.shape[0]
            el = time.perf_counter() - t1
            eta = el / done * (p.num_frames - done)
            print(
                f"\r[pdfgc] {done}/{p.num_frames} frames, {el / done:.2f} s/frame, ETA {eta:.0f} s",
                end="",
                file=sys.stderr,
                flush=True,
            )
    print(
        f"\n[pdfgc] wrote {args.out}" + (" (SYNTHETIC weights: noise, not a face)" if models.synthetic else ""),
        file=sys.stderr,
    )
    return 0


def _cut_audio(path, seconds: float):
    from .audio import load_audio

    wave, sr = load_audio(path)
    return np.ascontiguousarray(wave[:, : int(round(seconds * sr))]), sr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pdfgc_core", description="PD-FGC talking-head synthesis")
    sub = ap.add_subparsers(dest="cmd", required=True)
    demo = sub.add_parser("demo", help="render the bundled sample (synthetic weights if no checkpoint is installed)")
    _add_render_args(demo, sample_defaults=True)
    rend = sub.add_parser("render", help="render a talking head from a portrait, speech and driving videos")
    _add_render_args(rend, sample_defaults=False)
    rend.add_argument(
        "--synthetic", action="store_true", help="allow synthetic noise weights when no checkpoint is found"
    )
    conv = sub.add_parser("convert", help="official checkpoints (folder / checkpoints.tar) -> one .safetensors")
    conv.add_argument("src")
    conv.add_argument("dst")
    conv.add_argument("--fp16", action="store_true", help="store weights in float16 (half the size)")
    info = sub.add_parser("info", help="validate a checkpoint and print what was found")
    info.add_argument("checkpoint")
    from .train import cli as train_cli

    train_cli.add_parsers(sub)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="[pdfgc] %(message)s")
    try:
        if args.cmd == "demo":
            return _run_render(args, allow_synthetic=True)
        if args.cmd == "render":
            return _run_render(args, allow_synthetic=args.synthetic)
        if args.cmd == "convert":
            out = convert(args.src, args.dst, half=args.fp16)
            print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
            return 0
        if args.cmd in train_cli.COMMANDS:
            return train_cli.run(args)
        if args.cmd == "info":
            m = load_models(args.checkpoint)
            print(f"{args.checkpoint}: OK ({m.report.kind}{', SYNTHETIC' if m.synthetic else ''})")
            for line in m.report.info + m.report.warnings:
                print("  " + line)
            return 0
    except PDFGCError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; no partial output was left behind", file=sys.stderr)
        return 130
    return 1
