"""method="landmarks": Nyul-Udupa standardization, its parameters, and TorchIO's agreement."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from histmatch_ml import HistogramMatcher
from histmatch_ml.methods.landmarks import (
    DEFAULT_LANDMARKS,
    check_landmarks,
    image_landmarks,
    piecewise_map,
    sorted_quantiles,
)


def _cohort(rng, n, shape=(12, 14, 10)):
    """Volumes of one tissue pattern on different scales and offsets, with brain masks."""
    zz, yy, xx = np.indices(shape)
    centre = np.array(shape)[:, None, None, None] / 2
    radius = np.sqrt(((np.stack([zz, yy, xx]) - centre) ** 2).sum(axis=0))
    mask = radius < min(shape) * 0.45
    vols, masks = [], []
    for _ in range(n):
        tissue = 50 + 40 * np.cos(radius / 2.0) + rng.normal(0, 5, shape)
        scale, offset = rng.uniform(0.5, 3.0), rng.uniform(0, 200)
        vols.append((tissue * scale + offset).astype(np.float32) * mask)
        masks.append(mask)
    return vols, masks


def test_landmarks_are_the_midpoint_percentiles():
    image = np.arange(1000, dtype=np.float64).reshape(10, 100, 1)
    probs = check_landmarks(DEFAULT_LANDMARKS)
    np.testing.assert_allclose(
        image_landmarks(image, None, probs)[0],
        np.quantile(np.arange(1000.0), probs, method="hazen"),
    )
    # integer images through their exact histograms: the same convention
    np.testing.assert_allclose(
        image_landmarks(image.astype(np.uint16), None, probs),
        image_landmarks(image, None, probs),
    )


@settings(max_examples=200, deadline=None)
@given(
    values=arrays(
        st.sampled_from([np.float16, np.float32, np.float64]),
        st.integers(1, 300),
        elements=st.floats(-1e4, 1e4, width=16),
    ),
    probs=st.lists(st.floats(0, 1), min_size=1, max_size=14),
)
def test_sorted_quantiles_are_numpys_hazen_quantiles_exactly(values, probs):
    """The landmarks kernel gives np.quantile's float64 result bit for bit (ties, ends)."""
    probs = np.sort(np.array(probs))
    expected = np.quantile(values.astype(np.float64), probs, method="hazen")
    np.testing.assert_array_equal(sorted_quantiles(np.sort(values), probs), expected)
    image = values.reshape(1, -1, 1)
    np.testing.assert_array_equal(image_landmarks(image, None, probs)[0], expected)
    mask = np.arange(values.size).reshape(1, -1) % 2 == 0
    np.testing.assert_array_equal(
        image_landmarks(image, mask, probs)[0],
        np.quantile(values[mask[0]].astype(np.float64), probs, method="hazen"),
    )


def test_the_standard_range_is_where_the_end_landmarks_land():
    rng = np.random.default_rng(0)
    vols, masks = _cohort(rng, 4)
    matcher = HistogramMatcher(
        "landmarks", reference="barycenter", spatial_dims=3, standard_range=(0, 100)
    ).fit(vols, mask=masks)
    standard = matcher.tables_["standard"][0]
    assert standard[0] == pytest.approx(0) and standard[-1] == pytest.approx(100)
    out = matcher.transform(vols[:1], mask=masks[:1])[0]
    found = image_landmarks(
        out.reshape(-1, out.shape[-1], 1), masks[0].reshape(-1, 10), [0.01, 0.99]
    )
    np.testing.assert_allclose(found[0], [0, 100], atol=1e-3)
    assert (out[~masks[0]] == vols[0][~masks[0]]).all()  # outside the mask: untouched


def test_standardization_removes_scale_and_offset():
    """Volumes that differ only by a linear intensity map come out the same."""
    rng = np.random.default_rng(1)
    vols, masks = _cohort(rng, 3)
    matcher = HistogramMatcher("landmarks", spatial_dims=3).fit(vols, mask=masks)
    base = vols[0]
    outs = matcher.transform([base, base * 3.0 + 40.0], mask=masks[:2])
    np.testing.assert_allclose(outs[0][masks[0]], outs[1][masks[0]], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(
    ("dtype", "channels", "planar", "masked", "strength"),
    [
        (np.uint8, 3, False, False, 1.0),
        (np.uint8, 3, False, True, 0.4),
        (np.uint8, 3, True, False, 0.7),
        (np.uint16, 3, False, True, 1.0),
        (np.uint16, 2, True, False, 0.4),
        (np.int16, 1, False, True, 0.6),
        (np.int8, 4, False, False, 1.0),
    ],
)
def test_integer_images_through_level_tables_equal_the_map_of_each_pixel(
    dtype, channels, planar, masked, strength
):
    rng = np.random.default_rng(4)
    info = np.iinfo(dtype)
    shape = (40, 33, channels)

    def image(spread):
        base = rng.gamma(2.0, spread, shape) + info.min * 0.3
        return np.clip(base, info.min, info.max).astype(dtype)

    refs = np.stack([image(info.max / 9), image(info.max / 6)])
    x = image(info.max / 12)
    if planar:  # channels-first memory, as a tensor's planes
        x = np.ascontiguousarray(x.transpose(2, 0, 1)).transpose(1, 2, 0)
    mask = rng.random(shape[:2]) < 0.7 if masked else None
    matcher = HistogramMatcher("landmarks", strength=strength).fit(refs)
    got = matcher.transform(x[None], mask=None if mask is None else mask[None])[0]
    # the map of each pixel in float32, blended, rounded and clipped, unmasked pixels kept
    probs = matcher.tables_["percentiles"] / 100.0
    source = image_landmarks(x, mask, probs)
    expected = np.empty(shape, dtype=dtype)
    s = np.float32(strength)
    for c in range(channels):
        values = x[:, :, c].astype(np.float64)
        mapped = piecewise_map(values, source[c], matcher.tables_["standard"][c], values.copy())
        mapped = mapped.astype(np.float32)
        if strength != 1.0:
            original = x[:, :, c].astype(np.float32)
            mapped = (mapped - original) * s + original
        expected[:, :, c] = np.clip(np.rint(mapped), info.min, info.max)
    if mask is not None:
        expected[~mask] = x[~mask]
    np.testing.assert_array_equal(got, expected)


def test_piecewise_map_extrapolates_the_end_segments_and_flattens_ties():
    source = np.array([0.0, 1.0, 1.0, 3.0])
    standard = np.array([0.0, 10.0, 12.0, 20.0])
    x = np.array([-2.0, 0.5, 1.0, 2.0, 5.0])
    out = piecewise_map(x, source, standard, np.empty(5))
    np.testing.assert_allclose(out, [-20.0, 5.0, 12.0, 16.0, 28.0])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 5))
def test_landmarks_output_is_monotone(seed, n):
    rng = np.random.default_rng(seed)
    vols = [rng.gamma(2.0, 30.0 * (i + 1), (4, 5, 6)) for i in range(n)]
    matcher = HistogramMatcher("landmarks", reference="barycenter", spatial_dims=3).fit(vols)
    vol = rng.gamma(3.0, 10.0, (3, 4, 5))
    out = matcher.transform([vol])[0]
    order = np.argsort(vol, axis=None)
    assert (np.diff(out.ravel()[order]) >= -1e-9 * np.abs(out).max()).all()


def test_landmarks_errors_name_the_parameter():
    vols = np.random.default_rng(2).random((2, 4, 4, 4))
    for bad in [(50,), (10, 5, 90), (1, 150), "abc", [[1, 2]]]:
        with pytest.raises(ValueError, match=r"'?landmarks'? (parameter of .* )?must be"):
            HistogramMatcher("landmarks", spatial_dims=3, landmarks=bad).fit(vols)
    for bad in [(5, 1), (0,), (0, np.inf), ("a", "b")]:
        with pytest.raises(ValueError, match=r"'?standard_range'? (parameter of .* )?must be"):
            HistogramMatcher("landmarks", spatial_dims=3, standard_range=bad).fit(vols)


def test_landmarks_state_is_not_used_by_other_methods():
    vols = np.random.default_rng(3).random((2, 4, 4, 4))
    matcher = HistogramMatcher("landmarks", spatial_dims=3).fit(vols)
    with pytest.raises(ValueError, match="cannot use"):
        matcher.set_params(method="per_channel").transform(vols)


# ---------------------------------------------------------------- TorchIO agreement
def test_agrees_with_torchio_histogram_standardization(tmp_path):
    """Configured as TorchIO's defaults, the output agrees with TorchIO's within 0.2% of
    the standard range on the masked voxels (TorchIO maps every voxel; we map the mask)."""
    tio = pytest.importorskip("torchio")
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(4)
    vols, masks = _cohort(rng, 6, shape=(40, 44, 36))  # (brain-sized masks: 25k voxels)
    paths, mask_paths = [], []
    for i, (vol, mask) in enumerate(zip(vols, masks)):
        paths.append(tmp_path / f"sub-{i}.nii.gz")
        mask_paths.append(tmp_path / f"sub-{i}_mask.nii.gz")
        nib.save(nib.Nifti1Image(vol, np.eye(4)), paths[-1])
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.eye(4)), mask_paths[-1])
    train = slice(0, 4)
    theirs_standard = tio.HistogramStandardization.train(
        paths[train], mask_path=mask_paths[train], progress=False
    )
    ours = HistogramMatcher(
        "landmarks", reference="barycenter", spatial_dims=3, standard_range=(0, 100)
    ).fit(paths[train], mask=masks[train])
    # TorchIO stores 13 values (with the quartiles), of which its transform uses 11: ours
    keep = [0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12]
    np.testing.assert_allclose(ours.tables_["standard"][0], theirs_standard[keep], atol=0.2)
    transform = tio.HistogramStandardization({"t1": theirs_standard}, masking_method="brain")
    for i in (4, 5):
        subject = tio.Subject(t1=tio.ScalarImage(paths[i]), brain=tio.LabelMap(mask_paths[i]))
        theirs = transform(subject)["t1"].data.numpy()[0]
        mine = ours.transform([vols[i]], mask=[masks[i]])[0]
        difference = np.abs(mine[masks[i]] - theirs[masks[i]])
        assert difference.max() <= 0.002 * 100
