"""Nodes for testing through a real ComfyUI server (tests/comfy_harness copies this folder into the
server's custom_nodes/; never shipped with the pack). See tests/comfy_harness/server.py."""

import dataclasses
import os
import time
import uuid

import comfy.model_management
import comfy.utils
import folder_paths
import numpy as np
import torch


class AnyType(str):
    """A socket type that validation and the frontend accept for any connection."""

    def __ne__(self, other):
        return False


ANY = AnyType("*")


def plain(value):
    """Tensors, numbers, strings, lists and dicts of them (what torch.load(weights_only=True) reads)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if dataclasses.is_dataclass(value):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    elif hasattr(value, "__dict__"):
        fields = vars(value)
    else:
        return repr(value)
    return {"__type__": type(value).__name__, **{k: plain(v) for k, v in fields.items()}}


class PDFGCHarnessSleep:
    """Sleeps ``steps`` times, reporting progress and honouring interrupts."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "steps": ("INT", {"default": 3, "min": 1, "max": 100000}),
                "seconds_per_step": ("FLOAT", {"default": 0.01, "min": 0.0, "max": 10.0, "step": 0.01}),
            }
        }

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def run(self, steps, seconds_per_step):
        bar = comfy.utils.ProgressBar(steps)
        for _ in range(steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            time.sleep(seconds_per_step)
            bar.update(1)
        return {"ui": {"steps": [steps]}, "result": (steps,)}


class PDFGCHarnessFail:
    """Raises ValueError(message) when executed."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"message": ("STRING", {"default": "harness failure"})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def run(self, message):
        raise ValueError(message)


class PDFGCHarnessSaveTensor:
    """Saves any value exactly (tensors as they are, objects as dicts of their fields) to
    output/tensors/<name>_<id>.pt; runs every time."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (ANY,), "name": ("STRING", {"default": "value"})}}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def save(self, value, name):
        folder = os.path.join(folder_paths.get_output_directory(), "tensors")
        os.makedirs(folder, exist_ok=True)
        filename = f"{name}_{uuid.uuid4().hex[:8]}.pt"
        torch.save(plain(value), os.path.join(folder, filename))
        return {"ui": {"tensors": [{"filename": filename, "subfolder": "tensors", "type": "output"}]}}


class PDFGCHarnessLoadTensor:
    """Outputs the object stored by ComfyServer.put_tensor() in input/ (an IMAGE batch, an AUDIO dict ...)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"file": ("STRING", {"default": "value.pt"})}}

    RETURN_TYPES = (ANY,)
    FUNCTION = "load"
    CATEGORY = "testing"

    @classmethod
    def IS_CHANGED(cls, file):
        path = os.path.join(folder_paths.get_input_directory(), file)
        return os.path.getmtime(path) if os.path.exists(path) else ""

    def load(self, file):
        return (torch.load(os.path.join(folder_paths.get_input_directory(), file), weights_only=False),)


NODE_CLASS_MAPPINGS = {
    c.__name__: c for c in (PDFGCHarnessSleep, PDFGCHarnessFail, PDFGCHarnessSaveTensor, PDFGCHarnessLoadTensor)
}
