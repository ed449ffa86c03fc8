"""Provenance of generated media: an invisible watermark in every frame, container metadata and a
C2PA manifest on written mp4 files, and a checker for all three.

- :mod:`.watermark`: ``embed`` / ``detect`` (numpy or torch frames, no extra dependencies).
- :mod:`.manifest`: container tags and the C2PA manifest (the optional ``c2pa`` extra).
- :mod:`.check`: ``check_file`` / ``check_frames`` reports, used by ``python -m pdfgc_core check``
  and the PD-FGC Check Provenance node.
"""

from .watermark import OPT_OUT_WARNING, Detection, decode_payload, detect, embed, payload_bits

__all__ = ["OPT_OUT_WARNING", "Detection", "decode_payload", "detect", "embed", "payload_bits"]
