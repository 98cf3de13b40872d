"""The prefork pool's message pipe: framing across reads, big messages, the closed end."""

from __future__ import annotations

import threading

from celeriac.worker.pools.pipe import MessagePipe


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
