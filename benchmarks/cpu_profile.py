"""Run a module's ``main`` under cProfile with a CPU clock, and save the stats on exit.

    python benchmarks/cpu_profile.py OUTPUT.prof -m celeriac -A bench_tasks worker -P solo

``python -m cProfile`` times with the wall clock, so time spent waiting (for the broker,
for the pool's children, or for a CPU on a busy machine) shows up as cost. This counts the
process's own CPU time only. The worker stops on SIGTERM and returns normally, so the
stats are written. In a prefork worker only the main process is profiled: pool children
leave with ``os._exit`` and drop their copy of the profiler.
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main() -> None:
    output, flag, module, *arguments = sys.argv[1:]
    if flag != "-m":
        raise SystemExit(__doc__)
    sys.argv = [module, *arguments]
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        profiler.disable()
        profiler.dump_stats(output)


if __name__ == "__main__":
    main()
