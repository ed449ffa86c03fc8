"""Stage 3 of PD-FGC (paper Sec. 3.3): expression disentanglement and the final generator.

One step (the loop is :func:`.gan_loop.train_gan`)::

    A, v, a      <- appearance frame, driving frame (centre of a K-frame window), its audio window
    w_1..w_K     <- the window's frames, each rotated, scaled, colour-jittered
    e            <- mean_k E_exp(E_mot(w_k))                        in-window averaging (E_mot frozen)
    f_a          <- E_aud(a);  eye, pose <- E_eye, E_pose (E_mot(v)) frozen
    I_g          <- G(map(A), [app(A) | f_a | e | eye | pose])    self-reconstruction of v
    L_G          <- 10 sum_i |VGG19_i(v) - VGG19_i(I_g)|_1 (Eq. 7) + hinge_G + 10 FM
                    + w_corr (1/D) sum_ij corr([e; bank_E], [f_a; bank_A])_ij^2 (Eq. 6, banks of 512)
                    + w_lip exp(-S(V_lip(I_g), f_a)) + w_gaze |Gaze(v) - Gaze(I_g)|_1 + w_mot L_mot (Eq. 8)
    Adam on E_exp (1e-5, first 40k steps only), G (2e-5); discriminator (3.5e-6) on hinge_D
    push the global batch's e and f_a into the banks

Under DDP the current rows of Eq. 6 are the whole global batch (gathered with their gradient, in
rank order, so every process computes the loss of a single process with the global batch); the
banks hold the same rows on every process. ``V_lip`` is the stage-2 lip branch (motion trunk +
lip head) applied to the generated frame, the reading under which the term trains G. Fine-tuning
(:mod:`.finetune`) runs this stage with ``expression.train_steps = 0``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import OFFICIAL_FILES
from ..images import to_network
from . import dist, gan, gan_loop
from .decorrelation import MemoryBank, decorrelation_loss, window_mean
from .heads import MotionHeadStage
from .priors import GazeSubstitute
from .state import merged_state

EXPRESSION_DIM = 30
AUDIO_DIM = 500


class Stage3Net(nn.Module):
    """What stage 3 trains (what DDP wraps): the expression head and the generator.

    ``forward(id_map [B,512,7,7], app [B,2048], mouth [B,500], eye [B,6], pose [B,6],
    window_feat [B,K,512], noise)`` -> (expression [B,30] = window mean, image [B,3,224,224] -1..1)."""

    def __init__(self, expression: MotionHeadStage, generator: nn.Module):
        super().__init__()
        self.expression, self.generator = expression, generator

    def forward(self, id_map, app, mouth, eye, pose, window_feat, noise):
        b, k, _ = window_feat.shape
        exp = window_mean(self.expression(window_feat.reshape(b * k, -1)).reshape(b, k, -1))
        style = torch.cat([app, mouth, exp, eye, pose], 1)
        return exp, self.generator(id_map, style, impl="reference", noise=noise)


class Stage3:
    TRAINED = ("motion", "generator")
    EXTRA_FILES = ()
    PRIORS = {"vgg19": "vgg19", "gaze": "gaze", "motion": "emoca"}

    @classmethod
    def plan_losses(cls, cfg) -> gan_loop.LossPlan:
        return gan_loop.plan_losses(cfg, cls.PRIORS, substitutes=("gaze", "emoca"))

    def __init__(self, cfg, nets: gan_loop.GanNetworks, losses: gan_loop.LossPlan, ctx):
        self.cfg, self.nets, self.losses, self.dev = cfg, nets, losses, ctx.device
        for m in (*nets.nets.values(), nets.lip):
            m.requires_grad_(False)
        motion, generator = nets.nets["motion"], nets.nets["generator"]
        expression = MotionHeadStage(motion, "expression")
        self.train_expression = cfg.expression.train_steps > 0
        expression.requires_grad_(self.train_expression)
        generator.requires_grad_(True).train()
        nets.lip.eval()
        self.module = Stage3Net(expression, generator)
        self.model = self.module
        e, g = cfg.expression, cfg.generator
        self._groups = {"generator": (list(generator.parameters()), g.lr, g.lr_decay_every, g.lr_decay)}
        if self.train_expression:
            self._groups["expression"] = (list(expression.parameters()), e.lr, 1 << 40, 1.0)
        self.bank_e = MemoryBank(e.bank_size, EXPRESSION_DIM, ctx.device)
        self.bank_a = MemoryBank(e.bank_size, AUDIO_DIM, ctx.device)
        self.gaze_sub = GazeSubstitute(motion)

    def param_groups(self):
        return self._groups

    def steps_group(self, name: str, step: int) -> bool:
        return name != "expression" or step < self.cfg.expression.train_steps

    @torch.no_grad()
    def frozen_inputs(self, batch) -> dict:
        """Everything the frozen encoders give for a batch: id map, appearance vector, mouth
        (audio) feature, eye and pose of the driving frame, its trunk features, the window's trunk
        features [B,K,512], and the target image [B,3,224,224] in -1..1."""
        n = self.nets.nets
        real = to_network(batch["target"]).to(self.dev)
        app, id_map = n["appearance"](to_network(batch["appearance"]).to(self.dev))
        mouth = n["audio"](batch["mel"].to(self.dev))
        feat = n["motion"].features(real)
        b, k = batch["window"].shape[:2]
        win = n["motion"].features(to_network(batch["window"].reshape(b * k, *batch["window"].shape[2:])).to(self.dev))
        eye, pose = n["motion"].head("eye", feat), n["motion"].head("pose", feat)
        return {"real": real, "app": app, "id_map": id_map, "mouth": mouth, "feat": feat, "eye": eye, "pose": pose,
                "window": win.reshape(b, k, -1)}  # fmt: skip

    def generate(self, batch, noise):
        x = self.frozen_inputs(batch)
        exp, fake = self.model(x["id_map"], x["app"], x["mouth"], x["eye"], x["pose"], x["window"], noise)
        x["exp"] = exp
        return fake, x["real"], x

    def render(self, batch, noise) -> torch.Tensor:
        """The reconstruction [B,3,224,224] of a batch without training (validation)."""
        with torch.no_grad():
            return self.generate(batch, noise)[0]

    def generator_terms(self, batch, fake, real, x, d_real, d_fake) -> dict:
        w, p = self.losses.weights, self.losses.priors
        terms = {}
        if "vgg19" in w:
            terms["vgg19"] = gan_loop.perceptual_l1(p["vgg19"], fake, real)
        if "adversarial" in w:
            terms["adversarial"] = gan.hinge_g(d_fake)
        if "feature_matching" in w:
            terms["feature_matching"] = gan.feature_matching(d_real, d_fake)
        # Eq. 6 over the global batch (with gradient) followed by the memory banks (constants)
        x["all_exp"] = dist.all_gather_with_grad(x["exp"])
        x["all_mouth"] = dist.all_gather_with_grad(x["mouth"])
        if "decorrelation" in w:
            rows_e = self.bank_e.with_current(x["all_exp"])
            if len(rows_e) >= self.cfg.expression.decorrelation_min_rows:
                terms["decorrelation"] = decorrelation_loss(rows_e, self.bank_a.with_current(x["all_mouth"]))
            else:  # over a handful of rows every correlation is +-1 by construction: wait for the banks
                terms["decorrelation"] = x["exp"].sum() * 0.0
        need_feat = "lip" in w or p.get("gaze") == "substitute" or p.get("motion") == "substitute"
        feat_fake = self.nets.nets["motion"].features(fake) if need_feat else None
        if "lip" in w:  # Eq. 8 lip term: exp(-S(V_lip(I_g), E_aud(a)))
            f_v = self.nets.lip(feat_fake)
            terms["lip"] = torch.exp(-F.cosine_similarity(f_v.float(), x["mouth"].float(), dim=-1)).mean()
        if "gaze" in w:
            if p["gaze"] == "substitute":
                terms["gaze"] = F.l1_loss(self.gaze_sub(feat_fake), self.gaze_sub(x["feat"]))
            else:
                with torch.no_grad():
                    ref = p["gaze"](real)
                terms["gaze"] = F.l1_loss(p["gaze"](fake), ref)
        if "motion" in w:
            if p["motion"] == "substitute":
                terms["motion"] = F.mse_loss(feat_fake, x["feat"])
            else:
                with torch.no_grad():
                    ref = p["motion"](real)
                terms["motion"] = F.mse_loss(p["motion"](fake), ref)
        if "image" in w:
            terms["image"] = F.l1_loss(fake.float(), real.float())
        return terms

    def after_step(self, x) -> None:
        self.bank_e.push(x["all_exp"])
        self.bank_a.push(x["all_mouth"])

    def state_dict(self) -> dict:
        return {"bank_expression": self.bank_e.state_dict(), "bank_audio": self.bank_a.state_dict()}

    def load_state_dict(self, sd: dict) -> None:
        if sd:
            self.bank_e.load_state_dict(sd["bank_expression"])
            self.bank_a.load_state_dict(sd["bank_audio"])

    def files(self) -> dict:
        n = self.nets
        return {
            OFFICIAL_FILES["motion"]: merged_state(
                n.raw.get("motion", {}), n.nets["motion"].state_dict(), n.lip.state_dict()
            ),
            OFFICIAL_FILES["generator"]: merged_state(n.raw.get("generator", {}), n.nets["generator"].state_dict()),
        }

    def sample_columns(self, batch, fake):
        """appearance | driving (window centre, augmented) | reconstruction | target."""
        k = batch["window"].shape[1]
        return [
            to_network(batch["appearance"]),
            to_network(batch["window"][:, k // 2]),
            fake,
            to_network(batch["target"]),
        ]


def train(cfg, data, out, init=None, max_steps=None, device=None, stop_after=None) -> gan_loop.GanResult:
    """Stage 3 on the prepared dataset ``data`` into the run folder ``out`` (see :func:`.gan_loop.train_gan`)."""
    return gan_loop.train_gan(Stage3, cfg, data, out, init, max_steps, device, stop_after)
