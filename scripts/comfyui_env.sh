#!/usr/bin/env bash
# Prepare what the ComfyUI tests need, outside the repository (idempotent; seconds when cached):
#   the ComfyUI 0.3.75 environment in ${PDFGC_CACHE_DIR:-~/.cache/pdfgc}/comfyui-0.3.75/ (fresh: 1.5-3 min)
#   and, with --chromium, Debian's chromium + chromium-driver for tests/test_frontend.py (fresh: ~40 s).
# The tests do the same on demand; calling this first in CI keeps set-up time out of test timings.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
python "$here/tests/comfy_harness" env
if [[ "${1:-}" == "--chromium" ]]; then
    python "$here/tests/comfy_harness" chromium
fi
