"""Stage 1 of PD-FGC (paper Sec. 3.1): appearance / motion disentanglement with an extra generator G0.

One step (the loop is :func:`.gan_loop.train_gan`)::

    A, v       <- appearance frame, driving frame of one clip;  v~ = colour jitter + perspective(v)
    a, m       <- E_app(A) (2048-d vector, 7x7 map), E_mot(v~) (512-d unified motion feature)
    I_g        <- G0(map, [a | m])                                     self-driving reconstruction of v
    L_G        <- hinge_G(D(I_g)) + 10 FM(D; I_g, v) + 10 VGG19(I_g, v) + 5 VGGFace(I_g, v)
                  + 1 |I_g - v|_1 + w_mot (||phi(v) - phi(I_g)||^2 + ||psi(v) - psi(I_g)||^2)     (Eq. 1)
    Adam on E_app, E_mot (lr 5e-5), G0 (5e-5); discriminator (5e-6) on hinge_D

Trained: the appearance encoder and the motion trunk (``appearance_model.pth``, ``motion_model.pth``
of every step folder, all official keys kept), G0 (``g0_model.pth``, style 2560 = appearance 2048 +
motion 512). The encoders' BatchNorm layers keep their running statistics (the released encoders
pin ``train()`` to eval), so a step's result does not depend on how the batch is split. The audio
encoder and the released generator are carried over unchanged, so every step folder loads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..images import to_network
from ..networks.appearance import APPEARANCE_DIM
from ..networks.generator import Generator
from . import gan, gan_loop
from .state import merged_state

G0_FILE = "g0_model.pth"
MOTION_FEATURE_DIM = 512


class Stage1Net(nn.Module):
    """What stage 1 trains (what DDP wraps): ``forward(appearance, driving, noise)`` with images
    [B,3,224,224] in -1..1 -> the reconstruction [B,3,224,224] in -1..1."""

    def __init__(self, appearance: nn.Module, motion: nn.Module, g0: Generator):
        super().__init__()
        self.appearance, self.motion, self.g0 = appearance, motion, g0

    def forward(self, appearance: torch.Tensor, driving: torch.Tensor, noise) -> torch.Tensor:
        vec, id_map = self.appearance(appearance)
        motion = self.motion.features(driving)
        return self.g0(id_map, torch.cat([vec, motion], 1), impl="reference", noise=noise)


class Stage1:
    TRAINED = ("appearance", "motion")
    EXTRA_FILES = (G0_FILE,)
    PRIORS = {"vgg19": "vgg19", "vggface": "vggface", "motion": "emoca"}

    @classmethod
    def plan_losses(cls, cfg) -> gan_loop.LossPlan:
        return gan_loop.plan_losses(cfg, cls.PRIORS)

    def __init__(self, cfg, nets: gan_loop.GanNetworks, losses: gan_loop.LossPlan, ctx):
        self.cfg, self.nets, self.losses, self.dev = cfg, nets, losses, ctx.device
        torch.manual_seed(cfg.run.seed + 2)
        g0 = Generator(style_dim=APPEARANCE_DIM + MOTION_FEATURE_DIM)
        if G0_FILE in nets.extra_state:
            g0.load_state_dict(nets.extra_state[G0_FILE])
        for n in ("audio", "generator"):
            nets.nets[n].requires_grad_(False)
        motion = nets.nets["motion"]
        motion.requires_grad_(False)
        motion.model.requires_grad_(True)  # the trunk; the heads get their meaning in stages 2 and 3
        self.module = Stage1Net(nets.nets["appearance"].requires_grad_(True), motion, g0.to(ctx.device).train())
        self.model = self.module
        self._groups = {
            "encoders": (
                [*self.module.appearance.parameters(), *motion.model.parameters()],
                cfg.encoders.lr,
                cfg.encoders.lr_decay_every,
                cfg.encoders.lr_decay,
            ),
            "generator": (
                list(g0.parameters()),
                cfg.generator.lr,
                cfg.generator.lr_decay_every,
                cfg.generator.lr_decay,
            ),
        }

    def param_groups(self):
        return self._groups

    def steps_group(self, name: str, step: int) -> bool:
        return True

    def generate(self, batch, noise):
        app = to_network(batch["appearance"]).to(self.dev)
        drv = to_network(batch["driving"]).to(self.dev)
        real = to_network(batch["target"]).to(self.dev)
        return self.model(app, drv, noise), real, {}

    def generator_terms(self, batch, fake, real, aux, d_real, d_fake) -> dict:
        w, p = self.losses.weights, self.losses.priors
        terms = {}
        if "adversarial" in w:
            terms["adversarial"] = gan.hinge_g(d_fake)
        if "feature_matching" in w:
            terms["feature_matching"] = gan.feature_matching(d_real, d_fake)
        for t in ("vgg19", "vggface"):
            if t in w:
                terms[t] = gan_loop.perceptual_l1(p[t], fake, real)
        if "image" in w:
            terms["image"] = F.l1_loss(fake.float(), real.float())
        if "motion" in w:
            with torch.no_grad():
                ref = p["motion"](real)
            terms["motion"] = F.mse_loss(p["motion"](fake), ref)
        return terms

    def after_step(self, aux) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, sd: dict) -> None:
        pass

    def files(self) -> dict:
        from ..checkpoints import OFFICIAL_FILES

        n = self.nets
        return {
            OFFICIAL_FILES["appearance"]: merged_state(n.raw.get("appearance", {}), n.nets["appearance"].state_dict()),
            OFFICIAL_FILES["motion"]: merged_state(
                n.raw.get("motion", {}), n.nets["motion"].state_dict(), n.lip.state_dict()
            ),
            G0_FILE: merged_state({}, self.module.g0.state_dict()),
        }

    def sample_columns(self, batch, fake):
        """appearance | driving (augmented) | reconstruction | target."""
        return [to_network(batch["appearance"]), to_network(batch["driving"]), fake, to_network(batch["target"])]


def train(cfg, data, out, init=None, max_steps=None, device=None, stop_after=None) -> gan_loop.GanResult:
    """Stage 1 on the prepared dataset ``data`` into the run folder ``out`` (see :func:`.gan_loop.train_gan`)."""
    return gan_loop.train_gan(Stage1, cfg, data, out, init, max_steps, device, stop_after)
