"""Peak memory of `python -m pdfgc_core dub` against the length of the video: the same scene at
the same resolution, one fresh process per length, so the ratio shows whether anything grows with
the clip.

    python benchmarks/bench_dub.py                          # 1920x1080, 25 fps: 10 s and 60 s
    python benchmarks/bench_dub.py --seconds 10 600         # the 10-minute 1080p case (long on CPU)
    python benchmarks/bench_dub.py --seconds 10 600 --gen-frames 1500   # ... and its first minute generated
    python benchmarks/bench_dub.py --full                   # generate every frame, not only the first ones
    python benchmarks/bench_dub.py --device cuda --full --seconds 10 600

Input: a video made here (tests/dub_media.py): a slowly moving background, the bundled portrait as
the main face drifting slowly, a smaller second face, and a stretch without any face; the speech
is samples/speech.mp3 looped to the video's length. Videos longer than --loop seconds (60) repeat a
clip of that length without re-encoding (each join a cut), so that making them costs nothing. Weights: the cached synthetic checkpoint
(memory does not depend on the values) unless --checkpoint is given.

What runs: the dub command itself. Its first two passes (tracking the face through every frame,
then encoding pose, eyes and expression from every aligned frame) always cover the whole video.
The third pass (generate, paste back, encode to mp4, mux) is streamed in fixed-size chunks; by
default it stops after --gen-frames frames, since the frames that follow reuse the same buffers
(--full generates them all: about 0.5 s a frame on 2 CPU cores). Reported per length: the peak RSS
(VmHWM) of the Python process after loading the weights, after the two whole-video passes and at
the end, and the peak of the ffmpeg encoder (a separate process, read before it exits).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]

from bench_pipeline import CHILD_MARK, load_avg, looped_speech, record_child_run  # noqa: E402


def make_video(path: Path, seconds: float, fps: float, width: int, height: int, loop: float = 0.0) -> int:
    """The benchmark's source video (see the module docstring), streamed to ``path``; frame count.

    ``loop`` > 0 and ``seconds`` longer than it: a clip of ``loop`` seconds is made (or reused) and
    repeated by ffmpeg without re-encoding up to ``seconds``, so a 10-minute 1080p source costs
    seconds instead of an hour; each join is a cut (the face jumps back), as in edited footage.
    """
    from dub_media import iter_face_clip, write_video

    n = int(round(seconds * fps))
    if 0 < loop < seconds:
        base = path.with_name(f"video_{loop:g}s.mp4")
        if not base.exists():
            make_video(base, loop, fps, width, height)
        from pdfgc_core.media.ffmpeg import ffmpeg_exe

        part = path.with_name(path.name + ".part.mp4")
        cmd = [ffmpeg_exe(), "-v", "error", "-y", "-stream_loop", "-1", "-i", str(base), "-frames:v", str(n)]
        subprocess.run(cmd + ["-c", "copy", "-an", str(part)], check=True)
        part.replace(path)
        return n
    main = height * 7 // 12  # the main face: 630 px at 1080p
    frames = (
        f
        for f, _ in iter_face_clip(
            n,
            size=(height, width),
            main=main,
            second=height // 4,
            no_face=(n // 3, n // 3 + max(1, int(fps))),  # one second without a face
            drift=0.05,
        )
    )
    write_video(path, frames, fps)
    return n


def child_dub(argv: list[str]) -> None:
    from pdfgc_core import dub

    record_child_run(argv, dub, "plan_dub", "dub_frames")


def main() -> None:
    if sys.argv[1:2] == ["_child"]:
        return child_dub(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0], help="video lengths (default 10 60)")
    ap.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT of the video (default 1920x1080)")
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--gen-frames", type=int, default=16, help="frames generated in pass 3 (default 16)")
    ap.add_argument("--full", action="store_true", help="generate every frame")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--checkpoint", help="weights (default: the cached synthetic checkpoint)")
    ap.add_argument("--workdir", help="keep the videos here (default: a temporary folder)")
    ap.add_argument(
        "--loop",
        type=float,
        default=60.0,
        help="videos longer than this many seconds repeat a clip of this length, copied without "
        "re-encoding (default 60; 0: make every frame)",
    )
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    checkpoint = args.checkpoint
    if checkpoint is None:
        from pdfgc_synthetic import synthetic_checkpoint

        checkpoint = str(synthetic_checkpoint())
    gen = 0 if args.full else args.gen_frames
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(args.workdir or t)
        tmp.mkdir(parents=True, exist_ok=True)
        what = "every frame generated" if gen == 0 else f"the first {gen} frames generated"
        print(
            f"== peak memory of `python -m pdfgc_core dub` ({width}x{height} at {args.fps:g} fps, {args.device}, "
            f"{args.threads} threads; tracking and motion encoding over the whole video, {what}) =="
        )
        print(f"  load average before: {load_avg()}")
        print(
            f"  {'video':<8}{'frames':>7}{'make s':>8}{'passes 1-2 s':>14}{'gen s':>8}{'after load MiB':>16}"
            f"{'after 1-2':>11}{'peak MiB':>10}{'x264 peak':>11}"
        )
        peaks = {}
        for seconds in args.seconds:
            label = f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
            video = tmp / f"video_{seconds:g}s.mp4"
            t0 = time.perf_counter()
            if not video.exists():
                make_video(video, seconds, args.fps, width, height, args.loop)
            make_s = time.perf_counter() - t0
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
                "dub",
                "--synthetic",
                "--checkpoint",
                checkpoint,
                "--video",
                str(video),
                "--audio",
                str(audio),
                "--device",
                args.device,
                "--out",
                str(tmp / "out.mp4"),
            ]
            r = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in r.stdout.splitlines() if x.startswith(CHILD_MARK)]
            if r.returncode != 0 or not line:
                print(f"  {label}: dub failed (exit {r.returncode}): {r.stderr[-2000:]}")
                sys.exit(1)
            rec = json.loads(line[-1][len(CHILD_MARK) :])
            if rec["rc"] != 0:
                print(f"  {label}: dub exited {rec['rc']}: {r.stderr[-2000:]}")
                sys.exit(1)
            peaks[seconds] = rec["peak"]
            print(
                f"  {label:<8}{rec['frames']:>7}{make_s:>8.0f}{rec['plan_s']:>14.0f}{rec['generate_s']:>8.0f}"
                f"{rec['rss_models']:>16.0f}{rec['hwm_plan']:>11.0f}{rec['peak']:>10.0f}{rec['ffmpeg_peak']:>11.0f}"
                + ("" if rec["generated"] == rec["frames"] else f"   ({rec['generated']} generated)"),
                flush=True,
            )
        if len(peaks) >= 2:
            (s0, p0), (s1, p1) = min(peaks.items()), max(peaks.items())
            print(
                f"  peak {s1:g} s / {s0:g} s: {p1 / p0:.3f} (target <= 1.5); growth "
                f"{(p1 - p0) / ((s1 - s0) / 60):.1f} MiB per minute of video"
            )
        print(f"  load average after: {load_avg()}")


if __name__ == "__main__":
    main()
