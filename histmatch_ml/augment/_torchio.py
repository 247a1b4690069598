"""The TorchIO adapter: a fitted matcher as a TorchIO intensity transform.

The class is created on first use, so TorchIO is imported only when the
adapter is asked for (:meth:`histmatch_ml.HistogramMatcher.as_torchio`).
"""

from __future__ import annotations

import copy
from typing import Any

from sklearn.utils.validation import check_is_fitted

__all__ = ["torchio_class", "with_spatial_dims"]

_TORCHIO_CLASS: type | None = None


def with_spatial_dims(matcher: Any, spatial_dims: int) -> Any:
    """A shallow copy of a fitted matcher that reads inputs with ``spatial_dims``.

    The learned state does not depend on it, so a matcher fitted on volumes
    matches a 2-D slice too, and the other way round.
    """
    if matcher.spatial_dims == spatial_dims:
        return matcher
    return copy.copy(matcher).set_params(spatial_dims=spatial_dims)


def torchio_class() -> type:
    """The TorchIO transform class that applies a fitted :class:`~histmatch_ml.HistogramMatcher`.

    A subclass of TorchIO's ``NormalizationTransform``: in a ``tio.Compose``
    it matches every intensity image of a ``tio.Subject`` (``include`` /
    ``exclude`` choose which; label maps are never touched), each channel of
    the ``(C, W, H, D)`` tensor on its own, keeping its dtype; with
    ``masking_method`` (a label map's key in the subject, a function, an
    anatomical label: TorchIO's meanings) only the masked voxels set the
    image's statistics and are changed.

    Raises
    ------
    ImportError
        If TorchIO is not installed.

    Examples
    --------
    >>> import pytest
    >>> tio = pytest.importorskip("torchio")
    >>> from histmatch_ml.augment._torchio import torchio_class
    >>> issubclass(torchio_class(), tio.IntensityTransform)
    True
    """
    global _TORCHIO_CLASS
    if _TORCHIO_CLASS is None:
        try:
            from torchio.transforms.preprocessing.intensity.normalization_transform import (
                NormalizationTransform,
            )
        except ImportError as exc:
            raise ImportError(
                "the TorchIO adapter needs torchio: pip install 'histmatch_ml[torchio]'"
            ) from exc

        class TorchioHistogramMatching(NormalizationTransform):
            """A fitted HistogramMatcher applied to the intensity images of a subject."""

            def __init__(self, matcher: Any, masking_method: Any = None, **kwargs: Any):
                super().__init__(masking_method=masking_method, **kwargs)
                check_is_fitted(matcher, ("reference_", "tables_"))
                self.matcher = matcher
                self.args_names = ["matcher", "masking_method"]

            def apply_normalization(self, subject: Any, image_name: str, mask: Any) -> None:
                image = subject[image_name]
                data = image.data
                voxels = None
                if self.masking_method is not None:
                    voxels = mask.detach().cpu().numpy().astype(bool)
                    voxels = voxels[0] if voxels.ndim == 4 else voxels
                matcher = with_spatial_dims(self.matcher, 3)
                out = matcher.transform(data, mask=None if voxels is None else [voxels])
                image.set_data(out)

        TorchioHistogramMatching.__module__ = __name__
        TorchioHistogramMatching.__qualname__ = "TorchioHistogramMatching"
        _TORCHIO_CLASS = TorchioHistogramMatching
    return _TORCHIO_CLASS


def __getattr__(name: str) -> Any:
    # lets pickle find the lazily created class (DataLoader workers started by spawn)
    if name == "TorchioHistogramMatching":
        return torchio_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
