"""celeriac vs Celery: enqueue rate, drain rate, round-trip latency, start-up, CPU per task.

    python benchmarks/run.py                      # embedded brokers, ~4 minutes
    python benchmarks/run.py --quick              # small counts, a smoke test of the script
    python benchmarks/run.py --broker redis://127.0.0.1:6379/14
    python benchmarks/run.py --broker amqp://guest:guest@127.0.0.1:5672//

Systems: ``celeriac`` (the compiled build), ``celeriac-plain`` (the plain-Python build),
``celeriac-base`` (the compiled build of another commit, for an A/B of a change) and
``celery``. Each runs its client and worker processes on its own interpreter and imports its
library from there: ``--python celeriac=PATH,celeriac-plain=PATH`` (``benchmarks/builds.sh``
makes both environments), this interpreter for a system not named. The report says which
build each celeriac system ran, and the run stops if ``celeriac-plain`` is not plain, or a
``celeriac`` given with ``--python`` is not compiled (without it, ``celeriac`` is whatever
build this interpreter has).

By default celeriac runs on its embedded SQLite broker and Celery on the closest embedded
kombu transport (SQLAlchemy on SQLite; ``--celery-embedded filesystem`` for the other one).
With ``--broker`` both run on the same network broker (a Redis database is flushed before
every scenario: give one that holds nothing else). Results go to a SQLite result database
in every case unless ``--backend`` names another. Tables are printed as Markdown and saved,
with the raw numbers (JSON) and the profiles, under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import scenarios
from report import machine_info, markdown, save_profiles
from targets import LIBRARIES, TargetFactory, importable, library, probe, scheme

SYSTEMS = ("celeriac", "celery")  # the default; LIBRARIES has them all
#: How ``celeriac._compiled.build_description()`` starts for the build a system stands for.
BUILDS = {"celeriac": "compiled", "celeriac-plain": "plain", "celeriac-base": "compiled"}
SCENARIOS = ("enqueue", "drain", "latency", "startup", "profile")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated, in the order they take turns: {','.join(LIBRARIES)}",
    )
    parser.add_argument(
        "--python",
        default="",
        help="each system's interpreter, e.g. celeriac=.venvs/compiled/bin/python,"
        "celeriac-plain=.venvs/plain/bin/python (default: this one)",
    )
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios: {','.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--broker", default=None, help="a network broker URL for both libraries (default: embedded)"
    )
    parser.add_argument(
        "--backend", default=None, help="result backend URL (default: a SQLite file per scenario)"
    )
    parser.add_argument(
        "--celery-embedded",
        choices=("sqla", "filesystem"),
        default="sqla",
        help="Celery's embedded transport when --broker is not given",
    )
    parser.add_argument(
        "--worker-args",
        default="",
        help="extra worker options for both libraries, e.g. '--prefetch-multiplier 16'",
    )
    parser.add_argument("--tasks", type=int, default=20000, help="tasks per celeriac run")
    parser.add_argument(
        "--celery-tasks",
        type=int,
        default=500,
        help="tasks per Celery run (Celery's embedded transports are slow)",
    )
    parser.add_argument("--batch", type=int, default=500, help="delay_many batch size")
    parser.add_argument("--latency-calls", type=int, default=500)
    parser.add_argument("--celery-latency-calls", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument(
        "--drain-runs",
        type=int,
        default=3,
        help="runs of each prefork drain; the run with the median rate is reported",
    )
    parser.add_argument("--startup-runs", type=int, default=5)
    parser.add_argument("--celery-startup-runs", type=int, default=3)
    parser.add_argument("--profile-tasks", type=int, default=3000)
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=120.0,
        help="seconds a drain may take before it is reported as partial",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small counts: check that everything runs (numbers meaningless)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="directory for results.md, results.json and profiles"
    )
    options = parser.parse_args(argv)
    if options.quick:
        options.tasks = options.celery_tasks = 300
        options.latency_calls = options.celery_latency_calls = 10
        options.warmup = 2
        options.startup_runs = options.celery_startup_runs = options.drain_runs = 1
        options.profile_tasks = 300
    options.systems = [name for name in options.systems.split(",") if name]
    options.only = [name for name in options.only.split(",") if name]
    # Not resolved: a venv's bin/python is a symlink, and the venv is where it points from.
    options.python = {
        name: os.path.abspath(path)
        for name, _, path in (item.partition("=") for item in options.python.split(",") if item)
    }
    for name in [*options.systems, *options.python]:
        if name not in LIBRARIES:
            parser.error(f"unknown system {name!r}: choose from {', '.join(LIBRARIES)}")
    return options


def available_systems(options: argparse.Namespace, factory: TargetFactory) -> list[str]:
    """The systems that can run on the chosen broker; a missing transport is skipped."""
    chosen = []
    for system in options.systems:
        if library(system) == "celeriac" and options.broker:
            kind = scheme(options.broker)
            module = "celeriac.transports." + ("redis" if kind.startswith("redis") else "amqp")
            if not importable(module, system, factory.python(system)):
                print(f"# skipping {system}: {module} does not import yet", file=sys.stderr)
                continue
        chosen.append(system)
    return chosen


def installs(options: argparse.Namespace, factory: TargetFactory) -> dict[str, str]:
    """One report line per system: what its interpreter runs. Stops on a wrong build."""
    lines = {}
    for system in options.systems:
        python = factory.python(system)
        info = probe(system, python)
        versions = ", ".join(f"{name} {version}" for name, version in info["versions"].items())
        line = f"{versions}; Python {info['python']} `{python}`, library from `{info['from']}`"
        if library(system) == "celeriac":
            build = str(info["build"])
            line = f"**{build}**, from {info['source']}; {line}"
            # celeriac-plain names its build; celeriac does when --python gives its interpreter,
            # else it is whatever build this one has (a development install is plain).
            pinned = system in options.python or system != "celeriac"
            if pinned and not build.startswith(BUILDS[system]):
                raise SystemExit(
                    f"{system} must be the {BUILDS[system]} build, but {python} has celeriac "
                    f"{build} (from {info['from']}); benchmarks/builds.sh makes both builds"
                )
        lines[system] = line
    return lines


class Bench:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.factory = TargetFactory(
            options.broker,
            options.backend,
            options.celery_embedded,
            options.worker_args.split(),
            options.python,
        )
        self.results: dict[str, Any] = {
            "machine": machine_info(),
            "options": {key: str(value) for key, value in vars(options).items()},
            "runs": [],
        }

    def count(self, system: str) -> int:
        return self.options.tasks if library(system) == "celeriac" else self.options.celery_tasks

    def run(self, system: str, scenario: str, measure: Callable[..., Any], **labels: Any) -> Any:
        """Run one measurement on a fresh target; record and echo it."""
        target = self.factory.make(system)
        started = time.monotonic()
        try:
            value = measure(target)
        except Exception as exc:  # one failed scenario must not lose the others' numbers
            value = {"error": str(exc)[-1500:]}
        finally:
            target.cleanup()
        record = {
            "system": system,
            "scenario": scenario,
            **labels,
            "value": value,
            "elapsed": time.monotonic() - started,
        }
        self.results["runs"].append(record)
        print(f"# {system:14} {scenario:8} {labels} -> {short(value)}", file=sys.stderr, flush=True)
        return value

    def all(self, systems: list[str]) -> None:
        # Scenario by scenario, every system in turn: this VM's speed drifts by 10-20 %
        # within minutes, and the libraries are compared with each other, so each pair of
        # measurements is taken as close together in time as possible.
        only = self.options.only
        if "enqueue" in only:
            for system in systems:
                self.enqueue(system)
        if "drain" in only:
            self.drain(systems)
        for system in systems:
            if "latency" in only:
                self.latency(system)
        if "startup" in only and systems:
            self.interpreter_startup(systems[0])
            for system in systems:
                self.startup(system)
        for system in systems:
            if "profile" in only and library(system) == "celeriac":
                self.profile(system)

    def enqueue(self, system: str) -> None:
        count = self.count(system)
        self.run(system, "enqueue", lambda t: scenarios.enqueue(t, count, 1), method="delay()")
        if library(system) == "celeriac":
            batch = self.options.batch
            self.run(
                system,
                "enqueue",
                lambda t: scenarios.enqueue(t, count, batch),
                method=f"delay_many, batches of {batch}",
            )

    def drain(self, systems: list[str]) -> None:
        timeout = self.options.drain_timeout
        for results in (False, True):
            # Each prefork drain runs a few times, the systems taking turns, and the median
            # run stands for each.
            runs: dict[str, list[Any]] = {system: [] for system in systems}
            for _ in range(self.options.drain_runs):
                for system in systems:
                    count = self.count(system)
                    runs[system].append(
                        self.run(
                            system,
                            "drain-run",
                            lambda t, c=count, r=results: scenarios.drain(
                                t, c, r, "prefork", 2, timeout
                            ),
                            pool="prefork -c 2",
                            results=results,
                        )
                    )
            for system in systems:
                self.add_median_drain(system, results, runs[system])
        for system in systems:
            if library(system) == "celeriac":  # Celery's solo drain on SQLAlchemy takes minutes
                count = self.count(system)
                self.run(
                    system,
                    "drain",
                    lambda t, c=count: scenarios.drain(t, c, True, "solo", 1, timeout),
                    pool="solo",
                    results=True,
                )

    def add_median_drain(self, system: str, results: bool, runs: list[Any]) -> None:
        finished = [run for run in runs if isinstance(run, dict) and "rate" in run]
        if not finished:
            value: Any = runs[-1]
        else:
            finished.sort(key=lambda run: float(run["rate"]))
            value = {**finished[len(finished) // 2], "rates": [run["rate"] for run in finished]}
        self.results["runs"].append(
            {
                "system": system,
                "scenario": "drain",
                "pool": "prefork -c 2",
                "results": results,
                "value": value,
            }
        )

    def latency(self, system: str) -> None:
        celeriac = library(system) == "celeriac"
        calls = self.options.latency_calls if celeriac else self.options.celery_latency_calls
        warmup = self.options.warmup if celeriac else min(self.options.warmup, 3)
        # Celery's round trips on the embedded transport take about a second each.
        for pool in ("prefork", "solo") if celeriac else ("prefork",):
            self.run(
                system,
                "latency",
                lambda t, p=pool: scenarios.latency(t, calls, warmup, p),
                pool="prefork -c 2" if pool == "prefork" else "solo",
            )

    def interpreter_startup(self, system: str) -> None:
        """The floor under every worker's start-up: Python itself (``system``'s interpreter)."""
        python = self.factory.python(system)
        samples = [scenarios.interpreter_startup(python) for _ in range(self.options.startup_runs)]
        self.add_startup("python -c pass", "(no worker)", samples)

    def startup(self, system: str) -> None:
        celeriac = library(system) == "celeriac"
        runs = self.options.startup_runs if celeriac else self.options.celery_startup_runs
        for pool in ("prefork", "solo"):
            samples = [
                self.run(
                    system, "startup-run", lambda t, p=pool: scenarios.startup(t, p), pool=pool
                )
                for _ in range(runs)
            ]
            self.add_startup(system, "prefork -c 2" if pool == "prefork" else "solo", samples)

    def add_startup(self, system: str, pool: str, samples: list[Any]) -> None:
        numbers = [sample for sample in samples if isinstance(sample, float)]
        summary = (
            {
                "runs": len(numbers),
                "median": statistics.median(numbers),
                "min": min(numbers),
                "max": max(numbers),
            }
            if numbers
            else {"error": "no run finished"}
        )
        self.results["runs"].append(
            {"system": system, "scenario": "startup", "pool": pool, "value": summary}
        )

    def profile(self, system: str) -> None:
        count, batch = self.options.profile_tasks, self.options.batch
        self.run(
            system,
            "profile",
            lambda t: {"profile": scenarios.profile_publish(t, count, 1, 20)},
            part="publish: delay()",
        )
        self.run(
            system,
            "profile",
            lambda t: {"profile": scenarios.profile_publish(t, count, batch, 20)},
            part=f"publish: delay_many({batch})",
        )
        for pool, concurrency in (("solo", 1), ("prefork", 2)):
            self.run(
                system,
                "profile",
                lambda t, p=pool, c=concurrency: scenarios.profile_worker(t, count, 30, p, c),
                part=f"worker -P {pool} -c {concurrency}",
            )


def short(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(
            f"{key}={fmt(item)}" for key, item in value.items() if key not in ("profile", "samples")
        )
    return fmt(value)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}"
    return str(value)[:200]


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    out = options.out or Path(tempfile.mkdtemp(prefix="celeriac-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(options)
    bench.results["machine"].update(installs(options, bench.factory))
    systems = available_systems(options, bench.factory)
    bench.results["command"] = shlex.join(["python", "benchmarks/run.py", *sys.argv[1:]])
    started = time.monotonic()
    load_before = os.getloadavg()
    bench.all(systems)
    bench.results["total_seconds"] = time.monotonic() - started
    bench.results["machine"]["load average (1 min) before / after"] = " / ".join(
        f"{load[0]:.2f}" for load in (load_before, os.getloadavg())
    )
    (out / "results.json").write_text(json.dumps(bench.results, indent=2))
    report = markdown(bench.results, bench.factory, systems)
    (out / "results.md").write_text(report)
    profiles = save_profiles(bench.results, out)
    print(report)
    print(
        f"# total {bench.results['total_seconds']:.0f} s; raw numbers and profiles in {out}: "
        + ", ".join(path.name for path in [out / "results.json", *profiles]),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
