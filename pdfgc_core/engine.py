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
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
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
MOTION_BATCH = 4
"""Driver images per motion-encoder call (per CPU stream): ~5-10 % less CPU time per image than
8 or 16 on a 2-core CPU (activations stay closer to the core's cache), a quarter of the
activation memory of 16."""
GENERATOR_CPU_FRAMES = 1
"""Frames per generator call on CPU (the calls of one batch are shared out over the CPU streams):
~5 % less CPU time per frame than 4 frames per call (measured on a 2-core AVX-512 CPU, one
thread per stream), and the activation memory of one frame per stream. On GPUs the whole batch
is one call."""
AUDIO_BATCH = 16
"""Mel windows per audio-network call. The official code used 8; other sizes move the mouth
codes by ~5e-6 (different kernel blocking), far inside the 1e-4 parity tolerance, and fewer,
larger calls cost less per frame on a busy CPU."""
MAX_CPU_STREAMS = 2
"""On CPU the networks run as up to this many independent streams, each on its own slice of the
batch with an equal share of the torch thread budget (2 threads: two single-threaded streams),
instead of one stream whose every operation is split over all threads. Each split operation ends
in a barrier; when another process takes a core, the other thread waits there, and the motion
encoder's many medium-sized operations then run at half speed or worse (measured: 2.0-2.5x
slower per image at load ~12 on 2 cores). See :meth:`Engine.cpu_streams`."""
_THREADS_LOCK = threading.Lock()  # torch.set_num_threads is process-wide


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
        self,
        models: PDFGCModels,
        device=None,
        precision: str = "fp32",
        impl: str = "fast",
        compile: bool = False,
        streams: int | str = "auto",
    ):
        self.models = models
        self.device = torch.device(device) if device is not None else models.device
        self.dtype = resolve_precision(precision, self.device)
        if impl not in GENERATOR_IMPLS:
            raise InputError(f"generator implementation {impl!r} is not one of {', '.join(GENERATOR_IMPLS)}")
        self.impl = impl
        if streams != "auto" and not (isinstance(streams, int) and streams >= 1):
            raise InputError(f"streams must be 'auto' or a whole number >= 1, got {streams!r}")
        self.streams = streams
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        models.to(self.device)
        self._generator = models.generator
        if compile:
            if hasattr(torch, "compile"):
                self._generator = torch.compile(models.generator)
            else:
                log.warning(
                    "torch.compile is not available in torch %s; running the generator eagerly", torch.__version__
                )

    def cpu_streams(self) -> int:
        """How many independent streams the networks run as (see :data:`MAX_CPU_STREAMS`): on CPU
        ``min(MAX_CPU_STREAMS, torch.get_num_threads())`` unless ``streams`` was given; 1 on
        other devices and with ``compile=True``. During a call that uses k > 1 streams the torch
        thread count is set to (threads // k) and restored afterwards."""
        if self.device.type != "cpu" or self._generator is not self.models.generator:
            return 1
        if self.streams != "auto":
            return int(self.streams)
        return max(1, min(MAX_CPU_STREAMS, torch.get_num_threads()))

    def _parallel(self, fn: Callable, parts: Sequence, done: Callable | None = None) -> list:
        """``[fn(p) for p in parts]``, the parts queued to :meth:`cpu_streams` worker threads (in
        inference mode and this engine's autocast, results in order; a stream takes the next part
        as soon as it is free). ``done(part)`` runs in the calling thread after each part, in order."""

        def run(part):
            with torch.inference_mode(), self._autocast():
                return fn(part)

        streams = self.cpu_streams()
        if streams <= 1:
            out = []
            for p in parts:
                out.append(run(p))
                if done:
                    done(p)
            return out
        with _THREADS_LOCK:  # every call runs on one stream's share of the threads, even alone
            threads = torch.get_num_threads()
            torch.set_num_threads(max(1, threads // streams))
            try:
                if len(parts) == 1:
                    out = [run(parts[0])]
                    if done:
                        done(parts[0])
                    return out
                if self._pool_size != streams:
                    if self._pool is not None:
                        self._pool.shutdown(wait=False)
                    self._pool = ThreadPoolExecutor(streams, thread_name_prefix="pdfgc-stream")
                    self._pool_size = streams
                futures = [self._pool.submit(run, p) for p in parts]
                try:
                    out = []
                    for p, f in zip(parts, futures):
                        out.append(f.result())
                        if done:
                            done(p)
                    return out
                finally:
                    for f in futures:
                        f.cancel()
                    wait(futures)  # every stream has stopped before an error (e.g. a cancel) leaves this call
            finally:
                torch.set_num_threads(threads)

    @staticmethod
    def _split(n: int, parts: int) -> list[slice]:
        """``parts`` contiguous slices covering range(n), sizes differing by at most one."""
        parts = max(1, min(parts, n))
        cuts = [n * k // parts for k in range(parts + 1)]
        return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])]

    def _map_batches(self, fn: Callable, x: torch.Tensor, batch_size: int, progress=None) -> list:
        """``fn`` over ``x`` cut along dim 0 into batches of at most ``batch_size``, as many as a
        multiple of the CPU streams (evenly sized, so every stream gets a share), in order;
        ``progress(n)`` after each batch."""
        streams = self.cpu_streams()
        k = -(-x.shape[0] // batch_size)
        parts = [x[p] for p in self._split(x.shape[0], -(-k // streams) * streams)]
        return self._parallel(fn, parts, done=(lambda t: progress(t.shape[0])) if progress else None)

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
        with self._autocast():  # the whole thread budget: one image, and the official numbers exactly
            vec, idmap = self.models.appearance(self._in(image[:1]))
        return Appearance(vec.float().cpu(), idmap.float().cpu())

    @torch.inference_mode()
    def encode_mouth(
        self,
        windows: torch.Tensor,
        fps: float = DEFAULT_FPS,
        batch_size: int = AUDIO_BATCH,
        progress: Callable[[int], None] | None = None,
    ) -> Factor:
        """Mel windows [T,1,80,20] -> mouth factor [T,500] (raw, before the official x1.5 and smoothing).

        ``batch_size`` 8 reproduces the official batching exactly; other sizes move results by ~5e-6."""
        check_batch(windows, (1, 80, 20), "audio windows", "make them with pdfgc_core.audio.audio_to_windows.")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        out = self._map_batches(lambda w: self.models.audio(self._in(w)).float().cpu(), windows, batch_size, progress)
        return Factor("mouth", torch.cat(out), fps=fps)

    @torch.inference_mode()
    def encode_drivers(
        self,
        images: torch.Tensor | Iterable[torch.Tensor],
        heads: Sequence[str] = DRIVER_HEADS,
        fps: float = DEFAULT_FPS,
        batch_size: int = MOTION_BATCH,
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

        def encode(x):
            res = self.models.motion(self._in(x), heads=heads)
            return {h: res[h].float().cpu() for h in heads}

        for chunk in chunks:
            self._check_images(chunk, "driving frames")
            for res in self._map_batches(encode, chunk, batch_size, progress):
                for h in heads:
                    acc[h].append(res[h])
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
            with self._interruptible(check_interrupt):
                img = self._generate_batch(id_map, st, noise_maps)
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

    def _generate_batch(self, id_map, st, noise_maps) -> torch.Tensor:
        """One batch: on CPU calls of :data:`GENERATOR_CPU_FRAMES` frames shared out over the CPU
        streams, elsewhere (and compiled) one call."""
        gen = self._generator

        def run():
            n = st.shape[0]
            eager = self._generator is self.models.generator
            calls = -(-n // GENERATOR_CPU_FRAMES) if self.device.type == "cpu" and eager else 1
            parts = [st[p] for p in self._split(n, max(calls, self.cpu_streams()))]
            return torch.cat(self._parallel(lambda x: self._run_generator(id_map, x, noise_maps).float(), parts))

        img = run()
        if self._generator is not gen:  # compiling failed in this batch: redo it exactly as eager runs it
            img = run()
        return img

    @contextlib.contextmanager
    def _interruptible(self, check_interrupt: Callable[[], None] | None):
        """While a batch runs, ``check_interrupt`` is also called before each generator layer, so a
        cancel stops within one layer's time instead of one batch's (seconds on a CPU). Not with
        ``torch.compile`` (hooks would break the compiled graph). With CPU streams a cancel seen by one
        stream stops the others at their next layer."""
        gen = self.models.generator
        if check_interrupt is None or self._generator is not gen:
            yield
            return
        layers = [m for name, m in gen.named_children() if name not in ("noises",)]
        layers = [c for m in layers for c in (m.children() if isinstance(m, torch.nn.ModuleList) else [m])]
        raised: list[BaseException] = []

        def check(*_):  # once one stream is cancelled, the others stop at their next layer too
            if raised:
                raise raised[0]
            try:
                check_interrupt()
            except BaseException as e:
                raised.append(e)
                raise

        handles = [m.register_forward_pre_hook(check) for m in layers]
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
