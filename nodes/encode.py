"""PD-FGC encoders: appearance from a portrait, lips from audio, pose / eyes / expression from
driving frames. Each returns raw factors; gains and smoothing are applied once, by Combine Motion."""

from __future__ import annotations

import torch

from ._common import (
    APPEARANCE,
    CATEGORY,
    FPS_INPUT,
    KIND_TYPES,
    MAX_FRAMES,
    MODEL,
    Progress,
    check_interrupt,
    image_count,
    log,
    network_batches,
    node_notes,
    progress_cb,
)

try:
    from ..pdfgc_core import audio as core_audio
    from ..pdfgc_core import images as core_images
    from ..pdfgc_core.audio import AUDIO_LEAD_SECONDS
    from ..pdfgc_core.engine import DRIVER_HEADS
    from ..pdfgc_core.errors import InputError
    from ..pdfgc_core.faces.align import alignment_problems
    from ..pdfgc_core.images import CROPS
except ImportError:  # ``nodes`` imported as a top-level package, not inside the pack
    from pdfgc_core import audio as core_audio
    from pdfgc_core import images as core_images
    from pdfgc_core.audio import AUDIO_LEAD_SECONDS
    from pdfgc_core.engine import DRIVER_HEADS
    from pdfgc_core.errors import InputError
    from pdfgc_core.faces.align import alignment_problems
    from pdfgc_core.images import CROPS

CROP_INPUT = (
    list(CROPS),
    {
        "default": "official",
        "tooltip": "official: the official loader's framing (resize to 224, keep rows 0-191 and columns 16-207, "
        "resize back), for pre-aligned 224x224 faces or the crops of PD-FGC Align Faces. none: only "
        "resize to 224x224.",
    },
)
SKIP_INPUT = (
    "INT",
    {
        "default": 0,
        "min": 0,
        "max": MAX_FRAMES,
        "tooltip": "Frames dropped at the start of the batch before encoding. 2 reproduces the official pipeline, "
        "which skips the first two files of a driving frame folder.",
    },
)
MODEL_INPUT = (MODEL, {"tooltip": "From PD-FGC Load Model."})


def _skip(images, skip_first: int, what: str) -> int:
    n = image_count(images, what)
    skip = int(skip_first)
    if not 0 <= skip < n:
        raise InputError(
            f"{what}: skip_first={skip} leaves none of the {n} frame(s); lower skip_first "
            f"(at most {n - 1}) or give more frames."
        )
    return skip


def encode_heads(model, images, heads: tuple[str, ...], crop: str, skip_first: int, fps: float, what: str) -> dict:
    """{head: Factor [N - skip_first, D]} from a ComfyUI IMAGE batch, each frame encoded once."""
    skip = _skip(images, skip_first, what)
    progress = Progress(images.shape[0] - skip)
    engine = model.engine()
    return engine.encode_drivers(
        network_batches(images, crop, what, start=skip), heads=heads, fps=float(fps), progress=progress_cb(progress)
    )


def alignment_notes(images, node: str) -> dict:
    """Node notes warning when a sample of ``images`` shows no face or one not aligned to the
    PD-FGC crop (encoding still runs: the warning names PD-FGC Align Faces as the fix)."""
    try:
        n = len(images)
        picks = sorted({0, n // 2, n - 1})
        problems = [
            p
            for i in picks
            for p in alignment_problems(
                core_images.comfy_to_u8(images[i : i + 1]), name=f"image {i}" if n > 1 else "image"
            )
        ]
    except Exception as e:  # the check must never stop an encoding
        log.info("%s: alignment check skipped (%s)", node, e)
        return {}
    warnings = [
        f"{node}: {p}. PD-FGC expects faces framed like its 224x224 crops: put PD-FGC Align Faces before "
        "this node (or check the picture)."
        for p in problems
    ]
    return node_notes(None, warnings)


class PDFGC_EncodeAppearance:
    DESCRIPTION = (
        "Encodes the portrait to animate: who the person is, the background and the lighting. Give a "
        "face framed like PD-FGC's training data (pre-aligned 224x224, or the crops of PD-FGC Align "
        "Faces). With a batch, the first image is used."
    )
    CATEGORY = f"{CATEGORY}/encode"
    FUNCTION = "encode"
    RETURN_TYPES = (APPEARANCE,)
    RETURN_NAMES = ("appearance",)
    OUTPUT_TOOLTIPS = ("The portrait's appearance code, for PD-FGC Generate.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "image": ("IMAGE", {"tooltip": "The portrait (first image of the batch)."}),
                "crop": CROP_INPUT,
            }
        }

    def encode(self, model, image, crop):
        what = "PD-FGC Encode Appearance: image"
        image_count(image, what)
        x = next(network_batches(image[:1], crop, what))
        return {
            "ui": alignment_notes(image[:1], "PD-FGC Encode Appearance"),
            "result": (model.engine().encode_appearance(x),),
        }


class PDFGC_EncodeLips:
    DESCRIPTION = (
        "Encodes speech into the mouth factor: one frame of lip motion per 1/fps seconds of audio "
        "(official: 25 fps, 16 kHz mel windows of 0.2 s). The audio is normalised in loudness as the "
        "official code does; silent audio is refused (zero the mouth factor instead). Use its audio output "
        "in Create Video: it is shifted to line up with the lips."
    )
    CATEGORY = f"{CATEGORY}/encode"
    FUNCTION = "encode"
    RETURN_TYPES = (KIND_TYPES["mouth"], "INT", "FLOAT", "AUDIO")
    RETURN_NAMES = ("mouth", "frame_count", "fps", "audio")
    OUTPUT_TOOLTIPS = (
        "The mouth factor (500 values per frame).",
        "Number of output frames the audio gives.",
        "The frame rate, to wire into Create Video.",
        f"The audio with its first {AUDIO_LEAD_SECONDS:g} s removed, for Create Video: each frame "
        f"shows the mouth of the sound {AUDIO_LEAD_SECONDS:g} s later, so this puts sound and lips in "
        "sync, as in the official videos.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "audio": (
                    "AUDIO",
                    {
                        "tooltip": "Speech, e.g. from Load Audio (only the first item of a batch is used; "
                        "channels are averaged)."
                    },
                ),
                "fps": (
                    "FLOAT",
                    {
                        "default": core_audio.OFFICIAL_FPS,
                        "min": 1.0,
                        "max": 120.0,
                        "step": 0.001,
                        "tooltip": "Video frame rate; one mouth frame per 1/fps seconds. The model was trained at "
                        f"{core_audio.OFFICIAL_FPS:g}.",
                    },
                ),
                "quality": (
                    list(core_audio.QUALITIES),
                    {
                        "default": "official",
                        "tooltip": "Resampling to 16 kHz. official: resampy kaiser_best, bit-exact with the official "
                        "code. fast: a quicker resampler, slightly different numbers.",
                    },
                ),
                "max_seconds": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 36000.0,
                        "step": 0.1,
                        "tooltip": "Use only the first seconds of the audio (after loudness "
                        "normalisation of the whole clip, as the official code). "
                        "0 = all of it.",
                    },
                ),
            }
        }

    def encode(self, model, audio, fps, quality, max_seconds):
        what = "PD-FGC Encode Lips: audio"
        if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
            raise InputError(
                f"{what}: expected a ComfyUI AUDIO ({{'waveform': [B,C,T], 'sample_rate': int}}), "
                f"got {type(audio).__name__}."
            )
        wave = audio["waveform"]
        if not torch.is_tensor(wave) or wave.dim() != 3 or wave.shape[0] < 1:
            shape = tuple(wave.shape) if torch.is_tensor(wave) else type(wave).__name__
            raise InputError(f"{what}: waveform must be [batch, channels, samples], got {shape}.")
        try:
            windows = core_audio.audio_to_windows(
                wave[0],
                audio["sample_rate"],
                fps=float(fps),
                quality=quality,
                max_seconds=float(max_seconds) if max_seconds > 0 else None,
            )
        except InputError as e:
            raise InputError(f"{what}: {e}") from None
        check_interrupt()
        progress = Progress(windows.shape[0])
        mouth = model.engine().encode_mouth(windows, fps=float(fps), progress=progress_cb(progress))
        lead = int(round(AUDIO_LEAD_SECONDS * int(audio["sample_rate"])))
        synced = {**audio, "waveform": wave[..., lead:]}
        return (mouth, len(mouth), float(fps), synced)


class _EncodeDriver:
    CATEGORY = f"{CATEGORY}/encode"
    FUNCTION = "encode"
    HEAD = ""
    LABEL = ""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "images": (
                    "IMAGE",
                    {
                        "tooltip": "Driving frames (e.g. the images of Get Video Components), faces "
                        "framed like the portrait."
                    },
                ),
                "crop": CROP_INPUT,
                "skip_first": SKIP_INPUT,
                "fps": FPS_INPUT,
            }
        }

    def encode(self, model, images, crop, skip_first, fps):
        factors = encode_heads(model, images, (self.HEAD,), crop, skip_first, fps, f"PD-FGC {self.LABEL}: images")
        return {"ui": alignment_notes(images, f"PD-FGC {self.LABEL}"), "result": (factors[self.HEAD],)}


class PDFGC_EncodePose(_EncodeDriver):
    DESCRIPTION = (
        "Encodes the head pose (rotation and position) of every driving frame. Only the pose head of "
        "the motion encoder runs."
    )
    HEAD, LABEL = "pose", "Encode Pose"
    RETURN_TYPES = (KIND_TYPES["pose"],)
    RETURN_NAMES = ("pose",)
    OUTPUT_TOOLTIPS = ("The pose factor (6 values per frame).",)


class PDFGC_EncodeEyes(_EncodeDriver):
    DESCRIPTION = (
        "Encodes the eye motion (blinks and gaze) of every driving frame. Only the eye head of the "
        "motion encoder runs. PD-FGC Split Eyes separates blink from gaze."
    )
    HEAD, LABEL = "eye", "Encode Eyes"
    RETURN_TYPES = (KIND_TYPES["eye"],)
    RETURN_NAMES = ("eye",)
    OUTPUT_TOOLTIPS = ("The eye factor (6 values per frame: 0, 1, 4, 5 blink; 2, 3 gaze).",)


class PDFGC_EncodeExpression(_EncodeDriver):
    DESCRIPTION = (
        "Encodes the facial expression (brows, cheeks, smile; not the lips' speech motion) of every "
        "driving frame. Only the expression head of the motion encoder runs. One image gives a "
        "one-frame expression, held by Combine Motion."
    )
    HEAD, LABEL = "expression", "Encode Expression"
    RETURN_TYPES = (KIND_TYPES["expression"],)
    RETURN_NAMES = ("expression",)
    OUTPUT_TOOLTIPS = ("The expression factor (30 values per frame).",)


class PDFGC_EncodeMotion(_EncodeDriver):
    DESCRIPTION = (
        "Encodes pose, eyes and expression from one driving video at once (each frame goes through "
        "the motion encoder once). Use the single encoders to take them from different videos."
    )
    LABEL = "Encode Motion"
    RETURN_TYPES = tuple(KIND_TYPES[h] for h in DRIVER_HEADS)
    RETURN_NAMES = ("pose", "eye", "expression")
    OUTPUT_TOOLTIPS = ("The pose factor.", "The eye factor.", "The expression factor.")

    def encode(self, model, images, crop, skip_first, fps):
        f = encode_heads(model, images, DRIVER_HEADS, crop, skip_first, fps, "PD-FGC Encode Motion: images")
        return {"ui": alignment_notes(images, "PD-FGC Encode Motion"), "result": tuple(f[h] for h in DRIVER_HEADS)}


NODE_CLASS_MAPPINGS = {
    "PDFGC_EncodeAppearance": PDFGC_EncodeAppearance,
    "PDFGC_EncodeLips": PDFGC_EncodeLips,
    "PDFGC_EncodePose": PDFGC_EncodePose,
    "PDFGC_EncodeEyes": PDFGC_EncodeEyes,
    "PDFGC_EncodeExpression": PDFGC_EncodeExpression,
    "PDFGC_EncodeMotion": PDFGC_EncodeMotion,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PDFGC_EncodeAppearance": "PD-FGC Encode Appearance",
    "PDFGC_EncodeLips": "PD-FGC Encode Lips (audio, lip sync)",
    "PDFGC_EncodePose": "PD-FGC Encode Pose",
    "PDFGC_EncodeEyes": "PD-FGC Encode Eyes",
    "PDFGC_EncodeExpression": "PD-FGC Encode Expression",
    "PDFGC_EncodeMotion": "PD-FGC Encode Motion (pose + eyes + expression)",
}
