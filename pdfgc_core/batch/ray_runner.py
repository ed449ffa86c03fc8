"""A batch on a Ray cluster (``--ray``): stateful workers, bounded in-flight work, retries.

Each worker is a Ray actor holding one :class:`~.runner.JobRunner`: the networks are loaded once
per worker, then jobs stream through it. Workers reserve ``--worker-gpus`` GPUs (default one each
when the cluster has GPUs) and ``--worker-cpus`` CPUs (default 1; also their torch threads); by
default there are as many as the cluster's resources allow, and never more than there are jobs.

The driver (this process) keeps exactly one job in flight per worker, so the work queued on the
cluster, and the memory it takes, stays the same however long the manifest is; a worker gets its
next job as soon as it returns one. Results stream back and are appended to the results file as
they arrive. When a worker is lost (its process or node dies, it is killed), its job is started
again on a fresh worker, up to ``--retries`` times; the job's own errors are not retried (they
would fail again: the pipeline is deterministic).

Jobs carry absolute paths: every worker must see the inputs and the output folder at the same
paths as this process (shared storage). Ray is imported only here, only for ``--ray``.
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from pathlib import Path

from ..errors import PDFGCError
from .manifest import Job
from .runner import JobRunner, Results, WorkerOptions, record

log = logging.getLogger("pdfgc")

RAY_HINT = "install the Ray extra: pip install 'pd-fgc[ray]' (or pip install 'ray>=2.9')"
PACK_ROOT = Path(__file__).resolve().parents[2]
MAX_REPLACEMENTS_PER_WORKER = 10
"""A run gives up (PDFGCError) when workers were lost more than this many times per worker."""


def import_ray():
    """The ``ray`` module, or PDFGCError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise PDFGCError(f"--ray needs Ray, which is not installed: {RAY_HINT}") from None
    return ray


class BatchWorker:
    """The actor: a :class:`JobRunner` (networks loaded in the constructor) and its jobs."""

    def __init__(self, options: WorkerOptions):
        self.runner = JobRunner(options)

    def where(self) -> str:
        return self.runner.where

    def run(self, job: Job, attempt: int) -> dict:
        return self.runner.run(job, attempt)


def plan_workers(resources: dict, jobs: int, workers, cpus, gpus) -> tuple[int, float, float]:
    """(workers, CPUs each, GPUs each) from the cluster's total ``resources`` and the options:
    one worker per GPU when there are GPUs, else one per ``cpus`` CPUs; never more than ``jobs``."""
    cpus = float(cpus or 1)
    if gpus is None:
        gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    if workers is None:
        if gpus > 0:
            workers = int(resources.get("GPU", 0) // gpus)
        else:
            workers = int(resources.get("CPU", 0) // cpus)
        if workers < 1:
            raise PDFGCError(
                f"the Ray cluster has {resources.get('CPU', 0):g} CPU(s) and {resources.get('GPU', 0):g} GPU(s): "
                f"not enough for one worker of {cpus:g} CPU(s) and {gpus:g} GPU(s); lower --worker-cpus / "
                f"--worker-gpus or add nodes"
            )
    return max(1, min(int(workers), jobs)), cpus, float(gpus)


def run_on_ray(todo: list[Job], args, results: Results) -> None:
    """Render ``todo`` on the Ray cluster of ``args.ray`` (or the one this process is already
    connected to), appending each result to ``results`` as it comes back."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=args.ray, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise PDFGCError(
                f"--ray {args.ray}: cannot reach a Ray cluster ({str(e).splitlines()[0][:300]}). Start one with "
                f"`ray start --head` (then --ray auto), give its address, or use --ray local."
            ) from None
        started = True
    try:
        _run(ray, todo, args, results)
    finally:
        if started:
            ray.shutdown()


def _run(ray, todo: list[Job], args, results: Results) -> None:
    n, cpus, gpus = plan_workers(ray.cluster_resources(), len(todo), args.workers, args.worker_cpus, args.worker_gpus)
    device = args.device or ("cuda" if gpus > 0 else "cpu")
    options = WorkerOptions.from_args(args, threads=int(math.ceil(cpus)), device=device)
    # the pack as this process sees it (a checkout on shared storage); an installed package otherwise
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(PACK_ROOT), os.environ.get("PYTHONPATH")) if p)}
    actor = ray.remote(BatchWorker).options(
        num_cpus=cpus, num_gpus=gpus, max_restarts=0, max_task_retries=0, runtime_env={"env_vars": env}
    )
    results.status.update(f"starting {n} Ray worker(s) ({cpus:g} CPU, {gpus:g} GPU each) and loading the networks")
    workers = [actor.remote(options) for _ in range(n)]
    try:
        where = ray.get([w.where.remote() for w in workers])
    except ray.exceptions.RayError as e:
        raise PDFGCError(f"the Ray workers could not start: {_cause(e)}") from None
    log.info("Ray workers: %s", ", ".join(where))
    results.start_clock()
    results.show()

    queue = deque((job, 1) for job in todo)
    idle = list(range(n))
    pending = {}  # ObjectRef -> (worker slot, job, attempt)
    lost = 0
    try:
        while queue or pending:
            while queue and idle:
                slot = idle.pop()
                job, attempt = queue.popleft()
                pending[workers[slot].run.remote(job, attempt)] = (slot, job, attempt)
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            slot, job, attempt = pending.pop(ref)
            try:
                rec = ray.get(ref)
            except ray.exceptions.RayTaskError as e:  # an error the runner did not record (should not happen)
                rec = record(job, "failed", error=f"internal error: {_cause(e)}", attempt=attempt)
            except ray.exceptions.RayError as e:  # the worker was lost: a fresh one takes its place
                lost += 1
                if lost > MAX_REPLACEMENTS_PER_WORKER * n:
                    raise PDFGCError(f"Ray workers were lost {lost} times; giving up (last: {_cause(e)})") from None
                workers[slot] = actor.remote(options)
                idle.append(slot)
                if attempt <= args.retries:
                    results.status.note(
                        f"[pdfgc] job {job.id} (line {job.line}): its Ray worker was lost ({type(e).__name__}); "
                        f"starting it again (attempt {attempt + 1})"
                    )
                    queue.appendleft((job, attempt + 1))
                else:
                    results.add(
                        record(
                            job,
                            "failed",
                            error=f"its Ray worker was lost {attempt} times ({_cause(e)})",
                            attempt=attempt,
                        )
                    )
                continue
            idle.append(slot)
            results.add(rec)
    finally:
        for w in workers:
            ray.kill(w)


def _cause(e) -> str:
    return str(e).strip().splitlines()[-1][:500] if str(e).strip() else type(e).__name__
