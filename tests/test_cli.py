"""The ``histmatch`` command line, run for real as a subprocess on real image files."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from conftest import cli_in_process
from histmatch_ml import HistogramMatcher, __version__
from histmatch_ml.cli import build_parser
from histmatch_ml.io import fingerprint, load_model, read_image


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m histmatch_ml ARGS`` in a fresh process; never raises."""
    env = {**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning:histmatch_ml"}
    return subprocess.run(
        [sys.executable, "-m", "histmatch_ml", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


cli = cli_in_process  # the command line in this process, for the cheap cases


def assert_usage_error(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("usage: histmatch")
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr


def assert_run_error(result: subprocess.CompletedProcess, message: str) -> None:
    """A runtime error (missing or invalid model, existing output): one line, exit 1."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "usage:" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and message in lines[0], result.stderr


def files_under(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Inputs of every kind (PNG 8/16-bit, JPEG, TIFF, a corrupt PNG) and references."""
    root = tmp_path_factory.mktemp("cli")
    inputs, refs = root / "inputs", root / "refs"
    (inputs / "sub" / "deep").mkdir(parents=True)
    (refs / "more").mkdir(parents=True)
    Image.fromarray(data.astronaut()[::4, ::4]).save(inputs / "astronaut.png")
    Image.fromarray(data.chelsea()[::3, ::3]).save(inputs / "sub" / "chelsea.jpg", quality=92)
    Image.fromarray(data.rocket()[::4, ::4]).save(inputs / "sub" / "deep" / "rocket.tif")
    good = (inputs / "astronaut.png").read_bytes()
    (inputs / "sub" / "corrupt.png").write_bytes(good[: len(good) // 3])
    (inputs / "notes.txt").write_text("not an image, ignored in directories")
    Image.fromarray(data.coffee()[::4, ::4]).save(refs / "coffee.png")
    Image.fromarray(data.immunohistochemistry()[::4, ::4]).save(refs / "more" / "ihc.png")
    grey16 = (data.camera()[::4, ::4].astype(np.uint16) * 200 + 77).astype(np.uint16)
    Image.fromarray(grey16).save(root / "camera16.png")
    Image.fromarray(data.moon()[::4, ::4].astype(np.uint16) * 250).save(root / "moon16.tif")
    return root


@pytest.fixture(scope="module")
def model(tree) -> Path:
    result = run("fit", tree / "refs", "-o", tree / "model.npz")
    assert result.returncode == 0, result.stderr
    return tree / "model.npz"


def expected_output(model: Path, path: Path) -> np.ndarray:
    """What the in-process API gives for one input file."""
    return np.asarray(HistogramMatcher.load(model).transform(read_image(path).pixels))


# ------------------------------------------------------------------------ match
def test_match_png_rgb(tree, tmp_path):
    out = tmp_path / "matched.png"
    result = run(
        "match", tree / "inputs" / "astronaut.png", tree / "refs" / "coffee.png", "-o", out
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    source = np.asarray(Image.open(tree / "inputs" / "astronaut.png"))
    reference = np.asarray(Image.open(tree / "refs" / "coffee.png"))
    expected = HistogramMatcher(random_state=0).fit(reference[None]).transform(source[None])[0]
    np.testing.assert_array_equal(np.asarray(Image.open(out)), expected)


@pytest.mark.parametrize("suffix, runner", [(".png", run), (".tif", cli)])
def test_match_16_bit_stays_16_bit(tree, tmp_path, suffix, runner):
    out = tmp_path / f"matched{suffix}"
    result = runner(
        "match", tree / "camera16.png", tree / "moon16.tif", "-o", out, "--method", "exact"
    )
    assert result.returncode == 0, result.stderr
    with Image.open(out) as im:
        assert im.mode == "I;16"
        values = np.asarray(im)
    moon = np.asarray(Image.open(tree / "moon16.tif"))
    assert values.max() > 255
    assert set(np.unique(values)) <= set(np.unique(moon))  # exact: reference levels only


def test_match_jpeg_to_tiff(tree, tmp_path):
    out = tmp_path / "out.tiff"
    result = cli("match", tree / "inputs/sub/chelsea.jpg", tree / "refs/coffee.png", "-o", out)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as im:
        assert im.format == "TIFF" and im.mode == "RGB"


def test_match_refuses_to_write_over_its_input(tree):
    source = tree / "inputs" / "astronaut.png"
    before = source.read_bytes()
    result = run("match", source, tree / "refs" / "coffee.png", "-o", source, "--overwrite")
    assert_usage_error(result, "refusing to write the output over the input")
    assert source.read_bytes() == before


def test_match_bad_arguments(tree, tmp_path):
    ref = tree / "refs" / "coffee.png"
    assert_usage_error(
        cli("match", tmp_path / "missing.png", ref, "-o", tmp_path / "o.png"),
        "source image not found",
    )
    assert_usage_error(
        run("match", ref, ref, "-o", tmp_path / "o.png", "--method", "nope"),
        "invalid choice: 'nope'",
    )
    assert_usage_error(
        cli("match", ref, ref, "-o", tmp_path / "o.png", "--strength", "1.5"),
        "must be in [0, 1]",
    )
    assert_usage_error(cli("match", ref, ref, "-o", tmp_path / "o.unknown"), "suffix '.unknown'")
    assert_usage_error(cli("match", ref), "the following arguments are required")


def test_match_corrupt_source(tree, tmp_path):
    out = tmp_path / "o.png"
    result = cli("match", tree / "inputs/sub/corrupt.png", tree / "refs/coffee.png", "-o", out)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(tree / "inputs/sub/corrupt.png") in result.stderr
    assert not out.exists()


# -------------------------------------------------------------------- fit/inspect
def test_fit_and_inspect(tree, model):
    result = run("inspect", model)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines() if " " in line)
    assert lines["method"].strip() == "per_channel"
    assert lines["dtype"].strip() == "uint8"
    assert lines["channels"].strip() == "3"
    assert f"sha256:{fingerprint(model)}" in result.stdout
    assert lines["images"].split() == ["seen", "2"]
    summary = json.loads(cli("inspect", model, "--json").stdout)
    assert summary["attributes"]["n_images_seen_"] == 2
    assert summary["attributes"]["n_pixels_seen_"] == 100 * 150 + 128 * 128
    assert summary["fingerprint"] == fingerprint(model)
    assert summary["params"]["method"] == "per_channel"


def test_fit_globs_files_and_masks(tree, tmp_path):
    masks = tmp_path / "masks"
    (masks / "more").mkdir(parents=True)
    m1 = np.zeros((100, 150), np.uint8)
    m1[10:30, 20:60] = 255
    m2 = np.zeros((128, 128), np.uint8)
    m2[:5, :7] = 1
    Image.fromarray(m1).save(masks / "coffee.png")
    Image.fromarray(m2).save(masks / "more" / "ihc.bmp")  # any suffix, same stem
    out = tmp_path / "masked.npz"
    pattern = str(tree / "refs" / "**" / "*.png")
    result = run("fit", pattern, "-o", out, "--mask-dir", masks, "--method", "exact")
    assert result.returncode == 0, result.stderr
    loaded = HistogramMatcher.load(out)
    assert loaded.method_ == "exact"
    assert loaded.n_images_seen_ == 2
    assert loaded.n_pixels_seen_ == 20 * 40 + 5 * 7
    # the same model from the API
    refs = [np.asarray(Image.open(tree / "refs/coffee.png"))]
    refs.append(np.asarray(Image.open(tree / "refs/more/ihc.png")))
    api = HistogramMatcher(method="exact", random_state=0).fit(refs, mask=[m1 > 0, m2 > 0])
    np.testing.assert_array_equal(loaded.reference_["histograms"], api.reference_["histograms"])


def test_fit_refuses_corrupt_and_mixed_references(tree, tmp_path):
    out = tmp_path / "m.npz"
    result = cli("fit", tree / "refs/coffee.png", tree / "inputs/sub/corrupt.png", "-o", out)
    assert result.returncode == 1
    assert str(tree / "inputs/sub/corrupt.png") in result.stderr
    assert "not written" in result.stdout and "--keep-going" in result.stdout
    assert not out.exists()  # a reference failed: no model
    kept = cli("fit", tree / "refs/coffee.png", tree / "inputs/sub/corrupt.png", "-o", out,
               "--keep-going")  # fmt: skip
    assert kept.returncode == 1 and "left out" in kept.stdout
    assert str(tree / "inputs/sub/corrupt.png") in kept.stdout
    assert HistogramMatcher.load(out).n_images_seen_ == 1
    mixed = cli("fit", tree / "refs/coffee.png", tree / "camera16.png", "-o", tmp_path / "x.npz",
                "--keep-going")  # fmt: skip
    assert mixed.returncode == 1 and not (tmp_path / "x.npz").exists()
    assert "1 uint8 with 3 channel(s), 1 uint16 with 1 channel(s)" in mixed.stderr
    assert "--mode RGB" in mixed.stderr
    converted = cli("fit", tree / "refs/coffee.png", tree / "camera16.png", "-o",
                    tmp_path / "x.npz", "--mode", "RGB")  # fmt: skip
    assert converted.returncode == 0, converted.stderr
    assert HistogramMatcher.load(tmp_path / "x.npz").n_images_seen_ == 2
    again = cli("fit", tree / "refs/coffee.png", "-o", out)
    assert_run_error(again, "exists already; pass --overwrite")
    failfast = cli("fit", tree / "inputs/sub/corrupt.png", tree / "refs", "-o", tmp_path / "f.npz",
                   "--fail-fast")  # fmt: skip
    assert failfast.returncode == 1 and not (tmp_path / "f.npz").exists()


# ------------------------------------------------------------------- transform
@pytest.fixture(scope="module")
def transformed(tree, model):
    """One serial and one parallel transform of the input tree."""
    results = {}
    for jobs in (1, 2):
        out = tree / f"out{jobs}"
        results[jobs] = (
            run("transform", "-m", model, tree / "inputs", "-o", out, "-j", jobs),
            out,
        )
    return results


def test_transform_tree(tree, model, transformed):
    result, out = transformed[1]
    assert result.returncode == 1  # the corrupt file
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(tree / "inputs/sub/corrupt.png") in errors[0]
    assert "3 written, 1 failed" in result.stdout
    assert files_under(out) == ["astronaut.png", "sub/chelsea.jpg", "sub/deep/rocket.tif"]
    for rel, fmt in (("astronaut.png", "PNG"), ("sub/chelsea.jpg", "JPEG")):
        with Image.open(out / rel) as im:
            assert im.format == fmt
    with Image.open(out / "sub/deep/rocket.tif") as im:
        assert im.format == "TIFF"
    for rel in ("astronaut.png", "sub/deep/rocket.tif"):  # lossless: exactly the API's output
        np.testing.assert_array_equal(
            np.asarray(Image.open(out / rel)), expected_output(model, tree / "inputs" / rel)
        )


def test_transform_parallel_is_bit_identical(transformed):
    (_, out1), (parallel, out2) = transformed[1], transformed[2]
    assert parallel.returncode == 1 and "with 2 job(s)" in parallel.stdout
    assert files_under(out1) == files_under(out2)
    for rel in files_under(out1):
        assert (out1 / rel).read_bytes() == (out2 / rel).read_bytes(), rel


def test_transform_refuses_overwrite_and_input_dirs(tree, model, transformed):
    _, out = transformed[1]
    before = {rel: (out / rel).read_bytes() for rel in files_under(out)}
    again = run("transform", "-m", model, tree / "inputs", "-o", out)
    assert_run_error(again, "3 output file(s) exist already")
    assert {rel: (out / rel).read_bytes() for rel in files_under(out)} == before
    inside = cli("transform", "-m", model, tree / "inputs", "-o", tree / "inputs" / "matched")
    assert_usage_error(inside, "is inside the input directory")
    assert not (tree / "inputs" / "matched").exists()
    over = cli("transform", "-m", model, tree / "inputs/astronaut.png", "-o", tree / "inputs",
               "--overwrite")  # fmt: skip
    assert_usage_error(over, "refusing to write over the input")
    pattern = str(tree / "inputs" / "*.png")
    globbed = cli("transform", "-m", model, pattern, "-o", tree / "inputs", "--overwrite")
    assert_usage_error(globbed, "would read the outputs again")


def test_transform_overwrite_replaces(tree, model, tmp_path):
    out = tmp_path / "o"
    src = tree / "inputs" / "astronaut.png"
    assert cli("transform", "-m", model, src, "-o", out, "-j", "1").returncode == 0
    (out / "astronaut.png").write_bytes(b"stale")
    result = cli("transform", "-m", model, src, "-o", out, "--overwrite", "-j", "1")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(
        np.asarray(Image.open(out / "astronaut.png")), expected_output(model, src)
    )
    assert files_under(out) == ["astronaut.png"]  # no temporary file left


def test_transform_fail_fast_and_pixel_limit(tree, model, tmp_path):
    result = cli(
        "transform", "-m", model, tree / "inputs/sub/corrupt.png", tree / "inputs/astronaut.png",
        "-o", tmp_path / "ff", "--fail-fast", "-j", "1",
    )  # fmt: skip
    assert result.returncode == 1
    assert "0 written, 1 failed, 1 not processed (--fail-fast)" in result.stdout
    limited = cli(
        "transform", "-m", model, tree / "inputs/astronaut.png", tree / "inputs/sub/chelsea.jpg",
        "-o", tmp_path / "lim", "--max-pixels", "16000", "-j", "1",
    )  # fmt: skip
    assert limited.returncode == 1
    assert "astronaut.png: image of 128x128 = 16384 pixels is over the limit" in limited.stderr
    assert files_under(tmp_path / "lim") == ["chelsea.jpg"]


def test_transform_with_masks_changes_only_masked_pixels(tree, model, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    mask = np.zeros((128, 128), np.uint8)
    mask[32:96, 16:80] = 255
    Image.fromarray(mask).save(masks / "astronaut.png")
    src = tree / "inputs" / "astronaut.png"
    result = cli(
        "transform", "-m", model, src, "-o", tmp_path / "o", "--mask-dir", masks, "-j", "1"
    )
    assert result.returncode == 0, result.stderr
    out = np.asarray(Image.open(tmp_path / "o" / "astronaut.png"))
    original = np.asarray(Image.open(src))
    np.testing.assert_array_equal(out[mask == 0], original[mask == 0])
    assert (out[mask > 0] != original[mask > 0]).any()


def test_transform_bad_arguments(tree, model, tmp_path):
    out = tmp_path / "o"
    assert_run_error(
        run("transform", "-m", tmp_path / "none.npz", tree / "inputs", "-o", out),
        "model file not found",
    )
    assert_usage_error(
        cli("transform", "-m", model, tmp_path / "missing", "-o", out), "input not found"
    )
    assert_usage_error(
        cli("transform", "-m", model, str(tmp_path / "*.png"), "-o", out), "no image files match"
    )
    assert_usage_error(
        cli("transform", "-m", model, tree / "inputs", "-o", out, "-j", "0"), "must be >= 1"
    )
    assert_usage_error(cli("transform", tree / "inputs", "-o", out), "required: -m/--model")
    assert not out.exists()


@pytest.mark.parametrize("content", [b"garbage", b"PK\x03\x04"])
def test_garbage_model_is_a_run_error(tree, tmp_path, content):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(content)
    assert_run_error(
        cli("transform", "-m", bad, tree / "inputs", "-o", tmp_path / "o"),
        "is not a valid histmatch_ml model file",
    )
    assert_run_error(cli("inspect", bad), "is not a valid histmatch_ml model file")


def test_tampered_model_is_refused(tree, model, tmp_path):
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "tampered.npz"
    bad.write_bytes(bytes(data))
    result = run("inspect", bad)
    assert_run_error(result, "is not a valid histmatch_ml model file")


def test_version_and_console_script(tree):
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.startswith(f"histmatch_ml {__version__}")
    script = shutil.which("histmatch", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the histmatch console script is not installed")
    result = subprocess.run([script, "inspect", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "fingerprint" in result.stdout


def test_png_compression_level(tree, tmp_path):
    src, ref = tree / "inputs" / "astronaut.png", tree / "refs" / "coffee.png"
    sizes = {}
    for level in ("0", "9"):
        out = tmp_path / f"l{level}.png"
        assert cli("match", src, ref, "-o", out, "--png-compression", level).returncode == 0
        sizes[level] = out.stat().st_size
    assert sizes["9"] < sizes["0"]
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "l0.png")), np.asarray(Image.open(tmp_path / "l9.png"))
    )
    assert_usage_error(
        cli("match", src, ref, "-o", tmp_path / "x.png", "--png-compression", "10"),
        "invalid choice",
    )


def test_import_and_version_start_without_scikit_learn():
    # the public names load on first use and `histmatch --version` is answered before the
    # parser is built, so both stay fast; the parser's matcher options are generated from
    # the parameter declarations, whose constraints are scikit-learn's
    code = (
        "import sys, histmatch_ml, histmatch_ml.cli\n"
        "assert histmatch_ml.__version__\n"
        "assert histmatch_ml.cli.main(['--version']) == 0\n"
        "print(sorted(m for m in ('sklearn', 'scipy.stats') if m in sys.modules))\n"
        "histmatch_ml.cli.build_parser()\n"
        "print('sklearn' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:3] == [f"histmatch_ml {__version__}", "[]", "True"]


# -------------------------------------------------------------- matcher options
def test_fit_help_lists_every_estimator_parameter():
    from histmatch_ml.matcher import estimator_params

    result = cli("fit", "--help")
    assert result.returncode == 0, result.stderr
    names = [name for name in estimator_params() if name not in ("n_jobs", "verbose")]
    assert {"method", "strength", "n_quantiles", "ordering", "regrain"} <= set(names)
    for name in names:
        assert f"--{name.replace('_', '-')}" in result.stdout, name
    assert "--n-jobs" not in result.stdout
    assert "--no-regrain" in result.stdout


def test_every_option_has_help():
    parser = build_parser()
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers += list(action.choices.values())
    for p in parsers:
        for action in p._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, (p.prog, action.option_strings or action.dest)


def test_main_help_says_what_each_method_is_for():
    from histmatch_ml.methods import available_methods, get_method

    result = cli("--help")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    for name in available_methods():
        assert any(
            line.split()[:1] == [name] and get_method(name).summary in line for line in lines
        ), name


def test_fit_exact_ordering_reaches_the_model(tree, tmp_path):
    out = tmp_path / "m.npz"
    result = cli("fit", tree / "refs", "-o", out, "--method", "exact", "--ordering", "local_means")
    assert result.returncode == 0, result.stderr
    model = load_model(out)
    assert model.method_ == "exact" and model.ordering == "local_means"


def test_fit_lab_options_reach_the_model(tree, tmp_path):
    out = tmp_path / "m.npz"
    result = cli(
        "fit", tree / "refs", "-o", out, "--method", "lab", "--n-iter", "3", "--no-regrain",
        "--lab-mode", "marginal", "--n-refine", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    model = load_model(out)
    assert model.method_ == "lab"
    assert (model.n_iter, model.n_refine, model.regrain, model.lab_mode) == (
        3, 2, False, "marginal",
    )  # fmt: skip
    assert model.reference_["rotations"].shape == (3 + 2, 3, 3)
    assert model.random_state == 0  # the command line's default seed
    regrained = tmp_path / "r.npz"
    assert cli("fit", tree / "refs", "-o", regrained, "--method", "lab", "--n-iter", "3",
               "--regrain").returncode == 0  # fmt: skip
    assert load_model(regrained).regrain is True


def test_match_passes_matcher_options(tree, tmp_path):
    src, ref = tree / "inputs" / "astronaut.png", tree / "refs" / "coffee.png"
    out = tmp_path / "o.png"
    result = cli("match", src, ref, "-o", out, "--method", "exact", "--ordering", "local_means")
    assert result.returncode == 0, result.stderr
    source, reference = np.asarray(Image.open(src)), np.asarray(Image.open(ref))
    api = HistogramMatcher(method="exact", ordering="local_means", random_state=0)
    expected = api.fit(reference[None]).transform(source[None])[0]
    np.testing.assert_array_equal(np.asarray(Image.open(out)), expected)


def test_out_of_bounds_option_is_a_usage_error(tree, tmp_path):
    out = tmp_path / "m.npz"
    result = cli("fit", tree / "refs", "-o", out, "--n-quantiles", "1")
    assert_usage_error(result, "argument --n-quantiles: must be in [2, 65536]; got 1")
    assert not out.exists()
    assert_usage_error(
        cli("fit", tree / "refs", "-o", out, "--n-iter", "many"),
        "argument --n-iter: must be an integer in [1, 1000]; got 'many'",
    )
    assert_usage_error(
        cli("fit", tree / "refs", "-o", out, "--ordering", "random"),
        "argument --ordering: invalid choice: 'random'",
    )
    assert_usage_error(
        cli("fit", tree / "refs", "-o", out, "--random-state", "-1"),
        "argument --random-state: must be in [0, 4294967295]; got -1",
    )
    assert not out.exists()


def test_a_method_registered_later_gets_its_options(tmp_path):
    # a method in a module of its own, registered before the parser is built: its
    # parameters become options and reach the estimator with no change to the CLI
    code = """
import sys
from numbers import Integral
from sklearn.utils._param_validation import Interval, StrOptions
from histmatch_ml.methods import N_QUANTILES, Param, register
from histmatch_ml.methods.per_channel import PerChannel

class Toy(PerChannel):
    name = "toy_cli"
    summary = "a toy method registered by a test"
    params = (
        N_QUANTILES,
        Param("toy_level", 3, [Interval(Integral, 0, 9, closed="both")], "A level.", "int"),
        Param("toy_mode", "a", [StrOptions({"a", "b"})], "A mode.", "str"),
    )

register(Toy)
from histmatch_ml.cli import main
from histmatch_ml.io import load_model

if sys.argv[1] == "load":
    model = load_model(sys.argv[2])
    print(model.toy_level, model.toy_mode)
else:
    sys.exit(main(sys.argv[1:]))
"""
    script = tmp_path / "toy_cli.py"
    script.write_text(code)

    def toy(*args):
        return subprocess.run(
            [sys.executable, str(script), *map(str, args)], capture_output=True, text=True
        )

    helped = toy("fit", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--toy-level N" in helped.stdout and "Used by method=toy_cli" in helped.stdout
    assert "{a,b}" in helped.stdout and "toy_cli" in toy("--help").stdout
    image = tmp_path / "ref.png"
    Image.fromarray(data.coffee()[::8, ::8]).save(image)
    model = tmp_path / "toy.npz"
    fitted = toy("fit", image, "-o", model, "--method", "toy_cli", "--toy-level", "7",
                 "--toy-mode", "b")  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr
    loaded = toy("load", model)
    assert loaded.stdout.split() == ["7", "b"], loaded.stderr
    assert toy("fit", image, "-o", model, "--toy-level", "10").returncode == 2


# -------------------------------------------------- leftovers, links, full disks
def dead_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def write_bytes(path: Path, content: bytes = b"partial") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.mark.skipif(os.name != "posix", reason="stale files are recognised by a POSIX pid test")
def test_transform_removes_only_stale_temp_files(tree, model, tmp_path):
    out, outside = tmp_path / "o", tmp_path / "outside"
    dead = dead_pid()
    stale = [
        write_bytes(out / f".histmatch-tmp-{dead}-0123456789ab"),
        write_bytes(out / "sub" / "deep" / f".histmatch-tmp-{dead}-abcdef012345"),
    ]
    kept = [
        write_bytes(out / f".histmatch-tmp-{os.getpid()}-0123456789ab"),  # its writer runs
        write_bytes(out / f".histmatch-tmp-{dead}-0123456789ab.png"),  # not exactly the name
        write_bytes(out / f".histmatch-tmp-{dead}-0123456789AB"),
        write_bytes(out / f".histmatch-tmp-0{dead}-0123456789ab"),
        write_bytes(out / f"histmatch-tmp-{dead}-0123456789ab"),
        write_bytes(out / f".astronaut.png.{dead:012x}.tmp"),  # someone else's temporary name
        write_bytes(outside / f".histmatch-tmp-{dead}-0123456789ab"),  # behind a link
        write_bytes(outside / "precious"),
    ]
    (out / "link").symlink_to(outside, target_is_directory=True)
    link = out / f".histmatch-tmp-{dead}-fedcba987654"
    link.symlink_to(outside / "precious")  # the name of a stale file, but a link
    folder = out / f".histmatch-tmp-{dead}-111111111111"
    folder.mkdir()
    recent = write_bytes(out / f".histmatch-tmp-{dead}-222222222222")
    later = time.time() + 3600  # modified after the run began: maybe a write in progress
    os.utime(recent, (later, later))
    result = run("transform", "-m", model, tree / "inputs" / "astronaut.png", "-o", out, "-j", "1")
    assert result.returncode == 0, result.stderr
    assert f"removed 2 temporary file(s) left in {out}" in result.stderr
    assert not any(path.exists() for path in stale)
    assert all(path.read_bytes() == b"partial" for path in kept)
    assert link.is_symlink() and folder.is_dir() and recent.is_file()
    assert (out / "astronaut.png").is_file()


@pytest.mark.skipif(os.name != "posix", reason="stale files are recognised by a POSIX pid test")
def test_fit_and_match_remove_stale_temp_files(tree, tmp_path):
    dead = dead_pid()
    stale = write_bytes(tmp_path / f".histmatch-tmp-{dead}-0123456789ab")
    below = write_bytes(tmp_path / "sub" / f".histmatch-tmp-{dead}-0123456789ab")
    fitted = run("fit", tree / "refs", "-o", tmp_path / "m.npz")
    assert fitted.returncode == 0, fitted.stderr
    assert "removed 1 temporary file(s)" in fitted.stderr
    assert not stale.exists() and below.exists()  # only the model's own directory
    write_bytes(stale)
    matched = run(
        "match", tree / "inputs" / "astronaut.png", tree / "refs" / "coffee.png",
        "-o", tmp_path / "o.png",
    )  # fmt: skip
    assert matched.returncode == 0, matched.stderr
    assert not stale.exists() and below.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "o.png", "sub"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_transform_refuses_output_directories_linked_outside(tree, model, tmp_path):
    out, elsewhere = tmp_path / "o", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)
    result = run("transform", "-m", model, tree / "inputs", "-o", out, "-j", "2")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, result.stderr  # every input under sub/, refused before reading
    for rel in ("sub/chelsea.jpg", "sub/corrupt.png", "sub/deep/rocket.tif"):
        (line,) = [line for line in errors if line.startswith(f"error: {tree / 'inputs' / rel}:")]
        assert f"{out / 'sub'} is a link to {os.path.realpath(elsewhere)}" in line
    assert "1 written, 3 failed" in result.stdout
    assert list(elsewhere.iterdir()) == []  # nothing written there, no directory made
    assert files_under(out) == ["astronaut.png"]
    # a link that stays inside the output directory is followed
    inside = tmp_path / "o2"
    (inside / "real").mkdir(parents=True)
    (inside / "sub").symlink_to(inside / "real", target_is_directory=True)
    result = run("transform", "-m", model, tree / "inputs", "-o", inside, "-j", "1")
    assert result.returncode == 1 and "3 written, 1 failed" in result.stdout, result.stderr
    assert files_under(inside / "real") == ["chelsea.jpg", "deep/rocket.tif"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A real file system of 200 KiB (a tmpfs, which only root may mount), unmounted after."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root on Linux")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=200k", "histmatch-test", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_transform_stops_at_the_first_full_disk_error(tmp_path, tiny_disk, jobs):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(5)
    n = 40  # noise does not compress: about 16 of these fill the disk
    for i in range(n):
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(inputs / f"img{i:02d}.png")
    before = {p.name: p.read_bytes() for p in inputs.iterdir()}
    model = tmp_path / "m.npz"
    assert run("fit", inputs, "-o", model).returncode == 0
    out = tiny_disk / "out"
    result = run("transform", "-m", model, inputs, "-o", out, "-j", jobs)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    # after the first failure, only the files other workers were writing can fail too
    assert 1 <= len(errors) <= int(jobs), result.stderr
    assert all("No space left on device" in line for line in errors), result.stderr
    assert f"cannot write {out}" in errors[0]
    written = files_under(out)
    assert 0 < len(written) < n - len(errors)
    rest = n - len(written) - len(errors)
    assert (
        f"{len(written)} written, {len(errors)} failed, {rest} not processed "
        "(stopped: no space left on device)"
    ) in result.stdout
    assert not any(p.name.startswith(".") for p in out.rglob("*"))  # no temporary file left
    for rel in written:
        with Image.open(out / rel) as im:
            im.load()  # whole
    assert {p.name: p.read_bytes() for p in inputs.iterdir()} == before


def test_match_writes_a_rotated_jpeg_upright_with_its_metadata(tmp_path):
    from PIL import Image
    from skimage import data

    upright = data.astronaut()[:120, :200]
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "histmatch test camera"
    Image.fromarray(np.rot90(upright, 1)).save(
        tmp_path / "photo.jpg", "JPEG", exif=exif.tobytes(), dpi=(300, 300), quality=95
    )
    Image.fromarray(data.coffee()).save(tmp_path / "style.png")
    out = tmp_path / "matched.png"
    result = cli("match", str(tmp_path / "photo.jpg"), str(tmp_path / "style.png"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    with Image.open(out) as matched:
        assert matched.size == (200, 120)  # the README's example displays upright
        assert matched.getexif().get(0x0112, 1) == 1
        assert matched.getexif().get(0x010F) == "histmatch test camera"
        assert tuple(round(v) for v in matched.info["dpi"]) == (300, 300)
