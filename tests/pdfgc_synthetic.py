"""The synthetic test checkpoint as one .safetensors file, cached outside the repository.

Keyed by the sources that shape it (pdfgc_core/networks/*.py, pdfgc_core/synthetic.py), so it
is rebuilt (about 30 s) only when those change. The frames it gives are noise, not faces."""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAME = "pdfgc-synthetic.safetensors"
SEED = 0


def _cache_dir() -> Path:
    env = os.environ.get("PDFGC_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "pdfgc"


def synthetic_checkpoint() -> Path:
    """Path of the cached synthetic checkpoint (seed 0), made if missing."""
    from pdfgc_core import checkpoints, synthetic

    h = hashlib.sha256()
    for p in sorted((REPO / "pdfgc_core" / "networks").glob("*.py")) + [REPO / "pdfgc_core" / "synthetic.py"]:
        h.update(p.name.encode() + p.read_bytes())
    out = _cache_dir() / "synthetic" / f"{h.hexdigest()[:16]}-seed{SEED}" / NAME
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.is_file():
            checkpoints.save_safetensors(synthetic.synthetic_models(SEED), out)
    return out
