"""The PEP 517 build backend: setuptools', asking for mypy only when a wheel compiles.

An editable install, a ``CELERIAC_COMPILE=0`` build and a machine without a C compiler
need no mypy, so they do not download it.
"""

from __future__ import annotations

from typing import Any

import compile_policy
from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403  (the rest of the interface, unchanged)


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    requires = build_meta.get_requires_for_build_wheel(config_settings)
    wanted = compile_policy.mode()
    if wanted == "require" or (wanted == "auto" and compile_policy.c_compiler()):
        requires.append(compile_policy.MYPY)
    return requires
