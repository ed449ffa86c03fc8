"""Disentanglement table (PD-FGC supplementary B.2, Eq. I, Tab. VI).

Drive one factor and set all others to zero, render, re-extract every factor from the frames and
measure how much each varies over time:

    Var(f) = (1/N) sum_n (1/T_n) sum_t || f_nt - mean_t f_nt ||^2

(``n`` over clips, ``t`` over frames). A disentangled model moves only the driven factor: each
column of the table peaks on the row of its own factor.

Rows (what is driven): ``mouth`` (the speech), ``pose``, ``blink`` (eye factor with gaze masked),
``gaze`` (eye factor with blink masked), ``expression``. Columns (what is measured): ``lip`` (the
motion network's lip head when the model has one, else the landmark mouth opening), ``pose``
(6), ``blink`` (eye dims 0, 1, 4, 5), ``gaze`` (eye dims 2, 3) and ``expression`` (30) from the
motion encoder. Column values are in each extractor's own units, so compare within a column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import images
from ..engine import Appearance, Engine
from ..errors import InputError
from ..factors import Factor, PostProcess, assemble_motion
from .consistency import reencode, split_eye
from .plots import heatmap
from .report import Report, markdown_table

DRIVEN = ("mouth", "pose", "blink", "gaze", "expression")
MEASURED = ("lip", "pose", "blink", "gaze", "expression")
OWN_ROW = {"lip": "mouth", "pose": "pose", "blink": "blink", "gaze": "gaze", "expression": "expression"}
_SOURCE = {"mouth": "mouth", "pose": "pose", "blink": "eye", "gaze": "eye", "expression": "expression"}


def clip_variance(x) -> float:
    """``(1/T) sum_t ||x_t - mean||^2`` of one clip's features ``[T,D]``; NaN if any value is NaN."""
    a = np.asarray(x, np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] == 0:
        raise InputError(f"variance: expected features [frames, dims], got {a.shape}")
    if not np.isfinite(a).all():
        return float("nan")
    return float(((a - a.mean(0)) ** 2).sum(1).mean())


def variance_table(features: dict[str, list[dict[str, np.ndarray]]], rows=DRIVEN, cols=MEASURED) -> np.ndarray:
    """Eq. I: ``features[row]`` is a list of clips, each ``{column: [T,D]}``; the cell is the mean over
    clips of :func:`clip_variance`. Missing rows or columns give NaN. Returns ``[len(rows), len(cols)]``."""
    out = np.full((len(rows), len(cols)), np.nan)
    for i, r in enumerate(rows):
        clips = features.get(r) or []
        for j, c in enumerate(cols):
            vals = [clip_variance(clip[c]) for clip in clips if clip.get(c) is not None]
            if vals:
                out[i, j] = float(np.mean(vals))
    return out


def single_factor_motions(
    factors: dict[str, Factor], length: int, post: PostProcess | None = None, fit: str = "loop"
) -> dict[str, torch.Tensor]:
    """For each row of :data:`DRIVEN` whose factor is in ``factors``: the motion ``[length,542]``
    with only that factor (through the pipeline's post-processing), everything else zero."""
    out = {}
    for row in DRIVEN:
        f = factors.get(_SOURCE[row])
        if f is None:
            continue
        kw = {_SOURCE[row]: f}
        if row in ("blink", "gaze"):
            kw["blink"], kw["gaze"] = row == "blink", row == "gaze"
        out[row] = assemble_motion(length, fit=fit, post=post, **kw)
    return out


def measure(
    engine: Engine,
    frames_u8,
    lip: Callable[[torch.Tensor], torch.Tensor] | None = None,
    landmarks: str | None = "dlib",
) -> tuple[dict[str, np.ndarray | None], str | None]:
    """Every column of :data:`MEASURED` on generated frames (uint8 RGB ``[T,224,224,3]``): returns
    ``({column: [T,D] or None}, lip_source)``. The lip column uses ``lip`` (an embedder on network
    frames) when given, else the landmark mouth opening when ``landmarks`` names a detector and
    faces are found; otherwise it is None."""
    from .consistency import network_chunks
    from .sync import embed_batches

    out: dict[str, np.ndarray | None] = dict(split_eye(reencode(engine, frames_u8, "generated")))
    source = None
    out["lip"] = None
    if lip is not None:
        out["lip"] = embed_batches(lip, network_chunks(frames_u8, "generated"))
        source = "lip head"
    elif landmarks:
        from .landmarks import detect_landmarks, mouth_opening

        opening = mouth_opening(detect_landmarks(frames_u8, landmarks))
        if np.isfinite(opening).all():
            out["lip"] = opening[:, None]
            source = "landmark mouth opening"
    return out, source


@dataclass
class DisentanglementResult:
    """The Eq. I table: ``matrix`` ``[rows, cols]`` (NaN where not measured), with its labels, the
    lip column's source, the frames per clip and notes."""

    matrix: np.ndarray
    rows: tuple = DRIVEN
    cols: tuple = MEASURED
    lip_source: str | None = None
    frames: int = 0
    notes: list = field(default_factory=list)

    def dominance(self) -> dict[str, float | None]:
        """Per column: its own row's variance over the largest other row's (> 1: the factor moves
        mostly when it is driven). None where not measurable."""
        out = {}
        for j, c in enumerate(self.cols):
            own = OWN_ROW[c]
            if own not in self.rows:
                out[c] = None
                continue
            i = self.rows.index(own)
            others = [self.matrix[k, j] for k in range(len(self.rows)) if k != i and np.isfinite(self.matrix[k, j])]
            v = self.matrix[i, j]
            out[c] = float(v / max(others)) if others and np.isfinite(v) and max(others) > 0 else None
        return out

    def markdown(self) -> str:
        header = ["driven \\ measured"] + list(self.cols)
        rows = [[r] + [float(v) for v in self.matrix[i]] for i, r in enumerate(self.rows)]
        return markdown_table(header, rows)

    def heatmap(self) -> np.ndarray:
        return heatmap(
            self.matrix,
            list(self.rows),
            list(self.cols),
            "Disentanglement: variance of each measured factor (Eq. I)",
            row_title="driven",
            col_title="measured",
        )

    def report(self, title: str = "PD-FGC disentanglement") -> Report:
        rep = Report(title)
        rep.add(
            "disentanglement",
            {
                "frames_per_clip": self.frames,
                "lip_column": self.lip_source or "not measured",
                "variance": {r: dict(zip(self.cols, self.matrix[i].tolist())) for i, r in enumerate(self.rows)},
                "dominance": self.dominance(),
            },
        )
        rep.tables["Variance table (rows driven, columns measured)"] = self.markdown()
        rep.plots["disentanglement"] = self.heatmap()
        for n in self.notes:
            rep.note(n)
        return rep


def disentanglement(
    engine: Engine,
    appearance: Appearance,
    factors: dict[str, Factor],
    frames: int = 50,
    *,
    post: PostProcess | None = None,
    fit: str = "loop",
    lip: Callable[[torch.Tensor], torch.Tensor] | None = None,
    landmarks: str | None = "dlib",
    batch_size: int = 8,
    noise=None,
    progress: Callable[[int], None] | None = None,
) -> DisentanglementResult:
    """Renders one clip of ``frames`` frames per driven factor (the others zero) and measures every
    factor in it (Eq. I with N = 1 clip per row).

    ``factors``: raw factors ``{mouth, pose, eye, expression}`` (any may be missing: its rows are
    NaN); ``post``: the post-processing (default official); ``lip``: the lip embedder for the lip
    column (see :func:`.sync.motion_lip_embedder`); ``landmarks``: detector for the fallback lip
    column. ``progress`` is called with the number of frames generated."""
    if int(frames) != frames or frames < 2:
        raise InputError(f"disentanglement: frames must be a whole number >= 2 (variance over time), got {frames!r}")
    motions = single_factor_motions(factors, int(frames), post=post, fit=fit)
    if not motions:
        raise InputError("disentanglement: no factors given; give at least one of mouth, pose, eye, expression")
    feats: dict[str, list] = {}
    sources = set()
    for row, motion in motions.items():
        u8 = np.concatenate(
            [
                images.network_to_u8(c)
                for c in engine.generate(appearance, motion, batch_size=batch_size, noise=noise, progress=progress)
            ]
        )
        measured, src = measure(engine, u8, lip=lip, landmarks=landmarks)
        sources.add(src)
        feats[row] = [measured]
    result = DisentanglementResult(variance_table(feats), frames=int(frames))
    lip_sources = {s for s in sources if s}
    result.lip_source = " / ".join(sorted(lip_sources)) or None
    if None in sources:
        result.notes.append(
            "lip column: no lip head in this motion network, and no faces were found for the landmark mouth "
            "opening in some clips (synthetic weights draw no faces); those cells are n/a"
        )
    still = [r for r, m in motions.items() if bool((m == m[:1]).all())]
    if still:
        result.notes.append(
            f"driven factor constant over the clip (a static driver, e.g. the bundled expression sample): "
            f"{', '.join(still)}; nothing moves in those rows"
        )
    missing = [r for r in DRIVEN if r not in motions]
    if missing:
        result.notes.append(f"rows not driven (factor not given): {', '.join(missing)}")
    return result
