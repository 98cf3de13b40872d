"""The modules a wheel compiles with mypyc (``setup.py`` reads this list), and which did.

They are the modules every task passes through: publish, decode, dispatch, execute, ack,
store. A wheel built where mypyc and a C compiler work has them as C extensions; elsewhere,
and in every editable install, they run as the plain Python they are written in.
"""

from __future__ import annotations

import importlib.machinery
import os

#: Not compiled: modules that read wire data through typed attributes (``task.request``'s
#: Context, the Job tuple's fields in the task runner). A compiled module checks declared
#: types at run time, so a header value of an unexpected type from another producer would
#: raise there, where plain Python goes on (``app/trace.py``, ``worker/execute.py``).
#: ``protocol/headers.py`` is compiled: the consumer asks it about every message, and it
#: declares header values ``object`` or ``Any``, so nothing is checked on the way in.
HOT_MODULES = (
    "celeriac/protocol/headers.py",
    "celeriac/protocol/results.py",
    "celeriac/protocol/serializers.py",
    "celeriac/transports/amqp/codec.py",
    "celeriac/transports/amqp/connection.py",
    "celeriac/transports/amqp/transport.py",
    "celeriac/transports/redis/envelope.py",
    "celeriac/transports/redis/keyspace.py",
    "celeriac/wire/redis/commands.py",
    "celeriac/worker/consumer.py",
    "celeriac/worker/pools/pipe.py",
    "celeriac/worker/pools/prefork.py",
)


def compiled() -> list[str]:
    """The hot modules that import as compiled extensions here (Python prefers an extension
    to the source beside it); found on disk, without importing them or their extras."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    return [
        path
        for path in HOT_MODULES
        if any(os.path.exists(os.path.join(root, path[: -len(".py")] + s)) for s in suffixes)
    ]


def build_description() -> str:
    """``compiled (12 of 12 hot modules)`` or ``plain Python``: what ``celeriac report`` says."""
    done = compiled()
    return f"compiled ({len(done)} of {len(HOT_MODULES)} hot modules)" if done else "plain Python"
