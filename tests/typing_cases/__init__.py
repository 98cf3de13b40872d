"""Small programs that mypy checks in tests/test_typing.py (not collected by pytest).

A line ending in ``# E: [code]`` must get exactly that mypy error; ``# N: <type>`` must be
revealed as that type; every other line must be clean.
"""
