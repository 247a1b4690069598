"""Per-channel CDF (quantile) matching.

Each channel's values are mapped through ``Q_ref(F_src(x))``, where ``F_src`` is
the image's own *midpoint* CDF (a level holding ``h`` of ``n`` pixels sits at
``(count below + h / 2) / n``) and ``Q_ref`` is the reference quantile function
with the same convention. Equal values stay equal and the map is monotone.

* 8/16-bit integers: one histogram and one lookup table per channel over all
  representable levels; blending by ``strength``, rounding and clipping are
  folded into the table, which ``cv2.LUT`` (uint8) or a gather applies.
* floats and wide integers: sort-free. Each channel is placed on a 65,536-node
  grid over its own range, counted with ``bincount``, and the matched value of
  every pixel is the linear interpolation between the two neighbouring nodes,
  so outputs are continuous in the input (never quantised).
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


def apply_lut(image: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Apply per-channel lookup tables ``(C, L)`` to an 8/16-bit ``(H, W, C)`` image."""
    n_channels = image.shape[2]
    if image.dtype == np.uint8 and n_channels <= 4:
        table = np.ascontiguousarray(lut.T).reshape(1, 256, n_channels)
        return cv2.LUT(image, table).reshape(image.shape)
    index = _reference.level_index(image)
    out = np.empty_like(image)
    for c in range(n_channels):
        np.take(lut[c], index[:, :, c], out=out[:, :, c])
    return out


def match_float_channel(
    channel: np.ndarray, mask: np.ndarray | None, p_ref: np.ndarray, v_ref: np.ndarray
) -> np.ndarray:
    """Matched values of one 2-D float channel (sort-free grid path).

    Returns an array of ``channel``'s float dtype (float64 for integers).
    """
    work = channel.dtype if channel.dtype.kind == "f" else np.dtype(np.float64)
    x = channel.astype(work, copy=False)
    values = x if mask is None else x[mask]
    lo, hi = values.min(), values.max()
    if hi == lo:  # one value: it sits at the median of the reference
        return np.full(x.shape, np.interp(0.5, p_ref, v_ref), dtype=work)
    k = FLOAT_GRID_NODES
    t = (x - lo) * work.type((k - 1) / (float(hi) - float(lo)))
    np.clip(t, 0, k - 1, out=t)
    t_counted = t if mask is None else t[mask]
    counts = np.bincount(np.rint(t_counted).astype(np.intp).ravel(), minlength=k)
    node_values = np.interp(midpoint_cdf(counts), p_ref, v_ref).astype(work)
    steps = np.diff(node_values)
    i = t.astype(np.intp)
    np.minimum(i, k - 2, out=i)
    t -= i  # now the fraction between nodes i and i + 1
    return node_values[i] + t * steps[i]


@register
class PerChannel(MatchingMethod):
    """Classic histogram matching, each channel on its own."""

    name = "per_channel"

    def apply(self, image: np.ndarray, mask, state: dict, params: dict[str, Any]) -> np.ndarray:
        strength = params["strength"]
        if _reference.has_exact_levels(image.dtype):
            src_hist = _reference.image_histograms(image, mask)
            out = apply_lut(image, level_lut(src_hist, state, strength, image.dtype))
            return keep_unmasked(out, image, mask)
        matched = np.empty(image.shape, dtype=np.result_type(image.dtype, np.float32))
        for c in range(image.shape[2]):
            p, v = _reference.quantile_points(state, c)
            matched[:, :, c] = match_float_channel(image[:, :, c], mask, p, v)
        return finish(image, matched, mask, strength)
