"""pdfgc_core: PD-FGC talking-head synthesis as a plain PyTorch library (no ComfyUI import)."""

from .errors import CheckpointError, FaceNotFoundError, InputError, MediaError, PDFGCError


def _read_version() -> str:
    """The version written once, in pyproject.toml's ``[project]`` table: read from the file beside
    this package (a ComfyUI checkout or source tree), else from the installed distribution."""
    import re
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
        project = text.split("[project]", 1)[1].split("\n[", 1)[0]
        return re.search(r'^version\s*=\s*"([^"]+)"', project, re.M).group(1)
    except (OSError, IndexError, AttributeError):
        pass
    try:
        from importlib.metadata import version

        return version("pd-fgc")
    except Exception:
        return "0+unknown"


__version__ = _read_version()

__all__ = ["CheckpointError", "FaceNotFoundError", "InputError", "MediaError", "PDFGCError", "__version__"]
