"""Geometric self-ensemble: run a generator on flipped/rotated copies of the input, undo, average.

A fully convolutional SR network gives slightly different answers for a slice and its mirror
image; their mean has less of each pass's own error (Lim et al. 2017, "EDSR+"). The members
are elements of the square's symmetry group (rotation by k x 90 degrees, then an optional
left-right flip), each exactly invertible, so the mean is still a restore of *this* slice:

- 1: the network alone;
- 2: + the left-right mirror;
- 4: + the up-down mirror and the 180-degree rotation (the four flips);
- 8: all eight symmetries (adds the 90/270-degree rotations; for non-square slices too).

Cost: N network passes. How much it buys is measured in the model cards, not assumed.
"""
from __future__ import annotations

import torch

# (quarter turns, left-right flip after the turn)
MEMBERS: dict[int, tuple[tuple[int, bool], ...]] = {
    1: ((0, False),),
    2: ((0, False), (0, True)),
    4: ((0, False), (0, True), (2, False), (2, True)),
    8: tuple((k, f) for k in range(4) for f in (False, True)),
}
SIZES = tuple(MEMBERS)


def check_ensemble(n: int) -> int:
    from ..errors import MedsrError

    if n not in MEMBERS:
        raise MedsrError(f"self-ensemble size must be one of {', '.join(map(str, SIZES))} (got {n})")
    return int(n)


def _forward(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if k:
        x = torch.rot90(x, k, (2, 3))
    return torch.flip(x, (3,)) if flip else x


def _inverse(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if flip:
        y = torch.flip(y, (3,))
    return torch.rot90(y, -k, (2, 3)) if k else y


class SelfEnsemble(torch.nn.Module):
    """``net`` averaged over ``n`` symmetries of its (b, c, h, w) input; same call signature."""

    def __init__(self, net: torch.nn.Module, n: int):
        super().__init__()
        self.net = net
        self.n = check_ensemble(n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc = None
        for k, flip in MEMBERS[self.n]:
            y = _inverse(self.net(_forward(x, k, flip)), k, flip).float()
            acc = y if acc is None else acc + y
        return acc / self.n


def with_ensemble(net: torch.nn.Module, n: int) -> torch.nn.Module:
    """``net`` itself for n = 1, else a ``SelfEnsemble`` around it."""
    return net if check_ensemble(n) == 1 else SelfEnsemble(net, n)
