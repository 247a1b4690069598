"""Dask backend: fit as a tree of merges, transform by blocks of whole images.

:class:`~histmatch_ml.HistogramMatcher` hands a dask collection here (see
:func:`histmatch_ml._images.is_dask_collection`); everything else stays in
memory. Only the method hooks are used, so every method and every state
(exact histograms, exact float bins, lab's projections) scales out alike:

* **fit** (:func:`learn_graph`): every block of a ``dask.array.Array``
  (``(N, H, W[, C])``, rechunked to whole images along the spatial axes) or
  partition of a ``dask.bag.Bag`` (images, ``(n, H, W[, C])`` arrays or file
  paths, read chunk by chunk as an in-memory stream is) is learned with the
  method's ``learn`` on the worker that holds it; the states are merged with
  the method's ``merge`` in a tree (``Bag.reduction`` with ``split_every``,
  dask's ``split_every`` setting or 8). A worker holds one block and one
  state; only the final state (a few arrays) comes back to the client.
  Without an active ``distributed.Client`` the graph runs on dask's threaded
  scheduler (or the one set with ``dask.config.set(scheduler=...)``).
* **transform** (:func:`transform`): ``map_blocks`` over blocks of whole
  images, each image matched on its own: a lazy dask array of the input's
  shape, chunks and dtype.

Randomness: at a first fit every block is learned with a generator seeded
identically (the seed the in-memory fit gives its first chunk), so the random
choices a state carries (lab's rotations) agree across blocks and the states
merge; at ``partial_fit`` every block is learned ``like`` the fitted state.
"""

from __future__ import annotations

import copy
import functools
import math
import sys
from typing import Any, NamedTuple

import numpy as np

from .. import _barycenter, _images

__all__ = ["Learned", "learn", "learn_graph", "transform", "transform_files"]

#: fan-in of the merge tree when dask's ``split_every`` setting is not set
SPLIT_EVERY = 8


class Learned(NamedTuple):
    """A state learned from part of the references, with what it was learned from.

    Attributes
    ----------
    state : dict of str to ndarray
        The method's state (plain arrays).
    n_images, n_pixels : int
        Images and (masked) pixels it was learned from.
    dtype : str
        Their dtype.
    n_channels : int
        Their channel count.
    """

    state: dict
    n_images: int
    n_pixels: int
    dtype: str
    n_channels: int


# ------------------------------------------------------------------ worker side
def _chunks(images: Any, masks: Any, name: str, spatial_dims: int):
    """``(images, masks)`` batches of one block or partition, one chunk in memory at a time."""
    if isinstance(images, np.ndarray):
        return [(images, masks)] if len(images) else []
    images = list(images)
    if not images:
        return []
    masks = None if masks is None else list(masks)
    return _images.stream_chunks(images, masks, name, spatial_dims=spatial_dims)


def _merged(
    method: Any,
    params: dict,
    a: Learned | None,
    b: Learned,
    name: str,
    barycenter: bool = False,
) -> Learned:
    """``a`` and ``b`` as one :class:`Learned`; refuses mixed images.

    Pooled states merge with the method's ``merge``, weighted by pixels;
    barycentre states (``barycenter=True``) as averages weighted by images.
    """
    if a is None:
        return b
    if a.dtype != b.dtype:
        raise TypeError(f"{name} must hold images of one dtype; got {sorted({a.dtype, b.dtype})}")
    if a.n_channels != b.n_channels:
        raise ValueError(
            f"{name} must hold images with one channel count; got "
            f"{sorted({a.n_channels, b.n_channels})}"
        )
    if barycenter:
        state = _barycenter.merge(method, a.state, a.n_images, b.state, b.n_images)
    else:
        state = method.merge(a.state, a.n_pixels, b.state, b.n_pixels, params)
    return Learned(state, a.n_images + b.n_images, a.n_pixels + b.n_pixels, a.dtype, a.n_channels)


def _learn_part(
    images: Any,
    masks: Any,
    method: Any,
    params: dict,
    seed: int | None,
    like: dict | None,
    name: str,
    spatial_dims: int = 2,
    barycenter: bool = False,
) -> Learned | None:
    """The state of one block or partition, None when it is empty."""
    learn = functools.partial(_barycenter.learn, method) if barycenter else method.learn
    learned = None
    for chunk, chunk_masks in _chunks(images, masks, name, spatial_dims):
        batch = _images.to_batch(chunk, chunk_masks, name=name, spatial_dims=spatial_dims)
        method.check_channels(batch.n_channels, name)
        if like is None and learned is None:
            state = learn(batch, params, np.random.default_rng(seed))
        else:
            state = learn(batch, params, None, like=like if like is not None else learned.state)
        piece = Learned(
            state, len(batch.images), batch.n_pixels, batch.dtype.name, batch.n_channels
        )
        learned = _merged(method, params, learned, piece, name, barycenter)
    return learned


def _merge_all(
    pieces: Any, method: Any, params: dict, name: str, barycenter: bool = False
) -> Learned | None:
    """Merge the states of a tree node's children, in order.

    A child is a :class:`Learned`, None (an empty block), or an array leaf's
    one-element object block holding one of those.
    """
    total = None
    for piece in pieces:
        if isinstance(piece, np.ndarray):
            piece = piece.item()
        if piece is not None:
            total = _merged(method, params, total, piece, name, barycenter)
    return total


def _required(total: Learned | None, name: str) -> Learned:
    if total is None:
        raise ValueError(f"{name} must hold at least one image; got an empty dask collection")
    return total


def _transform_block(block: np.ndarray, masks: np.ndarray | None, matcher: Any) -> np.ndarray:
    return matcher.transform(block, mask=masks)


def _transform_part(part: Any, matcher: Any) -> list:
    part = list(part)
    return list(matcher.transform(part)) if part else []


# ------------------------------------------------------------------ client side
def _is_bag(X: Any) -> bool:
    import dask.bag

    return isinstance(X, dask.bag.Bag)


def _whole_images(X: Any, name: str, spatial_dims: int = 2) -> Any:
    """``X`` (a dask array of images, or volumes) checked and rechunked to whole images."""
    import dask.array as da

    if not isinstance(X, da.Array):
        raise TypeError(
            f"{name} must be a dask.array.Array or a dask.bag.Bag; got {type(X).__name__}"
        )
    if X.ndim not in (spatial_dims + 1, spatial_dims + 2):
        what = (
            "must have shape (N, H, W) or (N, H, W, C)"
            if spatial_dims == 2
            else "with spatial_dims=3 must have shape (N, D, H, W) or (N, D, H, W, C)"
        )
        raise ValueError(f"{name} as a dask array {what}; got shape {X.shape}")
    if any(math.isnan(s) for s in X.shape[1:]):
        raise ValueError(
            f"{name} must have known image sizes; got shape {X.shape} (call "
            f"{name}.compute_chunk_sizes() first)"
        )
    _images.check_dtype(np.empty(0, dtype=X.dtype), name)
    return X.rechunk({axis: -1 for axis in range(1, X.ndim)})


def _aligned_mask(mask: Any, X: Any, name: str, spatial_dims: int = 2) -> Any:
    """``mask`` as a boolean dask array chunked along N as ``X`` (whole images), or None."""
    import dask.array as da

    if mask is None:
        return None
    if not isinstance(mask, da.Array):
        mask = np.asarray(mask)
    if mask.dtype != bool:
        raise TypeError(f"mask must be boolean; got dtype {mask.dtype}")
    shape = X.shape[: spatial_dims + 1]
    if mask.shape != shape:
        one = "(H, W)" if spatial_dims == 2 else "(D, H, W)"
        raise ValueError(
            f"mask must be one {one} mask per image of {name}, of shape {shape}; got {mask.shape}"
        )
    chunks = (X.chunks[0],) + (-1,) * spatial_dims
    if isinstance(mask, da.Array):
        return mask.rechunk(chunks)
    return da.from_array(mask, chunks=chunks)


def _checked(X: Any, mask: Any, name: str, spatial_dims: int = 2) -> tuple[Any, Any]:
    """``X`` and ``mask`` checked: a bag and a bag of masks partitioned alike, or an array
    rechunked to whole images and its mask chunked as it."""
    if _is_bag(X):
        if mask is not None and (not _is_bag(mask) or mask.npartitions != X.npartitions):
            raise TypeError(
                f"mask of a dask.bag {name} must be a dask.bag of one mask per image, "
                f"partitioned as {name} ({X.npartitions} partitions); got "
                f"{type(mask).__name__}"
            )
        return X, mask
    X = _whole_images(X, name, spatial_dims)
    return X, _aligned_mask(mask, X, name, spatial_dims)


def _leaves(X: Any, mask: Any, start: int = 0, stop: int | None = None) -> tuple:
    """The keys of partitions ``start:stop`` of a bag of images (and masks), and the bags."""
    from dask.core import flatten

    keys = list(flatten(X.__dask_keys__()))[start:stop]
    mask_keys = None if mask is None else list(flatten(mask.__dask_keys__()))[start:stop]
    return keys, mask_keys, [X] if mask is None else [X, mask]


def _one(value: Any, ndim: int) -> np.ndarray:
    """``value`` as the single element of an object array with ``ndim`` axes."""
    out = np.empty((1,) * ndim, dtype=object)
    out[(0,) * ndim] = value
    return out


def _learn_block(
    images: np.ndarray,
    masks: np.ndarray | None = None,
    *,
    leaf: Any,
    like: dict | None,
) -> np.ndarray:
    """One block's :class:`Learned` (or None), as a one-element block of an object array."""
    return _one(leaf(images, masks, like=like), images.ndim)


def _learned_blocks(X: Any, mask: Any, leaf: Any, like: Any, spatial_dims: int) -> Any:
    """Every block's :class:`Learned` as a one-element block of a lazy object array.

    The learning is a blockwise step over the images and their masks (the
    masks indexed by the images' leading axes), so that dask fuses it with
    the blockwise tasks that produce each block: a block made by such tasks
    is learned in the task that makes it, and a block is learned on the
    worker that holds it. Built once per fit; :func:`_array_leaves` takes
    each window's blocks from it. Its chunks along N are the images' own (a
    block holds one state, but the array is only ever read block by block),
    so dask derives no new per-block metadata for it on the client.
    """
    import dask.array as da

    index = tuple(range(X.ndim))
    arrays = [X, index] if mask is None else [X, index, mask, index[: spatial_dims + 1]]
    return da.blockwise(
        _learn_block,
        index,
        *arrays,
        leaf=leaf,
        like=like,
        adjust_chunks=dict.fromkeys(index[1:], 1),
        dtype=object,
        meta=np.empty((0,) * X.ndim, dtype=object),
    )


def _array_leaves(states: Any, start: int, stop: int | None) -> list:
    """Delayed :class:`Learned` states of blocks ``start:stop`` of :func:`_learned_blocks`.

    The window's keys are named directly and the graph culled to them, with
    dask's blockwise fusion only: ``Array.blocks`` would cache every block's
    key on the array, and dask's low-level fusion names each fused task
    through a process-wide cache, both holding client memory per block fitted.
    """
    import dask
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    stop = states.numblocks[0] if stop is None else min(stop, states.numblocks[0])
    tail = (0,) * (states.ndim - 1)
    keys = [(states.name, i, *tail) for i in range(start, stop)]
    with dask.config.set({"optimization.fuse.active": False}):
        graph = states.__dask_optimize__(states.__dask_graph__(), keys)
    layer = f"delayed-{states.name}-{start}"
    graph = HighLevelGraph.from_collections(layer, graph, dependencies=())
    return [Delayed(key, graph, layer=layer) for key in keys]


def _n_blocks(X: Any) -> int:
    return X.npartitions if _is_bag(X) else X.numblocks[0]


def _barycentric(reference: str) -> bool:
    if reference not in ("pooled", "barycenter"):
        raise ValueError(f"reference must be 'pooled' or 'barycenter'; got {reference!r}")
    return reference == "barycenter"


def _split_every(split_every: int | None) -> int:
    if split_every is None:
        import dask

        configured = dask.config.get("split_every", None)
        split_every = configured if isinstance(configured, int) else SPLIT_EVERY
    if not isinstance(split_every, int) or split_every < 2:
        raise ValueError(f"split_every must be an integer >= 2; got {split_every!r}")
    return split_every


class _Plan(NamedTuple):
    """What every window's tree of a fit shares (built once per fit by :func:`_plan`)."""

    X: Any  # a bag of images, or the lazy array of each block's state
    mask: Any  # a bag of masks, or None
    leaf: Any  # (images, masks, like=) -> Learned or None
    merge: Any  # (pieces) -> Learned or None
    like: Any  # the fitted state as a Delayed, or None
    split_every: int


def _plan(
    X: Any,
    mask: Any,
    method: Any,
    params: dict,
    seed: int | None,
    like: dict | None,
    name: str,
    split_every: int,
    spatial_dims: int,
    barycenter: bool,
) -> _Plan:
    """The :class:`_Plan` of a fit of the checked ``X`` (and ``mask``)."""
    import dask

    like_state = None if like is None else dask.delayed(like, traverse=False)
    leaf = functools.partial(
        _learn_part,
        method=method,
        params=params,
        seed=seed,
        name=name,
        spatial_dims=spatial_dims,
        barycenter=barycenter,
    )
    merge = functools.partial(
        _merge_all, method=method, params=params, name=name, barycenter=barycenter
    )
    if not _is_bag(X):
        X, mask = _learned_blocks(X, mask, leaf, like_state, spatial_dims), None
    return _Plan(X, mask, leaf, merge, like_state, split_every)


def _tree(plan: _Plan, start: int = 0, stop: int | None = None) -> Any:
    """The graph learning blocks ``start:stop`` (one task each) and merging them in a tree.

    Leaves learn one block or partition each; tasks ``(layer, d, j)`` merge
    up to ``split_every`` nodes of level ``d - 1``. Returns a ``Delayed`` of
    the root.
    """
    import uuid

    import dask
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    layer = f"histmatch-fit-{uuid.uuid4().hex}"
    dsk: dict = {}
    if _is_bag(plan.X):
        keys, mask_keys, dependencies = _leaves(plan.X, plan.mask, start, stop)
        if plan.like is not None:
            dependencies.append(plan.like)
        like_key = None if plan.like is None else plan.like.key
        level = []
        for i, key in enumerate(keys):
            mask_key = None if mask_keys is None else mask_keys[i]
            dsk[(layer, 0, i)] = (_apply_leaf, plan.leaf, key, mask_key, like_key)
            level.append((layer, 0, i))
    else:
        dependencies = _array_leaves(plan.X, start, stop)
        level = [state.key for state in dependencies]
    if not level:
        return dask.delayed(None)
    depth = 0
    while len(level) > 1 or depth == 0:
        depth += 1
        every = plan.split_every
        groups = [level[j : j + every] for j in range(0, len(level), every)]
        level = []
        for j, group in enumerate(groups):
            dsk[(layer, depth, j)] = (plan.merge, group)
            level.append((layer, depth, j))
    graph = HighLevelGraph.from_collections(layer, dsk, dependencies=dependencies)
    return Delayed(level[0], graph, layer=layer)


def _apply_leaf(leaf: Any, images: Any, masks: Any, like: dict | None) -> Learned | None:
    return leaf(images, masks, like=like)


def learn_graph(
    X: Any,
    mask: Any,
    method: Any,
    params: dict,
    *,
    seed: int | None,
    like: dict | None = None,
    name: str = "X",
    split_every: int | None = None,
    spatial_dims: int = 2,
    reference: str = "pooled",
) -> Any:
    """The lazy fit of ``X``: a ``dask.delayed`` object whose value is a :class:`Learned`.

    One task per block learns it with the method's ``learn``; tasks of
    ``split_every`` states merge them with its ``merge``, level by level,
    up to one state. :func:`learn` computes such trees over windows of
    blocks, so that the graph on the client stays small.

    Parameters
    ----------
    X : dask.array.Array or dask.bag.Bag
        Reference images: an array ``(N, H, W[, C])`` or, with
        ``spatial_dims=3``, ``(N, D, H, W[, C])`` (any chunks; rechunked to
        whole images), or a bag of images, arrays or file paths.
    mask : dask or numpy array of bool, dask.bag.Bag or None
        For an array, one mask per image, shape ``(N, H, W)`` (``(N, D, H,
        W)`` for volumes); for a bag, a bag of masks partitioned as ``X``.
    method : MatchingMethod
        The method whose ``learn`` and ``merge`` are run.
    params : dict
        The parameters its hooks read.
    seed : int or None
        Seeds the generator every block is learned with at a first fit.
    like : dict or None
        The fitted state (``partial_fit``): every block is learned like it.
    name : str
        The argument's name in errors.
    split_every : int or None
        Fan-in of the merge tree: states merged per task. None means dask's
        ``split_every`` setting, else 8.
    spatial_dims : {2, 3}
        2: images ``(N, H, W[, C])``; 3: volumes ``(N, D, H, W[, C])`` (masks
        ``(N, D, H, W)``).
    reference : {"pooled", "barycenter"}
        Pool the references' pixels (states merged by pixels), or average
        their quantile functions (states merged by images).

    Returns
    -------
    learned : dask.delayed.Delayed
        Computes to a :class:`Learned` (an empty collection raises
        ``ValueError``), on the active ``distributed.Client`` if any, else on
        dask's threaded scheduler (or the one configured).

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> from histmatch_ml.backends.dask import learn_graph
    >>> from histmatch_ml.methods import get_method
    >>> refs = da.from_array(np.arange(96, dtype=np.uint8).reshape(6, 4, 4), chunks=2)
    >>> lazy = learn_graph(refs, None, get_method("per_channel"), {"n_quantiles": 8}, seed=0)
    >>> learned = lazy.compute()
    >>> learned.n_images, learned.n_pixels, int(learned.state["histograms"].sum())
    (6, 96, 96)
    """
    import dask

    X, mask = _checked(X, mask, name, spatial_dims)
    every, barycenter = _split_every(split_every), _barycentric(reference)
    plan = _plan(X, mask, method, params, seed, like, name, every, spatial_dims, barycenter)
    return dask.delayed(_required)(_tree(plan), name)


#: blocks per window of :func:`learn`: one graph of at most this many leaves at a time
WINDOW_BLOCKS = 256


def learn(
    X: Any,
    mask: Any,
    method: Any,
    params: dict,
    *,
    seed: int | None,
    like: dict | None = None,
    name: str = "X",
    split_every: int | None = None,
    window: int = WINDOW_BLOCKS,
    spatial_dims: int = 2,
    reference: str = "pooled",
) -> Learned:
    """The :class:`Learned` state of ``X``, computed as trees over windows of blocks.

    Each window of ``window`` blocks is one graph (:func:`learn_graph`'s
    tree); on a ``distributed`` cluster two windows are in flight at a time,
    so workers do not wait at the boundaries. The windows' states are merged
    on the client in a balanced way (states of equal weight first), holding
    a few states. The client's memory thus depends on ``window``, not on the
    number of blocks.

    Examples
    --------
    >>> import numpy as np, dask.bag as db
    >>> from histmatch_ml.backends.dask import learn
    >>> from histmatch_ml.methods import get_method
    >>> images = [np.full((4, 4, 3), v, dtype=np.uint8) for v in range(5)]
    >>> bag = db.from_sequence(images, npartitions=5)
    >>> learn(bag, None, get_method("per_channel"), {"n_quantiles": 8}, seed=0, window=2).n_images
    5
    """
    import dask
    from dask.base import get_scheduler

    X, mask = _checked(X, mask, name, spatial_dims)
    every, barycenter = _split_every(split_every), _barycentric(reference)
    plan = _plan(X, mask, method, params, seed, like, name, every, spatial_dims, barycenter)
    roots = (  # (built one window at a time: the client holds the graphs of two)
        _tree(plan, start, start + window) for start in range(0, _n_blocks(X), window)
    )
    scheduler = get_scheduler(collections=[X])
    distributed = sys.modules.get("distributed")
    client = getattr(scheduler, "__self__", None)
    if distributed is None or not isinstance(client, distributed.Client):
        client = None
    stack: list[tuple[Learned, int]] = []  # (state, level): a binary counter of merges

    def push(learned: Learned | None) -> None:
        level = 0
        while learned is not None and stack and stack[-1][1] == level:
            learned = _merged(method, params, stack.pop()[0], learned, name, barycenter)
            level += 1
        if learned is not None:
            stack.append((learned, level))

    if client is not None:
        pending = []
        for root in roots:
            pending.append(client.compute(root))
            if len(pending) > 1:
                push(pending.pop(0).result())
        for future in pending:
            push(future.result())
    else:
        for root in roots:
            (learned,) = dask.compute(root)
            push(learned)
    total = None
    for learned, _ in stack:
        total = _merged(method, params, total, learned, name, barycenter)
    return _required(total, name)


def transform(matcher: Any, X: Any, mask: Any = None, name: str = "X") -> Any:
    """``matcher.transform`` of a dask collection, lazily, block by block.

    Parameters
    ----------
    matcher : HistogramMatcher
        A fitted matcher; a copy travels to the workers once, as one task.
    X : dask.array.Array or dask.bag.Bag
        Images ``(N, H, W[, C])`` (volumes ``(N, D, H, W[, C])`` for a matcher
        with ``spatial_dims=3``) in any chunks, or a bag of images.
    mask : dask or numpy array of bool or None
        One mask per image (arrays only), shape ``(N, H, W)``, or ``(N, D, H, W)``
        for a matcher with ``spatial_dims=3``.
    name : str
        The argument's name in errors.

    Returns
    -------
    matched : dask.array.Array or dask.bag.Bag
        For an array: lazy, of ``X``'s shape, chunks and dtype, each image
        matched on its own (blocks of whole images are matched and cut back
        to ``X``'s chunks). For a bag: a bag of the matched images.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> from histmatch_ml import HistogramMatcher
    >>> from histmatch_ml.backends.dask import transform
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    >>> matcher = HistogramMatcher().fit(images[:2])
    >>> lazy = transform(matcher, da.from_array(images, chunks=(4, 8, 8, 3)))
    >>> lazy.chunks[0], bool((lazy.compute() == matcher.transform(images)).all())
    ((4, 2), True)
    """
    import dask
    import dask.array as da

    from ..io import fingerprint

    # a copy, named by its fingerprint: the lazy result does not change if the matcher does
    model = dask.delayed(
        copy.deepcopy(matcher), name=f"histmatch-matcher-{fingerprint(matcher)}", traverse=False
    )
    if _is_bag(X):
        if mask is not None:
            raise TypeError(
                f"mask is not supported for a dask.bag {name}; got {type(mask).__name__}"
            )
        return X.map_partitions(_transform_part, model)
    dims = matcher.spatial_dims
    whole = _whole_images(X, name, dims)
    channels = whole.shape[-1] if whole.ndim == dims + 2 else 1
    if channels != matcher.n_channels_:
        raise _images.channel_mismatch(name, channels, matcher.n_channels_)
    masks = _aligned_mask(mask, whole, name, dims)
    index = ("ndhwc" if dims == 3 else "nhwc")[: whole.ndim]
    meta = np.empty((0,) * whole.ndim, dtype=whole.dtype)
    out = da.blockwise(
        _transform_block,
        index,
        whole,
        index,
        masks,
        None if masks is None else index[: dims + 1],
        model,
        None,
        dtype=whole.dtype,
        meta=meta,
    )
    return out if out.chunks == X.chunks else out.rechunk(X.chunks)


def transform_files(
    matcher: Any,
    inputs: Any,
    output_dir: Any,
    *,
    overwrite: bool = False,
    png_compression: int = 1,
    client: Any = None,
) -> dict[str, Any]:
    """Match image files on a dask cluster and write them: ``histmatch transform``'s twin.

    Every worker receives ``matcher`` once; each reads its files, matches and
    writes them atomically under ``output_dir`` with the same relative paths
    and formats as the command line (16-bit stays 16-bit, alpha is kept). A
    file that fails is reported on stderr as ``error: <file>: <why>`` and the
    others go on.

    Parameters
    ----------
    matcher : HistogramMatcher
        A fitted matcher.
    inputs : list of str or os.PathLike
        Image files, directories (read recursively) or glob patterns; the
        paths must be readable by the workers.
    output_dir : str or os.PathLike
        Where to write (outside the inputs); created if missing.
    overwrite : bool, default=False
        Replace existing outputs (otherwise an existing output is an error
        before anything is written).
    png_compression : int, default=1
        zlib level of PNG outputs.
    client : distributed.Client, optional
        The cluster to run on; default: the active client.

    Returns
    -------
    summary : dict
        ``"written"`` (int), ``"failed"`` (the paths that failed) and
        ``"stopped"`` (why the run stopped early, or None).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from PIL import Image
    >>> from distributed import Client
    >>> from histmatch_ml import HistogramMatcher
    >>> from histmatch_ml.backends.dask import transform_files
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> rng = np.random.default_rng(0)
    >>> Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / "a.png")
    >>> matcher = HistogramMatcher().fit(rng.integers(0, 128, (2, 8, 8, 3), dtype=np.uint8))
    >>> with Client(processes=False, n_workers=1, dashboard_address=":0") as client:
    ...     summary = transform_files(matcher, [folder / "a.png"], folder / "out")
    >>> summary["written"], summary["failed"], sorted(p.name for p in (folder / "out").iterdir())
    (1, [], ['a.png'])
    """
    from ..cli import _dask_runner

    return _dask_runner.transform_files(
        matcher,
        list(inputs),
        output_dir,
        overwrite=overwrite,
        png_compression=png_compression,
        client=client,
    )
