"""Bias-field correction by information minimisation: :class:`BiasFieldCorrector`.

MR volumes (and microscopy images, as vignetting) carry a smooth
multiplicative intensity inhomogeneity, the *bias field*, which no histogram
method can undo: it is a function of position, so it spreads every tissue's
intensities over a range that a map of intensities alone cannot gather
again. This module estimates it per image, per channel, as the exponential
of a low-degree polynomial of the voxel coordinates, chosen so that dividing
it out makes the histogram of the log intensities as sharp as possible: the
least Shannon entropy (Likar, Viergever & Pernus 2001, "Retrospective
correction of MR intensity inhomogeneity by information minimization").

* The coordinates are scaled to ``[-1, 1]`` along every axis, so the model
  (every monomial of total degree 1 to ``degree``) does not depend on the
  voxel spacing: an affine change of coordinates keeps the total degree.
* The entropy is measured on a seeded sample of at most ``n_samples``
  voxels with positive values (inside the mask, when one is given: drawn
  with replacement, repeats dropped; every such voxel when there are fewer), in bins of a fixed
  width (``_BINS`` of them over the uncorrected sample's central log range,
  the grid starting at the corrected sample's smallest value), each value shared linearly
  between its two nearest bins and the histogram smoothed by a Gaussian (a
  Parzen estimate), so the objective is continuous in the coefficients. It is
  minimised from "no bias" by Powell's method (no gradients), first with a
  heavily smoothed histogram (a wide basin around the field), then with a
  finely smoothed one from there.
* The polynomial is centred on the sample (its mean over the sampled voxels
  is 0), so the field's geometric mean over them is 1 and the corrected
  image keeps its overall intensity level.

Use it before histogram matching of volumes from several scanners or sites
(see the "Medical volumes" page): matching can then align the tissues'
intensities that the bias field had spread.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from numbers import Integral
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_params

from . import _images
from .methods._base import blend

#: bins of the log-intensity histogram whose entropy is minimised (over the uncorrected
#: sample's central range), and the Gaussian's standard deviations in bins (the Parzen
#: smoothing that makes the entropy continuous), coarse to fine
_BINS = 256
_SMOOTHING = (8.0, 2.0)
#: Powell's tolerances of each stage (on the coefficients, which are log factors, and on
#: the entropy): the coarse stage only has to land in the fine one's basin
_TOLERANCES = ((1e-2, 1e-3), (1e-4, 1e-6))
#: the corrected sample may spread over at most this many times the uncorrected one's
#: central range (in bins) before the entropy counts it as a failure
_MAX_SPREAD = 64
#: the fewest voxels with positive values an estimate needs
_MIN_VOXELS = 100


def _monomials(degree: int, n_axes: int) -> list[tuple[int, ...]]:
    """Exponents of every monomial of total degree 1 to ``degree`` in ``n_axes`` variables.

    >>> _monomials(2, 2)
    [(0, 1), (1, 0), (0, 2), (1, 1), (2, 0)]
    """
    exps = itertools.product(range(degree + 1), repeat=n_axes)
    return sorted((e for e in exps if 0 < sum(e) <= degree), key=lambda e: (sum(e), e))


def _axis_powers(shape: tuple[int, ...], degree: int) -> list[np.ndarray]:
    """Per axis, the coordinates in ``[-1, 1]`` raised to the powers 0 ... ``degree``."""
    out = []
    for n in shape:
        x = np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
        out.append(x[None, :] ** np.arange(degree + 1)[:, None])  # (degree + 1, n)
    return out


def _monomial(
    powers: list[np.ndarray], exps: tuple[int, ...], coords: tuple, start: Any
) -> np.ndarray:
    """``start`` times the monomial ``exps`` at ``coords``: per axis, indices into the
    coordinates (a sample's, or an open mesh that broadcasts to the whole grid)."""
    term = start
    for axis, e in enumerate(exps):
        if e:
            term = term * powers[axis][e][coords[axis]]
    return term


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0]
    p = p / p.sum()
    return float(-(p * np.log(p)).sum())


def _fit_channel(
    channel: np.ndarray,
    usable: np.ndarray,
    degree: int,
    n_samples: int,
    rng: np.random.RandomState,
    name: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients and the centring constants of one channel's log field."""
    from scipy import ndimage, optimize  # (on use: the core imports stay light)

    shape = channel.shape
    flat = np.flatnonzero(usable)
    if flat.size < _MIN_VOXELS:
        raise ValueError(
            f"{name} needs at least {_MIN_VOXELS} voxels with positive values per channel "
            f"(inside its mask, when one is given) to estimate a bias field; got {flat.size}"
        )
    if flat.size > n_samples:  # drawn with replacement, repeats dropped: memory of the sample
        flat = flat[np.unique(rng.randint(0, flat.size, size=n_samples))]
    where = np.unravel_index(flat, shape)
    logs = np.log(channel[where].astype(np.float64))
    powers = _axis_powers(shape, degree)
    terms = _monomials(degree, len(shape))
    basis = np.empty((flat.size, len(terms)))
    for k, exps in enumerate(terms):
        basis[:, k] = _monomial(powers, exps, where, np.ones(flat.size))
    centre = basis.mean(axis=0)
    basis -= centre
    # a fixed bin width (of the uncorrected sample's central range), the grid starting at
    # each evaluation's smallest value: a field that spreads the values occupies more bins
    # and so has more entropy (a fixed range would pile the values it pushes out into its
    # end bins, a degenerate minimum)
    lo, hi = np.percentile(logs, [0.5, 99.5])
    scale = _BINS / max(hi - lo, 1e-6)
    most = _MAX_SPREAD * _BINS

    def entropy(coef: np.ndarray, smoothing: float) -> float:
        t = logs - basis @ coef
        t -= t.min()
        t *= scale
        if t.max() >= most:  # spread over far more than the uncorrected range: worse
            return float(np.log(most)) + 1.0
        cell = t.astype(np.intp)
        frac = t - cell
        size = int(cell.max()) + 2
        counts = np.bincount(cell, weights=1.0 - frac, minlength=size)
        counts[1:] += np.bincount(cell, weights=frac, minlength=size - 1)[: size - 1]
        return _entropy(ndimage.gaussian_filter1d(counts, smoothing, mode="constant"))

    # coarse to fine: a heavily smoothed histogram first (a wide basin around the field),
    # then the fine one from there
    coef = np.zeros(len(terms))
    for smoothing, (xtol, ftol) in zip(_SMOOTHING, _TOLERANCES):
        found = optimize.minimize(
            entropy,
            coef,
            args=(smoothing,),
            method="Powell",
            options={"xtol": xtol, "ftol": ftol, "maxfev": 200 * len(terms)},
        )
        if found.fun < entropy(coef, smoothing):
            coef = found.x
    return coef, centre


def _field_of(
    coef: np.ndarray, centre: np.ndarray, shape: tuple[int, ...], degree: int
) -> np.ndarray:
    """The multiplicative field ``exp(sum_k coef_k (monomial_k - centre_k))`` over ``shape``."""
    powers = _axis_powers(shape, degree)
    mesh = np.ix_(*(np.arange(n) for n in shape))
    log_field = np.full(shape, -float(coef @ centre))
    for c, exps in zip(coef, _monomials(degree, len(shape))):
        log_field += _monomial(powers, exps, mesh, np.asarray(c))
    return np.exp(log_field)


def _draws(random_state: Any) -> Callable[[], np.random.RandomState]:
    """The generator of each channel's sample: an integer seed gives every channel of every
    image the same draw (a channel's field does not depend on the others, or on the rest of
    its batch); a ``RandomState`` (or None: numpy's) is drawn from in turn."""
    if isinstance(random_state, Integral):
        return lambda: np.random.RandomState(int(random_state))
    shared = check_random_state(random_state)
    return lambda: shared


def _channel_fields(
    image: np.ndarray,
    mask: np.ndarray | None,
    degree: int,
    n_samples: int,
    draws: Callable[[], np.random.RandomState],
    name: str,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(channel, field)`` of an image ``(*spatial, C)``, one float64 field at a time."""
    for c in range(image.shape[-1]):
        channel = image[..., c]
        usable = channel > 0
        if mask is not None:
            usable &= mask
        coef, centre = _fit_channel(channel, usable, degree, n_samples, draws(), name)
        yield c, _field_of(coef, centre, channel.shape, degree)


def _correct_into(channel: np.ndarray, field: np.ndarray, out: np.ndarray) -> None:
    """``channel / field`` into ``out`` (of the image's dtype: integers rounded and clipped)."""
    blend(channel, np.divide(channel, field, out=field), 1.0, out.dtype, out=out)


class BiasFieldCorrector(TransformerMixin, BaseEstimator):
    """Divide out each image's smooth multiplicative bias field (information minimisation).

    Per image and channel, the bias field is modelled as the exponential of
    a polynomial of the voxel coordinates (every monomial of total degree 1
    to ``degree``, the coordinates scaled to ``[-1, 1]`` along each axis) and
    chosen to minimise the entropy of the histogram of the corrected log
    intensities (Likar, Viergever & Pernus 2001), measured on a seeded sample
    of the voxels with positive values (inside the mask, when one is given).
    The field's geometric mean over those voxels is 1, so the overall
    intensity level is kept. Stateless: each image is corrected on its own,
    and ``fit`` only checks the parameters.

    Parameters
    ----------
    spatial_dims : {2, 3}, default=3
        3: volumes ``(N, D, H, W)``, ``(N, D, H, W, C)`` or lists of
        ``(D, H, W[, C])`` volumes; 2: images, as :class:`HistogramMatcher`
        reads them.
    degree : int in [1, 6], default=2
        Total degree of the polynomial (2: 9 coefficients for a volume, 5 for an image).
    n_samples : int in [100, inf), default=20000
        The most voxels sampled per channel for the entropy (drawn with
        replacement, repeats dropped; all of them when there are fewer).
    random_state : int, RandomState instance or None, default=0
        Seeds the sample. An integer gives every channel of every image the
        same draw, so a field does not depend on the other channels or
        images of its batch.

    See Also
    --------
    estimate_bias_field : The field of one image, to inspect it.
    HistogramMatcher : Match the corrected volumes' histograms to a reference.

    Notes
    -----
    The mask (or, without one, every voxel with a positive value) sets the
    voxels the field is estimated from; the field is divided out of every
    voxel. Values at or below zero are left out of the estimate (the log of
    a multiplicative field is undefined there) and are divided like the
    others. Outputs have the input's dtype (integers rounded and clipped).
    The cost is one to two thousand evaluations of the entropy of the
    sample (whatever the image's size) plus a few passes over its voxels:
    about a third of a second for a brain volume (``benchmarks/README.md``).

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml import BiasFieldCorrector
    >>> rng = np.random.default_rng(0)
    >>> tissue = np.where(rng.random((24, 32, 32)) < 0.5, 100.0, 160.0)
    >>> z = np.linspace(-1, 1, 24)[:, None, None]
    >>> biased = tissue * np.exp(0.2 * z) + rng.normal(0, 2, tissue.shape)  # brighter on top
    >>> corrected = BiasFieldCorrector().fit_transform(biased.astype(np.float32)[None])[0]
    >>> def spread(v):  # the relative spread of the darker tissue's values
    ...     dark = v[tissue == 100.0]
    ...     return round(float(dark.std() / dark.mean()), 3)
    >>> spread(biased), spread(corrected)
    (0.122, 0.02)
    """

    _parameter_constraints: dict = {
        "spatial_dims": [Interval(Integral, 2, 3, closed="both")],
        "degree": [Interval(Integral, 1, 6, closed="both")],
        "n_samples": [Interval(Integral, _MIN_VOXELS, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        *,
        spatial_dims: int = 3,
        degree: int = 2,
        n_samples: int = 20000,
        random_state: int | np.random.RandomState | None = 0,
    ) -> None:
        self.spatial_dims = spatial_dims
        self.degree = degree
        self.n_samples = n_samples
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any = None, y: Any = None, *, mask: Any = None) -> BiasFieldCorrector:
        """Check the parameters (the corrector learns nothing).

        Parameters
        ----------
        X, y, mask : ignored
            Present for API consistency.

        Returns
        -------
        self : BiasFieldCorrector
        """
        return self

    def transform(self, X: Any, mask: Any = None) -> Any:
        """Divide every image's estimated bias field out of it.

        Parameters
        ----------
        X : array-like or list of volumes (or images, with ``spatial_dims=2``)
            The images to correct.
        mask : array-like of bool or list of arrays, optional
            One mask of each image's spatial shape: the voxels the field is
            estimated from (every voxel is corrected).

        Returns
        -------
        X_corrected : same container, shape and dtype as ``X``
        """
        self._validate_params()
        batch = _images.to_batch(X, mask, name="X", spatial_dims=self.spatial_dims)
        full, outputs = _images.allocate_output(batch)
        masks = batch.masks or [None] * len(batch.images)
        draws = _draws(self.random_state)
        for i, (image, image_mask) in enumerate(zip(batch.images, masks)):
            image, image_mask = batch.volume(i, image), batch.volume(i, image_mask)
            out = batch.volume(i, outputs[i])
            found = _channel_fields(image, image_mask, self.degree, self.n_samples, draws, "X")
            for c, field in found:
                _correct_into(image[..., c], field, out[..., c])
        return _images.restore(batch, outputs if full is None else full)

    def fit_transform(self, X: Any, y: Any = None, *, mask: Any = None) -> Any:
        """:meth:`transform` (nothing is learned).

        Parameters
        ----------
        X : array-like or list of volumes
            The images to correct.
        y : None
            Ignored.
        mask : array-like of bool or list of arrays, optional
            As in :meth:`transform`.

        Returns
        -------
        X_corrected : same container, shape and dtype as ``X``
        """
        return self.fit().transform(X, mask=mask)


@validate_params(
    {
        "image": ["array-like"],
        "mask": ["array-like", None],
        "degree": [Interval(Integral, 1, 6, closed="both")],
        "n_samples": [Interval(Integral, _MIN_VOXELS, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def estimate_bias_field(
    image: Any,
    mask: Any = None,
    *,
    degree: int = 2,
    n_samples: int = 20000,
    random_state: int | np.random.RandomState | None = 0,
) -> np.ndarray:
    """The bias field of one image or volume, as :class:`BiasFieldCorrector` estimates it.

    Parameters
    ----------
    image : ndarray of shape (D, H, W), (H, W) or with a trailing channel axis
        One volume or image; a trailing axis of at most 4 is read as channels
        only when the array has 4 dimensions (a 3-D array is a grey volume).
    mask : ndarray of bool of the image's spatial shape, optional
        The voxels the field is estimated from.
    degree, n_samples, random_state
        As in :class:`BiasFieldCorrector`.

    Returns
    -------
    field : ndarray of float32 of the image's shape
        The multiplicative field (geometric mean 1 over the sampled voxels);
        ``image / field`` is the corrected image.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml import estimate_bias_field
    >>> rng = np.random.default_rng(1)
    >>> truth = np.exp(0.3 * np.linspace(-1, 1, 64))[None, :]  # brighter to the right
    >>> image = np.where(rng.random((48, 64)) < 0.4, 50.0, 120.0) * truth
    >>> field = estimate_bias_field(image)
    >>> ratio = field / truth  # the truth up to a constant factor
    >>> bool(ratio.max() / ratio.min() < 1.02)
    True
    """
    arr = _images.check_dtype(np.asarray(image), "image")
    _images.check_values(arr, "image")
    if arr.ndim not in (2, 3, 4):
        raise ValueError(f"image must be a 2-D image or a 3-D volume; got shape {arr.shape}")
    grey = arr.ndim in (2, 3)
    data = arr[..., None] if grey else arr
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != data.shape[:-1]:
            raise ValueError(
                f"mask must be a boolean array of the image's spatial shape {data.shape[:-1]}; "
                f"got {mask.dtype} of shape {mask.shape}"
            )
    fields = np.empty(data.shape, dtype=np.float32)
    for c, field in _channel_fields(data, mask, degree, n_samples, _draws(random_state), "image"):
        fields[..., c] = field
    return fields[..., 0] if grey else fields
