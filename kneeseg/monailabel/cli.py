"""``python -m kneeseg.monailabel prepare|serve``: the command line of :mod:`kneeseg.monailabel` (used by ``make label-server``)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from kneeseg.monailabel.app import prepare_app
from kneeseg.monailabel.server import Server, start_server

__all__ = ["main"]


def _overrides(items: Sequence[str]) -> dict[str, Any]:
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
    server: Server | None = None
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kneeseg.monailabel {prepare,serve}``."""
    import kneeseg.monailabel as package

    p = argparse.ArgumentParser(prog="python -m kneeseg.monailabel", description=package.__doc__.splitlines()[0])
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
