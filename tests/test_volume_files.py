"""NIfTI volume files: read/write round trips, paths in fit, the command line."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import cli_in_process
from histmatch_ml import HistogramMatcher

nib = pytest.importorskip("nibabel")

from histmatch_ml.io import (  # noqa: E402
    is_volume_file,
    iter_volumes,
    read_volume,
    read_volume_mask,
    write_volume,
)

cli = cli_in_process  # the command line in this process, for the cheap cases


def _affine(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(rng.uniform(0.5, 2.0, 3))
    affine[:3, 3] = rng.uniform(-100, 100, 3)
    return affine


def _write(path, data, seed=0, description=b"test volume"):
    image = nib.Nifti1Image(data, _affine(seed))
    image.header["descrip"] = description
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, path)
    return path


def _subject(rng, dtype=np.int16, scale=1.0, shape=(10, 12, 9)):
    data = rng.normal(300 * scale, 60 * scale, shape).clip(0, 3000).astype(dtype)
    mask = np.zeros(shape, dtype=bool)
    mask[2:-2, 2:-2, 1:-1] = True
    return data, mask


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
def test_a_written_volume_keeps_affine_header_and_dtype(tmp_path, suffix, dtype):
    rng = np.random.default_rng(0)
    data = (rng.random((4, 5, 6)) * 100).astype(dtype)
    src = _write(tmp_path / f"in{suffix}", data, seed=1)
    volume = read_volume(src)
    assert volume.data.dtype == dtype
    np.testing.assert_array_equal(volume.data, data)
    out = write_volume(tmp_path / f"out{suffix}", volume.data[::-1].copy(), volume)
    back = nib.load(out)
    np.testing.assert_allclose(back.affine, _affine(1))
    assert back.header["descrip"] == b"test volume"
    assert back.header.get_xyzt_units() == ("mm", "sec")
    assert back.get_data_dtype() == dtype
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), data[::-1])
    assert is_volume_file(out) and not is_volume_file(tmp_path / "a.png")


def test_unreadable_and_wrong_shaped_volumes_are_refused(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a volume")
    with pytest.raises(ValueError, match="NIfTI"):
        read_volume(bad)
    mask = _write(tmp_path / "mask.nii", np.ones((3, 3, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="shape"):
        read_volume_mask(mask, (3, 3, 4))


def test_gzip_members_nifti2_and_broken_streams(tmp_path):
    """A .nii.gz is read whole: several gzip members, NIfTI-2, and truncation refused."""
    import gzip

    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    one = _write(tmp_path / "one.nii", data, seed=2)
    raw = one.read_bytes()
    members = tmp_path / "members.nii.gz"  # (as `cat a.gz b.gz` makes)
    members.write_bytes(gzip.compress(raw[:200]) + gzip.compress(raw[200:]))
    volume = read_volume(members)
    np.testing.assert_array_equal(volume.data, data)
    np.testing.assert_allclose(volume.affine, _affine(2))
    assert volume.header["descrip"] == b"test volume"
    nib.save(nib.Nifti2Image(data, _affine(3)), tmp_path / "two.nii.gz")
    two = read_volume(tmp_path / "two.nii.gz")
    np.testing.assert_array_equal(two.data, data)
    assert isinstance(two.header, nib.Nifti2Header)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(gzip.compress(raw)[:-20])
    for bad in (truncated, tmp_path / "empty.nii.gz"):
        bad.touch()
        with pytest.raises(ValueError, match="NIfTI"):
            read_volume(bad)


def test_iter_volumes_reads_in_order_in_threads_and_casts(tmp_path):
    rng = np.random.default_rng(3)
    dtypes = [np.int16, np.uint16, np.float32, np.int16]
    volumes = [(rng.random((4, 5, 3)) * 1000).astype(d) for d in dtypes]
    paths = [_write(tmp_path / f"v{i}.nii.gz", v) for i, v in enumerate(volumes)]
    kept = list(iter_volumes(paths, n_jobs=2))
    assert [v.dtype for v in kept] == [np.dtype(d) for d in dtypes]
    cast = list(iter_volumes(iter(paths), dtype="float32", n_jobs=3))
    assert all(v.dtype == np.float32 for v in cast)
    for got, want in zip(cast, volumes):
        np.testing.assert_array_equal(got, want.astype(np.float32))
    (tmp_path / "broken.nii.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match=r"broken\.nii\.gz"):
        list(iter_volumes([*paths, tmp_path / "broken.nii.gz"], n_jobs=2))
    # a fit through it: references stored in different dtypes, one standard
    matcher = HistogramMatcher("landmarks", reference="barycenter", spatial_dims=3)
    fitted = matcher.fit(iter_volumes(paths, dtype=np.float32, n_jobs=2))
    assert fitted.dtype_ == "float32" and fitted.n_images_seen_ == 4


@pytest.mark.parametrize("reference", ["pooled", "barycenter"])
def test_fit_reads_paths_in_threads_with_the_same_result(tmp_path, reference):
    rng = np.random.default_rng(4)
    subjects = [_subject(rng, scale=s) for s in (1.0, 1.3, 1.7, 2.0, 2.4)]
    paths = [_write(tmp_path / f"s{i}.nii.gz", d) for i, (d, _) in enumerate(subjects)]
    masks = [m for _, m in subjects]
    kw = {"reference": reference, "spatial_dims": 3}
    one = HistogramMatcher("landmarks", **kw).fit(paths, mask=masks)
    threads = HistogramMatcher("landmarks", n_jobs=2, **kw).fit(paths, mask=masks)
    for key, value in one.reference_.items():
        np.testing.assert_array_equal(threads.reference_[key], value)
    assert threads.n_images_seen_ == 5
    (tmp_path / "s9.nii.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match=r"X\[5\].*s9.nii.gz"):  # the file that failed
        HistogramMatcher("landmarks", n_jobs=2, **kw).fit([*paths, tmp_path / "s9.nii.gz"])


def test_fit_takes_paths_of_volumes(tmp_path):
    rng = np.random.default_rng(1)
    subjects = [_subject(rng, scale=s) for s in (1.0, 1.5, 2.0)]
    paths = [_write(tmp_path / f"sub-{i}.nii.gz", d) for i, (d, _) in enumerate(subjects)]
    masks = [m for _, m in subjects]
    from_paths = HistogramMatcher("landmarks", spatial_dims=3).fit(paths, mask=masks)
    from_arrays = HistogramMatcher("landmarks", spatial_dims=3).fit(
        [d for d, _ in subjects], mask=masks
    )
    np.testing.assert_array_equal(from_paths.tables_["standard"], from_arrays.tables_["standard"])
    assert from_paths.n_images_seen_ == 3
    with pytest.raises(ValueError, match="spatial_dims=3"):
        HistogramMatcher().fit(paths)  # a volume is never read as an image of Z channels


def test_cli_fit_and_transform_volumes_with_masks_by_name(tmp_path):
    rng = np.random.default_rng(2)
    train, test, masks, out = (tmp_path / d for d in ("train", "test", "masks", "out"))
    for d in (train, test, masks):
        d.mkdir()
    for i in range(3):
        data, mask = _subject(rng, scale=1.0 + i)
        _write(train / f"sub-{i}.nii.gz", data, seed=i)
        _write(masks / f"sub-{i}.nii.gz", mask.astype(np.uint8), seed=i)
    data, mask = _subject(rng, scale=3.0)
    _write(test / "sub-9.nii.gz", data, seed=9, description=b"scanner B")
    _write(masks / "sub-9.nii.gz", mask.astype(np.uint8), seed=9)
    model = tmp_path / "standard.npz"
    args = ("--method", "landmarks", "--reference", "barycenter", "--standard-range", "0,100")
    fitted = cli("fit", train, "-o", model, "--mask-dir", masks, *args)
    assert fitted.returncode == 0, fitted.stderr
    matcher = HistogramMatcher.load(model)
    assert matcher.spatial_dims == 3 and matcher.n_images_seen_ == 3
    done = cli("transform", "-m", model, test, "-o", out, "--mask-dir", masks, "-j", "1")
    assert done.returncode == 0, done.stderr
    result = nib.load(out / "sub-9.nii.gz")
    np.testing.assert_allclose(result.affine, _affine(9))
    assert result.header["descrip"] == b"scanner B"
    assert result.get_data_dtype() == np.int16
    voxels = np.asanyarray(result.dataobj)
    expected = matcher.transform([data], mask=[mask])[0]
    np.testing.assert_array_equal(voxels, expected)
    np.testing.assert_array_equal(voxels[~mask], data[~mask])  # outside the brain: kept
    assert abs(np.median(voxels[mask]) - 50) < 5  # on the 0..100 standard scale


def test_cli_match_volumes(tmp_path):
    rng = np.random.default_rng(3)
    source = _write(tmp_path / "src.nii", _subject(rng, dtype=np.float32)[0], seed=4)
    reference = _write(tmp_path / "ref.nii.gz", _subject(rng, np.float32, scale=2.0)[0], seed=5)
    out = tmp_path / "out.nii.gz"
    done = cli("match", source, reference, "-o", out, "--method", "exact")
    assert done.returncode == 0, done.stderr
    result = nib.load(out)
    assert result.get_data_dtype() == np.float32
    np.testing.assert_allclose(result.affine, _affine(4))
    expected = HistogramMatcher("exact", spatial_dims=3).fit([read_volume(reference).data])
    np.testing.assert_array_equal(
        np.asanyarray(result.dataobj), expected.transform([read_volume(source).data])[0]
    )
    wrong = cli("match", source, reference, "-o", tmp_path / "out.png")
    assert wrong.returncode == 2 and "volume" in wrong.stderr


# ------------------------------------------------------------------ SimpleITK's formats
def _itk_image(sitk, data, seed=0):
    """A SimpleITK image of ``(X, Y, Z)`` voxels with a non-trivial spacing, origin, direction."""
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing(tuple(rng.uniform(0.5, 2.0, 3)))
    image.SetOrigin(tuple(rng.uniform(-100, 100, 3)))
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    return image


def _same_geometry(a, b):
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing())
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-12)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.float32])
def test_simpleitk_formats_keep_geometry_and_dtype(tmp_path, suffix, dtype):
    sitk = pytest.importorskip("SimpleITK")
    data = (np.random.default_rng(0).random((4, 5, 6)) * 1000).astype(dtype)
    source = _itk_image(sitk, data, seed=1)
    sitk.WriteImage(source, str(tmp_path / f"in{suffix}"))
    volume = read_volume(tmp_path / f"in{suffix}")
    assert is_volume_file(tmp_path / f"in{suffix}")
    assert volume.data.dtype == dtype and volume.data.shape == (4, 5, 6)  # ITK's (i, j, k)
    np.testing.assert_array_equal(volume.data, data)
    out = write_volume(tmp_path / f"out{suffix}", volume.data[::-1] * 0.5, volume)
    back = sitk.ReadImage(str(out))
    _same_geometry(back, source)
    assert back.GetPixelID() == source.GetPixelID()
    expected = (data[::-1] * 0.5).astype(dtype)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back).transpose(2, 1, 0), expected)
    left = sorted(p.name for p in tmp_path.iterdir())
    raw = ["in.raw", "out.raw"] if suffix == ".mhd" else []
    assert left == sorted([f"in{suffix}", f"out{suffix}", *raw])  # no temporary files


def test_simpleitk_and_nifti_geometry_agree(tmp_path):
    """A volume written across the two families lies where SimpleITK reads it."""
    sitk = pytest.importorskip("SimpleITK")
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    sitk.WriteImage(_itk_image(sitk, data, seed=2), str(tmp_path / "a.nrrd"))
    volume = read_volume(tmp_path / "a.nrrd")
    nifti = write_volume(tmp_path / "a.nii.gz", volume.data, volume)
    _same_geometry(sitk.ReadImage(str(nifti)), sitk.ReadImage(str(tmp_path / "a.nrrd")))
    assert nib.load(nifti).get_data_dtype() == np.int16
    np.testing.assert_allclose(nib.load(nifti).affine, volume.affine)
    again = write_volume(tmp_path / "b.mha", read_volume(nifti).data, read_volume(nifti))
    _same_geometry(sitk.ReadImage(str(again)), sitk.ReadImage(str(nifti)))
    bad = tmp_path / "bad.nrrd"
    bad.write_bytes(b"NRRD0004\nnot a header\n")
    with pytest.raises(ValueError, match="readable"):
        read_volume(bad)


def test_cli_transforms_simpleitk_volumes_with_masks_by_name(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    rng = np.random.default_rng(6)
    train, test, masks, out = (tmp_path / d for d in ("train", "test", "masks", "out"))
    for d in (train, test, masks):
        d.mkdir()
    for i in range(3):
        data, mask = _subject(rng, scale=1.0 + i)
        sitk.WriteImage(_itk_image(sitk, data, seed=i), str(train / f"sub-{i}.nrrd"))
        sitk.WriteImage(_itk_image(sitk, mask.astype(np.uint8), i), str(masks / f"sub-{i}.nrrd"))
    data, mask = _subject(rng, scale=3.0)
    source = _itk_image(sitk, data, seed=9)
    sitk.WriteImage(source, str(test / "sub-9.mha"))
    sitk.WriteImage(_itk_image(sitk, mask.astype(np.uint8), 9), str(masks / "sub-9.mha"))
    model = tmp_path / "standard.npz"
    args = ("--method", "landmarks", "--reference", "barycenter", "--standard-range", "0,100")
    fitted = cli("fit", train, "-o", model, "--mask-dir", masks, *args)
    assert fitted.returncode == 0, fitted.stderr
    matcher = HistogramMatcher.load(model)
    assert matcher.n_images_seen_ == 3
    done = cli("transform", "-m", model, test, "-o", out, "--mask-dir", masks, "-j", "1")
    assert done.returncode == 0, done.stderr
    result = sitk.ReadImage(str(out / "sub-9.mha"))
    _same_geometry(result, source)
    assert result.GetPixelID() == source.GetPixelID()
    voxels = sitk.GetArrayFromImage(result).transpose(2, 1, 0)
    np.testing.assert_array_equal(voxels, matcher.transform([data], mask=[mask])[0])
    np.testing.assert_array_equal(voxels[~mask], data[~mask])
    # the Python API takes the same paths
    from_paths = HistogramMatcher(
        "landmarks", reference="barycenter", standard_range=(0, 100), spatial_dims=3
    ).fit(
        sorted(train.iterdir()), mask=[read_volume_mask(p) for p in sorted(masks.glob("*.nrrd"))]
    )
    np.testing.assert_array_equal(from_paths.tables_["standard"], matcher.tables_["standard"])
