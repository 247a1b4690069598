"""Matplotlib helpers (the ``[plot]`` extra): before/after figures and CDFs.

:func:`plot_matching` shows a source, its matched version and the reference
with their per-channel CDFs; :func:`plot_reference_quantiles` shows what a
fitted :class:`~histmatch_ml.HistogramMatcher` has learned. matplotlib is
imported lazily, so the core package never needs it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _images, _reference

_CHANNEL_COLOURS = ("tab:red", "tab:green", "tab:blue", "tab:gray")


def _pyplot():
    try:
        import matplotlib

        if matplotlib.get_backend().lower() not in (
            "agg",
            "module://matplotlib_inline.backend_inline",
        ):
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(
            "histmatch_ml.plotting needs matplotlib: pip install 'histmatch_ml[plot]'"
        ) from exc
    return plt


def _as_hwc(image: Any, name: str) -> np.ndarray:
    wrapped, _ = _images.wrap_single(image, name)
    return _images.to_batch(wrapped, name=name).images[0]


def _cdf_curves(ax, image: np.ndarray, title: str, style: str = "-") -> None:
    n_channels = image.shape[2]
    for c in range(n_channels):
        values = np.sort(image[:, :, c].ravel().astype(np.float64))
        p = (np.arange(values.size) + 0.5) / values.size
        step = max(1, values.size // 2000)
        colour = _CHANNEL_COLOURS[c] if n_channels in (3, 4) else "black"
        ax.plot(values[::step], p[::step], style, color=colour, lw=1.2)
    ax.set_title(title)
    ax.set_xlabel("value")
    ax.set_ylim(0, 1)


def _show(ax, image: np.ndarray, title: str) -> None:
    shown = image[:, :, 0] if image.shape[2] == 1 else image[:, :, :3]
    if shown.dtype.kind == "f":
        shown = np.clip(shown, 0.0, 1.0)
    elif shown.dtype != np.uint8:
        shown = shown.astype(np.float64) / max(float(shown.max()), 1.0)
    ax.imshow(shown, cmap="gray" if image.shape[2] == 1 else None)
    ax.set_title(title)
    ax.axis("off")


def plot_matching(source: Any, matched: Any, reference: Any, *, title: str | None = None):
    """Show source, matched and reference images above their per-channel CDFs.

    Parameters
    ----------
    source, matched, reference : ndarray of shape (H, W) or (H, W, C), or PIL.Image
        The images; sizes may differ.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        A 2 x 3 figure: images on top, empirical CDFs (one curve per
        channel) below, the reference's CDF dashed over the matched one.

    Raises
    ------
    ImportError
        If matplotlib is not installed (``pip install 'histmatch_ml[plot]'``).
    TypeError, ValueError
        If an image is not an accepted image (see
        :class:`~histmatch_ml.HistogramMatcher`).

    See Also
    --------
    plot_reference_quantiles : What a fitted matcher has learned.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml import match_histograms
    >>> from histmatch_ml.plotting import plot_matching
    >>> rng = np.random.default_rng(0)
    >>> src = rng.integers(0, 128, (32, 32, 3), dtype=np.uint8)
    >>> ref = rng.integers(64, 256, (24, 24, 3), dtype=np.uint8)
    >>> fig = plot_matching(src, match_histograms(src, ref), ref)
    >>> len(fig.axes)
    6
    """
    plt = _pyplot()
    images = [
        _as_hwc(source, "source"),
        _as_hwc(matched, "matched"),
        _as_hwc(reference, "reference"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.5), height_ratios=[3, 2])
    for ax, image, name in zip(axes[0], images, ("source", "matched", "reference")):
        _show(ax, image, name)
    for ax, image, name in zip(axes[1], images, ("source CDF", "matched CDF", "reference CDF")):
        _cdf_curves(ax, image, name)
    _cdf_curves(axes[1][1], images[2], "matched CDF (reference dashed)", style="--")
    axes[1][0].set_ylabel("fraction of pixels")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _channel_label(c: int, n_channels: int) -> str:
    if n_channels == 1:
        return "grey"
    if n_channels in (3, 4):
        return "RGBA"[c]
    return f"channel {c}"


def plot_reference_quantiles(matcher: Any, *, ax: Any = None, title: str | None = None):
    """Plot the reference quantile function a fitted matcher has learned.

    One curve per channel: the value below which a fraction ``p`` of the
    pooled reference pixels lie, for ``p`` from 0 to 1. This is the curve
    every image is mapped onto (for 8/16-bit references it is read from the
    exact pooled histograms, for float references from the quantile sketch).

    Parameters
    ----------
    matcher : HistogramMatcher
        A fitted matcher whose method keeps per-channel state
        (``"per_channel"`` or ``"exact"``).
    ax : matplotlib.axes.Axes, optional
        Axes to draw into; a new figure is made when omitted.
    title : str, optional
        Axes title; by default the method and how much was learned from.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the plot.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``matcher`` has not been fitted.
    ValueError
        If the matcher's learned state is not per channel (``method="lab"``
        learns a joint colour distribution, not one curve per channel).
    ImportError
        If matplotlib is not installed (``pip install 'histmatch_ml[plot]'``).

    See Also
    --------
    plot_matching : Source, matched and reference images with their CDFs.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml import HistogramMatcher
    >>> from histmatch_ml.plotting import plot_reference_quantiles
    >>> rng = np.random.default_rng(0)
    >>> refs = rng.integers(40, 220, size=(3, 32, 32, 3), dtype=np.uint8)
    >>> fig = plot_reference_quantiles(HistogramMatcher().fit(refs))
    >>> [line.get_label() for line in fig.axes[0].get_lines()]
    ['R', 'G', 'B']
    """
    from sklearn.utils.validation import check_is_fitted

    from .methods import get_method

    check_is_fitted(matcher, "reference_")
    if get_method(matcher.method_).state_kind != "channels":
        raise ValueError(
            "matcher must hold per-channel reference quantiles (method 'per_channel' or "
            f"'exact'); got a matcher fitted with method={matcher.method_!r}"
        )
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    n_channels = int(matcher.n_channels_)
    for c in range(n_channels):
        p, v = _reference.quantile_points(matcher.tables_, c)
        colour = _CHANNEL_COLOURS[c] if n_channels in (3, 4) else None
        if n_channels == 1:
            colour = "black"
        ax.plot(p, v, "-", color=colour, lw=1.4, label=_channel_label(c, n_channels))
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability p")
    ax.set_ylabel(f"reference value ({matcher.dtype_})")
    if title is None:
        title = (
            f"learned reference quantiles: method={matcher.method_!r}, "
            f"{matcher.n_images_seen_} image(s), {matcher.n_pixels_seen_:,} pixels"
        )
    ax.set_title(title, fontsize="medium")
    if n_channels > 1:
        ax.legend(loc="upper left", frameon=False)
    ax.grid(True, alpha=0.3)
    return ax.figure
