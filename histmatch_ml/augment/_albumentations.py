"""The albumentations adapter: an ``ImageOnlyTransform`` around the augmenter.

The class is created on first use, so albumentations is imported only when
the adapter is asked for.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._augmenter import PARAM_KEYS, RandomHistogramMatching, worker_seed_sequence
from ._torch import worker_key

__all__ = ["albumentations_class"]

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

        # pickle and albumentations' serialisation find it through the package's __getattr__
        __module__ = "histmatch_ml.augment"

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
            check_is_fitted(augmenter, "references_")
            self.model_path = None if model_path is None else str(model_path)
            self.augmenter = augmenter
            self._worker = None

        def _refresh_worker_stream(self) -> None:
            key = worker_key()
            if key != self._worker:
                if key is not None:  # a DataLoader worker: its own stream
                    seq = worker_seed_sequence(key[1], self.seed)
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
            return self.augmenter.apply(img, {k: params[k] for k in PARAM_KEYS})

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
