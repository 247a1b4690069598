"""The interface every matching method implements, and helpers they share.

A method is a small stateless object registered under a name. The estimator
(:class:`histmatch_ml.HistogramMatcher`) only ever calls these four hooks, so
adding a method means adding one module to this package:

* ``check_params(params)`` - validate the estimator parameters it reads;
* ``learn(batch, params, rng, like)`` - learn a state (a dict of plain arrays)
  from a :class:`~histmatch_ml._images.Batch` of reference images; ``like`` is
  an existing state to align with (for ``partial_fit``), or None;
* ``merge(a, na, b, nb, params)`` - combine two states learned on ``na`` and
  ``nb`` pixels;
* ``check_state(state, n_channels)`` - validate a state read from a model file;
* ``apply(image, mask, state, params)`` - match one ``(H, W, C)`` image and
  return the result in the image's dtype, pixels outside ``mask`` untouched
  (``apply_into`` does the same into a preallocated array; override it when
  the method can write in place).

Kernels are pure functions of arrays: no estimator, no global state, and
randomness only through the ``numpy.random.Generator`` passed to ``learn``.
"""

from __future__ import annotations

import functools
import warnings
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from .. import _reference

_REGISTRY: dict[str, MatchingMethod] = {}


class MatchingMethod(ABC):
    """Base class of a matching method (see the module docstring)."""

    #: registry name, the value of ``HistogramMatcher(method=...)``
    name: ClassVar[str] = ""
    #: methods with the same ``state_kind`` can use each other's fitted state
    state_kind: ClassVar[str] = "channels"
    #: True when output values are the references' raw values (so images of
    #: another dtype scale, e.g. float [0, 1] against uint8, come out on the
    #: references' scale); False for methods that normalise by the dtype's scale
    raw_values: ClassVar[bool] = True
    #: True when ``apply`` itself raises ``_images.not_finite_error()`` for float
    #: images holding NaN or infinity (found in a pass it makes anyway), so that
    #: ``transform`` can skip its own check of unmasked batches
    checks_finite: ClassVar[bool] = False

    def check_params(self, params: dict[str, Any]) -> None:
        """Raise ``ValueError``/``TypeError`` for parameters this method rejects."""

    def check_channels(self, n_channels: int, name: str) -> None:
        """Raise ``ValueError`` if images with ``n_channels`` cannot be handled."""

    def learn(self, batch, params: dict[str, Any], rng: np.random.Generator, like=None) -> dict:
        """Per-channel exact histograms / quantile sketches of the batch."""
        return _reference.learn(batch.images, batch.masks, params["n_quantiles"])

    def merge(self, a: dict, na: int, b: dict, nb: int, params: dict[str, Any]) -> dict:
        """Merge two per-channel states (exact for histograms)."""
        return _reference.merge(a, na, b, nb)

    def check_state(self, state: Any, n_channels: int | None) -> int | None:
        """Validate a stored state (model loading); return the pixels it counts, if known.

        Raises ``ValueError`` for anything malformed.
        """
        return _reference.check_state(state, n_channels)

    @abstractmethod
    def apply(self, image: np.ndarray, mask, state: dict, params: dict[str, Any]) -> np.ndarray:
        """Match one ``(H, W, C)`` image; same dtype out, unmasked pixels untouched."""

    def apply_into(
        self, image: np.ndarray, mask, state: dict, params: dict[str, Any], out: np.ndarray
    ) -> None:
        """Like :meth:`apply`, writing into ``out`` (a view into a batch's output).

        Methods that can write their result in place override this to save a copy.
        """
        out[...] = self.apply(image, mask, state, params)


def register(cls: type[MatchingMethod]) -> type[MatchingMethod]:
    """Class decorator: make ``cls`` available as ``method=cls.name``."""
    _REGISTRY[cls.name] = cls()
    return cls


def get_method(name: Any) -> MatchingMethod:
    """The registered method called ``name``; ``ValueError`` naming the choices."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"method must be one of {sorted(_REGISTRY)}; got {name!r}")
    return _REGISTRY[name]


def available_methods() -> list[str]:
    """Names of the registered methods."""
    return sorted(_REGISTRY)


def warn_scale_mismatch(dtype: np.dtype, fitted: Any, name: str, stacklevel: int = 2) -> None:
    """Warn when images of ``dtype`` meet references of dtype ``fitted`` on another scale.

    For the methods that match raw values (``raw_values``): a float image in
    [0, 1] matched to uint8 references comes out in 0..255, and an integer
    image matched to float [0, 1] references is rounded to 0 or 1. Floats of
    different widths share a scale and do not warn.
    """
    dtype, fitted = np.dtype(dtype), np.dtype(fitted)
    if dtype == fitted or (dtype.kind == "f" and fitted.kind == "f"):
        return
    warnings.warn(
        f"{name} has dtype {dtype} but the references were {fitted}: matched values are "
        f"the references' values, on their scale"
        + (f" and rounded to {dtype}" if dtype.kind in "iu" else "")
        + f". Convert {name} to {fitted} (or use {dtype} references) unless that is "
        "what you want; method='lab' reads each dtype on its own full scale.",
        UserWarning,
        stacklevel=stacklevel + 1,
    )


def value_range(dtype: np.dtype) -> tuple[float, float] | None:
    """(min, max) of an integer dtype, None for floats."""
    return _value_range(np.dtype(dtype))


@functools.cache
def _value_range(dtype: np.dtype) -> tuple[float, float] | None:
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return None


def blend(
    original: np.ndarray,
    matched: np.ndarray,
    strength: float,
    dtype: np.dtype,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``(1 - strength) * original + strength * matched``, cast to ``dtype``.

    Integers are rounded to nearest and clipped to the dtype's range; floats
    are cast without clipping or quantising. Works on whole images and on
    per-level lookup tables alike. With ``out`` (of ``dtype``), ``matched``
    (float) is used as work space and the result is written into ``out``.
    """
    dtype = np.dtype(dtype)
    bounds = value_range(dtype)
    if out is not None:
        if strength != 1.0:
            matched -= original
            matched *= strength
            matched += original
        if bounds is not None:  # (two ufuncs: np.clip's wrapper costs more on small tables)
            np.rint(matched, out=matched)
            np.maximum(matched, bounds[0], out=matched)
            np.minimum(matched, bounds[1], out=matched)
        np.copyto(out, matched, casting="unsafe")
        return out
    if strength != 1.0:
        work = np.result_type(matched.dtype, np.float32)
        matched = original.astype(work, copy=False) + np.asarray(strength, dtype=work) * (
            matched - original.astype(work, copy=False)
        )
    if bounds is None:
        return matched.astype(dtype, copy=False)
    result = np.rint(matched)
    np.clip(result, bounds[0], bounds[1], out=result)
    return result.astype(dtype)


def blend_float_into(original: np.ndarray, matched: np.ndarray, strength: float) -> np.ndarray:
    """:func:`blend` of float arrays in place in ``matched`` (no temporaries), to the bit.

    ``original + s * (matched - original)`` in the arrays' dtype, the same
    three roundings as :func:`blend`.
    """
    s = np.asarray(strength, dtype=matched.dtype)
    np.subtract(matched, original, out=matched)
    np.multiply(matched, s, out=matched)
    return np.add(matched, original, out=matched)


def keep_unmasked(out: np.ndarray, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Copy the pixels of ``image`` outside ``mask`` back into ``out`` (in place)."""
    if mask is not None:
        np.copyto(out, image, where=~mask[:, :, None])
    return out


def finish(
    image: np.ndarray, matched: np.ndarray, mask: np.ndarray | None, strength: float
) -> np.ndarray:
    """Blend by ``strength``, cast to the image dtype and restore unmasked pixels.

    ``matched`` is the caller's work array: a float one of the image's dtype
    is blended in place (:func:`blend_float_into`) and returned.
    """
    if strength != 1.0 and image.dtype.kind == "f" and matched.dtype == image.dtype:
        return keep_unmasked(blend_float_into(image, matched, strength), image, mask)
    return keep_unmasked(blend(image, matched, strength, image.dtype), image, mask)
