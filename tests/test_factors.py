"""pdfgc_core.factors: parity of the assembled motion with the official fixtures, length
fitting against the official cycling, algebra properties, and factor files."""

import dataclasses
import math
import os
import pickle

import numpy as np
import pytest
import torch
from conftest import fixture_files, parity_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from pdfgc_core.errors import InputError, MediaError
from pdfgc_core.factors import (
    EYE_BLINK_DIMS,
    EYE_GAZE_DIMS,
    FACTOR_DIMS,
    MOTION_DIM,
    MOTION_ORDER,
    OFFICIAL_GAINS,
    Factor,
    PostProcess,
    Smoothing,
    add,
    assemble_motion,
    combine_motion,
    concat,
    fit_indices,
    fit_length,
    gaussian_kernel,
    hold,
    load_factor,
    merge_eye,
    mix,
    motion_slices,
    offset,
    ramp,
    retime,
    save_factor,
    scale,
    skip_first,
    smooth,
    split_eye,
    zero,
)

FIXTURES = fixture_files()
fixture_param = pytest.mark.parametrize("fixture", FIXTURES, ids=[p.stem for p in FIXTURES])

# Official command-line flags -> active controls. The fixtures record both the flags and a
# setting name; both are mapped, and must agree.
ALL_ON = dict(mouth=True, blink=True, gaze=True, emo=True, headpose=True)
SETTINGS = {
    "all": ALL_ON,
    "all_cycle": ALL_ON,
    "mouthonly": dict(mouth=True, blink=False, gaze=False, emo=False, headpose=False),
    "blinkoff_gazeon": dict(mouth=True, blink=False, gaze=True, emo=True, headpose=True),
}


def flags_to_controls(flags: str) -> dict:
    out = dict.fromkeys(ALL_ON, False)
    for tok in flags.split():
        if tok == "--all":
            out = dict(ALL_ON)
        elif tok.startswith("--") and tok[2:] in out:
            out[tok[2:]] = True
        else:
            pytest.fail(f"unknown official flag {tok!r} in fixture flags {flags!r}: extend flags_to_controls")
    return out


def controls_of(d) -> dict:
    setting = str(d["setting"])
    if setting not in SETTINGS:
        pytest.fail(f"unknown fixture setting {setting!r}: add it to SETTINGS in {__file__}")
    ctl = SETTINGS[setting]
    assert flags_to_controls(str(d["flags"])) == ctl, f"setting {setting!r} disagrees with flags {d['flags']!r}"
    return ctl


def rand_factor(kind, t, seed=0, fps=25.0):
    g = torch.Generator().manual_seed(seed)
    return Factor(kind, torch.randn(t, FACTOR_DIMS[kind], generator=g), fps)


def maxdiff(a, b):
    return (a - b).abs().max().item()


# --------------------------------------------------------------------------- parity


@fixture_param
def test_assemble_motion_matches_official(fixture):
    d = np.load(fixture, allow_pickle=False)
    ctl = controls_of(d)
    n = int(d["num_frames"])
    raw = {
        "mouth": d["mouth_embed_raw"],
        "expression": d["emo_embed_raw"],
        "eye": d["eye_embed_raw"],
        "pose": d["pose_embed_raw"],
    }
    on = {"mouth": ctl["mouth"], "expression": ctl["emo"], "eye": ctl["blink"] or ctl["gaze"], "pose": ctl["headpose"]}
    factors = {k: Factor(k, raw[k]) if on[k] else None for k in MOTION_ORDER}
    out = assemble_motion(n, **factors, blink=ctl["blink"], gaze=ctl["gaze"])
    ref = torch.from_numpy(d["gen_input_motion"])
    assert out.dtype == torch.float32 and out.shape == (n, MOTION_DIM)
    assert torch.equal(out, ref), f"max abs diff {maxdiff(out, ref):.3g}"

    # passing every factor and switching eye parts off with the masks gives the same
    everything = {k: Factor(k, raw[k]) for k in MOTION_ORDER}
    masked = assemble_motion(n, **everything, blink=ctl["blink"], gaze=ctl["gaze"])
    for k, sl in motion_slices().items():
        if on[k]:
            assert torch.equal(masked[:, sl], ref[:, sl]), k


@fixture_param
def test_mouth_gain_and_smoothing_match_official(fixture):
    d = np.load(fixture, allow_pickle=False)
    raw = torch.from_numpy(d["mouth_embed_raw"])
    post = PostProcess.official()
    assert torch.equal(raw * post.mouth_gain, torch.from_numpy(d["mouth_embed_x1p5"]))
    smoothed = post.apply(Factor("mouth", raw)).values
    ref = torch.from_numpy(d["mouth_embed_smoothed"])
    assert torch.equal(smoothed, ref), f"max abs diff {maxdiff(smoothed, ref):.3g}"


def _fed_index_sets():
    """(source file, key prefix, kind) for every stored official cycling."""
    out = []
    for path in [*FIXTURES, parity_dir() / "inputs.npz"]:
        if not path.is_file():
            continue
        keys = set(np.load(path, allow_pickle=False).files)
        for prefix in ("", "inputs__"):
            for kind in ("pose", "exp", "eye"):
                if {f"{prefix}drive_{kind}_fed_file_index", f"{prefix}drive_{kind}_files"} <= keys:
                    out.append(pytest.param(path, prefix, kind, id=f"{path.stem}-{kind}"))
    return out


@pytest.mark.parametrize("path,prefix,kind", _fed_index_sets())
def test_loop_fit_reproduces_official_cycling(path, prefix, kind):
    d = np.load(path, allow_pickle=False)
    fed = torch.from_numpy(d[f"{prefix}drive_{kind}_fed_file_index"])
    num_files = len(d[f"{prefix}drive_{kind}_files"])
    # a factor whose first value is the file index of each driving frame
    values = torch.zeros(num_files, 6)
    values[:, 0] = torch.arange(num_files, dtype=torch.float32)
    fitted = fit_length(skip_first(Factor("pose", values), 2), len(fed), "loop")
    assert torch.equal(fitted.values[:, 0].long(), fed)
    assert torch.equal(fit_indices(num_files - 2, len(fed), "loop") + 2, fed)


CYCLE_FIXTURES = [p for p in FIXTURES if "inputs__drive_pose_files" in np.load(p, allow_pickle=False).files]


@pytest.mark.parametrize("fixture", CYCLE_FIXTURES, ids=[p.stem for p in CYCLE_FIXTURES])
def test_loop_fit_of_uncycled_drivers_matches_official(fixture):
    """The cycle fixture's raw embeddings are per output frame; the first L of them, looped
    by fit_length inside assemble_motion, give the official motion up to the encoder's
    batch-composition noise."""
    d = np.load(fixture, allow_pickle=False)
    ctl = controls_of(d)
    assert all(ctl.values())
    n = int(d["num_frames"])
    length = {
        k: len(d[f"inputs__drive_{src}_files"]) - 2
        for k, src in (("pose", "pose"), ("expression", "exp"), ("eye", "eye"))
    }
    raw = {"pose": d["pose_embed_raw"], "expression": d["emo_embed_raw"], "eye": d["eye_embed_raw"]}
    assert min(length.values()) < n, "this fixture is meant to exercise cycling"
    drivers = {k: Factor(k, raw[k][: min(length[k], n)]) for k in raw}
    out = assemble_motion(n, Factor("mouth", d["mouth_embed_raw"]), **drivers)
    ref = torch.from_numpy(d["gen_input_motion"])
    assert maxdiff(out, ref) < 1e-5


# --------------------------------------------------------------------------- the type


def test_factor_validation_and_conversion():
    f = Factor("eye", np.ones((4, 6), np.float64), fps=30)
    assert f.values.dtype == torch.float32 and f.values.device.type == "cpu"
    assert len(f) == f.num_frames == 4 and f.dim == 6 and f.fps == 30.0
    assert "eye" in repr(f) and "frames=4" in repr(f)
    src = torch.zeros(3, 30)
    g = Factor("expression", src)
    src += 1
    assert g.values.abs().sum() == 0, "a factor must not alias its input"
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.kind = "pose"
    z = rand_factor("pose", 5).zeros_like()
    assert z.kind == "pose" and len(z) == 5 and z.values.abs().sum() == 0

    bad = [
        (lambda: Factor("lips", torch.zeros(2, 500)), "lips"),
        (lambda: Factor("mouth", torch.zeros(2, 499)), r"\[frames >= 1, 500\]"),
        (lambda: Factor("pose", torch.zeros(6)), r"values\[None\]"),
        (lambda: Factor("pose", torch.zeros(0, 6)), "frames >= 1"),
        (lambda: Factor("pose", torch.zeros(2, 6, dtype=torch.bool)), "bool"),
        (lambda: Factor("pose", [[0.0] * 6]), "torch.Tensor or numpy"),
        (lambda: Factor("pose", torch.zeros(2, 6), fps=0), "fps"),
        (lambda: Factor("pose", torch.zeros(2, 6), fps=float("nan")), "fps"),
    ]
    for make, match in bad:
        with pytest.raises(InputError, match=match):
            make()


def test_non_finite_values_name_the_factor():
    v = torch.zeros(5, 6)
    v[3, 2] = float("nan")
    with pytest.raises(InputError, match=r"the eye factor contains 1 NaN .*frame 3"):
        Factor("eye", v)
    v[3, 2] = float("inf")
    with pytest.raises(InputError, match=r"the eye factor contains 0 NaN and 1 infinite"):
        Factor("eye", v)


# --------------------------------------------------------------------------- smoothing


def test_official_gaussian_kernel():
    k = gaussian_kernel(3, 1.0)
    assert k.dtype == torch.float32
    assert k.tolist() == pytest.approx([0.27406862, 0.45186275, 0.27406862], abs=5e-9)
    assert torch.equal(k, torch.tensor([0.2740686237812042, 0.45186275243759155, 0.2740686237812042]))


@pytest.mark.parametrize("t", [1, 2, 3, 4, 50])
def test_official_box_equals_per_frame_mean(t):
    x = rand_factor("pose", t, seed=t).values
    ref = torch.stack([x[max(0, i - 1) : i + 2].mean(0) for i in range(t)])
    assert torch.equal(Smoothing.box(3).apply(x), ref)
    ref5 = torch.stack([x[max(0, i - 2) : i + 3].mean(0) for i in range(t)])
    assert torch.allclose(Smoothing.box(5).apply(x), ref5, atol=1e-6)


@pytest.mark.parametrize("t", [1, 2, 7])
def test_gaussian_edges(t):
    x = torch.full((t, 3), 2.0)
    k = gaussian_kernel(3, 1.0)
    official = Smoothing.gaussian().apply(x)
    if t > 1:  # zero padding attenuates the edges
        assert official[0, 0].item() == pytest.approx(2.0 * float(k[1] + k[2]))
        assert official[-1, 0].item() == pytest.approx(2.0 * float(k[0] + k[1]))
    if t > 2:
        assert official[1:-1].sub(2.0).abs().max() < 1e-6
    for s in (
        Smoothing.gaussian(edge="replicate"),
        Smoothing.box(edge="replicate"),
        Smoothing.box(),
        Smoothing.gaussian(5, 2.0, edge="replicate"),
    ):
        assert torch.allclose(s.apply(x), x, atol=1e-6), s


def test_gaussian_matches_naive_zero_padded_sum():
    x = rand_factor("pose", 9).values
    k = gaussian_kernel(5, 1.5).double()
    xp = torch.cat([torch.zeros(2, 6), x, torch.zeros(2, 6)]).double()
    ref = sum(k[j] * xp[j : j + 9] for j in range(5))
    assert torch.allclose(Smoothing.gaussian(5, 1.5).apply(x).double(), ref, atol=1e-6)


def test_smoothing_validation():
    assert torch.equal(Smoothing.gaussian(1).apply(torch.ones(3, 2)), torch.ones(3, 2))
    for kw, match in [
        (dict(method="median"), "median"),
        (dict(method="box", window=4), "odd"),
        (dict(method="gaussian", sigma=0), "sigma"),
        (dict(method="box", edge="wrap"), "wrap"),
    ]:
        with pytest.raises(InputError, match=match):
            Smoothing(**kw)


# --------------------------------------------------------------------------- post-processing


def test_post_process_presets():
    p = PostProcess.official()
    assert (p.mouth_gain, p.expression_gain, p.eye_gain, p.pose_gain) == (1.5, 1.2, 1.2, 1.0)
    assert p.mouth_smoothing == Smoothing("gaussian", 3, 1.0, "official")
    assert p.pose_smoothing == Smoothing("box", 3, edge="official")
    assert p.eye_smoothing.method == p.expression_smoothing.method == "none"
    assert PostProcess(pose_smoothing="gaussian").pose_smoothing == Smoothing.gaussian()
    for kind in MOTION_ORDER:
        f = rand_factor(kind, 6)
        assert torch.equal(PostProcess.none().apply(f).values, f.values)
    with pytest.raises(InputError, match="eye gain"):
        PostProcess(eye_gain=float("inf"))
    with pytest.raises(InputError, match="pose smoothing"):
        PostProcess(pose_smoothing=3)


@settings(max_examples=25, deadline=None, database=None)
@given(kind=st.sampled_from(MOTION_ORDER), t=st.integers(1, 12), s=st.floats(-3, 3), seed=st.integers(0, 99))
def test_post_process_is_linear(kind, t, s, seed):
    f = rand_factor(kind, t, seed)
    post = PostProcess.official()
    a = post.apply(scale(f, s)).values
    b = scale(post.apply(f), s).values
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    g = rand_factor(kind, t, seed + 1)
    assert torch.allclose(post.apply(add(f, g)).values, post.apply(f).values + post.apply(g).values, atol=1e-5)


# --------------------------------------------------------------------------- length fitting


def test_fit_index_examples():
    assert fit_indices(3, 8, "loop").tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert fit_indices(3, 9, "pingpong").tolist() == [0, 1, 2, 1, 0, 1, 2, 1, 0]
    assert fit_indices(2, 5, "pingpong").tolist() == [0, 1, 0, 1, 0]
    assert fit_indices(1, 3, "pingpong").tolist() == [0, 0, 0]
    assert fit_indices(3, 5, "hold").tolist() == [0, 1, 2, 2, 2]
    assert fit_indices(5, 3, "truncate").tolist() == [0, 1, 2]
    for mode in ("loop", "pingpong", "hold"):
        assert fit_indices(5, 3, mode).tolist() == [0, 1, 2]
    with pytest.raises(InputError, match="only shorten"):
        fit_indices(3, 5, "truncate")
    with pytest.raises(InputError, match="not one of"):
        fit_indices(3, 5, "bounce")
    with pytest.raises(InputError, match="the pose factor: .*only shorten"):
        fit_length(rand_factor("pose", 3), 5, "truncate")
    with pytest.raises(InputError, match="length"):
        fit_indices(3, 0)


@settings(max_examples=40, deadline=None, database=None)
@given(t=st.integers(1, 20), n=st.integers(1, 60))
def test_fit_index_properties(t, n):
    loop = fit_indices(t, n, "loop")
    assert loop.tolist() == [i % t for i in range(n)]
    pp = fit_indices(t, n, "pingpong")
    assert pp.min() >= 0 and pp.max() < t
    assert pp[: min(t, n)].tolist() == list(range(min(t, n)))
    if t > 1:
        assert (pp[1:] - pp[:-1]).abs().eq(1).all()
    assert fit_indices(t, n, "hold").tolist() == [min(i, t - 1) for i in range(n)]
    f = rand_factor("eye", t, seed=t)
    for mode in ("loop", "pingpong", "hold"):
        assert torch.equal(fit_length(f, n, mode).values, f.values[fit_indices(t, n, mode)])
    assert fit_length(f, t, "loop") is f


def test_skip_first():
    f = rand_factor("pose", 5)
    assert torch.equal(skip_first(f).values, f.values[2:])
    assert skip_first(f, 0) is f
    with pytest.raises(InputError, match="the pose driver has 5 frames; skipping the first 5"):
        skip_first(f, 5)


def test_retime():
    f = rand_factor("pose", 10, fps=25)
    assert torch.equal(retime(f, 25).values, f.values)
    up = retime(f, 50, "linear")
    assert len(up) == 20 and up.fps == 50
    assert torch.equal(up.values[::2], f.values)
    assert torch.allclose(up.values[1:-1:2], (f.values[:-1] + f.values[1:]) / 2, atol=1e-6)
    down = retime(f, 12.5, "nearest")
    assert torch.equal(down.values, f.values[::2])


# --------------------------------------------------------------------------- algebra


@settings(max_examples=25, deadline=None, database=None)
@given(kind=st.sampled_from(MOTION_ORDER), t=st.integers(1, 10), s=st.floats(-5, 5), seed=st.integers(0, 99))
def test_zero_scale_mix_properties(kind, t, s, seed):
    f, g = rand_factor(kind, t, seed), rand_factor(kind, t, seed + 1)
    zf = zero(f)
    assert zf.kind == kind and len(zf) == t and zf.values.abs().sum() == 0
    assert torch.equal(scale(zf, s).values, zf.values)
    assert torch.equal(scale(f, 0).values, zf.values)
    assert torch.equal(scale(f, 1).values, f.values)
    assert torch.equal(mix(f, g, 0.0).values, f.values)
    assert torch.equal(mix(f, g, 1.0).values, g.values)
    assert torch.equal(add(f, zf).values, f.values)
    m = mix(f, g, ramp(t))
    assert torch.equal(m.values[-1], g.values[-1])
    if t > 1:
        assert torch.equal(m.values[0], f.values[0])
    assert torch.allclose(mix(f, g, 0.5).values, (f.values + g.values) / 2, atol=1e-6)


def test_scale_per_frame_and_errors():
    f = rand_factor("expression", 4)
    s = [0.0, 1.0, 2.0, -1.0]
    out = scale(f, s).values
    for i, si in enumerate(s):
        assert torch.equal(out[i], f.values[i] * si)
    assert torch.equal(scale(f, torch.tensor(s)[:, None]).values, out)
    assert torch.equal(scale(f, np.float32(2)).values, f.values * 2)
    with pytest.raises(InputError, match="3 per-frame values but the factor has 4"):
        scale(f, [1.0, 1.0, 1.0])
    with pytest.raises(InputError, match="strength contains 1 NaN"):
        scale(f, float("nan"))
    with pytest.raises(InputError, match="strength"):
        scale(f, True)


def test_mix_lengths_and_errors():
    a, b = rand_factor("pose", 3, 1), rand_factor("pose", 5, 2)
    m = mix(a, b, 0.25)
    assert len(m) == 5
    assert torch.allclose(m.values, 0.75 * fit_length(a, 5).values + 0.25 * b.values, atol=1e-6)
    m = mix(a, b, ramp(8), fit="hold")
    assert len(m) == 8 and torch.equal(m.values[-1], b.values[-1]) and torch.equal(m.values[0], a.values[0])
    with pytest.raises(InputError, match="cannot combine a pose factor with an eye factor"):
        mix(a, rand_factor("eye", 3), 0.5)
    with pytest.raises(InputError, match="different frame rates"):
        add(a, rand_factor("pose", 3, fps=30))


def test_ramp():
    assert ramp(1).tolist() == [1.0]  # frames from `last` on are `end`
    assert ramp(5).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    r = ramp(7, 1.0, -1.0, first=2, last=4)
    assert r.dtype == torch.float32
    assert r.tolist() == [1.0, 1.0, 1.0, 0.0, -1.0, -1.0, -1.0]
    s = ramp(11, 0.2, 0.9, curve="smoothstep")
    assert s[0].item() == np.float32(0.2) and s[-1].item() == np.float32(0.9)
    assert (s[1:] >= s[:-1]).all()
    assert ramp(4, first=2, last=2).tolist() == [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(InputError, match="last"):
        ramp(4, first=3, last=1)
    with pytest.raises(InputError, match="first"):
        ramp(4, first=4)
    with pytest.raises(InputError, match="curve"):
        ramp(4, curve="cubic")


def test_split_merge_eye():
    eye = rand_factor("eye", 7)
    blink, gaze = split_eye(eye)
    assert torch.equal(merge_eye(blink, gaze).values, eye.values)
    assert blink.values[:, list(EYE_GAZE_DIMS)].abs().sum() == 0
    assert gaze.values[:, list(EYE_BLINK_DIMS)].abs().sum() == 0
    assert torch.equal(blink.values + gaze.values, eye.values)
    other = rand_factor("eye", 7, seed=5)
    merged = merge_eye(eye, other).values
    assert torch.equal(merged[:, list(EYE_BLINK_DIMS)], eye.values[:, list(EYE_BLINK_DIMS)])
    assert torch.equal(merged[:, list(EYE_GAZE_DIMS)], other.values[:, list(EYE_GAZE_DIMS)])
    with pytest.raises(InputError, match="must be an eye factor"):
        split_eye(rand_factor("pose", 3))
    # split + assemble_motion masks agree with the official flags
    post = PostProcess.none()
    assert torch.equal(assemble_motion(7, eye=blink, post=post), assemble_motion(7, eye=eye, post=post, gaze=False))
    assert torch.equal(assemble_motion(7, eye=gaze, post=post), assemble_motion(7, eye=eye, post=post, blink=False))


def test_smooth_hold_offset_concat():
    f = rand_factor("pose", 6)
    assert torch.equal(smooth(f, "box").values, Smoothing.box().apply(f.values))
    assert torch.equal(smooth(f, Smoothing.none()).values, f.values)
    h = hold(f, -1, 4)
    assert len(h) == 4 and (h.values == f.values[-1]).all()
    assert len(hold(f, 2)) == 6
    with pytest.raises(InputError, match="outside the pose factor's 6 frames"):
        hold(f, 6)
    o = offset(f, [1, 0, 0, 0, 0, -1])
    assert torch.equal(o.values[:, 0], f.values[:, 0] + 1) and torch.equal(o.values[:, 1:5], f.values[:, 1:5])
    assert torch.equal(offset(f, 0.5).values, f.values + 0.5)
    assert torch.equal(offset(f, torch.tensor(0.5)).values, f.values + 0.5)
    with pytest.raises(InputError, match="6 values"):
        offset(f, [1, 2])
    c = concat(f, hold(f, 0, 2))
    assert len(c) == 8 and torch.equal(c.values[:6], f.values)
    with pytest.raises(InputError):
        concat()


# --------------------------------------------------------------------------- assembly


def test_assemble_layout_and_errors():
    sl = motion_slices()
    assert [sl[k].stop - sl[k].start for k in MOTION_ORDER] == [500, 30, 6, 6] and sl["pose"].stop == 542
    assert torch.equal(assemble_motion(3), torch.zeros(3, 542))
    pose = rand_factor("pose", 2)
    out = assemble_motion(5, pose=pose, fit="hold", post=PostProcess.none())
    assert torch.equal(out[:, sl["pose"]], fit_length(pose, 5, "hold").values)
    assert out[:, : sl["pose"].start].abs().sum() == 0
    eye = rand_factor("eye", 4)
    assert assemble_motion(4, eye=eye, blink=False, gaze=False).abs().sum() == 0
    with pytest.raises(InputError, match="the eye input must be an eye factor, got a pose factor"):
        assemble_motion(4, eye=pose)
    with pytest.raises(InputError, match="output length"):
        assemble_motion(0)
    with pytest.raises(InputError, match="PostProcess"):
        assemble_motion(3, post="official")


def test_official_gains_are_the_post_process_defaults():
    assert list(OFFICIAL_GAINS) == list(MOTION_ORDER)
    official = PostProcess.official()
    assert {k: official.gain(k) for k in MOTION_ORDER} == OFFICIAL_GAINS
    assert OFFICIAL_GAINS == {"mouth": 1.5, "expression": 1.2, "eye": 1.2, "pose": 1.0}  # the official code's


def test_combine_motion_length_rule():
    mouth, pose, eye = rand_factor("mouth", 7, 1), rand_factor("pose", 12, 2), rand_factor("eye", 4, 3)
    post = PostProcess.none()
    # the mouth decides the length, even when another factor is longer
    got = combine_motion(mouth, pose=pose, eye=eye, post=post)
    assert torch.equal(got, assemble_motion(7, mouth=mouth, pose=pose, eye=eye, post=post))
    # no mouth: the longest factor; a given length wins over both
    assert combine_motion(pose=pose, eye=eye).shape == (12, MOTION_DIM)
    got = combine_motion(mouth, pose=pose, length=20, fit="pingpong", blink=False)
    assert torch.equal(got, assemble_motion(20, mouth=mouth, pose=pose, fit="pingpong", blink=False))
    # nothing given: a still, all-neutral motion of the given length
    assert torch.equal(combine_motion(length=3), torch.zeros(3, MOTION_DIM))


def test_combine_motion_matches_frame_rates():
    mouth, pose30 = rand_factor("mouth", 10, 1), rand_factor("pose", 12, 2, fps=30.0)
    got = combine_motion(mouth, pose=pose30)
    assert torch.equal(got, assemble_motion(10, mouth=mouth, pose=retime(pose30, 25.0)))
    assert torch.equal(
        combine_motion(mouth, pose=pose30, match_fps=False), assemble_motion(10, mouth=mouth, pose=pose30)
    )
    # without a mouth the first given factor in MOTION_ORDER sets the rate; the length follows the retimed factors
    expr30, pose25 = rand_factor("expression", 6, 3, fps=30.0), rand_factor("pose", 10, 4)
    got = combine_motion(expression=expr30, pose=pose25)
    pose_at_30 = retime(pose25, 30.0)
    assert len(pose_at_30) == 12 and got.shape == (12, MOTION_DIM)
    assert torch.equal(got, assemble_motion(12, expression=expr30, pose=pose_at_30))


@pytest.mark.parametrize(
    "args, kw, match",
    [
        ((), {}, "connect at least one factor"),
        ((), {"pose": "factor"}, "the pose input must be a PD-FGC factor, got str"),
        ((), {"eye": Factor("pose", torch.zeros(2, 6))}, "the eye input got a pose factor; connect an eye factor"),
        ((Factor("mouth", torch.zeros(2, 500)),), {"length": 0}, "length is 0"),
        ((Factor("mouth", torch.zeros(2, 500)),), {"length": 5, "fit": "truncate"}, "only shorten"),
    ],
)
def test_combine_motion_errors(args, kw, match):
    with pytest.raises(InputError, match=match):
        combine_motion(*args, **kw)


def test_combine_motion_names_the_caller():
    with pytest.raises(InputError, match="^PD-FGC Combine Motion: connect at least one factor"):
        combine_motion(name="PD-FGC Combine Motion")


# --------------------------------------------------------------------------- persistence


def test_save_load_round_trip(tmp_path):
    from safetensors import safe_open

    f = rand_factor("mouth", 11, fps=29.97)
    p = save_factor(f, tmp_path / "sub" / "mouth.safetensors")
    g = load_factor(p)
    assert g.kind == "mouth" and g.fps == f.fps and torch.equal(g.values, f.values)
    assert load_factor(p, kind="mouth").kind == "mouth"
    with safe_open(str(p), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["producer"] == "ComfyUI-PD-FGC" and meta["format_version"] == "1" and meta["kind"] == "mouth"
    save_factor(rand_factor("pose", 2), p)  # overwrite in place
    assert load_factor(p).kind == "pose"
    assert sorted(os.listdir(p.parent)) == ["mouth.safetensors"], "no temporary file may be left behind"
    with pytest.raises(InputError, match="holds a pose factor, but an eye factor is needed"):
        load_factor(p, kind="eye")


def test_load_rejects_bad_files(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(MediaError, match="does not exist"):
        load_factor(tmp_path / "missing.safetensors")

    good = save_factor(rand_factor("eye", 3), tmp_path / "good.safetensors")
    data = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) - 10])
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 3)
    for name in ("trunc", "junk"):
        with pytest.raises(MediaError, match="not a readable .safetensors"):
            load_factor(tmp_path / f"{name}.safetensors")

    # a pickle must be refused without being unpickled
    sentinel = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(MediaError):
        load_factor(tmp_path / "evil.safetensors")
    assert not sentinel.exists()

    cases = {
        "nometa": ({"values": torch.zeros(2, 6)}, None, "not a PD-FGC factor file"),
        "newer": (
            {"values": torch.zeros(2, 6)},
            {"format": "pdfgc-factor", "format_version": "2", "kind": "eye", "fps": "25.0"},
            "newer",
        ),
        "kind": (
            {"values": torch.zeros(2, 6)},
            {"format": "pdfgc-factor", "format_version": "1", "kind": "lips", "fps": "25.0"},
            "lips",
        ),
        "shape": (
            {"values": torch.zeros(2, 7)},
            {"format": "pdfgc-factor", "format_version": "1", "kind": "eye", "fps": "25.0"},
            r"shape \(2, 7\)",
        ),
        "nan": (
            {"values": torch.full((2, 6), math.nan)},
            {"format": "pdfgc-factor", "format_version": "1", "kind": "eye", "fps": "25.0"},
            "eye factor contains",
        ),
        "nokey": (
            {"other": torch.zeros(2, 6)},
            {"format": "pdfgc-factor", "format_version": "1", "kind": "eye", "fps": "25.0"},
            "no 'values'",
        ),
        "fps": (
            {"values": torch.zeros(2, 6)},
            {"format": "pdfgc-factor", "format_version": "1", "kind": "eye", "fps": "fast"},
            "fps",
        ),
    }
    for name, (tensors, meta, match) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path), metadata=meta)
        with pytest.raises(InputError, match=match) as info:
            load_factor(path)
        assert str(path) in str(info.value), name
