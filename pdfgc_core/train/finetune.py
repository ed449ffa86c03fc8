"""Fine-tuning PD-FGC to one person: ``python -m pdfgc_core finetune --video PERSON.mp4 --init CKPT --out RUN``.

The recipe::

    RUN/data     <- prepare(PERSON.mp4)                      faces aligned, mel, landmarks (resumable)
    split        <- the last finetune.holdout_seconds of the video are held out (never trained on)
    train        <- stage 3 with every encoder and head frozen (expression.train_steps = 0):
                    the generator and a new discriminator adapt to the person (:mod:`.stage3`)
    every finetune.validate_every steps:
        val_l1   <- mean |G(...) - frame| over the held-out frames (appearance: the video's first frame,
                    no augmentation, the stored generator noise)
        better   -> RUN/final = that step's checkpoint folder (four official files)
        finetune.patience validations without improvement -> stop

``RUN/final`` is what Load Model (ComfyUI) and ``--checkpoint`` (CLI) take; ``RUN/validation.csv``
lists every validation. A second run with the same ``--out`` resumes.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ..checkpoints import OFFICIAL_FILES
from ..errors import InputError
from . import dist, gan_loop
from .config import GanConfig
from .shards import ClipStore
from .stage3 import Stage3

FINAL = "final"
VALIDATION_CSV = "validation.csv"
BEST = "best.json"
FPS = 25


def split_frames(store: ClipStore, holdout_seconds: float) -> tuple[dict, list[tuple[int, int]]]:
    """Training ranges ``{clip: (lo, hi)}`` and the held-out ``(clip, frame)`` pairs: the last
    ``holdout_seconds`` of the video (clips in source order) are held out."""
    hold = int(round(holdout_seconds * FPS))
    order = sorted(range(len(store.clips)), key=lambda i: (store.clips[i]["source"], store.clips[i]["start_frame"]))
    total = sum(store.clips[i]["num_frames"] for i in order)
    if hold < 1 or total - hold < FPS:
        raise InputError(
            f"the video gives {total / FPS:.1f} s of usable face frames; holding out {holdout_seconds:g} s leaves "
            f"less than 1 s to train on. Use a longer video or a smaller finetune.holdout_seconds."
        )
    ranges, held, left = {}, [], total - hold  # frames still to give to training
    for i in order:
        n = store.clips[i]["num_frames"]
        take = min(n, max(left, 0))
        left -= take
        if take:
            ranges[i] = (0, take)
        held += [(i, t) for t in range(take, n)]
    return ranges, held


class Validator:
    """Held-out reconstruction error and early stopping (a ``hook`` of :func:`.gan_loop.train_gan`)."""

    def __init__(self, cfg: GanConfig, store: ClipStore, run_dir: Path, held, appearance: tuple[int, int], main):
        self.cfg, self.store, self.run_dir, self.main = cfg, store, Path(run_dir), main
        f = cfg.finetune
        idx = np.linspace(0, len(held) - 1, num=min(8, len(held))).round().astype(int)
        self.items = [held[i] for i in sorted(set(idx.tolist()))]
        self.appearance = store.frames(appearance[0], np.array([appearance[1]]))[0]
        self.every, self.patience = f.validate_every, f.patience
        rec = self._read_best()
        self.best, self.best_step, self.bad = rec["val_l1"], rec["step"], rec["bad"]

    def _read_best(self) -> dict:
        p = self.run_dir / BEST
        if p.is_file():
            return json.loads(p.read_text(encoding="utf-8"))
        return {"val_l1": float("inf"), "step": 0, "bad": 0}

    def batch(self, items) -> dict:
        from ..audio import mel_windows

        k = self.cfg.expression.window
        out = {"appearance": [], "target": [], "window": [], "mel": []}
        for clip, t in items:
            n = self.store.clips[clip]["num_frames"]
            times = np.clip(t - k // 2 + np.arange(k), 0, n - 1)
            frames = self.store.frames(clip, times)
            mel = mel_windows(self.store.small(clip, "mel").copy(), self.store.fps, num_frames=n)[t]
            out["appearance"].append(self.appearance)
            out["target"].append(frames[k // 2] if times[k // 2] == t else self.store.frames(clip, np.array([t]))[0])
            out["window"].append(frames)
            out["mel"].append(mel.numpy())
        return {key: torch.from_numpy(np.stack(v)) for key, v in out.items()}

    def score(self, stage: Stage3) -> float:
        total = 0.0
        for i in range(0, len(self.items), 4):
            batch = self.batch(self.items[i : i + 4])
            with torch.no_grad():
                x = stage.frozen_inputs(batch)
                exp, fake = stage.module(x["id_map"], x["app"], x["mouth"], x["eye"], x["pose"], x["window"], None)
            total += float((fake - x["real"]).abs().mean((1, 2, 3)).sum())
        return total / len(self.items)

    def __call__(self, step: int, stage: Stage3, ckpt) -> bool:
        if step % self.every:
            return False
        stop = False
        if self.main:
            val = self.score(stage)
            better = val < self.best
            if better:
                self.best, self.best_step, self.bad = val, step, 0
            else:
                self.bad += 1
            self._log(step, val, better)
            stop = self.bad >= self.patience
            self.pending = better
        stop = bool(dist.broadcast_object(stop))
        return stop

    def after_checkpoint(self, step: int, ckpt: Path | None) -> None:
        """Makes ``RUN/final`` the checkpoint of the best step (called once that step is saved)."""
        if not self.main or ckpt is None or self.best_step != step:
            return
        from .state import _link_or_copy

        final = self.run_dir / FINAL
        tmp = self.run_dir / f".{FINAL}.tmp"
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        tmp.mkdir()
        for f in OFFICIAL_FILES.values():
            _link_or_copy(ckpt / f, tmp / f)
        (tmp / "info.json").write_text(
            json.dumps({"step": step, "val_l1": self.best, "source": str(ckpt)}, indent=1), encoding="utf-8"
        )
        import shutil

        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        (self.run_dir / BEST).write_text(
            json.dumps({"val_l1": self.best, "step": step, "bad": self.bad}), encoding="utf-8"
        )

    def _log(self, step: int, val: float, better: bool) -> None:
        p = self.run_dir / VALIDATION_CSV
        new = not p.is_file()
        with open(p, "a", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "val_l1", "best_step"])
            w.writerow([step, f"{val:.6f}", self.best_step])
        print(
            f"[finetune] step {step}: held-out L1 {val:.4f} (best {self.best:.4f} at step {self.best_step}"
            f"{', improved' if better else f', {self.bad}/{self.patience} without improvement'})",
            file=sys.stderr,
            flush=True,
        )
        if not better:
            (self.run_dir / BEST).write_text(
                json.dumps({"val_l1": self.best, "step": self.best_step, "bad": self.bad}), encoding="utf-8"
            )


def finetune(cfg: GanConfig, video, out, init, max_steps=None, device=None, prepare_options=None) -> Path:
    """Prepares ``video`` into ``out/data``, fine-tunes from ``init`` (run folder ``out/run``) and
    returns ``out/final``. One process (the data of one person is small)."""
    from .prepare import PrepareOptions, prepare

    out = Path(out)
    video = Path(video).expanduser()
    if not video.is_file():
        raise InputError(f"--video {video}: no such file.")
    if init is None:
        raise InputError("finetune needs --init: the checkpoint to start from (official folder, tar or .safetensors).")
    f = cfg.finetune
    if f.validate_every % cfg.run.checkpoint_every:
        raise InputError(
            f"finetune.validate_every ({f.validate_every}) must be a multiple of run.checkpoint_every "
            f"({cfg.run.checkpoint_every}), so that the best validated step has a checkpoint."
        )
    data = out / "data"
    opts = prepare_options or PrepareOptions(workers=1, max_clip_seconds=f.max_clip_seconds)
    report = prepare([video], data, opts, echo=lambda s: print(f"[finetune] {s}", file=sys.stderr, flush=True))
    if not report.index["clips"]:
        raise InputError(f"--video {video}: no usable clip (no face found, or too short); see the lines above.")
    store = ClipStore(data)
    ranges, held = split_frames(store, f.holdout_seconds)
    validator = Validator(cfg, store, out, held, (min(ranges), 0), True)

    def hook(step, stage, ckpt):
        stop = validator(step, stage, ckpt)
        validator.after_checkpoint(step, ckpt)
        return stop

    res = gan_loop.train_gan(Stage3, cfg, data, out / "run", init, max_steps or f.max_steps, device, None, ranges, hook)
    final = out / FINAL
    if not final.is_dir() and res.checkpoint is not None:  # no validation step happened
        validator.best_step = res.step
        validator.after_checkpoint(res.step, res.checkpoint)
    why = "early stop" if res.stopped_early else "step limit"
    print(
        f"[finetune] done ({why} at step {res.step}); best held-out L1 {validator.best:.4f} at step "
        f"{validator.best_step}: load {final} (ComfyUI Load Model / --checkpoint)",
        file=sys.stderr,
        flush=True,
    )
    return final
