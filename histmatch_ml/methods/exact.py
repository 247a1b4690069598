"""Exact histogram specification: ``method="exact"``.

Classic CDF matching maps equal source values to one output value, so it can
merge reference levels but never split a source level: the output histogram
only approximates the reference's. Exact specification first puts all pixels
of a channel in a *strict* order (value, then a neighbourhood key, then
position; see :mod:`histmatch_ml._ordering`) and then hands out the
reference's values by rank:

* integer images with an 8/16-bit reference (exact histograms): level ``k``
  receives ``n * p_ref[k]`` pixels rounded by largest remainder (every level
  within one pixel of its quota, exactly ``n`` in total), so an image matched
  to a reference of its own pixel count gets the reference's histogram,
  level for level;
* float images or float references (float bins): the pixel of rank
  ``r`` of ``n`` gets the reference quantile function at ``(r + 0.5) / n``.

Values are handed out in rank order, so a pixel brighter than another in the
source is never darker in the output. With exact level counts only the ranks
where the output level changes matter, so the pixels are ordered only there
(:func:`histmatch_ml._ordering.strict_partition`): the same output as the
full order, for less work. Volumes (``spatial_dims=3``) are ordered
with 3-D neighbourhoods (see :mod:`histmatch_ml._ordering`).

The default ``ordering="variational"`` leaves no pixel tied on any of
scikit-image's textured samples, where ``"local_means"`` leaves up to a
quarter of a near-flat image (moon: 26%, brick: 22%, camera: 10%) to be ranked
by position; it costs more (``benchmarks/README.md``, section "exact"). Each
channel is matched on its own; it
uses the per-channel reference state, so a matcher fitted with
``per_channel`` can transform with ``exact`` and the other way round.

With ``n_jobs``, the threads a batch leaves over match the channels of a
large image at once, and those beyond the channels share out each channel's
ordering (``bench_exact.py``'s rows "uint8 RGB 2048x2048 (upsampled),
n_jobs=2" and "uint8 grey 2048x2048 (upsampled), n_jobs=2").
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.utils._param_validation import StrOptions

from .. import _ordering, _reference
from ._base import N_QUANTILES, MatchingMethod, Param, finish, register


def target_counts(hist: np.ndarray, n: int) -> np.ndarray:
    """Apportion ``n`` pixels to levels in proportion to ``hist`` (largest remainder).

    Every level gets ``floor(n * hist / total)`` pixels, and the pixels left
    over go one each to the levels with the largest remainders (the lower
    level first among equal remainders). Exact integer arithmetic throughout.

    Parameters
    ----------
    hist : ndarray of int, shape (L,)
        Reference counts per level; at least one positive.
    n : int
        Number of pixels to apportion.

    Returns
    -------
    ndarray of int64, shape (L,)
        Counts summing to ``n``, each within 1 of ``n * hist / hist.sum()``.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.methods.exact import target_counts
    >>> target_counts(np.array([1, 1, 1]), 10)  # 3.33 each: one level gets the extra
    array([4, 3, 3])
    >>> target_counts(np.array([5, 0, 15]), 4)
    array([1, 0, 3])
    """
    hist = np.asarray(hist, dtype=np.int64)
    total = int(hist.sum())
    if n * int(hist.max()) < 2**63:
        counts, remainders = np.divmod(hist * np.int64(n), np.int64(total))
    else:  # n * hist would overflow int64: Python integers, still exact
        scaled = hist.astype(object) * n
        counts = (scaled // total).astype(np.int64)
        remainders = (scaled % total).astype(np.int64)
    deficit = n - int(counts.sum())
    if deficit:
        counts[np.argsort(-remainders, kind="stable")[:deficit]] += 1
    return counts


def level_quota(state: dict, channel: int, n: int, integer_image: bool) -> np.ndarray | None:
    """The pixels each reference level receives (:func:`target_counts`), or None.

    None where the output values are not levels: a float image, or a
    reference without level histograms (the values are then quantiles, one
    per rank).
    """
    if integer_image and "histograms" in state:
        return target_counts(state["histograms"][channel], n)
    return None


def ranked_values(
    state: dict,
    knots: dict,
    channel: int,
    n: int,
    integer_image: bool,
    dtype: np.dtype | None = None,
    quota: np.ndarray | None = None,
) -> np.ndarray:
    """The ``n`` output values of one channel in ascending order.

    Exact level counts (:func:`level_quota`, or ``quota`` if already at hand)
    when the state holds level histograms and the image is of an integer
    dtype; otherwise the reference quantile function at the rank midpoints
    ``(r + 0.5) / n``. The values are computed in float64; level values are
    cast to ``dtype`` (if given) before they are repeated, so the ``n``
    values are never held in float64.
    """
    if quota is None:
        quota = level_quota(state, channel, n, integer_image)
    if quota is not None:
        if "levels" in state:  # a float reference of 8-bit levels
            levels = np.asarray(state["levels"], dtype=np.float64)
        else:
            levels = _reference.level_values(np.dtype(state["dtype"].item()))
        if "scale" in knots:  # images of another dtype, read on the img_as_float scale
            levels = levels * float(knots["scale"])
        if dtype is not None:
            levels = levels.astype(dtype)
        return np.repeat(levels, quota)
    return _reference.quantile_values(knots, channel, (np.arange(n) + 0.5) / n)


def own_levels(state: dict, knots: dict, dtype: np.dtype) -> bool:
    """Whether the ranked values of an image of ``dtype`` are levels of that dtype.

    So for an integer image matched to a reference of its own dtype: the
    values need no rounding or clipping, and can be handed out in the
    image's dtype (a quarter of a float32 plane's bytes for 8 bits).
    """
    return (
        dtype.kind in "ui"
        and "histograms" in state
        and "levels" not in state
        and "scale" not in knots
        and np.dtype(state["dtype"].item()) == dtype
    )


@register
class Exact(MatchingMethod):
    """Exact histogram specification, each channel on its own.

    Reads the estimator parameters ``ordering`` (the strict ordering within a
    source level) and ``strength``. See the module docstring for the rules.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml import HistogramMatcher
    >>> rng = np.random.default_rng(0)
    >>> reference = rng.integers(0, 256, size=(1, 32, 32), dtype=np.uint8)
    >>> image = np.full((1, 32, 32), 7, dtype=np.uint8)  # flat: ordered by position
    >>> out = HistogramMatcher(method="exact").fit(reference).transform(image)
    >>> bool((np.bincount(out.ravel(), minlength=256)
    ...       == np.bincount(reference.ravel(), minlength=256)).all())
    True
    """

    name = "exact"
    summary = "exact histogram specification: the output histogram equals the reference's"
    params = (
        N_QUANTILES,
        Param(
            "ordering",
            "variational",
            [StrOptions(set(_ordering.ORDERINGS))],
            "How pixels of equal value are ranked: a variational restoration (Nikolova & "
            "Steidl) or nested local means (Coltuc et al.).",
            "{" + ", ".join(f'"{o}"' for o in _ordering.ORDERINGS) + "}",
        ),
    )

    #: volumes are ordered with 3-D neighbourhoods (see :mod:`histmatch_ml._ordering`)
    spatial = True
    #: channels-first images (CPU tensors) are ordered and written plane by plane
    planar = True

    def apply(self, image, mask, state, tables, params, out) -> None:
        self.apply_batch([image], [mask], state, tables, params, [out])

    def apply_batch(self, images, masks, state, tables, params, outs) -> None:
        # small images are matched a run at a time, their channels' partitions computed
        # together (_ordering.strict_partitions keys them in few calls); a larger image's
        # channels are ordered one at a time, as they are matched (one order alive)
        small, n_threads = [], params.get("n_threads", 1)
        for i, image in enumerate(images):
            if image.ndim == 3 and image.shape[0] * image.shape[1] <= SMALL_IMAGE:
                small.append(i)
            else:
                _match(image, masks[i], state, tables, params, outs[i], n_threads=n_threads)
        for start in range(0, len(small), RUN):
            run = small[start : start + RUN]
            _match_together(
                [images[i] for i in run],
                [masks[i] for i in run],
                state,
                tables,
                params,
                [outs[i] for i in run],
            )


#: images of at most this many pixels are matched a run at a time (:func:`_match_together`)
SMALL_IMAGE = 1 << 12
#: most small images per run (the orders of a run's channels are alive together)
RUN = 256
#: least pixels of an image that :func:`_match` orders with the threads it is given
#: (below, a pool's start and the threads' contention cost more than they save)
THREADED_PIXELS = 1 << 19


def _counted(image: np.ndarray, mask: np.ndarray | None) -> int:
    """The pixels of one channel that are matched (the masked ones)."""
    return int(np.prod(image.shape[:-1])) if mask is None else int(np.count_nonzero(mask))


def _match_together(images, masks, state: dict, tables: dict, params: dict, outs) -> None:
    """:func:`_match` of small images, their channels' partitions computed in one call."""
    integer = images[0].dtype.kind in "ui"
    quotas = [
        [level_quota(state, c, _counted(image, mask), integer) for c in range(image.shape[-1])]
        for image, mask in zip(images, masks)
    ]
    jobs = [
        (i, c) for i, row in enumerate(quotas) for c, quota in enumerate(row) if quota is not None
    ]
    found = _ordering.strict_partitions(
        [images[i][..., c] for i, c in jobs],
        [_cuts(quotas[i][c]) for i, c in jobs],
        [masks[i] for i, _ in jobs],
        params["ordering"],
    )
    orders: list[dict[int, np.ndarray]] = [{} for _ in images]
    for (i, c), order in zip(jobs, found):
        orders[i][c] = order
    for i, image in enumerate(images):
        _match(image, masks[i], state, tables, params, outs[i], quotas[i], orders[i])


def _cuts(quota: np.ndarray) -> np.ndarray:
    """The ranks where the output level changes, for level counts ``quota``."""
    return np.cumsum(quota[quota > 0])[:-1]


def _match(
    image: np.ndarray,
    mask: np.ndarray | None,
    state: dict,
    tables: dict,
    params: dict,
    out: np.ndarray,
    quotas: list | None = None,
    orders: dict | None = None,
    n_threads: int = 1,
) -> None:
    """Exact specification of one image (or volume), channel by channel, into ``out``.

    ``quotas`` (each channel's :func:`level_quota`) and ``orders`` (channel ->
    its order, for some channels) are used where given, else computed here.
    With ``n_threads`` above 1 (and no ``orders``) up to that many channels of
    an image of at least :data:`THREADED_PIXELS` pixels
    are ordered and matched at once, each into its own channel of the output
    (the ordering's numpy and OpenCV steps release the GIL; every channel
    being matched has its work arrays alive), and the threads left over order
    each channel (:func:`histmatch_ml._ordering.strict_partition`).
    """
    # image: (H, W, C), or a volume (D, H, W, C) ordered in 3-D
    spatial_shape, n_channels = image.shape[:-1], image.shape[-1]
    size = int(np.prod(spatial_shape))
    n = _counted(image, mask)
    integer_image = image.dtype.kind in "ui"
    # at full strength finishing is elementwise (round, clip, cast), so each
    # channel is finished on its own and only one channel's work plane lives;
    # values that are the image's own levels need no finishing at all
    per_channel = params["strength"] == 1.0
    levels = per_channel and own_levels(state, tables, image.dtype)
    work = image.dtype if levels else np.result_type(image.dtype, np.float32)
    # (the image's layout: its planes, if planar)
    matched = None if per_channel else np.empty_like(image, dtype=work)

    def match_channel(c: int) -> None:
        channel = image[..., c]
        quota = level_quota(state, c, n, integer_image) if quotas is None else quotas[c]
        # (the work plane is made after the ordering, whose own work is the peak)
        order = None if orders is None else orders.pop(c, None)
        ordering = params["ordering"]
        if order is None and quota is None:  # one value per rank: the full order
            order = _ordering.strict_order(channel, mask, ordering, n_threads=inner)
        elif order is None:  # one value per level: strict only where the level changes
            cuts = _cuts(quota)
            order = _ordering.strict_partition(channel, cuts, mask, ordering, n_threads=inner)
        # (masked: unmasked pixels keep their value; finish restores them exactly)
        plane = np.empty(size, dtype=work) if mask is None else channel.astype(work).ravel()
        plane[order] = ranked_values(state, tables, c, n, integer_image, work, quota)
        del order
        if levels:
            out[..., c] = plane.reshape(spatial_shape)
        elif per_channel:
            part = np.s_[..., c : c + 1]
            finish(image[part], plane.reshape(*spatial_shape, 1), mask, 1.0, out[part])
        else:
            matched[..., c] = plane.reshape(spatial_shape)

    # (threads go to the channels first, those left over to each channel's ordering)
    if orders is not None or size < THREADED_PIXELS:
        n_threads = 1
    threads = min(n_threads, n_channels)
    inner = n_threads // threads
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(match_channel, range(n_channels)))
    else:
        for c in range(n_channels):  # (one channel's order and plane alive at a time)
            match_channel(c)
    if not per_channel:
        finish(image, matched, mask, params["strength"], out)
