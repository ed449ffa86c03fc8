"""Shared pytest fixtures: the parity folder, synthetic weights cached outside the repo."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest_plugins = ["comfy_harness"]

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"

torch.set_num_threads(2)  # the parity references are bit-exact at 2 threads


def parity_dir() -> Path:
    env = os.environ.get("PDFGC_PARITY_DIR")
    return Path(env) if env else REPO.parent / "shared" / "parity"


def cache_dir() -> Path:
    env = os.environ.get("PDFGC_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "pdfgc"


def fixture_files():
    d = parity_dir()
    return sorted(d.glob("fixture_*.npz")) if d.is_dir() else []


@pytest.fixture(scope="session")
def parity():
    d = parity_dir()
    if not (d / "schema.json").is_file():
        pytest.skip(f"no parity folder at {d} (set PDFGC_PARITY_DIR)")
    return d


@pytest.fixture(scope="session")
def parity_inputs(parity):
    return dict(np.load(parity / "inputs.npz", allow_pickle=False))


def official_weights(parity: Path, seed: int) -> Path:
    """Folder with the four official-layout .pth files for ``seed``, filled once and cached
    outside the repository (keyed by the filler and schema contents)."""
    h = hashlib.sha256()
    for name in ("fill_weights.py", "schema.json"):
        h.update((parity / name).read_bytes())
    out = cache_dir() / "parity-weights" / h.hexdigest()[:16] / f"seed{seed}"
    names = ["appearance_model.pth", "motion_model.pth", "audio_model.pth", "generator_model.pth"]
    if not all((out / n).is_file() for n in names) or not (out / "fill_manifest.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                str(parity / "fill_weights.py"),
                "--schema",
                str(parity / "schema.json"),
                "--seed",
                str(seed),
                "--out",
                str(out),
            ],
            check=True,
            capture_output=True,
        )
    return out


@pytest.fixture(scope="session")
def weights_for(parity):
    """Callable seed -> folder of official-layout synthetic checkpoints."""
    return lambda seed: official_weights(parity, seed)
