"""Model files: one ``.npz`` archive, no pickle, every field checked on load.

:func:`save_model` writes any fitted estimator of this package to one ``.npz``
archive that ``numpy.load(path, allow_pickle=False)`` can open: every fitted
array is a named entry (``"reference_/histograms"``, ...) and one more entry,
``"__histmatch_ml__"``, holds UTF-8 JSON metadata as a uint8 array: the file
format and its version, the library version, the estimator class, its
parameters (``get_params(deep=False)``), the fitted attributes (scalars and
strings inline, arrays by name, so the dtype, channel count and numbers of
images and pixels seen are readable there) and a SHA-256 :func:`fingerprint`.

:func:`load_model` checks everything before building the estimator and raises
``ValueError`` naming the file for anything that is not a sound model: not an
archive, not a model archive, a broken or truncated archive, a checksum
mismatch, a newer format version, arrays of the wrong dtype or shape,
non-finite values, invalid parameters, a fitted state its class does not
accept. Nothing in the file is ever executed or unpickled; the class is looked
up by name inside this package only.

Model files are untrusted input, so their size is bounded before anything is
inflated. The arrays of one file may declare at most ``_MAX_ARRAY_BYTES``
(1 GiB) together and the JSON metadata at most ``_MAX_META_BYTES`` (16 MiB);
every entry's declared size must agree with its ``.npy`` header and with the
metadata, and entries are inflated in ``_CHUNK_BYTES`` (1 MiB) pieces, never
past their declared size. Loading any file therefore takes memory of the order
of the model it declares, within those limits, whatever its compressed size.
Parameters and attributes may nest lists, tuples, dicts and estimators at most
``_MAX_NESTING`` (32) levels deep, and integers have at most
``_MAX_INT_DIGITS`` (4300, Python's default limit) digits. :func:`save_model`
refuses models beyond these limits, so every file it writes loads.

This module knows no estimator's attributes: the file format is generic over
them, and whether a decoded fitted state is consistent is decided by the
estimator class itself, through its ``_check_loaded_state()`` method (called
after the parameters are validated and the fitted attributes are set; it
raises ``ValueError`` or ``TypeError`` for a state it does not accept). A
class without that method cannot be loaded.

Fitted attributes (names ending in ``_``) may be ndarrays (numeric, string, or
object arrays of strings), numpy scalars, Python scalars and strings, None, and
dicts (string keys), lists and tuples of those, nested. Parameters follow the
same rules. The same fitted estimator always gives the same bytes and the same
fingerprint; the file holds no timestamps.

Pickle and joblib keep working too (``GridSearchCV(n_jobs=...)`` needs them),
and because the fitted attributes are plain arrays and builtins,
``skops.io.load(path, trusted=["histmatch_ml.matcher.HistogramMatcher"])``
loads a ``skops.io.dump`` of a matcher with only the class trusted.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import re
import reprlib
import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import PathLike, atomic_write

#: the ``"format"`` field of the metadata
MODEL_FORMAT = "histmatch_ml.model"
#: the newest model format this version reads and the one it writes
FORMAT_VERSION = 1
#: the npz entry holding the JSON metadata
META_KEY = "__histmatch_ml__"
#: the most bytes the arrays of one model file may declare together (1 GiB): a
#: file's declared sizes are checked against it before anything is inflated
_MAX_ARRAY_BYTES = 2**30
#: the most bytes of JSON metadata a model file may hold (16 MiB)
_MAX_META_BYTES = 16 * 2**20
#: the longest ``.npy`` header read (numpy's own limit when it parses one)
_MAX_NPY_HEADER_BYTES = 10_000
#: the most bytes an entry may hold besides its data: magic, version, length, header
_NPY_OVERHEAD = 12 + _MAX_NPY_HEADER_BYTES
#: entries are inflated, copied and hashed this many bytes at a time
_CHUNK_BYTES = 2**20
#: the deepest nesting of lists, tuples, dicts and estimators in a parameter or attribute
_MAX_NESTING = 32
#: the deepest nesting of the metadata's JSON that values nested ``_MAX_NESTING`` deep give
#: (the metadata dict, its "attributes" dict, then two levels per value: a node and its items)
_MAX_JSON_DEPTH = 2 * _MAX_NESTING + 4
#: the most digits of an integer in the metadata (Python's default int <-> str limit)
_MAX_INT_DIGITS = 4300
_INT_BOUND = 10**_MAX_INT_DIGITS
#: numpy allows at most this many dimensions
_MAX_NDIM = 64
_MAX_CLASS_NAME = 256
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_ARRAY_KINDS = "biufcUS"
#: the dtype strings this format stores (``arr.dtype.str`` of those kinds)
_DTYPE_RE = re.compile(r"[<>|][biufcUS][0-9]{1,10}")


# ------------------------------------------------------------------------ encoding
class _Encoder:
    """Turn nested values into a JSON tree plus a flat dict of named arrays."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def encode(self, value: Any, path: tuple[str, ...], depth: int = 0) -> dict[str, Any]:
        where = "/".join(path)
        if depth > _MAX_NESTING:
            raise ValueError(
                f"{where} is nested more than {_MAX_NESTING} levels deep (lists, tuples, dicts "
                f"and estimators) to be saved"
            )
        if value is None:
            return {"type": "none"}
        if isinstance(value, (bool, np.bool_)) and not isinstance(value, np.ndarray):
            if isinstance(value, np.bool_):
                return self._array(np.asarray(value), path, "scalar")
            return {"type": "bool", "value": value}
        if isinstance(value, np.ndarray):
            return self._array(value, path, "array")
        if isinstance(value, np.generic):
            return self._array(np.asarray(value), path, "scalar")
        if isinstance(value, int):
            if abs(value) >= _INT_BOUND:
                raise ValueError(f"{where} has more than {_MAX_INT_DIGITS} digits to be saved")
            return {"type": "int", "value": int(value)}
        if isinstance(value, float):
            if not np.isfinite(value):
                raise ValueError(f"{where} must be finite to be saved; got {value}")
            return {"type": "float", "value": float(value)}
        if isinstance(value, str):
            return {"type": "str", "value": value}
        if isinstance(value, (list, tuple)):
            items = [self.encode(v, (*path, str(i)), depth + 1) for i, v in enumerate(value)]
            return {"type": type(value).__name__, "items": items}
        if _is_estimator(value):
            cls_name = _class_name(type(value))
            if not cls_name.startswith("histmatch_ml."):
                raise TypeError(f"{where} must be an estimator of histmatch_ml; got {cls_name}")
            params = self.encode(value.get_params(deep=False), (*path, "params"), depth + 1)
            return {"type": "estimator", "class": cls_name, "params": params}
        if isinstance(value, dict):
            items = {}
            for key, v in value.items():
                if not isinstance(key, str) or not key or "/" in key or key.startswith("__"):
                    raise TypeError(
                        f"{where} must be a dict with non-empty string keys without '/' "
                        f"(and not starting with '__') to be saved; got key {key!r}"
                    )
                items[key] = self.encode(v, (*path, key), depth + 1)
            return {"type": "dict", "items": items}
        raise TypeError(
            f"{where} must be an ndarray, a number, a string, None, an estimator, or a list, "
            f"tuple or dict of those to be saved; got {type(value).__name__}"
        )

    def _array(self, arr: np.ndarray, path: tuple[str, ...], kind: str) -> dict[str, Any]:
        where = "/".join(path)
        node: dict[str, Any] = {"type": kind, "name": where}
        if arr.dtype == object:
            if not all(isinstance(x, str) for x in arr.flat):
                raise TypeError(
                    f"{where} must be an array of numbers or strings to be saved; got an "
                    f"object array holding {sorted({type(x).__name__ for x in arr.flat})}"
                )
            arr = arr.astype(str)
            node["object"] = True
        if arr.dtype.kind not in _ARRAY_KINDS:
            raise TypeError(
                f"{where} must be an array of booleans, numbers or strings to be saved; "
                f"got dtype {arr.dtype}"
            )
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            raise ValueError(f"{where} must hold finite values to be saved; found NaN or inf")
        if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not _LITTLE):
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        if _extent(arr.shape, arr.dtype.itemsize) > _MAX_ARRAY_BYTES:
            raise ValueError(
                f"{where} (shape {arr.shape}) is larger than the {_MAX_ARRAY_BYTES} bytes a model "
                f"file holds"
            )
        arr = arr if arr.flags.c_contiguous else arr.copy(order="C")
        node["dtype"], node["shape"] = arr.dtype.str, list(arr.shape)
        self.arrays[where] = arr
        return node


_LITTLE = np.little_endian


def _extent(shape: tuple[int, ...] | list[int], itemsize: int) -> int:
    """The bytes of an array of ``shape``, zero-length axes and items counted as one.

    numpy allocates an array only when this fits its address space, so a
    bound on it (besides one on the actual bytes) keeps ``np.empty`` from
    refusing a declared shape.
    """
    return math.prod(max(s, 1) for s in shape) * max(itemsize, 1)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 80


def _short(value: Any) -> str:
    """``repr(value)``, shortened: file contents quoted in messages stay readable."""
    return _REPR.repr(value)


def _at(path: tuple[str, ...]) -> str:
    """The quoted, shortened ``a/b/c`` of a place in the metadata, for messages."""
    return _short("/".join(path))


def _decode(node: Any, arrays: Mapping[str, np.ndarray], path: tuple[str, ...]) -> Any:
    """Rebuild a value from its JSON tree (already checked by :func:`_expected_arrays`)."""
    kind = node["type"]
    if kind == "none":
        return None
    if kind in ("bool", "int", "float", "str"):
        return node["value"]
    if kind in ("list", "tuple"):
        items = [_decode(v, arrays, (*path, str(i))) for i, v in enumerate(node["items"])]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        return {k: _decode(v, arrays, (*path, k)) for k, v in node["items"].items()}
    if kind == "estimator":  # an unfitted estimator given as a parameter
        cls = _resolve_class(node["class"])
        params = _decode(node["params"], arrays, (*path, "params"))
        try:
            return cls(**params)
        except TypeError as exc:
            raise _Bad(
                f"invalid parameters of {_short(node['class'])} at {_at(path)} ({exc})"
            ) from None
    arr = arrays[node["name"]]
    if node.get("object"):
        arr = arr.astype(object)
    return arr[()] if kind == "scalar" else arr


_SCALAR_TYPES = {"bool": bool, "int": int, "float": (int, float), "str": str}


def _expected_arrays(
    node: Any, path: tuple[str, ...], out: dict[str, tuple[str, tuple]], depth: int = 0
) -> None:
    """Check the JSON tree's structure and collect ``name -> (dtype, shape)``.

    ``depth`` counts the lists, tuples, dicts and estimators around ``node``;
    at most ``_MAX_NESTING``, as :class:`_Encoder` writes them, which bounds
    the recursion here and in :func:`_decode`. Every array's size is bounded
    by ``_MAX_ARRAY_BYTES``, so that it can be allocated.
    """
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        raise ValueError(f"malformed metadata at {_at(path)}")
    if depth > _MAX_NESTING:
        raise ValueError(
            f"malformed metadata at {_at(path)}: nested more than {_MAX_NESTING} levels deep"
        )
    kind = node["type"]
    if kind == "none":
        return
    if kind in _SCALAR_TYPES:
        value = node.get("value")
        if not isinstance(value, _SCALAR_TYPES[kind]) or (
            kind == "int" and isinstance(value, bool)
        ):
            raise ValueError(
                f"malformed metadata at {_at(path)}: bad {kind} value {_short(value)}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{'/'.join(path)} must be finite; got {value}")
        return
    if kind in ("list", "tuple"):
        items = node.get("items")
        if not isinstance(items, list):
            raise ValueError(f"malformed metadata at {_at(path)}")
        for i, item in enumerate(items):
            _expected_arrays(item, (*path, str(i)), out, depth + 1)
        return
    if kind == "dict":
        items = node.get("items")
        if not isinstance(items, dict):
            raise ValueError(f"malformed metadata at {_at(path)}")
        for key, item in items.items():
            _expected_arrays(item, (*path, key), out, depth + 1)
        return
    if kind == "estimator":
        if not isinstance(node.get("class"), str) or not isinstance(node.get("params"), dict):
            raise ValueError(f"malformed metadata at {_at(path)}: bad estimator entry")
        if node["params"].get("type") != "dict":
            raise ValueError(f"malformed metadata at {_at(path)}: bad estimator parameters")
        _expected_arrays(node["params"], (*path, "params"), out, depth + 1)
        return
    if kind in ("array", "scalar"):
        name, dtype, shape = node.get("name"), node.get("dtype"), node.get("shape")
        ok = (
            isinstance(name, str)
            and name
            and not name.startswith("__")
            and isinstance(dtype, str)
            and isinstance(shape, list)
            and len(shape) <= _MAX_NDIM
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
            and name not in out
        )
        if not ok:
            raise ValueError(f"malformed metadata at {_at(path)}: bad array entry")
        # only the strings this format writes reach numpy (which warns about some aliases)
        if not _DTYPE_RE.fullmatch(dtype):
            raise ValueError(f"malformed metadata at {_at(path)}: bad dtype {_short(dtype)}")
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise ValueError(
                f"malformed metadata at {_at(path)}: bad dtype {_short(dtype)}"
            ) from None
        if dt.kind not in _ARRAY_KINDS or dt.str != dtype:
            raise ValueError(
                f"malformed metadata at {_at(path)}: unsupported dtype {_short(dtype)}"
            )
        if kind == "scalar" and shape:
            raise ValueError(f"malformed metadata at {_at(path)}: a scalar must have shape ()")
        if _extent(shape, dt.itemsize) > _MAX_ARRAY_BYTES:
            raise ValueError(
                f"array {_short(name)} ({dtype}, shape {_short(shape)}) is larger than the "
                f"{_MAX_ARRAY_BYTES} bytes a model file may hold"
            )
        out[name] = (dtype, tuple(shape))
        return
    raise ValueError(f"malformed metadata at {_at(path)}: unknown entry type {_short(kind)}")


def _digest_start(header: Mapping[str, Any]) -> Any:
    """A SHA-256 fed the class, params and attribute trees; the arrays follow."""
    return hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())


def _digest_array(h: Any, name: str, dtype: str, shape: tuple[int, ...]) -> None:
    """Feed the digest what precedes an array's C-order bytes: its name, dtype and shape."""
    h.update(json.dumps([name, dtype, list(shape)]).encode())


def _digest(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the class, params and attribute trees and every array's bytes.

    The arrays go in by sorted name, each as its name, dtype and shape, then
    its bytes in C order; :func:`_read_model_file` computes the same digest
    while it inflates the entries.
    """
    h = _digest_start(header)
    for name in sorted(arrays):
        arr = arrays[name]
        _digest_array(h, name, arr.dtype.str, arr.shape)
        h.update(arr.tobytes(order="C"))
    return h.hexdigest()


def _is_estimator(value: Any) -> bool:
    from sklearn.base import BaseEstimator

    return isinstance(value, BaseEstimator)


def _class_name(cls: type) -> str:
    """The importable name of ``cls``: its top-level export when there is one."""
    import histmatch_ml

    if getattr(histmatch_ml, cls.__name__, None) is cls:
        return f"histmatch_ml.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _fitted_attributes(estimator: Any) -> dict[str, Any]:
    """The instance attributes whose names end in ``_`` (and do not start with one)."""
    return {
        k: v
        for k, v in vars(estimator).items()
        if k.endswith("_") and not k.startswith("_") and k.isidentifier()
    }


def _encode_estimator(estimator: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(header, arrays)`` of a fitted estimator of this package."""
    from sklearn.base import BaseEstimator
    from sklearn.utils.validation import check_is_fitted

    if not isinstance(estimator, BaseEstimator):
        raise TypeError(
            f"estimator must be a scikit-learn estimator of histmatch_ml; got "
            f"{type(estimator).__name__}"
        )
    cls_name = _class_name(type(estimator))
    if not cls_name.startswith("histmatch_ml."):
        raise TypeError(f"estimator must be a class of histmatch_ml; got {cls_name}")
    check_is_fitted(estimator)
    encoder = _Encoder()
    params = encoder.encode(estimator.get_params(deep=False), ("params",))
    attributes = {
        name: encoder.encode(value, (name,))
        for name, value in sorted(_fitted_attributes(estimator).items())
    }
    header = {"class": cls_name, "params": params, "attributes": attributes}
    return header, encoder.arrays


# --------------------------------------------------------------------------- saving
def save_model(estimator: Any, path: PathLike, *, overwrite: bool = True) -> Path:
    """Save a fitted estimator of this package to one ``.npz`` file.

    The file holds the fitted arrays and a JSON metadata entry (see the
    module docstring); it opens with ``numpy.load(path, allow_pickle=False)``
    and :func:`load_model` rebuilds an estimator that transforms bit for bit
    like this one. The write is atomic. The same model always gives the same
    bytes.

    Parameters
    ----------
    estimator : estimator of histmatch_ml
        A fitted estimator (e.g. :class:`~histmatch_ml.HistogramMatcher`)
        whose fitted attributes (names ending in ``_``) and parameters are
        ndarrays, numbers, strings, None, or lists/tuples/dicts of those.
    path : str or os.PathLike
        Where to write; used as given (no suffix is added). ``.npz`` is the
        convention.
    overwrite : bool, default=True
        Replace an existing file; if False, raise ``FileExistsError``.

    Returns
    -------
    path : pathlib.Path
        The file written.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.
    TypeError
        If an attribute or parameter cannot be stored without pickle (for
        example ``random_state`` holding a ``RandomState`` instance).
    ValueError
        If an attribute holds NaN or infinity, or the model is beyond what
        :func:`load_model` reads (see the module docstring): its arrays take
        more than 1 GiB, its metadata more than 16 MiB, a value nests lists,
        tuples, dicts or estimators more than 32 levels deep, or an integer
        has more than 4300 digits.

    See Also
    --------
    load_model : Read it back, with every check.
    fingerprint : The SHA-256 identifying the saved model.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from histmatch_ml import HistogramMatcher
    >>> from histmatch_ml.io import save_model, load_model
    >>> rng = np.random.default_rng(0)
    >>> refs = rng.integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
    >>> matcher = HistogramMatcher().fit(refs)
    >>> path = save_model(matcher, pathlib.Path(tempfile.mkdtemp()) / "ref.npz")
    >>> sorted(np.load(path, allow_pickle=False).files)  # doctest: +NORMALIZE_WHITESPACE
    ['__histmatch_ml__', 'reference_/dtype', 'reference_/histograms',
     'tables_/probs', 'tables_/values']
    >>> images = rng.integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    >>> bool((load_model(path).transform(images) == matcher.transform(images)).all())
    True
    """
    from .. import __version__

    header, arrays = _encode_estimator(estimator)
    total = sum(arr.nbytes for arr in arrays.values())
    if total > _MAX_ARRAY_BYTES:
        raise ValueError(
            f"the fitted arrays take {total} bytes together; a model file holds at most "
            f"{_MAX_ARRAY_BYTES}"
        )
    meta = {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        **header,
        "sha256": _digest(header, arrays),
    }
    meta_bytes = json.dumps(meta, indent=1, allow_nan=False).encode("utf-8")
    if len(meta_bytes) > _MAX_META_BYTES:
        raise ValueError(
            f"the metadata takes {len(meta_bytes)} bytes of JSON; a model file holds at most "
            f"{_MAX_META_BYTES}"
        )
    entries = [(META_KEY, np.frombuffer(meta_bytes, dtype=np.uint8)), *sorted(arrays.items())]
    path = Path(path)
    with (
        atomic_write(path, overwrite=overwrite) as fh,
        zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf,
    ):
        for name, arr in entries:
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, arr, allow_pickle=False)
    return path


# -------------------------------------------------------------------------- loading
class _Bad(Exception):
    """Internal: the reason a file is not a sound model (becomes a ValueError)."""


#: what zipfile, zlib and reading the file raise for a broken archive or entry
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile,  # a broken structure, a bad CRC-32
    zipfile.LargeZipFile,
    NotImplementedError,  # an unknown zip version or compression method
    RuntimeError,  # an encrypted entry
    EOFError,  # compressed data ending before its declared size
    zlib.error,  # corrupt deflate data
    OSError,  # a failed read or seek
    ValueError,  # a negative seek offset, an undecodable entry name
    OverflowError,  # an offset too large to seek to
    struct.error,
)

_NPY_MAGIC = b"\x93NUMPY"
#: the header numpy writes: the repr of a dict with sorted keys, padded with spaces
_NPY_HEADER_RE = re.compile(
    rb"\{'descr': '([<>|=]?[A-Za-z][0-9]{0,10})', 'fortran_order': (True|False), "
    rb"'shape': \(((?:[0-9]{1,20}, )*[0-9]{1,20},?|)\), \} *\n"
)


def _read_exact(member: Any, n: int, name: str) -> bytes:
    data = member.read(n)
    if len(data) != n:
        raise _Bad(f"the archive entry {_short(name)} is truncated")
    return data


def _read_npy_header(member: Any, name: str) -> tuple[str, bool, tuple[int, ...], int]:
    """``(descr, fortran_order, shape, header bytes)`` of a ``.npy`` entry, read boundedly."""
    magic = _read_exact(member, 8, name)
    if magic[:6] != _NPY_MAGIC:
        raise _Bad(f"the archive entry {_short(name)} is not a .npy array")
    version = (magic[6], magic[7])
    if version not in ((1, 0), (2, 0)):
        raise _Bad(f"the archive entry {_short(name)} has .npy format version {version}")
    len_bytes = 2 if version == (1, 0) else 4
    length = int.from_bytes(_read_exact(member, len_bytes, name), "little")
    if length > _MAX_NPY_HEADER_BYTES:
        raise _Bad(f"the archive entry {_short(name)} has a {length}-byte .npy header")
    # matched, never evaluated: only the form numpy writes is accepted
    match = _NPY_HEADER_RE.fullmatch(_read_exact(member, length, name))
    if match is None:
        raise _Bad(f"the archive entry {_short(name)} has a malformed .npy header")
    descr, fortran, shape = match.groups()
    dims = tuple(int(d) for d in shape.split(b",") if d.strip())
    if len(dims) == 1 and not shape.endswith(b","):  # "(5)" is not a tuple
        raise _Bad(f"the archive entry {_short(name)} has a malformed .npy header")
    return descr.decode(), fortran == b"True", dims, 8 + len_bytes + length


def _read_entry(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    expected: tuple[str, tuple[int, ...]] | None,
    digest: Any = None,
) -> np.ndarray:
    """The array of one archive entry, inflated in chunks and never past its size.

    ``expected`` is ``(dtype, shape)`` from the metadata; None for the
    metadata entry itself (a 1-d uint8 array of at most ``_MAX_META_BYTES``).
    The entry's header must agree with it, and its declared uncompressed size
    with the header, before the array is allocated. ``digest``, if given, is
    fed the array's bytes in C order.
    """
    name = info.filename
    try:
        with zf.open(info) as member:
            descr, fortran, shape, header_bytes = _read_npy_header(member, name)
            if expected is None:
                if descr != "|u1" or len(shape) != 1:
                    raise _Bad("the metadata entry is not UTF-8 JSON bytes")
                if shape[0] > _MAX_META_BYTES:
                    raise _Bad("the metadata entry is implausibly large")
                expected = (descr, shape)
            elif (descr, shape) != expected:
                raise _Bad(
                    f"array {_short(name[:-4])} has dtype {descr} and shape {shape}; the "
                    f"metadata says {expected[0]} and {expected[1]}"
                )
            dtype, shape = np.dtype(expected[0]), expected[1]
            nbytes = dtype.itemsize * math.prod(shape)
            if info.file_size != header_bytes + nbytes:
                raise _Bad(
                    f"the archive entry {_short(name)} declares {info.file_size} bytes; its "
                    f".npy header says {header_bytes + nbytes}"
                )
            # Fortran-order data is the C-order data of the transposed array
            arr = np.empty(shape[::-1] if fortran else shape, dtype)
            _read_into(member, arr, nbytes, None if fortran else digest, name)
    except _ARCHIVE_ERRORS as exc:
        raise _Bad(
            f"the archive entry {_short(name)} is damaged or truncated "
            f"({type(exc).__name__}: {exc})"
        ) from None
    if fortran:
        arr = arr.T
        if digest is not None:
            digest.update(arr.tobytes(order="C"))
    return arr


def _read_into(member: Any, arr: np.ndarray, nbytes: int, digest: Any, name: str) -> None:
    """Fill ``arr`` with the next ``nbytes`` of ``member``, ``_CHUNK_BYTES`` at a time.

    zipfile stops inflating at the entry's declared size and checks the
    CRC-32 there; the entry must end exactly where the array does.
    """
    buf = arr.reshape(-1).view(np.uint8) if nbytes else None
    pos = 0
    while pos < nbytes:
        chunk = member.read(min(_CHUNK_BYTES, nbytes - pos))
        if not chunk:
            raise _Bad(f"the archive entry {_short(name)} is truncated")
        buf[pos : pos + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        if digest is not None:
            digest.update(chunk)
        pos += len(chunk)
    if member.read(1):
        raise _Bad(f"the archive entry {_short(name)} holds more than its declared size")


def _parse_int(text: str) -> int:
    """JSON integers, refused beyond ``_MAX_INT_DIGITS`` digits whatever Python's own limit."""
    if len(text) - text.startswith("-") > _MAX_INT_DIGITS:
        raise ValueError(f"an integer with more than {_MAX_INT_DIGITS} digits")
    return int(text)


def _check_json_depth(meta: Any) -> None:
    """Refuse metadata nested deeper than ``_MAX_JSON_DEPTH`` (walked without recursion)."""
    stack = [(meta, 1)] if isinstance(meta, (dict, list)) else []
    while stack:
        value, depth = stack.pop()
        if depth > _MAX_JSON_DEPTH:
            raise _Bad(f"the metadata is nested more than {_MAX_JSON_DEPTH} levels deep")
        children = value.values() if isinstance(value, dict) else value
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def _archive_entries(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """``name -> ZipInfo`` of the ``.npy`` entries; anything else in the archive is refused."""
    infos = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy") or info.filename[:-4] in infos:
            raise _Bad(f"unexpected archive entry {_short(info.filename)}")
        if info.flag_bits & 0x1:
            raise _Bad(f"the archive entry {_short(info.filename)} is encrypted")
        if info.compress_type not in _ZIP_METHODS:
            raise _Bad(
                f"the archive entry {_short(info.filename)} uses compression method "
                f"{info.compress_type}; model files are deflated or stored"
            )
        infos[info.filename[:-4]] = info
    return infos


def _read_metadata(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict[str, Any]:
    """The metadata dict, its size, nesting and top-level fields checked."""
    if info.file_size > _MAX_META_BYTES + _NPY_OVERHEAD:
        raise _Bad("the metadata entry is implausibly large")
    raw = _read_entry(zf, info, None)
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"), parse_int=_parse_int)
    except (ValueError, RecursionError) as exc:  # incl. UnicodeDecodeError, JSONDecodeError
        raise _Bad(f"the metadata entry is not valid JSON ({exc})") from None
    _check_json_depth(meta)
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise _Bad("the metadata does not describe a histmatch_ml model")
    _check_version(meta)
    for key, kind in (("class", str), ("params", dict), ("attributes", dict)):
        if not isinstance(meta.get(key), kind):
            raise _Bad(f"malformed metadata: {key!r} missing or of the wrong type")
    if not isinstance(meta.get("sha256"), str):
        raise _Bad("malformed metadata: no sha256 checksum")
    return meta


def _metadata_arrays(meta: dict[str, Any]) -> dict[str, tuple[str, tuple]]:
    """``name -> (dtype, shape)`` of every array the metadata's trees refer to."""
    expected: dict[str, tuple[str, tuple]] = {}
    try:
        _expected_arrays(meta["params"], ("params",), expected)
        for name, node in meta["attributes"].items():
            if not (name.isidentifier() and name.endswith("_") and name[0] != "_"):
                raise ValueError(f"malformed metadata: bad attribute name {_short(name)}")
            _expected_arrays(node, (name,), expected)
    except ValueError as exc:
        raise _Bad(str(exc)) from None
    return expected


def _check_sizes(
    expected: Mapping[str, tuple[str, tuple]], infos: Mapping[str, zipfile.ZipInfo]
) -> None:
    """Before inflating anything: the declared sizes agree and stay within the limit."""
    sizes = {
        name: np.dtype(dtype).itemsize * math.prod(shape)
        for name, (dtype, shape) in expected.items()
    }
    total = sum(sizes.values())
    if total > _MAX_ARRAY_BYTES:
        raise _Bad(
            f"its arrays declare {total} bytes together, more than the {_MAX_ARRAY_BYTES} a "
            f"model file may hold"
        )
    for name, nbytes in sizes.items():
        declared = infos[name].file_size
        if not nbytes < declared <= nbytes + _NPY_OVERHEAD:
            dtype, shape = expected[name]
            raise _Bad(
                f"the archive entry {_short(name + '.npy')} declares {declared} bytes; the "
                f"metadata says {dtype} of shape {shape} ({nbytes} bytes and a header)"
            )


def _read_model_file(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metadata and arrays of a model file, sizes bounded and checksum verified."""
    with open(path, "rb") as fh:  # FileNotFoundError / IsADirectoryError propagate
        try:
            zf = zipfile.ZipFile(fh)
        except _ARCHIVE_ERRORS as exc:
            raise _Bad(f"not an .npz archive ({exc})") from None
        with zf:
            infos = _archive_entries(zf)
            if META_KEY not in infos:
                raise _Bad("no histmatch_ml metadata entry (an .npz written by something else?)")
            meta = _read_metadata(zf, infos.pop(META_KEY))
            expected = _metadata_arrays(meta)
            if set(infos) != set(expected):
                missing, extra = set(expected) - set(infos), set(infos) - set(expected)
                raise _Bad(
                    f"the archive's entries do not match its metadata (missing "
                    f"{_short(sorted(missing))}, unexpected {_short(sorted(extra))})"
                )
            _check_sizes(expected, infos)
            # the checksum is computed as the entries are inflated, in its own order
            digest = _digest_start({k: meta[k] for k in ("class", "params", "attributes")})
            arrays = {}
            for name in sorted(expected):
                dtype, shape = expected[name]
                _digest_array(digest, name, dtype, shape)
                arrays[name] = _read_entry(zf, infos[name], expected[name], digest)
    if digest.hexdigest() != meta["sha256"]:
        raise _Bad("checksum mismatch: the file was modified or damaged after it was written")
    for name, arr in arrays.items():
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            raise _Bad(f"array {_short(name)} holds NaN or infinity")
    return meta, arrays


def _check_version(meta: dict[str, Any]) -> None:
    from .. import __version__

    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _Bad(f"malformed metadata: format_version {_short(version)}")
    if version > FORMAT_VERSION:
        written = meta.get("library_version")
        written = written if isinstance(written, str) and len(written) <= 40 else "?"
        raise _Bad(
            f"it has format version {_short(version)} (written by histmatch_ml {written}); "
            f"histmatch_ml {__version__} reads format versions up to {FORMAT_VERSION}: upgrade "
            f"histmatch_ml to load it"
        )


def _resolve_class(name: str) -> type:
    """The estimator class called ``name``, looked up inside histmatch_ml only."""
    from sklearn.base import BaseEstimator

    module_name, _, cls_name = name.rpartition(".")
    if not (module_name == "histmatch_ml" or module_name.startswith("histmatch_ml.")):
        raise _Bad(f"class {_short(name)} is not a histmatch_ml class")
    if (
        len(name) > _MAX_CLASS_NAME
        or not cls_name.isidentifier()
        or not all(p.isidentifier() for p in module_name.split("."))
    ):
        raise _Bad(f"class name {_short(name)} is malformed")
    try:
        module = importlib.import_module(module_name)
        # a module's __getattr__ may import an optional dependency for a lazy attribute
        cls = getattr(module, cls_name, None)
    except ImportError:
        raise _Bad(
            f"class {_short(name)} does not exist in this version of histmatch_ml"
        ) from None
    if not (
        isinstance(cls, type)
        and issubclass(cls, BaseEstimator)
        and str(getattr(cls, "__module__", "")).startswith("histmatch_ml.")
    ):
        raise _Bad(f"class {_short(name)} is not an estimator of this version of histmatch_ml")
    return cls


def _load(path: Path, expected_class: type | None) -> tuple[Any, dict[str, Any]]:
    """The estimator of a model file and the file's metadata; ``_Bad`` for any flaw."""
    meta, arrays = _read_model_file(path)
    cls = _resolve_class(meta["class"])
    if expected_class is not None and not issubclass(cls, expected_class):
        raise _Bad(f"it holds a {cls.__name__}, not a {expected_class.__name__}")
    if not callable(getattr(cls, "_check_loaded_state", None)):
        raise _Bad(
            f"class {_short(meta['class'])} is not an estimator that can be loaded (it has no "
            f"_check_loaded_state method)"
        )
    params = _decode(meta["params"], arrays, ("params",))
    if not isinstance(params, dict):
        raise _Bad("malformed metadata: params is not a dict")
    try:
        estimator = cls(**params)
        if hasattr(estimator, "_validate_params"):
            estimator._validate_params()
    except (TypeError, ValueError) as exc:
        raise _Bad(f"invalid parameters ({exc})") from None
    for name, node in meta["attributes"].items():
        setattr(estimator, name, _decode(node, arrays, (name,)))
    if not _fitted_attributes(estimator):
        raise _Bad("it holds no fitted attributes")
    # the class, not this module, knows which fitted states are consistent; it looks at
    # attributes read from the file, which may lack some or hold other types than it assumes
    try:
        estimator._check_loaded_state()
    except (TypeError, ValueError) as exc:
        raise _Bad(str(exc)) from None
    except (LookupError, AttributeError) as exc:  # what it assumed of the state does not hold
        raise _Bad(
            f"its fitted state is not one {cls.__name__} accepts ({type(exc).__name__}: {exc})"
        ) from None
    return estimator, meta


def load_model(path: PathLike, expected_class: type | None = None) -> Any:
    """Load an estimator saved by :func:`save_model`, checking everything first.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` model file.
    expected_class : type, optional
        If given, the file must hold an instance of this class (or a
        subclass); ``HistogramMatcher.load`` passes itself.

    Returns
    -------
    estimator : estimator of histmatch_ml
        A fitted estimator equal to the one saved: same parameters, same
        fitted arrays, bit-identical outputs.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a histmatch_ml model (garbage bytes, an unrelated
        ``.npz``), is truncated or tampered with (broken archive, checksum
        mismatch), has a newer format version, holds arrays of the wrong
        shape or dtype, non-finite values or invalid parameters, holds a
        fitted state that the class's ``_check_loaded_state()`` refuses, holds
        a class without that method, or holds another class than
        ``expected_class``; or if it declares more than the module's limits
        (1 GiB of arrays, 16 MiB of metadata, values nested more than 32
        levels deep), which is checked before anything is inflated. The
        message names the file; no other exception comes from a file's
        content.

    See Also
    --------
    save_model : Write the file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from histmatch_ml import HistogramMatcher
    >>> from histmatch_ml.io import save_model, load_model
    >>> refs = np.random.default_rng(0).random((2, 8, 8))
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "ref.npz"
    >>> _ = save_model(HistogramMatcher().fit(refs), path)
    >>> loaded = load_model(path, expected_class=HistogramMatcher)
    >>> loaded.reference_["counts"].shape  # the references' 128 distinct values
    (128,)
    >>> _ = path.write_bytes(b"not a model")
    >>> load_model(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...ref.npz is not a valid histmatch_ml model file: not an .npz archive (...)
    """
    path = Path(path)
    try:
        estimator, _ = _load(path, expected_class)
    except _Bad as exc:
        raise ValueError(f"{path} is not a valid histmatch_ml model file: {exc}") from None
    return estimator


# ---------------------------------------------------------------------- fingerprint
def fingerprint(model: Any) -> str:
    """SHA-256 (hex) identifying a fitted model: class, parameters and fitted state.

    Equal for an estimator, the file :func:`save_model` writes from it and the
    estimator :func:`load_model` reads back, on any machine: two models with
    the same fingerprint transform every input to the same bits. The format
    and library versions are not part of it.

    Parameters
    ----------
    model : estimator of histmatch_ml, or str or os.PathLike
        A fitted estimator, or the path of a model file (which is fully
        checked, as by :func:`load_model`).

    Returns
    -------
    digest : str
        64 hexadecimal characters.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from histmatch_ml import HistogramMatcher
    >>> from histmatch_ml.io import fingerprint, save_model
    >>> refs = np.random.default_rng(0).integers(0, 256, (2, 8, 8), dtype=np.uint8)
    >>> matcher = HistogramMatcher().fit(refs)
    >>> path = save_model(matcher, pathlib.Path(tempfile.mkdtemp()) / "ref.npz")
    >>> fingerprint(path) == fingerprint(matcher), len(fingerprint(matcher))
    (True, 64)
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    return _digest(*_encode_estimator(model))


def model_summary(path: PathLike) -> dict[str, Any]:
    """What ``histmatch inspect`` prints: a checked model file, summarised.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` model file (fully checked, as by :func:`load_model`).

    Returns
    -------
    summary : dict
        ``class``, ``params``, the fitted attributes that are scalars or
        strings, whatever the class (a HistogramMatcher's ``method_``,
        ``dtype_``, ``n_channels_``, ``n_images_seen_``, ``n_pixels_seen_``),
        ``arrays`` (name -> ``"dtype shape"``),
        ``format_version``, ``library_version`` and ``fingerprint``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from histmatch_ml import HistogramMatcher
    >>> from histmatch_ml.io import model_summary, save_model
    >>> refs = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    >>> path = save_model(HistogramMatcher().fit(refs), pathlib.Path(tempfile.mkdtemp()) / "m.npz")
    >>> s = model_summary(path)
    >>> s["class"], s["attributes"]["method_"], s["attributes"]["n_images_seen_"]
    ('histmatch_ml.HistogramMatcher', 'per_channel', 2)
    """
    path = Path(path)
    try:
        estimator, meta = _load(path, None)
    except _Bad as exc:
        raise ValueError(f"{path} is not a valid histmatch_ml model file: {exc}") from None
    params = estimator.get_params(deep=False)
    attributes = {}
    arrays = {}
    for name, value in sorted(_fitted_attributes(estimator).items()):
        if isinstance(value, (bool, int, float, str, np.generic)) or value is None:
            attributes[name] = value.item() if isinstance(value, np.generic) else value
    for name, node in meta["attributes"].items():
        found: dict[str, tuple[str, tuple]] = {}
        _expected_arrays(node, (name,), found)
        for key, (dtype, shape) in sorted(found.items()):
            name = dtype if np.dtype(dtype).kind in "US" else np.dtype(dtype).name
            arrays[key] = f"{name} {shape}"
    return {
        "class": meta["class"],
        "params": params,
        "attributes": attributes,
        "arrays": arrays,
        "format_version": meta["format_version"],
        "library_version": meta.get("library_version"),
        "fingerprint": meta["sha256"],
    }
