"""A job: one task message as handed from the consumer to a pool, and its completion.

Jobs are plain tuples so that a batch of them pickles fast on its way to a child process.
The body is decoded in the executing process, so the consumer never pays for it.
"""

from __future__ import annotations

from typing import NamedTuple

from celeriac.protocol.results import Meta


class Job(NamedTuple):
    seq: int
    task_name: str
    task_id: str
    body: bytes
    content_type: str
    content_encoding: str
    headers: dict[str, object]
    properties: dict[str, object]
    delivery_info: dict[str, object]
    soft_time_limit: float | None
    hard_time_limit: float | None


class Completion(NamedTuple):
    seq: int
    state: str
    #: For a rejected task: put the message back on its queue.
    requeue: bool = False
    #: The executing process died (or was killed) while running the job.
    worker_lost: bool = False
    #: False for a job given back unstarted (warm shutdown): its message goes back to the queue.
    ran: bool = True
    #: A result the executing process could not store (it died): the consumer stores it,
    #: unless the message is requeued (``reject_on_worker_lost``) and the task will run again.
    meta: Meta | None = None
    #: Why the message itself is bad (it does not decode, or is over a limit): the consumer
    #: moves it to its dead-letter queue instead of acking it.
    dead: str | None = None
