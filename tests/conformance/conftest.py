"""Fixtures that run the transport conformance suite once per transport implementation.

Every ``transport_*.py`` module beside this file is one implementation under test; adding a
transport means adding such a module, nothing else. A module provides:

``NAME: str``
    The parameter id (``pytest -k sqlite``).
``make_transport(tmp_path, request) -> Transport``
    A new instance on this test's broker. Called several times per test (a producer and
    consumers, also inside forked child processes), every call on the same broker.
``MARKS: Sequence[pytest.MarkDecorator]`` (optional)
    Marks for this parameter, e.g. ``(pytest.mark.redis,)``.
``cleanup(tmp_path, request) -> None`` (optional)
    Called once after the test, when every instance is closed. Queue names in tests come
    from the ``names`` fixture (``request.getfixturevalue("names")``): ``names.prefix``
    starts every one and ``names.issued`` lists them.
``DEAD_HOLDER_SECONDS: float`` (optional, default 10)
    The longest a transport takes to redeliver what a dead process held.
``HOLD_SECONDS: float`` (optional, default 2.5)
    How long a live holder keeps messages in the "never redelivered while held" tests:
    longer than any interval at which the transport looks for dead holders.

Tests state what they need with ``@pytest.mark.requires_capability("fanout", ...)``
(attribute names of :class:`celeriac.transports.base.Capabilities`); transports without it
are skipped for that test.
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from celeriac.transports.base import Capabilities, Transport

_HERE = Path(__file__).parent


def load_implementations(prefix: str) -> list[ModuleType]:
    """The ``<prefix>*.py`` modules beside this file, in name order: one per implementation.

    Loaded by path, so a suite works whether or not ``tests`` is a package.
    """
    modules = []
    for path in sorted(_HERE.glob(f"{prefix}*.py")):
        spec = importlib.util.spec_from_file_location(f"_conformance_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules.append(module)
    return modules


TRANSPORT_MODULES = load_implementations("transport_")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "requires_capability(*names): skip transports whose Capabilities lack one"
    )


class Names:
    """Queue and exchange names unique to one test, so shared brokers need no flushing."""

    def __init__(self) -> None:
        self.prefix = f"conformance-{uuid.uuid4().hex[:10]}-"
        self.issued: list[str] = []

    def __call__(self, name: str) -> str:
        full = self.prefix + name
        self.issued.append(full)
        return full


@pytest.fixture
def names() -> Names:
    return Names()


class TransportFactory:
    """Creates transports on one broker and closes them all after the test."""

    def __init__(self, module: ModuleType, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.module = module
        self.name: str = module.NAME
        self.dead_holder_seconds: float = getattr(module, "DEAD_HOLDER_SECONDS", 10.0)
        self.hold_seconds: float = getattr(module, "HOLD_SECONDS", 2.5)
        self._make: Callable[[], Transport] = lambda: module.make_transport(tmp_path, request)
        self.created: list[Transport] = []

    def __call__(self) -> Transport:
        transport = self._make()
        self.created.append(transport)
        return transport

    def close_all(self) -> None:
        errors: list[BaseException] = []
        for transport in self.created:
            try:
                transport.close()
            except Exception as exc:  # close the others before reporting
                errors.append(exc)
        if errors:
            raise errors[0]


def _missing_capabilities(request: pytest.FixtureRequest, capabilities: Capabilities) -> list[str]:
    required: list[str] = []
    for marker in request.node.iter_markers("requires_capability"):
        required.extend(marker.args)
    return [name for name in required if not getattr(capabilities, name)]


@pytest.fixture(
    params=[
        pytest.param(module, id=module.NAME, marks=list(getattr(module, "MARKS", ())))
        for module in TRANSPORT_MODULES
    ]
)
def transport_factory(
    request: pytest.FixtureRequest, tmp_path: Path, names: Names
) -> Iterator[TransportFactory]:
    module: Any = request.param
    factory = TransportFactory(module, tmp_path, request)
    try:
        probe = factory()
        missing = _missing_capabilities(request, probe.capabilities)
        if missing:
            pytest.skip(f"{factory.name} lacks {', '.join(missing)}")
        yield factory
    finally:
        try:
            factory.close_all()
        finally:
            cleanup = getattr(module, "cleanup", None)
            if cleanup is not None:
                cleanup(tmp_path, request)


@pytest.fixture
def transport(transport_factory: TransportFactory) -> Transport:
    """The first transport of the test's broker (the one the factory made to probe it)."""
    return transport_factory.created[0]
