"""Recompute every number of the cross-validated Table 1 from ``oof_per_case.csv`` alone.

The CSV has one row per method, training seed, fold and case (``method, seed, fold, case, loss,
mae, f1, dice, hd95`` and ``dice_grid``; a case with several seeds counts once, as its mean over
them), as ``kneeseg bench table1 --cv K`` writes it and as shipped in
``docs/results/cv/``. This script rebuilds the table with the same functions the CV uses
(``kneeseg.experiments.cv_report``: means over cases and folds, per-case and per-fold paired
comparisons against the reference, Holm's correction) and prints the Markdown, so a reader can
check the published table without the runs::

    python docs/scripts/cv_recompute.py docs/results/cv/oof_per_case.csv
    python docs/scripts/cv_recompute.py docs/results/cv/oof_per_case.csv --reference res_unet --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from kneeseg.experiments.cv import capped_runs
from kneeseg.experiments.cv_report import cv_markdown, cv_statistics
from kneeseg.experiments.protocol import REFERENCE


def recompute(csv_path: Path, reference: str = REFERENCE, runs_csv: Path | None = None) -> dict:
    """The table's statistics from the per-case CSV (and, when given, the capped runs from ``runs.csv``)."""
    table = pd.read_csv(csv_path)
    if "dice_grid" not in table.columns:
        table["dice_grid"] = float("nan")
    required = {"method", "fold", "case", "loss", "mae", "f1", "dice", "hd95"}
    missing = required - set(table.columns)
    if missing:
        raise SystemExit(f"{csv_path}: missing column(s) {sorted(missing)}")
    order = list(dict.fromkeys(table["method"]))
    methods = ([reference] if reference in order else []) + [m for m in order if m != reference]
    cases = sorted(set(map(str, table["case"])))
    table["case"] = table["case"].astype(str)
    result = cv_statistics(table, methods, reference, cases, int(table["fold"].nunique()))
    result.update(k=int(table["fold"].nunique()), n_cases=len(cases))
    if runs_csv is not None and runs_csv.is_file():
        runs = pd.read_csv(runs_csv)
        if "stop_reason" in runs.columns:
            result["capped_runs"] = capped_runs(runs.to_dict("records"))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv", type=Path, help="oof_per_case.csv")
    p.add_argument("--reference", default=REFERENCE, help="the method the others are compared with (default: %(default)s)")
    p.add_argument("--runs", type=Path, default=None, help="runs.csv (default: beside the CSV, when present)")
    p.add_argument("--json", type=Path, default=None, help="also write the statistics as JSON")
    args = p.parse_args(argv)
    runs = args.runs or args.csv.with_name("runs.csv")
    result = recompute(args.csv, args.reference, runs)
    sys.stdout.write(cv_markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
