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


def test_single_colour_image_given_as_batch_is_an_error():
    with pytest.raises(ValueError, match=r"looks like one colour image.*pass \[image\]"):
        _images.to_batch(np.zeros((40, 60, 3), np.uint8))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _images.to_batch(np.zeros((40, 8, 8), np.uint8))  # a real grey batch: quiet


# ------------------------------------------------------------- streams, files, tensors
def _coffee_tiles():
    from skimage import data

    coffee = data.coffee()
    return [coffee[r : r + 100, c : c + 150] for r in (0, 200) for c in (0, 300)]


def test_a_generator_is_learned_chunk_by_chunk_and_equals_the_list(monkeypatch):
    from histmatch_ml import HistogramMatcher

    tiles = _coffee_tiles()
    # chunks of about two tiles: the stream is merged chunk by chunk
    monkeypatch.setattr(_images, "STREAM_CHUNK_PIXELS", 2 * 100 * 150)
    seen = []

    def stream():
        for tile in tiles:
            seen.append(len(seen))
            yield tile

    streamed = HistogramMatcher().fit(stream())
    at_once = HistogramMatcher().fit(tiles)
    np.testing.assert_array_equal(
        streamed.reference_["histograms"], at_once.reference_["histograms"]
    )
    assert streamed.n_images_seen_ == 4 and seen == [0, 1, 2, 3]
    chunks = list(_images.stream_chunks(iter(tiles), None, "X", max_pixels=2 * 100 * 150))
    assert [len(images) for images, _ in chunks] == [2, 2]
    more = HistogramMatcher().fit(tiles[:1]).partial_fit(iter(tiles[1:]))
    np.testing.assert_array_equal(more.reference_["histograms"], at_once.reference_["histograms"])


def test_streams_with_masks_batches_and_errors():
    from histmatch_ml import HistogramMatcher

    tiles = _coffee_tiles()
    masks = [np.ones(t.shape[:2], bool) for t in tiles]
    masks[0][:50] = False
    m = HistogramMatcher().fit(iter(tiles), mask=iter(masks))
    assert m.n_pixels_seen_ == sum(int(k.sum()) for k in masks)
    batched = HistogramMatcher().fit(iter([np.stack(tiles[:2]), np.stack(tiles[2:])]))
    assert batched.n_images_seen_ == 4
    with pytest.raises(ValueError, match="at least one image"):
        HistogramMatcher().fit(iter([]))
    with pytest.raises(ValueError, match="one mask per image"):
        HistogramMatcher().fit(iter(tiles), mask=iter(masks[:2]))


def test_file_paths_are_read_as_the_command_line_reads_them(tmp_path):
    from histmatch_ml import HistogramMatcher

    tiles = _coffee_tiles()
    paths = []
    for i, tile in enumerate(tiles):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(tile).save(paths[-1])
    from_paths = HistogramMatcher().fit(paths)
    from_str = HistogramMatcher().fit([str(p) for p in paths])
    at_once = HistogramMatcher().fit(tiles)
    for m in (from_paths, from_str):
        np.testing.assert_array_equal(m.reference_["histograms"], at_once.reference_["histograms"])
    one = HistogramMatcher().fit(paths[0])
    assert one.n_images_seen_ == 1
    # a palette PNG and a 16-bit PNG, converted by the same table as the CLI
    Image.fromarray(tiles[0]).convert("P").save(tmp_path / "palette.png")
    assert HistogramMatcher().fit(tmp_path / "palette.png").n_channels_ == 3
    Image.fromarray(tiles[0][:, :, 0].astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    assert HistogramMatcher().fit(tmp_path / "grey16.png").dtype_ == "uint16"
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"broken\.png"):
        HistogramMatcher().fit([paths[0], tmp_path / "broken.png"])


def test_verbose_fit_shows_progress(capsys):
    from histmatch_ml import HistogramMatcher

    HistogramMatcher(verbose=True).fit(iter(_coffee_tiles()))
    assert "fit" in capsys.readouterr().err
    HistogramMatcher().fit(iter(_coffee_tiles()))
    assert capsys.readouterr().err == ""


def test_one_colour_image_given_as_a_batch_is_an_error():
    from skimage import data

    from histmatch_ml import HistogramMatcher

    with pytest.raises(ValueError, match=r"looks like one colour image.*\[image\]"):
        HistogramMatcher().fit(data.coffee())
    assert HistogramMatcher().fit(data.coffee()[None]).n_channels_ == 3


def test_channels_first_arrays_are_caught():
    from skimage import data

    from histmatch_ml import HistogramMatcher, match_histograms

    chw = np.moveaxis(data.astronaut(), -1, 0)
    with pytest.raises(ValueError, match=r"channels-first.*np\.moveaxis"):
        match_histograms(chw, data.coffee())
    with pytest.warns(UserWarning, match="np.moveaxis"):
        HistogramMatcher().fit(np.stack([chw[:, :64, :64]] * 2))


def test_channel_mismatch_names_the_argument_and_the_fix():
    from skimage import data

    from histmatch_ml import HistogramMatcher, match_histograms

    with pytest.raises(ValueError, match=r"image must have 3 channel.*convert grey"):
        match_histograms(data.camera(), data.coffee())
    rgba = np.dstack([data.astronaut(), np.full((512, 512), 255, np.uint8)])
    with pytest.raises(ValueError, match=r"X must have 3 channel.*alpha"):
        HistogramMatcher().fit([data.coffee()]).transform([rgba])


def test_torch_tensors_come_back_as_tensors_of_their_dtype():
    torch = pytest.importorskip("torch")
    from skimage import data

    from histmatch_ml import HistogramMatcher

    src, ref = data.astronaut(), data.coffee()
    m = HistogramMatcher().fit([ref])
    chw = torch.from_numpy(src).permute(2, 0, 1).contiguous()
    out = m.transform(chw)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8 and out.shape == chw.shape
    np.testing.assert_array_equal(out.permute(1, 2, 0).numpy(), m.transform([src])[0])
    batch = m.transform(torch.stack([chw, chw.flip(2)]))
    assert batch.shape == (2, 3, 512, 512)
    half = m.transform(chw.half() / 255)
    assert half.dtype == torch.float16
    with pytest.raises(ValueError, match=r"channels-last.*permute"):
        m.transform(torch.from_numpy(src))
    # many channels (OpenCV interleaves at most a few): the same as the arrays
    x = np.random.default_rng(0).integers(0, 255, (1, 8, 8, 200), dtype=np.uint8)
    wide = HistogramMatcher().fit(x)
    t = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    np.testing.assert_array_equal(wide.transform(t).permute(0, 2, 3, 1).numpy(), wide.transform(x))


def test_pandas_output_in_a_pipeline_and_feature_names():
    pytest.importorskip("pandas")
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from histmatch_ml import HistogramMatcher, ImageFlattener

    digits = load_digits()
    pipe = make_pipeline(HistogramMatcher(), ImageFlattener(), LogisticRegression(max_iter=300))
    pipe.set_output(transform="pandas").fit(digits.images[:200], digits.target[:200])
    frame = pipe[:-1].transform(digits.images[:5])
    assert list(frame.columns[:2]) == ["pixel_0_0", "pixel_0_1"] and frame.shape == (5, 64)
    images = pipe[0].transform(digits.images[:5])
    assert isinstance(images, np.ndarray) and images.shape == (5, 8, 8)


# --------------------------------------------------------------- Pillow modes and EXIF
def _rotated_jpeg(path, image):
    """``image`` stored turned by 90 degrees, with an EXIF orientation (6) that undoes it."""
    exif = Image.Exif()
    exif[0x0112] = 6  # display: rotate 90 degrees clockwise
    exif[0x010F] = "histmatch test camera"
    icc = b"\0" * 128  # (a stand-in ICC profile: carried, not interpreted)
    Image.fromarray(np.rot90(image, 1)).save(
        path, "JPEG", exif=exif.tobytes(), dpi=(300, 300), icc_profile=icc, quality=95
    )


def test_exif_orientation_is_applied_and_the_metadata_carried(tmp_path):
    from skimage import data

    from histmatch_ml import match_histograms

    upright = data.astronaut()[:120, :200]
    _rotated_jpeg(tmp_path / "photo.jpg", upright)
    with Image.open(tmp_path / "photo.jpg") as photo:
        out = match_histograms(photo, Image.fromarray(data.coffee()))
    assert out.size == (200, 120)  # upright: as a viewer shows the file
    assert np.corrcoef(np.asarray(out.convert("L")).ravel(), upright.mean(2).ravel())[0, 1] > 0.8
    exif = out.getexif()
    assert exif.get(0x0112, 1) == 1 and exif.get(0x010F) == "histmatch test camera"
    assert out.info["dpi"] == (300, 300) and out.info["icc_profile"] == b"\0" * 128
    out.save(tmp_path / "matched.png")
    with Image.open(tmp_path / "matched.png") as saved:
        assert saved.size == (200, 120) and saved.getexif().get(0x0112, 1) == 1


@pytest.mark.parametrize(
    ("mode", "back"),
    [
        ("P", "RGB"),
        ("PA", "RGBA"),
        ("1", "L"),
        ("CMYK", "RGB"),
        ("YCbCr", "RGB"),
        ("LAB", "RGB"),
        ("L", "L"),
        ("LA", "LA"),
        ("RGBA", "RGBA"),
        ("I;16", "I;16"),
        ("I", "I"),
        ("F", "F"),
    ],
)
def test_every_mode_pillow_decodes_is_matched(mode, back):
    from skimage import data

    from histmatch_ml import match_histograms

    rgb = Image.fromarray(data.astronaut()[:64, :64])
    if mode == "PA":
        image = rgb.convert("P").convert("PA")
    elif mode == "I;16":
        image = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    else:
        image = rgb.convert(mode)
    grey = back in ("L", "LA", "I;16", "I", "F")
    reference = Image.fromarray(data.coffee()).convert("L" if grey else "RGB")
    out = match_histograms(image, reference)
    assert out.mode == back and out.size == image.size


def test_mode_I_beyond_16_bits_is_matched_as_32_bit():
    from histmatch_ml import match_histograms

    wide = Image.fromarray(np.array([[-5, 70000], [3, 9]], dtype=np.int32), mode="I")
    out = match_histograms(wide, wide)
    assert out.mode == "I"
    assert np.argsort(np.asarray(out), axis=None).tolist() == [0, 2, 3, 1]


def test_files_of_every_kind_are_fitted_from_paths(tmp_path):
    from skimage import data

    from histmatch_ml import HistogramMatcher

    coffee = data.coffee()[:80, :100]
    Image.fromarray(coffee).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(coffee).convert("P").save(tmp_path / "palette.png")
    _rotated_jpeg(tmp_path / "rotated.jpg", coffee)
    m = HistogramMatcher().fit([tmp_path / n for n in ("cmyk.jpg", "palette.png", "rotated.jpg")])
    assert m.n_channels_ == 3 and m.n_images_seen_ == 3 and m.n_pixels_seen_ == 3 * 80 * 100
