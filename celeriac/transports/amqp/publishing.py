"""The publish channel: message frames out, publisher confirms back.

Confirms (``transport_options["confirm_publish"]``): ``"pipelined"`` (default) returns
once the batch is written and keeps up to ``confirm_window`` messages unconfirmed, which
run at the speed of unconfirmed publishing yet are still republished after a reconnect,
waited for before the transport reads queues (``size``, ``fetch``, ``purge``) and on
``close``; a refusal surfaces on a later call. ``True`` waits for them in every
``publish`` call; for persistent messages the broker confirms after writing to disk, so
one-message calls are bound by its fsync latency (~1 ms here). ``False`` turns confirms
off (kombu's default).

Pipelined is the default because waiting for a persistent message's confirm costs a disk
sync per call, while pipelining keeps Celery-like latency and still never loses a message
to a connection drop.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from pika import spec

from celeriac.exceptions import OperationalError
from celeriac.protocol.message import Envelope
from celeriac.transports.amqp import codec
from celeriac.transports.amqp.connection import AMQPConnection, ChannelError, ConnectionLost

logger = logging.getLogger("celeriac.transports.amqp")


class PublishChannel:
    """Publishes batches and tracks each message until the broker confirms it."""

    def __init__(self, transport_options: Mapping[str, Any]) -> None:
        setting = transport_options.get("confirm_publish", "pipelined")
        #: Publisher confirms on.
        self.confirm = bool(setting)
        #: How many messages may stay unconfirmed when ``publish`` returns.
        self.window = (
            max(int(transport_options.get("confirm_window", 10000)), 1)
            if setting == "pipelined"
            else 0
        )
        self.channel = 0
        self._seq = 0
        # Sequence number → envelope until the broker confirms it. Ordered by sequence
        # number; an OrderedDict pops from the front in O(1).
        self._unconfirmed: OrderedDict[int, Envelope] = OrderedDict()
        self._refused: list[Envelope] = []
        self._error: ChannelError | None = None
        #: Published without confirms and not yet known to be routed: see :meth:`finish`.
        self._unsettled = False

    def open(self, conn: AMQPConnection) -> None:
        """A new channel (numbering its messages from 1 again, as the broker does)."""
        self.channel = conn.open_channel()
        if self.confirm:
            conn.rpc(self.channel, spec.Confirm.Select(), spec.Confirm.SelectOk)
        self._seq = 0
        self._error = None

    def send(self, conn: AMQPConnection, envelopes: Sequence[Envelope]) -> None:
        """Write a batch; in confirm mode it is tracked from here on, so that a reconnect
        republishes it."""
        channel = self.channel
        frame_max = conn.frame_max
        frames = []
        for envelope in envelopes:
            properties = envelope.properties
            if "delivery_mode" not in properties:
                properties = {**properties, "delivery_mode": 2}
            flags, property_list = codec.encode_properties(
                envelope.content_type, envelope.content_encoding, envelope.headers, properties
            )
            frames.append(
                codec.publish_frames(
                    channel,
                    envelope.exchange,
                    envelope.routing_key,
                    envelope.body,
                    flags,
                    property_list,
                    frame_max,
                )
            )
        if self.confirm:
            seq = self._seq
            for envelope in envelopes:
                seq += 1
                self._unconfirmed[seq] = envelope
            self._seq = seq
        conn.send(b"".join(frames))
        self._unsettled = not self.confirm

    def withdraw(self, envelopes: Sequence[Envelope]) -> None:
        """Stop tracking a batch whose publishing failed: its caller retries it, so it must
        not also be republished after a reconnect (earlier pipelined ones are)."""
        mine = {id(envelope) for envelope in envelopes}
        for seq in [seq for seq, env in self._unconfirmed.items() if id(env) in mine]:
            del self._unconfirmed[seq]

    def republish(self, conn: AMQPConnection) -> None:
        """On a new connection: send again what the lost one left unconfirmed."""
        if self._unconfirmed:
            pending = list(self._unconfirmed.values())
            self._unconfirmed.clear()
            logger.warning("republishing %d unconfirmed message(s)", len(pending))
            self.send(conn, pending)

    def confirm_own_writes(self, conn: AMQPConnection) -> None:
        """Pipelined confirms: what was published is on the broker before the transport
        looks at queues (read-your-writes), so ``size``/``fetch``/``purge`` see it."""
        if self._unconfirmed:
            self.wait(conn, 0)

    def wait(self, conn: AMQPConnection, allowed: int) -> None:
        """Wait until at most ``allowed`` messages are unconfirmed; report failures."""
        if allowed and len(self._unconfirmed) > allowed // 2:
            conn.pump(0)  # collect the confirms that have arrived, without waiting
        while len(self._unconfirmed) > allowed and self._error is None:
            conn.pump(None)
        error, self._error = self._error, None
        refused, self._refused = self._refused, []
        if error is not None:
            lost = len(self._unconfirmed)
            self._unconfirmed.clear()
            conn.discard_channel(self.channel)
            self.open(conn)
            raise OperationalError(f"publishing failed, {lost} message(s) not sent: {error}")
        if refused:
            ids = ", ".join(str(envelope.headers.get("id")) for envelope in refused[:5])
            raise OperationalError(
                f"the broker refused {len(refused)} message(s) (basic.nack; ids {ids}...)"
            )

    def finish(self, conn: AMQPConnection) -> None:
        """Before closing ``conn``: let what was published reach its queues, then forget it."""
        try:
            if self._unconfirmed and conn.is_open:
                self.wait(conn, 0)
            elif self._unsettled and conn.is_open:
                # Without confirms, a round trip on the publishing channel makes sure the
                # broker has routed everything before the connection goes (it drops
                # messages still in flight when a connection closes).
                conn.rpc(self.channel, spec.Basic.Qos(), spec.Basic.QosOk)
        except (ConnectionLost, ChannelError, OperationalError) as exc:
            logger.warning(
                "closing with %d unconfirmed message(s): %s", len(self._unconfirmed), exc
            )
        self._unconfirmed.clear()
        self._unsettled = False

    def on_confirm(self, delivery_tag: int, multiple: bool, ack: bool) -> None:
        unconfirmed = self._unconfirmed
        if not multiple:
            settled = [unconfirmed.pop(delivery_tag)] if delivery_tag in unconfirmed else []
        elif delivery_tag >= self._seq:
            settled = list(unconfirmed.values())
            unconfirmed.clear()
        else:
            settled = []
            while unconfirmed and next(iter(unconfirmed)) <= delivery_tag:
                settled.append(unconfirmed.popitem(last=False)[1])
        if not ack:
            self._refused.extend(settled)

    def on_closed(self, error: ChannelError) -> None:
        """The broker closed the channel (a publish to a missing exchange, ...): the
        waiting publisher reports it."""
        self._error = error
