"""Mutated model files: ``load_model`` returns the saved model or a ValueError naming the file.

Valid files of four models are mutated (truncated, flipped, zip structure
edited, arrays declared oversized, JSON metadata edited), about 1,500
mutants; for every one ``load_model`` must either raise ``ValueError`` whose
message holds the path, or return an estimator with the original's
fingerprint that transforms like it. A metadata edit whose checksum was
recomputed describes another model, possibly a valid one: loading it must
give an estimator of this package. Any other exception fails the test. The
random choices use fixed seeds.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator

from histmatch_ml import HistogramMatcher, RandomHistogramMatching
from histmatch_ml import io as hio
from histmatch_ml.io import _model

SEED = 20240611
META = f"{hio.META_KEY}.npy"

_RNG = np.random.default_rng(3)
_U8 = _RNG.integers(0, 256, size=(3, 10, 12, 3), dtype=np.uint8)
_F32 = _RNG.random((3, 10, 12, 3), dtype=np.float32)
_TEST_U8 = _RNG.integers(0, 256, size=(2, 6, 7, 3), dtype=np.uint8)
_TEST_F32 = _RNG.random((2, 6, 7, 3), dtype=np.float32)


def _models() -> dict[str, tuple[Any, np.ndarray]]:
    """Fitted models by name, with an input each transforms."""
    return {
        "u8": (HistogramMatcher().fit(_U8), _TEST_U8),
        "float": (HistogramMatcher(n_quantiles=16).fit(_F32), _TEST_F32),
        "lab": (
            HistogramMatcher("lab", n_iter=2, n_quantiles=16, random_state=0).fit(_U8),
            _TEST_U8,
        ),
        "augment": (
            RandomHistogramMatching(p=1.0, random_state=0).fit(list(_U8[:2])),
            _TEST_U8[0],
        ),
    }


def _output(model: Any, x: np.ndarray) -> list[np.ndarray]:
    if isinstance(model, RandomHistogramMatching):
        params = [{"apply": True, "reference": i, "strength": 0.75} for i in range(2)]
        return [model.apply(x, p) for p in params]
    return [model.transform(x)]


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, tuple[bytes, str, list[np.ndarray], np.ndarray]]:
    """``name -> (file bytes, fingerprint, outputs of the loaded model, input)``."""
    folder = tmp_path_factory.mktemp("originals")
    out = {}
    for name, (model, x) in _models().items():
        path = hio.save_model(model, folder / f"{name}.npz")
        loaded = hio.load_model(path)
        out[name] = (path.read_bytes(), hio.fingerprint(model), _output(loaded, x), x)
    return out


# ------------------------------------------------------------------ zip helpers
def _members(data: bytes) -> list[tuple[str, bytes]]:
    """``(name, uncompressed bytes)`` of every entry of a valid archive."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()]


def _zip(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip archive written byte by byte (duplicates allowed, no zip64)."""
    local, central = bytearray(), bytearray()
    for name, data in members:
        if method == zipfile.ZIP_DEFLATED:
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            payload = c.compress(data) + c.flush()
        else:
            payload = data
        raw, crc, offset = name.encode(), zlib.crc32(data), len(local)
        sizes = (crc, len(payload), len(data), len(raw), 0)
        local += struct.pack("<IHHHHH", 0x04034B50, 20, 0, method, 0, 0x21)
        local += struct.pack("<IIIHH", *sizes) + raw + payload
        central += struct.pack("<IHHHHHH", 0x02014B50, 20, 20, 0, method, 0, 0x21)
        central += struct.pack("<IIIHHHHHII", *sizes, 0, 0, 0, 0o644 << 16, offset) + raw
    n = len(members)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(central), len(local), 0)
    return bytes(local + central + end)


def _central(data: bytes) -> Iterator[tuple[int, str]]:
    """``(offset, name)`` of each central directory record of an archive without comment."""
    count, _, start = struct.unpack_from("<HII", data, len(data) - 22 + 10)
    pos = start
    for _ in range(count):
        n_name, n_extra, n_comment = struct.unpack_from("<HHH", data, pos + 28)
        yield pos, data[pos + 46 : pos + 46 + n_name].decode()
        pos += 46 + n_name + n_extra + n_comment


def _patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _npy_header(descr: str, shape: tuple, fortran: bool = False) -> bytes:
    buf = io.BytesIO()
    header = {"descr": descr, "fortran_order": fortran, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def _largest_array(members: list[tuple[str, bytes]]) -> str:
    return max((m for m in members if m[0] != META), key=lambda m: len(m[1]))[0]


# ------------------------------------------------------------------ JSON helpers
def _meta_of(members: list[tuple[str, bytes]]) -> dict[str, Any]:
    return json.loads(np.load(io.BytesIO(dict(members)[META])).tobytes())


def _with_meta(
    members: list[tuple[str, bytes]], text: str | bytes, npy: bytes | None = None
) -> bytes:
    """The archive with its metadata entry replaced by ``text`` (or by ``npy`` as is)."""
    if npy is None:
        raw = text.encode() if isinstance(text, str) else text
        npy = _npy(np.frombuffer(raw, dtype=np.uint8))
    return _zip([(n, npy if n == META else d) for n, d in members])


class _Rehashed(bytes):
    """A mutant whose checksum was recomputed: a different model, which may be valid."""


def _edited(
    members: list[tuple[str, bytes]], edit: Callable[[dict], Any], rehash: bool = True
) -> bytes:
    """The archive with ``edit(meta)`` applied, the checksum recomputed unless told not to.

    Recomputing the checksum lets the edit reach the checks behind it; such a
    mutant describes another model, which ``load_model`` may accept.
    """
    meta = _meta_of(members)
    edit(meta)
    if rehash and isinstance(meta, dict) and "sha256" in meta:
        arrays = {n[:-4]: np.load(io.BytesIO(d)) for n, d in members if n != META}
        header = {k: meta.get(k) for k in ("class", "params", "attributes")}
        meta["sha256"] = _model._digest(header, arrays)
        return _Rehashed(_with_meta(members, json.dumps(meta)))
    return _with_meta(members, json.dumps(meta))


# -------------------------------------------------------------------- mutations
def _truncations(data: bytes) -> Iterator[tuple[str, bytes]]:
    cuts = {0, 1, 4, 22, 30, len(data) - 22, len(data) - 1}
    cuts |= {int(c) for c in np.linspace(0, len(data) - 1, 24)}
    for cut in sorted(cuts):
        yield f"cut {cut}", data[:cut]


def _flips(data: bytes, rng: np.random.Generator, n: int = 40) -> Iterator[tuple[str, bytes]]:
    for pos in rng.integers(0, len(data), size=n):
        out = bytearray(data)
        out[pos] ^= int(rng.integers(1, 256))
        yield f"flip {pos}", bytes(out)
    # one flip in each byte of every central directory record's fixed part
    for offset, name in _central(data):
        if name == META:
            for k in range(4, 46):
                out = bytearray(data)
                out[offset + k] ^= 0xA5
                yield f"central {name} +{k}", bytes(out)


def _zip_edits(data: bytes) -> Iterator[tuple[str, bytes]]:
    members = _members(data)
    big = _largest_array(members)
    central = dict((name, off) for off, name in _central(data))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        local = {info.filename: info.header_offset for info in zf.infolist()}
    for name in (META, big):
        cd, lh = central[name], local[name]
        yield f"{name} needs zip version 25.5", _patch(data, cd + 6, "<H", 255)
        for flag in (0x1, 0x20, 0x800):
            yield f"{name} flag {flag:#x}", _patch(data, cd + 8, "<H", flag)
        for method in (0, 12, 99):
            yield f"{name} method {method}", _patch(data, cd + 10, "<H", method)
            yield f"{name} local method {method}", _patch(data, lh + 8, "<H", method)
        yield f"{name} crc", _patch(data, cd + 16, "<I", 0x12345678)
        csize, usize = struct.unpack_from("<II", data, cd + 20)
        for value in (0, csize - 1, 0xFFFFFFFF):
            yield f"{name} compressed size {value}", _patch(data, cd + 20, "<I", value)
        for value in (0, usize - 1, usize + 1, usize * 1000, 0xFFFFFFFF):
            yield f"{name} size {value}", _patch(data, cd + 24, "<I", value)
        for value in (0, 0xFFFF):
            yield f"{name} name length {value}", _patch(data, cd + 28, "<H", value)
            yield f"{name} extra length {value}", _patch(data, cd + 30, "<H", value)
            yield f"{name} local extra length {value}", _patch(data, lh + 28, "<H", value)
        for value in (lh + 1, len(data), 0xFFFFFFFF):
            yield f"{name} header offset {value}", _patch(data, cd + 42, "<I", value)
        renamed = name[:-5] + ("X" if name[-5] != "X" else "Y") + ".npy"
        out = bytearray(data)
        out[cd + 46 : cd + 46 + len(name)] = renamed.encode()
        yield f"{name} renamed in the directory", bytes(out)
        out[lh + 30 : lh + 30 + len(name)] = renamed.encode()
        yield f"{name} renamed", bytes(out)
        yield f"{name} duplicated", _zip([*members, (name, dict(members)[name])])
        yield f"{name} dropped", _zip([m for m in members if m[0] != name])
    end = len(data) - 22
    for field, fmt in ((8, "<H"), (10, "<H"), (12, "<I"), (16, "<I")):
        value = struct.unpack_from(fmt, data, end + field)[0]
        for delta in (-1, 1):
            yield f"end record +{field} {delta:+}", _patch(data, end + field, fmt, value + delta)
    yield "end record comment length", _patch(data, end + 20, "<H", 40)
    yield "comment", data[:-2] + struct.pack("<H", 7) + b"comment"
    yield "trailing bytes", data + b"\0" * 100
    yield "extra .npy entry", _zip([*members, ("extra_.npy", _npy(np.zeros(3)))])
    yield "extra text entry", _zip([*members, ("notes.txt", b"hello")])
    yield "directory entry", _zip([*members, ("dir/", b"")])
    # the same content written differently: must load
    yield "stored", _zip(members, zipfile.ZIP_STORED)
    yield "reordered", _zip(members[::-1])


def _oversized(data: bytes) -> Iterator[tuple[str, bytes]]:
    members = _members(data)
    big = _largest_array(members)
    meta = _meta_of(members)
    arr = np.load(io.BytesIO(dict(members)[big]))
    # the metadata declares a huge array
    shapes = ([2**28], [2**40, 3], [2**62, 2**62], [10**30], [0, 2**62, 2**62], [1] * 70)
    for shape in shapes:

        def bump(m, shape=shape):
            for node in _array_nodes(m):
                if node["name"] == big[:-4]:
                    node["shape"] = shape

        yield f"metadata shape {shape[:3]}", _edited(members, bump, rehash=False)
    # an entry's .npy header declares a huge array (zip sizes honest)
    for shape in ((2**28,), (2**40, 3), (2**62,), (2**62, 2**62)):
        npy = _npy_header(arr.dtype.str, shape) + arr.tobytes()
        yield f"header shape {shape}", _zip([(n, npy if n == big else d) for n, d in members])
    # the metadata entry's header declares a huge array
    raw = dict(members)[META]
    meta_data = raw[len(raw) - len(json.dumps(meta, indent=1).encode()) :]
    for shape in ((2**30,), (2**40,), (len(meta_data), 2**20)):
        npy = _npy_header("|u1", shape) + meta_data
        yield f"metadata header shape {shape}", _with_meta(members, "", npy=npy)
    # malformed or unusual headers
    for label, npy in (
        ("fortran", _npy_header(arr.dtype.str, arr.shape, True) + arr.tobytes()),
        ("descr U", _npy_header("<U100000000", arr.shape) + arr.tobytes()),
        ("descr object", _npy_header("|O", arr.shape) + arr.tobytes()),
        ("version 3", _npy(arr)[:6] + b"\x03\x00" + _npy(arr)[8:]),
        ("version 2", b"\x93NUMPY\x02\x00" + struct.pack("<I", 60000) + b" " * 60000),
        ("not npy", b"PK" + _npy(arr)[2:]),
        ("spaces", _npy(arr).replace(b"'shape': (", b"'shape':(", 1) + b" "),
        ("int shape", _npy(arr).replace(b"'shape': (", b"'shape': 3 or (", 1)),
        ("escape", _npy(arr).replace(b"'descr': '", b"'descr': '\\d", 1)),
        ("short", _npy(arr)[:-1]),
        ("long", _npy(arr) + b"\0"),
    ):
        yield f"header {label}", _zip([(n, npy if n == big else d) for n, d in members])


def _array_nodes(tree: Any) -> Iterator[dict]:
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") in ("array", "scalar"):
                yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


_WEIRD = [None, True, -1, 1.5, 2**70, "x", [], {"type": "none"}]
_CLASSES = [
    "os.system",
    "builtins.eval",
    "histmatch_ml.io._model.Path",
    "histmatch_ml.io._model.importlib",
    "histmatch_ml.__main__.main",
    "histmatch_ml.augment.AlbumentationsRandomHistogramMatching",
    "histmatch_ml.matcher.BaseEstimator",
    "histmatch_ml.ImageFlattener",
    "histmatch_ml.HistogramMatcher",
    "histmatch_ml.RandomHistogramMatching",
    "histmatch_ml.nope.Thing",
    "histmatch_ml.",
    "histmatch_ml..X",
    "histmatch_ml." + "a" * 10_000,
    "..",
    ".",
    "",
]


def _json_edits(data: bytes) -> Iterator[tuple[str, bytes]]:
    members = _members(data)
    meta = _meta_of(members)
    text = json.dumps(meta)
    for name in _CLASSES:
        yield f"class {name[:40]!r}", _edited(members, lambda m, c=name: m.update({"class": c}))
    for key in ("format", "format_version", "class", "params", "attributes", "sha256"):
        yield f"no {key}", _edited(members, lambda m, k=key: m.pop(k))
        for value in (None, "x", [], {}):
            yield (
                f"{key} = {value!r}",
                _edited(members, lambda m, k=key, v=value: m.update({k: v})),
            )
    for attr in meta["attributes"]:
        yield f"no {attr}", _edited(members, lambda m, a=attr: m["attributes"].pop(a))
        for value in ([], None, {"type": "nope"}):
            yield (
                f"{attr} = {value!r}",
                _edited(members, lambda m, a=attr, v=value: m["attributes"].update({a: v})),
            )
    # every node's type and scalar value, a few at a time
    nodes = _nodes(meta)
    rng = np.random.default_rng(SEED)
    for i in rng.choice(len(nodes), size=min(len(nodes), 3), replace=False):
        path = nodes[i]
        for kind in ("none", "int", "str", "list", "dict"):
            yield f"{path} type {kind}", _edited(members, _set_at(path, "type", kind))
        for value in _WEIRD:
            yield f"{path} value {value!r}", _edited(members, _set_at(path, "value", value))
    for kind in ("estimator", "array", "scalar"):
        yield f"first node {kind}", _edited(members, _set_at(nodes[0], "type", kind))
    # deep nesting, valid node by node, and raw
    for depth in (_model._MAX_NESTING, _model._MAX_NESTING + 1, 300):
        node: dict = {"type": "none"}
        for _ in range(depth):
            node = {"type": "list", "items": [node]}
        yield (
            f"nested {depth}",
            _edited(members, lambda m, n=node: m["attributes"].update(deep_=n)),
        )
    nested = '{"type": "list", "items": [' * 5000 + '{"type": "none"}' + "]}" * 5000
    yield (
        "nested 5000",
        _with_meta(
            members, text.replace('"attributes": {', f'"attributes": {{"deep_": {nested}, ', 1)
        ),
    )
    for depth in (200, 100_000):
        deep = "[" * depth + "]" * depth
        yield f"raw nested {depth}", _with_meta(members, text[:-1] + f', "deep": {deep}}}')
        yield (
            f"raw nested objects {depth}",
            _with_meta(
                members, text[:-1] + ', "deep": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
            ),
        )
    yield "unclosed", _with_meta(members, "[" * 100_000)
    # huge numbers
    digits = "9" * 5000
    for key in ("format_version", "library_version"):
        yield f"{key} 5000 digits", _with_meta(members, text[:-1] + f', "{key}": {digits}}}')
    yield (
        "shape 5000 digits",
        _with_meta(members, text.replace('"shape": [', f'"shape": [{digits}, ', 1)),
    )
    yield (
        "value 5000 digits",
        _with_meta(members, text.replace('"value": ', f'"value": {digits}, "v": ', 1)),
    )
    yield "float 1e999", _with_meta(members, text.replace('"value": ', '"value": 1e999, "v": ', 1))
    yield "NaN", _with_meta(members, text.replace('"value": ', '"value": NaN, "v": ', 1))
    for attr in ("n_channels_", "n_images_seen_", "n_pixels_seen_", "n_references_"):
        if attr in meta["attributes"]:
            for value in (10**30, 10**4000, -(2**63), 0, 2**63):
                yield (
                    f"{attr} = {str(value)[:24]}",
                    _edited(
                        members,
                        lambda m, a=attr, v=value: m["attributes"][a].update(type="int", value=v),
                    ),
                )
    # not JSON, not UTF-8, not a dict
    for label, raw in (
        ("empty", b""),
        ("not utf-8", b"\xff\xfe" + text.encode()),
        ("list", b"[]"),
        ("null", b"null"),
        ("string", b'"x"'),
        ("truncated", text.encode()[: len(text) // 2]),
        ("surrogate", text.replace('"class": "', '"class": "\\ud800', 1).encode()),
    ):
        yield f"metadata {label}", _with_meta(members, raw)
    raw = text.encode()
    as_int32 = np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<i4")
    yield "metadata int32", _with_meta(members, "", npy=_npy(as_int32))


def _nodes(tree: Any) -> list[tuple]:
    """Paths (key tuples) of every node (dict with a ``type``) under ``params``/``attributes``."""
    out, stack = (
        [],
        [
            (("params",), tree["params"]),
            *((("attributes", k), v) for k, v in tree["attributes"].items()),
        ],
    )
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict) and "type" in node:
            out.append(path)
            items = node.get("items")
            if isinstance(items, dict):
                stack.extend(((*path, "items", k), v) for k, v in items.items())
            elif isinstance(items, list):
                stack.extend(((*path, "items", i), v) for i, v in enumerate(items))
    return sorted(out, key=str)


def _set_at(path: tuple, key: str, value: Any) -> Callable[[dict], None]:
    def edit(meta: dict) -> None:
        node = meta
        for k in path:
            node = node[k]
        node[key] = value

    return edit


_FAMILIES = {
    "truncate": lambda data, rng: _truncations(data),
    "flip": _flips,
    "zip": lambda data, rng: _zip_edits(data),
    "oversized": lambda data, rng: _oversized(data),
    "json": lambda data, rng: _json_edits(data),
}


@pytest.mark.parametrize("family", sorted(_FAMILIES))
def test_mutants_load_or_raise_value_error(tmp_path, originals, family):
    rng = np.random.default_rng([SEED, sorted(_FAMILIES).index(family)])
    unexpected, outcomes = [], {"refused": 0, "loaded": 0}
    for model, (data, digest, expected, x) in originals.items():
        for i, (label, mutant) in enumerate(_FAMILIES[family](data, rng)):
            path = tmp_path / f"{model}-{i}.npz"
            path.write_bytes(mutant)
            try:
                loaded = hio.load_model(path)
            except ValueError as exc:
                if str(path) not in str(exc):
                    unexpected.append(f"{model} {label}: message without the path: {exc}")
                outcomes["refused"] += 1
                continue
            except Exception as exc:  # any other type is what this test reports
                unexpected.append(f"{model} {label}: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            outcomes["loaded"] += 1
            if isinstance(mutant, _Rehashed):  # another model: it must be one of this package
                if not (
                    isinstance(loaded, BaseEstimator)
                    and type(loaded).__module__.startswith("histmatch_ml.")
                ):
                    unexpected.append(f"{model} {label}: loaded {type(loaded).__name__}")
            elif hio.fingerprint(loaded) != digest:
                unexpected.append(f"{model} {label}: loaded a different model")
            elif not all(
                np.array_equal(a, b) for a, b in zip(_output(loaded, x), expected, strict=True)
            ):
                unexpected.append(f"{model} {label}: loaded a model that transforms differently")
    assert not unexpected, "\n".join(unexpected)
    assert outcomes["refused"] > 0
