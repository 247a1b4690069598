"""Torch kernels over the fitted tables: whole ``(N, C, *spatial)`` batches on the tensor's device.

:class:`~histmatch_ml.HistogramMatcher` and
:class:`~histmatch_ml.RandomHistogramMatching` hand tensors here when their
method has a kernel (:data:`KERNEL_METHODS`: ``per_channel``, ``exact``
(:mod:`._torch_exact`) and ``landmarks`` (:mod:`._torch_landmarks`)) and the
tensor is on a device other than the CPU (CUDA, MPS): 2-D batches
``(N, C, H, W)`` and, with ``spatial_dims=3``, volumes ``(N, C, D, H, W)``.
CPU tensors and the other methods (``lab``, ``luminance``) go through the
numpy kernels on the CPU, one image at a time, as every other input does
(``per_channel`` reads CPU tensors' images as planes, without a layout
conversion: :func:`histmatch_ml.methods.per_channel.match_level_planes`). On
the CPU the numpy kernels are the faster ones, but for an augmenter's batch of
many small 8-bit images (:data:`CPU_BATCH_IMAGES`), which the numpy kernels
match one by one, each with its own reference and strength (``bench_augment.py``'s
row "torch uint8 batch 256x3x32x32 (CPU), one call"); set :data:`KERNELS_ON_CPU`
to run these kernels there for every tensor (the tests do, to compare them with
the numpy path).

``per_channel`` is the arithmetic of :mod:`histmatch_ml.methods.per_channel`
done for a whole batch at once:

* 8/16-bit integers: the level of every pixel, per-image histograms of all
  images and channels in one ``index_add_`` (each ``(image, channel)`` row at its
  own offset), per-image lookup tables over all levels (the midpoint CDF
  through the reference quantile knots, blended by strength, rounded and
  clipped), one gather;
* floats: each channel of each image placed on the grid of ``grid_cells``
  cells over its own range (:func:`~histmatch_ml.methods.per_channel.grid_cells`, in the
  image's float dtype), then the same histograms, tables and gather, and the
  strength blend in the image's dtype;
* float16/bfloat16 are matched as float32 and given back in their dtype.

Volumes are matched as their voxels (the method reads no neighbourhoods). The
knots are the fitted ``tables_`` (:func:`histmatch_ml._reference.quantile_points`
of each channel), turned into tensors once per device, dtype and scale rule
and kept on the estimator (:class:`DeviceTables`, which pickles empty). The
tables are ``np.interp``'s arithmetic in float64 over the same entries as the
numpy kernel's (all levels, or the occupied ones of a sparse histogram), with
its running maximum, so on the CPU the outputs equal the numpy path's bit for bit.

Batches are processed in chunks of images whose work arrays (cells and
tables) stay below :data:`CHUNK_ELEMENTS` elements. Float batches read their
per-image channel ranges back to the host once per batch (``2 N C`` numbers)
to place the grid as the numpy kernel does; ranges the numpy kernel treats
specially (wider than float32's range, subnormal) send the batch to the numpy
path, as do knots near float64's limits and 32/64-bit integer tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import _images, _reference
from ..methods._base import value_range
from ..methods.per_channel import _END, GRID_CELLS

__all__ = [
    "KERNEL_METHODS",
    "DeviceTables",
    "Knots",
    "RandomHistogramMatchingModule",
    "augment",
    "match_per_channel",
    "transform",
]

#: methods with a torch kernel
KERNEL_METHODS = frozenset({"per_channel", "exact", "landmarks"})
#: whether tensors on the CPU take the torch kernels too; by default they take the numpy
#: kernels, which are faster there (``benchmarks/README.md``, torch section), and the torch
#: kernels serve tensors on other devices (CUDA, MPS), which then never leave them
KERNELS_ON_CPU = False


#: an augmenter's CPU batch of at least this many 8-bit images of at most this many pixels
#: takes the per_channel torch kernel: one batched call, where the numpy kernels match
#: the images one at a time, each with its own reference and strength
CPU_BATCH_IMAGES, CPU_BATCH_PIXELS = 16, 64 * 64


def _kernel_applies(method: Any, x: Any, small_batches: bool = False) -> bool:
    """True when the ``(N, C, *spatial)`` tensor ``x`` (or None) is matched by a torch kernel:
    its method has one (:data:`KERNEL_METHODS`) and it lies on a device other than
    the CPU (or anywhere with :data:`KERNELS_ON_CPU`), or, with ``small_batches``, it
    is a CPU batch of small 8-bit images for ``per_channel`` (:data:`CPU_BATCH_IMAGES`)."""
    if x is None or method.name not in KERNEL_METHODS:
        return False
    if KERNELS_ON_CPU or x.device.type != "cpu":
        return True
    return (
        small_batches
        and method.name == "per_channel"
        and x.dtype in (torch.uint8, torch.int8)
        and x.shape[0] >= CPU_BATCH_IMAGES
        and math.prod(x.shape[2:]) <= CPU_BATCH_PIXELS
    )


#: the most elements of a chunk's work arrays (pixels times channels, or table entries)
CHUNK_ELEMENTS = 2**23

_FLOATS = (torch.float32, torch.float64)
_HALF = (torch.float16, torch.bfloat16)
_LEVELS = (torch.uint8, torch.int8, torch.uint16, torch.int16)


class DeviceTables(dict):
    """Knot tensors of a fitted estimator, keyed by ``(device, dtype, scale)``.

    Created at the first tensor transform and dropped at every fit; it pickles
    (and deep-copies) empty, so a pickled estimator never carries device memory.
    """

    def __reduce__(self) -> tuple:
        return (DeviceTables, ())


@dataclass
class Knots:
    """The reference quantile knots of ``R`` references of ``C`` channels, as tensors.

    Row ``r * C + c`` is channel ``c`` of reference ``r``, padded to ``K``
    knots by repeating its last one; ``last`` is the index of each row's last knot.
    """

    probs: torch.Tensor
    values: torch.Tensor
    last: torch.Tensor
    n_channels: int

    @classmethod
    def build(cls, tables: list[dict], device: Any) -> Knots | None:
        """Knots of every channel of every ``tables`` dict, or None when one is near
        float64's limits (the numpy kernel interpolates those on halved values)."""
        rows = []
        for t in tables:
            for c in range(len(t["values"])):
                p, v = _reference.quantile_points(t, c)
                with np.errstate(over="ignore"):
                    if len(v) > 1 and not np.isfinite((v[-1] - v[0]) * (len(v) - 1)):
                        return None
                rows.append((p, v))
        width = max(2, max(len(p) for p, _ in rows))
        probs, values = np.empty((len(rows), width)), np.empty((len(rows), width))
        for r, (p, v) in enumerate(rows):
            probs[r, : len(p)], probs[r, len(p) :] = p, p[-1]
            values[r, : len(v)], values[r, len(v) :] = v, v[-1]
        last = np.array([len(p) - 1 for p, _ in rows], dtype=np.int64)

        def dev(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        return cls(dev(probs), dev(values), dev(last), len(tables[0]["values"]))


def _at(flat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``flat[index]`` for a 1-D ``flat`` (``index_select``, the fastest gather on CPU)."""
    return flat.index_select(0, index.reshape(-1)).view(index.shape)


def _tables(
    counts: torch.Tensor, rows: torch.Tensor, knots: Knots, dense: bool = False
) -> torch.Tensor:
    """Tables ``(M, L)`` float64: the reference quantiles at each row's midpoint CDF.

    :func:`histmatch_ml._reference.midpoint_cdf` and a running maximum along
    each row, as :func:`histmatch_ml.methods.per_channel.cdf_lut` does: over
    all entries (``dense``, or a row with more than 1/8 of its entries
    occupied), else over the occupied entries only (the others are never read;
    those below a row's first occupied entry hold 0, as in the numpy table, so
    that no infinite entry takes the blend onto its overflow-safe form).
    """
    width = counts.shape[1]
    cum = counts.cumsum(-1, dtype=torch.float64)
    cdf = (cum + cum - counts) / (2 * cum[:, -1:])
    matched = sorted_quantiles(knots, rows, cdf)
    if not dense:
        used = counts > 0
        used |= (used.sum(1) > width // 8)[:, None]
        matched = torch.where(used, matched, -torch.inf)
        matched = torch.cummax(matched, -1).values
        return torch.where(matched == -torch.inf, 0.0, matched)
    return torch.cummax(matched, -1).values


def sorted_quantiles(knots: Knots, rows: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The quantile functions of knot rows ``rows`` ``(M,)`` at ``q`` ``(M, L)``, sorted rows.

    ``np.interp``'s arithmetic in float64: the segment ``p[j] <= q < p[j + 1]``,
    the value ``(v[j+1] - v[j]) / (p[j+1] - p[j]) * (q - p[j]) + v[j]``,
    ``v[j]`` at a knot, the end values outside. The segments are found by merging:
    each knot's place among its row's queries (``searchsorted`` of ``K``
    knots), a count of them, and a running sum give ``#{k: p[k] <= q}``.
    """
    probs, values = knots.probs.index_select(0, rows), knots.values.index_select(0, rows)
    last = knots.last.index_select(0, rows)[:, None]
    n_rows, width = q.shape
    places = torch.searchsorted(q, probs)
    hits = torch.zeros((n_rows, width + 1), dtype=torch.int64, device=q.device)
    hits.scatter_add_(1, places, torch.ones_like(places))
    below = hits[:, :width].cumsum(1)  # knots <= each query
    j = torch.minimum((below - 1).clamp(min=0), (last - 1).clamp(min=0))
    p0, p1 = probs.gather(1, j), probs.gather(1, j + 1)
    v0, v1 = values.gather(1, j), values.gather(1, j + 1)
    out = (v1 - v0) / (p1 - p0) * (q - p0) + v0
    out = torch.where(q == p0, v0, out)
    out = torch.where(q >= probs.gather(1, last), values.gather(1, last), out)
    return torch.where(q < probs[:, :1], values[:, :1], out)


def _blend(
    original: torch.Tensor, matched: torch.Tensor, strength: np.ndarray, dtype: torch.dtype
) -> torch.Tensor:
    """:func:`histmatch_ml.methods._base.blend` per image (leading axis), one strength each.

    An image with strength 1 keeps ``matched``; integers are rounded to
    nearest and clipped to ``dtype``'s range.
    """
    n = matched.shape[0]
    if not np.all(strength == 1.0):
        work = matched.dtype
        s = torch.as_tensor(strength, device=matched.device).to(work)
        s = s.view(n, *[1] * (matched.dim() - 1))
        o = original.to(work).expand_as(matched)
        limit = torch.finfo(work).max / 2
        big = (o.abs().reshape(n, -1).amax(1) >= limit) | (
            matched.abs().reshape(n, -1).amax(1) >= limit
        )
        if bool(big.any()):  # no term of this form exceeds the inputs' magnitude
            big = big.view(s.shape)
            blended = torch.where(big, matched * s + (1 - s) * o, (matched - o) * s + o)
        else:
            blended = (matched - o) * s + o
        matched = torch.where(s == 1, matched, blended)
    bounds = value_range(_numpy_dtype(dtype))
    if bounds is not None:
        matched = matched.round().clamp_(bounds[0], bounds[1])
    return matched.to(dtype)


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty(0, dtype=dtype).numpy().dtype


def _chunks(n: int, per_image: int) -> list[slice]:
    step = max(1, CHUNK_ELEMENTS // max(1, per_image))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


def _grid(x: torch.Tensor, mask: torch.Tensor | None, n_cells: int) -> tuple | None:
    """Per-image channel grids ``(lo, scale, single)`` of a float batch ``(N, C, P)``, or None.

    ``lo`` and ``scale`` ``(N, C)`` in the image dtype place each channel on
    the grid of ``n_cells`` cells as
    :func:`histmatch_ml.methods.per_channel.grid_cells` does; ``single`` marks
    channels holding one value. None for ranges that kernel handles on another path.
    """
    n, c = x.shape[:2]
    los, his = [], []
    for part in _chunks(n, c * x.shape[2]):
        xs = x[part]
        if mask is None:
            los.append(xs.amin(dim=2))
            his.append(xs.amax(dim=2))
        else:
            m = mask[part, None]
            los.append(torch.where(m, xs, torch.inf).amin(dim=2))
            his.append(torch.where(m, xs, -torch.inf).amax(dim=2))
    lo = torch.cat(los).cpu().double().numpy()
    hi = torch.cat(his).cpu().double().numpy()
    single = ~(hi > lo)
    span = n_cells - 2 + 2 * _END
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        width = np.where(single, 1.0, hi - lo)
        scale = span / width
    info = np.finfo(_numpy_dtype(x.dtype))
    if (width > info.max).any() or not np.isfinite(width).all() or (scale > info.max).any():
        return None
    scale[single] = 0.0
    dev = x.device
    return (
        torch.from_numpy(lo).to(dev, x.dtype),
        torch.from_numpy(scale).to(dev, x.dtype),
        torch.from_numpy(single).to(dev),
    )


def row_histograms(
    cells: torch.Tensor, counted: torch.Tensor | None, n_cells: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Histograms ``(M, n_cells)`` int64 of the int32 cells of rows ``(M, P)``, in one count.

    Each row's cells are counted at its own offset (``row * n_cells``); those
    placed cells (indices into the flattened ``(M, n_cells)`` tables) are
    returned too. ``counted`` ``(M, P)`` bool, when given, selects the pixels counted.
    """
    rows = cells.shape[0]
    device = cells.device
    placed = cells + (torch.arange(rows, device=device, dtype=torch.int32) * n_cells)[:, None]
    chosen = placed if counted is None else torch.where(counted, placed, rows * n_cells)
    counts = torch.zeros(rows * n_cells + 1, dtype=torch.int64, device=device)
    ones = torch.ones(1, dtype=torch.int64, device=device).expand(chosen.numel())
    counts.index_add_(0, chosen.reshape(-1), ones)
    return counts[: rows * n_cells].view(rows, n_cells), placed


def match_per_channel(
    x: torch.Tensor,
    mask: torch.Tensor | None,
    knots: Knots,
    reference: np.ndarray,
    strength: np.ndarray,
    n_cells: int = GRID_CELLS,
) -> torch.Tensor | None:
    """``per_channel`` matching of an ``(N, C, *spatial)`` batch; None where numpy must do it.

    Parameters
    ----------
    x : torch.Tensor
        uint8, int8, uint16, int16, float32 or float64 images (or volumes), channels first.
    mask : torch.Tensor or None
        ``(N, *spatial)`` bool on ``x``'s device: only those pixels are counted
        and changed.
    knots : Knots
        The references' knots (on ``x``'s device).
    reference, strength : ndarray of shape (N,)
        Each image's reference (index into ``knots``) and strength.
    n_cells : int, default=65536
        Cells of the float grid (``grid_cells``).

    Returns
    -------
    torch.Tensor or None
        The matched batch (dtype, device and shape of ``x``), or None for the
        batches the numpy kernel treats on a special path (see the module docstring).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from histmatch_ml import HistogramMatcher
    >>> from histmatch_ml.backends.torch import Knots, match_per_channel
    >>> refs = np.random.default_rng(0).integers(100, 200, (2, 8, 8, 3), dtype=np.uint8)
    >>> knots = Knots.build([HistogramMatcher().fit(refs).tables_], "cpu")
    >>> x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    >>> out = match_per_channel(x, None, knots, np.zeros(4, int), np.ones(4))
    >>> out.dtype, tuple(out.shape), int(out.min()) >= 100
    (torch.uint8, (4, 3, 8, 8), True)
    """
    n, c = x.shape[:2]
    size = x[0, 0].numel()
    flat = x.reshape(n, c, size)
    flat_mask = None if mask is None else mask.reshape(n, size)
    levels = x.dtype in _LEVELS
    if levels:
        n_cells, offset = _reference.level_count_and_offset(_numpy_dtype(x.dtype))
        grid = None
    else:
        offset = 0
        grid = _grid(flat, flat_mask, n_cells)
        if grid is None:
            return None
    out = torch.empty_like(flat)
    channel_rows = torch.arange(c, device=x.device)
    for part in _chunks(n, c * max(size, n_cells, knots.probs.shape[1])):
        xs = flat[part]
        k = xs.shape[0]
        if levels:
            cells = xs.to(torch.int32)
            if offset:
                cells += offset
        else:
            lo, scale, single = (g[part, :, None] for g in grid)
            t = (xs - lo) * scale + (1 - _END)
            if mask is not None:
                t.clamp_(0.0, n_cells - 0.5)
            cells = t.to(torch.int32)  # (truncation)
        counted = None
        if mask is not None:
            m = flat_mask[part].view(k, 1, size)
            counted = m.expand(k, c, size).reshape(k * c, size)
        counts, placed = row_histograms(cells.view(k * c, size), counted, n_cells)
        refs = torch.as_tensor(reference[part], device=x.device).long()
        rows = (refs[:, None] * knots.n_channels + channel_rows).reshape(-1)
        # (8-bit images of at most 4 channels: the numpy kernel's tables over all levels)
        table = _tables(counts, rows, knots, dense=n_cells == 256 and c <= 4 and levels)
        if levels:
            level_values = torch.arange(n_cells, device=x.device, dtype=torch.float64) - offset
            table = _blend(level_values, table.view(k, c, n_cells), strength[part], x.dtype)
            if x.dtype == torch.uint16:  # (index_select does not take uint16)
                table = table.to(torch.int32)
            matched = _at(table.reshape(-1), placed).to(x.dtype).view(k, c, size)
        else:
            matched = _at(table.to(x.dtype).reshape(-1), placed).view(k, c, size)
            half = torch.full((len(rows), 1), 0.5, dtype=torch.float64, device=x.device)
            median = sorted_quantiles(knots, rows, half)
            matched = torch.where(single, median.to(x.dtype).view(k, c, 1), matched)
            matched = _blend(xs, matched, strength[part], x.dtype)
        if mask is not None:
            matched = torch.where(m, matched, xs)
        out[part] = matched
    return out.view(x.shape)


# ------------------------------------------------------------------ estimator entry points
def as_batch(X: Any, spatial_dims: int = 2) -> torch.Tensor | None:
    """``X`` as an ``(N, C, *spatial)`` view a kernel takes, or None (the numpy path decides).

    2-D: ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)``; 3-D: ``(C, D, H, W)``
    or ``(N, C, D, H, W)``.
    """
    if not (X.dtype in _LEVELS or X.dtype in _FLOATS + _HALF) or X.numel() == 0:
        return None
    x = X.detach()
    if spatial_dims == 3:
        if x.ndim not in (4, 5):
            return None
        x = x[None] if x.ndim == 4 else x
    else:
        if x.ndim not in (2, 3, 4):
            return None
        if x.ndim >= 3 and x.shape[-3] > 4 and x.shape[-1] in (1, 3, 4):  # (refused there)
            return None
        x = x[None, None] if x.ndim == 2 else x[None] if x.ndim == 3 else x
    return x.float() if x.dtype in _HALF else x


def tensor_mask(mask: Any, x: torch.Tensor, name: str = "mask") -> torch.Tensor | None:
    """``mask`` (a bool tensor or arrays, one of the spatial shape per image) as
    ``(N, *spatial)`` on ``x``'s device; the errors of the other inputs' masks."""
    if mask is None:
        return None
    n, spatial = x.shape[0], tuple(x.shape[2:])
    if isinstance(mask, torch.Tensor):
        if mask.dtype != torch.bool:
            raise TypeError(f"{name} must be boolean; got dtype {mask.dtype}")
        dims = len(spatial)
        m = mask.to(x.device)
        m = m.reshape(-1, *m.shape[-dims:]) if m.ndim >= dims else m
        if tuple(m.shape) != (n, *spatial):
            raise ValueError(
                f"{name} must be one boolean mask per image with the images' spatial shape "
                f"{spatial}; got shape {tuple(mask.shape)}"
            )
        empty = torch.nonzero(~m.reshape(n, -1).any(1))
        if len(empty):
            raise ValueError(f"{name} for image {int(empty[0, 0])} selects no pixels")
        return m
    if isinstance(mask, np.ndarray) and mask.ndim == len(spatial) + 1 and len(spatial) == 3:
        mask = list(mask)
    masks = _images._mask_list(mask, [spatial] * n, name)
    return torch.from_numpy(np.stack(masks)).to(x.device)


def _build(method: str, tables: list[dict], states: list[dict], device: Any) -> Any:
    """The device tables ``method``'s kernel reads, or None (the numpy path)."""
    if method == "landmarks":
        from ._torch_landmarks import LandmarkTables

        return LandmarkTables.build(tables, device)
    knots = Knots.build(tables, device)
    if knots is None or method == "per_channel":
        return knots
    from ._torch_exact import ExactTables

    return ExactTables.build(states, tables, knots, device)


def device_tables(estimator: Any, key: tuple, tables: Any, states: list[dict]) -> Any:
    """The estimator's device tables for ``key = (method, device, dtype, scale)``, built
    from ``tables()`` (and the fitted ``states``) the first time."""
    cache = estimator.__dict__.setdefault("_device_tables", DeviceTables())
    if key not in cache:
        cache[key] = _build(key[0], tables(), states, key[1])
    return cache[key]


def _match(
    method: str,
    x: torch.Tensor,
    mask: torch.Tensor | None,
    data: Any,
    reference: np.ndarray,
    strength: np.ndarray,
    params: dict,
) -> torch.Tensor | None:
    """The kernel of ``method`` on an ``(N, C, *spatial)`` batch (None: the numpy path)."""
    if method == "per_channel":
        return match_per_channel(x, mask, data, reference, strength, params["grid_cells"])
    if method == "exact":
        from ._torch_exact import match_exact

        return match_exact(x, mask, data, reference, strength, params["ordering"])
    from ._torch_landmarks import match_landmarks

    return match_landmarks(x, mask, data, reference, strength)


def summary_batch(x: torch.Tensor, fitted: str, scale: str) -> _images.Batch:
    """A one-pixel :class:`~histmatch_ml._images.Batch` standing for ``x`` in
    :func:`histmatch_ml.matcher.matching_tables`: ``x``'s dtype and, where that
    rule reads it, its largest magnitude."""
    dtype = _numpy_dtype(x.dtype)
    peak = 0.0
    if dtype.kind == "f" and np.dtype(fitted).kind in "iu" and scale == "dtype":
        peak = float(x.abs().amax())
    return _images.Batch([np.full((1, 1, 1), peak, dtype=dtype)], None, "tensor")


def _checked_batch(
    X: Any, method: Any, matcher: Any, n_channels: int, name: str, small_batches: bool = False
) -> Any:
    """``X`` as a kernel's batch after the numpy path's checks, or None (the numpy path)."""
    x = as_batch(X, getattr(matcher, "spatial_dims", 2))
    if not _kernel_applies(method, x, small_batches):
        return None
    if x.shape[1] != n_channels:
        raise _images.channel_mismatch(name, x.shape[1], n_channels)
    method.check_channels(x.shape[1], name)
    if x.dtype in _FLOATS and not bool(torch.isfinite(x).all()):
        raise _images.not_finite_error(name)
    return x


def transform(estimator: Any, X: Any, mask: Any, name: str) -> Any:
    """``HistogramMatcher.transform`` of a tensor on its device, or None for the numpy path.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from histmatch_ml import HistogramMatcher
    >>> refs = np.random.default_rng(0).integers(100, 200, (2, 8, 8, 3), dtype=np.uint8)
    >>> matcher = HistogramMatcher().fit(refs)
    >>> out = matcher.transform(torch.zeros(4, 3, 8, 8, dtype=torch.uint8))
    >>> out.dtype, tuple(out.shape)
    (torch.uint8, (4, 3, 8, 8))
    """
    from ..matcher import matching_tables

    method = estimator._fitted_method()
    x = _checked_batch(X, method, estimator, estimator.n_channels_, name)
    if x is None:
        return None
    m = tensor_mask(mask, x)
    batch = summary_batch(x, estimator.dtype_, estimator.scale)
    tables = matching_tables(
        method, batch, estimator.dtype_, estimator.scale, estimator.tables_, name
    )
    key = (method.name, str(x.device), str(x.dtype), estimator.scale)
    data = device_tables(estimator, key, lambda: [tables], [estimator.reference_])
    if data is None:
        return None
    n = x.shape[0]
    reference, strength = np.zeros(n, dtype=np.int64), np.full(n, float(estimator.strength))
    out = _match(method.name, x, m, data, reference, strength, estimator._params())
    return None if out is None else out.to(X.dtype).reshape(X.shape)


def augment(augmenter: Any, tensor: Any, params: list[dict], matcher: Any) -> Any:
    """``RandomHistogramMatching.apply`` of checked per-image ``params`` to an
    ``(N, C, *spatial)`` tensor in one batched call, or None for the numpy path.

    ``tensor`` itself when no image is to be changed (after the checks).
    """
    import warnings

    from ..matcher import matching_tables
    from ..methods import get_method

    method = get_method(augmenter.method_)
    x = _checked_batch(tensor, method, matcher, augmenter.n_channels_, "image", small_batches=True)
    if x is None:
        return None
    applied = np.flatnonzero([p["apply"] for p in params])
    if not len(applied):
        return tensor
    batch = summary_batch(x, augmenter.dtype_, matcher.scale)
    reference = np.array([params[k]["reference"] for k in applied], dtype=np.int64)
    strength = np.array([params[k]["strength"] for k in applied], dtype=np.float64)
    fitted, scale, all_tables = augmenter.dtype_, matcher.scale, augmenter.tables_
    matching_tables(method, batch, fitted, scale, all_tables[reference[0]], "image")  # (warnings)

    def tables() -> list[dict]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [matching_tables(method, batch, fitted, scale, t, "image") for t in all_tables]

    key = (method.name, str(x.device), str(x.dtype), scale)
    data = device_tables(augmenter, key, tables, augmenter.references_)
    if data is None:
        return None
    kernel_params = matcher._params()
    if len(applied) == len(x):
        matched = _match(method.name, x, None, data, reference, strength, kernel_params)
        return None if matched is None else matched.to(tensor.dtype).reshape(tensor.shape)
    index = torch.as_tensor(applied, device=x.device)
    chosen = x.index_select(0, index)
    matched = _match(method.name, chosen, None, data, reference, strength, kernel_params)
    if matched is None:
        return None
    work = torch.int32 if x.dtype == torch.uint16 else x.dtype  # (no index_put for uint16)
    out = x.to(work, copy=True)
    out[index] = matched.to(work)
    return out.to(tensor.dtype).reshape(tensor.shape)


class RandomHistogramMatchingModule(torch.nn.Module):
    """A fitted :class:`~histmatch_ml.RandomHistogramMatching` as a ``torch.nn.Module``.

    ``module(batch)`` draws one set of parameters per image
    (:meth:`~histmatch_ml.RandomHistogramMatching.sample_batch_params`, from
    ``generator`` when given) and applies them in one batched call on the
    batch's device; the output has the input's dtype, device and shape. It
    holds no weights and is no part of the autograd graph (matching is a
    data augmentation: its output carries no gradient). Build it with
    :meth:`~histmatch_ml.RandomHistogramMatching.as_torch_module`.

    Parameters
    ----------
    augmenter : RandomHistogramMatching
        The fitted augmenter.
    generator : torch.Generator, optional
        Source of the draws; the augmenter's stream by default.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from histmatch_ml import RandomHistogramMatching
    >>> refs = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    >>> module = RandomHistogramMatching(p=1.0).fit(refs).as_torch_module()
    >>> module(torch.zeros(2, 3, 16, 16, dtype=torch.uint8)).shape
    torch.Size([2, 3, 16, 16])
    """

    def __init__(self, augmenter: Any, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.augmenter = augmenter
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Augment ``x``, ``(N, C, H, W)`` (one draw per image) or ``(C, H, W)``."""
        n = x.shape[0] if x.ndim == 4 else 1
        params = self.augmenter.sample_batch_params(n, generator=self.generator)
        with torch.no_grad():
            return self.augmenter.apply(x, params if x.ndim == 4 else params[0])
