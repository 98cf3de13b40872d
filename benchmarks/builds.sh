#!/bin/sh
# The two celeriac builds the benchmark compares, each in a virtual environment of its own:
#
#   benchmarks/builds.sh [REV]     # REV: a commit of this checkout, HEAD by default
#
#   benchmarks/.venvs/compiled   CELERIAC_COMPILE=1: the hot-path modules as C extensions
#   benchmarks/.venvs/plain      CELERIAC_COMPILE=0: the same sources as plain Python
#
# Both install a wheel of REV with the test extras (redis, pika, Celery, SQLAlchemy, ...), so
# the compiled environment can also run the benchmark and its Celery side. pip builds the
# wheels from a clone of the commit, not from the working tree: the build is that commit,
# uncommitted edits and other builds' leftovers in build/ cannot slip in, and pip records
# the commit (direct_url.json), which the benchmark report prints. Then:
#
#   benchmarks/.venvs/compiled/bin/python benchmarks/run.py --systems celeriac,celeriac-plain,celery \
#       --python celeriac=benchmarks/.venvs/compiled/bin/python,celeriac-plain=benchmarks/.venvs/plain/bin/python
set -eu

cd "$(dirname "$0")/.."
commit=$(git rev-parse --verify "${1:-HEAD}^{commit}")
python=${PYTHON:-python3}

for build in compiled plain; do
    venv=benchmarks/.venvs/$build
    if [ "$build" = compiled ]; then compile=1; else compile=0; fi
    rm -rf "$venv"
    "$python" -m venv "$venv"
    # --no-cache-dir: a wheel pip cached for this commit from another CELERIAC_COMPILE setting
    # would be reused as it is.
    CELERIAC_COMPILE=$compile "$venv/bin/python" -m pip install --quiet --no-cache-dir \
        "celeriac[test] @ git+file://localhost$PWD@$commit"
    printf '%s: ' "$venv"
    # -I: not the checkout's celeriac, which `python -c` would import from here.
    "$venv/bin/python" -I -c 'from celeriac._compiled import build_description as d; print(d())'
done
echo "built commit $commit"
