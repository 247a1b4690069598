"""Training-time augmentation: match each sample to a randomly chosen reference.

:class:`RandomHistogramMatching` learns one reference distribution per
reference image (or per group of images, e.g. per scanner or site) with the
same machinery as :class:`~histmatch_ml.HistogramMatcher`, and at every call
picks one of them and a blending strength at random. Random sampling
(:meth:`RandomHistogramMatching.sample_params`) is separated from the
deterministic application (:meth:`RandomHistogramMatching.apply`), as in
torchvision's ``make_params``/``transform`` and albumentations'
``get_params``/``apply``, so what was applied can be logged and replayed.

Optional adapters, imported only when used: torch tensors in and out (CHW or
NCHW) and an albumentations ``ImageOnlyTransform``
(:meth:`RandomHistogramMatching.as_albumentations`). Inside a
``torch.utils.data.DataLoader`` every worker draws its own stream, derived on
first use from the worker's seed.
"""

from __future__ import annotations

import random
import sys
from numbers import Integral, Real
from typing import Any

import cv2
import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from . import _images
from .matcher import HistogramMatcher
from .methods import get_method
from .methods._base import warn_scale_mismatch

__all__ = ["RandomHistogramMatching", "albumentations_class"]

#: HistogramMatcher parameters that ``method_params`` may set
_METHOD_PARAM_NAMES = ("n_quantiles", "ordering", "n_iter", "lab_mode", "regrain")
#: keys of one set of sampled parameters
_PARAM_KEYS = ("apply", "reference", "strength")


def _torch_worker_info() -> Any:
    """``torch.utils.data.get_worker_info()``, or None when torch is not loaded.

    A DataLoader worker has always imported torch, so a process that has not
    cannot be one; torch is never imported here.
    """
    data = sys.modules.get("torch.utils.data")
    return None if data is None else data.get_worker_info()


def _worker_key() -> tuple[int, int] | None:
    info = _torch_worker_info()
    return None if info is None else (int(info.id), int(info.seed))


def _worker_seed_sequence(worker_seed: int, seed: Any) -> np.random.SeedSequence:
    """The seed of one DataLoader worker's stream: its torch seed, plus ``seed`` if an int."""
    entropy = [int(worker_seed)]
    if isinstance(seed, Integral):
        entropy.append(int(seed))
    return np.random.SeedSequence(entropy)


def _is_tensor(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


#: dtypes ``cv2.merge``/``cv2.split`` handle: channel (de)interleaving without
#: numpy's slow strided copies (a 512x512x3 uint8 transpose copy costs ~1.5 ms)
_CV2_DTYPES = frozenset(
    np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32, np.float64)
)


def _chw_to_hwc(arr: np.ndarray) -> np.ndarray:
    """A C-contiguous ``(H, W, C)`` copy (or view, for one channel) of a ``(C, H, W)`` array."""
    if arr.shape[0] == 1:
        return arr.reshape(*arr.shape[1:], 1)
    if arr.dtype in _CV2_DTYPES and arr.shape[0] <= 512:
        return cv2.merge([np.ascontiguousarray(c) for c in arr])
    return np.ascontiguousarray(arr.transpose(1, 2, 0))


def _hwc_into_chw(image: np.ndarray, out: np.ndarray) -> None:
    """Write an ``(H, W, C)`` array into the ``(C, H, W)`` array ``out``."""
    if image.shape[2] == 1:
        out[0] = image[:, :, 0]
    elif image.dtype in _CV2_DTYPES and image.shape[2] <= 512:
        for c, channel in enumerate(cv2.split(np.ascontiguousarray(image))):
            out[c] = channel
    else:
        out[...] = image.transpose(2, 0, 1)


def _tensor_to_hwc(tensor: Any, name: str) -> list[np.ndarray]:
    """Images ``(H, W, C)`` of a ``(C, H, W)`` / ``(N, C, H, W)`` (or ``(H, W)``) tensor.

    The tensor is only read, never written.
    """
    import torch

    if tensor.ndim not in (2, 3, 4):
        raise ValueError(
            f"{name} must be a tensor of shape (C, H, W) or (N, C, H, W); "
            f"got shape {tuple(tensor.shape)}"
        )
    t = tensor.detach().cpu()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    try:
        arr = t.numpy()
    except TypeError as exc:
        raise TypeError(
            f"{name} must be a tensor of dtype uint8, int16, float32 or float64; "
            f"got {tensor.dtype} ({exc})"
        ) from None
    if arr.ndim == 2:
        return [arr[:, :, None]]
    if arr.ndim == 3:
        return [_chw_to_hwc(arr)]
    return [_chw_to_hwc(a) for a in arr]


def _hwc_to_tensor(images: list[np.ndarray], like: Any) -> Any:
    """``(H, W, C)`` arrays as a tensor of the layout, dtype and device of ``like``."""
    import torch

    h, w, c = images[0].shape
    full = np.empty((len(images), c, h, w), dtype=images[0].dtype)
    for image, out in zip(images, full):
        _hwc_into_chw(image, out)
    result = torch.from_numpy(
        full if like.ndim == 4 else full[0] if like.ndim == 3 else full[0, 0]
    )
    return result.to(device=like.device, dtype=like.dtype)


def _as_images(X: Any, name: str) -> Any:
    """Turn torch tensors (one, a batch or a list of them) into numpy images."""
    if _is_tensor(X):
        return _tensor_to_hwc(X, name)
    if isinstance(X, (list, tuple)) and any(_is_tensor(x) for x in X):
        return [
            im
            for i, x in enumerate(X)
            for im in (_tensor_to_hwc(x, f"{name}[{i}]") if _is_tensor(x) else [x])
        ]
    return X


class RandomHistogramMatching(BaseEstimator):
    """Randomly match images to one of several learned reference distributions.

    ``fit`` learns one reference distribution per reference image, or one per
    group label when ``groups`` is given, with the machinery of
    :class:`~histmatch_ml.HistogramMatcher`. Each call then, with probability
    ``p``, matches the image to one reference chosen uniformly at random,
    blended with a strength drawn uniformly from ``strength``.

    Parameters
    ----------
    method : {"per_channel", "exact", "lab"}, default="per_channel"
        Matching method, as in :class:`~histmatch_ml.HistogramMatcher`.
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
    method_params : dict or None, default=None
        Further :class:`~histmatch_ml.HistogramMatcher` parameters for the
        method: ``n_quantiles``, ``ordering``, ``n_iter``, ``lab_mode``,
        ``regrain``.

    Attributes
    ----------
    method_ : str
        The method the references were learned with.
    references_ : list of dict of str to ndarray
        One learned reference state per reference (per image or per group),
        in the format of :attr:`HistogramMatcher.reference_
        <histmatch_ml.HistogramMatcher>`.
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
    ``(N, C, H, W)`` batch gets its own draw. The output takes the value scale
    of the references: fit on the same kind of data you augment (e.g. float
    tensors in ``[0, 1]`` with references in ``[0, 1]``). Called with
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

    **Memory.** Each reference keeps the matcher's state: for 16-bit images
    exact ``(C, 65536)`` int64 counts (1.5 MB for RGB), for 8-bit ``(C, 256)``,
    for floats ``(C, n_quantiles)``. To draw among thousands of 16-bit
    images, pool them into ``groups``.

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

    def __init__(
        self,
        method: str = "per_channel",
        *,
        strength: float | tuple[float, float] = (0.5, 1.0),
        p: float = 0.5,
        random_state: int | np.random.Generator | np.random.RandomState | None = None,
        method_params: dict[str, Any] | None = None,
    ) -> None:
        self.method = method
        self.strength = strength
        self.p = p
        self.random_state = random_state
        self.method_params = method_params

    # --------------------------------------------------------------- checks
    def _strength_range(self) -> tuple[float, float]:
        s = self.strength
        if isinstance(s, Real) and not isinstance(s, bool):
            lo = hi = float(s)
        elif (
            isinstance(s, (tuple, list))
            and len(s) == 2
            and all(isinstance(v, Real) and not isinstance(v, bool) for v in s)
        ):
            lo, hi = float(s[0]), float(s[1])
        else:
            raise ValueError(
                f"strength must be a float in [0, 1] or a pair (low, high); got {s!r}"
            )
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"strength must satisfy 0 <= low <= high <= 1; got {s!r}")
        return lo, hi

    def _check_p(self) -> float:
        p = self.p
        if isinstance(p, bool) or not isinstance(p, Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a float in [0, 1]; got {p!r}")
        return float(p)

    def _method_params(self) -> dict[str, Any]:
        extra = {} if self.method_params is None else self.method_params
        if not isinstance(extra, dict):
            raise TypeError(f"method_params must be a dict or None; got {type(extra).__name__}")
        unknown = sorted(set(extra) - set(_METHOD_PARAM_NAMES))
        if unknown:
            raise ValueError(
                f"method_params may only set {list(_METHOD_PARAM_NAMES)}; got {unknown}"
            )
        return dict(extra)

    def _fit_seed(self) -> int | None:
        """An int seed for the methods' own randomness (``lab``), from ``random_state``."""
        rs = self.random_state
        if rs is None or isinstance(rs, Integral):
            return None if rs is None else int(rs)
        if isinstance(rs, np.random.Generator):
            return int(rs.integers(np.iinfo(np.int32).max))
        return int(rs.randint(np.iinfo(np.int32).max))  # a RandomState

    def _validate_params(self) -> None:
        """Check every parameter; ``ValueError``/``TypeError`` naming the one at fault."""
        self._strength_range()
        self._check_p()
        self._method_params()
        get_method(self.method)
        rs = self.random_state
        if not (
            rs is None
            or (isinstance(rs, Integral) and not isinstance(rs, bool))
            or isinstance(rs, (np.random.Generator, np.random.RandomState))
        ):
            raise ValueError(
                "random_state must be an int, a numpy Generator, a RandomState instance "
                f"or None; got {rs!r}"
            )

    # ------------------------------------------------------------------ fit
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
        self._validate_params()
        extra = self._method_params()
        method = get_method(self.method)
        batch = _images.to_batch(_as_images(references, "references"), mask, name="references")
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
        seed = self._fit_seed()
        states, matcher = [], None
        for g in range(len(labels)):
            members = np.flatnonzero(inverse == g)
            images = [batch.images[i] for i in members]
            masks = None if batch.masks is None else [batch.masks[i] for i in members]
            matcher = HistogramMatcher(self.method, random_state=seed, **extra)
            states.append(matcher.fit(images, mask=masks).reference_)
        self.method_ = method.name
        self.references_ = states
        self.reference_labels_ = labels
        self.n_references_ = len(states)
        self.dtype_ = batch.dtype.name
        self.n_channels_ = batch.n_channels
        self.n_images_seen_ = n_images
        self._prepare(matcher)
        self._rng = None
        self._rng_key = None
        return self

    def _prepare(self, matcher: HistogramMatcher | None) -> dict[str, Any]:
        """Cache what every call needs: the method object and its parameters."""
        if matcher is None:
            matcher = HistogramMatcher(self.method_, **self._method_params())
        params = matcher.get_params(deep=False)
        params["strength"] = 1.0
        self._call_cache = {"method": get_method(self.method_), "params": params}
        return self._call_cache

    def _cache(self) -> dict[str, Any]:
        check_is_fitted(self, "references_")
        cache = getattr(self, "_call_cache", None)
        return self._prepare(None) if cache is None else cache  # None e.g. after load

    # ------------------------------------------------------------- sampling
    def _generator(self) -> np.random.Generator:
        """The stream of this process: lazily seeded, re-derived in every DataLoader worker."""
        key = _worker_key()
        rng = getattr(self, "_rng", None)
        if rng is None or key != getattr(self, "_rng_key", None):
            rs = self.random_state
            if key is not None:
                rng = np.random.default_rng(_worker_seed_sequence(key[1], rs))
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
        p, (lo, hi), n = self._check_p(), self._strength_range(), len(self.references_)
        if rng is None:
            rng = self._generator()
        u = rng.random(3)
        return {
            "apply": bool(u[0] < p),
            "reference": min(int(u[1] * n), n - 1),
            "strength": float(lo + (hi - lo) * u[2]) if hi > lo else lo,
        }

    # ------------------------------------------------------------- applying
    def _checked(self, params: Any) -> dict[str, Any]:
        if not isinstance(params, dict) or not set(_PARAM_KEYS) <= set(params):
            raise ValueError(
                f"params must be a dict with keys {list(_PARAM_KEYS)} (from sample_params); "
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

    def _match(self, image: np.ndarray, params: dict[str, Any], cache: dict[str, Any]):
        """Match one validated ``(H, W, C)`` array with one validated set of params."""
        method_params = dict(cache["params"], strength=float(params["strength"]))
        state = self.references_[int(params["reference"])]
        return cache["method"].apply(image, None, state, method_params)

    def _batch(self, images: Any, name: str, cache: dict[str, Any]) -> _images.Batch:
        batch = _images.to_batch(images, name=name)
        if batch.n_channels != self.n_channels_:
            raise ValueError(
                f"{name} must have {self.n_channels_} channel(s), as the references; "
                f"got {batch.n_channels}"
            )
        cache["method"].check_channels(batch.n_channels, name)
        if cache["method"].raw_values:
            warn_scale_mismatch(batch.dtype, self.dtype_, name, stacklevel=4)
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
        cache = self._cache()
        if _is_tensor(image):
            return self._apply_tensor(image, params, cache)
        params = self._checked(params)
        if not params["apply"]:
            return image
        wrapped, unwrap = _images.wrap_single(image, "image")
        batch = self._batch(wrapped, "image", cache)
        out = self._match(batch.images[0], params, cache)
        return unwrap(_images.restore(batch, [out]))

    def _apply_tensor(self, tensor: Any, params: Any, cache: dict[str, Any]) -> Any:
        images = _tensor_to_hwc(tensor, "image")
        plist = list(params) if isinstance(params, (list, tuple)) else [params] * len(images)
        if len(plist) != len(images):
            raise ValueError(
                f"params must hold one dict per image of the batch ({len(images)}); "
                f"got {len(plist)}"
            )
        plist = [self._checked(p) for p in plist]
        if not any(p["apply"] for p in plist):
            return tensor
        batch = self._batch(images, "image", cache)
        outputs = [
            self._match(im, p, cache) if p["apply"] else im for im, p in zip(batch.images, plist)
        ]
        return _hwc_to_tensor(outputs, tensor)

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
        if _is_tensor(image) and image.ndim == 4:
            params: Any = [self.sample_params() for _ in range(image.shape[0])]
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
        self._cache()
        if path is not None:
            self.save(path)
        return albumentations_class()(model_path=path, p=self.p, augmenter=self)

    # ---------------------------------------------------------- persistence
    def save(self, path: Any) -> None:
        """Save the fitted augmenter (npz + JSON, no pickle).

        Parameters
        ----------
        path : str or path-like
            File to write.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from histmatch_ml import RandomHistogramMatching
        >>> refs = np.random.default_rng(0).integers(0, 255, (2, 8, 8), dtype=np.uint8)
        >>> aug = RandomHistogramMatching(random_state=3).fit(refs, groups=["a", "b"])
        >>> path = os.path.join(tempfile.mkdtemp(), "aug.npz")
        >>> aug.save(path)
        >>> RandomHistogramMatching.load(path).reference_labels_.tolist()
        ['a', 'b']
        """
        from .io import save_model

        save_model(self, path)

    @classmethod
    def load(cls, path: Any) -> RandomHistogramMatching:
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
        >>> RandomHistogramMatching(random_state=3).fit(refs).save(path)
        >>> RandomHistogramMatching.load(path).n_references_
        2
        """
        from .io import load_model

        return load_model(path, expected_class=cls)


# ------------------------------------------------------------ albumentations
_ALBUMENTATIONS_CLASS: type | None = None


def albumentations_class() -> type:
    """The albumentations transform class wrapping :class:`RandomHistogramMatching`.

    Created (and registered with albumentations' serialisation) on first
    call, so albumentations is only imported when used. Call it before
    ``A.from_dict``/``A.load`` in a fresh process. Its constructor takes
    ``model_path`` (a file written by :meth:`RandomHistogramMatching.save`)
    and ``p``, or an in-memory ``augmenter=`` (then ``to_dict`` raises).

    Returns
    -------
    cls : type
        ``histmatch_ml.augment.AlbumentationsRandomHistogramMatching``, a
        subclass of ``albumentations.ImageOnlyTransform``.

    Raises
    ------
    ImportError
        If albumentations is not installed.

    Examples
    --------
    >>> import pytest
    >>> A = pytest.importorskip("albumentations")
    >>> from histmatch_ml.augment import albumentations_class
    >>> cls = albumentations_class()
    >>> cls.__name__, issubclass(cls, A.ImageOnlyTransform)
    ('AlbumentationsRandomHistogramMatching', True)
    """
    global _ALBUMENTATIONS_CLASS
    if _ALBUMENTATIONS_CLASS is None:
        try:
            import albumentations as A
        except ImportError as exc:
            raise ImportError(
                "the albumentations adapter needs albumentations: "
                "pip install 'histmatch_ml[albumentations]'"
            ) from exc
        _ALBUMENTATIONS_CLASS = _make_albumentations_class(A.ImageOnlyTransform)
    return _ALBUMENTATIONS_CLASS


def _make_albumentations_class(base: type) -> type:
    class AlbumentationsRandomHistogramMatching(base):
        """albumentations transform: match to a random learned reference.

        Build it with :meth:`RandomHistogramMatching.as_albumentations`.
        """

        def __init__(
            self,
            model_path: str | None = None,
            p: float = 0.5,
            *,
            augmenter: RandomHistogramMatching | None = None,
        ) -> None:
            super().__init__(p=p)
            if augmenter is None:
                if model_path is None:
                    raise ValueError(
                        "model_path (a file written by RandomHistogramMatching.save) or "
                        "augmenter is required; got neither"
                    )
                augmenter = RandomHistogramMatching.load(model_path)
            if not isinstance(augmenter, RandomHistogramMatching):
                raise TypeError(
                    f"augmenter must be a RandomHistogramMatching; got {type(augmenter).__name__}"
                )
            augmenter._cache()  # fitted, parameters valid
            self.model_path = None if model_path is None else str(model_path)
            self.augmenter = augmenter
            self._worker = None

        def _refresh_worker_stream(self) -> None:
            key = _worker_key()
            if key != self._worker:
                if key is not None:  # a DataLoader worker: its own stream
                    seq = _worker_seed_sequence(key[1], self.seed)
                    self.random_generator = np.random.default_rng(seq)
                    self.py_random = random.Random(int(seq.generate_state(1)[0]))
                self._worker = key

        def should_apply(self, force_apply: bool = False) -> bool:
            self._refresh_worker_stream()
            return super().should_apply(force_apply=force_apply)

        def get_params(self) -> dict[str, Any]:
            params = self.augmenter.sample_params(rng=self.random_generator)
            params["apply"] = True  # albumentations has decided with its own p
            return params

        def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
            return self.augmenter.apply(img, {k: params[k] for k in _PARAM_KEYS})

        def get_transform_init_args(self) -> dict[str, Any]:
            return {"model_path": self.model_path}

        def to_dict_private(self) -> dict[str, Any]:
            if self.model_path is None:
                raise ValueError(
                    "this transform holds an in-memory augmenter; build it with "
                    "as_albumentations(path=...) to make it serialisable"
                )
            return super().to_dict_private()

    AlbumentationsRandomHistogramMatching.__qualname__ = "AlbumentationsRandomHistogramMatching"
    return AlbumentationsRandomHistogramMatching


def __getattr__(name: str) -> Any:
    # lets pickle and albumentations find the lazily created adapter class
    if name == "AlbumentationsRandomHistogramMatching":
        return albumentations_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
