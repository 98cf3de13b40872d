"""The prefork pool: ``concurrency`` forked child processes, fed jobs in small batches.

Each child has a pipe to the parent (a socket pair carrying length-prefixed pickles). The
parent keeps up to ``2 * batch`` jobs queued per child and sends a new batch when half of
them are done, so a child always has its next batch waiting and no per-task round trip
stands between two tasks; a child runs every batch that has arrived before it reports.
A child writes the sequence number of the job it is running into shared memory, so when it
dies (or is killed for its hard time limit) the parent knows which job was running (it fails with
``WorkerLostError`` or ``TimeLimitExceeded``), which were done, and which never started
(they are sent to another child). The dead child is replaced.

The same numbers tell the consumer which jobs have started (``started``), so an early ack
goes out when a task starts, not while it waits in a child's queue. A warm stop raises a
shared flag: each child finishes the job it is running and starts no other, and the jobs
still queued are handed back unstarted, for their messages to return to the broker.
"""

from __future__ import annotations

import contextlib
import logging
import math
import mmap
import multiprocessing
import multiprocessing.connection
import os
import pickle
import select
import selectors
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from celeriac import signals, states
from celeriac.exceptions import TimeLimitExceeded, WorkerLostError
from celeriac.protocol.headers import reply_extra
from celeriac.protocol.results import build_meta, exception_to_dict
from celeriac.worker.execute import Executor
from celeriac.worker.job import Completion, Job
from celeriac.worker.pools.base import PoolContext
from celeriac.worker.pools.pipe import MessagePipe

logger = logging.getLogger("celeriac.worker")

_context = multiprocessing.get_context("fork")

#: Jobs per batch sent to a child; up to twice this many are queued per child.
BATCH = 4
#: A task type whose runs lately took under this (seconds) is "quick": its jobs go to one
#: child several at a time (one message and one wake-up for the lot), since each waits at
#: most this long behind another. Other jobs, and task types not seen yet, are spread
#: over the children, so that no job waits behind a long one while a child is idle.
QUICK_JOB = 0.001
#: Weight of the latest run in a task type's running average of run times.
_RUNTIME_WEIGHT = 0.3
#: Shared slot values: sequence number of the running job (-1: none) and its start time.
_IDLE = -1.0
#: The last two shared slots, counted from the end: the warm stop flag, and the highest
#: sequence number whose job must not start any more (``void``).
_STOP = -2
_VOID_THROUGH = -1
#: Results of finished jobs are stored in batches, but never later than this (seconds)
#: after the job ended, even while the next job of the batch runs for minutes.
RESULT_DELAY = 0.005
#: A child reports its finished jobs once it has worked this long since it last did
#: (seconds): a worker killed then runs again only what ended within that span.
REPORT_AFTER = 0.005
_PR_SET_PDEATHSIG = 1
#: How often a warm stop looks at the hard time limits of the tasks it waits for (seconds).
_STOP_UPKEEP = 0.25


def _shared_doubles(values: list[float]) -> memoryview[float]:
    """Floats in anonymous shared memory, seen by children forked later.

    ``mmap(-1, …)`` is a shared anonymous mapping; this avoids importing
    ``multiprocessing.sharedctypes`` (and ctypes with it) on the worker's start-up path.
    """
    memory = mmap.mmap(-1, 8 * len(values))
    slots = memoryview(memory).cast("d")
    for index, value in enumerate(values):
        slots[index] = value
    return slots


def _dumps(value: Any) -> bytes:
    # Plain pickle: Connection.send() built a ForkingPickler and a buffer per call, which
    # cost about a tenth of the consumer's CPU in the drain profile.
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


_loads = pickle.loads


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel kill this child when the worker dies (even by SIGKILL).

    An orphan would go on running its task while the broker hands the same late-acked
    message to another worker, and keep locks and sockets it inherited alive.
    """
    try:
        import ctypes  # only here, in the child: not on the worker's start-up path

        prctl = ctypes.CDLL(None).prctl  # libc's, already loaded into this process
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError, TypeError):
        return  # not Linux: children notice the closed pipe when idle
    if os.getppid() != parent:  # the worker died before prctl took effect
        os._exit(1)


def _child_main(
    pipe: MessagePipe, context: PoolContext, slots: Any, index: int, parent: int
) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides about shutdown
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signals.worker_process_init.send(sender=None)
    executor = Executor(context.app, context.hostname, context.accept, result_delay=RESULT_DELAY)
    base = index * 3
    stop_slot = len(slots) + _STOP
    void_slot = len(slots) + _VOID_THROUGH
    done = 0
    limit = context.max_tasks_per_child or math.inf
    exitcode = 0
    try:
        told_to_stop = False
        while not told_to_stop:
            try:
                batches = pipe.receive_some()  # every batch that has arrived
            except OSError:
                break
            if batches is None:
                break
            completions = []
            runtimes = []
            reported = time.time()
            for payload in batches:
                jobs = _loads(payload)
                if jobs is None:
                    told_to_stop = True
                    break
                for job in jobs:
                    if slots[stop_slot] or done >= limit:
                        break  # the rest go to another child, or back to the broker
                    if job.seq <= slots[void_slot]:  # its message went back to the broker
                        completions.append(Completion(job.seq, states.PENDING, ran=False))
                        runtimes.append(0.0)
                        continue
                    slots[base] = job.seq
                    slots[base + 1] = started = time.time()
                    completions.append(executor.run(job))
                    ended = time.time()
                    runtimes.append(ended - started)
                    slots[base + 2] = job.seq
                    slots[base] = _IDLE
                    done += 1
                    if ended - reported > REPORT_AFTER:
                        # Quick jobs are reported a batch at once; slower ones soon after
                        # they end, so their late acks go out before the next one ends.
                        executor.sink.flush()
                        pipe.send(_dumps((completions, runtimes)))
                        completions, runtimes, reported = [], [], ended
            executor.sink.flush()
            pipe.send(_dumps((completions, runtimes)))
            if done >= limit or slots[stop_slot]:
                break
    except BaseException:  # a bug, not a task's failure (those are completions): say it
        logger.exception("Pool process %s failed", os.getpid())
        exitcode = 1
    finally:
        signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=exitcode)
        executor.app.close()
        os._exit(exitcode)


@dataclass
class _Child:
    index: int
    process: Any
    pipe: MessagePipe
    queued: dict[int, Job] = field(default_factory=dict)


class PreforkPool:
    def __init__(self, context: PoolContext) -> None:
        self.context = context
        self.concurrency = context.concurrency
        self.children: list[_Child] = []
        # per child: running seq, start time, last completed seq; then the warm stop flag
        # and the highest void sequence number
        self.slots: Any = _shared_doubles([_IDLE] * (3 * self.concurrency) + [0.0, _IDLE])
        self.orphans: list[Job] = []
        #: Running average of the run time of each task type (seconds), from the children.
        self.runtimes: dict[str, float] = {}
        self.stopping = False
        # One selector for the pool's lifetime: multiprocessing.connection.wait() builds a
        # new one per call, which was a fifth of the consumer's CPU in the drain profile.
        self.selector = selectors.DefaultSelector()

    # -- processes
    def start(self) -> None:
        for index in range(self.concurrency):
            self.children.append(self._spawn(index))

    def _spawn(self, index: int) -> _Child:
        parent_end, child_end = MessagePipe.pair()
        base = index * 3
        self.slots[base] = _IDLE
        self.slots[base + 2] = _IDLE
        signals.worker_before_create_process.send(sender=self)
        process = _context.Process(
            target=_child_main,
            args=(child_end, self.context, self.slots, index, os.getpid()),
            name=f"ForkPoolWorker-{index + 1}",
        )
        process.start()
        child_end.close()
        child = _Child(index, process, parent_end)
        self.selector.register(parent_end.fileno(), selectors.EVENT_READ, (child, False))
        self.selector.register(process.sentinel, selectors.EVENT_READ, (child, True))
        return child

    # -- jobs
    starts_on_submit = False

    def free_slots(self) -> int:
        return sum(max(2 * BATCH - len(child.queued), 0) for child in self.children)

    def started(self) -> list[int]:
        return [seq for child in self.children for seq in self._started_in(child)]

    def _started_in(self, child: _Child) -> list[int]:
        """The child's queued jobs that have begun (done or running), in the order it runs
        them: every one up to the job it runs now, or else up to the last one it finished."""
        if not child.queued:
            return []
        base = child.index * 3
        reached = int(self.slots[base])
        if reached < 0:
            reached = int(self.slots[base + 2])
        if reached not in child.queued:
            return []  # what it last ran is reported already: the queued ones wait
        begun = []
        for seq in child.queued:
            begun.append(seq)
            if seq == reached:
                break
        return begun

    def active(self) -> int:
        return sum(len(child.queued) for child in self.children) + len(self.orphans)

    def submit(self, jobs: Sequence[Job]) -> None:
        pending = list(self.orphans) + list(jobs)
        self.orphans = []
        # Least-loaded child first, in batches, so work spreads when there is little of it;
        # a run of quick jobs goes to one child whole.
        while pending:
            child = min(self.children, key=lambda candidate: len(candidate.queued))
            room = 2 * BATCH - len(child.queued)
            if room <= 0:
                self.orphans.extend(pending)
                return
            most = min(room, BATCH, len(pending))
            take = min(most, -(-len(pending) // len(self.children)))  # an even share
            if all(self._is_quick(job) for job in pending[:take]):
                while take < most and self._is_quick(pending[take]):
                    take += 1
            batch, pending = pending[:take], pending[take:]
            for job in batch:
                child.queued[job.seq] = job
            # If the child died, check() reassigns its queued jobs.
            with contextlib.suppress(OSError):
                child.pipe.send(_dumps(batch))

    def void(self, through: int) -> list[Completion]:
        self.slots[len(self.slots) + _VOID_THROUGH] = float(through)
        dropped = [job for job in self.orphans if job.seq <= through]
        self.orphans = [job for job in self.orphans if job.seq > through]
        return [Completion(job.seq, states.PENDING, ran=False) for job in dropped]

    def _is_quick(self, job: Job) -> bool:
        return self.runtimes.get(job.task_name, QUICK_JOB) < QUICK_JOB

    def wait(self, timeout: float) -> list[Completion]:
        busy = [child for child in self.children if child.queued]
        if not busy:
            if timeout > 0:
                time.sleep(min(timeout, 0.05))
            return []
        done: list[Completion] = []
        exited = False
        for key, _ in self.selector.select(timeout):
            child, is_sentinel = key.data
            if is_sentinel:
                exited = True
            else:
                done.extend(self._receive_ready(child))
        if exited:
            done.extend(self.check())
        return done

    def _receive_ready(self, child: _Child) -> list[Completion]:
        """The completions one read brings (the selector is level-triggered: data left
        over makes the next ``select`` return at once)."""
        try:
            messages = child.pipe.receive()
        except OSError:
            return []
        return self._completed(child, messages or ())

    def _receive(self, child: _Child) -> list[Completion]:
        """Every completion the child has sent (it has exited, or is stopping)."""
        done: list[Completion] = []
        with contextlib.suppress(OSError, ValueError):
            while select.select([child.pipe], [], [], 0)[0]:
                messages = child.pipe.receive()
                if messages is None:
                    break  # closed (a message cut short by the child's death is lost)
                done.extend(self._completed(child, messages))
        return done

    def _completed(self, child: _Child, messages: Sequence[bytes]) -> list[Completion]:
        """Completions from the child's messages; its jobs' run times are averaged in."""
        done: list[Completion] = []
        runtimes = self.runtimes
        for payload in messages:
            completions, seconds = _loads(payload)
            for completion, runtime in zip(completions, seconds, strict=True):
                job = child.queued.pop(completion.seq, None)
                if job is not None and completion.ran:
                    name = job.task_name
                    average = runtimes.get(name, runtime)
                    runtimes[name] = average + _RUNTIME_WEIGHT * (runtime - average)
                done.append(completion)
        return done

    # -- upkeep
    def check(self) -> list[Completion]:
        """Enforce hard time limits and replace children that died."""
        done: list[Completion] = []
        now = time.time()
        for position, child in enumerate(self.children):
            base = child.index * 3
            running = int(self.slots[base])
            if running >= 0 and child.process.is_alive():
                job = child.queued.get(running)
                if (
                    job is not None
                    and job.hard_time_limit
                    and now - self.slots[base + 1] > job.hard_time_limit
                ):
                    logger.error(
                        "Hard time limit (%ss) exceeded for %s[%s]",
                        job.hard_time_limit,
                        job.task_name,
                        job.task_id,
                    )
                    child.process.kill()
                    child.process.join()
            if not child.process.is_alive() and not self.stopping:
                done.extend(self._receive(child))
                done.extend(self._reap(child, now))
                self.children[position] = self._spawn(child.index)
        if self.orphans and self.free_slots() and not self.stopping:
            self.submit([])
        return done

    def _reap(self, child: _Child, now: float) -> list[Completion]:
        base = child.index * 3
        running = int(self.slots[base])
        begun = set(self._started_in(child))
        exitcode = child.process.exitcode
        for fileobj in (child.pipe.fileno(), child.process.sentinel):
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(fileobj)
        child.pipe.close()
        done: list[Completion] = []
        for seq, job in child.queued.items():
            if seq == running:
                done.append(self._fail_lost(job, exitcode, now - self.slots[base + 1]))
            elif seq in begun:
                # Finished before the child died, its completion not sent yet (a child
                # reports a batch at once): it ran, so it is acked and never run again. Its
                # result is what it stored (the child's results go out within RESULT_DELAY
                # of the task's end: only a death inside that window loses one).
                done.append(Completion(seq, states.STARTED))
            elif self.stopping:
                done.append(Completion(seq, states.PENDING, ran=False))
            else:
                self.orphans.append(job)  # never started: run it elsewhere
        child.queued.clear()
        if exitcode not in (0, None) or any(completion.ran for completion in done):
            logger.error(
                "Process %s (pid %s) exited with code %s",
                child.process.name,
                child.process.pid,
                exitcode,
            )
        return done

    def _fail_lost(self, job: Job, exitcode: int | None, runtime: float) -> Completion:
        """The job that was running when its child died."""
        if job.hard_time_limit and runtime > job.hard_time_limit:
            error: Exception = TimeLimitExceeded(job.hard_time_limit)
        else:
            error = WorkerLostError(
                f"Worker exited prematurely: exitcode {exitcode} Job: {job.seq}."
            )
        meta = build_meta(
            job.task_id,
            states.FAILURE,
            exception_to_dict(error),
            f"{type(error).__name__}: {error}",
            extra=reply_extra(job.properties, self.context.app.backend.capabilities.needs_reply_to),
        )
        if isinstance(error, TimeLimitExceeded):
            return Completion(job.seq, states.FAILURE, meta=meta)
        return Completion(job.seq, states.FAILURE, worker_lost=True, meta=meta)

    def stop(self, graceful: bool) -> list[Completion]:
        """Warm: running jobs finish, queued ones come back unstarted. Cold: kill at once."""
        self.stopping = True
        if graceful:
            self.slots[len(self.slots) + _STOP] = 1.0
        for child in self.children:
            with contextlib.suppress(OSError):
                child.pipe.send(_dumps(None))  # wakes a child waiting for work
        done: list[Completion] = []
        alive = self.children
        while graceful and alive:
            ready = multiprocessing.connection.wait(
                [child.pipe.sock for child in alive] + [child.process.sentinel for child in alive],
                _STOP_UPKEEP,
            )
            for child in alive:
                if child.pipe.sock in ready:
                    done.extend(self._receive(child))
            self.check()  # hard time limits hold while the running tasks finish
            alive = [child for child in alive if child.process.is_alive()]
        now = time.time()
        for child in self.children:
            child.process.join(timeout=0 if graceful else 0.1)
            if child.process.is_alive():
                child.process.kill()
                child.process.join()
            done.extend(self._receive(child))
            done.extend(self._reap(child, now))
        done.extend(Completion(job.seq, states.PENDING, ran=False) for job in self.orphans)
        self.orphans = []
        return done

    def info(self) -> dict[str, object]:
        return {
            "max-concurrency": self.concurrency,
            "processes": [child.process.pid for child in self.children],
            "implementation": "prefork",
        }
