"""The MONAI adapters: a fitted matcher as MONAI array and dictionary transforms.

The classes are created on first use, so MONAI is imported only when an
adapter is asked for (:meth:`histmatch_ml.HistogramMatcher.as_monai`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._torchio import with_spatial_dims

__all__ = ["match_channel_first", "monai_classes"]

_MONAI_CLASSES: tuple[type, type] | None = None


def match_channel_first(matcher: Any, img: Any, mask: Any = None) -> Any:
    """Match a channel-first image or volume ``(C, H, W[, D])``, tensor or array (MONAI's layout).

    Tensors (``MetaTensor`` included, its metadata kept) come back as tensors
    of their dtype and device, arrays as arrays; ``mask`` is a boolean
    ``(H, W[, D])`` (or ``(1, H, W[, D])``) array or tensor, or None.
    """
    from .._images import is_tensor

    spatial_dims = img.ndim - 1
    if spatial_dims not in (2, 3):
        raise ValueError(
            f"img must be channel-first (C, H, W) or (C, H, W, D); got shape {tuple(img.shape)}"
        )
    matcher = with_spatial_dims(matcher, spatial_dims)
    if mask is not None:
        mask = mask.detach().cpu().numpy() if is_tensor(mask) else np.asarray(mask)
        mask = mask.astype(bool)
        mask = [mask[0] if mask.ndim == img.ndim else mask]
    if is_tensor(img):
        plain = img.as_tensor() if hasattr(img, "as_tensor") else img
        out = matcher.transform(plain if spatial_dims == 3 else plain[None], mask=mask)
        out = out if spatial_dims == 3 else out[0]
        if plain is not img:  # a MetaTensor: its metadata kept
            result = img.clone()
            result.as_tensor().copy_(out)
            return result
        return out
    arr = np.moveaxis(np.asarray(img), 0, -1)
    return np.moveaxis(matcher.transform([arr], mask=mask)[0], -1, 0)


def monai_classes() -> tuple[type, type]:
    """The MONAI transforms applying a fitted :class:`~histmatch_ml.HistogramMatcher`.

    ``(HistogramMatching, HistogramMatchingd)``: the array version,
    ``t(img, mask=None)`` on a channel-first ``(C, H, W[, D])`` tensor or
    array, and the dictionary version ``HistogramMatchingd(matcher, keys,
    mask_key=None)``, which matches ``data[key]`` for every key (with
    ``data[mask_key]`` as the mask: non-zero voxels) and leaves the rest.

    Raises
    ------
    ImportError
        If MONAI is not installed.

    Examples
    --------
    >>> import pytest
    >>> monai = pytest.importorskip("monai")
    >>> from histmatch_ml.augment._monai import monai_classes
    >>> array, dictionary = monai_classes()
    >>> issubclass(dictionary, monai.transforms.MapTransform)
    True
    """
    global _MONAI_CLASSES
    if _MONAI_CLASSES is None:
        try:
            from monai.transforms import MapTransform, Transform
        except ImportError as exc:
            raise ImportError(
                "the MONAI adapters need monai: pip install 'histmatch_ml[monai]'"
            ) from exc

        class HistogramMatching(Transform):
            """A fitted HistogramMatcher on channel-first images and volumes."""

            def __init__(self, matcher: Any) -> None:
                check_is_fitted(matcher, ("reference_", "tables_"))
                self.matcher = matcher

            def __call__(self, img: Any, mask: Any = None) -> Any:
                return match_channel_first(self.matcher, img, mask)

        class HistogramMatchingd(MapTransform):
            """A fitted HistogramMatcher on the images of a dictionary (``keys``)."""

            def __init__(
                self,
                matcher: Any,
                keys: Any,
                mask_key: str | None = None,
                allow_missing_keys: bool = False,
            ) -> None:
                super().__init__(keys, allow_missing_keys)
                self.matching = HistogramMatching(matcher)
                self.mask_key = mask_key

            def __call__(self, data: Any) -> dict:
                d = dict(data)
                mask = None if self.mask_key is None else d[self.mask_key] != 0
                for key in self.key_iterator(d):
                    d[key] = self.matching(d[key], mask)
                return d

        for cls in (HistogramMatching, HistogramMatchingd):
            cls.__module__ = __name__
        _MONAI_CLASSES = (HistogramMatching, HistogramMatchingd)
    return _MONAI_CLASSES


def __getattr__(name: str) -> Any:
    # lets pickle find the lazily created classes (DataLoader workers started by spawn)
    if name in ("HistogramMatching", "HistogramMatchingd"):
        return dict(zip(("HistogramMatching", "HistogramMatchingd"), monai_classes()))[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
