"""``reference="barycenter"``: the 1-D Wasserstein barycentre of the references.

With ``reference="pooled"`` the references' pixels are pooled into one
distribution per channel, so a large image weighs more than a small one, and
references on different intensity scales blur into one wide histogram. The
barycentre instead gives every reference *image* the same weight: in one
dimension the Wasserstein-2 barycentre of distributions is the distribution
whose quantile function is the average of theirs.

Each method says what it averages (:attr:`~.methods.MatchingMethod.barycenter_keys`)
and how one image is summarised (:meth:`~.methods.MatchingMethod.image_summary`):

* ``per_channel`` and ``exact``: each channel's quantile function on the
  evenly spaced probability grid of ``n_quantiles`` points (the state
  ``{"barycenter": (C, n_quantiles), "dtype"}``; its knots are read like any
  quantile function, :func:`knots`);
* ``lab``: the quantiles along every projection axis (the axes drawn once, at
  the first image, and shared);
* ``landmarks``: each image's landmarks (Nyul's standard).

The state is mergeable: the barycentres of ``na`` and ``nb`` images merge into
their average weighted by the numbers of images (:func:`merge`), so
``partial_fit`` over chunks equals ``fit`` on all of them (to float rounding).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from . import _reference
from ._images import Batch

__all__ = ["check_state", "image_quantiles", "knots", "learn", "merge"]


def image_quantiles(batch: Batch, n_quantiles: int) -> dict[str, np.ndarray]:
    """The per-channel quantile functions of a one-image batch on the probability grid.

    Read through the reference quantile function of :mod:`._reference`
    (midpoint convention): ``{"barycenter": (C, n_quantiles), "dtype"}``.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml._barycenter import image_quantiles
    >>> from histmatch_ml._images import to_batch
    >>> batch = to_batch(np.array([[[0, 10], [20, 30]]], dtype=np.uint8))
    >>> image_quantiles(batch, 3)["barycenter"].tolist()
    [[0.0, 15.0, 30.0]]
    """
    state = _reference.learn(batch.images, batch.masks)
    found = _reference.quantile_knots(state)
    grid = _reference.probability_grid(n_quantiles)
    rows = np.tile(grid, (batch.n_channels, 1))
    return {"barycenter": _reference.quantile_rows(found, rows), "dtype": state["dtype"]}


def learn(
    method: Any,
    batch: Batch,
    params: dict[str, Any],
    rng: np.random.Generator | None,
    like: dict | None = None,
    n_threads: int = 1,
) -> dict[str, np.ndarray]:
    """The barycentre of the images of ``batch``: their summaries' average.

    Every image is summarised alone by ``method.image_summary``; the entries
    in ``method.barycenter_keys`` are averaged, the others (a dtype, shared
    projection axes) are the first image's. ``rng`` draws what the first
    summary draws (lab's axes); later images, and every image when ``like``
    (the state so far, for ``partial_fit``) is given, reuse it. With
    ``n_threads`` above 1 the images after the first are summarised in that
    many threads; the sum runs in image order, so the result does not depend
    on it.
    """
    keys = method.barycenter_keys

    def summary(i: int, rng: np.random.Generator | None, first: dict | None) -> dict:
        masks = None if batch.masks is None else [batch.masks[i]]
        one = Batch([batch.images[i]], masks, batch.kind, {})
        return method.image_summary(one, params, rng, like=first)

    head = summary(0, rng if like is None else None, like)
    first = head if like is None else like
    rest = range(1, len(batch.images))
    if n_threads > 1 and len(rest) > 1:
        with ThreadPoolExecutor(min(n_threads, len(rest))) as pool:
            parts = pool.map(lambda i: summary(i, None, first), rest)
            total = _summed(head, parts, keys)
    else:
        total = _summed(head, (summary(i, None, first) for i in rest), keys)
    n = len(batch.images)
    return {k: (v / n if k in keys else v) for k, v in total.items()}


def _summed(head: dict, parts: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """``head`` with the ``keys`` entries of every one of ``parts`` added, in order."""
    total = {k: (np.asarray(v, dtype=np.float64) if k in keys else v) for k, v in head.items()}
    for part in parts:
        for k in keys:
            total[k] = total[k] + part[k]
    return total


def merge(method: Any, a: dict, na: int, b: dict, nb: int) -> dict[str, np.ndarray]:
    """Two barycentres of ``na`` and ``nb`` images as one: averages weighted by images.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml._barycenter import merge
    >>> from histmatch_ml.methods import get_method
    >>> a = {"barycenter": np.array([[0.0, 1.0]]), "dtype": np.array("float64")}
    >>> b = {"barycenter": np.array([[3.0, 4.0]]), "dtype": np.array("float64")}
    >>> merge(get_method("per_channel"), a, 2, b, 1)["barycenter"].tolist()
    [[1.0, 2.0]]
    """
    merged = dict(a)
    for k in method.barycenter_keys:
        merged[k] = (np.asarray(a[k]) * na + np.asarray(b[k]) * nb) / (na + nb)
    return merged


def knots(state: dict) -> dict[str, np.ndarray]:
    """The quantile-function knots of a per-channel barycentre (``{"probs", "values"}``).

    The knots :func:`histmatch_ml._reference.quantile_values` reads: the
    probability grid and the averaged quantiles (non-decreasing by
    construction, made so to the ulp).
    """
    values = np.maximum.accumulate(np.asarray(state["barycenter"], dtype=np.float64), axis=1)
    grid = _reference.probability_grid(values.shape[1])
    return {"probs": np.tile(grid, (len(values), 1)), "values": values}


def check_state(state: dict, n_channels: int | None) -> None:
    """Validate a stored per-channel barycentre; ``ValueError`` naming the entry at fault."""
    if set(state) != {"barycenter", "dtype"}:
        raise ValueError(
            f"a per-channel barycentre holds 'barycenter' and 'dtype'; got {sorted(state)}"
        )
    _reference.dtype_from_name(state["dtype"], "state['dtype']")
    _reference.check_quantile_rows(state["barycenter"], "state['barycenter']", n_channels)
