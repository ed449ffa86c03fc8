"""Command line: ``python -m pdfgc_core {demo,render,dub,convert,info,check,evaluate,calibrate-pose,export-motion,prepare,train}``."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .audio import AUDIO_LEAD_SECONDS, MEL_FPS, QUALITIES
from .checkpoints import INSTALL_HINT, PDFGCModels, convert, load_models
from .control import cli as control_cli
from .engine import PRECISIONS
from .errors import PDFGCError
from .factors import FIT_MODES, PostProcess
from .pipeline import ALIGN_CHOICES

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


# ------------------------------------------------------------------ numbers on the command line

MAX_STRENGTH = 1000.0
"""Largest factor strength (in magnitude) the command line takes: frames saturate from about 10 on
(``pipeline.STRENGTH_WARN``), and far larger values only overflow the generator."""
MAX_SECONDS = 86400.0
"""Longest ``--seconds`` accepted (24 hours)."""
MAX_BATCH = 1024
"""Largest ``--batch-size`` accepted."""


def _number(kind: type, lo=None, hi=None, *, above: bool = False, what: str = "", hint: str = ""):
    """An argparse ``type=`` that parses ``kind`` (int or float) and refuses non-finite values and
    values outside ``lo``..``hi`` (``above``: strictly above ``lo``), so argparse names the flag."""
    noun = "a whole number" if kind is int else "a number"
    show = str if kind is int else "{:g}".format
    if lo is not None and hi is not None:
        span = f"{'above' if above else 'from'} {show(lo)} {'and at most' if above else 'to'} {show(hi)}"
    elif lo is not None:
        span = f"{'above' if above else 'at least'} {show(lo)}"
    else:
        span = f"at most {show(hi)}"
    want = f"give {what or noun} {span}" + (f" ({hint})" if hint else "")

    def parse(text: str):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}; {want}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number; {want}")
        if (lo is not None and (value <= lo if above else value < lo)) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{text} is out of range; {want}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _batch_size(text: str):
    if text == "auto":
        return text
    try:
        return _number(int, 1, MAX_BATCH, what="a whole number of frames")(text)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{e}, or 'auto' (from free memory)") from None


def _strength(text: str) -> float:
    return _number(float, -MAX_STRENGTH, MAX_STRENGTH, what="a strength", hint="1 = official, 0 = off")(text)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one ``error: ...`` line and exit status 2, like every other error here."""

    def error(self, message):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


# ------------------------------------------------------------------ progress and signals


class _StatusLine:
    """Progress on stderr. A step without a count is one line ("[pdfgc] encoding the appearance
    ..."); a counted step is one line rewritten in place with ``\\r`` ("... 32/250, ETA 12 s")
    until it completes. :meth:`end` finishes an open line, so that whatever is printed next (an
    error, a warning) starts on its own line; :meth:`filter` does it for the ``pdfgc`` logger."""

    def __init__(self):
        self.stage: str | None = None
        self.width = 0
        self.t0 = 0.0

    def update(self, stage: str, done: int = 0, total: int = 0) -> None:
        now = time.perf_counter()
        if stage != self.stage:
            self.end()
            self.stage, self.t0 = stage, now
        if not total:
            if not done:
                self.write(f"[pdfgc] {stage} ...")
                self.end()
            return
        text = f"[pdfgc] {stage}: {done}/{total}"
        if 0 < done < total:
            text += f", ETA {(now - self.t0) / done * (total - done):.0f} s"
        self.write(text)
        if done >= total:
            self.end()

    def write(self, text: str) -> None:
        """Show ``text`` as the current line (replacing the open one)."""
        sys.stderr.write("\r" + text.ljust(self.width))
        sys.stderr.flush()
        self.width = len(text)

    def end(self) -> None:
        if self.width:
            sys.stderr.write("\n")
            sys.stderr.flush()
        self.stage, self.width = None, 0

    def filter(self, record) -> bool:  # a logging filter: log lines start on their own line
        self.end()
        return True


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that every
    atomic writer removes its temporary files; :attr:`signum` gives the exit status 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _signals_interrupt():
    """SIGTERM and SIGHUP raise :class:`Terminated` while the block runs (main thread only; the
    handlers before are restored after). Only the first signal raises: a second one arriving during
    the clean-up is ignored, so the clean-up finishes."""
    names = ("SIGTERM", "SIGHUP")
    sigs = [getattr(signal, n) for n in names if hasattr(signal, n)]
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = []

    def handler(signum, frame):
        if not fired:
            fired.append(signum)
            raise Terminated(signum)

    previous = {}
    try:
        for sig in sigs:
            previous[sig] = signal.signal(sig, handler)
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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
        ap.add_argument(f"--{f}-strength", type=_strength, default=1.0, help=f"{f} strength (0 = off)")
    ap.add_argument("--mouth-strength", type=_strength, default=1.0, help="lip motion strength (0 = closed, off)")
    ap.add_argument("--no-blink", action="store_true", help="zero the blink dims of the eye factor")
    ap.add_argument("--no-gaze", action="store_true", help="zero the gaze dims of the eye factor")
    ap.add_argument(
        "--skip-first",
        type=_number(int, 0, what="a whole number of frames"),
        default=None,
        help="frames dropped at the start of each driver (default: official, 2 for frame folders)",
    )
    ap.add_argument(
        "--fit",
        default="loop",
        choices=FIT_MODES,
        help="how drivers shorter than the audio are extended (official: loop; truncate: refuse short drivers)",
    )
    ap.add_argument(
        "--fps",
        type=_number(float, 0, MEL_FPS, above=True, what="a frame rate", hint="official: 25"),
        default=25.0,
        help="output frame rate (official: 25)",
    )
    ap.add_argument(
        "--seconds",
        type=_number(float, 0, MAX_SECONDS, above=True, what="a number of seconds"),
        default=None,
        help="render only the first N seconds of audio",
    )
    ap.add_argument(
        "--align",
        default="none",
        choices=ALIGN_CHOICES,
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
    ap.add_argument("--precision", default="auto", choices=PRECISIONS)
    ap.add_argument(
        "--batch-size", type=_batch_size, default=8, help="frames per generator batch, or 'auto' (from free memory)"
    )
    ap.add_argument(
        "--seed",
        type=_number(int, 0, 2**64 - 1, what="a seed"),
        default=None,
        help="random noise seed (default: the checkpoint's stored noise)",
    )
    ap.add_argument(
        "--audio-quality",
        default="official",
        choices=QUALITIES,
        help="resampler: official = resampy kaiser_best (parity), fast = soxr",
    )
    control_cli.add_render_args(ap)
    _add_provenance_args(ap)


def _add_provenance_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("provenance (docs/PROVENANCE.md)")
    g.add_argument(
        "--no-watermark",
        action="store_true",
        help="opt out of the invisible PD-FGC watermark in every frame (on by default; logged)",
    )
    g.add_argument(
        "--no-c2pa",
        action="store_true",
        help="do not embed the signed C2PA manifest (embedded by default when c2pa-python is installed)",
    )
    g.add_argument(
        "--c2pa-cert", default=None, help="PEM certificate chain to sign the C2PA manifest (env PDFGC_C2PA_CERT)"
    )
    g.add_argument("--c2pa-key", default=None, help="PEM private key of that certificate (env PDFGC_C2PA_KEY)")


def _run_render(args, allow_synthetic: bool, status: _StatusLine) -> int:
    import torch

    from . import pipeline
    from .media import Mp4Writer, check_output_path, write_frames_png

    check_output_path(args.out)  # now, not after minutes of work
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    status.update("loading the networks")
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
    batch_size = engine.auto_batch_size() if args.batch_size == "auto" else args.batch_size
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
    drivers.update(control_cli.render_factors(args, engine, settings, drivers))
    p = pipeline.plan(engine, args.appearance, args.audio, drivers, settings, align=args.align, on_stage=status.update)
    status.end()
    print(
        f"[pdfgc] {p.num_frames} frames at {args.fps:g} fps; encoded in {time.perf_counter() - t0:.1f} s "
        f"on {device} ({engine.dtype})",
        file=sys.stderr,
    )
    audio_track = args.audio if args.seconds is None else _cut_audio(args.audio, args.seconds)
    marked = not args.no_watermark
    tags, sign = _provenance(args, marked)
    done, t1 = 0, time.perf_counter()
    with Mp4Writer(
        args.out,
        fps=args.fps,
        audio=audio_track,
        audio_offset=AUDIO_LEAD_SECONDS,
        metadata=tags,
        sign=sign,
    ) as w:
        for chunk in pipeline.frames_u8(engine, p, paste_back=args.paste_back, watermark=marked):
            w.write(chunk)
            if args.frames_dir:
                write_frames_png(args.frames_dir, chunk, done)
            done += chunk.shape[0]
            el = time.perf_counter() - t1
            eta = el / done * (p.num_frames - done)
            status.write(f"[pdfgc] {done}/{p.num_frames} frames, {el / done:.2f} s/frame, ETA {eta:.0f} s")
    status.end()
    print(
        f"[pdfgc] wrote {args.out}" + (" (SYNTHETIC weights: noise, not a face)" if models.synthetic else ""),
        file=sys.stderr,
    )
    return 0


def _provenance(args, marked: bool):
    """(container tags, C2PA signing callable or None) for the mp4 the render writes."""
    from .provenance import manifest

    tags = manifest.container_tags(watermarked=marked)
    asked = bool(args.c2pa_cert or args.c2pa_key)
    if args.no_c2pa:
        if asked:
            raise PDFGCError("--no-c2pa contradicts --c2pa-cert / --c2pa-key; drop one of them")
        log.info("C2PA manifest off (--no-c2pa)")
        return tags, None
    if not manifest.c2pa_available():
        if asked or os.environ.get(manifest.CERT_ENV):
            raise PDFGCError(f"a C2PA certificate was given but c2pa-python is not installed: {manifest.C2PA_HINT}")
        print(f"[pdfgc] no C2PA manifest: {manifest.C2PA_HINT} (container tags are written)", file=sys.stderr)
        return tags, None
    identity = manifest.signing_identity(args.c2pa_cert, args.c2pa_key)
    print(f"[pdfgc] the C2PA manifest will be signed with {identity.description}", file=sys.stderr)
    return tags, manifest.mp4_signer(identity, watermarked=marked)


def _run_check(args) -> int:
    from .provenance.check import check_file

    if args.frames < 1:
        raise PDFGCError(f"--frames {args.frames}: give a whole number of frames >= 1")
    worst = 0
    for f in args.files:
        report = check_file(f, max_frames=args.frames, search=not args.quick)
        print(report.text())
        worst = max(worst, 0 if report.found else 1)
    return worst


def _add_dub_args(ap: argparse.ArgumentParser) -> None:
    from .dub import DEFAULT_SMOOTH_SECONDS, LENGTHS
    from .faces.paste import REGIONS

    ap.add_argument("--video", required=True, help="the video to dub (mp4, mov, mkv, webm, ...)")
    ap.add_argument("--audio", required=True, help="the new speech: wav / mp3 / flac / m4a / a video with sound ...")
    ap.add_argument("--out", required=True, help="output mp4 (written atomically; source size and frame rate)")
    ap.add_argument(
        "--face",
        default="largest",
        help="which face: 'largest' (default), N (N-th from the left, 0 = leftmost) or X,Y (nearest to that pixel)",
    )
    ap.add_argument(
        "--reference-frame",
        type=_number(int, 0, what="a frame number"),
        default=None,
        help="frame whose face gives the appearance (default: best)",
    )
    ap.add_argument("--mask", default="lower", choices=REGIONS, help="region replaced (default lower: eyes stay)")
    ap.add_argument("--feather", type=_number(float, 0, 64), default=12.0, help="soft mask edge in crop pixels")
    ap.add_argument("--no-color-match", action="store_true", help="do not match the face's colours to the video")
    ap.add_argument(
        "--length",
        default="video",
        choices=LENGTHS,
        help="video: as long as the video (audio trimmed or padded); audio: as long as the audio (video ping-pong)",
    )
    ap.add_argument(
        "--smooth",
        type=_number(float, 0, 10),
        default=DEFAULT_SMOOTH_SECONDS,
        help="alignment smoothing, seconds (0 = off)",
    )
    ap.add_argument("--mouth-strength", type=_number(float, -10, 10), default=1.0, help="lip motion strength")
    ap.add_argument("--frames-dir", default=None, help="also write every frame as PNG here")
    ap.add_argument(
        "--checkpoint", default=None, help=f"official folder / checkpoints.tar / .safetensors (env {CHECKPOINT_ENV})"
    )
    ap.add_argument(
        "--synthetic", action="store_true", help="allow synthetic noise weights when no checkpoint is found"
    )
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    ap.add_argument("--precision", default="auto", choices=PRECISIONS)
    ap.add_argument("--batch-size", type=_number(int, 1, 4096), default=8, help="frames per generator batch")
    ap.add_argument("--audio-quality", default="official", choices=QUALITIES, help="resampler (official = parity)")
    _add_provenance_args(ap)


def _run_dub(args, status: _StatusLine) -> int:
    import torch

    from .dub import DubSettings, FrameSource, plan_dub, write_dub
    from .engine import Engine

    settings = DubSettings(
        face=args.face,
        reference_frame=args.reference_frame,
        mask=args.mask,
        feather=args.feather,
        color_match=not args.no_color_match,
        length=args.length,
        smooth_seconds=args.smooth,
        mouth_strength=args.mouth_strength,
        batch_size=args.batch_size,
        audio_quality=args.audio_quality,
        watermark=not args.no_watermark,
    )
    tags, sign = _provenance(args, settings.watermark)
    models = get_models(args.checkpoint, args.synthetic)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    engine = Engine(models, device=device, precision=args.precision)
    source = FrameSource(args.video)
    t0 = time.perf_counter()
    stages = {"track": "tracking the face", "encode": "encoding the video's motion", "render": "dubbing"}

    def progress(stage: str, done: int, total: int | None) -> None:
        status.update(stages.get(stage, stage), done, total or 0)

    plan = plan_dub(engine, source, args.audio, settings, progress)
    tr = plan.track
    status.end()
    print(
        f"[pdfgc] {tr.num_frames} source frames at {float(plan.fps):.3f} fps, face in {int(tr.detected.sum())}; "
        f"reference frame {plan.reference_frame}; crop jitter {tr.jitter(False):.2f} px raw, "
        f"{tr.jitter(True):.2f} px smoothed; {plan.num_frames} output frames "
        f"(encoded in {time.perf_counter() - t0:.1f} s)",
        file=sys.stderr,
    )
    write_dub(
        engine,
        source,
        plan,
        args.audio,
        args.out,
        frames_dir=args.frames_dir,
        progress=progress,
        metadata=tags,
        sign=sign,
    )
    print(
        f"[pdfgc] wrote {args.out}" + (" (SYNTHETIC weights: noise, not a face)" if models.synthetic else ""),
        file=sys.stderr,
    )
    return 0


def _cut_audio(path, seconds: float):
    from .audio import load_audio

    wave, sr = load_audio(path)
    return np.ascontiguousarray(wave[:, : int(round(seconds * sr))]), sr


def main(argv=None) -> int:
    """Runs the command line; returns the exit status: 0, 2 for any error (usage errors included),
    130 for Ctrl-C and 128 + N for signal N (SIGTERM 143, SIGHUP 129). Interrupted or failed
    renders leave no partial file."""
    ap = _Parser(prog="python -m pdfgc_core", description="PD-FGC talking-head synthesis")
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
    dub = sub.add_parser("dub", help="new speech for an existing video: lips from the audio, the rest from the video")
    _add_dub_args(dub)
    info = sub.add_parser("info", help="validate a checkpoint and print what was found")
    info.add_argument("checkpoint")
    chk = sub.add_parser(
        "check",
        help="look for PD-FGC provenance in videos / images: invisible watermark, C2PA manifest, container tags",
        description="Exit status: 0 when every file shows PD-FGC provenance, 1 when one does not, 2 on errors.",
    )
    chk.add_argument("files", nargs="+", metavar="FILE", help="video, image or folder of frames")
    chk.add_argument("--frames", type=int, default=64, help="video frames read from the start (default 64)")
    chk.add_argument("--quick", action="store_true", help="skip the scale search (only native size and common resizes)")
    control_cli.add_commands(sub)
    from .metrics.command import add_parser as add_evaluate_parser

    add_evaluate_parser(sub)
    from .train import cli as train_cli

    train_cli.add_parsers(sub)
    ap.add_argument("-v", "--verbose", action="store_true")
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:  # usage error (2) or --help (0), already printed
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="[pdfgc] %(message)s")
    status = _StatusLine()
    log.addFilter(status)
    try:
        with _signals_interrupt():
            if args.cmd == "demo":
                return _run_render(args, allow_synthetic=True, status=status)
            if args.cmd == "render":
                return _run_render(args, allow_synthetic=args.synthetic, status=status)
            if args.cmd == "dub":
                return _run_dub(args, status)
            if args.cmd == "convert":
                out = convert(args.src, args.dst, half=args.fp16)
                print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
                return 0
            if args.cmd == "check":
                return _run_check(args)
            if args.cmd in control_cli.COMMANDS:
                return control_cli.run(args)
            if args.cmd == "evaluate":
                from .metrics.command import run as run_evaluate

                return run_evaluate(args)
            if args.cmd in train_cli.COMMANDS:
                return train_cli.run(args)
            if args.cmd == "info":
                m = load_models(args.checkpoint)
                print(f"{args.checkpoint}: OK ({m.report.kind}{', SYNTHETIC' if m.synthetic else ''})")
                for line in m.report.info + m.report.warnings:
                    print("  " + line)
                return 0
    except PDFGCError as e:
        status.end()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        status.end()
        if isinstance(e, Terminated):
            name = signal.Signals(e.signum).name
            print(f"terminated by {name}; no partial output was left behind", file=sys.stderr)
            return 128 + e.signum
        print("interrupted; no partial output was left behind", file=sys.stderr)
        return 130
    finally:
        status.end()
        log.removeFilter(status)
    return 1
