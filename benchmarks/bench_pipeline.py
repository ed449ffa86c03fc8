"""End to end: an official-like reference pipeline vs the fast path (what the CLI runs), and the
peak memory of streamed CLI renders of a 10-second and a 2-minute clip. One run, same inputs.

    python benchmarks/bench_pipeline.py                       # CPU, fp32, 2 threads, 32 frames, memory runs
    python benchmarks/bench_pipeline.py --frames 64 --repeats 2
    python benchmarks/bench_pipeline.py --skip-memory         # speed only
    python benchmarks/bench_pipeline.py --memory-only --full  # memory runs generate every frame (slow on CPU)
    python benchmarks/bench_pipeline.py --device cuda --precision fp32 bf16 fp16 --batch 8 32 64 auto \\
        --frames 1000                                         # on a GPU: precision / batch sweep
    python benchmarks/bench_pipeline.py --checkpoint PATH     # real weights (default: synthetic)

Inputs: samples/anne.png, samples/speech.mp3 (looped into a WAV when more frames are asked for
than it holds), samples/drivers/{pose,eye,expression}. Weights: the cached synthetic checkpoint
(tests/pdfgc_synthetic.py; speed does not depend on the values) unless --checkpoint is given.

reference path: the official inference loop rebuilt from our modules: every driver frame of every
    folder decoded and held; per batch of 8 output frames the motion encoder runs all its heads
    on cat(8 pose, 8 expression, 8 eye) images (channels_last); the audio net in batches of 8;
    the generator's official grouped-convolution math (impl="reference") in batches of 8.
fast path: Engine + pipeline.plan + pipeline.frames_u8, exactly as `python -m pdfgc_core render`
    runs them: fast generator, only the requested heads, each distinct driver image encoded once,
    inference_mode, streamed.

Per stage: the time inside each network (forward hooks) and the rest (decoding, cropping, audio
features, post-processing, uint8 conversion). Both paths share the weights and run alternately
(--repeats); run 1 is a warm-up, the fastest later run of each is reported. On a shared machine the ratio is the figure to
trust; the load average is printed. The frames of the two paths are compared (max abs <= 1e-4).

Memory: `python -m pdfgc_core render` in fresh subprocesses for a 10 s and a 2 min clip (speech
looped, drivers looped); the peak RSS (ru_maxrss, VmHWM) after loading the models, after the whole
encode stage, and at the end. By default generation stops after --gen-frames frames (generated,
encoded into the mp4 and muxed): the encode stage always covers the whole clip, and generation is
streamed in fixed-size chunks, so its memory does not depend on how many frames follow. --full
generates every frame (10 s: ~250 frames, 2 min: ~3000).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pdfgc_core import images, media, pipeline  # noqa: E402
from pdfgc_core.audio import QUALITIES  # noqa: E402
from pdfgc_core.engine import DRIVER_HEADS, DTYPES, Engine, auto_batch_size  # noqa: E402
from pdfgc_core.factors import DEFAULT_FPS, Factor, PostProcess, assemble_motion  # noqa: E402

SAMPLES = REPO / "samples"
APPEARANCE = SAMPLES / "anne.png"
SPEECH = SAMPLES / "speech.mp3"
DRIVER_DIRS = {h: SAMPLES / "drivers" / h for h in DRIVER_HEADS}
OFFICIAL_ORDER = ("pose", "expression", "eye")  # the official 24-image motion batch
TOL = 1e-4
FPS = DEFAULT_FPS
CHILD_MARK = "@@BENCH@@"
STAGES = ("appearance", "audio", "motion", "generator", "other")


# ------------------------------------------------------------------------------------ environment


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_avg() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def device_info(device: torch.device) -> list[str]:
    lines = [
        f"cpu: {cpu_model()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}",
        f"torch {torch.__version__}, python {platform.python_version()}, numpy {np.__version__}, "
        f"{platform.system()} {platform.release()}",
    ]
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        lines.append(
            f"cuda: {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}, "
            f"CUDA {torch.version.cuda}, cudnn {torch.backends.cudnn.version()}"
        )
    else:
        lines.append("cuda: " + ("available but not used" if torch.cuda.is_available() else "not available"))
    return lines


def status_mib(key: str) -> float:
    """VmRSS / VmHWM of this process in MiB (0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux /proc/self/clear_refs); False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_mib() -> float:
    """This process's peak RSS in MiB: VmHWM, else ru_maxrss. (ru_maxrss of a child process also
    counts its parent's RSS at fork/exec, so the memory runs read VmHWM.)"""
    hwm = status_mib("VmHWM")
    if hwm:
        return hwm
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024


# ------------------------------------------------------------------------------------ inputs


def load_models(checkpoint: str | None):
    from pdfgc_core.checkpoints import load_models as load

    if checkpoint:
        return load(checkpoint), checkpoint
    sys.path.insert(0, str(REPO / "tests"))
    from pdfgc_synthetic import synthetic_checkpoint

    path = synthetic_checkpoint()
    return load(path), f"synthetic ({path})"


def looped_speech(seconds: float, folder: Path) -> Path:
    """samples/speech.mp3 repeated to ``seconds``, as 16-bit WAV at its native rate and channels."""
    import soundfile

    from pdfgc_core.audio import load_audio

    wave, sr = load_audio(SPEECH)
    n = int(round(seconds * sr))
    reps = -(-n // wave.shape[1])
    out = folder / f"speech_{seconds:g}s.wav"
    soundfile.write(str(out), np.tile(wave, (1, reps))[:, :n].T, sr, subtype="PCM_16")
    return out


def audio_for(frames: int, folder: Path) -> Path:
    """An audio file with at least ``frames`` output frames at 25 fps (+3: the mel window's tail)."""
    import soundfile

    seconds = (frames + 3) / FPS
    return SPEECH if soundfile.info(str(SPEECH)).duration >= seconds + 0.1 else looped_speech(seconds + 1, folder)


def settings_for(frames: int, batch: int, audio_quality: str = "official") -> pipeline.RenderSettings:
    # official 25 fps: max_seconds (n + 3) / 25 keeps 640 n + 1920 samples -> exactly n mel windows
    return pipeline.RenderSettings(max_seconds=(frames + 3) / FPS, batch_size=batch, audio_quality=audio_quality)


# ------------------------------------------------------------------------------------ timing


class StageClock:
    """Wall time inside each network, the rest attributed to "other". The encoders are timed by
    forward hooks; the generator by :meth:`timed` around its calls (outside any torch.compile
    region): :meth:`attach` does it for an engine."""

    def __init__(self, models, device: torch.device):
        self.device = device
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.t = dict.fromkeys(STAGES[:-1], 0.0)
        self._start = {}
        self._handles = []
        for name in ("appearance", "audio", "motion"):
            module = getattr(models, name)
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            self._handles.append(module.register_forward_hook(self._post(name)))

    def _pre(self, name):
        def hook(*_):
            self.sync()
            self._start[name] = time.perf_counter()

        return hook

    def _post(self, name):
        def hook(*_):
            self.sync()
            self.t[name] += time.perf_counter() - self._start.pop(name)

        return hook

    @contextmanager
    def timed(self, name: str):
        self.sync()
        t0 = time.perf_counter()
        yield
        self.sync()
        self.t[name] += time.perf_counter() - t0

    def attach(self, engine: Engine) -> None:
        run = engine._run_generator

        def timed_run(*a, **k):
            with self.timed("generator"):
                return run(*a, **k)

        engine._run_generator = timed_run

    def reset(self):
        self.t = dict.fromkeys(self.t, 0.0)

    def remove(self):
        for h in self._handles:
            h.remove()


@contextmanager
def timed_run(clock: StageClock, result: dict):
    clock.reset()
    clock.sync()
    peak_ok = reset_peak()
    if clock.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(clock.device)
    t0, c0 = time.perf_counter(), time.process_time()
    yield
    clock.sync()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stages = dict(clock.t)
    stages["other"] = wall - sum(stages.values())
    result.update(wall=wall, cpu=cpu, stages=stages, peak=peak_mib() if peak_ok else float("nan"))
    if clock.device.type == "cuda":
        result["gpu_peak"] = torch.cuda.max_memory_allocated(clock.device) / 2**20


# ------------------------------------------------------------------------------------ the two paths


def reference_path(
    models, device: torch.device, audio: Path, frames: int, clock: StageClock
) -> tuple[torch.Tensor, list]:
    """The official loop on our modules. Returns float frames [N,3,224,224] (CPU) and the uint8 chunks."""
    settings = settings_for(frames, 8)
    batch = 8
    with torch.no_grad():
        app = images.prepare_batch(images.read_image(APPEARANCE)[None]).to(device)
        id_vec, id_map = models.appearance(app)
        windows = pipeline.mouth_windows(audio, settings)
        n = windows.shape[0]
        streams = {}
        for head in OFFICIAL_ORDER:  # official: every file of every folder, decoded and held
            files = media.list_frame_files(DRIVER_DIRS[head])[pipeline.OFFICIAL_SKIP :]
            streams[head] = images.prepare_batch([images.read_image(f) for f in files], channels_last=True)
        raw = {h: [] for h in ("mouth", *OFFICIAL_ORDER)}
        for s in range(0, n, batch):
            b = min(batch, n - s)
            x = torch.cat([streams[h][[(s + k) % streams[h].shape[0] for k in range(b)]] for h in OFFICIAL_ORDER])
            out = models.motion(x.to(device).contiguous(memory_format=torch.channels_last), heads=DRIVER_HEADS)
            for i, h in enumerate(OFFICIAL_ORDER):
                raw[h].append(out[h][i * b : (i + 1) * b].float().cpu())
            raw["mouth"].append(models.audio(windows[s : s + b].to(device)).float().cpu())
        factors = {h: Factor(h, torch.cat(v), fps=FPS) for h, v in raw.items()}
        motion = assemble_motion(n, **factors, post=PostProcess.official())
        style = torch.cat([id_vec.float().cpu().expand(n, -1), motion], 1)
        out, u8 = [], []
        for s in range(0, n, batch):
            with clock.timed("generator"):
                img = models.generator(id_map, style[s : s + batch].to(device), impl="reference").float()
            img = img.cpu()
            out.append(img)
            u8.append(images.network_to_u8(img))
    return torch.cat(out), u8


def fast_path(
    engine: Engine, audio: Path, frames: int, batch: int, audio_quality: str = "official", keep: int | None = None
) -> tuple[torch.Tensor, list, float]:
    """The CLI's path. Returns float frames (the first ``keep``), the uint8 chunks and the plan's seconds."""
    settings = settings_for(frames, batch, audio_quality)
    drivers = {h: pipeline.Driver(d) for h, d in DRIVER_DIRS.items()}
    floats, u8 = [], []
    kept = 0
    generate = engine.generate

    def capture(*a, **k):
        nonlocal kept
        for chunk in generate(*a, **k):
            if keep is None or kept < keep:
                floats.append(chunk[: None if keep is None else keep - kept])
                kept += floats[-1].shape[0]
            yield chunk

    engine.generate = capture
    try:
        t0 = time.perf_counter()
        p = pipeline.plan(engine, APPEARANCE, audio, drivers, settings)
        t_plan = time.perf_counter() - t0
        for chunk in pipeline.frames_u8(engine, p):
            u8.append(chunk)
    finally:
        del engine.generate
    return torch.cat(floats), u8, t_plan


# ------------------------------------------------------------------------------------ reports


def stage_table(results: dict[str, dict], frames: int) -> list[str]:
    ref, fast = results["reference"], results["fast"]
    peak = {k: min(r["peak"] for r in v["runs"]) for k, v in results.items()}
    rows = [f"{'stage':<12}{'reference s/frame':>19}{'fast s/frame':>15}{'ref/fast':>10}"]
    for s in STAGES:
        r, f = ref["stages"][s] / frames, fast["stages"][s] / frames
        rows.append(f"{s:<12}{r:>19.4f}{f:>15.4f}{(r / f if f > 0 else float('inf')):>9.2f}x")
    r, f = ref["wall"] / frames, fast["wall"] / frames
    rows.append(f"{'END TO END':<12}{r:>19.4f}{f:>15.4f}{r / f:>9.2f}x")
    r, f = ref["cpu"] / frames, fast["cpu"] / frames
    rows.append(f"{'(CPU time)':<12}{r:>19.4f}{f:>15.4f}{r / f:>9.2f}x")
    rows.append(f"{'fps':<12}{frames / ref['wall']:>19.2f}{frames / fast['wall']:>15.2f}")
    rows.append(
        f"{'peak RSS MiB':<12}{peak['reference']:>19.0f}{peak['fast']:>15.0f}{peak['reference'] / peak['fast']:>9.2f}x"
    )
    if "gpu_peak" in ref:
        g = {k: min(r["gpu_peak"] for r in v["runs"]) for k, v in results.items()}
        rows.append(f"{'peak GPU MiB':<12}{g['reference']:>19.0f}{g['fast']:>15.0f}{g['reference'] / g['fast']:>9.2f}x")
    return rows


def compare(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = (a.double() - b.double()).abs()
    return float(d.max()), float(d.mean())


def speed(args, models, device: torch.device, tmp: Path) -> None:
    frames = args.frames
    audio = audio_for(frames, tmp)
    print(
        f"\n== reference vs fast path: {frames} frames, fp32, batch 8, audio {audio.name}, "
        f"drivers {', '.join(f'{h} {len(media.list_frame_files(d)) - pipeline.OFFICIAL_SKIP}' for h, d in DRIVER_DIRS.items())} "
        f"frames (looped) =="
    )
    engine = Engine(models, device=device, precision="fp32", compile=args.compile)
    clock = StageClock(models, device)
    clock.attach(engine)
    print(
        f"  RSS with the weights loaded: {status_mib('VmRSS'):.0f} MiB. Peak RSS per run: VmHWM reset before the "
        f"run (the fast path runs first, from this state; the table shows each path's lowest)"
    )
    best: dict[str, dict] = {}
    outputs = {}
    for rep in range(args.repeats):
        for name in ("fast", "reference"):
            res = {}
            with timed_run(clock, res):
                if name == "fast":
                    out = fast_path(engine, audio, frames, 8)[:2]
                else:
                    out = reference_path(models, device, audio, frames, clock)
            print(
                f"  run {rep + 1} {name:<9} {res['wall']:7.1f} s wall, {res['cpu']:7.1f} s CPU, peak RSS "
                f"{res['peak']:6.0f} MiB   load {load_avg()}"
            )
            runs = best.get(name, {}).get("runs", []) + [res]
            warm_up = rep == 0 and args.repeats > 1
            if name not in best or warm_up or best[name]["warm_up"] or res["wall"] < best[name]["wall"]:
                best[name] = dict(res, warm_up=warm_up)
            best[name]["runs"] = runs
            outputs[name] = out
    clock.remove()
    (ref_f, ref_u8), (fast_f, fast_u8) = outputs["reference"], outputs["fast"]
    n = ref_f.shape[0]
    assert fast_f.shape == ref_f.shape == (frames, 3, 224, 224), (fast_f.shape, ref_f.shape)
    print()
    for line in stage_table(best, n):
        print("  " + line)
    mx, mean = compare(fast_f, ref_f)
    u8d = np.abs(np.concatenate(ref_u8).astype(np.int16) - np.concatenate(fast_u8).astype(np.int16))
    verdict = "OK" if mx <= TOL else "FAIL"
    print(
        f"\n  frames fast vs reference: max abs {mx:.3g}, mean abs {mean:.3g} (tolerance {TOL:g}: {verdict}); "
        f"uint8: {int((u8d > 0).sum())} of {u8d.size} values differ, by at most {int(u8d.max())}"
    )
    print(
        f"  motion images encoded: reference {3 * n} (pose, expression and eye images of every frame), fast "
        f"{sum(min(n, len(media.list_frame_files(d)) - pipeline.OFFICIAL_SKIP) for d in DRIVER_DIRS.values())} (each distinct image once)"
    )
    if mx > TOL:
        raise SystemExit(f"fast path differs from the reference path by {mx:.3g} > {TOL:g}")


def sweep(args, models, device: torch.device, tmp: Path) -> None:
    frames = args.sweep_frames or args.frames
    audio = audio_for(frames, tmp)
    precisions = [(p, args.compile) for p in dict.fromkeys(["fp32"] + args.precision)]
    if args.compile:  # the eager fp32 frames are the baseline
        precisions.insert(0, ("fp32", False))
    print(f"\n== fast path sweep on {device}: {frames} frames, audio quality {args.audio_quality} ==")
    print(
        f"  {'precision':<14}{'batch':>8}{'plan s':>8}{'generator fps':>15}{'generate fps':>14}"
        f"{'end-to-end fps':>16}{'peak GPU GiB':>14}{'max|d| vs fp32':>16}{'mean|d|':>10}"
    )
    base = None
    clock = StageClock(models, device)
    for prec, compiled in precisions:
        name = prec + (" compile" if compiled else "")
        if device.type != "cuda" and prec != "fp32":
            print(f"  {name:<14}  skipped: fp16 / bf16 autocast is CUDA-only in Engine (CPU runs fp32)")
            continue
        engine = Engine(models, device=device, precision=prec, compile=compiled)
        clock.attach(engine)
        for b in args.batch:
            bs = auto_batch_size(device, engine.dtype) if b == "auto" else int(b)
            label = f"auto={bs}" if b == "auto" else str(bs)
            fast_path(engine, audio, min(frames, 2 * bs), bs, args.audio_quality)  # warm-up (and compile)
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(device)
            clock.reset()
            t0 = time.perf_counter()
            f, _, t_plan = fast_path(engine, audio, frames, bs, args.audio_quality, keep=args.compare_frames)
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall = time.perf_counter() - t0
            t_gen = clock.t["generator"]
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            if base is None:
                base = f
            mx, mean = compare(f, base)
            print(
                f"  {name:<14}{label:>8}{t_plan:>8.2f}{frames / t_gen:>15.1f}{frames / (wall - t_plan):>14.1f}"
                f"{frames / wall:>16.1f}{peak:>14.2f}{mx:>16.3g}{mean:>10.3g}"
            )
    clock.remove()
    print(
        f"  (generator fps: inside the generator calls only; generate fps: the streamed generation with the copy to "
        f"the CPU and the uint8 conversion, = frames / (end to end - plan); differences over the first "
        f"{min(frames, args.compare_frames)} frames, values in -1..1, against the first fp32 row)"
    )


# ------------------------------------------------------------------------------------ memory


def child_render(argv: list[str]) -> None:
    """Runs the CLI in this (fresh) process and prints its peak memory as JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--gen-frames", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("cli", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from pdfgc_core import cli

    rec: dict = {}
    get_models, plan, frames_u8 = cli.get_models, pipeline.plan, pipeline.frames_u8

    def get_models_rec(*x, **k):
        m = get_models(*x, **k)
        rec["rss_models"] = status_mib("VmRSS")
        return m

    def plan_rec(*x, **k):
        t0 = time.perf_counter()
        p = plan(*x, **k)
        rec.update(frames=p.num_frames, encode_s=time.perf_counter() - t0, hwm_encode=status_mib("VmHWM"))
        return p

    def frames_rec(*x, **k):
        done, t0 = 0, time.perf_counter()
        for chunk in frames_u8(*x, **k):
            if a.gen_frames and done >= a.gen_frames:
                break
            chunk = chunk[: a.gen_frames - done] if a.gen_frames else chunk
            done += chunk.shape[0]
            yield chunk
        rec.update(generated=done, generate_s=time.perf_counter() - t0)

    finish = media.Mp4Writer._finish_video

    def finish_rec(writer):  # the x264 process's peak, read before it exits
        try:
            rec["ffmpeg_peak"] = (
                int(Path(f"/proc/{writer._proc.pid}/status").read_text().split("VmHWM:")[1].split()[0]) / 1024
            )
        except (OSError, IndexError, ValueError):
            rec["ffmpeg_peak"] = float("nan")
        return finish(writer)

    cli.get_models, pipeline.plan, pipeline.frames_u8 = get_models_rec, plan_rec, frames_rec
    media.Mp4Writer._finish_video = finish_rec
    rc = cli.main(a.cli[1:] if a.cli[:1] == ["--"] else a.cli)
    rec.update(rc=rc, peak=peak_mib())
    print(CHILD_MARK + json.dumps(rec))


def memory(args, checkpoint_path: str | None, tmp: Path) -> None:
    if checkpoint_path is None:
        sys.path.insert(0, str(REPO / "tests"))
        from pdfgc_synthetic import synthetic_checkpoint

        checkpoint_path = str(synthetic_checkpoint())
    gen = 0 if args.full else args.gen_frames
    what = "every frame generated" if args.full else f"the whole clip encoded, the first {gen} frames generated"
    print(
        f"\n== peak memory of `python -m pdfgc_core render` (fresh process each, {args.device}, fp32, batch 8, "
        f"{what}, encoded to mp4 and muxed) =="
    )
    print(
        f"  {'clip':<7}{'frames':>7}{'encode s':>10}{'gen s':>8}{'after load MiB':>16}{'after encode':>14}"
        f"{'peak MiB':>10}{'x264 peak':>11}"
    )
    peaks = {}
    for seconds in args.clip_seconds:
        label = f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
        audio = looped_speech(seconds, tmp)
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "_child",
            "--gen-frames",
            str(gen),
            "--threads",
            str(args.threads),
            "--",
            "render",
            "--synthetic",
            "--checkpoint",
            checkpoint_path,
            "--appearance",
            str(APPEARANCE),
            "--audio",
            str(audio),
            *[x for h, d in DRIVER_DIRS.items() for x in (f"--{h}", str(d))],
            "--device",
            args.device,
            "--precision",
            "fp32",
            "--batch-size",
            "8",
            "--out",
            str(tmp / "out.mp4"),
        ]
        r = subprocess.run(cmd, capture_output=True, text=True)
        line = [x for x in r.stdout.splitlines() if x.startswith(CHILD_MARK)]
        if r.returncode != 0 or not line:
            print(f"  {label}: render failed (exit {r.returncode}): {r.stderr[-2000:]}")
            return
        rec = json.loads(line[-1][len(CHILD_MARK) :])
        peaks[seconds] = rec["peak"]
        print(
            f"  {label:<7}{rec['frames']:>7}{rec['encode_s']:>10.1f}{rec['generate_s']:>8.1f}"
            f"{rec['rss_models']:>16.0f}{rec['hwm_encode']:>14.0f}{rec['peak']:>10.0f}{rec['ffmpeg_peak']:>11.0f}"
            + ("" if rec["generated"] == rec["frames"] else f"   ({rec['generated']} generated)")
        )
    if len(peaks) >= 2:
        (s0, p0), (s1, p1) = min(peaks.items()), max(peaks.items())
        verdict = f" (target <= 1.5: {'OK' if p1 / p0 <= 1.5 else 'FAIL'})" if (s0, s1) == (10.0, 120.0) else ""
        print(
            f"  peak {s1:g} s / {s0:g} s: {p1 / p0:.3f}{verdict}; growth {(p1 - p0) / ((s1 - s0) / 60):.0f} MiB "
            f"per minute of clip"
        )
    print(
        "  (peak = VmHWM of the Python process; x264 = VmHWM of the ffmpeg encoder, a separate process, "
        "read before it exits)"
    )


# ------------------------------------------------------------------------------------ main


def main() -> None:
    if sys.argv[1:2] == ["_child"]:
        return child_render(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=32, help="frames for the reference vs fast comparison")
    ap.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="runs of each path, alternating; with 2 or more, run 1 is a warm-up (it pays one-off "
        "costs: oneDNN kernels for each new shape, weight caches, librosa/numba imports) and the "
        "fastest of the others is reported",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the parity references use 2)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    ap.add_argument("--checkpoint", default=None, help="official folder / .tar / .safetensors (default: synthetic)")
    ap.add_argument(
        "--precision",
        nargs="+",
        default=[],
        choices=list(DTYPES),
        help="fast-path sweep over these precisions (CUDA autocast), compared with fp32",
    )
    ap.add_argument("--batch", nargs="+", default=None, help="sweep batch sizes (ints or 'auto')")
    ap.add_argument("--sweep-frames", type=int, default=None, help="frames per sweep run (default --frames)")
    ap.add_argument("--compare-frames", type=int, default=256, help="frames kept to compare precisions")
    ap.add_argument(
        "--audio-quality",
        default="official",
        choices=QUALITIES,
        help="resampler in the sweep (official resampy or soxr)",
    )
    ap.add_argument("--compile", action="store_true", help="torch.compile the generator (Engine(compile=True))")
    ap.add_argument("--skip-speed", action="store_true", help="no reference vs fast comparison")
    ap.add_argument("--skip-memory", action="store_true", help="no 10 s / 2 min memory runs")
    ap.add_argument("--memory-only", action="store_true", help="only the memory runs")
    ap.add_argument("--gen-frames", type=int, default=16, help="memory runs: frames generated after encoding")
    ap.add_argument("--full", action="store_true", help="memory runs: generate every frame of each clip")
    ap.add_argument(
        "--clip-seconds",
        type=float,
        nargs="+",
        default=[10.0, 120.0],
        help="memory runs: clip lengths in seconds (speech and drivers looped)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.batch is None:
        args.batch = ["8"] if device.type == "cpu" else ["8", "32", "64", "auto"]
    if device.type == "cuda" and not args.precision:
        args.precision = list(DTYPES)
    print(f"bench_pipeline  {time.strftime('%Y-%m-%d %H:%M')}  load average {load_avg()}")
    for line in device_info(device):
        print("  " + line)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pdfgc-bench-") as d:
        tmp = Path(d)
        if not args.memory_only:
            models, source = load_models(args.checkpoint)
            print(f"  weights: {source}")
            if not args.skip_speed:
                speed(args, models, device, tmp)
            if args.precision or device.type == "cuda":
                sweep(args, models, device, tmp)
            del models
        if not args.skip_memory:
            memory(args, args.checkpoint, tmp)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s, load average {load_avg()}")


if __name__ == "__main__":
    main()
