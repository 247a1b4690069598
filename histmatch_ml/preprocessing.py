"""Small transformers that make image batches fit scikit-learn pipelines."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from . import _images


class ImageFlattener(TransformerMixin, BaseEstimator):
    """Flatten a batch of images into rows, one row per image.

    Puts image batches (``(N, H, W)``, ``(N, H, W, C)``, lists of equal-size
    images) into the ``(N, features)`` shape scikit-learn models expect, e.g.
    after :class:`HistogramMatcher` in a :class:`~sklearn.pipeline.Pipeline`.

    Parameters
    ----------
    dtype : str, numpy dtype or None, default="float64"
        dtype of the rows; None keeps the images' dtype.

    Attributes
    ----------
    image_shape_ : tuple of int
        ``(H, W, C)`` of the images seen in ``fit``.
    n_features_in_ : int
        ``H * W * C``, the length of each output row.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from histmatch_ml import HistogramMatcher, ImageFlattener
    >>> digits = load_digits()
    >>> X, y = digits.images[:300], digits.target[:300]
    >>> pipe = make_pipeline(
    ...     HistogramMatcher(), ImageFlattener(), LogisticRegression(max_iter=500)
    ... )
    >>> float(pipe.fit(X, y).score(X, y)) > 0.9
    True
    """

    def __init__(self, dtype: Any = "float64") -> None:
        self.dtype = dtype

    def _rows(self, X: Any) -> np.ndarray:
        batch = _images.to_batch(X, estimator=self, reset=False)
        shapes = {im.shape for im in batch.images}
        if len(shapes) > 1:
            raise ValueError(
                f"X must hold images of one shape to be flattened; got shapes {sorted(shapes)}"
            )
        rows = np.stack([im.ravel() for im in batch.images])
        return rows if self.dtype is None else rows.astype(self.dtype, copy=False)

    def fit(self, X: Any, y: Any = None) -> ImageFlattener:
        """Record the image shape.

        Parameters
        ----------
        X : array-like or list of images
            Images of one shape.
        y : None
            Ignored.

        Returns
        -------
        self : ImageFlattener
        """
        batch = _images.to_batch(X, estimator=self, reset=True)
        self.image_shape_ = tuple(batch.images[0].shape)
        self.n_features_in_ = int(np.prod(self.image_shape_))
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Flatten each image into one row.

        Parameters
        ----------
        X : array-like or list of images
            Images of the shape seen in ``fit``.

        Returns
        -------
        rows : ndarray of shape (N, H * W * C)
        """
        check_is_fitted(self, "image_shape_")
        rows = self._rows(X)
        if rows.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {rows.shape[1]} features, but ImageFlattener is expecting "
                f"{self.n_features_in_} features as input"
            )
        return rows

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns: ``pixel_<row>_<column>`` (plus ``_<channel>``).

        Parameters
        ----------
        input_features : None
            Ignored (images have no input feature names).

        Returns
        -------
        names : ndarray of str, shape (``n_features_in_``,)

        Examples
        --------
        >>> import numpy as np
        >>> from histmatch_ml import ImageFlattener
        >>> ImageFlattener().fit(np.zeros((2, 2, 3))).get_feature_names_out()[:4].tolist()
        ['pixel_0_0', 'pixel_0_1', 'pixel_0_2', 'pixel_1_0']
        """
        check_is_fitted(self, "image_shape_")
        h, w, c = self.image_shape_
        rows, cols, chans = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
        if c == 1:
            names = [f"pixel_{r}_{q}" for r, q in zip(rows.ravel(), cols.ravel())]
        else:
            names = [
                f"pixel_{r}_{q}_{k}" for r, q, k in zip(rows.ravel(), cols.ravel(), chans.ravel())
            ]
        return np.asarray(names, dtype=object)
