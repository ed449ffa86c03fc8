"""One real ComfyUI server process for tests: start/stop, HTTP and websocket API, files in and out.

Every ``timeout`` argument is what a quiet machine needs; the waits use
``testenv.scaled(timeout)``, which grows with the machine's load (see tests/testenv.py).

The test server (pytest fixture, ``serve``) also loads the harness custom nodes
(``custom_nodes/pdfgc_harness_nodes/`` beside this file, copied into the server's custom_nodes/;
never shipped): PDFGCHarnessSleep (progress, interrupt), PDFGCHarnessFail (execution_error),
PDFGCHarnessLoadTensor (an exact value put in input/ by :meth:`ComfyServer.put_tensor`, of any
socket type) and PDFGCHarnessSaveTensor (any value -> output/tensors/*.pt, read back by
:func:`saved_tensors`), and one example workflow (:data:`HARNESS_WORKFLOW`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testenv import REPO, scaled

from .env import ComfyEnv

PACK_NAME = "ComfyUI-PD-FGC"  # the folder name users give the pack in custom_nodes/
HARNESS_PACK = "pdfgc_harness_nodes"
HARNESS_NODES_DIR = Path(__file__).resolve().parent / "custom_nodes" / HARNESS_PACK
HARNESS_WORKFLOW: dict = json.loads((HARNESS_NODES_DIR / "example_workflows" / "harness_sleep.json").read_text())


def harness_nodes() -> dict[str, Path]:
    """{custom-node folder name: source folder} of the harness nodes (``extra_nodes`` of ComfyServer)."""
    return {HARNESS_PACK: HARNESS_NODES_DIR}


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
        self._ws = websocket.create_connection(f"{url}?clientId={client_id}", timeout=scaled(30))
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
        """First message (old or new) for which predicate(message) is true (``timeout`` is scaled)."""
        timeout = scaled(timeout)
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
                    raise TimeoutError(f"no matching websocket message within {timeout:.0f} s")
                self._cond.wait(left)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ws.close()


class ComfyServer:
    """One ComfyUI process with its own base directory (custom_nodes/, models/, input/, output/, user/).

    custom_nodes/ComfyUI-PD-FGC is a symlink to ``pack_dir`` (the repository); ``extra_nodes``
    maps further custom-node folder names to source folders, copied in before start (the pytest
    fixture and ``serve`` pass :func:`harness_nodes`).
    """

    def __init__(
        self,
        env: ComfyEnv,
        base_dir: Path,
        pack_dir: Path = REPO,
        extra_nodes: dict[str, Path] | None = None,
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
        for name, src in (extra_nodes or {}).items():
            shutil.copytree(
                src, self.custom_nodes_dir / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
            )

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

        timeout = scaled(timeout)
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
                raise TimeoutError(f"ComfyUI not ready after {timeout:.0f} s:\n{self.log_tail(80)}")
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
                self.proc.wait(scaled(15))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(scaled(15))
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
        return requests.get(self.url + path, timeout=scaled(kw.pop("timeout", 60)), **kw)

    def post(self, path: str, payload: Any = None, **kw):
        import requests

        self._check_alive()
        return requests.post(self.url + path, json=payload, timeout=scaled(kw.pop("timeout", 60)), **kw)

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
        """Poll /history until the prompt has finished (success, error or interrupted); the history
        entry. ``timeout`` is what a quiet machine needs; it is scaled with the load."""
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        while True:
            r = self.get(f"/history/{prompt_id}")
            entry = r.json().get(prompt_id) if r.status_code == 200 else None
            if entry and entry.get("status", {}).get("completed") is not None:
                return entry
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"prompt {prompt_id} did not finish within {timeout:.0f} s; queue: "
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
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        while True:
            q = self.get("/queue").json()
            if not q.get("queue_running") and not q.get("queue_pending"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue not idle after {timeout:.0f} s: {q}")
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
