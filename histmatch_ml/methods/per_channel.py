"""Per-channel CDF (quantile) matching.

Each channel's values are mapped through ``Q_ref(F_src(x))``, where ``F_src`` is
the image's own *midpoint* CDF (a level holding ``h`` of ``n`` pixels sits at
``(count below + h / 2) / n``) and ``Q_ref`` is the reference quantile function
with the same convention. Equal values stay equal and the map is monotone.

* 8/16-bit integers: one histogram and one lookup table per channel over the
  levels present; blending by ``strength``, rounding and clipping are folded
  into the table, which ``cv2.LUT`` (uint8) or a gather (16-bit) applies.
* floats and wide integers: sort-free. Each channel is placed on a 65,536-node
  grid over its own range, counted with ``bincount``, and mapped through a
  lookup table of reference quantiles (see :func:`match_float_channel`):
  values are never rounded to 8 bits or clipped to [0, 1], and repeated values
  get exactly their midpoint CDF.
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
    """Lookup tables ``(C, L)`` in ``dtype`` mapping each level to its matched value.

    Only levels present in ``src_hist`` are computed (the others are never read
    for counted pixels, and uncounted pixels are restored afterwards), so a
    16-bit image costs what its distinct values cost, not 65,536 levels.
    """
    levels = _reference.level_values(dtype)
    lut = np.zeros(src_hist.shape, dtype=dtype)
    for c, hist in enumerate(src_hist):
        present = np.nonzero(hist > 0)[0]
        matched = np.interp(midpoint_cdf(hist[present]), *_reference.quantile_points(state, c))
        lut[c, present] = blend(levels[present], matched, strength, dtype)
    return lut


def interleave_into(planes: list[np.ndarray], out: np.ndarray) -> np.ndarray:
    """Write 2-D ``planes`` as the channels of ``out`` (``cv2.merge`` in place)."""
    if len(planes) == 1:
        out[:, :, 0] = planes[0]
    elif len(planes) > 4 or cv2.merge(planes, dst=out) is not out:
        out[...] = np.dstack(planes)
    return out


def apply_lut_uint8(image: np.ndarray, lut: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Apply lookup tables ``(C, 256)`` to a uint8 ``(H, W, C<=4)`` image into ``out``."""
    n_channels = image.shape[2]
    table = np.ascontiguousarray(lut.T).reshape(1, 256, n_channels)
    if n_channels == 1:
        cv2.LUT(image[:, :, 0], table, dst=out[:, :, 0])
    else:
        cv2.LUT(image, table, dst=out)
    return out


def match_float_channel(
    channel: np.ndarray, mask: np.ndarray | None, p_ref: np.ndarray, v_ref: np.ndarray
) -> np.ndarray:
    """Matched values of one 2-D float channel (sort-free grid path).

    The channel's range is cut into ``FLOAT_GRID_NODES`` equal cells centred on
    grid nodes; one ``bincount`` gives the cell counts, the reference quantile
    function (knots ``p_ref``, ``v_ref``) at each occupied cell's midpoint CDF
    gives a lookup table, and one gather applies it. Repeated values share a
    cell and get exactly their midpoint CDF; values closer than
    ``1 / (FLOAT_GRID_NODES - 1)`` of the channel's range share one output
    value: the method's resolution (output values are never rounded to the
    grid: they are reference quantiles). Monotone; equal values stay equal.

    Returns an array of ``channel``'s float dtype (float64 for integers).
    """
    work = channel.dtype if channel.dtype.kind == "f" else np.dtype(np.float64)
    x = np.ascontiguousarray(channel, dtype=work)
    values = x if mask is None else x[mask]
    lo, hi = values.min(), values.max()
    if hi == lo:  # one value: it sits at the median of the reference
        return np.full(x.shape, np.interp(0.5, p_ref, v_ref), dtype=work)
    k = FLOAT_GRID_NODES
    # cell = round((x - lo) * scale): truncation of t = x * scale + (0.5 - lo * scale),
    # which lies in [0.5 - eps, k - 0.5 + eps] for x in [lo, hi]
    scale = (k - 1) / (float(hi) - float(lo))
    t = np.multiply(x, work.type(scale))
    t += work.type(0.5 - float(lo) * scale)
    if mask is not None:  # unmasked pixels may lie outside [lo, hi]
        np.clip(t, 0, k - 0.5, out=t)
    cell = t.astype(np.intp)
    counts = np.bincount(cell.ravel() if mask is None else cell[mask], minlength=k + 1)
    occupied = np.nonzero(counts > 0)[0]
    lut = np.zeros(k + 1, dtype=work)
    lut[occupied] = np.interp(midpoint_cdf(counts[occupied]), p_ref, v_ref)
    return lut[cell]


@register
class PerChannel(MatchingMethod):
    """Classic histogram matching, each channel on its own."""

    name = "per_channel"

    def apply(self, image: np.ndarray, mask, state: dict, params: dict[str, Any]) -> np.ndarray:
        out = np.empty_like(image)
        self.apply_into(image, mask, state, params, out)
        return out

    def apply_into(self, image, mask, state, params, out) -> None:
        strength, dtype = params["strength"], image.dtype
        if dtype == np.uint8 and image.shape[2] <= 4:
            # cv2.calcHist and cv2.LUT work on the interleaved image: no channel copies
            lut = level_lut(_reference.image_histograms(image, mask), state, strength, dtype)
            keep_unmasked(apply_lut_uint8(image, lut, out), image, mask)
            return
        if _reference.has_exact_levels(dtype):
            # 16-bit: one transposing copy feeds both the histograms and the gathers
            n_levels, _ = _reference.level_count_and_offset(dtype)
            planes = _reference.channel_planes(_reference.level_index(image))
            hist = _reference.plane_histograms(planes, mask, n_levels)
            lut = level_lut(hist, state, strength, dtype)
            matched = [np.take(lut[c], plane) for c, plane in enumerate(planes)]
            keep_unmasked(interleave_into(matched, out), image, mask)
            return
        # floats (and wide integers, through float64 to be rounded once)
        work = dtype if dtype.kind == "f" else np.dtype(np.float64)
        planes = _reference.channel_planes(image, work)
        matched = [
            match_float_channel(plane, mask, *_reference.quantile_points(state, c))
            for c, plane in enumerate(planes)
        ]
        if dtype.kind != "f" or strength != 1.0:
            out[...] = finish(image, np.dstack(matched), mask, strength)
            return
        keep_unmasked(interleave_into(matched, out), image, mask)
