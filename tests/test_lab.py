"""``method="lab"``: joint CIELAB matching, and ``metrics.sliced_wasserstein``."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from conftest import RGB_PAIRS, load
from histmatch_ml import HistogramMatcher, _color, _reference, match_histograms
from histmatch_ml.methods import lab
from histmatch_ml.metrics import sliced_wasserstein, speckle, wasserstein_1d

#: the natural image pairs of the quality test (half size, to keep the tests fast)
QUALITY_PAIRS = [*RGB_PAIRS, ("rocket", "chelsea"), ("immunohistochemistry", "coffee")]


def half(name: str) -> np.ndarray:
    return np.ascontiguousarray(load(name)[::2, ::2])


@pytest.fixture(scope="module")
def src() -> np.ndarray:
    return half("astronaut")


@pytest.fixture(scope="module")
def ref() -> np.ndarray:
    return half("coffee")


@pytest.fixture(scope="module")
def fitted(ref) -> HistogramMatcher:
    return HistogramMatcher("lab", random_state=0).fit(ref[None])


# ----------------------------------------------------------------------- quality
@pytest.mark.parametrize(("source", "reference"), QUALITY_PAIRS)
def test_joint_beats_per_channel_and_marginal(source, reference):
    s, r = half(source), half(reference)
    joint = match_histograms(s, r, method="lab", random_state=0)
    marginal = match_histograms(s, r, method="lab", lab_mode="marginal", random_state=0)
    per_channel = match_histograms(s, r, method="per_channel")
    d_joint = sliced_wasserstein(joint, r)
    d_marginal = sliced_wasserstein(marginal, r)
    d_per_channel = sliced_wasserstein(per_channel, r)
    assert d_joint <= 0.6 * d_per_channel
    assert d_joint <= 0.5 * d_marginal
    assert d_joint <= 0.15 * sliced_wasserstein(s, r)


@pytest.mark.parametrize(("source", "reference"), QUALITY_PAIRS)
def test_smooth_regions_stay_smooth_and_colours_follow_the_reference(source, reference):
    # the yardstick is per-channel matching, a smooth monotone map with the same contrast
    s, r = half(source), half(reference)
    per_channel = match_histograms(s, r, method="per_channel")
    matcher = HistogramMatcher("lab", random_state=0, n_iter=40).fit(r[None])
    # the defaults (the first rotations of the same draw), and the smoothed transport alone
    default = matcher.set_params(n_iter=12, n_refine=10).transform(s[None])[0]
    smoothed = matcher.set_params(n_iter=40, n_refine=0).transform(s[None])[0]
    d_per_channel = sliced_wasserstein(per_channel, r)
    for out in (default, smoothed):
        assert speckle(out, s) <= 1.25 * speckle(per_channel, s)
        assert sliced_wasserstein(out, r) <= 0.4 * d_per_channel


def test_the_lookup_reads_the_table_exactly_at_its_nodes():
    rng = np.random.default_rng(0)
    n = lab.SUMMARY_CELLS + 1
    table = rng.normal(size=(n, n, n, 3)).astype(np.float32)
    codes = rng.integers(0, 64, size=(50, 3)) * 4  # node k sits at code 4 k
    positions = lab.cell_positions(codes.astype(np.uint8)[None])
    nodes = codes // 4
    expected = table[nodes[:, 0], nodes[:, 2], nodes[:, 1]]  # (the table's axes are R, B, G)
    np.testing.assert_allclose(lab.look_up(table, positions)[0], expected, atol=1e-6)
    # halfway between two nodes along each axis: the mean of the two
    half_way = lab.cell_positions(np.array([[[2, 0, 0], [0, 2, 0], [0, 0, 2]]], np.uint8))
    got = lab.look_up(table, half_way)[0]
    np.testing.assert_allclose(got[0], table[[0, 1], 0, 0].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(got[1], table[0, 0, [0, 1]].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(got[2], table[0, [0, 1], 0].mean(axis=0), atol=1e-6)


def _summary_by_sorting(positions):
    """The summary of float32 positions by np.unique: the reference for summarise."""
    cells = positions.astype(np.intp)
    k = lab.SUMMARY_CELLS
    key = (cells[:, 0] * k + cells[:, 1]) * k + cells[:, 2]
    occupied, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    sums = np.stack([np.bincount(inverse, weights=positions[:, c]) for c in range(3)])
    return occupied, counts, (sums / counts).T.astype(np.float32)


@pytest.mark.parametrize("chunk", [2**18, 97])
def test_uint8_codes_and_bands_give_the_same_summary_as_the_positions(monkeypatch, chunk):
    """uint8 images are summarised from their codes (two packed bincounts), in any bands."""
    monkeypatch.setattr(lab, "_CODE_CHUNK", chunk)
    rng = np.random.default_rng(4)
    images = [
        load("astronaut"),
        rng.integers(0, 256, (300, 200, 3), dtype=np.uint8),
        np.full((700, 400, 3), 255, dtype=np.uint8),  # one cell: the largest sums
    ]
    for image in images:
        px = image.reshape(-1, 3)
        expected = _summary_by_sorting(lab.cell_positions(px))
        bands = [slice(r, r + 64) for r in range(0, image.shape[0], 64)]
        mask = rng.random(image.shape[:2]) < 0.7
        masked = _summary_by_sorting(lab.cell_positions(image[mask]))
        for got, want in [
            (lab.summarise([px]), expected),
            (lab.summarise(lab._Bands(image, None, bands)), expected),
            (lab.summarise(lab._Bands(image, mask, bands)), masked),
            (lab.summarise(lab._Bands(image.astype(np.float32) / 255, mask, bands)), masked),
        ]:
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a, b)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 300))
def test_colour_summary_keeps_counts_and_means(seed, n):
    rng = np.random.default_rng(seed)
    px = rng.integers(0, 256, size=(n, 3)).astype(np.uint8)
    px[: n // 2] = px[0]  # repeated colours
    positions = lab.cell_positions(px)
    cells, counts, means = lab.colour_summary(positions)
    assert counts.sum() == n and np.all(np.diff(cells) > 0)
    # every mean lies in its own cell, and weighted means give back the overall mean
    k = lab.SUMMARY_CELLS
    np.testing.assert_array_equal(
        np.floor(means).astype(int), np.stack(np.unravel_index(cells, (k, k, k)), axis=1)
    )
    np.testing.assert_allclose((means * counts[:, None]).sum(0) / n, positions.mean(0), rtol=1e-5)


def test_smoothed_field_moves_a_rigid_shift_unchanged_and_averages_nearby_moves(rng):
    x = rng.uniform([30, -20, -20], [70, 20, 20], size=(500, 3)).T.astype(np.float32)
    w = rng.uniform(1, 5, 500).astype(np.float32)
    shift = np.broadcast_to(np.array([[2.0], [-1.0], [0.5]], np.float32), x.shape)
    np.testing.assert_allclose(lab.smooth_displacements(x, shift, w), shift, atol=1e-3)
    # alternating moves between neighbours average out
    noisy = rng.choice([-3.0, 3.0], size=x.shape).astype(np.float32)
    smooth = lab.smooth_displacements(x, noisy, w)
    assert np.abs(smooth).mean() < 0.3 * np.abs(noisy).mean()


def test_field_blur_is_the_separable_gaussian_with_zeros_outside(rng):
    """The blur of the field grid equals a direct 3-D convolution of its slabs, zero-padded.

    The spare rows after each slab (zeros, as the splat leaves them) keep slabs apart.
    """
    z, y, x, reach = 7, 5, 6, lab._FIELD_RADIUS
    inner = rng.random((z, y, x, 4)).astype(np.float32)
    acc = np.zeros((z, y + reach, x, 4), dtype=np.float32)
    acc[:, :y] = inner
    got = lab._blur(acc)[:, :y]
    # direct: pad every axis with zeros, then a valid convolution along each axis in turn
    taps = lab._TAPS.astype(np.float64)
    expected = np.pad(inner.astype(np.float64), [(reach, reach)] * 3 + [(0, 0)])
    for axis in range(3):
        n = expected.shape[axis] - 2 * reach
        expected = sum(
            t * np.take(expected, np.arange(k, k + n), axis=axis) for k, t in enumerate(taps)
        )
    assert expected.shape == got.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_marginal_mode_matches_each_lab_channel(src, ref, fitted):
    lab_ref = _color.rgb_to_lab(ref).reshape(-1, 3)
    lab_src = _color.rgb_to_lab(src).reshape(-1, 3)
    # the kernel, before the way back to RGB: each LAB channel lands on the reference's
    colours, inverse, counts = lab.unique_colours(src.reshape(-1, 3))
    moved = lab.transfer(_color.rgb_to_lab(colours), counts, fitted.reference_, 20, joint=False)
    for c in range(3):
        assert wasserstein_1d(moved[inverse, c], lab_ref[:, c]) < 0.6  # CIELAB units
    # end to end, gamut clipping and 8-bit rounding included
    out = match_histograms(src, ref, method="lab", lab_mode="marginal", random_state=0)
    lab_out = _color.rgb_to_lab(out).reshape(-1, 3)
    for c in range(3):
        before = wasserstein_1d(lab_src[:, c], lab_ref[:, c])
        assert wasserstein_1d(lab_out[:, c], lab_ref[:, c]) < 0.15 * before


def test_more_iterations_get_closer(src, ref):
    # (the smoothed transport alone: refinement iterations take a few steps much closer)
    m = HistogramMatcher("lab", random_state=0, n_iter=30, n_refine=0).fit(ref[None])
    d30 = sliced_wasserstein(m.transform(src[None])[0], ref)
    d3 = sliced_wasserstein(m.set_params(n_iter=3).transform(src[None])[0], ref)
    assert d30 < 0.5 * d3


def test_image_matched_to_itself_barely_changes(src):
    out = match_histograms(src, src, method="lab", random_state=0)
    diff = np.abs(out.astype(int) - src)
    assert diff.mean() < 0.6
    assert np.mean(diff == 0) > 0.5


# ---------------------------------------------------------- determinism, consistency
def _digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def test_deterministic_given_random_state(src, ref):
    a = HistogramMatcher("lab", random_state=7).fit(ref[None])
    b = HistogramMatcher("lab", random_state=7).fit(ref[None])
    for key in ("rotations", "projected_quantiles"):
        np.testing.assert_array_equal(a.reference_[key], b.reference_[key])
    np.testing.assert_array_equal(a.transform(src[None]), b.transform(src[None]))
    c = HistogramMatcher("lab", random_state=8).fit(ref[None])
    assert not np.array_equal(a.reference_["rotations"], c.reference_["rotations"])


def test_identical_across_processes(src, ref):
    code = (
        "import hashlib, numpy as np\n"
        "from histmatch_ml import match_histograms\n"
        "from skimage import data\n"
        "s = np.ascontiguousarray(data.astronaut()[::2, ::2])\n"
        "r = np.ascontiguousarray(data.coffee()[::2, ::2])\n"
        "out = match_histograms(s, r, method='lab', random_state=3)\n"
        "print(hashlib.sha256(out.tobytes()).hexdigest())\n"
    )
    here = match_histograms(src, ref, method="lab", random_state=3)
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert there == _digest(here)


def _assert_colour_function(image: np.ndarray, out: np.ndarray) -> None:
    """Equal input colours have equal output colours."""
    px, po = image.reshape(-1, 3), out.reshape(-1, 3)
    colours, inverse = np.unique(px, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    first = np.zeros(len(colours), dtype=np.intp)
    first[inverse[::-1]] = np.arange(len(px))[::-1]  # one pixel of each colour
    np.testing.assert_array_equal(po, po[first][inverse])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_colour_consistent(dtype, ref, rng):
    base = half("chelsea")[::2, ::2]
    # repeat colours at scattered positions: a shuffled copy beside the original
    shuffled = rng.permutation(base.reshape(-1, 3)).reshape(base.shape)
    image = np.concatenate([base, shuffled], axis=1)
    if dtype == np.uint16:
        image = image.astype(np.uint16) * 257
    elif dtype != np.uint8:
        image = image.astype(dtype) / 255
    out = match_histograms(image, ref, method="lab", random_state=0)
    _assert_colour_function(image, out)


@settings(max_examples=15, deadline=None)
@given(
    arrays(np.uint8, st.tuples(st.integers(2, 12), st.integers(2, 12), st.just(3))),
    st.integers(0, 2**31 - 1),
)
def test_colour_consistency_and_dtype_property(image, seed):
    ref = np.random.default_rng(seed).integers(0, 256, size=(10, 10, 3), dtype=np.uint8)
    out = match_histograms(image, ref, method="lab", random_state=seed, n_iter=4)
    assert out.shape == image.shape and out.dtype == np.uint8
    _assert_colour_function(image, out)


# ------------------------------------------------------------ dtypes, shapes, ranges
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_dtype_and_shape_preserved(dtype, fitted, src):
    if dtype == np.uint16:
        x = src.astype(np.uint16) * 257
    elif dtype == np.uint8:
        x = src
    else:
        x = src.astype(dtype) / 255
    batch = np.stack([x, x[::-1]])
    before = batch.copy()
    out = fitted.transform(batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    np.testing.assert_array_equal(batch, before)  # input untouched
    if np.dtype(dtype).kind == "f":
        assert out.min() >= 0.0 and out.max() <= 1.0
    # the same colours in a float image land where the uint8 ones do
    as_unit = out.astype(np.float64) / _color.full_scale(dtype)
    ref8 = fitted.transform(src[None])[0] / 255.0
    assert np.abs(as_unit[0] - ref8).mean() < 2 / 255


def test_floats_are_not_quantised(fitted, src, rng):
    x = np.clip(src / 255 + rng.uniform(-1e-3, 1e-3, src.shape), 0, 1).astype(np.float32)
    out = fitted.transform(x[None])[0]
    assert len(np.unique(out)) > 10 * 256


def test_float_input_out_of_range_raises(fitted, src):
    with pytest.raises(ValueError, match=r"float RGB values in \[0, 1\]"):
        fitted.transform(src[None].astype(np.float32))
    with pytest.raises(ValueError, match=r"float RGB values in \[0, 1\]"):
        HistogramMatcher("lab").fit(src[None].astype(np.float64))


def test_list_of_differently_sized_images_and_pil(fitted, src):
    from PIL import Image

    images = [src, src[:50, :70], Image.fromarray(src[10:60, 5:45])]
    out = fitted.transform(images)
    assert isinstance(out, list) and len(out) == 3
    assert out[0].shape == src.shape and out[1].shape == (50, 70, 3)
    assert isinstance(out[2], Image.Image) and out[2].size == (40, 50)
    # each image is matched on its own: the crop's result depends on the crop only
    np.testing.assert_array_equal(out[1], fitted.transform(src[None, :50, :70])[0])
    rgba = Image.fromarray(np.dstack([src, np.full(src.shape[:2], 200, np.uint8)]))
    back = fitted.transform(rgba)
    assert back.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(back)[:, :, 3], 200)


# ------------------------------------------------------------------------ errors
@pytest.mark.parametrize("shape", [(2, 16, 16), (2, 16, 16, 1), (2, 16, 16, 4), (2, 16)])
def test_non_rgb_input_raises_at_fit(shape):
    x = np.zeros(shape, dtype=np.uint8)
    with pytest.raises(ValueError, match="3 channels"):
        HistogramMatcher("lab").fit(x)


def test_non_rgb_input_raises_at_transform(fitted):
    with pytest.raises(ValueError, match="3 channel"):
        fitted.transform(np.zeros((1, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="3 channel"):
        fitted.transform(np.zeros((1, 8, 8, 4), dtype=np.uint8))


def test_per_channel_state_is_not_used_by_lab(ref):
    m = HistogramMatcher("per_channel").fit(ref[None]).set_params(method="lab")
    with pytest.raises(ValueError, match="cannot use"):
        m.transform(ref[None])


def test_signed_integer_rgb_raises_type_error():
    x = np.zeros((1, 8, 8, 3), dtype=np.int16)
    with pytest.raises(TypeError, match="uint8, uint16, float32 or float64"):
        HistogramMatcher("lab").fit(x)


# ------------------------------------------------------------ masks and strength
def test_mask_limits_learning_and_changes(fitted, src, ref):
    rows = np.zeros(ref.shape[:2], dtype=bool)
    rows[: ref.shape[0] // 2] = True
    masked = HistogramMatcher("lab", random_state=0).fit(ref[None], mask=rows[None])
    cropped = HistogramMatcher("lab", random_state=0).fit(ref[None, : ref.shape[0] // 2])
    np.testing.assert_array_equal(
        masked.reference_["projected_quantiles"], cropped.reference_["projected_quantiles"]
    )
    mask = np.zeros(src.shape[:2], dtype=bool)
    mask[20:100, 30:90] = True
    out = fitted.transform(src[None], mask=mask[None])[0]
    np.testing.assert_array_equal(out[~mask], src[~mask])
    # inside, the result is that of the masked pixels alone
    alone = fitted.transform(np.ascontiguousarray(src[None, 20:100, 30:90]))[0]
    np.testing.assert_array_equal(out[20:100, 30:90], alone)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_strength(fitted, src, dtype):
    x = src if dtype == np.uint8 else (src / 255).astype(np.float32)
    full = fitted.transform(x[None])[0].astype(np.float64)
    fitted.set_params(strength=0.0)
    try:
        none = fitted.transform(x[None])[0]
        fitted.set_params(strength=0.5)
        mid = fitted.transform(x[None])[0].astype(np.float64)
    finally:
        fitted.set_params(strength=1.0)
    np.testing.assert_array_equal(none, x)
    tol = 0.51 if dtype == np.uint8 else 1e-6
    assert np.abs(mid - (x + full) / 2).max() <= tol


# ------------------------------------------------------------------- partial_fit
def test_partial_fit_matches_fit_within_tolerance(src):
    a, b = half("coffee"), half("rocket")
    whole = HistogramMatcher("lab", random_state=0).fit([a, b])
    parts = HistogramMatcher("lab", random_state=0).partial_fit(a[None]).partial_fit(b[None])
    np.testing.assert_array_equal(whole.reference_["rotations"], parts.reference_["rotations"])
    assert parts.n_pixels_seen_ == whole.n_pixels_seen_
    qw, qp = whole.reference_["projected_quantiles"], parts.reference_["projected_quantiles"]
    # merged sketches stay within a couple of grid steps of probability
    n_q = qw.shape[1]
    probs = np.linspace(0, 1, n_q)
    for d in range(len(qw)):
        lo = np.interp(np.clip(probs - 2 / (n_q - 1), 0, 1), probs, qw[d])
        hi = np.interp(np.clip(probs + 2 / (n_q - 1), 0, 1), probs, qw[d])
        assert np.all(qp[d] >= lo - 1e-6) and np.all(qp[d] <= hi + 1e-6)
    # transport maps are sensitive (a colour between two reference modes may go
    # either way), so compare the results as colour distributions and on average
    out_w, out_p = whole.transform(src[None])[0], parts.transform(src[None])[0]
    assert np.abs(out_w.astype(int) - out_p).mean() < 1.0
    assert sliced_wasserstein(out_w, out_p) < 0.3


def test_partial_fit_reuses_the_first_rotations(ref):
    m = HistogramMatcher("lab", random_state=0, n_iter=5).partial_fit(ref[None])
    first = m.reference_["rotations"].copy()
    m.set_params(random_state=99, n_iter=9).partial_fit(ref[None])
    np.testing.assert_array_equal(m.reference_["rotations"], first)


# ---------------------------------------------------------------- state, options
def test_state_is_plain_arrays_without_reference_pixels(fitted, ref):
    state = fitted.reference_
    assert set(state) == {"rotations", "projected_quantiles", "dtype"}
    assert state["rotations"].shape == (12 + 10, 3, 3)  # n_iter + n_refine
    np.testing.assert_array_equal(state["rotations"][0], np.eye(3))
    assert state["projected_quantiles"].shape == (66, 1024)
    assert all(isinstance(v, np.ndarray) for v in state.values())
    lab.Lab().check_state(state, 3)
    # its size does not grow with the references
    many = HistogramMatcher("lab", random_state=0, n_quantiles=64).fit(
        [ref, ref[::-1], ref.transpose(1, 0, 2)]
    )
    assert many.reference_["projected_quantiles"].shape == (66, 64)


def test_check_state_rejects_broken_states(fitted):
    good = fitted.reference_
    method = lab.Lab()
    with pytest.raises(ValueError, match="orthonormal"):
        method.check_state({**good, "rotations": good["rotations"] * 2}, 3)
    with pytest.raises(ValueError, match="shape"):
        method.check_state({**good, "projected_quantiles": good["projected_quantiles"][:5]}, 3)
    with pytest.raises(ValueError, match="non-decreasing"):
        method.check_state(
            {**good, "projected_quantiles": good["projected_quantiles"][:, ::-1]}, 3
        )
    with pytest.raises(ValueError, match="must hold"):
        method.check_state({"dtype": good["dtype"]}, 3)


def test_save_and_load_round_trip(fitted, src, tmp_path):
    path = fitted.save(tmp_path / "lab.npz")
    loaded = HistogramMatcher.load(path)
    np.testing.assert_array_equal(loaded.transform(src[None]), fitted.transform(src[None]))


def test_refinement_iterations_get_closer_after_the_smoothed_ones(ref, src):
    m = HistogramMatcher("lab", random_state=0).fit(ref[None])
    smoothed = m.set_params(n_refine=0).transform(src[None])[0]
    refined = m.set_params(n_refine=10).transform(src[None])[0]
    assert sliced_wasserstein(refined, ref) < 0.85 * sliced_wasserstein(smoothed, ref)
    # the refinement continues the rotations' cycle after the smoothed iterations
    x = np.random.default_rng(1).normal([50, 5, 5], [10, 10, 10], (500, 3)).astype(np.float32)
    w = np.ones(500)
    state = m.reference_
    by_hand = lab.transfer(x, w, state, 3)
    probs = _reference.probability_grid(state["projected_quantiles"].shape[1])
    for k in (3, 4):
        r = state["rotations"][k].astype(np.float32)
        q = state["projected_quantiles"][3 * k : 3 * k + 3]
        t = np.ascontiguousarray(by_hand.T)
        moves = lab._displacements(t, r, np.tile(w, 3), q, probs, lab.SOURCE_GRID_NODES)
        t += lab._rotate(r.T, moves)
        by_hand = np.ascontiguousarray(t.T)
    np.testing.assert_array_equal(lab.transfer(x, w, state, 3, n_refine=2), by_hand)
    # marginal mode is one match whatever n_refine is
    np.testing.assert_array_equal(
        lab.transfer(x, w, state, 3, joint=False, n_refine=5),
        lab.transfer(x, w, state, 3, joint=False),
    )
    with pytest.raises(ValueError, match="n_refine"):
        lab.transfer(x, w, state, 3, n_refine=-1)


def test_n_iter_beyond_the_fitted_rotations_cycles(ref, src):
    m = HistogramMatcher("lab", random_state=0, n_iter=4).fit(ref[None])
    out = m.set_params(n_iter=12).transform(src[None])[0]
    assert sliced_wasserstein(out, ref) < sliced_wasserstein(
        m.set_params(n_iter=4).transform(src[None])[0], ref
    )


def test_regrain_keeps_source_structure(fitted, src, ref):
    plain = fitted.transform(src[None])[0]
    fitted.set_params(regrain=True)
    try:
        regrained = fitted.transform(src[None])[0]
    finally:
        fitted.set_params(regrain=False)
    assert regrained.dtype == np.uint8 and regrained.shape == src.shape

    def lightness_gradients(img):
        light = _color.rgb_to_lab(img)[:, :, 0]
        return np.concatenate([np.diff(light, axis=0).ravel(), np.diff(light, axis=1).ravel()])

    g_src = lightness_gradients(src)
    corr_plain = np.corrcoef(g_src, lightness_gradients(plain))[0, 1]
    corr_regrain = np.corrcoef(g_src, lightness_gradients(regrained))[0, 1]
    assert corr_regrain > corr_plain
    # the colours stay those of the transfer, far closer to the reference than the input
    assert sliced_wasserstein(regrained, ref) < 0.5 * sliced_wasserstein(src, ref)


def test_regrain_kernel_keeps_a_matching_image():
    rng = np.random.default_rng(0)
    img = rng.random((40, 50, 3), dtype=np.float32)
    np.testing.assert_allclose(lab.regrain(img, img), img, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from([np.uint8, np.uint16, np.float32]),
    st.integers(1, 400),
    st.integers(0, 2**31 - 1),
)
def test_unique_colours_property(dtype, n, seed):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "u":
        top = min(np.iinfo(dtype).max, 5)  # few levels: many repeated colours
        px = rng.integers(0, top + 1, size=(n, 3)).astype(dtype)
        px[:, 0] = px[:, 0] * (np.iinfo(dtype).max // max(top, 1))
    else:
        px = rng.integers(0, 4, size=(n, 3)).astype(dtype) / 3
    colours, inverse, counts = lab.unique_colours(px)
    np.testing.assert_array_equal(
        colours[inverse], _color.to_unit(px) if px.dtype.kind == "f" else px
    )
    assert counts.sum() == n and len(np.unique(colours, axis=0)) == len(colours)
    np.testing.assert_array_equal(np.bincount(inverse, minlength=len(colours)), counts)
    same, none, same_counts = lab.unique_colours(px, return_inverse=False)
    assert none is None
    np.testing.assert_array_equal(same, colours)
    np.testing.assert_array_equal(same_counts, counts)


def test_transfer_of_a_constant_image_lands_in_the_reference(fitted, ref):
    grey = np.full((1, 8, 8, 3), 128, dtype=np.uint8)
    out = fitted.transform(grey)[0]
    assert len(np.unique(out.reshape(-1, 3), axis=0)) == 1
    # it goes to the reference's median along the LAB axes, then moves with the rotations
    median = np.median(_color.rgb_to_lab(ref).reshape(-1, 3), axis=0)
    before = np.abs(_color.rgb_to_lab(grey[0, 0, 0]) - median).sum()
    after = np.abs(_color.rgb_to_lab(out[0, 0]) - median).sum()
    assert after < 0.5 * before


def test_transfer_does_not_modify_its_input(fitted):
    for n in (1, 2, 50):
        colours = np.linspace([20, -5, 5], [80, 10, 30], n, dtype=np.float32)
        before = colours.copy()
        lab.transfer(colours, np.ones(n), fitted.reference_, 3)
        np.testing.assert_array_equal(colours, before)


# ------------------------------------------------------------- sliced_wasserstein
def test_sliced_wasserstein_is_exact_w1_in_one_dimension(rng):
    a = rng.normal(size=(300, 1))
    b = rng.exponential(size=(217, 1))
    assert sliced_wasserstein(a, b, n_directions=3) == pytest.approx(wasserstein_1d(a, b))


def test_sliced_wasserstein_basic_properties(rng, src, ref):
    x = rng.normal(size=(500, 3))
    y = rng.normal(loc=1.0, size=(400, 3))
    assert sliced_wasserstein(x, x) == 0.0
    assert sliced_wasserstein(x, y) == pytest.approx(sliced_wasserstein(y, x), rel=1e-6)
    assert sliced_wasserstein(x, y, random_state=1) == sliced_wasserstein(x, y, random_state=1)
    # images are compared in CIELAB: the same as their LAB pixels as point sets
    as_points = sliced_wasserstein(
        _color.rgb_to_lab(src).reshape(-1, 3), _color.rgb_to_lab(ref).reshape(-1, 3)
    )
    assert sliced_wasserstein(src, ref) == pytest.approx(as_points, rel=1e-6)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(-5, 5), st.floats(0.2, 3))
def test_sliced_wasserstein_scales_with_the_points(seed, shift, factor):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(80, 3))
    y = rng.normal(size=(60, 3)) + 1.0
    base = sliced_wasserstein(x, y)
    assert sliced_wasserstein(x + shift, y + shift) == pytest.approx(base, rel=1e-4, abs=1e-5)
    assert sliced_wasserstein(x * factor, y * factor) == pytest.approx(
        base * factor, rel=1e-4, abs=1e-5
    )


def test_sliced_wasserstein_errors(rng):
    with pytest.raises(ValueError, match="same dimension"):
        sliced_wasserstein(rng.normal(size=(5, 3)), rng.normal(size=(5, 2)))
    with pytest.raises(ValueError, match="n_directions"):
        sliced_wasserstein(rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), n_directions=0)
    with pytest.raises(ValueError, match="RGB image"):
        sliced_wasserstein(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8))


def test_many_iterations_on_a_tiny_image_cost_one_rotation_of_memory_at_a_time():
    import tracemalloc

    x = np.random.default_rng(0).integers(0, 255, (1, 8, 8, 3), dtype=np.uint8)
    tracemalloc.start()
    try:
        m = HistogramMatcher("lab", n_iter=200, n_quantiles=64).fit(x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # one rotation's three 65,536-node grids (and small change), not 200 of them at once
    assert peak < 16 * 2**20
    assert m.reference_["projected_quantiles"].shape == (3 * (200 + 10), 64)
    with pytest.raises(ValueError, match="n_iter"):
        HistogramMatcher("lab", n_iter=10**6).fit(x)
    with pytest.raises(ValueError, match="n_refine"):
        HistogramMatcher("lab", n_refine=-1).fit(x)
