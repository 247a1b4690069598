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
import os
import zipfile
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
_MAX_META_BYTES = 16 * 2**20
_NPY_HEADER_SLACK = 2**16
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_ARRAY_KINDS = "biufcUS"


# ------------------------------------------------------------------------ encoding
class _Encoder:
    """Turn nested values into a JSON tree plus a flat dict of named arrays."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def encode(self, value: Any, path: tuple[str, ...]) -> dict[str, Any]:
        where = "/".join(path)
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
            return {"type": "int", "value": int(value)}
        if isinstance(value, float):
            if not np.isfinite(value):
                raise ValueError(f"{where} must be finite to be saved; got {value}")
            return {"type": "float", "value": float(value)}
        if isinstance(value, str):
            return {"type": "str", "value": value}
        if isinstance(value, (list, tuple)):
            items = [self.encode(v, (*path, str(i))) for i, v in enumerate(value)]
            return {"type": type(value).__name__, "items": items}
        if _is_estimator(value):
            cls_name = _class_name(type(value))
            if not cls_name.startswith("histmatch_ml."):
                raise TypeError(f"{where} must be an estimator of histmatch_ml; got {cls_name}")
            params = self.encode(value.get_params(deep=False), (*path, "params"))
            return {"type": "estimator", "class": cls_name, "params": params}
        if isinstance(value, dict):
            items = {}
            for key, v in value.items():
                if not isinstance(key, str) or not key or "/" in key or key.startswith("__"):
                    raise TypeError(
                        f"{where} must be a dict with non-empty string keys without '/' "
                        f"(and not starting with '__') to be saved; got key {key!r}"
                    )
                items[key] = self.encode(v, (*path, key))
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
        arr = arr if arr.flags.c_contiguous else arr.copy(order="C")
        node["dtype"], node["shape"] = arr.dtype.str, list(arr.shape)
        self.arrays[where] = arr
        return node


_LITTLE = np.little_endian


def _decode(node: Any, arrays: Mapping[str, np.ndarray], where: str) -> Any:
    """Rebuild a value from its JSON tree (already checked by :func:`_expected_arrays`)."""
    kind = node["type"]
    if kind == "none":
        return None
    if kind in ("bool", "int", "float", "str"):
        return node["value"]
    if kind in ("list", "tuple"):
        items = [_decode(v, arrays, f"{where}/{i}") for i, v in enumerate(node["items"])]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        return {k: _decode(v, arrays, f"{where}/{k}") for k, v in node["items"].items()}
    if kind == "estimator":  # an unfitted estimator given as a parameter
        cls = _resolve_class(node["class"])
        params = _decode(node["params"], arrays, f"{where}/params")
        try:
            return cls(**params)
        except TypeError as exc:
            raise _Bad(f"invalid parameters of {node['class']} at {where!r} ({exc})") from None
    arr = arrays[node["name"]]
    if node.get("object"):
        arr = arr.astype(object)
    return arr[()] if kind == "scalar" else arr


_SCALAR_TYPES = {"bool": bool, "int": int, "float": (int, float), "str": str}


def _expected_arrays(node: Any, where: str, out: dict[str, tuple[str, tuple]]) -> None:
    """Check the JSON tree's structure and collect ``name -> (dtype, shape)``."""
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        raise ValueError(f"malformed metadata at {where!r}")
    kind = node["type"]
    if kind == "none":
        return
    if kind in _SCALAR_TYPES:
        value = node.get("value")
        if not isinstance(value, _SCALAR_TYPES[kind]) or (
            kind == "int" and isinstance(value, bool)
        ):
            raise ValueError(f"malformed metadata at {where!r}: bad {kind} value {value!r}")
        if kind == "float" and not np.isfinite(value):
            raise ValueError(f"{where} must be finite; got {value}")
        return
    if kind in ("list", "tuple"):
        items = node.get("items")
        if not isinstance(items, list):
            raise ValueError(f"malformed metadata at {where!r}")
        for i, item in enumerate(items):
            _expected_arrays(item, f"{where}/{i}", out)
        return
    if kind == "dict":
        items = node.get("items")
        if not isinstance(items, dict):
            raise ValueError(f"malformed metadata at {where!r}")
        for key, item in items.items():
            _expected_arrays(item, f"{where}/{key}", out)
        return
    if kind == "estimator":
        if not isinstance(node.get("class"), str) or not isinstance(node.get("params"), dict):
            raise ValueError(f"malformed metadata at {where!r}: bad estimator entry")
        if node["params"].get("type") != "dict":
            raise ValueError(f"malformed metadata at {where!r}: bad estimator parameters")
        _expected_arrays(node["params"], f"{where}/params", out)
        return
    if kind in ("array", "scalar"):
        name, dtype, shape = node.get("name"), node.get("dtype"), node.get("shape")
        ok = (
            isinstance(name, str)
            and name
            and not name.startswith("__")
            and isinstance(dtype, str)
            and isinstance(shape, list)
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
            and name not in out
        )
        if not ok:
            raise ValueError(f"malformed metadata at {where!r}: bad array entry")
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise ValueError(f"malformed metadata at {where!r}: bad dtype {dtype!r}") from None
        if dt.kind not in _ARRAY_KINDS or dt.str != dtype:
            raise ValueError(f"malformed metadata at {where!r}: unsupported dtype {dtype!r}")
        if kind == "scalar" and shape:
            raise ValueError(f"malformed metadata at {where!r}: a scalar must have shape ()")
        out[name] = (dtype, tuple(shape))
        return
    raise ValueError(f"malformed metadata at {where!r}: unknown entry type {kind!r}")


def _digest(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the class, params and attribute trees and every array's bytes."""
    h = hashlib.sha256()
    h.update(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(arrays):
        arr = arrays[name]
        h.update(json.dumps([name, arr.dtype.str, list(arr.shape)]).encode())
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
        If an attribute holds NaN or infinity.

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
    meta = {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        **header,
        "sha256": _digest(header, arrays),
    }
    meta_bytes = json.dumps(meta, indent=1, allow_nan=False).encode("utf-8")
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


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    try:
        with zf.open(info) as member:
            return np.lib.format.read_array(member, allow_pickle=False)
    except Exception as exc:  # broken zip entry, bad CRC, truncated data, pickled data
        raise _Bad(
            f"the archive entry {info.filename!r} is damaged or truncated "
            f"({type(exc).__name__}: {exc})"
        ) from None


def _read_model_file(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metadata and arrays of a model file, checksum verified."""
    with open(path, "rb") as fh:  # FileNotFoundError / IsADirectoryError propagate
        try:
            zf = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
            raise _Bad(f"not an .npz archive ({exc})") from None
        with zf:
            infos = {}
            for info in zf.infolist():
                if not info.filename.endswith(".npy") or info.filename[:-4] in infos:
                    raise _Bad(f"unexpected archive entry {info.filename!r}")
                infos[info.filename[:-4]] = info
            if META_KEY not in infos:
                raise _Bad("no histmatch_ml metadata entry (an .npz written by something else?)")
            if infos[META_KEY].file_size > _MAX_META_BYTES:
                raise _Bad("the metadata entry is implausibly large")
            raw = _read_member(zf, infos.pop(META_KEY))
            if raw.dtype != np.uint8 or raw.ndim != 1:
                raise _Bad("the metadata entry is not UTF-8 JSON bytes")
            try:
                meta = json.loads(raw.tobytes().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise _Bad(f"the metadata entry is not valid JSON ({exc})") from None
            if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
                raise _Bad("the metadata does not describe a histmatch_ml model")
            _check_version(meta)
            for key, kind in (("class", str), ("params", dict), ("attributes", dict)):
                if not isinstance(meta.get(key), kind):
                    raise _Bad(f"malformed metadata: {key!r} missing or of the wrong type")
            if not isinstance(meta.get("sha256"), str):
                raise _Bad("malformed metadata: no sha256 checksum")
            expected: dict[str, tuple[str, tuple]] = {}
            try:
                _expected_arrays(meta["params"], "params", expected)
                for name, node in meta["attributes"].items():
                    if not (name.isidentifier() and name.endswith("_") and name[0] != "_"):
                        raise ValueError(f"malformed metadata: bad attribute name {name!r}")
                    _expected_arrays(node, name, expected)
            except ValueError as exc:
                raise _Bad(str(exc)) from None
            if set(infos) != set(expected):
                missing, extra = set(expected) - set(infos), set(infos) - set(expected)
                raise _Bad(
                    f"the archive's entries do not match its metadata (missing "
                    f"{sorted(missing)}, unexpected {sorted(extra)})"
                )
            arrays = {}
            for name, (dtype, shape) in expected.items():
                info = infos[name]
                nbytes = np.dtype(dtype).itemsize * int(np.prod(shape, dtype=np.int64))
                if info.file_size > nbytes + _NPY_HEADER_SLACK:
                    raise _Bad(f"the archive entry {name!r} is larger than its metadata says")
                arr = _read_member(zf, info)
                if arr.dtype.str != dtype or arr.shape != shape:
                    raise _Bad(
                        f"array {name!r} has dtype {arr.dtype.str} and shape {arr.shape}; "
                        f"the metadata says {dtype} and {shape}"
                    )
                arrays[name] = arr
    header = {k: meta[k] for k in ("class", "params", "attributes")}
    if _digest(header, arrays) != meta["sha256"]:
        raise _Bad("checksum mismatch: the file was modified or damaged after it was written")
    for name, arr in arrays.items():
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            raise _Bad(f"array {name!r} holds NaN or infinity")
    return meta, arrays


def _check_version(meta: dict[str, Any]) -> None:
    from .. import __version__

    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _Bad(f"malformed metadata: format_version {version!r}")
    if version > FORMAT_VERSION:
        raise _Bad(
            f"it has format version {version} (written by histmatch_ml "
            f"{meta.get('library_version', '?')}); histmatch_ml {__version__} reads format "
            f"versions up to {FORMAT_VERSION}: upgrade histmatch_ml to load it"
        )


def _resolve_class(name: str) -> type:
    """The estimator class called ``name``, looked up inside histmatch_ml only."""
    from sklearn.base import BaseEstimator

    module_name, _, cls_name = name.rpartition(".")
    if not (module_name == "histmatch_ml" or module_name.startswith("histmatch_ml.")):
        raise _Bad(f"class {name!r} is not a histmatch_ml class")
    if not cls_name.isidentifier() or not all(p.isidentifier() for p in module_name.split(".")):
        raise _Bad(f"class name {name!r} is malformed")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise _Bad(f"class {name!r} does not exist in this version of histmatch_ml") from None
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseEstimator)):
        raise _Bad(f"class {name!r} is not an estimator of this version of histmatch_ml")
    return cls


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
        ``expected_class``. The message names the file.

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
    >>> _ = save_model(HistogramMatcher(n_quantiles=64).fit(refs), path)
    >>> loaded = load_model(path, expected_class=HistogramMatcher)
    >>> loaded.n_quantiles, loaded.reference_["quantiles"].shape
    (64, (1, 64))
    >>> _ = path.write_bytes(b"not a model")
    >>> load_model(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...ref.npz is not a valid histmatch_ml model file: not an .npz archive (...)
    """
    path = Path(path)
    try:
        meta, arrays = _read_model_file(path)
        cls = _resolve_class(meta["class"])
        if expected_class is not None and not issubclass(cls, expected_class):
            raise _Bad(f"it holds a {cls.__name__}, not a {expected_class.__name__}")
        if not callable(getattr(cls, "_check_loaded_state", None)):
            raise _Bad(
                f"class {meta['class']!r} is not an estimator that can be loaded (it has no "
                f"_check_loaded_state method)"
            )
        params = _decode(meta["params"], arrays, "params")
        if not isinstance(params, dict):
            raise _Bad("malformed metadata: params is not a dict")
        try:
            estimator = cls(**params)
            if hasattr(estimator, "_validate_params"):
                estimator._validate_params()
        except (TypeError, ValueError) as exc:
            raise _Bad(f"invalid parameters ({exc})") from None
        for name, node in meta["attributes"].items():
            setattr(estimator, name, _decode(node, arrays, name))
        if not _fitted_attributes(estimator):
            raise _Bad("it holds no fitted attributes")
        # the class, not this module, knows which fitted states are consistent
        try:
            estimator._check_loaded_state()
        except (TypeError, ValueError) as exc:
            raise _Bad(str(exc)) from None
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
    estimator = load_model(path)
    meta, _ = _read_model_file(Path(path))
    params = estimator.get_params(deep=False)
    attributes = {}
    arrays = {}
    for name, value in sorted(_fitted_attributes(estimator).items()):
        if isinstance(value, (bool, int, float, str, np.generic)) or value is None:
            attributes[name] = value.item() if isinstance(value, np.generic) else value
    for name, node in meta["attributes"].items():
        found: dict[str, tuple[str, tuple]] = {}
        _expected_arrays(node, name, found)
        for key, (dtype, shape) in sorted(found.items()):
            name = dtype if np.dtype(dtype).kind in "US" else np.dtype(dtype).name
            arrays[key] = f"{name} {shape}"
    return {
        "class": meta["class"],
        "params": params,
        "attributes": attributes,
        "arrays": arrays,
        "format_version": meta["format_version"],
        "library_version": meta["library_version"],
        "fingerprint": meta["sha256"],
    }
