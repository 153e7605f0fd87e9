"""Draw the figures of docs/data.md from the real code paths.

    python docs/scripts/data_figures.py                 # both figures -> docs/figures/
    python docs/scripts/data_figures.py --round-trip    # also print the ACL round-trip Dice table

1. ``phantom_slices.png``: a small phantom generated with :func:`kneeseg.phantom.generate_phantom`
   in a temporary folder, read back from its DICOM series (:func:`kneeseg.data.load_series`)
   and label NIfTI files, shown as sagittal slices with the label overlay.
2. ``preprocessing_real_case.png``: one real Knee MRI ACL Dataset case (CEMRR/Knee-ACL-Tear-
   Segmentation, Zenodo DOI 10.5281/zenodo.18054534) taken through the steps of
   :func:`kneeseg.transforms.eval_transforms` one by one, then inverted.

Real data is read from ``$KNEESEG_SHARED_DATA`` or ``../shared/data`` (relative to the
repository root); it is never copied, only the rendered figure is written.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from kneeseg.data import load_series  # noqa: E402
from kneeseg.phantom import PHANTOM_LABELS, generate_phantom  # noqa: E402
from kneeseg.transforms import HistogramEqualized, eval_transforms, load_label  # noqa: E402

# MONAI logs "nvImageCodec is not available" for every LoadImaged it builds on a CPU machine
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)

FIGURES = REPO / "docs" / "figures"
PHANTOM_SEED = 45  # its first three cases have the three contrasts: PD, fat-suppressed PD, T1
PHANTOM_CASES = 3
ACL_CASE = "86"  # a val.txt case of 352 x 384 pixels (W x H): non-square
LABEL_COLOURS = {1: "#1f77b4", 2: "#2ca02c", 3: "#ff7f0e", 4: "#e3008c"}  # femur, tibia, patella, ligament
CONTRAST_NAMES = {"pd": "PD", "t1": "T1", "pd_fs": "fat-suppressed PD"}


def shared_data_root() -> Path:
    env = os.environ.get("KNEESEG_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def save_figure(fig: plt.Figure, path: Path, dpi: int = 100) -> None:
    """Save as an 8-bit palette PNG (octree quantisation keeps the few overlay colours exact and
    the file a third of the RGB size)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    plt.close(fig)
    buf.seek(0)
    img = Image.open(buf).convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")


# ----------------------------------------------------------------------------- phantom


def _dicom_view(volume: np.ndarray, k: int) -> np.ndarray:
    """Slice ``k`` of a ``(columns, rows, slices)`` array as stored in DICOM: ``(rows, columns)``.

    For the phantom (ImageOrientationPatient 0/1/0/0/0/-1) that puts superior at the top and
    anterior on the left, the usual sagittal display.
    """
    return volume[:, ::-1, k].T


def phantom_figure(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="kneeseg-phantom-fig-") as tmp:
        datalist = generate_phantom(tmp, cases=PHANTOM_CASES, seed=PHANTOM_SEED, png=False)
        root = datalist.parent
        meta = json.loads(datalist.read_text())
        entries = sorted(
            (e for key in ("training", "validation", "test") for e in meta.get(key, [])), key=lambda e: e["case"]
        )
        cases = []
        for e in entries:
            image, image_meta = load_series(root / e["dicom"])  # the DICOM path, as a user would read it
            label = np.asarray(nib.load(root / e["label"]).dataobj)
            assert image.shape == label.shape, (image.shape, label.shape)
            cases.append((e["case"], e["contrast"], image, label, image_meta["spacing"]))

    n_cols = 5
    fig, axes = plt.subplots(len(cases), n_cols, figsize=(2.45 * n_cols, 2.7 * len(cases) + 0.7))
    cmap = ListedColormap(["none"] + [LABEL_COLOURS[i] for i in (1, 2, 3, 4)])
    for row, (case_id, contrast, image, label, spacing) in enumerate(cases):
        lig = np.flatnonzero((label == 4).any(axis=(0, 1)))
        centre = int(lig[np.argmax([(label[:, :, k] == 4).sum() for k in lig])])
        picks = [
            (max(0, int(lig[0]) - 8), "8 before the ligament"),
            (int(lig[0]), "first ligament slice"),
            (centre, "widest ligament slice"),
            (int(lig[-1]), "last ligament slice"),
            (min(image.shape[2] - 1, int(lig[-1]) + 8), "8 after the ligament"),
        ]
        lo, hi = np.percentile(image, [0.5, 99.5])
        for col, (k, what) in enumerate(picks):
            ax = axes[row, col]
            ax.imshow(_dicom_view(image, k), cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            lab = _dicom_view(label, k).astype(float)
            ax.imshow(np.ma.masked_equal(lab, 0), cmap=cmap, vmin=0, vmax=4, alpha=0.45, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"slice {k}: {what}", fontsize=8, pad=3)
            if col == 0:
                ax.set_ylabel(f"{case_id}\n{CONTRAST_NAMES[contrast]}", fontsize=9)
    handles = [Patch(facecolor=LABEL_COLOURS[i], alpha=0.6, label=f"{i} {PHANTOM_LABELS[i].replace('_', ' ')}") for i in (1, 2, 3, 4)]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=9, frameon=False)
    sx, sy, sz = cases[0][4]
    fig.suptitle(
        f"kneeseg phantom (seed {PHANTOM_SEED}, default size 256 x 256 x 40, {sx:.3f} x {sy:.3f} x {sz:.1f} mm): "
        "sagittal slices read from the DICOM series, superior up, anterior left",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.045, 1, 0.97))
    save_figure(fig, out)


# ----------------------------------------------------------------------------- real ACL case


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _np(x) -> np.ndarray:
    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)[0]


def preprocessing_figure(out: Path, shared: Path) -> None:
    case_dir = shared / "knee-acl" / "cases" / ACL_CASE
    data = {"image": str(case_dir / "img.png"), "label": str(case_dir / "mask.png")}
    chain = eval_transforms(spatial_size=512)
    # apply the eval chain's transforms one at a time (the same transforms, in the same order, as
    # chain(data)) and keep the image after each step
    snaps: dict[str, np.ndarray] = {}
    d = dict(data)
    for xform in chain.transforms:
        d = xform(d)
        snaps[type(xform).__name__] = _np(d["image"])
        if type(xform).__name__ == "LoadImaged" and "label" in d and not isinstance(d["label"], str):
            snaps["label"] = _np(d["label"])
        if type(xform).__name__ == "SmoothPlanesd":
            smoothed = {"image": d["image"].clone()}
    names = [type(x).__name__ for x in chain.transforms]
    expected = ["ScalePercentilesd", "SmoothPlanesd", "HistogramEqualized", "ResizeLongestSided", "SpatialPadd"]
    assert all(n in names for n in expected), names
    processed_label = _np(d["label"])
    original_image, original_label = snaps["LoadImaged"], snaps["label"]
    global_eq = _np(HistogramEqualized("image", method="global")(smoothed)["image"])
    back = chain.inverse(d)
    inverted = _np(back["label"])
    assert inverted.shape == original_label.shape, (inverted.shape, original_label.shape)
    dice = _dice(inverted, original_label)
    w, h = original_image.shape  # (W, H): MONAI's 2D convention
    rw, rh = snaps["ResizeLongestSided"].shape  # the size the real resize produced

    def show(ax, img, title, mask=None, colour="#ffd400", vmin=None, vmax=None):
        ax.imshow(img.T, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        if mask is not None:
            ax.contour(mask.T, levels=[0.5], colors=[colour], linewidths=0.9)
        ax.set_title(title, fontsize=8.5)
        ax.set_xticks([])
        ax.set_yticks([])

    fig, axes = plt.subplots(2, 5, figsize=(16.5, 7.4))
    a = axes.ravel()
    show(a[0], original_image, f"original {w} x {h} (W x H), RGBA grey PNG\nACL mask outline", original_label)
    show(a[1], snaps["ResizeLongestSided"], f"1. resize longest side -> {rw} x {rh}\n(anti-aliased bilinear; raw intensities)")
    show(a[2], snaps["ScalePercentilesd"], "2. percentile scaling\n0.5-99.5 % -> [0, 1], clipped", vmin=0, vmax=1)
    show(a[3], snaps["SmoothPlanesd"], "3. Gaussian smoothing\nsigma 0.5 px of the 512 grid", vmin=0, vmax=1)
    show(a[4], snaps["HistogramEqualized"], "4. CLAHE (default)\nclip limit 0.01, 256 bins", vmin=0, vmax=1)
    show(a[5], global_eq, "for comparison: global equalisation\n(paper's literal choice; not the default)", vmin=0, vmax=1)
    show(a[6], snaps["SpatialPadd"], "5. centre pad -> 512 x 512\n(mask resized label-linear, padded)", processed_label,
         vmin=0, vmax=1)  # fmt: skip
    a[9].axis("off")
    # inverted vs original, cropped around the ACL
    ys = np.nonzero(original_label.T > 0)
    r0, r1 = max(0, ys[0].min() - 25), min(h, ys[0].max() + 26)
    c0, c1 = max(0, ys[1].min() - 25), min(w, ys[1].max() + 26)
    crop = (slice(c0, c1), slice(r0, r1))  # (W, H) indexing
    ax = a[7]
    ax.imshow(original_image[crop].T, cmap="gray", interpolation="nearest")
    ax.contour(original_label[crop].T, levels=[0.5], colors=["#ffd400"], linewidths=1.4)
    ax.contour(inverted[crop].T, levels=[0.5], colors=["#00e5ff"], linewidths=1.0, linestyles="--")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"chain.inverse: mask back at {w} x {h} (cyan, dashed)\nvs original (yellow), Dice {dice:.4f}; zoom on the ACL", fontsize=8.5)
    # intensity histograms of the equalisation choices
    ax = a[8]
    bins = np.linspace(0, 1, 65)
    for arr, name, colour in (
        (snaps["SmoothPlanesd"], "after scaling + smoothing", "0.4"),
        (global_eq, "global equalisation", "#d62728"),
        (snaps["HistogramEqualized"], "CLAHE", "#1f77b4"),
    ):
        ax.hist(arr.ravel(), bins=bins, histtype="step", density=True, color=colour, label=name, linewidth=1.3)
    ax.set_xlabel("intensity", fontsize=8)
    ax.set_ylabel("density", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False)
    ax.set_title("intensity histograms", fontsize=8.5)
    fig.suptitle(
        f"Knee MRI ACL Dataset, val case {ACL_CASE} (CEMRR/Knee-ACL-Tear-Segmentation, doi:10.5281/zenodo.18054534): "
        "kneeseg.transforms.eval_transforms(spatial_size=512) step by step, then chain.inverse",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    save_figure(fig, out)
    print(f"case {ACL_CASE}: {w} x {h} -> resized {rw} x {rh} -> padded 512 x 512; round-trip Dice {dice:.4f}")


# ----------------------------------------------------------------------------- round-trip table


def round_trip_table(shared: Path, sizes=(512, 256)) -> None:
    """Mask Dice after preprocess + invert on every ACL case (geometry and label steps only)."""
    root = shared / "knee-acl" / "cases"
    cases = sorted(root.iterdir(), key=lambda p: int(p.name))
    for size in sizes:
        chain = eval_transforms(spatial_size=size, preprocessing={"smooth_sigma": None, "equalization": None})
        dices = []
        for c in cases:
            d = chain({"image": str(c / "img.png"), "label": str(c / "mask.png")})
            orig = load_label()({"label": str(c / "mask.png")})["label"]
            dices.append((_dice(_np(chain.inverse(d)["label"]), _np(orig)), c.name))
        vals = np.array([v for v, _ in dices])
        worst = min(dices)
        print(f"N={size}: {len(vals)} cases, Dice min {vals.min():.4f} (case {worst[1]}), mean {vals.mean():.4f}, "
              f"median {np.median(vals):.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=FIGURES, help="output folder (default: docs/figures)")
    parser.add_argument("--round-trip", action="store_true", help="also print the round-trip Dice on all ACL cases")
    parser.add_argument("--skip-phantom", action="store_true")
    parser.add_argument("--skip-real", action="store_true")
    args = parser.parse_args(argv)
    shared = shared_data_root()
    if not args.skip_phantom:
        phantom_figure(args.out / "phantom_slices.png")
    if not args.skip_real or args.round_trip:
        if not (shared / "knee-acl").is_dir():
            print(f"shared data not found at {shared}; set KNEESEG_SHARED_DATA", file=sys.stderr)
            return 2
    if not args.skip_real:
        preprocessing_figure(args.out / "preprocessing_real_case.png", shared)
    if args.round_trip:
        round_trip_table(shared)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
