"""The learned reference state, per channel, as plain arrays.

Two exact representations, chosen by the reference dtype, both mergeable
exactly (the state of a data set does not depend on how it was split):

* **exact histograms** for 8- and 16-bit integer dtypes (uint8, int8, uint16,
  int16): one count per representable level, ``(C, 256)`` or ``(C, 65536)``
  int64. Pooling and merging are exact (counts add up), and the cost does not
  depend on the values present (a uint16 image holding 65535 is as cheap as
  one holding 10).
* **float bins** for floats and wide integers: per channel, the sorted order
  keys of the distinct values (:func:`order_keys`: the bit patterns, in value
  order) and their counts, and the exact extremes. A float32 channel is
  learned by one sort of its 32-bit keys (in groups of :data:`LEARN_GROUP`
  values, merged). Past :data:`MAX_BINS` distinct values in a channel the
  keys drop their last bits, as many as needed (:func:`fit_resolution`):
  values then count in bins of a fixed grid of ``2**bits`` bins per power of
  two, and the quantile function stays within one bin of the pooled data's.
  Float references of 8-bit levels (``k / 255``) keep a histogram of their
  levels instead (:func:`byte_level_table`). Quantile sketches
  (:func:`merge_quantiles`) remain for lab's projections and for models
  saved by earlier versions.

All expose the same *quantile function*: :func:`quantile_knots`, computed
once per fit and kept with the fitted estimator, holds ``(p, v)`` knots such
that ``np.interp(q, p, v)`` is the reference value at probability ``q``
(:func:`quantile_points`); the lookups (:func:`quantile_values`,
:func:`quantile_rows`, :func:`midpoint_quantiles`) read those knots.
Everything here is a pure function of arrays.
"""

from __future__ import annotations

import math
import sys

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


#: 16-bit planes of up to this many pixels are counted as pairs of bytes (:func:`_calc_hist`)
BYTE_PAIR_PIXELS = 2**19
#: the byte-pair histogram's channels: the high byte, then the low byte, of a native uint16
_HIGH_LOW = [1, 0] if sys.byteorder == "little" else [0, 1]


def _calc_hist(image: np.ndarray, channel: int, mask: np.ndarray | None, n_levels: int, out=None):
    """``cv2.calcHist`` of one channel, as float32 counts ``(n_levels,)`` (exact, see _bands).

    A fine histogram (over 4,096 levels) of a small contiguous 16-bit plane
    is counted as the 2-D histogram of its values' high and low bytes, on
    OpenCV's 8-bit path: the same counts, without the fixed cost of a
    65,536-bin 16-bit histogram (which dominates below about half a
    million pixels; above, the 16-bit path is the faster).
    """
    m = None if mask is None else mask.view(np.uint8)
    if (
        image.dtype == np.uint16
        and image.ndim == 2
        and n_levels > 4096
        and image.size <= BYTE_PAIR_PIXELS
        and image.flags.c_contiguous
    ):
        pairs = image.view(np.uint8).reshape(*image.shape, 2)
        grid = None if out is None or n_levels != 65536 else out.reshape(256, 256)
        hist = cv2.calcHist([pairs], _HIGH_LOW, m, [256, 256], [0, 256, 0, 256], hist=grid)
        counts = hist.reshape(-1)[:n_levels]
        if out is not None and grid is None:
            out[:, 0] = counts
            return out.reshape(-1)
        return counts
    return cv2.calcHist([image], [channel], m, [n_levels], [0, n_levels], hist=out).reshape(-1)


def level_counts(
    plane: np.ndarray, mask: np.ndarray | None, n_levels: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Histogram ``(n_levels,)`` of one 2-D uint8/uint16/uint32 plane of level indices.

    ``cv2.calcHist`` (which releases the GIL): float32 counts, exact, for
    planes of at most :data:`EXACT_COUNTS` pixels (into ``out``, an optional
    float32 ``(n_levels, 1)`` buffer); larger planes are counted by bands of
    rows and summed in int64. uint32 planes (beyond OpenCV's 16 bits) are
    counted by ``np.bincount``, in int64.
    """
    if plane.dtype == np.uint32:
        return np.bincount((plane if mask is None else plane[mask]).ravel(), minlength=n_levels)
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


#: uint8 images of at least this many pixels are counted plane by plane given a work buffer
PLANE_PIXELS = 2**17


def uint8_histograms(
    image: np.ndarray, mask: np.ndarray | None, work: np.ndarray | None = None
) -> np.ndarray:
    """Per-channel histograms ``(C, 256)`` of a uint8 ``(H, W, C)`` image.

    ``cv2.calcHist`` on the interleaved image (no channel copies), each
    channel straight into its row: float32 counts for images of at most
    :data:`EXACT_COUNTS` pixels, int64 sums over bands of rows for larger ones.
    Given ``work`` (a C-contiguous uint8 buffer of the image's size apart from
    the image, which is overwritten, such as the output that the matched
    pixels will fill) a multi-channel image of :data:`PLANE_PIXELS` pixels or
    more is split into it as contiguous planes first: OpenCV counts an
    interleaved channel on one thread and a contiguous plane on all of its
    threads.
    """
    if image.shape[2] > 4:  # (OpenCV takes at most 4 interleaved channels here)
        return plane_histograms(channel_planes(image), mask, 256)
    bands = _bands(image)
    if len(bands) == 1:
        hist = np.empty((image.shape[2], 256), dtype=np.float32)
        n_channels, planar = image.shape[2], None
        if (
            work is not None
            and n_channels > 1
            and image.shape[0] * image.shape[1] >= PLANE_PIXELS
            and work.dtype == np.uint8
            and work.size == image.size
            and work.flags.c_contiguous
            and not np.may_share_memory(work, image)
        ):
            planar = list(work.reshape(n_channels, *image.shape[:2]))
            cv2.split(image, planar)
        for c, row in enumerate(hist):
            if planar is None:
                _calc_hist(image, c, mask, 256, row.reshape(256, 1))
            else:
                _calc_hist(planar[c], 0, mask, 256, row.reshape(256, 1))
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

    Interleaved uint8 images through :func:`uint8_histograms`; other dtypes,
    and channels-first views (:func:`._images.planes_of`, read without a copy),
    through contiguous level planes (:func:`level_counts`).
    """
    if image.dtype == np.uint8 and _images.planes_of(image) is None:
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


# ------------------------------------------------------- float bins: exact, mergeable counts
#: the most bins a float state keeps per channel; past it, the resolution is halved until
#: every channel fits (:func:`fit_resolution`)
MAX_BINS = 2**18
#: mantissa bits of float32 and float64 values: a state at this resolution counts distinct values
VALUE_BITS = {np.dtype(np.float32): 23, np.dtype(np.float64): 52}
#: the resolution from which a bin is read as one value (its point) rather than a range
POINT_BITS = 23
#: values of a channel learned at once (more are learned in groups and merged): the first
#: group is smaller, so that continuous data reaches its coarse bins early
LEARN_GROUP = 2**22
FIRST_GROUP = 2**19


def order_keys(values: np.ndarray) -> np.ndarray:
    """Signed integers in the order of the float32/float64 ``values``: their bit patterns.

    Negative values get their magnitude bits flipped, so that integer order
    is value order (``-0.0`` sorts just below ``0.0``, as ``-1``). The map is its own
    inverse: ``order_keys(keys).view(float)`` gives the values back.
    """
    ints = values.view(np.int32 if values.dtype.itemsize == 4 else np.int64)
    flip = ints >> (8 * ints.dtype.itemsize - 1)  # -1 for negative values, 0 otherwise
    flip &= np.iinfo(ints.dtype).max
    flip ^= ints
    return flip


def key_values(keys: np.ndarray, bits: int) -> np.ndarray:
    """The lowest float64 value of each bin ``keys`` at ``bits`` mantissa bits.

    A key is the float64 order key (:func:`order_keys`) shifted right by
    ``52 - bits``, so a bin holds the values whose first ``bits`` mantissa
    bits, exponent and sign agree: a width of ``2**-bits`` times its values'
    power of two.
    """
    with np.errstate(over="ignore"):  # (the bin above the largest finite one starts at inf)
        return order_keys(keys.astype(np.int64) << (52 - bits)).view(np.float64)


def point_values(keys: np.ndarray, bits: int) -> np.ndarray:
    """The value nearest zero of each bin: the value itself when a bin holds one value."""
    ints = order_keys(keys.astype(np.int64) << (52 - bits))
    ints &= ~np.int64((1 << (52 - bits)) - 1)
    return ints.view(np.float64)


def _runs(sorted_keys: np.ndarray) -> np.ndarray:
    """Start index of every run of equal values in a sorted 1-D array."""
    starts = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1])
    starts += 1
    return np.concatenate(([0], starts))


def coarsen(keys: np.ndarray, counts: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted bins ``(keys, counts)`` at ``shift`` fewer bits: neighbours merge, counts add."""
    if shift == 0:
        return keys, counts
    keys = keys >> shift
    starts = _runs(keys)
    return keys[starts], np.add.reduceat(counts, starts)


def _bin_counts_by_shift(keys: np.ndarray) -> np.ndarray:
    """``n[d]``: how many bins sorted distinct ``keys`` make once shifted right by ``d``.

    Two neighbours share a bin at shift ``d`` exactly when their XOR has at
    most ``d`` bits, so one histogram of those bit lengths gives every shift.
    """
    xor = keys[1:] ^ keys[:-1]
    length = np.frexp(xor.astype(np.float64))[1]  # bit length (exact below 2**53)
    length[xor < 0] = 64  # (signs differ)
    apart = np.bincount(length, minlength=65)
    return 1 + np.cumsum(apart[::-1])[::-1][1:]  # n[d] = 1 + pairs longer than d bits


def fit_resolution(rows: list[tuple[np.ndarray, np.ndarray]], bits: int) -> tuple[list, int]:
    """``rows`` at the finest resolution ``<= bits`` where every channel has ``<= MAX_BINS`` bins.

    The number of bins can only grow with more data, so the resolution this
    picks for pooled data is the one any merge order reaches: the state of
    a data set does not depend on how it was split. At 0 bits (sign and
    exponent only) up to 4096 bins remain, whatever ``MAX_BINS``.
    """
    if max(len(k) for k, _ in rows) <= MAX_BINS:
        return rows, bits
    counts = np.max([_bin_counts_by_shift(k) for k, _ in rows], axis=0)
    shift = min(int(np.argmax(counts <= MAX_BINS)) if (counts <= MAX_BINS).any() else 64, bits)
    return [coarsen(k, c, shift) for k, c in rows], bits - shift


def _value_bins(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 keys and counts of the distinct values of a 1-D float array, and its extremes.

    ``values`` (float32 or float64, contiguous) is sorted in place.
    """
    values.sort()
    starts = _runs(values)  # (-0.0 == 0.0: both count as 0.0)
    counts = np.diff(np.append(starts, len(values)))
    distinct = values[starts].astype(np.float64)
    distinct[distinct == 0] = 0.0  # (a run of zeros may start with -0.0)
    keys = order_keys(distinct) >> (52 - VALUE_BITS[values.dtype])
    return keys, counts.astype(np.int64), distinct[[0, -1]]


#: widest key range counted with one ``np.bincount`` rather than a sort
_COUNTED_RANGE = 2**23
#: widest key range a channel's counts are summed over from group to group (:class:`_Tally`)
_TALLY_RANGE = 2**21


def _extremes(values: np.ndarray) -> np.ndarray:
    """``(min, max)`` float64 of a 1-D float array, ``-0.0`` read as ``0.0``: one pass."""
    if values.dtype == np.float32 and len(values) < 2**31:
        lo, hi, _, _ = cv2.minMaxLoc(values.reshape(1, -1))
        return np.array([lo, hi], dtype=np.float64) + 0.0
    return np.array([values.min(), values.max()], dtype=np.float64) + 0.0


def _coarse_span(
    values: np.ndarray, bits: int
) -> tuple[np.ndarray, np.ndarray, bool, tuple[int, int]]:
    """How a 1-D float array is binned at ``bits`` (coarser than its values), in one pass.

    Returns ``(values, extremes, native, (low, high))``: the values to key
    (float64 for dtypes other than float32, and for float32 values with
    subnormals), their ``(min, max)``, whether the keys are float32 ones
    (``native``: the same bins as float64 keys at ``bits``, numbered on
    float32's own bit patterns, see :func:`_float64_keys`), and the keys of
    the smallest and largest value.
    """
    native = values.dtype == np.float32
    if not native:
        values = values.astype(np.float64, copy=False)
    extremes = _extremes(values)
    if native and _has_subnormals(values, extremes):
        values, native = values.astype(np.float64), False
    shift = (23 if native else 52) - bits
    low, high = (int(k) >> shift for k in order_keys(extremes.astype(values.dtype)))
    return values, extremes, native, (low, high)


def _coarse_keys(
    values: np.ndarray,
    extremes: np.ndarray,
    native: bool,
    bits: int,
    work: np.ndarray | None,
    base: int = 0,
) -> np.ndarray:
    """The int64 bin keys at ``bits``, less ``base``, of values from :func:`_coarse_span`.

    Unsorted, in ``work`` (an optional int64 buffer of at least ``values``'
    size) if given. With a ``base`` (the low key of a counted range), the
    values are work space and may be overwritten: non-negative values are
    offset on their own bit patterns, which is the same pass as the offset
    of the keys but on half the bytes for float32.
    """
    shift = (23 if native else 52) - bits
    out = None if work is None else work[: len(values)]
    if extremes[0] >= 0:  # the bit patterns are the order keys
        patterns = values.view(np.int32 if native else np.int64)
        if base:  # ((p - base * 2**shift) >> shift == (p >> shift) - base, and fits p's type
            patterns -= patterns.dtype.type(base << shift)
        return np.right_shift(patterns, shift, out=out, dtype=np.int64)
    keys = np.right_shift(order_keys(values), shift, out=out, dtype=np.int64)
    if base:
        keys -= base
    return keys


def _float64_keys(keys: np.ndarray, bits: int, native: bool) -> np.ndarray:
    """:func:`_coarse_keys`' keys (sorted bins) as the float64 keys of the same bins."""
    if native:
        edges = order_keys(keys.astype(np.int32) << (23 - bits)).view(np.float32)
        keys = order_keys(edges.astype(np.float64)) >> (52 - bits)
    return keys.astype(np.int64, copy=False)


def _coarse_bins(
    values: np.ndarray, bits: int, work: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_value_bins` at ``bits`` (coarser than the values): counted without a sort.

    float32 values are binned on their own 32-bit keys (same bins as float64
    ones, but for subnormals, which go through float64); bins spanning more
    than :data:`_COUNTED_RANGE` keys are sorted instead of counted. ``work``
    is an optional int64 buffer of at least ``values``' size for the keys;
    ``values`` are work space too (:func:`_coarse_keys`).
    """
    values, extremes, native, (low, high) = _coarse_span(values, bits)
    if high - low >= _COUNTED_RANGE:
        keys = _coarse_keys(values, extremes, native, bits, work)
        keys.sort()
        starts = _runs(keys)
        found, counts = keys[starts], np.diff(np.append(starts, len(keys)))
    else:
        counts = np.bincount(_coarse_keys(values, extremes, native, bits, work, low))
        found = np.flatnonzero(counts != 0)
        counts = counts[found]
        found += low
    return _float64_keys(found, bits, native), counts.astype(np.int64), extremes


class _Tally:
    """One channel's bin counts at a fixed resolution, summed densely from group to group.

    Once a fit has coarsened its bins, each later group of values is counted
    by one ``np.bincount`` of its keys (:func:`_coarse_keys`) into an int64
    array over the key range seen so far (at most :data:`_TALLY_RANGE` keys),
    and the bins are merged into the state once, when the tally is emptied
    (:meth:`rows`), instead of after every group. Counts add exactly, so the
    state is the one group-by-group merging gives.
    """

    def __init__(self, native: bool) -> None:
        self.native, self.low = native, 0
        self.counts = np.zeros(0, dtype=np.int64)
        self.extremes = np.array([np.inf, -np.inf])

    def _union(self, span: tuple[int, int]) -> tuple[int, int]:
        """The key range of the counts so far and ``span`` together."""
        if not len(self.counts):
            return span
        return min(span[0], self.low), max(span[1], self.low + len(self.counts) - 1)

    def fits(self, native: bool, span: tuple[int, int]) -> bool:
        """Whether keys of this kind and key range ``span`` can be counted here."""
        low, high = self._union(span)
        return native == self.native and high - low < _TALLY_RANGE

    def add(self, keys: np.ndarray, span: tuple[int, int], extremes: np.ndarray) -> None:
        """Count ``keys`` of key range ``span`` (which :meth:`fits`), given less ``span[0]``."""
        low, high = self._union(span)
        if low != self.low or high - low + 1 != len(self.counts):  # widen, keeping the counts
            wider = np.zeros(high - low + 1, dtype=np.int64)
            wider[self.low - low : self.low - low + len(self.counts)] = self.counts
            self.low, self.counts = low, wider
        start = span[0] - self.low
        counted = np.bincount(keys)
        self.counts[start : start + len(counted)] += counted
        self.extremes = np.array(
            [min(self.extremes[0], extremes[0]), max(self.extremes[1], extremes[1])]
        )

    def occupied(self) -> int:
        """Bins holding values."""
        return int(np.count_nonzero(self.counts))

    def rows(self, bits: int) -> tuple[np.ndarray, np.ndarray]:
        """The sorted float64 bins ``(keys, counts)`` counted so far, at ``bits``."""
        found = np.flatnonzero(self.counts != 0)
        counts = self.counts[found]
        return _float64_keys(found + self.low, bits, self.native), counts


def _has_subnormals(values: np.ndarray, extremes: np.ndarray) -> bool:
    """True when float32 ``values`` (of ``extremes`` ``(min, max)``) hold subnormal values."""
    tiny = float(np.finfo(np.float32).tiny)
    if extremes[0] >= tiny or extremes[1] <= -tiny:
        return False  # all values on one side of the subnormals
    small = np.abs(values) < tiny
    return bool(np.count_nonzero(small) > np.count_nonzero(values == 0))


def _channel_groups(images: list[np.ndarray], masks: list[np.ndarray] | None):
    """Yield contiguous ``(C, n)`` arrays of the (masked) values of images, by LEARN_GROUP.

    Small images are grouped and large ones cut, so that a group holds the
    first :data:`FIRST_GROUP` values, then :data:`LEARN_GROUP` (the last one
    fewer): the work memory of learning is a group's whatever the images'
    sizes (the state does not depend on how the values are grouped). The
    arrays are views of one work buffer, overwritten by the next group (each
    is consumed, and may be sorted in place, before the next is made).
    """
    group: list[np.ndarray] = []
    size = 0
    buffer = None

    def planes() -> np.ndarray:
        nonlocal buffer
        n_channels = group[0].shape[1]
        if buffer is None or buffer.shape[1] < size or buffer.dtype != group[0].dtype:
            buffer = np.empty((n_channels, size), dtype=group[0].dtype)
        out = buffer[:, :size]
        start = 0
        for pixels in group:  # (OpenCV's channel split beats numpy's strided copy)
            n = len(pixels)
            _images.split_into(pixels.reshape(n, 1, n_channels), out[:, start : start + n, None])
            start += n
        return out

    limit = min(FIRST_GROUP, LEARN_GROUP)
    for i, image in enumerate(images):
        pixels = image.reshape(-1, image.shape[2]) if masks is None else image[masks[i]]
        start = 0
        while start < len(pixels):
            part = pixels[start : start + limit - size]
            group.append(part)
            size += len(part)
            start += len(part)
            if size >= limit:
                yield planes()
                group, size, limit = [], 0, LEARN_GROUP
    if group:
        yield planes()


def _all_fit(tallies: list[_Tally], spans: list[tuple]) -> bool:
    """Whether every channel's :func:`_coarse_span` fits its tally."""
    return all(t.fits(native, span) for t, (_, _, native, span) in zip(tallies, spans))


def learn_bins(images: list[np.ndarray], masks: list[np.ndarray] | None) -> dict:
    """The float state of ``images``: every distinct value and its count, per channel.

    Floats are counted as they are (float32 in 23-bit bins, float64 and wide
    integers in 52-bit ones: one value a bin), a group of
    :data:`LEARN_GROUP` values at a time, by one sort of the values; past
    :data:`MAX_BINS` distinct values in a channel the bins are coarsened
    (:func:`fit_resolution`). Once coarsened, a group's values go straight
    to bins of the resolution reached so far, counted without a sort into
    one tally per channel (:class:`_Tally`), which is merged into the state
    when it holds more than :data:`MAX_BINS` bins, when a group does not fit
    it, and at the end (more data can only coarsen further, so this is exact).
    """
    dtype = images[0].dtype
    work = dtype if dtype in VALUE_BITS else np.dtype(np.float64)
    full = VALUE_BITS[work]
    state, work_keys, tallies = None, None, None

    def merged(state: dict, rows: list, bits: int, extremes: np.ndarray) -> dict:
        rows, bits = fit_resolution(rows, bits)
        part = _bins_state(rows, bits, dtype, extremes)
        return part if state is None else merge_bins(state, part)

    def emptied(state: dict, tallies: list[_Tally]) -> dict:
        bits = int(state["bits"])
        extremes = np.array([t.extremes for t in tallies])
        return merged(state, [t.rows(bits) for t in tallies], bits, extremes)

    for values in _channel_groups(images, masks):
        bits = full if state is None else int(state["bits"])
        if bits == full:
            found = [_value_bins(row.astype(work, copy=dtype != work)) for row in values]
            extremes = np.array([ends for _, _, ends in found])
            state = merged(state, [(k, c) for k, c, _ in found], bits, extremes)
            continue
        spans = [_coarse_span(row, bits) for row in values]
        if tallies is not None and not _all_fit(tallies, spans):
            state, tallies = emptied(state, tallies), None
            if int(state["bits"]) != bits:  # (coarsened: the keys' ranges change)
                bits = int(state["bits"])
                spans = [_coarse_span(row, bits) for row in values]
        if work_keys is None or len(work_keys) < values.shape[1]:
            work_keys = np.empty(values.shape[1], dtype=np.int64)
        fresh = [_Tally(native) for _, _, native, _ in spans] if tallies is None else tallies
        if _all_fit(fresh, spans):
            tallies = fresh
            for tally, (row, extremes, native, span) in zip(tallies, spans):
                keys = _coarse_keys(row, extremes, native, bits, work_keys, span[0])
                tally.add(keys, span, extremes)
            if max(t.occupied() for t in tallies) > MAX_BINS:
                state, tallies = emptied(state, tallies), None
        else:  # a key range too wide for a tally: this group is merged on its own
            found = [_coarse_bins(row, bits, work_keys) for row in values]
            extremes = np.array([ends for _, _, ends in found])
            state = merged(state, [(k, c) for k, c, _ in found], bits, extremes)
    if tallies is not None:
        state = emptied(state, tallies)
    return state


def _bins_state(
    rows: list[tuple[np.ndarray, np.ndarray]], bits: int, dtype: np.dtype, extremes: np.ndarray
) -> dict:
    """A float state from per-channel sorted ``(keys, counts)`` at ``bits`` and ``(min, max)``."""
    lengths = [len(k) for k, _ in rows]
    return {
        "dtype": np.array(np.dtype(dtype).name),
        "bits": np.array(bits, dtype=np.int64),
        "extremes": np.asarray(extremes, dtype=np.float64).reshape(len(rows), 2),
        "keys": np.concatenate([k for k, _ in rows]).astype(np.int64, copy=False),
        "counts": np.concatenate([c for _, c in rows]).astype(np.int64, copy=False),
        "offsets": np.concatenate(([0], np.cumsum(lengths))).astype(np.int64),
    }


def bin_rows(state: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-channel ``(keys, counts)`` of a float state."""
    offsets = state["offsets"]
    return [
        (state["keys"][offsets[c] : offsets[c + 1]], state["counts"][offsets[c] : offsets[c + 1]])
        for c in range(len(offsets) - 1)
    ]


def as_bins(state: dict) -> dict:
    """``state`` as a float-bins state (histograms of levels become exact 52-bit bins)."""
    if "keys" in state:
        return state
    values = (
        np.asarray(state["levels"], dtype=np.float64)
        if "levels" in state
        else level_values(np.dtype(str(state["dtype"].item())))
    )
    rows, extremes = [], []
    for hist in state["histograms"]:
        occupied = np.flatnonzero(hist != 0)
        rows.append((order_keys(values[occupied].copy()), hist[occupied].astype(np.int64)))
        extremes.append(values[occupied[[0, -1]]])
    rows, bits = fit_resolution(rows, 52)
    return _bins_state(rows, bits, np.dtype(str(state["dtype"].item())), np.array(extremes))


def merge_bins(a: dict, b: dict) -> dict:
    """Merge two float states exactly: counts of equal bins add, at the coarser resolution.

    The result is the state of the pooled values (:func:`fit_resolution`),
    whatever the order and grouping of the merges.
    """
    bits = min(int(a["bits"]), int(b["bits"]))
    rows = []
    for (ka, ca), (kb, cb) in zip(bin_rows(a), bin_rows(b)):
        ka, ca = coarsen(ka, ca, int(a["bits"]) - bits)
        kb, cb = coarsen(kb, cb, int(b["bits"]) - bits)
        keys = np.concatenate([ka, kb])
        order = np.argsort(keys, kind="stable")  # (two sorted runs: a linear merge)
        keys = keys[order]
        starts = _runs(keys)
        rows.append((keys[starts], np.add.reduceat(np.concatenate([ca, cb])[order], starts)))
    rows, bits = fit_resolution(rows, bits)
    extremes = np.stack(
        [
            np.minimum(a["extremes"][:, 0], b["extremes"][:, 0]),
            np.maximum(a["extremes"][:, 1], b["extremes"][:, 1]),
        ],
        axis=1,
    )
    return _bins_state(rows, bits, np.dtype(str(a["dtype"].item())), extremes)


def bin_quantile_points(
    keys: np.ndarray, counts: np.ndarray, bits: int, extremes: np.ndarray
) -> tuple:
    """Quantile-function knots ``(p, v)`` of one channel's bins.

    At :data:`POINT_BITS` bits or more a bin is one value (float32 values
    exactly, float64 ones within ``2**-23`` of their magnitude), placed like a
    histogram level at its midpoint CDF (:func:`histogram_quantile_points`);
    between values the quantile function is linear. Coarser bins spread
    their count evenly over their range: knots at every bin edge, at the
    counts below it. Either way the quantile function starts and ends at
    the channel's exact ``extremes`` ``(min, max)``.
    """
    if bits >= POINT_BITS:
        p, v = histogram_quantile_points(counts, point_values(keys, bits))
        v[0], v[-1] = extremes
        return p, v
    lo = key_values(keys, bits)
    hi = key_values(keys + 1, bits)
    lo[0], hi[-1] = extremes
    cum = running_counts(counts)
    total = cum[-1]
    p = np.stack([(cum - counts) / total, cum / total], axis=1).ravel()
    v = np.stack([lo, hi], axis=1).ravel()
    keep = np.ones(len(p), dtype=bool)  # drop the second of two equal knots
    keep[1:] = (p[1:] != p[:-1]) | (v[1:] != v[:-1])
    return p[keep], v[keep]


def probability_grid(n_quantiles: int) -> np.ndarray:
    """The probabilities at which sketches store quantiles: ``linspace(0, 1, n)``."""
    return np.linspace(0.0, 1.0, n_quantiles)


def quantiles_of(values: np.ndarray, n_quantiles: int) -> np.ndarray:
    """Midpoint (Hazen) quantiles of ``values`` at :func:`probability_grid`."""
    return np.quantile(values, probability_grid(n_quantiles), method="hazen")


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


#: float counts with rows of at least this length are checked for integers (:func:`running_counts`)
_CHECKED_ROWS = 4096


def running_counts(counts: np.ndarray, fractional: bool = False) -> np.ndarray:
    """``np.cumsum(counts, axis=-1)`` in float64.

    Counts holding integers (of an integer dtype, or integral floats below
    ``2**53`` such as ``cv2.calcHist``'s float32 counts) are summed in int64,
    which numpy does many times faster than a float64 running sum, with the
    same result: every partial sum of such counts is exact either way.
    Weights with fractions, and float rows shorter than :data:`_CHECKED_ROWS`
    (where the integrality check costs more than it saves), are summed in float64;
    ``fractional=True`` says that float counts hold fractions, skipping the check.
    """
    integral = counts.dtype.kind in "ui" or (
        counts.dtype.kind == "f"
        and not fractional
        and counts.shape[-1] >= _CHECKED_ROWS
        and float(np.abs(counts).max()) < 2.0**53
        and bool((np.trunc(counts) == counts).all())
    )
    if integral:
        running = counts.astype(np.int64)  # (a copy, summed in place)
        np.cumsum(running, axis=-1, out=running)
        return running.astype(np.float64)
    return np.cumsum(counts, axis=-1, dtype=np.float64)


def midpoint_cdf(
    hist: np.ndarray,
    out: np.ndarray | None = None,
    fractional: bool = False,
    below: float = 0.0,
    total: float | None = None,
) -> np.ndarray:
    """Midpoint CDF of a histogram: ``(counts below + count / 2) / total`` per bin.

    Along the last axis, in float64 (into ``out`` if given). Computed as
    ``(counts below + counts up to and including) / (2 total)``: for integer
    counts both sums are exact, so the quotient is the correctly rounded one.
    ``fractional`` is passed on to :func:`running_counts`. For a block of a
    longer (1-D) histogram, ``below`` is the count before the block and
    ``total`` the whole histogram's.
    """
    cum = running_counts(hist, fractional)
    if below:
        cum += below
    twice_total = 2 * (cum[..., -1:] if total is None else total)  # (before cum is overwritten)
    out = np.add(cum, cum, out=cum if out is None else out)  # 2 * counts up to and including
    out -= hist  # counts below + counts up to and including
    out /= twice_total
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

    For histogram and float-bins states, ``"probs"`` and ``"values"``
    ``(C, K)`` float64: the midpoint CDF and the value of each occupied level
    (:func:`histogram_quantile_points`) or bin (:func:`bin_quantile_points`),
    rows padded to the longest by repeating their last knot (which leaves
    ``np.interp`` unchanged). For quantile sketches (lab's projections, and
    models saved by earlier versions), ``"values"`` ``(C, n_quantiles)``: the
    quantiles, whose probabilities are the evenly spaced :func:`probability_grid`.
    """
    if "quantiles" in state:
        return {"values": np.array(state["quantiles"], dtype=np.float64)}
    if "keys" in state:
        bits = int(state["bits"])
        rows = [
            bin_quantile_points(keys, counts, bits, ends)
            for (keys, counts), ends in zip(bin_rows(state), state["extremes"])
        ]
    else:
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
    if len(p) < 2 or p[-2] != p[-1]:  # (the last knot not repeated: no padding)
        return p, v
    end = int(np.searchsorted(p, p[-1])) + 1  # the padding repeats the last knot
    return p[:end], v[:end]


def _interp(q: np.ndarray, p: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``np.interp(q, p, v)``, without overflow for knots near float64's limits.

    ``np.interp`` forms slopes ``dv / dp``, which overflow when the knots span
    more than ``finfo.max * dp`` (sketches of values near +-1e308). Such knots
    are interpolated fraction first, on halved values (halving is exact), and
    doubled back.
    """
    # (Python floats overflow to infinity without a warning)
    if math.isfinite((float(v[-1]) - float(v[0])) * (len(v) - 1)) or len(v) < 2:
        return np.interp(q, p, v)
    j = np.clip(np.searchsorted(p, q, side="right") - 1, 0, len(p) - 2)
    dp = p[j + 1] - p[j]
    frac = np.divide(q - p[j], dp, out=np.zeros(np.shape(q)), where=dp > 0)
    np.clip(frac, 0.0, 1.0, out=frac)
    half = v * 0.5
    return (half[j] + (half[j + 1] - half[j]) * frac) * 2.0


def quantile_rows(knots: dict, probs: np.ndarray) -> np.ndarray:
    """:func:`quantile_values` of every channel ``c`` at ``probs[..., c, :]``, at once.

    ``probs`` is ``(..., C, n)`` float64 with non-decreasing rows (midpoint
    CDFs, as for lookup tables over all levels; the leading axes are images
    matched together); one running maximum over the rows keeps the result
    monotone to the ulp, as :func:`quantile_values` does. Each row's values
    are those of its own call: interpolation is elementwise.
    """
    out = np.empty(probs.shape)
    for c in range(probs.shape[-2]):
        out[..., c, :] = _interp(probs[..., c, :], *quantile_points(knots, c))
    return _monotone(out)


def quantile_values(
    knots: dict,
    channel: int,
    probs: np.ndarray,
    out: np.ndarray | None = None,
    increasing: bool = False,
) -> np.ndarray:
    """The reference quantile function of one channel at probabilities ``probs`` (float64).

    ``np.interp(probs, *quantile_points(knots, channel))`` (without overflow
    near float64's limits), non-decreasing in ``probs`` to the last ulp
    (``np.interp`` alone can overshoot a knot by one). ``out`` (a float array
    of the shape of ``probs``, not ``probs`` itself) receives the result,
    rounded to its dtype, if given. ``increasing=True`` says that ``probs`` is
    1-D and non-decreasing (a midpoint CDF), which is then not checked.
    """
    probs = np.asarray(probs, dtype=np.float64)
    p, v = quantile_points(knots, channel)
    result = _interp(probs, p, v)
    if probs.ndim == 1 and (increasing or bool((probs[1:] >= probs[:-1]).all())):
        _monotone(result)
    else:  # cap each value by the right end of its segment
        ends = np.minimum(np.searchsorted(p, probs, side="right"), len(v) - 1)
        np.minimum(result, np.take(v, ends), out=result)
    if out is None:
        return result
    out[...] = result
    return out


#: entries of a lookup table computed at once when :func:`midpoint_quantiles` works by blocks
TABLE_BLOCK = 2**14


def midpoint_quantiles(
    counts: np.ndarray,
    knots: dict,
    channel: int,
    out: np.ndarray | None = None,
    blocks: bool = False,
) -> np.ndarray:
    """``quantile_values(knots, channel, midpoint_cdf(counts))``: one histogram row's table.

    ``counts`` are the integer counts of a histogram (of any numeric dtype).
    With ``blocks``, a table longer than :data:`TABLE_BLOCK` is computed by
    blocks of that many entries, each block's running counts starting from
    the counts below it, so its float64 work arrays are a block's, not the
    table's (a few more calls): integer running sums are exact, so the values
    are the same to the bit. ``out`` may be ``counts`` itself (each block is
    read before it is written). (A midpoint CDF of counts is non-decreasing:
    see :func:`midpoint_cdf`.)
    """
    n = len(counts)
    if not blocks or n <= TABLE_BLOCK:
        return quantile_values(knots, channel, midpoint_cdf(counts), out=out, increasing=True)
    out = np.empty(n) if out is None else out
    points = quantile_points(knots, channel)
    total = float(counts.sum(dtype=np.int64 if counts.dtype.kind in "ui" else np.float64))
    below, floor = 0.0, -np.inf
    for start in range(0, n, TABLE_BLOCK):
        block = slice(start, start + TABLE_BLOCK)
        counted = float(counts[block].sum(dtype=np.float64))  # (out may be counts' memory)
        floor = _table_block(counts[block], below, total, points, floor, out[block])
        below += counted
    return out


def _table_block(
    counts: np.ndarray, below: float, total: float, points: tuple, floor: float, out: np.ndarray
) -> float:
    """One block of :func:`midpoint_quantiles` into ``out``; returns its last value.

    ``floor`` is the previous block's last value: the running maximum that
    :func:`_monotone` takes over the whole table is carried from block to block.
    (A function of its own, so that a block's work arrays are freed before the next's.)
    """
    # (as int64: integer counts, whose running sum needs no check for fractions)
    probs = midpoint_cdf(counts.astype(np.int64, copy=False), below=below, total=total)
    matched = _interp(probs, *points)
    del probs
    if matched[0] < floor or (matched[1:] < matched[:-1]).any():
        matched[0] = max(matched[0], floor)
        np.maximum.accumulate(matched, out=matched)
    out[...] = matched
    return float(matched[-1])


def learn(images: list[np.ndarray], masks: list[np.ndarray] | None) -> dict[str, np.ndarray]:
    """The per-channel reference state of ``images`` (see the module docstring).

    Float images that all hold 8-bit levels of one conversion (``k / 255``...,
    :func:`byte_level_table`) keep an exact histogram of their levels, with
    the levels' values in ``"levels"``; other floats and wide integers keep
    float bins (:func:`learn_bins`).
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
    return learn_bins(images, masks)


def _as_sketch(state: dict, n_quantiles: int) -> np.ndarray:
    """The quantiles of a state on the probability grid (a histogram's, resampled)."""
    if "quantiles" in state:
        return state["quantiles"]
    knots = quantile_knots(state)
    grid = probability_grid(n_quantiles)
    return np.stack(
        [np.interp(grid, *quantile_points(knots, c)) for c in range(len(knots["values"]))]
    )


def merge(a: dict, na: int, b: dict, nb: int) -> dict[str, np.ndarray]:
    """Merge two per-channel states learned on ``na`` and ``nb`` pixels.

    Histograms over the same levels add up exactly; any other pair of
    histograms and float bins merges exactly as float bins
    (:func:`merge_bins`). Quantile sketches (lab's, and models saved by
    earlier versions) merge as sketches of their own size
    (:func:`merge_quantiles`).
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
    if "quantiles" not in a and "quantiles" not in b:
        return merge_bins(as_bins(a), as_bins(b))
    size = next(s["quantiles"].shape[1] for s in (a, b) if "quantiles" in s)
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


def _int_array(arr: object, name: str, ndim: int) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iu" or arr.ndim != ndim:
        got = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise ValueError(f"{name} must be a {ndim}-d integer array; got {got}")
    return arr


def _check_bins(state: dict, dtype: np.dtype, n_channels: int | None) -> int:
    """Validate a float-bins state (see :func:`check_state`)."""
    if dtype.kind not in "fiu" or has_exact_levels(dtype):
        raise ValueError(f"state holds float bins for dtype {dtype}, which has histograms")
    bits = int(_int_array(state["bits"], "state['bits']", 0))
    if not 0 <= bits <= 52:
        raise ValueError(f"state['bits'] must be in [0, 52]; got {bits}")
    offsets = _int_array(state["offsets"], "state['offsets']", 1)
    keys = _int_array(state["keys"], "state['keys']", 1)
    counts = _int_array(state["counts"], "state['counts']", 1)
    rows = len(offsets) - 1
    if rows < 1 or (n_channels is not None and rows != n_channels):
        expected = "channels" if n_channels is None else n_channels
        raise ValueError(
            f"state['offsets'] must hold ({expected} + 1) entries; got {len(offsets)}"
        )
    if offsets[0] != 0 or offsets[-1] != len(keys) or len(counts) != len(keys):
        raise ValueError(
            "state['offsets'] must run from 0 to the length of state['keys'] and "
            "state['counts'], which must be equal"
        )
    if (np.diff(offsets) < 1).any() or (np.diff(offsets) > MAX_BINS).any():
        raise ValueError(f"every channel of a float state needs 1 to {MAX_BINS} bins")
    if (counts < 1).any():
        raise ValueError("state['counts'] must be positive")
    limit = 1 << (bits + 11)  # keys hold a sign, 11 exponent bits and `bits` more
    if bits < 52 and ((keys < -limit).any() or (keys >= limit).any()):
        raise ValueError(f"state['keys'] must be keys of {bits}-bit bins")
    extremes = state["extremes"]
    if (
        not isinstance(extremes, np.ndarray)
        or extremes.dtype.kind != "f"
        or extremes.shape != (rows, 2)
        or not np.isfinite(extremes).all()
    ):
        raise ValueError(f"state['extremes'] must be finite floats of shape ({rows}, 2)")
    sums = []
    for c, (k, n) in enumerate(bin_rows(state)):
        if (k[1:] <= k[:-1]).any():
            raise ValueError("state['keys'] must increase within each channel")
        ends = order_keys(extremes[c].astype(np.float64)) >> (52 - bits)
        if ends[0] != k[0] or ends[1] != k[-1]:
            raise ValueError(
                f"state['extremes'][{c}] must lie in the first and last bins of the channel"
            )
        sums.append(int(n.sum()))
    if (np.array(sums) != sums[0]).any():
        raise ValueError(
            f"state['counts'] must count the same number of pixels in every channel; got {sums}"
        )
    return sums[0]


def check_state(state: object, n_channels: int | None) -> int | None:
    """Validate a stored per-channel state; return the pixels it counts (histograms).

    Raises ``ValueError`` naming the entry at fault (used when loading models).
    """
    keys = set(state) if isinstance(state, dict) else None
    kinds = (
        {"dtype", "histograms"},
        {"dtype", "quantiles"},
        {"dtype", "histograms", "levels"},
        {"dtype", "bits", "extremes", "keys", "counts", "offsets"},
    )
    if keys not in kinds:
        got = sorted(keys) if keys is not None else type(state).__name__
        raise ValueError(
            "a per-channel state holds 'dtype' and 'histograms' (with 'levels' for float "
            "levels), 'bits', 'extremes', 'keys', 'counts' and 'offsets' (float bins), or "
            f"'quantiles'; got {got}"
        )
    dtype = dtype_from_name(state["dtype"], "state['dtype']")
    if "quantiles" in state:
        check_quantile_rows(state["quantiles"], "state['quantiles']", n_channels)
        return None
    if "keys" in state:
        return _check_bins(state, dtype, n_channels)
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
