"""Torch kernel of ``method="landmarks"``: per-image landmarks and one piecewise-linear map.

The arithmetic of :mod:`histmatch_ml.methods.landmarks` for every
``(image, channel)`` row of an ``(N, C, *spatial)`` batch at once:

* each row's landmarks: for 8/16-bit images the row's level histogram (one
  ``index_add_`` for the whole chunk, as the ``per_channel`` kernel counts),
  its midpoint CDF at the occupied levels and ``np.interp``'s arithmetic at
  the landmark probabilities; for floats numpy's ``"hazen"`` quantiles of the
  (masked) values, from one sort of the rows (the virtual index, the
  neighbours and numpy's two-sided ``_lerp``, in float64);
* the map: the segments' slopes and intercepts per row, one batched
  ``searchsorted`` of the values among the inner landmarks, then
  ``slope * x + intercept`` (over the levels for 8/16-bit images, gathered
  through a table; per pixel for floats, rounded to the image's float dtype
  after the product as numpy does);
* the strength blend, rounding and clipping of :func:`histmatch_ml.methods._base.finish`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import _reference

__all__ = ["LandmarkTables", "image_landmark_rows", "match_landmarks"]


@dataclass
class LandmarkTables:
    """The standards of ``R`` fitted references of ``C`` channels, as tensors.

    ``standard`` is ``(R * C, L)`` float64 (row ``r * C + c``), ``probs`` the
    ``L`` landmark probabilities (``percentiles / 100``), the same for all.
    """

    probs: torch.Tensor
    standard: torch.Tensor
    n_channels: int

    @classmethod
    def build(cls, tables: list[dict], device: Any) -> LandmarkTables | None:
        """From each reference's tables; None when their percentiles differ."""
        probs = np.asarray(tables[0]["percentiles"], dtype=np.float64) / 100.0
        for t in tables[1:]:
            if not np.array_equal(np.asarray(t["percentiles"], dtype=np.float64) / 100.0, probs):
                return None
        standard = np.concatenate([np.asarray(t["standard"], dtype=np.float64) for t in tables])
        return cls(
            torch.from_numpy(probs).to(device),
            torch.from_numpy(np.ascontiguousarray(standard)).to(device),
            int(np.shape(tables[0]["standard"])[0]),
        )


def _occupied_knots(counts: torch.Tensor, values: torch.Tensor) -> Any:
    """:class:`~histmatch_ml.backends.torch.Knots` of level histograms ``(M, L)``: the
    midpoint CDF and value of each row's occupied levels, padded with its last knot."""
    from .torch import Knots

    occupied = counts > 0
    cum = counts.cumsum(1, dtype=torch.float64)
    cdf = (cum + cum - counts) / (2 * cum[:, -1:])
    # occupied levels first, in level order (a stable sort of the empty flags)
    first = torch.sort((~occupied).to(torch.uint8), dim=1, stable=True).indices
    last = occupied.sum(1) - 1
    pad = torch.minimum(torch.arange(counts.shape[1], device=counts.device), last[:, None])
    index = first.gather(1, pad)
    return Knots(cdf.gather(1, index), values[index], last, 1)


def _hazen(x: torch.Tensor, counted: torch.Tensor | None, probs: torch.Tensor) -> torch.Tensor:
    """``np.quantile(row, probs, method="hazen")`` of the (counted) values of every row."""
    values = x.to(torch.float64)
    if counted is None:
        n = torch.full((len(x), 1), x.shape[1], dtype=torch.float64, device=x.device)
    else:
        values = torch.where(counted, values, torch.inf)
        n = counted.sum(1, keepdim=True).to(torch.float64)
    ordered = torch.sort(values, dim=1).values
    virtual = (n * probs + 0.5) - 1.0
    previous = torch.floor(virtual)
    above, below = virtual >= n - 1, virtual < 0
    last = (n - 1).expand_as(virtual)
    prev_index = torch.where(below, 0.0, torch.where(above, last, previous)).long()
    next_index = torch.where(below, 0.0, torch.where(above, last, previous + 1)).long()
    gamma = virtual - torch.where(below, 0.0, torch.where(above, -1.0, previous))
    a, b = ordered.gather(1, prev_index), ordered.gather(1, next_index)
    diff = b - a
    return torch.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


def image_landmark_rows(
    x: torch.Tensor, counted: torch.Tensor | None, probs: torch.Tensor
) -> torch.Tensor:
    """:func:`histmatch_ml.methods.landmarks.image_landmarks` of every row ``(M, P)``.

    Returns ``(M, L)`` float64: the rows' quantiles at ``probs``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from histmatch_ml.backends._torch_landmarks import image_landmark_rows
    >>> rows = torch.arange(100, dtype=torch.float32).reshape(1, 100)
    >>> image_landmark_rows(rows, None, torch.tensor([0.01, 0.5, 0.99], dtype=torch.float64))
    tensor([[ 0.5000, 49.5000, 98.5000]], dtype=torch.float64)
    """
    from .torch import _LEVELS, _numpy_dtype, row_histograms, sorted_quantiles

    if x.dtype not in _LEVELS:
        return _hazen(x, counted, probs)
    n_levels, offset = _reference.level_count_and_offset(_numpy_dtype(x.dtype))
    cells = x.to(torch.int32)
    if offset:
        cells += offset
    counts, _ = row_histograms(cells, counted, n_levels)
    values = torch.arange(n_levels, dtype=torch.float64, device=x.device) - offset
    knots = _occupied_knots(counts, values)
    rows = torch.arange(len(x), device=x.device)
    matched = sorted_quantiles(knots, rows, probs.expand(len(x), -1).contiguous())
    return torch.cummax(matched, 1).values


def piecewise_rows(
    values: torch.Tensor, source: torch.Tensor, standard: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """:func:`histmatch_ml.methods.landmarks.piecewise_map` of every row ``(M, P)`` of
    ``values`` with its landmarks ``(M, L)``, the result in ``dtype`` (rounded after the
    product and after the sum, as numpy writes into a ``dtype`` array)."""
    dsrc, dstd = source.diff(dim=1), standard.diff(dim=1)
    slope = torch.where(dsrc > 0, dstd / dsrc, torch.zeros_like(dstd))
    intercept = standard[:, :-1] - slope * source[:, :-1]
    v = values.to(torch.float64)
    segment = torch.searchsorted(source[:, 1:-1].contiguous(), v.contiguous(), right=True)
    product = (slope.gather(1, segment) * v).to(dtype)
    return (product.to(torch.float64) + intercept.gather(1, segment)).to(dtype)


def match_landmarks(
    x: torch.Tensor,
    mask: torch.Tensor | None,
    tables: LandmarkTables,
    reference: np.ndarray,
    strength: np.ndarray,
) -> torch.Tensor:
    """``landmarks`` matching of an ``(N, C, *spatial)`` batch.

    Parameters
    ----------
    x : torch.Tensor
        uint8, int8, uint16, int16, float32 or float64 images (volumes), channels first.
    mask : torch.Tensor or None
        ``(N, *spatial)`` bool on ``x``'s device: only those pixels set the
        landmarks and are changed.
    tables : LandmarkTables
        The references' standards (on ``x``'s device).
    reference, strength : ndarray of shape (N,)
        Each image's reference (index into ``tables``) and strength.

    Returns
    -------
    torch.Tensor
        The matched batch (dtype, device and shape of ``x``).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from histmatch_ml import HistogramMatcher
    >>> from histmatch_ml.backends._torch_landmarks import LandmarkTables, match_landmarks
    >>> refs = np.random.default_rng(0).normal(100, 10, (2, 16, 16)).astype(np.float32)
    >>> matcher = HistogramMatcher("landmarks", standard_range=(0, 100)).fit(refs)
    >>> tables = LandmarkTables.build([matcher.tables_], "cpu")
    >>> x = torch.linspace(0, 1, 256).reshape(1, 1, 16, 16)
    >>> out = match_landmarks(x, None, tables, np.zeros(1, int), np.ones(1))
    >>> out.dtype, float(out.min()) < 0 < 100 < float(out.max())  # (extrapolated ends)
    (torch.float32, True)
    """
    from .torch import _LEVELS, _blend, _chunks, _numpy_dtype

    n_images, c = x.shape[:2]
    size = int(np.prod(x.shape[2:]))
    levels = x.dtype in _LEVELS
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    flat = x.reshape(n_images, c, size)
    out = torch.empty_like(flat)
    channels = torch.arange(c, device=x.device)
    if levels:
        n_levels, offset = _reference.level_count_and_offset(_numpy_dtype(x.dtype))
        level_values = torch.arange(n_levels, dtype=torch.float64, device=x.device) - offset
    for part in _chunks(n_images, 4 * c * max(size, 65536 if levels else 0)):
        xs = flat[part]
        k = xs.shape[0]
        rows_x = xs.reshape(k * c, size)
        counted = None
        if mask is not None:
            m = mask[part].reshape(k, 1, size)
            counted = m.expand(k, c, size).reshape(k * c, size)
        source = image_landmark_rows(rows_x, counted, tables.probs)
        refs = torch.as_tensor(reference[part], device=x.device).long()
        rows = (refs[:, None] * tables.n_channels + channels).reshape(-1)
        standard = tables.standard.index_select(0, rows)
        if levels:
            table = piecewise_rows(level_values.expand(k * c, -1), source, standard, torch.float64)
            table = table.to(work)  # (numpy's table is float64, then cast)
            cells = rows_x.to(torch.int64)
            if offset:
                cells += offset
            matched = table.gather(1, cells)
        else:
            matched = piecewise_rows(rows_x, source, standard, work)
        matched = _blend(xs, matched.view(k, c, size), strength[part], x.dtype)
        if mask is not None:
            matched = torch.where(m, matched, xs)
        out[part] = matched
    return out.view(x.shape)
