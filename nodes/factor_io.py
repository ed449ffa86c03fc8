"""PD-FGC Save Factor / Load Factor: a factor sequence as a small .safetensors file, to reuse or
share a head motion, an expression or a lip track."""

from __future__ import annotations

import logging
import os
import re

from ._common import ANY_FACTOR, CATEGORY, FACTOR

try:
    from ..pdfgc_core import factors as core
    from ..pdfgc_core.checkpoints import safetensors_metadata
    from ..pdfgc_core.errors import InputError, MediaError
    from ..pdfgc_core.media import list_files
except ImportError:  # ``nodes`` imported as a top-level package, not inside the pack
    from pdfgc_core import factors as core
    from pdfgc_core.checkpoints import safetensors_metadata
    from pdfgc_core.errors import InputError, MediaError
    from pdfgc_core.media import list_files

log = logging.getLogger("pdfgc")
EXT = ".safetensors"
OUTPUT_TAG = " [output]"
NO_FILES = "(no factor files in input/ or output/)"
KINDS = ("any",) + core.MOTION_ORDER


def _folder_paths():
    import folder_paths  # ComfyUI's; these nodes need it for their folders

    return folder_paths


FACTOR_HEADER_MAX = 1 << 20
"""Header bytes read to recognise a factor file while listing (a factor file's header is under 1 KB)."""


def _is_factor_file(path) -> bool:
    try:
        return safetensors_metadata(path, max_header=FACTOR_HEADER_MAX).get("format") == core.FILE_FORMAT
    except (OSError, ValueError):
        return False


def _factor_files(root: str) -> list[str]:
    """Relative "/" paths of the factor files under ``root`` (recursive, bounded: see
    ``pdfgc_core.media.list_files``; a partial listing is logged)."""
    try:
        found = list_files(root, (EXT,), recursive=True, accept=_is_factor_file)
    except MediaError:
        return []  # no such folder (yet), or unreadable
    if found.stopped:
        log.warning("PD-FGC Load Factor lists only part of %s: %s.", root, found.stopped)
    return found.files


def list_factor_files() -> list[str]:
    """Factor files in ComfyUI's input folder, then those in its output folder (marked " [output]",
    ComfyUI's annotation for files there)."""
    try:
        fp = _folder_paths()
    except ImportError:
        return []
    return _factor_files(fp.get_input_directory()) + [
        name + OUTPUT_TAG for name in _factor_files(fp.get_output_directory())
    ]


def resolve_factor_file(name: str) -> str:
    """Absolute path for a listed name ("x.safetensors", "x.safetensors [output]"), a name with
    " [input]" / " [temp]", or an absolute path."""
    name = str(name).strip()
    if os.path.isabs(name):
        return name
    fp = _folder_paths()
    return fp.get_annotated_filepath(name)


def _next_path(folder: str, stem: str) -> tuple[str, int]:
    pattern = re.compile(re.escape(stem) + r"_(\d+)_" + re.escape(EXT) + "$")
    try:
        taken = [int(m.group(1)) for f in os.listdir(folder) if (m := pattern.match(f))]
    except FileNotFoundError:
        taken = []
    counter = max(taken, default=0) + 1
    return os.path.join(folder, f"{stem}_{counter:05d}_{EXT}"), counter


class PDFGC_SaveFactor:
    DESCRIPTION = (
        "Saves a factor (e.g. a head motion or an expression) as a .safetensors file in ComfyUI's output "
        "folder, named <prefix>_00001_.safetensors; PD-FGC Load Factor lists it."
    )
    CATEGORY = f"{CATEGORY}/factors"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("file",)
    OUTPUT_TOOLTIPS = ('The saved file as PD-FGC Load Factor names it ("<subfolder>/<name> [output]").',)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "factor": (ANY_FACTOR, {"tooltip": "The factor to save."}),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "pdfgc/factor",
                        "tooltip": "File name prefix; may include subfolders of the output folder.",
                    },
                ),
            }
        }

    def save(self, factor, filename_prefix):
        if not isinstance(factor, core.Factor):
            raise InputError(f"PD-FGC Save Factor: factor must be a PD-FGC factor, got {type(factor).__name__}.")
        out_root = os.path.abspath(_folder_paths().get_output_directory())
        prefix = str(filename_prefix).strip().replace("\\", "/") or "pdfgc/factor"
        folder = os.path.abspath(os.path.join(out_root, os.path.dirname(prefix)))
        stem = os.path.basename(prefix)
        if os.path.commonpath([out_root, folder]) != out_root or not stem or stem in (".", ".."):
            raise InputError(
                f"PD-FGC Save Factor: filename_prefix {filename_prefix!r} must name a file inside the "
                "output folder (e.g. pdfgc/expression)."
            )
        path, _ = _next_path(folder, stem)
        core.save_factor(factor, path)
        subfolder = os.path.relpath(folder, out_root).replace(os.sep, "/")
        subfolder = "" if subfolder == "." else subfolder
        filename = os.path.basename(path)
        listed = (f"{subfolder}/{filename}" if subfolder else filename) + OUTPUT_TAG
        return {
            "ui": {
                "factors": [
                    {
                        "filename": filename,
                        "subfolder": subfolder,
                        "type": "output",
                        "kind": factor.kind,
                        "frames": len(factor),
                    }
                ]
            },
            "result": (listed,),
        }


class PDFGC_LoadFactor:
    DESCRIPTION = (
        "Loads a factor saved by PD-FGC Save Factor: from ComfyUI's input folder, its output folder "
        "(marked [output]), or any path given in path."
    )
    CATEGORY = f"{CATEGORY}/factors"
    FUNCTION = "load"
    RETURN_TYPES = (FACTOR, "INT")
    RETURN_NAMES = ("factor", "frame_count")
    OUTPUT_TOOLTIPS = ("The loaded factor.", "Its number of frames.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "file": (
                    list_factor_files() or [NO_FILES],
                    {
                        "tooltip": "A factor file in ComfyUI's input folder or output folder ([output]). Refresh the "
                        "page (R) to see newly saved files."
                    },
                ),
                "kind": (
                    list(KINDS),
                    {
                        "default": "any",
                        "tooltip": "The factor kind expected; any other kind is an error. any: "
                        "accept what the file holds.",
                    },
                ),
            },
            "optional": {
                "path": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "If not empty, load this file instead: an absolute path, or a name "
                        "like file.safetensors [output].",
                    },
                ),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, file):
        # A file that is not listed (yet) is reported when the node runs, with the reason.
        return True

    @classmethod
    def IS_CHANGED(cls, file, kind, path=""):
        try:
            p = resolve_factor_file(path or file)
            return f"{p}:{os.path.getmtime(p)}"
        except Exception:
            return ""

    def load(self, file, kind, path=""):
        name = str(path).strip() or file
        if name == NO_FILES:
            raise MediaError(
                "PD-FGC Load Factor: there are no factor files in ComfyUI's input or output folder; "
                "save one with PD-FGC Save Factor (then refresh the page) or give a path."
            )
        if kind not in KINDS:
            raise InputError(f"PD-FGC Load Factor: kind {kind!r} is not one of {', '.join(KINDS)}.")
        try:
            f = core.load_factor(resolve_factor_file(name), None if kind == "any" else kind)
        except InputError as e:
            raise type(e)(f"PD-FGC Load Factor: {e}") from None
        return (f, len(f))


NODE_CLASS_MAPPINGS = {"PDFGC_SaveFactor": PDFGC_SaveFactor, "PDFGC_LoadFactor": PDFGC_LoadFactor}
NODE_DISPLAY_NAME_MAPPINGS = {"PDFGC_SaveFactor": "PD-FGC Save Factor", "PDFGC_LoadFactor": "PD-FGC Load Factor"}
