"""Build hook: a wheel compiles the hot-path modules with mypyc, or falls back to plain Python.

The modules every task passes through (``celeriac._compiled.HOT_MODULES``) become C
extensions: the same typed sources, so the compiled build changes speed, not behaviour.
When and how is ``buildsys/compile_policy.py``'s to say (``CELERIAC_COMPILE``); here a
failure anywhere in the compiled build, from mypyc's type check to the C compiler, gives
a plain-Python build with one line saying why, unless compiling was required.
"""

from __future__ import annotations

import glob
import os
import runpy
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "buildsys"))
import compile_policy  # noqa: E402

HOT_MODULES: tuple[str, ...] = runpy.run_path(os.path.join(HERE, "celeriac", "_compiled.py"))[
    "HOT_MODULES"
]
EDITABLE = bool({"editable_wheel", "develop"} & set(sys.argv))
WHEEL = bool({"bdist_wheel", "build_ext", "install"} & set(sys.argv))


def remove_in_tree_builds() -> None:
    """Delete compiled modules an older build left beside the sources: they would shadow them."""
    suffixes = (".so", ".pyd")
    stale = [os.path.join(HERE, path[: -len(".py")]) for path in HOT_MODULES]
    found = [
        path
        for path in glob.glob(os.path.join(HERE, "*__mypyc.*"))
        + [p for base in stale for p in glob.glob(base + ".*")]
        if path.endswith(suffixes)
    ]
    for path in found:
        os.remove(path)
    if found:
        print(f"celeriac: removed {len(found)} compiled module(s) left in the source tree")


def compiled_modules() -> list[object]:
    wanted = compile_policy.mode()
    if EDITABLE:
        if wanted == "require":
            raise SystemExit(
                "celeriac: CELERIAC_COMPILE=1 compiles wheels only; an editable install runs "
                "plain Python so that edits take effect (build with `pip install .` instead)"
            )
        remove_in_tree_builds()
        return []
    if wanted == "off" or not WHEEL:
        return []
    if wanted == "auto" and not compile_policy.c_compiler():
        compile_policy.plain("no C compiler found")
        return []
    try:
        from mypyc.build import mypycify

        config = os.path.join("buildsys", "mypyc.ini")
        # -O1: as fast here as -O3 (the time goes to CPython's API), and half the build time.
        return list(mypycify(["--config-file", config, *HOT_MODULES], opt_level="1"))
    except (Exception, SystemExit) as exc:  # mypyc reports type errors with sys.exit
        if wanted == "require":
            raise
        compile_policy.plain(f"mypyc failed: {exc!r}")
        return []


class OptionalBuildExt(build_ext):
    """``build_ext`` that, unless compiling is required, falls back to plain Python."""

    def run(self) -> None:
        try:
            super().run()
        except (CCompilerError, ExecError, PlatformError, OSError) as exc:
            if compile_policy.mode() == "require":
                raise
            # A half-built set would import a module whose shared library is missing.
            for path in self.get_outputs():
                if os.path.exists(path):
                    os.remove(path)
            compile_policy.plain(f"the C build failed: {exc}")


setup(ext_modules=compiled_modules(), cmdclass={"build_ext": OptionalBuildExt})
