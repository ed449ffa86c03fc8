"""Generator parity: the reference path (official math) and the fast path against the official
fixtures, and against each other on random inputs.

Frame-0 internals (``gen_f0_*``) were computed inside the official batch of 8, so frames 0-7
run as one batch here; ``gen_images`` holds frames 0-11, i.e. the official batches 0-7 and
8-15 (of which 8-11 are stored). The reference path costs about 1-3 s per frame on a small
CPU, so it runs against the fixtures only in the full run (slow); the inner loop compares it
with the fast path on random inputs, and the fast path with one fixture.

Each fixture runs on the official-layout weights of its own ``weights_seed``; each stored tensor
(every frame-0 internal, the images) is its own test, skipped when the fixture lacks it. The
tests on random inputs use a copy of the session's synthetic generator (conftest ``synthetic_models``).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from parity_folder import fixture_params

from pdfgc_core.errors import InputError
from pdfgc_core.networks.generator import (
    CHECKPOINT_CONSTANT_BUFFERS,
    NOISE_SIZES,
    UNUSED_CHECKPOINT_PREFIXES,
    Generator,
)
from pdfgc_core.networks.layers import (
    ModulatedConv2d,
    StyledConv,
    ToRGB,
    blur_depthwise,
    make_blur_kernel,
    upfirdn2d,
    upsample_depthwise,
)

TOL = 1e-4
OFFICIAL_BATCH = 8
# inner loop: the fast path on the smallest fixture with images (internals and images share one run);
# everything else on every fixture, and the reference path, in the full run (slow)
INNER_IMAGES = fixture_params(inner=1, needs=("gen_images",))
INTERNALS = (  # frame-0 internals captured by forward hooks; the fixtures store them as gen_f0_<name>
    "conv1_out",
    "skip_7",
    "convs0_out",
    "convs1_out",
    "skip_14",
    "skip_28",
    "skip_56",
    "skip_112",
    "skip_224",
)


def load_generator(path) -> Generator:
    """Official generator_model.pth -> our Generator (checks the constant kernels, drops the
    mapping network and the constant input, loads strictly)."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key, value in CHECKPOINT_CONSTANT_BUFFERS.items():
        assert torch.equal(sd.pop(key), value), key
    sd = {k: v for k, v in sd.items() if not k.startswith(UNUSED_CHECKPOINT_PREFIXES)}
    gen = Generator().eval()
    gen.load_state_dict(sd, strict=True)
    return gen


_GENERATORS: dict = {}


@pytest.fixture(scope="module")
def fx_generator(fx, fx_weights) -> Generator:
    """The generator with the weights of the fixture's own seed (one kept at a time: 365 MB each)."""
    if fx.seed not in _GENERATORS:
        _GENERATORS.clear()
        _GENERATORS[fx.seed] = load_generator(fx_weights / "generator_model.pth")
    return _GENERATORS[fx.seed]


@pytest.fixture(scope="module")
def generator(synthetic_models) -> Generator:
    """A generator with weights for the tests on random inputs: a private copy of the session's
    synthetic one, since these tests switch precision and layout, which replaces the generator's
    cached fast-path weights (other modules measure memory around the shared one)."""
    return copy.deepcopy(synthetic_models.generator)


def fixture_inputs(fx):
    """(id_map [1,512,7,7], styles [N,2590]) of a fixture."""
    motion = torch.from_numpy(fx.tensor("gen_input_motion"))
    appearance = torch.from_numpy(fx.tensor("id_feature0")).expand(motion.shape[0], -1)
    return torch.from_numpy(fx.tensor("id_feature1")), torch.cat([appearance, motion], 1)


_RUNS: dict = {}


def frame0_internals(generator, run):
    """``run()`` under forward hooks on the generator's layers: its result and frame 0 of every
    layer output, named as the fixtures' gen_f0_* keys (conv1_out, convs0_out .. convs9_out,
    skip_7 .. skip_224: the running RGB skip before tanh). Copied at once: the fast path reuses
    a finished activation as scratch."""
    kept = {}
    convs = {generator.conv1: "conv1_out", **{m: f"convs{k}_out" for k, m in enumerate(generator.convs)}}

    def hook(module, args, output):
        kept[convs.get(module) or f"skip_{output.shape[-1]}"] = output[:1].clone()

    layers = [*convs, generator.to_rgb1, *generator.to_rgbs]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        return run(), kept
    finally:
        for h in handles:
            h.remove()


def run_batch(generator, fx, impl: str, start: int):
    """Frames start .. start+7 as one official batch, cached per module: (images, frame-0
    internals). Only the first batch asks for internals, so later batches run the default
    (scratch-reusing) fast path."""
    key = (fx.path, fx.seed, impl, start)
    if key not in _RUNS:
        id_map, styles = fixture_inputs(fx)
        batch = styles[start : start + OFFICIAL_BATCH]
        with torch.inference_mode():
            if start == 0:
                images, internals = frame0_internals(generator, lambda: generator(id_map, batch, impl=impl))
                _RUNS[key] = images, {name: internals[name] for name in INTERNALS}
            else:
                _RUNS[key] = generator(id_map, batch, impl=impl), {}
    return _RUNS[key]


def max_abs(a, b) -> float:
    return (torch.as_tensor(a).float() - torch.as_tensor(b).float()).abs().max().item()


# --- layout ---------------------------------------------------------------------------------


def test_state_dict_matches_schema(parity):
    schema = json.loads((parity / "schema.json").read_text())["networks"]["generator"]["keys"]
    expected = {
        e["key"]: tuple(e["shape"])
        for e in schema
        if not e["key"].startswith(UNUSED_CHECKPOINT_PREFIXES) and e["key"] not in CHECKPOINT_CONSTANT_BUFFERS
    }
    ours = {k: tuple(v.shape) for k, v in Generator().state_dict().items()}
    assert ours == expected
    constants = {e["key"]: torch.tensor(e["constant_value"]) for e in schema if "constant_value" in e}
    assert constants.keys() == CHECKPOINT_CONSTANT_BUFFERS.keys()
    for key, value in constants.items():
        assert torch.equal(CHECKPOINT_CONSTANT_BUFFERS[key], value), key


@pytest.mark.parametrize("fx", fixture_params(), indirect=True)
def test_fixture_style_layout(fx):
    _, styles = fixture_inputs(fx)
    assert torch.equal(styles[0], torch.from_numpy(fx.tensor("gen_style_full_f0")))


def test_hooks_capture_every_stored_internal():
    gen = Generator().eval()
    with torch.inference_mode():
        _, internals = frame0_internals(gen, lambda: gen(torch.zeros(1, 512, 7, 7), torch.zeros(1, 2590)))
    assert set(INTERNALS) <= set(internals)


# --- official fixtures ----------------------------------------------------------------------


def check_internal(generator, fx, impl, name):
    ref = fx.tensor(f"gen_f0_{name}")
    _, internals = run_batch(generator, fx, impl, 0)
    err = max_abs(internals[name], ref)
    assert err < TOL, f"{name}: max abs {err:.3g}"


def check_images(generator, fx, impl, batches):
    expected = fx.tensor("gen_images")
    num_frames = int(fx.tensor("num_frames"))
    for start in batches:
        images, _ = run_batch(generator, fx, impl, start)
        n = min(OFFICIAL_BATCH, expected.shape[0] - start)
        assert images.shape == (min(OFFICIAL_BATCH, num_frames - start), 3, 224, 224)
        assert images.dtype == torch.float32
        err = max_abs(images[:n], expected[start : start + n])
        assert err < TOL, f"frames {start}..{start + n - 1}: max abs {err:.3g}"


def second_batches(fx):
    return range(OFFICIAL_BATCH, fx.tensor("gen_images").shape[0], OFFICIAL_BATCH)


@pytest.mark.parametrize("fx", INNER_IMAGES, indirect=True)
@pytest.mark.parametrize("name", INTERNALS)
def test_fast_internals(fx_generator, fx, name):
    check_internal(fx_generator, fx, "fast", name)


@pytest.mark.parametrize("fx", fixture_params(inner=0), indirect=True)
@pytest.mark.parametrize("name", INTERNALS)
def test_reference_internals(fx_generator, fx, name):
    check_internal(fx_generator, fx, "reference", name)


@pytest.mark.parametrize("fx", INNER_IMAGES, indirect=True)
def test_fast_images_first_batch(fx_generator, fx):
    check_images(fx_generator, fx, "fast", [0])


@pytest.mark.parametrize("fx", fixture_params(inner=0), indirect=True)
def test_reference_images_first_batch(fx_generator, fx):
    check_images(fx_generator, fx, "reference", [0])


@pytest.mark.parametrize("fx", fixture_params(inner=0), indirect=True)
def test_fast_images_second_batch(fx_generator, fx):
    check_images(fx_generator, fx, "fast", second_batches(fx))


@pytest.mark.parametrize("fx", fixture_params(inner=0), indirect=True)
def test_reference_images_second_batch(fx_generator, fx):
    check_images(fx_generator, fx, "reference", second_batches(fx))


# --- fast vs reference on random inputs ----------------------------------------------------


def random_styles(b, seed=0):
    g = torch.Generator().manual_seed(seed)
    # like real styles: appearance ~0.5 +- 0.16, motion factors ~unit scale
    return torch.cat([0.5 + 0.16 * torch.randn(b, 2048, generator=g), torch.randn(b, 542, generator=g)], 1)


@pytest.mark.parametrize("batch", [1, pytest.param(3, marks=pytest.mark.slow), pytest.param(8, marks=pytest.mark.slow)])
def test_generator_fast_matches_reference_random(generator, batch):
    styles = random_styles(batch, seed=batch)
    id_map = torch.randn(batch, 512, 7, 7, generator=torch.Generator().manual_seed(10 + batch))
    with torch.inference_mode():
        ref = generator(id_map, styles, impl="reference", noise=torch.Generator().manual_seed(5))
        fast = generator(id_map, styles, impl="fast", noise=torch.Generator().manual_seed(5))
    assert ref.shape == fast.shape == (batch, 3, 224, 224)
    assert max_abs(fast, ref) < TOL


def make_layer(kind, b, upsample=False, seed=0, size=9):
    torch.manual_seed(seed)
    style_dim, cin, cout = 40, 24, 16
    if kind == "conv":
        layer = ModulatedConv2d(cin, cout, 3, style_dim, upsample=upsample)
    elif kind == "styled":
        layer = StyledConv(cin, cout, 3, style_dim, upsample=upsample)
        torch.nn.init.uniform_(layer.noise.weight, 0.05, 0.15)
        torch.nn.init.normal_(layer.activate.bias, 0, 0.1)
    else:
        layer = ToRGB(cin, style_dim, upsample=True)
        torch.nn.init.normal_(layer.conv.weight, 0, 0.15)
        torch.nn.init.normal_(layer.bias, 0, 0.1)
    torch.nn.init.normal_(layer.modulation.bias if kind == "conv" else layer.conv.modulation.bias, 1, 0.05)
    return layer.eval(), torch.randn(b, cin, size, size), torch.randn(b, style_dim)


@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize(
    "kind,upsample", [("conv", False), ("conv", True), ("styled", False), ("styled", True), ("rgb", False)]
)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_layer_fast_matches_reference(kind, upsample, batch, layout):
    layer, x, style = make_layer(kind, batch, upsample, size=10 if kind == "rgb" else 9)
    fast_x = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
    size = x.shape[-1] * (2 if upsample else 1)
    if kind == "conv":
        ref, fast = layer(x, style, impl="reference"), None
        with torch.inference_mode():
            fast = layer(fast_x, style, impl="fast")
    elif kind == "styled":
        noise = torch.randn(1, 1, size, size)
        ref = layer(x, style, noise, impl="reference")
        with torch.inference_mode():
            fast = layer(fast_x, style, noise, impl="fast")
    else:
        skip = torch.randn(batch, 3, 5, 5)
        ref = layer(x, style, skip, impl="reference")
        with torch.inference_mode():
            fast = layer(fast_x, style, skip, impl="fast")
    assert fast.shape == ref.shape
    assert max_abs(fast, ref) < 1e-5 * max(1.0, ref.abs().max().item())


def test_fast_path_gradients_match_reference():
    layer, x, style = make_layer("styled", 2, upsample=True)
    noise = torch.randn(1, 1, 18, 18)
    grads = []
    for impl in ("reference", "fast"):
        layer.zero_grad()
        s = style.clone().requires_grad_(True)
        layer(x, s, noise, impl=impl).square().sum().backward()
        grads.append((s.grad, layer.conv.weight.grad.clone(), layer.activate.bias.grad.clone()))
    for ref, fast in zip(*grads):
        assert max_abs(fast, ref) < 1e-4 * max(1.0, ref.abs().max().item())


def test_fast_cache_follows_weight_updates():
    layer, x, style = make_layer("conv", 2)
    other, _, _ = make_layer("conv", 2, seed=1)
    with torch.inference_mode():
        before = layer(x, style)
    layer.load_state_dict(other.state_dict())
    with torch.inference_mode():
        after = layer(x, style)
    assert max_abs(after, other(x, style, impl="reference")) < 1e-5
    assert max_abs(after, before) > 1e-2


def test_cpu_bf16_autocast_runs(generator):
    style = random_styles(1, seed=11)
    id_map = torch.randn(1, 512, 7, 7, generator=torch.Generator().manual_seed(11))
    with torch.inference_mode():
        full = generator(id_map, style)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = generator(id_map, style)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert max_abs(low, full) < 0.05 and (low - full).abs().mean().item() < 0.005


def test_overwrite_input_is_equivalent():
    layer, x, style = make_layer("styled", 3, upsample=True)
    noise = torch.randn(1, 1, 18, 18)
    with torch.inference_mode():
        keep = layer(x, style, noise, impl="fast")
        scratch = x.clone()
        assert torch.equal(layer(scratch, style, noise, impl="fast", overwrite_input=True), keep)


@pytest.mark.parametrize("pad", [(1, 1), (2, 1), (2, 2), (0, 3)])
def test_fast_fir_equals_upfirdn2d(pad):
    x = torch.randn(2, 5, 11, 11)
    k = make_blur_kernel(gain=4.0)
    assert max_abs(blur_depthwise(x, k, pad), upfirdn2d(x, k, pad=pad)) < 1e-6
    assert max_abs(upsample_depthwise(x, k, pad), upfirdn2d(x, k, up=2, pad=pad)) < 1e-6


def test_upfirdn2d_against_direct_sum():
    """upfirdn2d = zero-insert, pad, true convolution, decimate; checked by an explicit sum."""
    x = torch.randn(1, 1, 4, 5, dtype=torch.float64)
    k = torch.rand(3, 3, dtype=torch.float64)
    up, down, (p0, p1) = 2, 1, (2, 1)
    u = torch.zeros(4 * up, 5 * up, dtype=torch.float64)
    u[::up, ::up] = x[0, 0]
    u = torch.nn.functional.pad(u, [p0, p1, p0, p1])
    h, w = u.shape[0] - 2, u.shape[1] - 2
    direct = torch.zeros(h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            direct[i, j] = sum(u[i + a, j + c] * k[2 - a, 2 - c] for a in range(3) for c in range(3))
    assert torch.allclose(upfirdn2d(x, k, up=up, down=down, pad=(p0, p1))[0, 0], direct[::down, ::down])


# --- noise ----------------------------------------------------------------------------------


def test_noise_options(generator):
    style = random_styles(2, seed=3)
    style[1] = style[0]  # identical frames stay identical: the noise is shared over the batch
    id_map = torch.randn(1, 512, 7, 7, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        stored = generator(id_map, style)
        explicit = generator(id_map, style, noise=[n[0, 0] for n in generator.stored_noise()])
        seeded = generator(id_map, style, noise=torch.Generator().manual_seed(7))
        drawn = generator(id_map, style, noise=generator.draw_noise(torch.Generator().manual_seed(7)))
    assert torch.equal(stored, explicit)
    assert torch.equal(seeded, drawn)
    # samples of one batch may be computed with different blocking: equal up to rounding
    assert max_abs(seeded[0], seeded[1]) < 1e-5 and max_abs(stored[0], stored[1]) < 1e-5
    assert max_abs(seeded, stored) > 1e-3


def test_seeded_noise_is_deterministic(blank_generator):
    a = blank_generator.draw_noise(torch.Generator().manual_seed(7))
    b = blank_generator.draw_noise(torch.Generator().manual_seed(7))
    c = blank_generator.draw_noise(torch.Generator().manual_seed(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not any(torch.equal(x, y) for x, y in zip(a, c))


@pytest.fixture(scope="module")
def blank_generator():
    return Generator().eval()


def test_draw_noise_shapes(blank_generator):
    maps = blank_generator.draw_noise(torch.Generator().manual_seed(0))
    assert [tuple(m.shape) for m in maps] == [(1, 1, r, r) for r in NOISE_SIZES]


def test_fast_layouts_agree(generator):
    style = random_styles(1, seed=9)
    id_map = torch.randn(1, 512, 7, 7, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        cl = generator(id_map, style)
        generator.fast_memory_format = torch.contiguous_format
        try:
            nchw = generator(id_map, style)
        finally:
            del generator.fast_memory_format
    assert max_abs(cl, nchw) < 1e-5


# --- input errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "id_shape,style_shape,noise",
    [
        ((1, 512, 7, 7), (2, 2589), None),
        ((1, 512, 7, 7), (2590,), None),
        ((0, 512, 7, 7), (0, 2590), None),
        ((3, 512, 7, 7), (2, 2590), None),
        ((1, 512, 8, 8), (2, 2590), None),
        ((1, 512, 7, 7), (2, 2590), [torch.zeros(1, 1, 7, 7)] * 10),
        ((1, 512, 7, 7), (2, 2590), [torch.zeros(1, 1, 7, 7)] * 11),
        ((1, 512, 7, 7), (2, 2590), "seed"),
    ],
)
def test_bad_inputs_raise_input_error(blank_generator, id_shape, style_shape, noise):
    with pytest.raises(InputError):
        blank_generator(torch.zeros(id_shape), torch.zeros(style_shape), noise=noise)


def test_bad_impl_raises(blank_generator):
    with pytest.raises(InputError):
        blank_generator(torch.zeros(1, 512, 7, 7), torch.zeros(1, 2590), impl="cuda")
