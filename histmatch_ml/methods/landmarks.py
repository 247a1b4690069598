"""Piecewise-linear landmark standardization (Nyul & Udupa): ``method="landmarks"``.

Nyul, Udupa & Zhang, "New variants of a method of MRI scale
standardization", IEEE TMI 19(2), 2000, as TorchIO's
``HistogramStandardization`` and intensity-normalization's ``NyulNormalize``
implement it:

* every image (volume) is summarised per channel by its *landmarks*: the
  values at the ``landmarks`` percentiles of its (masked, foreground) voxels,
  by default 1, 10, 20, ..., 90 and 99;
* the *standard* is learned from the references: with ``reference="pooled"``
  the landmarks of all reference voxels together; with
  ``reference="barycenter"`` the average of every reference's own landmarks
  (each reference weighs the same: Nyul's training). With ``standard_range =
  (s1, s2)`` landmarks are first mapped linearly so that the first lands on
  ``s1`` and the last on ``s2`` (for ``"barycenter"`` each reference's, as
  TorchIO does with ``(0, 100)``); with None the standard keeps the
  references' own values;
* ``transform`` maps each channel piecewise linearly, the image's landmarks
  onto the standard, and beyond the first and last landmark along the
  straight lines of the end segments (linear extrapolation). Equal
  consecutive landmarks (a flat stretch of the histogram) give that segment a
  zero slope.

Percentiles follow this library's midpoint convention (a level holding ``h``
of ``n`` voxels sits at probability ``(count below + h / 2) / n``: numpy's
``"hazen"`` method), through the same quantile functions as the other
methods; TorchIO uses numpy's default (``"linear"``), so the two differ by
under one voxel's share of probability at each landmark. As everywhere in
this library, a mask selects the voxels that set an image's landmarks *and*
the voxels that are changed; TorchIO maps every voxel. The output is on the
standard's scale whatever the image's dtype (integers rounded and clipped to
it: prefer float volumes, or a ``standard_range`` within the integer range).
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np

from .. import _images, _reference
from ._base import (
    N_QUANTILES,
    MatchingMethod,
    Param,
    blend,
    finish,
    gather,
    keep_unmasked,
    register,
)
from .per_channel import apply_lut_uint8

#: Nyul's and TorchIO's percentiles: the cutoffs 1 and 99 and the deciles between
DEFAULT_LANDMARKS = (1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0)

LANDMARKS = Param(
    "landmarks",
    DEFAULT_LANDMARKS,
    ["array-like"],
    "Percentiles (increasing, in [0, 100], at least 2) of each image's foreground whose "
    "values the piecewise-linear map aligns; the first and last are the cutoffs.",
    "sequence of float",
)
STANDARD_RANGE = Param(
    "standard_range",
    None,
    [None, "array-like"],
    "Values (s1, s2) of the first and last landmark of the standard, e.g. (0, 100) as "
    "TorchIO; None keeps the references' own scale.",
    "(float, float) or None",
)


def check_landmarks(value: Any) -> np.ndarray:
    """``landmarks`` as increasing probabilities in [0, 1]; ``ValueError`` naming it.

    Examples
    --------
    >>> from histmatch_ml.methods.landmarks import check_landmarks
    >>> check_landmarks((1, 50, 99)).tolist()
    [0.01, 0.5, 0.99]
    """
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if (
        arr is None
        or arr.ndim != 1
        or len(arr) < 2
        or not np.isfinite(arr).all()
        or (np.diff(arr) <= 0).any()
        or arr[0] < 0
        or arr[-1] > 100
    ):
        raise ValueError(
            f"landmarks must be at least 2 increasing percentiles in [0, 100]; got {value!r}"
        )
    return arr / 100.0


def check_standard_range(value: Any) -> tuple[float, float] | None:
    """``standard_range`` as ``(s1, s2)`` with ``s1 < s2``, or None; ``ValueError`` naming it."""
    if value is None:
        return None
    ok = (
        isinstance(value, (tuple, list, np.ndarray))
        and len(value) == 2
        and all(isinstance(v, (Real, np.number)) and not isinstance(v, bool) for v in value)
    )
    if ok:
        s1, s2 = float(value[0]), float(value[1])
        if np.isfinite(s1) and np.isfinite(s2) and s1 < s2:
            return s1, s2
    raise ValueError(
        f"standard_range must be None or two finite numbers (s1, s2) with s1 < s2; got {value!r}"
    )


def image_landmarks(image: np.ndarray, mask: np.ndarray | None, probs: np.ndarray) -> np.ndarray:
    """The landmarks ``(C, L)`` of one ``(H, W, C)`` image: its quantiles at ``probs``.

    Midpoint convention: exact level histograms for 8/16-bit images (read
    through the reference quantile function of :mod:`histmatch_ml._reference`),
    numpy's ``"hazen"`` quantiles of the (masked) values otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.methods.landmarks import image_landmarks
    >>> image = np.arange(100, dtype=np.float32).reshape(10, 10, 1)
    >>> image_landmarks(image, None, np.array([0.01, 0.5, 0.99])).tolist()
    [[0.5, 49.5, 98.5]]
    """
    if _reference.has_exact_levels(image.dtype):
        state = {
            "histograms": _reference.image_histograms(image, mask),
            "dtype": np.array(image.dtype.name),
        }
        knots = _reference.quantile_knots(state)
        return np.stack(
            [_reference.quantile_values(knots, c, probs) for c in range(image.shape[2])]
        )
    rows = []
    for c in range(image.shape[2]):
        values = image[:, :, c]
        values = values.ravel() if mask is None else values[mask]
        rows.append(sorted_quantiles(np.sort(values), probs))
    return np.stack(rows)


def sorted_quantiles(ordered: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """numpy's ``"hazen"`` quantiles at ``probs`` of the sorted 1-D ``ordered``, in float64.

    The same result as ``np.quantile(ordered.astype(np.float64), probs,
    method="hazen")`` (the same virtual index and interpolation, term by
    term), read from values already in order: the image's own dtype is
    sorted (numpy's SIMD sort, faster than the selection ``np.quantile``
    runs for a dozen probabilities; the "fit, 10 volumes" row of the volumes
    benchmark) and only the two neighbours of each landmark are cast.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.methods.landmarks import sorted_quantiles
    >>> sorted_quantiles(np.arange(10, dtype=np.float32), np.array([0.0, 0.25, 1.0])).tolist()
    [0.0, 2.0, 9.0]
    """
    n = len(ordered)
    if n == 0:
        raise ValueError("landmarks need at least one (masked) value per channel; got none")
    probs = np.asarray(probs, dtype=np.float64)
    virtual = n * probs + (0.5 + probs * (1 - 0.5 - 0.5)) - 1  # numpy's hazen index
    below = np.floor(virtual)
    gamma = virtual - below
    below = np.clip(below, 0, n - 1).astype(np.intp)
    above = np.clip(below + 1, 0, n - 1)
    below[virtual >= n - 1] = n - 1  # beyond the ends: the extreme values
    above[virtual < 0] = 0
    a = ordered[below].astype(np.float64)
    b = ordered[above].astype(np.float64)
    diff = b - a  # numpy's lerp: from the nearer end
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


def to_range(landmarks: np.ndarray, standard_range: tuple[float, float] | None) -> np.ndarray:
    """``landmarks`` ``(C, L)`` mapped linearly per row, first onto ``s1`` and last onto ``s2``.

    A row whose first and last landmark are equal is moved to ``s1`` (zero slope,
    as TorchIO). None: ``landmarks`` unchanged.
    """
    if standard_range is None:
        return landmarks
    s1, s2 = standard_range
    first, last = landmarks[:, :1], landmarks[:, -1:]
    width = last - first
    slope = np.divide(s2 - s1, width, out=np.zeros_like(width), where=width > 0)
    return s1 + slope * (landmarks - first)


def piecewise_map(
    values: np.ndarray, source: np.ndarray, standard: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """Map ``values`` piecewise linearly, ``source`` landmarks onto ``standard`` ones.

    Segment ``k`` is the line through ``(source[k], standard[k])`` and
    ``(source[k + 1], standard[k + 1])`` (slope 0 where the two sources are
    equal); a value is mapped by the segment of the landmarks it lies between,
    and values beyond the first (last) landmark by the first (last) segment.
    ``out`` (a float array of ``values``' shape) receives the result.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.methods.landmarks import piecewise_map
    >>> x = np.array([-1.0, 0.0, 1.0, 2.0, 4.0])
    >>> piecewise_map(x, np.array([0.0, 1.0, 3.0]), np.array([0.0, 10.0, 20.0]), np.empty(5))
    array([-10.,   0.,  10.,  15.,  25.])
    """
    dsrc, dstd = np.diff(source), np.diff(standard)
    slope = np.divide(dstd, dsrc, out=np.zeros_like(dstd), where=dsrc > 0)
    intercept = standard[:-1] - slope * source[:-1]
    segment = np.searchsorted(source[1:-1], values, side="right")
    np.multiply(np.take(slope, segment), values, out=out)
    out += np.take(intercept, segment)
    return out


@register
class Landmarks(MatchingMethod):
    """Nyul-Udupa piecewise-linear standardization to a learned standard.

    Reads ``landmarks``, ``standard_range`` and ``reference`` (see the module
    docstring). The standard is computed at fit (``tables_["standard"]``);
    each image's own landmarks at transform.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml import HistogramMatcher
    >>> rng = np.random.default_rng(0)
    >>> train = [rng.normal(100 * s, 10 * s, (8, 16, 16)) for s in (1, 2, 3)]
    >>> matcher = HistogramMatcher("landmarks", reference="barycenter", spatial_dims=3,
    ...                            standard_range=(0, 100)).fit(train)
    >>> out = matcher.transform([rng.normal(500, 50, (8, 16, 16))])[0]
    >>> bool(abs(np.median(out) - 50) < 2)
    True
    """

    name = "landmarks"
    summary = "Nyul-Udupa piecewise-linear standardization of percentile landmarks (MR volumes)"
    params = (N_QUANTILES, LANDMARKS, STANDARD_RANGE)
    state_kind = "landmarks"
    raw_values = False
    barycenter_keys = ("landmarks",)
    #: channels-first images (CPU tensors) are read and written plane by plane
    planar = True

    def image_summary(self, batch, params, rng, like=None) -> dict:
        """One reference's landmarks, mapped to ``standard_range`` (the barycentre's parts)."""
        probs = check_landmarks(params["landmarks"])
        standard_range = check_standard_range(params["standard_range"])
        mask = None if batch.masks is None else batch.masks[0]
        found = to_range(image_landmarks(batch.images[0], mask, probs), standard_range)
        return {
            "landmarks": found,
            "percentiles": probs * 100.0,
            "dtype": np.array(batch.dtype.name),
        }

    def prepare(self, state: dict, params: dict[str, Any]) -> dict:
        """The standard ``(C, L)`` and the percentiles it stands at."""
        if "landmarks" in state:  # a barycentre: the averaged landmarks are the standard
            percentiles = np.asarray(state["percentiles"], dtype=np.float64)
            return {"percentiles": percentiles, "standard": np.array(state["landmarks"])}
        probs = check_landmarks(params["landmarks"])
        knots = _reference.quantile_knots(state)
        pooled = np.stack(
            [_reference.quantile_values(knots, c, probs) for c in range(len(knots["values"]))]
        )
        standard = to_range(pooled, check_standard_range(params["standard_range"]))
        return {"percentiles": probs * 100.0, "standard": standard}

    def check_state(self, state: Any, n_channels: int | None) -> int | None:
        if not (isinstance(state, dict) and "landmarks" in state):
            return super().check_state(state, n_channels)
        if set(state) != {"landmarks", "percentiles", "dtype"}:
            raise ValueError(
                "a landmarks barycentre holds 'landmarks', 'percentiles' and 'dtype'; "
                f"got {sorted(state)}"
            )
        _reference.dtype_from_name(state["dtype"], "state['dtype']")
        _reference.check_quantile_rows(state["landmarks"], "state['landmarks']", n_channels)
        check_landmarks(state["percentiles"])
        if np.shape(state["percentiles"]) != (state["landmarks"].shape[1],):
            raise ValueError("state['percentiles'] must hold one percentile per landmark")
        return None

    def apply(self, image, mask, state, tables, params, out) -> None:
        probs = tables["percentiles"] / 100.0
        source = image_landmarks(image, mask, probs)
        work = np.result_type(image.dtype, np.float32)
        if _reference.has_exact_levels(image.dtype):
            _apply_level_tables(image, mask, source, tables["standard"], params, work, out)
            return
        matched = np.empty_like(image, dtype=work)  # (the image's layout: its planes, if planar)
        for c in range(image.shape[2]):
            plane = matched[:, :, c]
            plane[...] = image[:, :, c]  # (mapped in place)
            piecewise_map(plane, source[c], tables["standard"][c], plane)
        finish(image, matched, mask, params["strength"], out)


def _apply_level_tables(image, mask, source, standard, params, work, out) -> None:
    """An 8/16-bit image through one table per channel over its levels, into ``out``.

    Each table is the map in ``work`` precision, blended by strength, rounded
    and clipped to the image's dtype as :func:`._base.finish` does pixel by
    pixel (the same arithmetic on the same values: the same result), then
    gathered: one ``cv2.LUT`` for an interleaved uint8 image of up to four
    channels, a gather per channel otherwise. No float copy of the image.
    """
    levels = _reference.level_values(image.dtype)
    interleaved = np.empty((len(levels), image.shape[2]), dtype=image.dtype)  # (cv2.LUT's)
    luts = interleaved.T  # (C, levels)
    for c, lut in enumerate(luts):
        table = piecewise_map(levels, source[c], standard[c], np.empty(len(levels)))
        blend(levels, table.astype(work), params["strength"], image.dtype, out=lut)
    if image.dtype == np.uint8 and image.shape[2] <= 4 and _images.planes_of(image) is None:
        apply_lut_uint8(image, interleaved[None], out)
    else:
        index = _reference.level_index(image)
        for c, lut in enumerate(luts):
            gather(np.ascontiguousarray(lut), index[:, :, c], out[:, :, c])
    keep_unmasked(out, image, mask)
