"""Faces: 68-point landmarks, alignment to the PD-FGC crop template, paste-back.

Typical use::

    crops, info = align_faces(frames_u8, "dlib", mode="video", name="driver video")
    # ... generate 224x224 frames from the crops ...
    full, mask = paste_back(frames_u8, generated, info)

dlib and face-alignment are imported only when a detector first runs.
"""

from .align import (
    BORDERS,
    CROP_SIZE,
    MIN_EYE_DISTANCE,
    MODES,
    TEMPLATE,
    CropInfo,
    align_faces,
    alignment_problems,
    apply_affine,
    compose_affine,
    image_transforms,
    invert_affine,
    select_face,
    similarity_transform,
    video_transforms,
    warp_crops,
)
from .convert import MIN_SIDE, as_rgb_f32, as_rgb_u8
from .headpose import HeadPose, estimate_head_pose, estimate_head_poses
from .landmarks import (
    BACKENDS,
    DETECTORS,
    FAN_FILES,
    DlibDetector,
    Face,
    FaceAlignmentDetector,
    LandmarkDetector,
    PreAligned,
    find_fan_weights,
    get_detector,
    template_points,
)
from .paste import DEFAULT_FEATHER, GENERATOR_WINDOW, VIEWS, face_mask, paste_back, view_to_crop

__all__ = [
    "alignment_problems",
    "HeadPose",
    "estimate_head_pose",
    "estimate_head_poses",
    "BACKENDS",
    "BORDERS",
    "CROP_SIZE",
    "DEFAULT_FEATHER",
    "DETECTORS",
    "FAN_FILES",
    "GENERATOR_WINDOW",
    "MIN_EYE_DISTANCE",
    "MIN_SIDE",
    "MODES",
    "TEMPLATE",
    "VIEWS",
    "CropInfo",
    "DlibDetector",
    "Face",
    "FaceAlignmentDetector",
    "LandmarkDetector",
    "PreAligned",
    "align_faces",
    "apply_affine",
    "as_rgb_f32",
    "as_rgb_u8",
    "compose_affine",
    "face_mask",
    "find_fan_weights",
    "get_detector",
    "image_transforms",
    "invert_affine",
    "paste_back",
    "select_face",
    "similarity_transform",
    "template_points",
    "video_transforms",
    "view_to_crop",
    "warp_crops",
]
