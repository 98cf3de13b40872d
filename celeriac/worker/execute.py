"""Executes jobs in the process that runs tasks (a prefork child, a thread, or solo).

One :class:`Executor` per executing process: task runners are built once per task type,
results of a batch of jobs are stored in one backend call.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

from celeriac import states
from celeriac.app.trace import ResultSink, StoreAtOnce, TaskRunner
from celeriac.exceptions import SoftTimeLimitExceeded, TaskRevokedError
from celeriac.protocol.headers import is_expired, reply_extra, request_from_headers
from celeriac.protocol.message import Envelope, decode_task_body
from celeriac.protocol.results import build_meta, exception_to_dict
from celeriac.worker.job import Completion, Job
from celeriac.worker.results import BatchingSink

if TYPE_CHECKING:
    from celeriac.app.base import Celery

logger = logging.getLogger("celeriac.worker")


def _raise_soft_time_limit(signum: int, frame: FrameType | None) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")


class Executor:
    """Runs jobs; ``run_batch`` stores all their results in one backend call."""

    def __init__(
        self,
        app: Celery,
        hostname: str,
        accept: frozenset[str] | None,
        batch_results: bool = True,
        result_delay: float | None = None,
    ) -> None:
        self.app = app
        self.hostname = hostname
        self.accept = accept
        self.runners: dict[str, TaskRunner] = {}
        self.limits = app.limits()
        self.sink: ResultSink = (
            BatchingSink(app.backend, max_delay=result_delay)
            if batch_results
            else StoreAtOnce(app.backend)
        )
        self.can_alarm = threading.current_thread() is threading.main_thread()
        if self.can_alarm:
            signal.signal(signal.SIGALRM, _raise_soft_time_limit)

    def runner(self, name: str) -> TaskRunner:
        runner = self.runners.get(name)
        if runner is None:
            runner = self.runners[name] = TaskRunner(self.app, self.app.tasks[name], self.hostname)
        return runner

    def run_batch(self, jobs: Sequence[Job]) -> list[Completion]:
        try:
            return [self.run(job) for job in jobs]
        finally:
            self.sink.flush()

    def run(self, job: Job) -> Completion:
        """Run one job; whatever goes wrong ends this job alone, never the process."""
        try:
            return self._run(job)
        except Exception as exc:  # even failing it failed (say, an unreadable reply address)
            logger.exception("Task %s[%s] could not be failed cleanly", job.task_name, job.task_id)
            return Completion(job.seq, states.FAILURE, dead=f"{type(exc).__name__}: {exc}")

    def _run(self, job: Job) -> Completion:
        try:
            runner = self.runner(job.task_name)
            envelope = Envelope(
                job.body, job.headers, job.properties, job.content_type, job.content_encoding
            )
            body = decode_task_body(envelope, self.accept, limits=self.limits)
            if is_expired(job.headers, time.time()):
                return self._expired(job)
            request = request_from_headers(
                job.headers, job.properties, body.embed, job.delivery_info
            )
        except Exception as exc:  # bad message: fail this task alone, with the reason
            return self._bad_message(job, exc)
        soft = job.soft_time_limit
        if soft and self.can_alarm:
            signal.setitimer(signal.ITIMER_REAL, soft)
        try:
            outcome = runner(job.task_id, body.args, body.kwargs, request, self.sink)
        except Exception as exc:
            # The runner turns what the task raises into its outcome; what escapes it came
            # from around the task (its workflow, storing its result): this job fails alone.
            logger.exception("Task %s[%s] failed outside the task", job.task_name, job.task_id)
            self._store_failure(job, exc)
            return Completion(job.seq, states.FAILURE)
        finally:
            if soft and self.can_alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
        return Completion(job.seq, outcome.state, bool(outcome.requeue))

    def _store_failure(self, job: Job, error: Exception) -> str:
        reason = f"{type(error).__name__}: {error}"
        extra = self._reply_extra(job)
        self.sink.add(
            build_meta(job.task_id, states.FAILURE, exception_to_dict(error), reason, extra=extra)
        )
        return reason

    def _bad_message(self, job: Job, error: Exception) -> Completion:
        """A message that cannot be run: its result says why; the consumer dead-letters it."""
        return Completion(job.seq, states.FAILURE, dead=self._store_failure(job, error))

    def _expired(self, job: Job) -> Completion:
        logger.info("Task %s[%s] expired before it could run", job.task_name, job.task_id)
        error = exception_to_dict(TaskRevokedError("expired"))
        extra = self._reply_extra(job)
        self.sink.add(build_meta(job.task_id, states.REVOKED, error, extra=extra))
        return Completion(job.seq, states.REVOKED)

    def _reply_extra(self, job: Job) -> dict[str, object] | None:
        return reply_extra(job.properties, self.app.backend.capabilities.needs_reply_to)
