"""This package against the OFFICIAL PD-FGC code on CPU: both run alternately, each in its own
fresh process, on the same synthetic weights and inputs, and the per-stage times are compared.

    python benchmarks/bench_official.py                 # 50 frames, 2 threads, 2 rounds (official, ours, ...)
    python benchmarks/bench_official.py --frames 16 --rounds 1     # a short look
    python benchmarks/bench_official.py --skip-official            # ours only

The official side is `../shared/bench/official-cpu/run_official.py` (the official inference code,
patched only to run on CPU, in its own venv: see that folder's README). This script only starts it
and reads its `RESULT` line and `frames.npy`; no official code is imported or copied here. Without
`../shared` (or its venv) the official side is skipped with a message, and ours still runs: on the
official sample inputs when they are there, else on the bundled ones (`samples/`: the first 4 s of
the same speech, the first frames of the same drivers; at most 97 frames) with the cached synthetic
checkpoint of the tests, and without the frame comparisons (they need the official side or the
parity fixture).

Inputs (both sides): the official sample case 1 (`--all`): appearance `apps/anne.png`, speech
`audios/audio_longer.mp3` normalised over the whole file and cut to the samples of `--frames`
frames, pose `681600002`, expression `vox2_id01228_00309`, eye `id01333_00040` from
`../shared/samples/pdfgc-official/data`; weights: `fill_weights.py --seed 1` (the parity set A),
made once under ~/.cache/pdfgc-bench unless `--weights` is given.

Our side is `pipeline.plan` + `pipeline.frames_u8`, as `python -m pdfgc_core render` runs them
(fast generator, batch 8, fp32), timed over the official span: from the input files on disk to
uint8 frames in memory, after imports and model loading. Stages (wall seconds; CPU seconds are
recorded too): the time inside each network's forward (generator, motion encoder, audio network,
appearance encoder), the audio front end (decode, resample, mel; ours includes cutting the mel
windows), and preprocessing (official `get_data`: the audio front end plus decoding and cropping
the driver images and the mel windows; ours: everything in `plan` outside the networks, which
includes the audio front end, reading and cropping the driver images and assembling the motion).
Per-frame figures divide by the number of output frames; the motion encoder covers whatever
images each side encodes (official: 3 per frame; ours: each distinct driver image once).

Our uint8 frames carry the invisible watermark, as the CLI writes them (it costs ~2 ms a frame,
benchmarks/README.md), so they differ from the official ones by a few levels; `--no-watermark`
turns it off to compare the uint8 frames as well.

Printed: every run as it finishes (with the load average), then per stage the official and our
mean over the rounds with their range, the ratio official / ours, the peak memory (VmHWM) of each
process, the frames compared (ours vs official and vs the parity fixture), and the load average
over the whole run. On a shared machine the ratio is the figure to trust.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PDFGC_SHARED_DIR", REPO.parent / "shared"))
OFFICIAL_DIR = SHARED / "bench" / "official-cpu"
OFFICIAL_DRIVER = OFFICIAL_DIR / "run_official.py"
DATA = SHARED / "samples" / "pdfgc-official" / "data"
FIXTURE = SHARED / "parity" / "fixture_A_all.npz"
FILL_WEIGHTS = SHARED / "parity" / "fill_weights.py"
BENCH_CACHE = Path(os.environ.get("PDFGC_BENCH_CACHE", Path.home() / ".cache" / "pdfgc-bench"))
OFFICIAL_PYTHON = BENCH_CACHE / "venv-official" / "bin" / "python"
WEIGHT_FILES = ("appearance_model.pth", "motion_model.pth", "audio_model.pth", "generator_model.pth")
# official sample case 1, relative to DATA
CASE = {
    "appearance": "apps/anne.png",
    "audio": "audios/audio_longer.mp3",
    "pose": "motions/pose/681600002",
    "expression": "motions/exp/vox2_id01228_00309",
    "eye": "motions/eye/id01333_00040/images",
}
# the same case from the bundled samples (samples/README.md), relative to BUNDLED
BUNDLED = REPO / "samples"
BUNDLED_CASE = {
    "appearance": "anne.png",
    "audio": "speech.mp3",
    "pose": "drivers/pose",
    "expression": "drivers/expression",
    "eye": "drivers/eye",
}
BUNDLED_MAX_FRAMES = 97  # the bundled speech is 4 s: samples_for(97) / 16000 = 3.98 s
SAVED_FRAMES = 12
TOL = 1e-4
# (label, per frame?, key in the official result, key in ours)
ROWS = (
    ("end to end (after model load)", True, "inference_s", "inference_s"),
    ("generator", True, "generator", "generator"),
    ("motion encoder", True, "motion", "motion"),
    ("audio network", True, "audio", "audio"),
    ("appearance encoder, once", False, "appearance", "appearance"),
    ("audio front end, whole clip", False, "audio_frontend_s", "audio_frontend_s"),
    ("preprocessing, whole clip", False, "preproc_s", "preproc_s"),
)


def samples_for(frames: int) -> int:
    """16 kHz samples that give exactly ``frames`` output frames at 25 fps (33600 for 50): the mel
    has ceil(N / 160) + 7 frames and the windows number (mel frames) // 4 - 4."""
    return 640 * frames + 1600


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return [float("nan")] * 3


def status_mib(key: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# ------------------------------------------------------------------------------- our side (worker)


def run_ours(a) -> dict:
    """One timed render in this (fresh) process; writes result.json and frames.npy into a.out."""
    t_start = time.perf_counter()
    load_start = loadavg()
    sys.path.insert(0, str(REPO))
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    from pdfgc_core import checkpoints, pipeline
    from pdfgc_core.engine import Engine

    t_imported = time.perf_counter()
    models = checkpoints.load_models(a.weights)
    engine = Engine(models, device="cpu", precision="fp32", streams=a.streams)
    t_loaded = time.perf_counter()
    rss_after_load = status_mib("VmRSS")

    wall = {k: 0.0 for k in ("appearance", "motion", "audio", "generator", "audio_frontend")}
    cpu = dict(wall)
    calls = {k: 0 for k in wall}
    images = {"motion": 0}
    saved = []
    # Our networks may run in several threads at once (Engine.cpu_streams): a stage's time is the
    # union of its calls' intervals, and its CPU time the process CPU time over that union.
    lock = threading.Lock()
    active = {k: [0, 0.0, 0.0] for k in wall}  # running calls, union start wall, union start CPU

    def timed(name, fn):
        def wrapper(*args, **kw):
            if name == "motion":
                images["motion"] += int(args[0].shape[0])
            with lock:
                state = active[name]
                if state[0] == 0:
                    state[1], state[2] = time.perf_counter(), time.process_time()
                state[0] += 1
                calls[name] += 1
            try:
                return fn(*args, **kw)
            finally:
                with lock:
                    state[0] -= 1
                    if state[0] == 0:
                        wall[name] += time.perf_counter() - state[1]
                        cpu[name] += time.process_time() - state[2]

        return wrapper

    def keep_frames(generate):
        def wrapper(*args, **kw):
            for chunk in generate(*args, **kw):
                if sum(x.shape[0] for x in saved) < SAVED_FRAMES:
                    saved.append(chunk.detach().float().cpu().clone())
                yield chunk

        return wrapper

    for name in ("appearance", "motion", "audio", "generator"):
        net = getattr(models, name)
        net.forward = timed(name, net.forward)
    engine.generate = keep_frames(engine.generate)
    pipeline.mouth_windows = timed("audio_frontend", pipeline.mouth_windows)

    data = Path(a.data)
    case = BUNDLED_CASE if a.bundled else CASE
    settings = pipeline.RenderSettings(max_seconds=a.samples / 16000.0)
    drivers = {h: pipeline.Driver(data / case[h]) for h in ("pose", "expression", "eye")}

    load_before = loadavg()
    c0, t0 = time.process_time(), time.perf_counter()
    plan = pipeline.plan(engine, data / case["appearance"], data / case["audio"], drivers, settings)
    t_plan = time.perf_counter() - t0
    nets_in_plan = wall["appearance"] + wall["motion"] + wall["audio"]
    frames = [u8 for u8 in pipeline.frames_u8(engine, plan, watermark=not a.no_watermark)]
    t_inf = time.perf_counter() - t0
    cpu_inf = time.process_time() - c0
    load_after = loadavg()
    u8 = np.concatenate(frames)
    n = int(u8.shape[0])

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    first = torch.cat(saved)[:SAVED_FRAMES].numpy() if saved else np.zeros((0, 3, 224, 224), np.float32)
    np.save(out / "frames.npy", first)
    np.save(out / "frames_u8.npy", np.ascontiguousarray(u8[:SAVED_FRAMES]))
    nets = sum(wall[k] for k in ("appearance", "motion", "audio", "generator"))
    res = {
        "impl": "ours",
        "frames": n,
        "samples": a.samples,
        "threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
        "import_s": t_imported - t_start,
        "load_s": t_loaded - t_imported,
        "inference_s": t_inf,
        "inference_cpu_s": cpu_inf,
        "plan_s": t_plan,
        "stage_s": wall,
        "stage_cpu_s": cpu,
        "calls": calls,
        "audio_frontend_s": wall["audio_frontend"],
        "preproc_s": t_plan - nets_in_plan,
        "post_s": t_inf - t_plan - wall["generator"],
        "other_s": t_inf - nets - (t_plan - nets_in_plan),
        "motion_images": images["motion"],
        "watermark": not a.no_watermark,
        "rss_after_load_mib": rss_after_load,
        "peak_rss_mib": status_mib("VmHWM"),
        "load_start": load_start,
        "load_before_inference": load_before,
        "load_after_inference": load_after,
        "process_wall_s": time.perf_counter() - t_start,
    }
    (out / "result.json").write_text(json.dumps(res, indent=1))
    print("RESULT", json.dumps(res), flush=True)
    return res


# ----------------------------------------------------------------------------- orchestrator


def official_available(a) -> str | None:
    """None when the official side can run, else why not (with what to do)."""
    if a.skip_official:
        return "skipped (--skip-official)"
    if not OFFICIAL_DRIVER.is_file():
        return (
            f"skipped: {OFFICIAL_DRIVER} not found (the shared folder ../shared is absent; "
            "set PDFGC_SHARED_DIR to its location to compare with the official code)"
        )
    if not Path(a.official_python).is_file():
        return (
            f"skipped: no official venv at {a.official_python}; build it once with "
            f"`bash {OFFICIAL_DIR / 'setup.sh'} {BENCH_CACHE / 'venv-official'}` (a few minutes), "
            "or pass --official-python"
        )
    return None


def ensure_weights(a) -> Path:
    if a.weights:
        w = Path(a.weights)
        if w.is_file():  # a .safetensors / checkpoints.tar: only our side can read it
            return w
    else:
        w = BENCH_CACHE / "weights-seed1"
        if not all((w / f).is_file() for f in WEIGHT_FILES):
            if not FILL_WEIGHTS.is_file():
                if a.bundled:  # no shared folder at all: ours alone, on the tests' synthetic checkpoint
                    sys.path[:0] = [str(REPO), str(REPO / "tests")]
                    from pdfgc_synthetic import synthetic_checkpoint

                    return synthetic_checkpoint()
                sys.exit(f"bench_official: no weights at {w} and no {FILL_WEIGHTS} to make them; pass --weights DIR")
            print(f"making the synthetic seed-1 weights in {w} (once, ~585 MB, ~15 s) ...", flush=True)
            w.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, str(FILL_WEIGHTS), "--seed", "1", "--out", str(w)], check=True)
    missing = [f for f in WEIGHT_FILES if not (w / f).is_file()]
    if missing:
        sys.exit(f"bench_official: {w} lacks {', '.join(missing)}; give a folder with the four official .pth files")
    return w


def run_child(cmd: list[str], label: str) -> dict | None:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        print(f"  {label}: FAILED (exit {proc.returncode}) after {time.perf_counter() - t0:.0f} s\n{tail}", flush=True)
        return None
    return json.loads(lines[-1][len("RESULT ") :])


def per_frame(res: dict, key: str, is_per_frame: bool) -> float:
    if key in ("appearance", "motion", "audio", "generator"):
        v = res["stage_s"][key]
    else:
        v = res[key]
    return v / res["frames"] if is_per_frame else v


def fmt_stats(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    mean = sum(values) / len(values)
    s = f"{mean:.{digits}f}"
    if len(values) > 1:
        s += f" [{min(values):.{digits}f}-{max(values):.{digits}f}]"
    return s


def frames_report(ours_dir: Path, official_dir: Path | None, watermark: bool = False) -> list[str]:
    import numpy as np

    lines = []
    ours = np.load(ours_dir / "frames.npy").astype(np.float64)
    ours_u8 = np.load(ours_dir / "frames_u8.npy")
    refs = []
    if official_dir is not None and (official_dir / "frames.npy").is_file():
        refs.append(("official", np.load(official_dir / "frames.npy").astype(np.float64)))
    if FIXTURE.is_file():
        refs.append(("parity fixture A (official, seed 1)", np.load(FIXTURE)["gen_images"].astype(np.float64)))
    for name, ref in refs:
        k = min(ref.shape[0], ours.shape[0])
        d = np.abs(ours[:k] - ref[:k])
        ok = "OK" if d.max() <= TOL else "OVER"
        lines.append(
            f"  frames 0..{k - 1}, ours vs {name}: max abs {d.max():.2e}, mean abs {d.mean():.2e} "
            f"(tolerance {TOL:g}: {ok})"
        )
    if official_dir is not None and (official_dir / "frames_u8.npy").is_file():
        ref_u8 = np.load(official_dir / "frames_u8.npy")
        k = min(ref_u8.shape[0], ours_u8.shape[0])
        diff = np.abs(ours_u8[:k].astype(np.int16) - ref_u8[:k].astype(np.int16))
        note = (
            " (ours carry the invisible watermark, as the CLI writes them; --no-watermark compares without it)"
            if watermark
            else ""
        )
        lines.append(
            f"  uint8 frames 0..{k - 1}, ours vs official: {int((diff > 0).sum())} of {diff.size} values differ, "
            f"by at most {int(diff.max())}{note}"
        )
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=50, help="output frames (default 50, as the official driver)")
    ap.add_argument("--rounds", type=int, default=2, help="official+ours pairs, alternating (default 2)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads on both sides (default 2)")
    ap.add_argument("--weights", default=None, help="folder with the four official .pth files (default: seed 1)")
    ap.add_argument("--official-python", default=str(OFFICIAL_PYTHON), help="python of the official venv")
    ap.add_argument("--skip-official", action="store_true", help="run only our side")
    ap.add_argument("--ours-first", action="store_true", help="start each round with ours")
    ap.add_argument("--out", default=None, help="keep the runs' outputs here (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="also write all run results to this file")
    ap.add_argument(
        "--streams", default="auto", type=lambda v: v if v == "auto" else int(v), help="Engine(streams=...) on our side"
    )
    ap.add_argument(
        "--no-watermark",
        action="store_true",
        help="our uint8 frames without the invisible watermark (the official code has none; default: as the CLI)",
    )
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", default=str(DATA), help=argparse.SUPPRESS)
    ap.add_argument("--bundled", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--samples", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.frames < 17 and not a.worker and DATA.is_dir():
        print("note: fewer than 17 frames do not reach frames 0..11 of the fixture; comparing what there is")
    if a.frames < 1 or a.rounds < 1 or a.threads < 1:
        sys.exit("bench_official: --frames, --rounds and --threads must be >= 1")
    a.samples = a.samples or samples_for(a.frames)
    if a.worker:
        run_ours(a)
        return 0

    data = DATA
    skip = official_available(a)
    if not DATA.is_dir():
        data, a.bundled = BUNDLED, True
        print(
            f"note: the official sample inputs ({DATA}) are missing, so the official side cannot run; ours runs on "
            f"the bundled samples ({BUNDLED}). Set PDFGC_SHARED_DIR to the shared folder to compare."
        )
        skip = skip or f"skipped: no official sample inputs at {DATA}"
        if a.frames > BUNDLED_MAX_FRAMES:
            print(f"note: the bundled speech lasts 4 s: {BUNDLED_MAX_FRAMES} frames instead of {a.frames}")
            a.frames = BUNDLED_MAX_FRAMES
            a.samples = samples_for(a.frames)
    weights = ensure_weights(a)
    if Path(weights).is_file() and not skip:
        skip = f"skipped: {weights} is a single checkpoint file; the official code reads the four .pth files"
    out_root = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="bench-official-"))
    out_root.mkdir(parents=True, exist_ok=True)
    t_begin, load_begin = time.perf_counter(), loadavg()
    print(f"bench_official  {time.strftime('%Y-%m-%d %H:%M')}  load average {'/'.join(map(str, load_begin))}")
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    print(f"  cpu: {cpu}, {os.cpu_count()} logical cores; {a.threads} threads each side; {a.frames} frames")
    print(f"  weights: {weights}\n  official: {skip or OFFICIAL_DRIVER}")

    results = {"official": [], "ours": []}
    out_dirs = {"official": None, "ours": None}
    for r in range(1, a.rounds + 1):
        order = ("ours", "official") if a.ours_first else ("official", "ours")
        for side in order:
            if side == "official" and skip:
                continue
            d = out_root / f"{side}-{r}"
            if side == "official":
                cmd = [a.official_python, str(OFFICIAL_DRIVER), "--weights", str(weights), "--out", str(d)]
                cmd += ["--threads", str(a.threads), "--samples", str(a.samples), "--data", str(DATA)]
            else:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--weights", str(weights)]
                cmd += ["--out", str(d), "--threads", str(a.threads), "--samples", str(a.samples)]
                cmd += ["--frames", str(a.frames), "--data", str(data), "--streams", str(a.streams)]
                cmd += ["--no-watermark"] if a.no_watermark else []
                cmd += ["--bundled"] if a.bundled else []
            res = run_child(cmd, f"run {r} {side}")
            if res is None:
                continue
            results[side].append(res)
            out_dirs[side] = d
            pf = res["inference_s"] / res["frames"]
            print(
                f"  run {r} {side:9s} {res['inference_s']:7.1f} s ({pf:.3f} s/frame, {res['frames']} frames), "
                f"CPU {res['inference_cpu_s']:6.1f} s, import {res['import_s']:.1f} s, load {res['load_s']:.1f} s, "
                f"peak RSS {res['peak_rss_mib']:.0f} MiB, load avg {res['load_before_inference'][0]:.1f} -> "
                f"{res['load_after_inference'][0]:.1f}",
                flush=True,
            )
    if not results["ours"]:
        print("our side produced no result")
        return 1

    off, ours = results["official"], results["ours"]
    print(f"\n  {'stage':42s} {'official':21s} {'ours':21s} official / ours")
    for label, is_pf, ko, ku in ROWS:
        unit = "s/frame" if is_pf else "s"
        digits = 4 if is_pf else 2
        vo = [per_frame(x, ko, is_pf) for x in off]
        vu = [per_frame(x, ku, is_pf) for x in ours]
        ratio = f"{(sum(vo) / len(vo)) / (sum(vu) / len(vu)):.2f}x" if vo and sum(vu) > 0 else "-"
        name = f"{label} ({unit})"
        print(f"  {name:42s} {fmt_stats(vo, digits):21s} {fmt_stats(vu, digits):21s} {ratio}")
    cpu_o = [x["inference_cpu_s"] / x["frames"] for x in off]
    cpu_u = [x["inference_cpu_s"] / x["frames"] for x in ours]
    ratio = f"{(sum(cpu_o) / len(cpu_o)) / (sum(cpu_u) / len(cpu_u)):.2f}x" if cpu_o else "-"
    print(f"  {'(end to end, CPU s/frame)':42s} {fmt_stats(cpu_o, 4):21s} {fmt_stats(cpu_u, 4):21s} {ratio}")
    mo = [x["peak_rss_mib"] for x in off]
    mu = [x["peak_rss_mib"] for x in ours]
    ratio = f"{(sum(mo) / len(mo)) / (sum(mu) / len(mu)):.2f}x less" if mo else "-"
    print(f"  {'peak memory, VmHWM (MiB)':42s} {fmt_stats(mo, 0):21s} {fmt_stats(mu, 0):21s} {ratio}")
    print()
    if a.bundled:
        print("  frames not compared: the bundled inputs and weights have no official reference")
    else:
        for line in frames_report(out_dirs["ours"], out_dirs["official"], watermark=not a.no_watermark):
            print(line)
    load_end = loadavg()
    runs = off + ours
    during = [x["load_before_inference"][0] for x in runs] + [x["load_after_inference"][0] for x in runs]
    print(
        f"\n  load average (1 min) during the runs: {min(during):.1f} to {max(during):.1f}; "
        f"1/5/15 min at the start {'/'.join(map(str, load_begin))}, at the end {'/'.join(map(str, load_end))}"
    )
    print(f"  total {time.perf_counter() - t_begin:.0f} s; outputs in {out_root}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
