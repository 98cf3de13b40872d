"""Redis as the broker (``transports/redis``) and the result backend (``backends/redis.py``)
both reach it: URLs and connections (:mod:`~celeriac.wire.redis.connection`), commands sent
straight on a connection (:mod:`~celeriac.wire.redis.commands`) and Pub/Sub
(:mod:`~celeriac.wire.redis.pubsub`)."""
