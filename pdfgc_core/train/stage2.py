"""Stage 2 of PD-FGC: train the lip, eye or pose head on a frozen motion trunk.

The loop, for ``step = start .. total - 1``::

    batch   <- items of this step for this process           (data.BatchPlan, data.Stage2Data)
    feat    <- E_mot(frames), no gradient                     (frozen trunk; cached with run.trunk_cache)
    lip:    f_v, f_a <- E_lip(feat), E_aud(mel)               L = L_a2v + L_v2a  (same-clip negatives)
    eye:    f1, f2, fa <- E_eye(feat(v1), feat(v2), feat(va)) L = -log e^S(f1,fa) / (e^S(f1,fa) + e^S(f2,fa))
    pose:   p <- E_pose(feat)                                 L = |p - P_gt|_1
    Adam step on the head's parameters (gradients averaged over processes by DDP); lr x decay every N steps
    log every run.log_every steps; checkpoint every run.checkpoint_every steps and at the end

A run folder that already holds a checkpoint is resumed from its newest one, exactly: same
weights, optimiser and scheduler state, RNG states, and the data of the following steps.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..audio import mel_windows
from ..images import to_network
from . import dist, losses, state
from .config import RESUMABLE_CHANGES, TrainConfig
from .data import BatchPlan, Stage2Data, step_loader
from .heads import FeatureCache, LipStage, MotionHeadStage
from .monitor import Monitor
from .shards import ClipStore

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainResult:
    """``checkpoint``: newest step folder (an official checkpoint folder); ``step``: steps done;
    ``last_row``: the last logged metrics (main process)."""

    run_dir: Path
    checkpoint: Path | None
    step: int
    total: int
    last_row: dict | None


def _trainable(cfg: TrainConfig, nets: state.Networks):
    """The stage module (what DDP wraps) and the parameters it trains."""
    for m in (nets.motion, nets.audio, nets.lip):
        m.requires_grad_(False)
    if cfg.stage == "lip":
        trunk_trains = cfg.lip.audio_trainable == "all"
        module = LipStage(nets.lip, nets.audio, trunk_trains)
        parts = [nets.lip, nets.audio if trunk_trains else nets.audio.mouth_embed]
    else:
        module = MotionHeadStage(nets.motion, cfg.stage)
        parts = [module]
    for p in parts:
        p.requires_grad_(True)
    return module, parts, [p for part in parts for p in part.parameters()]


def _set_batchnorm(parts, mode: str) -> None:
    """``"batch"``: BatchNorm layers of the trained parts use (and update) batch statistics;
    ``"frozen"``: they keep the running statistics (eval mode), as in inference."""
    for part in parts:
        for m in part.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.train(mode == "batch")


class Step:
    """Turns a collated batch into the loss of ``cfg.stage`` (all processes run it)."""

    def __init__(self, cfg, nets, model, store: ClipStore, device, autocast):
        self.cfg, self.nets, self.model, self.store, self.dev, self.autocast = cfg, nets, model, store, device, autocast
        self.vcache = self.acache = None
        self.anchors: dict[tuple, torch.Tensor] = {}
        if cfg.run.trunk_cache:
            self.vcache = FeatureCache(self._trunk)
        if cfg.stage == "lip" and cfg.lip.audio_trainable == "head":
            self.acache = FeatureCache(self._audio_trunk)

    @torch.no_grad()
    def _trunk(self, u8: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.nets.motion.features(to_network(u8.reshape(-1, *u8.shape[-3:])).to(self.dev)).float()

    @torch.no_grad()
    def _audio_trunk(self, mel: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.nets.audio.features(mel.to(self.dev)).float()

    def _all_frames(self, clip: int) -> torch.Tensor:
        n = self.store.clips[clip]["num_frames"]
        return torch.from_numpy(self.store.frames(clip, range(n)))

    def _all_windows(self, clip: int) -> torch.Tensor:
        n = self.store.clips[clip]["num_frames"]
        return mel_windows(self.store.small(clip, "mel").copy(), self.store.fps, num_frames=n)

    def _anchors(self, batch) -> torch.Tensor:
        """Trunk features [B,512] of the eye anchors. With the trunk cache, an anchor (a function of
        clip, t1, t2) is computed once, alone (so its value does not depend on the batch)."""
        if self.vcache is None:
            return self._trunk(batch["anchor"])
        keys = [(int(c), int(t[0]), int(t[1])) for c, t in zip(batch["clip"], batch["times"])]
        for key, img in zip(keys, batch["anchor"]):
            if key not in self.anchors:
                self.anchors[key] = self._trunk(img[None])[0]
        return torch.stack([self.anchors[k] for k in keys])

    def _visual(self, batch) -> torch.Tensor:
        """Trunk features [B*T,512] of the batch's frames (item-major)."""
        if self.vcache is not None:
            return self.vcache.batch(batch["clip"], batch["times"], self._all_frames)
        return self._trunk(batch["frames"])

    def __call__(self, batch) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        if cfg.stage == "lip":
            b, k = batch["times"].shape
            vis = self._visual(batch)
            if self.acache is not None:
                audio_in = self.acache.batch(batch["clip"], batch["times"], self._all_windows)
            else:
                audio_in = batch["mel"].reshape(b * k, *batch["mel"].shape[2:]).to(self.dev)
            with self.autocast():
                f_v, f_a = self.model(vis, audio_in)
            f_v, f_a = f_v.reshape(b, k, -1), f_a.reshape(b, k, -1)
            gathered = {}
            if cfg.lip.negatives_from == "clip+batch":
                gathered = {
                    "all_a": dist.all_gather_with_grad(f_a),
                    "all_v": dist.all_gather_with_grad(f_v),
                    "offset": (torch.distributed.get_rank() if dist.active() else 0) * b,
                }
            return losses.lip_contrastive(f_a, f_v, cfg.lip.temperature, **gathered)
        if cfg.stage == "eye":
            b = batch["times"].shape[0]
            pair = self._visual(batch).reshape(b, 2, -1)
            feat = torch.cat([pair[:, 0], pair[:, 1], self._anchors(batch)])
            with self.autocast():
                f1, f2, fa = self.model(feat).split(b)
            return losses.eye_contrastive(f1, f2, fa, cfg.eye.temperature)
        feat = self._visual(batch)
        with self.autocast():
            pred = self.model(feat)
        return losses.pose_l1(pred, batch["pose"].to(self.dev))


def train(
    cfg: TrainConfig,
    data,
    out,
    init=None,
    max_steps: int | None = None,
    device: str | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Trains ``cfg.stage`` on the prepared dataset ``data`` into the run folder ``out``.

    ``init``: starting checkpoint (official folder / checkpoints.tar / .safetensors) or None (random
    initialisation). ``max_steps``: total steps instead of ``epochs``. ``device``: "cpu", "cuda",
    "cuda:N" (default CUDA when available). ``stop_after``: return after that many steps without
    writing anything more (what an interrupted run leaves; used by tests). Under torchrun every
    process calls this; rank 0 logs and writes."""
    ctx = dist.setup(device)
    try:
        return _train(cfg, Path(data), Path(out), init, max_steps, ctx, stop_after)
    finally:
        dist.cleanup(ctx)


def _train(cfg: TrainConfig, data: Path, run_dir: Path, init, max_steps, ctx, stop_after) -> TrainResult:
    head = cfg.head
    init, resume = state.open_run(run_dir, cfg.to_dict(), data, RESUMABLE_CHANGES, init, ctx.main)

    store = ClipStore(data)
    dataset = Stage2Data(store, cfg, load_frames=not cfg.run.trunk_cache)
    plan = BatchPlan(len(dataset), head.batch_size, ctx.world_size, ctx.rank, cfg.run.seed)
    total = int(max_steps) if max_steps else head.epochs * plan.steps_per_epoch

    nets = state.load_networks(resume or init, run_dir, cfg.run.seed, write_frozen=ctx.main).to(ctx.device)
    module, parts, params = _trainable(cfg, nets)
    bn = cfg.run.batchnorm if cfg.run.batchnorm != "auto" else ("frozen" if (resume or init) else "batch")
    _set_batchnorm(parts, bn)
    if ctx.distributed and bn == "batch" and ctx.device.type == "cuda":
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    model = module
    if ctx.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[ctx.device] if ctx.device.type == "cuda" else None
        )
    opt = torch.optim.Adam(
        params, lr=head.lr, betas=cfg.optim.betas, eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=head.lr_decay_every, gamma=head.lr_decay)
    dtype = PRECISIONS[cfg.run.precision]
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=dtype is torch.float16)
    start = 0
    if resume is not None:
        ts = state.read_train_state(resume)
        opt.load_state_dict(ts["optimizer"])
        sched.load_state_dict(ts["scheduler"])
        scaler.load_state_dict(ts["scaler"])
        start = int(ts["step"])
        rngs = ts["rng"]
        state.set_rng_state(rngs[ctx.rank] if len(rngs) == ctx.world_size else rngs[0])
        if ctx.main:
            print(f"[train {cfg.stage}] resuming {run_dir} from {resume.name}", file=sys.stderr, flush=True)

    def autocast():
        return dist.autocast(ctx.device, dtype)

    step_fn = Step(cfg, nets, model, store, ctx.device, autocast)
    monitor = Monitor(run_dir, cfg.stage, total, start, cfg.run.log_every, cfg.run.tensorboard, ctx.main)
    loader = step_loader(dataset, plan, start, total, cfg.data.num_workers, ctx.device)
    info = {"stage": cfg.stage, "init": init, "data": str(data.resolve()), "report": nets.report.info}
    if ctx.main:
        print(
            f"[train {cfg.stage}] {len(dataset)} items/epoch from {len(dataset.clips)} clips, "
            f"{plan.steps_per_epoch} steps/epoch, steps {start}..{total}, {ctx.world_size} process(es) on "
            f"{ctx.device}, batch {head.batch_size}",
            file=sys.stderr,
            flush=True,
        )
    step, row, last = start, None, resume
    try:
        for step, batch in enumerate(loader, start=start):
            loss, metrics = step_fn(batch)
            metrics = {"loss": loss.item(), **metrics, "lr": sched.get_last_lr()[0]}
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            done = step + 1
            row = monitor.update(done, metrics) or row
            if done % cfg.run.checkpoint_every == 0 or done == total:
                rngs = dist.gather_objects(state.rng_state())
                if ctx.main:
                    ts = {
                        "step": done,
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "scaler": scaler.state_dict(),
                        "rng": rngs,
                        "world_size": ctx.world_size,
                    }
                    last = state.save_checkpoint(run_dir, done, nets, ts, cfg.run.keep_checkpoints, info)
                dist.barrier()
            if stop_after is not None and done >= stop_after:
                return TrainResult(run_dir, last, done, total, row)
        step = total
    finally:
        monitor.close()
    if ctx.main:
        last = state.latest_checkpoint(run_dir)
        print(
            f"[train {cfg.stage}] done: {last} is a PD-FGC checkpoint folder (--checkpoint {last})",
            file=sys.stderr,
            flush=True,
        )
    return TrainResult(run_dir, state.latest_checkpoint(run_dir), step, total, row)
