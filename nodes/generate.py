"""PD-FGC Generate: appearance + per-frame motion -> video frames."""

from __future__ import annotations

import torch

from ._common import APPEARANCE, CATEGORY, MODEL, MOTION, Progress, check_interrupt, intermediate_device, log

try:
    from ..pdfgc_core import provenance
    from ..pdfgc_core.engine import MOTION_DIM, OFFICIAL_BATCH, Appearance
    from ..pdfgc_core.errors import InputError
    from ..pdfgc_core.images import SIZE, network_to_comfy
except ImportError:  # ``nodes`` imported as a top-level package, not inside the pack
    from pdfgc_core import provenance
    from pdfgc_core.engine import MOTION_DIM, OFFICIAL_BATCH, Appearance
    from pdfgc_core.errors import InputError
    from pdfgc_core.images import SIZE, network_to_comfy

MAX_SEED = 0xFFFFFFFFFFFFFFFF


class PDFGC_Generate:
    DESCRIPTION = (
        "Renders the talking head: the portrait's appearance driven by the per-frame motion, "
        f"{SIZE}x{SIZE} pixels per frame, computed batch_size frames at a time (progress bar, Cancel "
        "works between batches). Returns the whole clip as one IMAGE batch, which takes about frames x "
        f"{SIZE}x{SIZE}x3x4 bytes of memory (600 KB per frame, 1.5 GB for a 100 s clip at 25 fps). Every "
        "frame carries an invisible PD-FGC watermark (turn off with watermark = false; docs/PROVENANCE.md)."
    )
    CATEGORY = CATEGORY
    FUNCTION = "generate"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = (f"The frames, [frames, {SIZE}, {SIZE}, 3] in 0..1.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "From PD-FGC Load Model."}),
                "appearance": (APPEARANCE, {"tooltip": "From PD-FGC Encode Appearance."}),
                "motion": (MOTION, {"tooltip": "From PD-FGC Combine Motion."}),
                "batch_size": (
                    "INT",
                    {
                        "default": OFFICIAL_BATCH,
                        "min": 1,
                        "max": 256,
                        "tooltip": "Frames generated at a time: more is faster on a GPU and needs more "
                        "memory. Changes the frames only by float rounding (~1e-6).",
                    },
                ),
                "noise": (
                    "INT",
                    {
                        "default": -1,
                        "min": -1,
                        "max": MAX_SEED,
                        "tooltip": "-1: the noise maps stored in the checkpoint (official, identical every "
                        "run). 0 or more: fresh noise drawn from this seed (fine texture "
                        "changes).",
                    },
                ),
            },
            "optional": {
                "watermark": (
                    "BOOLEAN",
                    {
                        "default": True,
                        "tooltip": "Invisible PD-FGC watermark in every frame (marks the clip as AI-generated; "
                        "PD-FGC Check Provenance finds it). Turning it off is logged.",
                    },
                ),
            },
        }

    def generate(self, model, appearance, motion, batch_size, noise, watermark=True):
        what = "PD-FGC Generate"
        if not isinstance(appearance, Appearance):
            raise InputError(
                f"{what}: appearance must come from PD-FGC Encode Appearance, got {type(appearance).__name__}."
            )
        if not torch.is_tensor(motion) or motion.dim() != 2 or motion.shape[1] != MOTION_DIM:
            shape = tuple(motion.shape) if torch.is_tensor(motion) else type(motion).__name__
            raise InputError(
                f"{what}: motion must come from PD-FGC Combine Motion ([frames, {MOTION_DIM}]), got {shape}."
            )
        n = int(motion.shape[0])
        if n == 0:
            raise InputError(f"{what}: the motion has 0 frames; nothing to generate.")
        engine = model.engine()
        progress = Progress(n)
        out = torch.empty((n, SIZE, SIZE, 3), dtype=torch.float32, device=intermediate_device())
        done = 0
        if not watermark:
            log.warning("PD-FGC Generate: %s", provenance.OPT_OUT_WARNING)
        for chunk in engine.generate(
            appearance,
            motion,
            batch_size=int(batch_size),
            noise=None if noise < 0 else int(noise),
            progress=progress.update,
            check_interrupt=check_interrupt,
        ):
            frames = network_to_comfy(chunk).to(out.device)
            if watermark:
                frames = provenance.embed(frames)  # numpy on the CPU: ~2 ms per frame
            out[done : done + frames.shape[0]] = frames
            done += frames.shape[0]
        return (out,)


NODE_CLASS_MAPPINGS = {"PDFGC_Generate": PDFGC_Generate}
NODE_DISPLAY_NAME_MAPPINGS = {"PDFGC_Generate": "PD-FGC Generate (talking head, portrait animation, avatar)"}
