"""``HistogramMatcher``: the scikit-learn estimator (plumbing only).

Inputs go through :mod:`histmatch_ml._images`, the learned state lives in plain
arrays built by the method modules in :mod:`histmatch_ml.methods`; this module
validates parameters (once, in ``fit``), keeps the fitted attributes and loops
over images. Its parameter constraints and the "Parameters" section of its
docstring are built from the methods' declarations (:class:`~.methods.Param`),
and rebuilt whenever a method is registered.
"""

from __future__ import annotations

import inspect
import os
import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
from joblib import effective_n_jobs
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import _barycenter, _images
from .methods import (
    Param,
    available_methods,
    declared_names,
    declared_params,
    get_method,
    on_register,
)
from .methods._base import warn_scale_mismatch
from .methods.landmarks import DEFAULT_LANDMARKS

__all__ = ["HistogramMatcher", "estimator_params"]


def _own_params() -> tuple[Param, ...]:
    """The parameters the estimator itself reads (the method's are declared by the methods)."""
    methods = available_methods()
    lines = [f'``"{m}"``: {get_method(m).summary}.' for m in methods]
    return (
        Param(
            "method",
            "per_channel",
            [StrOptions(set(methods))],
            " ".join(lines),
            "{" + ", ".join(f'"{m}"' for m in methods) + "}",
        ),
        Param(
            "strength",
            1.0,
            [Interval(Real, 0, 1, closed="both")],
            "Blend between the input (0) and the fully matched image (1).",
            "float in [0, 1]",
        ),
        Param(
            "scale",
            "dtype",
            [StrOptions({"dtype", "raw"})],
            'How images of another dtype than the references are read. "dtype": both on '
            "scikit-image's img_as_float scale (unsigned integers on [0, 1], signed on "
            "[-1, 1], floats as they are), so an 8-bit reference gives a 16-bit or float "
            '[0, 1] image its look. "raw": raw values, for arbitrary units (CT, MR, remote '
            "sensing), with a warning when the dtypes differ. Same dtypes: the two agree.",
            '{"dtype", "raw"}',
        ),
        Param(
            "reference",
            "pooled",
            [StrOptions({"pooled", "barycenter"})],
            'What the references make. "pooled": one distribution of all their pixels (larger '
            'images weigh more). "barycenter": the 1-D Wasserstein barycentre of the '
            "references, the average of their quantile functions (per channel; per projection "
            'axis for "lab"; the average of their landmarks for "landmarks"), every reference '
            "image weighing the same.",
            '{"pooled", "barycenter"}',
        ),
        Param(
            "spatial_dims",
            2,
            [Interval(Integral, 2, 3, closed="both")],
            "2 for images, 3 for volumes: (N, D, H, W) grey and (N, D, H, W, C) arrays, "
            "lists of (D, H, W[, C]) volumes, channels-first (C, D, H, W) tensors, masks of "
            "the volumes' shape.",
            "{2, 3}",
        ),
        Param(
            "verbose",
            False,
            ["boolean"],
            "Show a progress bar (tqdm) while fitting on a stream of images or files.",
            "bool",
        ),
        Param(
            "n_jobs",
            None,
            [Interval(Integral, -1, None, closed="left"), None],
            "Threads used by ``transform`` to match the images of a batch in parallel (and, "
            'with ``method="exact"``, when the batch has fewer images than threads, to '
            "order the channels of an image at once, with one channel's work memory per "
            "thread, and within a channel), and by ``fit`` to read files and to summarise "
            "the references of a barycentre (the kernels release the GIL); None means 1 and "
            "-1 all cores. Results do not depend on it. OpenCV "
            "already spreads a per_channel uint8 image's histograms and lookup over its own "
            "threads, so on few cores more threads may not speed that up.",
            "int or None",
        ),
        Param(
            "random_state",
            None,
            ["random_state"],
            'Seeds every random choice (the projection directions of ``"lab"``); the other '
            "built-in methods are deterministic.",
            "int, RandomState instance or None",
        ),
    )


def estimator_params() -> dict[str, tuple[Param, list[str] | None]]:
    """Every parameter of :class:`HistogramMatcher`: name -> (declaration, methods).

    ``methods`` lists the methods that read a method parameter, and is None
    for the parameters every method uses (``method``, ``strength``,
    ``n_jobs``, ``random_state``). The command line builds its options from
    this.

    Examples
    --------
    >>> from histmatch_ml.matcher import estimator_params
    >>> params = estimator_params()
    >>> params["ordering"][1], params["strength"][1]
    (['exact'], None)
    """
    own = {p.name: (p, None) for p in _own_params()}
    method, strength, scale = own["method"], own["strength"], own["scale"]
    verbose, n_jobs, random_state = own["verbose"], own["n_jobs"], own["random_state"]
    return {
        "method": method,
        "strength": strength,
        "scale": scale,
        "reference": own["reference"],
        "spatial_dims": own["spatial_dims"],
        **declared_params(),
        "verbose": verbose,
        "n_jobs": n_jobs,
        "random_state": random_state,
    }


def _describe(param: Param, methods: list[str] | None) -> str:
    """One numpydoc entry of the Parameters section."""
    default = f'"{param.default}"' if isinstance(param.default, str) else repr(param.default)
    text = param.doc
    if methods is not None:
        text += " Used by method=" + ", ".join(f'"{m}"' for m in methods) + "."
    body = textwrap.fill(text, 79, initial_indent=" " * 8, subsequent_indent=" " * 8)
    return f"    {param.name} : {param.type_doc}, default={default}\n{body}"


def _explicit_params() -> tuple[str, ...]:
    """The keywords written out in ``HistogramMatcher.__init__`` (the built-in methods')."""
    code = HistogramMatcher.__init__.__code__
    return code.co_varnames[1 : code.co_argcount + code.co_kwonlyargcount]


def _refresh() -> None:
    """Rebuild the constraints, signature and docstring of the estimator from the declarations.

    Called at import and after every method registration, so a method added
    in a module of its own brings its parameters to the estimator, its
    ``get_params``/``set_params``, its docstring and the command line.
    """
    params = estimator_params()
    HistogramMatcher._parameter_constraints = {n: p.constraint for n, (p, _) in params.items()}
    explicit = _explicit_params()
    HistogramMatcher._extra_defaults = tuple(
        (n, p.default) for n, (p, _) in declared_params().items() if n not in explicit
    )
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method = inspect.Parameter(
        "method", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=params["method"][0].default
    )
    others = [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=p.default)
        for n, (p, _) in params.items()
        if n != "method"
    ]
    init = HistogramMatcher.__init__
    init.__signature__ = inspect.Signature([self_param, method, *others])
    HistogramMatcher.__doc__ = _DOC.replace(
        "{parameters}", "\n".join(_describe(p, m) for p, m in params.values())
    )


_DOC = """Match the histograms of images to a reference learned from a set of images.

    ``fit`` pools the pixels of any number of reference images (optionally
    masked) into one reference distribution per channel; ``transform`` remaps
    every image of a batch to it, each image on its own. The learned state is
    mergeable, so ``partial_fit`` over chunks equals ``fit`` on all of them.

    Parameters
    ----------
{parameters}

    Attributes
    ----------
    method_ : str
        The method the reference state was learned with.
    reference_mode_ : str
        The ``reference`` the state was learned with: ``"pooled"`` or
        ``"barycenter"`` (whose per-channel state is ``"barycenter"`` of shape
        ``(n_channels_, n_quantiles)``, the averaged quantile functions).
    reference_ : dict of str to ndarray
        The learned reference state, plain arrays only. For ``per_channel``
        and ``exact``: ``"histograms"`` of shape ``(n_channels_, 256 or
        65536)`` (8/16-bit references), or for float references the
        distinct values and their counts: ``"keys"`` and ``"counts"`` (all
        channels one after the other, ``"offsets"`` ``(n_channels_ + 1,)``
        where each starts), ``"bits"`` (their resolution) and ``"extremes"``
        ``(n_channels_, 2)``; and ``"dtype"``.
        For ``lab``: ``"rotations"`` of shape ``(K, 3, 3)`` with ``K = n_iter +
        n_refine`` at the first fit (seeded projection axes, fixed then),
        ``"projected_quantiles"`` of shape ``(3 * K, n_quantiles)`` (the
        reference's LAB pixels along each axis) and ``"dtype"``; no reference
        image is kept. For
        ``luminance``: the per-channel state of the references' CIELAB L*
        (one channel, whatever ``n_channels_``).
    dtype_ : str
        dtype of the reference images.
    n_channels_ : int
        Channels per reference image (1 for greyscale and tabular input).
    n_images_seen_ : int
        Number of reference images learned from.
    n_pixels_seen_ : int
        Number of reference pixels learned from (masked pixels only).
    tables_ : dict of str to ndarray
        What ``transform`` derives from ``reference_``, computed at fit (plain
        arrays). For ``per_channel`` and ``exact``: ``"values"`` (and for
        histogram states ``"probs"``) of shape ``(n_channels_, K)``, the knots
        of each channel's reference quantile function (of L* for
        ``luminance``). Empty for ``lab``.
    n_features_in_ : int
        Pixels per row; set only when fitted on a 2-D ``(N, P)`` array.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Set only when fitted on a DataFrame with string column names.

    See Also
    --------
    match_histograms : One image matched to one reference.
    skimage.exposure.match_histograms : Per-channel matching to a single image.
    sklearn.preprocessing.QuantileTransformer : Per-feature quantile mapping.

    Notes
    -----
    Accepted inputs: an ndarray ``(N, H, W, C)``, ``(N, H, W)`` or ``(N, P)``
    (rows of flattened greyscale pixels, so a DataFrame's rows are matched as
    images of pixels); a list or tuple of ``(H, W)`` / ``(H, W, C)`` images
    of any sizes (a list comes back); a single ``PIL.Image`` (the same mode
    comes back; an alpha channel is kept as is); a channels-first torch
    tensor ``(C, H, W)`` / ``(N, C, H, W)`` (a tensor of the same dtype and
    device comes back; on a GPU ``"per_channel"`` matches the batch there, see
    :mod:`histmatch_ml.backends.torch`); a dask array ``(N, H, W[, C])`` (a lazy
    dask array comes back). With ``spatial_dims=3``: ``(N, D, H, W)`` and
    ``(N, D, H, W, C)`` arrays of volumes, lists of ``(D, H, W[, C])`` volumes,
    channels-first ``(C, D, H, W)`` / ``(N, C, D, H, W)`` tensors, masks of the
    volumes' ``(D, H, W)`` shape. ``fit`` and ``partial_fit`` also take file paths and
    iterables (generators) of images, read chunk by chunk, and dask arrays
    and bags, learned as a tree of merges where dask runs. Supported dtypes
    are uint8, uint16, int16, float32 and float64 (also int8, 32/64-bit
    integers within +-2**53 and float16); the output has the input's dtype,
    integers rounded to nearest and clipped, floats never clipped or
    quantised. With ``scale="dtype"`` an image of another dtype than the
    references is read on scikit-image's ``img_as_float`` scale. Outputs
    are images, so ``set_output`` leaves them as arrays. Masks are boolean, one per image, of the
    image's height and width: only masked pixels are counted and changed.

    Both conventions are midpoint ones: a level holding ``h`` of ``n`` pixels
    sits at probability ``(count below + h / 2) / n``, in the image and in
    the reference, so an image matched to its own histogram is unchanged.

    ``partial_fit`` is exact: the state after any sequence of ``partial_fit``
    calls is the state of ``fit`` on all the images, bit for bit. For 8/16-bit
    references it holds one count per level. For floats it holds every
    distinct value and its count, so the reference quantile function is
    exact (each value at its midpoint CDF, linear in between) up to
    262,144 distinct values per channel; past that, values are counted in
    bins of a fixed grid of float bit patterns, as fine as that many bins
    allow (``2**-bits`` of a value's magnitude, ``bits`` being 14 or more
    for typical data), and the quantile function is within one bin of the
    pooled data's at every probability. The extremes are kept exactly.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml import HistogramMatcher
    >>> rng = np.random.default_rng(0)
    >>> refs = rng.integers(100, 200, size=(4, 32, 32, 3), dtype=np.uint8)
    >>> images = rng.integers(0, 80, size=(2, 16, 16, 3), dtype=np.uint8)
    >>> matcher = HistogramMatcher().fit(refs)
    >>> out = matcher.transform(images)
    >>> out.shape, out.dtype
    ((2, 16, 16, 3), dtype('uint8'))
    >>> bool(out.min() >= 100 and out.max() <= 199)
    True
    """


# (auto_wrap_output_keys=None: outputs are images, not named features, so scikit-learn's
# set_output wrapper, which only returns them unchanged, is not put around transform)
class HistogramMatcher(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    # (the docstring and the parameter constraints are built by _refresh)
    #: (name, default) of the parameters declared by methods beyond the built-in ones (_refresh)
    _extra_defaults: tuple[tuple[str, Any], ...] = ()

    def __init__(
        self,
        method: str = "per_channel",
        *,
        strength: float = 1.0,
        scale: str = "dtype",
        reference: str = "pooled",
        spatial_dims: int = 2,
        grid_cells: int = 65536,
        n_quantiles: int = 1024,
        ordering: str = "variational",
        n_iter: int = 12,
        n_refine: int = 10,
        lab_mode: str = "joint",
        regrain: bool = False,
        landmarks: tuple[float, ...] = DEFAULT_LANDMARKS,
        standard_range: tuple[float, float] | None = None,
        verbose: bool = False,
        n_jobs: int | None = None,
        random_state: int | np.random.RandomState | None = None,
        **params: Any,
    ) -> None:
        self.method = method
        self.strength = strength
        self.scale = scale
        self.reference = reference
        self.spatial_dims = spatial_dims
        self.grid_cells = grid_cells
        self.n_quantiles = n_quantiles
        self.ordering = ordering
        self.n_iter = n_iter
        self.n_refine = n_refine
        self.lab_mode = lab_mode
        self.regrain = regrain
        self.landmarks = landmarks
        self.standard_range = standard_range
        self.verbose = verbose
        self.n_jobs = n_jobs
        self.random_state = random_state
        # parameters declared by methods registered beyond the built-in ones
        for name, default in HistogramMatcher._extra_defaults:
            setattr(self, name, params.pop(name, default))
        if params:
            raise TypeError(
                f"HistogramMatcher got unexpected keyword arguments {sorted(params)}; "
                f"the parameters are {sorted(estimator_params())}"
            )

    # ------------------------------------------------------------------ helpers
    def _params(self) -> dict[str, Any]:
        """The parameters the kernels read, as plain values."""
        params = {name: getattr(self, name) for name in declared_names()}
        params["strength"] = float(self.strength)
        return params

    def _fitted_method(self):
        """The method ``transform`` applies: ``method``, which must read the fitted state."""
        method = get_method(self.method)
        if get_method(self.method_).state_kind != method.state_kind:
            raise ValueError(
                f"method is {self.method!r} but the matcher was fitted with "
                f"{self.method_!r}, whose learned state it cannot use; call fit again"
            )
        return method

    # --------------------------------------------------------------------- fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None, *, mask: Any = None) -> HistogramMatcher:
        """Learn the reference distribution from a set of reference images.

        Parameters
        ----------
        X : array-like, list of images, PIL.Image, tensor, file paths or an iterable
            Reference images (see Notes of the class for the accepted forms).
            Images may have different sizes; their pixels are pooled. File
            paths (one, or a list) are read as the command line reads them; an
            iterator or generator of images or paths is learned from chunk by
            chunk, so memory holds one chunk, not the data set. A dask array
            or bag (of images or paths) is learned block by block on the
            workers, and only the state comes back.
        y : None
            Ignored; present for API consistency.
        mask : array-like of bool or list of arrays, optional
            One ``(H, W)`` boolean mask per image; only masked pixels count.

        Returns
        -------
        self : HistogramMatcher
            The fitted estimator.
        """
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
            delattr(self, attr)
        return self._learn_any(X, mask, "X")

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: Any, y: Any = None, *, mask: Any = None) -> HistogramMatcher:
        """Add more reference images to the learned distribution.

        ``partial_fit(a); partial_fit(b)`` equals ``fit([a, b])`` exactly for
        8/16-bit references and within the tolerance given in the class Notes
        for floats. Parameters are validated at the first call.

        Parameters
        ----------
        X : array-like, list of images, PIL.Image, tensor, file paths or an iterable
            More reference images, of the dtype and channel count seen so far
            (streams and paths as in :meth:`fit`).
        y : None
            Ignored; present for API consistency.
        mask : array-like of bool or list of arrays, optional
            One ``(H, W)`` boolean mask per image.

        Returns
        -------
        self : HistogramMatcher
            The updated estimator.
        """
        return self._learn_any(X, mask, "X")

    def _learn_any(self, X: Any, mask: Any, name: str) -> HistogramMatcher:
        """Learn from a batch, or from a stream chunk by chunk (merged as ``partial_fit``)."""
        if _images.is_dask_collection(X):  # a tree of merges where dask runs
            from .backends import dask as dask_backend

            first = not hasattr(self, "reference_")
            if not first:  # (the method first: blocks are learned like the fitted state)
                self._check_more(self.dtype_, self.n_channels_, name)
            learned = dask_backend.learn(
                X,
                mask,
                get_method(self.method),
                self._params(),
                seed=self._first_seed() if first else None,
                like=None if first else self.reference_,
                name=name,
                spatial_dims=self.spatial_dims,
                reference=self.reference,
            )
            if not first:
                self._check_more(learned.dtype, learned.n_channels, name)
            return self._absorb(*learned)
        if not _images.is_stream(X):
            return self._learn(X, mask, name)
        from tqdm.auto import tqdm

        with tqdm(desc="fit", unit="img", disable=not self.verbose) as bar:
            chunks = _images.stream_chunks(
                X, mask, name, spatial_dims=self.spatial_dims, n_threads=self._n_threads()
            )
            for images, masks in chunks:
                self._learn(images, masks, name)
                bar.update(len(images))
        return self

    def _learn(self, X: Any, mask: Any, name: str) -> HistogramMatcher:
        """Learn from (more) references; errors name the caller's argument ``name``."""
        method, params = get_method(self.method), self._params()
        first = not hasattr(self, "reference_")
        batch = _images.to_batch(
            X, mask, name=name, estimator=self, reset=first, spatial_dims=self.spatial_dims
        )
        method.check_channels(batch.n_channels, name)
        if first:
            rng = np.random.default_rng(self._first_seed())
            if self.reference == "barycenter":
                state = _barycenter.learn(method, batch, params, rng, n_threads=self._n_threads())
            else:
                state = method.learn(batch, params, rng)
        else:
            self._check_more(batch.dtype.name, batch.n_channels, name)
            if self.reference_mode_ == "barycenter":
                state = _barycenter.learn(
                    method, batch, params, None, like=self.reference_, n_threads=self._n_threads()
                )
            else:
                state = method.learn(batch, params, None, like=self.reference_)
        n_images, n_pixels = len(batch.images), batch.n_pixels
        return self._absorb(state, n_images, n_pixels, batch.dtype.name, batch.n_channels)

    def _n_threads(self) -> int:
        """The threads ``n_jobs`` asks for (None: 1, -1: all cores)."""
        return 1 if self.n_jobs in (None, 1) else effective_n_jobs(self.n_jobs)

    def _first_seed(self) -> int:
        """The seed of the generator a first fit learns with (from ``random_state``)."""
        return check_random_state(self.random_state).randint(np.iinfo(np.int32).max)

    def _check_more(self, dtype: str, n_channels: int, name: str) -> None:
        """Refuse more references that the fitted state cannot take in."""
        if self.method != self.method_:
            raise ValueError(
                f"method is {self.method!r} but the matcher was fitted with "
                f"{self.method_!r}; call fit to start again"
            )
        if self.reference != self.reference_mode_:
            raise ValueError(
                f"reference is {self.reference!r} but the matcher was fitted with "
                f"reference={self.reference_mode_!r}; call fit to start again"
            )
        if dtype != self.dtype_:
            raise TypeError(
                f"{name} must have the dtype of the references seen so far "
                f"({self.dtype_}); got {dtype}"
            )
        if n_channels != self.n_channels_:
            raise _images.channel_mismatch(name, n_channels, self.n_channels_)

    def _absorb(
        self, state: dict, n_images: int, n_pixels: int, dtype: str, n_channels: int
    ) -> HistogramMatcher:
        """Take in a state learned from (checked) references: the first, or merged in.

        Barycentre states merge weighted by images, pooled ones by pixels.
        """
        method, params = get_method(self.method), self._params()
        if not hasattr(self, "reference_"):
            self.method_ = method.name
            self.reference_mode_ = self.reference
            self.dtype_ = dtype
            self.n_channels_ = n_channels
            self.n_images_seen_ = n_images
            self.n_pixels_seen_ = n_pixels
        else:
            if self.reference_mode_ == "barycenter":
                seen = self.n_images_seen_
                state = _barycenter.merge(method, self.reference_, seen, state, n_images)
            else:
                state = method.merge(self.reference_, self.n_pixels_seen_, state, n_pixels, params)
            self.n_images_seen_ += n_images
            self.n_pixels_seen_ += n_pixels
        self.reference_ = state
        self.tables_ = method.prepare(state, params)
        self.__dict__.pop("_device_tables", None)  # (the torch backend's tensors of tables_)
        return self

    def _check_channels(self, batch, name: str) -> None:
        if batch.n_channels != self.n_channels_:
            raise _images.channel_mismatch(name, batch.n_channels, self.n_channels_)

    # --------------------------------------------------------------- transform
    def transform(self, X: Any, *, mask: Any = None) -> Any:
        """Match every image of ``X`` to the learned reference.

        Parameters
        ----------
        X : array-like, list of images, PIL.Image, tensor or dask array
            Images to match; same channel count as the references, any sizes.
            Each image is matched on its own; a dask array is matched lazily,
            block by block (a dask array of the same chunks comes back).
        mask : array-like of bool or list of arrays, optional
            One ``(H, W)`` boolean mask per image: only masked pixels are
            counted and changed, the others are returned untouched.

        Returns
        -------
        X_matched : same container, shape and dtype as ``X``
            A new array / list / PIL image; ``X`` is never modified.

        Warns
        -----
        UserWarning
            With ``scale="raw"``, when ``X`` and the references differ in dtype
            kind or integer width (float vs integer, uint8 vs uint16) and the
            method matches raw values (``"per_channel"``, ``"exact"``): the
            output is on the references' scale. With ``scale="dtype"``, when
            float images lie far outside [-1, 1] against integer references.
        """
        return self._transform(X, mask, "X")

    def _transform(self, X: Any, mask: Any, name: str) -> Any:
        """:meth:`transform`; errors name the caller's argument ``name``."""
        check_is_fitted(self, ("reference_", "tables_"))
        if _images.is_tensor(X):  # on the tensor's device where the method has a torch kernel
            from .backends import torch as torch_backend

            matched = torch_backend.transform(self, X, mask, name)
            if matched is not None:
                return matched
        method, params = self._fitted_method(), self._params()
        if _images.is_dask_collection(X):  # lazy, block by block
            from .backends import dask as dask_backend

            return dask_backend.transform(self, X, mask, name)
        batch = _images.to_batch(
            X,
            mask,
            name=name,
            estimator=self,
            reset=False,
            spatial_dims=self.spatial_dims,
            planar=method.planar,
        )
        if not method.any_channels:
            self._check_channels(batch, name)
        method.check_channels(batch.n_channels, name)
        tables = matching_tables(method, batch, self.dtype_, self.scale, self.tables_, name)
        full, outputs = _images.allocate_output(batch)
        masks = batch.masks or [None] * len(batch.images)

        def match(indices: range) -> None:
            images = [batch.images[i] for i in indices]
            image_masks, outs = [masks[i] for i in indices], [outputs[i] for i in indices]
            if method.spatial:  # (neighbourhoods: volumes as volumes)
                images, image_masks, outs = (
                    [batch.volume(i, a) for i, a in zip(indices, arrays)]
                    for arrays in (images, image_masks, outs)
                )
            method.apply_batch(images, image_masks, self.reference_, tables, params, outs)

        n_images, total = len(batch.images), self._n_threads()
        n_threads = min(total, n_images)
        # (threads the images leave over go to each image's kernel: exact orders channels
        # of one large image in parallel)
        params["n_threads"] = total // n_threads
        if n_threads > 1:
            # (a few runs of images per thread: batches shared by the method, and balance)
            step = -(-n_images // (4 * n_threads))
            with ThreadPoolExecutor(n_threads) as pool:
                runs = [range(i, min(i + step, n_images)) for i in range(0, n_images, step)]
                list(pool.map(match, runs))
        else:
            match(range(n_images))
        return _images.restore(batch, outputs if full is None else full)

    def fit_transform(self, X: Any, y: Any = None, *, mask: Any = None) -> Any:
        """Fit to ``X`` and match ``X`` itself (masks apply to both steps).

        Parameters
        ----------
        X : array-like, list of images or PIL.Image
            Images used as references and then matched.
        y : None
            Ignored; present for API consistency.
        mask : array-like of bool or list of arrays, optional
            One ``(H, W)`` boolean mask per image.

        Returns
        -------
        X_matched : same container, shape and dtype as ``X``
        """
        return self.fit(X, mask=mask).transform(X, mask=mask)

    # ------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Save the fitted matcher to one ``.npz`` file (no pickle inside).

        The file opens with ``numpy.load(path, allow_pickle=False)``: the
        fitted arrays plus JSON metadata (format and library versions,
        parameters, dtype, channels, images and pixels seen, SHA-256). The
        write is atomic. See :func:`histmatch_ml.io.save_model`.

        Parameters
        ----------
        path : str or os.PathLike
            Where to write (used as given; ``.npz`` is the convention).

        Returns
        -------
        path : pathlib.Path
            The file written.

        See Also
        --------
        load : Read it back.
        histmatch_ml.io.fingerprint : The SHA-256 identifying the model.

        Notes
        -----
        Pickle and joblib work too, and since the fitted attributes are plain
        arrays and builtins, ``skops.io.load(file,
        trusted=["histmatch_ml.matcher.HistogramMatcher"])`` loads a
        ``skops.io.dump`` of a matcher with only the class trusted.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> import numpy as np
        >>> from histmatch_ml import HistogramMatcher
        >>> refs = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
        >>> path = HistogramMatcher().fit(refs).save(pathlib.Path(tempfile.mkdtemp()) / "m.npz")
        >>> HistogramMatcher.load(path).n_images_seen_
        2
        """
        from .io import save_model

        return save_model(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> HistogramMatcher:
        """Load a matcher saved with :meth:`save`, checking the file first.

        Raises ``ValueError`` naming the file if it is not a matcher model,
        is truncated or tampered with (checksum mismatch), has a newer format
        version, or holds arrays of the wrong shape or non-finite values.
        Nothing in the file is executed. See :func:`histmatch_ml.io.load_model`.

        Parameters
        ----------
        path : str or os.PathLike
            The ``.npz`` model file.

        Returns
        -------
        matcher : HistogramMatcher
            Fitted; transforms bit for bit like the matcher that was saved.

        See Also
        --------
        save : Write the file.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> import numpy as np
        >>> from histmatch_ml import HistogramMatcher
        >>> refs = np.random.default_rng(0).random((2, 8, 8))
        >>> matcher = HistogramMatcher().fit(refs)
        >>> path = matcher.save(pathlib.Path(tempfile.mkdtemp()) / "m.npz")
        >>> loaded = HistogramMatcher.load(path)
        >>> bool((loaded.transform(refs) == matcher.transform(refs)).all())
        True
        """
        from .io import load_model

        return load_model(path, expected_class=cls)

    def _check_loaded_state(self) -> None:
        """Check the fitted attributes read from a model file; ``ValueError`` for any flaw.

        The model-file code calls this after setting the attributes; the
        reference state is checked by the method that reads it, and the
        derived ``tables_`` must be what that state gives (they are derived
        again when a file has none).
        """
        check_loaded_basics(
            self, ("method_", "reference_", "dtype_", "n_channels_", "n_images_seen_")
        )
        method = get_method(self.method_)
        mode = getattr(self, "reference_mode_", "pooled")  # (files written before it was kept)
        if mode not in ("pooled", "barycenter"):
            raise ValueError(f"reference_mode_ must be 'pooled' or 'barycenter'; got {mode!r}")
        self.reference_mode_ = mode
        try:
            counted = method.check_state(self.reference_, self.n_channels_)
        except ValueError as exc:
            raise ValueError(f"reference_: {exc}") from None
        seen = getattr(self, "n_pixels_seen_", None)
        if counted is not None and seen is not None and counted != seen and mode == "pooled":
            raise ValueError(
                f"reference_ histograms count {counted} pixels; n_pixels_seen_ says {seen}"
            )
        expected = method.prepare(self.reference_, self._params())
        self.tables_ = loaded_tables(getattr(self, "tables_", None), expected, "reference_")

    def as_torchio(self, masking_method: Any = None, **kwargs: Any) -> Any:
        """This fitted matcher as a TorchIO intensity transform (for ``tio.Compose``).

        It matches the intensity images of a ``tio.Subject`` (label maps are
        left alone) as volumes; ``masking_method`` (a label map's key, a
        function or an anatomical label, as in TorchIO) selects the voxels
        that are counted and changed; ``kwargs`` are TorchIO's (``include``,
        ``exclude``, ``p``, ...). Needs ``histmatch_ml[torchio]``. See
        :func:`histmatch_ml.augment._torchio.torchio_class`.

        Examples
        --------
        >>> import pytest
        >>> tio = pytest.importorskip("torchio")
        >>> import numpy as np, torch
        >>> from histmatch_ml import HistogramMatcher
        >>> refs = np.random.default_rng(0).normal(100, 20, (2, 8, 8, 8)).astype(np.float32)
        >>> matcher = HistogramMatcher("landmarks", spatial_dims=3).fit(refs)
        >>> subject = tio.Subject(t1=tio.ScalarImage(tensor=torch.rand(1, 8, 8, 8)))
        >>> out = tio.Compose([matcher.as_torchio()])(subject)
        >>> 50 < float(out["t1"].data.median()) < 150
        True
        """
        from .augment._torchio import torchio_class

        return torchio_class()(self, masking_method=masking_method, **kwargs)

    def as_monai(self, keys: Any = None, *, mask_key: str | None = None) -> Any:
        """This fitted matcher as a MONAI transform on channel-first tensors.

        ``keys=None``: the array transform, ``t(img, mask=None)`` for a
        ``(C, H, W)`` image or ``(C, H, W, D)`` volume (tensor, ``MetaTensor``
        or array; the same type, dtype and metadata come back). With ``keys``:
        the dictionary transform matching ``data[key]`` for each key, masked by
        ``data[mask_key]`` (non-zero voxels) if given. Needs
        ``histmatch_ml[monai]``. See :func:`histmatch_ml.augment._monai.monai_classes`.

        Examples
        --------
        >>> import pytest
        >>> monai = pytest.importorskip("monai")
        >>> import numpy as np, torch
        >>> from histmatch_ml import HistogramMatcher
        >>> refs = np.random.default_rng(0).normal(100, 20, (2, 8, 8, 8)).astype(np.float32)
        >>> matcher = HistogramMatcher("landmarks", spatial_dims=3).fit(refs)
        >>> t = monai.transforms.Compose([matcher.as_monai(keys="image")])
        >>> out = t({"image": torch.rand(1, 8, 8, 8)})["image"]
        >>> tuple(out.shape), 50 < float(out.median()) < 150
        ((1, 8, 8, 8), True)
        """
        from .augment._monai import monai_classes

        array, dictionary = monai_classes()
        if keys is None:
            return array(self)
        return dictionary(self, keys, mask_key=mask_key)

    def set_output(self, *, transform: str | None = None) -> HistogramMatcher:
        """Accept scikit-learn's output configuration; image outputs stay arrays.

        A pipeline's ``set_output(transform="pandas")`` reaches every step;
        the images this step returns are not tables of named features, so
        they keep their container (a later :class:`ImageFlattener` gives the
        pipeline its columns).

        Parameters
        ----------
        transform : {"default", "pandas", "polars"} or None
            Ignored: outputs are images.

        Returns
        -------
        self : HistogramMatcher
        """
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def matching_tables(
    method: Any, batch: _images.Batch, fitted_dtype: str, scale: str, tables: dict, name: str
) -> dict:
    """The tables that match ``batch`` under the ``scale`` rule (see ``HistogramMatcher``).

    Same dtype, or a method that reads every dtype on its own scale: the
    fitted tables. Otherwise ``"dtype"`` rescales the reference values from
    the references' img_as_float scale to the images' (warning when float
    images lie far outside [-1, 1] against integer references, where
    ``"raw"`` is likely meant), and ``"raw"`` warns and keeps them.
    """
    fitted = np.dtype(fitted_dtype)
    if batch.dtype == fitted or not method.raw_values:
        return tables
    factor = 1.0
    if scale == "raw":
        warn_scale_mismatch(batch.dtype, fitted, name, stacklevel=4)
    else:
        factor = _images.unit_scale(batch.dtype) / _images.unit_scale(fitted)
        if batch.dtype.kind == "f" and fitted.kind in "iu":
            peak = max(float(np.abs(im).max()) for im in batch.images)
            if peak > 1.0 + _images.FLOAT_SLACK:
                warnings.warn(
                    f"{name} holds floats up to {peak:g} in magnitude but is read on the "
                    f"[-1, 1] scale of its {fitted} references (scale='dtype'); for raw "
                    f"units pass scale='raw'",
                    UserWarning,
                    stacklevel=4,
                )
    # values beyond a narrower float dtype (or float64, for integers: clipped later) are
    # clipped to its finite range rather than cast to infinity
    limit = float(np.finfo(batch.dtype if batch.dtype.kind == "f" else np.float64).max)
    return method.rescale(tables, factor, limit)


def check_loaded_basics(estimator: Any, required: tuple[str, ...]) -> None:
    """The fitted attributes every loaded estimator carries (``ValueError`` for any flaw).

    ``required`` must be present; the counts are positive integers
    (``n_channels_`` and ``n_images_seen_`` required, the others checked when
    present) and ``dtype_`` names a supported dtype.
    """
    for name in required:
        if not hasattr(estimator, name):
            raise ValueError(f"it has no fitted attribute {name!r}")
    for name in ("n_channels_", "n_images_seen_", "n_pixels_seen_", "n_features_in_"):
        value = getattr(estimator, name, None)
        if value is None and name in ("n_channels_", "n_images_seen_"):
            raise ValueError(f"{name} must be a positive integer; got None")
        if value is None:
            continue
        if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name} must be an integer; got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1; got {value}")
    from ._reference import dtype_from_name

    dtype_from_name(estimator.dtype_, "dtype_")


def loaded_tables(loaded: Any, expected: dict | list, states: str) -> dict | list:
    """``expected`` (the tables the states give), refusing loaded ``tables_`` that differ.

    A file without ``tables_`` (written before they were kept) gets them derived.
    """
    if loaded is None:
        return expected
    pairs = [(loaded, expected)] if isinstance(expected, dict) else None
    if pairs is None and isinstance(loaded, list) and len(loaded) == len(expected):
        pairs = list(zip(loaded, expected))
    if pairs is None or not all(same_arrays(a, b) for a, b in pairs):
        raise ValueError(f"tables_ are not the ones {states} give")
    return expected


def same_arrays(a: Any, b: dict) -> bool:
    """True when ``a`` is a dict of arrays equal to those of ``b`` (keys, shapes, values)."""
    return (
        isinstance(a, dict)
        and set(a) == set(b)
        and all(
            isinstance(a[k], np.ndarray)
            and a[k].shape == b[k].shape
            and np.array_equal(a[k], b[k])
            for k in b
        )
    )


on_register(_refresh)
