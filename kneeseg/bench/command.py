"""``kneeseg bench table1``: the command line of the paper's Table 1, its cross-validation and its
ablations (``benchmarks/table1.py`` runs the same).

It only reads options and calls the runners: :func:`kneeseg.bench.table1.run_table1`,
:func:`kneeseg.bench.table1.run_ablations`, :func:`kneeseg.bench.cv.run_cv` (then
:func:`kneeseg.bench.cv_ensemble.ensemble_gain` when a part is kept out of the folds). Heavy
modules (torch, MONAI) load inside the runners, so ``--help`` answers at once.
"""

from __future__ import annotations

from pathlib import Path

from kneeseg.bench import table1
from kneeseg.bench.cv import CVConfig, run_cv
from kneeseg.bench.cv_ensemble import ensemble_gain
from kneeseg.bench.protocol import ABLATIONS, EXTRA_PEERS, PAPER_METHODS, PROTOCOL, REFERENCE, Table1Config
from kneeseg.bench.table1 import quick_config, run_ablations, run_table1

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="kneeseg bench table1", description=table1.__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("out/table1"),
                   help="output folder: runs, tables, plots; a rerun resumes there (default: %(default)s)")
    p.add_argument("--methods", nargs="+", default=None, metavar="NAME",
                   help=f"networks to compare (default: the paper's {' '.join(PAPER_METHODS)}, the ablations "
                        f"{' '.join(ABLATIONS)} and {' '.join(EXTRA_PEERS)}; with --cv the reference and the cheap baselines first)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="S",
                   help="training seeds per method (default: 0 1 2); with --cv the first is the fold seed")
    p.add_argument("--preset", default="cpu", help="bundle preset every run starts from (default: %(default)s)")
    p.add_argument("--data", default="knee_acl", help="bundle data config: knee_acl, phantom or a JSON file (default: %(default)s)")
    p.add_argument("--dataset-dir", default=None, help="dataset root (default: the data config's, e.g. ../shared/data/knee-acl)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="bundle override for every run (repeatable)")
    p.add_argument("--quick", action="store_true", help="CI smoke test: 2 methods, 1 epoch, tiny phantom")
    p.add_argument("--paper-table", type=Path, default=None, help="JSON with the paper's Table 1, shown beside ours (default: none)")
    p.add_argument("--cv", type=int, default=0, metavar="K",
                   help="patient-grouped K-fold cross-validation at the preset under the convergence rule (early stopping, "
                        "no table1 protocol overrides): every case predicted once out of fold, metrics at native resolution; "
                        "per-case and per-fold paired statistics (kneeseg.bench.cv); --seeds' first is the fold seed")
    p.add_argument("--cv-fixed-epochs", action="store_true",
                   help="with --cv: train for the preset's own max_epochs instead of the convergence rule")
    p.add_argument("--cv-exclude", default=None, metavar="KEY",
                   help="with --cv: keep the cases of this datalist part out of the folds (e.g. test_811, for fold-ensemble tests)")
    p.add_argument("--cv-budget", type=float, default=None, metavar="HOURS",
                   help="with --cv: start no run that would end past this many hours (runs go fold by fold, every method "
                        "on a fold first); the table covers what finished, a rerun continues")
    p.add_argument("--ablations", action="store_true",
                   help=f"instead of the table: {REFERENCE} once per variant in ABLATION_VARIANTS (loss, augmentation, size, schedule)")
    args = p.parse_args(argv)
    from kneeseg.workflows import parse_overrides

    if args.cv:
        if args.quick:
            quick = quick_config(args.out)
            cv = CVConfig(out=args.out, k=args.cv, methods=quick.methods, seed=args.seeds[0], preset=quick.preset,
                          data=quick.data, dataset_dir=quick.dataset_dir, overrides=quick.overrides, exclude=args.cv_exclude, budget_h=args.cv_budget)  # fmt: skip
        else:
            cv = CVConfig(out=args.out, k=args.cv, seed=args.seeds[0], preset=args.preset, data=args.data,
                          dataset_dir=args.dataset_dir, overrides=parse_overrides(args.set or []), exclude=args.cv_exclude,
                          budget_h=args.cv_budget, rule=not args.cv_fixed_epochs)  # fmt: skip
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


if __name__ == "__main__":
    raise SystemExit(main())
