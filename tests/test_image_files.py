"""Image files and atomic writes of histmatch_ml.io."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from histmatch_ml import io as hio

RNG = np.random.default_rng(7)


# --------------------------------------------------------------- atomic writes
def test_atomic_write_cleans_up_on_error(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), hio.atomic_write(target) as fh:
        fh.write(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


# --------------------------------------------------------------------- images
def test_read_image_keeps_16_bit(tmp_path):
    grey = (np.arange(40 * 30, dtype=np.uint32).reshape(40, 30) * 53 % 65536).astype(np.uint16)
    for suffix in (".png", ".tif"):
        Image.fromarray(grey).save(tmp_path / f"g{suffix}")
        data = hio.read_image(tmp_path / f"g{suffix}")
        assert data.pixels.mode == "I;16"
        np.testing.assert_array_equal(np.asarray(data.pixels), grey)
    import cv2

    rgb = np.stack([grey, grey[::-1], 65535 - grey], axis=2)
    for suffix in (".png", ".tif"):
        cv2.imwrite(str(tmp_path / f"c{suffix}"), rgb[:, :, ::-1])
        data = hio.read_image(tmp_path / f"c{suffix}")
        assert data.pixels.dtype == np.uint16
        np.testing.assert_array_equal(data.pixels, rgb)
        hio.write_image(data.pixels, tmp_path / f"copy{suffix}", format=data.format)
        np.testing.assert_array_equal(hio.read_image(tmp_path / f"copy{suffix}").pixels, rgb)


def test_read_image_modes_and_options(tmp_path):
    rgb = RNG.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "p.gif")
    assert hio.read_image(tmp_path / "p.gif").pixels.mode == "RGB"
    Image.fromarray(rgb).convert("1").save(tmp_path / "b.png")
    assert hio.read_image(tmp_path / "b.png").pixels.mode == "L"
    Image.fromarray(rgb).save(tmp_path / "x.jpg", quality=93, subsampling=0)
    data = hio.read_image(tmp_path / "x.jpg")
    assert data.format == "JPEG" and "qtables" in data.save_options
    assert data.save_options["subsampling"] == 0
    frames = [Image.fromarray(rgb), Image.fromarray(rgb[::-1].copy())]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(ValueError, match="multi-frame"):
        hio.read_image(tmp_path / "anim.gif")


def test_decompression_bomb_is_an_error(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match="over the limit of 100 pixels"):
        hio.read_image(tmp_path / "big.png", max_pixels=100)
    for limit in (3000, 1000):  # warning zone (> limit) and error zone (> 2 * limit)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ValueError, match="decompression bomb"):
                hio.read_image(tmp_path / "big.png")


def test_corrupt_images_raise_oserror(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(OSError):
        hio.read_image(tmp_path / "junk.png")
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="truncated"):
        hio.read_image(tmp_path / "t.png")


def test_read_mask(tmp_path):
    m = np.zeros((5, 6), np.uint8)
    m[1:3, 2:5] = 200
    Image.fromarray(m).save(tmp_path / "m.png")
    np.testing.assert_array_equal(hio.read_mask(tmp_path / "m.png", (6, 5)), m > 0)
    with pytest.raises(ValueError, match="must have the image's size 5x5"):
        hio.read_mask(tmp_path / "m.png", (5, 5))
