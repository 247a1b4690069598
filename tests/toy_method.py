"""A complete matching method in one module, as a user or a new issue would add one.

``method="toy_median"`` maps every (masked) pixel of a channel to the median of
the reference's channel, plus ``toy_offset``. It reuses the per-channel state
(exact histograms / quantile sketches) for learning and merging, and derives
its medians from the knots at fit. ``register(ToyMedian)`` makes it available
(the tests do so in a fixture, and unregister it afterwards); no other file of
the package knows about it.
"""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.utils._param_validation import Interval

from histmatch_ml import _reference
from histmatch_ml.methods import N_QUANTILES, MatchingMethod, Param
from histmatch_ml.methods._base import finish


class ToyMedian(MatchingMethod):
    """Every pixel of a channel becomes the reference median of that channel, plus an offset."""

    name = "toy_median"
    summary = "a toy: each channel becomes the reference median plus toy_offset"
    state_kind = "toy_median"  # its tables differ from the per-channel methods'
    params = (
        N_QUANTILES,
        Param(
            "toy_offset",
            0.0,
            [Interval(Real, -1e6, 1e6, closed="both")],
            "Added to the reference median of every channel.",
            "float in [-1e6, 1e6]",
        ),
    )

    def prepare(self, state: dict, params: dict) -> dict:
        knots = _reference.quantile_knots(state)
        n_channels = len(knots["values"])
        half = np.array([0.5])
        return {
            "medians": np.array(
                [_reference.quantile_values(knots, c, half)[0] for c in range(n_channels)]
            )
        }

    def apply(self, image, mask, state, tables, params, out) -> None:
        matched = np.empty(image.shape, dtype=np.float64)
        matched[...] = tables["medians"] + params["toy_offset"]
        finish(image, matched, mask, params["strength"], out)
