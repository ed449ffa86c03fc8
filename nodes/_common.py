"""What the PD-FGC node modules share: the custom socket types, the model handle behind
PDFGC_MODEL, and the bridges to ComfyUI (progress bar, Cancel, devices).

ComfyUI's modules are imported inside functions; without ComfyUI (unit tests, scripts) the
bridges fall back to no progress bar, no Cancel and the CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

try:
    from ..pdfgc_core import images as core_images
    from ..pdfgc_core.checkpoints import PDFGCModels
    from ..pdfgc_core.engine import Engine
    from ..pdfgc_core.errors import InputError
    from ..pdfgc_core.factors import DEFAULT_FPS
except ImportError:  # ``nodes`` imported as a top-level package, not inside the pack
    from pdfgc_core import images as core_images
    from pdfgc_core.checkpoints import PDFGCModels
    from pdfgc_core.engine import Engine
    from pdfgc_core.errors import InputError
    from pdfgc_core.factors import DEFAULT_FPS

log = logging.getLogger("pdfgc")

# Socket types between our nodes (names are part of saved workflows: never rename them).
MODEL = "PDFGC_MODEL"  # ModelHandle
APPEARANCE = "PDFGC_APPEARANCE"  # pdfgc_core.engine.Appearance (id_vector [1,2048], id_map [1,512,7,7])
FACTOR = "PDFGC_FACTOR"  # pdfgc_core.factors.Factor (kind, values [T,D] float32 CPU, fps), any kind
# Kind-specific socket types: encoders output them and Combine Motion's inputs take only their own
# kind (or a generic factor, checked when the node runs), so the UI refuses an eye factor in the
# mouth input. The generic factor operations take every kind and output FACTOR.
KIND_TYPES = {"mouth": "PDFGC_MOUTH", "expression": "PDFGC_EXPRESSION", "eye": "PDFGC_EYE", "pose": "PDFGC_POSE"}
ANY_FACTOR = ",".join([FACTOR, *KIND_TYPES.values()])


def kind_input(kind: str) -> str:
    """The socket type of an input that takes factors of one kind: that kind's type or FACTOR."""
    return f"{KIND_TYPES[kind]},{FACTOR}"


MOTION = "PDFGC_MOTION"  # torch float32 CPU [T,542] = [mouth 500 | expression 30 | eye 6 | pose 6]

CATEGORY = "PD-FGC"
FRAME_CHUNK = 32  # IMAGE frames converted to network tensors at a time (bounds the extra memory)
MAX_FRAMES = 1_000_000
FPS_INPUT = (
    "FLOAT",
    {
        "default": DEFAULT_FPS,
        "min": 1.0,
        "max": 240.0,
        "step": 0.001,
        "tooltip": f"Frame rate of these frames. PD-FGC's audio windows and the official pipeline use {DEFAULT_FPS:g}.",
    },
)


def _comfy():
    """(comfy.model_management, comfy.utils), or (None, None) outside ComfyUI."""
    try:
        import comfy.model_management as mm
        import comfy.utils as cu
    except ImportError:
        return None, None
    return mm, cu


def check_interrupt() -> None:
    """Raises ComfyUI's interrupt exception when the user pressed Cancel (no-op outside ComfyUI)."""
    mm, _ = _comfy()
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


class Progress:
    """``update(n)`` advances ComfyUI's progress bar of the running node by n of ``total`` steps."""

    def __init__(self, total: int):
        _, cu = _comfy()
        self.bar = cu.ProgressBar(max(1, int(total))) if cu is not None else None
        self.done = 0

    def update(self, n: int) -> None:
        self.done += int(n)
        if self.bar is not None:
            self.bar.update(int(n))


def intermediate_device() -> torch.device:
    """Where node outputs live between nodes: ComfyUI's intermediate device (the CPU by default)."""
    mm, _ = _comfy()
    return mm.intermediate_device() if mm is not None else torch.device("cpu")


@dataclass(eq=False)
class ModelHandle:
    """What flows through a PDFGC_MODEL socket.

    ``models``: the four networks (float32). ``patcher``: a comfy ModelPatcher around them
    (None outside ComfyUI), so ComfyUI's memory manager moves them to the compute device and
    back to the offload device when another model needs the room. ``precision`` and ``impl``
    configure the :class:`Engine` made for each computation.
    """

    models: PDFGCModels
    name: str
    precision: str = "auto"
    impl: str = "fast"
    patcher: object = None
    info: list[str] = field(default_factory=list)

    @property
    def synthetic(self) -> bool:
        return bool(self.models.synthetic)

    def engine(self) -> Engine:
        """An Engine on the compute device, after asking ComfyUI to load the networks there."""
        device = None
        if self.patcher is not None:
            mm, _ = _comfy()
            mm.load_models_gpu([self.patcher], force_full_load=True)
            device = self.patcher.load_device
        return Engine(self.models, device=device, precision=self.precision, impl=self.impl)

    def __repr__(self) -> str:
        return f"ModelHandle({self.name!r}, precision={self.precision}, impl={self.impl}, synthetic={self.synthetic})"


def make_patcher(models: PDFGCModels):
    """A comfy ModelPatcher holding the four networks (an nn.ModuleDict), parked on the offload
    device; None outside ComfyUI."""
    mm, _ = _comfy()
    if mm is None:
        return None
    import comfy.model_patcher

    offload = mm.unet_offload_device()
    models.to(offload)
    return comfy.model_patcher.ModelPatcher(
        torch.nn.ModuleDict(models.networks()), load_device=mm.get_torch_device(), offload_device=offload
    )


def image_count(images, what: str) -> int:
    """Frames in a ComfyUI IMAGE [B,H,W,C]; InputError naming ``what`` if it is not one or is empty."""
    if not torch.is_tensor(images) or images.dim() != 4:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise InputError(f"{what}: expected a ComfyUI IMAGE batch [frames, height, width, channels], got {shape}.")
    if images.shape[0] == 0:
        raise InputError(
            f"{what}: the image batch is empty (0 frames). Connect at least one image; a video "
            "loader may have returned no frames."
        )
    return int(images.shape[0])


def network_batches(
    images: torch.Tensor, crop: str, what: str, start: int = 0, progress: Progress | None = None
) -> Iterator[torch.Tensor]:
    """ComfyUI IMAGE [B,H,W,C] 0..1 from frame ``start`` on -> network tensors [b,3,224,224] -1..1,
    FRAME_CHUNK frames at a time (uint8 rounding, then the official crop or a plain resize).
    Checks for Cancel between chunks."""
    n = image_count(images, what)
    for s in range(start, n, FRAME_CHUNK):
        check_interrupt()
        try:
            u8 = core_images.comfy_to_u8(images[s : s + FRAME_CHUNK])
            yield core_images.prepare_batch(u8, crop=crop)
        except InputError as e:
            raise InputError(f"{what}: {e}") from None


def progress_cb(progress: Progress) -> Callable[[int], None]:
    def cb(n: int) -> None:
        progress.update(n)
        check_interrupt()

    return cb


def node_notes(text: str | None = None, warnings: list[str] | tuple[str, ...] = ()) -> dict:
    """The ``ui`` part of a node's return value that web/pdfgc_notes.js shows on the node: ``text``
    in a read-only box, ``warnings`` above it with the node turned red (also logged here)."""
    for w in warnings:
        log.warning(w)
    ui = {}
    if text:
        ui["text"] = [text]
    if warnings:
        ui["pdfgc_warning"] = list(warnings)
    return ui
