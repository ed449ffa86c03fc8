"""Jobs per minute of ``python -m pdfgc_core batch``: one local process against Ray workers on
this machine, on the same manifest of short clips.

Each run is a real ``batch`` process on a fresh output folder (synthetic weights from
tests/pdfgc_synthetic.py unless --checkpoint is given; speed does not depend on the values).
Reported per run: wall time from start to exit, the jobs/min the batch measured after its
networks were loaded (what a long manifest approaches), the mean seconds per job, and the load
average before and after. The outputs of both runs are compared byte for byte.

    python benchmarks/bench_batch.py                      # 8 jobs of 0.5 s, local vs Ray with 2 workers
    python benchmarks/bench_batch.py --jobs 16 --seconds 1 --workers 4
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def make_inputs(folder: Path, jobs: int, seconds: float) -> Path:
    """A manifest of ``jobs`` render jobs (bundled portrait, ``seconds`` of the bundled speech at
    16 kHz, mouth strengths varied so the clips differ)."""
    import soundfile as sf

    from pdfgc_core.audio import SAMPLE_RATE, load_audio, resample

    wave, sr = load_audio(REPO / "samples" / "speech.mp3")
    sf.write(folder / "speech.wav", resample(wave[:, : int(seconds * sr)], sr, SAMPLE_RATE, "fast").T, SAMPLE_RATE)
    lines = [
        {
            "kind": "render",
            "id": f"clip{i:03d}",
            "appearance": str(REPO / "samples" / "anne.png"),
            "audio": "speech.wav",
            "mouth_strength": round(1 - i / (2 * jobs), 4),
        }
        for i in range(jobs)
    ]
    path = folder / "jobs.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def run(manifest: Path, out: Path, extra: list[str], checkpoint: str) -> dict:
    cmd = [sys.executable, "-m", "pdfgc_core", "batch", str(manifest), "--out", str(out)]
    cmd += ["--checkpoint", checkpoint, "--synthetic", "--no-c2pa", "--device", "cpu", *extra]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"batch failed ({r.returncode}):\n{r.stderr[-3000:]}")
    recs = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    rate = re.findall(r"([\d.]+) jobs/min; results in", r.stderr)
    return {
        "wall": wall,
        "jobs": len(recs),
        "frames": sum(x["frames"] or 0 for x in recs),
        "per_min_wall": len(recs) / wall * 60,
        "per_min_steady": float(rate[-1]) if rate else float("nan"),
        "job_seconds": sum(x["seconds"] for x in recs) / len(recs),
        "workers": len({x["worker"] for x in recs}),
        "load": (load0, os.getloadavg()[0]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=0.5, help="speech per clip (0.5 s: 10 frames)")
    ap.add_argument("--workers", type=int, default=2, help="Ray workers (1 CPU and 1 torch thread each)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the local run")
    ap.add_argument("--checkpoint", default=None, help="default: the cached synthetic checkpoint")
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    if args.checkpoint is None:
        from pdfgc_synthetic import synthetic_checkpoint

        args.checkpoint = str(synthetic_checkpoint())
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="pdfgc-bench-batch-") as tmp:
        tmp = Path(tmp)
        manifest = make_inputs(tmp, args.jobs, args.seconds)
        runs = {
            f"local, 1 process, {args.threads} threads": run(
                manifest, tmp / "local", ["--worker-cpus", str(args.threads)], args.checkpoint
            )
        }
        if not args.skip_ray:
            key = f"Ray, {args.workers} workers x 1 thread"
            extra = ["--ray", "local", "--workers", str(args.workers), "--worker-cpus", "1"]
            runs[key] = run(manifest, tmp / "ray", extra, args.checkpoint)
        print(
            f"\n{args.jobs} jobs of {args.seconds:g} s speech ({runs[next(iter(runs))]['frames'] // args.jobs} frames)"
        )
        print(f"{'run':34} {'wall s':>7} {'jobs/min':>9} {'steady':>7} {'s/job':>6} {'workers':>7}  load before/after")
        for name, r in runs.items():
            print(
                f"{name:34} {r['wall']:7.1f} {r['per_min_wall']:9.2f} {r['per_min_steady']:7.2f} "
                f"{r['job_seconds']:6.1f} {r['workers']:7d}  {r['load'][0]:.2f} / {r['load'][1]:.2f}"
            )
        if len(runs) == 2:
            a, b = tmp / "local", tmp / "ray"
            same = [(a / p.name).read_bytes() == p.read_bytes() for p in sorted(b.glob("*.mp4"))]
            print(
                f"outputs identical to the local run: {sum(same)}/{len(same)} (torch threads differ: "
                f"{args.threads} vs 1, so frames may differ in the last bit)"
            )


if __name__ == "__main__":
    main()
