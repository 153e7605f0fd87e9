"""``kneeseg bench``: the command line of the paper's experiments (:mod:`kneeseg.experiments`), one
sub-command each. (``benchmarks/`` holds speed and memory measurements, not these.)

    kneeseg bench table1 [--methods ...] [--seeds ...]       every method x seed, Table-1 style
    kneeseg bench cv [--folds K] [--methods ...]             K-fold cross-validation, convergence rule
    kneeseg bench ablations                                  the reference once per ablation variant

It only reads options and calls the runners: :func:`kneeseg.experiments.table1.run_table1`,
:func:`kneeseg.experiments.cv.run_cv` (then :func:`kneeseg.experiments.cv_ensemble.ensemble_gain` when a part is
kept out of the folds), :func:`kneeseg.experiments.table1.run_ablations`. ``table1 --cv K`` and
``table1 --ablations`` are the other two sub-commands under their earlier spelling.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kneeseg.experiments.protocol import ABLATIONS, EXTRA_PEERS, PAPER_METHODS, REFERENCE

__all__ = ["add_commands", "run"]


def _common(p: argparse.ArgumentParser, out: str, seeds: str) -> None:
    p.add_argument("--out", type=Path, default=Path(out),
                   help="output folder: runs, tables, plots; a rerun resumes there (default: %(default)s)")  # fmt: skip
    p.add_argument("--methods", nargs="+", default=None, metavar="NAME",
                   help=f"networks to compare (default: the paper's {' '.join(PAPER_METHODS)}, the ablations "
                        f"{' '.join(ABLATIONS)} and {' '.join(EXTRA_PEERS)}; in a cross-validation the reference and "
                        "the cheap baselines first)")  # fmt: skip
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2] if seeds == "all" else [0], metavar="S",
                   help=seeds if seeds != "all" else "training seeds per method (default: 0 1 2)")
    p.add_argument("--preset", default="cpu", help="bundle preset every run starts from (default: %(default)s)")
    p.add_argument("--data", default="knee_acl", help="bundle data config: knee_acl, phantom or a JSON file (default: %(default)s)")
    p.add_argument("--dataset-dir", default=None, help="dataset root (default: the data config's, e.g. ../shared/data/knee-acl)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="bundle override for every run (repeatable)")
    p.add_argument("--quick", action="store_true", help="CI smoke test: 2 methods, 1 epoch, tiny phantom")


def _cv_options(p: argparse.ArgumentParser, folds_flag: str) -> None:
    if folds_flag == "--folds":
        p.add_argument("--folds", dest="cv", type=int, default=5, metavar="K",
                       help="number of patient-grouped folds (default: %(default)s)")  # fmt: skip
    else:
        p.add_argument("--cv", type=int, default=0, metavar="K",
                       help="the same as 'kneeseg bench cv --folds K': patient-grouped K-fold cross-validation at the "
                            "preset under the convergence rule (early stopping, no table1 protocol overrides): every "
                            "case predicted once out of fold, metrics at native resolution; per-case and per-fold "
                            "paired statistics (kneeseg.experiments.cv); --seeds' first is the fold seed")  # fmt: skip
    def names(name: str) -> list[str]:  # `cv --budget`, `table1 --cv-budget`: each also takes the other
        short, long = f"--{name}", f"--cv-{name}"
        return [short, long] if folds_flag == "--folds" else [long, short]

    p.add_argument(*names("fixed-epochs"), dest="cv_fixed_epochs", action="store_true",
                   help="train for the preset's own max_epochs instead of the convergence rule")
    p.add_argument(*names("exclude"), dest="cv_exclude", default=None, metavar="KEY",
                   help="keep the cases of this datalist part out of the folds (e.g. test_811, for fold-ensemble tests)")
    p.add_argument(*names("train-seeds"), dest="cv_train_seeds", nargs="+", type=int, default=None, metavar="S",
                   help="training seeds per fold (default: the fold seed only); the extra ones run after every "
                        "method's first seed on every fold, and a case's metrics are averaged over its seeds")  # fmt: skip
    p.add_argument(*names("seeded-methods"), dest="cv_seeded_methods", nargs="+", default=None, metavar="NAME",
                   help="the methods the extra training seeds are for (default: all), e.g. the reference and the "
                        "strongest baseline")  # fmt: skip
    p.add_argument(*names("budget"), dest="cv_budget", type=float, default=None, metavar="HOURS",
                   help="start no run that would end past this many hours (runs go fold by fold, every method on a "
                        "fold first); the table covers what finished, a rerun continues")  # fmt: skip
    p.add_argument(*names("reuse"), dest="cv_reuse", type=Path, default=None, metavar="DIR",
                   help="take the finished runs of an earlier CV's table folder (runs.csv, oof_per_case.csv, "
                        "folds.json, cv_table.json; e.g. docs/results/cv) as done, after checking that its folds "
                        "and settings are these; the table then grows on another machine without retraining them")  # fmt: skip
    p.add_argument(*names("report-only"), dest="cv_report_only", action="store_true",
                   help="train nothing: write the tables and plots from the runs finished (or reused) so far")


def add_commands(bench: argparse.ArgumentParser) -> None:
    """Register ``table1``, ``cv`` and ``ablations`` on the ``bench`` parser."""
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCH_COMMAND", required=True)
    t1 = sub.add_parser("table1", help="train and evaluate every method x seed through the bundle; Table-1 style results",
                        description="The paper's Table 1: every method x seed trained and evaluated through the bundle "
                                    "(kneeseg.experiments.table1).")  # fmt: skip
    _common(t1, "out/table1", "all")
    t1.add_argument("--paper-table", type=Path, default=None,
                    help="JSON with the paper's Table 1, shown beside ours (default: none)")  # fmt: skip
    _cv_options(t1, "--cv")
    t1.add_argument("--ablations", action="store_true",
                    help=f"the same as 'kneeseg bench ablations': {REFERENCE} once per variant in ABLATION_VARIANTS")
    t1.set_defaults(handler=run)
    cv = sub.add_parser("cv", help="K-fold cross-validation of the methods under the convergence rule",
                        description="Patient-grouped K-fold cross-validation under the convergence rule: every case "
                                    "predicted once out of fold, metrics at native resolution, per-case and per-fold "
                                    "paired statistics (kneeseg.experiments.cv).")  # fmt: skip
    _common(cv, "out/cv", "fold seed: the split and every run's training seed (default: 0; the first is used)")
    _cv_options(cv, "--folds")
    cv.set_defaults(handler=run, paper_table=None, ablations=False)
    ab = sub.add_parser("ablations", help=f"{REFERENCE} once per ablation variant (loss, augmentation, size, schedule)",
                        description=f"{REFERENCE} trained once per variant in ABLATION_VARIANTS (kneeseg.experiments.table1).")
    _common(ab, "out/table1", "training seed (default: 0)")
    ab.set_defaults(handler=run, paper_table=None, ablations=True, cv=0)


def run(args: argparse.Namespace) -> int:
    """Run the sub-command ``args`` describes; 0 when it finished."""
    # the runners import numpy, matplotlib and (in the runs) torch and MONAI: only once a command runs,
    # so that --help answers at once
    from kneeseg.experiments.protocol import PROTOCOL, Table1Config
    from kneeseg.experiments.table1 import quick_config, run_ablations, run_table1
    from kneeseg.workflows import parse_overrides

    if getattr(args, "cv", 0):
        from kneeseg.experiments.cv import CVConfig, run_cv
        from kneeseg.experiments.cv_ensemble import ensemble_gain

        common: dict[str, Any] = dict(out=args.out, k=args.cv, seed=args.seeds[0], exclude=args.cv_exclude,
                                      budget_h=args.cv_budget, train_seeds=args.cv_train_seeds,
                                      seeded_methods=args.cv_seeded_methods, reuse=args.cv_reuse,
                                      report_only=args.cv_report_only)  # fmt: skip
        if args.quick:
            quick = quick_config(args.out)
            cv = CVConfig(methods=quick.methods, preset=quick.preset, data=quick.data, dataset_dir=quick.dataset_dir,
                          overrides=quick.overrides, **common)  # fmt: skip
        else:
            cv = CVConfig(preset=args.preset, data=args.data, dataset_dir=args.dataset_dir,
                          overrides=parse_overrides(args.set or []), rule=not args.cv_fixed_epochs, **common)  # fmt: skip
            if args.methods:
                cv.methods = list(args.methods)
        run_cv(cv)
        if cv.exclude and REFERENCE in cv.methods:  # the fold models on the part kept out, and their ensemble
            ensemble_gain(cv, REFERENCE)
        print(f"wrote {cv.root / 'cv_table.md'}, {cv.root / 'oof_per_case.csv'}, PNG plots")
        return 0
    if args.quick:
        cfg = quick_config(args.out)
    else:
        overrides = dict(PROTOCOL, **parse_overrides(args.set or []))
        cfg = Table1Config(out=args.out, seeds=args.seeds, preset=args.preset, data=args.data,
                           dataset_dir=args.dataset_dir, overrides=overrides)  # fmt: skip
        if args.methods:
            cfg.methods = list(args.methods)
    cfg.paper_table = args.paper_table
    if args.ablations:
        run_ablations(cfg, seed=cfg.seeds[0])
        print(f"wrote {cfg.out / 'ablations.md'}, {cfg.out / 'ablations.csv'}")
        return 0
    run_table1(cfg)
    print(f"wrote {cfg.out / 'table1.md'}, {cfg.out / 'runs.csv'}, {cfg.out / 'paired.csv'}, PNG plots")
    return 0
