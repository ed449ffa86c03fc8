"""The ``prepare`` and ``train`` subcommands of ``python -m pdfgc_core`` (added by :func:`add_parsers`)."""

from __future__ import annotations

import argparse
import sys

COMMANDS = ("prepare", "train")


def add_parsers(sub) -> None:
    """Adds the two subcommands to the main parser's subparsers."""
    from .prepare import PrepareOptions

    d = PrepareOptions()
    prep = sub.add_parser(
        "prepare",
        help="talking-head videos -> a training dataset (faces aligned, mel windows, landmarks, pose labels)",
        description="Prepare videos for training. Interrupted runs resume; bad videos are skipped and reported.",
    )
    prep.add_argument(
        "inputs", nargs="+", metavar="VIDEO_OR_FOLDER", help="video files, or folders searched recursively"
    )
    prep.add_argument("--out", required=True, metavar="DATASET", help="dataset folder (created; resumed if it exists)")
    prep.add_argument(
        "--workers", type=int, default=None, help="videos prepared in parallel (default: half the CPUs, max 8)"
    )
    prep.add_argument("--detector", default=d.detector, help="landmark backend: dlib (offline) or face_alignment")
    prep.add_argument(
        "--pose-labels", default=None, metavar="DIR", help="folder of <video stem>.npy/.csv pose labels [N,6]"
    )
    prep.add_argument(
        "--max-clip-seconds", type=float, default=d.max_clip_seconds, help="longer videos are cut into clips"
    )
    prep.add_argument("--min-seconds", type=float, default=d.min_seconds, help="shorter clips are dropped")
    prep.add_argument("--max-side", type=int, default=d.max_side, help="larger frames are reduced first (pixels)")
    prep.add_argument("--frame-codec", default=d.frame_codec, choices=["jpeg", "raw"], help="how frames are stored")
    prep.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality)
    prep.add_argument("--shard-mb", type=float, default=d.shard_mb, help="shard size in MiB")
    prep.add_argument("--retry-skipped", action="store_true", help="try again the videos an earlier run skipped")

    tr = sub.add_parser(
        "train",
        help="train a stage-2 head (lip, eye or pose); works under torchrun for several GPUs / nodes",
        description="Train one PD-FGC stage-2 head. A run folder with checkpoints is resumed exactly. "
        "Multi-GPU: torchrun --nproc_per_node N -m pdfgc_core train ...",
    )
    tr.add_argument("--stage", required=True, choices=["lip", "eye", "pose"])
    tr.add_argument("--data", required=True, metavar="DATASET", help="folder made by `prepare`")
    tr.add_argument("--out", required=True, metavar="RUN", help="run folder (checkpoints, metrics.csv, tb/)")
    tr.add_argument(
        "--init", default=None, metavar="CHECKPOINT", help="official folder / checkpoints.tar / .safetensors"
    )
    tr.add_argument(
        "--config", default=None, metavar="FILE", help="TOML file overriding pdfgc_core/train/configs/stage2.toml"
    )
    tr.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one setting")
    tr.add_argument("--max-steps", type=int, default=None, help="train this many steps in total (instead of epochs)")
    tr.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")


def run(args: argparse.Namespace) -> int:
    if args.cmd == "prepare":
        from .prepare import PrepareOptions, default_workers, prepare

        opts = PrepareOptions(
            detector=args.detector,
            max_clip_seconds=args.max_clip_seconds,
            min_seconds=args.min_seconds,
            max_side=args.max_side,
            frame_codec=args.frame_codec,
            jpeg_quality=args.jpeg_quality,
            pose_labels=args.pose_labels,
            workers=args.workers or default_workers(),
            shard_mb=args.shard_mb,
            retry_skipped=args.retry_skipped,
        )
        report = prepare(args.inputs, args.out, opts)
        for line in report.lines():
            print(line)
        if not report.index["clips"]:
            print("error: no usable clip in the dataset; see the reasons above.", file=sys.stderr)
            return 2
        return 0
    from .config import load_config
    from .stage2 import train

    if args.max_steps is not None and args.max_steps < 1:
        from ..errors import InputError

        raise InputError("--max-steps must be at least 1.")
    cfg = load_config(args.stage, args.config, args.set)
    train(cfg, args.data, args.out, init=args.init, max_steps=args.max_steps, device=args.device)
    return 0
