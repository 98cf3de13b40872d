"""The RabbitMQ transport under the conformance suite (local broker, guest/guest).

The suite runs in a virtual host of its own, created on first use and deleted when the
test session ends, so its queues never meet anybody else's and need no per-test cleanup.
Reserved messages come back the moment their holder's connection is gone, so the
dead-holder wait is short.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from celeriac.transports.amqp import AMQPTransport
from celeriac.transports.base import TransportOptions

NAME = "amqp"
MARKS = (pytest.mark.amqp,)
BROKER = "amqp://guest:guest@127.0.0.1:5672"
#: The broker requeues a dead connection's messages at once; the margin is for a busy box.
DEAD_HOLDER_SECONDS = 5.0
HOLD_SECONDS = 1.0

_vhost: str | None = None
_owner_pid = 0


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl``; its output, or an error that shows what it said."""
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


def create_vhost(label: str) -> str:
    vhost = f"celeriac_test_{label}_{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    return vhost


def delete_vhost(vhost: str) -> None:
    rabbitmqctl("delete_vhost", vhost)


def _session_vhost(request: pytest.FixtureRequest) -> str:
    global _vhost, _owner_pid
    if _vhost is None:
        _vhost, _owner_pid = create_vhost("conformance"), os.getpid()
        vhost = _vhost

        def delete_if_owner() -> None:
            if os.getpid() == _owner_pid:  # never from a forked child
                delete_vhost(vhost)

        request.config.add_cleanup(delete_if_owner)
    return _vhost


def make_transport(tmp_path: Path, request: pytest.FixtureRequest) -> AMQPTransport:
    options = TransportOptions(connection_max_retries=3)
    return AMQPTransport(f"{BROKER}/{_session_vhost(request)}", options)
