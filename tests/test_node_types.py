"""Kind-safe wiring: encoders output kind-specific socket types; Combine Motion's inputs take their
own kind (or a generic factor, checked when run); generic factor operations take every kind. The
rule is ComfyUI's: a link is valid when the output's and the input's comma-separated types share
one (comfy_execution.validation.validate_node_input; the frontend's isValidConnection alike)."""

import itertools

import pytest

import nodes
from nodes._common import ANY_FACTOR, FACTOR, KIND_TYPES

KINDS = tuple(KIND_TYPES)


def valid(output_type: str, input_type: str) -> bool:
    return bool(set(output_type.split(",")) & set(input_type.split(",")))


def output_type(node: str, name: str) -> str:
    cls = nodes.NODE_CLASS_MAPPINGS[node]
    return cls.RETURN_TYPES[cls.RETURN_NAMES.index(name)]


def input_type(node: str, name: str) -> str:
    spec = nodes.NODE_CLASS_MAPPINGS[node].INPUT_TYPES()
    return {**spec.get("required", {}), **spec.get("optional", {})}[name][0]


ENCODER_OUTPUTS = {
    ("PDFGC_EncodeLips", "mouth"): "mouth",
    ("PDFGC_EncodePose", "pose"): "pose",
    ("PDFGC_EncodeEyes", "eye"): "eye",
    ("PDFGC_EncodeExpression", "expression"): "expression",
    ("PDFGC_EncodeMotion", "pose"): "pose",
    ("PDFGC_EncodeMotion", "eye"): "eye",
    ("PDFGC_EncodeMotion", "expression"): "expression",
    ("PDFGC_IdleBlinks", "eye"): "eye",
    ("PDFGC_HeadSway", "pose"): "pose",
    ("PDFGC_PoseFromAngles", "pose"): "pose",
}


@pytest.mark.parametrize(
    "source, kind", ENCODER_OUTPUTS.items(), ids=lambda x: "-".join(x) if isinstance(x, tuple) else x
)
def test_an_encoder_output_fits_only_its_own_combine_input(source, kind):
    out = output_type(*source)
    for target in KINDS:
        assert valid(out, input_type("PDFGC_CombineMotion", target)) == (target == kind), (source, target)


def test_generic_operations_take_every_kind_and_their_output_fits_every_combine_input():
    ops = [n for n, c in nodes.NODE_CLASS_MAPPINGS.items() if "factor" in c.INPUT_TYPES().get("required", {})]
    assert {"PDFGC_ZeroFactor", "PDFGC_FactorStrength", "PDFGC_SmoothFactor", "PDFGC_SaveFactor"} <= set(ops)
    for op, (_, kind) in itertools.product(ops, ENCODER_OUTPUTS.items()):
        assert valid(KIND_TYPES[kind], input_type(op, "factor")), op
    for kind in KINDS:
        assert valid(output_type("PDFGC_FactorStrength", "factor"), input_type("PDFGC_CombineMotion", kind))
        assert valid(output_type("PDFGC_LoadFactor", "factor"), input_type("PDFGC_CombineMotion", kind))
    assert input_type("PDFGC_ZeroFactor", "factor") == ANY_FACTOR and FACTOR in ANY_FACTOR


def test_eye_operations_keep_the_eye_type():
    for name in ("blink", "gaze"):
        assert output_type("PDFGC_SplitEyes", name) == KIND_TYPES["eye"]
    assert output_type("PDFGC_MergeEyes", "factor") == KIND_TYPES["eye"]
    assert not valid(output_type("PDFGC_EncodeLips", "mouth"), input_type("PDFGC_SplitEyes", "eye"))
