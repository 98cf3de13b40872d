"""Helpers for tests that run real workers: a worker subprocess started through the CLI.

``WorkerProcess`` starts ``python -m celeriac -A <app> worker ...`` in a project directory,
waits until the worker logs that it is ready, and stops it (warm shutdown by default),
keeping its output for assertions.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

READY_LINE = "ready."


class WorkerProcess:
    def __init__(self, project: Path, app: str, args: Sequence[str] = (),
                 loglevel: str = "INFO", env: dict[str, str] | None = None) -> None:
        self.project = project
        self.log_path = project / f"worker-{time.monotonic_ns()}.log"
        command = [sys.executable, "-m", "celeriac", "-A", app, "worker", "-l", loglevel,
                   *args]
        self.log_file = open(self.log_path, "wb")  # noqa: SIM115 - kept open while running
        self.process = subprocess.Popen(
            command, cwd=project, stdout=self.log_file, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(project), **(env or {})},
        )

    @property
    def output(self) -> str:
        if not self.log_file.closed:  # still readable after stop()
            self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 15.0) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY_LINE in self.output:
                return self
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n"
                                     f"{self.output}")
            time.sleep(0.02)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.output}")

    def wait_for_output(self, text: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not in worker output after {timeout}s:\n{self.output}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()
        return self.process.returncode

    def __enter__(self) -> WorkerProcess:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_project(directory: Path, files: dict[str, str]) -> Path:
    """Write a small project (module name → source) into ``directory``."""
    for name, source in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return directory
