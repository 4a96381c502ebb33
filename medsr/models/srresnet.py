"""SRResNet: the SRGAN generator of Ledig et al. 2017, for one-channel slices.

conv9x9(64) + PReLU; B residual blocks [conv3x3-BN-PReLU-conv3x3-BN] + skip;
conv3x3 + BN; long skip from the first conv; log2(scale) upsampling stages
[conv3x3 C->4C, PixelShuffle(2), PReLU]; conv9x9 to the output channels.
Input: LR in [0, 1]; output: HR in [-1, 1] (linear, no tanh, so out-of-window
intensities survive).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class SRResNetConfig:
    blocks: int = 16
    channels: int = 64
    scale: int = 4
    in_channels: int = 1
    out_channels: int = 1
    batch_norm: bool = True  # False: the batch-norm layers are identities (EDSR's variant; a measured trial)

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.batch_norm:  # the paper's generator: its metadata reads as it always has
            del d["batch_norm"]
        return d


def _norm(c: int, on: bool) -> nn.Module:
    return nn.BatchNorm2d(c) if on else nn.Identity()


class ResidualBlock(nn.Module):
    def __init__(self, c: int, batch_norm: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = _norm(c, batch_norm)
        self.act = nn.PReLU(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.bn2 = _norm(c, batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class UpsampleBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, 4 * c, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.act = nn.PReLU(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


class SRResNet(nn.Module):
    def __init__(self, config: SRResNetConfig = SRResNetConfig()):
        super().__init__()
        if config.scale not in (2, 4, 8):
            raise ValueError(f"scale must be 2, 4 or 8, got {config.scale}")
        c = config.channels
        self.config = config
        self.head = nn.Sequential(nn.Conv2d(config.in_channels, c, 9, padding=4), nn.PReLU(c))
        self.body = nn.Sequential(*[ResidualBlock(c, config.batch_norm) for _ in range(config.blocks)])
        self.body_tail = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), _norm(c, config.batch_norm))
        self.upsample = nn.Sequential(*[UpsampleBlock(c) for _ in range(int(math.log2(config.scale)))])
        self.tail = nn.Conv2d(c, config.out_channels, 9, padding=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        y = self.body_tail(self.body(h)) + h
        return self.tail(self.upsample(y))


_CONV_BN = (("conv1", "bn1"), ("conv2", "bn2"))


def fold_batch_norm(state: dict[str, torch.Tensor], eps: float = 1e-5) -> dict[str, torch.Tensor]:
    """A batch-norm generator's weights as those of the same generator without batch norm
    (``batch_norm=False``): each BN's inference-time affine map folded into the conv before it, so the
    two compute the same function (up to float rounding). Pure: returns a new dict."""
    out = dict(state)
    pairs = [("body_tail.0", "body_tail.1")]
    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("body.")})
    pairs += [(f"body.{i}.{conv}", f"body.{i}.{bn}") for i in blocks for conv, bn in _CONV_BN]
    for conv, bn in pairs:
        if f"{bn}.running_var" not in state:
            continue
        scale = state[f"{bn}.weight"] / torch.sqrt(state[f"{bn}.running_var"] + eps)
        out[f"{conv}.weight"] = state[f"{conv}.weight"] * scale[:, None, None, None]
        out[f"{conv}.bias"] = (state[f"{conv}.bias"] - state[f"{bn}.running_mean"]) * scale + state[f"{bn}.bias"]
        for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            out.pop(f"{bn}.{k}", None)
    return out
