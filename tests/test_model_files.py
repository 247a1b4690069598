"""Model files of histmatch_ml.io (npz + JSON, no pickle): save, load, fingerprint, refusals."""

from __future__ import annotations

import io as _stdio
import json
import pickle
import subprocess
import sys
import zipfile
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
REFS_F32 = (REFS_U8 / 255).astype(np.float32)
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
    matcher.reference_["quantiles"] = matcher.reference_["quantiles"][:, ::-1].copy()
    _refused(matcher.save(tmp_path / "c.npz"), "non-decreasing")
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
        arrays["reference_/quantiles"] = arrays["reference_/quantiles"].copy()
        arrays["reference_/quantiles"][1, -1] = np.inf

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
