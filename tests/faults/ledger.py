"""The task ledger: every run of a task appends its id, and the test judges the lines.

Each run of a task writes two lines to ``<project>/ledger``: ``start <id> <ppid> <pid>
<time>`` when it begins and ``done <id> <ppid> <pid> <time>`` when its work is over (one
``write`` per line on an ``O_APPEND`` file: lines of concurrent processes never mix). A
task has *run* once per ``done`` line. The pids and times tell whether a fault hit a run:
its process (or the worker that was its parent) was killed, or the broker connection was
cut while it ran or shortly after. Then a loss or a duplicate is explained by that fault.

The verdicts:

* ``acks_late`` (acked when the task is over): nothing is lost; a task runs again only if
  its earlier runs were hit by a fault (they ended, but their acks never went out);
* early ack (acked when the task starts): a lost task had a run cut short by a fault, and
  at most ``concurrency x faults`` are lost; nothing runs twice, except a task killed with
  its worker while its ack was still on the way: it started at most ``EARLY_ACK_WINDOW``
  before the kill (the ack leaves within milliseconds, unless the machine is starved).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.e2e.worker_harness import load, wait_until

#: The tasks of every fault test. ``late`` is ``reject_on_worker_lost``, as Celery's docs
#: advise for a task that must not be lost: without it a task whose child dies fails with
#: WorkerLostError and is acked (tests/e2e/test_worker_lost.py covers that case).
TASKS = """
def ledger(phase, task_id):
    note("ledger", f"{phase} {task_id} {os.getppid()} {os.getpid()} {time.time():.6f}")


@app.task(bind=True, acks_late=True, reject_on_worker_lost=True)
def late(self, seconds):
    ledger("start", self.request.id)
    time.sleep(seconds)
    ledger("done", self.request.id)


@app.task(bind=True)
def early(self, seconds):
    ledger("start", self.request.id)
    time.sleep(seconds)
    ledger("done", self.request.id)


# The worker may reach the broker another way than the test (through a proxy).
if os.environ.get("FAULTS_WORKER_BROKER"):
    app.conf.broker_url = os.environ["FAULTS_WORKER_BROKER"]
"""

#: Results are not needed (the ledger is the record) and would only add writes.
SETTINGS: dict[str, Any] = {
    "task_ignore_result": True,
    "broker_connection_retry": True,
    "broker_connection_max_retries": None,
}

CONCURRENCY = 2
#: Reserved and not yet acknowledged at most (``worker_prefetch_multiplier`` 4): what one
#: fault can leave finished but unacked, so run again.
PREFETCH = CONCURRENCY * 4
#: An early ack goes out when the worker sees the task start (a few ms later); a worker
#: killed before that, with the task run to its end, has it run again. Generous: a busy
#: machine delays the worker's loop, and the ack with it.
EARLY_ACK_WINDOW = 0.5
#: A run that ended this long before a connection cut had its ack sent before it: a child
#: reports its runs once it has run every job it holds (8 of 20-40 ms at most here), and
#: the ack follows within milliseconds.
CUT_WINDOW = 0.5
#: A run that started this soon after a cut began before the worker could know of it: the
#: worker learns of a lost connection at its next call to the broker (an ack goes out at
#: most a task length, 40 ms, plus 5 ms after the previous task ends), and a pool child
#: starts its next queued job meanwhile. Its ack cannot reach the broker, which delivers
#: the message again.
UNSEEN_CUT = 0.1

KINDS = ("late", "early")


def publish(module: ModuleType, kind: str, rng: random.Random, count: int) -> list[str]:
    """Send ``count`` tasks of 20-40 ms (long enough for a fault to find some running);
    their ids."""
    task = getattr(module, kind)
    return [r.id for r in task.delay_many([(rng.uniform(0.02, 0.04),) for _ in range(count)])]


def run_some_more(directory: Path, rng: random.Random) -> None:
    """Wait until 8-30 more tasks have run: a random point of the drain, under load."""
    target = len(finished(read(directory))) + rng.randint(8, 30)
    wait_until(lambda: len(finished(read(directory))) >= target, timeout=30, message="progress")


def load_app(
    project: Callable[[dict[str, str]], Path], directory: Path, **settings: Any
) -> tuple[Path, ModuleType]:
    """Write and import (client side) the ledger task module."""
    return load(project, directory, TASKS, **{**SETTINGS, **settings})


@dataclass(frozen=True)
class Run:
    task_id: str
    ppid: int
    pid: int
    started: float
    #: None: cut short (its process died, or it is running now).
    ended: float | None


def read(directory: Path) -> list[Run]:
    """The runs in the ledger, in the order they started."""
    path = directory / "ledger"
    text = path.read_text() if path.exists() else ""
    lines = text.splitlines()
    if text and not text.endswith("\n"):
        lines.pop()  # being written right now
    runs: list[Run] = []
    open_runs: dict[int, int] = {}  # pid → index of the run it is in (one at a time)
    for line in lines:
        phase, task_id, ppid, pid, at = line.split()
        if phase == "start":
            open_runs[int(pid)] = len(runs)
            runs.append(Run(task_id, int(ppid), int(pid), float(at), None))
        else:
            index = open_runs.pop(int(pid))
            runs[index] = Run(task_id, int(ppid), int(pid), runs[index].started, float(at))
    return runs


def finished(runs: Iterable[Run]) -> Counter[str]:
    """Finished runs per task id."""
    return Counter(run.task_id for run in runs if run.ended is not None)


@dataclass
class Faults:
    """What the test did, to explain what the ledger shows."""

    count: int = 0
    #: Killed processes (a whole worker's: the main one and its children) -> when.
    killed: dict[int, float] = field(default_factory=dict)
    #: time.time() of each connection cut.
    cuts: list[float] = field(default_factory=list)

    def kill(self, pids: Iterable[int], at: float) -> None:
        """``at``: ``time.time()`` taken just before the signals went."""
        self.count += 1
        self.killed.update(dict.fromkeys(pids, at))

    def cut(self, at: float) -> None:
        self.count += 1
        self.cuts.append(at)

    def killed_at(self, run: Run) -> float | None:
        """When the process of ``run``, or its worker, was killed (None: it was not)."""
        return self.killed.get(run.pid, self.killed.get(run.ppid))

    def hit(self, run: Run) -> bool:
        """Whether a fault could leave this run's message unsettled."""
        if self.killed_at(run) is not None:
            return True
        ended = run.ended if run.ended is not None else float("inf")
        return any(run.started - UNSEEN_CUT <= cut <= ended + CUT_WINDOW for cut in self.cuts)


def settled(runs: list[Run], sent: Collection[str], faults: Faults) -> bool:
    """Every task has finished a run, or had one cut short by a fault (an early-ack loss)."""
    done = finished(runs)
    lost_to_faults = {run.task_id for run in runs if run.ended is None and faults.hit(run)}
    return all(done[task_id] or task_id in lost_to_faults for task_id in sent)


def settle(
    directory: Path,
    sent: Collection[str],
    faults: Faults,
    timeout: float = 30.0,
    quiet: float = 1.0,
) -> list[Run]:
    """The ledger once settled and then unchanged for ``quiet`` seconds: long enough for a
    message of a dead consumer to come back and show up as a second run. At ``timeout``,
    the ledger as it is (the checks then name what is missing)."""
    deadline = time.monotonic() + timeout
    runs = read(directory)
    while time.monotonic() < deadline:
        if settled(runs, sent, faults):
            time.sleep(quiet)
            again = read(directory)
            if again == runs:
                return runs
            runs = again
            continue
        time.sleep(0.05)
        runs = read(directory)
    return runs


@dataclass(frozen=True)
class Tally:
    """One scenario's counts, for the report table (docs/faults.md)."""

    scenario: str
    sent: int
    runs: int
    lost: int
    duplicates: int
    #: Duplicates whose earlier run had ended before the run its killed process was in.
    finished_earlier: int
    faults: int


#: Tallies of this session, printed at its end (conftest.py).
TALLIES: list[Tally] = []


def check(
    scenario: str,
    kind: str,
    runs: list[Run],
    sent: list[str],
    faults: Faults,
    only_running: bool = False,
) -> Tally:
    """Judge the ledger per the module docstring; the counts are recorded either way.

    ``only_running``: a task may run again only if its earlier run was *the* run of a
    killed process at the kill (the last one it started). Right for a killed pool child,
    which holds no other unsettled work; a whole worker also holds finished runs whose acks
    are on their way.
    """
    done = finished(runs)
    lost = [task_id for task_id in sent if not done[task_id]]
    duplicates = sum(done.values()) - len(done)
    earlier = finished_before_the_kill(runs, faults)
    tally = Tally(
        scenario, len(sent), sum(done.values()), len(lost), duplicates, earlier, faults.count
    )
    TALLIES.append(tally)

    assert set(done) <= set(sent), f"runs of tasks never sent: {set(done) - set(sent)}"
    if kind == "late":
        assert not lost, f"{tally}: acks_late tasks lost: {lost[:10]}"
        unexplained = [
            task_id
            for task_id, count in done.items()
            if count > 1 and not explained_repeats(runs, task_id, faults)
        ]
        assert not unexplained, f"{tally}: ran again with no fault to explain it: " + "; ".join(
            describe(runs, task_id, faults) for task_id in unexplained[:5]
        )
        assert duplicates <= PREFETCH * faults.count, tally
        if only_running:
            assert not earlier, f"{tally}: tasks that had finished before the kill ran again"
    else:
        twice = [
            task_id
            for task_id, count in done.items()
            if count > 1 and not early_ack_in_flight(runs, task_id, faults)
        ]
        assert not twice, f"{tally}: early-ack tasks ran twice: " + "; ".join(
            describe(runs, task_id, faults) for task_id in twice[:5]
        )
        cut_short = {run.task_id for run in runs if run.ended is None and faults.hit(run)}
        unexplained = [task_id for task_id in lost if task_id not in cut_short]
        assert not unexplained, f"{tally}: lost though not running at a fault: {unexplained}"
        assert len(lost) <= CONCURRENCY * faults.count, tally
    return tally


def describe(runs: list[Run], task_id: str, faults: Faults) -> str:
    """A task's runs, in seconds from the first fault."""
    times = [*faults.cuts, *faults.killed.values()]
    zero = min(times) if times else min(r.started for r in runs)

    def at(value: float | None) -> str:
        return "-" if value is None else f"{value - zero:+.3f}"

    def span(run: Run) -> str:
        killed = faults.killed_at(run)
        end = f" (killed {at(killed)})" if killed is not None else ""
        return f"pid {run.pid} {at(run.started)}..{at(run.ended)}{end}"

    cuts = ", ".join(at(cut) for cut in faults.cuts)
    spans = ", ".join(span(run) for run in runs if run.task_id == task_id)
    return f"{task_id}: {spans}" + (f" (cuts at {cuts})" if cuts else "")


def explained_repeats(runs: list[Run], task_id: str, faults: Faults) -> bool:
    """Every finished run of the task but the last was hit by a fault (its ack was lost):
    the last one settled it."""
    done = [run for run in runs if run.task_id == task_id and run.ended is not None]
    return all(faults.hit(run) for run in done[:-1])


def early_ack_in_flight(runs: list[Run], task_id: str, faults: Faults) -> bool:
    """Every finished run of the task but the last started in a process killed at most
    ``EARLY_ACK_WINDOW`` later: its early ack may not have reached the broker."""
    done = [run for run in runs if run.task_id == task_id and run.ended is not None]
    for run in done[:-1]:
        at = faults.killed_at(run)
        if at is None or run.started < at - EARLY_ACK_WINDOW:
            return False
    return True


def finished_before_the_kill(runs: list[Run], faults: Faults) -> int:
    """Runs that had to be repeated (every finished run of a task but its last) in killed
    processes that were not the last run their process started: they had ended before the
    run the kill interrupted."""
    last_of_process = {run.pid: run for run in runs}  # in start order: the last one wins
    last_of_task = {run.task_id: run for run in runs if run.ended is not None}
    return sum(
        1
        for run in runs
        if run.ended is not None
        and last_of_task[run.task_id] is not run
        and faults.killed_at(run) is not None
        and last_of_process[run.pid] is not run
    )
