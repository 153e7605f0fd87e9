"""The ``kneeseg`` command line. Thin: each sub-command parses its options and calls one
library function (the module named beside it).

    kneeseg data phantom OUT [--cases N] [--seed S] ...        kneeseg.phantom.generate_phantom
        synthetic knee phantom: DICOM series, NIfTI volumes, PNG slices, datalists
    kneeseg data manifest ROOT --out FILE [--image-glob G] ... kneeseg.data.manifest.build_manifest
        patient-grouped, seeded split of a folder of images and masks into a datalist JSON
    kneeseg train [--preset P] [--data D] [--set K=V] ...      kneeseg.workflows.run_workflow("train")
        the bundle's training (python -m monai.bundle run training)
    kneeseg evaluate [--preset P] [--data D] ...               kneeseg.workflows.run_workflow("evaluate")
        a checkpoint on a datalist: per-case CSV, summary JSON, Table-1 style table
    kneeseg infer-datalist [--preset P] [--data D] ...         kneeseg.workflows.run_workflow("infer")
        the bundle's inference config over a datalist (NIfTI out)
    kneeseg infer INPUT -o OUTPUT [--ckpt A.pt [B.pt ...]] ... kneeseg.inference.batch.predict_folder
        every knee MR series under a DICOM folder tree -> NIfTI, DICOM SEG, PNG, manifest.csv
    kneeseg bench table1 [--methods ...] [--seeds ...] ...     kneeseg.experiments.table1.run_table1
        the paper's Table 1: every method x seed trained and evaluated through the bundle
    kneeseg bench cv [--folds K] [--methods ...] ...           kneeseg.experiments.cv.run_cv
        K-fold cross-validation under the convergence rule, every case predicted once
    kneeseg bench ablations ...                                kneeseg.experiments.table1.run_ablations

``kneeseg COMMAND --help`` gives each command's options. ``--set KEY=VALUE`` is read by
:func:`kneeseg.workflows.parse_overrides` everywhere (also by the MONAI Label app).

Adding a command group: write ``_add_<group>_commands(commands)`` that registers parsers on
the top-level sub-parser action and sets ``handler=`` to a function ``(args) -> int``; call
it from :py:func:`build_parser`. Library errors (``ValueError``, ``OSError``) are printed as
``kneeseg: error: ...`` with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from kneeseg import __version__

__all__ = ["build_parser", "main"]

# Every command imports its library inside its handler (and the parsers only the light modules of
# choices and defaults): kneeseg's modules load torch, MONAI, pydicom or matplotlib, and `--help`
# must answer without them (tests/test_cli_help.py).


# ----------------------------------------------------------------------------- data


def _cmd_data_phantom(args: argparse.Namespace) -> int:
    from kneeseg.phantom import generate_phantom

    path = generate_phantom(
        args.out,
        cases=args.cases,
        seed=args.seed,
        shape=tuple(args.shape),
        fov_mm=tuple(args.fov_mm),
        ratios=tuple(args.ratios),
        png=not args.no_png,
        png_negatives=args.png_negatives,
        progress=None if args.quiet else lambda line: print(line, flush=True),
    )
    print(f"wrote {path}")
    return 0


def _parse_labels(items: Sequence[str] | None) -> dict[int, str] | None:
    """``background acl`` -> {0: background, 1: acl}; ``0=background 255=acl`` also accepted."""
    if not items:
        return None
    labels: dict[int, str] = {}
    for i, item in enumerate(items):
        key, sep, name = item.partition("=")
        if sep:
            if not key.strip().isdigit():
                raise ValueError(f"--labels: {item!r} is not ID=NAME with an integer ID")
            labels[int(key)] = name
        else:
            labels[i] = item
    return labels


def _key_values(items: Sequence[str] | None, option: str, example: str, value: Any = str) -> dict[str, Any] | None:
    """``["training=train.txt"]`` -> ``{"training": value("train.txt")}`` for options whose values are
    typed by the option (files, counts), unlike ``--set``; a clear error names the option."""
    if not items:
        return None
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        try:
            if not sep or not key or not raw:
                raise ValueError
            out[key] = value(raw)
        except ValueError:
            raise ValueError(f"{option} expects {example}, got {item!r}") from None
    return out


def _count(text: str) -> int:
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


def _cmd_data_manifest(args: argparse.Namespace) -> int:
    from kneeseg.data.manifest import build_manifest, write_manifest

    manifest = build_manifest(
        args.root,
        image_glob=args.image_glob,
        mask_glob=args.mask_glob or None,
        patient_key=args.patient_key,
        ratios=tuple(args.ratios),
        seed=args.seed,
        split_keys=tuple(args.split_keys),
        id_lists=_key_values(args.id_list, "--id-list", "KEY=FILE (e.g. training=train.txt)"),
        name=args.name,
        description=args.description,
        reference=args.reference,
        labels=_parse_labels(args.labels),
        image_orientation=args.image_orientation,
        hold_out=_key_values(args.hold_out, "--hold-out", "KEY=N (e.g. training=9)", _count),
        folds=args.folds,
    )
    path = write_manifest(manifest, args.out)
    parts = ", ".join(f"{k} {len(manifest[k])}" for k in manifest if isinstance(manifest[k], list))
    print(f"wrote {path}: {parts}")
    return 0


def _add_data_commands(commands: Any) -> None:
    from kneeseg.data.manifest import (
        DEFAULT_IMAGE_GLOB,
        DEFAULT_MASK_GLOB,
        DEFAULT_SPLIT_KEYS,
    )
    from kneeseg.phantom import DEFAULT_FOV_MM, DEFAULT_SHAPE
    from kneeseg.data.splits import DEFAULT_RATIOS

    data = commands.add_parser("data", help="generate and describe datasets", description="Generate and describe datasets.")
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    ph = sub.add_parser(
        "phantom",
        help="generate the synthetic knee phantom dataset",
        description="Generate the synthetic knee phantom: per case a DICOM series, NIfTI image + labels, "
        "PNG slices, and MSD datalists (dataset.json, dataset_2d.json). Labels: 0 background, 1 femur, "
        "2 tibia, 3 patella, 4 patellar ligament.",
    )
    ph.add_argument("out", help="output folder")
    ph.add_argument("--cases", type=int, default=10, help="number of cases (default: 10)")
    ph.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    ph.add_argument(
        "--shape", type=int, nargs=3, default=list(DEFAULT_SHAPE), metavar=("COLS", "ROWS", "SLICES"),
        help="case size (default: %(default)s)",
    )
    ph.add_argument(
        "--fov-mm", type=float, nargs=3, default=list(DEFAULT_FOV_MM), metavar=("COLS", "ROWS", "SLICES"),
        help="field of view in mm (default: %(default)s)",
    )
    ph.add_argument(
        "--ratios", type=float, nargs=3, default=list(DEFAULT_RATIOS), metavar=("TRAIN", "VAL", "TEST"),
        help="case split ratios (default: 8 1 1)",
    )
    ph.add_argument("--no-png", action="store_true", help="skip the PNG slices and dataset_2d.json")
    ph.add_argument("--png-negatives", type=int, default=3, help="PNG slices without ligament per case (default: 3)")
    ph.add_argument("--quiet", action="store_true", help="no per-case progress lines")
    ph.set_defaults(handler=_cmd_data_phantom)

    mf = sub.add_parser(
        "manifest",
        help="write an MSD-style datalist with a seeded, patient-grouped split",
        description="Write an MSD-style datalist (JSON) for the images under ROOT with a seeded random "
        "split that keeps each patient's images in one part. Paths are relative to ROOT: load with "
        "monai.data.load_decathlon_datalist(FILE, data_list_key=..., base_dir=ROOT).",
    )
    mf.add_argument("root", help="dataset root folder")
    mf.add_argument("--out", required=True, help="output JSON file")
    mf.add_argument("--image-glob", default=DEFAULT_IMAGE_GLOB, help="root-relative image glob (default: %(default)s)")
    mf.add_argument(
        "--mask-glob", default=DEFAULT_MASK_GLOB,
        help="root-relative mask glob with the same wildcards as --image-glob; '' for no masks (default: %(default)s)",
    )
    mf.add_argument(
        "--patient-key", default=None,
        help="regex on the image path whose first group is the patient id, or dicom:KEYWORD to read a DICOM "
        "attribute (e.g. dicom:PatientID); default: each image is its own patient",
    )
    mf.add_argument(
        "--ratios", type=float, nargs="+", default=list(DEFAULT_RATIOS), metavar="R",
        help="split ratios, one per split key (default: 8 1 1)",
    )
    mf.add_argument("--seed", type=int, default=0, help="split seed (default: 0)")
    mf.add_argument(
        "--split-keys", nargs="+", default=list(DEFAULT_SPLIT_KEYS), metavar="KEY",
        help="datalist keys of the split parts (default: training validation test)",
    )
    mf.add_argument(
        "--id-list", action="append", metavar="KEY=FILE",
        help="also store a predefined split: entries whose patient id is listed in FILE (relative to ROOT) "
        "go under KEY; repeatable",
    )
    mf.add_argument("--name", help="dataset name (MSD 'name')")
    mf.add_argument("--description", help="dataset description (MSD 'description')")
    mf.add_argument("--reference", help="dataset source / citation (MSD 'reference')")
    mf.add_argument("--labels", nargs="+", metavar="NAME", help="class names in id order, or ID=NAME items")
    mf.add_argument(
        "--hold-out", action="append", metavar="KEY=N",
        help="split part KEY once more (seeded) into KEY_fit and KEY_holdout with N patients, e.g. to choose "
        "checkpoints on cases neither trained nor tested on; repeatable",
    )
    mf.add_argument(
        "--folds", type=int, default=0, metavar="K",
        help="also a patient-grouped, seeded K-fold partition of all cases (parts fold_0 .. fold_<K-1> and a "
        "'folds' record) for kneeseg bench table1 --cv K",
    )  # fmt: skip
    mf.add_argument(
        "--image-orientation", metavar="RD",
        help="2D images: where their columns (right) and rows (down) point in the patient, as two letters "
        "of L R A P S I, e.g. IP for sagittal slices with superior left and anterior at the top (knee-acl)",
    )
    mf.set_defaults(handler=_cmd_data_manifest)


# ----------------------------------------------------------------------------- entry point


# ----------------------------------------------------------------------------- bundle workflows
#: where ``kneeseg train|evaluate|infer-datalist`` write when not told: folders of the current
#: directory, never the installed package
DEFAULT_DIRS = {"train": ("models", "runs"), "evaluate": ("models", "eval"), "infer": ("models", "predictions")}


def _cmd_workflow(args: argparse.Namespace) -> int:
    from kneeseg.workflows import (
        TrainingStopped,
        cause_of,
        check_override_keys,
        decide_resume,
        model_overrides,
        parse_overrides,
        run_workflow,
        signals_stop_training,
        workflow_config_files,
    )

    overrides = parse_overrides(args.set or [])
    files = workflow_config_files(args.workflow, args.bundle, args.preset, args.data, args.config or ())
    check_override_keys(files, overrides)
    ckpt_default, out_default = DEFAULT_DIRS[args.workflow]
    for key in ("dataset_dir", "ckpt_dir", "output_dir"):
        value = getattr(args, key, None)
        if value:
            overrides[key] = value
    overrides.setdefault("ckpt_dir", ckpt_default)
    overrides.setdefault("output_dir", out_default)
    if getattr(args, "overwrite", False):
        overrides["overwrite"] = True
    if args.workflow == "train":
        decide_resume(overrides, resume=args.resume, fresh=args.fresh)
    else:  # evaluate, infer-datalist: the model's own record (model.json) rebuilds the model it describes
        overrides = model_overrides(overrides["ckpt_dir"], overrides)
    try:
        with signals_stop_training(args.workflow == "train"):
            run_workflow(
                args.workflow, bundle=args.bundle, preset=args.preset, data=args.data,
                extra_configs=args.config or (), overrides=overrides,
            )  # fmt: skip
    except Exception as exc:  # MONAI's config evaluation wraps errors in RuntimeError("Failed to evaluate ...")
        stop = cause_of(exc, TrainingStopped)
        if stop is None:
            reason = cause_of(exc, (ValueError, OSError))  # a bad input or setting, as the transform said it
            if reason is not None and reason is not exc:
                raise reason from None  # one "kneeseg: error:" line, not MONAI's chain of config evaluations
            raise
        print(f"kneeseg: training interrupted ({stop}); {Path(overrides['ckpt_dir']) / 'last.pt'} holds the last "
              "finished epoch: rerun the same command with --resume to continue", file=sys.stderr)  # fmt: skip
        return 130
    if args.workflow == "train":
        from kneeseg.workflows import training_summary

        print("\n".join(training_summary(overrides["ckpt_dir"], overrides["output_dir"])))
    if args.workflow == "infer":  # the batch carried on past bad images; say so, and fail the command
        from kneeseg.execution.datasets import FAILURES_CSV

        failures = Path(overrides["output_dir"]) / FAILURES_CSV
        if failures.is_file():
            import csv

            with open(failures, newline="") as fh:
                rows = list(csv.DictReader(fh))
            for row in rows:
                print(f"kneeseg: skipped {row['error']}", file=sys.stderr)
            print(f"kneeseg: {len(rows)} image(s) could not be predicted, listed in {failures}; the others were", file=sys.stderr)
            return 1
    return 0


def _add_workflow_commands(commands: Any) -> None:
    specs = [
        ("train", "train", "train the bundle's network (python -m monai.bundle run training)"),
        ("evaluate", "evaluate", "evaluate a checkpoint on a datalist: per-case CSV, summary JSON, Table-1 style table"),
        ("infer-datalist", "infer", "run the bundle's inference config on a datalist (slice-wise, NIfTI out)"),
    ]
    for name, workflow, text in specs:
        ckpt_default, out_default = DEFAULT_DIRS[workflow]
        p = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("--bundle", default=None, help="bundle folder (default: the bundle shipped with kneeseg)")
        p.add_argument("--preset", default=None, help="preset override: cpu (24 epochs), cpu_converged (early stopping, the CV's rule), paper, or a JSON file")
        p.add_argument("--data", default=None, help="data config: phantom, knee_acl, or a JSON file")
        p.add_argument("--config", action="append", help="extra override JSON file (repeatable; later wins)")
        p.add_argument("--dataset-dir", dest="dataset_dir", default=None, help="dataset root (overrides dataset_dir)")
        p.add_argument(
            "--model", "--ckpt-dir", "--ckpt", dest="ckpt_dir", default=None, metavar="MODEL_DIR",
            help=f"model folder: model.pt, model.json, last.pt (default: ./{ckpt_default}; "
            "--ckpt-dir and --ckpt are the same option)",
        )  # fmt: skip
        p.add_argument("--output-dir", dest="output_dir", default=None,
                       help=f"output folder (default: ./{out_default})")  # fmt: skip
        p.add_argument(
            "--set", action="append", metavar="KEY=VALUE",
            help="any bundle config override, e.g. --set max_epochs=2 --set amp=false (repeatable; unknown keys are refused)",
        )  # fmt: skip
        if workflow == "infer":
            p.add_argument("--overwrite", action="store_true",
                           help="predict images whose mask exists again (default: a rerun skips them; failures, in "
                                "OUTPUT_DIR/failures.csv, are retried)")  # fmt: skip
        if workflow == "train":
            p.add_argument("--resume", action="store_true",
                           help="continue the run in MODEL_DIR/last.pt (exactly: same losses as without the stop)")  # fmt: skip
            p.add_argument("--fresh", action="store_true",
                           help="start a new run over an earlier one (its model.pt is kept aside)")  # fmt: skip
        p.set_defaults(handler=_cmd_workflow, workflow=workflow)


# ----------------------------------------------------------------------------- batch inference
def _cmd_infer(args: argparse.Namespace) -> int:
    from kneeseg.inference.batch import Interrupted, predict_folder
    from kneeseg.workflows import parse_overrides

    echo: Any = args.echo if args.echo == "all" else int(args.echo)
    try:
        result = _predict(args, predict_folder, parse_overrides, echo)
    except Interrupted as stop:
        print(f"kneeseg: {stop}", file=sys.stderr)
        return 130
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.counts.items()))
    print(f"{result.manifest}: {counts}")
    return result.exit_code


def _predict(args: argparse.Namespace, predict_folder: Any, parse_overrides: Any, echo: Any) -> Any:
    from kneeseg.workflows import check_override_keys, workflow_config_files

    overrides = parse_overrides(args.set or [])
    check_override_keys(workflow_config_files("infer", args.bundle, args.preset), overrides)
    ckpt = args.ckpt
    if ckpt is None and (Path("models") / "model.pt").is_file():  # where `kneeseg train` writes by default
        ckpt = ["models"]
    return predict_folder(
        args.input, args.output, bundle=args.bundle, ckpt=(ckpt[0] if ckpt and len(ckpt) == 1 else ckpt),
        preset=args.preset,
        overrides=overrides, runtime=args.runtime, device=args.device,
        formats=args.formats, series_filter=args.series_filter, any_plane=args.any_plane, echo=echo,
        any_body_part=args.any_body_part, overwrite=args.overwrite, slice_batch=args.slice_batch,
        progress=(lambda line: None) if args.quiet else None,
    )  # fmt: skip


def _add_infer_command(commands: Any) -> None:
    from kneeseg.execution.choices import RUNTIMES
    from kneeseg.inference.outputs import FORMATS

    p = commands.add_parser(
        "infer",
        help="segment every knee MR series under a DICOM folder tree (NIfTI, DICOM SEG, PNG, manifest.csv)",
        description="Segment every knee MR series found under INPUT (searched recursively; broken, non-MR, "
        "other-plane, other-body-part, MOSAIC and diffusion series are recorded and skipped) slice by slice, and write per series a NIfTI label map, "
        "a DICOM Segmentation and a PNG preview under OUTPUT, plus OUTPUT/manifest.csv. Reruns resume. "
        "Exit status: 0 all ok or skipped, 1 some series failed, 2 usage error. Under torchrun the ranks "
        "share the series and rank 0 writes one manifest.",
    )
    p.add_argument("input", help="folder with DICOM files (any depth)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--bundle", default=None, help="bundle folder (default: the bundle shipped with kneeseg)")
    p.add_argument(
        "--model", "--ckpt", "--ckpt-dir", dest="ckpt", nargs="+", default=None, metavar="MODEL",
        help="model folder (as training writes it: model.pt + model.json) or checkpoint file (default: ./models "
        "when it holds a model.pt, else <bundle>/models/model.pt); several (e.g. the folds of a "
        "cross-validation) make an ensemble that averages their softmax before the argmax; "
        "--ckpt and --ckpt-dir are the same option",
    )  # fmt: skip
    p.add_argument("--preset", default=None, help="bundle preset the checkpoint was trained with (cpu, cpu_converged, paper, JSON)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="bundle config override (repeatable)")
    p.add_argument(
        "--runtime", choices=RUNTIMES, default="auto",
        help="network runtime (default: auto: on CUDA eager or bf16, on CPUs with native bf16 bf16 or onnx, "
        "whichever measures faster; else onnx when ONNX Runtime is installed, else eager; printed and in the manifest)",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:i] (default: %(default)s)")
    p.add_argument(
        "--formats", nargs="+", choices=FORMATS, default=list(FORMATS),
        help="outputs per series (default: all: nifti seg png)",
    )  # fmt: skip
    p.add_argument("--series-filter", default=None, metavar="REGEX", help="only series whose description matches")
    p.add_argument("--any-plane", action="store_true", help="also segment series outside the model's plane")
    p.add_argument(
        "--any-body-part", action="store_true",
        help="also segment series whose BodyPartExamined/description names another body part than the bundle's",
    )
    p.add_argument("--echo", default="0", help="echo index of multi-echo series, or 'all' (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="redo series finished by an earlier run")
    p.add_argument("--slice-batch", type=int, default=None, help="slices per forward pass (default: bundle's)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=_cmd_infer)


# ----------------------------------------------------------------------------- benchmarks
def _add_bench_commands(commands: Any) -> None:
    from kneeseg.experiments.command import add_commands

    bench = commands.add_parser("bench", help="reproduce the paper's experiments: table1, cv, ablations",
                                description="Reproduce the paper's experiments.")  # fmt: skip
    add_commands(bench)


def build_parser() -> argparse.ArgumentParser:
    """The ``kneeseg`` argument parser with all command groups."""
    parser = argparse.ArgumentParser(prog="kneeseg", description="Knee MRI segmentation with a CSAM U-Net on MONAI.")
    parser.add_argument("--version", action="version", version=f"kneeseg {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_data_commands(commands)
    _add_workflow_commands(commands)
    _add_infer_command(commands)
    _add_bench_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``kneeseg`` command; returns the exit status (0 ok, 2 usage or input error, 130 interrupted)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    try:
        return int(args.handler(args))
    except (ValueError, OSError) as exc:
        print(f"kneeseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside a batch run's own handling (which says how far it got)
        print("kneeseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
