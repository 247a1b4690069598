"""``RandomHistogramMatching``: match each sample to a randomly chosen learned reference.

Random sampling (:meth:`RandomHistogramMatching.sample_params`) is separated
from the deterministic application (:meth:`RandomHistogramMatching.apply`),
as in torchvision's ``make_params``/``transform`` and albumentations'
``get_params``/``apply``, so what was applied can be logged and replayed.
The method and its parameters come from a :class:`~histmatch_ml.HistogramMatcher`
given as the ``matcher`` parameter; its learned states are the matcher's.
"""

from __future__ import annotations

import os
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, _fit_context, clone
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from .. import _images
from ..matcher import HistogramMatcher, check_loaded_basics, loaded_tables, matching_tables
from ..methods import get_method
from ._torch import worker_key

__all__ = ["RandomHistogramMatching"]

#: keys of one set of sampled parameters
PARAM_KEYS = ("apply", "reference", "strength")


def worker_seed_sequence(worker_seed: int, seed: Any) -> np.random.SeedSequence:
    """The seed of one DataLoader worker's stream: its torch seed, plus ``seed`` if an int."""
    entropy = [int(worker_seed)]
    if isinstance(seed, Integral):
        entropy.append(int(seed))
    return np.random.SeedSequence(entropy)


def _strength_range(strength: Any) -> tuple[float, float]:
    """``(low, high)`` of ``strength`` (a float in [0, 1], or a pair); ``ValueError`` if bad."""
    if isinstance(strength, Real):
        return float(strength), float(strength)
    if len(strength) == 2 and all(
        isinstance(v, Real) and not isinstance(v, bool) for v in strength
    ):
        low, high = float(strength[0]), float(strength[1])
        if 0.0 <= low <= high <= 1.0:
            return low, high
    raise ValueError(
        f"strength must be a float in [0, 1] or a pair (low, high) with "
        f"0 <= low <= high <= 1; got {strength!r}"
    )


class RandomHistogramMatching(BaseEstimator):
    """Randomly match images to one of several learned reference distributions.

    ``fit`` learns one reference distribution per reference image, or one per
    group label when ``groups`` is given, with the machinery of
    :class:`~histmatch_ml.HistogramMatcher`. Each call then, with probability
    ``p``, matches the image to one reference chosen uniformly at random,
    blended with a strength drawn uniformly from ``strength``.

    Parameters
    ----------
    matcher : HistogramMatcher or None, default=None
        An unfitted :class:`~histmatch_ml.HistogramMatcher` that configures the
        method and its parameters (``HistogramMatcher("lab", n_iter=10)``);
        None means ``HistogramMatcher()``. It is cloned for every reference
        and never fitted itself; its ``strength`` is replaced by the drawn
        one, and when its ``random_state`` is None the method's own
        randomness (the projections of ``"lab"``) is seeded from
        ``random_state``. Nested parameters (``matcher__n_iter``) work with
        ``get_params``/``set_params``.
    strength : float or tuple of (float, float), default=(0.5, 1.0)
        Blend between the input (0) and the fully matched image (1): a fixed
        value in ``[0, 1]`` or a range ``(low, high)``, ``0 <= low <= high <= 1``,
        sampled uniformly at every call.
    p : float in [0, 1], default=0.5
        Probability of applying the transform at a call; otherwise the input
        is returned as is (the same object).
    random_state : int, numpy Generator, RandomState instance or None, default=None
        Seeds the stream of random draws. An int makes the sequence of draws
        after ``fit`` repeat exactly; inside a DataLoader worker it is combined
        with the worker's seed (see Notes). A Generator is used as is in the
        main process.

    Attributes
    ----------
    method_ : str
        The method the references were learned with.
    references_ : list of dict of str to ndarray
        One learned reference state per reference (per image or per group),
        in the format of :attr:`HistogramMatcher.reference_
        <histmatch_ml.HistogramMatcher>`.
    tables_ : list of dict of str to ndarray
        What matching derives from each state, computed at fit (the format of
        ``HistogramMatcher.tables_``).
    reference_labels_ : ndarray of shape (`n_references_`,)
        The group label of each reference (sorted unique ``groups``), or the
        index of its image when ``groups`` is None.
    n_references_ : int
        Number of reference distributions.
    dtype_ : str
        dtype of the reference images.
    n_channels_ : int
        Channels per reference image.
    n_images_seen_ : int
        Number of reference images learned from.

    See Also
    --------
    HistogramMatcher : Match every image to one pooled reference.
    albumentations.HistogramMatching : Per-call matching to raw reference images.

    Notes
    -----
    **Inputs.** A call accepts a numpy image ``(H, W)`` or ``(H, W, C)`` of
    any supported dtype, a ``PIL.Image``, or a torch tensor ``(C, H, W)`` or
    ``(N, C, H, W)`` (uint8, int16 or float), and returns the same type,
    shape and dtype (a tensor also keeps its device). Each image of an
    ``(N, C, H, W)`` batch gets its own draw. Images of another dtype than the
    references are read on scikit-image's ``img_as_float`` scale (the
    matcher's ``scale="dtype"``), so float tensors in ``[0, 1]`` can be
    augmented with uint8 references. Called with
    keywords, ``aug(image=x, mask=m, ...)`` returns a dict in which ``"image"``
    is augmented and every other entry is passed through untouched, as in
    albumentations.

    **Logging and replay.** ``params = aug.sample_params()`` draws one set of
    parameters, a plain dict ``{"apply": bool, "reference": int, "strength":
    float}``; ``aug.apply(image, params)`` applies it deterministically, so
    ``aug(image)`` equals ``aug.apply(image, aug.sample_params())``.

    **Reproducibility.** After ``fit``, an int ``random_state`` gives the same
    sequence of draws every time. In a ``torch.utils.data.DataLoader`` with
    workers the object is copied into every worker, but no random stream is
    copied: on its first call in a worker it derives the stream from
    ``torch.utils.data.get_worker_info().seed`` (and ``random_state``), so
    workers never repeat each other's draws, and a seeded DataLoader
    ``generator`` makes whole epochs repeat. The recipe::

        aug = RandomHistogramMatching(random_state=0).fit(references)
        dataset = MyDataset(images, transform=aug)  # calls aug(image)
        loader = DataLoader(dataset, num_workers=4,
                            generator=torch.Generator().manual_seed(1))
        # each epoch draws new worker seeds from `generator`; re-seeding the
        # generator (or a new loader with the same seed) repeats the epoch

    With ``num_workers=0`` the main-process stream seeded by ``random_state``
    is used and continues across epochs.

    Other worker processes (``multiprocessing``, ``concurrent.futures``) that
    receive a copy of a fitted augmenter derive their stream from their
    process id, so they never repeat each other's draws either; for draws that
    repeat from run to run there, give each worker its own seed and draw from
    it explicitly: ``aug.sample_params(rng=np.random.default_rng([seed,
    worker_index]))`` followed by ``aug.apply(image, params)``.

    **Memory.** Each reference keeps the matcher's state: for 16-bit images
    exact ``(C, 65536)`` int64 counts (1.5 MB for RGB), for 8-bit ``(C, 256)``,
    for floats their distinct values and counts (at most 262,144 bins a
    channel). To draw among thousands of 16-bit or float images, pool them
    into ``groups``.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml import RandomHistogramMatching
    >>> rng = np.random.default_rng(0)
    >>> dark = rng.integers(0, 60, size=(32, 32, 3), dtype=np.uint8)
    >>> bright = rng.integers(190, 255, size=(32, 32, 3), dtype=np.uint8)
    >>> aug = RandomHistogramMatching(strength=1.0, p=1.0, random_state=0)
    >>> aug = aug.fit([dark, bright])
    >>> image = rng.integers(80, 160, size=(16, 16, 3), dtype=np.uint8)
    >>> params = aug.sample_params()
    >>> sorted(params)
    ['apply', 'reference', 'strength']
    >>> out = aug.apply(image, params)
    >>> out.shape, out.dtype
    ((16, 16, 3), dtype('uint8'))
    >>> bool(out.max() < 60) if params["reference"] == 0 else bool(out.min() >= 190)
    True
    """

    _parameter_constraints: dict = {
        "matcher": [HistogramMatcher, None],
        "strength": [Interval(Real, 0, 1, closed="both"), tuple, list],
        "p": [Interval(Real, 0, 1, closed="both")],
        "random_state": ["random_state", np.random.Generator],
    }

    def __init__(
        self,
        matcher: HistogramMatcher | None = None,
        *,
        strength: float | tuple[float, float] = (0.5, 1.0),
        p: float = 0.5,
        random_state: int | np.random.Generator | np.random.RandomState | None = None,
    ) -> None:
        self.matcher = matcher
        self.strength = strength
        self.p = p
        self.random_state = random_state

    # ------------------------------------------------------------------ fit
    def _settings(self) -> HistogramMatcher:
        """The matcher configuration, only to be read: ``matcher`` itself, or the defaults."""
        if self.matcher is None:
            return HistogramMatcher()
        if not isinstance(self.matcher, HistogramMatcher):
            raise TypeError(
                f"matcher must be a HistogramMatcher or None; got {type(self.matcher).__name__}"
            )
        return self.matcher

    def _matcher(self) -> HistogramMatcher:
        """The matcher configuration as an unfitted clone of ``matcher`` (to be fitted)."""
        return clone(self._settings())

    def _fit_seed(self) -> int | None:
        """An int seed for the methods' own randomness (``lab``), from ``random_state``."""
        rs = self.random_state
        if rs is None or isinstance(rs, Integral):
            return None if rs is None else int(rs)
        if isinstance(rs, np.random.Generator):
            return int(rs.integers(np.iinfo(np.int32).max))
        return int(rs.randint(np.iinfo(np.int32).max))  # a RandomState

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(
        self, references: Any, groups: Any = None, *, mask: Any = None
    ) -> RandomHistogramMatching:
        """Learn one reference distribution per image, or per group label.

        Parameters
        ----------
        references : list of images, ndarray, PIL.Image or torch tensor
            Reference images: a list of ``(H, W)`` / ``(H, W, C)`` arrays or
            PIL images (sizes may differ), an ``(N, H, W[, C])`` array, or
            ``(C, H, W)`` / ``(N, C, H, W)`` tensors.
        groups : array-like of shape (n_images,), optional
            One label per reference image; the images of a label are pooled
            into one reference. None: one reference per image.
        mask : array-like of bool or list of arrays, optional
            One ``(H, W)`` boolean mask per reference image; only masked
            pixels are learned from.

        Returns
        -------
        self : RandomHistogramMatching
            The fitted augmenter; its random stream restarts.
        """
        _strength_range(self.strength)  # (the pair's bounds; its type is checked above)
        template = self._matcher()
        if template.random_state is None:
            template.set_params(random_state=self._fit_seed())
        dims = template.spatial_dims
        batch = _images.to_batch(references, mask, name="references", spatial_dims=dims)
        n_images = len(batch.images)
        if groups is None:
            labels, inverse = np.arange(n_images), np.arange(n_images)
        else:
            group_arr = np.asarray(groups)
            if group_arr.ndim != 1 or len(group_arr) != n_images:
                raise ValueError(
                    f"groups must hold one label per reference image ({n_images}); "
                    f"got shape {group_arr.shape}"
                )
            try:
                labels, inverse = np.unique(group_arr, return_inverse=True)
            except TypeError as exc:
                raise TypeError(f"groups must hold comparable labels; got {exc}") from None
            inverse = inverse.ravel()
        states, tables = [], []
        for g in range(len(labels)):
            members = np.flatnonzero(inverse == g)
            images = [batch.volume(i, batch.images[i]) for i in members]  # (volumes as such)
            masks = (
                None if batch.masks is None else [batch.volume(i, batch.masks[i]) for i in members]
            )
            fitted = clone(template).fit(images, mask=masks)
            states.append(fitted.reference_)
            tables.append(fitted.tables_)
        self.method_ = fitted.method_
        self.references_ = states
        self.tables_ = tables
        self.reference_labels_ = labels
        self.n_references_ = len(states)
        self.dtype_ = batch.dtype.name
        self.n_channels_ = batch.n_channels
        self.n_images_seen_ = n_images
        self._rng = None
        self._rng_key = None
        self.__dict__.pop("_device_tables", None)  # (the torch backend's tensors of tables_)
        self._origin_pid = os.getpid()
        return self

    # ------------------------------------------------------------- sampling
    def _generator(self) -> np.random.Generator:
        """The stream of this process: lazily seeded, re-derived in every worker process.

        In a DataLoader worker the stream derives from the worker's seed; in any
        other process than the one that fitted (``multiprocessing`` workers that
        received a copy) it derives from the process id, so workers never repeat
        each other's draws.
        """
        key = worker_key()
        if key is None and getattr(self, "_origin_pid", os.getpid()) != os.getpid():
            key = (-1, os.getpid())
        rng = getattr(self, "_rng", None)
        if rng is None or key != getattr(self, "_rng_key", None):
            rs = self.random_state
            if key is not None:
                rng = np.random.default_rng(worker_seed_sequence(key[1], rs))
            elif isinstance(rs, np.random.Generator):
                rng = rs
            elif isinstance(rs, np.random.RandomState):
                rng = np.random.default_rng(rs.randint(np.iinfo(np.int32).max))
            else:
                rng = np.random.default_rng(rs)
            self._rng, self._rng_key = rng, key
        return rng

    def sample_params(self, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """Draw the random parameters of one call.

        Every call consumes the same amount of randomness (three uniforms),
        whatever ``p`` and ``strength`` are, so changing them never shifts
        the rest of the stream.

        Parameters
        ----------
        rng : numpy.random.Generator, optional
            Draw from this generator instead of the augmenter's own stream.

        Returns
        -------
        params : dict
            ``{"apply": bool, "reference": int, "strength": float}``: whether
            to apply, the index into ``references_`` and the blend strength.
            Plain builtins, ready to log as JSON.

        Examples
        --------
        >>> import numpy as np
        >>> from histmatch_ml import RandomHistogramMatching
        >>> refs = np.random.default_rng(0).integers(0, 255, (3, 8, 8), dtype=np.uint8)
        >>> aug = RandomHistogramMatching(p=1.0, random_state=0).fit(refs)
        >>> params = aug.sample_params()
        >>> params["apply"], params["reference"] in (0, 1, 2)
        (True, True)
        >>> 0.5 <= params["strength"] <= 1.0
        True
        """
        check_is_fitted(self, "references_")
        if rng is None:
            rng = self._generator()
        return self._from_uniforms(rng.random(3))

    def _from_uniforms(self, u: np.ndarray) -> dict[str, Any]:
        """The parameters of one call from its three uniforms in [0, 1)."""
        p, (lo, hi), n = float(self.p), _strength_range(self.strength), len(self.references_)
        return {
            "apply": bool(u[0] < p),
            "reference": min(int(u[1] * n), n - 1),
            "strength": float(lo + (hi - lo) * u[2]) if hi > lo else lo,
        }

    def sample_batch_params(self, n: int, generator: Any = None) -> list[dict[str, Any]]:
        """Draw the parameters of ``n`` images (a batch), one :meth:`sample_params` each.

        Parameters
        ----------
        n : int
            Number of images.
        generator : torch.Generator, optional
            Draw the uniforms from this generator (``torch.rand``) instead of
            the augmenter's own stream, so a seeded generator repeats the draws.

        Returns
        -------
        params : list of dict
            ``n`` dicts as :meth:`sample_params` returns; without ``generator``
            they are the next ``n`` draws of the augmenter's stream.

        Examples
        --------
        >>> import numpy as np
        >>> from histmatch_ml import RandomHistogramMatching
        >>> refs = np.random.default_rng(0).integers(0, 255, (3, 8, 8), dtype=np.uint8)
        >>> a = RandomHistogramMatching(random_state=0).fit(refs)
        >>> b = RandomHistogramMatching(random_state=0).fit(refs)
        >>> a.sample_batch_params(2) == [b.sample_params(), b.sample_params()]
        True
        """
        check_is_fitted(self, "references_")
        if generator is None:
            uniforms = [self._generator().random(3) for _ in range(n)]
        else:
            import torch

            draws = torch.rand((n, 3), generator=generator, device=generator.device)
            uniforms = draws.double().cpu().numpy()
        return [self._from_uniforms(u) for u in uniforms]

    # ------------------------------------------------------------- applying
    # ------------------------------------------------------------- applying
    def _checked(self, params: Any) -> dict[str, Any]:
        if not isinstance(params, dict) or not set(PARAM_KEYS) <= set(params):
            raise ValueError(
                f"params must be a dict with keys {list(PARAM_KEYS)} (from sample_params); "
                f"got {params!r}"
            )
        ref, strength, n = params["reference"], params["strength"], len(self.references_)
        if isinstance(ref, bool) or not isinstance(ref, Integral) or not 0 <= ref < n:
            raise ValueError(f"params['reference'] must be an int in [0, {n - 1}]; got {ref!r}")
        if (
            isinstance(strength, bool)
            or not isinstance(strength, Real)
            or not 0.0 <= strength <= 1.0
        ):
            raise ValueError(f"params['strength'] must be a float in [0, 1]; got {strength!r}")
        return params

    def _match(
        self, batch: _images.Batch, k: int, params: dict[str, Any], matcher: HistogramMatcher
    ) -> np.ndarray:
        """Match image ``k`` of a checked batch with one validated set of params."""
        i, method = int(params["reference"]), get_method(self.method_)
        tables = matching_tables(
            method, batch, self.dtype_, matcher.scale, self.tables_[i], "image"
        )
        image = batch.images[k]
        out = np.empty_like(image)
        method_params = {**matcher._params(), "strength": float(params["strength"])}
        # (methods that read neighbourhoods get volumes as volumes; out is a view of them)
        view = batch.volume if method.spatial else (lambda k, arr: arr)
        method.apply(
            view(k, image), None, self.references_[i], tables, method_params, view(k, out)
        )
        return out

    def _batch(self, images: Any, name: str) -> _images.Batch:
        dims = self.matcher.spatial_dims if self.matcher is not None else 2
        planar = get_method(self.method_).planar  # (CPU tensors stay channels-first)
        batch = _images.to_batch(images, name=name, spatial_dims=dims, planar=planar)
        if batch.n_channels != self.n_channels_:
            raise _images.channel_mismatch(name, batch.n_channels, self.n_channels_)
        get_method(self.method_).check_channels(batch.n_channels, name)
        return batch

    def apply(self, image: Any, params: dict[str, Any] | list[dict[str, Any]]) -> Any:
        """Apply one set of sampled parameters (deterministic, no randomness).

        Parameters
        ----------
        image : ndarray, PIL.Image or torch.Tensor
            ``(H, W)`` / ``(H, W, C)`` array, PIL image, or ``(C, H, W)`` /
            ``(N, C, H, W)`` tensor.
        params : dict or list of dict
            Parameters from :meth:`sample_params`; for an ``(N, C, H, W)``
            tensor one dict for all images or a list of ``N`` dicts.

        Returns
        -------
        image_out : same type, shape and dtype as ``image``
            A new object, or ``image`` itself when nothing is applied; the
            input is never modified.

        Examples
        --------
        >>> import numpy as np
        >>> from histmatch_ml import RandomHistogramMatching
        >>> refs = [np.full((4, 4), v, dtype=np.uint8) for v in (10, 200)]
        >>> aug = RandomHistogramMatching().fit(refs)
        >>> image = np.arange(16, dtype=np.uint8).reshape(4, 4)
        >>> aug.apply(image, {"apply": True, "reference": 1, "strength": 1.0})[0]
        array([200, 200, 200, 200], dtype=uint8)
        >>> aug.apply(image, {"apply": False, "reference": 1, "strength": 1.0}) is image
        True
        """
        check_is_fitted(self, "references_")
        matcher = self._settings()
        volumes = matcher.spatial_dims == 3
        if _images.is_tensor(image) and image.ndim == (5 if volumes else 4):
            return self._apply_tensor(image, params, matcher)
        params = self._checked(params)
        if volumes:  # one volume (D, H, W[, C]) or tensor (C, D, H, W)
            wrapped, unwrap = [image], (lambda out: out[0])
        else:
            wrapped, unwrap = _images.wrap_single(image, "image")
        batch = self._batch(wrapped, "image")  # (checked also when nothing is applied)
        if not params["apply"]:
            return image
        out = self._match(batch, 0, params, matcher)
        return unwrap(_images.restore(batch, [out]))

    def _apply_tensor(self, tensor: Any, params: Any, matcher: HistogramMatcher) -> Any:
        """An ``(N, C, H, W)`` tensor: one set of params for all images, or one per image."""
        n = tensor.shape[0]
        plist = list(params) if isinstance(params, (list, tuple)) else [params] * n
        if len(plist) != n:
            raise ValueError(
                f"params must hold one dict per image of the batch ({n}); got {len(plist)}"
            )
        plist = [self._checked(p) for p in plist]
        from ..backends import torch as torch_backend  # (one batched call on the device)

        matched = torch_backend.augment(self, tensor, plist, matcher)
        if matched is not None:
            return matched
        batch = self._batch(tensor, "image")  # (checked also when nothing is applied)
        if not any(p["apply"] for p in plist):
            return tensor
        outputs = [
            self._match(batch, k, p, matcher) if p["apply"] else im
            for k, (im, p) in enumerate(zip(batch.images, plist))
        ]
        return _images.restore(batch, outputs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Augment one image (or a tensor batch) with freshly drawn parameters.

        ``aug(image)`` returns the augmented image; ``aug(image=image, **more)``
        returns a dict with the augmented ``"image"`` and every other keyword
        (masks, boxes, labels...) passed through untouched.

        Parameters
        ----------
        *args : ndarray, PIL.Image or torch.Tensor
            The image (at most one positional argument).
        **kwargs : Any
            ``image`` (when not given positionally) and entries passed through.

        Returns
        -------
        image_out or dict
            The augmented image (same type, shape and dtype), or the dict.

        Examples
        --------
        >>> import numpy as np
        >>> from histmatch_ml import RandomHistogramMatching
        >>> refs = [np.full((4, 4, 3), 200, dtype=np.uint8)]
        >>> aug = RandomHistogramMatching(strength=1.0, p=1.0).fit(refs)
        >>> image = np.zeros((4, 4, 3), dtype=np.uint8)
        >>> int(aug(image).max())
        200
        >>> labels = np.ones((4, 4), dtype=np.int64)
        >>> out = aug(image=image, mask=labels)
        >>> out["mask"] is labels, int(out["image"].min())
        (True, 200)
        """
        if len(args) > 1:
            raise TypeError(f"pass one image positionally; got {len(args)} positional arguments")
        if args and "image" in kwargs:
            raise TypeError("image was given both positionally and as a keyword")
        as_dict = bool(kwargs)
        if args:
            image = args[0]
        elif "image" in kwargs:
            image = kwargs.pop("image")
        else:
            raise TypeError("an image is required: aug(image) or aug(image=image, ...)")
        if _images.is_tensor(image) and image.ndim == 4:
            params: Any = self.sample_batch_params(image.shape[0])
        else:
            params = self.sample_params()
        out = self.apply(image, params)
        return {"image": out, **kwargs} if as_dict else out

    # -------------------------------------------------------------- adapters
    def as_albumentations(self, *, path: Any = None) -> Any:
        """An albumentations ``ImageOnlyTransform`` drawing like this augmenter.

        The transform draws the reference and strength from albumentations'
        own generator, so ``A.Compose([...], seed=...)`` makes it repeat, and
        albumentations decides ``p`` (this augmenter's ``p`` is its default).
        In a DataLoader worker it re-derives its generators from the worker's
        seed on first use, so workers do not repeat each other.

        Parameters
        ----------
        path : str or path-like, optional
            Save the augmenter there (:meth:`save`) and record the path, so
            ``A.to_dict``/``A.save`` serialise the transform and
            ``A.from_dict``/``A.load`` rebuild it. Without it the transform
            works but refuses to serialise.

        Returns
        -------
        transform : albumentations.ImageOnlyTransform
            An instance of :func:`albumentations_class`.

        Examples
        --------
        >>> import numpy as np
        >>> import pytest
        >>> A = pytest.importorskip("albumentations")  # i.e. import albumentations as A
        >>> from histmatch_ml import RandomHistogramMatching
        >>> refs = [np.full((8, 8, 3), 120, dtype=np.uint8)]
        >>> aug = RandomHistogramMatching(strength=1.0, p=1.0).fit(refs)
        >>> pipeline = A.Compose([aug.as_albumentations(), A.HorizontalFlip()], seed=0)
        >>> image = np.zeros((8, 8, 3), dtype=np.uint8)
        >>> out = pipeline(image=image)["image"]
        >>> out.shape, int(out.max())
        ((8, 8, 3), 120)
        """
        from ._albumentations import albumentations_class

        check_is_fitted(self, "references_")
        if path is not None:
            self.save(path)
        return albumentations_class()(model_path=path, p=self.p, augmenter=self)

    def as_torch_module(self, *, generator: Any = None) -> Any:
        """A ``torch.nn.Module`` augmenting whole batches, for use after a DataLoader.

        Each call draws a reference and a strength per image
        (:meth:`sample_batch_params`) and matches the batch in one call on its
        device, as ``kornia.augmentation`` modules do.

        Parameters
        ----------
        generator : torch.Generator, optional
            Draw from this generator (on any device); by default from the
            augmenter's own stream (``random_state``).

        Returns
        -------
        module : torch.nn.Module
            A :class:`histmatch_ml.backends.torch.RandomHistogramMatchingModule`
            taking ``(N, C, H, W)`` (or ``(C, H, W)``) tensors.

        Examples
        --------
        >>> import numpy as np
        >>> import pytest
        >>> torch = pytest.importorskip("torch")
        >>> from histmatch_ml import RandomHistogramMatching
        >>> refs = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
        >>> aug = RandomHistogramMatching(p=1.0).fit(refs)
        >>> module = aug.as_torch_module(generator=torch.Generator().manual_seed(0))
        >>> batch = torch.rand(4, 3, 16, 16)
        >>> out = module(batch)
        >>> out.shape == batch.shape, out.dtype
        (True, torch.float32)
        """
        from ..backends.torch import RandomHistogramMatchingModule

        check_is_fitted(self, "references_")
        return RandomHistogramMatchingModule(self, generator=generator)

    # ---------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Save the fitted augmenter (npz + JSON, no pickle); the write is atomic.

        Parameters
        ----------
        path : str or path-like
            File to write.

        Returns
        -------
        path : pathlib.Path
            The file written.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from histmatch_ml import RandomHistogramMatching
        >>> refs = np.random.default_rng(0).integers(0, 255, (2, 8, 8), dtype=np.uint8)
        >>> aug = RandomHistogramMatching(random_state=3).fit(refs, groups=["a", "b"])
        >>> path = os.path.join(tempfile.mkdtemp(), "aug.npz")
        >>> aug.save(path).name
        'aug.npz'
        >>> RandomHistogramMatching.load(path).reference_labels_.tolist()
        ['a', 'b']
        """
        from ..io import save_model

        return save_model(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> RandomHistogramMatching:
        """Load an augmenter written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like
            File written by :meth:`save`.

        Returns
        -------
        augmenter : RandomHistogramMatching
            The fitted augmenter; its random stream starts afresh from
            ``random_state``.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from histmatch_ml import RandomHistogramMatching
        >>> refs = np.random.default_rng(0).integers(0, 255, (2, 8, 8), dtype=np.uint8)
        >>> path = os.path.join(tempfile.mkdtemp(), "aug.npz")
        >>> _ = RandomHistogramMatching(random_state=3).fit(refs).save(path)
        >>> RandomHistogramMatching.load(path).n_references_
        2
        """
        from ..io import load_model

        return load_model(path, expected_class=cls)

    def _check_loaded_state(self) -> None:
        """Check the fitted attributes read from a model file; ``ValueError`` for any flaw."""
        check_loaded_basics(
            self,
            (
                "method_",
                "references_",
                "n_channels_",
                "dtype_",
                "reference_labels_",
                "n_references_",
            ),
        )
        _strength_range(self.strength)  # (the pair's bounds, beyond the type checked at load)
        if not isinstance(self.references_, list) or not self.references_:
            raise ValueError("references_ must be a non-empty list of reference states")
        method = get_method(self.method_)
        for i, state in enumerate(self.references_):
            try:
                method.check_state(state, self.n_channels_)
            except ValueError as exc:
                raise ValueError(f"references_[{i}]: {exc}") from None
        if self.n_references_ != len(self.references_):
            raise ValueError(
                f"n_references_ is {self.n_references_} but references_ holds "
                f"{len(self.references_)} states"
            )
        params = self._settings()._params()
        expected = [method.prepare(state, params) for state in self.references_]
        self.tables_ = loaded_tables(getattr(self, "tables_", None), expected, "references_")
