"""Training items of the generator stages (1, 3, finetune), from the same prepared datasets and with
the same step-indexed :class:`~.data.BatchPlan` as stage 2.

Item ``i`` of epoch ``e`` is drawn from ``numpy.random.default_rng((seed, stage, e, i))``, so an
item (frames and augmentation) is the same in any process, worker or resumed run. Fields (numpy;
:func:`~.data.collate` stacks them):

- both stages: ``clip`` int64, ``times`` int64 [2] = (appearance frame, driving frame),
  ``appearance`` uint8 [224,224,3], ``target`` uint8 [224,224,3] (the driving frame as it is,
  what the generator must reconstruct);
- ``appearance-motion``: ``driving`` uint8 [224,224,3], the driving frame colour-jittered and
  perspective-distorted (the motion encoder's input);
- ``expression`` / ``finetune``: ``window`` uint8 [K,224,224,3], the K frames around the driving
  frame (indices clamped to the frames in use), each rotated, scaled and colour-jittered independently;
  ``mel`` float32 [1,80,20], the audio window of the driving frame (as inference cuts it).

``ranges`` limits the frames used per clip (``{clip: (lo, hi)}``, hi exclusive): fine-tuning
trains on the head of a video and validates on its tail.
"""

from __future__ import annotations

import numpy as np

from ..audio import mel_windows
from ..errors import InputError
from . import augment
from .data import ClipItems
from .shards import ClipStore


class GanData(ClipItems):
    """Items of a generator stage from a :class:`ClipStore`; index with ``(epoch, item)`` pairs."""

    def __init__(self, store: ClipStore, cfg, ranges: dict[int, tuple[int, int]] | None = None):
        super().__init__(cfg)
        self.store = store
        self.motion_stage = cfg.stage == "appearance-motion"
        gap = cfg.train.min_gap
        self.ranges = {}
        for i, c in enumerate(store.clips):
            lo, hi = (0, c["num_frames"]) if ranges is None else ranges.get(i, (0, 0))
            if hi - lo > gap:
                self.ranges[i] = (int(lo), int(hi))
        self.clips = sorted(self.ranges)
        if not self.clips:
            raise InputError(
                f"{store.root}: no clip has two frames {gap} apart (train.min_gap) in the frames used for training."
            )

    def __getitem__(self, key) -> dict:
        epoch, item = key
        rng = self.rng(epoch, item)
        clip = self.clips[item // self.per_clip]
        lo, hi = self.ranges[clip]
        gap = self.cfg.train.min_gap
        t_drv = int(rng.integers(lo, hi))
        far = np.array([t for t in range(lo, hi) if abs(t - t_drv) >= gap])
        t_app = int(rng.choice(far))
        app, target = self.store.frames(clip, np.array([t_app, t_drv]))
        out = {"clip": np.int64(clip), "times": np.array([t_app, t_drv], np.int64), "appearance": app, "target": target}
        if self.motion_stage:
            a = self.cfg.augment
            drv = augment.color_jitter(target, rng, a.brightness, a.contrast, a.saturation, a.hue)
            out["driving"] = augment.perspective(drv, rng, a.perspective, a.perspective_p)
            return out
        e = self.cfg.expression
        k = e.window
        n = self.store.clips[clip]["num_frames"]
        times = np.clip(t_drv - k // 2 + np.arange(k), lo, hi - 1)  # never outside the frames in use
        window = self.store.frames(clip, times)
        out["window"] = np.stack(
            [
                augment.color_jitter(
                    augment.rotate_scale(f, rng, e.rotation, e.scale),
                    rng,
                    e.brightness,
                    e.contrast,
                    e.saturation,
                    e.hue,
                )
                for f in window
            ]
        )
        windows = mel_windows(self.store.small(clip, "mel").copy(), self.store.fps, num_frames=n)
        out["mel"] = windows[t_drv].numpy()
        return out
