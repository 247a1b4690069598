"""Model files of histmatch_ml.io (npz + JSON, no pickle): save, load, fingerprint, refusals."""

from __future__ import annotations

import io as _stdio
import json
import pickle
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from histmatch_ml import HistogramMatcher
from histmatch_ml import io as hio
from histmatch_ml.io import _model
from histmatch_ml.methods import available_methods

RNG = np.random.default_rng(7)
REFS_U8 = RNG.integers(20, 230, size=(3, 24, 20, 3), dtype=np.uint8)
IMAGES_U8 = RNG.integers(0, 256, size=(2, 16, 18, 3), dtype=np.uint8)
# (continuous floats: references of 8-bit levels keep exact level histograms instead)
REFS_F32 = ((REFS_U8 + RNG.random(REFS_U8.shape)) / 256).astype(np.float32)
IMAGES_F32 = (IMAGES_U8 / 255).astype(np.float32)


def _fitted(method: str, dtype: str = "uint8") -> HistogramMatcher:
    refs = REFS_U8 if dtype == "uint8" else REFS_F32
    params = {"n_iter": 4, "n_quantiles": 64} if method == "lab" else {"n_quantiles": 64}
    return HistogramMatcher(method=method, random_state=3, **params).fit(refs)


def _assert_same_estimator(a, b) -> None:
    assert type(a) is type(b)
    assert a.get_params() == b.get_params()
    fa, fb = _model._fitted_attributes(a), _model._fitted_attributes(b)
    assert fa.keys() == fb.keys()
    for name in fa:
        _assert_same_value(fa[name], fb[name])


def _assert_same_value(a, b) -> None:
    assert type(a) is type(b), (a, b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same_value(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same_value(x, y)
    else:
        assert a == b


def _rewrite(path: Path, *, meta=None, arrays=None, rehash: bool = True) -> None:
    """Rewrite a model file with plain numpy, changing metadata and/or arrays."""
    with np.load(path, allow_pickle=False) as npz:
        content = {k: npz[k] for k in npz.files}
    m = json.loads(content.pop(hio.META_KEY).tobytes())
    if meta is not None:
        meta(m)
    if arrays is not None:
        arrays(content)
    if rehash:
        header = {k: m[k] for k in ("class", "params", "attributes")}
        m["sha256"] = _model._digest(header, content)
    content[hio.META_KEY] = np.frombuffer(json.dumps(m).encode(), dtype=np.uint8)
    np.savez(path, **content)


# ----------------------------------------------------------------- round trips
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.parametrize("method", available_methods())
def test_round_trip_every_method(tmp_path, method, dtype):
    matcher = _fitted(method, dtype)
    path = matcher.save(tmp_path / "model.npz")
    with np.load(path, allow_pickle=False) as npz:  # no pickled object inside
        meta = json.loads(npz[hio.META_KEY].tobytes())
        assert all(npz[k].dtype != object for k in npz.files)
    assert meta["format_version"] == hio.FORMAT_VERSION
    assert meta["attributes"]["dtype_"]["value"] == dtype
    assert meta["attributes"]["n_channels_"]["value"] == 3
    assert meta["attributes"]["n_images_seen_"]["value"] == 3
    assert meta["params"]["items"]["method"]["value"] == method
    loaded = HistogramMatcher.load(path)
    _assert_same_estimator(matcher, loaded)
    images = IMAGES_U8 if dtype == "uint8" else IMAGES_F32
    np.testing.assert_array_equal(loaded.transform(images), matcher.transform(images))
    assert hio.fingerprint(loaded) == hio.fingerprint(matcher) == hio.fingerprint(path)


def test_same_model_same_bytes(tmp_path):
    matcher = _fitted("per_channel")
    a = hio.save_model(matcher, tmp_path / "a.npz").read_bytes()
    b = hio.save_model(matcher, tmp_path / "b.npz").read_bytes()
    assert a == b


def test_fingerprint_changes_with_params_and_state():
    matcher = _fitted("per_channel")
    base = hio.fingerprint(matcher)
    other = _fitted("per_channel").set_params(strength=0.5)
    assert hio.fingerprint(other) != base
    more = _fitted("per_channel").partial_fit(REFS_U8[:1])
    assert hio.fingerprint(more) != base


def test_partial_fit_after_load_continues(tmp_path):
    matcher = _fitted("per_channel")
    loaded = HistogramMatcher.load(matcher.save(tmp_path / "m.npz"))
    loaded.partial_fit(IMAGES_U8)
    matcher.partial_fit(IMAGES_U8)
    np.testing.assert_array_equal(
        loaded.reference_["histograms"], matcher.reference_["histograms"]
    )


def test_generic_nested_attributes_round_trip(tmp_path):
    matcher = _fitted("per_channel")
    matcher.extra_ = {
        "arrays": [np.arange(5, dtype=np.int16), np.eye(2, dtype=np.float32)],
        "scalars": (1, 2.5, "text", None, True, np.float32(1.25), np.int64(-3)),
        "names": np.array(["a", "bc"], dtype=object),
        "empty": [],
    }
    loaded = hio.load_model(hio.save_model(matcher, tmp_path / "m.npz"))
    _assert_same_value(matcher.extra_, loaded.extra_)
    assert loaded.extra_["names"].dtype == object


def test_tabular_feature_names_round_trip(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(REFS_U8[:, :2, :3, 0].reshape(3, 6), columns=[f"p{i}" for i in range(6)])
    matcher = HistogramMatcher().fit(frame)
    loaded = HistogramMatcher.load(matcher.save(tmp_path / "t.npz"))
    assert list(loaded.feature_names_in_) == list(frame.columns)
    assert loaded.n_features_in_ == 6
    np.testing.assert_array_equal(loaded.transform(frame), matcher.transform(frame))


def test_augmenter_uses_the_same_files(tmp_path):
    augment = pytest.importorskip("histmatch_ml.augment")
    aug = augment.RandomHistogramMatching(random_state=0).fit(list(REFS_U8))
    loaded = hio.load_model(hio.save_model(aug, tmp_path / "aug.npz"))
    assert type(loaded) is type(aug)
    assert hio.fingerprint(loaded) == hio.fingerprint(aug)
    with pytest.raises(ValueError, match="not a HistogramMatcher"):
        HistogramMatcher.load(tmp_path / "aug.npz")


_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    hnp.arrays(
        st.sampled_from([np.uint8, np.int32, np.float64, np.bool_]),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
        elements={"allow_nan": False, "allow_infinity": False},
    ),
)
_tree = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), inner, max_size=3),
    ),
    max_leaves=8,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=_tree)
def test_any_supported_attribute_round_trips(tmp_path, value):
    matcher = _fitted("per_channel")
    matcher.anything_ = value
    loaded = hio.load_model(hio.save_model(matcher, tmp_path / "h.npz"))
    _assert_same_value(value, loaded.anything_)
    assert hio.fingerprint(loaded) == hio.fingerprint(matcher)


# --------------------------------------------------------------- what save refuses
def test_save_refuses_unfitted_and_unstorable(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        hio.save_model(HistogramMatcher(), tmp_path / "x.npz")
    matcher = HistogramMatcher(random_state=np.random.RandomState(0)).fit(REFS_U8)
    with pytest.raises(TypeError, match=r"params/random_state.*RandomState"):
        matcher.save(tmp_path / "x.npz")
    matcher = _fitted("per_channel")
    matcher.bad_ = {"f": lambda: 0}
    with pytest.raises(TypeError, match="bad_/f"):
        matcher.save(tmp_path / "x.npz")
    matcher.bad_ = np.array([1.0, np.nan])
    with pytest.raises(ValueError, match="bad_ must hold finite values"):
        matcher.save(tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
    with pytest.raises(TypeError, match="estimator must be"):
        hio.save_model(object(), tmp_path / "x.npz")


def test_save_no_clobber(tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        hio.save_model(_fitted("per_channel"), path, overwrite=False)
    assert path.read_bytes() == b"keep"


# ------------------------------------------------------------- what load refuses
@pytest.fixture
def model_path(tmp_path) -> Path:
    return _fitted("per_channel").save(tmp_path / "model.npz")


def _refused(path, match):
    with pytest.raises(ValueError, match=match) as info:
        HistogramMatcher.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"garbage bytes" * 10, b"PK\x03\x04 truncated zip"])
def test_garbage_is_not_a_model(tmp_path, content):
    path = tmp_path / "g.npz"
    path.write_bytes(content)
    _refused(path, "not a valid histmatch_ml model file: not an .npz archive")


def test_unrelated_npz_is_not_a_model(tmp_path):
    path = tmp_path / "u.npz"
    np.savez(path, a=np.arange(3))
    _refused(path, "no histmatch_ml metadata")
    np.save(tmp_path / "a.npy", np.arange(3))
    _refused(tmp_path / "a.npy", "not an .npz archive")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        HistogramMatcher.load(tmp_path / "nope.npz")


def test_truncated_files_are_refused(model_path):
    data = model_path.read_bytes()
    for cut in (len(data) // 4, len(data) // 2, len(data) - 30):
        model_path.write_bytes(data[:cut])
        _refused(model_path, "not a valid histmatch_ml model file")


def test_flipped_byte_is_refused(model_path):
    data = bytearray(model_path.read_bytes())
    with zipfile.ZipFile(_stdio.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("reference_/histograms.npy")
    # a byte inside the compressed histogram data
    pos = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    data[pos] ^= 0xFF
    model_path.write_bytes(bytes(data))
    _refused(model_path, "damaged or truncated|checksum")


def test_tampered_array_checksum_mismatch(model_path):
    def bump(arrays):
        arrays["reference_/histograms"] = arrays["reference_/histograms"].copy()
        arrays["reference_/histograms"][0, 10] += 1
        arrays["reference_/histograms"][0, 11] -= 1

    _rewrite(model_path, arrays=bump, rehash=False)
    _refused(model_path, "checksum mismatch")


def test_tampered_params_checksum_mismatch(model_path):
    def edit(meta):
        meta["params"]["items"]["strength"] = {"type": "float", "value": 0.25}

    _rewrite(model_path, meta=edit, rehash=False)
    _refused(model_path, "checksum mismatch")


def test_newer_format_version(model_path):
    def newer(meta):
        meta["format_version"] = hio.FORMAT_VERSION + 1
        meta["library_version"] = "9.0"

    _rewrite(model_path, meta=newer)
    _refused(model_path, r"format version 2 \(written by histmatch_ml 9.0\).*upgrade")


def test_wrong_shapes_with_valid_checksum(tmp_path):
    matcher = _fitted("per_channel")
    matcher.reference_["histograms"] = matcher.reference_["histograms"][:, :255].copy()
    _refused(matcher.save(tmp_path / "a.npz"), r"shape \(3, 256\)")
    matcher = _fitted("per_channel")
    matcher.reference_["histograms"] = matcher.reference_["histograms"][:2].copy()
    _refused(matcher.save(tmp_path / "b.npz"), r"shape \(3, 256\).*got int64 \(2, 256\)")
    matcher = _fitted("per_channel", "float32")
    matcher.reference_["keys"] = matcher.reference_["keys"][::-1].copy()
    _refused(matcher.save(tmp_path / "c.npz"), "increase")
    matcher = _fitted("per_channel")
    matcher.n_pixels_seen_ += 1
    _refused(matcher.save(tmp_path / "d.npz"), "n_pixels_seen_")


def test_lab_state_checked(tmp_path):
    if "lab" not in available_methods():
        pytest.skip("method 'lab' is not available")
    matcher = _fitted("lab")
    matcher.reference_["rotations"] = matcher.reference_["rotations"] * 2.0
    _refused(matcher.save(tmp_path / "lab.npz"), "orthonormal")


def test_array_shape_differs_from_metadata(model_path):
    def reshape(arrays):
        arrays["reference_/histograms"] = arrays["reference_/histograms"].reshape(3, 2, 128)

    _rewrite(model_path, arrays=reshape)
    _refused(model_path, "the metadata says")


def test_non_finite_values(tmp_path):
    path = _fitted("per_channel", "float32").save(tmp_path / "f.npz")

    def poison(arrays):
        arrays["reference_/extremes"] = arrays["reference_/extremes"].copy()
        arrays["reference_/extremes"][1, -1] = np.inf

    _rewrite(path, arrays=poison)
    _refused(path, "NaN or infinity")


def test_invalid_params_refused(model_path):
    def bad(meta):
        meta["params"]["items"]["strength"] = {"type": "float", "value": 5.0}

    _rewrite(model_path, meta=bad)
    _refused(model_path, "invalid parameters.*strength")


def test_extra_or_missing_entries_refused(model_path):
    _rewrite(model_path, arrays=lambda a: a.update(extra=np.zeros(2)))
    _refused(model_path, "unexpected")
    path = model_path.parent / "m2.npz"
    _fitted("per_channel").save(path)
    _rewrite(path, arrays=lambda a: a.pop("reference_/dtype"))
    _refused(path, "missing")


@pytest.mark.parametrize(
    "name",
    [
        "os.system",
        "builtins.eval",
        "histmatch_ml.io.Path",
        "histmatch_ml.io._model.Path",
        "histmatch_ml.nope.Thing",
    ],
)
def test_foreign_class_never_resolved(model_path, name):
    def foreign(meta):
        meta["class"] = name

    _rewrite(model_path, meta=foreign)
    _refused(model_path, "class")


def test_unknown_method_refused(model_path):
    def unknown(meta):
        meta["attributes"]["method_"]["value"] = "nope"

    _rewrite(model_path, meta=unknown)
    _refused(model_path, "method must be one of")


def test_no_fitted_attributes_refused(model_path):
    _rewrite(model_path, meta=lambda m: m.update(attributes={}), arrays=lambda a: a.clear())
    _refused(model_path, "it holds no fitted attributes")


def test_class_without_check_loaded_state_refused(model_path, monkeypatch):
    monkeypatch.setattr(HistogramMatcher, "_check_loaded_state", None, raising=False)
    _refused(model_path, "not an estimator that can be loaded")


def test_check_loaded_state_sees_the_decoded_state(model_path, monkeypatch):
    saved = HistogramMatcher.load(model_path)
    seen = []

    def record(self):
        seen.append((self.get_params(), sorted(_model._fitted_attributes(self))))

    monkeypatch.setattr(HistogramMatcher, "_check_loaded_state", record, raising=False)
    HistogramMatcher.load(model_path)
    assert seen == [(saved.get_params(), sorted(_model._fitted_attributes(saved)))]


@pytest.mark.parametrize("error", [ValueError, TypeError])
def test_check_loaded_state_errors_name_the_file(model_path, monkeypatch, error):
    def refuse(self):
        raise error("the state is inconsistent")

    monkeypatch.setattr(HistogramMatcher, "_check_loaded_state", refuse, raising=False)
    _refused(model_path, "not a valid histmatch_ml model file: the state is inconsistent")


# ------------------------------------------------- untrusted files: bounded before use
def _entries(path: Path) -> dict[str, bytes]:
    """``name -> uncompressed bytes`` of every entry of a model file."""
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def _npy_text(text: str) -> bytes:
    """The ``.npy`` bytes of a metadata entry holding ``text``."""
    buf = _stdio.BytesIO()
    np.lib.format.write_array(buf, np.frombuffer(text.encode(), dtype=np.uint8))
    return buf.getvalue()


def _meta_text(entries: dict[str, bytes]) -> str:
    return np.load(_stdio.BytesIO(entries[f"{hio.META_KEY}.npy"])).tobytes().decode()


def _write_entries(path: Path, entries: dict[str, bytes]) -> None:
    members = [(k, _deflated(v), zlib.crc32(v), len(v)) for k, v in entries.items()]
    path.write_bytes(_raw_zip(members))


def _central_record(data: bytes, name: str) -> int:
    """The offset of ``name``'s central directory record (archive without comment)."""
    count, _, pos = struct.unpack_from("<HII", data, len(data) - 22 + 10)
    for _ in range(count):
        n_name, n_extra, n_comment = struct.unpack_from("<HHH", data, pos + 28)
        if data[pos + 46 : pos + 46 + n_name] == name.encode():
            return pos
        pos += 46 + n_name + n_extra + n_comment
    raise KeyError(name)


def _npy_header(descr: str, shape: tuple) -> bytes:
    buf = _stdio.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def _deflated(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def _deflated_zeros(prefix: bytes, n_zeros: int) -> bytes:
    """A raw deflate stream of ``prefix`` and ``n_zeros`` zero bytes, about n_zeros / 1000 long.

    One compressed MiB of zeros, ended by a full flush (byte-aligned, no
    reference to earlier data), is repeated, so no gigabytes are compressed.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    mib = c.compress(bytes(2**20)) + c.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(n_zeros, 2**20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return head + mib * count + c.compress(bytes(rest)) + c.flush()


def _raw_zip(members: list[tuple[str, bytes, int, int]]) -> bytes:
    """A deflated zip archive of ``(name, compressed, crc, declared size)``, written by hand."""
    local, central = bytearray(), bytearray()
    for name, payload, crc, size in members:
        raw, offset = name.encode(), len(local)
        fields = struct.pack("<IIIHH", crc, len(payload), size, len(raw), 0)
        local += struct.pack("<IHHHHH", 0x04034B50, 20, 0, 8, 0, 0x21) + fields + raw + payload
        central += struct.pack("<IHHHHHH", 0x02014B50, 20, 20, 0, 8, 0, 0x21) + fields
        central += struct.pack("<HHHII", 0, 0, 0, 0o644 << 16, offset) + raw
    n = len(members)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(central), len(local), 0)
    return bytes(local + central + end)


def _with_bomb(
    path: Path,
    *,
    meta_shape: tuple,
    header_shape: tuple,
    n_zeros: int,
    declared: int | None = None,
    crc: int = 0,
    rehash: bool = False,
) -> None:
    """Add a float64 attribute ``bomb_`` to a model file, its entry crafted.

    The metadata says ``meta_shape``, the entry's ``.npy`` header
    ``header_shape``; its deflate stream inflates to that header and
    ``n_zeros`` zero bytes, and the zip directory declares the header and
    ``declared`` bytes (default ``n_zeros``).
    """
    entries = _entries(path)
    meta = json.loads(_meta_text(entries))
    del entries[f"{hio.META_KEY}.npy"]
    node = {"type": "array", "name": "bomb_", "dtype": "<f8", "shape": list(meta_shape)}
    meta["attributes"]["bomb_"] = node
    if rehash:
        arrays = {k[:-4]: np.load(_stdio.BytesIO(v)) for k, v in entries.items()}
        arrays["bomb_"] = np.zeros(meta_shape)
        header = {k: meta[k] for k in ("class", "params", "attributes")}
        meta["sha256"] = _model._digest(header, arrays)
    data = _npy_text(json.dumps(meta))
    members = [(f"{hio.META_KEY}.npy", _deflated(data), zlib.crc32(data), len(data))]
    members += [(k, _deflated(v), zlib.crc32(v), len(v)) for k, v in entries.items()]
    head = _npy_header("<f8", header_shape)
    size = len(head) + (n_zeros if declared is None else declared)
    members.append(("bomb_.npy", _deflated_zeros(head, n_zeros), crc, size))
    path.write_bytes(_raw_zip(members))


def _peak_memory(fn) -> tuple[int, float]:
    """``(peak traced bytes, seconds)`` of ``fn()``; numpy's buffers are traced too."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        fn()
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, elapsed


def _refused_cheaply(path: Path, match: str) -> None:
    """Refused as by :func:`_refused`, in bounded memory and time, having inflated nothing."""

    def load():
        with pytest.raises(ValueError):
            HistogramMatcher.load(path)

    peak, elapsed = _peak_memory(load)
    assert peak < 64 * 2**20, f"loading took {peak / 2**20:.0f} MiB"
    assert elapsed < 10
    _refused(path, match)


def test_declared_huge_array_refused_before_inflating(model_path):
    # 2 GiB of zeros, declared consistently everywhere, in a file of about 2 MiB
    _with_bomb(model_path, meta_shape=(2**28,), header_shape=(2**28,), n_zeros=2**31)
    assert model_path.stat().st_size < 4 * 2**20
    _refused_cheaply(model_path, r"array 'bomb_' \(<f8, shape \[268435456\]\) is larger than")


def test_arrays_together_beyond_the_limit_refused(model_path, monkeypatch):
    with np.load(model_path) as npz:
        sizes = [npz[k].nbytes for k in npz.files if k != hio.META_KEY]
    limit = max(sizes)  # each array fits, all of them do not
    monkeypatch.setattr(_model, "_MAX_ARRAY_BYTES", limit)
    _refused(model_path, rf"its arrays declare {sum(sizes)} bytes together, more than the {limit}")
    with pytest.raises(ValueError, match=rf"the fitted arrays take .* at most {limit}"):
        hio.save_model(_fitted("per_channel"), model_path)


def test_npy_header_declaring_more_than_the_metadata_refused(model_path):
    # the zip directory and the metadata agree on 16 float64; the header claims 2 GiB
    crc = zlib.crc32(_npy_header("<f8", (2**28,)) + bytes(128))
    _with_bomb(
        model_path,
        meta_shape=(16,),
        header_shape=(2**28,),
        n_zeros=2**31,
        declared=128,
        crc=crc,
    )
    _refused_cheaply(model_path, r"array 'bomb_' has dtype <f8 and shape \(268435456,\)")


def test_metadata_header_declaring_a_huge_array_refused(model_path):
    entries = _entries(model_path)
    text = _meta_text(entries).encode()
    entries[f"{hio.META_KEY}.npy"] = _npy_header("|u1", (2**30,)) + text
    _write_entries(model_path, entries)
    _refused_cheaply(model_path, "the metadata entry is implausibly large")


def test_inflating_stops_at_the_declared_size(model_path):
    # the stream goes on for 2 GiB past the 128 declared bytes, which are sound
    head = _npy_header("<f8", (16,))
    crc = zlib.crc32(head + bytes(128))
    _with_bomb(
        model_path,
        meta_shape=(16,),
        header_shape=(16,),
        n_zeros=2**31,
        declared=128,
        crc=crc,
        rehash=True,
    )
    loaded = []
    peak, _ = _peak_memory(lambda: loaded.append(HistogramMatcher.load(model_path)))
    assert peak < 64 * 2**20
    np.testing.assert_array_equal(loaded[0].bomb_, np.zeros(16))


def test_entry_size_must_match_its_header(model_path):
    data = bytearray(model_path.read_bytes())
    record = _central_record(data, "reference_/histograms.npy")
    (size,) = struct.unpack_from("<I", data, record + 24)  # the uncompressed size
    struct.pack_into("<I", data, record + 24, size + 1)
    model_path.write_bytes(bytes(data))
    _refused(model_path, f"declares {size + 1} bytes; its .npy header says {size}")


@pytest.mark.parametrize("shape", [[10**30], [2**62, 2**62], [0, 2**62, 2**62], [1] * 65, [2**63]])
def test_absurd_metadata_shapes_refused(model_path, shape):
    def absurd(meta):
        meta["attributes"]["reference_"]["items"]["histograms"]["shape"] = shape

    _rewrite(model_path, meta=absurd, rehash=False)
    _refused(model_path, "larger than|bad array entry")


def test_fortran_order_entries_load(model_path):
    expected = HistogramMatcher.load(model_path)

    def fortran(arrays):
        arrays["reference_/histograms"] = np.asfortranarray(arrays["reference_/histograms"])

    _rewrite(model_path, arrays=fortran, rehash=False)
    with np.load(model_path) as npz:
        assert np.isfortran(npz["reference_/histograms"])
    _assert_same_estimator(expected, HistogramMatcher.load(model_path))


def test_zip_version_in_central_directory_refused(model_path):
    data = bytearray(model_path.read_bytes())
    record = data.index(b"PK\x01\x02")
    data[record + 6] = 0xFF  # "version needed to extract": 25.5
    model_path.write_bytes(bytes(data))
    _refused(model_path, r"not an \.npz archive \(zip file version 25\.5\)")


@pytest.mark.parametrize("flag, match", [(0x1, "encrypted"), (0x40, "damaged")])
def test_encrypted_entries_refused(model_path, flag, match):
    data = bytearray(model_path.read_bytes())
    record = data.index(b"PK\x01\x02")
    struct.pack_into("<H", data, record + 8, flag)
    model_path.write_bytes(bytes(data))
    _refused(model_path, match)


@pytest.mark.parametrize(
    "deep, match",
    [
        ("[" * 100_000 + "]" * 100_000, "not valid JSON .*recursion"),
        ('{"a": ' * 200 + "1" + "}" * 200, "the metadata is nested more than 68 levels deep"),
    ],
)
def test_deeply_nested_json_refused(model_path, deep, match):
    # in a field outside the checksum, so that only the nesting is wrong
    entries = _entries(model_path)
    text = _meta_text(entries)
    entries[f"{hio.META_KEY}.npy"] = _npy_text(text[: text.rindex("}")] + f', "deep": {deep}}}')
    _write_entries(model_path, entries)
    _refused(model_path, match)


def _nested(depth: int):
    value = None
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_limit(model_path, tmp_path):
    limit = _model._MAX_NESTING
    matcher = _fitted("per_channel")
    matcher.deep_ = _nested(limit)
    loaded = hio.load_model(matcher.save(tmp_path / "deep.npz"))
    assert loaded.deep_ == matcher.deep_
    matcher.deep_ = _nested(limit + 1)
    with pytest.raises(ValueError, match=f"deep_/0/.* nested more than {limit} levels deep"):
        matcher.save(tmp_path / "deeper.npz")

    # what save refuses, load refuses too, with a valid checksum
    def deeper(meta):
        node = {"type": "none"}
        for _ in range(limit + 1):
            node = {"type": "list", "items": [node]}
        meta["attributes"]["deep_"] = node

    _rewrite(model_path, meta=deeper)
    _refused(model_path, "nested more than")

    def deeper_param(meta):
        del meta["attributes"]["deep_"]
        node = {"type": "none"}
        for _ in range(limit):
            node = {"type": "list", "items": [node]}
        meta["params"]["items"]["deep"] = node

    _rewrite(model_path, meta=deeper_param)
    _refused(model_path, f"malformed metadata at 'params/deep/0/.*nested more than {limit}")


def test_huge_integers_refused(model_path, tmp_path):
    entries = _entries(model_path)
    text = _meta_text(entries).replace('"format_version": 1', '"format_version": ' + "9" * 5000)
    entries[f"{hio.META_KEY}.npy"] = _npy_text(text)
    _write_entries(model_path, entries)
    _refused(model_path, "not valid JSON .*more than 4300 digits")
    matcher = _fitted("per_channel")
    matcher.big_ = 10**4300
    with pytest.raises(ValueError, match="big_ has more than 4300 digits"):
        matcher.save(tmp_path / "big.npz")
    matcher.big_ = 10**4300 - 1
    assert hio.load_model(matcher.save(tmp_path / "big.npz")).big_ == 10**4300 - 1


def test_metadata_limit_applies_to_save(model_path, monkeypatch):
    monkeypatch.setattr(_model, "_MAX_META_BYTES", 1000)
    _refused(model_path, "the metadata entry is implausibly large")
    with pytest.raises(ValueError, match=r"the metadata takes .* at most 1000"):
        hio.save_model(_fitted("per_channel"), model_path)


def test_lazy_class_needing_a_missing_dependency_refused(model_path, monkeypatch):
    from histmatch_ml.augment import _albumentations

    monkeypatch.setattr(_albumentations, "_ALBUMENTATIONS_CLASS", None)
    monkeypatch.setitem(sys.modules, "albumentations", None)  # as if not installed

    def lazy(meta):
        meta["class"] = "histmatch_ml.augment.AlbumentationsRandomHistogramMatching"

    _rewrite(model_path, meta=lazy)
    _refused(model_path, "does not exist in this version")


def test_class_defined_outside_the_package_refused(model_path):
    _rewrite(model_path, meta=lambda m: m.update({"class": "histmatch_ml.matcher.BaseEstimator"}))
    _refused(model_path, "is not an estimator of this version")


def test_state_the_class_cannot_check_refused(tmp_path):
    augment = pytest.importorskip("histmatch_ml.augment")
    path = hio.save_model(
        augment.RandomHistogramMatching(random_state=0).fit(list(REFS_U8)), tmp_path / "a.npz"
    )
    _rewrite(path, meta=lambda m: m["attributes"].pop("n_references_"))
    with pytest.raises(ValueError, match="no fitted attribute 'n_references_'") as info:
        hio.load_model(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------- pickle, joblib, skops
def test_pickle_and_joblib(tmp_path):
    import joblib

    matcher = _fitted("per_channel")
    for clone in (
        pickle.loads(pickle.dumps(matcher)),
        joblib.load(joblib.dump(matcher, tmp_path / "m.joblib")[0]),
    ):
        np.testing.assert_array_equal(clone.transform(IMAGES_U8), matcher.transform(IMAGES_U8))


@pytest.mark.parametrize("method", available_methods())
def test_skops_loads_with_only_the_class_trusted(tmp_path, method):
    sio = pytest.importorskip("skops.io")
    matcher = _fitted(method)
    path = tmp_path / "m.skops"
    sio.dump(matcher, path)
    assert sio.get_untrusted_types(file=path) == ["histmatch_ml.matcher.HistogramMatcher"]
    loaded = sio.load(path, trusted=["histmatch_ml.matcher.HistogramMatcher"])
    np.testing.assert_array_equal(loaded.transform(IMAGES_U8), matcher.transform(IMAGES_U8))


# ------------------------------------------------------------ reproducibility
_CHILD = """
import sys, numpy as np
from histmatch_ml import HistogramMatcher
m = HistogramMatcher.load(sys.argv[1])
np.save(sys.argv[3], m.transform(np.load(sys.argv[2])))
"""


@pytest.mark.parametrize("method", available_methods())
def test_bit_identical_across_processes(tmp_path, method):
    matcher = _fitted(method, "float32")
    path = matcher.save(tmp_path / "m.npz")
    np.save(tmp_path / "x.npy", IMAGES_F32)
    subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(tmp_path / "x.npy"), str(tmp_path / "y")],
        check=True,
    )
    expected = HistogramMatcher.load(path).transform(IMAGES_F32)
    assert np.load(tmp_path / "y.npy").tobytes() == expected.tobytes()


# ------------------------------------------------------- parameters out of bounds
@pytest.mark.parametrize(
    ("param", "value"), [("n_iter", 2**40), ("n_quantiles", 2**40), ("strength", 3.0)]
)
def test_parameters_beyond_their_bounds_are_refused_at_load(tmp_path, param, value):
    path = _fitted("lab").save(tmp_path / "lab.npz")
    _rewrite(path, meta=lambda m: m["params"]["items"][param].update(value=value))
    with pytest.raises(ValueError, match=f"invalid parameters.*{param}") as info:
        hio.load_model(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("attribute", ["method_", "dtype_", "n_channels_", "reference_"])
def test_a_file_missing_a_fitted_attribute_is_refused(tmp_path, attribute):
    path = _fitted("per_channel").save(tmp_path / "m.npz")

    def drop(m):
        m["attributes"].pop(attribute)

    def drop_arrays(content):
        for key in [k for k in content if k.startswith(attribute + "/") or k == attribute]:
            del content[key]

    _rewrite(path, meta=drop, arrays=drop_arrays)
    with pytest.raises(ValueError, match="not a valid histmatch_ml model file") as info:
        hio.load_model(path)
    assert attribute.rstrip("_") in str(info.value)
