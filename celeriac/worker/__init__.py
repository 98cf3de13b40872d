"""The worker: consumer (fetch, validate, dispatch, ack), pools and timers."""
