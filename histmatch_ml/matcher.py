"""``HistogramMatcher``: the scikit-learn estimator (plumbing only).

Inputs go through :mod:`histmatch_ml._images`, the learned state lives in plain
arrays built by the method modules in :mod:`histmatch_ml.methods`; this module
only validates parameters, keeps the fitted attributes and loops over images.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
from joblib import effective_n_jobs
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import (
    Interval,
    StrOptions,
    validate_parameter_constraints,
)
from sklearn.utils.validation import check_is_fitted

from . import _images
from .methods import available_methods, get_method
from .methods._base import warn_scale_mismatch

#: parameter sets that passed validation (see ``HistogramMatcher._checked_method``)
_VALID_PARAMS: set[tuple] = set()


_PLAIN = (str, int, float, bool, type(None))


def _params_key(cls: type, params: dict[str, Any]) -> tuple | None:
    """A key for ``params`` of an estimator class; None unless every value is a plain scalar.

    Each value enters with its exact type, so ``1`` and ``1.0`` or ``True``
    are different keys (validation may treat them differently). Other
    values (a ``RandomState``, numpy scalars) are validated on every call,
    so the set of remembered keys never keeps a user's object alive.
    """
    if not all(type(v) in _PLAIN for v in params.values()):
        return None
    return (cls, *((name, type(v), v) for name, v in params.items()))


_FITTED = (
    "method_",
    "reference_",
    "dtype_",
    "n_channels_",
    "n_images_seen_",
    "n_pixels_seen_",
    "n_features_in_",
    "feature_names_in_",
)


# (auto_wrap_output_keys=None: outputs are images, not named features, so scikit-learn's
# set_output wrapper, which only returns them unchanged, is not put around transform)
class HistogramMatcher(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Match the histograms of images to a reference learned from a set of images.

    ``fit`` pools the pixels of any number of reference images (optionally
    masked) into one reference distribution per channel; ``transform`` remaps
    every image of a batch to it, each image on its own. The learned state is
    mergeable, so ``partial_fit`` over chunks equals ``fit`` on all of them.

    Parameters
    ----------
    method : {"per_channel", "exact", "lab"}, default="per_channel"
        ``"per_channel"``: classic CDF matching of each channel.
        ``"exact"``: exact histogram specification (the output histogram equals
        the reference's, pixel for pixel). ``"lab"``: joint colour matching in
        CIELAB (RGB images only).
    strength : float in [0, 1], default=1.0
        Blend between the input (0) and the fully matched image (1).
    n_quantiles : int >= 2, default=1024
        Size of the quantile sketch kept for float (and 32/64-bit integer)
        references and for the projections of ``"lab"``. 8- and 16-bit integer
        references keep exact full-range histograms instead.
    ordering : {"variational", "local_means"}, default="variational"
        Strict ordering used by ``method="exact"`` to break ties between equal
        pixel values.
    n_iter : int >= 1, default=20
        Iterations of the sliced transport used by ``method="lab"``.
    lab_mode : {"joint", "marginal"}, default="joint"
        ``method="lab"``: match the joint 3-D colour distribution, or each LAB
        channel on its own.
    regrain : bool, default=False
        ``method="lab"``: restore the source's fine structure after transfer.
    n_jobs : int or None, default=None
        Threads used by ``transform`` to match the images of a batch in
        parallel (the kernels release the GIL); ``None`` means 1 and ``-1``
        all cores. Results do not depend on it.
    random_state : int, RandomState instance or None, default=None
        Seeds every random choice (the projection directions of ``"lab"``);
        ``"per_channel"`` and ``"exact"`` are deterministic.

    Attributes
    ----------
    method_ : str
        The method the reference state was learned with.
    reference_ : dict of str to ndarray
        The learned reference state, plain arrays only. For ``per_channel``
        and ``exact``: ``"histograms"`` of shape ``(n_channels_, 256 or
        65536)`` (8/16-bit references) or ``"quantiles"`` of shape
        ``(n_channels_, n_quantiles)`` (float references), and ``"dtype"``.
        For ``lab``: ``"rotations"`` of shape ``(n_iter, 3, 3)`` (seeded
        projection axes, fixed at the first fit), ``"projected_quantiles"`` of
        shape ``(3 * n_iter, n_quantiles)`` (the reference's LAB pixels along
        each axis) and ``"dtype"``; no reference image is kept.
    dtype_ : str
        dtype of the reference images.
    n_channels_ : int
        Channels per reference image (1 for greyscale and tabular input).
    n_images_seen_ : int
        Number of reference images learned from.
    n_pixels_seen_ : int
        Number of reference pixels learned from (masked pixels only).
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
    (rows of flattened greyscale pixels); a list or tuple of ``(H, W)`` /
    ``(H, W, C)`` images of any sizes (a list comes back); a single
    ``PIL.Image`` (the same mode comes back; an alpha channel is kept as is).
    Supported dtypes are uint8, uint16, int16, float32 and float64; the output
    has the input's dtype, integers rounded to nearest and clipped, floats
    never clipped or quantised. Masks are boolean, one per image, of the
    image's height and width: only masked pixels are counted and changed.

    Both conventions are midpoint ones: a level holding ``h`` of ``n`` pixels
    sits at probability ``(count below + h / 2) / n``, in the image and in
    the reference, so an image matched to its own histogram is unchanged.

    For float references, ``partial_fit`` merges quantile sketches: the merged
    quantile at probability ``p`` lies between the pooled data's quantiles at
    ``p -/+ (1 / (n_quantiles - 1) + 1 / N)``. For 8/16-bit references the
    merge is exact.

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

    _parameter_constraints: dict = {
        "method": [StrOptions(set(available_methods()))],
        "strength": [Interval(Real, 0, 1, closed="both")],
        "n_quantiles": [Interval(Integral, 2, None, closed="left")],
        "ordering": [StrOptions({"variational", "local_means"})],
        "n_iter": [Interval(Integral, 1, None, closed="left")],
        "lab_mode": [StrOptions({"joint", "marginal"})],
        "regrain": ["boolean"],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        method: str = "per_channel",
        *,
        strength: float = 1.0,
        n_quantiles: int = 1024,
        ordering: str = "variational",
        n_iter: int = 20,
        lab_mode: str = "joint",
        regrain: bool = False,
        n_jobs: int | None = None,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.method = method
        self.strength = strength
        self.n_quantiles = n_quantiles
        self.ordering = ordering
        self.n_iter = n_iter
        self.lab_mode = lab_mode
        self.regrain = regrain
        self.n_jobs = n_jobs
        self.random_state = random_state

    # ------------------------------------------------------------------ helpers
    def _checked_method(self):
        """Validate the parameters; return the method object and its params.

        Parameter sets that passed are remembered (by type and value, see
        :func:`_params_key`), so a transform per image does not pay for
        scikit-learn's validation (about 0.04 ms) every time.
        """
        params = {name: getattr(self, name) for name in self._parameter_constraints}
        key = _params_key(type(self), params)
        known = key is not None and key in _VALID_PARAMS
        if not known:
            validate_parameter_constraints(
                self._parameter_constraints, params, caller_name=type(self).__name__
            )
        method = get_method(self.method)
        params["strength"] = float(params["strength"])
        if not known:
            method.check_params(params)
            if key is not None:
                if len(_VALID_PARAMS) >= 256:
                    _VALID_PARAMS.clear()
                _VALID_PARAMS.add(key)
        return method, params

    # --------------------------------------------------------------------- fit
    def fit(self, X: Any, y: Any = None, *, mask: Any = None) -> HistogramMatcher:
        """Learn the reference distribution from a set of reference images.

        Parameters
        ----------
        X : array-like, list of images or PIL.Image
            Reference images (see Notes of the class for the accepted forms).
            Images may have different sizes; their pixels are pooled.
        y : None
            Ignored; present for API consistency.
        mask : array-like of bool or list of arrays, optional
            One ``(H, W)`` boolean mask per image; only masked pixels count.

        Returns
        -------
        self : HistogramMatcher
            The fitted estimator.
        """
        for attr in _FITTED:
            if hasattr(self, attr):
                delattr(self, attr)
        return self._learn(X, mask)

    def partial_fit(self, X: Any, y: Any = None, *, mask: Any = None) -> HistogramMatcher:
        """Add more reference images to the learned distribution.

        ``partial_fit(a); partial_fit(b)`` equals ``fit([a, b])`` exactly for
        8/16-bit references and within the tolerance given in the class Notes
        for floats.

        Parameters
        ----------
        X : array-like, list of images or PIL.Image
            More reference images, of the dtype and channel count seen so far.
        y : None
            Ignored; present for API consistency.
        mask : array-like of bool or list of arrays, optional
            One ``(H, W)`` boolean mask per image.

        Returns
        -------
        self : HistogramMatcher
            The updated estimator.
        """
        return self._learn(X, mask)

    def _learn(self, X: Any, mask: Any) -> HistogramMatcher:
        method, params = self._checked_method()
        first = not hasattr(self, "reference_")
        batch = _images.to_batch(X, mask, estimator=self, reset=first)
        method.check_channels(batch.n_channels, "X")
        if first:
            seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
            state = method.learn(batch, params, np.random.default_rng(seed))
            self.method_ = method.name
            self.reference_ = state
            self.dtype_ = batch.dtype.name
            self.n_channels_ = batch.n_channels
            self.n_images_seen_ = len(batch.images)
            self.n_pixels_seen_ = batch.n_pixels
            return self
        if method.name != self.method_:
            raise ValueError(
                f"method is {self.method!r} but the matcher was fitted with "
                f"{self.method_!r}; call fit to start again"
            )
        if batch.dtype.name != self.dtype_:
            raise TypeError(
                f"X must have the dtype of the references seen so far ({self.dtype_}); "
                f"got {batch.dtype.name}"
            )
        self._check_channels(batch)
        state = method.learn(batch, params, None, like=self.reference_)
        self.reference_ = method.merge(
            self.reference_, self.n_pixels_seen_, state, batch.n_pixels, params
        )
        self.n_images_seen_ += len(batch.images)
        self.n_pixels_seen_ += batch.n_pixels
        return self

    def _check_channels(self, batch) -> None:
        if batch.n_channels != self.n_channels_:
            raise ValueError(
                f"X must have {self.n_channels_} channel(s), as the references; "
                f"got {batch.n_channels}"
            )

    # --------------------------------------------------------------- transform
    def transform(self, X: Any, *, mask: Any = None) -> Any:
        """Match every image of ``X`` to the learned reference.

        Parameters
        ----------
        X : array-like, list of images or PIL.Image
            Images to match; same channel count as the references, any sizes.
            Each image is matched on its own.
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
            When ``X`` and the references differ in dtype kind or integer
            width (float vs integer, uint8 vs uint16) and the method matches
            raw values (``"per_channel"``, ``"exact"``): the output is on the
            references' scale.
        """
        if not hasattr(self, "reference_"):  # (check_is_fitted costs 0.01-0.04 ms a call)
            check_is_fitted(self, "reference_")
        method, params = self._checked_method()
        if get_method(self.method_).state_kind != method.state_kind:
            raise ValueError(
                f"method is {self.method!r} but the matcher was fitted with "
                f"{self.method_!r}, whose learned state it cannot use; call fit again"
            )
        batch = _images.to_batch(
            X,
            mask,
            estimator=self,
            reset=False,
            # (a method that checks in its own pass does so on unmasked batches)
            check_finite=mask is not None or not method.checks_finite,
        )
        self._check_channels(batch)
        method.check_channels(batch.n_channels, "X")
        if method.raw_values:
            warn_scale_mismatch(batch.dtype, self.dtype_, "X", stacklevel=3)
        full, views = _images.allocate_output(batch)
        masks = batch.masks or [None] * len(batch.images)

        def match(i: int) -> np.ndarray | None:
            if views is None:
                return method.apply(batch.images[i], masks[i], self.reference_, params)
            method.apply_into(batch.images[i], masks[i], self.reference_, params, out=views[i])
            return None

        n_threads = 1 if self.n_jobs in (None, 1) else effective_n_jobs(self.n_jobs)
        n_threads = min(n_threads, len(batch.images))
        if n_threads > 1:
            with ThreadPoolExecutor(n_threads) as pool:
                outputs = list(pool.map(match, range(len(batch.images))))
        else:
            outputs = [match(i) for i in range(len(batch.images))]
        return _images.restore(batch, outputs if views is None else full)

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
        >>> matcher = HistogramMatcher(n_quantiles=32).fit(refs)
        >>> path = matcher.save(pathlib.Path(tempfile.mkdtemp()) / "m.npz")
        >>> loaded = HistogramMatcher.load(path)
        >>> bool((loaded.transform(refs) == matcher.transform(refs)).all())
        True
        """
        from .io import load_model

        return load_model(path, expected_class=cls)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
