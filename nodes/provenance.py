"""PD-FGC Check Provenance: looks for the invisible PD-FGC watermark in an IMAGE batch."""

from __future__ import annotations

import torch

from ._common import CATEGORY

try:
    from ..pdfgc_core.errors import InputError
    from ..pdfgc_core.provenance.check import check_frames
except ImportError:  # ``nodes`` imported as a top-level package, not inside the pack
    from pdfgc_core.errors import InputError
    from pdfgc_core.provenance.check import check_frames


class PDFGC_CheckProvenance:
    DESCRIPTION = (
        "Looks for the invisible PD-FGC watermark in images or video frames (also after H.264 re-encoding, "
        "resizing, cropping or mild blur). The frames of a batch are treated as one video: their evidence "
        "is summed. Reports found / not found with a confidence (a bound on the false-alarm probability) "
        "and the PD-FGC version in the mark. C2PA manifests live in files: check those with "
        "`python -m pdfgc_core check FILE`."
    )
    CATEGORY = CATEGORY
    FUNCTION = "check"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "BOOLEAN")
    RETURN_NAMES = ("report", "found")
    OUTPUT_TOOLTIPS = ("The report, one line per finding.", "True when the watermark was found.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Frames to check, [frames, H, W, 3] in 0..1."}),
                "scale_search": (
                    "BOOLEAN",
                    {
                        "default": True,
                        "tooltip": "Also try sizes from 0.3x to 6x of the marked frames when the native size "
                        "and common resizes fail (about a second more when nothing is found).",
                    },
                ),
            }
        }

    def check(self, images, scale_search):
        if not torch.is_tensor(images) or images.dim() != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
            shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise InputError(f"PD-FGC Check Provenance: images must be an IMAGE batch [B,H,W,3], got {shape}.")
        report = check_frames(images, search=bool(scale_search), source="images")
        text = "\n".join(report.text().splitlines()[:2])  # no C2PA line: frames carry none
        return {"ui": {"text": [text]}, "result": (text, bool(report.watermark.found))}


NODE_CLASS_MAPPINGS = {"PDFGC_CheckProvenance": PDFGC_CheckProvenance}
NODE_DISPLAY_NAME_MAPPINGS = {"PDFGC_CheckProvenance": "PD-FGC Check Provenance"}
