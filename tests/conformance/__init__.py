"""Suites every implementation of an interface must pass (see ``conftest.py``)."""
