"""The modules compiled with mypyc at install time (``setup.py`` reads this list).

They are the modules every task passes through: publish, decode, dispatch, execute, ack,
store. An editable install builds them in place, next to their sources, and Python then
prefers the compiled module: an edit to one of these sources has no effect until the next
``pip install -e .``. :func:`warn_if_stale` says so at import, instead of letting an edit
be silently ignored. ``CELERIAC_COMPILE=0 pip install -e .`` installs plain Python.
"""

from __future__ import annotations

import importlib.machinery
import os
import warnings

#: Not compiled: modules that read wire data through typed attributes (``task.request``'s
#: Context, the Job tuple's fields in the task runner). A compiled module checks declared
#: types at run time, so a header value of an unexpected type from another producer would
#: raise there, where plain Python goes on (``app/trace.py``, ``worker/execute.py``).
HOT_MODULES = (
    "celeriac/protocol/results.py",
    "celeriac/protocol/serializers.py",
    "celeriac/transports/amqp/codec.py",
    "celeriac/transports/amqp/connection.py",
    "celeriac/transports/amqp/transport.py",
    "celeriac/transports/redis/envelope.py",
    "celeriac/transports/redis/keyspace.py",
    "celeriac/utils/rediswire.py",
    "celeriac/worker/consumer.py",
    "celeriac/worker/pools/pipe.py",
    "celeriac/worker/pools/prefork.py",
)

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def warn_if_stale() -> None:
    for source in HOT_MODULES:
        path = os.path.join(_ROOT, source)
        try:
            stale = os.stat(path).st_mtime > os.stat(path[: -len(".py")] + _SUFFIX).st_mtime
        except OSError:
            continue  # not compiled (or no source): what runs is what is there
        if stale:
            warnings.warn(
                f"celeriac: {source} changed after it was compiled, and the compiled "
                "(old) version is what runs; rebuild with `pip install -e .` (or install "
                "with CELERIAC_COMPILE=0 for plain Python)",
                RuntimeWarning,
                stacklevel=2,
            )
