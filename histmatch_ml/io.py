"""Model files (one ``.npz``, no pickle) and image files for the command line.

Model files
-----------
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
non-finite values, invalid parameters. Nothing in the file is ever executed or
unpickled; the class is looked up by name inside this package only.

Fitted attributes (names ending in ``_``) may be ndarrays (numeric, string, or
object arrays of strings), numpy scalars, Python scalars and strings, None, and
dicts (string keys), lists and tuples of those, nested. Parameters follow the
same rules. The same fitted estimator always gives the same bytes and the same
fingerprint; the file holds no timestamps.

Pickle and joblib keep working too (``GridSearchCV(n_jobs=...)`` needs them),
and because the fitted attributes are plain arrays and builtins,
``skops.io.load(path, trusted=["histmatch_ml.matcher.HistogramMatcher"])``
loads a ``skops.io.dump`` of a matcher with only the class trusted.

Image files
-----------
:func:`read_image` opens any Pillow-readable image with Pillow's
decompression-bomb limit kept on (the warning is turned into an error for that
file), keeps 16-bit greyscale as 16-bit and reads 16-bit colour PNG/TIFF (which
Pillow would reduce to 8 bits) with OpenCV. :func:`write_image` writes
atomically: a temporary file in the destination directory, ``fsync``, then
``os.replace`` (or a no-clobber link), so an interrupted run never leaves a
half-written or temporary file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import secrets
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from . import _reference

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

PathLike = str | os.PathLike


# --------------------------------------------------------------------------- atomic files
@contextlib.contextmanager
def atomic_write(path: PathLike, *, overwrite: bool = True) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path``; move it into place on success.

    The temporary file lives in the destination directory (so the final
    ``os.replace`` is atomic), is flushed and ``fsync``-ed, and is removed if
    anything fails, ``KeyboardInterrupt`` included. With ``overwrite=False``
    the file is linked into place, which fails if ``path`` appeared meanwhile.

    Parameters
    ----------
    path : str or os.PathLike
        The file to create or replace. Its directory must exist.
    overwrite : bool, default=True
        Replace an existing file; otherwise raise ``FileExistsError``.

    Yields
    ------
    file : binary file object
        Write the content to it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from histmatch_ml.io import atomic_write
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.bin"
    >>> with atomic_write(target) as fh:
    ...     _ = fh.write(b"done")
    >>> target.read_bytes(), sorted(p.name for p in target.parent.iterdir())
    (b'done', ['out.bin'])
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite it")
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic no-clobber
            except FileExistsError:
                raise FileExistsError(f"{path} exists; refusing to overwrite it") from None
            except OSError:  # no hard links on this file system
                if path.exists():
                    raise FileExistsError(f"{path} exists; refusing to overwrite it") from None
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


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
            f"{where} must be an ndarray, a number, a string, None, or a list, tuple or "
            f"dict of those to be saved; got {type(value).__name__}"
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


def _class_name(cls: type) -> str:
    """The importable name of ``cls``: its top-level export when there is one."""
    import histmatch_ml

    if getattr(histmatch_ml, cls.__name__, None) is cls:
        return f"histmatch_ml.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _fitted_attributes(estimator: Any) -> dict[str, Any]:
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
    >>> sorted(np.load(path, allow_pickle=False).files)
    ['__histmatch_ml__', 'reference_/dtype', 'reference_/histograms']
    >>> images = rng.integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    >>> bool((load_model(path).transform(images) == matcher.transform(images)).all())
    True
    """
    from . import __version__

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
    from . import __version__

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
        shape or dtype, non-finite values or invalid parameters, or holds
        another class than ``expected_class``. The message names the file.

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
        try:
            _check_fitted_state(estimator)
        except (TypeError, ValueError) as exc:
            raise _Bad(str(exc)) from None
    except _Bad as exc:
        raise ValueError(f"{path} is not a valid histmatch_ml model file: {exc}") from None
    return estimator


# ------------------------------------------------------------------ state checks
def _positive_int(value: Any, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1; got {value}")
    return int(value)


def _check_fitted_state(estimator: Any) -> None:
    """Consistency of the fitted attributes a histmatch_ml estimator may have.

    Reference states (``reference_``, or each item of ``references_``) are
    validated by the method that reads them (``MatchingMethod.check_state``),
    so this module knows no method's layout.
    """
    from .methods import get_method

    attrs = _fitted_attributes(estimator)
    if not attrs:
        raise ValueError("it holds no fitted attributes")
    n_channels = None
    for name in ("n_channels_", "n_images_seen_", "n_pixels_seen_", "n_features_in_"):
        if name in attrs:
            value = _positive_int(attrs[name], name)
            n_channels = value if name == "n_channels_" else n_channels
    if "dtype_" in attrs:
        _reference.dtype_from_name(attrs["dtype_"], "dtype_")
    states = []
    if "reference_" in attrs:
        states.append(("reference_", attrs["reference_"]))
    if "references_" in attrs:
        if not isinstance(attrs["references_"], list) or not attrs["references_"]:
            raise ValueError("references_ must be a non-empty list of reference states")
        states += [(f"references_[{i}]", s) for i, s in enumerate(attrs["references_"])]
    if not states:
        return
    method = get_method(attrs.get("method_", getattr(estimator, "method", None)))
    for where, state in states:
        try:
            counted = method.check_state(state, n_channels)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        seen = attrs.get("n_pixels_seen_")
        if where == "reference_" and counted is not None and seen is not None and counted != seen:
            raise ValueError(
                f"reference_ histograms count {counted} pixels; n_pixels_seen_ says {seen}"
            )


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
        ``class``, ``params``, the scalar and string fitted attributes (such
        as ``method_``, ``dtype_``, ``n_channels_``, ``n_images_seen_``,
        ``n_pixels_seen_``), ``arrays`` (name -> ``"dtype shape"``),
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


# ----------------------------------------------------------------------- image files
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


def _save_options(im: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    info = im.info
    for key in ("icc_profile", "exif", "dpi"):
        if info.get(key):
            opts[key] = info[key]
    if im.format == "JPEG":
        from PIL import JpegImagePlugin

        if getattr(im, "quantization", None):
            opts["qtables"] = im.quantization
        sampling = JpegImagePlugin.get_sampling(im)
        if sampling != -1:
            opts["subsampling"] = sampling
        if info.get("progressive") or info.get("progression"):
            opts["progressive"] = True
    elif im.format == "TIFF" and info.get("compression") in _LOSSLESS_TIFF:
        opts["compression"] = info["compression"]
    elif im.format == "WEBP" and info.get("lossless"):
        opts["lossless"] = True
    return opts


def read_image(path: PathLike, *, max_pixels: int | None = None) -> ImageData:
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
            fmt, options, mode = im.format, _save_options(im), im.mode
            if mode in ("RGB", "RGBA") and ";16" in _rawmode(im):
                return ImageData(_read_colour16(path, im.size), fmt, options)
            im.load()
            if mode.startswith("I;16"):
                if mode != "I;16":
                    im = Image.fromarray(np.asarray(im).astype(np.uint16))
            elif mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode in _CONVERT:
                im = im.convert(_CONVERT[mode])
            elif mode not in _KEEP:
                raise ValueError(f"{path}: image mode {mode!r} is not supported")
            im.load()
            return ImageData(im, fmt, options)


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
