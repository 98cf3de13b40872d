"""Hypothesis profiles for the fuzz tests: ``ci`` (the default) and ``long``.

``ci`` keeps the suite quick: 150 examples per test. ``long`` runs 20,000 per test, for a
fuzzing session (``docs/fuzzing.md``)::

    HYPOTHESIS_PROFILE=long python -m pytest tests/fuzz -q --timeout=0

Neither keeps an example database: a failure prints the ``@reproduce_failure`` line that
replays it. Each property checks its own time bound (``tests.fuzz.support.settle``), so
Hypothesis's per-example deadline, which a loaded machine trips on, is off.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

for name, examples in (("ci", 150), ("long", 20_000)):
    settings.register_profile(
        name,
        max_examples=examples,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
