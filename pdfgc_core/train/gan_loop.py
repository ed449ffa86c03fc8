"""The loop shared by the generator stages (stage 1, stage 3, fine-tuning): one generator step and one
discriminator step per batch. Stage-specific parts (what is generated, which losses) live in
:mod:`.stage1` and :mod:`.stage3`; this module runs them::

    for step = start .. total - 1:
        batch                      <- this process's items of the step              (BatchPlan, GanData)
        fake, aux                  <- stage.generate(batch)                          (DDP-wrapped trained networks)
        D(real), D(fake)           <- discriminator features (D frozen for this step)
        L_G = sum_t w_t * term_t   <- stage.generator_terms(...)                     (hinge, feature matching, priors, ...)
        Adam step on the generator side (G / G0, encoders or expression head)
        L_D = hinge(D(real), D(fake.detach()))
        Adam step on the discriminator
        stage.after_step(aux)      (memory banks)
        learning rates x decay every N steps; log; sample grid; checkpoint

A run folder holding a checkpoint is resumed exactly (weights, optimisers, schedulers, memory
banks, RNG states, the data of the following steps). A step folder is an official four-file
checkpoint folder (``load_models``, the CLI and the ComfyUI Load Model node read it) plus
``discriminator.pth`` (and ``g0_model.pth`` in stage 1), ``train_state.pt`` and ``info.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..checkpoints import OFFICIAL_FILES, LoadReport, open_checkpoint
from ..checkpoints.safety import safe_torch_load
from ..checkpoints.validate import _load_network
from ..errors import InputError
from ..networks import build_network
from . import dist, gan, priors, state
from .config import GAN_RESUMABLE, GanConfig
from .data import BatchPlan, step_loader
from .gan_data import GanData
from .heads import LipHead
from .monitor import Monitor
from .shards import ClipStore

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
DISCRIMINATOR = "discriminator.pth"
SAMPLES = "samples"


@dataclass
class GanNetworks:
    """The four PD-FGC networks (``nets``), the lip head, the untouched keys of their source files
    (``raw``), extra trained networks (``extra``: ``discriminator``, ``g0``) and their saved states."""

    nets: dict[str, torch.nn.Module]
    lip: LipHead
    raw: dict[str, dict] = field(default_factory=dict)
    extra_state: dict[str, dict] = field(default_factory=dict)
    report: LoadReport = field(default_factory=LoadReport)
    frozen: dict[str, Path] = field(default_factory=dict)

    def to(self, device) -> GanNetworks:
        for m in (*self.nets.values(), self.lip):
            m.to(device)
        return self


def load_gan_networks(source, run_dir: Path, trained: tuple[str, ...], extra: tuple[str, ...], seed: int, main: bool):
    """The four networks from ``source`` (official folder / tar / .safetensors / a step folder) or
    random (``source`` None, seeded); the networks not in ``trained`` are written once to
    ``RUN/checkpoints/.frozen`` (main process). ``extra`` files (e.g. ``discriminator.pth``) are
    read from a step-folder source when present."""
    from .state import _link_or_copy, _load_lip, _save_atomic, _split_lip

    frozen_dir = run_dir / state.CHECKPOINTS / state.FROZEN
    frozen_nets = [n for n in OFFICIAL_FILES if n not in trained]
    frozen = {n: frozen_dir / OFFICIAL_FILES[n] for n in frozen_nets}
    need = main and not all(p.is_file() for p in frozen.values())
    if need:
        frozen_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    lip = LipHead()
    if source is None:
        report = LoadReport(source="random initialisation", kind="scratch")
        report.note(f"networks initialised randomly (seed {seed}); no --init checkpoint")
        nets = {n: build_network(n) for n in OFFICIAL_FILES}
        if need:
            for n in frozen_nets:
                _save_atomic(nets[n].state_dict(), frozen[n])
        return GanNetworks(nets, lip, {}, {}, report, frozen)
    nets, raw = {}, {}
    with open_checkpoint(source) as (kind, meta, readers):
        report = LoadReport(source=str(source), kind=kind)
        if meta.get("synthetic") == "true":
            report.warn(f"{source}: SYNTHETIC weights (tests only)")
        for n in OFFICIAL_FILES:
            where, read = readers[n]
            sd = state.without_data_parallel_prefix(read())
            nets[n] = _load_network(n, where, dict(sd), report)
            if n == "motion":
                _load_lip(lip, _split_lip(sd), where, report)
            if n in trained or n == "motion":
                raw[n] = sd
            if n in frozen and need:
                if kind == "official-folder" and Path(where).is_file():
                    _link_or_copy(Path(where), frozen[n])
                else:
                    _save_atomic(sd, frozen[n])
            if n not in raw:
                del sd
    extra_state = {}
    src = Path(source)
    for name in extra:
        f = src / name if src.is_dir() else None
        if f is not None and f.is_file():
            extra_state[name] = safe_torch_load(f, str(f))
    return GanNetworks(nets, lip, raw, extra_state, report, frozen)


def save_gan_checkpoint(run_dir: Path, step: int, files: dict[str, dict], frozen: dict[str, Path], ts, keep, info):
    """``RUN/checkpoints/step_<step>/``: ``files`` (name -> state dict), the ``frozen`` files linked,
    ``train_state.pt``, ``info.json``; written under a temporary name, then renamed; ``latest``
    updated; all but the ``keep`` newest step folders deleted."""
    from ..media import atomic_write
    from .state import _link_or_copy

    root = run_dir / state.CHECKPOINTS
    final, tmp = root / state.step_name(step), root / f".{state.step_name(step)}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name, sd in files.items():
        torch.save(sd, tmp / name)
    for n, path in frozen.items():
        _link_or_copy(path, tmp / OFFICIAL_FILES[n])
    torch.save(ts, tmp / state.STATE)
    (tmp / state.INFO).write_text(json.dumps({**info, "step": step, "time": time.time()}, indent=1), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    with atomic_write(root / state.LATEST) as t:
        t.write_text(final.name, encoding="utf-8")
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in steps[: max(0, len(steps) - keep)]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


# --------------------------------------------------------------------------------- losses


@dataclass
class LossPlan:
    """Which loss terms run, with their weights and priors; ``lines()`` says it for the log."""

    weights: dict[str, float]
    priors: dict[str, torch.nn.Module | str]
    notes: dict[str, str]

    def lines(self) -> list[str]:
        return [f"  {t}: {self.notes[t]}" for t in self.notes]


def plan_losses(cfg: GanConfig, needs: dict[str, str], substitutes: tuple[str, ...] = ()) -> LossPlan:
    """Resolves every weighted term of ``[losses]``: ``needs`` maps a term to the prior it needs;
    a term whose prior file is not given raises :class:`InputError` unless the term is listed in
    ``losses.off`` (or its prior is ``"substitute"`` where ``substitutes`` allows one)."""
    weights, found, notes = {}, {}, {}
    off = set(cfg.losses.off)
    unknown = off - {k for k in cfg.losses._values if k != "off"}
    if unknown:
        raise InputError(f"losses.off names unknown terms {sorted(unknown)}; terms are {sorted(needs)} and others.")
    for term, w in cfg.losses.items():
        if term == "off":
            continue
        if w == 0:
            notes[term] = "off (weight 0)"
            continue
        if term in off:
            notes[term] = "OFF (switched off with --without / losses.off)"
            continue
        prior = needs.get(term)
        if prior is not None:
            value = cfg.priors.get(prior, "")
            if value == "substitute":
                if prior not in substitutes:
                    raise InputError(f"priors.{prior} = 'substitute': this stage has no substitute for {prior}.")
                found[term] = "substitute"
                notes[term] = f"weight {w:g}, SUBSTITUTE for {prior} ({SUBSTITUTE_NAMES[prior]})"
            elif not value:
                sub = f" or --prior {prior}=substitute" if prior in substitutes else ""
                raise InputError(
                    f"loss '{term}' needs the prior network '{prior}', and no file was given: pass --prior "
                    f"{prior}=PATH{sub}, or switch the loss off explicitly with --without {term}. "
                    f"{priors.where_to_get(prior)}"
                )
            else:
                size = cfg.priors.get("gaze_size") if prior == "gaze" else cfg.priors.size
                found[term] = priors.load_prior(prior, value, size)
                notes[term] = f"weight {w:g}, prior {prior} = {value}"
        else:
            notes[term] = f"weight {w:g}"
        weights[term] = float(w)
    return LossPlan(weights, found, notes)


SUBSTITUTE_NAMES = {
    "gaze": "the gaze dims of PD-FGC's frozen eye head, not L2CS-Net",
    "emoca": "PD-FGC's frozen motion-trunk features, not EMOCA",
}


def perceptual_l1(net, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``sum_i mean|F_i(fake) - F_i(real)|`` over the prior's feature layers (Eq. 7)."""
    with torch.no_grad():
        ref = net(real)
    return sum(torch.nn.functional.l1_loss(f, r) for f, r in zip(net(fake), ref))


# ------------------------------------------------------------------------------ samples


def write_sample_grid(path: Path, columns: list[torch.Tensor]) -> None:
    """A JPEG grid: one row per item, one column per image batch ([B,3,H,W] in -1..1)."""
    import cv2

    from ..media import atomic_write

    cols = [((c.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1) for c in columns]
    rows = [np.concatenate([c[i].numpy() for c in cols], 1) for i in range(len(cols[0]))]
    grid = np.ascontiguousarray(np.concatenate(rows, 0)[..., ::-1])
    ok, buf = cv2.imencode(".jpg", grid, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if ok:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            tmp.write_bytes(buf.tobytes())


# --------------------------------------------------------------------------------- loop


@dataclass
class GanResult:
    """``checkpoint``: newest step folder; ``step``: steps done; ``last_row``: last logged metrics."""

    run_dir: Path
    checkpoint: Path | None
    step: int
    total: int
    last_row: dict | None
    stopped_early: bool = False


def _split(feats, b):
    return [[f[:b] for f in s] for s in feats], [[f[b:] for f in s] for s in feats]


def train_gan(
    stage_cls,
    cfg: GanConfig,
    data,
    out,
    init=None,
    max_steps: int | None = None,
    device: str | None = None,
    stop_after: int | None = None,
    ranges=None,
    hook=None,
) -> GanResult:
    """Trains ``cfg.stage`` with ``stage_cls`` (:class:`.stage1.Stage1` or :class:`.stage3.Stage3`).

    ``init``: starting checkpoint or None; ``max_steps``: total steps instead of epochs;
    ``stop_after``: return after that many steps (what an interrupted run leaves; tests);
    ``ranges``: frames used per clip (:class:`~.gan_data.GanData`); ``hook(step, stage, ckpt)``:
    called on every process after each step (after its checkpoint, if any); returning True ends
    the run (fine-tuning's early stopping)."""
    ctx = dist.setup(device)
    try:
        return _train(stage_cls, cfg, Path(data), Path(out), init, max_steps, ctx, stop_after, ranges, hook)
    finally:
        dist.cleanup(ctx)


def _train(stage_cls, cfg, data: Path, run_dir: Path, init, max_steps, ctx, stop_after, ranges, hook) -> GanResult:
    tag = f"[train {cfg.stage}]"
    init, resume = state.open_run(run_dir, cfg.to_dict(), data, GAN_RESUMABLE, init, ctx.main)

    store = ClipStore(data)
    dataset = GanData(store, cfg, ranges)
    plan = BatchPlan(len(dataset), cfg.train.batch_size, ctx.world_size, ctx.rank, cfg.run.seed)
    total = int(max_steps) if max_steps else cfg.train.epochs * plan.steps_per_epoch

    extra = (DISCRIMINATOR, *stage_cls.EXTRA_FILES)
    nets = load_gan_networks(resume or init, run_dir, stage_cls.TRAINED, extra, cfg.run.seed, ctx.main)
    nets.to(ctx.device)
    losses = stage_cls.plan_losses(cfg)
    for p in losses.priors.values():
        if isinstance(p, torch.nn.Module):
            p.to(ctx.device)
    stage = stage_cls(cfg, nets, losses, ctx)
    torch.manual_seed(cfg.run.seed + 1)
    d = cfg.discriminator
    disc = gan.MultiscaleDiscriminator(3, d.ndf, d.layers, d.scales).to(ctx.device)
    if DISCRIMINATOR in nets.extra_state:
        disc.load_state_dict(nets.extra_state[DISCRIMINATOR])
    module = stage.module
    model, dmodel = module, disc
    if ctx.distributed:
        ids = [ctx.device] if ctx.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)
        dmodel = torch.nn.parallel.DistributedDataParallel(disc, device_ids=ids)
    stage.model = model

    def adam(params, lr):
        return torch.optim.Adam(
            params, lr=lr, betas=cfg.optim.betas, eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay
        )

    opts = {name: adam(params, lr) for name, (params, lr, _, _) in stage.param_groups().items()}
    opts["discriminator"] = adam(list(disc.parameters()), d.lr)
    decay = {name: (every, gamma) for name, (_, _, every, gamma) in stage.param_groups().items()}
    decay["discriminator"] = (d.lr_decay_every, d.lr_decay)
    scheds = {n: torch.optim.lr_scheduler.StepLR(o, step_size=decay[n][0], gamma=decay[n][1]) for n, o in opts.items()}
    start = 0
    if resume is not None:
        ts = state.read_train_state(resume)
        for n in opts:
            opts[n].load_state_dict(ts["optimizers"][n])
            scheds[n].load_state_dict(ts["schedulers"][n])
        stage.load_state_dict(ts.get("stage", {}))
        start = int(ts["step"])
        rngs = ts["rng"]
        state.set_rng_state(rngs[ctx.rank] if len(rngs) == ctx.world_size else rngs[0])
        if ctx.main:
            print(f"{tag} resuming {run_dir} from {resume.name}", file=sys.stderr, flush=True)

    dtype = PRECISIONS[cfg.run.precision]

    def autocast():
        return dist.autocast(ctx.device, dtype)

    monitor = Monitor(run_dir, cfg.stage, total, start, cfg.run.log_every, cfg.run.tensorboard, ctx.main)
    loader = step_loader(dataset, plan, start, total, cfg.data.num_workers, ctx.device)
    info = {"stage": cfg.stage, "init": init, "data": str(data.resolve()), "report": nets.report.info}
    if ctx.main:
        print(
            f"{tag} {len(dataset)} items/epoch from {len(dataset.clips)} clips, {plan.steps_per_epoch} steps/epoch, "
            f"steps {start}..{total}, {ctx.world_size} process(es) on {ctx.device}, batch {cfg.train.batch_size}\n"
            f"{tag} loss terms:\n" + "\n".join(losses.lines()),
            file=sys.stderr,
            flush=True,
        )
    step, row, last, stopped = start, None, resume, False
    try:
        for step, batch in enumerate(loader, start=start):
            done = step + 1
            noise = torch.Generator().manual_seed(cfg.run.seed * 1_000_003 + step)
            # ---- generator step: D is a fixed critic here
            gan.set_requires_grad(disc, False)
            with autocast():
                fake, real, aux = stage.generate(batch, noise)
                d_fake = disc(fake)
                with torch.no_grad():
                    d_real = disc(real)
                terms = stage.generator_terms(batch, fake, real, aux, d_real, d_fake)
            loss_g = sum(losses.weights[t] * v for t, v in terms.items())
            for n in stage.param_groups():
                opts[n].zero_grad(set_to_none=True)
            loss_g.backward()
            for n in stage.param_groups():
                if stage.steps_group(n, step):
                    opts[n].step()
            # ---- discriminator step
            gan.set_requires_grad(disc, True)
            with autocast():
                d_real, d_fake = _split(dmodel(torch.cat([real, fake.detach()])), len(real))
                loss_d = gan.hinge_d(d_real, d_fake)
            opts["discriminator"].zero_grad(set_to_none=True)
            loss_d.backward()
            opts["discriminator"].step()
            stage.after_step(aux)
            for s in scheds.values():
                s.step()
            metrics = {f"loss_{t}": float(v.detach()) for t, v in terms.items()}
            metrics.update(
                loss_g=float(loss_g.detach()),
                loss_d=float(loss_d.detach()),
                d_real=float(sum(s[-1].detach().mean() for s in d_real) / len(d_real)),
                d_fake=float(sum(s[-1].detach().mean() for s in d_fake) / len(d_fake)),
                **{f"lr_{n}": scheds[n].get_last_lr()[0] for n in scheds},
            )
            row = monitor.update(done, metrics) or row
            if ctx.main and (done % cfg.run.sample_every == 0 or done == total):
                k = cfg.run.sample_count
                cols = [c[:k] for c in stage.sample_columns(batch, fake)]
                write_sample_grid(run_dir / SAMPLES / f"{state.step_name(done)}.jpg", cols)
            ckpt = None
            if done % cfg.run.checkpoint_every == 0 or done == total:
                ckpt = _checkpoint(run_dir, done, stage, nets, disc, opts, scheds, ctx, cfg, info)
                last = ckpt or last
            if hook is not None and hook(done, stage, ckpt):
                if ckpt is None:
                    last = _checkpoint(run_dir, done, stage, nets, disc, opts, scheds, ctx, cfg, info) or last
                stopped = True
                step = done
                break
            if stop_after is not None and done >= stop_after:
                return GanResult(run_dir, last, done, total, row)
        else:
            step = total
    finally:
        monitor.close()
    last = state.latest_checkpoint(run_dir)
    if ctx.main:
        print(f"{tag} done: {last} is a PD-FGC checkpoint folder (--checkpoint {last})", file=sys.stderr, flush=True)
    return GanResult(run_dir, last, step, total, row, stopped)


def _checkpoint(run_dir, done, stage, nets, disc, opts, scheds, ctx, cfg, info):
    rngs = dist.gather_objects(state.rng_state())
    path = None
    if ctx.main:
        ts = {
            "step": done,
            "optimizers": {n: o.state_dict() for n, o in opts.items()},
            "schedulers": {n: s.state_dict() for n, s in scheds.items()},
            "stage": stage.state_dict(),
            "rng": rngs,
            "world_size": ctx.world_size,
        }
        files = stage.files()
        files[DISCRIMINATOR] = {k: v.detach().cpu().clone() for k, v in disc.state_dict().items()}
        path = save_gan_checkpoint(run_dir, done, files, nets.frozen, ts, cfg.run.keep_checkpoints, info)
    dist.barrier()
    return path
