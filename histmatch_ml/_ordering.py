"""Strict orderings of the pixels of one channel (exact histogram specification).

Exact histogram specification hands out reference levels by *rank*, so every
pixel needs a rank of its own, also among pixels of equal value. The sort key
of a pixel is ``(value, ordering key, position)``: the value first, so a
brighter pixel is never ranked below a darker one; an ordering key computed
from the neighbourhood decides within a level; the position (row-major index)
breaks whatever ties remain, so the order is a strict total order and the
result is deterministic.

Two ordering keys:

``"local_means"``
    Coltuc, Bolon & Chassery, "Exact histogram specification", IEEE TIP 15(5),
    2006: the means over six nested neighbourhoods (the pixel, the 3x3 cross,
    the 3x3 square, the 13-pixel 5x5 diamond, the 5x5 square without its
    corners, the 5x5 square). Comparing nested means lexicographically is
    comparing the sums over the *rings* between consecutive neighbourhoods, so
    the key is the value followed by five ring sums. For 8-bit channels they
    pack into one 59-bit integer (8 + 10 + 10 + 10 + 11 + 10 bits) and one
    argsort replaces a six-key lexsort.
``"variational"``
    Nikolova & Steidl, "Fast ordering algorithm for exact histogram
    specification", IEEE TIP 23(12), 2014: ``R`` fixed-point iterations of
    ``u <- f - xi(beta * G^T theta'(G u))`` over the 4-neighbourhood with
    ``theta(t) = |t| - alpha * log(1 + |t| / alpha)``, so
    ``theta'(t) = t / (alpha + |t|)`` and ``xi(y) = alpha * y / (1 - |y|)``.
    The result is a real-valued restoration of the image that is almost
    never tied; the key is the correction ``u - f``, computed in float64 and
    kept apart from ``f`` so no precision is lost to the magnitude of the
    values, and compared on its top ``64 - value bits`` bits (2**-44 relative
    for 8-bit images, below the round-off of the iterations). With the
    paper's parameters (``R = 5``, ``beta = 0.1``, ``alpha = 0.05``)
    ``|u - f| < 1/30`` level, so ``u`` never reorders distinct levels of an
    integer image. Floats are first scaled to a 0..255 span.

Keys are compared as unsigned integers: a sequence of integer keys of known
bit widths is packed into ``uint64`` words, most significant first, a new word
starting whenever the next key would overflow 64 bits.

8/16-bit integer channels (exact levels) are sorted in time linear in the
pixels, up to the sort of one level's pixels: only the order *within* a
source level is decided by the ordering keys. A counting sort groups the
pixels by level, block by block of positions (each block's stable radix
argsort is scattered into the level's slots, so every level keeps its pixels
in raster order), and the groups are then sorted one bucket at a time, a
bucket being a run of consecutive levels of a bounded number of pixels (a
larger level is a bucket of its own). Within a bucket one (SIMD) sort of
uint64 words holding the key's top bits above the pixel's place in the bucket
gives the (key, position) order; where the key does not fit beside the place,
the runs whose dropped low bits then step down are re-sorted
(``variational``, where that is rare), or the key is sorted in two such
passes, low bits first (``local_means``, whose last ring sum often decides).
Keys of several words go through a stable ``np.lexsort`` of the bucket.
Exact specification to 8/16-bit levels needs less than the order: every pixel
of a rank between two consecutive changes of output level (the *cuts*) gets
the same value, so :func:`strict_partition` orders only the levels that a cut
splits, each bucket of them partitioned at its cuts (an introselect of the
same words, linear in the bucket) rather than sorted.
Single-word keys (uint8 ``local_means``, 8/16-bit ``variational``) are
computed in tiles with a halo (bit-identical: exact integer filters and the
same floating-point operations per pixel), straight into one ``uint64`` array,
with work buffers reused from tile to tile. Tiles, blocks and buckets hold a
fraction of the channel's pixels, and indices are int32 where they fit, so
the work arrays stay a few bytes per pixel at any size. Given threads
(``n_threads``), a large channel's tiles and buckets are shared out among
them, each writing its own part of the keys and of the order: the same
arrays as on one thread (``bench_exact.py``'s row "uint8 grey 2048x2048
(upsampled), n_jobs=2"). Small uint8 ``local_means`` and 8/16-bit
``variational`` channels of one shape have their keys computed stacked
(:func:`strict_partitions`; the row "uint8 RGB batch 128x32x32 (crops)").

Other dtypes (floats, wide integers) have no levels to group by: their pixels
are sorted once by (value, position), in the same packed uint64 words, and
only the runs of equal values are then put in (key, position) order, the
key computed for the pixels of those runs alone (continuous data has few).
The value is compared exactly in the channel's own dtype.

Keys are computed on the whole channel (neighbours outside a mask are context);
only the masked pixels are ordered. Borders are mirrored (``local_means``) or
have fewer neighbours (``variational``).

Volumes (3-D channels ``(D, H, W)``) are ordered with 3-D neighbourhoods:
``"variational"`` iterates over the 6-neighbourhood (the face neighbours, the
paper's scheme with one more axis), and ``"local_means"`` nests the voxel, the
6-voxel cross, the 3x3x3 cube's 12 edge and 8 corner neighbours and the 6
voxels two steps along an axis: four rings, the shells of squared distance 1,
2, 3 and 4 (in 2-D the five rings are the shells 1, 2, 4, 5 and 8 of the 5x5
square). Position is the raster index of the volume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from . import _reference

#: the accepted values of ``ordering``
ORDERINGS = ("variational", "local_means")

#: Nikolova & Steidl (2014): iterations ``R``, ``beta`` and ``alpha`` (their defaults)
VARIATIONAL_ITERATIONS = 5
VARIATIONAL_BETA = 0.1
VARIATIONAL_ALPHA = 0.05

#: ``variational`` works in units of one grey level of an 8-bit image for floats
_FLOAT_SPAN = 255.0
#: wider integer ranges are scaled down to this span
_INT_SPAN = 65535


def check_ordering(ordering: object) -> str:
    """Return ``ordering`` if it is a known ordering, else raise ``ValueError``."""
    if not isinstance(ordering, str) or ordering not in ORDERINGS:
        raise ValueError(f"ordering must be one of {list(ORDERINGS)}; got {ordering!r}")
    return ordering


def _check_channel(channel: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
    """Validate a 2-D channel and its mask; return the flat masked indices or None."""
    if not isinstance(channel, np.ndarray) or channel.ndim not in (2, 3):
        shape = getattr(channel, "shape", type(channel).__name__)
        raise ValueError(f"channel must be a 2-D (H, W) or 3-D (D, H, W) array; got {shape}")
    if channel.size == 0:
        raise ValueError(f"channel must not be empty; got shape {channel.shape}")
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != channel.shape:
        raise ValueError(
            f"mask must be a boolean array of the channel's shape {channel.shape}; "
            f"got dtype {mask.dtype} and shape {mask.shape}"
        )
    return np.flatnonzero(mask)


# ----------------------------------------------------------------- ring sums
def _ring_kernels() -> list[np.ndarray]:
    """The five rings between the six nested neighbourhoods of Coltuc et al."""
    dy, dx = np.mgrid[-2:3, -2:3]
    l1 = np.abs(dy) + np.abs(dx)
    linf = np.maximum(np.abs(dy), np.abs(dx))
    rings = [
        l1 == 1,  # cross minus pixel: 4 axial neighbours
        (l1 == 2) & (linf == 1),  # 3x3 square minus cross: 4 diagonal neighbours
        (l1 == 2) & (linf == 2),  # diamond minus 3x3 square: 4 pixels two steps away
        l1 == 3,  # 5x5 without corners minus diamond: 8 knight's-move pixels
        l1 == 4,  # 5x5 square minus the above: 4 corners
    ]
    return [r.astype(np.float32) for r in rings]


_RINGS = _ring_kernels()
_RING_SIZES = [int(r.sum()) for r in _RINGS]


def _shell_offsets() -> list[np.ndarray]:
    """The four rings of 3-D ``local_means``: offsets at squared distance 1, 2, 3 and 4."""
    offsets = np.stack(np.mgrid[-2:3, -2:3, -2:3], axis=-1).reshape(-1, 3)
    dist2 = (offsets**2).sum(axis=1)
    return [offsets[dist2 == d] for d in (1, 2, 3, 4)]


_SHELLS = _shell_offsets()
_SHELL_SIZES = [len(s) for s in _SHELLS]


def _shell_sums(plane: np.ndarray) -> list[np.ndarray]:
    """The four shell sums of every voxel of a 3-D plane, borders mirrored as in 2-D.

    (``np.pad(mode="symmetric")`` repeats the edge voxel, as OpenCV's ``BORDER_REFLECT``.)
    """
    padded = np.pad(plane, 2, mode="symmetric")
    d, h, w = plane.shape
    sums = []
    for shell in _SHELLS:
        total = np.zeros(plane.shape, dtype=plane.dtype)
        for dz, dy, dx in shell.tolist():
            total += padded[2 + dz : 2 + dz + d, 2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w]
        sums.append(total)
    return sums


def _level_plane(channel: np.ndarray) -> tuple[np.ndarray, int | None]:
    """Values as non-negative level indices and their bit width (None: not integral).

    8/16-bit integers become their unsigned level index (monotone in the
    value); everything else is returned as float64 (wider integers included,
    whose ring sums would not fit a packed key anyway).
    """
    if _reference.has_exact_levels(channel.dtype):
        n_levels, _ = _reference.level_count_and_offset(channel.dtype)
        return np.ascontiguousarray(_reference.level_index(channel)), (n_levels - 1).bit_length()
    return np.ascontiguousarray(channel, dtype=np.float64), None


def ring_sums(channel: np.ndarray) -> list[np.ndarray]:
    """The ring sums of ``local_means`` for every pixel of a channel.

    Five rings for a 2-D channel, four shells for a 3-D one (see the module
    docstring).
    Sums are over level indices for 8/16-bit integers (exact, float32) and over
    the values (float64) otherwise; borders are mirrored (``BORDER_REFLECT``).
    """
    return list(_ring_planes(channel))


def _ring_planes(channel: np.ndarray) -> Iterator[np.ndarray]:
    """:func:`ring_sums` one at a time (2-D: each ring filtered when it is asked for)."""
    return _plane_rings(_level_plane(channel)[0])


def _plane_rings(plane: np.ndarray) -> Iterator[np.ndarray]:
    """:func:`_ring_planes` of a channel's :func:`_level_plane`."""
    if plane.ndim == 3:  # a volume: the four 3-D shells
        work = np.float64 if plane.dtype == np.float64 else np.float32
        yield from _shell_sums(plane.astype(work))
        return
    depth = cv2.CV_64F if plane.dtype == np.float64 else cv2.CV_32F
    for kernel in _RINGS:
        yield cv2.filter2D(plane, depth, kernel, borderType=cv2.BORDER_REFLECT)


def _packed_key_uint8(channel: np.ndarray, work: dict | None = None) -> np.ndarray:
    """The 59-bit ``local_means`` key of a uint8 channel: value and five ring sums.

    Bits, most significant first: value 8, then the rings of 4, 4, 4, 8 and 4
    pixels in 10, 10, 10, 11 and 10 bits. Ring sums come from ``CV_16S``
    filters (exact: at most 2040), the two halves are packed in uint32 first.
    Returns the flat key; with ``work`` (see :func:`_scratch`) a view of one
    of its buffers.
    """
    plane = np.ascontiguousarray(channel)
    shape, n = plane.shape, plane.size
    r2, r3, r4, r5, r6 = (
        cv2.filter2D(
            plane,
            cv2.CV_16S,
            kernel,
            dst=_scratch(work, f"ring{i}", n, np.int16).reshape(shape),
            borderType=cv2.BORDER_REFLECT,
        )
        .view(np.uint16)
        .ravel()
        for i, kernel in enumerate(_RINGS)
    )
    high = _scratch(work, "high", n, np.uint32)  # value, r2, r3: 28 bits
    np.copyto(high.reshape(shape), plane)
    for ring in (r2, r3):
        high <<= np.uint32(10)
        high |= ring
    low = _scratch(work, "low", n, np.uint32)  # r4, r5, r6: 31 bits
    np.copyto(low, r4)
    low <<= np.uint32(11)
    low |= r5
    low <<= np.uint32(10)
    low |= r6
    key = _scratch(work, "key", n, np.uint64)
    np.copyto(key, high)
    key <<= np.uint64(31)
    key |= low
    return key


def _packed_keys_uint8(stack: np.ndarray) -> np.ndarray:
    """:func:`_packed_key_uint8` of same-shape uint8 channels ``(K, H, W)`` at once: ``(K, H W)``.

    The channels become one plane, each between the two rows above and the two
    below that ``BORDER_REFLECT`` gives it (the rings reach two pixels out), so
    every ring sum is the one of the channel alone and no ring reads another
    channel's pixels; columns keep the plane's own reflected borders.
    """
    k, h, w = stack.shape
    padded = np.empty((k, h + 4, w), dtype=np.uint8)
    padded[:, 2 : h + 2] = stack
    # (reflection repeats the edge row: row -1 is row 0, row -2 is row 1; one row: all row 0)
    padded[:, 1], padded[:, 0] = stack[:, 0], stack[:, min(1, h - 1)]
    padded[:, h + 2], padded[:, h + 3] = stack[:, h - 1], stack[:, max(h - 2, 0)]
    key = _packed_key_uint8(padded.reshape(k * (h + 4), w))
    return key.reshape(k, h + 4, w)[:, 2 : h + 2].reshape(k, h * w)


def _local_means_keys(channel: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
    """``(flat key, bits)`` of an 8/16-bit channel: its levels, then the ring sums.

    One at a time, a 2-D channel's rings filtered as they are asked for
    (:func:`_ring_planes`), so that :func:`_words` packs each before the next
    exists.
    """
    plane, bits = _level_plane(channel)
    yield plane.ravel(), bits
    sizes = _RING_SIZES if channel.ndim == 2 else _SHELL_SIZES
    for size, ring in zip(sizes, _plane_rings(plane)):
        yield ring.ravel(), (size * (2**bits - 1)).bit_length()


# --------------------------------------------------------------- variational
def _unit_plane(channel: np.ndarray) -> np.ndarray:
    """The channel as float64 in units where one quantisation step is about 1.

    8/16-bit integers keep their levels; wider integers keep them when their
    range spans at most 65,535 levels and are scaled to that span otherwise;
    floats are scaled to a 0..255 span (one 8-bit grey level per unit), the
    setting the paper's parameters were chosen for.
    """
    if _reference.has_exact_levels(channel.dtype):
        return _reference.level_index(channel).astype(np.float64)
    x = channel.astype(np.float64)
    lo, hi = float(x.min()), float(x.max())
    if not np.isfinite(hi - lo):  # values near float64's limits: halved (exactly) first
        x *= 0.5
        lo, hi = lo * 0.5, hi * 0.5
    span = hi - lo
    if channel.dtype.kind in "ui" and span <= _INT_SPAN:
        scale = 1.0
    else:
        target = _INT_SPAN if channel.dtype.kind in "ui" else _FLOAT_SPAN
        scale = target / span if span > 0 else 1.0
    x -= lo
    x *= scale
    return x


def _scratch(work: dict | None, name: str, size: int, dtype: type) -> np.ndarray:
    """A 1-D array of ``size`` from the work buffers ``work``, or a new one when it is None.

    ``work`` maps names to arrays kept from one strip (tile) of a channel to
    the next, grown when too small: fresh arrays of that size would be freshly
    mapped pages every time.
    """
    if work is None:
        return np.empty(size, dtype=dtype)
    buffer = work.get(name)
    if buffer is None or buffer.size < size or buffer.dtype != dtype:
        buffer = work[name] = np.empty(size, dtype=dtype)
    return buffer[:size]


def variational_correction(
    channel: np.ndarray,
    *,
    n_iter: int = VARIATIONAL_ITERATIONS,
    beta: float = VARIATIONAL_BETA,
    alpha: float = VARIATIONAL_ALPHA,
    work: dict | None = None,
    stacked: bool = False,
) -> np.ndarray:
    """The ``variational`` key ``u - f`` of every pixel of a channel (float64).

    ``u`` is the Nikolova-Steidl fixed point after ``n_iter`` iterations from
    ``u = f``, over the 4-neighbourhood of a 2-D channel or the
    6-neighbourhood of a 3-D one; pixels on the border have fewer neighbours. The correction is
    kept apart from ``f`` and in float64: neighbours ``k`` steps away move it
    by about ``5e-4 ** k``, so float32 (or ``u`` itself) would drop the
    information that separates look-alike pixels (measured: ~0.1-0.8% of the
    pixels of the skimage samples stay tied in float32, none in float64).
    With ``work`` (a dict of work buffers, see :func:`_scratch`) the result
    is a view of one of them, valid until the next call with the same ``work``.
    With ``stacked``, ``channel`` ``(K, H, W)`` holds ``K`` independent 2-D
    channels: no pairs along the first axis, so each gets its own correction,
    to the bit (the same pairs, added in the same order; a missing pair adds
    nothing, and a pair zeroed at a channel's last row adds a zero, which
    changes no value).
    """
    shape = channel.shape
    n = channel.size
    levels = _reference.has_exact_levels(channel.dtype)
    # (the unit plane is held in d's buffer until the differences are taken)
    d = _scratch(work, "d", n, np.float64)
    if levels:  # integer levels: their differences are exact in float32
        np.copyto(d.reshape(shape), _reference.level_index(channel))
        f = d
    else:
        f = _unit_plane(channel).ravel()
    # neighbour differences on the flat array along every axis: at i -> i + step,
    # step the axis's stride; pairs that wrap across the end of the axis (a row's
    # end, a slice's last row) are zeroed: theta'(0) = 0 means "no neighbour"
    diffs = []
    first = 1 if stacked else 0  # (stacked channels: no pairs along the stacking axis)
    for axis in reversed(range(first, len(shape))):  # (innermost first: rows, columns, slices)
        extent = shape[axis]
        if extent < 2:  # a single column (row, slice) has no pairs along that axis
            continue
        step = int(np.prod(shape[axis + 1 :]))
        wraps: slice | np.ndarray | None = None
        if step == 1:  # along rows: every row's last pixel
            wraps = slice(extent - 1, None, extent)
        elif axis > 0:  # along columns of a volume: every slice's last row (the outermost
            # axis never wraps)
            ends = np.zeros((n // (extent * step), extent, step), dtype=bool)
            ends[:, -1, :] = True
            wraps = ends.ravel()[: n - step]
        df = _scratch(work, f"df{axis}", n - step, np.float32 if levels else np.float64)
        np.subtract(f[step:], f[:-step], out=df)
        if wraps is not None:
            df[wraps] = 0.0
        diffs.append((step, wraps, df))
    d.fill(0.0)
    t = _scratch(work, "t", n, np.float64)
    # (the axes take turns: one pair of buffers serves them all)
    g_all, a_all = _scratch(work, "g", n, np.float64), _scratch(work, "a", n, np.float64)
    for _ in range(n_iter):
        t.fill(0.0)
        for step, wraps, df in diffs:
            g, a = g_all[: n - step], a_all[: n - step]
            # theta'(u_j - u_i) = g / (alpha + |g|) for u = f + d
            np.subtract(d[step:], d[:-step], out=g)
            g += df
            if wraps is not None:  # no pairs across the ends of the axis
                g[wraps] = 0.0
            np.abs(g, out=a)
            a += alpha
            g /= a
            # G^T: each difference pushes its two pixels apart
            t[step:] += g
            t[:-step] -= g
        # d = -xi(beta * t) = alpha * t / (|t| - 1 / beta)
        np.abs(t, out=d)
        d -= 1.0 / beta
        np.divide(t, d, out=d)
        d *= alpha
    d += 0.0  # -0.0 -> +0.0, so equal corrections get equal keys
    return d.reshape(shape)


def _sort_bits_into(x: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """Turn float64 ``x`` (finite, no -0.0) into uint64 ordered as its values, in place.

    Negative values get all their bits flipped and the others their sign bit
    set; ``scratch`` (int64 of ``x``'s size) is overwritten. Returns the uint64 view.
    """
    ints = x.view(np.int64)
    np.right_shift(ints, 63, out=scratch)  # -1 for negative values, 0 otherwise
    scratch |= np.int64(-(2**63))
    ints ^= scratch
    return x.view(np.uint64)


def _float_sort_bits(x: np.ndarray) -> np.ndarray:
    """uint64 ordered as the float64 values ``x`` (finite, no -0.0)."""
    bits = np.array(x, dtype=np.float64).ravel()
    return _sort_bits_into(bits, np.empty(bits.shape, dtype=np.int64)).reshape(np.shape(x))


# ------------------------------------------------------------------- sorting
def _take(plane: np.ndarray, index: np.ndarray | None) -> np.ndarray:
    return plane.ravel() if index is None else plane.ravel()[index]


def _word_layout(packed: np.ndarray) -> tuple[np.ndarray, np.uint64, int, int]:
    """How uint64 keys share a word with their position: ``(word, low, pos_bits, shift)``.

    ``word`` is ``packed - low`` (a fresh array, for :func:`_place_words` to pack
    into in place), ``low`` the keys' minimum, ``pos_bits`` the bits a position
    takes and ``shift`` the low key bits that do not fit beside it.
    """
    pos_bits = max((len(packed) - 1).bit_length(), 1)
    low = packed.min()
    word = packed - low
    return word, low, pos_bits, max(0, int(word.max()).bit_length() - (64 - pos_bits))


def _place_words(word: np.ndarray, shift: int, pos_bits: int) -> np.ndarray:
    """``word`` (of :func:`_word_layout`) as (key's top bits, position) words, in place."""
    word >>= np.uint64(shift)
    word <<= np.uint64(pos_bits)
    word |= np.arange(len(word), dtype=np.uint64)
    return word


def _places(word: np.ndarray, pos_bits: int) -> np.ndarray:
    """The positions held in the low ``pos_bits`` bits of (sorted or partitioned) words."""
    return (word & np.uint64((1 << pos_bits) - 1)).astype(np.intp)


def _sort_strict(
    packed: np.ndarray, low_ties: bool = False, want_tied: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Order by ``packed`` (uint64) then position, and which neighbours in it are tied.

    One (SIMD) sort of uint64 words that hold the key's top bits above the
    position, which orders by (key, position) wherever the key fits beside
    the position, and by (key's top bits, position) otherwise. In that case
    the runs of equal top bits whose keys then step down are re-sorted by
    their remaining bits (:func:`_repair_runs`), or, with ``low_ties`` (keys
    whose low bits are often all that tells them apart, such as
    ``local_means``' last ring sum), the key is sorted in two passes, its
    low bits first (:func:`_two_pass_order`). Keys too wide even for that go
    through an argsort (:func:`_argsort_strict`). Without ``want_tied`` the
    tied mask may be None (it is not computed where the order needs no keys
    gathered in it).
    """
    n = len(packed)
    if n < 2:
        return np.arange(n, dtype=np.intp), np.zeros(0, dtype=bool)
    word, low, pos_bits, shift = _word_layout(packed)
    if 2 * pos_bits + shift > 64:
        return _argsort_strict(packed)
    if shift and low_ties:
        order = _two_pass_order(word, shift, pos_bits)
    else:
        _place_words(word, shift, pos_bits).sort()
        order = _places(word, pos_bits)
        if shift:
            sorted_key = packed[order]
            down = np.flatnonzero(sorted_key[1:] < sorted_key[:-1])
            if len(down):
                word >>= np.uint64(pos_bits)  # the sorted top bits
                _repair_runs(order, sorted_key, word, down + 1, low, shift)
    if not want_tied:
        return order, None
    sorted_key = packed[order]
    return order, sorted_key[1:] == sorted_key[:-1]


def _two_pass_order(word: np.ndarray, shift: int, pos_bits: int) -> np.ndarray:
    """The (key, position) order of ``word`` (keys less their minimum; overwritten).

    Least significant part first: a stable sort of the low ``shift`` bits
    (numpy's radix sort where they fit 16 bits, else a sort of (low bits,
    position) packed into one uint64), then a sort of (the top bits, rank in
    that order) packed into one uint64 (``shift <= pos_bits <= 32``).
    """
    n = len(word)
    mask = np.uint64((1 << pos_bits) - 1)
    place = np.arange(n, dtype=np.uint64)
    first = word & np.uint64((1 << shift) - 1)
    if shift <= 16:  # the order by (low bits, position), in linear time
        first = np.argsort(first.astype(np.uint8 if shift <= 8 else np.uint16), kind="stable")
    else:
        first <<= np.uint64(pos_bits)
        first |= place
        first.sort()
        first &= mask
    word >>= np.uint64(shift)
    second = word[first]
    del word
    second <<= np.uint64(pos_bits)
    second |= place
    del place
    second.sort()
    second &= mask
    return first[second].astype(np.intp, copy=False)


def _repair_runs(
    order: np.ndarray,
    sorted_key: np.ndarray,
    top: np.ndarray,
    bad: np.ndarray,
    low: np.uint64,
    shift: int,
) -> None:
    """Re-sort, in place, the runs of equal ``top`` that hold the positions ``bad``.

    ``order`` (and ``sorted_key``, the keys in that order) is sorted by (the
    key's top bits ``top``, position); a run of equal top bits is put in
    (key, position) order by a sort of (run, its keys' low ``shift`` bits,
    place in the run), packed into one uint64 (:func:`_sort_strict` checks
    that they fit).
    """
    starts = np.flatnonzero(top[1:] != top[:-1]) + 1
    runs = np.unique(np.searchsorted(starts, bad, side="right"))
    bounds = np.concatenate(([0], starts, [len(order)]))
    first, stop = bounds[runs], bounds[runs + 1]
    lengths = stop - first
    # the members of the runs, in order, and the start of each one's run among them
    offsets = np.cumsum(lengths) - lengths
    run_start = np.repeat(offsets, lengths)
    members = np.repeat(first - offsets, lengths)
    members += np.arange(len(members))
    bits = max((len(members) - 1).bit_length(), 1)
    key = sorted_key[members] - low
    key &= np.uint64((1 << shift) - 1)
    key <<= np.uint64(bits)
    key |= np.arange(len(members), dtype=np.uint64)
    key |= run_start.astype(np.uint64) << np.uint64(shift + bits)
    key.sort()
    moved = members[(key & np.uint64((1 << bits) - 1)).astype(np.intp)]
    order[members] = order[moved]
    sorted_key[members] = sorted_key[moved]


def _tie_members(tied: np.ndarray, dtype: type = np.intp) -> tuple[np.ndarray, np.ndarray]:
    """The places of a sorted order that tie with a neighbour, and the run of each.

    ``tied[i]`` says that places ``i`` and ``i + 1`` hold equal keys. Returns
    the tied places (ascending, in ``dtype``) and the run of each: the rank of
    its key among the order's distinct keys.
    """
    starts = np.empty(len(tied) + 1, dtype=bool)  # the first place of a run of equal keys
    starts[0] = True
    np.logical_not(tied, out=starts[1:])
    in_tie = ~starts
    in_tie[:-1] |= tied
    members = np.flatnonzero(in_tie).astype(dtype, copy=False)
    run = np.cumsum(starts, dtype=dtype)[members]
    run -= 1
    return members, run


def _argsort_strict(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_sort_strict` by an argsort of the keys and a second sort of tied runs."""
    n = len(packed)
    order = np.argsort(packed)
    sorted_key = packed[order]
    tied = sorted_key[1:] == sorted_key[:-1]
    if not tied.any():
        return order, tied
    pos_bits = max((n - 1).bit_length(), 1)
    if 2 * pos_bits > 64:  # (tie group, position) would not fit one uint64
        return np.argsort(packed, kind="stable"), tied
    # re-sort only the members of tied runs, by (run, position): runs are
    # contiguous in ``order``, so each one is put back into its own slots
    members, run = _tie_members(tied)
    run = run.astype(np.uint64)
    run <<= np.uint64(pos_bits)
    run |= order[members].astype(np.uint64)
    run.sort()
    order[members] = _places(run, pos_bits)
    return order, tied


def _select_strict(packed: np.ndarray, kth: np.ndarray, low_ties: bool = False) -> np.ndarray:
    """An order of ``packed`` (uint64) then position that is strict at the places ``kth`` only.

    For each ``k`` in ``kth`` (ascending, in ``1 .. n - 1``), the first ``k``
    places of the returned order hold the ``k`` smallest (key, position)
    pairs, in some order: what a partition of the words of :func:`_sort_strict`
    (key's top bits above the position) gives where the key fits beside the
    position. Where it does not, the partition is by (top bits, position),
    and a run of equal top bits that a cut splits (found from the largest top
    bits before each cut) has its pixels put back into the run's places in
    (key, position) order. Keys too wide for that are sorted
    (:func:`_sort_strict`).
    """
    word, _, pos_bits, shift = _word_layout(packed)
    if 2 * pos_bits + shift > 64:
        return _sort_strict(packed, low_ties, want_tied=False)[0]
    # (at least two places: numpy partitions at several places by introselect)
    _place_words(word, shift, pos_bits).partition(kth if len(kth) > 1 else [kth[0] - 1, kth[0]])
    order = _places(word, pos_bits)
    if shift:
        word >>= np.uint64(pos_bits)  # the top bits, place by place
        # a cut at k splits a run of equal top bits when the pixel at k has the top bits of
        # the largest before it (the places between the previous cut and k hold that one)
        before = np.maximum.reduceat(word, np.concatenate(([0], kth)))[:-1]
        split = word[kth][before == word[kth]]
        if len(split):  # those runs' pixels back into their places in (key, position) order
            places = np.flatnonzero(np.isin(word, split))  # (ascending)
            members = order[places]
            order[places] = members[np.lexsort((members, packed[members]))]
    return order


# ------------------------------------------------- sorting by level (linear)
#: the most pixels per bucket of consecutive levels sorted together: small buckets are
#: mostly one level, whose keys then fit one word beside the place (no second pass), and
#: small arrays sort faster per element (they stay in cache)
_BUCKET = 1 << 12
#: the most pixels of levels no cut splits that may sit between two split levels of one
#: bucket (:func:`_split_buckets`): partitioning them with the bucket costs less than a
#: bucket of its own, whose fixed cost is that of some thousand pixels
_GAP = 1 << 10
#: channels of at most this many (masked) pixels are partitioned at once (:func:`_partition_small`)
_SMALL = 1 << 12
#: the most positions per block of the counting sort by level
_BLOCK = 1 << 18
#: the most pixels per tile (strip, for volumes) in which keys are computed
_STRIP = 1 << 16
#: tiles, blocks and buckets hold at most about 1 / _PARTS of a channel's pixels (and at
#: least _LEAST), so that their work arrays stay a fraction of a small channel's size
_PARTS = 16
_LEAST = 1 << 12


def _part_size(n: int, most: int, parts: int = _PARTS) -> int:
    """Pixels per tile, block or bucket of an ``n``-pixel channel: about ``n / parts``."""
    return min(most, max(_LEAST, n // parts))


def _index_dtype(n: int) -> type:
    """int32 for indices below ``n`` where they fit, else intp."""
    return np.int32 if n < 2**31 else np.intp


def _tiles(shape: tuple[int, ...], halo: int) -> list[tuple[slice, ...]]:
    """Tiles covering a channel, as tuples of slices: squares, strips of rows, slabs of slices.

    A tile holds about an eighth of the channel's pixels, at most
    :data:`_STRIP`, with sides of at least ``4 * halo`` so that the halo
    costs little. A 2-D channel at most two tiles wide is cut into strips of
    full rows, a wider one into squares; a volume into slabs of whole slices.
    """
    n = int(np.prod(shape))
    size = _part_size(n, _STRIP, parts=8)
    h, w = shape[0], n // shape[0]  # (a volume: slices of h * w voxels)
    side = max(4 * halo, int(np.sqrt(size)))
    whole = [slice(0, e) for e in shape[1:]]
    if len(shape) == 3 or w <= 2 * side:
        rows = max(4 * halo, size // w, 1)
        return [(slice(r, min(h, r + rows)), *whole) for r in range(0, h, rows)]
    return [
        (slice(r, min(h, r + side)), slice(c, min(w, c + side)))
        for r in range(0, h, side)
        for c in range(0, w, side)
    ]


def _strip_words(
    channel: np.ndarray, halo: int, block_words, n_threads: int = 1
) -> list[np.ndarray]:
    """The key words of the whole channel, each one flat uint64 array, tile by tile.

    Each tile (:func:`_tiles`) is computed with ``halo`` more pixels on every
    side where the channel has them, and cropped, so a key that depends on
    neighbours at most ``halo`` pixels away comes out as on the whole channel,
    and its work memory is a tile's. ``block_words(block, work)`` returns the
    flat words of a block (the same number for every block); ``work`` is one
    dict of work buffers (:func:`_scratch`) for all the tiles of a thread.
    With ``n_threads``, the tiles after the first are shared out among that
    many threads (:func:`_in_threads`).
    """
    words: list[np.ndarray] = []

    def run(tiles: Sequence[tuple[slice, ...]]) -> None:
        work: dict = {}
        for tile in tiles:
            grown = tuple(
                slice(max(0, t.start - halo), min(e, t.stop + halo))
                for t, e in zip(tile, channel.shape)
            )
            crop = tuple(slice(t.start - g.start, t.stop - g.start) for t, g in zip(tile, grown))
            block = channel[grown]
            for i, word in enumerate(block_words(block, work)):
                if i == len(words):  # (the first tile, alone: the words are made once)
                    words.append(np.empty(channel.size, dtype=np.uint64))
                words[i].reshape(channel.shape)[tile] = word.reshape(block.shape)[crop]

    tiles = _tiles(channel.shape, halo)
    # (one thread: every tile in one run, its work buffers reused throughout)
    first = 1 if n_threads > 1 else len(tiles)
    run(tiles[:first])
    _in_threads(n_threads, tiles[first:], run)
    return words


def _in_threads(n_threads: int, jobs: Sequence, run: Callable[[Sequence], None]) -> None:
    """``run(part)`` for ``n_threads`` parts of ``jobs`` at once (one thread: ``run(jobs)``).

    Part ``i`` holds every ``n_threads``-th job from job ``i`` (neighbouring
    jobs are of about one size, so the parts are too). For jobs that write to
    disjoint parts of shared arrays (tiles of a channel's words, buckets of
    its order): the numpy and OpenCV calls they make release the GIL, and
    what they write does not depend on the thread.
    """
    n_threads = min(n_threads, len(jobs))
    if n_threads <= 1:
        run(jobs)
        return
    with ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(run, [jobs[i::n_threads] for i in range(n_threads)]))


def _variational_word(
    block: np.ndarray, work: dict | None = None, stacked: bool = False
) -> np.ndarray:
    """The 64-bit ``variational`` key of an 8/16-bit block: level, then the correction.

    Flat; with ``work`` (see :func:`_scratch`) a view of one of its buffers.
    ``stacked``: as for :func:`variational_correction`.
    """
    n_levels, _ = _reference.level_count_and_offset(block.dtype)
    bits = (n_levels - 1).bit_length()
    correction = variational_correction(block, work=work, stacked=stacked).ravel()
    level = _scratch(work, "t", block.size, np.int64)  # (a buffer free by now)
    word = _sort_bits_into(correction, level)
    word >>= np.uint64(bits)
    level = level.view(np.uint64)
    np.copyto(level.reshape(block.shape), _reference.level_index(block))
    level <<= np.uint64(64 - bits)
    word |= level
    return word


def _words(keys: Iterable[tuple[np.ndarray, int]]) -> list[np.ndarray]:
    """Pack ``(array, bits)`` keys into uint64 words, most significant first.

    A key holds non-negative integers (of any dtype) below ``2**bits``. A word
    is closed when the next key would overflow it; comparing the words
    lexicographically is comparing the keys lexicographically. ``keys`` may be
    an iterator: each key is read once, as it comes.
    """
    words, word, width = [], None, 0
    for key, bits in keys:
        key = key.astype(np.uint64)
        if word is not None and width + bits <= 64:
            word <<= np.uint64(bits)
            word |= key
            width += bits
            continue
        if word is not None:
            words.append(word)
        word, width = key, bits
    words.append(word)
    return words


def _level_words(channel: np.ndarray, ordering: str, n_threads: int = 1) -> list[np.ndarray]:
    """The sort key of every pixel of an 8/16-bit channel as flat uint64 words."""
    if ordering == "variational":
        halo, block_words = VARIATIONAL_ITERATIONS + 1, lambda b, w: [_variational_word(b, w)]
    elif channel.dtype == np.uint8 and channel.ndim == 2:
        halo, block_words = 2, lambda b, w: [_packed_key_uint8(b, w)]
    else:  # (the rings reach two pixels away, the shells of a volume too)
        halo, block_words = 2, lambda b, w: _words(_local_means_keys(b))
    return _strip_words(channel, halo, block_words, n_threads)


def _group_by_level(
    level: np.ndarray, index: np.ndarray | None, n_levels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions grouped by level, in raster order within a level, and the level counts.

    A counting sort: each block of positions is sorted by a stable (radix)
    argsort of its levels and scattered into the slots its levels have left,
    so blocks taken in raster order keep every level in raster order. Blocks
    are a fraction of the channel (:func:`_part_size`), of at least a quarter
    of the levels (each costs a few passes over the level counts).
    """
    members = level if index is None else level[index]
    m = len(members)
    block = min(_BLOCK, max(_part_size(m, _BLOCK), n_levels // 4))
    blocks = range(0, m, block)
    # (bincount works on an intp copy of its input: counted block by block, twice,
    # rather than keeping every block's counts)
    counts = np.zeros(n_levels, dtype=np.int64)
    for s in blocks:
        counts += np.bincount(members[s : s + block], minlength=n_levels)
    cursor = np.cumsum(counts) - counts
    perm = np.empty(m, dtype=_index_dtype(len(level)))
    steps = np.arange(min(block, m))
    for s in blocks:
        part = members[s : s + block]
        block_counts = np.bincount(part, minlength=n_levels)
        order = np.argsort(part, kind="stable")
        dest = np.repeat(cursor - (np.cumsum(block_counts) - block_counts), block_counts)
        dest += steps[: len(part)]
        if index is None:
            order += s
            perm[dest] = order
        else:
            perm[dest] = index[s : s + block][order]
        cursor += block_counts
    return perm, counts


def _bucket_bounds(counts: np.ndarray) -> np.ndarray:
    """Bucket starts, then the end: runs of consecutive levels of about a bucket's pixels.

    A bucket holds about :func:`_part_size` of the channel's pixels, at most
    :data:`_BUCKET` (a larger level is a bucket of its own).
    """
    total = int(counts.sum())
    size = _part_size(total, _BUCKET)
    starts = (np.cumsum(counts) - counts)[counts > 0]
    first = starts // size
    cuts = starts[np.flatnonzero(first[1:] != first[:-1]) + 1]
    return np.concatenate([[0], cuts, [total]]).astype(np.int64)


def _sort_buckets(
    perm: np.ndarray,
    bounds: np.ndarray,
    words: list[np.ndarray],
    want_tied: bool,
    low_ties: bool = False,
    n_threads: int = 1,
) -> np.ndarray | None:
    """Sort every bucket of ``perm`` by its words, then position, in place.

    ``low_ties`` is passed on to :func:`_sort_strict`; the buckets are shared
    out among ``n_threads`` threads (:func:`_in_threads`).

    Returns the tied mask of neighbours in the final order when ``want_tied``
    (pixels of different buckets have different levels: never tied).
    """
    m = len(perm)
    tied_all = np.zeros(max(m - 1, 0), dtype=bool) if want_tied else None

    def run(buckets: Sequence[tuple[int, int]]) -> None:
        for a, b in buckets:
            positions = perm[a:b]
            if len(words) == 1:
                order, tied = _sort_strict(words[0][positions], low_ties, want_tied)
            else:  # stable: ties keep the raster order of the bucket
                keys = [word[positions] for word in words]
                order = np.lexsort(keys[::-1])
                tied = None
                if want_tied:
                    tied = np.ones(b - a - 1, dtype=bool)
                    for key in keys:
                        sorted_key = key[order]
                        tied &= sorted_key[1:] == sorted_key[:-1]
            perm[a:b] = positions[order]
            if want_tied:
                tied_all[a : b - 1] = tied

    buckets = [(a, b) for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()) if b - a >= 2]
    _in_threads(n_threads, buckets, run)
    return tied_all


def _split_buckets(counts: np.ndarray, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends of buckets of the levels that a cut splits (a cut strictly inside).

    Runs of consecutive such levels, cut into buckets as :func:`_bucket_bounds`
    cuts all levels; the other levels need no order and are in no bucket, but
    for those of at most :data:`_GAP` pixels between two split ones, which
    join their bucket (ordering them with it is harmless: the words lead with
    the level, and no cut falls inside them).
    """
    ends = np.cumsum(counts)
    starts = ends - counts
    split = np.searchsorted(cuts, starts, side="right") < np.searchsorted(cuts, ends, side="left")
    starts, ends = starts[split], ends[split]
    if len(starts) == 0:
        return starts, ends
    size = _part_size(int(counts.sum()), _BUCKET)
    new = np.ones(len(starts), dtype=bool)  # the first level of a bucket
    new[1:] = starts[1:] - ends[:-1] > _GAP  # (the levels between them are not split)
    part = (starts - starts[new][np.cumsum(new) - 1]) // size  # (from the run's start)
    new[1:] |= part[1:] != part[:-1]
    first = np.flatnonzero(new)
    return starts[first], np.append(ends[first[1:] - 1], ends[-1])


def _partition_buckets(
    perm: np.ndarray,
    counts: np.ndarray,
    words: list[np.ndarray],
    cuts: np.ndarray,
    low_ties: bool = False,
    n_threads: int = 1,
) -> None:
    """Put ``perm`` (grouped by level, ``counts`` a level) in strict order at the ranks ``cuts``.

    In place. What :func:`_sort_buckets` does where only the sets of pixels
    between consecutive cuts matter: only the levels that a cut splits are
    ordered, in buckets (:func:`_split_buckets`), each partitioned at its cuts
    (:func:`_select_strict`); keys of several words are sorted (a stable
    ``np.lexsort``). The buckets are shared out among ``n_threads`` threads.
    """
    starts, ends = _split_buckets(counts, cuts)
    first = np.searchsorted(cuts, starts, side="right")  # the first cut after a start
    last = np.searchsorted(cuts, ends, side="left")  # and the first at or after the end

    def run(buckets: Sequence[tuple[int, int, int, int]]) -> None:
        for a, b, i, j in buckets:
            positions = perm[a:b]
            if len(words) == 1:
                order = _select_strict(words[0][positions], cuts[i:j] - a, low_ties)
            else:
                order = np.lexsort([word[positions] for word in words][::-1])
            perm[a:b] = positions[order]

    buckets = list(zip(starts.tolist(), ends.tolist(), first.tolist(), last.tolist()))
    _in_threads(n_threads, buckets, run)


def _partition_small(
    words: list[np.ndarray],
    index: np.ndarray | None,
    cuts: np.ndarray,
    low_ties: bool,
    n_pixels: int,
) -> np.ndarray:
    """:func:`_partition_buckets`' order for a small channel: its words partitioned at once.

    The words lead with the level, so a partition of all the (masked)
    pixels' words at the cuts (:func:`_select_strict`; several words: one
    stable ``np.lexsort``) is the level-grouped partition, without the
    counting sort and the buckets, whose fixed costs are what a small
    channel's order costs. ``n_pixels`` is the channel's size (the indices'
    dtype, :func:`_index_dtype`).
    """
    if index is not None:
        words = [word[index] for word in words]
    m = len(words[0])
    kth = cuts[(cuts > 0) & (cuts < m)]
    if len(kth) == 0:
        order = np.arange(m, dtype=np.intp)
    elif len(words) == 1:
        order = _select_strict(words[0], kth, low_ties)
    else:
        order = np.lexsort(words[::-1])
    # (the index dtype of the level-grouped order: int32 below 2**31 pixels in the channel)
    return (order if index is None else index[order]).astype(_index_dtype(n_pixels), copy=False)


def _value_bits(values: np.ndarray) -> np.ndarray:
    """uint64 in the order of ``values``: integers, or finite floats by their bit patterns.

    float32 values keep their 32 bits (fewer bits to sort than as float64);
    ``-0.0`` and ``0.0`` are one value.
    """
    if values.dtype.kind == "f":
        if values.dtype.itemsize not in (4, 8):  # (float16: float32 is exact)
            values = values.astype(np.float32)
        values = _reference.order_keys(values + values.dtype.type(0.0))
    if values.dtype.kind == "u":
        return values.astype(np.uint64)
    bits = values.astype(np.int64).view(np.uint64)
    bits ^= np.uint64(1 << 63)  # (signed order as unsigned order)
    return bits


def _value_first_order(
    channel: np.ndarray, index: np.ndarray | None, ordering: str, want_tied: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Strict order of the (masked) pixels of a channel without exact levels, and its ties.

    The sort key ``(value, ordering key, position)`` is compared
    lexicographically, so the ordering key decides only among pixels of equal
    value: one sort by (value, position), then each run of equal values is
    put in (ordering key, position) order, the key computed for the pixels of
    those runs only. Continuous (float) data has few such runs. Indices are
    into the masked pixels (``index``) when there is a mask.
    """
    order, tied = _sort_strict(_value_bits(_take(channel, index)))
    if not tied.any():
        return order, tied
    # the correction before the runs' bookkeeping (its iterations' work arrays are
    # freed first); the rings after it, each filtered when it is gathered
    local_means = ordering == "local_means"
    planes = _ring_planes(channel) if local_means else [variational_correction(channel)]
    members, run = _tie_members(tied, _index_dtype(len(order)))  # (position order in a run)
    n_values = len(order) - int(np.count_nonzero(tied))
    pixels = order[members] if index is None else index[order[members]]
    keys = [plane.ravel()[pixels] for plane in planes]
    del planes, pixels
    # sorts stable in the members keep the pixels of equal keys in position order
    if local_means:
        moved = np.lexsort([*keys[::-1], run])
    else:  # (rank, the correction's top 64 - bits bits) in one word, as for levels
        bits = max((n_values - 1).bit_length(), 1)
        word = _float_sort_bits(keys[0])
        word >>= np.uint64(bits)
        word |= run.astype(np.uint64) << np.uint64(64 - bits)
        keys = [word]
        moved = _sort_strict(word, want_tied=False)[0]
    del run
    order[members] = order[members[moved]]
    if want_tied:  # neighbours of one run are still tied where every key agrees
        pairs = np.flatnonzero(tied[members[:-1]])  # member j and j + 1 share a run
        same = np.ones(len(pairs), dtype=bool)
        for key in keys:
            ranked = key[moved]
            same &= ranked[pairs + 1] == ranked[pairs]
        tied[members[pairs]] = same
    return order, tied


def _strict(
    channel: np.ndarray,
    mask: np.ndarray | None,
    ordering: str,
    want_tied: bool,
    cuts: np.ndarray | None = None,
    n_threads: int = 1,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Strict order of the (masked) pixels as flat indices, and its tied neighbours.

    With ``cuts`` (ascending ranks), an order that is strict at those ranks
    only (:func:`strict_partition`), and no tied neighbours. An 8/16-bit
    channel has its keys and its buckets computed by ``n_threads`` threads.
    """
    index = _check_channel(channel, mask)
    check_ordering(ordering)
    if _reference.has_exact_levels(channel.dtype):
        n_levels, _ = _reference.level_count_and_offset(channel.dtype)
        words = _level_words(channel, ordering, n_threads)
        low_ties = ordering == "local_means"
        m = channel.size if index is None else len(index)
        if cuts is not None and m <= _SMALL:
            return _partition_small(words, index, cuts, low_ties, channel.size), None
        perm, counts = _group_by_level(_level_plane(channel)[0].ravel(), index, n_levels)
        if cuts is not None:
            _partition_buckets(perm, counts, words, cuts, low_ties, n_threads)
            return perm, None
        tied = _sort_buckets(perm, _bucket_bounds(counts), words, want_tied, low_ties, n_threads)
        return perm, tied
    order, tied = _value_first_order(channel, index, ordering, want_tied)
    return (order if index is None else index[order]), tied


def strict_order(
    channel: np.ndarray,
    mask: np.ndarray | None = None,
    ordering: str = "variational",
    *,
    n_threads: int = 1,
) -> np.ndarray:
    """Flat indices of the (masked) pixels of a channel in strict ascending order.

    Pixels are sorted by value, then by the ``ordering`` key, then by position
    (row-major), so ``channel.ravel()[strict_order(channel)]`` is sorted and the
    result is the same for the same input.

    Parameters
    ----------
    channel : ndarray of shape (H, W) or (D, H, W)
        One channel of an image or a volume (3-D neighbourhoods), of any
        supported dtype.
    mask : ndarray of bool of the channel's shape, optional
        Order only these pixels.
    ordering : {"variational", "local_means"}, default="variational"
        The key that orders pixels of equal value (see the module docstring).
    n_threads : int, default=1
        Threads that compute an 8/16-bit channel's keys and sort its buckets
        (worth it for large channels only); the order does not depend on it.

    Returns
    -------
    ndarray of int32 for 8/16-bit channels (intp from 2**31 pixels on), of intp
    for other dtypes; shape (n,)
        Indices into ``channel.ravel()``; ``n`` is the number of (masked) pixels.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml._ordering import strict_order
    >>> channel = np.array([[5, 5, 5], [5, 9, 5], [5, 5, 5]], dtype=np.uint8)
    >>> strict_order(channel, ordering="local_means")[-2:].tolist()  # the 9, a 5 beside it
    [7, 4]
    """
    return _strict(channel, mask, ordering, want_tied=False, n_threads=n_threads)[0]


def _checked_cuts(cuts, channel: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``cuts`` as int64, checked: 1-D, ascending, ranks of the (masked) pixels."""
    cuts = np.asarray(cuts, dtype=np.int64)
    if cuts.ndim != 1 or (len(cuts) > 1 and bool((np.diff(cuts) < 0).any())):
        raise ValueError(f"cuts must be a 1-D ascending sequence of ranks; got {cuts!r}")
    n = channel.size if mask is None else int(np.count_nonzero(mask))
    if len(cuts) and (cuts[0] < 0 or cuts[-1] > n):
        raise ValueError(f"cuts must be ranks in 0 .. {n} (the pixels ordered); got {cuts!r}")
    return cuts


def strict_partition(
    channel: np.ndarray,
    cuts: np.ndarray,
    mask: np.ndarray | None = None,
    ordering: str = "variational",
    *,
    n_threads: int = 1,
) -> np.ndarray:
    """:func:`strict_order` where only the pixels between consecutive ``cuts`` matter.

    The first ``c`` indices are those of the ``c`` first pixels of
    :func:`strict_order`, for every ``c`` in ``cuts``; between two cuts, in
    any order. That is all that handing out values constant between the
    cuts needs (exact specification to 8/16-bit levels: one value per
    reference level), and an 8/16-bit channel then orders only the levels
    that a cut splits, by a partition at its cuts rather than a sort.
    Other dtypes get the full :func:`strict_order`.

    Parameters
    ----------
    channel : ndarray of shape (H, W) or (D, H, W)
        As for :func:`strict_order`.
    cuts : array-like of int
        Ranks, ascending, in ``0 .. n`` (``n`` the number of (masked) pixels).
    mask, ordering, n_threads
        As for :func:`strict_order`.

    Returns
    -------
    ndarray of int32 for 8/16-bit channels (intp from 2**31 pixels on), of intp
    for other dtypes; shape (n,)
        Indices into ``channel.ravel()``.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml._ordering import strict_order, strict_partition
    >>> channel = np.array([[5, 5, 5], [5, 9, 5], [5, 5, 5]], dtype=np.uint8)
    >>> sorted(strict_partition(channel, [7], ordering="local_means")[7:].tolist())
    [4, 7]
    >>> sorted(strict_order(channel, ordering="local_means")[7:].tolist())
    [4, 7]
    """
    cuts = _checked_cuts(cuts, channel, mask)
    if not _reference.has_exact_levels(channel.dtype):
        return strict_order(channel, mask, ordering)
    return _strict(channel, mask, ordering, want_tied=False, cuts=cuts, n_threads=n_threads)[0]


#: most pixels of the small channels whose keys :func:`strict_partitions` computes in one call
_STACK = 1 << 16


def strict_partitions(
    channels: Sequence[np.ndarray],
    cuts: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    ordering: str = "variational",
) -> list[np.ndarray]:
    """:func:`strict_partition` of several channels, each with its cuts and mask.

    The same orders as one call per channel. Small 2-D channels (at most
    :data:`_SMALL` pixels), 8/16-bit under ``"variational"`` and uint8 under
    ``"local_means"``, that share their shape and dtype have their keys
    computed together, stacked (up to :data:`_STACK` pixels a call): for them
    a key's cost is that of its numpy and OpenCV calls, not of their pixels.
    Each is then partitioned on its own (:func:`_partition_small`).
    """
    check_ordering(ordering)
    orders: list[np.ndarray | None] = [None] * len(channels)
    groups: dict[tuple, list[int]] = {}
    variational = ordering == "variational"
    for k, channel in enumerate(channels):
        small = (
            isinstance(channel, np.ndarray)
            and channel.ndim == 2
            and 0 < channel.size <= _SMALL
            and (
                _reference.has_exact_levels(channel.dtype)
                if variational
                else channel.dtype == np.uint8
            )
        )
        if small:
            groups.setdefault((channel.shape, channel.dtype), []).append(k)
        else:
            orders[k] = strict_partition(channel, cuts[k], masks[k], ordering)
    for members in groups.values():
        size = channels[members[0]].size
        step = max(1, _STACK // size)
        for start in range(0, len(members), step):
            run = members[start : start + step]
            indices = [_check_channel(channels[k], masks[k]) for k in run]
            checked = [_checked_cuts(cuts[k], channels[k], masks[k]) for k in run]
            stack = np.stack([channels[k] for k in run])
            if variational:
                words = _variational_word(stack, stacked=True).reshape(len(run), size)
            else:
                words = _packed_keys_uint8(stack)
            for k, index, kept, word in zip(run, indices, checked, words):
                orders[k] = _partition_small([word], index, kept, not variational, size)
    return orders


def unique_fraction(
    channel: np.ndarray, mask: np.ndarray | None = None, ordering: str = "variational"
) -> float:
    """Fraction of the (masked) pixels whose ``(value, ordering key)`` is unique.

    The rest are tied with at least one other pixel and ordered by position.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml._ordering import unique_fraction
    >>> unique_fraction(np.zeros((4, 4), dtype=np.uint8), ordering="local_means")
    0.0
    """
    _, tied = _strict(channel, mask, ordering, want_tied=True)
    return float(1.0 - len(_tie_members(tied)[0]) / (len(tied) + 1))
