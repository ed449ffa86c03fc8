"""pdfgc_core: PD-FGC talking-head synthesis as a plain PyTorch library (no ComfyUI import)."""

from .errors import CheckpointError, FaceNotFoundError, InputError, MediaError, PDFGCError

__version__ = "0.1.0"

__all__ = ["CheckpointError", "FaceNotFoundError", "InputError", "MediaError", "PDFGCError", "__version__"]
