"""The dask backend: fit as a tree of merges, transform by blocks, on a real LocalCluster.

Fits on dask arrays and on bags of PNG files written here are compared with
the in-memory fit: the same fingerprint for 8/16-bit references, whatever the
chunking, the merge tree's fan-in and the worker count; for float references
the fitted quantiles are checked against the pooled data's exact ranks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

da = pytest.importorskip("dask.array")
db = pytest.importorskip("dask.bag")
distributed = pytest.importorskip("distributed")
import dask  # noqa: E402
from PIL import Image  # noqa: E402

from conftest import cli_in_process  # noqa: E402
from histmatch_ml import HistogramMatcher  # noqa: E402
from histmatch_ml.backends.dask import learn, learn_graph, transform_files  # noqa: E402
from histmatch_ml.io import fingerprint  # noqa: E402
from histmatch_ml.methods import get_method  # noqa: E402


@pytest.fixture(scope="module")
def client():
    """A real cluster of 2 worker processes, the default scheduler while the module runs."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _rgb(n=12, size=16, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    high = 256 if dtype == np.uint8 else 65536
    return rng.integers(0, high, (n, size, size, 3), dtype=dtype)


# ------------------------------------------------------------------------ fit: integers
@pytest.mark.parametrize("chunks", [(1, -1, -1, -1), (5, -1, -1, -1), 12, (4, 8, 16, 3)])
@pytest.mark.parametrize("split_every", [2, 3, 8])
def test_fit_dask_array_has_the_in_memory_fingerprint(client, chunks, split_every):
    X = _rgb()
    expected = fingerprint(HistogramMatcher().fit(X))
    with dask.config.set(split_every=split_every):
        matcher = HistogramMatcher().fit(da.from_array(X, chunks=chunks))
    assert fingerprint(matcher) == expected
    assert matcher.n_images_seen_ == 12 and matcher.n_pixels_seen_ == 12 * 16 * 16


@pytest.mark.parametrize("method", ["per_channel", "exact"])
def test_fit_uint16_grey_with_masks(client, method):
    rng = np.random.default_rng(1)
    X = rng.integers(0, 65536, (7, 10, 12), dtype=np.uint16)
    mask = rng.random((7, 10, 12)) < 0.5
    expected = fingerprint(HistogramMatcher(method).fit(X, mask=mask))
    lazy_mask = da.from_array(mask, chunks=(2, 5, 12))
    fitted = HistogramMatcher(method).fit(da.from_array(X, chunks=(3, 10, 6)), mask=lazy_mask)
    assert fingerprint(fitted) == expected
    assert fitted.n_pixels_seen_ == int(mask.sum())
    # a numpy mask for a dask array is chunked as the array
    assert fingerprint(
        HistogramMatcher(method).fit(da.from_array(X, chunks=(2, -1, -1)), mask=mask)
    ) == (expected)


def test_fit_on_a_bag_of_png_paths(client, tmp_path):
    X = _rgb(n=9, size=20, seed=2)
    paths = []
    for i, image in enumerate(X):
        paths.append(str(tmp_path / f"ref{i}.png"))
        Image.fromarray(image).save(paths[-1])
    expected = fingerprint(HistogramMatcher().fit(X))
    assert fingerprint(HistogramMatcher().fit(paths)) == expected  # the in-memory stream
    for npartitions in (1, 4, 9):
        bag = db.from_sequence(paths, npartitions=npartitions)
        assert fingerprint(HistogramMatcher().fit(bag)) == expected


def test_fit_on_a_bag_of_images_and_of_masks(client):
    X = _rgb(n=6, seed=3)
    rng = np.random.default_rng(3)
    masks = [rng.random((16, 16)) < 0.7 for _ in range(6)]
    expected = fingerprint(HistogramMatcher().fit(X, mask=np.stack(masks)))
    images = db.from_sequence(list(X), npartitions=3)
    fitted = HistogramMatcher().fit(images, mask=db.from_sequence(masks, npartitions=3))
    assert fingerprint(fitted) == expected


def test_partial_fit_with_dask_equals_fit_on_all(client):
    X = _rgb(n=10, seed=4)
    expected = fingerprint(HistogramMatcher().fit(X))
    matcher = HistogramMatcher().fit(X[:3])
    matcher.partial_fit(da.from_array(X[3:8], chunks=(2, -1, -1, -1)))
    matcher.partial_fit(db.from_sequence(list(X[8:]), npartitions=2))
    assert fingerprint(matcher) == expected


def test_fingerprint_does_not_depend_on_the_worker_count(client):
    X = _rgb(n=8, seed=5)
    lazy = da.from_array(X, chunks=(1, -1, -1, -1))
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as one,
        distributed.Client(one, set_as_default=False) as single,
        dask.config.set(scheduler=single.get),
    ):
        on_one = fingerprint(HistogramMatcher().fit(lazy))
    on_two = fingerprint(HistogramMatcher().fit(lazy))
    assert on_one == on_two == fingerprint(HistogramMatcher().fit(X))


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(1, 4), min_size=1, max_size=8),
    split_every=st.integers(2, 5),
    seed=st.integers(0, 2**16),
)
def test_any_partition_and_merge_tree_gives_the_same_model(sizes, split_every, seed):
    """Property: for 8-bit references the model does not depend on how the data is cut."""
    X = _rgb(n=sum(sizes), size=6, seed=seed)
    expected = fingerprint(HistogramMatcher("exact").fit(X))
    with dask.config.set(scheduler="sync", split_every=split_every):
        fitted = HistogramMatcher("exact").fit(da.from_array(X, chunks=(tuple(sizes), 6, 6, 3)))
    assert fingerprint(fitted) == expected


# ---------------------------------------------------------------------------- fit: floats
@settings(max_examples=10, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 3), min_size=2, max_size=12),
    split_every=st.integers(2, 12),
    shift=st.floats(0.0, 0.2),
    max_bins=st.sampled_from([2**18, 64]),
    seed=st.integers(0, 2**16),
)
def test_float_fits_by_blocks_equal_the_in_memory_fit(sizes, split_every, shift, max_bins, seed):
    """Property: a float fit by blocks is the in-memory fit, fingerprint and all, for any
    partition and tree (each block a shifted range), coarsened bins included."""
    from histmatch_ml import _reference

    rng = np.random.default_rng(seed)
    X = rng.random((sum(sizes), 8, 8)).astype(np.float32)
    X += (shift * np.arange(len(X), dtype=np.float32))[:, None, None]
    saved, _reference.MAX_BINS = _reference.MAX_BINS, max_bins
    try:
        with dask.config.set(scheduler="sync", split_every=split_every):
            fitted = HistogramMatcher().fit(da.from_array(X, chunks=(tuple(sizes), 8, 8)))
        in_memory = HistogramMatcher().fit(X)
    finally:
        _reference.MAX_BINS = saved
    assert fingerprint(fitted) == fingerprint(in_memory)


def test_float_fit_on_the_cluster_equals_the_in_memory_fit(client):
    X = np.random.default_rng(6).random((24, 16, 16, 3)).astype(np.float32)
    in_memory = HistogramMatcher().fit(X)
    fitted = HistogramMatcher().fit(da.from_array(X, chunks=(2, -1, -1, -1)))
    assert fingerprint(fitted) == fingerprint(in_memory)


def test_lab_fit_draws_the_in_memory_rotations(client):
    X = _rgb(n=8, seed=7)
    in_memory = HistogramMatcher("lab", n_iter=3, random_state=0).fit(X)
    fitted = HistogramMatcher("lab", n_iter=3, random_state=0).fit(
        da.from_array(X, chunks=(3, -1, -1, -1))
    )
    np.testing.assert_array_equal(
        fitted.reference_["rotations"], in_memory.reference_["rotations"]
    )
    np.testing.assert_allclose(
        fitted.reference_["projected_quantiles"],
        in_memory.reference_["projected_quantiles"],
        atol=1.0,
    )
    # random_state=None: one seed for every block of the fit, so the blocks' states merge
    assert (
        HistogramMatcher("lab", n_iter=3)
        .fit(da.from_array(X, chunks=(1, -1, -1, -1)))
        .n_images_seen_
        == 8
    )


# ------------------------------------------------------------------------------ transform
@pytest.mark.parametrize("chunks", [(5, 16, 16, 3), (4, 8, 16, 3), (12, 16, 8, 1)])
def test_transform_is_lazy_and_equals_the_in_memory_transform(client, chunks):
    X = _rgb(seed=8)
    matcher = HistogramMatcher().fit(_rgb(n=3, seed=9) // 2)
    lazy = da.from_array(X, chunks=chunks)
    out = matcher.transform(lazy)
    assert isinstance(out, da.Array)
    assert (out.shape, out.chunks, out.dtype) == (lazy.shape, lazy.chunks, lazy.dtype)
    expected = matcher.transform(X)
    matcher.fit(X)  # the lazy result is the matcher's when transform was called
    np.testing.assert_array_equal(out.compute(), expected)


def test_transform_grey_float_with_masks(client):
    rng = np.random.default_rng(10)
    X = rng.random((6, 12, 10)).astype(np.float32)
    mask = rng.random((6, 12, 10)) < 0.6
    matcher = HistogramMatcher("exact", n_quantiles=32).fit(rng.random((2, 9, 9)) ** 2)
    out = matcher.transform(da.from_array(X, chunks=(4, 6, 10)), mask=da.from_array(mask))
    assert out.dtype == np.float32 and out.chunks == ((4, 2), (6, 6), (10,))
    np.testing.assert_array_equal(out.compute(), matcher.transform(X, mask=mask))


def test_transform_of_a_bag_gives_a_bag_of_matched_images(client):
    X = _rgb(n=5, seed=11)
    matcher = HistogramMatcher().fit(_rgb(n=2, seed=12))
    out = matcher.transform(db.from_sequence(list(X), npartitions=2))
    assert isinstance(out, db.Bag)
    np.testing.assert_array_equal(np.stack(out.compute()), matcher.transform(X))


# --------------------------------------------------------------------------------- errors
def test_errors_name_the_argument_and_what_was_got():
    X = _rgb(n=4)
    with dask.config.set(scheduler="sync"):
        with pytest.raises(ValueError, match=r"X as a dask array must have shape .*\(4, 768\)"):
            HistogramMatcher().fit(da.from_array(X.reshape(4, -1)))
        with pytest.raises(TypeError, match=r"X must hold images of one dtype"):
            mixed = [X[0], X[1].astype(np.uint16)]
            HistogramMatcher().fit(db.from_sequence(mixed, npartitions=2))
        with pytest.raises(ValueError, match="at least one image"):
            HistogramMatcher().fit(db.from_sequence([], npartitions=1))
        fitted = HistogramMatcher().fit(X)
        with pytest.raises(TypeError, match=r"dtype of the references seen so far \(uint8\)"):
            fitted.partial_fit(da.from_array(X.astype(np.uint16)))
        with pytest.raises(ValueError, match=r"X must have 3 channel\(s\)"):
            fitted.transform(da.from_array(X[..., 0]))
        with pytest.raises(ValueError, match=r"mask must be one \(H, W\) mask per image"):
            fitted.transform(da.from_array(X), mask=np.ones((4, 8, 8), bool))
        with pytest.raises(ValueError, match="split_every must be an integer >= 2"):
            learn_graph(da.from_array(X), None, get_method("per_channel"), {}, seed=0,
                        split_every=1)  # fmt: skip


# ----------------------------------------------------------- command line: --scheduler
def _cli(*args) -> tuple[int, str, str]:
    """``histmatch ARGS`` run in this process: ``(status, stdout, stderr)``."""
    result = cli_in_process(*args)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture
def folder(tmp_path):
    """Six PNG references (and masks of them) and one file that is no image."""
    rng = np.random.default_rng(13)
    (tmp_path / "refs" / "sub").mkdir(parents=True)
    (tmp_path / "masks" / "sub").mkdir(parents=True)
    for i in range(6):
        rel = f"sub/r{i}.png" if i % 2 else f"r{i}.png"
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
            tmp_path / "refs" / rel
        )
        Image.fromarray((rng.random((20, 24)) < 0.5).astype(np.uint8) * 255).save(
            tmp_path / "masks" / rel
        )
    (tmp_path / "refs" / "bad.png").write_bytes(b"not a png")
    return tmp_path


@pytest.mark.parametrize("masks", [False, True])
def test_cli_fit_on_the_cluster_writes_the_model_of_the_local_run(client, folder, masks):
    refs, extra = folder / "refs", ["--mask-dir", folder / "masks"] if masks else []
    address = client.scheduler.address
    code, out, err = _cli("fit", refs, "-o", folder / "d.npz", "--scheduler", address, *extra)
    assert code == 1 and "not written" in out and not (folder / "d.npz").exists()
    assert err.count("error: ") == 1 and "bad.png" in err
    local = _cli("fit", refs, "-o", folder / "l.npz", "--keep-going", *extra)
    code, out, err = _cli(
        "fit", refs, "-o", folder / "d.npz", "--keep-going", "--scheduler", address, *extra
    )
    assert (code, local[0]) == (1, 1)
    assert "learned per_channel from 6 image(s)" in out and "left out" in out
    assert fingerprint(folder / "d.npz") == fingerprint(folder / "l.npz")


def test_cli_transform_on_the_cluster_writes_what_the_process_pool_writes(client, folder):
    model = HistogramMatcher().fit(_rgb(n=2, seed=14)).save(folder / "m.npz")
    address = client.scheduler.address
    local = _cli("transform", "-m", model, folder / "refs", "-o", folder / "p", "-j", "2")
    code, out, err = _cli(
        "transform", "-m", model, folder / "refs", "-o", folder / "d", "--scheduler", address
    )
    assert (code, local[0]) == (1, 1)  # the bad file fails, the others are written
    assert "6 written, 1 failed" in out and "error: " in err and "bad.png" in err
    written = sorted(p.relative_to(folder / "p") for p in (folder / "p").rglob("*.png"))
    assert written == sorted(p.relative_to(folder / "d") for p in (folder / "d").rglob("*.png"))
    assert len(written) == 6
    for rel in written:
        assert (folder / "p" / rel).read_bytes() == (folder / "d" / rel).read_bytes()
    assert not list((folder / "d").rglob(".histmatch-tmp-*"))
    code, out, _ = _cli(
        "transform", "-m", model, folder / "refs", "-o", folder / "d", "--skip-existing",
        "--scheduler", address,
    )  # fmt: skip
    assert code == 1 and "0 written, 1 failed, 6 skipped" in out


def test_cli_scheduler_local_starts_a_cluster_and_refuses_a_bad_count(folder):
    model = HistogramMatcher().fit(_rgb(n=2, seed=15)).save(folder / "m.npz")
    refs = [folder / "refs" / "r0.png", folder / "refs" / "r2.png"]
    code, out, _ = _cli(
        "transform", "-m", model, *refs, "-o", folder / "o", "--scheduler", "local:1"
    )
    assert code == 0 and "2 written, 0 failed" in out
    code, _, err = _cli(
        "transform", "-m", model, *refs, "-o", folder / "x", "--scheduler", "local:0"
    )
    assert code == 2 and "local:N needs a worker count N >= 1" in err


def test_transform_files_is_the_python_twin_of_the_command(client, folder):
    matcher = HistogramMatcher().fit(_rgb(n=2, seed=16))
    model = matcher.save(folder / "m.npz")
    _cli("transform", "-m", model, folder / "refs", "-o", folder / "cli", "-j", "1")
    summary = transform_files(matcher, [folder / "refs"], folder / "twin")
    assert summary["written"] == 6 and summary["stopped"] is None
    assert [Path(p).name for p in summary["failed"]] == ["bad.png"]
    for path in (folder / "cli").rglob("*.png"):
        twin = folder / "twin" / path.relative_to(folder / "cli")
        assert twin.read_bytes() == path.read_bytes()
    with pytest.raises(ValueError, match=r"output file\(s\) exist already"):
        transform_files(matcher, [folder / "refs"], folder / "twin")


@pytest.mark.parametrize("window", [1, 2, 3])
def test_fits_by_windows_of_blocks_learn_the_whole_state(client, window):
    """The fit runs as trees over windows of blocks, merged on the client: same model."""
    X = _rgb(n=11, seed=17)
    mask = np.random.default_rng(17).random((11, 16, 16)) < 0.8
    expected = HistogramMatcher().fit(X, mask=mask)
    learned = learn(
        da.from_array(X, chunks=(2, -1, -1, -1)),
        mask,
        get_method("per_channel"),
        {"n_quantiles": 1024},
        seed=0,
        window=window,
    )
    assert (learned.n_images, learned.n_pixels) == (11, int(mask.sum()))
    np.testing.assert_array_equal(learned.state["histograms"], expected.reference_["histograms"])


def test_blocks_are_learned_where_they_are_made(client):
    """No block of images or masks travels between the workers: the learning is fused with
    the blockwise tasks that make each block, and only states move up the tree."""

    def _seeded_block(kind: str, block_id=None) -> np.ndarray:
        # (a local function travels by value: the workers never import this test module)
        rng = np.random.default_rng([5, block_id[0]])
        images = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
        return images if kind == "images" else rng.random((4, 64, 64)) < 0.7

    kw = {"dtype": np.uint8, "chunks": ((4,) * 12, (64,), (64,), (3,))}
    X = da.map_blocks(_seeded_block, "images", **kw) + np.uint8(1)
    mask = da.map_blocks(_seeded_block, "masks", dtype=bool, chunks=kw["chunks"][:3])
    lazy = learn_graph(X, mask, get_method("per_channel"), {"n_quantiles": 1024}, seed=0)
    layers = {key[0] for key in dict(lazy.__dask_graph__()) if isinstance(key, tuple)}
    assert not layers & {X.name, mask.name}  # no block is a task of its own
    client.run(lambda dask_worker: dask_worker.transfer_incoming_log.clear())
    learned = client.compute(lazy).result(timeout=120)
    moved = client.run(
        lambda dask_worker: sum(t["total"] for t in dask_worker.transfer_incoming_log)
    )
    assert sum(moved.values()) < 4 * 64 * 64, moved  # (less than one block of masks)
    expected = HistogramMatcher().fit(X.compute(), mask=mask.compute())
    np.testing.assert_array_equal(learned.state["histograms"], expected.reference_["histograms"])


# ------------------------------------------------------------- volumes, barycentres
@pytest.mark.parametrize("method", ["per_channel", "landmarks"])
def test_volumes_fit_and_transform_as_in_memory(client, method):
    rng = np.random.default_rng(23)
    X = rng.integers(0, 4096, (5, 6, 10, 12), dtype=np.uint16)
    mask = rng.random(X.shape) < 0.6
    lazy, lazy_mask = da.from_array(X, chunks=(2, 3, -1, -1)), da.from_array(mask, chunks=2)
    expected = HistogramMatcher(method, spatial_dims=3).fit(X, mask=mask)
    fitted = HistogramMatcher(method, spatial_dims=3).fit(lazy, mask=lazy_mask)
    assert fingerprint(fitted) == fingerprint(expected)
    out = fitted.transform(lazy, mask=lazy_mask)
    assert out.shape == X.shape and out.dtype == X.dtype and out.chunks == lazy.chunks
    np.testing.assert_array_equal(out.compute(), expected.transform(X, mask=mask))


def test_volumes_refuse_image_shapes_naming_spatial_dims(client):
    with pytest.raises(ValueError, match=r"spatial_dims=3 must have shape \(N, D, H, W"):
        HistogramMatcher(spatial_dims=3).fit(da.zeros((4, 8, 8), dtype=np.uint8, chunks=2))
    with pytest.raises(ValueError, match=r"one \(D, H, W\) mask per image"):
        HistogramMatcher(spatial_dims=3).fit(
            da.zeros((4, 2, 8, 8), dtype=np.uint8, chunks=2), mask=np.ones((4, 8, 8), bool)
        )


@pytest.mark.parametrize("method", ["per_channel", "exact", "lab", "landmarks"])
def test_barycenter_fit_equals_the_in_memory_barycenter(client, method):
    """Images of different brightness in blocks of different sizes: each image weighs the same."""
    X = np.concatenate([_rgb(n=3, seed=s) // (s + 1) for s in range(4)])
    expected = HistogramMatcher(method, reference="barycenter", random_state=0).fit(X)
    with dask.config.set(split_every=2):
        fitted = HistogramMatcher(method, reference="barycenter", random_state=0).fit(
            da.from_array(X, chunks=((1, 4, 2, 5), *X.shape[1:]))
        )
    assert fitted.reference_mode_ == "barycenter" and fitted.n_images_seen_ == 12
    assert fitted.reference_.keys() == expected.reference_.keys()
    for key, value in expected.reference_.items():
        if np.asarray(value).dtype.kind == "f":
            np.testing.assert_allclose(fitted.reference_[key], value, rtol=1e-12, atol=1e-9)
        else:
            np.testing.assert_array_equal(fitted.reference_[key], value)
    np.testing.assert_array_equal(fitted.transform(X[:2]), expected.transform(X[:2]))
