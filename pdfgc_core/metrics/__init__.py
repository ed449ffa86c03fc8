"""Measuring what PD-FGC makes: lip sync, landmarks, head pose, self-consistency, disentanglement.

Modules (each usable on its own, on plain arrays):

- :mod:`.landmarks`: LMD and mouth LMD, eye aspect ratio, blinks, an iris-free gaze proxy;
- :mod:`.pose`: head-pose error from landmarks (the project's solvePnP estimator);
- :mod:`.consistency`: re-encode frames with the motion encoder and compare with what was asked;
- :mod:`.sync`: audio-visual offset sweep over an embedding pair (PD-FGC's own lip pair);
- :mod:`.byow`: SyncNet LSE-C / LSE-D, FID, ArcFace identity from user-supplied weight files;
- :mod:`.disentangle`: the paper's Eq. I variance table;
- :mod:`.plots` and :mod:`.report`: PNG plots (OpenCV) and JSON / Markdown / HTML reports;
- :mod:`.evaluate` and :mod:`.protocols`: everything together, and the paper's two protocols.

``docs/METRICS.md`` defines every number, its unit and whether it compares with published ones.
"""

from .disentangle import DisentanglementResult, disentanglement
from .evaluate import AudioInput, Weights, evaluate
from .report import Report
from .sync import SyncResult, offset_sweep

__all__ = [
    "AudioInput",
    "DisentanglementResult",
    "Report",
    "SyncResult",
    "Weights",
    "disentanglement",
    "evaluate",
    "offset_sweep",
]
