"""Encoders and generator wired together: appearance, four motion factors, frames.

``Engine`` owns the loaded networks and runs them on one device and precision. Its methods take
network tensors ([B,3,224,224] float32 in -1..1, mel windows [T,1,80,20]) and return CPU float32
results, so the ComfyUI nodes and the command line share one implementation. Generation is a
generator of chunks: callers stream frames to disk or collect them, and memory does not grow with
the clip length.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from .checkpoints import PDFGCModels
from .errors import InputError
from .factors import DEFAULT_FPS, MOTION_DIM, MOTION_ORDER, Factor
from .networks.appearance import APPEARANCE_DIM
from .networks.blocks import check_batch
from .networks.generator import IMPLS as GENERATOR_IMPLS
from .networks.generator import STYLE_DIM
from .networks.motion import HEADS

log = logging.getLogger("pdfgc")

__all__ = [
    "APPEARANCE_DIM",
    "DRIVER_HEADS",
    "DTYPES",
    "GENERATOR_IMPLS",
    "MOTION_DIM",
    "OFFICIAL_BATCH",
    "PRECISIONS",
    "STYLE_DIM",
    "Appearance",
    "Engine",
    "auto_batch_size",
    "free_memory_mib",
    "resolve_precision",
]

DRIVER_HEADS = tuple(HEADS)
"""The factors a driving video gives, one motion-encoder head each: pose, eye, expression."""
OFFICIAL_BATCH = 8

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISIONS = ("auto", *DTYPES)
"""Engine precisions: ``auto`` (bf16 / fp16 on CUDA, fp32 elsewhere) or a fixed dtype."""

GENERATOR_MIB_PER_FRAME = {torch.float32: 64, torch.float16: 40, torch.bfloat16: 40}
"""Working memory of one frame in the fast generator path. fp32: measured on CPU (peak RSS ~60 MiB
per frame above a fixed ~210 MiB at batch 1 to 8); fp16 / bf16: an estimate (autocast keeps
some fp32 tensors)."""
AUTO_MAX_BATCH = {"cpu": OFFICIAL_BATCH, "cuda": 64}
"""Largest automatic batch: on CPU bigger batches do not raise the frame rate; on a GPU 64 frames
(~8 TFLOP per call) fill the device."""


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
    if precision not in DTYPES:
        raise InputError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return DTYPES[precision]


def free_memory_mib(device) -> float:
    """Memory that can be allocated on ``device`` now, MiB: ``torch.cuda.mem_get_info`` on CUDA, the
    kernel's MemAvailable (psutil / /proc/meminfo; free pages elsewhere) on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] / 2**20
    try:
        import psutil

        return psutil.virtual_memory().available / 2**20
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (ValueError, OSError, AttributeError):
        return float(GENERATOR_MIB_PER_FRAME[torch.float32] * OFFICIAL_BATCH * 4)


def auto_batch_size(
    device="cpu", dtype: torch.dtype | str = torch.float32, *, max_batch: int | None = None, fraction: float = 0.5
) -> int:
    """A generator batch size for :meth:`Engine.generate` from the memory free on ``device`` now.

    Uses ``fraction`` of the free memory at :data:`GENERATOR_MIB_PER_FRAME` per frame, rounded down
    to a power of two, between 1 and ``max_batch`` (default :data:`AUTO_MAX_BATCH`: 8 on CPU, 64 on
    CUDA). ``dtype``: the engine's precision (torch dtype or ``fp32`` / ``fp16`` / ``bf16``)."""
    device = torch.device(device)
    if isinstance(dtype, str):
        dtype = resolve_precision(dtype, device)
    cap = int(max_batch) if max_batch is not None else AUTO_MAX_BATCH.get(device.type, OFFICIAL_BATCH)
    if cap < 1:
        raise InputError(f"max_batch must be >= 1, got {max_batch!r}")
    per_frame = GENERATOR_MIB_PER_FRAME.get(dtype, GENERATOR_MIB_PER_FRAME[torch.float32])
    fits = int(free_memory_mib(device) * fraction // per_frame)
    n = 1
    while n * 2 <= min(fits, cap):
        n *= 2
    return n


class Engine:
    """Runs the PD-FGC networks.

    ``models`` stay in float32; ``precision`` other than fp32 uses autocast on CUDA (fp16/bf16) with a
    fallback to fp32 for any generator batch that comes out non-finite. ``impl`` selects the
    generator path: ``"fast"`` (default) or ``"reference"`` (the official grouped-convolution math).
    ``compile=True`` runs the generator through ``torch.compile`` where it works (the first batch of
    each shape compiles, minutes on CPU); if compiling fails the engine logs it and runs eagerly.
    """

    def __init__(
        self, models: PDFGCModels, device=None, precision: str = "fp32", impl: str = "fast", compile: bool = False
    ):
        self.models = models
        self.device = torch.device(device) if device is not None else models.device
        self.dtype = resolve_precision(precision, self.device)
        if impl not in GENERATOR_IMPLS:
            raise InputError(f"generator implementation {impl!r} is not one of {', '.join(GENERATOR_IMPLS)}")
        self.impl = impl
        models.to(self.device)
        self._generator = models.generator
        if compile:
            if hasattr(torch, "compile"):
                self._generator = torch.compile(models.generator)
            else:
                log.warning(
                    "torch.compile is not available in torch %s; running the generator eagerly", torch.__version__
                )

    def auto_batch_size(self, max_batch: int | None = None) -> int:
        """:func:`auto_batch_size` for this engine's device and precision."""
        return auto_batch_size(self.device, self.dtype, max_batch=max_batch)

    # ------------------------------------------------------------------ helpers
    def _autocast(self):
        enabled = self.dtype != torch.float32 and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=enabled)

    def _run_generator(self, id_map, style, noise_maps) -> torch.Tensor:
        try:
            return self._generator(id_map, style, impl=self.impl, noise=noise_maps)
        except (InputError, torch.cuda.OutOfMemoryError):
            raise
        except Exception as e:  # compile errors surface at the first call
            if self._generator is self.models.generator:
                raise
            log.warning(
                "torch.compile failed (%s: %s); running the generator eagerly",
                type(e).__name__,
                str(e).splitlines()[0][:200] if str(e) else "",
            )
            self._generator = self.models.generator
            return self._generator(id_map, style, impl=self.impl, noise=noise_maps)

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
    def encode_mouth(
        self,
        windows: torch.Tensor,
        fps: float = DEFAULT_FPS,
        batch_size: int = OFFICIAL_BATCH,
        progress: Callable[[int], None] | None = None,
    ) -> Factor:
        """Mel windows [T,1,80,20] -> mouth factor [T,500] (raw, before the official x1.5 and smoothing).

        ``batch_size`` 8 reproduces the official batching exactly; other sizes move results by ~5e-6."""
        check_batch(windows, (1, 80, 20), "audio windows", "make them with pdfgc_core.audio.audio_to_windows.")
        out = []
        for s in range(0, windows.shape[0], batch_size):
            with self._autocast():
                out.append(self.models.audio(self._in(windows[s : s + batch_size])).float().cpu())
            if progress:
                progress(out[-1].shape[0])
        return Factor("mouth", torch.cat(out), fps=fps)

    @torch.inference_mode()
    def encode_drivers(
        self,
        images: torch.Tensor | Iterable[torch.Tensor],
        heads: Sequence[str] = DRIVER_HEADS,
        fps: float = DEFAULT_FPS,
        batch_size: int = 16,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Factor]:
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
                    res = self.models.motion(self._in(chunk[s : s + batch_size]), heads=heads)
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
            raise InputError(
                f"motion: expected [T,{MOTION_DIM}] ({' | '.join(MOTION_ORDER)}), got {tuple(motion.shape)}"
            )
        if not bool(torch.isfinite(motion).all()):
            raise InputError("motion: contains NaN or infinite values; check the factor strengths and inputs")
        return torch.cat([appearance.id_vector.expand(motion.shape[0], -1), motion.float()], dim=1)

    @torch.inference_mode()
    def generate(
        self,
        appearance: Appearance,
        motion: torch.Tensor,
        *,
        batch_size: int = OFFICIAL_BATCH,
        noise: torch.Generator | int | None = None,
        progress: Callable[[int], None] | None = None,
        check_interrupt: Callable[[], None] | None = None,
    ) -> Iterator[torch.Tensor]:
        """Yields frames in chunks of ``batch_size``: [b,3,224,224] float32 CPU, -1..1 RGB.

        ``noise``: None uses the checkpoint's stored noise maps (deterministic, the parity default);
        an int or ``torch.Generator`` draws seeded noise once for the whole clip."""
        self.style(appearance, motion[:0])  # checks the shape; the style is built per batch
        if motion.shape[0] == 0:
            raise InputError("motion: zero frames to generate")
        if not bool(torch.isfinite(motion).all()):
            raise InputError("motion: contains NaN or infinite values; check the factor strengths and inputs")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        noise_maps = self._noise(noise)
        id_map = self._in(appearance.id_map)
        for s in range(0, motion.shape[0], batch_size):
            if check_interrupt:
                check_interrupt()
            st = self._in(self.style(appearance, motion[s : s + batch_size]))
            with self._autocast(), self._interruptible(check_interrupt):
                img = self._run_generator(id_map, st, noise_maps)
            img = img.float()
            if self.dtype != torch.float32 and not bool(torch.isfinite(img).all()):
                log.warning(
                    "generator produced non-finite values in %s; recomputing frames %d-%d in fp32",
                    self.dtype,
                    s,
                    s + st.shape[0] - 1,
                )
                img = self._run_generator(id_map, st, noise_maps).float()
            if not bool(torch.isfinite(img).all()):
                raise InputError(
                    f"the generator produced NaN/inf for frames {s}-{s + st.shape[0] - 1}: the style (largest |value| "
                    f"{float(st.abs().max()):.3g}) is far outside what the network was trained on. Lower the factor "
                    f"strengths (a few units at most) or check the appearance and factor inputs."
                )
            yield img.cpu()
            if progress:
                progress(st.shape[0])

    @contextlib.contextmanager
    def _interruptible(self, check_interrupt: Callable[[], None] | None):
        """While a batch runs, ``check_interrupt`` is also called before each generator layer, so a
        cancel stops within one layer's time instead of one batch's (seconds on a CPU). Not with
        ``torch.compile`` (hooks would break the compiled graph)."""
        gen = self.models.generator
        if check_interrupt is None or self._generator is not gen:
            yield
            return
        layers = [m for name, m in gen.named_children() if name not in ("noises",)]
        layers = [c for m in layers for c in (m.children() if isinstance(m, torch.nn.ModuleList) else [m])]
        handles = [m.register_forward_pre_hook(lambda *_: check_interrupt()) for m in layers]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _noise(self, noise):
        if noise is None:
            return None
        g = noise if isinstance(noise, torch.Generator) else torch.Generator().manual_seed(int(noise))
        return [n.to(self.device) for n in self.models.generator.draw_noise(g)]

    def generate_all(self, appearance: Appearance, motion: torch.Tensor, **kw) -> torch.Tensor:
        """All frames at once: [T,3,224,224] float32 (memory grows with T; prefer ``generate``)."""
        return torch.cat(list(self.generate(appearance, motion, **kw)))
