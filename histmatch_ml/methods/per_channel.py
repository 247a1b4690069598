"""Per-channel CDF (quantile) matching.

Each channel's values are mapped through ``Q_ref(F_src(x))``, where ``F_src`` is
the image's own *midpoint* CDF (a level holding ``h`` of ``n`` pixels sits at
``(count below + h / 2) / n``) and ``Q_ref`` is the reference quantile function
with the same convention. Equal values stay equal and the map is monotone.

* 8/16-bit integers: one histogram and one lookup table per channel over all
  representable levels; blending by ``strength``, rounding and clipping are
  folded into the table, which ``cv2.LUT`` (uint8) or a gather applies.
* floats and wide integers: sort-free. Each channel is placed on a 65,536-node
  grid over its own range and counted with ``bincount`` (see
  :func:`match_float_channel`); the matched value of every pixel is the linear
  interpolation between two neighbouring nodes, so outputs are continuous in
  the input (never quantised) and repeated values stay exact.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .. import _reference
from ._base import MatchingMethod, blend, finish, keep_unmasked, register

#: grid nodes of the float path (the resolution of the source CDF)
FLOAT_GRID_NODES = 65536


def midpoint_cdf(hist: np.ndarray) -> np.ndarray:
    """Midpoint CDF of a histogram: ``(counts below + count / 2) / total`` per bin."""
    hist = hist.astype(np.float64, copy=False)
    cum = np.cumsum(hist, axis=-1)
    return (cum - hist / 2.0) / cum[..., -1:]


def level_lut(src_hist: np.ndarray, state: dict, strength: float, dtype: np.dtype) -> np.ndarray:
    """Lookup tables ``(C, L)`` in ``dtype`` mapping each level to its matched value."""
    levels = _reference.level_values(dtype)
    cdf = midpoint_cdf(src_hist)
    matched = np.stack(
        [np.interp(cdf[c], *_reference.quantile_points(state, c)) for c in range(len(cdf))]
    )
    return blend(levels, matched, strength, dtype)


def apply_lut(image: np.ndarray, lut: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Apply per-channel lookup tables ``(C, L)`` to an 8/16-bit ``(H, W, C)`` image.

    Writes into ``out`` (same shape and dtype as ``image``) when given.
    """
    n_channels = image.shape[2]
    if out is None:
        out = np.empty_like(image)
    if image.dtype == np.uint8 and n_channels <= 4:
        table = np.ascontiguousarray(lut.T).reshape(1, 256, n_channels)
        if n_channels == 1:
            cv2.LUT(image[:, :, 0], table, dst=out[:, :, 0])
        else:
            cv2.LUT(image, table, dst=out)
        return out
    index = _reference.level_index(image)
    for c in range(n_channels):
        np.take(lut[c], index[:, :, c], out=out[:, :, c])
    return out


def match_float_channel(
    channel: np.ndarray, mask: np.ndarray | None, p_ref: np.ndarray, v_ref: np.ndarray
) -> np.ndarray:
    """Matched values of one 2-D float channel (sort-free grid path).

    The channel's range is cut into ``FLOAT_GRID_NODES - 1`` equal cells. One
    ``bincount`` gives each cell's pixel count and a weighted one the mean
    position of its pixels; every occupied cell becomes a knot at that mean,
    valued ``Q_ref`` (knots ``p_ref``, ``v_ref``) at the cell's midpoint CDF.
    The knots are resampled on the uniform grid and each pixel takes the linear
    interpolation between its two neighbouring grid nodes: continuous in the
    input, monotone, and exact for repeated values wherever they fall. Values
    closer than ``1 / (FLOAT_GRID_NODES - 1)`` of the channel's range share a
    cell, and so a CDF value: the resolution of the method.

    Returns an array of ``channel``'s float dtype (float64 for integers).
    """
    work = channel.dtype if channel.dtype.kind == "f" else np.dtype(np.float64)
    x = np.ascontiguousarray(channel, dtype=work)
    values = x if mask is None else x[mask]
    lo, hi = values.min(), values.max()
    if hi == lo:  # one value: it sits at the median of the reference
        return np.full(x.shape, np.interp(0.5, p_ref, v_ref), dtype=work)
    k = FLOAT_GRID_NODES
    # (x - lo) >= 0 exactly, and the top maps just below node k - 1, so that
    # floor(t) <= k - 2 without clipping (needed only for unmasked outliers)
    t = np.subtract(x, lo)
    t *= work.type((k - 1 - 1 / 64) / (float(hi) - float(lo)))
    if mask is not None:
        np.clip(t, 0, k - 1 - 1 / 64, out=t)
    cell = t.astype(np.intp)
    t -= cell  # t is now the fraction between nodes cell and cell + 1
    counted, frac = (cell.ravel(), t.ravel()) if mask is None else (cell[mask], t[mask])
    counts = np.bincount(counted, minlength=k)
    sums = np.bincount(counted, weights=frac, minlength=k)
    occupied = np.flatnonzero(counts)
    n_cell = counts[occupied]
    knot_t = occupied + sums[occupied] / n_cell
    knot_v = np.interp(midpoint_cdf(n_cell), p_ref, v_ref)
    needed = np.union1d(occupied, occupied + 1)  # the only nodes pixels read
    nodes = np.zeros(k, dtype=work)
    nodes[needed] = np.interp(needed, knot_t, knot_v)
    steps = np.zeros_like(nodes)
    steps[:-1] = np.diff(nodes)
    out = nodes[cell]
    t *= steps[cell]
    out += t
    return out


@register
class PerChannel(MatchingMethod):
    """Classic histogram matching, each channel on its own."""

    name = "per_channel"

    def apply(self, image: np.ndarray, mask, state: dict, params: dict[str, Any]) -> np.ndarray:
        out = np.empty_like(image)
        self.apply_into(image, mask, state, params, out)
        return out

    def apply_into(self, image, mask, state, params, out) -> None:
        strength = params["strength"]
        if _reference.has_exact_levels(image.dtype):
            lut = level_lut(_reference.image_histograms(image, mask), state, strength, image.dtype)
            keep_unmasked(apply_lut(image, lut, out=out), image, mask)
            return
        # floats are written channel by channel straight into ``out``; wide
        # integers go through a float64 buffer to be rounded once
        direct = image.dtype.kind == "f"
        matched = out if direct else np.empty(image.shape, dtype=np.float64)
        for c in range(image.shape[2]):
            p, v = _reference.quantile_points(state, c)
            matched[:, :, c] = match_float_channel(image[:, :, c], mask, p, v)
        if direct and strength == 1.0:
            keep_unmasked(out, image, mask)
        else:
            out[...] = finish(image, matched, mask, strength)
