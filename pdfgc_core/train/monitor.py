"""What a person watches during training: progress lines with ETA, ``metrics.csv``, TensorBoard.

Only the main process (rank 0) writes. Every ``log_every`` steps the metrics accumulated since the
last line (averaged over those steps and over all processes) become one progress line on stderr,
one CSV row and one TensorBoard point per metric. ``metrics.csv`` is always written; TensorBoard
event files go to ``RUN/tb`` when the ``tensorboard`` package is installed
(``pip install tensorboard``; ``tensorboard --logdir RUN/tb`` shows them).
"""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path

import torch

from ..errors import InputError
from . import dist

CSV_NAME = "metrics.csv"
TB_DIR = "tb"


def tensorboard_writer(log_dir: Path, mode: str):
    """A ``SummaryWriter`` for ``mode`` "on" / "auto" (None for "off", or "auto" without the package)."""
    if mode == "off":
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if mode == "on":
            raise InputError("run.tensorboard = 'on' needs the tensorboard package: pip install tensorboard") from None
        return None
    return SummaryWriter(log_dir=str(log_dir))


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--:--"
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Monitor:
    """``update(step, metrics)`` after every step (all processes call it; it reduces across them
    at logging steps). ``step`` counts finished steps (1 after the first)."""

    def __init__(self, run_dir, stage: str, total: int, start: int, log_every: int, tensorboard: str, main: bool):
        self.stage, self.total, self.start, self.every, self.main = stage, total, start, log_every, main
        self.sums: dict[str, float] = {}
        self.count = 0
        self.t0 = self.t_last = time.perf_counter()
        self.step_last = start
        self.csv_path = Path(run_dir) / CSV_NAME
        self.fields: list[str] | None = None
        self.tb = None
        if main:
            self._trim_csv(start)
            self.tb = tensorboard_writer(Path(run_dir) / TB_DIR, tensorboard)

    def _trim_csv(self, start: int) -> None:
        """Drops rows after ``start`` (written by a run that was interrupted before its next checkpoint)."""
        if not self.csv_path.is_file():
            return
        with open(self.csv_path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        keep = [r for r in rows if int(float(r["step"])) <= start]
        if rows:
            self.fields = list(rows[0].keys())
        with open(self.csv_path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=self.fields or ["step"])
            w.writeheader()
            w.writerows(keep)

    def update(self, step: int, metrics: dict[str, float]) -> dict | None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1
        if step % self.every and step != self.total:
            return None
        keys = sorted(self.sums)
        packed = dist.sum_across(torch.tensor([self.sums[k] for k in keys] + [float(self.count)], dtype=torch.float64))
        means = {k: float(packed[i] / packed[-1]) for i, k in enumerate(keys)}
        self.sums, self.count = {}, 0
        now = time.perf_counter()
        rate = (step - self.step_last) / max(now - self.t_last, 1e-9)
        overall = (step - self.start) / max(now - self.t0, 1e-9)
        self.t_last, self.step_last = now, step
        row = {"step": step, **means, "steps_per_s": rate, "elapsed_s": now - self.t0}
        if torch.cuda.is_available():
            row["cuda_max_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
        if self.main:
            self._write(row)
            eta = (self.total - step) / overall if overall > 0 else float("inf")
            shown = " ".join(f"{k} {v:.4g}" for k, v in means.items())
            print(
                f"[train {self.stage}] step {step}/{self.total} ({100 * step / self.total:.1f}%) {shown} | "
                f"{rate:.2f} steps/s, ETA {_clock(eta)}",
                file=sys.stderr,
                flush=True,
            )
        return row

    def _write(self, row: dict) -> None:
        if self.fields is None or any(k not in self.fields for k in row):
            old = []
            if self.csv_path.is_file() and self.fields is not None:
                with open(self.csv_path, newline="", encoding="utf-8") as f:
                    old = list(csv.DictReader(f))
            self.fields = list(dict.fromkeys([*(self.fields or []), *row.keys()]))
            with open(self.csv_path, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=self.fields)
                w.writeheader()
                w.writerows(old)
        with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(f"{self.stage}/{k}", v, row["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def read_metrics(run_dir) -> list[dict]:
    """The rows of a run's ``metrics.csv`` as dicts of floats."""
    with open(Path(run_dir) / CSV_NAME, newline="", encoding="utf-8") as f:
        return [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]
