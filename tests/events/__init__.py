"""Events: dispatcher, receiver and state, on every broker and beside real Celery."""
