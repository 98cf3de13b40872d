"""Where a scenario runs: which system, which broker and result backend, a fresh state.

A system is a library as one interpreter has it installed: ``celeriac`` and
``celeriac-plain`` are the compiled and the plain-Python builds of celeriac (each from the
environment of the interpreter given for it, ``--python``), ``celery`` is Celery.

Embedded brokers get a new temporary directory per scenario (a new database file), so no
scenario sees another's rows, indexes or WAL. A network broker (``--broker redis://…`` or
``amqp://…``) is shared: its queue (Redis: its whole numbered database) is emptied before
each scenario.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent

#: Every system the benchmark knows, and the library it imports.
#: ``celeriac-base``: the compiled build of another commit, for an A/B of a change
#: (``--python celeriac-base=<its venv's python>``).
LIBRARIES = {
    "celeriac": "celeriac",
    "celeriac-plain": "celeriac",
    "celeriac-base": "celeriac",
    "celery": "celery",
}


def library(system: str) -> str:
    """``celeriac`` for either celeriac build, ``celery`` for Celery."""
    return LIBRARIES[system]


@dataclass
class Target:
    """One library on one broker and result backend, with a private scratch directory."""

    system: str  # a key of LIBRARIES
    python: str  # the interpreter its client and worker processes run on
    broker: str
    backend: str
    workdir: Path
    broker_options: dict[str, object] = field(default_factory=dict)
    #: The SQLite file holding results, when the backend is one (to count stored results).
    results_db: Path | None = None
    #: Extra ``worker`` command-line arguments (``--worker-args``), e.g. a prefetch multiplier.
    worker_args: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = system_env(self.system)
        env.update(
            BENCH_BROKER=self.broker,
            BENCH_BACKEND=self.backend,
            BENCH_BROKER_OPTIONS=json.dumps(self.broker_options),
        )
        return env

    @property
    def network_broker(self) -> bool:
        """Whether the broker is a local server (Redis, RabbitMQ) whose CPU can be read."""
        return scheme(self.broker).startswith(("redis", "amqp", "pyamqp"))

    def marker(self, name: str) -> Path:
        return self.workdir / f"{name}.marker"

    def client(self, *args: str, timeout: float = 600) -> dict[str, object]:
        """Run one ``client.py`` action for this target; return its JSON answer."""
        completed = subprocess.run(
            [self.python, str(BENCH_DIR / "client.py"), *args],
            env=self.env(),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if completed.returncode != 0:
            raise RuntimeError(
                f"client {' '.join(args)} for {self.system} failed:\n{completed.stderr[-3000:]}"
            )
        answer: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
        return answer

    def worker_command(self, pool: str, concurrency: int) -> list[str]:
        if library(self.system) == "celeriac":
            return [
                self.python,
                "-m",
                "celeriac",
                "-A",
                "bench_tasks",
                "worker",
                "-P",
                pool,
                "-c",
                str(concurrency),
                "-l",
                "WARNING",
                "-q",
                *self.worker_args,
            ]
        return [
            self.python,
            "-m",
            "celery",
            "-A",
            "bench_tasks",
            "worker",
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-l",
            "WARNING",
            *self.worker_args,
        ]

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


class TargetFactory:
    """Makes a fresh :class:`Target` for every scenario."""

    def __init__(
        self,
        broker: str | None,
        backend: str | None,
        celery_embedded: str,
        worker_args: list[str] | None = None,
        pythons: dict[str, str] | None = None,
    ) -> None:
        self.pythons = pythons or {}
        self.broker = broker
        self.backend = backend
        self.celery_embedded = celery_embedded
        self.worker_args = worker_args or []

    @property
    def broker_label(self) -> str:
        return scheme(self.broker) if self.broker else "embedded"

    def python(self, system: str) -> str:
        """The interpreter ``system`` runs on: the one ``--python`` gave, or this one."""
        return self.pythons.get(system, sys.executable)

    def describe(self, system: str) -> str:
        """Human-readable broker / backend for the report."""
        if self.broker:
            broker = f"{scheme(self.broker)} ({_without_password(self.broker)})"
        elif library(system) == "celeriac":
            broker = "celeriac SQLite (`sqlite:///…`)"
        elif self.celery_embedded == "filesystem":
            broker = "kombu filesystem (`filesystem://`)"
        else:
            broker = "kombu SQLAlchemy on SQLite (`sqla+sqlite:///…`)"
        if self.backend:
            backend = _without_password(self.backend)
        elif self.broker and scheme(self.broker).startswith("redis"):
            backend = "the same Redis database"
        else:
            backend = "SQLite (`db+sqlite:///…`)"
        return f"broker: {broker}; results: {backend}"

    def make(self, system: str) -> Target:
        """A target with its own scratch directory (and a new broker database if embedded).

        The result backend is always configured; "results off" scenarios use tasks with
        ``ignore_result=True``, as a user would.
        """
        workdir = Path(tempfile.mkdtemp(prefix=f"bench-{system}-"))
        results_db = workdir / "results.db"
        backend = self.backend or f"db+sqlite:///{results_db}"
        if not self.backend and self.broker and scheme(self.broker).startswith("redis"):
            backend = self.broker  # Redis for both; emptied with the broker's database
        target = Target(
            system,
            self.python(system),
            "",
            backend,
            workdir,
            results_db=results_db if backend == f"db+sqlite:///{results_db}" else None,
            worker_args=list(self.worker_args),
        )
        if self.broker:
            target.broker = self.broker
            self._empty_shared_broker(target)
        elif library(system) == "celeriac":
            target.broker = f"sqlite:///{workdir / 'broker.db'}"
        elif self.celery_embedded == "filesystem":
            queue_dir = workdir / "queue"
            queue_dir.mkdir()
            target.broker = "filesystem://"
            target.broker_options = {
                "data_folder_in": str(queue_dir),
                "data_folder_out": str(queue_dir),
                "store_processed": False,
            }
        else:
            target.broker = f"sqla+sqlite:///{workdir / 'broker.db'}"
        return target

    def _empty_shared_broker(self, target: Target) -> None:
        url = urlsplit(self.broker or "")
        if url.scheme.startswith("redis"):
            import redis  # only for a Redis run; flushes just the numbered database given

            if not url.path.strip("/"):
                raise SystemExit(
                    "--broker redis://… must name a database (e.g. /14): "
                    "the benchmark empties it before every scenario"
                )
            redis.Redis.from_url(self.broker or "").flushdb()
        else:
            target.client("purge")
        if target.backend.startswith("redis"):
            import redis  # results counted per scenario: start each with an empty store

            redis.Redis.from_url(target.backend).flushdb()


def system_env(system: str) -> dict[str, str]:
    """The environment of ``system``'s processes: the library comes from the interpreter's own
    installation, never from the checkout (that would be the plain sources whatever the
    build), and only the benchmark's modules are added to the path."""
    env = python_env()
    env.update(
        BENCH_SYSTEM=system,
        PYTHONPATH=os.pathsep.join([str(BENCH_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    return env


def python_env() -> dict[str, str]:
    """This environment, but Python may use and write cached bytecode, as an install does.

    Without that (``PYTHONDONTWRITEBYTECODE`` is set on some development machines), every
    process compiles every module it imports from source, and start-up measures the compiler.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


#: Run by each system's interpreter, in its environment: what it imports, and from where.
#: It also compiles the bytecode of the benchmark modules and of an editable (in-checkout)
#: celeriac once, as ``pip install`` does for an installed package.
_PROBE = """
import compileall, importlib.metadata, json, os, platform, sys
library = sys.argv[1]
module = __import__(library)
where = os.path.dirname(module.__file__)
compileall.compile_dir(where, quiet=1)
compileall.compile_dir(sys.argv[2], quiet=1)
info = {"python": platform.python_version(), "from": where, "versions": {}}
for name in sys.argv[3:]:
    try:
        info["versions"][name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        info["versions"][name] = "not installed"
if library == "celeriac":
    from celeriac._compiled import build_description
    info["build"] = build_description()
    url = importlib.metadata.distribution("celeriac").read_text("direct_url.json")
    url = json.loads(url or "{}")
    commit = url.get("vcs_info", {}).get("commit_id")
    editable = url.get("dir_info", {}).get("editable")
    info["source"] = (
        f"commit {commit[:7]}" if commit else "an editable install" if editable else "?"
    )
print(json.dumps(info))
"""
#: The versions the report gives, per library.
_PACKAGES = {
    "celeriac": ("celeriac", "redis", "pika"),
    "celery": ("celery", "kombu", "billiard", "SQLAlchemy", "redis"),
}


def probe(system: str, python: str) -> dict[str, Any]:
    """What ``system`` runs on ``python``: versions, where the library is, celeriac's build.

    Run from a scratch directory, like the benchmark's processes: from the repository root,
    ``python -c`` would import the checkout's ``celeriac`` instead of the installed one.
    """
    name = library(system)
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as scratch:
        completed = subprocess.run(
            [python, "-c", _PROBE, name, str(BENCH_DIR), *_PACKAGES[name]],
            env=system_env(system),
            cwd=scratch,
            capture_output=True,
            text=True,
        )
    if completed.returncode != 0:
        raise SystemExit(
            f"{system}: {python} cannot import {name} (benchmarks/builds.sh makes "
            f"environments that can):\n{completed.stderr[-2000:]}"
        )
    info: dict[str, Any] = json.loads(completed.stdout)
    return info


def scheme(url: str) -> str:
    return urlsplit(url).scheme or url


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":**@")
    return url


def importable(module: str, system: str, python: str) -> bool:
    """Whether ``module`` imports in a fresh interpreter (a transport still being written)."""
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as scratch:
        completed = subprocess.run(
            [python, "-c", f"import {module}"],
            capture_output=True,
            env=system_env(system),
            cwd=scratch,
        )
    return completed.returncode == 0
