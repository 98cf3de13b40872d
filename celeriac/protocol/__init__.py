"""The wire format, as pure functions: no sockets, no files, no clocks read behind your back.

Everything that turns Python values into Celery protocol v2 messages and result metadata,
and back, lives here, so that every transport, the worker, the client and the dashboard
share one implementation.
"""
