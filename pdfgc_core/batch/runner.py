"""Running a batch manifest: here in one process, or on Ray (:mod:`.ray_runner`), with the same
results file and progress line.

* **Idempotent.** A job is finished when its mp4 exists: every output is written atomically
  (:mod:`pdfgc_core.media.atomic`), so it appears only when complete. A run skips finished jobs,
  so running the same command again after a crash, a kill or Ctrl-C goes on where it stopped.
  Before the jobs start, temporary files that a killed run left beside their outputs are removed
  (only those of this run's jobs: other shards may be writing into the same folder).
* **Shards.** ``--shard I/N`` takes the jobs I, I+N, I+2N, ... of the manifest (bad lines
  counted, so fixing one moves nothing): N runs with the same manifest and output folder, on any
  machines, render every job exactly once between them.
* **Results.** One JSON line per job and run in ``DIR/results.jsonl`` (``results.shard-I-of-N.jsonl``
  for a shard), written as each job ends: ``id``, ``line``, ``kind``, ``out`` (relative to DIR),
  ``status`` (``done``, ``failed``, ``skipped``: already there, ``invalid``: a bad manifest line
  run with ``--skip-invalid``), ``seconds``, ``frames``, ``error``, ``attempt``, ``worker``
  (host:pid), ``finished`` (UTC). The last line of an id is its state.
* A failing job is recorded and the others go on; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import cli
from ..errors import InputError, PDFGCError
from ..media import leftover_temporaries, remove_files
from .manifest import Job, read_manifest

log = logging.getLogger("pdfgc")

RESULTS = "results.jsonl"
STATUSES = ("done", "failed", "skipped", "invalid")


def results_name(shard: tuple[int, int] | None) -> str:
    """The results file of a run: ``results.jsonl``, or ``results.shard-I-of-N.jsonl`` for a shard
    (shards may run on different machines: each appends to its own file)."""
    return RESULTS if shard is None else f"results.shard-{shard[0]}-of-{shard[1]}.jsonl"


def in_shard(index: int, shard: tuple[int, int] | None) -> bool:
    return shard is None or index % shard[1] == shard[0]


@dataclass(frozen=True)
class WorkerOptions:
    """What a worker needs to load its engine: the batch's ``--checkpoint``, ``--synthetic``,
    ``--device``, ``--precision``, C2PA options, and ``threads`` (torch CPU threads, None = torch's)."""

    checkpoint: str | None = None
    synthetic: bool = False
    device: str | None = None
    precision: str = "auto"
    no_c2pa: bool = False
    c2pa_cert: str | None = None
    c2pa_key: str | None = None
    threads: int | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, **override) -> WorkerOptions:
        names = [f for f in cls.__dataclass_fields__ if f != "threads"]
        kw = {f: getattr(args, f) for f in names}
        kw["threads"] = args.worker_cpus
        kw.update(override)
        return cls(**kw)


class JobRunner:
    """One worker: the networks loaded once, then any number of jobs (:meth:`run`). The local run
    has one; each Ray worker has its own."""

    def __init__(self, options: WorkerOptions):
        import torch

        if options.threads:
            torch.set_num_threads(options.threads)
        self.options = options
        self.identity = cli.c2pa_identity(options)
        models = cli.get_models(options.checkpoint, options.synthetic)
        self.engine = cli.make_engine(models, options.device, options.precision)
        self.synthetic = models.synthetic
        self.where = f"{socket.gethostname()}:{os.getpid()}"
        self.status = cli._StatusLine(quiet=True)

    def run(self, job: Job, attempt: int = 1) -> dict:
        """Render ``job`` unless its output exists; the result record (see the module docs). Errors
        of the job are recorded, not raised; KeyboardInterrupt is raised (the output is left as it
        was). ``attempt`` > 1 (a retry after a lost worker) first removes what the lost one left."""
        t0 = time.perf_counter()
        frames, error = None, None
        if job.out.is_file():
            status = "skipped"
        else:
            if attempt > 1:
                remove_files(leftover_temporaries(job.out.parent).get(job.out.stem, []))
            try:
                tags, sign = cli.provenance_for(self.identity, not job.args.no_watermark)
                fn = cli.render_job if job.kind == "render" else cli.dub_job
                frames = int(fn(job.args, self.engine, self.status, tags, sign))
                status = "done"
            except PDFGCError as e:
                status, error = "failed", str(e)
            except Exception as e:  # one failing job never stops the others
                status, error = "failed", f"internal error: {type(e).__name__}: {e}"
                log.info("job %s:\n%s", job.id, traceback.format_exc())
            finally:
                self.status.end()
        return record(job, status, time.perf_counter() - t0, frames, error, attempt, self.where)


def record(job: Job, status: str, seconds=0.0, frames=None, error=None, attempt=1, worker=None) -> dict:
    """A results-file record (see the module docs)."""
    return {
        "id": job.id,
        "line": job.line,
        "kind": job.kind,
        "out": job.rel_out,
        "status": status,
        "seconds": round(float(seconds), 3),
        "frames": frames,
        "error": error,
        "attempt": attempt,
        "worker": worker,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def invalid_record(line: int, job_id: str | None, error: str) -> dict:
    """The results-file record of a bad manifest line (run with ``--skip-invalid``)."""
    return {
        "id": job_id,
        "line": line,
        "kind": None,
        "out": None,
        "status": "invalid",
        "seconds": 0.0,
        "frames": None,
        "error": error,
        "attempt": 0,
        "worker": None,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


class Results:
    """The results file (appended, one line per job, flushed and synced as each job ends) and the
    progress line over the jobs, with throughput and ETA."""

    def __init__(self, path: Path, status, total: int):
        self.path, self.status, self.total = path, status, total
        self.counts = dict.fromkeys(STATUSES, 0)
        self.ran = 0
        self.t0 = time.perf_counter()
        try:
            self._f = open(path, "a", encoding="utf-8")
        except OSError as e:
            raise InputError(f"cannot write the results file {path}: {e.strerror or e}") from None

    def start_clock(self) -> None:
        """The ETA counts from here (after the networks are loaded)."""
        self.t0 = time.perf_counter()

    def add(self, rec: dict) -> None:
        self._f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._f.flush()
        try:
            os.fsync(self._f.fileno())
        except OSError:
            pass
        self.counts[rec["status"]] += 1
        if rec["status"] in ("done", "failed"):
            self.ran += 1
        if rec["status"] in ("failed", "invalid"):
            self.status.note(f"[pdfgc] job {rec['id'] or '?'} (line {rec['line']}) {rec['status']}: {rec['error']}")
        self.show()

    @property
    def finished(self) -> int:
        return sum(self.counts.values())

    def rate(self) -> float:
        """Jobs rendered (done or failed) per minute since :meth:`start_clock`."""
        el = time.perf_counter() - self.t0
        return self.ran / el * 60 if el > 0 and self.ran else 0.0

    def show(self) -> None:
        c = self.counts
        text = f"[pdfgc] batch: {self.finished}/{self.total} jobs ({c['done']} done, {c['failed']} failed"
        text += f", {c['skipped']} already there" if c["skipped"] else ""
        text += ")"
        left = self.total - self.finished
        if self.ran and left:
            text += f", {self.rate():.1f} jobs/min, ETA {_duration(left / self.rate() * 60)}"
        self.status.write(text)

    def close(self) -> None:
        self.status.end()
        self._f.close()


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s} s" if s < 120 else f"{s // 60} min" if s < 7200 else f"{s / 3600:.1f} h"


def clean_leftovers(jobs: list[Job]) -> int:
    """Remove the temporary files that killed runs left beside these jobs' outputs (one listing of
    each output folder). Returns how many were removed."""
    by_folder: dict[Path, list[Job]] = {}
    for j in jobs:
        by_folder.setdefault(j.out.parent, []).append(j)
    n = 0
    for folder, js in by_folder.items():
        temps = leftover_temporaries(folder)
        for j in js:
            stale = temps.get(j.out.stem, [])
            remove_files(stale)
            n += len(stale)
    return n


def run_batch(args: argparse.Namespace, status) -> int:
    """The ``batch`` command: 0 when every job of this run is done (now or before), 1 when one
    failed or was invalid; PDFGCError (exit status 2) for a bad manifest, before anything renders."""
    out_dir = Path(args.out).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {args.out}: is a file; give the output folder of the batch")
    if not args.ray:
        for name in ("workers", "worker_gpus"):
            if getattr(args, name) is not None:
                raise InputError(f"--{name.replace('_', '-')} is for Ray runs; add --ray auto|local|ADDRESS")
    m = read_manifest(args.manifest, out_dir)
    if not args.skip_invalid or not m.jobs:
        m.check()
    jobs = [j for j in m.jobs if in_shard(j.index, args.shard)]
    invalid = [b for b in m.invalid if in_shard(b[0], args.shard)]
    todo = [j for j in jobs if not j.out.is_file()]
    where = "" if args.shard is None else f" (shard {args.shard[0]}/{args.shard[1]})"
    status.note(
        f"[pdfgc] {args.manifest}: {len(jobs)} job(s){where}, {len(jobs) - len(todo)} already there, "
        f"{len(todo)} to render" + (f"; {len(invalid)} bad line(s) skipped" if invalid else "")
    )
    if args.check:
        for j in jobs:
            print(f"{j.line}\t{j.id}\t{j.kind}\t{j.rel_out}\t{'done' if j.out.is_file() else 'to do'}")
        return 0
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--out {args.out}: cannot create the folder: {e.strerror or e}") from None
    results = Results(out_dir / results_name(args.shard), status, len(jobs) + len(invalid))
    try:
        for _, line, job_id, error in invalid:
            results.add(invalid_record(line, job_id, error))
        waiting = {j.index for j in todo}
        for j in jobs:
            if j.index not in waiting:
                results.add(record(j, "skipped"))
        removed = clean_leftovers(todo)
        if removed:
            log.info("removed %d temporary file(s) left by an earlier, killed run", removed)
        if todo:
            if args.ray:
                from .ray_runner import run_on_ray

                run_on_ray(todo, args, results)
            else:
                _run_local(todo, args, results)
    except KeyboardInterrupt:
        results.close()
        status.note(
            f"[pdfgc] batch stopped: {results.finished} of {results.total} jobs finished; run the same command "
            f"again to go on"
        )
        raise
    finally:
        results.close()
    c = results.counts
    status.note(
        f"[pdfgc] batch finished: {c['done']} done, {c['skipped']} already there, {c['failed']} failed"
        + (f", {c['invalid']} invalid" if c["invalid"] else "")
        + (f"; {results.rate():.1f} jobs/min" if results.ran else "")
        + f"; results in {results.path}"
    )
    return 1 if c["failed"] or c["invalid"] else 0


def _run_local(todo: list[Job], args, results: Results) -> None:
    results.status.update("loading the networks")
    runner = JobRunner(WorkerOptions.from_args(args))
    results.start_clock()
    results.show()
    for job in todo:
        results.add(runner.run(job))
    if runner.synthetic:
        results.status.note("[pdfgc] (SYNTHETIC weights: the outputs are noise, not faces)")
