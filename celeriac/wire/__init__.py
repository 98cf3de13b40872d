"""What the transports and the result backends share, below both.

Transports and result backends are sibling layers that may not import each other, yet the
``rpc://`` backend moves results as queue messages, and the Redis and SQLite transports and
backends open the same kind of connection from the same kind of URL. Each such piece has
its home here, once: queue and delivery types (:mod:`~celeriac.wire.queues`), how brokers
store an envelope (:mod:`~celeriac.wire.envelopes`), URL helpers and the scheme registry
(:mod:`~celeriac.wire.urls`), SQLite files (:mod:`~celeriac.wire.sqlite`) and Redis
connections (:mod:`celeriac.wire.redis`).
"""
