"""Hypothesis profiles for the fuzz tests: ``ci`` (the default) and ``long``.

``ci`` keeps the suite quick and repeatable: the same 150 examples per test on every run
(derandomized), so CI fails on a change, not on a draw. ``long`` runs 20,000 fresh ones
per test, for a fuzzing session (``docs/fuzzing.md``)::

    HYPOTHESIS_PROFILE=long python -m pytest tests/fuzz -q --timeout=0 -p no:logging

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
        derandomize=name == "ci",
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
