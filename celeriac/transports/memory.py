"""In-process broker (``memory://`` and ``memory://name``): the transport for tests and demos.

Every instance created with the same URL in a process shares one broker, so an app's client
and a solo or threads worker in the same process meet. Messages are still serialized on
publish (headers and properties through JSON, like every other transport), so tests on this
transport catch what a real broker would reject or change.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from celeriac.protocol.message import Envelope
from celeriac.transports.base import Capabilities, TransportOptions, dead_letter_by_publishing
from celeriac.wire.envelopes import decode_envelope, encode_meta
from celeriac.wire.queues import Delivery, QueueSpec, bound_queues

#: (-priority, sequence): a heap of these pops the highest priority first, then the oldest.
_Entry = tuple[int, int, bytes, bytes, bool]


@dataclass(eq=False)
class _Broker:
    """The queues, exchanges and bindings that instances with one URL share."""

    condition: threading.Condition = field(default_factory=threading.Condition)
    queues: dict[str, list[_Entry]] = field(default_factory=dict)
    exchange_types: dict[str, str] = field(default_factory=dict)
    #: exchange → [(binding key, queue)]
    bindings: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    sequence: itertools.count[int] = field(default_factory=itertools.count)

    def route(self, exchange: str, routing_key: str) -> list[str]:
        if not exchange:
            return [routing_key] if routing_key else []
        exchange_type = self.exchange_types.get(exchange)
        if exchange_type is None:  # never declared: unroutable, as on an AMQP broker
            return []
        return bound_queues(exchange_type, self.bindings.get(exchange, ()), routing_key)


_brokers: dict[str, _Broker] = {}
_brokers_lock = threading.Lock()


def _broker_for(url: str) -> _Broker:
    parts = urlsplit(url)
    name = parts.netloc + parts.path
    with _brokers_lock:
        broker = _brokers.get(name)
        if broker is None:
            broker = _brokers[name] = _Broker()
        return broker


class MemoryTransport:
    """Queues in this process's memory, shared by every instance with the same URL."""

    capabilities = Capabilities(priorities=True, cross_process=False, fanout=True)

    def __init__(self, url: str, options: TransportOptions | None = None) -> None:
        self.url = url
        self.options = options or TransportOptions()
        self._broker = _broker_for(url)
        #: tag → (queue, entry) for every message this instance reserved and still holds.
        self._unacked: dict[Hashable, tuple[str, _Entry]] = {}

    def declare(self, queues: Sequence[QueueSpec]) -> None:
        broker = self._broker
        with broker.condition:
            for spec in queues:
                broker.queues.setdefault(spec.name, [])
                if not spec.exchange:
                    continue
                broker.exchange_types.setdefault(spec.exchange, spec.exchange_type)
                bindings = broker.bindings.setdefault(spec.exchange, [])
                binding = (spec.binding_key, spec.name)
                if binding not in bindings:
                    bindings.append(binding)

    def publish(self, envelopes: Sequence[Envelope]) -> None:
        # Serialize outside the lock: it is the expensive part and touches no shared state.
        encoded = [(envelope, encode_meta(envelope)) for envelope in envelopes]
        broker = self._broker
        with broker.condition:
            for envelope, meta in encoded:
                for queue in broker.route(envelope.exchange, envelope.routing_key):
                    entry = (-envelope.priority, next(broker.sequence), envelope.body, meta, False)
                    heapq.heappush(broker.queues.setdefault(queue, []), entry)
            broker.condition.notify_all()

    def fetch(
        self, queues: Sequence[str], limit: int, timeout: float, ack: Sequence[Delivery] = ()
    ) -> list[Delivery]:
        if ack:
            self.ack(ack)
        if not queues or limit <= 0:
            return []
        deadline = time.monotonic() + timeout
        broker = self._broker
        with broker.condition:
            while True:
                taken = self._take(queues, limit)
                remaining = deadline - time.monotonic()
                if taken or remaining <= 0:
                    break
                broker.condition.wait(remaining)
        return [
            Delivery(decode_envelope(entry[2], entry[3]), entry[1], queue, entry[4])
            for queue, entry in taken
        ]

    def _take(self, queues: Sequence[str], limit: int) -> list[tuple[str, _Entry]]:
        """Pop up to ``limit`` entries, best first across ``queues``; the lock is held."""
        heaps = [(name, heap) for name in queues if (heap := self._broker.queues.get(name))]
        taken: list[tuple[str, _Entry]] = []
        while heaps and len(taken) < limit:
            name, heap = min(heaps, key=lambda named: named[1][0][:2])
            entry = heapq.heappop(heap)
            self._unacked[entry[1]] = (name, entry)
            taken.append((name, entry))
            if not heap:
                heaps = [named for named in heaps if named[1]]
        return taken

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        with self._broker.condition:
            for delivery in deliveries:
                self._unacked.pop(delivery.tag, None)

    def dead_letter(self, items: Sequence[tuple[Delivery, str]]) -> None:
        dead_letter_by_publishing(self, items)

    def reject(self, deliveries: Sequence[Delivery], requeue: bool) -> None:
        with self._broker.condition:
            held = [self._unacked.pop(delivery.tag, None) for delivery in deliveries]
            if requeue:
                self._requeue([item for item in held if item is not None])

    def _requeue(self, held: Sequence[tuple[str, _Entry]]) -> None:
        """Put messages back where they were, marked redelivered; the lock is held."""
        if not held:
            return
        for queue, (priority, sequence, body, meta, _) in held:
            heapq.heappush(
                self._broker.queues.setdefault(queue, []), (priority, sequence, body, meta, True)
            )
        self._broker.condition.notify_all()

    def purge(self, queue: str) -> int:
        with self._broker.condition:
            heap = self._broker.queues.get(queue, [])
            count = len(heap)
            heap.clear()
            return count

    def size(self, queue: str) -> int:
        with self._broker.condition:
            return len(self._broker.queues.get(queue, ()))

    def on_void(self, callback: Callable[[], None]) -> None:
        pass  # reserved messages stay with their holder across reconnects

    def close(self) -> None:
        with self._broker.condition:
            held, self._unacked = list(self._unacked.values()), {}
            self._requeue(held)

    def __repr__(self) -> str:
        return f"<MemoryTransport {self.url!r}>"
