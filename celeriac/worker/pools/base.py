"""The pool interface: the consumer submits batches of jobs and collects completions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from celeriac.worker.job import Completion, Job

if TYPE_CHECKING:
    from celeriac.app.base import Celery


@dataclass(frozen=True, slots=True)
class PoolContext:
    app: Celery
    hostname: str
    concurrency: int
    accept: frozenset[str] | None
    max_tasks_per_child: int | None = None


class Pool(Protocol):
    """Runs jobs. Used from the consumer's thread only."""

    concurrency: int
    #: Every submitted job starts at once (so an early ack may go out before ``submit``);
    #: False when jobs wait in the pool, and early acks wait for ``started``.
    starts_on_submit: bool

    def start(self) -> None:
        """Start the processes or threads."""

    def free_slots(self) -> int:
        """How many more jobs ``submit`` accepts now."""
        ...

    def submit(self, jobs: Sequence[Job]) -> None:
        """Start running the jobs (at most ``free_slots()`` of them)."""

    def wait(self, timeout: float) -> list[Completion]:
        """Completions that arrived, waiting up to ``timeout`` for the first one."""
        ...

    def started(self) -> list[int]:
        """Sequence numbers of submitted jobs that have begun running (may repeat)."""
        ...

    def active(self) -> int:
        """Jobs submitted and not completed."""
        ...

    def void(self, through: int) -> list[Completion]:
        """Submitted jobs with a sequence number up to ``through`` that have not started
        never will (their messages went back to the broker): ``ran=False`` completions for
        those dropped at once; the others' come through ``wait``."""
        ...

    def check(self) -> list[Completion]:
        """Periodic upkeep (time limits, replacing dead processes); their completions."""
        ...

    def stop(self, graceful: bool) -> list[Completion]:
        """Stop; graceful lets running jobs finish and starts no others. Returns the
        completions collected meanwhile, and ``ran=False`` ones for jobs never started."""
        ...

    def info(self) -> dict[str, object]:
        """What ``inspect stats`` shows of the pool."""
        ...
