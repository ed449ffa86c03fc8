"""ComfyUI adapters: every nodes/<name>.py (no leading underscore) is imported and its
NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS are merged here.

A module that fails to import raises (ComfyUI then reports the pack as IMPORT FAILED and logs
the traceback) instead of silently losing its nodes; two modules defining the same node name
raise too. Helper modules without nodes are named with a leading underscore or simply define
no mappings.

Imports inside this package. ComfyUI loads the repository as a package named after its folder
path, and it owns the top-level module name ``nodes``, so:

- siblings relatively: ``from ._common import x``;
- the core relatively, with a fallback for when this folder is imported as the top-level
  package ``nodes`` (unit tests with the repository root on sys.path)::

      try:
          from ..pdfgc_core import engine
      except ImportError:  # ``nodes`` imported as a top-level package, not inside the pack
          from pdfgc_core import engine

  Never ``import pdfgc_core`` alone: inside ComfyUI it is not on sys.path, and if it were
  (another copy installed) there would be two copies of the core in one process.
- ComfyUI's modules (``folder_paths``, ``comfy.*``) inside functions, so every module also
  imports without ComfyUI.

Node names, input names and input order are a public interface: saved workflows store widget
values positionally, so renaming or reordering inputs breaks users' workflows.
"""

import importlib
import os


def _node_modules() -> list[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    return sorted(f[:-3] for f in os.listdir(here) if f.endswith(".py") and not f.startswith("_"))


def _merge() -> tuple[dict, dict]:
    classes, names = {}, {}
    for name in _node_modules():
        module = importlib.import_module(f".{name}", __name__)
        for node, cls in getattr(module, "NODE_CLASS_MAPPINGS", {}).items():
            if node in classes:
                raise ImportError(
                    f"ComfyUI-PD-FGC: node {node!r} is defined in nodes/{name}.py and "
                    f"again in {classes[node].__module__}"
                )
            classes[node] = cls
        names.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {}))
    return classes, names


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = _merge()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
