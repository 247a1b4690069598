"""``match_histograms``: one image matched to one reference, in one call."""

from __future__ import annotations

from typing import Any

from . import _images
from .matcher import HistogramMatcher


def match_histograms(
    image: Any,
    reference: Any,
    *,
    method: str = "per_channel",
    mask: Any = None,
    reference_mask: Any = None,
    **params: Any,
) -> Any:
    """Match the histogram of one image to that of one reference image.

    The function twin of :class:`HistogramMatcher`: it fits on ``reference``
    and transforms ``image``. The two may have different sizes and dtypes.

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, C), or PIL.Image
        The image to match.
    reference : ndarray of shape (h, w) or (h, w, C), or PIL.Image
        The reference image; same number of channels as ``image``.
    method : {"per_channel", "exact", "lab"}, default="per_channel"
        See :class:`HistogramMatcher`.
    mask : ndarray of bool of shape (H, W), optional
        Only these pixels of ``image`` are counted and changed.
    reference_mask : ndarray of bool of shape (h, w), optional
        Only these pixels of ``reference`` are counted.
    **params
        Other :class:`HistogramMatcher` parameters (``strength``,
        ``ordering``, ``random_state``, ...).

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
    source, unwrap = _images.wrap_single(image, "image")
    ref, _ = _images.wrap_single(reference, "reference")
    matcher = HistogramMatcher(method=method, **params)
    matcher.fit(ref, mask=reference_mask)
    return unwrap(matcher.transform(source, mask=mask))
