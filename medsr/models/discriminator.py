"""SRGAN discriminator of Ledig et al. 2017, for one-channel HR crops.

Eight conv3x3 layers (64, 64, 128, 128, 256, 256, 512, 512 channels), stride 2 on
every second one (no pooling), BatchNorm on all but the first, LeakyReLU(0.2);
then Dense(1024), LeakyReLU(0.2), Dense(1). ``forward`` returns *logits*: train
with ``BCEWithLogitsLoss`` (the paper's sigmoid is folded into the loss, which is
numerically safer, also under bf16 autocast).

The dense layer's input size follows from the crop: 96x96 -> 512 x 6 x 6.
Only used for training; the archive never needs it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DiscriminatorConfig:
    crop_size: int = 96
    in_channels: int = 1
    base_channels: int = 64
    dense: int = 1024
    negative_slope: float = 0.2

    @property
    def widths(self) -> tuple[int, ...]:
        c = self.base_channels
        return (c, c, 2 * c, 2 * c, 4 * c, 4 * c, 8 * c, 8 * c)

    @property
    def feature_size(self) -> int:
        """Spatial size after the four stride-2 convolutions."""
        if self.crop_size % 16:
            raise ValueError(f"crop_size must be a multiple of 16, got {self.crop_size}")
        return self.crop_size // 16

    def to_dict(self) -> dict:
        return asdict(self)


class Discriminator(nn.Module):
    def __init__(self, config: DiscriminatorConfig = DiscriminatorConfig()):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = config.in_channels
        for i, c_out in enumerate(config.widths):
            stride = 2 if i % 2 == 1 else 1
            layers.append(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1))
            if i > 0:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(config.negative_slope, inplace=True))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        f = config.feature_size
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * f * f, config.dense),
            nn.LeakyReLU(config.negative_slope, inplace=True),
            nn.Linear(config.dense, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) HR image in [-1, 1] -> (N, 1) logits (real > 0)."""
        s = self.config.crop_size
        if x.shape[-2:] != (s, s):
            raise ValueError(f"discriminator expects {s}x{s} crops, got {tuple(x.shape[-2:])}")
        return self.classifier(self.features(x))
