"""Serve the kneeseg bundle with MONAI Label 0.8.5 (for 3D Slicer's MONAI Label extension).

MONAI Label lives in its own virtual environment (``make label-env``; default
``<repo>/.venv-label`` or ``$KNEESEG_LABEL_VENV``) because it needs ``numpy<2`` and
``pydicom<3``. This module only lays out files and drives that environment's processes, so it
imports with the standard library and kneeseg alone and works from any kneeseg environment.

- :func:`prepare_app`: a ``monaibundle`` app folder (MONAI Label's sample app, copied from the
  installed package) with the kneeseg bundle at ``model/knee_mri_seg`` and a checkpoint at
  ``model/knee_mri_seg/models/model.pt``; plain top-level values of ``configs/inference.json``
  and ``configs/train.json`` can be substituted (``{"width": 8, "spatial_size": 128}``).
- :func:`start_server`: ``monailabel start_server`` on 127.0.0.1 in its own process group,
  waiting until ``GET /info/`` answers; :class:`Server` stops it (SIGTERM, SIGKILL fallback).
- ``python -m kneeseg.monailabel prepare|serve``: the same from the command line (used by
  ``make label-server``).

Details and pitfalls: ``docs/monai_label.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from kneeseg.atomic import atomic_path, atomic_write_text
from kneeseg.files import PathLike, file_sha256

__all__ = [
    "APP_MARKER",
    "HOST",
    "MODEL_NAME",
    "Server",
    "find_sample_app",
    "free_port",
    "label_venv",
    "main",
    "port_is_free",
    "prepare_app",
    "start_server",
]

Progress = Optional[Callable[[str], None]]

#: model name under which MONAI Label serves the bundle (``<app>/model/<name>``)
MODEL_NAME = "knee_mri_seg"
#: the MONAI Label sample app that serves bundles
SAMPLE_APP = "monaibundle"
#: the only address the server binds to
HOST = "127.0.0.1"
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


def _say(progress: Progress, line: str) -> None:
    if progress is not None:
        progress(line)


def repo_root() -> Path:
    """The source checkout this package lives in (``kneeseg/monailabel/__init__.py`` -> ``<repo>``)."""
    return Path(__file__).resolve().parents[2]


def label_venv() -> Path:
    """The MONAI Label virtual environment: ``$KNEESEG_LABEL_VENV`` or ``<repo>/.venv-label``."""
    env = os.environ.get("KNEESEG_LABEL_VENV")
    return Path(env).expanduser() if env else repo_root() / ".venv-label"


def _venv_python(venv: Optional[PathLike]) -> Path:
    # absolute (processes run in the app folder) but not resolved: bin/python must stay the venv's symlink
    root = (Path(venv).expanduser() if venv is not None else label_venv()).absolute()
    python = root / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(
            f"MONAI Label environment not found: {python} does not exist (run `make label-env`, "
            "or set KNEESEG_LABEL_VENV to an environment with monailabel==0.8.5 and kneeseg)"
        )
    return python


def _venv_env(venv: Path) -> Dict[str, str]:
    """Environment for the venv's processes: its bin first on PATH (MONAI Label starts `python`)."""
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = str(venv / "bin") + os.pathsep + env.get("PATH", "")
    env["MONAILABEL_PYEXE"] = str(venv / "bin" / "python")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def find_sample_app(venv: Optional[PathLike] = None, name: str = SAMPLE_APP) -> Optional[Path]:
    """The sample app folder installed with MONAI Label in ``venv`` (None when not found there)."""
    python = _venv_python(venv)
    proc = subprocess.run(
        [str(python), "-c", _FIND_SAMPLE_APPS], capture_output=True, text=True, env=_venv_env(python.parents[1])
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


def _copy_sample_app(dst: Path, venv: Optional[PathLike], progress: Progress) -> str:
    """Copy the ``monaibundle`` sample app to ``dst`` (which must not exist); returns its source."""
    src = find_sample_app(venv)
    if src is not None:
        shutil.copytree(src, dst, ignore=_APP_IGNORE)
        return str(src)
    # not beside the package: let MONAI Label copy it (`monailabel apps --download` searches more places)
    python = _venv_python(venv)
    venv_dir = python.parents[1]
    with tempfile.TemporaryDirectory(prefix="kneeseg-sample-app-") as tmp:
        cmd = [str(venv_dir / "bin" / "monailabel"), "apps", "--download", "--name", SAMPLE_APP, "--output", tmp]
        _say(progress, f"  sample app not beside the package; running {' '.join(cmd[1:])}")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_venv_env(venv_dir))
        got = Path(tmp) / SAMPLE_APP
        if proc.returncode != 0 or not (got / "main.py").is_file():
            out = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            raise RuntimeError(f"could not copy MONAI Label's {SAMPLE_APP} sample app:\n" + "\n".join(out))
        shutil.copytree(got, dst, ignore=_APP_IGNORE)
    return "monailabel apps --download"


def _substitute(doc: Dict[str, Any], overrides: Mapping[str, Any]) -> List[str]:
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
    bundle: Optional[PathLike] = None,
    ckpt: Optional[PathLike] = None,
    overrides: Optional[Mapping[str, Any]] = None,
    venv: Optional[PathLike] = None,
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
        _say(progress, f"sample app: {origin} -> {app}")

        dst = stage / "model" / MODEL_NAME
        shutil.copytree(src_bundle, dst, ignore=_BUNDLE_IGNORE)
        (dst / "models").mkdir()
        _say(progress, f"bundle: {src_bundle} -> {app / 'model' / MODEL_NAME}")

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
            _say(progress, "overrides: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items()))

        record: Dict[str, Any] = {
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
            _say(progress, f"checkpoint: {ckpt_path} -> models/model.pt")
        else:
            _say(progress, "checkpoint: none. MONAI Label then offers training only; restart the server once "
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
    _say(progress, f"app ready: {app}")
    return app


# ----------------------------------------------------------------------------------------------
# server


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:``port`` (a server could bind it now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does; ignores TIME_WAIT
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


# loopback requests must not go through an http_proxy from the environment
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_json(url: str, timeout: float = 10.0) -> Any:
    with _OPENER.open(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode("utf-8"))


def _tail(path: Optional[Path], lines: int = 40) -> str:
    if path is None or not path.is_file():
        return "(no log)"
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 64 * 1024))
        text = fh.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class Server:
    """A running MONAI Label server (made by :func:`start_server`); a context manager that stops it."""

    def __init__(self, process: subprocess.Popen, port: int, app_dir: Path, studies_dir: Path, log_file: Path):
        self.process = process
        self.port = port
        self.app_dir = app_dir
        self.studies_dir = studies_dir
        self.log_file = log_file
        self.pgid = process.pid  # start_new_session: the server leads its own process group
        self.returncode: Optional[int] = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_file, lines)

    def info(self, timeout: float = 10.0) -> Dict[str, Any]:
        """``GET /info/`` as a dict."""
        return _http_json(self.url + "/info/", timeout=timeout)

    def wait_ready(self, timeout: float = 180.0, progress: Progress = None) -> Dict[str, Any]:
        """Wait until ``GET /info/`` answers; returns it.

        Raises:
            RuntimeError: the server exited (message with the log tail).
            TimeoutError: no answer within ``timeout`` s (the server is stopped).
        """
        t0 = time.monotonic()
        next_note = 10.0
        while True:
            if not self.alive():
                code = self.process.returncode
                self.stop()
                raise RuntimeError(
                    f"MONAI Label exited with code {code} before answering {self.url}/info/; "
                    f"log {self.log_file}, last lines:\n{self.log_tail()}"
                )
            try:
                return self.info(timeout=5.0)
            except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout, ValueError):
                pass
            waited = time.monotonic() - t0
            if waited > timeout:
                self.stop()
                raise TimeoutError(
                    f"MONAI Label did not answer {self.url}/info/ within {timeout:.0f} s; "
                    f"log {self.log_file}, last lines:\n{self.log_tail()}"
                )
            if waited >= next_note:
                _say(progress, f"  still waiting for {self.url}/info/ ({waited:.0f} s)")
                next_note += 10.0
            time.sleep(0.5)

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, timeout: float = 30.0) -> Optional[int]:
        """Stop the server: SIGTERM to its process group, SIGKILL after ``timeout`` s; returns its exit code.

        Also ends what is left of the group (e.g. a training task) and waits until the port is free.

        Raises:
            RuntimeError: the port still accepts connections 15 s after the server exited.
        """
        if self.returncode is not None:
            return self.returncode
        if self.alive():
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait(15)
        self.returncode = self.process.wait()
        # leftovers of the group (task subprocesses); zombies of a non-reaping init are ignored after 5 s
        if self._group_alive():
            self._signal_group(signal.SIGTERM)
            deadline = time.monotonic() + 5.0
            while self._group_alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            self._signal_group(signal.SIGKILL)
        deadline = time.monotonic() + 15.0
        while not port_is_free(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {self.port} is still in use after the server stopped")
            time.sleep(0.2)
        return self.returncode

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited {self.process.returncode}"
        return f"Server({self.url}, pid {self.process.pid}, {state})"


def start_server(
    app_dir: PathLike,
    studies_dir: PathLike,
    *,
    port: Optional[int] = None,
    venv: Optional[PathLike] = None,
    log_file: Optional[PathLike] = None,
    timeout: float = 180.0,
    progress: Progress = None,
) -> Server:
    """Start MONAI Label on 127.0.0.1 serving ``app_dir`` (see :func:`prepare_app`) and wait until it answers.

    Runs ``python -m monailabel.main start_server --app APP --studies STUDIES --conf models
    knee_mri_seg --conf zoo_source github`` with the venv's python, in its own process group
    (so :meth:`Server.stop` ends task subprocesses too), with the venv's ``bin`` first on PATH and
    ``MONAI_LABEL_SESSION_PATH`` inside the app. ``zoo_source github`` keeps MONAI Label from
    asking the model zoo about the (local) bundle.

    Args:
        app_dir: the prepared app folder.
        studies_dir: the datastore folder (images; labels go to ``labels/final``); created if missing.
        port: TCP port; default :func:`free_port`.
        venv: MONAI Label environment; default :func:`label_venv`.
        log_file: server output; default ``<app_dir>/logs/server.log`` (overwritten).
        timeout: seconds to wait for ``GET /info/``.
        progress: called with progress lines, or None.

    Raises:
        FileNotFoundError: environment or app missing.
        OSError: the port is in use.
        RuntimeError, TimeoutError: the server died or did not answer (with the log tail).
    """
    python = _venv_python(venv)
    venv_dir = python.parents[1]
    app = Path(app_dir).absolute()
    if not (app / "main.py").is_file() or not (app / "model" / MODEL_NAME / "configs").is_dir():
        raise FileNotFoundError(f"{app} is not a prepared MONAI Label app (use prepare_app / `prepare`)")
    studies = Path(studies_dir).absolute()
    studies.mkdir(parents=True, exist_ok=True)
    if port is None:
        port = free_port()
    elif not port_is_free(port):
        raise OSError(f"port {port} on {HOST} is in use (another server?); pick another with --port")
    log = Path(log_file).absolute() if log_file is not None else app / "logs" / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    sessions = app / "sessions"
    sessions.mkdir(exist_ok=True)

    env = _venv_env(venv_dir)
    env["MONAI_LABEL_SESSION_PATH"] = str(sessions)
    cmd = [
        str(python), "-m", "monailabel.main", "start_server",
        "--app", str(app), "--studies", str(studies),
        "--conf", "models", MODEL_NAME, "--conf", "zoo_source", "github",
        "--host", HOST, "--port", str(port),
    ]  # fmt: skip
    _say(progress, f"starting MONAI Label on {HOST}:{port} (app {app}, studies {studies}, log {log})")
    t0 = time.monotonic()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(app),
            start_new_session=True,
        )  # fmt: skip
    server = Server(proc, port, app, studies, log)
    try:
        server.wait_ready(timeout=timeout, progress=progress)
    except BaseException:
        server.stop()
        raise
    _say(progress, f"server ready after {time.monotonic() - t0:.1f} s: {server.url}")
    return server


# ----------------------------------------------------------------------------------------------
# command line


def _overrides(items: Sequence[str]) -> Dict[str, Any]:
    from kneeseg.workflows import parse_overrides

    try:
        return parse_overrides(items)
    except ValueError as exc:
        raise SystemExit(f"--set: {exc}") from None


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop()


def _serve(args: argparse.Namespace) -> int:
    def say(line: str) -> None:
        print(line, flush=True)

    # Ctrl-C / SIGTERM end the server too (it runs in its own process group, so it gets neither)
    old = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    server: Optional[Server] = None
    try:
        server = start_server(args.app, args.studies, port=args.port, venv=args.venv, log_file=args.log,
                              timeout=args.timeout, progress=say)  # fmt: skip
        for name, m in server.info().get("models", {}).items():
            labels = m.get("labels")
            labels = ", ".join(labels) if isinstance(labels, (list, dict)) else labels
            say(f"model {name}: {m.get('type')} {m.get('dimension')}D, labels {labels}")
        say(f"MONAI Label is serving {server.url} (3D Slicer > MONAI Label > server {server.url}); Ctrl-C stops it")
        say(f"server log follows ({server.log_file}):")
        with open(server.log_file, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            while server.alive():
                chunk = fh.read()
                if chunk:
                    sys.stdout.write(chunk.decode("utf-8", errors="replace"))
                    sys.stdout.flush()
                else:
                    time.sleep(0.5)
        say(f"MONAI Label exited with code {server.process.returncode}; last lines:\n{server.log_tail(20)}")
        return 1
    except (KeyboardInterrupt, _Stop):
        say("stopping MONAI Label ...")
        return 0 if server is not None else 130
    finally:
        if server is not None:
            code = server.stop()
            say(f"stopped (exit code {code}); port {server.port} is free")
        for sig, handler in old.items():
            signal.signal(sig, handler)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m kneeseg.monailabel {prepare,serve}``."""
    p = argparse.ArgumentParser(prog="python -m kneeseg.monailabel", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    pp = sub.add_parser("prepare", help="lay out a monaibundle app with the kneeseg bundle")
    pp.add_argument("--app", required=True, help="app folder to (re)create")
    pp.add_argument("--bundle", help="bundle folder (default: the shipped bundles/knee_mri_seg)")
    pp.add_argument("--ckpt", help="checkpoint for models/model.pt (default: none, untrained)")
    pp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="substitute a top-level bundle value (JSON or a Python literal, as kneeseg --set), e.g. --set width=8; repeatable")  # fmt: skip
    pp.add_argument("--venv", help="MONAI Label environment (default: $KNEESEG_LABEL_VENV or <repo>/.venv-label)")
    ps = sub.add_parser("serve", help="start MONAI Label on 127.0.0.1 in the foreground (Ctrl-C stops it)")
    ps.add_argument("--app", required=True, help="prepared app folder")
    ps.add_argument("--studies", required=True, help="studies folder (created if missing)")
    ps.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    ps.add_argument("--venv", help="MONAI Label environment (default: $KNEESEG_LABEL_VENV or <repo>/.venv-label)")
    ps.add_argument("--log", help="server log file (default: <app>/logs/server.log)")
    ps.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the server (default 180)")
    args = p.parse_args(argv)

    try:
        if args.command == "prepare":
            prepare_app(args.app, bundle=args.bundle, ckpt=args.ckpt, overrides=_overrides(args.set),
                        venv=args.venv, progress=lambda line: print(line, flush=True))  # fmt: skip
            return 0
        return _serve(args)
    except (FileNotFoundError, FileExistsError, KeyError, OSError, RuntimeError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
