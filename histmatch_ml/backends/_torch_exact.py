"""Torch kernel of ``method="exact"``: strict orderings and rank assignment for whole batches.

The arithmetic of :mod:`histmatch_ml.methods.exact` and
:mod:`histmatch_ml._ordering`, for every ``(image, channel)`` row of an
``(N, C, *spatial)`` batch at once (2-D images and 3-D volumes):

* the ordering keys as torch ops on the rows: ``"variational"`` runs the same
  float64 fixed-point iterations on the flat rows (the same neighbour pairs,
  the same operations in the same order), so its correction is the numpy
  one to the bit; ``"local_means"`` sums the rings (2-D) or shells (3-D) of
  the mirrored neighbourhood, exactly in int64 for 8/16-bit images and in
  float64 in the order of OpenCV's ``filter2D`` (2-D) or the numpy shell sums
  (3-D) for floats;
* the keys packed into ``int64`` words that compare as the numpy keys do
  (value, then key, truncated as there), and one stable sort per word (least
  significant first), so ties are ranked by position as in numpy; float rows
  are sorted by value first and only the pixels of runs of equal values by
  their key, as in numpy (unless a sample of the first row is mostly runs,
  such as floats of 8-bit levels: then every pixel's words are sorted, which
  costs less there);
* the output values by rank: the reference's level counts apportioned by
  largest remainder (:func:`histmatch_ml.methods.exact.target_counts`, as
  integer tensor ops) for integer images and level-histogram references,
  otherwise the reference quantile function at ``(r + 0.5) / n``
  (``np.interp``'s arithmetic, :func:`histmatch_ml.backends.torch.sorted_quantiles`);
* the strength blend, rounding and clipping of
  :func:`histmatch_ml.methods._base.finish`.

Pixels outside a mask are ordered last (their key is the largest ``int64``,
which no pixel's key reaches) and keep their value. Float channels whose
range is not finite in float64 (values near float64's limits, which numpy
halves first) go back to the numpy kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import _ordering, _reference

__all__ = ["ExactTables", "match_exact", "strict_orders"]

#: the largest int64: the key of pixels outside the mask; XOR-ed with a negative float64's
#: bits, it flips them onto the order of the floats
_INT64_MAX = 2**63 - 1
_LEVEL_DTYPES = (torch.uint8, torch.int8, torch.uint16, torch.int16)


# ------------------------------------------------------------------- planes
def level_rows(x: torch.Tensor) -> torch.Tensor:
    """Unsigned level indices (int64) of 8/16-bit integer rows, as
    :func:`histmatch_ml._reference.level_index`."""
    if x.dtype == torch.int8:
        return x.to(torch.int64) + 128
    if x.dtype == torch.int16:
        return x.to(torch.int64) + 32768
    if x.dtype == torch.uint16:
        return x.to(torch.int32).to(torch.int64)
    return x.to(torch.int64)


def _level_bits(dtype: torch.dtype) -> int:
    return 8 if dtype in (torch.uint8, torch.int8) else 16


def _unit_rows(x: torch.Tensor) -> torch.Tensor | None:
    """:func:`histmatch_ml._ordering._unit_plane` of rows ``(M, P)``, or None (a range
    that is not finite in float64, which numpy halves first)."""
    if x.dtype in _LEVEL_DTYPES:
        return level_rows(x).to(torch.float64)
    f = x.to(torch.float64)
    lo, hi = f.amin(1, keepdim=True), f.amax(1, keepdim=True)
    span = hi - lo
    if not bool(torch.isfinite(span).all()):
        return None
    scale = torch.where(span > 0, _ordering._FLOAT_SPAN / span, torch.ones_like(span))
    f -= lo
    f *= scale
    return f


def _neighbour_pairs(shape: tuple[int, ...], device: Any) -> list[tuple[int, Any]]:
    """``(step, wraps)`` per axis, innermost first, as the numpy iterations pair pixels."""
    n = int(np.prod(shape))
    pairs = []
    for axis in reversed(range(len(shape))):
        extent = shape[axis]
        if extent < 2:
            continue
        step = int(np.prod(shape[axis + 1 :]))
        wraps = None
        if step == 1:  # every row's last pixel
            ends = np.zeros(n - 1, dtype=bool)
            ends[extent - 1 :: extent] = True
            wraps = torch.from_numpy(ends).to(device)
        elif axis > 0:  # every slice's last row
            ends = np.zeros((n // (extent * step), extent, step), dtype=bool)
            ends[:, -1, :] = True
            wraps = torch.from_numpy(ends.ravel()[: n - step]).to(device)
        pairs.append((step, wraps))
    return pairs


def variational_rows(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor | None:
    """:func:`histmatch_ml._ordering.variational_correction` of rows ``(M, P)`` of
    spatial ``shape``: the float64 correction ``u - f`` (None: see :func:`_unit_rows`)."""
    f = _unit_rows(x)
    if f is None:
        return None
    alpha, beta = _ordering.VARIATIONAL_ALPHA, _ordering.VARIATIONAL_BETA
    diffs = []
    for step, wraps in _neighbour_pairs(shape, x.device):
        df = f[:, step:] - f[:, :-step]
        if wraps is not None:
            df.masked_fill_(wraps, 0.0)
        diffs.append((step, wraps, df))
    del f
    d = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    t = torch.empty_like(d)
    for _ in range(_ordering.VARIATIONAL_ITERATIONS):
        t.zero_()
        for step, wraps, df in diffs:
            g = d[:, step:] - d[:, :-step]
            g += df
            if wraps is not None:
                g.masked_fill_(wraps, 0.0)
            a = g.abs()
            a += alpha
            g /= a
            t[:, step:] += g
            t[:, :-step] -= g
        torch.abs(t, out=d)
        d -= 1.0 / beta
        torch.div(t, d, out=d)
        d *= alpha
    d += 0.0  # -0.0 -> +0.0, so equal corrections get equal keys
    return d


def _float_order_bits(d: torch.Tensor) -> torch.Tensor:
    """int64 ordered as the float64 values ``d`` (finite, no -0.0): numpy's uint64 key
    minus ``2**63``, so shifting right keeps the ties of the unsigned shift."""
    s = d.view(torch.int64)
    return torch.where(s < 0, s ^ _INT64_MAX, s)


def _pack_value(value: torch.Tensor, low: torch.Tensor, bits: Any) -> torch.Tensor:
    """The signed word of ``(value, low)``: ``value`` of ``bits`` bits over the top
    ``64 - bits`` bits of the float key ``low`` (:func:`_float_order_bits`), ordered as
    numpy's unsigned ``value << (64 - bits) | (key >> bits)``."""
    one = torch.ones((), dtype=torch.int64, device=value.device)
    top = torch.bitwise_left_shift(value - torch.bitwise_left_shift(one, bits - 1), 64 - bits)
    return top | (torch.bitwise_right_shift(low, bits) + torch.bitwise_left_shift(one, 63 - bits))


def _dense_rank(values: torch.Tensor, counted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank of every value of a row among the row's distinct (counted) values, and
    the bits of the largest counted rank (at least 1), per row ``(M, 1)``."""
    work = values if values.is_floating_point() else values.to(torch.float64)
    work = torch.where(counted, work, torch.inf)
    ordered, perm = torch.sort(work, dim=1)
    steps = torch.zeros(ordered.shape, dtype=torch.int64, device=values.device)
    steps[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ranks = steps.cumsum_(1)
    return torch.empty_like(ranks).scatter_(1, perm, ranks), _rank_bits(ranks, counted)


def _rank_bits(ranks: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """The bits of each row's largest counted rank (at least 1), ``(M, 1)``, from the
    ranks of the rows in sorted order (counted pixels first)."""
    n = counted.sum(1, keepdim=True)
    top = ranks.gather(1, (n - 1).clamp(min=0))
    powers = torch.bitwise_left_shift(torch.ones((), dtype=torch.int64), torch.arange(62))
    return (top >= powers.to(ranks.device)).sum(1, keepdim=True).clamp(min=1)


def _variational_words(
    x: torch.Tensor, counted: torch.Tensor, shape: tuple[int, ...]
) -> list[torch.Tensor] | None:
    d = variational_rows(x, shape)
    if d is None:
        return None
    low = _float_order_bits(d)
    del d
    if x.dtype in _LEVEL_DTYPES:
        return [_pack_value(level_rows(x), low, _level_bits(x.dtype))]
    rank, bits = _dense_rank(x, counted)
    return [_pack_value(rank, low, bits)]


# ------------------------------------------------------------- local means
def _mirror(n: int, pad: int) -> np.ndarray:
    """Indices of an axis of ``n`` padded by ``pad`` on each side, edges repeated
    (OpenCV's ``BORDER_REFLECT``, numpy's ``"symmetric"``)."""
    index = np.arange(-pad, n + pad)
    while True:
        low, high = index < 0, index >= n
        if not (low.any() or high.any()):
            return index
        index = np.where(low, -index - 1, np.where(high, 2 * n - 1 - index, index))


def _ring_offsets(ndim: int) -> list[list[tuple[int, ...]]]:
    """Offsets of each ring (2-D, in its ``filter2D`` kernel's raster order) or shell (3-D)."""
    if ndim == 2:
        return [[(dy - 2, dx - 2) for dy, dx in np.argwhere(ring)] for ring in _ordering._RINGS]
    return [[tuple(o) for o in shell.tolist()] for shell in _ordering._SHELLS]


def ring_sum_rows(plane: torch.Tensor) -> list[torch.Tensor]:
    """The ``local_means`` ring (2-D) or shell (3-D) sums of planes ``(M, *spatial)``.

    In int64 for level planes (exact), else in float64 summed in the kernel's
    raster order from its first term (as ``cv2.filter2D`` and the numpy shell
    sums add them); borders mirrored.
    """
    spatial = plane.shape[1:]
    padded = plane
    for axis, n in enumerate(spatial, start=1):
        index = torch.from_numpy(_mirror(n, 2)).to(plane.device)
        padded = padded.index_select(axis, index)
    sums = []
    for ring in _ring_offsets(len(spatial)):
        total = None
        for offset in ring:
            view = padded[
                (slice(None), *(slice(2 + o, 2 + o + n) for o, n in zip(offset, spatial)))
            ]
            total = view.clone() if total is None else total.add_(view)
        sums.append(total.reshape(len(plane), -1))
    return sums


def _words(keys: list[tuple[torch.Tensor, int]]) -> list[torch.Tensor]:
    """Non-negative keys of known bit widths packed into int64 words of at most 63 bits,
    most significant first (comparing words in turn compares the keys in turn)."""
    words, word, width = [], None, 0
    for key, bits in keys:
        if word is not None and width + bits <= 63:
            word = torch.bitwise_left_shift(word, bits) | key
            width += bits
            continue
        if word is not None:
            words.append(word)
        word, width = key, bits
    words.append(word)
    return words


def _local_means_words(x: torch.Tensor, shape: tuple[int, ...]) -> list[torch.Tensor]:
    """The packed ``local_means`` words of 8/16-bit rows: their levels, then the ring sums."""
    level = level_rows(x)
    bits = _level_bits(x.dtype)
    sums = ring_sum_rows(level.view(len(x), *shape))
    keys = [(level, bits)]
    for ring, total in zip(_ring_offsets(len(shape)), sums):
        keys.append((total, (len(ring) * (2**bits - 1)).bit_length()))
    return _words(keys)


def _value_first_orders(
    x: torch.Tensor, counted: torch.Tensor, shape: tuple[int, ...], ordering: str
) -> torch.Tensor | None:
    """The order of float rows: by value, then the ordering key within runs of equal values.

    As the numpy kernel (:func:`histmatch_ml._ordering.strict_order` on floats):
    one stable sort of every row by value, then the (counted) pixels of the runs
    of equal values, of all rows together, sorted by (run, key, position) with
    stable sorts from the least significant key (the key: the ring sums, or the
    packed (rank, correction) word); continuous data has few. Rows whose first
    row's sample is mostly runs (floats of few levels) sort every pixel's words
    instead, which costs less there. None where :func:`variational_rows` is.
    """
    rows, size = x.shape
    local_means = ordering == "local_means"
    sample = x[0, :: max(1, size // 4096)]
    if 2 * torch.unique(sample).numel() < sample.numel():
        if local_means:
            plane = x.to(torch.float64)
            words = [plane, *ring_sum_rows(plane.view(rows, *shape))]
        else:
            words = _variational_words(x, counted, shape)
        return None if words is None else _lsd_order(words, counted)
    value, order = torch.sort(torch.where(counted, x, torch.inf), dim=1, stable=True)
    # (uncounted pixels, last, keep their value: their order is never read)
    tied = (value[:, 1:] == value[:, :-1]) & counted.gather(1, order[:, 1:])
    del value
    starts = torch.ones((rows, size), dtype=torch.bool, device=x.device)
    starts[:, 1:] = ~tied
    in_tie = torch.zeros_like(starts)
    in_tie[:, 1:] = tied
    in_tie[:, :-1] |= tied
    members = in_tie.flatten().nonzero().squeeze(1)  # (in position order within a run)
    if members.numel() == 0:
        return order
    flat_order = order.view(-1)  # (written through below)
    pixels = (members // size) * size + flat_order[members]
    run = starts.flatten().cumsum(0)[members]  # (unique across rows)
    if local_means:
        plane = x.to(torch.float64).view(rows, *shape)
        keys = [run, *(ring.flatten()[pixels] for ring in ring_sum_rows(plane))]
    else:  # the word of numpy's float key: the value's rank over the correction
        d = variational_rows(x, shape)
        if d is None:
            return None
        low = _float_order_bits(d).flatten()[pixels]
        ranks = starts.cumsum(1) - 1  # (in sorted order)
        bits = _rank_bits(ranks, counted).flatten()[members // size]
        keys = [run, _pack_value(ranks.flatten()[members], low, bits)]
    perm = None
    for key in reversed(keys):  # least significant first, each sort stable
        key = key if perm is None else key[perm]
        step = torch.sort(key, stable=True).indices
        perm = step if perm is None else perm[step]
    flat_order[members] = flat_order[members[perm]]
    return order


# ----------------------------------------------------------------- ordering
def strict_orders(
    x: torch.Tensor,
    counted: torch.Tensor | None,
    shape: tuple[int, ...],
    ordering: str,
) -> torch.Tensor | None:
    """:func:`histmatch_ml._ordering.strict_order` of every row of ``x`` ``(M, P)``.

    Rows are channels of spatial ``shape`` (2-D or 3-D); ``counted`` ``(M, P)``
    bool marks the (masked) pixels to order, which come first in each row's
    order, the others after them. Returns int64 indices ``(M, P)``, or None
    for rows the numpy kernel handles on another path.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from histmatch_ml._ordering import strict_order
    >>> from histmatch_ml.backends._torch_exact import strict_orders
    >>> channel = np.array([[5, 5, 5], [5, 9, 5], [5, 5, 5]], dtype=np.uint8)
    >>> got = strict_orders(torch.from_numpy(channel).reshape(1, 9), None, (3, 3),
    ...                     "local_means")
    >>> got[0].tolist() == strict_order(channel, ordering="local_means").tolist()
    True
    """
    _ordering.check_ordering(ordering)
    if counted is None:
        counted = torch.ones(x.shape, dtype=torch.bool, device=x.device)
    if x.dtype not in _LEVEL_DTYPES:
        return _value_first_orders(x, counted, shape, ordering)
    if ordering == "variational":
        words = _variational_words(x, counted, shape)  # (levels: never None)
    else:
        words = _local_means_words(x, shape)
    return _lsd_order(words, counted)


def _lsd_order(words: list[torch.Tensor], counted: torch.Tensor) -> torch.Tensor:
    """Row-wise order by ``words`` (most significant first), then position; uncounted last."""
    # uncounted pixels last: the largest key of the most significant word
    top = words[0]
    words[0] = torch.where(counted, top, torch.inf if top.is_floating_point() else _INT64_MAX)
    order = None
    for word in reversed(words):  # least significant first, each sort stable
        key = word if order is None else word.gather(1, order)
        perm = torch.sort(key, dim=1, stable=True).indices
        order = perm if order is None else order.gather(1, perm)
    return order


# --------------------------------------------------------------- the kernel
@dataclass
class ExactTables:
    """What the exact kernel reads of ``R`` fitted references of ``C`` channels.

    ``knots`` are the references' quantile knots
    (:class:`histmatch_ml.backends.torch.Knots`); ``histograms`` ``(R * C, L)``
    int64 and ``levels`` ``(R, L)`` float64 (each level's value, rescaled as the
    tables say) are set when every reference holds level histograms.
    """

    knots: Any
    histograms: torch.Tensor | None
    levels: torch.Tensor | None
    peak: int

    @classmethod
    def build(cls, states: list[dict], tables: list[dict], knots: Any, device: Any) -> ExactTables:
        """From each reference's state and (rescaled) tables."""
        if not all("histograms" in s for s in states):
            return cls(knots, None, None, 0)
        width = max(s["histograms"].shape[1] for s in states)
        hist = np.zeros((len(states) * knots.n_channels, width), dtype=np.int64)
        levels = np.zeros((len(states), width))
        for r, (state, table) in enumerate(zip(states, tables)):
            h = np.asarray(state["histograms"], dtype=np.int64)
            hist[r * knots.n_channels : (r + 1) * knots.n_channels, : h.shape[1]] = h
            if "levels" in state:
                values = np.asarray(state["levels"], dtype=np.float64)
            else:
                values = _reference.level_values(np.dtype(state["dtype"].item()))
            if "scale" in table:
                values = values * float(table["scale"])
            levels[r, : len(values)] = values
        return cls(
            knots,
            torch.from_numpy(hist).to(device),
            torch.from_numpy(levels).to(device),
            int(hist.max()),
        )


def _target_counts(hist: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """:func:`histmatch_ml.methods.exact.target_counts` of rows ``(M, L)``, ``n`` ``(M, 1)``."""
    total = hist.sum(1, keepdim=True)
    scaled = hist * n
    counts = torch.div(scaled, total, rounding_mode="floor")
    remainders = scaled - counts * total
    deficit = n - counts.sum(1, keepdim=True)
    order = torch.sort(-remainders, dim=1, stable=True).indices
    place = torch.empty_like(order).scatter_(
        1, order, torch.arange(hist.shape[1], device=hist.device).expand_as(order).contiguous()
    )
    return counts + (place < deficit)


def _ranked_values(
    tables: ExactTables,
    rows: torch.Tensor,
    refs: torch.Tensor,
    n: torch.Tensor,
    width: int,
    integer_image: bool,
    work: torch.dtype,
) -> torch.Tensor:
    """The values of ranks ``0..width-1`` of every row (valid up to its ``n``), in ``work``."""
    from .torch import sorted_quantiles

    device = n.device
    if integer_image and tables.histograms is not None:
        counts = _target_counts(tables.histograms.index_select(0, rows), n)
        ends = counts.cumsum(1)
        ranks = torch.arange(width, device=device).expand(len(rows), width).contiguous()
        level = torch.searchsorted(ends, ranks, right=True).clamp_(max=ends.shape[1] - 1)
        values = tables.levels.index_select(0, refs).to(work)
        return values.gather(1, level)
    q = (torch.arange(width, dtype=torch.float64, device=device) + 0.5) / n
    matched = sorted_quantiles(tables.knots, rows, q)
    return torch.cummax(matched, 1).values.to(work)


def match_exact(
    x: torch.Tensor,
    mask: torch.Tensor | None,
    tables: ExactTables,
    reference: np.ndarray,
    strength: np.ndarray,
    ordering: str,
) -> torch.Tensor | None:
    """``exact`` matching of an ``(N, C, *spatial)`` batch (2-D or 3-D); None where numpy must.

    Parameters
    ----------
    x : torch.Tensor
        uint8, int8, uint16, int16, float32 or float64 images (volumes), channels first.
    mask : torch.Tensor or None
        ``(N, *spatial)`` bool on ``x``'s device: only those pixels are ordered and changed.
    tables : ExactTables
        The references' knots and level histograms (on ``x``'s device).
    reference, strength : ndarray of shape (N,)
        Each image's reference (index into ``tables``) and strength.
    ordering : {"variational", "local_means"}
        The strict ordering within a source level.

    Returns
    -------
    torch.Tensor or None
        The matched batch (dtype, device and shape of ``x``).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from histmatch_ml import HistogramMatcher
    >>> from histmatch_ml.backends._torch_exact import ExactTables, match_exact
    >>> from histmatch_ml.backends.torch import Knots
    >>> refs = np.random.default_rng(0).integers(0, 256, (1, 8, 8), dtype=np.uint8)
    >>> matcher = HistogramMatcher("exact").fit(refs)
    >>> x = torch.full((2, 1, 8, 8), 7, dtype=torch.uint8)  # flat: ordered by position
    >>> tables = ExactTables.build([matcher.reference_], [matcher.tables_],
    ...                            Knots.build([matcher.tables_], "cpu"), "cpu")
    >>> out = match_exact(x, None, tables, np.zeros(2, int), np.ones(2), "variational")
    >>> bool((torch.bincount(out[0].flatten(), minlength=256).numpy()
    ...       == np.bincount(refs.ravel(), minlength=256)).all())
    True
    """
    from .torch import _blend, _chunks

    n_images, c = x.shape[:2]
    shape = tuple(x.shape[2:])
    size = int(np.prod(shape))
    integer_image = x.dtype in _LEVEL_DTYPES
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    if integer_image and tables.histograms is not None and size * tables.peak >= 2**63:
        return None  # (numpy apportions such counts in Python integers)
    flat = x.reshape(n_images, c, size)
    out = torch.empty_like(flat)
    channels = torch.arange(c, device=x.device)
    for part in _chunks(n_images, 12 * c * size):  # (about a dozen work rows per row)
        xs = flat[part]
        k = xs.shape[0]
        rows_x = xs.reshape(k * c, size)
        counted = None
        if mask is not None:
            m = mask[part].reshape(k, 1, size)
            counted = m.expand(k, c, size).reshape(k * c, size)
        order = strict_orders(rows_x, counted, shape, ordering)
        if order is None:
            return None
        refs = torch.as_tensor(reference[part], device=x.device).long()
        rows = (refs[:, None] * tables.knots.n_channels + channels).reshape(-1)
        if counted is None:
            n = torch.full((k * c, 1), size, dtype=torch.int64, device=x.device)
        else:
            n = counted.sum(1, keepdim=True)
        values = _ranked_values(
            tables, rows, refs.repeat_interleave(c), n, size, integer_image, work
        )
        plane = torch.empty((k * c, size), dtype=work, device=x.device)
        plane.scatter_(1, order, values)
        del order, values
        matched = _blend(xs, plane.view(k, c, size), strength[part], x.dtype)
        if mask is not None:
            matched = torch.where(m, matched, xs)
        out[part] = matched
    return out.view(x.shape)
