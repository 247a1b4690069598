"""RGB <-> CIELAB (sRGB primaries and transfer curve, D65 white), and dtype scaling.

The conversions run on float32 with OpenCV, never with OpenCV's 8-bit LAB
encoding (which quantises L, a and b to bytes and loses up to 5 RGB codes on a
round trip). The sRGB transfer curve is applied here, exactly, before
``cv2.COLOR_LRGB2Lab``: OpenCV's own float ``COLOR_RGB2Lab`` linearises through
an interpolated table that is off by up to 1.3 8-bit codes, while the linear
path agrees with the CIE formulas to 0.03 in L, a and b. The way back
(``cv2.COLOR_Lab2RGB``) completes a round trip within 0.09 8-bit codes.

Colours are ``(..., 3)`` arrays: RGB scaled to ``[0, 1]`` (:func:`to_unit`),
L in ``[0, 100]``, a and b roughly in ``[-128, 127]``. Gamut clipping on the way
back (:func:`lab_to_rgb`, done by OpenCV) clips each of R, G and B to ``[0, 1]``.
"""

from __future__ import annotations

import cv2
import numpy as np

#: integer dtypes with a fixed full scale (value / full scale is in [0, 1])
_FULL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
#: float inputs may overshoot [0, 1] by this much (rounding noise) and are clipped
FLOAT_TOLERANCE = 1.0 / 255.0

_linear_tables: dict[np.dtype, np.ndarray] = {}


#: row lengths are padded to a multiple of this, so that every pixel takes
#: OpenCV's vectorised path (its scalar tail differs by up to 3e-4 in L*, so
#: equal colours would not map to equal values)
_ROW_MULTIPLE = 64


def _convert(colours: np.ndarray, code: int) -> np.ndarray:
    """``cv2.cvtColor`` of float32 colours ``(..., 3)``, laid out as a few long rows.

    OpenCV works row by row (and splits rows across threads), so ``k`` rows of
    ``N / k`` pixels avoid the per-row overhead of a column of ``N`` one-pixel
    rows. Rows are padded to a multiple of ``_ROW_MULTIPLE``
    pixels, so equal colours always give equal results.
    """
    flat = np.ascontiguousarray(colours, dtype=np.float32).reshape(-1, 3)
    n = len(flat)
    rows = max(1, min(64, n // 4096))
    width = -(-n // rows)
    width += -width % _ROW_MULTIPLE
    padded = np.zeros((rows * width, 3), dtype=np.float32)
    padded[:n] = flat
    out = cv2.cvtColor(padded.reshape(rows, width, 3), code).reshape(-1, 3)[:n]
    return out.reshape(colours.shape)


def check_rgb_dtype(dtype: np.dtype, name: str = "X") -> np.dtype:
    """Return ``dtype`` if it can hold RGB colours, else raise ``TypeError``.

    uint8 and uint16 are scaled by their full scale, float32 and float64 are
    taken as ``[0, 1]``. Signed integers have no agreed colour scale.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml._color import check_rgb_dtype
    >>> check_rgb_dtype(np.dtype(np.uint16))
    dtype('uint16')
    """
    dtype = np.dtype(dtype)
    if dtype in _FULL_SCALE or dtype.kind == "f":
        return dtype
    raise TypeError(
        f"{name} must be RGB of dtype uint8, uint16, float32 or float64 (floats in "
        f"[0, 1]) for CIELAB conversion; got dtype {dtype}"
    )


def full_scale(dtype: np.dtype) -> float:
    """The value of full intensity: 255, 65535, or 1.0 for floats.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml._color import full_scale
    >>> full_scale(np.uint8), full_scale(np.float32)
    (255.0, 1.0)
    """
    dtype = check_rgb_dtype(np.dtype(dtype), "image")
    return _FULL_SCALE.get(dtype, 1.0)


def to_unit(pixels: np.ndarray, name: str = "X") -> np.ndarray:
    """RGB values scaled to ``[0, 1]`` as float32 (a new array).

    uint8 is divided by 255 and uint16 by 65535; floats are taken as already
    in ``[0, 1]``: values beyond it by up to :data:`FLOAT_TOLERANCE` are
    clipped, larger excursions raise ``ValueError`` (a 0..255 float image is
    a mistake this catches).

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml._color import to_unit
    >>> to_unit(np.array([[0, 51, 255]], dtype=np.uint8))
    array([[0. , 0.2, 1. ]], dtype=float32)
    """
    dtype = check_rgb_dtype(pixels.dtype, name)
    if dtype.kind == "f":
        lo, hi = float(pixels.min()), float(pixels.max())
        if lo < -FLOAT_TOLERANCE or hi > 1.0 + FLOAT_TOLERANCE:
            raise ValueError(
                f"{name} must hold float RGB values in [0, 1] for CIELAB conversion; "
                f"got values in [{lo:.4g}, {hi:.4g}] (scale 0..255 data by 1/255 first)"
            )
        out = np.clip(pixels, 0.0, 1.0).astype(np.float32, copy=False)
        out += np.float32(0.0)  # -0.0 -> 0.0, so equal colours have equal bits
        return out
    return pixels.astype(np.float32) * np.float32(1.0 / _FULL_SCALE[dtype])


def srgb_to_linear(unit: np.ndarray) -> np.ndarray:
    """The exact sRGB decoding curve (IEC 61966-2-1) of values in ``[0, 1]``, float32.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml._color import srgb_to_linear
    >>> srgb_to_linear(np.array([0.0, 0.5, 1.0])).round(3)
    array([0.   , 0.214, 1.   ], dtype=float32)
    """
    x = np.asarray(unit, dtype=np.float64)
    out = np.where(x > 0.04045, ((x + 0.055) / 1.055) ** 2.4, x / 12.92)
    return out.astype(np.float32)


def _linear_table(dtype: np.dtype) -> np.ndarray:
    """Linear intensity of every code of an 8/16-bit dtype (cached, float32)."""
    table = _linear_tables.get(dtype)
    if table is None:
        codes = np.arange(int(_FULL_SCALE[dtype]) + 1, dtype=np.float64) / _FULL_SCALE[dtype]
        table = _linear_tables.setdefault(dtype, srgb_to_linear(codes))
    return table


def rgb_to_lab(pixels: np.ndarray, name: str = "X") -> np.ndarray:
    """CIELAB (D65) of RGB colours ``(..., 3)`` of any supported dtype, float32.

    Integer codes are linearised through an exact per-code table, floats
    through :func:`srgb_to_linear`; ``cv2.COLOR_LRGB2Lab`` does the rest.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml._color import rgb_to_lab
    >>> rgb_to_lab(np.array([[255, 255, 255], [255, 0, 0]], dtype=np.uint8)).round(1)
    array([[100. ,   0. ,   0. ],
           [ 53.2,  80.1,  67.2]], dtype=float32)
    """
    pixels = np.asarray(pixels)
    if pixels.shape[-1:] != (3,):
        raise ValueError(f"{name} must hold RGB colours (last axis of 3); got {pixels.shape}")
    dtype = check_rgb_dtype(pixels.dtype, name)
    if dtype in _FULL_SCALE:
        linear = _linear_table(dtype)[pixels]
    else:
        linear = srgb_to_linear(to_unit(pixels, name))
    return _convert(linear, cv2.COLOR_LRGB2Lab)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """RGB in ``[0, 1]`` (float32) of CIELAB colours ``(..., 3)``.

    Colours outside the sRGB gamut are clipped channel-wise to ``[0, 1]``
    (OpenCV's float conversion always clips).

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml._color import lab_to_rgb
    >>> lab_to_rgb(np.array([[100.0, 0.0, 0.0], [50.0, 0.0, 0.0]])).round(3)
    array([[1.   , 1.   , 1.   ],
           [0.466, 0.466, 0.466]], dtype=float32)
    """
    return _convert(np.asarray(lab, dtype=np.float32), cv2.COLOR_Lab2RGB)
