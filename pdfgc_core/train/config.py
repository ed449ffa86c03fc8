"""Training configuration: typed dataclasses filled from ``configs/stage2.toml``.

The TOML file is the one place for every default (with its source in a comment); the dataclasses
only say which keys exist, their types and their allowed values. A user file (``--config``) and
``--set SECTION.KEY=VALUE`` overrides are merged over the defaults; an unknown section or key, a
wrong type or a value out of range raises :class:`~pdfgc_core.errors.InputError` naming it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

DEFAULTS = Path(__file__).resolve().parent / "configs" / "stage2.toml"
STAGES = ("lip", "eye", "pose")


@dataclass(frozen=True)
class OptimConfig:
    """Adam settings shared by the heads."""

    betas: tuple[float, float]
    eps: float
    weight_decay: float


@dataclass(frozen=True)
class HeadConfig:
    """Schedule of one head: ``lr`` multiplied by ``lr_decay`` every ``lr_decay_every`` steps,
    ``batch_size`` items per step over all processes, ``epochs`` passes over the data."""

    lr: float
    lr_decay: float
    lr_decay_every: int
    batch_size: int
    epochs: int


@dataclass(frozen=True)
class LipConfig(HeadConfig):
    negatives: int
    min_offset: int
    temperature: float
    negatives_from: str
    audio_trainable: str


@dataclass(frozen=True)
class EyeConfig(HeadConfig):
    temperature: float
    min_gap: int


@dataclass(frozen=True)
class PoseConfig(HeadConfig):
    pass


@dataclass(frozen=True)
class DataConfig:
    items_per_clip: int
    resample_each_epoch: bool
    num_workers: int


@dataclass(frozen=True)
class RunConfig:
    seed: int
    log_every: int
    checkpoint_every: int
    keep_checkpoints: int
    batchnorm: str
    precision: str
    trunk_cache: bool
    tensorboard: str


SECTIONS = {
    "optim": OptimConfig,
    "lip": LipConfig,
    "eye": EyeConfig,
    "pose": PoseConfig,
    "data": DataConfig,
    "run": RunConfig,
}

CHOICES = {
    ("lip", "negatives_from"): ("clip", "clip+batch"),
    ("lip", "audio_trainable"): ("all", "head"),
    ("run", "batchnorm"): ("auto", "frozen", "batch"),
    ("run", "precision"): ("fp32", "bf16", "fp16"),
    ("run", "tensorboard"): ("auto", "on", "off"),
}

POSITIVE = {"lr", "lr_decay", "lr_decay_every", "batch_size", "epochs", "temperature", "eps", "items_per_clip"}
POSITIVE |= {"log_every", "checkpoint_every", "keep_checkpoints", "negatives", "min_offset", "min_gap"}

RESUMABLE_CHANGES = {("run", "log_every"), ("run", "checkpoint_every"), ("run", "keep_checkpoints")}
RESUMABLE_CHANGES |= {("run", "tensorboard"), ("data", "num_workers")}
"""Keys a resumed run may change; any other difference from the saved configuration is refused."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a stage-2 run needs besides its paths. ``head`` is the trained head's section."""

    stage: str
    optim: OptimConfig
    lip: LipConfig
    eye: EyeConfig
    pose: PoseConfig
    data: DataConfig
    run: RunConfig

    @property
    def head(self) -> HeadConfig:
        return getattr(self, self.stage)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict ``{"stage": ..., section: {key: value}}``."""
        out = {"stage": self.stage}
        for name in SECTIONS:
            out[name] = {
                k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(getattr(self, name)).items()
            }
        return out

    def differences(self, other: TrainConfig) -> list[tuple[str, str]]:
        """``(section, key)`` pairs whose values differ (``("stage", "")`` for another head)."""
        a, b = self.to_dict(), other.to_dict()
        diff = [("stage", "")] if a["stage"] != b["stage"] else []
        for name in SECTIONS:
            diff += [(name, k) for k in a[name] if a[name][k] != b[name][k]]
        return diff


def _loads(text: str, where: str) -> dict:
    if tomllib is None:  # pragma: no cover - Python 3.10 without tomli
        raise InputError("reading TOML configuration files needs Python 3.11+ or `pip install tomli`.")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{where}: not valid TOML ({e}).") from None


def read_toml(path) -> dict:
    """A TOML file as a dict; :class:`InputError` for a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"configuration file {p} does not exist.")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"configuration file {p} cannot be read ({e}).") from None
    return _loads(text, str(p))


def parse_override(item: str) -> tuple[str, str, object]:
    """``"lip.lr=1e-4"`` -> ``("lip", "lr", 1e-4)``; the value is read as TOML (strings may be bare)."""
    key, sep, raw = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise InputError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. lip.lr=1e-4.")
    try:
        value = _loads(f"v = {raw.strip()}", f"--set {item!r}")["v"]
    except InputError:
        value = raw.strip()  # a bare word such as head / bf16
    return section, name, value


def _merge(base: dict, extra: dict, where: str) -> None:
    for section, values in extra.items():
        if section not in SECTIONS:
            raise InputError(f"{where}: unknown section [{section}]; sections are {', '.join(SECTIONS)}.")
        if not isinstance(values, dict):
            raise InputError(f"{where}: [{section}] must be a table of keys.")
        known = {f.name for f in dataclasses.fields(SECTIONS[section])}
        for key, value in values.items():
            if key not in known:
                raise InputError(f"{where}: unknown key {section}.{key}; [{section}] has {', '.join(sorted(known))}.")
            base[section][key] = value


def _coerce(section: str, key: str, typ, value):
    where = f"{section}.{key}"
    if typ in (int, "int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where} = {value!r}: expected a whole number.")
    elif typ in (float, "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where} = {value!r}: expected a number.")
        value = float(value)
    elif typ in (bool, "bool"):
        if not isinstance(value, bool):
            raise InputError(f"{where} = {value!r}: expected true or false.")
    elif typ in (str, "str"):
        if not isinstance(value, str):
            raise InputError(f"{where} = {value!r}: expected a string.")
        allowed = CHOICES.get((section, key))
        if allowed and value not in allowed:
            raise InputError(f"{where} = {value!r}: choose one of {', '.join(allowed)}.")
    else:  # betas
        if not (
            isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
        ):
            raise InputError(f"{where} = {value!r}: expected two numbers, e.g. [0.0, 0.99].")
        value = (float(value[0]), float(value[1]))
        if not all(0.0 <= v < 1.0 for v in value):
            raise InputError(f"{where} = {value!r}: both betas must lie in [0, 1).")
    if key in POSITIVE and not value > 0:
        raise InputError(f"{where} = {value!r}: must be positive.")
    if key in ("weight_decay", "num_workers") and value < 0:
        raise InputError(f"{where} = {value!r}: must not be negative.")
    return value


def build(stage: str, values: dict) -> TrainConfig:
    """A :class:`TrainConfig` from ``{section: {key: value}}`` (all keys present)."""
    if stage not in STAGES:
        raise InputError(f"stage {stage!r} is unknown; choose one of {', '.join(STAGES)}.")
    sections = {}
    for name, cls in SECTIONS.items():
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in values.get(name, {}):
                raise InputError(f"configuration: {name}.{f.name} is missing (the defaults file is incomplete).")
            kwargs[f.name] = _coerce(name, f.name, f.type, values[name][f.name])
        sections[name] = cls(**kwargs)
    cfg = TrainConfig(stage=stage, **sections)
    if cfg.lip.lr_decay > 1 or cfg.eye.lr_decay > 1 or cfg.pose.lr_decay > 1:
        raise InputError("lr_decay must be at most 1 (it multiplies the learning rate).")
    return cfg


def load_config(stage: str, config_file=None, overrides=()) -> TrainConfig:
    """Defaults, then ``config_file`` (TOML), then ``overrides`` (``"section.key=value"`` strings)."""
    values = copy.deepcopy(read_toml(DEFAULTS))
    if config_file is not None:
        _merge(values, read_toml(config_file), str(config_file))
    for item in overrides:
        section, key, value = parse_override(item)
        _merge(values, {section: {key: value}}, f"--set {item}")
    return build(stage, values)


def from_dict(d: dict) -> TrainConfig:
    """Inverse of :meth:`TrainConfig.to_dict` (e.g. a run's saved ``config.json``)."""
    try:
        return build(d["stage"], {k: v for k, v in d.items() if k != "stage"})
    except (KeyError, TypeError, AttributeError) as e:
        raise InputError(f"saved configuration cannot be read ({e}).") from None


def dumps(cfg: TrainConfig) -> str:
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=False)
