"""Volumes (``spatial_dims=3``): inputs, every method, masks, partial_fit, 3-D orderings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from histmatch_ml import HistogramMatcher, _ordering
from histmatch_ml.methods import available_methods
from histmatch_ml.metrics import sliced_wasserstein

BUILT_IN = ["per_channel", "exact", "lab", "landmarks"]
METHODS = [m for m in BUILT_IN if m in available_methods()]


def _volumes(rng, n, shape, dtype, channels=None):
    full = (n, *shape) if channels is None else (n, *shape, channels)
    if np.dtype(dtype).kind == "f":
        return rng.random(full).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, full, endpoint=True).astype(dtype)


def _channels(method):
    return 3 if method == "lab" else None


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_batches_of_volumes_keep_shape_and_dtype(method, dtype):
    rng = np.random.default_rng(0)
    c = _channels(method)
    refs = _volumes(rng, 3, (5, 7, 6), dtype, c)
    vols = _volumes(rng, 2, (4, 6, 8), dtype, c)
    matcher = HistogramMatcher(method, spatial_dims=3, n_iter=2).fit(refs)
    out = matcher.transform(vols)
    assert out.shape == vols.shape and out.dtype == vols.dtype
    assert matcher.n_images_seen_ == 3 and matcher.n_pixels_seen_ == 3 * 5 * 7 * 6
    # a list of volumes of different sizes comes back as a list of the same shapes
    listed = [vols[0], vols[1, :3, :5]]
    out_list = matcher.transform(listed)
    assert isinstance(out_list, list)
    assert [o.shape for o in out_list] == [v.shape for v in listed]
    np.testing.assert_array_equal(out_list[0], out[0])


@pytest.mark.parametrize("method", ["per_channel", "exact"])
def test_volume_transform_is_the_voxelwise_image_transform(method):
    """Methods that treat voxels one by one give a volume what its voxels as one image get."""
    rng = np.random.default_rng(1)
    refs = _volumes(rng, 2, (4, 5, 6), np.uint16)
    vol = _volumes(rng, 1, (3, 6, 5), np.uint16)
    ours = HistogramMatcher(method, spatial_dims=3).fit(refs).transform(vol)[0]
    flat = HistogramMatcher(method).fit(refs.reshape(2, 20, 6))
    as_image = flat.transform(vol.reshape(1, 18, 5))[0].reshape(vol.shape[1:])
    if method == "per_channel":
        np.testing.assert_array_equal(ours, as_image)
    else:  # the same values, handed out in another order (3-D neighbourhoods)
        np.testing.assert_array_equal(np.sort(ours, axis=None), np.sort(as_image, axis=None))


def test_exact_on_a_volume_gives_the_reference_histogram():
    rng = np.random.default_rng(2)
    ref = _volumes(rng, 1, (6, 8, 8), np.uint8)
    vol = np.full((1, 6, 8, 8), 9, dtype=np.uint8)
    for ordering in _ordering.ORDERINGS:
        out = HistogramMatcher("exact", spatial_dims=3, ordering=ordering).fit(ref).transform(vol)
        np.testing.assert_array_equal(
            np.bincount(out.ravel(), minlength=256), np.bincount(ref.ravel(), minlength=256)
        )


@pytest.mark.parametrize("method", METHODS)
def test_volume_masks_select_voxels_in_fit_and_transform(method):
    rng = np.random.default_rng(3)
    c = _channels(method)
    refs = _volumes(rng, 2, (4, 6, 6), np.float32, c)
    mask = np.zeros((2, 4, 6, 6), dtype=bool)
    mask[:, 1:3, 2:5] = True
    refs_outside = refs.copy()
    refs_outside[~mask] = 50.0  # values outside the masks never count
    vols = _volumes(rng, 2, (4, 6, 6), np.float32, c)
    a = HistogramMatcher(method, spatial_dims=3, n_iter=2, random_state=0)
    b = HistogramMatcher(method, spatial_dims=3, n_iter=2, random_state=0)
    out_a = a.fit(refs, mask=mask).transform(vols, mask=mask)
    out_b = b.fit(refs_outside, mask=mask).transform(vols, mask=mask)
    np.testing.assert_array_equal(out_a, out_b)
    np.testing.assert_array_equal(out_a[~mask], vols[~mask])  # unmasked voxels untouched
    assert a.n_pixels_seen_ == int(mask.sum())


@pytest.mark.parametrize("method", METHODS)
def test_partial_fit_on_volumes_equals_fit(method):
    rng = np.random.default_rng(4)
    c = _channels(method)
    refs = [_volumes(rng, 1, (3 + i, 5, 4), np.uint8, c)[0] for i in range(3)]
    vols = _volumes(rng, 2, (4, 4, 4), np.uint8, c)
    whole = HistogramMatcher(method, spatial_dims=3, n_iter=2, random_state=0).fit(refs)
    parts = HistogramMatcher(method, spatial_dims=3, n_iter=2, random_state=0)
    parts.partial_fit(refs[:1]).partial_fit(refs[1:])
    a, b = parts.transform(vols), whole.transform(vols)
    if method != "lab":
        np.testing.assert_array_equal(a, b)
        return
    # merged projection sketches: equal within the sketches' tolerance. The smoothed
    # transport follows them closely; the unsmoothed refinement matches these few
    # isolated random colours one by one, so it moves each colour by far more for a small
    # change of the sketch, but both results are as close to the references
    pixels = [np.concatenate([r.reshape(-1, 3) for r in refs])[None], vols.reshape(1, -1, 3)]
    ref_pixels, before = pixels[0], sliced_wasserstein(pixels[1], pixels[0])
    d_a, d_b = (sliced_wasserstein(x.reshape(1, -1, 3), ref_pixels) for x in (a, b))
    assert max(d_a, d_b) < 0.6 * before
    assert abs(d_a - d_b) < 0.1 * before
    whole.set_params(n_refine=0)
    parts.set_params(n_refine=0)
    a, b = parts.transform(vols), whole.transform(vols)
    assert np.abs(a.astype(int) - b).mean() < 2.0  # (of 255 levels)


def test_streams_of_volumes_are_learned_chunk_by_chunk():
    rng = np.random.default_rng(5)
    refs = _volumes(rng, 4, (3, 4, 5), np.uint16)
    whole = HistogramMatcher(spatial_dims=3).fit(refs)
    for stream in (iter(refs), iter([refs[:1, ..., None], refs[1:, ..., None]])):
        streamed = HistogramMatcher(spatial_dims=3).fit(stream)
        assert streamed.n_images_seen_ == 4
        np.testing.assert_array_equal(
            streamed.reference_["histograms"], whole.reference_["histograms"]
        )


def test_volume_tensors_are_channels_first():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    refs = _volumes(rng, 2, (3, 4, 5), np.float32, 2)
    tensor = torch.from_numpy(np.ascontiguousarray(np.moveaxis(refs, -1, 1)))  # (N, C, D, H, W)
    matcher = HistogramMatcher(spatial_dims=3, n_quantiles=64).fit(refs)
    out = matcher.transform(tensor)
    assert isinstance(out, torch.Tensor) and out.shape == tensor.shape
    np.testing.assert_array_equal(np.moveaxis(out.numpy(), 1, -1), matcher.transform(refs))
    one = matcher.transform(tensor[0])
    assert one.shape == tensor[0].shape and one.dtype == tensor.dtype


@pytest.mark.parametrize("method", METHODS)
def test_inputs_are_never_modified(method):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    c = _channels(method)
    refs = _volumes(rng, 2, (4, 5, 6), np.float32, c)
    vols = _volumes(rng, 2, (4, 5, 6), np.float32, c)
    kept = vols.copy()
    matcher = HistogramMatcher(method, spatial_dims=3, n_iter=2).fit(refs)
    matcher.transform(vols)
    matcher.transform(list(vols))
    layout = vols if c is None else np.moveaxis(vols, -1, 1)
    tensor = torch.from_numpy(np.ascontiguousarray(layout if c else vols[:, None]))
    before = tensor.clone()
    matcher.transform(tensor)
    np.testing.assert_array_equal(vols, kept)
    assert torch.equal(tensor, before)


def test_a_grey_batch_that_looks_like_volumes_warns_with_spatial_dims_2():
    X = np.zeros((2, 32, 64, 64), dtype=np.float32)
    with pytest.warns(UserWarning, match="spatial_dims=3"):
        HistogramMatcher().fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HistogramMatcher(spatial_dims=3).fit(X)  # read as 2 volumes: no warning


def test_volume_errors_name_what_was_passed():
    matcher = HistogramMatcher(spatial_dims=3)
    with pytest.raises(ValueError, match=r"volume\[None\]"):
        matcher.fit(np.zeros((4, 5, 6), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"X\[1\] must be a volume"):
        matcher.fit([np.zeros((4, 5, 6)), np.zeros((4, 5))])
    with pytest.raises(ValueError, match="mask"):
        matcher.fit(np.zeros((2, 4, 5, 6)), mask=np.ones((2, 4, 5, 7), dtype=bool))
    with pytest.raises(ValueError, match="spatial_dims"):
        HistogramMatcher(spatial_dims=4).fit(np.zeros((2, 4, 5, 6)))
    fitted = HistogramMatcher(spatial_dims=3).fit(np.zeros((2, 4, 5, 6), dtype=np.uint8))
    with pytest.raises(ValueError, match="channel"):
        fitted.transform(np.zeros((1, 4, 5, 6, 3), dtype=np.uint8))


@settings(max_examples=15, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 5)] * 3),
    method=st.sampled_from(["per_channel", "exact"]),
    seed=st.integers(0, 2**16),
)
def test_volume_outputs_are_monotone_per_volume(shape, method, seed):
    """Brighter voxels never come out darker (both methods are monotone per channel)."""
    rng = np.random.default_rng(seed)
    refs = _volumes(rng, 2, (3, 3, 3), np.uint8)
    vol = _volumes(rng, 1, shape, np.uint8)
    out = HistogramMatcher(method, spatial_dims=3).fit(refs).transform(vol)
    order = np.lexsort((out.ravel(), vol.ravel()))  # by value, ties by output
    assert out.shape == vol.shape and out.dtype == vol.dtype
    assert (np.diff(out.ravel()[order].astype(int)) >= 0).all()


# ----------------------------------------------------------------- 3-D orderings
@pytest.mark.parametrize("ordering", _ordering.ORDERINGS)
def test_3d_orderings_use_the_face_neighbours(ordering):
    """On a flat volume with one bright voxel, its 6 face neighbours (two of them in other
    slices) rank right below it: the neighbourhood is 3-D, not the slice's."""
    vol = np.full((5, 5, 5), 10, dtype=np.uint8)
    vol[2, 2, 2] = 200
    order = _ordering.strict_order(vol, ordering=ordering)
    top = {tuple(int(i) for i in np.unravel_index(k, vol.shape)) for k in order[-7:]}
    faces = {(2, 2, 2)} | {
        tuple(2 + d * (axis == a) for a in range(3)) for axis in range(3) for d in (-1, 1)
    }
    assert top == faces


def test_3d_variational_correction_of_one_slice_is_the_2d_one():
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (9, 11)).astype(np.uint8)
    np.testing.assert_array_equal(
        _ordering.variational_correction(image[None])[0], _ordering.variational_correction(image)
    )


def test_3d_variational_correction_follows_transposition():
    rng = np.random.default_rng(8)
    vol = rng.integers(0, 256, (4, 5, 6)).astype(np.uint8)
    np.testing.assert_allclose(
        _ordering.variational_correction(vol.transpose(2, 0, 1)),
        _ordering.variational_correction(vol).transpose(2, 0, 1),
        rtol=0,
        atol=1e-12,
    )


def test_3d_shell_sums_equal_a_correlation_with_mirrored_borders():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(9)
    vol = rng.integers(0, 65536, (4, 6, 5)).astype(np.uint16)
    grid = np.stack(np.mgrid[-2:3, -2:3, -2:3], axis=-1)
    dist2 = (grid**2).sum(axis=-1)
    for d2, ours in zip((1, 2, 3, 4), _ordering.ring_sums(vol)):
        kernel = (dist2 == d2).astype(np.float64)
        expected = ndimage.correlate(vol.astype(np.float64), kernel, mode="reflect")
        np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("method", ["per_channel", "exact", "landmarks"])
def test_match_histograms_takes_volumes(method):
    from histmatch_ml import match_histograms

    rng = np.random.default_rng(11)
    vol, ref = _volumes(rng, 1, (4, 5, 6), np.uint16)[0], _volumes(rng, 1, (3, 6, 5), np.uint16)[0]
    mask = np.ones(vol.shape, dtype=bool)
    mask[0] = False
    out = match_histograms(vol, ref, method=method, spatial_dims=3, mask=mask)
    expected = HistogramMatcher(method, spatial_dims=3).fit([ref]).transform([vol], mask=[mask])
    np.testing.assert_array_equal(out, expected[0])
    np.testing.assert_array_equal(out[0], vol[0])


@pytest.mark.parametrize("method", ["per_channel", "exact"])
def test_random_histogram_matching_augments_volumes(method):
    from histmatch_ml import RandomHistogramMatching

    rng = np.random.default_rng(12)
    refs = [_volumes(rng, 1, (3 + i, 4, 5), np.uint8)[0] for i in range(3)]
    template = HistogramMatcher(method, spatial_dims=3)
    aug = RandomHistogramMatching(template, p=1.0, random_state=0).fit(refs)
    vol = _volumes(rng, 1, (4, 4, 4), np.uint8)[0]
    out = aug.apply(vol, {"apply": True, "reference": 2, "strength": 1.0})
    expected = HistogramMatcher(method, spatial_dims=3).fit([refs[2]]).transform([vol])[0]
    np.testing.assert_array_equal(out, expected)
    assert aug(vol).shape == vol.shape
