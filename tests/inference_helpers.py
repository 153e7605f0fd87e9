"""Helpers for the batch-inference tests: a trained phantom model and a PACS-like DICOM tree."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom

from dicom_helpers import make_slice, save_dataset, synthetic_volume, write_series

SAGITTAL_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
AXIAL_IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

# the phantom model used by the inference tests: 128 px slices, 8-wide stages
PHANTOM_SIZE = 128
PHANTOM_MODEL = {"spatial_size": PHANTOM_SIZE, "width": 8}
PHANTOM_SHAPE = (PHANTOM_SIZE, PHANTOM_SIZE, 16)


def train_phantom_model(work: Path, cases: int = 32, epochs: int = 40) -> Path:
    """Train the bundle (cpu preset, small input) on a phantom; returns the checkpoint path."""
    from kneeseg.phantom import generate_phantom
    from kneeseg.workflows import default_bundle_dir, run_workflow

    data = work / "phantom"
    generate_phantom(data, cases=cases, seed=0, shape=PHANTOM_SHAPE, png_negatives=1)
    overrides = dict(
        PHANTOM_MODEL, batch_size=8, val_interval=10_000, num_workers=0, max_epochs=epochs,
        lr_drop_epoch=int(epochs * 0.75), bundle_root=str(default_bundle_dir()), dataset_dir=str(data),
        ckpt_dir=str(work / "models"), output_dir=str(work / "runs"),
    )  # fmt: skip
    run_workflow("train", preset="cpu", data="phantom", overrides=overrides)
    ckpt = work / "models" / "last.pt"
    assert ckpt.is_file(), f"training wrote no checkpoint in {work / 'models'}"
    return ckpt


def _link_tree(src: Path, dst: Path) -> None:
    """Symlink every file of ``src`` under ``dst`` (shared data is never copied)."""
    for path in sorted(src.rglob("*")):
        if path.is_file():
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path.resolve(), target)


def build_pacs_tree(root: Path, shared: Path | None, phantom_cases: int = 4, seed: int = 11) -> dict[str, object]:
    """A folder tree like a PACS export; returns what each part should produce.

    - ``phantom/``: ``phantom_cases`` unseen phantom cases (one patient each), sagittal MR;
    - ``dess/``, ``mese/``: the shared knee DESS series and multi-echo T2 series (symlinks);
    - ``ct/``: one CT image (non-MR, skipped);
    - ``axial/``: an axial MR series (other plane, skipped);
    - ``corrupt/``: a series with one truncated file (file row failed; the volume has a gap);
    - ``undecodable/``: a series whose pixel data cannot be decoded (fails while loading);
    - ``missing/``: a series with a slice missing (failed);
    - ``notes/README.txt``: a non-DICOM file (skipped).
    """
    from kneeseg.phantom import generate_phantom

    root.mkdir(parents=True, exist_ok=True)
    ph = root.parent / f"{root.name}_phantom_src"
    generate_phantom(ph, cases=phantom_cases, seed=seed, shape=PHANTOM_SHAPE, png=False)
    dataset = json.loads((ph / "dataset.json").read_text())
    entries = dataset["training"] + dataset["validation"] + dataset["test"]
    phantom: dict[str, dict[str, str]] = {}
    for e in entries:
        case = Path(e["dicom"]).name
        shutil.copytree(ph / e["dicom"], root / "phantom" / case)
        phantom[case] = {"label": str(ph / e["label"]), "image": str(ph / e["image"])}
    if shared is not None:
        _link_tree(shared / "dicom" / "knee-dess-sag", root / "dess")
        _link_tree(shared / "dicom" / "knee-mese-t2", root / "mese")

    vol = synthetic_volume(rows=32, columns=32, slices=6, seed=3)
    ct = make_slice(vol[0], (0.0, 0.0, 0.0), orientation=AXIAL_IOP, series_uid=pydicom.uid.generate_uid(),
                    study_uid=pydicom.uid.generate_uid())  # fmt: skip
    ct.Modality = "CT"
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    ct.RescaleSlope, ct.RescaleIntercept = 1, -1024
    save_dataset(ct, root / "ct" / "CT0001.dcm")

    write_series(root / "axial", vol, orientation=AXIAL_IOP, series_description="AX PD")
    corrupt = write_series(root / "corrupt", vol, orientation=SAGITTAL_IOP, series_description="SAG corrupt")
    data = corrupt[2].read_bytes()
    corrupt[2].write_bytes(data[: len(data) - 700])  # cut into the pixel data
    undecodable = write_series(root / "undecodable", vol, orientation=SAGITTAL_IOP, series_description="SAG undecodable")
    for path in undecodable:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8 not a jpeg stream \xff\xd9"])
        ds["PixelData"].VR = "OB"
        save_dataset(ds, path)
    missing = write_series(root / "missing", vol, orientation=SAGITTAL_IOP, series_description="SAG missing slice")
    missing[3].unlink()
    (root / "notes").mkdir()
    (root / "notes" / "README.txt").write_text("exported by a PACS\n")
    return {"phantom": phantom, "phantom_src": ph}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


# the 8 in-plane layouts of a sagittal slice, as (right, down) of the stored DICOM image
SAGITTAL_LAYOUTS = {
    "standard": "PI",  # anterior left, superior up: ImageOrientationPatient [0,1,0, 0,0,-1]
    "anterior_right": "AI",  # [0,-1,0, 0,0,-1]
    "png_layout": "IP",  # superior left, anterior up: the knee-acl PNGs
    "transposed": "SA",  # superior right, posterior up
    "upside_down": "PS",
    "rotated_180": "AS",
    "png_flipped_rows": "IA",
    "png_flipped_columns": "SP",
}


def write_oriented_series(folder: Path, image_hw: np.ndarray, declared: str, layout: str, **kwargs) -> Path:
    """:func:`kneeseg.data.slice_series.write_slice_series` into ``folder``; returns the folder."""
    from kneeseg.data.slice_series import write_slice_series

    write_slice_series(folder, image_hw, declared, layout, **kwargs)
    return folder


def untrained_model(path: Path, width: int = 4, seed: int = 0, foreground: float = 0.34) -> Path:
    """Save an untrained bundle network (csam_unet) whose output bias is set so that about
    ``foreground`` of a smooth image comes out as class 1: an irregular mask with several parts,
    which exposes any orientation or post-processing difference between two paths."""
    import torch

    from kneeseg.networks import build_network

    torch.manual_seed(seed)
    net = build_network("csam_unet", spatial_dims=2, in_channels=1, out_channels=2, width=width).eval()
    last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == 2][-1]
    x = torch.linspace(0, 1, 64 * 64).reshape(1, 1, 64, 64) ** 2
    with torch.no_grad():
        logits = net(x)
        diff = (logits[:, 1] - logits[:, 0]).flatten()
        last.bias[1] -= float(diff.quantile(1.0 - foreground))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": net.state_dict()}, path)
    return path


def output_snapshot(out: Path) -> dict[str, object]:
    """Everything a batch run leaves for its user, for comparing two runs byte by byte.

    Files are compared by bytes, DICOM SEGs by their bytes with the attributes that record when
    the file was written blanked (Instance Creation and Content Date/Time, Contribution DateTime:
    a rerun cannot know them), and manifest rows without ``seconds``.
    """
    import io

    from kneeseg.inference.results import read_results_csv

    files: dict[str, object] = {}
    for p in sorted(out.rglob("*")):
        if not p.is_file() or ".kneeseg" in p.parts or p.name == "manifest.csv":
            continue
        if p.suffix == ".dcm":
            ds = pydicom.dcmread(p)
            write_time = {"ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime",
                          "ContributionDateTime"}  # fmt: skip

            def blank(dataset, element):  # at any depth, e.g. ContributingEquipmentSequence
                if element.keyword in write_time:
                    element.value = ""

            ds.walk(blank)
            buf = io.BytesIO()
            ds.save_as(buf)
            files[p.relative_to(out).as_posix()] = buf.getvalue()
        else:
            files[p.relative_to(out).as_posix()] = p.read_bytes()
    rows = [{k: v for k, v in r.items() if k != "seconds"} for r in read_results_csv(out / "manifest.csv")]
    return {"files": files, "rows": rows}


def smooth_knee_series(root: Path, seed: int, slices: int = 4) -> Path:
    """A knee-like sagittal series under ``root/in/knee`` (smooth blobs, so that masks have
    several components), stored in the standard sagittal layout; returns ``root/in``."""
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random((72, 80)), 3)
    img = ((img - img.min()) / np.ptp(img) * 800).astype(np.uint16)
    write_oriented_series(root / "in" / "knee", img, "IP", "PI", slices=slices)
    return root / "in"


def run_bundle_inference(bundle: Path, series: Path, out: Path, *args: str) -> Path:
    """``python -m monai.bundle run inferring`` with the bundle's ``inference.json`` on the first file
    of ``series`` at the tiny test network (width 4, 64 px) plus ``args``; returns the one mask written."""
    import subprocess
    import sys

    datalist = out.parent / f"{out.name}_datalist.json"
    datalist.write_text(json.dumps({"test": [{"image": str(next(series.iterdir()))}]}))
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "inferring",
        "--meta_file", str(bundle / "configs" / "metadata.json"),
        "--config_file", str(bundle / "configs" / "inference.json"), "--bundle_root", str(bundle),
        "--output_dir", str(out), "--dataset_dir", "/", "--data_list_file_path", str(datalist),
        "--width", "4", "--spatial_size", "64", *args,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob("*_seg.nii*")
    return path
