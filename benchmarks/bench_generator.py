"""Generator speed: official-math reference path vs fast path, ms per frame.

    python benchmarks/bench_generator.py                      # CPU (+ CUDA if available)
    python benchmarks/bench_generator.py --batches 1 8 --repeats 5 --threads 2
    python benchmarks/bench_generator.py --layouts            # also: fast path NCHW vs channels_last
    python benchmarks/bench_generator.py --weights DIR/generator_model.pth
    python benchmarks/bench_generator.py --threads 1 --cpu-time  # steadier on a busy machine

Both paths run in the same process, alternately, under ``torch.inference_mode``; each figure
is the best of ``--repeats`` timed calls after one warm-up call. On a shared machine compare
the ratio, not the absolute figures; ``--cpu-time`` reports process CPU time instead of wall
time, which other processes disturb less (meaningful with ``--threads 1``). On CUDA the fast path is also timed under fp16 / bf16
autocast. Random weights are used unless ``--weights`` is given (speed does not depend on
the values).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pdfgc_core.networks import is_unused_checkpoint_key  # noqa: E402
from pdfgc_core.networks.generator import CHECKPOINT_CONSTANT_BUFFERS, STYLE_DIM, Generator  # noqa: E402


def build(weights: str | None, device: str) -> Generator:
    gen = Generator().eval()
    if weights:
        sd = torch.load(weights, map_location="cpu", weights_only=True)
        sd = {
            k: v
            for k, v in sd.items()
            if not is_unused_checkpoint_key("generator", k) and k not in CHECKPOINT_CONSTANT_BUFFERS
        }
        gen.load_state_dict(sd, strict=True)
    return gen.to(device)


def timed(fn, device: str, repeats: int, clock=time.perf_counter) -> float:
    """Best time of ``repeats`` calls, seconds."""
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = clock()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, clock() - t0)
    return best


def variants(device: str, layouts: bool):
    """(label, impl, autocast dtype or None, fast memory format or None)."""
    out = [("reference", "reference", None, None), ("fast", "fast", None, None)]
    if layouts:
        out.append(("fast NCHW", "fast", None, torch.contiguous_format))
    if device == "cuda":
        out.append(("fast fp16", "fast", torch.float16, None))
        if torch.cuda.is_bf16_supported():
            out.append(("fast bf16", "fast", torch.bfloat16, None))
    return out


def run(device: str, batches, repeats: int, weights: str | None, layouts: bool, cpu_time: bool) -> None:
    gen = build(weights, device)
    default_format = gen.fast_memory_format
    gen_rng = torch.Generator().manual_seed(0)
    id_map = torch.randn(1, 512, 7, 7, generator=gen_rng).to(device)
    clock = "process CPU time" if cpu_time and device == "cpu" else "wall time"
    name = f"{torch.get_num_threads()} threads" if device == "cpu" else torch.cuda.get_device_name()
    print(f"\n{device}: {name}, {clock}")
    labels = [v[0] for v in variants(device, layouts)]
    print(f"{'batch':>5}  " + "  ".join(f"{lab + ' ms/frame':>22}" for lab in labels) + "  speed-up (ref/fast)")
    for b in batches:
        style = torch.randn(b, STYLE_DIM, generator=gen_rng).to(device)
        calls = {}
        for label, impl, amp, fmt in variants(device, layouts):

            def call(impl=impl, amp=amp, fmt=fmt, style=style):
                gen.fast_memory_format = fmt or default_format
                with (
                    torch.inference_mode(),
                    torch.autocast(device, dtype=amp or torch.float32, enabled=amp is not None),
                ):
                    gen(id_map, style, impl=impl)

            call()  # warm-up
            calls[label] = call
        best = {label: float("inf") for label in calls}
        for _ in range(repeats):  # interleaved, so that load changes hit every variant alike
            for label, call in calls.items():
                clock = time.process_time if cpu_time and device == "cpu" else time.perf_counter
                best[label] = min(best[label], timed(call, device, 1, clock))
        gen.fast_memory_format = default_format
        ms = {label: t / b * 1000 for label, t in best.items()}
        ratio = ms["reference"] / ms["fast"]
        print(f"{b:>5}  " + "  ".join(f"{ms[lab]:>22.1f}" for lab in labels) + f"  {ratio:>8.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", choices=["all", "cpu", "cuda"], default="all")
    ap.add_argument("--weights", default=None, help="official generator_model.pth (optional)")
    ap.add_argument("--layouts", action="store_true", help="also time the fast path in NCHW layout")
    ap.add_argument("--cpu-time", action="store_true", help="CPU: time with process CPU time, not wall time")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    for device in devices:
        if device == "cuda" and not torch.cuda.is_available():
            print("\ncuda: not available, skipped")
            continue
        run(device, args.batches, args.repeats, args.weights, args.layouts, args.cpu_time)


if __name__ == "__main__":
    main()
