"""Joint colour matching in CIELAB: ``method="lab"``.

Per-channel RGB matching treats R, G and B as independent, so it shifts hues
and cannot reproduce the reference's colour *combinations*. This method moves
the image's CIELAB colours towards the joint 3-D colour distribution of the
reference by iterative distribution transfer (Pitie, Kokaram & Dahyot 2005,
2007), a form of sliced optimal transport (Rabin, Peyre, Delon & Bernot 2011):
each iteration rotates the colour space, matches the three 1-D marginals along
the rotated axes to the reference's by quantile matching, and rotates back.

Learned state (plain arrays, no reference pixels kept):

* ``"rotations"`` ``(K, 3, 3)``: orthonormal bases, the first the LAB axes
  themselves, the others drawn at random from the ``Generator`` given to the
  first fit (``K = n_iter + n_refine`` at that fit). Later ``partial_fit``
  calls reuse them, and ``transform`` cycles through them for its
  ``n_iter + n_refine`` iterations.
* ``"projected_quantiles"`` ``(3 K, n_quantiles)``: quantile sketches of the reference
  LAB colours projected on every row of every rotation (Hazen/midpoint
  convention), on a fixed 65,536-node grid per direction (0.005 LAB units).
  They merge with :func:`histmatch_ml._reference.merge_quantiles`, whose
  tolerance (``1 / (n_quantiles - 1) + 1 / N`` in probability, per direction)
  is the tolerance of ``partial_fit``.
* ``"dtype"``: the reference dtype (informative: the state lives in CIELAB,
  so images of any RGB dtype can be matched to it).

``lab_mode="marginal"`` uses only the first rotation once: classic per-channel
quantile matching of L, a and b, cheap and structure-preserving.

A transform works on a weighted summary of the image's colours and ends in a
smooth colour lookup, so that similar colours move alike and a smooth region
stays smooth:

1. *Summary* (:func:`colour_summary`): the RGB cube is cut into
   ``SUMMARY_CELLS`` cells per axis (four 8-bit codes wide); every occupied
   cell is one colour, the mean of its pixels' colours, weighted by its
   pixel count (a few thousand colours for a photo, whatever its size).
2. *Transport* (:func:`transfer`): each iteration quantile-matches the
   weighted colours' projections on three rotated axes (``bincount`` on a
   uniform grid, no sorting, then the midpoint CDF and the reference
   quantile function), and the resulting moves are made a smooth field
   before they are applied (:func:`smooth_displacements`: a normalised
   Gaussian convolution on a coarse CIELAB grid, read back by trilinear
   interpolation). Neighbouring colours cannot be sent far apart, which the
   per-colour moves of plain sliced transport do (colour speckle). The
   smoothing also slows convergence where the reference is much wider than
   a narrow cluster of the image's colours, so ``n_refine`` final iterations
   apply their 1-D matches unsmoothed: by then the colours are close to the
   reference and the moves are small, and each is still a continuous,
   piecewise-linear function of the colour's projection (from the start,
   unsmoothed moves would tear neighbouring colours apart).
3. *Lookup* (:func:`colour_table`, :func:`look_up`): the summary colours'
   moves, taken back to RGB as ``lab_to_rgb(out) - lab_to_rgb(in)`` (which
   cancels the conversion's round-trip error), fill a
   ``(SUMMARY_CELLS + 1)``-cubed table over RGB, and every pixel adds the
   table's trilinear interpolation at its colour. The output is thus a
   continuous function of the colour (equal colours give equal outputs), and
   the cost per pixel is fixed. Results are clipped channel-wise to
   ``[0, 1]``.

``regrain=True`` then applies Pitie's regrain post-process, which keeps the
transferred colours but restores the source's gradients (the output is then no
longer a pure function of the colour).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from numbers import Integral
from typing import Any

import cv2
import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from .. import _color, _reference
from ._base import N_QUANTILES, MatchingMethod, Param, finish, register, row_bands

#: grid nodes of the per-image source CDF along each projection
SOURCE_GRID_NODES = 2048
#: grid nodes of the reference histograms along each direction
REFERENCE_GRID_NODES = 65536
#: least and most pixels, and parts of the image, per band of rows of a transform's summary
#: and of its lookup (:func:`._base.row_bands`): the work memory is a band's, a fraction of a
#: small image and bounded for a large one (the lookup's, some 48 bytes a pixel, beside the
#: colour table's fixed 3.3 MB, in sixteenths)
_BAND_PIXELS = (2**16, 2**18, 4)
_LOOKUP_PIXELS = (2**14, 2**16, 16)
#: the upper bound of ``n_iter`` (its declaration, and the transfer's own check)
MAX_ITERATIONS = 1000
#: a box holding every CIELAB colour of the sRGB gamut (L, a, b lower and upper)
_LAB_BOX = np.array([[0.0, -128.0, -128.0], [100.0, 128.0, 128.0]])
#: cells per RGB axis of the colour summary and of the colour lookup table (4 8-bit codes wide)
SUMMARY_CELLS = 64
#: a colour's position on the summary grid is its ``[0, 1]`` value times this (8-bit code / 4)
_CELL_SCALE = 255.0 / 4.0
#: nodes per axis of the CIELAB grid on which every iteration's displacement is smoothed
FIELD_NODES = 33
#: the box of that grid: the sRGB gamut's extent in CIELAB, rounded out
_FIELD_BOX = np.array([[0.0, -90.0, -110.0], [100.0, 100.0, 100.0]], dtype=np.float32)
#: standard deviation of the smoothing, in cells of the field grid, and the kernel's reach
#: (two standard deviations: the weights beyond are 1% of the centre's)
FIELD_SIGMA = 1.0
_FIELD_RADIUS = 2


# --------------------------------------------------------------------------- colours
def unique_colours(
    pixels: np.ndarray, return_inverse: bool = True
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Distinct colours of ``(N, 3)`` RGB pixels, the index of each pixel's colour, counts.

    Integers are packed into one key (24 bits for uint8, 48 for uint16);
    floats are compared as float32 in ``[0, 1]`` (see :func:`_color.to_unit`)
    by two packed-key passes over their bit patterns. Without
    ``return_inverse`` integer keys are sorted rather than argsorted, which
    costs a fraction of the time and memory.

    Returns
    -------
    colours : ndarray of shape (U, 3)
        The distinct colours: the input dtype for integers, float32 in
        ``[0, 1]`` for floats.
    inverse : ndarray of shape (N,), or None without ``return_inverse``
        ``colours[inverse]`` rebuilds the pixels.
    counts : ndarray of shape (U,)
        Pixels per colour.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.methods.lab import unique_colours
    >>> px = np.array([[1, 2, 3], [0, 0, 9], [1, 2, 3]], dtype=np.uint8)
    >>> colours, inverse, counts = unique_colours(px)
    >>> colours.tolist(), inverse.tolist(), counts.tolist()
    ([[0, 0, 9], [1, 2, 3]], [1, 0, 1], [1, 2])
    """
    dtype = _color.check_rgb_dtype(pixels.dtype, "image")
    if dtype.kind == "u":
        bits = 8 * dtype.itemsize
        wide = np.uint32 if bits == 8 else np.uint64
        key = pixels[:, 0].astype(wide) << wide(2 * bits)
        key |= pixels[:, 1].astype(wide) << wide(bits)
        key |= pixels[:, 2]
        if return_inverse:
            keys, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
            inverse = inverse.ravel()
        else:
            (keys, counts), inverse = np.unique(key, return_counts=True), None
        mask = wide((1 << bits) - 1)
        colours = np.stack(
            [keys >> wide(2 * bits), (keys >> wide(bits)) & mask, keys & mask], axis=1
        ).astype(dtype)
        return colours, inverse, counts
    unit = _color.to_unit(pixels, "image")
    u = unit.view(np.uint32).astype(np.uint64)
    _, first_two = np.unique((u[:, 0] << np.uint64(32)) | u[:, 1], return_inverse=True)
    key = (first_two.ravel().astype(np.uint64) << np.uint64(32)) | u[:, 2]
    if return_inverse:
        _, index, inverse, counts = np.unique(
            key, return_index=True, return_inverse=True, return_counts=True
        )
        return unit[index], inverse.ravel(), counts
    _, index, counts = np.unique(key, return_index=True, return_counts=True)
    return unit[index], None, counts


# ------------------------------------------------------------------------ 1-D maps
def _grid_positions(proj: np.ndarray, lo: np.ndarray, hi: np.ndarray, n_nodes: int) -> np.ndarray:
    """Positions of the rows of ``proj`` ``(D, M)`` on one flat grid of ``D * n_nodes`` nodes.

    Row ``k`` spans ``[lo[k], hi[k]]`` on nodes ``k * n_nodes ... (k + 1) *
    n_nodes - 1`` (values outside are clipped to the ends), so counting and
    lookups run once over all rows. float32, like ``proj``.
    """
    n_rows = proj.shape[0]
    scale = (n_nodes - 1) / np.maximum(hi - lo, 1e-6)
    start = np.arange(n_rows) * n_nodes
    t = proj * scale.astype(np.float32)[:, None]
    t += (start - lo * scale).astype(np.float32)[:, None]
    return np.clip(t, start[:, None], (start + n_nodes - 1)[:, None], out=t)


def _grid_counts(t: np.ndarray, flat_weights: np.ndarray, n_nodes: int) -> np.ndarray:
    """Weighted counts ``(D, n_nodes)`` of flat grid positions ``t`` at their nearest node.

    ``flat_weights`` holds one weight per element of ``t`` (row-major).
    """
    nearest = np.rint(t).astype(np.intp).ravel()
    counts = np.bincount(nearest, weights=flat_weights, minlength=t.shape[0] * n_nodes)
    return counts.reshape(t.shape[0], n_nodes)


def _rotate(r: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``r @ x`` for a 3x3 ``r`` and a wide ``(3, M)`` ``x``, without BLAS.

    einsum's own loop: no thread start-up of a BLAS call for a 3x3 product,
    and the same bits for the same column wherever it sits.
    """
    return np.einsum("ij,jk->ik", r, x)


def _displacements(
    x: np.ndarray,
    r: np.ndarray,
    flat_weights: np.ndarray,
    ref_quantiles: np.ndarray,
    probs: np.ndarray,
    n_nodes: int,
) -> np.ndarray:
    """Moves ``(3, U)`` along the rows of ``r`` that quantile-match the projections ``r @ x``.

    ``x`` holds the colours as columns, ``flat_weights`` their weights
    repeated for each row of ``r`` (``np.tile(weights, 3)``), and
    ``ref_quantiles`` ``(3, n_q)`` the reference sketches along the rows, at
    the probabilities ``probs`` (:func:`_reference.probability_grid`).

    Each projection is placed on an ``n_nodes`` grid spanning the projection
    of the colours' bounding box, every weight shared linearly between its two
    neighbouring nodes. A node's matched value is the reference quantile at
    the node's weighted midpoint CDF, and a colour's move is interpolated
    linearly between the moves of its two nodes. A colour of weight ``h``
    thus maps to the middle of its own probability mass wherever it sits
    between nodes, so the map is continuous in the colours (counting at the
    nearest node would make heavy colours jump as they cross a node, and
    iterations would amplify the jumps). The grid scale is folded into the
    rotation, so the projections themselves are never formed.
    """
    n_axes = r.shape[0]
    r64 = r.astype(np.float64)
    x_lo, x_hi = x.min(axis=1).astype(np.float64), x.max(axis=1).astype(np.float64)
    lo = np.minimum(r64 * x_lo, r64 * x_hi).sum(axis=1)
    hi = np.maximum(r64 * x_lo, r64 * x_hi).sum(axis=1)
    pad = 1e-3 * (hi - lo) + 1e-3  # keeps float32 rounding inside the grid
    lo -= pad
    hi += pad
    step = (hi - lo) / (n_nodes - 1)
    start = np.arange(n_axes) * n_nodes  # row k uses nodes k * n_nodes ...
    t = _rotate((r64 / step[:, None]).astype(np.float32), x)
    t += (start - lo / step).astype(np.float32)[:, None]
    whole = np.floor(t)
    t -= whole  # now the fraction between nodes i and i + 1
    i = whole.astype(np.intp).ravel()
    frac = t.ravel()
    upper = flat_weights * frac
    size = n_axes * n_nodes + 1
    counts = np.bincount(i, weights=flat_weights - upper, minlength=size)
    counts[1:] += np.bincount(i, weights=upper, minlength=size - 1)
    # (weights shared between nodes: fractional counts)
    cdf = _reference.midpoint_cdf(counts[:-1].reshape(n_axes, n_nodes), fractional=True)
    moves = np.stack([np.interp(cdf[k], probs, ref_quantiles[k]) for k in range(n_axes)])
    moves -= lo[:, None] + np.arange(n_nodes) * step[:, None]  # matched value - node value
    flat_moves = moves.astype(np.float32).ravel()
    # no colour sits on a row's last node (the pad), so the step it reads is never used
    steps = np.diff(flat_moves, append=flat_moves[-1:])
    out = flat_moves[i]
    frac *= steps[i]
    out += frac
    return out.reshape(n_axes, -1)


# ------------------------------------------------------------------ smooth fields
#: the eight corners of a grid cell, as offsets along (axis 0, axis 1, axis 2)
_CORNERS = np.array([[i >> 2, (i >> 1) & 1, i & 1] for i in range(8)])


def _corner_weights(t: np.ndarray, dims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat node indices ``(8, M)`` and trilinear weights ``(8, M)`` of points on a grid.

    ``t`` ``(3, M)`` holds float32 grid coordinates, at least 0 and below
    ``dims - 1`` along each axis (``dims`` nodes; the last axis varies fastest).
    The indices are int32 where the grid's nodes fit in it (half the memory).
    """
    index = np.int32 if int(np.prod(dims, dtype=np.int64)) < 2**31 else np.intp
    dims = dims.astype(index)
    cell = t.astype(index)  # (truncation: coordinates are not negative)
    frac = t - cell
    both = np.stack([1 - frac, frac])  # (2, 3, M): weights of the lower and upper node
    wts = both[:, None, None, 0] * both[None, :, None, 1] * both[None, None, :, 2]
    base = (cell[0] * dims[1] + cell[1]) * dims[2] + cell[2]
    steps = ((_CORNERS[:, 0] * dims[1] + _CORNERS[:, 1]) * dims[2] + _CORNERS[:, 2]).astype(index)
    return base + steps[:, None], wts.reshape(8, -1)


#: the 1-D Gaussian of the field smoothing
_TAPS = np.exp(-0.5 * (np.arange(-_FIELD_RADIUS, _FIELD_RADIUS + 1) / FIELD_SIGMA) ** 2)
_TAPS = (_TAPS / _TAPS.sum()).astype(np.float32)


def _blur(acc: np.ndarray) -> np.ndarray:
    """Gaussian blur of a ``(Z, Y + R, X, C)`` float32 grid along its three axes, zero outside.

    The ``R = _FIELD_RADIUS`` spare rows after each slab of the first axis
    keep one 2-D pass along the second axis from mixing slabs (they receive
    what spills over and are never read).
    """
    # one 1-D filter per pass (sepFilter2D would add a pass of its 1-tap partner)
    along_rows, along_columns = _TAPS[None, :], _TAPS[:, None]
    zero = cv2.BORDER_CONSTANT
    z, yp, x, c = acc.shape
    out = cv2.filter2D(acc.reshape(z * yp, x, c), -1, along_rows, borderType=zero)
    out = cv2.filter2D(out.reshape(z * yp, x * c), -1, along_columns, borderType=zero)
    out = cv2.filter2D(out.reshape(z, yp * x * c), -1, along_columns, borderType=zero)
    return out.reshape(acc.shape)


#: points per row of the maps given to ``cv2.remap`` (whose maps are at most 32767 wide)
_MAP_WIDTH = 4096


def read_grid(grid: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of a float32 grid at coordinates ``t`` ``(3, M)``; ``(M, 3)``.

    ``grid`` is ``(A, S, C, 3)``: ``A`` slabs of ``S`` rows (the second axis)
    and ``C`` columns (the third axis). Two bilinear ``cv2.remap`` lookups in the slabs
    stacked as one image, blended along the first axis. ``remap`` resolves
    positions to 1/32 of a cell. Coordinates must lie below the last node
    along every axis.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.methods.lab import read_grid
    >>> grid = np.arange(24, dtype=np.float32).reshape(2, 2, 2, 3)
    >>> read_grid(grid, np.array([[0.5], [0.5], [0.5]], dtype=np.float32))  # the cell's centre
    array([[10.5, 11.5, 12.5]], dtype=float32)
    """
    a, rows_per_slab, c, _ = grid.shape
    image = grid.reshape(a * rows_per_slab, c, 3)
    m = t.shape[1]
    # remap's maps are at most 32767 wide: the points go as rows of _MAP_WIDTH
    shape = (-(-m // _MAP_WIDTH), _MAP_WIDTH) if m > _MAP_WIDTH else (1, m)
    size = shape[0] * shape[1]
    slab = t[0].astype(np.int32)
    frac = np.zeros(size, dtype=np.float32)
    np.subtract(t[0], slab, out=frac[:m])
    rows = np.zeros(size, dtype=np.float32)
    np.multiply(slab, np.float32(rows_per_slab), out=rows[:m], casting="unsafe")
    rows[:m] += t[1]
    cols = np.zeros(size, dtype=np.float32)
    cols[:m] = t[2]
    rows, cols = rows.reshape(shape), cols.reshape(shape)
    lower = cv2.remap(image, cols, rows, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    rows += np.float32(rows_per_slab)
    upper = cv2.remap(image, cols, rows, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # lower + frac * (upper - lower), with frac as three planes (numpy's broadcast over a
    # last axis of 3 is slow)
    cv2.subtract(upper, lower, dst=upper)
    cv2.multiply(upper, cv2.merge([frac.reshape(shape)] * 3), dst=upper)
    cv2.add(upper, lower, dst=upper)
    return upper.reshape(-1, 3)[:m]


def smooth_displacements(x: np.ndarray, moves: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The moves ``(3, M)`` of weighted CIELAB colours ``x`` ``(3, M)``, made a smooth field.

    The weighted moves and the weights are counted at the nearest node of a
    :data:`FIELD_NODES`-per-axis grid over :data:`_FIELD_BOX`, both are
    blurred by a Gaussian of :data:`FIELD_SIGMA` cells, and their ratio (a
    normalised convolution: the locally weighted mean move) is read back at
    every colour by trilinear interpolation, so the field is continuous in
    the colours: nearby colours move alike, whatever the 1-D matches did to
    each on its own. Only the part of the grid the colours occupy (and the
    kernel's reach around it) is built, which gives the same result as the
    whole grid. float32 throughout.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.methods.lab import smooth_displacements
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform([40, -10, -10], [60, 10, 10], size=(200, 3)).T.astype(np.float32)
    >>> w = np.ones(200, dtype=np.float32)
    >>> rigid = np.broadcast_to(np.float32([[1.0], [2.0], [0.0]]), x.shape)
    >>> bool(np.allclose(smooth_displacements(x, rigid, w), rigid, atol=1e-3))  # kept
    True
    >>> jitter = rng.choice(np.float32([-1, 1]), size=x.shape)  # neighbours pulled apart
    >>> bool(np.abs(smooth_displacements(x, jitter, w)).mean() < 0.3)  # averaged out
    True
    """
    n, reach = FIELD_NODES, _FIELD_RADIUS
    lo, hi = _FIELD_BOX
    weights = np.asarray(weights, dtype=np.float64)  # (bincount's own: others cast slowly)
    scale = ((n - 1) / (hi - lo))[:, None]
    t = (x - lo[:, None]) * scale
    np.clip(t, 0, np.float32(n - 1 - 1e-3), out=t)
    start = np.maximum(np.floor(t.min(axis=1)).astype(np.intp) - reach, 0)
    stop = np.minimum(np.floor(t.max(axis=1)).astype(np.intp) + 1 + reach, n - 1)
    t -= start[:, None].astype(np.float32)
    z, y, w = stop - start + 1
    # the nearest node's flat index, in float32 (exact: the grid has far fewer than 2**24
    # nodes) and made an integer once
    near = np.rint(t)
    node = near[0] * np.float32(y + reach)
    node += near[1]
    node *= np.float32(w)
    node += near[2]
    node = node.astype(np.intp)
    size = z * (y + reach) * w
    acc = np.empty((z, y + reach, w, 4), dtype=np.float32)
    flat = acc.reshape(size, 4)
    flat[:, 3] = np.bincount(node, weights=weights, minlength=size)
    for c in range(3):
        flat[:, c] = np.bincount(node, weights=weights * moves[c], minlength=size)
    acc = _blur(acc).reshape(z * (y + reach), w, 4)
    # the ratio by planes (numpy's broadcast over a last axis of 3 is slow); nodes that
    # received nothing hold 0 / 0, which their tiny floor makes 0
    planes = cv2.split(acc)
    weight = np.maximum(planes[3], np.float32(1e-30))
    field = cv2.merge([cv2.divide(plane, weight) for plane in planes[:3]])
    return read_grid(field.reshape(z, y + reach, w, 3), t).T


def transfer(
    lab: np.ndarray,
    weights: np.ndarray,
    state: dict,
    n_iter: int,
    joint: bool = True,
    n_refine: int = 0,
) -> np.ndarray:
    """Move weighted LAB colours ``(U, 3)`` towards the reference of ``state``.

    ``joint=True``: ``n_iter`` iterations of distribution transfer whose
    moves are smoothed (:func:`smooth_displacements`), then ``n_refine``
    whose 1-D matches are applied as they are, cycling through
    ``state["rotations"]``. ``joint=False``: one per-axis quantile match
    along the LAB axes (the first rotation). Returns float32 ``(U, 3)``.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.methods.lab import learn_state, transfer
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal([60, 20, -10], [5, 8, 3], size=(5000, 3)).astype(np.float32)
    >>> state = learn_state([ref], [np.ones(5000)], np.random.default_rng(1), 10, 256)
    >>> src = rng.normal([40, 0, 0], [10, 4, 4], size=(3000, 3)).astype(np.float32)
    >>> out = transfer(src, np.ones(3000), state, n_iter=10)
    >>> bool(np.abs(out.mean(axis=0) - [60, 20, -10]).max() < 0.5)
    True
    """
    # (both are read at transform time: set_params after fit is checked here)
    if not 1 <= n_iter <= MAX_ITERATIONS:
        raise ValueError(f"n_iter must be in [1, {MAX_ITERATIONS}]; got {n_iter}")
    if not 0 <= n_refine <= MAX_ITERATIONS:
        raise ValueError(f"n_refine must be in [0, {MAX_ITERATIONS}]; got {n_refine}")
    rotations = state["rotations"].astype(np.float32)
    quantiles = state["projected_quantiles"]
    x = np.array(np.asarray(lab).T, dtype=np.float32, order="C")  # (3, U), a copy
    # (float64 weights: bincount casts any other dtype to float64 first, slowly)
    weights64 = np.asarray(weights, dtype=np.float64)
    flat_weights = np.tile(weights64, 3)
    probs = _reference.probability_grid(quantiles.shape[1])
    smoothed, total = (n_iter, n_iter + n_refine) if joint else (0, 1)
    for it in range(total):
        k = it % len(rotations)
        r = rotations[k]
        q = quantiles[3 * k : 3 * k + 3]
        moves = _displacements(x, r, flat_weights, q, probs, SOURCE_GRID_NODES)
        moves = _rotate(r.T, moves)
        x += smooth_displacements(x, moves, weights64) if it < smoothed else moves
    return np.ascontiguousarray(x.T)


# ------------------------------------------------------------------ colour lookup
def cell_positions(image: np.ndarray, name: str = "X") -> np.ndarray:
    """Positions ``(..., 3)`` float32 of RGB colours on the summary grid (``[0, 1]`` times 63.75).

    8-bit code ``k`` sits at ``k / 4``, so cell ``i`` (:data:`SUMMARY_CELLS`
    per axis) holds codes ``4 i .. 4 i + 3``; other dtypes sit where their
    fraction of full scale does (floats must be in ``[0, 1]``, as
    :func:`_color.to_unit` checks).

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.methods.lab import cell_positions
    >>> cell_positions(np.array([[0, 4, 255]], dtype=np.uint8))
    array([[ 0.  ,  1.  , 63.75]], dtype=float32)
    >>> cell_positions(np.array([[0, 4 * 257, 65535]], dtype=np.uint16)).round(4)
    array([[ 0.  ,  1.  , 63.75]], dtype=float32)
    """
    scale = np.float32(_CELL_SCALE)
    if image.dtype == np.uint8:
        table = np.arange(256, dtype=np.float32) * np.float32(_CELL_SCALE / 255)
        flat = image.reshape(-1, image.shape[-1])
        return cv2.LUT(flat[:, None, :], table).reshape(image.shape)
    if image.dtype == np.uint16:
        table = (np.arange(65536) * (_CELL_SCALE / 65535)).astype(np.float32)
        return np.take(table, image)
    unit = _color.to_unit(image, name)
    unit *= scale
    return unit


def colour_summary(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The weighted summary of ``(N, 3)`` colour positions (:func:`cell_positions`).

    Returns the occupied cells' flat indices ``(M,)`` (over a
    :data:`SUMMARY_CELLS`-cubed grid), their pixel counts ``(M,)`` and the mean
    position of their colours ``(M, 3)`` float32.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.methods.lab import cell_positions, colour_summary
    >>> px = np.array([[0, 0, 0], [2, 0, 0], [255, 255, 255]], dtype=np.uint8)
    >>> cells, counts, means = colour_summary(cell_positions(px))
    >>> cells.tolist(), counts.tolist(), means.tolist()
    ([0, 262143], [2, 1], [[0.25, 0.0, 0.0], [63.75, 63.75, 63.75]])
    """
    return summarise([positions])


def summarise(parts: Collection[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`colour_summary` of the pixels of several parts (bands of an image), in two passes.

    Each part is ``(N_i, 3)``: uint8 codes (summarised from the codes
    themselves, exactly) or float32 :func:`cell_positions`. The first pass
    counts the pixels of every cell, the second sums the occupied cells'
    colours into arrays of the occupied cells only (a few thousand, where
    the grid has :data:`SUMMARY_CELLS` cubed), so that no full-grid float
    sums are formed or unpacked. ``parts`` may be any sized, re-iterable collection
    (such as :class:`_Bands`, which reads each band again for the second pass).
    """
    size = SUMMARY_CELLS**3
    counts = np.zeros(size, dtype=np.intp)
    if len(parts) == 1:  # (one part: read once, its keys kept for the second pass)
        parts = list(parts)
    keys = []
    for part in parts:
        key = _cell_keys(part)
        np.add.at(counts, key, 1)
        keys.append(key if len(parts) == 1 else None)
    occupied = np.flatnonzero(counts != 0)  # (numpy finds the True of a bool array fastest)
    # the grid's counts give way to the occupied cells' ranks (read only at occupied cells)
    counts, rank = counts[occupied], counts
    rank[occupied] = np.arange(occupied.size)
    sums = np.zeros((3, occupied.size))
    codes = False
    for part, key in zip(parts, keys):
        codes = part.dtype == np.uint8
        index = rank[_cell_keys(part) if key is None else key]
        (_add_code_sums if codes else _add_position_sums)(part, index, sums)
    del rank
    if codes:
        sums *= 0.25  # (code sums to position sums: exact)
    means = (sums / counts).T.astype(np.float32)
    return occupied, counts.astype(np.int64), means


def _cell_keys(part: np.ndarray) -> np.ndarray:
    """The flat summary cell (intp) of each of ``(N, 3)`` uint8 codes or float32 positions."""
    if part.dtype == np.uint8:  # cell = the code's top six bits (its position's floor)
        key = (part[:, 0] >> 2).astype(np.intp)
        for c in (1, 2):
            key <<= 6
            key |= part[:, c] >> 2
        return key
    n = SUMMARY_CELLS
    cells = part.astype(np.intp)  # (truncation: positions are not negative)
    key = cells[:, 0] * (n * n)
    key += cells[:, 1] * n
    key += cells[:, 2]
    return key


def _add_position_sums(positions: np.ndarray, index: np.ndarray, sums: np.ndarray) -> None:
    """Add float positions ``(N, 3)`` of the (compact) cells ``index`` to ``sums`` ``(3, M)``."""
    # float64 weights: bincount's own type (it casts others slowly)
    weights = np.ascontiguousarray(positions.T, dtype=np.float64)
    for c in range(3):
        sums[c] += np.bincount(index, weights=weights[c], minlength=sums.shape[1])


#: uint8 pixels per chunk of :func:`_add_code_sums`, so that a cell's code sums stay below 2**26
_CODE_CHUNK = 2**18
#: two code sums of a cell share one float64: ``high * 2**26 + low``, exact below 2**53
_PACK = float(2**26)


def _add_code_sums(pixels: np.ndarray, index: np.ndarray, sums: np.ndarray) -> None:
    """Add the 8-bit code sums of uint8 pixels ``(N, 3)`` of the cells ``index`` to ``sums``.

    ``sums`` is ``(3, M)`` float64 over the occupied cells (``index`` their
    compact numbers). R's and G's codes share one packed float64 weight
    (``R * 2**26 + G``), so two ``bincount`` calls per chunk carry the three
    sums; a chunk's sums per cell stay below 2**26, so the packed sums are
    exact integers and come apart exactly.
    """
    m = sums.shape[1]
    for start in range(0, len(pixels), _CODE_CHUNK):
        part, idx = pixels[start : start + _CODE_CHUNK], index[start : start + _CODE_CHUNK]
        weight = part[:, 0].astype(np.float64)
        weight *= _PACK
        weight += part[:, 1]
        packed = np.bincount(idx, weights=weight, minlength=m)
        high = np.floor(packed / _PACK)
        sums[0] += high
        high *= _PACK
        packed -= high
        sums[1] += packed
        weight[:] = part[:, 2]
        sums[2] += np.bincount(idx, weights=weight, minlength=m)


def colour_table(means: np.ndarray, counts: np.ndarray, moves: np.ndarray) -> np.ndarray:
    """The lookup table ``(n, n, n, 3)`` of RGB moves, ``n = SUMMARY_CELLS + 1`` nodes per axis.

    Each summary colour (mean position ``means``, weight ``counts``) shares
    its move ``moves`` ``(M, 3)`` among the eight nodes of its cell with
    trilinear weights; a node's value is the weighted mean of what it
    received (0 where it received nothing, never read for a counted colour).
    The axes are R, B, G (the layout :func:`read_grid` takes).

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.methods.lab import colour_table
    >>> means = np.array([[0.5, 0.5, 0.5]], dtype=np.float32)  # the middle of cell (0, 0, 0)
    >>> table = colour_table(means, np.array([10]), np.array([[0.1, 0.0, -0.1]], np.float32))
    >>> table.shape, table[1, 1, 1].tolist(), table[2, 2, 2].tolist()
    ((65, 65, 65, 3), [0.10000000149011612, 0.0, -0.10000000149011612], [0.0, 0.0, 0.0])
    """
    n = SUMMARY_CELLS + 1
    idx, wts = _corner_weights(np.ascontiguousarray(means[:, [0, 2, 1]].T), np.array([n, n, n]))
    wts *= counts.astype(np.float64)  # (float64: bincount's own)
    idx = idx.ravel()
    # sums over the nodes that receive anything only, numbered compactly (the grid-sized
    # work arrays are gone before the table is made)
    used = np.zeros(n**3, dtype=bool)
    used[idx] = True
    nodes = np.flatnonzero(used)
    del used
    rank = np.empty(n**3, dtype=np.int32)  # (read only at used nodes; 65**3 fit in int32)
    rank[nodes] = np.arange(nodes.size, dtype=np.int32)
    idx = rank[idx]
    del rank
    idx = idx.astype(np.intp)  # (bincount's own type: not cast again at each call)
    total = np.bincount(idx, weights=wts.ravel(), minlength=nodes.size)
    received = total > 0
    values = np.empty((3, nodes.size), dtype=np.float32)  # (planes: fast divisions)
    weights = np.empty_like(wts)  # (one buffer for the three channels' weights)
    for c in range(3):
        np.multiply(wts, moves[:, c], out=weights)
        values[c] = np.bincount(idx, weights=weights.ravel(), minlength=nodes.size)
        np.divide(values[c], total, out=values[c], where=received)
    del idx, wts, weights, total, received
    table = np.zeros((n**3, 3), dtype=np.float32)
    for c in range(3):  # (faster than one scatter of the transposed rows)
        table[nodes, c] = values[c]
    return table.reshape(n, n, n, 3)


def look_up(table: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The moves ``(H, W, 3)`` of a :func:`colour_table` at :func:`cell_positions` ``(H, W, 3)``.

    Trilinear interpolation (:func:`read_grid`): 8-bit colours sit on nodes,
    halves or quarters of cells and are read exactly.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.methods.lab import cell_positions, look_up
    >>> table = np.zeros((65, 65, 65, 3), dtype=np.float32)
    >>> table[1, 0, 0] = [0.4, 0.0, 0.0]  # a move at red code 4 (axes: R, B, G)
    >>> look_up(table, cell_positions(np.array([[[2, 0, 0], [4, 0, 0]]], np.uint8)))[0]
    array([[0.2, 0. , 0. ],
           [0.4, 0. , 0. ]], dtype=float32)
    """
    t = positions.reshape(-1, 3).T[[0, 2, 1]]
    return read_grid(table, t).reshape(positions.shape)


# ------------------------------------------------------------------------- learning
def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` rotations ``(n, 3, 3)``: the identity, then ``n - 1`` uniform random ones.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.methods.lab import random_rotations
    >>> r = random_rotations(np.random.default_rng(0), 4)
    >>> r.shape, np.allclose(r @ r.transpose(0, 2, 1), np.eye(3))
    ((4, 3, 3), True)
    """
    out = np.empty((n, 3, 3))
    out[0] = np.eye(3)
    if n > 1:
        from scipy.stats import special_ortho_group  # (slow to import: on use)

        out[1:] = special_ortho_group.rvs(3, size=n - 1, random_state=rng).reshape(n - 1, 3, 3)
    return out


def learn_state(
    labs: list[np.ndarray],
    weights: list[np.ndarray],
    rng: np.random.Generator | None,
    n_rotations: int,
    n_quantiles: int,
    rotations: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The reference state of weighted LAB colours (see the module docstring).

    ``rotations`` are reused when given (``partial_fit``); otherwise
    ``n_rotations`` are drawn from ``rng``. Each direction is histogrammed
    on a fixed grid spanning the projection of the LAB gamut box, so the
    colours of many images are accumulated without being kept.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.methods.lab import learn_state
    >>> lab = np.array([[50.0, 0.0, 0.0], [70.0, 10.0, -5.0]], dtype=np.float32)
    >>> state = learn_state([lab], [np.array([3, 1])], np.random.default_rng(0), 5, 64)
    >>> state["rotations"].shape, state["projected_quantiles"].shape
    ((5, 3, 3), (15, 64))
    >>> state["projected_quantiles"][0, [0, -1]].round(2)  # L along the first (identity) rotation
    array([50., 70.])
    """
    if rotations is None:
        rotations = random_rotations(rng, n_rotations)
    directions = rotations.reshape(-1, 3)
    # projection of the box on each direction: the grid bounds
    lo = np.minimum(directions * _LAB_BOX[0], directions * _LAB_BOX[1]).sum(axis=1)
    hi = np.maximum(directions * _LAB_BOX[0], directions * _LAB_BOX[1]).sum(axis=1)
    n = REFERENCE_GRID_NODES
    dirs32 = directions.astype(np.float32)
    flat_ws = [np.tile(np.asarray(w, dtype=np.float64), 3) for w in weights]
    labs_t = [np.ascontiguousarray(np.asarray(lab, dtype=np.float32).T) for lab in labs]
    probs = _reference.probability_grid(n_quantiles)
    quantiles = np.empty((len(directions), n_quantiles))
    for k in range(len(rotations)):  # 3 directions at a time: memory of one rotation's grid
        sl = slice(3 * k, 3 * k + 3)
        counts = np.zeros((3, n))
        for lab_t, flat_w in zip(labs_t, flat_ws):
            t = _grid_positions(_rotate(dirs32[sl], lab_t), lo[sl], hi[sl], n)
            counts += _grid_counts(t, flat_w, n)
        for d in range(3):
            nodes = np.linspace(lo[3 * k + d], hi[3 * k + d], n)
            knots = _reference.histogram_quantile_points(counts[d], nodes)
            quantiles[3 * k + d] = np.interp(probs, *knots)
    return {"rotations": rotations, "projected_quantiles": quantiles}


# -------------------------------------------------------------------------- regrain
def _shifted(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The right, down, left and up neighbours of every pixel (edges replicated)."""
    p = cv2.copyMakeBorder(a, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    if p.ndim < a.ndim:
        p = p[:, :, None]
    return p[1:-1, 2:], p[2:, 1:-1], p[1:-1, :-2], p[:-2, 1:-1]


def _regrain_level(
    out: np.ndarray, source: np.ndarray, colour: np.ndarray, n_steps: int, level: int
) -> np.ndarray:
    """Relaxation steps of the regrain energy at one scale (Pitie 2007, eq. 20)."""
    right, down, left, up = _shifted(source)
    grad = np.sqrt(((right - left) ** 2 + (down - up) ** 2).sum(axis=2))
    psi = np.minimum(grad * np.float32(256 / 5), 1.0)[:, :, None]
    phi = (np.float32(30 * 2.0**-level) / (1 + 10 * grad)).astype(np.float32)
    phis = [(s + phi)[:, :, None] / 2 for s in _shifted(phi)]
    den = psi + sum(phis) + np.float32(1e-6)
    # the constant part of the numerator: colour fidelity and source gradients
    const = psi * colour
    for w, s in zip(phis, (right, down, left, up)):
        const += w * (source - s)
    rho = np.float32(0.2)
    gain = (1 - rho) / den
    for _ in range(n_steps):
        num = const.copy()
        for w, s in zip(phis, _shifted(out)):
            num += w * s
        out = num * gain + rho * out
    return out


def regrain(source: np.ndarray, colour: np.ndarray, *, smoothness: float = 1.0) -> np.ndarray:
    """Pitie's regrain: the colours of ``colour`` with the gradients of ``source``.

    Both are float32 ``(H, W, 3)`` images in ``[0, 1]``. Solves, coarse to
    fine (halving down to about 20 pixels), for the image whose gradients
    follow the source's where it is smooth and whose values follow ``colour``
    where the source has edges (Pitie, Kokaram & Dahyot 2007, section 6).
    Returns float32 in ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.methods.lab import regrain
    >>> rng = np.random.default_rng(0)
    >>> src = rng.random((48, 48, 3), dtype=np.float32)
    >>> out = regrain(src, np.clip(src * 0.5 + 0.3, 0, 1))
    >>> out.shape, out.dtype, bool(out.min() >= 0 and out.max() <= 1)
    ((48, 48, 3), dtype('float32'), True)
    """
    steps = [4, 16, 32, 64, 64, 64]

    def solve(out, src, col, level):
        h, w = src.shape[:2]
        h2, w2 = (h + 1) // 2, (w + 1) // 2
        if level + 1 < len(steps) and h2 > 20 and w2 > 20:
            small = [
                cv2.resize(a, (w2, h2), interpolation=cv2.INTER_LINEAR) for a in (out, src, col)
            ]
            out = cv2.resize(solve(*small, level + 1), (w, h), interpolation=cv2.INTER_LINEAR)
        return _regrain_level(out, src, col, steps[level], level)

    source = np.ascontiguousarray(source, dtype=np.float32)
    colour = np.ascontiguousarray(colour, dtype=np.float32)
    out = solve(source.copy(), source, colour, 0)
    return np.clip(out, 0.0, 1.0, out=out)


class _Bands:
    """The pixels of an image's bands of rows for :func:`summarise`, read afresh on each pass.

    uint8 images give their codes, others their :func:`cell_positions`;
    with a mask, only the masked pixels.
    """

    def __init__(self, image: np.ndarray, mask: np.ndarray | None, bands: list[slice]) -> None:
        self.image, self.mask, self.bands = image, mask, bands

    def __len__(self) -> int:
        return len(self.bands)

    def __iter__(self) -> Iterator[np.ndarray]:
        for rows in self.bands:
            band = self.image[rows]
            if band.dtype != np.uint8:
                band = cell_positions(band, "X")
            yield band.reshape(-1, 3) if self.mask is None else band[self.mask[rows]]


# --------------------------------------------------------------------------- method
def _pixels(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    return image.reshape(-1, 3) if mask is None else image[mask]


@register
class Lab(MatchingMethod):
    """Joint colour matching in CIELAB by iterative distribution transfer."""

    name = "lab"
    summary = "joint colour matching in CIELAB: colour combinations follow the reference"
    params = (
        N_QUANTILES,
        Param(
            "n_iter",
            12,
            [Interval(Integral, 1, MAX_ITERATIONS, closed="both")],
            "Iterations of the sliced transport (random projections of CIELAB) whose moves "
            "are smoothed over colour space.",
            f"int in [1, {MAX_ITERATIONS}]",
        ),
        Param(
            "n_refine",
            10,
            [Interval(Integral, 0, MAX_ITERATIONS, closed="both")],
            "Final iterations of the transport whose 1-D matches are applied unsmoothed "
            "(closer to the reference; 0 for the smoothed transport only).",
            f"int in [0, {MAX_ITERATIONS}]",
        ),
        Param(
            "lab_mode",
            "joint",
            [StrOptions({"joint", "marginal"})],
            "Match the joint 3-D colour distribution, or each CIELAB channel on its own.",
            '{"joint", "marginal"}',
        ),
        Param(
            "regrain",
            False,
            ["boolean"],
            "Restore the source's fine structure after the colour transfer (Pitie's regrain).",
            "bool",
        ),
    )
    raw_values = False  # colours are read on each dtype's full scale
    state_kind = "lab"
    #: reference="barycenter": the quantiles along every (shared) projection axis, averaged
    barycenter_keys = ("projected_quantiles",)

    def check_channels(self, n_channels: int, name: str) -> None:
        if n_channels != 3:
            raise ValueError(
                f"method='lab' needs RGB images with 3 channels; {name} has {n_channels} "
                f"channel(s)"
            )

    def learn(self, batch, params: dict[str, Any], rng, like=None) -> dict:
        _color.check_rgb_dtype(batch.dtype, "X")
        labs, weights = [], []
        for i, image in enumerate(batch.images):
            mask = None if batch.masks is None else batch.masks[i]
            colours, _, counts = unique_colours(_pixels(image, mask), return_inverse=False)
            labs.append(_color.rgb_to_lab(colours, "X"))
            weights.append(counts)
        state = learn_state(
            labs,
            weights,
            rng,
            params["n_iter"] + params["n_refine"],
            params["n_quantiles"],
            rotations=None if like is None else like["rotations"],
        )
        state["dtype"] = np.array(batch.dtype.name)
        return state

    def merge(self, a: dict, na: int, b: dict, nb: int, params: dict[str, Any]) -> dict:
        if not np.array_equal(a["rotations"], b["rotations"]):
            raise ValueError("lab states can only be merged when learned with the same rotations")
        merged = _reference.merge(
            {"quantiles": a["projected_quantiles"], "dtype": a["dtype"]},
            na,
            {"quantiles": b["projected_quantiles"], "dtype": b["dtype"]},
            nb,
        )
        return {
            "rotations": a["rotations"],
            "projected_quantiles": merged["quantiles"],
            "dtype": a["dtype"],
        }

    def check_state(self, state: Any, n_channels: int | None) -> None:
        """Raise ``ValueError`` unless ``state`` is a well-formed lab state (model loading)."""
        if n_channels not in (None, 3):
            raise ValueError(f"a lab state needs n_channels_ 3; got {n_channels}")
        keys = set(state) if isinstance(state, dict) else None
        if keys != {"dtype", "rotations", "projected_quantiles"}:
            got = sorted(keys) if keys is not None else type(state).__name__
            raise ValueError(
                f"a lab state must hold 'dtype', 'rotations' and 'projected_quantiles'; got {got}"
            )
        _reference.dtype_from_name(state["dtype"], "state['dtype']")
        rot = state["rotations"]
        if not isinstance(rot, np.ndarray) or rot.ndim != 3 or rot.shape[1:] != (3, 3):
            raise ValueError(
                f"state['rotations'] must have shape (K, 3, 3); got {getattr(rot, 'shape', rot)}"
            )
        if rot.dtype.kind != "f" or not np.allclose(
            rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-6
        ):
            raise ValueError("state['rotations'] must hold orthonormal 3x3 matrices")
        _reference.check_quantile_rows(
            state["projected_quantiles"], "state['projected_quantiles']", 3 * len(rot)
        )

    def prepare(self, state: dict, params: dict[str, Any]) -> dict:
        """Nothing: the projected quantiles are the knots, on the probability grid."""
        return {}

    def apply(self, image, mask, state, tables, params, out) -> None:
        # by bands of rows: the work memory is a band's (a part of a small image, bounded for a
        # large one)
        bands = row_bands(image.shape, *_BAND_PIXELS)
        _, counts, means = summarise(_Bands(image, mask, bands))
        if counts.size == 0:  # (nothing masked: nothing changes)
            out[...] = image
            return
        lab = _color.rgb_to_lab(means * np.float32(1 / _CELL_SCALE), "X")
        joint = params["lab_mode"] == "joint"
        moved = transfer(lab, counts, state, params["n_iter"], joint, params["n_refine"])
        # the moves in RGB, as differences of one conversion: cancels its round-trip error
        table = colour_table(means, counts, _color.lab_to_rgb(moved) - _color.lab_to_rgb(lab))
        del means, counts, lab, moved  # (the summary's arrays: not alive during the lookup)
        scale = np.float32(_color.full_scale(image.dtype))
        colours = np.empty(image.shape, np.float32) if params["regrain"] else None
        for rows in row_bands(image.shape, *_LOOKUP_PIXELS):
            positions = cell_positions(image[rows], "X")
            matched = look_up(table, positions)
            positions *= np.float32(1 / _CELL_SCALE)  # now the source in [0, 1]
            matched += positions
            np.clip(matched, 0.0, 1.0, out=matched)
            if colours is not None:
                colours[rows] = matched
                continue
            if scale != 1:
                matched *= scale
            band_mask = None if mask is None else mask[rows]
            finish(image[rows], matched, band_mask, params["strength"], out[rows])
        if colours is not None:
            matched = regrain(_color.to_unit(image, "X"), colours)
            if scale != 1:
                matched *= scale
            finish(image, matched, mask, params["strength"], out)
