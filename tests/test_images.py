"""Input conventions: every accepted container comes back as it went in."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from histmatch_ml import _images


@pytest.mark.parametrize(
    ("X", "kind", "n", "shape"),
    [
        (np.zeros((2, 5, 6, 3), np.uint8), "array4", 2, (5, 6, 3)),
        (np.zeros((2, 5, 6), np.uint16), "array3", 2, (5, 6, 1)),
        (np.zeros((4, 7), np.float32), "tabular", 4, (1, 7, 1)),
        ([np.zeros((5, 6)), np.zeros((2, 3))], "list", 2, (5, 6, 1)),
        (Image.new("RGB", (6, 5)), "pil", 1, (5, 6, 3)),
    ],
)
def test_to_batch_and_restore_roundtrip(X, kind, n, shape):
    batch = _images.to_batch(X)
    assert batch.kind == kind and len(batch.images) == n
    assert batch.images[0].shape == shape
    assert all(im.flags.c_contiguous for im in batch.images)
    back = _images.restore(batch, batch.images)
    if kind == "pil":
        assert back.mode == X.mode and back.size == X.size
    elif kind == "list":
        assert [b.shape for b in back] == [x.shape for x in X]
    else:
        assert back.shape == X.shape and back.dtype == X.dtype


def test_allocate_output_gives_views_into_one_array():
    batch = _images.to_batch(np.zeros((3, 4, 5), np.uint8))
    full, views = _images.allocate_output(batch)
    for i, view in enumerate(views):
        view[...] = i + 1
    out = _images.restore(batch, full)
    assert out.shape == (3, 4, 5)
    np.testing.assert_array_equal(out[:, 0, 0], [1, 2, 3])
    assert np.shares_memory(out, full)
    full, views = _images.allocate_output(_images.to_batch([np.zeros((2, 3)), np.zeros((4, 1))]))
    assert full is None and [v.shape for v in views] == [(2, 3, 1), (4, 1, 1)]


def test_list_of_rows_is_tabular():
    assert _images.is_tabular([[1, 2, 3], [4, 5, 6]])
    assert not _images.is_tabular([np.zeros((2, 2))])
    assert _images.is_tabular(np.zeros((3, 3)))
    assert not _images.is_tabular(np.zeros((3, 3, 3)))


def test_mode_I_png_values_kept_as_uint16():
    arr = np.array([[0, 1000], [40000, 65535]], dtype=np.int32)
    img = Image.fromarray(arr, mode="I")
    batch = _images.to_batch(img)
    assert batch.dtype == np.uint16
    back = _images.restore(batch, batch.images)
    assert back.mode == "I"
    np.testing.assert_array_equal(np.asarray(back), arr)


def test_wrap_single_rejects_batches():
    with pytest.raises(ValueError, match="one image"):
        _images.wrap_single(np.zeros((2, 3, 4, 3)))


def test_float16_is_promoted_and_complex_refused():
    assert _images.check_dtype(np.zeros(2, np.float16), "X").dtype == np.float32
    with pytest.raises(TypeError, match="complex"):
        _images.check_dtype(np.zeros(2, complex), "X")


def test_single_colour_image_given_as_batch_warns():
    with pytest.warns(UserWarning, match=r"for one colour image pass \[image\]"):
        _images.to_batch(np.zeros((40, 60, 3), np.uint8))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _images.to_batch(np.zeros((40, 8, 8), np.uint8))  # a real grey batch: quiet
