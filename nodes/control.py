"""Control without driving videos: Idle Blinks, Head Sway, Pose from Angles (constant or keyframed),
Pose Readout, Estimate Head Pose, Load Pose Map, Calibrate Pose; and the motion-embedding export
(Motion Embedding, Save Motion Embedding). Thin adapters over :mod:`pdfgc_core.control`."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import torch

from ._common import (
    CATEGORY,
    FPS_INPUT,
    KIND_TYPES,
    MAX_FRAMES,
    MODEL,
    Progress,
    check_interrupt,
    image_count,
    kind_input,
)
from .faces import _fan_weight_dirs, _progress, _torch_device

try:
    from ..pdfgc_core import control as core
    from ..pdfgc_core import images as core_images
    from ..pdfgc_core.control import pose as core_pose
    from ..pdfgc_core.errors import InputError, MediaError, PDFGCError
    from ..pdfgc_core.faces import get_detector
    from ..pdfgc_core.factors import fit_length
except ImportError:  # ``nodes`` imported as a top-level package, not inside the pack
    from pdfgc_core import control as core
    from pdfgc_core import images as core_images
    from pdfgc_core.control import pose as core_pose
    from pdfgc_core.errors import InputError, MediaError, PDFGCError
    from pdfgc_core.faces import get_detector
    from pdfgc_core.factors import fit_length

# Socket types (part of saved workflows: never rename them).
POSE_MAP = "PDFGC_POSE_MAP"  # pdfgc_core.control.PoseMap (angles <-> pose factor)
MOTION_EMBEDDING = "PDFGC_MOTION_EMBEDDING"  # pdfgc_core.control.MotionEmbedding (heads, negative, alignment)

CONTROL = f"{CATEGORY}/control"
EXPORT = f"{CATEGORY}/export"
ASSUMED = "assumed (uncalibrated)"
OUTPUT_TAG = " [output]"
LANDMARKS = ("dlib", "face_alignment")
SEED_INPUT = (
    "INT",
    {
        "default": 0,
        "min": 0,
        "max": 2**31 - 1,
        "control_after_generate": False,  # same seed, same motion: no "randomize" widget
        "tooltip": "Random seed: same seed, same motion.",
    },
)
MODEL_INPUT = (MODEL, {"tooltip": "From PD-FGC Load Model."})
LENGTH_INPUT = (
    "INT",
    {
        "default": 125,
        "min": 1,
        "max": MAX_FRAMES,
        "tooltip": "Frames to make; connect Encode Lips' frame_count to match the speech.",
    },
)
POSE_MAP_INPUT = (
    POSE_MAP,
    {
        "tooltip": "From PD-FGC Load Pose Map or Calibrate Pose. Not connected: the ASSUMED mapping (pose factor = "
        "pitch, yaw, roll in radians, x, y, z), unverified until calibrated against the official checkpoint."
    },
)
LANDMARK_INPUT = (
    list(LANDMARKS),
    {"default": "dlib", "tooltip": "68-point landmarks: dlib (offline) or face_alignment (needs its weight files)."},
)


def _err(node: str, e: PDFGCError) -> PDFGCError:
    return type(e)(f"{node}: {e}")


def _detector(backend: str):
    if backend == "face_alignment":
        return get_detector(backend, weights_dirs=_fan_weight_dirs(), device=_torch_device())
    return get_detector(backend)


def _pose_map(pose_map):
    if pose_map is None:
        return core.assumed_pose_map()
    if not isinstance(pose_map, core.PoseMap):
        raise InputError(f"pose_map must come from PD-FGC Load Pose Map, got {type(pose_map).__name__}.")
    return pose_map


def _audio(audio) -> tuple[np.ndarray, int]:
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise InputError(f"audio must be a ComfyUI AUDIO, got {type(audio).__name__}.")
    wave = audio["waveform"]
    if not torch.is_tensor(wave) or wave.dim() != 3 or wave.shape[0] < 1:
        raise InputError("audio waveform must be [batch, channels, samples].")
    return wave[0].float().cpu().numpy(), int(audio["sample_rate"])


def _plot(controls, fps: float, title: str) -> torch.Tensor:
    return core_images.u8_to_comfy(core.plot_controls(controls, fps, title)[None])


def _title(what: str, pm) -> str:
    return f"{what}: {'calibrated pose map' if pm.calibrated else 'ASSUMED mapping (not calibrated)'}"


def _frames(images) -> np.ndarray:
    image_count(images, "images")
    return core_images.comfy_to_u8(images)


def _folder_paths():
    import folder_paths  # ComfyUI's

    return folder_paths


def _output_file(prefix: str, default: str, ext: str, node: str) -> tuple[str, str, str]:
    """(path, subfolder, file name) of the next free ``<prefix>_NNNNN_<ext>`` in ComfyUI's output folder."""
    out_root = os.path.abspath(_folder_paths().get_output_directory())
    prefix = str(prefix).strip().replace("\\", "/") or default
    folder = os.path.abspath(os.path.join(out_root, os.path.dirname(prefix)))
    stem = os.path.basename(prefix)
    if os.path.commonpath([out_root, folder]) != out_root or not stem or stem in (".", ".."):
        raise InputError(f"{node}: filename_prefix {prefix!r} must name a file inside the output folder.")
    pattern = re.compile(re.escape(stem) + r"_(\d+)_" + re.escape(ext) + "$")
    try:
        taken = [int(m.group(1)) for f in os.listdir(folder) if (m := pattern.match(f))]
    except FileNotFoundError:
        taken = []
    name = f"{stem}_{max(taken, default=0) + 1:05d}_{ext}"
    sub = os.path.relpath(folder, out_root).replace(os.sep, "/")
    return os.path.join(folder, name), "" if sub == "." else sub, name


# ------------------------------------------------------------------------------------------ idle


class PDFGC_IdleBlinks:
    DESCRIPTION = (
        "Natural blinks without a driving video: an eye factor that rests between blinks and blinks at random "
        "(Poisson) times at the given rate. Each blink's shape and the open / closed levels come from an eye "
        "factor, so they are in the model's own units: by default the blink in the bundled sample eye video, "
        "or the strongest blink of the eye factor you connect. Deterministic for a seed."
    )
    CATEGORY = CONTROL
    FUNCTION = "run"
    RETURN_TYPES = (KIND_TYPES["eye"], "INT")
    RETURN_NAMES = ("eye", "blink_count")
    OUTPUT_TOOLTIPS = ("The eye factor (blink dims move; gaze stays at the source's level).", "Blinks made.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "length": LENGTH_INPUT,
                "fps": FPS_INPUT,
                "rate": (
                    "FLOAT",
                    {
                        "default": core.DEFAULT_BLINK_RATE,
                        "min": 0.0,
                        "max": 40.0,
                        "step": 0.5,
                        "tooltip": "Blinks per minute on average (people at rest: 12-20). 0 = eyes open, no blinks.",
                    },
                ),
                "seed": SEED_INPUT,
                "duration": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.5,
                        "max": 2.0,
                        "step": 0.05,
                        "tooltip": "Blink duration relative to the source blink (each blink varies by +-15%).",
                    },
                ),
                "depth": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.05,
                        "tooltip": "How far the eyes close: 1 = as far as in the source blink (each blink 80-100% "
                        "of it).",
                    },
                ),
            },
            "optional": {
                "eye": (kind_input("eye"), {"tooltip": "Optional eye factor whose strongest blink gives the shape."}),
            },
        }

    def run(self, model, length, fps, rate, seed, duration, depth, eye=None):
        node = "PD-FGC Idle Blinks"
        try:
            shape = core.blink_shape(eye) if eye is not None else core.sample_blink_shape(model.engine())
            track = core.idle_blinks(
                int(length),
                shape,
                rate=float(rate),
                seed=int(seed),
                fps=float(fps),
                duration=float(duration),
                depth=float(depth),
            )
        except InputError as e:
            raise _err(node, e) from None
        return (track.factor, len(track.starts))


class PDFGC_HeadSway:
    DESCRIPTION = (
        "Idle head motion without a driving video: a smooth, slow pose factor that moves along the directions a "
        "real head moves (the covariance of a reference pose factor: by default the bundled sample pose video), "
        "amplitude times as much, optionally livelier while the speech is loud. Connect a base pose (e.g. from "
        "Pose from Angles) to sway around it. Deterministic for a seed."
    )
    CATEGORY = CONTROL
    FUNCTION = "run"
    RETURN_TYPES = (KIND_TYPES["pose"],)
    RETURN_NAMES = ("pose",)
    OUTPUT_TOOLTIPS = ("The pose factor (6 values per frame).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "length": LENGTH_INPUT,
                "fps": FPS_INPUT,
                "amplitude": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 5.0,
                        "step": 0.05,
                        "tooltip": "1 = as much motion as the reference; 0 = still.",
                    },
                ),
                "speed": (
                    "FLOAT",
                    {
                        "default": core.DEFAULT_SWAY_SPEED,
                        "min": 0.02,
                        "max": 2.0,
                        "step": 0.01,
                        "tooltip": "Typical frequency of the motion, Hz (0.1-0.3 looks natural).",
                    },
                ),
                "seed": SEED_INPUT,
                "center": (
                    ["zero", "reference"],
                    {
                        "default": "zero",
                        "tooltip": "zero: sway around the canonical pose (as with no pose input). reference: around "
                        "the reference's mean pose.",
                    },
                ),
                "liveliness": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 4.0,
                        "step": 0.05,
                        "tooltip": "With audio connected: motion grows by up to this factor while speech is loud "
                        "(0 = ignore the audio).",
                    },
                ),
            },
            "optional": {
                "reference": (
                    kind_input("pose"),
                    {"tooltip": "Optional pose factor whose motion sets the directions and scale."},
                ),
                "audio": ("AUDIO", {"tooltip": "Optional speech (e.g. Load Audio): livelier while it is loud."}),
                "base": (
                    kind_input("pose"),
                    {"tooltip": "Optional pose factor to sway around (held at its last frame)."},
                ),
            },
        }

    def run(
        self, model, length, fps, amplitude, speed, seed, center, liveliness, reference=None, audio=None, base=None
    ):
        node = "PD-FGC Head Sway"
        try:
            ref = reference if reference is not None else core.encode_sample(model.engine(), "pose")
            env = None
            if audio is not None:
                wave, sr = _audio(audio)
                env = core.speech_envelope(wave, sr, int(length), float(fps))
            pose = core.head_sway(
                int(length),
                ref,
                amplitude=float(amplitude),
                speed=float(speed),
                seed=int(seed),
                fps=float(fps),
                center=center,
                envelope=env,
                liveliness=float(liveliness),
            )
            if base is not None:
                if base.kind != "pose":
                    raise InputError(f"base must be a pose factor, got {base.kind}")
                pose = pose.with_values(pose.values + fit_length(base, int(length), "hold").values)
        except InputError as e:
            raise _err(node, e) from None
        return (pose,)


# ------------------------------------------------------------------------------------------ pose


def _angle(default_tip: str):
    return ("FLOAT", {"default": 0.0, "min": -90.0, "max": 90.0, "step": 0.5, "tooltip": default_tip})


def _shift(tip: str):
    return ("FLOAT", {"default": 0.0, "min": -1.0, "max": 1.0, "step": 0.005, "tooltip": tip})


class PDFGC_PoseFromAngles:
    DESCRIPTION = (
        "Head pose from angles: pitch / yaw / roll in degrees and x / y / z translation, constant or keyframed "
        "(e.g. '0: 0,0,0; 2.5s: 10,-5,0 ease'), turned into a pose factor through a pose map. Without a "
        "calibrated pose map the mapping is an ASSUMPTION (the paper's reading: pitch, yaw, roll in radians, "
        "then translation), unverified until calibrated against the official checkpoint."
    )
    CATEGORY = CONTROL
    FUNCTION = "run"
    RETURN_TYPES = (KIND_TYPES["pose"], "INT")
    RETURN_NAMES = ("pose", "frame_count")
    OUTPUT_TOOLTIPS = ("The pose factor.", "Its number of frames.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pitch": _angle("Degrees; positive looks down (camera axes: x right, y down)."),
                "yaw": _angle("Degrees; a mirrored picture has the opposite sign."),
                "roll": _angle("Degrees; positive tilts the head clockwise in the picture."),
                "x": _shift("Nose offset from the picture centre, picture widths, right positive."),
                "y": _shift("Nose offset from the picture centre, picture widths, down positive."),
                "z": _shift("ln(reference distance / distance): positive is nearer (larger)."),
                "length": (
                    "INT",
                    {
                        "default": 1,
                        "min": 0,
                        "max": MAX_FRAMES,
                        "tooltip": "Frames to make. A constant pose needs 1 (Combine Motion repeats it). With "
                        "keyframes, 0 = up to the last key.",
                    },
                ),
                "fps": FPS_INPUT,
                "keyframes": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "Empty: the constant angles above. Else 'TIME: pitch, yaw, roll[, x, y, z] [curve]' "
                        "entries separated by ';' or lines, TIME a frame (12) or seconds (2.5s); curves: "
                        f"{', '.join(core.CURVES)} (shapes the segment arriving at that key). Overrides the angles.",
                    },
                ),
                "curve": (
                    list(core.CURVES),
                    {"default": "ease", "tooltip": "Default curve between keyframes."},
                ),
            },
            "optional": {"pose_map": POSE_MAP_INPUT},
        }

    def run(self, pitch, yaw, roll, x, y, z, length, fps, keyframes, curve, pose_map=None):
        node = "PD-FGC Pose from Angles"
        try:
            pm = _pose_map(pose_map)
            if str(keyframes).strip():
                keys = core.parse_keyframes(str(keyframes), float(fps))
                controls = core.keyframe_controls(keys, int(length) or None, curve)
            else:
                controls = np.tile([pitch, yaw, roll, x, y, z], (max(1, int(length)), 1))
            pose = pm.to_factor(controls, float(fps))
        except InputError as e:
            raise _err(node, e) from None
        return (pose, len(pose))


class PDFGC_PoseReadout:
    DESCRIPTION = (
        "Reads a pose factor as head angles per frame (pitch, yaw, roll in degrees; x, y, z) through a pose map: "
        "a plot and a CSV table. Without a calibrated pose map the angles rest on the ASSUMED mapping."
    )
    CATEGORY = CONTROL
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("plot", "angles")
    OUTPUT_TOOLTIPS = ("A plot of the angles over time.", "CSV: frame, seconds, pitch, yaw, roll, x, y, z.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"pose": (kind_input("pose"), {"tooltip": "A pose factor."})},
            "optional": {"pose_map": POSE_MAP_INPUT},
        }

    def run(self, pose, pose_map=None):
        node = "PD-FGC Pose Readout"
        try:
            pm = _pose_map(pose_map)
            controls = pm.readout(pose)
        except InputError as e:
            raise _err(node, e) from None
        return (_plot(controls, pose.fps, _title("pose readout", pm)), core.controls_csv(controls, pose.fps))


class PDFGC_EstimateHeadPose:
    DESCRIPTION = (
        "Estimates the head pose of every frame from 68 facial landmarks (solvePnP on a generic 3D face; no "
        "PD-FGC network): angles for checking results, and a pose factor through the pose map, usable as a "
        "pose driver. Frames without a face take values interpolated from their neighbours."
    )
    CATEGORY = CONTROL
    FUNCTION = "run"
    RETURN_TYPES = (KIND_TYPES["pose"], "IMAGE", "STRING")
    RETURN_NAMES = ("pose", "plot", "angles")
    OUTPUT_TOOLTIPS = (
        "The pose factor through the pose map.",
        "A plot of the measured angles.",
        "CSV: frame, seconds, pitch, yaw, roll, x, y, z.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Frames with a face (any size; the largest face is measured)."}),
                "landmarks": LANDMARK_INPUT,
                "fps": FPS_INPUT,
            },
            "optional": {"pose_map": POSE_MAP_INPUT},
        }

    def run(self, images, landmarks, fps, pose_map=None):
        node = "PD-FGC Estimate Head Pose"
        try:
            pm = _pose_map(pose_map)
            frames = _frames(images)
            controls, _ = core.estimate_controls(
                frames, _detector(landmarks), name="images", progress=_progress(len(frames))
            )
            pose = pm.to_factor(controls, float(fps))
        except InputError as e:
            raise _err(node, e) from None
        return (pose, _plot(controls, float(fps), "measured head pose"), core.controls_csv(controls, float(fps)))


def _pose_map_files(root: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.lower().endswith(".json"):
                path = os.path.join(dirpath, name)
                try:
                    if os.path.getsize(path) < 1_000_000:
                        with open(path, encoding="utf-8") as fh:
                            if json.load(fh).get("format") == core_pose.MAP_FORMAT:
                                out.append(os.path.relpath(path, root).replace(os.sep, "/"))
                except (OSError, ValueError, AttributeError):
                    continue
    return sorted(out)


def _pose_map_roots() -> list[tuple[str, str]]:
    """(root, tag) pairs searched for pose maps: models/pdfgc, input, output ([output])."""
    try:
        fp = _folder_paths()
    except ImportError:
        return []
    roots = []
    try:
        roots += [(r, "") for r in fp.get_folder_paths("pdfgc")]
    except KeyError:
        roots.append((os.path.join(fp.models_dir, "pdfgc"), ""))
    roots += [(fp.get_input_directory(), ""), (fp.get_output_directory(), OUTPUT_TAG)]
    return roots


def list_pose_maps() -> list[str]:
    names = []
    for root, tag in _pose_map_roots():
        if os.path.isdir(root):
            names += [n + tag for n in _pose_map_files(root) if n + tag not in names]
    return names


def resolve_pose_map(name: str) -> str:
    name = str(name).strip()
    if os.path.isabs(name):
        return name
    tagged = name.endswith(OUTPUT_TAG)
    rel = name[: -len(OUTPUT_TAG)] if tagged else name
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." not in parts:
        for root, tag in _pose_map_roots():
            path = os.path.join(root, *parts)
            if (tag == OUTPUT_TAG) == tagged and os.path.isfile(path):
                return path
    raise MediaError(
        f"PD-FGC Load Pose Map: {name!r} was not found in models/pdfgc, input or output; write one with "
        "`python -m pdfgc_core calibrate-pose` or PD-FGC Calibrate Pose, then refresh the page (R)."
    )


class PDFGC_LoadPoseMap:
    DESCRIPTION = (
        "Loads a pose map (the calibrated mapping between head angles and the pose factor, a .json written by "
        "`python -m pdfgc_core calibrate-pose` or PD-FGC Calibrate Pose) from models/pdfgc, input or output; or "
        "the assumed, uncalibrated mapping."
    )
    CATEGORY = CONTROL
    FUNCTION = "load"
    RETURN_TYPES = (POSE_MAP, "STRING")
    RETURN_NAMES = ("pose_map", "info")
    OUTPUT_TOOLTIPS = ("The pose map.", "What it is: the calibration's fit statistics, or the assumption.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "file": (
                    [ASSUMED, *list_pose_maps()],
                    {"tooltip": "A pose map file, or the assumed mapping. Refresh the page (R) to see new files."},
                )
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, file):
        return True  # an unlisted file is reported when the node runs, with the reason

    def load(self, file):
        if file == ASSUMED:
            pm = core.assumed_pose_map()
        else:
            try:
                pm = core.PoseMap.load(resolve_pose_map(file))
            except (InputError, MediaError) as e:
                raise _err("PD-FGC Load Pose Map", e) from None
        return (pm, pm.describe())


class PDFGC_CalibratePose:
    DESCRIPTION = (
        "Calibrates the mapping between head angles and the pose factor on a talking-head video: measures each "
        "frame's head pose with landmarks, encodes the same frames with the pose head, fits the linear map, "
        "and checks it on the mirrored frames (yaw, roll and x must flip). Saves the map (.json) in the output "
        "folder; PD-FGC Load Pose Map lists it. Use a few seconds of varied head motion."
    )
    CATEGORY = CONTROL
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = (POSE_MAP, "STRING")
    RETURN_NAMES = ("pose_map", "report")
    OUTPUT_TOOLTIPS = ("The fitted pose map.", "R^2 per axis, the mirror test and the file written.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "images": ("IMAGE", {"tooltip": "Frames of a talking head, framed like PD-FGC crops."}),
                "landmarks": LANDMARK_INPUT,
                "crop": (
                    list(core_images.CROPS),
                    {"default": "official", "tooltip": "How the pose encoder sees the frames (as in Encode Pose)."},
                ),
                "filename_prefix": ("STRING", {"default": "pdfgc/pose_map", "tooltip": "Output file name prefix."}),
            }
        }

    def run(self, model, images, landmarks, crop, filename_prefix):
        node = "PD-FGC Calibrate Pose"
        try:
            frames = _frames(images)
            path, sub, name = _output_file(filename_prefix, "pdfgc/pose_map", ".json", node)
            pm = core.calibrate_pose_map(
                model.engine(),
                frames,
                _detector(landmarks),
                crop=crop,
                source=f"{node} ({len(frames)} frames)",
                progress=_progress(len(frames)),
            )
            pm.save(path)
        except (InputError, MediaError) as e:
            raise _err(node, e) from None
        lines = [pm.describe()]
        lines += [
            f"{axis}: expected {m['expected']}, "
            + ("corr n/a" if m["corr"] is None else f"corr {m['corr']:+.2f}")
            + (" ok" if m["ok"] else " FAILED")
            for axis, m in pm.info["mirror"].items()
        ]
        if "warning" in pm.info:
            lines.append("WARNING: " + pm.info["warning"])
        listed = (f"{sub}/{name}" if sub else name) + OUTPUT_TAG
        lines.append(f"saved {listed}")
        text = "\n".join(lines)
        return {"ui": {"text": [text]}, "result": (pm, text)}


# ---------------------------------------------------------------------------------------- export


class PDFGC_MotionEmbedding:
    DESCRIPTION = (
        "PD-FGC's motion encoder as a feature extractor: aligns the faces with an explicit convention (official: "
        "PD-FGC's template and 192 crop, as Portrait4D; five_point: 5-point similarity, bicubic, no crop, as "
        "FantasyPortrait and HelloMeme) and returns the raw heads (pose 6, eye 6, emotion 30, to_mouth 512, lip "
        "500), the layouts fantasyportrait_554 / portrait4d_548 / hellomeme_548 and the negative (all -1) "
        "embedding, as a PDFGC_MOTION_EMBEDDING other packs can take."
    )
    CATEGORY = EXPORT
    FUNCTION = "run"
    RETURN_TYPES = (MOTION_EMBEDDING, "INT")
    RETURN_NAMES = ("embedding", "frame_count")
    OUTPUT_TOOLTIPS = ("The embeddings of every frame and the negative one.", "Number of frames.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "images": ("IMAGE", {"tooltip": "Frames or pictures with a face."}),
                "alignment": (
                    list(core.ALIGNMENTS),
                    {
                        "default": "official",
                        "tooltip": "official: PD-FGC template + 192 crop (Portrait4D). five_point: FantasyPortrait / "
                        "HelloMeme 5-point template, bicubic, no crop. Recorded with the embedding.",
                    },
                ),
                "landmarks": (
                    [*LANDMARKS, "pre-aligned"],
                    {
                        "default": "dlib",
                        "tooltip": "Landmark backend. pre-aligned: the pictures already are PD-FGC crops (official "
                        "alignment only).",
                    },
                ),
                "mode": (
                    ["auto", "image", "video"],
                    {
                        "default": "auto",
                        "tooltip": "official alignment: video = one steady crop per clip, image = per picture, auto "
                        "= video for several frames. five_point always aligns each frame.",
                    },
                ),
                "fps": FPS_INPUT,
            }
        }

    def run(self, model, images, alignment, landmarks, mode, fps):
        node = "PD-FGC Motion Embedding"
        try:
            frames = _frames(images)
            det = get_detector("pre-aligned") if landmarks == "pre-aligned" else _detector(landmarks)
            progress = Progress(len(frames))

            def cb(n: int) -> None:
                progress.update(n)
                check_interrupt()

            emb = core.export_motion(
                model.engine(), frames, alignment, det, mode=mode, fps=float(fps), name="images", progress=cb
            )
        except InputError as e:
            raise _err(node, e) from None
        return (emb, emb.num_frames)


class PDFGC_SaveMotionEmbedding:
    DESCRIPTION = (
        "Saves a motion embedding in the output folder: one .safetensors per clip (every head, every layout, "
        "the negative embedding, the alignment convention in its metadata) and optionally one .npy per frame "
        "of a layout (plus negative.npy and embedding.json)."
    )
    CATEGORY = EXPORT
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("file",)
    OUTPUT_TOOLTIPS = ("The .safetensors file written (path).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "embedding": (MOTION_EMBEDDING, {"tooltip": "From PD-FGC Motion Embedding."}),
                "filename_prefix": (
                    "STRING",
                    {"default": "pdfgc/motion_embedding", "tooltip": "Output file name prefix."},
                ),
                "npy_layout": (
                    ["none", *core.LAYOUTS],
                    {
                        "default": "none",
                        "tooltip": "Also write one .npy per frame of this layout (none: only the file).",
                    },
                ),
            }
        }

    def save(self, embedding, filename_prefix, npy_layout):
        node = "PD-FGC Save Motion Embedding"
        if not isinstance(embedding, core.MotionEmbedding):
            raise InputError(f"{node}: embedding must come from PD-FGC Motion Embedding.")
        try:
            path, sub, name = _output_file(filename_prefix, "pdfgc/motion_embedding", ".safetensors", node)
            core.save_embedding(embedding, path)
            files = [{"filename": name, "subfolder": sub, "type": "output"}]
            if npy_layout != "none":
                folder = path[: -len(".safetensors")] + f"_{npy_layout}"
                core.save_embedding_npy(embedding, folder, npy_layout)
                files.append({"filename": os.path.basename(folder), "subfolder": sub, "type": "output"})
        except (InputError, MediaError) as e:
            raise _err(node, e) from None
        return {"ui": {"embeddings": files}, "result": (path,)}


NODE_CLASS_MAPPINGS = {
    "PDFGC_IdleBlinks": PDFGC_IdleBlinks,
    "PDFGC_HeadSway": PDFGC_HeadSway,
    "PDFGC_PoseFromAngles": PDFGC_PoseFromAngles,
    "PDFGC_PoseReadout": PDFGC_PoseReadout,
    "PDFGC_EstimateHeadPose": PDFGC_EstimateHeadPose,
    "PDFGC_LoadPoseMap": PDFGC_LoadPoseMap,
    "PDFGC_CalibratePose": PDFGC_CalibratePose,
    "PDFGC_MotionEmbedding": PDFGC_MotionEmbedding,
    "PDFGC_SaveMotionEmbedding": PDFGC_SaveMotionEmbedding,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PDFGC_IdleBlinks": "PD-FGC Idle Blinks",
    "PDFGC_HeadSway": "PD-FGC Head Sway",
    "PDFGC_PoseFromAngles": "PD-FGC Pose from Angles",
    "PDFGC_PoseReadout": "PD-FGC Pose Readout",
    "PDFGC_EstimateHeadPose": "PD-FGC Estimate Head Pose",
    "PDFGC_LoadPoseMap": "PD-FGC Load Pose Map",
    "PDFGC_CalibratePose": "PD-FGC Calibrate Pose",
    "PDFGC_MotionEmbedding": "PD-FGC Motion Embedding (export)",
    "PDFGC_SaveMotionEmbedding": "PD-FGC Save Motion Embedding",
}
