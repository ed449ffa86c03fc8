"""Batches: many render / dub jobs from one JSON Lines manifest (``python -m pdfgc_core batch``).

:mod:`.manifest` reads and checks the manifest (every bad line reported before anything renders),
:mod:`.runner` runs it in this process (idempotent, resumable, shardable, with a results file and
a progress line), :mod:`.ray_runner` on a Ray cluster (imports Ray only when used). README:
"Batch rendering"."""

from .manifest import INPUT_FIELDS, Job, Manifest, ManifestError, batch_level_fields, read_manifest
from .runner import JobRunner, WorkerOptions, results_name, run_batch

__all__ = [
    "INPUT_FIELDS",
    "Job",
    "JobRunner",
    "Manifest",
    "ManifestError",
    "WorkerOptions",
    "batch_level_fields",
    "read_manifest",
    "results_name",
    "run_batch",
]
