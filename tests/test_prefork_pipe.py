"""The prefork pool's link to its children: the message pipe, and how jobs are handed out."""

from __future__ import annotations

import pickle
import selectors
import threading
from typing import Any

from celeriac.worker.job import Completion, Job
from celeriac.worker.pools.pipe import MessagePipe
from celeriac.worker.pools.prefork import QUICK_JOB


def test_messages_sent_together_come_out_of_one_read_in_order() -> None:
    parent, child = MessagePipe.pair()
    for payload in (b"one", b"", b"three"):
        parent.send(payload)

    assert child.receive_some() == [b"one", b"", b"three"]


def test_a_message_bigger_than_a_read_is_reassembled() -> None:
    parent, child = MessagePipe.pair()
    big = bytes(range(256)) * 4096  # 1 MiB, over the socket buffer: send from a thread
    sender = threading.Thread(target=lambda: (parent.send(big), parent.send(b"after")))
    sender.start()

    received: list[bytes] = []
    while len(received) < 2:
        batch = child.receive_some()
        assert batch is not None
        received += batch
    sender.join()

    assert received == [big, b"after"]


def test_a_header_split_across_reads_waits_for_the_rest() -> None:
    parent, child = MessagePipe.pair()
    framed = len(b"payload").to_bytes(4, "big") + b"payload"
    parent.sock.sendall(framed[:2])
    assert child.receive() == []
    parent.sock.sendall(framed[2:6])
    assert child.receive() == []
    parent.sock.sendall(framed[6:])

    assert child.receive() == [b"payload"]


def test_the_closed_other_end_reads_as_none() -> None:
    parent, child = MessagePipe.pair()
    parent.send(b"last")
    parent.close()

    assert child.receive_some() == [b"last"]
    assert child.receive_some() is None
    child.close()


# -- how the pool hands jobs to its children (no processes: children with a pipe each)


def _pool_with_idle_children(count: int) -> tuple[Any, list[MessagePipe]]:
    from celeriac import Celery
    from celeriac.worker.pools.base import PoolContext
    from celeriac.worker.pools.prefork import PreforkPool, _Child

    pool = PreforkPool(PoolContext(Celery("t", broker="memory://"), "node", count, None))
    ends = []
    for index in range(count):
        ours, theirs = MessagePipe.pair()
        child = _Child(index, None, ours)
        pool.children.append(child)
        pool.selector.register(ours.fileno(), selectors.EVENT_READ, (child, False))
        ends.append(theirs)
    return pool, ends


def _job(seq: int, name: str) -> Job:
    return Job(seq, name, f"id-{seq}", b"", "application/json", "utf-8", {}, {}, {}, None, None)


def test_jobs_of_unknown_or_slow_task_types_spread_over_idle_children() -> None:
    pool, _ = _pool_with_idle_children(2)
    pool.runtimes["t.slow"] = 2.0

    pool.submit([_job(1, "t.new"), _job(2, "t.new"), _job(3, "t.slow"), _job(4, "t.slow")])

    assert [sorted(child.queued) for child in pool.children] == [[1, 2], [3, 4]]
    pool.submit([_job(5, "t.slow")])
    pool.submit([_job(6, "t.slow")])
    assert [len(child.queued) for child in pool.children] == [3, 3]


def test_quick_jobs_go_to_one_child_together() -> None:
    pool, ends = _pool_with_idle_children(2)
    pool.runtimes["t.quick"] = QUICK_JOB / 10

    pool.submit([_job(seq, "t.quick") for seq in range(1, 4)])

    assert [sorted(child.queued) for child in pool.children] == [[1, 2, 3], []]
    assert len(ends[0].receive_some() or []) == 1  # one message for the three


def test_a_slow_job_is_never_batched_with_quick_ones_beyond_an_even_share() -> None:
    pool, _ = _pool_with_idle_children(2)
    pool.runtimes.update({"t.quick": QUICK_JOB / 10, "t.slow": 1.0})

    pool.submit([_job(1, "t.slow"), _job(2, "t.quick"), _job(3, "t.quick")])

    assert [sorted(child.queued) for child in pool.children] == [[1, 2], [3]]


def test_run_times_reported_by_a_child_make_its_task_type_quick() -> None:
    pool, ends = _pool_with_idle_children(1)
    pool.submit([_job(1, "t.add"), _job(2, "t.add")])
    completions = [Completion(1, "SUCCESS"), Completion(2, "SUCCESS")]
    ends[0].send(pickle.dumps((completions, [QUICK_JOB / 100, QUICK_JOB / 100])))

    assert pool.wait(1.0) == completions
    assert pool.children[0].queued == {}
    assert pool._is_quick(_job(3, "t.add"))


def test_a_message_cut_short_by_a_dying_child_is_dropped_not_waited_for() -> None:
    pool, ends = _pool_with_idle_children(1)
    pool.submit([_job(1, "t.add")])
    whole = pickle.dumps(([Completion(1, "SUCCESS")], [0.0]))
    ends[0].sock.sendall(len(whole).to_bytes(4, "big") + whole[:5])  # then it dies
    ends[0].close()

    assert pool._receive(pool.children[0]) == []
