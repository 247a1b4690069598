"""Strict orderings (``histmatch_ml._ordering``) and ``metrics.strict_ordering_ratio``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from conftest import GREY, load
from histmatch_ml import _ordering
from histmatch_ml.metrics import strict_ordering_ratio

ORDERINGS = ("variational", "local_means")

# ---------------------------------------------------------------- references
#: ring offsets of Coltuc et al., written out by hand (not derived from norms)
RING_OFFSETS = [
    [(-1, 0), (1, 0), (0, -1), (0, 1)],
    [(-1, -1), (-1, 1), (1, -1), (1, 1)],
    [(-2, 0), (2, 0), (0, -2), (0, 2)],
    [(-2, -1), (-2, 1), (2, -1), (2, 1), (-1, -2), (1, -2), (-1, 2), (1, 2)],
    [(-2, -2), (-2, 2), (2, -2), (2, 2)],
]


def naive_ring_sums(plane: np.ndarray) -> list[np.ndarray]:
    """Ring sums by explicit shifts of a mirrored (``symmetric``) padding."""
    h, w = plane.shape
    padded = np.pad(plane.astype(np.float64), 2, mode="symmetric")
    return [
        sum(padded[2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w] for dy, dx in ring)
        for ring in RING_OFFSETS
    ]


def naive_local_means_order(levels: np.ndarray) -> np.ndarray:
    """(value, ring sums..., position) order by a stable six-key lexsort."""
    rings = naive_ring_sums(levels)
    keys = [r.ravel() for r in rings[::-1]] + [levels.ravel()]
    return np.lexsort(keys)


def naive_variational(f: np.ndarray, n_iter=5, beta=0.1, alpha=0.05) -> np.ndarray:
    """Nikolova-Steidl iterations written per neighbour direction on 2-D arrays."""
    f = f.astype(np.float64)
    u = f.copy()
    for _ in range(n_iter):
        t = np.zeros_like(u)
        for axis in (0, 1):
            for shift in (1, -1):
                neighbour = np.roll(u, shift, axis=axis)
                diff = u - neighbour
                valid = np.ones_like(u, dtype=bool)  # no wrap-around neighbours
                edge = [slice(None), slice(None)]
                edge[axis] = 0 if shift == 1 else -1
                valid[tuple(edge)] = False
                t += np.where(valid, diff / (alpha + np.abs(diff)), 0.0)
        y = beta * t
        u = f - alpha * y / (1 - np.abs(y))
    return u - f


def ties_of(order: np.ndarray, *keys: np.ndarray) -> np.ndarray:
    """Mask of the pixels (in ``order``) whose keys equal a neighbour's in that order."""
    same = np.ones(len(order) - 1, dtype=bool)
    for key in keys:
        k = key.ravel()[order]
        same &= k[1:] == k[:-1]
    tied = np.zeros(len(order), dtype=bool)
    tied[1:] |= same
    tied[:-1] |= same
    return tied


small_uint8 = arrays(
    np.uint8,
    st.tuples(st.integers(1, 12), st.integers(1, 12)),
    elements=st.integers(0, 4),  # few levels: plenty of ties to break
)


# ------------------------------------------------------------------ ring sums
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float64])
def test_ring_sums_match_explicit_shifts(rng, dtype):
    plane = rng.integers(0, 200, size=(13, 9)).astype(dtype)
    for ours, naive in zip(_ordering.ring_sums(plane), naive_ring_sums(plane)):
        np.testing.assert_array_equal(ours, naive)


def test_ring_kernels_have_the_papers_sizes():
    # cross 5, square 9, diamond 13, 5x5 without corners 21, 5x5 square 25
    sizes = np.cumsum([1, *(int(k.sum()) for k in _ordering._RINGS)])
    assert sizes.tolist() == [1, 5, 9, 13, 21, 25]


# -------------------------------------------------------------- local means
@settings(max_examples=60, deadline=None)
@given(small_uint8)
def test_uint8_packed_key_equals_six_key_lexsort(image):
    np.testing.assert_array_equal(
        _ordering.strict_order(image, ordering="local_means"), naive_local_means_order(image)
    )


@pytest.mark.parametrize("name", ["camera", "moon"])
def test_local_means_on_photos_equals_lexsort(name):
    image = load(name)[:96, :128]
    np.testing.assert_array_equal(
        _ordering.strict_order(image, ordering="local_means"), naive_local_means_order(image)
    )


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32, np.float64, np.int32])
def test_local_means_fallbacks_order_like_uint8(rng, dtype):
    # 16-bit ring sums overflow one 64-bit key (dense ranks take over); floats
    # and wide integers rank every key: the order must not change
    image = rng.integers(0, 5, size=(40, 30), dtype=np.uint8)
    offset = -2 if dtype in (np.int16, np.int32) else 0
    converted = image.astype(dtype) + np.asarray(offset, dtype=dtype)
    np.testing.assert_array_equal(
        _ordering.strict_order(converted, ordering="local_means"),
        _ordering.strict_order(image, ordering="local_means"),
    )


def test_uint16_local_means_uses_all_16_bits(rng):
    image = (rng.integers(0, 4, size=(30, 20)) * 20000 + 5).astype(np.uint16)
    np.testing.assert_array_equal(
        _ordering.strict_order(image, ordering="local_means"), naive_local_means_order(image)
    )


# -------------------------------------------------------------- variational
def test_variational_correction_matches_naive_iterations(rng):
    image = rng.integers(0, 6, size=(17, 23), dtype=np.uint8)
    np.testing.assert_allclose(
        _ordering.variational_correction(image), naive_variational(image), rtol=0, atol=1e-15
    )


@pytest.mark.parametrize("shape", [(1, 9), (9, 1), (1, 1), (2, 2)])
def test_variational_correction_on_thin_images(rng, shape):
    image = rng.integers(0, 6, size=shape, dtype=np.uint8)
    np.testing.assert_allclose(
        _ordering.variational_correction(image), naive_variational(image), atol=1e-15
    )


def test_variational_correction_never_crosses_a_level(rng):
    # |u - f| < alpha * 4 beta / (1 - 4 beta) = 1/30 level (paper's parameters)
    image = rng.integers(0, 256, size=(64, 64), dtype=np.uint8)
    assert np.abs(_ordering.variational_correction(image)).max() < 1 / 30


@settings(max_examples=60, deadline=None)
@given(small_uint8)
def test_variational_order_is_value_then_correction_then_position(image):
    order = _ordering.strict_order(image, ordering="variational")
    value = image.ravel()[order].astype(np.int64)
    correction = _ordering.variational_correction(image).ravel()[order]
    assert sorted(order.tolist()) == list(range(image.size))
    dv = np.diff(value)
    assert (dv >= 0).all()
    same_value = dv == 0
    dc = np.diff(correction)
    # the key keeps the top 56 bits of the float64 correction: values closer than
    # ~2**-44 relative (float64 round-off) are tied and go by position
    assert (dc[same_value] >= -(2.0**-40) * np.abs(correction).max()).all()
    same_key = same_value & (dc == 0)
    assert (np.diff(order)[same_key] > 0).all()


@pytest.mark.parametrize("dtype", [np.uint16, np.float64])
def test_variational_orders_other_dtypes_like_uint8(rng, dtype):
    image = rng.integers(0, 256, size=(40, 30), dtype=np.uint8)
    image[0, 0], image[-1, -1] = 0, 255  # full range: floats are scaled by 255 / 255
    np.testing.assert_array_equal(
        _ordering.strict_order(image.astype(dtype), ordering="variational"),
        _ordering.strict_order(image, ordering="variational"),
    )


def test_variational_float_scale_does_not_matter(rng):
    image = rng.integers(0, 6, size=(20, 20)).astype(np.float64)
    np.testing.assert_array_equal(
        _ordering.strict_order(image / 5.0 - 3.0), _ordering.strict_order(image)
    )


# ------------------------------------------- channels without exact levels
def dyadic_image(rng, shape, tied_fraction):
    """float64 of many distinct dyadic values (ring sums exact in any order), some tied."""
    image = rng.integers(0, 2**20, size=shape) / 256.0
    tied = rng.random(shape) < tied_fraction
    image[tied] = rng.integers(0, 4, size=int(tied.sum())) * 7.0  # a few values, often
    return image


def naive_value_first_order(image: np.ndarray, ordering: str, mask=None) -> np.ndarray:
    """(value, ordering key, position) by one stable lexsort of the masked pixels."""
    pixels = np.arange(image.size) if mask is None else np.flatnonzero(mask)
    value = image.ravel()[pixels]
    if ordering == "local_means":
        keys = [r.ravel()[pixels] for r in naive_ring_sums(image)]
    else:  # the correction's top 64 - bits bits, bits those of the values' dense rank
        bits = max((len(np.unique(value)) - 1).bit_length(), 1)
        c = _ordering.variational_correction(image).ravel()[pixels].view(np.uint64)
        c = np.where(c >> np.uint64(63) == 1, ~c, c | np.uint64(1 << 63))
        keys = [c >> np.uint64(bits)]
    return pixels[np.lexsort([*keys[::-1], value])]


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("tied_fraction", [0.0, 0.02, 0.6, 1.0])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_float_order_is_value_then_key_within_ties(rng, ordering, tied_fraction, dtype):
    # float channels are sorted by value once, and only runs of equal values by the key
    image = dyadic_image(rng, (37, 53), tied_fraction).astype(dtype)
    expected = naive_value_first_order(image.astype(np.float64), ordering)
    np.testing.assert_array_equal(_ordering.strict_order(image, ordering=ordering), expected)
    mask = rng.random(image.shape) < 0.5
    np.testing.assert_array_equal(
        _ordering.strict_order(image, mask, ordering),
        naive_value_first_order(image.astype(np.float64), ordering, mask),
    )


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_float_unique_fraction_counts_ties_like_lexsort(rng, ordering):
    image = dyadic_image(rng, (30, 40), 0.5)
    image[:6] = 7.0  # flat rows: the key ties too
    order = naive_value_first_order(image, ordering)
    if ordering == "local_means":
        keys = naive_ring_sums(image)
    else:
        bits = max((len(np.unique(image)) - 1).bit_length(), 1)
        c = _ordering.variational_correction(image).ravel().view(np.uint64)
        c = np.where(c >> np.uint64(63) == 1, ~c, c | np.uint64(1 << 63))
        keys = [c >> np.uint64(bits)]
    expected = 1 - ties_of(order, image, *keys).mean()
    assert _ordering.unique_fraction(image, ordering=ordering) == pytest.approx(expected)


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_wide_integers_are_ordered_by_their_exact_values(rng, ordering, dtype):
    # 2**60 + k: equal in float64, distinct as integers; the brighter pixel is never
    # ranked below a darker one
    image = (rng.permutation(48).reshape(6, 8).astype(np.uint64) + np.uint64(2**60)).astype(dtype)
    order = _ordering.strict_order(image, ordering=ordering)
    np.testing.assert_array_equal(order, np.argsort(image.ravel()))


def test_negative_zero_is_zero():
    image = np.array([[0.0, -0.0, 0.0], [-0.0, 1.0, -0.0]])
    order = _ordering.strict_order(image, ordering="variational")
    expected = naive_value_first_order(np.abs(image), "variational")
    np.testing.assert_array_equal(order, expected)


# --------------------------------------------------------- common behaviour
@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_flat_channel_is_ordered_by_position(ordering, dtype):
    flat = np.full((7, 11), 3, dtype=dtype)
    np.testing.assert_array_equal(_ordering.strict_order(flat, ordering=ordering), np.arange(77))
    assert _ordering.unique_fraction(flat, ordering=ordering) == 0.0


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_order_is_deterministic_and_input_untouched(ordering):
    image = load("coins")[:64, :64]
    before = image.copy()
    first = _ordering.strict_order(image, ordering=ordering)
    second = _ordering.strict_order(image.copy(), ordering=ordering)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_mask_orders_only_masked_pixels(rng, ordering):
    image = rng.integers(0, 4, size=(20, 24), dtype=np.uint8)
    mask = rng.random((20, 24)) < 0.4
    order = _ordering.strict_order(image, mask, ordering)
    assert sorted(order.tolist()) == np.flatnonzero(mask).tolist()
    # the masked pixels keep the relative order they have in the full ordering
    full = _ordering.strict_order(image, ordering=ordering)
    np.testing.assert_array_equal(order, full[mask.ravel()[full]])


def test_unique_fraction_counts_tied_pixels():
    image = np.zeros((8, 8), dtype=np.uint8)
    image[0, 0] = 9  # the only 9: untied; every other pixel has a mirror twin or more
    image[7, 7] = 9
    assert _ordering.unique_fraction(image, ordering="local_means") == 0.0
    image[7, 7] = 8
    # now the two corners are unique; the rest of the image is not symmetric
    fraction = _ordering.unique_fraction(image, ordering="local_means")
    order = naive_local_means_order(image)
    expected = 1 - ties_of(order, image, *naive_ring_sums(image)).mean()
    assert fraction == pytest.approx(expected)
    assert 2 / 64 <= fraction < 1


@pytest.mark.parametrize("name", GREY)
def test_variational_leaves_no_more_ties_than_local_means(name):
    image = load(name)[:128, :128]
    lm = _ordering.unique_fraction(image, ordering="local_means")
    var = _ordering.unique_fraction(image, ordering="variational")
    assert var >= lm
    assert var >= 0.999


def test_errors_name_the_parameter():
    with pytest.raises(ValueError, match="ordering must be one of"):
        _ordering.strict_order(np.zeros((3, 3)), ordering="random")
    with pytest.raises(ValueError, match=r"2-D .* or 3-D"):  # (3-D: volumes)
        _ordering.strict_order(np.zeros((3, 3, 3, 3)))
    with pytest.raises(ValueError, match="mask"):
        _ordering.strict_order(np.zeros((3, 3)), np.ones((3, 4), dtype=bool))
    with pytest.raises(ValueError, match="mask"):
        _ordering.strict_order(np.zeros((3, 3)), np.ones((3, 3)))


# ------------------------------------------------------ strict_ordering_ratio
def test_strict_ordering_ratio_matches_naive_count():
    image = load("camera")[:80, :80]
    order = naive_local_means_order(image)
    expected = 1 - ties_of(order, image, *naive_ring_sums(image)).mean()
    assert strict_ordering_ratio(image, ordering="local_means") == pytest.approx(expected)
    assert strict_ordering_ratio(image, "local_means") < 1.0


def test_strict_ordering_ratio_inputs():
    image = load("camera")[:64, :64]
    ratio = strict_ordering_ratio(image, ordering="local_means")
    assert strict_ordering_ratio(Image.fromarray(image), ordering="local_means") == ratio
    assert strict_ordering_ratio(image[:, :, None], ordering="local_means") == ratio
    mask = np.zeros((64, 64), dtype=bool)
    mask[:10, :10] = True
    assert strict_ordering_ratio(image, "local_means", mask=mask) == _ordering.unique_fraction(
        image, mask, "local_means"
    )
    assert strict_ordering_ratio(np.zeros((5, 5), dtype=np.float32)) == 0.0


def test_strict_ordering_ratio_errors():
    with pytest.raises(ValueError, match="one channel"):
        strict_ordering_ratio(load("astronaut"))
    with pytest.raises(ValueError, match="ordering must be one of"):
        strict_ordering_ratio(np.zeros((4, 4)), ordering="lexicographic")
    with pytest.raises(TypeError, match="dtype"):
        strict_ordering_ratio(np.zeros((4, 4), dtype=complex))
    with pytest.raises(ValueError, match="mask"):
        strict_ordering_ratio(np.zeros((4, 4)), mask=np.ones((4, 5), dtype=bool))


# ------------------------------------------- sorting by level (vs a lexsort)
def reference_order(image: np.ndarray, ordering: str) -> np.ndarray:
    """The strict order by one global stable ``np.lexsort`` of the full keys (slow, simple)."""
    levels = image.astype(np.int64).ravel()
    if ordering == "local_means":
        keys = [r.ravel() for r in naive_ring_sums(image)[::-1]]
    else:  # the top 64 - bits bits of the float64 correction's sort bits
        bits = 8 * image.dtype.itemsize
        c = _ordering.variational_correction(image).ravel().view(np.uint64)
        c = np.where(c >> np.uint64(63) == 1, ~c, c | np.uint64(1 << 63))
        keys = [c >> np.uint64(bits)]
    return np.lexsort([*keys, levels])


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize(
    "dtype, n_levels, shape",
    [(np.uint8, 3, (300, 280)), (np.uint8, 256, (700, 400)), (np.uint16, 5, (90, 70))],
)
def test_level_grouped_sort_equals_global_lexsort(
    rng, monkeypatch, ordering, dtype, n_levels, shape
):
    # small blocks, buckets and strips, so every seam of the grouped sort is crossed
    monkeypatch.setattr(_ordering, "_BLOCK", 1000)
    monkeypatch.setattr(_ordering, "_BUCKET", 3000)
    monkeypatch.setattr(_ordering, "_STRIP", 5000)
    image = rng.integers(0, n_levels, size=shape).astype(dtype)
    image[: shape[0] // 3] = image[: shape[0] // 3] // 2  # flat-ish rows: many tied keys
    expected = reference_order(image, ordering)
    order = _ordering.strict_order(image, ordering=ordering)
    np.testing.assert_array_equal(order, expected)
    mask = rng.random(shape) < 0.5
    np.testing.assert_array_equal(
        _ordering.strict_order(image, mask, ordering), expected[mask.ravel()[expected]]
    )


def test_grouped_unique_fraction_counts_ties_like_lexsort(rng, monkeypatch):
    monkeypatch.setattr(_ordering, "_BUCKET", 500)
    image = rng.integers(0, 3, size=(60, 50), dtype=np.uint8)
    order = naive_local_means_order(image)
    expected = 1 - ties_of(order, image, *naive_ring_sums(image)).mean()
    assert _ordering.unique_fraction(image, ordering="local_means") == pytest.approx(expected)


def test_strict_order_index_dtypes_are_the_documented_ones():
    levels = np.arange(25, dtype=np.uint16).reshape(5, 5)
    mask = levels % 2 == 0
    assert _ordering.strict_order(levels.astype(np.uint8)).dtype == np.int32
    assert _ordering.strict_order(levels, mask).dtype == np.int32
    assert _ordering.strict_partition(levels, [3], mask).dtype == np.int32
    floats = levels / np.float32(7)
    assert _ordering.strict_order(floats).dtype == np.intp
    assert _ordering.strict_partition(floats, [3], mask).dtype == np.intp


#: keys of ``n`` pixels: ``n_top`` values shifted up by ``top`` bits, plus ``low_bits`` random
#: bits; (top, low_bits, n_top, seed) as hypothesis draws them
WIDE_KEYS = (st.integers(0, 63), st.integers(0, 40), st.integers(1, 8), st.integers(0, 2**32 - 1))


def wide_keys(n: int, top: int, low_bits: int, n_top: int, seed: int) -> np.ndarray:
    """uint64 keys spanning more bits than fit beside a position, or narrow ones."""
    rng = np.random.default_rng(seed)
    high = rng.integers(0, n_top, n, dtype=np.uint64) << np.uint64(top)
    return high | rng.integers(0, 2**low_bits, n, dtype=np.uint64)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 3000), *WIDE_KEYS, st.booleans())
def test_sort_strict_orders_by_key_then_position(n, top, low_bits, n_top, seed, low_ties):
    # keys spanning more bits than fit beside a position (a few top values, many low
    # bits: sorted by their top bits, then repaired or sorted low bits first) and narrow ones
    key = wide_keys(n, top, low_bits, n_top, seed)
    order, tied = _ordering._sort_strict(key.copy(), low_ties)
    expected = np.lexsort((np.arange(n), key))
    np.testing.assert_array_equal(order, expected)
    np.testing.assert_array_equal(tied, key[expected][1:] == key[expected][:-1])


@pytest.mark.parametrize("shift", [1, 8, 9, 16, 17, 20])
def test_two_pass_order_is_the_key_then_position_order(rng, shift):
    # low bits sorted by a radix sort (up to 16 of them) or by a packed 64-bit sort;
    # positions fit 20 bits, so the top bits take the other 44 and keys tie often
    n, pos_bits = 3000, 20
    top = rng.integers(0, 5, n, dtype=np.uint64) << np.uint64(64 - pos_bits - 3)
    word = (top << np.uint64(shift)) | rng.integers(
        0, min(4, 2**shift), n, dtype=np.uint64
    ) << np.uint64(max(shift - 2, 0))
    order = _ordering._two_pass_order(word.copy(), shift, pos_bits)
    assert order.dtype == np.intp
    np.testing.assert_array_equal(order, np.lexsort((np.arange(n), word)))


# ------------------------------------------------------- partitions at cuts
#: how strict_partition orders: all pixels partitioned at once (small channels), buckets of
#: split levels with the unsplit levels between close ones, buckets of split levels only
PARTITION_PATHS = ("at once", "buckets", "buckets without gaps")


def use_partition_path(monkeypatch, path: str) -> None:
    """Make strict_partition take ``path`` (one of PARTITION_PATHS) whatever the size."""
    monkeypatch.setattr(_ordering, "_SMALL", 10**9 if path == "at once" else 0)
    if path == "buckets without gaps":
        monkeypatch.setattr(_ordering, "_GAP", 0)


def assert_partitioned(got: np.ndarray, order: np.ndarray, cuts) -> None:
    """``got`` is a permutation of ``order`` holding the same pixels before every cut.

    Checked as: every pixel lies between the same two cuts in ``got`` as in
    ``order`` (the pixels before each cut are then the same sets).
    """
    np.testing.assert_array_equal(np.sort(got), np.sort(order))
    cuts = np.asarray(cuts, dtype=np.int64)
    rank = np.empty(int(order.max()) + 1 if len(order) else 0, dtype=np.int64)
    rank[order] = np.arange(len(order))
    between = np.searchsorted(cuts, np.arange(len(got)), side="right")  # cuts at or before
    np.testing.assert_array_equal(between, np.searchsorted(cuts, rank[got], side="right"))


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 3000), *WIDE_KEYS, st.booleans(), st.integers(1, 40))
def test_select_strict_is_the_sort_at_the_cuts(n, top, low_bits, n_top, seed, low_ties, n_cuts):
    # keys wider than fit beside a position split runs of equal top bits at the cuts, which
    # are then put back in (key, position) order; narrow keys are partitioned as they are
    key = wide_keys(n, top, low_bits, n_top, seed)
    kth = np.unique(np.random.default_rng(seed + 1).integers(1, n, n_cuts))
    got = _ordering._select_strict(key.copy(), kth, low_ties)
    assert_partitioned(got, np.lexsort((np.arange(n), key)), kth)


def test_select_strict_repairs_a_run_split_by_a_cut():
    # one key of 61 bits beside 12 bits of position: 9 low bits are dropped, so the others
    # (0 .. 255) share their top bits, and a partition by (top bits, position) alone would
    # put the first 100 positions first
    n = 4000
    key = np.arange(n, dtype=np.uint64)[::-1] % np.uint64(256)
    key[-1] = np.uint64(2**60)
    got = _ordering._select_strict(key.copy(), np.array([100, 2000]))
    assert_partitioned(got, np.lexsort((np.arange(n), key)), [100, 2000])


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize(
    "dtype, n_levels, shape",
    [(np.uint8, 256, (300, 280)), (np.uint8, 4, (120, 90)), (np.int16, 900, (80, 70))],
)
@pytest.mark.parametrize("n_cuts", [0, 1, 7, 255, 5000])
@pytest.mark.parametrize("path", PARTITION_PATHS)
def test_strict_partition_holds_the_strict_order_s_pixels_before_every_cut(
    rng, monkeypatch, ordering, dtype, n_levels, shape, n_cuts, path
):
    # small buckets: runs of split levels are cut into several
    monkeypatch.setattr(_ordering, "_BUCKET", 2000)
    use_partition_path(monkeypatch, path)
    image = rng.integers(0, n_levels, size=shape) - (n_levels // 2 if dtype == np.int16 else 0)
    image = image.astype(dtype)
    image[: shape[0] // 3] = image[: shape[0] // 3] // 2  # flat-ish rows: big levels, ties
    for mask in (None, rng.random(shape) < 0.6):
        n = image.size if mask is None else int(mask.sum())
        cuts = np.unique(rng.integers(0, n + 1, n_cuts))
        order = _ordering.strict_order(image, mask, ordering)
        got = _ordering.strict_partition(image, cuts, mask, ordering)
        assert got.dtype == order.dtype
        assert_partitioned(got, order, cuts)


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("path", PARTITION_PATHS)
def test_strict_partition_of_volumes_and_floats(rng, monkeypatch, ordering, path):
    use_partition_path(monkeypatch, path)
    volume = rng.integers(0, 6, size=(7, 20, 18)).astype(np.uint8)
    cuts = np.array([1, 300, 301, 2000])
    order = _ordering.strict_order(volume, None, ordering)
    assert_partitioned(_ordering.strict_partition(volume, cuts, None, ordering), order, cuts)
    floats = np.round(rng.normal(size=(40, 30)), 1)  # no levels: the whole strict order
    np.testing.assert_array_equal(
        _ordering.strict_partition(floats, cuts[:-1], None, ordering),
        _ordering.strict_order(floats, None, ordering),
    )


def test_strict_partition_errors():
    image = np.zeros((4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="cuts must be a 1-D ascending"):
        _ordering.strict_partition(image, [5, 3])
    with pytest.raises(ValueError, match="cuts must be a 1-D ascending"):
        _ordering.strict_partition(image, [[1, 2]])
    with pytest.raises(ValueError, match=r"cuts must be ranks in 0 \.\. 16"):
        _ordering.strict_partition(image, [3, 17])
    with pytest.raises(ValueError, match=r"cuts must be ranks in 0 \.\. 2"):
        _ordering.strict_partition(image, [-1, 1], np.arange(16).reshape(4, 4) < 2)
    with pytest.raises(ValueError, match="ordering must be one of"):
        _ordering.strict_partition(image, [1], ordering="nope")


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_strict_partitions_are_the_channels_own_partitions(rng, monkeypatch, ordering):
    # small variational channels (8/16-bit) and local_means ones (uint8) are keyed together,
    # stacked (in runs: _STACK); every order must be the one strict_partition gives the
    # channel alone, masks and all, one-row and one-column channels too
    monkeypatch.setattr(_ordering, "_STACK", 3000)
    channels, cuts, masks = [], [], []
    for shape in [(32, 32), (1, 40), (40, 1), (7, 9), (64, 64), (70, 70), (32, 32)]:
        for dtype, top in [(np.uint8, 256), (np.uint16, 65536), (np.uint8, 3)]:
            for k in range(3):
                channel = rng.integers(0, top, size=shape).astype(dtype)
                mask = None if k < 2 else rng.random(shape) < 0.5
                if mask is not None:
                    mask.flat[0] = True
                n = channel.size if mask is None else int(mask.sum())
                channels.append(channel)
                cuts.append(np.unique(rng.integers(0, n + 1, size=int(rng.integers(0, 30)))))
                masks.append(mask)
    channels.append(rng.random((20, 20)))  # (a float channel: strict_partition's own path)
    cuts.append(np.array([5, 200]))
    masks.append(None)
    got = _ordering.strict_partitions(channels, cuts, masks, ordering)
    for channel, cut, mask, order in zip(channels, cuts, masks, got):
        expected = _ordering.strict_partition(channel, cut, mask, ordering)
        assert order.dtype == expected.dtype
        np.testing.assert_array_equal(order, expected)
    with pytest.raises(ValueError, match="ascending"):
        _ordering.strict_partitions([channels[0]], [np.array([5, 2])], [None], ordering)


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_threads_give_the_same_orders_and_partitions(rng, monkeypatch, pool_sizes, ordering):
    # keys computed tile by tile and buckets ordered in threads (n_threads): the very arrays
    # of one thread, for 2-D 8/16-bit channels and volumes, masked or not
    pools = pool_sizes(_ordering)
    monkeypatch.setattr(_ordering, "_BUCKET", 1000)  # (many buckets to share out)
    channels = [
        (rng.integers(0, 12, size=(120, 90)) * 20).astype(np.uint8),
        rng.integers(0, 256, size=(120, 90)).astype(np.uint8),
        (rng.integers(0, 300, size=(100, 80)) * 200).astype(np.uint16),
        rng.integers(0, 6, size=(12, 30, 25)).astype(np.uint8),
    ]
    for channel in channels:
        for mask in (None, rng.random(channel.shape) < 0.6):
            n = channel.size if mask is None else int(mask.sum())
            cuts = np.unique(rng.integers(0, n + 1, 40))
            pools.clear()
            threaded = _ordering.strict_partition(channel, cuts, mask, ordering, n_threads=3)
            assert pools and set(pools) <= {2, 3}
            alone = _ordering.strict_partition(channel, cuts, mask, ordering)
            np.testing.assert_array_equal(threaded, alone)
            np.testing.assert_array_equal(
                _ordering.strict_order(channel, mask, ordering, n_threads=3),
                _ordering.strict_order(channel, mask, ordering),
            )
