"""Run the MONAI bundle's workflows (train, evaluate, infer) the way ``python -m monai.bundle run`` does.

The bundle's configs are the one source of truth for hyper-parameters; this module only
assembles the list of config files (base config, preset, data config, extra overrides)
and passes key/value overrides through to :py:func:`monai.bundle.run`. Around a run: a trained
model's record below the overrides (:func:`model_overrides`), the resume decision over an earlier
run (:func:`decide_resume`), Ctrl-C and SIGTERM as a clean stop of training
(:func:`signals_stop_training`), and the lines a training ends with (:func:`training_summary`).
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from kneeseg.files import PathLike, cause_of

__all__ = [
    "WORKFLOWS", "TrainingStopped", "cause_of", "check_override_keys", "decide_resume", "default_bundle_dir",
    "earlier_run", "model_overrides", "parse_overrides", "parse_value", "run_workflow", "signals_stop_training",
    "training_summary", "workflow_config_files",
]  # fmt: skip


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
    # MONAI warns, per config, that presets and data configs live outside configs/ -- a notice about
    # its defaults for meta_file and logging_file, which are always given here
    quiet = _DropMessage("Not all config files are in")
    bundle_logger = logging.getLogger("monai.bundle.workflows")
    bundle_logger.addFilter(quiet)
    try:
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
    finally:
        bundle_logger.removeFilter(quiet)


class _DropMessage:
    """A ``logging`` filter that drops records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def filter(self, record: Any) -> bool:
        return not str(record.getMessage()).startswith(self.prefix)


def check_override_keys(config_files: Sequence[PathLike], overrides: Mapping[str, Any], option: str = "--set") -> None:
    """Refuse an override whose key the configs do not define, naming the nearest known key.

    ``widht=16`` would otherwise add an unused key and train the default width without a word.
    Each ``#``-separated part of a key must exist in the merged configs (``train#dataset#cache_rate``
    as well as ``width``); the message suggests the closest key at the level that failed.

    Raises:
        ValueError: ``unknown setting 'widht' (--set widht=...): did you mean 'width'?``.
    """
    import difflib

    merged: dict[str, Any] = {}
    for f in config_files:
        with open(f, encoding="utf-8") as fh:
            merged.update(json.load(fh))
    for key in overrides:
        node: Any = merged
        path: list[str] = []
        for part in key.split("#"):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, (Mapping, list)):
                known = [str(k) for k in node] if isinstance(node, Mapping) else []
                near = difflib.get_close_matches(part, known, n=1, cutoff=0.6)
                where = "#".join(path)
                hint = f": did you mean '{'#'.join([*path, near[0]])}'?" if near else (
                    f"; the keys under '{where}' are {sorted(known)[:12]}" if where and known else "")
                raise ValueError(f"unknown setting '{key}' ({option} {key}=...){hint}")
            else:  # a value (expression, number) reached before the end of the key: MONAI replaces it
                break
            path.append(part)


def earlier_run(ckpt_dir: PathLike, output_dir: PathLike | None = None) -> str | None:
    """What ``ckpt_dir/last.pt`` holds, in words (``epoch 3 of 24, not finished``), or ``None``
    when there is no ``last.pt``."""
    last = Path(ckpt_dir) / "last.pt"
    if not last.is_file():
        return None
    try:
        import torch

        state = torch.load(last, map_location="cpu", weights_only=True)["trainer"]
        length = max(1, int(state["epoch_length"] or 1))
        epoch, cap = int(state["iteration"]) // length, int(state["max_epochs"])
    except Exception as exc:  # noqa: BLE001 -- any unreadable file is described, not raised
        return f"an unreadable checkpoint ({type(exc).__name__})"
    stop = None
    if output_dir is not None and (Path(output_dir) / "stop.json").is_file():
        try:
            stop = json.loads((Path(output_dir) / "stop.json").read_text())
        except (OSError, ValueError):
            stop = None
    if stop and stop.get("stop_reason") == "patience" and int(stop.get("epochs", -1)) == epoch:
        return f"a run that stopped early at epoch {epoch} of {cap}"
    if epoch >= cap:
        return f"a finished run of {cap} epochs"
    return f"epoch {epoch} of {cap}, not finished"


def training_summary(ckpt_dir: PathLike, output_dir: PathLike) -> list[str]:
    """The lines a training run ends with: best metric and epoch, where the model and curves are."""
    ckpt, out = Path(ckpt_dir), Path(output_dir)
    lines = []
    record: dict[str, Any] = {}
    try:
        record = json.loads((ckpt / "model.json").read_text())
    except (OSError, ValueError):
        pass
    stop: dict[str, Any] = {}
    try:
        stop = json.loads((out / "stop.json").read_text())
    except (OSError, ValueError):
        pass
    if record.get("score") is not None:
        lines.append(f"best {record.get('metric', 'metric')} {float(record['score']):.4f} at epoch {record.get('epoch')}"
                     + (f"; stopped: {stop['stop_reason']} after {stop['epochs']} epochs" if stop.get("stop_reason") else ""))  # fmt: skip
    model = ckpt / "model.pt"
    lines.append(f"model:  {model}" if model.is_file() else f"model:  none written (no validation improved) in {ckpt}")
    for name in ("training_curves.png", "history.json"):
        if (out / name).is_file():
            lines.append(f"{'curves' if name.endswith('png') else 'history'}: {out / name}")
    return lines


def model_overrides(ckpt: PathLike, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` on top of the record of the model at ``ckpt`` (``model.json``: network, width,
    input size, classes, slice orientation, preprocessing), so ``kneeseg evaluate`` and
    ``infer-datalist`` rebuild the model a folder holds, as ``kneeseg infer`` does; without a model
    there (the workflow then says so) or a record, ``overrides`` unchanged.

    Raises:
        ValueError: an override of the network, width or number of classes that contradicts the record.
    """
    from kneeseg.networks.checkpoints import checkpoint_paths, contract_overrides, read_contract

    try:
        paths = checkpoint_paths(ckpt)
    except FileNotFoundError:
        return dict(overrides)
    return contract_overrides(read_contract(paths[0]), overrides)


class TrainingStopped(Exception):
    """Ctrl-C or SIGTERM during training (an ``Exception``, so that the engines pass it up like any
    error and Python never treats it as an unhandled ``KeyboardInterrupt``)."""


@contextlib.contextmanager
def signals_stop_training(enabled: bool) -> Iterator[None]:
    """During training, SIGINT and SIGTERM raise :class:`TrainingStopped` in the main thread;
    ``last.pt`` is written atomically after each epoch, so the one on disk stays whole."""
    import signal
    import threading

    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _stop(signum: int, frame: Any) -> None:
        raise TrainingStopped("Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def decide_resume(overrides: dict[str, Any], *, resume: bool = False, fresh: bool = False) -> None:
    """``resume`` continues ``last.pt``, ``fresh`` starts again (``overrides["resume"]`` set); over an
    earlier run with neither, stop and say which flag does what (a silent choice either way loses
    work or mixes runs). ``--set resume=...`` in ``overrides`` is the bundle's own switch and wins.

    Raises:
        ValueError: both flags, or an earlier run in ``overrides["ckpt_dir"]`` and neither.
    """
    if resume and fresh:
        raise ValueError("--resume and --fresh exclude each other")
    if resume or fresh:
        overrides["resume"] = bool(resume)
        return
    if "resume" in overrides:
        return
    held = earlier_run(overrides["ckpt_dir"], overrides["output_dir"])
    if held is not None:
        last = Path(overrides["ckpt_dir"]) / "last.pt"
        raise ValueError(
            f"{last} holds {held}: add --resume to continue it, or --fresh to start a new run "
            "(an earlier model.pt is then kept aside as model.<date>.pt)"
        )
