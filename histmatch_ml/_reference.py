"""The learned reference state, per channel, as plain arrays.

Two representations, chosen by the reference dtype:

* **exact histograms** for 8- and 16-bit integer dtypes (uint8, int8, uint16,
  int16): one count per representable level, ``(C, 256)`` or ``(C, 65536)``
  int64. Pooling and merging are exact (counts add up), and the cost does not
  depend on the values present (a uint16 image holding 65535 is as cheap as
  one holding 10).
* **quantile sketches** for floats and wide integers: ``n_quantiles`` values of
  the pooled quantile function at evenly spaced probabilities ``0 .. 1`` (the
  Hazen/midpoint plotting position). Merging two sketches evaluates the
  mixture of their piecewise-linear distributions exactly and resamples it on
  the grid; see :func:`merge_quantiles` for the tolerance.

Both expose the same *quantile function*: :func:`quantile_knots`, computed
once per fit and kept with the fitted estimator, holds ``(p, v)`` knots such
that ``np.interp(q, p, v)`` is the reference value at probability ``q``
(:func:`quantile_points`); the lookups (:func:`quantile_values`,
:func:`quantile_rows`, :func:`midpoint_quantiles`) read those knots.
Everything here is a pure function of arrays.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import _images

_EXACT = {
    np.dtype(np.uint8): (256, 0),
    np.dtype(np.int8): (256, 128),
    np.dtype(np.uint16): (65536, 0),
    np.dtype(np.int16): (65536, 32768),
}


def has_exact_levels(dtype: np.dtype) -> bool:
    """True when ``dtype`` gets exact full-range histograms (8/16-bit integers)."""
    return np.dtype(dtype) in _EXACT


def level_count_and_offset(dtype: np.dtype) -> tuple[int, int]:
    """Number of levels of an 8/16-bit integer dtype, and ``index - value``."""
    return _EXACT[np.dtype(dtype)]


def byte_tables(dtype: np.dtype) -> tuple[tuple[float, np.ndarray], ...]:
    """``(scale, table)``: the values of 8-bit levels ``k`` in a float dtype, as images get them.

    ``table[k]`` is the value of level ``k``, and ``k = round(x * scale)``.
    Three conversions are common: a division by 255 (numpy's ``image /
    255``, torchvision's ``ToTensor``, albumentations' ``ToFloat``), a
    product with ``1 / 255`` (scikit-image's ``img_as_float``; the two differ
    in the last bit for about half the levels) and a plain cast, which keeps
    ``0..255``.
    """
    dtype = np.dtype(dtype)
    k = np.arange(256, dtype=dtype)
    return ((255.0, k / dtype.type(255)), (255.0, k * dtype.type(1 / 255)), (1.0, k))


def byte_level_table(
    images: list[np.ndarray], masks: list[np.ndarray] | None
) -> np.ndarray | None:
    """The :func:`byte_tables` table every (masked) value of float ``images`` is a level of.

    None when the images are not all 8-bit levels of one conversion. Then a
    reference of such floats keeps an exact histogram of its levels, and
    matches as its 8-bit original does.
    """
    dtype = images[0].dtype
    if dtype.kind != "f":
        return None
    for scale, table in byte_tables(dtype):
        found = True
        for i, image in enumerate(images):
            values = image if masks is None else image[masks[i]]
            with np.errstate(over="ignore", invalid="ignore"):  # (huge values: not levels)
                levels = np.rint(values * scale)
            if levels.min() < 0 or levels.max() > 255:
                found = False
                break
            if not np.array_equal(table[levels.astype(np.uint8)], values):
                found = False
                break
        if found:
            return table.astype(np.float64)
    return None


def level_values(dtype: np.dtype) -> np.ndarray:
    """The value of every level index of an 8/16-bit integer dtype, as float64."""
    n, offset = level_count_and_offset(dtype)
    return np.arange(n, dtype=np.float64) - offset


def level_index(channel: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Unsigned level indices of an 8/16-bit integer array.

    uint8/uint16 arrays are returned as they are (or copied into ``out``);
    signed ones are shifted by flipping the sign bit, into ``out`` if given.
    """
    dt = channel.dtype
    if dt.kind == "i":
        unsigned = np.dtype(f"u{dt.itemsize}")
        return np.bitwise_xor(
            channel.view(unsigned), unsigned.type(1 << (8 * dt.itemsize - 1)), out=out
        )
    if out is None:
        return channel
    np.copyto(out, channel)
    return out


def channel_planes(image: np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
    """The channels of an ``(H, W, C)`` image as one contiguous ``(C, H, W)`` array.

    One transposing copy (about twice as fast as copying the strided channels
    one by one); ``dtype`` converts on the way.
    """
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=dtype)


#: float32 holds every integer count up to here exactly, so ``cv2.calcHist`` counts exactly
#: in images (or bands of rows) of at most this many pixels
EXACT_COUNTS = 2**24


def _bands(image: np.ndarray) -> list[slice]:
    """Row bands of ``image`` of at most :data:`EXACT_COUNTS` pixels each (one for most images)."""
    rows = max(1, EXACT_COUNTS // max(1, image.shape[1]))
    return [slice(r, r + rows) for r in range(0, image.shape[0], rows)]


def _calc_hist(image: np.ndarray, channel: int, mask: np.ndarray | None, n_levels: int, out=None):
    """``cv2.calcHist`` of one channel, as float32 counts ``(n_levels,)`` (exact, see _bands)."""
    m = None if mask is None else mask.view(np.uint8)
    return cv2.calcHist([image], [channel], m, [n_levels], [0, n_levels], hist=out).reshape(-1)


def level_counts(
    plane: np.ndarray, mask: np.ndarray | None, n_levels: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Histogram ``(n_levels,)`` of one 2-D uint8/uint16 plane of level indices.

    ``cv2.calcHist`` (which releases the GIL): float32 counts, exact, for
    planes of at most :data:`EXACT_COUNTS` pixels (into ``out``, an optional
    float32 ``(n_levels, 1)`` buffer); larger planes are counted by bands of
    rows and summed in int64.
    """
    bands = _bands(plane)
    if len(bands) == 1:
        return _calc_hist(plane, 0, mask, n_levels, out)
    total = np.zeros(n_levels, dtype=np.int64)
    for rows in bands:
        band_mask = None if mask is None else np.ascontiguousarray(mask[rows])
        total += _calc_hist(plane[rows], 0, band_mask, n_levels).astype(np.int64)
    return total


def plane_histograms(planes: np.ndarray, mask: np.ndarray | None, n_levels: int) -> np.ndarray:
    """Histograms ``(C, n_levels)`` int64 of level-index planes ``(C, H, W)``."""
    return np.stack([level_counts(p, mask, n_levels) for p in planes]).astype(np.int64)


def uint8_histograms(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Per-channel histograms ``(C, 256)`` of a uint8 ``(H, W, C)`` image.

    ``cv2.calcHist`` on the interleaved image (no channel copies), each
    channel straight into its row: float32 counts for images of at most
    :data:`EXACT_COUNTS` pixels, int64 sums over bands of rows for larger ones.
    """
    if image.shape[2] > 4:  # (OpenCV takes at most 4 interleaved channels here)
        return plane_histograms(channel_planes(image), mask, 256)
    bands = _bands(image)
    if len(bands) == 1:
        hist = np.empty((image.shape[2], 256), dtype=np.float32)
        for c, row in enumerate(hist):
            _calc_hist(image, c, mask, 256, row.reshape(256, 1))
        return hist
    hist = np.zeros((image.shape[2], 256), dtype=np.int64)
    for rows in bands:
        band = image[rows]
        band_mask = None if mask is None else np.ascontiguousarray(mask[rows])
        for c in range(image.shape[2]):
            hist[c] += _calc_hist(band, c, band_mask, 256).astype(np.int64)
    return hist


def image_histograms(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Per-channel level histograms ``(C, L)`` int64 of one ``(H, W, C)`` 8/16-bit image.

    uint8 images through :func:`uint8_histograms`, other dtypes through
    contiguous level planes (:func:`level_counts`).
    """
    if image.dtype == np.uint8:
        return uint8_histograms(image, mask).astype(np.int64, copy=False)
    n_levels, _ = level_count_and_offset(image.dtype)
    return plane_histograms(channel_planes(level_index(image)), mask, n_levels)


def pooled_histograms(images: list[np.ndarray], masks: list[np.ndarray] | None) -> np.ndarray:
    """Per-channel histograms ``(C, L)`` pooled over all (masked) pixels of ``images``."""
    total = None
    for i, image in enumerate(images):
        h = image_histograms(image, None if masks is None else masks[i])
        total = h if total is None else total + h
    return total


def pooled_channel_values(
    images: list[np.ndarray], masks: list[np.ndarray] | None, channel: int
) -> np.ndarray:
    """All (masked) values of one channel over ``images``, as float64."""
    parts = [
        (im[:, :, channel] if masks is None else im[:, :, channel][masks[i]]).ravel()
        for i, im in enumerate(images)
    ]
    return np.concatenate(parts).astype(np.float64, copy=False)


def probability_grid(n_quantiles: int) -> np.ndarray:
    """The probabilities at which sketches store quantiles: ``linspace(0, 1, n)``."""
    return np.linspace(0.0, 1.0, n_quantiles)


def quantiles_of(values: np.ndarray, n_quantiles: int) -> np.ndarray:
    """Midpoint (Hazen) quantiles of ``values`` at :func:`probability_grid`."""
    return np.quantile(values, probability_grid(n_quantiles), method="hazen")


def pooled_quantiles(
    images: list[np.ndarray], masks: list[np.ndarray] | None, n_quantiles: int
) -> np.ndarray:
    """Per-channel quantile sketches ``(C, n_quantiles)`` of the pooled pixels."""
    n_channels = images[0].shape[2]
    return np.stack(
        [
            quantiles_of(pooled_channel_values(images, masks, c), n_quantiles)
            for c in range(n_channels)
        ]
    )


def _cdf_limits(values: np.ndarray, probs: np.ndarray, x: np.ndarray) -> tuple:
    """Left and right limits of the CDF of a piecewise-linear quantile function.

    The distribution whose quantile function interpolates ``(probs, values)``
    linearly is a mixture of uniform pieces (and atoms where ``values``
    repeat); its CDF is evaluated exactly at the points ``x``.
    """

    def limit(side: str) -> np.ndarray:
        idx = np.searchsorted(values, x, side=side)
        hi = np.clip(idx, 1, len(values) - 1)
        lo = hi - 1
        span = values[hi] - values[lo]
        frac = np.divide(x - values[lo], span, out=np.zeros_like(x), where=span > 0)
        out = probs[lo] + np.clip(frac, 0.0, 1.0) * (probs[hi] - probs[lo])
        out[idx == 0] = 0.0
        out[idx == len(values)] = 1.0
        return out

    return limit("left"), limit("right")


def merge_quantiles(qa: np.ndarray, na: int, qb: np.ndarray, nb: int) -> np.ndarray:
    """Merge two quantile sketches ``(C, n)`` weighted by their pixel counts.

    The result is the grid resampling of the exact mixture of the two
    piecewise-linear distributions. Each sketch's CDF is within ``1 / (n - 1)``
    of its data's empirical CDF, so the merged quantile at probability ``p``
    lies between the pooled data's quantiles at ``p - 1/(n-1) - 1/N`` and
    ``p + 1/(n-1) + 1/N`` (``N`` pixels in all): the documented tolerance of
    ``partial_fit`` for floats.
    """
    n_q = qa.shape[1]
    probs = probability_grid(n_q)
    wa, wb = na / (na + nb), nb / (na + nb)
    out = np.empty_like(qa, dtype=np.float64)
    for c in range(qa.shape[0]):
        x = np.unique(np.concatenate([qa[c], qb[c]]))
        la, ra = _cdf_limits(qa[c], probs, x)
        lb, rb = _cdf_limits(qb[c], probs, x)
        # knots of the merged quantile function: (F(x-), x) and (F(x), x)
        p = np.empty(2 * len(x))
        p[0::2] = wa * la + wb * lb
        p[1::2] = wa * ra + wb * rb
        v = np.repeat(x, 2)
        p = np.maximum.accumulate(np.clip(p, 0.0, 1.0))
        out[c] = _interp_nondecreasing(probs, p, v)
    return out


def _interp_nondecreasing(q: np.ndarray, p: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``np.interp`` for knots ``p`` that may repeat (vertical steps)."""
    idx = np.searchsorted(p, q, side="right")
    hi = np.clip(idx, 1, len(p) - 1)
    lo = hi - 1
    span = p[hi] - p[lo]
    frac = np.divide(q - p[lo], span, out=np.ones_like(q), where=span > 0)
    out = v[lo] + np.clip(frac, 0.0, 1.0) * (v[hi] - v[lo])
    out[idx == 0] = v[0]
    out[idx >= len(p)] = v[-1]
    return out


def midpoint_cdf(hist: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Midpoint CDF of a histogram: ``(counts below + count / 2) / total`` per bin.

    Along the last axis, in float64 (into ``out`` if given). Computed as
    ``(counts below + counts up to and including) / (2 total)``: for integer
    counts both sums are exact, so the quotient is the correctly rounded one.
    """
    cum = np.cumsum(hist, axis=-1, dtype=np.float64)
    out = np.add(cum, cum, out=out)  # 2 * counts up to and including
    out -= hist  # counts below + counts up to and including
    out /= 2 * cum[..., -1:]
    return out


def _monotone(values: np.ndarray) -> np.ndarray:
    """``values`` made non-decreasing along the last axis (in place), where rounding broke it.

    ``np.interp`` can overshoot a knot by one ulp; the running maximum that
    repairs it is only run where a step down exists.
    """
    if (values[..., 1:] < values[..., :-1]).any():
        np.maximum.accumulate(values, axis=-1, out=values)
    return values


def histogram_quantile_points(hist: np.ndarray, values: np.ndarray) -> tuple:
    """Quantile-function knots of one level histogram (midpoint convention).

    Level ``v`` holding ``h`` of ``N`` pixels sits at probability
    ``(count below + h / 2) / N``; between occupied levels the quantile
    function is linear.
    """
    occupied = hist > 0
    return midpoint_cdf(hist[occupied].astype(np.float64)), values[occupied]


def quantile_knots(state: dict) -> dict[str, np.ndarray]:
    """The knots of every channel's reference quantile function, computed once per fit.

    For histogram states, ``"probs"`` and ``"values"`` ``(C, K)`` float64: the
    midpoint CDF and the value of each occupied level
    (:func:`histogram_quantile_points`), rows padded to the longest by
    repeating their last knot (which leaves ``np.interp`` unchanged). For
    sketches, ``"values"`` ``(C, n_quantiles)``: the quantiles, whose
    probabilities are the evenly spaced :func:`probability_grid`.
    """
    if "quantiles" in state:
        return {"values": np.array(state["quantiles"], dtype=np.float64)}
    if "levels" in state:
        values = np.asarray(state["levels"], dtype=np.float64)
    else:
        values = level_values(np.dtype(str(state["dtype"].item())))
    rows = [histogram_quantile_points(row, values) for row in state["histograms"]]
    width = max(len(p) for p, _ in rows)
    probs = np.empty((len(rows), width))
    knots = np.empty((len(rows), width))
    for c, (p, v) in enumerate(rows):
        probs[c, : len(p)], probs[c, len(p) :] = p, p[-1]
        knots[c, : len(v)], knots[c, len(v) :] = v, v[-1]
    return {"probs": probs, "values": knots}


def rescaled_knots(knots: dict, factor: float, limit: float) -> dict[str, np.ndarray]:
    """``knots`` whose values are multiplied by ``factor`` and clipped to ``[-limit, limit]``.

    For images on another intensity scale (``factor``) or of a float dtype
    narrower than the references' values (``limit``: its largest finite value).
    ``"scale"`` records the factor, for kernels that read level histograms.
    """
    with np.errstate(over="ignore"):
        values = knots["values"] * factor
    np.clip(values, -limit, limit, out=values)
    return {**knots, "values": values, "scale": np.float64(factor)}


def quantile_points(knots: dict, channel: int) -> tuple[np.ndarray, np.ndarray]:
    """Knots ``(p, v)`` of the reference quantile function of one channel (padding removed)."""
    v = knots["values"][channel]
    if "probs" not in knots:
        return probability_grid(len(v)), v
    p = knots["probs"][channel]
    end = int(np.searchsorted(p, p[-1])) + 1  # the padding repeats the last knot
    return p[:end], v[:end]


def _interp(q: np.ndarray, p: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``np.interp(q, p, v)``, without overflow for knots near float64's limits.

    ``np.interp`` forms slopes ``dv / dp``, which overflow when the knots span
    more than ``finfo.max * dp`` (sketches of values near +-1e308). Such knots
    are interpolated fraction first, on halved values (halving is exact), and
    doubled back.
    """
    with np.errstate(over="ignore"):
        fits = np.isfinite((v[-1] - v[0]) * (len(v) - 1))
    if fits or len(v) < 2:
        return np.interp(q, p, v)
    j = np.clip(np.searchsorted(p, q, side="right") - 1, 0, len(p) - 2)
    dp = p[j + 1] - p[j]
    frac = np.divide(q - p[j], dp, out=np.zeros(np.shape(q)), where=dp > 0)
    np.clip(frac, 0.0, 1.0, out=frac)
    half = v * 0.5
    return (half[j] + (half[j + 1] - half[j]) * frac) * 2.0


def quantile_rows(knots: dict, probs: np.ndarray) -> np.ndarray:
    """:func:`quantile_values` of every channel ``c`` at ``probs[c]``, at once.

    ``probs`` is ``(C, n)`` float64 with non-decreasing rows (midpoint CDFs,
    as for lookup tables over all levels); one running maximum over the
    rows keeps the result monotone to the ulp, as :func:`quantile_values` does.
    """
    out = np.empty(probs.shape)
    for c, row in enumerate(probs):
        out[c] = _interp(row, *quantile_points(knots, c))
    return _monotone(out)


def quantile_values(
    knots: dict, channel: int, probs: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """The reference quantile function of one channel at probabilities ``probs`` (float64).

    ``np.interp(probs, *quantile_points(knots, channel))`` (without overflow
    near float64's limits), non-decreasing in ``probs`` to the last ulp
    (``np.interp`` alone can overshoot a knot by one). ``out`` (a float array
    of the shape of ``probs``, not ``probs`` itself) receives the result,
    rounded to its dtype, if given.
    """
    probs = np.asarray(probs, dtype=np.float64)
    p, v = quantile_points(knots, channel)
    result = _interp(probs, p, v)
    if probs.ndim == 1 and bool((probs[1:] >= probs[:-1]).all()):  # every internal caller
        _monotone(result)
    else:  # cap each value by the right end of its segment
        ends = np.minimum(np.searchsorted(p, probs, side="right"), len(v) - 1)
        np.minimum(result, np.take(v, ends), out=result)
    if out is None:
        return result
    out[...] = result
    return out


def midpoint_quantiles(
    counts: np.ndarray, knots: dict, channel: int, out: np.ndarray | None = None
) -> np.ndarray:
    """``quantile_values(knots, channel, midpoint_cdf(counts))``: one histogram row's table."""
    return quantile_values(knots, channel, midpoint_cdf(counts), out=out)


def learn(
    images: list[np.ndarray], masks: list[np.ndarray] | None, n_quantiles: int
) -> dict[str, np.ndarray]:
    """The per-channel reference state of ``images`` (see the module docstring).

    Float images that all hold 8-bit levels of one conversion (``k / 255``...,
    :func:`byte_level_table`) keep an exact histogram of their levels, with
    the levels' values in ``"levels"``.
    """
    dtype = images[0].dtype
    if has_exact_levels(dtype):
        return {"histograms": pooled_histograms(images, masks), "dtype": np.array(dtype.name)}
    table = byte_level_table(images, masks)
    if table is not None:
        scale = 255.0 if table[-1] < 2 else 1.0
        as_levels = [np.rint(im * scale).astype(np.uint8) for im in images]
        return {
            "histograms": pooled_histograms(as_levels, masks),
            "dtype": np.array(dtype.name),
            "levels": table,
        }
    return {
        "quantiles": pooled_quantiles(images, masks, n_quantiles),
        "dtype": np.array(dtype.name),
    }


def _as_sketch(state: dict, n_quantiles: int) -> np.ndarray:
    """The quantiles of a state on the probability grid (a histogram's, resampled)."""
    if "quantiles" in state:
        return state["quantiles"]
    knots = quantile_knots(state)
    grid = probability_grid(n_quantiles)
    return np.stack(
        [np.interp(grid, *quantile_points(knots, c)) for c in range(len(knots["values"]))]
    )


def merge(a: dict, na: int, b: dict, nb: int, n_quantiles: int = 1024) -> dict[str, np.ndarray]:
    """Merge two per-channel states learned on ``na`` and ``nb`` pixels.

    Histograms over the same levels add up exactly. A histogram of float
    levels meeting a sketch, or another conversion's levels, becomes a sketch
    of ``n_quantiles`` (the sketch's own size when there is one) first.
    """
    if "histograms" in a and "histograms" in b:
        same = ("levels" in a) == ("levels" in b) and (
            "levels" not in a or np.array_equal(a["levels"], b["levels"])
        )
        if same:
            merged = {"histograms": a["histograms"] + b["histograms"], "dtype": a["dtype"]}
            if "levels" in a:
                merged["levels"] = a["levels"]
            return merged
    size = next((s["quantiles"].shape[1] for s in (a, b) if "quantiles" in s), n_quantiles)
    a = {"quantiles": _as_sketch(a, size), "dtype": a["dtype"]}
    qb = _as_sketch(b, size)
    if qb.shape[1] != a["quantiles"].shape[1]:  # resample onto a's grid
        probs = probability_grid(a["quantiles"].shape[1])
        qb = np.stack([np.interp(probs, probability_grid(qb.shape[1]), row) for row in qb])
    return {"quantiles": merge_quantiles(a["quantiles"], na, qb, nb), "dtype": a["dtype"]}


# ----------------------------------------------------------- validation of stored states
def dtype_from_name(value: object, name: str) -> np.dtype:
    """The supported image dtype a stored name (str or 0-d str array) stands for."""
    value = value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a dtype name; got {value!r}")
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise ValueError(f"{name} must be a dtype name; got {value!r}") from None
    if dtype not in _images.SUPPORTED_DTYPES and dtype not in _images.WIDE_INT_DTYPES:
        raise ValueError(f"{name} must be a supported image dtype; got {value!r}")
    return dtype


def check_quantile_rows(arr: object, name: str, rows: int | None) -> None:
    """Raise ``ValueError`` unless ``arr`` is ``(rows, >= 2)`` finite non-decreasing floats."""
    if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f" or arr.ndim != 2:
        got = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise ValueError(f"{name} must be a 2-D float array; got {got}")
    if arr.shape[1] < 2 or arr.shape[0] < 1 or (rows is not None and arr.shape[0] != rows):
        expected = "(rows, >= 2)" if rows is None else f"({rows}, >= 2)"
        raise ValueError(f"{name} must have shape {expected}; got {arr.shape}")
    if not np.isfinite(arr).all() or (np.diff(arr, axis=1) < 0).any():
        raise ValueError(f"{name} must be finite and non-decreasing along each row")


def check_state(state: object, n_channels: int | None) -> int | None:
    """Validate a stored per-channel state; return the pixels it counts (histograms).

    Raises ``ValueError`` naming the entry at fault (used when loading models).
    """
    keys = set(state) if isinstance(state, dict) else None
    kinds = ({"dtype", "histograms"}, {"dtype", "quantiles"}, {"dtype", "histograms", "levels"})
    if keys not in kinds:
        got = sorted(keys) if keys is not None else type(state).__name__
        raise ValueError(
            "a per-channel state holds 'dtype' and 'histograms' (with 'levels' for float "
            f"levels) or 'quantiles'; got {got}"
        )
    dtype = dtype_from_name(state["dtype"], "state['dtype']")
    if "quantiles" in state:
        check_quantile_rows(state["quantiles"], "state['quantiles']", n_channels)
        return None
    arr = state["histograms"]
    if "levels" in state:
        levels = state["levels"]
        if (
            dtype.kind != "f"
            or not isinstance(levels, np.ndarray)
            or levels.shape != (256,)
            or levels.dtype.kind != "f"
            or not np.isfinite(levels).all()
            or (np.diff(levels) <= 0).any()
        ):
            raise ValueError(
                "state['levels'] must be 256 increasing finite float values, for a float dtype"
            )
        dtype = np.dtype(np.uint8)  # (counted like 8-bit levels)
    elif not has_exact_levels(dtype):
        raise ValueError(f"state holds histograms for dtype {dtype}, which has none")
    n_levels, _ = level_count_and_offset(dtype)
    rows = "channels" if n_channels is None else n_channels
    if (
        not isinstance(arr, np.ndarray)
        or arr.dtype.kind not in "iu"
        or arr.ndim != 2
        or arr.shape[1] != n_levels
        or (n_channels is not None and arr.shape[0] != n_channels)
    ):
        got = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise ValueError(
            f"state['histograms'] must be integer counts of shape ({rows}, {n_levels}) "
            f"for dtype {dtype}; got {got}"
        )
    if (arr < 0).any():
        raise ValueError("state['histograms'] must not hold negative counts")
    sums = arr.sum(axis=1)
    if len(sums) < 1 or sums[0] < 1 or (sums != sums[0]).any():
        raise ValueError(
            "state['histograms'] must count the same positive number of pixels in every "
            f"channel; got {sums.tolist()}"
        )
    return int(sums[0])
