"""The consumer: fetch a batch, check each message, hold ETAs, dispatch to the pool, ack.

One loop in the worker's main thread. Per message it reads only the headers (protocol v2
keeps what routing and validation need there); the body is decoded where the task runs.
Acks are gathered and go out with the next fetch (one round trip settles and refills), or
on their own after ``ACK_DELAY``; rejects go out once per loop turn, as one batch.

Prefetch follows Celery: at most ``concurrency * worker_prefetch_multiplier`` messages are
reserved and not yet acknowledged; messages held for their ETA do not count (Celery raises
its QoS for them). An early ack, as in Celery, goes out when the task starts: right before
``submit`` for pools that start every job at once, else when the pool reports it started.
A message whose job never started (a warm shutdown) goes back to its queue.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celeriac import signals, states
from celeriac.exceptions import (
    ContentDisallowed,
    ImproperlyConfigured,
    InvalidMessageError,
    NotRegistered,
    TaskRevokedError,
    WorkerLostError,
)
from celeriac.protocol.headers import (
    LOST_HEADER,
    eta_timestamp,
    is_expired,
    reply_extra,
    time_limits,
    times_lost,
)
from celeriac.protocol.message import Envelope, check_task_headers, upgrade_v1
from celeriac.protocol.results import Meta, build_meta, exception_to_dict
from celeriac.transports.base import (
    BrokerStorageFull,
    Transport,
    copy_to,
    dead_letter_queue,
    log_dead_letter,
)
from celeriac.wire.queues import Delivery, QueueSpec
from celeriac.worker.job import Completion, Job
from celeriac.worker.pools.base import Pool
from celeriac.worker.ratelimit import TokenBucket, parse_rate

if TYPE_CHECKING:
    from celeriac.app.base import Celery

logger = logging.getLogger("celeriac.worker")

#: How often the pool is checked for dead processes and hard time limits (seconds).
UPKEEP_INTERVAL = 0.25
#: Longest time an ack waits for others to go in the same round trip (seconds).
ACK_DELAY = 0.005
#: Longest blocking fetch when idle, so shutdown requests are seen promptly.
IDLE_FETCH_TIMEOUT = 0.1
#: While the broker is full: the pause between tries, and between two log lines (seconds).
FULL_RETRY_DELAY = 0.2
FULL_WARNING_INTERVAL = 10.0


@dataclass(frozen=True, slots=True)
class TaskFlags:
    """Per task type settings the consumer needs, resolved once."""

    acks_late: bool
    reject_on_worker_lost: bool
    acks_on_failure_or_timeout: bool
    soft_time_limit: float | None
    hard_time_limit: float | None
    #: ``rate_limit`` of the task in this worker, if any.
    bucket: TokenBucket | None = None


class Consumer:
    def __init__(
        self,
        app: Celery,
        transport: Transport,
        pool: Pool,
        queues: Sequence[QueueSpec],
        prefetch_count: int,
        accept: frozenset[str] | None,
    ) -> None:
        self.app = app
        self.transport = transport
        self.pool = pool
        self.queues = list(queues)
        self.queue_names = [queue.name for queue in queues]
        self.prefetch_count = prefetch_count
        self.refill_at = max(1, prefetch_count // 2)
        self.ack_since = 0.0
        self.accept = accept
        self.flags: dict[str, TaskFlags] = {}
        self.ready: deque[Job] = deque()
        self.eta_heap: list[tuple[float, int, Job]] = []
        #: Deliveries still to be acked or rejected when their job completes (late ack).
        self.late: dict[int, Delivery] = {}
        #: Deliveries of jobs not yet dispatched (ready or ETA-held).
        self.held: dict[int, Delivery] = {}
        #: Early-ack deliveries of jobs waiting in the pool: acked once the job starts.
        self.unstarted: dict[int, Delivery] = {}
        self.to_ack: list[Delivery] = []
        self.to_drop: list[Delivery] = []
        self.to_requeue: list[Delivery] = []
        #: Lost to a dead process: they go back with their count raised.
        self.to_redeliver: list[Delivery] = []
        #: Messages that cannot be processed, with why: to their dead-letter queues.
        self.to_dead: list[tuple[Delivery, str]] = []
        #: Early-ack deliveries acked when their job started, kept until it completes, so a
        #: message the executor finds unreadable can still be dead-lettered.
        self.acked_early: dict[int, Delivery] = {}
        self.seq = 0
        #: The last sequence number whose message went back to the broker unsettled.
        self.void_through = 0
        transport.on_void(self.drop_void)
        self.processed = 0
        self.next_upkeep = 0.0
        self.next_full_warning = 0.0
        self.stopping = False
        conf = app.conf
        self.default_acks_late = bool(conf.task_acks_late)
        self.default_reject_lost = bool(conf.task_reject_on_worker_lost)
        self.default_ack_failures = bool(conf.task_acks_on_failure_or_timeout)
        self.default_soft = conf.task_soft_time_limit
        self.default_hard = conf.task_time_limit
        self.default_rate = conf.task_default_rate_limit
        self.rate_limits = not conf.worker_disable_rate_limits
        self.max_deliveries = int(conf.worker_max_deliveries)
        self.max_message_bytes = app.limits().max_message_bytes
        #: Whether any task seen so far has a rate limit (skips the check otherwise).
        self.limited = False

    # -- the loop
    def run(self, should_stop: Callable[[], bool]) -> None:
        self.transport.declare(self.queues)
        while not should_stop():
            self.step()

    def step(self) -> None:
        self.complete(self.pool.wait(0))
        now = time.monotonic()
        if now >= self.next_upkeep:
            self.next_upkeep = now + UPKEEP_INTERVAL
            self.complete(self.pool.check())
        self.release_due_etas()
        self.ack_started()
        room = self.prefetch_count - len(self.ready) - len(self.late) - len(self.unstarted)
        fetched = 0
        busy = bool(self.ready) or self.pool.active() > 0
        # While busy, refill only when half the window is free: a fetch (and the ack that
        # follows it) is a broker round trip, so it should move a batch, not one message.
        if room > 0 and (not busy or room >= self.refill_at):
            timeout = 0.0 if busy else self.idle_timeout()
            # The acks gathered so far ride along: one round trip settles and refills.
            acks, self.to_ack, self.ack_since = self.to_ack, [], 0.0
            try:
                deliveries = self.transport.fetch(self.queue_names, room, timeout, acks)
            except BrokerStorageFull as exc:
                self.to_ack = acks + self.to_ack  # kept: they go with a later call
                self.wait_for_room(exc)
                deliveries = []
            fetched = len(deliveries)
            for delivery in deliveries:
                self.receive(delivery)
        self.dispatch()
        self.flush(force=False)
        if not fetched and self.pool.active():
            # A job starting in a child wakes nobody: look again soon while early acks wait.
            timeout = 0.002 if room > 0 else 0.005 if self.unstarted else 0.05
            self.complete(self.pool.wait(timeout))
            self.flush(force=False)

    def idle_timeout(self) -> float:
        if self.eta_heap:
            until = self.eta_heap[0][0] - time.time()
            return max(0.0, min(IDLE_FETCH_TIMEOUT, until))
        return IDLE_FETCH_TIMEOUT

    def drop_void(self) -> None:
        """The broker took back every message it had handed out (a lost connection): run
        none of those not started, which come again (a run now would be a second one, its
        ack unable to reach the broker). Called by the transport when it notices, before
        it reconnects; the jobs running finish as they are."""
        if self.seq == self.void_through:
            return  # nothing received since the last time
        self.void_through = self.seq
        held = len(self.held)
        self.held.clear()
        self.ready.clear()
        self.eta_heap.clear()
        self.complete(self.pool.void(self.seq))
        logger.warning(
            "Lost the broker connection: the broker takes back the messages this worker "
            "held; %d not dispatched and those not started in the pool are dropped here",
            held,
        )

    # -- receiving
    def receive(self, delivery: Delivery) -> None:
        try:
            self._receive(delivery)
        except Exception as exc:  # RecursionError and MemoryError too: this message alone
            self.invalid(delivery, exc)

    def _receive(self, delivery: Delivery) -> None:
        envelope = delivery.envelope
        headers = envelope.headers
        self.check_envelope(envelope)
        hard_limit, soft_limit = time_limits(headers)
        expired = is_expired(headers, time.time())
        name, task_id = headers["task"], headers["id"]
        self.check_content_type(envelope.content_type)
        flags = self.flags.get(name) or self.task_flags(name)
        if flags is None:
            self.unknown_task(delivery, name, task_id)
            return
        lost = times_lost(headers)
        if lost >= self.max_deliveries:
            raise WorkerLostError(
                f"the processes running it died {lost} times "
                f"(worker_max_deliveries = {self.max_deliveries})"
            )
        if expired:
            self.revoke_expired(delivery, name, task_id)
            return
        self.seq += 1
        job = Job(
            self.seq,
            name,
            task_id,
            envelope.body,
            envelope.content_type,
            envelope.content_encoding,
            headers,
            envelope.properties,
            {
                "exchange": envelope.exchange,
                "routing_key": envelope.routing_key or delivery.queue,
                # A copy sent back after its process died is a redelivery too.
                "redelivered": delivery.redelivered or LOST_HEADER in headers,
                "priority": envelope.properties.get("priority"),
            },
            flags.soft_time_limit if soft_limit is None else soft_limit,
            flags.hard_time_limit if hard_limit is None else hard_limit,
        )
        self.held[job.seq] = delivery
        if logger.isEnabledFor(logging.INFO):
            logger.info("Task %s[%s] received", name, task_id)
        if signals.task_received.has_listeners():
            signals.task_received.send(sender=self, request=job)
        self.hold_or_ready(job)

    def check_envelope(self, envelope: Envelope) -> None:
        """Raise unless the message has the v2 headers a task needs (a v1 message is
        upgraded in place) and a body within ``message_max_size``."""
        if "task" not in envelope.headers:
            upgrade_v1(envelope, self.accept)
        check_task_headers(envelope.headers)
        if len(envelope.body) > self.max_message_bytes:
            raise InvalidMessageError(
                f"body of {len(envelope.body):,} bytes is over message_max_size "
                f"({self.max_message_bytes:,})"
            )

    def check_content_type(self, content_type: str) -> None:
        if self.accept is not None and content_type not in self.accept:
            raise ContentDisallowed(
                f"content type {content_type!r} is not in accept_content "
                f"({', '.join(sorted(self.accept))})"
            )

    def hold_or_ready(self, job: Job) -> None:
        """A job whose ETA is ahead waits in the timer heap; the others are ready to run."""
        try:
            when = eta_timestamp(job.headers)
        except Exception as exc:
            eta = job.headers.get("eta")
            logger.warning(
                "Task %s has an unreadable eta %r (%s): running it now", job.task_id, eta, exc
            )
            when = None
        if when is not None and when > time.time():
            heapq.heappush(self.eta_heap, (when, job.seq, job))
        else:
            self.ready.append(job)

    def task_flags(self, name: str) -> TaskFlags | None:
        task = self.app.tasks.get(name)
        if task is None:
            return None

        def pick(value: Any, default: Any) -> Any:
            return default if value is None else value

        flags = TaskFlags(
            acks_late=bool(pick(task.acks_late, self.default_acks_late)),
            reject_on_worker_lost=bool(pick(task.reject_on_worker_lost, self.default_reject_lost)),
            acks_on_failure_or_timeout=bool(
                pick(task.acks_on_failure_or_timeout, self.default_ack_failures)
            ),
            soft_time_limit=pick(task.soft_time_limit, self.default_soft),
            hard_time_limit=pick(task.time_limit, self.default_hard),
            bucket=self.rate_limit_bucket(name, pick(task.rate_limit, self.default_rate)),
        )
        self.flags[name] = flags
        return flags

    def rate_limit_bucket(self, name: str, rate_limit: Any) -> TokenBucket | None:
        if not self.rate_limits or not rate_limit:
            return None
        try:
            rate = parse_rate(rate_limit)
        except ImproperlyConfigured as exc:
            logger.error("Task %s: %s; running it without a rate limit", name, exc)
            return None
        if rate <= 0:
            return None
        self.limited = True
        return TokenBucket(rate)

    def invalid(self, delivery: Delivery, error: Exception) -> None:
        """A message that cannot run: dead-lettered, and its result says why where it can."""
        task_id = delivery.envelope.headers.get("id")
        if isinstance(task_id, str) and task_id:  # a caller may wait on it: say why not
            reason = f"{type(error).__name__}: {error}"
            with contextlib.suppress(Exception):  # its reply address may be as bad
                extra = self.reply_extra(delivery)
                self._store(
                    [
                        build_meta(
                            task_id, states.FAILURE, exception_to_dict(error), reason, extra=extra
                        )
                    ]
                )
        self.dead_letter(delivery, error)

    def dead_letter(self, delivery: Delivery, error: BaseException | str) -> None:
        """Log the one line that names the message and why; it goes to its dead-letter queue."""
        reason = log_dead_letter(message_name(delivery), delivery.queue, error)
        self.to_dead.append((delivery, reason))

    def unknown_task(self, delivery: Delivery, name: str, task_id: str) -> None:
        logger.error(
            "Received unregistered task %r (message %s): moved to %r. Is the module "
            "that defines it imported by this worker (include=/autodiscover)?",
            name,
            task_id,
            dead_letter_queue(delivery.queue),
        )
        error = NotRegistered(name)
        self._store(
            [
                build_meta(
                    task_id,
                    states.FAILURE,
                    exception_to_dict(error),
                    f"NotRegistered: {name!r}",
                    extra=self.reply_extra(delivery),
                )
            ]
        )
        if signals.task_unknown.has_listeners():
            signals.task_unknown.send(
                sender=self, name=name, id=task_id, message=delivery.envelope, exc=error
            )
        self.to_dead.append((delivery, f"NotRegistered: {name!r}"))

    def revoke_expired(self, delivery: Delivery, name: str, task_id: str) -> None:
        logger.info("Task %s[%s] expired before it could run: discarded", name, task_id)
        error = exception_to_dict(TaskRevokedError("expired"))
        extra = self.reply_extra(delivery)
        self._store([build_meta(task_id, states.REVOKED, error, extra=extra)])
        self.to_ack.append(delivery)

    def reply_extra(self, delivery: Delivery) -> dict[str, object] | None:
        needs_reply_to = self.app.backend.capabilities.needs_reply_to
        return reply_extra(delivery.envelope.properties, needs_reply_to)

    def _store(self, metas: list[Meta]) -> None:
        backend = self.app.backend
        if backend.capabilities.enabled:
            try:
                backend.store(metas)
            except Exception as exc:
                logger.error("Cannot store result in %s: %s", backend.url, exc)

    # -- dispatching
    def release_due_etas(self) -> None:
        heap = self.eta_heap
        if heap:
            now = time.time()
            while heap and heap[0][0] <= now:
                self.ready.append(heapq.heappop(heap)[2])

    def dispatch(self) -> None:
        ready = self.ready
        free = self.pool.free_slots()
        if not ready or free <= 0:
            return
        jobs = [ready.popleft() for _ in range(min(free, len(ready)))]
        if self.limited:
            jobs = self.within_rate_limits(jobs)
        early: list[Delivery] = []
        ack_now = self.pool.starts_on_submit
        for job in jobs:
            delivery = self.held.pop(job.seq)
            if self.flags[job.task_name].acks_late:
                self.late[job.seq] = delivery
            elif ack_now:
                early.append(delivery)
                self.acked_early[job.seq] = delivery
            else:
                self.unstarted[job.seq] = delivery
        if early:
            self.transport.ack(early)  # early ack: before the tasks run
        self.pool.submit(jobs)

    def within_rate_limits(self, jobs: list[Job]) -> list[Job]:
        """The jobs a token is free for; the others wait in the timer heap until one is."""
        allowed = []
        for job in jobs:
            bucket = self.flags[job.task_name].bucket
            wait = bucket.take() if bucket is not None else 0.0
            if wait:
                heapq.heappush(self.eta_heap, (time.time() + wait, job.seq, job))
            else:
                allowed.append(job)
        return allowed

    def ack_started(self) -> None:
        """Early acks of the jobs the pool has started since the last look."""
        unstarted = self.unstarted
        if unstarted:
            for seq in self.pool.started():
                delivery = unstarted.pop(seq, None)
                if delivery is not None:
                    self.to_ack.append(delivery)
                    self.acked_early[seq] = delivery

    def complete(self, completions: Sequence[Completion]) -> None:
        if not completions:
            return
        late, unstarted, acked_early = self.late, self.unstarted, self.acked_early
        metas: list[Meta] = []
        for completion in completions:
            seq = completion.seq
            self.processed += completion.ran
            requeued = False
            delivery = late.pop(seq, None)
            if delivery is not None:
                requeued = self.settle_late(completion, delivery)
            else:
                delivery = unstarted.pop(seq, None)
                if delivery is not None:  # an early ack not sent yet: it ran, or never will
                    requeued = not completion.ran
                    if completion.dead is not None:
                        self.dead_letter(delivery, completion.dead)
                    else:
                        (self.to_requeue if requeued else self.to_ack).append(delivery)
                else:
                    delivery = acked_early.pop(seq, None)
                    if delivery is not None and completion.dead is not None:
                        self.dead_letter(delivery, completion.dead)  # a copy: it was acked
            if completion.meta is not None and not requeued:
                metas.append(completion.meta)
        if metas:
            self._store(metas)

    def settle_late(self, completion: Completion, delivery: Delivery) -> bool:
        """Queue the late ack or reject of a finished job; whether it goes back to the queue."""
        name = delivery.envelope.headers["task"]
        flags = self.flags[name]
        requeue = False
        if completion.dead is not None:
            self.dead_letter(delivery, completion.dead)
        elif not completion.ran:
            requeue = True
            self.to_requeue.append(delivery)
        elif completion.state == states.REJECTED:
            requeue = completion.requeue
            (self.to_requeue if requeue else self.to_drop).append(delivery)
        elif completion.worker_lost:
            if flags.reject_on_worker_lost:
                requeue = self.redeliver_lost(delivery)
            else:
                self.to_ack.append(delivery)
        elif completion.state == states.FAILURE and not flags.acks_on_failure_or_timeout:
            self.to_drop.append(delivery)
        else:
            self.to_ack.append(delivery)
        return requeue

    def redeliver_lost(self, delivery: Delivery) -> bool:
        """A message whose process died under it goes back, counted, or is dead-lettered
        once it has killed ``worker_max_deliveries`` processes; whether it goes back."""
        lost = times_lost(delivery.envelope.headers)
        if lost >= self.max_deliveries:
            self.dead_letter(
                delivery,
                f"WorkerLostError: the process running it died {lost} times "
                f"(worker_max_deliveries = {self.max_deliveries})",
            )
            return False
        self.to_redeliver.append(delivery)
        return True

    def flush(self, force: bool = True) -> None:
        """Send the collected acks and rejects.

        Unforced (the loop), acks wait until half a prefetch window of them has gathered or
        the oldest has waited ``ACK_DELAY``: each ack is a broker round trip (a write
        transaction on SQLite), and one per loop turn moved only one or two messages.
        """
        try:
            self._flush(force)
        except BrokerStorageFull as exc:  # what was not sent is kept for the next flush
            self.wait_for_room(exc)

    def _flush(self, force: bool) -> None:
        transport = self.transport
        if self.to_ack:
            now = time.monotonic()
            if not self.ack_since:
                self.ack_since = now
            if force or len(self.to_ack) >= self.refill_at or now - self.ack_since >= ACK_DELAY:
                transport.ack(self.to_ack)
                self.to_ack = []
                self.ack_since = 0.0
        # Each list is emptied only once its call went through.
        if self.to_drop:
            transport.reject(self.to_drop, requeue=False)
            self.to_drop = []
        if self.to_requeue:
            transport.reject(self.to_requeue, requeue=True)
            self.to_requeue = []
        if self.to_redeliver:
            # Straight back to the queue each came from, its count raised.
            transport.publish(
                [
                    copy_to(d, d.queue, {LOST_HEADER: times_lost(d.envelope.headers) + 1})
                    for d in self.to_redeliver
                ]
            )
            transport.ack(self.to_redeliver)
            self.to_redeliver = []
        if self.to_dead:
            transport.dead_letter(self.to_dead)
            self.to_dead = []

    def wait_for_room(self, error: BrokerStorageFull) -> None:
        """The broker is full: say so (once a while, not per loop) and pause a little."""
        now = time.monotonic()
        if now >= self.next_full_warning:
            self.next_full_warning = now + FULL_WARNING_INTERVAL
            logger.error("%s; keeping what is unsent and trying again", error)
        time.sleep(FULL_RETRY_DELAY)

    # -- shutdown
    def release_held(self) -> None:
        """Warm shutdown: give back what was fetched but not started."""
        held = list(self.held.values())
        self.held.clear()
        self.ready.clear()
        self.eta_heap.clear()
        if held:
            self.transport.reject(held, requeue=True)


def message_name(delivery: Delivery) -> str:
    """How a log line names a message: its task id, else its correlation id, else where
    it was (a message without an id has only its place in the queue)."""
    envelope = delivery.envelope
    for value in (envelope.headers.get("id"), envelope.properties.get("correlation_id")):
        if isinstance(value, str) and value:
            return value
    return f"without an id (delivery {delivery.tag!r})"
