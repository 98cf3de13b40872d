"""Where things live in Redis: kombu's key names, plus celeriac's holder keys.

kombu's layout (so Celery peers share the queues):

* queue ``Q``: the list ``Q`` for priority step 0 and ``Q\\x06\\x16<step>`` for the other
  steps (default steps 0, 3, 6, 9). Producers ``LPUSH``, consumers pop from the right.
* bindings of exchange ``E``: the set ``_kombu.binding.E`` of
  ``<routing key>\\x06\\x16<pattern>\\x06\\x16<queue>`` (pattern: the regex of a topic
  binding, empty otherwise), mirrored in ``_kombu.binding_permanent.E`` so that kombu 5.7's
  sweep of expiring bindings leaves them alone.
* fanout exchange ``E``: Pub/Sub channel ``/<db>.E`` (``/<db>.E/<routing key>`` when the
  message has one); subscribers ``PSUBSCRIBE`` ``/<db>.E/<binding key, # as *>``.

celeriac's own keys, which kombu never reads: ``celeriac.exchanges`` (fanout exchange →
``fanout``, so a producer that never declared one knows to publish on its channel),
``celeriac.holders`` (consumer ids), ``celeriac.alive.<id>`` (heartbeat with a TTL) and
``celeriac.held.<id>`` (what that consumer reserved). Every key and channel is prefixed
with ``global_keyprefix`` as-is.
"""

from __future__ import annotations

import bisect
import functools
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol.message import Envelope
from celeriac.wire.queues import binding_matches
from celeriac.wire.redis.commands import Arg

logger = logging.getLogger("celeriac.transports.redis")

DEFAULT_SEPARATOR = "\x06\x16"
DEFAULT_PRIORITY_STEPS = (0, 3, 6, 9)
#: Exchanges that are fanout on Redis whoever declared them: Celery's remote-control
#: broadcast and its event stream (Celery makes ``celeryev`` fanout on Redis).
DEFAULT_FANOUT_EXCHANGES = ("celery.pidbox", "celeryev")


@dataclass(frozen=True, slots=True)
class Binding:
    routing_key: str
    pattern: str
    queue: str

    def matches(self, routing_key: str) -> bool:
        if not self.pattern:
            return self.routing_key == routing_key
        # kombu stores a regex for topic bindings; AMQP words semantics is checked too,
        # so ``a.#`` also takes ``a`` (kombu's regex needs the dot).
        return bool(_compiled(self.pattern).match(routing_key)) or binding_matches(
            "topic", self.routing_key, routing_key
        )


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def topic_pattern(binding_key: str) -> str:
    """The regex kombu stores for a topic binding (``*``: one word, ``#``: any words)."""
    words = []
    for word in binding_key.split("."):
        if word == "*":
            words.append(r"[^\.]+")
        elif word == "#":
            words.append(".*?")
        else:
            words.append("".join(c if c.isalnum() or c in "#*" else "\\" + c for c in word))
    return "^" + r"\.".join(words) + "$"


@dataclass(frozen=True, slots=True)
class KeySpace:
    prefix: str = ""
    separator: str = DEFAULT_SEPARATOR
    priority_steps: tuple[int, ...] = DEFAULT_PRIORITY_STEPS
    fanout_prefix: str = "/0."
    fanout_patterns: bool = True
    #: ``True``: a higher priority number is fetched first (AMQP's order); celeriac then
    #: files priority ``p`` under step ``9 - p``. Default ``False``: kombu's order, where
    #: priority 0 is fetched first, exactly as Celery on Redis.
    higher_first: bool = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any], db: int) -> KeySpace:
        steps = tuple(sorted(int(step) for step in options.get("priority_steps", ()) or ()))
        fanout_prefix = options.get("fanout_prefix", True)
        if fanout_prefix is True:
            fanout_prefix = "/{db}."
        elif not fanout_prefix:
            fanout_prefix = ""
        order = options.get("priority_order", "kombu")
        if order not in ("kombu", "higher_first"):
            raise ImproperlyConfigured(
                f"transport option priority_order={order!r}: use 'kombu' or 'higher_first'"
            )
        return cls(
            prefix=str(options.get("global_keyprefix", "") or ""),
            separator=str(options.get("sep", DEFAULT_SEPARATOR)),
            priority_steps=steps or DEFAULT_PRIORITY_STEPS,
            fanout_prefix=str(fanout_prefix).format(db=db),
            fanout_patterns=bool(options.get("fanout_patterns", True)),
            higher_first=order == "higher_first",
        )

    # -- queues ------------------------------------------------------------------------

    def step_of(self, priority: Any) -> int:
        """The priority step a message with this ``priority`` property goes to."""
        try:
            value = max(0, min(int(priority or 0), 9))
        except (TypeError, ValueError):
            value = 0
        if self.higher_first:
            value = 9 - value
        steps = self.priority_steps
        return steps[max(bisect.bisect_right(steps, value) - 1, 0)]

    def list_key(self, queue: str, step: int) -> str:
        # Step 0 lives in the bare list, as in kombu.
        return f"{self.prefix}{queue}{self.separator}{step}" if step else self.prefix + queue

    def list_keys(self, queue: str) -> list[str]:
        """Every list of ``queue``, the one fetched first first."""
        return [self.list_key(queue, step) for step in self.priority_steps]

    # -- exchanges -----------------------------------------------------------------------

    def bindings_key(self, exchange: str) -> str:
        return f"{self.prefix}_kombu.binding.{exchange}"

    def permanent_bindings_key(self, exchange: str) -> str:
        return f"{self.prefix}_kombu.binding_permanent.{exchange}"

    @property
    def exchange_types_key(self) -> str:
        return f"{self.prefix}celeriac.exchanges"

    def binding_member(self, routing_key: str, pattern: str, queue: str) -> str:
        return self.separator.join((routing_key, pattern, queue))

    def parse_members(self, members: Sequence[bytes]) -> list[Binding]:
        bindings = []
        for member in members:
            parts = member.decode("utf-8", "replace").split(self.separator)
            if len(parts) == 3:
                bindings.append(Binding(*parts))
        return bindings

    def fanout_channel(self, exchange: str, routing_key: str) -> str:
        """The channel a message for a fanout exchange is published on."""
        if routing_key and self.fanout_patterns:
            return f"{self.prefix}{self.fanout_prefix}{exchange}/{routing_key}"
        return f"{self.prefix}{self.fanout_prefix}{exchange}"

    def fanout_subscriptions(self, exchange: str, binding_key: str) -> list[str]:
        """The channel patterns a queue bound to a fanout exchange subscribes to.

        kombu subscribes to ``/<db>.E/<binding key, # as *>`` only, so a queue bound with
        an empty key (pidbox) misses messages published with a routing key. A fanout
        exchange ignores routing keys, so for an empty (or ``#``) key celeriac also
        subscribes to ``/<db>.E/*``; a non-empty key filters as in kombu (Celery's worker
        gossip binds ``worker.#`` to hear only worker events).
        """
        if binding_key in ("", "#"):
            exact = self.fanout_channel(exchange, "")
            return [exact, exact + "/*"] if self.fanout_patterns else [exact]
        return [self.fanout_channel(exchange, binding_key.replace("#", "*"))]

    # -- holders (celeriac only) ---------------------------------------------------------

    @property
    def holder_prefix(self) -> str:
        return f"{self.prefix}celeriac."

    @property
    def holders_key(self) -> str:
        return f"{self.prefix}celeriac.holders"

    def alive_key(self, holder: str) -> str:
        return f"{self.prefix}celeriac.alive.{holder}"

    def held_key(self, holder: str) -> str:
        return f"{self.prefix}celeriac.held.{holder}"


#: Values per ``LPUSH`` (a huge batch goes in several).
_PUSH_CHUNK = 5000


def publish_commands(
    keys: KeySpace,
    envelopes: Sequence[Envelope],
    exchange_types: Mapping[str, str],
    bindings: Mapping[str, Sequence[Binding]],
    encode: Callable[[Envelope], bytes],
    steps: Mapping[int, int],
) -> list[tuple[Arg, ...]]:
    """The commands that publish ``envelopes``: one ``LPUSH`` per list, in batch order, and
    a ``PUBLISH`` per message for a fanout exchange. ``steps`` maps priorities 0-9 to their
    step (computed once); ``bindings`` holds those of every direct/topic exchange named."""
    pushes: dict[str, list[bytes]] = {}
    channels: list[tuple[str, bytes]] = []
    for envelope in envelopes:
        exchange = envelope.exchange
        if exchange and exchange_types.get(exchange) == "fanout":
            channels.append((keys.fanout_channel(exchange, envelope.routing_key), encode(envelope)))
            continue
        if not exchange:
            targets = [envelope.routing_key] if envelope.routing_key else []
        else:
            targets = _route(bindings.get(exchange, ()), envelope.routing_key)
        if not targets:
            logger.debug("Redis: no queue for %r/%r", exchange, envelope.routing_key)
            continue
        data = encode(envelope)
        priority = envelope.properties.get("priority")
        step = steps.get(priority) if isinstance(priority, int) else None
        if step is None:
            step = keys.step_of(priority)
        for queue in targets:
            pushes.setdefault(keys.list_key(queue, step), []).append(data)
    commands: list[tuple[Arg, ...]] = [
        ("LPUSH", list_key, *values[start : start + _PUSH_CHUNK])
        for list_key, values in pushes.items()
        for start in range(0, len(values), _PUSH_CHUNK)
    ]
    commands += [("PUBLISH", channel, data) for channel, data in channels]
    return commands


def _route(bindings: Sequence[Binding], routing_key: str) -> list[str]:
    return list(dict.fromkeys(b.queue for b in bindings if b.matches(routing_key)))
