"""Redis broker (``redis://``, ``rediss://``, ``redis+socket://``), kombu-compatible."""

from celeriac.transports.redis.transport import RedisTransport

__all__ = ["RedisTransport"]
