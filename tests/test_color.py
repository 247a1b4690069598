"""RGB <-> CIELAB conversion and dtype scaling (histmatch_ml._color)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage import color

from histmatch_ml import _color


def _grid(step: int) -> np.ndarray:
    """Every ``step``-th 8-bit RGB code on each axis, as ``(N, 3)`` uint8."""
    g = np.arange(0, 256, step, dtype=np.uint8)
    return np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)


def test_lab_agrees_with_cie_formulas():
    rgb = _grid(5)
    ours = _color.rgb_to_lab(rgb)
    reference = color.rgb2lab(rgb[None].astype(np.float64) / 255)[0]
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=0.05)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64])
def test_dtypes_give_the_same_lab_as_uint8(dtype):
    rgb = _grid(15)
    # the same fractions of full scale
    other = rgb.astype(np.uint16) * 257 if dtype == np.uint16 else rgb.astype(dtype) / 255
    np.testing.assert_allclose(_color.rgb_to_lab(other), _color.rgb_to_lab(rgb), atol=1e-3)


def test_round_trip_within_a_small_fraction_of_a_code():
    rgb = _grid(3)
    back = _color.lab_to_rgb(_color.rgb_to_lab(rgb))
    assert np.abs(back * 255 - rgb).max() < 0.1


def test_opencv_8bit_and_float_rgb2lab_are_not_used():
    # OpenCV's own float RGB2Lab linearises through a table and is off by more
    # than a code on some colours; ours must round-trip them exactly
    rgb = np.array([[11, 188, 243], [0, 36, 12]], dtype=np.uint8)
    back = np.rint(_color.lab_to_rgb(_color.rgb_to_lab(rgb)) * 255)
    np.testing.assert_array_equal(back, rgb)


def test_shapes_are_kept():
    img = np.zeros((5, 7, 3), dtype=np.uint8)
    assert _color.rgb_to_lab(img).shape == (5, 7, 3)
    assert _color.lab_to_rgb(np.zeros((2, 5, 7, 3))).shape == (2, 5, 7, 3)
    assert _color.rgb_to_lab(np.zeros((1, 3), dtype=np.uint8)).shape == (1, 3)


def test_out_of_gamut_is_clipped_on_the_way_back():
    lab = np.array([[50.0, 120.0, -120.0], [110.0, 0.0, 0.0], [-5.0, 0.0, 0.0]])
    clipped = _color.lab_to_rgb(lab)
    assert clipped.min() >= 0.0 and clipped.max() <= 1.0
    np.testing.assert_array_equal(clipped[1:], [[1, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(clipped[0, 1:], [0, 1])  # saturated green-blue


def test_to_unit_scales_by_dtype():
    np.testing.assert_allclose(_color.to_unit(np.array([0, 255], dtype=np.uint8)), [0, 1])
    np.testing.assert_allclose(_color.to_unit(np.array([0, 65535], dtype=np.uint16)), [0, 1])
    x = np.array([0.25, 0.5], dtype=np.float64)
    out = _color.to_unit(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, x)
    assert _color.full_scale(np.uint8) == 255.0
    assert _color.full_scale(np.uint16) == 65535.0
    assert _color.full_scale(np.float64) == 1.0


def test_to_unit_float_range():
    tiny = _color.FLOAT_TOLERANCE / 2
    x = np.array([-tiny, 0.5, 1 + tiny])
    out = _color.to_unit(x)
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0])
    assert x[0] == -tiny  # input untouched
    with pytest.raises(ValueError, match=r"in \[0, 1\].*got values in \[0, 255\]"):
        _color.to_unit(np.array([0.0, 255.0]))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        _color.to_unit(np.array([-0.5, 0.5], dtype=np.float32))


def test_negative_zero_becomes_zero():
    out = _color.to_unit(np.array([-0.0, 0.0], dtype=np.float32))
    assert out.view(np.uint32).tolist() == [0, 0]


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int8, np.uint32, bool])
def test_unsupported_dtypes_raise_type_error(dtype):
    with pytest.raises(TypeError, match=f"uint8, uint16, float32 or float64.*{np.dtype(dtype)}"):
        _color.rgb_to_lab(np.zeros((2, 3), dtype=dtype))


def test_last_axis_must_be_three():
    with pytest.raises(ValueError, match="last axis of 3"):
        _color.rgb_to_lab(np.zeros((4, 4), dtype=np.uint8))


@settings(max_examples=30, deadline=None)
@given(arrays(np.uint16, st.tuples(st.integers(1, 50), st.just(3))))
def test_uint16_round_trip_property(rgb):
    back = _color.lab_to_rgb(_color.rgb_to_lab(rgb)) * 65535
    assert np.abs(back - rgb).max() < 0.1 * 257  # a tenth of an 8-bit code


@settings(max_examples=30, deadline=None)
@given(
    arrays(
        np.float32, st.tuples(st.integers(1, 50), st.just(3)), elements=st.floats(0, 1, width=32)
    )
)
def test_lightness_is_monotone_in_grey_and_bounded(rgb):
    lab = _color.rgb_to_lab(rgb)
    assert np.all(lab[:, 0] >= -1e-3) and np.all(lab[:, 0] <= 100 + 1e-3)
    grey = np.repeat(np.sort(rgb[:, :1], axis=0), 3, axis=1)
    lightness = _color.rgb_to_lab(grey)[:, 0]
    assert np.all(np.diff(lightness) >= -1e-4)
    np.testing.assert_allclose(_color.rgb_to_lab(grey)[:, 1:], 0, atol=1e-3)


@pytest.mark.parametrize("n", [1, 9, 17, 4097, 70001])
def test_equal_colours_convert_to_equal_values_wherever_they_sit(n):
    # OpenCV's scalar tail and vector body disagree by ~3e-4 in L*; rows are padded
    colour = np.array([0.109375, 0.6, 0.25], dtype=np.float32)
    lab = _color.rgb_to_lab(np.tile(colour, (n, 1)))
    assert np.ptp(lab, axis=0).max() == 0
    assert np.ptp(_color.lab_to_rgb(lab), axis=0).max() == 0


# ------------------------------------------------------------------ lightness
def test_lightness_agrees_with_cie_formulas_and_greys_with_rgb_greys():
    rgb = _grid(5)
    expected = color.rgb2lab(rgb[None].astype(np.float64) / 255)[0, :, 0]
    np.testing.assert_allclose(_color.lightness(rgb), expected, atol=2e-3)
    levels = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(
        _color.lightness(levels[:, None]), _color.lightness(np.repeat(levels[:, None], 3, axis=1))
    )
    np.testing.assert_allclose(
        _color.lightness(levels[:, None].astype(np.uint16) * 257),
        _color.lightness(levels[:, None]),
        atol=1e-4,
    )
    with pytest.raises(ValueError, match="last axis of 1 or 3"):
        _color.lightness(np.zeros((4, 2), np.uint8))


@settings(max_examples=30, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 40), st.just(3)), elements=st.floats(0, 1)),
    st.floats(0, 100),
)
def test_with_lightness_sets_lightness_and_keeps_hue(rgb, light):
    out = _color.with_lightness(rgb, np.full(len(rgb), light))
    assert out.dtype == np.float32 and out.shape == rgb.shape
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(_color.lightness(out.astype(np.float64)), light, atol=0.02)
    lab_in = color.rgb2lab(rgb[None])[0]
    lab_out = color.rgb2lab(out[None].astype(np.float64))[0]
    chroma_in, chroma_out = np.hypot(*lab_in[:, 1:].T), np.hypot(*lab_out[:, 1:].T)
    assert np.all(chroma_out <= chroma_in + 0.05)  # chroma kept or reduced, never raised
    coloured = (chroma_out > 1) & (chroma_in > 1)
    turn = np.angle(
        np.exp(
            1j * (np.arctan2(*lab_out[coloured, :0:-1].T) - np.arctan2(*lab_in[coloured, :0:-1].T))
        )
    )
    assert np.abs(turn).max(initial=0) < 0.05  # radians


def test_with_lightness_keeps_a_and_b_in_gamut_and_is_the_identity_at_the_same_lightness():
    rgb = _grid(17).astype(np.float64) / 255
    same = _color.with_lightness(rgb, _color.lightness(rgb))
    np.testing.assert_allclose(same, rgb, atol=1e-5)
    # half-saturated mid tones, a little lighter: still in gamut, a* and b* untouched
    mid = 0.3 + 0.4 * rgb
    out = _color.with_lightness(mid, _color.lightness(mid) + 5)
    lab_in, lab_out = color.rgb2lab(mid[None])[0], color.rgb2lab(out[None].astype(np.float64))[0]
    inside = ((out > 1e-3) & (out < 1 - 1e-3)).all(axis=1)
    assert inside.mean() > 0.9
    np.testing.assert_allclose(lab_out[inside, 1:], lab_in[inside, 1:], atol=5e-3)
    # grey values stay grey values
    grey = _color.with_lightness(np.array([[0.2], [0.7]]), np.array([50.0, 10.0]))
    np.testing.assert_allclose(_color.lightness(grey.astype(np.float64)), [50.0, 10.0], atol=1e-3)


def test_srgb_curves_are_inverse():
    x = np.linspace(0, 1, 1001)
    np.testing.assert_allclose(_color.linear_to_srgb(_color.srgb_to_linear(x)), x, atol=1e-6)


@pytest.mark.parametrize("low_share", [0.0, 0.05, 0.5, 1.0])
def test_curves_equal_their_two_branch_formulas_wherever_the_toe_is(low_share):
    # the toe is computed for its values only when few values fall in it, else for all:
    # either way the curves are np.where of their two branches, to the bit
    rng = np.random.default_rng(1)
    n = 4000
    low = rng.random(n) < low_share
    for curve, knee, top, toe in [
        (_color._lab_f, _color._EPS, np.cbrt, lambda t: t / (3 * (6 / 29) ** 2) + 4 / 29),
        (
            _color._lab_f_inverse,
            6 / 29,
            lambda f: f**3,
            lambda f: 3 * (6 / 29) ** 2 * (f - 4 / 29),
        ),
        (
            _color.linear_to_srgb,
            0.0031308,
            lambda x: 1.055 * np.maximum(x, 0) ** (1 / 2.4) - 0.055,
            lambda x: 12.92 * x,
        ),
    ]:
        x = np.where(low, rng.uniform(-0.01, knee, n), rng.uniform(knee, 1.0, n))
        x[:3] = [knee, np.nan, 0.0]
        np.testing.assert_array_equal(curve(x), np.where(x > knee, top(x), toe(x)))
