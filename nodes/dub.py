"""PD-FGC dubbing nodes: new speech for an existing video, same person, same head motion.

Two routes to the same core (:mod:`pdfgc_core.dub`): **Dub Video** takes an IMAGE batch (short
clips, chains with other nodes) and **Dub Video File** streams a video file from ComfyUI's input
folder into an mp4 in its output folder (any length, memory bounded)."""

from __future__ import annotations

import os

import numpy as np
import torch

from ._common import CATEGORY, MODEL, Progress, check_interrupt, image_count, intermediate_device

try:
    from ..pdfgc_core import audio as core_audio
    from ..pdfgc_core import dub as core_dub
    from ..pdfgc_core import images as core_images
    from ..pdfgc_core.errors import InputError
    from ..pdfgc_core.faces.paste import REGIONS
    from ..pdfgc_core.media import VIDEO_EXTENSIONS
except ImportError:  # ``nodes`` imported as a top-level package, not inside the pack
    from pdfgc_core import audio as core_audio
    from pdfgc_core import dub as core_dub
    from pdfgc_core import images as core_images
    from pdfgc_core.errors import InputError
    from pdfgc_core.faces.paste import REGIONS
    from pdfgc_core.media import VIDEO_EXTENSIONS

STAGES = {"track": 0, "encode": 1, "render": 2}


def _options() -> dict:
    """The dubbing settings every dub node shares, in this order (public: saved workflows store them)."""
    return {
        "face": (
            "STRING",
            {
                "default": "largest",
                "tooltip": "Which face to dub: largest, N (N-th from the left, 0 = leftmost) or X,Y (the face "
                "nearest to that pixel).",
            },
        ),
        "mask": (
            list(REGIONS),
            {
                "default": "lower",
                "tooltip": "Region replaced by the generated face: mouth, lower (below the eyes: eyes and brows "
                "stay the original) or face. Pixels outside it are exactly the source's.",
            },
        ),
        "feather": (
            "FLOAT",
            {
                "default": 12.0,
                "min": 0.0,
                "max": 64.0,
                "step": 0.5,
                "tooltip": "Soft edge of the mask, in pixels of the 224 crop.",
            },
        ),
        "color_match": (
            "BOOLEAN",
            {"default": True, "tooltip": "Match the generated face's colours to the video inside the mask."},
        ),
        "length": (
            list(core_dub.LENGTHS),
            {
                "default": "video",
                "tooltip": "video: as long as the video (the audio is cut or padded with silence); audio: as long "
                "as the audio (the video plays back and forth).",
            },
        ),
        "reference_frame": (
            "INT",
            {
                "default": -1,
                "min": -1,
                "max": 10_000_000,
                "tooltip": "Frame whose face gives the appearance; -1 picks the most frontal frame with open eyes.",
            },
        ),
        "smooth_seconds": (
            "FLOAT",
            {
                "default": core_dub.DEFAULT_SMOOTH_SECONDS,
                "min": 0.0,
                "max": 2.0,
                "step": 0.01,
                "tooltip": "Temporal smoothing of the face alignment (no crop jitter); 0 = none.",
            },
        ),
        "batch_size": ("INT", {"default": 8, "min": 1, "max": 256, "tooltip": "Frames generated at a time."}),
        "watermark": (
            "BOOLEAN",
            {
                "default": True,
                "tooltip": "Invisible PD-FGC watermark in every generated face (docs/PROVENANCE.md). Turning it "
                "off is logged.",
            },
        ),
    }


def _settings(
    what, face, mask, feather, color_match, length, reference_frame, smooth_seconds, batch_size, watermark=True
):
    try:
        return core_dub.DubSettings(
            face=face,
            mask=mask,
            feather=float(feather),
            color_match=bool(color_match),
            length=length,
            reference_frame=None if int(reference_frame) < 0 else int(reference_frame),
            smooth_seconds=float(smooth_seconds),
            batch_size=int(batch_size),
            watermark=bool(watermark),
        )
    except InputError as e:
        raise InputError(f"{what}: {e}") from None


def _audio(audio, what: str) -> tuple[np.ndarray, int]:
    """ComfyUI AUDIO {"waveform": [B,C,T], "sample_rate"} -> (float32 [C,T], sample rate) of item 0."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise InputError(f"{what}: expected a ComfyUI AUDIO (from Load Audio), got {type(audio).__name__}.")
    wave = audio["waveform"]
    wave = wave.detach().cpu().float().numpy() if torch.is_tensor(wave) else np.asarray(wave, np.float32)
    if wave.ndim != 3 or wave.shape[0] < 1:
        raise InputError(f"{what}: waveform must be [batch, channels, samples], got {wave.shape}.")
    return wave[0], int(audio["sample_rate"])


class _Reporter:
    """Core progress (stage, done, total) -> one ComfyUI bar over the three passes, and Cancel."""

    def __init__(self):
        self.bar = Progress(300)
        self.at = 0

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        check_interrupt()
        if total:
            pos = 100 * STAGES.get(stage, 0) + int(100 * min(done, total) / total)
            if pos > self.at:
                self.bar.update(pos - self.at)
                self.at = pos


def _synced_audio(wave: np.ndarray, sr: int, num_frames: int, fps) -> dict:
    """The new audio as ComfyUI AUDIO, lined up with the lips (the lead cut off) and cut or padded
    with silence to the video's length, for Create Video."""
    lead = int(round(core_audio.AUDIO_LEAD_SECONDS * sr))
    n = int(round(num_frames / float(fps) * sr))
    out = np.zeros((wave.shape[0], n), np.float32)
    body = wave[:, lead : lead + n]
    out[:, : body.shape[1]] = body
    return {"waveform": torch.from_numpy(out)[None], "sample_rate": sr}


class PDFGC_DubVideo:
    DESCRIPTION = (
        "Lip sync / dubbing: new speech for a video of a talking person. Pose, eyes and expression come "
        "from the video itself, only the lips follow the audio; the face is pasted back into the frames "
        "inside the mask. For short clips (the frames are held in memory); for long videos use PD-FGC Dub "
        "Video File."
    )
    CATEGORY = f"{CATEGORY}/dub"
    FUNCTION = "dub"
    RETURN_TYPES = ("IMAGE", "AUDIO", "INT", "FLOAT")
    RETURN_NAMES = ("images", "audio", "frame_count", "fps")
    OUTPUT_TOOLTIPS = (
        "The dubbed frames, the video's size, [frames, H, W, 3] in 0..1.",
        "The new audio lined up with the lips and as long as the frames, for Create Video.",
        "Number of frames.",
        "The frame rate (the video's).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "From PD-FGC Load Model."}),
                "images": ("IMAGE", {"tooltip": "The video's frames (e.g. from Get Video Components)."}),
                "audio": ("AUDIO", {"tooltip": "The new speech."}),
                "fps": (
                    "FLOAT",
                    {
                        "default": 25.0,
                        "min": 1.0,
                        "max": 100.0,
                        "step": 0.001,
                        "tooltip": "The video's frame rate (Get Video Components gives it).",
                    },
                ),
                **_options(),
            }
        }

    def dub(self, model, images, audio, fps, **options):
        what = "PD-FGC Dub Video"
        image_count(images, f"{what}: images")
        settings = _settings(what, **options)
        wave, sr = _audio(audio, f"{what}: audio")
        frames = core_images.comfy_to_u8(images)
        engine = model.engine()
        report = _Reporter()
        try:
            source = core_dub.FrameSource(frames, fps=float(fps), name=f"{what}: images")
            plan = core_dub.plan_dub(engine, source, (wave, sr), settings, report)
            out = torch.empty((plan.num_frames, *frames.shape[1:]), dtype=torch.float32, device=intermediate_device())
            done = 0
            for chunk in core_dub.dub_frames(engine, source, plan, report, check_interrupt):
                out[done : done + len(chunk)] = core_images.u8_to_comfy(chunk).to(out.device)
                done += len(chunk)
        except InputError as e:
            raise InputError(e if str(e).startswith(what) else f"{what}: {e}") from None
        return (out, _synced_audio(wave, sr, plan.num_frames, plan.fps), plan.num_frames, float(plan.fps))


def _folder_paths():
    import folder_paths  # ComfyUI's

    return folder_paths


def list_input_videos() -> list[str]:
    """Video files directly in ComfyUI's input folder (regular files only, sorted)."""
    try:
        root = _folder_paths().get_input_directory()
        names = os.listdir(root)
    except (ImportError, OSError):
        return []
    out = []
    for n in names:
        p = os.path.join(root, n)
        if os.path.splitext(n)[1].lower() in VIDEO_EXTENSIONS and os.path.isfile(p) and not os.path.islink(p):
            out.append(n)
    return sorted(out)


class PDFGC_DubVideoFile:
    DESCRIPTION = (
        "Lip sync / dubbing of a video file of any length: streams the video from ComfyUI's input folder "
        "into an mp4 in the output folder (source size and frame rate, the new audio muxed, memory bounded). "
        "Pose, eyes and expression come from the video, the lips from the audio."
    )
    CATEGORY = f"{CATEGORY}/dub"
    FUNCTION = "dub"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "INT", "FLOAT")
    RETURN_NAMES = ("file", "frame_count", "fps")
    OUTPUT_TOOLTIPS = ("Path of the written mp4.", "Number of frames written.", "Its frame rate.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "From PD-FGC Load Model."}),
                "video": (
                    list_input_videos() or ["(no video in input/)"],
                    {"video_upload": True, "tooltip": "A video file in ComfyUI's input folder."},
                ),
                "audio": ("AUDIO", {"tooltip": "The new speech (e.g. from Load Audio)."}),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "pdfgc/dub",
                        "tooltip": "Output file prefix; may include subfolders of the output folder.",
                    },
                ),
                **_options(),
            }
        }

    @classmethod
    def IS_CHANGED(cls, video, **_):
        try:
            return os.path.getmtime(_folder_paths().get_annotated_filepath(video))
        except Exception:
            return float("nan")

    def dub(self, model, video, audio, filename_prefix, **options):
        what = "PD-FGC Dub Video File"
        fp = _folder_paths()
        try:
            path = fp.get_annotated_filepath(video)
        except Exception:
            path = None
        if not path or not os.path.isfile(path):
            raise InputError(f"{what}: video {video!r} is not a file in ComfyUI's input folder; upload one.")
        settings = _settings(what, **options)
        wave, sr = _audio(audio, f"{what}: audio")
        out_root = os.path.abspath(fp.get_output_directory())
        prefix = str(filename_prefix).strip().replace("\\", "/") or "pdfgc/dub"
        folder = os.path.abspath(os.path.join(out_root, os.path.dirname(prefix)))
        stem = os.path.basename(prefix)
        if os.path.commonpath([out_root, folder]) != out_root or stem in ("", ".", ".."):
            raise InputError(f"{what}: filename_prefix {filename_prefix!r} must name a file inside the output folder.")
        os.makedirs(folder, exist_ok=True)
        k = 1
        while os.path.exists(os.path.join(folder, f"{stem}_{k:05d}.mp4")):
            k += 1
        out = os.path.join(folder, f"{stem}_{k:05d}.mp4")
        engine = model.engine()
        report = _Reporter()
        try:
            source = core_dub.FrameSource(path, name=f"{what}: {video}")
            plan = core_dub.plan_dub(engine, source, (wave, sr), settings, report)
            core_dub.write_dub(engine, source, plan, (wave, sr), out, progress=report, check_interrupt=check_interrupt)
        except InputError as e:
            raise InputError(e if str(e).startswith(what) else f"{what}: {e}") from None
        subfolder = os.path.relpath(folder, out_root).replace(os.sep, "/")
        saved = {
            "filename": os.path.basename(out),
            "subfolder": "" if subfolder == "." else subfolder,
            "type": "output",
        }
        return {"ui": {"images": [saved], "animated": (True,)}, "result": (out, plan.num_frames, float(plan.fps))}


NODE_CLASS_MAPPINGS = {"PDFGC_DubVideo": PDFGC_DubVideo, "PDFGC_DubVideoFile": PDFGC_DubVideoFile}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PDFGC_DubVideo": "PD-FGC Dub Video (lip sync, dubbing)",
    "PDFGC_DubVideoFile": "PD-FGC Dub Video File (lip sync, any length)",
}
