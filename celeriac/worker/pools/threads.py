"""The threads pool: ``concurrency`` threads share one process (good for I/O-bound tasks)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence

from celeriac import states
from celeriac.worker.execute import Executor
from celeriac.worker.job import Completion, Job
from celeriac.worker.pools.base import PoolContext

logger = logging.getLogger("celeriac.worker")

_STOP = None


class ThreadPool:
    #: At most ``concurrency`` jobs are in flight, so a submitted job has a thread waiting.
    starts_on_submit = True

    def __init__(self, context: PoolContext) -> None:
        self.context = context
        self.concurrency = context.concurrency
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.completions: queue.SimpleQueue[Completion] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.in_flight = 0

    def start(self) -> None:
        for number in range(self.concurrency):
            thread = threading.Thread(
                target=self._work, name=f"celeriac-thread-{number}", daemon=True
            )
            thread.start()
            self.threads.append(thread)

    def _work(self) -> None:
        context = self.context
        executor = Executor(context.app, context.hostname, context.accept, batch_results=False)
        while True:
            job = self.jobs.get()
            if job is _STOP:
                return
            try:
                completion = executor.run(job)
            except BaseException:  # a thread that died would hold its job (and shutdown) forever
                logger.exception(
                    "Task %s[%s]: the worker thread failed", job.task_name, job.task_id
                )
                completion = Completion(job.seq, states.FAILURE)
            self.completions.put(completion)

    def free_slots(self) -> int:
        return max(self.concurrency - self.in_flight, 0)

    def submit(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self.jobs.put(job)
        self.in_flight += len(jobs)

    def wait(self, timeout: float) -> list[Completion]:
        done: list[Completion] = []
        if self.in_flight:
            try:
                done.append(
                    self.completions.get(timeout=timeout)
                    if timeout > 0
                    else self.completions.get_nowait()
                )
            except queue.Empty:
                return done
            while True:
                try:
                    done.append(self.completions.get_nowait())
                except queue.Empty:
                    break
        self.in_flight -= len(done)
        return done

    def started(self) -> list[int]:
        return []  # every submitted job has started

    def active(self) -> int:
        return self.in_flight

    def void(self, through: int) -> list[Completion]:
        return []  # every submitted job has started

    def check(self) -> list[Completion]:
        return []

    def stop(self, graceful: bool) -> list[Completion]:
        done: list[Completion] = []
        if graceful:
            while self.in_flight:
                done.extend(self.wait(0.5))
        for _ in self.threads:
            self.jobs.put(_STOP)
        if graceful:
            for thread in self.threads:
                thread.join(timeout=5)
        return done

    def info(self) -> dict[str, object]:
        return {"max-concurrency": self.concurrency, "implementation": "threads"}
