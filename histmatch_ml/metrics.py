"""Distances between value distributions and a speckle measure, for matching quality."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from . import _images, _ordering, _reference


def _channel_values(image: Any, mask: Any, name: str) -> list[np.ndarray]:
    """Per-channel 1-D value arrays of one image (masked pixels only)."""
    batch, _ = _images.wrap_single(image, name)
    b = _images.to_batch(batch, mask, name=name)
    img = b.images[0]
    m = None if b.masks is None else b.masks[0]
    return [img[:, :, c] if m is None else img[:, :, c][m] for c in range(img.shape[2])]


def wasserstein_1d(u: np.ndarray, v: np.ndarray) -> float:
    """Wasserstein-1 distance between two 1-D samples of any sizes.

    Equal to the integral of ``|F_u - F_v|``, the area between the two
    empirical CDFs; for histograms of integers it is the earth mover's
    distance in grey levels.

    Parameters
    ----------
    u, v : array-like
        Samples (any shape; flattened).

    Returns
    -------
    float
        The distance, in the units of the values.

    Examples
    --------
    >>> from histmatch_ml.metrics import wasserstein_1d
    >>> wasserstein_1d([0, 1, 2], [1, 2, 3])
    1.0
    """
    u = np.asarray(u).ravel()
    v = np.asarray(v).ravel()
    if u.size == 0 or v.size == 0:
        raise ValueError("u and v must not be empty")
    dtype = np.result_type(u.dtype, v.dtype)
    if _reference.has_exact_levels(dtype) and dtype == u.dtype == v.dtype:
        n_levels, _ = _reference.level_count_and_offset(dtype)
        cu = np.cumsum(np.bincount(_reference.level_index(u), minlength=n_levels)) / u.size
        cv = np.cumsum(np.bincount(_reference.level_index(v), minlength=n_levels)) / v.size
        return float(np.abs(cu - cv)[:-1].sum())
    su = np.sort(u.astype(np.float64))
    sv = np.sort(v.astype(np.float64))
    x = np.concatenate([su, sv])
    x.sort()
    fu = np.searchsorted(su, x[:-1], side="right") / su.size
    fv = np.searchsorted(sv, x[:-1], side="right") / sv.size
    return float(np.sum(np.abs(fu - fv) * np.diff(x)))


def histogram_distance(
    image: Any, reference: Any, *, mask: Any = None, reference_mask: Any = None
) -> np.ndarray:
    """Per-channel Wasserstein-1 distance between two images' value histograms.

    The measure used to compare matching methods: 0 means the matched image
    has exactly the reference's histogram (up to the pixel counts).

    Parameters
    ----------
    image, reference : ndarray of shape (H, W) or (H, W, C), or PIL.Image
        The two images; sizes may differ, channel counts must agree.
    mask, reference_mask : ndarray of bool, optional
        Count only these pixels.

    Returns
    -------
    ndarray of shape (C,)
        One distance per channel, in the images' value units.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.metrics import histogram_distance
    >>> a = np.zeros((4, 4), dtype=np.uint8)
    >>> histogram_distance(a, a + 3)
    array([3.])
    """
    a = _channel_values(image, mask, "image")
    b = _channel_values(reference, reference_mask, "reference")
    if len(a) != len(b):
        raise ValueError(
            f"image and reference must have the same number of channels; got {len(a)} and {len(b)}"
        )
    return np.array([wasserstein_1d(x, y) for x, y in zip(a, b)])


def strict_ordering_ratio(image: Any, ordering: str = "variational", *, mask: Any = None) -> float:
    """Fraction of the pixels of one channel whose strict-ordering key is unique.

    ``method="exact"`` sorts pixels by value, then by the ``ordering`` key,
    then by position. A pixel whose ``(value, ordering key)`` is shared with
    another is *tied*: its rank among them is decided by its position only.
    This is the share of pixels that are not tied, 1.0 for a perfect ordering.

    Parameters
    ----------
    image : ndarray of shape (H, W), or PIL.Image of mode "L", "I;16" or "F"
        One channel (match colour images channel by channel).
    ordering : {"variational", "local_means"}, default="variational"
        The ordering key, as ``HistogramMatcher(ordering=...)``.
    mask : ndarray of bool of shape (H, W), optional
        Count (and order) only these pixels.

    Returns
    -------
    float
        Between 0 (all pixels tied, e.g. a constant image) and 1.

    Raises
    ------
    ValueError
        For an unknown ``ordering``, an image with more than one channel, or
        a bad mask.

    See Also
    --------
    HistogramMatcher : ``method="exact"`` uses these orderings.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.metrics import strict_ordering_ratio
    >>> from skimage import data
    >>> camera = data.camera()  # 512 x 512, with a flat sky
    >>> round(strict_ordering_ratio(camera, ordering="local_means"), 3)
    0.901
    >>> strict_ordering_ratio(camera, ordering="variational")
    1.0

    A constant image, or one symmetric under a reflection, has only ties:

    >>> strict_ordering_ratio(np.zeros((8, 8), dtype=np.uint8))
    0.0
    """
    _ordering.check_ordering(ordering)
    batch, _ = _images.wrap_single(image, "image")
    b = _images.to_batch(batch, mask, name="image")
    img = b.images[0]
    if img.shape[2] != 1:
        raise ValueError(
            f"image must be one channel of shape (H, W); got {img.shape[2]} channels "
            f"(pass image[..., c] for channel c)"
        )
    mask_2d = None if b.masks is None else b.masks[0]
    return _ordering.unique_fraction(img[:, :, 0], mask_2d, ordering)


def _lab_or_points(x: Any, name: str) -> np.ndarray:
    """``(N, d)`` points as given, or the CIELAB pixels ``(N, 3)`` of an RGB image."""
    if not _images._is_pil(x) and np.ndim(x) == 2:
        points = np.asarray(x)
        if points.dtype.kind not in "uif" or points.size == 0:
            raise ValueError(
                f"{name} must be a non-empty numeric (N, d) point set; got dtype "
                f"{points.dtype} and shape {points.shape}"
            )
        return points.astype(np.float32, copy=False)
    from . import _color

    batch, _ = _images.wrap_single(x, name)
    img = _images.to_batch(batch, name=name).images[0]
    if img.shape[2] != 3:
        raise ValueError(
            f"{name} must be an RGB image (H, W, 3) or an (N, d) point set; got an image "
            f"with {img.shape[2]} channel(s)"
        )
    return _color.rgb_to_lab(img.reshape(-1, 3), name)


def _quantile_pieces(na: int, nb: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pieces of ``[0, 1]`` on which the step quantile functions of ``na`` and ``nb``
    sorted samples are both constant: the sample index of each, and the widths.
    """
    if na == nb:
        index = np.arange(na)
        return index, index, np.full(na, 1.0 / na)
    ends = np.union1d(np.arange(1, na + 1, dtype=np.int64) * nb, np.arange(1, nb + 1) * na)
    widths = np.diff(ends, prepend=0) / (na * nb)
    return (ends - 1) // nb, (ends - 1) // na, widths


def sliced_wasserstein(a: Any, b: Any, *, n_directions: int = 64, random_state: Any = 0) -> float:
    """Sliced Wasserstein-1 distance between two colour (or point) distributions.

    The mean, over ``n_directions`` random unit directions, of the exact
    Wasserstein-1 distance between the two sets projected on the direction.
    RGB images are compared through their CIELAB pixels (sRGB, D65), so the
    result is in CIELAB units (about 1 to 2 is a just noticeable colour
    difference); it measures how well the *joint* colour distribution of
    ``a`` matches that of ``b``, which per-channel distances cannot see.

    Parameters
    ----------
    a, b : ndarray or PIL.Image
        RGB images ``(H, W, 3)`` (uint8, uint16, or floats in ``[0, 1]``;
        sizes may differ), or point sets ``(N, d)`` used as given.
    n_directions : int, default=64
        Number of random projection directions.
    random_state : int, numpy.random.Generator or None, default=0
        Seed of the directions (``numpy.random.default_rng(random_state)``),
        independent of any matcher's own random directions.

    Returns
    -------
    float
        The distance, in the points' units (CIELAB for images).

    Raises
    ------
    ValueError
        For images that are not RGB, point sets of different dimensions, or
        ``n_directions < 1``.

    See Also
    --------
    histogram_distance : Per-channel Wasserstein-1 distances.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.metrics import sliced_wasserstein
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1000, 3))
    >>> sliced_wasserstein(x, x)
    0.0
    >>> round(sliced_wasserstein(x, x + [3.0, 0.0, 0.0], n_directions=2000), 1)
    1.5

    Between an RGB image and a recoloured copy, in CIELAB units:

    >>> from skimage import data
    >>> img = data.astronaut()[::4, ::4]
    >>> round(sliced_wasserstein(img, img[..., ::-1]), 1)
    16.6
    """
    if not isinstance(n_directions, (int, np.integer)) or n_directions < 1:
        raise ValueError(f"n_directions must be an integer >= 1; got {n_directions!r}")
    pa, pb = _lab_or_points(a, "a"), _lab_or_points(b, "b")
    if pa.shape[1] != pb.shape[1]:
        raise ValueError(
            f"a and b must have the same dimension; got {pa.shape[1]} and {pb.shape[1]}"
        )
    directions = np.random.default_rng(random_state).standard_normal((n_directions, pa.shape[1]))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    directions = directions.astype(np.float32)
    # exact W1 of each projection: the integral of |Q_a - Q_b| over the pieces
    ia, ib, widths = _quantile_pieces(len(pa), len(pb))
    total = 0.0
    for start in range(0, n_directions, 4):  # a few directions at a time bounds the memory
        d = directions[start : start + 4]
        # einsum, not BLAS: a threaded matmul of this shape crawls on a busy machine
        sa = np.sort(np.einsum("ij,kj->ik", d, pa), axis=1)
        sb = np.sort(np.einsum("ij,kj->ik", d, pb), axis=1)
        total += np.einsum("ij,j->", np.abs(sa[:, ia] - sb[:, ib]), widths.astype(np.float32))
    return float(total / n_directions)


def _grey_level(image: np.ndarray) -> np.ndarray:
    """The grey level ``(H, W)`` float32 of an ``(H, W, C)`` image: ITU-R BT.601 for RGB."""
    img = image.astype(np.float32, copy=False)
    if img.shape[2] == 3:
        return img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return img.mean(axis=2)


def speckle(
    image: Any, source: Any = None, *, block_size: int = 8, fraction: float = 0.2
) -> float:
    """Colour speckle of an image in the flat areas of its source.

    The mean, over channels, of ``|x - median3x3(x)|`` (the deviation of each
    pixel from the median of its 3x3 neighbourhood, edges replicated),
    averaged over the pixels of the flattest ``fraction`` of the source's
    ``block_size`` x ``block_size`` blocks, ranked by the standard deviation
    of the source's grey level (ITU-R BT.601 weights for RGB, the channel
    mean otherwise). Smooth regions of a photo stay smooth under a smooth
    colour map; a matching that moves neighbouring colours far apart shows
    up here as a large value. Any matching that raises contrast raises it
    too, so compare it with a smooth monotone map's (per-channel matching)
    on the same pair.

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, C), or PIL.Image
        The image to measure (typically a matching's output).
    source : ndarray or PIL.Image of the same height and width, optional
        The image whose flat blocks are measured (typically the matching's
        input); ``image`` itself when omitted.
    block_size : int, default=8
        Side of the square blocks (partial blocks at the right and bottom
        edges are left out).
    fraction : float in (0, 1], default=0.2
        Share of the blocks, the flattest first, that are measured (at least one).

    Returns
    -------
    float
        In the image's value units (8-bit codes for uint8).

    Raises
    ------
    ValueError
        If the two images differ in height or width, are smaller than one
        block, or ``block_size`` or ``fraction`` is out of range.

    See Also
    --------
    sliced_wasserstein : How close a colour distribution is to a reference's.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.metrics import speckle
    >>> rng = np.random.default_rng(0)
    >>> flat = np.full((64, 64, 3), 120, dtype=np.uint8)
    >>> speckle(flat)
    0.0
    >>> noisy = flat + rng.integers(0, 2, flat.shape, dtype=np.uint8) * 10
    >>> round(speckle(noisy, flat), 1)
    3.5
    """
    if not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be an integer >= 1; got {block_size!r}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction!r}")
    img = _single_image(image, "image")
    src = img if source is None else _single_image(source, "source")
    if src.shape[:2] != img.shape[:2]:
        raise ValueError(
            f"image and source must have the same height and width; got {img.shape[:2]} "
            f"and {src.shape[:2]}"
        )
    h, w = (s // block_size for s in img.shape[:2])
    if h == 0 or w == 0:
        raise ValueError(
            f"image must hold at least one {block_size}x{block_size} block; got shape "
            f"{img.shape[:2]}"
        )

    def blocks(plane: np.ndarray) -> np.ndarray:
        return plane[: h * block_size, : w * block_size].reshape(h, block_size, w, block_size)

    flatness = blocks(_grey_level(src).astype(np.float64)).std(axis=(1, 3)).ravel()
    chosen = np.argsort(flatness, kind="stable")[: max(1, int(np.ceil(fraction * flatness.size)))]
    x = img.astype(np.float32)  # (medianBlur takes float32 with any channel count)
    median = cv2.medianBlur(x, 3).reshape(x.shape)
    deviation = np.abs(x - median).mean(axis=2, dtype=np.float64)
    return float(blocks(deviation).mean(axis=(1, 3)).ravel()[chosen].mean())


def _single_image(x: Any, name: str) -> np.ndarray:
    """One image ``(H, W, C)`` from an ndarray or PIL image; errors name ``name``."""
    batch, _ = _images.wrap_single(x, name)
    return _images.to_batch(batch, name=name).images[0]
