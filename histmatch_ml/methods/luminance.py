"""Lightness matching: ``method="luminance"``.

Matches the distribution of CIELAB lightness L* (D65) to the references' and
keeps every pixel's a* and b* (its chroma and hue), for users who want
brightness and contrast to follow the reference without the colours changing
(microscopy, remote sensing, sets of photographs).

L* is computed as a one-channel float image (:func:`histmatch_ml._color.lightness`)
and matched by the per-channel method itself: the learned state is the
per-channel state of the references' L* images, learned, merged, checked and
applied by that method's own hooks (so it has exactly its conventions:
midpoint CDFs, exact or sketched references, masks). Grey values count as the
RGB greys they are, so:

* RGB images against RGB references match their L* to the references' L*;
* grey images against RGB references take the references' L* distribution
  (and stay grey), and RGB images against grey references take theirs;
* grey against grey is per-channel matching on the L* scale.

Back from the new L*, a colour keeps its a* and b* where that is inside the
sRGB gamut; otherwise its chroma is scaled down, at the new L* and the same
hue, to the largest that fits (:func:`histmatch_ml._color.with_lightness`).
Images and references are read on each dtype's colour scale (8/16-bit
integers by their full scale, floats in ``[0, 1]``). Both conversions run by
bands of rows, so their float64 work arrays are a band's, not the image's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _color, _images
from ._base import MatchingMethod, finish, get_method, register, row_bands
from .per_channel import PerChannel

#: ``row_bands`` arguments of the colour conversions, which take some 200 bytes a pixel of
#: float64 work arrays (with_lightness) band by band: a part of a small image, bounded for
#: a large one
_BAND_PIXELS = (2**14, 2**16, 16)


def _lightness_image(image: np.ndarray, name: str) -> np.ndarray:
    """The L* of an ``(H, W, 1 or 3)`` image as an ``(H, W, 1)`` float32 image, by bands."""
    light = np.empty((*image.shape[:2], 1), dtype=np.float32)
    for rows in row_bands(image.shape, *_BAND_PIXELS):
        light[rows, :, 0] = _color.lightness(image[rows], name)
    return light


@register
class Luminance(MatchingMethod):
    """Match the CIELAB lightness distribution, keeping chroma and hue."""

    name = "luminance"
    summary = (
        "matches the lightness (CIELAB L*) distribution and keeps each pixel's chroma and "
        "hue; grey and colour images and references mix"
    )
    params = PerChannel.params
    state_kind = "luminance"
    raw_values = False  # colours are read on each dtype's full scale
    any_channels = True

    @staticmethod
    def _channels() -> MatchingMethod:
        """The per-channel method that learns and matches the L* images."""
        return get_method("per_channel")

    def check_channels(self, n_channels: int, name: str) -> None:
        if n_channels not in (1, 3):
            raise ValueError(
                f"method='luminance' needs grey (1 channel) or RGB (3 channels) images; "
                f"{name} has {n_channels} channels"
            )

    def learn(self, batch, params: dict[str, Any], rng, like=None) -> dict:
        _color.check_rgb_dtype(batch.dtype, "X")
        lights = [_lightness_image(image, "X") for image in batch.images]
        return self._channels().learn(
            _images.Batch(lights, batch.masks, batch.kind), params, rng, like
        )

    def merge(self, a: dict, na: int, b: dict, nb: int, params: dict[str, Any]) -> dict:
        return self._channels().merge(a, na, b, nb, params)

    def prepare(self, state: dict, params: dict[str, Any]) -> dict:
        return self._channels().prepare(state, params)

    def check_state(self, state: Any, n_channels: int | None) -> int | None:
        """Validate a stored state: a per-channel state of one channel (the L*)."""
        if n_channels not in (None, 1, 3):
            raise ValueError(f"a luminance state needs n_channels_ 1 or 3; got {n_channels}")
        return self._channels().check_state(state, 1)

    def apply(self, image, mask, state, tables, params, out) -> None:
        light = _lightness_image(image, "X")
        matched = np.empty_like(light)
        self._channels().apply(light, mask, state, tables, {**params, "strength": 1.0}, matched)
        del light
        scale = np.float32(_color.full_scale(image.dtype))
        for rows in row_bands(image.shape, *_BAND_PIXELS):
            unit = _color.with_lightness(image[rows], matched[rows, :, 0], "X")
            if scale != 1.0:
                unit *= scale
            band_mask = None if mask is None else mask[rows]
            finish(image[rows], unit, band_mask, params["strength"], out[rows])
