"""ComfyUI nodes: align faces to the PD-FGC crop, paste generated faces back.

Thin adapters over :mod:`pdfgc_core.faces`; ComfyUI modules are imported inside functions,
so this file also imports without ComfyUI (tests call the node methods directly).
"""

from __future__ import annotations

import os

import torch

try:
    from ..pdfgc_core import faces as core
    from ..pdfgc_core.images import u8_to_comfy
except ImportError:  # loaded outside the pack package (tests, scripts)
    from pdfgc_core import faces as core
    from pdfgc_core.images import u8_to_comfy

CROP_INFO = "PDFGC_CROP_INFO"


def _fan_weight_dirs() -> list[str]:
    """ComfyUI folders searched for the face-alignment weights: models/pdfgc/ and models/face_alignment/."""
    try:
        import folder_paths
    except ImportError:
        return []
    dirs = []
    try:
        dirs += list(folder_paths.get_folder_paths("pdfgc"))
    except KeyError:  # "pdfgc" not registered
        pass
    dirs.append(os.path.join(folder_paths.models_dir, "face_alignment"))
    return dirs


def _torch_device() -> str | None:
    try:
        import comfy.model_management as mm
    except ImportError:
        return None
    return str(mm.get_torch_device())


def _progress(total: int):
    """A ``progress(done, total)`` callback driving ComfyUI's progress bar and honouring Cancel."""
    try:
        import comfy.model_management as mm
        import comfy.utils
    except ImportError:
        return None
    bar = comfy.utils.ProgressBar(total)

    def report(done: int, n: int) -> None:
        mm.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, n)

    return report


class PDFGC_AlignFaces:
    DESCRIPTION = (
        "Finds the face in every picture and crops it the way PD-FGC was trained (eyes and inner mouth "
        "at fixed places of a 224x224 crop). Feed the crops to the PD-FGC encoders and keep the crop "
        "info to paste the generated face back into the original pictures."
    )
    CATEGORY = "PD-FGC/faces"
    FUNCTION = "align"
    RETURN_TYPES = ("IMAGE", CROP_INFO)
    RETURN_NAMES = ("crops", "crop_info")
    OUTPUT_TOOLTIPS = (
        "Aligned 224x224 face crops, one per input picture.",
        "Where each crop came from, for PD-FGC Paste Back.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "A photo, or the frames of a video, with a visible face."}),
                "backend": (
                    list(core.BACKENDS),
                    {
                        "default": "dlib",
                        "tooltip": "Landmark detector. dlib: works offline, no download. face_alignment: FAN, needs "
                        "2DFAN4-11f355bf06.pth.tar and s3fd-619a316812.pth in models/pdfgc or "
                        "models/face_alignment (or torch's hub cache). pre-aligned: the pictures already "
                        "are PD-FGC crops; they are only resized to 224x224.",
                    },
                ),
                "mode": (
                    list(core.MODES),
                    {
                        "default": "auto",
                        "tooltip": "image: each picture aligned on its own. video: one alignment for the clip with "
                        "a smoothed per-frame mouth re-centring (no jitter), frames without a face "
                        "borrow their neighbours' alignment. auto: image for one picture, video for "
                        "several.",
                    },
                ),
                "face_index": (
                    "INT",
                    {
                        "default": -1,
                        "min": -1,
                        "max": 63,
                        "tooltip": "Which face when there are several: -1 the largest, 0 the leftmost, 1 the next "
                        "one to its right, ... In a video the face chosen on the first frame is followed.",
                    },
                ),
            },
            "optional": {
                "min_eye_distance": (
                    "FLOAT",
                    {
                        "default": core.MIN_EYE_DISTANCE,
                        "min": 0.0,
                        "max": 1000.0,
                        "step": 1.0,
                        "tooltip": "Faces whose eyes are fewer pixels apart are refused (the crop would be enlarged "
                        "too much and blurred; the template has 50). 0 accepts any size.",
                    },
                ),
                "border": (
                    list(core.BORDERS),
                    {
                        "default": "constant",
                        "tooltip": "How crops are filled beyond the picture's edge: constant (black, like the "
                        "training data), replicate (repeat edge pixels) or reflect.",
                    },
                ),
            },
        }

    def align(self, image, backend, mode, face_index, min_eye_distance=core.MIN_EYE_DISTANCE, border="constant"):
        detector = core.get_detector(backend, weights_dirs=_fan_weight_dirs(), device=_torch_device())
        crops, info = core.align_faces(
            image,
            detector,
            mode=mode,
            face_index=int(face_index),
            min_eye_distance=float(min_eye_distance),
            border=border,
            name="PD-FGC Align Faces: image",
            progress=_progress(len(image)),
        )
        return u8_to_comfy(crops), info


class PDFGC_PasteBack:
    DESCRIPTION = (
        "Puts generated 224x224 faces back into the original pictures they were cropped from, "
        "blended with a soft-edged face mask. One original picture with many generated frames gives "
        "a video of that picture."
    )
    CATEGORY = "PD-FGC/faces"
    FUNCTION = "paste"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = (
        "The original pictures with the generated face pasted in.",
        "Where the generated face was blended in (1 = generated, 0 = original).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "original": ("IMAGE", {"tooltip": "The pictures given to PD-FGC Align Faces."}),
                "generated": (
                    "IMAGE",
                    {"tooltip": "Generated faces (224x224, or any square size, e.g. after an upscaler)."},
                ),
                "crop_info": (CROP_INFO, {"tooltip": "The crop_info output of PD-FGC Align Faces."}),
                "feather": (
                    "FLOAT",
                    {
                        "default": core.DEFAULT_FEATHER,
                        "min": 0.0,
                        "max": 96.0,
                        "step": 1.0,
                        "tooltip": "Width of the mask's soft edge, in pixels of the 224 crop. 0: hard edge.",
                    },
                ),
            },
            "optional": {
                "view": (
                    list(core.VIEWS),
                    {
                        "default": "generator",
                        "tooltip": "generator: the faces come from the PD-FGC generator (which sees rows 0-191, "
                        "columns 16-207 of the crop, enlarged). crop: the faces are aligned crops, e.g. "
                        "the crops output of Align Faces after other editing.",
                    },
                ),
            },
        }

    def paste(self, original, generated, crop_info, feather, view="generator"):
        out, mask = core.paste_back(
            original, generated, crop_info, feather=float(feather), view=view, name="PD-FGC Paste Back: original"
        )
        return torch.from_numpy(out), torch.from_numpy(mask)


NODE_CLASS_MAPPINGS = {
    "PDFGC_AlignFaces": PDFGC_AlignFaces,
    "PDFGC_PasteBack": PDFGC_PasteBack,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PDFGC_AlignFaces": "PD-FGC Align Faces",
    "PDFGC_PasteBack": "PD-FGC Paste Back",
}
