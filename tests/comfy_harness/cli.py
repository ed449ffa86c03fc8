"""Command line of the harness (also used by CI and scripts/comfyui_env.sh):

python tests/comfy_harness env        build (or check) the cached ComfyUI environment; print its paths
python tests/comfy_harness chromium   install chromium + chromium-driver if missing
python tests/comfy_harness serve      run ComfyUI with this pack (and the harness nodes) until Ctrl-C
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import textwrap
import time
from pathlib import Path

from .browser import ensure_chromium
from .env import COMFYUI_VERSION, ensure_comfyui
from .server import ComfyServer, harness_nodes


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python tests/comfy_harness", description="ComfyUI test environment for ComfyUI-PD-FGC"
    )
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
