"""Per-channel CDF (quantile) matching.

Each channel's values are mapped through ``Q_ref(F_src(x))``, where ``F_src`` is
the image's own *midpoint* CDF (a level holding ``h`` of ``n`` pixels sits at
``(count below + h / 2) / n``) and ``Q_ref`` is the reference quantile function
with the same convention. Equal values stay equal and the map is monotone.

* 8/16-bit integers: one histogram and one lookup table per channel over the
  levels present; blending by ``strength``, rounding and clipping are folded
  into the table, which ``cv2.LUT`` (uint8) or a gather (16-bit) applies.
* floats and wide integers: sort-free. Each channel is placed on a 65,536-cell
  grid over its own range, whose two end cells hold the extremes alone
  (:func:`grid_cells`), and from there it is the 16-bit path: a histogram,
  a lookup table of reference quantiles at the cells' midpoint CDF, one
  gather (:func:`match_planes`). Values are never rounded to 8 bits or
  clipped to [0, 1], and repeated values get exactly their midpoint CDF.
* floats that hold 8-bit levels (``k / 255`` or ``k``, as converted 8-bit images do):
  each value is alone in its grid cell, so matching the levels gives the
  grid's result bit for bit, at the cost of the uint8 path
  (:func:`byte_levels`).

Four shortcuts are kept for their measured worth (``benchmarks/README.md``):
the 8-bit-levels path (row "float32 RGB 512x512 /255, fitted transform",
against the same row "on the grid"), the occupied-levels-only tables of
sparse 16-bit histograms (:func:`occupied_lut`; row "uint16 RGB 512x512
(x257), fitted transform"), the 16-bit-index ``cv2.LUT`` gather of
:func:`~histmatch_ml.methods._base.gather` (``bench_scale.py``'s row
"per_channel float32 1024x1024", against its previous run) and the tables
of a batch's uint8 images computed together (:func:`match_uint8`,
:func:`match_uint8_planes`; ``bench_core.py``'s row "uint8 RGB batch
256x32x32 (crops)" and the transform column of ``bench_augment.py``'s
"torch uint8 batch 256x3x32x32 (CPU)").
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Any

import cv2
import numpy as np
from sklearn.utils._param_validation import Interval

from .. import _images, _reference
from .._images import channel_from, channel_into, interleave_into, split_into
from ._base import (
    N_QUANTILES,
    MatchingMethod,
    Param,
    blend,
    gather,
    keep_unmasked,
    register,
    row_bands,
)

#: cells of the float path's grid by default (the resolution of the source CDF)
GRID_CELLS = 65536
#: the most cells a grid may have
MAX_GRID_CELLS = 2**22


def cdf_lut(
    counts: np.ndarray,
    knots: dict,
    channel: int,
    dtype: np.dtype,
    levels: np.ndarray | None = None,
    strength: float = 1.0,
    out: np.ndarray | None = None,
    blocks: bool = False,
) -> np.ndarray:
    """Lookup table ``(len(counts),)`` in ``dtype`` from a source histogram.

    Each occupied entry ``i`` gets the reference value at its midpoint CDF;
    with ``levels`` (the value of every entry, for integer images) it is
    blended with that level by ``strength`` and rounded and clipped to
    ``dtype``. Entries never read for counted pixels (empty ones) may hold
    anything; uncounted (unmasked) pixels are restored afterwards. A sparse
    histogram (at most 1/8 occupied) computes its occupied entries only, so a
    16-bit image costs what its distinct values cost; a dense one is computed
    whole, in place in work buffers (with ``blocks``, a float table by blocks of
    entries: :func:`.._reference.midpoint_quantiles`). ``out`` is an optional
    buffer to fill, which may be ``counts`` itself.
    """
    out = np.empty(len(counts), dtype=dtype) if out is None else out
    present = counts > 0
    if np.count_nonzero(present) <= len(counts) // 8:
        return occupied_lut(counts, knots, channel, out, levels, strength, present)
    if levels is None:  # float cells: the quantiles are the table
        return _reference.midpoint_quantiles(counts, knots, channel, out=out, blocks=blocks)
    matched = _reference.midpoint_quantiles(counts, knots, channel)
    return blend(levels, matched, strength, dtype, out=out)


def occupied_lut(
    counts: np.ndarray,
    knots: dict,
    channel: int,
    out: np.ndarray,
    levels: np.ndarray | None = None,
    strength: float = 1.0,
    present: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`cdf_lut` computed on the occupied entries only (the others are 0).

    ``out`` (any strides) receives the table; ``present`` is ``counts > 0``
    if already at hand.
    """
    occupied = np.flatnonzero(counts > 0 if present is None else present)
    probs = _reference.midpoint_cdf(counts[occupied])
    matched = _reference.quantile_values(knots, channel, probs, increasing=True)
    out.fill(0)
    out[occupied] = (
        matched if levels is None else blend(levels[occupied], matched, strength, out.dtype)
    )
    return out


def dense_luts(
    hist: np.ndarray,
    knots: dict,
    levels: np.ndarray,
    strength: float,
    dtype: np.dtype,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Lookup tables ``(..., C, L)`` for every level at once (8-bit: no occupancy test).

    The tables of :func:`cdf_lut`, computed for absent levels too (they are
    never read for counted pixels), with the CDFs, quantiles and the blend
    done for all channels, and all images of ``hist`` ``(..., C, L)``,
    together (one numpy call per step, which matters when a transform takes
    under a millisecond). ``out`` (of ``hist``'s shape and ``dtype``, any
    strides) receives the tables if given.
    """
    matched = _reference.quantile_rows(knots, _reference.midpoint_cdf(hist))
    return blend(levels, matched, strength, dtype, out=out)


#: most uint8 images whose tables :func:`match_uint8` computes together (its work arrays,
#: some 8 KB an image, stay small beside a large batch)
TOGETHER = 256
#: most pixels per band of rows in :func:`match_planes` (its work memory, whatever the image size)
BAND_PIXELS = 2**18
#: least pixels per band: images up to this size are split into channel planes at once
MIN_BAND_PIXELS = 2**16


#: where the minimum sits in cell 0 (and the maximum in the last cell): values
#: within ``2**-10`` of a cell of the channel's extremes share their cell
_END = 2.0**-10


def _min_max(values: np.ndarray, mask: np.ndarray | None) -> tuple[float, float]:
    """(Masked) min and max; the dtype's ``(max, min)`` when the mask selects nothing."""
    if mask is None:
        return float(values.min()), float(values.max())  # (min and max propagate NaN)
    selected = values[mask]  # (a compressed copy: numpy's masked reductions are much slower)
    if selected.size == 0:
        info = np.finfo(values.dtype) if values.dtype.kind == "f" else np.iinfo(values.dtype)
        return float(info.max), float(info.min)
    return float(selected.min()), float(selected.max())


def grid_cells(
    plane: np.ndarray,
    grid: tuple[float, float],
    masked: bool,
    cells: np.ndarray,
    n_cells: int = GRID_CELLS,
    work: np.ndarray | None = None,
) -> None:
    """Write the float-grid cell of every pixel of a 2-D float plane into ``cells``.

    The cell of ``x`` is ``floor((x - lo) * scale + 1 - _END)`` over the
    channel's (masked) range ``grid = (lo, hi)`` (:func:`_channel_range`), with
    ``scale`` putting ``hi`` at ``n_cells - 1 + _END``: the interior cells
    are ``(hi - lo) / (n_cells - 2)`` wide, and the two end cells hold only
    the values within ``_END`` of a cell of the extremes. Pixels piled up at a
    channel's minimum or maximum (black borders, clipped highlights, zero
    padding) thus keep their own cell, apart from the tail of nearly equal
    values that blurring or resampling leaves next to them. The map is
    monotone and equal values share a cell; it is computed from ``x - lo`` so
    that values far from zero (``1e6 + [0, 100]`` in float32) keep their
    resolution, and with ``masked`` the unmasked pixels outside the range go
    to the end cells. ``plane`` (a band of rows of a channel, contiguous,
    float32/float64) is used as scratch space and overwritten, unless ``work``
    (a contiguous array of its shape and dtype) is given: then ``plane`` is
    only read and ``work`` is the scratch space. ``cells`` is a uint16 (up to
    65,536 cells) or uint32 array of its shape.
    """
    lo, hi = grid
    t = plane if work is None else work  # (what the steps below write)
    if hi - lo > float(np.finfo(plane.dtype).max):  # float32 data wider than float32's range
        plane = t = plane.astype(np.float64)
    if not np.isfinite(hi - lo):  # float64 data wider than float64's range
        plane = np.multiply(plane, 0.5, out=t)
        lo, hi = lo * 0.5, hi * 0.5
    real = t.dtype.type
    span = n_cells - 2 + 2 * _END  # lo -> 1 - _END, hi -> n_cells - 1 + _END
    scale = span / (hi - lo)
    np.subtract(plane, real(lo), out=t)
    if scale <= float(np.finfo(t.dtype).max):
        t *= real(scale)
    else:  # a subnormal range: divide, then scale
        t /= real(hi - lo)
        t *= real(span)
    t += real(1 - _END)
    if masked:
        np.clip(t, 0.0, n_cells - 0.5, out=t)
    np.copyto(cells, t, casting="unsafe")  # truncation


def lut_table(n_channels: int, dtype: Any = np.uint8, count: int | None = None) -> np.ndarray:
    """A ``(1, 256, C)`` table for :func:`apply_lut_uint8`; fill it through ``.T``.

    With ``count``, ``count`` such tables ``(count, 1, 256, C)``, one per image.
    """
    return np.empty((*(() if count is None else (count,)), 1, 256, n_channels), dtype=dtype)


def _cv_image(image: np.ndarray) -> np.ndarray:
    """An ``(H, W, C)`` array as OpenCV takes it: ``(H, W)`` for one channel."""
    return image[:, :, 0] if image.shape[2] == 1 else image


def apply_lut_uint8(image: np.ndarray, table: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Apply a :func:`lut_table` to a uint8 ``(H, W, C<=4)`` image into ``out`` (table's dtype)."""
    cv2.LUT(_cv_image(image), table, dst=_cv_image(out))
    return out


def byte_levels(image: np.ndarray, check: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(levels, values)`` of a float ``(H, W, C<=4)`` image converted from 8 bits, or None.

    ``levels`` (uint8, the image's shape) are the pixels' 8-bit levels and
    ``values[k]`` the value of level ``k`` (a :func:`.._reference.byte_tables` table).

    A float image converted from 8 bits (:func:`.._reference.byte_tables`) has at most
    256 values per channel, at least ``1 / 255`` of its range apart, so each
    is alone in its grid cell and matching its levels ``k`` gives the grid's
    result bit for bit, at the cost of the uint8 path: one 256-bin histogram
    per channel and one ``cv2.LUT``. Three rows choose the conversion (or
    rule the image out at once); then every value must equal its level's
    (an L1 distance of exactly 0, which NaN and infinity never pass).
    ``check`` (of the image's shape and dtype) is used as work space.
    """
    if not image.flags.c_contiguous:
        return None
    rows = image[[0, image.shape[0] // 2, -1]].reshape(3, -1)
    candidates = []
    for scale, table in _reference.byte_tables(image.dtype):
        # round(|x| * scale), saturated to uint8
        if np.array_equal(table[cv2.convertScaleAbs(rows, alpha=scale)], rows):
            candidates.append((scale, table))
    levels = np.empty(image.shape, dtype=np.uint8) if candidates else None
    for scale, table in candidates:
        cv2.convertScaleAbs(_cv_image(image), dst=_cv_image(levels), alpha=scale)
        apply_lut_uint8(levels, table, check)
        if cv2.norm(_cv_image(image), _cv_image(check), cv2.NORM_L1) == 0:
            return levels, table
    return None


@register
class PerChannel(MatchingMethod):
    """Classic histogram matching, each channel on its own."""

    name = "per_channel"
    summary = "CDF matching of each channel: monotone, equal values stay equal, the fastest"
    params = (
        N_QUANTILES,
        Param(
            "grid_cells",
            GRID_CELLS,
            [Interval(Integral, 1024, MAX_GRID_CELLS, closed="both")],
            "Cells of the grid a float image's channel is placed on (values closer than "
            "1 / (grid_cells - 2) of its range share one output value); more cells cost "
            "more time.",
            f"int in [1024, {MAX_GRID_CELLS}]",
        ),
    )

    #: channels-first images (CPU tensors) are matched plane by plane (:func:`match_level_planes`)
    planar = True

    def apply(self, image, mask, state, tables, params, out) -> None:
        self.apply_batch([image], [mask], state, tables, params, [out])

    def apply_batch(self, images, masks, state, tables, params, outs) -> None:
        # (uint8 images have their tables computed together: match_uint8, match_uint8_planes)
        strength, together, together_planes = params["strength"], [], []
        for image, mask, out in zip(images, masks, outs):
            n_channels = image.shape[2]
            planes, out_planes = _images.planes_of(image), _images.planes_of(out)
            if planes is not None and out_planes is not None:  # channels-first
                if planes.dtype == np.uint8:
                    together_planes.append((planes, mask, out_planes))
                elif not match_level_planes(planes, mask, tables, strength, out_planes):
                    # (match_planes reads and writes one plane at a time: no layout conversion)
                    match_planes(image, mask, tables, strength, out, params["grid_cells"])
                continue
            if image.dtype == np.uint8 and n_channels <= 4:
                together.append((image, mask, out))
                continue
            floats = image.dtype.kind == "f" and n_channels <= 4
            found = byte_levels(image, out) if floats else None
            if found is not None:
                match_byte_levels(*found, image, mask, tables, strength, out)
            else:
                match_planes(image, mask, tables, strength, out, params["grid_cells"])
        for kernel, items in ((match_uint8, together), (match_uint8_planes, together_planes)):
            for start in range(0, len(items), TOGETHER):
                images, masks, outs = zip(*items[start : start + TOGETHER])
                kernel(images, masks, tables, strength, outs)


def match_uint8(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    knots: dict,
    strength: float,
    outs: Sequence[np.ndarray],
) -> None:
    """uint8 ``(H, W, C<=4)`` images: histograms per channel, one ``cv2.LUT`` per image.

    The tables of all the images are computed together (:func:`dense_luts`),
    whose fixed cost is most of a small image's matching; each image's are
    the ones it would get alone.
    """
    n_channels = images[0].shape[2]
    # (each image's histograms, int64 for large images: exact counts, so a float64 stack
    # gives every image's CDFs to the bit)
    hists = np.empty((len(images), n_channels, 256))
    for hist, image, mask, out in zip(hists, images, masks, outs):
        hist[...] = _reference.uint8_histograms(image, mask, work=out)  # (out: filled below)
    luts = lut_table(n_channels, count=len(images))
    levels = _reference.level_values(np.dtype(np.uint8))
    dense_luts(hists, knots, levels, strength, np.dtype(np.uint8), luts[:, 0].transpose(0, 2, 1))
    for lut, image, mask, out in zip(luts, images, masks, outs):
        keep_unmasked(apply_lut_uint8(image, lut, out), image, mask)


def match_byte_levels(
    levels: np.ndarray, values: np.ndarray, image, mask, knots: dict, strength: float, out
) -> None:
    """A float image through its 8-bit ``levels`` (see :func:`byte_levels`), to the grid's bit.

    The grid's tables (occupied levels only), blended by strength as the grid
    blends each pixel, in the image's float dtype.
    """
    hist = _reference.uint8_histograms(levels, mask)
    table = lut_table(image.shape[2], image.dtype)
    for c in range(image.shape[2]):
        occupied_lut(hist[c], knots, c, table[0, :, c])
    if strength != 1.0:
        table[0] = blend(values[:, None], table[0], strength, image.dtype)
    keep_unmasked(apply_lut_uint8(levels, table, out), image, mask)


def match_level_planes(
    planes: np.ndarray, mask, knots: dict, strength: float, out: np.ndarray
) -> bool:
    """Match channels-first ``planes`` ``(C, H, W)`` into ``out`` of that layout, or return False.

    For uint8 planes and float planes holding 8-bit levels (:func:`byte_levels`,
    checked on the planes stacked as one channel): one histogram per plane
    (OpenCV counts a contiguous plane on two threads), the tables of
    :func:`match_uint8` and :func:`match_byte_levels`, and one single-table
    ``cv2.LUT`` per plane, so a channels-first image costs no layout
    conversion. The result is the same to the bit as the ``(H, W, C)`` path's.
    Other dtypes return False (the caller matches them with :func:`match_planes`,
    which also reads and writes one plane at a time).
    """
    n_channels, h, w = planes.shape
    if planes.dtype == np.uint8:
        match_uint8_planes([planes], [mask], knots, strength, [out])
        return True
    if planes.dtype.kind != "f":
        return False
    stacked = planes.reshape(n_channels * h, w, 1)
    found = byte_levels(stacked, out.reshape(stacked.shape))
    if found is None:
        return False
    levels, values = found[0].reshape(planes.shape), found[1]
    hist = _plane_histograms(levels, mask)
    tables = np.empty((n_channels, 256), dtype=planes.dtype)
    for c in range(n_channels):
        occupied_lut(hist[c], knots, c, tables[c])
    if strength != 1.0:
        tables = blend(values[None, :], tables, strength, planes.dtype)
    _apply_plane_luts(levels, tables, planes, mask, out)
    return True


def match_uint8_planes(
    planes: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    knots: dict,
    strength: float,
    outs: Sequence[np.ndarray],
) -> None:
    """uint8 channels-first images ``(C, H, W)``: :func:`match_uint8` plane by plane.

    One histogram per plane, the tables of all the images computed together
    (:func:`dense_luts`; each image's are the ones it would get alone), one
    single-table ``cv2.LUT`` per plane into ``outs`` (of that layout).
    """
    hists = np.stack([_plane_histograms(p, mask) for p, mask in zip(planes, masks)])
    levels = _reference.level_values(np.dtype(np.uint8))
    tables = dense_luts(hists, knots, levels, strength, np.dtype(np.uint8))
    for p, mask, table, out in zip(planes, masks, tables, outs):
        _apply_plane_luts(p, table, p, mask, out)


def _plane_histograms(levels: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Histograms ``(C, 256)`` of the 8-bit level planes ``(C, H, W)`` (OpenCV, exact counts)."""
    return np.stack([_reference.level_counts(plane, mask, 256) for plane in levels])


def _apply_plane_luts(levels, tables, planes, mask, out) -> None:
    """``out[c] = tables[c][levels[c]]`` per plane; pixels outside ``mask`` keep ``planes``."""
    for c in range(len(levels)):
        cv2.LUT(levels[c], tables[c], dst=out[c])
    if mask is not None:
        np.copyto(out, planes, where=~mask[None])


def _channel_range(
    read: Any, c: int, mask: np.ndarray | None, bands: list[slice]
) -> tuple[float, float] | None:
    """The (masked) ``(lo, hi)`` of channel ``c`` over its contiguous bands ``read(c, rows)``,
    or None when it holds a single value.

    (A strided channel's min and max cost several times a contiguous band's.)
    """
    lo, hi = np.inf, -np.inf
    for rows in bands:  # (each band checked: Python's min and max would drop a NaN)
        band_lo, band_hi = _finite(*_min_max(read(c, rows), None if mask is None else mask[rows]))
        lo, hi = min(lo, band_lo), max(hi, band_hi)
    return _grid_range(lo, hi)


def _finite(lo: float, hi: float) -> tuple[float, float]:
    """``(lo, hi)`` as floats; NaN or infinity raise."""
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise _images.not_finite_error()
    return lo, hi


def _grid_range(lo: float, hi: float) -> tuple[float, float] | None:
    """``(lo, hi)`` as floats, None for a single value; NaN or infinity raise."""
    lo, hi = _finite(lo, hi)
    return (lo, hi) if hi > lo else None


def _channel_ranges(
    image: np.ndarray, read: Any, mask: np.ndarray | None, bands: list[slice]
) -> list[tuple[float, float] | None]:
    """:func:`_channel_range` of every channel of ``image``.

    An unmasked C-contiguous image read by bands (its channels not split at
    once) has its ranges read in one pass over its interleaved rows (the
    element-wise minimum and maximum of its rows, as ``(H, W * C)``, then per
    channel) rather than from each channel's extracted bands.
    """
    n_channels = image.shape[2]
    if mask is not None or len(bands) == 1 or not image.flags.c_contiguous:
        return [_channel_range(read, c, mask, bands) for c in range(n_channels)]
    rows = image.reshape(image.shape[0], -1)
    lows = rows.min(axis=0).reshape(-1, n_channels).min(axis=0).tolist()
    highs = rows.max(axis=0).reshape(-1, n_channels).max(axis=0).tolist()
    return [_grid_range(lo, hi) for lo, hi in zip(lows, highs)]


def match_planes(
    image, mask, knots: dict, strength: float, out: np.ndarray, n_cells: int = GRID_CELLS
) -> None:
    """16-bit levels, or floats (and wide integers) on the grid, one channel at a time.

    A channel's pixels become cells (their levels, or grid cells for floats
    and wide integers, those through float64 to be rounded once), one
    histogram of the cells gives the channel's lookup table (:func:`cdf_lut`),
    and the table is gathered into the channel of ``out``. An image of one
    band (up to :data:`MIN_BAND_PIXELS`, :func:`._base.row_bands`) is split into
    channel planes at once and merged back at the end (one pass each way over
    the interleaved image); a larger one is read and written by bands of rows
    through one band-sized plane, so
    its work memory is the cells (one or two bytes a pixel), one band, the
    histogram and the table (a float32 table over the histogram's counts).
    Channels-first views (``image`` and ``out`` both, :func:`._images.planes_of`)
    are read by bands from their own planes, and 16-bit and float channels
    gathered straight into ``out``'s: no channel copies either way.
    """
    dtype, n_channels, shape = image.dtype, image.shape[2], image.shape[:2]
    exact = _reference.has_exact_levels(dtype)
    if exact:
        n_cells, _ = _reference.level_count_and_offset(dtype)
        cell_dtype, plane_dtype = (np.uint8 if n_cells == 256 else np.uint16), dtype
        levels = _reference.level_values(dtype)
    else:
        cell_dtype = np.uint16 if n_cells <= 65536 else np.uint32
        levels = None
        plane_dtype = dtype if dtype.kind == "f" else np.dtype(np.float64)
    bands = row_bands(shape, MIN_BAND_PIXELS, BAND_PIXELS)
    # (a channels-first 16-bit or float image: its planes read in place and its channels
    # gathered straight into out's; wide integers are still copied to float64 planes)
    direct = (
        plane_dtype == dtype
        and _images.planes_of(image) is not None
        and _images.planes_of(out) is not None
    )
    whole = len(bands) == 1 and not direct
    if whole:
        planes = split_into(image, np.empty((n_channels, *shape), dtype=plane_dtype))
    else:
        band_plane = np.empty((bands[0].stop, shape[1]), dtype=plane_dtype)

    def read(c: int, rows: slice) -> np.ndarray:
        """Channel ``c``'s band ``rows``, contiguous: a work array, or (direct) a view."""
        if whole:
            return planes[c]
        if direct:
            return image[rows, :, c]
        return channel_into(image[rows], c, band_plane[: image[rows].shape[0]])

    cells = np.empty(shape, dtype=cell_dtype)
    hist = np.empty((n_cells, 1), dtype=np.float32) if cell_dtype != np.uint32 else None
    # (a float32 table is written over the counts it is computed from, which it has read
    # by then: :func:`cdf_lut`)
    same = hist is not None and plane_dtype == np.float32 and not exact
    table = hist.reshape(-1) if same else np.empty(n_cells, dtype=plane_dtype)
    # (a channel of more pixels than the table has entries: its float table by blocks, whose
    # work arrays are a fraction of the channel; a smaller one is dominated by the table anyway)
    blocks = cells.size > n_cells
    grids = [None] * n_channels if exact else _channel_ranges(image, read, mask, bands)
    for c, grid in enumerate(grids):
        if exact or grid is not None:
            for rows in bands:  # the channel's cells
                if exact:
                    _reference.level_index(read(c, rows), out=cells[rows])
                else:
                    # (a view of the image is only read: the band plane is the work space)
                    work = band_plane[: len(cells[rows])] if direct else None
                    grid_cells(read(c, rows), grid, mask is not None, cells[rows], n_cells, work)
            counts = _reference.level_counts(cells, mask, n_cells, out=hist)
            lut = cdf_lut(counts, knots, c, plane_dtype, levels, strength, table, blocks)
        else:  # one value: it sits at the median of the reference
            median = _reference.quantile_values(knots, c, np.array([0.5]))[0]
        for rows in bands:  # the matched values
            if whole:
                band = planes[c]
            else:
                band = out[rows, :, c] if direct else band_plane[: len(cells[rows])]
            if exact or grid is not None:
                gather(lut, cells[rows], band)
            else:
                band.fill(median)
            if not (exact or dtype.kind == "f"):  # wide integers: blended, rounded, clipped
                blend(image[rows, :, c], band, strength, dtype, out=out[rows, :, c])
            elif not (whole or direct):
                channel_from(band, out[rows], c)
    if whole and (exact or dtype.kind == "f"):
        interleave_into(planes, out)
    if not exact and dtype.kind == "f" and strength != 1.0:
        blend(image, out, strength, dtype, out=out)
    keep_unmasked(out, image, mask)
