"""Image files for the command line: read keeping the bit depth, write atomically.

:func:`read_image` opens any Pillow-readable image with Pillow's
decompression-bomb limit kept on (the warning is turned into an error for that
file), keeps 16-bit greyscale as 16-bit and reads 16-bit colour PNG/TIFF (which
Pillow would reduce to 8 bits) with OpenCV. Modes the matcher does not take
are converted (the ``_CONVERT`` table), every image to one 8-bit mode on
request (:func:`convert_mode`, ``histmatch --mode``), and the file's save options (ICC
profile, EXIF, JPEG tables, lossless TIFF compression) are kept so that a
result can be written the way its input was. :func:`write_image` writes
through :func:`~histmatch_ml.io.atomic_write`, so an output is never
half-written, and a process killed while writing leaves at most a temporary
``.histmatch-tmp-<pid>-<random>`` file, which the next ``histmatch`` run on
that output removes. :func:`read_mask` reads a boolean mask of an image's size.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import PathLike, atomic_write


def image_extensions() -> frozenset[str]:
    """Lower-case file suffixes of the formats Pillow can read (``".png"``, ...).

    Examples
    --------
    >>> from histmatch_ml.io import image_extensions
    >>> {".png", ".jpg", ".tif"} <= image_extensions()
    True
    """
    from PIL import Image

    Image.init()
    return frozenset(
        ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN
    )


@dataclass
class ImageData:
    """An image read by :func:`read_image` and how its file was stored.

    Attributes
    ----------
    pixels : PIL.Image.Image or ndarray
        A Pillow image of mode ``L``, ``LA``, ``RGB``, ``RGBA``, ``I;16``,
        ``I`` or ``F``; or, for 16-bit colour files, which Pillow cannot hold,
        a uint16 array ``(H, W, 3)`` (RGB) or ``(H, W, 4)`` (RGBA).
    format : str
        Pillow's format name of the file (``"PNG"``, ``"JPEG"``, ``"TIFF"``, ...).
    save_options : dict
        Keyword arguments that write a result the way the file was written
        (ICC profile, EXIF, resolution, JPEG quantisation tables and chroma
        subsampling, lossless TIFF compression).
    """

    pixels: Any
    format: str
    save_options: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        if isinstance(self.pixels, np.ndarray):
            return self.pixels.shape[1], self.pixels.shape[0]
        return self.pixels.size


_CONVERT = {
    "1": "L",
    "P": None,  # RGBA if it has transparency, else RGB
    "PA": "RGBA",
    "La": "LA",
    "RGBa": "RGBA",
    "RGBX": "RGB",
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "LAB": "RGB",
    "HSV": "RGB",
}
_KEEP = {"L", "LA", "RGB", "RGBA", "I;16", "I", "F"}
_LOSSLESS_TIFF = {"raw", "tiff_lzw", "tiff_deflate", "tiff_adobe_deflate", "packbits"}


def _rawmode(im: Any) -> str:
    try:
        args = im.tile[0][3] if im.tile else ""
    except (IndexError, TypeError):
        return ""
    return args if isinstance(args, str) else str(args[0]) if args else ""


#: metadata every format that can hold it gets from the source (PNG, JPEG, TIFF, WebP)
PORTABLE_METADATA = ("icc_profile", "exif", "dpi")


#: which of the portable metadata each format's writer takes
_HOLDS = {
    "PNG": PORTABLE_METADATA,
    "JPEG": PORTABLE_METADATA,
    "TIFF": PORTABLE_METADATA,
    "WEBP": ("icc_profile", "exif"),
    "BMP": ("dpi",),
}


def carried_options(save_options: dict[str, Any], source_format: str, fmt: str) -> dict[str, Any]:
    """The save options a result written as ``fmt`` takes from a ``source_format`` file.

    The same format takes them all (compression, JPEG tables...); another format
    takes the metadata it can hold (ICC profile, EXIF, resolution).

    Examples
    --------
    >>> from histmatch_ml.io._image_files import carried_options
    >>> carried_options({"dpi": (300, 300), "qtables": [[1] * 64]}, "JPEG", "PNG")
    {'dpi': (300, 300)}
    """
    if fmt == source_format:
        return dict(save_options)
    held = _HOLDS.get(fmt, ())
    return {k: v for k, v in save_options.items() if k in held}


#: the modes ``read_image(mode=...)`` (``histmatch --mode``) converts every image to
CONVERT_MODES = ("L", "RGB", "RGBA")


def _to_8bit(arr: np.ndarray) -> np.ndarray:
    """Pixels of a 16-bit, 32-bit integer or float image as uint8 on the same scale.

    Integers are read on the 16-bit scale (``I`` images hold 16-bit files for
    Pillow), floats on ``[0, 1]``, as the matcher reads them.
    """
    if arr.dtype.kind == "f":
        scaled = np.clip(np.nan_to_num(arr.astype(np.float64)), 0.0, 1.0) * 255.0
    else:
        scaled = np.clip(arr.astype(np.float64), 0, 65535) / 257.0
    return np.rint(scaled).astype(np.uint8)


def convert_mode(pixels: Any, mode: str) -> Any:
    """An image read by :func:`read_image` converted to the 8-bit Pillow ``mode``.

    ``mode`` is ``"L"``, ``"RGB"`` or ``"RGBA"``. Images of 16 bits (``I;16``,
    ``I`` and the uint16 colour arrays of 16-bit colour files) and float
    images (``F``, on ``[0, 1]``) are first brought to 8 bits on the same scale
    (Pillow's own conversion would clip them at 255); then Pillow converts
    (grey to colour repeats the grey, colour to grey is ITU-R 601 luma, an
    added alpha is opaque). The file's metadata (``info``) is kept.

    Examples
    --------
    >>> import numpy as np
    >>> from PIL import Image
    >>> from histmatch_ml.io._image_files import convert_mode
    >>> convert_mode(Image.new("L", (4, 2)), "RGB").mode
    'RGB'
    >>> grey16 = Image.fromarray(np.full((2, 4), 65535, np.uint16))
    >>> np.asarray(convert_mode(grey16, "RGB"))[0, 0].tolist()
    [255, 255, 255]
    """
    from PIL import Image

    if mode not in CONVERT_MODES:
        raise ValueError(f"mode must be one of {', '.join(CONVERT_MODES)}; got {mode!r}")
    if isinstance(pixels, np.ndarray):
        arr = _to_8bit(pixels)
        im = Image.fromarray(arr, "RGBA" if arr.shape[2] == 4 else "RGB")
    elif pixels.mode in ("I;16", "I", "F"):
        im = Image.fromarray(_to_8bit(np.asarray(pixels)), "L")
        im.info.update(pixels.info)
    else:
        im = pixels
    if im.mode == mode:
        return im
    converted = im.convert(mode)
    converted.info.update(im.info)
    return converted


def normalise_pil(im: Any) -> Any:
    """A Pillow image upright and in a mode the matcher takes: one table for API and CLI.

    The EXIF orientation is applied to the pixels (and removed from the EXIF,
    so viewers do not turn the result again). Modes: ``L``, ``LA``, ``RGB``,
    ``RGBA``, ``I;16``, ``I`` and ``F`` are kept; bilevel ``1`` becomes ``L``;
    palette ``P`` becomes ``RGBA`` when it has transparency, else ``RGB``;
    ``PA`` becomes ``RGBA``; ``CMYK``, ``YCbCr``, ``LAB`` and ``HSV`` become
    ``RGB``; big-endian 16-bit becomes ``I;16``. ``ValueError`` for other modes.

    Examples
    --------
    >>> from PIL import Image
    >>> from histmatch_ml.io._image_files import normalise_pil
    >>> normalise_pil(Image.new("CMYK", (4, 2))).mode, normalise_pil(Image.new("1", (4, 2))).mode
    ('RGB', 'L')
    """
    from PIL import Image, ImageOps

    if im.getexif().get(_ORIENTATION, 1) != 1:
        im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode.startswith("I;16") and mode != "I;16":
        converted = Image.fromarray(np.asarray(im).astype(np.uint16))
        converted.info.update(im.info)
        return converted
    if mode == "P":
        return im.convert("RGBA" if "transparency" in im.info else "RGB")
    if mode in _CONVERT:
        return im.convert(_CONVERT[mode])
    if mode not in _KEEP:
        raise ValueError(f"image mode {mode!r} is not supported")
    return im


#: the EXIF tag of the orientation
_ORIENTATION = 0x0112


def _without_orientation(im: Any) -> Any:
    """``im`` with its EXIF orientation applied (for its metadata only)."""
    from PIL import ImageOps

    return ImageOps.exif_transpose(im) if im.getexif().get(_ORIENTATION, 1) != 1 else im


def _oriented(pixels: np.ndarray, im: Any) -> np.ndarray:
    """An array decoded outside Pillow, turned as ``im``'s EXIF orientation says."""
    orientation = im.getexif().get(_ORIENTATION, 1)
    steps = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    step = steps.get(orientation)
    return pixels if step is None else np.ascontiguousarray(step(pixels))


def _save_options(im: Any, fmt: str | None = None, source: Any = None) -> dict[str, Any]:
    """How to write a result as the file ``im`` came from was written (metadata included).

    ``fmt`` is the file's format (``im.format`` is lost by conversions);
    ``source`` the opened file, when ``im`` is a converted copy of it.
    """
    opts: dict[str, Any] = {}
    info = im.info
    for key in PORTABLE_METADATA:
        if info.get(key):
            opts[key] = info[key]
    im = im if source is None else source
    info, fmt = im.info, fmt or im.format
    if fmt == "JPEG" and getattr(im, "quantization", None) is not None:
        from PIL import JpegImagePlugin

        if im.quantization:
            opts["qtables"] = im.quantization
        sampling = JpegImagePlugin.get_sampling(im)
        if sampling != -1:
            opts["subsampling"] = sampling
        if info.get("progressive") or info.get("progression"):
            opts["progressive"] = True
    elif fmt == "TIFF" and info.get("compression") in _LOSSLESS_TIFF:
        opts["compression"] = info["compression"]
    elif fmt == "WEBP" and info.get("lossless"):
        opts["lossless"] = True
    return opts


def read_image(
    path: PathLike, *, max_pixels: int | None = None, mode: str | None = None
) -> ImageData:
    """Read an image file for matching, keeping its bit depth.

    Pillow's decompression-bomb protection stays on: an image above
    ``PIL.Image.MAX_IMAGE_PIXELS`` (or above ``max_pixels``) raises instead of
    being decoded. Multi-frame files (animations, multi-page TIFF) are
    refused rather than silently cut to their first frame. Modes the matcher
    does not take are converted: bilevel to ``L``, palette to ``RGB``/``RGBA``,
    CMYK/YCbCr/LAB/HSV to ``RGB``, big-endian 16-bit to ``I;16``.

    Parameters
    ----------
    path : str or os.PathLike
        Any file Pillow can read.
    max_pixels : int, optional
        Refuse images with more pixels than this (in addition to Pillow's
        own limit).
    mode : {"L", "RGB", "RGBA"}, optional
        Convert the image to this 8-bit mode after the table above (see
        :func:`convert_mode`); None (default) keeps what the table gives.

    Returns
    -------
    image : ImageData
        The pixels, the file's format and its save options.

    Raises
    ------
    OSError
        Unreadable, unidentified, corrupt or truncated files (Pillow's
        ``UnidentifiedImageError`` is an ``OSError``).
    ValueError
        Images over the pixel limit (``DecompressionBombError`` and
        ``DecompressionBombWarning`` included), multi-frame files, modes that
        cannot be matched.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from PIL import Image
    >>> from histmatch_ml.io import read_image
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "grey16.png"
    >>> Image.fromarray(np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).save(path)
    >>> image = read_image(path)
    >>> image.format, image.pixels.mode, image.size
    ('PNG', 'I;16', (4, 3))
    """
    from PIL import Image

    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValueError(f"{path}: {exc}") from None
        with im:
            width, height = im.size
            if max_pixels is not None and width * height > max_pixels:
                raise ValueError(
                    f"{path}: image of {width}x{height} = {width * height} pixels is over the "
                    f"limit of {max_pixels} pixels"
                )
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                raise ValueError(f"{path}: multi-frame images are not supported ({frames} frames)")
            fmt = im.format
            if im.mode in ("RGB", "RGBA") and ";16" in _rawmode(im):
                pixels = _oriented(_read_colour16(path, im.size), im)
                options = _save_options(_without_orientation(im), fmt, im)
                if mode is not None:
                    pixels = convert_mode(pixels, mode)
                return ImageData(pixels, fmt, options)
            im.load()
            try:
                pixels = normalise_pil(im)
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
            pixels.load()
            options = _save_options(pixels, fmt, im)
            if mode is not None:
                pixels = convert_mode(pixels, mode)
            return ImageData(pixels, fmt, options)


def _read_colour16(path: Path, size: tuple[int, int]) -> np.ndarray:
    """16-bit RGB(A) PNG/TIFF through OpenCV, as RGB(A) uint16."""
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise OSError(f"{path}: cannot decode this 16-bit colour image")
    if (arr.shape[1], arr.shape[0]) != size:
        raise OSError(f"{path}: decoded size {arr.shape[1]}x{arr.shape[0]} differs from {size}")
    code = cv2.COLOR_BGR2RGB if arr.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
    return cv2.cvtColor(arr, code)


def format_for_path(path: PathLike) -> str:
    """Pillow's format name for a file suffix, e.g. ``"PNG"`` for ``x.png``.

    Raises ``ValueError`` for suffixes Pillow cannot write.

    Examples
    --------
    >>> from histmatch_ml.io import format_for_path
    >>> format_for_path("out/photo.JPG"), format_for_path("scan.tif")
    ('JPEG', 'TIFF')
    """
    from PIL import Image

    Image.init()
    suffix = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(
            f"cannot tell an image format Pillow can write from the suffix {suffix!r} of {path}"
        )
    return fmt


_CV2_EXT = {"PNG": ".png", "TIFF": ".tiff"}


def write_image(
    pixels: Any,
    path: PathLike,
    *,
    format: str | None = None,
    save_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an image atomically (temporary file in the destination, then rename).

    The temporary file is ``.histmatch-tmp-<pid>-<random>`` in the
    destination directory; see :func:`~histmatch_ml.io.atomic_write`.

    Parameters
    ----------
    pixels : PIL.Image.Image or ndarray
        A Pillow image, or a uint16 RGB/RGBA array ``(H, W, 3|4)`` as
        :func:`read_image` returns for 16-bit colour (written with OpenCV,
        PNG or TIFF only).
    path : str or os.PathLike
        Destination; its directory must exist.
    format : str, optional
        Pillow format name; default from the suffix of ``path``.
    save_options : mapping, optional
        Extra keyword arguments for Pillow's ``save`` (see
        :attr:`ImageData.save_options`).
    overwrite : bool, default=False
        Replace an existing file; otherwise raise ``FileExistsError``.

    Returns
    -------
    path : pathlib.Path
        The file written.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from PIL import Image
    >>> from histmatch_ml.io import read_image, write_image
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "x.png"
    >>> _ = write_image(Image.fromarray(np.zeros((4, 4), np.uint8)), out)
    >>> read_image(out).pixels.size
    (4, 4)
    >>> write_image(Image.new("L", (2, 2)), out)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileExistsError: ...x.png exists; refusing to overwrite it
    """
    path = Path(path)
    fmt = format or format_for_path(path)
    if isinstance(pixels, np.ndarray):
        import cv2

        if fmt not in _CV2_EXT or pixels.dtype != np.uint16 or pixels.ndim != 3:
            raise ValueError(
                f"{path}: 16-bit colour images can only be written as PNG or TIFF; got {fmt}"
            )
        code = cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
        ok, encoded = cv2.imencode(_CV2_EXT[fmt], cv2.cvtColor(pixels, code))
        if not ok:
            raise OSError(f"{path}: OpenCV could not encode the image as {fmt}")
        with atomic_write(path, overwrite=overwrite) as fh:
            fh.write(encoded.tobytes())
        return path
    options = dict(save_options or {})
    with atomic_write(path, overwrite=overwrite) as fh:
        pixels.save(fh, format=fmt, **options)
    return path


def read_mask(
    path: PathLike, size: tuple[int, int], *, max_pixels: int | None = None
) -> np.ndarray:
    """A boolean mask from an image file: True where any channel is non-zero.

    Parameters
    ----------
    path : str or os.PathLike
        The mask image.
    size : (int, int)
        ``(width, height)`` the mask must have (the image's).
    max_pixels : int, optional
        As in :func:`read_image`.

    Returns
    -------
    mask : ndarray of bool, shape (height, width)

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from PIL import Image
    >>> from histmatch_ml.io import read_mask
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.png"
    >>> Image.fromarray(np.array([[0, 255, 0]], np.uint8)).save(path)
    >>> read_mask(path, (3, 1))
    array([[False,  True, False]])
    """
    data = read_image(path, max_pixels=max_pixels)
    if data.size != tuple(size):
        raise ValueError(
            f"mask {path} must have the image's size {size[0]}x{size[1]}; got "
            f"{data.size[0]}x{data.size[1]}"
        )
    arr = np.asarray(data.pixels)
    mask = arr != 0
    return mask.any(axis=2) if mask.ndim == 3 else mask
