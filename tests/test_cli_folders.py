"""``histmatch`` on a messy folder, through the real command line (subprocesses).

The folder holds what real folders hold: links to files inside the tree, a
link loop, a link out of the tree, grey images among colour ones, RGBA, a
palette PNG, a CMYK JPEG, an EXIF-rotated JPEG, 16-bit PNG and TIFF, a float
TIFF, a corrupt file, a zero-byte file and a text file named ``.png``. Every
input must be accounted for (written, skipped with a reason, or failed and
named), an interrupted run must be finished by ``--skip-existing`` without
rewriting anything, and the inputs must stay as they were.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.skipif(
    os.name != "posix" or not hasattr(os, "symlink"), reason="POSIX links and signals"
)

#: the files that cannot be read, by name
BAD = ("corrupt.png", "empty.png", "notes.png")
SUMMARY = re.compile(r"(\d+) written, (\d+) failed(?:, (\d+) skipped)?(?:, (\d+) not processed)?")


def histmatch(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "histmatch_ml", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def digests(directory: Path) -> dict[str, str]:
    """sha256 of every regular file under ``directory`` (links not followed)."""
    found = {}
    for dirpath, _, names in os.walk(directory):
        for name in names:
            path = Path(dirpath) / name
            if not path.is_symlink():
                found[str(path.relative_to(directory))] = hashlib.sha256(
                    path.read_bytes()
                ).hexdigest()
    return found


def hidden_files(directory: Path) -> list[str]:
    return sorted(str(p) for p in directory.rglob(".*"))


def summary(stdout: str) -> tuple[int, int, int, int]:
    """``(written, failed, skipped, not processed)`` from a transform summary line."""
    match = SUMMARY.search(stdout)
    assert match, stdout
    return tuple(int(g or 0) for g in match.groups())


def _noise(rng: np.random.Generator, shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """The messy folder ``data``, a model of its RGB images, and the input paths a walk
    of ``data`` finds (relative, links included)."""
    import cv2

    root = tmp_path_factory.mktemp("folders")
    data = root / "data"
    (data / "rgb").mkdir(parents=True)
    (data / "c").mkdir()
    rng = np.random.default_rng(7)
    for i in range(4):
        Image.fromarray(_noise(rng, (24, 32, 3))).save(data / "rgb" / f"rgb{i}.png")
    for i in range(2):
        Image.fromarray(_noise(rng, (24, 32))).save(data / f"grey{i}.png")
    Image.fromarray(_noise(rng, (24, 32, 4)), "RGBA").save(data / "rgba.png")
    Image.fromarray(_noise(rng, (24, 32, 3))).quantize(16).save(data / "palette.png")
    Image.fromarray(_noise(rng, (24, 32, 4)), "CMYK").save(data / "c" / "cmyk.jpg")
    rotated = Image.fromarray(_noise(rng, (24, 32, 3)))
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(data / "rotated.jpg", exif=exif)
    Image.fromarray(_noise(rng, (24, 32), np.uint16)).save(data / "grey16.png")
    Image.fromarray(_noise(rng, (24, 32), np.uint16)).save(data / "c" / "grey16.tif")
    cv2.imwrite(str(data / "colour16.png"), _noise(rng, (24, 32, 3), np.uint16))
    cv2.imwrite(str(data / "c" / "colour16.tif"), _noise(rng, (24, 32, 3), np.uint16))
    Image.fromarray(rng.random((24, 32), dtype=np.float32), "F").save(data / "float.tif")
    good = (data / "rgb" / "rgb0.png").read_bytes()
    (data / "corrupt.png").write_bytes(good[: len(good) // 2])
    (data / "empty.png").write_bytes(b"")
    (data / "notes.png").write_text("not an image\n")
    (data / "link.png").symlink_to(Path("rgb") / "rgb1.png")  # inside the tree
    (data / "c" / "loop").symlink_to("..", target_is_directory=True)  # a loop
    Image.fromarray(_noise(rng, (24, 32, 3))).save(root / "outside.png")
    (data / "away.png").symlink_to(root / "outside.png")  # leaves the tree
    model = root / "model.npz"
    fitted = histmatch("fit", data / "rgb", "-o", model, "--scale", "raw")
    assert fitted.returncode == 0, fitted.stderr
    found = sorted(
        str(p.relative_to(data))
        for p in data.rglob("*")
        if p.suffix in (".png", ".jpg", ".tif") and "loop" not in p.parts
    )
    assert len(found) == 20
    return data, model, found


def test_every_input_is_accounted_for(messy, tmp_path):
    data, model, found = messy
    before = digests(data)
    out = tmp_path / "out"
    result = histmatch("transform", "-m", model, data, "-o", out, "-j", "2", "--mode", "RGB")
    assert result.returncode == 1, result.stderr  # the three bad files
    assert "Traceback" not in result.stderr
    written, failed, skipped, not_processed = summary(result.stdout)
    assert (written, failed, skipped, not_processed) == (len(found) - 4, 3, 1, 0)
    assert written + failed + skipped == len(found)
    failed_line = next(line for line in result.stdout.splitlines() if ": failed: " in line)
    for name in BAD:
        assert str(data / name) in failed_line
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert sum(str(data / name) in line for line in errors) == 1
    # the link outside the tree is skipped with a line, the loop is not followed
    assert f"skipped: {data / 'away.png'}: link to" in result.stderr
    assert "--follow-links" in result.stderr
    assert f"skipped: {data / 'c' / 'loop'}:" in result.stderr and "loop" in result.stderr
    # a link to a file and its target each get their own output
    assert (out / "link.png").is_file() and (out / "rgb" / "rgb1.png").is_file()
    written_files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    expected = sorted(set(found) - {f"{n}" for n in BAD} - {"away.png"})
    assert written_files == expected
    with Image.open(out / "rotated.jpg") as im:
        assert im.size == (24, 32)  # upright: the EXIF rotation was applied
    assert digests(data) == before and hidden_files(out) == []


def test_follow_links_and_globs_never_loop(messy, tmp_path):
    data, model, found = messy
    out = tmp_path / "out"
    result = histmatch(
        "transform", "-m", model, f"{data}/**/*16*", "-o", out, "-j", "1", "--mode", "RGB",
        "--follow-links",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted(f for f in found if "16" in f)
    assert summary(result.stdout)[:3] == (4, 0, 0)
    followed = histmatch("transform", "-m", model, data / "away.png", data / "rgb", "-o",
                         tmp_path / "o2", "--follow-links")  # fmt: skip
    assert followed.returncode == 0, followed.stderr
    assert (tmp_path / "o2" / "away.png").is_file()


def test_fit_refuses_mixed_references_and_converts_with_mode(messy, tmp_path):
    data = messy[0]
    model = tmp_path / "m.npz"
    mixed = histmatch("fit", data, "-o", model)
    assert mixed.returncode == 1 and not model.exists()
    assert "kinds" in mixed.stderr and "--mode RGB or --mode L" in mixed.stderr
    assert "uint8 with 3 channel(s)" in mixed.stderr and "uint8 with 1 channel(s)" in mixed.stderr
    refused = histmatch("fit", data, "-o", model, "--mode", "RGB", "--strength", "0.5")
    assert refused.returncode == 1 and not model.exists()  # the bad files: no model
    assert "--keep-going" in refused.stdout
    assert "applied" in refused.stderr or "transform time" in refused.stderr
    kept = histmatch("fit", data, "-o", model, "--mode", "L", "--keep-going")
    assert kept.returncode == 1 and model.exists(), kept.stderr
    assert "left out" in kept.stdout and all(str(data / n) in kept.stdout for n in BAD)
    inspected = histmatch("inspect", tmp_path / "m.npz")
    assert "channels" in inspected.stdout and "transform time" in inspected.stdout


def test_warnings_are_one_line_per_file(messy, tmp_path):
    data, model, _ = messy
    out = tmp_path / "out"
    result = histmatch(
        "transform", "-m", model, data / "colour16.png", data / "c" / "colour16.tif", "-o", out
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, result.stderr
    # one line per file, in the order the workers finish
    for path in (data / "colour16.png", data / "c" / "colour16.tif"):
        assert sum(str(path) in w and "uint16" in w for w in warnings) == 1, result.stderr
    assert len(result.stderr.splitlines()) == 2 and "_apply" not in result.stderr
    grey = histmatch("transform", "-m", model, data / "grey0.png", "-o", tmp_path / "g")
    assert grey.returncode == 1
    assert (
        "--mode RGB" in grey.stderr and "np." not in grey.stderr and ".convert(" not in grey.stderr
    )


def test_match_names_the_input_that_failed(messy, tmp_path):
    data, _, _ = messy
    result = histmatch("match", data / "rgb" / "rgb0.png", data / "grey0.png", "-o",
                       tmp_path / "o.png")  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {data / 'rgb' / 'rgb0.png'}:"), result.stderr


@pytest.fixture
def subreaper():
    """Reap the workers of a run signalled here (see tests/test_cli_signals.py)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    if libc is not None:
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    yield
    if libc is not None:
        libc.prctl(36, 0, 0, 0, 0)


def test_interrupted_run_is_finished_by_skip_existing(tmp_path, subreaper):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(5)
    n = 32
    for i in range(n):
        Image.fromarray(_noise(rng, (320, 320, 3))).save(inputs / f"{i:02d}.png", compress_level=0)
    before = digests(inputs)
    model = tmp_path / "m.npz"
    assert histmatch("fit", inputs / "00.png", "-o", model).returncode == 0
    out = tmp_path / "out"
    args = ["transform", "-m", model, inputs, "-o", out, "-j", "2", "--png-compression", "9"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "histmatch_ml", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out.is_dir() and len(list(out.glob("*.png"))) >= 3):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert "--skip-existing" in stderr and "Traceback" not in stderr
    first = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.png")}
    written, failed, _, not_processed = summary(stdout)
    assert written == len(first) and failed == 0 and not_processed > 0
    assert f"interrupted after writing {written} file(s)" in stderr
    resumed = histmatch(*args, "--skip-existing")
    assert resumed.returncode == 0, resumed.stderr
    assert summary(resumed.stdout)[:3] == (n - written, 0, written)
    now = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.png")}
    assert len(now) == n and all(now[name] == first[name] for name in first)
    assert hidden_files(out) == [] and digests(inputs) == before
