"""PD-FGC Evaluate and PD-FGC Disentanglement Report: metrics of generated frames, as plots (IMAGE)
and JSON / Markdown text. Thin adapters over pdfgc_core.metrics."""

from __future__ import annotations

import json

import numpy as np
import torch

from ._common import (
    APPEARANCE,
    CATEGORY,
    FPS_INPUT,
    MODEL,
    MOTION,
    Progress,
    check_interrupt,
    image_count,
    kind_input,
)

try:
    from ..pdfgc_core import images as core_images
    from ..pdfgc_core.engine import Appearance
    from ..pdfgc_core.errors import InputError
    from ..pdfgc_core.factors import Factor
    from ..pdfgc_core.metrics import disentangle, plots
    from ..pdfgc_core.metrics.evaluate import AudioInput, Weights, evaluate
    from ..pdfgc_core.metrics.sync import MAX_OFFSET, has_lip_head, motion_lip_embedder
except ImportError:  # ``nodes`` imported as a top-level package, not inside the pack
    from pdfgc_core import images as core_images
    from pdfgc_core.engine import Appearance
    from pdfgc_core.errors import InputError
    from pdfgc_core.factors import Factor
    from pdfgc_core.metrics import disentangle, plots
    from pdfgc_core.metrics.evaluate import AudioInput, Weights, evaluate
    from pdfgc_core.metrics.sync import MAX_OFFSET, has_lip_head, motion_lip_embedder

FRAMING_CHOICES = ["generated", "aligned"]
AUDIO_TIMING = ["speech fed to Encode Lips", "synced (Encode Lips audio output)"]
LANDMARK_CHOICES = ["dlib", "face_alignment", "none"]


def _plots_image(report) -> torch.Tensor:
    imgs = list(report.plots.values()) or [plots.line_plot({"no data": np.zeros(1)}, "nothing to plot")]
    return core_images.u8_to_comfy(plots.stack(imgs))


def _path(p: str) -> str | None:
    p = (p or "").strip()
    return p or None


class PDFGC_Evaluate:
    DESCRIPTION = (
        "Measures generated frames: blinks and head pose always; with reference frames LMD, mouth LMD, "
        "head-pose error, blink and gaze agreement; with the model and the motion the frames came from, "
        "PD-FGC self-consistency; with the model and the speech, PD-FGC's own lip-sync offset sweep (needs "
        "the motion network's lip head); with weight files, SyncNet LSE-C/LSE-D, FID and ArcFace identity. "
        "Definitions and units: docs/METRICS.md."
    )
    CATEGORY = f"{CATEGORY}/metrics"
    FUNCTION = "evaluate"
    RETURN_TYPES = ("IMAGE", "STRING", "STRING")
    RETURN_NAMES = ("plots", "report", "summary")
    OUTPUT_TOOLTIPS = (
        f"One {plots.WIDTH}x{plots.HEIGHT} image per plot (pose angles, landmark distance, blinks, sync sweep...).",
        "Every metric and per-frame series as JSON.",
        "The metrics as short text, one line per group, with notes on what was skipped.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The frames to measure, e.g. from PD-FGC Generate."}),
                "fps": FPS_INPUT,
                "framing": (
                    FRAMING_CHOICES,
                    {
                        "default": "generated",
                        "tooltip": "generated: 224x224 frames as PD-FGC outputs them. aligned: uncropped aligned "
                        "faces (official samples); the official crop is applied first.",
                    },
                ),
                "reference_framing": (
                    FRAMING_CHOICES,
                    {"default": "aligned", "tooltip": "Framing of the reference frames."},
                ),
                "landmarks": (
                    LANDMARK_CHOICES,
                    {"default": "dlib", "tooltip": "Landmark detector for LMD, blinks, pose; none skips them."},
                ),
                "max_offset": (
                    "INT",
                    {"default": MAX_OFFSET, "min": 1, "max": 100, "tooltip": "Sync sweep: +- this many frames."},
                ),
                "audio_timing": (
                    AUDIO_TIMING,
                    {
                        "default": AUDIO_TIMING[0],
                        "tooltip": "Which audio is connected: the speech given to Encode Lips (its window j drove "
                        "frame j), or Encode Lips' audio output / a track in sync with the picture.",
                    },
                ),
            },
            "optional": {
                "reference": ("IMAGE", {"tooltip": "Ground-truth frames (e.g. the driving video)."}),
                "model": (MODEL, {"tooltip": "For self-consistency and PD-FGC sync."}),
                "motion": (MOTION, {"tooltip": "The motion the frames were generated from (self-consistency)."}),
                "audio": ("AUDIO", {"tooltip": "The speech (sync metrics)."}),
                "syncnet_path": (
                    "STRING",
                    {"default": "", "tooltip": "syncnet_v2.model for LSE-C / LSE-D (empty: skip)."},
                ),
                "inception_path": (
                    "STRING",
                    {"default": "", "tooltip": "pt_inception-2015-12-05-6726825d.pth for FID (empty: skip)."},
                ),
                "arcface_path": ("STRING", {"default": "", "tooltip": "ArcFace .onnx for identity (empty: skip)."}),
            },
        }

    def evaluate(
        self,
        images,
        fps,
        framing,
        reference_framing,
        landmarks,
        max_offset,
        audio_timing,
        reference=None,
        model=None,
        motion=None,
        audio=None,
        syncnet_path="",
        inception_path="",
        arcface_path="",
    ):
        what = "PD-FGC Evaluate"
        image_count(images, f"{what}: images")
        frames = core_images.comfy_to_u8(images)
        ref = None
        if reference is not None:
            image_count(reference, f"{what}: reference")
            ref = core_images.comfy_to_u8(reference)
        aud = None
        if audio is not None:
            if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
                raise InputError(f"{what}: audio must be a ComfyUI AUDIO dict, got {type(audio).__name__}.")
            wave = audio["waveform"]
            if not torch.is_tensor(wave) or wave.dim() != 3 or wave.shape[0] < 1:
                raise InputError(f"{what}: audio waveform must be [batch, channels, samples].")
            aud = AudioInput(
                wave[0].float().cpu().numpy(), int(audio["sample_rate"]), synchronous=audio_timing == AUDIO_TIMING[1]
            )
        check_interrupt()
        try:
            rep = evaluate(
                frames,
                float(fps),
                framing=framing,
                reference=ref,
                reference_framing=reference_framing,
                audio=aud,
                engine=model.engine() if model is not None else None,
                requested=motion,
                weights=Weights(_path(syncnet_path), _path(inception_path), _path(arcface_path)),
                landmarks=None if landmarks == "none" else landmarks,
                max_offset=int(max_offset),
            )
        except InputError as e:
            raise InputError(f"{what}: {e}") from None
        if model is not None and model.synthetic:
            rep.note("SYNTHETIC weights: model-based numbers say nothing about PD-FGC itself")
        return (_plots_image(rep), json.dumps(rep.to_dict(), allow_nan=False), rep.summary())


class PDFGC_Disentanglement:
    DESCRIPTION = (
        "The disentanglement table of paper Eq. I: renders one clip per factor with every other factor zero, "
        "re-extracts all factors from the frames and reports each one's variance over time (rows: driven, "
        "columns: measured). A disentangled model lights up the diagonal. Renders 5 clips of `frames` frames."
    )
    CATEGORY = f"{CATEGORY}/metrics"
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "STRING", "STRING")
    RETURN_NAMES = ("heatmap", "table", "report")
    OUTPUT_TOOLTIPS = (
        "The variance table as a heat map (colour relative to each column's maximum).",
        "The table in Markdown.",
        "The table, dominance ratios and notes as JSON.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "From PD-FGC Load Model."}),
                "appearance": (APPEARANCE, {"tooltip": "From PD-FGC Encode Appearance."}),
                "frames": ("INT", {"default": 50, "min": 2, "max": 10000, "tooltip": "Frames per single-factor clip."}),
                "batch_size": ("INT", {"default": 8, "min": 1, "max": 256, "tooltip": "Frames generated at a time."}),
                "landmarks": (
                    LANDMARK_CHOICES,
                    {
                        "default": "dlib",
                        "tooltip": "Detector for the lip column's fallback (mouth opening) when the model has no "
                        "lip head; none leaves that column n/a.",
                    },
                ),
            },
            "optional": {
                "mouth": (kind_input("mouth"), {"tooltip": "From Encode Lips."}),
                "pose": (kind_input("pose"), {"tooltip": "From Encode Pose / Encode Motion."}),
                "eye": (kind_input("eye"), {"tooltip": "From Encode Eyes / Encode Motion."}),
                "expression": (kind_input("expression"), {"tooltip": "From Encode Expression / Encode Motion."}),
            },
        }

    def run(self, model, appearance, frames, batch_size, landmarks, mouth=None, pose=None, eye=None, expression=None):
        what = "PD-FGC Disentanglement Report"
        if not isinstance(appearance, Appearance):
            raise InputError(f"{what}: appearance must come from PD-FGC Encode Appearance.")
        factors = {}
        for kind, f in (("mouth", mouth), ("pose", pose), ("eye", eye), ("expression", expression)):
            if f is None:
                continue
            if not isinstance(f, Factor) or f.kind != kind:
                got = f.kind if isinstance(f, Factor) else type(f).__name__
                raise InputError(f"{what}: the {kind} input must be a {kind} factor, got {got}.")
            factors[kind] = f
        engine = model.engine()
        lip = motion_lip_embedder(engine.models) if has_lip_head(engine.models) else None
        progress = Progress(int(frames) * 5)

        def step(n):
            progress.update(n)
            check_interrupt()

        try:
            res = disentangle.disentanglement(
                engine,
                appearance,
                factors,
                int(frames),
                lip=lip,
                landmarks=None if landmarks == "none" else landmarks,
                batch_size=int(batch_size),
                progress=step,
            )
        except InputError as e:
            raise InputError(f"{what}: {e}") from None
        rep = res.report()
        if model.synthetic:
            rep.note("SYNTHETIC weights: the table says nothing about PD-FGC itself")
        heat = core_images.u8_to_comfy(rep.plots["disentanglement"][None])
        return (heat, res.markdown(), json.dumps(rep.to_dict(), allow_nan=False))


NODE_CLASS_MAPPINGS = {"PDFGC_Evaluate": PDFGC_Evaluate, "PDFGC_Disentanglement": PDFGC_Disentanglement}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PDFGC_Evaluate": "PD-FGC Evaluate",
    "PDFGC_Disentanglement": "PD-FGC Disentanglement Report",
}
