"""Networks in and out of a training run: the init checkpoint, step checkpoints, exact resume.

A run folder (``--out RUN``)::

    RUN/config.json                  the resolved configuration (a resumed run must match it)
    RUN/metrics.csv, RUN/tb/         logs (:mod:`.monitor`)
    RUN/checkpoints/step_00002000/   an official four-file checkpoint folder (load_models, the CLI
                                     and the ComfyUI nodes load it as it is) + train_state.pt + info.json
    RUN/checkpoints/latest           name of the newest complete step folder
    RUN/checkpoints/.frozen/         the networks this stage does not train, written once and
                                     hard-linked (or copied) into every step folder

``motion_model.pth`` and ``audio_model.pth`` keep every key of the init files (also the ones
inference ignores) with the trained values replaced, plus the lip head (``to_mouth``,
``mouth_embed``). ``train_state.pt`` holds the optimiser, the scheduler, the step and every
process's RNG states; the data position is the step (:class:`~.data.BatchPlan`). A step folder
appears complete or not at all (written under a temporary name, then renamed).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..checkpoints import OFFICIAL_FILES, LoadReport, open_checkpoint
from ..checkpoints.validate import _load_network  # the one per-network validating loader
from ..errors import CheckpointError, InputError
from ..networks import build_network
from .heads import LIP_PREFIXES, LipHead

CHECKPOINTS = "checkpoints"
LATEST = "latest"
FROZEN = ".frozen"
STATE = "train_state.pt"
INFO = "info.json"
CONFIG = "config.json"
TRAINED = ("motion", "audio")
"""Networks written at every checkpoint (stage 2 trains motion heads and the audio encoder); the
appearance encoder and the generator are frozen."""
FROZEN_NETS = ("appearance", "generator")


@dataclass
class Networks:
    """What a stage-2 run holds: the motion and audio encoders, the lip head, the untouched keys of
    their source files (``raw``), and where the frozen networks' files are."""

    motion: torch.nn.Module
    audio: torch.nn.Module
    lip: LipHead
    raw: dict[str, dict] = field(default_factory=dict)
    frozen: dict[str, Path] = field(default_factory=dict)
    report: LoadReport = field(default_factory=LoadReport)

    def to(self, device) -> Networks:
        for m in (self.motion, self.audio, self.lip):
            m.to(device)
        return self


def _split_lip(raw: dict) -> dict:
    return {k: v for k, v in raw.items() if k.startswith(LIP_PREFIXES)}


def _load_lip(lip: LipHead, keys: dict, where: str, report: LoadReport) -> None:
    if not keys:
        report.note(f"{where}: no lip head (to_mouth, mouth_embed): it starts from a random initialisation")
        return
    want = lip.state_dict()
    keys = {  # BatchNorm counters are saved as () or (1,)
        k: v.reshape(want[k].shape) if k.endswith("num_batches_tracked") and k in want and v.numel() == 1 else v
        for k, v in keys.items()
    }
    missing = [k for k in want if k not in keys]
    bad = [k for k in want if k in keys and tuple(keys[k].shape) != tuple(want[k].shape)]
    if missing or bad:
        raise CheckpointError(
            f"{where}: the lip head keys are incomplete or mis-shaped (missing {missing[:3]}, wrong shape {bad[:3]}); "
            f"the file is not a PD-FGC motion checkpoint."
        )
    sd = {k: keys[k].to(want[k].dtype) for k in want}
    if not all(bool(torch.isfinite(v).all()) for v in sd.values() if v.is_floating_point()):
        raise CheckpointError(f"{where}: the lip head holds NaN or infinite values; the checkpoint is damaged.")
    lip.load_state_dict(sd)


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.part")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _save_atomic(obj, path: Path) -> None:
    from ..media import atomic_write

    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def load_networks(source, run_dir, seed: int = 0, write_frozen: bool = True) -> Networks:
    """Networks from ``source`` (official folder / checkpoints.tar / our .safetensors / a step
    folder), or freshly initialised from ``seed`` when ``source`` is None. Every network is
    validated like :func:`~pdfgc_core.checkpoints.load_models`; with ``write_frozen`` the frozen
    networks go to ``RUN/checkpoints/.frozen`` (once; reused when already there)."""
    frozen_dir = Path(run_dir) / CHECKPOINTS / FROZEN
    frozen = {net: frozen_dir / OFFICIAL_FILES[net] for net in FROZEN_NETS}
    need_frozen = write_frozen and not all(p.is_file() for p in frozen.values())
    if need_frozen:
        frozen_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)  # a lip head missing from the source starts from a seeded random draw
    lip = LipHead()
    if source is None:
        report = LoadReport(source="random initialisation", kind="scratch")
        nets = Networks(build_network("motion"), build_network("audio"), lip, {}, frozen, report)
        nets.report.note(f"networks initialised randomly (seed {seed}); no --init checkpoint")
        if need_frozen:
            for net in FROZEN_NETS:
                _save_atomic(build_network(net).state_dict(), frozen[net])
        return nets
    raw, modules = {}, {}
    with open_checkpoint(source) as (kind, meta, readers):
        report = LoadReport(source=str(source), kind=kind)
        if meta.get("synthetic") == "true":
            report.warn(f"{source}: SYNTHETIC weights (tests only)")
        for net in TRAINED:
            where, read = readers[net]
            raw[net] = without_data_parallel_prefix(read())
            modules[net] = _load_network(net, where, dict(raw[net]), report)
            if net == "motion":
                _load_lip(lip, _split_lip(raw[net]), where, report)
        if need_frozen:
            for net in FROZEN_NETS:
                where, read = readers[net]
                sd = read()
                _load_network(net, where, dict(sd), report)  # validates; the module is dropped
                if kind == "official-folder" and Path(where).is_file():
                    _link_or_copy(Path(where), frozen[net])
                else:
                    _save_atomic(sd, frozen[net])
                del sd
    return Networks(modules["motion"], modules["audio"], lip, raw, frozen, report)


def merged_state(raw: dict, *state_dicts: dict) -> OrderedDict:
    """``raw``'s keys in their order (and shapes) with values from ``state_dicts`` where they have the
    key (later ones win), then the keys only ``state_dicts`` have. Tensors are detached CPU copies."""
    new = {}
    for sd in state_dicts:
        new.update(sd)
    out = OrderedDict()
    for k, v in raw.items():
        if k in new:  # keep the file's shape (BatchNorm counters: () or (1,))
            t = new.pop(k)
            out[k] = t.reshape(v.shape) if t.shape != v.shape and t.numel() == v.numel() else t
        else:
            out[k] = v
    out.update(new)
    return OrderedDict((k, v.detach().to("cpu").clone().contiguous()) for k, v in out.items())


def network_state_dicts(nets: Networks) -> dict[str, OrderedDict]:
    """The motion and audio files' contents: official keys, trained values, lip head included."""
    return {
        "motion": merged_state(nets.raw.get("motion", {}), nets.motion.state_dict(), nets.lip.state_dict()),
        "audio": merged_state(nets.raw.get("audio", {}), nets.audio.state_dict()),
    }


def step_name(step: int) -> str:
    return f"step_{step:08d}"


def save_checkpoint(run_dir, step: int, nets: Networks, train_state: dict, keep: int, info: dict) -> Path:
    """Writes ``RUN/checkpoints/step_<step>/`` (four official files + train_state.pt + info.json),
    points ``latest`` at it and deletes all but the ``keep`` newest step folders."""
    from ..media import atomic_write

    root = Path(run_dir) / CHECKPOINTS
    final = root / step_name(step)
    tmp = root / f".{step_name(step)}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for net, sd in network_state_dicts(nets).items():
        torch.save(sd, tmp / OFFICIAL_FILES[net])
    for net, path in nets.frozen.items():
        _link_or_copy(path, tmp / OFFICIAL_FILES[net])
    torch.save(train_state, tmp / STATE)
    (tmp / INFO).write_text(json.dumps({**info, "step": step, "time": time.time()}, indent=1), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    with atomic_write(root / LATEST) as t:
        t.write_text(final.name, encoding="utf-8")
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in steps[: max(0, len(steps) - keep)]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir) -> Path | None:
    """The newest complete step folder of a run, or None."""
    root = Path(run_dir) / CHECKPOINTS
    p = root / LATEST
    if p.is_file():
        step = root / p.read_text(encoding="utf-8").strip()
        if (step / STATE).is_file():
            return step
    steps = sorted(p for p in root.glob("step_*") if (p / STATE).is_file())
    return steps[-1] if steps else None


def read_train_state(step_dir) -> dict:
    path = Path(step_dir) / STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged files
        raise CheckpointError(
            f"{path}: training state cannot be read ({e}); resume from an older step folder."
        ) from None


# ------------------------------------------------------------------------------------ RNG


def rng_state() -> dict:
    """This process's RNG states (torch, CUDA, numpy, random) in a form ``torch.load(weights_only=True)`` reads."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(np.asarray(keys, np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def without_data_parallel_prefix(sd: dict) -> dict:
    """A state dict saved from a ``DataParallel`` / DDP wrapper (every key ``module.…``) with the
    prefix removed; any other state dict unchanged."""
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module.") :]: v for k, v in sd.items()}
    return sd


# ------------------------------------------------------------------------------ run folder


def check_run(run_dir, cfg_dict: dict, data: str, resumable_changes) -> dict | None:
    """The saved configuration of an existing run (None for a new run). A different stage, dataset
    or a changed setting outside ``resumable_changes`` raises :class:`InputError`."""
    p = Path(run_dir) / CONFIG
    if not p.is_file():
        return None
    try:
        saved = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{p} cannot be read ({e}); use a new --out folder.") from None
    if saved.get("config", {}).get("stage") != cfg_dict["stage"]:
        raise InputError(
            f"{run_dir} is a {saved.get('config', {}).get('stage')!r} run; this command trains {cfg_dict['stage']!r}. "
            "Use another --out folder."
        )
    diff = []
    for section, values in cfg_dict.items():
        if section == "stage":
            continue
        for k, v in values.items():
            if saved["config"].get(section, {}).get(k) != v and (section, k) not in resumable_changes:
                diff.append(f"{section}.{k} ({saved['config'].get(section, {}).get(k)!r} -> {v!r})")
    if diff:
        raise InputError(
            f"{run_dir} was started with other settings: {', '.join(diff)}. Resume it with the same "
            "settings, or use a new --out folder."
        )
    if Path(saved.get("data", "")).resolve() != Path(data).resolve():
        raise InputError(f"{run_dir} was trained on {saved.get('data')}; this command gives --data {data}.")
    return saved


def open_run(run_dir: Path, cfg_dict: dict, data: Path, resumable_changes, init, main: bool):
    """Starts or reopens the run folder ``run_dir``: ``(init, resume)``, the starting checkpoint
    (an existing run keeps the one it was started from; another ``init`` raises
    :class:`InputError`) and the newest checkpoint to resume from (None for a new run). A new run's
    configuration is written by the main process; every process then meets at a barrier."""
    from . import dist

    init = None if init is None else str(Path(init).expanduser().resolve())
    saved = check_run(run_dir, cfg_dict, str(data), resumable_changes)
    if saved is not None:
        if init is not None and init != saved.get("init"):
            raise InputError(
                f"{run_dir} was started from --init {saved.get('init')}; resume it with that, or use a new --out."
            )
        init = saved.get("init")
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir, {"config": cfg_dict, "data": str(data.resolve()), "init": init})
    dist.barrier()
    return init, (latest_checkpoint(run_dir) if saved is not None else None)


def write_config(run_dir, record: dict) -> None:
    from ..media import atomic_write

    with atomic_write(Path(run_dir) / CONFIG) as tmp:
        tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
