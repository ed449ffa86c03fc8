"""The parity folder: official PD-FGC numbers computed on synthetic weights, and how tests read it.

A conforming folder ($PDFGC_PARITY_DIR, default ``../shared/parity`` beside the repository) holds
``schema.json`` (the official state-dict layout), ``fill_weights.py`` (writes the official-layout
checkpoints for a seed), ``inputs.npz`` (inputs shared by all fixtures) and ``fixture_*.npz``
files. Each fixture names the seed of the weights it was made with (``weights_seed``) and their
digests (``weights_tensor_sha256``, "file=sha256; ..."); it may override a shared input with an
``inputs__<name>`` array. Any subset of the reference tensors may be present.

Tests parametrise over the fixtures with :func:`fixture_params` (indirectly, through conftest's
``fx`` fixture, which gives a :class:`ParityFixture`) and read every reference tensor with
:meth:`ParityFixture.tensor`: a tensor the fixture lacks skips only the check that needs it,
naming the fixture and the tensor. With no fixture at all there is one ``no-fixtures`` case per
test, skipped (failed under CI=true). The inner loop (``-m "not slow"``) runs each check on the
smallest fixture that has what it needs; the full run on every fixture.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from testenv import REPO, cache_dir

REQUIRED_FILES = ("schema.json", "fill_weights.py", "inputs.npz")
CHECKPOINT_FILES = ("appearance_model.pth", "motion_model.pth", "audio_model.pth", "generator_model.pth")
NO_FIXTURES = "no-fixtures"


def parity_dir() -> Path:
    env = os.environ.get("PDFGC_PARITY_DIR")
    return Path(env) if env else REPO.parent / "shared" / "parity"


def missing_files(folder: Path) -> list[str]:
    """The required files ``folder`` lacks (all of them when it does not exist)."""
    return [name for name in REQUIRED_FILES if not (folder / name).is_file()]


def fixture_files() -> list[Path]:
    d = parity_dir()
    return sorted(d.glob("fixture_*.npz")) if d.is_dir() else []


@dataclass(frozen=True)
class ParityFixture:
    """One ``fixture_*.npz``: its arrays, read through :meth:`tensor` / :meth:`input`."""

    path: Path
    arrays: Mapping[str, np.ndarray]

    @property
    def name(self) -> str:
        return self.path.stem

    def has(self, key: str) -> bool:
        return key in self.arrays

    def tensor(self, key: str) -> np.ndarray:
        """The stored array ``key``; skips the calling test when the fixture lacks it."""
        if key not in self.arrays:
            pytest.skip(f"{self.name} has no {key!r}: that check is skipped")
        return self.arrays[key]

    def input(self, key: str, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The fixture's own ``inputs__<key>`` if it has one, else ``inputs.npz[key]`` (skips if neither)."""
        own = f"inputs__{key}"
        if own in self.arrays:
            return self.arrays[own]
        if key not in inputs:
            pytest.skip(f"neither {self.name} nor inputs.npz has {key!r}: that check is skipped")
        return inputs[key]

    @property
    def seed(self) -> int:
        """``weights_seed``: the seed of the weights the fixture was made with (required)."""
        if "weights_seed" not in self.arrays:
            pytest.fail(f"{self.path} has no weights_seed: which weights made it is unknown", pytrace=False)
        return int(self.arrays["weights_seed"])

    def weight_digests(self) -> dict[str, str]:
        """{checkpoint file: tensor sha256} from ``weights_tensor_sha256`` ({} when absent)."""
        if "weights_tensor_sha256" not in self.arrays:
            return {}
        entries = [e for e in str(self.arrays["weights_tensor_sha256"]).split("; ") if e]
        return dict(e.split("=", 1) for e in entries)


@functools.lru_cache(maxsize=8)
def load_fixture(path: Path) -> ParityFixture:
    with np.load(path, allow_pickle=False) as z:
        return ParityFixture(path, {k: z[k] for k in z.files})


def fixture_params(inner: int | None = None, needs: tuple[str, ...] = ()) -> list:
    """pytest params over the folder's fixtures for the indirect ``fx`` fixture, ids = file stems;
    ``[no-fixtures]`` (None) when there is none.

    ``inner``: how many fixtures stay in the inner loop (the smallest files that hold every array
    in ``needs``); the others are marked slow and run in the full run. None: all stay."""
    files = fixture_files()
    if not files:
        return [pytest.param(None, id=NO_FIXTURES)]
    fast: set[Path] = set(files)
    if inner is not None:
        holding = [p for p in files if set(needs) <= set(_array_names(p))]
        fast = set(sorted(holding, key=lambda p: p.stat().st_size)[:inner])
    return [pytest.param(p, id=p.stem, marks=[] if p in fast else [pytest.mark.slow]) for p in files]


def _array_names(path: Path) -> list[str]:
    with np.load(path, allow_pickle=False) as z:
        return list(z.files)


def official_weights(parity: Path, seed: int) -> Path:
    """Folder with the four official-layout .pth files for ``seed`` (and fill_manifest.json),
    filled once by the folder's own fill_weights.py and cached outside the repository, keyed by
    the filler and schema contents."""
    h = hashlib.sha256()
    for name in ("fill_weights.py", "schema.json"):
        h.update((parity / name).read_bytes())
    out = cache_dir() / "parity-weights" / h.hexdigest()[:16] / f"seed{seed}"

    def complete(d: Path) -> bool:
        return all((d / n).is_file() for n in (*CHECKPOINT_FILES, "fill_manifest.json"))

    if complete(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".seed{seed}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be filling the same seed
        if complete(out):
            return out
        shutil.rmtree(out, ignore_errors=True)
        tmp = out.with_name(out.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        cmd = [sys.executable, str(parity / "fill_weights.py"), "--schema", str(parity / "schema.json")]
        r = subprocess.run([*cmd, "--seed", str(seed), "--out", str(tmp)], capture_output=True, text=True)
        if r.returncode != 0 or not complete(tmp):
            raise RuntimeError(f"{parity / 'fill_weights.py'} --seed {seed} failed:\n{(r.stderr or r.stdout)[-3000:]}")
        tmp.rename(out)  # complete or absent
    return out


def manifest_digests(folder: Path) -> dict[str, str]:
    """{checkpoint file: tensor sha256} of a folder written by fill_weights.py."""
    files = json.loads((folder / "fill_manifest.json").read_text())["files"]
    return {name: entry["tensor_sha256"] for name, entry in files.items()}
