"""Shared pytest fixtures: the parity folder and its fixtures, synthetic weights built once per session.

Plugins: tests/testenv.py (CI mode, timeout scale, the opt-in harness self-tests) and
tests/comfy_harness (a real ComfyUI server). Run ``python -m pytest --markers`` for the markers
and tests/README.md for the inner-loop and full commands.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from parity_folder import (  # noqa: F401  (fixture_files: also imported from here by older modules)
    ParityFixture,
    fixture_files,
    load_fixture,
    manifest_digests,
    missing_files,
    official_weights,
    parity_dir,
)
from testenv import REPO, unavailable

pytest_plugins = ["testenv", "comfy_harness"]

SAMPLES = REPO / "samples"

torch.set_num_threads(2)  # the parity references are bit-exact at 2 threads


# --------------------------------------------------------------------------- synthetic weights


@pytest.fixture(scope="session")
def synthetic_checkpoint() -> Path:
    """The cached synthetic .safetensors checkpoint (tests/pdfgc_synthetic.py)."""
    from pdfgc_synthetic import synthetic_checkpoint

    return synthetic_checkpoint()


@pytest.fixture(scope="session")
def synthetic_models(synthetic_checkpoint):
    """PDFGCModels of the synthetic checkpoint, loaded once per session and shared: do not modify."""
    from pdfgc_synthetic import synthetic_models

    return synthetic_models()


# --------------------------------------------------------------------------- the parity folder


@pytest.fixture(scope="session")
def parity() -> Path:
    """The parity folder (PDFGC_PARITY_DIR or ../shared/parity); skipped if absent or incomplete,
    failed under CI=true."""
    d = parity_dir()
    missing = missing_files(d)
    if missing:
        unavailable(f"no usable parity folder at {d}: missing {', '.join(missing)} (set PDFGC_PARITY_DIR)")
    return d


@pytest.fixture(scope="session")
def parity_inputs(parity) -> dict[str, np.ndarray]:
    with np.load(parity / "inputs.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def weights_for(parity):
    """Callable seed -> folder of official-layout synthetic checkpoints (filled once, cached)."""
    return lambda seed: official_weights(parity, seed)


@pytest.fixture(scope="module")
def fx(request, parity) -> ParityFixture:
    """The parity fixture of an indirect parametrisation: ``@pytest.mark.parametrize("fx",
    parity_folder.fixture_params(), indirect=True)``. No fixture in the folder: skipped, or
    failed under CI=true."""
    if request.param is None:
        unavailable(f"no fixture_*.npz in the parity folder {parity}")
    return load_fixture(request.param)


@pytest.fixture(scope="module")
def fx_weights(fx, weights_for) -> Path:
    """The official-layout checkpoints of ``fx``'s own weights_seed, checked against the digests
    the fixture stores (when it stores them)."""
    folder = weights_for(fx.seed)
    stored = fx.weight_digests()
    filled = manifest_digests(folder)
    for name, digest in stored.items():
        assert filled.get(name) == digest, (
            f"{name} filled for seed {fx.seed} does not have the digest {fx.name} stores: the fixture was made "
            f"with other weights (or another fill_weights.py)"
        )
    return folder
