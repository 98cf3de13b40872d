"""The solo pool: jobs run one at a time in the consumer's own thread."""

from __future__ import annotations

from collections.abc import Sequence

from celeriac.worker.execute import Executor
from celeriac.worker.job import Completion, Job
from celeriac.worker.pools.base import PoolContext


class SoloPool:
    concurrency = 1
    starts_on_submit = True

    def __init__(self, context: PoolContext) -> None:
        self.context = context
        self.done: list[Completion] = []
        self.executor: Executor | None = None

    def start(self) -> None:
        context = self.context
        self.executor = Executor(context.app, context.hostname, context.accept)

    def free_slots(self) -> int:
        # One job per call: its message is acked (early) right before it runs, and the
        # consumer sees a shutdown request between two jobs.
        return 1

    def submit(self, jobs: Sequence[Job]) -> None:
        assert self.executor is not None
        self.done.extend(self.executor.run_batch(jobs))

    def wait(self, timeout: float) -> list[Completion]:
        done, self.done = self.done, []
        return done

    def started(self) -> list[int]:
        return []  # a job runs and completes within submit()

    def active(self) -> int:
        return len(self.done)

    def void(self, through: int) -> list[Completion]:
        return []  # every submitted job has started

    def check(self) -> list[Completion]:
        return []

    def stop(self, graceful: bool) -> list[Completion]:
        return self.wait(0)

    def info(self) -> dict[str, object]:
        return {"max-concurrency": 1, "implementation": "solo"}
