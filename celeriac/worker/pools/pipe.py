"""Length-prefixed messages over one end of a socket pair: the prefork pool's link to a child.

multiprocessing's ``Connection`` spends a few microseconds of Python on each message at each
end (checks, then a header read and a body read, each in its own loop); with one message per
batch of jobs and one per batch of completions, that was a tenth of the worker's CPU in the
drain. Here a write sends header and body in one call, and a read takes whatever has arrived
(often several messages) in one call and splits it.
"""

from __future__ import annotations

import socket
import struct

_HEADER = struct.Struct(">I")
#: Bytes asked for per read; a larger message is read in reads of its remaining size.
_CHUNK = 65536


class MessagePipe:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        #: The start of a message not fully read yet.
        self.buffer = bytearray()

    @staticmethod
    def pair() -> tuple[MessagePipe, MessagePipe]:
        one, two = socket.socketpair()
        return MessagePipe(one), MessagePipe(two)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, payload: bytes) -> None:
        self.sock.sendall(_HEADER.pack(len(payload)) + payload)

    def receive(self) -> list[bytes] | None:
        """The messages completed by one read (which waits only if nothing has arrived);
        ``None`` once the other end is closed."""
        buffer = self.buffer
        wanted = _CHUNK
        if len(buffer) >= _HEADER.size:  # a big message is partly in: ask for all the rest
            wanted = max(_CHUNK, _HEADER.size + _HEADER.unpack_from(buffer)[0] - len(buffer))
        chunk = self.sock.recv(wanted)
        if not chunk:
            return None
        if buffer:
            buffer += chunk
            data: bytes | bytearray = buffer
        else:
            data = chunk
        messages = []
        offset, size = 0, len(data)
        while size - offset >= _HEADER.size:
            end = offset + _HEADER.size + _HEADER.unpack_from(data, offset)[0]
            if end > size:
                break
            messages.append(bytes(data[offset + _HEADER.size : end]))
            offset = end
        if offset < size:
            self.buffer = bytearray(data[offset:])
        elif buffer:
            self.buffer = bytearray()
        return messages

    def receive_some(self) -> list[bytes] | None:
        """At least one message, waiting for it; ``None`` once the other end is closed."""
        while True:
            messages = self.receive()
            if messages is None or messages:
                return messages

    def close(self) -> None:
        self.sock.close()
