"""``match_histograms``: one image matched to one reference, in one call."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _images
from .matcher import HistogramMatcher
from .methods.landmarks import DEFAULT_LANDMARKS

__all__ = ["match_histograms"]


def match_histograms(
    image: Any,
    reference: Any,
    *,
    method: str = "per_channel",
    mask: Any = None,
    reference_mask: Any = None,
    strength: float = 1.0,
    scale: str = "dtype",
    grid_cells: int = 65536,
    n_quantiles: int = 1024,
    ordering: str = "variational",
    n_iter: int = 12,
    n_refine: int = 10,
    lab_mode: str = "joint",
    regrain: bool = False,
    landmarks: tuple[float, ...] = DEFAULT_LANDMARKS,
    standard_range: tuple[float, float] | None = None,
    spatial_dims: int = 2,
    n_jobs: int | None = None,
    random_state: int | np.random.RandomState | None = None,
) -> Any:
    """Match the histogram of one image to that of one reference image.

    The function twin of :class:`HistogramMatcher`: it fits on ``reference``
    and transforms ``image``. The two may have different sizes and dtypes.

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, C), or PIL.Image
        The image to match.
    reference : ndarray of shape (h, w) or (h, w, C), or PIL.Image
        The reference image; same number of channels as ``image`` (grey and RGB may
        mix for ``method="luminance"``).
    method : {"per_channel", "exact", "lab", "landmarks", "luminance"}, default="per_channel"
        See :class:`HistogramMatcher`.
    mask : ndarray of bool of shape (H, W), optional
        Only these pixels of ``image`` are counted and changed.
    reference_mask : ndarray of bool of shape (h, w), optional
        Only these pixels of ``reference`` are counted.
    strength : float in [0, 1], default=1.0
        Blend between the input (0) and the fully matched image (1).
    scale : {"dtype", "raw"}, default="dtype"
        How an image and a reference of different dtypes meet: on
        scikit-image's ``img_as_float`` scale, or as raw values (see
        :class:`HistogramMatcher`).
    grid_cells : int in [1024, 4194304], default=65536
        Cells of the grid a float image's channel is placed on by
        ``method="per_channel"`` (see :class:`HistogramMatcher`).
    n_quantiles : int in [2, 65536], default=1024
        Quantiles kept per projection axis by ``method="lab"`` (and per
        channel by ``reference="barycenter"``, see :class:`HistogramMatcher`).
    ordering : {"variational", "local_means"}, default="variational"
        How ``method="exact"`` ranks pixels of equal value.
    n_iter : int in [1, 1000], default=12
        Iterations of ``method="lab"``'s sliced transport whose moves are smoothed.
    n_refine : int in [0, 1000], default=10
        Final iterations of ``method="lab"``'s transport applied unsmoothed.
    lab_mode : {"joint", "marginal"}, default="joint"
        ``method="lab"``: the joint colour distribution or each CIELAB channel.
    regrain : bool, default=False
        ``method="lab"``: restore the source's fine structure afterwards.
    landmarks : sequence of float, default=(1, 10, 20, ..., 90, 99)
        ``method="landmarks"``: the percentiles aligned.
    standard_range : (float, float) or None, default=None
        ``method="landmarks"``: where the first and last landmark land.
    spatial_dims : {2, 3}, default=2
        3: ``image`` and ``reference`` are volumes ``(D, H, W)`` / ``(D, H, W, C)``
        (``exact`` then orders voxels with 3-D neighbourhoods), masks of their shape.
    n_jobs : int or None, default=None
        Threads: ``method="exact"`` orders up to that many channels of a large
        ``image`` at once (each with its own work memory) and shares the rest
        out within each channel; None means 1 and -1 all cores. The result
        does not depend on it.
    random_state : int, RandomState instance or None, default=None
        Seeds ``method="lab"``'s projections.

    Returns
    -------
    matched : ndarray or PIL.Image
        Same type, shape, dtype (or PIL mode) as ``image``.

    Raises
    ------
    ValueError
        For bad parameters, channel counts that differ, or bad masks.
    TypeError
        For unsupported dtypes or input types.

    See Also
    --------
    HistogramMatcher : Learn from a set of references, match batches.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml import match_histograms
    >>> rng = np.random.default_rng(0)
    >>> image = rng.integers(0, 100, size=(64, 64), dtype=np.uint8)
    >>> reference = rng.integers(100, 256, size=(32, 48), dtype=np.uint8)
    >>> out = match_histograms(image, reference)
    >>> out.shape, out.dtype, int(out.min()) >= 100
    ((64, 64), dtype('uint8'), True)

    With Pillow, a PIL image comes back:

    >>> from PIL import Image
    >>> src = Image.fromarray(rng.integers(0, 100, (40, 30, 3), dtype=np.uint8))
    >>> ref = Image.fromarray(rng.integers(50, 200, (20, 20, 3), dtype=np.uint8))
    >>> match_histograms(src, ref).mode
    'RGB'
    """
    if spatial_dims == 3:  # one volume: a list of one (each checked by the volume reader)
        source, unwrap = [image], (lambda out: out[0])
        ref = [reference]
        mask = None if mask is None else [mask]
        reference_mask = None if reference_mask is None else [reference_mask]
    else:
        source, unwrap = _images.wrap_single(image, "image")
        ref, _ = _images.wrap_single(reference, "reference")
    matcher = HistogramMatcher(
        method,
        landmarks=landmarks,
        standard_range=standard_range,
        spatial_dims=spatial_dims,
        strength=strength,
        scale=scale,
        grid_cells=grid_cells,
        n_quantiles=n_quantiles,
        ordering=ordering,
        n_iter=n_iter,
        n_refine=n_refine,
        lab_mode=lab_mode,
        regrain=regrain,
        n_jobs=n_jobs,
        random_state=random_state,
    )
    # (fit and transform, with errors that name this function's arguments)
    matcher._validate_params()
    matcher._learn(ref, reference_mask, "reference")
    return unwrap(matcher._transform(source, mask, "image"))
