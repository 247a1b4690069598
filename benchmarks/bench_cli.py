"""``histmatch transform`` over a directory of 200 512x512 PNGs: ``--jobs 2`` vs ``--jobs 1``.

Each run is the real command line in a fresh process (start-up, model load,
PNG decode, matching, PNG encode, atomic write with fsync), so the times are
what a user waits for. The peer is what users write without this package: a
Python loop with Pillow and ``skimage.exposure.match_histograms`` against one
reference image, in one process, writing PNGs at the same zlib level (1, the
CLI's default ``--png-compression``). Run::

    python benchmarks/bench_cli.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _harness import Table, interleaved_medians, machine
from PIL import Image
from skimage import data

N_IMAGES = 200
SIZE = 512
#: a run of a few seconds for tests/test_benchmarks_smoke.py
SMOKE_ARGS = ("--n-images", "4", "--size", "64", "--repeat", "1", "--warmup", "0")

_PEER = """
import sys
from pathlib import Path
import numpy as np
from PIL import Image
from skimage.exposure import match_histograms
src, ref, out = map(Path, sys.argv[1:4])
reference = np.asarray(Image.open(ref))
for path in sorted(src.glob("*.png")):
    matched = match_histograms(np.asarray(Image.open(path)), reference, channel_axis=-1)
    Image.fromarray(matched.astype(np.uint8)).save(out / path.name, compress_level=1)
"""


def make_inputs(directory: Path, n_images: int = N_IMAGES, size: int = SIZE) -> None:
    """Distinct ``size`` x ``size`` RGB PNGs: crops, flips and tints of bundled photos."""
    rng = np.random.default_rng(0)
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    for i in range(n_images):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        y, x = rng.integers(0, max(h - size, 0) + 1), rng.integers(0, max(w - size, 0) + 1)
        crop = np.asarray(
            Image.fromarray(photo[y : y + size, x : x + size]).resize((size, size)), np.float32
        )
        tint = rng.uniform(0.6, 1.2, size=3).astype(np.float32)
        image = np.clip(crop * tint, 0, 255).astype(np.uint8)
        if i % 2:
            image = image[:, ::-1]
        Image.fromarray(np.ascontiguousarray(image)).save(directory / f"img_{i:03d}.png")


def main(argv: list[str] | None = None) -> Table:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=N_IMAGES)
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    n_images, size = args.n_images, args.size
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs, outputs = tmp / "inputs", tmp / "outputs"
        inputs.mkdir()
        make_inputs(inputs, n_images, size)
        Image.fromarray(data.coffee()).save(tmp / "coffee.png")
        cli = [sys.executable, "-m", "histmatch_ml"]
        model = tmp / "coffee.npz"
        subprocess.run(
            [*cli, "fit", tmp / "coffee.png", "-o", model], check=True, capture_output=True
        )
        for name in ("jobs1", "jobs2", "peer"):
            (outputs / name).mkdir(parents=True)

        def transform(jobs: int):
            cmd = [*cli, "transform", "-m", model, inputs, "-o", outputs / f"jobs{jobs}"]
            cmd += ["--jobs", str(jobs), "--overwrite"]
            return lambda: subprocess.run(cmd, check=True, capture_output=True)

        def peer():
            cmd = [sys.executable, "-c", _PEER, inputs, tmp / "coffee.png", outputs / "peer"]
            subprocess.run(cmd, check=True, capture_output=True)

        times = interleaved_medians(
            {"jobs1": transform(1), "jobs2": transform(2), "peer": peer},
            repeat=args.repeat,
            warmup=args.warmup,
        )
        same = all(
            (outputs / "jobs1" / p.name).read_bytes() == p.read_bytes()
            for p in (outputs / "jobs2").iterdir()
        )
    table = Table("case", "--jobs 1", "--jobs 2", "skimage loop (1 process)")
    table.row(
        f"transform {n_images} PNGs {size}x{size} RGB",
        times["jobs1"],
        times["jobs2"],
        times["peer"],
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{machine()}; load average {load:.1f}; medians of {args.repeat} interleaved runs "
        f"after {args.warmup} warm-up(s)"
    )
    print(table.markdown(ratio=("--jobs 1", "--jobs 2")))
    print(f"per image: --jobs 1 {times['jobs1'] / n_images * 1e3:.1f} ms, "
          f"--jobs 2 {times['jobs2'] / n_images * 1e3:.1f} ms; "
          f"outputs of --jobs 1 and --jobs 2 byte-identical: {same}")  # fmt: skip
    return table


if __name__ == "__main__":
    main()
