"""PD-FGC factor operations (zero, strength, mix, eyes, smoothing, hold, fit, retime) and
Combine Motion, which assembles the generator's per-frame motion input."""

from __future__ import annotations

import torch

from ._common import ANY_FACTOR, CATEGORY, FACTOR, KIND_TYPES, MAX_FRAMES, MOTION, kind_input

try:
    from ..pdfgc_core import factors as core
    from ..pdfgc_core.errors import InputError
except ImportError:  # ``nodes`` imported as a top-level package, not inside the pack
    from pdfgc_core import factors as core
    from pdfgc_core.errors import InputError

OPS = f"{CATEGORY}/factors"
MIX_MODES = ("constant", "ramp")
FACTOR_INPUT = (
    ANY_FACTOR,
    {"tooltip": "A motion factor (mouth, pose, eye or expression) from a PD-FGC encoder or another factor node."},
)
FIT_INPUT = (
    list(core.FIT_MODES),
    {
        "default": "loop",
        "tooltip": "How a sequence is brought to the needed length: loop (repeat from the start, official), "
        "pingpong (forwards then backwards), hold (play once, then keep the last frame), truncate (only "
        "shorten; an error if it is too short).",
    },
)


def _factor(f, what: str):
    if not isinstance(f, core.Factor):
        raise InputError(f"{what}: expected a PD-FGC factor, got {type(f).__name__}.")
    return f


class _Op:
    CATEGORY = OPS
    RETURN_TYPES = (FACTOR,)
    RETURN_NAMES = ("factor",)
    OUTPUT_TOOLTIPS = ("The resulting factor (same kind as the input).",)


class PDFGC_ZeroFactor(_Op):
    DESCRIPTION = (
        "A factor of zeros with the input's kind and length: the neutral value (no pose change, open "
        "eyes looking ahead, neutral expression, closed mouth), i.e. that factor turned off."
    )
    FUNCTION = "zero"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"factor": FACTOR_INPUT}}

    def zero(self, factor):
        return (core.zero(_factor(factor, "PD-FGC Zero Factor: factor")),)


class PDFGC_FactorStrength(_Op):
    DESCRIPTION = (
        "Multiplies a factor by a strength: 0 turns it off, 1 keeps it, above 1 exaggerates, "
        "negative inverts. Applied before Combine Motion's official gains."
    )
    FUNCTION = "scale"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "factor": FACTOR_INPUT,
                "strength": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": -10.0,
                        "max": 10.0,
                        "step": 0.01,
                        "tooltip": "Multiplier for every value of every frame.",
                    },
                ),
            }
        }

    def scale(self, factor, strength):
        return (core.scale(_factor(factor, "PD-FGC Factor Strength: factor"), float(strength)),)


class PDFGC_MixFactors(_Op):
    DESCRIPTION = (
        "Interpolates between two factors of the same kind: (1 - t) * a + t * b per frame. constant: "
        "one t for every frame. ramp: t goes from start on the first frame to end on the last, e.g. a "
        "smooth change from one expression to another."
    )
    FUNCTION = "mix"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "a": (ANY_FACTOR, {"tooltip": "The factor at t = 0."}),
                "b": (ANY_FACTOR, {"tooltip": "The factor at t = 1 (same kind as a)."}),
                "mode": (
                    list(MIX_MODES),
                    {"default": "ramp", "tooltip": "constant: t for every frame. ramp: from start to end."},
                ),
                "t": (
                    "FLOAT",
                    {
                        "default": 0.5,
                        "min": -2.0,
                        "max": 3.0,
                        "step": 0.01,
                        "tooltip": "constant mode: weight of b (0 = a, 1 = b; beyond extrapolates).",
                    },
                ),
                "start": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": -2.0,
                        "max": 3.0,
                        "step": 0.01,
                        "tooltip": "ramp mode: weight of b on the first frame.",
                    },
                ),
                "end": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": -2.0,
                        "max": 3.0,
                        "step": 0.01,
                        "tooltip": "ramp mode: weight of b on the last frame.",
                    },
                ),
                "curve": (
                    list(core.RAMP_CURVES),
                    {"default": "smoothstep", "tooltip": "ramp mode: linear, or smoothstep (eases in and out)."},
                ),
                "length": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": MAX_FRAMES,
                        "tooltip": "Frames of the result; 0 = the longer of a and b. Both are fitted to it first.",
                    },
                ),
                "fit": FIT_INPUT,
            }
        }

    def mix(self, a, b, mode, t, start, end, curve, length, fit):
        a, b = _factor(a, "PD-FGC Mix Factors: a"), _factor(b, "PD-FGC Mix Factors: b")
        n = int(length) if length > 0 else max(len(a), len(b))
        if mode == "constant":
            w = torch.full((n,), float(t), dtype=torch.float32)
        elif mode == "ramp":
            w = core.ramp(n, float(start), float(end), curve=curve)
        else:
            raise InputError(f"PD-FGC Mix Factors: mode {mode!r} is not one of {', '.join(MIX_MODES)}.")
        return (core.mix(a, b, w, fit=fit),)


class PDFGC_SplitEyes:
    DESCRIPTION = (
        "Splits an eye factor into blink (dims 0, 1, 4, 5) and gaze (dims 2, 3), each an eye factor "
        "with the other dims zero, so blinks and gaze can come from different videos (PD-FGC Merge "
        "Eyes) or be edited separately."
    )
    CATEGORY = OPS
    FUNCTION = "split"
    RETURN_TYPES = (KIND_TYPES["eye"], KIND_TYPES["eye"])
    RETURN_NAMES = ("blink", "gaze")
    OUTPUT_TOOLTIPS = ("Eye factor with only the blink dims.", "Eye factor with only the gaze dims.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"eye": (kind_input("eye"), {"tooltip": "An eye factor (PD-FGC Encode Eyes)."})}}

    def split(self, eye):
        return core.split_eye(_factor(eye, "PD-FGC Split Eyes: eye"))


class PDFGC_MergeEyes(_Op):
    DESCRIPTION = "An eye factor with the blink dims of one eye factor and the gaze dims of another."
    FUNCTION = "merge"
    RETURN_TYPES = (KIND_TYPES["eye"],)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "blink": (kind_input("eye"), {"tooltip": "Eye factor giving the blinks (dims 0, 1, 4, 5)."}),
                "gaze": (kind_input("eye"), {"tooltip": "Eye factor giving the gaze (dims 2, 3)."}),
                "fit": FIT_INPUT,
            }
        }

    def merge(self, blink, gaze, fit):
        return (
            core.merge_eye(
                _factor(blink, "PD-FGC Merge Eyes: blink"), _factor(gaze, "PD-FGC Merge Eyes: gaze"), fit=fit
            ),
        )


class PDFGC_SmoothFactor(_Op):
    DESCRIPTION = (
        "Smooths a factor over time to remove jitter. Combine Motion already applies the official "
        "smoothing (mouth: 3-tap Gaussian, pose: 3-frame mean); this is extra."
    )
    FUNCTION = "smooth"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "factor": FACTOR_INPUT,
                "method": (
                    list(core.SMOOTHING_METHODS),
                    {"default": "gaussian", "tooltip": "gaussian, box (plain mean) or none."},
                ),
                "window": (
                    "INT",
                    {"default": 5, "min": 1, "max": 101, "step": 2, "tooltip": "Frames in the filter (odd)."},
                ),
                "sigma": (
                    "FLOAT",
                    {
                        "default": 1.5,
                        "min": 0.01,
                        "max": 100.0,
                        "step": 0.01,
                        "tooltip": "gaussian: standard deviation in frames.",
                    },
                ),
                "edge": (
                    list(core.EDGE_MODES),
                    {
                        "default": "replicate",
                        "tooltip": "replicate: repeat the first / last frame beyond the ends. official: as the official "
                        "post-processing (the Gaussian fades the first and last frames towards zero).",
                    },
                ),
            }
        }

    def smooth(self, factor, method, window, sigma, edge):
        return (core.smooth(_factor(factor, "PD-FGC Smooth Factor: factor"), method, int(window), float(sigma), edge),)


class PDFGC_HoldFrame(_Op):
    DESCRIPTION = "Freezes a factor: one of its frames repeated, e.g. a fixed head pose or a still expression."
    FUNCTION = "hold"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "factor": FACTOR_INPUT,
                "frame": (
                    "INT",
                    {
                        "default": 0,
                        "min": -MAX_FRAMES,
                        "max": MAX_FRAMES,
                        "tooltip": "The frame to keep; negative counts from the end (-1 = last).",
                    },
                ),
                "length": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": MAX_FRAMES,
                        "tooltip": "Frames of the result; 0 = as many as the input.",
                    },
                ),
            }
        }

    def hold(self, factor, frame, length):
        f = _factor(factor, "PD-FGC Hold Frame: factor")
        return (core.hold(f, int(frame), int(length) if length > 0 else None),)


class PDFGC_FitLength(_Op):
    DESCRIPTION = "Brings a factor to an exact number of frames by looping, ping-ponging, holding or truncating."
    FUNCTION = "fit"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "factor": FACTOR_INPUT,
                "length": (
                    "INT",
                    {
                        "default": 100,
                        "min": 1,
                        "max": MAX_FRAMES,
                        "tooltip": "Frames of the result (e.g. frame_count of PD-FGC Encode Lips).",
                    },
                ),
                "mode": FIT_INPUT,
            }
        }

    def fit(self, factor, length, mode):
        return (core.fit_length(_factor(factor, "PD-FGC Fit Length: factor"), int(length), mode),)


class PDFGC_RetimeFactor(_Op):
    DESCRIPTION = (
        "Resamples a factor in time to another frame rate (e.g. a 30 fps driving video for 25 fps "
        "output); the number of frames changes accordingly."
    )
    FUNCTION = "retime"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "factor": FACTOR_INPUT,
                "fps": (
                    "FLOAT",
                    {
                        "default": core.DEFAULT_FPS,
                        "min": 1.0,
                        "max": 240.0,
                        "step": 0.001,
                        "tooltip": "The new frame rate.",
                    },
                ),
                "method": (
                    list(core.RETIME_METHODS),
                    {"default": "linear", "tooltip": "linear interpolation, or the nearest frame."},
                ),
            }
        }

    def retime(self, factor, fps, method):
        return (core.retime(_factor(factor, "PD-FGC Retime Factor: factor"), float(fps), method),)


class PDFGC_CombineMotion:
    DESCRIPTION = (
        "Assembles the generator's motion from up to four factors: any factor not connected is zero "
        "(neutral). Each is fitted to the output length, then the official post-processing (gains, "
        "mouth and pose smoothing) is applied once, as in the official code."
    )
    CATEGORY = OPS
    FUNCTION = "combine"
    RETURN_TYPES = (MOTION, "INT")
    RETURN_NAMES = ("motion", "frame_count")
    OUTPUT_TOOLTIPS = ("Per-frame motion for PD-FGC Generate.", "Number of frames of the motion.")

    @classmethod
    def INPUT_TYPES(cls):
        gain = {"min": -10.0, "max": 10.0, "step": 0.01}
        return {
            "required": {
                "length": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": MAX_FRAMES,
                        "tooltip": "Output frames; 0 = as many as the mouth factor (or the longest "
                        "connected factor if there is no mouth).",
                    },
                ),
                "fit": FIT_INPUT,
                "match_fps": (
                    "BOOLEAN",
                    {
                        "default": True,
                        "tooltip": "Resample (linear) factors whose frame rate differs from the "
                        "mouth's (or the first connected factor's) before fitting. "
                        "Off: frames are matched one to one.",
                    },
                ),
                "post_process": (
                    "BOOLEAN",
                    {
                        "default": True,
                        "tooltip": "Official post-processing: the gains below, a 3-tap "
                        "Gaussian on the mouth and a 3-frame mean on the pose. "
                        "Off: the factors reach the generator unchanged.",
                    },
                ),
                **{
                    f"{kind}_gain": (
                        "FLOAT",
                        {"default": g, **gain, "tooltip": f"{kind.capitalize()} gain (official {g:.1f})."},
                    )
                    for kind, g in core.OFFICIAL_GAINS.items()
                },
                "blink": (
                    "BOOLEAN",
                    {
                        "default": True,
                        "tooltip": "Keep the blinks of the eye factor (dims 0, 1, 4, 5); off: eyes stay open.",
                    },
                ),
                "gaze": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Keep the gaze of the eye factor (dims 2, 3); off: eyes look ahead."},
                ),
            },
            "optional": {
                "mouth": (
                    kind_input("mouth"),
                    {"tooltip": "Mouth factor (PD-FGC Encode Lips). Not connected: closed mouth."},
                ),
                "expression": (
                    kind_input("expression"),
                    {"tooltip": "Expression factor. Not connected: neutral expression."},
                ),
                "eye": (kind_input("eye"), {"tooltip": "Eye factor. Not connected: open eyes looking ahead."}),
                "pose": (kind_input("pose"), {"tooltip": "Pose factor. Not connected: the canonical frontal pose."}),
            },
        }

    def combine(
        self,
        length,
        fit,
        match_fps,
        post_process,
        mouth_gain,
        expression_gain,
        eye_gain,
        pose_gain,
        blink,
        gaze,
        mouth=None,
        expression=None,
        eye=None,
        pose=None,
    ):
        post = core.PostProcess.none()
        if post_process:
            gains = {"mouth": mouth_gain, "expression": expression_gain, "eye": eye_gain, "pose": pose_gain}
            post = core.PostProcess(**{f"{k}_gain": float(g) for k, g in gains.items()})
        motion = core.combine_motion(
            mouth,
            expression,
            eye,
            pose,
            length=int(length) if length > 0 else None,
            fit=fit,
            match_fps=bool(match_fps),
            post=post,
            blink=bool(blink),
            gaze=bool(gaze),
            name="PD-FGC Combine Motion",
        )
        return (motion, int(motion.shape[0]))


NODE_CLASS_MAPPINGS = {
    "PDFGC_ZeroFactor": PDFGC_ZeroFactor,
    "PDFGC_FactorStrength": PDFGC_FactorStrength,
    "PDFGC_MixFactors": PDFGC_MixFactors,
    "PDFGC_SplitEyes": PDFGC_SplitEyes,
    "PDFGC_MergeEyes": PDFGC_MergeEyes,
    "PDFGC_SmoothFactor": PDFGC_SmoothFactor,
    "PDFGC_HoldFrame": PDFGC_HoldFrame,
    "PDFGC_FitLength": PDFGC_FitLength,
    "PDFGC_RetimeFactor": PDFGC_RetimeFactor,
    "PDFGC_CombineMotion": PDFGC_CombineMotion,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PDFGC_ZeroFactor": "PD-FGC Zero Factor",
    "PDFGC_FactorStrength": "PD-FGC Factor Strength",
    "PDFGC_MixFactors": "PD-FGC Mix Factors",
    "PDFGC_SplitEyes": "PD-FGC Split Eyes",
    "PDFGC_MergeEyes": "PD-FGC Merge Eyes",
    "PDFGC_SmoothFactor": "PD-FGC Smooth Factor",
    "PDFGC_HoldFrame": "PD-FGC Hold Frame",
    "PDFGC_FitLength": "PD-FGC Fit Length",
    "PDFGC_RetimeFactor": "PD-FGC Retime Factor",
    "PDFGC_CombineMotion": "PD-FGC Combine Motion",
}
