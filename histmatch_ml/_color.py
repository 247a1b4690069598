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


# ------------------------------------------------------------------ lightness
#: linear sRGB -> CIE XYZ (D65), each row divided by the white point's value, so that
#: linear white (1, 1, 1) is X/Xn = Y/Yn = Z/Zn = 1 exactly
_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_XYZ /= _XYZ.sum(axis=1, keepdims=True)
_RGB = np.linalg.inv(_XYZ)
_EPS = (6 / 29) ** 3  # where the CIELAB curve turns from a cube root to a line


def _with_toe(curve: np.ndarray, x: np.ndarray, knee: float, toe) -> np.ndarray:
    """``curve`` (of ``x``, written over) with ``toe(x)`` where ``x`` is not above ``knee``.

    ``np.where(x > knee, curve, toe(x))``; where the toe holds few values (as
    it holds few of an image's), computed for those values only.
    """
    low = ~(x > knee)
    n_low = np.count_nonzero(low)
    if n_low * 8 <= low.size:
        if n_low:
            curve[low] = toe(x[low])
    else:
        np.copyto(curve, toe(x), where=low)
    return curve


def _each_colour(test: np.ndarray, both: bool) -> np.ndarray:
    """Per colour of a boolean ``(..., 3)`` test, flat: all three true (``both``), or any.

    Three column operations: a numpy reduction over an axis of three is slow.
    """
    cols = test.reshape(-1, 3)
    if both:
        return cols[:, 0] & cols[:, 1] & cols[:, 2]
    return cols[:, 0] | cols[:, 1] | cols[:, 2]


def _lab_f(t: np.ndarray) -> np.ndarray:
    """The CIELAB compression curve ``f`` (cube root with a linear toe), float64."""
    return _with_toe(np.cbrt(t), t, _EPS, lambda t: t / (3 * (6 / 29) ** 2) + 4 / 29)


def _lab_f_inverse(f: np.ndarray) -> np.ndarray:
    return _with_toe(f**3, f, 6 / 29, lambda f: 3 * (6 / 29) ** 2 * (f - 4 / 29))


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """The exact sRGB encoding curve of linear values in ``[0, 1]``, float64.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml._color import linear_to_srgb, srgb_to_linear
    >>> x = np.array([0.0, 0.002, 0.5, 1.0])
    >>> bool(np.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-6))
    True
    """
    x = np.asarray(linear, dtype=np.float64)
    curve = np.maximum(x, 0)
    curve **= 1 / 2.4
    curve *= 1.055
    curve -= 0.055
    return _with_toe(curve, x, 0.0031308, lambda x: 12.92 * x)


def _linear(pixels: np.ndarray, name: str) -> np.ndarray:
    """Linear intensities (float32) of RGB or grey values of any supported dtype."""
    dtype = check_rgb_dtype(pixels.dtype, name)
    if dtype in _FULL_SCALE:
        return _linear_table(dtype)[pixels]
    return srgb_to_linear(to_unit(pixels, name))


def lightness(pixels: np.ndarray, name: str = "X") -> np.ndarray:
    """CIELAB L* (D65) of RGB ``(..., 3)`` or grey ``(..., 1)`` values, float32 ``(...)``.

    A grey value ``v`` has the lightness of the RGB grey ``(v, v, v)``; the
    formulas are the CIE's (exact, not OpenCV's table), so RGB greys and grey
    values agree to the last bits.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml._color import lightness
    >>> lightness(np.array([[255, 255, 255], [255, 0, 0], [0, 0, 0]], np.uint8)).round(2)
    array([100.  ,  53.24,   0.  ], dtype=float32)
    >>> lightness(np.array([[128]], np.uint8)), lightness(np.array([[128, 128, 128]], np.uint8))
    (array([53.585], dtype=float32), array([53.585], dtype=float32))
    """
    pixels = np.asarray(pixels)
    if pixels.shape[-1:] not in ((1,), (3,)):
        raise ValueError(
            f"{name} must hold grey or RGB values (last axis of 1 or 3); got {pixels.shape}"
        )
    linear = _linear(pixels, name).astype(np.float64)
    y = linear[..., 0] if pixels.shape[-1] == 1 else linear @ _XYZ[1]
    return (116 * _lab_f(y) - 16).astype(np.float32)


def with_lightness(pixels: np.ndarray, light: np.ndarray, name: str = "X") -> np.ndarray:
    """RGB (or grey) colours given the CIELAB lightness ``light``, keeping a* and b*.

    ``pixels`` is ``(..., 3)`` RGB or ``(..., 1)`` grey of any supported
    dtype, ``light`` ``(...)`` the new L* (clipped to ``[0, 100]``). Returns
    float32 values in ``[0, 1]`` of the shape of ``pixels``. A colour whose
    new lightness leaves the sRGB gamut is brought back at that lightness
    and hue by scaling its chroma (a* and b* together) down to the largest
    factor that fits (bisection, to 1e-6 of the chroma), never by clipping R,
    G and B on their own, which shifts hue.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml._color import lightness, rgb_to_lab, with_lightness
    >>> tan = np.array([[150, 120, 100]], dtype=np.uint8)
    >>> darker = with_lightness(tan, np.array([40.0]))
    >>> lightness(darker).round(3)
    array([40.], dtype=float32)
    >>> (rgb_to_lab(darker)[0, 1:] - rgb_to_lab(tan)[0, 1:]).round(1)  # a*, b* kept
    array([0., 0.], dtype=float32)

    A saturated red made very light leaves the gamut: it keeps L* and hue.

    >>> red = np.array([[200, 30, 30]], dtype=np.uint8)
    >>> lab, lab_red = rgb_to_lab(with_lightness(red, np.array([90.0])))[0], rgb_to_lab(red)[0]
    >>> float(lab[0].round(1)), bool(np.hypot(*lab[1:]) < np.hypot(*lab_red[1:]))
    (90.0, True)
    >>> bool(abs(np.arctan2(lab[2], lab[1]) - np.arctan2(lab_red[2], lab_red[1])) < 0.01)
    True
    """
    pixels = np.asarray(pixels)
    new_f = (np.clip(np.asarray(light, dtype=np.float64), 0.0, 100.0) + 16) / 116
    linear = _linear(pixels, name).astype(np.float64)
    if pixels.shape[-1] == 1:
        out = _lab_f_inverse(new_f)[..., None]
        return np.clip(linear_to_srgb(out), 0.0, 1.0).astype(np.float32)
    f = _lab_f(linear @ _XYZ.T)
    chroma = f - f[..., 1:2]  # (a* / 500, 0, -b* / 200): kept as it is, or scaled down
    out = _lab_f_inverse(new_f[..., None] + chroma) @ _RGB.T
    tol = 1e-6  # (the float32 rounding of L* alone must not move a colour on the gamut's surface)
    outside = np.flatnonzero(_each_colour((out < -tol) | (out > 1 + tol), both=False))
    if outside.size:
        flat_out, flat_chroma = out.reshape(-1, 3), chroma.reshape(-1, 3)[outside]
        base = new_f.reshape(-1)[outside, None]
        lo, hi = np.zeros(outside.size), np.ones(outside.size)
        for _ in range(20):  # bisection on the chroma factor; 0 (grey) always fits
            mid = (lo + hi) / 2
            rgb = _lab_f_inverse(base + mid[:, None] * flat_chroma) @ _RGB.T
            fits = _each_colour((rgb >= -tol) & (rgb <= 1 + tol), both=True)
            lo = np.where(fits, mid, lo)
            hi = np.where(fits, hi, mid)
        flat_out[outside] = _lab_f_inverse(base + lo[:, None] * flat_chroma) @ _RGB.T
    encoded = linear_to_srgb(np.clip(out, 0.0, 1.0, out=out))
    return np.clip(encoded, 0.0, 1.0, out=encoded).astype(np.float32)
