"""Start and stop helper daemons (registry, token server) for tests.

Every process is started with its output in a log file, waited for with a
deadline, and stopped by its own PID only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1
# Loaded here, not in the forked child, where dlopen could meet a lock held by another thread.
_LIBC = ctypes.CDLL(None, use_errno=True)


class ProcessError(RuntimeError):
    """A helper process failed to start or died early."""


@dataclass
class ManagedProcess:
    """A running child process and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """The child's process ID."""
        return self.popen.pid

    def alive(self) -> bool:
        """True while the child has not exited."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; return the exit status."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(timeout)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_process(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    stderr_path: Path | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> ManagedProcess:
    """Start ``argv`` with stdout in ``log_path`` (stderr too, unless ``stderr_path``)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # The child keeps its own copies of the descriptors, so ours can be closed right away.
    with log_path.open("ab") as out:
        err = stderr_path.open("ab") if stderr_path else None
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err if err else subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                # Own process group: a Ctrl-C in the terminal reaches pytest only, and
                # pytest's teardown then stops the process by PID.
                process_group=0,
                preexec_fn=_die_with_parent,
            )
        finally:
            if err:
                err.close()
    return ManagedProcess(name=name, popen=popen, log_path=log_path)


def wait_for_http(url: str, process: ManagedProcess, *, timeout: float = 20.0) -> None:
    """Poll ``url`` until it answers with any HTTP status; fail if ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise ProcessError(
                f"{process.name} exited with {process.popen.returncode} before answering "
                f"{url}; log {process.log_path}:\n{process.log_tail()}"
            )
        if _answers(url):
            return
        time.sleep(0.05)
    raise ProcessError(
        f"{process.name} did not answer {url} within {timeout} s; "
        f"log {process.log_path}:\n{process.log_tail()}"
    )


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError as exc:
        exc.close()  # a 401 or 404 still proves the server is up
        return True
    except OSError:
        return False


def _die_with_parent() -> None:
    """Runs in the child: ask Linux for SIGTERM when the parent dies.

    Without it, a killed pytest run would leave registries listening.  Caveat:
    "parent" is the forking thread, so start processes from a long-lived thread.
    """
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def open_files_under(root: Path) -> list[str]:
    """Files below ``root`` that this process has open."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # closed while we looked
            target = os.readlink(fd)
            if target.startswith(str(root.resolve())):
                found.append(target)
    return found
