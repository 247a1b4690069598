"""Intensity standardization of MR volumes across sites: ours against TorchIO and Nyul.

A synthetic multi-site cohort is built, offline, from the MNI152 template and its
grey/white-matter probability maps that nilearn ships (2 mm, 99x117x95). Every
subject differs

* in anatomy: a random zoom (0.9-1.1), shift (+-4 voxels) and rotation (+-5 degrees)
  of the template, and a random crop of 0-20% of the slices at either end of every
  axis (so the volumes differ in size and in their tissue proportions);
* in scanner: a random smooth monotone intensity map (a power 0.6-1.6 and a scale
  of 200-4000, with an offset), a multiplicative bias field (a random quadratic
  in the coordinates, +-20%), Rician noise (1-4% of the range), stored as int16,
  uint16 or float32.

Ten subjects are the training set and the other ten the test set; the brain
mask of every subject is known (the warped template mask). Every method is fitted
on the training volumes with their masks and applied to the test volumes:

* no normalization; TorchIO ``HistogramStandardization`` (``train`` from the
  NIfTI files and mask files, transform of a ``tio.Subject`` with the mask);
  intensity-normalization's ``NyulNormalizer`` (arrays) when installed;
* ours: ``landmarks`` (TorchIO's configuration: barycentre, ``standard_range``
  (0, 100)), ``per_channel`` with the pooled and the barycentre reference,
  ``exact`` with the barycentre reference, and ``exact`` with the barycentre
  after dividing out every volume's bias field (``BiasFieldCorrector``, on the
  training volumes before the fit and on each test volume before its
  transform; its time is in the row's fit and transform).

Measures, on the test subjects' brain voxels, after putting every method's
outputs on one common scale (the 1st and 99th percentiles of all its test
foreground voxels to 0 and 100):

* the coefficient of variation across subjects of the mean white-matter
  intensity (WM probability > 0.5) and of the mean grey-matter intensity;
* the mean pairwise Jensen-Shannon divergence (base 2) of the foreground
  histograms (200 bins over the common scale's [-10, 110]);
* fit time for the 10 training volumes from the NIfTI files (ours reads them with
  ``histmatch_ml.io.iter_volumes`` as float32, as TorchIO reads them, ``--n-jobs``
  files at a time, and the matcher summarises them with the same ``n_jobs``; one
  more landmarks row fits with one thread), transform time per volume, and the
  peak memory of the fit (tracemalloc: numpy's allocations).

Quality is a median over 5 cohort seeds; times come from the first seed's
cohort, interleaved.

With ``--analysis`` a second table shows what bounds the WM CV: the best histogram
method (``exact`` to the barycentre) and ``landmarks`` on the cohort's anatomy before
the scanner, with only its bias field, on the cohort, and on the cohort with its
true bias field divided out (the generator knows it).

Run::

    python benchmarks/bench_volumes.py          # 5 seeds, full-size volumes (minutes)
    python benchmarks/bench_volumes.py --analysis  # and what bounds the WM CV
    python benchmarks/bench_volumes.py --quick  # 1 seed, volumes at half size
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from _harness import Table, interleaved_medians, machine, peak_bytes
from scipy import ndimage

from histmatch_ml import BiasFieldCorrector, HistogramMatcher
from histmatch_ml.io import iter_volumes, read_volume, write_volume

#: the targets of the issue
CV_TARGET = 0.9  # best of ours: WM CV at most this times TorchIO's (median over seeds)
JSD_TARGET = 0.3  # and the foreground JSD at most this times TorchIO's
FIT_SPEED_TARGET = 2.0  # landmarks' fit from the same files at least this much faster
N_TRAIN = 10
if importlib.util.find_spec("nilearn") is not None:  # (the cohort's source: no smoke test without)
    #: arguments of the smoke test (tests/test_benchmarks_smoke.py): a run of seconds
    SMOKE_ARGS = ("--quick", "--zoom", "0.25", "--subjects", "6", "--repeat", "1", "--analysis")

DTYPES = (np.int16, np.uint16, np.float32)
LANDMARKS = "histmatch_ml landmarks (barycenter, 0..100)"
CORRECTED = "histmatch_ml exact barycenter, bias fields divided out (BiasFieldCorrector)"
LANDMARKS_1 = "histmatch_ml landmarks (barycenter, 0..100), n_jobs=1"


@dataclass
class Report:
    """What :func:`main` measured: the table and the verdict of every target."""

    table: Table
    verdicts: dict[str, bool] = field(default_factory=dict)


def _templates(zoom: float) -> dict[str, np.ndarray]:
    from nilearn import datasets

    maps = {
        "t1": datasets.load_mni152_template(resolution=2),
        "gm": datasets.load_mni152_gm_template(resolution=2),
        "wm": datasets.load_mni152_wm_template(resolution=2),
        "brain": datasets.load_mni152_brain_mask(resolution=2),
    }
    out = {k: np.asarray(v.get_fdata(), dtype=np.float32) for k, v in maps.items()}
    if zoom != 1.0:
        out = {k: ndimage.zoom(v, zoom, order=1) for k, v in out.items()}
    out["t1"] /= out["t1"].max()
    return out


def _subject(templates: dict[str, np.ndarray], rng: np.random.Generator) -> dict:
    """One subject: warped anatomy, a scanner's intensities, its masks."""
    shape = np.array(templates["t1"].shape)
    angle = np.deg2rad(rng.uniform(-5, 5))
    rot = np.array(
        [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    )
    matrix = rot / rng.uniform(0.9, 1.1)
    centre = shape / 2
    offset = centre - matrix @ centre + rng.uniform(-4, 4, 3)
    warped = {
        k: ndimage.affine_transform(v, matrix, offset, order=1) for k, v in templates.items()
    }
    lo = (rng.uniform(0, 0.2, 3) * shape).astype(int)
    hi = shape - (rng.uniform(0, 0.2, 3) * shape).astype(int)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    warped = {k: v[crop] for k, v in warped.items()}
    brain = warped["brain"] > 0.5
    # scanner: a monotone intensity map, a bias field, Rician noise, a dtype and range
    t1 = np.clip(warped["t1"], 0, None) ** rng.uniform(0.6, 1.6)
    z, y, x = (np.linspace(-1, 1, n)[:, None, None].swapaxes(0, i) for i, n in enumerate(t1.shape))
    coeffs = rng.uniform(-1, 1, 6)
    bias = coeffs[0] * x + coeffs[1] * y + coeffs[2] * z + coeffs[3] * x * y + coeffs[4] * z**2
    bias = 1.0 + 0.2 * bias / max(1e-9, float(np.abs(bias).max()))
    scale = rng.uniform(200, 4000)
    signal = t1 * bias * scale + rng.uniform(0, 0.05) * scale
    sigma = rng.uniform(0.01, 0.04) * scale
    noisy = np.sqrt(
        (signal + rng.normal(0, sigma, t1.shape)) ** 2 + rng.normal(0, sigma, t1.shape) ** 2
    )
    dtype = DTYPES[rng.integers(len(DTYPES))]
    data = (
        noisy.astype(np.float32)
        if dtype == np.float32
        else np.clip(np.rint(noisy), 0, 32767).astype(dtype)
    )
    return {
        "data": data,
        "brain": brain,
        "wm": (warped["wm"] > 0.5) & brain,
        "gm": (warped["gm"] > 0.5) & brain,
        # what the scanner did, for --analysis: the anatomy before it and its bias field
        "anatomy": np.clip(warped["t1"], 0, None),
        "bias": bias.astype(np.float32),
    }


#: --analysis: what each method is given instead of the stored volumes
ANALYSIS_INPUTS: dict[str, Callable[[dict], np.ndarray]] = {
    "the anatomy alone (no scanner)": lambda s: s["anatomy"],
    "the anatomy times its bias field": lambda s: s["anatomy"] * s["bias"],
    "the cohort (every scanner effect)": lambda s: s["data"].astype(np.float32),
    "the cohort, its true bias field divided out": lambda s: s["data"] / s["bias"],
}


def _analysis(subjects: list[dict], n_train: int) -> dict[str, tuple[float, float, float]]:
    """Quality of the best histogram method (exact to the barycentre) and of landmarks
    on inputs with parts of the scanner model left out: what bounds the WM CV."""
    train, test = subjects[:n_train], subjects[n_train:]
    found = {"no normalization of the anatomy alone": _quality([s["anatomy"] for s in test], test)}
    for what, make in ANALYSIS_INPUTS.items():
        fit_on = [make(s).astype(np.float32) for s in train]
        apply_to = [make(s).astype(np.float32) for s in test]
        for method, kw in (("exact", {}), ("landmarks", {"standard_range": (0, 100)})):
            matcher = HistogramMatcher(method, reference="barycenter", spatial_dims=3, **kw)
            matcher.fit(fit_on, mask=[s["brain"] for s in train])
            out = matcher.transform(apply_to, mask=[s["brain"] for s in test])
            found[f"{method} barycenter, on {what}"] = _quality(out, test)
    return found


def _common_scale(outputs: list[np.ndarray], masks: list[np.ndarray]) -> list[np.ndarray]:
    """Outputs on one scale: the 1st and 99th percentiles of all foreground voxels to 0, 100."""
    pooled = np.concatenate([o[m].astype(np.float64) for o, m in zip(outputs, masks)])
    lo, hi = np.percentile(pooled, [1, 99])
    return [(o.astype(np.float64) - lo) * (100.0 / (hi - lo)) for o in outputs]


def _quality(outputs: list[np.ndarray], subjects: list[dict]) -> tuple[float, float, float]:
    """(WM CV, GM CV, mean pairwise JSD of the foreground histograms)."""
    brains = [s["brain"] for s in subjects]
    scaled = _common_scale(outputs, brains)
    cvs = []
    for tissue in ("wm", "gm"):
        means = np.array([o[s[tissue]].mean() for o, s in zip(scaled, subjects)])
        cvs.append(float(means.std() / abs(means.mean())))
    bins = np.linspace(-10, 110, 201)
    hists = [np.histogram(o[b], bins=bins)[0] + 1e-12 for o, b in zip(scaled, brains)]
    hists = [h / h.sum() for h in hists]
    jsd = []
    for i in range(len(hists)):
        for j in range(i + 1, len(hists)):
            p, q = hists[i], hists[j]
            m = 0.5 * (p + q)
            jsd.append(0.5 * (np.sum(p * np.log2(p / m)) + np.sum(q * np.log2(q / m))))
    return cvs[0], cvs[1], float(np.mean(jsd))


def _methods(
    train_paths, train_masks, train_mask_paths, n_jobs: int
) -> dict[str, tuple[Callable, Callable]]:
    """name -> (fit(), transform(fitted, volume, mask, volume path, mask path))."""

    def read_float(paths):
        return (read_volume(p).data.astype(np.float32) for p in paths)

    def ours(method: str, reference: str, jobs: int = n_jobs, **kw) -> tuple[Callable, Callable]:
        def fit():  # the files read `jobs` at a time, as float32 (TorchIO's reading)
            matcher = HistogramMatcher(
                method, reference=reference, spatial_dims=3, n_jobs=jobs, **kw
            )
            volumes = iter_volumes(train_paths, dtype=np.float32, n_jobs=jobs)
            return matcher.fit(volumes, mask=train_masks)

        def apply(fitted, volume, mask, path, mask_path):
            return fitted.transform([volume.astype(np.float32)], mask=[mask])[0]

        return fit, apply

    def corrected_exact() -> tuple[Callable, Callable]:
        """``exact`` to the barycentre, every volume's bias field divided out first."""
        corrector = BiasFieldCorrector()

        def fit():
            volumes = iter_volumes(train_paths, dtype=np.float32, n_jobs=n_jobs)
            pairs = zip(volumes, train_masks)
            corrected = (corrector.transform([v], mask=[m])[0] for v, m in pairs)
            matcher = HistogramMatcher(
                "exact", reference="barycenter", spatial_dims=3, n_jobs=n_jobs
            )
            return matcher.fit(corrected, mask=train_masks)

        def apply(fitted, volume, mask, path, mask_path):
            volume = corrector.transform([volume.astype(np.float32)], mask=[mask])
            return fitted.transform(volume, mask=[mask])[0]

        return fit, apply

    methods: dict[str, tuple[Callable, Callable]] = {
        "none": (lambda: None, lambda fitted, volume, *_: volume),
        LANDMARKS: ours("landmarks", "barycenter", standard_range=(0, 100)),
        LANDMARKS_1: ours("landmarks", "barycenter", jobs=1, standard_range=(0, 100)),
        "histmatch_ml per_channel pooled": ours("per_channel", "pooled"),
        "histmatch_ml per_channel barycenter": ours("per_channel", "barycenter"),
        "histmatch_ml exact barycenter": ours("exact", "barycenter"),
        CORRECTED: corrected_exact(),
    }
    try:
        import torchio as tio
    except ImportError:
        tio = None
    if tio is not None:

        def tio_fit():
            return tio.HistogramStandardization.train(
                train_paths, mask_path=train_mask_paths, progress=False
            )

        def tio_apply(fitted, volume, mask, path, mask_path):
            transform = tio.HistogramStandardization({"t1": fitted}, masking_method="brain")
            subject = tio.Subject(t1=tio.ScalarImage(path), brain=tio.LabelMap(mask_path))
            return transform(subject)["t1"].data.numpy()[0]

        methods["TorchIO HistogramStandardization"] = (tio_fit, tio_apply)
    try:
        from intensity_normalization.adapters.images import create_image
        from intensity_normalization.normalizers.population.nyul import NyulNormalizer
    except ImportError:
        NyulNormalizer = None
    if NyulNormalizer is not None:

        def nyul_fit():
            images = [create_image(v) for v in read_float(train_paths)]
            masks = [create_image(m.astype(np.float32)) for m in train_masks]
            return NyulNormalizer().fit_population(images, masks)

        def nyul_apply(fitted, volume, mask, path, mask_path):
            image = create_image(volume.astype(np.float32))
            return np.asarray(
                fitted.transform(image, create_image(mask.astype(np.float32))).get_data()
            )

        methods["intensity-normalization NyulNormalizer"] = (nyul_fit, nyul_apply)
    return methods


def _cohort(templates, seed: int, n_subjects: int, folder: Path) -> tuple[list[dict], list, list]:
    rng = np.random.default_rng(seed)
    subjects = [_subject(templates, rng) for _ in range(n_subjects)]
    paths, mask_paths = [], []
    for i, s in enumerate(subjects):
        paths.append(write_volume(folder / f"seed{seed}-sub-{i:02d}.nii.gz", s["data"]))
        mask_paths.append(
            write_volume(
                folder / f"seed{seed}-sub-{i:02d}_brain.nii.gz", s["brain"].astype(np.uint8)
            )
        )
    return subjects, paths, mask_paths


def main(argv: Sequence[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, fewer repeats")
    parser.add_argument(
        "--zoom", type=float, default=None, help="template zoom (default 1; --quick 0.5)"
    )
    parser.add_argument(
        "--subjects", type=int, default=20, help="subjects per cohort (half train)"
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="cohort seeds (default 5; --quick 1)"
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="timed runs (default 5; --quick 3)"
    )
    parser.add_argument(
        "--n-jobs",
        type=int,
        default=None,
        help="ours: threads reading the files and summarising them (default: 2 or the cores)",
    )
    parser.add_argument(
        "--analysis",
        action="store_true",
        help="also print what bounds the WM CV (parts of the scanner model left out)",
    )
    args = parser.parse_args(argv)
    zoom = args.zoom if args.zoom is not None else (0.5 if args.quick else 1.0)
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 5)
    repeat = args.repeat or (3 if args.quick else 5)
    n_train = min(N_TRAIN, args.subjects // 2)
    n_jobs = args.n_jobs or min(2, os.cpu_count() or 1)
    templates = _templates(zoom)

    quality: dict[str, list[tuple[float, float, float]]] = {}
    times: dict[str, tuple[float, float, int]] = {}
    analysis: dict[str, list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            subjects, paths, mask_paths = _cohort(templates, seed, args.subjects, Path(tmp))
            train, test = slice(0, n_train), slice(n_train, None)
            train_masks = [s["brain"] for s in subjects[train]]
            methods = _methods(paths[train], train_masks, mask_paths[train], n_jobs)
            for name, (fit, apply) in methods.items():
                fitted = fit()
                outputs = [
                    apply(fitted, s["data"], s["brain"], p, mp)
                    for s, p, mp in zip(subjects[test], paths[test], mask_paths[test])
                ]
                quality.setdefault(name, []).append(_quality(outputs, subjects[test]))
            if args.analysis:
                for name, q in _analysis(subjects, n_train).items():
                    analysis.setdefault(name, []).append(q)
            if seed == 0:  # times and memory on the first cohort, interleaved
                fitted = {name: fit() for name, (fit, _) in methods.items()}
                s, p, mp = subjects[test][0], paths[test][0], mask_paths[test][0]
                fits = interleaved_medians(
                    {n: f for n, (f, _) in methods.items() if n != "none"},
                    repeat=repeat,
                    warmup=min(1, repeat - 1),
                )
                applies = interleaved_medians(
                    {
                        n: (
                            lambda a=a, f=fitted[n], s=s, p=p, mp=mp: a(
                                f, s["data"], s["brain"], p, mp
                            )
                        )
                        for n, (_, a) in methods.items()
                        if n != "none"
                    },
                    repeat=repeat,
                    warmup=min(1, repeat - 1),
                )
                for n, (f, _) in methods.items():
                    if n != "none":
                        times[n] = (fits[n], applies[n], peak_bytes(f))
                shape = subjects[0]["data"].shape

    medians = {n: np.median(np.array(q), axis=0) for n, q in quality.items()}
    table = Table(
        "method",
        "WM CV",
        "GM CV",
        "foreground JSD",
        f"fit, {n_train} volumes",
        "transform / volume",
        "fit peak memory",
        "target",
    )
    report = Report(table)
    tio_name = "TorchIO HistogramStandardization"
    ours = [n for n in medians if n.startswith("histmatch_ml") and n != LANDMARKS_1]
    best = min(ours, key=lambda n: medians[n][0])
    for name, (wm, gm, jsd) in medians.items():
        fit_t, apply_t, peak = times.get(name, (None, None, None))
        target = None
        if tio_name in medians:
            t_wm, _, t_jsd = medians[tio_name]
            speedup = None if fit_t is None else times[tio_name][0] / fit_t
            if name == LANDMARKS:
                verdicts = {
                    "WM CV <= TorchIO": wm <= t_wm,
                    "JSD <= TorchIO": jsd <= t_jsd,
                    f"fit {speedup or 0:.2f}x faster than TorchIO, n_jobs={n_jobs} "
                    f"(>= {FIT_SPEED_TARGET:.0f}x)": (
                        speedup is not None and speedup >= FIT_SPEED_TARGET
                    ),
                }
                report.verdicts.update({f"landmarks {k}": v for k, v in verdicts.items()})
                target = "; ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in verdicts.items())
            elif name == LANDMARKS_1:  # the kernel alone: one thread
                target = f"fit {speedup or 0:.2f}x faster than TorchIO, one thread"
            elif name == best:
                verdicts = {
                    f"best WM CV {wm / t_wm:.2f}x TorchIO (<= {CV_TARGET})": wm
                    <= CV_TARGET * t_wm,
                    f"its JSD {jsd / t_jsd:.2f}x TorchIO (<= {JSD_TARGET})": jsd
                    <= JSD_TARGET * t_jsd,
                }
                report.verdicts.update(verdicts)
                target = "; ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in verdicts.items())
        table.row(
            name,
            f"{wm:.4f}",
            f"{gm:.4f}",
            f"{jsd:.4f}",
            fit_t,
            apply_t,
            None if peak is None else f"{peak / 2**20:.1f} MiB",
            target,
        )
    print(
        f"{args.subjects} subjects per cohort ({n_train} train), volumes about "
        f"{shape[0]}x{shape[1]}x{shape[2]}; quality: medians over {seeds} cohort seed(s); "
        f"times: medians of {repeat} interleaved runs on seed 0; ours read and summarise "
        f"with n_jobs={n_jobs} threads unless the row says otherwise (TorchIO's train and "
        f"intensity-normalization: one thread); {machine()}\n"
    )
    print(table.markdown())
    if args.analysis:
        bounds = Table("input", "WM CV", "GM CV", "foreground JSD")
        for name, q in analysis.items():
            bounds.row(name, *(f"{v:.4f}" for v in np.median(np.array(q), axis=0)))
        print(f"\nWhat bounds the WM CV (medians over {seeds} seed(s)):\n")
        print(bounds.markdown())
    return report


if __name__ == "__main__":
    main()
