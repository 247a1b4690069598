"""Joint colour matching in CIELAB: ``method="lab"``.

Per-channel RGB matching treats R, G and B as independent, so it shifts hues
and cannot reproduce the reference's colour *combinations*. This method moves
the image's CIELAB colours towards the joint 3-D colour distribution of the
reference by iterative distribution transfer (Pitie, Kokaram & Dahyot 2005,
2007), a form of sliced optimal transport (Rabin, Peyre, Delon & Bernot 2011):
each iteration rotates the colour space, matches the three 1-D marginals along
the rotated axes to the reference's by quantile matching, and rotates back.

Learned state (plain arrays, no reference pixels kept):

* ``"rotations"`` ``(K, 3, 3)``: orthonormal bases, the first the LAB axes
  themselves, the others drawn at random from the ``Generator`` given to the
  first fit (``K = n_iter`` at that fit). Later ``partial_fit`` calls reuse
  them, and ``transform`` cycles through them for ``n_iter`` iterations.
* ``"projected_quantiles"`` ``(3 K, n_quantiles)``: quantile sketches of the reference
  LAB colours projected on every row of every rotation (Hazen/midpoint
  convention), on a fixed 65,536-node grid per direction (0.005 LAB units).
  They merge with :func:`histmatch_ml._reference.merge_quantiles`, whose
  tolerance (``1 / (n_quantiles - 1) + 1 / N`` in probability, per direction)
  is the tolerance of ``partial_fit``.
* ``"dtype"``: the reference dtype (informative: the state lives in CIELAB,
  so images of any RGB dtype can be matched to it).

``lab_mode="marginal"`` uses only the first rotation once: classic per-channel
quantile matching of L, a and b, cheap and structure-preserving.

Speed and colour consistency come from the same trick: the image's *unique*
colours are transferred (weighted by their pixel counts), and every pixel takes
the result of its colour, so equal colours give equal outputs. Each 1-D match
counts the weighted projections on a uniform grid (``bincount``, no sorting)
and maps them through the midpoint CDF and the reference quantile function,
interpolating linearly between grid nodes.

Back in RGB, the displacement ``lab_to_rgb(out) - lab_to_rgb(in)`` is added to
the input colour, which cancels the conversion's round-trip error (a colour
that does not move comes back bit-exact); out-of-gamut results are clipped
channel-wise to ``[0, 1]``. ``regrain=True`` then applies Pitie's regrain post-process, which keeps
the transferred colours but restores the source's gradients (the output is then
no longer a pure function of the colour).
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import cv2
import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from .. import _color, _reference
from ._base import N_QUANTILES, MatchingMethod, Param, blend, finish, register

#: grid nodes of the per-image source CDF along each projection
SOURCE_GRID_NODES = 4096
#: grid nodes of the reference histograms along each direction
REFERENCE_GRID_NODES = 65536
#: the upper bound of ``n_iter`` (its declaration, and the transfer's own check)
MAX_ITERATIONS = 1000
#: a box holding every CIELAB colour of the sRGB gamut (L, a, b lower and upper)
_LAB_BOX = np.array([[0.0, -128.0, -128.0], [100.0, 128.0, 128.0]])


# --------------------------------------------------------------------------- colours
def unique_colours(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct colours of ``(N, 3)`` RGB pixels, the index of each pixel's colour, counts.

    Integers are packed into one key (24 bits for uint8, 48 for uint16);
    floats are compared as float32 in ``[0, 1]`` (see :func:`_color.to_unit`)
    by two packed-key passes over their bit patterns.

    Returns
    -------
    colours : ndarray of shape (U, 3)
        The distinct colours: the input dtype for integers, float32 in
        ``[0, 1]`` for floats.
    inverse : ndarray of shape (N,)
        ``colours[inverse]`` rebuilds the pixels.
    counts : ndarray of shape (U,)
        Pixels per colour.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.methods.lab import unique_colours
    >>> px = np.array([[1, 2, 3], [0, 0, 9], [1, 2, 3]], dtype=np.uint8)
    >>> colours, inverse, counts = unique_colours(px)
    >>> colours.tolist(), inverse.tolist(), counts.tolist()
    ([[0, 0, 9], [1, 2, 3]], [1, 0, 1], [1, 2])
    """
    dtype = _color.check_rgb_dtype(pixels.dtype, "image")
    if dtype.kind == "u":
        bits = 8 * dtype.itemsize
        wide = np.uint32 if bits == 8 else np.uint64
        key = pixels[:, 0].astype(wide) << wide(2 * bits)
        key |= pixels[:, 1].astype(wide) << wide(bits)
        key |= pixels[:, 2]
        keys, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        mask = wide((1 << bits) - 1)
        colours = np.stack(
            [keys >> wide(2 * bits), (keys >> wide(bits)) & mask, keys & mask], axis=1
        ).astype(dtype)
        return colours, inverse.ravel(), counts
    unit = _color.to_unit(pixels, "image")
    u = unit.view(np.uint32).astype(np.uint64)
    _, first_two = np.unique((u[:, 0] << np.uint64(32)) | u[:, 1], return_inverse=True)
    key = (first_two.ravel().astype(np.uint64) << np.uint64(32)) | u[:, 2]
    _, index, inverse, counts = np.unique(
        key, return_index=True, return_inverse=True, return_counts=True
    )
    return unit[index], inverse.ravel(), counts


# ------------------------------------------------------------------------ 1-D maps
def _grid_positions(proj: np.ndarray, lo: np.ndarray, hi: np.ndarray, n_nodes: int) -> np.ndarray:
    """Positions of the rows of ``proj`` ``(D, M)`` on one flat grid of ``D * n_nodes`` nodes.

    Row ``k`` spans ``[lo[k], hi[k]]`` on nodes ``k * n_nodes ... (k + 1) *
    n_nodes - 1`` (values outside are clipped to the ends), so counting and
    lookups run once over all rows. float32, like ``proj``.
    """
    n_rows = proj.shape[0]
    scale = (n_nodes - 1) / np.maximum(hi - lo, 1e-6)
    start = np.arange(n_rows) * n_nodes
    t = proj * scale.astype(np.float32)[:, None]
    t += (start - lo * scale).astype(np.float32)[:, None]
    return np.clip(t, start[:, None], (start + n_nodes - 1)[:, None], out=t)


def _grid_counts(t: np.ndarray, flat_weights: np.ndarray, n_nodes: int) -> np.ndarray:
    """Weighted counts ``(D, n_nodes)`` of flat grid positions ``t`` at their nearest node.

    ``flat_weights`` holds one weight per element of ``t`` (row-major).
    """
    nearest = np.rint(t).astype(np.intp).ravel()
    counts = np.bincount(nearest, weights=flat_weights, minlength=t.shape[0] * n_nodes)
    return counts.reshape(t.shape[0], n_nodes)


def _rotate(r: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``r @ x`` for a 3x3 ``r`` and a wide ``(3, M)`` ``x``, without BLAS.

    einsum's own loop: no thread start-up of a BLAS call for a 3x3 product,
    and the same bits for the same column wherever it sits.
    """
    return np.einsum("ij,jk->ik", r, x)


def _displacements(
    x: np.ndarray, r: np.ndarray, flat_weights: np.ndarray, ref_quantiles: np.ndarray, n_nodes: int
) -> np.ndarray:
    """Moves ``(3, U)`` along the rows of ``r`` that quantile-match the projections ``r @ x``.

    ``x`` holds the colours as columns, ``flat_weights`` their weights
    repeated for each row of ``r`` (``np.tile(weights, 3)``), and
    ``ref_quantiles`` ``(3, n_q)`` the reference sketches along the rows.

    Each projection is placed on an ``n_nodes`` grid spanning the projection
    of the colours' bounding box, every weight shared linearly between its two
    neighbouring nodes. A node's matched value is the reference quantile at
    the node's weighted midpoint CDF, and a colour's move is interpolated
    linearly between the moves of its two nodes. A colour of weight ``h``
    thus maps to the middle of its own probability mass wherever it sits
    between nodes, so the map is continuous in the colours (counting at the
    nearest node would make heavy colours jump as they cross a node, and
    iterations would amplify the jumps). The grid scale is folded into the
    rotation, so the projections themselves are never formed.
    """
    n_axes = r.shape[0]
    r64 = r.astype(np.float64)
    x_lo, x_hi = x.min(axis=1).astype(np.float64), x.max(axis=1).astype(np.float64)
    lo = np.minimum(r64 * x_lo, r64 * x_hi).sum(axis=1)
    hi = np.maximum(r64 * x_lo, r64 * x_hi).sum(axis=1)
    pad = 1e-3 * (hi - lo) + 1e-3  # keeps float32 rounding inside the grid
    lo -= pad
    hi += pad
    step = (hi - lo) / (n_nodes - 1)
    start = np.arange(n_axes) * n_nodes  # row k uses nodes k * n_nodes ...
    t = _rotate((r64 / step[:, None]).astype(np.float32), x)
    t += (start - lo / step).astype(np.float32)[:, None]
    whole = np.floor(t)
    t -= whole  # now the fraction between nodes i and i + 1
    i = whole.astype(np.intp).ravel()
    frac = t.ravel()
    upper = flat_weights * frac
    size = n_axes * n_nodes + 1
    counts = np.bincount(i, weights=flat_weights - upper, minlength=size)
    counts[1:] += np.bincount(i, weights=upper, minlength=size - 1)
    cdf = _reference.midpoint_cdf(counts[:-1].reshape(n_axes, n_nodes))
    probs = _reference.probability_grid(ref_quantiles.shape[1])
    moves = np.stack([np.interp(cdf[k], probs, ref_quantiles[k]) for k in range(n_axes)])
    moves -= lo[:, None] + np.arange(n_nodes) * step[:, None]  # matched value - node value
    flat_moves = moves.astype(np.float32).ravel()
    # no colour sits on a row's last node (the pad), so the step it reads is never used
    steps = np.diff(flat_moves, append=flat_moves[-1:])
    out = flat_moves[i]
    frac *= steps[i]
    out += frac
    return out.reshape(n_axes, -1)


def transfer(
    lab: np.ndarray, weights: np.ndarray, state: dict, n_iter: int, joint: bool = True
) -> np.ndarray:
    """Move weighted LAB colours ``(U, 3)`` towards the reference of ``state``.

    ``joint=True``: ``n_iter`` iterations of distribution transfer, cycling
    through ``state["rotations"]``. ``joint=False``: one per-axis quantile
    match along the LAB axes (the first rotation). Returns float32 ``(U, 3)``.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.methods.lab import learn_state, transfer
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal([60, 20, -10], [5, 8, 3], size=(5000, 3)).astype(np.float32)
    >>> state = learn_state([ref], [np.ones(5000)], np.random.default_rng(1), 10, 256)
    >>> src = rng.normal([40, 0, 0], [10, 4, 4], size=(3000, 3)).astype(np.float32)
    >>> out = transfer(src, np.ones(3000), state, n_iter=10)
    >>> bool(np.abs(out.mean(axis=0) - [60, 20, -10]).max() < 0.5)
    True
    """
    if not 1 <= n_iter <= MAX_ITERATIONS:  # (n_iter is read at transform time)
        raise ValueError(f"n_iter must be in [1, {MAX_ITERATIONS}]; got {n_iter}")
    rotations = state["rotations"].astype(np.float32)
    quantiles = state["projected_quantiles"]
    x = np.array(np.asarray(lab).T, dtype=np.float32, order="C")  # (3, U), a copy
    flat_weights = np.tile(np.asarray(weights, dtype=np.float32), 3)
    for it in range(n_iter if joint else 1):
        k = it % len(rotations)
        r = rotations[k]
        moves = _displacements(x, r, flat_weights, quantiles[3 * k : 3 * k + 3], SOURCE_GRID_NODES)
        x += _rotate(r.T, moves)
    return np.ascontiguousarray(x.T)


# ------------------------------------------------------------------------- learning
def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` rotations ``(n, 3, 3)``: the identity, then ``n - 1`` uniform random ones.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.methods.lab import random_rotations
    >>> r = random_rotations(np.random.default_rng(0), 4)
    >>> r.shape, np.allclose(r @ r.transpose(0, 2, 1), np.eye(3))
    ((4, 3, 3), True)
    """
    out = np.empty((n, 3, 3))
    out[0] = np.eye(3)
    if n > 1:
        from scipy.stats import special_ortho_group  # (slow to import: on use)

        out[1:] = special_ortho_group.rvs(3, size=n - 1, random_state=rng).reshape(n - 1, 3, 3)
    return out


def learn_state(
    labs: list[np.ndarray],
    weights: list[np.ndarray],
    rng: np.random.Generator | None,
    n_rotations: int,
    n_quantiles: int,
    rotations: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The reference state of weighted LAB colours (see the module docstring).

    ``rotations`` are reused when given (``partial_fit``); otherwise
    ``n_rotations`` are drawn from ``rng``. Each direction is histogrammed
    on a fixed grid spanning the projection of the LAB gamut box, so the
    colours of many images are accumulated without being kept.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.methods.lab import learn_state
    >>> lab = np.array([[50.0, 0.0, 0.0], [70.0, 10.0, -5.0]], dtype=np.float32)
    >>> state = learn_state([lab], [np.array([3, 1])], np.random.default_rng(0), 5, 64)
    >>> state["rotations"].shape, state["projected_quantiles"].shape
    ((5, 3, 3), (15, 64))
    >>> state["projected_quantiles"][0, [0, -1]].round(2)  # L along the first (identity) rotation
    array([50., 70.])
    """
    if rotations is None:
        rotations = random_rotations(rng, n_rotations)
    directions = rotations.reshape(-1, 3)
    # projection of the box on each direction: the grid bounds
    lo = np.minimum(directions * _LAB_BOX[0], directions * _LAB_BOX[1]).sum(axis=1)
    hi = np.maximum(directions * _LAB_BOX[0], directions * _LAB_BOX[1]).sum(axis=1)
    n = REFERENCE_GRID_NODES
    dirs32 = directions.astype(np.float32)
    flat_ws = [np.tile(np.asarray(w, dtype=np.float64), 3) for w in weights]
    labs_t = [np.ascontiguousarray(np.asarray(lab, dtype=np.float32).T) for lab in labs]
    probs = _reference.probability_grid(n_quantiles)
    quantiles = np.empty((len(directions), n_quantiles))
    for k in range(len(rotations)):  # 3 directions at a time: memory of one rotation's grid
        sl = slice(3 * k, 3 * k + 3)
        counts = np.zeros((3, n))
        for lab_t, flat_w in zip(labs_t, flat_ws):
            t = _grid_positions(_rotate(dirs32[sl], lab_t), lo[sl], hi[sl], n)
            counts += _grid_counts(t, flat_w, n)
        for d in range(3):
            nodes = np.linspace(lo[3 * k + d], hi[3 * k + d], n)
            knots = _reference.histogram_quantile_points(counts[d], nodes)
            quantiles[3 * k + d] = np.interp(probs, *knots)
    return {"rotations": rotations, "projected_quantiles": quantiles}


# -------------------------------------------------------------------------- regrain
def _shifted(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The right, down, left and up neighbours of every pixel (edges replicated)."""
    p = cv2.copyMakeBorder(a, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    if p.ndim < a.ndim:
        p = p[:, :, None]
    return p[1:-1, 2:], p[2:, 1:-1], p[1:-1, :-2], p[:-2, 1:-1]


def _regrain_level(
    out: np.ndarray, source: np.ndarray, colour: np.ndarray, n_steps: int, level: int
) -> np.ndarray:
    """Relaxation steps of the regrain energy at one scale (Pitie 2007, eq. 20)."""
    right, down, left, up = _shifted(source)
    grad = np.sqrt(((right - left) ** 2 + (down - up) ** 2).sum(axis=2))
    psi = np.minimum(grad * np.float32(256 / 5), 1.0)[:, :, None]
    phi = (np.float32(30 * 2.0**-level) / (1 + 10 * grad)).astype(np.float32)
    phis = [(s + phi)[:, :, None] / 2 for s in _shifted(phi)]
    den = psi + sum(phis) + np.float32(1e-6)
    # the constant part of the numerator: colour fidelity and source gradients
    const = psi * colour
    for w, s in zip(phis, (right, down, left, up)):
        const += w * (source - s)
    rho = np.float32(0.2)
    gain = (1 - rho) / den
    for _ in range(n_steps):
        num = const.copy()
        for w, s in zip(phis, _shifted(out)):
            num += w * s
        out = num * gain + rho * out
    return out


def regrain(source: np.ndarray, colour: np.ndarray, *, smoothness: float = 1.0) -> np.ndarray:
    """Pitie's regrain: the colours of ``colour`` with the gradients of ``source``.

    Both are float32 ``(H, W, 3)`` images in ``[0, 1]``. Solves, coarse to
    fine (halving down to about 20 pixels), for the image whose gradients
    follow the source's where it is smooth and whose values follow ``colour``
    where the source has edges (Pitie, Kokaram & Dahyot 2007, section 6).
    Returns float32 in ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml.methods.lab import regrain
    >>> rng = np.random.default_rng(0)
    >>> src = rng.random((48, 48, 3), dtype=np.float32)
    >>> out = regrain(src, np.clip(src * 0.5 + 0.3, 0, 1))
    >>> out.shape, out.dtype, bool(out.min() >= 0 and out.max() <= 1)
    ((48, 48, 3), dtype('float32'), True)
    """
    steps = [4, 16, 32, 64, 64, 64]

    def solve(out, src, col, level):
        h, w = src.shape[:2]
        h2, w2 = (h + 1) // 2, (w + 1) // 2
        if level + 1 < len(steps) and h2 > 20 and w2 > 20:
            small = [
                cv2.resize(a, (w2, h2), interpolation=cv2.INTER_LINEAR) for a in (out, src, col)
            ]
            out = cv2.resize(solve(*small, level + 1), (w, h), interpolation=cv2.INTER_LINEAR)
        return _regrain_level(out, src, col, steps[level], level)

    source = np.ascontiguousarray(source, dtype=np.float32)
    colour = np.ascontiguousarray(colour, dtype=np.float32)
    out = solve(source.copy(), source, colour, 0)
    return np.clip(out, 0.0, 1.0, out=out)


# --------------------------------------------------------------------------- method
def _pixels(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    return image.reshape(-1, 3) if mask is None else image[mask]


@register
class Lab(MatchingMethod):
    """Joint colour matching in CIELAB by iterative distribution transfer."""

    name = "lab"
    summary = "joint colour matching in CIELAB: colour combinations follow the reference"
    params = (
        N_QUANTILES,
        Param(
            "n_iter",
            20,
            [Interval(Integral, 1, MAX_ITERATIONS, closed="both")],
            "Iterations of the sliced transport (random projections of CIELAB).",
            f"int in [1, {MAX_ITERATIONS}]",
        ),
        Param(
            "lab_mode",
            "joint",
            [StrOptions({"joint", "marginal"})],
            "Match the joint 3-D colour distribution, or each CIELAB channel on its own.",
            '{"joint", "marginal"}',
        ),
        Param(
            "regrain",
            False,
            ["boolean"],
            "Restore the source's fine structure after the colour transfer (Pitie's regrain).",
            "bool",
        ),
    )
    raw_values = False  # colours are read on each dtype's full scale
    state_kind = "lab"
    #: reference="barycenter": the quantiles along every (shared) projection axis, averaged
    barycenter_keys = ("projected_quantiles",)

    def check_channels(self, n_channels: int, name: str) -> None:
        if n_channels != 3:
            raise ValueError(
                f"method='lab' needs RGB images with 3 channels; {name} has {n_channels} "
                f"channel(s)"
            )

    def learn(self, batch, params: dict[str, Any], rng, like=None) -> dict:
        _color.check_rgb_dtype(batch.dtype, "X")
        labs, weights = [], []
        for i, image in enumerate(batch.images):
            mask = None if batch.masks is None else batch.masks[i]
            colours, _, counts = unique_colours(_pixels(image, mask))
            labs.append(_color.rgb_to_lab(colours, "X"))
            weights.append(counts)
        state = learn_state(
            labs,
            weights,
            rng,
            params["n_iter"],
            params["n_quantiles"],
            rotations=None if like is None else like["rotations"],
        )
        state["dtype"] = np.array(batch.dtype.name)
        return state

    def merge(self, a: dict, na: int, b: dict, nb: int, params: dict[str, Any]) -> dict:
        if not np.array_equal(a["rotations"], b["rotations"]):
            raise ValueError("lab states can only be merged when learned with the same rotations")
        merged = _reference.merge(
            {"quantiles": a["projected_quantiles"], "dtype": a["dtype"]},
            na,
            {"quantiles": b["projected_quantiles"], "dtype": b["dtype"]},
            nb,
        )
        return {
            "rotations": a["rotations"],
            "projected_quantiles": merged["quantiles"],
            "dtype": a["dtype"],
        }

    def check_state(self, state: Any, n_channels: int | None) -> None:
        """Raise ``ValueError`` unless ``state`` is a well-formed lab state (model loading)."""
        if n_channels not in (None, 3):
            raise ValueError(f"a lab state needs n_channels_ 3; got {n_channels}")
        keys = set(state) if isinstance(state, dict) else None
        if keys != {"dtype", "rotations", "projected_quantiles"}:
            got = sorted(keys) if keys is not None else type(state).__name__
            raise ValueError(
                f"a lab state must hold 'dtype', 'rotations' and 'projected_quantiles'; got {got}"
            )
        _reference.dtype_from_name(state["dtype"], "state['dtype']")
        rot = state["rotations"]
        if not isinstance(rot, np.ndarray) or rot.ndim != 3 or rot.shape[1:] != (3, 3):
            raise ValueError(
                f"state['rotations'] must have shape (K, 3, 3); got {getattr(rot, 'shape', rot)}"
            )
        if rot.dtype.kind != "f" or not np.allclose(
            rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-6
        ):
            raise ValueError("state['rotations'] must hold orthonormal 3x3 matrices")
        _reference.check_quantile_rows(
            state["projected_quantiles"], "state['projected_quantiles']", 3 * len(rot)
        )

    def prepare(self, state: dict, params: dict[str, Any]) -> dict:
        """Nothing: the projected quantiles are the knots, on the probability grid."""
        return {}

    def apply(self, image, mask, state, tables, params, out) -> None:
        colours, inverse, counts = unique_colours(_pixels(image, mask))
        lab = _color.rgb_to_lab(colours, "X")
        moved = transfer(lab, counts, state, params["n_iter"], params["lab_mode"] == "joint")
        # add the displacement in RGB: cancels the conversion's round-trip error
        unit = _color.to_unit(colours, "X")
        unit += _color.lab_to_rgb(moved)
        unit -= _color.lab_to_rgb(lab)
        np.clip(unit, 0.0, 1.0, out=unit)
        scale = _color.full_scale(image.dtype)
        if not params["regrain"] and image.dtype.kind == "u":
            # integers: blend, round and clip once per colour, then gather
            table = blend(colours, unit * np.float32(scale), params["strength"], image.dtype)
            if mask is None and out.flags.c_contiguous:
                np.take(table, inverse, axis=0, out=out.reshape(-1, 3))
            elif mask is None:
                out[...] = table[inverse].reshape(image.shape)
            else:
                out[...] = image
                out[mask] = table[inverse]
            return
        source = _color.to_unit(image, "X")
        if mask is None:
            matched = unit[inverse].reshape(image.shape)
        else:
            matched = source.copy()
            matched[mask] = unit[inverse]
        if params["regrain"]:
            matched = regrain(source, matched)
        if scale != 1.0:
            matched *= np.float32(scale)
        finish(image, matched, mask, params["strength"], out)
