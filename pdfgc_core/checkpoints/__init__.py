"""Checkpoint loading, validation and conversion.

Accepted sources (:func:`load_models`):
- a folder holding the four official files ``appearance_model.pth``, ``motion_model.pth``,
  ``audio_model.pth``, ``generator_model.pth`` (directly or in a ``checkpoints/`` subfolder);
- the authors' ``checkpoints.tar`` (read in memory, nothing is extracted to disk);
- our single ``.safetensors`` file written by :func:`convert` (keys ``<network>.<official key>``).

Modules, one concern each: :mod:`.models` (what a loaded checkpoint is), :mod:`.safety` (the gate
for pickle-based ``.pth`` files), :mod:`.sources` (folder / tar / safetensors readers),
:mod:`.validate` (keys, shapes, dtypes, values; loading) and :mod:`.convert` (to ``.safetensors``).

Safety: ``.pth`` files are read with ``torch.load(weights_only=True)``; a file that needs anything
but tensors and plain containers is refused, never unpickled. Every key and shape that inference
uses is checked; the error names the file, the key and what to do.
"""

from .convert import convert, save_safetensors
from .models import (
    CHECKPOINT_URL,
    FORMAT_NAME,
    FORMAT_VERSION,
    INSTALL_HINT,
    NETWORKS,
    OFFICIAL_FILES,
    LoadReport,
    PDFGCModels,
)
from .sources import LOAD_ORDER, open_checkpoint, safetensors_metadata
from .validate import build_network, load_models, models_from_state_dicts

__all__ = [
    "CHECKPOINT_URL",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "INSTALL_HINT",
    "LOAD_ORDER",
    "NETWORKS",
    "OFFICIAL_FILES",
    "LoadReport",
    "PDFGCModels",
    "build_network",
    "convert",
    "load_models",
    "models_from_state_dicts",
    "open_checkpoint",
    "safetensors_metadata",
    "save_safetensors",
]
