"""How much a decoder may take from one message before it refuses it.

A message comes from whoever can write to the broker. These bounds make sure one of them
cannot make a worker allocate without end, recurse until the interpreter gives up, or spend
minutes inflating a small compressed body: past a limit, a decoder raises
:class:`~celeriac.exceptions.DecodeError` naming it, and the message is rejected like any
other bad message.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one message; decoders take them as ``limits=`` (default :data:`DEFAULT_LIMITS`).

    The defaults:

    * ``max_message_bytes`` = 64 MiB: the serialized message (a Redis entry, a body) as
      read. Far above any task message that makes sense to queue, below RabbitMQ's own
      ``max_message_size`` (128 MiB), and small enough that decoding one costs a bounded
      share of a worker's memory.
    * ``max_decompressed_bytes`` = 64 MiB: what a compressed body may expand to, so a
      body holds no more after decompression than an uncompressed one may. A zlib "bomb"
      inflates about a thousandfold: a few kilobytes on the wire stop here, not at 200 MB.
    * ``max_depth`` = 200: how deeply lists and maps may nest where a decoder of ours (or
      a Python parser) walks them recursively. Real messages nest a few levels (a chord in
      a chain in a callback is under 20); 200 stays far from Python's default recursion
      limit of 1000 even when the decode itself runs a few hundred frames deep. JSON read
      by orjson is bounded by orjson's own limit (1024) instead, checked at no cost.
    * ``max_result_bytes`` = 64 MiB: one stored result (a meta read from a result
      backend), for the same reasons as a message.
    """

    max_message_bytes: int = 64 * MiB
    max_decompressed_bytes: int = 64 * MiB
    max_depth: int = 200
    max_result_bytes: int = 64 * MiB


DEFAULT_LIMITS = Limits()
