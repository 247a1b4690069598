"""A fuzz of the public API: whatever is thrown at it, a result of the right kind or a clear error.

Random dtypes (supported, wide, float16, and ones that must be refused), shapes
(empty ones included), extreme values and parameters (invalid ones included) go
through ``HistogramMatcher``, ``match_histograms`` and ``RandomHistogramMatching``.
Every call either returns an output of the input's shape and dtype, finite for
floats and inside the range spanned by the image and the reference (so never a
wrapped integer), or raises ``ValueError``/``TypeError`` whose message names
what the caller passed.
"""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from histmatch_ml import HistogramMatcher, RandomHistogramMatching, match_histograms
from histmatch_ml._images import unit_scale

#: supported dtypes appear twice: most draws should reach the kernels
DTYPES = [
    np.uint8,
    np.uint16,
    np.int16,
    np.float32,
    np.float64,
    np.uint8,
    np.uint16,
    np.int16,
    np.float32,
    np.float64,
    np.int8,
    np.int32,
    np.int64,
    np.uint32,
    np.uint64,
    np.float16,
    np.bool_,
    np.complex64,
]
#: words at least one of which names what the caller passed, in every error
NAMES = (
    "X",
    "image",
    "reference",
    "mask",
    "method",
    "strength",
    "n_quantiles",
    "ordering",
    "n_iter",
    "p",
    "references",
)


def _images(draw, dtype, channels):
    sizes = st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6))
    shapes = sizes.map(lambda s: (*s, channels) if channels else s)
    # (one draw in ten is an empty shape)
    empty = st.sampled_from([(0, 4, 4), (2, 0, 3), (1, 4, 4, 0)])
    shape = draw(st.one_of(*[shapes] * 9, empty))
    if np.dtype(dtype).kind == "f":
        info = np.finfo(dtype)
        elements = st.one_of(
            st.floats(-1e3, 1e3, width=info.bits),
            st.sampled_from([float(info.max), float(-info.max), 0.0, float(info.tiny)]),
        )
    elif np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = max(int(info.min), -(2**60)), min(int(info.max), 2**60)
        elements = st.one_of(
            st.integers(lo, hi), st.sampled_from([int(info.min), int(info.max), 0])
        )
    else:
        elements = None
    return draw(hnp.arrays(dtype, shape, elements=elements))


def _check_error(exc: Exception) -> None:
    message = str(exc)
    assert message and any(name in message for name in NAMES), message
    assert "setting an array element" not in message


def _check_output(out, image, reference, method="per_channel"):
    assert out.shape == image.shape and out.dtype == image.dtype
    if out.dtype.kind == "f":
        assert np.isfinite(out).all()
    if method == "lab":  # colours move in CIELAB; only the dtype's scale bounds them
        return
    # reference values are read on the image's scale (scale="dtype")
    factor = unit_scale(image.dtype) / unit_scale(reference.dtype)
    if np.dtype(reference.dtype) in (np.dtype(np.float16),):
        factor = unit_scale(image.dtype)
    if image.dtype == reference.dtype or (image.dtype.kind == reference.dtype.kind == "f"):
        factor = 1.0
    ref_lo, ref_hi = float(reference.min()) * factor, float(reference.max()) * factor
    lo = min(float(image.min()), ref_lo)
    hi = max(float(image.max()), ref_hi)
    values = out.astype(np.float64)
    # outputs are blends of the image and the reference's values, rounded to the dtype
    slack = 1.0 if out.dtype.kind in "iu" else abs(hi - lo) * 1e-6 + 1e-30
    assert values.min() >= lo - slack and values.max() <= hi + slack


@settings(
    max_examples=400, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
@given(st.data())
def test_matcher_and_function_never_fail_unclearly(data):
    channels = data.draw(st.sampled_from([0, 1, 3]))
    image = _images(data.draw, data.draw(st.sampled_from(DTYPES)), channels)
    reference = _images(data.draw, data.draw(st.sampled_from(DTYPES)), channels)
    method = data.draw(st.sampled_from(["per_channel", "exact", "lab"]))
    params = {
        "strength": data.draw(st.floats(0, 1)),
        "n_quantiles": data.draw(st.sampled_from([2, 16, 64, 1024])),
        "n_iter": data.draw(st.sampled_from([1, 2, 3])),
    }
    # one draw in three spoils one parameter
    spoiled = data.draw(
        st.sampled_from([None, None, "method", "strength", "n_quantiles", "n_iter"])
    )
    if spoiled == "method":
        method = "nope"
    elif spoiled is not None:
        params[spoiled] = {"strength": 1.5, "n_quantiles": 2**40, "n_iter": 10**6}[spoiled]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            matcher = HistogramMatcher(method, **params).fit(reference)
            out = matcher.transform(image)
        except (ValueError, TypeError) as exc:
            _check_error(exc)
        else:
            _check_output(out, image, reference, method)
        if image.ndim >= 3 and len(image) and len(reference):
            try:
                one = match_histograms(image[0], reference[0], method=method, **params)
            except (ValueError, TypeError) as exc:
                _check_error(exc)
            else:
                _check_output(one, image[0], reference[0], method)


@settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
@given(st.data())
def test_augmenter_never_fails_unclearly(data):
    references = _images(data.draw, data.draw(st.sampled_from(DTYPES[:5])), 3)
    image = _images(data.draw, data.draw(st.sampled_from(DTYPES)), 3)
    p = data.draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    strength = data.draw(st.sampled_from([(0.5, 1.0), 0.3, (0.9, 0.1), 1.2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            aug = RandomHistogramMatching(strength=strength, p=p, random_state=0)
            aug.fit(list(references))
            out = aug(image[0]) if len(image) else aug(image)
        except (ValueError, TypeError) as exc:
            _check_error(exc)
        else:
            if out is not (image[0] if len(image) else image):
                _check_output(out, image[0], references)
