"""``method="exact"``: exact histogram specification."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from conftest import load
from histmatch_ml import HistogramMatcher, _reference, match_histograms
from histmatch_ml._ordering import strict_order
from histmatch_ml.methods.exact import target_counts

ORDERINGS = ("variational", "local_means")


def exact(**params) -> HistogramMatcher:
    return HistogramMatcher(method="exact", **params)


def hist(channel: np.ndarray) -> np.ndarray:
    """Level histogram of an 8/16-bit array (all levels)."""
    n_levels, _ = _reference.level_count_and_offset(channel.dtype)
    return np.bincount(_reference.level_index(channel).ravel(), minlength=n_levels)


def assert_order_kept(source: np.ndarray, output: np.ndarray) -> None:
    """A larger source value never gets a smaller output value."""
    s, o = source.ravel(), output.ravel().astype(np.float64)
    by_source = np.lexsort((o, s))
    assert (np.diff(o[by_source]) >= 0).all()


# -------------------------------------------------------------- target_counts
@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 10**6), min_size=1, max_size=40).filter(any),
    st.integers(0, 10**6),
)
def test_target_counts_is_largest_remainder(h, n):
    counts = target_counts(np.array(h), n)
    total = sum(h)
    quotas = [Fraction(n * x, total) for x in h]
    assert counts.sum() == n
    assert all(abs(c - q) < 1 for c, q in zip(counts.tolist(), quotas))
    # levels rounded up have remainders at least as large as levels rounded down
    up = [q - int(q) for c, q in zip(counts.tolist(), quotas) if c > q]
    down = [q - int(q) for c, q in zip(counts.tolist(), quotas) if c < q]
    assert not up or not down or min(up) >= max(down)


def test_target_counts_exact_beyond_int64():
    h = np.array([2**40 + 1, 2**40, 3], dtype=np.int64)
    n = 2**30 + 7  # n * h overflows int64
    counts = target_counts(h, n)
    total = int(h.sum())
    assert counts.sum() == n
    assert all(abs(Fraction(n * int(x), total) - c) < 1 for x, c in zip(h, counts))


def test_target_counts_identity_for_the_same_total():
    h = np.array([0, 5, 0, 7, 1])
    np.testing.assert_array_equal(target_counts(h, 13), h)


# ---------------------------------------------------------------- exact counts
@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("shape", [(512, 512), (120, 77), (1, 1), (3, 500), (37, 1)])
def test_rgb_counts_are_exact_at_any_size(ordering, shape):
    reference = load("coffee")
    source = np.ascontiguousarray(load("astronaut")[: shape[0], : shape[1]])
    out = exact(ordering=ordering).fit(reference[None]).transform(source[None])[0]
    n = shape[0] * shape[1]
    for c in range(3):
        np.testing.assert_array_equal(
            hist(out[:, :, c]), target_counts(hist(reference[:, :, c]), n)
        )


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_grey_same_size_reference_gives_identical_histogram(ordering):
    source, reference = load("camera"), load("moon")  # both 512 x 512
    out = match_histograms(source, reference, method="exact", ordering=ordering)
    np.testing.assert_array_equal(hist(out), hist(reference))
    assert_order_kept(source, out)


def test_rgb_same_pixel_count_gives_identical_histograms():
    source = load("chelsea")  # 300 x 451
    reference = np.ascontiguousarray(load("coffee")[:246, :550])  # other shape, same count
    out = match_histograms(source, reference, method="exact")
    for c in range(3):
        np.testing.assert_array_equal(hist(out[:, :, c]), hist(reference[:, :, c]))
        assert_order_kept(source[:, :, c], out[:, :, c])


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_uint16_same_size_reference_gives_identical_histogram(rng, ordering):
    source = load("camera").astype(np.uint16) * np.uint16(257)
    reference = load("moon").astype(np.uint16) * np.uint16(200) + rng.integers(
        0, 300, size=(512, 512), dtype=np.uint16
    )
    out = match_histograms(source, reference, method="exact", ordering=ordering)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(hist(out), hist(reference))
    assert_order_kept(source, out)


def test_int16_with_negatives_gives_identical_histogram(rng):
    source = (load("coins").astype(np.int16) - 128) * np.int16(100)
    reference = rng.normal(0, 5000, size=source.shape).round().astype(np.int16)
    out = match_histograms(source, reference, method="exact")
    assert out.dtype == np.int16
    np.testing.assert_array_equal(hist(out), hist(reference))
    assert_order_kept(source, out)


def test_counts_follow_a_pooled_and_partial_fit_reference():
    refs = [load("coffee"), load("chelsea"), load("rocket")]
    pooled = exact().fit(refs)
    chunked = exact().partial_fit(refs[:1]).partial_fit(refs[1:])
    source = load("astronaut")[:200, :300]
    out = pooled.transform([source])[0]
    np.testing.assert_array_equal(out, chunked.transform([source])[0])
    for c in range(3):
        total = sum(hist(r[:, :, c]) for r in refs)
        np.testing.assert_array_equal(hist(out[:, :, c]), target_counts(total, 200 * 300))


def test_tabular_rows_each_get_exact_counts(rng):
    reference = rng.integers(0, 256, size=(3, 50), dtype=np.uint8)
    rows = rng.integers(0, 10, size=(4, 50), dtype=np.uint8)
    out = exact().fit(reference).transform(rows)
    for row in out:
        np.testing.assert_array_equal(hist(row), target_counts(hist(reference), 50))


@settings(max_examples=40, deadline=None)
@given(
    arrays(
        np.uint8, st.tuples(st.integers(1, 16), st.integers(1, 16)), elements=st.integers(0, 6)
    ),
    arrays(np.uint8, st.tuples(st.integers(1, 16), st.integers(1, 16))),
    st.sampled_from(ORDERINGS),
)
def test_property_counts_order_determinism(source, reference, ordering):
    matcher = exact(ordering=ordering).fit([reference])
    out = matcher.transform([source])[0]
    assert out.shape == source.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(hist(out), target_counts(hist(reference), source.size))
    assert_order_kept(source, out)
    np.testing.assert_array_equal(matcher.transform([source.copy()])[0], out)


# ------------------------------------------------------------------- ordering
@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_flat_image_gets_the_reference_histogram_in_raster_order(rng, ordering, dtype):
    reference = rng.integers(0, 200, size=(12, 10)).astype(dtype)
    flat = np.full((10, 12), 5, dtype=dtype)
    matcher = exact(ordering=ordering).fit([reference])
    out = matcher.transform([flat])[0]
    if dtype == np.float32:  # the reference quantile function at the rank midpoints
        p, v = _reference.quantile_points(matcher.tables_, 0)
        expected = np.interp((np.arange(120) + 0.5) / 120, p, v).astype(dtype)
    else:
        expected = np.sort(reference.ravel())
    np.testing.assert_array_equal(np.sort(out.ravel()), expected)
    assert (np.diff(out.ravel()) >= 0).all()  # ties go by position


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_deterministic_and_input_untouched(ordering):
    source, reference = load("coins"), load("camera")
    before = source.copy()
    first = match_histograms(source, reference, method="exact", ordering=ordering)
    second = match_histograms(source.copy(), reference, method="exact", ordering=ordering)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(source, before)


def test_orderings_differ_only_within_source_levels():
    source, reference = load("moon"), load("camera")
    a = match_histograms(source, reference, method="exact", ordering="local_means")
    b = match_histograms(source, reference, method="exact", ordering="variational")
    np.testing.assert_array_equal(hist(a), hist(b))
    assert not np.array_equal(a, b)
    for level in np.unique(source)[::17]:  # each source level gets the same output values
        np.testing.assert_array_equal(np.sort(a[source == level]), np.sort(b[source == level]))


def test_exact_beats_classic_matching_on_levels():
    source, reference = load("astronaut"), load("coffee")
    ours = match_histograms(source, reference, method="exact")
    classic = match_histograms(source, reference, method="per_channel")
    for c in range(3):
        ref_levels = np.count_nonzero(hist(reference[:, :, c]))
        assert np.count_nonzero(hist(ours[:, :, c])) == ref_levels
        assert np.count_nonzero(hist(classic[:, :, c])) < ref_levels


# ---------------------------------------------------------------------- floats
def test_float_reference_gives_quantiles_at_rank_midpoints(rng):
    reference = rng.gamma(2.0, size=(60, 50)).astype(np.float32)
    source = rng.normal(size=(31, 17)).astype(np.float32)
    matcher = exact(n_quantiles=500).fit([reference])
    out = matcher.transform([source])[0]
    assert out.dtype == np.float32
    n = source.size
    p, v = _reference.quantile_points(matcher.tables_, 0)
    expected = np.interp((np.arange(n) + 0.5) / n, p, v).astype(np.float32)
    np.testing.assert_array_equal(np.sort(out.ravel()), expected)
    assert_order_kept(source, out)


def test_float_image_with_uint8_reference_uses_the_quantile_function(rng):
    reference = rng.integers(0, 256, size=(40, 40), dtype=np.uint8)
    source = rng.random((25, 20))
    matcher = exact(scale="raw").fit([reference])
    with pytest.warns(UserWarning, match="references were uint8"):
        out = matcher.transform([source])[0]
    p, v = _reference.quantile_points(matcher.tables_, 0)
    n = source.size
    np.testing.assert_allclose(np.sort(out.ravel()), np.interp((np.arange(n) + 0.5) / n, p, v))
    assert_order_kept(source, out)


def test_uint16_reference_on_uint8_image_is_rounded_and_clipped(rng):
    reference = rng.integers(0, 1000, size=(30, 30), dtype=np.uint16)
    source = rng.integers(0, 256, size=(30, 30), dtype=np.uint8)
    with pytest.warns(UserWarning, match="rounded to uint8"):
        out = match_histograms(source, reference, method="exact", scale="raw")
    assert out.dtype == np.uint8
    expected = np.minimum(np.sort(reference.ravel()), 255)
    np.testing.assert_array_equal(np.sort(out.ravel()), expected)


def test_uint8_reference_on_uint16_image_keeps_reference_levels(rng):
    reference = rng.integers(0, 256, size=(20, 20), dtype=np.uint8)
    source = rng.integers(0, 65536, size=(20, 20), dtype=np.uint16)
    with pytest.warns(UserWarning, match="references were uint8"):
        out = match_histograms(source, reference, method="exact", scale="raw")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(np.sort(out.ravel()), np.sort(reference.ravel()))
    # read on the img_as_float scale, the reference's levels come out x257
    scaled = match_histograms(source, reference, method="exact")
    np.testing.assert_array_equal(
        np.sort(scaled.ravel()), np.sort(reference.ravel()).astype(np.uint16) * 257
    )


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
def test_own_levels_are_handed_out_as_the_finished_float_values(rng, monkeypatch, dtype):
    # an integer image matched to a reference of its dtype gets the levels straight in
    # its dtype; the float work plane, rounded, clipped and cast, gives the same pixels
    from histmatch_ml.methods import exact as exact_module

    info = np.iinfo(dtype)
    source = rng.integers(info.min, info.max, size=(60, 70, 3), endpoint=True).astype(dtype)
    source[:20] //= 7  # (repeated levels: ranked by the ordering)
    reference = rng.integers(info.min, info.max, size=(50, 50, 3), endpoint=True).astype(dtype)
    mask = rng.random(source.shape[:2]) < 0.6
    matcher = exact().fit([reference])
    assert exact_module.own_levels(matcher.reference_, matcher.tables_, source.dtype)
    direct = [matcher.transform([source], mask=m)[0] for m in (None, [mask])]
    monkeypatch.setattr(exact_module, "own_levels", lambda *args: False)
    finished = [matcher.transform([source], mask=m)[0] for m in (None, [mask])]
    for a, b in zip(direct, finished):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(direct[1][~mask], source[~mask])


def test_own_levels_only_for_a_reference_of_the_images_dtype(rng):
    from histmatch_ml.methods.exact import own_levels

    reference = rng.integers(0, 256, size=(20, 20), dtype=np.uint8)
    matcher = exact().fit([reference])
    state, knots = matcher.reference_, matcher.tables_
    assert own_levels(state, knots, np.dtype(np.uint8))
    assert not own_levels(state, knots, np.dtype(np.uint16))  # other levels: rounded
    assert not own_levels(state, knots, np.dtype(np.float32))
    floats = exact().fit([reference / np.float32(255)])
    assert not own_levels(floats.reference_, floats.tables_, np.dtype(np.uint8))


# ------------------------------------------------------ masks, strength, API
@pytest.mark.parametrize("ordering", ORDERINGS)
def test_mask_only_masked_pixels_counted_and_changed(rng, ordering):
    source = load("astronaut")
    reference = load("coffee")
    mask = np.zeros(source.shape[:2], dtype=bool)
    mask[100:300, 50:450] = rng.random((200, 400)) < 0.7
    out = match_histograms(source, reference, method="exact", mask=mask, ordering=ordering)
    np.testing.assert_array_equal(out[~mask], source[~mask])
    n = int(mask.sum())
    for c in range(3):
        np.testing.assert_array_equal(
            hist(out[:, :, c][mask]), target_counts(hist(reference[:, :, c]), n)
        )
        assert_order_kept(source[:, :, c][mask], out[:, :, c][mask])


def test_strength_zero_returns_the_input_and_half_blends():
    source, reference = load("camera"), load("moon")
    np.testing.assert_array_equal(
        match_histograms(source, reference, method="exact", strength=0.0), source
    )
    full = match_histograms(source, reference, method="exact").astype(np.float64)
    half = match_histograms(source, reference, method="exact", strength=0.5)
    expected = np.rint(source + 0.5 * (full - source)).astype(np.uint8)
    np.testing.assert_array_equal(half, expected)
    f = (source / 255).astype(np.float32)
    out = match_histograms(f, (reference / 255).astype(np.float32), method="exact", strength=0)
    np.testing.assert_array_equal(out, f)


def test_state_is_shared_with_per_channel():
    reference, source = load("coffee"), load("astronaut")[:100, :100]
    matcher = HistogramMatcher(method="per_channel").fit(reference[None])
    via_per_channel = matcher.set_params(method="exact").transform(source[None])
    np.testing.assert_array_equal(
        via_per_channel, exact().fit(reference[None]).transform(source[None])
    )
    back = exact().fit(reference[None]).set_params(method="per_channel")
    np.testing.assert_array_equal(
        back.transform(source[None]),
        HistogramMatcher().fit(reference[None]).transform(source[None]),
    )


def test_containers_lists_and_pil(rng):
    reference = Image.fromarray(load("coffee"))
    source = Image.fromarray(load("chelsea"))
    out = match_histograms(source, reference, method="exact")
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == source.size
    images = [load("astronaut")[:50, :60], load("chelsea")[:70, :20]]
    outs = exact().fit([load("coffee")]).transform(images)
    assert isinstance(outs, list) and [o.shape for o in outs] == [i.shape for i in images]
    for o, i in zip(outs, images):
        n = i.shape[0] * i.shape[1]
        np.testing.assert_array_equal(
            hist(o[:, :, 0]), target_counts(hist(load("coffee")[:, :, 0]), n)
        )


def test_bad_ordering_is_refused():
    with pytest.raises(ValueError, match="ordering"):
        exact(ordering="lexicographic").fit(np.zeros((1, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="ordering must be one of"):
        strict_order(np.zeros((4, 4), dtype=np.uint8), None, "random")


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_large_image_counts_are_exact(ordering):
    # 2048 x 2048: the level-grouped sort at a size of several buckets per level
    source = np.tile(load("astronaut")[:, :, 0], (4, 4))
    reference = load("coffee")[:, :, 1]
    out = match_histograms(source, reference, method="exact", ordering=ordering)
    np.testing.assert_array_equal(hist(out), target_counts(hist(reference), source.size))


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("size", [256, 512])
def test_work_memory_stays_within_eight_times_the_image(ordering, size):
    # the ordering's tiles, blocks and buckets are a fraction of the channel: a small
    # image does not pay for fixed-size work arrays
    import tracemalloc

    import cv2

    image = cv2.resize(load("astronaut"), (size, size))
    m = exact(ordering=ordering).fit([load("coffee")])
    m.transform(image[None])
    tracemalloc.start()
    try:
        m.transform(image[None])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 8 * image.nbytes


@pytest.mark.parametrize("ordering", ["variational", "local_means"])
@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_small_images_matched_together_get_the_outputs_they_get_alone(
    monkeypatch, ordering, strength
):
    # small images are matched a run at a time (their partitions computed together):
    # each must come out as when it is transformed alone, masked or not, mixed with
    # larger images, with 8-bit and float references
    from histmatch_ml.methods import exact

    monkeypatch.setattr(exact, "RUN", 3)
    rng = np.random.default_rng(4)
    refs = [rng.integers(0, 256, (30, 40, 3), dtype=np.uint8) for _ in range(2)]
    shapes = [(32, 32), (8, 8), (70, 70), (1, 30), (64, 64), (32, 32), (5, 7)] * 2
    images = [
        rng.integers(0, 256, (*s, 3), dtype=np.uint8) // (1 + i % 3) for i, s in enumerate(shapes)
    ]
    masks = [rng.random(s) < 0.7 for s in shapes]
    for mask in masks:
        mask[0, 0] = True  # (a mask must select a pixel)
    for fitted in (refs, [r / 255.0 for r in refs]):
        m = HistogramMatcher(method="exact", ordering=ordering, strength=strength).fit(fitted)
        for kwargs in ({}, {"mask": masks}):
            together = m.transform(images, **kwargs)
            for i, got in enumerate(together):
                alone = {"mask": [masks[i]]} if kwargs else {}
                np.testing.assert_array_equal(got, m.transform([images[i]], **alone)[0])


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_threads_left_over_match_the_channels_of_an_image_at_once(
    monkeypatch, pool_sizes, ordering, strength
):
    # with more threads than images, each image's channels are ordered and matched in a
    # pool of their own: the same output as one channel at a time, for 8-bit and float
    # images, with masks; a batch of as many images as threads uses no channel pool
    from histmatch_ml.methods import exact as exact_module

    pools = pool_sizes(exact_module)
    monkeypatch.setattr(exact_module, "THREADED_PIXELS", 96 * 80)
    photo = load("astronaut")[100:196, 150:230]  # (96x80: above the small-image size)
    mask = np.random.default_rng(5).random(photo.shape[:2]) < 0.8
    ref = load("coffee")
    for image, fitted in ((photo, ref), (photo / 255.0, ref / 255.0), (photo, ref / 255.0)):
        serial = exact(ordering=ordering, strength=strength).fit([fitted])
        threaded = exact(ordering=ordering, strength=strength, n_jobs=3).fit([fitted])
        for kwargs in ({}, {"mask": [mask]}):
            pools.clear()
            got = threaded.transform([image], **kwargs)[0]
            assert pools == [3]
            np.testing.assert_array_equal(got, serial.transform([image], **kwargs)[0])
    pools.clear()
    threaded.transform([photo] * 3)
    threaded.transform([photo[1:]])  # (below THREADED_PIXELS)
    assert pools == []
    kw = {"method": "exact", "ordering": ordering, "strength": strength}
    np.testing.assert_array_equal(
        match_histograms(photo, ref, n_jobs=2, **kw), match_histograms(photo, ref, **kw)
    )
    assert pools == [2]
    # one channel: the threads order it (its keys' tiles and its buckets)
    from histmatch_ml import _ordering

    pool_sizes(_ordering)
    pools.clear()
    grey = np.ascontiguousarray(photo[..., 1])
    np.testing.assert_array_equal(
        match_histograms(grey, ref[..., 1], n_jobs=2, **kw),
        match_histograms(grey, ref[..., 1], **kw),
    )
    assert pools and set(pools) == {2}
