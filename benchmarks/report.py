"""The machine description and the Markdown tables of a benchmark run."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from targets import REPO_DIR, TargetFactory

Run = dict[str, Any]
_TEXT_COLUMNS = frozenset({"system", "API", "pool", "worker pool", "results", "check"})


def machine_info() -> dict[str, str]:
    """The machine and the checkout; what each system ran is added by the runner."""
    commit = subprocess.run(
        ["git", "-C", str(REPO_DIR), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{_cpu_model()}, {os.cpu_count()} cores",
        "memory": _memory(),
        "os": f"{platform.system()} {platform.release()}",
        "sqlite": sqlite3.sqlite_version,
        "checkout": f"git {commit or '?'}",
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _memory() -> str:
    try:
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        return f"{int(first.split()[1]) / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        return "?"


def _problem(run: Run) -> str | None:
    value = run["value"]
    if isinstance(value, dict) and "error" in value:
        lines = str(value["error"]).splitlines()
        return f"failed: {lines[-1] if lines else '?'}"
    if isinstance(value, dict) and "unsupported" in value:
        return str(value["unsupported"])
    return None


def _table(
    title: str,
    columns: list[str],
    runs: list[Run],
    label: Callable[[Run], list[str]],
    cells: Callable[[Run], list[str]],
) -> list[str]:
    """A Markdown table: ``label`` cells, then measured cells or the reason there are none."""
    if not runs:
        return []
    lines = ["", f"### {title}", "", f"| {' | '.join(columns)} |"]
    lines.append(
        "|" + "|".join("---" if name in _TEXT_COLUMNS else "--:" for name in columns) + "|"
    )
    for run in runs:
        first = label(run)
        problem = _problem(run)
        rest = [problem] if problem else cells(run)
        rest += [""] * (len(columns) - len(first) - len(rest))
        lines.append(f"| {' | '.join(first + rest)} |")
    return lines


def _enqueue_cells(run: Run) -> list[str]:
    value = run["value"]
    return [f"{value['count']:,}", f"{value['rate']:,.0f}", f"{value['cpu_us_per_task']:,.0f}"]


def _drain_cells(run: Run) -> list[str]:
    value = run["value"]
    if value.get("partial"):
        return [
            f"{value['done']:,} of {value['count']:,}",
            f"{value['rate']:,.0f}",
            "",
            f"{value['seconds']:.1f} (time limit)",
            "",
            "",
            "",
            "partial",
        ]
    children = f"{value['children_cpu_us']:,.0f}" if run["pool"] != "solo" else "n/a"
    broker = value.get("broker_cpu_us")
    rates = value.get("rates") or [value["rate"]]
    return [
        f"{value['count']:,}",
        f"{value['rate']:,.0f}",
        " / ".join(f"{rate:,.0f}" for rate in rates),
        f"{value['seconds']:.2f}",
        f"{value['parent_cpu_us']:,.0f}",
        children,
        "n/a" if broker is None else f"{broker:,.0f}",
        str(value["verified"]),
    ]


def _latency_cells(run: Run) -> list[str]:
    value = run["value"]
    return [str(value["calls"])] + [
        f"{value[key]:.2f}" for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms")
    ]


def _startup_cells(run: Run) -> list[str]:
    value = run["value"]
    return [str(value["runs"])] + [f"{value[key]:.3f}" for key in ("median", "min", "max")]


def markdown(results: dict[str, Any], factory: TargetFactory, systems: list[str]) -> str:
    runs: list[Run] = results["runs"]
    lines = ["| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in results["machine"].items()]
    lines += ["", "Brokers:", ""]
    lines += [f"- **{system}**: {factory.describe(system)}" for system in systems]
    if factory.worker_args:
        lines += ["", f"Extra worker options: `{' '.join(factory.worker_args)}`"]
    lines += ["", f"Command: `{results['command']}`"]

    def pick(scenario: str) -> list[Run]:
        return [run for run in runs if run["scenario"] == scenario]

    lines += _table(
        "Enqueue (client, one process)",
        ["system", "API", "tasks", "tasks/s", "client CPU µs/task"],
        pick("enqueue"),
        lambda run: [run["system"], run["method"]],
        _enqueue_cells,
    )
    lines += _table(
        "Drain (queue filled first, then the worker started)",
        [
            "system",
            "pool",
            "results",
            "tasks",
            "tasks/s (median run)",
            "every run",
            "seconds",
            "worker main CPU µs/task",
            "pool children CPU µs/task",
            "broker server CPU µs/task",
            "check",
        ],
        pick("drain"),
        lambda run: [run["system"], run["pool"], "on" if run["results"] else "off"],
        _drain_cells,
    )
    lines += _table(
        "Round-trip latency of `delay().get()` (sequential, after warm-up)",
        ["system", "worker pool", "calls", "p50 ms", "p90 ms", "p99 ms", "max ms"],
        pick("latency"),
        lambda run: [run["system"], run["pool"]],
        _latency_cells,
    )
    lines += _table(
        "Worker start-up: spawn → first (already queued) task done",
        ["system", "pool", "runs", "median s", "min s", "max s"],
        pick("startup"),
        lambda run: [run["system"], run["pool"]],
        _startup_cells,
    )
    return "\n".join(lines) + "\n"


def save_profiles(results: dict[str, Any], out: Path) -> list[Path]:
    written = []
    for index, run in enumerate(results["runs"]):
        value = run["value"]
        if run["scenario"] == "profile" and isinstance(value, dict) and "profile" in value:
            name = run["part"].split(":")[0].replace(" ", "").replace("-", "")
            path = out / f"profile-{index}-{name}.txt"
            header = f"# {run['system']}: {run['part']}\n"
            if "rate_under_profiler" in value:
                header += (
                    f"# {value['count']} tasks, {value['rate_under_profiler']:,.0f} "
                    "tasks/s under the profiler\n"
                )
            path.write_text(header + value["profile"])
            written.append(path)
    return written
