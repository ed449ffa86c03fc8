"""PD-FGC Load Model: the four networks from ComfyUI/models/pdfgc/, managed by ComfyUI."""

from __future__ import annotations

import logging
import os

from ._common import CATEGORY, MODEL, ModelHandle, make_patcher, node_notes

try:
    from ..pdfgc_core import checkpoints as core
    from ..pdfgc_core.engine import GENERATOR_IMPLS as IMPLS
    from ..pdfgc_core.engine import PRECISIONS
    from ..pdfgc_core.errors import CheckpointError, InputError, MediaError
    from ..pdfgc_core.media import list_files
except ImportError:  # ``nodes`` imported as a top-level package, not inside the pack
    from pdfgc_core import checkpoints as core
    from pdfgc_core.engine import GENERATOR_IMPLS as IMPLS
    from pdfgc_core.engine import PRECISIONS
    from pdfgc_core.errors import CheckpointError, InputError, MediaError
    from pdfgc_core.media import list_files

log = logging.getLogger("pdfgc")

FOLDER = "pdfgc"
NO_CHECKPOINTS = "(no checkpoints in models/pdfgc)"
_FILE_EXTENSIONS = (".safetensors", ".tar")
_OFFICIAL = frozenset(core.OFFICIAL_FILES.values())


def _folder_paths():
    try:
        import folder_paths
    except ImportError:
        return None
    return folder_paths


def _roots() -> list[str]:
    fp = _folder_paths()
    if fp is None:
        return []
    try:
        return list(fp.get_folder_paths(FOLDER))
    except KeyError:  # the pack's __init__ did not register the folder
        return [os.path.join(fp.models_dir, FOLDER)]


def _found_names() -> list[str]:
    """Relative paths of the checkpoint files under every models/pdfgc folder (bounded listing:
    see ``pdfgc_core.media.list_files``; ComfyUI's own walker follows symlink loops forever)."""
    names = []
    for root in _roots():
        try:
            found = list_files(root, (*_FILE_EXTENSIONS, ".pth"), recursive=True)
        except MediaError:
            continue  # not created yet, or unreadable
        if found.stopped:
            log.warning("PD-FGC Load Model lists only part of %s: %s.", root, found.stopped)
        names += found.files
    return names


def list_checkpoints(names: list[str] | None = None) -> list[str]:
    """Loader choices from the relative file names found under models/pdfgc/ (``names``, default
    a bounded listing of those folders): every .safetensors / .tar file, and every folder holding the four
    official .pth files, shown with a trailing "/" ("./" for models/pdfgc itself). Separators are
    "/" on every OS, so saved workflows are portable."""
    if names is None:
        names = _found_names()
    files, pth_by_folder = set(), {}
    for name in names:
        parts = name.replace("\\", "/").split("/")
        base = parts[-1]
        if base.lower().endswith(_FILE_EXTENSIONS):
            files.add("/".join(parts))
        elif base in _OFFICIAL:
            pth_by_folder.setdefault("/".join(parts[:-1]), set()).add(base)
    folders = {(folder or ".") + "/" for folder, found in pth_by_folder.items() if found == _OFFICIAL}
    return sorted(files | folders)


def resolve_checkpoint(name: str) -> str:
    """The path of loader choice ``name`` in one of the models/pdfgc folders, or CheckpointError
    saying where checkpoints go."""
    roots = _roots()
    where = ", ".join(roots) or "ComfyUI/models/pdfgc"
    parts = [p for p in str(name).replace("\\", "/").split("/") if p not in ("", ".")]
    if name != NO_CHECKPOINTS and ".." not in parts and not os.path.isabs(str(name)):
        is_folder = str(name).endswith("/")
        for root in roots:
            path = os.path.join(root, *parts)
            if os.path.isdir(path) if is_folder else os.path.isfile(path):
                return path
    available = list_checkpoints()
    if not available:
        raise CheckpointError(
            f"PD-FGC Load Model: no checkpoints found in {where}. {core.INSTALL_HINT} "
            f"Then refresh the page (press R) and pick it in this node."
        )
    raise CheckpointError(
        f"PD-FGC Load Model: checkpoint {name!r} is not in {where} (found: "
        f"{', '.join(available[:10])}). Pick one of those, or put the missing checkpoint there "
        f"and refresh the page (press R)."
    )


class PDFGC_LoadModel:
    DESCRIPTION = (
        "Loads the four PD-FGC networks (appearance, motion, audio encoders and the generator) from "
        "ComfyUI/models/pdfgc/: the official checkpoints.tar, a folder holding appearance_model.pth, "
        "motion_model.pth, audio_model.pth and generator_model.pth, or a .safetensors file converted "
        "with `python -m pdfgc_core convert`. ComfyUI's model management moves the networks to the "
        "GPU when they are used and off it when another model needs the memory."
    )
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (MODEL, "STRING")
    RETURN_NAMES = ("model", "info")
    OUTPUT_TOOLTIPS = (
        "The loaded PD-FGC networks, for every PD-FGC encoder and the generator.",
        "What was loaded, and any warning (e.g. synthetic test weights).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "checkpoint": (
                    list_checkpoints() or [NO_CHECKPOINTS],
                    {
                        "tooltip": "A checkpoint in ComfyUI/models/pdfgc/: checkpoints.tar, a .safetensors file, or a "
                        "folder (shown as name/) with the four official .pth files. Refresh the page (R) "
                        "after adding one."
                    },
                ),
                "precision": (
                    list(PRECISIONS),
                    {
                        "default": "auto",
                        "tooltip": "Compute precision on a GPU: auto = bf16 where supported, else fp16; fp32 = exact "
                        "official numbers. Half precision falls back to fp32 for any batch that comes out "
                        "non-finite. On the CPU everything runs in fp32.",
                    },
                ),
                "generator_impl": (
                    list(IMPLS),
                    {
                        "default": "fast",
                        "tooltip": "fast: batched convolutions (same results to float rounding, faster). reference: "
                        "the official grouped-convolution math, for checking.",
                    },
                ),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint):
        # A missing checkpoint is reported when the node runs, with where to put it (an execution
        # error), rather than as "value not in list".
        return True

    def load(self, checkpoint, precision, generator_impl):
        if precision not in PRECISIONS:
            raise InputError(f"PD-FGC Load Model: precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
        if generator_impl not in IMPLS:
            raise InputError(f"PD-FGC Load Model: generator_impl {generator_impl!r} is not one of {', '.join(IMPLS)}.")
        path = resolve_checkpoint(checkpoint)
        models = core.load_models(path)
        info = [
            f"PD-FGC: loaded {checkpoint} ({models.report.kind}) from {path}; precision {precision}, "
            f"generator {generator_impl}."
        ]
        if models.synthetic:
            banner = (
                f"PD-FGC: {checkpoint} holds SYNTHETIC TEST WEIGHTS. Every frame will be noise, not a face. "
                f"{core.INSTALL_HINT}"
            )
            log.warning("!" * 100)
            info.insert(0, banner)
        info += [w for w in models.report.warnings if "SYNTHETIC" not in w]
        handle = ModelHandle(
            models=models,
            name=checkpoint,
            precision=precision,
            impl=generator_impl,
            patcher=make_patcher(models),
            info=info,
        )
        text = "\n".join(info)
        ui = node_notes(text, [banner] if models.synthetic else [])
        return {"ui": ui, "result": (handle, text)}


NODE_CLASS_MAPPINGS = {"PDFGC_LoadModel": PDFGC_LoadModel}
NODE_DISPLAY_NAME_MAPPINGS = {"PDFGC_LoadModel": "PD-FGC Load Model (talking head)"}
