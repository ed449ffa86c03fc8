"""What nodes tell the user on the node itself: alignment warnings of the encoders."""

import numpy as np
import pytest
import torch

from nodes import _common, encode
from pdfgc_core import images
from pdfgc_core.faces.align import alignment_problems

SAMPLES = __import__("conftest").SAMPLES


def test_alignment_problems_on_aligned_unaligned_and_faceless_pictures():
    aligned = images.read_image(SAMPLES / "anne.png")
    photo = images.read_image(SAMPLES / "photo.jpg")
    assert alignment_problems(aligned) == []
    assert alignment_problems(images.read_image(SAMPLES / "drivers" / "pose" / "000003.jpg")) == []
    (msg,) = alignment_problems(photo, name="portrait")
    assert msg.startswith("portrait: the face is not aligned") and "px off" in msg
    (msg,) = alignment_problems(np.full((224, 224, 3), 128, np.uint8))
    assert "no face found" in msg


@pytest.fixture(scope="module")
def handle(synthetic_models):
    return _common.ModelHandle(synthetic_models, "synthetic", precision="fp32", impl="fast")


def test_encode_appearance_warns_on_the_node_and_still_encodes(handle):
    photo = images.u8_to_comfy(images.read_image(SAMPLES / "photo.jpg")[None])
    out = encode.PDFGC_EncodeAppearance().encode(handle, photo, "official")
    (warning,) = out["ui"]["pdfgc_warning"]
    assert "not aligned" in warning and "PD-FGC Align Faces" in warning
    (app,) = out["result"]
    assert torch.isfinite(app.id_vector).all()
    aligned = images.u8_to_comfy(images.read_image(SAMPLES / "anne.png")[None])
    assert encode.PDFGC_EncodeAppearance().encode(handle, aligned, "official")["ui"] == {}
