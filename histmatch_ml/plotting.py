"""Matplotlib helpers (the ``[plot]`` extra): before/after figures and CDFs.

matplotlib is imported lazily, so the core package never needs it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _images

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
