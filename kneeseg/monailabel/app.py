"""A MONAI Label ``monaibundle`` app folder serving the kneeseg bundle (:func:`prepare_app`).

MONAI Label's sample app is copied from the installed package, the kneeseg bundle goes to
``model/knee_mri_seg`` and a checkpoint to ``model/knee_mri_seg/models/model.pt``; plain
top-level values of ``configs/inference.json`` and ``configs/train.json`` can be substituted
(``{"width": 8, "spatial_size": 128}``).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kneeseg.atomic import atomic_path, atomic_write_text
from kneeseg.files import PathLike, file_sha256
from kneeseg.monailabel.environment import Progress, say, venv_env, venv_python

__all__ = ["APP_MARKER", "CONFIG_FILES", "MODEL_NAME", "SAMPLE_APP", "find_sample_app", "prepare_app"]

#: model name under which MONAI Label serves the bundle (``<app>/model/<name>``)
MODEL_NAME = "knee_mri_seg"
#: the MONAI Label sample app that serves bundles
SAMPLE_APP = "monaibundle"
#: bundle configs MONAI Label reads (each one alone, without merging)
CONFIG_FILES = ("inference.json", "train.json")
#: provenance file written by :func:`prepare_app`; its presence allows replacing the folder
APP_MARKER = "kneeseg_app.json"
#: bundle folders that are outputs of earlier runs, never copied into the app
_BUNDLE_IGNORE = shutil.ignore_patterns("models", "runs", "eval", "__pycache__", "*.pyc", ".ipynb_checkpoints")
_APP_IGNORE = shutil.ignore_patterns("logs", "model", "__pycache__", "*.pyc")

# printed by the venv's python; the sample apps ship as data files beside the package
_FIND_SAMPLE_APPS = r"""
import json, os, sys
import monailabel
pkg = os.path.dirname(os.path.abspath(monailabel.__file__))
home = os.path.expanduser("~")
print(json.dumps({
    "version": monailabel.__version__,
    "candidates": [
        os.path.join(pkg, "sample-apps"),
        os.path.join(os.path.dirname(pkg), "sample-apps"),
        os.path.join(sys.prefix, "monailabel", "sample-apps"),
        os.path.join(sys.prefix, "local", "monailabel", "sample-apps"),
        os.path.join(home, ".local", "monailabel", "sample-apps"),
    ],
}))
"""


def find_sample_app(venv: PathLike | None = None, name: str = SAMPLE_APP) -> Path | None:
    """The sample app folder installed with MONAI Label in ``venv`` (None when not found there)."""
    python = venv_python(venv)
    proc = subprocess.run(
        [str(python), "-c", _FIND_SAMPLE_APPS], capture_output=True, text=True, env=venv_env(python.parents[1])
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"cannot import monailabel with {python}:\n{tail}\n(run `make label-env`)")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    for cand in info["candidates"]:
        app = Path(cand) / name
        if (app / "main.py").is_file():
            return app
    return None


def _copy_sample_app(dst: Path, venv: PathLike | None, progress: Progress) -> str:
    """Copy the ``monaibundle`` sample app to ``dst`` (which must not exist); returns its source."""
    src = find_sample_app(venv)
    if src is not None:
        shutil.copytree(src, dst, ignore=_APP_IGNORE)
        return str(src)
    # not beside the package: let MONAI Label copy it (`monailabel apps --download` searches more places)
    python = venv_python(venv)
    venv_dir = python.parents[1]
    with tempfile.TemporaryDirectory(prefix="kneeseg-sample-app-") as tmp:
        cmd = [str(venv_dir / "bin" / "monailabel"), "apps", "--download", "--name", SAMPLE_APP, "--output", tmp]
        say(progress, f"  sample app not beside the package; running {' '.join(cmd[1:])}")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=venv_env(venv_dir))
        got = Path(tmp) / SAMPLE_APP
        if proc.returncode != 0 or not (got / "main.py").is_file():
            out = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            raise RuntimeError(f"could not copy MONAI Label's {SAMPLE_APP} sample app:\n" + "\n".join(out))
        shutil.copytree(got, dst, ignore=_APP_IGNORE)
    return "monailabel apps --download"


def _substitute(doc: dict[str, Any], overrides: Mapping[str, Any]) -> list[str]:
    """Replace top-level values of ``doc`` in place; returns the keys that were present."""
    hit = [k for k in overrides if k in doc]
    for k in hit:
        doc[k] = overrides[k]
    return hit


def _write_json(path: Path, doc: Any) -> None:
    atomic_write_text(path, json.dumps(doc, indent=4, ensure_ascii=False) + "\n")
    os.chmod(path, 0o644)  # atomic writes come from mkstemp (0600)


def prepare_app(
    app_dir: PathLike,
    *,
    bundle: PathLike | None = None,
    ckpt: PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    venv: PathLike | None = None,
    progress: Progress = None,
) -> Path:
    """Lay out a MONAI Label ``monaibundle`` app serving the kneeseg bundle; returns the app folder.

    The folder is built beside ``app_dir`` and then swapped in, so an interrupted call leaves the
    previous app (or none). An existing ``app_dir`` is replaced only when it is empty or was made
    by this function (it holds :data:`APP_MARKER`); checkpoints trained inside it are discarded.

    Args:
        app_dir: the app folder to create (``<app_dir>/main.py``, ``<app_dir>/model/knee_mri_seg``).
        bundle: bundle folder to serve; default :func:`kneeseg.workflows.default_bundle_dir`.
            Copied without ``models``, ``runs`` and ``eval``.
        ckpt: checkpoint placed at ``model/knee_mri_seg/models/model.pt`` (a state dict or
            ``{"model": state_dict, ...}``); None: no checkpoint (MONAI Label then lists the
            trainer but no inference model until ``model.pt`` exists and the server restarts).
        overrides: top-level values substituted in the copied ``configs/inference.json`` and
            ``configs/train.json`` (plain JSON values, e.g. ``{"width": 8, "spatial_size": 128}``);
            ``spatial_size`` also sets ``network_data_format`` spatial shapes in ``metadata.json``.
            Every key must exist at the top level of at least one of the two configs.
        venv: MONAI Label environment to copy the sample app from; default :func:`label_venv`.
        progress: called with one line per step (e.g. ``print``), or None.

    Raises:
        FileNotFoundError: bundle, checkpoint or MONAI Label environment missing.
        FileExistsError: ``app_dir`` exists, is not empty and was not made by this function.
        KeyError: an override key found in neither config.
    """
    from kneeseg.workflows import default_bundle_dir

    app = Path(app_dir).absolute()
    src_bundle = Path(bundle).absolute() if bundle is not None else default_bundle_dir()
    for name in CONFIG_FILES + ("metadata.json",):
        if not (src_bundle / "configs" / name).is_file():
            raise FileNotFoundError(f"{src_bundle} is not a bundle for MONAI Label: configs/{name} missing")
    ckpt_path = Path(ckpt).absolute() if ckpt is not None else None
    if ckpt_path is not None and not ckpt_path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt_path}")
    overrides = dict(overrides or {})
    if app.exists() and any(app.iterdir()) and not (app / APP_MARKER).is_file():
        raise FileExistsError(f"{app} exists and was not made by kneeseg.monailabel.prepare_app; not replacing it")

    app.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{app.name}.new-", dir=app.parent))
    try:
        stage.rmdir()  # copytree wants to create it
        origin = _copy_sample_app(stage, venv, progress)
        say(progress, f"sample app: {origin} -> {app}")

        dst = stage / "model" / MODEL_NAME
        shutil.copytree(src_bundle, dst, ignore=_BUNDLE_IGNORE)
        (dst / "models").mkdir()
        say(progress, f"bundle: {src_bundle} -> {app / 'model' / MODEL_NAME}")

        if overrides:
            found: set = set()
            for name in CONFIG_FILES:
                path = dst / "configs" / name
                doc = json.loads(path.read_text(encoding="utf-8"))
                hit = _substitute(doc, overrides)
                found.update(hit)
                if hit:
                    _write_json(path, doc)
            missing = sorted(set(overrides) - found)
            if missing:
                raise KeyError(f"override keys not at the top level of {' or '.join(CONFIG_FILES)}: {missing}")
            if "spatial_size" in overrides:
                meta_path = dst / "configs" / "metadata.json"
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                size = overrides["spatial_size"]
                for part in ("inputs", "outputs"):
                    for entry in meta.get("network_data_format", {}).get(part, {}).values():
                        if isinstance(entry, dict) and isinstance(entry.get("spatial_shape"), list):
                            entry["spatial_shape"] = [size] * len(entry["spatial_shape"])
                _write_json(meta_path, meta)
            say(progress, "overrides: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items()))

        record: dict[str, Any] = {
            "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "sample_app": origin,
            "bundle": str(src_bundle),
            "overrides": overrides,
            "checkpoint": None,
        }
        if ckpt_path is not None:
            with atomic_path(dst / "models" / "model.pt") as tmp:
                shutil.copyfile(ckpt_path, tmp)
                os.chmod(tmp, 0o644)
            record["checkpoint"] = {"source": str(ckpt_path), "sha256": file_sha256(dst / "models" / "model.pt")}
            say(progress, f"checkpoint: {ckpt_path} -> models/model.pt")
        else:
            say(progress, "checkpoint: none. MONAI Label then offers training only; restart the server once "
                           "a training run has written models/model.pt to get auto-segmentation")  # fmt: skip
        _write_json(stage / APP_MARKER, record)

        # swap in: the old app (if any) is renamed away first, then removed
        old = None
        if app.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{app.name}.old-", dir=app.parent))
            os.replace(app, old / app.name)
        os.replace(stage, app)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    say(progress, f"app ready: {app}")
    return app

