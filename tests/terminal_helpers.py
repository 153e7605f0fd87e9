"""Run a command with its stderr on a real pseudo-terminal, as in a user's shell, and read the screen."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence


def run_in_terminal(cmd: Sequence[str], timeout: float = 300) -> tuple[int, str]:
    """``(exit status, everything written to the terminal)``; stdin and stdout are not terminals."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave,
                            close_fds=True)  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=timeout), b"".join(chunks).decode(errors="replace")
