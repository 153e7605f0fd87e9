"""Run the MONAI bundle's workflows (train, evaluate, infer) the way ``python -m monai.bundle run`` does.

The bundle's configs are the one source of truth for hyper-parameters; this module only
assembles the list of config files (base config, preset, data config, extra overrides)
and passes key/value overrides through to :py:func:`monai.bundle.run`.
"""

from __future__ import annotations

import ast
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kneeseg.files import PathLike

__all__ = ["WORKFLOWS", "default_bundle_dir", "parse_overrides", "parse_value", "workflow_config_files", "run_workflow"]


# workflow -> (config files in order, run id)
WORKFLOWS: dict[str, tuple] = {
    "train": (("train.json",), "training"),
    "evaluate": (("train.json", "evaluate.json"), "evaluating"),
    "infer": (("inference.json",), "inferring"),
    "train_multi_gpu": (("train.json", "multi_gpu_train.json"), "training"),
}


def default_bundle_dir() -> Path:
    """The bundle shipped beside the package (``<repo>/bundles/knee_mri_seg``), or ``$KNEESEG_BUNDLE``.

    Raises:
        FileNotFoundError: when neither exists (pass the bundle folder explicitly).
    """
    env = os.environ.get("KNEESEG_BUNDLE")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[1] / "bundles" / "knee_mri_seg")
    for c in candidates:
        if (c / "configs" / "metadata.json").is_file():
            return c
    raise FileNotFoundError(
        f"kneeseg bundle not found (looked in {', '.join(str(c) for c in candidates)}); pass --bundle or set KNEESEG_BUNDLE"
    )


def _resolve_named(bundle: Path, kind: str, name: str) -> str:
    """A preset/data config given by name (``cpu``) or by path (``my.json``)."""
    path = Path(name)
    if path.suffix == ".json" and path.is_file():
        return str(path.resolve())
    named = bundle / "configs" / kind / f"{name}.json"
    if not named.is_file():
        known = sorted(p.stem for p in (bundle / "configs" / kind).glob("*.json"))
        raise FileNotFoundError(f"unknown {kind[:-1] if kind.endswith('s') else kind} {name!r}: no {named}; known: {known}")
    return str(named)


def workflow_config_files(
    workflow: str,
    bundle: PathLike | None = None,
    preset: str | None = None,
    data: str | None = None,
    extra_configs: Sequence[PathLike] = (),
) -> list[str]:
    """The ordered config files of ``workflow``: base configs, preset, data config, extras.

    Raises:
        ValueError: unknown workflow. FileNotFoundError: missing config files.
    """
    if workflow not in WORKFLOWS:
        raise ValueError(f"unknown workflow {workflow!r}; known: {sorted(WORKFLOWS)}")
    root = Path(bundle) if bundle is not None else default_bundle_dir()
    files = [str(root / "configs" / f) for f in WORKFLOWS[workflow][0]]
    if preset:
        files.append(_resolve_named(root, "presets", preset))
    if data:
        files.append(_resolve_named(root, "data", data))
    for extra in extra_configs:
        if not Path(extra).is_file():
            raise FileNotFoundError(f"config file not found: {extra}")
        files.append(str(Path(extra).resolve()))
    for f in files:
        if not Path(f).is_file():
            raise FileNotFoundError(f"config file not found: {f}")
    return files


def parse_value(raw: str) -> Any:
    """One ``--set`` value, typed: JSON first (``8``, ``0.5``, ``true``, ``null``, ``[96, 96]``,
    ``"text"``), then a Python literal (``True``, ``None``, ``(1, 2)``, ``'text'``), else the text."""
    text = raw.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return raw


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["max_epochs=2", "train#dataset#cache_rate=0.5", "amp=false"]`` -> typed overrides.

    The one parser of ``KEY=VALUE`` items in kneeseg (the CLI's ``--set``, ``kneeseg bench`` and
    the MONAI Label app's ``--set``); values as :func:`parse_value` reads them.

    Raises:
        ValueError: for an item without ``=`` or without a key.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        out[key.strip()] = parse_value(raw)
    return out


def run_workflow(
    workflow: str,
    bundle: PathLike | None = None,
    preset: str | None = None,
    data: str | None = None,
    extra_configs: Sequence[PathLike] = (),
    overrides: Mapping[str, Any] | None = None,
) -> None:
    """Run a bundle workflow through :py:func:`monai.bundle.run`, exactly as the bundle CLI would.

    ``bundle_root`` defaults to the bundle folder, so relative paths in the configs resolve
    the same way as with ``python -m monai.bundle run`` from inside it.
    """
    from monai.bundle import run

    root = Path(bundle) if bundle is not None else default_bundle_dir()
    files = workflow_config_files(workflow, root, preset, data, extra_configs)
    kwargs: dict[str, Any] = {"bundle_root": str(root)}
    kwargs.update(overrides or {})
    try:
        shipped = root.resolve() == default_bundle_dir().resolve()
    except FileNotFoundError:
        shipped = False
    with warnings.catch_warnings():
        if shipped:  # MONAI's notice that configs may run code, on every run: this bundle is kneeseg's own
            warnings.filterwarnings("ignore", message="parsing config_file", category=UserWarning)
        run(
            run_id=WORKFLOWS[workflow][1],
            meta_file=str(root / "configs" / "metadata.json"),
            config_file=files,
            logging_file=str(root / "configs" / "logging.conf"),
            **kwargs,
        )
