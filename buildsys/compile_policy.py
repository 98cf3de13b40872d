"""Whether this build compiles celeriac's hot-path modules with mypyc, and what it needs.

``CELERIAC_COMPILE``: unset or ``auto`` compiles a wheel when a C compiler is there and
falls back to plain Python, saying so in one line, when anything in the compiled build
fails; ``1`` makes compiling required (a failure stops the build); ``0`` builds plain
Python. Editable installs are always plain Python: compiled modules beside their sources
would go stale with every edit and would be shared by every environment on the checkout.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import sysconfig

#: mypyc comes with mypy; pinned, so a release compiles the same way every time.
MYPY = "mypy==2.4.1"
_MODES = {"": "auto", "auto": "auto", "1": "require", "0": "off"}


def mode() -> str:
    """``auto``, ``require`` or ``off``, from ``CELERIAC_COMPILE``."""
    value = os.environ.get("CELERIAC_COMPILE", "").strip().lower()
    if value not in _MODES:
        raise SystemExit(f"celeriac: CELERIAC_COMPILE={value!r} must be 0, 1 or auto")
    return _MODES[value]


def c_compiler() -> str | None:
    """The C compiler a build would call (``$CC`` first, as setuptools does), if it exists."""
    command = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    words = shlex.split(command)
    return shutil.which(words[0]) if words else None


def plain(reason: str) -> None:
    """Go on with plain Python: the one line the build prints about it."""
    print(f"celeriac: building plain Python ({reason}); it runs the same, slower", file=sys.stderr)
