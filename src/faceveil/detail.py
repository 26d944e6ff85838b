"""The detail stage: a small deterministic 2x super-resolution network after the face model.

A 96 px model face pasted over a 600 px face is enlarged six times, so it looks soft
whatever the diffusion model draws. :class:`DetailNet` doubles the model face's
resolution before it is pasted, where the face on the photo is larger than the model's
crop. It is a diffusers ``ModelMixin`` (``from_pretrained`` / ``save_pretrained``, a
``detail/`` folder beside ``unet/``), trained by :mod:`faceveil.train.detail` with an L1
loss and a patch discriminator. Exactness does not depend on it: anonymization and
recovery run the very same stage on the same pixels (``faceveil.pipeline``), and the
sealed residual covers the rest.

The network predicts a correction to a bicubic enlargement, and its last layer starts
at zero, so an untrained one is plain bicubic. Faces enlarged four times or more get the
stage twice (192 px, then 384 px from a 96 px model face; ``Settings.detail_passes``,
stored in the file's header, so files made with one pass recover with one).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F


AGAIN_FROM = 2.0  # a further pass only where the face would still be enlarged this much after the last


class _Block(nn.Module):
    """conv, ReLU, conv, added back at a small scale (EDSR's residual block)."""

    def __init__(self, channels: int, res_scale: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.conv2(F.relu(self.conv1(x)))


class DetailNet(ModelMixin, ConfigMixin):
    """RGB in [-1, 1] (B, 3, S, S) to RGB in [-1, 1] (B, 3, 2S, 2S): bicubic plus a learned correction.

    ``min_enlargement``: the stage runs only where the face on the photo is at least this
    many times larger than the model's crop (a public function of the face's transform).
    """

    @register_to_config
    def __init__(self, channels: int = 48, blocks: int = 8, res_scale: float = 0.2, min_enlargement: float = 1.0) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(*[_Block(channels, res_scale) for _ in range(blocks)])
        self.conv_body = nn.Conv2d(channels, channels, 3, padding=1)
        self.upsample = nn.Sequential(nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2), nn.LeakyReLU(0.2))
        self.conv_out = nn.Conv2d(channels, 3, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    scale = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
        h = self.conv_in(x)
        h = h + self.conv_body(self.body(h))
        return base + self.conv_out(self.upsample(h))

    def applies(self, enlargement: float) -> bool:
        """Whether a face enlarged ``enlargement`` times from the model crop gets the stage."""
        return enlargement >= float(self.config.min_enlargement)

    def passes(self, enlargement: float, most: int) -> int:
        """How many times (at most ``most``) a face enlarged ``enlargement`` times goes through the
        stage: once where it :meth:`applies`, and again while the face is still enlarged at least
        :data:`AGAIN_FROM` times after the passes before (a 600 px face from a 96 px crop: twice)."""
        if most < 1 or not self.applies(enlargement):
            return 0
        done = 1
        while done < most and enlargement / self.scale**done >= AGAIN_FROM:
            done += 1
        return done

    def enhance(self, face: np.ndarray) -> np.ndarray:
        """A model face (S x S x 3, float, 0–255) at twice its resolution (2S x 2S x 3, float64, 0–255)."""
        x = torch.from_numpy(np.ascontiguousarray(face.transpose(2, 0, 1), dtype=np.float32))[None]
        x = (x.to(self.device) / 127.5 - 1).clamp(-1, 1)
        from faceveil.models import full_precision

        with torch.no_grad(), full_precision(x.device):
            y = self(x).clamp(-1, 1)
        return ((y[0].double().cpu().numpy().transpose(1, 2, 0) + 1) * 127.5).clip(0, 255)
