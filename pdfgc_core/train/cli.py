"""The ``prepare``, ``train`` and ``finetune`` subcommands of ``python -m pdfgc_core`` (added by :func:`add_parsers`)."""

from __future__ import annotations

import argparse
import json
import sys

COMMANDS = ("prepare", "train", "finetune")
GAN_STAGES = ("appearance-motion", "expression")


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
        help="train a PD-FGC stage: appearance-motion (1), lip / eye / pose (2) or expression (3); works under torchrun",
        description="Train one PD-FGC stage. A run folder with checkpoints is resumed exactly. "
        "Multi-GPU: torchrun --nproc_per_node N -m pdfgc_core train ...",
    )
    tr.add_argument("--stage", required=True, choices=["appearance-motion", "lip", "eye", "pose", "expression"])
    tr.add_argument("--data", required=True, metavar="DATASET", help="folder made by `prepare`")
    tr.add_argument("--out", required=True, metavar="RUN", help="run folder (checkpoints, metrics.csv, tb/)")
    tr.add_argument(
        "--init", default=None, metavar="CHECKPOINT", help="official folder / checkpoints.tar / .safetensors"
    )
    _common(tr)

    ft = sub.add_parser(
        "finetune",
        help="fine-tune the generator to one person's video (held-out tail for validation, early stopping)",
        description="Prepare PERSON.mp4, fine-tune the generator on it with every encoder frozen, validate on the "
        "video's last seconds, stop early; RUN/final is a checkpoint folder for Load Model / --checkpoint.",
    )
    ft.add_argument("--video", required=True, metavar="PERSON.mp4", help="a talking video of the person (>= ~10 s)")
    ft.add_argument(
        "--init", required=True, metavar="CHECKPOINT", help="official folder / checkpoints.tar / .safetensors"
    )
    ft.add_argument(
        "--out", required=True, metavar="RUN", help="output folder (data/, run/, final/); resumed if it exists"
    )
    _common(ft)


def _common(p) -> None:
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="TOML file overriding the stage's pdfgc_core/train/configs/*.toml",
    )
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one setting")
    p.add_argument(
        "--prior",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a prior network file (vgg19, vggface, gaze, emoca; see docs/TRAINING.md); gaze/emoca=substitute in stage 3",
    )
    p.add_argument(
        "--without",
        action="append",
        default=[],
        metavar="LOSS",
        help="switch a loss term off (e.g. its prior is absent)",
    )
    p.add_argument("--max-steps", type=int, default=None, help="train this many steps in total (instead of epochs)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")


def gan_overrides(args) -> list[str]:
    """``--prior`` / ``--without`` as ``--set`` overrides (after the user's own ``--set``)."""
    sets = list(args.set)
    for item in args.prior:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            from ..errors import InputError

            raise InputError(f"--prior {item!r}: expected NAME=PATH, e.g. --prior vgg19=~/weights/vgg19-dcbb9e9d.pth.")
        sets.append(f"priors.{name.strip()}={json.dumps(path.strip())}")
    if args.without:
        sets.append(f"losses.off={json.dumps(list(dict.fromkeys(args.without)))}")
    return sets


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
    from ..errors import InputError

    if args.max_steps is not None and args.max_steps < 1:
        raise InputError("--max-steps must be at least 1.")
    if args.cmd == "finetune" or args.stage in GAN_STAGES:
        from .config import load_gan_config

        stage = "finetune" if args.cmd == "finetune" else args.stage
        cfg = load_gan_config(stage, args.config, gan_overrides(args))
        if args.cmd == "finetune":
            from .finetune import finetune

            finetune(cfg, args.video, args.out, args.init, args.max_steps, args.device)
            return 0
        from . import stage1, stage3

        module = stage1 if stage == "appearance-motion" else stage3
        module.train(cfg, args.data, args.out, init=args.init, max_steps=args.max_steps, device=args.device)
        return 0
    if args.prior or args.without:
        raise InputError("--prior and --without apply to the generator stages (appearance-motion, expression).")
    from .config import load_config
    from .stage2 import train

    cfg = load_config(args.stage, args.config, args.set)
    train(cfg, args.data, args.out, init=args.init, max_steps=args.max_steps, device=args.device)
    return 0
