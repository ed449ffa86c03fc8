"""ComfyUI-PD-FGC: the ComfyUI entry point.

ComfyUI imports this file as a package named after the pack's folder path
(custom_nodes/ComfyUI-PD-FGC, a name no ``import`` statement can spell), so:

- our ``nodes`` package is imported relatively: ComfyUI itself owns the top-level name ``nodes``;
- nodes/*.py reach ``pdfgc_core`` and each other relatively (see nodes/__init__.py), so the pack
  adds nothing to ``sys.path`` and cannot shadow or be shadowed by other packs' modules.

Outside ComfyUI (pytest, tools) there is no ``folder_paths`` and the model folder is not
registered; the node classes still import.
"""

import os

try:
    import folder_paths
except ImportError:  # not running inside ComfyUI
    folder_paths = None

# Checkpoints: official .pth files (or a folder holding the four of them), checkpoints.tar, our .safetensors.
PDFGC_MODEL_EXTENSIONS = {".pth", ".tar", ".safetensors"}


def _register_model_folder() -> None:
    """Make ComfyUI/models/pdfgc/ (plus any "pdfgc" entry of extra_model_paths.yaml) a model folder."""
    default = os.path.join(folder_paths.models_dir, "pdfgc")
    folder_paths.add_model_folder_path("pdfgc", default)
    paths, extensions = folder_paths.folder_names_and_paths["pdfgc"]
    folder_paths.folder_names_and_paths["pdfgc"] = (paths, set(extensions) | PDFGC_MODEL_EXTENSIONS)
    try:
        os.makedirs(default, exist_ok=True)  # shows users where checkpoints go
    except OSError:
        pass


def _install_samples() -> None:
    """The templates' sample inputs into ComfyUI/input/ (missing files only; see nodes/_samples.py)."""
    from .nodes._samples import DISABLE_ENV, install_sample_inputs

    if os.environ.get(DISABLE_ENV) == "1":
        return
    try:
        copied = install_sample_inputs(folder_paths.get_input_directory())
    except OSError as e:  # a read-only or full input folder must not stop ComfyUI
        print(f"[ComfyUI-PD-FGC] could not copy the sample inputs to the input folder: {e}")
        return
    if copied:
        print(f"[ComfyUI-PD-FGC] copied {len(copied)} sample input(s) for the templates into the input folder")


if folder_paths is not None:
    _register_model_folder()
    _install_samples()

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

WEB_DIRECTORY = "./web"  # web/pdfgc_notes.js: node info and warnings shown on the node

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
