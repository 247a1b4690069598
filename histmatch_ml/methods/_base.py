"""The interface every matching method implements, its parameter declarations, the registry.

A method is a small stateless object registered under a name. The estimator
(:class:`histmatch_ml.HistogramMatcher`) only ever calls these hooks, so
adding a method means adding one module that subclasses
:class:`MatchingMethod` and decorates it with :func:`register`:

* ``params`` - the :class:`Param` declarations of the estimator parameters
  the method reads (name, default, scikit-learn constraint, one-line doc);
  the estimator's ``_parameter_constraints``, its docstring and the command
  line options are built from them;
* ``learn(batch, params, rng, like)`` - learn a state (a dict of plain arrays)
  from a :class:`~histmatch_ml._images.Batch` of reference images; ``like`` is
  an existing state to align with (for ``partial_fit``), or None;
* ``merge(a, na, b, nb, params)`` - combine two states learned on ``na`` and
  ``nb`` pixels;
* ``prepare(state, params)`` - what ``apply`` derives from a state (quantile
  knots, tables), computed once per fit and kept as a fitted attribute;
* ``check_state(state, n_channels)`` - validate a state read from a model file;
* ``apply(image, mask, state, tables, params, out)`` - match one ``(H, W, C)``
  image into ``out`` (the image's dtype and shape), pixels outside ``mask``
  untouched. Images are C-contiguous, unless the method sets ``planar``:
  then CPU tensors' images come as channels-first views (``out`` too), whose
  planes :func:`histmatch_ml._images.planes_of` returns;
* ``apply_batch(images, masks, state, tables, params, outs)`` - optional:
  match several images, as ``apply`` does one by one (the default); a method
  overrides it to share per-image fixed costs across a batch.

``params`` holds the values of the declared parameters, ``"strength"`` as a
float and, from ``transform``, ``"n_threads"``: the threads a method may use
within one image (those ``n_jobs`` leaves over when a batch has fewer images
than threads; 1 where absent). Outputs never depend on it.

Kernels are pure functions of arrays: no estimator, no global state, and
randomness only through the ``numpy.random.Generator`` passed to ``learn``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any, ClassVar

import cv2
import numpy as np
from sklearn.utils._param_validation import Interval

from .. import _barycenter, _images, _reference

__all__ = [
    "N_QUANTILES",
    "MatchingMethod",
    "Param",
    "available_methods",
    "blend",
    "declared_names",
    "declared_params",
    "finish",
    "gather",
    "get_method",
    "keep_unmasked",
    "on_register",
    "register",
    "row_bands",
    "unregister",
    "warn_scale_mismatch",
]


@dataclass(frozen=True)
class Param:
    """The declaration of one estimator parameter.

    Attributes
    ----------
    name : str
        The keyword of :class:`~histmatch_ml.HistogramMatcher` (and the
        command line option ``--name-with-dashes``).
    default : Any
        Its default value.
    constraint : list
        scikit-learn parameter constraints (as in ``_parameter_constraints``),
        checked once in ``fit``. Size-like parameters carry an upper bound.
    doc : str
        One line saying what it does, for the docstring and ``--help``.
    type_doc : str
        The numpydoc type line, e.g. ``"int in [2, 65536]"``.

    Examples
    --------
    >>> from numbers import Integral
    >>> from sklearn.utils._param_validation import Interval
    >>> from histmatch_ml.methods import Param
    >>> p = Param("n_levels", 8, [Interval(Integral, 2, 256, closed="both")],
    ...           "Number of output levels.", "int in [2, 256]")
    >>> p.name, p.default
    ('n_levels', 8)
    """

    name: str
    default: Any
    constraint: list
    doc: str
    type_doc: str


#: the size of the quantile functions that barycentre references average (and of lab's
#: quantile sketches along its projection axes)
N_QUANTILES = Param(
    "n_quantiles",
    1024,
    [Interval(Integral, 2, 2**16, closed="both")],
    "Quantiles kept per channel by reference='barycenter' (each reference's quantile "
    "function on that many probabilities), and per projection axis by method='lab'.",
    "int in [2, 65536]",
)

_REGISTRY: dict[str, MatchingMethod] = {}
#: the registered methods' parameters (:func:`declared_params`), rebuilt with the registry
_DECLARED: dict[str, tuple[Param, tuple[str, ...]]] = {}
_LISTENERS: list[Callable[[], None]] = []


class MatchingMethod(ABC):
    """Base class of a matching method (see the module docstring)."""

    #: registry name, the value of ``HistogramMatcher(method=...)``
    name: ClassVar[str] = ""
    #: what the method is for, in one line (``histmatch --help``, the docstring)
    summary: ClassVar[str] = ""
    #: the parameters this method reads besides ``strength``
    params: ClassVar[tuple[Param, ...]] = (N_QUANTILES,)
    #: methods with the same ``state_kind`` can use each other's fitted state
    state_kind: ClassVar[str] = "channels"
    #: True when output values are the references' raw values (so images of
    #: another dtype scale, e.g. float [0, 1] against uint8, come out on the
    #: references' scale); False for methods that normalise by the dtype's scale
    raw_values: ClassVar[bool] = True
    #: True when ``apply`` reads pixel neighbourhoods: volumes (``spatial_dims=3``) then
    #: reach it as ``(D, H, W, C)`` arrays with ``(D, H, W)`` masks; otherwise every
    #: volume comes as a ``(D * H, W, C)`` image (the same voxels, a reshape)
    spatial: ClassVar[bool] = False
    #: the state entries ``reference="barycenter"`` averages over the reference images
    #: (the others, a dtype or shared projection axes, are the same for all of them)
    barycenter_keys: ClassVar[tuple[str, ...]] = ("barycenter",)
    #: True when images need not have the references' channel count (``check_channels``
    #: alone decides which images are matched)
    any_channels: ClassVar[bool] = False
    #: True when ``apply`` takes channels-first images: views ``planes.transpose(1, 2, 0)``
    #: of contiguous ``(C, H, W)`` planes (and ``out`` of that layout), which CPU tensors
    #: then reach without a layout conversion (``_images.planes_of`` recovers the planes)
    planar: ClassVar[bool] = False

    def check_channels(self, n_channels: int, name: str) -> None:
        """Raise ``ValueError`` if images with ``n_channels`` cannot be handled."""

    def learn(self, batch, params: dict[str, Any], rng: np.random.Generator, like=None) -> dict:
        """Per-channel exact histograms / float bins of the batch (:func:`_reference.learn`)."""
        return _reference.learn(batch.images, batch.masks)

    def merge(self, a: dict, na: int, b: dict, nb: int, params: dict[str, Any]) -> dict:
        """Merge two per-channel states (exact for histograms)."""
        return _reference.merge(a, na, b, nb)

    def image_summary(self, batch, params: dict[str, Any], rng, like=None) -> dict:
        """One image's part of a ``reference="barycenter"`` state (``batch`` holds one image).

        Its ``barycenter_keys`` entries are averaged over the references (see
        :mod:`histmatch_ml._barycenter`). The default: each channel's quantile
        function on ``n_quantiles`` evenly spaced probabilities, for methods
        that average ``"barycenter"``; the method's own one-image state for
        those that name other entries.
        """
        if self.barycenter_keys == ("barycenter",):
            return _barycenter.image_quantiles(batch, params["n_quantiles"])
        return self.learn(batch, params, rng, like=like)

    def prepare(self, state: dict, params: dict[str, Any]) -> dict:
        """The knots of every channel's reference quantile function."""
        if "barycenter" in state:
            return _barycenter.knots(state)
        return _reference.quantile_knots(state)

    def rescale(self, tables: dict, factor: float, limit: float) -> dict:
        """``tables`` for images of another dtype: reference values times ``factor``.

        Values are clipped to ``[-limit, limit]``, the finite range of the
        images' dtype. Used when images and references differ in dtype (only
        for methods with ``raw_values``): ``factor`` is 1 under ``scale="raw"``.
        """
        return _reference.rescaled_knots(tables, factor, limit)

    def check_state(self, state: Any, n_channels: int | None) -> int | None:
        """Validate a stored state (model loading); return the pixels it counts, if known.

        Raises ``ValueError`` for anything malformed.
        """
        if isinstance(state, dict) and "barycenter" in state:
            return _barycenter.check_state(state, n_channels)
        return _reference.check_state(state, n_channels)

    @abstractmethod
    def apply(
        self,
        image: np.ndarray,
        mask: np.ndarray | None,
        state: dict,
        tables: dict,
        params: dict[str, Any],
        out: np.ndarray,
    ) -> None:
        """Match one ``(H, W, C)`` image into ``out``; unmasked pixels keep their value."""

    def apply_batch(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray | None],
        state: dict,
        tables: dict,
        params: dict[str, Any],
        outs: Sequence[np.ndarray],
    ) -> None:
        """Match several images, each into its ``out``, as :meth:`apply` matches one.

        A method whose per-image fixed costs can be shared (tables computed
        for many images at once) overrides this; the outputs are those of
        :meth:`apply` image by image, which is what this default does.
        """
        for image, mask, out in zip(images, masks, outs):
            self.apply(image, mask, state, tables, params, out)


def register(cls: type[MatchingMethod]) -> type[MatchingMethod]:
    """Class decorator: make ``cls`` available as ``method=cls.name``.

    A parameter declared by several methods must be the same declaration
    (share the :class:`Param` object), so that one keyword means one thing.

    Examples
    --------
    See ``tests/toy_method.py`` for a complete method in one module.
    """
    if not cls.name.isidentifier():
        raise ValueError(f"a method name must be an identifier; got {cls.name!r}")
    known = {p.name: p for m in _REGISTRY.values() for p in m.params if m.name != cls.name}
    for p in cls.params:
        if p.name in known and known[p.name] != p:
            raise ValueError(
                f"method {cls.name!r} declares parameter {p.name!r} differently from "
                f"another method; share one Param declaration"
            )
    _REGISTRY[cls.name] = cls()
    _registry_changed()
    return cls


def unregister(name: str) -> None:
    """Remove the method called ``name`` from the registry (for plug-ins and tests)."""
    get_method(name)
    del _REGISTRY[name]
    _registry_changed()


def _registry_changed() -> None:
    """Rebuild the parameter index and tell the listeners (after a registration or removal)."""
    declared: dict[str, tuple[Param, list[str]]] = {}
    for method in _REGISTRY.values():
        for p in method.params:
            declared.setdefault(p.name, (p, []))[1].append(method.name)
    _DECLARED.clear()
    _DECLARED.update({name: (p, tuple(users)) for name, (p, users) in declared.items()})
    for listener in _LISTENERS:
        listener()


def on_register(listener: Callable[[], None]) -> None:
    """Call ``listener()`` now and after every :func:`register` (the estimator's hook)."""
    _LISTENERS.append(listener)
    listener()


def get_method(name: Any) -> MatchingMethod:
    """The registered method called ``name``; ``ValueError`` naming the choices."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"method must be one of {list(_REGISTRY)}; got {name!r}")
    return _REGISTRY[name]


def available_methods() -> list[str]:
    """Names of the registered methods, in the order they were registered.

    Examples
    --------
    >>> from histmatch_ml.methods import available_methods
    >>> {"per_channel", "exact", "lab"} <= set(available_methods())
    True
    """
    return list(_REGISTRY)


def declared_params() -> dict[str, tuple[Param, list[str]]]:
    """Every method parameter: name -> (declaration, the methods that read it).

    In the order methods were registered and, within a method, declared.
    """
    return {name: (p, list(users)) for name, (p, users) in _DECLARED.items()}


def declared_names() -> tuple[str, ...]:
    """The names of :func:`declared_params`, in its order (read by every transform).

    Examples
    --------
    >>> from histmatch_ml.methods import declared_names
    >>> {"n_quantiles", "ordering", "n_iter"} <= set(declared_names())
    True
    """
    return tuple(_DECLARED)


def warn_scale_mismatch(dtype: np.dtype, fitted: Any, name: str, stacklevel: int = 2) -> None:
    """Warn, under ``scale="raw"``, when images of ``dtype`` meet references of dtype ``fitted``.

    For the methods that match raw values (``raw_values``): a float image in
    [0, 1] matched to uint8 references comes out in 0..255, and an integer
    image matched to float [0, 1] references is rounded to 0 or 1. Floats of
    different widths share a scale and do not warn.
    """
    import warnings

    dtype, fitted = np.dtype(dtype), np.dtype(fitted)
    if dtype == fitted or (dtype.kind == "f" and fitted.kind == "f"):
        return
    warnings.warn(
        f"{name} has dtype {dtype} but the references were {fitted}: with scale='raw' "
        f"matched values are the references' raw values, on their scale"
        + (f" and rounded to {dtype}" if dtype.kind in "iu" else "")
        + ". scale='dtype' reads both on scikit-image's img_as_float scale instead.",
        UserWarning,
        stacklevel=stacklevel + 1,
    )


def value_range(dtype: np.dtype) -> tuple[float, float] | None:
    """(min, max) of an integer dtype as floats that cast back without overflow; None for floats.

    ``float(2**63 - 1)`` rounds up to ``2**63``, which would wrap to the minimum
    when cast to int64: such bounds are moved to the nearest float inside the range.
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui":
        return None
    info = np.iinfo(dtype)
    lo, hi = float(info.min), float(info.max)
    if hi > info.max:
        hi = float(np.nextafter(hi, -np.inf))
    return lo, hi


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
    per-level lookup tables alike. ``matched`` (float) is used as work space
    and overwritten; the result goes into ``out`` (of ``dtype``) if given.
    """
    dtype = np.dtype(dtype)
    if strength != 1.0:
        work = np.result_type(matched.dtype, np.float32)
        if matched.dtype != work:
            matched = matched.astype(work)
        if original.dtype != work:
            original = original.astype(work)
        s = matched.dtype.type(strength)
        if _difference_may_overflow(original, matched):
            # (1 - s) * original + s * matched: no term exceeds the inputs' magnitude
            matched *= s
            matched += (matched.dtype.type(1) - s) * original
        else:
            matched -= original
            matched *= s
            matched += original
    bounds = value_range(dtype)
    if bounds is not None:
        np.rint(matched, out=matched)
        np.clip(matched, bounds[0], bounds[1], out=matched)
    if out is None:
        return matched.astype(dtype, copy=False)
    np.copyto(out, matched, casting="unsafe")
    return out


def _difference_may_overflow(original: np.ndarray, matched: np.ndarray) -> bool:
    """True when ``matched - original`` could overflow their float dtype (values near its max)."""
    limit = np.finfo(matched.dtype).max / 2
    # (the arrays' own min/max: a table's blend is called per image, where numpy's
    # module-level wrappers cost more than the reductions)
    return any(abs(float(v)) >= limit for a in (original, matched) for v in (a.min(), a.max()))


def _lut_takes_16_bit_indices() -> bool:
    """Whether this OpenCV's ``cv2.LUT`` reads uint16 indices (OpenCV 5 does, 4.x does not)."""
    try:
        probe = cv2.LUT(np.ones((1, 1), np.uint16), np.arange(65536, dtype=np.float32))
    except cv2.error:
        return False
    return probe.shape == (1, 1) and probe[0, 0] == 1


#: ``cv2.LUT`` applies 65,536-entry tables to uint16 indices (:func:`gather`)
LUT_16_BIT = _lut_takes_16_bit_indices()
#: table dtypes ``cv2.LUT`` returns unchanged (it narrows 64-bit integers to int32)
_LUT_DTYPES = frozenset((*_images.CV_DTYPES, np.dtype(np.float16)))


def gather(table: np.ndarray, index: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[...] = table[index]``: a lookup table applied to a 2-D plane of indices.

    ``index`` is a ``(H, W)`` uint8, uint16 or uint32 plane whose every value
    is below ``len(table)``; ``out`` is ``(H, W)`` of the table's dtype. uint8
    and (where OpenCV reads them) uint16 indices go through ``cv2.LUT``
    (several times faster than ``np.take``, which first widens every index to
    ``intp``), a table shorter than the index type's range padded with zeros
    that are never read; other indices, tables and layouts (rows strided
    element by element) through ``np.take``. Both give the same values.
    """
    n = {np.dtype(np.uint8): 256, np.dtype(np.uint16): 65536 if LUT_16_BIT else 0}.get(
        index.dtype, 0
    )
    if (
        n
        and len(table) <= n
        and table.dtype in _LUT_DTYPES
        and out.dtype == table.dtype
        and index.ndim == 2
        and index.strides[1] == index.itemsize
        and out.strides[1] == out.itemsize
    ):
        if len(table) < n:
            table = np.concatenate([table, np.zeros(n - len(table), table.dtype)])
        cv2.LUT(index, np.ascontiguousarray(table), dst=out)
        return out
    return np.take(table, index, out=out, mode="clip")


def keep_unmasked(out: np.ndarray, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Copy the pixels of ``image`` outside ``mask`` back into ``out`` (in place).

    ``image`` and ``out`` are ``(..., C)`` and ``mask`` their spatial shape.
    """
    if mask is not None and not _cv_copy_unmasked(out, image, mask):
        np.copyto(out, image, where=~mask[..., None])
    return out


def _cv_copy_unmasked(out: np.ndarray, image: np.ndarray, mask: np.ndarray) -> bool:
    """:func:`keep_unmasked` by ``cv2.copyTo`` (several times faster than numpy's copy
    with a mask broadcast over the channels); False, with nothing done, where it does not apply.
    """
    if not (
        image.dtype == out.dtype
        and image.dtype in _images.CV_DTYPES
        and image.shape == out.shape
        and image.ndim >= 3
        and image.shape[-1] <= 512  # (OpenCV's most channels)
        and image.flags.c_contiguous
        and out.flags.c_contiguous
        and mask.shape == image.shape[:-1]
    ):
        return False
    rows = (-1, *image.shape[-2:])  # (volumes: their slices' rows stacked)
    dst = out.reshape(rows)
    where = np.ascontiguousarray(~mask).reshape(rows[:2]).view(np.uint8)
    return np.shares_memory(cv2.copyTo(image.reshape(rows), where, dst), out)


def row_bands(shape: tuple[int, ...], least: int, most: int, parts: int = 4) -> list[slice]:
    """Bands of rows of about ``1 / parts`` of an image, of ``least`` to ``most`` pixels each.

    The work memory of a kernel that reads an image band by band is a
    band's: a part of a small image keeps it a fraction of the image, and
    ``most`` bounds it for a large one; ``least`` keeps the bands few where
    each costs more calls than its memory saves. (A band's temporaries are
    taken again from the allocator at the next band, where whole-image ones
    are freshly mapped pages at every call.)

    Examples
    --------
    >>> from histmatch_ml.methods._base import row_bands
    >>> row_bands((512, 512), 2**14, 2**16)[:2]  # a quarter: 65,536 pixels, 128 rows
    [slice(0, 128, None), slice(128, 256, None)]
    >>> len(row_bands((64, 64), 2**14, 2**16))  # smaller than the least band: one
    1
    """
    pixels = shape[0] * shape[1]
    band = min(most, max(least, pixels // parts))
    rows = max(1, band // max(1, shape[1]))
    return [slice(r, r + rows) for r in range(0, shape[0], rows)]


def finish(
    image: np.ndarray,
    matched: np.ndarray,
    mask: np.ndarray | None,
    strength: float,
    out: np.ndarray,
) -> np.ndarray:
    """Blend ``matched`` (a float work array, overwritten) by ``strength`` into ``out``.

    Cast to the image's dtype (integers rounded and clipped), pixels outside
    ``mask`` restored from ``image``.
    """
    return keep_unmasked(blend(image, matched, strength, image.dtype, out=out), image, mask)
