"""``python tests/comfy_harness {env|chromium|serve}`` (a folder run as a script) or, with tests/ on
sys.path, ``python -m comfy_harness ...``."""

import sys
from pathlib import Path

if not __package__:  # run as a folder: make tests/ importable, then import the package properly
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from comfy_harness.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
