"""The trainable parts of the three stage-2 heads, and frozen-feature caching.

The motion network's lip head (``E_lip``: ``to_mouth`` + ``mouth_embed``, 512 -> 500) is in the
official motion checkpoint but not in :class:`~pdfgc_core.networks.motion.MotionEncoder` (inference
never uses it); :class:`LipHead` holds it under the official key names, built with the same layer
builders as the other motion heads, and is written back into ``motion_model.pth``.

Each ``*Stage`` module is what one head trains (it is what DDP wraps): its ``forward`` takes the
frozen trunk's features (computed outside, without gradients) and returns the head's outputs.
"""

from __future__ import annotations

import torch
from torch import nn

from ..networks.motion import HEADS, embedding, feature_mlp

LIP_DIM = 500
LIP_PREFIXES = ("to_mouth.", "mouth_embed.")


class LipHead(nn.Module):
    """Lip features of the motion trunk: [B,512] -> [B,500] (official ``to_mouth``, ``mouth_embed``)."""

    def __init__(self):
        super().__init__()
        self.to_mouth = feature_mlp()
        self.mouth_embed = embedding(LIP_DIM)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.mouth_embed(self.to_mouth(feat))


class LipStage(nn.Module):
    """Lip stage: visual trunk features [N,512] -> ``f_v`` [N,500]; audio -> ``f_a`` [N,500].

    ``audio_in`` is the mel windows [N,1,80,20] when the audio trunk trains, otherwise its frozen
    features [N,512] (only ``mouth_embed`` of the audio encoder trains)."""

    def __init__(self, lip: LipHead, audio: nn.Module, audio_trunk_trains: bool):
        super().__init__()
        self.lip, self.audio, self.audio_trunk_trains = lip, audio, audio_trunk_trains

    def forward(self, visual_feat: torch.Tensor, audio_in: torch.Tensor):
        a = self.audio.features(audio_in) if self.audio_trunk_trains else audio_in
        return self.lip(visual_feat), self.audio.mouth_embed(a)


class MotionHeadStage(nn.Module):
    """Eye or pose stage: trunk features [N,512] -> that head's output [N,6] (official modules of
    the motion network, shared, not copied)."""

    def __init__(self, motion: nn.Module, head: str):
        super().__init__()
        mlp, emb, _ = HEADS[head]
        self.mlp, self.emb = motion.get_submodule(mlp), motion.get_submodule(emb)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.emb(self.mlp(feat))


class FeatureCache:
    """Outputs of a frozen network for every frame (or audio window) of a clip, kept in memory.

    ``get(clip, times, load)`` returns the features [len(times), D]; the first request of a clip
    computes all of its ``load(clip)`` inputs in fixed chunks of ``chunk``, so a feature's value
    never depends on which batch asked for it first (exact resume)."""

    def __init__(self, fn, chunk: int = 16):
        self.fn, self.chunk, self.store = fn, chunk, {}

    @torch.no_grad()
    def get(self, clip: int, times: torch.Tensor, load) -> torch.Tensor:
        if clip not in self.store:
            x = load(clip)
            self.store[clip] = torch.cat([self.fn(x[i : i + self.chunk]) for i in range(0, len(x), self.chunk)])
        return self.store[clip][times.to(self.store[clip].device)]

    def batch(self, clips: torch.Tensor, times: torch.Tensor, load) -> torch.Tensor:
        """Features [B*T, D] for ``clips`` [B] and ``times`` [B,T], row-major (item, time)."""
        return torch.cat([self.get(int(c), t, load) for c, t in zip(clips, times)])
