"""Speed options of ``Engine``: automatic batch size from free memory, guarded ``torch.compile``."""

from __future__ import annotations

import pytest
import torch

from pdfgc_core import engine
from pdfgc_core.engine import AUTO_MAX_BATCH, GENERATOR_MIB_PER_FRAME, MOTION_DIM, Appearance, Engine, auto_batch_size
from pdfgc_core.errors import InputError


def models():
    """The session's synthetic models (tests/pdfgc_synthetic.py), loaded once."""
    from pdfgc_synthetic import synthetic_models

    return synthetic_models()


@pytest.mark.parametrize("free_mib", [0, 10, 64 * 3, 64 * 16 * 2, 1e9])
def test_auto_batch_size_is_a_power_of_two_within_bounds(monkeypatch, free_mib):
    monkeypatch.setattr(engine, "free_memory_mib", lambda device: free_mib)
    for device, cap in (("cpu", AUTO_MAX_BATCH["cpu"]), ("cpu", 1000)):
        b = auto_batch_size(device, torch.float32, max_batch=cap)
        assert 1 <= b <= cap and b & (b - 1) == 0
        fits = free_mib * 0.5 // GENERATOR_MIB_PER_FRAME[torch.float32]
        assert b <= max(1, fits) and (b == cap or 2 * b > min(fits, cap))


def test_auto_batch_size_defaults_and_errors(monkeypatch):
    monkeypatch.setattr(engine, "free_memory_mib", lambda device: 1e9)
    assert auto_batch_size("cpu") == AUTO_MAX_BATCH["cpu"]
    assert auto_batch_size("cpu", "fp32", max_batch=5) == 4
    with pytest.raises(InputError, match="max_batch"):
        auto_batch_size("cpu", max_batch=0)
    monkeypatch.undo()
    assert engine.free_memory_mib("cpu") > 0
    assert 1 <= Engine(models(), device="cpu").auto_batch_size() <= AUTO_MAX_BATCH["cpu"]


def _frames(engine: Engine) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    app = engine.encode_appearance(torch.rand(1, 3, 224, 224, generator=g) * 2 - 1)
    motion = torch.randn(3, MOTION_DIM, generator=g) * 0.5
    return engine.generate_all(app, motion, batch_size=2)


@pytest.mark.slow  # inner loop: under 3 minutes (tests/README.md)
def test_compile_failure_falls_back_to_eager(monkeypatch, caplog):
    eager = _frames(Engine(models(), device="cpu"))
    calls = []

    def broken_compile(module, *a, **k):
        def run(*x, **kw):
            calls.append(1)
            raise RuntimeError("backend compiler failed")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    engine = Engine(models(), device="cpu", compile=True)
    with caplog.at_level("WARNING", logger="pdfgc"):
        got = _frames(engine)
    assert calls == [1]  # tried once, then eager for good
    assert engine._generator is models().generator
    assert "torch.compile failed" in caplog.text
    assert torch.equal(got, eager)


def test_compile_wraps_the_generator(monkeypatch):
    wrapped = []

    def fake_compile(module, *a, **k):
        wrapped.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    engine = Engine(models(), device="cpu", compile=True)
    assert wrapped == [models().generator]
    assert Engine(models(), device="cpu")._generator is models().generator
    with pytest.raises(InputError):  # bad input is not mistaken for a compile failure
        list(
            engine.generate(
                Appearance(torch.zeros(1, 2048), torch.zeros(1, 512, 7, 7)),
                torch.zeros(1, MOTION_DIM),
                batch_size=0,
            )
        )


def test_generate_builds_the_style_per_batch(monkeypatch):
    """Nothing of size [T, 2590] is built for a long clip: the style is made one batch at a time."""
    engine = Engine(models(), device="cpu")
    rows = []
    style = Engine.style
    monkeypatch.setattr(Engine, "style", staticmethod(lambda app, m: rows.append(m.shape[0]) or style(app, m)))
    app = Appearance(torch.zeros(1, 2048), torch.zeros(1, 512, 7, 7))
    first = next(engine.generate(app, torch.zeros(30_000, MOTION_DIM), batch_size=2))
    assert first.shape == (2, 3, 224, 224)
    assert max(rows) <= 2
