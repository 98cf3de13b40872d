"""A node of the remote-control mailbox: takes the requests addressed to it, runs, replies."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from celeriac.control.clock import LamportClock
from celeriac.control.mailbox import Mailbox, NodeReply, Reply, Request
from celeriac.protocol.message import Envelope, safe_repr
from celeriac.transports.base import Transport

logger = logging.getLogger("celeriac.control")

#: A command: called with the request's arguments as keywords, returns the node's reply.
Handler = Callable[..., NodeReply]

#: Requests taken per fetch.
_REQUESTS_PER_FETCH = 32
#: How much of an unknown command's name a log line shows (the name comes from anyone).
_NAME_IN_LOGS = 100
#: Pause of :meth:`Node.run` after the broker failed.
_RETRY_PAUSE = 1.0


class Node:
    """One node name answering requests with a table of command handlers.

    ``handlers`` maps command names to callables that take the request's arguments as
    keywords and return the reply as it is to be sent (Celery's shapes: ``{"ok": value}``,
    ``{"error": message}``, or a command's own value, such as a list of tasks). A handler
    that raises answers ``{"error": repr(exception)}``; an unknown command answers an
    error. ``SystemExit`` goes through, unanswered, as in Celery (its ``shutdown`` command
    stops the worker so).

    Requests for other nodes, expired ones and malformed ones (the last with one log line)
    are skipped: nothing a message holds makes the node raise. The node does not own the
    transport; whoever made it closes it.
    """

    def __init__(
        self,
        nodename: str,
        mailbox: Mailbox,
        transport: Transport,
        handlers: Mapping[str, Handler],
        clock: LamportClock | None = None,
    ) -> None:
        self.nodename = nodename
        self.mailbox = mailbox
        self.transport = transport
        self.handlers = handlers
        self.clock = clock or LamportClock()
        self.queue = mailbox.node_queue(nodename).name

    def listen(self) -> None:
        """Declare this node's queue: requests broadcast from now on reach it."""
        self.transport.declare([self.mailbox.node_queue(self.nodename)])

    def handle_pending(self, timeout: float) -> int:
        """Answer the requests waiting (waiting up to ``timeout`` seconds for one); how many
        messages were taken."""
        deliveries = self.transport.fetch([self.queue], _REQUESTS_PER_FETCH, timeout)
        if not deliveries:
            return 0
        # Acked before they run, as Celery's node consumes without acks: a command such as
        # shutdown or revoke runs at most once.
        self.transport.ack(deliveries)
        replies = [
            reply
            for delivery in deliveries
            if (reply := self.handle(delivery.envelope)) is not None
        ]
        if replies:
            try:
                self.transport.publish(replies)
            except Exception as exc:  # the callers time out; the node goes on
                logger.error("Control node %s could not send its replies: %s", self.nodename, exc)
        return len(deliveries)

    def run(self, stop: threading.Event, poll_interval: float = 1.0) -> None:
        """Listen and answer until ``stop`` is set. A broker failure is logged and tried
        again after a pause, so a thread running this outlives an outage."""
        listening = False
        while not stop.is_set():
            try:
                if not listening:
                    self.listen()
                    listening = True
                self.handle_pending(poll_interval)
            except Exception as exc:
                logger.error(
                    "Control node %s: %s; trying again in %.0f s", self.nodename, exc, _RETRY_PAUSE
                )
                stop.wait(_RETRY_PAUSE)

    def handle(self, envelope: Envelope) -> Envelope | None:
        """Run the request a message carries if it is for this node; the reply to send."""
        try:
            request = self.mailbox.parse_request(envelope)
        except Exception as exc:  # whatever the message holds: this message only
            logger.error("Skipped a malformed control request on %s: %s", self.queue, exc)
            return None
        self.clock.adjust(request.clock)
        if not request.addressed_to(self.nodename):
            return None
        if request.expired(time.time()):
            logger.debug("Dropped the expired control request %r", request.method)
            return None
        answer = self._run(request)
        return None if request.reply_to is None else self._reply(request, answer)

    def _run(self, request: Request) -> NodeReply:
        handler = self.handlers.get(request.method)
        if handler is None:
            name = safe_repr(request.method, _NAME_IN_LOGS)
            logger.error("Unknown control command %s for %s", name, self.nodename)
            return {"error": f"unknown command {name}"}
        try:
            return handler(**request.arguments)
        except Exception as exc:
            logger.exception("Control command %r failed", request.method)
            return {"error": repr(exc)}

    def _reply(self, request: Request, answer: NodeReply) -> Envelope:
        assert request.reply_to is not None
        reply = Reply({self.nodename: answer}, request.ticket, self.clock.forward())
        try:
            return self.mailbox.reply_envelope(reply, request.reply_to)
        except Exception as exc:  # a value the serializer cannot write
            logger.error("Control command %r: its reply cannot be sent: %s", request.method, exc)
            error = {"error": f"the reply cannot be serialized: {exc}"}
            return self.mailbox.reply_envelope(
                Reply({self.nodename: error}, request.ticket, reply.clock), request.reply_to
            )
