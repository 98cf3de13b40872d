"""Execution pools: where jobs run. One strategy per module, one interface in ``base``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from celeriac.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from celeriac.worker.pools.base import Pool, PoolContext

POOLS = ("prefork", "threads", "solo")


def create_pool(name: str, context: PoolContext) -> Pool:
    if name == "prefork" or name == "processes":
        from celeriac.worker.pools.prefork import PreforkPool

        return PreforkPool(context)
    if name == "threads":
        from celeriac.worker.pools.threads import ThreadPool

        return ThreadPool(context)
    if name == "solo":
        from celeriac.worker.pools.solo import SoloPool

        return SoloPool(context)
    raise ImproperlyConfigured(f"unknown pool {name!r}: choose one of {', '.join(POOLS)}")
