"""NIfTI volume files: read/write round trips, paths in fit, the command line."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import cli_in_process
from histmatch_ml import HistogramMatcher

nib = pytest.importorskip("nibabel")

from histmatch_ml.io import (  # noqa: E402
    is_volume_file,
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
