"""Command-line parts of the control features: the ``calibrate-pose`` and ``export-motion``
commands, and the render flags for idle blinks, head sway and head pose from angles.
:mod:`pdfgc_core.cli` mounts them (``add_commands``, ``add_render_args``, ``render_factors``, ``run``)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..factors import Factor, fit_length
from . import export, idle, pose

COMMANDS = ("calibrate-pose", "export-motion")
LANDMARK_BACKENDS = ("dlib", "face_alignment")


# ------------------------------------------------------------------------------------ render flags


def add_render_args(ap: argparse.ArgumentParser) -> None:
    """The render / demo flags of this feature set (all off by default)."""
    g = ap.add_argument_group("idle motion and head pose without driving videos")
    g.add_argument(
        "--idle-blinks",
        type=float,
        default=None,
        metavar="PER_MINUTE",
        help=f"replace the eye driver by natural blinks at this rate (people: 12-20; e.g. "
        f"{idle.DEFAULT_BLINK_RATE:g}); the blink's shape comes from --eye when given, else the bundled sample",
    )
    g.add_argument(
        "--head-sway",
        type=float,
        default=None,
        metavar="AMPLITUDE",
        help="replace the pose driver by smooth idle head motion, AMPLITUDE times as large as the reference's "
        "(--pose when given, else the bundled sample pose video); added to --pose-angles / --pose-keyframes",
    )
    g.add_argument(
        "--sway-speed", type=float, default=idle.DEFAULT_SWAY_SPEED, metavar="HZ", help="head sway frequency (Hz)"
    )
    g.add_argument(
        "--sway-liveliness",
        type=float,
        default=1.0,
        help="extra head sway while the speech is loud (0 = none; 1 = up to twice as large)",
    )
    g.add_argument("--idle-seed", type=int, default=0, help="seed of the blink times and the head sway")
    g.add_argument(
        "--pose-angles",
        default=None,
        metavar="P,Y,R[,X,Y,Z]",
        help="constant head pose: pitch, yaw, roll in degrees (and x, y, z translation), through --pose-map",
    )
    g.add_argument(
        "--pose-keyframes",
        default=None,
        metavar="TEXT",
        help="keyframed head pose, e.g. '0: 0,0,0; 2.5s: 10,-5,0 ease; 5s: 0,0,0' (frames or seconds; curves "
        f"{', '.join(pose.CURVES)})",
    )
    g.add_argument(
        "--pose-map",
        default=None,
        metavar="FILE",
        help="pose map from calibrate-pose (default: the ASSUMED, uncalibrated mapping [pitch, yaw, roll "
        "in radians, x, y, z])",
    )


def _angles(text: str) -> np.ndarray:
    try:
        values = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--pose-angles {text!r}: give 3 or 6 numbers, e.g. 10,-5,0") from None
    if len(values) not in (3, 6) or not all(math.isfinite(v) for v in values):
        raise InputError(f"--pose-angles {text!r}: give 3 (pitch, yaw, roll) or 6 (+ x, y, z) finite numbers")
    return np.array(values + [0.0] * (6 - len(values)))


def _is_sample(src, sample: Path) -> bool:
    try:
        return src is not None and Path(src).resolve() == sample.resolve()
    except (OSError, TypeError):
        return False


def render_factors(args, engine, settings, drivers: dict) -> dict[str, Factor]:
    """Eye / pose factors replacing the drivers, from the flags of :func:`add_render_args`
    ({} when none is set). ``drivers``: the render's {head: Driver}; the eye driver gives the blink
    shape and the pose driver the sway reference."""
    from .. import audio as audio_io
    from .. import pipeline

    want_pose = args.head_sway is not None or args.pose_angles or args.pose_keyframes
    if args.idle_blinks is None and not want_pose:
        return {}
    if args.pose_angles and args.pose_keyframes:
        raise InputError("--pose-angles and --pose-keyframes both given; use one of them")
    fps = settings.fps
    wave, sr = audio_io.load_audio(args.audio)
    seconds = wave.shape[-1] / sr
    if args.seconds is not None:
        seconds = min(seconds, args.seconds)
    n = max(1, math.ceil(seconds * fps) + 2)  # at least the frames the speech gives
    out: dict[str, Factor] = {}

    def source_factor(head: str) -> Factor:
        drv = drivers.get(head)
        sample = idle.SAMPLE_EYE if head == "eye" else idle.SAMPLE_POSE
        if drv is None or _is_sample(drv.source, sample):
            return idle.encode_sample(engine, head)
        return pipeline.encode_driver(engine, drv, (head,), 10_000, settings)[head]

    if args.idle_blinks is not None:
        drv = drivers.get("eye")
        if drv is None or _is_sample(drv.source, idle.SAMPLE_EYE):
            shape = idle.sample_blink_shape(engine)
        else:
            shape = idle.blink_shape(source_factor("eye"))
        out["eye"] = idle.idle_blinks(n, shape, rate=args.idle_blinks, seed=args.idle_seed, fps=fps).factor
    if want_pose:
        pm = pose.as_pose_map(args.pose_map)
        base = None
        if args.pose_keyframes:
            controls = pose.keyframe_controls(pose.parse_keyframes(args.pose_keyframes, fps), length=n)
            base = pm.to_factor(controls, fps)
        elif args.pose_angles:
            base = fit_length(pm.to_factor(_angles(args.pose_angles), fps), n)
        if args.head_sway is not None:
            env = idle.speech_envelope(wave, sr, n, fps)
            sway = idle.head_sway(
                n,
                source_factor("pose"),
                amplitude=args.head_sway,
                speed=args.sway_speed,
                seed=args.idle_seed,
                fps=fps,
                envelope=env,
                liveliness=args.sway_liveliness,
            )
            base = sway if base is None else base.with_values(base.values + sway.values)
        out["pose"] = base
        if not pm.calibrated:
            print(f"[pdfgc] head pose: {pose.ASSUMPTION}", file=sys.stderr)
    return out


# --------------------------------------------------------------------------------------- commands


def _common(p: argparse.ArgumentParser) -> None:
    from ..cli import CHECKPOINT_ENV

    p.add_argument(
        "--checkpoint", default=None, help=f"official folder / checkpoints.tar / .safetensors (env {CHECKPOINT_ENV})"
    )
    p.add_argument("--synthetic", action="store_true", help="allow synthetic noise weights when no checkpoint is found")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--max-frames", type=int, default=None, help="use only the first N frames")


def add_commands(sub) -> None:
    """Adds ``calibrate-pose`` and ``export-motion`` to the CLI's sub-parsers."""
    cal = sub.add_parser(
        "calibrate-pose",
        help="fit the mapping between head angles and the pose factor on a talking-head video",
        description="Measures the head pose of every frame with 68 landmarks and cv2.solvePnP on a generic 3D "
        "face, encodes the same frames with the pose head, fits the linear map between them, reports R^2 per "
        "axis and a mirror test (a mirrored video must flip yaw, roll and x), and saves the map as JSON for "
        "--pose-map and PD-FGC Load Pose Map.",
    )
    cal.add_argument("source", help="video file or folder of frames (faces framed like the PD-FGC crops)")
    cal.add_argument("--out", default="output/pose_map.json", help="pose map file to write (JSON)")
    cal.add_argument(
        "--align",
        default="none",
        choices=["none", *LANDMARK_BACKENDS],
        help="align ordinary footage to the PD-FGC crop first (default: frames are PD-FGC crops)",
    )
    cal.add_argument("--landmarks", default="dlib", choices=LANDMARK_BACKENDS, help="landmarks for the head pose")
    _common(cal)
    exp = sub.add_parser(
        "export-motion",
        help="export motion-encoder embeddings (FantasyPortrait 554, Portrait4D / HelloMeme 548, raw heads)",
        description="Aligns the faces of a video, folder of frames or picture, runs the motion encoder and writes "
        "every raw head (pose 6, eye 6, expression 30, to_mouth 512, lip 500), the layouts "
        f"{', '.join(export.LAYOUTS)} and the negative (all -1 input) embedding to one .safetensors; "
        "optionally one .npy per frame of a layout.",
    )
    exp.add_argument("source", help="video file, folder of frames or picture")
    exp.add_argument("--out", default="output/motion_embedding.safetensors", help=".safetensors file to write")
    exp.add_argument(
        "--alignment",
        required=True,
        choices=export.ALIGNMENTS,
        help="official: PD-FGC's template and 192 crop (Portrait4D); five_point: 5-point similarity, bicubic, "
        "no crop (FantasyPortrait, HelloMeme)",
    )
    exp.add_argument(
        "--landmarks",
        default="dlib",
        choices=[*LANDMARK_BACKENDS, "pre-aligned"],
        help="landmark backend; pre-aligned: the pictures already are PD-FGC crops (official alignment only)",
    )
    exp.add_argument(
        "--mode", default="auto", choices=["auto", "image", "video"], help="official alignment: per clip or per picture"
    )
    exp.add_argument("--npy", default=None, metavar="DIR", help="also write one .npy per frame of --layout here")
    exp.add_argument("--layout", default="fantasyportrait_554", choices=list(export.LAYOUTS), help="layout for --npy")
    exp.add_argument("--fps", type=float, default=None, help="resample a video to this frame rate first")
    _common(exp)


def _engine(args):
    import torch

    from ..cli import get_models
    from ..engine import Engine
    from ..errors import PDFGCError

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    models = get_models(args.checkpoint, args.synthetic)
    try:
        return Engine(models, device=device, precision="fp32")
    except (RuntimeError, AssertionError, ValueError) as e:
        raise PDFGCError(f"--device {device}: cannot use this device ({str(e).splitlines()[0][:200]})") from None


def _max_frames(args) -> int | None:
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames {args.max_frames}: give a whole number >= 1")
    return args.max_frames


def _run_calibrate(args) -> int:
    from .. import media

    frames = media.read_frames(args.source, stop=_max_frames(args))
    if args.align != "none":
        from ..faces import align_faces

        frames, _ = align_faces(frames, args.align, mode="video", name=str(args.source))
    engine = _engine(args)
    print(f"[pdfgc] calibrating on {len(frames)} frames of {args.source}", file=sys.stderr)
    pm = pose.calibrate_pose_map(engine, frames, args.landmarks, source=str(args.source))
    path = pm.save(args.out)
    r2 = pm.info["r2"]
    print("R^2 per axis (readout of the pose factor vs the landmark measurement):")
    for axis in pose.AXES:
        v = r2.get(axis)
        print(f"  {axis:5s} {'n/a (does not vary)' if v is None else f'{v:.3f}'}")
    print("mirror test (mirrored frames: yaw, roll and x must flip, pitch, y and z must not):")
    for axis, m in pm.info["mirror"].items():
        slope = "n/a" if m["slope"] is None else f"{m['slope']:+.2f}"
        corr = "n/a" if m["corr"] is None else f"{m['corr']:+.2f}"
        print(f"  {axis:5s} {m['expected']:5s} slope {slope} corr {corr} {'ok' if m['ok'] else 'FAILED'}")
    if "warning" in pm.info:
        print(f"WARNING: {pm.info['warning']}")
    print(f"wrote {path}")
    return 0


def _run_export(args) -> int:
    from .. import media

    if args.landmarks == "pre-aligned" and args.alignment == "five_point":
        raise InputError("--landmarks pre-aligned works only with --alignment official (five_point detects landmarks)")
    info = media.probe(args.source)
    fps = args.fps or info.fps or 25.0
    engine = _engine(args)
    frames = media.iter_frames(args.source, stop=_max_frames(args), fps=args.fps)
    emb = export.export_motion(
        engine, frames, args.alignment, args.landmarks, mode=args.mode, fps=fps, name=args.source
    )
    emb.meta["source"] = str(args.source)
    path = export.save_embedding(emb, args.out)
    print(f"wrote {path}: {emb.num_frames} frames, alignment {emb.alignment}, layouts {', '.join(export.LAYOUTS)}")
    if args.npy:
        files = export.save_embedding_npy(emb, args.npy, args.layout)
        print(f"wrote {len(files) - 2} .npy files ({args.layout}) + negative.npy + embedding.json in {args.npy}")
    return 0


def run(args) -> int:
    if args.cmd == "calibrate-pose":
        return _run_calibrate(args)
    if args.cmd == "export-motion":
        return _run_export(args)
    raise InputError(f"unknown command {args.cmd!r}")
