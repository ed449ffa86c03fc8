"""Start ComfyUI's main.py on a CPU-only machine.

Usage: python launch.py COMFY_DIR [main.py arguments...]   (the ComfyUI venv's python; see env.py)

Every torchvision wheel on PyPI is a CUDA build; its compiled ops do not load here and
`import torchvision` then fails with "operator torchvision::nms does not exist" (its meta
registrations need the op schemas). Declaring the two schemas right before torchvision is
first imported lets its pure-Python parts work (calling torchvision.ops.nms still raises).
ComfyUI imports torchvision through comfy/sd.py. Deferring this keeps torch unimported until
ComfyUI imports it itself, as in a normal start.
"""

import importlib.abc
import os
import runpy
import sys

_keep_alive = []


class _TorchvisionOpSchemas(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            import torch

            lib = torch.library.Library("torchvision", "DEF")
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _keep_alive.append(lib)  # the schemas live as long as this object
        return None  # the normal finders import torchvision itself


sys.meta_path.insert(0, _TorchvisionOpSchemas())


def main() -> None:
    if len(sys.argv) < 2 or not os.path.isfile(os.path.join(sys.argv[1], "main.py")):
        sys.exit("usage: launch.py COMFY_DIR [main.py arguments...]")
    comfy_dir = os.path.abspath(sys.argv[1])
    sys.argv = [os.path.join(comfy_dir, "main.py")] + sys.argv[2:]
    sys.path[0] = comfy_dir  # replaces this script's folder: ComfyUI's top-level modules win
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
