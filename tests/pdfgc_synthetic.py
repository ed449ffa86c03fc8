"""The synthetic test checkpoint as one .safetensors file, cached outside the repository, and the
models loaded from it once per test session.

Keyed by the sources that shape it (pdfgc_core/networks/*.py, pdfgc_core/synthetic.py), so it
is rebuilt (about 30 s) only when those change. The frames it gives are noise, not faces."""

from __future__ import annotations

import fcntl
import functools
import hashlib
from pathlib import Path

from testenv import REPO, cache_dir

NAME = "pdfgc-synthetic.safetensors"
SEED = 0


def synthetic_checkpoint() -> Path:
    """Path of the cached synthetic checkpoint (seed 0), made if missing."""
    from pdfgc_core import checkpoints, synthetic

    h = hashlib.sha256()
    for p in sorted((REPO / "pdfgc_core" / "networks").glob("*.py")) + [REPO / "pdfgc_core" / "synthetic.py"]:
        h.update(p.name.encode() + p.read_bytes())
    out = cache_dir() / "synthetic" / f"{h.hexdigest()[:16]}-seed{SEED}" / NAME
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.is_file():
            checkpoints.save_safetensors(synthetic.synthetic_models(SEED), out)
    return out


@functools.cache
def synthetic_models():
    """``load_models(synthetic_checkpoint())``, once per process: the same weights as
    ``pdfgc_core.synthetic.synthetic_models(0)`` (``synthetic`` True), loaded in about a second
    instead of built in about 30. Shared by every test: do not modify the networks."""
    from pdfgc_core.checkpoints import load_models

    return load_models(synthetic_checkpoint())
