"""The learned reference state: exact histograms, quantile sketches, merging."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from histmatch_ml import _reference


@pytest.mark.parametrize(
    ("dtype", "levels", "offset"),
    [(np.uint8, 256, 0), (np.int8, 256, 128), (np.uint16, 65536, 0), (np.int16, 65536, 32768)],
)
def test_level_index_and_values_roundtrip(dtype, levels, offset):
    info = np.iinfo(dtype)
    values = np.array([info.min, -1 if info.min < 0 else 1, 0, info.max], dtype=dtype)
    idx = _reference.level_index(values)
    assert idx.dtype.kind == "u"
    np.testing.assert_array_equal(idx.astype(np.int64), values.astype(np.int64) + offset)
    np.testing.assert_array_equal(_reference.level_values(dtype)[idx], values)
    assert _reference.level_count_and_offset(dtype) == (levels, offset)


def test_image_histograms_with_and_without_mask():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    mask = rng.random((50, 60)) < 0.3
    h = _reference.image_histograms(img, None)
    hm = _reference.image_histograms(img, mask)
    for c in range(3):
        np.testing.assert_array_equal(h[c], np.bincount(img[:, :, c].ravel(), minlength=256))
        np.testing.assert_array_equal(hm[c], np.bincount(img[:, :, c][mask], minlength=256))
    img16 = (img.astype(np.int16) - 128) * 200
    h16 = _reference.image_histograms(img16, mask)
    assert h16.shape == (3, 65536) and h16.sum() == 3 * mask.sum()


def test_uint8_histograms_exact_above_float32_integers():
    # 4097**2 pixels: more than 2**24 in one bin, an odd count float32 cannot hold
    img = np.zeros((4097, 4097, 1), dtype=np.uint8)
    img[0, :4096] = 7
    expected = np.zeros(256, dtype=np.int64)
    expected[[0, 7]] = [4097 * 4097 - 4096, 4096]
    assert expected[0] > 2**24 and expected[0] % 2 == 1
    np.testing.assert_array_equal(_reference.uint8_histograms(img, None)[0], expected)
    np.testing.assert_array_equal(_reference.image_histograms(img, None)[0], expected)


def test_uint8_histograms_fills_rows_of_float32_counts():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (40, 30, 4), dtype=np.uint8)
    mask = rng.random((40, 30)) < 0.5
    h = _reference.uint8_histograms(img, mask)
    assert h.dtype == np.float32 and h.shape == (4, 256)
    for c in range(4):
        np.testing.assert_array_equal(h[c], np.bincount(img[:, :, c][mask], minlength=256))


@pytest.mark.parametrize("n_channels", [2, 3, 4])
@pytest.mark.parametrize("masked", [False, True])
def test_uint8_histograms_through_planes_in_a_work_buffer(n_channels, masked):
    # counted from contiguous planes split into the work buffer (its contents are
    # overwritten), the same counts; a buffer that overlaps the image is not used
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (512, 300, n_channels), dtype=np.uint8)
    assert img.shape[0] * img.shape[1] >= _reference.PLANE_PIXELS
    before = img.copy()
    mask = rng.random(img.shape[:2]) < 0.5 if masked else None
    expected = _reference.uint8_histograms(img, mask)
    work = np.full_like(img, 7)
    np.testing.assert_array_equal(_reference.uint8_histograms(img, mask, work=work), expected)
    np.testing.assert_array_equal(work.reshape(n_channels, -1)[-1], img[..., -1].ravel())
    np.testing.assert_array_equal(_reference.uint8_histograms(img, mask, work=img), expected)
    np.testing.assert_array_equal(img, before)
    strided = np.empty((512, 600, n_channels), dtype=np.uint8)[:, ::2]  # not contiguous: unused
    np.testing.assert_array_equal(_reference.uint8_histograms(img, mask, work=strided), expected)


@pytest.mark.parametrize(
    "counts",
    [
        np.random.default_rng(0).integers(0, 2**40, (3, 300)),  # int64, large partial sums
        np.random.default_rng(1).integers(0, 9, (2, 65536)).astype(np.float32),  # calcHist's
        np.random.default_rng(2).integers(0, 250, 700).astype(np.uint8),
        np.random.default_rng(3).random((2, 500)) * 7,  # fractional weights
        np.array([0.5, 1.0, 2**60, 3.0]),  # integral floats past 2**53 with a fraction
        np.zeros((2, 0)),
        np.random.default_rng(4).integers(0, 9, (3, 256)).astype(np.float32),  # short rows
    ],
)
@pytest.mark.parametrize("fractional", [False, True])
def test_running_counts_equal_the_float64_running_sum(counts, fractional):
    got = _reference.running_counts(counts, fractional)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, np.cumsum(counts, axis=-1, dtype=np.float64))


def test_quantile_knots_of_histograms_are_padded_occupied_levels():
    rng = np.random.default_rng(3)
    hist = np.zeros((3, 256), dtype=np.int64)
    for c, n_levels in enumerate((1, 7, 200)):  # rows of very different lengths
        hist[c, rng.choice(256, n_levels, replace=False)] = rng.integers(1, 50, n_levels)
    knots = _reference.quantile_knots({"histograms": hist, "dtype": np.array("uint8")})
    assert knots["probs"].shape == knots["values"].shape == (3, 200)
    probs = np.linspace(0, 1, 1001)
    for c in range(3):
        p, v = _reference.histogram_quantile_points(hist[c], np.arange(256.0))
        np.testing.assert_array_equal(knots["probs"][c, : len(p)], p)
        np.testing.assert_array_equal(knots["values"][c, : len(v)], v)
        # the padding repeats the last knot, which leaves the interpolation unchanged
        np.testing.assert_array_equal(
            _reference.quantile_values(knots, c, probs), np.interp(probs, p, v)
        )


def test_quantile_knots_of_sketches_are_the_quantiles():
    q = np.sort(np.random.default_rng(0).normal(size=(2, 64)), axis=1)
    knots = _reference.quantile_knots({"quantiles": q, "dtype": np.array("float32")})
    assert set(knots) == {"values"}
    p, v = _reference.quantile_points(knots, 1)
    np.testing.assert_array_equal(p, _reference.probability_grid(64))
    np.testing.assert_array_equal(v, q[1])


def test_histogram_quantile_points_midpoint_convention():
    hist = np.zeros(256, dtype=np.int64)
    hist[[10, 20]] = [1, 3]
    p, v = _reference.histogram_quantile_points(hist, np.arange(256.0))
    np.testing.assert_allclose(p, [0.125, 0.625])
    np.testing.assert_array_equal(v, [10, 20])


def test_quantiles_are_hazen():
    x = np.arange(10.0)
    q = _reference.quantiles_of(x, 11)
    assert q[0] == 0 and q[-1] == 9
    assert q[5] == pytest.approx(4.5)


def test_merge_histograms_is_exact():
    rng = np.random.default_rng(1)
    a = {"histograms": rng.integers(0, 9, (3, 256)), "dtype": np.array("uint8")}
    b = {"histograms": rng.integers(0, 9, (3, 256)), "dtype": np.array("uint8")}
    merged = _reference.merge(a, int(a["histograms"].sum()), b, int(b["histograms"].sum()))
    np.testing.assert_array_equal(merged["histograms"], a["histograms"] + b["histograms"])


def test_merge_quantiles_of_equal_halves_matches_pooled():
    rng = np.random.default_rng(2)
    x = rng.normal(size=20000)
    n_q = 512
    qa = _reference.quantiles_of(x[:10000], n_q)[None]
    qb = _reference.quantiles_of(x[10000:], n_q)[None]
    merged = _reference.merge_quantiles(qa, 10000, qb, 10000)[0]
    pooled = _reference.quantiles_of(x, n_q)
    assert np.abs(merged - pooled)[5:-5].max() < 0.02


@settings(max_examples=30, deadline=None)
@given(
    a=hnp.arrays(np.float64, st.integers(1, 300), elements=st.floats(-100, 100)),
    b=hnp.arrays(np.float64, st.integers(1, 300), elements=st.floats(-100, 100)),
    n_q=st.integers(2, 64),
)
def test_property_merge_quantiles_within_documented_tolerance(a, b, n_q):
    qa = _reference.quantiles_of(a, n_q)[None]
    qb = _reference.quantiles_of(b, n_q)[None]
    merged = _reference.merge_quantiles(qa, a.size, qb, b.size)[0]
    pooled = np.concatenate([a, b])
    probs = _reference.probability_grid(n_q)
    tol = 1 / (n_q - 1) + 1 / pooled.size
    lower = np.quantile(pooled, np.clip(probs - tol, 0, 1), method="hazen")
    upper = np.quantile(pooled, np.clip(probs + tol, 0, 1), method="hazen")
    assert np.all(np.diff(merged) >= 0)
    assert np.all(merged >= lower - 1e-9) and np.all(merged <= upper + 1e-9)


def test_merge_resamples_a_sketch_of_another_size():
    rng = np.random.default_rng(3)
    x = rng.random(5000)
    a = {"quantiles": _reference.quantiles_of(x, 100)[None], "dtype": np.array("float64")}
    b = {"quantiles": _reference.quantiles_of(x, 37)[None], "dtype": np.array("float64")}
    merged = _reference.merge(a, 5000, b, 5000)
    assert merged["quantiles"].shape == (1, 100)
    assert np.abs(merged["quantiles"] - a["quantiles"]).max() < 0.03


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.uint16, st.tuples(st.integers(1, 40), st.integers(1, 40))),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_property_level_counts_equal_bincount(plane, use_mask, rnd):
    mask = None
    if use_mask:
        mask = np.array([rnd.random() < 0.5 for _ in range(plane.size)]).reshape(plane.shape)
    for arr, n in ((plane, 65536), ((plane % 256).astype(np.uint8), 256)):
        values = arr.ravel() if mask is None else arr[mask]
        np.testing.assert_array_equal(
            _reference.level_counts(arr, mask, n), np.bincount(values, minlength=n)
        )


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float64, st.integers(2, 60), elements=st.floats(-1e6, 1e6)),
    hnp.arrays(np.float64, st.integers(1, 60), elements=st.floats(0, 1)),
)
def test_property_quantile_values_equal_interp(knots, probs):
    state = {"quantiles": np.sort(knots)[None], "dtype": np.array("float32")}
    expected = np.interp(probs, *_reference.quantile_points(_reference.quantile_knots(state), 0))
    np.testing.assert_allclose(
        _reference.quantile_values(_reference.quantile_knots(state), 0, probs),
        expected,
        atol=1e-9 * 1e6,
    )


def _random_state(kind: str, rng: np.random.Generator, n_knots: int) -> dict:
    """A two-channel reference state: a float sketch of ``n_knots`` or sparse uint16 histograms."""
    if kind == "quantiles":
        knots = np.sort(rng.normal(size=(2, n_knots)) * 1e3, axis=1)
        return {"quantiles": knots, "dtype": np.array("float32")}
    hist = rng.integers(0, 3, size=(2, 65536)) * (rng.random((2, 65536)) < 0.01)
    return {"histograms": hist, "dtype": np.array("uint16")}


@pytest.mark.parametrize("n_probs", [50, 5000, 70000])
@pytest.mark.parametrize("kind", ["quantiles", "histograms"])
def test_quantile_values_short_and_long_paths_equal_interp_and_are_monotone(kind, n_probs):
    rng = np.random.default_rng(n_probs)
    state = _random_state(kind, rng, n_knots=257)
    probs = np.sort(np.concatenate([rng.random(n_probs - 3), [0.0, 1.0, 0.5]]))
    got = _reference.quantile_values(_reference.quantile_knots(state), 1, probs)
    expected = np.interp(probs, *_reference.quantile_points(_reference.quantile_knots(state), 1))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-9)
    assert (np.diff(got) >= 0).all()
    out = np.empty_like(probs)
    assert _reference.quantile_values(_reference.quantile_knots(state), 1, probs, out=out) is out
    np.testing.assert_array_equal(out, got)
    shuffled = rng.permutation(len(probs))  # unsorted queries: the same values
    np.testing.assert_allclose(
        _reference.quantile_values(_reference.quantile_knots(state), 1, probs[shuffled]),
        got[shuffled],
        rtol=1e-12,
        atol=1e-9,
    )


@pytest.mark.parametrize("n", [5, 1024, 1025, 65536])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_midpoint_cdf_is_the_same_to_the_bit_on_every_branch(n, dtype):
    rng = np.random.default_rng(n)
    hist = (rng.integers(0, 50, n) * (rng.random(n) < 0.7)).astype(dtype)
    hist[-1] += 1
    cum = np.cumsum(hist, dtype=np.float64)
    expected = (cum - hist * 0.5) / cum[-1]  # (counts below + count / 2) / total
    np.testing.assert_array_equal(_reference.midpoint_cdf(hist), expected)
    out = np.empty(n)
    assert _reference.midpoint_cdf(hist, out=out) is out
    np.testing.assert_array_equal(out, expected)
    assert _reference.midpoint_cdf(np.array([0, 7, 0], dtype=dtype))[1] == 0.5


def test_long_sketch_queries_end_on_the_end_knots_and_round_into_float32_out():
    rng = np.random.default_rng(2)
    state = {
        "quantiles": np.sort(rng.normal(size=(1, 1024)), axis=1),
        "dtype": np.array("float32"),
    }
    probs = np.sort(np.concatenate([rng.random(9997), [0.0, 1.0, 1.0]]))
    got = _reference.quantile_values(_reference.quantile_knots(state), 0, probs)
    assert got[0] == state["quantiles"][0, 0] and got[-1] == state["quantiles"][0, -1]
    out32 = np.empty(len(probs), dtype=np.float32)
    assert (
        _reference.quantile_values(_reference.quantile_knots(state), 0, probs, out=out32) is out32
    )
    np.testing.assert_array_equal(out32, got.astype(np.float32))


@pytest.mark.parametrize("n", [300, 65536])
@pytest.mark.parametrize("kind", ["quantiles", "histograms"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_midpoint_quantiles_equal_quantile_values_at_the_midpoint_cdf(n, kind, dtype):
    rng = np.random.default_rng(n)
    state = _random_state(kind, rng, n_knots=1024)
    counts = (rng.integers(0, 9, n) * (rng.random(n) < 0.8)).astype(dtype)
    counts[[0, -1]] = [3, 2]
    expected = _reference.quantile_values(
        _reference.quantile_knots(state), 1, _reference.midpoint_cdf(counts)
    )
    got = _reference.midpoint_quantiles(counts, _reference.quantile_knots(state), 1)
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-10)
    assert (np.diff(got) >= 0).all()
    out32 = np.empty(n, dtype=np.float32)
    assert (
        _reference.midpoint_quantiles(counts, _reference.quantile_knots(state), 1, out=out32)
        is out32
    )
    np.testing.assert_array_equal(out32, got.astype(np.float32))


@pytest.mark.parametrize("n", [2**14 + 1, 65536, 100_003])
@pytest.mark.parametrize("kind", ["quantiles", "histograms"])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_midpoint_quantiles_by_blocks_are_the_same_to_the_bit(n, kind, dtype, monkeypatch):
    rng = np.random.default_rng(n)
    knots = _reference.quantile_knots(_random_state(kind, rng, n_knots=1024))
    counts = (rng.integers(0, 9, n) * (rng.random(n) < 0.6)).astype(dtype)
    counts[[0, -1]] = [3, 2]
    whole = _reference.midpoint_quantiles(counts, knots, 1)
    blocked = _reference.midpoint_quantiles(counts, knots, 1, blocks=True)
    np.testing.assert_array_equal(blocked, whole)
    if dtype == np.float32:  # a float32 table written over its own counts
        own = counts.copy()
        assert _reference.midpoint_quantiles(own, knots, 1, out=own, blocks=True) is own
        np.testing.assert_array_equal(own, whole.astype(np.float32))
    # the running maximum that repairs a step down is carried across the blocks: the
    # interpolation made to dip below its neighbours here and there (and at a block's start)
    counts = rng.integers(1, 9, n).astype(dtype)  # (no empty bins: every probability distinct)
    probs = _reference.midpoint_cdf(counts)
    span = float(np.ptp(knots["values"][1]))  # (dips of 1% of the range: steps down)
    dips = np.where(np.arange(n) % 5000 == 4999, 0.01 * span, 0.0)
    dips[_reference.TABLE_BLOCK] = 0.01 * span
    interp = _reference._interp

    def dipping(q, p, v):  # (the dips of q's own entries, found by their probabilities)
        start = int(np.searchsorted(probs, q[0]))
        return interp(q, p, v) - dips[start : start + len(q)]

    assert (np.diff(dipping(probs, *_reference.quantile_points(knots, 1))) < 0).any()
    monkeypatch.setattr(_reference, "_interp", dipping)
    repaired = _reference.midpoint_quantiles(counts, knots, 1)
    assert (np.diff(repaired) >= 0).all()
    np.testing.assert_array_equal(
        _reference.midpoint_quantiles(counts, knots, 1, blocks=True), repaired
    )


# ------------------------------------------------------------ floats of 8-bit levels
def test_float_references_of_8_bit_levels_keep_exact_level_histograms():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (2, 20, 30, 3), dtype=np.uint8)
    for convert in (lambda a: a / 255, lambda a: a.astype(np.float32) * np.float32(1 / 255)):
        state = _reference.learn(list(convert(u8)), None)
        assert set(state) == {"dtype", "histograms", "levels"}
        np.testing.assert_array_equal(
            state["histograms"], _reference.learn(list(u8), None)["histograms"]
        )
        assert _reference.check_state(state, 3) == 2 * 20 * 30
    # not all levels of one conversion: float bins
    noisy = u8 / 255.0
    noisy[0, 0, 0, 0] += 1e-9
    assert "keys" in _reference.learn(list(noisy), None)


def test_a_level_histogram_merges_exactly_with_its_kind_and_with_float_bins():
    rng = np.random.default_rng(1)
    a = list(rng.integers(0, 256, (2, 10, 10, 1)) / 255.0)
    b = list(rng.integers(0, 256, (2, 10, 10, 1)) / 255.0)
    sa, sb = _reference.learn(a, None), _reference.learn(b, None)
    merged = _reference.merge(sa, 200, sb, 200)
    np.testing.assert_array_equal(merged["histograms"], sa["histograms"] + sb["histograms"])
    continuous = list(rng.random((1, 10, 10, 1)))
    mixed = _reference.merge(sa, 200, _reference.learn(continuous, None), 100)
    _assert_same_state(mixed, _reference.learn([np.concatenate(a + continuous)], None))


def test_uint8_and_the_same_data_as_floats_match_alike_within_rounding():
    from conftest import load
    from histmatch_ml import match_histograms

    src, ref = load("astronaut"), load("coffee")
    expected = match_histograms(src, ref).astype(np.float64)
    for convert in (lambda a: a / 255, lambda a: (a / 255).astype(np.float32)):
        got = match_histograms(convert(src), convert(ref)).astype(np.float64) * 255
        assert np.abs(got - expected).max() <= 0.5 + 1e-4


# ------------------------------------------------------------------------ float bins
def _assert_same_state(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _merged(states: list[dict], order: str) -> dict:
    if order == "tree":
        if len(states) == 1:
            return states[0]
        half = len(states) // 2
        return _reference.merge(_merged(states[:half], order), 0, _merged(states[half:], order), 0)
    merged = states[0]
    for s in states[1:]:
        merged = (
            _reference.merge(merged, 0, s, 0)
            if order == "left"
            else _reference.merge(s, 0, merged, 0)
        )
    return merged


def test_float_bins_hold_every_distinct_value_and_the_exact_hazen_quantiles():
    rng = np.random.default_rng(4)
    x = rng.lognormal(size=(40, 50, 2))
    x[:3, :, 0] = 7.0  # an atom
    state = _reference.learn([x], None)
    assert int(state["bits"]) == 52 and _reference.check_state(state, 2) == 2000
    knots = _reference.quantile_knots(state)
    for c in range(2):
        values, counts = np.unique(x[:, :, c], return_counts=True)
        p, v = _reference.quantile_points(knots, c)
        np.testing.assert_array_equal(v, values)
        np.testing.assert_allclose(p, (np.cumsum(counts) - counts / 2) / x[:, :, c].size)
    f32 = x.astype(np.float32)
    state32 = _reference.learn([f32], None)
    assert int(state32["bits"]) == 23
    p, v = _reference.quantile_points(_reference.quantile_knots(state32), 1)
    np.testing.assert_array_equal(v, np.unique(f32[:, :, 1]).astype(np.float64))


@settings(max_examples=25, deadline=None)
@given(
    data=hnp.arrays(
        np.float64,
        st.integers(2, 400),
        elements=st.one_of(
            st.floats(-1e6, 1e6, allow_nan=False, width=32), st.sampled_from([0.0, 1.5, -2.0])
        ),
    ),
    cuts=st.lists(st.integers(1, 399), max_size=6),
    order=st.sampled_from(["left", "right", "tree"]),
    max_bins=st.sampled_from([2**18, 16, 3]),
    width=st.sampled_from([np.float32, np.float64]),
)
def test_property_float_states_do_not_depend_on_the_partition(data, cuts, order, max_bins, width):
    """Any split of the data, merged in any order, gives the pooled data's state, bit for bit."""
    data = data.astype(width)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    shards = [data[a:b].reshape(1, -1, 1) for a, b in itertools.pairwise(bounds)]
    saved = _reference.MAX_BINS
    _reference.MAX_BINS = max_bins
    try:
        pooled = _reference.learn([data.reshape(1, -1, 1)], None)
        merged = _merged([_reference.learn([s], None) for s in shards], order)
    finally:
        _reference.MAX_BINS = saved
    if "keys" in pooled or "keys" in merged:
        # (shards of 8-bit levels of different conversions, 0 and 2 say, merge as bins)
        merged, pooled = _reference.as_bins(merged), _reference.as_bins(pooled)
    _assert_same_state(merged, pooled)
    if "keys" in pooled:  # (data of 8-bit levels only keep a level histogram)
        # (at 0 bits, sign and exponent only, up to 4096 bins remain whatever MAX_BINS)
        assert len(pooled["keys"]) <= max_bins or int(pooled["bits"]) == 0
        np.testing.assert_array_equal(pooled["extremes"][0], [data.min(), data.max()])


@settings(max_examples=25, deadline=None)
@given(
    data=hnp.arrays(np.float64, st.integers(50, 2000), elements=st.floats(-1e3, 1e3)),
    max_bins=st.integers(4, 64),
)
def test_property_coarsened_quantiles_lie_within_one_bin(data, max_bins):
    """The documented bound: within one bin, ``2 ** (1 - bits) * |q|``, of the data's quantile."""
    saved = _reference.MAX_BINS
    _reference.MAX_BINS = max_bins
    try:
        state = _reference.as_bins(_reference.learn([data.reshape(1, -1, 1)], None))
    finally:
        _reference.MAX_BINS = saved
    bits = int(state["bits"])
    q = np.sort(data)
    probs = (np.arange(len(q)) + 0.5) / len(q)  # inside each order statistic's step
    got = _reference.quantile_values(_reference.quantile_knots(state), 0, probs)
    if bits >= _reference.POINT_BITS:  # points: each bin's values as one, at its midpoint CDF
        keys = _reference.order_keys(q + 0.0) >> (52 - bits)
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        counts = np.diff(np.r_[starts, len(q)])
        values = q[starts].copy()  # (a bin's values agree to 2**-bits of their magnitude)
        values[0], values[-1] = q[0], q[-1]
        expected = np.interp(probs, _reference.midpoint_cdf(counts), values)
        np.testing.assert_allclose(got, expected, rtol=2.0 ** (1 - bits), atol=1e-300)
    else:  # bins: within one bin of the order statistic
        assert (np.abs(got - q) <= 2.0 ** (1 - bits) * np.abs(q) + 1e-300).all()
    assert got[0] >= q[0] and got[-1] <= q[-1]


def test_learning_in_groups_equals_learning_at_once(monkeypatch):
    rng = np.random.default_rng(5)
    images = list(rng.normal(size=(6, 20, 30, 3)).astype(np.float32))
    masks = list(rng.random((6, 20, 30)) < 0.7)
    at_once = _reference.learn(images, masks)
    monkeypatch.setattr(_reference, "LEARN_GROUP", 500)
    _assert_same_state(_reference.learn(images, masks), at_once)


def test_groups_cut_large_images_and_gather_small_ones(monkeypatch):
    """A group holds FIRST_GROUP values, then LEARN_GROUP each: every value once, in order."""
    rng = np.random.default_rng(6)
    images = [
        rng.random(shape).astype(np.float32) for shape in [(9, 7, 2), (70, 50, 2), (3, 4, 2)]
    ]
    masks = [rng.random(im.shape[:2]) < 0.8 for im in images]
    monkeypatch.setattr(_reference, "FIRST_GROUP", 300)
    monkeypatch.setattr(_reference, "LEARN_GROUP", 1000)
    for m in (None, masks):
        groups = [g.copy() for g in _reference._channel_groups(images, m)]
        sizes = [g.shape[1] for g in groups]
        assert sizes[0] == 300 and all(n == 1000 for n in sizes[1:-1]) and 0 < sizes[-1] <= 1000
        pixels = [
            im.reshape(-1, 2) if k is None else im[k] for im, k in zip(images, m or [None] * 3)
        ]
        np.testing.assert_array_equal(np.concatenate(groups, axis=1), np.concatenate(pixels).T)
    in_groups = _reference.learn(images, masks)
    monkeypatch.undo()  # (one group: all the values at once)
    _assert_same_state(_reference.learn(images, masks), in_groups)


@pytest.mark.parametrize(
    "kind", ["positive", "mixed_signs", "float64", "subnormals", "wide_group", "overflow"]
)
def test_coarse_groups_are_tallied_to_the_state_learned_at_once(monkeypatch, kind):
    """Groups counted into per-channel tallies give the state of all the values at once.

    The coarse path (a resolution coarsened by an earlier group) counts each
    group into a dense tally and merges it into the state only when the tally
    is full, does not fit a group, or at the end; it must not change a bin.
    """
    rng = np.random.default_rng(11)
    values = rng.gamma(2.0, size=(12, 40, 50, 2)) * 1e-3
    dtype = np.float64 if kind == "float64" else np.float32
    if kind == "mixed_signs":
        values -= 2e-3
    images = list(values.astype(dtype))
    if kind == "subnormals":
        images[7][:3] = np.float32(1e-40)
    if kind == "wide_group":
        images[9][0, 0] = 1e30  # widens the key range past the tally's
        monkeypatch.setattr(_reference, "_TALLY_RANGE", 2**12)
    masks = list(rng.random((12, 40, 50)) < 0.8)
    monkeypatch.setattr(_reference, "MAX_BINS", 2**13 if kind == "overflow" else 2**10)
    at_once = _reference.learn(images, masks)
    assert int(at_once["bits"]) < 23
    added = []
    add = _reference._Tally.add
    monkeypatch.setattr(_reference._Tally, "add", lambda t, *a: added.append(1) or add(t, *a))
    monkeypatch.setattr(_reference, "FIRST_GROUP", 3000)
    monkeypatch.setattr(_reference, "LEARN_GROUP", 1000)
    _assert_same_state(_reference.learn(images, masks), at_once)
    assert added  # (the tallies were used)


@pytest.mark.parametrize("n_levels", [4097, 40000, 65536])
@pytest.mark.parametrize("masked", [False, True])
def test_fine_16_bit_histograms_counted_as_byte_pairs_are_exact(n_levels, masked):
    """Small 16-bit planes are counted as (high byte, low byte) pairs: the same counts."""
    rng = np.random.default_rng(12)
    plane = rng.integers(0, n_levels, size=(300, 257)).astype(np.uint16)
    plane[:5] = n_levels - 1  # (the top level, which the high byte alone does not name)
    assert plane.size <= _reference.BYTE_PAIR_PIXELS
    mask = rng.random(plane.shape) < 0.6 if masked else None
    expected = np.bincount((plane if mask is None else plane[mask]).ravel(), minlength=n_levels)
    out = np.full((n_levels, 1), -1.0, dtype=np.float32)
    for buffer in (None, out):
        counts = _reference.level_counts(plane, mask, n_levels, out=buffer)
        assert counts.shape == (n_levels,)
        np.testing.assert_array_equal(counts, expected)
    np.testing.assert_array_equal(out[:, 0], expected)  # (the buffer holds them)
    # a larger plane goes the 16-bit way, with the same result
    big = np.tile(plane, (8, 1))
    assert big.size > _reference.BYTE_PAIR_PIXELS
    np.testing.assert_array_equal(
        _reference.level_counts(big, None, n_levels), np.bincount(big.ravel(), minlength=n_levels)
    )


def test_float_bins_state_validation():
    rng = np.random.default_rng(6)
    good = _reference.learn([rng.normal(size=(8, 9, 2))], None)
    assert _reference.check_state(good, 2) == 72
    cases = [
        ({"keys": good["keys"][::-1].copy()}, "increase"),
        ({"counts": -good["counts"]}, "positive"),
        ({"extremes": good["extremes"] + 1.0}, "first and last bins"),
        ({"offsets": good["offsets"][:2].copy()}, "entries|offsets"),
        ({"bits": np.array(60)}, r"\[0, 52\]"),
        ({"dtype": np.array("uint8")}, "histograms"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            _reference.check_state({**good, **change}, 2)
