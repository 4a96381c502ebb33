"""Dictionary twins of random array transforms: one place for how a ``...d`` class shares its array twin's draw."""
from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
from monai.transforms import MapTransform, Randomizable


class RandTwind(Randomizable, MapTransform):
    """The dictionary twin of a random array transform ``self.t``: its randomness is ``t``'s (seeding or
    randomising the twin seeds or randomises ``t``), so both forms draw the same values from the same seed.
    Subclasses set ``self.t`` and say in ``__call__`` how the sample's keys feed it (one draw per sample)."""

    t: Randomizable

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        self.t.set_random_state(seed, state)
        return self

    def randomize(self, data: object = None) -> None:
        self.t.randomize(data)


class RandEachKeyd(RandTwind):
    """``t`` applied to each key's array with one draw shared across the keys."""

    def __init__(self, keys, t: Randomizable):
        MapTransform.__init__(self, keys)
        self.t = t

    def __call__(self, data: Mapping[Hashable, np.ndarray]) -> dict:
        d = dict(data)
        self.randomize()
        for key in self.keys:
            d[key] = self.t(d[key], randomize=False)
        return d
