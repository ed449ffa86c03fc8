"""Training items of the three stage-2 heads, and the step-indexed batch plan.

An epoch has ``items_per_clip`` items per eligible clip. Everything random about item ``i`` of
epoch ``e`` (which frames, which negatives) is drawn from ``numpy.random.default_rng((seed,
stage, e, i))`` (``e`` = 0 with ``data.resample_each_epoch = false``), so an item is the same whichever process, worker or run computes it: a resumed
run and a run on another number of GPUs see exactly the same data.

Items (numpy, collated to torch by :func:`collate`):

- lip: ``times`` int64 [K] (K = negatives + 1 frames of one clip, pairwise at least ``min_offset``
  apart), ``mel`` float32 [K,1,80,20] (the audio window of each time, as inference cuts it),
  ``frames`` uint8 [K,224,224,3];
- eye: ``times`` [2] = (t1, t2), ``frames`` [2,224,224,3] = (v1, v2), ``anchor`` uint8 [224,224,3]
  = v2 with the eye region of v1 pasted in (:mod:`.eyes`);
- pose: ``times`` [1], ``frames`` [1,224,224,3], ``pose`` float32 [6].

With ``load_frames=False`` (features cached by the trainer) ``frames`` is left out.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..audio import mel_windows
from ..errors import InputError
from .config import TrainConfig
from .eyes import paste_eyes, union_box
from .shards import ClipStore


def separated_times(rng: np.random.Generator, n: int, k: int, gap: int) -> np.ndarray:
    """``k`` sorted frame indices in ``[0, n)``, any two at least ``gap`` apart, uniform over all
    such sets (``k`` of the ``n - (k-1)(gap-1)`` slots, spread out)."""
    slots = n - (k - 1) * (gap - 1)
    if slots < k:
        raise ValueError(f"{n} frames cannot hold {k} times {gap} apart")
    pick = np.sort(rng.choice(slots, size=k, replace=False))
    return (pick + np.arange(k) * (gap - 1)).astype(np.int64)


class ClipItems(Dataset):
    """``items_per_clip`` items per usable clip (``self.clips``), indexed with ``(epoch, item)``
    pairs; each item draws from its own generator, a pure function of the seed, the stage, the
    epoch (only with ``data.resample_each_epoch``) and the item. Subclasses fill ``self.clips``."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.per_clip = cfg.data.items_per_clip
        self.salt = zlib.crc32(cfg.stage.encode())
        self.clips: list[int] = []

    def __len__(self) -> int:
        return len(self.clips) * self.per_clip

    def rng(self, epoch: int, item: int) -> np.random.Generator:
        epoch = int(epoch) if self.cfg.data.resample_each_epoch else 0
        return np.random.default_rng((self.cfg.run.seed, self.salt, epoch, int(item)))


class Stage2Data(ClipItems):
    """Items of ``cfg.stage`` from a :class:`ClipStore`; index with ``(epoch, item)`` pairs."""

    def __init__(self, store: ClipStore, cfg: TrainConfig, load_frames: bool = True):
        super().__init__(cfg)
        self.store, self.stage, self.load_frames = store, cfg.stage, load_frames
        self.clips, self.valid = [], {}
        for i, c in enumerate(store.clips):
            if self.stage == "lip":
                need = cfg.lip.negatives * cfg.lip.min_offset + 1
                if c["num_frames"] >= need:
                    self.clips.append(i)
                continue
            ok = np.flatnonzero(self._valid_mask(i))
            usable = len(ok) > 0 if self.stage == "pose" else len(ok) >= 2 and ok[-1] - ok[0] >= cfg.eye.min_gap
            if usable:
                self.clips.append(i)
                self.valid[i] = ok
        if not self.clips:
            raise InputError(self._why_empty())

    def _valid_mask(self, i: int) -> np.ndarray:
        det = self.store.small(i, "detected").astype(bool)
        if self.stage == "eye":
            return det & np.isfinite(self.store.small(i, "eye_box")).all(1)
        return np.isfinite(self.store.small(i, "pose")).all(1)

    def _why_empty(self) -> str:
        n = len(self.store.clips)
        if self.stage == "lip":
            need = self.cfg.lip.negatives * self.cfg.lip.min_offset + 1
            return (
                f"{self.store.root}: none of its {n} clips has the {need} frames a lip item needs "
                f"(lip.negatives + 1 times, lip.min_offset apart); use longer clips or lower lip.negatives / lip.min_offset."
            )
        return f"{self.store.root}: none of its {n} clips has frames with a detected face and a {self.stage} label."

    def __getitem__(self, key) -> dict:
        epoch, item = key
        rng = self.rng(epoch, item)
        clip = self.clips[item // self.per_clip]
        out = getattr(self, f"_{self.stage}")(clip, rng)
        out["clip"] = np.int64(clip)
        if self.load_frames:
            out["frames"] = self.store.frames(clip, out["times"])
        return out

    def _lip(self, clip: int, rng) -> dict:
        n = self.store.clips[clip]["num_frames"]
        times = separated_times(rng, n, self.cfg.lip.negatives + 1, self.cfg.lip.min_offset)
        windows = mel_windows(self.store.small(clip, "mel").copy(), self.store.fps, num_frames=n)
        return {"times": times, "mel": windows[torch.from_numpy(times)].numpy()}

    def _eye(self, clip: int, rng) -> dict:
        ok = self.valid[clip]
        gap = self.cfg.eye.min_gap
        t1 = rng.choice(ok)
        far = ok[np.abs(ok - t1) >= gap]
        if not len(far):  # t1 sits in the middle of a short run of valid frames: take an end
            t1 = ok[0]
            far = ok[np.abs(ok - t1) >= gap]
        t2 = rng.choice(far)
        times = np.array([t1, t2], np.int64)
        v1, v2 = self.store.frames(clip, times)
        boxes = self.store.small(clip, "eye_box")
        anchor = paste_eyes(v2, v1, union_box(boxes[t1], boxes[t2]))
        return {"times": times, "anchor": anchor}

    def _pose(self, clip: int, rng) -> dict:
        t = int(rng.choice(self.valid[clip]))
        return {"times": np.array([t], np.int64), "pose": self.store.small(clip, "pose")[t].astype(np.float32)}


def collate(items: list[dict]) -> dict:
    """Stacks item fields into torch tensors with a leading batch dimension."""
    return {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}


class BatchPlan(Sampler):
    """Which items each process takes at each step.

    Step ``s`` is batch ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``; an epoch is a
    permutation of the items drawn from ``(seed, epoch)``, cut into global batches of
    ``global_batch`` items (the remainder is dropped). Process ``rank`` of ``world`` takes the
    ``rank``-th contiguous slice of each global batch, so the union over processes is the batch a
    single process would take. Iterating yields the ``(epoch, item)`` lists of steps
    ``start .. stop - 1`` for this rank."""

    def __init__(self, num_items: int, global_batch: int, world: int = 1, rank: int = 0, seed: int = 0):
        if global_batch % world:
            raise InputError(f"batch_size {global_batch} must be a multiple of the {world} training processes.")
        self.num_items, self.global_batch, self.world, self.rank, self.seed = num_items, global_batch, world, rank, seed
        self.local = global_batch // world
        self.steps_per_epoch = num_items // global_batch
        if self.steps_per_epoch < 1:
            raise InputError(
                f"the dataset gives {num_items} items per epoch, fewer than batch_size {global_batch}; lower "
                f"the batch size or raise data.items_per_clip."
            )
        self.start, self.stop = 0, self.steps_per_epoch
        self._perm = (None, None)

    def span(self, start: int, stop: int) -> BatchPlan:
        self.start, self.stop = int(start), int(stop)
        return self

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(self.num_items, generator=g))
        return self._perm[1]

    def batch(self, step: int) -> list[tuple[int, int]]:
        epoch, b = divmod(int(step), self.steps_per_epoch)
        lo = b * self.global_batch + self.rank * self.local
        return [(epoch, int(i)) for i in self.permutation(epoch)[lo : lo + self.local]]

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def step_loader(
    dataset, plan: BatchPlan, start: int, total: int, num_workers: int, device
) -> torch.utils.data.DataLoader:
    """This process's batches of steps ``start``..``total`` of ``plan`` from ``dataset``, collated,
    with ``num_workers`` loader processes (pinned memory on CUDA)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=plan.span(start, total),
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=torch.device(device).type == "cuda",
    )
