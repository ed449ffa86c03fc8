"""Encoders and generator wired together: appearance, four motion factors, frames.

``Engine`` owns the loaded networks and runs them on one device and precision. Its methods take
network tensors ([B,3,224,224] float32 in -1..1, mel windows [T,1,80,20]) and return CPU float32
results, so the ComfyUI nodes and the command line share one implementation. Generation is a
generator of chunks: callers stream frames to disk or collect them, and memory does not grow with
the clip length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import torch

from .checkpoints import PDFGCModels
from .errors import InputError
from .factors import FACTOR_DIMS, MOTION_ORDER, Factor

log = logging.getLogger("pdfgc")

MOTION_DIM = sum(FACTOR_DIMS.values())
APPEARANCE_DIM = 2048
STYLE_DIM = APPEARANCE_DIM + MOTION_DIM
DRIVER_HEADS = ("pose", "eye", "expression")
OFFICIAL_BATCH = 8

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Appearance:
    """The appearance code of one portrait: ``id_vector`` [1,2048] and ``id_map`` [1,512,7,7],
    float32 on CPU."""

    id_vector: torch.Tensor
    id_map: torch.Tensor


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """``auto`` is bf16 on a CUDA device that supports it (else fp16), fp32 elsewhere."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if precision not in _DTYPES:
        raise InputError(f"precision {precision!r} is not one of auto, fp32, fp16, bf16")
    return _DTYPES[precision]


class Engine:
    """Runs the PD-FGC networks.

    ``models`` stay in float32; ``precision`` other than fp32 uses autocast on CUDA (fp16/bf16) with a
    fallback to fp32 for any generator batch that comes out non-finite. ``impl`` selects the
    generator path: ``"fast"`` (default) or ``"reference"`` (the official grouped-convolution math).
    """

    def __init__(self, models: PDFGCModels, device=None, precision: str = "fp32", impl: str = "fast"):
        self.models = models
        self.device = torch.device(device) if device is not None else models.device
        self.dtype = resolve_precision(precision, self.device)
        if impl not in ("fast", "reference"):
            raise InputError(f"generator implementation {impl!r} is not 'fast' or 'reference'")
        self.impl = impl
        models.to(self.device)

    # ------------------------------------------------------------------ helpers
    def _autocast(self):
        enabled = self.dtype != torch.float32 and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=enabled)

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, torch.float32, non_blocking=True)

    @staticmethod
    def _check_images(x: torch.Tensor, name: str) -> None:
        if not torch.is_tensor(x) or x.dim() != 4 or tuple(x.shape[1:]) != (3, 224, 224):
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise InputError(f"{name}: expected network images [B,3,224,224], got {shape}")
        if x.shape[0] == 0:
            raise InputError(f"{name}: the image batch is empty; give at least one frame")

    # ------------------------------------------------------------------ encoders
    @torch.inference_mode()
    def encode_appearance(self, image: torch.Tensor) -> Appearance:
        """``image`` [1,3,224,224] float32 -1..1 (the first image is used if B > 1)."""
        self._check_images(image, "appearance image")
        with self._autocast():
            vec, idmap = self.models.appearance(self._in(image[:1]))
        return Appearance(vec.float().cpu(), idmap.float().cpu())

    @torch.inference_mode()
    def encode_mouth(self, windows: torch.Tensor, fps: float = 25.0, batch_size: int = OFFICIAL_BATCH,
                     progress: Callable[[int], None] | None = None) -> Factor:
        """Mel windows [T,1,80,20] -> mouth factor [T,500] (raw, before the official x1.5 and smoothing).

        ``batch_size`` 8 reproduces the official batching exactly; other sizes move results by ~5e-6."""
        if windows.dim() != 4 or tuple(windows.shape[1:]) != (1, 80, 20) or windows.shape[0] == 0:
            raise InputError(f"audio windows: expected [T,1,80,20] with T >= 1, got {tuple(windows.shape)}")
        out = []
        for s in range(0, windows.shape[0], batch_size):
            with self._autocast():
                out.append(self.models.audio(self._in(windows[s:s + batch_size])).float().cpu())
            if progress:
                progress(out[-1].shape[0])
        return Factor("mouth", torch.cat(out), fps=fps)

    @torch.inference_mode()
    def encode_drivers(self, images: torch.Tensor | Iterable[torch.Tensor], heads: Sequence[str] = DRIVER_HEADS,
                       fps: float = 25.0, batch_size: int = 16,
                       progress: Callable[[int], None] | None = None) -> dict[str, Factor]:
        """Driving frames -> raw factors ``{head: Factor [N,D]}`` for the requested heads only.

        ``images``: [N,3,224,224] float32 -1..1, or an iterable of such chunks (streaming: only the
        embeddings are kept). Each frame is encoded once whatever the number of heads."""
        heads = tuple(heads)
        bad = [h for h in heads if h not in DRIVER_HEADS]
        if bad or not heads:
            raise InputError(f"driver heads {heads}: choose from {DRIVER_HEADS}")
        chunks = [images] if torch.is_tensor(images) else images
        acc: dict[str, list[torch.Tensor]] = {h: [] for h in heads}
        n = 0
        for chunk in chunks:
            self._check_images(chunk, "driving frames")
            for s in range(0, chunk.shape[0], batch_size):
                with self._autocast():
                    res = self.models.motion(self._in(chunk[s:s + batch_size]), heads=heads)
                for h in heads:
                    acc[h].append(res[h].float().cpu())
                if progress:
                    progress(min(batch_size, chunk.shape[0] - s))
            n += chunk.shape[0]
        if n == 0:
            raise InputError("driving frames: no frames were given; give at least one frame")
        return {h: Factor(h, torch.cat(acc[h]), fps=fps) for h in heads}

    # ------------------------------------------------------------------ generator
    @staticmethod
    def style(appearance: Appearance, motion: torch.Tensor) -> torch.Tensor:
        """[T,2590] = [appearance id_vector 2048 | motion 542] per frame."""
        if motion.dim() != 2 or motion.shape[1] != MOTION_DIM:
            raise InputError(f"motion: expected [T,{MOTION_DIM}] ({' | '.join(MOTION_ORDER)}), got {tuple(motion.shape)}")
        if not bool(torch.isfinite(motion).all()):
            raise InputError("motion: contains NaN or infinite values; check the factor strengths and inputs")
        return torch.cat([appearance.id_vector.expand(motion.shape[0], -1), motion.float()], dim=1)

    @torch.inference_mode()
    def generate(self, appearance: Appearance, motion: torch.Tensor, *, batch_size: int = OFFICIAL_BATCH,
                 noise: torch.Generator | int | None = None,
                 progress: Callable[[int], None] | None = None,
                 check_interrupt: Callable[[], None] | None = None) -> Iterator[torch.Tensor]:
        """Yields frames in chunks of ``batch_size``: [b,3,224,224] float32 CPU, -1..1 RGB.

        ``noise``: None uses the checkpoint's stored noise maps (deterministic, the parity default);
        an int or ``torch.Generator`` draws seeded noise once for the whole clip."""
        style = self.style(appearance, motion)
        if style.shape[0] == 0:
            raise InputError("motion: zero frames to generate")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        noise_maps = self._noise(noise)
        id_map = self._in(appearance.id_map)
        for s in range(0, style.shape[0], batch_size):
            if check_interrupt:
                check_interrupt()
            st = self._in(style[s:s + batch_size])
            with self._autocast():
                img = self.models.generator(id_map, st, impl=self.impl, noise=noise_maps)
            img = img.float()
            if self.dtype != torch.float32 and not bool(torch.isfinite(img).all()):
                log.warning("generator produced non-finite values in %s; recomputing frames %d-%d in fp32",
                            self.dtype, s, s + st.shape[0] - 1)
                img = self.models.generator(id_map, st, impl=self.impl, noise=noise_maps).float()
            if not bool(torch.isfinite(img).all()):
                raise InputError(
                    f"the generator produced NaN/inf for frames {s}-{s + st.shape[0] - 1}: the style (largest |value| "
                    f"{float(st.abs().max()):.3g}) is far outside what the network was trained on. Lower the factor "
                    f"strengths (a few units at most) or check the appearance and factor inputs.")
            yield img.cpu()
            if progress:
                progress(st.shape[0])

    def _noise(self, noise):
        if noise is None:
            return None
        g = noise if isinstance(noise, torch.Generator) else torch.Generator().manual_seed(int(noise))
        return [n.to(self.device) for n in self.models.generator.draw_noise(g)]

    def generate_all(self, appearance: Appearance, motion: torch.Tensor, **kw) -> torch.Tensor:
        """All frames at once: [T,3,224,224] float32 (memory grows with T; prefer ``generate``)."""
        return torch.cat(list(self.generate(appearance, motion, **kw)))

