"""Cancel reaches inside a generator batch: the interrupt check runs before every generator layer."""

import threading
import time

import pytest
import torch

from pdfgc_core.engine import MOTION_DIM, Appearance, Engine


class Cancelled(Exception):
    pass


@pytest.mark.slow  # inner loop: under 3 minutes (tests/README.md)
def test_interrupt_stops_a_batch_within_one_layer(synthetic_models):
    engine = Engine(synthetic_models)
    gen = engine.models.generator
    finished = []
    last = gen.to_rgbs[-1].register_forward_hook(lambda *_: finished.append(True))
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 4:  # the batch check, then three layers
            raise Cancelled

    app = Appearance(torch.zeros(1, 2048), torch.zeros(1, 512, 7, 7))
    with pytest.raises(Cancelled):
        list(engine.generate(app, torch.zeros(8, MOTION_DIM), batch_size=8, check_interrupt=check))
    last.remove()
    assert not finished  # the batch did not run to its last layer
    assert all(not m._forward_pre_hooks for m in gen.modules())  # hooks are removed again
    # without a cancel, checks run per layer and the frames are the same as without checks
    calls.clear()
    a = torch.cat(list(engine.generate(app, torch.zeros(2, MOTION_DIM), check_interrupt=lambda: calls.append(1))))
    b = torch.cat(list(engine.generate(app, torch.zeros(2, MOTION_DIM))))
    assert len(calls) > 10 and torch.equal(a, b)


def test_interrupt_stops_every_cpu_stream(synthetic_models):
    """Two CPU streams: the stream that sees the cancel stops, the other stops at its next layer,
    queued frames never start, and nothing runs on after generate() has raised."""
    engine = Engine(synthetic_models, device="cpu", streams=2)
    gen = engine.models.generator
    finished = []
    last = gen.to_rgbs[-1].register_forward_hook(lambda *_: finished.append(True))
    calls = []
    lock = threading.Lock()

    def check():
        with lock:
            calls.append(1)
            if len(calls) >= 6:  # the batch check, then a few layers of the first two frames
                raise Cancelled

    app = Appearance(torch.zeros(1, 2048), torch.zeros(1, 512, 7, 7))
    try:
        with pytest.raises(Cancelled):
            list(engine.generate(app, torch.zeros(8, MOTION_DIM), batch_size=8, check_interrupt=check))
        seen = len(calls)
        time.sleep(0.2)
        assert len(calls) == seen <= 7  # once cancelled, the check is not asked again (two streams may race once)
        assert not finished  # no frame ran to its last layer
    finally:
        last.remove()
    assert all(not m._forward_pre_hooks for m in gen.modules())
