"""The MONAI Label server process: start it on 127.0.0.1 (:func:`start_server`), ask it, stop it (:class:`Server`).

``monailabel start_server`` runs with the MONAI Label environment's python in its own process
group, and :func:`start_server` waits until ``GET /info/`` answers; :class:`Server` stops it
(SIGTERM, SIGKILL fallback), task subprocesses included.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kneeseg.files import PathLike
from kneeseg.monailabel.app import MODEL_NAME
from kneeseg.monailabel.environment import Progress, say, venv_env, venv_python

__all__ = ["HOST", "Server", "free_port", "port_is_free", "start_server"]

#: the only address the server binds to
HOST = "127.0.0.1"


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


def _tail(path: Path | None, lines: int = 40) -> str:
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
        self.returncode: int | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_file, lines)

    def info(self, timeout: float = 10.0) -> dict[str, Any]:
        """``GET /info/`` as a dict."""
        return _http_json(self.url + "/info/", timeout=timeout)

    def wait_ready(self, timeout: float = 180.0, progress: Progress = None) -> dict[str, Any]:
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
                say(progress, f"  still waiting for {self.url}/info/ ({waited:.0f} s)")
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

    def stop(self, timeout: float = 30.0) -> int | None:
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

    def __enter__(self) -> Server:
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
    port: int | None = None,
    venv: PathLike | None = None,
    log_file: PathLike | None = None,
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
    python = venv_python(venv)
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

    env = venv_env(venv_dir)
    env["MONAI_LABEL_SESSION_PATH"] = str(sessions)
    cmd = [
        str(python), "-m", "monailabel.main", "start_server",
        "--app", str(app), "--studies", str(studies),
        "--conf", "models", MODEL_NAME, "--conf", "zoo_source", "github",
        "--host", HOST, "--port", str(port),
    ]  # fmt: skip
    say(progress, f"starting MONAI Label on {HOST}:{port} (app {app}, studies {studies}, log {log})")
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
    say(progress, f"server ready after {time.monotonic() - t0:.1f} s: {server.url}")
    return server

